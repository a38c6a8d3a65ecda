/* Two-pass softmax (Dukhan and Ablavatski, 2020), written once against the
 * vector API of vec_<isa>.h and included by two_pass_<isa>.c.
 *
 *   pass 1: sum exp(x) = M * 2^E with every exp kept as a (mantissa p,
 *           exponent n) pair, exp(x) = p * 2^n: no max pass, and x - max is
 *           never formed, so nothing is rounded before the exp;
 *   pass 2: y = p * (1/M) * 2^(n - E); log-softmax is x - (log M + E ln 2).
 *
 * Pass 1 adds each trip of SUM_TRIP vectors as a float tree after scaling the
 * mantissas to the trip's largest exponent (exact: powers of two), then folds
 * the tree into (mantissa, exponent) double lanes: every exp passes through at
 * most three float roundings at any row length, and, as in the three-pass sum,
 * the loads stay unaligned so that the result does not depend on the address.
 *
 * The pairs need n exact and r accurate, which holds for |x| up to 2^22; x is
 * clamped below at -2^20, whose exp is 0 next to any element above -2^20 + 104
 * (a -inf element becomes such an exp).  Rows the pairs cannot represent take
 * an exact path instead (see pairs_usable: a NaN, a +inf, an element above
 * about 1e6, or every element below about -1e6, a row of only
 * -inf included): the three-pass kernel for softmax, a double-precision sum
 * for the pair.  So do rows of one element, whose softmax and log-softmax are
 * exactly 1 and 0.
 */
#include <math.h>
#include "tiles.h"
#include "row_layout.h"
#include "exp_pairs.h"
#include "pool.h"

#define SUM_TRIP 8           /* vectors per tree of pass 1, as in the three-pass sum */
#define OUTPUT_UNROLL 4      /* vectors per trip of pass 2 */
#define EXPONENT_LIMIT 1.5e6 /* |E| above this: some |x| is near or beyond 2^20 (2^20 log2 e = 1512775) */

/* Pass 1 over one trip: the mantissas scaled to the trip's largest exponent
 * (*top) and added as a pairwise tree.  Every lane's tree holds a p * 2^0 of
 * at least 0.7, so the terms that vf_scale_pow2 drops (below 2^-100) cannot
 * change its sum: what they change stays in partial sums below 2^-97, which
 * vanish without a tie next to that term. */
SML_INLINE vf pair_trip(const float *x, vf *top) {
    vf p[SUM_TRIP], n[SUM_TRIP];
    for (int u = 0; u < SUM_TRIP; u++) p[u] = clamped_exp_mantissa(vf_load(x + u * VF_LANES), &n[u]);
    *top = n[0];
    for (int u = 1; u < SUM_TRIP; u++) *top = vf_max(*top, n[u]);
    for (int u = 0; u < SUM_TRIP; u++) p[u] = vf_scale_pow2(p[u], vf_sub(n[u], *top));
    for (int width = SUM_TRIP / 2; width > 0; width /= 2)
        for (int u = 0; u < width; u++) p[u] = vf_add(p[2 * u], p[2 * u + 1]);
    return p[0];
}

/* Whether a row's pair came out usable: finite and nonzero, with |E| below
 * EXPONENT_LIMIT, i.e. no x above about 1.04e6 and not every x below about
 * -1.04e6 (the clamp). */
static int pairs_usable(double mantissa, double exponent) {
    return isfinite(mantissa) && mantissa > 0.0 && fabs(exponent) < EXPONENT_LIMIT;
}

/* Pass 1: sum exp(x) = *mantissa * 2^*exponent over n > 0 elements (a row or
 * a chunk of one), as the vector pass represents it: pairs_usable() says
 * whether it could. */
static void sum_exp_pair_vector(const float *x, int64_t n, double *mantissa, double *exponent) {
    const int64_t trip = SUM_TRIP * VF_LANES;
    vpair acc = vpair_zero();
    int64_t i = 0;
    for (; i + trip <= n; i += trip) {
        vf top;
        const vf p = pair_trip(x + i, &top);
        acc = vpair_add(acc, p, top);
    }
    for (; i + VF_LANES <= n; i += VF_LANES) {
        vf e;
        const vf p = clamped_exp_mantissa(vf_load(x + i), &e);
        acc = vpair_add(acc, p, e);
    }
    if (i < n) { /* the fill -X_CLAMP adds exp(-2^20): nothing, next to the row's own elements */
        vf e;
        const vf p = clamped_exp_mantissa(vf_load_tail(x + i, n - i, -X_CLAMP), &e);
        acc = vpair_add(acc, p, e);
    }
    double m[VF_LANES], e[VF_LANES];
    vpair_store(acc, m, e);
    double top = e[0], sum = 0.0;
    for (int k = 1; k < VF_LANES; k++) top = e[k] > top ? e[k] : top;
    for (int k = 0; k < VF_LANES; k++) sum += m[k] * exp2(e[k] - top); /* exact: integral exponents */
    *mantissa = sum;
    *exponent = top;
}

/* The pair of a row the vector pass cannot represent, in double precision:
 * NaN -> (NaN, 0); a +inf -> (+inf, 0); only -inf -> (0, -inf); otherwise
 * from the row max m: sum exp(x - m) * 2^(m log2 e), split into mantissa and
 * integral exponent (exact while |m log2 e| < 2^52). */
static void sum_exp_pair_exact(const float *x, int64_t n, double *mantissa, double *exponent) {
    double max = -INFINITY;
    for (int64_t i = 0; i < n; i++) {
        if (isnan(x[i])) {
            *mantissa = NAN, *exponent = 0.0;
            return;
        }
        max = x[i] > max ? x[i] : max;
    }
    if (max == INFINITY || max == -INFINITY) {
        *mantissa = max == INFINITY ? INFINITY : 0.0, *exponent = max == INFINITY ? 0.0 : -INFINITY;
        return;
    }
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) sum += exp((double)x[i] - max);
    const double scaled = max * 1.4426950408889634; /* log2(e) */
    *exponent = floor(scaled);
    *mantissa = sum * exp2(scaled - *exponent);
}

/* Pass 2 of softmax for one vector: p * (1/M) * 2^(n - E), flushed below
 * FLT_MIN.  1/M is split into two floats, high + low, and p * (high + low) is
 * rounded once: a float 1/M would add its own rounding to every output (and
 * p * low is never subnormal: low is 0 or above 2^-85, p above 0.7).  When
 * every n - E is at least normal_from, every output is at least FLT_MIN and
 * the plain scaling serves; otherwise vf_scale_pow2_flushed gives the same bits
 * without forming the subnormals that cost Intel cores a microcode assist each
 * (8-13x slower on rows wider than about 87). */
SML_INLINE vf softmax_vector(vf x, vf inverse_high, vf inverse_low, vf exponent, vf normal_from) {
    vf n;
    const vf p = clamped_exp_mantissa(x, &n);
    const vf scaled = vf_fma(p, inverse_high, vf_mul(p, inverse_low));
    const vf d = vf_sub(n, exponent);
    if (!vf_any_less(d, normal_from)) return vf_scale_pow2(scaled, d);
    return vf_scale_pow2_flushed(scaled, d);
}

/* Pass 2 of log-softmax for one vector: (x - L_hi) - L_lo, L = log M + E ln 2
 * split into two floats so that its rounding does not enter.  The exps in M
 * carry their own error, so for a dominant element x - L can come out a few
 * 1e-8 above 0: capped at 0, the largest log-probability there is.  (Rows of
 * one element take the three-pass path, which gives exactly 0.) */
SML_INLINE vf log_softmax_vector(vf x, vf log_sum_high, vf log_sum_low) {
    return vf_min_ignoring_nan(vf_zero(), vf_sub(vf_sub(x, log_sum_high), log_sum_low));
}

SML_INLINE vf pass2_vector(vf x, vf a, vf b, vf c, vf d, int log_output) {
    return log_output ? log_softmax_vector(x, a, b) : softmax_vector(x, a, b, c, d);
}

SML_INLINE void store_output(float *y, vf v, int stream) {
    if (stream) vf_store_stream(y, v);
    else vf_store(y, v);
}

/* Pass 2 over a row: an aligned head, trips of OUTPUT_UNROLL vectors, single
 * vectors, a tail.  stream = 1 writes y with non-temporal stores, which skip
 * the read for ownership of every output line (3 instead of 4 memory transfers
 * per element) but need aligned addresses: the head then aligns y, not x (y
 * is float-aligned, see csrc/softmaxlib.h). */
SML_INLINE void write_two_pass_output(const float *x, float *y, int64_t n, float a, float b, float c, float d,
                                      int log_output, int stream) {
    const vf va = vf_set1(a), vb = vf_set1(b), vc = vf_set1(c), vd = vf_set1(d);
    int64_t i = stream ? unaligned_head(y, n) : unaligned_head(x, n);
    if (i > 0) vf_store_tail(y, i, pass2_vector(vf_load_tail(x, i, 0.0f), va, vb, vc, vd, log_output));
    for (; i + OUTPUT_UNROLL * VF_LANES <= n; i += OUTPUT_UNROLL * VF_LANES)
        for (int u = 0; u < OUTPUT_UNROLL; u++) {
            const int64_t at = i + u * VF_LANES;
            store_output(y + at, pass2_vector(vf_load(x + at), va, vb, vc, vd, log_output), stream);
        }
    for (; i + VF_LANES <= n; i += VF_LANES) store_output(y + i, pass2_vector(vf_load(x + i), va, vb, vc, vd, log_output), stream);
    if (i < n) vf_store_tail(y + i, n - i, pass2_vector(vf_load_tail(x + i, n - i, 0.0f), va, vb, vc, vd, log_output));
}

/* A row split into chunks (csrc/pool.h): each chunk's pair from pass 1, and
 * pass 2's parameters (write_two_pass_output's a, b, c, d). */
struct pair_row {
    const float *x;
    float *y;
    int64_t n, chunk;
    float a, b, c, d;
    double mantissas[ROW_CHUNKS_MAX], exponents[ROW_CHUNKS_MAX];
};

SML_INLINE void pair_chunks(void *context, int64_t first, int64_t end) {
    struct pair_row *row = context;
    for (int64_t c = first; c < end; c++)
        sum_exp_pair_vector(row->x + c * row->chunk, chunk_length(row->n, c), &row->mantissas[c], &row->exponents[c]);
}

/* Pass 1 over the chunks of a row of n > 0: the chunks' pairs scaled to the
 * largest exponent (exactly) and added in chunk order, as sum_exp_pair_vector
 * merges its lanes; returns pairs_usable() of the sum. */
SML_INLINE int chunked_sum_exp_pair(struct pair_row *row, const float *x, float *y, int64_t n, int threads,
                                double *mantissa, double *exponent) {
    row->x = x, row->y = y, row->n = n, row->chunk = row_chunk(n);
    const int64_t chunks = row_chunk_count(n);
    run_chunks(chunks, n, threads, pair_chunks, row);
    double top = row->exponents[0], sum = 0.0;
    for (int64_t c = 1; c < chunks; c++) top = row->exponents[c] > top ? row->exponents[c] : top;
    for (int64_t c = 0; c < chunks; c++) sum += row->mantissas[c] * exp2(row->exponents[c] - top);
    *mantissa = sum;
    *exponent = top;
    return pairs_usable(sum, top);
}

/* Pass 2 over chunks [first, end), one function per (log_output, stream): the
 * compiler specializes the loops for constants.  The non-temporal stores are
 * fenced where a thread's share ends: by the pool after each piece, and by the
 * kernel (SML_ROW_KERNEL's `finish`) in the calling thread. */
#define CHUNK_OUTPUT(name, log_output, stream)                                                                  \
    SML_INLINE void name(void *context, int64_t first, int64_t end) {                                          \
        const struct pair_row *row = context;                                                                   \
        for (int64_t c = first; c < end; c++) {                                                                 \
            const int64_t at = c * row->chunk;                                                                  \
            write_two_pass_output(row->x + at, row->y + at, chunk_length(row->n, c), row->a, row->b, row->c, row->d, \
                                  log_output, stream);                                                          \
        }                                                                                                       \
    }

CHUNK_OUTPUT(softmax_chunks, 0, 0)
CHUNK_OUTPUT(log_softmax_chunks, 1, 0)
CHUNK_OUTPUT(softmax_chunks_stream, 0, 1)
CHUNK_OUTPUT(log_softmax_chunks_stream, 1, 1)

/* The three-pass reload kernels of this ISA (csrc/three_pass_kernels.h, in
 * another translation unit; the build declares kernels from the catalog). */
void SML_ISA_SUFFIX(sml_f32_softmax_reload)(int64_t rows, int64_t n, const float *x, float *y, int workers);
void SML_ISA_SUFFIX(sml_f32_log_softmax_reload)(int64_t rows, int64_t n, const float *x, float *y, int workers);

/* Both passes over a row; rows the pairs cannot represent, and rows of one
 * element, take the three-pass reload kernel. */
SML_INLINE void two_pass_row(const float *x, float *y, int64_t n, int log_output, sml_task_range output, int threads) {
    struct pair_row row;
    double mantissa, exponent;
    if (n == 0) return;
    if (n == 1 || !chunked_sum_exp_pair(&row, x, y, n, threads, &mantissa, &exponent)) {
        if (log_output) SML_ISA_SUFFIX(sml_f32_log_softmax_reload)(1, n, x, y, threads);
        else SML_ISA_SUFFIX(sml_f32_softmax_reload)(1, n, x, y, threads);
        return;
    }
    if (log_output) {
        const double log_sum = log(mantissa) + exponent * 0.6931471805599453; /* ln 2 */
        row.a = (float)log_sum, row.b = (float)(log_sum - row.a), row.c = row.d = 0.0f;
    } else {
        const double inverse = 1.0 / mantissa;
        row.a = (float)inverse, row.b = (float)(inverse - row.a), row.c = (float)exponent;
        /* p * (1/M) is at least 0.69 * high (p >= 0.7071): with n - E at or above
         * this (and at or above vf_scale_pow2's floor), every output is normal. */
        row.d = (float)fmax(ceil(-126.0 - log2(0.69 * row.a)), SML_SCALE_FLOOR);
    }
    run_chunks(row_chunk_count(n), n, threads, output, &row);
}

#define TWO_PASS_ROW(name, log_output, output)                                   \
    SML_INLINE void name(const float *x, float *y, int64_t n, int threads) {     \
        two_pass_row(x, y, n, log_output, output, threads);                      \
    }

TWO_PASS_ROW(softmax_row, 0, softmax_chunks)
TWO_PASS_ROW(log_softmax_row, 1, log_softmax_chunks)
TWO_PASS_ROW(softmax_row_stream, 0, softmax_chunks_stream)
TWO_PASS_ROW(log_softmax_row_stream, 1, log_softmax_chunks_stream)

/* Non-temporal stores are weakly ordered: the streaming kernels fence the
 * calling thread's once per call (the pool fences its workers'). */
SML_ROW_KERNEL(sml_f32_softmax_two_pass, softmax_row, )
SML_ROW_KERNEL(sml_f32_log_softmax_two_pass, log_softmax_row, )
SML_ROW_KERNEL(sml_f32_softmax_two_pass_stream, softmax_row_stream, vf_stream_fence())
SML_ROW_KERNEL(sml_f32_log_softmax_two_pass_stream, log_softmax_row_stream, vf_stream_fence())

/* sum exp(x) = mantissa * 2^exponent of a row (see csrc/softmaxlib.h). */
static void sum_exp_pair_row(const float *x, int64_t n, double *mantissa, double *exponent, int threads) {
    struct pair_row row;
    if (n == 0) *mantissa = 0.0, *exponent = -INFINITY;
    else if (!chunked_sum_exp_pair(&row, x, NULL, n, threads, mantissa, exponent))
        sum_exp_pair_exact(x, n, mantissa, exponent);
}

struct pair_rows {
    const float *x;
    int64_t n;
    double *mantissa, *exponent;
};

static void pair_rows(void *context, int64_t first, int64_t end) {
    const struct pair_rows *job = context;
    for (int64_t r = first; r < end; r++)
        sum_exp_pair_row(job->x + r * job->n, job->n, &job->mantissa[r], &job->exponent[r], 1);
}

void SML_ISA_SUFFIX(sml_f32_sum_exp_pair)(int64_t rows, int64_t n, const float *x, double *mantissa, double *exponent,
                                          int workers) {
    if (split_by_rows(rows, n, workers)) {
        struct pair_rows job = {x, n, mantissa, exponent};
        run_tasks(rows, rows * n, workers, pair_rows, &job);
    } else {
        for (int64_t r = 0; r < rows; r++) sum_exp_pair_row(x + r * n, n, &mantissa[r], &exponent[r], workers);
    }
}

SML_TILES(two_pass, VF_LANES, SUM_TRIP * VF_LANES, OUTPUT_UNROLL * VF_LANES)

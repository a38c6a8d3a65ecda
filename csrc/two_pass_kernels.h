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

/* Pass 1: sum exp(x) = *mantissa * 2^*exponent over a row of n > 0; returns
 * pairs_usable() of the result. */
static int sum_exp_pair_vector(const float *x, int64_t n, double *mantissa, double *exponent) {
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
    return pairs_usable(sum, top);
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

void SML_ISA_SUFFIX(sml_f32_sum_exp_pair)(int64_t rows, int64_t n, const float *x, double *mantissa, double *exponent) {
    for (int64_t r = 0; r < rows; r++) {
        const float *row = x + r * n;
        if (n == 0) mantissa[r] = 0.0, exponent[r] = -INFINITY;
        else if (!sum_exp_pair_vector(row, n, &mantissa[r], &exponent[r])) sum_exp_pair_exact(row, n, &mantissa[r], &exponent[r]);
    }
}

/* The three-pass reload kernels of this ISA (csrc/three_pass_kernels.h, in
 * another translation unit; the build declares kernels from the catalog). */
void SML_ISA_SUFFIX(sml_f32_softmax_reload)(int64_t rows, int64_t n, const float *x, float *y);
void SML_ISA_SUFFIX(sml_f32_log_softmax_reload)(int64_t rows, int64_t n, const float *x, float *y);

/* Both passes over each row; rows the pairs cannot represent, and rows of
 * one element, take the three-pass reload kernel. */
SML_INLINE void two_pass_rows(int64_t rows, int64_t n, const float *x, float *y, int log_output, int stream) {
    for (int64_t r = 0; r < rows; r++) {
        const float *row = x + r * n;
        float *out = y + r * n;
        double mantissa, exponent;
        if (n == 0) continue;
        if (n == 1 || !sum_exp_pair_vector(row, n, &mantissa, &exponent)) {
            if (log_output) SML_ISA_SUFFIX(sml_f32_log_softmax_reload)(1, n, row, out);
            else SML_ISA_SUFFIX(sml_f32_softmax_reload)(1, n, row, out);
        } else if (log_output) {
            const double log_sum = log(mantissa) + exponent * 0.6931471805599453; /* ln 2 */
            const float high = (float)log_sum;
            write_two_pass_output(row, out, n, high, (float)(log_sum - high), 0.0f, 0.0f, 1, stream);
        } else {
            const double inverse = 1.0 / mantissa;
            const float high = (float)inverse;
            /* p * (1/M) is at least 0.69 * high (p >= 0.7071): with n - E at or above
             * this (and at or above vf_scale_pow2's floor), every output is normal. */
            const double normal_from = fmax(ceil(-126.0 - log2(0.69 * high)), SML_SCALE_FLOOR);
            write_two_pass_output(row, out, n, high, (float)(inverse - high), (float)exponent, (float)normal_from, 0,
                                  stream);
        }
    }
    /* Non-temporal stores are weakly ordered: fence them before the caller reads y. */
    if (stream) vf_stream_fence();
}

#define TWO_PASS_KERNEL(name, log_output, stream)                                   \
    void SML_ISA_SUFFIX(name)(int64_t rows, int64_t n, const float *x, float *y) { \
        two_pass_rows(rows, n, x, y, log_output, stream);                           \
    }

TWO_PASS_KERNEL(sml_f32_softmax_two_pass, 0, 0)
TWO_PASS_KERNEL(sml_f32_log_softmax_two_pass, 1, 0)
TWO_PASS_KERNEL(sml_f32_softmax_two_pass_stream, 0, 1)
TWO_PASS_KERNEL(sml_f32_log_softmax_two_pass_stream, 1, 1)

SML_TILES(two_pass, VF_LANES, SUM_TRIP * VF_LANES, OUTPUT_UNROLL * VF_LANES)

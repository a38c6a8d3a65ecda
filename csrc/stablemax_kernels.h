/* StableMax and log-StableMax (Prieto et al., 2025), written once against the
 * vector API of vec_<isa>.h and included by stablemax_<isa>.c.
 *
 *   s(x) = x + 1 for x >= 0, 1 / (1 - x) for x < 0;
 *   stablemax(x)_i = s(x_i) / sum_j s(x_j);  log_stablemax = log s(x_i) - log sum.
 *
 * No max is subtracted: StableMax is not shift-invariant.  Pass 1 sums s in
 * double lanes (every float s widened, so a row of values near FLT_MAX cannot
 * overflow the sum) and takes the row's min; pass 2 writes the output.
 * Rows whose s or 1/sum leave the comfortable float range (a finite x below
 * -2^125, whose s is below 2^-125 and would lose bits as a subnormal, or a
 * sum beyond 2^+-100, or 0) are computed element by element in
 * double instead: rare, and exact to one rounding.
 * A +inf takes the limit (infinite_rows.h), a NaN makes the row NaN.
 */
#include <float.h>
#include "tiles.h"
#include <math.h>
#include "row_layout.h"
#include "infinite_rows.h"
#include "pool.h"

#define STABLE_UNROLL 4        /* vectors per trip of both passes */
#define EXACT_BELOW -0x1p125f  /* a row with an x below this takes the double path */
#define SUM_RANGE 0x1p100      /* sums outside [2^-100, 2^100] take the double path */

SML_INLINE vf stable_s(vf x) {
    const vf one = vf_set1(1.0f);
    return vf_where_less(x, vf_zero(), vf_div(one, vf_sub(one, x)), vf_add(x, one));
}

/* log v for v >= FLT_MIN; an infinite or NaN v is its own log. */
SML_INLINE vf log_positive(vf v) {
    vf k;
    const vf f = vf_log_split(v, &k);
    vf q = vf_fma(vf_set1(SML_LOG_L6), f, vf_set1(SML_LOG_L5));
    q = vf_fma(q, f, vf_set1(SML_LOG_L4));
    q = vf_fma(q, f, vf_set1(SML_LOG_L3));
    q = vf_fma(q, f, vf_set1(SML_LOG_L2));
    q = vf_fma(q, f, vf_set1(SML_LOG_L1));
    q = vf_fma(q, f, vf_set1(SML_LOG_L0));
    const vf f2 = vf_mul(f, f);
    const vf log_m = vf_fma(vf_mul(f2, f), q, vf_fma(f2, vf_set1(-0.5f), f));
    const vf log_v = vf_fma(k, vf_set1(SML_LN2_HI), vf_fma(k, vf_set1(SML_LN2_LO), log_m));
    return vf_where_less(v, vf_set1(INFINITY), log_v, v);
}

SML_INLINE vf finite_or_plus_inf(vf v) { return vf_where_less(v, vf_set1(-FLT_MAX), vf_set1(INFINITY), v); }

SML_INLINE float reduce_min(vf v) { return -vf_reduce_max(vf_sub(vf_zero(), v)); }

/* Pass 1: sum of s over the row, in double lanes; the row's min (NaN
 * ignored), and its min over finite x (-inf, whose s is exactly 0, counts as
 * +inf there, so that masked rows stay on the vector path).  No aligned head:
 * an element's lane must not depend on the address, or a copy of x could sum
 * differently. */
static double stable_sum(const float *x, int64_t n, float *min, float *finite_min) {
    vsum sum = vsum_zero();
    vf low = vf_set1(INFINITY), finite_low = vf_set1(INFINITY);
    int64_t i = 0;
    for (; i + VF_LANES <= n; i += VF_LANES) {
        const vf v = vf_load(x + i);
        sum = vsum_add(sum, stable_s(v));
        low = vf_min_ignoring_nan(v, low);
        finite_low = vf_min_ignoring_nan(finite_or_plus_inf(v), finite_low);
    }
    if (i < n) { /* padded with +inf, which the sum ignores below */
        const vf v = vf_load_tail(x + i, n - i, INFINITY);
        sum = vsum_add(sum, stable_s(vf_load_tail(x + i, n - i, -INFINITY))); /* s(-inf) = 0 */
        low = vf_min_ignoring_nan(v, low);
        finite_low = vf_min_ignoring_nan(finite_or_plus_inf(v), finite_low);
    }
    *min = reduce_min(low);
    *finite_min = reduce_min(finite_low);
    return vsum_reduce(sum);
}

/* 1/sum and log(sum), each split into two floats (high + low) so that their
 * own rounding does not reach the outputs. */
typedef struct { vf inverse_high, inverse_low, log_high, log_low; } row_scale;

/* What pass 2 writes: StableMax, log-StableMax, or log-StableMax of a row
 * where every r is at least FLT_MIN (no -inf, and s(min) / sum >= 2^-125),
 * which skips the branch for tiny r. */
enum stable_output_kind { STABLE_PROBABILITY, STABLE_LOG, STABLE_LOG_NO_TINY };

/* One output vector.  StableMax: r = s * (1/sum), rounded once, flushed below
 * FLT_MIN as softmax is.  log-StableMax: log r while r >= FLT_MIN, which has
 * no cancellation (log s - log sum would lose up to |log sum| * 2^-24 where
 * the two are close); below, where log r < -87, -log(1 + |x|) - log sum. */
SML_INLINE vf stable_output(vf x, row_scale scale, enum stable_output_kind kind) {
    const vf s = stable_s(x);
    const vf ratio = vf_fma(s, scale.inverse_high, vf_mul(s, scale.inverse_low));
    if (kind == STABLE_PROBABILITY) return vf_flush_below_flt_min(ratio);
    if (kind == STABLE_LOG_NO_TINY) return log_positive(ratio);
    const vf flt_min = vf_set1(SML_FLT_MIN);
    const vf magnitude = vf_add(vf_max(x, vf_sub(vf_zero(), x)), vf_set1(1.0f)); /* 1 + |x|, x < 0 here */
    const vf log_value = log_positive(vf_where_less(ratio, flt_min, magnitude, ratio));
    const vf tiny = vf_sub(vf_sub(vf_sub(vf_zero(), log_value), scale.log_high), scale.log_low);
    return vf_where_less(ratio, flt_min, tiny, log_value);
}

SML_INLINE void stable_write(const float *x, float *y, int64_t n, row_scale scale, enum stable_output_kind kind) {
    int64_t i = unaligned_head(x, n);
    if (i > 0) vf_store_tail(y, i, stable_output(vf_load_tail(x, i, 0.0f), scale, kind));
    for (; i + STABLE_UNROLL * VF_LANES <= n; i += STABLE_UNROLL * VF_LANES)
        for (int u = 0; u < STABLE_UNROLL; u++) {
            const int64_t at = i + u * VF_LANES;
            vf_store(y + at, stable_output(vf_load(x + at), scale, kind));
        }
    for (; i + VF_LANES <= n; i += VF_LANES) vf_store(y + i, stable_output(vf_load(x + i), scale, kind));
    if (i < n) vf_store_tail(y + i, n - i, stable_output(vf_load_tail(x + i, n - i, 0.0f), scale, kind));
}

/* log(sum) only for log-StableMax: a log costs a short row a third of its time. */
static row_scale split_scale(double sum, int log_output) {
    const double inverse = 1.0 / sum, log_sum = log_output ? log(sum) : 0.0;
    const float inverse_high = (float)inverse, log_high = (float)log_sum;
    return (row_scale){vf_set1(inverse_high), vf_set1((float)(inverse - inverse_high)), vf_set1(log_high),
                       vf_set1((float)(log_sum - log_high))};
}

static double stable_s_double(float x) { return x >= 0.0f ? (double)x + 1.0 : 1.0 / (1.0 - (double)x); }

/* The double path: s, the sum and every output in double, rounded once. */
static void stable_row_exact(const float *x, float *y, int64_t n, int log_output) {
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) sum += stable_s_double(x[i]);
    const double log_sum = log(sum);
    for (int64_t i = 0; i < n; i++) {
        const double s = stable_s_double(x[i]);
        const float out = log_output ? (float)(log(s) - log_sum) : (float)(s / sum);
        y[i] = log_output || !(out < SML_FLT_MIN) ? out : 0.0f; /* NaN is kept */
    }
}

/* A row split into chunks (csrc/pool.h): each chunk's pass 1 results, and
 * pass 2's scale. */
struct stable_chunked_row {
    const float *x;
    float *y;
    int64_t n, chunk;
    row_scale scale;
    double sums[ROW_CHUNKS_MAX];
    float mins[ROW_CHUNKS_MAX], finite_mins[ROW_CHUNKS_MAX];
};

SML_INLINE void sum_chunks(void *context, int64_t first, int64_t end) {
    struct stable_chunked_row *row = context;
    for (int64_t c = first; c < end; c++)
        row->sums[c] = stable_sum(row->x + c * row->chunk, chunk_length(row->n, c), &row->mins[c], &row->finite_mins[c]);
}

/* Pass 2 over chunks [first, end), one function per output kind: the compiler
 * specializes the loops for constants. */
#define STABLE_CHUNKS(name, kind)                                                                        \
    SML_INLINE void name(void *context, int64_t first, int64_t end) {                                   \
        const struct stable_chunked_row *row = context;                                                  \
        for (int64_t c = first; c < end; c++) {                                                          \
            const int64_t at = c * row->chunk;                                                           \
            stable_write(row->x + at, row->y + at, chunk_length(row->n, c), row->scale, kind);           \
        }                                                                                                \
    }

STABLE_CHUNKS(probability_chunks, STABLE_PROBABILITY)
STABLE_CHUNKS(log_chunks, STABLE_LOG)
STABLE_CHUNKS(log_no_tiny_chunks, STABLE_LOG_NO_TINY)

SML_INLINE void stable_row(const float *x, float *y, int64_t n, int log_output, int threads) {
    if (n == 0) return;
    struct stable_chunked_row row; /* not zeroed: its arrays are large, and each chunk sets its own */
    row.x = x, row.y = y, row.n = n, row.chunk = row_chunk(n);
    const int64_t chunks = row_chunk_count(n);
    run_chunks(chunks, n, threads, sum_chunks, &row);
    double sum = row.sums[0]; /* the chunks' sums in chunk order */
    float min = row.mins[0], finite_min = row.finite_mins[0];
    for (int64_t c = 1; c < chunks; c++) {
        sum += row.sums[c];
        min = row.mins[c] < min ? row.mins[c] : min;
        finite_min = row.finite_mins[c] < finite_min ? row.finite_mins[c] : finite_min;
    }
    if (sum == INFINITY) { /* a +inf: the limit; with a NaN the sum is NaN instead */
        infinite_row(x, y, n, log_output);
        return;
    }
    if (finite_min < EXACT_BELOW || (!(sum >= 1.0 / SUM_RANGE && sum <= SUM_RANGE) && sum == sum)) {
        stable_row_exact(x, y, n, log_output);
        return;
    }
    row.scale = split_scale(sum, log_output);
    if (!log_output) run_chunks(chunks, n, threads, probability_chunks, &row);
    else if (min > -INFINITY && stable_s_double(min) / sum >= 0x1p-125) run_chunks(chunks, n, threads, log_no_tiny_chunks, &row);
    else run_chunks(chunks, n, threads, log_chunks, &row);
}

SML_INLINE void stablemax_row(const float *x, float *y, int64_t n, int threads) { stable_row(x, y, n, 0, threads); }
SML_INLINE void log_stablemax_row(const float *x, float *y, int64_t n, int threads) { stable_row(x, y, n, 1, threads); }

SML_ROW_KERNEL(sml_f32_stablemax, stablemax_row, )
SML_ROW_KERNEL(sml_f32_log_stablemax, log_stablemax_row, )

/* The cross-entropy's sum of s, with every s in double (the loss is a float64
 * result, as in the paper's code), and the row's min over finite x as in
 * stable_sum. */
static double stable_sum_double(const float *x, int64_t n, float *finite_min) {
    vsum sum = vsum_zero();
    vf finite_low = vf_set1(INFINITY);
    int64_t i = 0;
    for (; i + VF_LANES <= n; i += VF_LANES) {
        const vf v = vf_load(x + i);
        sum = vsum_add_stable_s(sum, v);
        finite_low = vf_min_ignoring_nan(finite_or_plus_inf(v), finite_low);
    }
    if (i < n) { /* padded with -inf: s 0, and +inf for the min */
        const vf v = vf_load_tail(x + i, n - i, -INFINITY);
        sum = vsum_add_stable_s(sum, v);
        finite_low = vf_min_ignoring_nan(finite_or_plus_inf(v), finite_low);
    }
    *finite_min = reduce_min(finite_low);
    return vsum_reduce(sum);
}

/* Whether the label holds all but less than 2^-20 of the mass.  There p - 1 =
 * s_label / sum - 1 and log(sum) - log(s_label) cancel (to exactly 0 once the
 * other elements' s fall below half an ULP of sum), so the label's gradient
 * uses 1 - p = others / sum and the loss log1p(others / s_label), with others
 * the sum of s over the other elements, summed directly (sum_of_others).
 * Elsewhere 1 - p >= 2^-20, and the cancellation costs at most 20 of the 53
 * bits: the float32 gradient keeps its rounding, and the loss, kept as it was
 * so that those rows keep their bits, has a relative error up to about
 * 2^-33 |log sum| where it is near 2^-20.  False for a NaN sum. */
static int label_dominates(double sum, double s_label) { return sum - s_label < 0x1p-20 * sum; }

/* The sum of s over the row's elements other than the label's, in double, in
 * index order: a second, rare pass for rows where label_dominates. */
static double sum_of_others(const float *x, int64_t n, int64_t label) {
    double others = 0.0;
    for (int64_t i = 0; i < n; i++)
        if (i != label) others += stable_s_double(x[i]);
    return others;
}

/* StableMax cross-entropy of a row, in double, as stable_row_exact: the path
 * for rows the vector path does not take (a +inf, a NaN, a finite x below
 * -2^125, a sum out of range).  +inf elements share the mass, as in
 * infinite_row. */
static double cross_entropy_row_exact(const float *x, int64_t n, int64_t label, double grad_scale, float *grad) {
    double sum = 0.0;
    int64_t infinities = 0;
    for (int64_t i = 0; i < n; i++) {
        sum += stable_s_double(x[i]);
        infinities += x[i] == INFINITY;
    }
    const int limit = sum == INFINITY && infinities > 0;
    if (grad)
        for (int64_t i = 0; i < n; i++) {
            const double magnitude = 1.0 + fabs((double)x[i]);
            const double p = limit ? (x[i] == INFINITY ? 1.0 / (double)infinities : 0.0) : stable_s_double(x[i]) / sum;
            grad[i] = limit && x[i] == INFINITY ? 0.0f : (float)(grad_scale * (p - (i == label)) / magnitude);
        }
    if (limit) return x[label] == INFINITY ? log((double)infinities) : INFINITY;
    const double s_label = stable_s_double(x[label]);
    if (label_dominates(sum, s_label)) {
        const double others = sum_of_others(x, n, label);
        if (grad) grad[label] = (float)(grad_scale * ((0.0 - others) / sum) / (1.0 + fabs((double)x[label])));
        return log1p(others / s_label);
    }
    return log(sum) - log(s_label);
}

/* Gradient of one vector: scale * r / (1 + |x|), r = s * (1/sum) from
 * factor = scale / sum split into two floats; the label's element is
 * rewritten afterwards in double, from 1 - p = others / sum where the label
 * dominates (label_dominates), so that p - 1 does not cancel. */
SML_INLINE vf cross_entropy_gradient(vf x, vf factor_high, vf factor_low) {
    const vf s = stable_s(x);
    const vf magnitude = vf_add(vf_max(x, vf_sub(vf_zero(), x)), vf_set1(1.0f));
    return vf_div(vf_fma(s, factor_high, vf_mul(s, factor_low)), magnitude);
}

static void cross_entropy_gradient_row(const float *x, float *grad, int64_t n, double factor) {
    const float high = (float)factor;
    const vf vhigh = vf_set1(high), vlow = vf_set1((float)(factor - high));
    int64_t i = unaligned_head(x, n);
    if (i > 0) vf_store_tail(grad, i, cross_entropy_gradient(vf_load_tail(x, i, 0.0f), vhigh, vlow));
    for (; i + VF_LANES <= n; i += VF_LANES) vf_store(grad + i, cross_entropy_gradient(vf_load(x + i), vhigh, vlow));
    if (i < n) vf_store_tail(grad + i, n - i, cross_entropy_gradient(vf_load_tail(x + i, n - i, 0.0f), vhigh, vlow));
}

struct cross_entropy_rows {
    const float *x;
    int64_t n;
    const int64_t *labels;
    int64_t ignore_index;
    double grad_scale;
    double *losses;
    float *grad;
};

/* Rows [first, end): each row by one thread (rows are independent). */
static void cross_entropy_rows(void *context, int64_t first, int64_t end) {
    const struct cross_entropy_rows *job = context;
    const int64_t n = job->n;
    const double grad_scale = job->grad_scale;
    for (int64_t r = first; r < end; r++) {
        const float *row = job->x + r * n;
        float *grad_row = job->grad ? job->grad + r * n : NULL;
        const int64_t label = job->labels[r];
        if (label == job->ignore_index) {
            job->losses[r] = 0.0;
            if (grad_row)
                for (int64_t i = 0; i < n; i++) grad_row[i] = 0.0f;
            continue;
        }
        float finite_min;
        const double sum = stable_sum_double(row, n, &finite_min);
        if (!(sum >= 1.0 / SUM_RANGE && sum <= SUM_RANGE) || finite_min < EXACT_BELOW) {
            job->losses[r] = cross_entropy_row_exact(row, n, label, grad_scale, grad_row);
            continue;
        }
        const double s_label = stable_s_double(row[label]);
        const int dominant = label_dominates(sum, s_label);
        const double others = dominant ? sum_of_others(row, n, label) : 0.0;
        job->losses[r] = dominant ? log1p(others / s_label) : log(sum) - log(s_label);
        if (grad_row) {
            cross_entropy_gradient_row(row, grad_row, n, grad_scale / sum);
            const double p_minus_1 = dominant ? (0.0 - others) / sum : s_label / sum - 1.0;
            grad_row[label] = (float)(grad_scale * p_minus_1 / (1.0 + fabs((double)row[label])));
        }
    }
}

void SML_ISA_SUFFIX(sml_f32_stablemax_cross_entropy)(int64_t rows, int64_t n, const float *x, const int64_t *labels,
                                                     int64_t ignore_index, double grad_scale, double *losses,
                                                     float *grad, int workers) {
    struct cross_entropy_rows job = {x, n, labels, ignore_index, grad_scale, losses, grad};
    run_tasks(rows, rows * n, workers, cross_entropy_rows, &job);
}

SML_TILES(stablemax, VF_LANES, STABLE_UNROLL * VF_LANES)

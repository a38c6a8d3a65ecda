/* Three-pass softmax and log-softmax, written once against the vector API of
 * vec_<isa>.h and included by three_pass_<isa>.c.
 *
 *   pass 1: max of the row;
 *   pass 2: sum of exp(x - max), stored into y by the reload variant;
 *   pass 3: y = e * (1/sum), where reload reads e back from y and recompute
 *           evaluates the exp a second time.  log-softmax writes
 *           (x - max) - log(sum) instead.
 *
 * Both round x - max to float before the exp, which costs up to 65 ULP
 * (docs/accuracy.md).  The reload_exact variant of softmax does not: its pass 2
 * takes exp(x) = p * 2^n as a pair (exp_pairs.h) and stores p * 2^(n - n_max),
 * exact since n and n_max are integers, so the row is as accurate as two-pass
 * at the speed of reload.
 *
 * Passes 1 and 3 start with a masked head up to the first vector-aligned
 * address of the array they load (NumPy arrays usually start 16 bytes past a
 * 64-byte line, so every AVX-512 load would straddle two lines); pass 2 does
 * not, see sum_exp_shifted.  Then a trip of several vectors per loop
 * iteration, one vector per iteration, and one masked tail (no scalar
 * epilogue).
 */
#include <math.h>
#include "tiles.h"
#include "row_layout.h"
#include "infinite_rows.h"
#include "exp_pairs.h"
#include "pool.h"

#define UNROLL 4 /* vectors per trip of the max and output passes */
/* Vectors per trip of the sum pass, added as one tree before each widening to
 * double: 8 rather than 4 halves the widenings, 9 % faster on both ISAs. */
#define SUM_TRIP 8

/* reload_exact stores exp(x) * 2^(SHIFT_HEADROOM - n_max): the max's exp near
 * 2^32 keeps every exp that matters (down to 2^-158 of the max's) normal, and
 * 2^-32 / sum stays normal for any n below 2^60. */
#define SHIFT_HEADROOM 32
/* reload_exact needs |max| below this: then every kept x has |x| < 2^20, n is
 * exact and r accurate, and an x clamped at -2^20 is 2^19 below the max, its
 * exp 0.  Other rows take reload: there, the x - max that matter are exact
 * (Sterbenz: x and max within a factor of two). */
#define PAIR_ROW_LIMIT 0x1p19f

enum pass2_store { STORE_NOTHING, STORE_EXP, STORE_SHIFTED };
/* How passes 2 and 3 compute e = exp(x - max):
 *   SHIFTED_EXP:           exp(x - max) in float, +0 below the cutoff;
 *   SHIFTED_EXP_NO_CUTOFF: the same, for rows where no x - max is below it;
 *   PAIR_EXP:              p * 2^(n - shift) from exp(x) = p * 2^n, where
 *                          shift = n_max - SHIFT_HEADROOM (reload_exact);
 *   PAIR_EXP_CLAMPED:      the same for rows with an x below -2^20 (-inf). */
enum exp_form { SHIFTED_EXP, SHIFTED_EXP_NO_CUTOFF, PAIR_EXP, PAIR_EXP_CLAMPED };
enum pass3_output { SCALE_STORED_EXP, SCALE_STORED_EXP_SPLIT, SCALE_RECOMPUTED_EXP, SUBTRACT_FROM_STORED, SHIFT_AND_SUBTRACT };

/* Max and min of the row, NaN ignored (-inf and +inf if there is nothing else). */
static float row_max_min(const float *x, int64_t n, float *min) {
    vf hi[UNROLL], lo[UNROLL];
    for (int u = 0; u < UNROLL; u++) hi[u] = vf_set1(-INFINITY), lo[u] = vf_set1(INFINITY);
    int64_t i = unaligned_head(x, n);
    if (i > 0) hi[0] = vf_load_tail(x, i, -INFINITY), lo[0] = vf_load_tail(x, i, INFINITY);
    for (; i + UNROLL * VF_LANES <= n; i += UNROLL * VF_LANES)
        for (int u = 0; u < UNROLL; u++) {
            const vf v = vf_load(x + i + u * VF_LANES);
            hi[u] = vf_max_ignoring_nan(v, hi[u]);
            lo[u] = vf_min_ignoring_nan(v, lo[u]);
        }
    for (; i + VF_LANES <= n; i += VF_LANES) {
        const vf v = vf_load(x + i);
        hi[0] = vf_max_ignoring_nan(v, hi[0]);
        lo[0] = vf_min_ignoring_nan(v, lo[0]);
    }
    if (i < n) {
        hi[1] = vf_max_ignoring_nan(vf_load_tail(x + i, n - i, -INFINITY), hi[1]);
        lo[1] = vf_min_ignoring_nan(vf_load_tail(x + i, n - i, INFINITY), lo[1]);
    }
    for (int u = 1; u < UNROLL; u++) hi[0] = vf_max_ignoring_nan(hi[u], hi[0]), lo[0] = vf_min_ignoring_nan(lo[u], lo[0]);
    *min = -vf_reduce_max(vf_sub(vf_zero(), lo[0])); /* min(v) = -max(-v) */
    return vf_reduce_max(hi[0]);
}

/* exp(v - max) in the given form; vmax holds the shift for the pair forms. */
SML_INLINE vf shifted_exp(vf v, vf vmax, enum exp_form form) {
    if (form == SHIFTED_EXP || form == SHIFTED_EXP_NO_CUTOFF) return vf_exp_nonpositive(vf_sub(v, vmax), form == SHIFTED_EXP);
    vf n;
    const vf p = form == PAIR_EXP_CLAMPED ? clamped_exp_mantissa(v, &n) : vf_exp_mantissa(v, &n);
    return vf_scale_pow2(p, vf_sub(n, vmax));
}

/* exp(v - max), and what pass 2 stores of it. */
SML_INLINE vf pass2_vector(vf v, vf vmax, float *y, enum pass2_store store, enum exp_form form) {
    const vf e = shifted_exp(v, vmax, form);
    if (store == STORE_EXP) vf_store(y, e);
    if (store == STORE_SHIFTED) vf_store(y, vf_sub(v, vmax));
    return e;
}

/* The form for a vector padded with -inf: one that gives it exp 0. */
SML_INLINE enum exp_form form_for_padding(enum exp_form form) {
    return form == SHIFTED_EXP_NO_CUTOFF ? SHIFTED_EXP : form == PAIR_EXP ? PAIR_EXP_CLAMPED : form;
}

/* Pass 2 over the first k < VF_LANES elements: masked, the rest filled with
 * -inf, and their exps counted as exactly 0. */
SML_INLINE vf pass2_partial(const float *x, float *y, int64_t k, vf vmax, enum pass2_store store, enum exp_form form) {
    float stored[VF_LANES], exps[VF_LANES];
    vf_store(exps, pass2_vector(vf_load_tail(x, k, -INFINITY), vmax, stored, store, form_for_padding(form)));
    if (store != STORE_NOTHING) vf_store_tail(y, k, vf_load(stored));
    return vf_load_tail(exps, k, 0.0f);
}

/* Pass 2 over one trip of SUM_TRIP vectors: their exps added as a pairwise
 * tree in float, ((e0 + e1) + (e2 + e3)) + ((e4 + e5) + (e6 + e7)). */
SML_INLINE vf pass2_trip(const float *x, float *y, vf vmax, enum pass2_store store, enum exp_form form) {
    vf e[SUM_TRIP];
    for (int u = 0; u < SUM_TRIP; u++)
        e[u] = pass2_vector(vf_load(x + u * VF_LANES), vmax, y + u * VF_LANES, store, form);
    for (int width = SUM_TRIP / 2; width > 0; width /= 2)
        for (int u = 0; u < width; u++) e[u] = vf_add(e[2 * u], e[2 * u + 1]);
    return e[0];
}

/* Sum of exp(x - max) over the row.  Each trip's tree goes straight into
 * double lanes, so every element passes through at most three float
 * roundings whatever the row length.  (Float lane accumulators, even folded
 * into a double every few thousand elements, lose every term below half an
 * ULP of a lane that already holds a large exp, such as the max's
 * exp(0) = 1: up to 125 ULP for one dominant logit in a long tail.)
 *
 * Unlike the other passes, this one has no aligned head: the lane an element
 * lands in decides how it is rounded, so aligning would make the result depend
 * on the array's address (a copy could differ from the original in the last
 * bit).  One tree per widening keeps the loads in address order, which the
 * hardware prefetcher needs when they straddle cache lines: with two trees
 * per widening, the compiler interleaved them and unaligned rows ran three
 * times slower out of cache. */
SML_INLINE double sum_exp_shifted(const float *x, float *y, int64_t n, float max, enum pass2_store store, enum exp_form form) {
    const vf vmax = vf_set1(max);
    const int64_t trip = SUM_TRIP * VF_LANES;
    vsum sum = vsum_zero();
    int64_t i = 0;
    for (; i + trip <= n; i += trip) sum = vsum_add(sum, pass2_trip(x + i, y + i, vmax, store, form));
    for (; i + VF_LANES <= n; i += VF_LANES)
        sum = vsum_add(sum, pass2_vector(vf_load(x + i), vmax, y + i, store, form));
    if (i < n) sum = vsum_add(sum, pass2_partial(x + i, y + i, n - i, vmax, store, form));
    return vsum_reduce(sum);
}

/* Softmax outputs are formed times OUTPUT_SCALE (exact), where no product is
 * subnormal, and scaled back where they are at least FLT_MIN: on Intel cores
 * every subnormal result costs a microcode assist, which made rows wider than
 * about 87 (U(-80, 80)) 8-13x slower.  The bits are those of the plain products
 * flushed below FLT_MIN. */
#define OUTPUT_SCALE 0x1p64f
#define FLT_MIN_SCALED 0x1p-62f                   /* FLT_MIN * OUTPUT_SCALE */
#define JUST_BELOW_FLT_MIN_SCALED 0x1.FFFFFEp-63f /* the float below it */

/* What pass 3 needs of its row.  factor: 1/sum (softmax; split into factor +
 * factor_low for SCALE_STORED_EXP_SPLIT) or log(sum) (log-softmax).  The
 * softmax forms also keep: the factors times OUTPUT_SCALE; low_rounding,
 * +-2^-62 with factor_low's sign, which rounds a scaled low product to the
 * subnormal grid (times OUTPUT_SCALE) as the unscaled product was rounded;
 * normal_from, the least source whose output (and low product) is surely
 * normal, so that vectors at or above it take the plain products. */
struct pass3_row {
    vf max, factor, factor_low, factor_scaled, low_scaled, low_rounding, normal_from;
    float factor_scaled_scalar;
};

static struct pass3_row pass3_constants(float max, float factor, float factor_low, enum pass3_output output) {
    if (output == SUBTRACT_FROM_STORED || output == SHIFT_AND_SUBTRACT) /* log-softmax: no products */
        return (struct pass3_row){.max = vf_set1(max), .factor = vf_set1(factor)};
    const double low_magnitude = fabs((double)factor_low);
    const double normal_from = fmax(0x1p-125 / factor, low_magnitude > 0.0 ? 0x1p-126 / low_magnitude : 0.0);
    return (struct pass3_row){
        .max = vf_set1(max), .factor = vf_set1(factor), .factor_low = vf_set1(factor_low),
        .factor_scaled = vf_set1(factor * OUTPUT_SCALE), .low_scaled = vf_set1(factor_low * OUTPUT_SCALE),
        .low_rounding = vf_set1(copysignf(FLT_MIN_SCALED, factor_low)),
        .normal_from = vf_set1(nextafterf((float)normal_from, INFINITY)),
        .factor_scaled_scalar = factor * OUTPUT_SCALE,
    };
}

/* Lanes of u (outputs times OUTPUT_SCALE, rounded once) that came out as the
 * float just below FLT_MIN_SCALED: the output itself, rounded to the subnormal
 * grid, is FLT_MIN where its exact value, source * factor + low_product (all
 * scaled), is at least 2^-126 - 2^-150, else it is flushed.  Rare, so scalar;
 * the double sum is exact (47 bits). */
static vf settle_just_below_flt_min(vf u, vf source, vf low_product, float factor_scaled) {
    float lanes[VF_LANES], sources[VF_LANES], lows[VF_LANES];
    vf_store(lanes, u), vf_store(sources, source), vf_store(lows, low_product);
    for (int k = 0; k < VF_LANES; k++)
        if (lanes[k] == JUST_BELOW_FLT_MIN_SCALED)
            lanes[k] = (double)sources[k] * factor_scaled + lows[k] >= 0x1p-62 - 0x1p-86 ? FLT_MIN_SCALED : 0.0f;
    return vf_load(lanes);
}

/* u / OUTPUT_SCALE, +0 where the output is below FLT_MIN (NaN kept). */
SML_INLINE vf unscale_flushed(vf u, vf source, vf low_product, const struct pass3_row *row) {
    if (vf_any_equal(u, vf_set1(JUST_BELOW_FLT_MIN_SCALED)))
        u = settle_just_below_flt_min(u, source, low_product, row->factor_scaled_scalar);
    return vf_mul(vf_where_less(u, vf_set1(FLT_MIN_SCALED), vf_zero(), u), vf_set1(1.0f / OUTPUT_SCALE));
}

/* e * factor, flushed below FLT_MIN. */
SML_INLINE vf scale_flushed(vf e, const struct pass3_row *row) {
    if (!vf_any_less(e, row->normal_from)) return vf_mul(e, row->factor);
    return unscale_flushed(vf_mul(e, row->factor_scaled), e, vf_zero(), row);
}

/* s * (factor + factor_low) rounded once, flushed below FLT_MIN.  Where the
 * unscaled low product s * factor_low was subnormal, it was rounded to the
 * subnormal grid: adding low_rounding (+-2^-62, of its sign) rounds the scaled
 * product to multiples of 2^-85, the same grid times OUTPUT_SCALE, and
 * subtracting it again is exact. */
SML_INLINE vf split_scale_flushed(vf s, const struct pass3_row *row) {
    if (!vf_any_less(s, row->normal_from)) return vf_fma(s, row->factor, vf_mul(s, row->factor_low));
    const vf low = vf_mul(s, row->low_scaled);
    const vf low_on_subnormal_grid = vf_sub(vf_fma(s, row->low_scaled, row->low_rounding), row->low_rounding);
    const vf low_product = vf_where_less(vf_abs(low), vf_set1(FLT_MIN_SCALED), low_on_subnormal_grid, low);
    return unscale_flushed(vf_fma(s, row->factor_scaled, low_product), s, low_product, row);
}

/* The output of pass 3 for one vector: `source` is y (stored) or x.
 * SCALE_STORED_EXP_SPLIT multiplies by 1/sum split into two floats, high +
 * low, rounding once: a float 1/sum would add its own rounding to every
 * output, which reload_exact's bound cannot afford. */
SML_INLINE vf pass3_vector(vf source, const struct pass3_row *row, enum pass3_output output, enum exp_form form) {
    switch (output) {
    case SCALE_STORED_EXP: return scale_flushed(source, row);
    case SCALE_STORED_EXP_SPLIT: return split_scale_flushed(source, row);
    case SCALE_RECOMPUTED_EXP: return scale_flushed(shifted_exp(source, row->max, form), row);
    case SUBTRACT_FROM_STORED: return vf_sub(source, row->factor);
    default: return vf_sub(vf_sub(source, row->max), row->factor);
    }
}

/* Pass 3 over a row; factor_low is used by SCALE_STORED_EXP_SPLIT only. */
SML_INLINE void write_output(const float *source, float *y, int64_t n, float max, float factor, float factor_low,
                              enum pass3_output output, enum exp_form form) {
    const struct pass3_row row = pass3_constants(max, factor, factor_low, output);
    const enum exp_form padding_form = form_for_padding(form);
    int64_t i = unaligned_head(source, n);
    if (i > 0) vf_store_tail(y, i, pass3_vector(vf_load_tail(source, i, 0.0f), &row, output, padding_form));
    for (; i + UNROLL * VF_LANES <= n; i += UNROLL * VF_LANES)
        for (int u = 0; u < UNROLL; u++) {
            const int64_t at = i + u * VF_LANES;
            vf_store(y + at, pass3_vector(vf_load(source + at), &row, output, form));
        }
    for (; i + VF_LANES <= n; i += VF_LANES) vf_store(y + i, pass3_vector(vf_load(source + i), &row, output, form));
    if (i < n) vf_store_tail(y + i, n - i, pass3_vector(vf_load_tail(source + i, n - i, 0.0f), &row, output, padding_form));
}

/* A row split into chunks (csrc/pool.h), the parameters of its passes and the
 * partial result of each chunk.  Rows of at most ROW_CHUNK_MIN elements are
 * one chunk: the passes below then run exactly as over an unsplit row. */
struct chunked_row {
    const float *x;
    float *y;
    int64_t n, chunk;
    float shift;                 /* pass 2's max, or reload_exact's shift */
    float factor, factor_low;    /* pass 3's, see write_output */
    float maxes[ROW_CHUNKS_MAX], mins[ROW_CHUNKS_MAX];
    double sums[ROW_CHUNKS_MAX];
};

SML_INLINE void max_min_chunks(void *context, int64_t first, int64_t end) {
    struct chunked_row *row = context;
    for (int64_t c = first; c < end; c++)
        row->maxes[c] = row_max_min(row->x + c * row->chunk, chunk_length(row->n, c), &row->mins[c]);
}

/* Passes 2 and 3 over chunks [first, end) of a row, one pair of functions per
 * kernel and exp form: the store, form and output are constants in each, which
 * the compiler needs to specialize the loops. */
#define CHUNK_PASSES(name, store, form, output)                                                                    \
    SML_INLINE void name##_sum(void *context, int64_t first, int64_t end) {                                       \
        struct chunked_row *row = context;                                                                         \
        for (int64_t c = first; c < end; c++) {                                                                    \
            const int64_t at = c * row->chunk;                                                                     \
            row->sums[c] = sum_exp_shifted(row->x + at, row->y + at, chunk_length(row->n, c), row->shift, store, form); \
        }                                                                                                          \
    }                                                                                                              \
    SML_INLINE void name##_write(void *context, int64_t first, int64_t end) {                                     \
        struct chunked_row *row = context;                                                                         \
        const float *source = (store) == STORE_NOTHING ? row->x : row->y;                                          \
        for (int64_t c = first; c < end; c++) {                                                                    \
            const int64_t at = c * row->chunk;                                                                     \
            write_output(source + at, row->y + at, chunk_length(row->n, c), row->shift, row->factor, row->factor_low, \
                         output, form);                                                                            \
        }                                                                                                          \
    }

CHUNK_PASSES(softmax_reload, STORE_EXP, SHIFTED_EXP, SCALE_STORED_EXP)
CHUNK_PASSES(softmax_reload_no_cutoff, STORE_EXP, SHIFTED_EXP_NO_CUTOFF, SCALE_STORED_EXP)
CHUNK_PASSES(softmax_recompute, STORE_NOTHING, SHIFTED_EXP, SCALE_RECOMPUTED_EXP)
CHUNK_PASSES(softmax_recompute_no_cutoff, STORE_NOTHING, SHIFTED_EXP_NO_CUTOFF, SCALE_RECOMPUTED_EXP)
CHUNK_PASSES(log_softmax_reload, STORE_SHIFTED, SHIFTED_EXP, SUBTRACT_FROM_STORED)
CHUNK_PASSES(log_softmax_reload_no_cutoff, STORE_SHIFTED, SHIFTED_EXP_NO_CUTOFF, SUBTRACT_FROM_STORED)
CHUNK_PASSES(log_softmax_recompute, STORE_NOTHING, SHIFTED_EXP, SHIFT_AND_SUBTRACT)
CHUNK_PASSES(log_softmax_recompute_no_cutoff, STORE_NOTHING, SHIFTED_EXP_NO_CUTOFF, SHIFT_AND_SUBTRACT)
CHUNK_PASSES(reload_exact, STORE_EXP, PAIR_EXP, SCALE_STORED_EXP_SPLIT)
CHUNK_PASSES(reload_exact_clamped, STORE_EXP, PAIR_EXP_CLAMPED, SCALE_STORED_EXP_SPLIT)

/* Passes 2 and 3 of a row: the CHUNK_PASSES of its kernel and exp form. */
struct row_passes {
    sml_task_range sum, write;
};

#define PASSES(name) ((struct row_passes){name##_sum, name##_write})

SML_INLINE struct chunked_row *chunk_row(struct chunked_row *row, const float *x, float *y, int64_t n) {
    row->x = x, row->y = y, row->n = n, row->chunk = row_chunk(n);
    return row;
}

/* Pass 1 over the chunks: the row's max and min (NaN ignored). */
SML_INLINE float chunked_max_min(struct chunked_row *row, int threads, float *min) {
    const int64_t chunks = row_chunk_count(row->n);
    run_chunks(chunks, row->n, threads, max_min_chunks, row);
    float max = row->maxes[0];
    *min = row->mins[0];
    for (int64_t c = 1; c < chunks; c++) {
        max = row->maxes[c] > max ? row->maxes[c] : max;
        *min = row->mins[c] < *min ? row->mins[c] : *min;
    }
    return max;
}

/* Pass 2 over the chunks: the sum of exp(x - shift), the chunks' sums added in
 * chunk order. */
SML_INLINE double chunked_sum(struct chunked_row *row, struct row_passes passes, float shift, int threads) {
    const int64_t chunks = row_chunk_count(row->n);
    row->shift = shift;
    run_chunks(chunks, row->n, threads, passes.sum, row);
    double sum = row->sums[0];
    for (int64_t c = 1; c < chunks; c++) sum += row->sums[c];
    return sum;
}

SML_INLINE void chunked_write(struct chunked_row *row, struct row_passes passes, float factor, float factor_low,
                          int threads) {
    row->factor = factor, row->factor_low = factor_low;
    run_chunks(row_chunk_count(row->n), row->n, threads, passes.write, row);
}

SML_INLINE void three_pass_row_after_max(struct chunked_row *row, float max, struct row_passes passes, int log_output,
                                     int threads) {
    const double sum = chunked_sum(row, passes, max, threads);
    if (log_output) chunked_write(row, passes, (float)log(sum), 0.0f, threads);
    else chunked_write(row, passes, (float)(1.0 / sum), 0.0f, threads);
}

/* The passes of a three-pass kernel: with or without the exp's cutoff test. */
struct three_pass_kernel {
    struct row_passes with_cutoff, no_cutoff;
    int log_output;
};

SML_INLINE void three_pass_row(const float *x, float *y, int64_t n, struct three_pass_kernel kernel, int threads) {
    if (n == 0) return;
    struct chunked_row row;
    float min;
    const float max = chunked_max_min(chunk_row(&row, x, y, n), threads, &min);
    if (max == INFINITY) {
        infinite_row(x, y, n, kernel.log_output);
        return;
    }
    /* A row of -inf (and NaN) has max = -inf: x - max is NaN, so is the row.
     * When min - max is at or above the exp's cutoff (no -inf, nothing 87
     * below the max: most rows), so is every x - max, and the exp skips its
     * cutoff test (11 % of the exp pass on AVX2, 4 % on AVX-512).  The
     * results are the same bits either way. */
    if (min - max >= SML_EXP_CUTOFF) three_pass_row_after_max(&row, max, kernel.no_cutoff, kernel.log_output, threads);
    else three_pass_row_after_max(&row, max, kernel.with_cutoff, kernel.log_output, threads);
}

static const struct three_pass_kernel SOFTMAX_RELOAD = {PASSES(softmax_reload), PASSES(softmax_reload_no_cutoff), 0};

SML_INLINE void reload_exact_after_max(struct chunked_row *row, float shift, struct row_passes passes, int threads) {
    const double inverse_sum = 1.0 / chunked_sum(row, passes, shift, threads);
    const float high = (float)inverse_sum;
    chunked_write(row, passes, high, (float)(inverse_sum - high), threads);
}

/* reload_exact softmax of a row: exp(x - max) = p * 2^(n - n_max) exactly, with
 * 2^SHIFT_HEADROOM more, summed and stored; then y = stored * (1/sum). */
SML_INLINE void reload_exact_row(const float *x, float *y, int64_t n, int threads) {
    if (n == 0) return;
    struct chunked_row row;
    float min;
    const float max = chunked_max_min(chunk_row(&row, x, y, n), threads, &min);
    if (max == INFINITY) {
        infinite_row(x, y, n, 0);
        return;
    }
    if (!(fabsf(max) < PAIR_ROW_LIMIT)) { /* also a row of -inf and NaN: NaN, as in reload */
        three_pass_row_after_max(&row, max, PASSES(softmax_reload), 0, threads);
        return;
    }
    /* The same rounding as vf_exp_mantissa's n, so that no element's n exceeds n_max. */
    const float shift = nearbyintf(max * SML_LOG2E) - SHIFT_HEADROOM;
    if (min >= -X_CLAMP) reload_exact_after_max(&row, shift, PASSES(reload_exact), threads);
    else reload_exact_after_max(&row, shift, PASSES(reload_exact_clamped), threads);
}

void SML_ISA_SUFFIX(sml_f32_exp_nonpositive)(int64_t n, const float *t, float *e) {
    int64_t i = 0;
    for (; i + VF_LANES <= n; i += VF_LANES) vf_store(e + i, vf_exp_nonpositive(vf_load(t + i), 1));
    if (i < n) vf_store_tail(e + i, n - i, vf_exp_nonpositive(vf_load_tail(t + i, n - i, 0.0f), 1));
}

SML_INLINE void softmax_reload_row(const float *x, float *y, int64_t n, int threads) {
    three_pass_row(x, y, n, SOFTMAX_RELOAD, threads);
}

SML_INLINE void softmax_recompute_row(const float *x, float *y, int64_t n, int threads) {
    three_pass_row(x, y, n, (struct three_pass_kernel){PASSES(softmax_recompute), PASSES(softmax_recompute_no_cutoff), 0},
                   threads);
}

SML_INLINE void log_softmax_reload_row(const float *x, float *y, int64_t n, int threads) {
    three_pass_row(x, y, n, (struct three_pass_kernel){PASSES(log_softmax_reload), PASSES(log_softmax_reload_no_cutoff), 1},
                   threads);
}

SML_INLINE void log_softmax_recompute_row(const float *x, float *y, int64_t n, int threads) {
    three_pass_row(x, y, n,
                   (struct three_pass_kernel){PASSES(log_softmax_recompute), PASSES(log_softmax_recompute_no_cutoff), 1},
                   threads);
}

SML_ROW_KERNEL(sml_f32_softmax_reload, softmax_reload_row, )
SML_ROW_KERNEL(sml_f32_softmax_recompute, softmax_recompute_row, )
SML_ROW_KERNEL(sml_f32_log_softmax_reload, log_softmax_reload_row, )
SML_ROW_KERNEL(sml_f32_log_softmax_recompute, log_softmax_recompute_row, )
SML_ROW_KERNEL(sml_f32_softmax_reload_exact, reload_exact_row, )

SML_TILES(three_pass, VF_LANES, UNROLL * VF_LANES, SUM_TRIP * VF_LANES)

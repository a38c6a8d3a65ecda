/* 8-bit block-wise quantization, written once against the vector API of
 * vec_<isa>.h and included by quant_<isa>.c (softmaxlib/quant.py has the
 * semantics, softmaxlib/_codebooks.py builds the tables).
 *
 * quantize: per block, absmax = max |x| (NaN if the block has a NaN, else
 * inf if it has an inf), y = x * (1/absmax) (0 for an all-zero block), and
 * the code of y: the number of midpoints (rounded down to float32) below y.
 * The table, indexed by y's top 16 bits (a bucket), gives the code of the
 * bucket's smallest value and the key (low 16 bits, complemented if negative)
 * of the one midpoint inside it: the code is the candidate plus key(y) >
 * key(midpoint), exactly, for codebooks whose buckets hold at most one
 * midpoint (single_compare; softmaxlib/_codebooks.py explains the keys).
 * Other codebooks take a binary search per element.  A NaN y (from a NaN or
 * inf with nonfinite="propagate") gets the zero code either way.
 * Blocks with absmax above 2^126, whose reciprocal is subnormal, scale in
 * double (codes_of_huge_block), so that flush-to-zero cannot zero them.
 * dequantize: code[q] * absmax of q's block; NaN for a block whose absmax is
 * not finite. */
#include <math.h>
#include "tiles.h"
#include <string.h>
#include "row_layout.h"
#include "pool.h"

SML_INLINE vi codes_of_vector(vf y, const int32_t *table) {
    return vi_code_from_entry(vi_gather(table, vf_top16(y)), vf_key16(y));
}

static uint8_t code_by_search(float y, const float *midpoints, uint8_t zero_code) {
    if (y != y) return zero_code;
    int low = 0, high = 255; /* the code lies in [low, high] */
    while (low < high) {
        const int middle = (low + high) / 2;
        if (y > midpoints[middle]) low = middle + 1;
        else high = middle;
    }
    return (uint8_t)low;
}

/* The code of one scaled value by one lookup in the bucket table (exact for
 * single_compare codebooks). */
SML_INLINE uint8_t code_by_lookup(float y, const int32_t *table) {
    uint32_t bits;
    memcpy(&bits, &y, sizeof bits);
    const int32_t entry = table[bits >> 16];
    const uint32_t key = (bits ^ (uint32_t)((int32_t)bits >> 31)) & 0xFFFF;
    return (uint8_t)((entry & 0xFF) + (key > (uint32_t)((entry >> 8) & 0xFFFF)));
}

/* The codes of one vector of scaled values by scalar lookups (for ISAs whose
 * gathers are slower than that, see VF_FAST_GATHER in vec_<isa>.h). */
SML_INLINE void codes_by_scalar_lookups(vf y, const int32_t *table, uint8_t *q) {
    float values[VF_LANES];
    vf_store(values, y);
    for (int k = 0; k < VF_LANES; k++) q[k] = code_by_lookup(values[k], table);
}

/* q[i] = the code of x[i] * scale, for i < n. */
SML_INLINE void codes_of_scaled_block(const float *x, int64_t n, float scale, const int32_t *table,
                                      const float *midpoints, int single_compare, uint8_t zero_code, uint8_t *q) {
    if (!single_compare) {
        for (int64_t i = 0; i < n; i++) q[i] = code_by_search(x[i] * scale, midpoints, zero_code);
        return;
    }
    const vf vscale = vf_set1(scale);
    int64_t i = 0;
    for (; i + VF_LANES <= n; i += VF_LANES) {
        const vf y = vf_mul(vf_load(x + i), vscale);
        if (VF_FAST_GATHER) vi_store_u8(q + i, codes_of_vector(y, table));
        else codes_by_scalar_lookups(y, table, q + i);
    }
    if (i < n) vi_store_u8_tail(q + i, n - i, codes_of_vector(vf_mul(vf_load_tail(x + i, n - i, 0.0f), vscale), table));
}

/* max |x| over a block: vmaxps drops NaN, so the non-finite are detected by
 * a sum of |x| * 0 (NaN for a NaN or an inf), and such blocks are resolved
 * in scalar code. */
static float block_absmax(const float *x, int64_t n) {
    vf high = vf_zero(), poison = vf_zero();
    int64_t i = 0;
    for (; i + VF_LANES <= n; i += VF_LANES) {
        const vf a = vf_abs(vf_load(x + i));
        high = vf_max(a, high);
        poison = vf_fma(a, vf_zero(), poison);
    }
    if (i < n) {
        const vf a = vf_abs(vf_load_tail(x + i, n - i, 0.0f));
        high = vf_max(a, high);
        poison = vf_fma(a, vf_zero(), poison);
    }
    if (!vf_any_nan(poison)) return vf_reduce_max(high);
    float m = 0.0f; /* a NaN or an inf: NaN wins, then inf */
    for (int64_t k = 0; k < n; k++) {
        const float a = fabsf(x[k]);
        if (a != a) return NAN;
        m = a > m ? a : m;
    }
    return m;
}

/* Above this absmax m, fl32(1/m) is subnormal: flush-to-zero would make it 0
 * (every code the zero code), and denormals-are-zero would read it as 0. */
#define SUBNORMAL_RECIPROCAL_ABOVE 0x1p126f
/* Adding and subtracting it rounds a double below 2^-126 to a multiple of
 * 2^-149, the spacing of float subnormals: the sum lies in [2^-97, 2^-96),
 * whose double spacing is 2^-149, with ties to even (this constant is an even
 * multiple of 2^-149), and the subtraction is exact. */
#define SUBNORMAL_GRID_ROUNDER 0x1.8p-97

/* q[i] = the code of x[i] * fl32(1/m), bit for bit as the float path computes
 * it without FTZ/DAZ, for a block with absmax m > 2^126 (or inf), without
 * ever forming a subnormal float.  g = fl32(1/m) is obtained in double: 1/m
 * rounded to double, then to the subnormal grid.  That double rounding is
 * the single one: 1/m is never a midpoint of the grid (that needs m = 2^150 /
 * an odd integer), and it lies more than 2^-174 from one (the distance is
 * |2^150 - odd * m| / (m * 2^150), whose numerator is a non-zero multiple of
 * ulp(m) > m * 2^-24), while the double quotient is within 2^-180 of 1/m;
 * tests/test_quant_defects.py also checks every float m in [2^126, FLT_MAX].  x * g is exact in double (24 by at most 23 bits), so
 * converting it rounds once, as the float multiply does.  An inf m gives g =
 * 0, as 1/inf does.  Rare blocks: scalar code. */
static void codes_of_huge_block(const float *x, int64_t n, float m, const int32_t *table, const float *midpoints,
                                int single_compare, uint8_t zero_code, uint8_t *q) {
    const double g = (1.0 / (double)m + SUBNORMAL_GRID_ROUNDER) - SUBNORMAL_GRID_ROUNDER;
    for (int64_t i = 0; i < n; i++) {
        const float y = (float)((double)x[i] * g);
        q[i] = single_compare ? code_by_lookup(y, table) : code_by_search(y, midpoints, zero_code);
    }
}

void SML_ISA_SUFFIX(sml_f32_u8_codes_of_scaled)(int64_t n, const float *y, const int32_t *table, const float *midpoints,
                                            int single_compare, uint8_t zero_code, uint8_t *q) {
    codes_of_scaled_block(y, n, 1.0f, table, midpoints, single_compare, zero_code, q);
}

struct quantize_job {
    const float *x;
    int64_t n, blocksize;
    const int32_t *table;
    const float *midpoints;
    int single_compare;
    uint8_t zero_code;
    uint8_t *q;
    float *absmax;
};

/* Blocks [first, end): blocks are independent, so any thread can take any. */
static void quantize_blocks(void *context, int64_t first, int64_t end) {
    const struct quantize_job *job = context;
    for (int64_t b = first; b < end; b++) {
        const int64_t start = b * job->blocksize;
        const int64_t count = job->n - start < job->blocksize ? job->n - start : job->blocksize;
        const float m = block_absmax(job->x + start, count);
        job->absmax[b] = m;
        if (m > SUBNORMAL_RECIPROCAL_ABOVE)
            codes_of_huge_block(job->x + start, count, m, job->table, job->midpoints, job->single_compare, job->zero_code,
                                job->q + start);
        else
            codes_of_scaled_block(job->x + start, count, m > 0.0f ? 1.0f / m : 0.0f, job->table, job->midpoints,
                                  job->single_compare, job->zero_code, job->q + start);
    }
}

void SML_ISA_SUFFIX(sml_f32_u8_quantize_blockwise)(int64_t n, const float *x, int64_t blocksize, const int32_t *table,
                                               const float *midpoints, int single_compare, uint8_t zero_code,
                                               uint8_t *q, float *absmax, int workers) {
    struct quantize_job job = {x, n, blocksize, table, midpoints, single_compare, zero_code, q, absmax};
    run_tasks((n + blocksize - 1) / blocksize, n, workers, quantize_blocks, &job);
}

SML_INLINE vf dequantized_vector(const vf_table256 *table, vi codes, vf scale) {
    return vf_mul(vf_table256_lookup(table, codes), scale);
}

/* stream = 1 writes out with non-temporal stores (aligned: each block starts
 * with a masked head up to the first aligned address of its output), for
 * outputs larger than the cache: they skip the read for ownership of every
 * output line.  The caller's stream is a request, honoured where the ISA's
 * VF_DEQUANTIZE_STREAMS says it pays. */
SML_INLINE void dequantize_blocks(int64_t first, int64_t end, int64_t n, const uint8_t *q, const float *absmax,
                                  int64_t blocksize, const float *code, float *out, int stream) {
    const vf_table256 table = vf_table256_load(code);
    for (int64_t b = first; b < end; b++) {
        const int64_t start = b * blocksize;
        const int64_t count = n - start < blocksize ? n - start : blocksize;
        /* A non-finite absmax (nonfinite="propagate") makes the whole block NaN:
         * inf times a non-zero code (maps without a zero code) would be +-inf. */
        const vf scale = vf_set1(isfinite(absmax[b]) ? absmax[b] : NAN);
        const uint8_t *block = q + start;
        float *y = out + start;
        int64_t i = stream ? unaligned_head(y, count) : 0;
        if (i > 0) vf_store_tail(y, i, dequantized_vector(&table, vi_load_u8_tail(block, i), scale));
        for (; i + VF_LANES <= count; i += VF_LANES) {
            const vf v = dequantized_vector(&table, vi_load_u8(block + i), scale);
            if (stream) vf_store_stream(y + i, v);
            else vf_store(y + i, v);
        }
        if (i < count) vf_store_tail(y + i, count - i, dequantized_vector(&table, vi_load_u8_tail(block + i, count - i), scale));
    }
    /* Non-temporal stores are weakly ordered: each thread fences its own. */
    if (stream) vf_stream_fence();
}

struct dequantize_job {
    int64_t n;
    const uint8_t *q;
    const float *absmax;
    int64_t blocksize;
    const float *code;
    float *out;
};

static void dequantize_stored(void *context, int64_t first, int64_t end) {
    const struct dequantize_job *job = context;
    dequantize_blocks(first, end, job->n, job->q, job->absmax, job->blocksize, job->code, job->out, 0);
}

static void dequantize_streamed(void *context, int64_t first, int64_t end) {
    const struct dequantize_job *job = context;
    dequantize_blocks(first, end, job->n, job->q, job->absmax, job->blocksize, job->code, job->out, 1);
}

void SML_ISA_SUFFIX(sml_u8_f32_dequantize_blockwise)(int64_t n, const uint8_t *q, const float *absmax, int64_t blocksize,
                                                 const float *code, float *out, int stream, int workers) {
    struct dequantize_job job = {n, q, absmax, blocksize, code, out};
    run_tasks((n + blocksize - 1) / blocksize, n, workers,
                 stream && VF_DEQUANTIZE_STREAMS ? dequantize_streamed : dequantize_stored, &job);
}

SML_TILES(quant, VF_LANES)

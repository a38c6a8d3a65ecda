/* 8-bit block-wise quantization, written once against the vector API of
 * vec_<isa>.h and included by quant_<isa>.c (softmaxlib/quant.py has the
 * semantics, softmaxlib/_codebooks.py builds the tables).
 *
 * quantize: per block, absmax = max |x| (NaN if the block has a NaN, else
 * inf if it has an inf), y = x * (1/absmax) (0 for an all-zero block), and
 * the code of y by the exact search of code_search.h.
 * dequantize: code[q] * absmax of q's block; NaN for a block whose absmax is
 * not finite. */
#include <math.h>
#include "tiles.h"
#include "row_layout.h"
#include "pool.h"
#include "code_search.h"

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
        codes_of_block(job->x + start, count, m, job->table, job->midpoints, job->single_compare, job->zero_code,
                       job->q + start);
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

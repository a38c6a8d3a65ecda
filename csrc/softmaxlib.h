/* softmaxlib's public C interface.
 *
 * This file is also the cffi cdef source, so it holds declarations only: no
 * include guards, no macros, no includes (every .c file includes <stdint.h>
 * first).  Declaring a function twice is legal C, so no guard is needed.
 *
 * Naming, after XNNPACK: sml_<dtype>_<operation>__<isa>.
 * Every row kernel has the same contract:
 *   - `rows` contiguous rows of `n` float32 each, row r at x + r*n, result at
 *     y + r*n; y may be x itself (in place), any other overlap is undefined;
 *   - single-threaded, reentrant, no global state;
 *   - reads and writes nothing outside [x, x + rows*n) and [y, y + rows*n);
 *   - every array at a multiple of its element size, as C requires (NumPy
 *     arrays need not be: softmaxlib/_registry.py passes aligned copies), and
 *     no other alignment assumed.
 */

/* CPU features, detected with CPUID and XGETBV (OS support of the register
 * state included).  Bit values of the returned mask: */
#define SML_CPU_AVX2     1
#define SML_CPU_FMA      2
#define SML_CPU_F16C     4
#define SML_CPU_AVX512F  8
#define SML_CPU_AVX512BW 16
#define SML_CPU_AVX512DQ 32
#define SML_CPU_AVX512VL 64
int sml_cpu_features(void);

/* The package version the extension was compiled from (checked at import). */
const char *sml_build_version(void);

/* MXCSR, the SSE/AVX control and status register of the calling thread, for
 * the tests: they run kernels under flush-to-zero (bit 15) and
 * denormals-are-zero (bit 6), and read the sticky underflow (bit 4) and
 * denormal-operand (bit 1) flags to find subnormal intermediates. */
uint32_t sml_get_mxcsr(void);
void sml_set_mxcsr(uint32_t value);

/* Memory streams for the bandwidth probe (portable C, no ISA extension).
 * read: XOR of every 64-bit word, so the loads cannot be optimised away.
 * read_write: adds 1 to every 64-bit word in place. */
uint64_t sml_stream_read(const uint64_t *words, int64_t count);
void sml_stream_read_write(uint64_t *words, int64_t count);

/* The vector exp of every softmax kernel, exported so that the tests can check
 * it over every float32 input: e[i] = exp(t[i]) for t[i] <= 0 or NaN, +0
 * below ln(FLT_MIN) (csrc/exp_constants.h). */
void sml_f32_exp_nonpositive__avx2(int64_t n, const float *t, float *e);
void sml_f32_exp_nonpositive__avx512(int64_t n, const float *t, float *e);

/* Three-pass softmax and log-softmax.
 * reload:    max; y = exp(x - max) while summing; y *= 1/sum.
 * recompute: max; sum of exp(x - max); y = exp(x - max) * (1/sum).
 * log_softmax: y = (x - max) - log(sum) in both variants; reload stores x - max
 * in the second pass and subtracts in the third, recompute forms it again.
 * reload_exact: reload with exp(x - max) = p * 2^(n - n_max) from exp(x) =
 * p * 2^n, so that x - max is never rounded (softmax only). */
void sml_f32_softmax_reload__avx2(int64_t rows, int64_t n, const float *x, float *y);
void sml_f32_softmax_recompute__avx2(int64_t rows, int64_t n, const float *x, float *y);
void sml_f32_log_softmax_reload__avx2(int64_t rows, int64_t n, const float *x, float *y);
void sml_f32_log_softmax_recompute__avx2(int64_t rows, int64_t n, const float *x, float *y);
void sml_f32_softmax_reload_exact__avx2(int64_t rows, int64_t n, const float *x, float *y);
void sml_f32_softmax_reload__avx512(int64_t rows, int64_t n, const float *x, float *y);
void sml_f32_softmax_recompute__avx512(int64_t rows, int64_t n, const float *x, float *y);
void sml_f32_log_softmax_reload__avx512(int64_t rows, int64_t n, const float *x, float *y);
void sml_f32_log_softmax_recompute__avx512(int64_t rows, int64_t n, const float *x, float *y);
void sml_f32_softmax_reload_exact__avx512(int64_t rows, int64_t n, const float *x, float *y);

/* Two-pass softmax and log-softmax (csrc/two_pass_kernels.h); the _stream
 * kernels write y with non-temporal stores, for outputs larger than the cache
 * (softmaxlib picks them above half the last-level cache).  And the first
 * pass alone: per row, sum exp(x) = mantissa[r] * 2^exponent[r] (exponent
 * integral; -inf with mantissa 0 for an empty or all -inf row). */
void sml_f32_softmax_two_pass__avx2(int64_t rows, int64_t n, const float *x, float *y);
void sml_f32_log_softmax_two_pass__avx2(int64_t rows, int64_t n, const float *x, float *y);
void sml_f32_sum_exp_pair__avx2(int64_t rows, int64_t n, const float *x, double *mantissa, double *exponent);
void sml_f32_softmax_two_pass_stream__avx2(int64_t rows, int64_t n, const float *x, float *y);
void sml_f32_log_softmax_two_pass_stream__avx2(int64_t rows, int64_t n, const float *x, float *y);
void sml_f32_softmax_two_pass__avx512(int64_t rows, int64_t n, const float *x, float *y);
void sml_f32_log_softmax_two_pass__avx512(int64_t rows, int64_t n, const float *x, float *y);
void sml_f32_sum_exp_pair__avx512(int64_t rows, int64_t n, const float *x, double *mantissa, double *exponent);
void sml_f32_softmax_two_pass_stream__avx512(int64_t rows, int64_t n, const float *x, float *y);
void sml_f32_log_softmax_two_pass_stream__avx512(int64_t rows, int64_t n, const float *x, float *y);

/* StableMax (Prieto et al., 2025) and log-StableMax (csrc/stablemax_kernels.h):
 * s(x) = x + 1 for x >= 0, 1 / (1 - x) below; y = s(x) / sum s, or
 * log s(x) - log sum s.  No max is subtracted. */
void sml_f32_stablemax__avx2(int64_t rows, int64_t n, const float *x, float *y);
void sml_f32_log_stablemax__avx2(int64_t rows, int64_t n, const float *x, float *y);
void sml_f32_stablemax__avx512(int64_t rows, int64_t n, const float *x, float *y);
void sml_f32_log_stablemax__avx512(int64_t rows, int64_t n, const float *x, float *y);

/* StableMax cross-entropy per row, accumulated in double: losses[r] =
 * log(sum s) - log s(x[label]); rows whose label is ignore_index give 0.  With
 * grad (else NULL): grad = grad_scale * (p - onehot) / (1 + |x|), zero for
 * ignored rows.  labels must lie in [0, n) or equal ignore_index. */
void sml_f32_stablemax_cross_entropy__avx2(int64_t rows, int64_t n, const float *x, const int64_t *labels,
                                           int64_t ignore_index, double grad_scale, double *losses, float *grad);
void sml_f32_stablemax_cross_entropy__avx512(int64_t rows, int64_t n, const float *x, const int64_t *labels,
                                             int64_t ignore_index, double grad_scale, double *losses, float *grad);

/* 8-bit block-wise quantization (csrc/quant_kernels.h; softmaxlib/quant.py).
 * table (2^16 int32), midpoints (256 float32) and zero_code come from
 * softmaxlib/_codebooks.py; single_compare says the table search is exact.
 * codes_of_scaled: q[i] = the code of y[i] (already scaled by 1/absmax).
 * quantize_blockwise: absmax per block of blocksize (the last partial), and
 *   q[i] = the code of x[i] * (1/absmax of its block).
 * dequantize_blockwise: out[i] = code[q[i]] * absmax of its block (NaN for a
 *   block whose absmax is not finite); stream = 1
 *   asks for non-temporal stores (softmaxlib asks above half the last-level
 *   cache; the AVX2 kernel declines, where they measured slower). */
void sml_u8_codes_of_scaled__avx2(int64_t n, const float *y, const int32_t *table, const float *midpoints,
                                  int single_compare, uint8_t zero_code, uint8_t *q);
void sml_u8_quantize_blockwise__avx2(int64_t n, const float *x, int64_t blocksize, const int32_t *table,
                                     const float *midpoints, int single_compare, uint8_t zero_code, uint8_t *q,
                                     float *absmax);
void sml_u8_dequantize_blockwise__avx2(int64_t n, const uint8_t *q, const float *absmax, int64_t blocksize,
                                       const float *code, float *out, int stream);
void sml_u8_codes_of_scaled__avx512(int64_t n, const float *y, const int32_t *table, const float *midpoints,
                                    int single_compare, uint8_t zero_code, uint8_t *q);
void sml_u8_quantize_blockwise__avx512(int64_t n, const float *x, int64_t blocksize, const int32_t *table,
                                       const float *midpoints, int single_compare, uint8_t zero_code, uint8_t *q,
                                       float *absmax);
void sml_u8_dequantize_blockwise__avx512(int64_t n, const uint8_t *q, const float *absmax, int64_t blocksize,
                                         const float *code, float *out, int stream);

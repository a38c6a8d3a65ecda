/* softmaxlib's public C interface.
 *
 * This file is also the cffi cdef source, so it holds declarations only: no
 * include guards, no macros, no includes (every .c file includes <stdint.h>
 * first).  Declaring a function twice is legal C, so no guard is needed.
 *
 * The kernels' declarations are not written here: softmaxlib/_catalog.py lists
 * every kernel once, with its signature (_catalog.SIGNATURES), and the build
 * (build_ffi.py) declares it for each ISA.  This file states their contracts.
 *
 * Naming, after XNNPACK: sml_<dtype>_<id>__<isa>, where <id> is the catalog's
 * id and <dtype> f32, or f32_u8 / u8_f32 for a conversion.
 * Every row kernel (signature "rows") has the same contract:
 *   - `rows` contiguous rows of `n` float32 each, row r at x + r*n, result at
 *     y + r*n; y may be x itself (in place), any other overlap is undefined;
 *   - reentrant; no global state but the thread pool's (csrc/pool.c);
 *   - reads and writes nothing outside [x, x + rows*n) and [y, y + rows*n);
 *   - every array at a multiple of its element size, as C requires (NumPy
 *     arrays need not be: softmaxlib/_bindings.py passes aligned copies), and
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

/* Cold benchmarks (softmaxlib/bench.py): evicts every cache line of
 * [start, start + bytes) from all cache levels, writing dirty lines back
 * (CLFLUSH, then MFENCE).  Any start alignment and any length; bytes <= 0
 * does nothing.  Steps by 64 bytes: assumes the 64-byte cache line of every
 * x86-64 CPU in use (longer lines would just be flushed more than once). */
void sml_flush_cache_lines(const void *start, int64_t bytes);

/* The thread pool (csrc/pool.c, docs/threading.md).  sml_available_cores: the
 * cores this process may run on (its affinity mask).  sml_pool_size: the
 * pool's worker threads now running (0 before the first parallel call, after
 * sml_pool_shutdown, and in a forked child until its first parallel call).
 * sml_pool_shutdown: stops and joins them (softmaxlib calls it at exit); a
 * later parallel call starts them again. */
int sml_available_cores(void);
int sml_pool_size(void);
void sml_pool_shutdown(void);

/* exp_nonpositive: the vector exp of every softmax kernel, exported so that
 * the tests can check it over every float32 input: e[i] = exp(t[i]) for
 * t[i] <= 0 or NaN, +0 below ln(FLT_MIN) (csrc/exp_constants.h). */

/* sml_<family>_tile__<isa>(k): the k-th loop tile of a family's kernels on an
 * ISA, in elements (vector lanes, then vectors per trip times lanes), 0 past
 * the last: row lengths around their multiples take other paths, and the
 * tests choose lengths from them. */

/* Every kernel but the elementwise maps takes a last argument `workers`: the
 * most threads it may use (>= 1).  It uses fewer on small work, and its
 * results are the same bits for every value (csrc/pool.h). */

/* Three-pass softmax and log-softmax (softmax_reload, log_softmax_reload, ...).
 * reload:    max; y = exp(x - max) while summing; y *= 1/sum.
 * recompute: max; sum of exp(x - max); y = exp(x - max) * (1/sum).
 * log_softmax: y = (x - max) - log(sum) in both variants; reload stores x - max
 * in the second pass and subtracts in the third, recompute forms it again.
 * reload_exact: reload with exp(x - max) = p * 2^(n - n_max) from exp(x) =
 * p * 2^n, so that x - max is never rounded (softmax only). */

/* Two-pass softmax and log-softmax (csrc/two_pass_kernels.h); their _stream
 * versions write y with non-temporal stores, for outputs larger than the cache
 * (softmaxlib picks them above half the last-level cache).  And the first
 * pass alone, sum_exp_pair: per row, sum exp(x) = mantissa[r] * 2^exponent[r] (exponent
 * integral; -inf with mantissa 0 for an empty or all -inf row). */

/* StableMax (Prieto et al., 2025) and log-StableMax (csrc/stablemax_kernels.h):
 * s(x) = x + 1 for x >= 0, 1 / (1 - x) below; y = s(x) / sum s, or
 * log s(x) - log sum s.  No max is subtracted. */

/* stablemax_cross_entropy: per row, accumulated in double: losses[r] =
 * log(sum s) - log s(x[label]); rows whose label is ignore_index give 0.  With
 * grad (else NULL): grad = grad_scale * (p - onehot) / (1 + |x|), zero for
 * ignored rows.  labels must lie in [0, n) or equal ignore_index. */

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

/* Fused 8-bit optimizer steps (csrc/optim_kernels.h; softmaxlib/optim).  Per
 * block of `blocksize` (at most 4096) of the n parameters p with gradients g:
 * the states, codes1 (and codes2 for Adam) on the maps map1 (map2), whose
 * search tables are table1 (table2: single-compare tables, softmaxlib/_codebooks.py)
 * with zero codes zero_code1 (zero_code2), are dequantized with absmax1
 * (absmax2), updated with p, then stored as their nearest codes on the block's
 * new absmax.  *skipped = the elements left unchanged for a non-finite gradient
 * or state.  codes2, absmax2, map2 and table2 are unused (may be NULL) by the
 * one-state kernels.  The constants of one step, in float32 (softmaxlib/optim
 * computes them in double and rounds once): */
struct sml_optim_step {
    float lr;          /* the step size (Adam: lr / (1 - beta1^t); Adagrad: lr / (1 + (t - 1) lr_decay)) */
    float beta1;       /* first state: s1 = beta1 s1 + gain1 g (RMSprop, Adagrad: of g^2) */
    float gain1;
    float beta2;       /* Adam's v, Lion's momentum update: s = beta2 s + gain2 g (Adam: g^2) */
    float gain2;
    float eps;
    float l2;          /* coupled weight decay: g += l2 p (0: none) */
    float decay;       /* decoupled weight decay: p *= decay (AdamW, Lion: 1 - lr wd) */
    float correction2; /* Adam: 1 / sqrt(1 - beta2^t), a factor of sqrt(v) */
    int32_t first;     /* momentum: the first step (b = g) */
    int32_t nesterov;  /* momentum: Nesterov's update */
    int32_t step;      /* Lion: the step's number, which seeds its stochastic rounding */
};

/* The small vector API the kernel templates are written against, for AVX-512
 * (F, BW, DQ, VL).  vec_avx2.h defines the same names for AVX2.
 * Included first by every AVX-512 translation unit. */
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c")
#endif
#include <stdint.h>
#include <immintrin.h>
#include "exp_constants.h"
#include "log_constants.h"

#define SML_ISA_SUFFIX(name) name##__avx512
#define VF_LANES 16
#define SML_INLINE static inline __attribute__((always_inline))

typedef __m512 vf;

SML_INLINE vf vf_set1(float a) { return _mm512_set1_ps(a); }
SML_INLINE vf vf_zero(void) { return _mm512_setzero_ps(); }
SML_INLINE vf vf_load(const float *p) { return _mm512_loadu_ps(p); }
SML_INLINE void vf_store(float *p, vf v) { _mm512_storeu_ps(p, v); }
/* Non-temporal store to an aligned address, and the fence that orders them. */
SML_INLINE void vf_store_stream(float *p, vf v) { _mm512_stream_ps(p, v); }
SML_INLINE void vf_stream_fence(void) { _mm_sfence(); }
SML_INLINE vf vf_add(vf a, vf b) { return _mm512_add_ps(a, b); }
SML_INLINE vf vf_sub(vf a, vf b) { return _mm512_sub_ps(a, b); }
SML_INLINE vf vf_mul(vf a, vf b) { return _mm512_mul_ps(a, b); }
SML_INLINE vf vf_fma(vf a, vf b, vf c) { return _mm512_fmadd_ps(a, b, c); }
SML_INLINE vf vf_div(vf a, vf b) { return _mm512_div_ps(a, b); }
SML_INLINE vf vf_sqrt(vf a) { return _mm512_sqrt_ps(a); }
/* v < limit ? a : b, lane by lane (an ordered compare: a NaN v takes b). */
SML_INLINE vf vf_where_less(vf v, vf limit, vf a, vf b) {
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(v, limit, _CMP_LT_OQ), b, a);
}

/* Masked loads and stores touch only the first k < VF_LANES elements: masked-off
 * lanes do not fault, so a row may end right before an unmapped page. */
SML_INLINE __mmask16 tail_mask(int64_t k) { return _cvtu32_mask16((1u << k) - 1u); }
SML_INLINE vf vf_load_tail(const float *p, int64_t k, float fill) {
    return _mm512_mask_loadu_ps(_mm512_set1_ps(fill), tail_mask(k), p);
}
SML_INLINE void vf_store_tail(float *p, int64_t k, vf v) { _mm512_mask_storeu_ps(p, tail_mask(k), v); }

/* vmaxps returns its second operand when either is NaN, so NaN candidates
 * never replace the running maximum (NaN rows are caught by the sum instead). */
SML_INLINE vf vf_max_ignoring_nan(vf candidate, vf running) { return _mm512_max_ps(candidate, running); }
SML_INLINE float vf_reduce_max(vf v) { return _mm512_reduce_max_ps(v); }
SML_INLINE vf vf_min_ignoring_nan(vf candidate, vf running) { return _mm512_min_ps(candidate, running); }
SML_INLINE vf vf_max(vf a, vf b) { return _mm512_max_ps(a, b); }

/* A sum of floats kept in double lanes: 16 float lanes widen into two vectors
 * of 8 doubles. */
typedef struct { __m512d low, high; } vsum;
SML_INLINE vsum vsum_zero(void) { return (vsum){_mm512_setzero_pd(), _mm512_setzero_pd()}; }
SML_INLINE vsum vsum_add(vsum s, vf v) {
    s.low = _mm512_add_pd(s.low, _mm512_cvtps_pd(_mm512_castps512_ps256(v)));
    s.high = _mm512_add_pd(s.high, _mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1)));
    return s;
}
SML_INLINE double vsum_reduce(vsum s) { return _mm512_reduce_add_pd(_mm512_add_pd(s.low, s.high)); }

/* StableMax's s(x) = x + 1 for x >= 0, 1 / (1 - x) below, in double lanes. */
SML_INLINE __m512d stable_s_double_lanes(__m512d x) {
    const __m512d one = _mm512_set1_pd(1.0);
    const __mmask8 negative = _mm512_cmp_pd_mask(x, _mm512_setzero_pd(), _CMP_LT_OQ);
    return _mm512_mask_blend_pd(negative, _mm512_add_pd(x, one), _mm512_div_pd(one, _mm512_sub_pd(one, x)));
}
/* sum += s(v), with s computed in double from the widened lanes: no float rounding of s. */
SML_INLINE vsum vsum_add_stable_s(vsum s, vf v) {
    s.low = _mm512_add_pd(s.low, stable_s_double_lanes(_mm512_cvtps_pd(_mm512_castps512_ps256(v))));
    s.high = _mm512_add_pd(s.high, stable_s_double_lanes(_mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1))));
    return s;
}

/* Sums of exp kept as (mantissa, exponent) in double lanes, sum = m * 2^e per
 * lane: 16 float lanes widen into two halves of 8. */
typedef struct { __m512d m_low, m_high, e_low, e_high; } vpair;
SML_INLINE vpair vpair_zero(void) {
    const __m512d far_below = _mm512_set1_pd(-0x1p60); /* finite: e - e_new stays a number */
    return (vpair){_mm512_setzero_pd(), _mm512_setzero_pd(), far_below, far_below};
}
/* The smaller of the two terms is scaled by at least 2^-1000: a term below that
 * vanishes next to the other, which is at least 0.7, and 2^-1000 keeps it
 * normal (a subnormal result costs Intel cores a microcode assist). */
SML_INLINE __m512d vpair_fold_half(__m512d *m, __m512d *e, __m256 p, __m256 n) {
    const __m512d pd = _mm512_cvtps_pd(p), nd = _mm512_cvtps_pd(n), floor = _mm512_set1_pd(-1000.0);
    const __m512d e_new = _mm512_max_pd(*e, nd);
    *m = _mm512_add_pd(_mm512_scalef_pd(*m, _mm512_max_pd(floor, _mm512_sub_pd(*e, e_new))),
                       _mm512_scalef_pd(pd, _mm512_max_pd(floor, _mm512_sub_pd(nd, e_new))));
    return e_new;
}
/* acc += p * 2^n, lane by lane; exact scaling, one double rounding. */
SML_INLINE vpair vpair_add(vpair acc, vf p, vf n) {
    acc.e_low = vpair_fold_half(&acc.m_low, &acc.e_low, _mm512_castps512_ps256(p), _mm512_castps512_ps256(n));
    acc.e_high = vpair_fold_half(&acc.m_high, &acc.e_high, _mm512_extractf32x8_ps(p, 1), _mm512_extractf32x8_ps(n, 1));
    return acc;
}
SML_INLINE void vpair_store(vpair acc, double *m, double *e) {
    _mm512_storeu_pd(m, acc.m_low), _mm512_storeu_pd(m + 8, acc.m_high);
    _mm512_storeu_pd(e, acc.e_low), _mm512_storeu_pd(e + 8, acc.e_high);
}

#include "exp_polynomial.h"

/* exp(t) = p * 2^n: returns the mantissa p (in [0.7, 1.42]) and sets n =
 * round(t log2 e).  Valid for |t| < 2^22, where n is an exact integer; the
 * two-constant reduction keeps r accurate at any such n, because each FMA
 * rounds a result of the size of r, not of t. */
SML_INLINE vf vf_exp_mantissa(vf t, vf *n) {
    *n = _mm512_roundscale_ps(_mm512_mul_ps(t, vf_set1(SML_LOG2E)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    return exp_polynomial(t, *n);
}

/* p * 2^d for integer-valued d <= 32 and p in [0.7, 1.42] (an exp mantissa)
 * or a small sum of them; +0 for d below SML_SCALE_FLOOR, as in vec_avx2.h:
 * never subnormal.  vscalefps applies 2^d exactly in one instruction, with no
 * float->int conversion or exponent-field arithmetic.  The mask is unordered
 * (not less than): a NaN d, which comes from a NaN x, keeps its lane and gives
 * NaN; an ordered >= zeroed it and lost the NaN of the row (vec_avx2.h keeps
 * it through p * 0, p being NaN too). */
SML_INLINE vf vf_scale_pow2(vf p, vf d) {
    return _mm512_maskz_scalef_ps(_mm512_cmp_ps_mask(d, vf_set1(SML_SCALE_FLOOR), _CMP_NLT_UQ), p, d);
}

/* v * 2^d, flushed to +0 below FLT_MIN (NaN kept), for integer-valued d <= 0
 * and v < 2^2: the same bits as flushing vscalefps' result, but without forming
 * a subnormal.  u = v * 2^(d + 126) is exact and normal (d + 126 is raised to
 * -30, which leaves u far below 1); v * 2^d is at least FLT_MIN, once rounded
 * to the subnormal grid, exactly when u >= 1 - 2^-24 (from there it rounds up
 * to FLT_MIN), and is then max(u, 1) * 2^-126. */
SML_INLINE vf vf_scale_pow2_flushed(vf v, vf d) {
    const vf u = _mm512_scalef_ps(v, _mm512_max_ps(vf_set1(-30.0f), _mm512_add_ps(d, vf_set1(126.0f))));
    const __mmask16 keep = _mm512_cmp_ps_mask(u, vf_set1(0x1.FFFFFEp-1f), _CMP_NLT_UQ);
    return _mm512_maskz_scalef_ps(keep, _mm512_max_ps(vf_set1(1.0f), u), vf_set1(-126.0f));
}

/* exp(t) for t <= 0 or NaN; +0 below SML_EXP_CUTOFF (and for t = -inf), NaN
 * stays NaN.  check_cutoff = 0 skips that test, for callers that know every t
 * is at or above the cutoff. */
SML_INLINE vf vf_exp_nonpositive(vf t, int check_cutoff) {
    vf n;
    const vf p = vf_exp_mantissa(t, &n);
    if (!check_cutoff) return _mm512_scalef_ps(p, n);
    const __mmask16 keep = _mm512_cmp_ps_mask(t, vf_set1(SML_EXP_CUTOFF), _CMP_NLT_UQ);
    return _mm512_maskz_scalef_ps(keep, p, n);
}

/* log(v) = k ln 2 + log(1 + f) for a positive normal v: returns f, in
 * [sqrt(1/2) - 1, sqrt(2) - 1), and sets k.  Subtracting the bits of
 * sqrt(1/2) before the shift puts the mantissa m = 1 + f in [sqrt(1/2), sqrt(2)),
 * where log(m) is smallest. */
SML_INLINE vf vf_log_split(vf v, vf *k) {
    const __m512i bits = _mm512_castps_si512(v);
    const __m512i exponent = _mm512_srai_epi32(_mm512_sub_epi32(bits, _mm512_set1_epi32(SML_SQRT_HALF_BITS)), 23);
    *k = _mm512_cvtepi32_ps(exponent);
    const vf m = _mm512_castsi512_ps(_mm512_sub_epi32(bits, _mm512_slli_epi32(exponent, 23)));
    return vf_sub(m, vf_set1(1.0f));
}

/* Integer lanes and byte codes, for the quantization kernels. */
typedef __m512i vi;
/* Whether a table lookup per lane is best done by a gather: on Zen 5 the code
 * search with a 16-lane gather beats 16 scalar lookups (2.08 against 1.48 G
 * codes/s at n = 2^24). */
#define VF_FAST_GATHER 1
SML_INLINE vf vf_abs(vf v) { return _mm512_abs_ps(v); }
SML_INLINE int vf_any_nan(vf v) { return _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q) != 0; }
SML_INLINE int vf_count_nan(vf v) { return __builtin_popcount(_mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q)); }
SML_INLINE vi vf_top16(vf v) { return _mm512_srli_epi32(_mm512_castps_si512(v), 16); }
SML_INLINE vi vi_gather(const int32_t *base, vi index) { return _mm512_i32gather_epi32(index, base, 4); }
/* The low 16 bits of v's bits, complemented for negative v: a key that grows with v
 * among floats of equal top 16 bits. */
SML_INLINE vi vf_key16(vf v) {
    const vi bits = _mm512_castps_si512(v);
    return _mm512_and_si512(_mm512_xor_si512(bits, _mm512_srai_epi32(bits, 31)), _mm512_set1_epi32(0xFFFF));
}
/* A search-table entry's candidate (bits 0-7), plus 1 where key > its key (bits 8-23). */
SML_INLINE vi vi_code_from_entry(vi entry, vi key) {
    const vi threshold = _mm512_and_si512(_mm512_srli_epi32(entry, 8), _mm512_set1_epi32(0xFFFF));
    const vi candidate = _mm512_and_si512(entry, _mm512_set1_epi32(0xFF));
    return _mm512_mask_add_epi32(candidate, _mm512_cmpgt_epi32_mask(key, threshold), candidate, _mm512_set1_epi32(1));
}
/* Lanes holding 0..255, as bytes. */
SML_INLINE void vi_store_u8(uint8_t *p, vi v) { _mm512_mask_cvtepi32_storeu_epi8(p, (__mmask16)0xFFFF, v); }
SML_INLINE void vi_store_u8_tail(uint8_t *p, int64_t k, vi v) { _mm512_mask_cvtepi32_storeu_epi8(p, tail_mask(k), v); }
SML_INLINE vi vi_load_u8(const uint8_t *p) { return _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)p)); }
SML_INLINE vi vi_load_u8_tail(const uint8_t *p, int64_t k) {
    return _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(tail_mask(k), p));
}

/* Integer lane arithmetic (32 bits, wrapping), for the optimizers' stochastic rounding. */
SML_INLINE vi vi_set1(int32_t a) { return _mm512_set1_epi32(a); }
SML_INLINE vi vi_lane_numbers(void) {
    return _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
}
SML_INLINE vi vi_add(vi a, vi b) { return _mm512_add_epi32(a, b); }
SML_INLINE vi vi_mul(vi a, vi b) { return _mm512_mullo_epi32(a, b); }
SML_INLINE vi vi_xor(vi a, vi b) { return _mm512_xor_si512(a, b); }
SML_INLINE vi vi_shift_right(vi a, int bits) { return _mm512_srli_epi32(a, (unsigned)bits); }
SML_INLINE vi vi_clamp(vi a, int32_t low, int32_t high) {
    return _mm512_min_epi32(_mm512_max_epi32(a, _mm512_set1_epi32(low)), _mm512_set1_epi32(high));
}
SML_INLINE vf vi_to_vf(vi a) { return _mm512_cvtepi32_ps(a); }
SML_INLINE vi vf_to_vi(vf a) { return _mm512_cvtps_epi32(a); }
/* v < limit ? a : b, lane by lane, for integer lanes (an ordered compare). */
SML_INLINE vi vi_where_less(vf v, vf limit, vi a, vi b) {
    return _mm512_mask_blend_epi32(_mm512_cmp_ps_mask(v, limit, _CMP_LT_OQ), b, a);
}

/* Whether dequantize writes large outputs with non-temporal stores: on Zen 5
 * they take it from 5.4 to 6.3 G elements/s at n = 2^24, B = 256 (7.2 to 8.8
 * at B = 4096). */
#define VF_DEQUANTIZE_STREAMS 1

/* A 256-entry float table held in 16 registers, looked up by index lanes
 * 0..255 without a gather: vpermt2ps picks from 32 entries by the index's low
 * 5 bits, and its bits 5, 6 and 7 choose among the 8 results. */
typedef struct { vf part[16]; } vf_table256;
SML_INLINE vf_table256 vf_table256_load(const float *table) {
    vf_table256 t;
    for (int k = 0; k < 16; k++) t.part[k] = _mm512_loadu_ps(table + 16 * k);
    return t;
}
SML_INLINE vf vf_table256_lookup(const vf_table256 *t, vi index) {
    vf pick[8];
    for (int k = 0; k < 8; k++) pick[k] = _mm512_permutex2var_ps(t->part[2 * k], index, t->part[2 * k + 1]);
    for (int bit = 5, width = 8; bit < 8; bit++, width /= 2) {
        const __mmask16 set = _mm512_test_epi32_mask(index, _mm512_set1_epi32(1 << bit));
        for (int k = 0; k < width / 2; k++) pick[k] = _mm512_mask_blend_ps(set, pick[2 * k], pick[2 * k + 1]);
    }
    return pick[0];
}

/* Values below FLT_MIN become +0 (NaN is kept). */
SML_INLINE vf vf_flush_below_flt_min(vf v) {
    const __mmask16 keep = _mm512_cmp_ps_mask(v, vf_set1(SML_FLT_MIN), _CMP_NLT_UQ);
    return _mm512_maskz_mov_ps(keep, v);
}
/* Whether any lane of v is below limit (an ordered compare: NaN lanes are not),
 * and whether any lane of a equals b. */
SML_INLINE int vf_any_less(vf v, vf limit) { return _mm512_cmp_ps_mask(v, limit, _CMP_LT_OQ) != 0; }
SML_INLINE int vf_any_equal(vf a, vf b) { return _mm512_cmp_ps_mask(a, b, _CMP_EQ_OQ) != 0; }

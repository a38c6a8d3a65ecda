/* The small vector API the kernel templates are written against, for AVX2 +
 * FMA + F16C.  vec_avx512.h defines the same names for AVX-512.
 * Included first by every AVX2 translation unit. */
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC target("avx2,fma,f16c")
#endif
#include <stdint.h>
#include <immintrin.h>
#include "exp_constants.h"
#include "log_constants.h"

#define SML_ISA_SUFFIX(name) name##__avx2
#define VF_LANES 8
#define SML_INLINE static inline __attribute__((always_inline))

typedef __m256 vf;

SML_INLINE vf vf_set1(float a) { return _mm256_set1_ps(a); }
SML_INLINE vf vf_zero(void) { return _mm256_setzero_ps(); }
SML_INLINE vf vf_load(const float *p) { return _mm256_loadu_ps(p); }
SML_INLINE void vf_store(float *p, vf v) { _mm256_storeu_ps(p, v); }
/* Non-temporal store to an aligned address, and the fence that orders them. */
SML_INLINE void vf_store_stream(float *p, vf v) { _mm256_stream_ps(p, v); }
SML_INLINE void vf_stream_fence(void) { _mm_sfence(); }
SML_INLINE vf vf_add(vf a, vf b) { return _mm256_add_ps(a, b); }
SML_INLINE vf vf_sub(vf a, vf b) { return _mm256_sub_ps(a, b); }
SML_INLINE vf vf_mul(vf a, vf b) { return _mm256_mul_ps(a, b); }
SML_INLINE vf vf_fma(vf a, vf b, vf c) { return _mm256_fmadd_ps(a, b, c); }
SML_INLINE vf vf_div(vf a, vf b) { return _mm256_div_ps(a, b); }
SML_INLINE vf vf_sqrt(vf a) { return _mm256_sqrt_ps(a); }
/* v < limit ? a : b, lane by lane (an ordered compare: a NaN v takes b). */
SML_INLINE vf vf_where_less(vf v, vf limit, vf a, vf b) { return _mm256_blendv_ps(b, a, _mm256_cmp_ps(v, limit, _CMP_LT_OQ)); }

/* vmaskmovps touches only the first k < VF_LANES elements: masked-off lanes
 * do not fault, so a row may end right before an unmapped page. */
SML_INLINE __m256i tail_mask(int64_t k) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)k), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
SML_INLINE vf vf_load_tail(const float *p, int64_t k, float fill) {
    const __m256i mask = tail_mask(k);
    return _mm256_blendv_ps(_mm256_set1_ps(fill), _mm256_maskload_ps(p, mask), _mm256_castsi256_ps(mask));
}
SML_INLINE void vf_store_tail(float *p, int64_t k, vf v) { _mm256_maskstore_ps(p, tail_mask(k), v); }

/* vmaxps returns its second operand when either is NaN, so NaN candidates
 * never replace the running maximum (NaN rows are caught by the sum instead). */
SML_INLINE vf vf_max_ignoring_nan(vf candidate, vf running) { return _mm256_max_ps(candidate, running); }
SML_INLINE float vf_reduce_max(vf v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

SML_INLINE vf vf_min_ignoring_nan(vf candidate, vf running) { return _mm256_min_ps(candidate, running); }
SML_INLINE vf vf_max(vf a, vf b) { return _mm256_max_ps(a, b); }

/* A sum of floats kept in double lanes: 8 float lanes widen into two vectors
 * of 4 doubles. */
typedef struct { __m256d low, high; } vsum;
SML_INLINE vsum vsum_zero(void) { return (vsum){_mm256_setzero_pd(), _mm256_setzero_pd()}; }
SML_INLINE vsum vsum_add(vsum s, vf v) {
    s.low = _mm256_add_pd(s.low, _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
    s.high = _mm256_add_pd(s.high, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
    return s;
}
SML_INLINE double vsum_reduce(vsum s) {
    const __m256d d = _mm256_add_pd(s.low, s.high);
    const __m128d h = _mm_add_pd(_mm256_castpd256_pd128(d), _mm256_extractf128_pd(d, 1));
    return _mm_cvtsd_f64(_mm_add_sd(h, _mm_unpackhi_pd(h, h)));
}

/* StableMax's s(x) = x + 1 for x >= 0, 1 / (1 - x) below, in double lanes. */
SML_INLINE __m256d stable_s_double_lanes(__m256d x) {
    const __m256d one = _mm256_set1_pd(1.0);
    const __m256d negative = _mm256_cmp_pd(x, _mm256_setzero_pd(), _CMP_LT_OQ);
    return _mm256_blendv_pd(_mm256_add_pd(x, one), _mm256_div_pd(one, _mm256_sub_pd(one, x)), negative);
}
/* sum += s(v), with s computed in double from the widened lanes: no float rounding of s. */
SML_INLINE vsum vsum_add_stable_s(vsum s, vf v) {
    s.low = _mm256_add_pd(s.low, stable_s_double_lanes(_mm256_cvtps_pd(_mm256_castps256_ps128(v))));
    s.high = _mm256_add_pd(s.high, stable_s_double_lanes(_mm256_cvtps_pd(_mm256_extractf128_ps(v, 1))));
    return s;
}

/* m * 2^d for integer-valued d <= 0 in double lanes, 2^d built in the
 * exponent field as in vf_pow2 (1.5*2^52 + 1023, shift by 52).  d is raised to
 * -1000, as in vec_avx512.h's vpair_fold_half: the smaller term of a fold then
 * vanishes next to the other, which is at least 0.7, and is never subnormal. */
SML_INLINE __m256d vd_scale_pow2(__m256d m, __m256d d) {
    const __m256d field = _mm256_add_pd(_mm256_max_pd(_mm256_set1_pd(-1000.0), d), _mm256_set1_pd(0x1.80000000003FFp52));
    return _mm256_mul_pd(m, _mm256_castsi256_pd(_mm256_slli_epi64(_mm256_castpd_si256(field), 52)));
}

/* Sums of exp kept as (mantissa, exponent) in double lanes, sum = m * 2^e per
 * lane: 8 float lanes widen into two halves of 4. */
typedef struct { __m256d m_low, m_high, e_low, e_high; } vpair;
SML_INLINE vpair vpair_zero(void) {
    const __m256d far_below = _mm256_set1_pd(-0x1p60); /* finite: e - e_new stays a number */
    return (vpair){_mm256_setzero_pd(), _mm256_setzero_pd(), far_below, far_below};
}
SML_INLINE __m256d vpair_fold_half(__m256d *m, __m256d *e, __m128 p, __m128 n) {
    const __m256d pd = _mm256_cvtps_pd(p), nd = _mm256_cvtps_pd(n);
    const __m256d e_new = _mm256_max_pd(*e, nd);
    *m = _mm256_add_pd(vd_scale_pow2(*m, _mm256_sub_pd(*e, e_new)), vd_scale_pow2(pd, _mm256_sub_pd(nd, e_new)));
    return e_new;
}
/* acc += p * 2^n, lane by lane; exact scaling, one double rounding. */
SML_INLINE vpair vpair_add(vpair acc, vf p, vf n) {
    acc.e_low = vpair_fold_half(&acc.m_low, &acc.e_low, _mm256_castps256_ps128(p), _mm256_castps256_ps128(n));
    acc.e_high = vpair_fold_half(&acc.m_high, &acc.e_high, _mm256_extractf128_ps(p, 1), _mm256_extractf128_ps(n, 1));
    return acc;
}
SML_INLINE void vpair_store(vpair acc, double *m, double *e) {
    _mm256_storeu_pd(m, acc.m_low), _mm256_storeu_pd(m + 4, acc.m_high);
    _mm256_storeu_pd(e, acc.e_low), _mm256_storeu_pd(e + 4, acc.e_high);
}

#include "exp_polynomial.h"

/* exp(t) = p * 2^n: returns p and sets n, for |t| < 2^22 (n exact). */
SML_INLINE vf vf_exp_mantissa(vf t, vf *n) {
    *n = _mm256_round_ps(_mm256_mul_ps(t, vf_set1(SML_LOG2E)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    return exp_polynomial(t, *n);
}

/* 2^d for integer-valued d in [-126, 127], built in the exponent field:
 * adding 1.5*2^23 + 127 leaves d + 127 in the low mantissa bits, and shifting
 * them left by 23 gives the float 2^d. */
SML_INLINE vf vf_pow2(vf d) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_castps_si256(_mm256_add_ps(d, vf_set1(0x1.8000FEp23f))), 23));
}

/* p * 2^d for integer-valued d <= 32 and p in [0.7, 1.42] (an exp mantissa)
 * or a small sum of them; +0 for d below SML_SCALE_FLOOR, where the result is
 * negligible next to the p * 2^0 that every caller has (its callers show why
 * that cannot change their results).  So it is never subnormal: on Intel
 * cores every subnormal result costs a microcode assist. */
SML_INLINE vf vf_scale_pow2(vf p, vf d) {
    const vf floor = vf_set1(SML_SCALE_FLOOR);
    const vf two_to_d = _mm256_and_ps(_mm256_cmp_ps(d, floor, _CMP_GE_OQ), vf_pow2(_mm256_max_ps(floor, d)));
    return _mm256_mul_ps(p, two_to_d);
}

/* v * 2^d, flushed to +0 below FLT_MIN (NaN kept), for integer-valued d <= 0
 * and v < 2^2: the same bits as flushing the product p * 2^d with 2^d = +0 for
 * d <= -127, but without forming a subnormal.  u = v * 2^(d + 126) is exact
 * and normal; v * 2^d is at least FLT_MIN, once rounded to the subnormal grid,
 * exactly when u >= 1 - 2^-24 (from there it rounds up to FLT_MIN), and is
 * then max(u, 1) * 2^-126. */
SML_INLINE vf vf_scale_pow2_flushed(vf v, vf d) {
    const vf u = _mm256_mul_ps(v, vf_pow2(_mm256_add_ps(_mm256_max_ps(vf_set1(-126.0f), d), vf_set1(126.0f))));
    const vf keep = _mm256_and_ps(_mm256_cmp_ps(u, vf_set1(0x1.FFFFFEp-1f), _CMP_NLT_UQ),
                                  _mm256_cmp_ps(d, vf_set1(-126.0f), _CMP_GE_OQ));
    return _mm256_mul_ps(_mm256_and_ps(keep, _mm256_max_ps(vf_set1(1.0f), u)), vf_set1(SML_FLT_MIN));
}

/* exp(t) for t <= 0 or NaN; +0 below SML_EXP_CUTOFF (and for t = -inf), NaN
 * stays NaN.  AVX2 has no vscalefps, so 2^n is built in the exponent field:
 * adding the magic bias 1.5*2^23 + 127 rounds t*log2(e) to an integer n and
 * leaves n + 127 in the low mantissa bits; shifting them left by 23 gives the
 * float 2^n, valid for n in [-126, 0], which the cutoff guarantees.
 * check_cutoff = 0 skips that test, for callers that know every t is at or
 * above the cutoff. */
SML_INLINE vf vf_exp_nonpositive(vf t, int check_cutoff) {
    const vf magic_bias = vf_set1(0x1.8000FEp23f);
    if (!check_cutoff) {
        const vf biased = _mm256_fmadd_ps(t, vf_set1(SML_LOG2E), magic_bias);
        const vf two_to_n = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_castps_si256(biased), 23));
        return _mm256_mul_ps(exp_polynomial(t, _mm256_sub_ps(biased, magic_bias)), two_to_n);
    }
    /* Lanes below the cutoff multiply p by +0 rather than have their product
     * masked afterwards: a product below FLT_MIN would cost Intel cores a
     * microcode assist.  t is raised to -88 first (n = -127, 2^n = +0; vmaxps
     * keeps a NaN t), so that p is finite for -inf and for very negative t. */
    const vf keep = _mm256_cmp_ps(t, vf_set1(SML_EXP_CUTOFF), _CMP_NLT_UQ);
    const vf t_raised = _mm256_max_ps(vf_set1(-88.0f), t);
    const vf biased = _mm256_fmadd_ps(t_raised, vf_set1(SML_LOG2E), magic_bias);
    const vf two_to_n = _mm256_and_ps(keep, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_castps_si256(biased), 23)));
    return _mm256_mul_ps(exp_polynomial(t_raised, _mm256_sub_ps(biased, magic_bias)), two_to_n);
}

/* log(v) = k ln 2 + log(1 + f) for a positive normal v: returns f, in
 * [sqrt(1/2) - 1, sqrt(2) - 1), and sets k, as in vec_avx512.h. */
SML_INLINE vf vf_log_split(vf v, vf *k) {
    const __m256i bits = _mm256_castps_si256(v);
    const __m256i exponent = _mm256_srai_epi32(_mm256_sub_epi32(bits, _mm256_set1_epi32(SML_SQRT_HALF_BITS)), 23);
    *k = _mm256_cvtepi32_ps(exponent);
    const vf m = _mm256_castsi256_ps(_mm256_sub_epi32(bits, _mm256_slli_epi32(exponent, 23)));
    return vf_sub(m, vf_set1(1.0f));
}

/* Integer lanes and byte codes, for the quantization kernels. */
typedef __m256i vi;
/* Whether a table lookup per lane is best done by a gather: on Zen 5, the code
 * search runs faster with 8 scalar lookups than with an 8-lane AVX2 gather
 * (1.36 against 1.06 G codes/s at n = 2^24). */
#define VF_FAST_GATHER 0
SML_INLINE vf vf_abs(vf v) { return _mm256_and_ps(v, _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF))); }
SML_INLINE int vf_any_nan(vf v) { return _mm256_movemask_ps(_mm256_cmp_ps(v, v, _CMP_UNORD_Q)) != 0; }
SML_INLINE int vf_count_nan(vf v) { return __builtin_popcount(_mm256_movemask_ps(_mm256_cmp_ps(v, v, _CMP_UNORD_Q))); }
SML_INLINE vi vf_top16(vf v) { return _mm256_srli_epi32(_mm256_castps_si256(v), 16); }
SML_INLINE vi vi_gather(const int32_t *base, vi index) { return _mm256_i32gather_epi32(base, index, 4); }
/* The low 16 bits of v's bits, complemented for negative v: a key that grows with v
 * among floats of equal top 16 bits. */
SML_INLINE vi vf_key16(vf v) {
    const vi bits = _mm256_castps_si256(v);
    return _mm256_and_si256(_mm256_xor_si256(bits, _mm256_srai_epi32(bits, 31)), _mm256_set1_epi32(0xFFFF));
}
/* A search-table entry's candidate (bits 0-7), plus 1 where key > its key (bits 8-23);
 * a true compare is -1. */
SML_INLINE vi vi_code_from_entry(vi entry, vi key) {
    const vi threshold = _mm256_and_si256(_mm256_srli_epi32(entry, 8), _mm256_set1_epi32(0xFFFF));
    const vi candidate = _mm256_and_si256(entry, _mm256_set1_epi32(0xFF));
    return _mm256_sub_epi32(candidate, _mm256_cmpgt_epi32(key, threshold));
}
/* Lanes holding 0..255, as bytes: packed to 16 then 8 bits, the low 8 bytes stored. */
SML_INLINE __m128i vi_bytes(vi v) {
    const __m128i words = _mm_packus_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    return _mm_packus_epi16(words, words);
}
SML_INLINE void vi_store_u8(uint8_t *p, vi v) { _mm_storel_epi64((__m128i *)p, vi_bytes(v)); }
SML_INLINE void vi_store_u8_tail(uint8_t *p, int64_t k, vi v) {
    uint8_t bytes[16];
    _mm_storeu_si128((__m128i *)bytes, vi_bytes(v));
    for (int64_t i = 0; i < k; i++) p[i] = bytes[i];
}
SML_INLINE vi vi_load_u8(const uint8_t *p) { return _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p)); }
SML_INLINE vi vi_load_u8_tail(const uint8_t *p, int64_t k) {
    uint8_t bytes[16] = {0};
    for (int64_t i = 0; i < k; i++) bytes[i] = p[i];
    return vi_load_u8(bytes);
}

/* Integer lane arithmetic (32 bits, wrapping), for the optimizers' stochastic rounding. */
SML_INLINE vi vi_set1(int32_t a) { return _mm256_set1_epi32(a); }
SML_INLINE vi vi_lane_numbers(void) { return _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7); }
SML_INLINE vi vi_add(vi a, vi b) { return _mm256_add_epi32(a, b); }
SML_INLINE vi vi_mul(vi a, vi b) { return _mm256_mullo_epi32(a, b); }
SML_INLINE vi vi_xor(vi a, vi b) { return _mm256_xor_si256(a, b); }
SML_INLINE vi vi_shift_right(vi a, int bits) { return _mm256_srli_epi32(a, bits); }
SML_INLINE vi vi_clamp(vi a, int32_t low, int32_t high) {
    return _mm256_min_epi32(_mm256_max_epi32(a, _mm256_set1_epi32(low)), _mm256_set1_epi32(high));
}
SML_INLINE vf vi_to_vf(vi a) { return _mm256_cvtepi32_ps(a); }
SML_INLINE vi vf_to_vi(vf a) { return _mm256_cvtps_epi32(a); }
/* v < limit ? a : b, lane by lane, for integer lanes (an ordered compare). */
SML_INLINE vi vi_where_less(vf v, vf limit, vi a, vi b) {
    return _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(b), _mm256_castsi256_ps(a),
                                                _mm256_cmp_ps(v, limit, _CMP_LT_OQ)));
}

/* Whether dequantize writes large outputs with non-temporal stores: on Zen 5
 * they make AVX2's slower (2.25 against 3.54 G elements/s at n = 2^24,
 * B = 256; equal at B = 4096), its vectors being assembled from scalar loads. */
#define VF_DEQUANTIZE_STREAMS 0

/* A 256-entry float table looked up by index lanes 0..255: AVX2's permute
 * reaches 8 entries only, so this is scalar lookups (faster than its gather,
 * see VF_FAST_GATHER). */
typedef struct { const float *entries; } vf_table256;
SML_INLINE vf_table256 vf_table256_load(const float *table) { return (vf_table256){table}; }
SML_INLINE vf vf_table256_lookup(const vf_table256 *t, vi index) {
    int32_t lanes[VF_LANES];
    float values[VF_LANES];
    _mm256_storeu_si256((__m256i *)lanes, index);
    for (int k = 0; k < VF_LANES; k++) values[k] = t->entries[lanes[k]];
    return _mm256_loadu_ps(values);
}

/* Values below FLT_MIN become +0 (NaN is kept). */
SML_INLINE vf vf_flush_below_flt_min(vf v) {
    return _mm256_and_ps(_mm256_cmp_ps(v, vf_set1(SML_FLT_MIN), _CMP_NLT_UQ), v);
}
/* Whether any lane of v is below limit (an ordered compare: NaN lanes are not),
 * and whether any lane of a equals b. */
SML_INLINE int vf_any_less(vf v, vf limit) { return _mm256_movemask_ps(_mm256_cmp_ps(v, limit, _CMP_LT_OQ)) != 0; }
SML_INLINE int vf_any_equal(vf a, vf b) { return _mm256_movemask_ps(_mm256_cmp_ps(a, b, _CMP_EQ_OQ)) != 0; }

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

#define SML_ISA_SUFFIX(name) name##__avx2
#define VF_LANES 8
#define SML_INLINE static inline __attribute__((always_inline))

typedef __m256 vf;

SML_INLINE vf vf_set1(float a) { return _mm256_set1_ps(a); }
SML_INLINE vf vf_zero(void) { return _mm256_setzero_ps(); }
SML_INLINE vf vf_load(const float *p) { return _mm256_loadu_ps(p); }
SML_INLINE void vf_store(float *p, vf v) { _mm256_storeu_ps(p, v); }
SML_INLINE vf vf_add(vf a, vf b) { return _mm256_add_ps(a, b); }
SML_INLINE vf vf_sub(vf a, vf b) { return _mm256_sub_ps(a, b); }
SML_INLINE vf vf_mul(vf a, vf b) { return _mm256_mul_ps(a, b); }

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

/* exp(t) for t <= 0 or NaN; +0 below SML_EXP_CUTOFF (and for t = -inf), NaN
 * stays NaN.  AVX2 has no vscalefps, so 2^n is built in the exponent field:
 * adding the magic bias 1.5*2^23 + 127 rounds t*log2(e) to an integer n and
 * leaves n + 127 in the low mantissa bits; shifting them left by 23 gives the
 * float 2^n, valid for n in [-126, 0], which the cutoff guarantees.
 * check_cutoff = 0 skips that test, for callers that know every t is at or
 * above the cutoff. */
SML_INLINE vf vf_exp_nonpositive(vf t, int check_cutoff) {
    const vf magic_bias = vf_set1(0x1.8000FEp23f);
    vf n = _mm256_fmadd_ps(t, vf_set1(SML_LOG2E), magic_bias);
    const vf two_to_n = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_castps_si256(n), 23));
    n = _mm256_sub_ps(n, magic_bias);
    vf r = _mm256_fmadd_ps(n, vf_set1(SML_MINUS_LN2_HI), t);
    r = _mm256_fmadd_ps(n, vf_set1(SML_MINUS_LN2_LO), r);
    /* p = (r + r*s) + 1, s = (c1 - 1) + r*(c2 + ...): monotone, see exp_constants.h */
    vf s = _mm256_fmadd_ps(vf_set1(SML_EXP_C5), r, vf_set1(SML_EXP_C4));
    s = _mm256_fmadd_ps(s, r, vf_set1(SML_EXP_C3));
    s = _mm256_fmadd_ps(s, r, vf_set1(SML_EXP_C2));
    s = _mm256_fmadd_ps(s, r, vf_set1(SML_EXP_C1_MINUS_1));
    const vf p = _mm256_add_ps(_mm256_fmadd_ps(r, s, r), vf_set1(1.0f));
    if (!check_cutoff) return _mm256_mul_ps(p, two_to_n);
    const vf keep = _mm256_cmp_ps(t, vf_set1(SML_EXP_CUTOFF), _CMP_NLT_UQ);
    return _mm256_and_ps(keep, _mm256_mul_ps(p, two_to_n));
}

/* Values below FLT_MIN become +0 (NaN is kept). */
SML_INLINE vf vf_flush_below_flt_min(vf v) {
    return _mm256_and_ps(_mm256_cmp_ps(v, vf_set1(SML_FLT_MIN), _CMP_NLT_UQ), v);
}

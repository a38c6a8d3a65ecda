/* exp(x) as a (mantissa, exponent) pair for any float x, shared by the
 * kernels that never form x - max (two_pass_kernels.h, and the reload_exact
 * variant of three_pass_kernels.h); after vec_<isa>.h. */
#pragma once

/* exp(max(x, -X_CLAMP)) = p * 2^n: vf_exp_mantissa needs |x| < 2^22, and -inf
 * (or anything below -2^20) becomes exp(-2^20), nothing next to any element
 * above -2^20 + 104.  vf_max keeps a NaN x, whose NaN mantissa then reaches
 * the sum. */
#define X_CLAMP 0x1p20f
SML_INLINE vf clamped_exp_mantissa(vf x, vf *n) { return vf_exp_mantissa(vf_max(vf_set1(-X_CLAMP), x), n); }

/* The exp's polynomial, written once over the vector API of vec_<isa>.h (which
 * includes this file after its arithmetic): the evaluation order is what keeps
 * the exp monotone, so every ISA must share it. */
#pragma once

/* The mantissa p (in [0.7, 1.42]) of exp(t) = p * 2^n, given n = round(t log2 e).
 * The two-constant reduction keeps r accurate at any |n| < 2^23, because each
 * FMA rounds a result of the size of r, not of t. */
SML_INLINE vf exp_polynomial(vf t, vf n) {
    vf r = vf_fma(n, vf_set1(SML_MINUS_LN2_HI), t);
    r = vf_fma(n, vf_set1(SML_MINUS_LN2_LO), r);
    /* p = (r + r*s) + 1, s = (c1 - 1) + r*(c2 + ...): monotone, see exp_constants.h */
    vf s = vf_fma(vf_set1(SML_EXP_C6), r, vf_set1(SML_EXP_C5));
    s = vf_fma(s, r, vf_set1(SML_EXP_C4));
    s = vf_fma(s, r, vf_set1(SML_EXP_C3));
    s = vf_fma(s, r, vf_set1(SML_EXP_C2));
    s = vf_fma(s, r, vf_set1(SML_EXP_C1_MINUS_1));
    return vf_add(vf_fma(r, s, r), vf_set1(1.0f));
}

/* Constants of the float32 exp shared by every ISA (and mirrored by the Numba
 * twins in softmaxlib/_numba/_exp.py).
 *
 * exp(t) = 2^n * p(r), n = round(t * log2(e)), r = t - n*ln2.
 * "rr2": ln2 is split into a high part with 8 trailing zero bits, so n*ln2_hi
 * is exact for |n| < 2^8, and a low part carrying the rest.  One constant
 * ("rr1") loses up to ~4.7 ULP, and more as |n| grows.
 * "p6": p(r) = 1 + r + r*(c1 - 1 + r*(c2 + r*(c3 + r*(c4 + r*(c5 + r*c6))))),
 * a degree-6 polynomial fitted by us for the relative error (linear-programming
 * minimax over |r| <= 0.3468, then coefficient by coefficient rounded to
 * float32 and refitted): 0.036 * 2^-24 before rounding.  Degree 6 rather than
 * the usual 5 because softmax divides one exp by a sum of others, so their
 * relative errors add up: degree 5 costs about 1.3 * 2^-24 by itself, and the
 * two-pass bound of 4 ULP needs the whole exp within about 1.5 * 2^-24.
 *
 * Evaluation order: Horner down to s = (c1 - 1) + r*q, then p = (r + r*s) + 1.
 * Plain Horner, p = 1 + r*(c1 + r*q), lets the rounding of the inner sum
 * (about 1, ULP 2^-24) times r outweigh a one-ULP step of r, and the exp then
 * decreases by one ULP between neighbouring inputs (2880 places in
 * [-87.34, 0] with the usual degree-5 coefficients).  s is small (|s| < 0.2),
 * so its rounding is 4-8 times finer, and r + r*s is rounded once: the exp is
 * monotone, within 1.02 ULP of exp(t) and within 1.42 * 2^-24 relative, all
 * checked over every float32 in [-87.34, 0] (tests/test_exp.py).
 */
#define SML_LOG2E        0x1.715476p+0f
#define SML_MINUS_LN2_HI -0x1.62E43p-1f
#define SML_MINUS_LN2_LO 0x1.05C61p-29f
#define SML_EXP_C6       0x1.6AE6D4p-10f
#define SML_EXP_C5       0x1.1267E6p-7f
#define SML_EXP_C4       0x1.555824p-5f
#define SML_EXP_C3       0x1.555418p-3f
#define SML_EXP_C2       0x1.FFFFFCp-2f
#define SML_EXP_C1_MINUS_1 0x1.18C656p-25f /* c1 = 1 + 2^-24.8 rounds to 1: kept apart */
/* Below this t, exp(t) < FLT_MIN: the exp is flushed to +0.  It is the float
 * just above ln(FLT_MIN), so every t kept has n >= -126 and 2^n is normal. */
#define SML_EXP_CUTOFF   -0x1.5D589Ep+6f
/* FLT_MIN: softmax outputs below it are flushed to +0 (docs/semantics.md). */
#define SML_FLT_MIN      0x1p-126f
/* vf_scale_pow2 gives +0 for exponents below this: p * 2^-101 and less is
 * negligible next to the 2^0 that its callers always have (see them). */
#define SML_SCALE_FLOOR  -100.0f

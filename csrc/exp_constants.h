/* Constants of the float32 exp shared by every ISA (and mirrored by the Numba
 * twins in softmaxlib/_numba_kernels.py).
 *
 * exp(t) = 2^n * p(r), n = round(t * log2(e)), r = t - n*ln2.
 * "rr2": ln2 is split into a high part with 8 trailing zero bits, so n*ln2_hi
 * is exact for |n| < 2^8, and a low part carrying the rest.  One constant
 * ("rr1") loses up to ~4.7 ULP, and more as |n| grows.
 * "p5": degree-5 minimax polynomial for exp on [-ln2/2, ln2/2]; with rr2 the
 * exp is within 2 ULP of the true value (coefficients as published by
 * XNNPACK/oneDNN; they are plain numbers, not code).
 */
#define SML_LOG2E        0x1.715476p+0f
#define SML_MINUS_LN2_HI -0x1.62E43p-1f
#define SML_MINUS_LN2_LO 0x1.05C61p-29f
#define SML_EXP_C5       0x1.0F9F9Cp-7f
#define SML_EXP_C4       0x1.573A1Ap-5f
#define SML_EXP_C3       0x1.555A80p-3f
#define SML_EXP_C2       0x1.FFFDC6p-2f
#define SML_EXP_C1       0x1.FFFFF6p-1f
/* Below this t, exp(t) < FLT_MIN: the exp is flushed to +0.  It is the float
 * just above ln(FLT_MIN), so every t kept has n >= -126 and 2^n is normal. */
#define SML_EXP_CUTOFF   -0x1.5D589Ep+6f
/* FLT_MIN: softmax outputs below it are flushed to +0 (docs/semantics.md). */
#define SML_FLT_MIN      0x1p-126f

/* Constants of the float32 log under log-StableMax, shared by every ISA (and
 * mirrored by the Numba twin in softmaxlib/_numba/_log.py).
 *
 * log(v) = k ln 2 + log(1 + f), with m = 1 + f in [sqrt(1/2), sqrt(2)) taken
 * from v's bits (vf_log_split), and
 *   log(1 + f) = f - f^2/2 + f^3 q(f),  q(f) = L0 + f*(L1 + ... + f*L6),
 * fitted by us for the absolute error (linear-programming minimax over the
 * interval, coefficients rounded to float32 one at a time with a refit of the
 * rest): 0.12 * 2^-24 before rounding.  Absolute, because log-StableMax is
 * judged in absolute error relative to max(1, |result|), as log-softmax.
 * k ln 2 uses ln 2 in two parts, LN2_HI with trailing zero bits, so that k LN2_HI
 * is exact for |k| <= 128. */
#pragma once

#define SML_SQRT_HALF_BITS 0x3F3504F3 /* the bits of float sqrt(1/2) */
#define SML_LN2_HI 0x1.62E4p-1f
#define SML_LN2_LO 0x1.7F7D1Cp-20f
#define SML_LOG_L6 0x1.633682p-4f
#define SML_LOG_L5 -0x1.267B6Ap-3f
#define SML_LOG_L4 0x1.32BFD0p-3f
#define SML_LOG_L3 -0x1.533D4Cp-3f
#define SML_LOG_L2 0x1.98AD06p-3f
#define SML_LOG_L1 -0x1.000474p-2f
#define SML_LOG_L0 0x1.555784p-2f

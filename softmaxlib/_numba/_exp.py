"""The float32 exp of the twins, as the C kernels' (csrc/exp_constants.h, exp_polynomial.h,
exp_pairs.h and vf_exp_nonpositive / vf_scale_pow2 in csrc/vec_<isa>.h): rr2 range reduction,
degree-6 polynomial, the same constants and cutoff. On a CPU without FMA the polynomial rounds
twice per step (see exp_nonpositive_block)."""
import numpy as np
from numba import njit

from ._rows import ONE, ZERO, f32

LOG2E = f32(float.fromhex("0x1.715476p+0"))
MINUS_LN2_HI = f32(-float.fromhex("0x1.62E43p-1"))
MINUS_LN2_LO = f32(float.fromhex("0x1.05C61p-29"))
EXP_C6 = f32(float.fromhex("0x1.6AE6D4p-10"))
EXP_C5 = f32(float.fromhex("0x1.1267E6p-7"))
EXP_C4 = f32(float.fromhex("0x1.555824p-5"))
EXP_C3 = f32(float.fromhex("0x1.555418p-3"))
EXP_C2 = f32(float.fromhex("0x1.FFFFFCp-2"))
EXP_C1_MINUS_1 = f32(float.fromhex("0x1.18C656p-25"))
EXP_CUTOFF = f32(-float.fromhex("0x1.5D589Ep+6"))
MIN_SCALE_EXPONENT = f32(-127.0)
MIN_NORMAL_EXPONENT = f32(-126.0)
SCALE_FLOOR = f32(-100.0)  # pair scaling drops terms below 2^-100 of the 2^0 they sit next to, as SML_SCALE_FLOOR
X_CLAMP = f32(2.0**20)  # two-pass, reload_exact: exp(max(x, -X_CLAMP)), as in csrc/exp_pairs.h


# fastmath={"contract"} lets LLVM fuse each a * b + c into one FMA where the
# CPU has it, as the C kernels do; it allows nothing else (inf and NaN keep
# their IEEE behaviour).
@njit(cache=True, nogil=True, fastmath={"contract"})
def exp_mantissa_block(t, p, n):
    """exp(t) = p * 2^n with n = round(t log2 e), as vf_exp_mantissa in C, for |t| < 2^22.

    A branch-free loop over a block, which LLVM vectorizes."""
    for i in range(t.size):
        ni = np.rint(t[i] * LOG2E)
        r = ni * MINUS_LN2_HI + t[i]
        r = ni * MINUS_LN2_LO + r
        s = EXP_C6 * r + EXP_C5
        s = s * r + EXP_C4
        s = s * r + EXP_C3
        s = s * r + EXP_C2
        s = s * r + EXP_C1_MINUS_1
        p[i] = (r * s + r) + ONE  # this order keeps the exp monotone (exp_constants.h)
        n[i] = ni


@njit(cache=True, nogil=True)
def scale_pow2_block(p, d, out, bits, floor):
    """out = p * 2^d for integral d <= 32, +0 where d is below floor (>= -126) or NaN, as
    vf_scale_pow2 in C: 2^d built in the exponent field of `bits` (read back through a float32
    view). For an exp mantissa p, nothing subnormal is formed (a subnormal result costs Intel
    cores a microcode assist). Branch-free, so LLVM vectorizes it."""
    two_to_d = bits.view(np.float32)
    for i in range(p.size):
        kept = d[i] >= floor
        di = d[i] if kept else floor
        bits[i] = ((np.int32(di) + np.int32(127)) << np.int32(23)) if kept else np.int32(0)
    for i in range(p.size):
        out[i] = p[i] * two_to_d[i]


@njit(cache=True, nogil=True)
def exp_nonpositive_block(t, e, bits):
    """e[i] = exp(t[i]) for t <= 0 or NaN, as vf_exp_nonpositive in C.

    +0 below EXP_CUTOFF (and for -inf), NaN stays NaN. Below the cutoff p is
    multiplied by +0 (no subnormal product), and the result then replaced by 0
    (p of -inf is NaN), which keeps the loops branch-free.
    """
    p = np.empty(t.size, f32)
    n = np.empty(t.size, f32)
    exp_mantissa_block(t, p, n)
    for i in range(t.size):
        n[i] = MIN_SCALE_EXPONENT if t[i] < EXP_CUTOFF else n[i]
    scale_pow2_block(p, n, e, bits, MIN_NORMAL_EXPONENT)
    for i in range(t.size):
        e[i] = ZERO if t[i] < EXP_CUTOFF else e[i]


@njit(cache=True, nogil=True)
def clamped_exp_mantissa_block(row, start, k, clamped, p, n):
    """exp(max(x, -X_CLAMP)) = p * 2^n for x = row[start:start + k] (NaN stays NaN)."""
    for i in range(k):
        v = row[start + i]
        clamped[i] = v if not v < -X_CLAMP else -X_CLAMP
    exp_mantissa_block(clamped[:k], p[:k], n[:k])

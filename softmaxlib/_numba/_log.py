"""The float32 log of the twins (log-StableMax), as log_positive in csrc/stablemax_kernels.h
with the constants of csrc/log_constants.h."""
import numpy as np
from numba import njit

from ._rows import ONE, f32

LOG_L = [f32(float.fromhex(h)) for h in ("0x1.555784p-2", "-0x1.000474p-2", "0x1.98AD06p-3", "-0x1.533D4Cp-3",
                                          "0x1.32BFD0p-3", "-0x1.267B6Ap-3", "0x1.633682p-4")]  # csrc/log_constants.h
LOG_L0, LOG_L1, LOG_L2, LOG_L3, LOG_L4, LOG_L5, LOG_L6 = LOG_L
LN2_HI = f32(float.fromhex("0x1.62E4p-1"))
LN2_LO = f32(float.fromhex("0x1.7F7D1Cp-20"))
SQRT_HALF_BITS = np.int32(0x3F3504F3)


@njit(cache=True, nogil=True, fastmath={"contract"})
def log_positive_block(v, out, saved):
    """out = log v for float32 v >= FLT_MIN, as log_positive in csrc/stablemax_kernels.h (inf and
    NaN are their own log): k and m = 1 + f from v's bits, m in [sqrt(1/2), sqrt(2)). v is
    overwritten; saved is scratch of v's size."""
    saved[:] = v
    bits = v.view(np.int32)
    for i in range(v.size):
        k = (bits[i] - SQRT_HALF_BITS) >> np.int32(23)
        out[i] = f32(k)
        bits[i] -= k << np.int32(23)  # v now holds m
    for i in range(v.size):
        f = v[i] - ONE
        q = LOG_L6 * f + LOG_L5
        q = q * f + LOG_L4
        q = q * f + LOG_L3
        q = q * f + LOG_L2
        q = q * f + LOG_L1
        q = q * f + LOG_L0
        f2 = f * f
        log_m = (f2 * f) * q + (f2 * f32(-0.5) + f)
        log_v = out[i] * LN2_HI + (out[i] * LN2_LO + log_m)
        out[i] = log_v if saved[i] < np.inf else saved[i]

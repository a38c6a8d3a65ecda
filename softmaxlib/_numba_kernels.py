"""Numba twins of the C kernels: the portable fallback backend and a test oracle.

The float32 twins follow the C kernels step by step (csrc/three_pass_kernels.h):
the same exp (rr2 range reduction, degree-6 polynomial, same constants and
cutoff), the same handling of +inf rows, NaN and -inf, and the same flush of
outputs below FLT_MIN. They work on blocks of BLOCK elements in branch-free
loops so that LLVM vectorizes them. One difference: the sum of exps is
accumulated directly in float64 (the C kernels sum float32 lanes and fold
them into a double every 4096 elements), so it may differ in the last bits.
On a CPU without FMA the polynomial rounds twice per step (see
exp_nonpositive_block).

The float64 kernels compute in float64 with libm's exp and keep subnormal
outputs exactly; they back float64 input on every backend.
"""
import math

import numpy as np
from numba import njit

f32 = np.float32
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
FLT_MIN = f32(float.fromhex("0x1p-126"))
MIN_SCALE_EXPONENT = f32(-127.0)
MIN_NORMAL_EXPONENT = f32(-126.0)
SCALE_FLOOR = f32(-100.0)  # pair scaling drops terms below 2^-100 of the 2^0 they sit next to, as SML_SCALE_FLOOR
X_CLAMP = f32(2.0**20)  # two-pass: exp(max(x, -X_CLAMP)), as in csrc/two_pass_kernels.h
EXPONENT_LIMIT = 1.5e6  # two-pass: pairs with |E| above it take the exact path
SHIFT_HEADROOM = f32(32.0)  # reload_exact, as in csrc/three_pass_kernels.h
PAIR_ROW_LIMIT = f32(2.0**19)  # reload_exact: rows with |max| at or above it take reload
STABLE_EXACT_BELOW = f32(-(2.0**125))  # StableMax: rows with a finite x below it take the float64 path
STABLE_SUM_RANGE = 2.0**100  # StableMax: sums outside [2^-100, 2^100] take the float64 path
LOG_L = [f32(float.fromhex(h)) for h in ("0x1.555784p-2", "-0x1.000474p-2", "0x1.98AD06p-3", "-0x1.533D4Cp-3",
                                          "0x1.32BFD0p-3", "-0x1.267B6Ap-3", "0x1.633682p-4")]  # csrc/log_constants.h
LOG_L0, LOG_L1, LOG_L2, LOG_L3, LOG_L4, LOG_L5, LOG_L6 = LOG_L
LN2_HI = f32(float.fromhex("0x1.62E4p-1"))
LN2_LO = f32(float.fromhex("0x1.7F7D1Cp-20"))
SQRT_HALF_BITS = np.int32(0x3F3504F3)
BLOCK = 1024  # elements per vectorized block: scratch stays in L1
LANES = 16  # independent accumulators of the reductions, for LLVM to vectorize
ONE = f32(1.0)
ZERO = f32(0.0)


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
def flush_below_flt_min(v):
    return ZERO if v < FLT_MIN else v


@njit(cache=True, nogil=True)
def row_max_ignoring_nan(row):
    """Max of the row, NaN ignored (-inf if none), as row_max in C: `v if v > m else m`
    is the vmaxps rule, and LANES independent lanes let LLVM vectorize it."""
    lanes = np.full(LANES, -np.inf, dtype=row.dtype)
    whole = row.size - row.size % LANES
    for i in range(0, whole, LANES):
        for lane in range(LANES):
            v = row[i + lane]
            lanes[lane] = v if v > lanes[lane] else lanes[lane]
    m = lanes[0]
    for v in lanes[1:]:
        m = v if v > m else m
    for v in row[whole:]:
        m = v if v > m else m
    return m


@njit(cache=True, nogil=True)
def infinite_row(row, out, log_output):
    """The limit for rows whose max is +inf, as infinite_row() in C."""
    infinities = 0
    nans = 0
    for v in row:
        infinities += v == np.inf
        nans += v != v
    if log_output:
        at_inf, elsewhere = math.log(1.0 / infinities), -np.inf
    else:
        at_inf, elsewhere = 1.0 / infinities, 0.0
    for i in range(row.size):
        out[i] = np.nan if nans else (at_inf if row[i] == np.inf else elsewhere)


@njit(cache=True, nogil=True)
def sum_f64(values, k):
    """Sum of values[:k] in float64 over LANES independent chains, which LLVM
    vectorizes (a single chain would wait on every add's latency)."""
    partial = np.zeros(LANES)
    whole = k - k % LANES
    for i in range(0, whole, LANES):
        for lane in range(LANES):
            partial[lane] += values[i + lane]
    for i in range(whole, k):
        partial[0] += values[i]
    return partial.sum()


@njit(cache=True, nogil=True)
def shifted_exp_block(row, start, stop, m, shifted, e, bits):
    """shifted = row[start:stop] - m and e = exp(shifted), in the scratch buffers; returns their length."""
    k = stop - start
    for i in range(k):
        shifted[i] = row[start + i] - m
    exp_nonpositive_block(shifted[:k], e[:k], bits[:k])
    return k


@njit(cache=True, nogil=True)
def scale_flushed_block(e, factor, normal_from, out):
    """out = e * factor flushed below FLT_MIN, as the C kernels' pass 3: the plain products where
    every e is at least normal_from, else computed in float64 (exact) so that no float32
    subnormal is formed."""
    if e.min() >= normal_from:
        for i in range(e.size):
            out[i] = e[i] * factor
    else:
        for i in range(e.size):
            out[i] = flushed_to_float32(np.float64(e[i]) * np.float64(factor))


@njit(cache=True, nogil=True)
def three_pass_rows_f32(x, y, reload, log_output):
    shifted = np.empty(BLOCK, f32)
    e = np.empty(BLOCK, f32)
    bits = np.empty(BLOCK, np.int32)
    for r in range(x.shape[0]):
        row, out = x[r], y[r]
        n = row.size
        if n == 0:
            continue
        m = row_max_ignoring_nan(row)
        if m == np.inf:
            infinite_row(row, out, log_output)
            continue
        total = 0.0
        for start in range(0, n, BLOCK):
            k = shifted_exp_block(row, start, min(start + BLOCK, n), m, shifted, e, bits)
            total += sum_f64(e, k)
            if reload:
                out[start:start + k] = shifted[:k] if log_output else e[:k]
        if log_output:
            log_sum = f32(math.log(total))
            for i in range(n):
                out[i] = (out[i] if reload else row[i] - m) - log_sum
        else:
            inverse_sum = f32(1.0 / total)
            normal_from = 2.0**-125 / inverse_sum  # exps from here give normal outputs
            for start in range(0, n, BLOCK):
                stop = min(start + BLOCK, n)
                if reload:
                    block = out[start:stop]
                    if block.min() >= normal_from:
                        for i in range(block.size):
                            block[i] = block[i] * inverse_sum
                    else:  # from a copy of the stored exps: in place, LLVM would not vectorize it
                        e[:block.size] = block
                        scale_flushed_block(e[:block.size], inverse_sum, normal_from, block)
                else:
                    k = shifted_exp_block(row, start, stop, m, shifted, e, bits)
                    scale_flushed_block(e[:k], inverse_sum, normal_from, out[start:stop])


@njit(cache=True, nogil=True)
def three_pass_rows_f64(x, y, reload, log_output):
    for r in range(x.shape[0]):
        row, out = x[r], y[r]
        if row.size == 0:
            continue
        m = row_max_ignoring_nan(row)
        if m == np.inf:
            infinite_row(row, out, log_output)
            continue
        total = 0.0
        for i in range(row.size):
            shifted = row[i] - m
            e = math.exp(shifted)
            total += e
            if reload:
                out[i] = shifted if log_output else e
        if log_output:
            log_sum = math.log(total)
            for i in range(row.size):
                out[i] = (out[i] if reload else row[i] - m) - log_sum
        else:
            inverse_sum = 1.0 / total
            for i in range(row.size):
                out[i] = (out[i] if reload else math.exp(row[i] - m)) * inverse_sum


FLT_MIN_F64 = 2.0**-126
SUBNORMAL_GRID = 2.0**-97  # adding it rounds a double below 2^-126 to a multiple of 2^-149
JUST_BELOW_ROUNDING_UP = FLT_MIN_F64 - 2.0**-150  # from here a float32 result rounds up to FLT_MIN
OUTPUT_SCALE = 2.0**64
FLT_MIN_SCALED = f32(2.0**-62)
INVERSE_OUTPUT_SCALE = f32(2.0**-64)


@njit(cache=True, nogil=True)
def scale_pow2_flushed_block(v, d, out, bits):
    """out = v * 2^d flushed below FLT_MIN (NaN kept), as vf_scale_pow2_flushed on AVX2 (+0 for d
    below -126), in float64, where the product is exact and normal (2^d built in the exponent
    field of `bits`, an int64 scratch): no float32 subnormal is formed. Branch-free."""
    two_to_d = bits.view(np.float64)
    for i in range(v.size):
        kept = d[i] >= MIN_NORMAL_EXPONENT
        bits[i] = ((np.int64(d[i] if kept else MIN_NORMAL_EXPONENT) + np.int64(1023)) << np.int64(52)) if kept else 0
    for i in range(v.size):
        out[i] = flushed_to_float32(np.float64(v[i]) * two_to_d[i])


@njit(cache=True, nogil=True)
def flushed_to_float32(value):
    """A float64 value (at least 2^-190 unless 0, or NaN) rounded once to float32 and flushed below
    FLT_MIN, without forming a float32 subnormal, as in csrc/three_pass_kernels.h: rounded times
    2^64, and scaled back after the lanes below FLT_MIN (times 2^64) are settled from the exact
    value. (LLVM evaluates both arms of a select, so no arm may hold a subnormal either.)"""
    scaled = f32(value * OUTPUT_SCALE)
    rounded_up = FLT_MIN_SCALED if value >= JUST_BELOW_ROUNDING_UP else ZERO
    return (scaled if not scaled < FLT_MIN_SCALED else rounded_up) * INVERSE_OUTPUT_SCALE


@njit(cache=True, nogil=True)
def split_product_flushed(s, high, low):
    """The float32 FMA s * high + (s * low), flushed below FLT_MIN (NaN kept), as the C kernel
    computes it, in float64 so that no float32 subnormal is formed and FTZ/DAZ cannot change it:
    s * low is rounded as the float32 product was (to the subnormal grid where that is below
    FLT_MIN), and the sum is exact in float64 (at most 49 bits), so one rounding remains. Its
    result rounds to FLT_MIN exactly when it is at least 2^-126 - 2^-150."""
    s = np.float64(s)
    low_product = s * np.float64(low)
    grid = SUBNORMAL_GRID if low_product >= 0.0 else -SUBNORMAL_GRID
    on_subnormal_grid = (low_product + grid) - grid
    magnitude = abs(low_product)
    rounded = np.float64(f32(low_product * OUTPUT_SCALE)) / OUTPUT_SCALE  # the float32 rounding, never subnormal
    low_product = on_subnormal_grid if magnitude < FLT_MIN_F64 else rounded
    return flushed_to_float32(s * np.float64(high) + low_product)


@njit(cache=True, nogil=True, fastmath={"contract"})
def reload_exact_rows_f32(x, y):
    """Softmax by three-pass reload with exp(x - max) = p * 2^(n - n_max), as
    reload_exact_row in csrc/three_pass_kernels.h: x - max is never rounded."""
    clamped, p, n = np.empty(BLOCK, f32), np.empty(BLOCK, f32), np.empty(BLOCK, f32)
    bits = np.empty(BLOCK, np.int32)
    for r in range(x.shape[0]):
        row, out = x[r], y[r]
        if row.size == 0:
            continue
        m = row_max_ignoring_nan(row)
        if m == np.inf:
            infinite_row(row, out, False)
            continue
        if not abs(m) < PAIR_ROW_LIMIT:
            three_pass_rows_f32(x[r:r + 1], y[r:r + 1], True, False)
            continue
        shift = np.rint(m * LOG2E) - SHIFT_HEADROOM
        total = 0.0
        for start in range(0, row.size, BLOCK):
            k = min(BLOCK, row.size - start)
            clamped_exp_mantissa_block(row, start, k, clamped, p, n)
            for i in range(k):
                n[i] -= shift
            scale_pow2_block(p[:k], n[:k], out[start:start + k], bits[:k], SCALE_FLOOR)
            total += sum_f64(out[start:start + k], k)
        inverse = 1.0 / total
        high = f32(inverse)
        low = f32(inverse - high)
        # Blocks whose every output (and low product) is surely normal take the plain FMA, as in C.
        normal_from = max(2.0**-125 / high, 2.0**-126 / abs(low) if low != ZERO else 0.0)
        for start in range(0, row.size, BLOCK):
            block = out[start:start + BLOCK]
            if block.min() >= normal_from:
                for i in range(block.size):
                    block[i] = block[i] * high + block[i] * low  # one FMA, as in C
            else:
                for i in range(block.size):
                    block[i] = split_product_flushed(block[i], high, low)


@njit(cache=True, nogil=True)
def pairs_usable(mantissa, exponent):
    return np.isfinite(mantissa) and mantissa > 0.0 and abs(exponent) < EXPONENT_LIMIT


@njit(cache=True, nogil=True)
def sum_exp_pair_exact(row):
    """(mantissa, exponent) of sum exp(row) in float64, as sum_exp_pair_exact in C.

    A finite float64 row with |max| > DBL_MAX ln 2 (about 1.246e308) has log2 of its sum
    beyond every double, so no pair holds it: the pair saturates as a float would, to
    (inf, 0) above and (0, -inf) below (float32 rows never get there)."""
    top = -np.inf
    for v in row:
        if v != v:
            return np.nan, 0.0
        top = v if v > top else top
    if top == np.inf:
        return np.inf, 0.0
    if top == -np.inf:
        return 0.0, -np.inf
    scaled = top * 1.4426950408889634  # log2(e)
    if abs(scaled) == np.inf:
        return (np.inf, 0.0) if top > 0.0 else (0.0, -np.inf)
    total = 0.0
    for v in row:
        total += math.exp(np.float64(v) - top)
    exponent = np.floor(scaled)
    return total * 2.0 ** (scaled - exponent), exponent


@njit(cache=True, nogil=True)
def clamped_exp_mantissa_block(row, start, k, clamped, p, n):
    """exp(max(x, -X_CLAMP)) = p * 2^n for x = row[start:start + k] (NaN stays NaN)."""
    for i in range(k):
        v = row[start + i]
        clamped[i] = v if not v < -X_CLAMP else -X_CLAMP
    exp_mantissa_block(clamped[:k], p[:k], n[:k])


@njit(cache=True, nogil=True)
def sum_exp_pair_vector(row, clamped, p, n, scaled, bits):
    """Pass 1 of two-pass, as sum_exp_pair_vector in C but by blocks of BLOCK:
    each block's exps as (p, n) pairs, scaled to the block's largest exponent
    and summed in float64, then folded into the running (mantissa, exponent)."""
    mantissa, exponent = 0.0, -2.0**60
    for start in range(0, row.size, BLOCK):
        k = min(BLOCK, row.size - start)
        clamped_exp_mantissa_block(row, start, k, clamped, p, n)
        top = n[0]
        for i in range(1, k):
            top = n[i] if n[i] > top else top
        for i in range(k):
            n[i] -= top
        scale_pow2_block(p[:k], n[:k], scaled[:k], bits[:k], SCALE_FLOOR)
        block_sum = sum_f64(scaled, k)
        new_exponent = max(exponent, np.float64(top))
        # One of the two terms is at least 0.7: the other vanishes next to it below 2^-1000,
        # which keeps it normal (as vpair_fold_half in C).
        mantissa = (mantissa * 2.0 ** max(exponent - new_exponent, -1000.0)
                    + block_sum * 2.0 ** max(np.float64(top) - new_exponent, -1000.0))
        exponent = new_exponent
    return mantissa, exponent


@njit(cache=True, nogil=True)
def sum_exp_pair_rows_f32(x, mantissa, exponent):
    clamped, p, n, scaled = np.empty(BLOCK, f32), np.empty(BLOCK, f32), np.empty(BLOCK, f32), np.empty(BLOCK, f32)
    bits = np.empty(BLOCK, np.int32)
    for r in range(x.shape[0]):
        row = x[r]
        if row.size == 0:
            mantissa[r], exponent[r] = 0.0, -np.inf
            continue
        m, e = sum_exp_pair_vector(row, clamped, p, n, scaled, bits)
        if not pairs_usable(m, e):
            m, e = sum_exp_pair_exact(row)
        mantissa[r], exponent[r] = m, e


@njit(cache=True, nogil=True)
def sum_exp_pair_rows_f64(x, mantissa, exponent):
    for r in range(x.shape[0]):
        if x.shape[1] == 0:
            mantissa[r], exponent[r] = 0.0, -np.inf
        else:
            mantissa[r], exponent[r] = sum_exp_pair_exact(x[r])


@njit(cache=True, nogil=True, fastmath={"contract"})
def two_pass_rows_f32(x, y, log_output):
    """Two-pass softmax or log-softmax, as in csrc/two_pass_kernels.h; rows the pairs
    cannot represent take the three-pass reload twin, as the C kernels do."""
    clamped, p, n, scaled = np.empty(BLOCK, f32), np.empty(BLOCK, f32), np.empty(BLOCK, f32), np.empty(BLOCK, f32)
    bits, wide_bits = np.empty(BLOCK, np.int32), np.empty(BLOCK, np.int64)
    for r in range(x.shape[0]):
        row, out = x[r], y[r]
        if row.size == 0:
            continue
        m, e = sum_exp_pair_vector(row, clamped, p, n, scaled, bits)
        if row.size == 1 or not pairs_usable(m, e):
            three_pass_rows_f32(x[r:r + 1], y[r:r + 1], True, log_output)
            continue
        if log_output:
            log_sum = math.log(m) + e * 0.6931471805599453  # ln 2
            high = f32(log_sum)
            low = f32(log_sum - high)
            for i in range(row.size):
                value = (row[i] - high) - low
                out[i] = value if not value > ZERO else ZERO  # capped at 0, as in C
            continue
        inverse = 1.0 / m
        high = f32(inverse)
        low = f32(inverse - high)
        top = f32(e)
        for start in range(0, row.size, BLOCK):
            k = min(BLOCK, row.size - start)
            clamped_exp_mantissa_block(row, start, k, clamped, p, n)
            for i in range(k):
                p[i] = p[i] * high + p[i] * low  # one FMA, as in C
                n[i] -= top
            scale_pow2_flushed_block(p[:k], n[:k], out[start:start + k], wide_bits)


@njit(cache=True, nogil=True, error_model="numpy")
def stable_s_block(row, start, k, s):
    """s[:k] = StableMax's s of row[start:start + k] in float32: x + 1 for x >= 0, 1 / (1 - x)
    below (NaN stays NaN). Branch-free, so that LLVM vectorizes it."""
    for i in range(k):
        v = row[start + i]
        below = ONE / (ONE - (v if v < ZERO else ZERO))
        s[i] = below if v < ZERO else v + ONE


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


@njit(cache=True, nogil=True, error_model="numpy")
def stable_row_exact(row, out, log_output):
    """StableMax of a row in float64, rounded once, as stable_row_exact in C."""
    total = 0.0
    for v in row:
        x = np.float64(v)
        total += x + 1.0 if x >= 0.0 else 1.0 / (1.0 - x)
    log_sum = math.log(total) if total > 0.0 else (-np.inf if total == 0.0 else np.nan)
    for i in range(row.size):
        x = np.float64(row[i])
        s = x + 1.0 if x >= 0.0 else 1.0 / (1.0 - x)
        if log_output:
            out[i] = (math.log(s) if s > 0.0 else (-np.inf if s == 0.0 else np.nan)) - log_sum
        else:
            value = f32(s / total) if total != 0.0 else f32(np.nan)
            out[i] = value if not value < FLT_MIN else ZERO


@njit(cache=True, nogil=True, fastmath={"contract"}, error_model="numpy")
def stablemax_rows_f32(x, y, log_output):
    """StableMax or log-StableMax, as csrc/stablemax_kernels.h, by blocks of BLOCK: s summed in
    float64, then r = s * (1/sum) with 1/sum in two float32 parts; log r while r >= FLT_MIN,
    else -log(1 + |x|) - log sum. Rows out of the comfortable range take the float64 path."""
    s = np.empty(BLOCK, f32)
    argument = np.empty(BLOCK, f32)
    logs = np.empty(BLOCK, f32)
    saved = np.empty(BLOCK, f32)
    for r in range(x.shape[0]):
        row, out = x[r], y[r]
        if row.size == 0:
            continue
        total = 0.0
        low = f32(np.inf)
        for start in range(0, row.size, BLOCK):
            k = min(BLOCK, row.size - start)
            stable_s_block(row, start, k, s)
            total += sum_f64(s, k)
            for i in range(k):
                v = row[start + i]
                low = v if (v < low) & (v > -np.inf) else low
        if total == np.inf:
            infinite_row(row, out, log_output)
            continue
        if low < STABLE_EXACT_BELOW or (not (1.0 / STABLE_SUM_RANGE <= total <= STABLE_SUM_RANGE) and total == total):
            stable_row_exact(row, out, log_output)
            continue
        inverse = 1.0 / total
        inverse_high = f32(inverse)
        inverse_low = f32(inverse - inverse_high)
        log_sum = math.log(total)
        log_high = f32(log_sum)
        log_low = f32(log_sum - log_high)
        for start in range(0, row.size, BLOCK):
            k = min(BLOCK, row.size - start)
            stable_s_block(row, start, k, s)
            for i in range(k):
                s[i] = s[i] * inverse_high + s[i] * inverse_low  # r, one FMA as in C
            if not log_output:
                for i in range(k):
                    out[start + i] = flush_below_flt_min(s[i])
                continue
            for i in range(k):
                argument[i] = abs(row[start + i]) + ONE if s[i] < FLT_MIN else s[i]
            log_positive_block(argument[:k], logs[:k], saved[:k])
            for i in range(k):
                tiny = ((-logs[i]) - log_high) - log_low
                out[start + i] = tiny if s[i] < FLT_MIN else logs[i]


@njit(cache=True, nogil=True, error_model="numpy")
def stablemax_rows_f64(x, y, log_output):
    """StableMax or log-StableMax in float64 (subnormal outputs kept, as every float64 kernel).

    s of a finite x is at most DBL_MAX (x + 1 rounds to x there), but a sum of them can
    overflow: such a row is summed again as s * 2^-64, which no finite row overflows
    (n < 2^63), and s / sum = (s * 2^-64) / (sum * 2^-64) exactly. A row whose scaled sum
    still overflows holds a +inf: it takes the limit, the +inf sharing the mass."""
    for r in range(x.shape[0]):
        row, out = x[r], y[r]
        if row.size == 0:
            continue
        total = 0.0
        for v in row:
            total += v + 1.0 if v >= 0.0 else 1.0 / (1.0 - v)
        scale, log_scale = 1.0, 0.0
        if total == np.inf:
            scale, log_scale = 2.0**-64, -64 * 0.6931471805599453  # ln 2
            total = 0.0
            for v in row:
                total += (v + 1.0 if v >= 0.0 else 1.0 / (1.0 - v)) * scale
            if total == np.inf:
                infinite_row(row, out, log_output)
                continue
        log_sum = (math.log(total) if total > 0.0 else (-np.inf if total == 0.0 else np.nan)) - log_scale
        for i in range(row.size):
            v = row[i]
            s = v + 1.0 if v >= 0.0 else 1.0 / (1.0 - v)
            if log_output:
                out[i] = (math.log(s) if s > 0.0 else (-np.inf if s == 0.0 else np.nan)) - log_sum
            else:
                out[i] = s * scale / total if total != 0.0 else np.nan


@njit(cache=True, nogil=True, error_model="numpy")
def stablemax_cross_entropy_rows(x, labels, ignore_index, losses, grad, grad_scale, want_grad):
    """StableMax cross-entropy of each row of x (float32 or float64), accumulated in float64:
    loss = log(sum s) - log s(x_label). With want_grad, grad = grad_scale * (p - onehot) / (1 + |x|),
    p = s / sum: one reduction and one elementwise sweep per row. Rows labelled ignore_index
    give loss 0 and gradient 0. Rows with +inf take the limit (the +inf share the mass). A finite
    float64 row whose sum overflows is summed again as s * 2^-64, as in stablemax_rows_f64."""
    for r in range(x.shape[0]):
        row = x[r]
        label = labels[r]
        if label == ignore_index:
            losses[r] = 0.0
            if want_grad:
                grad[r] = 0.0
            continue
        total = 0.0
        infinities = 0
        for v in row:
            xv = np.float64(v)
            total += xv + 1.0 if xv >= 0.0 else 1.0 / (1.0 - xv)
            infinities += xv == np.inf
        scale, log_scale = 1.0, 0.0
        if total == np.inf and infinities == 0:
            scale, log_scale = 2.0**-64, -64 * 0.6931471805599453  # ln 2
            total = 0.0
            for v in row:
                xv = np.float64(v)
                total += (xv + 1.0 if xv >= 0.0 else 1.0 / (1.0 - xv)) * scale
        if total == np.inf:  # the limit: the +inf share the mass
            chosen = 1.0 / infinities if row[label] == np.inf else 0.0
            losses[r] = -math.log(chosen) if chosen > 0.0 else np.inf
            if want_grad:
                for i in range(row.size):
                    xv = np.float64(row[i])
                    p = 1.0 / infinities if xv == np.inf else 0.0
                    onehot = 1.0 if i == label else 0.0
                    grad[r, i] = 0.0 if xv == np.inf else grad_scale * (p - onehot) / (1.0 + abs(xv))
            continue
        xc = np.float64(row[label])
        s_label = xc + 1.0 if xc >= 0.0 else 1.0 / (1.0 - xc)
        # The label holds all but < 2^-20 of the mass: p - 1 and log(sum) - log(s_label) cancel,
        # so 1 - p = others / sum and the loss log1p(others / s_label), others summed directly
        # over the other elements (csrc/stablemax_kernels.h, label_dominates).
        dominant = total - s_label * scale < 2.0**-20 * total
        others = 0.0
        if dominant:
            for i in range(row.size):
                if i != label:
                    xv = np.float64(row[i])
                    others += (xv + 1.0 if xv >= 0.0 else 1.0 / (1.0 - xv)) * scale
            losses[r] = math.log1p(others / (s_label * scale))
        else:
            log_sum = math.log(total) - log_scale
            losses[r] = log_sum - math.log(s_label) if s_label > 0.0 else (np.inf if total > 0 else np.nan)
        if want_grad:
            for i in range(row.size):
                xv = np.float64(row[i])
                p = (xv + 1.0 if xv >= 0.0 else 1.0 / (1.0 - xv)) * scale / total
                onehot = 1.0 if i == label else 0.0
                p_minus_onehot = (0.0 - others) / total if dominant and i == label else p - onehot
                grad[r, i] = grad_scale * p_minus_onehot / (1.0 + abs(xv))


def stablemax_cross_entropy(x, labels, ignore_index, grad_scale, losses, grad):
    """The registry's form of stablemax_cross_entropy_rows (grad None: no gradient)."""
    want_grad = grad is not None
    stablemax_cross_entropy_rows(x, labels, ignore_index, losses, grad if want_grad else np.empty((0, 0), x.dtype),
                                 grad_scale, want_grad)


# ------------------------------------------------------------------ 8-bit block-wise quantization

# Above this absmax m, fl32(1/m) is subnormal; adding and subtracting the rounder rounds a
# double below 2^-126 to the float subnormal grid (csrc/quant_kernels.h).
SUBNORMAL_RECIPROCAL_ABOVE = f32(2.0**126)
SUBNORMAL_GRID_ROUNDER = 1.5 * 2.0**-97
NAN32 = f32(np.nan)


@njit(cache=True, nogil=True)
def code_by_search(y, midpoints):
    """The code of y by binary search: the number of midpoints (rounded down) below y."""
    low, high = 0, 255
    while low < high:  # invariant: the code lies in [low, high]
        middle = (low + high) // 2
        if y > midpoints[middle]:
            low = middle + 1
        else:
            high = middle
    return low


@njit(cache=True, nogil=True)
def nan_winning_max(a, running):
    """max(a, running), NaN if either is: a NaN a replaces the running maximum, and a NaN
    running maximum stays (both comparisons with it are false)."""
    return a if (a > running) | (a != a) else running


@njit(cache=True, nogil=True, error_model="numpy")
def block_absmax(x, start, stop):
    """max |x| over x[start:stop]: NaN if any is NaN (the default NaN, whatever the payload of
    x's, as the C kernels give), else inf if any is infinite."""
    lanes = np.zeros(LANES, f32)
    whole = start + (stop - start) // LANES * LANES
    for i in range(start, whole, LANES):
        for lane in range(LANES):
            lanes[lane] = nan_winning_max(abs(x[i + lane]), lanes[lane])
    m = ZERO
    for a in lanes:
        m = nan_winning_max(a, m)
    for i in range(whole, stop):
        m = nan_winning_max(abs(x[i]), m)
    return m if m == m else f32(np.nan)


@njit(cache=True, nogil=True)
def codes_of_scaled(y, table, midpoints, single_compare, zero_code, q):
    """q = the code of each scaled value y (the number of midpoints below it; NaN: the zero
    code), from its bucket's entry: the candidate plus whether y's key exceeds the bucket's
    midpoint key (softmaxlib/_codebooks.py); or by binary search when the codebook has crowded
    buckets."""
    if single_compare:
        bits = y.view(np.int32)
        for i in range(y.size):
            entry = table[(bits[i] >> np.int32(16)) & np.int32(0xFFFF)]
            key = (bits[i] ^ (bits[i] >> np.int32(31))) & np.int32(0xFFFF)  # complemented if negative
            q[i] = (entry & np.int32(0xFF)) + (key > ((entry >> np.int32(8)) & np.int32(0xFFFF)))
    else:
        for i in range(y.size):
            q[i] = code_by_search(y[i], midpoints) if y[i] == y[i] else zero_code


@njit(cache=True, nogil=True, error_model="numpy")
def quantize_blockwise_f32(x, blocksize, table, midpoints, single_compare, zero_code, q, absmax):
    """q = the code nearest x * (1/absmax) per block (ties to the lower code), absmax per block,
    as csrc/quant_kernels.h. An all-zero block (or a NaN absmax) scales by 0; a NaN y (an inf
    or NaN x with nonfinite="propagate") gets the zero code. A block with absmax m > 2^126,
    whose fl32(1/m) is subnormal (0 under flush-to-zero), computes the same y in double, as
    codes_of_huge_block in C explains: g = fl32(1/m) rounded through double, then x * g
    rounded once."""
    y = np.empty(blocksize, f32)
    for b in range(absmax.size):
        start = b * blocksize
        stop = min(start + blocksize, x.size)
        m = block_absmax(x, start, stop)
        absmax[b] = m
        k = stop - start
        if m > SUBNORMAL_RECIPROCAL_ABOVE:
            g = (1.0 / np.float64(m) + SUBNORMAL_GRID_ROUNDER) - SUBNORMAL_GRID_ROUNDER
            for i in range(k):
                y[i] = f32(np.float64(x[start + i]) * g)
        else:
            inverse = ONE / m if m > ZERO else ZERO
            for i in range(k):
                y[i] = x[start + i] * inverse
        codes_of_scaled(y[:k], table, midpoints, single_compare, zero_code, q[start:stop])


@njit(cache=True, nogil=True)
def dequantize_blockwise_f32(q, code, absmax, blocksize, out):
    """out = code[q] * absmax of q's block, in float32; NaN for a block whose absmax is not
    finite (nonfinite="propagate"), as inf times a non-zero code would be +-inf."""
    for b in range(absmax.size):
        start = b * blocksize
        stop = min(start + blocksize, q.size)
        scale = absmax[b] if math.isfinite(absmax[b]) else NAN32
        for i in range(start, stop):
            out[i] = code[q[i]] * scale

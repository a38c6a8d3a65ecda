"""Three-pass softmax and log-softmax twins (csrc/three_pass_kernels.h), reload and recompute,
the reload_exact softmax, and the float64 three-pass kernel that serves float64 input of every
softmax kernel (libm's exp, subnormal outputs kept)."""
import math

import numpy as np
from numba import njit

from ._exp import LOG2E, SCALE_FLOOR, clamped_exp_mantissa_block, exp_nonpositive_block, scale_pow2_block
from ._rows import (BLOCK, FLT_MIN_F64, OUTPUT_SCALE, ZERO, f32, flushed_to_float32, infinite_row,
                    row_max_ignoring_nan, sum_f64)

SHIFT_HEADROOM = f32(32.0)  # reload_exact, as in csrc/three_pass_kernels.h
PAIR_ROW_LIMIT = f32(2.0**19)  # reload_exact: rows with |max| at or above it take reload
SUBNORMAL_GRID = 2.0**-97  # adding it rounds a double below 2^-126 to a multiple of 2^-149


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


# ------------------------------------------------------------------ twins: {dtype}_{kernel id}(x, y)


def f32_softmax_reload(x, y):
    three_pass_rows_f32(x, y, True, False)


def f32_softmax_recompute(x, y):
    three_pass_rows_f32(x, y, False, False)


def f32_log_softmax_reload(x, y):
    three_pass_rows_f32(x, y, True, True)


def f32_log_softmax_recompute(x, y):
    three_pass_rows_f32(x, y, False, True)


f32_softmax_reload_exact = reload_exact_rows_f32


def f64_softmax_reload(x, y):
    three_pass_rows_f64(x, y, True, False)


def f64_softmax_recompute(x, y):
    three_pass_rows_f64(x, y, False, False)


def f64_log_softmax_reload(x, y):
    three_pass_rows_f64(x, y, True, True)


def f64_log_softmax_recompute(x, y):
    three_pass_rows_f64(x, y, False, True)


f64_softmax_reload_exact = f64_softmax_reload  # float64 rounds x - max 2^29 times finer


def f32_exp_nonpositive(t, e):
    """The vector exp under every softmax kernel on its own, as sml_f32_exp_nonpositive (also
    in csrc/three_pass_kernels.h), for the exhaustive test of every float32 input: e = exp(t)
    for 1-D float32 t <= 0 or NaN, +0 below EXP_CUTOFF (the float just above ln(FLT_MIN)) and
    for -inf, NaN stays NaN."""
    exp_nonpositive_block(t, e, np.empty(t.size, np.int32))

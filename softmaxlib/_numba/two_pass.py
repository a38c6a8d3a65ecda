"""Two-pass softmax and log-softmax twins (csrc/two_pass_kernels.h) and the sum_exp_pair
reduction: sum exp(x) as a (mantissa, exponent) pair, never forming x - max. Rows the pairs
cannot represent take the three-pass reload twin, as the C kernels do."""
import math

import numpy as np
from numba import njit

from ._exp import MIN_NORMAL_EXPONENT, SCALE_FLOOR, clamped_exp_mantissa_block, scale_pow2_block
from ._rows import BLOCK, ZERO, f32, flushed_to_float32, sum_f64
from .three_pass import f64_log_softmax_reload, f64_softmax_reload, three_pass_rows_f32

EXPONENT_LIMIT = 1.5e6  # two-pass: pairs with |E| above it take the exact path


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


# ------------------------------------------------------------------ twins: {dtype}_{kernel id}


def f32_softmax_two_pass(x, y):
    two_pass_rows_f32(x, y, False)


def f32_log_softmax_two_pass(x, y):
    two_pass_rows_f32(x, y, True)


f32_sum_exp_pair = sum_exp_pair_rows_f32  # (x, mantissa, exponent)


# float64 has no pair kernel: libm's exp in float64 (three passes) serves every family
f64_softmax_two_pass = f64_softmax_reload
f64_log_softmax_two_pass = f64_log_softmax_reload


f64_sum_exp_pair = sum_exp_pair_rows_f64  # (x, mantissa, exponent)

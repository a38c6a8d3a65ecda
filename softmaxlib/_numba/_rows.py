"""Blocks shared by the families of Numba twins: the block sizes, the NaN-ignoring row max,
rows whose max is +inf (csrc/infinite_rows.h), float64 sums over independent lanes, and the
flush of outputs below FLT_MIN without forming a float32 subnormal."""
import math

import numpy as np
from numba import njit

f32 = np.float32
FLT_MIN = f32(float.fromhex("0x1p-126"))
BLOCK = 1024  # elements per vectorized block: scratch stays in L1
LANES = 16  # independent accumulators of the reductions, for LLVM to vectorize
ONE = f32(1.0)
ZERO = f32(0.0)
FLT_MIN_F64 = 2.0**-126
JUST_BELOW_ROUNDING_UP = FLT_MIN_F64 - 2.0**-150  # from here a float32 result rounds up to FLT_MIN
OUTPUT_SCALE = 2.0**64
FLT_MIN_SCALED = f32(2.0**-62)
INVERSE_OUTPUT_SCALE = f32(2.0**-64)


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
def flushed_to_float32(value):
    """A float64 value (at least 2^-190 unless 0, or NaN) rounded once to float32 and flushed below
    FLT_MIN, without forming a float32 subnormal, as in csrc/three_pass_kernels.h: rounded times
    2^64, and scaled back after the lanes below FLT_MIN (times 2^64) are settled from the exact
    value. (LLVM evaluates both arms of a select, so no arm may hold a subnormal either.)"""
    scaled = f32(value * OUTPUT_SCALE)
    rounded_up = FLT_MIN_SCALED if value >= JUST_BELOW_ROUNDING_UP else ZERO
    return (scaled if not scaled < FLT_MIN_SCALED else rounded_up) * INVERSE_OUTPUT_SCALE

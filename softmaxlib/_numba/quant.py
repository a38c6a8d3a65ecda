"""8-bit block-wise quantization twins (csrc/quant_kernels.h), over flat float32 arrays."""
import math

import numpy as np
from numba import njit

from ._rows import LANES, ONE, ZERO, f32

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
def codes_of_block(x, m, table, midpoints, single_compare, zero_code, q, y):
    """q = the code nearest x * (1/m) for a block x of absmax m (y: scratch of x's size). An
    all-zero block (or a NaN m) scales by 0; a NaN y gets the zero code. A block with
    m > 2^126, whose fl32(1/m) is subnormal (0 under flush-to-zero), computes the same y in
    double, as codes_of_huge_block in C explains: g = fl32(1/m) rounded through double, then
    x * g rounded once."""
    if m > SUBNORMAL_RECIPROCAL_ABOVE:
        g = (1.0 / np.float64(m) + SUBNORMAL_GRID_ROUNDER) - SUBNORMAL_GRID_ROUNDER
        for i in range(x.size):
            y[i] = f32(np.float64(x[i]) * g)
    else:
        inverse = ONE / m if m > ZERO else ZERO
        for i in range(x.size):
            y[i] = x[i] * inverse
    codes_of_scaled(y, table, midpoints, single_compare, zero_code, q)


@njit(cache=True, nogil=True, error_model="numpy")
def quantize_blockwise_f32(x, blocksize, table, midpoints, single_compare, zero_code, q, absmax):
    """q = the code nearest x * (1/absmax) per block (ties to the lower code), absmax per block,
    as csrc/quant_kernels.h (codes_of_block)."""
    y = np.empty(blocksize, f32)
    for b in range(absmax.size):
        start = b * blocksize
        stop = min(start + blocksize, x.size)
        m = block_absmax(x, start, stop)
        absmax[b] = m
        codes_of_block(x[start:stop], m, table, midpoints, single_compare, zero_code, q[start:stop], y[:stop - start])


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


# ------------------------------------------------------------------ twins: {dtype}_{kernel id}
# tables: a softmaxlib._codebooks.SearchTables


def f32_u8_codes_of_scaled(y, tables, q):
    codes_of_scaled(y, tables.table, tables.midpoints, tables.single_compare, np.uint8(tables.zero_code), q)


def f32_u8_quantize_blockwise(x, blocksize, tables, q, absmax):
    quantize_blockwise_f32(x, blocksize, tables.table, tables.midpoints, tables.single_compare,
                           np.uint8(tables.zero_code), q, absmax)


def u8_f32_dequantize_blockwise(q, absmax, blocksize, code, out):
    dequantize_blockwise_f32(q, code, absmax, blocksize, out)

"""Codebooks (quantization maps) and the exact O(1) code search behind softmaxlib.quant.

The maps reproduce bitsandbytes' create_dynamic_map and create_linear_map value for value. Those
are built with torch.linspace in float32, whose CPU kernel computes start + step * i with one
fused multiply-add (and end - step * (steps - 1 - i) for the upper half); _linspace_float32
reproduces that, rounding each FMA once with exact rational arithmetic.

The search: the code of y is the number of midpoints m_j = (code_j + code_{j+1}) / 2 below y
(nearest code, ties to the lower index). Comparing a float32 y with m_j exactly is comparing it
with m_j rounded down to float32 (y > m_j <=> y > floor32(m_j)), so the midpoints are stored
rounded down. A table indexed by the top 16 bits of y (sign, exponent, 7 mantissa bits), a
"bucket", holds the code of the bucket's smallest value (bits 0-7) and, when a midpoint lies in
the bucket, its low 16 bits as a key (bits 8-23): within a bucket, y > m <=> key(y) > key(m),
key = the low 16 bits, complemented for negative numbers so that it grows with the value. A
bucket without a midpoint has the key 0xFFFF, which no y exceeds. When no bucket holds two
midpoints (every built-in map, checked over every float32 in [-1, 1] by tests/test_quant.py),
the code is the candidate plus that one comparison, from one table lookup. Buckets that do hold
several midpoints are flagged, and codebooks with any take a binary search instead.
"""
import functools
import threading
from fractions import Fraction

import numpy as np

f32 = np.float32
CODES = 256
TABLE_SIZE = 1 << 16
MULTIPLE_MIDPOINTS = 1 << 24  # flag in a search-table entry: the bucket holds several midpoints
NO_MIDPOINT_KEY = 0xFFFF  # the key of a bucket without a midpoint: no y's key exceeds it


def _fma_float32(a, b, c):
    """a * b + c for float32 values, rounded once to float32 (ties to even)."""
    exact = Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c))
    near = f32(float(exact))
    if Fraction(float(near)) == exact:
        return near
    below = near if Fraction(float(near)) < exact else np.nextafter(near, f32(-np.inf))
    above = np.nextafter(below, f32(np.inf))
    to_below, to_above = exact - Fraction(float(below)), Fraction(float(above)) - exact
    if to_below != to_above:
        return below if to_below < to_above else above
    return below if int(below.view(np.uint32)) % 2 == 0 else above


def _linspace_float32(start, end, steps):
    """torch.linspace(start, end, steps) in float32, as its CPU kernel computes it."""
    start, end = f32(start), f32(end)
    if steps == 1:
        return np.array([start], f32)
    step = f32((end - start) / f32(steps - 1))
    half = steps // 2
    return np.array([_fma_float32(step, f32(i), start) if i < half else _fma_float32(-step, f32(steps - 1 - i), end)
                     for i in range(steps)], f32)


def _decade_means(count, scale):
    """scale * the centres of count - 1 equal bins of [0.1, 1], in float32."""
    boundaries = _linspace_float32(0.1, 1.0, count)
    return f32(scale) * ((boundaries[:-1] + boundaries[1:]) / f32(2.0))


def create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8):
    """bitsandbytes' dynamic ("dynamic tree") map: 256 sorted float32 values in [-1, 1].

    For each exponent e = 0 .. max_exponent_bits - 1, values at the centres of equal bins of
    [0.1, 1] scaled by 10^(e - max_exponent_bits + 1) (both signs if signed, and twice as many
    bins per decade if not), then 0 and 1.0; padded with zeros to 256 values for fewer bits.
    The values are bitsandbytes' own, bit for bit.

    Parameters
    ----------
    signed : bool, optional
        Values of both signs, in [-1, 1] (the default), or only in [0, 1].
    max_exponent_bits : int, optional
        The number of decades, a positive integer (default: 7).
    total_bits : int, optional
        The bits of a code, 1 to 8 (default: 8): 2^total_bits values before the padding.

    Returns
    -------
    ndarray
        256 sorted float32 values (a new array on every call), a codebook for
        quantize_blockwise().

    Raises
    ------
    ValueError
        For a max_exponent_bits or total_bits that is not a positive integer, a total_bits
        above 8, or a combination that gives no map of 2^total_bits values.

    Examples
    --------
    >>> from softmaxlib import quant
    >>> code = quant.create_dynamic_map()
    >>> code.shape, code.dtype
    ((256,), dtype('float32'))
    >>> code[[0, 127, 255]]
    array([-0.99296874,  0.        ,  1.        ], dtype=float32)
    """
    for name, value in (("max_exponent_bits", max_exponent_bits), ("total_bits", total_bits)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, not {value!r}")
    if total_bits > 8:
        raise ValueError(f"total_bits must be at most 8, not {total_bits}")
    return _dynamic_map(bool(signed), int(max_exponent_bits), int(total_bits)).copy()


# The maps take a few ms to build (exact rational FMAs), and quantize_blockwise uses the default
# map on every call without a code: built once per argument set, handed out as copies.
@functools.lru_cache(maxsize=64)
def _dynamic_map(signed, max_exponent_bits, total_bits):
    non_sign_bits = total_bits - 1
    extra = 2 ** (non_sign_bits - max_exponent_bits) - 1
    data = []
    for e in range(max_exponent_bits):
        count = 2 ** (e + non_sign_bits - max_exponent_bits) + 1 if signed else \
            2 ** (e + non_sign_bits - max_exponent_bits + 1) + 1
        scale = 10.0 ** (e - max_exponent_bits + 1)
        data += list(_decade_means(int(count), scale))
        if signed:
            data += list(_decade_means(int(count), -scale))
    if extra > 0:  # the bits no exponent uses: more values in the top decade, [0.1, 1]
        data += list(_decade_means(extra + 1, 1.0))
        if signed:
            data += list(_decade_means(extra + 1, -1.0))
    data += [f32(0.0), f32(1.0)]
    if len(data) != 2 ** total_bits:
        raise ValueError(f"no dynamic map with signed={signed}, max_exponent_bits={max_exponent_bits}, "
                         f"total_bits={total_bits}: it would hold {len(data)} values, not {2 ** total_bits}")
    data += [f32(0.0)] * (CODES - len(data))
    return np.sort(np.array(data, f32))


def create_linear_map(signed=True, total_bits=8, add_zero=True):
    """bitsandbytes' linear map: evenly spaced float32 values on [-1, 1] (signed) or [0, 1].

    With add_zero (or fewer than 8 bits), a signed map has 2^bits - 1 values so that one of them
    is near 0, and the missing values are zeros inserted in the middle, as bitsandbytes does
    (for some unsigned maps of fewer bits that leaves the map unsorted, which quantize rejects).

    Parameters
    ----------
    signed : bool, optional
        Values on [-1, 1] (the default), or on [0, 1].
    total_bits : int, optional
        The bits of a code, an integer from 1 to 8 (default: 8).
    add_zero : bool, optional
        For a signed map, 2^bits - 1 values so that one is near 0 (the default).

    Returns
    -------
    ndarray
        256 float32 values (a new array on every call), a codebook for quantize_blockwise()
        when sorted.

    Raises
    ------
    ValueError
        For a total_bits that is not an integer from 1 to 8.

    Examples
    --------
    >>> from softmaxlib import quant
    >>> quant.create_linear_map()[[0, 127, 255]]
    array([-1.,  0.,  1.], dtype=float32)
    >>> quant.create_linear_map(signed=False)[[0, 1, 255]]
    array([0.        , 0.00392157, 1.        ], dtype=float32)
    """
    if not isinstance(total_bits, (int, np.integer)) or isinstance(total_bits, bool) or not 1 <= total_bits <= 8:
        raise ValueError(f"total_bits must be an integer from 1 to 8, not {total_bits!r}")
    return _linear_map(bool(signed), int(total_bits), bool(add_zero)).copy()


@functools.lru_cache(maxsize=64)
def _linear_map(signed, total_bits, add_zero):
    count = 2 ** total_bits
    if add_zero or total_bits < 8:
        count = 2 ** total_bits - 1 if signed else 2 ** total_bits
    values = _linspace_float32(-1.0 if signed else 0.0, 1.0, count)
    half = values.size // 2
    return np.concatenate([values[:half], np.zeros(CODES - values.size, f32), values[half:]]).astype(f32)


def check_code(code):
    """The codebook as a C-contiguous float32 array of 256 finite, sorted values, or ValueError."""
    array = np.asarray(code)
    if array.dtype.kind != "f":
        raise TypeError(f"code must be a floating array of {CODES} values, not dtype {array.dtype}")
    array = np.ascontiguousarray(array, dtype=f32)
    if array.shape != (CODES,):
        raise ValueError(f"code must hold {CODES} values (shape ({CODES},)), not shape {array.shape}")
    if not np.isfinite(array).all():
        where = int(np.flatnonzero(~np.isfinite(array))[0])
        raise ValueError(f"code must be finite: code[{where}] = {array[where]}")
    if np.any(array[1:] < array[:-1]):
        where = int(np.flatnonzero(array[1:] < array[:-1])[0])
        raise ValueError(f"code must be sorted: code[{where}] = {array[where]} > code[{where + 1}] = {array[where + 1]}")
    return array


class SearchTables:
    """The tables of one codebook: midpoints (float32, rounded down, +inf after the last, for
    the binary search), the 2^16-entry bucket table (int32: candidate | key << 8, and
    MULTIPLE_MIDPOINTS on crowded buckets), whether every bucket holds at most one midpoint
    (then the one-lookup search is exact everywhere), and the zero code (the code of y = 0)."""

    def __init__(self, code):
        exact_midpoints = (code[:-1].astype(np.float64) + code[1:].astype(np.float64)) / 2  # exact in float64
        rounded = exact_midpoints.astype(f32)
        rounded = np.where(rounded.astype(np.float64) > exact_midpoints,
                           np.nextafter(rounded, f32(-np.inf)), rounded)  # down, so y > it <=> y > the midpoint
        self.midpoints = np.append(rounded, f32(np.inf)).astype(f32)
        tops = np.arange(TABLE_SIZE, dtype=np.uint32) << np.uint32(16)
        low_end = tops.view(f32)
        high_end = (tops | np.uint32(0xFFFF)).view(f32)
        with np.errstate(invalid="ignore"):
            smallest = np.where(tops >> np.uint32(31) == 1, high_end, low_end)  # negatives grow with the bits
            largest = np.where(tops >> np.uint32(31) == 1, low_end, high_end)
        # Buckets of the exponent field 0xFF hold +-inf (only their first) and NaNs. Arithmetic
        # only makes quiet NaNs (never in the inf buckets), which take the zero code, as NaN > m
        # is false; +-inf take the code of +-inf, 255 or 0.
        infinite = np.isinf(low_end)
        nan_bucket = np.isnan(low_end)
        smallest = np.where(infinite, low_end, smallest)
        largest = np.where(infinite, low_end, largest)
        self.zero_code = int(np.searchsorted(self.midpoints[:-1], f32(0.0), side="left"))
        first = np.searchsorted(self.midpoints[:-1], np.where(nan_bucket, 0, smallest), side="left")
        last = np.searchsorted(self.midpoints[:-1], np.where(nan_bucket, 0, largest), side="left")
        first = np.where(nan_bucket, self.zero_code, first)
        crowded = (last - first > 1) & ~nan_bucket
        # the one midpoint inside a bucket (when last == first + 1) is midpoints[first]
        inside = (last - first == 1) & ~nan_bucket
        midpoint_bits = self.midpoints[np.minimum(first, CODES - 1)].view(np.uint32)
        negative = (midpoint_bits >> np.uint32(31)).astype(bool)
        key = np.where(negative, ~midpoint_bits, midpoint_bits) & np.uint32(0xFFFF)
        key = np.where(inside, key, NO_MIDPOINT_KEY).astype(np.int64)
        self.table = (first | (key << 8) | np.where(crowded, MULTIPLE_MIDPOINTS, 0)).astype(np.int32)
        self.single_compare = not crowded.any()


_TABLES_LOCK = threading.Lock()


@functools.lru_cache(maxsize=32)
def _tables_for_bytes(code_bytes):
    return SearchTables(np.frombuffer(code_bytes, dtype=f32))


def search_tables(code):
    """The SearchTables of a checked codebook, built once per distinct codebook (an LRU cache of
    32, keyed by the code's bytes; the lock keeps two threads from building the same one twice)."""
    with _TABLES_LOCK:
        return _tables_for_bytes(code.tobytes())

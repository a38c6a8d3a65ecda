"""The test inputs shared by the suites: the awkward arrays of every row family, the accuracy
data sets, and arrays placed against guard pages. The references are in tests/oracle.py.

Row lengths come from the loop tiles each family's C kernels export for each ISA
(_bindings.tiles: vector lanes, then vectors per trip times lanes, csrc/tiles.h) and from the
Numba twins' own block constants, never from copies of them: a row of length n takes another
path through a loop around every multiple of each tile.
"""
import numpy as np

from softmaxlib import _bindings, _catalog, _dispatch
from softmaxlib._numba import _rows as numba_rows

# ------------------------------------------------------------------ tiles and row lengths


def tiles(family):
    """{isa: [lanes, trip, ...]} of a family's C kernels, in elements ({} without the C kernels)."""
    if _dispatch.lib is None:
        return {}
    return {isa: _bindings.tiles(family, isa) for isa in _catalog.ISAS}


def lanes_and_trips():
    """(vector widths, trip lengths in vectors) over every family and ISA."""
    lanes, trips = set(), set()
    for family in _catalog.FAMILIES:
        for sizes in tiles(family).values():
            lanes.add(sizes[0])
            trips.update(tile // sizes[0] for tile in sizes)
    return sorted(lanes), sorted(trips)


NUMBA_BLOCK = numba_rows.BLOCK  # elements per block of the Numba twins
LONG_ROW = 100_000


def row_lengths(family, long=True):
    """The row lengths a family's kernels handle differently: empty, every masked tail up to two
    vectors of each ISA, one below, at and above one and two of every tile, a trip followed by
    single vectors and a tail, around the Numba twins' block; with `long`, several blocks and
    trips with a tail, and LONG_ROW."""
    lengths = {0}
    for sizes in tiles(family).values():
        lanes, trip = sizes[0], max(sizes)
        lengths |= set(range(1, 2 * lanes + 2))
        lengths |= {k * tile + d for tile in sizes for k in (1, 2) for d in (-1, 0, 1)}
        lengths.add(trip + 2 * lanes + 3)
    lengths |= set(range(1, 2 * numba_rows.LANES + 2))
    lengths |= {NUMBA_BLOCK - 1, NUMBA_BLOCK, NUMBA_BLOCK + 1}
    if long:
        trip = max((max(sizes) for sizes in tiles(family).values()), default=1)
        lengths |= {4 * NUMBA_BLOCK + trip + 3, LONG_ROW}
    return sorted(lengths)


# ------------------------------------------------------------------ awkward arrays


def normal(shape, rng):
    return rng.standard_normal(shape).astype(np.float32)


def misaligned(a, offset=1):
    """A copy of `a` (C order) at `offset` bytes past an aligned address: not at a multiple of its
    item size (for offset 1), as NumPy allows."""
    a = np.asarray(a)
    storage = np.empty(a.nbytes + 64 + offset, np.uint8)
    start = -storage.ctypes.data % 64 + offset
    array = np.ndarray(a.shape, a.dtype, buffer=storage, offset=start)
    array[...] = a
    return array


def byteswapped(a):
    """`a` with the other byte order (same values)."""
    a = np.asarray(a)
    return a.astype(a.dtype.newbyteorder("S"))


def read_only(a, frozen_memory=False):
    """`a` made read-only: by its flag, or (frozen_memory) as a view of immutable bytes."""
    if frozen_memory:
        return np.frombuffer(np.ascontiguousarray(a).tobytes(), a.dtype).reshape(a.shape)
    a = np.array(a, copy=True)
    a.flags.writeable = False
    return a


def float32_layouts(family, long=True):
    """(id, make(rng) -> float32 array, axis) for every layout and axis of the zoo, with the row
    lengths of `family` (row_lengths): strided and negative-stride views, F order, 0-d to 4-d shapes
    and every axis (also negative), empty arrays, byte-swapped, misaligned and read-only arrays."""
    cases = [(f"rows3xn{n}", (lambda rng, n=n: normal((3, n), rng)), -1) for n in row_lengths(family, long)]
    cases += [
        ("1d_n1", lambda rng: normal((1,), rng), 0),
        ("1d_n37", lambda rng: normal((37,), rng), -1),
        ("1d_n37_axis0", lambda rng: normal((37,), rng), 0),
        ("0d", lambda rng: np.float32(rng.standard_normal()), -1),
        ("0d_array_axis0", lambda rng: np.array(rng.standard_normal(), dtype=np.float32), 0),
        ("zero_rows", lambda rng: normal((0, 5), rng), -1),
        ("zero_rows_axis0", lambda rng: normal((0, 5), rng), 0),
        ("strided_cols", lambda rng: normal((5, 2 * 37), rng)[:, ::2], -1),
        ("strided_cols_axis0", lambda rng: normal((19, 2 * 6), rng)[:, ::2], 0),
        ("strided_rows", lambda rng: normal((2 * 5, 21), rng)[::2], -1),
        ("negative_stride_cols", lambda rng: normal((4, 33), rng)[:, ::-1], -1),
        ("negative_stride_rows", lambda rng: normal((4, 33), rng)[::-1], -1),
        ("negative_stride_both_axis0", lambda rng: normal((35, 9), rng)[::-1, ::-3], 0),
        ("negative_stride_1d", lambda rng: normal((3 * 70,), rng)[::-3], 0),
        ("fortran_axis-1", lambda rng: np.asfortranarray(normal((6, 45), rng)), -1),
        ("fortran_axis0", lambda rng: np.asfortranarray(normal((45, 6), rng)), 0),
        ("fortran_axis-2", lambda rng: np.asfortranarray(normal((45, 6), rng)), -2),
        ("transposed_axis1", lambda rng: normal((17, 5), rng).T, 1),
        ("byteswapped", lambda rng: byteswapped(normal((3, 37), rng)), -1),
        ("byteswapped_axis0", lambda rng: byteswapped(normal((37, 3), rng)), 0),
        ("misaligned", lambda rng: misaligned(normal((3, 37), rng)), -1),
        ("misaligned_axis0", lambda rng: misaligned(normal((37, 3), rng)), 0),
        ("misaligned_by_a_float", lambda rng: misaligned(normal((2, 77), rng), offset=4), -1),
        ("read_only", lambda rng: read_only(normal((3, 37), rng)), -1),
        ("read_only_memory", lambda rng: read_only(normal((3, 37), rng), frozen_memory=True), -1),
    ]
    for axis in range(-3, 3):
        cases.append((f"3d_axis{axis}", lambda rng: normal((3, 17, 5), rng), axis))
    for axis in range(-4, 4):
        cases.append((f"4d_axis{axis}", lambda rng: normal((2, 3, 19, 4), rng), axis))
        cases.append((f"4d_fortran_axis{axis}", lambda rng: np.asfortranarray(normal((3, 2, 4, 18), rng)), axis))
        cases.append((f"4d_strided_axis{axis}", lambda rng: normal((2, 6, 5, 34), rng)[:, ::2, ::-1, ::2], axis))
    cases.append(("4d_empty_axis2", lambda rng: normal((2, 3, 0, 4), rng), 2))
    cases.append(("4d_empty_axis-1", lambda rng: normal((2, 0, 3, 4), rng), -1))
    return cases


# (id, make(rng, dtype) -> array of `dtype`'s values, axis): the layouts run with float64 and
# float16 input. byteswapped/misaligned/read-only: the same values, the result in native order.
DTYPE_LAYOUTS = [
    ("rows", lambda rng, dtype: rng.standard_normal((3, 37)).astype(dtype), -1),
    ("negative_stride", lambda rng, dtype: rng.standard_normal((3, 40)).astype(dtype)[:, ::-2], -1),
    ("fortran_axis0", lambda rng, dtype: np.asfortranarray(rng.standard_normal((3, 4, 17)).astype(dtype)), 0),
    ("4d_axis-3", lambda rng, dtype: rng.standard_normal((2, 3, 4, 5)).astype(dtype), -3),
    ("empty", lambda rng, dtype: rng.standard_normal((2, 0)).astype(dtype), -1),
    ("n1000", lambda rng, dtype: rng.standard_normal((2, 1000)).astype(dtype), -1),
    ("byteswapped", lambda rng, dtype: byteswapped(rng.standard_normal((3, 37)).astype(dtype)), -1),
    ("misaligned_axis0", lambda rng, dtype: misaligned(rng.standard_normal((37, 3)).astype(dtype)), 0),
    ("read_only", lambda rng, dtype: read_only(rng.standard_normal((3, 37)).astype(dtype)), -1),
]
OTHER_FLOAT_DTYPES = [np.float64, np.float16]
# integers and bool: converted to float64 (">i4": byte-swapped)
INTEGER_DTYPES = [np.bool_, np.int8, np.uint8, np.int16, np.int32, np.int64, np.uint64, ">i4"]


# ------------------------------------------------------------------ accuracy data sets

DISTRIBUTIONS = {
    "N(0,1)": lambda rng, shape: rng.standard_normal(shape, dtype=np.float32),
    "N(0,10)": lambda rng, shape: rng.standard_normal(shape, dtype=np.float32) * np.float32(10),
    "N(0,100)": lambda rng, shape: rng.standard_normal(shape, dtype=np.float32) * np.float32(100),
    "U(-1000,1000)": lambda rng, shape: rng.uniform(-1000, 1000, shape).astype(np.float32),
}
# n -> number of rows: enough rows for the small n to see their worst cases
SIZES = {1000: 64, 100_000: 4, 2**24: 1}


def make_rows(distribution, n):
    """The float32 test rows of one distribution and length, from a fixed seed."""
    seed = 1000 * list(DISTRIBUTIONS).index(distribution) + list(SIZES).index(n)
    return DISTRIBUTIONS[distribution](np.random.default_rng(seed), (SIZES[n], n))


# ------------------------------------------------------------------ guard pages

GUARDED_FLOATS = 3 * 4097  # the floats of each area of the `buffers` fixture (tests/conftest.py)


def guarded_buffer(data_bytes):
    """(mmap, uint8 view of the data pages) with a PROT_NONE page right before and after them.

    Self-contained (its source is also run by the subprocess of test_guard_page_faults).
    """
    import ctypes
    import ctypes.util
    import mmap

    import numpy as np

    page = mmap.PAGESIZE
    data_pages = max(1, -(-data_bytes // page))
    region = mmap.mmap(-1, (data_pages + 2) * page, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS,
                       prot=mmap.PROT_READ | mmap.PROT_WRITE)
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    libc.mprotect.restype = ctypes.c_int
    everything = np.frombuffer(region, dtype=np.uint8)
    base = everything.ctypes.data
    assert base % page == 0
    for guard in (base, base + (data_pages + 1) * page):
        if libc.mprotect(guard, page, 0) != 0:  # PROT_NONE
            raise OSError(ctypes.get_errno(), "mprotect failed")
    return region, everything[page:(data_pages + 1) * page]


def guarded_areas(count=2, floats=GUARDED_FLOATS):
    """`count` guarded float32 areas, each of whole pages holding `floats` floats. The mappings
    stay alive (numpy views export their buffers); they go with the process."""
    return [data.view(np.float32) for _, data in (guarded_buffer(floats * 4) for _ in range(count))]


def place(area, shape, where):
    """A C-contiguous float32 array of `shape` in `area`, ending at the trailing guard page or
    starting right after the leading one."""
    count = int(np.prod(shape))
    flat = area[area.size - count:] if where == "end" else area[:count]
    array = flat.reshape(shape)
    assert array.flags.c_contiguous and array.base is not None
    return array

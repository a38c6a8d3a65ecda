"""Shared by the atheris targets in this folder: inputs drawn from a FuzzedDataProvider, the memory
checks, and the comparisons that the documentation promises.

Every target draws a *case* (a plain recipe: dtype, shape, layout, byte offset, values, arguments)
and then materializes it afresh for each backend, so the backends see identical inputs. Arrays live
in bytearrays owned by an Arena: the Arena remembers every byte before the call and afterwards
checks that only the bytes of `out` (when it was passed) changed. That one check covers "x is never
modified unless it is out", "no write outside out" (canary bytes around and between out's
elements) and the aliasing cases (out is x, out overlapping x).

A broken promise raises Finding, and any exception type the documentation does not name escapes
TestOneInput: atheris stops and writes the input as a crash reproducer either way.
"""
import ctypes
import ctypes.util
import math
import mmap
import re
import sys

import numpy as np

import softmaxlib

BACKENDS = tuple(softmaxlib.backends())

# The documented exception types: TypeError and ValueError (numpy's AxisError, raised for an
# out-of-range axis, subclasses ValueError and IndexError).
DOCUMENTED_ERRORS = (TypeError, ValueError)

F32 = np.float32
FLT_MAX = float(np.finfo(np.float32).max)
FLT_MIN = float(np.finfo(np.float32).tiny)  # 2^-126
FLT_TRUE_MIN = float(np.finfo(np.float32).smallest_subnormal)
DBL_MAX = float(np.finfo(np.float64).max)
DBL_MIN = float(np.finfo(np.float64).tiny)
HALF_MAX = 65504.0

CANARY = 0xA5  # the byte around and between out's elements
OUT_FILL = 0x5A  # out's own bytes before the call

# Values where the kernels change behaviour: the exp cutoff (-87.33654), 2^20 (the two-pass pairs),
# +-FLT_MAX, +-DBL_MAX, float16's max, subnormals, 2^125 (StableMax's double path), the collapse bands.
SPECIALS = [
    math.nan, -math.nan, math.inf, -math.inf, 0.0, -0.0, 1.0, -1.0, 2.0, 0.5, 3.0, -3.0, 1e-3,
    FLT_MAX, -FLT_MAX, FLT_MIN, -FLT_MIN, FLT_TRUE_MIN, -FLT_TRUE_MIN, 1e-40, -1e-40,
    DBL_MAX, -DBL_MAX, DBL_MIN, 5e-324, -5e-324, 1e300, -1e300, 1.7e308, -1.7e308,
    HALF_MAX, -HALF_MAX, 6.1e-5, 6e-8, 65520.0,
    2.0**20, -(2.0**20), 2.0**20 + 1, -(2.0**20 + 1), 2.0**20 - 0.5, -(2.0**20 - 0.5),
    2.0**24, 2.0**125, -(2.0**125), -(2.0**126), 2.0**100, -(2.0**100),
    1e30, -1e30, 3.4e38, -3.4e38, 88.72, 88.73, -87.33654, -87.336544, -87.3365, -87.0, -87.5, -88.0,
    -100.0, -104.0, 709.78, 710.0, -745.0, -740.0, 745.2, 1e4, -1e4, 3.3e4, 1e5, 16.64, 21.35, -1e38,
]
SCALES = [1.0, 1.0, 10.0, 100.0, 1e3, 1e4, 2.0**20, 1e6, 1e10, 1e30, 1e38, 1e300]

FLOAT_DTYPES = [np.dtype(t) for t in ("<f4", "<f4", "<f4", "<f4", "<f8", "<f8", "<f2", ">f4", ">f8", ">f2")]
OTHER_DTYPES = [np.dtype(t) for t in ("<i1", "<i2", "<i4", "<i8", "<u1", "<u2", "<u4", "<u8", ">i4", ">u8", "?")]
UNSUPPORTED_DTYPES = [np.dtype(t) for t in ("<c8", "<c16", "O", "<U2", "<M8[s]")]


class Finding(AssertionError):
    """A broken documented promise (or a crash-like condition) found by a fuzz target."""


def expect(condition, message):
    """Raises Finding(message) unless condition; message may be a callable (built only on failure)."""
    if not condition:
        raise Finding(message() if callable(message) else message)




# ---------------------------------------------------------------- drawing values


def pick(fdp, options):
    return options[fdp.ConsumeIntInRange(0, len(options) - 1)]


def draw_dtype(fdp, unsupported=True):
    roll = fdp.ConsumeIntInRange(0, 99)
    if roll < 78:
        return pick(fdp, FLOAT_DTYPES)
    if roll < 95 or not unsupported:
        return pick(fdp, OTHER_DTYPES)
    return pick(fdp, UNSUPPORTED_DTYPES)


def draw_shape(fdp, max_ndim=3, min_ndim=0):
    ndim = fdp.ConsumeIntInRange(min_ndim, max_ndim)
    shape = []
    for i in range(ndim):
        roll = fdp.ConsumeIntInRange(0, 15)
        if roll == 0:
            shape.append(0)
        elif roll < 4:
            shape.append(1)
        elif roll < 13:
            shape.append(fdp.ConsumeIntInRange(2, 9))
        else:  # a longer row: vector tails, the 4-vector unroll (AVX2: 32, AVX-512: 64)
            shape.append(fdp.ConsumeIntInRange(10, 70 if ndim == 1 else 40))
    return tuple(shape)


def _one_value(fdp):
    kind = fdp.ConsumeIntInRange(0, 9)
    if kind <= 2:
        return pick(fdp, SPECIALS)
    if kind == 3:
        return float(fdp.ConsumeIntInRange(-30, 30))
    return fdp.ConsumeFloatInRange(-1.0, 1.0) * pick(fdp, SCALES)


def draw_values(fdp, dtype, count):
    """`count` values of `dtype` (any byte order), bit patterns included: NaN payloads, signalling
    NaNs, subnormals, and for integer dtypes their whole range. Returned in `dtype` itself."""
    native = dtype.newbyteorder("=") if dtype.byteorder not in ("|", "=") else dtype
    if dtype.kind not in "fiub":
        raise ValueError(dtype)
    mode = fdp.ConsumeIntInRange(0, 7)
    values = np.zeros(count, native)
    raw = values.view(np.uint8).reshape(count, native.itemsize)
    constant = None
    if mode == 0 and count:  # a constant array
        constant = _one_value(fdp)
    with np.errstate(all="ignore"):
        for i in range(count):
            if constant is not None:
                value = constant
            elif mode == 1 and i and fdp.ConsumeIntInRange(0, 3):  # mostly a repeat of the first
                values[i] = values[0]
                continue
            elif fdp.ConsumeIntInRange(0, 11) == 0:  # raw bits
                bits = fdp.ConsumeBytes(native.itemsize).ljust(native.itemsize, b"\0")
                raw[i] = np.frombuffer(bits, np.uint8)
                if native.kind == "b":
                    raw[i] &= 1
                continue
            else:
                value = _one_value(fdp)
            if native.kind == "f":
                values[i] = value
            elif native.kind == "b":
                values[i] = bool(value == value and value != 0)
            else:
                info = np.iinfo(native)
                values[i] = int(min(max(value, info.min), info.max)) if value == value else 0
    if native != dtype:
        values = values.byteswap().view(dtype)
    return values


# ---------------------------------------------------------------- placing arrays in memory


class Layout:
    """Where an array's elements go inside a fresh bytearray: a transpose (perm), a step per axis
    (negative steps included), padding elements around the base, and a byte offset 0..7 that
    misaligns every element."""

    def __init__(self, fdp, ndim, plain=False):
        self.perm = list(range(ndim))
        self.steps = [1] * ndim
        self.pad = (0, 0)
        self.offset = 0
        self.readonly = False
        self.guard = None
        if plain:
            return
        style = fdp.ConsumeIntInRange(0, 7)
        if style & 1 and ndim > 1:
            for i in range(ndim - 1, 0, -1):
                j = fdp.ConsumeIntInRange(0, i)
                self.perm[i], self.perm[j] = self.perm[j], self.perm[i]
        if style & 2:
            self.steps = [pick(fdp, (1, 1, 2, -1, -2, 3, -3)) for _ in range(ndim)]
        if style & 4:
            self.offset = fdp.ConsumeIntInRange(0, 7)
        self.pad = (fdp.ConsumeIntInRange(0, 3), fdp.ConsumeIntInRange(0, 3))
        # against a PROT_NONE page: any read or write past the end ("end") or before the start
        # ("start") of the buffer kills the process (reported by atheris as a crash)
        self.guard = pick(fdp, (None, None, None, "end", "start"))

    def describe(self):
        return f"perm={self.perm} steps={self.steps} pad={self.pad} offset={self.offset} guard={self.guard}"


class Arena:
    """The bytearrays a call can see. snapshot() remembers their bytes; check(out) then requires
    every byte outside out's elements to be unchanged."""

    def __init__(self):
        self.buffers = []
        self.before = None

    def buffer(self, nbytes, fill, guard=None):
        if guard is None:
            buffer = bytearray([fill]) * max(nbytes, 1)
        else:
            buffer = guarded_bytes(max(nbytes, 1), guard)
            buffer[:] = fill
        self.buffers.append(buffer)
        return buffer

    def place(self, shape, dtype, layout, fill=CANARY):
        """A view of `shape` and `dtype` laid out as `layout` in a new buffer filled with `fill`."""
        dtype = np.dtype(dtype)
        base_shape = [shape[axis] * abs(layout.steps[axis]) for axis in layout.perm]
        count = int(np.prod(base_shape, dtype=np.int64))
        before, after = layout.pad
        if layout.guard == "end":
            after = 0
        elif layout.guard == "start":
            before = 0
        total = before + count + after
        nbytes = layout.offset + total * dtype.itemsize
        if layout.guard == "end" and count:  # the offset goes before the data, which ends at the guard
            buffer = self.buffer(nbytes, fill, "end")
        else:
            buffer = self.buffer(nbytes, fill, layout.guard)
        flat = np.frombuffer(buffer, dtype=dtype, count=total, offset=layout.offset)
        base = flat[before:before + count].reshape(base_shape)
        view = base[tuple(slice(None, None, layout.steps[axis]) for axis in layout.perm)] if shape else base
        view = view.transpose(np.argsort(layout.perm)) if len(shape) > 1 else view
        assert view.shape == tuple(shape), (view.shape, shape)
        return view

    def snapshot(self):
        self.before = [bytes(buffer) for buffer in self.buffers]

    def changed(self, *writable):
        """Descriptions of the bytes that changed outside the elements of the `writable` arrays
        (None and anything that is not an array are ignored)."""
        problems = []
        arrays = [a for a in writable if isinstance(a, np.ndarray)]
        allowed = np.concatenate([element_bytes(a) for a in arrays]) if arrays else None
        for buffer, before in zip(self.buffers, self.before):
            now = np.frombuffer(buffer, np.uint8)
            old = np.frombuffer(before, np.uint8)
            diff = now != old
            if allowed is not None:
                start = now.ctypes.data
                inside = allowed[(allowed >= start) & (allowed < start + now.size)] - start
                diff[inside] = False
            if diff.any():
                where = np.flatnonzero(diff)
                problems.append(f"{where.size} byte(s) changed at buffer offsets {where[:8].tolist()} "
                                f"(buffer of {now.size} bytes)")
        return problems


_PAGE = mmap.PAGESIZE
_libc = None


def guarded_bytes(nbytes, where):
    """A writable uint8 array of nbytes whose end ("end") or start ("start") touches a PROT_NONE
    page (anonymous mmap, libc's mprotect), so that an access past it faults."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        _libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        _libc.mprotect.restype = ctypes.c_int
    pages = -(-nbytes // _PAGE)
    region = mmap.mmap(-1, (pages + 2) * _PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS,
                       prot=mmap.PROT_READ | mmap.PROT_WRITE)
    everything = np.frombuffer(region, np.uint8)
    base = everything.ctypes.data
    for guard in (base, base + (pages + 1) * _PAGE):
        if _libc.mprotect(guard, _PAGE, 0) != 0:
            raise OSError(ctypes.get_errno(), "mprotect failed")
    data = everything[_PAGE:(pages + 1) * _PAGE]
    # (the region stays mapped while a view of it lives; the guard pages are never read)
    return data[data.size - nbytes:] if where == "end" else data[:nbytes]


def element_bytes(array):
    """The absolute addresses of every byte of `array`'s elements."""
    start = array.__array_interface__["data"][0]
    offsets = np.zeros((), np.int64)
    for dim, stride in zip(array.shape, array.strides):
        offsets = offsets[..., None] + np.arange(dim, dtype=np.int64) * stride
    offsets = offsets.reshape(-1) + start
    return (offsets[:, None] + np.arange(array.dtype.itemsize)).reshape(-1)


# ---------------------------------------------------------------- comparing results


def bits(array):
    """The bytes of an array's elements in C order, native byte order (for bit-for-bit equality)."""
    array = np.asarray(array)
    native = array.astype(array.dtype.newbyteorder("="), copy=True) if array.dtype.byteorder == ">" else array
    return np.ascontiguousarray(native).tobytes()


def same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype.newbyteorder("=") == b.dtype.newbyteorder("=") and bits(a) == bits(b)


def same_values(a, b):
    """Equal bits, except that any two NaNs count as equal (their sign and payload are unspecified)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype.newbyteorder("=") != b.dtype.newbyteorder("="):
        return False
    if a.dtype.kind != "f":
        return bits(a) == bits(b)
    nan_a, nan_b = np.isnan(a), np.isnan(b)
    if not np.array_equal(nan_a, nan_b):
        return False
    return bits(np.where(nan_a, 0, a).astype(a.dtype)) == bits(np.where(nan_b, 0, b).astype(b.dtype))


def first_difference(a, b):
    a, b = np.atleast_1d(np.asarray(a)), np.atleast_1d(np.asarray(b))
    if a.shape != b.shape:
        return f"shapes {a.shape} and {b.shape}"
    with np.errstate(invalid="ignore"):
        differ = ~((a == b) | (np.isnan(a) & np.isnan(b))) | (np.signbit(a) != np.signbit(b))
    if not differ.any():
        return "NaN bits differ"
    index = tuple(int(i) for i in np.argwhere(differ)[0])
    return f"first at {index}: {a[index]!r} vs {b[index]!r}"


def ulps32(value, reference):
    """|value - reference| in float32 ULPs of the reference (its float32 spacing)."""
    spacing = np.spacing(np.abs(reference).astype(np.float32)).astype(np.float64)
    with np.errstate(all="ignore"):
        return np.abs(np.asarray(value, np.float64) - reference) / spacing


def as_float64(array, work):
    """array's values as the kernels see them (converted to the work dtype), in float64."""
    with np.errstate(all="ignore"):
        return np.asarray(array).astype(work).astype(np.float64)


def short(array, limit=12):
    flat = np.asarray(array).reshape(-1)
    text = np.array2string(flat[:limit], precision=9, separator=", ")
    return text + (f" ... ({flat.size} values)" if flat.size > limit else "")


def describe_array(x):
    if not isinstance(x, np.ndarray):
        return f"{type(x).__name__} {str(x)[:200]}"
    return (f"dtype={x.dtype} shape={x.shape} strides={x.strides} addr%64={x.ctypes.data % 64} "
            f"writeable={x.flags.writeable} values={short(x)}")


ERROR_INDEX = re.compile(r"x\[([0-9, ]*)\] is")


def warm_up_row_ops(ops, then):
    """Compiles (or loads) the Numba kernels of ops, and of then(x, backend), before the fuzzer's
    clock starts: float32 and float64, writable and read-only (Numba compiles a specialization
    for read-only arrays)."""
    for backend in BACKENDS:
        for dtype, readonly in ((np.float32, False), (np.float64, False), (np.float32, True), (np.float64, True)):
            x = np.ones((2, 3), dtype)
            x.flags.writeable = not readonly
            for op in ops:
                op(x, backend=backend)
            then(x, backend)


def fuzz(test_one_input, warm_up):
    """libFuzzer over test_one_input with the command line's flags, once warm_up() has run."""
    import atheris

    warm_up()
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()

"""Argument handling shared by every row-wise public function.

The kernels see only C-contiguous arrays of float32 or float64 with rows along the last axis.
Each public row function first tries its fast path (fast_path(): an ndarray of native float32,
C-contiguous, reduced along the last axis, on the default backend, which goes straight to the
C kernel bound once); everything else takes the general path (apply_rows()), which turns any
array, axis, dtype and `out=` into that, following NumPy's conventions, and puts the result
back where the user asked.
"""
import operator
import sys

import numpy as np

from . import _auto, _bindings, _catalog, _dispatch, _threads

try:
    from numpy.exceptions import AxisError
except ImportError:  # NumPy < 1.25
    from numpy import AxisError


_COMPUTE_DTYPES = {}  # input dtype -> compute_dtype's answer, to skip its dtype arithmetic per call


def compute_dtype(dtype):
    """(dtype the kernel computes in, dtype of the result) for an input dtype.

    float32 and float64 compute in themselves; float16 computes in float32 and
    returns float16; integers and bool become float64, as in SciPy. Byte order
    does not matter: results are in native order.
    """
    if dtype.metadata is not None:  # == and hash ignore metadata: such a dtype must not be cached
        return _compute_dtype(dtype)
    dtypes = _COMPUTE_DTYPES.get(dtype)
    if dtypes is None:
        dtypes = _COMPUTE_DTYPES[dtype] = _compute_dtype(dtype)
    return dtypes


def _compute_dtype(dtype):
    if dtype.kind == "f" and dtype.itemsize in (2, 4, 8):
        native = dtype.newbyteorder("=")
        return (np.dtype(np.float32) if dtype.itemsize == 2 else native), native
    if dtype.kind in "biu":
        return np.dtype(np.float64), np.dtype(np.float64)
    if dtype.kind == "f":
        raise TypeError(f"softmaxlib supports float16, float32 and float64, not {dtype}")
    raise TypeError(f"softmaxlib needs a real floating, integer or bool array, not dtype {dtype}")


def normalize_axis(axis, ndim):
    if type(axis) is not int:  # the common case first: a plain int needs no conversion
        try:
            if isinstance(axis, bool):  # an int to Python, but NumPy refuses a bool axis, and so do we
                raise TypeError
            axis = operator.index(axis)
        except TypeError:
            raise TypeError(f"axis must be an integer, not {type(axis).__name__}") from None
    axes = ndim if ndim > 0 else 1  # a 0-d array is one row of one element
    if not -axes <= axis < axes:
        raise AxisError(f"axis {axis} is out of bounds for an array of dimension {ndim}")
    return axis % axes


def check_out(out, shape, dtype):
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a NumPy array, not {type(out).__name__}")
    if out.shape != shape:
        raise ValueError(f"out has shape {out.shape}, but the result has shape {shape}")
    if out.dtype != dtype:
        raise ValueError(f"out has dtype {out.dtype}, but the result has dtype {dtype}")
    if not out.flags.writeable:
        raise ValueError("out is read-only; it must be writable")


def _checked_arguments(x, axis, backend):
    """(backend, x as an array, compute dtype, result dtype, axis in [0, ndim)), or the error."""
    backend = _dispatch.resolve(backend)
    x = np.asarray(x)
    work_dtype, result_dtype = compute_dtype(x.dtype)
    return backend, x, work_dtype, result_dtype, normalize_axis(axis, x.ndim)


FLOAT32 = np.dtype(np.float32)
# The fast path's allocating calls run in place on a copy of x up to this many elements. Measured
# on Zen 4 (one row, ns per call): x.copy() + one buffer costs 354 at n = 16, 518 at 1000 and 556
# at 2048, against 646, 733 and 720 for np.empty_like(x) + two buffers; at 4096 the copy costs
# more (838 against 735).
COPY_IN_PLACE_UP_TO = 2048


def fast_path(choice):
    """f(x, axis, out, workers): the result for the common case, else None (take apply_rows).

    choice: the catalog kernel id of a public function, or its auto choice, a function
    backend -> (id in cache, id beyond or None, crossover), resolved once here for the default
    backend. crossover: an int, the longest row in elements that runs `in cache`; or an
    _auto.Crossover, resolved on first use: rows of at most its `short` elements run in cache
    with no look-up, longer ones run `beyond` if its runs_beyond(n, rows, threads) says so
    for _auto.deciding_threads(), whatever the call's workers (the probe of the auto path, once
    per process).

    The common case is an ndarray of native float32, C-contiguous and
    aligned, with at least one element, reduced along its last axis, and out None or a
    float32 array of its shape, C-contiguous, aligned, writable, and x itself or not
    overlapping it. The general path gives the same results; this one skips its checks and
    conversions, which cost several times the kernel on short rows (docs/benchmarks.md)."""
    backend = _dispatch.DEFAULT_BACKEND
    if backend == "numba":
        return lambda x, axis, out, workers: None
    in_cache, beyond, crossover = choice(backend) if callable(choice) else (choice, None, None)
    ffi = _dispatch.ffi
    small, small_streaming = _bindings.row_functions(_catalog.KERNELS[in_cache], backend)
    large, large_streaming = _bindings.row_functions(_catalog.KERNELS[beyond or in_cache], backend)
    if not beyond:
        short, runs_beyond = sys.maxsize, None
    elif isinstance(crossover, int):
        short, runs_beyond = crossover, None  # rows longer than this run `beyond`
    else:
        short, runs_beyond = crossover.short, crossover.runs_beyond
    stream_above = _dispatch.STREAM_ABOVE_BYTES // 4  # in float32 elements of y
    copy_up_to = COPY_IN_PLACE_UP_TO
    default_threads, resolve_workers, deciding_threads = _threads.DEFAULT, _threads.resolve, _auto.deciding_threads
    from_buffer, floats, ndarray, empty_like, may_share_memory = \
        ffi.from_buffer, _bindings.FLOATS, np.ndarray, np.empty_like, np.may_share_memory

    def fast(x, axis, out, workers):
        if type(x) is not ndarray or x.dtype is not FLOAT32 or type(axis) is not int:
            return None
        shape = x.shape
        if not shape or (axis != -1 and axis != len(shape) - 1):
            return None
        flags = x.flags
        size = x.size
        if not (flags.c_contiguous and flags.aligned and size):
            return None
        n = shape[-1]
        threads = default_threads[0] if workers is None else resolve_workers(workers)
        if n > short and (runs_beyond is None or runs_beyond(n, size // n, deciding_threads())):
            function = large_streaming if size > stream_above else large
        else:
            function = small_streaming if size > stream_above else small
        if out is None:
            if size <= copy_up_to:
                # in place on a copy of x: a copy costs less than an empty array and the second
                # buffer (ffi.from_buffer) it would need
                y = x.copy()
                y_buffer = from_buffer(floats, y)
                function(size // n, n, y_buffer, y_buffer, threads)
                return y
            y = empty_like(x)
        elif type(out) is ndarray and out.dtype is FLOAT32 and out.shape == shape:
            flags = out.flags
            if not (flags.c_contiguous and flags.aligned and flags.writeable):
                return None
            if out is x:  # in place: one buffer
                y_buffer = from_buffer(floats, x)
                function(size // n, n, y_buffer, y_buffer, threads)
                return x
            if may_share_memory(out, x):
                return None
            y = out
        else:
            return None
        function(size // n, n, from_buffer(floats, x), from_buffer(floats, y), threads)
        return y

    return fast


def apply_rows(operation, x, axis, out, backend, workers=None):
    """Runs catalog kernel `operation` along `axis` of x with at most `workers` threads (as the
    public functions' argument); returns the result (out if given).

    `operation` is a kernel id, or a function (backend, n, rows, threads) -> id choosing one by
    the row length n, the number of rows and the thread count (the auto path)."""
    threads = _threads.resolve(workers)
    backend, x, work_dtype, result_dtype, axis = _checked_arguments(x, axis, backend)
    if out is not None:
        check_out(out, x.shape, result_dtype)
    if x.ndim == 0:  # a 0-d input is one row of one element
        result = apply_rows(operation, x.reshape(1), -1, None, backend, threads).reshape(())
        if out is None:
            return result
        out[...] = result
        return out

    # Rows along the last axis: a transposed view, when needed.
    last = axis == x.ndim - 1
    rows_view = x if last else axis_to_last(x, axis)
    # The kernels never modify their input, so a contiguous x is used as is.
    x_rows = np.ascontiguousarray(rows_view, dtype=work_dtype)
    target = None if out is None else (out if last else axis_to_last(out, axis))
    if target is not None and target.dtype == work_dtype and target.flags.c_contiguous and (
        not np.may_share_memory(target, x_rows) or _same_data(target, x_rows)
    ):
        y_rows = target  # write straight into out, in place when out is x
    else:
        y_rows = np.empty(x_rows.shape, dtype=work_dtype)
    n = x_rows.shape[-1]
    if x_rows.size:
        kernel_id = operation(backend, n, x_rows.size // n, threads) if callable(operation) else operation
        _bindings.bound(kernel_id, backend, work_dtype)(x_rows, y_rows, threads)
    if y_rows is target:
        return out
    if result_dtype is not work_dtype:
        # Casting to float16 may overflow to -inf (log-softmax of a wide row): that is
        # the correctly rounded result, not an error worth a warning.
        with np.errstate(over="ignore"):
            y_rows = y_rows.astype(result_dtype)
    if target is None:
        return y_rows if last else last_to_axis(y_rows, axis)
    target[...] = y_rows
    return out


def axis_to_last(a, axis):
    """The view of `a` with `axis` moved last, as np.moveaxis (which costs microseconds more)."""
    if a.ndim == 2:  # the common case, axis 0 of a matrix
        return a.T
    order = list(range(a.ndim))
    order.append(order.pop(axis))
    return a.transpose(order)


def last_to_axis(a, axis):
    """The inverse of axis_to_last."""
    if a.ndim == 2:
        return a.T
    order = list(range(a.ndim - 1))
    order.insert(axis, a.ndim - 1)
    return a.transpose(order)


def _same_data(a, b):
    """Whether two C-contiguous arrays of one shape and dtype are the same memory."""
    return a.__array_interface__["data"][0] == b.__array_interface__["data"][0]


def reduce_rows(reduction, x, axis, backend, workers=None):
    """Runs the catalog's pair reduction along `axis` of x with at most `workers` threads.

    Returns (mantissa, exponent), float64 arrays of x's shape without `axis`,
    and the result dtype of x (for callers that turn the pair into a value).
    """
    threads = _threads.resolve(workers)
    if backend is None and type(x) is np.ndarray and x.dtype is FLOAT32 and type(axis) is int and x.ndim and \
            (axis == -1 or axis == x.ndim - 1) and x.flags.c_contiguous:  # the common case, as fast_path
        mantissa = np.empty(x.shape[:-1])
        exponent = np.empty(x.shape[:-1])
        if mantissa.size:
            _bindings.bound(reduction, _dispatch.DEFAULT_BACKEND, FLOAT32)(x, mantissa, exponent, threads)
        return mantissa, exponent, FLOAT32
    backend, x, work_dtype, result_dtype, axis = _checked_arguments(x, axis, backend)
    rows_view = x.reshape(1) if x.ndim == 0 else x if axis == x.ndim - 1 else axis_to_last(x, axis)
    x_rows = np.ascontiguousarray(rows_view, dtype=work_dtype)
    n = x_rows.shape[-1]
    mantissa = np.empty(x_rows.shape[:-1])
    exponent = np.empty(x_rows.shape[:-1])
    if mantissa.size:
        _bindings.bound(reduction, backend, work_dtype)(x_rows, mantissa, exponent, threads)
    return mantissa, exponent, result_dtype

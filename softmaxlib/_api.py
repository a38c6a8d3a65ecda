"""Argument handling shared by every row-wise public function.

The kernels see only (rows, n) C-contiguous arrays of float32 or float64.
This module turns any array, axis, dtype and `out=` into that, following
NumPy's conventions, and puts the result back where the user asked.
"""
import contextlib
import operator

import numpy as np

from . import _dispatch, _registry

try:
    from numpy.exceptions import AxisError
except ImportError:  # NumPy < 1.25
    from numpy import AxisError


def compute_dtype(dtype):
    """(dtype the kernel computes in, dtype of the result) for an input dtype.

    float32 and float64 compute in themselves; float16 computes in float32 and
    returns float16; integers and bool become float64, as in SciPy. Byte order
    does not matter: results are in native order.
    """
    if dtype.kind == "f" and dtype.itemsize in (2, 4, 8):
        native = dtype.newbyteorder("=")
        return (np.dtype(np.float32) if dtype.itemsize == 2 else native), native
    if dtype.kind in "biu":
        return np.dtype(np.float64), np.dtype(np.float64)
    if dtype.kind == "f":
        raise TypeError(f"softmaxlib supports float16, float32 and float64, not {dtype}")
    raise TypeError(f"softmaxlib needs a real floating, integer or bool array, not dtype {dtype}")


def normalize_axis(axis, ndim):
    try:
        axis = operator.index(axis)
    except TypeError:
        raise TypeError(f"axis must be an integer, not {type(axis).__name__}") from None
    if not -max(ndim, 1) <= axis < max(ndim, 1):
        raise AxisError(f"axis {axis} is out of bounds for an array of dimension {ndim}")
    return axis % max(ndim, 1)


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


def apply_rows(operation, x, axis, out, backend):
    """Runs the registry's `operation` along `axis` of x; returns the result (out if given).

    `operation` is a registry name, or a function (backend, n) -> name choosing one by the
    row length n (the auto path)."""
    backend, x, work_dtype, result_dtype, axis = _checked_arguments(x, axis, backend)
    if out is not None:
        check_out(out, x.shape, result_dtype)
    if x.ndim == 0:  # a 0-d input is one row of one element
        result = apply_rows(operation, x.reshape(1), -1, None, backend).reshape(())
        if out is None:
            return result
        out[...] = result
        return out

    # Rows along the last axis; np.moveaxis costs microseconds, so only when needed.
    last = axis == x.ndim - 1
    rows_view = x if last else np.moveaxis(x, axis, -1)
    # The kernels never modify their input, so a contiguous x is used as is.
    x_rows = np.ascontiguousarray(rows_view, dtype=work_dtype)
    target = None if out is None else (out if last else np.moveaxis(out, axis, -1))
    if target is not None and target.dtype == work_dtype and target.flags.c_contiguous and (
        not np.may_share_memory(target, x_rows) or _same_data(target, x_rows)
    ):
        y_rows = target  # write straight into out, in place when out is x
    else:
        y_rows = np.empty(x_rows.shape, dtype=work_dtype)
    n = x_rows.shape[-1]
    if x_rows.size:
        name = operation(backend, n) if callable(operation) else operation
        kernel = _registry.row_kernel(name, backend, work_dtype)
        kernel(x_rows.reshape(-1, n), y_rows.reshape(-1, n))
    if y_rows is target:
        return out
    # Casting to float16 may overflow to -inf (log-softmax of a wide row): that is
    # the correctly rounded result, not an error worth a warning.
    with np.errstate(over="ignore") if result_dtype == np.float16 else contextlib.nullcontext():
        if target is None:
            result = y_rows.astype(result_dtype, copy=False)
            return result if last else np.moveaxis(result, -1, axis)
        target[...] = y_rows
    return out


def _same_data(a, b):
    """Whether two C-contiguous arrays of one shape and dtype are the same memory."""
    return a.__array_interface__["data"][0] == b.__array_interface__["data"][0]


def reduce_rows(reduction, x, axis, backend):
    """Runs the registry's pair reduction along `axis` of x.

    Returns (mantissa, exponent), float64 arrays of x's shape without `axis`,
    and the result dtype of x (for callers that turn the pair into a value).
    """
    backend, x, work_dtype, result_dtype, axis = _checked_arguments(x, axis, backend)
    rows_view = x.reshape(1) if x.ndim == 0 else np.moveaxis(x, axis, -1)
    x_rows = np.ascontiguousarray(rows_view, dtype=work_dtype)
    n = x_rows.shape[-1]
    mantissa = np.empty(x_rows.shape[:-1])
    exponent = np.empty(x_rows.shape[:-1])
    if mantissa.size:
        kernel = _registry.pair_kernel(reduction, backend, work_dtype)
        kernel(x_rows.reshape(mantissa.size, n), mantissa.reshape(-1), exponent.reshape(-1))
    return mantissa, exponent, result_dtype

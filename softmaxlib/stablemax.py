"""StableMax (Prieto et al., 2025, "Grokking at the Edge of Numerical Stability").

    s(x) = x + 1          for x >= 0
    s(x) = 1 / (1 - x)    for x < 0
    stablemax(x)_i = s(x_i) / sum_j s(x_j),   log_stablemax(x)_i = log s(x_i) - log sum_j s(x_j)

s grows linearly instead of exponentially, so StableMax does not collapse to a one-hot in float32
until logits reach about 1e4 (where softmax collapses at a gap of ~17). No max is subtracted:
StableMax is not shift-invariant. Special values follow docs/semantics.md as softmax does, with
s in place of exp: +inf elements share the mass, -inf gives 0 (log: -inf), NaN makes the row
NaN, a row of only -inf is NaN, and float32 outputs below FLT_MIN are flushed to +0. A float64
row whose sum of s overflows (values near DBL_MAX) is summed again as s * 2^-64, which a finite
row cannot overflow; the scaling is exact.
"""
import math
import operator

import numpy as np

from . import _bindings, _dispatch, _threads
from ._api import apply_rows, axis_to_last, compute_dtype, fast_path, last_to_axis, normalize_axis

REDUCTIONS = ("mean", "sum", "none")


def s(x):
    """StableMax's s(x) elementwise: x + 1 for x >= 0, 1 / (1 - x) for x < 0.

    s(-x) = 1 / s(x), s(0) = 1, s(-inf) = 0.

    Parameters
    ----------
    x : array_like
        Real numbers.

    Returns
    -------
    ndarray
        s(x), of x's shape, in x's floating dtype (float64 for other input).

    Examples
    --------
    >>> import numpy as np
    >>> from softmaxlib import stablemax
    >>> stablemax.s(np.array([-np.inf, -1, 0, 1, 3], np.float32))
    array([0. , 0.5, 1. , 2. , 4. ], dtype=float32)
    >>> stablemax.s([-3, 0, 3])
    array([0.25, 1.  , 4.  ])
    """
    x = np.asarray(x)
    if x.dtype.kind != "f":
        x = x.astype(np.float64)
    with np.errstate(divide="ignore"):
        return np.where(x >= 0, x + 1, 1 / (1 - np.minimum(x, 0)))


_FAST_STABLEMAX = fast_path("stablemax")
_FAST_LOG_STABLEMAX = fast_path("log_stablemax")


def stablemax(x, axis=-1, *, out=None, backend=None, workers=None):
    """StableMax: s(x) / sum(s(x)) along `axis`, with s(x) = x + 1 for x >= 0, 1 / (1 - x) below.

    Parameters
    ----------
    x : array_like
        float32 (SIMD kernels), float64 (computed in float64), float16 (computed in float32),
        or integers and bool (become float64). Any layout and byte order.
    axis : int, optional
        The axis to normalize along (default: the last).
    out : ndarray, optional
        An array of the result's shape and dtype to write into; it may be `x` itself.
    backend : {"avx512", "avx2", "numba"}, optional
        Default: the best this CPU runs, or SOFTMAXLIB_BACKEND.
    workers : int, optional
        The most threads to use: None for the library default (softmaxlib.get_num_threads()),
        -1 for every available core, k >= 1 for at most k. Small work runs on one thread; the
        result is the same bits for every value (docs/threading.md).

    Returns
    -------
    ndarray
        The StableMax probabilities, of x's shape; `out` if given.

    Raises
    ------
    TypeError
        For complex, object or string input, or a non-integer axis.
    numpy.exceptions.AxisError
        For an axis out of range.
    ValueError
        For an unknown backend, or an `out` of the wrong shape or dtype, or read-only.

    Examples
    --------
    >>> import numpy as np
    >>> from softmaxlib import stablemax
    >>> stablemax.stablemax(np.array([0.0, 1.0], np.float32))
    array([0.33333334, 0.6666667 ], dtype=float32)
    """
    if backend is None:
        y = _FAST_STABLEMAX(x, axis, out, workers)
        if y is not None:
            return y
    return apply_rows("stablemax", x, axis, out, backend, workers)


def log_stablemax(x, axis=-1, *, out=None, backend=None, workers=None):
    """log s(x) - log(sum(s(x))) along `axis`.

    Parameters
    ----------
    x, axis, out, backend, workers
        As stablemax().

    Returns
    -------
    ndarray
        The log-StableMax, of x's shape; `out` if given.

    Raises
    ------
    TypeError, numpy.exceptions.AxisError, ValueError
        As stablemax().

    Examples
    --------
    >>> import numpy as np
    >>> from softmaxlib import stablemax
    >>> stablemax.log_stablemax(np.array([0.0, 0.0], np.float32))
    array([-0.6931472, -0.6931472], dtype=float32)
    """
    if backend is None:
        y = _FAST_LOG_STABLEMAX(x, axis, out, workers)
        if y is not None:
            return y
    return apply_rows("log_stablemax", x, axis, out, backend, workers)


def stablemax_cross_entropy(logits, labels, *, axis=-1, reduction="mean", ignore_index=None, return_grad=False,
                            backend=None, workers=None):
    """Cross-entropy of StableMax: -log(s(x_label) / sum s(x)) per row, accumulated in float64.

    Parameters
    ----------
    logits : array_like
        Floating array (float16/32/64; integers and bool become float64), classes along `axis`,
        at least one dimension.
    labels : array_like of int
        Integer class indices, of logits' shape without `axis`.
    axis : int, optional
        The axis of the classes (default: the last).
    reduction : {"mean", "sum", "none"}, optional
        "mean" over the rows not ignored (the default), "sum", or "none" (one loss per row).
    ignore_index : int, optional
        A label value whose rows give loss 0 and gradient 0, and are not counted by
        "mean" (PyTorch's convention; "mean" of no counted rows is NaN).
    return_grad : bool, optional
        Also return dL/dlogits = (p - onehot) / (1 + |x|), scaled as the reduction
        scales the loss, in logits' dtype and shape. It is computed in closed form (one
        reduction and one elementwise sweep per row), so it is finite where a where()-based
        autograd of s gives NaN (x = 1 exactly).
    backend : {"avx512", "avx2", "numba"}, optional
        As stablemax(); float32 logits run that backend's kernel, float64 the Numba one.
    workers : int, optional
        As stablemax(): rows are shared among the threads.

    Returns
    -------
    loss : numpy.float64 or ndarray
        A float64 scalar, or a float64 array of labels' shape for "none". Rows with a NaN
        give NaN; +inf logits share the mass, as in stablemax().
    grad : ndarray
        With return_grad only: dL/dlogits, in logits' dtype (float16 for float16, float64 for
        integers and bool) and shape.

    Raises
    ------
    TypeError
        For complex, object or string logits, labels that are not integers, a non-integer
        axis or ignore_index.
    numpy.exceptions.AxisError
        For an axis out of range.
    ValueError
        For an unknown reduction, an unknown or unusable backend, 0-d logits, labels of the
        wrong shape, or a label (other than ignore_index) out of [0, classes).

    Examples
    --------
    >>> import numpy as np
    >>> from softmaxlib import stablemax
    >>> logits = np.array([[1, 0, -1, -1], [0, 0, 0, 0]], np.float32)  # s: [2, 1, 0.5, 0.5], [1, 1, 1, 1]
    >>> stablemax.stablemax_cross_entropy(logits, [0, 3], reduction="none")  # log 2, log 4
    array([0.69314718, 1.38629436])
    >>> loss, grad = stablemax.stablemax_cross_entropy(logits, [0, 3], return_grad=True)
    >>> round(float(loss), 6)
    1.039721
    >>> grad
    array([[-0.125  ,  0.125  ,  0.03125,  0.03125],
           [ 0.125  ,  0.125  ,  0.125  , -0.375  ]], dtype=float32)
    >>> stablemax.stablemax_cross_entropy(logits, [0, -100], ignore_index=-100, reduction="none")
    array([0.69314718, 0.        ])
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(map(repr, REDUCTIONS))}, not {reduction!r}")
    backend = _dispatch.resolve(backend)
    threads = _threads.resolve(workers)
    x = np.asarray(logits)
    work_dtype, result_dtype = compute_dtype(x.dtype)
    if x.ndim == 0:
        raise ValueError("logits must have at least one dimension (the classes)")
    axis = normalize_axis(axis, x.ndim)
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise TypeError(f"labels must be integer class indices, not dtype {labels.dtype}")
    expected_shape = x.shape[:axis] + x.shape[axis + 1:]
    if labels.shape != expected_shape:
        raise ValueError(f"labels have shape {labels.shape}, but logits of shape {x.shape} along axis {axis} "
                         f"need {expected_shape}")
    classes = x.shape[axis]
    out_of_range = (labels < 0) | (labels >= classes)
    if ignore_index is None:
        counted, bad = None, out_of_range
    else:
        counted = labels != operator.index(ignore_index)
        bad = counted & out_of_range
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"label {labels[where]} at index {where} is out of range for {classes} classes")
    last = axis == x.ndim - 1
    rows = np.ascontiguousarray(x if last else axis_to_last(x, axis), dtype=work_dtype).reshape(
        math.prod(expected_shape), classes)  # (not -1: classes may be 0)
    if counted is None:
        flat_labels = np.ascontiguousarray(labels, dtype=np.int64).reshape(-1)
        count = labels.size
    else:
        # Ignored rows are passed to the kernels with the label -1, which no counted label can be
        # (they lie in [0, classes)): so an ignore_index of any size works, even beyond int64.
        flat_labels = np.where(counted, labels.astype(np.int64), -1).reshape(-1)
        count = int(counted.sum())
    scale = 1.0 / count if reduction == "mean" and count else (np.nan if reduction == "mean" else 1.0)
    losses = np.empty(rows.shape[0])
    grad = np.empty_like(rows) if return_grad else None
    _bindings.bound("stablemax_cross_entropy", backend, work_dtype)(rows, flat_labels, -1, scale, losses, grad,
                                                                            threads)
    if reduction == "none":
        loss = losses.reshape(labels.shape)
    else:
        loss = np.float64(losses.sum()) * (scale if reduction == "mean" else 1.0)
    if not return_grad:
        return loss
    grad = grad.reshape(x.shape) if last else last_to_axis(grad.reshape(expected_shape + (classes,)), axis)
    return loss, grad.astype(result_dtype, copy=False)

"""Softmax Collapse diagnostics (Prieto et al., 2025, "Grokking at the Edge of Numerical Stability").

Softmax Collapse (SC): when one logit dominates, the floating-point sum of exp(x - max) rounds
to exactly 1, the softmax cross-entropy to exactly 0, and the gradient of the correct class to
exactly 0, so learning stops. With precision p (24 bits for float32, 53 for float64, 11 for
float16) and n classes whose other logits all lie `gap` below the max, the sum is exactly 1 in
any summation order when gap >= p ln 2 + ln(n - 1), and never when gap < p ln 2 (up to the
rounding of exp at that boundary). StableMax collapses only when its s of the top logit
swallows the sum of all the others: at logits around 1e4 in float32.

These functions are NumPy expressions in the dtype under study (the point is to reproduce that
dtype's rounding), and reduce over `axis`.
"""
import numpy as np

from ._api import normalize_axis
from .stablemax import s as stable_s

FLOAT_DTYPES = (np.float16, np.float32, np.float64)


def _rows(logits, axis, dtype):
    dtype = np.dtype(dtype)
    if dtype not in [np.dtype(d) for d in FLOAT_DTYPES]:
        raise TypeError(f"dtype must be float16, float32 or float64, not {dtype}")
    x = np.asarray(logits)
    if x.ndim == 0:
        raise ValueError("logits must have at least one dimension (the classes)")
    if x.dtype.kind not in "fiub":
        raise TypeError(f"logits must be real numbers, not dtype {x.dtype}")
    x = np.moveaxis(x, normalize_axis(axis, x.ndim), -1).astype(dtype)
    if x.shape[-1] == 0 or x.size == 0:
        raise ValueError("logits need at least one class and one row")
    return x


def _exp_sums(x):
    """(x - max, sum of exp(x - max)) per row, in x's dtype."""
    with np.errstate(invalid="ignore", over="ignore"):
        shifted = x - x.max(-1, keepdims=True)
        return shifted, np.exp(shifted).sum(-1, dtype=x.dtype)


def softmax_collapse_fraction(logits, axis=-1, dtype=np.float32):
    """The fraction of rows whose sum of exp(x - max), computed in `dtype`, is exactly 1.

    The paper's measure of Softmax Collapse.

    Parameters
    ----------
    logits : array_like
        Real numbers (floating, integers or bool), classes along `axis`, at least one class
        and one row.
    axis : int, optional
        The axis of the classes (default: the last).
    dtype : {numpy.float32, numpy.float16, numpy.float64}, optional
        The dtype under study (default: float32); logits are converted to it.

    Returns
    -------
    float
        The fraction of collapsed rows, in [0, 1]. A row with a NaN or an inf is not counted
        as collapsed.

    Raises
    ------
    TypeError
        For a dtype other than float16, float32 or float64, logits that are not real numbers
        (complex, object, string), or a non-integer axis.
    numpy.exceptions.AxisError
        For an axis out of range.
    ValueError
        For 0-d logits, or logits with no class or no row.

    Examples
    --------
    >>> import numpy as np
    >>> from softmaxlib import diagnostics
    >>> logits = np.array([[0, 0, 0], [20, 0, 0]], np.float32)  # a gap of 20 > 24 ln 2 + ln 2
    >>> diagnostics.softmax_collapse_fraction(logits)
    0.5
    >>> diagnostics.softmax_collapse_fraction(logits, dtype=np.float64)  # 20 < 53 ln 2
    0.0
    """
    _, sums = _exp_sums(_rows(logits, axis, dtype))
    return float(np.mean(sums == 1))


def zero_loss_fraction(logits, labels, axis=-1, dtype=np.float32):
    """The fraction of rows whose softmax cross-entropy, computed in `dtype`, is exactly 0.

    The cross-entropy of a row is log(sum exp(x - max)) - (x_label - max).

    Parameters
    ----------
    logits : array_like
        Real numbers (floating, integers or bool), classes along `axis`, at least one class
        and one row.
    labels : array_like of int
        Integer class indices, of logits' shape without `axis`.
    axis : int, optional
        The axis of the classes (default: the last).
    dtype : {numpy.float32, numpy.float16, numpy.float64}, optional
        The dtype under study (default: float32); logits are converted to it.

    Returns
    -------
    float
        The fraction of rows whose loss is exactly 0, in [0, 1].

    Raises
    ------
    TypeError
        For a dtype other than float16, float32 or float64, logits that are not real numbers
        (complex, object, string), labels that are not integers, or a non-integer axis.
    numpy.exceptions.AxisError
        For an axis out of range.
    ValueError
        For 0-d logits, logits with no class or no row, labels of the wrong shape, or a label
        out of [0, classes).

    Examples
    --------
    >>> import numpy as np
    >>> from softmaxlib import diagnostics
    >>> logits = np.array([[0, 0, 0], [20, 0, 0]], np.float32)
    >>> diagnostics.zero_loss_fraction(logits, [0, 0])
    0.5
    >>> diagnostics.zero_loss_fraction(logits, [0, 0], dtype=np.float64)
    0.0
    """
    x = _rows(logits, axis, dtype)
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise TypeError(f"labels must be integer class indices, not dtype {labels.dtype}")
    if labels.shape != x.shape[:-1]:
        raise ValueError(f"labels have shape {labels.shape}, but the logits need {x.shape[:-1]}")
    if ((labels < 0) | (labels >= x.shape[-1])).any():
        raise ValueError(f"labels must lie in [0, {x.shape[-1]})")
    shifted, sums = _exp_sums(x)
    with np.errstate(divide="ignore", invalid="ignore"):
        losses = np.log(sums) - np.take_along_axis(shifted, labels[..., None], -1)[..., 0]
    return float(np.mean(losses == 0))


def stablemax_margin(logits, axis=-1, dtype=np.float32):
    """How far each row is from StableMax collapse in `dtype`, in bits.

    The margin is log2 of the sum of s over the row's other elements divided by half an ULP of
    s at its largest element. Above 0, the others still count in a `dtype` sum; at or below 0,
    the sum rounds to the top term alone and StableMax's top probability is exactly 1.

    Parameters
    ----------
    logits : array_like
        Real numbers (floating, integers or bool), classes along `axis`, at least one class
        and one row.
    axis : int, optional
        The axis of the classes (default: the last).
    dtype : {numpy.float32, numpy.float16, numpy.float64}, optional
        The dtype under study (default: float32); logits are converted to it.

    Returns
    -------
    ndarray
        float64 margins of the logits' shape without `axis` (-inf for a row of one element;
        NaN for a row with a NaN).

    Raises
    ------
    TypeError
        For a dtype other than float16, float32 or float64, logits that are not real numbers
        (complex, object, string), or a non-integer axis.
    numpy.exceptions.AxisError
        For an axis out of range.
    ValueError
        For 0-d logits, or logits with no class or no row.

    Examples
    --------
    >>> import numpy as np
    >>> from softmaxlib import diagnostics
    >>> logits = np.array([[0, 0], [4095, 0], [16777215, 0]], np.float32)  # s of the top: 1, 2**12, 2**24
    >>> diagnostics.stablemax_margin(logits)
    array([24., 12.,  0.])
    >>> diagnostics.stablemax_margin(logits, dtype=np.float64)
    array([53., 41., 29.])
    """
    x = _rows(logits, axis, dtype)
    s = stable_s(x).astype(np.float64)
    top = s.max(-1)
    others = s.sum(-1) - top
    half_ulp = np.spacing(top.astype(dtype)).astype(np.float64) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log2(others / half_ulp)

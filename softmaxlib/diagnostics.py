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
    """The fraction of rows whose sum of exp(x - max), computed in `dtype`, is exactly 1:
    the paper's measure of Softmax Collapse. A row with a NaN or an inf is not counted as collapsed."""
    _, sums = _exp_sums(_rows(logits, axis, dtype))
    return float(np.mean(sums == 1))


def zero_loss_fraction(logits, labels, axis=-1, dtype=np.float32):
    """The fraction of rows whose softmax cross-entropy, log(sum exp(x - max)) - (x_label - max)
    computed in `dtype`, is exactly 0. labels: integer class indices, of logits' shape without `axis`."""
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
    """How far each row is from StableMax collapse in `dtype`, in bits: log2 of the sum of s over
    the row's other elements divided by half an ULP of s at its largest element. Above 0, the
    others still count in a `dtype` sum; at or below 0, the sum rounds to the top term alone and
    StableMax's top probability is exactly 1. Returns float64 margins of the logits' shape
    without `axis` (-inf for a row of one element; NaN for a row with a NaN)."""
    x = _rows(logits, axis, dtype)
    s = stable_s(x).astype(np.float64)
    top = s.max(-1)
    others = s.sum(-1) - top
    half_ulp = np.spacing(top.astype(dtype)).astype(np.float64) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log2(others / half_ulp)

"""StableMax (Prieto et al., 2025, "Grokking at the Edge of Numerical Stability").

    s(x) = x + 1          for x >= 0
    s(x) = 1 / (1 - x)    for x < 0
    stablemax(x)_i = s(x_i) / sum_j s(x_j),   log_stablemax(x)_i = log s(x_i) - log sum_j s(x_j)

s grows linearly instead of exponentially, so StableMax does not collapse to a one-hot in float32
until logits reach about 1e4 (where softmax collapses at a gap of ~17). No max is subtracted:
StableMax is not shift-invariant. Special values follow docs/semantics.md as softmax does, with
s in place of exp: +inf elements share the mass, -inf gives 0 (log: -inf), NaN makes the row
NaN, a row of only -inf is NaN, and float32 outputs below FLT_MIN are flushed to +0.
"""
import numpy as np

from ._api import apply_rows


def s(x):
    """StableMax's s(x) elementwise, in x's floating dtype (float64 for other input):
    x + 1 for x >= 0, 1 / (1 - x) for x < 0. s(-x) = 1 / s(x), s(0) = 1, s(-inf) = 0."""
    x = np.asarray(x)
    if x.dtype.kind != "f":
        x = x.astype(np.float64)
    with np.errstate(divide="ignore"):
        return np.where(x >= 0, x + 1, 1 / (1 - np.minimum(x, 0)))


def stablemax(x, axis=-1, *, out=None, backend=None):
    """s(x) / sum(s(x)) along `axis`; arguments and dtypes as softmaxlib.softmax."""
    return apply_rows("stablemax", x, axis, out, backend)


def log_stablemax(x, axis=-1, *, out=None, backend=None):
    """log s(x) - log(sum(s(x))) along `axis`; arguments as stablemax."""
    return apply_rows("log_stablemax", x, axis, out, backend)

"""Softmax by the Two-Pass algorithm (Dukhan and Ablavatski, 2020).

Pass 1 sums exp(x) as (mantissa, exponent) pairs, exp(x) = p * 2^n, so it
needs no max pass and never rounds x - max; pass 2 writes p * (1/M) * 2^(n - E).
Rows the pairs cannot represent (NaN, +inf, or |x| beyond 2^20) take an exact
path: the three-pass kernel for softmax, a float64 sum for the pair. Special
values follow docs/semantics.md, as in three_pass.

The first pass is public: sum_exp_pair() gives sum exp(x) = mantissa * 2**exponent
per row, merge_pairs() combines the pairs of parts of a row exactly (up to one
float64 rounding per part), and logsumexp() is log(mantissa) + exponent * ln 2,
from one pass over x.
"""
import math

import numpy as np

from ._api import apply_rows, reduce_rows


def softmax(x, axis=-1, *, out=None, backend=None):
    """exp(x) / sum(exp(x)) along `axis`; arguments as three_pass.softmax (no variant)."""
    return apply_rows("softmax_two_pass", x, axis, out, backend)


def log_softmax(x, axis=-1, *, out=None, backend=None):
    """x - logsumexp(x) along `axis`; arguments as three_pass.log_softmax (no variant)."""
    return apply_rows("log_softmax_two_pass", x, axis, out, backend)


def sum_exp_pair(x, axis=-1, *, backend=None):
    """(mantissa, exponent), float64 arrays with sum(exp(x), axis) = mantissa * 2**exponent.

    The exponent is integral. A row of only -inf (or an empty axis) gives
    (0, -inf); a row with +inf and no NaN gives (inf, 0); a NaN gives (nan, 0).
    """
    mantissa, exponent, _ = reduce_rows("sum_exp_pair", x, axis, backend)
    return mantissa, exponent


def merge_pairs(pairs):
    """Combines the (mantissa, exponent) pairs of parts of rows into the pair of the whole.

    pairs: an iterable of (mantissa, exponent) arrays (or scalars) of one shape.
    E = max over the parts with a nonzero mantissa, M = sum of M_k * 2**(E_k - E):
    the scaling by powers of two is exact, so only the float64 additions round.
    """
    pairs = [(np.asarray(m, dtype=np.float64), np.asarray(e, dtype=np.float64)) for m, e in pairs]
    if not pairs:
        raise ValueError("merge_pairs needs at least one (mantissa, exponent) pair")
    with np.errstate(invalid="ignore", over="ignore"):
        top = np.max([np.where(m != 0, e, -np.inf) for m, e in pairs], axis=0)
        mantissa = sum(np.where(m != 0, m * np.exp2(e - np.where(np.isfinite(top), top, 0)), 0.0) for m, e in pairs)
    exponent = np.where(np.isfinite(top), top, np.where(mantissa == 0, -np.inf, 0.0))
    return mantissa, exponent


def logsumexp(x, axis=-1, *, keepdims=False, backend=None):
    """log(sum(exp(x))) along `axis`, from one pass over x: log M + E ln 2.

    float32 and float16 input give float32 and float16 results (computed in
    float64 from the pair); integers and bool become float64. -inf for a row of
    only -inf (or an empty axis), +inf with a +inf, NaN with a NaN.
    """
    mantissa, exponent, result_dtype = reduce_rows("sum_exp_pair", x, axis, backend)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        value = np.log(mantissa) + np.where(mantissa == 0, 0.0, exponent) * math.log(2)
        result = value.astype(result_dtype)
    if keepdims and np.ndim(x) > 0:
        result = np.expand_dims(result, axis)
    return result

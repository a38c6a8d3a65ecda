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

from ._api import apply_rows, fast_path, reduce_rows

LN2 = math.log(2)

_FAST_SOFTMAX = fast_path("softmax_two_pass")
_FAST_LOG_SOFTMAX = fast_path("log_softmax_two_pass")


def softmax(x, axis=-1, *, out=None, backend=None, workers=None):
    """Softmax by the Two-Pass algorithm: exp(x) / sum(exp(x)) along `axis`, within 4 ULP.

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
        The softmax, of x's shape and result dtype (as three_pass.softmax); `out` if given.

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
    >>> from softmaxlib import two_pass
    >>> two_pass.softmax(np.log(np.array([1, 3], np.float32)))
    array([0.25, 0.75], dtype=float32)
    """
    if backend is None:
        y = _FAST_SOFTMAX(x, axis, out, workers)
        if y is not None:
            return y
    return apply_rows("softmax_two_pass", x, axis, out, backend, workers)


def log_softmax(x, axis=-1, *, out=None, backend=None, workers=None):
    """Log-softmax by the Two-Pass algorithm: x - logsumexp(x) along `axis`.

    Parameters
    ----------
    x, axis, out, backend, workers
        As softmax().

    Returns
    -------
    ndarray
        The log-softmax, of x's shape and result dtype; `out` if given.

    Raises
    ------
    TypeError, numpy.exceptions.AxisError, ValueError
        As softmax().

    Examples
    --------
    >>> import numpy as np
    >>> from softmaxlib import two_pass
    >>> two_pass.log_softmax(np.array([0.0, 0.0], np.float32))
    array([-0.6931472, -0.6931472], dtype=float32)
    """
    if backend is None:
        y = _FAST_LOG_SOFTMAX(x, axis, out, workers)
        if y is not None:
            return y
    return apply_rows("log_softmax_two_pass", x, axis, out, backend, workers)


def sum_exp_pair(x, axis=-1, *, backend=None, workers=None):
    """(mantissa, exponent), float64 arrays with sum(exp(x), axis) = mantissa * 2**exponent.

    The first pass of the Two-Pass algorithm, from one pass over x (no max pass): the pair
    holds sums far beyond float64's range.

    Parameters
    ----------
    x : array_like
        float32 (SIMD kernels), float64 (computed in float64), float16 (computed in float32),
        or integers and bool (become float64). Any layout and byte order.
    axis : int, optional
        The axis to sum along (default: the last).
    backend : {"avx512", "avx2", "numba"}, optional
        Default: the best this CPU runs, or SOFTMAXLIB_BACKEND.
    workers : int, optional
        The most threads to use: None for the library default (softmaxlib.get_num_threads()),
        -1 for every available core, k >= 1 for at most k. Small work runs on one thread; the
        result is the same bits for every value (docs/threading.md).

    Returns
    -------
    mantissa, exponent : ndarray
        float64 arrays of x's shape without `axis`. The exponent is integral. A row of only
        -inf (or an empty axis) gives (0, -inf); a row with +inf and no NaN gives (inf, 0); a
        NaN gives (nan, 0). A finite float64 row with |max| > DBL_MAX ln 2 (about 1.246e308)
        has a sum beyond the pairs' range (log2 of it exceeds every double): it saturates to
        (inf, 0) for a positive max and (0, -inf) for a negative one, as the float64 sum of
        exp(x) would.

    Raises
    ------
    TypeError
        For complex, object or string input, or a non-integer axis.
    numpy.exceptions.AxisError
        For an axis out of range.
    ValueError
        For an unknown or unusable backend.

    Examples
    --------
    >>> import numpy as np
    >>> from softmaxlib import two_pass
    >>> two_pass.sum_exp_pair(np.array([[0, 0, 0, 0], [-np.inf] * 4], np.float32))
    (array([4., 0.]), array([  0., -inf]))
    """
    mantissa, exponent, _ = reduce_rows("sum_exp_pair", x, axis, backend, workers)
    return mantissa, exponent


def merge_pairs(pairs):
    """Combines the (mantissa, exponent) pairs of parts of rows into the pair of the whole.

    E = max over the parts with a nonzero mantissa, M = sum of M_k * 2**(E_k - E):
    the scaling by powers of two is exact, so only the float64 additions round.

    Parameters
    ----------
    pairs : iterable of (array_like, array_like)
        (mantissa, exponent) arrays (or scalars) of one shape, as sum_exp_pair() returns
        for each part.

    Returns
    -------
    mantissa, exponent : ndarray
        float64 arrays of the parts' shape: the pair of the whole rows. Special parts give
        what sum_exp_pair gives for the whole row: a NaN part makes (nan, 0); else a part
        with an infinite mantissa makes (inf, 0); parts that are all (0, -inf) (empty, or
        only -inf) make (0, -inf).

    Raises
    ------
    ValueError
        For no pairs, or pairs of different shapes (NumPy's error).

    Examples
    --------
    >>> import numpy as np
    >>> from softmaxlib import two_pass
    >>> x = np.zeros(8, np.float32)
    >>> two_pass.merge_pairs([two_pass.sum_exp_pair(x[:3]), two_pass.sum_exp_pair(x[3:])])
    (array(8.), array(0.))
    >>> two_pass.merge_pairs([(1.0, 2.0), (0.75, 3.0)])  # 4 + 6 = 1.25 * 2**3
    (array(1.25), array(3.))
    >>> two_pass.merge_pairs([(0.0, -np.inf), (np.inf, 0.0)])
    (array(inf), array(0.))
    """
    pairs = [(np.asarray(m, dtype=np.float64), np.asarray(e, dtype=np.float64)) for m, e in pairs]
    if not pairs:
        raise ValueError("merge_pairs needs at least one (mantissa, exponent) pair")
    nan = np.any([np.isnan(m) | np.isnan(e) for m, e in pairs], axis=0)
    infinite = np.any([m == np.inf for m, _ in pairs], axis=0)
    # Only the finite nonzero parts are scaled and summed: an infinite mantissa times the
    # 2**(E_k - E) = 0 of a smaller exponent would be NaN. The others become (0, -inf).
    summed = [np.isfinite(m) & (m != 0) for m, _ in pairs]
    mantissas = [np.where(keep, m, 0.0) for keep, (m, _) in zip(summed, pairs)]
    exponents = [np.where(keep, e, -np.inf) for keep, (_, e) in zip(summed, pairs)]
    top = np.max(exponents, axis=0)
    base = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(over="ignore"):  # E_k - E may overflow to -inf (exponents near +-DBL_MAX): 2**-inf = 0 is right
        mantissa = sum(m * np.exp2(e - base) for m, e in zip(mantissas, exponents))
    mantissa = np.where(nan, np.nan, np.where(infinite, np.inf, mantissa))
    exponent = np.where(nan | infinite, 0.0, top)
    return mantissa, exponent


def logsumexp(x, axis=-1, *, keepdims=False, backend=None, workers=None):
    """log(sum(exp(x))) along `axis`, from one pass over x: log M + E ln 2.

    (M, E) is the pair of sum_exp_pair(). A finite float64 row whose pair saturates
    (|max| > DBL_MAX ln 2, see sum_exp_pair) is computed again from x, as
    max + log(sum(exp(x - max))).

    Parameters
    ----------
    x : array_like
        float32 (SIMD kernels), float64, float16 (summed in float32), or integers and bool
        (become float64). Any layout and byte order.
    axis : int, optional
        The axis to reduce along (default: the last).
    keepdims : bool, optional
        Keep `axis` in the result, with length 1 (for input of at least one dimension).
    backend : {"avx512", "avx2", "numba"}, optional
        Default: the best this CPU runs, or SOFTMAXLIB_BACKEND.
    workers : int, optional
        As sum_exp_pair().

    Returns
    -------
    ndarray
        Of x's shape without `axis` (with it, of length 1, if keepdims). float32 and float16
        input give float32 and float16 results (computed in float64 from the pair); integers
        and bool become float64. -inf for a row of only -inf (or an empty axis), +inf with a
        +inf, NaN with a NaN.

    Raises
    ------
    TypeError
        For complex, object or string input, or a non-integer axis.
    numpy.exceptions.AxisError
        For an axis out of range.
    ValueError
        For an unknown or unusable backend.

    Examples
    --------
    >>> import numpy as np
    >>> from softmaxlib import two_pass
    >>> two_pass.logsumexp(np.array([[0, 0, 0, 0], [-np.inf] * 4], np.float32))
    array([1.3862944,      -inf], dtype=float32)
    >>> two_pass.logsumexp(np.zeros((2, 4), np.float32), axis=0, keepdims=True)
    array([[0.6931472, 0.6931472, 0.6931472, 0.6931472]], dtype=float32)
    """
    mantissa, exponent, result_dtype = reduce_rows("sum_exp_pair", x, axis, backend, workers)
    if mantissa.ndim == 0 and result_dtype == np.float32:
        # One row: the same float64 operations on Python floats (np.log itself, so the same log as
        # for many rows), about 5 us less than NumPy's calls on 0-d arrays.
        value = -math.inf if mantissa == 0 else float(np.log(mantissa)) + float(exponent) * LN2
        result = np.float32(value)
        return np.expand_dims(result, axis) if keepdims and np.ndim(x) > 0 else result
    # log M + E ln 2, and -inf where M = 0 (an empty row, or only -inf) without NumPy's divide
    # warning: np.errstate would cost more than the rest of a short row's call
    zero = mantissa == 0
    value = np.log(mantissa, out=np.full(mantissa.shape, -np.inf), where=~zero)
    value += np.where(zero, 0.0, exponent) * LN2
    if result_dtype == np.float64:
        value = _with_saturated_rows(value, mantissa, x, axis)
    if result_dtype == np.float16:
        with np.errstate(over="ignore"):  # beyond float16's range: inf is the rounded result
            result = value.astype(result_dtype)[()]
    else:
        result = value.astype(result_dtype)[()]  # [()]: a NumPy scalar for a 0-d result, as NumPy's reductions
    if keepdims and np.ndim(x) > 0:
        result = np.expand_dims(result, axis)
    return result


def _with_saturated_rows(value, mantissa, x, axis):
    """value, with the rows whose pair saturated computed from x: finite float64 rows with
    |max| > DBL_MAX ln 2, whose sum no pair holds but whose logsumexp is a double. Rows with
    a +inf, of only -inf, or empty have the same pairs, (inf, 0) or (0, -inf), and keep
    their values."""
    candidates = (mantissa == np.inf) | (mantissa == 0)
    if not candidates.any():
        return value
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return _saturated_rows_from_x(value, candidates, x, axis)


def _saturated_rows_from_x(value, candidates, x, axis):
    """value, with the candidate rows whose max is finite computed as max + log(sum(exp(x - max)))."""
    x = np.asarray(x)
    rows = (x.reshape(1) if x.ndim == 0 else np.moveaxis(x, axis, -1))[candidates]
    if rows.shape[-1] == 0:
        return value
    top = rows.max(axis=-1)  # NaN-free: a NaN row has a NaN mantissa
    direct = top + np.log(np.exp(rows - top[:, None]).sum(axis=-1))  # x - top may overflow to -inf: exp is 0
    value = np.array(value)
    value[candidates] = np.where(np.isfinite(top), direct, value[candidates])
    return value

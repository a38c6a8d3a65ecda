"""Softmax by the classic three-pass algorithm.

variant="reload":    max; y = exp(x - max) while summing; y *= 1/sum.
                     One exp per element, one extra read and write of y.
variant="recompute": max; sum of exp(x - max); y = exp(x - max) * (1/sum).
                     Two exps per element, y written once.

Both round x - max to float before the exp, which costs accuracy when
|x - max| is large (up to 65 ULP, docs/accuracy.md). softmax has a third:

variant="reload_exact": reload, with exp(x - max) = p * 2^(n - n_max) from
                     exp(x) = p * 2^n: x - max is never rounded, and the
                     result is within 4 ULP, as two-pass, at reload's speed.

Special values follow docs/semantics.md on every backend and variant.
"""
from . import _catalog
from ._api import apply_rows, fast_path

VARIANTS = {function: _catalog.variants("three_pass", function) for function in ("softmax", "log_softmax")}
_FAST = {kernel.id: fast_path(kernel.id) for kernel in _catalog.of_family("three_pass", "rows")}


def _kernel_id(function, variant):
    if variant not in VARIANTS[function]:
        raise ValueError(f"{function} variant must be one of {', '.join(map(repr, VARIANTS[function]))}, "
                         f"not {variant!r}")
    return f"{function}_{variant}"


def softmax(x, axis=-1, *, out=None, variant="reload", backend=None, workers=None):
    """Softmax by the three-pass algorithm: exp(x) / sum(exp(x)) along `axis`.

    Parameters
    ----------
    x : array_like
        float32 (SIMD kernels), float64 (computed in float64), float16 (computed in float32),
        or integers and bool (become float64, as in SciPy). Any layout and byte order.
    axis : int, optional
        The axis to normalize along (default: the last).
    out : ndarray, optional
        An array of the result's shape and dtype to write into; it may be `x` itself.
    variant : {"reload", "recompute", "reload_exact"}, optional
        "reload" stores exp(x - max) and rescales it (one exp per element); "recompute"
        computes the exps twice and writes y once; "reload_exact" is reload with x - max never
        rounded, within 4 ULP as two-pass.
    backend : {"avx512", "avx2", "numba"}, optional
        Default: the best this CPU runs, or SOFTMAXLIB_BACKEND.
    workers : int, optional
        The most threads to use: None for the library default (softmaxlib.get_num_threads()),
        -1 for every available core, k >= 1 for at most k. Small work runs on one thread; the
        result is the same bits for every value (docs/threading.md).

    Returns
    -------
    ndarray
        The softmax, of x's shape; float32 for float32 and float16 computed in float32 and
        returned as float16; `out` if given.

    Raises
    ------
    TypeError
        For complex, object or string input, or a non-integer axis.
    numpy.exceptions.AxisError
        For an axis out of range.
    ValueError
        For an unknown variant or backend, or an `out` of the wrong shape or dtype, or read-only.

    Examples
    --------
    >>> import numpy as np
    >>> from softmaxlib import three_pass
    >>> three_pass.softmax(np.array([0.0, 0.0], np.float32))
    array([0.5, 0.5], dtype=float32)
    """
    kernel_id = _kernel_id("softmax", variant)
    if backend is None:
        y = _FAST[kernel_id](x, axis, out, workers)
        if y is not None:
            return y
    return apply_rows(kernel_id, x, axis, out, backend, workers)


def log_softmax(x, axis=-1, *, out=None, variant="reload", backend=None, workers=None):
    """Log-softmax by the three-pass algorithm: (x - max) - log(sum(exp(x - max))) along `axis`.

    Parameters
    ----------
    x, axis, out, backend, workers
        As softmax().
    variant : {"reload", "recompute"}, optional
        "reload" stores x - max and subtracts log(sum) in a third pass; "recompute" forms
        x - max again.

    Returns
    -------
    ndarray
        The log-softmax, of x's shape and result dtype as softmax(); `out` if given.

    Raises
    ------
    TypeError, numpy.exceptions.AxisError, ValueError
        As softmax().

    Examples
    --------
    >>> import numpy as np
    >>> from softmaxlib import three_pass
    >>> three_pass.log_softmax(np.array([0.0, 0.0], np.float32))
    array([-0.6931472, -0.6931472], dtype=float32)
    """
    kernel_id = _kernel_id("log_softmax", variant)
    if backend is None:
        y = _FAST[kernel_id](x, axis, out, workers)
        if y is not None:
            return y
    return apply_rows(kernel_id, x, axis, out, backend, workers)

"""softmaxlib: AVX2 and AVX-512 softmax kernels for NumPy, with Numba fallbacks.

softmax, log_softmax and logsumexp here are the auto path: per backend and row length they
run the fastest algorithm that meets the accuracy bounds (softmaxlib/_auto.py,
docs/algorithms.md). three_pass and two_pass give each algorithm by name.
"""
from . import _auto, diagnostics, optim, quant, stablemax, three_pass, two_pass
from ._api import apply_rows, fast_path
from ._dispatch import USABLE_BACKENDS
from ._runtime import runtime_info, show_runtime
from ._threads import get_num_threads, set_num_threads
from ._threadpoolctl import register_threadpoolctl

register_threadpoolctl()  # threadpoolctl lists and limits softmaxlib (docs/threading.md)
from ._version import __version__
from .two_pass import logsumexp

__all__ = ["__version__", "backends", "diagnostics", "get_num_threads", "log_softmax", "logsumexp", "quant",
           "runtime_info", "set_num_threads", "show_runtime", "softmax", "stablemax", "three_pass", "two_pass"]

_FAST_SOFTMAX = fast_path(lambda backend: _auto.choice("softmax", backend))
_FAST_LOG_SOFTMAX = fast_path(lambda backend: _auto.choice("log_softmax", backend))


def _auto_softmax(backend, n, rows, threads):  # the kernel of every workers: _auto.deciding_threads
    return _auto.kernel_id("softmax", backend, n, rows, _auto.deciding_threads())


def _auto_log_softmax(backend, n, rows, threads):
    return _auto.kernel_id("log_softmax", backend, n, rows, _auto.deciding_threads())


def softmax(x, axis=-1, *, out=None, backend=None, workers=None):
    """Softmax, exp(x) / sum(exp(x)) along `axis`, within 4 ULP of float64 for float32 input.

    The algorithm is chosen per backend and row length: three-pass reload with x - max never
    rounded while a row stays in cache, two-pass beyond (softmaxlib.runtime_info() shows the
    crossover). Special values follow docs/semantics.md.

    Parameters
    ----------
    x : array_like
        float32 (SIMD kernels), float64 (computed in float64), float16 (computed in float32),
        or integers and bool (become float64, as in SciPy). Any layout and byte order.
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
        The softmax, of x's shape: float32 for float32 input, float16 for float16, float64
        for float64, integers and bool; `out` if given.

    Raises
    ------
    TypeError
        For complex, object or string input, or a non-integer axis.
    numpy.exceptions.AxisError
        For an axis out of range.
    ValueError
        For an unknown or unusable backend, or an `out` of the wrong shape or dtype, or read-only.

    Examples
    --------
    >>> import numpy as np
    >>> import softmaxlib
    >>> softmaxlib.softmax(np.log(np.array([[1, 3], [1, 1]], np.float32)))
    array([[0.25, 0.75],
           [0.5 , 0.5 ]], dtype=float32)
    """
    if backend is None:
        y = _FAST_SOFTMAX(x, axis, out, workers)
        if y is not None:
            return y
    return apply_rows(_auto_softmax, x, axis, out, backend, workers)


def log_softmax(x, axis=-1, *, out=None, backend=None, workers=None):
    """Log-softmax, x - logsumexp(x) along `axis`, within a few float32 epsilons of max(1, |result|).

    Three-pass reload while a row stays in cache, two-pass beyond.

    Parameters
    ----------
    x, axis, out, backend, workers
        As softmax().

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
    >>> import softmaxlib
    >>> softmaxlib.log_softmax(np.array([0.0, 0.0], np.float32))
    array([-0.6931472, -0.6931472], dtype=float32)
    """
    if backend is None:
        y = _FAST_LOG_SOFTMAX(x, axis, out, workers)
        if y is not None:
            return y
    return apply_rows(_auto_log_softmax, x, axis, out, backend, workers)


def backends():
    """The backends usable on this machine, best first.

    Returns
    -------
    list of str
        A subset of ["avx512", "avx2", "numba"]; "numba" is always usable.

    Examples
    --------
    >>> import softmaxlib
    >>> softmaxlib.backends()[-1]
    'numba'
    """
    return list(USABLE_BACKENDS)

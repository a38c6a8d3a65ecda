"""softmaxlib: AVX2 and AVX-512 softmax kernels for NumPy, with Numba fallbacks.

softmax, log_softmax and logsumexp here are the auto path: per backend and row length they
run the fastest algorithm that meets the accuracy bounds (softmaxlib/_auto.py,
docs/algorithms.md). three_pass and two_pass give each algorithm by name.
"""
from . import _auto, diagnostics, quant, stablemax, three_pass, two_pass
from ._api import apply_rows
from ._dispatch import DEFAULT_BACKEND, USABLE_BACKENDS
from ._version import __version__
from .two_pass import logsumexp

__all__ = ["__version__", "backends", "diagnostics", "log_softmax", "logsumexp", "quant", "show_runtime", "softmax", "stablemax",
           "three_pass", "two_pass"]


def softmax(x, axis=-1, *, out=None, backend=None):
    """exp(x) / sum(exp(x)) along `axis`, within 4 ULP of float64 for float32 input.

    Arguments, dtypes and special values as three_pass.softmax (no variant): the algorithm
    is chosen per backend and row length (reload_exact in cache, two-pass beyond).
    """
    return apply_rows(lambda backend, n: _auto.operation("softmax", backend, n), x, axis, out, backend)


def log_softmax(x, axis=-1, *, out=None, backend=None):
    """x - logsumexp(x) along `axis`; arguments as softmax (three-pass reload in cache, two-pass beyond)."""
    return apply_rows(lambda backend, n: _auto.operation("log_softmax", backend, n), x, axis, out, backend)


def backends():
    """The backends usable on this machine, best first."""
    return list(USABLE_BACKENDS)


def show_runtime():
    """Prints the CPU features found, the backend of each operation and the versions in use."""
    import platform

    import cffi
    import numba
    import numpy

    from . import _dispatch, _registry

    print(f"softmaxlib {__version__} on {platform.machine()}, Python {platform.python_version()}")
    print(f"versions: numpy {numpy.__version__}, numba {numba.__version__}, cffi {cffi.__version__}")
    if _dispatch.lib is None:
        print("C kernels: not built (Numba backend only)")
    else:
        found = [name for name, present in _dispatch.CPU_FEATURES.items() if present]
        print(f"CPU features: {' '.join(found) or 'none of interest'}")
    forced = f" (forced by {_dispatch.ENV_VAR})" if _dispatch.FORCED_BACKEND else ""
    print(f"backends usable: {', '.join(USABLE_BACKENDS)}; default: {DEFAULT_BACKEND}{forced}")
    for name, operation in {**_registry.OPERATIONS, **_registry.PAIR_REDUCTIONS, **_registry.LOSSES}.items():
        family = getattr(operation, "family", "stablemax" if name in _registry.LOSSES else "two_pass")
        print(f"  {family}.{name}: {DEFAULT_BACKEND} (float32), numba (float64)")

"""softmaxlib: AVX2 and AVX-512 softmax kernels for NumPy, with Numba fallbacks."""
from . import three_pass, two_pass
from ._dispatch import DEFAULT_BACKEND, USABLE_BACKENDS
from ._version import __version__

__all__ = ["__version__", "backends", "show_runtime", "three_pass", "two_pass"]


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
    for name, operation in {**_registry.OPERATIONS, **_registry.PAIR_REDUCTIONS}.items():
        family = getattr(operation, "family", "two_pass")
        print(f"  {family}.{name}: {DEFAULT_BACKEND} (float32), numba (float64)")

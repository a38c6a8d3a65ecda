"""Backend selection, done once at import.

The C extension detects the CPU's features (CPUID + XGETBV) when asked; this
module turns them into the list of usable backends, best first, and reads
SOFTMAXLIB_BACKEND once. A bad value of that variable fails the import with a
message naming it, rather than falling back silently.
"""
import importlib
import os
import platform
import warnings

from ._version import __version__

ENV_VAR = "SOFTMAXLIB_BACKEND"
ALL_BACKENDS = ("avx512", "avx2", "numba")  # best first

try:
    _kernels = importlib.import_module(f"{__package__}._kernels")
except ModuleNotFoundError as error:
    if error.name != f"{__package__}._kernels":
        raise
    _kernels = None  # not x86-64, or the C part did not build: Numba only
    if platform.machine().lower() in ("x86_64", "amd64"):
        warnings.warn(
            "softmaxlib's C kernels are not built, so it runs on Numba only. In a source checkout, "
            "run from another folder (or build in place with `python setup.py build_ext --inplace`).",
            RuntimeWarning,
            stacklevel=2,
        )

if _kernels is not None:
    ffi, lib = _kernels.ffi, _kernels.lib
    _built = ffi.string(lib.sml_build_version()).decode()
    if _built != __version__:
        raise ImportError(
            f"softmaxlib's compiled kernels are from version {_built}, but the Python package is "
            f"{__version__}: the build is stale; reinstall with `pip install .`"
        )
    _feature_mask = lib.sml_cpu_features()
    CPU_FEATURES = {
        name: bool(_feature_mask & getattr(lib, f"SML_CPU_{name.upper()}"))
        for name in ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512dq", "avx512vl")
    }
else:
    ffi = lib = None
    CPU_FEATURES = {}

_REQUIRED_FEATURES = {
    "avx2": ("avx2", "fma", "f16c"),
    "avx512": ("avx512f", "avx512bw", "avx512dq", "avx512vl", "avx2", "fma", "f16c"),
    "numba": (),
}

USABLE_BACKENDS = tuple(
    name for name in ALL_BACKENDS if all(CPU_FEATURES.get(feature, False) for feature in _REQUIRED_FEATURES[name])
)


def check_backend(name):
    """Returns `name` if it is a usable backend; raises ValueError saying why not."""
    if name not in ALL_BACKENDS:
        raise ValueError(f"unknown softmaxlib backend {name!r}; the backends are {', '.join(ALL_BACKENDS)}")
    if name not in USABLE_BACKENDS:
        why = "the C kernels are not built" if lib is None else f"this CPU lacks {', '.join(_REQUIRED_FEATURES[name])}"
        raise ValueError(
            f"softmaxlib backend {name!r} is not usable here ({why}); usable: {', '.join(USABLE_BACKENDS)}"
        )
    return name


FORCED_BACKEND = os.environ.get(ENV_VAR) or None  # empty means unset


def _default_backend(forced):
    if forced is None:
        return USABLE_BACKENDS[0]
    try:
        return check_backend(forced)
    except ValueError as error:
        raise ImportError(f"{ENV_VAR}={forced!r} is invalid: {error}") from None


DEFAULT_BACKEND = _default_backend(FORCED_BACKEND)


def _sysfs_cache_sizes():
    """{'L1d': bytes, 'L2': bytes, 'L3': bytes, ...} of cpu0's data and unified caches, from
    Linux's sysfs (empty elsewhere)."""
    sizes = {}
    root = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for entry in sorted(os.listdir(root)):
            if not entry.startswith("index"):
                continue

            def read(name):
                with open(os.path.join(root, entry, name)) as file:
                    return file.read().strip()

            level, kind, text = read("level"), read("type"), read("size").upper()
            if kind == "Instruction":
                continue
            scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
            sizes[f"L{level}{'d' if kind == 'Data' else ''}"] = int(text.rstrip("KMG")) * scale
    except (OSError, ValueError):
        pass
    return sizes


CACHE_SIZES = _sysfs_cache_sizes()  # as read: under a hypervisor they may be the host's


def _last_level_cache_bytes():
    """Size of the last-level cache in bytes.

    os.sysconf('SC_LEVEL3_CACHE_SIZE') where Python offers it, else Linux's sysfs (cpu0's
    highest-level cache), else 32 MiB. sysfs comes second because sysconf may be missing
    (it is, on CPython 3.11 / Linux); note that under a hypervisor glibc's sysconf can report
    the host's total L3 rather than the one slice this core uses.
    """
    try:
        size = os.sysconf("SC_LEVEL3_CACHE_SIZE")
        if size > 0:
            return int(size)
    except (ValueError, OSError, AttributeError):
        pass
    levels = sorted(CACHE_SIZES.items(), key=lambda item: int(item[0][1:].rstrip("d")))
    return levels[-1][1] if levels else 32 << 20


LAST_LEVEL_CACHE_BYTES = _last_level_cache_bytes()
# The same, never reassigned: the auto path (softmaxlib/_auto.py) takes an assignment to
# LAST_LEVEL_CACHE_BYTES (the tests' way to move its crossover) as a cache size set by hand. What it
# runs on otherwise comes from a probe, not from this size, which a VM may report from its host.
REPORTED_LAST_LEVEL_CACHE_BYTES = LAST_LEVEL_CACHE_BYTES

STREAM_ENV_VAR = "SOFTMAXLIB_STREAM_ABOVE_BYTES"


def _stream_above_bytes():
    """Output size in bytes above which the kernels that can write with non-temporal stores do:
    half the last-level cache. SOFTMAXLIB_STREAM_ABOVE_BYTES overrides it; it is meant for the
    tests, which lower it to run the streaming paths on small arrays."""
    value = os.environ.get(STREAM_ENV_VAR)
    if not value:
        return LAST_LEVEL_CACHE_BYTES // 2
    try:
        return max(0, int(value))
    except ValueError:
        raise ImportError(f"{STREAM_ENV_VAR}={value!r} is invalid: it must be a number of bytes") from None


STREAM_ABOVE_BYTES = _stream_above_bytes()  # read once, at import


def resolve(backend):
    """The backend a call runs on: `backend` if given (and usable), else the default."""
    return DEFAULT_BACKEND if backend is None else check_backend(backend)

"""How many threads a call may use: the `workers=` argument, set_num_threads() and
SOFTMAXLIB_NUM_THREADS.

The C kernels run on one pool of threads (csrc/pool.c), created on first use and sized by the
cores this process may run on. A call passes the kernel the most threads it may use; the kernel
uses fewer (one) when its work is too small to pay for waking another thread, and its result is
the same bits whatever the number (docs/threading.md).

workers, as in SciPy: None = the library default (get_num_threads()), -1 = every available core,
k >= 1 = at most k threads. The default starts as every available core, or SOFTMAXLIB_NUM_THREADS
if set, and set_num_threads() (or threadpoolctl's threadpool_limits) changes it.
"""
import atexit
import operator
import os

from . import _dispatch

ENV_VAR = "SOFTMAXLIB_NUM_THREADS"


def available_cores():
    """The cores this process may run on (its CPU affinity), at least 1. Read once per process (a
    system call: workers=-1 and the auto path ask on every call), and again in a forked child,
    as the C pool is sized once per process."""
    if not _cores:
        try:
            _cores.append(max(1, len(os.sched_getaffinity(0))))
        except (AttributeError, OSError):  # not Linux
            _cores.append(max(1, os.cpu_count() or 1))
    return _cores[0]


_cores = []
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_cores.clear)


def _count(value, name):
    """value as a thread count: a positive int, or -1 for every available core."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, not bool")
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, not {type(value).__name__}") from None
    if value == -1:
        return available_cores()
    if value < 1:
        raise ValueError(f"{name} must be a positive number of threads or -1 (every core), not {value}")
    return value


def _from_environment():
    value = os.environ.get(ENV_VAR)
    if not value:
        return available_cores()
    try:
        return _count(int(value), ENV_VAR)
    except (TypeError, ValueError):
        raise ImportError(f"{ENV_VAR}={value!r} is invalid: it must be a positive number of threads or -1") \
            from None


# The process-wide default, a one-element list so that the bound fast paths read its current value.
DEFAULT = [_from_environment()]


def set_num_threads(count):
    """Sets how many threads softmaxlib's calls use by default (those given no `workers=`).

    Parameters
    ----------
    count : int
        A positive number of threads, or -1 for every core available to the process.

    Examples
    --------
    >>> import softmaxlib
    >>> previous = softmaxlib.get_num_threads()
    >>> softmaxlib.set_num_threads(1)
    >>> softmaxlib.get_num_threads()
    1
    >>> softmaxlib.set_num_threads(previous)
    """
    DEFAULT[0] = _count(count, "the number of threads")


def get_num_threads():
    """The number of threads softmaxlib's calls use by default (set_num_threads()).

    Returns
    -------
    int
        At least 1.

    Examples
    --------
    >>> import softmaxlib
    >>> softmaxlib.get_num_threads() >= 1
    True
    """
    return DEFAULT[0]


def resolve(workers):
    """The thread count a call passes its kernel for its `workers=` argument."""
    if workers is None:
        return DEFAULT[0]
    return _count(workers, "workers")


if _dispatch.lib is not None:
    # Joins the pool's threads before the interpreter goes away (they hold no Python state, but a
    # clean exit leaves nothing running).
    atexit.register(_dispatch.lib.sml_pool_shutdown)


def pool_size():
    """Threads running in the C pool besides the callers' (0 before its first use, after
    shutdown, in a forked child, or without the C extension)."""
    return _dispatch.lib.sml_pool_size() if _dispatch.lib is not None else 0

"""The auto path behind softmaxlib.softmax and softmaxlib.log_softmax.

Per backend and row length, the catalog kernel that is fastest among those meeting the
accuracy bounds: softmax within 4 ULP of float64 (outputs >= FLT_MIN), log-softmax within a few
float32 epsilons of max(1, |result|). Classic three-pass softmax rounds x - max (up to 65 ULP), so
softmax chooses between reload_exact and two-pass only; log-softmax meets its bound on both.

A three-pass reload is fastest while a row's x and y stay in cache between its passes (one exp
per element); beyond that two-pass wins when its three memory transfers per element take less
time than reload's five, unless its second exp makes it compute bound (AVX2 softmax: always on the
Zen 4 and Zen 5 measured, so it never switches). Where the crossover lies is this machine's: the
reported cache sizes do not tell it (a VM may report its host's L3), so it comes from a short
probe of this machine's read rates and kernels, kept in the user's cache folder, or from
`softmaxlib tune` (softmaxlib/_tune.py), and it depends on the thread count. docs/algorithms.md
has the measurements and the model.

The probe runs on the first row longer than SHORT_ROW elements, never at import: rows of at most
SHORT_ROW (x and y in 1 MiB, in the cache of any x86-64 core) run the in-cache kernel without a
look-up. SOFTMAXLIB_AUTO_CACHE_BYTES (or an assignment to _dispatch.LAST_LEVEL_CACHE_BYTES, as
the tests do) replaces the probe by a cache size set by hand: the crossover is then the table's
fraction of it, the rule before the probe existed, whatever the thread count.
"""
import os

from . import _dispatch
from ._threads import available_cores

# (function, backend) -> (kernel in cache, kernel beyond the crossover or None, crossover as a
#                         fraction of a cache size set by hand, for the 8n bytes of a row)
# The fractions are Zen 5's (32 MiB L3, docs/algorithms.md); with the probe they are not used.
CHOICES = {
    ("softmax", "avx512"): ("softmax_reload_exact", "softmax_two_pass", 0.8),
    ("softmax", "avx2"): ("softmax_reload_exact", None, None),
    ("softmax", "numba"): ("softmax_reload_exact", None, None),
    ("log_softmax", "avx512"): ("log_softmax_reload", "log_softmax_two_pass", 0.75),
    ("log_softmax", "avx2"): ("log_softmax_reload", "log_softmax_two_pass", 1.0),
    ("log_softmax", "numba"): ("log_softmax_reload", None, None),
}

# Rows of at most this many elements (x and y: 1 MiB) run in cache, with no probe and no look-up:
# on every machine measured two-pass starts to win at 8 MiB or more (an Intel Xeon VM: 2^20
# elements; Zen 4: 2^22 and beyond; Zen 5: 2^21.7), and a smaller row fits in a server core's L2.
SHORT_ROW = 1 << 17
CACHE_BYTES_ENV = "SOFTMAXLIB_AUTO_CACHE_BYTES"
# A batch of at least this many rows per thread goes to the threads whole rows at a time, so
# `threads` rows are in flight at once (split_by_rows in csrc/pool.h); fewer rows are each split
# among the threads.
ROWS_PER_THREAD_TO_SPLIT_BY_ROWS = 4

_crossovers = {}  # (function, backend, threads) -> (elements or None, source): resolved once


def set_cache_bytes():
    """(bytes, source) of a cache size set by hand, or None: SOFTMAXLIB_AUTO_CACHE_BYTES (a number
    of bytes, or "reported" for the OS's last-level cache), else _dispatch.LAST_LEVEL_CACHE_BYTES
    if assigned."""
    value = os.environ.get(CACHE_BYTES_ENV, "").strip()
    if value:
        if value.lower() == "reported":
            return _dispatch.REPORTED_LAST_LEVEL_CACHE_BYTES, f"{CACHE_BYTES_ENV}=reported"
        try:
            return max(0, int(value)), CACHE_BYTES_ENV
        except ValueError:
            raise ValueError(f"{CACHE_BYTES_ENV}={value!r} is invalid: it must be a number of bytes or "
                             f"'reported'") from None
    if _dispatch.LAST_LEVEL_CACHE_BYTES != _dispatch.REPORTED_LAST_LEVEL_CACHE_BYTES:
        return _dispatch.LAST_LEVEL_CACHE_BYTES, "_dispatch.LAST_LEVEL_CACHE_BYTES"
    return None


def crossover(function, backend, threads=1):
    """(elements, source): the longest row (elements, in flight at once) that runs the in-cache
    kernel of `function` on `backend` with `threads` threads, None if it runs at every length;
    source: "tune", "probe", the variable that set a cache size, or "reported LLC" (the probe
    failed, its reason in brackets). May run the probe (once per process and thread count: more
    threads than cores count as the cores)."""
    in_cache, beyond, fraction = CHOICES[function, backend]
    if beyond is None:
        return None, "table"
    hand_set = set_cache_bytes()
    if hand_set is not None:
        return int(fraction * hand_set[0]) // 8, hand_set[1]
    found = _crossovers.get((function, backend, threads))
    if found is None:
        used = max(1, min(threads, available_cores()))
        found = _crossovers.get((function, backend, used)) or _resolve(function, backend, used)
        _crossovers[function, backend, used] = _crossovers[function, backend, threads] = found
    return found


def _resolve(function, backend, threads):
    from . import _tune

    tuned = _tune.tuned(backend, function, threads)
    if tuned is not None:
        return tuned["elements"], "tune"
    try:
        return modeled(function, backend, threads), "probe"
    except (MemoryError, OSError, RuntimeError) as error:  # no memory for the probe, no thread, ...
        fraction = CHOICES[function, backend][2]
        return int(fraction * _dispatch.REPORTED_LAST_LEVEL_CACHE_BYTES) // 8, f"reported LLC ({error})"


def modeled(function, backend, threads):
    """The model's crossover from the probe (softmaxlib/_tune.py; probed now if not known yet)."""
    from . import _tune

    in_cache, beyond, _ = CHOICES[function, backend]
    candidates = [kernel for (_, b), entry in CHOICES.items() if b == backend and entry[1] for kernel in entry[:2]]
    hot_ns = _tune.hot_kernels(backend, list(dict.fromkeys(candidates)))  # every function's at once: 11 ms
    return _tune.modeled_crossover(in_cache, beyond, hot_ns, _tune.memory(threads), SHORT_ROW)


def elements_in_flight(n, rows, threads):
    """The elements the threads work on at once for `rows` rows of n: a row split among them, or
    one whole row each (csrc/pool.h's split_by_rows), on at most as many threads as cores."""
    if threads > 1 and rows >= ROWS_PER_THREAD_TO_SPLIT_BY_ROWS * threads:
        return n * min(threads, available_cores())
    return n


def deciding_threads():
    """The thread count the public functions choose their kernel for, whatever a call's workers:
    every available core (the default). The in-cache and beyond kernels give different bits, so a
    choice made for the call's own workers made its result depend on them, against the promise of
    docs/threading.md (tests/test_workers.py caught log_softmax on 3 rows of 2^18 + 5 switching
    kernels between workers=1 and 2 when a noisy probe put the one-thread crossover below them)."""
    return available_cores()


def runs_beyond(function, backend, n, rows=1, threads=1):
    """Whether `rows` rows of n elements run the kernel beyond the crossover."""
    hand_set = set_cache_bytes()
    if hand_set is None and n <= SHORT_ROW:
        return False
    limit, _ = crossover(function, backend, threads)
    return limit is not None and elements_in_flight(n, rows, threads) > limit


def kernel_id(function, backend, n, rows=1, threads=1):
    """The catalog kernel the auto path runs for `rows` rows of n float32 on `backend` with at
    most `threads` threads."""
    in_cache, beyond, _ = CHOICES[function, backend]
    return beyond if beyond is not None and runs_beyond(function, backend, n, rows, threads) else in_cache


class Crossover:
    """The fast path's view of a crossover resolved on first use: rows of at most `short` elements
    run in cache with no look-up; runs_beyond(n, rows, threads) decides for longer ones, in about
    0.2 us once resolved (a dictionary look-up; a row longer than `short` takes 40 us or more)."""

    __slots__ = ("short", "runs_beyond", "name")

    def __init__(self, function, backend):
        self.short = SHORT_ROW
        self.name = f"{function} on {backend}"
        resolved, key = _crossovers, (function, backend)

        def runs_beyond(n, rows, threads):
            limit = (resolved.get(key + (threads,)) or crossover(function, backend, threads))[0]
            return limit is not None and elements_in_flight(n, rows, threads) > limit

        self.runs_beyond = runs_beyond

    def __lt__(self, n):
        """`n > crossover`, as a fast path that knows only fixed crossovers asks: one row, one
        thread. (A method call per call: the fast path should test `short` first.)"""
        return n > self.short and self.runs_beyond(n, 1, 1)

    def __repr__(self):
        return f"<crossover of {self.name}: resolved on the first row longer than {self.short}>"


def choice(function, backend):
    """(kernel id in cache, kernel id beyond or None, crossover) of the auto path of `function` on
    `backend`, for the fast path, which binds it once at import. crossover: None without a kernel
    beyond; an int (the longest row, in elements, that runs in cache) when a cache size is set by
    hand; else a Crossover, which decides on first use (rows longer than Crossover.short)."""
    in_cache, beyond, _ = CHOICES[function, backend]
    if beyond is None:
        return in_cache, None, None
    if set_cache_bytes() is not None:
        return in_cache, beyond, crossover(function, backend)[0]
    return in_cache, beyond, Crossover(function, backend)


def forget():
    """Forgets the crossovers resolved in this process, and what _tune knows (tests, tune)."""
    from . import _tune

    _crossovers.clear()
    _tune.reset()


def describe(backend, thread_counts):
    """runtime_info()'s "auto" entry: how the crossovers on `backend` are decided, and each for the
    given thread counts (resolving them: the probe may run)."""
    hand_set = set_cache_bytes()
    info = {"reported_last_level_cache": _dispatch.REPORTED_LAST_LEVEL_CACHE_BYTES,
            "cache_set_by_hand": None if hand_set is None else {"bytes": hand_set[0], "by": hand_set[1]},
            "short_row_elements": SHORT_ROW, "crossovers": {}}
    functions = [function for (function, b), entry in CHOICES.items() if b == backend and entry[1]]
    for function in functions:
        info["crossovers"][function] = {
            threads: dict(zip(("elements", "source"), crossover(function, backend, threads)))
            for threads in thread_counts}
    if hand_set is None and functions:
        from . import _tune

        state = _tune._load()
        info["cache_file"] = state["path"]
        info["cache_file_read"] = state["from_file"]
        info["probed_in_this_process"] = [list(probe) for probe in _tune.PROBES]
        info["memory"] = {threads: {"effective_cache": memory.effective_cache, **memory.as_dict()}
                          for threads, memory in sorted(state["memory"].items())}
        info["hot_ns_per_element"] = state["kernels"].get(backend, {})
    return info

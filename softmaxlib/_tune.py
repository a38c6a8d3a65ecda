"""Where the auto path switches on this machine: a short probe, a model, a cache file, and
`softmaxlib tune` (docs/algorithms.md, "Where the auto path switches").

The auto path (softmaxlib/_auto.py) runs a kernel that is fast in cache (three-pass reload: one
exp per element, five memory transfers) up to a crossover and one that moves less memory
(two-pass: two exps, three transfers) beyond it. Where that is depends on how much cache a row
really gets, how fast memory is, and how fast each kernel computes, none of which the reported
cache sizes tell: a VM may report its host's 300 MiB L3 and get little of it, and on Zen 4 the
crossover of softmax lies beyond the L3 because its two-pass is compute bound there. So:

- probe_memory(threads): the read rate of `threads` threads streaming over buffers of 1, 2, 4, ...
  MiB, each read again and again (sml_stream_read), until it falls to the rate of a read right
  after a flush of every cache level (main memory's); 27-44 ms for one thread on the Zen 4 VM,
  44-100 ms for two.
- probe_kernels(backend): each candidate kernel's time per element on a row in L2 (compute
  alone); 11 ms.
- modeled_crossover(): a kernel's time per element on a row of n is, pass by pass, the larger
  of its compute time (divided among the threads) and its bytes at the probed rate for the row's
  8n bytes (model_ns); the crossover is the longest row from which the in-cache kernel is never
  faster again.
- `softmaxlib tune` (tune_command): times both kernels cold (bench.time_flushed) from an eighth
  of the model's guess up to 2^26; its crossover overrides the model's.

Probes and tunings are kept in one JSON file per machine and package version in the user's cache
folder ($SOFTMAXLIB_CACHE_DIR, else $XDG_CACHE_HOME/softmaxlib, else ~/.cache/softmaxlib;
SOFTMAXLIB_CACHE_DIR=off keeps nothing on disk): a process finds there what an earlier one
measured, and probes only what is missing, at most once per process (PROBES lists them).
Nothing here runs at import, nor for rows that fit in 1 MiB (_auto.SHORT_ROW).
"""
import math
import os
import threading
import time
from dataclasses import dataclass

import numpy as np

from . import _bindings, _catalog, _dispatch
from ._version import __version__

CACHE_DIR_ENV = "SOFTMAXLIB_CACHE_DIR"
CACHE_OFF = ("off", "none", "0")  # SOFTMAXLIB_CACHE_DIR values that keep nothing on disk

# The memory probe. Sizes double from FIRST_BYTES (at least MIN_SLICE_BYTES per thread: a Python
# loop of C calls on shorter slices times the loop) to PROBE_MAX_BYTES, stopping at the first size
# read at most AT_MEMORY x main memory's rate: larger ones cannot be faster. Each rate is the best
# of REPEATS measurements (other processes only ever slow a measurement down), each of
# READ_BYTES per thread (0.4 ms in L3, 1 ms from memory on Zen 4: a thread's wake-up is noise).
FIRST_BYTES = 1 << 20
MIN_SLICE_BYTES = 256 << 10
PROBE_MAX_BYTES = 64 << 20  # its pages cost 20-100 ms to fault in on the Zen 4 VM, 128 MiB's up to 250
MEMORY_BYTES = 16 << 20  # read after a flush for main memory's rate (flush + read: 2.8 ms on Zen 4)
MEMORY_BYTES_PER_THREAD = 8 << 20
READ_BYTES = 32 << 20
REPEATS = 3
AT_MEMORY = 1.2
# The effective cache (shown by runtime_info, not used by the model, which takes the rates as
# they are): the largest size read at least this much faster than main memory.
CLEARLY_FASTER = 1.5

# The kernel probe: a row of HOT_ELEMENTS (x and y: 256 KiB, in any x86-64 core's L2), best of
# HOT_REPEATS samples of HOT_CALLS calls.
HOT_ELEMENTS = 1 << 15
HOT_REPEATS = 7
HOT_CALLS = 10

# The model's row lengths: GRID_STEPS per power of two from the auto path's short row up to
# LONGEST_ROW elements (8 GiB of x and y).
GRID_STEPS = 8
LONGEST_ROW = 1 << 31

# tune(): quarter powers of two from an eighth of the model's guess (or TUNE_FROM without one)
# up to TUNE_TO, the top of the range.
TUNE_STEPS = 4
TUNE_FROM = 1 << 20
TUNE_TO = 1 << 26

PROBES = []  # ("memory", threads) or ("kernels", backend): every probe this process ran
_lock = threading.RLock()
_state = None  # _load()'s: what this process knows, from the file or its own probes


# --- the memory probe -----------------------------------------------------------------------

@dataclass(frozen=True)
class Memory:
    """Read rates of `threads` threads, each streaming over its share of a buffer of each size.

    sizes, read_gb_s: a buffer's bytes and its rate in GB/s (1e9 bytes/s), read over and over
    (so that it stays in whatever cache holds it); memory_gb_s: the rate right after a flush of
    every cache level (main memory); milliseconds: what the probe took.
    """

    threads: int
    sizes: tuple
    read_gb_s: tuple
    memory_gb_s: float
    milliseconds: float

    def rate(self, nbytes):
        """GB/s for reading nbytes over and over: the probed rates, with the time per byte
        interpolated linearly in log2(nbytes) between the sizes; main memory's rate from twice
        the largest size on (the probe stopped there because it had reached it, or at
        PROBE_MAX_BYTES)."""
        sizes = list(self.sizes) + [2 * self.sizes[-1]]
        rates = list(self.read_gb_s) + [min(self.read_gb_s[-1], self.memory_gb_s)]
        if nbytes <= sizes[0]:
            return rates[0]
        for size, rate, next_size, next_rate in zip(sizes, rates, sizes[1:], rates[1:]):
            if nbytes <= next_size:
                weight = math.log2(nbytes / size) / math.log2(next_size / size)
                return 1 / ((1 - weight) / rate + weight / next_rate)
        return rates[-1]

    @property
    def effective_cache(self):
        """The largest size read clearly (CLEARLY_FASTER) faster than main memory; 0 if none."""
        fast = [size for size, rate in zip(self.sizes, self.read_gb_s) if rate >= CLEARLY_FASTER * self.memory_gb_s]
        return max(fast, default=0)

    def as_dict(self):
        return {"threads": self.threads, "sizes": list(self.sizes), "read_gb_s": [round(r, 2) for r in self.read_gb_s],
                "memory_gb_s": round(self.memory_gb_s, 2), "milliseconds": round(self.milliseconds, 1)}

    @classmethod
    def from_dict(cls, data):
        return cls(int(data["threads"]), tuple(int(s) for s in data["sizes"]),
                   tuple(float(r) for r in data["read_gb_s"]), float(data["memory_gb_s"]), float(data["milliseconds"]))


class _Readers:
    """The calling thread and threads - 1 helpers, each streaming over its own slice of the first
    nbytes of a buffer at the same time (cffi releases the GIL during sml_stream_read)."""

    def __init__(self, words, threads):
        self.lib, self.threads, self.job = _dispatch.lib, threads, None
        self.pointer = _dispatch.ffi.from_buffer("uint64_t[]", words, require_writable=True)
        self.start, self.done = threading.Barrier(threads), threading.Barrier(threads)
        self.durations = [0] * threads
        self.helpers = [threading.Thread(target=self._helper, args=(part,), daemon=True) for part in range(1, threads)]
        for helper in self.helpers:
            helper.start()

    def _read(self, part):
        nbytes, passes = self.job
        count = nbytes // 8 // self.threads
        words = self.pointer + part * count
        began = time.perf_counter_ns()
        for _ in range(passes):
            self.lib.sml_stream_read(words, count)
        self.durations[part] = max(time.perf_counter_ns() - began, 1)

    def _helper(self, part):
        while True:
            self.start.wait()
            if self.job is None:
                return
            self._read(part)
            self.done.wait()

    def read_ns(self, nbytes, passes=1, flush=False):
        """ns for the threads to read their slices of the first nbytes `passes` times, after
        flushing them from every cache level if asked: the longest thread's own time, so that a
        helper's late wake-up (tens of us) is not counted."""
        if flush:
            self.lib.sml_flush_cache_lines(self.pointer, nbytes)
        self.job = (nbytes, passes)
        self.start.wait()
        self._read(0)
        self.done.wait()
        return max(self.durations)

    def close(self):
        self.job = None
        if self.helpers:
            self.start.wait()
        for helper in self.helpers:
            helper.join()


def probe_memory(threads):
    """Memory of `threads` threads on this machine (the C extension's streams).

    Other processes only ever slow a measurement down, so each rate is the best of REPEATS
    measurements in a row and of a second sweep over the sizes after the first (a busy spell of
    a few ms then spoils neither), and never below main memory's (reading a buffer again cannot
    be slower than reading it from memory)."""
    began = time.perf_counter()
    # np.empty, written as the sizes grow: an untouched page would be read as the shared zero page
    words = np.empty(PROBE_MAX_BYTES // 8, np.uint64)
    memory_bytes = min(PROBE_MAX_BYTES, max(MEMORY_BYTES, threads * MEMORY_BYTES_PER_THREAD))
    words[:memory_bytes // 8] = 1
    touched = memory_bytes
    readers = _Readers(words, threads)

    def best_rate(size):
        passes = max(1, READ_BYTES * threads // size)
        readers.read_ns(size)  # into the cache, as far as it fits
        return max(size * passes / readers.read_ns(size, passes) for _ in range(REPEATS))

    try:
        memory_rate = max(memory_bytes / readers.read_ns(memory_bytes, flush=True) for _ in range(REPEATS))
        sizes, rates = [], []
        size = min(PROBE_MAX_BYTES, max(FIRST_BYTES, threads * MIN_SLICE_BYTES))
        while size <= PROBE_MAX_BYTES:
            if size > touched:
                words[touched // 8:size // 8] = 1
                touched = size
            sizes.append(size)
            rates.append(best_rate(size))
            if rates[-1] <= AT_MEMORY * memory_rate:
                break
            size *= 2
        # the second sweep
        memory_rate = max([memory_rate] + [memory_bytes / readers.read_ns(memory_bytes, flush=True)
                                           for _ in range(REPEATS)])
        rates = [max(rate, best_rate(size), memory_rate) for size, rate in zip(sizes, rates)]
    finally:
        readers.close()
    return Memory(threads, tuple(sizes), tuple(rates), memory_rate, (time.perf_counter() - began) * 1e3)


# --- the kernel probe -----------------------------------------------------------------------

def probe_kernels(backend, kernel_ids):
    """{kernel id: ns per element} of each row kernel on one thread, on a row in L2."""
    ffi, floats = _dispatch.ffi, _bindings.FLOATS
    x = np.random.default_rng(0).standard_normal(HOT_ELEMENTS, dtype=np.float32)
    y = np.empty_like(x)
    x_buffer, y_buffer = ffi.from_buffer(floats, x), ffi.from_buffer(floats, y)
    functions = {kernel: _bindings.row_functions(_catalog.KERNELS[kernel], backend)[0] for kernel in kernel_ids}
    best = dict.fromkeys(functions, math.inf)
    for function in functions.values():
        function(1, HOT_ELEMENTS, x_buffer, y_buffer, 1)  # warm-up
    clock = time.perf_counter_ns
    for _ in range(HOT_REPEATS):  # the kernels in turn, so that a slow spell hits them alike
        for kernel, function in functions.items():
            began = clock()
            for _ in range(HOT_CALLS):
                function(1, HOT_ELEMENTS, x_buffer, y_buffer, 1)
            best[kernel] = min(best[kernel], (clock() - began) / (HOT_CALLS * HOT_ELEMENTS))
    return best


# --- the model ------------------------------------------------------------------------------

def last_in_cache(sizes, in_cache_ns, beyond_ns):
    """The longest of `sizes` (ascending) from which the in-cache kernel is never faster again:
    None if it is as fast at the longest (no crossover), sizes[0] if it never is. The rule of
    both the model and tune()."""
    if in_cache_ns[-1] <= beyond_ns[-1]:
        return None
    for index in range(len(sizes) - 2, -1, -1):
        if in_cache_ns[index] <= beyond_ns[index]:
            return sizes[index]
    return sizes[0]


# The passes of the auto path's kernels: (bytes per element moved, whether the pass evaluates an
# exp). Their bytes add up to the catalog's traffic (tests/test_auto.py checks it). A pass without
# an exp does next to no arithmetic: memory alone sets its time, even in cache (log-softmax's
# output pass: x - max - log sum, or x - log sum).
PASSES = {
    "softmax_reload_exact": ((4, False), (8, True), (8, False)),  # max; y = exp, summed; y *= 1/sum
    "softmax_two_pass": ((4, True), (8, True)),                    # sum of exp as pairs; y = exp * scale
    "log_softmax_reload": ((4, False), (8, True), (8, False)),    # max; y = x - max, exp summed; y -= log sum
    "log_softmax_two_pass": ((4, True), (8, False)),               # sum of exp as pairs; y = x - log sum
}
# Two-pass writes y with plain stores up to _dispatch.STREAM_ABOVE_BYTES of output, with
# non-temporal ones above: measured on Zen 4 (2^20.5 .. 2^23 elements, cold or not), plain stores
# cost log-softmax's output pass 10-20 % more, as if it moved these bytes more per element.
PLAIN_STORE_BYTES = 4


def model_ns(kernel, n, hot_ns, memory):
    """Modeled ns per element of one of PASSES' kernels on rows of n elements in flight, with
    memory.threads threads: per pass, its compute or its bytes at the probed rate for the rows'
    8n bytes of x and y, whichever takes longer. The compute of the exp passes is hot_ns (one
    thread, in L2) less what the other passes take there, shared by the threads."""
    passes = PASSES[kernel]
    in_l2_rate = memory.read_gb_s[0] / memory.threads  # one thread's, on the smallest size probed
    exp_passes = sum(1 for _, has_exp in passes if has_exp)
    compute = max(0.0, hot_ns - sum(b / in_l2_rate for b, has_exp in passes if not has_exp)) / exp_passes
    compute /= memory.threads
    rate = memory.rate(8 * n)
    if _catalog.KERNELS[kernel].streaming and 4 * n <= _dispatch.STREAM_ABOVE_BYTES:
        passes = passes[:-1] + ((passes[-1][0] + PLAIN_STORE_BYTES, passes[-1][1]),)
    return sum(max(compute if has_exp else 0.0, nbytes / rate) for nbytes, has_exp in passes)


def modeled_crossover(in_cache, beyond, hot_ns, memory, shortest):
    """The longest row (elements in flight, from `shortest` on) that the model gives to
    `in_cache`, or None: `in_cache` is never slower. hot_ns: {kernel id: ns per element in L2}."""
    steps = GRID_STEPS * round(math.log2(LONGEST_ROW / shortest))
    sizes = [round(shortest * 2 ** (step / GRID_STEPS)) for step in range(steps + 1)]
    return last_in_cache(sizes, [model_ns(in_cache, n, hot_ns[in_cache], memory) for n in sizes],
                         [model_ns(beyond, n, hot_ns[beyond], memory) for n in sizes])


# --- the cache file -------------------------------------------------------------------------

def _cpu_model():
    """The CPU's model name, family, model and stepping (Linux), or what platform knows."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                name, _, value = line.partition(":")
                name = name.strip()
                if not name:  # the end of the first processor's block
                    break
                fields.setdefault(name, value.strip())
    except OSError:
        pass
    if "model name" not in fields:
        import platform

        return platform.processor() or platform.machine()
    return f"{fields['model name']} (family {fields.get('cpu family')}, model {fields.get('model')}, " \
           f"stepping {fields.get('stepping')})"


def machine_key():
    """What a cache file is valid for: the CPU model, the core count, the cache sizes reported and
    the package version (a new version may change the kernels)."""
    return {"cpu": _cpu_model(), "cores": os.cpu_count(), "caches": dict(_dispatch.CACHE_SIZES),
            "last_level_cache": _dispatch.REPORTED_LAST_LEVEL_CACHE_BYTES, "version": __version__}


def cache_folder():
    """The folder of the cache file, or None when SOFTMAXLIB_CACHE_DIR turns it off."""
    folder = os.environ.get(CACHE_DIR_ENV, "").strip()
    if folder.lower() in CACHE_OFF:
        return None
    if not folder:
        base = os.environ.get("XDG_CACHE_HOME", "")
        if not os.path.isabs(base):  # the XDG spec: a relative path is invalid, ignore it
            base = os.path.join(os.path.expanduser("~"), ".cache")
        folder = os.path.join(base, "softmaxlib")
    return folder


def cache_path(key):
    """The cache file of `key` (machine_key()), or None when SOFTMAXLIB_CACHE_DIR turns it off. Named
    by a CRC of the key (zlib is loaded already; hashlib would cost 2.5 ms), which the file also
    holds and _read compares."""
    import json
    import zlib

    folder = cache_folder()
    if folder is None:
        return None
    return os.path.join(folder, f"auto-{zlib.crc32(json.dumps(key, sort_keys=True).encode()):08x}.json")


def _read(path, key):
    """The cache file's document if it is there, readable and for this key; else None."""
    import json

    try:
        with open(path) as file:
            document = json.load(file)
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) and document.get("key") == key else None


def _parse(document, state):
    """Adds what a cache file holds to state; a malformed part is ignored (it will be probed)."""
    for threads, data in document.get("memory", {}).items():
        try:
            state["memory"].setdefault(int(threads), Memory.from_dict(data))
        except (KeyError, TypeError, ValueError):
            pass
    for backend, kernels in document.get("kernels", {}).items():
        if isinstance(kernels, dict) and all(isinstance(v, (int, float)) for v in kernels.values()):
            state["kernels"].setdefault(backend, dict(kernels))
    for backend, functions in document.get("tuned", {}).items():
        for function, by_threads in (functions.items() if isinstance(functions, dict) else ()):
            for threads, entry in (by_threads.items() if isinstance(by_threads, dict) else ()):
                if isinstance(entry, dict) and (entry.get("elements") is None or isinstance(entry["elements"], int)):
                    state["tuned"].setdefault((backend, function, int(threads)), entry)


def _document(state):
    tuned = {}
    for (backend, function, threads), entry in state["tuned"].items():
        tuned.setdefault(backend, {}).setdefault(function, {})[str(threads)] = entry
    return {"key": state["key"], "memory": {str(t): m.as_dict() for t, m in sorted(state["memory"].items())},
            "kernels": state["kernels"], "tuned": tuned}


def _save(state):
    """Writes what this process knows to the cache file, with what other processes added since it
    was read; atomically (a temporary file renamed). A folder that cannot be written only means
    that the next process probes again."""
    import json

    path = state["path"]
    if path is None:
        return
    document = _read(path, state["key"])
    if document is not None:
        _parse(document, state)
    temporary = f"{path}.tmp{os.getpid()}"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(temporary, "w") as file:
            json.dump(_document(state), file, indent=1)
        os.replace(temporary, path)
        state["saved"] = True
    except OSError as error:
        state["save_error"] = str(error)
        try:
            os.remove(temporary)
        except OSError:
            pass


def _load():
    """This process's state: {"key", "path", "memory": {threads: Memory}, "kernels": {backend:
    {id: ns}}, "tuned": {(backend, function, threads): entry}, "from_file": bool}, read from the
    cache file on first use."""
    global _state
    with _lock:
        if _state is None:
            key = machine_key()
            state = {"key": key, "path": cache_path(key), "memory": {}, "kernels": {}, "tuned": {},
                     "from_file": False}
            document = None if state["path"] is None else _read(state["path"], key)
            if document is not None:
                _parse(document, state)
                state["from_file"] = True
            _state = state
        return _state


def reset():
    """Forgets what this process knows (the tests' way to start afresh; the file stays)."""
    global _state
    with _lock:
        _state = None
        PROBES.clear()


def memory(threads):
    """Memory for `threads` threads: from this process or the cache file, else probed now."""
    with _lock:
        state = _load()
        if threads not in state["memory"]:
            state["memory"][threads] = probe_memory(threads)
            PROBES.append(("memory", threads))
            _save(state)
        return state["memory"][threads]


def hot_kernels(backend, kernel_ids):
    """{kernel id: ns per element in L2} on `backend`: from this process or the cache file, else
    probed now."""
    with _lock:
        state = _load()
        known = state["kernels"].get(backend, {})
        if not all(kernel in known for kernel in kernel_ids):
            state["kernels"][backend] = {**known, **probe_kernels(backend, kernel_ids)}
            PROBES.append(("kernels", backend))
            _save(state)
        return state["kernels"][backend]


def tuned(backend, function, threads):
    """tune()'s entry for the case, or None."""
    return _load()["tuned"].get((backend, function, threads))


# --- softmaxlib tune ------------------------------------------------------------------------

def tune_grid(guess):
    """tune()'s row lengths: quarter powers of two from an eighth of the model's guess (TUNE_FROM
    without one) up to TUNE_TO, and TUNE_TO."""
    from ._auto import SHORT_ROW

    start = min(max(SHORT_ROW, guess // 8) if guess else TUNE_FROM, TUNE_TO)
    steps = math.ceil(TUNE_STEPS * math.log2(TUNE_TO / start) - 0.5)  # none within half a step of TUNE_TO
    return [round(start * 2 ** (step / TUNE_STEPS)) for step in range(steps)] + [TUNE_TO]


def measure_crossover(backend, function, threads, grid, repeats, progress=None):
    """Times the auto path's two kernels cold (bench.time_flushed: x and y flushed from every cache
    level before each call, as `softmaxlib bench` times rows above 2 MiB) on one row of each length
    of grid, in turn, `repeats` times; returns (crossover, in-cache medians, beyond medians) in ns
    per element, the crossover by last_in_cache."""
    from . import bench
    from ._auto import CHOICES

    in_cache, beyond, _ = CHOICES[function, backend]
    calls = {kernel: _bindings.bound(kernel, backend, np.float32) for kernel in (in_cache, beyond)}
    x_all = bench.draw("normal", max(grid))
    y_all = np.zeros_like(x_all)  # written: no page faults in the timed calls
    medians = {in_cache: [], beyond: []}
    for n in grid:
        x, y = x_all[:n].reshape(1, n), y_all[:n].reshape(1, n)
        samples = {in_cache: [], beyond: []}
        for repeat in range(repeats):
            for kernel, call in calls.items():
                timing = bench.time_flushed(call, (x, y, threads), [x, y], repeats=1, warmup=int(repeat == 0),
                                            min_repeats=1)
                samples[kernel].append(timing.median_ns / n)
        for kernel in calls:
            medians[kernel].append(float(np.median(samples[kernel])))
        if progress is not None:
            progress(n, medians[in_cache][-1], medians[beyond][-1])
    return last_in_cache(grid, medians[in_cache], medians[beyond]), medians[in_cache], medians[beyond]


def store_tuned(backend, function, threads, entry):
    """Keeps a tuned crossover in this process and the cache file: it overrides the model."""
    with _lock:
        state = _load()
        state["tuned"][backend, function, threads] = entry
        _save(state)


def smoothed(ratios):
    """Each ratio replaced by the median of it and its neighbours: one noisy size (another process
    on the core) must not move a crossover measured on a flat stretch."""
    return [sorted(ratios[max(0, i - 1):i + 2])[len(ratios[max(0, i - 1):i + 2]) // 2] for i in range(len(ratios))]


def _size(n):
    return f"2^{math.log2(n):.2f}" if n else "-"


def _int_list(text):
    import argparse

    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad list {text!r}: use integers such as 1,2") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"bad list {text!r}: positive integers, comma-separated")
    return values


def tune_command(argv):
    """`softmaxlib tune`: measures the auto path's crossovers here and keeps them in the cache file,
    where they override the model's."""
    import argparse

    from . import _auto
    from ._threads import available_cores

    cases = [(function, backend) for (function, backend), entry in _auto.CHOICES.items()
             if entry[1] and backend in _dispatch.USABLE_BACKENDS]
    parser = argparse.ArgumentParser(
        prog="softmaxlib tune",
        description="Measures where the auto path of softmaxlib.softmax and log_softmax should switch from the "
                    "three-pass kernel to two-pass on this machine: both kernels timed cold on one row of each "
                    "length, from an eighth of the model's guess to 2^26, and keeps the crossover in the cache file "
                    f"({cache_folder() or 'off: ' + CACHE_DIR_ENV + '=off'}), where it overrides the model's. "
                    "runtime_info() shows it.")
    parser.add_argument("--threads", type=_int_list, default=None,
                        help=f"comma-separated thread counts (default: 1 and every available core, "
                             f"{available_cores()})")
    parser.add_argument("--backends", default=None,
                        help=f"comma-separated backends (default: {','.join(dict.fromkeys(b for _, b in cases))})")
    parser.add_argument("--functions", default=None, help="comma-separated: softmax, log_softmax (default: both)")
    parser.add_argument("--repeats", type=int, default=5, help="cold calls per kernel and row length (default 5)")
    parser.add_argument("--reset", action="store_true",
                        help="delete this machine's cache file (probes and tunings) and stop")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, not {args.repeats}")
    key = machine_key()
    path = cache_path(key)
    if args.reset:
        if path is not None and os.path.exists(path):
            os.remove(path)
            print(f"removed {path}")
        else:
            print("no cache file to remove")
        return 0
    backends = args.backends.split(",") if args.backends else None
    functions = args.functions.split(",") if args.functions else None
    for name, chosen, known in (("backend", backends, {b for _, b in cases}),
                                ("function", functions, {f for f, _ in cases})):
        for value in chosen or ():
            if value not in known:
                parser.error(f"no crossover to tune for {name} {value!r} here; the choices are "
                             f"{', '.join(sorted(known))}")
    cases = [(f, b) for f, b in cases if (backends is None or b in backends) and (functions is None or f in functions)]
    cores = available_cores()
    thread_counts = list(dict.fromkeys(min(t, cores) for t in (args.threads or [1, cores])))
    print(f"softmaxlib {__version__} tune on {key['cpu']}, {cores} cores available; cache file: "
          f"{path or 'none (' + CACHE_DIR_ENV + '=off): nothing is kept'}")
    for function, backend in cases:
        in_cache, beyond, _ = _auto.CHOICES[function, backend]
        for threads in thread_counts:
            guess = _auto.modeled(function, backend, threads)
            grid = tune_grid(guess)
            print(f"{function} on {backend}, {threads} thread{'s' if threads > 1 else ''}: the model's crossover "
                  f"{_size(guess) if guess else 'none'}; timing {in_cache} and {beyond} cold at "
                  f"{_size(grid[0])} .. {_size(grid[-1])} ({len(grid)} lengths, {args.repeats} calls each)")
            print(f"  {'n':>8} {'8n MiB':>8} {in_cache:>22} {beyond:>22}  ns per element")
            _, in_ns, beyond_ns = measure_crossover(
                backend, function, threads, grid, args.repeats,
                progress=lambda n, a, b: print(f"  {_size(n):>8} {8 * n / 2 ** 20:>8.1f} {a:>22.3f} {b:>22.3f}",
                                               flush=True))
            ratios = smoothed([b / a for a, b in zip(in_ns, beyond_ns)])
            elements = last_in_cache(grid, [1.0] * len(grid), ratios)
            store_tuned(backend, function, threads, {
                "elements": elements, "model": guess, "sizes": grid, "repeats": args.repeats,
                "in_cache_ns": [round(t, 4) for t in in_ns], "beyond_ns": [round(t, 4) for t in beyond_ns]})
            verdict = f"{in_cache} up to {_size(elements)} elements ({elements}), {beyond} above" if elements \
                else f"{in_cache} at every length"
            print(f"  measured: {verdict}")
    _auto.forget()
    if path is not None and not _load().get("from_file"):
        print(f"could not write {path}: the crossovers measured hold for this process only")
    return 0

"""The one benchmark harness: cases from the kernel catalog, one timing method, a roofline.

The command `softmaxlib bench` (softmaxlib/_bench_cli.py) and the pytest-benchmark suite
(bench/test_bench_kernels.py) are built on it; it also serves scripts and notebooks:

- A Case is one thing to time: a catalog kernel (softmaxlib/_catalog.py, called through
  softmaxlib/_bindings.py), the auto path (softmaxlib.softmax / log_softmax, allocating or with
  out=), a quantization kernel, or a peer (the NumPy expressions; scipy.special.softmax and
  torch.softmax on one thread, when installed). all_cases() lists them by name.
- run(cases, sizes, backends, inputs=...) times cases x backends x sizes x input distributions
  and returns one Result per case; latency(sizes) times the public calls on one short row
  against np.exp, SciPy and PyTorch, and their overhead over the bare kernel.
- time_callable(func, arg_sets) is the one timing method: warm-up, then the median of repeated
  samples of many calls; time_flushed(func, args, buffers) times cold calls one by one, each
  after flushing the cache lines of its buffers.
- bandwidth(nbytes, threads=k) measures memory bandwidth with the C probe streams
  (csrc/softmaxlib.h: sml_stream_read, sml_stream_read_write), on k threads at once for k > 1
  (time_parallel: each thread streams its own slice of one flushed buffer); roofline_ns() turns a
  kernel's traffic, read from the catalog, into the time memory alone would take at that
  bandwidth.
- Workers: every case of the library and torch.softmax take a thread count (run(...,
  workers=[1, 2])): the library's calls get it as `workers=` (the bound kernels as their last
  argument), torch as torch.set_num_threads. The roofline of a case on k workers is computed from
  the bandwidth of min(k, available cores) threads, measured in the same run. threads_suite()
  is issue 12's table: the public functions on 1 and 2 workers, torch.softmax at its default
  thread count and at one, and the k-thread rooflines.
- optim_suite(cases, sizes) times optimizer steps (optim_cases: softmaxlib.optim's fused 8-bit
  steps on every backend, torch.optim's float32 steps and bitsandbytes' 8-bit ones when
  installed) at one thread and at each library's default, with ratios to the torch and
  bitsandbytes step of each rule and the roofline of each step's traffic (the catalog's, or
  float32_traffic for torch's).
- INPUTS names the input distributions (normal = N(0, 1), uniform80 = U(-80, 80), uniform1000 =
  U(-1000, 1000)); draw(name, shape, seed) draws float32 values from one of them.

Conventions:

- n is the row length (for quantization, the number of elements). Small rows are timed as a
  batch of `rows` rows (about HOT_ELEMENTS elements, in+out within the L2 cache) so the call
  overhead is amortised, unless a size is given as a shape (rows, n); every per-element figure
  divides by rows * n.
- A case is "hot" when the data of one call (its inputs and outputs) are at most COLD_BYTES
  (2 MiB): the same buffers are reused, so they stay in cache. Above that it is "cold", on every
  machine whatever cache sizes its CPU reports: before each timed call, outside the timed region,
  every cache line of its buffers is flushed from all cache levels (sml_flush_cache_lines), and
  the calls are timed one by one (time_flushed). Without the C extension cold calls rotate instead
  over buffer sets totalling ROTATION_BYTES (cold_notes() says so).
- Effective bandwidth, GB/s = (bytes in + bytes out) / time (8 bytes per element for softmax,
  5 for quantization), whatever the algorithm's actual traffic, so algorithms with different
  numbers of passes compare fairly.
- Inputs are float32 from numpy's default_rng(seed), the same seed for every distribution. On
  Intel cores every operation that produces a subnormal or underflowing float takes a microcode
  assist, so wide-range rows, whose exp(x - max) underflows for about half the elements
  (U(-80, 80)) or nearly all (U(-1000, 1000), the Two-Pass paper's benchmark input), can be many
  times slower than N(0, 1) rows; AMD cores barely notice.
- "x NumPy" = the NumPy expression's time / the case's time (above 1: faster than NumPy), on the
  same sizes and inputs in the same run.
- The roofline fraction = roofline time / measured time, for cold cases only: the roofline is
  computed from the bandwidth of main memory.
"""
import contextlib
import gc
import importlib
import importlib.util
import inspect
import itertools
import math
import statistics
import sys
import threading
import time
from dataclasses import asdict, dataclass, replace
from functools import partial
from typing import Callable, Optional

import numpy as np

from . import _auto, _bindings, _catalog, _codebooks, _dispatch, _threads

DEFAULT_SIZES = (1000, 100_000, 1 << 24)
HOT_ELEMENTS = 1 << 16       # a batch of short rows: 256 KiB in + 256 KiB out, inside L2
MIN_SAMPLE_NS = 1_000_000    # enough calls per sample for ~1 ms
MAX_CALLS_PER_SAMPLE = 10_000
MAX_CASE_SECONDS = 1.0       # timed-sample budget per case; slow cases get fewer repeats
MIN_REPEATS = 3
QUANT_BLOCKSIZE = 4096       # quantize_blockwise's default


# --- input distributions ------------------------------------------------------------------------

INPUTS = {  # name, as `softmaxlib bench --inputs` spells it: the distribution, as papers write it
    "normal": "N(0, 1)",
    "uniform80": "U(-80, 80)",
    "uniform1000": "U(-1000, 1000)",
}
_UNIFORM_HALF_WIDTH = {"uniform80": 80, "uniform1000": 1000}


def check_input(name):
    """Raises ValueError unless name is one of INPUTS."""
    if name not in INPUTS:
        raise ValueError(f"unknown input {name!r}; the inputs are "
                         f"{', '.join(f'{key} = {label}' for key, label in INPUTS.items())}")


def input_names(inputs):
    """inputs (one name of INPUTS or several) as a list, duplicates dropped; ValueError if it is
    empty or names an unknown distribution."""
    names = list(dict.fromkeys([inputs] if isinstance(inputs, str) else inputs))
    if not names:
        raise ValueError("no inputs given")
    for name in names:
        check_input(name)
    return names


def draw(distribution, shape, seed=0):
    """float32 values of `shape` from `distribution` (a name of INPUTS), drawn from numpy's
    default_rng(seed): standard_normal for normal; random (in [0, 1)) scaled to [-w, w] for
    uniform<w>, in float32 throughout."""
    check_input(distribution)
    rng = np.random.default_rng(seed)
    if distribution == "normal":
        return rng.standard_normal(shape, dtype=np.float32)
    half_width = np.float32(_UNIFORM_HALF_WIDTH[distribution])
    x = rng.random(shape, dtype=np.float32)
    x *= 2 * half_width
    x -= half_width
    return x


# --- hot and cold -------------------------------------------------------------------------------

# A call whose data (bytes in + bytes out) exceed this is timed cold. A property of the size, not of
# the cache sizes the CPU reports (a VM may report its host's): 2 MiB is at least the L2 of a core
# of current x86-64 CPUs, so hot cases of up to 2 MiB run from L2 or L3, and cold ones from memory.
COLD_BYTES = 2 << 20
# Without the C extension (no flush), a cold case rotates over buffer sets totalling this much, so
# that a call finds its data evicted by the calls on the other sets. Fixed, not sized from the
# reported last-level cache: 256 MiB exceeds the L3 that one core can use on most CPUs (e.g. 96 MiB
# per CCD on AMD's largest), at most 2 x 128 MiB of memory for 2^24 rows; a cache larger than
# 256 MiB would hold the sets, and those cold figures would be too fast.
ROTATION_BYTES = 256 << 20
PROBE_BYTES = 64 << 20  # the bandwidth probe's buffer, flushed before each pass


def is_hot(set_bytes):
    """Whether a call on set_bytes of data (in + out) is timed hot: at most COLD_BYTES."""
    return set_bytes <= COLD_BYTES


def can_flush():
    """Whether cold calls flush the cache (the C extension is built) rather than rotate."""
    return _dispatch.lib is not None


def flush(arrays):
    """Evicts every cache line of each array (contiguous NumPy arrays) from all cache levels,
    dirty lines written back first (sml_flush_cache_lines: CLFLUSH per 64 bytes, then MFENCE)."""
    ffi, lib = _dispatch.ffi, _dispatch.lib
    for array in arrays:
        lib.sml_flush_cache_lines(ffi.from_buffer(array), array.nbytes)


def rotation_count(set_bytes):
    """Buffer sets of set_bytes each that a cold case rotates over without the C extension:
    at least 2, totalling at least ROTATION_BYTES."""
    return max(2, math.ceil(ROTATION_BYTES / set_bytes))


def cold_notes():
    """Lines on how cold cases are made cold here, when it is not the flush."""
    if can_flush():
        return []
    return [f"C extension not built: cold cases rotate over buffer sets of {ROTATION_BYTES >> 20} MiB in all "
            f"instead of flushing the cache before each call (a cache that large would hold them)"]


# --- timing -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Timing:
    """Times of one call in ns: median and min over `samples` samples of `calls_per_sample` calls."""

    median_ns: float
    min_ns: float
    samples: int
    calls_per_sample: int


@contextlib.contextmanager
def _gc_off():
    """The garbage collector off while timing (a collection inside a sample would be timed), and
    back as it was after."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def time_callable(func, arg_sets=((),), *, repeats=15, warmup=1, min_sample_ns=MIN_SAMPLE_NS,
                  max_seconds=MAX_CASE_SECONDS, min_repeats=MIN_REPEATS):
    """Times func(*args), rotating args over arg_sets (one set per call, in turn).

    Warm-up: `warmup` calls on every argument set (page faults, JIT compilation, caches). A
    sample is k back-to-back calls timed with time.perf_counter_ns, with k chosen so a sample
    lasts about min_sample_ns (at most MAX_CALLS_PER_SAMPLE calls), from calibration batches of
    1, 10, 100, ... calls until one lasts a tenth of that (one call of a slow function).
    Samples: `repeats`, cut down to what fits in max_seconds but never below min_repeats. The
    garbage collector is off while timing. The loop adds some 30 ns to every call (a call of
    len(x) shows it), the same for everything timed.
    Out-of-cache timings: time_flushed, or several argument sets whose buffers total more than
    the cache (rotation_count).
    """
    arg_sets = [tuple(args) for args in arg_sets]
    if not arg_sets:
        raise ValueError("arg_sets is empty")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, not {repeats}")
    for _ in range(warmup):
        for args in arg_sets:
            func(*args)
    rotation = itertools.cycle(arg_sets)
    clock = time.perf_counter_ns

    def sample(calls):
        batch = itertools.islice(rotation, calls)  # made before the clock starts
        start = clock()
        for args in batch:
            func(*args)
        return max(clock() - start, 1)

    with _gc_off():
        # one call alone would time the clock as much as the call: batches until one is long enough
        calls, elapsed = 1, sample(1)
        while elapsed < min_sample_ns / 10 and calls < MAX_CALLS_PER_SAMPLE:
            calls *= 10
            elapsed = sample(calls)
        per_call = elapsed / calls
        per_sample = max(1, min(MAX_CALLS_PER_SAMPLE, math.ceil(min_sample_ns / per_call)))
        affordable = int(max_seconds * 1e9 // (per_call * per_sample))
        samples = max(min(repeats, min_repeats), min(repeats, affordable))
        times = [sample(per_sample) / per_sample for _ in range(samples)]
    return Timing(median_ns=statistics.median(times), min_ns=min(times), samples=len(times),
                  calls_per_sample=per_sample)


def time_flushed(func, args, buffers, *, repeats=15, warmup=1, max_seconds=MAX_CASE_SECONDS,
                 min_repeats=MIN_REPEATS):
    """Times func(*args) cold: `warmup` calls, then per sample one call timed alone with
    time.perf_counter_ns, after flushing every cache line of `buffers` (the arrays it reads and
    writes) outside the timed region. Samples: `repeats`, fewer once max_seconds (flushes
    included) have passed, but never below min_repeats. The garbage collector is off while
    timing. Needs the C extension (can_flush())."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, not {repeats}")
    args = tuple(args)
    for _ in range(warmup):
        func(*args)
    clock = time.perf_counter_ns
    enough = min(repeats, min_repeats)
    times = []
    with _gc_off():
        began = clock()
        while len(times) < repeats:
            flush(buffers)
            start = clock()
            func(*args)
            times.append(max(clock() - start, 1))
            if len(times) >= enough and clock() - began > max_seconds * 1e9:
                break
    return Timing(median_ns=statistics.median(times), min_ns=min(times), samples=len(times), calls_per_sample=1)


@dataclass(frozen=True)
class ParallelTiming(Timing):
    """A Timing of parts run at once (time_parallel), with the spread of their starts: the median
    over samples of (last part's start - first part's start), in ns."""

    start_skew_ns: float = 0.0


def time_parallel(parts, buffers=(), *, repeats=15, warmup=1, max_seconds=MAX_CASE_SECONDS, min_repeats=MIN_REPEATS):
    """Times zero-argument callables `parts` run at once, one thread each: parts[0] on the calling
    thread (as a pool's caller takes part in its own job), each other part on a helper thread
    started for this measurement and joined at the end. Per sample: flush `buffers` (the arrays
    the parts touch; not timed, and only with the C extension), start every part together on a
    barrier, and time from the first part's start to the last part's end, so a slow or late part
    counts in full. The parts must release the GIL to overlap (cffi's C calls and NumPy's loops
    do). `warmup` samples, then `repeats` (fewer once max_seconds have passed, never below
    min_repeats); the garbage collector is off while timing. Returns a ParallelTiming: the median
    and min of the samples, and the median start skew (a measure of how together they started).
    An exception in a part is raised here, after every helper has stopped."""
    parts = list(parts)
    if not parts:
        raise ValueError("no parts to time")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, not {repeats}")
    buffers = list(buffers) if can_flush() else []
    count, clock = len(parts), time.perf_counter_ns
    start, done = threading.Barrier(count), threading.Barrier(count)
    stamps, errors = [(0, 0)] * count, []

    def run_part(index):
        begin = clock()
        parts[index]()
        stamps[index] = (begin, clock())

    def helper(index):
        try:
            while True:
                start.wait()
                run_part(index)
                done.wait()
        except threading.BrokenBarrierError:  # stopped by the caller (or another part failed)
            return
        except BaseException as error:  # noqa: B902 -- handed to the caller
            errors.append(error)
            start.abort()
            done.abort()

    def sample():
        if buffers:
            flush(buffers)
        start.wait()
        run_part(0)
        done.wait()
        first = min(begin for begin, _ in stamps)
        return max(max(end for _, end in stamps) - first, 1), max(begin for begin, _ in stamps) - first

    helpers = [threading.Thread(target=helper, args=(index,), name=f"softmaxlib-bench-{index}", daemon=True)
               for index in range(1, count)]
    for thread in helpers:
        thread.start()
    times, skews = [], []
    try:
        for _ in range(warmup):
            sample()
        enough = min(repeats, min_repeats)
        with _gc_off():
            began = clock()
            while len(times) < repeats:
                elapsed, skew = sample()
                times.append(elapsed)
                skews.append(skew)
                if len(times) >= enough and clock() - began > max_seconds * 1e9:
                    break
    except threading.BrokenBarrierError:
        if errors:
            raise errors[0] from None
        raise
    finally:
        start.abort()
        done.abort()
        for thread in helpers:
            thread.join()
    return ParallelTiming(median_ns=statistics.median(times), min_ns=min(times), samples=len(times),
                          calls_per_sample=1, start_skew_ns=statistics.median(skews))


# --- bandwidth probe and roofline ---------------------------------------------------------------

@dataclass(frozen=True)
class Bandwidth:
    """Memory bandwidth from streaming over one buffer of `nbytes`, in GB/s (1e9 bytes/s), with
    `threads` threads at once (each over its own slice of the buffer).

    read_gb_s:       nbytes / time of a read-only pass (XOR of all 64-bit words).
    read_write_gb_s: 2 * nbytes / time of a read-modify-write pass (add 1 to every word in
                     place): bytes read and bytes written both count.
    source: which streams measured it: the C probe, or NumPy when the C extension is not built.
    start_skew_ns: with several threads, the median spread of their starts within a pass (the
                   pass is timed from the first start to the last end); 0 for one thread.
    """

    nbytes: int
    read_gb_s: float
    read_write_gb_s: float
    source: str
    samples: int
    threads: int = 1
    start_skew_ns: float = 0.0

    def t_read(self, nbytes):
        """Roofline time in ns to read nbytes at the read-only rate (bytes / (GB/s) = ns)."""
        return nbytes / self.read_gb_s

    def t_read_write(self, nbytes):
        """Roofline time in ns to move nbytes, reads plus writes, at the read+write rate."""
        return nbytes / self.read_write_gb_s

    def as_dict(self):
        return asdict(self)


def _slices(count, parts):
    """[(start, end)] of `parts` contiguous slices of count 64-bit words, each starting on a
    64-byte boundary of the buffer (no two threads share a cache line), covering all of it."""
    bounds = [count * index // parts // 8 * 8 for index in range(parts)] + [count]
    return list(zip(bounds[:-1], bounds[1:]))


def bandwidth(nbytes=None, *, repeats=7, threads=1):
    """Measures read and read+write bandwidth over a buffer of nbytes (rounded down to 8 bytes),
    with `threads` threads streaming at once.

    With the C extension: the C probe streams over PROBE_BYTES by default, measured cold as the
    cold cases are: one warm-up pass, then the median of `repeats` passes each timed alone after
    flushing the buffer from every cache level (time_flushed), so it is main memory's bandwidth
    whatever the cache sizes. Without it: np.bitwise_xor.reduce and np.add(words, 1, out=words)
    over ROTATION_BYTES by default, reused (time_callable), as cold cases rotate there.
    Bandwidth.source says which.

    threads k > 1: the buffer is cut into k slices on 64-byte boundaries, and each pass runs the
    same stream on every slice at once, one thread each (time_parallel: the calling thread and
    k - 1 helpers; cffi and NumPy release the GIL), after flushing the whole buffer; a pass lasts
    from the first slice's start to the last one's end. The bandwidth is the whole buffer's bytes
    over that time: what k threads get together, as a kernel on k workers would.
    """
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive int, not {threads!r}")
    if nbytes is None:
        nbytes = PROBE_BYTES if can_flush() else ROTATION_BYTES
    count = int(nbytes) // 8
    if count < 1:
        raise ValueError(f"nbytes must be at least 8, not {nbytes}")
    words = np.ones(count, dtype=np.uint64)  # written, so the pages exist before timing
    reads, read_writes = [], []
    for first, end in _slices(count, threads):
        part = words[first:end]
        if _dispatch.lib is not None:
            ffi, lib = _dispatch.ffi, _dispatch.lib
            if part.size:
                pointer = ffi.from_buffer("uint64_t[]", part, require_writable=True)
                reads.append(partial(lib.sml_stream_read, pointer, part.size))
                read_writes.append(partial(lib.sml_stream_read_write, pointer, part.size))
            else:  # more threads than 64-byte lines: nothing for this one
                reads.append(_nothing)
                read_writes.append(_nothing)
        else:
            reads.append(partial(np.bitwise_xor.reduce, part))
            read_writes.append(partial(np.add, part, 1, out=part))
    source = ("C probe (sml_stream_read, sml_stream_read_write)" if _dispatch.lib is not None
              else "NumPy fallback (C extension not built)")
    if threads > 1:
        budget = dict(repeats=repeats, max_seconds=0.5)
        read_time = time_parallel(reads, [words], **budget)
        read_write_time = time_parallel(read_writes, [words], **budget)
        skew = statistics.median([read_time.start_skew_ns, read_write_time.start_skew_ns])
    elif can_flush():
        read_time = time_flushed(reads[0], (), [words], repeats=repeats, max_seconds=0.5)
        read_write_time = time_flushed(read_writes[0], (), [words], repeats=repeats, max_seconds=0.5)
        skew = 0.0
    else:
        budget = dict(repeats=repeats, min_sample_ns=200_000, max_seconds=0.5)
        read_time = time_callable(reads[0], **budget)
        read_write_time = time_callable(read_writes[0], **budget)
        skew = 0.0
    return Bandwidth(nbytes=count * 8, read_gb_s=count * 8 / read_time.median_ns,
                     read_write_gb_s=2 * count * 8 / read_write_time.median_ns, source=source,
                     samples=min(read_time.samples, read_write_time.samples), threads=threads, start_skew_ns=skew)


def _nothing():
    pass


def roofline_threads(workers):
    """The threads whose bandwidth bounds a call on `workers` workers: at most the cores this
    process may run on (the C pool has no more threads than that)."""
    return max(1, min(int(workers), _threads.available_cores()))


def bandwidths(threads=(1,), nbytes=None, *, repeats=7, measured=None):
    """{k: Bandwidth of k threads} for every k of `threads`, measured one after another in this
    run (bandwidth(nbytes, threads=k)); `measured`: Bandwidths already at hand (a Bandwidth, a
    list of them, or such a dict), kept instead of measuring their thread counts again."""
    known = _bandwidth_map(measured)
    for count in dict.fromkeys(int(k) for k in threads):
        if count not in known:
            known[count] = bandwidth(nbytes, repeats=repeats, threads=count)
    return dict(sorted(known.items()))


def _bandwidth_map(bw):
    """bw (None, a Bandwidth, an iterable of them or a dict {threads: Bandwidth}) as a dict."""
    if bw is None:
        return {}
    if isinstance(bw, Bandwidth):
        return {bw.threads: bw}
    if isinstance(bw, dict):
        return {int(k): v for k, v in bw.items()}
    return {b.threads: b for b in bw}


def traffic_split(kernel_id):
    """(read-only, read+write) bytes a catalog kernel moves per element: reads of x are
    read-only traffic; every byte of y moved (stored, or loaded again to be rescaled) is
    read+write traffic (the catalog's `read_write`)."""
    kernel = _catalog.KERNELS[kernel_id]
    return kernel.traffic - kernel.read_write, kernel.read_write


def roofline_ns(kernel_id, elements, bw):
    """Lower bound of the time in ns for a catalog kernel over `elements` elements, from memory.

    bw.t_read(read-only bytes) + bw.t_read_write(read+write bytes), bytes = elements x the
    bytes of traffic_split. A store is charged at the read+write rate per byte stored, as if it
    were written without reading its cache line first; a plain store (no non-temporal hint) also
    reads the line for ownership, so for store-heavy passes this bound is optimistic.
    """
    return traffic_roofline_ns(*traffic_split(kernel_id), elements, bw)


def traffic_roofline_ns(read_only, read_write, elements, bw):
    """roofline_ns of any traffic: `elements` elements each reading read_only bytes and moving
    read_write bytes (stores), at bw's read and read+write rates."""
    return bw.t_read(elements * read_only) + bw.t_read_write(elements * read_write)


# --- the NumPy expressions ----------------------------------------------------------------------

def numpy_softmax(x):
    """The NumPy baseline users write: e = exp(x - max); e / sum(e), float32, along the last axis."""
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def numpy_log_softmax(x):
    """The NumPy log-softmax baseline: s = x - max; s - log(sum(exp(s)))."""
    shifted = x - x.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def numpy_stable_s(x):
    """StableMax's s(x) = x + 1 for x >= 0, 1 / (1 - x) below, as a NumPy expression."""
    return np.where(x >= 0, x + 1, 1 / (1 - np.minimum(x, 0)))


def numpy_stablemax(x):
    """The NumPy StableMax baseline: s / sum(s)."""
    s = numpy_stable_s(x)
    return s / s.sum(-1, keepdims=True)


def numpy_log_stablemax(x):
    """The NumPy log-StableMax baseline: log s - log(sum(s))."""
    s = numpy_stable_s(x)
    return np.log(s) - np.log(s.sum(-1, keepdims=True))


def numpy_stablemax_cross_entropy(x, labels):
    """Mean StableMax cross-entropy and its gradient, as a float64 NumPy expression (the
    paper's code computes in float64)."""
    x64 = x.astype(np.float64)
    s = numpy_stable_s(x64)
    p = s / s.sum(-1, keepdims=True)
    rows = np.arange(x.shape[0])
    loss = -np.log(p[rows, labels]).mean()
    p[rows, labels] -= 1
    return loss, (p / (1 + np.abs(x64)) / x.shape[0]).astype(np.float32)


def numpy_quantize(x, midpoints, blocksize):
    """The NumPy reference of quantize_blockwise: absmax per block, then searchsorted over the
    codebook's midpoints (rounded down, so that side="left" counts the midpoints below each
    value). A last partial block is padded with zeros, which change no absmax."""
    n = x.size
    blocks = -(-n // blocksize)
    if n % blocksize:
        x = np.concatenate([x, np.zeros(blocks * blocksize - n, x.dtype)])
    x = x.reshape(blocks, blocksize)
    absmax = np.abs(x).max(axis=1)
    scaled = x * (np.float32(1) / absmax)[:, None]
    return np.searchsorted(midpoints, scaled, side="left").astype(np.uint8).reshape(-1)[:n], absmax


def numpy_dequantize(q, code, absmax, blocksize):
    """The NumPy reference of dequantize_blockwise: code[q] * absmax of each block."""
    if q.size % blocksize:
        return code[q] * np.repeat(absmax, blocksize)[:q.size]
    return (code[q].reshape(-1, blocksize) * absmax[:, None]).reshape(-1)


NUMPY_BASELINES = {"softmax": numpy_softmax, "log_softmax": numpy_log_softmax,
                   "stablemax": numpy_stablemax, "log_stablemax": numpy_log_stablemax}
# the public functions with a NumPy case, numpy_<function>: the baselines of their kernels
NUMPY_FUNCTIONS = (*NUMPY_BASELINES, "stablemax_cross_entropy", "quantize_blockwise", "dequantize_blockwise")


def sum_error(y, log_output):
    """max over rows of |sum of the row's probabilities - 1| (NaN if any is not finite)."""
    y = np.asarray(y, dtype=np.float64)
    total = np.exp(y).sum(-1) if log_output else y.sum(-1)
    return float(np.max(np.abs(total - 1.0))) if total.size else 0.0


# --- buffers ------------------------------------------------------------------------------------

def batch_rows(n):
    """Rows per call for row length n: enough for about HOT_ELEMENTS elements, at least 1."""
    return max(1, HOT_ELEMENTS // n)


def make_inputs(n, rows=None, seed=0, distribution="normal", count=1):
    """`count` buffer sets [(x, y)] of shape (rows, n) float32 for row length n. x is drawn from
    `distribution` (a name of INPUTS), the same values in every set; y is zeroed."""
    rows = batch_rows(n) if rows is None else rows
    x = draw(distribution, (rows, n), seed)
    sets = []
    for index in range(count):
        y = np.empty_like(x)
        y.fill(0.0)  # touch every page now, not in the first timed call
        sets.append((x if index == 0 else x.copy(), y))
    return sets


def make_quant_inputs(n, blocksize=QUANT_BLOCKSIZE, seed=0, distribution="normal", count=1):
    """`count` buffer sets [(x, q, absmax, out)] of n elements: x float32 drawn from
    `distribution`, q and absmax its codes (signed dynamic map) from the NumPy reference, so
    dequantize has real input, out float32 zeroed."""
    x = draw(distribution, n, seed)
    q, absmax = numpy_quantize(x, _codebooks.search_tables(_codebooks.create_dynamic_map()).midpoints[:-1],
                               blocksize)
    return [(x.copy(), q.copy(), absmax.copy(), np.zeros(n, np.float32)) for _ in range(count)]


@dataclass(frozen=True)
class Buffers:
    """The buffer sets that the cases of one kind, size and input share. kind "rows": sets
    [(x, y)] of (rows, n) float32; kind "quant": [(x, q, absmax, out)] of n elements (rows 1),
    for `blocksize`. Cases only write their outputs, so they can share them. cache: "cold" if the
    calls are timed out of cache, then flush says how: True, flush the set's arrays before each
    call (one set); False, rotate over the sets."""

    kind: str
    n: int
    rows: int
    input: str
    blocksize: Optional[int]
    cache: str
    sets: list
    flush: bool = False

    @property
    def elements(self):
        return self.rows * self.n


def make_buffers(kind, n, distribution="normal", *, blocksize=None, batch=True, cold=True, rows=None):
    """Buffers of a kind for size n. batch: short rows batched to ~HOT_ELEMENTS (else one row);
    rows: that many rows of n instead (for quantization, rows * n elements). cold: a call on more
    than COLD_BYTES is timed cold (flushed, or rotating over rotation_count() sets without the C
    extension); else every size is timed hot, on one set reused, its data in whatever cache level
    holds them."""
    if rows is not None and rows < 1:
        raise ValueError(f"rows must be positive, not {rows}")
    if kind == "rows":
        rows = rows or (batch_rows(n) if batch else 1)
        set_bytes = 8 * rows * n
    elif kind == "quant":
        n, rows, blocksize = n * (rows or 1), 1, blocksize or QUANT_BLOCKSIZE
        set_bytes = 5 * n
    else:
        raise ValueError(f"unknown kind of buffers {kind!r}")
    timed_cold = cold and not is_hot(set_bytes)
    flushed = timed_cold and can_flush()
    count = rotation_count(set_bytes) if timed_cold and not flushed else 1
    if kind == "rows":
        sets = make_inputs(n, rows, distribution=distribution, count=count)
    else:
        sets = make_quant_inputs(n, blocksize, distribution=distribution, count=count)
    return Buffers(kind, n, rows, distribution, blocksize if kind == "quant" else None,
                   "cold" if timed_cold else "hot", sets, flushed)


# --- cases --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    """One thing to time.

    name: the catalog kernel id, or auto_<function>[_allocating], or <peer>_<function>.
    family: the catalog family; "auto"; "numpy" for the NumPy expressions; "peer" for SciPy
      and PyTorch.
    build(backend, buffers, workers=1) -> (func, arg_sets): one timed call is func(*args), args
      rotating over arg_sets, one per buffer set. Outputs are preallocated unless the case is a
      call that allocates (the auto path's *_allocating, the peers). workers: the threads a
      call may use, for the cases that take it (threaded).
    buffers: the kind of Buffers it runs on ("rows" or "quant"); blocksize: the block size of
      its quant buffers (None: QUANT_BLOCKSIZE).
    kernel_of(backend, n, rows=1, workers=1): the id of the catalog kernel it runs on `rows` rows
      of n with `workers` threads (the auto path's choice depends on all three), whose traffic
      gives the roofline (None: no roofline).
    bytes_in_out: bytes in + bytes out per element, for the effective GB/s.
    backends: None for the library's backends, else the one backend name of a peer.
    baseline: the name of the NumPy case its "x NumPy" is against, or None.
    threaded: whether build() honours workers (the library's cases and torch); the others run
      on one thread whatever run() is given. On the numba backend the library's cases run on
      the calling thread (the twins ignore workers), so they run once, on one worker.
    """

    name: str
    family: str
    build: Callable
    buffers: str = "rows"
    kernel_of: Optional[Callable] = None
    bytes_in_out: int = 8
    backends: Optional[tuple] = None
    baseline: Optional[str] = None
    blocksize: Optional[int] = None
    threaded: bool = False

    @property
    def is_baseline(self):
        return self.family == "numpy"

    def workers_on(self, backend, workers):
        """The worker counts this case runs with on `backend`, out of `workers`: all of them if
        it takes a thread count there, else [1]."""
        if self.threaded and backend != "numba":
            return list(workers)
        return [1]


def _codebook():
    code = _codebooks.create_dynamic_map()
    return code, _codebooks.search_tables(code)


def _catalog_build(kernel):
    """build() of a catalog kernel through its binding, outputs preallocated; the bound call
    takes the thread count as its last argument (softmaxlib/_bindings.py)."""
    def build(backend, buffers, workers=1):
        call = _bindings.bound(kernel.id, backend, np.float32 if kernel.dtype == "f32" else None)
        if kernel.signature == "rows":
            arg_sets = [(x, y) for x, y in buffers.sets]
        elif kernel.signature == "pair":
            mantissa, exponent = np.empty(buffers.rows), np.empty(buffers.rows)
            arg_sets = [(x, mantissa, exponent) for x, _ in buffers.sets]
        elif kernel.signature == "loss":
            # mean reduction with the gradient (into y), as a training step calls it
            labels, losses = np.zeros(buffers.rows, np.int64), np.empty(buffers.rows)
            arg_sets = [(x, labels, -1, 1.0 / buffers.rows, losses, y) for x, y in buffers.sets]
        elif kernel.signature == "quantize":
            tables = _codebook()[1]
            arg_sets = [(x, buffers.blocksize, tables, q, absmax) for x, q, absmax, _ in buffers.sets]
        else:
            code = _codebook()[0]
            arg_sets = [(q, absmax, buffers.blocksize, code, out) for _, q, absmax, out in buffers.sets]
        return call, [args + (workers,) for args in arg_sets]

    return build


def _fixed_kernel(kernel_id):
    """kernel_of() of a case that runs one catalog kernel."""
    def kernel_of(backend, n, rows=1, workers=1):
        return kernel_id

    return kernel_of


def _auto_kernel(function):
    """kernel_of() of the auto path of `function`: its choice for rows of n, whatever `workers`."""
    def kernel_of(backend, n, rows=1, workers=1):
        return _auto.kernel_id(function, backend, n, rows, _auto.deciding_threads())

    return kernel_of


CATALOG_SIGNATURES = ("rows", "pair", "loss", "quantize", "dequantize")  # not "map" and "codes": parts of others


def catalog_cases():
    """A case per catalog kernel with one of CATALOG_SIGNATURES, in catalog order."""
    cases = []
    for kernel in _catalog.KERNELS.values():
        if kernel.signature not in CATALOG_SIGNATURES:
            continue
        quant = kernel.signature in ("quantize", "dequantize")
        cases.append(Case(kernel.id, kernel.family, _catalog_build(kernel), buffers="quant" if quant else "rows",
                          kernel_of=_fixed_kernel(kernel.id),
                          bytes_in_out={"pair": 4, "quantize": 5, "dequantize": 5}.get(kernel.signature, 8),
                          baseline=f"numpy_{kernel.function}" if kernel.function in NUMPY_FUNCTIONS else None,
                          threaded=True))
    return cases


def auto_cases():
    """softmaxlib.softmax and log_softmax, with out= (auto_<function>) and allocating their
    result (auto_<function>_allocating), as users call them: on the default backend without
    backend= (the fast path), on another with backend= (the general path)."""
    import softmaxlib

    def case(function, allocating):
        public = getattr(softmaxlib, function)

        def build(backend, buffers, workers=1):
            keywords = {"workers": workers} if backend == _dispatch.DEFAULT_BACKEND else \
                {"backend": backend, "workers": workers}
            if allocating:
                return partial(public, **keywords), [(x,) for x, _ in buffers.sets]
            return (lambda x, y: public(x, out=y, **keywords)), buffers.sets

        return Case(f"auto_{function}{'_allocating' if allocating else ''}", "auto", build,
                    kernel_of=_auto_kernel(function), baseline=f"numpy_{function}",
                    threaded=True)

    return [case(function, allocating) for function in ("softmax", "log_softmax") for allocating in (False, True)]


PEER_MODULES = {"scipy_softmax": "scipy", "torch_softmax": "torch"}


def missing_peers():
    """{peer case name: the module it needs} for the peers not installed here."""
    return {name: module for name, module in PEER_MODULES.items() if importlib.util.find_spec(module) is None}


@contextlib.contextmanager
def torch_threads_restored():
    """torch.get_num_threads() as it was before, once the block ends (the torch cases set their
    own), when torch is imported by then."""
    before = sys.modules["torch"].get_num_threads() if "torch" in sys.modules else None
    try:
        yield
    finally:
        torch = sys.modules.get("torch")
        if torch is not None:
            torch.set_num_threads(before if before is not None else _torch_default_threads())


_TORCH_DEFAULT = []


def _torch_default_threads():
    """torch's own default thread count, as it was when softmaxlib.bench first imported torch
    (torch.get_num_threads() then)."""
    if not _TORCH_DEFAULT:
        import torch
        _TORCH_DEFAULT.append(torch.get_num_threads())
    return _TORCH_DEFAULT[0]


def _torch_build(out):
    """build() of torch.softmax(t, -1) on torch.from_numpy(x) made once per buffer set (and
    out=torch.from_numpy(y) if out), at torch.set_num_threads(workers)."""
    def build(backend, buffers, workers=1):
        _torch_default_threads()
        import torch
        torch.set_num_threads(workers)
        if out:
            return (lambda t, u: torch.softmax(t, -1, out=u)), \
                [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in buffers.sets]
        return torch.softmax, [(torch.from_numpy(x), -1) for x, _ in buffers.sets]

    return build


def peer_cases():
    """The NumPy expressions of every row function (and the StableMax cross-entropy), always;
    scipy.special.softmax and torch.softmax (on torch.from_numpy(x) made once per buffer set, at
    torch.set_num_threads(workers): one thread unless run() is given more) when installed. They
    allocate their results, as users' code does."""
    def numpy_case(function, expression):
        def build(backend, buffers, workers=1):
            return expression, [(x,) for x, _ in buffers.sets]

        return Case(f"numpy_{function}", "numpy", build, backends=("numpy",))

    def cross_entropy(backend, buffers, workers=1):
        labels = np.zeros(buffers.rows, np.int64)
        return numpy_stablemax_cross_entropy, [(x, labels) for x, _ in buffers.sets]

    def scipy_softmax(backend, buffers, workers=1):
        import scipy.special
        return partial(scipy.special.softmax, axis=-1), [(x,) for x, _ in buffers.sets]

    cases = [numpy_case(function, expression) for function, expression in NUMPY_BASELINES.items()]
    cases.append(Case("numpy_stablemax_cross_entropy", "numpy", cross_entropy, backends=("numpy",)))
    missing = missing_peers()
    for name, build, threaded in (("scipy_softmax", scipy_softmax, False),
                                  ("torch_softmax", _torch_build(False), True)):
        if name not in missing:
            cases.append(Case(name, "peer", build, backends=(PEER_MODULES[name],), baseline="numpy_softmax",
                              threaded=threaded))
    return cases


def quant_cases():
    """The NumPy references of quantize_blockwise and dequantize_blockwise (the catalog kernels
    are in catalog_cases()), on quant buffers."""
    def quantize(backend, buffers, workers=1):
        midpoints = _codebook()[1].midpoints[:-1]
        return (lambda x: numpy_quantize(x, midpoints, buffers.blocksize)), [(s[0],) for s in buffers.sets]

    def dequantize(backend, buffers, workers=1):
        code = _codebook()[0]
        return (lambda q, absmax: numpy_dequantize(q, code, absmax, buffers.blocksize)), \
            [(q, absmax) for _, q, absmax, _ in buffers.sets]

    return [Case("numpy_quantize_blockwise", "numpy", quantize, buffers="quant", bytes_in_out=5, backends=("numpy",)),
            Case("numpy_dequantize_blockwise", "numpy", dequantize, buffers="quant", bytes_in_out=5,
                 backends=("numpy",))]


def all_cases():
    """Every case by name: catalog kernels, the auto path, the peers installed, quantization's
    NumPy references."""
    return {case.name: case for case in catalog_cases() + auto_cases() + peer_cases() + quant_cases()}


# --- running ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Result:
    """One timed case. Times are per call of `rows` rows of n elements; see the module docstring.

    kernel: the case's name. blocksize: quantization cases only. cache: "hot" or "cold" (see the
    module docstring). buffers: the sets rotated over (1 when hot, or cold by flushing).
    gb_per_s: effective, bytes_in_out * elements / time. roofline_ns: the time memory alone
    takes for the catalog kernel's traffic (None without one); roofline_fraction = roofline_ns /
    median_ns, cold cases only, with the bandwidth of roofline_threads(workers) threads.
    speedup_vs_numpy: the baseline's time / this time, when the run has the baseline. workers:
    the threads the call may use (`workers=` of the library's calls, torch.set_num_threads for
    torch; 1 for the single-threaded peers and the Numba twins).
    """

    kernel: str
    family: str
    backend: str
    n: int
    input: str
    rows: int
    blocksize: Optional[int]
    cache: str
    buffers: int
    samples: int
    calls_per_sample: int
    median_ns: float
    min_ns: float
    ns_per_element: float
    g_elements_per_s: float
    gb_per_s: float
    roofline_ns: Optional[float]
    roofline_fraction: Optional[float]
    speedup_vs_numpy: Optional[float]
    workers: int = 1

    def as_dict(self):
        return asdict(self)


def measure(case, backend, buffers, *, workers=1, bw=None, repeats=15, warmup=1, max_seconds=MAX_CASE_SECONDS,
            baseline_ns=None):
    """Times one case on one backend over buffers (make_buffers(case.buffers, ...)) with `workers`
    threads (for a case that takes them); returns a Result. bw: the Bandwidth for the roofline,
    or {threads: Bandwidth} from which that of roofline_threads(workers) threads is taken (None,
    or no such entry: no roofline); baseline_ns: the NumPy baseline's median on the same
    buffers."""
    if isinstance(bw, dict):
        bw = bw.get(roofline_threads(workers))
    func, arg_sets = case.build(backend, buffers, workers)
    if buffers.flush:
        timing = time_flushed(func, arg_sets[0], buffers.sets[0], repeats=repeats, warmup=warmup,
                              max_seconds=max_seconds)
    else:
        timing = time_callable(func, arg_sets, repeats=repeats, warmup=warmup, max_seconds=max_seconds)
    elements = buffers.elements
    kernel_id = case.kernel_of(backend, buffers.n, buffers.rows, workers) if case.kernel_of else None
    roofline = roofline_ns(kernel_id, elements, bw) if kernel_id and bw else None
    median = timing.median_ns
    return Result(
        kernel=case.name, family=case.family, backend=backend, n=buffers.n, input=buffers.input, rows=buffers.rows,
        blocksize=buffers.blocksize, cache=buffers.cache, buffers=len(buffers.sets), samples=timing.samples,
        calls_per_sample=timing.calls_per_sample, median_ns=median, min_ns=timing.min_ns,
        ns_per_element=median / elements, g_elements_per_s=elements / median,
        gb_per_s=case.bytes_in_out * elements / median, roofline_ns=roofline,
        roofline_fraction=roofline / median if roofline and buffers.cache == "cold" else None,
        speedup_vs_numpy=None if baseline_ns is None else baseline_ns / median, workers=workers)


def resolve_cases(cases):
    """Case objects for cases given as Case objects or names of all_cases(); ValueError for an
    unknown name."""
    known = None
    resolved = []
    for case in cases:
        if not isinstance(case, Case):
            known = known or all_cases()
            if case not in known:
                raise ValueError(f"unknown case {case!r}; the cases here are {', '.join(known)}")
            case = known[case]
        resolved.append(case)
    return resolved


def shape_of(size):
    """A size of run(): n (rows chosen by make_buffers) as (None, n), or a shape (rows, n)."""
    if isinstance(size, (tuple, list)):
        rows, n = (int(value) for value in size)
        return rows, n
    return None, int(size)


def plan(cases, sizes, backends, inputs_of, workers_of=lambda case, backend: [1]):
    """The runs of `cases`, in order, as (case, backend, size, input, workers): by size; the NumPy
    baselines first (so every "x NumPy" is known when its row is printed), then the cases as
    given; per case its backends (a peer's own, else `backends`), then its inputs
    (inputs_of(case)), then its worker counts (workers_of(case, backend)), so that the row of one
    case on each input and worker count follows the previous one."""
    ordered = sorted(cases, key=lambda case: not case.is_baseline)  # stable: the given order otherwise
    return [(case, backend, size, distribution, workers) for size in sizes for case in ordered
            for backend in (case.backends or backends) for distribution in inputs_of(case)
            for workers in workers_of(case, backend)]


def worker_counts(workers):
    """workers (an int or several; -1 = every available core) as a list of positive ints,
    duplicates dropped; ValueError for anything else, as workers= says."""
    values = [workers] if isinstance(workers, int) else list(workers)
    if not values:
        raise ValueError("no worker counts given")
    return list(dict.fromkeys(_threads.resolve(value) for value in values))


def run(cases, sizes=DEFAULT_SIZES, backends=None, *, inputs=("normal",), workers=(1,), repeats=15, warmup=1,
        bw=None, batch=True, cold=True, max_seconds=MAX_CASE_SECONDS, on_result=None, on_start=None):
    """Times cases x backends x sizes x inputs x workers; returns [Result] in plan() order.

    cases: Case objects or names of all_cases() (quantization cases run at their blocksize).
    sizes: row lengths n, or shapes (rows, n) (for quantization, rows * n elements).
    backends: default every usable backend. inputs: names of INPUTS, or a function case ->
    names. workers: thread counts (-1: every core), each given to the cases that take one
    (Case.workers_on; the others run once, on one thread). bw: the Bandwidth for the roofline,
    or several (a list, or {threads: Bandwidth}); those missing for roofline_threads(k) of some
    k of workers are measured first (bandwidths()). batch, cold: see make_buffers.
    on_start(index, count, case, backend, n, input, workers) before and on_result(result) after
    each case. The buffers of one size, kind and input are made once and shared by its cases.
    torch's thread count is restored at the end.
    """
    cases = resolve_cases(cases)
    backends = list(_dispatch.USABLE_BACKENDS if backends is None else backends)
    for backend in backends:
        _dispatch.check_backend(backend)
    if callable(inputs):
        inputs_of = inputs
    else:
        names = input_names(inputs)

        def inputs_of(case):
            return names
    counts = worker_counts(workers)
    shapes = [shape_of(size) for size in sizes]
    if any(n < 1 or (rows is not None and rows < 1) for rows, n in shapes):
        raise ValueError(f"sizes must be positive, not {list(sizes)}")
    bws = bandwidths(sorted({roofline_threads(k) for k in counts}), measured=bw)
    runs = plan(cases, shapes, backends, inputs_of, lambda case, backend: case.workers_on(backend, counts))
    results, buffers, baseline_ns = [], {}, {}
    with torch_threads_restored():
        for index, (case, backend, (rows, n), distribution, count) in enumerate(runs):
            if on_start is not None:
                on_start(index, len(runs), case, backend, n, distribution, count)
            key = (case.buffers, case.blocksize, distribution)
            if (rows, n) not in {shape for shape, _ in buffers.values()}:
                buffers.clear()  # before the next size allocates
            if key not in buffers:
                buffers[key] = (rows, n), make_buffers(case.buffers, n, distribution, blocksize=case.blocksize,
                                                       batch=batch, cold=cold, rows=rows)
            result = measure(case, backend, buffers[key][1], workers=count, bw=bws, repeats=repeats, warmup=warmup,
                             max_seconds=max_seconds, baseline_ns=baseline_ns.get((case.baseline, key)))
            if case.is_baseline:
                baseline_ns[case.name, key] = result.median_ns
            results.append(result)
            if on_result is not None:
                on_result(result)
    buffers.clear()
    return results


# --- issue 12: the public calls on 1 and 2 workers, against torch --------------------------------

# (rows, n): 64 short rows (in cache), one row in cache, 64 rows of 2^14 against one row of 2^20
# (the same 2^20 elements, batched or not), and one row of 2^20, 2^24 and 2^26 (cold: flushed)
THREADS_SHAPES = ((64, 1 << 10), (1, 1 << 16), (64, 1 << 14), (1, 1 << 20), (1, 1 << 24), (1, 1 << 26))
THREADS_REPEATS = 11
THREADS_MAX_SECONDS = 2.0  # per case: at 2^26 a flushed call and its flush take ~0.1 s
THREADS_INPUTS = ("normal", "uniform80")  # for the softmax calls, whose exp can underflow; else N(0, 1)


def threads_workers():
    """The suite's worker counts: 1, 2 and the library default (get_num_threads()), each once."""
    return list(dict.fromkeys((1, 2, _threads.DEFAULT[0])))


def threads_cases():
    """{name: Case} of issue 12's table: softmaxlib.softmax, two_pass.softmax,
    stablemax.stablemax, quant.quantize_blockwise and quant.dequantize_blockwise as users call
    them, outputs preallocated (out=, absmax_out=), with workers=; and torch.softmax(t, -1,
    out=u) when PyTorch is installed (threaded through torch.set_num_threads). On the default
    backend without backend= (the fast path), on another with backend=."""
    import softmaxlib
    from . import quant, stablemax, two_pass

    def keywords(backend, workers):
        return {"workers": workers} if backend == _dispatch.DEFAULT_BACKEND else {"backend": backend,
                                                                                 "workers": workers}

    def rows_call(function):
        def build(backend, buffers, workers=1):
            extra = keywords(backend, workers)
            return (lambda x, y: function(x, out=y, **extra)), buffers.sets

        return build

    def quantize(backend, buffers, workers=1):
        extra = keywords(backend, workers)
        return (lambda x, q, absmax: quant.quantize_blockwise(x, blocksize=buffers.blocksize, out=q,
                                                              absmax_out=absmax, **extra)), \
            [(x, q, absmax) for x, q, absmax, _ in buffers.sets]

    def dequantize(backend, buffers, workers=1):
        extra, code = keywords(backend, workers), _codebook()[0]
        states = [quant.QuantState(absmax, code, buffers.blocksize, q.shape, np.float32)
                  for _, q, absmax, _ in buffers.sets]
        return (lambda q, state, out: quant.dequantize_blockwise(q, state, out=out, **extra)), \
            [(q, state, out) for (_, q, _, out), state in zip(buffers.sets, states)]

    catalog = _fixed_kernel
    cases = [
        Case("softmaxlib.softmax", "auto", rows_call(softmaxlib.softmax),
             kernel_of=_auto_kernel("softmax"), threaded=True),
        Case("two_pass.softmax", "two_pass", rows_call(two_pass.softmax), kernel_of=catalog("softmax_two_pass"),
             threaded=True),
        Case("stablemax.stablemax", "stablemax", rows_call(stablemax.stablemax), kernel_of=catalog("stablemax"),
             threaded=True),
        Case("quant.quantize_blockwise", "quant", quantize, buffers="quant", kernel_of=catalog("quantize_blockwise"),
             bytes_in_out=5, threaded=True),
        Case("quant.dequantize_blockwise", "quant", dequantize, buffers="quant",
             kernel_of=catalog("dequantize_blockwise"), bytes_in_out=5, threaded=True),
    ]
    if "torch_softmax" not in missing_peers():
        cases.insert(0, Case("torch.softmax", "peer", _torch_build(True), backends=("torch",), threaded=True))
    return {case.name: case for case in cases}


def torch_thread_counts():
    """torch's thread counts in the suite: its default (torch.get_num_threads() when
    softmaxlib.bench first imported torch) and 1, each once."""
    return list(dict.fromkeys((_torch_default_threads(), 1)))


def threads_inputs(case):
    """The suite's inputs for a case: N(0, 1) and U(-80, 80) for the softmax calls (torch's
    too), N(0, 1) for StableMax (no exp) and quantization (scaled by each block's absmax)."""
    return list(THREADS_INPUTS) if case.name.endswith(".softmax") else ["normal"]


def threads_suite(shapes=THREADS_SHAPES, workers=None, *, names=None, backend=None, inputs=None,
                  blocksizes=(QUANT_BLOCKSIZE,), repeats=THREADS_REPEATS, warmup=1, bw=None, torch_threads=None,
                  max_seconds=THREADS_MAX_SECONDS, on_start=None, on_result=None):
    """Issue 12's table: the threads_cases() on `workers` (default threads_workers(): 1, 2 and the
    library default) and torch.softmax at `torch_threads` (default torch_thread_counts(): its
    default and 1), at each shape (rows, n) (quantization on the one-row shapes only, as
    n elements), every case timed as run() does (hot up to COLD_BYTES a call, else flushed before
    each call), all in this process. Returns (results, bandwidths): [Result] and {threads:
    Bandwidth}, with the probe measured on every thread count a roofline needs (bw: those at
    hand). threads_table(results) pivots them. torch's thread count is restored at the end.

    names: a subset of threads_cases() (default all of them; torch.softmax is one). inputs:
    names of INPUTS for every case (default threads_inputs). blocksizes: of the quantization
    cases. backend: default the default backend (the calls then take no backend=).
    """
    available = threads_cases()
    if names is None:
        names = list(available)
    unknown = [name for name in names if name not in available]
    if unknown:
        raise ValueError(f"unknown case {unknown[0]!r} of the threads suite; its cases here are "
                         f"{', '.join(available)}")
    counts = worker_counts(threads_workers() if workers is None else workers)
    torch_counts = worker_counts(torch_thread_counts()) if "torch.softmax" in names else []
    backend = _dispatch.resolve(backend)
    shapes = [(rows or 1, n) for rows, n in map(shape_of, shapes)]
    inputs_of = threads_inputs if inputs is None else (lambda case, names=input_names(inputs): names)
    bws = bandwidths(sorted({roofline_threads(k) for k in counts}), measured=bw)

    def workers_of(case, case_backend):
        return torch_counts if case.name == "torch.softmax" else case.workers_on(case_backend, counts)

    row_cases = [available[name] for name in names if available[name].buffers == "rows"]
    quant_cases = [replace(available[name], blocksize=blocksize) for blocksize in blocksizes for name in names
                   if available[name].buffers == "quant"]
    # torch first: each softmax line of the table is complete once its own rows are measured
    row_cases.sort(key=lambda case: case.name != "torch.softmax")
    one_row = [shape for shape in shapes if shape[0] == 1]
    plans = [plan(cases, case_shapes, [backend], inputs_of, workers_of)
             for cases, case_shapes in ((row_cases, shapes), (quant_cases, one_row)) if cases and case_shapes]
    total = sum(map(len, plans))
    results = []
    for runs in plans:
        buffers = {}
        with torch_threads_restored():
            for case, case_backend, (rows, n), distribution, count in runs:
                if on_start is not None:
                    on_start(len(results), total, case, case_backend, n, distribution, count)
                key = (case.buffers, case.blocksize, distribution)
                if (rows, n) not in {shape for shape, _ in buffers.values()}:
                    buffers.clear()
                if key not in buffers:
                    buffers[key] = (rows, n), make_buffers(case.buffers, n, distribution, blocksize=case.blocksize,
                                                           rows=rows)
                result = measure(case, case_backend, buffers[key][1], workers=count, bw=bws, repeats=repeats,
                                 warmup=warmup, max_seconds=max_seconds)
                results.append(result)
                if on_result is not None:
                    on_result(result)
        buffers.clear()
    return results, bws


@dataclass(frozen=True)
class ThreadsLine:
    """One line of issue 12's table: a call at one shape, input and block size.

    kernels: {workers: the catalog kernel run (the auto path's choice may depend on the thread
    count)}. ns_per_element: {workers: ns per element}. roofline_ns_per_element: {workers: the roofline
    with the bandwidth of roofline_threads(workers) threads}; roofline_fraction: {workers:
    roofline / time}, cold cases only (None when hot). speedup: {workers: time on the fewest
    workers measured / time on these}, for the others. torch_ns_per_element: {threads: ns per
    element of torch.softmax on the same shape and input}, for the softmax calls.
    default_workers: the library default (get_num_threads()); torch_default: torch's.
    vs_torch: torch's time at its default / ours at our default (above 1: ours faster), when
    both were measured.
    """

    call: str
    rows: int
    n: int
    input: str
    blocksize: Optional[int]
    cache: str
    kernels: dict
    ns_per_element: dict
    roofline_ns_per_element: dict
    roofline_fraction: dict
    speedup: dict
    torch_ns_per_element: dict
    default_workers: int
    torch_default: Optional[int]
    vs_torch: Optional[float]

    def as_dict(self):
        return asdict(self)


def threads_table(results, default_workers=None, torch_default=None):
    """The lines of issue 12's table from threads_suite()'s results, in their order: one per call
    (not torch), shape, input and block size. default_workers: default get_num_threads();
    torch_default: torch's default thread count (default: as torch_thread_counts() found it, if
    torch ran)."""
    default_workers = _threads.DEFAULT[0] if default_workers is None else default_workers
    torch_ran = any(r.kernel == "torch.softmax" for r in results)
    if torch_default is None and torch_ran:
        torch_default = _torch_default_threads()
    torch = {}
    for r in results:
        if r.kernel == "torch.softmax":
            torch.setdefault((r.rows, r.n, r.input), {})[r.workers] = r.ns_per_element
    groups = {}
    for r in results:
        if r.kernel != "torch.softmax":
            groups.setdefault((r.kernel, r.rows, r.n, r.input, r.blocksize), []).append(r)
    lines, cases = [], threads_cases()
    for (call, rows, n, distribution, blocksize), group in groups.items():
        kernel_of = cases[call].kernel_of if call in cases else None
        ns = {r.workers: r.ns_per_element for r in group}
        fewest = min(ns)
        references = torch.get((rows, n, distribution), {}) if call.endswith(".softmax") else {}
        ours, theirs = ns.get(default_workers), references.get(torch_default)
        lines.append(ThreadsLine(
            call=call, rows=rows, n=n, input=distribution, blocksize=blocksize, cache=group[0].cache,
            kernels={r.workers: kernel_of(r.backend, n, rows, r.workers) if kernel_of else None for r in group},
            ns_per_element=ns,
            roofline_ns_per_element={r.workers: None if r.roofline_ns is None else r.roofline_ns / (r.rows * r.n)
                                     for r in group},
            roofline_fraction={r.workers: r.roofline_fraction for r in group},
            speedup={k: ns[fewest] / value for k, value in ns.items() if k != fewest},
            torch_ns_per_element=dict(references), default_workers=default_workers,
            torch_default=torch_default if torch_ran else None,
            vs_torch=theirs / ours if ours and theirs else None))
    return lines


# --- the optim suite: softmaxlib.optim's fused 8-bit steps against torch.optim and bitsandbytes ---

OPTIM_SIZES = (1 << 24,)
OPTIM_SETTINGS = (1, None)  # one thread, then each library's default (None)
OPTIM_REPEATS = 9
OPTIM_WARMUP_STEPS = 3      # untimed steps before timing, so that the states hold real values
OPTIM_MAX_SECONDS = 2.0     # per case: a bitsandbytes step on one thread takes ~0.8 s at 2^24
OPTIM_LR = 1e-3             # every optimizer's learning rate (the speed does not depend on it)
OPTIM_PARAM_SCALE = 0.02    # p ~ 0.02 N(0, 1), a usual initialisation
OPTIM_GRAD_SCALE = 1e-3     # g ~ 1e-3 N(0, 1)
# torch.optim's float32 steps: (the rules it is a peer of, its class, keywords); the first
# peer of a rule is the reference of that rule's "x torch", fused AdamW for both Adam rules
TORCH_OPTIMIZERS = (
    (("adamw", "adam"), "AdamW", {"fused": True}),
    (("adamw", "adam"), "AdamW", {"foreach": True}),
    (("sgd",), "SGD", {"momentum": 0.9, "foreach": True}),
    (("rmsprop",), "RMSprop", {"foreach": True}),
    (("adagrad",), "Adagrad", {"foreach": True}),
)
# bitsandbytes' 8-bit step of each rule (CPU), the reference of its "x bnb"
BNB_OPTIMIZERS = {"adamw": ("AdamW8bit", {}), "adam": ("Adam8bit", {}), "sgd": ("SGD8bit", {"momentum": 0.9}),
                  "lion": ("Lion8bit", {}), "rmsprop": ("RMSprop8bit", {}), "adagrad": ("Adagrad8bit", {})}
OPTIM_PEERS = {"torch": "torch.optim rows (x torch: -)", "bitsandbytes": "bnb.optim rows (x bnb: -)"}


@dataclass(frozen=True)
class OptimCase:
    """One optimizer step of the optim suite.

    name: the call, as the table spells it; optimizers: the rules (softmaxlib.optim's names) it
    is a step of, or a peer of; library: "softmaxlib", "torch" or "bitsandbytes"; backend:
    softmaxlib's backend, else the library's name.
    build(p, g, threads) -> (step, state): a zero-argument call that runs one step on p (updated
    in place) with the gradient g on `threads` threads, after OPTIM_WARMUP_STEPS untimed steps,
    and the arrays the optimizer keeps for p.
    traffic: (read-only, stored) bytes per parameter a step must move, for the roofline.
    """

    name: str
    optimizers: tuple
    library: str
    backend: str
    build: Callable
    traffic: tuple

    def threads_on(self, setting):
        """The threads the step runs on at a setting (a count, or None: its library's default), or
        None where it does not run: the Numba twins run on the calling thread, so at 1 only."""
        if self.backend == "numba":
            return 1 if setting == 1 else None
        if self.library == "softmaxlib":
            return _threads.resolve(setting)
        return setting or _torch_default_threads()


def float32_traffic(states):
    """(read-only, stored) bytes per parameter of a float32 step with `states` states, each array
    moved once: p, g and every state read (4 bytes each), p and every state written."""
    return 4 * (2 + states), 4 * (1 + states)


def _warmed_up(step):
    for _ in range(OPTIM_WARMUP_STEPS):
        step()
    return step


def _softmaxlib_step(optimizer, backend):
    """build() of softmaxlib.optim.<optimizer>_step on `backend`, numbering its steps from 1."""
    from . import optim

    function = getattr(optim, f"{optimizer}_step")
    numbered = "step" in inspect.signature(function).parameters

    def build(p, g, threads):
        state = optim.init_state(optimizer, p)
        steps = itertools.count(1)

        def step():
            extra = {"step": next(steps)} if numbered else {}
            function(p, g, state, lr=OPTIM_LR, workers=threads, backend=backend, **extra)

        return _warmed_up(step), [array for array in vars(state).values() if isinstance(array, np.ndarray)]

    return build


def _torch_optimizer_step(module, class_name, keywords):
    """build() of a torch optimizer (`module`.`class_name`(**keywords): torch.optim's or
    bitsandbytes'), on torch.from_numpy views of p and g, at torch.set_num_threads(threads)."""
    def build(p, g, threads):
        _torch_default_threads()
        import torch
        optimizer_class = getattr(importlib.import_module(module), class_name)
        torch.set_num_threads(threads)
        parameter = torch.nn.Parameter(torch.from_numpy(p))
        parameter.grad = torch.from_numpy(g)
        optimizer = optimizer_class([parameter], lr=OPTIM_LR, **keywords)
        step = _warmed_up(optimizer.step)
        state = [value.numpy().reshape(-1) for value in optimizer.state[parameter].values() if torch.is_tensor(value)]
        return step, state

    return build


def missing_optim_peers():
    """The peer libraries of the optim suite (OPTIM_PEERS) not installed here."""
    return [module for module in OPTIM_PEERS if importlib.util.find_spec(module) is None]


def optim_notes():
    """Lines on what the optim suite leaves out here: peers not installed, and the flush without
    the C extension."""
    notes = [f"{module} not installed: no {OPTIM_PEERS[module]}" for module in missing_optim_peers()]
    if not can_flush():
        notes.append("C extension not built: cold steps are timed without flushing the cache first")
    return notes


def optim_cases(optimizers=None, backends=None):
    """The optim suite's cases, in table order: torch.optim's float32 peers of `optimizers`, then
    bitsandbytes' 8-bit ones (those installed), then softmaxlib.optim's steps of each optimizer on
    each backend. optimizers: names of softmaxlib.optim.OPTIMIZERS (default all); backends:
    default every usable one. ValueError for an unknown name."""
    from . import optim

    optimizers = list(optim.OPTIMIZERS if optimizers is None else optimizers)
    unknown = [name for name in optimizers if name not in optim.OPTIMIZERS]
    if unknown:
        raise ValueError(f"unknown optimizer {unknown[0]!r}; the optimizers are {', '.join(optim.OPTIMIZERS)}")
    backends = list(_dispatch.USABLE_BACKENDS if backends is None else backends)
    for backend in backends:
        _dispatch.check_backend(backend)
    missing = missing_optim_peers()
    cases = []
    if "torch" not in missing:
        for rules, class_name, keywords in TORCH_OPTIMIZERS:
            if set(rules) & set(optimizers):
                arguments = ", ".join(f"{key}={value}" for key, value in keywords.items())
                cases.append(OptimCase(f"torch.optim.{class_name}({arguments})", rules, "torch", "torch",
                                       _torch_optimizer_step("torch.optim", class_name, keywords),
                                       float32_traffic(len(optim.OPTIMIZERS[rules[0]][1]))))
    if "bitsandbytes" not in missing:
        for optimizer in optimizers:
            class_name, keywords = BNB_OPTIMIZERS[optimizer]
            cases.append(OptimCase(f"bnb.optim.{class_name}", (optimizer,), "bitsandbytes", "bnb",
                                   _torch_optimizer_step("bitsandbytes.optim", class_name, keywords),
                                   traffic_split(optim.OPTIMIZERS[optimizer][0])))
    for optimizer in optimizers:
        for backend in backends:
            cases.append(OptimCase(f"optim.{optimizer}_step", (optimizer,), "softmaxlib", backend,
                                   _softmaxlib_step(optimizer, backend), traffic_split(optim.OPTIMIZERS[optimizer][0])))
    return cases


def optim_bandwidth_threads(cases, settings=OPTIM_SETTINGS):
    """The thread counts whose bandwidth the rooflines of `cases` at `settings` need."""
    return sorted({roofline_threads(count) for case in cases for count in map(case.threads_on, settings) if count})


def optim_inputs(n, seed=0):
    """(p, g): n float32 parameters p ~ OPTIM_PARAM_SCALE N(0, 1) and their gradients
    g ~ OPTIM_GRAD_SCALE N(0, 1), drawn from seeds `seed` and seed + 1."""
    p, g = draw("normal", n, seed), draw("normal", n, seed + 1)
    p *= np.float32(OPTIM_PARAM_SCALE)
    g *= np.float32(OPTIM_GRAD_SCALE)
    return p, g


@dataclass(frozen=True)
class OptimResult:
    """One timed step of the optim suite, at n parameters.

    call, optimizer (the rule its ratios are of), library, backend: its case's. threads: the
    threads it ran on; default_threads: at its library's default (softmaxlib workers=None,
    torch its own count) rather than at a given count. cache: "cold" when p and g together
    exceed COLD_BYTES (each step then timed alone after flushing p, g and the states), else
    "hot". ns_per_param: the median / n. state_bytes_per_param: the bytes of the arrays the
    optimizer keeps for p, / n. traffic_bytes_per_param: OptimCase.traffic, read-only +
    stored; roofline_ns_per_param: that traffic at the probe's rates on roofline_threads(threads)
    threads; roofline_fraction: roofline / ns_per_param, cold only. vs_torch: the time of the
    rule's torch reference (its first TORCH_OPTIMIZERS peer) at the same n and setting / this
    time; vs_bnb: likewise with bitsandbytes' step of the rule (above 1: this one is faster).
    """

    call: str
    optimizer: str
    library: str
    backend: str
    n: int
    threads: int
    default_threads: bool
    cache: str
    samples: int
    median_ns: float
    min_ns: float
    ns_per_param: float
    state_bytes_per_param: float
    traffic_bytes_per_param: int
    roofline_ns_per_param: Optional[float]
    roofline_fraction: Optional[float]
    vs_torch: Optional[float] = None
    vs_bnb: Optional[float] = None

    def as_dict(self):
        return asdict(self)


def measure_step(case, p, g, setting=1, *, bw=None, repeats=OPTIM_REPEATS, max_seconds=OPTIM_MAX_SECONDS):
    """Times case's step on copies of p and g at `setting` (a thread count, or None: the
    library's default) as run() times a case: hot by time_callable, cold (p and g above
    COLD_BYTES) by time_flushed, p, g and the states flushed before each step (not flushed
    without the C extension). bw: {threads: Bandwidth} for the roofline (None: no roofline).
    Returns an OptimResult without its ratios."""
    threads = case.threads_on(setting)
    p, g = p.copy(), g.copy()
    step, state = case.build(p, g, threads)
    cold = not is_hot(p.nbytes + g.nbytes)
    if cold and can_flush():
        timing = time_flushed(step, (), [p, g, *state], repeats=repeats, max_seconds=max_seconds)
    else:
        timing = time_callable(step, repeats=repeats, max_seconds=max_seconds)
    n = p.size
    probe = (bw or {}).get(roofline_threads(threads))
    roofline = traffic_roofline_ns(*case.traffic, 1, probe) if probe else None
    ns = timing.median_ns / n
    return OptimResult(
        call=case.name, optimizer=case.optimizers[0], library=case.library, backend=case.backend, n=n,
        threads=threads, default_threads=setting is None, cache="cold" if cold else "hot", samples=timing.samples,
        median_ns=timing.median_ns, min_ns=timing.min_ns, ns_per_param=ns,
        state_bytes_per_param=sum(array.nbytes for array in state) / n, traffic_bytes_per_param=sum(case.traffic),
        roofline_ns_per_param=roofline, roofline_fraction=roofline / ns if roofline and cold else None)


def with_ratios(group, cases):
    """The results of one size and setting with vs_torch and vs_bnb: each rule's reference (the
    first torch peer of the rule, bitsandbytes' step of the rule) over each result's time."""
    rules = {case.name: case.optimizers for case in cases}

    def reference_ns(library, rule):
        return next((r.median_ns for r in group if r.library == library and rule in rules[r.call]), None)

    def ratio(reference, result):
        return None if reference is None else reference / result.median_ns

    return [replace(r, vs_torch=ratio(reference_ns("torch", r.optimizer), r),
                    vs_bnb=ratio(reference_ns("bitsandbytes", r.optimizer), r)) for r in group]


def optim_suite(cases=None, sizes=OPTIM_SIZES, settings=OPTIM_SETTINGS, *, repeats=OPTIM_REPEATS, bw=None,
                max_seconds=OPTIM_MAX_SECONDS, on_start=None, on_group=None):
    """The optim suite: every case (default optim_cases()) at n parameters for each of `sizes`,
    at each of `settings` (thread counts; None: each library's default: softmaxlib's
    workers=None, torch's own count for torch and bitsandbytes), all in this process, on the same
    optim_inputs(n). Returns (results, bandwidths, failures): [OptimResult] with their ratios, by
    size then setting then case; {threads: Bandwidth}, the probe measured on every thread count
    a roofline needs (bw: those at hand); and a line per peer step that raised (its library's
    error, not the suite's: that case is left out). on_start(index, count, case, n, setting)
    before each case; on_group(results) after each size and setting. torch's thread count is
    restored at the end.
    """
    cases = optim_cases() if cases is None else list(cases)
    settings = list(settings)
    bws = bandwidths(optim_bandwidth_threads(cases, settings), measured=bw)
    count = len(sizes) * sum(1 for setting in settings for case in cases if case.threads_on(setting))
    started = itertools.count()
    results, failures = [], []
    with torch_threads_restored():
        for n in sizes:
            p, g = optim_inputs(n)
            for setting in settings:
                group = []
                for case in [case for case in cases if case.threads_on(setting)]:
                    if on_start is not None:
                        on_start(next(started), count, case, n, setting)
                    try:
                        group.append(measure_step(case, p, g, setting, bw=bws, repeats=repeats,
                                                  max_seconds=max_seconds))
                    except Exception as error:  # noqa: B902 -- a peer's own failure is a line of the report
                        if case.library == "softmaxlib":
                            raise
                        failures.append(f"{case.name} failed at n = {n}: {type(error).__name__}: "
                                        f"{next(iter(str(error).splitlines()), '')}")
                group = with_ratios(group, cases)
                results += group
                if group and on_group is not None:
                    on_group(group)
    return results, bws, failures


# --- latency: the public calls on one short row -------------------------------------------------

LATENCY_SIZES = (1, 16, 256, 1000, 4096)


@dataclass(frozen=True)
class LatencyRow:
    """One entry of the latency table: ns per call (median) of `call` at n, or for the
    "overhead" section the public call's time minus its bare kernel's.

    section: "reference" (len, np.exp, SciPy, PyTorch), "public" (the public functions on a 1-D
    float32 row, default backend), "general" (softmaxlib.softmax off its fast path), "kernel" (the
    bound kernel on the (1, n) view of the same row), "overhead" (a public or general call's time
    minus its kernel's, timed just before it).
    over_np_exp: ns / the ns of np.exp(x) (of np.exp(x, out=y) for calls that write into given
    outputs); over_torch: ns / the ns of torch.softmax(t, -1). kernel: the catalog kernel behind
    the call.
    """

    section: str
    call: str
    n: int
    ns: float
    over_np_exp: Optional[float] = None
    over_torch: Optional[float] = None
    kernel: Optional[str] = None
    samples: int = 0
    calls_per_sample: int = 0

    def as_dict(self):
        return asdict(self)


@dataclass(frozen=True)
class _Call:
    section: str
    call: str
    func: Callable
    args: tuple
    writes_into: bool = False      # compared with np.exp(x, out=y), not np.exp(x)
    kernel: Optional[str] = None   # the `call` of its kernel entry
    kernel_id: Optional[str] = None


def _latency_calls(n, backend):
    """The calls the latency table times for one row of n float32, in table order."""
    import softmaxlib
    from . import quant

    x = draw("normal", n)
    y = np.empty_like(x)
    x2, y2 = x.reshape(1, n), y.reshape(1, n)  # the same memory, as the kernels take it
    code, tables = _codebook()
    blocksize = QUANT_BLOCKSIZE  # quantize_blockwise's default: one block, partial below 4096
    q, state = quant.quantize_blockwise(x, blocksize=blocksize)
    q_out, absmax_out = np.empty(n, np.uint8), np.empty(state.absmax.size, np.float32)
    losses, mantissa, exponent = np.empty(1), np.empty(1), np.empty(1)
    labels, class_index = np.zeros(1, np.int64), np.int64(0)
    calls, kernels = [], {}

    def kernel(kernel_id, dtype=np.float32):
        """The kernel entry of kernel_id on x (and y) viewed as (1, n); returns its `call`."""
        spec = _catalog.KERNELS[kernel_id]
        bound = _bindings.bound(kernel_id, backend, dtype if spec.dtype == "f32" else None)
        if dtype == np.float64:
            label, args = f"{kernel_id}[f64 twin](x2, y2)", (x2.astype(np.float64), np.empty((1, n)))
        elif spec.signature == "rows":
            label, args = f"{kernel_id}(x2, y2)", (x2, y2)
        elif spec.signature == "pair":
            label, args = f"{kernel_id}(x2, m, e)", (x2, mantissa, exponent)
        elif spec.signature == "quantize":
            label, args = f"{kernel_id}(x, B, tables, q, absmax)", (x, blocksize, tables, q_out, absmax_out)
        elif spec.signature == "dequantize":
            label, args = f"{kernel_id}(q, absmax, B, code, y)", (q, state.absmax, blocksize, code, y)
        else:
            raise ValueError(f"no latency entry for {kernel_id} ({spec.signature})")
        kernels.setdefault(label, _Call("kernel", label, bound, args, True, None, kernel_id))
        return label

    def loss_kernel(grad):
        label = f"stablemax_cross_entropy(x2, i, l{', grad' if grad else ''})"
        bound = _bindings.bound("stablemax_cross_entropy", backend, np.float32)
        kernels.setdefault(label, _Call("kernel", label, bound, (x2, labels, -1, 1.0, losses, y2 if grad else None),
                                        True, None, "stablemax_cross_entropy"))
        return label

    def public(call, func, args, kernel_label, writes_into=False, section="public"):
        calls.append(_Call(section, call, func, args, writes_into, kernel_label, kernels[kernel_label].kernel_id))

    for function in ("softmax", "log_softmax"):
        auto_kernel = kernel(_auto.kernel_id(function, backend, n))
        public(f"softmaxlib.{function}(x)", getattr(softmaxlib, function), (x,), auto_kernel)
        public(f"softmaxlib.{function}(x, out=y)", partial(getattr(softmaxlib, function), out=y), (x,), auto_kernel,
               True)
    public("softmaxlib.logsumexp(x)", softmaxlib.logsumexp, (x,), kernel("sum_exp_pair"))
    for entry in _catalog.KERNELS.values():
        if entry.function is None:
            continue
        function = getattr(importlib.import_module(f"softmaxlib.{entry.family}"), entry.function)
        if entry.variant is not None:
            function = partial(function, variant=entry.variant)
        name = f"{entry.family}.{entry.function}{f'[{entry.variant}]' if entry.variant else ''}"
        if entry.signature == "rows":
            public(f"{name}(x)", function, (x,), kernel(entry.id))
            public(f"{name}(x, out=y)", partial(function, out=y), (x,), kernel(entry.id), True)
        elif entry.signature == "pair":
            public(f"{name}(x)", function, (x,), kernel(entry.id))
        elif entry.signature == "loss":
            public(f"{name}(x, i)", function, (x, class_index), loss_kernel(False))
            public(f"{name}(x, i, return_grad=True)", partial(function, return_grad=True), (x, class_index),
                   loss_kernel(True))
        elif entry.signature == "quantize":
            public(f"{name}(x)", function, (x,), kernel(entry.id))
            public(f"{name}(x, out=q, absmax_out=a)", partial(function, out=q_out, absmax_out=absmax_out), (x,),
                   kernel(entry.id), True)
        elif entry.signature == "dequantize":
            public(f"{name}(q, state)", function, (q, state), kernel(entry.id))
            public(f"{name}(q, state, out=y)", partial(function, out=y), (q, state), kernel(entry.id), True)
    softmax_id = _auto.kernel_id("softmax", backend, n)
    public("softmaxlib.softmax(x_f64)", softmaxlib.softmax, (x.astype(np.float64),), kernel(softmax_id, np.float64),
           section="general")
    public("softmaxlib.softmax(x_col, axis=0)", partial(softmaxlib.softmax, axis=0), (x.reshape(n, 1),),
           kernel(softmax_id), section="general")
    public(f"softmaxlib.softmax(x, backend='{backend}')", partial(softmaxlib.softmax, backend=backend), (x,),
           kernel(softmax_id), section="general")

    references = [_Call("reference", "len(x)", len, (x,)),  # the timing loop's own cost
                  _Call("reference", "np.exp(x)", np.exp, (x,)),
                  _Call("reference", "np.exp(x, out=y)", partial(np.exp, out=y), (x,), True)]
    missing = missing_peers()
    if "scipy_softmax" not in missing:
        import scipy.special
        references.append(_Call("reference", "scipy.special.softmax(x)", scipy.special.softmax, (x,)))
    if "torch_softmax" not in missing:
        import torch
        torch.set_num_threads(1)
        references.append(_Call("reference", "torch.softmax(t, -1)", torch.softmax, (torch.from_numpy(x), -1)))
    return references + calls + list(kernels.values())


def latency_notes():
    """Lines on what the latency table leaves out here (peers not installed)."""
    return [f"{module} not installed: no {name.replace('_', '.', 1)} row" for name, module in missing_peers().items()]


def latency(sizes=LATENCY_SIZES, *, repeats=15, backend=None, on_row=None):
    """The latency table: every public call on one row of n float32 (1-D), allocating and with
    out=, against np.exp, SciPy and PyTorch (one thread), with the bare kernel behind each call
    and the difference; returns [LatencyRow], by n then in table order.

    backend: the backend of the bare kernels, default the default backend (the public calls
    run on it without backend=, as users call them). Quantization uses the default blocksize,
    4096: one block, a partial one below n = 4096. Every call is timed by time_callable, with
    many calls per sample; on_row(row) is called as each row is done.
    """
    backend = _dispatch.resolve(backend)
    rows = []

    def add(row):
        rows.append(row)
        if on_row is not None:
            on_row(row)

    for n in sizes:
        if n < 1:
            raise ValueError(f"sizes must be positive, not {n}")
        calls = _latency_calls(n, backend)
        entries = {call.call: call for call in calls}
        timings, kernel_ns = {}, {}
        for call in calls:
            if call.kernel is not None:
                # its kernel just before it, for the difference: the machine's speed drifts
                kernel = entries[call.kernel]
                kernel_ns[call.call] = time_callable(kernel.func, [kernel.args], repeats=repeats).median_ns
            timings[call.call] = time_callable(call.func, [call.args], repeats=repeats)
        ns = {name: timing.median_ns for name, timing in timings.items()}
        torch_ns = ns.get("torch.softmax(t, -1)")
        for call in calls:
            timing = timings[call.call]
            reference = ns["np.exp(x, out=y)" if call.writes_into else "np.exp(x)"]
            ratios = (None, None) if call.call == "len(x)" else \
                (timing.median_ns / reference, None if torch_ns is None else timing.median_ns / torch_ns)
            add(LatencyRow(call.section, call.call, n, timing.median_ns, *ratios, kernel=call.kernel_id,
                           samples=timing.samples, calls_per_sample=timing.calls_per_sample))
        for call in calls:
            if call.kernel is not None:
                add(LatencyRow("overhead", call.call, n, ns[call.call] - kernel_ns[call.call], kernel=call.kernel_id))
    return rows

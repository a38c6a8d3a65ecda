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
- bandwidth(nbytes) measures memory bandwidth with the C probe streams (csrc/softmaxlib.h:
  sml_stream_read, sml_stream_read_write); roofline_ns() turns a kernel's traffic, read from
  the catalog, into the time memory alone would take.
- INPUTS names the input distributions (normal = N(0, 1), uniform80 = U(-80, 80), uniform1000 =
  U(-1000, 1000)); draw(name, shape, seed) draws float32 values from one of them.

Conventions:

- n is the row length (for quantization, the number of elements). Small rows are timed as a
  batch of `rows` rows (about HOT_ELEMENTS elements, in+out within the L2 cache) so the call
  overhead is amortised; every per-element figure divides by rows * n.
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
import itertools
import math
import statistics
import time
from dataclasses import asdict, dataclass
from functools import partial
from typing import Callable, Optional

import numpy as np

from . import _auto, _bindings, _catalog, _codebooks, _dispatch

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


# --- bandwidth probe and roofline ---------------------------------------------------------------

@dataclass(frozen=True)
class Bandwidth:
    """Memory bandwidth from streaming over one buffer of `nbytes`, in GB/s (1e9 bytes/s).

    read_gb_s:       nbytes / time of a read-only pass (XOR of all 64-bit words).
    read_write_gb_s: 2 * nbytes / time of a read-modify-write pass (add 1 to every word in
                     place): bytes read and bytes written both count.
    source: which streams measured it: the C probe, or NumPy when the C extension is not built.
    """

    nbytes: int
    read_gb_s: float
    read_write_gb_s: float
    source: str
    samples: int

    def t_read(self, nbytes):
        """Roofline time in ns to read nbytes at the read-only rate (bytes / (GB/s) = ns)."""
        return nbytes / self.read_gb_s

    def t_read_write(self, nbytes):
        """Roofline time in ns to move nbytes, reads plus writes, at the read+write rate."""
        return nbytes / self.read_write_gb_s


def bandwidth(nbytes=None, *, repeats=7):
    """Measures read and read+write bandwidth over a buffer of nbytes (rounded down to 8 bytes).

    With the C extension: the C probe streams over PROBE_BYTES by default, measured cold as the
    cold cases are: one warm-up pass, then the median of `repeats` passes each timed alone after
    flushing the buffer from every cache level (time_flushed), so it is main memory's bandwidth
    whatever the cache sizes. Without it: np.bitwise_xor.reduce and np.add(words, 1, out=words)
    over ROTATION_BYTES by default, reused (time_callable), as cold cases rotate there.
    Bandwidth.source says which.
    """
    if nbytes is None:
        nbytes = PROBE_BYTES if can_flush() else ROTATION_BYTES
    count = int(nbytes) // 8
    if count < 1:
        raise ValueError(f"nbytes must be at least 8, not {nbytes}")
    words = np.ones(count, dtype=np.uint64)  # written, so the pages exist before timing
    if _dispatch.lib is not None:
        ffi, lib = _dispatch.ffi, _dispatch.lib
        pointer = ffi.from_buffer("uint64_t[]", words, require_writable=True)

        def read():
            lib.sml_stream_read(pointer, count)

        def read_write():
            lib.sml_stream_read_write(pointer, count)

        source = "C probe (sml_stream_read, sml_stream_read_write)"
    else:
        def read():
            np.bitwise_xor.reduce(words)

        def read_write():
            np.add(words, 1, out=words)

        source = "NumPy fallback (C extension not built)"
    if can_flush():
        read_time = time_flushed(read, (), [words], repeats=repeats, max_seconds=0.5)
        read_write_time = time_flushed(read_write, (), [words], repeats=repeats, max_seconds=0.5)
    else:
        budget = dict(repeats=repeats, min_sample_ns=200_000, max_seconds=0.5)
        read_time = time_callable(read, **budget)
        read_write_time = time_callable(read_write, **budget)
    return Bandwidth(nbytes=count * 8, read_gb_s=count * 8 / read_time.median_ns,
                     read_write_gb_s=2 * count * 8 / read_write_time.median_ns, source=source,
                     samples=min(read_time.samples, read_write_time.samples))


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
    read_only, read_write = traffic_split(kernel_id)
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


def make_buffers(kind, n, distribution="normal", *, blocksize=None, batch=True, cold=True):
    """Buffers of a kind for size n. batch: short rows batched to ~HOT_ELEMENTS (else one row).
    cold: a call on more than COLD_BYTES is timed cold (flushed, or rotating over
    rotation_count() sets without the C extension); else every size is timed hot, on one set
    reused, its data in whatever cache level holds them."""
    if kind == "rows":
        rows = batch_rows(n) if batch else 1
        set_bytes = 8 * rows * n
    elif kind == "quant":
        rows, blocksize = 1, blocksize or QUANT_BLOCKSIZE
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
    build(backend, buffers) -> (func, arg_sets): one timed call is func(*args), args rotating
      over arg_sets, one per buffer set. Outputs are preallocated unless the case is a call
      that allocates (the auto path's *_allocating, the peers).
    buffers: the kind of Buffers it runs on ("rows" or "quant"); blocksize: the block size of
      its quant buffers (None: QUANT_BLOCKSIZE).
    kernel_of(backend, n): the id of the catalog kernel it runs at row length n, whose traffic
      gives the roofline (None: no roofline).
    bytes_in_out: bytes in + bytes out per element, for the effective GB/s.
    backends: None for the library's backends, else the one backend name of a peer.
    baseline: the name of the NumPy case its "x NumPy" is against, or None.
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

    @property
    def is_baseline(self):
        return self.family == "numpy"


def _codebook():
    code = _codebooks.create_dynamic_map()
    return code, _codebooks.search_tables(code)


def _catalog_build(kernel):
    """build() of a catalog kernel through its binding, outputs preallocated."""
    def build(backend, buffers):
        call = _bindings.bound(kernel.id, backend, np.float32 if kernel.dtype == "f32" else None)
        if kernel.signature == "rows":
            return call, buffers.sets
        if kernel.signature == "pair":
            mantissa, exponent = np.empty(buffers.rows), np.empty(buffers.rows)
            return call, [(x, mantissa, exponent) for x, _ in buffers.sets]
        if kernel.signature == "loss":
            # mean reduction with the gradient (into y), as a training step calls it
            labels, losses = np.zeros(buffers.rows, np.int64), np.empty(buffers.rows)
            return call, [(x, labels, -1, 1.0 / buffers.rows, losses, y) for x, y in buffers.sets]
        code, tables = _codebook()
        if kernel.signature == "quantize":
            return call, [(x, buffers.blocksize, tables, q, absmax) for x, q, absmax, _ in buffers.sets]
        return call, [(q, absmax, buffers.blocksize, code, out) for _, q, absmax, out in buffers.sets]

    return build


CATALOG_SIGNATURES = ("rows", "pair", "loss", "quantize", "dequantize")  # not "map" and "codes": parts of others


def catalog_cases():
    """A case per catalog kernel with one of CATALOG_SIGNATURES, in catalog order."""
    cases = []
    for kernel in _catalog.KERNELS.values():
        if kernel.signature not in CATALOG_SIGNATURES:
            continue
        quant = kernel.signature in ("quantize", "dequantize")
        cases.append(Case(kernel.id, kernel.family, _catalog_build(kernel), buffers="quant" if quant else "rows",
                          kernel_of=lambda backend, n, kernel_id=kernel.id: kernel_id,
                          bytes_in_out={"pair": 4, "quantize": 5, "dequantize": 5}.get(kernel.signature, 8),
                          baseline=f"numpy_{kernel.function}" if kernel.function in NUMPY_FUNCTIONS else None))
    return cases


def auto_cases():
    """softmaxlib.softmax and log_softmax, with out= (auto_<function>) and allocating their
    result (auto_<function>_allocating), as users call them: on the default backend without
    backend= (the fast path), on another with backend= (the general path)."""
    import softmaxlib

    def case(function, allocating):
        public = getattr(softmaxlib, function)

        def build(backend, buffers):
            keywords = {} if backend == _dispatch.DEFAULT_BACKEND else {"backend": backend}
            if allocating:
                return partial(public, **keywords), [(x,) for x, _ in buffers.sets]
            return (lambda x, y: public(x, out=y, **keywords)), buffers.sets

        return Case(f"auto_{function}{'_allocating' if allocating else ''}", "auto", build,
                    kernel_of=lambda backend, n: _auto.kernel_id(function, backend, n), baseline=f"numpy_{function}")

    return [case(function, allocating) for function in ("softmax", "log_softmax") for allocating in (False, True)]


PEER_MODULES = {"scipy_softmax": "scipy", "torch_softmax": "torch"}


def missing_peers():
    """{peer case name: the module it needs} for the peers not installed here."""
    return {name: module for name, module in PEER_MODULES.items() if importlib.util.find_spec(module) is None}


def peer_cases():
    """The NumPy expressions of every row function (and the StableMax cross-entropy), always;
    scipy.special.softmax and torch.softmax (one thread, on torch.from_numpy(x) made once per
    buffer set) when installed. They allocate their results, as users' code does."""
    def numpy_case(function, expression):
        def build(backend, buffers):
            return expression, [(x,) for x, _ in buffers.sets]

        return Case(f"numpy_{function}", "numpy", build, backends=("numpy",))

    def cross_entropy(backend, buffers):
        labels = np.zeros(buffers.rows, np.int64)
        return numpy_stablemax_cross_entropy, [(x, labels) for x, _ in buffers.sets]

    def scipy_softmax(backend, buffers):
        import scipy.special
        return partial(scipy.special.softmax, axis=-1), [(x,) for x, _ in buffers.sets]

    def torch_softmax(backend, buffers):
        import torch
        torch.set_num_threads(1)
        return torch.softmax, [(torch.from_numpy(x), -1) for x, _ in buffers.sets]

    cases = [numpy_case(function, expression) for function, expression in NUMPY_BASELINES.items()]
    cases.append(Case("numpy_stablemax_cross_entropy", "numpy", cross_entropy, backends=("numpy",)))
    missing = missing_peers()
    for name, build in (("scipy_softmax", scipy_softmax), ("torch_softmax", torch_softmax)):
        if name not in missing:
            cases.append(Case(name, "peer", build, backends=(PEER_MODULES[name],), baseline="numpy_softmax"))
    return cases


def quant_cases():
    """The NumPy references of quantize_blockwise and dequantize_blockwise (the catalog kernels
    are in catalog_cases()), on quant buffers."""
    def quantize(backend, buffers):
        midpoints = _codebook()[1].midpoints[:-1]
        return (lambda x: numpy_quantize(x, midpoints, buffers.blocksize)), [(s[0],) for s in buffers.sets]

    def dequantize(backend, buffers):
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
    median_ns, cold cases only. speedup_vs_numpy: the baseline's time / this time, when the run
    has the baseline.
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

    def as_dict(self):
        return asdict(self)


def measure(case, backend, buffers, *, bw=None, repeats=15, warmup=1, max_seconds=MAX_CASE_SECONDS,
            baseline_ns=None):
    """Times one case on one backend over buffers (make_buffers(case.buffers, ...)); returns a
    Result. bw: a Bandwidth for the roofline (None: no roofline); baseline_ns: the NumPy
    baseline's median on the same buffers."""
    func, arg_sets = case.build(backend, buffers)
    if buffers.flush:
        timing = time_flushed(func, arg_sets[0], buffers.sets[0], repeats=repeats, warmup=warmup,
                              max_seconds=max_seconds)
    else:
        timing = time_callable(func, arg_sets, repeats=repeats, warmup=warmup, max_seconds=max_seconds)
    elements = buffers.elements
    kernel_id = case.kernel_of(backend, buffers.n) if case.kernel_of else None
    roofline = roofline_ns(kernel_id, elements, bw) if kernel_id and bw else None
    median = timing.median_ns
    return Result(
        kernel=case.name, family=case.family, backend=backend, n=buffers.n, input=buffers.input, rows=buffers.rows,
        blocksize=buffers.blocksize, cache=buffers.cache, buffers=len(buffers.sets), samples=timing.samples,
        calls_per_sample=timing.calls_per_sample, median_ns=median, min_ns=timing.min_ns,
        ns_per_element=median / elements, g_elements_per_s=elements / median,
        gb_per_s=case.bytes_in_out * elements / median, roofline_ns=roofline,
        roofline_fraction=roofline / median if roofline and buffers.cache == "cold" else None,
        speedup_vs_numpy=None if baseline_ns is None else baseline_ns / median)


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


def plan(cases, sizes, backends, inputs_of):
    """The runs of `cases`, in order, as (case, backend, n, input): by size; the NumPy baselines
    first (so every "x NumPy" is known when its row is printed), then the cases as given; per
    case its backends (a peer's own, else `backends`), then its inputs (inputs_of(case)), so that
    the row of one case on each input follows its row on the previous one."""
    ordered = sorted(cases, key=lambda case: not case.is_baseline)  # stable: the given order otherwise
    return [(case, backend, n, distribution) for n in sizes for case in ordered
            for backend in (case.backends or backends) for distribution in inputs_of(case)]


def run(cases, sizes=DEFAULT_SIZES, backends=None, *, inputs=("normal",), repeats=15, warmup=1, bw=None,
        batch=True, cold=True, max_seconds=MAX_CASE_SECONDS, on_result=None, on_start=None):
    """Times cases x backends x sizes x inputs; returns [Result] in plan() order.

    cases: Case objects or names of all_cases() (quantization cases run at their blocksize).
    sizes: row lengths n. backends: default every usable backend. inputs: names of INPUTS, or a
    function case -> names. bw: a Bandwidth for the roofline; default bandwidth() (main
    memory). batch, cold: see make_buffers. on_start(index, count, case, backend, n, input)
    before and on_result(result) after each case. The buffers of one size, kind and input are
    made once and shared by its cases.
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
    sizes = [int(n) for n in sizes]
    if any(n < 1 for n in sizes):
        raise ValueError(f"sizes must be positive, not {sizes}")
    if bw is None:
        bw = bandwidth()
    runs = plan(cases, sizes, backends, inputs_of)
    results, buffers, baseline_ns = [], {}, {}
    for index, (case, backend, n, distribution) in enumerate(runs):
        if on_start is not None:
            on_start(index, len(runs), case, backend, n, distribution)
        key = (case.buffers, case.blocksize, distribution)
        if n not in {b.n for b in buffers.values()}:
            buffers.clear()  # before the next size allocates
        if key not in buffers:
            buffers[key] = make_buffers(case.buffers, n, distribution, blocksize=case.blocksize, batch=batch,
                                        cold=cold)
        result = measure(case, backend, buffers[key], bw=bw, repeats=repeats, warmup=warmup, max_seconds=max_seconds,
                         baseline_ns=baseline_ns.get((case.baseline, key)))
        if case.is_baseline:
            baseline_ns[case.name, key] = result.median_ns
        results.append(result)
        if on_result is not None:
            on_result(result)
    buffers.clear()
    return results


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

"""Benchmarks: the kernels of the registry against NumPy and a memory-bandwidth roofline.

The command `softmaxlib bench` (softmaxlib/_bench_cli.py) is built on it. The API, for scripts
and notebooks:

- bandwidth(nbytes) measures the machine's memory bandwidth with the C probe streams
  (csrc/softmaxlib.h: sml_stream_read, sml_stream_read_write) and converts byte counts to
  roofline times (Bandwidth.t_read, Bandwidth.t_read_write).
- time_callable(func, arg_sets) times a callable: warm-up, repeats, median and min.
- run(sizes, backends, operations, inputs=...) times every requested registry operation on every
  requested backend and input distribution, plus the NumPy baseline, and returns one Result per case.
- INPUTS names the input distributions (normal = N(0, 1), uniform80 = U(-80, 80), uniform1000 =
  U(-1000, 1000)); draw(name, shape, seed) draws float32 values from one of them.

Conventions:

- n is the row length. Small rows are timed as a batch of `rows` rows (about HOT_ELEMENTS
  elements, in+out within the L2 cache) so the cffi call overhead is amortised; every per-element
  figure divides by rows * n.
- A case is "hot" (in cache) when the x and y of one call fit in half the last-level cache:
  the same buffers are reused and several calls make one sample of >= ~1 ms. Otherwise it is
  "cold" (out of cache): calls rotate over several (x, y) buffer sets totalling at least twice
  the last-level cache, so no call finds its data left in cache by the previous one.
- Effective bandwidth, GB/s = (bytes in + bytes out) / time = 8 * elements / time, whatever the
  algorithm's actual traffic, so algorithms with different numbers of passes compare fairly.
- Inputs are float32 from numpy's default_rng(seed), the same seed for every distribution. On
  Intel cores every operation that produces a subnormal or underflowing float takes a microcode
  assist, so wide-range rows, whose exp(x - max) underflows for about half the elements
  (U(-80, 80)) or nearly all (U(-1000, 1000), the Two-Pass paper's benchmark input), can be many
  times slower than N(0, 1) rows; AMD cores barely notice.
- "x NumPy" = NumPy's time / the kernel's time (above 1: faster than NumPy), measured in the
  same process, same sizes and same inputs.
- The roofline fraction = roofline time / measured time (roofline_ns, see there). It is computed
  against the bandwidth of main memory and so is meaningful for cold cases only; the table shows
  it for those.
"""
import argparse
import gc
import math
import re
import time
from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np

from . import _dispatch, _registry

DEFAULT_SIZES = (1000, 100_000, 1 << 24)
HOT_ELEMENTS = 1 << 16       # a batch of short rows: 256 KiB in + 256 KiB out, inside L2
MIN_SAMPLE_NS = 1_000_000    # hot cases: enough calls per sample for ~1 ms
MAX_CASE_SECONDS = 1.0       # timed-sample budget per case; slow cases get fewer repeats
MIN_REPEATS = 3
MAX_SIZE = 1 << 30


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


# --- cache size and buffer rotation -------------------------------------------------------------

def llc_bytes():
    """Size of the last-level cache in bytes, as read at import (softmaxlib._dispatch)."""
    return _dispatch.LAST_LEVEL_CACHE_BYTES


def is_hot(set_bytes, llc=None):
    """Whether one call's data (set_bytes) stays in cache between calls: within half the LLC."""
    return set_bytes <= (llc or llc_bytes()) // 2


def buffer_count(set_bytes, llc=None):
    """How many buffer sets of set_bytes each to rotate over: 1 if hot, else >= 2 and >= 2 x LLC."""
    llc = llc or llc_bytes()
    if is_hot(set_bytes, llc):
        return 1
    return max(2, math.ceil(2 * llc / set_bytes))


# --- timing -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Timing:
    """Times of one call in ns: median and min over `samples` samples of `calls_per_sample` calls."""

    median_ns: float
    min_ns: float
    samples: int
    calls_per_sample: int


def time_callable(func, arg_sets=((),), *, repeats=15, warmup=1, min_sample_ns=MIN_SAMPLE_NS,
                  max_seconds=MAX_CASE_SECONDS, min_repeats=MIN_REPEATS):
    """Times func(*args), rotating args over arg_sets (one set per call, in turn).

    Warm-up: `warmup` calls on every argument set (page faults, JIT, caches), then one
    calibration call. A sample is k back-to-back calls timed with time.perf_counter_ns, with k
    chosen so a sample lasts >= min_sample_ns. Samples: `repeats`, cut down to what fits in
    max_seconds but never below min_repeats. The garbage collector is off while timing.
    For out-of-cache timings pass several argument sets whose buffers total more than the
    last-level cache (see buffer_count).
    """
    arg_sets = [tuple(args) for args in arg_sets]
    if not arg_sets:
        raise ValueError("arg_sets is empty")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, not {repeats}")
    count = len(arg_sets)
    for _ in range(warmup):
        for args in arg_sets:
            func(*args)
    call = 0
    enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter_ns()
        func(*arg_sets[call % count])
        call += 1
        first = max(time.perf_counter_ns() - start, 1)
        per_sample = max(1, min(10_000, math.ceil(min_sample_ns / first)))
        affordable = int(max_seconds * 1e9 // (first * per_sample))
        samples = max(min(repeats, min_repeats), min(repeats, affordable))
        times = []
        for _ in range(samples):
            start = time.perf_counter_ns()
            for _ in range(per_sample):
                func(*arg_sets[call % count])
                call += 1
            times.append((time.perf_counter_ns() - start) / per_sample)
    finally:
        if enabled:
            gc.enable()
    times.sort()
    middle = len(times) // 2
    median = times[middle] if len(times) % 2 else (times[middle - 1] + times[middle]) / 2
    return Timing(median_ns=median, min_ns=times[0], samples=len(times), calls_per_sample=per_sample)


# --- bandwidth probe ----------------------------------------------------------------------------

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

    nbytes defaults to 4 x the last-level cache, i.e. main memory. Each stream gets one warm-up
    pass, then the median of `repeats` samples (time_callable). Uses the C probe streams, or
    np.bitwise_xor.reduce and np.add(words, 1, out=words) when the C extension is not built
    (Bandwidth.source says which).
    """
    if nbytes is None:
        nbytes = 4 * llc_bytes()
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
    budget = dict(repeats=repeats, min_sample_ns=200_000, max_seconds=0.5)
    read_time = time_callable(read, **budget)
    read_write_time = time_callable(read_write, **budget)
    return Bandwidth(nbytes=count * 8, read_gb_s=count * 8 / read_time.median_ns,
                     read_write_gb_s=2 * count * 8 / read_write_time.median_ns, source=source,
                     samples=min(read_time.samples, read_write_time.samples))


# --- traffic model ------------------------------------------------------------------------------

def traffic_split(operation):
    """(read-only, read+write) float32 values moved per element by a registry operation.

    Reads of x are read-only traffic; every value of y moved (stored, or loaded again to be
    rescaled) is read+write traffic (the registry's read_write_per_element).
    """
    spec = _registry.OPERATIONS[operation]
    return spec.traffic_per_element - spec.read_write_per_element, spec.read_write_per_element


def roofline_ns(operation, elements, bw):
    """Lower bound of the time in ns for `operation` over `elements` float32 values, from memory.

    bw.t_read(read-only bytes) + bw.t_read_write(read+write bytes), bytes = 4 x elements x the
    values of traffic_split. A store of y is charged at the read+write rate per byte stored,
    as if it were written without reading its cache line first; a plain store (no non-temporal
    hint) also reads the line for ownership, so the true limit for store-heavy passes is higher
    and this bound is optimistic: a fraction of 1 is out of reach without non-temporal stores.
    """
    read_only, read_write = traffic_split(operation)
    return bw.t_read(4 * elements * read_only) + bw.t_read_write(4 * elements * read_write)


# --- the NumPy baseline -------------------------------------------------------------------------

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


NUMPY_BASELINES = {"softmax": numpy_softmax, "log_softmax": numpy_log_softmax,
                   "stablemax": numpy_stablemax, "log_stablemax": numpy_log_stablemax}
# float32 values the baselines move per element: softmax: max 1, subtract 2, exp 2, sum 1, then
# divide (or subtract the log) 2; StableMax: compare 2, add 2, min 2, subtract 2, divide 2,
# where 4, sum 1, divide 2 (log: log 2 more); temporaries' page faults are not counted.
NUMPY_TRAFFIC_PER_ELEMENT = {"softmax": 8, "log_softmax": 8, "stablemax": 17, "log_stablemax": 19}


def is_log(function):
    """Whether a public function returns log-probabilities."""
    return function.startswith("log_")


def _split_name(operation):
    """(public function, variant) of a registry operation: ('log_softmax', 'reload'),
    ('softmax', 'two_pass')."""
    spec = _registry.OPERATIONS[operation]
    return spec.function, spec.variant or spec.family


def sum_error(y, log_output):
    """max over rows of |sum of the row's probabilities - 1| (NaN if any is not finite)."""
    y = np.asarray(y, dtype=np.float64)
    total = np.exp(y).sum(-1) if log_output else y.sum(-1)
    return float(np.max(np.abs(total - 1.0))) if total.size else 0.0


# --- the benchmark ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Result:
    """One timed case. Times are per call of `rows` rows of n elements; see the module docstring.

    operation: registry name, or the baseline's name ("softmax") when backend == "numpy".
    input: the distribution of x, a name of INPUTS.
    speedup_vs_numpy: NumPy baseline time / this time (None without a baseline).
    bytes_in_out: 8 * elements per call. bytes_moved: the algorithm's traffic per call
      (traffic_per_element * 4 * elements; NUMPY_TRAFFIC_PER_ELEMENT for NumPy); roofline_ns
      its time at the probe's bandwidth (None for NumPy), roofline_fraction = roofline_ns /
      median_ns.
    sum_error: max over rows of |sum of probabilities - 1|, a check of the output.
    """

    operation: str
    family: str
    variant: str
    backend: str
    n: int
    input: str
    rows: int
    cache: str
    buffers: int
    samples: int
    calls_per_sample: int
    median_ns: float
    min_ns: float
    ns_per_element: float
    gb_per_s: float
    speedup_vs_numpy: float | None
    bytes_in_out: int
    bytes_moved: int
    roofline_ns: float | None
    roofline_fraction: float | None
    sum_error: float

    @property
    def is_baseline(self):
        return self.backend == "numpy"

    def as_dict(self):
        return asdict(self)


def batch_rows(n):
    """Rows per call for row length n: enough for about HOT_ELEMENTS elements, at least 1."""
    return max(1, HOT_ELEMENTS // n)


def make_inputs(n, rows=None, llc=None, seed=0, distribution="normal"):
    """Buffer sets [(x, y)] of shape (rows, n) float32 for row length n: one set if hot, else
    buffer_count() sets. x is drawn from `distribution` (a name of INPUTS; default standard
    normal), the same values in every set; y is zeroed."""
    rows = batch_rows(n) if rows is None else rows
    count = buffer_count(8 * rows * n, llc)
    x = draw(distribution, (rows, n), seed)
    sets = []
    for index in range(count):
        y = np.empty_like(x)
        y.fill(0.0)  # touch every page now, not in the first timed call
        sets.append((x if index == 0 else x.copy(), y))
    return sets


def run(sizes=DEFAULT_SIZES, backends=None, operations=None, *, inputs=("normal",), repeats=15,
        baseline=True, bw=None, max_seconds=MAX_CASE_SECONDS, on_result=None):
    """Times operations x backends x sizes x inputs, plus the NumPy baseline per size and input;
    returns [Result].

    sizes: row lengths n. backends: default every usable backend. operations: registry names,
    default all of _registry.OPERATIONS. inputs: names of INPUTS, the distributions of x (every
    one drawn with the same seed). Kernels are called through _registry.row_kernel on
    preallocated y (no allocation in the timed call); the NumPy baseline allocates, as users'
    code does; speedup_vs_numpy compares with the baseline on the same input. bw: a Bandwidth
    for the roofline; default bandwidth() (main memory). on_result(result) is called as each case
    finishes. Per size and input the baseline runs first.
    """
    backends = list(_dispatch.USABLE_BACKENDS if backends is None else backends)
    for backend in backends:
        _dispatch.check_backend(backend)
    operations = list(_registry.OPERATIONS if operations is None else operations)
    for operation in operations:
        if operation not in _registry.OPERATIONS:
            raise ValueError(f"unknown operation {operation!r}; the operations are "
                             f"{', '.join(_registry.OPERATIONS)}")
    inputs = input_names(inputs)
    sizes = [int(n) for n in sizes]
    if any(n < 1 for n in sizes):
        raise ValueError(f"sizes must be positive, not {sizes}")
    if bw is None:
        bw = bandwidth()
    llc = llc_bytes()
    timing = dict(repeats=repeats, max_seconds=max_seconds)
    results = []

    def record(result):
        results.append(result)
        if on_result is not None:
            on_result(result)

    for n in sizes:
        rows = batch_rows(n)
        elements = rows * n
        for distribution in inputs:
            sets = make_inputs(n, rows, llc, distribution=distribution)
            cache = "hot" if len(sets) == 1 else "cold"
            x_sets = [(x,) for x, _ in sets]
            baseline_ns = {}
            if baseline:
                for name in dict.fromkeys(_split_name(op)[0] for op in operations):
                    function = NUMPY_BASELINES.get(name)
                    if function is None:
                        continue
                    t = time_callable(function, x_sets, **timing)
                    baseline_ns[name] = t.median_ns
                    record(Result(
                        operation=name, family="numpy", variant="numpy", backend="numpy", n=n,
                        input=distribution, rows=rows, cache=cache, buffers=len(sets), samples=t.samples,
                        calls_per_sample=t.calls_per_sample, median_ns=t.median_ns, min_ns=t.min_ns,
                        ns_per_element=t.median_ns / elements, gb_per_s=8 * elements / t.median_ns,
                        speedup_vs_numpy=1.0, bytes_in_out=8 * elements,
                        bytes_moved=NUMPY_TRAFFIC_PER_ELEMENT[name] * 4 * elements,
                        roofline_ns=None, roofline_fraction=None,
                        sum_error=sum_error(function(sets[0][0]), is_log(name))))
            for operation in operations:
                spec = _registry.OPERATIONS[operation]
                name, variant = _split_name(operation)
                roofline = roofline_ns(operation, elements, bw)
                for backend in backends:
                    kernel = _registry.row_kernel(operation, backend, np.float32)
                    for _, y in sets:
                        y.fill(np.nan)  # a kernel that skips elements fails the check below
                    t = time_callable(kernel, sets, **timing)
                    reference = baseline_ns.get(name)
                    record(Result(
                        operation=operation, family=spec.family, variant=variant, backend=backend,
                        n=n, input=distribution, rows=rows, cache=cache, buffers=len(sets),
                        samples=t.samples, calls_per_sample=t.calls_per_sample, median_ns=t.median_ns, min_ns=t.min_ns,
                        ns_per_element=t.median_ns / elements, gb_per_s=8 * elements / t.median_ns,
                        speedup_vs_numpy=None if reference is None else reference / t.median_ns,
                        bytes_in_out=8 * elements, bytes_moved=spec.traffic_per_element * 4 * elements,
                        roofline_ns=roofline, roofline_fraction=roofline / t.median_ns,
                        sum_error=sum_error(sets[0][1], is_log(name))))
            del sets, x_sets
    return results


# --- 8-bit block-wise quantization -------------------------------------------------------------

QUANT_SIZES = (1 << 16, 1 << 20, 1 << 24)
QUANT_BLOCKSIZES = (256, 2048, 4096)


def numpy_quantize(x, midpoints, blocksize):
    """The NumPy reference: absmax per block, then searchsorted over the codebook's midpoints
    (rounded down, so that side="left" counts the midpoints below each value). n % blocksize == 0."""
    blocks = x.reshape(-1, blocksize)
    absmax = np.abs(blocks).max(axis=1)
    scaled = blocks * (np.float32(1) / absmax)[:, None]
    return np.searchsorted(midpoints, scaled, side="left").astype(np.uint8).reshape(-1), absmax


def numpy_dequantize(q, code, absmax, blocksize):
    """The NumPy reference: code[q] * absmax of each block."""
    return (code[q].reshape(-1, blocksize) * absmax[:, None]).reshape(-1)


@dataclass(frozen=True)
class QuantResult:
    """One timed quantize or dequantize case. g_elements_per_s = n / median time; roofline_fraction
    (cold cases only): quantize reads 4 bytes and writes 1 per element, dequantize reads 1 and
    writes 4, charged as roofline_ns is. input: the distribution of x, a name of INPUTS."""

    operation: str
    backend: str
    n: int
    blocksize: int
    cache: str
    ns_per_element: float
    g_elements_per_s: float
    speedup_vs_numpy: Optional[float]
    roofline_fraction: Optional[float]
    input: str = "normal"


def run_quant(sizes=QUANT_SIZES, blocksizes=QUANT_BLOCKSIZES, backends=None, *, inputs=("normal",), repeats=15,
              bw=None, on_result=None):
    """Times quantize_blockwise and dequantize_blockwise kernels (signed dynamic map) per backend,
    size, input (names of INPUTS; buffer set i drawn with seed i) and block size, after the NumPy
    reference of each in the same process; returns [QuantResult]."""
    from . import _codebooks
    backends = list(_dispatch.USABLE_BACKENDS if backends is None else backends)
    inputs = input_names(inputs)
    bw = bandwidth() if bw is None else bw
    code = _codebooks.create_dynamic_map()
    tables = _codebooks.search_tables(code)
    results = []
    for n in sizes:
        count = buffer_count(5 * n)
        for distribution in inputs:
            xs = [draw(distribution, n, seed=index) for index in range(count)]
            cache = "hot" if count == 1 else "cold"
            for blocksize in blocksizes:
                blocks = -(-n // blocksize)
                sets = [(x, np.empty(n, np.uint8), np.empty(blocks, np.float32), np.empty(n, np.float32)) for x in xs]
                for x, q, absmax, _ in sets:
                    q[...], absmax[...] = numpy_quantize(x, tables.midpoints[:-1], blocksize)
                reference = {
                    "quantize": time_callable(lambda x, q, a, y: numpy_quantize(x, tables.midpoints[:-1], blocksize),
                                              sets, repeats=repeats).median_ns,
                    "dequantize": time_callable(lambda x, q, a, y: numpy_dequantize(q, code, a, blocksize), sets,
                                                repeats=repeats).median_ns,
                }
                roofline = {"quantize": bw.t_read(4 * n) + bw.t_read_write(n),
                            "dequantize": bw.t_read(n) + bw.t_read_write(4 * n)}
                for backend in ["numpy", *backends]:
                    for operation in ("quantize", "dequantize"):
                        if backend == "numpy":
                            ns = reference[operation]
                        else:
                            kernel = _registry.quant_kernel(f"{operation}_blockwise", backend)
                            call = (lambda x, q, a, y: kernel(x, blocksize, tables, q, a)) if operation == "quantize" \
                                else (lambda x, q, a, y: kernel(q, a, blocksize, code, y))
                            ns = time_callable(call, sets, repeats=repeats).median_ns
                        result = QuantResult(operation, backend, n, blocksize, cache, ns / n, n / ns,
                                             reference[operation] / ns,
                                             roofline[operation] / ns if cache == "cold" else None, distribution)
                        results.append(result)
                        if on_result is not None:
                            on_result(result)
                del sets
    return results


QUANT_HEADER = f"{'operation':<22} {'backend':<7} {'n':>6} {'block':>5} {'cache':<5} {'ns/elem':>9} {'G el/s':>7} " \
               f"{'x NumPy':>7} {'roofline':>8}"


def format_quant_row(result):
    roofline = "-" if result.roofline_fraction is None else f"{result.roofline_fraction:.2f}"
    return (f"{result.operation:<22} {result.backend:<7} {_format_size(result.n):>6} {result.blocksize:>5} "
            f"{result.cache:<5} {result.ns_per_element:>9.3f} {result.g_elements_per_s:>7.2f} "
            f"{result.speedup_vs_numpy:>7.2f} {roofline:>8}")


# --- command line -------------------------------------------------------------------------------

def parse_size(text):
    """'1000', '1e5', '2^24' or '2**24' -> int; ValueError for anything else or out of range."""
    spelled = text.strip().lower().replace("**", "^")
    value = None
    try:
        if re.fullmatch(r"\d+\^\d+", spelled):
            base, exponent = spelled.split("^")
            if int(exponent) <= 64:
                value = int(base) ** int(exponent)
        elif re.fullmatch(r"\d+", spelled):
            value = int(spelled)
        elif re.fullmatch(r"\d+(\.\d*)?e\+?\d+", spelled):
            number = float(spelled)
            if number.is_integer():
                value = int(number)
    except (ValueError, OverflowError):
        value = None
    if value is None:
        raise ValueError(f"bad size {text!r}: use an integer such as 1000, 1e5 or 2^24")
    if not 1 <= value <= MAX_SIZE:
        raise ValueError(f"size {text!r} is out of range: 1 <= n <= 2^30")
    return value


def _size_list(text):
    try:
        sizes = [parse_size(part) for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if not sizes:
        raise argparse.ArgumentTypeError("no sizes given (leave the option out for the default)")
    return sizes


def _name_list(text):
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise argparse.ArgumentTypeError("no names given (leave the option out for the default)")
    return names


def _input_list(text):
    """--inputs: names of INPUTS, or 'all'."""
    names = _name_list(text)
    if names == ["all"]:
        return list(INPUTS)
    try:
        return input_names(names)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _format_size(n):
    if n >= 1024 and n & (n - 1) == 0:
        return f"2^{n.bit_length() - 1}"
    exponent = int(math.log10(n)) if n > 0 else 0
    if n >= 1000 and n == 10 ** exponent:
        return f"1e{exponent}"
    return str(n)



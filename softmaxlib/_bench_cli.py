"""`softmaxlib bench`: throughput against row length for every kernel family, with a roofline.

    softmaxlib bench --quick                       # the README's main job, under a minute
    softmaxlib bench                               # the full sweep: n = 2^8 .. 2^26
    softmaxlib bench --inputs normal,uniform80,uniform1000
    softmaxlib bench --json zen5.json --plot zen5.png
    softmaxlib bench compare skylake.json zen5.json

Every case is timed by softmaxlib.bench.time_callable (warm-up, median of repeats) on float32
input from one distribution of softmaxlib.bench.INPUTS (--inputs: normal = N(0, 1), the default;
uniform80 = U(-80, 80); uniform1000 = U(-1000, 1000); the same seed for each), outputs
preallocated. --quick also runs the softmax kernels and the peers on U(-80, 80), each in the row
after the same case on N(0, 1): on Intel cores, where subnormal results take microcode assists,
that row can be many times slower (quick_inputs). The buffers of one size and input are made once and shared by
its cases. Short rows are batched to about 2^16 elements per call ("hot"); a call whose data
exceed half the last-level cache is "cold" and rotates over buffers totalling twice the cache.
Per case: ns per element, G elements/s, effective GB/s (bytes in + bytes out over time, the
convention that makes two-pass and three-pass comparable) and, for cold cases, the fraction of
the roofline from the C bandwidth probe measured in the same run.

Bad arguments (an unknown kernel, backend or input, a size list that does not parse, an empty
list, an output path that cannot be written) exit with code 2 and a message, before anything is
measured or written.
"""
import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable, Optional

import numpy as np

from . import _auto, _codebooks, _dispatch, _registry, bench
from ._version import __version__

QUANT_BLOCKSIZE = 4096
FULL_SIZES = [1 << k for k in range(8, 27)]
QUICK_SIZES = [1 << 10, 1 << 16, 1 << 20, 1 << 24]
QUICK_REPEATS = 5
DEFAULT_INPUTS = ["normal"]
QUICK_INPUTS = ["normal", "uniform80"]  # for the kernels whose exp can underflow: see quick_inputs


@dataclass(frozen=True)
class Kernel:
    """A benchmarked kernel: make(backend, n) returns the callable timed over the buffer sets of
    _inputs; traffic(backend, n) the bytes it moves per element through memory, (read-only,
    read+write), or None (no roofline); bytes_in_out per element for the effective GB/s;
    backends: None for the library's backends, else the one backend name of a peer."""

    name: str
    family: str
    make: Callable
    traffic: Callable
    bytes_in_out: int = 8
    backends: Optional[tuple] = None
    quant: bool = False


def _operation_traffic(operation):
    read_only, read_write = bench.traffic_split(operation)
    return 4 * read_only, 4 * read_write


def _registry_kernel(operation):
    spec = _registry.OPERATIONS[operation]
    return Kernel(operation, spec.family, lambda backend, n: _registry.row_kernel(operation, backend, np.float32),
                  lambda backend, n: _operation_traffic(operation))


def _auto_kernel(allocating):
    import softmaxlib

    def make(backend, n):
        if allocating:
            return lambda x, y: softmaxlib.softmax(x, backend=backend)
        return lambda x, y: softmaxlib.softmax(x, out=y, backend=backend)

    name = "auto_softmax_allocating" if allocating else "auto_softmax"
    return Kernel(name, "auto", make, lambda backend, n: _operation_traffic(_auto.operation("softmax", backend, n)))


def _quant_kernel(operation):
    tables = _codebooks.search_tables(_codebooks.create_dynamic_map())
    code = _codebooks.create_dynamic_map()

    def make(backend, n):
        kernel = _registry.quant_kernel(f"{operation}_blockwise", backend)
        blocks = -(-n // QUANT_BLOCKSIZE)
        absmax = np.empty(blocks, np.float32)
        if operation == "quantize":
            return lambda x, state: kernel(x, QUANT_BLOCKSIZE, tables, state[0], absmax)
        return lambda x, state: kernel(state[0], state[1], QUANT_BLOCKSIZE, code, state[2])

    traffic = (4, 1) if operation == "quantize" else (1, 4)
    return Kernel(operation, "quant", make, lambda backend, n: traffic, bytes_in_out=5, quant=True)


def _peer_kernels():
    """NumPy always; SciPy and PyTorch (one thread) when installed."""
    def no_roofline(backend, n):
        return None

    peers = [Kernel("numpy_softmax", "peer", lambda backend, n: (lambda x, y: bench.numpy_softmax(x)), no_roofline,
                    backends=("numpy",))]
    try:
        import scipy.special
        peers.append(Kernel("scipy_softmax", "peer",
                            lambda backend, n: (lambda x, y: scipy.special.softmax(x, axis=-1)), no_roofline,
                            backends=("scipy",)))
    except ImportError:
        pass
    try:
        import torch
        torch.set_num_threads(1)

        def make(backend, n):
            return lambda x, y: torch.softmax(torch.from_numpy(x), -1)

        peers.append(Kernel("torch_softmax", "peer", make, no_roofline, backends=("torch",)))
    except ImportError:
        pass
    return peers


def all_kernels():
    """Every benchmarkable kernel by name: the registry's row operations, the auto path (out= and
    allocating), quantize and dequantize, and the peers installed here."""
    kernels = [_registry_kernel(name) for name in _registry.OPERATIONS]
    kernels += [_auto_kernel(False), _auto_kernel(True), _quant_kernel("quantize"), _quant_kernel("dequantize")]
    kernels += _peer_kernels()
    return {kernel.name: kernel for kernel in kernels}


DEFAULT_KERNELS = ["softmax_reload", "softmax_recompute", "softmax_two_pass", "auto_softmax", "auto_softmax_allocating",
                   "stablemax", "quantize", "dequantize", "numpy_softmax", "scipy_softmax", "torch_softmax"]
QUICK_KERNELS = ["softmax_reload", "softmax_two_pass", "auto_softmax", "stablemax", "quantize", "dequantize",
                 "numpy_softmax", "torch_softmax"]


@dataclass(frozen=True)
class CaseResult:
    kernel: str
    family: str
    backend: str
    n: int
    input: str
    rows: int
    cache: str
    ns_per_element: float
    g_elements_per_s: float
    gb_per_s: float
    roofline_fraction: Optional[float]


def _inputs(kernel, n, llc, distribution="normal"):
    """Buffer sets for one size and input distribution (a name of bench.INPUTS): [(x, y)] rows
    for the softmax family; for quantization x flat with (codes, absmax, output) state, the codes
    quantized once so dequantize has real input. Every kernel of the same kind (kernel.quant) can
    share them: the kernels only write their outputs, and quantize writes the same codes."""
    if not kernel.quant:
        return bench.make_inputs(n, llc=llc, distribution=distribution)
    count = bench.buffer_count(5 * n, llc)
    x = bench.draw(distribution, n)
    tables = _codebooks.search_tables(_codebooks.create_dynamic_map())
    sets = []
    for _ in range(count):
        codes, absmax = np.empty(n, np.uint8), np.empty(-(-n // QUANT_BLOCKSIZE), np.float32)
        _registry.quant_kernel("quantize_blockwise", "numba")(x, QUANT_BLOCKSIZE, tables, codes, absmax)
        sets.append((x.copy(), (codes, absmax, np.zeros(n, np.float32))))
    return sets


def measure(kernel, backend, n, repeats, bw, llc, distribution="normal", sets=None):
    """Times one case; sets: _inputs(kernel, n, llc, distribution), made here if not given."""
    if sets is None:
        sets = _inputs(kernel, n, llc, distribution)
    rows = 1 if kernel.quant else sets[0][0].shape[0]
    elements = rows * n
    timing = bench.time_callable(kernel.make(backend, n), sets, repeats=repeats)
    cache = "hot" if len(sets) == 1 else "cold"
    traffic = kernel.traffic(backend, n)
    roofline = None
    if cache == "cold" and traffic is not None:
        roofline = (bw.t_read(traffic[0] * elements) + bw.t_read_write(traffic[1] * elements)) / timing.median_ns
    return CaseResult(kernel.name, kernel.family, backend, n, distribution, rows, cache, timing.median_ns / elements,
                      elements / timing.median_ns, kernel.bytes_in_out * elements / timing.median_ns, roofline)


# --- machine facts ------------------------------------------------------------------------------

def _cpu_model():
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cache_sizes():
    """{'L1d': bytes, 'L2': bytes, 'L3': bytes} of cpu0 from Linux's sysfs (empty elsewhere)."""
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


def _versions():
    versions = {"softmaxlib": __version__, "python": platform.python_version(), "numpy": np.__version__}
    for name in ("numba", "cffi", "scipy", "torch"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            pass
    return versions


def subnormals_flushed():
    """Whether float32 arithmetic here flushes subnormal results to zero (FTZ/DAZ set by some
    library in this process), which changes the speed of kernels that produce them."""
    tiny = np.array([np.finfo(np.float32).tiny], np.float32)
    return bool((tiny / np.float32(4))[0] == 0)


def machine_info(bw):
    return {
        "cpu": _cpu_model(), "machine": platform.machine(), "cores": os.cpu_count(),
        "isa": [name for name, present in _dispatch.CPU_FEATURES.items() if present],
        "backends": list(_dispatch.USABLE_BACKENDS), "caches": _cache_sizes(),
        "last_level_cache": _dispatch.LAST_LEVEL_CACHE_BYTES, "versions": _versions(),
        "subnormals_flushed": subnormals_flushed(),
        "bandwidth": {"read_gb_s": bw.read_gb_s, "read_write_gb_s": bw.read_write_gb_s, "buffer_bytes": bw.nbytes,
                      "source": bw.source},
    }


# --- output -------------------------------------------------------------------------------------

HEADER = (f"{'kernel':<24} {'backend':<7} {'n':>6} {'input':<11} {'rows':>5} {'cache':<5} {'ns/elem':>9} "
          f"{'G el/s':>7} {'GB/s':>7} {'roofline':>8}")


def format_row(result):
    roofline = "-" if result.roofline_fraction is None else f"{result.roofline_fraction:.2f}"
    return (f"{result.kernel:<24} {result.backend:<7} {bench._format_size(result.n):>6} {result.input:<11} "
            f"{result.rows:>5} {result.cache:<5} {result.ns_per_element:>9.3f} {result.g_elements_per_s:>7.2f} "
            f"{result.gb_per_s:>7.1f} {roofline:>8}")


def input_ratios(results):
    """{input: [(ratio, result)]} for every input but normal: each case's time over the time of the
    same kernel, backend and n on N(0, 1) input, when the run has that case."""
    normal = {(r.kernel, r.backend, r.n): r for r in results if r.input == "normal"}
    ratios = {}
    for result in results:
        reference = normal.get((result.kernel, result.backend, result.n))
        if result.input != "normal" and reference is not None:
            ratios.setdefault(result.input, []).append((result.ns_per_element / reference.ns_per_element, result))
    return ratios


def format_input_ratios(results):
    """One line per wide-range input: the range of its time over N(0, 1)'s, and the largest case."""
    lines = []
    for distribution, ratios in input_ratios(results).items():
        ratio, worst = max(ratios, key=lambda pair: pair[0])
        lines.append(f"{bench.INPUTS[distribution]} against N(0, 1), same kernel, backend and n: "
                     f"{min(r for r, _ in ratios):.2f}-{ratio:.2f}x the time over {len(ratios)} cases "
                     f"(most: {worst.kernel} {worst.backend} n={bench._format_size(worst.n)}).")
    return lines


def plot(results, info, path):
    """GB/s against n on a log2 axis, one line per kernel and backend (and input, when the run has
    several), the cache sizes as vertical markers (where x and y of one call, 8n bytes, fill them)
    and the probe's bandwidth as a line."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(14, 7))
    lines = {}
    several_inputs = len({result.input for result in results}) > 1
    for result in results:
        key = (result.kernel, result.backend, result.input if several_inputs else None)
        lines.setdefault(key, []).append((result.n, result.gb_per_s))
    # one colour per kernel, one line style per backend
    palette = plt.get_cmap("tab20").colors
    colours = {kernel: palette[(2 * index) % 20 + (2 * index) // 20 % 2]
               for index, kernel in enumerate(dict.fromkeys(k for k, _, _ in lines))}
    styles = {"avx512": "-", "avx2": "--", "numba": ":"}
    markers = {None: ".", "normal": ".", "uniform80": "x", "uniform1000": "+"}
    for (kernel, backend, distribution), points in lines.items():
        points.sort()
        label = f"{kernel} ({backend}{', ' + bench.INPUTS[distribution] if distribution else ''})"
        axes.plot([p[0] for p in points], [p[1] for p in points], marker=markers.get(distribution, "."),
                  color=colours[kernel], linestyle=styles.get(backend, "-."), label=label)
    for level, size in info["caches"].items():
        axes.axvline(size / 8, color="grey", linestyle=":", linewidth=1)
        axes.text(size / 8, axes.get_ylim()[1] * 0.97, f" {level}", color="grey", va="top")
    axes.axhline(info["bandwidth"]["read_write_gb_s"], color="black", linestyle="--", linewidth=1,
                 label="roofline: read+write bandwidth (probe)")
    axes.set_xscale("log", base=2)
    axes.set_xlabel("row length n (elements)")
    axes.set_ylabel("effective GB/s = (bytes in + bytes out) / time")
    axes.set_title(f"softmaxlib {info['versions']['softmaxlib']} on {info['cpu']}, one thread")
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    axes.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110, format="png")
    plt.close(figure)


def _atomic_write(path, write):
    """Writes through a temporary file in the same folder, renamed at the end: never half-written."""
    temporary = f"{path}.tmp{os.getpid()}"
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def _write_json(path, document):
    with open(path, "w") as file:
        json.dump(document, file, indent=1)


def _check_writable(parser, path, option):
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        parser.error(f"{option} {path!r} is a folder, not a file")
    if not os.path.isdir(folder):
        parser.error(f"{option} {path!r}: the folder {folder!r} does not exist")
    if not os.access(folder, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        parser.error(f"{option} {path!r} cannot be written")


# --- commands -----------------------------------------------------------------------------------

def _progress(done, total, label):
    width = 30
    filled = width * done // total
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {label:<48}")
    sys.stderr.flush()


def quick_inputs(kernel):
    """--quick's inputs for a kernel: N(0, 1), and U(-80, 80) for the softmax kernels and peers,
    whose exp(x - max) underflows there. Not for StableMax (no exp: nothing underflows) nor for
    quantization (each block is scaled by its absmax: the range of x does not matter)."""
    return DEFAULT_INPUTS if kernel.family in ("stablemax", "quant") else QUICK_INPUTS


def plan(kernels, names, backends, sizes, inputs_of):
    """The cases of a run, in order, as (kernel, backend, n, input), inputs_of(kernel) giving each
    kernel's inputs: by size, kernel, backend, then input, so that the row of one case on each
    input follows its row on the previous one."""
    return [(kernels[name], backend, n, distribution) for n in sizes for name in names
            for backend in (kernels[name].backends or backends) for distribution in inputs_of(kernels[name])]


def run_command(argv):
    kernels = all_kernels()
    parser = argparse.ArgumentParser(
        prog="softmaxlib bench", description=__doc__.splitlines()[0],
        epilog="GB/s: (bytes in + bytes out) / time. roofline: roofline time / time, cold cases only. "
               "`softmaxlib bench compare A.json B.json` compares two runs.")
    parser.add_argument("--quick", action="store_true",
                        help=f"a subset that runs in under a minute: n = "
                             f"{', '.join(bench._format_size(n) for n in QUICK_SIZES)}, kernels "
                             f"{','.join(QUICK_KERNELS)}, inputs {','.join(QUICK_INPUTS)} (stablemax, quantize "
                             f"and dequantize: normal only), {QUICK_REPEATS} repeats")
    parser.add_argument("--sizes", type=bench._size_list, default=None,
                        help="comma-separated row lengths, e.g. 2^8,1e5,2^24 (default 2^8 .. 2^26)")
    parser.add_argument("--kernels", type=bench._name_list, default=None,
                        help=f"comma-separated kernels or 'all' (default {','.join(DEFAULT_KERNELS)}; "
                             f"available here: {','.join(kernels)})")
    parser.add_argument("--backends", type=bench._name_list, default=None,
                        help=f"comma-separated backends (default: usable here, {','.join(_dispatch.USABLE_BACKENDS)})")
    parser.add_argument("--inputs", type=bench._input_list, default=None,
                        help="comma-separated input distributions or 'all': "
                             + ", ".join(f"{name} = {label}" for name, label in bench.INPUTS.items())
                             + f" (default {','.join(DEFAULT_INPUTS)}; with --quick {','.join(QUICK_INPUTS)} for the "
                               "softmax kernels and peers). Wide ranges underflow exp: slow on Intel cores "
                               "(subnormal assists)")
    parser.add_argument("--repeats", type=int, default=None,
                        help=f"timed samples per case (default 15; {QUICK_REPEATS} with --quick)")
    parser.add_argument("--json", metavar="PATH", help="write machine facts and every figure as JSON")
    parser.add_argument("--plot", metavar="PATH.png", help="plot GB/s against n (needs matplotlib: the bench extra)")
    args = parser.parse_args(argv)

    sizes = args.sizes or (QUICK_SIZES if args.quick else FULL_SIZES)
    repeats = args.repeats if args.repeats is not None else (QUICK_REPEATS if args.quick else 15)
    if repeats < 1:
        parser.error(f"--repeats must be >= 1, not {repeats}")
    if args.kernels == ["all"]:
        names = list(kernels)
    else:
        names = args.kernels if args.kernels is not None else (QUICK_KERNELS if args.quick else DEFAULT_KERNELS)
        if args.kernels is None:  # the defaults include peers that may not be installed
            names = [name for name in names if name in kernels]
    unknown = [name for name in names if name not in kernels]
    if unknown:
        parser.error(f"unknown kernel {unknown[0]!r}; the kernels here are {', '.join(kernels)}")
    backends = args.backends if args.backends is not None else list(_dispatch.USABLE_BACKENDS)
    if args.inputs is None and args.quick:
        inputs_of = quick_inputs
    else:
        inputs = args.inputs if args.inputs is not None else DEFAULT_INPUTS

        def inputs_of(kernel):
            return inputs

    for backend in backends:
        try:
            _dispatch.check_backend(backend)
        except ValueError as error:
            parser.error(str(error))
    if args.json:
        _check_writable(parser, args.json, "--json")
    if args.plot:
        _check_writable(parser, args.plot, "--plot")
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            parser.error("--plot needs matplotlib: pip install 'softmaxlib[bench]'")

    started = time.perf_counter()
    llc = bench.llc_bytes()
    bw = bench.bandwidth(4 * llc)
    info = machine_info(bw)
    print(f"softmaxlib {__version__}, {info['cpu']}, {info['cores']} cores, caches "
          f"{', '.join(f'{k} {v >> 10} KiB' for k, v in info['caches'].items())}; "
          f"subnormals {'flushed' if info['subnormals_flushed'] else 'kept'}")
    print(f"bandwidth probe, {bw.nbytes >> 20} MiB: read {bw.read_gb_s:.1f} GB/s, "
          f"read+write {bw.read_write_gb_s:.1f} GB/s")
    cases = plan(kernels, names, backends, sizes, inputs_of)
    on_terminal = sys.stderr.isatty()
    print(HEADER, flush=True)
    results = []
    buffers, buffers_n = {}, None  # the buffer sets of the current size, by (kernel.quant, input)
    for index, (kernel, backend, n, distribution) in enumerate(cases):
        if on_terminal:
            _progress(index, len(cases), f"{kernel.name} {backend} n={bench._format_size(n)} {distribution}")
        if n != buffers_n:
            buffers.clear()  # before the next size allocates
            buffers_n = n
        key = (kernel.quant, distribution)
        if key not in buffers:
            buffers[key] = _inputs(kernel, n, llc, distribution)
        result = measure(kernel, backend, n, repeats, bw, llc, distribution, buffers[key])
        results.append(result)
        if on_terminal:
            sys.stderr.write("\r" + " " * 90 + "\r")
        print(format_row(result), flush=True)
    buffers.clear()
    for line in format_input_ratios(results):
        print(line)
    print(f"{len(results)} cases in {time.perf_counter() - started:.1f} s. GB/s: (bytes in + bytes out) / time; "
          f"roofline: roofline time / time, cold cases only.")
    if args.json:
        used = dict.fromkeys(result.input for result in results)
        document = {"machine": info, "repeats": repeats, "quant_blocksize": QUANT_BLOCKSIZE,
                    "inputs": {name: bench.INPUTS[name] for name in used},
                    "results": [asdict(result) for result in results]}
        _atomic_write(args.json, lambda path: _write_json(path, document))
        print(f"wrote {args.json}")
    if args.plot:
        _atomic_write(args.plot, lambda path: plot(results, info, path))
        print(f"wrote {args.plot}")
    return 0


def compare_command(argv):
    parser = argparse.ArgumentParser(prog="softmaxlib bench compare",
                                     description="Ratios of two `softmaxlib bench --json` runs, case by case.")
    parser.add_argument("before", help="the first run's JSON (A)")
    parser.add_argument("after", help="the second run's JSON (B)")
    args = parser.parse_args(argv)
    runs = []
    for path in (args.before, args.after):
        try:
            with open(path) as file:
                document = json.load(file)
            # runs from before --inputs have no "input": they were all N(0, 1)
            runs.append({(r["kernel"], r["backend"], r["n"], r.get("input", "normal")): r for r in document["results"]})
            runs[-1]["machine"] = document["machine"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            parser.error(f"cannot read {path!r} as a softmaxlib bench JSON: {error}")
    a, b = runs
    print(f"A: {a.pop('machine')['cpu']} ({args.before})\nB: {b.pop('machine')['cpu']} ({args.after})")
    common = [key for key in a if key in b]
    if not common:
        print("no case appears in both runs")
        return 0
    print(f"{'kernel':<24} {'backend':<7} {'n':>6} {'input':<11} {'A ns/elem':>10} {'B ns/elem':>10} {'A/B':>6}")
    for key in common:
        ra, rb = a[key], b[key]
        print(f"{key[0]:<24} {key[1]:<7} {bench._format_size(key[2]):>6} {key[3]:<11} {ra['ns_per_element']:>10.3f} "
              f"{rb['ns_per_element']:>10.3f} {ra['ns_per_element'] / rb['ns_per_element']:>6.2f}")
    print("A/B above 1: B is faster.")
    return 0


def main(argv):
    if argv and argv[0] == "compare":
        return compare_command(argv[1:])
    return run_command(argv)

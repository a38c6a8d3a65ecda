"""`softmaxlib bench`: throughput against row length for every kernel family, with a roofline.

    softmaxlib bench --quick                       # the README's main job, under a minute
    softmaxlib bench                               # the full sweep: n = 2^8 .. 2^26
    softmaxlib bench --suite latency               # ns per public call on one short row
    softmaxlib bench --suite crossover             # also stablemax, quant, peers: see SUITES
    softmaxlib bench --suite threads               # issue 12: 1 and 2 workers against torch
    softmaxlib bench --suite optim --sizes 2^20    # 8-bit optimizer steps against torch.optim, bitsandbytes
    softmaxlib bench --quick --workers 1,2         # every case on 1 and on 2 workers
    softmaxlib bench --inputs normal,uniform80,uniform1000
    softmaxlib bench --json zen5.json --plot zen5.png
    softmaxlib bench compare skylake.json zen5.json

This module parses the options, prints, writes the JSON and the plot, and compares runs; what a
case is and how it is timed is softmaxlib.bench (warm-up, then the median of samples of many
calls; above 2 MiB a call, "cold", of single calls each after flushing its buffers from the
cache, on every machine; on float32 input from one distribution of bench.INPUTS, outputs preallocated unless the
call allocates). --quick also runs the softmax kernels and the peers on U(-80, 80), each in the
row after the same case on N(0, 1): on Intel cores, where subnormal results take microcode
assists, that row can be many times slower (quick_inputs). Per case: ns per element,
G elements/s, effective GB/s (bytes in + bytes out over time, the convention that makes two-pass
and three-pass comparable), the speedup over the NumPy expression when the run has it, and, for
cold cases, the fraction of the roofline from the C bandwidth probe measured in the same run.
--workers K (or a list) runs the cases that take a thread count on K workers (workers=K; torch
at K threads), with the roofline of the bandwidth K threads get, measured in the same run by K
threads at once; without it every case runs on one worker, as before issue 12.

Bad arguments (an unknown kernel, backend, input or suite, a size list that does not parse, an
empty list, an output path that cannot be written, an option a suite does not take) exit with
code 2 and a message, before anything is measured or written.
"""
import argparse
import importlib.metadata
import json
import math
import os
import platform
import re
import sys
import time
from dataclasses import dataclass, replace
from typing import Optional

import numpy as np

from . import _catalog, _dispatch, _threads, bench, optim
from ._version import __version__

FULL_SIZES = [1 << k for k in range(8, 27)]
QUICK_SIZES = [1 << 10, 1 << 16, 1 << 20, 1 << 24]
QUICK_REPEATS = 5
DEFAULT_REPEATS = 15
DEFAULT_INPUTS = ["normal"]
QUICK_INPUTS = ["normal", "uniform80"]  # for the kernels whose exp can underflow: see quick_inputs
DEFAULT_KERNELS = ["softmax_reload", "softmax_recompute", "softmax_two_pass", "auto_softmax", "auto_softmax_allocating",
                   "stablemax", "quantize_blockwise", "dequantize_blockwise", "numpy_softmax", "scipy_softmax",
                   "torch_softmax"]
QUICK_KERNELS = ["softmax_reload", "softmax_two_pass", "auto_softmax", "stablemax", "quantize_blockwise",
                 "dequantize_blockwise", "numpy_softmax", "torch_softmax"]
MAX_SIZE = 1 << 30


@dataclass(frozen=True)
class Suite:
    """A preset of `softmaxlib bench --suite NAME`: what it measures unless the options say
    otherwise. backends None: every usable one. batch, cold, warmup: as bench.run. pivot: the
    fields of the rows of a summary table of ns per element, one column per kernel."""

    about: str
    kernels: tuple
    sizes: tuple
    repeats: int
    blocksizes: tuple = (bench.QUANT_BLOCKSIZE,)
    backends: Optional[tuple] = None
    batch: bool = True
    cold: bool = True
    warmup: int = 1
    pivot: Optional[tuple] = None


SUITES = {
    # the measurement behind the auto path (softmaxlib/_auto.py, docs/algorithms.md): one row,
    # the same buffers on every call, so that it stays in whatever cache level holds 8n bytes
    "crossover": Suite("where two-pass overtakes three-pass: one row of n, the same buffers on every call",
                       ("softmax_reload", "softmax_reload_exact", "softmax_two_pass", "log_softmax_reload",
                        "log_softmax_two_pass"), tuple(1 << k for k in range(10, 26)), repeats=9,
                       batch=False, cold=False, warmup=2, pivot=("backend", "n")),
    "stablemax": Suite("StableMax, log-StableMax and the cross-entropy with its gradient, against NumPy",
                       ("numpy_stablemax", "numpy_log_stablemax", "numpy_stablemax_cross_entropy", "stablemax",
                        "log_stablemax", "stablemax_cross_entropy"), (1000, 100_000, 1 << 24), repeats=11),
    "quant": Suite("8-bit block-wise quantize and dequantize against NumPy, B = 256, 2048, 4096",
                   ("numpy_quantize_blockwise", "numpy_dequantize_blockwise", "quantize_blockwise",
                    "dequantize_blockwise"), (1 << 16, 1 << 20, 1 << 24), repeats=9, blocksizes=(256, 2048, 4096)),
    "peers": Suite("softmaxlib.softmax against NumPy, scipy.special.softmax and torch.softmax (one thread)",
                   ("auto_softmax", "auto_softmax_allocating", "numpy_softmax", "scipy_softmax", "torch_softmax"),
                   (1000, 10_000, 100_000, 1 << 24), repeats=DEFAULT_REPEATS,
                   backends=(_dispatch.DEFAULT_BACKEND,), pivot=("n", "rows")),
    "latency": Suite("ns per public call on one row of n float32, against np.exp, SciPy and torch, and the "
                     "overhead over the bare kernel", (), bench.LATENCY_SIZES, repeats=DEFAULT_REPEATS),
    # issue 12's closing table: bench.threads_suite, printed by format_threads
    "threads": Suite("the public calls on 1 and 2 workers (and the library default) against torch.softmax at its "
                     "default thread count and at one, with the 1- and 2-thread rooflines",
                     ("softmaxlib.softmax", "two_pass.softmax", "stablemax.stablemax", "quant.quantize_blockwise",
                      "quant.dequantize_blockwise"), bench.THREADS_SHAPES, repeats=bench.THREADS_REPEATS,
                     backends=(_dispatch.DEFAULT_BACKEND,)),
    # bench.optim_suite, printed by format_optim_group
    "optim": Suite("softmaxlib.optim's fused 8-bit steps on every backend against torch.optim (float32) and "
                   "bitsandbytes' 8-bit optimizers, at one thread and at the defaults, with the rooflines",
                   tuple(optim.OPTIMIZERS), bench.OPTIM_SIZES, repeats=bench.OPTIM_REPEATS),
}
LATENCY_OPTIONS = ("--sizes", "--repeats", "--json")  # the options --suite latency takes
THREADS_REJECTS = ("quick", "plot")  # the options --suite threads does not take
OPTIM_REJECTS = ("quick", "plot", "inputs", "blocksizes", "workers")  # the options --suite optim does not take


# --- option values ------------------------------------------------------------------------------

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


def parse_shape(text):
    """A size, or a shape 'ROWSxN' such as '64x2^10' -> (64, 1024); ValueError for anything else
    or out of range (rows * n at most 2^30)."""
    if "x" not in text.lower():
        return parse_size(text)
    parts = text.lower().split("x")
    if len(parts) != 2:
        raise ValueError(f"bad shape {text!r}: use ROWSxN, such as 64x2^10")
    rows, n = (parse_size(part) for part in parts)
    if rows * n > MAX_SIZE:
        raise ValueError(f"shape {text!r} is out of range: rows x n <= 2^30")
    return rows, n


def _size_list(text):
    """--sizes: row lengths n, or shapes ROWSxN."""
    try:
        sizes = [parse_shape(part) for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if not sizes:
        raise argparse.ArgumentTypeError("no sizes given (leave the option out for the default)")
    return sizes


def parse_workers(text):
    """--workers: comma-separated thread counts, each a positive int or -1 (every available
    core, resolved here), duplicates dropped; ValueError with the reason."""
    values = []
    for part in text.split(","):
        if not part.strip():
            continue
        try:
            value = int(part.strip())
        except ValueError:
            raise ValueError(f"bad workers {part.strip()!r}: a positive number of threads or -1 (every core), "
                             f"e.g. --workers 1,2") from None
        if value < 1 and value != -1:
            raise ValueError(f"bad workers {value}: a positive number of threads or -1 (every core)")
        values.append(_threads.available_cores() if value == -1 else value)
    if not values:
        raise ValueError("no worker counts given (leave the option out for one worker)")
    return list(dict.fromkeys(values))


def _workers_list(text):
    try:
        return parse_workers(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _name_list(text):
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise argparse.ArgumentTypeError("no names given (leave the option out for the default)")
    return names


def _input_list(text):
    """--inputs: names of INPUTS, or 'all'."""
    names = _name_list(text)
    if names == ["all"]:
        return list(bench.INPUTS)
    try:
        return bench.input_names(names)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _blocksize_list(text):
    sizes = _size_list(text)
    if any(not 16 <= size <= 1 << 24 for size in sizes):
        raise argparse.ArgumentTypeError("block sizes run from 16 to 2^24")
    return sizes


def format_size(n):
    if isinstance(n, tuple):
        return format_shape(*n)
    if n >= 1024 and n & (n - 1) == 0:
        return f"2^{n.bit_length() - 1}"
    exponent = int(math.log10(n)) if n > 0 else 0
    if n >= 1000 and n == 10 ** exponent:
        return f"1e{exponent}"
    return str(n)


def format_shape(rows, n):
    """'64x2^10' for 64 rows, '2^20' for one row."""
    return format_size(n) if rows in (None, 1) else f"{rows}x{format_size(n)}"


def quick_inputs(case):
    """--quick's inputs for a case: N(0, 1), and U(-80, 80) for the softmax kernels and peers,
    whose exp(x - max) underflows there. Not for StableMax (no exp: nothing underflows) nor for
    quantization (each block is scaled by its absmax: the range of x does not matter)."""
    return DEFAULT_INPUTS if "stablemax" in case.name or case.buffers == "quant" else QUICK_INPUTS


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


def _versions():
    versions = {"softmaxlib": __version__, "python": platform.python_version(), "numpy": np.__version__}
    for name in ("numba", "cffi", "scipy", "torch"):
        try:  # from the installed metadata: importing torch for its version takes seconds
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def subnormals_flushed():
    """Whether float32 arithmetic here flushes subnormal results to zero (FTZ/DAZ set by some
    library in this process), which changes the speed of kernels that produce them."""
    tiny = np.array([np.finfo(np.float32).tiny], np.float32)
    return bool((tiny / np.float32(4))[0] == 0)


def _bandwidth_info(bw):
    return {"read_gb_s": bw.read_gb_s, "read_write_gb_s": bw.read_write_gb_s, "buffer_bytes": bw.nbytes,
            "source": bw.source, "threads": bw.threads, "start_skew_ns": bw.start_skew_ns}


def machine_info(bw):
    """The machine's facts for the JSON; bw: the run's Bandwidth or {threads: Bandwidth}, or None
    (the latency suite). "bandwidth" is the probe of the fewest threads (one, unless --workers
    leaves 1 out), "bandwidths" every thread count's."""
    bws = {} if bw is None else (dict(bw) if isinstance(bw, dict) else {bw.threads: bw})
    first = bws[min(bws)] if bws else None
    return {
        "cpu": _cpu_model(), "machine": platform.machine(), "cores": os.cpu_count(),
        "isa": [name for name, present in _dispatch.CPU_FEATURES.items() if present],
        "backends": list(_dispatch.USABLE_BACKENDS), "default_backend": _dispatch.DEFAULT_BACKEND,
        "caches": _dispatch.CACHE_SIZES, "last_level_cache": _dispatch.LAST_LEVEL_CACHE_BYTES,
        "versions": _versions(), "subnormals_flushed": subnormals_flushed(),
        "available_cores": _threads.available_cores(), "default_workers": _threads.DEFAULT[0],
        "load_average": _load_average(),
        "bandwidth": None if first is None else _bandwidth_info(first),
        "bandwidths": [_bandwidth_info(b) for _, b in sorted(bws.items())],
    }


def _load_average():
    """The 1-, 5- and 15-minute load averages (os.getloadavg), or None where there are none."""
    try:
        return list(os.getloadavg())
    except (AttributeError, OSError):
        return None


# A run on several workers with a 1-minute load average at least this high gets a note: other
# processes were running, and a thread of ours that finds its core busy waits for it.
BUSY_LOAD = 1.0


def load_notes(workers, info):
    """A line when a run on more than one worker starts on a busy machine (load_average)."""
    load = info.get("load_average")
    if max(workers) < 2 or not load or load[0] < BUSY_LOAD:
        return []
    return [f"load average {load[0]:.1f} over the last minute on {info['available_cores']} cores: other processes "
            f"are running, and a thread that finds its core busy waits, so the figures on more than one worker "
            f"(and the probe's) are lower than this machine gives"]


def _print_machine(info):
    print(f"softmaxlib {__version__}, {info['cpu']}, {info['cores']} cores, caches "
          f"{', '.join(f'{k} {v >> 10} KiB' for k, v in info['caches'].items())}; "
          f"subnormals {'flushed' if info['subnormals_flushed'] else 'kept'}")


# --- output -------------------------------------------------------------------------------------

HEADER = (f"{'kernel':<29} {'backend':<7} {'n':>6} {'input':<11} {'workers':>7} {'rows':>5} {'block':>5} "
          f"{'cache':<5} {'ns/elem':>9} {'G el/s':>7} {'GB/s':>7} {'x NumPy':>7} {'roofline':>8}")


def _optional(value, spec):
    return "-" if value is None else format(value, spec)


def format_row(result):
    return (f"{result.kernel:<29} {result.backend:<7} {format_size(result.n):>6} {result.input:<11} "
            f"{result.workers:>7} {result.rows:>5} {_optional(result.blocksize, 'd'):>5} {result.cache:<5} "
            f"{result.ns_per_element:>9.3f} {result.g_elements_per_s:>7.2f} {result.gb_per_s:>7.1f} "
            f"{_optional(result.speedup_vs_numpy, '.2f'):>7} {_optional(result.roofline_fraction, '.2f'):>8}")


def input_ratios(results):
    """{input: [(ratio, result)]} for every input but normal: each case's time over the time of the
    same kernel, backend, n, rows, block size and workers on N(0, 1) input, when the run has that case."""
    def key(r):
        return r.kernel, r.backend, r.n, r.rows, r.blocksize, r.workers

    normal = {key(r): r for r in results if r.input == "normal"}
    ratios = {}
    for result in results:
        reference = normal.get(key(result))
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
                     f"(most: {worst.kernel} {worst.backend} n={format_size(worst.n)}).")
    return lines


def format_pivot(results, fields):
    """ns per element as a table: one line per value of `fields` (and input and block size, when
    the run has several), one column per kernel (per kernel and backend, when a kernel ran on
    several backends and backend is not a field)."""
    fields = list(fields) + [name for name in ("input", "blocksize", "workers")
                             if len({getattr(r, name) for r in results}) > 1]
    backends = {}
    for result in results:
        backends.setdefault(result.kernel, set()).add(result.backend)

    def column(result):
        several = "backend" not in fields and len(backends[result.kernel]) > 1
        return f"{result.kernel} {result.backend}" if several else result.kernel

    columns = list(dict.fromkeys(map(column, results)))
    table = {}
    for result in results:
        key = tuple(format_size(getattr(result, f)) if f == "n" else str(getattr(result, f)) for f in fields)
        table.setdefault(key, {})[column(result)] = result.ns_per_element
    widths = [max(len(f), *(len(key[i]) for key in table)) for i, f in enumerate(fields)]
    lines = ["ns per element:", " ".join(f"{f:>{w}}" for f, w in zip(fields, widths)) + "  "
             + "  ".join(f"{c:>{max(len(c), 8)}}" for c in columns)]
    for key, cells in table.items():
        lines.append(" ".join(f"{k:>{w}}" for k, w in zip(key, widths)) + "  "
                     + "  ".join(f"{_optional(cells.get(c), '.3f'):>{max(len(c), 8)}}" for c in columns))
    return lines


LATENCY_GROUPS = {"reference": "references", "general": "softmaxlib.softmax off its fast path (general path)",
                  "kernel": "bare kernels, bound (softmaxlib._bindings), on the (1, n) views x2, y2"}


def _latency_group(row):
    if row.section != "public":
        return LATENCY_GROUPS[row.section]
    module = row.call.split("(")[0].rsplit(".", 1)[0]
    return f"softmaxlib{'' if module == 'softmaxlib' else '.' + module}, default backend, no backend="


def _ratio(value):
    """Two significant digits, as ratios of noisy times deserve."""
    if value is None:
        return "-"
    return f"{value:.0f}" if value >= 99.5 else f"{value:.2g}"


def format_latency(rows, backend):
    """The latency table: a line per call, a column group per n with ns per call and the ratios
    to np.exp and torch.softmax; under each public call its overhead over its bare kernel."""
    sizes = list(dict.fromkeys(row.n for row in rows))
    cells, overhead, order = {}, {}, {}
    for row in rows:
        if row.section == "overhead":
            overhead.setdefault(row.call, {})[row.n] = row
        else:
            cells.setdefault(row.call, {})[row.n] = row
            order.setdefault(row.call, row)

    def label(row):  # the module is the group's title
        return row.call if row.section != "public" or row.call.startswith("softmaxlib.") \
            else row.call.split(".", 1)[1]

    names = [label(row) for row in order.values()] + [f"  over {row.kernel}" for row in order.values() if row.kernel]
    width = max(map(len, names)) + 1
    lines = [f"ns per call (median of samples of many calls) on one 1-D row x of n float32; backend {backend}.",
             "/exp: time / np.exp(x)'s (np.exp(x, out=y)'s for calls given their outputs); "
             "/torch: time / torch.softmax(t, -1)'s, one thread.",
             "[v]: variant=v. '  over kernel': the call's time minus its bare kernel's, timed just before it: "
             "the Python layer's cost.",
             " " * width + "".join(f"{'n=' + str(n):>19}" for n in sizes),
             f"{'call':<{width}}" + f"{'ns':>7}{'/exp':>5}{'/torch':>7}" * len(sizes)]
    group = None
    for call, first in order.items():
        if _latency_group(first) != group:
            group = _latency_group(first)
            lines.append(f"-- {group}")
        line = f"{label(first):<{width}}"
        for n in sizes:
            row = cells[call].get(n)
            line += f"{'':>19}" if row is None else \
                f"{row.ns:>7.0f}{_ratio(row.over_np_exp):>5}{_ratio(row.over_torch):>7}"
        lines.append(line)
        if call in overhead:
            differences = (f"{overhead[call][n].ns:>7.0f}{'':>12}" if n in overhead[call] else f"{'':>19}"
                           for n in sizes)
            lines.append((f"{'  over ' + first.kernel:<{width}}" + "".join(differences)).rstrip())
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
    several_workers = len({result.workers for result in results}) > 1
    for result in results:
        key = (result.kernel, result.backend, result.input if several_inputs else None, result.blocksize,
               result.workers if several_workers else None)
        lines.setdefault(key, []).append((result.n, result.gb_per_s))
    # one colour per kernel, one line style per backend
    palette = plt.get_cmap("tab20").colors
    colours = {kernel: palette[(2 * index) % 20 + (2 * index) // 20 % 2]
               for index, kernel in enumerate(dict.fromkeys(key[0] for key in lines))}
    styles = {"avx512": "-", "avx2": "--", "numba": ":"}
    markers = {None: ".", "normal": ".", "uniform80": "x", "uniform1000": "+"}
    for (kernel, backend, distribution, blocksize, workers), points in lines.items():
        points.sort()
        label = (f"{kernel}{f' B={blocksize}' if blocksize else ''} ({backend}"
                 f"{', ' + bench.INPUTS[distribution] if distribution else ''}"
                 f"{f', {workers} workers' if workers else ''})")
        axes.plot([p[0] for p in points], [p[1] for p in points], marker=markers.get(distribution, "."),
                  color=colours[kernel], linestyle=styles.get(backend, "-."), label=label)
    for level, size in info["caches"].items():
        axes.axvline(size / 8, color="grey", linestyle=":", linewidth=1)
        axes.text(size / 8, axes.get_ylim()[1] * 0.97, f" {level}", color="grey", va="top")
    for index, probe in enumerate(info.get("bandwidths") or [info["bandwidth"]]):
        threads = probe.get("threads", 1)
        axes.axhline(probe["read_write_gb_s"], color="black", linestyle=("--", "-.", ":")[index % 3], linewidth=1,
                     label=f"roofline: read+write bandwidth (probe, {threads} thread{'s' if threads > 1 else ''})")
    axes.set_xscale("log", base=2)
    axes.set_xlabel("row length n (elements)")
    axes.set_ylabel("effective GB/s = (bytes in + bytes out) / time")
    workers = sorted({result.workers for result in results})
    axes.set_title(f"softmaxlib {info['versions']['softmaxlib']} on {info['cpu']}, "
                   f"{'one worker' if workers == [1] else ', '.join(map(str, workers)) + ' workers'}")
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


def _parser(cases):
    suites = "; ".join(f"{name}: {suite.about}" for name, suite in SUITES.items())
    parser = argparse.ArgumentParser(
        prog="softmaxlib bench", description=__doc__.splitlines()[0],
        epilog="GB/s: (bytes in + bytes out) / time. x NumPy: the NumPy expression's time / time. roofline: "
               "roofline time / time, cold cases only. `softmaxlib bench compare A.json B.json` compares two runs.")
    parser.add_argument("--suite", choices=list(SUITES), default=None,
                        help=f"a preset instead of the default sweep ({suites}); the options below override "
                             f"its sizes, kernels, backends, inputs, block sizes and repeats "
                             f"(latency takes {', '.join(LATENCY_OPTIONS)} only)")
    parser.add_argument("--quick", action="store_true",
                        help=f"a subset of the default sweep that runs in under a minute: n = "
                             f"{', '.join(format_size(n) for n in QUICK_SIZES)}, kernels "
                             f"{','.join(QUICK_KERNELS)}, inputs {','.join(QUICK_INPUTS)} (stablemax, "
                             f"quantize and dequantize: normal only), {QUICK_REPEATS} repeats")
    parser.add_argument("--sizes", type=_size_list, default=None,
                        help="comma-separated row lengths, e.g. 2^8,1e5,2^24 (default 2^8 .. 2^26), or shapes "
                             "ROWSxN, e.g. 64x2^14 (rows of n; else short rows are batched)")
    parser.add_argument("--kernels", type=_name_list, default=None,
                        help=f"comma-separated kernels or 'all' (default {','.join(DEFAULT_KERNELS)}; "
                             f"available here: {','.join(cases)}); with --suite threads its own calls, "
                             f"{','.join(SUITES['threads'].kernels)},torch.softmax; with --suite optim the optimizers, "
                             f"{','.join(SUITES['optim'].kernels)}")
    parser.add_argument("--backends", type=_name_list, default=None,
                        help=f"comma-separated backends (default: usable here, {','.join(_dispatch.USABLE_BACKENDS)})")
    parser.add_argument("--inputs", type=_input_list, default=None,
                        help="comma-separated input distributions or 'all': "
                             + ", ".join(f"{name} = {label}" for name, label in bench.INPUTS.items())
                             + f" (default {','.join(DEFAULT_INPUTS)}; with --quick {','.join(QUICK_INPUTS)} for the "
                               "softmax kernels and peers). Wide ranges underflow exp: slow on Intel cores "
                               "(subnormal assists)")
    parser.add_argument("--blocksizes", type=_blocksize_list, default=None,
                        help=f"comma-separated block sizes of the quantization cases (default {bench.QUANT_BLOCKSIZE})")
    parser.add_argument("--repeats", type=int, default=None,
                        help=f"timed samples per case (default {DEFAULT_REPEATS}; {QUICK_REPEATS} with --quick)")
    parser.add_argument("--workers", type=_workers_list, default=None, metavar="K[,K...]",
                        help="thread counts, comma-separated, each a positive int or -1 (every core): the cases "
                             "that take one run on each (workers=K; torch.set_num_threads(K)), with the roofline "
                             "of K threads' bandwidth, measured in the same run (default 1; the threads suite: "
                             "1, 2 and the library default)")
    parser.add_argument("--json", metavar="PATH", help="write machine facts and every figure as JSON")
    parser.add_argument("--plot", metavar="PATH.png", help="plot GB/s against n (needs matplotlib: the bench extra)")
    return parser


def _check_outputs(parser, args):
    if args.json:
        _check_writable(parser, args.json, "--json")
    if args.plot:
        _check_writable(parser, args.plot, "--plot")
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            parser.error("--plot needs matplotlib: pip install 'softmaxlib[bench]'")


def _reject_options(parser, args, options, message):
    """Exits with code 2 and message.format(option=...) when one of `options` (their argparse
    names) is given."""
    for option in options:
        if getattr(args, option) not in (None, False):
            parser.error(message.format(option=option))


def _reject_shapes(parser, args, message):
    """Exits with code 2 and `message` when --sizes has a shape ROWSxN."""
    if args.sizes and any(isinstance(size, tuple) for size in args.sizes):
        parser.error(message)


def latency_command(parser, args):
    """--suite latency: bench.latency, printed as one table (format_latency), written with --json."""
    suite = SUITES["latency"]
    _reject_options(parser, args, ("quick", "kernels", "backends", "inputs", "blocksizes", "plot", "workers"),
                    f"--suite latency takes {', '.join(LATENCY_OPTIONS)} only, not --{{option}}")
    _check_outputs(parser, args)
    _reject_shapes(parser, args, "--suite latency times one row: --sizes takes row lengths, not shapes ROWSxN")
    sizes = args.sizes or list(suite.sizes)
    repeats = args.repeats or suite.repeats
    started = time.perf_counter()
    info = machine_info(None)
    _print_machine(info)
    backend = _dispatch.DEFAULT_BACKEND
    on_terminal = sys.stderr.isatty()
    rows = bench.latency(sizes, repeats=repeats, on_row=(lambda row: _progress(
        sizes.index(row.n), len(sizes), f"n={row.n} {row.call[:40]}")) if on_terminal else None)
    if on_terminal:
        sys.stderr.write("\r" + " " * 90 + "\r")
    for line in format_latency(rows, backend) + bench.latency_notes():
        print(line)
    print(f"{len(rows)} rows in {time.perf_counter() - started:.1f} s; {repeats} samples per call, each of many calls.")
    if args.json:
        document = {"machine": info, "suite": "latency", "repeats": repeats, "backend": backend,
                    "quant_blocksize": bench.QUANT_BLOCKSIZE, "notes": bench.latency_notes(),
                    "latency": [row.as_dict() for row in rows]}
        _atomic_write(args.json, lambda path: _write_json(path, document))
        print(f"wrote {args.json}")
    return 0


def measure_bandwidths(workers):
    """{threads: Bandwidth} for the rooflines of `workers`: the probe on roofline_threads(k)
    threads, for each k."""
    return bench.bandwidths(sorted({bench.roofline_threads(k) for k in workers}))


def format_bandwidths(bws):
    """A line per probe: its thread count, read and read+write GB/s; with several, their ratios
    to the fewest threads' (what more threads bring, memory-bound)."""
    lines, first = [], bws[min(bws)]
    for threads, bw in bws.items():
        line = (f"bandwidth probe, {bw.nbytes >> 20} MiB, {threads} thread{'s' if threads > 1 else ''}: "
                f"read {bw.read_gb_s:.1f} GB/s, read+write {bw.read_write_gb_s:.1f} GB/s")
        if threads != first.threads:
            line += (f" ({bw.read_gb_s / first.read_gb_s:.2f}x and {bw.read_write_gb_s / first.read_write_gb_s:.2f}x "
                     f"{first.threads} thread{'s' if first.threads > 1 else ''}'; starts spread "
                     f"{bw.start_skew_ns / 1e3:.0f} us)")
        lines.append(line)
    return lines


def workers_notes(workers):
    """A line when a worker count exceeds the cores here (its roofline is that of the cores)."""
    cores = _threads.available_cores()
    over = [k for k in workers if k > cores]
    if not over:
        return []
    return [f"--workers {','.join(map(str, over))}: this process may run on {cores} core{'s' if cores > 1 else ''}; "
            f"the pool runs at most {cores} threads, so the roofline of {'those' if len(over) > 1 else 'that'} is "
            f"{cores} threads'"]


def _cell(value, spec):
    return "-" if value is None else format(value, spec)


def _ns_cell(value):
    """ns per element in at most 7 characters: 3 decimals below 10, fewer above."""
    if value is None:
        return "-"
    return format(value, ".3f" if value < 9.9995 else ".2f" if value < 99.995 else ".1f" if value < 999.95 else ".0f")


def format_threads(lines, workers=None, torch_threads=None, *, several_blocks=None):
    """Issue 12's table: three lines of header, then one line per call, shape, input (and block
    size, with several): ns per element on each worker count, the speedup over the fewest
    workers, the roofline (ns per element, from the catalog's traffic and the probe of that many
    threads) and its fraction (cold cases only), torch.softmax on each of its thread counts, and
    x torch = torch at its default / ours at ours. workers, torch_threads: the columns (default:
    those of the lines); several_blocks: whether to show the block size (default: if the lines
    have several)."""
    if workers is None:
        workers = sorted({k for line in lines for k in line.ns_per_element})
    if torch_threads is None:
        torch_threads = list(dict.fromkeys(k for line in lines for k in line.torch_ns_per_element))
    workers, torch_threads = sorted(workers), list(torch_threads)
    fewest = workers[0]
    default_workers = _threads.DEFAULT[0] if not lines else lines[0].default_workers
    torch_default = torch_threads[0] if torch_threads else None
    if several_blocks is None:
        several_blocks = len({line.blocksize for line in lines if line.blocksize}) > 1
    call_width = max([len("quant.dequantize_blockwise")] + [len(line.call) for line in lines]) + 1
    columns = ([(f"w={k}", 7) for k in workers] + [(f"x w={k}", 7) for k in workers[1:]]
               + [(f"roof{k}", 6) for k in workers] + [(f"frac{k}", 6) for k in workers]
               + [(f"torch{t}", 7) for t in torch_threads] + ([("x torch", 7)] if torch_threads else []))
    head = (f"{'call':<{call_width}}{'shape':>9} {'input':<11}{'block' if several_blocks else '':>6} {'cache':<5}"
            + "".join(f" {title:>{width}}" for title, width in columns))
    out = [f"ns per element; w=k: on k workers (workers=k); x w=k: time on {fewest} worker{'s' if fewest > 1 else ''} "
           f"/ time on k; roofk: the roofline on min(k, cores) threads' bandwidth (cold cases); frack: roofk / w=k.",
           (f"torchT: torch.softmax(t, -1, out=u) at torch.set_num_threads(T) (its default: {torch_default}); "
            f"x torch: torch{torch_default} / w={default_workers} (softmaxlib's default, get_num_threads()), "
            f"above 1: softmaxlib faster.") if torch_threads
           else "torch not installed (or left out): no torch columns.",
           head]
    for line in lines:
        cells = ([_ns_cell(line.ns_per_element.get(k)) for k in workers]
                 + [_ratio(line.speedup.get(k)) for k in workers[1:]]
                 + [_ns_cell(line.roofline_ns_per_element.get(k) if line.cache == "cold" else None) for k in workers]
                 + [_cell(line.roofline_fraction.get(k), ".2f") for k in workers]
                 + [_ns_cell(line.torch_ns_per_element.get(t)) for t in torch_threads]
                 + ([_ratio(line.vs_torch)] if torch_threads else []))
        # a space before every cell, so that a wide one never runs into its neighbour
        out.append(f"{line.call:<{call_width}}{format_shape(line.rows, line.n):>9} {line.input:<11}"
                   f"{_optional(line.blocksize, 'd') if several_blocks else '':>6} {line.cache:<5}"
                   + "".join(f" {cell:>{width}}" for cell, (_, width) in zip(cells, columns)))
    return out


def threads_command(parser, args):
    """--suite threads: bench.threads_suite, printed as one table (format_threads) line by line as
    each line's cases are measured, written with --json (its results, which `compare` reads,
    and the table)."""
    suite = SUITES["threads"]
    _reject_options(parser, args, THREADS_REJECTS, "--suite threads has its own sizes and its own table: no --{option}")
    available = bench.threads_cases()
    names = args.kernels or [name for name in available if name != "torch.softmax"] + \
        (["torch.softmax"] if "torch.softmax" in available else [])
    unknown = [name for name in names if name not in available]
    if unknown:
        why = " (torch is not installed)" if unknown[0] == "torch.softmax" else ""
        parser.error(f"unknown case {unknown[0]!r} of --suite threads{why}; its cases here are "
                     f"{', '.join(available)}")
    backends = args.backends or list(suite.backends)
    if len(backends) != 1:
        parser.error("--suite threads runs on one backend: give --backends one name")
    try:
        _dispatch.check_backend(backends[0])
    except ValueError as error:
        parser.error(str(error))
    _check_outputs(parser, args)
    shapes = args.sizes or list(suite.sizes)
    workers = args.workers or bench.threads_workers()
    repeats = args.repeats if args.repeats is not None else suite.repeats
    blocksizes = args.blocksizes or list(suite.blocksizes)

    started = time.perf_counter()
    bws = measure_bandwidths(workers)
    info = machine_info(bws)
    _print_machine(info)
    for line in format_bandwidths(bws) + workers_notes(workers) + load_notes(workers, info) + bench.cold_notes():
        print(line)
    on_terminal = sys.stderr.isatty()
    torch_threads = bench.torch_thread_counts() if "torch.softmax" in names else []
    columns = dict(workers=workers, torch_threads=torch_threads, several_blocks=len(blocksizes) > 1)
    for text in format_threads([], **columns):
        print(text)
    results, printed = [], set()

    def on_start(index, count, case, backend, n, distribution, count_workers):
        if on_terminal:
            _progress(index, count, f"{case.name} n={format_size(n)} {distribution} w={count_workers}")

    def print_ready(final=False):
        """Prints the table's lines whose cases are all measured (the next result starts another)."""
        lines = bench.threads_table(results)
        body = format_threads(lines, **columns)[3:]
        ready = len(lines) if final else len(lines) - 1  # the last line may still grow
        for index in range(ready):
            key = (lines[index].call, lines[index].rows, lines[index].n, lines[index].input, lines[index].blocksize)
            if key not in printed:
                printed.add(key)
                if on_terminal:
                    sys.stderr.write("\r" + " " * 90 + "\r")
                print(body[index], flush=True)

    def on_result(result):
        results.append(result)
        print_ready()

    with bench.torch_threads_restored():
        bench.threads_suite(shapes, workers, names=names, backend=backends[0], inputs=args.inputs,
                            blocksizes=blocksizes, repeats=repeats, bw=bws, on_start=on_start, on_result=on_result)
    if on_terminal:
        sys.stderr.write("\r" + " " * 90 + "\r")
    print_ready(final=True)
    lines = bench.threads_table(results)
    print(f"{len(results)} cases in {time.perf_counter() - started:.1f} s; medians of {repeats} samples (fewer where "
          f"a case ran out of its {bench.THREADS_MAX_SECONDS:.0f} s), cold cases flushed before each call.")
    if args.json:
        document = {"machine": info, "suite": "threads", "repeats": repeats, "workers": workers,
                    "inputs": {name: bench.INPUTS[name] for name in dict.fromkeys(r.input for r in results)},
                    "results": [result.as_dict() for result in results],
                    "threads": [line.as_dict() for line in lines]}
        _atomic_write(args.json, lambda path: _write_json(path, document))
        print(f"wrote {args.json}")
    return 0


OPTIM_HEADER = (f"{'call':<44} {'backend':<7} {'threads':>7} {'ns/param':>8} {'x torch':>7} {'x bnb':>6} "
                f"{'state B':>7} {'traffic':>7} {'roof':>6} {'frac':>5}")


def format_optim_group(group):
    """A title (n, thread setting, hot or cold), then a line per step of one size and setting
    of the optim suite, under OPTIM_HEADER."""
    first = group[0]
    setting = ("each library's default threads (softmaxlib workers=None, torch its own count)"
               if first.default_threads else f"workers={first.threads}, torch.set_num_threads({first.threads})")
    lines = [f"-- n = {format_size(first.n)}, {setting}, {first.cache}"]
    for r in group:
        lines.append(f"{r.call:<44} {r.backend:<7} {r.threads:>7} {_ns_cell(r.ns_per_param):>8} "
                     f"{_ratio(r.vs_torch):>7} {_ratio(r.vs_bnb):>6} {r.state_bytes_per_param:>7.3f} "
                     f"{r.traffic_bytes_per_param:>7} {_ns_cell(r.roofline_ns_per_param):>6} "
                     f"{_cell(r.roofline_fraction, '.2f'):>5}")
    return lines


def optim_footnotes():
    """What the optim table's columns assume."""
    adam, momentum = (_catalog.KERNELS[kernel].traffic for kernel in ("adam_step", "momentum_step"))
    adamw32, momentum32 = (sum(bench.float32_traffic(states)) for states in (2, 1))
    return [
        f"ns/param: the median over samples of the time of one step / n, after {bench.OPTIM_WARMUP_STEPS} untimed "
        f"steps and one warm-up, on float32 p ~ {bench.OPTIM_PARAM_SCALE} N(0, 1) and g ~ {bench.OPTIM_GRAD_SCALE:g} "
        f"N(0, 1); cold: p and g above {bench.COLD_BYTES >> 20} MiB, so each step is timed alone after flushing p, g "
        f"and the states.",
        "x torch: the time of torch.optim.AdamW(fused=True) (for both Adam rules) or of the same rule's torch.optim "
        "step / this time; x bnb: bitsandbytes' 8-bit step of the same rule / this time; above 1: this one is faster. "
        f"lr = {bench.OPTIM_LR:g} everywhere, the other hyper-parameters each library's defaults (SGD: momentum 0.9).",
        "state B: bytes per parameter of the arrays the optimizer keeps for p (8-bit: codes, an absmax per block of "
        "256, the maps; torch: float32 states and its step count).",
        f"traffic: bytes per parameter a step must move at least. 8-bit steps, softmaxlib's and bitsandbytes': the "
        f"catalog's kernel.traffic, p and g read (8), p written (4), each state's code read and written (2 each): "
        f"{adam} for Adam, {momentum} for one state; the absmax and the maps left out. torch.optim's float32 steps: p, "
        f"g and each state read (4 bytes each), p and each state written: {adamw32} for AdamW, {momentum32} for SGD "
        f"momentum, RMSprop and Adagrad, what one fused pass moves (foreach makes several passes, so its frac is "
        f"lower by construction).",
        "roof: that traffic at the bandwidth probe's rates on the row's thread count, ns per parameter: reads at the "
        "read rate (one read stream per thread), stores at the read+write rate; frac: roof / ns/param, cold sizes "
        "only. A step that streams several arrays at once can draw more than the read rate from one core (up to the "
        "read+write rate), so frac can exceed 1.",
        "numba: the twins run on the calling thread, so at one thread only.",
    ]


def optim_command(parser, args):
    """--suite optim: bench.optim_suite, printed as each size and thread setting is measured
    (format_optim_group), with the footnotes; written with --json."""
    suite = SUITES["optim"]
    _reject_options(parser, args, OPTIM_REJECTS,
                    "--suite optim runs at one thread and at the defaults, on its own inputs: no --{option}")
    _reject_shapes(parser, args, "--suite optim: --sizes takes parameter counts, not shapes ROWSxN")
    try:
        cases = bench.optim_cases(args.kernels or list(suite.kernels), args.backends)
    except ValueError as error:
        parser.error(f"--suite optim: {error}")
    _check_outputs(parser, args)
    sizes = args.sizes or list(suite.sizes)
    repeats = args.repeats if args.repeats is not None else suite.repeats

    started = time.perf_counter()
    bws = bench.bandwidths(bench.optim_bandwidth_threads(cases))
    info = machine_info(bws)
    _print_machine(info)
    notes = bench.optim_notes()
    for line in format_bandwidths(bws) + notes + load_notes(list(bws), info):
        print(line)
    print(OPTIM_HEADER, flush=True)
    on_terminal = sys.stderr.isatty()

    def on_start(index, count, case, n, setting):
        if on_terminal:
            _progress(index, count, f"{case.name} {case.backend} n={format_size(n)} "
                                    f"{'default threads' if setting is None else f'w={setting}'}")

    def on_group(group):
        if on_terminal:
            sys.stderr.write("\r" + " " * 90 + "\r")
        print("\n".join(format_optim_group(group)), flush=True)

    results, _, failures = bench.optim_suite(cases, sizes, repeats=repeats, bw=bws, on_start=on_start,
                                             on_group=on_group)
    for line in failures + optim_footnotes():
        print(line)
    print(f"{len(results)} steps in {time.perf_counter() - started:.1f} s; medians of {repeats} samples (fewer where "
          f"a case ran out of its {bench.OPTIM_MAX_SECONDS:.0f} s).")
    if args.json:
        document = {"machine": info, "suite": "optim", "repeats": repeats, "settings": list(bench.OPTIM_SETTINGS),
                    "notes": notes + failures, "footnotes": optim_footnotes(),
                    "results": [result.as_dict() for result in results]}
        _atomic_write(args.json, lambda path: _write_json(path, document))
        print(f"wrote {args.json}")
    return 0


def run_command(argv):
    known = bench.all_cases()
    missing = bench.missing_peers()
    parser = _parser(known)
    args = parser.parse_args(argv)
    if args.repeats is not None and args.repeats < 1:
        parser.error(f"--repeats must be >= 1, not {args.repeats}")
    if args.suite == "latency":
        return latency_command(parser, args)
    if args.suite == "threads":
        return threads_command(parser, args)
    if args.suite == "optim":
        return optim_command(parser, args)
    suite = SUITES.get(args.suite)
    if suite is not None and args.quick:
        parser.error("--quick is the short form of the default sweep; a --suite has its own sizes")

    if suite is not None:
        sizes, repeats, default_names = list(suite.sizes), suite.repeats, list(suite.kernels)
    elif args.quick:
        sizes, repeats, default_names = QUICK_SIZES, QUICK_REPEATS, QUICK_KERNELS
    else:
        sizes, repeats, default_names = FULL_SIZES, DEFAULT_REPEATS, DEFAULT_KERNELS
    sizes = args.sizes or sizes
    repeats = args.repeats if args.repeats is not None else repeats
    notes = []
    if args.kernels == ["all"]:
        names = list(known)
    elif args.kernels is not None:
        names = args.kernels
    else:  # the defaults include peers that may not be installed
        names = [name for name in default_names if name not in missing]
        notes = [f"{module} not installed: {name} skipped" for name, module in missing.items() if name in default_names]
    unknown = [name for name in names if name not in known]
    if unknown:
        why = f" ({missing[unknown[0]]} is not installed)" if unknown[0] in missing else ""
        parser.error(f"unknown kernel {unknown[0]!r}{why}; the kernels here are {', '.join(known)}")
    backends = args.backends or list((suite and suite.backends) or _dispatch.USABLE_BACKENDS)
    for backend in backends:
        try:
            _dispatch.check_backend(backend)
        except ValueError as error:
            parser.error(str(error))
    if args.inputs is not None:
        inputs = args.inputs
    else:
        inputs = quick_inputs if args.quick else DEFAULT_INPUTS
    blocksizes = args.blocksizes or list(suite.blocksizes if suite else (bench.QUANT_BLOCKSIZE,))
    # quantization cases once per block size, the others once
    cases = [replace(known[name], blocksize=blocksize) if known[name].buffers == "quant" else known[name]
             for index, blocksize in enumerate(blocksizes) for name in names
             if known[name].buffers == "quant" or index == 0]
    workers = args.workers or [1]
    _check_outputs(parser, args)

    started = time.perf_counter()
    bws = measure_bandwidths(workers)
    info = machine_info(bws)
    _print_machine(info)
    for line in format_bandwidths(bws) + notes + workers_notes(workers) + load_notes(workers, info) + \
            bench.cold_notes():
        print(line)
    on_terminal = sys.stderr.isatty()

    def on_start(index, count, case, backend, n, distribution, count_workers):
        if on_terminal:
            _progress(index, count, f"{case.name} {backend} n={format_size(n)} {distribution} w={count_workers}")

    def on_result(result):
        if on_terminal:
            sys.stderr.write("\r" + " " * 90 + "\r")
        print(format_row(result), flush=True)

    print(HEADER, flush=True)
    settings = suite or Suite("", (), (), repeats)
    results = bench.run(cases, sizes, backends, inputs=inputs, workers=workers, repeats=repeats,
                        warmup=settings.warmup, bw=bws, batch=settings.batch, cold=settings.cold, on_start=on_start,
                        on_result=on_result)
    for line in format_input_ratios(results):
        print(line)
    if settings.pivot and results:
        for line in format_pivot(results, settings.pivot):
            print(line)
    print(f"{len(results)} cases in {time.perf_counter() - started:.1f} s. GB/s: (bytes in + bytes out) / time; "
          f"roofline: roofline time / time, cold cases only.")
    if args.json:
        used = dict.fromkeys(result.input for result in results)
        document = {"machine": info, "suite": args.suite, "repeats": repeats, "workers": workers,
                    "inputs": {name: bench.INPUTS[name] for name in used},
                    "results": [result.as_dict() for result in results]}
        _atomic_write(args.json, lambda path: _write_json(path, document))
        print(f"wrote {args.json}")
    if args.plot:
        _atomic_write(args.plot, lambda path: plot(results, info, path))
        print(f"wrote {args.plot}")
    return 0


# Runs from before the kernels took their catalog ids
_OLD_NAMES = {"quantize": "quantize_blockwise", "dequantize": "dequantize_blockwise"}


def _cases_of(document):
    """{case key: (ns, unit)} of a run's JSON: (kernel, backend, n, input, block size, workers) ->
    ns per element, or for a latency run (call, n) -> ns per call (the overhead rows left out:
    they are differences)."""
    if "latency" in document:
        return {(row["call"], row["n"]): row["ns"] for row in document["latency"] if row["section"] != "overhead"}
    cases = {}
    for r in document["results"]:
        kernel = _OLD_NAMES.get(r["kernel"], r["kernel"])
        # runs from before --inputs have no "input" (they were N(0, 1)); from before the block
        # size was per result, the quantization cases' block size is the run's
        blocksize = r.get("blocksize", document.get("quant_blocksize") if kernel in _OLD_NAMES.values() else None)
        # runs from before --workers ran on one worker
        cases[kernel, r["backend"], r["n"], r.get("input", "normal"), blocksize, r.get("workers", 1)] = \
            r["ns_per_element"]
    return cases


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
            runs.append((document["machine"]["cpu"], _cases_of(document)))
        except (OSError, ValueError, KeyError, TypeError) as error:
            parser.error(f"cannot read {path!r} as a softmaxlib bench JSON: {error}")
    (cpu_a, a), (cpu_b, b) = runs
    print(f"A: {cpu_a} ({args.before})\nB: {cpu_b} ({args.after})")
    common = [key for key in a if key in b]
    if not common:
        print("no case appears in both runs")
        return 0
    if len(common[0]) == 2:  # latency runs
        width = max(len(key[0]) for key in common) + 1
        print(f"{'call':<{width}} {'n':>6} {'A ns/call':>10} {'B ns/call':>10} {'A/B':>6}")
        for key in common:
            print(f"{key[0]:<{width}} {key[1]:>6} {a[key]:>10.0f} {b[key]:>10.0f} {a[key] / b[key]:>6.2f}")
    else:
        print(f"{'kernel':<29} {'backend':<7} {'n':>6} {'input':<11} {'block':>5} {'workers':>7} {'A ns/elem':>10} "
              f"{'B ns/elem':>10} {'A/B':>6}")
        for key in common:
            kernel, backend, n, distribution, blocksize, workers = key
            print(f"{kernel:<29} {backend:<7} {format_size(n):>6} {distribution:<11} {_optional(blocksize, 'd'):>5} "
                  f"{workers:>7} {a[key]:>10.3f} {b[key]:>10.3f} {a[key] / b[key]:>6.2f}")
    print("A/B above 1: B is faster.")
    return 0


def main(argv):
    if argv and argv[0] == "compare":
        return compare_command(argv[1:])
    return run_command(argv)

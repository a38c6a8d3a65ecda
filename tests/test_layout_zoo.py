"""Memory-layout zoo: every catalog kernel, at every byte offset of its input and its output.

NumPy allows arrays at any byte offset (`np.ndarray((n,), np.float32, buffer=b, offset=1)`), and
the public API hands a C-contiguous `out=` (misaligned or not) straight to the kernel. A misaligned
`out=` above the streaming threshold once segfaulted: the non-temporal stores of the two-pass
kernels and of AVX-512 dequantize need aligned addresses, and a head of whole floats cannot align
an address that is not a multiple of 4 (fixed in e5c3f11). This module runs every entry of the
catalog (row kernels, pair reductions, losses, quantization kernels, and the auto path
softmaxlib.softmax / log_softmax) on every usable backend:

- at shapes just below and above every path switch of the kernel templates: n = 1, 2, 3, 5, and
  VF_LANES * k - 1, + 0, + 1 for VF_LANES of 8 and 16 and k = 1 and every trip (4 and 8
  vectors: the loop tiles the C kernels export, zoo.lanes_and_trips), a trip with single vectors and a tail, several rows (each
  starting at another alignment), outputs just below, at and above STREAM_ABOVE bytes (the
  streaming threshold), the auto path's crossover; and values that take the other paths
  (-inf, +inf, huge elements; all-zero and non-finite quantization blocks);
- with every array in its own guarded buffer (tests/zoo.py's guarded_buffer: a
  PROT_NONE page before and after), at "page start + offset" for every offset 0..63 of the
  inputs, with the outputs at (7 * offset + 3) % 64 (a permutation: float-aligned inputs meet
  misaligned outputs and the reverse), at the same offset, and in place (out is x) where the
  entry allows it; and ending right before the trailing guard page, as close as the misalignment
  class (offset modulo the item size) allows: 0 to 3 bytes for float32, so reading any float past
  the end faults;
- checking each result bit for bit against the same call on 64-byte-aligned C-contiguous copies
  (the promise: the sums have no aligned head, docs/accuracy.md, and every other pass is
  elementwise), that the inputs come out unchanged, and that every byte of the guarded buffers
  outside the arrays still holds the canary. The quantization entries are also checked against
  the Numba backend on the aligned copies, bit for bit up to the sign and payload of NaN
  (docs/quant.md: every backend gives the same codes and absmax).

SOFTMAXLIB_STREAM_ABOVE_BYTES is read once at import, so the zoo runs in subprocesses (this file
run as a script; two at once, sharing the entries) with it set to STREAM_ABOVE, and with
_dispatch.LAST_LEVEL_CACHE_BYTES set to AUTO_LLC, which moves the auto path's crossover to rows
of a few hundred floats. A crash (SIGSEGV from a guard page or an unaligned non-temporal store)
fails the test of the entry that was running, naming the case (noted in a shared status file
before every call), and the subprocess is restarted for the entries left. (The C bindings
hand the kernels aligned copies of arrays that are not at a multiple of their item size, which C
requires: softmaxlib/_bindings.py.) Run by hand:
    SOFTMAXLIB_STREAM_ABOVE_BYTES=4096 python tests/test_layout_zoo.py [kind/name@backend ...]
"""
import faulthandler
import json
import mmap
import os
import pathlib
import signal
import subprocess
import sys
import traceback
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest

import softmaxlib
from conftest import BACKENDS
from softmaxlib import _auto, _bindings, _catalog, _codebooks, _dispatch
from zoo import guarded_buffer, lanes_and_trips

STREAM_ABOVE = 4096  # SOFTMAXLIB_STREAM_ABOVE_BYTES in the subprocess
AUTO_LLC = 4096  # _dispatch.LAST_LEVEL_CACHE_BYTES in the subprocess: auto crossovers at n of 384 to 512
CANARY = 0xA5
OFFSETS = range(64)  # a cache line, and an AVX-512 vector
AREA_BYTES = 2 * mmap.PAGESIZE  # the data pages of each guarded buffer
CANARY_BYTES = bytes([CANARY]) * AREA_BYTES
STATUS_BYTES = 4096
SELFTEST = ("selftest/crash", "numba")  # a pseudo-entry that crashes the subprocess on purpose


# ------------------------------------------------------------------------------- the sizes

# vector widths and trip lengths in vectors, of every family and ISA (the tiles of csrc/tiles.h)
LANES, TRIPS = lanes_and_trips()
STREAM_FLOATS = STREAM_ABOVE // 4
ROW_LENGTHS = sorted(
    {1, 2, 3, 5}
    | {lanes * trip + d for lanes in LANES for trip in TRIPS for d in (-1, 0, 1)}
    # a whole trip, single vectors and a tail; two trips, more single vectors and the longest tail
    | {lanes * max(TRIPS) + 2 * lanes + 3 for lanes in LANES}
    | {2 * lanes * max(TRIPS) + 3 * lanes + lanes - 1 for lanes in LANES}
)
# Several rows: each starts at another alignment. Then the outputs around the streaming threshold
# (out.nbytes > STREAM_ABOVE streams): one row, and rows whose starts walk through the alignments.
ROW_SHAPES = (
    [(1, n) for n in ROW_LENGTHS]
    + [(3, 1), (3, 17), (3, 33), (3, 129), (2, 65)]
    + [(1, STREAM_FLOATS - 1), (1, STREAM_FLOATS), (1, STREAM_FLOATS + 1),
       (2, STREAM_FLOATS // 2), (2, STREAM_FLOATS // 2 + 1),
       (3, STREAM_FLOATS // 3), (3, STREAM_FLOATS // 3 + 1), (5, STREAM_FLOATS // 5 + 1)]
)
# Values that take the other paths (cutoff and clamped exps, the +inf limit, the exact paths),
# on a few shapes.
SPECIAL_SHAPES = [(1, 17), (1, 129), (3, STREAM_FLOATS // 3 + 1), (1, STREAM_FLOATS + 1)]
ROW_DATA = [(shape, "normal") for shape in ROW_SHAPES] + [
    (shape, variant) for shape in SPECIAL_SHAPES for variant in ("-inf", "+inf", "huge")]
QUANT_SIZES = sorted({rows * n for rows, n in ROW_SHAPES})
QUANT_SPECIAL_SIZES = [40, 250, STREAM_FLOATS + 1]
BLOCKSIZES = (16, 100)  # the smallest allowed; one that is not a multiple of a vector
IGNORE_INDEX = -100


def _rng(*key):
    return np.random.default_rng([zlib.crc32(repr(key).encode()), 20261130])


def _row_values(shape, variant):
    x = (_rng(shape, variant).standard_normal(shape) * 4).astype(np.float32)
    n = shape[1]
    if variant == "-inf":
        x[:, n // 2] = -np.inf
    elif variant == "+inf":
        x[:, n // 3] = np.inf
    elif variant == "huge":  # two-pass and reload_exact leave their pair paths, StableMax takes double
        x[:, n // 2] = 3e6
        x[:, 0] = -3e38
    return x


# ------------------------------------------------------------------------------- the catalog

@dataclass
class Setup:
    """One call of a kernel on given values: call(inputs, outputs) with arrays of the inputs'
    values and of the outputs' (shape, dtype). in_place: outputs[0] may be inputs[0].
    numba_call, if given, must give the same bits (on aligned copies)."""

    label: str
    inputs: list
    outputs: list
    call: Callable
    in_place: bool = False
    numba_call: Callable = None


F32, F64 = np.dtype(np.float32), np.dtype(np.float64)


def _row_setups(name, backend):
    kernel = _bindings.bound(name, backend, np.float32)
    for shape, variant in ROW_DATA:
        yield Setup(f"shape {shape}, {variant}", [_row_values(shape, variant)], [(shape, F32)],
                    lambda i, o: kernel(i[0], o[0]), in_place=True)


def _auto_crossover(function, backend):
    """The last row length of the auto path's in-cache operation, or None if it never switches."""
    _, beyond, fraction = _auto.CHOICES[function, backend]
    return None if beyond is None else int(fraction * AUTO_LLC / 8)


def _auto_setups(function, backend):
    public = getattr(softmaxlib, function)

    def call(i, o):
        if public(i[0], out=o[0], backend=backend) is not o[0]:
            raise AssertionError("did not return out")

    crossover = _auto_crossover(function, backend)
    shapes = list(ROW_SHAPES)
    if crossover is not None:
        below, above = (_auto.kernel_id(function, backend, n) for n in (crossover, crossover + 1))
        if below == above:
            raise AssertionError(f"the auto path runs {below} on both sides of its crossover {crossover}")
        shapes += [(1, crossover), (1, crossover + 1), (3, crossover + 1)]
    for shape in shapes:
        yield Setup(f"shape {shape}, normal, {_auto.kernel_id(function, backend, shape[1])}",
                    [_row_values(shape, "normal")], [(shape, F32)], call, in_place=True)


def _pair_setups(name, backend):
    kernel = _bindings.bound(name, backend, np.float32)
    for shape, variant in ROW_DATA:
        yield Setup(f"shape {shape}, {variant}", [_row_values(shape, variant)], [((shape[0],), F64)] * 2,
                    lambda i, o: kernel(i[0], o[0], o[1]))


def _loss_setups(name, backend):
    kernel = _bindings.bound(name, backend, np.float32)
    for shape, variant in ROW_DATA:
        if variant == "-inf":
            continue  # the loss's exact paths: +inf and huge
        rows, n = shape
        labels = _rng(shape, "labels").integers(0, n, rows)
        if rows > 1:
            labels[1] = IGNORE_INDEX
        for with_grad in (True, False):
            outputs = [((rows,), F64)] + ([(shape, F32)] if with_grad else [])
            yield Setup(f"shape {shape}, {variant}, {'with' if with_grad else 'no'} grad",
                        [_row_values(shape, variant), labels.astype(np.int64)], outputs,
                        lambda i, o: kernel(i[0], i[1], IGNORE_INDEX, 0.5, o[0], o[1] if len(o) > 1 else None))


CODEBOOKS = {
    "dynamic": lambda: softmaxlib.quant.create_dynamic_map(),
    # crowded buckets: the binary search instead of the one-lookup search
    "crowded": lambda: np.sort(np.concatenate([np.linspace(-1, 1, 200),
                                               np.linspace(0.5, 0.5 + 1e-6, 56)])).astype(np.float32),
}


def _quant_values(n, variant, blocksize=16):
    x = (_rng(n, variant).standard_normal(n) * 5).astype(np.float32)
    if variant == "special":  # an all-zero block, a NaN block and an inf block (scalar absmax)
        x[:blocksize] = 0
        x[min(n - 1, blocksize + 3)] = np.nan
        x[min(n - 1, 2 * blocksize + 5)] = np.inf
    return x


def _quant_setups(name, backend):
    kernel = _bindings.bound(name, backend)
    numba = _bindings.bound(name, "numba")
    data = [(n, "normal") for n in QUANT_SIZES] + [(n, "special") for n in QUANT_SPECIAL_SIZES]
    if name == "codes_of_scaled":
        for codebook, make_code in CODEBOOKS.items():
            tables = _codebooks.search_tables(_codebooks.check_code(make_code()))
            for n, variant in data:
                y = _rng(n, variant).uniform(-1, 1, n).astype(np.float32)
                if variant == "special":
                    y[n // 2] = np.nan
                yield Setup(f"n {n}, {variant}, {codebook} codebook", [y], [((n,), np.dtype(np.uint8))],
                            lambda i, o, t=tables: kernel(i[0], t, o[0]),
                            numba_call=lambda i, o, t=tables: numba(i[0], t, o[0]))
    elif name == "quantize_blockwise":
        for codebook, make_code in CODEBOOKS.items():
            tables = _codebooks.search_tables(_codebooks.check_code(make_code()))
            for blocksize in BLOCKSIZES:
                for n, variant in data:
                    outputs = [((n,), np.dtype(np.uint8)), ((-(-n // blocksize),), F32)]
                    yield Setup(f"n {n}, {variant}, blocksize {blocksize}, {codebook} codebook",
                                [_quant_values(n, variant, blocksize)], outputs,
                                lambda i, o, b=blocksize, t=tables: kernel(i[0], b, t, o[0], o[1]),
                                numba_call=lambda i, o, b=blocksize, t=tables: numba(i[0], b, t, o[0], o[1]))
    elif name == "dequantize_blockwise":
        code = CODEBOOKS["dynamic"]()
        tables = _codebooks.search_tables(_codebooks.check_code(code))
        quantize = _bindings.bound("quantize_blockwise", "numba")
        for blocksize in BLOCKSIZES:
            for n, variant in data:
                q, absmax = np.empty(n, np.uint8), np.empty(-(-n // blocksize), np.float32)
                quantize(_quant_values(n, variant, blocksize), blocksize, tables, q, absmax)
                yield Setup(f"n {n} (out {'above' if 4 * n > STREAM_ABOVE else 'within'} the streaming threshold), "
                            f"{variant}, blocksize {blocksize}", [q, absmax, code], [((n,), F32)],
                            lambda i, o, b=blocksize: kernel(i[0], i[1], b, i[2], o[0]),
                            numba_call=lambda i, o, b=blocksize: numba(i[0], i[1], b, i[2], o[0]))
    else:
        raise NotImplementedError(f"no layout adapter for the quantization operation {name!r}: add one to "
                                  f"tests/test_layout_zoo.py (_quant_setups)")


# kind -> (catalog kernels or auto function names, setups(name, backend))
KINDS = {
    "row": (_catalog.by_signature("rows"), _row_setups),
    "pair": (_catalog.by_signature("pair"), _pair_setups),
    "loss": (_catalog.by_signature("loss"), _loss_setups),
    "quant": ({k.id: k for k in _catalog.of_family("quant")}, _quant_setups),
    "auto": (sorted({function for function, _ in _auto.CHOICES}), _auto_setups),
}
ENTRIES = [f"{kind}/{name}" for kind, (names, _) in KINDS.items() for name in names]


# ------------------------------------------------------------------------------- the layouts

def _placement(where, offset, itemsize):
    """What a layout's offset means for one array: at "start", its first byte's distance from the
    leading guard page; at "end", its last byte's distance from the trailing one (the gap the
    misalignment class, offset modulo the item size, leaves: 0 to itemsize - 1 bytes)."""
    return offset if where == "start" else -offset % itemsize


def _layouts(setup):
    """(where, input offset, output offset, in place) for one setup: at "start", every offset
    0..63 of the inputs, with the outputs at (7 * offset + 3) % 64 and at the same offset, and in
    place; at "end", as many offsets as there are misalignment classes. Layouts that place every
    array as another one does are run once."""
    start = [("start", a, (7 * a + 3) % 64, False) for a in OFFSETS] + [("start", a, a, False) for a in OFFSETS]
    end = [("end", a, (7 * a + 3) % 8, False) for a in range(8)] + [("end", a, a, False) for a in range(8)]
    if setup.in_place:
        start += [("start", a, a, True) for a in OFFSETS]
        end += [("end", a, a, True) for a in range(8)]
    seen = set()
    sizes_in = [v.dtype.itemsize for v in setup.inputs]
    sizes_out = [dtype.itemsize for _, dtype in setup.outputs]
    for where, a, b, in_place in start + end:
        key = (where, tuple(_placement(where, a, s) for s in sizes_in),
               tuple(_placement(where, b, s) for s in sizes_out) if not in_place else None)
        if key not in seen:
            seen.add(key)
            yield where, a, b, in_place


def _first_byte(where, offset, nbytes, itemsize):
    """Where an array of nbytes starts in a guarded area (uint8, AREA_BYTES)."""
    place = _placement(where, offset, itemsize)
    first = place if where == "start" else AREA_BYTES - nbytes - place
    assert 0 <= first and first + nbytes <= AREA_BYTES, "the guarded buffers are too small for the zoo"
    return first


def _aligned_empty(shape, dtype):
    """A 64-byte-aligned C-contiguous array, canary-filled."""
    nbytes = int(np.prod(shape)) * dtype.itemsize
    storage = np.full(nbytes + 64, CANARY, np.uint8)
    skip = -storage.ctypes.data % 64
    return storage[skip:skip + nbytes].view(dtype).reshape(shape)


def _aligned(values):
    """A 64-byte-aligned C-contiguous copy of values."""
    array = _aligned_empty(values.shape, values.dtype)
    array[...] = values
    return array


def _differences(got, expected, dtype, nan_is_nan=False):
    """None if got (bytes) is expected (bytes), else a description of the first difference.
    nan_is_nan: any NaN matches any NaN (a NaN's sign and payload are not specified)."""
    bits = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[dtype.itemsize]
    got_bits, expected_bits = np.frombuffer(got, bits), np.frombuffer(expected, bits)
    differ = got_bits != expected_bits
    if nan_is_nan and dtype.kind == "f":
        differ &= ~(np.isnan(np.frombuffer(got, dtype)) & np.isnan(np.frombuffer(expected, dtype)))
    where = np.flatnonzero(differ)
    if where.size == 0:
        return None
    first = int(where[0])
    got_value, expected_value = np.frombuffer(got, dtype)[first], np.frombuffer(expected, dtype)[first]
    return (f"{where.size} of {got_bits.size} elements differ, the first [{first}] is {got_value!r} "
            f"(0x{int(got_bits[first]):x}) instead of {expected_value!r} (0x{int(expected_bits[first]):x})")


def _diagnose(area, first, expected, dtype, name):
    """What is wrong in a guarded area holding `expected` (bytes) at `first`, canary elsewhere."""
    problems = []
    stop = first + len(expected)
    difference = _differences(area[first:stop].tobytes(), expected, dtype)
    if difference:
        problems.append(f"{name}: {difference}")
    before, after = np.flatnonzero(area[:first] != CANARY), np.flatnonzero(area[stop:] != CANARY)
    if before.size:
        problems.append(f"{before.size} bytes written before {name}, the nearest {first - before[-1]} bytes before it")
    if after.size:
        problems.append(f"{after.size} bytes written after {name}, the nearest {after[0] + 1} bytes after its end")
    return problems


class _Status:
    """The case running, in a file shared with the parent (it survives a crash of this process)."""

    def __init__(self, path):
        self.map = None
        if path:
            with open(path, "r+b") as file:
                self.map = mmap.mmap(file.fileno(), STATUS_BYTES)

    def __call__(self, text):
        if self.map is not None:
            data = text.encode()[:STATUS_BYTES - 1] + b"\0"
            self.map[:len(data)] = data


_AREAS = {}


def _area(role, index):
    if (role, index) not in _AREAS:
        _AREAS[role, index] = guarded_buffer(AREA_BYTES)  # (mmap, uint8 view of the data pages)
    return _AREAS[role, index][1]


def _run_setup(entry, backend, setup, status, failures):
    """Every layout of one setup; appends a description of each failed case. Returns the count."""
    references = [_aligned_empty(shape, dtype) for shape, dtype in setup.outputs]
    setup.call([_aligned(v) for v in setup.inputs], references)
    expected = [r.tobytes() for r in references]
    if setup.numba_call is not None and backend != "numba":
        numba_outputs = [_aligned_empty(shape, dtype) for shape, dtype in setup.outputs]
        setup.numba_call([_aligned(v) for v in setup.inputs], numba_outputs)
        for k, (got, (_, dtype)) in enumerate(zip(numba_outputs, setup.outputs)):
            difference = _differences(expected[k], got.tobytes(), dtype, nan_is_nan=True)
            if difference:
                failures.append(f"{setup.label}, aligned: output {k} is not numba's: {difference}")
    # (area, shape, dtype, bytes) of each input, then of each output
    inputs = [(_area("in", k), v.shape, v.dtype, np.frombuffer(v.tobytes(), np.uint8))
              for k, v in enumerate(setup.inputs)]
    outputs = [(_area("out", k), shape, dtype, len(expected[k])) for k, (shape, dtype) in enumerate(setup.outputs)]
    count = 0
    for where, a, b, in_place in _layouts(setup):
        count += 1
        arrays_in, arrays_out, checks = [], [], []  # checks: (area, first, expected bytes, dtype, name)
        for k, (area, shape, dtype, raw) in enumerate(inputs):
            area.fill(CANARY)
            first = _first_byte(where, a, raw.size, dtype.itemsize)
            segment = area[first:first + raw.size]
            segment[...] = raw
            arrays_in.append(segment.view(dtype).reshape(shape))
            if in_place and k == 0:
                checks.append((area, first, expected[0], dtype, "the output (in place)"))
            else:
                checks.append((area, first, raw.tobytes(), dtype, f"input {k}"))
        for k, (area, shape, dtype, nbytes) in enumerate(outputs):
            if in_place and k == 0:
                arrays_out.append(arrays_in[0])
                continue
            area.fill(CANARY)
            first = _first_byte(where, b, nbytes, dtype.itemsize)
            arrays_out.append(area[first:first + nbytes].view(dtype).reshape(shape))
            checks.append((area, first, expected[k], dtype, f"output {k}"))
        context = (f"{setup.label}; {'in place, ' if in_place else ''}inputs at {where} offset {a}"
                   f"{'' if in_place else f', outputs at {where} offset {b}'}")
        status(f"{entry} on {backend}: {context}")
        try:
            setup.call(arrays_in, arrays_out)
        except Exception as error:  # noqa: BLE001  (reported as a failed case)
            failures.append(f"{context}: raised {type(error).__name__}: {error}")
            continue
        for area, first, payload, dtype, name in checks:
            if area.tobytes() != CANARY_BYTES[:first] + payload + CANARY_BYTES[first + len(payload):]:
                failures.append(f"{context}: {'; '.join(_diagnose(area, first, payload, dtype, name))}")
                break
    return count


def run_entry(entry, backend, status=lambda text: None):
    """(cases run, failures) of one catalog entry on one backend (in a process whose
    STREAM_ABOVE_BYTES is STREAM_ABOVE)."""
    kind, name = entry.split("/", 1)
    failures, cases = [], 0
    try:
        for setup in KINDS[kind][1](name, backend):
            cases += _run_setup(entry, backend, setup, status, failures)
    except Exception:  # noqa: BLE001  (a broken setup fails the entry, not the others)
        failures.append(f"the zoo itself raised:\n{traceback.format_exc()}")
    return cases, failures


def _main(arguments):
    """The subprocess: runs the entry@backend pairs given (all usable ones if none), printing a
    ZOO-BEGIN line before each and a ZOO-RESULT line (JSON) after it."""
    faulthandler.enable()
    status_path = None
    if arguments[:1] == ["--status"]:
        status_path, arguments = arguments[1], arguments[2:]
    status = _Status(status_path)
    if _dispatch.STREAM_ABOVE_BYTES != STREAM_ABOVE:
        print(f"{_dispatch.STREAM_ENV_VAR} must be {STREAM_ABOVE} for the zoo, not "
              f"{os.environ.get(_dispatch.STREAM_ENV_VAR)!r} (STREAM_ABOVE_BYTES = {_dispatch.STREAM_ABOVE_BYTES})",
              file=sys.stderr)
        return 2
    _dispatch.LAST_LEVEL_CACHE_BYTES = AUTO_LLC  # read by _auto.kernel_id at every call with backend=
    pairs = [tuple(argument.split("@")) for argument in arguments] or [
        (entry, backend) for entry in ENTRIES for backend in _dispatch.USABLE_BACKENDS]
    for entry, backend in pairs:
        print(f"ZOO-BEGIN {entry}@{backend}", flush=True)
        if (entry, backend) == SELFTEST:  # for test_a_crash_is_reported
            status("the self-test's deliberate touch of a guard page")
            import ctypes
            ctypes.c_char.from_address(_area("in", 0).ctypes.data - 1).value  # noqa: B018  (the leading guard page)
        cases, failures = run_entry(entry, backend, status)
        print("ZOO-RESULT " + json.dumps({"entry": entry, "backend": backend, "cases": cases,
                                          "failure_count": len(failures), "failures": failures[:12]}), flush=True)
    return 0


# ------------------------------------------------------------------------------- the parent

def _subprocess_environment():
    return dict(os.environ, **{_dispatch.STREAM_ENV_VAR: str(STREAM_ABOVE)})


def _describe_exit(returncode):
    if returncode < 0:
        try:
            return f"died of {signal.Signals(-returncode).name}"
        except ValueError:
            return f"died of signal {-returncode}"
    return f"exited with status {returncode}"


def run_zoo(pairs, directory, timeout=600):
    """{(entry, backend): result} for the pairs, each run in a subprocess; a crash records the
    case it happened in and restarts the subprocess for the pairs left."""
    results, remaining, attempt = {}, list(pairs), 0
    pathlib.Path(directory).mkdir(parents=True, exist_ok=True)
    while remaining:
        attempt += 1
        status_path = pathlib.Path(directory) / f"zoo-status-{attempt}"
        status_path.write_bytes(bytes(STATUS_BYTES))
        arguments = [sys.executable, str(pathlib.Path(__file__).resolve()), "--status", str(status_path)]
        arguments += [f"{entry}@{backend}" for entry, backend in remaining]
        try:
            process = subprocess.run(arguments, env=_subprocess_environment(), capture_output=True, text=True,
                                     timeout=timeout)
            stdout, stderr, exit_text = process.stdout, process.stderr, _describe_exit(process.returncode)
            returncode = process.returncode
        except subprocess.TimeoutExpired as expired:
            decode = lambda b: b.decode(errors="replace") if isinstance(b, bytes) else (b or "")  # noqa: E731
            stdout, stderr, exit_text, returncode = decode(expired.stdout), decode(expired.stderr), \
                f"timed out after {timeout} s", None
        begun = None
        for line in stdout.splitlines():
            if line.startswith("ZOO-BEGIN "):
                begun = tuple(line.split(" ", 1)[1].split("@"))
            elif line.startswith("ZOO-RESULT "):
                result = json.loads(line.split(" ", 1)[1])
                key = (result["entry"], result["backend"])
                results[key] = result
                if key in remaining:
                    remaining.remove(key)
                begun = None
        if returncode == 0 and not remaining:
            break
        case = status_path.read_bytes().split(b"\0", 1)[0].decode(errors="replace") or "(before its first case)"
        message = (f"the zoo's subprocess {exit_text} in {case}. A signal means a kernel touched memory it must "
                   f"not (a guard page, or an unaligned non-temporal store). Its stderr ends with:\n{stderr[-3000:]}")
        if begun is not None:
            results[begun] = {"entry": begun[0], "backend": begun[1], "crash": message}
            if begun in remaining:
                remaining.remove(begun)
            if returncode is not None:
                continue  # restart for the pairs left
        for key in remaining:  # the subprocess failed outside any pair, or hung: no restart
            results[key] = {"entry": key[0], "backend": key[1], "crash": message}
        break
    return results


@pytest.fixture(scope="module")
def zoo(request, tmp_path_factory):
    """The zoo's results for the (entry, backend) pairs of the selected tests, and of the crash
    self-test: two subprocesses share the pairs (the machine may have two idle cores), each
    restarted after a crash; the first ends with the self-test's crash."""
    pairs = []
    for item in request.session.items:
        if item.module is request.module and getattr(item, "originalname", None) == "test_layout_zoo":
            pair = (item.callspec.params["entry"], item.callspec.params["backend"])
            if pair[1] in _dispatch.USABLE_BACKENDS and pair not in pairs:
                pairs.append(pair)
    directory = tmp_path_factory.mktemp("layout_zoo")
    jobs = [pairs[0::2] + [SELFTEST], pairs[1::2]]  # the self-test crashes its worker last
    with ThreadPoolExecutor(len(jobs)) as pool:
        futures = [pool.submit(run_zoo, job, directory / f"worker{k}") for k, job in enumerate(jobs) if job]
        return {key: result for future in futures for key, result in future.result().items()}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("entry", ENTRIES)
def test_layout_zoo(entry, backend, zoo):
    result = zoo.get((entry, backend))
    assert result is not None, f"the zoo did not run {entry} on {backend}"
    if "crash" in result:
        pytest.fail(f"{entry} on {backend}: {result['crash']}", pytrace=False)
    failures = result["failures"]
    assert result["failure_count"] == 0, (
        f"{entry} on {backend}: {result['failure_count']} of {result['cases']} layout cases failed"
        + (", the first:" if result["failure_count"] > len(failures) else ":") + "".join(f"\n  {f}" for f in failures))
    assert result["cases"] > 0, f"the zoo ran no case of {entry} on {backend}"


def test_zoo_covers_the_catalog():
    """The zoo iterates the catalog: every kernel of every signature, and the sizes around every
    path switch (trips of csrc/, the streaming threshold)."""
    tables = {"row": _catalog.by_signature("rows"), "pair": _catalog.by_signature("pair"), "loss": _catalog.by_signature("loss"),
              "quant": {k.id: k for k in _catalog.of_family("quant")}}
    for kind, table in tables.items():
        assert {entry.split("/", 1)[1] for entry in ENTRIES if entry.startswith(kind + "/")} == set(table)
    if _dispatch.lib is not None:  # the tiles are the C kernels' (none without them)
        assert {4, 8} <= set(TRIPS) and {8, 16} <= set(LANES)
    totals = {rows * n * 4 for rows, n in ROW_SHAPES}
    assert {STREAM_ABOVE - 4, STREAM_ABOVE, STREAM_ABOVE + 4} <= totals
    assert any(t > STREAM_ABOVE for t in totals) and any(t <= STREAM_ABOVE for t in totals)


def test_layouts_cover_every_offset_and_touch_the_guards():
    """Every byte offset 0..63 of the input and of the output, float-aligned inputs with misaligned
    outputs and the reverse, in place at every offset; arrays at "end" within 3 bytes of the
    trailing guard page (any read of a float past them faults), at "start" offset 0 right after
    the leading one."""
    row = Setup("row", [np.zeros((1, 33), np.float32)], [((1, 33), F32)], None, in_place=True)
    layouts = list(_layouts(row))
    start = [(a, b, in_place) for where, a, b, in_place in layouts if where == "start"]
    assert {a for a, _, in_place in start if not in_place} == set(OFFSETS)
    assert {b for _, b, in_place in start if not in_place} == set(OFFSETS)
    assert {a for a, _, in_place in start if in_place} == set(OFFSETS)
    assert any(a % 4 == 0 and b % 4 for a, b, _ in start) and any(a % 4 and b % 4 == 0 for a, b, _ in start)
    ends = [(a, b, in_place) for where, a, b, in_place in layouts if where == "end"]
    assert {(a % 4, b % 4) for a, b, in_place in ends if not in_place} >= {(c, c) for c in range(4)}
    for n in (1, 17, STREAM_FLOATS + 1):
        for offset in range(8):
            first = _first_byte("end", offset, 4 * n, 4)
            assert first % 4 == offset % 4 and 0 <= AREA_BYTES - (first + 4 * n) <= 3
    assert _first_byte("start", 0, 4, 4) == 0
    area = _area("in", 0)
    assert area.ctypes.data % mmap.PAGESIZE == 0 and area.size == AREA_BYTES


def test_a_crash_is_reported(zoo):
    """The harness itself: a subprocess killed by a signal becomes a result naming the signal and
    the case, not a dead pytest."""
    message = zoo[SELFTEST]["crash"]
    # SIGABRT: AddressSanitizer (the sanitizer pass) reports the fault and aborts
    assert ("died of SIGSEGV" in message or "died of SIGABRT" in message) and \
        "deliberate touch of a guard page" in message, message


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))

"""pytest-benchmark suite: every case of softmaxlib.bench (the catalog's kernels, the auto path,
the NumPy expressions and the peers installed) x backend x size.

    pytest bench --benchmark-enable --benchmark-group-by=group     # time them
    pytest bench --benchmark-disable                               # one call each, checked

Each case also checks its output (rows sum to 1, the codes match the NumPy reference, ...), so
the disabled run is a real correctness pass. Cases, buffers and conventions come from
softmaxlib.bench: short rows are batched (bench.batch_rows); a call on more than
bench.COLD_BYTES is cold: every cache line of its buffers is flushed before each timed round, in
pedantic's setup (or, without the C extension, rounds rotate over several buffer sets;
bench.make_buffers). extra_info, per call of `rows` rows of n elements: n,
rows, elements, kernel, family, isa (the backend; the peer's name for a peer), workers (1: the
cases run on one thread; `softmaxlib bench --workers` times them on more), cache
("hot"/"cold"), blocksize (quantization), bytes_moved (the catalog kernel's traffic in bytes *
elements, None without one) and bytes_in_out (effective GB/s = bytes_in_out / time).
`softmaxlib bench` times the same cases with softmaxlib.bench.time_callable.
"""
import itertools
import os
import tempfile

import numpy as np
import pytest

pytest.importorskip("pytest_benchmark")

import softmaxlib  # noqa: E402
from softmaxlib import _bindings, _catalog, _codebooks, bench  # noqa: E402

# The auto path's probe results (softmaxlib/_tune.py) go to a temporary folder, not ~/.cache, also
# when this folder runs alone (tests/conftest.py sets it for a run of both; a conftest.py here
# would shadow that one, which the tests import as `conftest`).
os.environ.setdefault("SOFTMAXLIB_CACHE_DIR", tempfile.mkdtemp(prefix="softmaxlib-bench-"))

CASES = bench.all_cases()
SIZES = [1000, 10_000, 100_000, 1 << 24]
SIZE_IDS = ["1e3", "1e4", "1e5", "2^24"]
COLD_ROUNDS = {"numba": 3}  # rounds of an out-of-cache case; Numba takes ~0.25 s a call at 2^24
DEFAULT_COLD_ROUNDS = 10


def params(kind):
    """(case name, backend) of every case on `kind` buffers: the library's cases on each backend
    (skipped where not usable), a peer on its own."""
    return [pytest.param(name, backend, id=f"{name}-{backend}",
                         marks=pytest.mark.skipif(case.backends is None and backend not in softmaxlib.backends(),
                                                  reason=f"{backend} not usable here"))
            for name, case in CASES.items() if case.buffers == kind
            for backend in (case.backends or _bindings.BACKENDS)]


SIZE_PARAMS = [pytest.param(n, id=label, marks=[pytest.mark.slow] if n >= 1 << 24 else [])
               for n, label in zip(SIZES, SIZE_IDS)]


@pytest.fixture(scope="module")
def row_buffers():
    """Row buffers per size, made once per module (the 2^24 ones are 64 MiB each) and shared:
    every case only writes its outputs, which each test first fills with NaN."""
    cache = {}

    def get(n):
        if n not in cache:
            cache.clear()  # one size at a time
            cache[n] = bench.make_buffers("rows", n)
        return cache[n]

    yield get
    cache.clear()


def run_case(benchmark, case, func, arg_sets, rounds, buffers):
    """Benchmarks func(*args) over the argument sets of buffers; returns (the args of the last
    call, without the thread count a catalog kernel's bound call takes last, and its result).
    Flushed buffers: one round per call, after bench.flush in the setup."""
    def without_workers(args):
        return args[:-1] if case.name in _catalog.KERNELS else args

    if buffers.flush:
        def flushed():
            bench.flush(buffers.sets[0])
            return arg_sets[0], {}

        return without_workers(arg_sets[0]), benchmark.pedantic(func, setup=flushed, rounds=rounds, warmup_rounds=1)
    if len(arg_sets) == 1:
        return without_workers(arg_sets[0]), benchmark(func, *arg_sets[0])
    rotation = itertools.cycle(arg_sets)
    last = {}

    def setup():
        last["args"] = next(rotation)
        return last["args"], {}

    result = benchmark.pedantic(func, setup=setup, rounds=rounds, warmup_rounds=1)
    return without_workers(last["args"]), result


def describe(benchmark, case, backend, buffers):
    benchmark.group = f"{'quant ' if buffers.kind == 'quant' else ''}n={buffers.n}"
    kernel_id = case.kernel_of(backend, buffers.n) if case.kernel_of else None
    traffic = _catalog.KERNELS[kernel_id].traffic if kernel_id else None
    benchmark.extra_info.update(
        n=buffers.n, rows=buffers.rows, elements=buffers.elements, kernel=case.name, family=case.family, isa=backend,
        workers=1,
        cache=buffers.cache, blocksize=buffers.blocksize, bytes_in_out=case.bytes_in_out * buffers.elements,
        bytes_moved=None if traffic is None else traffic * buffers.elements)


def check_rows_sum_to_one(y, log_output):
    assert np.isfinite(y).all()
    assert bench.sum_error(y, log_output) < 1e-4


def check_row_output(case, args, result):
    """What a case on row buffers must have computed: args are its last call's."""
    log_output = "log_" in case.name
    if case.name.endswith("stablemax_cross_entropy"):
        if case.is_baseline:
            loss, grad = result
            assert np.isfinite(loss)
        else:
            x, labels, _, _, losses, grad = args
            assert np.isfinite(losses).all()
        assert np.isfinite(grad).all()
        assert np.all(grad[:, 0] < 0) and np.all(grad[:, 1:] >= 0)  # (p - onehot) / (1 + |x|): only the label's < 0
    elif case.name == "sum_exp_pair":
        x, mantissa, exponent = args
        expected = np.exp(x.astype(np.float64)).sum(-1)
        np.testing.assert_allclose(mantissa * np.exp2(exponent), expected, rtol=1e-5)
    elif case.family in ("numpy", "peer") or case.name.endswith("_allocating"):
        check_rows_sum_to_one(np.asarray(result), log_output)
    else:
        check_rows_sum_to_one(args[-1], log_output)


@pytest.mark.parametrize("name, backend", params("rows"))
@pytest.mark.parametrize("n", SIZE_PARAMS)
def test_row_case(benchmark, row_buffers, name, backend, n):
    """A case on rows of n float32: catalog kernels (outputs preallocated), the auto path, peers."""
    case, buffers = CASES[name], row_buffers(n)
    describe(benchmark, case, backend, buffers)
    for _, y in buffers.sets:
        y.fill(np.nan)  # a kernel that skips elements fails the check
    func, arg_sets = case.build(backend, buffers, 1)
    args, result = run_case(benchmark, case, func, arg_sets, COLD_ROUNDS.get(backend, DEFAULT_COLD_ROUNDS), buffers)
    check_row_output(case, args, result)


@pytest.mark.parametrize("name, backend", params("quant"))
@pytest.mark.parametrize("blocksize", [256, 4096])
@pytest.mark.parametrize("n", [pytest.param(1 << 16, id="2^16"),
                               pytest.param(1 << 24, id="2^24", marks=pytest.mark.slow)])
def test_quant_case(benchmark, name, backend, blocksize, n):
    """8-bit block-wise quantize / dequantize (signed dynamic map), outputs preallocated, and their
    NumPy references; the kernels' outputs are checked against the references. Fresh buffers:
    quantize rewrites the codes dequantize reads."""
    case, buffers = CASES[name], bench.make_buffers("quant", n, blocksize=blocksize)
    describe(benchmark, case, backend, buffers)
    x, expected_q, expected_absmax, out = buffers.sets[0]
    expected_q, expected_absmax = expected_q.copy(), expected_absmax.copy()
    for _, q, absmax, out in buffers.sets:
        out.fill(np.nan)
        if case.name == "quantize_blockwise":
            q.fill(0)
            absmax.fill(np.nan)
    func, arg_sets = case.build(backend, buffers, 1)
    args, result = run_case(benchmark, case, func, arg_sets, COLD_ROUNDS.get(backend, DEFAULT_COLD_ROUNDS), buffers)
    code = _codebooks.create_dynamic_map()
    if case.name == "quantize_blockwise":
        _, _, _, q, absmax = args
        np.testing.assert_array_equal(q, expected_q)
        np.testing.assert_array_equal(absmax, expected_absmax)
    elif case.name == "dequantize_blockwise":
        np.testing.assert_array_equal(args[-1], bench.numpy_dequantize(expected_q, code, expected_absmax, blocksize))
    elif case.name == "numpy_quantize_blockwise":
        np.testing.assert_array_equal(result[0], expected_q)
    else:
        assert np.isfinite(result).all() and result.shape == x.shape

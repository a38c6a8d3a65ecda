"""pytest-benchmark suite: every registry operation x backend x size, the auto path (through the
public API, out= preallocated), the StableMax cross-entropy with its gradient, and the NumPy
baselines.

    pytest bench --benchmark-enable --benchmark-group-by=group     # time them
    pytest bench --benchmark-disable                               # one call each, checked

Each case also checks its output (every row sums to 1), so the disabled run is a real
correctness pass. Cases, inputs and conventions come from softmaxlib.bench: short rows are
batched (bench.batch_rows), out-of-cache sizes rotate over several buffer sets
(bench.make_inputs). extra_info, per call of `rows` rows of n elements: n, rows, elements,
operation, variant, isa (the backend, "numpy" for the baseline), cache ("hot"/"cold"),
bytes_moved (the algorithm's traffic: traffic_per_element * 4 * elements) and bytes_in_out
(8 * elements; effective GB/s = bytes_in_out / time).
"""
import itertools

import numpy as np
import pytest

pytest.importorskip("pytest_benchmark")

import softmaxlib  # noqa: E402
from softmaxlib import _auto, _registry, bench  # noqa: E402

SIZES = [1000, 10_000, 100_000, 1 << 24]
SIZE_IDS = ["1e3", "1e4", "1e5", "2^24"]
COLD_ROUNDS = {"numba": 3}  # rounds of an out-of-cache case; Numba takes ~0.25 s a call at 2^24
DEFAULT_COLD_ROUNDS = 10

BACKENDS = [
    pytest.param(name, marks=pytest.mark.skipif(name not in softmaxlib.backends(),
                                                 reason=f"{name} not usable here"))
    for name in _registry.BACKENDS
]
SIZE_PARAMS = [
    pytest.param(n, id=label, marks=[pytest.mark.slow] if n >= 1 << 24 else [])
    for n, label in zip(SIZES, SIZE_IDS)
]


@pytest.fixture(scope="module")
def inputs():
    """Buffer sets per size, made once per module (the 2^24 ones are 64 MiB each)."""
    cache = {}

    def get(n):
        if n not in cache:
            cache[n] = bench.make_inputs(n)
        return cache[n]

    yield get
    cache.clear()


def check_rows_sum_to_one(y, log_output):
    assert np.isfinite(y).all()
    assert bench.sum_error(y, log_output) < 1e-4


def run_case(benchmark, function, sets, rounds):
    """Benchmarks function(*args) over the buffer sets; returns the args of the last call."""
    if len(sets) == 1:
        benchmark(function, *sets[0])
        return sets[0]
    rotation = itertools.cycle(sets)
    last = {}

    def setup():
        last["args"] = next(rotation)
        return last["args"], {}

    benchmark.pedantic(function, setup=setup, rounds=rounds, warmup_rounds=1)
    return last["args"]


def describe(benchmark, n, rows, operation, variant, isa, traffic, cold):
    benchmark.group = f"n={n}"
    elements = rows * n
    benchmark.extra_info.update(
        n=n, rows=rows, elements=elements, operation=operation, variant=variant, isa=isa,
        cache="cold" if cold else "hot", bytes_moved=traffic * 4 * elements,
        bytes_in_out=8 * elements)


@pytest.mark.parametrize("operation", list(_registry.OPERATIONS))
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n", SIZE_PARAMS)
def test_kernel(benchmark, inputs, operation, backend, n):
    spec = _registry.OPERATIONS[operation]
    name, variant = spec.function, spec.variant or spec.family
    sets = inputs(n)
    rows = sets[0][0].shape[0]
    describe(benchmark, n, rows, operation, variant, backend, spec.traffic_per_element, len(sets) > 1)
    for _, y in sets:
        y.fill(np.nan)
    kernel = _registry.row_kernel(operation, backend, np.float32)
    _, y = run_case(benchmark, kernel, sets, COLD_ROUNDS.get(backend, DEFAULT_COLD_ROUNDS))
    check_rows_sum_to_one(y, bench.is_log(name))


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n", SIZE_PARAMS)
def test_auto_path(benchmark, inputs, name, backend, n):
    """softmaxlib.softmax / log_softmax: the operation _auto.py picks for n, plus argument handling."""
    sets = inputs(n)
    rows = sets[0][0].shape[0]
    spec = _registry.OPERATIONS[_auto.operation(name, backend, n)]
    describe(benchmark, n, rows, name, "auto", backend, spec.traffic_per_element, len(sets) > 1)
    function = getattr(softmaxlib, name)
    for _, y in sets:
        y.fill(np.nan)
    _, y = run_case(benchmark, lambda x, y: function(x, out=y, backend=backend), sets,
                    COLD_ROUNDS.get(backend, DEFAULT_COLD_ROUNDS))
    check_rows_sum_to_one(y, name == "log_softmax")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n", SIZE_PARAMS)
def test_stablemax_cross_entropy(benchmark, inputs, backend, n):
    """The StableMax cross-entropy kernel with its gradient (mean reduction), gradient preallocated."""
    sets = inputs(n)
    rows = sets[0][0].shape[0]
    describe(benchmark, n, rows, "stablemax_cross_entropy", "grad", backend, 3, len(sets) > 1)
    kernel = _registry.loss_kernel("stablemax_cross_entropy", backend, np.float32)
    labels = np.zeros(rows, np.int64)
    losses = np.empty(rows)
    for _, y in sets:
        y.fill(np.nan)
    _, y = run_case(benchmark, lambda x, y: kernel(x, labels, -1, 1.0 / rows, losses, y), sets,
                    COLD_ROUNDS.get(backend, DEFAULT_COLD_ROUNDS))
    assert np.isfinite(losses).all() and np.isfinite(y).all()
    assert np.all(y[:, 0] < 0) and np.all(y[:, 1:] >= 0)  # (p - onehot) / (1 + |x|): only the label's is negative


@pytest.mark.parametrize("name", list(bench.NUMPY_BASELINES))
@pytest.mark.parametrize("n", SIZE_PARAMS)
def test_numpy_baseline(benchmark, inputs, name, n):
    sets = inputs(n)
    rows = sets[0][0].shape[0]
    describe(benchmark, n, rows, name, "numpy", "numpy", bench.NUMPY_TRAFFIC_PER_ELEMENT[name], len(sets) > 1)
    function = bench.NUMPY_BASELINES[name]
    x_sets = [(x,) for x, _ in sets]
    if len(x_sets) == 1:
        result = benchmark(function, *x_sets[0])
    else:
        rotation = itertools.cycle(x_sets)
        result = benchmark.pedantic(function, setup=lambda: (next(rotation), {}),
                                    rounds=DEFAULT_COLD_ROUNDS, warmup_rounds=1)
    check_rows_sum_to_one(result, bench.is_log(name))


@pytest.mark.parametrize("operation", ["quantize", "dequantize"])
@pytest.mark.parametrize("blocksize", [256, 4096])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n", [pytest.param(1 << 16, id="2^16"), pytest.param(1 << 24, id="2^24",
                                                                               marks=pytest.mark.slow)])
def test_quantization(benchmark, operation, blocksize, backend, n):
    """8-bit block-wise quantize / dequantize kernels (signed dynamic map), outputs preallocated;
    the codes are checked against the NumPy reference."""
    from softmaxlib import _codebooks
    code = _codebooks.create_dynamic_map()
    tables = _codebooks.search_tables(code)
    x = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    expected_q, expected_absmax = bench.numpy_quantize(x, tables.midpoints[:-1], blocksize)
    q, absmax, y = np.empty(n, np.uint8), np.empty(n // blocksize, np.float32), np.empty(n, np.float32)
    benchmark.group = f"quant n={n}"
    benchmark.extra_info.update(n=n, blocksize=blocksize, operation=operation, isa=backend)
    if operation == "quantize":
        benchmark(_registry.quant_kernel("quantize_blockwise", backend), x, blocksize, tables, q, absmax)
        np.testing.assert_array_equal(q, expected_q)
        np.testing.assert_array_equal(absmax, expected_absmax)
    else:
        benchmark(_registry.quant_kernel("dequantize_blockwise", backend), expected_q, expected_absmax, blocksize,
                  code, y)
        np.testing.assert_array_equal(y, bench.numpy_dequantize(expected_q, code, expected_absmax, blocksize))

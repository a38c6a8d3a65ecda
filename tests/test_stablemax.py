"""StableMax and log-StableMax kernels (softmaxlib.stablemax): accuracy against a float64
reference, special values, the argument zoo, guard pages, threads and properties.

The error bounds, measured on every backend (the C kernels and the Numba twin give the same
bits on these rows):
- stablemax: within STABLEMAX_MAX_ULP of float64 over outputs >= FLT_MIN. s(x) costs up to two
  roundings (1 - x, then 1 / (1 - x)), the sum is float64, and r = s * (1/sum) is rounded once
  with 1/sum in two float32 parts; measured up to 1.74 ULP.
- log_stablemax: within LOG_STABLEMAX_EPS float32 epsilons of max(1, |reference|): log r while
  r >= FLT_MIN (no cancellation), -log(1 + |x|) - log sum below; measured up to 0.56.
"""
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from conftest import examples
from oracle import FLT_MIN, ulp_error
from softmaxlib import _bindings, stablemax
from test_guard_pages import _guarded_run, buffers  # noqa: F401  (buffers is a fixture)

STABLEMAX_MAX_ULP = 3
LOG_STABLEMAX_EPS = 2
EPS32 = 2.0**-23
FUNCTIONS = {"stablemax": stablemax.stablemax, "log_stablemax": stablemax.log_stablemax}
SCALES = {"N(0,1)": 1, "N(0,10)": 10, "N(0,100)": 100, "N(0,1e4)": 1e4, "N(0,1e30)": 1e30}


def s64(x):
    x = np.asarray(x, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(x >= 0, x + 1, 1 / (1 - np.minimum(x, 0)))


def reference(x, log_output, axis=-1):
    """float64 StableMax with the special-value rules of docs/semantics.md (s in place of exp)."""
    if np.ndim(x) == 0:
        return reference(np.reshape(x, 1), log_output).reshape(())
    x = np.moveaxis(np.asarray(x, np.float64), axis, -1)
    result = np.empty_like(x)
    for index in np.ndindex(x.shape[:-1]):
        row = x[index]
        if row.size == 0:
            continue
        if np.isnan(row).any():
            result[index] = np.nan
        elif (row == np.inf).any():
            k = (row == np.inf).sum()
            result[index] = np.where(row == np.inf, -np.log(k) if log_output else 1 / k, -np.inf if log_output else 0)
        else:
            s = s64(row)
            with np.errstate(divide="ignore", invalid="ignore"):
                result[index] = np.log(s) - np.log(s.sum()) if log_output else s / s.sum()
    return np.moveaxis(result, -1, axis)


def assert_close(y, expected, log_output, dtype=np.float32):
    y64, expected = np.asarray(y, np.float64), np.asarray(expected, np.float64)
    assert y.dtype == dtype and y.shape == expected.shape
    np.testing.assert_array_equal(np.isnan(y64), np.isnan(expected))
    special = ~np.isfinite(expected)
    np.testing.assert_array_equal(y64[special & ~np.isnan(expected)], expected[special & ~np.isnan(expected)])
    finite = np.isfinite(expected)
    if dtype == np.float64:
        np.testing.assert_allclose(y64[finite], expected[finite], rtol=1e-14, atol=0 if not log_output else 1e-14)
        return
    if dtype == np.float16:
        np.testing.assert_allclose(y64[finite], expected[finite], rtol=2.0**-10, atol=2.0**-24)
        return
    if log_output:
        error = np.abs(y64[finite] - expected[finite]) / np.maximum(1.0, np.abs(expected[finite]))
        assert error.size == 0 or error.max() <= LOG_STABLEMAX_EPS * EPS32
    else:
        assert ulp_error(y64[finite], expected[finite]) <= STABLEMAX_MAX_ULP
        below = finite & (expected < FLT_MIN) & (np.abs(expected - FLT_MIN) > STABLEMAX_MAX_ULP * 2.0**-149)
        assert np.all(y64[below] == 0), "StableMax outputs below FLT_MIN are flushed to +0"


@pytest.fixture(params=list(FUNCTIONS))
def function(request):
    return request.param


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("n", [1000, 100_000, pytest.param(2**24, marks=pytest.mark.slow)])
def test_accuracy(function, scale, n, backend):
    rows = {1000: 16, 100_000: 2}.get(n, 1)
    x = (np.random.default_rng(n + len(scale)).standard_normal((rows, n)) * SCALES[scale]).astype(np.float32)
    log_output = function == "log_stablemax"
    y = FUNCTIONS[function](x, backend=backend)
    assert_close(y, reference(x, log_output), log_output)
    total = np.exp(y.astype(np.float64)).sum(-1) if log_output else y.sum(-1, dtype=np.float64)
    assert np.max(np.abs(total - 1)) <= 1e-6


SPECIAL_ROWS = [
    [1.0, -np.inf, 2.0, 3.0],
    [np.inf, 1.0, np.inf, 0.0],
    [np.nan, 1.0, 2.0, 3.0],
    [np.inf, np.nan, 0.0, 1.0],
    [-np.inf] * 4,
    [3e38, 3e38, -3e38, 1.0],
    [-3.4e38, -1e38, 0.5, 1.0],
    [-3.4e38, -3e38, -1e38, -2e38],
    [1e-45, -1e-45, 0.0, -0.0],
    [1.0, 1.0, 1.0, 1.0],
    [-1e30, -1e30, -1e30, 5.0],
]


@pytest.mark.parametrize("row", SPECIAL_ROWS, ids=[str(r) for r in SPECIAL_ROWS])
@pytest.mark.parametrize("n", [4, 37])  # a masked tail only, and vectors + tail
def test_special_values(function, row, n, backend):
    x = np.resize(np.array(row, np.float32), n)[None, :]
    log_output = function == "log_stablemax"
    assert_close(FUNCTIONS[function](x, backend=backend), reference(x, log_output), log_output)


@pytest.mark.parametrize("shape, axis", [((0,), -1), ((3, 0), -1), ((0, 5), 0), ((), -1), ((7,), 0), ((4, 33), 0),
                                         ((2, 3, 65), 1), ((5, 1), -1), ((3, 4097), -1)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_zoo(function, shape, axis, dtype, backend, rng):
    x = (rng.standard_normal(shape) * 30).astype(dtype)
    log_output = function == "log_stablemax"
    y = FUNCTIONS[function](x, axis=axis, backend=backend)
    assert_close(y, reference(x, log_output, axis=axis), log_output, dtype=dtype)
    out = np.empty_like(x)
    assert FUNCTIONS[function](x, axis=axis, out=out, backend=backend) is out
    np.testing.assert_array_equal(out, y)


def test_strided_and_in_place(function, backend, rng):
    x = (rng.standard_normal((6, 200)) * 10).astype(np.float32)
    expected = FUNCTIONS[function](x.copy(), backend=backend)
    np.testing.assert_array_equal(FUNCTIONS[function](x[::2, ::-1], backend=backend), expected[::2, ::-1])
    np.testing.assert_array_equal(FUNCTIONS[function](np.asfortranarray(x), backend=backend), expected)
    original = x.copy()
    FUNCTIONS[function](x, backend=backend)
    np.testing.assert_array_equal(x, original)  # the input is never modified
    assert FUNCTIONS[function](x, out=x, backend=backend) is x
    np.testing.assert_array_equal(x, expected)


def test_bad_input(function, backend):
    with pytest.raises(TypeError, match="complex"):
        FUNCTIONS[function](np.ones(3, np.complex64), backend=backend)
    with pytest.raises(np.exceptions.AxisError):
        FUNCTIONS[function](np.ones((2, 3), np.float32), axis=2, backend=backend)
    with pytest.raises(ValueError, match="read-only"):
        out = np.empty(3, np.float32)
        out.flags.writeable = False
        FUNCTIONS[function](np.ones(3, np.float32), out=out, backend=backend)


@pytest.mark.parametrize("operation", ["stablemax", "log_stablemax"])
def test_kernels_stay_within_rows(buffers, operation, backend, rng):  # noqa: F811
    kernel = _bindings.bound(operation, backend, np.float32)
    _guarded_run(buffers, rng, operation, backend, kernel)


def test_threads_match_serial(function, backend, rng):
    x = (rng.standard_normal((64, 5000)) * 10).astype(np.float32)
    expected = FUNCTIONS[function](x, backend=backend)
    results = [None] * 4

    def work(k):
        results[k] = FUNCTIONS[function](x, backend=backend)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for result in results:
        np.testing.assert_array_equal(result, expected)


finite32 = st.floats(width=32, allow_nan=False, allow_infinity=False)


@settings(max_examples=examples(200), deadline=None)
@given(x=hnp.arrays(np.float32, st.integers(1, 80), elements=finite32))
def test_any_finite_row_matches_the_reference(x):
    for backend in stablemax_backends():
        for function, log_output in (("stablemax", False), ("log_stablemax", True)):
            y = FUNCTIONS[function](x, backend=backend)
            assert_close(y, reference(x, log_output), log_output)
            total = np.exp(y.astype(np.float64)).sum() if log_output else y.sum(dtype=np.float64)
            assert abs(total - 1) <= 1e-6


@settings(max_examples=examples(100), deadline=None)
@given(value=finite32, n=st.integers(1, 70))
def test_constant_row_is_uniform(value, n):
    for backend in stablemax_backends():
        y = stablemax.stablemax(np.full(n, value, np.float32), backend=backend)
        np.testing.assert_allclose(y, 1 / n, rtol=2 * EPS32)


@settings(max_examples=examples(200), deadline=None)
@given(x=st.floats(-1e300, 1e300))
def test_s_times_s_of_minus_x_is_one(x):
    product = stablemax.s(np.float64(x)) * stablemax.s(np.float64(-x))
    assert abs(product - 1) <= 2**-52
    assert stablemax.s(0.0) == 1.0 and stablemax.s(-np.inf) == 0.0 and stablemax.s(np.inf) == np.inf


def stablemax_backends():
    import softmaxlib
    return softmaxlib.backends()

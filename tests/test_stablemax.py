"""StableMax and log-StableMax kernels (softmaxlib.stablemax): accuracy against the float64
oracle (tests/oracle.py), special values, bad input, threads and properties. The argument zoo
and the guard pages run every row kernel, StableMax's too (test_agreement.py, test_guard_pages.py).

The error bounds (oracle.STABLEMAX_MAX_ULP and LOG_STABLEMAX_EPS, the catalog's tolerances),
measured on every backend (the C kernels and the Numba twin give the same bits on these rows):
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
from oracle import EPS32
from oracle import assert_stablemax_close as assert_close
from oracle import stablemax_reference as reference
from softmaxlib import stablemax

FUNCTIONS = {"stablemax": stablemax.stablemax, "log_stablemax": stablemax.log_stablemax}
SCALES = {"N(0,1)": 1, "N(0,10)": 10, "N(0,100)": 100, "N(0,1e4)": 1e4, "N(0,1e30)": 1e30}


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


def test_bad_input(function, backend):
    with pytest.raises(TypeError, match="complex"):
        FUNCTIONS[function](np.ones(3, np.complex64), backend=backend)
    with pytest.raises(np.exceptions.AxisError):
        FUNCTIONS[function](np.ones((2, 3), np.float32), axis=2, backend=backend)
    with pytest.raises(ValueError, match="read-only"):
        out = np.empty(3, np.float32)
        out.flags.writeable = False
        FUNCTIONS[function](np.ones(3, np.float32), out=out, backend=backend)


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

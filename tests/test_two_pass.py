"""Two-pass specifics: accuracy bounds, the public pass-1 reduction (sum_exp_pair,
merge_pairs, logsumexp), rows that take the exact path, and guard pages for the pair
kernel. The generic suites (agreement, special values, guard pages, errors, threads,
properties) already run every two-pass row kernel of the catalog."""
import math

import numpy as np
import pytest
import scipy.special

import oracle
from oracle import FLT_MIN, ulp_error
from softmaxlib import _bindings, _catalog, two_pass
from zoo import DISTRIBUTIONS, SIZES, make_rows, place

# Max ULP error of two-pass softmax over outputs >= FLT_MIN, every distribution, n and backend:
# the bound of issue 3. Each output is p * (1/M) * 2^(n - E): the exp's mantissa p (within
# 1.42 * 2^-24 relative, csrc/exp_constants.h), the sum M (the float tree, <= 3 * 2^-24, and the
# exps in it: the dominant element's error enters M too, with the opposite sign), and one
# rounding. Measured up to 2.49 ULP (N(0, 10), n = 1e3, over three seeds).
TWO_PASS_MAX_ULP = 4.0
LOGSUMEXP_RTOL = 2e-7  # relative; measured <= 3e-9 (float64 from the pair)
SUM_TOLERANCE = 1e-6


@pytest.fixture(scope="module", params=[
    pytest.param((distribution, n), id=f"{distribution}-n{n}", marks=[pytest.mark.slow] if n == 2**24 else [])
    for distribution in DISTRIBUTIONS for n in SIZES
])
def dataset(request):
    distribution, n = request.param
    x = make_rows(distribution, n)
    return x, oracle.softmax(x), oracle.log_softmax(x)


def test_softmax_ulp_bound(dataset, backend):
    x, reference, _ = dataset
    y = two_pass.softmax(x, backend=backend)
    assert ulp_error(y, reference) <= TWO_PASS_MAX_ULP
    assert np.all(y[reference < FLT_MIN] < FLT_MIN)
    assert np.max(np.abs(y.sum(axis=-1, dtype=np.float64) - 1)) <= SUM_TOLERANCE


def test_log_softmax_and_logsumexp(dataset, backend):
    x, _, log_reference = dataset
    lse_reference = (x.astype(np.float64) - log_reference)[:, 0]
    lse = two_pass.logsumexp(x, backend=backend)
    assert lse.dtype == np.float32
    np.testing.assert_allclose(lse, lse_reference, rtol=LOGSUMEXP_RTOL)
    log_y = two_pass.log_softmax(x, backend=backend)
    assert np.all(log_y <= 0)
    assert np.max(np.abs(log_y - log_reference) / np.maximum(1.0, np.abs(log_reference))) <= 4 * 2.0**-23


@pytest.mark.slow
def test_long_row_sum_and_logsumexp(backend):
    """n = 2^26: |sum(y) - 1| <= 1e-6 and logsumexp within 2e-7 relative (issue 3)."""
    x = np.random.default_rng(26).standard_normal(1 << 26, dtype=np.float32)
    lse = float(two_pass.logsumexp(x, backend=backend))
    exact = math.log(math.fsum(np.exp(x.astype(np.float64))))
    assert abs(lse - exact) <= LOGSUMEXP_RTOL * abs(exact)
    y = two_pass.softmax(x, backend=backend)
    assert abs(y.sum(dtype=np.float64) - 1) <= SUM_TOLERANCE


def test_logsumexp_matches_scipy(backend, rng):
    cases = [rng.standard_normal((3, 50)).astype(np.float32) * scale for scale in (1, 30, 1000)]
    cases += [np.array([[0, -np.inf, 1], [-np.inf, -np.inf, -np.inf], [np.inf, 0, 1], [np.nan, 0, 1]], np.float32)]
    for x in cases:
        expected = scipy.special.logsumexp(x.astype(np.float64), axis=-1)
        np.testing.assert_allclose(two_pass.logsumexp(x, backend=backend), expected, rtol=LOGSUMEXP_RTOL)


def test_logsumexp_axes_keepdims_and_dtypes(backend, rng):
    x = rng.standard_normal((3, 4, 5)).astype(np.float32)
    for axis in (0, 1, -1):
        got = two_pass.logsumexp(x, axis=axis, keepdims=True, backend=backend)
        assert got.shape == np.expand_dims(np.take(x, 0, axis=axis), axis).shape
        expected = scipy.special.logsumexp(x.astype(np.float64), axis=axis, keepdims=True)
        np.testing.assert_allclose(got, expected, rtol=LOGSUMEXP_RTOL)
    assert two_pass.logsumexp(x.astype(np.float16), backend=backend).dtype == np.float16
    assert two_pass.logsumexp(np.arange(5), backend=backend).dtype == np.float64
    assert two_pass.logsumexp(np.float32(3), backend=backend) == np.float32(3)
    assert np.all(two_pass.logsumexp(np.zeros((2, 0), np.float32), backend=backend) == -np.inf)


@pytest.mark.parametrize("n", [1, 17, 1000, 100_000])
def test_split_rows_merge_to_the_whole_row(n, backend, rng):
    x = (rng.standard_normal((2, n)) * 20).astype(np.float32)
    whole = two_pass.sum_exp_pair(x, backend=backend)
    cuts = sorted({0, n // 3, n // 2, n})
    parts = [two_pass.sum_exp_pair(x[:, a:b], backend=backend) for a, b in zip(cuts, cuts[1:])]
    merged = two_pass.merge_pairs(parts)
    exact = oracle.sum_exp(x)
    for mantissa, exponent in (whole, merged):
        assert np.all(exponent == np.floor(exponent))
        np.testing.assert_allclose(mantissa * np.exp2(exponent), exact, rtol=4e-7)
    np.testing.assert_allclose(merged[0] * np.exp2(merged[1]), whole[0] * np.exp2(whole[1]), rtol=4e-7)


def test_merge_pairs_is_exact_and_handles_special_pairs():
    mantissa, exponent = two_pass.merge_pairs([(1.5, 10.0), (0.75, -3.0), (0.0, -np.inf)])
    assert exponent == 10.0 and mantissa == 1.5 + 0.75 * 2.0**-13
    assert two_pass.merge_pairs([(0.0, -np.inf), (0.0, -np.inf)]) == (0.0, -np.inf)
    nan_mantissa, _ = two_pass.merge_pairs([(np.nan, 0.0), (1.0, 3.0)])
    assert np.isnan(nan_mantissa)
    inf_mantissa, _ = two_pass.merge_pairs([(np.inf, 0.0), (1.0, 3.0)])
    assert inf_mantissa == np.inf
    with pytest.raises(ValueError, match="at least one"):
        two_pass.merge_pairs([])


def test_special_pairs(backend):
    x = np.array([[np.nan, 0, 1], [np.inf, 0, 1], [-np.inf, -np.inf, -np.inf], [1e30, 1e30, 0]], np.float32)
    mantissa, exponent = two_pass.sum_exp_pair(x, backend=backend)
    assert np.isnan(mantissa[0]) and (mantissa[1], exponent[1]) == (np.inf, 0.0)
    assert (mantissa[2], exponent[2]) == (0.0, -np.inf)
    # A row beyond the pairs' range (|x| > 2^20) takes the exact float64 path.
    big = float(np.float32(1e30))
    assert math.log(mantissa[3]) + exponent[3] * math.log(2) == pytest.approx(big, rel=1e-15)
    assert two_pass.logsumexp(x[3], backend=backend) == np.float32(1e30)


def test_rows_beyond_the_pair_range_match_three_pass(operation, backend, rng):
    """Rows with |x| > 2^20 take the three-pass kernel: the same results."""
    spec = _catalog.by_signature("rows")[operation]
    if spec.family != "two_pass":
        pytest.skip("two-pass only")
    from softmaxlib import three_pass

    x = (rng.standard_normal((3, 300)) * 1e6).astype(np.float32)
    x[0, 5] = 3e7
    x[1] = x[1] - 5e6
    got = getattr(two_pass, spec.function)(x, backend=backend)
    np.testing.assert_array_equal(got, getattr(three_pass, spec.function)(x, backend=backend))


@pytest.mark.parametrize("n", [1, 5, 16, 17, 100, 129, 1000])
def test_pair_kernel_stays_in_its_rows(buffers, n, backend, rng):
    x_area, _ = buffers
    kernel = _bindings.bound("sum_exp_pair", backend, np.dtype(np.float32))
    expected = None
    for where in ("end", "start"):
        x = place(x_area, (2, n), where)
        x[:] = rng.standard_normal((2, n)).astype(np.float32) if expected is None else previous
        previous = x.copy()
        mantissa, exponent = np.empty(2), np.empty(2)
        kernel(x, mantissa, exponent)
        if expected is None:
            expected = (mantissa.copy(), exponent.copy())
        else:
            np.testing.assert_array_equal(mantissa, expected[0])
            np.testing.assert_array_equal(exponent, expected[1])


@pytest.mark.parametrize("function", ["softmax", "log_softmax"])
@pytest.mark.parametrize("n", [1, 5, 16, 17, 100, 129, 1000, 4097])
def test_streaming_kernels_match_and_stay_in_their_rows(buffers, function, n, backend, rng):
    """The non-temporal-store kernels (picked for outputs above half the last-level cache) give
    the same bits as the regular ones, and stay in their rows at either end of the pages."""
    if backend == "numba":
        pytest.skip("the Numba twin has no streaming variant")
    from softmaxlib import _dispatch

    ffi = _dispatch.ffi
    stream = getattr(_dispatch.lib, f"sml_f32_{function}_two_pass_stream__{backend}")
    regular = _bindings.bound(f"{function}_two_pass", backend, np.dtype(np.float32))
    x_area, y_area = buffers
    data = (rng.standard_normal((2, n)) * 10).astype(np.float32)
    expected = np.empty_like(data)
    regular(data, expected)
    for x_where, y_where in (("end", "end"), ("start", "start"), ("end", "start")):
        x = place(x_area, (2, n), x_where)
        y = place(y_area, (2, n), y_where)
        x[:] = data
        stream(2, n, ffi.from_buffer("float[]", x), ffi.from_buffer("float[]", y, require_writable=True), 2)
        np.testing.assert_array_equal(y, expected)

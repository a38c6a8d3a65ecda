"""Hypothesis property tests of softmax and log_softmax, on every backend and variant.

Bounds (eps = 2^-23, the float32 epsilon):

- "moderate" rows have |x| <= 8, so |x - max| <= 16 and rounding x - max to
  float32 costs <= 2^-21 relative (<= 8 ULP); the exp adds <= 2 ULP of exp and
  so <= 4 ULP of y, the scaling ~1 ULP: SOFTMAX_MAX_ULP = 16 ULP (the zoo bound of
  test_agreement.py), log_softmax LOG_SOFTMAX_EPS * eps * max(1, |ref|).
- plus the float32 tree sums of the C kernels, SUM_EPS below.
- rows over the whole finite float32 range round x - max with |x - max| up to
  87 (beyond, exp underflows to 0), which costs <= 2^-18 relative, i.e. up to
  64 ULP: WIDE_SOFTMAX_MAX_ULP.
"""
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from conftest import examples, public_function
from oracle import (
    EPS32,
    FLT_MIN,
    LOG_SOFTMAX_EPS,
    SOFTMAX_MAX_ULP,
    assert_log_softmax_close,
    assert_softmax_close,
    softmax_reference,
)

MAX_LENGTH = 300
# The C kernels add the eight exp vectors of each trip as a float32 tree and
# widen the result into double lanes (csrc/three_pass_kernels.h): each term
# goes through at most three float roundings, so the sum is off by up to
# 3 * 2^-24 of the total (the Numba twin sums in double: ~0). That moves every
# softmax output by up to 3 ULP and log_softmax by 1.5 eps absolutely; round up.
SUM_EPS = 2
PROPERTY_SOFTMAX_MAX_ULP = SOFTMAX_MAX_ULP + 2 * SUM_EPS  # 20
PROPERTY_LOG_SOFTMAX_EPS = LOG_SOFTMAX_EPS + SUM_EPS  # 6
# 64 ULP from x - max, 4 from the exp, 2 from the scaling, the sum as above.
WIDE_SOFTMAX_MAX_ULP = 70 + 2 * SUM_EPS  # 74
MAX_SHIFT = 1e4
# Permuting x permutes every exp(x_i - max) exactly (the exp is lane-wise and the
# max is order-free); only the order of the sum changes, so the result is NOT
# exactly permuted: the two sums may differ by 2 * SUM_EPS relatively (see
# above; the Numba twin sums in double: ~0). softmax: 1/sum and the product round
# once more on each side: <= 2 * SUM_EPS + 4 = 16 eps relative. log_softmax:
# log(sum) moves by <= 2 * SUM_EPS absolute, plus the roundings of log(sum) and
# of the subtraction on each side: <= 16 eps * max(1, |y|).
PERMUTATION_EPS = 2 * SUM_EPS + 4  # 8
PROPERTY_SETTINGS = settings(
    max_examples=examples(200),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

lengths = st.integers(min_value=1, max_value=MAX_LENGTH)
moderate_rows = arrays(np.float32, lengths, elements=st.floats(-8, 8, width=32))
wide_rows = arrays(
    np.float32, lengths, elements=st.floats(allow_nan=False, allow_infinity=False, width=32)
)
shifts = st.floats(-MAX_SHIFT, MAX_SHIFT, width=32)


def ulp_distance(a, b):
    """|a - b| in float32 ULPs, exactly, for non-negative float32 arrays (no NaN)."""
    a = np.asarray(a, dtype=np.float32).view(np.int32).astype(np.int64)
    b = np.asarray(b, dtype=np.float32).view(np.int32).astype(np.int64)
    return np.abs(a - b)


@PROPERTY_SETTINGS
@given(x=moderate_rows, c=shifts)
def test_shift_invariance(operation, backend, x, c):
    """softmax(x + c) for |c| <= 1e4.

    x + c is rounded in float32: each element moves by <= u = 2^-24 * max|x + c|
    (~|c| eps / 2). So (1) f(x + c) matches the oracle of the *rounded* x + c
    within PROPERTY_SOFTMAX_MAX_ULP / PROPERTY_LOG_SOFTMAX_EPS (there, x - max is
    even exact for |c| >= 16, by Sterbenz); (2) f(x + c) matches f(x) within
    relative 2u + 2 * 28 eps for softmax (moving every input by <= u moves the
    exact softmax by a factor in [e^-2u, e^2u]; each side has its own error), and
    absolute 2u + 2 * 10 eps * max(1, |y|) for log_softmax.
    """
    function, is_log = public_function(operation)
    shifted = (x + c).astype(np.float32)
    y_shifted = function(shifted, backend=backend)
    reference = softmax_reference(shifted, log_output=is_log)
    if is_log:
        assert_log_softmax_close(y_shifted, reference, eps_factor=PROPERTY_LOG_SOFTMAX_EPS)
    else:
        assert_softmax_close(y_shifted, reference, max_ulp=PROPERTY_SOFTMAX_MAX_ULP)

    u = 2.0**-24 * float(np.max(np.abs(shifted.astype(np.float64))))
    y = function(x, backend=backend).astype(np.float64)
    difference = np.abs(y_shifted.astype(np.float64) - y)
    if is_log:
        tolerance = 2 * u * 1.001 + 2 * PROPERTY_LOG_SOFTMAX_EPS * EPS32 * np.maximum(1.0, np.abs(y))
    else:
        tolerance = (2 * u * 1.001 + 2 * PROPERTY_SOFTMAX_MAX_ULP * EPS32) * y
    assert np.all(difference <= tolerance), f"max excess {np.max(difference / tolerance):.3f}, u = {u:.3g}"


@PROPERTY_SETTINGS
@given(x=moderate_rows)
def test_sums_to_one(operation, backend, x):
    """Summed in float64. softmax: |sum(y) - 1| <= 28 eps, as every output has a
    relative error <= PROPERTY_SOFTMAX_MAX_ULP ULP <= 28 eps (and no output is
    flushed: y >= e^-16 / 300). log_softmax: |sum(exp(y)) - 1| <= 10 eps * (1 + ln n)
    + 4 eps: an error <= 10 eps * max(1, |y_i|) in y_i moves exp(y_i) by that much
    relatively, and sum(exp(y_i) * max(1, |y_i|)) <= 1 + entropy <= 1 + ln n; the
    4 eps covers the float64 exp and sum.
    """
    function, is_log = public_function(operation)
    y = function(x, backend=backend).astype(np.float64)
    if is_log:
        total = np.exp(y).sum()
        assert abs(total - 1) <= PROPERTY_LOG_SOFTMAX_EPS * EPS32 * (1 + math.log(x.size)) + 4 * EPS32
    else:
        total = y.sum()
        assert abs(total - 1) <= PROPERTY_SOFTMAX_MAX_ULP * EPS32


@PROPERTY_SETTINGS
@given(x=moderate_rows, data=st.data())
def test_permutation_equivariance(operation, backend, x, data):
    """f(x[p]) == f(x)[p] up to the order of the sum (bounds at the top of the file)."""
    function, is_log = public_function(operation)
    permutation = np.array(data.draw(st.permutations(range(x.size))), dtype=np.intp)
    y = function(x, backend=backend)
    y_permuted = function(x[permutation], backend=backend)
    y_expected = y[permutation].astype(np.float64)
    scale = np.maximum(1.0, np.abs(y_expected)) if is_log else y_expected
    excess = np.abs(y_permuted - y_expected) / (PERMUTATION_EPS * EPS32 * scale)
    assert np.all(excess <= 1), f"permuted result off by {np.max(excess):.2f}x the bound"
    # The permuted row equals the original when the permutation is the identity.
    if np.array_equal(permutation, np.arange(x.size)):
        np.testing.assert_array_equal(y_permuted, y)


@PROPERTY_SETTINGS
@given(x=moderate_rows)
def test_monotone(operation, backend, x):
    """x_i <= x_j implies y_i <= y_j, exactly: x - max, the exp (checked over every
    float32 input by tests/test_exp.py), the scaling by 1/sum and the subtraction of
    log(sum) are all monotone roundings; equal inputs give equal outputs."""
    function, is_log = public_function(operation)
    y = function(x, backend=backend)
    order = np.argsort(x, kind="stable")
    xs, ys = x[order], y[order]
    ties = xs[1:] == xs[:-1]
    np.testing.assert_array_equal(ys[1:][ties], ys[:-1][ties])
    assert np.all(ys[1:] >= ys[:-1]), f"not monotone at x = {xs[:-1][ys[1:] < ys[:-1]][:5]}"


def _around_range_reduction_boundaries():
    """Float32 t <= 0 within 300 ULP of every t = -(k + 1/2) ln 2 where n = round(t / ln 2) changes."""
    bits = [
        np.float32(-(k + 0.5) * math.log(2)).view(np.int32) + np.arange(-300, 301, dtype=np.int32)
        for k in range(127)
    ]
    t = np.unique(np.concatenate(bits).view(np.float32))
    return t[t <= 0]


def _near_binade_boundaries():
    """Float32 t within 3000 ULP above -2^-k: where the first exp (plain Horner) decreased by 1 ULP."""
    bits = [np.float32(-(2.0**-k)).view(np.int32) - np.arange(0, 3000, dtype=np.int32) for k in range(2, 6)]
    return np.sort(np.concatenate(bits).view(np.float32))


@pytest.mark.parametrize(
    "t",
    [
        pytest.param(_around_range_reduction_boundaries(), id="range_reduction_boundaries"),
        pytest.param(_near_binade_boundaries(), id="near_-0.25_to_-0.03125"),
        # a pair where the first exp gave exp(t1) > exp(t2) for t1 < t2
        pytest.param(
            np.array([float.fromhex("-0x1.fffadap-3"), float.fromhex("-0x1.fffad8p-3")], np.float32),
            id="regression_pair",
        ),
    ],
)
def test_monotone_at_hard_places(operation, backend, t):
    """Exactly monotone where an exp is most likely not to be: x = [0, t...] makes x - max = t exact."""
    function, is_log = public_function(operation)
    for zeros in (1, 3):
        x = np.concatenate([np.zeros(zeros, np.float32), t])
        y = function(x, backend=backend)[zeros:]
        assert np.all(y[1:] >= y[:-1]), f"not monotone at t = {t[:-1][y[1:] < y[:-1]][:5]}"


@PROPERTY_SETTINGS
@given(x=wide_rows)
def test_no_nan_over_the_whole_float32_range(operation, backend, x):
    """Finite input, down to -3.4e38 and up to 3.4e38, never gives NaN; the result
    matches the oracle (softmax within WIDE_SOFTMAX_MAX_ULP, see the top; log_softmax
    within 10 eps * max(1, |ref|), and -inf where the exact result is beyond
    -FLT_MAX, the correctly rounded float32 value), and softmax sums to 1 within
    2^-18 (x - max) + (SUM_EPS + 8) eps (sum, exp, scaling).
    """
    function, is_log = public_function(operation)
    y = function(x, backend=backend)
    assert not np.isnan(y).any()
    reference = softmax_reference(x, log_output=is_log)
    if is_log:
        # (x - max) - log(sum) may round to -inf (overflow) when the exact result
        # is beyond -FLT_MAX, or within the tolerance of it.
        tolerance = PROPERTY_LOG_SOFTMAX_EPS * EPS32 * np.abs(reference)
        overflow = (reference - tolerance < -np.finfo(np.float32).max) & (y == -np.inf)
        assert_log_softmax_close(y[~overflow], reference[~overflow], eps_factor=PROPERTY_LOG_SOFTMAX_EPS)
        assert np.all(y <= 0)
    else:
        assert_softmax_close(y, reference, max_ulp=WIDE_SOFTMAX_MAX_ULP)
        assert np.all((y >= 0) & (y <= 1))
        assert abs(y.astype(np.float64).sum() - 1) <= 2.0**-18 + (SUM_EPS + 8) * EPS32 + x.size * FLT_MIN

"""Special values (NaN, ±inf, ±FLT_MAX, empty and 0-d inputs, underflow), the same on every backend.

CASES is the table: (input row, exact softmax, exact log_softmax), the expectations written as
exact float64 values. The expectation for a dtype is that value rounded to the dtype (so
log_softmax([FLT_MAX, -FLT_MAX]) = [0, -2*FLT_MAX] becomes [0, -inf] in float32), and float32
softmax outputs below FLT_MIN flushed to +0. float64 keeps subnormal outputs.

Each row is also embedded in longer rows (n = 1, 7, 17, 70, 100, 200) at the head, the tail and
spread out, so the special elements go through the unrolled loop, the one-vector loop and the
masked tail of both SIMD widths; the padding is -inf (which changes nothing but adds exact zeros),
or random finite values for rows whose result a NaN or a +inf decides. Every such row sits in a 2-D
batch between two ordinary rows, which must come out as if computed alone.
"""
import math

import numpy as np
import pytest

from conftest import public_function

F = float(np.finfo(np.float32).max)  # FLT_MAX = 3.4028235e38
FLT_MIN = float(np.finfo(np.float32).tiny)  # 2^-126
inf, nan = math.inf, math.nan
LN2, LN3 = math.log(2), math.log(3)
DTYPES = [np.float32, np.float64]
EMBED_LENGTHS = (1, 7, 17, 70, 100, 200)


def _softmax_exact(row):
    """Exact-enough softmax and log_softmax of a finite row, for the table (float64, via fsum)."""
    m = max(row)
    shifted = [v - m for v in row]
    total = math.fsum(math.exp(s) for s in shifted)
    return [math.exp(s) / total for s in shifted], [s - math.log(total) for s in shifted]


def _case(case_id, row, softmax=None, log_softmax=None, dtypes=DTYPES):
    if softmax is None:
        softmax, log_softmax = _softmax_exact(row)
    return pytest.param(row, softmax, log_softmax, dtypes, id=case_id)


CASES = [
    # NaN anywhere: the whole row is NaN.
    _case("nan_only", [nan], [nan], [nan]),
    _case("nan_between_finite", [1.0, nan, 2.0], [nan] * 3, [nan] * 3),
    _case("nan_and_neginf", [nan, -inf], [nan] * 2, [nan] * 2),
    _case("nan_and_posinf", [inf, nan, 0.0], [nan] * 3, [nan] * 3),
    _case("nan_and_posinf_and_neginf", [-inf, inf, nan], [nan] * 3, [nan] * 3),
    _case("nan_and_flt_max", [F, nan, -F], [nan] * 3, [nan] * 3),
    # -inf gives exactly 0 (log: -inf); a row of only -inf is NaN.
    _case("neginf_between_equal", [0.0, -inf, 0.0], [0.5, 0.0, 0.5], [-LN2, -inf, -LN2]),
    _case("neginf_with_finite", [1.0, -inf, 2.0],
          [1 / (1 + math.e), 0.0, math.e / (1 + math.e)],
          [-math.log1p(math.e), -inf, 1 - math.log1p(math.e)]),
    _case("neginf_only", [-inf], [nan], [nan]),
    _case("neginf_only_3", [-inf] * 3, [nan] * 3, [nan] * 3),
    # +inf: the k infinities share the mass, everything else is 0.
    _case("posinf_only", [inf], [1.0], [0.0]),
    _case("posinf_with_finite", [inf, 0.0, F], [1.0, 0.0, 0.0], [0.0, -inf, -inf]),
    _case("posinf_two", [inf, 0.0, inf], [0.5, 0.0, 0.5], [-LN2, -inf, -LN2]),
    _case("posinf_three", [inf, inf, -F, inf], [1 / 3, 1 / 3, 0.0, 1 / 3], [-LN3, -LN3, -inf, -LN3]),
    _case("posinf_and_neginf", [inf, -inf], [1.0, 0.0], [0.0, -inf]),
    _case("posinf_and_neginf_2", [-inf, inf, -inf, inf], [0.0, 0.5, 0.0, 0.5], [-inf, -LN2, -inf, -LN2]),
    # Every finite input gives a finite softmax, never NaN.
    _case("zero", [0.0], [1.0], [0.0]),
    _case("flt_max_alone", [F], [1.0], [0.0]),
    _case("minus_flt_max_alone", [-F], [1.0], [0.0]),
    # x - max overflows to -inf in float32: softmax 0; the exact log_softmax -2*FLT_MAX rounds to -inf.
    _case("flt_max_and_minus_flt_max", [F, -F], [1.0, 0.0], [0.0, -2 * F]),
    _case("flt_max_twice", [F, F], [0.5, 0.5], [-LN2, -LN2]),
    _case("minus_flt_max_three", [-F] * 3, [1 / 3] * 3, [-LN3] * 3),
    _case("flt_max_and_zero", [0.0, F], [0.0, 1.0], [-F, 0.0]),
    _case("subnormal_inputs", [1e-45, 0.0, -1e-45], [1 / 3] * 3, [-LN3] * 3, dtypes=[np.float32]),
    _case("huge_spread", [1e30, -1e30, 0.0], [1.0, 0.0, 0.0], [0.0, -2e30, -1e30]),
    # Underflow: float32 softmax outputs below FLT_MIN are +0, those at or above are kept;
    # float64 keeps everything, subnormals included (libm exp).
    _case("exp_minus_80_kept", [0.0, -80.0]),  # 1.8e-35
    # (The inputs are exact in float32, so the float64 expectations are those of the float32 rows.)
    _case("exp_minus_87_25_kept", [0.0, -87.25]),  # 1.28e-38 >= FLT_MIN
    _case("exp_minus_87_375_flushed", [-87.375, 0.0]),  # 1.13e-38 < FLT_MIN
    _case("exp_minus_87_5_flushed", [0.0, -87.5]),
    _case("exp_minus_100_flushed", [0.0, -100.0]),
    _case("exp_minus_740_subnormal_in_float64", [0.0, -740.0]),  # 4.2e-322 in float64
    # exp(x - max) = 4.5e-38 >= FLT_MIN, but divided by the sum (200) it is below: still 0 in float32.
    _case("quotient_below_flt_min", [0.0] * 199 + [-86.0]),
    # float64: exp(x - max) = 3.5e-308 >= DBL_MIN, the quotient 1.7e-310 is subnormal and kept.
    _case("quotient_subnormal_in_float64", [-708.25] + [0.0] * 199),
    # Long rows of equal values: 1/n each, exactly, however long the sum.
    _case("equal_flt_max_long", [F] * ((1 << 20) + 3), [1 / ((1 << 20) + 3)] * ((1 << 20) + 3),
          [-math.log((1 << 20) + 3)] * ((1 << 20) + 3)),
    _case("equal_minus_flt_max_long", [-F] * (3 * 4096 + 5), [1 / (3 * 4096 + 5)] * (3 * 4096 + 5),
          [-math.log(3 * 4096 + 5)] * (3 * 4096 + 5)),
]


def expected_for(dtype, values, is_log):
    """The exact float64 values rounded to dtype; float32 softmax below FLT_MIN flushed to +0."""
    with np.errstate(over="ignore"):
        expected = np.asarray(values, dtype=np.float64).astype(dtype)
    if dtype == np.float32 and not is_log:
        expected[np.abs(expected) < FLT_MIN] = 0.0
    return expected


def assert_special_equal(y, expected, is_log, context):
    """NaN, ±inf and 0 exactly where expected (softmax zeros are +0); other values within 4 ULP."""
    y = np.asarray(y)
    assert y.dtype == expected.dtype, context
    assert y.shape == expected.shape, context
    np.testing.assert_array_equal(np.isnan(y), np.isnan(expected), err_msg=f"NaN pattern, {context}")
    exact = np.isinf(expected) | (expected == 0)
    np.testing.assert_array_equal(y[exact], expected[exact], err_msg=f"exact values, {context}")
    # Zeros are +0: softmax's flushed and -inf outputs, and log_softmax's 0 = log(1/1) or (x - max) - log(1).
    assert not np.signbit(y[expected == 0]).any(), f"a zero output is -0, {context}"
    close = ~(exact | np.isnan(expected))
    eps = np.finfo(expected.dtype).eps
    tiny = np.finfo(expected.dtype).smallest_subnormal
    # log_softmax: absolute error of a few ULP of log(sum) (values near 0 are not relative-accurate).
    np.testing.assert_allclose(y[close], expected[close], rtol=4 * eps, atol=4 * eps if is_log else 4 * tiny,
                               err_msg=context)


def _embeddings(row, n, rng):
    """Rows of length n holding `row` at the head, the tail and spread out, with their paddings."""
    k = len(row)
    if n < k:
        return []
    positions = {tuple(range(k)), tuple(range(n - k, n)), tuple(np.linspace(0, n - 1, k).round().astype(int))}
    decisive = any(math.isnan(v) or v == inf for v in row)
    out = []
    for where in sorted(positions):
        if len(set(where)) < k:
            continue
        paddings = [np.full(n, -inf)]
        if decisive:  # NaN or +inf decides the row, whatever the finite padding
            finite = rng.standard_normal(n) * 10.0
            finite[rng.random(n) < 0.2] = F
            finite[rng.random(n) < 0.2] = -F
            paddings.append(finite)
        for padding in paddings:
            full = padding.copy()
            full[list(where)] = row
            out.append((np.array(where), full))
    return out


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("row, softmax, log_softmax, dtypes", CASES)
def test_special_values_table(row, softmax, log_softmax, dtypes, dtype, operation, backend, rng):
    if dtype not in dtypes:
        pytest.skip(f"case only for {dtypes}")
    function, is_log = public_function(operation)
    exact = np.array(log_softmax if is_log else softmax, dtype=np.float64)
    all_nan = np.isnan(exact).all()

    # The row as is, alone.
    x = np.array(row, dtype=dtype)
    y = function(x, backend=backend)
    assert_special_equal(y, expected_for(dtype, exact, is_log), is_log, f"row alone, n={len(row)}")

    # Embedded at several positions of longer rows, in a 2-D batch between ordinary rows.
    pad_value = np.nan if all_nan else (-np.inf if is_log else 0.0)
    for n in EMBED_LENGTHS:
        embedded = _embeddings(row, n, rng)
        if not embedded:
            continue
        control = rng.standard_normal((2, n)).astype(dtype)
        batch = np.vstack([control[:1]] + [full[None, :].astype(dtype) for _, full in embedded] + [control[1:]])
        batch_copy = batch.copy()
        result = function(batch, backend=backend)
        np.testing.assert_array_equal(batch, batch_copy, err_msg="the input was modified")
        for i, (where, _) in enumerate(embedded, start=1):
            expected_row = np.full(n, pad_value)
            expected_row[where] = exact
            assert_special_equal(result[i], expected_for(dtype, expected_row, is_log), is_log,
                                 f"n={n}, elements at {where.tolist()}, padding {batch[i][0]!r}...")
        for i, control_row in ((0, control[0]), (-1, control[1])):
            np.testing.assert_array_equal(result[i], function(control_row, backend=backend),
                                          err_msg=f"an ordinary row next to a special one changed, n={n}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape, axis", [((0,), -1), ((3, 0), -1), ((0, 5), -1), ((0, 5), 0), ((2, 0, 3), 1),
                                         ((2, 0, 3), -1), ((4, 0), 0)])
def test_empty_input_keeps_its_shape(shape, axis, dtype, operation, backend):
    function, _ = public_function(operation)
    x = np.zeros(shape, dtype=dtype)
    y = function(x, axis=axis, backend=backend)
    assert y.shape == shape and y.dtype == dtype
    out = np.full(shape, 7, dtype=dtype)
    assert function(x, axis=axis, out=out, backend=backend) is out


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("value, softmax, log_softmax", [
    (2.5, 1.0, 0.0), (0.0, 1.0, 0.0), (-6e4, 1.0, 0.0), (inf, 1.0, 0.0), (-inf, nan, nan), (nan, nan, nan),
])
def test_zero_dimensional_input(value, softmax, log_softmax, dtype, operation, backend):
    function, is_log = public_function(operation)
    with np.errstate(over="ignore"):
        x = np.array(value, dtype=dtype)
    expected = log_softmax if is_log else softmax
    for argument in (x, x[()]):  # a 0-d array and a NumPy scalar
        y = function(argument, backend=backend)
        assert np.shape(y) == () and y.dtype == dtype
        np.testing.assert_array_equal(y, np.array(expected, dtype=dtype))
    out = np.array(7, dtype=dtype)
    assert function(x, out=out, backend=backend) is out
    np.testing.assert_array_equal(out, np.array(expected, dtype=dtype))


def _extreme_finite_rows(rng, n, rows=6):
    """Finite float32 rows mixing ±FLT_MAX, huge, ordinary, tiny and subnormal magnitudes."""
    magnitude = 10.0 ** rng.uniform(-45, 38.5, size=(rows, n))
    x = (np.where(rng.random((rows, n)) < 0.5, -1.0, 1.0) * magnitude).astype(np.float32)
    x[rng.random((rows, n)) < 0.15] = F
    x[rng.random((rows, n)) < 0.15] = -F
    x[0] = -F  # one row of only -FLT_MAX
    return np.where(np.isfinite(x), x, np.float32(F))


@pytest.mark.parametrize("n", EMBED_LENGTHS + (1000, 5000))
def test_finite_input_never_gives_nan(n, operation, backend, rng):
    function, is_log = public_function(operation)
    x = _extreme_finite_rows(rng, n)
    assert np.isfinite(x).all()
    y = function(x, backend=backend)
    assert not np.isnan(y).any()
    if is_log:
        # -inf only where the exact value is below -FLT_MAX (x - max itself overflowed).
        exact_shift = x.astype(np.float64) - x.max(axis=-1, keepdims=True).astype(np.float64)
        assert not (y == np.inf).any()
        assert (exact_shift[np.isneginf(y)] < -F).all()
        assert (y <= 0).all()
    else:
        assert np.isfinite(y).all()
        assert ((y >= 0) & (y <= 1)).all()
        np.testing.assert_allclose(y.sum(axis=-1, dtype=np.float64), 1.0, rtol=1e-5)


@pytest.mark.parametrize("n", EMBED_LENGTHS + (1000, 5000))
def test_float32_softmax_has_no_subnormal_outputs(n, operation, backend, rng):
    """Outputs below FLT_MIN are +0; outputs clearly above it are kept (never flushed)."""
    function, is_log = public_function(operation)
    if is_log:
        pytest.skip("log_softmax outputs are logs, never flushed")
    x = rng.uniform(-110, 0, size=(8, n)).astype(np.float32)
    x[:, 0] = 0.0  # max 0, so exp(x - max) spans [exp(-110), 1]
    y = function(x, backend=backend)
    assert ((y == 0) | (y >= FLT_MIN)).all(), "a float32 softmax output is subnormal"
    assert not np.signbit(y).any()
    exact = np.exp(x.astype(np.float64)) / np.exp(x.astype(np.float64)).sum(axis=-1, keepdims=True)
    assert (y[exact >= 1.001 * FLT_MIN] > 0).all(), "an output at or above FLT_MIN was flushed"
    assert (y[exact < 0.999 * FLT_MIN] == 0).all(), "an output below FLT_MIN was not flushed"


@pytest.mark.subnormal
def test_float64_keeps_subnormal_outputs(operation, backend):
    function, is_log = public_function(operation)
    if is_log:
        pytest.skip("softmax only")
    shifts = np.array([0.0, -700.0, -720.0, -740.0, -744.0, -746.0])
    y = function(shifts, backend=backend)
    expected = np.array([math.exp(s) for s in shifts])  # libm exp; the sum is 1 + tiny = 1.0 exactly
    np.testing.assert_array_equal(y, expected)
    assert (0 < y[3:5]).all() and (y[3:5] < np.finfo(np.float64).tiny).all(), "subnormal outputs kept"
    assert y[5] == 0.0

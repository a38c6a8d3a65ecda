"""Rows at the ends of the finite range, and pairs merged across special values
(docs/semantics.md, "Extreme finite values and merged pairs"):

- float64 StableMax: s of a finite x is at most DBL_MAX, but the sum of several such s
  overflows; the kernels sum s * 2^-64 then (stablemax, log_stablemax, the cross-entropy and
  its gradient). float32 rows near FLT_MAX are summed in double and never overflow.
- float64 sum_exp_pair and logsumexp of rows with |max| near or beyond DBL_MAX ln 2, where
  max * log2(e) overflows.
- merge_pairs of parts holding NaN, +inf, -inf, nothing, or huge values gives the pair of the
  whole row.

Every test runs on every backend (float64 runs the Numba kernels whatever the backend, float32
the backend's own). The references: exact fractions for StableMax, SciPy's logsumexp for the
pairs, the whole row's sum_exp_pair for merge_pairs.
"""
import math
from fractions import Fraction

import numpy as np
import pytest
import scipy.special
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import softmaxlib
from conftest import examples
from oracle import assert_stablemax_close as assert_close
from softmaxlib import stablemax, two_pass

DBL_MAX = float(np.finfo(np.float64).max)
FLT_MAX = float(np.finfo(np.float32).max)
EPS64 = 2.0**-52
# A float64 result may be subnormal; its rounding is then absolute, a few 2^-1074 (4.9e-324).
SUBNORMAL_ATOL = 1e-322


# ------------------------------------------------------------------ StableMax near DBL_MAX


def exact_s(v):
    if v == -math.inf:
        return Fraction(0)
    x = Fraction(float(v))
    return x + 1 if x >= 0 else 1 / (1 - x)


def log_of(q):
    """log of a positive Fraction, to an ULP of the result: log(q / 2^k) + k ln 2 with q / 2^k
    in [1/2, 2), so that neither the float conversion nor the sum can overflow."""
    k = q.numerator.bit_length() - q.denominator.bit_length()
    return math.log(q / Fraction(2) ** k) + k * math.log(2)


def exact_stablemax(row):
    """(p, log p, log sum s) of a row: exact Fractions rounded once; the +inf share the mass."""
    row = [float(v) for v in row]
    if any(math.isnan(v) for v in row):
        return [math.nan] * len(row), [math.nan] * len(row), math.nan
    if math.inf in row:
        k = row.count(math.inf)
        return ([1 / k if v == math.inf else 0.0 for v in row],
                [-math.log(k) if v == math.inf else -math.inf for v in row], math.inf)
    s = [exact_s(v) for v in row]
    total = sum(s)
    return ([float(si / total) for si in s], [log_of(si / total) if si else -math.inf for si in s], log_of(total))


def exact_loss_and_grad(row, label):
    """Cross-entropy log(sum s / s_label) and (p - onehot) / (1 + |x|) of a row without NaN or
    +inf, exactly (a -inf: s = 0, and a gradient of 0)."""
    s = [exact_s(v) for v in row]
    total = sum(s)
    grad = [0.0 if v == -math.inf else float((si / total - (i == label)) / (1 + abs(Fraction(float(v)))))
            for i, (si, v) in enumerate(zip(s, row))]
    return (log_of(total / s[label]) if s[label] else math.inf), grad


def log_tolerance(log_sum):
    """log s - log sum loses a few ULP of log sum, about 1.6e-13 near 709: the formula's own
    cancellation, the same for rows whose sum does not overflow."""
    return 4 * EPS64 * max(1.0, abs(log_sum))


def overflowing_rows():
    rng = np.random.default_rng(308)
    long_row = rng.standard_normal(100) * 1e3
    long_row[::9] = DBL_MAX * rng.uniform(0.5, 1.0, 12)
    long_row[5::17] = -1e300
    return [
        [9e307, 9e307],
        [DBL_MAX, DBL_MAX, DBL_MAX, 1.0, -3.0, -DBL_MAX, 0.0],
        [1e308, 1e308, 5e307, 1.0, -2.5, -1e308, 0.0, 7e307, -0.0, 5e-324],
        [DBL_MAX, 1.5e292],  # the sum exceeds DBL_MAX by less than an ULP, and rounds to inf
        [1e308, 1e308, -np.inf, 3.0],
        list(long_row),
    ]


SPECIAL_OVERFLOWING_ROWS = [
    [np.inf, 1e308, 1e308, np.inf, -1.0],  # the limit: the +inf share the mass
    [1e308, np.inf, 1e308, -np.inf],
    [np.nan, 1e308, 1e308],
    [1e308, 1e308, np.nan, np.inf],
]


def test_the_reported_row(backend):
    """stablemax([9e307, 9e307]) raised ZeroDivisionError; its cross-entropy was inf."""
    x = np.array([9e307, 9e307])
    np.testing.assert_array_equal(stablemax.stablemax(x, backend=backend), [0.5, 0.5])
    log_sum = math.log(9e307) + math.log(2)
    np.testing.assert_allclose(stablemax.log_stablemax(x, backend=backend), -math.log(2), rtol=0,
                               atol=log_tolerance(log_sum))
    loss, grad = stablemax.stablemax_cross_entropy(x[None], np.array([0]), return_grad=True, backend=backend)
    assert abs(loss - math.log(2)) <= log_tolerance(log_sum)
    np.testing.assert_allclose(grad, [[-0.5 / (1 + 9e307), 0.5 / (1 + 9e307)]], rtol=1e-15)


@pytest.mark.subnormal  # the small elements' outputs (or gradients) are subnormal
@pytest.mark.parametrize("row", overflowing_rows(), ids=lambda row: f"n{len(row)}-{row[0]:g}-{row[1]:g}")
def test_stablemax_of_rows_whose_sum_overflows(row, backend):
    x = np.array(row)
    with np.errstate(over="ignore"):
        assert np.sum(stablemax.s(x)) == np.inf  # the case: the float64 sum of s overflows
    p, log_p, log_sum = exact_stablemax(row)
    y = stablemax.stablemax(x, backend=backend)
    np.testing.assert_allclose(y, p, rtol=len(row) * EPS64, atol=SUBNORMAL_ATOL)
    assert abs(y.sum() - 1) <= len(row) * EPS64
    log_y = stablemax.log_stablemax(x, backend=backend)
    np.testing.assert_array_equal(log_y == -np.inf, np.array(log_p) == -np.inf)
    finite = np.isfinite(log_p)
    np.testing.assert_allclose(log_y[finite], np.array(log_p)[finite], rtol=0, atol=log_tolerance(log_sum))


@pytest.mark.parametrize("row", SPECIAL_OVERFLOWING_ROWS, ids=str)
def test_stablemax_of_special_rows_near_dbl_max(row, backend):
    p, log_p, _ = exact_stablemax(row)
    np.testing.assert_array_equal(stablemax.stablemax(np.array(row), backend=backend), p)
    np.testing.assert_array_equal(stablemax.log_stablemax(np.array(row), backend=backend), log_p)


@pytest.mark.subnormal  # the small elements' outputs (or gradients) are subnormal
def test_cross_entropy_of_rows_whose_sum_overflows(backend):
    for row in overflowing_rows():
        log_sum = log_of(sum(exact_s(v) for v in row))
        for label in sorted({0, 1, len(row) - 1, int(np.argmin(row))}):  # argmin: s 0 or tiny
            expected_loss, expected_grad = exact_loss_and_grad(row, label)
            loss, grad = stablemax.stablemax_cross_entropy(np.array(row)[None], np.array([label]), reduction="none",
                                                           return_grad=True, backend=backend)
            assert loss[0] == expected_loss or abs(loss[0] - expected_loss) <= log_tolerance(log_sum)
            np.testing.assert_allclose(grad[0], expected_grad, rtol=len(row) * EPS64, atol=SUBNORMAL_ATOL)
    # With ignore_index and several rows: "mean" divides by the two rows counted.
    x = np.array([[9e307, 9e307], [DBL_MAX, 1.0], [9e307, 9e307]])
    loss, grad = stablemax.stablemax_cross_entropy(x, np.array([0, -100, 1]), ignore_index=-100, return_grad=True,
                                                   backend=backend)
    assert abs(loss - math.log(2)) <= log_tolerance(709.8)
    np.testing.assert_array_equal(grad[1], [0, 0])
    np.testing.assert_allclose(grad[[0, 2]], [[-0.25 / 9e307, 0.25 / 9e307], [0.25 / 9e307, -0.25 / 9e307]],
                               rtol=1e-15)


def test_cross_entropy_of_special_rows_near_dbl_max(backend):
    def loss_and_grad(row, label):
        loss, grad = stablemax.stablemax_cross_entropy(np.array([row]), np.array([label]), return_grad=True,
                                                       backend=backend)
        return loss, grad[0]

    loss, grad = loss_and_grad(SPECIAL_OVERFLOWING_ROWS[0], 0)
    assert loss == pytest.approx(math.log(2), rel=1e-15)
    np.testing.assert_array_equal(grad, [0, 0, 0, 0, 0])  # the label holds its share: nothing to move
    loss, grad = loss_and_grad(SPECIAL_OVERFLOWING_ROWS[1], 2)
    assert loss == np.inf
    np.testing.assert_array_equal(grad, [0, 0, -1 / (1 + 1e308), 0])  # (p - onehot) / (1 + |x|), p = [0, 1, 0, 0]
    for row in SPECIAL_OVERFLOWING_ROWS[2:]:
        loss, grad = loss_and_grad(row, 1)
        assert np.isnan(loss) and np.isnan(grad).all()


@pytest.mark.subnormal  # the small elements' outputs (or gradients) are subnormal
@pytest.mark.parametrize("n", [4, 37, 1500])  # a masked tail only, vectors + tail, two blocks
def test_float32_rows_near_flt_max_need_no_scaling(n, backend, rng):
    """float32 s is summed in double: n values near FLT_MAX cannot overflow it."""
    x = np.resize(np.array([FLT_MAX, -FLT_MAX, 3e38, 1.0, -2.0, FLT_MAX, 0.0], np.float32), n)
    x[::5] = FLT_MAX
    x = np.stack([x, rng.permutation(x)])
    exact = [exact_stablemax(row) for row in x]
    assert_close(stablemax.stablemax(x, backend=backend), np.array([p for p, _, _ in exact]), False)
    assert_close(stablemax.log_stablemax(x, backend=backend), np.array([log_p for _, log_p, _ in exact]), True)
    labels = np.array([0, int(np.argmin(x[1]))])
    losses, grad = stablemax.stablemax_cross_entropy(x, labels, reduction="none", return_grad=True, backend=backend)
    for row, label, loss, g in zip(x, labels, losses, grad):
        expected_loss, expected_grad = exact_loss_and_grad(row, label)
        assert abs(loss - expected_loss) <= log_tolerance(math.log(n * FLT_MAX))
        np.testing.assert_allclose(g, expected_grad, rtol=1e-6, atol=1e-45)


# ------------------------------------------------------------------ logsumexp and pairs near DBL_MAX ln 2

PAIR_LIMIT = DBL_MAX * math.log(2)  # about 1.246e308: beyond it, log2 of the sum exceeds every double
LARGE_ROWS = [
    [1.5e308],
    [-1.5e308],
    [-1.5e308, 0.0],
    [1.5e308, -1.5e308],
    [DBL_MAX, DBL_MAX, DBL_MAX],
    [-DBL_MAX, -1.3e308],
    [-DBL_MAX, -np.inf, -1.3e308, -DBL_MAX],
    [1.3e308, 1.3e308, np.nextafter(1.3e308, 0)],
    [1e308],
    [-1e308],
    [1e308, -1e308, 5.0],
    [-1e308, 1e300, -5.0],
    [1.2460659279417836e308],  # the largest float64 whose max * log2(e) is finite
    [-1.2460659279417836e308],
    [700.0, 709.0, -1e308],
    [-745.0, -700.0],
]
SPECIAL_LARGE_ROWS = [[np.inf, 1.5e308], [np.nan, 1.5e308], [-np.inf, -np.inf], [np.inf, -1.5e308]]


@pytest.mark.parametrize("row", LARGE_ROWS + SPECIAL_LARGE_ROWS, ids=str)
def test_logsumexp_of_huge_rows_matches_scipy(row, backend):
    """max * log2(e) overflowed for |max| > DBL_MAX ln 2: logsumexp([1.5e308]) was NaN."""
    x = np.array(row)
    with np.errstate(over="ignore"):  # SciPy's x - max overflows to -inf for rows of both signs
        expected = scipy.special.logsumexp(x)
    got = two_pass.logsumexp(x, backend=backend)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, expected, rtol=1e-15)  # inf and NaN exactly


def test_logsumexp_of_huge_rows_in_arrays(backend):
    """The saturated rows among others, along any axis, 0-d, and with keepdims."""
    width = max(map(len, LARGE_ROWS + SPECIAL_LARGE_ROWS))
    x = np.array([row + [-np.inf] * (width - len(row)) for row in LARGE_ROWS + SPECIAL_LARGE_ROWS])
    x = np.concatenate([x, np.random.default_rng(7).standard_normal((5, width)) * 100])
    with np.errstate(over="ignore"):
        expected = scipy.special.logsumexp(x, axis=-1)
    for axis, data in ((-1, x), (0, x.T.copy()), (1, x[:, None, :].transpose(0, 2, 1))):
        got = two_pass.logsumexp(data, axis=axis, backend=backend)
        np.testing.assert_allclose(np.ravel(got), expected, rtol=1e-15)
    kept = two_pass.logsumexp(x.T, axis=0, keepdims=True, backend=backend)
    assert kept.shape == (1, x.shape[0])
    np.testing.assert_allclose(kept[0], expected, rtol=1e-15)
    assert two_pass.logsumexp(np.float64(1.5e308), backend=backend) == 1.5e308
    assert two_pass.logsumexp(np.float64(-DBL_MAX), backend=backend) == -DBL_MAX
    assert two_pass.logsumexp(np.zeros((3, 0)), backend=backend).tolist() == [-np.inf] * 3


@pytest.mark.parametrize("row", LARGE_ROWS, ids=str)
def test_pairs_of_huge_rows(row, backend):
    """The pair's contract: an integral exponent and mantissa * 2**exponent the sum. Up to
    |max| = DBL_MAX ln 2 that is log M + E ln 2 = logsumexp, with M in [1, 2n); beyond, no pair
    holds the sum, which saturates as the float64 sum of exp(x) does: (inf, 0) or (0, -inf)."""
    x = np.array(row)
    mantissa, exponent = two_pass.sum_exp_pair(x, backend=backend)
    with np.errstate(over="ignore"):
        expected = scipy.special.logsumexp(x)
        float_sum = np.exp(x).sum()
    top = x.max()
    if abs(top) > PAIR_LIMIT:
        assert (mantissa, exponent) == ((np.inf, 0.0) if top > 0 else (0.0, -np.inf))
    else:
        assert exponent == np.floor(exponent) and 1 <= mantissa < 2 * x.size
        assert math.log(mantissa) + exponent * math.log(2) == pytest.approx(expected, rel=1e-15)
    with np.errstate(over="ignore"):
        value = mantissa * 2.0**exponent
    if np.isfinite(float_sum) and float_sum > 0:
        # M * 2^E carries the rounding of max * log2(e) in its exponent: |max| 2^-53 relative.
        assert value == pytest.approx(float_sum, rel=max(1, abs(top)) * 2.0**-52)
    else:
        assert value == float_sum


# ------------------------------------------------------------------ merge_pairs across special values


def assert_same_pair(got, expected, rtol=1e-14):
    """Special pairs (NaN, infinite or zero mantissa) exactly, others' M * 2**E to float64 rounding."""
    (m, e), (m0, e0) = [tuple(np.asarray(v, np.float64) for v in pair) for pair in (got, expected)]
    assert m.shape == m0.shape and e.shape == e0.shape
    special = ~(np.isfinite(m0) & (m0 > 0))
    np.testing.assert_array_equal(m[special], m0[special])
    np.testing.assert_array_equal(e[special], e0[special])
    ordinary = ~special
    assert np.all(e[ordinary] == np.floor(e[ordinary]))
    np.testing.assert_allclose(m[ordinary] / m0[ordinary] * np.exp2(e[ordinary] - e0[ordinary]), 1.0, rtol=rtol)


def merged_parts(x, cuts, backend):
    bounds = [0, *sorted(cuts), x.shape[-1]]
    return two_pass.merge_pairs([two_pass.sum_exp_pair(x[..., a:b], backend=backend)
                                 for a, b in zip(bounds, bounds[1:])])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_reported_merge(dtype, backend):
    """[inf, 0] merged with [800, 1] gave (nan, 1154): inf * 2^(0 - 1154) = inf * 0."""
    x = np.array([np.inf, 0, 800, 1], dtype)
    assert two_pass.logsumexp(x, backend=backend) == np.inf
    merged = merged_parts(x, [2], backend)
    assert_same_pair(merged, two_pass.sum_exp_pair(x, backend=backend))
    assert merged == (np.inf, 0.0)


def test_merge_rules():
    """NaN first, then +inf, then the finite parts; (0, -inf) parts count for nothing."""
    rules = [
        ([(np.nan, 0.0), (np.inf, 0.0), (1.0, 2000.0)], (np.nan, 0.0)),
        ([(1.0, 5.0), (np.nan, 0.0)], (np.nan, 0.0)),
        ([(1.5, 2000.0), (np.inf, 0.0), (0.0, -np.inf)], (np.inf, 0.0)),
        ([(0.0, -np.inf), (1.25, -3.0), (0.0, -np.inf)], (1.25, -3.0)),
        ([(0.0, -np.inf)] * 3, (0.0, -np.inf)),
        ([(1.0, 1.7e308), (1.0, -1.7e308)], (1.0, 1.7e308)),  # E_k - E overflows to -inf: 2**-inf = 0
    ]
    for pairs, expected in rules:
        mantissa, exponent = two_pass.merge_pairs(pairs)
        np.testing.assert_array_equal([mantissa, exponent], expected)
    # Element by element over arrays: each column follows its own rule.
    columns = [(np.array([np.nan, 1.0, 0.0, 1.0]), np.array([0.0, 9.0, -np.inf, 1.0])),
               (np.array([np.inf, np.inf, 0.0, 1.0]), np.array([0.0, 0.0, -np.inf, 1.0]))]
    mantissa, exponent = two_pass.merge_pairs(columns)
    np.testing.assert_array_equal(mantissa, [np.nan, np.inf, 0.0, 2.0])
    np.testing.assert_array_equal(exponent, [0.0, 0.0, -np.inf, 1.0])


# Large values: exps beyond float32 (1e4), pairs from the exact path, or saturated (float64 1.5e308).
LARGE = {np.float32: [1e4, 1e30, 3e38, FLT_MAX], np.float64: [1e4, 1e300, 1e308, 1.5e308, DBL_MAX]}


@st.composite
def rows_with_cuts(draw):
    """(x, cuts): 1 to 3 rows of up to 16 values, ordinary ones, NaN, +-inf and large values of
    either sign, float32 or float64; 0 to 4 cuts, a repeated cut giving an empty part. The large
    values are a few, far apart: a pair's exponent is max * log2(e) rounded, so two huge maxima
    an ULP or so apart (whose exps differ by a factor like e^-1e284) can share one."""
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    special = [np.nan, np.inf, -np.inf] + [sign * v for v in LARGE[dtype] for sign in (1, -1)]
    n = draw(st.integers(0, 16))
    x = draw(hnp.arrays(dtype, (draw(st.integers(1, 3)), n),
                        elements=st.one_of(st.floats(-100, 100, width=32), st.sampled_from(special))))
    return x, draw(st.lists(st.integers(0, n), max_size=4))


@settings(max_examples=examples(200), deadline=None)
@given(case=rows_with_cuts())
def test_merged_parts_give_the_whole_row(case):
    x, cuts = case
    for backend in softmaxlib.backends():
        assert_same_pair(merged_parts(x, cuts, backend), two_pass.sum_exp_pair(x, backend=backend))

"""The oracles of tests/oracle.py against independent computations: SciPy, exact fractions and
brute-force searches, so that the references every other suite trusts are checked themselves."""
import math
from fractions import Fraction

import numpy as np
import pytest
import scipy.special

import oracle
from softmaxlib import quant
from zoo import DISTRIBUTIONS, make_rows


def test_softmax_matches_scipy_on_finite_rows():
    for distribution in DISTRIBUTIONS:
        x = make_rows(distribution, 1000)[:8]
        np.testing.assert_allclose(oracle.softmax(x), scipy.special.softmax(x.astype(np.float64), axis=-1),
                                   rtol=1e-13, atol=0)
        np.testing.assert_allclose(oracle.log_softmax(x), scipy.special.log_softmax(x.astype(np.float64), axis=-1),
                                   rtol=1e-13, atol=1e-13)
        with np.errstate(over="ignore"):  # U(-1000, 1000): inf
            np.testing.assert_allclose(oracle.sum_exp(x), np.exp(x.astype(np.float64)).sum(axis=-1), rtol=1e-13)


@pytest.mark.parametrize("name", ["softmax", "log_softmax", "stablemax", "log_stablemax"])
def test_special_rows_axes_and_shapes(name):
    """docs/semantics.md: NaN rows, the +inf limit, rows of only -inf, 0-d input, empty axes, any axis."""
    reference = getattr(oracle, name)
    is_log = name.startswith("log_")
    x = np.array([[np.inf, 0.0, np.inf], [1.0, np.nan, 2.0], [-np.inf] * 3, [0.0, -np.inf, 0.0]])
    y = reference(x)
    expected_inf = [-math.log(2), -np.inf, -math.log(2)] if is_log else [0.5, 0.0, 0.5]
    np.testing.assert_array_equal(y[0], expected_inf)
    assert np.isnan(y[1]).all() and np.isnan(y[2]).all()
    np.testing.assert_array_equal(y[3], expected_inf)
    assert reference(np.float32(3.0)) == (0.0 if is_log else 1.0) and reference(np.float32(3.0)).shape == ()
    assert reference(np.zeros((2, 0, 3)), axis=1).shape == (2, 0, 3)
    z = np.random.default_rng(1).standard_normal((3, 4, 5))
    for axis in range(-3, 3):
        # the oracle's axis handling against NumPy's own, row by row
        np.testing.assert_array_equal(reference(z, axis=axis), np.apply_along_axis(reference, axis, z))


def test_stablemax_matches_exact_fractions():
    def s(v):
        v = Fraction(float(v))
        return v + 1 if v >= 0 else 1 / (1 - v)

    rng = np.random.default_rng(7)
    for x in (rng.standard_normal(50) * 30, np.array([-1e30, 0.0, 1e-300, 7.0, -0.5])):
        weights = [s(v) for v in x]
        total = sum(weights)
        np.testing.assert_allclose(oracle.stablemax(x), [float(w / total) for w in weights], rtol=1e-15, atol=0)
        np.testing.assert_allclose(oracle.log_stablemax(x), [math.log(w / total) for w in weights], rtol=1e-14)
    labels = np.array([3, 0])
    x = rng.standard_normal((2, 9)) * 5
    losses, grad = oracle.stablemax_cross_entropy(x, labels)
    for row, label, loss, g in zip(x, labels, losses, grad):
        weights = [s(v) for v in row]
        total = sum(weights)
        assert loss == pytest.approx(math.log(total / weights[label]), rel=1e-14)
        exact = [float((w / total - (i == label)) / (1 + abs(Fraction(float(v))))) for i, (w, v) in
                 enumerate(zip(weights, row))]
        np.testing.assert_allclose(g, exact, rtol=1e-13, atol=1e-300)


def test_codes_are_the_nearest_by_brute_force():
    code = quant.create_dynamic_map()
    rng = np.random.default_rng(3)
    y = np.concatenate([rng.uniform(-1, 1, 5000), (code[:-1].astype(np.float64) + code[1:]) / 2,
                        [np.nan, np.inf, -np.inf, 0.0, -0.0]]).astype(np.float32)
    distance = np.abs(np.nan_to_num(y.astype(np.float64), posinf=2, neginf=-2)[:, None] - code[None, :].astype(np.float64))
    expected = np.where(np.isnan(y), oracle.zero_code(code), np.argmin(distance, axis=1))  # argmin: ties to the lower
    np.testing.assert_array_equal(oracle.codes(y, code), expected)
    assert code[oracle.zero_code(code)] == 0


def test_quantize_and_dequantize_by_the_definition():
    code = quant.create_dynamic_map()
    x = np.random.default_rng(5).standard_normal((3, 50)).astype(np.float32)
    x[0, :16] = 0  # an all-zero block
    q, absmax = oracle.quantize_blockwise(x, code, 16)
    assert q.shape == x.shape and q.dtype == np.uint8 and absmax.shape == (10,)
    flat = x.reshape(-1)
    np.testing.assert_array_equal(absmax, [np.abs(flat[b:b + 16]).max() for b in range(0, flat.size, 16)])
    assert absmax[0] == 0 and (q.reshape(-1)[:16] == oracle.zero_code(code)).all()
    y = oracle.dequantize_blockwise(q, absmax, 16, code)
    assert y.dtype == np.float32 and y.shape == x.shape and (y.reshape(-1)[:16] == 0).all()
    assert np.abs(y - x).max() <= np.abs(x).max() * 0.1
    assert np.isnan(oracle.dequantize_blockwise(q, np.where(np.arange(10) == 2, np.inf, absmax), 16, code)
                    .reshape(-1)[32:48]).all()


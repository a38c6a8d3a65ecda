"""StableMax cross-entropy (with its closed-form gradient) and the Softmax Collapse diagnostics."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import softmaxlib
from conftest import examples
from oracle import stablemax_cross_entropy as loss_reference
from softmaxlib import _bindings, diagnostics, stablemax
from softmaxlib.stablemax import stablemax_cross_entropy
from zoo import place

PRECISION_BITS = {np.float16: 11, np.float32: 24, np.float64: 53}


@pytest.mark.parametrize("n", [13, 100, 1000])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_losses_and_gradients_match_the_reference(dtype, n, backend, rng):
    x = (rng.standard_normal((50, n)) * 20).astype(dtype)
    labels = rng.integers(0, n, 50)
    losses, grad = loss_reference(x, labels)
    np.testing.assert_allclose(stablemax_cross_entropy(x, labels, reduction="none", backend=backend), losses,
                               rtol=1e-13)
    for reduction, scale in (("mean", 1 / 50), ("sum", 1.0), ("none", 1.0)):
        loss, g = stablemax_cross_entropy(x, labels, reduction=reduction, return_grad=True, backend=backend)
        assert g.dtype == dtype and g.shape == x.shape
        np.testing.assert_allclose(g, grad * scale, rtol=1e-6 if dtype == np.float32 else 1e-13, atol=1e-12)
        if reduction != "none":
            assert isinstance(loss, np.float64)
            np.testing.assert_allclose(loss, losses.sum() * scale, rtol=1e-13)


def test_gradient_matches_finite_differences(rng):
    x = rng.standard_normal((4, 6)) * 3
    labels = np.array([0, 5, 2, 2])
    _, grad = stablemax_cross_entropy(x, labels, return_grad=True)
    step = 1e-6
    numeric = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[index] += step
        down[index] -= step
        numeric[index] = (stablemax_cross_entropy(up, labels) - stablemax_cross_entropy(down, labels)) / (2 * step)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-9)


def test_x_equal_to_one_has_a_finite_gradient(backend):
    """where(x >= 0, x + 1, 1 / (1 - x)) differentiated by autograd evaluates 1 / (1 - x)^2 at x = 1:
    inf times a zero mask is NaN. The closed form has no such branch."""
    x = np.array([[1.0, 0.0, -1.0]], np.float32)
    loss, grad = stablemax_cross_entropy(x, np.array([0]), return_grad=True, backend=backend)
    assert np.isfinite(loss) and np.isfinite(grad).all()
    p = stablemax.stablemax(x.astype(np.float64))
    np.testing.assert_allclose(grad, (p - [1, 0, 0]) / [2, 1, 2], rtol=1e-7)


@settings(max_examples=examples(100), deadline=None)
@given(top=st.floats(100, 1e4), n=st.integers(2, 200), spread=st.floats(90, 1e4))
def test_gradient_survives_where_softmax_collapses(top, n, spread):
    """float32 logits with |x| <= 1e4 where the softmax cross-entropy gradient of the correct class is
    exactly 0 (all others >= 90 below it): StableMax's is not."""
    x = np.full((1, n), max(top - spread, -1e4), np.float32)
    x[0, 0] = top
    shifted = x - x.max()
    softmax_p = np.exp(shifted) / np.exp(shifted).sum(dtype=np.float32)
    assert softmax_p[0, 0] - np.float32(1) == 0  # softmax has collapsed: its gradient is 0 there
    for backend in softmaxlib.backends():
        _, grad = stablemax_cross_entropy(x, np.array([0]), return_grad=True, backend=backend)
        assert grad[0, 0] < 0 and np.isfinite(grad).all()


def test_ignore_index_and_axis(backend, rng):
    x = rng.standard_normal((3, 7, 4)).astype(np.float32)  # classes along axis 1
    labels = rng.integers(0, 7, (3, 4))
    labels[1, 2] = -100
    loss, grad = stablemax_cross_entropy(x, labels, axis=1, ignore_index=-100, return_grad=True, backend=backend)
    rows = np.moveaxis(x, 1, -1).reshape(-1, 7)
    flat = labels.reshape(-1)
    keep = flat != -100
    losses, expected = loss_reference(rows[keep], flat[keep])
    np.testing.assert_allclose(loss, losses.mean(), rtol=1e-12)
    grad_rows = np.moveaxis(grad, 1, -1).reshape(-1, 7)
    assert np.all(grad_rows[~keep] == 0)
    np.testing.assert_allclose(grad_rows[keep], expected / keep.sum(), rtol=1e-6, atol=1e-12)
    assert np.isnan(stablemax_cross_entropy(x[:1, :, :1], labels[:1, :1] * 0 - 100, axis=1, ignore_index=-100,
                                            backend=backend))


@pytest.mark.subnormal  # the gradients of the huge rows are near 1e-39
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_special_values(dtype, backend):
    x = np.array([[np.inf, 1.0, np.inf], [np.nan, 1.0, 2.0], [-np.inf, 0.0, 1.0], [np.inf, 0.0, 1.0],
                  [-np.inf] * 3, [-3e38, -1e38, 1.0], [3e38, 3e38, 0.0]], dtype)
    labels = np.array([0, 1, 0, 1, 0, 1, 2])
    losses, grad = stablemax_cross_entropy(x, labels, reduction="none", return_grad=True, backend=backend)
    assert losses[0] == pytest.approx(math.log(2)) and np.isnan(losses[1])
    assert losses[2] == np.inf and losses[3] == np.inf and np.isnan(losses[4])
    np.testing.assert_array_equal(grad[0], [0, 0, 0])  # the label holds its share of the mass: nothing to move
    np.testing.assert_array_equal(grad[3], [0, -1, 0])  # (p - onehot) / (1 + |x|), p = [1, 0, 0], label 1
    assert np.isnan(grad[1]).all() and np.isnan(grad[4]).all()
    expected_losses, expected_grad = loss_reference(x[5:].astype(np.float64), labels[5:])
    np.testing.assert_allclose(losses[5:], expected_losses, rtol=1e-13)
    np.testing.assert_allclose(grad[5:], expected_grad, rtol=1e-6, atol=1e-45)


def test_backends_agree(rng):
    x = (rng.standard_normal((20, 300)) * 50).astype(np.float32)
    labels = rng.integers(0, 300, 20)
    results = {b: stablemax_cross_entropy(x, labels, return_grad=True, backend=b) for b in softmaxlib.backends()}
    for loss, grad in results.values():
        np.testing.assert_allclose(loss, results["numba"][0], rtol=1e-14)
        np.testing.assert_allclose(grad, results["numba"][1], rtol=4 * 2.0**-23, atol=1e-45)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(reduction="avg"), ValueError, "reduction must be one of 'mean', 'sum', 'none', not 'avg'"),
    (dict(labels=np.array([0.0, 1.0])), TypeError, "labels must be integer class indices"),
    (dict(labels=np.array([0, 1, 2])), ValueError, r"labels have shape \(3,\)"),
    (dict(labels=np.array([0, 3])), ValueError, r"label 3 at index \(1,\) is out of range for 3 classes"),
    (dict(labels=np.array([-1, 0])), ValueError, "label -1 at index"),
    (dict(logits=np.float32(1)), ValueError, "at least one dimension"),
])
def test_bad_input(kwargs, error, message):
    arguments = dict(logits=np.zeros((2, 3), np.float32), labels=np.array([0, 1]))
    arguments.update(kwargs)
    logits, labels = arguments.pop("logits"), arguments.pop("labels")
    with pytest.raises(error, match=message):
        stablemax_cross_entropy(logits, labels, **arguments)


# --------------------------------------------------------------- Softmax Collapse diagnostics

@settings(max_examples=examples(150), deadline=None)
@given(dtype=st.sampled_from(list(PRECISION_BITS)), n=st.integers(2, 300), extra=st.floats(0.05, 30),
       rows=st.integers(1, 4))
def test_collapse_bands(dtype, n, extra, rows):
    """The paper's bands, with a margin `extra` >= 0.05 for the rounding of exp(-gap) in `dtype`
    (float16's exps near 2^-11 / n are subnormal, up to ~2 % off)."""
    p = PRECISION_BITS[dtype]
    for gap, collapsed in ((p * math.log(2) + math.log(n - 1) + extra, 1.0), (p * math.log(2) - extra, 0.0)):
        if gap <= 0:
            continue
        x = np.full((rows, n), -gap, dtype)
        x[:, n // 2] = 0
        assert diagnostics.softmax_collapse_fraction(x, dtype=dtype) == collapsed
        assert diagnostics.zero_loss_fraction(x, np.full(rows, n // 2), dtype=dtype) == collapsed


def test_fractions_count_rows_and_wrong_labels():
    x = np.array([[0.0, -30.0, -30.0], [0.0, -1.0, -1.0], [0.0, -30.0, -30.0], [np.nan, 0.0, 0.0]])
    assert diagnostics.softmax_collapse_fraction(x) == 0.5
    assert diagnostics.zero_loss_fraction(x, np.array([0, 0, 1, 0])) == 0.25  # a wrong label is never 0 loss
    assert diagnostics.softmax_collapse_fraction(x.T, axis=0) == 0.5


def test_stablemax_margin():
    top = np.array([[1e3], [1e4], [1e5]], np.float32)
    x = np.concatenate([top, np.repeat(-top, 112, axis=1)], axis=1)  # n = 113, the others at -top
    margin = diagnostics.stablemax_margin(x)
    assert margin[0] > margin[1] > 0 > margin[2]  # collapse between 1e4 and 1e5 (near 3.3e4)
    s = stablemax.s(x[2].astype(np.float32))
    assert np.float32(s[0]) + np.float32(s[1:].sum()) == np.float32(s[0])  # collapsed: the others vanish


@pytest.mark.parametrize("function", [diagnostics.softmax_collapse_fraction, diagnostics.stablemax_margin])
def test_diagnostics_bad_input(function):
    with pytest.raises(TypeError, match="dtype must be float16, float32 or float64"):
        function(np.zeros((2, 3)), dtype=np.int32)
    with pytest.raises(ValueError, match="at least one class"):
        function(np.zeros((2, 0)))
    with pytest.raises(TypeError, match="real numbers"):
        function(np.zeros((2, 3), complex))


def test_kernel_stays_within_rows(buffers, backend, rng):
    """x and grad end at (or start right after) a PROT_NONE page: nothing outside the rows is touched."""
    x_area, grad_area = buffers
    kernel = _bindings.bound("stablemax_cross_entropy", backend, np.float32)
    for rows, n in [(1, 1), (3, 17), (2, 100), (1, 4097)]:
        values = (rng.standard_normal((rows, n)) * 10).astype(np.float32)
        labels = rng.integers(0, n, rows)
        expected_losses, expected_grad = np.empty(rows), np.empty_like(values)
        kernel(values, labels, -1, 0.5, expected_losses, expected_grad)
        for where in ("start", "end"):
            x = place(x_area, (rows, n), where)
            grad = place(grad_area, (rows, n), where)
            x[...] = values
            losses = np.empty(rows)
            kernel(x, labels, -1, 0.5, losses, grad)
            np.testing.assert_array_equal(losses, expected_losses)
            np.testing.assert_array_equal(grad, expected_grad)


def dominant_label_rows(dtype):
    """(row, label) pairs where the label holds all but a tiny part of the mass, so that
    s_label / sum - 1 and log(sum) - log(s_label) cancel in double."""
    rows = [
        ([1.0, 1e17, 1.0], 1),  # others / sum ~ 4e-17: p - 1 rounds to 0
        ([0.0, 1e30, -5.0], 1),  # ~ 1e-30; float32: the vector path's largest sums
        ([2.0**40, 0.0], 0),  # ~ 2^-40
        ([-3.0, 0.5, 2.0**40, -1e6, 0.0], 2),
        ([1.0, 3e38, 1.0], 1),  # float32: a sum above 2^100 (the double path)
        ([-1e38, 1e20, 1.0], 1),  # float32: an x below -2^125 (the double path)
        ([7.0], 0),  # no other element: loss 0, gradient +0
        (list(-np.arange(1.0, 101.0) ** 2) + [1e12] + list(np.arange(100.0) / 7 - 20), 100),  # vector lanes
    ]
    if dtype == np.float64:
        rows += [([2.0, 1e250, -3.0], 1), ([1.0, 2.0**60, -2.0**60], 1)]
    return rows


@pytest.mark.subnormal  # some of the other elements' gradients are near 3e-39
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dominant_label_loss_and_gradient_do_not_cancel(dtype, backend):
    """Where the label holds all but < 2^-20 of the mass, the loss is log1p(others / s_label) and
    the label's gradient -(others / sum) / (1 + |x|), with others summed over the other elements:
    compared with the exact values (fractions), rounded once."""
    from fractions import Fraction

    def s_exact(v):
        v = Fraction(float(v))
        return v + 1 if v >= 0 else 1 / (1 - v)

    for values, label in dominant_label_rows(dtype):
        x = np.array([values], dtype)
        s = [s_exact(v) for v in x[0]]
        others = sum(s) - s[label]  # exact, no cancellation
        assert others < Fraction(1, 2**20) * sum(s)
        loss_reference = math.log1p(others / s[label])  # others / s_label rounded once
        gradient_reference = -(others / sum(s)) / (1 + abs(Fraction(float(x[0, label]))))
        loss, grad = stablemax_cross_entropy(x, np.array([label]), reduction="none", return_grad=True,
                                             backend=backend)
        assert grad.dtype == dtype
        np.testing.assert_allclose(loss[0], loss_reference, rtol=1e-14, atol=0, err_msg=str(values[:5]))
        expected = dtype(float(gradient_reference))
        rtol = 2.0**-23 if dtype == np.float32 else 1e-14
        np.testing.assert_allclose(grad[0, label], expected, rtol=rtol, atol=0, err_msg=str(values[:5]))
        if others == 0:
            assert loss[0] == 0 and grad[0, label] == 0 and not np.signbit(grad[0, label])
        # the other elements keep p / (1 + |x|), p = s / sum
        rest = [i for i in range(x.shape[1]) if i != label]
        rest_reference = [float(s[i] / sum(s) / (1 + abs(Fraction(float(x[0, i]))))) for i in rest]
        np.testing.assert_allclose(grad[0, rest].astype(np.float64), rest_reference,
                                   rtol=1e-6 if dtype == np.float32 else 1e-13, atol=1e-40)


def test_zero_classes_with_every_row_ignored_or_no_rows():
    losses = stablemax.stablemax_cross_entropy(np.zeros((2, 0), np.float32), np.full(2, -100), ignore_index=-100,
                                               reduction="none")
    np.testing.assert_array_equal(losses, [0.0, 0.0])
    no_rows = stablemax.stablemax_cross_entropy(np.zeros((0, 0), np.float32), np.zeros(0, int), reduction="none")
    assert no_rows.shape == (0,)

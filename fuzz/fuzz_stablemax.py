#!/usr/bin/env python3
"""Fuzz target: StableMax (softmaxlib.stablemax.stablemax / log_stablemax / stablemax_cross_entropy)
on every usable backend.

    python fuzz/fuzz_stablemax.py -max_total_time=60 [corpus folder] [libFuzzer flags]

stablemax and log_stablemax get the inputs and checks of fuzz_softmax.py's row functions, with
docs/stablemax.md's rules (s in place of exp) and bounds (3 ULP; log: 2 eps * max(1, |reference|)).
stablemax_cross_entropy gets logits of any dtype, shape and layout, labels of any integer dtype
(and wrong dtypes and shapes), in and out of range, ignore_index (None, a label, out of range,
huge, not an integer), every reduction (and a wrong one) and return_grad; it is checked against a
float64 evaluation of the documented formulas: the loss -log(s(x_label) / sum s) per row, loss 0
and gradient 0 for ignored rows, "mean" over the rows not ignored (NaN if none), the gradient
(p - onehot) / (1 + |x|) scaled as the loss, in the logits' dtype and shape; special values as
stablemax (a NaN row gives NaN, +inf elements share the mass).
"""
import operator
import os
import sys

import atheris

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# Outputs above 256 bytes take the kernels' non-temporal-store paths (normally above half the
# last-level cache, which no fuzz input reaches), smaller ones the ordinary paths: both are fuzzed.
os.environ.setdefault("SOFTMAXLIB_STREAM_ABOVE_BYTES", "256")

# The Numba twins are compiled, not interpreted: their bytecode is not instrumented (atheris
# excludes exact module names, so each module is listed).
NUMBA_MODULES = ["softmaxlib._numba"] + [
    f"softmaxlib._numba.{name}"
    for name in ("_rows", "_exp", "_log", "exp", "three_pass", "two_pass", "stablemax", "quant")]
with atheris.instrument_imports(include=["softmaxlib"], exclude=NUMBA_MODULES):
    from softmaxlib import stablemax

import numpy as np

import _common as C
from _rows import RowOp, XCase, call, draw_axis, fuzz_row_op, result_dtypes, rows_of, same_outcome

ROW_OPS = [
    RowOp("stablemax.stablemax", stablemax.stablemax, False, 3, stable=True),
    RowOp("stablemax.log_stablemax", stablemax.log_stablemax, True, None, stable=True),
]
LABEL_DTYPES = [np.dtype(t) for t in ("<i8", "<i8", "<i8", "<i4", "<i2", "<i1", "<u1", "<u2", "<u8", ">i8", ">i4")]
REDUCTIONS = ["mean", "mean", "sum", "none", "none", "avg", None, "MEAN"]


class CrossEntropyCase:
    def __init__(self, fdp):
        self.logits = XCase(fdp)
        ndim = len(self.logits.shape)
        self.axis = draw_axis(fdp, ndim)
        try:
            axis = operator.index(self.axis) % max(ndim, 1)
            classes = self.logits.shape[axis] if ndim else 1
            shape = self.logits.shape[:axis] + self.logits.shape[axis + 1:]
        except TypeError:
            classes, shape = 3, self.logits.shape[1:]
        self.classes = classes
        style = fdp.ConsumeIntInRange(0, 19)
        self.labels_style = {0: "float", 1: "bool", 2: "shape", 3: "list"}.get(style, "array")
        if self.labels_style == "shape":
            shape = shape + (1,) if fdp.ConsumeBool() or not shape else shape[:-1]
        self.labels_shape = shape
        self.labels_dtype = C.pick(fdp, LABEL_DTYPES)
        size = int(np.prod(shape, dtype=np.int64))
        values = []
        for _ in range(size):
            roll = fdp.ConsumeIntInRange(0, 19)
            if roll < 17:
                values.append(fdp.ConsumeIntInRange(0, max(classes - 1, 0)))
            elif roll == 17:
                values.append(C.pick(fdp, (-1, -100, classes, classes + 1, 255, 2**15 - 1)))
            else:
                values.append(C.pick(fdp, (2**31 - 1, -2**31, 2**63 - 1, -2**63, 2**64 - 1, 2**63)))
        self.label_values = values
        roll = fdp.ConsumeIntInRange(0, 9)
        if roll < 5:
            self.ignore_index = None
        elif roll < 8:
            self.ignore_index = values[fdp.ConsumeIntInRange(0, len(values) - 1)] if values else -100
        else:
            self.ignore_index = C.pick(fdp, (-100, -1, classes, np.int64(0), np.uint8(1), True, 2**63, 2**70,
                                             -2**64, 1.5, "0", np.float32(0)))
        self.reduction = C.pick(fdp, REDUCTIONS)
        self.return_grad = fdp.ConsumeBool()

    def labels(self):
        if self.labels_style == "list":
            return np.array(self.label_values, dtype=object).reshape(self.labels_shape).tolist() if self.label_values \
                else []
        with np.errstate(all="ignore"):
            wrapped = np.array([v % 2**64 for v in self.label_values], np.uint64).view(np.int64) \
                if self.labels_dtype.kind == "i" else np.array([v % 2**64 for v in self.label_values], np.uint64)
            labels = wrapped.astype(self.labels_dtype).reshape(self.labels_shape)
        if self.labels_style == "float":
            return labels.astype(np.float64)
        if self.labels_style == "bool":
            return labels.astype(bool)
        return labels

    def describe(self):
        return (f"stablemax_cross_entropy axis={self.axis!r} labels={self.labels_style} {self.labels_dtype.str} "
                f"{self.labels_shape} {self.label_values[:16]} ignore_index={self.ignore_index!r} "
                f"reduction={self.reduction!r} return_grad={self.return_grad} {self.logits.describe()}")


def reference_rows(xw, labels, counted):
    """float64 per-row losses and the unscaled gradient (p - onehot) / (1 + |x|), from the
    documented formulas and special values (ignored rows: 0, 0). The sum of s is scaled by its
    largest term, so that it cannot overflow for finite float64 logits either."""
    R, n = xw.shape
    with np.errstate(all="ignore"):
        nan_row = np.isnan(xw).any(1)
        plus_inf = xw == np.inf
        k = plus_inf.sum(1)
        s = np.where(xw >= 0, xw + 1, 1 / (1 - np.minimum(xw, 0)))
        s = np.where(xw == -np.inf, 0.0, s)
        s = np.where((k > 0)[:, None], 0.0, s)
        top = s.max(1, initial=0.0)
        scaled = s / np.where(top > 0, top, 1.0)[:, None]
        total = scaled.sum(1)
        p = scaled / total[:, None]
        p = np.where((k > 0)[:, None], np.where(plus_inf, 1.0 / np.maximum(k, 1)[:, None], 0.0), p)
        undefined = nan_row | ((top == 0) & (k == 0))  # a NaN, or only -inf: 0/0
        p = np.where(undefined[:, None], np.nan, p)
        rows = np.arange(R)
        safe_labels = np.clip(labels, 0, max(n - 1, 0))
        if n:
            s_label = s[rows, safe_labels]
            log_p_label = np.log(s_label) - (np.log(top) + np.log(total))
            log_p_label = np.where(k > 0, np.log(p[rows, safe_labels]), log_p_label)
        else:
            log_p_label = np.full(R, np.nan)
        loss = np.where(undefined, np.nan, -log_p_label)
        grad = p / (1 + np.abs(xw))
        if n:  # the label's p - 1 as -(the others' sum) / sum, without cancellation
            without_label = scaled.copy()
            without_label[rows, safe_labels] = 0
            others = without_label.sum(1) / total
            label_p_minus_one = np.where(k > 0, p[rows, safe_labels] - 1, -others)
            grad[rows, safe_labels] = label_p_minus_one / (1 + np.abs(xw[rows, safe_labels]))
        loss = np.where(counted, loss, 0.0)
        grad = np.where(counted[:, None], grad, 0.0)
    return loss, grad, np.zeros(R, bool)


def check_cross_entropy(name, case, xw, labels_flat, counted, loss, grad, work, result):
    reference, reference_grad, overflow = reference_rows(xw, labels_flat, counted)
    count = int(counted.sum())
    losses = np.asarray(loss, np.float64).reshape(-1) if case.reduction == "none" else None
    if case.reduction == "none":
        C.expect(isinstance(loss, np.ndarray) and loss.dtype == np.float64 and loss.shape == case.labels_shape,
                 lambda: f"{name}: reduction='none' gave {type(loss).__name__} {getattr(loss, 'dtype', '')} "
                         f"{np.shape(loss)}, expected float64 {case.labels_shape}")
        with np.errstate(all="ignore"):
            ignored_bad = ~counted & (losses != 0)
        C.expect(not ignored_bad.any(), lambda: f"{name}: an ignored row's loss must be 0: row "
                                                f"{int(np.argmax(ignored_bad))} gave {losses[int(np.argmax(ignored_bad))]!r}")
        compare_values(name + " (losses)", losses, reference, overflow, 1e-12, xw)
    else:
        C.expect(isinstance(loss, np.float64), lambda: f"{name}: reduction={case.reduction!r} gave "
                                                       f"{type(loss).__name__}, expected numpy.float64")
        with np.errstate(all="ignore"):
            expected = reference.sum() * ((1.0 / count if count else np.nan) if case.reduction == "mean" else 1.0)
        if not overflow.any():
            compare_values(name + f" (reduction {case.reduction})", np.array([float(loss)]), np.array([expected]),
                           np.zeros(1, bool), 1e-11, None)
    if grad is None:
        return
    C.expect(isinstance(grad, np.ndarray) and grad.dtype == result and grad.shape == case.logits.shape,
             lambda: f"{name}: the gradient is {getattr(grad, 'dtype', type(grad).__name__)} {np.shape(grad)}, "
                     f"expected {result} {case.logits.shape}")
    scale = (1.0 / count if count else np.nan) if case.reduction == "mean" else 1.0
    return scale, reference_grad, overflow


def compare_values(name, values, reference, overflow, rtol, xw):
    with np.errstate(all="ignore"):
        nan_ref = np.isnan(reference)
        bad = ~overflow & (nan_ref != np.isnan(values))
        bad |= ~overflow & ~nan_ref & np.isinf(reference) & (values != reference)
        finite = ~overflow & np.isfinite(reference)
        bad |= finite & ~(np.abs(values - reference) <= rtol * np.maximum(1, np.abs(reference)))
    if bad.any():
        i = int(np.argmax(bad))
        row = f" row {C.short(xw[i])}" if xw is not None else ""
        raise C.Finding(f"{name}: value {i} is {values[i]!r}, the float64 formula gives {reference[i]!r}{row}")


def check_gradient(name, grad_rows, reference_grad, scale, counted, overflow, xw, result, labels_flat):
    g = grad_rows.astype(np.float64)
    with np.errstate(all="ignore"):
        expected = reference_grad * scale
        ignored_bad = ~counted[:, None] & (g != 0)
        C.expect(not ignored_bad.any(), lambda: f"{name}: an ignored row's gradient must be 0: row "
                                                f"{int(np.argwhere(ignored_bad)[0][0])} gave {C.short(g[np.argwhere(ignored_bad)[0][0]])}")
        rtol, atol = {np.dtype(np.float64): (1e-12, 1e-300), np.dtype(np.float32): (1e-5, 1e-37)}.get(
            np.dtype(result), (2.0**-9, 2.0**-24))
        live = counted[:, None] & ~overflow[:, None] & np.ones_like(g, bool)
        bad = live & (np.isnan(expected) != np.isnan(g))
        slack = np.zeros_like(g)
        if result == np.float64 and g.shape[1]:
            # float64 logits: p - 1 is computed in float64, where it cancels (docs/stablemax.md's
            # "computed in double, where p - 1 does not cancel" is about float32 logits)
            rows = np.arange(g.shape[0])
            labels = np.clip(labels_flat, 0, g.shape[1] - 1)
            slack[rows, labels] = (g.shape[1] + 4) * 2.0**-52 * abs(scale) / (1 + np.abs(xw[rows, labels]))
        close = np.abs(g - expected) <= rtol * np.abs(expected) + atol + slack
        bad |= live & ~np.isnan(expected) & ~close & ~((g == expected) & np.isinf(g))
    if bad.any():
        r, i = (int(v) for v in np.argwhere(bad)[0])
        raise C.Finding(f"{name}: gradient row {r} = {C.short(xw[r], 16)}, element {i} is {g[r, i]!r}, the formula "
                        f"gives {expected[r, i]!r}")


def fuzz_cross_entropy(fdp):
    case = CrossEntropyCase(fdp)
    dtypes = result_dtypes(case.logits.effective_dtype())
    work, result = dtypes if dtypes else (None, None)
    context = case.describe()
    outcomes, results = {}, {}
    for backend in C.BACKENDS:
        arena = C.Arena()
        x = case.logits.materialize(arena)
        x_copy = np.array(x, copy=True)
        labels = case.labels()
        labels_copy = np.array(labels, copy=True) if isinstance(labels, np.ndarray) else None
        argument = x.tolist() if case.logits.as_list else x
        arena.snapshot()
        value, error = call(stablemax.stablemax_cross_entropy, argument, labels, axis=case.axis,
                            reduction=case.reduction, ignore_index=case.ignore_index, return_grad=case.return_grad,
                            backend=backend)
        outcomes[backend] = (value, error)
        changed = arena.changed()
        C.expect(not changed, lambda: f"{context} backend={backend}: the logits changed: {changed}")
        if labels_copy is not None:
            C.expect(C.same_bits(labels, labels_copy), lambda: f"{context} backend={backend}: the labels changed")
        if error is not None:
            continue
        C.expect(work is not None, lambda: f"{context}: logits of dtype {case.logits.dtype} must raise TypeError")
        loss, grad = value if case.return_grad else (value, None)
        ndim = np.ndim(x_copy)
        ax = operator.index(case.axis) % max(ndim, 1)
        xw = rows_of(C.as_float64(x_copy, work), ax)
        labels_flat = np.asarray(labels).astype(np.int64).reshape(-1) if np.asarray(labels).size else \
            np.zeros(0, np.int64)
        ignore = None if case.ignore_index is None else operator.index(case.ignore_index)
        counted = np.ones(labels_flat.shape, bool) if ignore is None else np.asarray(labels).reshape(-1) != ignore
        out_of_range = counted & ((labels_flat < 0) | (labels_flat >= case.classes))
        C.expect(not out_of_range.any(), lambda: f"{context} backend={backend}: a label out of range did not raise")
        name = f"{context} backend={backend}"
        checked = check_cross_entropy(name, case, xw, labels_flat, counted, loss, grad, work, result)
        if grad is not None:
            scale, reference_grad, overflow = checked
            check_gradient(name, rows_of(grad, ax), reference_grad, scale, counted, overflow, xw, result, labels_flat)
        results[backend] = (np.array(loss, copy=True), None if grad is None else np.array(grad, copy=True))
    same_outcome(context, outcomes)
    if results and work == np.float64:  # one float64 Numba kernel on every backend
        first_loss, first_grad = next(iter(results.values()))
        for backend, (loss, grad) in results.items():
            C.expect(C.same_bits(loss, first_loss) and (grad is None or C.same_bits(grad, first_grad)),
                     lambda: f"{context}: float64 results differ between backends ({backend})")


def TestOneInput(data):
    fdp = atheris.FuzzedDataProvider(data)
    choice = fdp.ConsumeIntInRange(0, 3)
    if choice < len(ROW_OPS):
        op = ROW_OPS[choice]
        fuzz_row_op(fdp, op)
    else:
        fuzz_cross_entropy(fdp)


def warm_up():
    def cross_entropy(x, backend):
        for grad in (False, True):
            stablemax.stablemax_cross_entropy(x, [0, 1], return_grad=grad, backend=backend)

    C.warm_up_row_ops(ROW_OPS, cross_entropy)


if __name__ == "__main__":
    C.fuzz(TestOneInput, warm_up)

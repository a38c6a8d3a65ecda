#!/usr/bin/env python3
"""Fuzz target: the softmax family (softmaxlib.softmax / log_softmax / logsumexp, three_pass.* with
every variant, two_pass.* with sum_exp_pair and merge_pairs) on every usable backend.

    python fuzz/fuzz_softmax.py -max_total_time=60 [corpus folder] [libFuzzer flags]

Inputs: 0-3 dimensional arrays of float16/32/64 (also big-endian), integers and bool, with slices,
negative steps, transposes and misaligned byte offsets, special values (NaN with payloads, +-inf,
+-FLT_MAX, +-DBL_MAX, subnormals, 2^20, the exp cutoff); valid and invalid axes; out= fresh, strided,
misaligned, read-only, of the wrong shape or dtype, x itself, or overlapping x.

Checks (docs/semantics.md, docs/accuracy.md): only TypeError / ValueError (AxisError) escape, and
the same one on every backend; x unchanged unless it is out; no byte written outside out; out is
returned; the result's dtype and shape; the same bits for a contiguous aligned copy of x (up to NaN
sign and payload); the rules of docs/semantics.md on every row; the documented error bounds
(4 ULP for the auto path, reload_exact and two-pass, the x - max analysis for three-pass); float64
results equal bit for bit across backends (one Numba kernel); logsumexp / sum_exp_pair /
merge_pairs special values and values against a float64 reference.
"""
import math
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
    import softmaxlib
    from softmaxlib import three_pass, two_pass

import numpy as np

import _common as C
from _rows import RowOp, XCase, call, draw_axis, fuzz_row_op, result_dtypes, rows_of, same_outcome

LN2 = math.log(2)
SATURATION = float(np.finfo(np.float64).max) * LN2  # ~1.246e308: float64 pairs saturate beyond it


# ulp_bound: the float32 softmax bound the docs give. softmaxlib.softmax, reload_exact and two-pass:
# 4 ULP (README, docs/accuracy.md). Three-pass reload/recompute round x - max: up to 64 ULP for
# |x - max| < 87.3 plus the exp (1.02) and the sum (3); 2 x 64 + 8 covers the sum of such terms too.
THREE_PASS_BOUND = 136
ROW_OPS = [
    RowOp("softmaxlib.softmax", softmaxlib.softmax, False, 4),
    RowOp("softmaxlib.log_softmax", softmaxlib.log_softmax, True, None),
    RowOp("three_pass.softmax[reload]", three_pass.softmax, False, THREE_PASS_BOUND, "reload"),
    RowOp("three_pass.softmax[recompute]", three_pass.softmax, False, THREE_PASS_BOUND, "recompute"),
    RowOp("three_pass.softmax[reload_exact]", three_pass.softmax, False, 4, "reload_exact"),
    RowOp("three_pass.log_softmax[reload]", three_pass.log_softmax, True, None, "reload"),
    RowOp("three_pass.log_softmax[recompute]", three_pass.log_softmax, True, None, "recompute"),
    RowOp("two_pass.softmax", two_pass.softmax, False, 4),
    RowOp("two_pass.log_softmax", two_pass.log_softmax, True, None),
]
OTHER_OPS = ["logsumexp", "sum_exp_pair", "merge_pairs", "merge_pairs_garbage", "bad_arguments"]
BAD_BACKENDS = ["avx512", "AVX2", "", "cuda", 3, None]


def draw_keepdims(fdp):
    return fdp.ConsumeBool()


def lse_reference(xw):
    """float64 log(sum(exp(x))) per row of float64 values."""
    with np.errstate(all="ignore"):
        m = np.where(np.isnan(xw), -np.inf, xw).max(1, initial=-np.inf)
        finite_m = np.where(np.isfinite(m), m, 0.0)
        return finite_m + np.log(np.exp(xw - finite_m[:, None]).sum(1))


def check_lse_values(name, xw, value, work, result):
    """logsumexp's documented special values, and its value against the float64 reference."""
    with np.errstate(all="ignore"):
        n = xw.shape[1]
        nan_row = np.isnan(xw).any(1)
        inf_row = ~nan_row & (xw == np.inf).any(1)
        empty_row = ~nan_row & ~inf_row & ((xw == -np.inf).all(1) if n else np.ones(len(xw), bool))
        normal = ~(nan_row | inf_row | empty_row)
        for mask, expected, what in ((nan_row, None, "NaN for a row with a NaN"), (inf_row, np.inf, "+inf for a row with +inf"),
                                     (empty_row, -np.inf, "-inf for an empty row or only -inf")):
            bad = mask & ~(np.isnan(value) if expected is None else value == expected)
            C.expect(not bad.any(), lambda: f"{name}: logsumexp must be {what}: row {int(np.argmax(bad))} "
                                    f"{C.short(xw[int(np.argmax(bad))])} gave {value[int(np.argmax(bad))]!r}")
        if not normal.any():
            return
        reference = lse_reference(xw)
        tolerance = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 2.0**-20}.get(np.dtype(result), 2.0**-9)
        overflow = (result == np.float16) & (reference > 65519)
        bad = normal & ~overflow & ~(np.abs(value - reference) <= tolerance * np.maximum(1, np.abs(reference)))
        C.expect(not bad.any(), lambda: f"{name}: logsumexp of a row without NaN/+inf is off the float64 reference: row "
                                f"{int(np.argmax(bad))} {C.short(xw[int(np.argmax(bad))])} gave {value[int(np.argmax(bad))]!r}, "
                                f"reference {reference[int(np.argmax(bad))]!r}")


def pair_value(mantissa, exponent):
    with np.errstate(all="ignore"):
        return np.log(mantissa) + np.where(mantissa == 0, 0.0, exponent) * LN2


def check_pair(name, xw, mantissa, exponent, work):
    """sum_exp_pair's documented pairs: (0, -inf), (inf, 0), (nan, 0), an integral exponent, and
    mantissa * 2**exponent = sum(exp(x))."""
    with np.errstate(all="ignore"):
        n = xw.shape[1]
        nan_row = np.isnan(xw).any(1)
        inf_row = ~nan_row & (xw == np.inf).any(1)
        empty_row = ~nan_row & ~inf_row & ((xw == -np.inf).all(1) if n else np.ones(len(xw), bool))
        for mask, m_ok, e_ok, what in (
            (nan_row, np.isnan(mantissa), exponent == 0, "(nan, 0) for a row with a NaN"),
            (inf_row, mantissa == np.inf, exponent == 0, "(inf, 0) for a row with +inf and no NaN"),
            (empty_row, mantissa == 0, exponent == -np.inf, "(0, -inf) for an empty row or only -inf"),
        ):
            bad = mask & ~(m_ok & e_ok)
            C.expect(not bad.any(), lambda: f"{name}: the pair must be {what}: row {int(np.argmax(bad))} "
                                    f"{C.short(xw[int(np.argmax(bad))])} gave ({mantissa[int(np.argmax(bad))]!r}, "
                                    f"{exponent[int(np.argmax(bad))]!r})")
        normal = ~(nan_row | inf_row | empty_row)
        # float64 rows whose max is beyond DBL_MAX ln 2: no pair holds the sum, which saturates as
        # the float64 sum of exp(x) does (docs/semantics.md, "Extreme finite values")
        row_max = np.where(np.isnan(xw), -np.inf, xw).max(1, initial=-np.inf)
        saturated = normal & (work == np.float64) & (np.abs(row_max) > SATURATION)
        for mask, m_ok, e_ok, what in (
            (saturated & (row_max > 0), mantissa == np.inf, exponent == 0, "(inf, 0) for a float64 row whose max "
                                                                           "is above DBL_MAX ln 2"),
            (saturated & (row_max < 0), mantissa == 0, exponent == -np.inf, "(0, -inf) for a float64 row whose "
                                                                            "max is below -DBL_MAX ln 2"),
        ):
            bad = mask & ~(m_ok & e_ok)
            C.expect(not bad.any(), lambda: f"{name}: the pair must saturate to {what}: row {int(np.argmax(bad))} "
                                            f"{C.short(xw[int(np.argmax(bad))])} gave ({mantissa[int(np.argmax(bad))]!r}, "
                                            f"{exponent[int(np.argmax(bad))]!r})")
        normal &= ~saturated
        bad = normal & ~(np.isfinite(exponent) & (exponent == np.floor(exponent)) & (mantissa > 0) & np.isfinite(mantissa))
        C.expect(not bad.any(), lambda: f"{name}: an ordinary row's pair needs a finite positive mantissa and an integral "
                                f"exponent: row {int(np.argmax(bad))} {C.short(xw[int(np.argmax(bad))])} gave "
                                f"({mantissa[int(np.argmax(bad))]!r}, {exponent[int(np.argmax(bad))]!r})")
        if normal.any():
            check_lse_values(name + " (as log(m) + e ln 2)", xw[normal], pair_value(mantissa, exponent)[normal],
                             work, np.float64 if work == np.float64 else np.float32)


def fuzz_reduction(fdp, which):
    case = XCase(fdp)
    axis = draw_axis(fdp, len(case.shape))
    keepdims = draw_keepdims(fdp)
    cuts = [fdp.ConsumeIntInRange(0, 70) for _ in range(fdp.ConsumeIntInRange(0, 4))]
    dtypes = result_dtypes(case.effective_dtype())
    work, result = dtypes if dtypes else (None, None)
    context = f"{which} axis={axis!r} keepdims={keepdims} cuts={cuts} {case.describe()}"
    outcomes, results = {}, {}
    for backend in C.BACKENDS:
        arena = C.Arena()
        x = case.materialize(arena)
        x_copy = np.array(x, copy=True)
        argument = x.tolist() if case.as_list else x
        arena.snapshot()
        if which == "logsumexp":
            value, error = call(softmaxlib.logsumexp, argument, axis=axis, keepdims=keepdims, backend=backend)
        else:
            value, error = call(two_pass.sum_exp_pair, argument, axis=axis, backend=backend)
        outcomes[backend] = (value, error)
        changed = arena.changed()
        C.expect(not changed, lambda: f"{context} backend={backend}: x changed: {changed}")
        if error is not None:
            continue
        C.expect(work is not None, lambda: f"{context}: dtype {case.dtype} must raise TypeError")
        ax = operator.index(axis) % max(np.ndim(x_copy), 1)
        reduced_shape = case.shape[:ax] + case.shape[ax + 1:] if case.shape else ()
        xw = rows_of(C.as_float64(x_copy, work), ax)
        if which == "logsumexp":
            expected_shape = (case.shape[:ax] + (1,) + case.shape[ax + 1:]) if keepdims and case.shape else reduced_shape
            C.expect(np.shape(value) == expected_shape and np.asarray(value).dtype == result,
                     lambda: f"{context} backend={backend}: logsumexp gave {np.asarray(value).dtype} {np.shape(value)}, "
                     f"expected {result} {expected_shape}")
            check_lse_values(f"{context} backend={backend}", xw, np.asarray(value, np.float64).reshape(-1), work, result)
            results[backend] = np.array(value, copy=True)
            continue
        mantissa, exponent = value
        C.expect(np.shape(mantissa) == reduced_shape and np.shape(exponent) == reduced_shape
                 and np.asarray(mantissa).dtype == np.float64 and np.asarray(exponent).dtype == np.float64,
                 lambda: f"{context} backend={backend}: sum_exp_pair gave shapes {np.shape(mantissa)} {np.shape(exponent)}, "
                 f"expected float64 {reduced_shape}")
        m, e = np.asarray(mantissa).reshape(-1), np.asarray(exponent).reshape(-1)
        check_pair(f"{context} backend={backend}", xw, m, e, work)
        results[backend] = np.concatenate([m, e])
        if which == "merge_pairs" and np.ndim(x_copy) >= 1:
            effective = np.asarray(x_copy.tolist()) if case.as_list else np.asarray(x_copy)
            check_merge(f"{context} backend={backend}", effective, ax, cuts, backend, m, e, xw, work)
    same_outcome(context, outcomes)
    if results and work == np.float64:
        first = next(iter(results.values()))
        for backend, value in results.items():
            C.expect(C.same_bits(value, first), lambda: f"{context}: float64 results differ between backends ({backend}): "
                                                f"{C.first_difference(value, first)}")


def check_merge(name, x, axis, cuts, backend, whole_m, whole_e, xw, work):
    """merge_pairs of the pairs of parts of each row is the pair of the whole row."""
    n = x.shape[axis]
    points = sorted(min(c, n) for c in cuts)
    parts = np.split(x, points, axis=axis)
    pairs = [two_pass.sum_exp_pair(part, axis=axis, backend=backend) for part in parts]
    mantissa, exponent = two_pass.merge_pairs(pairs)
    m, e = np.asarray(mantissa, np.float64).reshape(-1), np.asarray(exponent, np.float64).reshape(-1)
    C.expect(m.shape == whole_m.shape and e.shape == whole_e.shape,
             lambda: f"{name}: merge_pairs of the parts at {points} gave shape {np.shape(mantissa)}, expected {whole_m.shape}")
    check_pair(f"{name}: merge_pairs of the parts at {points}", xw, m, e, work)


def fuzz_merge_garbage(fdp):
    """merge_pairs on arbitrary (mantissa, exponent) values and shapes: documented errors only."""
    count = fdp.ConsumeIntInRange(0, 4)
    pairs = []
    for _ in range(count):
        shape = C.draw_shape(fdp, max_ndim=2)
        size = int(np.prod(shape, dtype=np.int64))
        m = C.draw_values(fdp, np.dtype(np.float64), size).reshape(shape)
        e = C.draw_values(fdp, np.dtype(np.float64), size).reshape(shape)
        style = fdp.ConsumeIntInRange(0, 9)
        if style == 0:
            pairs.append((float(m.reshape(-1)[0]) if size else 0.0, float(e.reshape(-1)[0]) if size else 0.0))
        elif style == 1:
            pairs.append((m,))
        elif style == 2:
            pairs.append((m.astype(np.int64) if np.isfinite(m).all() else m, e))
        else:
            pairs.append((m, np.floor(e)))
    try:
        two_pass.merge_pairs(pairs)
    except C.DOCUMENTED_ERRORS:
        pass


def fuzz_bad_arguments(fdp):
    """Unknown backends and variants raise ValueError, whatever the input."""
    case = XCase(fdp)
    x = case.materialize(C.Arena())
    backend = C.pick(fdp, BAD_BACKENDS)
    if backend is None or backend in C.BACKENDS:
        return
    op = C.pick(fdp, ROW_OPS)
    try:
        op(x, backend=backend)
    except ValueError:
        return
    except TypeError:
        C.expect(result_dtypes(case.dtype) is None, lambda: f"backend={backend!r} raised TypeError for {case.describe()}")
        return
    raise C.Finding(f"{op.name}(backend={backend!r}) did not raise ValueError: {case.describe()}")


def TestOneInput(data):
    fdp = atheris.FuzzedDataProvider(data)
    choice = fdp.ConsumeIntInRange(0, len(ROW_OPS) + len(OTHER_OPS) - 1)
    if choice < len(ROW_OPS):
        fuzz_row_op(fdp, ROW_OPS[choice])
        return
    which = OTHER_OPS[choice - len(ROW_OPS)]
    if which in ("logsumexp", "sum_exp_pair", "merge_pairs"):
        fuzz_reduction(fdp, which)
    elif which == "merge_pairs_garbage":
        fuzz_merge_garbage(fdp)
    else:
        fuzz_bad_arguments(fdp)


def warm_up():
    C.warm_up_row_ops(ROW_OPS, lambda x, backend: softmaxlib.logsumexp(x, backend=backend))


if __name__ == "__main__":
    C.fuzz(TestOneInput, warm_up)

"""Row-wise operations for the fuzz targets: x's recipe (XCase), out='s (OutCase), the rules of
docs/semantics.md (softmax) and docs/stablemax.md (StableMax, with s in place of exp) on each row,
the documented error bounds, and fuzz_row_op, which runs one drawn case on every backend."""
import operator

import numpy as np

import _common as C


class RowOp:
    """A public row-wise function with its variant bound, and what the docs promise about it."""

    def __init__(self, name, function, log, ulp_bound, variant=None, stable=False):
        self.name, self.function, self.log, self.ulp_bound, self.variant = name, function, log, ulp_bound, variant
        self.stable = stable  # StableMax's rules and bounds (docs/stablemax.md)

    def __call__(self, x, **kwargs):
        if self.variant is not None:
            kwargs.setdefault("variant", self.variant)
        return self.function(x, **kwargs)


def result_dtypes(dtype):
    """(work dtype, result dtype) per docs/semantics.md's dtype table, or None for a TypeError."""
    if dtype.kind == "f" and dtype.itemsize in (2, 4, 8):
        native = dtype.newbyteorder("=")
        return (np.dtype(np.float32) if dtype.itemsize == 2 else native), native
    if dtype.kind in "biu":
        return np.dtype(np.float64), np.dtype(np.float64)
    return None


# ---------------------------------------------------------------- the case


class XCase:
    """x's recipe: dtype, shape, layout, values, read-only, and whether it is passed as a list."""

    def __init__(self, fdp, min_ndim=0):
        self.dtype = C.draw_dtype(fdp)
        self.shape = C.draw_shape(fdp, min_ndim=min_ndim)
        self.layout = C.Layout(fdp, len(self.shape))
        size = int(np.prod(self.shape, dtype=np.int64))
        self.values = C.draw_values(fdp, self.dtype, size) if self.dtype.kind in "fiub" else None
        self.readonly = fdp.ConsumeIntInRange(0, 9) == 0
        # (a list of an empty array loses its trailing dimensions, so only non-empty ones)
        self.as_list = fdp.ConsumeIntInRange(0, 24) == 0 and self.values is not None and size > 0

    def materialize(self, arena):
        if self.values is None:
            return np.zeros(self.shape, self.dtype)
        x = arena.place(self.shape, self.dtype, self.layout)
        x[...] = self.values.reshape(self.shape)
        if self.readonly:
            x.flags.writeable = False
        return x

    def effective_dtype(self):
        """The dtype the library sees (a list of Python numbers becomes float64, int64 or bool)."""
        if not self.as_list:
            return self.dtype
        return np.asarray(self.values.tolist()).dtype

    def describe(self):
        return (f"x: dtype={self.dtype.str} shape={self.shape} {self.layout.describe()} readonly={self.readonly} "
                f"as_list={self.as_list} values={C.short(self.values) if self.values is not None else None}")


def draw_axis(fdp, ndim):
    roll = fdp.ConsumeIntInRange(0, 19)
    span = max(ndim, 1)
    if roll < 15:
        return fdp.ConsumeIntInRange(-span, span - 1)
    if roll < 17:
        return C.pick(fdp, (span, -span - 1, 7, -9, 2**63, -2**70))
    return C.pick(fdp, (None, 1.0, "0", np.int64(-1), np.uint8(0), np.array(0), (0,), True, np.float32(0)))


OUT_KINDS = ["none"] * 8 + ["fresh"] * 4 + ["x"] * 2 + ["overlap", "reversed", "dtype", "shape", "list", "readonly"]


class OutCase:
    """out='s recipe: none, fresh (any layout), x itself, x reversed, overlapping x's memory at a
    byte shift, of the wrong dtype or shape, a list, or read-only."""

    def __init__(self, fdp, ndim):
        self.kind = C.pick(fdp, OUT_KINDS)
        self.layout = C.Layout(fdp, ndim)
        self.shift = fdp.ConsumeIntInRange(0, 64)
        self.wrong_dtype = C.pick(fdp, [np.dtype(t) for t in ("f4", "f8", "f2", "i4", ">f4", "c8")])
        self.extra_dim = fdp.ConsumeBool()

    def materialize(self, arena, x, result_dtype):
        """The out= argument (None, an array placed in the arena, x or a view of x's memory, a list)."""
        kind = self.kind
        if kind == "none" or not isinstance(x, np.ndarray):
            return None
        shape = x.shape
        dtype = result_dtype or np.dtype(np.float32)
        if kind == "x":
            return x
        if kind == "reversed":
            if x.ndim == 0:
                return x
            return x[(slice(None, None, -1),) * x.ndim]
        if kind == "overlap":
            if not arena.buffers:
                return None
            buffer = arena.buffers[0]
            count = max(x.size, 0)
            offset = min(self.shift, max(len(buffer) - count * dtype.itemsize, 0))
            if count * dtype.itemsize > len(buffer) - offset:
                return np.zeros(shape, dtype)
            return np.frombuffer(buffer, dtype=dtype, count=count, offset=offset).reshape(shape)
        if kind == "dtype":
            dtype = self.wrong_dtype
        if kind == "shape":
            shape = shape + (1,) if self.extra_dim or not shape else shape[:-1] + (shape[-1] + 1,)
        layout = self.layout if len(shape) == len(x.shape) else C.Layout(None, len(shape), plain=True)
        out = arena.place(shape, dtype, layout, fill=C.CANARY)
        out[...] = np.frombuffer(bytes([C.OUT_FILL]) * out.dtype.itemsize, out.dtype)[0]
        if kind == "list":
            return out.tolist()
        if kind == "readonly":
            out.flags.writeable = False
        return out


# ---------------------------------------------------------------- the row rules


def rows_of(array, axis):
    """(R, n) rows of `array` along `axis` (0-d: one row of one element)."""
    array = np.asarray(array)
    if array.ndim == 0:
        return array.reshape(1, 1)
    moved = np.moveaxis(array, axis, -1)
    return moved.reshape(int(np.prod(moved.shape[:-1], dtype=np.int64)), moved.shape[-1])


def at(rows, where):
    r, i = (int(v) for v in np.argwhere(where)[0])
    return f"row {r} = {C.short(rows[r], 16)}, element {i}"


def check_rows(op_name, xw, y, log, work, result, stable=False):
    """docs/semantics.md's rules (and docs/stablemax.md's, with s for exp) on rows xw (float64 values
    the kernel computes from) and their outputs y (result dtype)."""
    R, n = xw.shape
    if R == 0 or n == 0:
        return
    yf = y.astype(np.float64)
    with np.errstate(all="ignore"):
        nan_row = np.isnan(xw).any(1)
        plus_inf = xw == np.inf
        k = plus_inf.sum(1)
        minus_inf = xw == -np.inf
        only_minus_inf = (minus_inf | np.isnan(xw)).all(1)
        # Rules 1 and 3: a NaN, or only -inf (and NaN): all NaN.
        wrong = (nan_row | only_minus_inf)[:, None] & ~np.isnan(yf)
        C.expect(not wrong.any(), lambda: f"{op_name}: a row with a NaN or only -inf must be all NaN: {at(xw, wrong)} "
                                  f"gave {yf[np.argwhere(wrong)[0][0]]}")
        # Rule 4: +inf elements share the mass.
        inf_row = ~nan_row & (k > 0)
        if inf_row.any():
            kk = np.maximum(k, 1)[:, None].astype(np.float64)
            if stable:
                share = -np.log(kk) if log else 1.0 / kk
            else:
                share = np.log(1.0 / kk) if log else 1.0 / kk
            expected = share.astype(work).astype(result).astype(np.float64) * np.ones_like(xw)
            is_share = inf_row[:, None] & plus_inf
            if log:  # a log computed in double and rounded once: allow one ULP of the result dtype
                slack = np.spacing(np.abs(expected).astype(result)).astype(np.float64)
                bad = is_share & ~(np.abs(yf - expected) <= slack)
            else:
                bad = is_share & (yf != expected)
            C.expect(not bad.any(), lambda: f"{op_name}: rule 4, +inf elements get {'log ' if log else ''}1/k: {at(xw, bad)} "
                                    f"gave {yf[tuple(np.argwhere(bad)[0])]!r}, expected {expected[tuple(np.argwhere(bad)[0])]!r}")
            if log and not stable:
                bad = is_share & (k[:, None] == 1) & np.signbit(yf)
                C.expect(not bad.any(), lambda: f"{op_name}: rule 4, log(1/1) must be +0.0: {at(xw, bad)}")
            elsewhere = inf_row[:, None] & ~plus_inf
            bad = elsewhere & ~(yf == (-np.inf if log else 0.0))
            C.expect(not bad.any(), lambda: f"{op_name}: rule 4, the other elements of a row with +inf must be "
                                    f"{'-inf' if log else '0'}: {at(xw, bad)} gave {yf[tuple(np.argwhere(bad)[0])]!r}")
        # Rules 2, 7 and 8: a row whose max is finite.
        ordinary = (~nan_row & (k == 0) & ~only_minus_inf)[:, None] & np.ones_like(xw, bool)
        at_minus_inf = ordinary & minus_inf
        if log:
            bad = at_minus_inf & (yf != -np.inf)
            C.expect(not bad.any(), lambda: f"{op_name}: rule 2, a -inf element's log output must be -inf: {at(xw, bad)}")
        else:
            bad = at_minus_inf & ((yf != 0) | np.signbit(yf))
            C.expect(not bad.any(), lambda: f"{op_name}: rule 2, a -inf element's output must be exactly +0: {at(xw, bad)} "
                                    f"gave {yf[tuple(np.argwhere(bad)[0])]!r}")
        rest = ordinary & ~minus_inf
        if log:
            # finite, unless x_i - max itself overflows (rule 7); and never above 0 (x - max <= 0 and
            # log(sum) >= 0; two-pass caps at 0). float16 may overflow when rounded.
            row_max = np.where(minus_inf, -np.inf, xw).max(1, keepdims=True)
            difference = (xw.astype(work) - row_max.astype(work)).astype(np.float64)
            may_be_minus_inf = np.isinf(difference) | ((result == np.float16) & (difference < -65000))
            if stable:
                may_be_minus_inf = np.zeros_like(rest)
            bad = rest & (np.isnan(yf) | (yf == np.inf) | ((yf == -np.inf) & ~may_be_minus_inf))
            C.expect(not bad.any(), lambda: f"{op_name}: rule 7, log output of a finite row must be finite: {at(xw, bad)} "
                                    f"gave {yf[tuple(np.argwhere(bad)[0])]!r}")
            bad = rest & (yf > 0)
            C.expect(not bad.any(), lambda: f"{op_name}: a log-probability above 0: {at(xw, bad)} gave "
                                    f"{yf[tuple(np.argwhere(bad)[0])]!r}")
        else:
            bad = rest & ~((yf >= 0) & (yf <= 1))
            C.expect(not bad.any(), lambda: f"{op_name}: rule 7, output of a finite row must be finite, in [0, 1]: "
                                    f"{at(xw, bad)} gave {yf[tuple(np.argwhere(bad)[0])]!r}")
            if work == np.float32 and result == np.float32:
                bad = rest & (((yf != 0) & (np.abs(yf) < C.FLT_MIN)) | ((yf == 0) & np.signbit(yf)))
                C.expect(not bad.any(), lambda: f"{op_name}: rule 8, a float32 output is >= FLT_MIN or exactly +0: "
                                        f"{at(xw, bad)} gave {yf[tuple(np.argwhere(bad)[0])]!r}")
        if not stable and n == 1:  # rule 6: a row of one element (as a 0-d input)
            bad = rest & (yf != 0.0 if log else yf != 1.0)
            C.expect(not bad.any(), lambda: f"{op_name}: rule 6, one element gives {0.0 if log else 1.0}: {at(xw, bad)}")
    return ordinary & ~minus_inf


def check_accuracy(op_name, xw, y, rest, ulp_bound, log, stable=False):
    """float32 outputs against a float64 reference, with the documented bounds."""
    if not rest.any():
        return
    with np.errstate(all="ignore"):
        finite_rows = rest.any(1)
        x = np.where(np.isneginf(xw), -np.inf, xw)[finite_rows]
        yf = y.astype(np.float64)[finite_rows]
        keep = rest[finite_rows]
        if stable:
            s = np.where(x >= 0, x + 1, 1 / (1 - np.minimum(x, 0)))
            total = s.sum(1, keepdims=True)
            reference = np.log(s) - np.log(total) if log else s / total
        else:
            m = x.max(1, keepdims=True)
            e = np.exp(x - m)
            total = e.sum(1, keepdims=True)
            reference = (x - m) - np.log(total) if log else e / total
        if log:
            if stable:  # docs/stablemax.md: 2 eps * max(1, |reference|)
                bound = 2 * 2.0**-23 * np.maximum(1, np.abs(reference))
            else:  # gross errors only: a few eps relative to the magnitudes involved (docs/accuracy.md)
                bound = 2.0**-16 * np.maximum.reduce([np.ones_like(x), np.abs(reference), np.abs(x),
                                                      np.abs(np.broadcast_to(x.max(1, keepdims=True), x.shape))])
            overflow = (reference < -C.FLT_MAX) & (yf == -np.inf)  # x_i - max overflows: -inf (rule 7)
            bad = keep & ~overflow & ~(np.abs(yf - reference) <= bound)
            C.expect(not bad.any(), lambda: f"{op_name}: log output off the float64 reference by more than the bound: "
                                    f"{at(x, bad)} gave {yf[tuple(np.argwhere(bad)[0])]!r}, reference "
                                    f"{reference[tuple(np.argwhere(bad)[0])]!r}")
            return
        margin = ulp_bound * 2.0**-23
        below = keep & (reference < C.FLT_MIN * (1 - margin))
        bad = below & (yf != 0)
        C.expect(not bad.any(), lambda: f"{op_name}: rule 8, an output whose true value is below FLT_MIN must be +0: "
                                f"{at(x, bad)} gave {yf[tuple(np.argwhere(bad)[0])]!r}, reference "
                                f"{reference[tuple(np.argwhere(bad)[0])]!r}")
        measured = keep & (reference >= C.FLT_MIN * (1 + margin))
        error = C.ulps32(yf, reference)
        bad = measured & ~(error <= ulp_bound)
        C.expect(not bad.any(), lambda: f"{op_name}: error above the documented {ulp_bound} ULP: {at(x, bad)} gave "
                                f"{yf[tuple(np.argwhere(bad)[0])]!r}, reference {reference[tuple(np.argwhere(bad)[0])]!r} "
                                f"({error[tuple(np.argwhere(bad)[0])]:.2f} ULP)")


# ---------------------------------------------------------------- running a case on every backend


def call(function, *args, **kwargs):
    """(result, None) or (None, documented exception); anything else propagates."""
    try:
        return function(*args, **kwargs), None
    except C.DOCUMENTED_ERRORS as error:
        return None, error


def same_outcome(name, outcomes):
    """Every backend raised the same exception type, or every backend returned."""
    kinds = {backend: (type(error).__name__ if error is not None else "returned") for backend, (_, error) in outcomes.items()}
    C.expect(len(set(kinds.values())) == 1, lambda: f"{name}: the backends disagree: {kinds} "
                                            f"({'; '.join(str(e) for _, e in outcomes.values() if e is not None)})")


BAD_VARIANTS = ["", "Reload", "fused", None, 0, "reload_exact"]


def fuzz_row_op(fdp, op):
    """Draws x, axis, out= and the variant; runs `op` on every backend and checks it."""
    case = XCase(fdp)
    axis = draw_axis(fdp, len(case.shape))
    out_case = OutCase(fdp, len(case.shape))
    variant_roll = fdp.ConsumeIntInRange(0, 29)
    kwargs = {}
    if op.variant is not None and variant_roll == 0:
        kwargs["variant"] = C.pick(fdp, BAD_VARIANTS)
    dtypes = result_dtypes(case.effective_dtype())
    work, result = dtypes if dtypes else (None, None)
    context = f"{op.name} axis={axis!r} out={out_case.kind} kwargs={kwargs} {case.describe()}"
    outcomes, results = {}, {}
    for backend in C.BACKENDS:
        arena = C.Arena()
        x = case.materialize(arena)
        out = out_case.materialize(arena, x, result)
        x_copy = np.array(x, dtype=x.dtype.newbyteorder("=") if x.dtype.byteorder == ">" else x.dtype, copy=True)
        argument = x.tolist() if case.as_list else x
        arena.snapshot()
        y, error = call(op, argument, axis=axis, out=out, backend=backend, **kwargs)
        outcomes[backend] = (y, error)
        changed = arena.changed(out)
        C.expect(not changed, lambda: f"{context} backend={backend}: memory changed outside out: {changed}")
        if error is not None:
            continue
        C.expect(work is not None, lambda: f"{context}: dtype {case.dtype} must raise TypeError")
        if isinstance(out, np.ndarray):
            C.expect(y is out, lambda: f"{context} backend={backend}: out= given, but another array returned")
        C.expect(isinstance(y, np.ndarray) and y.dtype == result and y.shape == case.shape,
                 lambda: f"{context} backend={backend}: result {type(y).__name__} {getattr(y, 'dtype', None)} "
                 f"{getattr(y, 'shape', None)}, expected {result} {case.shape}")
        # The same call on a fresh, aligned, contiguous copy gives the same values (docs/accuracy.md:
        # the result does not depend on the address; NaN sign and payload are unspecified).
        reference = op(np.asarray(x_copy.tolist() if case.as_list else x_copy), axis=axis, backend=backend, **kwargs)
        C.expect(C.same_values(y, reference), lambda: f"{context} backend={backend}: the result differs from the one for a "
                                              f"contiguous copy of x: {C.first_difference(y, reference)}")
        results[backend] = np.array(y, copy=True)
        ax = operator.index(axis) % max(np.ndim(x_copy), 1)
        xw = rows_of(C.as_float64(x_copy, work), ax)
        y_rows = rows_of(y, ax)
        rest = check_rows(f"{context} backend={backend}", xw, y_rows, op.log, work, result, op.stable)
        if work == np.float32 and result == np.float32 and rest is not None:
            check_accuracy(f"{context} backend={backend}", xw, y_rows, rest, op.ulp_bound, op.log, op.stable)
    same_outcome(context, outcomes)
    if results and work == np.float64:
        first = next(iter(results.values()))
        for backend, y in results.items():
            C.expect(C.same_bits(y, first), lambda: f"{context}: float64 results differ between backends "
                                            f"({backend}): {C.first_difference(y, first)}")

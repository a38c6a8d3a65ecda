#!/usr/bin/env python3
"""Fuzz target: 8-bit block-wise quantization (softmaxlib.quant.quantize_blockwise /
dequantize_blockwise, QuantState) on every usable backend.

    python fuzz/fuzz_quant.py -max_total_time=60 [corpus folder] [libFuzzer flags]

Inputs: x as in fuzz_softmax.py (float16/32/64 of any layout, misaligned, special values; other
dtypes for the TypeError); codebooks: the default, create_dynamic_map / create_linear_map with
random (also rejected) arguments, random sorted user maps (duplicates, no zero, huge spread), and
invalid ones (unsorted, NaN, inf, wrong length, integer, 2-d, list, strided); block sizes in and
out of [16, 2^24] and of the wrong type; nonfinite "raise", "propagate" and wrong; out= and
absmax_out= fresh, strided, misaligned, read-only or wrong; and hand-built QuantStates for
dequantize_blockwise (random absmax, codebook, block size, shape and dtype).

Checks (docs/quant.md): documented exceptions only, the same on every backend; x, the codebook and
the codes unchanged; no byte written outside out / absmax_out; the codes and absmax equal, bit for
bit, on every backend and equal a NumPy evaluation of the documented definition (absmax = max |x|
in float32 per block; code = the number of exact midpoints below y = x * (1 / absmax) in float32,
NaN to the zero code); "raise" raises ValueError at a NaN or inf and names the first one;
"propagate" gives the zero code and a NaN dequantization for a non-finite block; the state holds
the block size, shape, dtype, codebook and absmax; dequantize equals code[q] * absmax in float32
rounded to state.dtype, on every backend.
"""
import operator
import os
import re
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
    from softmaxlib import quant

import numpy as np

import _common as C
from _rows import XCase, call, same_outcome

BLOCKSIZES = [16, 16, 17, 31, 32, 33, 64, 64, 100, 256, 4096, 2**24, 15, 0, -16, 2**24 + 1, 2**70, 1.5, True,
              np.int64(64), np.uint8(16), "64", None, np.float64(32)]
NONFINITE = ["raise", "raise", "raise", "propagate", "propagate", "propagate", "ignore", None]


def _valid_blocksize(blocksize):
    if isinstance(blocksize, (bool, np.bool_)):
        return None
    try:
        value = operator.index(blocksize)
    except TypeError:
        return None
    return value if 16 <= value <= 2**24 else None


class CodeCase:
    """A codebook recipe: None (the default map), a built-in map's arguments, or 256 values."""

    def __init__(self, fdp):
        self.kind = C.pick(fdp, ["default"] * 4 + ["dynamic", "linear"] * 2 + ["sorted"] * 3 +
                           ["unsorted", "nonfinite", "length", "int", "float16", "float64", "2d", "list", "strided"])
        self.arguments = (fdp.ConsumeBool(), C.pick(fdp, (1, 2, 3, 4, 5, 6, 7, 7, 8, 0, -1, True, 2.0)),
                          C.pick(fdp, (8, 8, 7, 6, 5, 4, 3, 2, 1, 9, 0, 8.0)), fdp.ConsumeBool())
        values = sorted(C.draw_values(fdp, np.dtype(np.float64), 256).tolist(),
                        key=lambda v: (v != v, v))  # NaN last
        with np.errstate(all="ignore"):
            self.values = np.array(values, np.float64).astype(np.float32)
        self.length = C.pick(fdp, (255, 257, 0, 1, 128))
        self.guard = fdp.ConsumeBool()

    def materialize(self):
        """The code argument (or raises a documented error, as the map constructors may)."""
        kind = self.kind
        signed, exponent_bits, total_bits, add_zero = self.arguments
        if kind == "default":
            return None
        if kind == "dynamic":
            return quant.create_dynamic_map(signed, exponent_bits, total_bits)
        if kind == "linear":
            return quant.create_linear_map(signed, total_bits, add_zero)
        values = self.values
        if kind == "sorted":
            values = np.where(np.isfinite(values), values, np.float32(0.5))
            values = np.sort(values)
        elif kind == "unsorted":
            values = values[::-1].copy() if values[0] != values[-1] else values
        elif kind == "length":
            values = np.resize(np.sort(np.nan_to_num(values)), self.length)
        elif kind == "int":
            values = np.arange(256) - 128
        elif kind == "float16":
            values = np.linspace(-1, 1, 256).astype(np.float16)
        elif kind == "float64":
            values = np.linspace(-1, 1, 256)
        elif kind == "2d":
            values = np.sort(np.nan_to_num(values)).reshape(16, 16)
        elif kind == "list":
            return np.sort(np.nan_to_num(values)).tolist()
        elif kind == "strided":
            return np.repeat(np.sort(np.nan_to_num(values)), 2)[::2]
        if self.guard and isinstance(values, np.ndarray) and values.ndim == 1:  # ends at a PROT_NONE page
            data = C.guarded_bytes(values.nbytes, "end").view(values.dtype)
            data[...] = values
            values = data
        return values


def reference_quantize(flat, blocksize, code):
    """(codes, absmax) by docs/quant.md's definition, in NumPy."""
    midpoints = (code[:-1].astype(np.float64) + code[1:].astype(np.float64)) / 2
    zero_code = int(np.searchsorted(midpoints, 0.0, side="left"))
    codes = np.empty(flat.size, np.uint8)
    absmax = np.empty(-(-flat.size // blocksize), np.float32)
    with np.errstate(all="ignore"):
        for b, start in enumerate(range(0, flat.size, blocksize)):
            block = flat[start:start + blocksize]
            a = np.max(np.abs(block))
            absmax[b] = a
            y = block * (np.float32(1) / a)
            found = np.searchsorted(midpoints, y.astype(np.float64), side="left")
            codes[start:start + blocksize] = np.where(np.isnan(y), zero_code, found)
    return codes, absmax, zero_code


def check_quantized(name, x, flat, blocksize, code, nonfinite, q, state, zero_code, reference):
    codes, absmax, _ = reference
    C.expect(isinstance(q, np.ndarray) and q.dtype == np.uint8 and q.shape == x.shape,
             lambda: f"{name}: codes {getattr(q, 'dtype', type(q).__name__)} {np.shape(q)}, expected uint8 {x.shape}")
    C.expect(isinstance(state, quant.QuantState), lambda: f"{name}: the state is a {type(state).__name__}")
    native = x.dtype.newbyteorder("=")  # a state's dtype is native, whatever x's byte order
    C.expect(state.blocksize == blocksize and tuple(state.shape) == x.shape and np.dtype(state.dtype) == native
             and np.dtype(state.dtype).isnative,
             lambda: f"{name}: the state holds blocksize {state.blocksize}, shape {state.shape}, dtype {state.dtype}; "
                     f"expected {blocksize}, {x.shape}, {native}")
    C.expect(state.absmax.dtype == np.float32 and state.absmax.shape == absmax.shape,
             lambda: f"{name}: absmax {state.absmax.dtype} {state.absmax.shape}, expected float32 {absmax.shape}")
    C.expect(C.same_bits(state.code, code), lambda: f"{name}: the state's codebook differs from the one given")
    C.expect(C.same_values(state.absmax, absmax), lambda: f"{name}: absmax is not max |x| per block: "
                                                          f"{C.first_difference(state.absmax, absmax)}")
    got = q.reshape(-1)
    if not np.array_equal(got, codes):
        i = int(np.flatnonzero(got != codes)[0])
        block = i // blocksize
        raise C.Finding(f"{name}: code {i} is {got[i]}, the definition gives {codes[i]} (x = {flat[i]!r}, absmax "
                        f"{absmax[block]!r}, y = {flat[i] * (np.float32(1) / absmax[block])!r}, codebook around: "
                        f"{C.short(code[max(codes[i] - 2, 0):codes[i] + 3])})")
    if nonfinite == "raise":
        C.expect(np.isfinite(flat).all(), lambda: f"{name}: nonfinite='raise' returned for non-finite input")


def check_raise_message(name, error, x, flat):
    """A ValueError of nonfinite='raise' names the first non-finite element (its index in x)."""
    match = C.ERROR_INDEX.search(str(error))
    if not match or not flat.size:
        return
    bad = np.flatnonzero(~np.isfinite(flat))
    C.expect(bad.size > 0, lambda: f"{name}: raised {error!r} though every element is finite")
    expected = np.unravel_index(int(bad[0]), x.shape) if x.ndim else ()
    named = tuple(int(v) for v in re.findall(r"\d+", match.group(1)))
    C.expect(named == tuple(int(v) for v in expected),
             lambda: f"{name}: the error names x[{match.group(1)}], but the first non-finite element is x{list(expected)}")


def dequantize_reference(q, absmax, blocksize, code, dtype):
    """code[q] * absmax in float32, rounded to dtype; NaN for a block whose absmax is NaN or inf,
    whatever its codes (docs/quant.md)."""
    flat = np.asarray(q).reshape(-1)
    blocks = np.arange(flat.size) // blocksize
    with np.errstate(all="ignore"):
        scale = absmax[blocks]
        values = np.where(np.isfinite(scale), code[flat] * scale, np.float32(np.nan)).astype(np.float32)
        return values.astype(dtype)


class OutPlacement:
    def __init__(self, fdp, ndim):
        self.kind = C.pick(fdp, ["none"] * 5 + ["fresh"] * 3 + ["dtype", "shape", "readonly", "list"])
        self.layout = C.Layout(fdp, ndim)

    def materialize(self, arena, shape, dtype, wrong_dtype):
        if self.kind == "none":
            return None
        if self.kind == "shape":
            shape = tuple(shape) + (1,)
        layout = self.layout if len(shape) == len(self.layout.perm) else C.Layout(None, len(shape), plain=True)
        out = arena.place(shape, wrong_dtype if self.kind == "dtype" else dtype, layout)
        if self.kind == "list":
            return out.tolist()
        if self.kind == "readonly":
            out.flags.writeable = False
        return out


def fuzz_quantize(fdp):
    case = XCase(fdp)
    code_case = CodeCase(fdp)
    blocksize = C.pick(fdp, BLOCKSIZES)
    nonfinite = C.pick(fdp, NONFINITE)
    out_case = OutPlacement(fdp, len(case.shape))
    absmax_case = OutPlacement(fdp, 1)
    out_dtype = np.dtype(np.float32)
    context = (f"quantize_blockwise blocksize={blocksize!r} nonfinite={nonfinite!r} code={code_case.kind} "
               f"{code_case.arguments} out={out_case.kind} absmax_out={absmax_case.kind} {case.describe()}")
    outcomes, results = {}, {}
    for backend in C.BACKENDS:
        try:
            code = code_case.materialize()
        except C.DOCUMENTED_ERRORS:
            return
        arena = C.Arena()
        x = case.materialize(arena)
        argument = x.tolist() if case.as_list else x
        size = int(np.prod(case.shape, dtype=np.int64))
        valid = _valid_blocksize(blocksize)
        blocks = -(-size // valid) if valid else 1
        out = out_case.materialize(arena, case.shape, np.uint8, out_dtype)
        absmax_out = absmax_case.materialize(arena, (blocks,), np.float32, np.dtype(np.float64))
        code_copy = np.array(code, copy=True) if isinstance(code, np.ndarray) else None
        x_array = np.asarray(argument)
        with np.errstate(all="ignore"):
            flat = x_array.reshape(-1).astype(np.float32) if x_array.dtype.kind == "f" else None
        arena.snapshot()
        value, error = call(quant.quantize_blockwise, argument, code, blocksize=blocksize, out=out,
                            absmax_out=absmax_out, nonfinite=nonfinite, backend=backend)
        outcomes[backend] = (value, error)
        changed = arena.changed(out, absmax_out)
        C.expect(not changed, lambda: f"{context} backend={backend}: memory changed outside out / absmax_out: {changed}")
        if code_copy is not None:
            C.expect(C.same_bits(code, code_copy), lambda: f"{context} backend={backend}: the codebook changed")
        if error is not None:
            if isinstance(error, ValueError) and flat is not None:
                check_raise_message(f"{context} backend={backend}", error, x_array, flat)
            continue
        C.expect(x_array.dtype.kind == "f" and x_array.dtype.itemsize in (2, 4, 8),
                 lambda: f"{context}: dtype {x_array.dtype} must raise TypeError")
        C.expect(valid is not None, lambda: f"{context}: blocksize {blocksize!r} must raise")
        q, state = value
        # out= / absmax_out= receive the codes and absmax (the state may hold a contiguous copy)
        if isinstance(out, np.ndarray):
            C.expect(C.same_bits(out, q), lambda: f"{context} backend={backend}: out= does not hold the codes")
        if isinstance(absmax_out, np.ndarray):
            C.expect(C.same_values(absmax_out, state.absmax), lambda: f"{context} backend={backend}: absmax_out= "
                                                                      f"does not hold the state's absmax")
        checked_code = quant.create_dynamic_map() if code is None else np.ascontiguousarray(code, dtype=np.float32)
        reference = reference_quantize(flat, valid, checked_code)
        name = f"{context} backend={backend}"
        check_quantized(name, x_array, flat, valid, checked_code, nonfinite, q, state, reference[2], reference)
        results[backend] = (np.array(q, copy=True), np.array(state.absmax, copy=True))
        check_dequantize(name, q, state, x_array, flat, reference, backend)
    same_outcome(context, outcomes)
    if results:
        first_q, first_absmax = next(iter(results.values()))
        for backend, (q, absmax) in results.items():
            C.expect(C.same_bits(q, first_q) and C.same_bits(absmax, first_absmax),
                     lambda: f"{context}: codes or absmax differ between backends ({backend}): "
                             f"{C.first_difference(q, first_q)}; {C.first_difference(absmax, first_absmax)}")


def check_dequantize(name, q, state, x, flat, reference, backend):
    """Dequantizes the result of a quantize: code[q] * absmax, and docs/quant.md's claims."""
    q_copy = q.copy()
    y = quant.dequantize_blockwise(q, state, backend=backend)
    C.expect(C.same_bits(q, q_copy), lambda: f"{name}: dequantize changed q")
    C.expect(y.dtype == np.dtype(state.dtype) and y.shape == tuple(state.shape),
             lambda: f"{name}: dequantize gave {y.dtype} {y.shape}, expected {state.dtype} {state.shape}")
    expected = dequantize_reference(q, state.absmax, state.blocksize, state.code, np.dtype(state.dtype))
    C.expect(C.same_values(y.reshape(-1), expected), lambda: f"{name}: dequantize is not code[q] * absmax: "
                                                             f"{C.first_difference(y.reshape(-1), expected)}")
    codes, absmax, zero_code = reference
    if not flat.size:
        return
    blocks = np.arange(flat.size) // state.blocksize
    values = y.reshape(-1).astype(np.float64)
    nonfinite_block = ~np.isfinite(absmax)[blocks]
    with np.errstate(all="ignore"):
        bad = nonfinite_block & (codes != zero_code)
        C.expect(not bad.any(), lambda: f"{name}: a non-finite block's codes must be the zero code {zero_code}")
        bad = nonfinite_block & ~np.isnan(values)
        C.expect(not bad.any(), lambda: f"{name}: a non-finite block must dequantize to NaN: element "
                                        f"{int(np.argmax(bad))} gave {values[int(np.argmax(bad))]!r}")
        if state.code[zero_code] == 0:  # the map holds 0: exact zeros come back as exactly 0
            bad = (flat == 0) & ~nonfinite_block & (values != 0)
            C.expect(not bad.any(), lambda: f"{name}: an exact zero must dequantize to exactly 0: element "
                                            f"{int(np.argmax(bad))} gave {values[int(np.argmax(bad))]!r}")


STATE_DTYPES = [np.dtype(t) for t in ("f4", "f4", "f4", "f2", "f8", ">f4", ">f2")] + ["float32", np.int32, None, "foo"]


def check_state(context, state, code, absmax, blocksize, shape):
    """A QuantState that was built holds what docs/quant.md's rules allow, converted exactly."""
    C.expect(isinstance(state.code, np.ndarray) and state.code.dtype == np.float32 and state.code.shape == (256,)
             and state.code.flags.c_contiguous and np.isfinite(state.code).all()
             and not (state.code[1:] < state.code[:-1]).any(),
             lambda: f"{context}: the state's code is not 256 finite sorted float32: {C.describe_array(state.code)}")
    C.expect(code.dtype.kind == "f" and np.array_equal(state.code.astype(np.float64), code.astype(np.float64).reshape(-1)),
             lambda: f"{context}: the state's code is not exactly the code given")
    C.expect(isinstance(state.blocksize, int) and 16 <= state.blocksize <= 2**24 and state.blocksize == blocksize,
             lambda: f"{context}: the state's blocksize is {state.blocksize!r}")
    C.expect(isinstance(state.shape, tuple) and all(isinstance(d, int) and d >= 0 for d in state.shape)
             and list(state.shape) == [int(d) for d in shape],
             lambda: f"{context}: the state's shape is {state.shape!r}")
    C.expect(state.dtype in (np.float16, np.float32, np.float64) and np.dtype(state.dtype).isnative,
             lambda: f"{context}: the state's dtype is {state.dtype!r}")
    size = int(np.prod(state.shape, dtype=np.int64))
    with np.errstate(invalid="ignore"):
        C.expect(isinstance(state.absmax, np.ndarray) and state.absmax.dtype == np.float32
                 and state.absmax.shape == (-(-size // state.blocksize),)
                 and not (state.absmax < 0).any() and absmax.dtype.kind == "f"
                 and C.same_values(state.absmax.astype(np.float64), absmax.astype(np.float64).reshape(-1)),
                 lambda: f"{context}: the state's absmax is {C.describe_array(state.absmax)}")


def fuzz_hand_built_state(fdp):
    """dequantize_blockwise with a QuantState built by hand."""
    shape = C.draw_shape(fdp)
    size = int(np.prod(shape, dtype=np.int64))
    layout = C.Layout(fdp, len(shape))
    q_values = np.frombuffer(fdp.ConsumeBytes(size).ljust(size, b"\0"), np.uint8)
    q_kind = C.pick(fdp, ["array"] * 8 + ["int64", "float32", "list"])
    blocksize = C.pick(fdp, BLOCKSIZES) if fdp.ConsumeIntInRange(0, 3) == 0 else fdp.ConsumeIntInRange(16, 80)
    valid = _valid_blocksize(blocksize)
    blocks = -(-size // valid) if valid else fdp.ConsumeIntInRange(0, 3)
    absmax_kind = C.pick(fdp, ["float32"] * 6 + ["float64", "shape", "list", "int"])
    absmax_values = C.draw_values(fdp, np.dtype(np.float32), blocks + (1 if absmax_kind == "shape" else 0))
    code_case = CodeCase(fdp)
    state_shape_kind = C.pick(fdp, ["same"] * 6 + ["flat", "list", "bigger", "negative"])
    dtype = C.pick(fdp, STATE_DTYPES)
    out_case = OutPlacement(fdp, len(shape))
    try:
        code = code_case.materialize()
    except C.DOCUMENTED_ERRORS:
        return
    if code is None:
        code = quant.create_dynamic_map()
    state_shape = {"same": shape, "flat": (size,), "list": list(shape), "bigger": shape + (2,),
                   "negative": (-1,) + shape}[state_shape_kind]
    absmax = {"float64": absmax_values.astype(np.float64), "list": absmax_values.tolist(),
              "int": np.nan_to_num(absmax_values).astype(np.int64) if np.isfinite(absmax_values).all() else
              absmax_values}.get(absmax_kind, absmax_values)
    context = (f"QuantState(absmax={absmax_kind} {C.short(absmax_values)}, code={code_case.kind} "
               f"{type(code).__name__} {getattr(code, 'dtype', '')} {np.shape(code)}, blocksize={blocksize!r}, "
               f"shape={state_shape!r}, dtype={dtype!r}); dequantize_blockwise(q={q_kind} {shape} {layout.describe()}, "
               f"out={out_case.kind})")
    code_copy, absmax_copy = np.array(code, copy=True), np.array(absmax, copy=True)
    try:
        state = quant.QuantState(absmax=absmax, code=code, blocksize=blocksize, shape=state_shape, dtype=dtype)
    except C.DOCUMENTED_ERRORS:
        return  # docs/quant.md: a QuantState is checked when it is built
    C.expect(C.same_bits(np.asarray(code), code_copy) and C.same_bits(np.asarray(absmax), absmax_copy),
             lambda: f"{context}: building the state changed the arrays given")
    check_state(context, state, code_copy, absmax_copy, blocksize, state_shape)
    outcomes, results = {}, {}
    for backend in C.BACKENDS:
        arena = C.Arena()
        q = arena.place(shape, np.uint8, layout)
        q[...] = q_values.reshape(shape)
        argument = {"int64": q.astype(np.int64), "float32": q.astype(np.float32), "list": q.tolist()}.get(q_kind, q)
        try:
            out_dtype = np.dtype(dtype)
        except TypeError:
            out_dtype = np.dtype(np.float32)
        out = out_case.materialize(arena, tuple(state_shape) if isinstance(state_shape, (tuple, list)) and
                                   all(d >= 0 for d in state_shape) else shape, out_dtype, np.dtype(np.float64))
        arena.snapshot()
        y, error = call(quant.dequantize_blockwise, argument, state, out=out, backend=backend)
        outcomes[backend] = (y, error)
        changed = arena.changed(out)
        C.expect(not changed, lambda: f"{context} backend={backend}: memory changed outside out: {changed}")
        if error is not None:
            continue
        if isinstance(out, np.ndarray):
            C.expect(y is out, lambda: f"{context} backend={backend}: out= given, but another array returned")
        expected = dequantize_reference(np.asarray(argument), state.absmax, state.blocksize, state.code, state.dtype)
        C.expect(y.dtype == state.dtype and y.shape == state.shape and C.same_values(y.reshape(-1), expected),
                 lambda: f"{context} backend={backend}: dequantize is not code[q] * absmax: "
                         f"{C.first_difference(y.reshape(-1), expected)}")
        results[backend] = np.array(y, copy=True)
    same_outcome(context, outcomes)
    if results:
        first = next(iter(results.values()))
        for backend, y in results.items():
            C.expect(C.same_values(y, first), lambda: f"{context}: backends differ ({backend}): "
                                                      f"{C.first_difference(y, first)}")


def TestOneInput(data):
    fdp = atheris.FuzzedDataProvider(data)
    if fdp.ConsumeIntInRange(0, 3) == 0:
        fuzz_hand_built_state(fdp)
    else:
        fuzz_quantize(fdp)


def warm_up():
    """Compile (or load) every Numba kernel before the fuzzer's clock starts."""
    for backend in C.BACKENDS:
        for readonly in (False, True):  # Numba compiles a specialization for read-only arrays
            x = np.linspace(-1, 1, 40, dtype=np.float32)
            x.flags.writeable = not readonly
            q, state = quant.quantize_blockwise(x, blocksize=16, backend=backend)
            q.flags.writeable = not readonly
            quant.dequantize_blockwise(q, state, backend=backend)


if __name__ == "__main__":
    C.fuzz(TestOneInput, warm_up)

"""The one registry of (operation x backend).

Each operation is one entry. The C bindings, the per-call dispatch, the test
parametrization and the benchmarks all iterate over OPERATIONS (row kernels)
and PAIR_REDUCTIONS, and BACKENDS, so a new kernel is added here and nowhere
else.
"""
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from . import _dispatch
from . import _numba_kernels as nk


@dataclass(frozen=True)
class RowOperation:
    """A row-wise float32 kernel: (rows, n) C-contiguous x -> y of the same shape.

    family and function name the public function (softmaxlib.<family>.<function>),
    variant its `variant=` argument (None if it has none). c_symbol names the C
    kernel without its ISA suffix (csrc/softmaxlib.h); numba_f32 is its Numba
    twin and numba_f64 the float64 version, both called as f(x, y).
    traffic_per_element counts the float32 values each element moves through
    memory (reads + writes), for the benchmarks; read_write_per_element, the
    part of them that are values of y (stored, or loaded again to be rescaled). c_symbol_streaming, if set,
    names a kernel with non-temporal stores, which the binding calls instead
    when the output is larger than half the last-level cache.
    """

    name: str
    family: str
    function: str
    variant: Optional[str]
    c_symbol: str
    numba_f32: Callable
    numba_f64: Callable
    traffic_per_element: int
    read_write_per_element: int
    c_symbol_streaming: Optional[str] = None


def _three_pass(function, variant, traffic_per_element, read_write_per_element):
    reload, log_output = variant == "reload", function == "log_softmax"
    return RowOperation(
        f"{function}_{variant}", "three_pass", function, variant, f"sml_f32_{function}_{variant}",
        numba_f32=lambda x, y: nk.three_pass_rows_f32(x, y, reload, log_output),
        numba_f64=lambda x, y: nk.three_pass_rows_f64(x, y, reload, log_output),
        traffic_per_element=traffic_per_element,
        read_write_per_element=read_write_per_element,
    )


def _reload_exact():
    return RowOperation(
        "softmax_reload_exact", "three_pass", "softmax", "reload_exact", "sml_f32_softmax_reload_exact",
        numba_f32=nk.reload_exact_rows_f32,
        numba_f64=lambda x, y: nk.three_pass_rows_f64(x, y, True, False),  # float64 rounds x - max 2^29 times finer
        traffic_per_element=5,  # as reload: x read twice, y stored, loaded and stored again
        read_write_per_element=3,
    )


def _two_pass(function):
    log_output = function == "log_softmax"
    return RowOperation(
        f"{function}_two_pass", "two_pass", function, None, f"sml_f32_{function}_two_pass",
        numba_f32=lambda x, y: nk.two_pass_rows_f32(x, y, log_output),
        # float64 has no pair kernel: libm's exp in float64 (three passes) serves every family
        numba_f64=lambda x, y: nk.three_pass_rows_f64(x, y, True, log_output),
        traffic_per_element=3,  # x read twice, y written once
        read_write_per_element=1,
        c_symbol_streaming=f"sml_f32_{function}_two_pass_stream",
    )


def _stablemax(function):
    log_output = function == "log_stablemax"
    return RowOperation(
        function, "stablemax", function, None, f"sml_f32_{function}",
        numba_f32=lambda x, y: nk.stablemax_rows_f32(x, y, log_output),
        numba_f64=lambda x, y: nk.stablemax_rows_f64(x, y, log_output),
        traffic_per_element=3,  # x read twice (sum; output), y written once
        read_write_per_element=1,
    )


OPERATIONS = {
    op.name: op
    for op in [
        # reload: x read twice (max; exp), y stored, then loaded and stored again (the 1/sum pass)
        _three_pass("softmax", "reload", traffic_per_element=5, read_write_per_element=3),
        # recompute: x read three times, y stored once
        _three_pass("softmax", "recompute", traffic_per_element=4, read_write_per_element=1),
        _three_pass("log_softmax", "reload", traffic_per_element=5, read_write_per_element=3),
        _three_pass("log_softmax", "recompute", traffic_per_element=4, read_write_per_element=1),
        _reload_exact(),
        _two_pass("softmax"),
        _two_pass("log_softmax"),
        _stablemax("stablemax"),
        _stablemax("log_stablemax"),
    ]
}


@dataclass(frozen=True)
class PairReduction:
    """A per-row reduction of (rows, n) float32 x to sum exp(x) = mantissa * 2^exponent,
    called as f(x, mantissa, exponent) with float64 outputs of length rows."""

    name: str
    c_symbol: str
    numba_f32: Callable
    numba_f64: Callable


PAIR_REDUCTIONS = {
    "sum_exp_pair": PairReduction("sum_exp_pair", "sml_f32_sum_exp_pair", nk.sum_exp_pair_rows_f32,
                                  nk.sum_exp_pair_rows_f64),
}

@dataclass(frozen=True)
class LossOperation:
    """A per-row loss of (rows, n) float32 logits with integer labels, called as
    f(x, labels, ignore_index, grad_scale, losses, grad) with float64 losses of length rows
    and grad None or an array of x's shape and dtype (csrc/softmaxlib.h)."""

    name: str
    c_symbol: str
    numba: Callable  # float32 and float64


LOSSES = {
    "stablemax_cross_entropy": LossOperation("stablemax_cross_entropy", "sml_f32_stablemax_cross_entropy",
                                             nk.stablemax_cross_entropy),
}

@dataclass(frozen=True)
class QuantOperation:
    """Block-wise quantize or dequantize over flat arrays (softmaxlib/quant.py):
    codes_of_scaled: f(y float32, SearchTables, q uint8);
    quantize_blockwise: f(x float32, blocksize, SearchTables, q uint8, absmax float32);
    dequantize_blockwise: f(q uint8, absmax float32, blocksize, code float32, out float32)."""

    name: str
    c_symbol: str
    numba: Callable


def _numba_quantize(x, blocksize, tables, q, absmax):
    nk.quantize_blockwise_f32(x, blocksize, tables.table, tables.midpoints, tables.single_compare,
                              np.uint8(tables.zero_code), q, absmax)


def _numba_dequantize(q, absmax, blocksize, code, out):
    nk.dequantize_blockwise_f32(q, code, absmax, blocksize, out)


def _numba_codes_of_scaled(y, tables, q):
    nk.codes_of_scaled(y, tables.table, tables.midpoints, tables.single_compare, np.uint8(tables.zero_code), q)


QUANT_OPERATIONS = {
    # the code search alone, on values already scaled by 1/absmax (exported for the exhaustive test)
    "codes_of_scaled": QuantOperation("codes_of_scaled", "sml_u8_codes_of_scaled", _numba_codes_of_scaled),
    "quantize_blockwise": QuantOperation("quantize_blockwise", "sml_u8_quantize_blockwise", _numba_quantize),
    "dequantize_blockwise": QuantOperation("dequantize_blockwise", "sml_u8_dequantize_blockwise", _numba_dequantize),
}

BACKENDS = _dispatch.ALL_BACKENDS


def _aligned(*arrays):
    """Whether every array starts at a multiple of its item size (None counts as aligned)."""
    return all(array is None or array.flags.aligned for array in arrays)


def _run_realigned(run, arguments, outputs):
    """run(*arguments) with every misaligned array replaced by an aligned copy, and the outputs
    (indices into arguments) copied back. NumPy allows arrays at any byte offset, but C may read
    a float or double only at a multiple of its size (UBSan aborts on the others, and non-temporal
    stores need it); such arrays are rare, so a copy costs less than a second code path."""
    arguments = list(arguments)
    given = {index: arguments[index] for index in outputs}
    for index, argument in enumerate(arguments):
        if isinstance(argument, np.ndarray) and not argument.flags.aligned:
            arguments[index] = np.empty_like(argument) if index in outputs else argument.copy()
    run(*arguments)
    for index, output in given.items():
        if arguments[index] is not output:
            output[...] = arguments[index]


def _c_row_binding(c_function, c_streaming=None):
    ffi = _dispatch.ffi
    stream_above = _dispatch.STREAM_ABOVE_BYTES

    def run(x, y):
        if not _aligned(x, y):
            return _run_realigned(run, (x, y), outputs=(1,))
        function = c_streaming if c_streaming is not None and y.nbytes > stream_above else c_function
        function(x.shape[0], x.shape[1], ffi.from_buffer("float[]", x),
                 ffi.from_buffer("float[]", y, require_writable=True))

    return run


def _c_pair_binding(c_function):
    ffi = _dispatch.ffi

    def run(x, mantissa, exponent):
        if not _aligned(x, mantissa, exponent):
            return _run_realigned(run, (x, mantissa, exponent), outputs=(1, 2))
        c_function(x.shape[0], x.shape[1], ffi.from_buffer("float[]", x),
                   ffi.from_buffer("double[]", mantissa, require_writable=True),
                   ffi.from_buffer("double[]", exponent, require_writable=True))

    return run


def _c_loss_binding(c_function):
    ffi = _dispatch.ffi

    def run(x, labels, ignore_index, grad_scale, losses, grad):
        if not _aligned(x, labels, losses, grad):
            return _run_realigned(run, (x, labels, ignore_index, grad_scale, losses, grad), outputs=(4, 5))
        c_function(x.shape[0], x.shape[1], ffi.from_buffer("float[]", x), ffi.from_buffer("int64_t[]", labels),
                   ignore_index, grad_scale, ffi.from_buffer("double[]", losses, require_writable=True),
                   ffi.NULL if grad is None else ffi.from_buffer("float[]", grad, require_writable=True))

    return run


def _c_function(symbol, backend):
    return getattr(_dispatch.lib, f"{symbol}__{backend}")


def _c_binding(spec, backend):
    if isinstance(spec, PairReduction):
        return _c_pair_binding(_c_function(spec.c_symbol, backend))
    if isinstance(spec, LossOperation):
        return _c_loss_binding(_c_function(spec.c_symbol, backend))
    streaming = spec.c_symbol_streaming and _c_function(spec.c_symbol_streaming, backend)
    return _c_row_binding(_c_function(spec.c_symbol, backend), streaming)


_FLOAT32_KERNELS = {
    (spec.name, backend): (spec.numba if isinstance(spec, LossOperation) else spec.numba_f32) if backend == "numba"
    else _c_binding(spec, backend)
    for table in (OPERATIONS, PAIR_REDUCTIONS, LOSSES)
    for spec in table.values()
    for backend in _dispatch.USABLE_BACKENDS
}


def row_kernel(operation, backend, dtype):
    """The callable f(x, y) computing `operation` over rows, for a usable backend.

    float32 runs the backend's kernel; float64 always runs the float64 Numba
    kernel (there are no float64 SIMD kernels yet).
    """
    if dtype == np.float64:
        return OPERATIONS[operation].numba_f64
    return _FLOAT32_KERNELS[operation, backend]


def pair_kernel(reduction, backend, dtype):
    """The callable f(x, mantissa, exponent) of a pair reduction, as row_kernel."""
    if dtype == np.float64:
        return PAIR_REDUCTIONS[reduction].numba_f64
    return _FLOAT32_KERNELS[reduction, backend]


def loss_kernel(loss, backend, dtype):
    """The callable of a loss (see LossOperation), as row_kernel: float64 takes the Numba kernel."""
    if dtype == np.float64:
        return LOSSES[loss].numba
    return _FLOAT32_KERNELS[loss, backend]


def _c_quant_binding(name, c_function):
    ffi = _dispatch.ffi

    def tables_arguments(tables):
        return (ffi.from_buffer("int32_t[]", tables.table), ffi.from_buffer("float[]", tables.midpoints),
                int(tables.single_compare), tables.zero_code)

    # The tables are built by softmaxlib/_codebooks.py, aligned; the arrays may not be (_run_realigned).
    if name == "codes_of_scaled":
        def run(y, tables, q):
            if not _aligned(y):
                return _run_realigned(run, (y, tables, q), outputs=(2,))
            c_function(y.size, ffi.from_buffer("float[]", y), *tables_arguments(tables),
                       ffi.from_buffer("uint8_t[]", q, require_writable=True))
    elif name == "quantize_blockwise":
        def run(x, blocksize, tables, q, absmax):
            if not _aligned(x, absmax):
                return _run_realigned(run, (x, blocksize, tables, q, absmax), outputs=(3, 4))
            c_function(x.size, ffi.from_buffer("float[]", x), blocksize, *tables_arguments(tables),
                       ffi.from_buffer("uint8_t[]", q, require_writable=True),
                       ffi.from_buffer("float[]", absmax, require_writable=True))
    else:
        stream_above = _dispatch.STREAM_ABOVE_BYTES  # as the two-pass kernels

        def run(q, absmax, blocksize, code, out):
            if not _aligned(absmax, code, out):
                return _run_realigned(run, (q, absmax, blocksize, code, out), outputs=(4,))
            c_function(q.size, ffi.from_buffer("uint8_t[]", q), ffi.from_buffer("float[]", absmax), blocksize,
                       ffi.from_buffer("float[]", code), ffi.from_buffer("float[]", out, require_writable=True),
                       int(out.nbytes > stream_above))
    return run


_QUANT_KERNELS = {
    (name, backend): spec.numba if backend == "numba" else _c_quant_binding(name, _c_function(spec.c_symbol, backend))
    for name, spec in QUANT_OPERATIONS.items()
    for backend in _dispatch.USABLE_BACKENDS
}


def quant_kernel(name, backend):
    """The callable of a QuantOperation for a usable backend (float32 data on every backend)."""
    return _QUANT_KERNELS[name, backend]

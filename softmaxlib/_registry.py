"""The one registry of (operation x backend).

Each operation is one entry. The C bindings, the per-call dispatch, the test
parametrization and the benchmarks all iterate over OPERATIONS and
BACKENDS, so a new kernel is added here and nowhere else.
"""
from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import _dispatch
from . import _numba_kernels as nk


@dataclass(frozen=True)
class RowOperation:
    """A row-wise float32 kernel: (rows, n) C-contiguous x -> y of the same shape.

    c_symbol names the C kernel without its ISA suffix (csrc/softmaxlib.h);
    numba_f32 is its Numba twin and numba_f64 the float64 version, both
    called as f(x, y). traffic_per_element counts the float32 values each
    element moves through memory (reads + writes), for the benchmarks.
    """

    name: str
    family: str
    c_symbol: str
    numba_f32: Callable
    numba_f64: Callable
    traffic_per_element: int


def _three_pass(name, reload, log_output, traffic_per_element):
    return RowOperation(
        name, "three_pass", f"sml_f32_{name}",
        numba_f32=lambda x, y: nk.three_pass_rows_f32(x, y, reload, log_output),
        numba_f64=lambda x, y: nk.three_pass_rows_f64(x, y, reload, log_output),
        traffic_per_element=traffic_per_element,
    )


OPERATIONS = {
    op.name: op
    for op in [
        _three_pass("softmax_reload", reload=True, log_output=False, traffic_per_element=5),
        _three_pass("softmax_recompute", reload=False, log_output=False, traffic_per_element=4),
        _three_pass("log_softmax_reload", reload=True, log_output=True, traffic_per_element=5),
        _three_pass("log_softmax_recompute", reload=False, log_output=True, traffic_per_element=4),
    ]
}

BACKENDS = _dispatch.ALL_BACKENDS


def _c_binding(c_function):
    ffi = _dispatch.ffi

    def run(x, y):
        c_function(x.shape[0], x.shape[1], ffi.from_buffer("float[]", x),
                   ffi.from_buffer("float[]", y, require_writable=True))

    return run


_FLOAT32_KERNELS = {
    (op.name, backend): op.numba_f32 if backend == "numba" else _c_binding(getattr(_dispatch.lib, f"{op.c_symbol}__{backend}"))
    for op in OPERATIONS.values()
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

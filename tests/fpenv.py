"""The floating-point environment of the calling thread (x86 MXCSR), for the tests.

Flush-to-zero (FTZ) makes subnormal results +-0; denormals-are-zero (DAZ) reads subnormal
operands as +-0. Any library in the process may set them (torch.set_flush_denormal(True) does),
and the C and Numba kernels run under whatever the thread has. The sticky flags tell whether an
operation since they were cleared had a subnormal operand (DE) or a tiny result (UE; with FTZ
set, every tiny result, exact or not): on Intel cores each such operation takes a microcode
assist, so kernels must avoid them on inputs whose documented outputs do not need them.
"""
import contextlib

import pytest

from softmaxlib import _dispatch

FLUSH_TO_ZERO = 1 << 15
DENORMALS_ARE_ZERO = 1 << 6
UNDERFLOW_FLAG = 1 << 4
DENORMAL_FLAG = 1 << 1
EXCEPTION_FLAGS = 0x3F

requires_mxcsr = pytest.mark.skipif(_dispatch.lib is None, reason="needs the C extension (x86-64) to reach MXCSR")


@contextlib.contextmanager
def flush_denormals(ftz=True, daz=True):
    """Runs the block with FTZ and DAZ set as asked, then restores MXCSR."""
    saved = _dispatch.lib.sml_get_mxcsr()
    mode = (FLUSH_TO_ZERO if ftz else 0) | (DENORMALS_ARE_ZERO if daz else 0)
    _dispatch.lib.sml_set_mxcsr((saved & ~(FLUSH_TO_ZERO | DENORMALS_ARE_ZERO)) | mode)
    try:
        yield
    finally:
        _dispatch.lib.sml_set_mxcsr(saved)


def subnormal_flags(call):
    """Runs call() with FTZ set (so that exact tiny results count too) and returns the names of
    the flags it raised among 'underflow' and 'denormal operand'."""
    saved = _dispatch.lib.sml_get_mxcsr()
    _dispatch.lib.sml_set_mxcsr((saved & ~(EXCEPTION_FLAGS | DENORMALS_ARE_ZERO)) | FLUSH_TO_ZERO)
    try:
        call()
        raised = _dispatch.lib.sml_get_mxcsr()
    finally:
        _dispatch.lib.sml_set_mxcsr(saved)
    return [name for bit, name in ((UNDERFLOW_FLAG, "underflow"), (DENORMAL_FLAG, "denormal operand")) if raised & bit]

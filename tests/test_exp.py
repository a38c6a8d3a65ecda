"""The vector exp under every softmax kernel, checked over every float32 input that matters.

For each backend, every float32 t in [-87.34, 0] (about 1.1e9 values, ln(FLT_MIN) is -87.3365):
  - exp(t) is within EXP_MAX_ULP of the float64 exp (ULPs of the float32 result), where
    exp(t) >= FLT_MIN, and +0 below the cutoff;
  - monotone: a smaller t never gives a larger exp, so softmax is exactly monotone in x;
  - exp(0) is exactly 1.
Special inputs are checked separately: -inf -> +0, NaN -> NaN, anything below the cutoff -> +0.
"""
import math

import numpy as np
import pytest
from numba import njit

from softmaxlib import _dispatch
from softmaxlib._numba import three_pass as numba_three_pass

EXP_MAX_ULP = 1.02  # measured 1.0134 on every backend (csrc/exp_constants.h)
CHUNK = 1 << 24
FIRST_BITS = 0x80000000  # -0.0; the bits of negative floats grow as t decreases
LAST_BITS = int(np.array(-87.34, dtype=np.float32).view(np.uint32))


def exp_function(backend):
    """f(t, e) computing e = exp(t) with the backend's exp."""
    if backend == "numba":
        return numba_three_pass.f32_exp_nonpositive
    c_function = getattr(_dispatch.lib, f"sml_f32_exp_nonpositive__{backend}")
    ffi = _dispatch.ffi
    return lambda t, e: c_function(t.size, ffi.from_buffer("float[]", t), ffi.from_buffer("float[]", e, require_writable=True))


@njit(cache=True)
def check_chunk(t, e, previous):
    """(worst ULP error, count of increases as t decreases, last e) over a chunk of decreasing t."""
    worst = 0.0
    increases = 0
    flt_min = 2.0**-126
    for i in range(t.size):
        if e[i] > previous:
            increases += 1
        previous = e[i]
        exact = math.exp(np.float64(t[i]))
        if exact >= flt_min:
            ulp = math.ldexp(1.0, math.frexp(exact)[1] - 24)  # spacing of float32 at `exact`
            worst = max(worst, abs(np.float64(e[i]) - exact) / ulp)
        elif e[i] != 0.0:
            worst = np.inf
    return worst, increases, previous


@pytest.mark.slow
def test_exp_is_accurate_and_monotone_over_every_input(backend):
    exp = exp_function(backend)
    worst, increases, previous = 0.0, 0, np.float32(np.inf)
    for start in range(FIRST_BITS, LAST_BITS + 1, CHUNK):
        t = np.arange(start, min(start + CHUNK, LAST_BITS + 1), dtype=np.uint32).view(np.float32)
        e = np.empty_like(t)
        exp(t, e)
        chunk_worst, chunk_increases, previous = check_chunk(t, e, previous)
        worst, increases = max(worst, chunk_worst), increases + chunk_increases
    assert increases == 0
    assert worst <= EXP_MAX_ULP


def test_exp_special_inputs(backend):
    t = np.array([0.0, -0.0, -np.inf, np.nan, -87.336, -87.34, -100.0, -1e30, -3.4e38, -1e-45], np.float32)
    e = np.full_like(t, 7.0)
    exp_function(backend)(t, e)
    assert e[0] == 1.0 and e[1] == 1.0
    assert e[2] == 0.0 and np.isnan(e[3])
    assert e[4] >= np.finfo(np.float32).tiny
    assert np.all(e[5:9] == 0.0) and not np.signbit(e[5:9]).any()
    assert e[9] == 1.0

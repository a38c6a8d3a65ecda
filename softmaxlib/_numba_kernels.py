"""Numba twins of the C kernels: the portable fallback backend and a test oracle.

The float32 twins follow the C kernels step by step (csrc/three_pass_kernels.h):
the same exp (rr2 range reduction, degree-5 polynomial, same constants and
cutoff), the same handling of +inf rows, NaN and -inf, and the same flush of
outputs below FLT_MIN. Two differences, both in the twin's favour or neutral:
the sum of exps is accumulated directly in float64 (the C kernels sum float32
lanes and fold them into a double every 4096 elements), and FMA is emulated in
float64, which rounds twice (exact product, then the sum to double, then to
float) and so may differ from a true FMA in the last bit on rare ties.

The float64 kernels compute in float64 with libm's exp and keep subnormal
outputs exactly; they back float64 input on every backend.
"""
import math

import numpy as np
from numba import njit

f32 = np.float32
LOG2E = f32(float.fromhex("0x1.715476p+0"))
MINUS_LN2_HI = f32(-float.fromhex("0x1.62E43p-1"))
MINUS_LN2_LO = f32(float.fromhex("0x1.05C61p-29"))
EXP_C5 = f32(float.fromhex("0x1.0F9F9Cp-7"))
EXP_C4 = f32(float.fromhex("0x1.573A1Ap-5"))
EXP_C3 = f32(float.fromhex("0x1.555A80p-3"))
EXP_C2 = f32(float.fromhex("0x1.FFFDC6p-2"))
EXP_C1 = f32(float.fromhex("0x1.FFFFF6p-1"))
EXP_CUTOFF = f32(-float.fromhex("0x1.5D589Ep+6"))
FLT_MIN = f32(float.fromhex("0x1p-126"))
ONE = f32(1.0)
ZERO = f32(0.0)


@njit(cache=True, inline="always")
def fma32(a, b, c):
    return f32(np.float64(a) * np.float64(b) + np.float64(c))


@njit(cache=True)
def exp_nonpositive32(t):
    """exp(t) for t <= 0 or NaN in float32, as vf_exp_nonpositive in C."""
    if t != t:
        return t
    if t < EXP_CUTOFF:
        return ZERO
    n = f32(np.rint(t * LOG2E))
    r = fma32(n, MINUS_LN2_HI, t)
    r = fma32(n, MINUS_LN2_LO, r)
    p = fma32(EXP_C5, r, EXP_C4)
    p = fma32(p, r, EXP_C3)
    p = fma32(p, r, EXP_C2)
    p = fma32(p, r, EXP_C1)
    p = fma32(p, r, ONE)
    return p * f32(math.ldexp(1.0, int(n)))


@njit(cache=True)
def flush_below_flt_min(v):
    return ZERO if v < FLT_MIN else v


@njit(cache=True)
def row_max_ignoring_nan(row):
    m = -np.inf
    for v in row:
        if v > m:
            m = v
    return m


@njit(cache=True)
def infinite_row(row, out, log_output):
    """The limit for rows whose max is +inf, as infinite_row() in C."""
    infinities = 0
    nans = 0
    for v in row:
        infinities += v == np.inf
        nans += v != v
    if log_output:
        at_inf, elsewhere = math.log(1.0 / infinities), -np.inf
    else:
        at_inf, elsewhere = 1.0 / infinities, 0.0
    for i in range(row.size):
        out[i] = np.nan if nans else (at_inf if row[i] == np.inf else elsewhere)


@njit(cache=True)
def three_pass_rows_f32(x, y, reload, log_output):
    for r in range(x.shape[0]):
        row, out = x[r], y[r]
        if row.size == 0:
            continue
        m = f32(row_max_ignoring_nan(row))
        if m == np.inf:
            infinite_row(row, out, log_output)
            continue
        total = 0.0
        for i in range(row.size):
            shifted = row[i] - m
            e = exp_nonpositive32(shifted)
            total += e
            if reload:
                out[i] = shifted if log_output else e
        if log_output:
            log_sum = f32(math.log(total))
            for i in range(row.size):
                out[i] = (out[i] if reload else row[i] - m) - log_sum
        else:
            inverse_sum = f32(1.0 / total)
            for i in range(row.size):
                e = out[i] if reload else exp_nonpositive32(row[i] - m)
                out[i] = flush_below_flt_min(e * inverse_sum)


@njit(cache=True)
def three_pass_rows_f64(x, y, reload, log_output):
    for r in range(x.shape[0]):
        row, out = x[r], y[r]
        if row.size == 0:
            continue
        m = row_max_ignoring_nan(row)
        if m == np.inf:
            infinite_row(row, out, log_output)
            continue
        total = 0.0
        for i in range(row.size):
            shifted = row[i] - m
            e = math.exp(shifted)
            total += e
            if reload:
                out[i] = shifted if log_output else e
        if log_output:
            log_sum = math.log(total)
            for i in range(row.size):
                out[i] = (out[i] if reload else row[i] - m) - log_sum
        else:
            inverse_sum = 1.0 / total
            for i in range(row.size):
                out[i] = (out[i] if reload else math.exp(row[i] - m)) * inverse_sum

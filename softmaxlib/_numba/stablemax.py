"""StableMax, log-StableMax and StableMax cross-entropy twins (csrc/stablemax_kernels.h), and
their float64 kernels."""
import math

import numpy as np
from numba import njit

from ._log import log_positive_block
from ._rows import BLOCK, FLT_MIN, ONE, ZERO, f32, flush_below_flt_min, infinite_row, sum_f64

STABLE_EXACT_BELOW = f32(-(2.0**125))  # StableMax: rows with a finite x below it take the float64 path
STABLE_SUM_RANGE = 2.0**100  # StableMax: sums outside [2^-100, 2^100] take the float64 path


@njit(cache=True, nogil=True, error_model="numpy")
def stable_s_block(row, start, k, s):
    """s[:k] = StableMax's s of row[start:start + k] in float32: x + 1 for x >= 0, 1 / (1 - x)
    below (NaN stays NaN). Branch-free, so that LLVM vectorizes it."""
    for i in range(k):
        v = row[start + i]
        below = ONE / (ONE - (v if v < ZERO else ZERO))
        s[i] = below if v < ZERO else v + ONE


@njit(cache=True, nogil=True, error_model="numpy")
def stable_row_exact(row, out, log_output):
    """StableMax of a row in float64, rounded once, as stable_row_exact in C."""
    total = 0.0
    for v in row:
        x = np.float64(v)
        total += x + 1.0 if x >= 0.0 else 1.0 / (1.0 - x)
    log_sum = math.log(total) if total > 0.0 else (-np.inf if total == 0.0 else np.nan)
    for i in range(row.size):
        x = np.float64(row[i])
        s = x + 1.0 if x >= 0.0 else 1.0 / (1.0 - x)
        if log_output:
            out[i] = (math.log(s) if s > 0.0 else (-np.inf if s == 0.0 else np.nan)) - log_sum
        else:
            value = f32(s / total) if total != 0.0 else f32(np.nan)
            out[i] = value if not value < FLT_MIN else ZERO


@njit(cache=True, nogil=True, fastmath={"contract"}, error_model="numpy")
def stablemax_rows_f32(x, y, log_output):
    """StableMax or log-StableMax, as csrc/stablemax_kernels.h, by blocks of BLOCK: s summed in
    float64, then r = s * (1/sum) with 1/sum in two float32 parts; log r while r >= FLT_MIN,
    else -log(1 + |x|) - log sum. Rows out of the comfortable range take the float64 path."""
    s = np.empty(BLOCK, f32)
    argument = np.empty(BLOCK, f32)
    logs = np.empty(BLOCK, f32)
    saved = np.empty(BLOCK, f32)
    for r in range(x.shape[0]):
        row, out = x[r], y[r]
        if row.size == 0:
            continue
        total = 0.0
        low = f32(np.inf)
        for start in range(0, row.size, BLOCK):
            k = min(BLOCK, row.size - start)
            stable_s_block(row, start, k, s)
            total += sum_f64(s, k)
            for i in range(k):
                v = row[start + i]
                low = v if (v < low) & (v > -np.inf) else low
        if total == np.inf:
            infinite_row(row, out, log_output)
            continue
        if low < STABLE_EXACT_BELOW or (not (1.0 / STABLE_SUM_RANGE <= total <= STABLE_SUM_RANGE) and total == total):
            stable_row_exact(row, out, log_output)
            continue
        inverse = 1.0 / total
        inverse_high = f32(inverse)
        inverse_low = f32(inverse - inverse_high)
        log_sum = math.log(total)
        log_high = f32(log_sum)
        log_low = f32(log_sum - log_high)
        for start in range(0, row.size, BLOCK):
            k = min(BLOCK, row.size - start)
            stable_s_block(row, start, k, s)
            for i in range(k):
                s[i] = s[i] * inverse_high + s[i] * inverse_low  # r, one FMA as in C
            if not log_output:
                for i in range(k):
                    out[start + i] = flush_below_flt_min(s[i])
                continue
            for i in range(k):
                argument[i] = abs(row[start + i]) + ONE if s[i] < FLT_MIN else s[i]
            log_positive_block(argument[:k], logs[:k], saved[:k])
            for i in range(k):
                tiny = ((-logs[i]) - log_high) - log_low
                out[start + i] = tiny if s[i] < FLT_MIN else logs[i]


@njit(cache=True, nogil=True, error_model="numpy")
def stablemax_rows_f64(x, y, log_output):
    """StableMax or log-StableMax in float64 (subnormal outputs kept, as every float64 kernel).

    s of a finite x is at most DBL_MAX (x + 1 rounds to x there), but a sum of them can
    overflow: such a row is summed again as s * 2^-64, which no finite row overflows
    (n < 2^63), and s / sum = (s * 2^-64) / (sum * 2^-64) exactly. A row whose scaled sum
    still overflows holds a +inf: it takes the limit, the +inf sharing the mass."""
    for r in range(x.shape[0]):
        row, out = x[r], y[r]
        if row.size == 0:
            continue
        total = 0.0
        for v in row:
            total += v + 1.0 if v >= 0.0 else 1.0 / (1.0 - v)
        scale, log_scale = 1.0, 0.0
        if total == np.inf:
            scale, log_scale = 2.0**-64, -64 * 0.6931471805599453  # ln 2
            total = 0.0
            for v in row:
                total += (v + 1.0 if v >= 0.0 else 1.0 / (1.0 - v)) * scale
            if total == np.inf:
                infinite_row(row, out, log_output)
                continue
        log_sum = (math.log(total) if total > 0.0 else (-np.inf if total == 0.0 else np.nan)) - log_scale
        for i in range(row.size):
            v = row[i]
            s = v + 1.0 if v >= 0.0 else 1.0 / (1.0 - v)
            if log_output:
                out[i] = (math.log(s) if s > 0.0 else (-np.inf if s == 0.0 else np.nan)) - log_sum
            else:
                out[i] = s * scale / total if total != 0.0 else np.nan


@njit(cache=True, nogil=True, error_model="numpy")
def stablemax_cross_entropy_rows(x, labels, ignore_index, losses, grad, grad_scale, want_grad):
    """StableMax cross-entropy of each row of x (float32 or float64), accumulated in float64:
    loss = log(sum s) - log s(x_label). With want_grad, grad = grad_scale * (p - onehot) / (1 + |x|),
    p = s / sum: one reduction and one elementwise sweep per row. Rows labelled ignore_index
    give loss 0 and gradient 0. Rows with +inf take the limit (the +inf share the mass). A finite
    float64 row whose sum overflows is summed again as s * 2^-64, as in stablemax_rows_f64."""
    for r in range(x.shape[0]):
        row = x[r]
        label = labels[r]
        if label == ignore_index:
            losses[r] = 0.0
            if want_grad:
                grad[r] = 0.0
            continue
        total = 0.0
        infinities = 0
        for v in row:
            xv = np.float64(v)
            total += xv + 1.0 if xv >= 0.0 else 1.0 / (1.0 - xv)
            infinities += xv == np.inf
        scale, log_scale = 1.0, 0.0
        if total == np.inf and infinities == 0:
            scale, log_scale = 2.0**-64, -64 * 0.6931471805599453  # ln 2
            total = 0.0
            for v in row:
                xv = np.float64(v)
                total += (xv + 1.0 if xv >= 0.0 else 1.0 / (1.0 - xv)) * scale
        if total == np.inf:  # the limit: the +inf share the mass
            chosen = 1.0 / infinities if row[label] == np.inf else 0.0
            losses[r] = -math.log(chosen) if chosen > 0.0 else np.inf
            if want_grad:
                for i in range(row.size):
                    xv = np.float64(row[i])
                    p = 1.0 / infinities if xv == np.inf else 0.0
                    onehot = 1.0 if i == label else 0.0
                    grad[r, i] = 0.0 if xv == np.inf else grad_scale * (p - onehot) / (1.0 + abs(xv))
            continue
        xc = np.float64(row[label])
        s_label = xc + 1.0 if xc >= 0.0 else 1.0 / (1.0 - xc)
        # The label holds all but < 2^-20 of the mass: p - 1 and log(sum) - log(s_label) cancel,
        # so 1 - p = others / sum and the loss log1p(others / s_label), others summed directly
        # over the other elements (csrc/stablemax_kernels.h, label_dominates).
        dominant = total - s_label * scale < 2.0**-20 * total
        others = 0.0
        if dominant:
            for i in range(row.size):
                if i != label:
                    xv = np.float64(row[i])
                    others += (xv + 1.0 if xv >= 0.0 else 1.0 / (1.0 - xv)) * scale
            losses[r] = math.log1p(others / (s_label * scale))
        else:
            log_sum = math.log(total) - log_scale
            losses[r] = log_sum - math.log(s_label) if s_label > 0.0 else (np.inf if total > 0 else np.nan)
        if want_grad:
            for i in range(row.size):
                xv = np.float64(row[i])
                p = (xv + 1.0 if xv >= 0.0 else 1.0 / (1.0 - xv)) * scale / total
                onehot = 1.0 if i == label else 0.0
                p_minus_onehot = (0.0 - others) / total if dominant and i == label else p - onehot
                grad[r, i] = grad_scale * p_minus_onehot / (1.0 + abs(xv))


def stablemax_cross_entropy(x, labels, ignore_index, grad_scale, losses, grad):
    """The twin form of stablemax_cross_entropy_rows (grad None: no gradient)."""
    want_grad = grad is not None
    stablemax_cross_entropy_rows(x, labels, ignore_index, losses, grad if want_grad else np.empty((0, 0), x.dtype),
                                 grad_scale, want_grad)


# ------------------------------------------------------------------ twins: {dtype}_{kernel id}


def f32_stablemax(x, y):
    stablemax_rows_f32(x, y, False)


def f32_log_stablemax(x, y):
    stablemax_rows_f32(x, y, True)


def f64_stablemax(x, y):
    stablemax_rows_f64(x, y, False)


def f64_log_stablemax(x, y):
    stablemax_rows_f64(x, y, True)


# (x, labels, ignore_index, grad_scale, losses, grad): one kernel for float32 and float64 x
f32_stablemax_cross_entropy = f64_stablemax_cross_entropy = stablemax_cross_entropy

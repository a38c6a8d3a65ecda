"""The float64 references of every catalog kernel, the error measures, and the assertions the
tests share. softmaxlib/_catalog.py names each kernel's reference in its `oracle` field (a
function of this module) and its bound in `tolerance`; tolerance_error measures an output in
the catalog's terms. The test inputs are in tests/zoo.py.

Each reference is one implementation, in float64 NumPy (the quantization ones: exact searches),
with the special-value rules of docs/semantics.md and docs/stablemax.md, vectorized over rows.
"""
import numpy as np
from numba import njit

FLT_MIN = np.finfo(np.float32).tiny
EPS32 = float(np.finfo(np.float32).eps)  # 2^-23

# float32 softmax: max error in ULP of the reference (outputs >= FLT_MIN) on N(0, 1) data, where
# |x - max| < 16: three-pass rounds x - max to float32, which costs at most 2^-21 relative
# (<= 8 ULP), plus <= 2 ULP of the exp and ~1 ULP of the scaling by 1/sum; the C kernels'
# float32 tree sums add at most 3 ULP (test_accuracy.py::test_dominant_element).
SOFTMAX_MAX_ULP = 16
# float32 log_softmax: |y - reference| <= LOG_SOFTMAX_EPS * eps32 * max(1, |reference|).
# (x - max) - log(sum) adds two non-positive terms, so there is no cancellation:
# ~1.5 eps from the three roundings plus the float32 error of the sum; ~1 eps measured.
LOG_SOFTMAX_EPS = 4
# StableMax (docs/stablemax.md; measured in tests/test_stablemax.py): stablemax within 3 ULP,
# log_stablemax within 2 eps32 * max(1, |reference|).
STABLEMAX_MAX_ULP = 3
LOG_STABLEMAX_EPS = 2


# ------------------------------------------------------------------ normalized rows


def _normalized(x, axis, log_output, weights):
    """weights(row) / sum (or its log) along `axis`, with the rules shared by softmax and
    StableMax: a row with a NaN is NaN; a row with k > 0 elements +inf gives 1/k (log: -log k) at
    them and 0 (-inf) elsewhere; otherwise weights(row) = (w, log w), the result w / sum(w) or
    log w - log sum(w) (so a row whose weights are all 0, as a row of only -inf, is NaN). 0-d x is
    one row of one element, as the library treats it."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 0:
        return _normalized(x.reshape(1), -1, log_output, weights).reshape(())
    rows = np.ascontiguousarray(np.moveaxis(x, axis, -1))  # summed along contiguous rows: pairwise
    if rows.size == 0:
        return np.moveaxis(rows, -1, axis)
    with np.errstate(all="ignore"):
        w, log_w = weights(rows)
        total = w.sum(axis=-1, keepdims=True)
        result = log_w - np.log(total) if log_output else w / total
        infinities = rows == np.inf
        k = infinities.sum(axis=-1, keepdims=True)
        if k.any():
            at_inf = -np.log(k) if log_output else 1.0 / k
            limit = np.where(infinities, at_inf, -np.inf if log_output else 0.0)
            result = np.where(k > 0, limit, result)
    result = np.where(np.isnan(rows).any(axis=-1, keepdims=True), np.nan, result)
    return np.moveaxis(result, -1, axis)


def _exp_weights(rows):
    shifted = rows - rows.max(axis=-1, keepdims=True)  # NaN for a row of only -inf, as documented
    return np.exp(shifted), shifted


def softmax_reference(x, axis=-1, log_output=False):
    """Softmax (or log-softmax) in float64 with the semantics of docs/semantics.md."""
    return _normalized(x, axis, log_output, _exp_weights)


def softmax(x, axis=-1):
    return softmax_reference(x, axis)


def log_softmax(x, axis=-1):
    return softmax_reference(x, axis, log_output=True)


def s(x):
    """StableMax's s(x) in float64: x + 1 for x >= 0, 1 / (1 - x) below."""
    x = np.asarray(x, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(x >= 0, x + 1, 1 / (1 - np.minimum(x, 0)))


def _s_weights(rows):
    w = s(rows)
    return w, np.log(w)


def stablemax_reference(x, log_output, axis=-1):
    """float64 StableMax with the special-value rules of docs/semantics.md (s in place of exp)."""
    return _normalized(x, axis, log_output, _s_weights)


def stablemax(x, axis=-1):
    return stablemax_reference(x, False, axis)


def log_stablemax(x, axis=-1):
    return stablemax_reference(x, True, axis)


def stablemax_cross_entropy(x, labels):
    """(per-row loss, gradient (p - onehot) / (1 + |x|)) in float64, for 2-D x with rows along the
    last axis and one label per row."""
    x = np.asarray(x, np.float64)
    weights = s(x)
    p = weights / weights.sum(-1, keepdims=True)
    rows = np.arange(x.shape[0])
    onehot = np.zeros_like(x)
    onehot[rows, labels] = 1
    return -np.log(p[rows, labels]), (p - onehot) / (1 + np.abs(x))


# ------------------------------------------------------------------ exp and its sum


def exp(t):
    """exp in float64 (the reference of the vector exp of the softmax kernels)."""
    return np.exp(np.asarray(t, np.float64))


def sum_exp(x, axis=-1):
    """sum(exp(x)) along `axis` in float64 (inf beyond DBL_MAX): the value mantissa * 2^exponent
    of the pair kernels."""
    with np.errstate(over="ignore"):
        return np.exp(np.asarray(x, np.float64)).sum(axis=axis)


# ------------------------------------------------------------------ 8-bit block-wise quantization


@njit(cache=True)
def _nearest_codes(y, code, zero_code, q):
    """The nearest code to each y, ties to the lower index, by binary search over the exact
    (float64) midpoints: no table, no rounding. NaN gets the zero code."""
    for i in range(y.size):
        if np.isnan(y[i]):
            q[i] = zero_code
            continue
        low, high = 0, 255
        while low < high:
            middle = (low + high) // 2
            if np.float64(y[i]) > (np.float64(code[middle]) + np.float64(code[middle + 1])) / 2:
                low = middle + 1
            else:
                high = middle
        q[i] = low


def zero_code(code):
    """The code whose bucket holds 0 (NaN's code)."""
    code = np.asarray(code, np.float64)
    return int(np.searchsorted((code[:-1] + code[1:]) / 2, 0.0, side="left"))


def codes(y, code, out=None):
    """The codes (uint8) of values already scaled into [-1, 1] (out=: a uint8 array of y.size)."""
    y = np.ascontiguousarray(y, np.float32)
    q = np.empty(y.shape, np.uint8) if out is None else out
    _nearest_codes(y.reshape(-1), np.ascontiguousarray(code, np.float32), zero_code(code), q.reshape(-1))
    return q


def scaled_blocks(x, absmax, blocksize):
    """y = x * fl32(1 / absmax) per block of x flattened in C order (0 where absmax is not > 0):
    the float32 reciprocal, then the product rounded once (through float64, exactly as a float32
    multiply without flush-to-zero)."""
    flat = np.ascontiguousarray(x, np.float32).reshape(-1)
    absmax = np.asarray(absmax, np.float32)
    with np.errstate(under="ignore", divide="ignore", invalid="ignore"):
        inverse = np.where(absmax > 0, np.float32(1) / np.where(absmax > 0, absmax, 1), np.float32(0))
    inverse = np.repeat(inverse.astype(np.float32), blocksize)[:flat.size]
    return (flat.astype(np.float64) * inverse.astype(np.float64)).astype(np.float32)


def quantize_blockwise(x, code, blocksize):
    """(q of x's shape, absmax per block) by the definition (softmaxlib/quant.py): x flattened in
    C order, absmax = max |x| per block, each code the nearest to x * fl32(1/absmax), ties low."""
    flat = np.ascontiguousarray(x, np.float32).reshape(-1)
    blocks = -(-flat.size // blocksize)
    padded = np.zeros(blocks * blocksize, np.float32)
    padded[:flat.size] = flat
    absmax = np.abs(padded.reshape(blocks, blocksize)).max(axis=1) if blocks else np.empty(0, np.float32)
    return codes(scaled_blocks(flat, absmax, blocksize), code).reshape(np.shape(x)), absmax


def dequantize_blockwise(q, absmax, blocksize, code):
    """code[q] * absmax in float32, per block of q flattened in C order; a block whose absmax is
    not finite is NaN."""
    q = np.asarray(q)
    scale = np.repeat(np.asarray(absmax, np.float32), blocksize)[:q.size]
    with np.errstate(invalid="ignore", over="ignore"):
        out = np.asarray(code, np.float32)[q.reshape(-1)] * scale
    out[~np.isfinite(scale)] = np.nan
    return out.reshape(q.shape)


# ------------------------------------------------------------------ 8-bit optimizer steps
# One step of each rule of softmaxlib.optim in float64, from float64 states (the dequantized
# ones), with the user's hyper-parameters: torch.optim's rules (Lion: its paper's), no rounding
# to float32 anywhere. Each returns (p, state1, state2) as float64 arrays (state2 None but for
# Adam); elements with a non-finite gradient or state keep their values, as the kernels do.


def _kept(finite, new, old):
    return tuple(None if n is None else np.where(finite, n, o) for n, o in zip(new, old))


def adam_step(p, g, m, v, *, lr, betas, eps, weight_decay, step, decoupled):
    p, g, m, v = (np.asarray(a, np.float64) for a in (p, g, m, v))
    beta1, beta2 = betas
    with np.errstate(over="ignore", invalid="ignore"):
        grad = g if decoupled or weight_decay == 0 else g + weight_decay * p
        decayed = p * (1 - lr * weight_decay) if decoupled else p
        m_new = beta1 * m + (1 - beta1) * grad
        v_new = beta2 * v + (1 - beta2) * grad * grad
        denominator = np.sqrt(v_new) / np.sqrt(1 - beta2 ** step) + eps
        p_new = decayed - lr / (1 - beta1 ** step) * m_new / denominator
        finite = np.isfinite(grad) & np.isfinite(m_new) & np.isfinite(v_new)
    return _kept(finite, (p_new, m_new, v_new), (p, m, v))


def momentum_step(p, g, b, *, lr, momentum, dampening, nesterov, weight_decay, step):
    p, g, b = (np.asarray(a, np.float64) for a in (p, g, b))
    with np.errstate(over="ignore", invalid="ignore"):
        grad = g + weight_decay * p if weight_decay else g
        b_new = grad if step == 1 else momentum * b + (1 - dampening) * grad
        direction = grad + momentum * b_new if nesterov else b_new
        finite = np.isfinite(grad) & np.isfinite(direction)
    return _kept(finite, (p - lr * direction, b_new, None), (p, b, None))


def lion_step(p, g, m, *, lr, betas, weight_decay):
    p, g, m = (np.asarray(a, np.float64) for a in (p, g, m))
    beta1, beta2 = betas
    with np.errstate(over="ignore", invalid="ignore"):
        p_new = p * (1 - lr * weight_decay) - lr * np.sign(beta1 * m + (1 - beta1) * g)
        m_new = beta2 * m + (1 - beta2) * g
        finite = np.isfinite(g) & np.isfinite(m_new)
    return _kept(finite, (p_new, m_new, None), (p, m, None))


def rms_step(p, g, v, *, lr, alpha, eps, weight_decay, adagrad=False):
    """RMSprop's step, or Adagrad's (v + g^2; lr already decayed, alpha unused)."""
    p, g, v = (np.asarray(a, np.float64) for a in (p, g, v))
    with np.errstate(over="ignore", invalid="ignore"):
        grad = g + weight_decay * p if weight_decay else g
        v_new = v + grad * grad if adagrad else alpha * v + (1 - alpha) * grad * grad
        p_new = p - lr * grad / (np.sqrt(v_new) + eps)
        finite = np.isfinite(grad) & np.isfinite(v_new)
    return _kept(finite, (p_new, v_new, None), (p, v, None))


def nearest_codes_of_state(values, code, blocksize):
    """(codes, absmax) of float64 state values by the definition: absmax = max |value| per block
    in float64, each code the nearest to value / absmax (exact midpoints, ties low)."""
    values = np.asarray(values, np.float64)
    blocks = -(-values.size // blocksize)
    padded = np.zeros(blocks * blocksize)
    padded[:values.size] = values
    absmax = np.abs(padded.reshape(blocks, blocksize)).max(axis=1)
    scale = np.repeat(np.where(absmax > 0, absmax, 1.0), blocksize)[:values.size]
    q = np.empty(values.size, np.uint8)
    y = values / scale
    midpoints = (np.asarray(code, np.float64)[:-1] + np.asarray(code, np.float64)[1:]) / 2
    q[:] = np.searchsorted(midpoints, y, side="left")
    return q, absmax


def uniform_of_elements(indices, step):
    """The kernels' uniform numbers of Lion's stochastic rounding (csrc/optim_kernels.h): murmur3's
    finalizer over each element's index and the step's number, in 32-bit wrapping arithmetic."""
    mask = np.uint64(0xFFFFFFFF)
    index = np.asarray(indices, np.uint64)
    salt = ((index >> np.uint64(32)) * np.uint64(0x85EBCA77) & mask) ^ np.uint64(step * 0xC2B2AE3D & 0xFFFFFFFF)
    h = ((index & mask) * np.uint64(0x9E3779B1) & mask) ^ salt
    h = ((h ^ (h >> np.uint64(16))) * np.uint64(0x85EBCA6B)) & mask
    h = ((h ^ (h >> np.uint64(13))) * np.uint64(0xC2B2AE35)) & mask
    h ^= h >> np.uint64(16)
    return (h >> np.uint64(8)).astype(np.float64) * 2.0**-24


def stochastic_codes_of_state(values, code, blocksize, step):
    """(codes, absmax, margin) of float64 state values by Lion's stochastic rounding: from the
    nearest code, the code on the value's other side where u < |y - nearest| / (the gap between the
    two), with y = value / absmax and u = uniform_of_elements; margin = |u - that probability| * the
    gap (how far y is from the value where the decision goes the other way)."""
    nearest, absmax = nearest_codes_of_state(values, code, blocksize)
    code = np.asarray(code, np.float64)
    scale = np.repeat(np.where(absmax > 0, absmax, 1.0), blocksize)[:values.size]
    y = np.asarray(values, np.float64) / scale
    at = code[nearest]
    other = np.clip(nearest.astype(int) + np.sign(y - at).astype(int), 0, 255)
    gap = np.abs(code[other] - at)
    probability = np.where(gap > 0, np.abs(y - at) / np.where(gap > 0, gap, 1), 0.0)
    u = uniform_of_elements(np.arange(values.size), step)
    return np.where(u < probability, other, nearest).astype(np.uint8), absmax, np.abs(u - probability) * gap


# ------------------------------------------------------------------ measures


def ulp_error(y, reference):
    """Max |y - reference| in float32 ULPs of the reference, over references >= FLT_MIN."""
    y = np.asarray(y, dtype=np.float64).ravel()
    reference = np.asarray(reference, dtype=np.float64).ravel()
    keep = reference >= FLT_MIN
    if not keep.any():
        return 0.0
    spacing = float32_ulp(reference[keep])
    return float(np.max(np.abs(y[keep] - reference[keep]) / spacing))


def float32_ulp(values):
    """The float32 ULP of each value, 2^(e - 24) for |value| = m * 2^e with m in [0.5, 1), as
    float64: np.spacing near FLT_MIN is a float32 subnormal, which flush-to-zero would make 0."""
    _, exponent = np.frexp(np.abs(np.asarray(values)).astype(np.float32))
    return np.ldexp(1.0, exponent - 24)


def eps_error(y, reference, eps=EPS32):
    """Max |y - reference| / (eps * max(1, |reference|)) over finite references."""
    y = np.asarray(y, dtype=np.float64).ravel()
    reference = np.asarray(reference, dtype=np.float64).ravel()
    finite = np.isfinite(reference)
    error = np.abs(y[finite] - reference[finite]) / (eps * np.maximum(1.0, np.abs(reference[finite])))
    return float(np.max(error, initial=0.0))


def tolerance_error(kernel, y, reference):
    """The error of a kernel's output against its oracle's, in the kernel's catalog measure
    (kernel.tolerance = (measure, bound)): to be at most the bound. y and reference may be tuples
    of arrays (a loss and its gradient, a pair's parts), measured together.

    "ulp": float32 ULPs over references >= FLT_MIN (ulp_error); "eps": float32 epsilons of
    max(1, |reference|) over finite references (eps_error); "exact": 0 if bitwise equal, else inf.
    Under "ulp" and "eps", a non-finite reference must be matched exactly (NaN by NaN), else inf.
    """
    measure, _ = kernel.tolerance
    ys = y if isinstance(y, tuple) else (y,)
    references = reference if isinstance(reference, tuple) else (reference,)
    assert len(ys) == len(references), (len(ys), len(references))
    worst = 0.0
    for part, expected in zip(ys, references):
        part, expected = np.asarray(part), np.asarray(expected)
        if part.shape != expected.shape:
            return np.inf
        if measure == "exact":
            same = part.dtype == expected.dtype and part.tobytes() == expected.tobytes()
            worst = max(worst, 0.0 if same or np.array_equal(part, expected, equal_nan=True) else np.inf)
            continue
        special = ~np.isfinite(expected.astype(np.float64))
        if not np.array_equal(part[special].astype(np.float64), expected[special].astype(np.float64), equal_nan=True):
            return np.inf
        worst = max(worst, ulp_error(part, expected) if measure == "ulp" else eps_error(part, expected))
    return worst


# ------------------------------------------------------------------ assertions


def assert_softmax_close(y, reference, max_ulp=SOFTMAX_MAX_ULP):
    """float32 softmax y against the exact float64 reference.

    Outputs whose reference is >= FLT_MIN are within max_ulp ULP. The library
    flushes outputs below FLT_MIN to +0, so: y is never negative, -0 or
    subnormal; references below FLT_MIN give exactly +0; and references within
    max_ulp ULP of FLT_MIN may land on either side of the flush.
    """
    y = np.asarray(y)
    reference = np.asarray(reference, dtype=np.float64)
    assert y.dtype == np.float32 and y.shape == reference.shape
    assert not np.isnan(y).any(), "NaN output for a finite input"
    assert not np.signbit(y).any(), "negative or -0 softmax output"
    assert not ((y > 0) & (y < FLT_MIN)).any(), "subnormal output: should have been flushed to +0"
    near_flt_min = np.abs(reference - FLT_MIN) <= max_ulp * 2.0**-149  # ULP at FLT_MIN is 2^-149
    flushed_near = near_flt_min & (y == 0)
    keep = (reference >= FLT_MIN) & ~flushed_near
    error = ulp_error(y[keep], reference[keep])
    assert error <= max_ulp, f"softmax error {error:.2f} ULP > {max_ulp}"
    below = (reference < FLT_MIN) & ~near_flt_min
    assert np.all(y[below] == 0), "outputs below FLT_MIN must be flushed to +0"
    kept_below = near_flt_min & (reference < FLT_MIN) & (y != 0)
    assert np.all(np.abs(y[kept_below] - reference[kept_below]) <= max_ulp * 2.0**-149)


def assert_log_softmax_close(y, reference, eps_factor=LOG_SOFTMAX_EPS, eps=EPS32, dtype=np.float32):
    """|y - reference| <= eps_factor * eps * max(1, |reference|); infinities equal."""
    y = np.asarray(y)
    reference = np.asarray(reference, dtype=np.float64)
    assert y.dtype == dtype and y.shape == reference.shape
    finite = np.isfinite(reference)
    assert np.array_equal(y[~finite], reference[~finite], equal_nan=True)
    error = np.abs(y[finite].astype(np.float64) - reference[finite])
    tolerance = eps_factor * eps * np.maximum(1.0, np.abs(reference[finite]))
    worst = np.max(error / tolerance, initial=0.0)
    assert worst <= 1.0, f"log_softmax error {worst:.2f}x the tolerance {eps_factor} eps * max(1, |ref|)"


def assert_rows_close(kernel, y, reference, bound=None):
    """The float32 output of a row kernel (catalog signature "rows") on finite input, against its
    oracle's, within the kernel's catalog tolerance (or `bound`, in the same measure): "ulp"
    kernels (softmax, StableMax) by assert_softmax_close, whose flush rules they share; "eps"
    kernels (the logs) by assert_log_softmax_close."""
    measure, catalog_bound = kernel.tolerance
    bound = catalog_bound if bound is None else bound
    if measure == "ulp":
        assert_softmax_close(y, reference, max_ulp=bound)
    elif measure == "eps":
        assert_log_softmax_close(y, reference, eps_factor=bound)
    else:
        error = tolerance_error(kernel, y, reference)
        assert error <= bound, f"{kernel.id}: error {error} > {bound} ({measure})"


def assert_stablemax_close(y, expected, log_output, dtype=np.float32):
    """StableMax (or log-StableMax) y against its float64 reference: NaN and infinities exactly;
    float32 within STABLEMAX_MAX_ULP (outputs below FLT_MIN flushed to +0) or LOG_STABLEMAX_EPS;
    float64 within 1e-14 relative; float16 within 2^-10 relative."""
    y64, expected = np.asarray(y, np.float64), np.asarray(expected, np.float64)
    assert y.dtype == dtype and y.shape == expected.shape
    np.testing.assert_array_equal(np.isnan(y64), np.isnan(expected))
    special = ~np.isfinite(expected)
    np.testing.assert_array_equal(y64[special & ~np.isnan(expected)], expected[special & ~np.isnan(expected)])
    finite = np.isfinite(expected)
    if dtype == np.float64:
        np.testing.assert_allclose(y64[finite], expected[finite], rtol=1e-14, atol=0 if not log_output else 1e-14)
        return
    if dtype == np.float16:
        np.testing.assert_allclose(y64[finite], expected[finite], rtol=2.0**-10, atol=2.0**-24)
        return
    if log_output:
        error = np.abs(y64[finite] - expected[finite]) / np.maximum(1.0, np.abs(expected[finite]))
        assert error.size == 0 or error.max() <= LOG_STABLEMAX_EPS * EPS32
    else:
        assert ulp_error(y64[finite], expected[finite]) <= STABLEMAX_MAX_ULP
        below = finite & (expected < FLT_MIN) & (np.abs(expected - FLT_MIN) > STABLEMAX_MAX_ULP * 2.0**-149)
        assert np.all(y64[below] == 0), "StableMax outputs below FLT_MIN are flushed to +0"

"""Slow float64 NumPy oracles and error measures shared by the tests."""
import numpy as np

FLT_MIN = np.finfo(np.float32).tiny


def softmax_reference(x, axis=-1, log_output=False):
    """Softmax (or log-softmax) in float64 with the semantics of docs/semantics.md."""
    x = np.moveaxis(np.asarray(x, dtype=np.float64), axis, -1)
    result = np.empty_like(x)
    for index in np.ndindex(x.shape[:-1]):
        result[index] = _reference_row(x[index], log_output)
    return np.moveaxis(result, -1, axis)


def _reference_row(row, log_output):
    if row.size == 0:
        return row.copy()
    if np.isnan(row).any():
        return np.full_like(row, np.nan)
    infinities = row == np.inf
    if infinities.any():
        k = infinities.sum()
        if log_output:
            return np.where(infinities, -np.log(k), -np.inf)
        return np.where(infinities, 1.0 / k, 0.0)
    m = row.max()
    with np.errstate(invalid="ignore", over="ignore"):
        shifted = row - m  # NaN for a row of only -inf, as documented
    total = np.exp(shifted).sum()
    return shifted - np.log(total) if log_output else np.exp(shifted) / total


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

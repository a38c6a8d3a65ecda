"""Softmax by the classic three-pass algorithm.

variant="reload":    max; y = exp(x - max) while summing; y *= 1/sum.
                     One exp per element, one extra read and write of y.
variant="recompute": max; sum of exp(x - max); y = exp(x - max) * (1/sum).
                     Two exps per element, y written once.

Both round x - max to float before the exp, which costs accuracy when
|x - max| is large (up to 65 ULP, docs/accuracy.md). softmax has a third:

variant="reload_exact": reload, with exp(x - max) = p * 2^(n - n_max) from
                     exp(x) = p * 2^n: x - max is never rounded, and the
                     result is within 4 ULP, as two-pass, at reload's speed.

Special values follow docs/semantics.md on every backend and variant.
"""
from ._api import apply_rows

VARIANTS = {"softmax": ("reload", "recompute", "reload_exact"), "log_softmax": ("reload", "recompute")}


def _operation(name, variant):
    if variant not in VARIANTS[name]:
        raise ValueError(f"{name} variant must be one of {', '.join(map(repr, VARIANTS[name]))}, not {variant!r}")
    return f"{name}_{variant}"


def softmax(x, axis=-1, *, out=None, variant="reload", backend=None):
    """exp(x) / sum(exp(x)) along `axis`.

    x: array_like of float32 (SIMD kernels), float64 (computed in float64),
       float16 (computed in float32), or integers/bool (become float64).
    out: optional array of the result's shape and dtype; may be x itself.
    backend: "avx512", "avx2" or "numba"; default: the best this CPU runs,
       or SOFTMAXLIB_BACKEND.
    """
    return apply_rows(_operation("softmax", variant), x, axis, out, backend)


def log_softmax(x, axis=-1, *, out=None, variant="reload", backend=None):
    """(x - max) - log(sum(exp(x - max))) along `axis`; arguments as softmax()."""
    return apply_rows(_operation("log_softmax", variant), x, axis, out, backend)

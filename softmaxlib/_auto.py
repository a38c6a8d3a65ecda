"""The auto path behind softmaxlib.softmax and softmaxlib.log_softmax.

Per backend and row length, the catalog kernel that is fastest among those meeting the
accuracy bounds: softmax within 4 ULP of float64 (outputs >= FLT_MIN), log-softmax within a few
float32 epsilons of max(1, |result|). Classic three-pass softmax rounds x - max (up to 65 ULP), so
softmax chooses between reload_exact and two-pass only; log-softmax meets its bound on both.

A row stays in cache between the passes of reload while x and y (8n bytes) fit in the last-level
cache; beyond that, two-pass's three memory transfers per element beat reload's five. The
crossover is measured by `softmaxlib bench --suite crossover` and explained in docs/algorithms.md:
on AVX-512 (Zen 5, 32 MiB L3) two-pass wins above ~0.8 of the LLC for softmax and ~0.75 for
log-softmax; on AVX2, whose two-pass is compute-bound (two exps per element at 8 lanes), never
for softmax and above ~1x the LLC for log-softmax; Numba's two-pass never wins.
"""
from . import _dispatch

# (function, backend) -> (kernel in cache, kernel beyond the crossover or None,
#                         crossover as a fraction of the LLC for the 8n bytes of a row)
CHOICES = {
    ("softmax", "avx512"): ("softmax_reload_exact", "softmax_two_pass", 0.8),
    ("softmax", "avx2"): ("softmax_reload_exact", None, None),
    ("softmax", "numba"): ("softmax_reload_exact", None, None),
    ("log_softmax", "avx512"): ("log_softmax_reload", "log_softmax_two_pass", 0.75),
    ("log_softmax", "avx2"): ("log_softmax_reload", "log_softmax_two_pass", 1.0),
    ("log_softmax", "numba"): ("log_softmax_reload", None, None),
}


def choice(function, backend):
    """(kernel id in cache, kernel id beyond or None, crossover: the longest row length, in
    elements, that stays in cache, or None) of the auto path of `function` on `backend`."""
    in_cache, beyond, fraction = CHOICES[function, backend]
    if beyond is None:
        return in_cache, None, None
    return in_cache, beyond, int(fraction * _dispatch.LAST_LEVEL_CACHE_BYTES) // 8


def kernel_id(function, backend, n):
    """The catalog kernel the auto path runs for rows of n float32 on `backend`."""
    in_cache, beyond, crossover = choice(function, backend)
    return beyond if beyond is not None and n > crossover else in_cache

"""Where two-pass overtakes reload_exact: the measurement behind the auto path (docs/algorithms.md).

    python bench/crossover.py [--backends avx512,avx2,numba] [--repeats 9]

For each backend and row length n (one row, x and y preallocated, the same buffers on every
call, so that the row stays in whatever cache level holds 8n bytes), the median ns per element
of every softmax and log-softmax kernel of the registry, all in one process. The kernels are
called through the registry binding, which also picks the non-temporal two-pass kernel above
half the last-level cache, as the public functions do.
"""
import argparse

import numpy as np

from softmaxlib import _dispatch, _registry, bench

SIZES = [2**k for k in range(10, 26)]
OPERATIONS = ["softmax_reload", "softmax_reload_exact", "softmax_two_pass",
              "log_softmax_reload", "log_softmax_two_pass"]


def measure(backend, n, operations, repeats):
    x = np.random.default_rng(n).standard_normal((1, n), dtype=np.float32)
    y = np.empty_like(x)
    return {name: bench.time_callable(_registry.row_kernel(name, backend, np.float32), [(x, y)],
                                      repeats=repeats, warmup=2).median_ns / n
            for name in operations}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default=",".join(_dispatch.USABLE_BACKENDS))
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args(argv)
    print(f"last-level cache {bench.llc_bytes() >> 20} MiB; ns per element, median of {args.repeats}")
    print(f"{'backend':8} {'n':>9} {'8n bytes':>9} " + " ".join(f"{name:>21}" for name in OPERATIONS))
    for backend in args.backends.split(","):
        for n in SIZES:
            times = measure(backend, n, OPERATIONS, args.repeats)
            print(f"{backend:8} {n:>9} {8 * n >> 10:>8}K " + " ".join(f"{times[name]:>21.3f}" for name in OPERATIONS),
                  flush=True)


if __name__ == "__main__":
    main()

"""StableMax, log-StableMax and the StableMax cross-entropy with its gradient, per backend, against
NumPy expressions of the same formulas, in one process: the table of issue 4.

    python bench/stablemax_table.py [--repeats 11]

Inputs and method as `softmaxlib bench` (softmaxlib/bench.py): standard normal float32 rows, short
rows batched to ~2^16 elements ("hot", in L2), 2^24 rotating over buffers larger than the
last-level cache ("cold"), outputs preallocated for our kernels, the median of repeats after a
warm-up. The cross-entropy case is mean reduction with the gradient; its NumPy expression computes
in float64, as the paper's code does. Roofline (cold only): every case reads x twice and writes one
float32 per element, t_read(8n bytes) + t_read_write(4n bytes) from the bandwidth probe.
"""
import argparse

import numpy as np

from softmaxlib import _dispatch, _registry, bench
from softmaxlib.stablemax import s as stable_s

SIZES = (1000, 100_000, 1 << 24)


def numpy_cross_entropy(x, labels):
    """Mean StableMax cross-entropy and its gradient, as a float64 NumPy expression."""
    x64 = x.astype(np.float64)
    s = stable_s(x64)
    p = s / s.sum(-1, keepdims=True)
    rows = np.arange(x.shape[0])
    loss = -np.log(p[rows, labels]).mean()
    p[rows, labels] -= 1
    return loss, (p / (1 + np.abs(x64)) / x.shape[0]).astype(np.float32)


def cross_entropy_call(backend):
    kernel = _registry.loss_kernel("stablemax_cross_entropy", backend, np.float32)

    def call(x, grad, labels, losses):
        kernel(x, labels, -1, 1.0 / x.shape[0], losses, grad)

    return call


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=11)
    args = parser.parse_args(argv)
    bw = bench.bandwidth()
    print(f"bandwidth probe: read {bw.read_gb_s:.1f} GB/s, read+write {bw.read_write_gb_s:.1f} GB/s; "
          f"ns per element (x NumPy) [roofline fraction]")
    print(f"{'case':<24} {'backend':<7} " + " ".join(f"{bench._format_size(n):>22}" for n in SIZES))
    cells = {}
    for n in SIZES:
        sets = bench.make_inputs(n)
        rows = sets[0][0].shape[0]
        elements = rows * n
        cold = len(sets) > 1
        roofline = bw.t_read(8 * elements) + bw.t_read_write(4 * elements)
        labels = np.zeros(rows, np.int64)
        losses = np.empty(rows)
        timing = dict(repeats=args.repeats)
        numpy_ns = {
            "stablemax": bench.time_callable(bench.numpy_stablemax, [(x,) for x, _ in sets], **timing).median_ns,
            "log_stablemax": bench.time_callable(bench.numpy_log_stablemax, [(x,) for x, _ in sets], **timing).median_ns,
            "cross_entropy+grad": bench.time_callable(numpy_cross_entropy, [(x, labels) for x, _ in sets],
                                                      **timing).median_ns,
        }
        for case, baseline in numpy_ns.items():
            cells[case, "numpy", n] = f"{baseline / elements:.3f}"
        for backend in _dispatch.USABLE_BACKENDS:
            calls = {"stablemax": (_registry.row_kernel("stablemax", backend, np.float32), sets),
                     "log_stablemax": (_registry.row_kernel("log_stablemax", backend, np.float32), sets),
                     "cross_entropy+grad": (cross_entropy_call(backend), [(x, y, labels, losses) for x, y in sets])}
            for case, (function, arg_sets) in calls.items():
                ns = bench.time_callable(function, arg_sets, **timing).median_ns
                fraction = f" [{roofline / ns:.2f}]" if cold else ""
                cells[case, backend, n] = f"{ns / elements:.3f} ({numpy_ns[case] / ns:.0f}x){fraction}"
        del sets
    for case in ("stablemax", "log_stablemax", "cross_entropy+grad"):
        for backend in ("numpy", *_dispatch.USABLE_BACKENDS):
            print(f"{case:<24} {backend:<7} " + " ".join(f"{cells[case, backend, n]:>22}" for n in SIZES))


if __name__ == "__main__":
    main()

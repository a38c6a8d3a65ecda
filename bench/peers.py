"""softmaxlib against torch.softmax (one thread) and scipy.special.softmax, in one process.

    python bench/peers.py        # needs torch and scipy installed; neither is a dependency

Public API on both sides (ours: the auto path, softmaxlib.softmax), float32 standard normal rows
along the last axis; median of 31 calls after a warm-up call, in ns per element. (`softmaxlib bench` times the kernels themselves.)
"""
import time

import numpy as np
import scipy.special
import torch

import softmaxlib

CASES = ((1000, 65), (10_000, 6), (100_000, 1), (1 << 24, 1))  # (n, rows)


def median_seconds(function, repeats=31):
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main():
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    print(f"torch {torch.__version__} ({torch.get_num_threads()} thread), scipy {scipy.__version__}; ns per element")
    print(f"{'n x rows':>12} {'ours out=':>10} {'ours':>8} {'torch':>8} {'scipy':>8} {'torch/ours':>11}")
    for n, rows in CASES:
        x = rng.standard_normal((rows, n), dtype=np.float32)
        out = np.empty_like(x)
        x_torch = torch.from_numpy(x)
        per_element = 1e9 / x.size
        ours_out = median_seconds(lambda: softmaxlib.softmax(x, out=out)) * per_element
        ours = median_seconds(lambda: softmaxlib.softmax(x)) * per_element
        peer_torch = median_seconds(lambda: torch.softmax(x_torch, -1)) * per_element
        peer_scipy = median_seconds(lambda: scipy.special.softmax(x, axis=-1), repeats=11) * per_element
        print(f"{n:>8} x {rows:<3} {ours_out:>9.3f} {ours:>8.3f} {peer_torch:>8.3f} {peer_scipy:>8.3f} "
              f"{peer_torch / ours_out:>11.2f}")


if __name__ == "__main__":
    main()

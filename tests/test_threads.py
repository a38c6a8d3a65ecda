"""The kernels are reentrant: cffi releases the GIL during a call, so calls from several
threads run at once and must not share any mutable state."""
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from conftest import public_function


def test_concurrent_calls_match_serial_calls(operation, backend, rng):
    function, _ = public_function(operation)
    rows = [(rng.standard_normal((4, 5000)) * scale).astype(np.float32) for scale in (1, 10, 100, 1000) * 4]
    serial = [function(x, backend=backend) for x in rows]
    with ThreadPoolExecutor(max_workers=4) as pool:
        concurrent = list(pool.map(lambda x: function(x, backend=backend), rows * 4))
    for index, result in enumerate(concurrent):
        np.testing.assert_array_equal(result, serial[index % len(rows)])



def test_numba_kernels_release_the_gil():
    """While a long Numba kernel runs in one thread, another thread keeps running Python at its
    usual pace: the kernels are compiled with nogil=True (one that held the GIL would freeze the
    other thread for the whole call, as the Numba backend did before)."""
    import threading
    import time

    from softmaxlib import _numba_kernels

    x = np.random.default_rng(1).standard_normal((64, 1 << 16)).astype(np.float32)
    y = np.empty_like(x)
    _numba_kernels.two_pass_rows_f32(x[:1], y[:1], False)  # compiled before the measured call
    finished = threading.Event()
    call = {}

    def run():
        start = time.perf_counter()
        _numba_kernels.two_pass_rows_f32(x, y, False)
        call["seconds"] = time.perf_counter() - start
        finished.set()

    def count_steps(until):
        steps = 0
        while not until():
            steps += 1
        return steps

    deadline = time.perf_counter() + 0.05
    steps_per_second = count_steps(lambda: time.perf_counter() > deadline) / 0.05
    worker = threading.Thread(target=run)
    worker.start()
    steps_during_the_call = count_steps(finished.is_set)
    worker.join()
    assert steps_during_the_call > 0.2 * steps_per_second * call["seconds"]

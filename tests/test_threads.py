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
    usual pace: the kernels are compiled with nogil=True. The worker reads the other thread's
    step count right before and right after the call; a kernel that held the GIL would let no
    step happen in between (the Numba backend did before)."""
    import threading
    import time

    from softmaxlib._numba import two_pass

    x = np.random.default_rng(1).standard_normal((128, 1 << 16)).astype(np.float32)
    y = np.empty_like(x)
    two_pass.f32_softmax_two_pass(x[:1], y[:1])  # compiled before the measured call
    steps, finished, call = [0], threading.Event(), {}

    def run():
        time.sleep(0.01)  # the main thread is counting by now
        before, start = steps[0], time.perf_counter()
        two_pass.f32_softmax_two_pass(x, y)
        call["seconds"], call["steps"] = time.perf_counter() - start, steps[0] - before
        finished.set()

    deadline = time.perf_counter() + 0.05
    while time.perf_counter() < deadline:
        steps[0] += 1
    steps_per_second, steps[0] = steps[0] / 0.05, 0
    worker = threading.Thread(target=run)
    worker.start()
    while not finished.is_set():
        steps[0] += 1
    worker.join()
    assert call["steps"] > 0.3 * steps_per_second * call["seconds"]

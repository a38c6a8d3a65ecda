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

import numpy as np

from conftest import public_function
from oracle import softmax_reference, ulp_error


def test_matches_oracle(operation, backend, rng):
    function, is_log = public_function(operation)
    x = rng.standard_normal((3, 257)).astype(np.float32)
    y = function(x, backend=backend)
    reference = softmax_reference(x, log_output=is_log)
    if is_log:
        np.testing.assert_allclose(y, reference, atol=1e-6)
    else:
        assert ulp_error(y, reference) < 16

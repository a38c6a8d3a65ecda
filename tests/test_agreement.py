"""Every backend x every row kernel of the catalog (softmax, log_softmax, StableMax and
log-StableMax, each variant) against its float64 oracle (tests/oracle.py), over the array zoo
(tests/zoo.py).

The zoo: every row length a family's kernels handle differently (empty, every masked tail up to
two vectors of each ISA, around one and two of every loop tile its C kernels export, around the
Numba twins' block, several blocks, 1e5 and 2^24), strided and negative-stride views, F-ordered
arrays, 0-D to 4-D shapes and every axis (also negative), byte-swapped, misaligned and read-only
arrays, the dtypes (float32, float64, float16, integers, bool) and the `out=` paths.

Data is N(0, 1), and each float32 result is held to its kernel's catalog tolerance, at most
oracle.SOFTMAX_MAX_ULP (16 ULP) or oracle.LOG_SOFTMAX_EPS: three-pass rounds x - max to float32
before the exp, so the float32 error grows with |x - max|; at this scale |x - max| < 16 and the
rounding costs at most 2^-21 relative (<= 8 ULP), plus <= 2 ULP of the exp and ~1 ULP of the
scaling by 1/sum (test_accuracy.py measures other scales). The C kernels' float32 tree sums add
at most 3 ULP (test_accuracy.py::test_dominant_element).
"""
import numpy as np
import pytest

import oracle
import zoo
from zoo import normal
from conftest import ROW_KERNELS, public_function
from oracle import FLT_MIN, LOG_SOFTMAX_EPS, SOFTMAX_MAX_ULP, assert_log_softmax_close, assert_rows_close, \
    assert_softmax_close, softmax_reference
from softmaxlib import _catalog

# float64 input runs the float64 Numba kernel with libm exp: a few float64 roundings.
FLOAT64_RTOL = 1e-14
# float16 input computes in float32 and rounds once to float16 (2^-11 relative)
# whose subnormals are spaced 2^-24 apart.
FLOAT16_RTOL = 2.0**-10
FLOAT16_ATOL = 2.0**-24
LOG_FLOAT16_RTOL = 2.0**-10
BIG_N = 2**24
# the zoo's bound in each measure, on N(0, 1) data; a kernel's catalog tolerance may be tighter
ZOO_BOUNDS = {"ulp": SOFTMAX_MAX_ULP, "eps": LOG_SOFTMAX_EPS}


# ---------------------------------------------------------------- comparisons


def reference_for(x, axis, kernel):
    """The kernel's oracle, also for 0-D x (one row of one element, as the library treats it)."""
    return getattr(oracle, kernel.oracle)(x, axis=axis)


def check_float32_result(y, x, axis, kernel_id):
    kernel = _catalog.KERNELS[kernel_id]
    measure, bound = kernel.tolerance
    assert_rows_close(kernel, y, reference_for(x, axis, kernel), bound=min(bound, ZOO_BOUNDS[measure]))


def run_unmodified(function, x, **kwargs):
    """Calls function(x, **kwargs) and checks that it left x untouched."""
    before = np.array(x, copy=True)
    y = function(x, **kwargs)
    assert np.array_equal(x, before, equal_nan=True), "the input was modified"
    return y


# ---------------------------------------------------------------- the zoo


ZOO = [pytest.param(kernel_id, make, axis, id=f"{kernel_id}-{name}")
       for kernel_id in ROW_KERNELS for name, make, axis in zoo.float32_layouts(_catalog.KERNELS[kernel_id].family)]


@pytest.mark.parametrize("kernel_id, make, axis", ZOO)
def test_float32_zoo(kernel_id, make, axis, backend, rng):
    function, _ = public_function(kernel_id)
    x = make(rng)
    y = run_unmodified(function, x, axis=axis, backend=backend)
    assert np.shape(y) == np.shape(x)
    check_float32_result(y, x, axis, kernel_id)


def test_float32_flush_below_flt_min(operation, backend):
    """Outputs spanning FLT_MIN: exact x - max (integers and halves), so only the exp and scaling err."""
    function, is_log = public_function(operation)
    x = -np.arange(0, 130, 0.5, dtype=np.float32)[::-1].copy()  # exp(x - max) down to e^-129.5
    x = np.stack([x, np.roll(x, 7), x - 1000])
    y = run_unmodified(function, x, backend=backend)
    reference = softmax_reference(x, log_output=is_log)
    if is_log:
        assert_log_softmax_close(y, reference)
    else:
        assert (reference < FLT_MIN).any() and (reference > FLT_MIN).any()
        assert_softmax_close(y, reference, max_ulp=4)  # x - max exact: exp (2 ULP) + scaling
        assert np.all(y[reference < FLT_MIN / 2] == 0)


# ---------------------------------------------------------------- 2^24 elements


@pytest.fixture(scope="module")
def big_row():
    """One N(0,1) row of 2^24 float32, and its float64 reference of each oracle, computed once."""
    x = np.random.default_rng(224).standard_normal(BIG_N, dtype=np.float32)
    references = {}

    def reference(name):
        if name not in references:
            references[name] = getattr(oracle, name)(x)
        return references[name]

    return x, reference


@pytest.mark.slow
def test_float32_two_to_the_24(big_row, row_kernel, backend):
    function, _ = public_function(row_kernel)
    kernel = _catalog.KERNELS[row_kernel]
    x, reference = big_row
    y = run_unmodified(function, x, backend=backend)
    measure, bound = kernel.tolerance
    assert_rows_close(kernel, y, reference(kernel.oracle), bound=min(bound, ZOO_BOUNDS[measure]))


# ---------------------------------------------------------------- other dtypes

DTYPE_SHAPES = [pytest.param(make, axis, id=name) for name, make, axis in zoo.DTYPE_LAYOUTS]


@pytest.mark.parametrize("make, axis", DTYPE_SHAPES)
@pytest.mark.parametrize("dtype", zoo.OTHER_FLOAT_DTYPES)
def test_float64_and_float16_input(make, axis, dtype, row_kernel, backend, rng):
    """float64 is computed in float64 (Numba, libm exp) on every backend; float16 in float32, returned as float16."""
    function, is_log = public_function(row_kernel)
    x = make(rng, dtype)
    y = run_unmodified(function, x, axis=axis, backend=backend)
    assert y.dtype == dtype
    reference = reference_for(x, axis, _catalog.KERNELS[row_kernel])
    if dtype == np.float64 and is_log:
        assert_log_softmax_close(y, reference, eps_factor=FLOAT64_RTOL, eps=1.0, dtype=np.float64)
    elif dtype == np.float64:
        np.testing.assert_allclose(y, reference, rtol=FLOAT64_RTOL, atol=0)
    else:
        rtol = LOG_FLOAT16_RTOL if is_log else FLOAT16_RTOL
        np.testing.assert_allclose(y.astype(np.float64), reference, rtol=rtol, atol=FLOAT16_ATOL)
        assert is_log or not np.signbit(y).any()


@pytest.mark.parametrize("dtype", zoo.INTEGER_DTYPES)
def test_integer_and_bool_input(dtype, row_kernel, backend, rng):
    """Integers and bool become float64, as SciPy does for integers (SciPy refuses bool:
    test_error_parity.py)."""
    function, is_log = public_function(row_kernel)
    if dtype is np.bool_:
        x = rng.integers(0, 2, (3, 37)).astype(bool)
    else:
        info = np.iinfo(dtype)
        x = rng.integers(max(info.min, -60), min(info.max, 60), (3, 37), endpoint=True).astype(dtype)
    for axis in (-1, 0):
        y = run_unmodified(function, x, axis=axis, backend=backend)
        assert y.dtype == np.float64
        reference = reference_for(x, axis, _catalog.KERNELS[row_kernel])
        if is_log:
            assert_log_softmax_close(y, reference, eps_factor=FLOAT64_RTOL, eps=1.0, dtype=np.float64)
        else:
            np.testing.assert_allclose(y, reference, rtol=FLOAT64_RTOL, atol=0)


# ---------------------------------------------------------------- out=


def test_out_contiguous(row_kernel, backend, rng):
    function, is_log = public_function(row_kernel)
    cases = [(normal((4, 45), rng), -1), (np.asfortranarray(normal((45, 4), rng)), 0), (normal((3, 5, 7), rng), 1)]
    for x, axis in cases:
        expected = run_unmodified(function, x, axis=axis, backend=backend)
        out = np.full(x.shape, np.nan, dtype=np.float32)
        result = run_unmodified(function, x, axis=axis, out=out, backend=backend)
        assert result is out
        np.testing.assert_array_equal(out, expected)
        check_float32_result(out, x, axis, row_kernel)


def test_out_zero_dimensional(row_kernel, backend):
    function, is_log = public_function(row_kernel)
    for x in (np.array(2.5, np.float32), np.array(-3.0, np.float64)):
        out = np.empty((), x.dtype)
        assert run_unmodified(function, x, out=out, backend=backend) is out
        assert out == (0.0 if is_log else 1.0)


def test_out_non_contiguous(row_kernel, backend, rng):
    function, is_log = public_function(row_kernel)
    x = normal((5, 37), rng)
    expected = run_unmodified(function, x, backend=backend)
    for big, view in [
        (np.full((5, 74), -7.0, np.float32), lambda b: b[:, ::2]),
        (np.full((5, 40), -7.0, np.float32), lambda b: b[::-1, 3:40]),
        (np.full((37, 5), -7.0, np.float32).T, lambda b: b),  # F-ordered out
        (np.full((10, 37), -7.0, np.float32), lambda b: b[::2]),
    ]:
        untouched = big.copy()
        out = view(big)
        result = run_unmodified(function, x, out=out, backend=backend)
        assert result is out
        np.testing.assert_array_equal(out, expected)
        check_float32_result(out, x, -1, row_kernel)
        mask = np.ones(big.shape, bool)
        view(mask)[...] = False
        np.testing.assert_array_equal(big[mask], untouched[mask], err_msg="out= wrote outside its view")


def test_out_non_contiguous_along_other_axis(row_kernel, backend, rng):
    function, is_log = public_function(row_kernel)
    x = normal((4, 6, 33), rng)
    for axis in (0, -2):
        expected = function(x, axis=axis, backend=backend)
        big = np.zeros((4, 12, 33), np.float32)
        out = big[:, ::-2]
        run_unmodified(function, x, axis=axis, out=out, backend=backend)
        np.testing.assert_array_equal(out, expected)
        assert np.all(big[:, -2::-2] == 0)


@pytest.mark.parametrize(
    "make, axis",
    [
        pytest.param(lambda rng: normal((4, 77), rng), -1, id="C_axis-1"),
        pytest.param(lambda rng: normal((1, 2 * 4096 + 13), rng), -1, id="C_long_row"),
        pytest.param(lambda rng: np.asfortranarray(normal((77, 4), rng)), 0, id="F_axis0"),
        pytest.param(lambda rng: np.asfortranarray(normal((2, 3, 29), rng)), 0, id="F3d_axis0"),
        pytest.param(lambda rng: normal((77, 4), rng), 0, id="C_axis0"),  # not contiguous along the axis
        pytest.param(lambda rng: normal((4, 2 * 77), rng)[:, ::2], -1, id="strided"),
        pytest.param(lambda rng: normal((2, 3, 4, 9), rng), 2, id="4d_axis2"),
    ],
)
def test_out_is_x_in_place(make, axis, row_kernel, backend, rng):
    function, is_log = public_function(row_kernel)
    x = make(rng)
    original = x.copy()
    expected = function(original, axis=axis, backend=backend)
    result = function(x, axis=axis, out=x, backend=backend)
    assert result is x
    np.testing.assert_array_equal(x, expected)
    check_float32_result(x, original, axis, row_kernel)


def test_out_in_place_other_dtypes(row_kernel, backend, rng):
    function, is_log = public_function(row_kernel)
    for dtype in (np.float64, np.float16):
        x = normal((3, 41), rng).astype(dtype)
        original = x.copy()
        expected = function(original, backend=backend)
        assert function(x, out=x, backend=backend) is x
        np.testing.assert_array_equal(x, expected)


@pytest.mark.parametrize("n", [5, 100, 1000, 4099])
def test_result_independent_of_address(n, row_kernel, backend, rng):
    """The same row at every offset within a 64-byte line gives the same bits: no rounding
    depends on where the kernel's vectors happen to be aligned."""
    function, _ = public_function(row_kernel)
    row = rng.standard_normal(n).astype(np.float32) * 10
    results = []
    for offset in range(16):
        storage = np.empty(n + 16, np.float32)
        x = storage[offset:offset + n]
        x[:] = row
        results.append(function(x, backend=backend))
    for result in results[1:]:
        np.testing.assert_array_equal(result, results[0])


@pytest.mark.parametrize("n", [100, 1000, 5000])
def test_cutoff_free_path_matches_the_checked_path(n, operation, backend, rng):
    """Rows whose x - max all lie above the exp's cutoff skip the cutoff test in the C kernels.
    Appending a -inf (exp exactly 0) sends the same row down the checked path: the other
    outputs must keep their bits."""
    function, _ = public_function(operation)
    row = (rng.standard_normal(n) * 10).astype(np.float32)
    assert row.min() - row.max() > -87
    fast = function(row, backend=backend)
    checked = function(np.append(row, np.float32(-np.inf)), backend=backend)
    np.testing.assert_array_equal(checked[:n], fast)

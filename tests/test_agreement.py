"""Every backend x every operation against the float64 oracle, over an "array zoo".

The zoo: every row length a kernel handles differently (empty, 1, every masked
tail up to 2x the widest vector + 1, around the 4-vector unroll, around the
4096-element summation block, 1e5 and 2^24), strided and negative-stride
views, F-ordered arrays, 0-D to 4-D shapes and every axis (also negative), the
dtypes (float32, float64, float16, integers, bool) and the `out=` paths.

Data is N(0, 1): three-pass rounds x - max to float32 before the exp, so the
float32 error grows with |x - max|; at this scale |x - max| < 16 and the
rounding costs at most 2^-21 relative (<= 8 ULP), plus <= 2 ULP of the exp and
~1 ULP of the scaling by 1/sum (test_accuracy.py measures other scales). The
C kernels' float32 tree sums add at most 3 ULP (test_accuracy.py::test_dominant_element).
"""
import numpy as np
import pytest

from conftest import public_function
from oracle import FLT_MIN, softmax_reference, ulp_error

EPS32 = float(np.finfo(np.float32).eps)  # 2^-23

# float32 softmax: max error in ULP of the reference (outputs >= FLT_MIN), N(0,1) data.
SOFTMAX_MAX_ULP = 16
# float32 log_softmax: |y - reference| <= LOG_SOFTMAX_EPS * eps32 * max(1, |reference|).
# (x - max) - log(sum) adds two non-positive terms, so there is no cancellation:
# ~1.5 eps from the three roundings plus the float32 error of the sum; ~1 eps measured.
LOG_SOFTMAX_EPS = 4
# float64 input runs the float64 Numba kernel with libm exp: a few float64 roundings.
FLOAT64_RTOL = 1e-14
# float16 input computes in float32 and rounds once to float16 (2^-11 relative)
# whose subnormals are spaced 2^-24 apart.
FLOAT16_RTOL = 2.0**-10
FLOAT16_ATOL = 2.0**-24
LOG_FLOAT16_RTOL = 2.0**-10

WIDEST_LANES = 16  # AVX-512
UNROLL_ELEMENTS = 4 * WIDEST_LANES
SUM_BLOCK = 4096  # csrc/three_pass_kernels.h
NUMBA_BLOCK = 1024  # BLOCK in softmaxlib/_numba/_rows.py

ROW_LENGTHS = sorted(
    {0}
    | set(range(1, 2 * WIDEST_LANES + 2))  # every masked tail, AVX2 and AVX-512
    | {UNROLL_ELEMENTS - 1, UNROLL_ELEMENTS, UNROLL_ELEMENTS + 1}
    | {2 * UNROLL_ELEMENTS - 1, 2 * UNROLL_ELEMENTS, 2 * UNROLL_ELEMENTS + 1}
    | {255, 256, 257}
    | {NUMBA_BLOCK - 1, NUMBA_BLOCK, NUMBA_BLOCK + 1}
    | {SUM_BLOCK - 1, SUM_BLOCK, SUM_BLOCK + 1, 2 * SUM_BLOCK + 17}
    | {100_000}
)
BIG_N = 2**24


# ---------------------------------------------------------------- comparisons


def assert_softmax_close(y, reference, max_ulp=SOFTMAX_MAX_ULP):
    """float32 softmax y against the exact float64 reference.

    Outputs whose reference is >= FLT_MIN are within max_ulp ULP. The library
    flushes outputs below FLT_MIN to +0, so: y is never negative, -0 or
    subnormal; references below FLT_MIN give exactly +0; and references within
    max_ulp ULP of FLT_MIN may land on either side of the flush.
    """
    y = np.asarray(y)
    reference = np.asarray(reference, dtype=np.float64)
    assert y.dtype == np.float32 and y.shape == reference.shape
    assert not np.isnan(y).any(), "NaN output for a finite input"
    assert not np.signbit(y).any(), "negative or -0 softmax output"
    assert not ((y > 0) & (y < FLT_MIN)).any(), "subnormal output: should have been flushed to +0"
    near_flt_min = np.abs(reference - FLT_MIN) <= max_ulp * 2.0**-149  # ULP at FLT_MIN is 2^-149
    flushed_near = near_flt_min & (y == 0)
    keep = (reference >= FLT_MIN) & ~flushed_near
    error = ulp_error(y[keep], reference[keep])
    assert error <= max_ulp, f"softmax error {error:.2f} ULP > {max_ulp}"
    below = (reference < FLT_MIN) & ~near_flt_min
    assert np.all(y[below] == 0), "outputs below FLT_MIN must be flushed to +0"
    kept_below = near_flt_min & (reference < FLT_MIN) & (y != 0)
    assert np.all(np.abs(y[kept_below] - reference[kept_below]) <= max_ulp * 2.0**-149)


def assert_log_softmax_close(y, reference, eps_factor=LOG_SOFTMAX_EPS, eps=EPS32, dtype=np.float32):
    """|y - reference| <= eps_factor * eps * max(1, |reference|); infinities equal."""
    y = np.asarray(y)
    reference = np.asarray(reference, dtype=np.float64)
    assert y.dtype == dtype and y.shape == reference.shape
    finite = np.isfinite(reference)
    assert np.array_equal(y[~finite], reference[~finite], equal_nan=True)
    error = np.abs(y[finite].astype(np.float64) - reference[finite])
    tolerance = eps_factor * eps * np.maximum(1.0, np.abs(reference[finite]))
    worst = np.max(error / tolerance, initial=0.0)
    assert worst <= 1.0, f"log_softmax error {worst:.2f}x the tolerance {eps_factor} eps * max(1, |ref|)"


def reference_for(x, axis, is_log):
    """The oracle, also for 0-D x (one row of one element, as the library treats it)."""
    if np.ndim(x) == 0:
        return softmax_reference(np.reshape(x, 1), log_output=is_log).reshape(())
    return softmax_reference(x, axis=axis, log_output=is_log)


def check_float32_result(y, x, axis, is_log):
    reference = reference_for(x, axis, is_log)
    if is_log:
        assert_log_softmax_close(y, reference)
    else:
        assert_softmax_close(y, reference)


def run_unmodified(function, x, **kwargs):
    """Calls function(x, **kwargs) and checks that it left x untouched."""
    before = np.array(x, copy=True)
    y = function(x, **kwargs)
    assert np.array_equal(x, before, equal_nan=True), "the input was modified"
    return y


# ---------------------------------------------------------------- the zoo


def normal(shape, rng):
    return rng.standard_normal(shape).astype(np.float32)


def _zoo():
    """(id, make(rng) -> float32 array, axis) for every layout and axis of the zoo."""
    cases = [(f"rows3xn{n}", (lambda rng, n=n: normal((3, n), rng)), -1) for n in ROW_LENGTHS]
    cases += [
        ("1d_n1", lambda rng: normal((1,), rng), 0),
        ("1d_n37", lambda rng: normal((37,), rng), -1),
        ("1d_n37_axis0", lambda rng: normal((37,), rng), 0),
        ("0d", lambda rng: np.float32(rng.standard_normal()), -1),
        ("0d_array_axis0", lambda rng: np.array(rng.standard_normal(), dtype=np.float32), 0),
        ("zero_rows", lambda rng: normal((0, 5), rng), -1),
        ("zero_rows_axis0", lambda rng: normal((0, 5), rng), 0),
        ("strided_cols", lambda rng: normal((5, 2 * 37), rng)[:, ::2], -1),
        ("strided_cols_axis0", lambda rng: normal((19, 2 * 6), rng)[:, ::2], 0),
        ("strided_rows", lambda rng: normal((2 * 5, 21), rng)[::2], -1),
        ("negative_stride_cols", lambda rng: normal((4, 33), rng)[:, ::-1], -1),
        ("negative_stride_rows", lambda rng: normal((4, 33), rng)[::-1], -1),
        ("negative_stride_both_axis0", lambda rng: normal((35, 9), rng)[::-1, ::-3], 0),
        ("negative_stride_1d", lambda rng: normal((3 * 70,), rng)[::-3], 0),
        ("fortran_axis-1", lambda rng: np.asfortranarray(normal((6, 45), rng)), -1),
        ("fortran_axis0", lambda rng: np.asfortranarray(normal((45, 6), rng)), 0),
        ("fortran_axis-2", lambda rng: np.asfortranarray(normal((45, 6), rng)), -2),
        ("transposed_axis1", lambda rng: normal((17, 5), rng).T, 1),
    ]
    for axis in range(-3, 3):
        cases.append((f"3d_axis{axis}", lambda rng: normal((3, 17, 5), rng), axis))
    for axis in range(-4, 4):
        cases.append((f"4d_axis{axis}", lambda rng: normal((2, 3, 19, 4), rng), axis))
        cases.append((f"4d_fortran_axis{axis}", lambda rng: np.asfortranarray(normal((3, 2, 4, 18), rng)), axis))
        cases.append((f"4d_strided_axis{axis}", lambda rng: normal((2, 6, 5, 34), rng)[:, ::2, ::-1, ::2], axis))
    cases.append(("4d_empty_axis2", lambda rng: normal((2, 3, 0, 4), rng), 2))
    cases.append(("4d_empty_axis-1", lambda rng: normal((2, 0, 3, 4), rng), -1))
    return [pytest.param(make, axis, id=name) for name, make, axis in cases]


ZOO = _zoo()


@pytest.mark.parametrize("make, axis", ZOO)
def test_float32_zoo(make, axis, operation, backend, rng):
    function, is_log = public_function(operation)
    x = make(rng)
    y = run_unmodified(function, x, axis=axis, backend=backend)
    assert np.shape(y) == np.shape(x)
    check_float32_result(y, x, axis, is_log)


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
    """One N(0,1) row of 2^24 float32 and its float64 references, computed once."""
    x = np.random.default_rng(224).standard_normal(BIG_N, dtype=np.float32)
    return x, {False: softmax_reference(x), True: softmax_reference(x, log_output=True)}


@pytest.mark.slow
def test_float32_two_to_the_24(big_row, operation, backend):
    function, is_log = public_function(operation)
    x, references = big_row
    y = run_unmodified(function, x, backend=backend)
    if is_log:
        assert_log_softmax_close(y, references[True])
    else:
        assert_softmax_close(y, references[False])


# ---------------------------------------------------------------- other dtypes

DTYPE_SHAPES = [
    pytest.param((lambda rng, dtype: rng.standard_normal((3, 37)).astype(dtype)), -1, id="rows"),
    pytest.param((lambda rng, dtype: rng.standard_normal((3, 40)).astype(dtype)[:, ::-2]), -1, id="negative_stride"),
    pytest.param(
        (lambda rng, dtype: np.asfortranarray(rng.standard_normal((3, 4, 17)).astype(dtype))), 0, id="fortran_axis0"
    ),
    pytest.param((lambda rng, dtype: rng.standard_normal((2, 3, 4, 5)).astype(dtype)), -3, id="4d_axis-3"),
    pytest.param((lambda rng, dtype: rng.standard_normal((2, 0)).astype(dtype)), -1, id="empty"),
    pytest.param((lambda rng, dtype: rng.standard_normal((2, 1000)).astype(dtype)), -1, id="n1000"),
]


@pytest.mark.parametrize("make, axis", DTYPE_SHAPES)
@pytest.mark.parametrize("dtype", [np.float64, np.float16])
def test_float64_and_float16_input(make, axis, dtype, operation, backend, rng):
    """float64 is computed in float64 (Numba, libm exp) on every backend; float16 in float32, returned as float16."""
    function, is_log = public_function(operation)
    x = make(rng, dtype)
    y = run_unmodified(function, x, axis=axis, backend=backend)
    assert y.dtype == dtype
    reference = softmax_reference(x, axis=axis, log_output=is_log)
    if dtype == np.float64 and is_log:
        assert_log_softmax_close(y, reference, eps_factor=FLOAT64_RTOL, eps=1.0, dtype=np.float64)
    elif dtype == np.float64:
        np.testing.assert_allclose(y, reference, rtol=FLOAT64_RTOL, atol=0)
    else:
        rtol = LOG_FLOAT16_RTOL if is_log else FLOAT16_RTOL
        np.testing.assert_allclose(y.astype(np.float64), reference, rtol=rtol, atol=FLOAT16_ATOL)
        assert is_log or not np.signbit(y).any()


@pytest.mark.parametrize("dtype", [np.bool_, np.int8, np.uint8, np.int16, np.int32, np.int64, np.uint64])
def test_integer_and_bool_input(dtype, operation, backend, rng):
    """Integers and bool become float64, as in SciPy."""
    function, is_log = public_function(operation)
    if dtype is np.bool_:
        x = rng.integers(0, 2, (3, 37)).astype(bool)
    else:
        info = np.iinfo(dtype)
        x = rng.integers(max(info.min, -60), min(info.max, 60), (3, 37), endpoint=True).astype(dtype)
    for axis in (-1, 0):
        y = run_unmodified(function, x, axis=axis, backend=backend)
        assert y.dtype == np.float64
        reference = softmax_reference(x, axis=axis, log_output=is_log)
        if is_log:
            assert_log_softmax_close(y, reference, eps_factor=FLOAT64_RTOL, eps=1.0, dtype=np.float64)
        else:
            np.testing.assert_allclose(y, reference, rtol=FLOAT64_RTOL, atol=0)


# ---------------------------------------------------------------- out=


def test_out_contiguous(operation, backend, rng):
    function, is_log = public_function(operation)
    cases = [(normal((4, 45), rng), -1), (np.asfortranarray(normal((45, 4), rng)), 0), (normal((3, 5, 7), rng), 1)]
    for x, axis in cases:
        expected = run_unmodified(function, x, axis=axis, backend=backend)
        out = np.full(x.shape, np.nan, dtype=np.float32)
        result = run_unmodified(function, x, axis=axis, out=out, backend=backend)
        assert result is out
        np.testing.assert_array_equal(out, expected)
        check_float32_result(out, x, axis, is_log)


def test_out_zero_dimensional(operation, backend):
    function, is_log = public_function(operation)
    for x in (np.array(2.5, np.float32), np.array(-3.0, np.float64)):
        out = np.empty((), x.dtype)
        assert run_unmodified(function, x, out=out, backend=backend) is out
        assert out == (0.0 if is_log else 1.0)


def test_out_non_contiguous(operation, backend, rng):
    function, is_log = public_function(operation)
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
        check_float32_result(out, x, -1, is_log)
        mask = np.ones(big.shape, bool)
        view(mask)[...] = False
        np.testing.assert_array_equal(big[mask], untouched[mask], err_msg="out= wrote outside its view")


def test_out_non_contiguous_along_other_axis(operation, backend, rng):
    function, is_log = public_function(operation)
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
def test_out_is_x_in_place(make, axis, operation, backend, rng):
    function, is_log = public_function(operation)
    x = make(rng)
    original = x.copy()
    expected = function(original, axis=axis, backend=backend)
    result = function(x, axis=axis, out=x, backend=backend)
    assert result is x
    np.testing.assert_array_equal(x, expected)
    check_float32_result(x, original, axis, is_log)


def test_out_in_place_other_dtypes(operation, backend, rng):
    function, is_log = public_function(operation)
    for dtype in (np.float64, np.float16):
        x = normal((3, 41), rng).astype(dtype)
        original = x.copy()
        expected = function(original, backend=backend)
        assert function(x, out=x, backend=backend) is x
        np.testing.assert_array_equal(x, expected)


@pytest.mark.parametrize("n", [5, 100, 1000, 4099])
def test_result_independent_of_address(n, operation, backend, rng):
    """The same row at every offset within a 64-byte line gives the same bits: no rounding
    depends on where the kernel's vectors happen to be aligned."""
    function, _ = public_function(operation)
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

"""Bad input gives the same clear Python exception on every backend, never a crash, and never
modifies x; the inputs NumPy converts (integers, bool, lists) work."""
import numpy as np
import pytest

from conftest import public_function
from softmaxlib import _dispatch, three_pass

try:
    from numpy.exceptions import AxisError
except ImportError:  # NumPy < 1.25
    from numpy import AxisError


def _x():
    return np.random.default_rng(5).standard_normal((3, 17)).astype(np.float32)


@pytest.mark.parametrize("x, message", [
    (np.ones(4, np.complex64), "dtype complex64"),
    (np.ones(4, np.complex128), "dtype complex128"),
    (np.array([1.0, "a"], dtype=object), "dtype object"),
    (np.array(["1", "2"]), "dtype <U1"),
    (np.array([b"1", b"2"]), "dtype [|]S1"),
    (np.zeros(3, "datetime64[s]"), "dtype datetime64"),
    (np.zeros(3, [("a", np.float32)]), "dtype"),
    (None, "dtype object"),
    ("a string", "dtype <U8"),
    ({"a": 1.0}, "dtype object"),
    ([1.0, None], "dtype object"),
])
def test_wrong_dtype_is_a_type_error(x, message, operation, backend):
    function, _ = public_function(operation)
    with pytest.raises(TypeError, match=message):
        function(x, backend=backend)


@pytest.mark.parametrize("shape, axis", [((3, 4), 2), ((3, 4), -3), ((5,), 1), ((5,), -2), ((), 1), ((), -2),
                                         ((2, 0), 7)])
def test_axis_out_of_range_is_an_axis_error(shape, axis, operation, backend):
    function, _ = public_function(operation)
    x = np.ones(shape, np.float32)
    with pytest.raises(AxisError, match=f"axis {axis} is out of bounds for an array of dimension {len(shape)}"):
        function(x, axis=axis, backend=backend)
    assert issubclass(AxisError, ValueError)


@pytest.mark.parametrize("axis, type_name", [(1.5, "float"), (1.0, "float"), ("0", "str"), (None, "NoneType"),
                                             ([0], "list"), (np.float32(0), "float32")])
def test_non_integer_axis_is_a_type_error(axis, type_name, operation, backend):
    function, _ = public_function(operation)
    with pytest.raises(TypeError, match=f"axis must be an integer, not {type_name}"):
        function(np.ones((2, 3), np.float32), axis=axis, backend=backend)


@pytest.mark.parametrize("axis", [np.int64(-1), np.uint8(1), 1, np.array(1)])
def test_integer_like_axis_works(axis, operation, backend):
    function, _ = public_function(operation)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(function(x, axis=axis, backend=backend), function(x, axis=int(axis), backend=backend))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, np.int32])
@pytest.mark.parametrize("out_shape", [(3, 16), (17, 3), (3, 17, 1), (1, 17), (51,), ()])
def test_wrong_out_shape(out_shape, dtype, operation, backend):
    function, _ = public_function(operation)
    x = _x().astype(dtype)
    out = np.zeros(out_shape, np.float64 if dtype == np.int32 else dtype)
    with pytest.raises(ValueError, match=r"out has shape .*, but the result has shape \(3, 17\)"):
        function(x, out=out, backend=backend)
    assert (out == 0).all()


@pytest.mark.parametrize("x_dtype, out_dtype", [
    (np.float32, np.float64), (np.float64, np.float32), (np.float16, np.float32), (np.float32, np.float16),
    (np.int64, np.float32), (np.bool_, np.float32), (np.float32, np.int32), (np.float32, np.complex64),
])
def test_wrong_out_dtype(x_dtype, out_dtype, operation, backend):
    function, _ = public_function(operation)
    x = _x().astype(x_dtype)
    out = np.zeros(x.shape, out_dtype)
    with pytest.raises((TypeError, ValueError), match="out has dtype .*, but the result has dtype"):
        function(x, out=out, backend=backend)
    assert (out == 0).all()


def test_read_only_out(operation, backend):
    function, _ = public_function(operation)
    x = _x()
    out = np.zeros_like(x)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        function(x, out=out, backend=backend)
    with pytest.raises(ValueError, match="read-only"):  # in place on a read-only x
        x.flags.writeable = False
        function(x, out=x, backend=backend)


@pytest.mark.parametrize("out", [[[0.0] * 17] * 3, (0.0,) * 51, 0.0, "out", memoryview(bytearray(204))],
                         ids=["list", "tuple", "float", "str", "memoryview"])
def test_out_not_an_ndarray(out, operation, backend):
    function, _ = public_function(operation)
    x = _x()
    with pytest.raises(TypeError, match=f"out must be a NumPy array, not {type(out).__name__}"):
        function(x, out=out, backend=backend)


@pytest.mark.parametrize("variant", ["", "Reload", "fused", None, 0])
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_unknown_variant(name, variant, backend):
    known = ", ".join(map(repr, three_pass.VARIANTS[name]))
    with pytest.raises(ValueError, match=f"^{name} variant must be one of {known}, not {variant!r}$"):
        getattr(three_pass, name)(_x(), variant=variant, backend=backend)


def test_log_softmax_has_no_reload_exact_variant(backend):
    with pytest.raises(ValueError, match="log_softmax variant must be one of 'reload', 'recompute', not 'reload_exact'"):
        three_pass.log_softmax(_x(), variant="reload_exact", backend=backend)


@pytest.mark.parametrize("name", ["avx9000", "AVX2", "", "sse2", "cuda"])
def test_unknown_backend(name, operation):
    function, _ = public_function(operation)
    with pytest.raises(ValueError, match=f"unknown softmaxlib backend {name!r}; the backends are avx512, avx2, numba"):
        function(_x(), backend=name)


@pytest.mark.parametrize("unusable", ["avx512", "avx2"])
def test_known_backend_not_usable(unusable, operation, monkeypatch):
    """Simulated: the CPU lacks the features (USABLE_BACKENDS without it), or the C part is missing."""
    function, _ = public_function(operation)
    usable = tuple(b for b in _dispatch.USABLE_BACKENDS if b != unusable) or ("numba",)
    monkeypatch.setattr(_dispatch, "USABLE_BACKENDS", usable)
    with pytest.raises(ValueError, match=f"backend {unusable!r} is not usable here .*this CPU lacks .*usable: "):
        function(_x(), backend=unusable)
    monkeypatch.setattr(_dispatch, "lib", None)
    with pytest.raises(ValueError, match=f"backend {unusable!r} is not usable here \\(the C kernels are not built\\)"):
        function(_x(), backend=unusable)


@pytest.mark.parametrize("unusable", [b for b in _dispatch.ALL_BACKENDS if b not in _dispatch.USABLE_BACKENDS]
                         or [pytest.param(None, marks=pytest.mark.skip(reason="every backend is usable here"))])
def test_really_unusable_backend(unusable, operation):
    function, _ = public_function(operation)
    with pytest.raises(ValueError, match=f"backend {unusable!r} is not usable here"):
        function(_x(), backend=unusable)


FAILING_CALLS = [
    ("bad axis", dict(axis=5)),
    ("float axis", dict(axis=0.5)),
    ("bad variant", dict(variant="bogus")),
    ("unknown backend", dict(backend="avx9000")),
    ("out wrong shape", dict(out=np.zeros((17, 3), np.float32))),
    ("out wrong dtype", dict(out=np.zeros((3, 17), np.float64))),
    ("out a list", dict(out=[0.0] * 51)),
    ("out is x and a bad axis", dict(out="x", axis=2)),
    ("out is x and a bad variant", dict(out="x", variant="bogus")),
    ("out is x and a bad backend", dict(out="x", backend="nope")),
]


@pytest.mark.parametrize("kwargs", [kwargs for _, kwargs in FAILING_CALLS], ids=[name for name, _ in FAILING_CALLS])
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_failed_call_leaves_x_unchanged(name, kwargs, backend):
    x = _x()
    x_before = x.copy()
    kwargs = dict(kwargs)
    if isinstance(kwargs.get("out"), str):
        kwargs["out"] = x
    kwargs.setdefault("backend", backend)
    with pytest.raises((TypeError, ValueError)):
        getattr(three_pass, name)(x, **kwargs)
    np.testing.assert_array_equal(x, x_before)


@pytest.mark.parametrize("dtype", [np.bool_, np.int8, np.uint8, np.int16, np.int32, np.int64, np.uint64])
def test_integer_and_bool_input_become_float64(dtype, operation, backend):
    function, _ = public_function(operation)
    x = (np.arange(12).reshape(3, 4) % 3).astype(dtype)
    y = function(x, backend=backend)
    assert y.dtype == np.float64
    np.testing.assert_array_equal(y, function(x.astype(np.float64), backend=backend))
    out = np.empty((3, 4), np.float64)
    assert function(x, out=out, backend=backend) is out
    np.testing.assert_array_equal(out, y)


@pytest.mark.parametrize("x, dtype", [([1.0, 2.0, 3.0], np.float64), ([[1, 2], [3, 4]], np.float64),
                                      ([True, False], np.float64), ((0.5, -0.5), np.float64), (3, np.float64),
                                      (2.0, np.float64), ([np.float32(1), np.float32(2)], np.float32)])
def test_lists_and_scalars_work(x, dtype, operation, backend):
    function, _ = public_function(operation)
    y = function(x, backend=backend)
    assert isinstance(y, np.ndarray) and y.dtype == dtype and y.shape == np.shape(x)
    np.testing.assert_array_equal(y, function(np.asarray(x, dtype=dtype), backend=backend))


def test_read_only_x_works(operation, backend):
    function, _ = public_function(operation)
    x = _x()
    expected = function(x, backend=backend)
    x.flags.writeable = False
    np.testing.assert_array_equal(function(x, backend=backend), expected)
    frozen = np.frombuffer(x.tobytes(), np.float32).reshape(x.shape)  # read-only memory, not just a flag
    np.testing.assert_array_equal(function(frozen, backend=backend), expected)


@pytest.mark.parametrize("dtype", [">f4", ">f8"])
def test_non_native_byte_order_works(dtype, operation, backend):
    function, _ = public_function(operation)
    x = _x()
    y = function(x.astype(dtype), backend=backend)
    np.testing.assert_array_equal(y, function(x.astype(dtype).astype(np.dtype(dtype).newbyteorder("=")),
                                              backend=backend))


def test_ragged_list_is_a_value_error(operation, backend):
    function, _ = public_function(operation)
    with pytest.raises(ValueError, match="inhomogeneous"):
        function([[1.0, 2.0], [3.0]], backend=backend)

"""Bad input: every public row function raises what its reference raises, or neither raises.

The references: scipy.special.softmax / log_softmax for the softmax functions, the same
computation in NumPy for StableMax (s(x) = x + 1 or 1 / (1 - x), then s / sum s), and, for
`out=` (which SciPy does not take), that NumPy computation writing its last ufunc into `out`.
"The same" is the same kind of exception: the first builtin class (or numpy.exceptions.AxisError)
of each exception's type, so NumPy's UFuncTypeError counts as the TypeError it derives from.

softmaxlib's rule is that bad input gets a clear exception naming the problem, never a silently
wrong result. Where it deliberately differs from its reference, INTENDED documents the case and
the reason, and the test holds softmaxlib to its own behaviour there instead (the references'
behaviour is only described: it may change between versions).
"""
import importlib
import re
import warnings

import numpy as np
import pytest
import scipy.special

import softmaxlib
from softmaxlib import _catalog

try:
    from numpy.exceptions import AxisError
except ImportError:  # NumPy < 1.25
    from numpy import AxisError

# name -> (function, the catalog function it computes): the auto path and each family's functions
PUBLIC = {"softmaxlib.softmax": (softmaxlib.softmax, "softmax"),
          "softmaxlib.log_softmax": (softmaxlib.log_softmax, "log_softmax")}
for _kernel in _catalog.by_signature("rows").values():
    PUBLIC.setdefault(f"softmaxlib.{_kernel.family}.{_kernel.function}",
                      (getattr(importlib.import_module(f"softmaxlib.{_kernel.family}"), _kernel.function),
                       _kernel.function))


def numpy_reference(function):
    """function(x, axis, out) in NumPy, as SciPy computes softmax: np.asarray, then ufuncs, the
    last one writing into out."""
    is_log, is_stablemax = function.startswith("log_"), function.endswith("stablemax")

    def reference(x, axis=-1, out=None):
        x = np.asarray(x)
        if is_stablemax:
            weights = np.where(x >= 0, x + 1, 1 / (1 - x))
            log_weights = np.log(weights) if is_log else None
        else:
            log_weights = x - np.max(x, axis=axis, keepdims=True)
            weights = np.exp(log_weights)
        total = np.sum(weights, axis=axis, keepdims=True)
        return np.subtract(log_weights, np.log(total), out=out) if is_log else np.divide(weights, total, out=out)

    return reference


SCIPY = {"softmax": scipy.special.softmax, "log_softmax": scipy.special.log_softmax}


def reference_of(function, kwargs):
    if "out" in kwargs or function not in SCIPY:
        return numpy_reference(function)
    return SCIPY[function]


def _rows():
    return np.random.default_rng(11).standard_normal((3, 17)).astype(np.float32)


def _read_only(a):
    a.flags.writeable = False
    return a


def _read_only_x_as_out():
    x = _read_only(_rows())
    return x, dict(out=x)


def _generator():
    return (v for v in (1.0, 2.0, 3.0))


ONES = np.ones((3, 4), np.float32)
# id -> make() -> (x, keyword arguments); made afresh for every call
CASES = {
    # what x is
    "complex64": lambda: (np.array([0, 1], np.complex64), {}),
    "complex128": lambda: (np.array([[0, 1j], [2, 3]]), {}),
    "object_mixed": lambda: (np.array([1.0, "a"], dtype=object), {}),
    "object_floats": lambda: (np.array([1.0, 2.0], dtype=object), {}),
    "object_0d": lambda: (np.array(1.0, dtype=object), {}),
    "python_ints_beyond_int64": lambda: ([10**30, 1], {}),
    "unicode_array": lambda: (np.array(["1", "2"]), {}),
    "bytes_array": lambda: (np.array([b"1", b"2"]), {}),
    "string": lambda: ("a string", {}),
    "datetime64": lambda: (np.zeros(3, "datetime64[s]"), {}),
    "timedelta64": lambda: (np.zeros(3, "timedelta64[s]"), {}),
    "structured": lambda: (np.zeros(3, [("a", np.float32)]), {}),
    "longdouble": lambda: (np.ones(3, np.longdouble), {}),
    "None": lambda: (None, {}),
    "dict": lambda: ({"a": 1.0}, {}),
    "set": lambda: ({1.0, 2.0}, {}),
    "generator": lambda: (_generator(), {}),
    "list_with_None": lambda: ([1.0, None], {}),
    "ragged_lists": lambda: ([[1.0, 2.0], [3.0]], {}),
    "ragged_nested_lists": lambda: ([[1.0], [[2.0]]], {}),
    "bool": lambda: (np.array([True, False, True]), {}),
    "empty_list": lambda: ([], {}),
    "empty_rows": lambda: (np.ones((2, 0), np.float32), {}),
    # axis
    "axis_out_of_range": lambda: (ONES, dict(axis=2)),
    "axis_out_of_range_negative": lambda: (ONES, dict(axis=-3)),
    "axis_out_of_range_empty": lambda: (np.ones((2, 0), np.float32), dict(axis=7)),
    "0d_axis1": lambda: (np.float32(1.0), dict(axis=1)),
    "0d_axis-2": lambda: (np.array(1.0, np.float32), dict(axis=-2)),
    "axis_float": lambda: (ONES, dict(axis=1.5)),
    "axis_integral_float": lambda: (ONES, dict(axis=1.0)),
    "axis_numpy_float": lambda: (ONES, dict(axis=np.float32(0))),
    "axis_str": lambda: (ONES, dict(axis="0")),
    "axis_list": lambda: (ONES, dict(axis=[0])),
    "axis_array": lambda: (ONES, dict(axis=np.array([0]))),
    "axis_bool": lambda: (ONES, dict(axis=True)),
    "axis_None": lambda: (ONES, dict(axis=None)),
    "axis_tuple": lambda: (ONES, dict(axis=(0, 1))),
    "axis_beyond_int64": lambda: (ONES, dict(axis=2**70)),
    # out=
    "out_shape_other_length": lambda: (_rows(), dict(out=np.zeros((3, 16), np.float32))),
    "out_shape_transposed": lambda: (_rows(), dict(out=np.zeros((17, 3), np.float32))),
    "out_shape_one_row": lambda: (_rows(), dict(out=np.zeros((1, 17), np.float32))),
    "out_shape_extra_axis": lambda: (_rows(), dict(out=np.zeros((3, 17, 1), np.float32))),
    "out_shape_flat": lambda: (_rows(), dict(out=np.zeros(51, np.float32))),
    "out_0d": lambda: (_rows(), dict(out=np.zeros((), np.float32))),
    "out_shape_broadcast": lambda: (_rows(), dict(out=np.zeros((2, 3, 17), np.float32))),
    "out_float64": lambda: (_rows(), dict(out=np.zeros((3, 17), np.float64))),
    "out_float16": lambda: (_rows(), dict(out=np.zeros((3, 17), np.float16))),
    "out_int32": lambda: (_rows(), dict(out=np.zeros((3, 17), np.int32))),
    "out_complex64": lambda: (_rows(), dict(out=np.zeros((3, 17), np.complex64))),
    "out_byteswapped": lambda: (_rows(), dict(out=np.zeros((3, 17), np.dtype(np.float32).newbyteorder("S")))),
    "out_float32_for_float64": lambda: (_rows().astype(np.float64), dict(out=np.zeros((3, 17), np.float32))),
    "out_float32_for_integers": lambda: (np.ones((3, 17), np.int64), dict(out=np.zeros((3, 17), np.float32))),
    "out_read_only": lambda: (_rows(), dict(out=_read_only(np.zeros((3, 17), np.float32)))),
    "out_is_x_read_only": _read_only_x_as_out,
    "out_list": lambda: (_rows(), dict(out=[[0.0] * 17] * 3)),
    "out_tuple": lambda: (_rows(), dict(out=(np.zeros((3, 17), np.float32),))),
    "out_float": lambda: (_rows(), dict(out=0.0)),
    "out_memoryview": lambda: (_rows(), dict(out=memoryview(bytearray(204)))),
}

SOFTMAXES = ("softmax", "log_softmax")
STABLEMAXES = ("stablemax", "log_stablemax")
ALL = SOFTMAXES + STABLEMAXES
DTYPE_ERROR = r"softmaxlib needs a real floating, integer or bool array, not dtype"
AXIS_TYPE_ERROR = r"axis must be an integer, not"
RETURNS = None  # softmaxlib returns a result (checked against the same values in float64)

# id -> (the catalog functions concerned, what softmaxlib does: (exception, message) or RETURNS,
# why it differs from the reference). Each was checked: softmaxlib's behaviour is the intended one.
INTENDED = {
    "complex64": (ALL, (TypeError, DTYPE_ERROR + " complex64"),
                  "SciPy (and NumPy for StableMax) compute a complex-valued 'softmax', which is no "
                  "probability; softmaxlib refuses complex input, naming the dtype"),
    "complex128": (ALL, (TypeError, DTYPE_ERROR + " complex128"), "as complex64"),
    "object_floats": (STABLEMAXES, (TypeError, DTYPE_ERROR + " object"),
                      "NumPy computes StableMax with the Python floats of an object array: here 1 / (1 - x) "
                      "at x = 1 raises ZeroDivisionError (np.where evaluates both branches), elsewhere it "
                      "returns an object array (SciPy's softmax raises TypeError: no exp for float objects); "
                      "softmaxlib refuses object arrays, whatever they hold"),
    "object_0d": (ALL, (TypeError, DTYPE_ERROR + " object"),
                  "SciPy and NumPy return 1 (0 for the logs) without looking at the one element of a 0-d "
                  "object array; softmaxlib refuses object arrays, whatever they hold"),
    "python_ints_beyond_int64": (STABLEMAXES, (TypeError, DTYPE_ERROR + " object"),
                                 "NumPy computes StableMax with the Python ints of an object array (as "
                                 "object_floats: ZeroDivisionError at x = 1)"),
    "longdouble": (ALL, (TypeError, r"softmaxlib supports float16, float32 and float64, not float128"),
                   "SciPy computes in long double; softmaxlib has no long double kernels and says so rather "
                   "than rounding the input to float64 silently"),
    "None": (("log_softmax",), (TypeError, DTYPE_ERROR + " object"),
             "SciPy's log_softmax fails inside with AttributeError ('NoneType' object has no attribute "
             "'ndim'), which does not name the problem; softmaxlib raises the TypeError its softmax raises"),
    "dict": (("log_softmax",), (TypeError, DTYPE_ERROR + " object"), "as None"),
    "set": (("log_softmax",), (TypeError, DTYPE_ERROR + " object"), "as None"),
    "generator": (("log_softmax",), (TypeError, DTYPE_ERROR + " object"), "as None"),
    "bool": (ALL, RETURNS,
             "NumPy refuses to subtract bools (SciPy raises TypeError: numpy boolean subtract); softmaxlib "
             "converts bool to float64 as it does integers (docs/semantics.md), giving the softmax of the "
             "0/1 values"),
    "empty_list": (SOFTMAXES, RETURNS,
                   "SciPy's max of an empty row raises ValueError (zero-size array to reduction operation "
                   "maximum); softmaxlib returns an empty result of the same shape (docs/semantics.md, rule 5), "
                   "as PyTorch and JAX do"),
    "empty_rows": (SOFTMAXES, RETURNS, "as empty_list"),
    "axis_None": (ALL, (TypeError, AXIS_TYPE_ERROR + " NoneType"),
                  "SciPy normalizes over the whole array (its default); softmaxlib takes one integer axis and "
                  "refuses None rather than guess (docs/semantics.md: softmax(x.ravel()).reshape(x.shape))"),
    "axis_tuple": (ALL, (TypeError, AXIS_TYPE_ERROR + " tuple"),
                   "SciPy normalizes over several axes at once; softmaxlib takes one integer axis"),
    "axis_beyond_int64": (ALL, (AxisError, r"axis 1180591620717411303424 is out of bounds for an array of dimension 2"),
                          "NumPy fails converting the axis to a C long (OverflowError); softmaxlib reports the "
                          "axis as out of bounds, which is the problem"),
    "out_shape_broadcast": (ALL, (ValueError, r"out has shape \(2, 3, 17\), but the result has shape \(3, 17\)"),
                            "NumPy's ufuncs broadcast the result into a larger out; softmaxlib's out must have "
                            "exactly the result's shape"),
    "out_float64": (ALL, (ValueError, r"out has dtype float64, but the result has dtype float32"),
                    "NumPy casts the result into out (same_kind casting); softmaxlib's out must have the result's "
                    "dtype (docs/semantics.md), so that nothing is widened or rounded silently"),
    "out_float16": (ALL, (ValueError, r"out has dtype float16, but the result has dtype float32"),
                    "as out_float64, and NumPy would round the float32 result to float16"),
    "out_int32": (ALL, (ValueError, r"out has dtype int32, but the result has dtype float32"),
                  "NumPy raises a TypeError (UFuncTypeError: cannot cast the output), softmaxlib the ValueError "
                  "it raises for every out of another dtype than the result's (docs/semantics.md)"),
    "out_complex64": (ALL, (ValueError, r"out has dtype complex64, but the result has dtype float32"),
                      "as out_float64"),
    "out_byteswapped": (ALL, (ValueError, r"out has dtype >f4, but the result has dtype float32"),
                        "NumPy writes float32 into a byte-swapped out; softmaxlib's results are in native byte "
                        "order, and out must have the result's dtype"),
    "out_float32_for_float64": (ALL, (ValueError, r"out has dtype float32, but the result has dtype float64"),
                                "as out_float64: NumPy would round the float64 result to float32"),
    "out_float32_for_integers": (ALL, (ValueError, r"out has dtype float32, but the result has dtype float64"),
                                 "integers give a float64 result; NumPy would round it to float32"),
    "out_tuple": (ALL, (TypeError, r"out must be a NumPy array, not tuple"),
                  "NumPy's ufuncs take a tuple of outputs; softmaxlib's out is one array"),
}


def kind(error):
    """The first builtin exception class of the error's type, or AxisError."""
    for cls in type(error).__mro__:
        if cls is AxisError or cls.__module__ == "builtins":
            return cls
    return type(error)


def outcome(call):
    """(None, result) if call() returns, else (the kind of its exception, the exception)."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        try:
            return None, call()
        except Exception as error:  # noqa: BLE001  (compared with the other side's)
            return kind(error), error


def describe(result):
    kind_, value = result
    return "returns" if kind_ is None else f"{type(value).__name__}: {value}"


@pytest.mark.parametrize("case", CASES)
def test_errors_match_the_reference(case):
    failures = []
    for name, (function, computes) in PUBLIC.items():
        x, kwargs = CASES[case]()
        ours = outcome(lambda: function(x, **kwargs))
        concerned, expected, reason = INTENDED.get(case, ((), None, ""))
        if computes in concerned:  # a documented difference: softmaxlib's own behaviour
            if expected is RETURNS:
                if ours[0] is not None:
                    failures.append(f"{name}: should return ({reason}), but {describe(ours)}")
                    continue
                x, kwargs = CASES[case]()
                values = function(np.asarray(x, np.float64), **kwargs)
                np.testing.assert_array_equal(ours[1], values, err_msg=name)
            elif not (ours[0] is not None and isinstance(ours[1], expected[0])
                      and re.search(expected[1], str(ours[1]))):
                failures.append(f"{name}: should raise {expected[0].__name__} matching {expected[1]!r}, "
                                f"but {describe(ours)}")
            continue
        x, kwargs = CASES[case]()
        theirs = outcome(lambda: reference_of(computes, kwargs)(x, **kwargs))
        if ours[0] is not theirs[0]:
            failures.append(f"{name}: {describe(ours)}; the reference: {describe(theirs)}")
    assert not failures, f"{case}:\n  " + "\n  ".join(failures)


def test_intended_differences_name_known_cases():
    assert set(INTENDED) <= set(CASES)
    for case, (concerned, _, reason) in INTENDED.items():
        assert concerned and set(concerned) <= set(ALL) and reason, case

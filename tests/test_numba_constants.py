"""The Numba twins use the C kernels' constants, bit for bit.

Every #define of csrc/exp_constants.h and csrc/log_constants.h is parsed (hex-float, decimal and
integer literals, rounded to their C type from the exact literal) and matched to its twin in
softmaxlib/_numba/, or listed in C_ONLY with the reason it has none: a constant added to either
header fails here until it is given a twin or a reason. A float literal (suffix f) must have a
np.float32 twin with the same bits: a Python float twin would make Numba compute in float64. A few
constants of the kernel templates that the twins share are checked by value (KERNEL_TWINS).
"""
import re
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

import softmaxlib.optim
from softmaxlib._numba import _exp, _log, _rows, optim, quant, stablemax, three_pass, two_pass

CSRC = Path(__file__).resolve().parent.parent / "csrc"

# {header: {C name: (module, twin name)}}
TWINS = {
    "exp_constants.h": {
        "SML_LOG2E": (_exp, "LOG2E"),
        "SML_MINUS_LN2_HI": (_exp, "MINUS_LN2_HI"),
        "SML_MINUS_LN2_LO": (_exp, "MINUS_LN2_LO"),
        "SML_EXP_C6": (_exp, "EXP_C6"),
        "SML_EXP_C5": (_exp, "EXP_C5"),
        "SML_EXP_C4": (_exp, "EXP_C4"),
        "SML_EXP_C3": (_exp, "EXP_C3"),
        "SML_EXP_C2": (_exp, "EXP_C2"),
        "SML_EXP_C1_MINUS_1": (_exp, "EXP_C1_MINUS_1"),
        "SML_EXP_CUTOFF": (_exp, "EXP_CUTOFF"),
        "SML_FLT_MIN": (_rows, "FLT_MIN"),
        "SML_SCALE_FLOOR": (_exp, "SCALE_FLOOR"),
    },
    "log_constants.h": {
        "SML_SQRT_HALF_BITS": (_log, "SQRT_HALF_BITS"),
        "SML_LN2_HI": (_log, "LN2_HI"),
        "SML_LN2_LO": (_log, "LN2_LO"),
        "SML_LOG_L6": (_log, "LOG_L6"),
        "SML_LOG_L5": (_log, "LOG_L5"),
        "SML_LOG_L4": (_log, "LOG_L4"),
        "SML_LOG_L3": (_log, "LOG_L3"),
        "SML_LOG_L2": (_log, "LOG_L2"),
        "SML_LOG_L1": (_log, "LOG_L1"),
        "SML_LOG_L0": (_log, "LOG_L0"),
    },
}

# {header: {C name: why the twins have no such constant}}; every constant of these headers has a twin today.
C_ONLY = {
    "exp_constants.h": {},
    "log_constants.h": {},
}

# Constants of the kernel templates that the twins share, compared by value (the types may differ:
# the twins keep OUTPUT_SCALE in float64, SHIFT_HEADROOM as a float32). {(header, C name): twin}
KERNEL_TWINS = {
    ("exp_pairs.h", "X_CLAMP"): (_exp, "X_CLAMP"),
    ("three_pass_kernels.h", "SHIFT_HEADROOM"): (three_pass, "SHIFT_HEADROOM"),
    ("three_pass_kernels.h", "PAIR_ROW_LIMIT"): (three_pass, "PAIR_ROW_LIMIT"),
    ("three_pass_kernels.h", "OUTPUT_SCALE"): (_rows, "OUTPUT_SCALE"),
    ("three_pass_kernels.h", "FLT_MIN_SCALED"): (_rows, "FLT_MIN_SCALED"),
    ("two_pass_kernels.h", "EXPONENT_LIMIT"): (two_pass, "EXPONENT_LIMIT"),
    ("stablemax_kernels.h", "EXACT_BELOW"): (stablemax, "STABLE_EXACT_BELOW"),
    ("stablemax_kernels.h", "SUM_RANGE"): (stablemax, "STABLE_SUM_RANGE"),
    ("code_search.h", "SUBNORMAL_RECIPROCAL_ABOVE"): (quant, "SUBNORMAL_RECIPROCAL_ABOVE"),
    ("code_search.h", "SUBNORMAL_GRID_ROUNDER"): (quant, "SUBNORMAL_GRID_ROUNDER"),
    ("optim_kernels.h", "OPTIM_MAX_BLOCK"): (softmaxlib.optim, "MAX_BLOCKSIZE"),  # the Python check of blocksize
    ("optim_kernels.h", "TINY_ABSMAX_SCALE"): (optim, "TINY_ABSMAX_SCALE"),
}

DEFINE = re.compile(r"^[ \t]*#[ \t]*define[ \t]+(\w+)(\()?[ \t]*(.*)$", re.MULTILINE)
FLOAT = re.compile(r"([+-]?)(0x[0-9a-f]*\.?[0-9a-f]*p[+-]?\d+|(?:\d+\.\d*|\.\d+)(?:e[+-]?\d+)?|\d+e[+-]?\d+)(f?)",
                   re.IGNORECASE)
INTEGER = re.compile(r"([+-]?)(0x[0-9a-f]+|\d+)(?:[ul]*)", re.IGNORECASE)


def exact_value(body):
    """The exact rational value of an unsigned C float literal."""
    if body[:2].lower() != "0x":
        return Fraction(body)
    mantissa, exponent = body[2:].lower().split("p")
    whole, _, fraction = mantissa.partition(".")
    return int(whole + fraction or "0", 16) * Fraction(2) ** (int(exponent) - 4 * len(fraction))


def round_to_float32(exact):
    """The float32 nearest the exact value, ties to even, as the compiler rounds a literal
    (float(exact) is rounded once; rounding it again could be off at a float32 midpoint)."""
    near = np.float32(float(exact))
    candidates = (np.nextafter(near, np.float32(-np.inf)), near, np.nextafter(near, np.float32(np.inf)))
    return min(candidates, key=lambda c: (abs(Fraction(float(c)) - exact), int(np.array(c).view(np.uint32)) & 1))


def literal(text):
    """(C type, value) of a numeric literal: "float" (a np.float32), "double" (a float) or "int";
    None for anything else."""
    text = text.strip()
    while text.startswith("(") and text.endswith(")"):
        text = text[1:-1].strip()
    match = FLOAT.fullmatch(text)
    if match:
        sign, body, suffix = match.groups()
        exact = exact_value(body)
        value = round_to_float32(exact) if suffix else float(exact)
        return ("float" if suffix else "double"), (-value if sign == "-" else value)
    match = INTEGER.fullmatch(text)
    if match:
        sign, body = match.groups()
        base = 8 if len(body) > 1 and body[0] == "0" and body[1] not in "xX" else 0
        return "int", (-1 if sign == "-" else 1) * int(body, base)
    return None


def defines(header):
    """{name: (C type, value) or None} of the header's #defines, comments removed."""
    text = (CSRC / header).read_text()
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.DOTALL)
    text = re.sub(r"//[^\n]*", "", text)
    return {name: None if function_like else literal(value) for name, function_like, value in DEFINE.findall(text)}


def bits(value, dtype):
    return int(np.array(value, dtype).view(np.uint32 if dtype == np.float32 else np.uint64))


def assert_same_constant(c_name, c_type, c_value, twin, twin_name):
    if c_type == "float":
        assert isinstance(twin, np.float32), f"{twin_name} is {type(twin).__name__}, {c_name} a float"
        assert bits(twin, np.float32) == bits(c_value, np.float32), \
            f"{twin_name} = {float(twin).hex()}, {c_name} = {float(c_value).hex()}"
    elif c_type == "double":
        assert isinstance(twin, (float, np.float64)), f"{twin_name} is {type(twin).__name__}, {c_name} a double"
        assert bits(twin, np.float64) == bits(c_value, np.float64), \
            f"{twin_name} = {float(twin).hex()}, {c_name} = {c_value.hex()}"
    else:
        assert isinstance(twin, (int, np.integer)) and not isinstance(twin, bool), \
            f"{twin_name} is {type(twin).__name__}, {c_name} an integer"
        assert int(twin) == c_value, f"{twin_name} = {int(twin):#x}, {c_name} = {c_value:#x}"


@pytest.mark.parametrize("header", sorted(TWINS))
def test_every_constant_has_a_twin_or_a_reason(header):
    found = defines(header)
    assert found, f"no #define parsed in csrc/{header}"
    twinned, c_only = set(TWINS[header]), set(C_ONLY[header])
    assert not twinned & c_only, f"both twinned and C-only: {sorted(twinned & c_only)}"
    assert not set(found) - twinned - c_only, \
        f"csrc/{header} defines {sorted(set(found) - twinned - c_only)}: give each a twin in TWINS or a reason in C_ONLY"
    assert not (twinned | c_only) - set(found), f"no longer in csrc/{header}: {sorted((twinned | c_only) - set(found))}"
    unparsed = sorted(name for name in twinned if found[name] is None)
    assert not unparsed, f"not a numeric literal: {unparsed}"


@pytest.mark.parametrize("header, c_name", [(header, name) for header in sorted(TWINS) for name in TWINS[header]])
def test_twin_equals_the_header_constant(header, c_name):
    found = defines(header)
    assert found.get(c_name) is not None, f"{c_name} is not a numeric literal in csrc/{header}"
    module, twin_name = TWINS[header][c_name]
    c_type, c_value = found[c_name]
    assert_same_constant(c_name, c_type, c_value, getattr(module, twin_name), f"{module.__name__}.{twin_name}")


@pytest.mark.parametrize("header, c_name", sorted(KERNEL_TWINS))
def test_kernel_template_constant_equals_its_twin(header, c_name):
    found = defines(header)
    assert found.get(c_name) is not None, f"{c_name} is not a numeric literal in csrc/{header}"
    module, twin_name = KERNEL_TWINS[header, c_name]
    twin = getattr(module, twin_name)
    assert Fraction(float(twin)) == Fraction(float(found[c_name][1])), \
        f"{module.__name__}.{twin_name} = {float(twin)!r}, {c_name} = {found[c_name][1]!r}"


@pytest.mark.parametrize("text, expected", [
    ("0x1.5D589Ep+6f", ("float", np.float32(87.33654))),
    ("-0x1.62E43p-1f", ("float", np.float32(-0.693147182464599609375))),
    ("0x1p-126f", ("float", np.float32(2.0**-126))),
    ("-100.0f", ("float", np.float32(-100.0))),
    ("0x1.8p-97", ("double", 1.5 * 2.0**-97)),
    ("1.5e6", ("double", 1.5e6)),
    ("0x3F3504F3", ("int", 0x3F3504F3)),
    ("32", ("int", 32)),
    ("(-0x1p125f)", ("float", np.float32(-(2.0**125)))),
    ("0x1.000001p0f", ("float", np.float32(1.0))),  # a midpoint: ties to even (down)
    ("0x1.000003p0f", ("float", np.float32(1.0 + 2.0**-22))),  # a midpoint: ties to even (up)
    # just above the midpoint 1 + 2^-24, which its double rounds to (and then, ties to even, to 1)
    ("1.0000000596046448f", ("float", np.float32(1.0 + 2.0**-23))),
    ("vf_set1(1.0f)", None),
])
def test_literal_parser(text, expected):
    parsed = literal(text)
    if expected is None:
        assert parsed is None
    else:
        assert parsed[0] == expected[0] and parsed[1] == expected[1] and type(parsed[1]) is type(expected[1])

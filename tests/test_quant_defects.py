"""Regression tests of softmaxlib.quant's special cases, on every backend: NaN and inf at every
position of a block, blocks whose 1/absmax is subnormal under flush-to-zero / denormals-are-zero,
the checks of a QuantState, NaN dequantization of blocks with a non-finite absmax, and input of
any byte order."""
import numpy as np
import pytest

from softmaxlib import quant
from softmaxlib._numba import quant as numba_quant
from softmaxlib.quant import QuantState, dequantize_blockwise, quantize_blockwise
import oracle
from fpenv import flush_denormals, requires_mxcsr

f32 = np.float32
FLT_MAX = np.finfo(f32).max
CROWDED = np.sort(np.concatenate([np.linspace(-1, 1, 200), np.linspace(0.5, 0.5 + 1e-6, 56)])).astype(f32)
MAPS = {
    "dynamic signed": quant.create_dynamic_map,
    "linear without a zero code": lambda: quant.create_linear_map(add_zero=False),
    "crowded (binary search)": lambda: CROWDED.copy(),
}


# ------------------------------------------------------------------------ NaN and inf in a block

@pytest.mark.parametrize("blocksize, n", [(16, 16), (16, 40), (37, 37 * 2 + 20), (64, 64 + 63), (100, 251)])
@pytest.mark.parametrize("special", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_at_every_position(blocksize, n, special, backend, rng):
    """A NaN or an inf anywhere in a block (first, last, before or after its largest finite
    value, in the last partial block) raises naming it, or with nonfinite="propagate" makes the
    block's absmax NaN or inf, its codes the zero code and its dequantized values NaN; the other
    blocks keep their results."""
    code = quant.create_dynamic_map()
    base = (rng.standard_normal(n) * 4).astype(f32)
    q_base, state_base = quantize_blockwise(base, blocksize=blocksize, backend=backend)
    y_base = dequantize_blockwise(q_base, state_base, backend=backend)
    for position in range(n):
        x = base.copy()
        x[position] = special
        with pytest.raises(ValueError, match=rf"x\[{position}\] is {special}: quantize_blockwise needs finite"):
            quantize_blockwise(x, blocksize=blocksize, backend=backend)
        q, state = quantize_blockwise(x, blocksize=blocksize, nonfinite="propagate", backend=backend)
        block = position // blocksize
        inside = slice(block * blocksize, (block + 1) * blocksize)
        outside = np.ones(n, bool)
        outside[inside] = False
        if np.isnan(special):
            assert np.isnan(state.absmax[block]), f"x[{position}] = nan: absmax {state.absmax[block]}"
        else:
            assert state.absmax[block] == np.inf, f"x[{position}] = {special}: absmax {state.absmax[block]}"
        others = np.arange(state.absmax.size) != block
        np.testing.assert_array_equal(state.absmax[others], state_base.absmax[others])
        assert (q[inside] == oracle.zero_code(code)).all()
        np.testing.assert_array_equal(q[outside], q_base[outside])
        y = dequantize_blockwise(q, state, backend=backend)
        assert np.isnan(y[inside]).all()
        np.testing.assert_array_equal(y[outside], y_base[outside])


@pytest.mark.parametrize("blocksize", [16, 37, 64])
def test_nan_wins_over_inf_in_either_order(blocksize, backend, rng):
    n = blocksize + blocksize // 2  # one whole block and a partial one
    for first, second in ((np.nan, np.inf), (np.inf, np.nan), (-np.inf, np.nan), (np.nan, -np.inf)):
        for block_start, count in ((0, blocksize), (blocksize, n - blocksize)):
            for i, j in ((0, count - 1), (count // 2, count // 2 + 1), (1, count - 2)):
                x = rng.standard_normal(n).astype(f32)
                x[block_start + i], x[block_start + j] = first, second
                _, state = quantize_blockwise(x, blocksize=blocksize, nonfinite="propagate", backend=backend)
                assert np.isnan(state.absmax[block_start // blocksize]), (first, second, i, j)


# ----------------------------------------------------------- flush-to-zero, denormals-are-zero

HUGE = f32(2.0**126)  # above it, 1 / absmax is subnormal


@pytest.mark.subnormal  # its reference is a float32 subnormal reciprocal
def test_reciprocal_through_double_is_the_float_reciprocal():
    """For every float32 m in [2^126, FLT_MAX], the kernels' reciprocal without subnormal floats,
    (1/m in double + C) - C, equals the float division fl32(1/m) (computed here by NumPy, which
    keeps subnormals): the double rounding is innocuous."""
    m = np.arange(HUGE.view(np.uint32), np.float32(np.inf).view(np.uint32), dtype=np.uint32).view(f32)
    assert m[0] == HUGE and m[-1] == FLT_MAX and m.size == 1 << 24
    rounder = numba_quant.SUBNORMAL_GRID_ROUNDER
    with np.errstate(under="ignore"):
        expected = f32(1) / m
    through_double = (1.0 / m.astype(np.float64) + rounder) - rounder
    mismatch = np.flatnonzero(through_double != expected)
    assert mismatch.size == 0, f"m = {m[mismatch[:3]]}: {through_double[mismatch[:3]]} != {expected[mismatch[:3]]}"


def huge_blocks(rng, blocksize, blocks):
    """Blocks with absmax in (2^126, FLT_MAX] (the extremes among them), each with its absmax
    element and values whose y = x * fl32(1/absmax) is normal (at least 2^-100 of absmax)."""
    absmax = np.exp2(rng.uniform(126, 127.999, blocks)).astype(f32)
    extremes = np.array([FLT_MAX, np.nextafter(HUGE, f32(np.inf)), 2.0**127, 1.5 * 2.0**127], f32)
    absmax[:min(blocks, 4)] = extremes[:blocks]
    absmax = np.maximum(absmax, np.nextafter(HUGE, f32(np.inf)))
    fraction = rng.choice([-1, 1], (blocks, blocksize)) * np.exp2(rng.uniform(-100, 0, (blocks, blocksize)))
    fraction[:, ::3] = rng.uniform(-1, 1, (blocks, -(-blocksize // 3)))  # plenty of codes of every size
    x = (absmax[:, None].astype(np.float64) * fraction).astype(f32)
    top = rng.integers(0, blocksize, blocks)
    x[np.arange(blocks), top] = absmax * rng.choice(np.array([-1, 1], f32), blocks)
    return x.reshape(-1), absmax


@requires_mxcsr
@pytest.mark.parametrize("name", MAPS)
@pytest.mark.parametrize("blocksize, extra", [(16, 0), (64, 0), (256, 100)])
@pytest.mark.subnormal  # sets MXCSR itself
def test_huge_absmax_does_not_depend_on_flush_to_zero(name, blocksize, extra, backend, rng):
    """Blocks with absmax in (2^126, FLT_MAX]: the same codes and absmax as the float definition,
    with FTZ and DAZ each set or not (torch.set_flush_denormal(True) sets both); FTZ used to
    flush 1/absmax to 0 (every code the zero code), DAZ to read it as 0."""
    code = MAPS[name]()
    x, expected_absmax = huge_blocks(rng, blocksize, 300)
    if extra:  # a partial last block
        x = np.concatenate([x, huge_blocks(rng, extra, 1)[0]])
        expected_absmax = np.append(expected_absmax, np.abs(x[-extra:]).max())
    # Codes by the definition (oracle.quantize_blockwise): y = x * fl32(1/absmax) as one rounding
    # of the exact product (NumPy, without FTZ/DAZ), then the nearest code by an exact binary search.
    scaled = oracle.scaled_blocks(x, expected_absmax, blocksize)
    assert (np.abs(scaled[x != 0]) >= 2.0**-126).all()  # y normal: FTZ/DAZ must not change anything
    expected_q = oracle.codes(scaled, code)
    for ftz, daz in ((False, False), (True, True), (True, False), (False, True)):
        with flush_denormals(ftz=ftz, daz=daz):
            q, state = quantize_blockwise(x, code, blocksize=blocksize, backend=backend)
            y = dequantize_blockwise(q, state, backend=backend)
        np.testing.assert_array_equal(state.absmax, expected_absmax)
        mismatch = np.flatnonzero(q != expected_q)
        assert mismatch.size == 0, (f"FTZ={ftz} DAZ={daz}: x = {x[mismatch[:3]]}: codes {q[mismatch[:3]]}, "
                                    f"expected {expected_q[mismatch[:3]]}")
        np.testing.assert_array_equal(y, oracle.dequantize_blockwise(q, expected_absmax, blocksize, code))


# ---------------------------------------------------------------------------- QuantState checks

def valid_fields(rng):
    x = rng.standard_normal((4, 25)).astype(f32)
    q, state = quantize_blockwise(x, blocksize=16)
    return q, dict(absmax=state.absmax, code=state.code, blocksize=16, shape=(4, 25), dtype=np.float32)


BAD_FIELDS = [
    ("code", lambda f: f["code"].astype(np.float64) + 1e-12, ValueError,
     r"the state's code must be float32: code\[0\] = .* \(float64\) is not a float32 value"),
    ("code", lambda f: f["code"][::16].copy(), ValueError, r"code must hold 256 values \(shape \(256,\)\), not shape \(16,\)"),
    ("code", lambda f: f["code"].reshape(16, 16), ValueError, r"code must hold 256 values"),
    ("code", lambda f: np.arange(256), TypeError, "code must be a floating array of 256 values, not dtype int64"),
    ("code", lambda f: np.where(np.arange(256) == 9, np.nan, f["code"]).astype(f32), ValueError,
     r"code must be finite: code\[9\] = nan"),
    ("code", lambda f: f["code"][::-1].copy(), ValueError, "code must be sorted"),
    ("absmax", lambda f: f["absmax"].astype(np.float64) * (1 + 1e-12), ValueError,
     r"the state's absmax must be float32: absmax\[0\] = .* \(float64\) is not a float32 value"),
    ("absmax", lambda f: f["absmax"][:-1], ValueError, r"absmax has shape \(6,\), but 100 elements in blocks of 16 need \(7,\)"),
    ("absmax", lambda f: f["absmax"][None, :], ValueError, r"absmax has shape \(1, 7\)"),
    ("absmax", lambda f: np.ones(7, np.int32), TypeError, "the state's absmax must be a float32 array, not dtype int32"),
    ("absmax", lambda f: -f["absmax"], ValueError, r"absmax holds max \|x\| per block .*absmax\[0\] = -"),
    ("blocksize", lambda f: 8, ValueError, "blocksize must be an integer from 16 to 16777216, not 8"),
    ("blocksize", lambda f: 2**24 + 1, ValueError, "blocksize must be an integer from 16 to 16777216"),
    ("blocksize", lambda f: 16.0, ValueError, "blocksize must be an integer from 16 to 16777216"),
    ("blocksize", lambda f: 32, ValueError, r"absmax has shape \(7,\), but 100 elements in blocks of 32 need \(4,\)"),
    ("shape", lambda f: (4, -25), ValueError, r"the state's shape must hold non-negative integers, not \(4, -25\)"),
    ("shape", lambda f: (4.0, 25.0), TypeError, "the state's shape must be a tuple of integers"),
    ("shape", lambda f: 100, TypeError, "the state's shape must be a tuple of integers, not 100"),
    ("shape", lambda f: (4, 26), ValueError, "q has 100 elements, but the state describes 104"),
    ("dtype", lambda f: np.int8, ValueError, "a QuantState's dtype is float16, float32 or float64, not"),
    ("dtype", lambda f: "not a dtype", ValueError, "a QuantState's dtype is float16, float32 or float64, not 'not a dtype'"),
    ("dtype", lambda f: np.longdouble if np.dtype(np.longdouble).itemsize > 8 else np.complex64, ValueError,
     "a QuantState's dtype is float16, float32 or float64"),
]


@pytest.mark.parametrize("field, make, error, message", BAD_FIELDS,
                         ids=[f"{field}-{i}" for i, (field, *_) in enumerate(BAD_FIELDS)])
def test_bad_state_fields_raise(field, make, error, message, backend, rng):
    """A state with a bad field cannot be built (the C kernels used to read a float64 or short
    code as 256 float32, past its end): each error names the field."""
    q, fields = valid_fields(rng)
    with pytest.raises(error, match=message):
        dequantize_blockwise(q, QuantState(**{**fields, field: make(fields)}), backend=backend)


def test_state_converts_exact_values_only(backend, rng):
    """A float64 code or absmax whose values are all float32 values is converted (so is a
    big-endian dtype, a list shape, a NumPy integer block size); the state then dequantizes as the
    float32 one, on every backend. A code or absmax that float32 would round raises."""
    q, fields = valid_fields(rng)
    expected = dequantize_blockwise(q, QuantState(**fields), backend=backend)
    friendly = QuantState(absmax=fields["absmax"].astype(np.float64), code=fields["code"].astype(np.float64),
                          blocksize=np.int16(16), shape=[4, 25], dtype=">f4")
    np.testing.assert_array_equal(dequantize_blockwise(q, friendly, backend=backend), expected)
    assert friendly.code.dtype == np.float32 and friendly.absmax.dtype == np.float32
    assert friendly.code.flags.c_contiguous and friendly.absmax.flags.c_contiguous
    assert friendly.shape == (4, 25) and type(friendly.blocksize) is int and friendly.dtype == np.dtype(np.float32)
    strided = np.repeat(fields["code"], 2)[::2]  # non-contiguous: made contiguous
    np.testing.assert_array_equal(dequantize_blockwise(q, QuantState(**{**fields, "code": strided}), backend=backend),
                                  expected)
    special = fields["absmax"].astype(np.float64)
    special[1], special[2] = np.nan, np.inf  # non-finite absmax (nonfinite="propagate") converts too
    QuantState(**{**fields, "absmax": special})
    special[3] = 1e300
    with pytest.raises(ValueError, match=r"absmax\[3\] = 1e\+300 \(float64\) is not a float32 value"):
        QuantState(**{**fields, "absmax": special})


def test_from_dict_checks_as_the_constructor(rng):
    q, fields = valid_fields(rng)
    saved = QuantState(**fields).as_dict()
    with pytest.raises(ValueError, match=r"the state's absmax must be float32: absmax\[0\]"):
        QuantState.from_dict({**saved, "absmax": saved["absmax"].astype(np.float64) * (1 + 1e-12)})
    with pytest.raises(ValueError, match="code must hold 256 values"):
        QuantState.from_dict({**saved, "code": saved["code"][:16]})
    restored = QuantState.from_dict({**saved, "dtype": np.str_(">f8")})
    assert restored.dtype == np.dtype(np.float64) and restored.dtype.isnative


# ------------------------------------------------------------- non-finite absmax dequantizes NaN

DEQUANTIZE_MAPS = {
    "dynamic signed": quant.create_dynamic_map,
    "dynamic unsigned": lambda: quant.create_dynamic_map(signed=False),
    "linear signed": quant.create_linear_map,
    "linear without a zero code": lambda: quant.create_linear_map(add_zero=False),
    "positive, no zero": lambda: np.linspace(0.125, 1, 256).astype(f32),
}


@pytest.mark.parametrize("name", DEQUANTIZE_MAPS)
def test_block_with_inf_or_nan_dequantizes_to_nan(name, backend, rng):
    """nonfinite="propagate": a block with an inf dequantizes to NaN also on maps whose zero
    code is not 0 (it used to give code * inf = +-inf); so does any code of a block whose
    absmax is inf or NaN."""
    code = DEQUANTIZE_MAPS[name]()
    x = np.abs(rng.standard_normal(6 * 16 + 5)).astype(f32) + f32(0.5)
    if code[0] < 0:
        x[::3] *= -1
    for position, special in ((3, np.inf), (16 + 15, -np.inf), (32, np.nan), (48 + 2, np.inf), (6 * 16 + 4, np.inf)):
        x[position] = special
    q, state = quantize_blockwise(x, code, blocksize=16, nonfinite="propagate", backend=backend)
    y = dequantize_blockwise(q, state, backend=backend)
    special_blocks = {0, 1, 2, 3, 6}
    for b in range(state.absmax.size):
        block = y[16 * b:16 * (b + 1)]
        assert np.isnan(block).all() if b in special_blocks else np.isfinite(block).all(), (b, block)
    every_code = np.tile(np.arange(256, dtype=np.uint8), 3)
    hand_built = QuantState(absmax=np.array([np.inf, np.nan, 2.0], f32), code=code, blocksize=256, shape=(768,),
                            dtype=np.float32)
    y = dequantize_blockwise(every_code, hand_built, backend=backend)
    assert np.isnan(y[:512]).all()
    np.testing.assert_array_equal(y[512:], code * f32(2))


# ------------------------------------------------------------------------------------ byte order

@pytest.mark.parametrize("dtype", [">f2", ">f4", ">f8", "<f2", "<f4", "<f8"])
def test_any_byte_order(dtype, backend, rng):
    """Input of either byte order quantizes as its native-order values; the state's dtype, and
    the dequantized array's, is the native one; the input is left as it was."""
    native = np.dtype(dtype).newbyteorder("=")
    x = (rng.standard_normal((7, 30)) * 3).astype(dtype)
    before = x.copy()
    q, state = quantize_blockwise(x, blocksize=64, backend=backend)
    expected_q, expected_state = quantize_blockwise(x.astype(native), blocksize=64, backend=backend)
    np.testing.assert_array_equal(q, expected_q)
    np.testing.assert_array_equal(state.absmax, expected_state.absmax)
    assert state.dtype == native and state.dtype.isnative
    y = dequantize_blockwise(q, state, backend=backend)
    assert y.dtype == native
    np.testing.assert_array_equal(y, dequantize_blockwise(expected_q, expected_state, backend=backend))
    assert x.dtype == np.dtype(dtype) and np.array_equal(x, before)


@pytest.mark.parametrize("dtype", [">i4", "<i2", "c8", np.longdouble if np.dtype(np.longdouble).itemsize > 8 else "c16"])
def test_other_dtypes_raise_naming_theirs(dtype):
    with pytest.raises(TypeError, match=rf"float16, float32 or float64 input \(any byte order\), not dtype "
                                        rf"{np.dtype(dtype)}"):
        quantize_blockwise(np.ones(20, dtype))

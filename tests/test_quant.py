"""8-bit block-wise quantization (softmaxlib.quant): bitsandbytes' codebooks value for value,
exact nearest codes (exhaustively over every float32 in [-1, 1]), the block semantics, special
values, layouts, the state, bad input, and agreement of every backend bit for bit."""
import io
import pathlib
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import oracle
import softmaxlib
from conftest import examples
from softmaxlib import _bindings, _catalog, _codebooks, _dispatch, quant
from softmaxlib.quant import QuantState, dequantize_blockwise, quantize_blockwise

REFERENCE_MAPS = pathlib.Path(__file__).parent / "data" / "bitsandbytes_0.50.2_maps.npz"
BUILT_IN_MAPS = {
    "dynamic signed": lambda: quant.create_dynamic_map(signed=True),
    "dynamic unsigned": lambda: quant.create_dynamic_map(signed=False),
    "linear signed": lambda: quant.create_linear_map(signed=True),
}


# ------------------------------------------------------------------------------------ codebooks

def test_maps_match_bitsandbytes():
    reference = np.load(REFERENCE_MAPS)
    assert len(reference.files) == 30
    for key in reference.files:
        kind, signed, a, b = key.split("_")
        if kind == "dynamic":
            ours = quant.create_dynamic_map(bool(int(signed)), int(a), int(b))
        else:
            ours = quant.create_linear_map(bool(int(signed)), int(a), bool(int(b)))
        assert ours.dtype == np.float32 and ours.shape == (256,)
        np.testing.assert_array_equal(ours.view(np.uint32), reference[key].view(np.uint32), err_msg=key)


def test_named_values():
    signed = quant.create_dynamic_map()
    assert signed[127] == 0 and signed[255] == 1.0 and signed[0] == np.float32(-0.99296874)
    unsigned = quant.create_dynamic_map(signed=False)
    assert unsigned[0] == 0 and unsigned[255] == 1.0
    assert np.all(np.diff(signed) > 0) and np.all(np.diff(unsigned) >= 0)


@pytest.mark.parametrize("kwargs, message", [
    (dict(signed=False, max_exponent_bits=6), "no dynamic map with signed=False, max_exponent_bits=6, total_bits=8"),
    (dict(max_exponent_bits=0), "max_exponent_bits must be a positive integer"),
    (dict(total_bits=9), "total_bits must be at most 8"),
    (dict(total_bits=2.5), "total_bits must be a positive integer"),
])
def test_bad_map_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        quant.create_dynamic_map(**kwargs)
    with pytest.raises(ValueError, match="total_bits must be an integer from 1 to 8"):
        quant.create_linear_map(total_bits=0)


# ------------------------------------------------------------------------------ exact search

FIRST_NEGATIVE = 0x80000000
ONE_BITS = 0x3F800000


def scaled_code_function(backend):
    """f(y, tables, q): the codes of already-scaled values, with the backend's search."""
    return _bindings.bound("codes_of_scaled", backend)


@pytest.mark.slow
@pytest.mark.parametrize("name", BUILT_IN_MAPS)
def test_search_is_exact_for_every_float_in_minus_one_to_one(name):
    """Every backend's search against the exact binary search, over all ~2.1e9 float32 in [-1, 1]
    (the reference runs once per chunk, each backend's kernel on the same chunk)."""
    code = BUILT_IN_MAPS[name]()
    tables = _codebooks.search_tables(code)
    assert tables.single_compare  # the O(1) search covers every bucket of the built-in maps
    searches = {backend: scaled_code_function(backend) for backend in softmaxlib.backends()}
    chunk = 1 << 24
    q, expected = np.empty(chunk, np.uint8), np.empty(chunk, np.uint8)
    for first, last in ((0, ONE_BITS), (FIRST_NEGATIVE, FIRST_NEGATIVE + ONE_BITS)):  # [0, 1] and [-1, -0]
        for start in range(first, last + 1, chunk):
            y = np.arange(start, min(start + chunk, last + 1), dtype=np.uint32).view(np.float32)
            oracle.codes(y, code, out=expected[:y.size])  # the exact binary search
            for backend, search in searches.items():
                search(y, tables, q[:y.size])
                mismatch = np.flatnonzero(q[:y.size] != expected[:y.size])
                assert mismatch.size == 0, (f"{backend}: y = {y[mismatch[:3]]}: {q[mismatch[:3]]} != "
                                            f"{expected[mismatch[:3]]}")


def test_crowded_codebook_takes_the_binary_search(backend, rng):
    code = np.sort(np.concatenate([np.linspace(-1, 1, 200), np.linspace(0.5, 0.5 + 1e-6, 56)])).astype(np.float32)
    tables = _codebooks.search_tables(code)
    assert not tables.single_compare
    y = np.concatenate([rng.uniform(-1, 1, 10000), np.linspace(0.5 - 1e-6, 0.5 + 2e-6, 10000)]).astype(np.float32)
    q, expected = np.empty(y.size, np.uint8), np.empty(y.size, np.uint8)
    scaled_code_function(backend)(y, tables, q)
    oracle.codes(y, code, out=expected)
    np.testing.assert_array_equal(q, expected)


# ---------------------------------------------------------------------------------- semantics

@pytest.mark.parametrize("blocksize", [64, 256, 2048, 4096])
def test_round_trip_error_meets_bitsandbytes_bars(blocksize, backend):
    x = np.random.default_rng(blocksize).standard_normal((1024, 1024)).astype(np.float32)
    q, state = quantize_blockwise(x, blocksize=blocksize, backend=backend)
    error = np.abs(dequantize_blockwise(q, state, backend=backend) - x)
    assert error.mean() < 0.011
    assert (error / np.abs(x)).mean() < 0.018


@pytest.mark.parametrize("blocksize", [16, 64, 4096])
@pytest.mark.parametrize("extra", [0, 1, -1, "B+1", "3B+7"])
def test_sizes_match_the_definition(blocksize, extra, backend, rng):
    n = {0: 0, 1: 1, -1: blocksize - 1, "B+1": blocksize + 1, "3B+7": 3 * blocksize + 7}[extra] if extra != 0 else blocksize
    for size in {n, 0}:
        x = (rng.standard_normal(size) * 3).astype(np.float32)
        code = quant.create_dynamic_map()
        q, state = quantize_blockwise(x, blocksize=blocksize, backend=backend)
        expected_q, expected_absmax = oracle.quantize_blockwise(x, code, blocksize)
        np.testing.assert_array_equal(q, expected_q)
        np.testing.assert_array_equal(state.absmax, expected_absmax)
        np.testing.assert_array_equal(dequantize_blockwise(q, state, backend=backend),
                                      oracle.dequantize_blockwise(q, state.absmax, blocksize, code))


def test_zero_blocks_and_exact_zeros(backend):
    x = np.zeros(3 * 64, np.float32)
    x[64:128] = np.linspace(-2, 3, 64)
    x[70] = 0.0
    x[71] = -0.0
    for code in (quant.create_dynamic_map(), quant.create_dynamic_map(signed=False), quant.create_linear_map()):
        q, state = quantize_blockwise(np.abs(x) if code[0] == 0 else x, code, blocksize=64, backend=backend)
        zero = int(np.argmin(np.abs(code)))
        assert state.absmax[0] == 0 and state.absmax[2] == 0
        assert np.all(q[:64] == zero) and np.all(q[128:] == zero) and q[70] == zero and q[71] == zero
        y = dequantize_blockwise(q, state, backend=backend)
        assert np.all(y[:64] == 0) and np.all(y[128:] == 0) and y[70] == 0 and y[71] == 0
        assert not np.isnan(y).any()


@settings(max_examples=examples(150), deadline=None)
@given(x=hnp.arrays(np.float32, st.integers(1, 300),
                    elements=st.floats(width=32, allow_nan=False, allow_infinity=False)),
       blocksize=st.sampled_from([16, 37, 64, 256]))
def test_codes_are_the_nearest(x, blocksize):
    code = quant.create_dynamic_map()
    for backend in softmaxlib.backends():
        q, state = quantize_blockwise(x, blocksize=blocksize, backend=backend)
        for b in range(state.absmax.size):
            block = x[b * blocksize:(b + 1) * blocksize]
            with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
                # 1 / a subnormal absmax overflows: y is +-inf, or NaN for 0
                inverse = np.float32(1) / state.absmax[b] if state.absmax[b] > 0 else np.float32(0)
                y = (block * inverse).astype(np.float64)
            distance = np.abs(np.nan_to_num(y, posinf=2, neginf=-2)[:, None] - code[None, :].astype(np.float64))
            nearest = np.where(np.isnan(y), 127, np.argmin(distance, axis=1))  # NaN y: the zero code
            np.testing.assert_array_equal(q[b * blocksize:(b + 1) * blocksize], nearest)
            top = np.argmax(np.abs(block))
            if block[top] > 0:
                assert q[b * blocksize + top] == 255


def test_layouts_are_flattened_in_c_order(backend, rng):
    x = rng.standard_normal((37, 29)).astype(np.float32)
    q, state = quantize_blockwise(x, blocksize=64, backend=backend)
    for view in (np.asfortranarray(x), x[::-1, ::2].copy(), x.T.copy().T):
        q_view, state_view = quantize_blockwise(view, blocksize=64, backend=backend)
        expected_q, expected_state = quantize_blockwise(np.ascontiguousarray(view), blocksize=64, backend=backend)
        np.testing.assert_array_equal(q_view, expected_q)
        np.testing.assert_array_equal(state_view.absmax, expected_state.absmax)
    strided = x[::2, ::3]
    np.testing.assert_array_equal(quantize_blockwise(strided, blocksize=16, backend=backend)[0],
                                  quantize_blockwise(strided.copy(), blocksize=16, backend=backend)[0])
    out = np.empty((29, 37), np.uint8).T  # a non-contiguous out
    assert quantize_blockwise(x, blocksize=64, out=out, backend=backend)[0] is out
    np.testing.assert_array_equal(out, q)


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
def test_other_dtypes(dtype, backend, rng):
    x = rng.standard_normal((10, 50)).astype(dtype)
    q, state = quantize_blockwise(x, blocksize=64, backend=backend)
    expected_q, _ = quantize_blockwise(x.astype(np.float32), blocksize=64, backend=backend)
    np.testing.assert_array_equal(q, expected_q)
    assert state.dtype == dtype
    y = dequantize_blockwise(q, state, backend=backend)
    assert y.dtype == dtype
    np.testing.assert_array_equal(y, (quant.create_dynamic_map()[q] * np.repeat(state.absmax, 64)[:500].reshape(10, 50)
                                      ).astype(dtype))


def test_nonfinite_raises_or_propagates(backend):
    x = np.ones((3, 40), np.float32)
    x[1, 7] = np.nan
    x[2, 3] = np.inf
    with pytest.raises(ValueError, match=r"x\[1, 7\] is nan: quantize_blockwise needs finite input"):
        quantize_blockwise(x, blocksize=16, backend=backend)
    q, state = quantize_blockwise(x, blocksize=16, nonfinite="propagate", backend=backend)
    y = dequantize_blockwise(q, state, backend=backend).reshape(-1)
    nan_block, inf_block = 47 // 16, 83 // 16
    assert np.isnan(state.absmax[nan_block]) and state.absmax[inf_block] == np.inf
    assert np.isnan(y[nan_block * 16:(nan_block + 1) * 16]).all() and np.isnan(y[inf_block * 16:(inf_block + 1) * 16]).all()
    others = np.ones(y.size, bool)
    others[nan_block * 16:(nan_block + 1) * 16] = others[inf_block * 16:(inf_block + 1) * 16] = False
    assert np.isfinite(y[others]).all()
    with pytest.raises(ValueError, match="nonfinite must be one of 'raise', 'propagate'"):
        quantize_blockwise(x, nonfinite="ignore")


def test_state_round_trips_through_savez(rng):
    x = rng.standard_normal((5, 300)).astype(np.float16)
    q, state = quantize_blockwise(x, blocksize=128)
    buffer = io.BytesIO()
    np.savez(buffer, q=q, **state.as_dict())
    buffer.seek(0)
    loaded = np.load(buffer)
    restored = QuantState.from_dict({k: loaded[k] for k in loaded.files if k != "q"})
    assert restored.blocksize == 128 and restored.shape == (5, 300) and restored.dtype == np.float16
    np.testing.assert_array_equal(dequantize_blockwise(loaded["q"], restored), dequantize_blockwise(q, state))
    with pytest.raises(ValueError, match="absmax has shape"):
        QuantState.from_dict({**state.as_dict(), "absmax": state.absmax[:-1]})
    with pytest.raises(ValueError, match="a QuantState needs code"):
        QuantState.from_dict({k: v for k, v in state.as_dict().items() if k != "code"})


# --------------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("blocksize", [0, 15, 2**24 + 1, -4096, 10**18, 3.5, True, "4096", None])
def test_bad_blocksize(blocksize):
    with pytest.raises(ValueError, match="blocksize must be an integer from 16 to 16777216"):
        quantize_blockwise(np.ones(10, np.float32), blocksize=blocksize)


def test_bad_codes_and_input():
    x = np.ones(10, np.float32)
    with pytest.raises(ValueError, match=r"code must hold 256 values \(shape \(256,\)\), not shape \(255,\)"):
        quantize_blockwise(x, np.linspace(-1, 1, 255, dtype=np.float32))
    unsorted = quant.create_dynamic_map()[::-1].copy()
    with pytest.raises(ValueError, match="code must be sorted"):
        quantize_blockwise(x, unsorted)
    with pytest.raises(ValueError, match="code must be sorted"):
        quantize_blockwise(x, quant.create_linear_map(signed=False, total_bits=4))  # bitsandbytes' own, unsorted
    with pytest.raises(TypeError, match=r"float16, float32 or float64 input \(any byte order\), not dtype int64"):
        quantize_blockwise(np.arange(10))


def test_bad_dequantize_input(rng):
    q, state = quantize_blockwise(rng.standard_normal(100).astype(np.float32), blocksize=16)
    with pytest.raises(TypeError, match="q must be uint8 codes, not dtype int16"):
        dequantize_blockwise(q.astype(np.int16), state)
    with pytest.raises(ValueError, match="q has 99 elements, but the state describes 100"):
        dequantize_blockwise(q[:99], state)
    with pytest.raises(TypeError, match="state must be a QuantState"):
        dequantize_blockwise(q, state.as_dict())
    read_only = np.empty(100, np.float32)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="out is read-only"):
        dequantize_blockwise(q, state, out=read_only)
    with pytest.raises(ValueError, match="out must have shape"):
        quantize_blockwise(np.ones(100, np.float32), out=np.empty(99, np.uint8))


# ------------------------------------------------------------------------- backends, threads

def test_backends_agree_bit_for_bit(rng):
    x = (rng.standard_normal(100_003) * np.exp(rng.uniform(-20, 20, 100_003))).astype(np.float32)
    x[::97] = 0
    for code in BUILT_IN_MAPS.values():
        code = code()
        if code[0] == 0:
            x = np.abs(x)
        results = {b: quantize_blockwise(x, code, blocksize=256, backend=b) for b in softmaxlib.backends()}
        q_ref, state_ref = results["numba"]
        for q, state in results.values():
            np.testing.assert_array_equal(q, q_ref)
            np.testing.assert_array_equal(state.absmax, state_ref.absmax)
            np.testing.assert_array_equal(dequantize_blockwise(q, state), dequantize_blockwise(q_ref, state_ref))


def test_tables_are_built_once_per_codebook_and_bounded():
    assert _codebooks._tables_for_bytes.cache_info().maxsize == 32
    code = quant.create_dynamic_map(max_exponent_bits=5)
    results = []

    def work():
        results.append(_codebooks.search_tables(code))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(tables is results[0] for tables in results)


@pytest.mark.parametrize("n, blocksize", [(1, 16), (17, 16), (100, 64), (4097, 4096), (1000, 16)])
def test_kernels_stay_within_their_arrays(buffers, n, blocksize, backend, rng):
    """x, q, absmax and the dequantized output end right before a PROT_NONE page."""
    float_area, byte_area = buffers
    values = (rng.standard_normal(n) * 5).astype(np.float32)
    expected_q, expected_state = quantize_blockwise(values, blocksize=blocksize, backend="numba")
    expected_y = dequantize_blockwise(expected_q, expected_state, backend="numba")
    blocks = expected_state.absmax.size
    tables = _codebooks.search_tables(expected_state.code)
    x = float_area[-n:]
    x[...] = values
    q = byte_area.view(np.uint8)[-n:]
    absmax = float_area[-n - blocks:-n]
    _bindings.bound("quantize_blockwise", backend)(x, blocksize, tables, q, absmax)
    np.testing.assert_array_equal(q, expected_q)
    np.testing.assert_array_equal(absmax, expected_state.absmax)
    y = byte_area[-n:]
    _bindings.bound("dequantize_blockwise", backend)(q.copy(), absmax.copy(), blocksize, expected_state.code, y)
    np.testing.assert_array_equal(y, expected_y)
    _bindings.bound("codes_of_scaled", backend)(x, tables, q)  # and the search alone
    if backend != "numba":  # the non-temporal path, which the binding takes only for large outputs
        y[...] = 0
        ffi = _dispatch.ffi
        getattr(_dispatch.lib, _catalog.KERNELS["dequantize_blockwise"].c_symbol(backend))(
            n, ffi.from_buffer("uint8_t[]", expected_q), ffi.from_buffer("float[]", expected_state.absmax), blocksize,
            ffi.from_buffer("float[]", expected_state.code), ffi.from_buffer("float[]", y), 1, 2)
        np.testing.assert_array_equal(y, expected_y)

"""The fast path of the public row functions (softmaxlib/_api.py fast_path): it takes exactly the
common case (native float32 ndarray, C-contiguous, aligned, last axis, no backend=, out absent or
a matching array), gives the same bits as the general path, and picks the auto path's kernel
and the streaming kernel as the general path does."""
import warnings

import numpy as np
import pytest

import softmaxlib
from softmaxlib import _api, _bindings, _catalog, _dispatch, quant, stablemax, three_pass, two_pass

requires_c = pytest.mark.skipif(_dispatch.DEFAULT_BACKEND == "numba", reason="no fast path on the Numba backend")

# (public function, its kernel id or auto function): every public row function
PUBLIC = [(softmaxlib.softmax, "auto softmax"), (softmaxlib.log_softmax, "auto log_softmax")] + [
    ((lambda f, v: (lambda x, **kw: f(x, variant=v, **kw)) if v else f)(
        getattr({"three_pass": three_pass, "two_pass": two_pass, "stablemax": stablemax}[k.family], k.function),
        k.variant), k.id)
    for k in _catalog.by_signature("rows").values()
]
PUBLIC_IDS = [name for _, name in PUBLIC]


def _rows(shape, seed=0):
    return (np.random.default_rng(seed).standard_normal(shape) * 10).astype(np.float32)


@requires_c
@pytest.mark.parametrize("function, name", PUBLIC, ids=PUBLIC_IDS)
@pytest.mark.parametrize("shape", [(1,), (16,), (1, 17), (3, 1000), (2, 3, 33)])
def test_same_bits_as_the_general_path(function, name, shape):
    x = _rows(shape)
    general = function(x, backend=_dispatch.DEFAULT_BACKEND)  # backend= takes the general path
    np.testing.assert_array_equal(function(x), general)
    out = np.full_like(x, np.nan)
    assert function(x, out=out) is out
    np.testing.assert_array_equal(out, general)
    inplace = x.copy()
    assert function(inplace, out=inplace) is inplace
    np.testing.assert_array_equal(inplace, general)
    np.testing.assert_array_equal(x, _rows(shape))  # the input is untouched


OTHER_CASES = {
    "float64": lambda x: x.astype(np.float64),
    "byte-swapped": lambda x: x.astype(x.dtype.newbyteorder()),
    "Fortran order": lambda x: np.asfortranarray(x),
    "strided": lambda x: np.repeat(x, 2, axis=-1)[..., ::2],
    "misaligned": lambda x: np.frombuffer(b"\0" + x.tobytes(), np.float32, offset=1).reshape(x.shape),
    "a list": lambda x: x.tolist(),
    "a subclass": lambda x: x.view(np.recarray),
}


@requires_c
@pytest.mark.parametrize("case", OTHER_CASES)
def test_other_inputs_take_the_general_path_with_the_same_result(case):
    x = _rows((3, 40))
    variant = OTHER_CASES[case](x)
    assert softmaxlib._FAST_SOFTMAX(variant, -1, None, None) is None
    expected = softmaxlib.softmax(x.astype(np.float64) if case in ("float64", "a list") else x)
    np.testing.assert_array_equal(np.asarray(softmaxlib.softmax(variant)), expected)


@requires_c
def test_a_read_only_input_takes_the_fast_path():
    x = _rows((3, 40))
    read_only = np.frombuffer(x.tobytes(), np.float32).reshape(x.shape)
    np.testing.assert_array_equal(softmaxlib._FAST_SOFTMAX(read_only, -1, None, None), softmaxlib.softmax(x))


@requires_c
def test_other_axes_and_outputs_take_the_general_path():
    x = _rows((4, 40))
    fast = softmaxlib._FAST_SOFTMAX
    assert fast(x, 0, None, None) is None and fast(x, 1.0, None, None) is None
    assert fast(np.float32(1), -1, None, None) is None
    assert fast(x[:0], -1, None, None) is None  # empty
    for out in (np.empty((4, 40)), np.empty((40, 4), np.float32).T, np.empty((4, 41), np.float32)[:, 1:],
                np.empty((40, 4), np.float32), x[::-1]):
        assert fast(x, -1, out, None) is None
    assert fast(x[:, 1:], -1, x[:, :-1], None) is None  # partial overlap: the general path copies


def _recording_lib(monkeypatch):
    """Replaces _dispatch.lib with a proxy that records which C functions the fast path calls."""
    called = []

    class Recording:
        def __getattr__(self, name):
            function = getattr(lib, name)
            return lambda *args: called.append(name) or function(*args)

    lib = _dispatch.lib
    monkeypatch.setattr(_dispatch, "lib", Recording())
    return called


@requires_c
def test_auto_choice_switches_at_the_crossover(monkeypatch):
    called = _recording_lib(monkeypatch)
    backend = _dispatch.DEFAULT_BACKEND
    fast = _api.fast_path(lambda b: ("softmax_reload_exact", "softmax_two_pass", 100))
    for n, expected in ((100, "softmax_reload_exact"), (101, "softmax_two_pass")):
        x = _rows((2, n))
        y = np.empty_like(x)
        _bindings.bound(expected, backend, np.float32)(x, y)
        called.clear()
        np.testing.assert_array_equal(fast(x, -1, None, None), y)
        assert called == [_catalog.KERNELS[expected].c_symbol(backend)]


@requires_c
def test_streaming_above_the_threshold(monkeypatch):
    called = _recording_lib(monkeypatch)
    backend = _dispatch.DEFAULT_BACKEND
    monkeypatch.setattr(_dispatch, "STREAM_ABOVE_BYTES", 4 * 100)
    fast = _api.fast_path("softmax_two_pass")
    kernel = _catalog.KERNELS["softmax_two_pass"]
    for n, streaming in ((100, False), (101, True)):
        x = _rows((1, n))
        called.clear()
        y = fast(x, -1, None, None)
        assert called == [kernel.c_symbol(backend, streaming=streaming)]
        np.testing.assert_array_equal(y, two_pass.softmax(x, backend=backend))


@requires_c
def test_quantize_fast_path_matches_the_general_path():
    x = _rows((3, 1000))
    q, state = quant.quantize_blockwise(x, blocksize=256)
    q_general, state_general = quant.quantize_blockwise(x, blocksize=256, backend=_dispatch.DEFAULT_BACKEND)
    np.testing.assert_array_equal(q, q_general)
    for field in ("absmax", "code"):
        np.testing.assert_array_equal(getattr(state, field), getattr(state_general, field))
    assert (state.blocksize, state.shape, state.dtype) == (state_general.blocksize, state_general.shape,
                                                           state_general.dtype)
    assert state.code is not state_general.code  # every state owns its codebook
    np.testing.assert_array_equal(quant.dequantize_blockwise(q, state),
                                  quant.dequantize_blockwise(q, state, backend=_dispatch.DEFAULT_BACKEND))
    big = np.full(64, np.finfo(np.float32).max, np.float32)  # several blocks whose absmax sum overflows float32
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(quant.quantize_blockwise(big, blocksize=16)[0],
                                      quant.quantize_blockwise(big, blocksize=16, backend=_dispatch.DEFAULT_BACKEND)[0])
    x[1, 7] = np.nan  # the fast path finds it and leaves the message to the general path
    with pytest.raises(ValueError, match=r"x\[1, 7\] is nan"):
        quant.quantize_blockwise(x)
    q, state = quant.quantize_blockwise(x, nonfinite="propagate")
    assert np.isnan(state.absmax[0])
    with pytest.raises(ValueError, match="nonfinite must be one of"):  # checked on the fast path's input too
        quant.quantize_blockwise(np.ones(64, np.float32), nonfinite="bogus")


@pytest.mark.parametrize("shape", [(1,), (16,), (3, 1000), (2, 3, 33), (4, 0), (0, 5)])
def test_pair_reduction_fast_path_matches_the_general_path(shape):
    x = _rows(shape)
    for fast, general in ((two_pass.sum_exp_pair(x), two_pass.sum_exp_pair(x, backend=_dispatch.DEFAULT_BACKEND)),
                          ((softmaxlib.logsumexp(x),), (softmaxlib.logsumexp(x, backend=_dispatch.DEFAULT_BACKEND),))):
        for a, b in zip(fast, general):
            assert type(a) is type(b) and np.shape(a) == np.shape(b)
            np.testing.assert_array_equal(a, b)
    if x.ndim == 1:  # logsumexp's one-row branch against the path of many rows
        np.testing.assert_array_equal(softmaxlib.logsumexp(x), softmaxlib.logsumexp(x[None])[0])

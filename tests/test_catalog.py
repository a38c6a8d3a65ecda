"""The catalog (softmaxlib/_catalog.py) is complete: every entry has its C kernel on each ISA,
its Numba twins and its oracle, and the layers above take their names from it."""
import importlib

import numpy as np
import pytest

import oracle
import softmaxlib
from softmaxlib import _bindings, _catalog, _codebooks, _dispatch

KERNELS = list(_catalog.KERNELS.values())
requires_c = pytest.mark.skipif(_dispatch.lib is None, reason="the C kernels are not built")


@requires_c
@pytest.mark.parametrize("kernel", KERNELS, ids=lambda k: k.id)
def test_every_kernel_has_its_c_symbol_on_each_isa(kernel):
    for isa in _catalog.ISAS:
        assert hasattr(_dispatch.lib, kernel.c_symbol(isa)), kernel.c_symbol(isa)
        if kernel.streaming and kernel.signature == "rows":
            assert hasattr(_dispatch.lib, kernel.c_symbol(isa, streaming=True))


@pytest.mark.parametrize("kernel", KERNELS, ids=lambda k: k.id)
def test_every_kernel_has_its_numba_twins_and_oracle(kernel):
    module = importlib.import_module(f"softmaxlib._numba.{kernel.family}")
    for dtype in kernel.twin_dtypes:
        assert callable(getattr(module, kernel.twin_name(dtype))), f"{module.__name__}.{kernel.twin_name(dtype)}"
    assert kernel.dtype in kernel.twin_dtypes  # the C kernel's dtype has a twin, its fallback
    assert callable(getattr(oracle, kernel.oracle)), f"tests/oracle.py has no {kernel.oracle}"
    assert kernel.signature in _catalog.SIGNATURES and kernel.signature in _bindings.ADAPTERS
    measure, bound = kernel.tolerance
    assert measure in ("ulp", "eps", "exact") and bound >= 0


def _run_on_random_input(kernel, backend, rng):
    """(output, the oracle's) of a kernel's bound call on random finite input of its signature."""
    call = _bindings.bound(kernel.id, backend)
    reference = getattr(oracle, kernel.oracle)
    signature = kernel.signature
    x = (rng.standard_normal((5, 301)) * 3).astype(np.float32)
    if signature == "rows":
        y = np.empty_like(x)
        call(x, y)
        return y, reference(x)
    if signature == "pair":
        mantissa, exponent = np.empty(5), np.empty(5)
        call(x, mantissa, exponent)
        return mantissa * np.exp2(exponent), reference(x)
    if signature == "loss":
        labels = rng.integers(0, x.shape[1], x.shape[0])
        losses, grad = np.empty(x.shape[0]), np.empty_like(x)
        call(x, labels, -100, 1.0, losses, grad)
        return (losses, grad), reference(x, labels)
    if signature == "map":
        t = -rng.uniform(0, 87, 1001).astype(np.float32)
        e = np.empty_like(t)
        call(t, e)
        return e, reference(t)
    code = softmaxlib.quant.create_dynamic_map()
    tables = _codebooks.search_tables(code)
    blocksize = 64
    if signature == "codes":
        y = rng.uniform(-1, 1, 1001).astype(np.float32)
        q = np.empty(y.size, np.uint8)
        call(y, tables, q)
        return q, reference(y, code)
    flat = x.reshape(-1)
    q, absmax = np.empty(flat.size, np.uint8), np.empty(-(-flat.size // blocksize), np.float32)
    _bindings.bound("quantize_blockwise", backend)(flat, blocksize, tables, q, absmax)
    if signature == "quantize":
        return (q, absmax), reference(flat, code, blocksize)
    if signature == "dequantize":
        out = np.empty(flat.size, np.float32)
        call(q, absmax, blocksize, code, out)
        return out, reference(q, absmax, blocksize, code)
    if signature == "optim":
        return _optimizer_step_on_random_input(kernel, call, rng)
    raise NotImplementedError(f"no random input for signature {signature!r}: add it here")


def _optimizer_step_on_random_input(kernel, call, rng):
    """(p after one step of the kernel's rule, the oracle's) from random p, g and states."""
    p = rng.standard_normal(5 * 301).astype(np.float32)
    g = rng.standard_normal(p.size).astype(np.float32)
    optimizer = {"adam_step": "adamw", "momentum_step": "sgd", "lion_step": "lion", "rms_step": "rmsprop"}[kernel.id]
    _, signed = softmaxlib.optim.OPTIMIZERS[optimizer]
    start = [np.abs(rng.standard_normal(p.size)) * (1 if s else 0.1) * (rng.integers(0, 2, p.size) * 2 - 1 if s else 1)
             for s in signed]
    state = softmaxlib.optim.State8bit.quantized(start, signed, blocksize=64)
    before = [np.float64(s) for s in state.dequantized()]
    hyper = {"adamw": {"lr": 1e-2, "betas": (0.9, 0.99), "eps": 1e-8, "weight_decay": 0.1, "step": 3},
             "sgd": {"lr": 1e-2, "momentum": 0.9, "dampening": 0.1, "nesterov": False, "weight_decay": 0.1,
                     "step": 3},
             "lion": {"lr": 1e-2, "betas": (0.9, 0.99), "weight_decay": 0.1},
             "rmsprop": {"lr": 1e-2, "alpha": 0.9, "eps": 1e-8, "weight_decay": 0.1}}[optimizer]
    constants = {"adamw": lambda: softmaxlib.optim._adam_constants(decoupled=True, **hyper),
                 "sgd": lambda: softmaxlib.optim._sgd_constants(**hyper),
                 "lion": lambda: softmaxlib.optim._lion_constants(**hyper, step=3),
                 "rmsprop": lambda: softmaxlib.optim._rmsprop_constants(**hyper)}[optimizer]()
    expected = getattr(oracle, kernel.oracle)(p, g, *before, **hyper, **({"decoupled": True} if optimizer == "adamw"
                                                                           else {}))
    call(p, g, state, constants)
    return p, expected[0]


@pytest.mark.parametrize("kernel", KERNELS, ids=lambda k: k.id)
def test_every_kernel_meets_its_tolerance(kernel, backend, rng):
    """Each kernel's bound call against its oracle on random finite input, within the catalog's
    tolerance (oracle.tolerance_error measures it)."""
    y, reference = _run_on_random_input(kernel, backend, rng)
    measure, bound = kernel.tolerance
    error = oracle.tolerance_error(kernel, y, reference)
    assert error <= bound, f"{kernel.id} on {backend}: error {error} > {bound} ({measure})"


def test_ids_are_unique_and_public_functions_exist():
    assert len({k.id for k in KERNELS}) == len(KERNELS)
    for kernel in KERNELS:
        if kernel.function is not None:
            module = importlib.import_module(f"softmaxlib.{kernel.family}")
            assert callable(getattr(module, kernel.function)), f"softmaxlib.{kernel.family}.{kernel.function}"
        assert kernel.family in _catalog.FAMILIES


def test_public_variants_come_from_the_catalog():
    for function, variants in softmaxlib.three_pass.VARIANTS.items():
        assert variants == _catalog.variants("three_pass", function)
        for variant in variants:
            assert _catalog.kernel_of("three_pass", function, variant).id == f"{function}_{variant}"


@requires_c
def test_every_declared_symbol_is_in_the_extension():
    """The build declares what the catalog lists (build_ffi.py), and the extension defines it."""
    for line in _catalog.c_declarations().splitlines():
        name = line.split("(", 1)[0].split()[-1]
        assert hasattr(_dispatch.lib, name), name


@requires_c
@pytest.mark.parametrize("family", _catalog.FAMILIES)
def test_tiles_are_exported_per_isa(family):
    for isa in _catalog.ISAS:
        tiles = _bindings.tiles(family, isa)
        assert tiles and tiles[0] == {"avx2": 8, "avx512": 16}[isa]
        assert all(tile % tiles[0] == 0 for tile in tiles)


def test_runtime_info_names_catalog_kernels():
    info = softmaxlib.runtime_info()
    for name, runs in info["functions"].items():
        for dtype in ("float32", "float64"):
            if dtype in runs:
                assert runs[dtype]["kernel"] in _catalog.KERNELS, (name, dtype)
                assert runs[dtype]["backend"] in _dispatch.USABLE_BACKENDS
                if "beyond" in runs[dtype]:
                    assert runs[dtype]["beyond"] in _catalog.KERNELS and runs[dtype]["crossover_elements"] > 0
    assert info["backends"]["default"] == _dispatch.DEFAULT_BACKEND
    assert "softmaxlib.quant.quantize_blockwise" in info["functions"]


def test_bound_calls_are_resolved_once():
    first = _bindings.bound("softmax_reload", "numba", np.float32)
    assert _bindings.bound("softmax_reload", "numba", np.float32) is first

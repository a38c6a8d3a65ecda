"""Process state: results do not depend on flush-to-zero or denormals-are-zero, and the
kernels form no subnormal on inputs whose documented outputs do not need one.

FTZ/DAZ (tests/fpenv.py) may be set by any library in the process. For normal-range input every
kernel gives the same bits with them as without (docs/semantics.md lists what can differ: subnormal
inputs read as zero, subnormal outputs of the float64 and log kernels flushed). On Intel cores
every operation with a subnormal operand or result takes a microcode assist, which made the
softmax family 8-13x slower on rows wider than about 87; the sticky MXCSR flags show whether a
kernel still forms one, on any x86 CPU (AMD sets the same flags without the slowdown).
"""
import importlib

import numpy as np
import pytest

import softmaxlib
from conftest import BACKENDS
from fpenv import flush_denormals, requires_mxcsr, subnormal_flags
from softmaxlib import _catalog, quant, stablemax, two_pass

pytestmark = [requires_mxcsr, pytest.mark.subnormal]  # sets MXCSR itself

DISTRIBUTIONS = {
    "normal": lambda rng, shape: rng.standard_normal(shape),
    "uniform80": lambda rng, shape: rng.uniform(-80, 80, shape),
    "uniform1000": lambda rng, shape: rng.uniform(-1000, 1000, shape),
    "normal30": lambda rng, shape: rng.standard_normal(shape) * 30,
}


def rows(rng, distribution, dtype=np.float32, shape=(6, 1000)):
    x = DISTRIBUTIONS[distribution](rng, shape).astype(dtype)
    x[0, :7] = [0, -87.3, -87.4, -103.3, -104, -150, -1e12]  # exps near and below FLT_MIN
    x[1, 3] = -np.inf
    return x


def row_function(name):
    spec = _catalog.by_signature("rows")[name]
    function = getattr(importlib.import_module(f"softmaxlib.{spec.family}"), spec.function)
    if spec.variant is None:
        return function
    return lambda x, **kwargs: function(x, variant=spec.variant, **kwargs)


def every_kernel():
    """(name, f(x, backend) -> tuple of arrays) for every kernel of the catalog."""
    kernels = [(name, (lambda f: lambda x, b: (f(x, backend=b),))(row_function(name)))
               for name in _catalog.by_signature("rows")]
    kernels += [
        ("sum_exp_pair", lambda x, b: two_pass.sum_exp_pair(x, backend=b)),
        ("logsumexp", lambda x, b: (softmaxlib.logsumexp(x, backend=b),)),
        ("softmax (auto)", lambda x, b: (softmaxlib.softmax(x, backend=b),)),
        ("stablemax_cross_entropy", lambda x, b: stablemax.stablemax_cross_entropy(
            x, np.arange(x.shape[0]) % x.shape[1], reduction="none", return_grad=True, backend=b)),
        ("quantize_blockwise", lambda x, b: quantize(x, b)),
        ("dequantize_blockwise", lambda x, b: (dequantize(x, b),)),
    ]
    return kernels


def quantize(x, backend):
    q, state = quant.quantize_blockwise(np.where(np.isfinite(x), x, 0), blocksize=256, backend=backend)
    return q, state.absmax


def dequantize(x, backend):
    q, state = quant.quantize_blockwise(np.where(np.isfinite(x), x, 0), blocksize=256, backend="numba")
    return quant.dequantize_blockwise(q, state, backend=backend)


KERNELS = every_kernel()


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name,kernel", KERNELS, ids=[name for name, _ in KERNELS])
def test_same_bits_under_ftz_and_daz(name, kernel, dtype, distribution, backend, rng):
    x = rows(rng, distribution, dtype)
    expected = kernel(x, backend)
    for ftz, daz in ((True, True), (True, False), (False, True)):
        with flush_denormals(ftz=ftz, daz=daz):
            results = kernel(x, backend)
        for result, reference in zip(results, expected):
            assert_same_bits_but_subnormals(result, reference, f"{name} with FTZ={ftz}, DAZ={daz}")


def assert_same_bits_but_subnormals(result, reference, what):
    """Bit for bit, except that a subnormal reference (float64 outputs keep them) may come out
    as a zero of its sign under FTZ."""
    if reference.dtype.kind != "f":
        np.testing.assert_array_equal(result, reference, err_msg=what)
        return
    subnormal = (reference != 0) & (np.abs(reference) < np.finfo(reference.dtype).tiny)
    flushed = np.where(subnormal, np.copysign(0.0, reference), reference).astype(reference.dtype)
    same = (result.view(np.uint8).reshape(result.shape + (-1,)) == reference.view(np.uint8).reshape(
        reference.shape + (-1,))).all(-1)
    same_as_flushed = (result.view(np.uint8).reshape(result.shape + (-1,)) == flushed.view(np.uint8).reshape(
        flushed.shape + (-1,))).all(-1)
    bad = ~(same | (subnormal & same_as_flushed))
    assert not bad.any(), f"{what}: {bad.sum()} values differ, e.g. {result[bad][:3]} for {reference[bad][:3]}"


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
@pytest.mark.parametrize("name,kernel", KERNELS, ids=[name for name, _ in KERNELS])
def test_no_subnormal_intermediates(name, kernel, distribution, backend, rng):
    """float32 rows whose documented outputs hold no subnormal (softmax flushes those below
    FLT_MIN): no kernel may form one on the way."""
    x = rows(rng, distribution)
    kernel(x, backend)  # compile and warm up outside the measured call
    assert subnormal_flags(lambda: kernel(x, backend)) == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_flags_see_a_subnormal(backend):
    """The check above can fail: a row whose outputs are subnormal in float64 raises them."""
    x = np.array([0.0, -720.0], np.float64)
    assert subnormal_flags(lambda: softmaxlib.softmax(x, backend=backend)) != []


@pytest.mark.xfail(strict=True, reason="known: StableMax's 1/sum split forms a subnormal low product for |x| "
                                       "above about 1e27, so FTZ changes its last bits (docs/semantics.md)")
def test_stablemax_of_huge_negative_logits_under_ftz(backend, rng):
    x = rng.standard_normal((4, 1000)).astype(np.float32)
    x[:, 0] = -1e30
    expected = stablemax.stablemax(x, backend=backend)
    with flush_denormals():
        assert stablemax.stablemax(x, backend=backend).tobytes() == expected.tobytes()

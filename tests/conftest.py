"""Fixtures shared by the tests: every kernel of the catalog on every backend."""
import atexit
import importlib
import os
import shutil
import tempfile

import numpy as np
import pytest
from hypothesis import settings

import softmaxlib
from softmaxlib import _bindings, _catalog

# The auto path's probe results (softmaxlib/_tune.py) go to a temporary folder, not ~/.cache.
if "SOFTMAXLIB_CACHE_DIR" not in os.environ:
    os.environ["SOFTMAXLIB_CACHE_DIR"] = tempfile.mkdtemp(prefix="softmaxlib-tests-")
    atexit.register(shutil.rmtree, os.environ["SOFTMAXLIB_CACHE_DIR"], True)

# Hypothesis: each test states its full example count as max_examples=examples(N); the profile caps
# it. The default run ("fast") draws at most FAST_EXAMPLES per test; the slow step of .ci/run passes
# --hypothesis-profile=full (with -m "slow or hypothesis"), where every test draws its N.
FAST_EXAMPLES = 20

settings.register_profile("fast", max_examples=FAST_EXAMPLES)
settings.register_profile("full", max_examples=10_000)  # a cap above every N
settings.load_profile("fast")  # --hypothesis-profile, applied after this module is imported, wins


def examples(full):
    """max_examples of a hypothesis test whose full count is `full`, under the loaded profile."""
    return min(full, settings.default.max_examples)


BACKENDS = [
    pytest.param(name, marks=pytest.mark.skipif(name not in softmaxlib.backends(), reason=f"{name} not usable on this CPU"))
    for name in _bindings.BACKENDS
]


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


# The suites of softmax's semantics (special values, properties, threads, errors) run the softmax
# kernels; the zoo (test_agreement.py) and the guard pages run every row kernel, StableMax too
# (whose own semantics are in test_stablemax.py).
SOFTMAX_OPERATIONS = [name for name, spec in _catalog.by_signature("rows").items() if spec.function in ("softmax", "log_softmax")]
ROW_KERNELS = list(_catalog.by_signature("rows"))


@pytest.fixture(params=SOFTMAX_OPERATIONS)
def operation(request):
    """Id of a softmax or log-softmax catalog kernel, e.g. 'softmax_reload'."""
    return request.param


@pytest.fixture(params=ROW_KERNELS)
def row_kernel(request):
    """Id of any catalog kernel of signature "rows", e.g. 'softmax_reload' or 'log_stablemax'."""
    return request.param


def public_function(operation):
    """(callable, is_log) for a catalog kernel, through the public API with its variant bound."""
    spec = _catalog.by_signature("rows")[operation]
    function = getattr(importlib.import_module(f"softmaxlib.{spec.family}"), spec.function)
    if spec.variant is None:
        return function, spec.is_log
    return (lambda x, **kwargs: function(x, variant=spec.variant, **kwargs)), spec.is_log


@pytest.fixture
def rng():
    return np.random.default_rng(20261127)


@pytest.fixture(scope="module")
def buffers():
    """Two guarded float32 areas (for x and y), each of whole pages holding zoo.GUARDED_FLOATS
    floats, with a PROT_NONE page right before and after (zoo.place puts arrays against them)."""
    import zoo

    return zoo.guarded_areas(2)


FTZ_DAZ_PASS = os.environ.get("SOFTMAXLIB_TEST_FTZ_DAZ") == "1"


def pytest_configure(config):
    """SOFTMAXLIB_TEST_FTZ_DAZ=1 runs the whole suite with flush-to-zero and denormals-are-zero set
    (the FTZ/DAZ pass of .ci/run): every result checked on normal-range input must come out the
    same. Tests marked `subnormal` check subnormal values themselves, or set MXCSR themselves, and
    are skipped there, as are hypothesis' tests: hypothesis refuses to run when subnormals are
    flushed."""
    config.addinivalue_line("markers", "subnormal: checks subnormal values or sets MXCSR (not run under FTZ/DAZ)")
    if FTZ_DAZ_PASS:
        from fpenv import DENORMALS_ARE_ZERO, FLUSH_TO_ZERO

        lib = softmaxlib._dispatch.lib
        lib.sml_set_mxcsr(lib.sml_get_mxcsr() | FLUSH_TO_ZERO | DENORMALS_ARE_ZERO)


def pytest_collection_modifyitems(config, items):
    if not FTZ_DAZ_PASS:
        return
    skip = pytest.mark.skip(reason="FTZ/DAZ pass: checks subnormal values, or hypothesis (which refuses FTZ)")
    for item in items:
        if item.get_closest_marker("subnormal") or getattr(getattr(item, "obj", None), "is_hypothesis_test", False):
            item.add_marker(skip)

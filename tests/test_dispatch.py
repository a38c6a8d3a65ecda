"""Dispatch: the usable backends, show_runtime(), SOFTMAXLIB_BACKEND, the stale-build check and
backend= on every public call. Environment and build checks run in subprocesses (python -c) that
import the same softmaxlib as this process (or a copy of it), from a neutral working directory."""
import os
import pathlib
import platform
import shutil
import subprocess
import sys
import textwrap

import cffi
import numba
import numpy as np
import pytest

import softmaxlib
from conftest import public_function
from oracle import float32_ulp
from softmaxlib import _bindings, _catalog, _dispatch

PACKAGE_DIR = pathlib.Path(softmaxlib.__file__).resolve().parent
X86_64 = platform.machine().lower() in ("x86_64", "amd64")
FORCED = os.environ.get(_dispatch.ENV_VAR) or None


def run_python(code, tmp_path, backend_variable=None, package_root=PACKAGE_DIR.parent):
    """Runs `python -c code` importing softmaxlib from package_root; SOFTMAXLIB_BACKEND set only if given."""
    env = {key: value for key, value in os.environ.items() if key != _dispatch.ENV_VAR}
    env["PYTHONPATH"] = os.pathsep.join([str(package_root)] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    if backend_variable is not None:
        env[_dispatch.ENV_VAR] = backend_variable
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)


def test_backends_best_first_ending_with_numba():
    usable = softmaxlib.backends()
    assert usable == list(_dispatch.USABLE_BACKENDS)
    assert usable[-1] == "numba"
    assert usable == [b for b in _dispatch.ALL_BACKENDS if b in usable], "not best first"
    assert _dispatch.DEFAULT_BACKEND == (FORCED or usable[0])
    usable.append("junk")  # a fresh list each call
    assert "junk" not in softmaxlib.backends()


@pytest.mark.skipif(not X86_64, reason="the C kernels are x86-64 only")
def test_c_extension_is_loaded_on_x86_64():
    """Guards against a silently failed C build (the package would quietly run on Numba)."""
    assert _dispatch.lib is not None, "softmaxlib._kernels did not load: the C build failed or is missing"
    assert _dispatch.ffi.string(_dispatch.lib.sml_build_version()).decode() == softmaxlib.__version__
    assert "avx2" in softmaxlib.backends() or not _dispatch.CPU_FEATURES["avx2"]


@pytest.mark.skipif(not (X86_64 and os.path.exists("/proc/cpuinfo")), reason="needs Linux /proc/cpuinfo on x86-64")
def test_cpu_features_agree_with_the_kernel():
    """CPUID + XGETBV in runtime.c against the flags Linux reports (which also need OS support)."""
    flags = set()
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    assert flags
    assert _dispatch.CPU_FEATURES == {name: name in flags for name in _dispatch.CPU_FEATURES}
    for backend, needed in _dispatch._REQUIRED_FEATURES.items():
        assert (backend in softmaxlib.backends()) == all(feature in flags for feature in needed), backend


def test_show_runtime(capsys):
    softmaxlib.show_runtime()
    text = capsys.readouterr().out
    for name, present in _dispatch.CPU_FEATURES.items():
        if present:
            assert name in text, f"CPU feature {name} not shown"
    if _dispatch.lib is None:
        assert "not built" in text
    for name in _catalog.KERNELS:
        if _catalog.KERNELS[name].function is not None:
            assert f"float32: {name} on {_dispatch.DEFAULT_BACKEND}" in text, f"kernel {name} not shown"
    assert "softmaxlib.quant.quantize_blockwise:" in text
    assert f"default: {_dispatch.DEFAULT_BACKEND}" in text
    for version in (f"softmaxlib {softmaxlib.__version__}", f"numpy {np.__version__}", f"numba {numba.__version__}",
                    f"cffi {cffi.__version__}"):
        assert version in text


SHOW_DEFAULT = """
    import softmaxlib, softmaxlib._dispatch as d
    print("file", softmaxlib.__file__)
    print("default", d.DEFAULT_BACKEND, d.resolve(None))
    softmaxlib.show_runtime()
"""


@pytest.mark.parametrize("backend", softmaxlib.backends())
def test_environment_variable_forces_the_default(backend, tmp_path):
    result = run_python(SHOW_DEFAULT, tmp_path, backend_variable=backend)
    assert result.returncode == 0, result.stderr
    assert f"file {PACKAGE_DIR / '__init__.py'}" in result.stdout
    assert f"default {backend} {backend}" in result.stdout
    assert f"default: {backend} (forced by SOFTMAXLIB_BACKEND)" in result.stdout
    for name in _catalog.by_signature("rows"):
        assert f"float32: {name} on {backend}" in result.stdout


def test_environment_variable_unset(tmp_path):
    result = run_python(SHOW_DEFAULT, tmp_path)
    assert result.returncode == 0, result.stderr
    best = softmaxlib.backends()[0]
    assert f"default {best} {best}" in result.stdout and "forced" not in result.stdout


@pytest.mark.parametrize("value", ["avx9000", "AVX2", " avx2", "numba,avx2", "garbage!", "\u00e9", "0"])
def test_environment_variable_invalid_fails_the_import(value, tmp_path):
    result = run_python("import softmaxlib", tmp_path, backend_variable=value)
    assert result.returncode == 1, f"expected a clean ImportError exit (1), got {result.returncode}: {result.stderr}"
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: "), result.stderr
    assert f"SOFTMAXLIB_BACKEND={value!r} is invalid" in last
    assert "unknown softmaxlib backend" in last and "avx512, avx2, numba" in last


def test_environment_variable_empty_means_unset(tmp_path):
    """An empty SOFTMAXLIB_BACKEND is treated as unset, as NumPy treats an empty NPY_DISABLE_CPU_FEATURES."""
    result = run_python("import softmaxlib; print(softmaxlib._dispatch.DEFAULT_BACKEND)", tmp_path, backend_variable="")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-1] == softmaxlib.backends()[0]


def test_environment_variable_known_but_unusable(monkeypatch):
    """Simulated in process: the default is computed as at import, with a backend made unusable."""
    monkeypatch.setattr(_dispatch, "USABLE_BACKENDS", ("numba",))
    for backend in ("avx512", "avx2"):
        with pytest.raises(ImportError, match=f"SOFTMAXLIB_BACKEND='{backend}' is invalid: softmaxlib backend "
                                              f"'{backend}' is not usable here"):
            _dispatch._default_backend(backend)
    assert _dispatch._default_backend("numba") == "numba"


def _copy_package(tmp_path, keep_extension=True):
    root = tmp_path / "copy"
    ignore = shutil.ignore_patterns("*.o") if keep_extension else shutil.ignore_patterns("*.o", "_kernels*")
    shutil.copytree(PACKAGE_DIR, root / "softmaxlib", ignore=ignore)  # copy2: mtimes kept, Numba's cache reused
    return root


@pytest.mark.skipif(_dispatch.lib is None, reason="no compiled extension to be stale")
def test_stale_build_fails_the_import(tmp_path):
    root = _copy_package(tmp_path)
    version_file = root / "softmaxlib" / "_version.py"
    version_file.write_text(version_file.read_text().replace(softmaxlib.__version__, "9.9.9"))
    code = """
        import importlib.util
        print("file", importlib.util.find_spec("softmaxlib").origin)  # where it will import from
        import softmaxlib
    """
    result = run_python(code, tmp_path, package_root=root)
    assert f"file {root / 'softmaxlib' / '__init__.py'}" in result.stdout, "the copy was not imported"
    assert str(root / "softmaxlib" / "_dispatch.py") in result.stderr, result.stderr
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: ") and "stale" in last, result.stderr
    assert f"version {softmaxlib.__version__}" in last and "9.9.9" in last

    # The unmodified copy imports fine, from the copy.
    version_file.write_text(f'__version__ = "{softmaxlib.__version__}"\n')
    result = run_python("import softmaxlib; print('file', softmaxlib.__file__)", tmp_path, package_root=root)
    assert result.returncode == 0, result.stderr
    assert f"file {root / 'softmaxlib' / '__init__.py'}" in result.stdout


@pytest.mark.skipif(_dispatch.lib is None, reason="no compiled extension to remove")
def test_without_the_extension_numba_only(tmp_path):
    """The package without its .so: Numba only (with a warning on x86-64); a C backend is then unusable."""
    root = _copy_package(tmp_path, keep_extension=False)
    code = """
        import warnings
        warnings.simplefilter("always")
        import numpy as np, softmaxlib, softmaxlib._dispatch as d
        print("file", softmaxlib.__file__)
        print("backends", softmaxlib.backends(), d.lib)
        print("result", softmaxlib.three_pass.softmax(np.zeros(4, np.float32)).tolist())
        softmaxlib.show_runtime()
    """
    result = run_python(code, tmp_path, package_root=root)
    assert result.returncode == 0, result.stderr
    assert f"file {root / 'softmaxlib' / '__init__.py'}" in result.stdout
    editable = run_python("import importlib.util; print(importlib.util.find_spec('softmaxlib._kernels'))", tmp_path,
                          package_root=root)
    if "_kernels" in editable.stdout and str(root) not in editable.stdout:
        pytest.skip("an editable install (pip install -e) maps softmaxlib._kernels to the checkout's build")
    assert "backends ['numba'] None" in result.stdout
    assert "result [0.25, 0.25, 0.25, 0.25]" in result.stdout
    assert "not built" in result.stdout
    if X86_64:
        assert "RuntimeWarning" in result.stderr and "not built" in result.stderr
    result = run_python("import softmaxlib", tmp_path, backend_variable="avx2", package_root=root)
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: ") and "SOFTMAXLIB_BACKEND='avx2'" in last and "not usable" in last


def test_backend_argument_routes_to_that_kernel(operation, monkeypatch):
    """backend= picks the float32 kernel of that backend; no backend= picks the default; float64
    always takes the float64 kernel."""
    calls = []
    original = _bindings.bound

    def spy(kernel_id, backend, dtype):
        calls.append((kernel_id, backend, np.dtype(dtype).name))
        return original(kernel_id, backend, dtype)

    monkeypatch.setattr(_bindings, "bound", spy)
    function, _ = public_function(operation)
    x = np.random.default_rng(1).standard_normal((2, 9)).astype(np.float32)
    for backend in softmaxlib.backends():
        calls.clear()
        function(x, backend=backend)
        function(x.T, axis=0, backend=backend, out=np.empty_like(x.T))
        assert calls == [(operation, backend, "float32")] * 2
    # Without backend=, float32 rows along the last axis take the fast path, which calls the
    # default backend's kernel without a lookup: the same bits as that kernel.
    expected = np.empty_like(x)
    original(operation, _dispatch.DEFAULT_BACKEND, np.float32)(x, expected)
    np.testing.assert_array_equal(function(x), expected)
    calls.clear()
    function(x.astype(np.float16))
    assert calls == [(operation, _dispatch.DEFAULT_BACKEND, "float32")]
    calls.clear()
    function(x.astype(np.float64), backend="numba")
    assert [c[2] for c in calls] == ["float64"]


def _ulp_distance(a, b):
    """|a - b| in float32 ULPs of max(|a|, |b|, 2^-126), with infinities and NaN matching exactly."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    scale = np.maximum(np.maximum(np.abs(a), np.abs(b)), np.finfo(np.float32).tiny)
    return np.abs(a64 - b64) / float32_ulp(scale)


@pytest.mark.parametrize("shape, axis", [((5, 1), -1), ((4, 7), -1), ((3, 17), -1), ((2, 70), -1), ((2, 1000), -1),
                                         ((1, 10000), -1), ((33, 8), 0), ((3, 4, 65), 1)])
def test_backends_agree(shape, axis, operation):
    function, is_log = public_function(operation)
    rng = np.random.default_rng(sum(shape) + axis)
    x = rng.standard_normal(shape).astype(np.float32)
    results = {backend: function(x, axis=axis, backend=backend) for backend in softmaxlib.backends()}
    reference = results["numba"]
    for backend, y in results.items():
        assert y.dtype == np.float32 and y.shape == shape
        if is_log:
            # (x - max) - log(sum): the sums differ in their last bits, so the error is a few ULP of
            # max(|y|, log(sum)); log(sum) is -y at the row max, where x - max = 0.
            log_sum = -reference.max(axis=axis, keepdims=True)
            scale = np.maximum(np.maximum(np.abs(reference), np.abs(log_sum)), np.finfo(np.float32).tiny)
            error = np.abs(y.astype(np.float64) - reference) / float32_ulp(scale)
        else:
            error = _ulp_distance(y, reference)
        assert error.max() <= 4, f"{backend} differs from numba by {error.max()} ULP"
    # float64 and float16 input take the same path on every backend.
    for dtype in (np.float64, np.float16):
        outputs = [function(x.astype(dtype), axis=axis, backend=backend) for backend in softmaxlib.backends()]
        for y in outputs[1:]:
            assert y.dtype == dtype
            if dtype == np.float64:
                np.testing.assert_array_equal(y, outputs[0])
            else:
                assert (np.abs(y.astype(np.float64) - outputs[0]) <= np.spacing(np.abs(outputs[0]))).all()


NUMBA_DEFAULT_CALLS = """
    import numpy as np, softmaxlib
    from softmaxlib import quant, stablemax, two_pass
    x = np.random.default_rng(5).standard_normal((4, 40)).astype(np.float32) * np.float32(10)
    q, state = quant.quantize_blockwise(x, blocksize=16)
    results = dict(
        softmax=softmaxlib.softmax(x), log_softmax=softmaxlib.log_softmax(x), logsumexp=softmaxlib.logsumexp(x),
        logsumexp_row=np.asarray(softmaxlib.logsumexp(x[0])), two_pass=two_pass.softmax(x),
        stablemax=stablemax.stablemax(x), q=q, absmax=state.absmax, x_hat=quant.dequantize_blockwise(q, state),
        x_hat_flat_q=quant.dequantize_blockwise(q.reshape(-1), state))
    np.savez({path!r}, **results)
    print("default", softmaxlib._dispatch.DEFAULT_BACKEND)
"""


def test_numba_as_the_default_backend_matches_backend_numba(tmp_path):
    """SOFTMAXLIB_BACKEND=numba: the public calls without backend= (no fast path there) give what
    backend="numba" gives, for 2-D input and a q of another shape than the state's."""
    path = tmp_path / "numba_default.npz"
    result = run_python(NUMBA_DEFAULT_CALLS.format(path=str(path)), tmp_path, backend_variable="numba")
    assert result.returncode == 0, result.stderr
    assert "default numba" in result.stdout
    got = np.load(path)
    x = np.random.default_rng(5).standard_normal((4, 40)).astype(np.float32) * np.float32(10)
    q, state = softmaxlib.quant.quantize_blockwise(x, blocksize=16, backend="numba")
    expected = dict(
        softmax=softmaxlib.softmax(x, backend="numba"), log_softmax=softmaxlib.log_softmax(x, backend="numba"),
        logsumexp=softmaxlib.logsumexp(x, backend="numba"), logsumexp_row=softmaxlib.logsumexp(x[0], backend="numba"),
        two_pass=softmaxlib.two_pass.softmax(x, backend="numba"),
        stablemax=softmaxlib.stablemax.stablemax(x, backend="numba"), q=q, absmax=state.absmax,
        x_hat=softmaxlib.quant.dequantize_blockwise(q, state, backend="numba"))
    expected["x_hat_flat_q"] = expected["x_hat"]
    for name, value in expected.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)


def test_a_dtype_with_metadata_does_not_leak_into_other_results():
    tagged = np.dtype(np.float32, metadata={"tag": 1})
    softmaxlib.softmax(np.zeros(4, tagged), backend=_dispatch.DEFAULT_BACKEND)
    assert softmaxlib.softmax(np.zeros(4, np.float32), backend=_dispatch.DEFAULT_BACKEND).dtype.metadata is None

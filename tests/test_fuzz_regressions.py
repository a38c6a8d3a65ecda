"""Defects found by the fuzz targets in fuzz/ (minimised reproducers), and a check that every
target still runs on its seed corpus.

A defect that is still open is a strict xfail: the test states the documented behaviour, so it
fails while the defect is there and XPASSes (which fails the run) once it is fixed. Then delete
the xfail marker. The defects fixed since they were found are plain regression tests, each with
a comment saying what it used to do.
"""
import importlib
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import softmaxlib
from softmaxlib import quant, stablemax, two_pass

FUZZ = Path(__file__).resolve().parent.parent / "fuzz"
TARGETS = sorted(path.stem for path in FUZZ.glob("fuzz_*.py"))
C_BACKENDS = [backend for backend in softmaxlib.backends() if backend != "numba"]
# .ci/run's sanitizer pass copies tests/ without fuzz/: the tests of the targets need the folder.
needs_fuzz_folder = pytest.mark.skipif(not FUZZ.is_dir(), reason="no fuzz/ folder beside tests/")


# ---------------------------------------------------------------- the targets cannot rot


def _load(target):
    pytest.importorskip("atheris", reason="the fuzz extra (pip install '.[fuzz]') is not installed")
    if str(FUZZ) not in sys.path:
        sys.path.insert(0, str(FUZZ))
    return importlib.import_module(target)


@needs_fuzz_folder
def test_there_are_targets_and_seeds():
    assert set(TARGETS) == {"fuzz_quant", "fuzz_softmax", "fuzz_stablemax"}
    for target in TARGETS:
        assert sorted((FUZZ / "corpus" / target).iterdir()), f"fuzz/corpus/{target}/ has no seeds"


@needs_fuzz_folder
@pytest.mark.subnormal  # the targets' references assume IEEE subnormals
@pytest.mark.parametrize("target", TARGETS)
def test_target_runs_on_its_seed_corpus(target):
    module = _load(target)
    for seed in sorted((FUZZ / "corpus" / target).iterdir()):
        module.TestOneInput(seed.read_bytes())  # a Finding or an undocumented exception fails the test


@needs_fuzz_folder
@pytest.mark.parametrize("target", TARGETS)
def test_target_survives_arbitrary_bytes(target):
    """Whatever the bytes (too short, all zeros, all ones), the harness itself does not fail."""
    module = _load(target)
    rng = np.random.default_rng(len(target))
    for data in [b"", b"\0", b"\xff" * 64, bytes(512)] + [rng.bytes(n) for n in (8, 100, 1000)]:
        module.TestOneInput(data)


@needs_fuzz_folder
def test_run_all_reads_the_execution_counts():
    sys.path.insert(0, str(FUZZ))
    try:
        run_all = importlib.import_module("run_all")
    finally:
        sys.path.remove(str(FUZZ))
    log = "#2\tINITED cov: 3\n#4096\tpulse  cov: 9\n#52242\tDONE   cov: 124 ft: 221\nDone 52242 runs in 181 second(s)\n"
    assert run_all.executions(log) == 52242
    assert run_all.executions("#2\tINITED cov: 3\n#300\tNEW cov: 5\n") == 300
    assert run_all.executions("Traceback (most recent call last):\n") is None
    assert run_all.targets() == TARGETS


# ---------------------------------------------------------------- float64 extremes


# Regression, found by fuzz_softmax: float64 sum_exp_pair of |max| > DBL_MAX ln 2 was (nan, +-inf) and logsumexp NaN; fixed in b1ef854.
# Was: float64 sum_exp_pair of a row whose max exceeds DBL_MAX / log2(e) ~ 1.246e308 in magnitude is (nan,
# +-inf): the exponent max * log2(e) overflows in _numba.two_pass.sum_exp_pair_exact, so logsumexp gives NaN
# for a finite row
@pytest.mark.parametrize("row", [[1.7e308, 1.7e308], [1.3e308], [-1.3e308], [1.3e308, -np.inf]])
def test_float64_pairs_beyond_dbl_max_ln2_saturate(row):
    """docs/semantics.md: the pair saturates to (inf, 0) / (0, -inf); logsumexp is computed from x."""
    x = np.array(row)
    expected = np.logaddexp.reduce(x)  # finite: max + log(count of max)
    for backend in softmaxlib.backends():
        pair = tuple(float(v) for v in two_pass.sum_exp_pair(x, backend=backend))
        assert pair == ((np.inf, 0.0) if max(row) > 0 else (0.0, -np.inf)), (backend, pair)
        assert softmaxlib.logsumexp(x, backend=backend) == pytest.approx(expected, rel=1e-15)


# Regression, found by fuzz_stablemax: raised ZeroDivisionError; fixed in b1ef854.
# Was: float64 stablemax / log_stablemax of a finite row whose sum of s overflows (e.g. [1e308, 1e308]) raises
# ZeroDivisionError: the row is sent to infinite_row(), which divides by its number of +inf elements, 0
@pytest.mark.parametrize("function, expected", [(stablemax.stablemax, [0.5, 0.5]),
                                                (stablemax.log_stablemax, [-math.log(2)] * 2)])
def test_float64_stablemax_whose_sum_overflows(function, expected):
    for backend in softmaxlib.backends():  # logs near 709: good to about 1e-13 (docs/semantics.md)
        np.testing.assert_allclose(function(np.array([1e308, 1e308]), backend=backend), expected, rtol=1e-15,
                                   atol=1e-13)


# Regression, found by fuzz_stablemax (probe): loss +inf; fixed in b1ef854.
# Was: float64 stablemax_cross_entropy of a finite row whose sum of s overflows gives loss +inf (the true loss
# is finite, log 2 for [1e308, 1e308]), and a gradient of [-1e-308, 0] instead of [-0.5, 0.5] / (1 + 1e308)
def test_float64_cross_entropy_whose_sum_overflows():
    for backend in softmaxlib.backends():
        loss, grad = stablemax.stablemax_cross_entropy(np.array([[1e308, 1e308]]), np.array([0]), return_grad=True,
                                                       backend=backend)
        assert loss == pytest.approx(math.log(2), abs=1e-13), backend
        # (subnormal values: .ci/run's FTZ/DAZ pass may flush them to zero)
        np.testing.assert_allclose(grad, [[-0.5 / (1 + 1e308), 0.5 / (1 + 1e308)]], rtol=1e-12, atol=1e-300)


# ---------------------------------------------------------------- merge_pairs


def _parts_pairs(row, backend):
    x = np.array(row, np.float32)
    return [two_pass.sum_exp_pair(x[:1], backend=backend), two_pass.sum_exp_pair(x[1:], backend=backend)], \
        two_pass.sum_exp_pair(x, backend=backend)


# Regression, found by fuzz_softmax: (nan, 1154); fixed in b1ef854.
# Was: merge_pairs of the parts of a row with +inf scales the (inf, 0) part by 2**(0 - E) with E the largest
# finite part's exponent; for E > 1074 that is 0 and inf * 0 = NaN: the parts of [800, inf] merge to (nan,
# 1154) instead of (inf, 0)
def test_merge_pairs_of_an_inf_row_is_inf():
    for backend in softmaxlib.backends():
        pairs, whole = _parts_pairs([800.0, np.inf], backend)
        assert tuple(map(float, whole)) == (np.inf, 0.0)
        mantissa, exponent = two_pass.merge_pairs(pairs)
        assert mantissa == np.inf, (backend, mantissa, exponent)


# Regression, found by fuzz_softmax: (nan, E) / (inf, E); fixed in b1ef854.
# Was: merge_pairs of the parts of a row with a NaN or +inf keeps the largest finite part's exponent: (nan, 1)
# / (inf, 1) for [1, nan] / [1, inf], where sum_exp_pair of the whole row gives (nan, 0) / (inf, 0)
# (docs/semantics.md, two_pass.sum_exp_pair)
@pytest.mark.parametrize("row", [[1.0, np.nan], [1.0, np.inf], [800.0, np.nan]])
def test_merge_pairs_of_a_nan_or_inf_row_is_the_rows_pair(row):
    for backend in softmaxlib.backends():
        pairs, (whole_m, whole_e) = _parts_pairs(row, backend)
        mantissa, exponent = two_pass.merge_pairs(pairs)
        assert float(exponent) == float(whole_e) == 0.0, (backend, mantissa, exponent)
        assert np.isnan(mantissa) == np.isnan(whole_m) and (np.isnan(mantissa) or mantissa == whole_m)


# ---------------------------------------------------------------- stablemax_cross_entropy


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ignore_index", [2**63, -2**63 - 1])
def test_cross_entropy_ignore_index_beyond_int64(ignore_index, dtype):
    """An ignore_index beyond int64 used to raise OverflowError or Numba's TypingError: it works,
    ignoring the rows whose label equals it (uint64 labels can hold 2**63)."""
    logits = np.zeros((2, 3), dtype)
    for backend in softmaxlib.backends():
        loss = stablemax.stablemax_cross_entropy(logits, np.array([0, 1]), ignore_index=ignore_index, backend=backend)
        assert loss == pytest.approx(math.log(3)), backend  # no label equals it: nothing ignored
        if ignore_index > 0:
            labels = np.array([0, ignore_index], np.uint64)
            loss, grad = stablemax.stablemax_cross_entropy(logits, labels, ignore_index=ignore_index,
                                                           reduction="sum", return_grad=True, backend=backend)
            assert loss == pytest.approx(math.log(3)) and (grad[1] == 0).all(), backend


# Regression, found by fuzz_stablemax: the label's gradient (p - 1) / (1 + |x|) was computed from
# p = s / sum in double and cancelled when the label held all but ~2^-53 of the mass (logits
# [1, 1e17, 1], label 1 gave 0, and avx2 and numba disagreed at 3.27e16), though docs/stablemax.md
# says p - 1 does not cancel; fixed in 2fa39b7.
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_label_gradient_does_not_cancel(dtype):
    top = 1e17
    logits = np.array([[1.0, top, 1.0]], dtype)
    others = 2 * 2.0  # s(1) = 2, twice
    expected = -(others / (top + 1 + others)) / (1 + top)  # (p - 1) / (1 + |x|), p - 1 = -others / sum
    for backend in softmaxlib.backends():
        _, grad = stablemax.stablemax_cross_entropy(logits, np.array([1]), reduction="sum", return_grad=True,
                                                    backend=backend)
        assert grad[0, 1] == pytest.approx(expected, rel=1e-5, abs=0), backend


# ---------------------------------------------------------------- quantization


# Regression, found by fuzz_quant: numba's block_absmax let a later element overwrite a NaN; fixed in 5b34431.
# Was: the Numba quantize kernel's block_absmax keeps a NaN only until a later element of its lane replaces it
# (`a if not a <= m else m`), so a block [nan, 0, ...] gets absmax 0: nonfinite='raise' does not raise, and
# 'propagate' gives absmax 0 instead of NaN
@pytest.mark.skipif("numba" not in softmaxlib.backends(), reason="numba not usable")
def test_numba_quantize_keeps_a_nan():
    x = np.array([np.nan] + [0.0] * 15, np.float32)
    with pytest.raises(ValueError, match=r"x\[0\] is nan"):
        quant.quantize_blockwise(x, blocksize=16, backend="numba")


# Regression, found by fuzz_quant; fixed in 5b34431.
# Was: the Numba quantize kernel's block_absmax loses a NaN to a later element: with nonfinite='propagate' the
# block [0, 0, 0, nan, 1, ...] gets absmax 1, not NaN, and codes that differ from the C backends'
# (docs/quant.md: every backend gives the same codes and absmax)
@pytest.mark.skipif("numba" not in softmaxlib.backends(), reason="numba not usable")
def test_numba_quantize_propagate_keeps_a_nan():
    x = np.array([0.0] * 3 + [np.nan] + [1.0] * 12, np.float32)
    q, state = quant.quantize_blockwise(x, blocksize=16, nonfinite="propagate", backend="numba")
    assert np.isnan(state.absmax[0])
    assert (q == 127).all()  # the signed dynamic map's zero code


# Regression, found by fuzz_quant (probe): +inf; fixed in 5b34431.
# Was: with nonfinite='propagate' a block holding an inf has absmax inf and the zero code, and dequantizes to
# code[zero code] * inf: +inf, not NaN as docs/quant.md says, when the codebook has no 0 (here 256 values from
# 0.1 to 1, whose zero code is 0)
def test_propagate_block_without_zero_code_dequantizes_to_nan():
    code = np.linspace(0.1, 1, 256, dtype=np.float32)
    x = np.array([np.inf] + [1.0] * 15, np.float32)
    for backend in softmaxlib.backends():
        q, state = quant.quantize_blockwise(x, code, blocksize=16, nonfinite="propagate", backend=backend)
        assert np.isnan(quant.dequantize_blockwise(q, state, backend=backend)).all(), backend


@pytest.mark.skipif(len(softmaxlib.backends()) < 2, reason="one backend only")
@pytest.mark.parametrize("nan_bits", [0x7fc00001, 0x7f800001, 0xff800001], ids=hex)
def test_absmax_of_a_nan_with_payload_is_the_same_on_every_backend(nan_bits):
    nan = np.array([nan_bits], np.uint32).view(np.float32)[0]
    x = np.array([1.0, nan] + [0.0] * 14, np.float32)
    absmax_bits = {backend: quant.quantize_blockwise(x, blocksize=16, nonfinite="propagate", backend=backend)[1]
                   .absmax.view(np.uint32).tolist() for backend in softmaxlib.backends()}
    assert len({tuple(bits) for bits in absmax_bits.values()}) == 1, {b: [hex(v) for v in bits]
                                                                      for b, bits in absmax_bits.items()}


def _state(**changes):
    fields = dict(absmax=np.ones(2, np.float32), code=quant.create_dynamic_map(), blocksize=16, shape=(32,),
                  dtype=np.dtype(np.float32))
    fields.update(changes)
    return quant.QuantState(**fields)


# Regression, found by fuzz_quant: ZeroDivisionError / OverflowError / TypingError / AttributeError; fixed in 5b34431.
# Was: dequantize_blockwise does not check a hand-built QuantState's block size or absmax
# (QuantState.from_dict does): block size 0 raises ZeroDivisionError, 2**70 OverflowError (C backends) or
# Numba's TypingError, np.uint8(16) OverflowError in -(-q.size // blocksize), an absmax list AttributeError
@pytest.mark.parametrize("changes", [dict(blocksize=0, absmax=np.ones(0, np.float32), shape=(0,)),
                                     dict(blocksize=0), dict(blocksize=2**70, absmax=np.ones(1, np.float32)),
                                     dict(blocksize=np.uint8(16)), dict(absmax=[1.0, 1.0])],
                         ids=["zero-empty", "zero", "2**70", "uint8", "absmax-list"])
def test_hand_built_state_blocksize_and_absmax(changes):
    try:
        state = _state(**changes)
    except (TypeError, ValueError):
        return  # refusing the state when it is built would do too
    q = np.full(state.shape, 200, np.uint8)
    for backend in softmaxlib.backends():
        try:
            y = quant.dequantize_blockwise(q, state, backend=backend)
        except (TypeError, ValueError):
            continue  # a documented error would do
        expected = state.code[200] * np.asarray(state.absmax, np.float32)[np.arange(q.size) // int(state.blocksize)]
        np.testing.assert_array_equal(y, expected)


GUARDED_DEQUANTIZE = textwrap.dedent("""
    import ctypes, ctypes.util, mmap
    import numpy as np
    from softmaxlib import quant
    page = mmap.PAGESIZE
    region = mmap.mmap(-1, 2 * page, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS,
                       prot=mmap.PROT_READ | mmap.PROT_WRITE)
    memory = np.frombuffer(region, np.uint8)
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    assert libc.mprotect(memory.ctypes.data + page, page, 0) == 0  # the second page: PROT_NONE
    code = memory[page - 16:page].view(np.float32)  # 4 values, right before the guard page
    code[:] = [-1, 0, 0.5, 1]
    try:
        state = quant.QuantState(absmax=np.ones(2, np.float32), code=code, blocksize=16, shape=(32,),
                                 dtype=np.float32)
        quant.dequantize_blockwise(np.full(32, 255, np.uint8), state, backend={backend!r})
    except (TypeError, ValueError) as error:
        print("refused:", error)
    else:
        print("returned")
""")


# Regression, found by fuzz_quant: an out-of-bounds read (SIGSEGV against a guard page); fixed in 5b34431.
# Was: dequantize_blockwise passes a hand-built QuantState's codebook to the kernels unchecked: with fewer
# than 256 values, code[q] is read out of bounds (against a guard page the process dies with SIGSEGV;
# elsewhere it returns garbage)
@pytest.mark.parametrize("backend", softmaxlib.backends())
def test_hand_built_state_short_code_is_refused(backend, tmp_path):
    script = GUARDED_DEQUANTIZE.format(backend=backend)
    # (run from tmp_path: `python -c` puts the working folder first on sys.path, and the checkout's
    # softmaxlib/ is not the installed package)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                         cwd=tmp_path, env={**os.environ, "PYTHONFAULTHANDLER": "0"})
    assert run.returncode == 0, f"the process died (exit {run.returncode}): {run.stderr[-500:]}"
    assert run.stdout.startswith("refused:"), run.stdout


# Regression, found by fuzz_quant: garbage on the C backends; fixed in 5b34431.
# Was: a hand-built QuantState with a float64 codebook is read as float32 bytes by the C dequantize kernels
# (garbage) and converted by the Numba one, so the backends disagree
@pytest.mark.skipif(not C_BACKENDS, reason="no C backend usable")
def test_hand_built_state_float64_code():
    code = np.linspace(-1, 1, 256)
    try:
        state = _state(code=code)
    except (TypeError, ValueError):
        return  # refusing the state when it is built would do too
    q = np.arange(32, dtype=np.uint8) * 8
    expected = code.astype(np.float32)[q]
    for backend in softmaxlib.backends():
        try:
            y = quant.dequantize_blockwise(q, state, backend=backend)
        except (TypeError, ValueError):
            continue  # a documented error would do
        np.testing.assert_array_equal(y, expected, err_msg=backend)

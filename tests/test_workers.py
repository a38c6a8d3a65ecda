"""The threading model (docs/threading.md): the pool's life cycle, fork, concurrent callers,
SOFTMAXLIB_NUM_THREADS, threadpoolctl, the `workers=` argument, and the promise that every
`workers` value gives the same bits, on shapes that share rows among threads and that split long
rows within (csrc/pool.h), against guard pages too.

What concerns a whole process (a fresh pool, fork, the environment variable, threadpoolctl at
import, a deadlock) runs in a subprocess (python -c) with a timeout, so that a hang fails a test
instead of the run. The subprocesses import the same softmaxlib as this process, from a neutral
working directory, with SOFTMAXLIB_BACKEND and SOFTMAXLIB_NUM_THREADS unset.
"""
import functools
import importlib.util
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import softmaxlib
from conftest import ROW_KERNELS, public_function
from softmaxlib import _dispatch, _threads, quant, stablemax, three_pass, two_pass
from zoo import guarded_areas, place

PACKAGE_ROOT = pathlib.Path(softmaxlib.__file__).resolve().parent.parent
C_BACKENDS = [name for name in softmaxlib.backends() if name != "numba"]
CORES = _threads.available_cores()
needs_c = pytest.mark.skipif(_dispatch.lib is None or not C_BACKENDS,
                             reason="the C kernels (and their pool) are not here")
WORKERS = (1, 2, 3, 7)
TIMEOUT = 120  # seconds for a subprocess: generous, a deadlock is what it catches

# ------------------------------------------------------------------ helpers


def _environment(**variables):
    env = {key: value for key, value in os.environ.items()
           if key not in (_threads.ENV_VAR, _dispatch.ENV_VAR)}
    env["PYTHONPATH"] = os.pathsep.join([str(PACKAGE_ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    env.update(variables)
    return env


def _start(code, tmp_path, **variables):
    """`python -c code` started in tmp_path (not waited for)."""
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], cwd=tmp_path, env=_environment(**variables),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(process, what, timeout=TIMEOUT):
    """(returncode, stdout, stderr) of a started subprocess; fails the test if it outlives timeout."""
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
        pytest.fail(f"{what}: no end after {timeout} s (a deadlock?)\nstdout: {stdout}\nstderr: {stderr}")
    return process.returncode, stdout, stderr


def _python(code, tmp_path, what, **variables):
    """The JSON the subprocess printed on its last line, after checking that it exited with 0."""
    returncode, stdout, stderr = _finish(_start(code, tmp_path, **variables), what)
    assert returncode == 0, f"{what}: exit status {returncode}\nstdout: {stdout}\nstderr: {stderr}"
    return json.loads(stdout.strip().splitlines()[-1])


def _assert_same_bits(result, expected, context):
    """result and expected hold the same bits: arrays (dtype, shape and bytes, NaN payloads included),
    scalars, tuples of them and QuantStates."""
    if isinstance(expected, tuple):
        assert isinstance(result, tuple) and len(result) == len(expected), context
        for index, (a, b) in enumerate(zip(result, expected)):
            _assert_same_bits(a, b, f"{context}, item {index}")
        return
    if isinstance(expected, quant.QuantState):
        assert (result.blocksize, result.shape, result.dtype) == (expected.blocksize, expected.shape, expected.dtype)
        _assert_same_bits(result.absmax, expected.absmax, f"{context}, absmax")
        return
    a, b = np.asarray(result), np.asarray(expected)
    assert (a.dtype, a.shape) == (b.dtype, b.shape), f"{context}: {a.dtype}{a.shape} against {b.dtype}{b.shape}"
    if a.tobytes() != b.tobytes():
        unsigned = f"u{a.dtype.itemsize}"  # every dtype here: 1, 2, 4 or 8 bytes
        differ = np.flatnonzero(a.reshape(-1).view(unsigned) != b.reshape(-1).view(unsigned))
        first = differ[0]
        pytest.fail(f"{context}: {differ.size} of {a.size} values differ, the first at flat index {first}: "
                    f"{a.reshape(-1)[first]!r} against {b.reshape(-1)[first]!r}")


def _labels(x):
    shape = np.shape(x)
    return (np.arange(int(np.prod(shape[:-1])), dtype=np.int64) * 7919 % shape[-1]).reshape(shape[:-1])


# Every public function that takes `workers`, as call(x, **keywords) on float32 rows x.
PUBLIC = {
    "softmaxlib.softmax": softmaxlib.softmax,
    "softmaxlib.log_softmax": softmaxlib.log_softmax,
    "softmaxlib.logsumexp": softmaxlib.logsumexp,  # two_pass.logsumexp itself
    **{f"three_pass.{function}[{variant}]": functools.partial(getattr(three_pass, function), variant=variant)
       for function, variants in three_pass.VARIANTS.items() for variant in variants},
    "two_pass.softmax": two_pass.softmax,
    "two_pass.log_softmax": two_pass.log_softmax,
    "two_pass.sum_exp_pair": two_pass.sum_exp_pair,
    "stablemax.stablemax": stablemax.stablemax,
    "stablemax.log_stablemax": stablemax.log_stablemax,
    "stablemax.stablemax_cross_entropy": lambda x, **keywords: stablemax.stablemax_cross_entropy(
        x, _labels(x), reduction="none", return_grad=True, **keywords),
    "stablemax.stablemax_cross_entropy[mean]": lambda x, **keywords: stablemax.stablemax_cross_entropy(
        x, _labels(x), **keywords),
}
QUANT = {
    "quant.quantize_blockwise": lambda x, **keywords: quant.quantize_blockwise(x, nonfinite="propagate", **keywords),
    "quant.dequantize_blockwise": lambda x, **keywords: quant.dequantize_blockwise(
        *quant.quantize_blockwise(x, nonfinite="propagate", blocksize=256, workers=1), **keywords),
}

# ------------------------------------------------------------------ the shapes of the bit-identity tests

LONG = (1 << 20) + 13
FEW_LONG = (1 << 18) + 5


def _normal(rows, n, scale=4.0, seed=0):
    return (np.random.default_rng(seed).standard_normal((rows, n)) * scale).astype(np.float32)


def _nan_at_700000():
    x = _normal(1, LONG, seed=1)
    x[0, 700_000] = np.nan
    return x


def _inf_inside():
    x = _normal(1, LONG, seed=2)
    x[0, [3, 700_000]] = np.inf
    return x


def _neginf_inside():
    x = _normal(1, LONG, seed=3)
    x[0, ::7] = -np.inf
    x[0, 16384 * 5:16384 * 9] = -np.inf  # whole chunks of -inf (chunks are multiples of 8192: csrc/pool.h)
    return x


def _huge(shape, seed):
    return np.random.default_rng(seed).uniform(-3.4e38, 3.4e38, shape).astype(np.float32)


def _special_rows():
    x = _normal(4, FEW_LONG, scale=30, seed=4)
    x[0, 200_000] = np.nan
    x[1, 150_000] = np.inf
    x[1, 16384] = -np.inf  # the first element of a chunk (as above)
    x[2, :] = -np.inf
    x[3, :] = _huge(FEW_LONG, seed=5)
    return x


# name -> (function making the float32 input, whether it is in the default run): many short rows
# (shared among threads whole), one or few long rows (split within, csrc/pool.h's row_chunk, when
# there are fewer than 4 per thread), and long rows with NaN, inf, -inf and huge values inside,
# away from the chunk boundaries and on them. workers=1 runs all in the calling thread; 2, 3 and
# 7 share rows, or the chunks of a row, among threads in other partitions (given as many cores).
INPUT_MAKERS = {
    "64x4096": (lambda: _normal(64, 4096, seed=6), True),
    "300x1000": (lambda: _normal(300, 1000, seed=7), False),
    "1x(2^20+13)": (lambda: _normal(1, LONG, seed=8), False),
    "3x(2^18+5)": (lambda: _normal(3, FEW_LONG, seed=9), True),
    "NaN at 700000": (_nan_at_700000, True),
    "+inf at 3 and 700000": (_inf_inside, False),
    "-inf in every 7th and 4 chunks": (_neginf_inside, False),
    "huge values": (lambda: _huge((1, LONG), seed=10), False),
    "4 long rows: NaN, +inf and -inf, all -inf, huge": (_special_rows, True),
}
SHAPES = [pytest.param(name, marks=[] if default_run else [pytest.mark.slow])
          for name, (_, default_run) in INPUT_MAKERS.items()]


@functools.cache
def _input(name):
    x = INPUT_MAKERS[name][0]()
    x.flags.writeable = False  # shared by the tests
    return x


# The default backend through the fast path (backend=None), and every C backend by name through the
# general path; in the default run, not the default backend by name too.
C_PATHS = ["default"] + [pytest.param(name, marks=[pytest.mark.slow] if name == _dispatch.DEFAULT_BACKEND else [])
                         for name in C_BACKENDS]


def _backend_keyword(path):
    return {} if path == "default" else {"backend": path}


# ------------------------------------------------------------------ bit-identical for every workers


@needs_c
@pytest.mark.parametrize("path", C_PATHS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", list(PUBLIC))
def test_every_workers_value_gives_the_same_bits(name, shape, path):
    function, x = PUBLIC[name], _input(shape)
    keywords = _backend_keyword(path)
    with np.errstate(all="ignore"):
        expected = function(x, workers=1, **keywords)
        for workers in WORKERS[1:]:
            _assert_same_bits(function(x, workers=workers, **keywords), expected,
                              f"{name} on {shape}, {path}, workers={workers} against 1")


@pytest.mark.parametrize("name", list(PUBLIC) + list(QUANT))
def test_numba_takes_workers_and_ignores_it(name):
    function = {**PUBLIC, **QUANT}[name]
    x = _input("64x4096")[:8]
    expected = function(x, workers=1, backend="numba")
    for workers in (7, -1):
        _assert_same_bits(function(x, workers=workers, backend="numba"), expected,
                          f"{name} on numba, workers={workers}")


def _quant_input(with_nonfinite):
    n = (1 << 20) + 100
    x = (np.random.default_rng(7).standard_normal(n) * 3).astype(np.float32)
    x[::1001] *= 1000  # a few large values: absmax differs from block to block
    if with_nonfinite:
        x[[700_000, 300_001]] = [np.nan, np.inf]
    return x


@needs_c
@pytest.mark.parametrize("path", C_PATHS)
@pytest.mark.parametrize("blocksize", [256, 4096])
@pytest.mark.parametrize("with_nonfinite", [False, True], ids=["finite", "NaN and inf"])
def test_quantization_gives_the_same_bits_for_every_workers(with_nonfinite, blocksize, path):
    x = _quant_input(with_nonfinite)
    keywords = _backend_keyword(path)
    q, state = quant.quantize_blockwise(x, blocksize=blocksize, nonfinite="propagate", workers=1, **keywords)
    y = quant.dequantize_blockwise(q, state, workers=1, **keywords)
    for workers in WORKERS[1:]:
        context = f"n={x.size}, blocksize={blocksize}, {path}, workers={workers}"
        q_w, state_w = quant.quantize_blockwise(x, blocksize=blocksize, nonfinite="propagate", workers=workers,
                                                **keywords)
        _assert_same_bits((q_w, state_w), (q, state), f"quantize, {context}")
        _assert_same_bits(quant.dequantize_blockwise(q, state, workers=workers, **keywords), y,
                          f"dequantize, {context}")
    if not with_nonfinite:  # and "raise" finds no NaN where there is none, with threads too
        _assert_same_bits(quant.quantize_blockwise(x, blocksize=blocksize, workers=2, **keywords), (q, state),
                          f"nonfinite='raise', blocksize={blocksize}, {path}")


@needs_c
@pytest.mark.parametrize("path", C_PATHS)
def test_quantize_raises_on_a_nan_found_by_any_thread(path):
    """nonfinite="raise" with the NaN in the last block, the one the last thread quantizes."""
    x = _quant_input(with_nonfinite=False)
    x[-5] = np.nan
    for workers in WORKERS:
        with pytest.raises(ValueError):
            quant.quantize_blockwise(x, blocksize=256, workers=workers, **_backend_keyword(path))


@needs_c
@pytest.mark.parametrize("path", C_PATHS)
def test_in_place_with_threads(path):
    """out=x with a long row split within, and many rows: the same bits as out of place."""
    keywords = _backend_keyword(path)
    for shape in ("NaN at 700000", "4 long rows: NaN, +inf and -inf, all -inf, huge", "64x4096"):
        for name in ("softmaxlib.softmax", "two_pass.log_softmax", "three_pass.softmax[recompute]",
                     "stablemax.stablemax"):
            function = PUBLIC[name]
            with np.errstate(all="ignore"):
                expected = function(_input(shape), workers=1, **keywords)
                x = _input(shape).copy()
                assert function(x, out=x, workers=2, **keywords) is x
            _assert_same_bits(x, expected, f"{name} in place on {shape}, {path}, workers=2")


def _start_the_pool():
    """A fresh pool, its workers created now, under the calling thread's MXCSR (a new thread starts
    with its creator's floating-point environment)."""
    _dispatch.lib.sml_pool_shutdown()
    two_pass.softmax(_input("3x(2^18+5)"), workers=-1)


@needs_c
@pytest.mark.subnormal
@pytest.mark.parametrize("pool_started", ["before FTZ/DAZ", "under FTZ/DAZ"])
@pytest.mark.parametrize("path", C_PATHS)
def test_threads_compute_under_the_callers_ftz_and_daz(path, pool_started):
    """The pool's threads compute under the calling thread's MXCSR, not the one they inherited
    from the thread that created them: with flush-to-zero and denormals-are-zero set in the caller
    (as torch.set_flush_denormal(True) leaves it) or not, workers=2 gives the bits of workers=1,
    whichever way the pool was started. Quantization shows it: under DAZ a block of subnormal
    values has absmax 0, else a subnormal absmax; and code * absmax is subnormal, or 0 under FTZ."""
    from fpenv import flush_denormals

    keywords = _backend_keyword(path)
    x = _quant_input(with_nonfinite=False)
    x[:x.size // 2] *= np.float32(1e-39)  # the first half of the blocks: subnormal values
    q, state = quant.quantize_blockwise(x, blocksize=256, workers=1)  # without FTZ/DAZ: subnormal absmax
    rows = _input("3x(2^18+5)").copy()
    rows[0] *= np.float32(1e-39)
    if pool_started == "before FTZ/DAZ":
        _start_the_pool()
    else:
        with flush_denormals():
            _start_the_pool()
    try:
        for ftz_daz in (True, False):
            with flush_denormals(ftz=ftz_daz, daz=ftz_daz):
                for workers in WORKERS[1:]:
                    context = f"{path}, FTZ and DAZ {'set' if ftz_daz else 'clear'}, pool started {pool_started}, " \
                              f"workers={workers}"
                    _assert_same_bits(quant.quantize_blockwise(x, blocksize=256, workers=workers, **keywords),
                                      quant.quantize_blockwise(x, blocksize=256, workers=1, **keywords),
                                      f"quantize, {context}")
                    _assert_same_bits(quant.dequantize_blockwise(q, state, workers=workers, **keywords),
                                      quant.dequantize_blockwise(q, state, workers=1, **keywords),
                                      f"dequantize, {context}")
                    for name in ("softmaxlib.log_softmax", "stablemax.stablemax"):
                        _assert_same_bits(PUBLIC[name](rows, workers=workers, **keywords),
                                          PUBLIC[name](rows, workers=1, **keywords), f"{name}, {context}")
    finally:
        _start_the_pool()  # the other tests' pool, under this thread's usual MXCSR


# ------------------------------------------------------------------ the workers argument


BAD_WORKERS = [(0, ValueError), (-2, ValueError), (1.5, TypeError), (2.0, TypeError), (True, TypeError),
               ("2", TypeError)]


def _argument_cases(name):
    """(what, call(**keywords)): the fast path, the general path (a list), the Numba backend,
    float64 (its Numba kernels), and an empty input."""
    function = {**PUBLIC, **QUANT}[name]
    x = np.random.default_rng(3).standard_normal((4, 300)).astype(np.float32)
    cases = [("fast path", lambda **k: function(x, **k)), ("a list", lambda **k: function(x.tolist(), **k)),
             ("numba", lambda **k: function(x, backend="numba", **k)),
             ("float64", lambda **k: function(x.astype(np.float64), **k))]
    if not name.startswith("quant."):
        cases.append(("empty rows", lambda **k: function(np.zeros((0, 5), np.float32), **k)))
    return cases


@pytest.mark.parametrize("name", list(PUBLIC) + list(QUANT))
def test_bad_workers_raise_naming_workers(name):
    for what, call in _argument_cases(name):
        for workers, error in BAD_WORKERS:
            try:
                call(workers=workers)
            except error as raised:
                assert "workers" in str(raised), (what, workers, str(raised))
            else:
                pytest.fail(f"{name}, {what}: workers={workers!r} accepted")


@pytest.mark.parametrize("name", list(PUBLIC) + list(QUANT))
def test_workers_takes_numpy_integers(name):
    for what, call in _argument_cases(name)[:1]:
        _assert_same_bits(call(workers=np.int64(2)), call(workers=2), f"{name}, {what}, np.int64(2)")
        _assert_same_bits(call(workers=np.uint8(1)), call(workers=1), f"{name}, {what}, np.uint8(1)")


def test_set_num_threads():
    previous = softmaxlib.get_num_threads()
    try:
        softmaxlib.set_num_threads(3)
        assert softmaxlib.get_num_threads() == 3
        softmaxlib.set_num_threads(np.int32(2))
        assert softmaxlib.get_num_threads() == 2 and type(softmaxlib.get_num_threads()) is int
        softmaxlib.set_num_threads(-1)
        assert softmaxlib.get_num_threads() == CORES
        for bad, error in [(0, ValueError), (-2, ValueError), (1.5, TypeError), (True, TypeError), ("2", TypeError),
                           (None, TypeError)]:
            with pytest.raises(error):
                softmaxlib.set_num_threads(bad)
            assert softmaxlib.get_num_threads() == CORES  # unchanged by a refused value
    finally:
        softmaxlib.set_num_threads(previous)


@pytest.mark.parametrize("value, expected", [("3", 3), ("1", 1), ("-1", CORES), ("", CORES), (" 2 ", 2)])
def test_environment_values(monkeypatch, value, expected):
    monkeypatch.setenv(_threads.ENV_VAR, value)
    assert _threads._from_environment() == expected


@pytest.mark.parametrize("value", ["0", "-2", "abc", "1.5", "true", "2 threads"])
def test_bad_environment_values(monkeypatch, value):
    monkeypatch.setenv(_threads.ENV_VAR, value)
    with pytest.raises(ImportError, match=_threads.ENV_VAR):
        _threads._from_environment()


# ------------------------------------------------------------------ a process: the environment variable


IMPORT_CODE = """
    import json, os, sys
    sys.modules["threadpoolctl"] = None  # `import threadpoolctl` raises ImportError, as if not installed
    errors = {}
    for value in ("0", "abc"):  # a failed import leaves softmaxlib out of sys.modules: the next one runs again
        os.environ["SOFTMAXLIB_NUM_THREADS"] = value
        try:
            import softmaxlib
        except ImportError as error:
            errors[value] = str(error)
        else:
            errors[value] = "imported"
            break
    os.environ["SOFTMAXLIB_NUM_THREADS"] = "3"
    import numpy as np
    import softmaxlib
    y = softmaxlib.softmax(np.zeros((64, 4096), np.float32), workers=2)
    print(json.dumps({"errors": errors, "threads": softmaxlib.get_num_threads(), "sum": float(y.sum()),
                      "threadpoolctl": sys.modules["threadpoolctl"] is not None}))
"""


def test_import_with_the_environment_variable_and_without_threadpoolctl(tmp_path):
    """SOFTMAXLIB_NUM_THREADS sets the default (-1 is in test_pool_life_cycle); "0" and "abc" fail
    the import with a message naming the variable and the value. softmaxlib needs no threadpoolctl."""
    answer = _python(IMPORT_CODE, tmp_path, "the import")
    for value, message in answer["errors"].items():
        assert _threads.ENV_VAR in message and repr(value) in message, (value, message)
    assert answer == {"errors": answer["errors"], "threads": 3, "sum": 64.0, "threadpoolctl": False}
    assert list(answer["errors"]) == ["0", "abc"]


# ------------------------------------------------------------------ a process: the pool's life cycle


LIFE_CYCLE_CODE = """
    import atexit, json
    at_exit = {}


    def report():  # registered before softmaxlib's handler, so run after it (atexit is last in, first out)
        print(json.dumps({"pool at exit": softmaxlib._dispatch.lib.sml_pool_size(), **at_exit}))


    atexit.register(report)
    import numpy as np
    import softmaxlib
    from softmaxlib import _dispatch, _threads

    lib = _dispatch.lib
    sizes = at_exit["sizes"] = {"fresh": lib.sml_pool_size()}
    at_exit["cores"] = [lib.sml_available_cores(), _threads.available_cores(), softmaxlib.get_num_threads()]
    x = np.random.default_rng(0).standard_normal((64, 4096)).astype(np.float32)
    reference = softmaxlib.softmax(x, workers=1).tobytes()
    sizes["after workers=1"] = lib.sml_pool_size()
    softmaxlib.softmax(x[:1, :1000], workers=-1)  # small work: a few thousand elements
    softmaxlib.two_pass.logsumexp(x[:4, :1000], workers=-1)
    sizes["after small work"] = lib.sml_pool_size()
    softmaxlib.set_num_threads(1)
    softmaxlib.softmax(x)
    softmaxlib.quant.quantize_blockwise(x)
    sizes["after default 1"] = lib.sml_pool_size()
    softmaxlib.set_num_threads(-1)
    same = [softmaxlib.softmax(x).tobytes() == reference]
    sizes["after a large call"] = lib.sml_pool_size()
    lib.sml_pool_shutdown()
    sizes["after shutdown"] = lib.sml_pool_size()
    lib.sml_pool_shutdown()
    sizes["after a second shutdown"] = lib.sml_pool_size()
    same.append(softmaxlib.softmax(x, workers=-1).tobytes() == reference)
    sizes["after a call"] = lib.sml_pool_size()
    at_exit["same"] = same
    print("{}")
"""


@needs_c
def test_pool_life_cycle(tmp_path):
    """Created by the first call that wants threads, with a worker per core but the caller's;
    not by a one-thread call or small work; gone after sml_pool_shutdown (twice is fine) and back
    with the next call; shut down at exit (softmaxlib's atexit handler). SOFTMAXLIB_NUM_THREADS=-1
    is every core."""
    returncode, stdout, stderr = _finish(_start(LIFE_CYCLE_CODE, tmp_path, SOFTMAXLIB_NUM_THREADS="-1"),
                                         "the life cycle")
    assert returncode == 0, stderr
    answer = json.loads(stdout.strip().splitlines()[-1])
    sizes = answer["sizes"]
    assert answer["cores"] == [CORES, CORES, CORES], "sml_available_cores, available_cores, SOFTMAXLIB_NUM_THREADS=-1"
    workers = CORES - 1
    assert sizes == {"fresh": 0, "after workers=1": 0, "after small work": 0, "after default 1": 0,
                     "after a large call": workers, "after shutdown": 0, "after a second shutdown": 0,
                     "after a call": workers}, answer
    assert answer["same"] == [True, True], answer
    assert answer["pool at exit"] == 0, answer


ONE_CORE_CODE = """
    import json, os
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # before the import: one core
    import numpy as np
    import softmaxlib
    from softmaxlib import _dispatch, _threads

    x = np.random.default_rng(0).standard_normal((3, (1 << 18) + 5)).astype(np.float32)
    reference = softmaxlib.two_pass.softmax(x, workers=1).tobytes()
    same = [softmaxlib.two_pass.softmax(x, workers=workers).tobytes() == reference for workers in (-1, None, 4)]
    print(json.dumps({"cores": [_dispatch.lib.sml_available_cores(), _threads.available_cores()],
                      "default": softmaxlib.get_num_threads(), "pool": _dispatch.lib.sml_pool_size(), "same": same}))
"""


@needs_c
@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs os.sched_setaffinity (Linux)")
def test_one_available_core(tmp_path):
    """A process allowed one core: every core is 1, the pool has no worker, and workers=4 still
    computes (in the calling thread) the same bits."""
    answer = _python(ONE_CORE_CODE, tmp_path, "one core")
    assert answer == {"cores": [1, 1], "default": 1, "pool": 0, "same": [True, True, True]}


# ------------------------------------------------------------------ a process: fork


FORK_CODE = """
    import json, multiprocessing, os, threading, time, traceback, warnings
    warnings.simplefilter("ignore", DeprecationWarning)  # Python >= 3.12: fork() with threads running
    import numpy as np
    import softmaxlib
    from softmaxlib import _dispatch

    lib = _dispatch.lib
    x = (np.random.default_rng(1).standard_normal((1, (1 << 20) + 13)) * 10).astype(np.float32)
    reference = softmaxlib.softmax(x, workers=1).tobytes()
    assert softmaxlib.softmax(x, workers=-1).tobytes() == reference
    parent_pool = lib.sml_pool_size()


    def child():
        # 0: right; 3: the pool came through the fork; 4: a wrong result; 5: no pool after the call
        try:
            if lib.sml_pool_size() != 0:
                return 3
            if softmaxlib.softmax(x, workers=-1).tobytes() != reference:
                return 4
            return 0 if lib.sml_pool_size() == parent_pool else 5
        except BaseException:
            traceback.print_exc()
            return 6


    def fork_and_wait(timeout=20):
        pid = os.fork()
        if pid == 0:
            os._exit(child())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return os.waitstatus_to_exitcode(status)
            time.sleep(0.002)
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        return "no end: a deadlock"


    statuses = {"idle pool": fork_and_wait()}
    # fork while another thread keeps the pool busy: the child must not inherit a lock held
    stop = threading.Event()


    def keep_busy():
        while not stop.is_set():
            softmaxlib.softmax(x, workers=-1)


    busy = threading.Thread(target=keep_busy, daemon=True)
    busy.start()
    busy_statuses = set()
    for _ in range(12):
        busy_statuses.add(str(fork_and_wait()))
        if busy_statuses != {"0"}:
            break
    statuses["busy pool"] = sorted(busy_statuses)
    stop.set()
    busy.join(60)
    answer = {"parent pool": parent_pool, "statuses": statuses, "busy thread ended": not busy.is_alive(),
              "parent after": softmaxlib.softmax(x, workers=-1).tobytes() == reference}


    # multiprocessing with the fork start method
    few = (np.random.default_rng(2).standard_normal((3, (1 << 18) + 5)) * 10).astype(np.float32)
    few_reference = softmaxlib.log_softmax(few, workers=1).tobytes()


    def work(seed):
        before = lib.sml_pool_size()
        same = softmaxlib.log_softmax(few, workers=-1).tobytes() == few_reference
        return before, same, lib.sml_pool_size()


    # maxtasksperchild=1: every task in a child forked for it by the pool's handler thread, while
    # this thread keeps the parent's pool busy
    with multiprocessing.get_context("fork").Pool(2, maxtasksperchild=1) as pool:
        pending = pool.map_async(work, range(4), chunksize=1)
        deadline = time.monotonic() + 40
        while not pending.ready() and time.monotonic() < deadline:
            softmaxlib.log_softmax(few, workers=-1)
        try:
            answer["multiprocessing"] = sorted(set(pending.get(timeout=1)))
        except multiprocessing.TimeoutError:
            answer["multiprocessing"] = "no end: a deadlock"
    print(json.dumps(answer))
"""


@needs_c
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork(tmp_path):
    """A child forked from a process whose pool runs (idle, or busy with another thread's call)
    starts with no pool, computes right, starts its own pool, and exits; the parent goes on. The
    same with multiprocessing's "fork" start method."""
    answer = _python(FORK_CODE, tmp_path, "fork")
    assert answer == {"parent pool": CORES - 1, "statuses": {"idle pool": 0, "busy pool": ["0"]},
                      "busy thread ended": True, "parent after": True,
                      "multiprocessing": [[0, True, CORES - 1]]}


# ------------------------------------------------------------------ a process: concurrent callers


CONCURRENT_CODE = """
    import json, os, threading, time
    import numpy as np
    import softmaxlib
    from softmaxlib import quant, stablemax, three_pass, two_pass

    rng = np.random.default_rng(3)
    long_row = (rng.standard_normal((1, (1 << 20) + 13)) * 8).astype(np.float32)
    few = (rng.standard_normal((3, (1 << 18) + 5)) * 8).astype(np.float32)
    many = (rng.standard_normal((64, 4096)) * 8).astype(np.float32)
    labels = np.arange(64) * 37 % 4096
    q, state = quant.quantize_blockwise(long_row, blocksize=256, workers=1)
    calls = [
        lambda w: softmaxlib.softmax(many, workers=w),
        lambda w: softmaxlib.log_softmax(long_row, workers=w),
        lambda w: softmaxlib.softmax(few, backend=softmaxlib.backends()[-2], workers=w),  # the last C backend
        lambda w: two_pass.logsumexp(long_row, workers=w),
        lambda w: np.concatenate(two_pass.sum_exp_pair(few, workers=w)),
        lambda w: three_pass.softmax(few, variant="recompute", workers=w),
        lambda w: stablemax.log_stablemax(long_row, workers=w),
        lambda w: stablemax.stablemax_cross_entropy(many, labels, reduction="none", workers=w),
        lambda w: quant.quantize_blockwise(long_row, blocksize=4096, workers=w)[0],
        lambda w: quant.dequantize_blockwise(q, state, workers=w),
    ]
    serial = [np.asarray(call(1)).tobytes() for call in calls]
    choices = (None, -1, 1, 2, 3, 7)
    threads_count, rounds = 8, 3
    start = threading.Barrier(threads_count)
    wrong = []


    def run(index):
        start.wait()
        for round in range(rounds):
            for step in range(len(calls)):
                which = (index + step) % len(calls)
                workers = choices[(index + step + round) % len(choices)]
                try:
                    if np.asarray(calls[which](workers)).tobytes() != serial[which]:
                        wrong.append([which, workers, "a wrong result"])
                except Exception as error:
                    wrong.append([which, workers, repr(error)])


    threads = [threading.Thread(target=run, args=(index,), daemon=True) for index in range(threads_count)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 90
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    if any(thread.is_alive() for thread in threads):
        print(json.dumps({"deadlock": True}), flush=True)
        os._exit(0)  # not through atexit: its pool shutdown would wait for the stuck callers
    print(json.dumps({"deadlock": False, "wrong": sorted(map(list, {tuple(w) for w in wrong}))}))
"""


@needs_c
def test_concurrent_callers(tmp_path):
    """8 Python threads call large kernels at once with various workers (cffi releases the GIL):
    a caller that finds the pool busy runs its call alone, so none waits forever, and every
    result is the serial one."""
    answer = _python(CONCURRENT_CODE, tmp_path, "concurrent callers")
    assert answer == {"deadlock": False, "wrong": []}


# ------------------------------------------------------------------ a process: threadpoolctl


THREADPOOLCTL_CODE = """
    import json, os, sys
    {first_import}
    from softmaxlib import _dispatch
    import threadpoolctl
    import numpy as np

    softmaxlib.set_num_threads(3)
    found = [info for info in threadpoolctl.threadpool_info() if info["user_api"] == "softmaxlib"]
    x = np.random.default_rng(0).standard_normal((64, 4096)).astype(np.float32)
    inside = {{}}
    with threadpoolctl.threadpool_limits(1):
        inside["all"] = softmaxlib.get_num_threads()
        softmaxlib.softmax(x)  # one thread: no pool
        inside["pool"] = _dispatch.lib.sml_pool_size()
    after = softmaxlib.get_num_threads()
    with threadpoolctl.threadpool_limits(limits=2, user_api="softmaxlib"):
        inside["softmaxlib only"] = softmaxlib.get_num_threads()
    with threadpoolctl.ThreadpoolController().limit(limits={{"softmaxlib": 1}}):
        inside["controller"] = softmaxlib.get_num_threads()
    print(json.dumps({{"found": found, "inside": inside, "after": after, "after all": softmaxlib.get_num_threads(),
                      "file": os.path.realpath(_dispatch._kernels.__file__)}}))
"""


@needs_c
@pytest.mark.skipif(importlib.util.find_spec("threadpoolctl") is None, reason="threadpoolctl is not installed")
def test_threadpoolctl(tmp_path):
    """threadpool_info() lists softmaxlib, and threadpool_limits() sets its default and restores
    it, whether threadpoolctl is imported before softmaxlib or after it."""
    orders = {"threadpoolctl first": "import threadpoolctl, softmaxlib", "softmaxlib first": "import softmaxlib"}
    processes = {order: _start(THREADPOOLCTL_CODE.format(first_import=textwrap.indent(line, " " * 4).lstrip()),
                               tmp_path) for order, line in orders.items()}
    for order, process in processes.items():
        returncode, stdout, stderr = _finish(process, order)
        assert returncode == 0, f"{order}: {stderr}"
        answer = json.loads(stdout.strip().splitlines()[-1])
        assert len(answer["found"]) == 1, (order, answer)
        info = answer["found"][0]
        assert (info["internal_api"], info["num_threads"], info["version"], info["filepath"]) == \
               ("softmaxlib", 3, softmaxlib.__version__, answer["file"]), (order, info)
        assert answer["inside"] == {"all": 1, "pool": 0, "softmaxlib only": 2, "controller": 1}, (order, answer)
        assert answer["after"] == answer["after all"] == 3, (order, answer)


# ------------------------------------------------------------------ guard pages, with threads

# Shapes split among two threads: long rows within (one row, and three rows: fewer than 4 per
# thread), and many rows whole, long and short.
GUARDED_SHAPES = [(1, (1 << 18) + 5), (3, 70_001), (64, 4097), (2000, 37)]
GUARDED_FLOATS = max(rows * n for rows, n in GUARDED_SHAPES)
CANARY = np.float32(-12345.5)
PLACEMENTS = [("end", "end"), ("start", "start"), ("end", "start"), ("start", "end")]


@pytest.fixture(scope="module")
def large_buffers():
    """Two guarded float32 areas of GUARDED_FLOATS floats (zoo.guarded_areas: PROT_NONE pages
    right before and after)."""
    return guarded_areas(2, floats=GUARDED_FLOATS)


def _outside_untouched(area, array, context):
    start = (array.ctypes.data - area.ctypes.data) // area.itemsize
    count = array.nbytes // area.itemsize
    assert (area[:start] == CANARY).all() and (area[start + count:] == CANARY).all(), \
        f"a kernel wrote outside its rows: {context}"


def _guarded_values(shape):
    rng = np.random.default_rng(sum(shape))
    x = (rng.standard_normal(shape) * 4).astype(np.float32)
    x[0, shape[1] // 2] = np.inf  # the limit path of a row whose max is +inf, on the first row
    return x


@needs_c
@pytest.mark.parametrize("path", C_PATHS)
@pytest.mark.parametrize("row_kernel", ROW_KERNELS)
def test_threads_stay_within_rows(large_buffers, row_kernel, path):
    """With workers=2, out of place and in place, x and y against PROT_NONE pages: any access
    past either end faults (SIGSEGV fails the run), and nothing else in the areas changes."""
    x_area, y_area = large_buffers
    function, _ = public_function(row_kernel)
    keywords = _backend_keyword(path)
    for shape in GUARDED_SHAPES:
        values = _guarded_values(shape)
        reference = function(values, workers=1, **keywords)
        for x_where, y_where in PLACEMENTS:
            context = f"{row_kernel}, {path}, {shape}, x at {x_where}, y at {y_where}"
            x_area[...] = CANARY
            y_area[...] = CANARY
            x, y = place(x_area, shape, x_where), place(y_area, shape, y_where)
            x[...] = values
            assert function(x, out=y, workers=2, **keywords) is y
            _assert_same_bits(y, reference, context)
            _assert_same_bits(x, values, f"x changed: {context}")
            _outside_untouched(x_area, x, context)
            _outside_untouched(y_area, y, context)
        for where in ("end", "start"):
            context = f"{row_kernel}, {path}, {shape}, in place at {where}"
            x_area[...] = CANARY
            x = place(x_area, shape, where)
            x[...] = values
            assert function(x, out=x, workers=2, **keywords) is x
            _assert_same_bits(x, reference, context)
            _outside_untouched(x_area, x, context)


def _place_bytes(area, shape, dtype, where):
    """A C-contiguous array of `shape` and `dtype` in the float32 `area`, against one of its guard pages."""
    raw = area.view(np.uint8)
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    flat = raw[raw.size - size:] if where == "end" else raw[:size]
    return flat.view(dtype).reshape(shape)


@needs_c
@pytest.mark.parametrize("path", C_PATHS)
def test_threads_of_reductions_and_quantization_stay_within_their_arrays(large_buffers, path):
    """sum_exp_pair, logsumexp and the cross-entropy read guarded rows; quantize reads a guarded x
    and writes guarded codes and absmax; dequantize reads guarded codes and writes a guarded out."""
    x_area, y_area = large_buffers
    keywords = _backend_keyword(path)
    for shape in GUARDED_SHAPES:
        values = _guarded_values(shape)
        labels = _labels(values)
        reductions = {"sum_exp_pair": lambda x, **k: two_pass.sum_exp_pair(x, **k),
                      "logsumexp": lambda x, **k: two_pass.logsumexp(x, **k),
                      "cross-entropy": lambda x, **k: stablemax.stablemax_cross_entropy(
                          x, labels, reduction="none", return_grad=True, **k)}
        for name, reduction in reductions.items():
            reference = reduction(values, workers=1, **keywords)
            for where in ("end", "start"):
                x_area[...] = CANARY
                x = place(x_area, shape, where)
                x[...] = values
                context = f"{name}, {path}, {shape}, x at {where}"
                _assert_same_bits(reduction(x, workers=2, **keywords), reference, context)
                _outside_untouched(x_area, x, context)
    values = _quant_input(with_nonfinite=False)[:GUARDED_FLOATS - 1000]  # not a whole number of blocks
    for blocksize in (256, 4096):
        q_reference, state = quant.quantize_blockwise(values, blocksize=blocksize, workers=1, **keywords)
        y_reference = quant.dequantize_blockwise(q_reference, state, workers=1, **keywords)
        for x_where, q_where in PLACEMENTS:
            context = f"quantize, {path}, blocksize {blocksize}, x at {x_where}, q at {q_where}, absmax opposite"
            x_area[...] = CANARY
            y_area[...] = CANARY
            x = _place_bytes(x_area, values.shape, np.float32, x_where)
            x[...] = values
            q = _place_bytes(y_area, values.shape, np.uint8, q_where)
            absmax = _place_bytes(y_area, state.absmax.shape, np.float32, "start" if q_where == "end" else "end")
            q_result, state_result = quant.quantize_blockwise(x, blocksize=blocksize, out=q, absmax_out=absmax,
                                                              workers=2, **keywords)
            assert q_result is q
            _assert_same_bits((q, state_result), (q_reference, state), context)
            _assert_same_bits(absmax, state.absmax, context)
            _assert_same_bits(x, values, f"x changed: {context}")
            _outside_untouched(x_area, x, context)
            _only_changed(y_area, (q, absmax), context)
            context = f"dequantize, {path}, blocksize {blocksize}, q at {q_where}, out at {x_where}"
            x_area[...] = CANARY
            out = _place_bytes(x_area, values.shape, np.float32, x_where)
            assert quant.dequantize_blockwise(q, state, out=out, workers=2, **keywords) is out
            _assert_same_bits(out, y_reference, context)
            _outside_untouched(x_area, out, context)
            _assert_same_bits(q, q_reference, f"q changed: {context}")
            _only_changed(y_area, (q, absmax), f"{context}: q's area")


def _only_changed(area, arrays, context):
    """Every byte of the canary-filled `area` outside `arrays` still holds the canary."""
    expected = np.full(area.shape, CANARY).view(np.uint8)
    raw = area.view(np.uint8)
    for array in arrays:
        start = array.ctypes.data - area.ctypes.data
        expected[start:start + array.nbytes] = raw[start:start + array.nbytes]
    assert raw.tobytes() == expected.tobytes(), f"a kernel wrote outside its arrays: {context}"

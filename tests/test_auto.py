"""The auto path, softmaxlib.softmax / log_softmax / logsumexp: it routes each call to the
catalog kernel of softmaxlib/_auto.py's table, gives exactly that operation's result, and
meets the accuracy bound of issue 3 on both sides of the crossover; and where the crossover lies
(issue 12, item 4): the model from the probe's numbers (injected here: a VM reporting a 300 MiB L3
it cannot use, a real L3, a compute-bound two-pass, two threads), the cache file, the probe run
lazily and once, `softmaxlib tune`, and runtime_info(). (The operations themselves go through the
whole zoo in test_agreement.py and the other generic suites.)"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import oracle
import softmaxlib
from oracle import EPS32, LOG_SOFTMAX_EPS, assert_softmax_close, softmax_reference
from softmaxlib import _api, _auto, _bindings, _catalog, _dispatch, _tune, three_pass, two_pass
from softmaxlib import __main__ as softmaxlib_main
from zoo import DISTRIBUTIONS, make_rows

AUTO_SOFTMAX_MAX_ULP = 4  # issue 3's bound; both choices measure <= 2.7 (docs/accuracy.md)
FUNCTIONS = {"softmax": softmaxlib.softmax, "log_softmax": softmaxlib.log_softmax}
SMALL_CACHE = 4 << 10  # a pretend last-level cache, so that rows of 1000 are beyond the crossover
MiB = 1 << 20
C_BACKENDS = [b for b in ("avx512", "avx2") if b in _dispatch.USABLE_BACKENDS]
requires_c = pytest.mark.skipif(not C_BACKENDS, reason="the C kernels are not built or not usable")

# The kernels' ns per element in L2, one thread, as the probe measured them on Zen 4 (AVX-512)
ZEN4_HOT = {"softmax_reload_exact": 0.31, "softmax_two_pass": 0.49, "log_softmax_reload": 0.26,
            "log_softmax_two_pass": 0.31}


def memory(rates, main_memory, threads=1, first=1 * MiB):
    """A Memory as the probe returns it: rates in GB/s of buffers of first, 2 first, 4 first, ..."""
    return _tune.Memory(threads, tuple(first << i for i in range(len(rates))), tuple(rates), main_memory, 1.0)


# Zen 4 (this project's VM, L3 32 MiB, real), one and two threads, as probed
ZEN4 = memory([82, 93, 96, 96, 88, 47, 40], 38)
ZEN4_TWO_THREADS = memory([179, 170, 188, 190, 171, 91, 70], 74, threads=2)
# An Intel Xeon VM that reports its host's 300 MiB L3: its own L2 (2 MiB) is fast, beyond that its
# reads run little faster than main memory (a 64 MiB stream at its speed)
XEON_VM = memory([70, 70, 28, 26, 24, 22, 21], 20)


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Every test with its own cache folder (never the user's), no cache size set by hand, and
    nothing resolved yet in this process; forgotten again after it."""
    monkeypatch.setenv(_tune.CACHE_DIR_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(_auto.CACHE_BYTES_ENV, raising=False)
    _auto.forget()
    yield tmp_path / "cache"
    _auto.forget()


@pytest.fixture
def fake_probe(monkeypatch):
    """The probe replaced by the numbers of `machine` (Zen 4 by default); `calls` records each
    probe, as _tune.PROBES does."""
    class Fake:
        machine = {1: ZEN4, 2: ZEN4_TWO_THREADS}
        hot = ZEN4_HOT
        calls = []

    def probe_memory(threads):
        Fake.calls.append(("memory", threads))
        found = Fake.machine[threads]
        return _tune.Memory(threads, found.sizes, found.read_gb_s, found.memory_gb_s, found.milliseconds)

    def probe_kernels(backend, kernel_ids):
        Fake.calls.append(("kernels", backend))
        return {kernel: Fake.hot[kernel] for kernel in kernel_ids}

    monkeypatch.setattr(_tune, "probe_memory", probe_memory)
    monkeypatch.setattr(_tune, "probe_kernels", probe_kernels)
    monkeypatch.setattr(_auto, "available_cores", lambda: 2)
    return Fake


@pytest.fixture
def no_probe(monkeypatch):
    def refuse(*args):
        raise AssertionError(f"the probe ran: {args}")

    monkeypatch.setattr(_tune, "probe_memory", refuse)
    monkeypatch.setattr(_tune, "probe_kernels", refuse)


def public(operation):
    spec = _catalog.by_signature("rows")[operation]
    function = getattr(three_pass if spec.family == "three_pass" else two_pass, spec.function)
    return function if spec.variant is None else (lambda x, **kw: function(x, variant=spec.variant, **kw))


@pytest.fixture(params=["in cache", "beyond"])
def side(request, monkeypatch):
    """Runs the test with rows of n = 1000 in cache, or beyond the crossover (a pretend cache,
    as tests/test_layout_zoo.py sets one)."""
    if request.param == "beyond":
        monkeypatch.setattr(_dispatch, "LAST_LEVEL_CACHE_BYTES", SMALL_CACHE)
    return request.param


def test_table_covers_every_backend_with_catalog_kernels():
    for function in FUNCTIONS:
        for backend in _bindings.BACKENDS:
            in_cache, beyond, fraction = _auto.CHOICES[function, backend]
            for name in (in_cache, beyond):
                assert name is None or _catalog.by_signature("rows")[name].function == function
            assert (beyond is None) == (fraction is None)
    # softmax may only choose algorithms that never round x - max (the 4 ULP bound)
    assert {c[0] for f, b in _auto.CHOICES for c in [_auto.CHOICES[f, b]] if f == "softmax"} == {"softmax_reload_exact"}


@pytest.mark.parametrize("function", FUNCTIONS)
def test_a_cache_size_set_by_hand_replaces_the_probe(function, backend, monkeypatch, no_probe):
    """SOFTMAXLIB_AUTO_CACHE_BYTES: the crossover is the table's fraction of it, for any thread
    count and with no probe; "reported" takes the OS's size."""
    in_cache, beyond, fraction = _auto.CHOICES[function, backend]
    monkeypatch.setenv(_auto.CACHE_BYTES_ENV, str(32 * MiB))
    assert _auto.kernel_id(function, backend, 1000) == in_cache
    last_in_cache = int(32 * MiB * (fraction or 1) // 8)
    for threads in (1, 2, 8):
        assert _auto.kernel_id(function, backend, last_in_cache, threads=threads) == in_cache
        assert _auto.kernel_id(function, backend, last_in_cache + 1, threads=threads) == (beyond or in_cache)
    if beyond:
        assert _auto.crossover(function, backend) == (last_in_cache, _auto.CACHE_BYTES_ENV)
        assert _auto.choice(function, backend) == (in_cache, beyond, last_in_cache)  # a fixed int, as before
        monkeypatch.setenv(_auto.CACHE_BYTES_ENV, "reported")
        assert _auto.crossover(function, backend)[0] == int(fraction * _dispatch.REPORTED_LAST_LEVEL_CACHE_BYTES) // 8
        monkeypatch.setenv(_auto.CACHE_BYTES_ENV, "lots")
        with pytest.raises(ValueError, match=_auto.CACHE_BYTES_ENV):
            _auto.kernel_id(function, backend, 1 << 20)


@pytest.mark.parametrize("function", FUNCTIONS)
def test_routes_to_the_chosen_operation_and_matches_it_bitwise(function, backend, side, monkeypatch, rng):
    calls = []
    original = _bindings.bound
    monkeypatch.setattr(_bindings, "bound", lambda *args: calls.append(args[0]) or original(*args))
    x = rng.standard_normal((3, 1000)).astype(np.float32) * np.float32(10)
    x[1, 7] = -np.inf
    y = FUNCTIONS[function](x, backend=backend)
    in_cache, beyond, _ = _auto.CHOICES[function, backend]
    expected = beyond or in_cache if side == "beyond" else in_cache
    assert calls == [expected]
    np.testing.assert_array_equal(y, public(expected)(x, backend=backend))
    # axis, out= and other dtypes go through the same argument handling as every public function
    out = np.empty_like(x.T)
    assert FUNCTIONS[function](x.T, axis=0, out=out, backend=backend) is out
    np.testing.assert_array_equal(out, y.T)
    np.testing.assert_array_equal(FUNCTIONS[function](x.astype(np.float16), backend=backend),
                                  public(expected)(x.astype(np.float16), backend=backend))
    np.testing.assert_allclose(FUNCTIONS[function](x.astype(np.float64), backend=backend),
                               softmax_reference(x, log_output=function == "log_softmax"), rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
def test_softmax_meets_the_bound_on_both_sides(distribution, backend, side):
    x = make_rows(distribution, 1000)
    softmax, log_softmax = oracle.softmax(x), oracle.log_softmax(x)
    assert_softmax_close(softmaxlib.softmax(x, backend=backend), softmax, max_ulp=AUTO_SOFTMAX_MAX_ULP)
    error = np.abs(softmaxlib.log_softmax(x, backend=backend) - log_softmax) / np.maximum(1.0, np.abs(log_softmax))
    assert np.max(error) <= LOG_SOFTMAX_EPS * EPS32


def test_special_rows(backend, side):
    x = np.array([[1.0, np.inf, 2.0, np.inf], [1.0, np.nan, 0.0, 0.0], [-np.inf] * 4, [3e38, -3e38, 1.0, 3e38]],
                 np.float32)
    y = softmaxlib.softmax(x, backend=backend)
    np.testing.assert_array_equal(y[0], [0, 0.5, 0, 0.5])
    assert np.isnan(y[1]).all() and np.isnan(y[2]).all()
    np.testing.assert_array_equal(y[3], [0.5, 0, 0, 0.5])


def test_logsumexp_is_the_one_pass_reduction():
    assert softmaxlib.logsumexp is two_pass.logsumexp


# --- the model, with injected numbers -----------------------------------------------------------

def crossover(memory_of, hot=ZEN4_HOT, function="softmax"):
    in_cache, beyond, _ = _auto.CHOICES[function, "avx512"]
    return _tune.modeled_crossover(in_cache, beyond, hot, memory_of, _auto.SHORT_ROW)


def test_a_vm_reporting_its_hosts_llc_switches_where_its_reads_slow_down():
    """Reported 300 MiB, fast reads up to 2 MiB only: two-pass from about 2 MiB of x and y, not from
    0.8 x 300 MiB (the rule of the reported size: 31 M elements, 1.1-1.2x slower)."""
    reported_rule = int(0.8 * (300 * MiB)) // 8
    assert XEON_VM.effective_cache == 2 * MiB
    for function in FUNCTIONS:
        assert _auto.SHORT_ROW <= crossover(XEON_VM, function=function) <= (4 * MiB) // 8 < reported_rule // 50


def test_a_real_llc_keeps_the_three_pass_kernel_through_it():
    """Zen 4: reads fast up to 16 MiB, half way at 32 MiB (the L3), main memory at 64 MiB. Its
    two-pass is compute bound (0.49 ns per element against reload_exact's 0.31), so softmax
    switches only where reload_exact's 20 bytes per element at the read rate for 8n bytes take
    longer: 5.4 M elements (8n = 41 MiB); log-softmax, whose two-pass costs less, from 2.7 M."""
    assert ZEN4.effective_cache == 16 * MiB
    softmax, log_softmax = crossover(ZEN4), crossover(ZEN4, function="log_softmax")
    assert 4 << 20 <= softmax <= 8 << 20 and 2 << 20 <= log_softmax < softmax
    # the model's times at the crossover, and one step (2^(1/8)) beyond it
    for n, faster in ((softmax, "softmax_reload_exact"), (int(softmax * 1.1), "softmax_two_pass")):
        times = {kernel: _tune.model_ns(kernel, n, ZEN4_HOT[kernel], ZEN4)
                 for kernel in ("softmax_reload_exact", "softmax_two_pass")}
        assert min(times, key=times.get) == faster


def test_a_compute_bound_two_pass_never_wins():
    """AVX2-like: two-pass at 0.8 ns per element in cache, more than reload_exact takes from
    main memory (20 bytes at 38 GB/s: 0.53 ns): no crossover."""
    assert crossover(ZEN4, hot={"softmax_reload_exact": 0.33, "softmax_two_pass": 0.8}) is None


def test_two_pass_faster_everywhere_switches_at_the_short_row():
    fast_two_pass = {"softmax_reload_exact": 0.31, "softmax_two_pass": 0.2}
    assert crossover(ZEN4, hot=fast_two_pass) == _auto.SHORT_ROW


def test_the_thread_count_enters_the_decision():
    """Two threads halve the compute, have two L2s and twice the cache bandwidth, but main memory
    does not double: the model's crossover moves with the probe of two threads, and a batch of
    rows given whole to each thread has `threads` rows in flight."""
    one, two = crossover(ZEN4), crossover(ZEN4_TWO_THREADS)
    assert one != two
    two_with_one_thread_memory = crossover(memory(ZEN4.read_gb_s, ZEN4.memory_gb_s, threads=2))
    assert two_with_one_thread_memory < one  # compute halved, memory not: two-pass wins sooner
    assert _auto.elements_in_flight(1000, 1, 2) == 1000  # a row split among the threads
    assert _auto.elements_in_flight(1000, 3, 1) == 1000
    assert _auto.elements_in_flight(1000, 7, 2) == 1000  # fewer than 4 rows per thread: each split
    assert _auto.elements_in_flight(1000, 8, 2) == 2000  # whole rows to each thread


def test_rates_between_and_beyond_the_probed_sizes():
    probe = memory([90, 45], 30)  # 1 and 2 MiB
    assert probe.rate(512 << 10) == 90 and probe.rate(1 * MiB) == 90 and probe.rate(2 * MiB) == 45
    assert probe.rate(int(2 ** 0.5 * MiB)) == pytest.approx(1 / (0.5 / 90 + 0.5 / 45))  # time per byte, log2 size
    assert probe.rate(4 * MiB) == 30 and probe.rate(1 << 40) == 30  # main memory from twice the largest size
    assert memory([90], 95).rate(1 << 40) == 90  # never faster than the largest size read
    assert _tune.last_in_cache([1, 2, 3, 4], [1, 1, 1, 1], [2, 0, 2, 0]) == 3  # never faster again after 3
    assert _tune.last_in_cache([1, 2, 3], [1, 1, 1], [0, 0, 0]) == 1
    assert _tune.last_in_cache([1, 2, 3], [1, 1, 1], [0, 0, 2]) is None
    assert _tune.smoothed([1, 1, 9, 1, 1]) == [1, 1, 1, 1, 1]


# --- the probe: when it runs, and the cache file -------------------------------------------------

def test_the_probe_runs_once_per_process_and_the_file_keeps_it(fake_probe, isolated):
    first = {f: _auto.crossover(f, "avx512", 1) for f in FUNCTIONS}
    for n in (1 << 18, 1 << 22, 1 << 26):
        for function in FUNCTIONS:
            _auto.kernel_id(function, "avx512", n)
    assert fake_probe.calls == [("kernels", "avx512"), ("memory", 1)] == _tune.PROBES
    assert {f: source for f, (_, source) in first.items()} == {"softmax": "probe", "log_softmax": "probe"}
    _auto.crossover("softmax", "avx512", 2)
    assert fake_probe.calls[2:] == [("memory", 2)]  # another thread count: its own memory probe
    [path] = isolated.iterdir()
    document = json.loads(path.read_text())
    assert document["key"] == _tune.machine_key() and document["key"]["version"] == softmaxlib.__version__
    assert set(document["memory"]) == {"1", "2"} and set(document["kernels"]["avx512"]) == set(ZEN4_HOT)
    # a new process (forget) reads the file and probes nothing
    _auto.forget()
    fake_probe.calls.clear()
    assert {f: _auto.crossover(f, "avx512", 1) for f in FUNCTIONS} == first
    assert fake_probe.calls == [] and _tune.PROBES == []


def test_the_cache_file_of_another_machine_or_version_is_not_used(fake_probe, isolated):
    _auto.crossover("softmax", "avx512", 1)
    [path] = isolated.iterdir()
    document = json.loads(path.read_text())
    document["key"]["cpu"] = "another CPU"
    path.write_text(json.dumps(document))
    _auto.forget()
    _auto.crossover("softmax", "avx512", 1)
    assert fake_probe.calls[-2:] == [("kernels", "avx512"), ("memory", 1)]
    path.write_text("{not json")  # a damaged file is probed over and rewritten
    _auto.forget()
    _auto.crossover("softmax", "avx512", 1)
    assert json.loads(path.read_text())["key"] == _tune.machine_key()


def test_the_cache_file_location(monkeypatch, tmp_path):
    monkeypatch.delenv(_tune.CACHE_DIR_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert _tune.cache_folder() == str(tmp_path / "xdg" / "softmaxlib")
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")  # invalid for the XDG spec: ignored
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert _tune.cache_folder() == str(tmp_path / "home" / ".cache" / "softmaxlib")
    monkeypatch.setenv(_tune.CACHE_DIR_ENV, "off")
    assert _tune.cache_folder() is None and _tune.cache_path(_tune.machine_key()) is None


def test_a_disabled_cache_writes_nothing(fake_probe, monkeypatch, tmp_path):
    monkeypatch.setenv(_tune.CACHE_DIR_ENV, "off")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    _auto.crossover("softmax", "avx512", 1)
    _auto.crossover("log_softmax", "avx512", 1)
    assert fake_probe.calls == [("kernels", "avx512"), ("memory", 1)]  # still once per process
    assert list(tmp_path.iterdir()) == []


def test_an_unwritable_cache_folder_only_costs_a_probe_per_process(fake_probe, monkeypatch, tmp_path):
    blocker = tmp_path / "a file"
    blocker.write_text("")
    monkeypatch.setenv(_tune.CACHE_DIR_ENV, str(blocker / "cache"))  # cannot be created
    assert _auto.crossover("softmax", "avx512", 1)[1] == "probe"
    assert "save_error" in _tune._load()


def test_no_probe_for_short_rows(no_probe, rng):
    """Rows of up to SHORT_ROW elements run the in-cache kernel with no probe, on the fast path
    and the general path."""
    for function, public_function in FUNCTIONS.items():
        for shape in ((4, 1000), (1, _auto.SHORT_ROW)):
            x = rng.standard_normal(shape).astype(np.float32)
            public_function(x)
            for backend in _dispatch.USABLE_BACKENDS:
                public_function(x, backend=backend)
                assert _auto.kernel_id(function, backend, shape[1], shape[0], 2) == _auto.CHOICES[function, backend][0]
    assert _tune.PROBES == []


def test_import_runs_no_probe_and_reads_no_file():
    """`import softmaxlib` (a measured target) imports neither the probe's module nor reads its file."""
    code = "import sys, softmaxlib; print('softmaxlib._tune' in sys.modules)"
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                               env={**os.environ, _tune.CACHE_DIR_ENV: "/nonexistent/never-read"})
    assert completed.stdout.strip() == "False"


def test_a_failing_probe_falls_back_to_the_reported_size(monkeypatch):
    def fail(*args):
        raise MemoryError("no 128 MiB for the probe")

    monkeypatch.setattr(_tune, "probe_memory", fail)
    monkeypatch.setattr(_tune, "probe_kernels", lambda backend, ids: dict.fromkeys(ids, 1.0))
    elements, source = _auto.crossover("softmax", "avx512", 1)
    assert elements == int(0.8 * _dispatch.REPORTED_LAST_LEVEL_CACHE_BYTES) // 8
    assert source.startswith("reported LLC") and "128 MiB" in source


@requires_c
def test_the_fast_path_resolves_the_crossover_on_the_first_long_row(fake_probe, rng):
    """With the probe's crossover at SHORT_ROW (two-pass faster everywhere), a row one element
    longer runs two-pass, through a fast path bound before anything was probed."""
    fake_probe.hot = {**ZEN4_HOT, "softmax_two_pass": 0.1}
    fast = _api.fast_path(lambda backend: _auto.choice("softmax", backend))
    assert fake_probe.calls == []
    short = rng.standard_normal((1, _auto.SHORT_ROW)).astype(np.float32)
    np.testing.assert_array_equal(fast(short, -1, None, None), three_pass.softmax(short, variant="reload_exact"))
    assert fake_probe.calls == []
    long = rng.standard_normal((1, _auto.SHORT_ROW + 1)).astype(np.float32)
    np.testing.assert_array_equal(fast(long, -1, None, None), two_pass.softmax(long))
    assert ("memory", 1) in fake_probe.calls or ("memory", 2) in fake_probe.calls


# --- tune, runtime_info ----------------------------------------------------------------------

def test_a_tuned_crossover_overrides_the_model(fake_probe, isolated):
    modeled, _ = _auto.crossover("softmax", "avx512", 1)
    _tune.store_tuned("avx512", "softmax", 1, {"elements": 3 << 20, "model": modeled})
    _auto.forget()
    assert _auto.crossover("softmax", "avx512", 1) == (3 << 20, "tune")
    assert _auto.crossover("log_softmax", "avx512", 1)[1] == "probe"
    _tune.store_tuned("avx512", "softmax", 1, {"elements": None})  # measured: never
    _auto.forget()
    assert _auto.crossover("softmax", "avx512", 1) == (None, "tune")
    assert _auto.kernel_id("softmax", "avx512", 1 << 26) == "softmax_reload_exact"


@requires_c
def test_tune_measures_and_keeps_the_crossover(monkeypatch, isolated, capsys):
    """`softmaxlib tune` on a small range (the real one runs to 2^26): both kernels timed cold,
    the crossover kept in the cache file, where it overrides the model."""
    backend = C_BACKENDS[0]
    function = next(f for (f, b), entry in _auto.CHOICES.items() if b == backend and entry[1])
    monkeypatch.setattr(_auto, "modeled", lambda *args: None)
    monkeypatch.setattr(_tune, "TUNE_FROM", 1 << 10)
    monkeypatch.setattr(_tune, "TUNE_TO", 1 << 11)
    assert softmaxlib_main.main(["tune", "--threads", "1", "--backends", backend, "--functions", function,
                                 "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert f"{function} on {backend}, 1 thread" in out and "measured:" in out
    [path] = isolated.iterdir()
    entry = json.loads(path.read_text())["tuned"][backend][function]["1"]
    assert entry["sizes"] == [1 << 10, round(2 ** 10.25), round(2 ** 10.5), round(2 ** 10.75), 1 << 11]
    assert len(entry["in_cache_ns"]) == len(entry["beyond_ns"]) == 5
    assert _auto.crossover(function, backend, 1) == (entry["elements"], "tune")
    assert softmaxlib_main.main(["tune", "--reset"]) == 0 and list(isolated.iterdir()) == []


def test_tune_refuses_bad_arguments(capsys):
    for argv in (["--threads", "0"], ["--backends", "numba"], ["--functions", "logsumexp"], ["--repeats", "0"]):
        with pytest.raises(SystemExit) as exit_:
            softmaxlib_main.main(["tune", *argv])
        assert exit_.value.code == 2
    assert "usage: softmaxlib tune" in capsys.readouterr().err


def test_runtime_info_shows_what_the_auto_path_decided_and_why(fake_probe, monkeypatch, capsys):
    monkeypatch.setattr(_dispatch, "DEFAULT_BACKEND", "avx512")
    info = softmaxlib.runtime_info()
    auto = info["auto"]
    threads = sorted({1, softmaxlib.get_num_threads()})
    assert auto["cache_set_by_hand"] is None
    assert auto["reported_last_level_cache"] == _dispatch.REPORTED_LAST_LEVEL_CACHE_BYTES
    assert set(auto["crossovers"]) == {"softmax", "log_softmax"}
    for function, by_threads in auto["crossovers"].items():
        assert list(by_threads) == threads
        assert all(entry["source"] == "probe" and entry["elements"] > _auto.SHORT_ROW for entry in by_threads.values())
    assert auto["memory"][1]["effective_cache"] == 16 * MiB and auto["memory"][1]["memory_gb_s"] == 38
    assert auto["cache_file"].startswith(os.environ[_tune.CACHE_DIR_ENV])
    assert auto["hot_ns_per_element"] == ZEN4_HOT
    runs = info["functions"]["softmaxlib.softmax"]["float32"]
    default_threads = softmaxlib.get_num_threads()
    assert runs["crossover_elements"] == auto["crossovers"]["softmax"][default_threads]["elements"]
    assert runs["crossover_source"] == "probe" and runs["beyond"] == "softmax_two_pass"
    softmaxlib.show_runtime()
    out = capsys.readouterr().out
    assert "crossovers from this machine: its probe, or tune" in out and "effective cache 16 MiB" in out
    monkeypatch.setenv(_auto.CACHE_BYTES_ENV, str(32 * MiB))
    auto = softmaxlib.runtime_info()["auto"]
    assert auto["cache_set_by_hand"] == {"bytes": 32 * MiB, "by": _auto.CACHE_BYTES_ENV}
    assert auto["crossovers"]["softmax"][1] == {"elements": int(0.8 * 32 * MiB) // 8, "source": _auto.CACHE_BYTES_ENV}


@requires_c
def test_the_real_probe_is_short_and_sane():
    """The probes themselves, on this machine: doubling sizes, positive rates, main memory's rate
    below the cache's; each kernel's time in L2. (Times vary with the load: no bound on them.)"""
    probe = _tune.probe_memory(1)
    assert probe.sizes[0] == _tune.FIRST_BYTES and probe.sizes[-1] <= _tune.PROBE_MAX_BYTES
    assert all(b == 2 * a for a, b in zip(probe.sizes, probe.sizes[1:]))
    assert min(probe.read_gb_s) > 0 and probe.memory_gb_s > 0
    assert probe.milliseconds < 2000
    hot = _tune.probe_kernels(C_BACKENDS[0], ["softmax_reload_exact", "softmax_two_pass"])
    assert all(0 < ns < 100 for ns in hot.values())


def test_the_models_passes_add_up_to_the_catalogs_traffic():
    for (function, backend), (in_cache, beyond, _) in _auto.CHOICES.items():
        for kernel in (in_cache, beyond) if beyond else ():
            assert sum(nbytes for nbytes, _ in _tune.PASSES[kernel]) == _catalog.KERNELS[kernel].traffic
            assert any(has_exp for _, has_exp in _tune.PASSES[kernel])

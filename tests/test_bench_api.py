"""The benchmark API (softmaxlib.bench): its cases, shapes and consistency of its results, never speed."""
import math
from dataclasses import replace
from functools import partial

import numpy as np
import pytest

import softmaxlib
from softmaxlib import _auto, _catalog, _dispatch, bench


def positive_finite(value):
    return math.isfinite(value) and value > 0


def test_bandwidth_small_buffer():
    bw = bench.bandwidth(1 << 20, repeats=3)
    assert bw.nbytes == 1 << 20
    assert positive_finite(bw.read_gb_s) and positive_finite(bw.read_write_gb_s)
    assert ("C probe" in bw.source) == (_dispatch.lib is not None)
    assert bw.t_read(bw.read_gb_s * 1000) == pytest.approx(1000)
    assert bw.t_read_write(bw.read_write_gb_s * 1000) == pytest.approx(1000)


def test_bandwidth_numpy_fallback(monkeypatch):
    monkeypatch.setattr(_dispatch, "lib", None)
    bw = bench.bandwidth(4096 + 7, repeats=2)  # rounded down to whole 64-bit words
    assert bw.nbytes == 4096
    assert "NumPy" in bw.source
    assert positive_finite(bw.read_gb_s) and positive_finite(bw.read_write_gb_s)


def test_bandwidth_rejects_tiny_buffer():
    with pytest.raises(ValueError):
        bench.bandwidth(7)


def test_time_callable_rotates_over_every_set():
    seen = []
    timing = bench.time_callable(seen.append, [("a",), ("b",), ("c",)], repeats=4, warmup=1,
                                 min_sample_ns=0)
    assert seen[:3] == ["a", "b", "c"]  # warm-up touches every set once
    assert seen[3:] == ["abc"[i % 3] for i in range(len(seen) - 3)]  # then calls go in turn
    assert 1 <= timing.samples <= 4 and timing.calls_per_sample >= 1
    assert len(seen) == 3 + 1 + timing.samples * timing.calls_per_sample  # + 1 calibration call
    assert 0 < timing.min_ns <= timing.median_ns


def test_time_callable_takes_many_calls_per_sample_of_short_calls():
    timing = bench.time_callable(len, [((),)], repeats=3)
    assert timing.calls_per_sample == bench.MAX_CALLS_PER_SAMPLE  # len(()) takes far less than 100 ns
    assert 0 < timing.median_ns < 10_000


def test_traffic_split_matches_catalog():
    for kernel in _catalog.KERNELS.values():
        read_only, read_write = bench.traffic_split(kernel.id)
        assert read_only >= 0 and read_write >= 0
        assert read_only + read_write == kernel.traffic


def test_cases_come_from_the_catalog():
    cases = bench.all_cases()
    kernels = [k for k in _catalog.KERNELS.values() if k.signature in bench.CATALOG_SIGNATURES]
    assert kernels and [c.name for c in bench.catalog_cases()] == [k.id for k in kernels]
    for kernel in kernels:
        case = cases[kernel.id]
        assert case.family == kernel.family and case.backends is None
        assert case.kernel_of("avx2", 1000) == kernel.id  # its traffic is the catalog's
        assert case.buffers == ("quant" if kernel.signature in ("quantize", "dequantize") else "rows")
        assert case.baseline is None or case.baseline in cases
    for function in ("softmax", "log_softmax"):
        for backend in _dispatch.USABLE_BACKENDS:
            for n in (1000, 1 << 26):
                expected = _auto.kernel_id(function, backend, n, threads=_auto.deciding_threads())
                assert cases[f"auto_{function}"].kernel_of(backend, n) == expected
                assert cases[f"auto_{function}_allocating"].kernel_of(backend, n) == expected
    peers = {name for name, case in cases.items() if case.backends}
    assert {"numpy_softmax", "numpy_stablemax_cross_entropy", "numpy_quantize_blockwise"} <= peers
    assert ({"scipy_softmax", "torch_softmax"} & peers) == set(bench.PEER_MODULES) - set(bench.missing_peers())


def check_result(result, baselines):
    """A Result's figures agree with each other and with its baseline (same n, input, buffers)."""
    case = bench.all_cases()[result.kernel]
    elements = result.rows * result.n
    if case.buffers == "rows":
        assert result.rows == bench.batch_rows(result.n) and result.blocksize is None
    else:
        assert result.rows == 1 and result.blocksize >= 16
    assert positive_finite(result.median_ns) and 0 < result.min_ns <= result.median_ns
    assert result.ns_per_element == pytest.approx(result.median_ns / elements)
    assert result.g_elements_per_s == pytest.approx(elements / result.median_ns)
    assert result.gb_per_s == pytest.approx(case.bytes_in_out * elements / result.median_ns)
    assert result.samples >= 1 and result.calls_per_sample >= 1
    if case.kernel_of is None:
        assert result.roofline_ns is None and result.roofline_fraction is None
    else:
        assert positive_finite(result.roofline_ns)
        if result.cache == "cold":
            assert result.roofline_fraction == pytest.approx(result.roofline_ns / result.median_ns)
        else:
            assert result.roofline_fraction is None  # meaningful out of cache only
    baseline = baselines.get((case.baseline, result.n, result.input, result.blocksize))
    if baseline is None:
        assert result.speedup_vs_numpy is None
    else:
        assert result.speedup_vs_numpy == pytest.approx(baseline.median_ns / result.median_ns)
    assert set(result.as_dict()) >= {"kernel", "backend", "n", "input", "ns_per_element", "gb_per_s"}


def baselines_of(results):
    return {(r.kernel, r.n, r.input, r.blocksize): r for r in results if r.family == "numpy"}


@pytest.fixture(scope="module")
def small_probe():
    return bench.bandwidth(1 << 20, repeats=2)


def test_run_tiny_sizes(small_probe):
    sizes = [7, 1000]
    names = [c.name for c in bench.catalog_cases() if c.buffers == "rows"] + ["auto_softmax", "numpy_softmax",
                                                                             "numpy_stablemax"]
    results = bench.run(names, sizes, repeats=2, bw=small_probe, max_seconds=0.05)
    expected = {(name, backend, n) for name in names if not name.startswith("numpy")
                for backend in softmaxlib.backends() for n in sizes}
    expected |= {(name, "numpy", n) for name in ("numpy_softmax", "numpy_stablemax") for n in sizes}
    assert sorted((r.kernel, r.backend, r.n) for r in results) == sorted(expected)
    for n in sizes:  # per size the baselines come first, so every x NumPy is known as it is printed
        of_size = [r.family for r in results if r.n == n]
        assert of_size[:2] == ["numpy", "numpy"] and "numpy" not in of_size[2:]
    baselines = baselines_of(results)
    for result in results:
        assert result.cache == "hot" and result.buffers == 1 and result.input == "normal"  # N(0, 1) by default
        check_result(result, baselines)
    assert all(r.speedup_vs_numpy for r in results if r.kernel in ("softmax_reload", "stablemax", "auto_softmax"))


def test_measured_cases_write_their_outputs():
    """A case's timed calls compute the right thing: rows that sum to 1 in every buffer set."""
    buffers = bench.make_buffers("rows", 1000)
    backend = softmaxlib.backends()[0]
    for name in ("softmax_reload", "log_softmax_two_pass", "stablemax", "auto_softmax"):
        for _, y in buffers.sets:
            y.fill(np.nan)
        result = bench.measure(bench.all_cases()[name], backend, buffers, repeats=1)
        assert result.kernel == name and result.roofline_ns is None  # no bandwidth given
        for _, y in buffers.sets:
            assert bench.sum_error(y, "log_" in name) < 1e-4


needs_c = pytest.mark.skipif(_dispatch.lib is None, reason="the C extension is not built")


@needs_c
@pytest.mark.parametrize("offset, length", [(0, 4096), (3, 1000), (63, 1), (1, 64 * 7 + 5), (5, 0)])
def test_flush_cache_lines(offset, length):
    """sml_flush_cache_lines takes any start and length (evicting lines changes no byte); and
    bench.flush takes arrays, an unaligned view included."""
    data = np.arange(8192, dtype=np.uint8)
    expected = data.copy()
    _dispatch.lib.sml_flush_cache_lines(_dispatch.ffi.from_buffer(data[offset:]), length)
    assert np.array_equal(data, expected)
    view = np.frombuffer(data.data, np.float32, count=100, offset=1)  # misaligned float32
    bench.flush([data, view, np.empty(0, np.float32)])
    assert np.array_equal(data, expected)


@needs_c
def test_time_flushed_times_calls_one_by_one():
    seen, buffer = [], np.ones(1 << 12, np.float32)
    timing = bench.time_flushed(seen.append, ("a",), [buffer], repeats=4, warmup=2)
    assert timing.samples == 4 and timing.calls_per_sample == 1
    assert seen == ["a"] * 6  # the warm-up calls, then one call per sample
    assert 0 < timing.min_ns <= timing.median_ns
    cut = bench.time_flushed(seen.append, ("a",), [buffer], repeats=50, max_seconds=0, min_repeats=3)
    assert cut.samples == 3  # out of time: never fewer than min_repeats


def test_hot_or_cold_by_size_alone(monkeypatch):
    """Cold means more than COLD_BYTES a call (in + out), whatever last-level cache is reported."""
    monkeypatch.setattr(_dispatch, "LAST_LEVEL_CACHE_BYTES", 300 << 20)  # a VM reporting its host's L3
    assert bench.is_hot(bench.COLD_BYTES) and not bench.is_hot(bench.COLD_BYTES + 1)
    assert bench.make_buffers("rows", 1 << 18).cache == "hot"  # 8 * 2^18 bytes: exactly 2 MiB
    assert bench.make_buffers("rows", (1 << 18) + 1).cache == "cold"
    assert bench.make_buffers("quant", 1 << 20).cache == "cold"  # 5 MiB
    assert bench.make_buffers("rows", 1 << 10).cache == "hot"
    assert bench.make_buffers("rows", 1 << 20, cold=False).cache == "hot"


@needs_c
def test_quick_like_run_has_cold_cases_with_roofline(monkeypatch, small_probe):
    """As `softmaxlib bench --quick` on a VM reporting a 300 MiB L3: a size above 2 MiB a call
    (4 MB of rows, 2.5 MB for quantization) is cold, flushed (one buffer set), and its catalog
    kernels show their roofline fraction."""
    monkeypatch.setattr(_dispatch, "LAST_LEVEL_CACHE_BYTES", 300 << 20)
    backend = softmaxlib.backends()[0]
    results = bench.run(["softmax_reload", "quantize_blockwise", "numpy_softmax"], [1 << 10, 500_000], [backend],
                        repeats=2, bw=small_probe, max_seconds=0.05)
    baselines = baselines_of(results)
    for result in results:
        check_result(result, baselines)
        assert result.cache == ("cold" if result.n == 500_000 else "hot") and result.buffers == 1
    cold = [r for r in results if r.cache == "cold" and r.family != "numpy"]
    assert {r.kernel for r in cold} == {"softmax_reload", "quantize_blockwise"}
    assert all(r.roofline_fraction is not None and r.samples == 2 and r.calls_per_sample == 1 for r in cold)


def test_run_cold_without_flush_rotates_buffers(monkeypatch, small_probe):
    """Without the C extension's flush, cold calls rotate over sets totalling ROTATION_BYTES."""
    monkeypatch.setattr(bench, "can_flush", lambda: False)
    monkeypatch.setattr(bench, "ROTATION_BYTES", 8 << 20)  # small for the test
    assert bench.cold_notes() and "rotate" in bench.cold_notes()[0]
    backend = softmaxlib.backends()[0]
    results = bench.run(["softmax_reload", "numpy_softmax"], [300_000], [backend], repeats=2, bw=small_probe,
                        max_seconds=0.05)
    assert [(r.kernel, r.backend) for r in results] == [("numpy_softmax", "numpy"), ("softmax_reload", backend)]
    baselines = baselines_of(results)
    for result in results:
        assert result.cache == "cold" and result.buffers >= 2
        assert result.buffers * 8 * result.rows * result.n >= 8 << 20
        check_result(result, baselines)
    assert results[1].roofline_fraction is not None


def test_run_without_cold_or_batching(small_probe):
    """The crossover suite's buffers: one row, the same set on every call, even above COLD_BYTES."""
    [result] = bench.run(["softmax_two_pass"], [300_000], [softmaxlib.backends()[0]], repeats=1, bw=small_probe,
                         batch=False, cold=False, max_seconds=0.05)
    assert (result.rows, result.buffers, result.cache) == (1, 1, "hot")


def test_run_rejects_unknown_names(small_probe):
    with pytest.raises(ValueError, match="unknown case 'softmax_sideways'"):
        bench.run(["softmax_sideways"], [10], bw=small_probe)
    with pytest.raises(ValueError, match="backend"):
        bench.run(["softmax_reload"], [10], backends=["sse9"], bw=small_probe)
    with pytest.raises(ValueError, match="unknown input 'gauss'"):
        bench.run(["softmax_reload"], [10], inputs=["normal", "gauss"], bw=small_probe)
    with pytest.raises(ValueError, match="no inputs"):
        bench.run(["softmax_reload"], [10], inputs=[], bw=small_probe)
    with pytest.raises(ValueError, match="unknown input"):
        bench.run(["quantize_blockwise"], [256], inputs="uniform", bw=small_probe)


@pytest.mark.parametrize("name, half_width", [("normal", None), ("uniform80", 80), ("uniform1000", 1000)])
def test_draw_inputs(name, half_width):
    assert name in bench.INPUTS
    x = bench.draw(name, (4, 5000), seed=3)
    assert x.dtype == np.float32 and x.shape == (4, 5000) and np.isfinite(x).all()
    assert np.array_equal(x, bench.draw(name, (4, 5000), seed=3))  # the seed decides
    assert not np.array_equal(x, bench.draw(name, (4, 5000), seed=4))
    sets = bench.make_inputs(1000, rows=3, distribution=name)
    assert np.array_equal(sets[0][0], bench.draw(name, (3, 1000)))  # seed 0 by default
    if half_width is None:  # the values the benchmarks always used
        assert np.array_equal(x, np.random.default_rng(3).standard_normal((4, 5000), dtype=np.float32))
        assert abs(float(x.mean())) < 0.05 and 0.95 < float(x.std()) < 1.05
    else:  # spans the range: a row's x - max reaches about -2 * half_width, so exp underflows
        assert np.abs(x).max() <= half_width
        assert x.min() < -0.99 * half_width and x.max() > 0.99 * half_width
        assert abs(float(x.mean())) < 0.02 * half_width


def test_run_on_every_input(small_probe):
    inputs = list(bench.INPUTS)
    backend = softmaxlib.backends()[0]
    names = ["softmax_reload", "softmax_two_pass", "stablemax", "numpy_softmax", "numpy_stablemax"]
    results = bench.run(names, [1000], [backend], inputs=inputs, repeats=2, bw=small_probe, max_seconds=0.05)
    assert sorted((r.kernel, r.input) for r in results) == sorted((name, d) for name in names for d in inputs)
    baselines = baselines_of(results)
    for result in results:
        check_result(result, baselines)  # speedup against the baseline on the same input
        assert result.as_dict()["input"] == result.input


def test_run_quant_on_an_input(small_probe):
    backend = softmaxlib.backends()[0]
    cases = [replace(bench.all_cases()[name], blocksize=256) for name in
             ("numpy_quantize_blockwise", "numpy_dequantize_blockwise", "quantize_blockwise", "dequantize_blockwise")]
    results = bench.run(cases, [1 << 12], [backend], inputs=["uniform1000"], repeats=2, bw=small_probe)
    assert [(r.kernel, r.backend) for r in results] == [
        ("numpy_quantize_blockwise", "numpy"), ("numpy_dequantize_blockwise", "numpy"),
        ("quantize_blockwise", backend), ("dequantize_blockwise", backend)]
    assert {(r.input, r.blocksize, r.rows) for r in results} == {("uniform1000", 256, 1)}
    baselines = baselines_of(results)
    for result in results:
        check_result(result, baselines)
    assert all(r.speedup_vs_numpy for r in results[2:])


def test_numpy_quantize_partial_block_matches_the_kernel():
    """The NumPy reference pads a last partial block with zeros: the codes stay the kernel's."""
    x = bench.draw("normal", 1000, seed=1)
    buffers = bench.make_buffers("quant", 1000, blocksize=256)
    _, expected_q, expected_absmax, _ = buffers.sets[0]
    q, state = softmaxlib.quant.quantize_blockwise(buffers.sets[0][0], blocksize=256)
    np.testing.assert_array_equal(q, expected_q)
    np.testing.assert_array_equal(state.absmax, expected_absmax)
    code = softmaxlib.quant.create_dynamic_map()
    np.testing.assert_array_equal(bench.numpy_dequantize(q, code, state.absmax, 256),
                                  softmaxlib.quant.dequantize_blockwise(q, state))
    assert bench.numpy_quantize(x, np.sort(code)[:-1], 4096)[0].shape == (1000,)


def test_latency_rows():
    rows = bench.latency([1, 16], repeats=1)
    calls = {(r.section, r.call) for r in rows}
    assert {r.n for r in rows} == {1, 16}
    for section, call in [("reference", "np.exp(x)"), ("reference", "np.exp(x, out=y)"), ("reference", "len(x)"),
                          ("public", "softmaxlib.softmax(x)"), ("public", "softmaxlib.softmax(x, out=y)"),
                          ("public", "softmaxlib.logsumexp(x)"), ("public", "three_pass.softmax[recompute](x, out=y)"),
                          ("public", "two_pass.sum_exp_pair(x)"), ("public", "stablemax.stablemax_cross_entropy(x, i)"),
                          ("public", "quant.quantize_blockwise(x)"), ("public", "quant.dequantize_blockwise(q, state)"),
                          ("general", "softmaxlib.softmax(x_f64)"), ("general", "softmaxlib.softmax(x_col, axis=0)"),
                          ("kernel", "softmax_reload_exact(x2, y2)")]:
        assert (section, call) in calls, call
    for n in (1, 16):
        ns = {(r.section, r.call): r for r in rows if r.n == n}
        exp = ns["reference", "np.exp(x)"].ns
        for (section, call), row in ns.items():
            assert math.isfinite(row.ns)
            if section in ("public", "general", "kernel"):
                assert row.ns > 0 and row.kernel in _catalog.KERNELS
                writes_into = "out=" in call or section == "kernel"
                reference = ns["reference", "np.exp(x, out=y)" if writes_into else "np.exp(x)"]
                assert row.over_np_exp == pytest.approx(row.ns / reference.ns)
            if section in ("public", "general"):
                assert ("overhead", call) in ns  # public - kernel
        assert ns["reference", "np.exp(x)"].over_np_exp == pytest.approx(1.0) and exp > 0
        torch_row = ns.get(("reference", "torch.softmax(t, -1)"))
        assert (torch_row is None) == ("torch_softmax" in bench.missing_peers())


# --- threads: the k-thread probe, worker counts, issue 12's table -----------------------------------

@pytest.mark.parametrize("threads", [2, 3])
def test_bandwidth_on_several_threads(threads):
    """The probe on k threads: each streams its own slice of one buffer at once; positive figures,
    its k, and how together the slices started."""
    bw = bench.bandwidth(1 << 20, repeats=2, threads=threads)
    assert bw.threads == threads and bw.nbytes == 1 << 20
    assert positive_finite(bw.read_gb_s) and positive_finite(bw.read_write_gb_s)
    assert bw.start_skew_ns >= 0 and bw.samples == 2
    assert ("C probe" in bw.source) == (_dispatch.lib is not None)
    assert bw.as_dict()["threads"] == threads
    one = bench.bandwidth(1 << 20, repeats=1)
    assert (one.threads, one.start_skew_ns) == (1, 0)


def test_bandwidth_threads_numpy_fallback_and_tiny_buffers(monkeypatch):
    bw = bench.bandwidth(64, repeats=1, threads=4)  # fewer 64-byte lines than threads: some stream nothing
    assert bw.threads == 4 and bw.nbytes == 64 and positive_finite(bw.read_gb_s)
    monkeypatch.setattr(_dispatch, "lib", None)
    bw = bench.bandwidth(4096 + 7, repeats=2, threads=2)
    assert bw.threads == 2 and bw.nbytes == 4096 and "NumPy" in bw.source
    assert positive_finite(bw.read_gb_s) and positive_finite(bw.read_write_gb_s)


@pytest.mark.parametrize("threads", [0, -1, 1.5, True, "2"])
def test_bandwidth_rejects_bad_thread_counts(threads):
    with pytest.raises(ValueError, match="threads must be a positive int"):
        bench.bandwidth(4096, threads=threads)


@pytest.mark.parametrize("count, parts", [(1 << 17, 2), (1 << 17, 3), (1000, 7), (5, 2), (8 * 7 + 3, 7)])
def test_probe_slices_cover_the_buffer_on_line_boundaries(count, parts):
    slices = bench._slices(count, parts)
    assert len(slices) == parts and slices[0][0] == 0 and slices[-1][1] == count
    assert all(end == start for (_, end), (start, _) in zip(slices, slices[1:]))  # contiguous, disjoint
    assert all(start % 8 == 0 and start <= end for start, end in slices)  # 64-byte boundaries


def test_time_parallel_runs_every_part_on_its_own_thread():
    import threading
    seen, before = [], threading.active_count()

    def part(index):
        seen.append((index, threading.current_thread().name))

    timing = bench.time_parallel([partial(part, index) for index in range(3)], [np.ones(1024)], repeats=4, warmup=2)
    assert timing.samples == 4 and timing.calls_per_sample == 1 and timing.start_skew_ns >= 0
    assert 0 < timing.min_ns <= timing.median_ns
    assert sorted(seen) == sorted((index, name) for index, name in seen)
    assert [sum(1 for i, _ in seen if i == index) for index in range(3)] == [6, 6, 6]  # warm-up + samples
    names = {index: {name for i, name in seen if i == index} for index in range(3)}
    assert names[0] == {threading.current_thread().name}  # the caller takes part 0
    assert len(names[1] | names[2]) == 2 and not (names[1] | names[2]) & names[0]
    assert threading.active_count() == before  # the helpers are joined


def test_time_parallel_raises_a_part_s_error_and_stops():
    import threading
    before = threading.active_count()

    def fails():
        raise RuntimeError("part failed")

    with pytest.raises(RuntimeError, match="part failed"):
        bench.time_parallel([lambda: None, fails], repeats=2)
    with pytest.raises(RuntimeError, match="part failed"):
        bench.time_parallel([fails, lambda: None], repeats=2)
    assert threading.active_count() == before
    with pytest.raises(ValueError):
        bench.time_parallel([])


def test_bandwidths_keep_the_probes_at_hand(small_probe):
    bws = bench.bandwidths([1, 2, 2], 1 << 16, repeats=1, measured=small_probe)
    assert list(bws) == [1, 2] and bws[1] is small_probe and bws[2].threads == 2
    assert bench.bandwidths([2], measured=[bws[2]]) == {2: bws[2]}
    assert bench.roofline_threads(1) == 1
    assert bench.roofline_threads(10 ** 6) == softmaxlib._threads.available_cores()


@pytest.mark.parametrize("workers, expected", [(1, [1]), ([2, 1, 2], [2, 1]), (-1, None)])
def test_worker_counts(workers, expected):
    assert bench.worker_counts(workers) == (expected or [softmaxlib._threads.available_cores()])


@pytest.mark.parametrize("workers, error", [(0, ValueError), ([1, -2], ValueError), ([], ValueError),
                                            (["2"], TypeError), (True, TypeError)])
def test_worker_counts_reject(workers, error):
    with pytest.raises(error):
        bench.worker_counts(workers)


def test_make_buffers_of_a_shape():
    buffers = bench.make_buffers("rows", 1 << 10, rows=64)
    assert (buffers.rows, buffers.n, buffers.elements, buffers.cache) == (64, 1 << 10, 1 << 16, "hot")
    assert bench.make_buffers("rows", 1 << 14, rows=64).cache == "cold"  # 8 MiB a call
    quant = bench.make_buffers("quant", 1000, rows=4, blocksize=256)
    assert (quant.rows, quant.n, quant.sets[0][0].shape) == (1, 4000, (4000,))
    with pytest.raises(ValueError):
        bench.make_buffers("rows", 10, rows=0)


@pytest.fixture(scope="module")
def probes(small_probe):
    return bench.bandwidths([1, 2], 1 << 20, repeats=2, measured=small_probe)


def test_run_on_several_worker_counts(probes):
    """run(workers=[1, 2]): the library's cases on each count (their outputs right on both), the
    NumPy baseline and the Numba twins once, on one; the roofline of k workers from the k-thread
    probe; shapes (rows, n) run as given."""
    backend = softmaxlib.backends()[0]
    names = ["numpy_softmax", "softmax_two_pass", "auto_softmax", "stablemax_cross_entropy"]
    results = bench.run(names, [1000, (3, 100_000)], [backend, "numba"], workers=[1, 2], repeats=1, bw=probes,
                        max_seconds=0.05)
    expected = []
    for n in (1000, 100_000):
        expected.append(("numpy_softmax", "numpy", n, 1))
        for name in names[1:]:
            expected += [(name, backend, n, 1), (name, backend, n, 2), (name, "numba", n, 1)]
    assert [(r.kernel, r.backend, r.n, r.workers) for r in results] == expected
    baselines = baselines_of(results)
    for result in results:
        if result.n == 1000:  # batched rows (the shape's 3 rows of 1e5 are checked below)
            check_result(result, baselines)
        assert result.as_dict()["workers"] == result.workers
        if result.cache == "cold" and result.roofline_ns is not None:
            kernel = bench.all_cases()[result.kernel].kernel_of(result.backend, result.n)
            bw = probes[bench.roofline_threads(result.workers)]
            assert result.roofline_ns == pytest.approx(bench.roofline_ns(kernel, result.rows * result.n, bw))
    assert {(r.rows, r.cache) for r in results if r.n == 100_000} == {(3, "cold")}


@pytest.mark.parametrize("workers", [1, 2])
def test_cases_on_workers_write_their_outputs(workers):
    buffers = bench.make_buffers("rows", 1 << 15, rows=4)
    backend = softmaxlib.backends()[0]
    for name in ("softmax_reload", "log_softmax_two_pass", "stablemax", "auto_softmax"):
        for _, y in buffers.sets:
            y.fill(np.nan)
        result = bench.measure(bench.all_cases()[name], backend, buffers, workers=workers, repeats=1)
        assert result.workers == workers
        assert bench.sum_error(buffers.sets[0][1], "log_" in name) < 1e-4


def test_torch_threads_are_restored(small_probe):
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        results = bench.run(["torch_softmax"], [256], workers=[2], repeats=1, bw=small_probe, max_seconds=0.01)
        assert [r.workers for r in results] == [2]
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_threads_suite_and_table(probes):
    """threads_suite on tiny shapes: every call on each worker count, torch (when installed) at
    its thread counts first per shape and input, quantization on the one-row shapes only; the
    table's lines and their ratios agree with the results."""
    shapes = [(4, 256), 1000]
    results, bws = bench.threads_suite(shapes, [1, 2], repeats=1, bw=probes, max_seconds=0.01)
    assert bws == probes
    torch_ran = "torch_softmax" not in bench.missing_peers()
    calls = [name for name in bench.threads_cases() if name != "torch.softmax"]
    assert calls == ["softmaxlib.softmax", "two_pass.softmax", "stablemax.stablemax", "quant.quantize_blockwise",
                     "quant.dequantize_blockwise"]
    lines = bench.threads_table(results)
    expected = [(call, rows, n, distribution) for rows, n in ((4, 256), (1, 1000)) for call in calls[:3]
                for distribution in (("normal", "uniform80") if call.endswith(".softmax") else ("normal",))]
    expected += [(call, 1, 1000, "normal") for call in calls[3:]]
    assert [(line.call, line.rows, line.n, line.input) for line in lines] == expected
    measured = {(r.kernel, r.rows, r.n, r.input, r.workers): r for r in results}
    torch_threads = bench.torch_thread_counts() if torch_ran else []
    for line in lines:
        assert sorted(line.ns_per_element) == [1, 2]
        assert line.speedup == {2: pytest.approx(line.ns_per_element[1] / line.ns_per_element[2])}
        assert line.ns_per_element[2] == measured[line.call, line.rows, line.n, line.input, 2].ns_per_element
        assert line.cache == "hot" and set(line.roofline_fraction.values()) == {None}
        assert all(positive_finite(value) for value in line.roofline_ns_per_element.values())
        assert set(line.kernels) == {1, 2} and set(line.kernels.values()) <= set(_catalog.KERNELS)
        assert line.default_workers == softmaxlib.get_num_threads()
        if torch_ran and line.call.endswith(".softmax"):
            assert sorted(line.torch_ns_per_element) == sorted(torch_threads)
            ours = line.ns_per_element.get(line.default_workers)
            assert line.vs_torch == (None if ours is None else
                                     pytest.approx(line.torch_ns_per_element[torch_threads[0]] / ours))
        else:
            assert line.torch_ns_per_element == {} and line.vs_torch is None
        assert line.as_dict()["call"] == line.call
    if torch_ran:  # torch's rows of a shape come before the calls that refer to them
        first_call = next(i for i, r in enumerate(results) if r.kernel != "torch.softmax")
        assert {r.kernel for r in results[:first_call]} == {"torch.softmax"}
    with pytest.raises(ValueError, match="unknown case 'softmax_reload' of the threads suite"):
        bench.threads_suite(shapes, names=["softmax_reload"], bw=probes)


def optim_peers_here():
    return [module for module in bench.OPTIM_PEERS if module not in bench.missing_optim_peers()]


def test_optim_cases():
    """Peers first (torch.optim's float32 steps of the rules asked for, bitsandbytes' 8-bit ones),
    then softmaxlib.optim's steps per optimizer and backend, with the traffic of their catalog
    kernel (torch's: each float32 array moved once)."""
    backend = softmaxlib.backends()[0]
    cases = bench.optim_cases(["adam", "lion"], [backend, "numba"])
    peers = optim_peers_here()
    expected = []
    if "torch" in peers:
        expected += [("torch.optim.AdamW(fused=True)", "torch"), ("torch.optim.AdamW(foreach=True)", "torch")]
    if "bitsandbytes" in peers:
        expected += [("bnb.optim.Adam8bit", "bnb"), ("bnb.optim.Lion8bit", "bnb")]
    expected += [(f"optim.{name}_step", b) for name in ("adam", "lion") for b in (backend, "numba")]
    assert [(case.name, case.backend) for case in cases] == expected
    for case in cases:
        if case.library == "torch":
            assert case.traffic == (16, 12) and case.optimizers == ("adamw", "adam")  # p, g, m, v read; p, m, v written
        else:
            assert case.traffic == bench.traffic_split("adam_step" if case.optimizers == ("adam",) else "lion_step")
        assert case.threads_on(1) == 1
        assert case.threads_on(None) == (None if case.backend == "numba" else
                                         softmaxlib.get_num_threads() if case.library == "softmaxlib"
                                         else bench._torch_default_threads())
    assert bench.float32_traffic(1) == (12, 8)  # SGD momentum: p, g, b read; p, b written
    with pytest.raises(ValueError, match="unknown optimizer 'adamx'"):
        bench.optim_cases(["adamx"])


def test_optim_cases_without_peers(monkeypatch):
    monkeypatch.setattr(bench, "missing_optim_peers", lambda: ["torch", "bitsandbytes"])
    assert {case.library for case in bench.optim_cases()} == {"softmaxlib"}
    assert bench.optim_notes() == ["torch not installed: no torch.optim rows (x torch: -)",
                                   "bitsandbytes not installed: no bnb.optim rows (x bnb: -)"]


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_optim_steps_start_from_a_trained_state(optimizer):
    """build(): a few untimed steps first, so p has moved and the states hold non-zero values."""
    p0, g = bench.optim_inputs(1 << 14)
    assert p0.dtype == g.dtype == np.float32 and 1e-4 < np.abs(g).mean() < 1e-2
    for case in bench.optim_cases([optimizer], softmaxlib.backends()[:1]):
        p = p0.copy()
        step, state = case.build(p, g.copy(), 1)
        assert not np.array_equal(p, p0)
        assert any(np.any(array) for array in state)
        moved = p.copy()
        step()
        assert not np.array_equal(p, moved)


def test_optim_suite_groups_and_ratios(probes):
    """Per size, the steps at one thread then at the defaults (no Numba there), each group with
    its ratios to the rule's torch and bitsandbytes references; hot below 2 MiB of p and g, cold
    (flushed, with the roofline fraction) above; the roofline from the probe of that many threads."""
    backend = softmaxlib.backends()[0]
    cases = bench.optim_cases(["adamw", "lion"], [backend, "numba"])
    groups = []
    results, bws, failures = bench.optim_suite(cases, [1 << 14, 1 << 19], repeats=1, bw=probes, max_seconds=0.01,
                                               on_group=groups.append)
    assert bws == probes and failures == []
    assert [r for group in groups for r in group] == results
    assert [(group[0].n, group[0].default_threads) for group in groups] == [
        (1 << 14, False), (1 << 14, True), (1 << 19, False), (1 << 19, True)]
    for group in groups:
        default = group[0].default_threads
        assert [(r.call, r.backend) for r in group] == [(case.name, case.backend) for case in cases
                                                         if not (default and case.backend == "numba")]
        references = {}  # the first peer of a library and rule
        for r in group:
            if r.library != "softmaxlib":
                references.setdefault((r.library, r.optimizer), r.median_ns)
        for r in group:
            case = next(c for c in cases if c.name == r.call)
            assert r.threads == case.threads_on(None if default else 1)
            assert r.cache == ("cold" if r.n == 1 << 19 else "hot")
            torch_ns = references.get(("torch", "adamw")) if r.optimizer in ("adamw", "adam") else None
            assert r.vs_torch == (None if torch_ns is None else pytest.approx(torch_ns / r.median_ns))
            bnb_ns = references.get(("bitsandbytes", r.optimizer))
            assert r.vs_bnb == (None if bnb_ns is None else pytest.approx(bnb_ns / r.median_ns))
            assert r.ns_per_param == pytest.approx(r.median_ns / r.n)
            assert r.traffic_bytes_per_param == sum(case.traffic)
            assert r.roofline_ns_per_param == pytest.approx(
                bench.traffic_roofline_ns(*case.traffic, 1, probes[bench.roofline_threads(r.threads)]))
            assert r.roofline_fraction == (pytest.approx(r.roofline_ns_per_param / r.ns_per_param)
                                           if r.cache == "cold" else None)
            blocks = -(-r.n // 256)
            if r.library == "softmaxlib":  # codes, absmax and maps
                states = 2 if r.optimizer == "adamw" else 1
                assert r.state_bytes_per_param == pytest.approx(states * (r.n + 4 * blocks + 4 * 256) / r.n)
            elif r.library == "torch":  # m, v and the step count
                assert r.state_bytes_per_param == pytest.approx(8, abs=1e-3)
            assert r.as_dict()["call"] == r.call


def test_optim_suite_reports_a_failing_peer():
    """A peer whose step raises is left out with a line; softmaxlib's own failures are errors."""
    def broken(p, g, threads):
        raise RuntimeError("no CPU kernel\nsecond line")

    fake = bench.OptimCase("bnb.optim.Broken8bit", ("sgd",), "bitsandbytes", "bnb", broken, (9, 5))
    ours = bench.optim_cases(["sgd"], softmaxlib.backends()[:1])[-1]
    results, _, failures = bench.optim_suite([fake, ours], [1 << 14], [1], repeats=1, max_seconds=0.01,
                                             bw=bench.bandwidths([1], 1 << 20, repeats=2))
    assert [r.call for r in results] == ["optim.sgd_step"] and results[0].vs_bnb is None
    assert failures == ["bnb.optim.Broken8bit failed at n = 16384: RuntimeError: no CPU kernel"]
    with pytest.raises(RuntimeError, match="no CPU kernel"):
        bench.optim_suite([replace(ours, build=broken)], [1 << 14], [1], repeats=1, bw=bench.bandwidths([1], 1 << 20))

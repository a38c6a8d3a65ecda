"""The benchmark API (softmaxlib.bench): shapes and consistency of its results, never speed."""
import math
import os
import pathlib
import subprocess
import sys
import tempfile

import numpy as np
import pytest

import softmaxlib
from softmaxlib import _dispatch, _registry, bench

PACKAGE_PARENT = str(pathlib.Path(softmaxlib.__file__).resolve().parent.parent)


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


def test_traffic_split_matches_registry():
    for name, spec in _registry.OPERATIONS.items():
        read_only, read_write = bench.traffic_split(name)
        assert read_only >= 0 and read_write >= 1
        assert read_only + read_write == spec.traffic_per_element


def check_result(result, baselines):
    elements = result.rows * result.n
    assert result.rows == bench.batch_rows(result.n)
    assert positive_finite(result.median_ns) and 0 < result.min_ns <= result.median_ns
    assert result.ns_per_element == pytest.approx(result.median_ns / elements)
    assert result.gb_per_s == pytest.approx(8 * elements / result.median_ns)
    assert result.bytes_in_out == 8 * elements
    assert result.samples >= 1 and result.calls_per_sample >= 1
    assert result.sum_error < 1e-4
    if result.is_baseline:
        assert result.speedup_vs_numpy == 1.0 and result.roofline_ns is None
        assert result.bytes_moved == bench.NUMPY_TRAFFIC_PER_ELEMENT[result.operation] * 4 * elements
    else:
        spec = _registry.OPERATIONS[result.operation]
        assert (result.family, result.variant) == (spec.family, spec.variant or spec.family)
        assert result.bytes_moved == spec.traffic_per_element * 4 * elements
        assert positive_finite(result.roofline_ns)
        assert result.roofline_fraction == pytest.approx(result.roofline_ns / result.median_ns)
        baseline = baselines[result.n, spec.function, result.input]
        assert result.speedup_vs_numpy == pytest.approx(baseline.median_ns / result.median_ns)


@pytest.fixture(scope="module")
def small_probe():
    return bench.bandwidth(1 << 20, repeats=2)


def test_run_tiny_sizes(small_probe):
    sizes = [7, 1000]
    results = bench.run(sizes, repeats=2, bw=small_probe, max_seconds=0.05)
    kernels = [r for r in results if not r.is_baseline]
    baselines = {(r.n, r.operation, r.input): r for r in results if r.is_baseline}
    expected = {(op, backend, n) for op in _registry.OPERATIONS for backend in softmaxlib.backends()
                for n in sizes}
    assert sorted((r.operation, r.backend, r.n) for r in kernels) == sorted(expected)
    names = {spec.function for spec in _registry.OPERATIONS.values()}
    assert set(baselines) == {(n, name, "normal") for n in sizes for name in names}  # N(0, 1) by default
    assert len(results) == len(expected) + len(baselines)
    for result in results:
        assert result.cache == "hot" and result.buffers == 1
        check_result(result, baselines)
        assert set(result.as_dict()) >= {"operation", "backend", "n", "ns_per_element", "gb_per_s"}


def test_run_out_of_cache_rotates_buffers(monkeypatch, small_probe):
    llc = 1 << 18  # pretend the last-level cache is 256 KiB, so n = 1e5 is out of cache
    monkeypatch.setattr(bench, "llc_bytes", lambda: llc)
    backend = softmaxlib.backends()[0]
    results = bench.run([100_000], [backend], ["softmax_reload"], repeats=2, bw=small_probe,
                        max_seconds=0.05)
    assert [(r.operation, r.backend) for r in results] == [("softmax", "numpy"), ("softmax_reload", backend)]
    baselines = {(r.n, r.operation, r.input): r for r in results if r.is_baseline}
    for result in results:
        assert result.cache == "cold" and result.buffers >= 2
        assert result.buffers * result.bytes_in_out >= 2 * llc
        check_result(result, baselines)


def test_run_rejects_unknown_names(small_probe):
    with pytest.raises(ValueError, match="operation"):
        bench.run([10], operations=["softmax_sideways"], bw=small_probe)
    with pytest.raises(ValueError, match="backend"):
        bench.run([10], backends=["sse9"], bw=small_probe)
    with pytest.raises(ValueError, match="unknown input 'gauss'"):
        bench.run([10], inputs=["normal", "gauss"], bw=small_probe)
    with pytest.raises(ValueError, match="no inputs"):
        bench.run([10], inputs=[], bw=small_probe)
    with pytest.raises(ValueError, match="unknown input"):
        bench.run_quant([256], [256], inputs="uniform", bw=small_probe)


@pytest.mark.parametrize("name, half_width", [("normal", None), ("uniform80", 80), ("uniform1000", 1000)])
def test_draw_inputs(name, half_width):
    assert name in bench.INPUTS
    x = bench.draw(name, (4, 5000), seed=3)
    assert x.dtype == np.float32 and x.shape == (4, 5000) and np.isfinite(x).all()
    assert np.array_equal(x, bench.draw(name, (4, 5000), seed=3))  # the seed decides
    assert not np.array_equal(x, bench.draw(name, (4, 5000), seed=4))
    sets = bench.make_inputs(1000, rows=3, llc=1 << 30, distribution=name)
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
    results = bench.run([1000], [backend], ["softmax_reload", "softmax_two_pass", "stablemax"], inputs=inputs,
                        repeats=2, bw=small_probe, max_seconds=0.05)
    baselines = {(r.n, r.operation, r.input): r for r in results if r.is_baseline}
    assert sorted((r.operation, r.input) for r in results if not r.is_baseline) == sorted(
        (op, name) for op in ("softmax_reload", "softmax_two_pass", "stablemax") for name in inputs)
    assert set(baselines) == {(1000, function, name) for function in ("softmax", "stablemax") for name in inputs}
    for result in results:
        check_result(result, baselines)  # speedup against the baseline on the same input
        assert result.as_dict()["input"] == result.input


def test_run_quant_on_an_input(small_probe):
    backend = softmaxlib.backends()[0]
    results = bench.run_quant([1 << 12], [256], [backend], inputs=["uniform1000"], repeats=2, bw=small_probe)
    assert sorted((r.operation, r.backend) for r in results) == sorted(
        (op, b) for op in ("quantize", "dequantize") for b in ("numpy", backend))
    assert {r.input for r in results} == {"uniform1000"}
    assert all(positive_finite(r.ns_per_element) for r in results)


@pytest.mark.parametrize("text, value", [("1000", 1000), ("1e3", 1000), ("1E5", 100_000),
                                         ("2^24", 1 << 24), ("2**10", 1024), (" 7 ", 7)])
def test_parse_size(text, value):
    assert bench.parse_size(text) == value


@pytest.mark.parametrize("text", ["", "abc", "0", "-5", "1.5", "1e-3", "2^", "2^100", "1e400", "nan"])
def test_parse_size_rejects(text):
    with pytest.raises(ValueError):
        bench.parse_size(text)

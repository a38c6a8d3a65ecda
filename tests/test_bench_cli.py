"""`softmaxlib bench` as users run it, in a subprocess with tiny sizes: the table, --json, --plot,
`compare`, --inputs, every --suite, the help paths, and bad input (exit code 2, a message, nothing
written). Never speed."""
import json
import os
import pathlib
import subprocess
import sys
import tempfile

import pytest

import softmaxlib
from softmaxlib import __main__ as softmaxlib_main
from softmaxlib import _bench_cli, _threads as threads, bench

PACKAGE_PARENT = str(pathlib.Path(softmaxlib.__file__).resolve().parent.parent)
TINY = ["--sizes", "2^8,2^10", "--repeats", "2"]


def run_softmaxlib(*args):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [PACKAGE_PARENT, env.get("PYTHONPATH")]))
    # From a neutral folder: `python -m` puts the working directory first on sys.path, and a
    # source checkout there (without the built extension) would shadow the installed package.
    return subprocess.run([sys.executable, "-m", "softmaxlib", *args], env=env,
                          cwd=tempfile.gettempdir(), capture_output=True, text=True, timeout=300)


def run_cli(*args):
    return run_softmaxlib("bench", *args)


CASES = bench.all_cases()


def table_rows(stdout):
    """The table's rows, split: kernel, backend, n, input, workers, rows, block, cache, ns/elem, ..."""
    return [line.split() for line in stdout.splitlines() if line.split() and line.split()[0] in CASES]


def expected_order(names, backends, inputs_of=lambda name: ["normal"]):
    """(kernel, backend, input) of one size's rows: the NumPy baselines first, then as given."""
    names = [name for name in names if name in CASES]
    ordered = [n for n in names if CASES[n].is_baseline] + [n for n in names if not CASES[n].is_baseline]
    return [(name, backend, distribution) for name in ordered for backend in CASES[name].backends or backends
            for distribution in inputs_of(name)]


def test_default_kernels_every_backend_and_json(tmp_path):
    path = tmp_path / "run.json"
    completed = run_cli(*TINY, "--json", str(path))
    assert completed.returncode == 0, completed.stderr
    rows = table_rows(completed.stdout)
    assert [(row[0], row[1], row[3]) for row in rows] == 2 * expected_order(_bench_cli.DEFAULT_KERNELS,
                                                                            softmaxlib.backends())
    assert "numpy_softmax" in {row[0] for row in rows}
    for name, module in bench.missing_peers().items():
        assert f"{module} not installed: {name} skipped" in completed.stdout
    assert "subnormals" in completed.stdout and "bandwidth probe" in completed.stdout
    document = json.loads(path.read_text())
    machine = document["machine"]
    for key in ("cpu", "isa", "caches", "cores", "versions", "bandwidth", "subnormals_flushed"):
        assert key in machine
    assert machine["versions"]["softmaxlib"] == softmaxlib.__version__
    assert [probe["threads"] for probe in machine["bandwidths"]] == [1] and document["workers"] == [1]
    assert machine["bandwidth"] == machine["bandwidths"][0]
    assert len(document["results"]) == len(rows)
    assert document["inputs"] == {"normal": "N(0, 1)"}  # the default: N(0, 1) only
    assert document["suite"] is None
    assert {row[3] for row in rows} == {"normal"}
    for result in document["results"]:
        assert result["ns_per_element"] > 0 and result["gb_per_s"] > 0 and result["n"] in (256, 1024)
        assert result["input"] == "normal"


def test_inputs_in_table_json_and_compare(tmp_path, capsys):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    kernels, inputs = ["softmax_reload", "quantize_blockwise"], ["normal", "uniform80", "uniform1000"]
    completed = run_cli("--sizes", "2^8", "--repeats", "1", "--kernels", ",".join(kernels),
                        "--backends", softmaxlib.backends()[0], "--inputs", ",".join(inputs), "--json", str(a))
    assert completed.returncode == 0, completed.stderr
    assert "input" in _bench_cli.HEADER.split() and _bench_cli.HEADER in completed.stdout
    rows = table_rows(completed.stdout)
    assert [(row[0], row[3]) for row in rows] == [(kernel, name) for kernel in kernels for name in inputs]
    # a line per wide-range input: its time over N(0, 1)'s, the same cases
    assert "U(-80, 80) against N(0, 1)" in completed.stdout
    assert "U(-1000, 1000) against N(0, 1)" in completed.stdout
    document = json.loads(a.read_text())
    assert document["inputs"] == {"normal": "N(0, 1)", "uniform80": "U(-80, 80)", "uniform1000": "U(-1000, 1000)"}
    assert [(r["kernel"], r["input"]) for r in document["results"]] == [(row[0], row[3]) for row in rows]

    def compared(*paths):  # in process: compare measures nothing
        assert _bench_cli.main(["compare", *map(str, paths)]) == 0
        out = capsys.readouterr().out
        assert out.splitlines()[2].split()[:4] == ["kernel", "backend", "n", "input"]
        return sorted((line[0], line[3]) for line in map(str.split, out.splitlines()) if line and line[0] in kernels)

    assert compared(a, a) == sorted((kernel, name) for kernel in kernels for name in inputs)
    # a run from before --inputs has no "input" field: its cases were N(0, 1); from before the
    # catalog ids, quantize_blockwise was "quantize", with the block size of the run
    old_names = {"quantize_blockwise": "quantize"}
    old = dict(document, quant_blocksize=4096, results=[
        {key: old_names.get(value, value) if key == "kernel" else value for key, value in r.items()
         if key not in ("input", "blocksize")} for r in document["results"] if r["input"] == "normal"])
    del old["inputs"]
    b.write_text(json.dumps(old))
    assert compared(a, b) == [("quantize_blockwise", "normal"), ("softmax_reload", "normal")]


def test_quick_runs_uniform80_next_to_normal():
    """--quick (sizes cut down here) runs every softmax kernel and peer on U(-80, 80) in the row after
    the same case on N(0, 1); StableMax (no exp), quantize and dequantize on N(0, 1) only."""
    completed = run_cli("--quick", "--sizes", "2^8,2^19", "--repeats", "1")
    assert completed.returncode == 0, completed.stderr
    rows = table_rows(completed.stdout)
    normal_only = {"stablemax", "quantize_blockwise", "dequantize_blockwise"}
    expected = expected_order(_bench_cli.QUICK_KERNELS, softmaxlib.backends(),
                              lambda name: ["normal"] + ([] if name in normal_only else ["uniform80"]))
    assert [(row[0], row[1], row[3]) for row in rows] == 2 * expected
    # cold by size alone (more than 2 MiB a call: 4 MiB of rows, 2.5 MiB of quantization data),
    # whatever the cache sizes: every such case with a catalog kernel shows its roofline fraction
    for row in rows:
        assert row[7] == ("cold" if row[2] == "2^19" else "hot") and row[4] == "1"  # one worker by default
        has_roofline = row[2] == "2^19" and CASES[row[0]].kernel_of is not None
        assert (row[-1] != "-") == has_roofline
    assert {"softmax_reload", "softmax_two_pass", "auto_softmax", "numpy_softmax"} <= {
        row[0] for row in rows if row[3] == "uniform80"}
    assert "U(-80, 80) against N(0, 1)" in completed.stdout


def test_plot_and_compare(tmp_path):
    pytest.importorskip("matplotlib")
    a, b, png = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "plot.png"
    arguments = ["--sizes", "2^8", "--repeats", "2", "--kernels", "softmax_reload,quantize_blockwise", "--backends",
                 "numba"]
    assert run_cli(*arguments, "--json", str(a), "--plot", str(png)).returncode == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert run_cli(*arguments, "--json", str(b)).returncode == 0
    completed = run_cli("compare", str(a), str(b))
    assert completed.returncode == 0, completed.stderr
    lines = [line.split() for line in completed.stdout.splitlines() if line.startswith(("softmax_reload", "quantize"))]
    assert sorted(line[0] for line in lines) == ["quantize_blockwise", "softmax_reload"]
    assert all(float(line[-1]) > 0 for line in lines)


def test_quick_is_the_main_job():
    assert _bench_cli.QUICK_SIZES[-1] == 1 << 24 and len(_bench_cli.QUICK_KERNELS) >= 6
    readme = (pathlib.Path(__file__).resolve().parent.parent / "README.md").read_text()  # the checkout's
    assert "pip install . && softmaxlib bench --quick" in readme


@pytest.mark.parametrize("args, message", [
    (["--sizes", "2^8,abc"], "bad size 'abc'"),
    (["--sizes", "0"], "out of range"),
    (["--backends", "sse9"], "unknown softmaxlib backend"),
    (["--kernels", "softmax_sideways"], "unknown kernel 'softmax_sideways'"),
    (["--inputs", "gauss"], "argument --inputs: unknown input 'gauss'"),
    (["--kernels", ""], "argument --kernels: no names given"),  # not the default sweep
    (["--repeats", "0"], "--repeats must be >= 1"),
    (["--json", "/nonexistent-folder/run.json"], "does not exist"),
    (["--plot", "/"], "is a folder"),
    (["--suite", "fast"], "argument --suite: invalid choice: 'fast'"),
    (["--suite", "latency", "--kernels", "softmax_reload"], "--suite latency takes --sizes, --repeats, --json"),
])
def test_bad_arguments_exit_2_and_write_nothing(args, message, tmp_path):
    json_path = tmp_path / "never.json"
    completed = run_cli(*TINY, *args, *(["--json", str(json_path)] if "--json" not in args else []))
    assert completed.returncode == 2
    assert message in completed.stderr
    assert "Traceback" not in completed.stderr
    assert not json_path.exists() and completed.stdout == ""


@pytest.mark.parametrize("args, message", [
    # an empty list is an error naming the option, never the default sweep
    (["--inputs", ""], "argument --inputs: no names given"),
    (["--kernels", ""], "argument --kernels: no names given"),
    (["--kernels", " , "], "argument --kernels: no names given"),
    (["--backends", ""], "argument --backends: no names given"),
    (["--sizes", ""], "argument --sizes: no sizes given"),
    (["--inputs", "normal,uniform"], "argument --inputs: unknown input 'uniform'"),
    (["--inputs", "all,normal"], "unknown input 'all'"),
    (["--suite", "crossover", "--quick"], "--quick is the short form of the default sweep"),
    (["--suite", "latency", "--backends", "avx2"], "--suite latency takes --sizes, --repeats, --json only, "
                                                   "not --backends"),
    (["--suite", "latency", "--plot", "x.png"], "not --plot"),
    (["--suite", "latency", "--repeats", "0"], "--repeats must be >= 1"),
    (["--blocksizes", "8"], "block sizes run from 16 to 2^24"),
    # --workers: positive thread counts or -1, comma-separated
    (["--workers", "0"], "argument --workers: bad workers 0: a positive number of threads or -1 (every core)"),
    (["--workers", "-2"], "argument --workers: bad workers -2"),
    (["--workers", "two"], "argument --workers: bad workers 'two': a positive number of threads or -1"),
    (["--workers", "1.5"], "argument --workers: bad workers '1.5'"),
    (["--workers", "1,,x"], "argument --workers: bad workers 'x'"),
    (["--workers", ""], "argument --workers: no worker counts given"),
    (["--workers", " , "], "argument --workers: no worker counts given"),
    (["--suite", "latency", "--workers", "2"], "--suite latency takes --sizes, --repeats, --json only, not --workers"),
    (["--suite", "latency", "--sizes", "4x2^8"], "--suite latency times one row"),
    (["--sizes", "4x2^8x2"], "bad shape '4x2^8x2'"),
    (["--sizes", "0x2^8"], "out of range"),
    (["--sizes", "2^16x2^16"], "rows x n <= 2^30"),
    (["--suite", "threads", "--plot", "x.png"], "--suite threads has its own sizes and its own table: no --plot"),
    (["--suite", "threads", "--quick"], "no --quick"),
    (["--suite", "threads", "--kernels", "softmax_reload"], "unknown case 'softmax_reload' of --suite threads"),
    (["--suite", "threads", "--backends", "avx2,numba"], "--suite threads runs on one backend"),
    (["--suite", "threads", "--backends", "sse9"], "unknown softmaxlib backend"),
    (["--suite", "optim", "--workers", "2"], "--suite optim runs at one thread and at the defaults, on its own "
                                             "inputs: no --workers"),
    (["--suite", "optim", "--plot", "x.png"], "no --plot"),
    (["--suite", "optim", "--inputs", "normal"], "no --inputs"),
    (["--suite", "optim", "--kernels", "adamx"], "--suite optim: unknown optimizer 'adamx'; the optimizers are adam"),
    (["--suite", "optim", "--backends", "sse9"], "unknown softmaxlib backend"),
    (["--suite", "optim", "--sizes", "4x2^8"], "--suite optim: --sizes takes parameter counts, not shapes ROWSxN"),
])
def test_empty_or_unknown_lists_exit_2(args, message, tmp_path, capsys):
    """In process (the arguments are checked before anything is measured): faster than a subprocess."""
    json_path = tmp_path / "never.json"
    with pytest.raises(SystemExit) as exit_:
        softmaxlib_main.main(["bench", *TINY, *args, "--json", str(json_path)])
    out, err = capsys.readouterr()
    assert exit_.value.code == 2
    assert message in err and "Traceback" not in err
    assert out == "" and not json_path.exists()


def test_compare_rejects_unreadable_files(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    completed = run_cli("compare", str(bad), str(bad))
    assert completed.returncode == 2 and "cannot read" in completed.stderr


def test_unknown_subcommand():
    completed = run_softmaxlib("plot")
    assert completed.returncode == 2 and "usage: softmaxlib bench" in completed.stderr
    assert "invalid choice: 'plot'" in completed.stderr and completed.stdout == ""


def test_no_command_prints_usage_and_exits_2():
    completed = run_softmaxlib()
    assert completed.returncode == 2 and completed.stdout == ""
    assert completed.stderr.startswith("usage: softmaxlib bench") and "required: command" in completed.stderr


def test_help_exits_0():
    completed = run_softmaxlib("--help")
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith("usage: softmaxlib bench") and "softmaxlib bench --help" in completed.stdout
    assert completed.stderr == ""


@pytest.mark.parametrize("argv, usage", [
    (["--help"], "usage: softmaxlib bench [options]"),
    (["-h"], "usage: softmaxlib bench [options]"),
    (["bench", "--help"], "usage: softmaxlib bench [-h]"),
    (["bench", "-h"], "usage: softmaxlib bench [-h]"),
    (["bench", "compare", "--help"], "usage: softmaxlib bench compare [-h]"),
    (["bench", "compare", "-h"], "usage: softmaxlib bench compare [-h]"),
])
def test_every_help_path_prints_help_and_exits_0(argv, usage, capsys):
    with pytest.raises(SystemExit) as exit_:
        softmaxlib_main.main(argv)
    assert exit_.value.code == 0
    out, err = capsys.readouterr()
    assert out.startswith(usage) and err == ""
    if argv[:2] == ["bench", "--help"]:
        for name, label in bench.INPUTS.items():
            assert f"{name} = {label}" in " ".join(out.split())  # --inputs and its names


@pytest.mark.parametrize("suite", [name for name in _bench_cli.SUITES if name not in ("latency", "threads", "optim")])
def test_every_suite_runs(suite, tmp_path, capsys):
    """In process, one tiny size, one repeat, one backend: the suite's cases, in order, and its JSON."""
    path = tmp_path / f"{suite}.json"
    preset = _bench_cli.SUITES[suite]
    backend = softmaxlib.backends()[0]
    assert _bench_cli.main(["--suite", suite, "--sizes", "2^8", "--repeats", "1", "--backends", backend,
                            "--json", str(path)]) == 0
    out = capsys.readouterr().out
    rows = table_rows(out)
    expected = expected_order(preset.kernels, [backend])
    blocksizes = preset.blocksizes if any(CASES[name].buffers == "quant" for name in preset.kernels if name in CASES) \
        else [None]  # (peers not installed, torch here, have no case)
    if blocksizes != [None]:  # quantization: every case once per block size, block size first
        expected = [(name, b, d) for size in blocksizes for name, b, d in
                    expected_order([n for n in preset.kernels if CASES[n].is_baseline], [backend])] + \
                   [(name, b, d) for size in blocksizes for name, b, d in
                    expected_order([n for n in preset.kernels if not CASES[n].is_baseline], [backend])]
    assert [(row[0], row[1], row[3]) for row in rows] == expected
    document = json.loads(path.read_text())
    assert document["suite"] == suite and document["repeats"] == 1
    assert [(r["kernel"], r["backend"], r["input"]) for r in document["results"]] == expected
    if blocksizes != [None]:
        assert [r["blocksize"] for r in document["results"]] == [
            size for group in (True, False) for size in blocksizes for name in preset.kernels
            if CASES[name].is_baseline == group]
    if suite == "crossover":  # one row, the same buffers: "rows" is 1 even where the default sweep batches
        assert {row[5] for row in rows} == {"1"}
    if preset.pivot:
        assert "ns per element:" in out
    if suite in ("stablemax", "quant"):  # every kernel against its NumPy expression
        assert all(r["speedup_vs_numpy"] > 0 for r in document["results"] if r["family"] != "numpy")


def test_latency_suite_table_and_json(tmp_path):
    path = tmp_path / "latency.json"
    completed = run_cli("--suite", "latency", "--sizes", "1,16", "--repeats", "1", "--json", str(path))
    assert completed.returncode == 0, completed.stderr
    out = completed.stdout
    assert "ns per call" in out and "-- references" in out and "-- bare kernels" in out
    assert "n=1" in out and "n=16" in out and "/torch" in out
    document = json.loads(path.read_text())
    assert document["suite"] == "latency" and document["backend"] == softmaxlib.backends()[0]
    rows = document["latency"]
    assert {row["n"] for row in rows} == {1, 16}
    calls = {(row["section"], row["call"]) for row in rows}
    row_functions = ["softmaxlib.softmax", "softmaxlib.log_softmax", "three_pass.softmax[reload]",
                     "three_pass.softmax[recompute]", "three_pass.softmax[reload_exact]",
                     "three_pass.log_softmax[reload]", "three_pass.log_softmax[recompute]", "two_pass.softmax",
                     "two_pass.log_softmax",
                     "stablemax.stablemax", "stablemax.log_stablemax"]
    public = {f"{function}{arguments}" for function in row_functions for arguments in ("(x)", "(x, out=y)")} | {
        "softmaxlib.logsumexp(x)", "two_pass.sum_exp_pair(x)", "stablemax.stablemax_cross_entropy(x, i)",
        "stablemax.stablemax_cross_entropy(x, i, return_grad=True)", "quant.quantize_blockwise(x)",
        "quant.quantize_blockwise(x, out=q, absmax_out=a)", "quant.dequantize_blockwise(q, state)",
        "quant.dequantize_blockwise(q, state, out=y)"}
    general = {"softmaxlib.softmax(x_f64)", "softmaxlib.softmax(x_col, axis=0)",
               f"softmaxlib.softmax(x, backend='{softmaxlib.backends()[0]}')"}
    references = {"len(x)", "np.exp(x)", "np.exp(x, out=y)"} | \
        ({"torch.softmax(t, -1)"} if "torch_softmax" not in bench.missing_peers() else set()) | \
        ({"scipy.special.softmax(x)"} if "scipy_softmax" not in bench.missing_peers() else set())
    assert {call for section, call in calls if section == "public"} == public
    assert {call for section, call in calls if section == "general"} == general
    assert {call for section, call in calls if section == "reference"} == references
    assert {call for section, call in calls if section == "overhead"} == public | general
    assert {"softmax_reload_exact(x2, y2)", "quantize_blockwise(x, B, tables, q, absmax)"} <= {
        call for section, call in calls if section == "kernel"}
    for row in rows:
        assert set(row) >= {"section", "call", "n", "ns", "over_np_exp", "over_torch", "kernel"}
        if row["section"] in ("public", "general", "kernel"):
            assert row["ns"] > 0 and row["over_np_exp"] > 0 and row["kernel"]
    # compare reads latency runs too: call by call
    completed = run_cli("compare", str(path), str(path))
    assert completed.returncode == 0, completed.stderr
    assert "softmaxlib.softmax(x)" in completed.stdout and "A/B above 1" in completed.stdout


@pytest.mark.parametrize("text, value", [("1000", 1000), ("1e3", 1000), ("1E5", 100_000),
                                         ("2^24", 1 << 24), ("2**10", 1024), (" 7 ", 7)])
def test_parse_size(text, value):
    assert _bench_cli.parse_size(text) == value


@pytest.mark.parametrize("text", ["", "abc", "0", "-5", "1.5", "1e-3", "2^", "2^100", "1e400", "nan"])
def test_parse_size_rejects(text):
    with pytest.raises(ValueError):
        _bench_cli.parse_size(text)


@pytest.mark.parametrize("text, value", [("64x2^10", (64, 1024)), ("1x1e3", (1, 1000)), ("2^20", 1 << 20),
                                         (" 4X256 ", (4, 256))])
def test_parse_shape(text, value):
    assert _bench_cli.parse_shape(text) == value


@pytest.mark.parametrize("text, value", [("1", [1]), ("1,2", [1, 2]), (" 2 , 1 ", [2, 1]), ("2,2,1", [2, 1]),
                                         ("-1", [threads.available_cores()]), ("1,-1", [1, threads.available_cores()]
                                                                                if threads.available_cores() > 1
                                                                                else [1])])
def test_parse_workers(text, value):
    assert _bench_cli.parse_workers(text) == value


def test_workers_list_runs_each_count_with_its_roofline(tmp_path, capsys):
    """--workers 1,2 (in process, tiny sizes): the cases that take a thread count run on 1 and on 2
    workers in consecutive rows, the NumPy baseline and the Numba twins once on 1; a cold size has
    a roofline on both (from the 1- and 2-thread probes, both printed and in the JSON); a shape
    ROWSxN runs those rows."""
    path = tmp_path / "workers.json"
    backend = softmaxlib.backends()[0]
    kernels = ["softmax_two_pass", "auto_softmax", "quantize_blockwise", "numpy_softmax"]
    assert _bench_cli.main(["--sizes", "2^8,3x100000", "--repeats", "1", "--kernels", ",".join(kernels),
                            "--backends", f"{backend},numba", "--workers", "1,2", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "bandwidth probe, 64 MiB, 1 thread:" in out and "bandwidth probe, 64 MiB, 2 threads:" in out
    rows = table_rows(out)
    expected = []
    for n in ("256", "1e5"):
        expected.append(("numpy_softmax", "numpy", n, "1"))
        for name in kernels[:3]:
            shown = "300000" if name == "quantize_blockwise" and n == "1e5" else n  # 3 x 1e5 elements, one array
            expected += [(name, backend, shown, "1"), (name, backend, shown, "2"), (name, "numba", shown, "1")]
    assert [(row[0], row[1], row[2], row[4]) for row in rows] == expected
    for row in rows:
        if row[2] == "1e5":
            assert row[5] == "3" and row[7] == "cold"  # 3 rows of 1e5: 2.4 MB a call
        if row[2] == "300000":
            assert row[5] == "1" and row[7] == "hot"  # 1.5 MB a call
        if row[7] == "cold" and row[0] != "numpy_softmax":
            assert row[-1] != "-"
    document = json.loads(path.read_text())
    assert document["workers"] == [1, 2]
    assert [probe["threads"] for probe in document["machine"]["bandwidths"]] == sorted(
        {1, min(2, threads.available_cores())})
    assert all(probe["read_gb_s"] > 0 and probe["read_write_gb_s"] > 0 for probe in document["machine"]["bandwidths"])
    assert [r["workers"] for r in document["results"]] == [int(row[4]) for row in rows]


def threads_table_lines(out):
    """The threads suite's table: its header split, and its lines (call, shape, input, ...)."""
    lines = out.splitlines()
    start = next(index for index, line in enumerate(lines) if line.split()[:3] == ["call", "shape", "input"])
    body = []
    for line in lines[start + 1:]:
        if not line.split() or not line.split()[0].startswith(("softmaxlib.", "two_pass.", "stablemax.", "quant.")):
            break
        body.append(line.split())
    return lines[start].split(), body


@pytest.mark.parametrize("hide_torch", [False, True])
def test_threads_suite_table_and_json(hide_torch, tmp_path, capsys, monkeypatch):
    """--suite threads with tiny shapes (in process): a line per call, shape and input, each with
    its time on 1 and 2 workers, the speedup, the rooflines and fractions (cold shapes only), and
    torch.softmax at its default thread count and at one for the softmax calls (no such columns
    without torch); quantization on the one-row shapes only. torch's thread count is as it was
    after the run. The JSON has every result (which compare reads) and the table."""
    path = tmp_path / "threads.json"
    if hide_torch:
        monkeypatch.setattr(bench, "missing_peers", lambda: {"torch_softmax": "torch"})
    torch_missing = "torch_softmax" in bench.missing_peers()
    if not torch_missing:
        import torch
        before = torch.get_num_threads()
    assert _bench_cli.main(["--suite", "threads", "--sizes", "4x2^8,2^10,2^19", "--repeats", "1", "--workers", "1,2",
                            "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.count("torch not installed (or left out): no torch columns") == torch_missing
    header, body = threads_table_lines(out)
    torch_threads = [] if torch_missing else list(dict.fromkeys([bench._torch_default_threads(), 1]))
    assert header == ["call", "shape", "input", "cache", "w=1", "w=2", "x", "w=2", "roof1", "roof2", "frac1",
                      "frac2"] + [f"torch{t}" for t in torch_threads] + (["x", "torch"] if torch_threads else [])
    expected = []
    for shape in ("4x256", "2^10", "2^19"):
        for call in ("softmaxlib.softmax", "two_pass.softmax"):
            expected += [(call, shape, "normal"), (call, shape, "uniform80")]
        expected.append(("stablemax.stablemax", shape, "normal"))
    for shape in ("2^10", "2^19"):
        expected += [("quant.quantize_blockwise", shape, "normal"), ("quant.dequantize_blockwise", shape, "normal")]
    assert [tuple(line[:3]) for line in body] == expected
    columns = len(header) - 1 - bool(torch_threads)  # "x w=2" and "x torch" are one column each
    for line in body:
        assert len(line) == columns
        cold = line[1] == "2^19"
        assert line[3] == ("cold" if cold else "hot")
        assert float(line[4]) > 0 and float(line[5]) > 0 and float(line[6]) > 0
        assert all((cell != "-") == cold for cell in line[7:11])  # rooflines and fractions: cold only
        torch_cells = line[11:]
        assert all((cell != "-") == line[0].endswith(".softmax") for cell in torch_cells)
    if not torch_missing:
        assert torch.get_num_threads() == before
    document = json.loads(path.read_text())
    assert document["suite"] == "threads" and document["workers"] == [1, 2]
    lines = document["threads"]
    assert [(line["call"], _bench_cli.format_shape(line["rows"], line["n"]), line["input"]) for line in lines] == \
        expected
    for line in lines:
        assert set(line["ns_per_element"]) == {"1", "2"} and set(line["speedup"]) == {"2"}
        assert line["default_workers"] == softmaxlib.get_num_threads()
        if line["call"].endswith(".softmax") and not torch_missing:
            assert set(map(int, line["torch_ns_per_element"])) == set(torch_threads)
    results = document["results"]
    assert {r["kernel"] for r in results} == {call for call, _, _ in expected} | (set() if torch_missing
                                                                                    else {"torch.softmax"})
    assert {r["workers"] for r in results if r["kernel"] != "torch.softmax"} == {1, 2}
    completed = run_cli("compare", str(path), str(path))
    assert completed.returncode == 0, completed.stderr
    assert "two_pass.softmax" in completed.stdout and "A/B above 1" in completed.stdout


def test_notes_on_workers_and_load(monkeypatch):
    cores = threads.available_cores()
    assert _bench_cli.workers_notes([1, cores]) == []
    [note] = _bench_cli.workers_notes([1, cores + 1])
    assert f"--workers {cores + 1}" in note and f"{cores} threads'" in note
    busy = {"load_average": [1.5, 1.0, 0.5], "available_cores": 2}
    assert "load average 1.5" in _bench_cli.load_notes([1, 2], busy)[0]
    assert _bench_cli.load_notes([1], busy) == []  # one thread: its core is its own
    assert _bench_cli.load_notes([1, 2], dict(busy, load_average=[0.2, 0, 0])) == []
    assert _bench_cli.load_notes([2], dict(busy, load_average=None)) == []
    info = _bench_cli.machine_info(None)
    assert info["bandwidth"] is None and info["bandwidths"] == [] and info["available_cores"] == cores
    assert info["load_average"] is None or len(info["load_average"]) == 3


def optim_table(out):
    """The optim suite's header and its groups: [(title, [row split into call, then the cells])]."""
    lines = out.splitlines()
    start = lines.index(_bench_cli.OPTIM_HEADER)
    groups = []
    for line in lines[start + 1:]:
        if line.startswith("-- n = "):
            groups.append((line, []))
        elif line.startswith(("torch.optim.", "bnb.optim.", "optim.")):
            call, cells = line[:44].strip(), line[44:].split()
            groups[-1][1].append([call] + cells)
        else:
            break
    return lines[start].split(), groups


@pytest.mark.parametrize("hide_peers", [False, True])
def test_optim_suite_table_and_json(hide_peers, tmp_path, capsys, monkeypatch):
    """--suite optim at n = 2^14 (in process): a group at one thread and one at the defaults, each
    with the torch.optim and bitsandbytes peers installed, then softmaxlib.optim's steps of every
    optimizer on every backend (Numba at one thread only), the columns filled where they apply
    (hot: no roofline fraction); the footnotes; the JSON with every result. Peers hidden: a note
    each, no rows, no ratios."""
    if hide_peers:
        monkeypatch.setattr(bench, "missing_optim_peers", lambda: ["torch", "bitsandbytes"])
    peers = [module for module in bench.OPTIM_PEERS if module not in bench.missing_optim_peers()]
    path = tmp_path / "optim.json"
    assert _bench_cli.main(["--suite", "optim", "--sizes", "2^14", "--repeats", "1", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    for module in bench.OPTIM_PEERS:
        assert (f"{module} not installed: no " in out) == (module not in peers)
    header, groups = optim_table(out)
    assert header == ["call", "backend", "threads", "ns/param", "x", "torch", "x", "bnb", "state", "B", "traffic",
                      "roof", "frac"]
    assert [title for title, _ in groups] == [
        "-- n = 2^14, workers=1, torch.set_num_threads(1), hot",
        "-- n = 2^14, each library's default threads (softmaxlib workers=None, torch its own count), hot"]
    optimizers = list(softmaxlib.optim.OPTIMIZERS)
    torch_rows = ["torch.optim.AdamW(fused=True)", "torch.optim.AdamW(foreach=True)",
                  "torch.optim.SGD(momentum=0.9, foreach=True)", "torch.optim.RMSprop(foreach=True)",
                  "torch.optim.Adagrad(foreach=True)"]
    bnb_rows = ["bnb.optim.Adam8bit", "bnb.optim.AdamW8bit", "bnb.optim.SGD8bit", "bnb.optim.Lion8bit",
                "bnb.optim.RMSprop8bit", "bnb.optim.Adagrad8bit"]
    torch_default = bench._torch_default_threads() if "torch" in peers else None
    expected = []
    for default in (False, True):
        rows = [(call, "torch", torch_default if default else 1) for call in torch_rows if "torch" in peers]
        rows += [(call, "bnb", torch_default if default else 1) for call in bnb_rows if "bitsandbytes" in peers]
        rows += [(f"optim.{name}_step", backend, softmaxlib.get_num_threads() if default else 1)
                 for name in optimizers for backend in softmaxlib.backends() if not (default and backend == "numba")]
        expected.append(rows)
    assert [[(row[0], row[1], int(row[2])) for row in rows] for _, rows in groups] == expected
    document = json.loads(path.read_text())
    assert document["suite"] == "optim" and document["repeats"] == 1 and document["settings"] == [1, None]
    results = document["results"]
    assert [(r["call"], r["backend"], r["threads"]) for r in results] == [row for rows in expected for row in rows]
    assert [r["default_threads"] for r in results] == [default for default, rows in zip((False, True), expected)
                                                       for _ in rows]
    for row, result in zip([row for _, rows in groups for row in rows], results):
        _, backend, _, ns, vs_torch, vs_bnb, state, traffic, roof, frac = row
        assert float(ns) > 0 and float(state) > 0 and float(roof) > 0 and frac == "-"  # hot: no fraction
        rule = result["optimizer"]
        assert (vs_torch != "-") == ("torch" in peers and rule != "lion") == (result["vs_torch"] is not None)
        assert (vs_bnb != "-") == ("bitsandbytes" in peers) == (result["vs_bnb"] is not None)
        states = len(softmaxlib.optim.OPTIMIZERS[rule][1])
        assert int(traffic) == result["traffic_bytes_per_param"] == \
            (12 + 8 * states if backend == "torch" else 12 + 2 * states)
    for footnote in ("ns/param:", "x torch:", "state B:", "traffic:", "roof:", "numba:"):
        assert f"\n{footnote}" in out
    assert document["notes"] == bench.optim_notes() and document["footnotes"] == _bench_cli.optim_footnotes()

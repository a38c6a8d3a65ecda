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
from softmaxlib import _bench_cli, bench

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
    """The table's rows, split: kernel, backend, n, input, rows, block, cache, ns/elem, ..."""
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
        assert row[6] == ("cold" if row[2] == "2^19" else "hot")
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


@pytest.mark.parametrize("suite", [name for name in _bench_cli.SUITES if name != "latency"])
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
        assert {row[4] for row in rows} == {"1"}
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

"""`softmaxlib bench` as users run it, in a subprocess with tiny sizes: the table, --json, --plot,
`compare`, --inputs, the help paths, and bad input (exit code 2, a message, nothing written).
Never speed."""
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


def table_rows(stdout):
    """The table's rows, split: kernel, backend, n, input, rows, cache, ns/elem, ..."""
    kernels = set(_bench_cli.all_kernels())
    return [line.split() for line in stdout.splitlines() if line.split() and line.split()[0] in kernels]


def test_default_kernels_every_backend_and_json(tmp_path):
    path = tmp_path / "run.json"
    completed = run_cli(*TINY, "--json", str(path))
    assert completed.returncode == 0, completed.stderr
    rows = table_rows(completed.stdout)
    expected = [name for name in _bench_cli.DEFAULT_KERNELS if name in _bench_cli.all_kernels()]
    library = [name for name in expected if _bench_cli.all_kernels()[name].backends is None]
    assert {(row[0], row[1]) for row in rows} >= {(k, b) for k in library for b in softmaxlib.backends()}
    assert "numpy_softmax" in {row[0] for row in rows}
    assert "subnormals" in completed.stdout and "bandwidth probe" in completed.stdout
    document = json.loads(path.read_text())
    machine = document["machine"]
    for key in ("cpu", "isa", "caches", "cores", "versions", "bandwidth", "subnormals_flushed"):
        assert key in machine
    assert machine["versions"]["softmaxlib"] == softmaxlib.__version__
    assert len(document["results"]) == len(rows)
    assert document["inputs"] == {"normal": "N(0, 1)"}  # the default: N(0, 1) only
    assert {row[3] for row in rows} == {"normal"}
    for result in document["results"]:
        assert result["ns_per_element"] > 0 and result["gb_per_s"] > 0 and result["n"] in (256, 1024)
        assert result["input"] == "normal"


def test_inputs_in_table_json_and_compare(tmp_path, capsys):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    kernels, inputs = ["softmax_reload", "quantize"], ["normal", "uniform80", "uniform1000"]
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
    # a run from before --inputs has no "input" field: its cases were N(0, 1)
    old = dict(document, results=[{key: value for key, value in r.items() if key != "input"}
                                  for r in document["results"] if r["input"] == "normal"])
    del old["inputs"]
    b.write_text(json.dumps(old))
    assert compared(a, b) == [("quantize", "normal"), ("softmax_reload", "normal")]


def test_quick_runs_uniform80_next_to_normal():
    """--quick (sizes cut down here) runs every softmax kernel and peer on U(-80, 80) in the row after
    the same case on N(0, 1); StableMax (no exp), quantize and dequantize on N(0, 1) only."""
    completed = run_cli("--quick", "--sizes", "2^8", "--repeats", "1")
    assert completed.returncode == 0, completed.stderr
    rows = table_rows(completed.stdout)
    quick = [name for name in _bench_cli.QUICK_KERNELS if name in _bench_cli.all_kernels()]
    assert list(dict.fromkeys(row[0] for row in rows)) == quick
    normal_only = {"stablemax", "quantize", "dequantize"}
    expected = []
    for name in quick:
        for backend in _bench_cli.all_kernels()[name].backends or softmaxlib.backends():
            expected += [(name, backend, "normal")] + ([] if name in normal_only else [(name, backend, "uniform80")])
    assert [(row[0], row[1], row[3]) for row in rows] == expected
    assert {"softmax_reload", "softmax_two_pass", "auto_softmax", "numpy_softmax"} <= {
        row[0] for row in rows if row[3] == "uniform80"}
    assert "U(-80, 80) against N(0, 1)" in completed.stdout


def test_plot_and_compare(tmp_path):
    pytest.importorskip("matplotlib")
    a, b, png = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "plot.png"
    arguments = ["--sizes", "2^8", "--repeats", "2", "--kernels", "softmax_reload,quantize", "--backends", "numba"]
    assert run_cli(*arguments, "--json", str(a), "--plot", str(png)).returncode == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert run_cli(*arguments, "--json", str(b)).returncode == 0
    completed = run_cli("compare", str(a), str(b))
    assert completed.returncode == 0, completed.stderr
    lines = [line.split() for line in completed.stdout.splitlines() if line.startswith(("softmax_reload", "quantize"))]
    assert sorted(line[0] for line in lines) == ["quantize", "softmax_reload"]
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

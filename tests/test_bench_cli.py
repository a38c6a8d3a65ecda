"""`softmaxlib bench` as users run it, in a subprocess with tiny sizes: the table, --json, --plot,
`compare`, and bad input (exit code 2, a message, nothing written). Never speed."""
import json
import os
import pathlib
import subprocess
import sys
import tempfile

import pytest

import softmaxlib
from softmaxlib import _bench_cli

PACKAGE_PARENT = str(pathlib.Path(softmaxlib.__file__).resolve().parent.parent)
TINY = ["--sizes", "2^8,2^10", "--repeats", "2"]


def run_cli(*args):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [PACKAGE_PARENT, env.get("PYTHONPATH")]))
    # From a neutral folder: `python -m` puts the working directory first on sys.path, and a
    # source checkout there (without the built extension) would shadow the installed package.
    return subprocess.run([sys.executable, "-m", "softmaxlib", "bench", *args], env=env,
                          cwd=tempfile.gettempdir(), capture_output=True, text=True, timeout=300)


def table_rows(stdout):
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
    for result in document["results"]:
        assert result["ns_per_element"] > 0 and result["gb_per_s"] > 0 and result["n"] in (256, 1024)


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


def test_compare_rejects_unreadable_files(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    completed = run_cli("compare", str(bad), str(bad))
    assert completed.returncode == 2 and "cannot read" in completed.stderr


def test_unknown_subcommand():
    completed = subprocess.run([sys.executable, "-m", "softmaxlib", "plot"], capture_output=True, text=True,
                               cwd=tempfile.gettempdir(),
                               env={**os.environ, "PYTHONPATH": PACKAGE_PARENT})
    assert completed.returncode == 2 and "usage: softmaxlib bench" in completed.stderr

#!/usr/bin/env python3
"""Runs every fuzz target (fuzz/fuzz_*.py) for a bounded time, each in its own process.

    python fuzz/run_all.py [SECONDS] [--crashes DIR] [--targets NAME,...] [--keep-corpus DIR]

SECONDS (default 60) is split evenly between the targets and passed to each as libFuzzer's
-max_total_time; a target's start-up (imports, loading the Numba kernels) comes on top. Each
target starts from its seed corpus, fuzz/corpus/<target>/, copied into a scratch folder so that
the inputs libFuzzer adds stay out of the checkout (--keep-corpus DIR keeps them). Reproducers
of crashes and findings go to DIR (default fuzz/crashes/, git-ignored) as <target>-crash-<sha1>,
with the target's log as <target>.log; rerun one with `python fuzz/<target>.py <file>`.

Prints the executions per target and in total (from libFuzzer's final "Done N runs" / "#N DONE"
lines) and exits 1 if any target crashed, found a failure, hung or did not start.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
STARTUP_ALLOWANCE = 300  # seconds for imports and Numba's cache on a loaded machine, beyond the budget
DONE_LINES = (re.compile(r"^Done (\d+) runs in", re.M), re.compile(r"^#(\d+)\s+DONE", re.M))
ANY_COUNT = re.compile(r"^#(\d+)\s", re.M)
# (libFuzzer also writes "slow-unit-" files for inputs slower than -report_slow_units, such as the
# first call that makes Numba compile a new specialization; those are not failures)
FAILURE_MARKS = ("Uncaught Python exception", "ERROR: libFuzzer", "==ERROR", "SUMMARY: libFuzzer", "deadly signal")
FAILURE_ARTIFACT = re.compile(r"Test unit written to \S*(crash|timeout|oom|leak)-")


def targets():
    return sorted(name[:-3] for name in os.listdir(HERE) if name.startswith("fuzz_") and name.endswith(".py"))


def executions(log):
    """libFuzzer's final count of executions, or its last progress count (None if none)."""
    for pattern in DONE_LINES:
        found = pattern.findall(log)
        if found:
            return int(found[-1])
    found = ANY_COUNT.findall(log)
    return int(found[-1]) if found else None


def run_target(name, seconds, crashes, keep_corpus):
    seeds = os.path.join(HERE, "corpus", name)
    with tempfile.TemporaryDirectory(prefix=f"{name}-corpus-") as scratch:
        corpus = os.path.join(keep_corpus, name) if keep_corpus else scratch
        os.makedirs(corpus, exist_ok=True)
        if os.path.isdir(seeds):
            for seed in os.listdir(seeds):
                shutil.copy(os.path.join(seeds, seed), corpus)
        command = [sys.executable, os.path.join(HERE, f"{name}.py"), corpus, f"-max_total_time={seconds}",
                   f"-artifact_prefix={os.path.join(crashes, name)}-", "-timeout=120", "-rss_limit_mb=4096",
                   "-report_slow_units=60", "-print_final_stats=1"]
        started = time.monotonic()
        try:
            finished = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                      errors="replace", timeout=seconds + STARTUP_ALLOWANCE)
            log, returncode = finished.stdout, finished.returncode
        except subprocess.TimeoutExpired as timeout:
            log = (timeout.stdout or b"").decode(errors="replace") if isinstance(timeout.stdout, bytes) \
                else (timeout.stdout or "")
            log += f"\nrun_all: killed after {seconds + STARTUP_ALLOWANCE} s\n"
            returncode = "timeout"
    elapsed = time.monotonic() - started
    count = executions(log)
    failed = returncode != 0 or any(mark in log for mark in FAILURE_MARKS) or bool(FAILURE_ARTIFACT.search(log)) \
        or count is None
    if failed:
        with open(os.path.join(crashes, f"{name}.log"), "w") as file:
            file.write(log)
    return {"name": name, "executions": count, "elapsed": elapsed, "returncode": returncode, "failed": failed,
            "log": log}


def failure_summary(log):
    """What went wrong, from a target's log: the exception (its middle elided when long) or the
    sanitizer/libFuzzer summary, and where the reproducer was written."""
    lines = log.splitlines()
    summary = []
    marks = [i for i, line in enumerate(lines) if "=== Uncaught Python exception: ===" in line]
    if marks:
        start = marks[0] + 1
        end = next((i for i in range(start, len(lines)) if lines[i].startswith("Traceback")), len(lines))
        message = " ".join(line.strip() for line in lines[start:end])
        summary.append(message if len(message) <= 900 else f"{message[:300]} [...] {message[-550:]}")
    summary += [line for line in lines if line.startswith(("SUMMARY:", "run_all:", "Fatal Python error"))
                or "Test unit written to" in line or "deadly signal" in line]
    return [line[:1000] for line in (summary or lines[-15:])]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("seconds", nargs="?", type=float, default=60.0, help="total fuzzing time (default 60)")
    parser.add_argument("--crashes", default=os.path.join(HERE, "crashes"),
                        help="folder for reproducers and failing logs (default fuzz/crashes/)")
    parser.add_argument("--targets", default=None, help="comma-separated target names (default: all)")
    parser.add_argument("--keep-corpus", default=None, help="keep each target's grown corpus in DIR/<target>/")
    arguments = parser.parse_args(argv)
    names = targets() if not arguments.targets else arguments.targets.split(",")
    unknown = sorted(set(names) - set(targets()))
    if unknown:
        parser.error(f"unknown targets {', '.join(unknown)}; the targets are {', '.join(targets())}")
    os.makedirs(arguments.crashes, exist_ok=True)
    seconds = max(1, int(arguments.seconds / len(names)))
    print(f"fuzzing {len(names)} targets for {seconds} s each; reproducers in {arguments.crashes}", flush=True)
    results = []
    for name in names:
        result = run_target(name, seconds, arguments.crashes, arguments.keep_corpus)
        results.append(result)
        status = "FAILED" if result["failed"] else "ok"
        count = result["executions"]
        print(f"  {name:<16} {status:<6} {count if count is not None else '?':>9} executions in "
              f"{result['elapsed']:.0f} s (exit {result['returncode']})", flush=True)
        if result["failed"]:
            for line in failure_summary(result["log"]):
                print(f"      {line}")
            print(f"      log: {os.path.join(arguments.crashes, name + '.log')}")
    total = sum(result["executions"] or 0 for result in results)
    failed = [result["name"] for result in results if result["failed"]]
    print(f"total: {total} executions")
    print(f"fuzz: {len(results) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

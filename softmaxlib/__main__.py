"""The `softmaxlib` command: `softmaxlib bench [options]`, `softmaxlib bench --suite NAME`,
`softmaxlib bench compare A.json B.json` and `softmaxlib tune [options]` (also `python -m
softmaxlib ...`); softmaxlib/_bench_cli.py has the benchmark's options and suites,
softmaxlib/_tune.py the tuning of the auto path's crossovers.

`softmaxlib --help` (or -h) prints the help and exits with 0; no command, or an unknown one, prints
the usage and an error to stderr and exits with 2, as argparse does."""
import argparse
import sys

USAGE = ("softmaxlib bench [options]\n       softmaxlib bench --suite {crossover,stablemax,quant,peers,latency} "
         "[options]\n       softmaxlib bench compare A.json B.json\n       softmaxlib tune [options]")
COMMANDS = ("bench", "tune")


def _parser():
    parser = argparse.ArgumentParser(
        prog="softmaxlib", usage=USAGE,
        description="softmaxlib's command line: benchmarks of its kernels on this machine, and the tuning of "
                    "its auto path.",
        epilog="`softmaxlib bench --help` lists the options of a run and the suites; `softmaxlib bench --quick` is "
               "the short run. `softmaxlib tune --help` lists the tuning's options.")
    parser.add_argument("command", choices=COMMANDS, metavar="command",
                        help="bench: time every kernel family against row length, with a roofline, or a "
                             "suite (--suite); "
                             "bench compare: the ratios of two runs, case by case; "
                             "tune: measure where softmax and log_softmax switch to two-pass here, and keep it")
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] not in (["bench"], ["tune"]):
        # help (exit 0), or no command / an unknown one (usage and error, exit 2): argparse exits.
        # It returns only when the command comes after options, e.g. `softmaxlib -- bench ...`.
        args, rest = _parser().parse_known_args(argv)
        argv = [args.command, *(rest[1:] if rest[:1] == ["--"] else rest)]
    if argv[0] == "tune":
        from . import _tune

        return _tune.tune_command(argv[1:])
    from . import _bench_cli

    return _bench_cli.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())

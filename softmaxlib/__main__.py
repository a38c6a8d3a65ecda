"""The `softmaxlib` command: `softmaxlib bench [options]`, `softmaxlib bench --suite NAME` and
`softmaxlib bench compare A.json B.json` (also `python -m softmaxlib bench ...`);
softmaxlib/_bench_cli.py has the options and the suites.

`softmaxlib --help` (or -h) prints the help and exits with 0; no command, or an unknown one, prints
the usage and an error to stderr and exits with 2, as argparse does."""
import argparse
import sys

USAGE = ("softmaxlib bench [options]\n       softmaxlib bench --suite {crossover,stablemax,quant,peers,latency} "
         "[options]\n       softmaxlib bench compare A.json B.json")


def _parser():
    parser = argparse.ArgumentParser(
        prog="softmaxlib", usage=USAGE,
        description="softmaxlib's command line: benchmarks of its kernels on this machine.",
        epilog="`softmaxlib bench --help` lists the options of a run and the suites; `softmaxlib bench --quick` is "
               "the short run.")
    parser.add_argument("command", choices=["bench"], metavar="command",
                        help="bench: time every kernel family against row length, with a roofline, or a "
                             "suite (--suite); "
                             "bench compare: the ratios of two runs, case by case")
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] != ["bench"]:
        # help (exit 0), or no command / an unknown one (usage and error, exit 2): argparse exits.
        # It returns only when the command comes after options, e.g. `softmaxlib -- bench ...`.
        args, rest = _parser().parse_known_args(argv)
        argv = [args.command, *(rest[1:] if rest[:1] == ["--"] else rest)]
    from . import _bench_cli

    return _bench_cli.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())

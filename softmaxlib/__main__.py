"""The `softmaxlib` command: `softmaxlib bench [options]` and `softmaxlib bench compare A.json B.json`
(also `python -m softmaxlib bench ...`); softmaxlib/_bench_cli.py has the options."""
import sys


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] != "bench":
        print("usage: softmaxlib bench [options]   (softmaxlib bench --help for the options)", file=sys.stderr)
        return 2
    from . import _bench_cli

    return _bench_cli.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())

"""The `softmaxlib` command: `softmaxlib bench [options]` (also `python -m softmaxlib bench`)."""
import sys


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] != "bench":
        print("usage: softmaxlib bench [options]   (softmaxlib bench --help for the options)", file=sys.stderr)
        return 2
    from . import bench

    return bench.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())

"""8-bit block-wise quantize and dequantize per backend against the NumPy reference (absmax, then
searchsorted over the codebook's midpoints), at n = 2^16, 2^20, 2^24 and B = 256, 2048, 4096, in one
process: the table of issue 5.

    python bench/quant_table.py [--repeats 9]

softmaxlib.bench.run_quant does the work (method as `softmaxlib bench`: warm-up, median of repeats,
buffers rotating over more than the last-level cache when one set does not fit: "cold"). The
roofline (cold only) charges quantize 4 bytes read and 1 written per element, dequantize 1 and 4.
"""
import argparse

from softmaxlib import bench


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args(argv)
    bw = bench.bandwidth()
    print(f"bandwidth probe: read {bw.read_gb_s:.1f} GB/s, read+write {bw.read_write_gb_s:.1f} GB/s")
    print(bench.QUANT_HEADER)
    bench.run_quant(repeats=args.repeats, bw=bw, on_result=lambda result: print(bench.format_quant_row(result),
                                                                                  flush=True))


if __name__ == "__main__":
    main()

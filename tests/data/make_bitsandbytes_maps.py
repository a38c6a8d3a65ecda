"""Writes bitsandbytes_0.50.2_maps.npz, the reference codebooks tests/test_quant.py compares with.

    pip install torch==2.13.0 bitsandbytes==0.50.2 && python tests/data/make_bitsandbytes_maps.py

Run once on the development machine (AMD Zen 5, where torch's float32 linspace uses FMA); neither
package is a dependency of softmaxlib. Keys: dynamic_<signed>_<max_exponent_bits>_<total_bits> and
linear_<signed>_<total_bits>_<add_zero>, for the arguments bitsandbytes accepts.
"""
import pathlib

import bitsandbytes.functional as F
import numpy as np

maps = {}
for signed in (True, False):
    for max_exponent_bits, total_bits in ((7, 8), (6, 8), (5, 8), (4, 8), (3, 8), (2, 8), (1, 8), (3, 4), (2, 4),
                                          (4, 5), (7, 7)):
        try:
            code = F.create_dynamic_map(signed=signed, max_exponent_bits=max_exponent_bits, total_bits=total_bits)
        except AssertionError:  # bitsandbytes rejects these arguments
            continue
        maps[f"dynamic_{int(signed)}_{max_exponent_bits}_{total_bits}"] = code.numpy().astype(np.float32)
    for total_bits in (8, 7, 4, 2):
        for add_zero in (True, False):
            code = F.create_linear_map(signed=signed, total_bits=total_bits, add_zero=add_zero)
            maps[f"linear_{int(signed)}_{total_bits}_{int(add_zero)}"] = code.numpy().astype(np.float32)
np.savez(pathlib.Path(__file__).with_name("bitsandbytes_0.50.2_maps.npz"), **maps)

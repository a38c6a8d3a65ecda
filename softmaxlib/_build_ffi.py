"""cffi out-of-line API build of softmaxlib._kernels (named in setup.py's cffi_modules).

Each ISA level is its own translation unit whose code is compiled for that ISA
through a target pragma (csrc/vec_<isa>.h), so the extension as a whole is
built for baseline x86-64: no -march=native, no -ffast-math (it would break
the inf and NaN rules). SOFTMAXLIB_SANITIZE=1 adds AddressSanitizer and
UBSan, for the sanitizer pass of .ci/run.
"""
import os
import pathlib

from cffi import FFI

ROOT = pathlib.Path(__file__).resolve().parent.parent
CSRC = ROOT / "csrc"
SOURCES = ["runtime.c", "three_pass_avx2.c", "three_pass_avx512.c", "two_pass_avx2.c", "two_pass_avx512.c",
           "stablemax_avx2.c", "stablemax_avx512.c", "quant_avx2.c", "quant_avx512.c"]


def _version():
    scope = {}
    exec((ROOT / "softmaxlib" / "_version.py").read_text(), scope)
    return scope["__version__"]


def _compile_args():
    args = ["-O3", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-function"]
    if os.environ.get("SOFTMAXLIB_SANITIZE") == "1":
        args += ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined", "-fno-omit-frame-pointer", "-O1"]
    return args


ffibuilder = FFI()
ffibuilder.cdef((CSRC / "softmaxlib.h").read_text())
ffibuilder.set_source(
    "softmaxlib._kernels",
    '#include <stdint.h>\n#include "softmaxlib.h"\n',
    # Relative paths: setuptools rejects absolute source paths in a build.
    sources=[os.path.relpath(CSRC / name, os.getcwd()) for name in SOURCES],
    include_dirs=[str(CSRC)],
    define_macros=[("SML_VERSION", f'"{_version()}"')],
    extra_compile_args=_compile_args(),
    extra_link_args=["-fsanitize=address,undefined"] if os.environ.get("SOFTMAXLIB_SANITIZE") == "1" else [],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)

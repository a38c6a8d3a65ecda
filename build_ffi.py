"""cffi out-of-line API build of softmaxlib._kernels (named in setup.py's cffi_modules).

The kernels' declarations and the source list come from the catalog (softmaxlib/_catalog.py,
loaded by path: it is standard library only, and the package cannot be imported before it
is built); csrc/softmaxlib.h adds the runtime's declarations and states the contracts.

Each ISA level is its own translation unit whose code is compiled for that ISA
through a target pragma (csrc/vec_<isa>.h), so the extension as a whole is
built for baseline x86-64: no -march=native, no -ffast-math (it would break
the inf and NaN rules). SOFTMAXLIB_SANITIZE=1 adds AddressSanitizer and
UBSan, for the sanitizer pass of .ci/run.
"""
import importlib.util
import os
import pathlib
import sys

from cffi import FFI

ROOT = pathlib.Path(__file__).resolve().parent
CSRC = ROOT / "csrc"


def _catalog():
    spec = importlib.util.spec_from_file_location("softmaxlib_catalog", ROOT / "softmaxlib" / "_catalog.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


catalog = _catalog()
DECLARATIONS = (CSRC / "softmaxlib.h").read_text() + catalog.c_declarations()


def _version():
    scope = {}
    exec((ROOT / "softmaxlib" / "_version.py").read_text(), scope)
    return scope["__version__"]


def _compile_args():
    args = ["-O3", "-std=c11", "-pthread", "-Wall", "-Wextra", "-Wno-unused-function"]
    if os.environ.get("SOFTMAXLIB_SANITIZE") == "1":
        # -O2, not -O1: the kernels force-inline the chunk passes they also hand to the thread pool
        # by pointer, which GCC resolves to direct calls from -O2 up (at -O1 the build fails)
        args += ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined", "-fno-omit-frame-pointer", "-O2"]
    return args


ffibuilder = FFI()
ffibuilder.cdef(DECLARATIONS)
ffibuilder.set_source(
    "softmaxlib._kernels",
    '#include <stdint.h>\n#include "softmaxlib.h"\n' + catalog.c_declarations(),
    # Relative paths: setuptools rejects absolute source paths in a build.
    sources=[os.path.relpath(CSRC / name, os.getcwd()) for name in catalog.c_sources()],
    include_dirs=[str(CSRC)],
    define_macros=[("SML_VERSION", f'"{_version()}"')],
    extra_compile_args=_compile_args(),
    extra_link_args=["-pthread"] + (["-fsanitize=address,undefined"] if os.environ.get("SOFTMAXLIB_SANITIZE") == "1"
                                    else []),
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)

"""Builds the optional C extension; metadata lives in pyproject.toml.

The kernels are x86-64 only. Elsewhere, or where the C part fails to build,
the package installs without it and runs on the Numba backend.
"""
import platform

from setuptools import setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """Marks the cffi extension optional: a compile failure warns instead of aborting."""

    def finalize_options(self):
        super().finalize_options()
        for extension in self.extensions:
            extension.optional = True


X86_64 = platform.machine().lower() in ("x86_64", "amd64")

setup(
    cffi_modules=["build_ffi.py:ffibuilder"] if X86_64 else [],
    cmdclass={"build_ext": OptionalBuildExt},
)

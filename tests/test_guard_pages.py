"""No kernel reads or writes one byte outside its rows: rows placed against PROT_NONE guard pages.

Each buffer is an anonymous mmap laid out as [guard page][data pages][guard page], the guard pages
made PROT_NONE with libc's mprotect. A float32 array is placed to end exactly at the trailing guard
page, or to start exactly after the leading one. Any access past either end kills the process with
SIGSEGV, which fails the run (intended); test_guard_page_faults checks in a subprocess that the
harness really faults, so these tests cannot pass vacuously. Writes before the start of y in the
accessible data pages are caught by a canary fill instead, and x must come out unchanged.
"""
import inspect
import mmap
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import public_function
from softmaxlib import _bindings, _catalog, _dispatch
from zoo import GUARDED_FLOATS, guarded_buffer, place, row_lengths

PAGE = mmap.PAGESIZE
# every length up to 40, and around the loop tiles of the row families (zoo.row_lengths)
LENGTHS = sorted(set(range(1, 41)) | {63, 64, 65, 100, 1000, 4097}
                 | {n for family in ("three_pass", "two_pass", "stablemax") for n in row_lengths(family, long=False)
                    if 0 < n <= 4097})
assert 3 * 4097 <= GUARDED_FLOATS  # the largest array placed: 3 rows of 4097
CANARY = np.float32(-12345.5)


def _check_untouched(area, array, context):
    """Every float of `area` outside `array` still holds the canary."""
    start = (array.ctypes.data - area.ctypes.data) // 4
    outside = np.concatenate([area[:start], area[start + array.size:]])
    assert (outside == CANARY).all(), f"a kernel wrote outside its rows: {context}"


def _rows(rng, rows, n, with_inf):
    x = rng.standard_normal((rows, n)).astype(np.float32) * 4
    if with_inf:  # the scalar path for rows whose max is +inf
        x[:, n // 2] = np.inf
    return x


def _cases():
    for n in LENGTHS:
        for rows in ((1, 3) if n in (1, 7, 16, 17, 33, 40, 4097) else (1,)):
            yield rows, n


PLACEMENTS = [("end", "end"), ("start", "start"), ("end", "start"), ("start", "end")]


def _guarded_run(buffers, rng, operation, backend, call):
    """Runs call(x, y) for every length and placement; checks y against an unguarded run."""
    x_area, y_area = buffers
    kernel = _bindings.bound(operation, backend, np.float32)
    for rows, n in _cases():
        for with_inf in (False, True) if n in (1, 17, 4097) else (False,):
            values = _rows(rng, rows, n, with_inf)
            reference = np.empty_like(values)
            kernel(values, reference)
            for x_where, y_where in PLACEMENTS:
                x = place(x_area, (rows, n), x_where)
                y = place(y_area, (rows, n), y_where)
                x_area[...] = CANARY
                x[...] = values
                y_area[...] = CANARY
                call(x, y)
                context = f"rows={rows}, n={n}, x at {x_where}, y at {y_where}"
                np.testing.assert_array_equal(x, values, err_msg=f"x modified: {context}")
                np.testing.assert_array_equal(y, reference, err_msg=context)
                _check_untouched(y_area, y, context)
                _check_untouched(x_area, x, context)


def test_bound_kernels_stay_within_rows(buffers, row_kernel, backend, rng):
    kernel = _bindings.bound(row_kernel, backend, np.float32)
    _guarded_run(buffers, rng, row_kernel, backend, kernel)


@pytest.mark.parametrize("rows, n", [(3, 0), (0, 5), (1, 0), (0, 0)])
def test_c_kernels_with_empty_rows_touch_nothing(buffers, rows, n, row_kernel, backend):
    """The C contract for zero-size input, with x and y pointing at the first byte of a guard page
    (NumPy cannot place a zero-size view there, so the C function is called with raw pointers)."""
    if backend == "numba":
        pytest.skip("C kernels only")
    x_area, y_area = buffers
    c_function = getattr(_dispatch.lib, _catalog.KERNELS[row_kernel].c_symbol(backend))
    x_end = _dispatch.ffi.cast("float *", x_area.ctypes.data + x_area.nbytes)
    y_end = _dispatch.ffi.cast("float *", y_area.ctypes.data + y_area.nbytes)
    for workers in (1, 2):
        c_function(rows, n, x_end, y_end, workers)
        c_function(rows, n, x_end, x_end, workers)


def test_public_api_with_out_stays_within_rows(buffers, row_kernel, backend, rng):
    function, _ = public_function(row_kernel)

    def call(x, y):
        assert function(x, out=y, backend=backend) is y
        for i in (0, -1):  # 1-D rows too: the first starts at a guard, the last ends at one
            row = y[i]
            assert function(x[i], out=row, backend=backend) is row

    _guarded_run(buffers, rng, row_kernel, backend, call)


@pytest.mark.parametrize("api", ["bound", "public"])
def test_in_place_stays_within_rows(buffers, api, row_kernel, backend, rng):
    x_area, _ = buffers
    kernel = _bindings.bound(row_kernel, backend, np.float32)
    function, _ = public_function(row_kernel)
    for rows, n in _cases():
        values = _rows(rng, rows, n, with_inf=False)
        reference = np.empty_like(values)
        kernel(values, reference)
        for where in ("end", "start"):
            x = place(x_area, (rows, n), where)
            x_area[...] = CANARY
            x[...] = values
            if api == "bound":
                kernel(x, x)
            else:
                assert function(x, out=x, backend=backend) is x
            context = f"in place, rows={rows}, n={n}, at {where}"
            np.testing.assert_array_equal(x, reference, err_msg=context)
            _check_untouched(x_area, x, context)


def test_guard_pages_are_where_the_arrays_end(buffers):
    """The arrays placed really touch the guard pages (the layout, not just the intent)."""
    x_area, _ = buffers
    page_end = x_area.ctypes.data + x_area.nbytes
    for n in (1, 17, 4097):
        at_end = place(x_area, (1, n), "end")
        assert at_end.ctypes.data + at_end.nbytes == page_end and page_end % PAGE == 0
        at_start = place(x_area, (1, n), "start")
        assert at_start.ctypes.data == x_area.ctypes.data and at_start.ctypes.data % PAGE == 0


def _run_python(code):
    env = {key: value for key, value in os.environ.items()
           if key not in ("LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS", "PYTHONFAULTHANDLER")}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("offset, expect_fault", [
    ("len(data)", True),  # the first byte of the trailing guard page
    ("-1", True),  # the last byte of the leading guard page
    ("len(data) - 1", False),  # the last byte of the data: fine
    ("0", False),  # the first byte of the data: fine
])
def test_guard_page_faults(offset, expect_fault):
    """The harness itself: touching a guard page kills a process with SIGSEGV (-11)."""
    code = textwrap.dedent(inspect.getsource(guarded_buffer)) + textwrap.dedent(f"""
        import ctypes
        region, data = guarded_buffer(3 * 4096 + 5)
        address = data.ctypes.data + ({offset})
        print("touching", flush=True)
        ctypes.c_char.from_address(address).value  # read one byte
        ctypes.c_char.from_address(address).value = b"x"  # and write it
        print("survived", flush=True)
    """)
    result = _run_python(code)
    assert "touching" in result.stdout, result.stderr
    if expect_fault:
        assert result.returncode == -11, (result.returncode, result.stdout, result.stderr)
        assert "survived" not in result.stdout
    else:
        assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
        assert "survived" in result.stdout

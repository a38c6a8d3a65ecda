"""The bound calls: one callable per (catalog kernel, backend, dtype), resolved once.

One thin adapter per C signature (softmaxlib/_catalog.py SIGNATURES) passes arrays to the C
kernel; the Numba twins take the same arrays (twin() reshapes rows to the (rows, n) they
need). Callers (softmaxlib/_api.py, quant.py) pass arrays the kernel can take as they are:
C-contiguous, of the kernel's dtype, outputs writable (the public functions check the user's
`out=`); row kernels take rows along the last axis, of any number of dimensions; quantization
kernels take flat arrays. Nothing is checked here but the alignment: NumPy arrays may start at
any byte, C reads a float only at a multiple of 4, so the rare misaligned array is passed as an
aligned copy (_run_realigned).
"""
import copy
import importlib
import inspect
import weakref

import numpy as np

from . import _catalog, _dispatch

BACKENDS = _dispatch.ALL_BACKENDS
DTYPE_CODES = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}

# cffi passes a buffer only to a parameter of its own pointer type; the types, looked up once
if _dispatch.ffi is not None:
    FLOATS, DOUBLES, BYTES, INT32S, INT64S = map(_dispatch.ffi.typeof, (
        "float[]", "double[]", "uint8_t[]", "int32_t[]", "int64_t[]"))


def _run_realigned(run, arguments, outputs):
    """run(*arguments) with every misaligned array replaced by an aligned copy, and the outputs
    (indices into arguments, which may also be inputs) copied back; returns run's result. Such
    arrays are rare, so a copy costs less than a second code path (and non-temporal stores need
    aligned floats)."""
    arguments = list(arguments)
    given = {index: arguments[index] for index in outputs}
    for index, argument in enumerate(arguments):
        if isinstance(argument, np.ndarray) and not argument.flags.aligned:
            arguments[index] = argument.copy()
    result = run(*arguments)
    for index, output in given.items():
        if arguments[index] is not output:
            output[...] = arguments[index]
    return result


def row_functions(kernel, backend):
    """(C function, its streaming version) of a row kernel on an ISA backend; the function itself
    twice when it has none. Above STREAM_ABOVE_BYTES of output the second runs."""
    c_function = getattr(_dispatch.lib, kernel.c_symbol(backend))
    return c_function, getattr(_dispatch.lib, kernel.c_symbol(backend, streaming=True)) if kernel.streaming \
        else c_function


def _rows(kernel, backend):
    c_function, c_streaming = row_functions(kernel, backend)
    stream_above = _dispatch.STREAM_ABOVE_BYTES
    from_buffer = _dispatch.ffi.from_buffer

    def run(x, y, workers=1):
        if not (x.flags.aligned and y.flags.aligned):
            return _run_realigned(run, (x, y, workers), outputs=(1,))
        n = x.shape[-1]
        function = c_streaming if y.nbytes > stream_above else c_function
        function(x.size // n if n else 0, n, from_buffer(FLOATS, x), from_buffer(FLOATS, y), workers)

    return run


def _pair(kernel, backend):
    c_function = getattr(_dispatch.lib, kernel.c_symbol(backend))
    from_buffer = _dispatch.ffi.from_buffer

    def run(x, mantissa, exponent, workers=1):
        if not (x.flags.aligned and mantissa.flags.aligned and exponent.flags.aligned):
            return _run_realigned(run, (x, mantissa, exponent, workers), outputs=(1, 2))
        n = x.shape[-1]
        c_function(x.size // n if n else mantissa.size, n, from_buffer(FLOATS, x), from_buffer(DOUBLES, mantissa),
                   from_buffer(DOUBLES, exponent), workers)

    return run


def _loss(kernel, backend):
    c_function = getattr(_dispatch.lib, kernel.c_symbol(backend))
    ffi = _dispatch.ffi

    def run(x, labels, ignore_index, grad_scale, losses, grad, workers=1):
        if not all(a is None or a.flags.aligned for a in (x, labels, losses, grad)):
            return _run_realigned(run, (x, labels, ignore_index, grad_scale, losses, grad, workers), outputs=(4, 5))
        c_function(losses.size, x.shape[-1], ffi.from_buffer(FLOATS, x), ffi.from_buffer(INT64S, labels),
                   ignore_index, grad_scale, ffi.from_buffer(DOUBLES, losses),
                   ffi.NULL if grad is None else ffi.from_buffer(FLOATS, grad), workers)

    return run


def _map(kernel, backend):
    c_function = getattr(_dispatch.lib, kernel.c_symbol(backend))
    from_buffer = _dispatch.ffi.from_buffer

    def run(t, e):
        if not (t.flags.aligned and e.flags.aligned):
            return _run_realigned(run, (t, e), outputs=(1,))
        c_function(t.size, from_buffer(FLOATS, t), from_buffer(FLOATS, e))

    return run


def _tables(ffi, tables):
    """The arguments of a codebook's search tables (softmaxlib/_codebooks.py builds them aligned)."""
    return ffi.from_buffer(INT32S, tables.table), ffi.from_buffer(FLOATS, tables.midpoints), \
        int(tables.single_compare), tables.zero_code


def _codes(kernel, backend):
    c_function = getattr(_dispatch.lib, kernel.c_symbol(backend))
    ffi = _dispatch.ffi

    def run(y, tables, q):
        if not y.flags.aligned:
            return _run_realigned(run, (y, tables, q), outputs=(2,))
        c_function(y.size, ffi.from_buffer(FLOATS, y), *_tables(ffi, tables), ffi.from_buffer(BYTES, q))

    return run


def _quantize(kernel, backend):
    c_function = getattr(_dispatch.lib, kernel.c_symbol(backend))
    ffi = _dispatch.ffi

    def run(x, blocksize, tables, q, absmax, workers=1):
        if not (x.flags.aligned and absmax.flags.aligned):
            return _run_realigned(run, (x, blocksize, tables, q, absmax, workers), outputs=(3, 4))
        c_function(x.size, ffi.from_buffer(FLOATS, x), blocksize, *_tables(ffi, tables), ffi.from_buffer(BYTES, q),
                   ffi.from_buffer(FLOATS, absmax), workers)

    return run


def _dequantize(kernel, backend):
    c_function = getattr(_dispatch.lib, kernel.c_symbol(backend))
    from_buffer = _dispatch.ffi.from_buffer
    stream_above = _dispatch.STREAM_ABOVE_BYTES  # as the two-pass kernels

    def run(q, absmax, blocksize, code, out, workers=1):
        if not (absmax.flags.aligned and code.flags.aligned and out.flags.aligned):
            return _run_realigned(run, (q, absmax, blocksize, code, out, workers), outputs=(4,))
        c_function(q.size, from_buffer(BYTES, q), from_buffer(FLOATS, absmax), blocksize, from_buffer(FLOATS, code),
                   from_buffer(FLOATS, out), int(out.nbytes > stream_above), workers)

    return run


def _run_on_aligned_state(run, p, g, state, constants, workers, floats):
    """run() on a copy of `state` whose float arrays (`floats`, some misaligned: a state may share
    any arrays) are aligned copies, the absmax arrays copied back."""
    aligned = copy.copy(state)
    for name in floats:
        setattr(aligned, name, getattr(state, name).copy())
    skipped = run(p, g, aligned, constants, workers)
    for name in floats:
        if name.startswith("absmax"):
            getattr(state, name)[...] = getattr(aligned, name)
    return skipped


def _optim(kernel, backend):
    c_function = getattr(_dispatch.lib, kernel.c_symbol(backend))
    ffi = _dispatch.ffi

    def run(p, g, state, constants, workers=1):
        """One step on p (updated in place) and `state` (a softmaxlib.optim.State8bit) with the
        step's constants; returns the skipped count."""
        if not (p.flags.aligned and g.flags.aligned):
            return _run_realigned(run, (p, g, state, constants, workers), outputs=(0,))
        arguments = state_arguments.get(state)
        if arguments is None:  # a new state: checked once (its arrays never change), then its arguments kept
            floats = [name for name in ("absmax1", "map1", "absmax2", "map2") if getattr(state, name) is not None]
            if not all(getattr(state, name).flags.aligned for name in floats):
                return _run_on_aligned_state(run, p, g, state, constants, workers, floats)
            arguments = state_arguments[state] = _state_arguments(ffi, state)
        skipped = ffi.new("int64_t *")
        c_function(p.size, ffi.from_buffer(FLOATS, p), ffi.from_buffer(FLOATS, g), *arguments,
                   ffi.new("struct sml_optim_step *", constants._asdict()), skipped, workers)
        return int(skipped[0])

    # A state's arrays never change (the torch optimizers step the same State8bit every time): their
    # C arguments are made once per state (a torch step of 100 parameters of 4096 took 33 us per
    # parameter with them made on every call, 24 without)
    state_arguments = weakref.WeakKeyDictionary()
    return run


def _state_arguments(ffi, state):
    """The C arguments of an optimizer step from blocksize to zero_code2 (csrc/softmaxlib.h)."""
    one = state.codes2 is None
    first, last = state.tables[0], state.tables[-1]
    return (state.blocksize, ffi.from_buffer(BYTES, state.codes1), ffi.from_buffer(FLOATS, state.absmax1),
            ffi.from_buffer(FLOATS, state.map1), ffi.from_buffer(INT32S, first.table), first.zero_code,
            ffi.NULL if one else ffi.from_buffer(BYTES, state.codes2),
            ffi.NULL if one else ffi.from_buffer(FLOATS, state.absmax2),
            ffi.NULL if one else ffi.from_buffer(FLOATS, state.map2), ffi.from_buffer(INT32S, last.table),
            last.zero_code)


# The signatures whose C kernels take a thread count (csrc/pool.h): their bound calls take it as a last
# argument, `workers` (default 1; the Numba twins run on the calling thread and ignore it).
WITH_WORKERS = ("rows", "pair", "loss", "quantize", "dequantize", "optim")

ADAPTERS = {"rows": _rows, "pair": _pair, "loss": _loss, "map": _map, "codes": _codes, "quantize": _quantize,
            "dequantize": _dequantize, "optim": _optim}


def twin(kernel, dtype):
    """The Numba twin of a kernel for a dtype code (imports Numba on first use)."""
    module = importlib.import_module(f"{__package__}._numba.{kernel.family}")
    function = getattr(module, kernel.twin_name(dtype))
    if kernel.signature == "rows":
        def run(x, y, workers=1):  # the twins take (rows, n) arrays
            n = x.shape[-1]
            function(x.reshape(-1, n), y.reshape(-1, n))
    elif kernel.signature == "pair":
        def run(x, mantissa, exponent, workers=1):  # (rows, n) and (rows,) arrays
            function(x.reshape(mantissa.size, x.shape[-1]), mantissa.reshape(-1), exponent.reshape(-1))
    elif kernel.signature in WITH_WORKERS:
        arity = len(inspect.signature(function).parameters)  # the bound call's arguments but `workers`

        def run(*arguments):  # without the C kernel's workers, if given
            return function(*arguments[:arity])
    else:
        return function
    return run


_BOUND = {}


def bound(kernel_id, backend, dtype=None):
    """The callable of catalog kernel `kernel_id` on a usable backend, for a dtype (np.float32,
    np.float64 or a catalog dtype code; default the kernel's own). Dtypes without a C kernel
    (float64) run the Numba twin on every backend."""
    key = (kernel_id, backend, dtype)
    call = _BOUND.get(key)
    if call is None:
        kernel = _catalog.KERNELS[kernel_id]
        code = kernel.dtype if dtype is None else dtype if isinstance(dtype, str) else DTYPE_CODES[np.dtype(dtype)]
        if backend == "numba" or code != kernel.dtype:
            call = twin(kernel, code)
        else:
            call = ADAPTERS[kernel.signature](kernel, backend)
        _BOUND[key] = call
    return call


def tiles(family, isa):
    """The loop tiles of a family's C kernels on an ISA, in elements (csrc/tiles.h)."""
    tile = getattr(_dispatch.lib, _catalog.tile_symbol(family, isa))
    sizes = []
    while tile(len(sizes)):
        sizes.append(tile(len(sizes)))
    return sizes

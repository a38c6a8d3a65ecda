"""8-bit block-wise quantization with dynamic codebooks (Dettmers et al., 2021, "8-bit Optimizers
via Block-wise Quantization"), with bitsandbytes' codebooks and layout, and exact codes.

    q, state = quantize_blockwise(x)            # uint8 codes of x's shape, and a QuantState
    x_hat = dequantize_blockwise(q, state)      # code[q] * absmax, float32 (or state.dtype)

x is flattened in C order (whatever its layout) and cut into blocks of `blocksize` elements; the
last block may be partial. Per block, absmax = max |x| over its elements (float32); each element
becomes the index of the code nearest to x * (1/absmax) (a float32 reciprocal, then a multiply),
ties to the lower index; an all-zero block has absmax 0 and every element the map's zero code.
Dequantizing gives code[q] * absmax in float32, so exact zeros come back as exactly 0.

Non-finite input: by default a NaN or inf raises ValueError naming the first one. With
nonfinite="propagate", the block's absmax becomes NaN (a NaN in the block) or inf, the block's
codes are the zero code where x * (1/absmax) is NaN, and the whole block dequantizes to NaN (a
non-finite absmax dequantizes its block to NaN, whatever the codes).

Input of any byte order is accepted; the state's dtype, and so the dequantized array, is the
native one. A QuantState is checked when it is built (docs/quant.md lists the rules).
"""
import math
import operator
from dataclasses import dataclass

import numpy as np

from . import _bindings, _catalog, _codebooks, _dispatch, _threads
from ._codebooks import create_dynamic_map, create_linear_map

__all__ = ["QuantState", "create_dynamic_map", "create_linear_map", "dequantize_blockwise", "quantize_blockwise"]

MIN_BLOCKSIZE = 16
MAX_BLOCKSIZE = 1 << 24
NONFINITE = ("raise", "propagate")
INPUT_DTYPES = (np.float16, np.float32, np.float64)
_NATIVE_FLOAT_DTYPES = {np.dtype(d): np.dtype(d) for d in INPUT_DTYPES}


def _native_float_dtype(dtype):
    """float16, float32 or float64 in native byte order (NumPy's own dtype object), for any byte
    order of them (results are native, as softmax's); None for any other dtype."""
    if dtype.kind != "f":
        return None
    return _NATIVE_FLOAT_DTYPES.get(dtype.newbyteorder("="))


def _exactly_float32(values, name):
    """values as a C-contiguous float32 array. Other floating dtypes are converted only when
    float32 holds every value exactly (NaN included): rounding would make dequantize compute
    with other numbers than the state's."""
    array = np.asarray(values)
    if array.dtype.kind != "f":
        raise TypeError(f"the state's {name} must be a float32 array, not dtype {array.dtype}")
    with np.errstate(over="ignore"):
        converted = np.ascontiguousarray(array, dtype=np.float32)
    lost = (converted != array) & ~(np.isnan(converted) & np.isnan(array))
    if lost.any():
        where = np.unravel_index(int(np.flatnonzero(lost)[0]), array.shape)
        raise ValueError(f"the state's {name} must be float32: {name}[{', '.join(map(str, where))}] = "
                         f"{array[where]} ({array.dtype}) is not a float32 value")
    return converted


def _check_shape(shape):
    try:
        dims = tuple(operator.index(d) for d in shape)
    except TypeError:
        raise TypeError(f"the state's shape must be a tuple of integers, not {shape!r}") from None
    if any(d < 0 for d in dims):
        raise ValueError(f"the state's shape must hold non-negative integers, not {dims}")
    return dims


@dataclass(frozen=True)
class QuantState:
    """What dequantize_blockwise needs besides the codes: absmax (float32, one per block), the
    codebook (256 float32), the block size, and the shape and dtype of the quantized array.

    Checked and normalized when built, so that every state the kernels see is valid: absmax
    and code of another floating dtype are converted to float32 if that is exact (else
    ValueError), absmax must have one value per block, each >= 0 (inf included) or NaN; code must be 256
    finite sorted values; dtype float16, float32 or float64, of any byte order (stored native).
    A frozen dataclass; quantize_blockwise() returns one.

    Parameters
    ----------
    absmax : array_like
        max |x| per block: float32 (or another floating dtype holding float32 values exactly),
        of shape (ceil(size / blocksize),), each >= 0 (inf included) or NaN.
    code : array_like
        The codebook: 256 finite sorted values, float32 (or exactly float32).
    blocksize : int
        Elements per block, 16 to 2^24.
    shape : tuple of int
        The shape of the quantized array (non-negative integers).
    dtype : dtype_like
        float16, float32 or float64, of any byte order (stored native): the dtype that
        dequantize_blockwise() returns.

    Attributes
    ----------
    absmax, code, blocksize, shape, dtype
        The normalized fields: C-contiguous float32 arrays, an int, a tuple of ints, a native
        NumPy dtype.
    size : int
        The number of elements, the product of `shape`.

    Raises
    ------
    TypeError
        For an absmax or code that is not a floating array, or a shape that is not a tuple of
        integers.
    ValueError
        For a dtype other than float16, float32 or float64; a negative dimension; a
        blocksize that is not an integer from 16 to 2^24; a code that is not 256 finite sorted
        values; an absmax of the wrong shape, with a negative value, or of values that are
        not float32 ones.

    Examples
    --------
    >>> import numpy as np
    >>> from softmaxlib import quant
    >>> state = quant.QuantState(absmax=np.array([2.0]), code=quant.create_linear_map(), blocksize=16,
    ...                          shape=(4, 4), dtype="float32")
    >>> state.absmax, state.dtype, state.size
    (array([2.], dtype=float32), dtype('float32'), 16)
    >>> quant.QuantState(absmax=np.array([2.0, 1.0]), code=quant.create_linear_map(), blocksize=16,
    ...                  shape=(4, 4), dtype="float32")
    Traceback (most recent call last):
        ...
    ValueError: absmax has shape (2,), but 16 elements in blocks of 16 need (1,)
    """

    absmax: np.ndarray
    code: np.ndarray
    blocksize: int
    shape: tuple
    dtype: np.dtype

    def __post_init__(self):
        try:
            dtype = _native_float_dtype(np.dtype(self.dtype))
        except TypeError:
            dtype = None
        if dtype is None:
            raise ValueError(f"a QuantState's dtype is float16, float32 or float64, not {self.dtype!r}")
        shape = _check_shape(self.shape)
        blocksize = _check_blocksize(self.blocksize)
        _codebooks.check_code(self.code)  # a floating array of 256 finite sorted values
        code = _exactly_float32(self.code, "code")
        absmax = np.asarray(self.absmax)
        size = math.prod(shape)
        expected = -(-size // blocksize)
        if absmax.shape != (expected,):
            raise ValueError(f"absmax has shape {absmax.shape}, but {size} elements in blocks of {blocksize} "
                             f"need ({expected},)")
        absmax = _exactly_float32(absmax, "absmax")
        if (absmax < 0).any():
            where = int(np.flatnonzero(absmax < 0)[0])
            raise ValueError(f"absmax holds max |x| per block (>= 0, or NaN), but absmax[{where}] = "
                             f"{absmax[where]}")
        for name, value in (("absmax", absmax), ("code", code), ("blocksize", blocksize), ("shape", shape),
                            ("dtype", dtype)):
            object.__setattr__(self, name, value)  # frozen: the normalized fields replace the given ones

    @classmethod
    def _of_valid_fields(cls, **fields):
        """A state of fields valid by construction (quantize_blockwise's), without __init__'s
        checks: they would take longer than quantizing a thousand elements."""
        state = object.__new__(cls)
        state.__dict__.update(fields)  # frozen: past __setattr__, one update rather than one call per field
        return state

    @property
    def size(self):
        return math.prod(self.shape)

    def as_dict(self):
        """Plain NumPy arrays (for np.savez); from_dict() takes them back.

        Returns
        -------
        dict
            "absmax" and "code" (float32 arrays), "blocksize" (int64), "shape" (an int64
            array) and "dtype" (the dtype's string, e.g. "<f4").

        Examples
        --------
        >>> import numpy as np
        >>> from softmaxlib import quant
        >>> q, state = quant.quantize_blockwise(np.ones(16, np.float32), blocksize=16)
        >>> arrays = state.as_dict()
        >>> sorted(arrays)
        ['absmax', 'blocksize', 'code', 'dtype', 'shape']
        >>> arrays["shape"]
        array([16])
        """
        return {"absmax": self.absmax, "code": self.code, "blocksize": np.int64(self.blocksize),
                "shape": np.array(self.shape, dtype=np.int64), "dtype": np.str_(np.dtype(self.dtype).str)}

    @classmethod
    def from_dict(cls, state):
        """The QuantState of as_dict()'s arrays (or np.load of them), checked as any QuantState.

        Parameters
        ----------
        state : mapping
            The arrays of as_dict(): "absmax", "code", "blocksize", "shape" and "dtype" (other
            keys are ignored), e.g. an np.load of an np.savez of them.

        Returns
        -------
        QuantState

        Raises
        ------
        ValueError
            For a missing key; TypeError and ValueError as QuantState() for invalid fields.

        Examples
        --------
        >>> import io
        >>> import numpy as np
        >>> from softmaxlib import quant
        >>> q, state = quant.quantize_blockwise(np.ones((4, 4), np.float32), blocksize=16)
        >>> file = io.BytesIO()
        >>> np.savez(file, **state.as_dict())
        >>> _ = file.seek(0)
        >>> loaded = quant.QuantState.from_dict(np.load(file))
        >>> loaded.shape, loaded.blocksize, loaded.dtype
        ((4, 4), 16, dtype('float32'))
        >>> quant.dequantize_blockwise(q, loaded)[0]
        array([1., 1., 1., 1.], dtype=float32)
        """
        missing = {"absmax", "code", "blocksize", "shape", "dtype"} - set(state)
        if missing:
            raise ValueError(f"a QuantState needs {', '.join(sorted(missing))}")
        return cls(absmax=state["absmax"], code=state["code"], blocksize=np.asarray(state["blocksize"]).item(),
                   shape=tuple(np.asarray(state["shape"]).reshape(-1)), dtype=str(np.asarray(state["dtype"])))


def _check_blocksize(blocksize):
    if isinstance(blocksize, (bool, np.bool_)):
        raise ValueError(f"blocksize must be an integer from {MIN_BLOCKSIZE} to {MAX_BLOCKSIZE}, not {blocksize!r}")
    try:
        value = operator.index(blocksize)
    except TypeError:
        raise ValueError(f"blocksize must be an integer from {MIN_BLOCKSIZE} to {MAX_BLOCKSIZE}, "
                         f"not {blocksize!r}") from None
    if not MIN_BLOCKSIZE <= value <= MAX_BLOCKSIZE:
        raise ValueError(f"blocksize must be an integer from {MIN_BLOCKSIZE} to {MAX_BLOCKSIZE}, not {value}")
    return value


def _writable_out(out, name, shape, dtype):
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array, not {type(out).__name__}")
    if out.shape != shape or out.dtype != dtype:
        raise ValueError(f"{name} must have shape {shape} and dtype {np.dtype(dtype)}, "
                         f"not shape {out.shape} and dtype {out.dtype}")
    if not out.flags.writeable:
        raise ValueError(f"{name} is read-only; it must be writable")
    return out


# The default codebook and its search tables, built once (a few ms) for both paths; every state
# gets its own copy of the codebook.
_DEFAULT_CODE = create_dynamic_map()
_DEFAULT_TABLES = _codebooks.search_tables(_DEFAULT_CODE)


def _fast_quantizer():
    """f(x, blocksize, nonfinite, workers): quantize_blockwise's result for the common case, else None.

    The common case: an ndarray of native float32, C-contiguous and aligned, not empty, with the
    default codebook, an int blocksize in range, no out= and no backend=, and finite (or
    nonfinite="propagate"). It calls the default backend's C kernel, bound once with the default
    map's tables, and skips the general path's conversions (several microseconds on 4096
    elements, more than the kernel)."""
    backend = _dispatch.DEFAULT_BACKEND
    if backend == "numba":
        return lambda x, blocksize, nonfinite, workers: None
    ffi = _dispatch.ffi
    kernel = getattr(_dispatch.lib, _catalog.KERNELS["quantize_blockwise"].c_symbol(backend))
    tables = _DEFAULT_TABLES  # it stays alive, and so do its buffers
    table_arguments = (ffi.from_buffer(_bindings.INT32S, tables.table),
                       ffi.from_buffer(_bindings.FLOATS, tables.midpoints), int(tables.single_compare),
                       tables.zero_code)
    floats, uint8s, from_buffer, ndarray, empty, float32 = \
        _bindings.FLOATS, _bindings.BYTES, ffi.from_buffer, np.ndarray, np.empty, np.dtype(np.float32)

    default_threads, resolve_workers = _threads.DEFAULT, _threads.resolve

    def fast(x, blocksize, nonfinite, workers):
        if type(x) is not ndarray or x.dtype is not float32 or type(blocksize) is not int or \
                not MIN_BLOCKSIZE <= blocksize <= MAX_BLOCKSIZE or nonfinite not in NONFINITE:
            return None
        flags = x.flags
        size = x.size
        if not (flags.c_contiguous and flags.aligned and size):
            return None
        q = empty(x.shape, np.uint8)
        absmax = empty(-(-size // blocksize), np.float32)
        kernel(size, from_buffer(floats, x), blocksize, *table_arguments, from_buffer(uint8s, q),
               from_buffer(floats, absmax), default_threads[0] if workers is None else resolve_workers(workers))
        # a NaN or inf: the general path says which. One block, the common case, is read as a
        # scalar (a NumPy reduction costs about 1 us); several are summed in float64, which no
        # finite absmax can overflow
        if nonfinite != "propagate" and not math.isfinite(absmax[0] if len(absmax) == 1 else
                                                           absmax.sum(dtype=np.float64)):
            return None
        return q, QuantState._of_valid_fields(absmax=absmax, code=_DEFAULT_CODE.copy(), blocksize=blocksize,
                                              shape=x.shape, dtype=float32)

    return fast


_fast_quantize = _fast_quantizer()
_DEQUANTIZE = _bindings.bound("dequantize_blockwise", _dispatch.DEFAULT_BACKEND)
_UINT8, _FLOAT32 = np.dtype(np.uint8), np.dtype(np.float32)


def quantize_blockwise(x, code=None, *, blocksize=4096, out=None, absmax_out=None, nonfinite="raise",
                       backend=None, workers=None):
    """(q, state): uint8 codes of x's shape and the QuantState to dequantize them.

    x is flattened in C order and cut into blocks of `blocksize` elements (the last may be
    partial); each element becomes the index of the code nearest to x * (1/absmax) of its
    block, ties to the lower index (the module's docstring gives the details).

    Parameters
    ----------
    x : array_like
        float16, float32 or float64 of any byte order (computed from its float32 values; the
        state's dtype is the native one).
    code : array_like, optional
        A sorted codebook of 256 finite values (default: create_dynamic_map()).
    blocksize : int, optional
        16 to 2^24 elements (default: 4096).
    out : ndarray, optional
        A preallocated, writable uint8 array of x's shape for the codes.
    absmax_out : ndarray, optional
        A preallocated, writable float32 array of ceil(n / blocksize) values for absmax.
    nonfinite : {"raise", "propagate"}, optional
        "raise" (the default): ValueError at the first NaN or inf; "propagate": a block with a
        NaN or inf gets an absmax of NaN or inf and dequantizes to NaN.
    backend : {"avx512", "avx2", "numba"}, optional
        As softmax.
    workers : int, optional
        The most threads to use: None for the library default (softmaxlib.get_num_threads()),
        -1 for every available core, k >= 1 for at most k. Blocks are shared among the threads;
        small inputs run on one. The result is the same whatever the value (docs/threading.md).

    Returns
    -------
    q : ndarray
        The uint8 codes, of x's shape; `out` if given.
    state : QuantState
        absmax (`absmax_out`, or its contiguous copy, if given), code, blocksize, x's shape
        and native dtype.

    Raises
    ------
    TypeError
        For x of another dtype than float16, float32 or float64; a code that is not a floating
        array; an `out` or `absmax_out` that is not a NumPy array.
    ValueError
        For a blocksize that is not an integer from 16 to 2^24; an unknown nonfinite; a code
        that is not 256 finite sorted values; an `out` or `absmax_out` of the wrong shape or
        dtype, or read-only; an unknown or unusable backend; a NaN or inf in x with
        nonfinite="raise".

    Examples
    --------
    >>> import numpy as np
    >>> from softmaxlib import quant
    >>> x = np.array([[0, 1, -2, 4]] * 4, np.float32)
    >>> q, state = quant.quantize_blockwise(x, blocksize=16)
    >>> q
    array([[127, 201,  35, 255],
           [127, 201,  35, 255],
           [127, 201,  35, 255],
           [127, 201,  35, 255]], dtype=uint8)
    >>> state.absmax
    array([4.], dtype=float32)
    >>> quant.quantize_blockwise(np.array([1, np.nan] * 8, np.float32), blocksize=16)
    Traceback (most recent call last):
        ...
    ValueError: x[1] is nan: quantize_blockwise needs finite input (or nonfinite='propagate')
    """
    if backend is None and code is None and out is None and absmax_out is None:
        result = _fast_quantize(x, blocksize, nonfinite, workers)
        if result is not None:
            return result
    backend = _dispatch.resolve(backend)
    threads = _threads.resolve(workers)
    blocksize = _check_blocksize(blocksize)
    if nonfinite not in NONFINITE:
        raise ValueError(f"nonfinite must be one of {', '.join(map(repr, NONFINITE))}, not {nonfinite!r}")
    default = code is None
    code = _DEFAULT_CODE.copy() if default else _codebooks.check_code(code)
    x = np.asarray(x)
    dtype = _native_float_dtype(x.dtype)
    if dtype is None:
        raise TypeError(f"quantize_blockwise takes float16, float32 or float64 input (any byte order), "
                        f"not dtype {x.dtype}")
    flat = np.ascontiguousarray(x.reshape(-1), dtype=np.float32)  # C order and native, whatever x's layout
    blocks = -(-flat.size // blocksize)
    q = np.empty(x.shape, np.uint8) if out is None else _writable_out(out, "out", x.shape, np.uint8)
    absmax = np.empty(blocks, np.float32) if absmax_out is None else \
        _writable_out(absmax_out, "absmax_out", (blocks,), np.float32)
    # The kernels write contiguous arrays: a non-contiguous out gets the result copied in.
    q_flat = q.reshape(-1) if q.flags.c_contiguous else np.empty(flat.size, np.uint8)
    absmax_flat = absmax if absmax.flags.c_contiguous else np.empty(blocks, np.float32)
    if flat.size:
        tables = _DEFAULT_TABLES if default else _codebooks.search_tables(code)
        _bindings.bound("quantize_blockwise", backend)(flat, blocksize, tables, q_flat, absmax_flat, threads)
        if nonfinite == "raise" and not np.isfinite(absmax_flat).all():
            first = int(np.flatnonzero(~np.isfinite(flat))[0])
            index = np.unravel_index(first, x.shape) if x.ndim else ()
            raise ValueError(f"x[{', '.join(map(str, index))}] is {flat[first]}: quantize_blockwise needs finite "
                             f"input (or nonfinite='propagate')")
    if not q.flags.c_contiguous:
        q[...] = q_flat.reshape(x.shape)
    if absmax_flat is not absmax:
        absmax[...] = absmax_flat
    # absmax_flat: absmax, or its contiguous copy when absmax_out is not contiguous (the kernels
    # read the state's absmax as one buffer)
    return q, QuantState._of_valid_fields(absmax=absmax_flat, code=code, blocksize=blocksize, shape=x.shape,
                                          dtype=dtype)


def dequantize_blockwise(q, state, *, out=None, backend=None, workers=None):
    """code[q] * absmax per block: float32, or state.dtype (rounded from float32) if it is not.

    NaN over a block whose absmax is NaN or inf. The state was checked when it was built.

    Parameters
    ----------
    q : array_like
        uint8 codes, state.size of them (any shape; read in C order).
    state : QuantState
        The state quantize_blockwise() returned with q (or one built, or from_dict()).
    out : ndarray, optional
        A writable array of state.shape and state.dtype to write into.
    backend : {"avx512", "avx2", "numba"}, optional
        As softmax.
    workers : int, optional
        As quantize_blockwise().

    Returns
    -------
    ndarray
        The dequantized values, of state.shape and state.dtype; `out` if given.

    Raises
    ------
    TypeError
        For a state that is not a QuantState, q that is not uint8, or an `out` that is not a
        NumPy array.
    ValueError
        For q of another size than the state's; an `out` of the wrong shape or dtype, or
        read-only; an unknown or unusable backend.

    Examples
    --------
    >>> import numpy as np
    >>> from softmaxlib import quant
    >>> x = np.array([[0, 1, -2, 4]] * 4, np.float32)
    >>> q, state = quant.quantize_blockwise(x, blocksize=16)
    >>> quant.dequantize_blockwise(q, state)
    array([[ 0.        ,  0.99062496, -2.003125  ,  4.        ],
           [ 0.        ,  0.99062496, -2.003125  ,  4.        ],
           [ 0.        ,  0.99062496, -2.003125  ,  4.        ],
           [ 0.        ,  0.99062496, -2.003125  ,  4.        ]], dtype=float32)
    """
    if backend is None and out is None and type(q) is np.ndarray and q.dtype is _UINT8 and \
            type(state) is QuantState and state.dtype is _FLOAT32 and q.flags.c_contiguous and q.size == state.size:
        # the common case: straight to the default backend's kernel, bound once
        result = np.empty(state.shape, np.float32)
        if q.size:
            # flat arrays, as every quantization kernel takes them (the Numba twin indexes them flat)
            _DEQUANTIZE(q.reshape(-1), state.absmax, state.blocksize, state.code, result.reshape(-1),
                        _threads.resolve(workers))
        return result
    backend = _dispatch.resolve(backend)
    threads = _threads.resolve(workers)
    if not isinstance(state, QuantState):
        raise TypeError(f"state must be a QuantState, not {type(state).__name__}")
    q = np.asarray(q)
    if q.dtype != np.uint8:
        raise TypeError(f"q must be uint8 codes, not dtype {q.dtype}")
    if q.size != state.size:
        raise ValueError(f"q has {q.size} elements, but the state describes {state.size} (shape {state.shape})")
    dtype = state.dtype
    result = np.empty(state.shape, dtype) if out is None else _writable_out(out, "out", state.shape, dtype)
    direct = dtype == np.float32 and result.flags.c_contiguous
    values = result.reshape(-1) if direct else np.empty(q.size, np.float32)
    if q.size:
        _bindings.bound("dequantize_blockwise", backend)(
            np.ascontiguousarray(q.reshape(-1)), state.absmax, state.blocksize, state.code, values, threads)
    if not direct:
        result[...] = values.reshape(state.shape)
    return result

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

from . import _bindings, _catalog, _codebooks, _dispatch
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
        for name, value in fields.items():
            object.__setattr__(state, name, value)
        return state

    @property
    def size(self):
        return math.prod(self.shape)

    def as_dict(self):
        """Plain NumPy arrays (for np.savez); from_dict() takes them back."""
        return {"absmax": self.absmax, "code": self.code, "blocksize": np.int64(self.blocksize),
                "shape": np.array(self.shape, dtype=np.int64), "dtype": np.str_(np.dtype(self.dtype).str)}

    @classmethod
    def from_dict(cls, state):
        """The QuantState of as_dict()'s arrays (or np.load of them), checked as any QuantState."""
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


def _fast_quantizer():
    """f(x, blocksize, nonfinite): quantize_blockwise's result for the common case, else None.

    The common case: an ndarray of native float32, C-contiguous and aligned, not empty, with the
    default codebook, an int blocksize in range, no out= and no backend=, and finite (or
    nonfinite="propagate"). It calls the default backend's C kernel, bound once with the default
    map's tables, and skips the general path's conversions (several microseconds on 4096
    elements, more than the kernel)."""
    backend = _dispatch.DEFAULT_BACKEND
    if backend == "numba":
        return lambda x, blocksize, nonfinite: None
    ffi = _dispatch.ffi
    kernel = getattr(_dispatch.lib, _catalog.KERNELS["quantize_blockwise"].c_symbol(backend))
    default_code = create_dynamic_map()
    tables = _codebooks.search_tables(default_code)  # cached: it stays alive, and so do its buffers
    table_arguments = (ffi.from_buffer(_bindings.INT32S, tables.table), ffi.from_buffer(_bindings.FLOATS, tables.midpoints),
                       int(tables.single_compare), tables.zero_code)
    floats, uint8s, from_buffer, ndarray, empty, float32 = \
        _bindings.FLOATS, _bindings.BYTES, ffi.from_buffer, np.ndarray, np.empty, np.dtype(np.float32)

    def fast(x, blocksize, nonfinite):
        if type(x) is not ndarray or x.dtype is not float32 or type(blocksize) is not int or \
                not MIN_BLOCKSIZE <= blocksize <= MAX_BLOCKSIZE:
            return None
        flags = x.flags
        size = x.size
        if not (flags.c_contiguous and flags.aligned and size):
            return None
        q = empty(x.shape, np.uint8)
        absmax = empty(-(-size // blocksize), np.float32)
        kernel(size, from_buffer(floats, x), blocksize, *table_arguments, from_buffer(uint8s, q),
               from_buffer(floats, absmax))
        if nonfinite != "propagate" and not math.isfinite(absmax.sum()):
            return None  # a NaN or inf (or a sum of absmax beyond FLT_MAX): the general path says which
        return q, QuantState._of_valid_fields(absmax=absmax, code=default_code.copy(), blocksize=blocksize,
                                              shape=x.shape, dtype=float32)

    return fast


_fast_quantize = _fast_quantizer()
_DEQUANTIZE = _bindings.bound("dequantize_blockwise", _dispatch.DEFAULT_BACKEND)
_UINT8, _FLOAT32 = np.dtype(np.uint8), np.dtype(np.float32)


def quantize_blockwise(x, code=None, *, blocksize=4096, out=None, absmax_out=None, nonfinite="raise",
                       backend=None):
    """(q, state): uint8 codes of x's shape and the QuantState to dequantize them.

    x: float16, float32 or float64 of any byte order (computed from its float32 values; the
    state's dtype is the native one); code: a sorted codebook
    of 256 values (default: create_dynamic_map()); blocksize: 16 to 2^24 elements;
    out / absmax_out: preallocated uint8 array of x's shape / float32 array of ceil(n / blocksize);
    nonfinite: "raise" (ValueError at the first NaN or inf) or "propagate"; backend: as softmax.
    """
    if backend is None and code is None and out is None and absmax_out is None:
        result = _fast_quantize(x, blocksize, nonfinite)
        if result is not None:
            return result
    backend = _dispatch.resolve(backend)
    blocksize = _check_blocksize(blocksize)
    if nonfinite not in NONFINITE:
        raise ValueError(f"nonfinite must be one of {', '.join(map(repr, NONFINITE))}, not {nonfinite!r}")
    code = create_dynamic_map() if code is None else _codebooks.check_code(code)
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
        tables = _codebooks.search_tables(code)
        _bindings.bound("quantize_blockwise", backend)(flat, blocksize, tables, q_flat, absmax_flat)
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


def dequantize_blockwise(q, state, *, out=None, backend=None):
    """code[q] * absmax per block: float32, or state.dtype (rounded from float32) if it is not;
    NaN over a block whose absmax is NaN or inf. The state was checked when it was built."""
    if backend is None and out is None and type(q) is np.ndarray and q.dtype is _UINT8 and \
            type(state) is QuantState and state.dtype is _FLOAT32 and q.flags.c_contiguous and q.size == state.size:
        # the common case: straight to the default backend's kernel, bound once
        result = np.empty(state.shape, np.float32)
        if q.size:
            _DEQUANTIZE(q, state.absmax, state.blocksize, state.code, result)
        return result
    backend = _dispatch.resolve(backend)
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
            np.ascontiguousarray(q.reshape(-1)), state.absmax, state.blocksize, state.code, values)
    if not direct:
        result[...] = values.reshape(state.shape)
    return result

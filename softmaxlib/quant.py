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
codes are the zero code where x * (1/absmax) is NaN, and the whole block dequantizes to NaN.
"""
import operator
from dataclasses import dataclass

import numpy as np

from . import _codebooks, _dispatch, _registry
from ._codebooks import create_dynamic_map, create_linear_map

__all__ = ["QuantState", "create_dynamic_map", "create_linear_map", "dequantize_blockwise", "quantize_blockwise"]

MIN_BLOCKSIZE = 16
MAX_BLOCKSIZE = 1 << 24
NONFINITE = ("raise", "propagate")
INPUT_DTYPES = (np.float16, np.float32, np.float64)


@dataclass(frozen=True)
class QuantState:
    """What dequantize_blockwise needs besides the codes: absmax (float32, one per block), the
    codebook (256 float32), the block size, and the shape and dtype of the quantized array."""

    absmax: np.ndarray
    code: np.ndarray
    blocksize: int
    shape: tuple
    dtype: np.dtype

    @property
    def size(self):
        return int(np.prod(self.shape, dtype=np.int64))

    def as_dict(self):
        """Plain NumPy arrays (for np.savez); from_dict() takes them back."""
        return {"absmax": self.absmax, "code": self.code, "blocksize": np.int64(self.blocksize),
                "shape": np.array(self.shape, dtype=np.int64), "dtype": np.str_(np.dtype(self.dtype).str)}

    @classmethod
    def from_dict(cls, state):
        """The QuantState of as_dict()'s arrays (or np.load of them), checked."""
        missing = {"absmax", "code", "blocksize", "shape", "dtype"} - set(state)
        if missing:
            raise ValueError(f"a QuantState needs {', '.join(sorted(missing))}")
        dtype = np.dtype(str(np.asarray(state["dtype"])))
        if dtype not in [np.dtype(d) for d in INPUT_DTYPES]:
            raise ValueError(f"a QuantState's dtype is float16, float32 or float64, not {dtype}")
        shape = tuple(int(d) for d in np.asarray(state["shape"]).reshape(-1))
        result = cls(absmax=np.ascontiguousarray(state["absmax"], dtype=np.float32),
                     code=_codebooks.check_code(state["code"]),
                     blocksize=_check_blocksize(np.asarray(state["blocksize"]).item()), shape=shape, dtype=dtype)
        expected = -(-result.size // result.blocksize)
        if result.absmax.shape != (expected,):
            raise ValueError(f"absmax has shape {result.absmax.shape}, but {result.size} elements in blocks of "
                             f"{result.blocksize} need ({expected},)")
        return result


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


def quantize_blockwise(x, code=None, *, blocksize=4096, out=None, absmax_out=None, nonfinite="raise",
                       backend=None):
    """(q, state): uint8 codes of x's shape and the QuantState to dequantize them.

    x: float16, float32 or float64 (computed from its float32 values); code: a sorted codebook
    of 256 values (default: create_dynamic_map()); blocksize: 16 to 2^24 elements;
    out / absmax_out: preallocated uint8 array of x's shape / float32 array of ceil(n / blocksize);
    nonfinite: "raise" (ValueError at the first NaN or inf) or "propagate"; backend: as softmax.
    """
    backend = _dispatch.resolve(backend)
    blocksize = _check_blocksize(blocksize)
    if nonfinite not in NONFINITE:
        raise ValueError(f"nonfinite must be one of {', '.join(map(repr, NONFINITE))}, not {nonfinite!r}")
    code = create_dynamic_map() if code is None else _codebooks.check_code(code)
    x = np.asarray(x)
    if x.dtype not in [np.dtype(d) for d in INPUT_DTYPES]:
        raise TypeError(f"quantize_blockwise takes float16, float32 or float64 input, not dtype {x.dtype}")
    flat = np.ascontiguousarray(x.reshape(-1), dtype=np.float32)  # C order, whatever x's layout
    blocks = -(-flat.size // blocksize)
    q = np.empty(x.shape, np.uint8) if out is None else _writable_out(out, "out", x.shape, np.uint8)
    absmax = np.empty(blocks, np.float32) if absmax_out is None else \
        _writable_out(absmax_out, "absmax_out", (blocks,), np.float32)
    # The kernels write contiguous arrays: a non-contiguous out gets the result copied in.
    q_flat = q.reshape(-1) if q.flags.c_contiguous else np.empty(flat.size, np.uint8)
    absmax_flat = absmax if absmax.flags.c_contiguous else np.empty(blocks, np.float32)
    if flat.size:
        tables = _codebooks.search_tables(code)
        _registry.quant_kernel("quantize_blockwise", backend)(flat, blocksize, tables, q_flat, absmax_flat)
        if nonfinite == "raise" and not np.isfinite(absmax_flat).all():
            first = int(np.flatnonzero(~np.isfinite(flat))[0])
            index = np.unravel_index(first, x.shape) if x.ndim else ()
            raise ValueError(f"x[{', '.join(map(str, index))}] is {flat[first]}: quantize_blockwise needs finite "
                             f"input (or nonfinite='propagate')")
    if not q.flags.c_contiguous:
        q[...] = q_flat.reshape(x.shape)
    if absmax_flat is not absmax:
        absmax[...] = absmax_flat
    return q, QuantState(absmax=absmax, code=code, blocksize=blocksize, shape=x.shape, dtype=x.dtype)


def dequantize_blockwise(q, state, *, out=None, backend=None):
    """code[q] * absmax per block: float32, or state.dtype (rounded from float32) if it is not."""
    backend = _dispatch.resolve(backend)
    if not isinstance(state, QuantState):
        raise TypeError(f"state must be a QuantState, not {type(state).__name__}")
    q = np.asarray(q)
    if q.dtype != np.uint8:
        raise TypeError(f"q must be uint8 codes, not dtype {q.dtype}")
    if q.size != state.size:
        raise ValueError(f"q has {q.size} elements, but the state describes {state.size} (shape {state.shape})")
    expected_blocks = -(-q.size // state.blocksize)
    if state.absmax.shape != (expected_blocks,):
        raise ValueError(f"the state's absmax has shape {state.absmax.shape}, but {q.size} elements in blocks of "
                         f"{state.blocksize} need ({expected_blocks},)")
    dtype = np.dtype(state.dtype)
    result = np.empty(state.shape, dtype) if out is None else _writable_out(out, "out", state.shape, dtype)
    direct = dtype == np.float32 and result.flags.c_contiguous
    values = result.reshape(-1) if direct else np.empty(q.size, np.float32)
    if q.size:
        _registry.quant_kernel("dequantize_blockwise", backend)(
            np.ascontiguousarray(q.reshape(-1)), np.ascontiguousarray(state.absmax, dtype=np.float32),
            state.blocksize, state.code, values)
    if not direct:
        result[...] = values.reshape(state.shape)
    return result

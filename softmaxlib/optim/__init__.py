"""8-bit optimizers (Dettmers et al., 2021, "8-bit Optimizers via Block-wise Quantization") on
NumPy arrays: one fused pass per step over the parameters, their gradients and their states.

    state = optim.init_state("adamw", p)                 # 2 bytes per parameter, + 8 per block
    skipped = optim.adamw_step(p, g, state, lr=1e-3, step=1)   # p and state updated in place

The states are stored as 8-bit codes per element and a float32 absmax per block of `blocksize`
(default 256, as bitsandbytes) on bitsandbytes' dynamic maps: signed for Adam's first moment,
SGD's momentum and Lion's, unsigned for Adam's second moment and the non-negative sums of
squares of RMSprop and Adagrad. Each step, per block: dequantize the states with the block's
absmax, update the states and the parameters in float32 with torch.optim's rules (Lion: its
paper's), take the block's new absmax, and store every state as its exact nearest code.
Parameters of fewer than `min_8bit_size` elements (default 4096) keep float32 states
(State32bit), as in bitsandbytes.

Non-finite gradients: an element whose gradient is NaN or inf (or so large that an updated
state overflows) keeps its parameter and its states, and the step returns how many were
skipped. Nothing else about p is checked: a NaN parameter stays NaN.

softmaxlib.optim.torch holds torch.optim.Optimizer drop-ins over these steps (torch is an
optional extra). docs/optim.md gives the rules, the layout, the accuracy and the speed.
"""
import math
import operator
from typing import NamedTuple

import numpy as np

from .. import _bindings, _codebooks, _dispatch, _threads

__all__ = ["State8bit", "State32bit", "init_state", "adam_step", "adamw_step", "sgd_step", "lion_step",
           "rmsprop_step", "adagrad_step", "OPTIMIZERS", "MAX_BLOCKSIZE"]

BLOCKSIZE_MULTIPLE = 64
MAX_BLOCKSIZE = 4096  # csrc/optim_kernels.h: a block's updated states wait on the stack
MIN_8BIT_SIZE = 4096


def dynamic_map(signed):
    """bitsandbytes' dynamic map of the optimizer states, signed or unsigned.

    The map of softmaxlib.quant.create_dynamic_map(signed), built on first use (the unsigned one
    takes 13 ms) and shared: do not modify it (every state holds a copy).

    Parameters
    ----------
    signed : bool
        The signed map (first moments, momenta) or the unsigned one (second moments, sums of
        squares).

    Returns
    -------
    ndarray
        256 sorted float32 values, from -0.99296874 (signed) or 0 (unsigned) to 1.

    Examples
    --------
    >>> from softmaxlib import optim
    >>> optim.dynamic_map(signed=False)[[0, 255]]
    array([0., 1.], dtype=float32)
    """
    return _codebooks._dynamic_map(bool(signed), 7, 8)

# optimizer: (its kernel, whether each of its states is signed)
OPTIMIZERS = {
    "adam": ("adam_step", (True, False)),
    "adamw": ("adam_step", (True, False)),
    "sgd": ("momentum_step", (True,)),
    "lion": ("lion_step", (True,)),
    "rmsprop": ("rms_step", (False,)),
    "adagrad": ("rms_step", (False,)),
}


class _StepConstants(NamedTuple):
    """The constants of one step in float32, the fields of struct sml_optim_step (csrc/softmaxlib.h)."""
    lr: float
    beta1: float = 0.0
    gain1: float = 0.0
    beta2: float = 0.0
    gain2: float = 0.0
    eps: float = 0.0
    l2: float = 0.0
    decay: float = 1.0
    correction2: float = 1.0
    first: int = 0
    nesterov: int = 0
    step: int = 0


def _check_blocksize(blocksize):
    if isinstance(blocksize, bool) or not isinstance(blocksize, (int, np.integer)) or \
            not BLOCKSIZE_MULTIPLE <= blocksize <= MAX_BLOCKSIZE or blocksize % BLOCKSIZE_MULTIPLE:
        raise ValueError(f"blocksize must be a multiple of {BLOCKSIZE_MULTIPLE} from {BLOCKSIZE_MULTIPLE} to "
                         f"{MAX_BLOCKSIZE}, not {blocksize!r}")
    return int(blocksize)


def _array(values, dtype, name, shape=None):
    """values as a C-contiguous array of `dtype` that the state owns or shares (no conversion:
    the state is updated in place, so a converted copy would silently not be)."""
    if not isinstance(values, np.ndarray) or values.dtype != dtype:
        got = f"dtype {values.dtype}" if isinstance(values, np.ndarray) else type(values).__name__
        raise TypeError(f"{name} must be a NumPy array of {np.dtype(dtype)}, not {got}")
    if not (values.flags.c_contiguous and values.flags.writeable):
        raise ValueError(f"{name} must be C-contiguous and writable: the step updates it in place")
    if shape is not None and values.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, not {values.shape}")
    return values


def _optimizer(optimizer):
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; the optimizers are {', '.join(OPTIMIZERS)}")
    return optimizer


class State8bit:
    """The 8-bit states of one parameter array, updated in place by the steps.

    Per state: uint8 codes (one per element, in C order), float32 absmax (one per block of
    `blocksize`) and its map (256 sorted float32 values with an exact single-compare search, as
    bitsandbytes' dynamic maps). The arrays are used as they are, never copied (the torch
    optimizers pass views of their tensors), so they must have exactly these dtypes and be
    C-contiguous and writable. init_state() makes the zero state of an optimizer.

    Parameters
    ----------
    codes1, absmax1, map1 : ndarray
        The first state: uint8 codes of any shape, float32 absmax of shape (blocks,), finite and
        >= 0, and its float32 map of shape (256,).
    codes2, absmax2, map2 : ndarray, optional
        The second state (Adam's v), the same way; None for the one-state optimizers.
    blocksize : int, optional
        Elements per block, a multiple of 64 from 64 to 4096 (default: 256).

    Attributes
    ----------
    size : int
        The number of parameters.
    states : int
        1 or 2.
    tables : tuple
        The search tables of the maps (softmaxlib/_codebooks.py), built once per map.
    signed : tuple of bool
        For each state, whether its map holds negative values.

    Raises
    ------
    TypeError, ValueError
        For arrays of another dtype, shape or layout, a map that is not 256 sorted finite values
        with a single-compare search, a non-finite or negative absmax, or a bad blocksize.

    Examples
    --------
    >>> import numpy as np
    >>> from softmaxlib import optim
    >>> state = optim.State8bit(np.full(512, 127, np.uint8), np.zeros(2, np.float32),
    ...                         optim.dynamic_map(signed=True).copy())
    >>> state, state.nbytes
    (State8bit(size=512, states=1, blocksize=256), 520)
    """

    def __init__(self, codes1, absmax1, map1, codes2=None, absmax2=None, map2=None, *, blocksize=256):
        self.blocksize = _check_blocksize(blocksize)
        self.codes1 = _array(codes1, np.uint8, "codes1")
        self.size = codes1.size
        blocks = -(-self.size // self.blocksize)
        self.absmax1 = _array(absmax1, np.float32, "absmax1", (blocks,))
        self.map1 = _map(map1, "map1")
        self.codes2 = self.absmax2 = self.map2 = None
        if codes2 is not None or absmax2 is not None or map2 is not None:
            self.codes2 = _array(codes2, np.uint8, "codes2")
            if codes2.size != self.size:
                raise ValueError(f"codes2 has {codes2.size} elements, codes1 {self.size}")
            self.absmax2 = _array(absmax2, np.float32, "absmax2", (blocks,))
            self.map2 = _map(map2, "map2")
        for name in ("absmax1", "absmax2"):
            absmax = getattr(self, name)
            if absmax is not None and not (np.isfinite(absmax) & (absmax >= 0)).all():
                raise ValueError(f"{name} must hold finite non-negative values (max |state| per block)")
        maps = [m for m in (self.map1, self.map2) if m is not None]
        self.tables = tuple(_codebooks.search_tables(m) for m in maps)
        self.signed = tuple(bool(m[0] < 0) for m in maps)

    @property
    def states(self):
        return 1 if self.codes2 is None else 2

    @property
    def nbytes(self):
        """The bytes of the codes and of the absmax arrays (not the maps': 1 KiB each)."""
        return sum(a.nbytes for a in (self.codes1, self.absmax1, self.codes2, self.absmax2) if a is not None)

    def dequantized(self):
        """The states' values: map[code] * absmax of each element's block.

        Returns
        -------
        tuple of ndarray
            One or two flat float32 arrays of `size` values.

        Examples
        --------
        >>> import numpy as np
        >>> from softmaxlib import optim
        >>> state = optim.State8bit.quantized([np.array([0.5, -1.0] * 64, np.float32)], signed=[True], blocksize=64)
        >>> state.dequantized()[0][:2]
        array([ 0.50078124, -0.99296874], dtype=float32)
        """
        return tuple(_dequantized(codes, absmax, code, self.blocksize)
                     for codes, absmax, code in ((self.codes1, self.absmax1, self.map1),
                                                 (self.codes2, self.absmax2, self.map2)) if codes is not None)

    @classmethod
    def quantized(cls, values, signed, *, blocksize=256, workers=None, backend=None):
        """The state holding given values, as their nearest codes on the dynamic maps.

        Parameters
        ----------
        values : sequence of array_like
            One or two arrays of equal size, finite (non-negative on the unsigned map).
        signed : sequence of bool
            For each state, whether its map is the signed dynamic map (else the unsigned one).
        blocksize : int, optional
            Elements per block, a multiple of 64 from 64 to 4096 (default: 256).
        workers, backend : optional
            Threads and backend of the quantization, as everywhere in softmaxlib.

        Returns
        -------
        State8bit

        Raises
        ------
        ValueError
            For non-finite values, negative values on the unsigned map, or a bad blocksize.

        Examples
        --------
        >>> import numpy as np
        >>> from softmaxlib import optim
        >>> optim.State8bit.quantized([np.ones(300), np.ones(300)], signed=[True, False])
        State8bit(size=300, states=2, blocksize=256)
        """
        if not 1 <= len(values) <= 2 or len(signed) != len(values):
            raise ValueError("a State8bit holds one or two states, with a map for each")
        blocksize = _check_blocksize(blocksize)
        quantize = _bindings.bound("quantize_blockwise", _dispatch.resolve(backend))
        fields = []
        for value, is_signed in zip(values, signed):
            value = np.ascontiguousarray(value, dtype=np.float32).reshape(-1)
            if not np.isfinite(value).all():
                raise ValueError("a state's values must be finite")
            if not is_signed and (value < 0).any():
                raise ValueError("a state on the unsigned map must be non-negative")
            code = dynamic_map(is_signed)
            codes = np.empty(value.size, np.uint8)
            absmax = np.empty(-(-value.size // blocksize), np.float32)
            quantize(value, blocksize, _codebooks.search_tables(code), codes, absmax, _threads.resolve(workers))
            fields += [codes, absmax, code.copy()]
        return cls(*fields, blocksize=blocksize)

    def __repr__(self):
        return f"State8bit(size={self.size}, states={self.states}, blocksize={self.blocksize})"


def _dequantized(codes, absmax, code, blocksize):
    """map[code] * absmax of each code's block, a flat float32 array: softmaxlib.quant's dequantize
    kernel on 8-bit codes (any shape, C order) with a finite absmax per block of `blocksize`."""
    out = np.empty(codes.size, np.float32)
    _bindings.bound("dequantize_blockwise", _dispatch.DEFAULT_BACKEND)(
        np.ascontiguousarray(codes).reshape(-1), np.ascontiguousarray(absmax, np.float32), blocksize,
        np.ascontiguousarray(code, np.float32), out)
    return out


def _map(code, name):
    code = _array(code, np.float32, name, (_codebooks.CODES,))
    _codebooks.check_code(code)
    if not _codebooks.search_tables(code).single_compare:
        raise ValueError(f"{name} needs a codebook whose exact search takes one comparison (as the dynamic "
                         "maps); requantize the state on the dynamic maps (State8bit.quantized)")
    return code


class State32bit:
    """The float32 states of a parameter of fewer than min_8bit_size elements.

    Parameters
    ----------
    state1 : ndarray
        The first state, float32, C-contiguous and writable (it is updated in place).
    state2 : ndarray, optional
        Adam's second state, the same way and of state1's shape; None for the others.

    Examples
    --------
    >>> import numpy as np
    >>> from softmaxlib import optim
    >>> optim.State32bit(np.zeros(100, np.float32))
    State32bit(size=100, states=1)
    """

    def __init__(self, state1, state2=None):
        self.state1 = _array(state1, np.float32, "state1")
        self.size = state1.size
        self.state2 = None if state2 is None else _array(state2, np.float32, "state2", state1.shape)

    @property
    def states(self):
        return 1 if self.state2 is None else 2

    @property
    def nbytes(self):
        return self.state1.nbytes + (0 if self.state2 is None else self.state2.nbytes)

    def dequantized(self):
        """The states' values: flat views of state1 (and state2), as State8bit.dequantized()."""
        return (self.state1.reshape(-1),) if self.state2 is None else \
            (self.state1.reshape(-1), self.state2.reshape(-1))

    def __repr__(self):
        return f"State32bit(size={self.size}, states={self.states})"


def init_state(optimizer, size, *, blocksize=256, min_8bit_size=MIN_8BIT_SIZE, initial_accumulator_value=0.0):
    """The initial state of an optimizer for a parameter array.

    Every state starts at 0, but Adagrad's sum of squares at initial_accumulator_value (torch's).

    Parameters
    ----------
    optimizer : str
        "adam", "adamw", "sgd", "lion", "rmsprop" or "adagrad".
    size : int or ndarray
        The number of parameters, or the parameter array (its size is taken).
    blocksize : int, optional
        Elements per block of the 8-bit states, a multiple of 64 from 64 to 4096 (default: 256,
        as bitsandbytes).
    min_8bit_size : int, optional
        Below this many elements, float32 states (default: 4096, as bitsandbytes).
    initial_accumulator_value : float, optional
        Adagrad's initial sum of squares, >= 0 (default: 0).

    Returns
    -------
    State8bit or State32bit

    Raises
    ------
    ValueError
        For an unknown optimizer, a negative size, a bad blocksize or initial_accumulator_value.

    Examples
    --------
    >>> from softmaxlib import optim
    >>> optim.init_state("adamw", 1 << 20)
    State8bit(size=1048576, states=2, blocksize=256)
    >>> optim.init_state("sgd", 100)
    State32bit(size=100, states=1)
    """
    _, signed = OPTIMIZERS[_optimizer(optimizer)]
    blocksize = _check_blocksize(blocksize)
    size = size.size if isinstance(size, np.ndarray) else operator.index(size)
    if size < 0:
        raise ValueError(f"size must be non-negative, not {size}")
    start = float(initial_accumulator_value)
    if not (math.isfinite(start) and start >= 0.0):
        raise ValueError(f"Invalid initial_accumulator_value: {initial_accumulator_value}")
    values = [np.full(size, start if optimizer == "adagrad" else 0.0, np.float32) for _ in signed]
    if size < min_8bit_size:
        return State32bit(*values)
    return State8bit.quantized(values, signed, blocksize=blocksize, workers=1)


def _real(value, name, low=0.0, high=math.inf, high_open=False):
    """value (a number, or anything with __float__ but a string, e.g. a 0-d tensor) as a finite
    float in [low, high] (or [low, high)), else ValueError in torch's words."""
    try:
        if isinstance(value, (str, bytes)):
            raise TypeError
        number = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number, not {type(value).__name__}") from None
    if not (low <= number and (number < high if high_open else number <= high)) or not math.isfinite(number):
        raise ValueError(f"Invalid {name}: {value}")
    return number


def _epsilon(eps):
    """eps as a float > 0: with 0 (which torch accepts), a zero or underflowed second moment
    divides by zero and makes the parameter NaN or inf."""
    eps = _real(eps, "epsilon value")
    if eps == 0.0:
        raise ValueError("Invalid epsilon value: 0 (it must be > 0: a zero second moment would divide by zero)")
    return eps


def _step_number(step):
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 1:
        raise ValueError(f"step must be the step's number, an integer >= 1 (the first step is 1), not {step!r}")
    return int(step)


def _betas(betas, names=("beta1", "beta2")):
    try:
        beta1, beta2 = betas
    except (TypeError, ValueError):
        raise TypeError(f"betas must be a pair of numbers, not {betas!r}") from None
    return (_real(beta1, f"{names[0]} (betas[0])", 0.0, 1.0, high_open=True),
            _real(beta2, f"{names[1]} (betas[1])", 0.0, 1.0, high_open=True))


def _adam_constants(lr, betas, eps, weight_decay, step, decoupled):
    """Adam's (decoupled=False: weight decay as L2, g += wd p) or AdamW's (p *= 1 - lr wd) constants."""
    lr, eps = _real(lr, "learning rate"), _epsilon(eps)
    weight_decay, step = _real(weight_decay, "weight_decay value"), _step_number(step)
    beta1, beta2 = _betas(betas)
    return _StepConstants(lr=lr / (1.0 - beta1 ** step), beta1=beta1, gain1=1.0 - beta1, beta2=beta2,
                         gain2=1.0 - beta2, eps=eps, l2=0.0 if decoupled else weight_decay,
                         decay=1.0 - lr * weight_decay if decoupled else 1.0,
                         correction2=1.0 / math.sqrt(1.0 - beta2 ** step))


def _sgd_constants(lr, momentum, dampening, nesterov, weight_decay, step):
    lr, weight_decay = _real(lr, "learning rate"), _real(weight_decay, "weight_decay value")
    momentum, dampening = _real(momentum, "momentum value"), _real(dampening, "dampening value", 0.0, 1.0)
    if momentum == 0.0:
        raise ValueError("SGD's 8-bit state is its momentum: momentum must be > 0 (plain SGD keeps no state)")
    if nesterov and dampening != 0.0:
        raise ValueError("Nesterov momentum requires a momentum and zero dampening")
    return _StepConstants(lr=lr, beta1=momentum, gain1=1.0 - dampening, l2=weight_decay,
                         first=int(_step_number(step) == 1), nesterov=int(bool(nesterov)))


def _lion_constants(lr, betas, weight_decay, step):
    lr, weight_decay = _real(lr, "learning rate"), _real(weight_decay, "weight_decay value")
    beta1, beta2 = _betas(betas)
    # the step's number seeds the stochastic rounding of the momentum (csrc/optim_kernels.h), in 32 bits
    return _StepConstants(lr=lr, beta1=beta1, gain1=1.0 - beta1, beta2=beta2, gain2=1.0 - beta2,
                         decay=1.0 - lr * weight_decay, step=_step_number(step) % 2**31)


def _rmsprop_constants(lr, alpha, eps, weight_decay):
    lr, eps = _real(lr, "learning rate"), _epsilon(eps)
    alpha, weight_decay = _real(alpha, "alpha value", 0.0, 1.0), _real(weight_decay, "weight_decay value")
    return _StepConstants(lr=lr, beta1=alpha, gain1=1.0 - alpha, eps=eps, l2=weight_decay)


def _adagrad_constants(lr, lr_decay, eps, weight_decay, step):
    lr, eps = _real(lr, "learning rate"), _epsilon(eps)
    lr_decay, weight_decay = _real(lr_decay, "lr_decay value"), _real(weight_decay, "weight_decay value")
    return _StepConstants(lr=lr / (1.0 + (_step_number(step) - 1) * lr_decay), beta1=1.0, gain1=1.0, eps=eps,
                         l2=weight_decay)


def _parameter(p):
    if not isinstance(p, np.ndarray) or p.dtype != np.float32:
        got = f"dtype {p.dtype}" if isinstance(p, np.ndarray) else type(p).__name__
        raise TypeError(f"p must be a NumPy array of float32 (it is updated in place), not {got}")
    if not (p.flags.c_contiguous and p.flags.writeable):
        raise ValueError("p must be C-contiguous and writable: the step updates it in place")
    return p.reshape(-1)


def _gradient(g, size):
    array = np.asarray(g)
    if array.dtype.kind != "f":
        raise TypeError(f"g must be a floating array, not dtype {array.dtype}")
    if array.size != size:
        raise ValueError(f"g has {array.size} elements, but p has {size}")
    return np.ascontiguousarray(array, dtype=np.float32).reshape(-1)


def _run(optimizer, p, g, state, constants, workers, backend):
    kernel, signed = OPTIMIZERS[optimizer]
    p = _parameter(p)
    g = _gradient(g, p.size)
    if not isinstance(state, (State8bit, State32bit)):
        raise TypeError(f"state must be a State8bit or State32bit (init_state makes one), not {type(state).__name__}")
    if state.size != p.size or state.states != len(signed):
        raise ValueError(f"{optimizer} needs a state of {len(signed)} state(s) of {p.size} elements, not {state!r}")
    backend, workers = _dispatch.resolve(backend), _threads.resolve(workers)
    if isinstance(state, State8bit):
        if state.signed != signed:  # a signed state on an unsigned map would lose every negative value
            k = next(k for k in range(len(signed)) if state.signed[k] != signed[k])
            code = (state.map1, state.map2)[k]
            raise ValueError(f"{optimizer}'s state {k + 1} needs a {'signed' if signed[k] else 'non-negative'} "
                             f"map (code[0] {'<' if signed[k] else '>='} 0), not one from {code[0]} to {code[-1]}")
        return _bindings.bound(kernel, backend)(p, g, state, constants, workers)
    from .._numba import optim as twins
    second = state.state2.reshape(-1) if state.state2 is not None else np.empty(p.size, np.float32)
    return int(twins.step_float_states(twins.RULES[kernel], p, g, state.state1.reshape(-1), second,
                                       np.array(constants[:9], np.float32), bool(constants.first),
                                       bool(constants.nesterov)))


_STEP_DOC = """{summary}

    {rule}

    Parameters
    ----------
    p : ndarray
        The parameters, float32, C-contiguous and writable: updated in place.
    g : array_like
        Their gradients, as many (converted to float32).
    state : State8bit or State32bit
        The optimizer's state (init_state("{optimizer}", p)), updated in place.
{hyper}    workers : int, optional
        Threads, as everywhere in softmaxlib (None: get_num_threads()); the result is the
        same for any number.
    backend : str, optional
        "avx512", "avx2" or "numba" (default: the best one here).

    Returns
    -------
    int
        The elements skipped for a non-finite gradient (their parameters and states keep
        their values).

    Raises
    ------
    TypeError, ValueError
        For a p that is not a writable C-contiguous float32 array, a g of another size, a state
        of another optimizer or size, or a hyper-parameter out of torch's range.

    Examples
    --------
    >>> import numpy as np
    >>> from softmaxlib import optim
    >>> p = np.ones(8192, np.float32)
    >>> state = optim.init_state("{optimizer}", p)
    >>> optim.{optimizer}_step(p, np.full(8192, 0.5, np.float32), state, {example})
    0
    >>> p[0]
    {result}
    """

def _documented(optimizer, summary, rule, hyper, example, result):
    def document(function):
        lines = "".join(f"    {name} : {kind}\n        {text}.\n" for name, kind, text in hyper)
        function.__doc__ = _STEP_DOC.format(summary=summary, rule=rule, optimizer=optimizer, hyper=lines,
                                            example=example, result=result)
        return function
    return document


_ADAM_HYPER = [("lr", "float, optional", "The learning rate, >= 0 (default: 1e-3)"),
               ("betas", "(float, float), optional", "The decay rates of m and v, each in [0, 1) "
                                                     "(default: (0.9, 0.999))"),
               ("eps", "float, optional", "Added to the denominator, > 0 (default: 1e-8)")]
_STEP = [("step", "int", "The step's number, from 1 (it drives the bias corrections)")]


@_documented("adam", "One step of Adam on p and its 8-bit (or float32) state.",
             "torch.optim.Adam's rule (weight decay as L2, amsgrad off): g += wd p;\n"
             "    m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;\n"
             "    p -= lr / (1 - b1^step) * m / (sqrt(v) / sqrt(1 - b2^step) + eps).",
             _ADAM_HYPER + [("weight_decay", "float, optional", "L2 penalty, >= 0 (default: 0)")] + _STEP,
             "lr=0.1, step=1", "np.float32(0.9)")
def adam_step(p, g, state, *, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, step, workers=None,
              backend=None):
    return _run("adam", p, g, state, _adam_constants(lr, betas, eps, weight_decay, step, False), workers, backend)


@_documented("adamw", "One step of AdamW on p and its 8-bit (or float32) state.",
             "torch.optim.AdamW's rule: p *= 1 - lr wd, then Adam's update without L2.",
             _ADAM_HYPER + [("weight_decay", "float, optional", "Decoupled weight decay, >= 0 (default: 1e-2)")]
             + _STEP, "lr=0.1, step=1", "np.float32(0.899)")
def adamw_step(p, g, state, *, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, step, workers=None,
               backend=None):
    return _run("adamw", p, g, state, _adam_constants(lr, betas, eps, weight_decay, step, True), workers, backend)


@_documented("sgd", "One step of SGD with momentum on p and its 8-bit (or float32) momentum.",
             "torch.optim.SGD's rule: g += wd p; b = g at step 1, else b = momentum b + (1 - dampening) g;\n"
             "    p -= lr (g + momentum b if nesterov else b).",
             [("lr", "float, optional", "The learning rate, >= 0 (default: 1e-3)"),
              ("momentum", "float, optional", "The momentum factor, > 0 (default: 0.9)"),
              ("dampening", "float, optional", "Dampening of the momentum, in [0, 1] (default: 0)"),
              ("nesterov", "bool, optional", "Nesterov's momentum (default: False)"),
              ("weight_decay", "float, optional", "L2 penalty, >= 0 (default: 0)")] + _STEP,
             "lr=0.1, step=1", "np.float32(0.95)")
def sgd_step(p, g, state, *, lr=1e-3, momentum=0.9, dampening=0.0, nesterov=False, weight_decay=0.0, step,
             workers=None, backend=None):
    return _run("sgd", p, g, state, _sgd_constants(lr, momentum, dampening, nesterov, weight_decay, step), workers,
                backend)


@_documented("lion", "One step of Lion (Chen et al., 2023) on p and its 8-bit (or float32) momentum.",
             "c = b1 m + (1 - b1) g; p = p (1 - lr wd) - lr sign(c); m = b2 m + (1 - b2) g.\n"
             "    The 8-bit momentum is rounded stochastically (its mean kept: nearest codes would\n"
             "    stall it), from random numbers that hash each element's index with the step.",
             [("lr", "float, optional", "The learning rate, >= 0 (default: 1e-4)"),
              ("betas", "(float, float), optional", "The interpolation and decay rates, each in [0, 1) "
                                                    "(default: (0.9, 0.99))"),
              ("weight_decay", "float, optional", "Decoupled weight decay, >= 0 (default: 0)"),
              ("step", "int", "The step's number, from 1 (it seeds the stochastic rounding)")],
             "lr=0.1, step=1", "np.float32(0.9)")
def lion_step(p, g, state, *, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, step, workers=None, backend=None):
    return _run("lion", p, g, state, _lion_constants(lr, betas, weight_decay, step), workers, backend)


@_documented("rmsprop", "One step of RMSprop on p and its 8-bit (or float32) mean square.",
             "torch.optim.RMSprop's rule (no momentum, not centered): g += wd p;\n"
             "    v = alpha v + (1 - alpha) g^2; p -= lr g / (sqrt(v) + eps).",
             [("lr", "float, optional", "The learning rate, >= 0 (default: 1e-2)"),
              ("alpha", "float, optional", "The decay rate of v, in [0, 1] (default: 0.99)"),
              ("eps", "float, optional", "Added to the denominator, > 0 (default: 1e-8)"),
              ("weight_decay", "float, optional", "L2 penalty, >= 0 (default: 0)")],
             "lr=0.1", "np.float32(1.7881393e-07)")
def rmsprop_step(p, g, state, *, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, workers=None, backend=None):
    return _run("rmsprop", p, g, state, _rmsprop_constants(lr, alpha, eps, weight_decay), workers, backend)


@_documented("adagrad", "One step of Adagrad on p and its 8-bit (or float32) sum of squares.",
             "torch.optim.Adagrad's rule: g += wd p; v += g^2;\n"
             "    p -= lr / (1 + (step - 1) lr_decay) * g / (sqrt(v) + eps).",
             [("lr", "float, optional", "The learning rate, >= 0 (default: 1e-2)"),
              ("lr_decay", "float, optional", "The learning rate's decay, >= 0 (default: 0)"),
              ("eps", "float, optional", "Added to the denominator, > 0 (default: 1e-10)"),
              ("weight_decay", "float, optional", "L2 penalty, >= 0 (default: 0)")] + _STEP,
             "lr=0.1, step=1", "np.float32(0.9)")
def adagrad_step(p, g, state, *, lr=1e-2, lr_decay=0.0, eps=1e-10, weight_decay=0.0, step, workers=None,
                 backend=None):
    return _run("adagrad", p, g, state, _adagrad_constants(lr, lr_decay, eps, weight_decay, step), workers, backend)

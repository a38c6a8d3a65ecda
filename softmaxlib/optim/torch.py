"""torch.optim drop-ins over softmaxlib.optim's fused 8-bit steps, for float32 parameters on the CPU.

    from softmaxlib.optim.torch import AdamW8bit
    optimizer = AdamW8bit(model.parameters(), lr=1e-3)     # then as torch.optim.AdamW

Adam8bit, AdamW8bit, SGD8bit, Lion8bit, RMSprop8bit and Adagrad8bit take torch's arguments with
torch's defaults (Lion, which torch lacks: its paper's), plus `blocksize`, `min_8bit_size` and
`workers`. Each step() passes NumPy views of every parameter, its gradient and its state tensors
to softmaxlib.optim's step (nothing is copied), and sets `skipped`: how many elements, summed over
the parameters, kept their values for a non-finite gradient.

The state of a parameter, optimizer.state[p], has bitsandbytes' keys, so that state_dict() and
load_state_dict() round-trip and bitsandbytes' state dicts load:
    "step"      int, the steps taken;
    "state1"    uint8 codes, p's shape (Adam's m, SGD's and Lion's momentum, RMSprop's and
                Adagrad's sum of squares), "state2" Adam's v;
    "absmax1"   float32, one per block of `blocksize` elements ("absmax2" Adam's v's);
    "qmap1"     the codes' float32 map, bitsandbytes' dynamic map ("qmap2");
    "blocksize" int (ours only: bitsandbytes' is always 256);
a parameter of fewer than `min_8bit_size` elements keeps "step" and float32 "state1" ("state2") of
its shape. The maps: the signed one for state1 of Adam, SGD and Lion, the unsigned one for Adam's
state2 and the non-negative state1 of RMSprop and Adagrad (bitsandbytes keeps those on the
signed map, wasting half its codes).

load_state_dict() takes our state dicts and bitsandbytes' (whose quantization tensors nest under
"__bnb_optimizer_quant_state__"). A loaded state stored otherwise than this optimizer stores it
(another map, another block size (bitsandbytes' is inferred from its absmax length: the power of
two giving as many blocks), float32 where we keep 8 bits or the reverse) is dequantized with its
own map and block size, and requantized on ours (to the nearest code). Other keys of a
parameter's state are dropped. A loaded param group's hyper-parameters replace ours; those it lacks
keep ours; bitsandbytes' groups are translated by their constructors' meaning: SGD8bit's betas are
(momentum, dampening), RMSprop8bit's (alpha, momentum), and its other keys (AdamW8bit's alpha,
t_alpha, t_beta3, the betas of Adagrad8bit, the eps of SGD8bit and Lion8bit) are dropped.
SGD8bit's nesterov is not stored by bitsandbytes, whose kernels ignore it and the dampening:
the loaded run continues with torch's rule and these hyper-parameters.

A parameter that is not C-contiguous is stepped as a contiguous copy, copied back. Errors name
the problem: ValueError for a parameter off the CPU, TypeError for a dtype other than float32
(float32 only for now), NotImplementedError for sparse tensors and RMSprop's momentum and
centered variant; torch is an optional dependency (pip install "softmaxlib[torch]").
"""
import math
import operator

import numpy as np

try:
    import torch  # absolute: the real torch, not this module
except ImportError as error:
    raise ImportError('softmaxlib.optim.torch needs torch: pip install "softmaxlib[torch]"') from error

from .. import _threads
from . import (MIN_8BIT_SIZE, OPTIMIZERS, State8bit, State32bit, _adagrad_constants, _adam_constants,
               _check_blocksize, _dequantized, _lion_constants, _rmsprop_constants, _sgd_constants, adagrad_step,
               adam_step, adamw_step, dynamic_map, init_state, lion_step, rmsprop_step, sgd_step)

__all__ = ["Adam8bit", "AdamW8bit", "SGD8bit", "Lion8bit", "RMSprop8bit", "Adagrad8bit"]

BNB_QUANT_STATE = "__bnb_optimizer_quant_state__"  # where bitsandbytes' state_dict() nests state1, absmax1, ...


class _Optimizer8bit(torch.optim.Optimizer):
    """The loop, the states and the loading shared by the drop-ins. A subclass names its
    functional optimizer (`_name`), checks a param group (`_validate`), steps one parameter
    (`_update`), and may translate bitsandbytes' group keys (`_BNB_KEYS`: our key -> (their
    key, index)) and drop theirs (`_BNB_ONLY`)."""
    _name = None
    _BNB_KEYS = {}
    _BNB_ONLY = ()

    def __init__(self, params, defaults, blocksize, min_8bit_size, workers):
        self.blocksize = _check_blocksize(blocksize)
        self.min_8bit_size = operator.index(min_8bit_size)
        if self.min_8bit_size < 0:
            raise ValueError(f"min_8bit_size must be >= 0, not {min_8bit_size}")
        _threads.resolve(workers)  # a bad count fails here, not at the first step
        self.workers = workers
        self.skipped = 0
        self._views = {}  # parameter: (its state tensors, the State8bit/State32bit viewing them)
        self._validate(defaults)
        super().__init__(params, defaults)

    def _validate(self, group):
        raise NotImplementedError

    def _update(self, p, g, state, group, step):
        raise NotImplementedError

    def add_param_group(self, param_group):
        super().add_param_group(param_group)
        try:  # a group that fails leaves the optimizer as it was
            self._validate(self.param_groups[-1])
            for p in self.param_groups[-1]["params"]:
                _check_parameter(p)
        except Exception:
            self.param_groups.pop()
            raise

    # torch pickles (and deep-copies) an optimizer as its defaults, state and param_groups only
    def __getstate__(self):
        return {**super().__getstate__(), "blocksize": self.blocksize, "min_8bit_size": self.min_8bit_size,
                "workers": self.workers, "skipped": self.skipped}

    def __setstate__(self, state):
        super().__setstate__(state)
        self._views = {}

    @torch.no_grad()
    def step(self, closure=None):
        """One step over every parameter that has a gradient; returns closure()'s loss (None
        without a closure) and sets `skipped`."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        skipped = 0
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    skipped += self._step_parameter(p, group)
        self.skipped = skipped
        return loss

    def _step_parameter(self, p, group):
        _check_parameter(p)
        if p.grad.layout != torch.strided:
            raise NotImplementedError(f"{type(self).__name__} does not support sparse gradients")
        state = self.state[p]
        if not state:
            state.update(self._initial_state(p, group))
        step = state["step"] + 1
        work = p if p.is_contiguous() else p.contiguous()  # the step updates a C-contiguous array in place
        skipped = self._update(work.detach().numpy(), p.grad.detach().numpy(), self._view(p, state), group, step)
        if work is not p:
            p.copy_(work)
        state["step"] = step  # counted once done (a step that raises, e.g. on a bad lr, is not)
        return skipped

    def _initial_state(self, p, group):
        fresh = init_state(self._name, p.numel(), blocksize=self.blocksize, min_8bit_size=self.min_8bit_size,
                           initial_accumulator_value=group.get("initial_accumulator_value", 0.0))
        return {"step": 0, **_tensors(fresh, p.shape)}

    def _view(self, p, state):
        """The State8bit/State32bit over `state`'s tensors, built again only when they are not
        the ones it was built on (building checks the maps)."""
        tensors = tuple(state[key] for key in _STATE_KEYS if key in state)
        cached = self._views.get(p)
        if cached is None or len(cached[0]) != len(tensors) or any(a is not b for a, b in zip(cached[0], tensors)):
            arrays = [tensor.numpy() for tensor in tensors]
            view = (State8bit(*arrays, blocksize=state["blocksize"]) if "absmax1" in state else State32bit(*arrays))
            cached = self._views[p] = (tensors, view)
        return cached[1]

    def load_state_dict(self, state_dict):
        """Load a state dict of this optimizer or of its bitsandbytes counterpart.

        Every state and group is checked (and converted to this optimizer's layout, see the
        module's docstring) before anything is replaced, so a dict that fails leaves the
        optimizer as it was.

        Parameters
        ----------
        state_dict : dict
            From state_dict() of this class or of bitsandbytes' 8-bit optimizer of the same
            name, over parameters of the same shapes in the same groups.

        Raises
        ------
        TypeError, ValueError
            For groups that do not match, a hyper-parameter out of range, a parameter's state
            that another optimizer made, or a tensor of the wrong dtype, size or values.

        Examples
        --------
        >>> import io, torch
        >>> from softmaxlib.optim.torch import Adam8bit
        >>> weight = torch.nn.Parameter(torch.ones(64, 64))
        >>> optimizer = Adam8bit([weight])
        >>> weight.grad = torch.full((64, 64), 0.5)
        >>> optimizer.step()
        >>> saved = io.BytesIO()
        >>> torch.save(optimizer.state_dict(), saved)
        >>> _ = saved.seek(0)
        >>> restored = Adam8bit([weight])
        >>> restored.load_state_dict(torch.load(saved, weights_only=True))
        >>> restored.state[weight]["step"], restored.state[weight]["state1"].dtype
        (1, torch.uint8)
        """
        saved_groups = state_dict["param_groups"]
        if [len(group["params"]) for group in saved_groups] != [len(group["params"]) for group in self.param_groups]:
            raise ValueError("the state dict's param groups do not match the optimizer's (their number or sizes)")
        groups = [self._loaded_group(ours, saved) for ours, saved in zip(self.param_groups, saved_groups)]
        params = dict(zip((index for group in saved_groups for index in group["params"]),
                          (p for group in self.param_groups for p in group["params"])))
        states = {params[index]: self._loaded_state(params[index], saved, f"the state of parameter {index}")
                  for index, saved in state_dict["state"].items() if index in params}
        # torch's load_state_dict casts every floating state tensor to the parameter's dtype (the
        # codes would become float32): it loads the groups, the states are set after it.
        super().load_state_dict({**state_dict, "param_groups": groups, "state": {}})
        self.state.update(states)
        self._views.clear()

    def _loaded_group(self, ours, saved):
        group = dict(saved)
        for key, (their_key, index) in self._BNB_KEYS.items():
            if key not in group and their_key in group:
                group[key] = group[their_key][index]
        for key in self._BNB_ONLY:
            group.pop(key, None)
        group = {**{key: value for key, value in ours.items() if key != "params"}, **group}
        self._validate(group)
        return group

    def _loaded_state(self, p, saved, where):
        """One parameter's loaded state in our layout: its tensors as they are (copied) when they
        are stored as ours, else dequantized and requantized (or kept float32)."""
        if not isinstance(saved, dict):
            raise TypeError(f"{where} must be a dict, not {type(saved).__name__}")
        saved = {**saved, **saved.get(BNB_QUANT_STATE, {})}
        _, signed = OPTIMIZERS[self._name]
        if f"state{len(signed) + 1}" in saved:
            raise ValueError(f"{where} holds more than the {len(signed)} state(s) of {type(self).__name__}: "
                             "is it another optimizer's?")
        eight_bit = p.numel() >= self.min_8bit_size
        state = {"step": _step_count(saved.get("step"), where)}
        if eight_bit:
            state["blocksize"] = self.blocksize
        for k, is_signed in enumerate(signed, start=1):
            stored = _saved_state(saved, k, p.numel(), where)
            if isinstance(stored, tuple):
                codes, absmax, code, blocksize = stored
                if eight_bit and blocksize == self.blocksize and np.array_equal(code.numpy(), dynamic_map(is_signed)):
                    state.update({f"state{k}": _copy(codes.reshape(p.shape)), f"absmax{k}": _copy(absmax),
                                  f"qmap{k}": _copy(code)})
                    continue
                values = _dequantized(codes.numpy(), absmax.numpy(), code.numpy(), blocksize)
            else:
                values = stored.reshape(-1).numpy()
            if not np.isfinite(values).all() or (not is_signed and (values < 0).any()):
                raise ValueError(f"{where}'s state{k} must hold finite" + ("" if is_signed else " non-negative")
                                 + " values")
            if eight_bit:
                requantized = State8bit.quantized([values], [is_signed], blocksize=self.blocksize,
                                                  workers=self.workers)
                state.update({f"state{k}": torch.from_numpy(requantized.codes1).reshape(p.shape),
                              f"absmax{k}": torch.from_numpy(requantized.absmax1),
                              f"qmap{k}": torch.from_numpy(requantized.map1)})
            else:
                state[f"state{k}"] = torch.from_numpy(values.copy()).reshape(p.shape)
        return state


# The state tensors in State8bit's (and State32bit's) argument order
_STATE_KEYS = ("state1", "absmax1", "qmap1", "state2", "absmax2", "qmap2")


def _tensors(state, shape):
    """The tensors (sharing the arrays) of a fresh State8bit or State32bit, by our state keys."""
    if isinstance(state, State32bit):
        return {f"state{k}": torch.from_numpy(values).reshape(shape)
                for k, values in enumerate((state.state1, state.state2), start=1) if values is not None}
    tensors = {"blocksize": state.blocksize}
    for k, (codes, absmax, code) in enumerate(((state.codes1, state.absmax1, state.map1),
                                               (state.codes2, state.absmax2, state.map2)), start=1):
        if codes is not None:
            tensors.update({f"state{k}": torch.from_numpy(codes).reshape(shape), f"absmax{k}": torch.from_numpy(absmax),
                            f"qmap{k}": torch.from_numpy(code)})
    return tensors


def _copy(tensor):
    """A C-contiguous copy: the state owns its tensors (not the loaded dict's), as the steps need them."""
    return tensor.clone(memory_format=torch.contiguous_format)


def _check_parameter(p):
    if not isinstance(p, torch.Tensor):
        raise TypeError(f"parameters must be torch tensors, not {type(p).__name__}")
    if p.device.type != "cpu":
        raise ValueError(f"softmaxlib's optimizers run on the CPU: a parameter is on {p.device} "
                         "(move the model to the CPU, or use bitsandbytes' optimizers on the GPU)")
    if p.dtype != torch.float32:
        raise TypeError(f"softmaxlib's optimizers take float32 parameters only for now, not {p.dtype}")
    if p.layout != torch.strided:
        raise NotImplementedError(f"softmaxlib's optimizers do not support sparse parameters ({p.layout})")


def _step_count(value, where):
    try:
        count = float(value)  # an int (ours, bitsandbytes') or a 1-element tensor (torch's)
    except (TypeError, ValueError):
        raise TypeError(f"{where} needs its step count, an integer, under 'step', not {value!r}") from None
    if not (count.is_integer() and count >= 0):
        raise ValueError(f"{where}: 'step' must be a non-negative integer, not {value!r}")
    return int(count)


def _saved_tensor(saved, key, where):
    value = saved.get(key)
    if not isinstance(value, torch.Tensor):
        found = "missing" if value is None else f"a {type(value).__name__}"
        raise ValueError(f"{where} needs the tensor {key!r}, {found} (its keys: {', '.join(sorted(saved))})")
    return value.detach().cpu()


def _saved_state(saved, k, size, where):
    """State k as saved: a float32 tensor of its values, or (codes, absmax, map, block size)."""
    codes = _saved_tensor(saved, f"state{k}", where)
    if codes.dtype not in (torch.uint8, torch.float32):
        raise TypeError(f"{where}: state{k} must hold uint8 codes or float32 values, not {codes.dtype}")
    if codes.numel() != size:
        raise ValueError(f"{where}: state{k} has {codes.numel()} elements, its parameter {size}")
    if codes.dtype == torch.float32:
        return codes
    absmax, code = _saved_tensor(saved, f"absmax{k}", where), _saved_tensor(saved, f"qmap{k}", where)
    if absmax.dtype != torch.float32 or code.dtype != torch.float32:
        raise TypeError(f"{where}: absmax{k} and qmap{k} must be float32, not {absmax.dtype} and {code.dtype}")
    if code.shape != (256,) or not torch.isfinite(code).all():
        raise ValueError(f"{where}: qmap{k} must hold 256 finite values")
    if absmax.dim() != 1 or not (torch.isfinite(absmax) & (absmax >= 0)).all():
        raise ValueError(f"{where}: absmax{k} must be a vector of finite non-negative values (max |state| per block)")
    blocks = absmax.numel()
    if "blocksize" in saved:  # ours
        blocksize = operator.index(saved["blocksize"])
    else:  # bitsandbytes': a power of two (256 since 0.44, 2048 before), not stored
        blocksize = 1 << (-(-size // max(blocks, 1)) - 1).bit_length()
    if blocksize < 1 or -(-size // blocksize) != blocks:
        raise ValueError(f"{where}: {blocks} absmax{k} values do not fit {size} elements in blocks of {blocksize}")
    return codes, absmax, code, blocksize



_DOC = """{summary}

    A drop-in for {counterpart}
    on float32 CPU parameters: its arguments and defaults, 8-bit states (float32 below
    `min_8bit_size` elements). The module's docstring gives the layout of the states and how
    state dicts (ours and bitsandbytes') load.

    Parameters
    ----------
    params : iterable
        The parameters (float32 tensors on the CPU) or dicts of param groups, each of which may
        set its own hyper-parameters.
{hyper}    blocksize : int, optional
        Elements per absmax of the 8-bit states: a multiple of 64 up to 4096 (default: 256, as
        bitsandbytes).
    min_8bit_size : int, optional
        Parameters with fewer elements keep float32 states (default: 4096, as bitsandbytes).
    workers : int, optional
        Threads of each step (None: softmaxlib.get_num_threads()); the result is the same for
        any number.

    Attributes
    ----------
    skipped : int
        How many elements the last step() left as they were (parameter and states) for a
        non-finite gradient, summed over the parameters; 0 before the first step.

    Raises
    ------
    ValueError, TypeError, NotImplementedError
        For a hyper-parameter out of range (ValueError), a parameter off the CPU (ValueError),
        not float32 (TypeError) or sparse (NotImplementedError).{raises}

    Examples
    --------
    >>> import torch
    >>> from softmaxlib.optim.torch import {name}
    >>> _ = torch.manual_seed(0)
    >>> model = torch.nn.Linear(128, 64)          # 8192 weights: 8-bit states; 64 biases: float32
    >>> optimizer = {name}(model.parameters(), {example})
    >>> for _ in range(3):
    ...     optimizer.zero_grad()
    ...     model(torch.randn(32, 128)).square().mean().backward()
    ...     optimizer.step()
    >>> state = optimizer.state[model.weight]
    >>> state["step"], state["state1"].dtype, state["state1"].shape, state["absmax1"].shape
    (3, torch.uint8, torch.Size([64, 128]), torch.Size([32]))
    >>> optimizer.state[model.bias]["state1"].dtype, optimizer.skipped
    (torch.float32, 0)
    """


def _documented(summary, counterpart, hyper, example, raises=""):
    def document(cls):
        lines = "".join(f"    {name} : {kind}\n        {text}.\n" for name, kind, text in hyper)
        cls.__doc__ = _DOC.format(summary=summary, counterpart=counterpart, hyper=lines, name=cls.__name__,
                                  example=example, raises=raises)
        return cls
    return document


_ADAM_HYPER = [("betas", "(float, float), optional", "The decay rates of m and v, each in [0, 1) "
                                                      "(default: (0.9, 0.999))"),
               ("eps", "float, optional", "Added to the denominator, > 0 (default: 1e-8)")]


def _lr(default):
    return ("lr", "float, optional", f"The learning rate, >= 0 (default: {default})")


@_documented("Adam with 8-bit states (Dettmers et al., 2021).", "torch.optim.Adam (weight decay as L2)",
             [_lr("1e-3")] + _ADAM_HYPER + [("weight_decay", "float, optional", "L2 penalty, >= 0 (default: 0)")],
             "lr=1e-3")
class Adam8bit(_Optimizer8bit):
    _name = "adam"
    _BNB_ONLY = ("alpha", "t_alpha", "t_beta3")  # bitsandbytes' AdEMAMix hyper-parameters
    _decoupled = False  # AdamW8bit: weight decay as p *= 1 - lr wd

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, *, blocksize=256,
                 min_8bit_size=MIN_8BIT_SIZE, workers=None):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay), blocksize,
                         min_8bit_size, workers)

    def _validate(self, group):
        _adam_constants(group["lr"], group["betas"], group["eps"], group["weight_decay"], 1,
                       decoupled=self._decoupled)

    def _update(self, p, g, state, group, step):
        return (adamw_step if self._decoupled else adam_step)(
            p, g, state, lr=group["lr"], betas=group["betas"], eps=group["eps"], weight_decay=group["weight_decay"],
            step=step, workers=self.workers)


@_documented("AdamW with 8-bit states (Dettmers et al., 2021).", "torch.optim.AdamW (decoupled weight decay)",
             [_lr("1e-3")] + _ADAM_HYPER + [("weight_decay", "float, optional",
                                             "Decoupled weight decay, >= 0 (default: 1e-2)")],
             "lr=1e-3, weight_decay=1e-2")
class AdamW8bit(Adam8bit):
    _name = "adamw"
    _decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, *, blocksize=256,
                 min_8bit_size=MIN_8BIT_SIZE, workers=None):
        super().__init__(params, lr, betas, eps, weight_decay, blocksize=blocksize, min_8bit_size=min_8bit_size,
                         workers=workers)


@_documented("SGD with an 8-bit momentum.", "torch.optim.SGD",
             [_lr("1e-3"),
              ("momentum", "float", "The momentum factor, > 0: the default 0, as torch's, is plain SGD, which "
                                    "keeps no state (use torch.optim.SGD)"),
              ("dampening", "float, optional", "Dampening of the momentum, in [0, 1] (default: 0)"),
              ("weight_decay", "float, optional", "L2 penalty, >= 0 (default: 0)"),
              ("nesterov", "bool, optional", "Nesterov's momentum (needs dampening 0; default: False)")],
             "lr=0.01, momentum=0.9")
class SGD8bit(_Optimizer8bit):
    _name = "sgd"
    _BNB_KEYS = {"momentum": ("betas", 0), "dampening": ("betas", 1)}
    _BNB_ONLY = ("betas", "eps")

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, *,
                 blocksize=256, min_8bit_size=MIN_8BIT_SIZE, workers=None):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                                      nesterov=nesterov), blocksize, min_8bit_size, workers)

    def _validate(self, group):
        _sgd_constants(group["lr"], group["momentum"], group["dampening"], group["nesterov"], group["weight_decay"], 1)

    def _update(self, p, g, state, group, step):
        return sgd_step(p, g, state, lr=group["lr"], momentum=group["momentum"], dampening=group["dampening"],
                        nesterov=group["nesterov"], weight_decay=group["weight_decay"], step=step,
                        workers=self.workers)


@_documented("Lion (Chen et al., 2023, \"Symbolic Discovery of Optimization Algorithms\") with an 8-bit "
             "momentum:\n    c = b1 m + (1 - b1) g; p = p (1 - lr wd) - lr sign(c); m = b2 m + (1 - b2) g.\n\n"
             "    It converges slower than float32 Lion, as bitsandbytes' Lion8bit does: a step moves m by\n"
             "    (1 - b2) (g - m), for many elements less than half a code of the 8-bit map, so m lags (on a\n"
             "    least-squares problem 40-90% of its codes stayed put each step, and the loss after 500 steps\n"
             "    was 1.5 times float32 Lion's).",
             "bitsandbytes' Lion8bit (torch has no Lion)",
             [_lr("1e-4"),
              ("betas", "(float, float), optional", "The interpolation and decay rates, each in [0, 1) "
                                                    "(default: (0.9, 0.99))"),
              ("weight_decay", "float, optional", "Decoupled weight decay, >= 0 (default: 0)")],
             "lr=1e-4")
class Lion8bit(_Optimizer8bit):
    _name = "lion"
    _BNB_ONLY = ("eps",)

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, *, blocksize=256,
                 min_8bit_size=MIN_8BIT_SIZE, workers=None):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay), blocksize, min_8bit_size,
                         workers)

    def _validate(self, group):
        _lion_constants(group["lr"], group["betas"], group["weight_decay"], 1)

    def _update(self, p, g, state, group, step):
        return lion_step(p, g, state, lr=group["lr"], betas=group["betas"], weight_decay=group["weight_decay"],
                         step=step, workers=self.workers)


@_documented("RMSprop with an 8-bit mean square.", "torch.optim.RMSprop (without momentum, not centered)",
             [_lr("1e-2"),
              ("alpha", "float, optional", "The decay rate of the mean square, in [0, 1] (default: 0.99)"),
              ("eps", "float, optional", "Added to the denominator, > 0 (default: 1e-8)"),
              ("weight_decay", "float, optional", "L2 penalty, >= 0 (default: 0)"),
              ("momentum", "float, optional", "Only 0 (default): momentum would need a second state"),
              ("centered", "bool, optional", "Only False (default): centering would need a second state")],
             "lr=1e-3", raises="\n        NotImplementedError too for a momentum other than 0 or centered=True.")
class RMSprop8bit(_Optimizer8bit):
    _name = "rmsprop"
    _BNB_KEYS = {"alpha": ("betas", 0), "momentum": ("betas", 1)}
    _BNB_ONLY = ("betas",)

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False, *,
                 blocksize=256, min_8bit_size=MIN_8BIT_SIZE, workers=None):
        # Checked but not kept: not being hyper-parameters here, a scheduler that cycles momentum
        # (OneCycleLR's default) says it cannot instead of setting one.
        _no_rmsprop_momentum(momentum, centered)
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay), blocksize,
                         min_8bit_size, workers)

    def _validate(self, group):
        _no_rmsprop_momentum(group.get("momentum", 0.0), group.get("centered", False))
        _rmsprop_constants(group["lr"], group["alpha"], group["eps"], group["weight_decay"])

    def _update(self, p, g, state, group, step):
        return rmsprop_step(p, g, state, lr=group["lr"], alpha=group["alpha"], eps=group["eps"],
                            weight_decay=group["weight_decay"], workers=self.workers)


def _no_rmsprop_momentum(momentum, centered):
    if momentum != 0.0 or centered:
        raise NotImplementedError("RMSprop8bit has no momentum nor centered variant (each would need a second "
                                  f"state): momentum must be 0 and centered False, not {momentum} and {centered}")


@_documented("Adagrad with an 8-bit sum of squares.", "torch.optim.Adagrad",
             [_lr("1e-2"),
              ("lr_decay", "float, optional", "The learning rate's decay, >= 0 (default: 0)"),
              ("weight_decay", "float, optional", "L2 penalty, >= 0 (default: 0)"),
              ("initial_accumulator_value", "float, optional", "The sum of squares' start, >= 0 (default: 0)"),
              ("eps", "float, optional", "Added to the denominator, > 0 (default: 1e-10)")],
             "lr=1e-2")
class Adagrad8bit(_Optimizer8bit):
    _name = "adagrad"
    _BNB_ONLY = ("betas",)

    def __init__(self, params, lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10, *,
                 blocksize=256, min_8bit_size=MIN_8BIT_SIZE, workers=None):
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value, eps=eps), blocksize,
                         min_8bit_size, workers)

    def _validate(self, group):
        _adagrad_constants(group["lr"], group["lr_decay"], group["eps"], group["weight_decay"], 1)
        start = group["initial_accumulator_value"]
        if not (math.isfinite(start) and start >= 0.0):
            raise ValueError(f"Invalid initial_accumulator_value: {start}")

    def _update(self, p, g, state, group, step):
        return adagrad_step(p, g, state, lr=group["lr"], lr_decay=group["lr_decay"], eps=group["eps"],
                            weight_decay=group["weight_decay"], step=step, workers=self.workers)

"""softmaxlib.optim: the fused 8-bit optimizer steps of every optimizer on every backend.

Each step is checked against the float64 oracles of tests/oracle.py: the states are dequantized
exactly (code * absmax in float64), updated in float64 with the user's hyper-parameters, and
requantized on their float64 absmax (oracle.nearest_codes_of_state). Then: every backend and
every `workers` gives the same bits, the non-finite guard (skipped elements keep their parameter,
the count is exact, nothing becomes NaN or inf), the signs of the codes, the float32 states below
min_8bit_size, bad input (a clear error, nothing modified), the states' layout, guard pages and
misaligned arrays.

The bounds (assert_step_matches), with u = 2^-24, the float32 rounding unit:
  p       |p - ref| <= P_ULPS float32 ULPs of p_scale, the sum of the magnitudes of the step's terms,
          |p decay| + lr |update| with every term of the update taken positive (no cancellation).
          Each float32 operation (and each constant rounded to float32) errs by at most u relative
          to a value no larger than its term's magnitude, and u x <= ULP(x): Adam's chain of about a
          dozen (dequantization, two products and a sum per state, sqrt, the corrections, eps, the
          division, lr, the decay and the subtraction) stays below 12 ULPs of p_scale, about 6 for
          errors of random sign; the worst measured over 8 seeds x every case is 4.5, so 8.
          Where the decayed gradient g + wd p is itself rounded (wd > 0), the kernel sees a gradient
          within GRADIENT_ROUNDING of the true one; ref is then the envelope of the oracle over that
          interval (Adam's and RMSprop's updates divide by a function of the gradient, so a
          cancelling g + wd p moves p by more than an ULP of p_scale). Lion's sign(c) may flip where
          |c| is within rounding of 0: there, ref is p decay - lr s for any s in {-1, 0, 1}.
  states  |s - ref| <= STATE_ULPS ULPs of the state's magnitude (b1 |m| + (1 - b1) |g|, and so on):
          about six roundings (dequantization, the constants, two products, g^2, the sum); the
          worst measured is 3.5. So absmax lies within the largest such bound of its block, and each
          code is the nearest to a scaled state within that bound (plus 2^-21 of it for the float32
          scaling and midpoints) of the float64 scaled state: identical to the oracle's code except
          near a midpoint, where it may be the neighbour (test_most_codes_are_checked_exactly keeps
          that window small).
"""
import math
from typing import NamedTuple

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import oracle
import softmaxlib
import zoo
from conftest import examples
from softmaxlib import _bindings, optim

F64 = np.float64
FLT_MAX = float(np.finfo(np.float32).max)
P_ULPS = 8
STATE_ULPS = 6
GRADIENT_ROUNDING = 2.0**-22  # relative to |g| + wd |p|: fl32(g + fl32(wd32 p)) is within 2^-23 of it
SIGN_ROUNDING = 2.0**-21  # relative to b1 |m| + (1 - b1) |g|: Lion's c is within 2^-22 of it
OVERFLOW_MARGIN = 2.0**-16  # relative to FLT_MAX: float64 values this close may round either way
WORKERS = (1, 2, 3, 7)
TAKES_STEP = ("adam", "adamw", "sgd", "lion", "adagrad")  # rmsprop_step takes no step number

# The vector widths of the optimizer kernels (csrc/tiles.h), for sizes around them.
LANES = sorted({sizes[0] for sizes in zoo.tiles("optim").values()}) or [8, 16]


class Case(NamedTuple):
    optimizer: str
    hyper: dict  # every hyper-parameter of optim.<optimizer>_step but step
    init: dict = {}  # init_state's keywords


CASES = {
    "adam": Case("adam", dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)),
    "adam-l2": Case("adam", dict(lr=3e-3, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)),
    "adamw": Case("adamw", dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05)),
    "sgd": Case("sgd", dict(lr=0.05, momentum=0.9, dampening=0.0, nesterov=False, weight_decay=0.0)),
    "sgd-dampening-l2": Case("sgd", dict(lr=0.05, momentum=0.8, dampening=0.3, nesterov=False, weight_decay=0.01)),
    "sgd-nesterov": Case("sgd", dict(lr=0.05, momentum=0.9, dampening=0.0, nesterov=True, weight_decay=0.01)),
    "lion": Case("lion", dict(lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1)),
    "lion-betas": Case("lion", dict(lr=1e-2, betas=(0.5, 0.95), weight_decay=0.0)),
    "rmsprop": Case("rmsprop", dict(lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0)),
    "rmsprop-l2": Case("rmsprop", dict(lr=1e-3, alpha=0.5, eps=1e-6, weight_decay=0.05)),
    "adagrad": Case("adagrad", dict(lr=0.1, lr_decay=0.0, eps=1e-10, weight_decay=0.0)),
    "adagrad-lr_decay-initial": Case("adagrad", dict(lr=0.1, lr_decay=0.05, eps=1e-10, weight_decay=0.01),
                                     dict(initial_accumulator_value=0.1)),
}
# One case per optimizer, for the tests that need not see every hyper-parameter set.
ONE_PER_OPTIMIZER = {"adam": "adam-l2", "adamw": "adamw", "sgd": "sgd-nesterov", "lion": "lion",
                     "rmsprop": "rmsprop-l2", "adagrad": "adagrad-lr_decay-initial"}

# (blocksize, n): one element, whole blocks, partial last blocks whose vector tail is one below and
# one above each vector width (and two of them), a single partial block, the largest block.
LAYOUTS = sorted({(64, 1), (64, 3 * 64), (256, 100), (4096, 4096 + 7), (4096, 2 * 4096 - 1)}
                 | {(64, 5 * 64 + lanes + d) for lanes in LANES for d in (-1, 1)}
                 | {(256, 4 * 256 + 2 * lanes + 1) for lanes in LANES})


@pytest.fixture(params=list(CASES))
def case(request):
    return CASES[request.param]


# ------------------------------------------------------------------ helpers


def run_step(optimizer, p, g, state, hyper, step, **keywords):
    """optim.<optimizer>_step(p, g, state, **hyper, step=step, **keywords); the skipped count."""
    if optimizer in TAKES_STEP:
        keywords["step"] = step
    return getattr(optim, f"{optimizer}_step")(p, g, state, **hyper, **keywords)


def state_arrays(state):
    """The arrays a step updates in a state, in a fixed order."""
    if isinstance(state, optim.State32bit):
        return tuple(a for a in (state.state1, state.state2) if a is not None)
    return tuple(a for a in (state.codes1, state.absmax1, state.codes2, state.absmax2) if a is not None)


def copy_state(state):
    if isinstance(state, optim.State32bit):
        return optim.State32bit(state.state1.copy(), None if state.state2 is None else state.state2.copy())
    second = () if state.codes2 is None else (state.codes2.copy(), state.absmax2.copy(), state.map2.copy())
    return optim.State8bit(state.codes1.copy(), state.absmax1.copy(), state.map1.copy(), *second,
                           blocksize=state.blocksize)


def exact_states(state):
    """The states' values in float64: code * absmax exactly (24 by 24 bits), or the float32 states."""
    if isinstance(state, optim.State32bit):
        return tuple(s.reshape(-1).astype(F64) for s in state.dequantized())
    return tuple(code.astype(F64)[codes.reshape(-1)] * np.repeat(absmax.astype(F64), state.blocksize)[:state.size]
                 for codes, absmax, code in ((state.codes1, state.absmax1, state.map1),
                                             (state.codes2, state.absmax2, state.map2)) if codes is not None)


def assert_same_bits(got, expected, context):
    got, expected = np.asarray(got), np.asarray(expected)
    assert got.dtype == expected.dtype and got.shape == expected.shape, context
    if got.tobytes() != expected.tobytes():
        unsigned = f"u{got.dtype.itemsize}"
        differ = np.flatnonzero(got.reshape(-1).view(unsigned) != expected.reshape(-1).view(unsigned))
        pytest.fail(f"{context}: {differ.size} of {got.size} differ, the first at {differ[0]}: "
                    f"{got.reshape(-1)[differ[0]]!r} against {expected.reshape(-1)[differ[0]]!r}")


def ulp32(x):
    """The float32 ULP of each |x| (float64 in, float64 out; 2^-149 for 0 and subnormals)."""
    _, exponent = np.frexp(np.abs(np.asarray(x, F64)))
    return np.where(x == 0, 2.0**-149, np.maximum(np.ldexp(1.0, exponent - 24), 2.0**-149))


def gradients(rng, n, blocksize, zeros=0.02):
    """N(0, 1) scaled per block by 10^U(-3, 3), with some exact zeros."""
    scale = np.repeat(10.0 ** rng.uniform(-3, 3, -(-n // blocksize)), blocksize)[:n]
    g = (rng.standard_normal(n) * scale).astype(np.float32)
    g[rng.random(n) < zeros] = 0
    return g


# ------------------------------------------------------------------ the float64 reference of one step


def l2_of(optimizer, hyper):
    """The weight decay the kernel adds to the gradient (float32: a decay that rounds to 0 is none)."""
    coupled = optimizer in ("adam", "sgd", "rmsprop", "adagrad")
    return float(np.float32(hyper["weight_decay"])) if coupled else 0.0


def oracle_step(optimizer, hyper, step, p, g, states):
    """(p, [states]) after one step of the float64 oracle (tests/oracle.py)."""
    h = hyper
    if optimizer in ("adam", "adamw"):
        result = oracle.adam_step(p, g, *states, lr=h["lr"], betas=h["betas"], eps=h["eps"],
                                  weight_decay=h["weight_decay"], step=step, decoupled=optimizer == "adamw")
    elif optimizer == "sgd":
        result = oracle.momentum_step(p, g, *states, lr=h["lr"], momentum=h["momentum"], dampening=h["dampening"],
                                      nesterov=h["nesterov"], weight_decay=h["weight_decay"], step=step)
    elif optimizer == "lion":
        result = oracle.lion_step(p, g, *states, lr=h["lr"], betas=h["betas"], weight_decay=h["weight_decay"])
    elif optimizer == "rmsprop":
        result = oracle.rms_step(p, g, *states, lr=h["lr"], alpha=h["alpha"], eps=h["eps"],
                                 weight_decay=h["weight_decay"])
    else:
        result = oracle.rms_step(p, g, *states, lr=h["lr"] / (1 + (step - 1) * h["lr_decay"]), alpha=1.0,
                                 eps=h["eps"], weight_decay=h["weight_decay"], adagrad=True)
    return result[0], [s for s in result[1:] if s is not None]


def skip_masks(optimizer, hyper, step, p, g, states):
    """(surely, possibly) skipped elements: those whose gradient, decayed gradient, g^2 (Adam, RMSprop,
    Adagrad), updated state or SGD direction is not finite in float32, from float64 values (surely:
    beyond FLT_MAX by more than OVERFLOW_MARGIN; possibly: within it of FLT_MAX)."""
    h = hyper
    with np.errstate(all="ignore"):
        l2 = l2_of(optimizer, hyper)
        grad = g + l2 * p if l2 else g
        values = [g, grad] + ([l2 * p] if l2 else [])
        if optimizer in ("adam", "adamw"):
            beta1, beta2 = h["betas"]
            m, v = states
            values += [grad * grad, beta1 * m + (1 - beta1) * grad, beta2 * v + (1 - beta2) * grad * grad]
        elif optimizer == "sgd":
            b = grad if step == 1 else h["momentum"] * states[0] + (1 - h["dampening"]) * grad
            values += [b, grad + h["momentum"] * b if h["nesterov"] else b]
        elif optimizer == "lion":
            values.append(h["betas"][1] * states[0] + (1 - h["betas"][1]) * g)
        else:
            alpha = h["alpha"] if optimizer == "rmsprop" else 1.0
            gain = 1 - alpha if optimizer == "rmsprop" else 1.0
            values += [grad * grad, alpha * states[0] + gain * grad * grad]
        surely = np.zeros(g.shape, bool)
        possibly = np.zeros(g.shape, bool)
        for value in values:
            size = np.abs(value)
            surely |= ~np.isfinite(value) | (size > FLT_MAX * (1 + OVERFLOW_MARGIN))
            possibly |= ~np.isfinite(value) | (size > FLT_MAX * (1 - OVERFLOW_MARGIN))
    return surely, possibly


def magnitudes(optimizer, hyper, step, p, g, states, delta):
    """(p_scale, [state scales]): the step's terms taken positive (see the module's docstring). delta:
    the rounding of the decayed gradient, which lowers the denominators at most so much."""
    h = hyper
    a = np.abs
    l2 = l2_of(optimizer, hyper)
    with np.errstate(all="ignore"):
        grad = g + l2 * p if l2 else g
        size = a(g) + l2 * a(p)  # the decayed gradient's terms
        low = np.maximum(a(grad) - delta, 0)  # its smallest size after rounding
        if optimizer in ("adam", "adamw"):
            beta1, beta2 = h["betas"]
            m, v = states
            correction2 = 1 / math.sqrt(1 - beta2**step)
            decay = 1 - h["lr"] * h["weight_decay"] if optimizer == "adamw" else 1.0
            m_scale = beta1 * a(m) + (1 - beta1) * size
            v_scale = beta2 * v + (1 - beta2) * size * size
            denominator = np.sqrt(beta2 * v + (1 - beta2) * low * low) * correction2 + h["eps"]
            lr = h["lr"] / (1 - beta1**step)
            return a(p) * decay + lr * m_scale / denominator, [m_scale, v_scale]
        if optimizer == "sgd":
            b_scale = size if step == 1 else h["momentum"] * a(states[0]) + (1 - h["dampening"]) * size
            direction = size + h["momentum"] * b_scale if h["nesterov"] else b_scale
            return a(p) + h["lr"] * direction, [b_scale]
        if optimizer == "lion":
            beta1, beta2 = h["betas"]
            decay = 1 - h["lr"] * h["weight_decay"]
            return a(p) * decay + h["lr"], [beta2 * a(states[0]) + (1 - beta2) * a(g)]
        alpha, gain = (h["alpha"], 1 - h["alpha"]) if optimizer == "rmsprop" else (1.0, 1.0)
        lr = h["lr"] if optimizer == "rmsprop" else h["lr"] / (1 + (step - 1) * h["lr_decay"])
        v_scale = alpha * states[0] + gain * size * size
        denominator = np.sqrt(alpha * states[0] + gain * low * low) + h["eps"]
        return a(p) + lr * size / denominator, [v_scale]


class Expected(NamedTuple):
    low: np.ndarray  # p after the step: the oracle's envelope, float64
    high: np.ndarray
    p_scale: np.ndarray
    states: list  # float64 states after the step (the old values where skipped)
    state_scales: list
    skipped: np.ndarray  # bool: surely skipped
    possibly_skipped: np.ndarray


def expected_step(optimizer, hyper, step, p, g, state):
    """The float64 reference of one step of `optimizer` on p, g and the state as they are now."""
    with np.errstate(all="ignore"):  # NaN and inf parameters and gradients are among the inputs
        return _expected_step(optimizer, hyper, step, p, g, state)


def _expected_step(optimizer, hyper, step, p, g, state):
    p, g = p.reshape(-1).astype(F64), np.asarray(g, np.float32).reshape(-1).astype(F64)
    old = exact_states(state)
    skipped, possibly = skip_masks(optimizer, hyper, step, p, g, old)
    new_p, new_states = oracle_step(optimizer, hyper, step, p, g, old)
    new_p = np.where(skipped, p, new_p)
    new_states = [np.where(skipped, s_old, s_new) for s_old, s_new in zip(old, new_states)]
    l2 = l2_of(optimizer, hyper)
    delta = GRADIENT_ROUNDING * (np.abs(g) + l2 * np.abs(p)) if l2 else np.zeros_like(g)
    low = high = new_p
    if l2:
        for shifted in (g - delta, g + delta):
            other = np.where(skipped, p, oracle_step(optimizer, hyper, step, p, shifted, old)[0])
            low, high = np.fmin(low, other), np.fmax(high, other)
    p_scale, state_scales = magnitudes(optimizer, hyper, step, p, g, old, delta)
    if optimizer == "lion":  # sign(c) is either sign (or 0) where c is within rounding of 0
        beta1 = hyper["betas"][0]
        c = beta1 * old[0] + (1 - beta1) * g
        unsure = ~skipped & (np.abs(c) <= SIGN_ROUNDING * (beta1 * np.abs(old[0]) + (1 - beta1) * np.abs(g)))
        decayed = p * (1 - hyper["lr"] * hyper["weight_decay"])
        low = np.where(unsure, np.fmin(low, decayed - hyper["lr"]), low)
        high = np.where(unsure, np.fmax(high, decayed + hyper["lr"]), high)
    state_scales = [np.where(skipped, np.abs(s_old), scale) for s_old, scale in zip(old, state_scales)]
    return Expected(low, high, np.where(skipped, np.abs(p), p_scale), new_states, state_scales, skipped, possibly)


def assert_codes_match(codes, absmax, values, scales, code, blocksize, context, stochastic_step=None):
    """8-bit state (codes, absmax) against float64 values known within STATE_ULPS ULPs of `scales`:
    absmax within the largest error of its block, and each code the nearest to some scaled value
    within the error of values / absmax (see the module's docstring). With stochastic_step (Lion's
    momentum at that step), each code one of the two around such a value, and the oracle's own
    choice where its decision is further than that error from going the other way."""
    n = values.size
    error = STATE_ULPS * ulp32(scales)
    expected_codes, expected_absmax = oracle.nearest_codes_of_state(values, code, blocksize)
    if stochastic_step is not None:
        expected_codes, _, margin = oracle.stochastic_codes_of_state(values, code, blocksize, stochastic_step)
    blocks = expected_absmax.size
    padded = np.zeros(blocks * blocksize)
    padded[:n] = error
    block_error = padded.reshape(blocks, blocksize).max(axis=1)
    off = np.abs(absmax.astype(F64) - expected_absmax)
    assert (off <= block_error).all(), (
        f"{context}: absmax of block {np.argmax(off - block_error)}: {absmax[np.argmax(off - block_error)]!r} "
        f"against {expected_absmax[np.argmax(off - block_error)]!r}")
    scale = np.repeat(expected_absmax, blocksize)[:n]
    scale_error = np.repeat(block_error, blocksize)[:n]
    decided = scale > scale_error  # a block within its error of 0 may have any codes
    y = np.where(decided, values / np.where(decided, scale, 1), 0.0)
    # the state's error, the absmax's, and the float32 scaling and midpoints (2^-21 |y|)
    tolerance = (error + np.abs(y) * scale_error) / np.where(decided, scale, 1) + 2.0**-21 * np.abs(y)
    midpoints = (code.astype(F64)[:-1] + code.astype(F64)[1:]) / 2
    lowest = np.searchsorted(midpoints, y - tolerance, side="left")
    highest = np.searchsorted(midpoints, y + tolerance, side="left")
    exact = decided & (lowest == highest)
    if stochastic_step is not None:  # the codes around: below the lowest value, above the highest
        lowest = np.clip(np.searchsorted(code.astype(F64), y - tolerance, side="right") - 1, 0, 255)
        highest = np.clip(np.searchsorted(code.astype(F64), y + tolerance, side="left"), 0, 255)
        # y's error, and the float32 probability's (a few roundings of a number below 1) times the gap (<= 2)
        exact &= margin > 2 * tolerance + 2.0**-20
    q = codes.reshape(-1).astype(int)
    wrong = decided & ((q < lowest) | (q > highest))
    assert not wrong.any(), (
        f"{context}: {wrong.sum()} codes are not the nearest, the first at {np.argmax(wrong)}: "
        f"{q[np.argmax(wrong)]} for the state {values[np.argmax(wrong)]!r} (the oracle's code "
        f"{expected_codes[np.argmax(wrong)]}, any of {lowest[np.argmax(wrong)]}..{highest[np.argmax(wrong)]})")
    np.testing.assert_array_equal(q[exact], expected_codes[exact], err_msg=context)
    return exact.sum() / max(decided.sum(), 1)


def assert_step_matches(expected, p_before, p, state, skipped, context, stochastic_step=None):
    """The step's outputs against the float64 reference (the bounds of the module's docstring);
    stochastic_step: Lion's step number, whose first state's codes are rounded stochastically."""
    p, p_before = p.reshape(-1), p_before.reshape(-1)
    assert not (expected.possibly_skipped & ~expected.skipped).any(), \
        f"{context}: a value within rounding of FLT_MAX (the test's inputs should avoid them)"
    assert skipped == expected.skipped.sum(), f"{context}: skipped {skipped}, expected {expected.skipped.sum()}"
    assert_same_bits(p[expected.skipped], p_before[expected.skipped], f"{context}: skipped parameters")
    value = p.astype(F64)
    special = ~(np.isfinite(expected.low) & np.isfinite(expected.high))
    np.testing.assert_array_equal(value[special], expected.low[special], err_msg=f"{context}: non-finite p")
    tolerance = P_ULPS * ulp32(expected.p_scale)
    with np.errstate(invalid="ignore"):  # the non-finite ones, checked above
        below = expected.low - tolerance - value
        above = value - expected.high - tolerance
    worst = np.argmax(np.where(special, -np.inf, np.fmax(below, above)))
    assert not ((below > 0) | (above > 0))[~special].any(), (
        f"{context}: p[{worst}] = {p[worst]!r}, the oracle's {expected.low[worst]!r}..{expected.high[worst]!r} "
        f"within {tolerance[worst]:.3g} ({P_ULPS} ULPs of {expected.p_scale[worst]:.6g})")
    if isinstance(state, optim.State32bit):
        for k, (got, values, scales) in enumerate(zip(state.dequantized(), expected.states, expected.state_scales)):
            error = np.abs(got.astype(F64) - values) - STATE_ULPS * ulp32(scales)
            assert (error <= 0).all(), (f"{context}: state {k + 1}[{np.argmax(error)}] = {got[np.argmax(error)]!r} "
                                        f"against {values[np.argmax(error)]!r}")
        return
    for k, (codes, absmax, code) in enumerate(((state.codes1, state.absmax1, state.map1),
                                               (state.codes2, state.absmax2, state.map2))[:state.states]):
        assert_codes_match(codes, absmax, expected.states[k], expected.state_scales[k], code, state.blocksize,
                           f"{context}, state {k + 1}", stochastic_step)


def checked_step(case, step, p, g, state, context, **keywords):
    """One step of `case`, checked against the reference; returns the skipped count."""
    expected = expected_step(case.optimizer, case.hyper, step, p, g, state)
    before = p.copy()
    skipped = run_step(case.optimizer, p, g, state, case.hyper, step, **keywords)
    assert_step_matches(expected, before, p, state, skipped, f"{context}, step {step}",
                        step if case.optimizer == "lion" else None)
    return skipped


# ------------------------------------------------------------------ 1. against the oracle


STEPS = 4


def test_steps_match_the_float64_oracle(case, backend, rng):
    """Four steps from the initial state, each against the oracle from the state as it is."""
    for blocksize, n in LAYOUTS:
        p = rng.standard_normal(n).astype(np.float32)
        state = optim.init_state(case.optimizer, n, blocksize=blocksize, min_8bit_size=0, **case.init)
        assert isinstance(state, optim.State8bit)
        for step in range(1, STEPS + 1):
            skipped = checked_step(case, step, p, gradients(rng, n, blocksize), state,
                                   f"blocksize {blocksize}, n {n}", backend=backend)
            assert skipped == 0


@pytest.mark.slow
@pytest.mark.parametrize("blocksize", [64, 256, 4096])
def test_many_steps_match_the_float64_oracle(case, backend, blocksize):
    """Thirty steps on 20 blocks and a partial one, each against the oracle, for two seeds."""
    for seed in range(2):
        rng = np.random.default_rng(seed)
        n = 20 * blocksize + 3 * max(LANES) + 5
        p = rng.standard_normal(n).astype(np.float32)
        state = optim.init_state(case.optimizer, n, blocksize=blocksize, min_8bit_size=0, **case.init)
        for step in range(1, 31):
            g = gradients(rng, n, blocksize)
            if step % 10 == 0:
                g = with_special_gradients(g, rng, 50)
            checked_step(case, step, p, g, state, f"seed {seed}, blocksize {blocksize}", backend=backend)


def random_state(optimizer, n, blocksize, rng, min_8bit_size=0):
    """A state holding random values (per block scales 10^U(-2, 2); the unsigned ones non-negative,
    Adam's v about m^2), 8-bit from n >= min_8bit_size."""
    signed = optim.OPTIMIZERS[optimizer][1]
    scale = np.repeat(10.0 ** rng.uniform(-2, 2, -(-n // blocksize)), blocksize)[:n]
    m = rng.standard_normal(n) * scale
    values = [m if is_signed else m * m + (rng.random(n) * scale) ** 2 for is_signed in signed]
    values = [v.astype(np.float32) for v in values]
    if n < min_8bit_size:
        return optim.State32bit(*values)
    return optim.State8bit.quantized(values, signed, blocksize=blocksize, workers=1)


@pytest.mark.parametrize("blocksize, n", [(64, 64 * 7 + 9), (256, 256 * 3 + 17), (4096, 4096 + 33)])
def test_steps_from_random_states_match_the_float64_oracle(case, backend, blocksize, n, rng):
    """Later steps (t = 5..7) from states holding random values, not zeros."""
    p = rng.standard_normal(n).astype(np.float32)
    state = random_state(case.optimizer, n, blocksize, rng)
    for step in range(5, 8):
        checked_step(case, step, p, gradients(rng, n, blocksize), state, f"random state, n {n}", backend=backend)


def test_most_codes_are_checked_exactly(rng):
    """The bounds leave only a few codes near a midpoint open to their neighbour: the code check is
    exact for at least 99% of the decided codes (so the tolerance cannot hide a wrong search)."""
    for name, case in CASES.items():
        n, blocksize = 4 * 256 + 9, 256
        p = rng.standard_normal(n).astype(np.float32)
        state = random_state(case.optimizer, n, blocksize, rng)
        g = gradients(rng, n, blocksize)
        expected = expected_step(case.optimizer, case.hyper, 3, p, g, state)
        run_step(case.optimizer, p, g, state, case.hyper, 3, backend="numba")
        for k, (codes, absmax, code) in enumerate(((state.codes1, state.absmax1, state.map1),
                                                   (state.codes2, state.absmax2, state.map2))[:state.states]):
            fraction = assert_codes_match(codes, absmax, expected.states[k], expected.state_scales[k], code,
                                          blocksize, name, 3 if case.optimizer == "lion" else None)
            assert fraction >= 0.99, f"{name}, state {k + 1}: only {fraction:.1%} of the codes checked exactly"


# ------------------------------------------------------------------ 2. backends and workers

SPECIAL_GRADIENTS = np.array([np.nan, np.inf, -np.inf, 3e38, -3e38], np.float32)
SQUARING = ("adam", "adamw", "rmsprop", "adagrad")  # their g^2 overflows for |g| = 3e38


def with_special_gradients(g, rng, count):
    """g with `count` NaN, +inf, -inf, 3e38 and -3e38 (in turn) at random places, the last element
    among them (it lies in the vector tail of a partial block)."""
    g = g.copy()
    places = np.unique(np.append(rng.choice(g.size, size=min(count, g.size), replace=False), g.size - 1))
    g[places] = np.resize(SPECIAL_GRADIENTS, places.size)
    return g


def run_steps(case, p, state, grads, first_step, **keywords):
    """The skipped counts of one step per gradient, from step number first_step."""
    return [run_step(case.optimizer, p, g, state, case.hyper, first_step + k, **keywords)
            for k, g in enumerate(grads)]


def assert_same_results(results, context):
    """results: {label: (p, state arrays, counts)}, all equal bit for bit to the first one's."""
    (first_label, (p_ref, arrays_ref, counts_ref)), *others = results.items()
    for label, (p, arrays, counts) in others:
        where = f"{context}: {label} against {first_label}"
        assert counts == counts_ref, f"{where}: skipped {counts} against {counts_ref}"
        assert_same_bits(p, p_ref, f"{where}, p")
        for k, (a, b) in enumerate(zip(arrays, arrays_ref)):
            assert_same_bits(a, b, f"{where}, state array {k}")


@pytest.mark.parametrize("blocksize, n", [(64, 64 * 40 + 13), (4096, 3 * 4096 + 17)])
def test_backends_and_workers_give_the_same_bits(case, blocksize, n, rng):
    """Three steps (with some non-finite gradients) on every backend, the C ones with each of
    WORKERS threads (the Numba twin takes and ignores `workers`)."""
    p0 = rng.standard_normal(n).astype(np.float32)
    state0 = random_state(case.optimizer, n, blocksize, rng)
    grads = [with_special_gradients(gradients(rng, n, blocksize), rng, 20) for _ in range(3)]
    results = {}
    for backend in softmaxlib.backends():
        for workers in WORKERS if backend != "numba" else (1, 3):
            p, state = p0.copy(), copy_state(state0)
            counts = run_steps(case, p, state, grads, 1, backend=backend, workers=workers)
            results[f"{backend}, workers={workers}"] = (p, state_arrays(state), counts)
    assert_same_results(results, f"blocksize {blocksize}, n {n}")


@pytest.mark.parametrize("n", [1, 100, 4095])
def test_float32_states_give_the_same_bits_everywhere(case, n, rng):
    p0 = rng.standard_normal(n).astype(np.float32)
    state0 = random_state(case.optimizer, n, 256, rng, min_8bit_size=optim.MIN_8BIT_SIZE)
    assert isinstance(state0, optim.State32bit)
    grads = [with_special_gradients(gradients(rng, n, 256), rng, 5) for _ in range(2)]
    results = {}
    for backend in softmaxlib.backends():
        for workers in (1, 3):
            p, state = p0.copy(), copy_state(state0)
            counts = run_steps(case, p, state, grads, 1, backend=backend, workers=workers)
            results[f"{backend}, workers={workers}"] = (p, state_arrays(state), counts)
    assert_same_results(results, f"n {n}")


# ------------------------------------------------------------------ 3. non-finite gradients and parameters


def assert_all_finite(p, state, context):
    assert np.isfinite(p).all(), f"{context}: a parameter became {p[~np.isfinite(p)][0]!r}"
    assert_states_finite(state, context)


def assert_states_finite(state, context):
    for k, values in enumerate(state.dequantized()):
        assert np.isfinite(values).all(), f"{context}: state {k + 1} is not finite"
    if isinstance(state, optim.State8bit):
        for absmax in (state.absmax1, state.absmax2)[:state.states]:
            assert np.isfinite(absmax).all() and (absmax >= 0).all(), f"{context}: absmax {absmax}"


def test_nonfinite_gradients_keep_their_elements(case, backend, rng):
    """NaN, +-inf and +-3e38 gradients (whose square overflows): those elements keep their
    parameter bit for bit and their state's value (coded again on the block's new absmax), the
    count is exact, and nothing becomes NaN or inf. Step 2 also has a block of NaN gradients only."""
    n, blocksize = 3 * 256 + 40, 256
    p = rng.standard_normal(n).astype(np.float32)
    state = random_state(case.optimizer, n, blocksize, rng)
    for step in range(1, 4):
        g = with_special_gradients(gradients(rng, n, blocksize), rng, 30)
        if step == 2:
            g[256:512] = np.nan
        expected = expected_step(case.optimizer, case.hyper, step, p, g, state)
        assert expected.skipped[~np.isfinite(g)].all()  # the reference's own rule, for the reader
        if case.optimizer in SQUARING:
            assert expected.skipped[np.abs(g) == np.float32(3e38)].all()
        skipped = checked_step(case, step, p, g, state, "special gradients", backend=backend)
        assert skipped >= (~np.isfinite(g)).sum()
        assert_all_finite(p, state, f"step {step}")


def test_huge_gradient_alone_is_applied_where_nothing_squares_it(backend):
    """A gradient of 3e38 is finite: SGD (no Nesterov) and Lion apply it, the others skip it."""
    n = 64
    g = np.zeros(n, np.float32)
    g[5] = 3e38
    for name in ("sgd", "lion", "adam", "adamw", "rmsprop", "adagrad"):
        case = CASES[name]
        p = np.ones(n, np.float32)
        state = optim.init_state(name, n, blocksize=64, min_8bit_size=0, **case.init)
        skipped = run_step(name, p, g, state, case.hyper, 1, backend=backend)
        assert skipped == (name in SQUARING), name
        assert (p[5] == 1) == (name in SQUARING), (name, p[5])
        assert_all_finite(p, state, name)


def test_nan_parameters_stay_nan_and_poison_nothing(case, backend, rng):
    """NaN and infinite parameters stay so (with a coupled weight decay, g + wd p is not finite and
    the element is skipped); every other element follows the oracle and stays finite."""
    n, blocksize = 2 * 256 + 19, 256
    p = rng.standard_normal(n).astype(np.float32)
    nan_at, inf_at = [0, 3, 300, n - 1], [10, 11, 400]
    p[nan_at] = np.nan
    p[inf_at] = [np.inf, -np.inf, np.inf]
    state = random_state(case.optimizer, n, blocksize, rng)
    others = np.ones(n, bool)
    others[nan_at + inf_at] = False
    for step in range(1, 3):
        checked_step(case, step, p, gradients(rng, n, blocksize), state, "NaN parameters", backend=backend)
        assert np.isnan(p[nan_at]).all()
        assert_same_bits(p[inf_at], np.array([np.inf, -np.inf, np.inf], np.float32), "infinite parameters")
        assert_all_finite(p[others], state, f"step {step}")


# ------------------------------------------------------------------ 4. signs of the codes


@pytest.mark.parametrize("optimizer", list(optim.OPTIMIZERS))
def test_codes_never_take_the_opposite_sign_of_the_state(optimizer, backend, rng):
    """Signed states: a state surely positive (negative) never gets a negative (positive) code,
    also where it is tiny beside its block's absmax; unsigned states are on the unsigned map, so
    they never go negative."""
    case = CASES[ONE_PER_OPTIMIZER[optimizer]]
    n, blocksize = 4 * 256 + 7, 256
    p = rng.standard_normal(n).astype(np.float32)
    state = random_state(optimizer, n, blocksize, rng)
    signed = optim.OPTIMIZERS[optimizer][1]
    for step in range(1, 5):
        g = (rng.standard_normal(n) * 10.0 ** rng.integers(-9, -3, n)).astype(np.float32)
        g[::97] = rng.choice([-10.0, 10.0], g[::97].size)  # a few large ones set the absmax
        expected = expected_step(optimizer, case.hyper, step, p, g, state)
        run_step(optimizer, p, g, state, case.hyper, step, backend=backend)
        for k, (codes, code) in enumerate(((state.codes1, state.map1), (state.codes2, state.map2))[:state.states]):
            shown = code[codes]
            values = expected.states[k]
            sure = np.abs(values) > STATE_ULPS * ulp32(expected.state_scales[k])
            if signed[k]:
                assert code[0] < 0 < code[-1]
                wrong = sure & (np.sign(shown) == -np.sign(values))
                assert not wrong.any(), \
                    f"step {step}, state {k + 1}: state {values[wrong][0]!r}, code {shown[wrong][0]!r}"
                assert (sure & (shown != 0)).any()  # the check saw codes of both signs' states
            else:
                assert code[0] == 0 and (code >= 0).all(), "an unsigned state on a map with negative codes"


@pytest.mark.parametrize("optimizer", ["adam", "rmsprop", "adagrad"])
def test_float32_unsigned_states_never_go_negative(optimizer, backend, rng):
    case = CASES[ONE_PER_OPTIMIZER[optimizer]]
    n = 1000
    p = rng.standard_normal(n).astype(np.float32)
    state = optim.init_state(optimizer, n, **case.init)
    for step in range(1, 4):
        g = with_special_gradients((rng.standard_normal(n) * 10.0 ** rng.integers(-30, 3, n)).astype(np.float32),
                                   rng, 10)
        run_step(optimizer, p, g, state, case.hyper, step, backend=backend)
        v = state.dequantized()[-1]
        assert not np.signbit(v).any(), f"step {step}: {v[np.signbit(v)][:3]}"


# ------------------------------------------------------------------ 5. float32 states below min_8bit_size


@pytest.mark.parametrize("n", [1, 17, 1000, optim.MIN_8BIT_SIZE - 1])
def test_float32_states_match_the_float64_oracle(case, backend, n, rng):
    """Below min_8bit_size, init_state gives float32 states, updated by the same rules: the
    states within STATE_ULPS of the oracle's, p within P_ULPS, non-finite gradients skipped."""
    p = rng.standard_normal(n).astype(np.float32)
    state = optim.init_state(case.optimizer, n, **case.init)
    assert isinstance(state, optim.State32bit)
    for step in range(1, 4):
        g = with_special_gradients(gradients(rng, n, 256), rng, 3) if step == 2 else gradients(rng, n, 256)
        checked_step(case, step, p, g, state, f"float32 states, n {n}", backend=backend)
        assert_all_finite(p, state, f"step {step}")


# ------------------------------------------------------------------ 6. bad input


def _set(key, value):
    return lambda inputs: inputs.update({key: value(inputs[key]) if callable(value) else value})


def _hyper(**changes):
    return lambda inputs: inputs["hyper"].update(changes)


BAD_INPUTS = [
    # optimizer, id, change of the inputs, exception, message
    ("adam", "p-float64", _set("p", lambda p: p.astype(np.float64)), TypeError,
     "p must be a NumPy array of float32 .*not dtype float64"),
    ("sgd", "p-list", _set("p", lambda p: p.tolist()), TypeError, "p must be a NumPy array of float32 .*not list"),
    ("lion", "p-non-contiguous", _set("p", lambda p: np.repeat(p, 2)[::2]), ValueError,
     "p must be C-contiguous and writable"),
    ("rmsprop", "p-read-only", _set("p", zoo.read_only), ValueError, "p must be C-contiguous and writable"),
    ("adagrad", "g-shorter", _set("g", lambda g: g[:-1]), ValueError, "g has 299 elements, but p has 300"),
    ("adamw", "g-int32", _set("g", lambda g: g.astype(np.int32)), TypeError,
     "g must be a floating array, not dtype int32"),
    ("lion", "g-complex", _set("g", lambda g: g.astype(np.complex64)), TypeError,
     "g must be a floating array, not dtype complex64"),
    ("sgd", "state-of-adam", _set("state", lambda s: optim.init_state("adam", 300, min_8bit_size=0)), ValueError,
     r"sgd needs a state of 1 state\(s\) of 300 elements, not State8bit\(size=300, states=2"),
    ("adam", "state-of-rmsprop", _set("state", lambda s: optim.init_state("rmsprop", 300, min_8bit_size=0)),
     ValueError, r"adam needs a state of 2 state\(s\) of 300 elements, not State8bit\(size=300, states=1"),
    ("adamw", "float32-state-of-lion", _set("state", lambda s: optim.init_state("lion", 300)), ValueError,
     r"adamw needs a state of 2 state\(s\) of 300 elements, not State32bit\(size=300, states=1\)"),
    ("rmsprop", "state-of-another-size", _set("state", lambda s: optim.init_state("rmsprop", 301, min_8bit_size=0)),
     ValueError, r"rmsprop needs a state of 1 state\(s\) of 300 elements, not State8bit\(size=301"),
    ("lion", "float32-state-of-another-size", _set("state", lambda s: optim.init_state("lion", 299)), ValueError,
     r"lion needs a state of 1 state\(s\) of 300 elements, not State32bit\(size=299"),
    ("adagrad", "state-a-dict", _set("state", {}), TypeError, "state must be a State8bit or State32bit"),
    ("adam", "negative-lr", _hyper(lr=-1e-3), ValueError, "Invalid learning rate: -0.001"),
    ("sgd", "nan-lr", _hyper(lr=float("nan")), ValueError, "Invalid learning rate: nan"),
    ("lion", "lr-a-string", _hyper(lr="fast"), TypeError, "learning rate must be a real number, not str"),
    ("adam", "beta1-1", _hyper(betas=(1.0, 0.999)), ValueError, r"Invalid beta1 \(betas\[0\]\): 1.0"),
    ("adamw", "beta2-negative", _hyper(betas=(0.9, -0.1)), ValueError, r"Invalid beta2 \(betas\[1\]\): -0.1"),
    ("lion", "beta2-above-1", _hyper(betas=(0.9, 1.5)), ValueError, r"Invalid beta2 \(betas\[1\]\): 1.5"),
    ("lion", "betas-not-a-pair", _hyper(betas=0.9), TypeError, "betas must be a pair of numbers, not 0.9"),
    ("adam", "negative-eps", _hyper(eps=-1e-8), ValueError, "Invalid epsilon value: -1e-08"),
    ("rmsprop", "negative-eps", _hyper(eps=-1.0), ValueError, "Invalid epsilon value: -1.0"),
    ("adagrad", "negative-eps", _hyper(eps=-1e-10), ValueError, "Invalid epsilon value: -1e-10"),
    ("adamw", "eps-0", _hyper(eps=0.0), ValueError, "Invalid epsilon value: 0"),
    ("adamw", "negative-weight_decay", _hyper(weight_decay=-0.01), ValueError, "Invalid weight_decay value: -0.01"),
    ("sgd", "negative-weight_decay", _hyper(weight_decay=-1), ValueError, "Invalid weight_decay value: -1"),
    ("lion", "negative-weight_decay", _hyper(weight_decay=-1), ValueError, "Invalid weight_decay value: -1"),
    ("rmsprop", "negative-weight_decay", _hyper(weight_decay=-1), ValueError, "Invalid weight_decay value: -1"),
    ("adagrad", "negative-weight_decay", _hyper(weight_decay=-1), ValueError, "Invalid weight_decay value: -1"),
    ("adam", "step-0", _set("step", 0), ValueError, r"step must be the step's number, an integer >= 1 .*not 0"),
    ("sgd", "step-1.5", _set("step", 1.5), ValueError, "step must be the step's number.*not 1.5"),
    ("adagrad", "step-True", _set("step", True), ValueError, "step must be the step's number.*not True"),
    ("adamw", "step-a-string", _set("step", "2"), ValueError, "step must be the step's number.*not '2'"),
    ("sgd", "momentum-0", _hyper(momentum=0.0), ValueError, "momentum must be > 0"),
    ("sgd", "negative-momentum", _hyper(momentum=-0.5), ValueError, "Invalid momentum value: -0.5"),
    ("sgd", "nesterov-with-dampening", _hyper(nesterov=True, dampening=0.1), ValueError,
     "Nesterov momentum requires a momentum and zero dampening"),
    ("sgd", "dampening-above-1", _hyper(dampening=1.5), ValueError, "Invalid dampening value: 1.5"),
    ("rmsprop", "alpha-above-1", _hyper(alpha=1.5), ValueError, "Invalid alpha value: 1.5"),
    ("adagrad", "negative-lr_decay", _hyper(lr_decay=-0.1), ValueError, "Invalid lr_decay value: -0.1"),
    ("adam", "unknown-backend", _hyper(backend="avx1024"), ValueError, "unknown softmaxlib backend 'avx1024'"),
    ("sgd", "workers-0", _hyper(workers=0), ValueError, "workers must be a positive number of threads"),
]


def snapshot(inputs):
    """The bytes of every array among the inputs (the state's too)."""
    arrays = [inputs["p"], inputs["g"]]
    if isinstance(inputs["state"], (optim.State8bit, optim.State32bit)):
        arrays += state_arrays(inputs["state"])
    return [(id(a), a.tobytes()) for a in arrays if isinstance(a, np.ndarray)]


@pytest.mark.parametrize("optimizer, change, error, message",
                         [pytest.param(o, c, e, m, id=f"{o}-{i}") for o, i, c, e, m in BAD_INPUTS])
def test_bad_input_raises_a_clear_error_and_changes_nothing(optimizer, change, error, message, rng):
    n = 300
    case = CASES[ONE_PER_OPTIMIZER[optimizer]]
    inputs = dict(p=rng.standard_normal(n).astype(np.float32), g=rng.standard_normal(n).astype(np.float32),
                  state=random_state(optimizer, n, 64, rng), hyper=dict(case.hyper), step=3)
    change(inputs)
    before = snapshot(inputs)
    with pytest.raises(error, match=message):
        run_step(optimizer, inputs["p"], inputs["g"], inputs["state"], inputs["hyper"], inputs["step"])
    assert snapshot(inputs) == before, "an input was modified by a call that raised"


BAD_BLOCKSIZES = [0, 32, 100, 4096 + 64, 8192, -64, 64.0, True, "256", None]


@pytest.mark.parametrize("blocksize", BAD_BLOCKSIZES, ids=repr)
def test_bad_blocksize_is_refused(blocksize):
    message = "blocksize must be a multiple of 64 from 64 to 4096"
    with pytest.raises(ValueError, match=message):
        optim.init_state("adam", optim.MIN_8BIT_SIZE, blocksize=blocksize)
    with pytest.raises(ValueError, match=message):
        optim.State8bit.quantized([np.ones(100, np.float32)], [True], blocksize=blocksize)
    with pytest.raises(ValueError, match=message):
        optim.State8bit(np.zeros(100, np.uint8), np.zeros(2, np.float32), optim.dynamic_map(True), blocksize=blocksize)


def test_bad_state_arrays_are_refused():
    code = optim.dynamic_map(True)
    with pytest.raises(TypeError, match="codes1 must be a NumPy array of uint8, not dtype int8"):
        optim.State8bit(np.zeros(100, np.int8), np.zeros(2, np.float32), code, blocksize=64)
    with pytest.raises(ValueError, match=r"absmax1 must have shape \(2,\), not \(3,\)"):
        optim.State8bit(np.zeros(100, np.uint8), np.zeros(3, np.float32), code, blocksize=64)
    with pytest.raises(ValueError, match="absmax1 must hold finite non-negative values"):
        optim.State8bit(np.zeros(100, np.uint8), np.array([1, np.nan], np.float32), code, blocksize=64)
    with pytest.raises(ValueError, match="codes2 has 99 elements, codes1 100"):
        optim.State8bit(np.zeros(100, np.uint8), np.zeros(2, np.float32), code, np.zeros(99, np.uint8),
                        np.zeros(2, np.float32), code, blocksize=64)
    with pytest.raises(ValueError, match="a state's values must be finite"):
        optim.State8bit.quantized([np.array([1, np.inf], np.float32)], [True], blocksize=64)
    with pytest.raises(ValueError, match="a state on the unsigned map must be non-negative"):
        optim.State8bit.quantized([np.array([1, -1], np.float32)], [False], blocksize=64)
    with pytest.raises(ValueError, match="unknown optimizer 'adamax'"):
        optim.init_state("adamax", 10)
    with pytest.raises(ValueError, match="Invalid initial_accumulator_value: -1"):
        optim.init_state("adagrad", 10, initial_accumulator_value=-1)


# ------------------------------------------------------------------ 7. random hyper-parameters and special values


def _float32_values(values):
    return [float(np.float32(v)) for v in values]


# 0, subnormals, tiny, huge (g^2 overflows), FLT_MAX, infinities and NaN, as float32 values
GRADIENT_SPECIALS = _float32_values([0.0, -0.0, 1e-45, -1e-45, 3e-39, -1e-40, 1e-20, -1e-20, 1e20, -1e20, 3e38,
                                     -3e38, FLT_MAX, -FLT_MAX, np.inf, -np.inf, np.nan])
UNIT = st.floats(0, 1)
BETA = st.floats(0, 1, exclude_max=True)
EPS = st.floats(1e-12, 1)  # > 0, as the steps require (with 0, a zero second moment divides by zero)
STEP = st.integers(1, 10_000)


@st.composite
def sgd_hyper_parameters(draw):
    nesterov = draw(st.booleans())
    return dict(lr=draw(UNIT), momentum=draw(st.floats(1e-6, 1)), dampening=0.0 if nesterov else draw(UNIT),
                nesterov=nesterov, weight_decay=draw(UNIT), step=draw(STEP))


HYPER_PARAMETERS = {
    "adam": st.fixed_dictionaries(dict(lr=UNIT, betas=st.tuples(BETA, BETA), eps=EPS, weight_decay=UNIT, step=STEP)),
    "adamw": st.fixed_dictionaries(dict(lr=UNIT, betas=st.tuples(BETA, BETA), eps=EPS, weight_decay=UNIT, step=STEP)),
    "sgd": sgd_hyper_parameters(),
    "lion": st.fixed_dictionaries(dict(lr=UNIT, betas=st.tuples(BETA, BETA), weight_decay=UNIT)),
    "rmsprop": st.fixed_dictionaries(dict(lr=UNIT, alpha=UNIT, eps=EPS, weight_decay=UNIT)),
    "adagrad": st.fixed_dictionaries(dict(lr=UNIT, lr_decay=st.floats(0, 10), eps=EPS, weight_decay=UNIT, step=STEP)),
}


@st.composite
def optimizer_steps(draw):
    """(optimizer, hyper-parameters, first step number, p, two gradients, initial state)."""
    optimizer = draw(st.sampled_from(list(optim.OPTIMIZERS)))
    hyper = draw(HYPER_PARAMETERS[optimizer])
    step = hyper.pop("step", 1)
    n = draw(st.integers(1, 200))
    p = draw(hnp.arrays(np.float32, n, elements=st.floats(-100, 100, width=32)))
    gradient = st.one_of(st.sampled_from(GRADIENT_SPECIALS), st.floats(-1e3, 1e3, width=32))
    grads = [draw(hnp.arrays(np.float32, n, elements=gradient)) for _ in range(2)]
    signed = optim.OPTIMIZERS[optimizer][1]
    values = [draw(hnp.arrays(np.float32, n, elements=st.floats(-10 if s else 0, 10, width=32))) for s in signed]
    if draw(st.booleans()):
        state = optim.State8bit.quantized(values, signed, blocksize=draw(st.sampled_from([64, 128, 256])), workers=1)
    else:
        state = optim.State32bit(*values)
    return optimizer, hyper, step, p, grads, state


@settings(max_examples=examples(400), deadline=None)
@given(inputs=optimizer_steps())
def test_random_steps_with_special_gradients(inputs):
    """Two steps of random hyper-parameters, with gradients that may be 0, subnormal, huge, inf or
    NaN, on every backend: no error, no NaN anywhere, the same bits everywhere, and the skipped
    count the float64 reference's (elements whose values leave the float32 range)."""
    optimizer, hyper, step, p0, grads, state0 = inputs
    results = {}
    for backend in softmaxlib.backends():
        p, state = p0.copy(), copy_state(state0)
        counts = []
        for k, g in enumerate(grads):
            context = f"{backend}, step {step + k}"
            surely, possibly = skip_masks(optimizer, hyper, step + k, p.astype(F64), g.astype(F64),
                                          exact_states(state))
            counts.append(run_step(optimizer, p, g, state, hyper, step + k, backend=backend))
            assert surely.sum() <= counts[-1] <= possibly.sum(), context
            assert not np.isnan(p).any(), f"{context}: NaN parameters"
            assert_states_finite(state, context)
        results[backend] = (p, state_arrays(state), counts)
    assert_same_results(results, optimizer)


# ------------------------------------------------------------------ 8. the states


@pytest.mark.parametrize("blocksize", [64, 256, 4096])
def test_quantized_state_holds_the_nearest_codes(blocksize, backend, rng):
    """State8bit.quantized: absmax per block and the nearest codes on the dynamic maps (the quant
    oracle), dequantized() = code[q] * absmax; quantizing the dequantized values again gives the
    same state where each block's largest magnitude is positive (the signed map's most negative
    code is -0.99, not -1)."""
    n = 2 * blocksize + 37
    m = (rng.standard_normal(n) * np.repeat(10.0 ** rng.uniform(-3, 3, 3), blocksize)[:n]).astype(np.float32)
    m[::blocksize] = 2 * np.abs(m).max()
    v = m * m
    state = optim.State8bit.quantized([m, v], [True, False], blocksize=blocksize, backend=backend)
    assert (state.size, state.states, state.blocksize) == (n, 2, blocksize)
    for k, (values, codes, absmax, code, signed) in enumerate([(m, state.codes1, state.absmax1, state.map1, True),
                                                               (v, state.codes2, state.absmax2, state.map2, False)]):
        assert_same_bits(code, softmaxlib.quant.create_dynamic_map(signed=signed), f"map {k + 1}")
        expected_q, expected_absmax = oracle.quantize_blockwise(values, code, blocksize)
        assert_same_bits(codes, expected_q, f"codes {k + 1}")
        assert_same_bits(absmax, expected_absmax, f"absmax {k + 1}")
        assert_same_bits(state.dequantized()[k], oracle.dequantize_blockwise(codes, absmax, blocksize, code),
                         f"dequantized {k + 1}")
    again = optim.State8bit.quantized(state.dequantized(), [True, False], blocksize=blocksize, backend=backend)
    for k, (a, b) in enumerate(zip(state_arrays(again), state_arrays(state))):
        assert_same_bits(a, b, f"requantized, array {k}")


@pytest.mark.parametrize("optimizer", list(optim.OPTIMIZERS))
def test_state_sizes(optimizer):
    """2 bytes per parameter + 8 per block for Adam (1 + 4 for the others); float32 states below
    min_8bit_size (default 4096), 4 bytes per parameter and state."""
    states = len(optim.OPTIMIZERS[optimizer][1])
    n, blocksize = 10_000, 256
    blocks = -(-n // blocksize)
    state = optim.init_state(optimizer, n, blocksize=blocksize)
    assert isinstance(state, optim.State8bit) and state.states == states
    assert state.nbytes == states * (n + 4 * blocks)
    if optimizer in ("adam", "adamw"):
        assert state.nbytes == 2 * n + 8 * blocks
    assert isinstance(optim.init_state(optimizer, optim.MIN_8BIT_SIZE), optim.State8bit)
    small = optim.init_state(optimizer, optim.MIN_8BIT_SIZE - 1)
    assert isinstance(small, optim.State32bit) and small.nbytes == 4 * states * (optim.MIN_8BIT_SIZE - 1)
    assert isinstance(optim.init_state(optimizer, 100, min_8bit_size=100), optim.State8bit)
    assert isinstance(optim.init_state(optimizer, 99, min_8bit_size=100), optim.State32bit)
    from_array = optim.init_state(optimizer, np.zeros((3, 50), np.float32), min_8bit_size=0)
    assert from_array.size == 150 and from_array.blocksize == 256


@pytest.mark.parametrize("min_8bit_size", [0, optim.MIN_8BIT_SIZE])
@pytest.mark.parametrize("optimizer", list(optim.OPTIMIZERS))
def test_initial_states(optimizer, min_8bit_size):
    """Every state starts at 0 but Adagrad's sum of squares, at initial_accumulator_value."""
    n = 1000
    state = optim.init_state(optimizer, n, min_8bit_size=min_8bit_size, initial_accumulator_value=0.1)
    start = np.float32(0.1) if optimizer == "adagrad" else np.float32(0)
    for values in state.dequantized():
        assert_same_bits(values, np.full(n, start, np.float32), optimizer)


# ------------------------------------------------------------------ 9. guard pages

GUARD_LAYOUTS = sorted({(64, 1), (64, 63), (64, 65), (64, 100), (256, 257), (4096, 4097),
                        (4096, zoo.GUARDED_FLOATS)}  # 3 blocks of 4096 and a tail of 3
                       | {(64, lanes + d) for lanes in LANES for d in (-1, 0, 1)})
CANARY = 0xA5


@pytest.fixture(scope="module")
def guarded_areas():
    """Six guarded areas of zoo.GUARDED_FLOATS floats: p, g, codes1, codes2, absmax1, absmax2 (each
    against a PROT_NONE page; the maps at the other end of the codes' areas)."""
    return zoo.guarded_areas(6)


def _placed(area, count, dtype, where):
    """`count` items of dtype in `area`, ending at its trailing guard page or starting at its leading one."""
    items = area.view(dtype)
    return items[items.size - count:] if where == "end" else items[:count]


@pytest.mark.parametrize("optimizer", list(optim.OPTIMIZERS))
def test_steps_stay_within_their_arrays(guarded_areas, optimizer, backend, rng):
    """p, g, the codes and the absmax end right before (or start right after) an unmapped page, for
    partial last blocks and vector tails: a read or write beyond them kills the process (see
    tests/test_guard_pages.py). The bytes of the areas outside the arrays keep their canary, g and
    the maps are unchanged, and the results are those of ordinary arrays."""
    case = CASES[ONE_PER_OPTIMIZER[optimizer]]
    workers = 1 if backend == "numba" else 2
    for blocksize, n in GUARD_LAYOUTS:
        blocks = -(-n // blocksize)
        p0 = rng.standard_normal(n).astype(np.float32)
        g0 = with_special_gradients(gradients(rng, n, blocksize), rng, 2)
        state0 = random_state(optimizer, n, blocksize, rng)
        p_expected, state_expected = p0.copy(), copy_state(state0)
        expected_skipped = run_step(optimizer, p_expected, g0, state_expected, case.hyper, 2, backend=backend)
        assert expected_skipped == np.count_nonzero(~np.isfinite(g0))  # NaN and infinities only
        for where in ("end", "start"):
            other_end = "start" if where == "end" else "end"
            for area in guarded_areas:
                area.view(np.uint8)[:] = CANARY
            p_area, g_area, *state_areas = guarded_areas
            p, g = _placed(p_area, n, np.float32, where), _placed(g_area, n, np.float32, where)
            p[...], g[...] = p0, g0
            fields, placed = [], [p, g]
            for k in range(state0.states):
                codes = _placed(state_areas[k], n, np.uint8, where)
                absmax = _placed(state_areas[2 + k], blocks, np.float32, where)
                code = _placed(state_areas[k], 256, np.float32, other_end)
                codes[...] = (state0.codes1, state0.codes2)[k]
                absmax[...] = (state0.absmax1, state0.absmax2)[k]
                code[...] = (state0.map1, state0.map2)[k]
                fields += [codes, absmax, code]
                placed += [codes, absmax, code]
            state = optim.State8bit(*fields, blocksize=blocksize)
            if where == "end":
                assert p.ctypes.data + p.nbytes == p_area.ctypes.data + p_area.nbytes
            context = f"blocksize {blocksize}, n {n}, at the {where}"
            skipped = run_step(optimizer, p, g, state, case.hyper, 2, backend=backend, workers=workers)
            assert skipped == expected_skipped, context
            assert_same_bits(p, p_expected, f"{context}: p")
            assert_same_bits(g, g0, f"{context}: g")
            for k, (a, b) in enumerate(zip(state_arrays(state), state_arrays(state_expected))):
                assert_same_bits(a, b, f"{context}: state array {k}")
            for k in range(state0.states):
                assert_same_bits(fields[3 * k + 2], (state0.map1, state0.map2)[k], f"{context}: map {k + 1}")
            for area in guarded_areas:
                outside = np.ones(area.nbytes, bool)
                for array in placed:
                    start = array.ctypes.data - area.ctypes.data
                    if 0 <= start < area.nbytes:
                        outside[start:start + array.nbytes] = False
                assert (area.view(np.uint8)[outside] == CANARY).all(), f"{context}: a write outside the arrays"


# ------------------------------------------------------------------ 10. misaligned arrays


def test_misaligned_arrays_give_the_same_bits(case, backend, rng):
    """p, g (float32 views at an odd byte offset) and the state's arrays misaligned: the same bits
    as aligned arrays, for 8-bit and float32 states."""
    for n, min_8bit_size in ((3 * 256 + 21, 0), (300, optim.MIN_8BIT_SIZE)):
        p0 = rng.standard_normal(n).astype(np.float32)
        g0 = with_special_gradients(gradients(rng, n, 256), rng, 3)
        state0 = random_state(case.optimizer, n, 256, rng, min_8bit_size)
        p_expected, state_expected = p0.copy(), copy_state(state0)
        run_step(case.optimizer, p_expected, g0, state_expected, case.hyper, 2, backend=backend)
        for what in ("p", "g", "p and g", "state"):
            p = zoo.misaligned(p0) if "p" in what.split() else p0.copy()
            g = zoo.misaligned(g0) if "g" in what.split() else g0.copy()
            state = copy_state(state0)
            if what == "state":
                if isinstance(state0, optim.State32bit):
                    state = optim.State32bit(*[zoo.misaligned(s) for s in state_arrays(state0)])
                else:
                    second = () if state0.states == 1 else (zoo.misaligned(state0.codes2), zoo.misaligned(
                        state0.absmax2), zoo.misaligned(state0.map2))
                    state = optim.State8bit(zoo.misaligned(state0.codes1), zoo.misaligned(state0.absmax1),
                                            zoo.misaligned(state0.map1), *second, blocksize=256)
                    assert not state.absmax1.flags.aligned
            assert p.flags.aligned == ("p" not in what.split()) and g.flags.aligned == ("g" not in what.split())
            run_step(case.optimizer, p, g, state, case.hyper, 2, backend=backend)
            context = f"n {n}, misaligned {what}"
            assert_same_bits(p, p_expected, f"{context}: p")
            assert_same_bits(g, g0, f"{context}: g")
            for k, (a, b) in enumerate(zip(state_arrays(state), state_arrays(state_expected))):
                assert_same_bits(a, b, f"{context}: state array {k}")


# ------------------------------------------------------------------ regressions: defects these tests found


@pytest.mark.parametrize("optimizer", ["sgd", "lion"])
def test_a_state_on_the_unsigned_map_is_refused_for_a_signed_one(optimizer):
    n = 300
    state = optim.init_state("rmsprop", n, min_8bit_size=0)
    with pytest.raises(ValueError):
        run_step(optimizer, np.ones(n, np.float32), np.full(n, -1, np.float32), state,
                 CASES[ONE_PER_OPTIMIZER[optimizer]].hyper, 1)


@pytest.mark.parametrize("keywords", [dict(backend="avx1024"), dict(workers=0)], ids=["backend", "workers"])
def test_float32_states_check_backend_and_workers(keywords):
    state = optim.init_state("adam", 100)
    assert isinstance(state, optim.State32bit)
    with pytest.raises(ValueError):
        optim.adam_step(np.ones(100, np.float32), np.ones(100, np.float32), state, step=1, **keywords)


def test_init_state_checks_blocksize_below_min_8bit_size():
    with pytest.raises(ValueError, match="blocksize must be a multiple of 64"):
        optim.init_state("adam", 10, blocksize=100)


@pytest.mark.skipif(set(softmaxlib.backends()) <= {"numba"}, reason="the C kernels are not here")
def test_skipped_count_of_a_partial_vector_is_the_same_everywhere():
    """The padding lanes of a partial vector are not counted: an infinite momentum (which the public
    functions refuse, so the constants go to the kernels directly) skips exactly the n elements."""
    n = 10
    counts = {}
    for backend in softmaxlib.backends():
        p, g = np.ones(n, np.float32), np.ones(n, np.float32)
        state = optim.init_state("sgd", n, min_8bit_size=0)
        optim.sgd_step(p, g, state, lr=0.1, step=1, backend=backend)
        constants = optim._StepConstants(lr=0.1, beta1=float("inf"), gain1=1.0)
        counts[backend] = _bindings.bound("momentum_step", backend)(p, g, state, constants)
    assert set(counts.values()) == {n}, counts


@pytest.mark.subnormal
def test_a_block_of_tiny_states_gets_the_nearest_codes(backend):
    n = 64
    p, g = np.ones(n, np.float32), np.zeros(n, np.float32)
    g[:3] = [1e-39, 3e-40, -5e-40]
    state = optim.init_state("sgd", n, blocksize=64, min_8bit_size=0)
    checked_step(CASES["sgd"], 1, p, g, state, "tiny momentum", backend=backend)


def test_lion_rounds_its_momentum_stochastically_keeping_its_mean(backend):
    """Lion's 8-bit momentum takes one of the two codes around each state, so that its mean stays
    the state's: blocks of one large and 63 equal small states (0.3 of the absmax, between two
    codes) store the small ones on both codes, with a mean within 4 sigma of 0.3. Nearest codes
    would store them all on the nearer code, off by its distance."""
    n, blocksize, beta2 = 64 * 2048, 64, 0.99
    g = np.full(n, 0.3, np.float32)
    g[::blocksize] = 1.0
    state = optim.init_state("lion", n, blocksize=blocksize, min_8bit_size=0)
    optim.lion_step(np.zeros(n, np.float32), g, state, lr=1e-3, betas=(0.9, beta2), step=1, backend=backend)
    small = np.ones(n, bool)
    small[::blocksize] = False
    stored = state.dequantized()[0][small].astype(np.float64) / (np.float32(1 - beta2) * np.float64(1.0))
    code = state.map1.astype(np.float64)
    below, above = code[code <= 0.3].max(), code[code > 0.3].min()
    assert set(np.round(stored, 5)) == {round(below, 5), round(above, 5)}
    sigma = (above - below) / 2 / np.sqrt(small.sum())
    assert abs(stored.mean() - 0.3) < 4 * sigma, (stored.mean(), below, above)

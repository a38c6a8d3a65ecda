"""Fused 8-bit optimizer step twins (csrc/optim_kernels.h), operation for operation in float32
(no fused multiply-adds, as the C kernels), so that every backend gives the same bits."""
import numpy as np
from numba import njit

from ._rows import FLT_MIN, ONE, ZERO, f32
from .quant import SUBNORMAL_RECIPROCAL_ABOVE, codes_of_block, codes_of_scaled

ADAM, MOMENTUM, LION, RMS = range(4)
TINY_ABSMAX_SCALE = f32(2.0**64)  # csrc/optim_kernels.h
RULES = {"adam_step": ADAM, "momentum_step": MOMENTUM, "lion_step": LION, "rms_step": RMS}  # kernel id: rule


@njit(cache=True, nogil=True, error_model="numpy")
def element_step(rule, p, grad, s1, s2, floats, first, nesterov):
    """One element's step, as the `<rule>_lanes` functions in C: (p, s1, s2) updated, or as
    they were with skipped = 1 where the gradient or an updated state is not finite.
    floats: lr, beta1, gain1, beta2, gain2, eps, l2, decay, correction2 (struct sml_optim_step)."""
    lr, beta1, gain1, beta2, gain2, eps, l2, decay, correction2 = (
        floats[0], floats[1], floats[2], floats[3], floats[4], floats[5], floats[6], floats[7], floats[8])
    if l2 != ZERO and rule != LION:
        grad = grad + l2 * p
    new2 = s2
    if rule == ADAM:
        new1 = beta1 * s1 + gain1 * grad
        new2 = beta2 * s2 + gain2 * (grad * grad)
        new_p = p * decay - lr * (new1 / (np.sqrt(new2) * correction2 + eps))
        finite = np.isfinite(grad) and np.isfinite(new1) and np.isfinite(new2)
    elif rule == MOMENTUM:
        new1 = grad if first else beta1 * s1 + gain1 * grad
        direction = grad + beta1 * new1 if nesterov else new1
        new_p = p - lr * direction
        finite = np.isfinite(grad) and np.isfinite(direction)
    elif rule == LION:
        c = beta1 * s1 + gain1 * grad
        sign = (ONE if ZERO < c else ZERO) - (ONE if c < ZERO else ZERO)
        new_p = p * decay - lr * sign
        new1 = beta2 * s1 + gain2 * grad
        finite = np.isfinite(grad) and np.isfinite(new1)
    else:
        new1 = beta1 * s1 + gain1 * (grad * grad)
        new_p = p - lr * (grad / (np.sqrt(new1) + eps))
        finite = np.isfinite(grad) and np.isfinite(new1)
    if not finite:
        return p, s1, s2, 1
    return new_p, new1, new2, 0


@njit(cache=True, nogil=True, error_model="numpy")
def absmax_for_codes(updated, m):
    """The absmax to take a block's codes with, as absmax_for_codes in C: m itself, or for a
    subnormal m (whose fl32(1/m) is inf), m * 2^64 with the block scaled too."""
    if not ZERO < m < FLT_MIN:
        return m
    for i in range(updated.size):
        updated[i] *= TINY_ABSMAX_SCALE
    return m * TINY_ABSMAX_SCALE


@njit(cache=True, nogil=True, error_model="numpy")
def codes_of_states(updated, m, tables, codes, scratch):
    """codes = the nearest codes of a block's updated states with absmax m, as codes_of_states in C."""
    codes_of_block(updated, absmax_for_codes(updated, m), tables[0], tables[1], tables[2], tables[3], codes,
                   scratch)


# Lion's stochastic rounding (csrc/optim_kernels.h explains it): murmur3's finalizer over the
# element's index and the step's number, in 32-bit wrapping arithmetic
HASH_INDEX, HASH_HIGH_INDEX, HASH_STEP = 0x9E3779B1, 0x85EBCA77, 0xC2B2AE3D
HASH_MIX1, HASH_MIX2 = 0x85EBCA6B, 0xC2B2AE35
LOW32 = 0xFFFFFFFF
UNIFORM_SCALE = f32(2.0**-24)


@njit(cache=True, nogil=True)
def uniform(index, step):
    """The uniform number in [0, 1) of element `index` at `step`, as uniform_lanes in C."""
    salt = ((index >> 32) * HASH_HIGH_INDEX & LOW32) ^ (step * HASH_STEP & LOW32)
    h = ((index & LOW32) * HASH_INDEX & LOW32) ^ salt
    h = ((h ^ (h >> 16)) * HASH_MIX1) & LOW32
    h = ((h ^ (h >> 13)) * HASH_MIX2) & LOW32
    h ^= h >> 16
    return f32(h >> 8) * UNIFORM_SCALE


@njit(cache=True, nogil=True, error_model="numpy")
def stochastic_codes_of_states(updated, m, tables, code, first, step, codes, scratch):
    """codes = the stochastically rounded codes of a block's updated states with absmax m, its
    first element being number `first`, as stochastic_codes_of_states in C."""
    if m > SUBNORMAL_RECIPROCAL_ABOVE:
        codes_of_block(updated, m, tables[0], tables[1], tables[2], tables[3], codes, scratch)
        return
    m = absmax_for_codes(updated, m)
    inverse = ONE / m if m > ZERO else ZERO
    for i in range(updated.size):
        scratch[i] = updated[i] * inverse
    codes_of_scaled(scratch, tables[0], tables[1], tables[2], tables[3], codes)
    for i in range(updated.size):
        y, nearest = scratch[i], np.int64(codes[i])
        at = code[nearest]
        other = min(max(nearest + (1 if at < y else 0) - (1 if y < at else 0), 0), 255)
        gap = max(abs(code[other] - at), FLT_MIN)
        if uniform(first + i, step) < abs(y - at) / gap:
            codes[i] = other


@njit(cache=True, nogil=True, error_model="numpy")
def step_f32(rule, p, g, blocksize, codes1, absmax1, map1, tables1, codes2, absmax2, map2, tables2, floats, first,
             nesterov, step):
    """One step of `rule` over every block, as step_blocks in C; returns the skipped count.
    tablesK: (table, midpoints, single_compare, zero_code) of state K's map."""
    two_states = rule == ADAM
    updated1 = np.empty(blocksize, f32)
    updated2 = np.empty(blocksize, f32)
    scratch = np.empty(blocksize, f32)
    skipped = 0
    for b in range(absmax1.size):
        start = b * blocksize
        stop = min(start + blocksize, p.size)
        high1 = ZERO
        high2 = ZERO
        for i in range(start, stop):
            s2 = map2[codes2[i]] * absmax2[b] if two_states else ZERO
            p[i], s1, s2, skip = element_step(rule, p[i], g[i], map1[codes1[i]] * absmax1[b], s2, floats, first,
                                              nesterov)
            skipped += skip
            updated1[i - start] = s1
            updated2[i - start] = s2
            high1 = max(high1, abs(s1))
            high2 = max(high2, abs(s2))
        k = stop - start
        absmax1[b] = high1
        if rule == LION:
            stochastic_codes_of_states(updated1[:k], high1, tables1, map1, start, step, codes1[start:stop],
                                       scratch[:k])
        else:
            codes_of_states(updated1[:k], high1, tables1, codes1[start:stop], scratch[:k])
        if two_states:
            absmax2[b] = high2
            codes_of_states(updated2[:k], high2, tables2, codes2[start:stop], scratch[:k])
    return skipped


@njit(cache=True, nogil=True, error_model="numpy")
def step_float_states(rule, p, g, state1, state2, floats, first, nesterov):
    """One step of `rule` with float32 states (parameters below min_8bit_size); returns the
    skipped count."""
    skipped = 0
    for i in range(p.size):
        p[i], state1[i], state2[i], skip = element_step(rule, p[i], g[i], state1[i], state2[i], floats, first,
                                                        nesterov)
        skipped += skip
    return skipped


# ------------------------------------------------------------------ twins: {dtype}_{kernel id}
# state: a softmaxlib.optim.State8bit; constants: a softmaxlib.optim _StepConstants


def _step(rule, p, g, state, constants):
    floats = np.array(constants[:9], f32)
    second = state.codes2 is not None
    tables = [(t.table, t.midpoints, t.single_compare, np.uint8(t.zero_code)) for t in state.tables]
    codes2 = state.codes2 if second else state.codes1
    return step_f32(rule, p, g, state.blocksize, state.codes1, state.absmax1, state.map1, tables[0],
                    codes2, state.absmax2 if second else state.absmax1, state.map2 if second else state.map1,
                    tables[-1], floats, bool(constants.first), bool(constants.nesterov), constants.step)


def f32_u8_adam_step(p, g, state, constants):
    return _step(ADAM, p, g, state, constants)


def f32_u8_momentum_step(p, g, state, constants):
    return _step(MOMENTUM, p, g, state, constants)


def f32_u8_lion_step(p, g, state, constants):
    return _step(LION, p, g, state, constants)


def f32_u8_rms_step(p, g, state, constants):
    return _step(RMS, p, g, state, constants)

"""Numba twins of the C kernels: the portable fallback backend and a test oracle.

One module per kernel family, as in csrc/ (importing this package imports no Numba;
softmaxlib/_bindings.py imports a family's module on first use):

    three_pass.py   csrc/three_pass_kernels.h: three-pass softmax / log-softmax, reload_exact,
                    the float64 three-pass kernel, and the exp on its own (exp_nonpositive)
    two_pass.py     csrc/two_pass_kernels.h: two-pass softmax / log-softmax, sum_exp_pair
    stablemax.py    csrc/stablemax_kernels.h: StableMax, log-StableMax, the cross-entropy
    quant.py        csrc/quant_kernels.h: 8-bit block-wise quantization
    optim.py        csrc/optim_kernels.h: the fused 8-bit optimizer steps (the same float32 operations)
    _exp.py         the exp blocks and constants (csrc/exp_constants.h, exp_polynomial.h, exp_pairs.h)
    _log.py         the log block and constants (csrc/log_constants.h)
    _rows.py        the other shared blocks: row max, +inf rows, float64 sums, the FLT_MIN flush

Each family module exposes its twins as `{dtype}_{kernel id}` (e.g. f32_softmax_reload(x, y),
f64_sum_exp_pair(x, mantissa, exponent)), the names of softmaxlib/_catalog.py.

The float32 twins follow the C kernels step by step (csrc/three_pass_kernels.h):
the same exp (rr2 range reduction, degree-6 polynomial, same constants and
cutoff), the same handling of +inf rows, NaN and -inf, and the same flush of
outputs below FLT_MIN. They work on blocks of BLOCK elements in branch-free
loops so that LLVM vectorizes them. One difference: the sum of exps is
accumulated directly in float64 (the C kernels sum float32 lanes and fold
them into a double every 4096 elements), so it may differ in the last bits.
On a CPU without FMA the polynomial rounds twice per step (see
_exp.exp_nonpositive_block).

The float64 kernels compute in float64 with libm's exp and keep subnormal
outputs exactly; they back float64 input on every backend.
"""

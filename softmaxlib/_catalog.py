"""The one catalog of softmaxlib's kernels: pure data, standard library only.

Every kernel is one entry of KERNELS, and one id names it in every layer:

    C symbol        sml_<dtype>_<id>__<isa>     defined in csrc/<family>_kernels.h, built once per ISA
    streaming twin  sml_<dtype>_<id>_stream__<isa>  (non-temporal stores; `streaming` entries only)
    Numba twin      softmaxlib._numba.<family>.<dtype>_<id>, for each of `twin_dtypes`
    public          softmaxlib.<family>.<function>(..., variant=<variant>)
    CLI, runtime_info() and the benchmarks: <id>

From the catalog come the C build (the per-ISA declarations of the cffi cdef and the source
list, build_ffi.py at the repository's root), the bound calls (softmaxlib/_bindings.py: one adapter per signature),
the public variants, the tests' parametrization and the benchmark cases. Adding a row kernel
is: write it in its family's template (csrc/<family>_kernels.h), its Numba twin, and one entry.
"""
from dataclasses import dataclass
from typing import Optional

ISAS = ("avx2", "avx512")
FAMILIES = ("three_pass", "two_pass", "stablemax", "quant", "optim")  # csrc/<family>_<isa>.c, softmaxlib/<family>.py

# The C parameters of each signature (csrc/softmaxlib.h states their contracts); the bindings
# call each signature through one adapter (softmaxlib/_bindings.py).
SIGNATURES = {
    # (rows, n) -> (rows, n), row by row
    "rows": "int64_t rows, int64_t n, const float *x, float *y, int workers",
    # per row, sum exp(x) = mantissa * 2^exponent
    "pair": "int64_t rows, int64_t n, const float *x, double *mantissa, double *exponent, int workers",
    # per row, a loss of x and an integer label, and optionally its gradient
    "loss": "int64_t rows, int64_t n, const float *x, const int64_t *labels, int64_t ignore_index, "
            "double grad_scale, double *losses, float *grad, int workers",
    # elementwise
    "map": "int64_t n, const float *t, float *e",
    # elementwise: the code of each value already scaled into [-1, 1]
    "codes": "int64_t n, const float *y, const int32_t *table, const float *midpoints, int single_compare, "
             "uint8_t zero_code, uint8_t *q",
    # block-wise: absmax per block, and the code of each value scaled by 1/absmax
    "quantize": "int64_t n, const float *x, int64_t blocksize, const int32_t *table, const float *midpoints, "
                "int single_compare, uint8_t zero_code, uint8_t *q, float *absmax, int workers",
    # block-wise: code[q] * absmax
    "dequantize": "int64_t n, const uint8_t *q, const float *absmax, int64_t blocksize, const float *code, "
                  "float *out, int stream, int workers",
    # block-wise 8-bit optimizer step: p and the states updated in place (csrc/softmaxlib.h)
    "optim": "int64_t n, float *p, const float *g, int64_t blocksize, uint8_t *codes1, float *absmax1, "
             "const float *map1, const int32_t *table1, uint8_t zero_code1, uint8_t *codes2, float *absmax2, "
             "const float *map2, const int32_t *table2, uint8_t zero_code2, const struct sml_optim_step *step, "
             "int64_t *skipped, int workers",
}


@dataclass(frozen=True)
class Kernel:
    """One kernel.

    dtype: the C kernel's, as in its symbol ("f32", or "f32_u8" for a conversion);
    twin_dtypes: the dtypes of its Numba twins (f64 has Numba twins only);
    function, variant: the public function softmaxlib.<family>.<function> and its variant=
        argument (None: not public by itself, or no variant);
    streaming: it has a _stream version with non-temporal stores, which the bindings call
        when the output is larger than half the last-level cache;
    traffic, read_write: the bytes each element moves through memory (reads + writes), and
        the part of them that are stores of outputs (or outputs loaded again), for the
        benchmarks' roofline;
    oracle: the float64 reference in tests/oracle.py;
    tolerance: (measure, bound) over random finite rows: ("ulp", k) float32 ULPs over outputs
        >= FLT_MIN, ("eps", k) k float32 epsilons of max(1, |reference|), ("exact", 0) bitwise.
    """

    id: str
    family: str
    signature: str
    dtype: str = "f32"
    twin_dtypes: tuple = ("f32", "f64")
    function: Optional[str] = None
    variant: Optional[str] = None
    streaming: bool = False
    traffic: int = 0
    read_write: int = 0
    oracle: str = ""
    tolerance: tuple = ("exact", 0)

    def c_symbol(self, isa, streaming=False):
        return f"sml_{self.dtype}_{self.id}{'_stream' if streaming else ''}__{isa}"

    def twin_name(self, dtype):
        return f"{dtype}_{self.id}"

    @property
    def is_log(self):
        return self.function is not None and self.function.startswith("log_")


def _three_pass(function, variant, traffic, read_write, tolerance):
    return Kernel(f"{function}_{variant}", "three_pass", "rows", function=function, variant=variant,
                  traffic=traffic, read_write=read_write, oracle=function, tolerance=tolerance)


# Three-pass rounds x - max to float32 before the exp: up to 64 ULP of softmax where |x - max|
# reaches 64 (tests/test_accuracy.py bounds it per distribution); log-softmax adds two
# non-positive terms, so its error is a few epsilons of its magnitude.
ROUNDED_SHIFT_ULP = 80
LOG_EPS = 4

KERNELS = {kernel.id: kernel for kernel in [
    # reload: x read twice (max; exp), y stored, then loaded and stored again (the 1/sum pass)
    _three_pass("softmax", "reload", 20, 12, ("ulp", ROUNDED_SHIFT_ULP)),
    # recompute: x read three times, y stored once
    _three_pass("softmax", "recompute", 16, 4, ("ulp", ROUNDED_SHIFT_ULP)),
    # reload_exact: as reload, with x - max never rounded (exp(x) as p * 2^n)
    _three_pass("softmax", "reload_exact", 20, 12, ("ulp", 4)),
    _three_pass("log_softmax", "reload", 20, 12, ("eps", LOG_EPS)),
    _three_pass("log_softmax", "recompute", 16, 4, ("eps", LOG_EPS)),
    # the vector exp of every softmax kernel, exported for the exhaustive test of every float32
    Kernel("exp_nonpositive", "three_pass", "map", twin_dtypes=("f32",), oracle="exp", tolerance=("ulp", 2)),
    # two-pass: x read twice, y written once
    Kernel("softmax_two_pass", "two_pass", "rows", function="softmax", streaming=True, traffic=12, read_write=4,
           oracle="softmax", tolerance=("ulp", 4)),
    Kernel("log_softmax_two_pass", "two_pass", "rows", function="log_softmax", streaming=True, traffic=12,
           read_write=4, oracle="log_softmax", tolerance=("eps", LOG_EPS)),
    # the first pass alone: x read once
    Kernel("sum_exp_pair", "two_pass", "pair", function="sum_exp_pair", traffic=4, oracle="sum_exp",
           tolerance=("ulp", 4)),
    # StableMax: x read twice (sum; output), y written once
    Kernel("stablemax", "stablemax", "rows", function="stablemax", traffic=12, read_write=4, oracle="stablemax",
           tolerance=("ulp", 3)),
    Kernel("log_stablemax", "stablemax", "rows", function="log_stablemax", traffic=12, read_write=4,
           oracle="log_stablemax", tolerance=("eps", 2)),
    # with the gradient: x read twice, the gradient written once
    Kernel("stablemax_cross_entropy", "stablemax", "loss", function="stablemax_cross_entropy", traffic=12,
           read_write=4, oracle="stablemax_cross_entropy", tolerance=("eps", 4)),
    # 8-bit block-wise quantization: exact (the nearest code, ties to the lower index)
    Kernel("codes_of_scaled", "quant", "codes", dtype="f32_u8", twin_dtypes=("f32_u8",), oracle="codes"),
    # 4 bytes read, 1 code written
    Kernel("quantize_blockwise", "quant", "quantize", dtype="f32_u8", twin_dtypes=("f32_u8",),
           function="quantize_blockwise", traffic=5, read_write=1, oracle="quantize_blockwise"),
    # 1 code read, 4 bytes written
    Kernel("dequantize_blockwise", "quant", "dequantize", dtype="u8_f32", twin_dtypes=("u8_f32",),
           function="dequantize_blockwise", streaming=True, traffic=5, read_write=4, oracle="dequantize_blockwise"),
    # fused 8-bit optimizer steps: p and g read (8 bytes), p written (4), and per state a code read and
    # written (2); the absmax (8 bytes per block) is left out
    Kernel("adam_step", "optim", "optim", dtype="f32_u8", twin_dtypes=("f32_u8",), function="adam_step",
           traffic=16, read_write=6, oracle="adam_step", tolerance=("eps", 4)),
    Kernel("momentum_step", "optim", "optim", dtype="f32_u8", twin_dtypes=("f32_u8",), function="sgd_step",
           traffic=14, read_write=5, oracle="momentum_step", tolerance=("eps", 4)),
    Kernel("lion_step", "optim", "optim", dtype="f32_u8", twin_dtypes=("f32_u8",), function="lion_step",
           traffic=14, read_write=5, oracle="lion_step", tolerance=("eps", 4)),
    Kernel("rms_step", "optim", "optim", dtype="f32_u8", twin_dtypes=("f32_u8",), function="rmsprop_step",
           traffic=14, read_write=5, oracle="rms_step", tolerance=("eps", 4)),
]}


def by_signature(signature):
    """{id: kernel} of the kernels of one signature ("rows", "pair", ...), in catalog order."""
    return {k.id: k for k in KERNELS.values() if k.signature == signature}


def of_family(family, signature=None):
    """The kernels of a family (optionally of one signature), in catalog order."""
    return [k for k in KERNELS.values() if k.family == family and (signature is None or k.signature == signature)]


def variants(family, function):
    """The variants of softmaxlib.<family>.<function>, the first being its default."""
    return tuple(k.variant for k in KERNELS.values() if k.family == family and k.function == function)


def kernel_of(family, function, variant=None):
    """The entry behind softmaxlib.<family>.<function>(variant=...)."""
    for kernel in KERNELS.values():
        if kernel.family == family and kernel.function == function and kernel.variant == variant:
            return kernel
    raise KeyError((family, function, variant))


def c_declarations():
    """Every C kernel's declaration, for each ISA: the kernel part of the cffi cdef."""
    lines = []
    for kernel in KERNELS.values():
        for isa in ISAS:
            for streaming in (False, True) if kernel.streaming and kernel.signature == "rows" else (False,):
                lines.append(f"void {kernel.c_symbol(isa, streaming)}({SIGNATURES[kernel.signature]});")
    for family in FAMILIES:
        for isa in ISAS:
            lines.append(f"int64_t {tile_symbol(family, isa)}(int64_t k);")
    return "\n".join(lines) + "\n"


def tile_symbol(family, isa):
    """The C function giving the loop tiles of a family's kernels on an ISA (csrc/softmaxlib.h)."""
    return f"sml_{family}_tile__{isa}"


def c_sources():
    """The C translation units of the extension, relative to csrc/."""
    return ["runtime.c", "pool.c"] + [f"{family}_{isa}.c" for family in FAMILIES for isa in ISAS]

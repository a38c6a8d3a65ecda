/* 8-bit block-wise quantization kernels for AVX2 + FMA + F16C. */
#include "vec_avx2.h"
#include "softmaxlib.h"
#include "quant_kernels.h"

/* 8-bit block-wise quantization kernels for AVX-512 F/BW/DQ/VL. */
#include "vec_avx512.h"
#include "softmaxlib.h"
#include "quant_kernels.h"

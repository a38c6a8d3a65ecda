/* Fused 8-bit optimizer kernels for AVX-512 F/BW/DQ/VL. */
#include "vec_avx512.h"
#include "softmaxlib.h"
#include "optim_kernels.h"

/* Fused 8-bit optimizer kernels for AVX2 + FMA + F16C. */
#include "vec_avx2.h"
#include "softmaxlib.h"
#include "optim_kernels.h"

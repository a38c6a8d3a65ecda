/* StableMax kernels for AVX-512 F/BW/DQ/VL. */
#include "vec_avx512.h"
#include "softmaxlib.h"
#include "stablemax_kernels.h"

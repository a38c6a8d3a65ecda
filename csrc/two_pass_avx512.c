/* Two-pass softmax kernels for AVX-512 F/BW/DQ/VL. */
#include "vec_avx512.h"
#include "softmaxlib.h"
#include "two_pass_kernels.h"

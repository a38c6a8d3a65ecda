/* Row layout helpers shared by the kernel templates (after vec_<isa>.h). */
#pragma once

/* How many of the n elements at p precede its first vector-aligned address. */
SML_INLINE int64_t unaligned_head(const float *p, int64_t n) {
    const int64_t head = (int64_t)((-(uintptr_t)p) % (VF_LANES * sizeof(float))) / (int64_t)sizeof(float);
    return head < n ? head : n;
}

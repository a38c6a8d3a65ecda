/* The exact code search of 8-bit block-wise quantization, shared by the
 * quantization and optimizer kernels (after vec_<isa>.h): the code of a value
 * already scaled into [-1, 1] is the number of midpoints (rounded down to
 * float32) below it.  The table, indexed by y's top 16 bits (a bucket), gives
 * the code of the bucket's smallest value and the key (low 16 bits,
 * complemented if negative) of the one midpoint inside it: the code is the
 * candidate plus key(y) > key(midpoint), exactly, for codebooks whose buckets
 * hold at most one midpoint (single_compare; softmaxlib/_codebooks.py explains
 * the keys).  Other codebooks take a binary search per element.  A NaN y gets
 * the zero code either way.  Blocks with absmax above 2^126, whose reciprocal
 * is subnormal, scale in double (codes_of_huge_block), so that flush-to-zero
 * cannot zero them. */
#pragma once
#include <string.h>

SML_INLINE vi codes_of_vector(vf y, const int32_t *table) {
    return vi_code_from_entry(vi_gather(table, vf_top16(y)), vf_key16(y));
}

static uint8_t code_by_search(float y, const float *midpoints, uint8_t zero_code) {
    if (y != y) return zero_code;
    int low = 0, high = 255; /* the code lies in [low, high] */
    while (low < high) {
        const int middle = (low + high) / 2;
        if (y > midpoints[middle]) low = middle + 1;
        else high = middle;
    }
    return (uint8_t)low;
}

/* The code of one scaled value by one lookup in the bucket table (exact for
 * single_compare codebooks). */
SML_INLINE uint8_t code_by_lookup(float y, const int32_t *table) {
    uint32_t bits;
    memcpy(&bits, &y, sizeof bits);
    const int32_t entry = table[bits >> 16];
    const uint32_t key = (bits ^ (uint32_t)((int32_t)bits >> 31)) & 0xFFFF;
    return (uint8_t)((entry & 0xFF) + (key > (uint32_t)((entry >> 8) & 0xFFFF)));
}

/* The codes of one vector of scaled values by scalar lookups (for ISAs whose
 * gathers are slower than that, see VF_FAST_GATHER in vec_<isa>.h). */
SML_INLINE void codes_by_scalar_lookups(vf y, const int32_t *table, uint8_t *q) {
    float values[VF_LANES];
    vf_store(values, y);
    for (int k = 0; k < VF_LANES; k++) q[k] = code_by_lookup(values[k], table);
}

/* q[i] = the code of x[i] * scale, for i < n. */
SML_INLINE void codes_of_scaled_block(const float *x, int64_t n, float scale, const int32_t *table,
                                      const float *midpoints, int single_compare, uint8_t zero_code, uint8_t *q) {
    if (!single_compare) {
        for (int64_t i = 0; i < n; i++) q[i] = code_by_search(x[i] * scale, midpoints, zero_code);
        return;
    }
    const vf vscale = vf_set1(scale);
    int64_t i = 0;
    for (; i + VF_LANES <= n; i += VF_LANES) {
        const vf y = vf_mul(vf_load(x + i), vscale);
        if (VF_FAST_GATHER) vi_store_u8(q + i, codes_of_vector(y, table));
        else codes_by_scalar_lookups(y, table, q + i);
    }
    if (i < n) vi_store_u8_tail(q + i, n - i, codes_of_vector(vf_mul(vf_load_tail(x + i, n - i, 0.0f), vscale), table));
}

/* Above this absmax m, fl32(1/m) is subnormal: flush-to-zero would make it 0
 * (every code the zero code), and denormals-are-zero would read it as 0. */
#define SUBNORMAL_RECIPROCAL_ABOVE 0x1p126f
/* Adding and subtracting it rounds a double below 2^-126 to a multiple of
 * 2^-149, the spacing of float subnormals: the sum lies in [2^-97, 2^-96),
 * whose double spacing is 2^-149, with ties to even (this constant is an even
 * multiple of 2^-149), and the subtraction is exact. */
#define SUBNORMAL_GRID_ROUNDER 0x1.8p-97

/* q[i] = the code of x[i] * fl32(1/m), bit for bit as the float path computes
 * it without FTZ/DAZ, for a block with absmax m > 2^126 (or inf), without
 * ever forming a subnormal float.  g = fl32(1/m) is obtained in double: 1/m
 * rounded to double, then to the subnormal grid.  That double rounding is
 * the single one: 1/m is never a midpoint of the grid (that needs m = 2^150 /
 * an odd integer), and it lies more than 2^-174 from one (the distance is
 * |2^150 - odd * m| / (m * 2^150), whose numerator is a non-zero multiple of
 * ulp(m) > m * 2^-24), while the double quotient is within 2^-180 of 1/m;
 * tests/test_quant_defects.py also checks every float m in [2^126, FLT_MAX].  x * g is exact in double (24 by at most 23 bits), so
 * converting it rounds once, as the float multiply does.  An inf m gives g =
 * 0, as 1/inf does.  Rare blocks: scalar code. */
static void codes_of_huge_block(const float *x, int64_t n, float m, const int32_t *table, const float *midpoints,
                                int single_compare, uint8_t zero_code, uint8_t *q) {
    const double g = (1.0 / (double)m + SUBNORMAL_GRID_ROUNDER) - SUBNORMAL_GRID_ROUNDER;
    for (int64_t i = 0; i < n; i++) {
        const float y = (float)((double)x[i] * g);
        q[i] = single_compare ? code_by_lookup(y, table) : code_by_search(y, midpoints, zero_code);
    }
}


/* q[i] = the code of x[i] * fl32(1/m) for a block of n values with absmax m
 * (every code the zero code for m = 0). */
SML_INLINE void codes_of_block(const float *x, int64_t n, float m, const int32_t *table, const float *midpoints,
                               int single_compare, uint8_t zero_code, uint8_t *q) {
    if (m > SUBNORMAL_RECIPROCAL_ABOVE)
        codes_of_huge_block(x, n, m, table, midpoints, single_compare, zero_code, q);
    else
        codes_of_scaled_block(x, n, m > 0.0f ? 1.0f / m : 0.0f, table, midpoints, single_compare, zero_code, q);
}

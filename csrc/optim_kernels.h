/* Fused 8-bit optimizer steps (Dettmers et al., "8-bit Optimizers via
 * Block-wise Quantization"), written once against the vector API of
 * vec_<isa>.h and included by optim_<isa>.c; softmaxlib/optim has the rules
 * and computes the step's constants (struct sml_optim_step, softmaxlib.h).
 *
 * One pass over each block of `blocksize` parameters: dequantize the states
 * with the block's old absmax (code[q] * absmax), update them and the
 * parameters in float32 with torch.optim's rule, take the new absmax over the
 * updated states, and store each state as its exact nearest code
 * (code_search.h).  Blocks are independent, so any thread takes any.
 *
 * Non-finite guard: where the gradient is NaN or inf, or where an updated
 * state would not be finite (a gradient whose square overflows), the
 * parameter and the states keep their values (the states are coded again on
 * the block's new absmax) and the element is counted in *skipped.
 * Lion's momentum is coded by stochastic rounding (stochastic_codes). */
#include <float.h>
#include <math.h>
#include "tiles.h"
#include "pool.h"
#include "code_search.h"

/* The largest block: the updated states of a block wait on the stack for its
 * new absmax (2 x 16 KiB). */
#define OPTIM_MAX_BLOCK 4096

/* One vector of an optimizer's update: the new parameter and states, and
 * poison, 0 where they are all finite and NaN where the element must be
 * skipped (x * 0 is NaN exactly for a NaN or infinite x). */
typedef struct {
    vf p, s1, s2, poison;
} step_lanes;

SML_INLINE vf poison_of(vf a, vf b) { return vf_add(vf_mul(a, vf_zero()), vf_mul(b, vf_zero())); }

/* g + l2 * p, torch's coupled weight decay (skipped for l2 = 0, where it would
 * turn an infinite p into a NaN gradient). */
SML_INLINE vf decayed_gradient(const struct sml_optim_step *h, vf g, vf p) {
    return h->l2 != 0.0f ? vf_add(g, vf_mul(vf_set1(h->l2), p)) : g;
}

/* Adam and AdamW (torch): p *= decay; m = beta1 m + gain1 g;
 * v = beta2 v + gain2 g^2; p -= lr * m / (sqrt(v) * correction2 + eps),
 * lr being lr / (1 - beta1^t) and correction2 1 / sqrt(1 - beta2^t). */
SML_INLINE step_lanes adam_lanes(const struct sml_optim_step *h, vf p, vf g, vf m, vf v) {
    g = decayed_gradient(h, g, p);
    p = vf_mul(p, vf_set1(h->decay));
    m = vf_add(vf_mul(vf_set1(h->beta1), m), vf_mul(vf_set1(h->gain1), g));
    v = vf_add(vf_mul(vf_set1(h->beta2), v), vf_mul(vf_set1(h->gain2), vf_mul(g, g)));
    const vf denominator = vf_add(vf_mul(vf_sqrt(v), vf_set1(h->correction2)), vf_set1(h->eps));
    p = vf_sub(p, vf_mul(vf_set1(h->lr), vf_div(m, denominator)));
    return (step_lanes){p, m, v, vf_add(poison_of(g, m), vf_mul(v, vf_zero()))};
}

/* SGD with momentum (torch): b = g on the first step, else beta1 b + gain1 g
 * (gain1 = 1 - dampening); d = g + beta1 b with Nesterov, else b; p -= lr d. */
SML_INLINE step_lanes momentum_lanes(const struct sml_optim_step *h, vf p, vf g, vf b, vf unused) {
    g = decayed_gradient(h, g, p);
    b = h->first ? g : vf_add(vf_mul(vf_set1(h->beta1), b), vf_mul(vf_set1(h->gain1), g));
    const vf d = h->nesterov ? vf_add(g, vf_mul(vf_set1(h->beta1), b)) : b;
    p = vf_sub(p, vf_mul(vf_set1(h->lr), d));
    return (step_lanes){p, b, unused, poison_of(g, d)};
}

/* Lion (Chen et al., 2023): c = beta1 m + gain1 g; p = p decay - lr sign(c);
 * m = beta2 m + gain2 g. */
SML_INLINE step_lanes lion_lanes(const struct sml_optim_step *h, vf p, vf g, vf m, vf unused) {
    const vf c = vf_add(vf_mul(vf_set1(h->beta1), m), vf_mul(vf_set1(h->gain1), g));
    const vf one = vf_set1(1.0f), zero = vf_zero();
    const vf sign = vf_sub(vf_where_less(zero, c, one, zero), vf_where_less(c, zero, one, zero));
    p = vf_sub(vf_mul(p, vf_set1(h->decay)), vf_mul(vf_set1(h->lr), sign));
    m = vf_add(vf_mul(vf_set1(h->beta2), m), vf_mul(vf_set1(h->gain2), g));
    return (step_lanes){p, m, unused, poison_of(g, m)};
}

/* RMSprop and Adagrad (torch): v = beta1 v + gain1 g^2 (Adagrad: 1 and 1);
 * p -= lr g / (sqrt(v) + eps). */
SML_INLINE step_lanes rms_lanes(const struct sml_optim_step *h, vf p, vf g, vf v, vf unused) {
    g = decayed_gradient(h, g, p);
    v = vf_add(vf_mul(vf_set1(h->beta1), v), vf_mul(vf_set1(h->gain1), vf_mul(g, g)));
    p = vf_sub(p, vf_mul(vf_set1(h->lr), vf_div(g, vf_add(vf_sqrt(v), vf_set1(h->eps)))));
    return (step_lanes){p, v, unused, poison_of(g, v)};
}

struct optim_job {
    float *p;
    const float *g;
    int64_t n, blocksize;
    uint8_t *codes1, *codes2;
    float *absmax1, *absmax2;
    const float *map1, *map2;
    const int32_t *table1, *table2;
    uint8_t zero_code1, zero_code2;
    const struct sml_optim_step *step;
    int64_t *skipped; /* each piece of blocks adds its count atomically */
};

/* The old values of one vector of a state: code[q] * absmax. */
SML_INLINE vf dequantized_lanes(const vf_table256 *map, const uint8_t *codes, int64_t k, vf absmax) {
    const vi q = k >= VF_LANES ? vi_load_u8(codes) : vi_load_u8_tail(codes, k);
    return vf_mul(vf_table256_lookup(map, q), absmax);
}

/* v with its lanes from k on set to 0 (the padding of a partial vector). */
SML_INLINE vf first_lanes(vf v, int64_t k) {
    float lanes[VF_LANES];
    vf_store(lanes, v);
    return vf_load_tail(lanes, k, 0.0f);
}

/* A block whose new absmax is subnormal is scaled by 2^64 (exactly) before
 * its codes are taken: fl32(1/absmax) would be inf, and every code an extreme. */
#define TINY_ABSMAX_SCALE 0x1p64f

/* The absmax m of a block of n updated states to take codes with: m itself,
 * or for a subnormal m, m * TINY_ABSMAX_SCALE with the block scaled too. */
SML_INLINE float absmax_for_codes(float *updated, int64_t n, float m) {
    if (!(m > 0.0f && m < FLT_MIN)) return m;
    for (int64_t i = 0; i < n; i++) updated[i] *= TINY_ABSMAX_SCALE;
    return m * TINY_ABSMAX_SCALE;
}

/* codes = the nearest codes of a block's n updated states with absmax m. */
SML_INLINE void codes_of_states(float *updated, int64_t n, float m, const int32_t *table, uint8_t zero_code,
                                uint8_t *codes) {
    codes_of_block(updated, n, absmax_for_codes(updated, n, m), table, NULL, 1, zero_code, codes);
}

/* Lion's momentum moves by 1 - beta2 (1%) of g - m per step, often less than
 * half a code of the dynamic map, so that its nearest codes keep it still
 * (tests/test_optim_torch.py, least squares: 1.50x float32 Lion's loss after
 * 500 steps, as bitsandbytes' Lion8bit).  Its codes are rounded
 * stochastically instead, to one of the two codes around the state with the
 * probabilities that keep its mean (0.98x).  The random numbers hash each
 * element's index with the step's number (murmur3's finalizer), so that every
 * thread count and backend draws the same ones. */
#define HASH_INDEX 0x9E3779B1u
#define HASH_HIGH_INDEX 0x85EBCA77u
#define HASH_STEP 0xC2B2AE3Du
#define HASH_MIX1 0x85EBCA6Bu
#define HASH_MIX2 0xC2B2AE35u

/* Uniform numbers in [0, 1) (multiples of 2^-24) for the elements whose
 * indices have low 32 bits `low` and whose other bits and step give `salt`. */
SML_INLINE vf uniform_lanes(vi low, uint32_t salt) {
    vi h = vi_xor(vi_mul(low, vi_set1((int32_t)HASH_INDEX)), vi_set1((int32_t)salt));
    h = vi_mul(vi_xor(h, vi_shift_right(h, 16)), vi_set1((int32_t)HASH_MIX1));
    h = vi_mul(vi_xor(h, vi_shift_right(h, 13)), vi_set1((int32_t)HASH_MIX2));
    h = vi_xor(h, vi_shift_right(h, 16));
    return vf_mul(vi_to_vf(vi_shift_right(h, 8)), vf_set1(0x1p-24f));
}

/* The code of each scaled state y: its nearest code, or the code on y's
 * other side with probability |y - code| / (the gap between the two codes),
 * where u < that probability. */
SML_INLINE vi stochastic_codes(vf y, vf u, const int32_t *table, const vf_table256 *map) {
    const vi nearest = codes_of_vector(y, table);
    const vf at = vf_table256_lookup(map, nearest), one = vf_set1(1.0f), zero = vf_zero();
    const vf side = vf_sub(vf_where_less(at, y, one, zero), vf_where_less(y, at, one, zero));
    const vi other = vi_clamp(vi_add(nearest, vf_to_vi(side)), 0, 255);
    /* y = at (side 0) gives probability 0; y beyond the map's end (other =
     * nearest) a probability of no consequence */
    const vf gap = vf_max(vf_abs(vf_sub(vf_table256_lookup(map, other), at)), vf_set1(FLT_MIN));
    return vi_where_less(u, vf_div(vf_abs(vf_sub(y, at)), gap), other, nearest);
}

/* codes = the stochastically rounded codes of a block's n updated states with
 * absmax m, the block's first element being number `first` of the parameter.
 * Blocks with an absmax above SUBNORMAL_RECIPROCAL_ABOVE (states beyond
 * 2^126) take their nearest codes. */
SML_INLINE void stochastic_codes_of_states(float *updated, int64_t n, float m, const int32_t *table,
                                           const vf_table256 *map, uint8_t zero_code, int64_t first,
                                           uint32_t step, uint8_t *codes) {
    if (m > SUBNORMAL_RECIPROCAL_ABOVE) {
        codes_of_block(updated, n, m, table, NULL, 1, zero_code, codes);
        return;
    }
    m = absmax_for_codes(updated, n, m);
    const vf scale = vf_set1(m > 0.0f ? 1.0f / m : 0.0f);
    for (int64_t i = 0; i < n; i += VF_LANES) {
        const int64_t k = n - i;
        /* blocks start at multiples of 64 elements, so a vector's indices share their high 32 bits */
        const uint64_t index = (uint64_t)(first + i);
        const uint32_t salt = (uint32_t)(index >> 32) * HASH_HIGH_INDEX ^ step * HASH_STEP;
        const vf u = uniform_lanes(vi_add(vi_set1((int32_t)(uint32_t)index), vi_lane_numbers()), salt);
        const vf y = vf_mul(k >= VF_LANES ? vf_load(updated + i) : vf_load_tail(updated + i, k, 0.0f), scale);
        const vi q = stochastic_codes(y, u, table, map);
        if (k >= VF_LANES) vi_store_u8(codes + i, q);
        else vi_store_u8_tail(codes + i, k, q);
    }
}

/* Stores the first k lanes of v (all for k >= VF_LANES). */
SML_INLINE void store_lanes(float *to, int64_t k, vf v) {
    if (k >= VF_LANES) vf_store(to, v);
    else vf_store_tail(to, k, v);
}

/* Blocks [first, end) of one optimizer: `lanes` is its update, `two_states`
 * whether it keeps a second state (Adam's v), `stochastic` whether its first
 * state's codes are rounded stochastically (Lion's). */
SML_INLINE void step_blocks(const struct optim_job *job, int64_t first, int64_t end, int two_states, int stochastic,
                            step_lanes (*lanes)(const struct sml_optim_step *, vf, vf, vf, vf)) {
    const struct sml_optim_step h = *job->step; /* a local copy: the stores to p cannot alias it */
    const vf_table256 map1 = vf_table256_load(job->map1);
    const vf_table256 map2 = vf_table256_load(two_states ? job->map2 : job->map1);
    float updated1[OPTIM_MAX_BLOCK], updated2[OPTIM_MAX_BLOCK];
    int64_t skipped = 0;
    for (int64_t b = first; b < end; b++) {
        const int64_t start = b * job->blocksize;
        const int64_t count = job->n - start < job->blocksize ? job->n - start : job->blocksize;
        float *p = job->p + start;
        const float *g = job->g + start;
        const vf absmax1 = vf_set1(job->absmax1[b]), absmax2 = vf_set1(two_states ? job->absmax2[b] : 0.0f);
        vf high1 = vf_zero(), high2 = vf_zero();
        for (int64_t i = 0; i < count; i += VF_LANES) {
            const int64_t k = count - i;
            const vf p_old = k >= VF_LANES ? vf_load(p + i) : vf_load_tail(p + i, k, 0.0f);
            const vf g_old = k >= VF_LANES ? vf_load(g + i) : vf_load_tail(g + i, k, 0.0f);
            const vf s1_old = dequantized_lanes(&map1, job->codes1 + start + i, k, absmax1);
            const vf s2_old = two_states ? dequantized_lanes(&map2, job->codes2 + start + i, k, absmax2) : vf_zero();
            const step_lanes next = lanes(&h, p_old, g_old, s1_old, s2_old);
            /* poison < 1 holds for 0 and fails for NaN: the skipped keep their values */
            const vf one = vf_set1(1.0f);
            const vf s1 = vf_where_less(next.poison, one, next.s1, s1_old);
            store_lanes(p + i, k, vf_where_less(next.poison, one, next.p, p_old));
            store_lanes(updated1 + i, k, s1);
            high1 = vf_max(high1, vf_abs(k >= VF_LANES ? s1 : first_lanes(s1, k)));
            if (two_states) {
                const vf s2 = vf_where_less(next.poison, one, next.s2, s2_old);
                store_lanes(updated2 + i, k, s2);
                high2 = vf_max(high2, vf_abs(k >= VF_LANES ? s2 : first_lanes(s2, k)));
            }
            skipped += vf_count_nan(k >= VF_LANES ? next.poison : first_lanes(next.poison, k));
        }
        const float new_absmax1 = vf_reduce_max(high1);
        job->absmax1[b] = new_absmax1;
        if (stochastic)
            stochastic_codes_of_states(updated1, count, new_absmax1, job->table1, &map1, job->zero_code1, start,
                                       (uint32_t)h.step, job->codes1 + start);
        else
            codes_of_states(updated1, count, new_absmax1, job->table1, job->zero_code1, job->codes1 + start);
        if (two_states) {
            const float new_absmax2 = vf_reduce_max(high2);
            job->absmax2[b] = new_absmax2;
            codes_of_states(updated2, count, new_absmax2, job->table2, job->zero_code2, job->codes2 + start);
        }
    }
    if (skipped) __atomic_fetch_add(job->skipped, skipped, __ATOMIC_RELAXED);
}

/* sml_f32_u8_<name>__<isa>, the kernel of the catalog's "optim" signature. */
#define SML_OPTIM_KERNEL(name, two_states, stochastic, lanes)                                                     \
    static void name##_blocks(void *context, int64_t first, int64_t end) {                                     \
        step_blocks(context, first, end, two_states, stochastic, lanes);                                        \
    }                                                                                                            \
    void SML_ISA_SUFFIX(sml_f32_u8_##name)(int64_t n, float *p, const float *g, int64_t blocksize,              \
                                           uint8_t *codes1, float *absmax1, const float *map1,                 \
                                           const int32_t *table1, uint8_t zero_code1, uint8_t *codes2,         \
                                           float *absmax2, const float *map2, const int32_t *table2,           \
                                           uint8_t zero_code2, const struct sml_optim_step *step,              \
                                           int64_t *skipped, int workers) {                                     \
        struct optim_job job = {p,      g,      n,      blocksize,  codes1,     codes2, absmax1, absmax2, map1,    \
                                map2,   table1, table2, zero_code1, zero_code2, step,   skipped};                  \
        *skipped = 0;                                                                                            \
        run_tasks((n + blocksize - 1) / blocksize, n, workers, name##_blocks, &job);                           \
    }

SML_OPTIM_KERNEL(adam_step, 1, 0, adam_lanes)
SML_OPTIM_KERNEL(momentum_step, 0, 0, momentum_lanes)
SML_OPTIM_KERNEL(lion_step, 0, 1, lion_lanes)
SML_OPTIM_KERNEL(rms_step, 0, 0, rms_lanes)

SML_TILES(optim, VF_LANES)

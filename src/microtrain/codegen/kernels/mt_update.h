/* mt_update.h: SGD update of int8 weights / int32 biases (quant/update.py, docs/training-semantics.md 5).
 * delta = float32(-lr) * (g / divisor); new = saturate(P + round(delta)), round = rint (ties to even)
 * or stochastic floor(float32(delta + u)), u from a counter-based hash. No libm. */
#ifndef MT_UPDATE_H
#define MT_UPDATE_H

#include <stdint.h>

#define MT_ROUND_NEAREST 0
#define MT_ROUND_STOCHASTIC 1

static inline uint32_t mt_fmix32(uint32_t h) {
    h ^= h >> 16;
    h *= 0x85EBCA6Bu;
    h ^= h >> 13;
    h *= 0xC2B2AE35u;
    h ^= h >> 16;
    return h;
}

/* The per-(step, parameter) part of the hash; the element index is mixed in last. */
static inline uint32_t mt_hash_key(uint32_t seed, uint32_t step, uint32_t param_id) {
    uint32_t k = mt_fmix32(seed);
    k = mt_fmix32(k ^ step);
    return mt_fmix32(k ^ param_id);
}

/* u = float32(h >> 8) * 2^-24 in [0, 1) */
static inline float mt_uniform_f32(uint32_t key, uint32_t index) {
    return (float)(mt_fmix32(key ^ index) >> 8) * 5.9604644775390625e-08f;
}

/* Float -> integer without libgcc's int64 conversions (Cortex-M has none in hardware): a parameter
 * is at most int32, so |t| >= 2^32 saturates any update; 2^31 <= |t| < 2^32 is an even integer,
 * converted as 2 * (int32)(t / 2); below 2^31 a plain int32 conversion truncates. */
#define MT_TWO_POW_31 2147483648.0f
#define MT_TWO_POW_32 4294967296.0f

static inline int64_t mt_wide_int(float t) { /* t integral, 2^31 <= |t| < 2^32 */
    return (int64_t)(int32_t)(t * 0.5f) * 2;
}

/* floor(t) as an integer, saturated to +-2^32. */
static inline int64_t mt_floor_i64(float t) {
    int32_t i;
    if (t >= MT_TWO_POW_32) return (int64_t)1 << 32;
    if (t <= -MT_TWO_POW_32 || t != t) return -((int64_t)1 << 32);
    if (t >= MT_TWO_POW_31 || t < -MT_TWO_POW_31) return mt_wide_int(t);
    i = (int32_t)t; /* toward zero */
    if ((float)i > t) i -= 1; /* only for non-integral negative t, |t| < 2^23 */
    return i;
}

/* rint(t), ties to even, as an integer (saturated like mt_floor_i64). */
static inline int64_t mt_rint_i64(float t) {
    int32_t i;
    float f;
    if (t >= MT_TWO_POW_32) return (int64_t)1 << 32;
    if (t <= -MT_TWO_POW_32 || t != t) return -((int64_t)1 << 32);
    if (t >= MT_TWO_POW_31 || t < -MT_TWO_POW_31) return mt_wide_int(t);
    i = (int32_t)t;   /* toward zero */
    f = t - (float)i; /* exact: nonzero only for |t| < 2^23 */
    if (f > 0.5f || (f == 0.5f && (i & 1))) i += 1;
    else if (f < -0.5f || (f == -0.5f && (i & 1))) i -= 1;
    return i;
}

static inline int64_t mt_round_delta(float delta, int32_t rounding, uint32_t key, uint32_t index) {
    if (rounding == MT_ROUND_STOCHASTIC) {
        float t = delta + mt_uniform_f32(key, index);
        return mt_floor_i64(t);
    }
    return mt_rint_i64(delta);
}

static inline int8_t mt_update_s8(int8_t p, float delta, int32_t rounding, uint32_t key, uint32_t index) {
    int64_t v = (int64_t)p + mt_round_delta(delta, rounding, key, index);
    return (int8_t)(v > 127 ? 127 : (v < -128 ? -128 : v));
}

static inline int32_t mt_update_s32(int32_t p, float delta, int32_t rounding, uint32_t key, uint32_t index) {
    int64_t v = (int64_t)p + mt_round_delta(delta, rounding, key, index);
    return (int32_t)(v > 2147483647 ? 2147483647 : (v < -2147483647 - 1 ? -2147483647 - 1 : v));
}

#endif /* MT_UPDATE_H */

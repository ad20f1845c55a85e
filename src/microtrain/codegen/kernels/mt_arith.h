/* mt_arith.h: the int8 arithmetic of quant/arith.py, as the same float32 operation sequence.
 *
 * Compile with -ffp-contract=off (no fused multiply-add) and without -ffast-math: every line below
 * is one IEEE float32 operation in the order the Python reference performs it, so results are
 * bit-identical. No libm: rounding uses the 1.5 * 2^23 magic number (round-half-to-even in the
 * default rounding mode), valid for |t| <= 2^22; larger values saturate first.
 * Needs FLT_EVAL_METHOD == 0 (x86-64 SSE, AArch64, Cortex-M FPU or soft-float; not x87).
 */
#ifndef MT_ARITH_H
#define MT_ARITH_H

#include <stdint.h>

#define MT_ROUND_MAGIC 12582912.0f /* 1.5 * 2^23 */
#define MT_SAT_LIMIT 1024.0f      /* |rint(t)| beyond this saturates int8 whatever the zero point */

/* rint(t), ties to even, for |t| <= MT_SAT_LIMIT (well inside the magic number's 2^22 range). */
static inline float mt_rint_small_f32(float t) {
    float r = t + MT_ROUND_MAGIC;
    return r - MT_ROUND_MAGIC;
}

/* clamp(rint(t) + zero, -128, 127); *in_range = 1 when rint(t) + zero lies in [-128, 127]
 * (the straight-through clamp gradient passes there). in_range may be NULL. */
static inline int8_t mt_round_sat_s8(float t, int32_t zero, uint8_t *in_range) {
    float r;
    /* |t| > MT_SAT_LIMIT saturates whatever the zero point (|zero| <= 128): clamping t there first
     * keeps both the result and the mask, and brings t into the magic number's exact range */
    t = t > MT_SAT_LIMIT ? MT_SAT_LIMIT : t;
    t = t < -MT_SAT_LIMIT ? -MT_SAT_LIMIT : t;
    r = mt_rint_small_f32(t);
    r = r + (float)zero;
    if (in_range) *in_range = (uint8_t)((r >= -128.0f) & (r <= 127.0f)); /* & not &&: no branch, vectorisable */
    r = r > 127.0f ? 127.0f : r;
    r = r < -128.0f ? -128.0f : r;
    return (int8_t)r;
}

/* Conv requantisation: t = float(acc) + float(bias); t = t * eff; q = clamp(rint(t) + y_zero). */
static inline int8_t mt_requant_s8(int32_t acc, int32_t bias, float eff, int32_t y_zero, uint8_t *in_range) {
    float t = (float)acc + (float)bias;
    t = t * eff;
    return mt_round_sat_s8(t, y_zero, in_range);
}

/* Residual add: r = (q1-z1)*s1 + (q2-z2)*s2; q = clamp(rint(r / sy) + zy). */
static inline int8_t mt_add_requant_s8(int8_t q1, int32_t z1, float s1, int8_t q2, int32_t z2, float s2,
                                       float sy, int32_t zy, uint8_t *in_range) {
    float a = ((float)q1 - (float)z1) * s1;
    float b = ((float)q2 - (float)z2) * s2;
    float t = (a + b) / sy;
    return mt_round_sat_s8(t, zy, in_range);
}

/* rint(total / count) for integers, ties to even, exact (count > 0). */
static inline int32_t mt_div_round_even_s32(int32_t total, int32_t count) {
    int32_t q = total / count;
    int32_t rem = total - q * count;
    if (rem < 0) { /* C truncates toward zero: move to floor division */
        q -= 1;
        rem += count;
    }
    if (2 * rem > count || (2 * rem == count && (q & 1))) q += 1;
    return q;
}

static inline int8_t mt_sat_s8(int32_t v) { return (int8_t)(v > 127 ? 127 : (v < -128 ? -128 : v)); }

/* ===== Rounding mode "tflite" (quant/arith.py, section of the same name; docs/arithmetic.md) ==========
 * TFLite's integer requantisation, operation for operation: int32 values, int64 products, C truncation.
 * Right shifts of negative values are arithmetic (gcc and arm-none-eabi-gcc, as TFLite assumes). */
static inline int32_t mt_wrap_s32(int64_t v) { return (int32_t)(uint32_t)(uint64_t)v; }

/* gemmlowp SaturatingRoundingDoublingHighMul */
static inline int32_t mt_srdhm_s32(int32_t a, int32_t b) {
    int64_t ab, nudge;
    if (a == b && a == INT32_MIN) return INT32_MAX;
    ab = (int64_t)a * (int64_t)b;
    nudge = ab >= 0 ? ((int64_t)1 << 30) : (1 - ((int64_t)1 << 30));
    return (int32_t)((ab + nudge) / ((int64_t)1 << 31)); /* C division truncates toward zero */
}

/* gemmlowp RoundingDivideByPOT: nearest, ties away from zero (0 <= e <= 31) */
static inline int32_t mt_rdbypot_s32(int32_t x, int32_t e) {
    int32_t mask = (int32_t)(((int64_t)1 << e) - 1);
    int32_t rem = x & mask;
    int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return (x >> e) + (rem > threshold ? 1 : 0);
}

/* MultiplyByQuantizedMultiplier: double rounding (conv, depthwise, add) or single rounding
 * (x * m + 2^(30 - shift)) >> (31 - shift) (LiteRT's reference FULLY_CONNECTED). */
static inline int32_t mt_mbqm_s32(int32_t x, int32_t m, int32_t shift, int32_t single) {
    if (single) {
        int32_t total = 31 - shift;
        return (int32_t)(((int64_t)x * (int64_t)m + ((int64_t)1 << (total - 1))) >> total);
    }
    return mt_rdbypot_s32(mt_srdhm_s32(mt_wrap_s32((int64_t)(uint32_t)x << (shift > 0 ? shift : 0)), m),
                          shift > 0 ? 0 : -shift);
}

/* conv requantisation before the clamp: acc + bias in int32 (wrapping), rescale, + y_zero */
static inline int32_t mt_requant_tfl_pre_s32(int32_t acc, int32_t bias, int32_t m, int32_t shift, int32_t single,
                                             int32_t y_zero) {
    return mt_mbqm_s32(mt_wrap_s32((int64_t)acc + bias), m, shift, single) + y_zero;
}

/* ... clamped to [lo, hi] */
static inline int8_t mt_requant_tfl_s8(int32_t acc, int32_t bias, int32_t m, int32_t shift, int32_t single,
                                       int32_t y_zero, int32_t lo, int32_t hi) {
    int32_t v = mt_requant_tfl_pre_s32(acc, bias, m, shift, single, y_zero);
    v = v < lo ? lo : v;
    return (int8_t)(v > hi ? hi : v);
}

/* TFLite's average-pool rounding of an exact integer sum: (t +- count/2) / count, C truncation */
static inline int32_t mt_div_round_away_s32(int32_t total, int32_t count) {
    return total > 0 ? (total + count / 2) / count : (total - count / 2) / count;
}

#endif /* MT_ARITH_H */

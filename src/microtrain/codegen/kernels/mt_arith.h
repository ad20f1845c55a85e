/* mt_arith.h: the int8 arithmetic of quant/arith.py, as the same float32 operation sequence.
 *
 * Compile with -ffp-contract=off (no fused multiply-add) and without -ffast-math: every line below
 * is one IEEE float32 operation in the order the Python reference performs it, so results are
 * bit-identical. No libm: rounding uses the 1.5 * 2^23 magic number (round-half-to-even in the
 * default rounding mode), valid for |t| <= 2^22; larger values saturate first.
 * Needs FLT_EVAL_METHOD == 0 (x86-64 SSE, AArch64, Cortex-M FPU or soft-float; not x87).
 *
 * MT_INT_REQUANT=1 (the default where there is no FPU: Cortex-M builds without __ARM_FP; -DMT_INT_REQUANT=1
 * or =0 chooses elsewhere) makes mt_requant_s8 and mt_round_sat_s8 an integer-only spelling of the same
 * float32 sequence: each float rounding step emulated exactly in integers, same result and clamp mask for
 * every input (tests/test_int_spelling.py), at a fraction of the cost of software floating point.
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

static inline int8_t mt_sat_s8(int32_t v) { return (int8_t)(v > 127 ? 127 : (v < -128 ? -128 : v)); }

#ifndef MT_INT_REQUANT
#if defined(MT_TARGET_CORTEX_M) && !defined(__ARM_FP)
#define MT_INT_REQUANT 1
#else
#define MT_INT_REQUANT 0
#endif
#endif

/* clamp(rint(t) + zero, -128, 127); *in_range = 1 when rint(t) + zero lies in [-128, 127]
 * (the straight-through clamp gradient passes there). in_range may be NULL. */
static inline int8_t mt_round_sat_s8_f32(float t, int32_t zero, uint8_t *in_range) {
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
static inline int8_t mt_requant_s8_f32(int32_t acc, int32_t bias, float eff, int32_t y_zero, uint8_t *in_range) {
    float t = (float)acc + (float)bias;
    t = t * eff;
    return mt_round_sat_s8_f32(t, y_zero, in_range);
}

/* ----- The integer spelling (MT_INT_REQUANT) ----------------------------------------------------------
 * A float is m * 2^e with an integer significand m < 2^24. Every step keeps such a pair and rounds it as
 * IEEE float32 does (to nearest, ties to even): fl(acc), fl(bias) and their float sum are integers of at
 * most 24 significant bits; the product with eff is exact in 48 bits, then rounded to 24; the rest only
 * needs rint(min(|t|, MT_SAT_LIMIT)), an integer shift. Non-finite eff or t take the float code. */
static inline int32_t mt_bitlen_u32(uint32_t u) {
#if defined(__GNUC__)
    return u ? 32 - __builtin_clz(u) : 0;
#else
    int32_t n = 0;
    while (u) n++, u >>= 1;
    return n;
#endif
}

/* u / 2^sh rounded to nearest, ties to even (1 <= sh <= 31) */
static inline uint32_t mt_rne_shr_u32(uint32_t u, int32_t sh) {
    uint32_t q = u >> sh, rem = u & ((1u << sh) - 1u), half = 1u << (sh - 1);
    return q + (uint32_t)((rem > half) | ((rem == half) & q));
}

/* float32(u) for an integer u < 2^33 (the sum of two rounded int32s), as n * 2^*k with n <= 2^24 */
static inline uint32_t mt_round24_u64(uint64_t u, int32_t *k) {
    int32_t sh = 0;
    uint64_t rem, half, q;
    while ((u >> sh) >= (1u << 24)) sh++;
    *k = sh;
    if (!sh) return (uint32_t)u;
    q = u >> sh, rem = u & (((uint64_t)1 << sh) - 1u), half = (uint64_t)1 << (sh - 1);
    return (uint32_t)(q + (uint64_t)((rem > half) | ((rem == half) & (q & 1u))));
}

/* float32((float)a + (float)b) for int32 a, b: an integer, sign in *neg, magnitude n * 2^*k (n <= 2^24) */
static inline uint32_t mt_f32_sum_s32(int32_t a, int32_t b, uint32_t *neg, int32_t *k) {
    const uint32_t lim = 1u << 24;
    if ((uint32_t)a + lim <= 2u * lim && (uint32_t)b + lim <= 2u * lim) { /* both exact floats, |a + b| <= 2^25 */
        int32_t s = a + b;
        uint32_t m = s < 0 ? 0u - (uint32_t)s : (uint32_t)s;
        *neg = s < 0;
        *k = m > lim;
        return m > lim ? mt_rne_shr_u32(m, 1) : m;
    } else { /* the rare large values (dead channels' INT32_MIN/MAX bias): each rounded, summed, rounded */
        int32_t ka, kb;
        uint32_t ma = mt_round24_u64(a < 0 ? 0u - (uint32_t)a : (uint32_t)a, &ka);
        uint32_t mb = mt_round24_u64(b < 0 ? 0u - (uint32_t)b : (uint32_t)b, &kb);
        int64_t s = (a < 0 ? -1 : 1) * ((int64_t)ma << ka) + (b < 0 ? -1 : 1) * ((int64_t)mb << kb);
        *neg = s < 0;
        return mt_round24_u64((uint64_t)(s < 0 ? -s : s), k);
    }
}

/* min(rint(n * 2^e), MT_SAT_LIMIT) for n <= 2^24, ties to even (= rint(min(n * 2^e, MT_SAT_LIMIT))) */
static inline int32_t mt_rint_sat_mag(uint32_t n, int32_t e) {
    int32_t top = mt_bitlen_u32(n) + e; /* 2^(top-1) <= n * 2^e < 2^top */
    if (!n || top < 0) return 0;        /* below 1/2 */
    if (top > 10) return 1024;          /* at least 2^10 = MT_SAT_LIMIT */
    return e >= 0 ? (int32_t)(n << e) : (int32_t)mt_rne_shr_u32(n, -e); /* 1 <= -e <= 25 */
}

/* clamp(r + zero, -128, 127) and its in-range bit for the integer r = rint(t), |r| <= 1024 (the float code's
 * r + (float)zero: exact where it matters; a zero beyond +-2048 saturates like +-2048) */
static inline int8_t mt_zero_sat_s8(int32_t r, int32_t zero, uint8_t *in_range) {
    int32_t v = r + (zero > 2048 ? 2048 : (zero < -2048 ? -2048 : zero));
    if (in_range) *in_range = (uint8_t)((v >= -128) & (v <= 127));
    return mt_sat_s8(v);
}

static inline uint32_t mt_bits_of_f32(float f) {
    union {
        float f;
        uint32_t u;
    } b;
    b.f = f;
    return b.u;
}

static inline float mt_f32_of_bits(uint32_t u) {
    union {
        uint32_t u;
        float f;
    } b;
    b.u = u;
    return b.f;
}

static inline int8_t mt_round_sat_s8_int(float t, int32_t zero, uint8_t *in_range) {
    uint32_t u = mt_bits_of_f32(t), ex = (u >> 23) & 0xFFu, m = u & 0x7FFFFFu;
    int32_t r;
    if (ex == 0xFFu && m) return mt_round_sat_s8_f32(t, zero, in_range); /* NaN */
    r = mt_rint_sat_mag(ex ? m | 0x800000u : m, ex ? (int32_t)ex - 150 : -149); /* inf: top > 10 */
    return mt_zero_sat_s8(u >> 31 ? -r : r, zero, in_range);
}

/* The general case: any finite eff (denormals too), any int32 acc, bias, y_zero. Out of line where it
 * can be: the common case below leaves it to the rare inputs, and keeps its registers. */
#if defined(__GNUC__)
__attribute__((noinline, unused))
#endif
static int8_t mt_requant_s8_general(int32_t acc, int32_t bias, float eff, int32_t y_zero, uint8_t *in_range) {
    uint32_t u = mt_bits_of_f32(eff), ex = (u >> 23) & 0xFFu, me = u & 0x7FFFFFu, neg, n, hi, lo;
    int32_t k, e, len, r;
    uint64_t p;
    if (ex == 0xFFu) return mt_requant_s8_f32(acc, bias, eff, y_zero, in_range); /* inf, NaN */
    n = mt_f32_sum_s32(acc, bias, &neg, &k);
    neg ^= u >> 31;
    p = (uint64_t)n * (ex ? me | 0x800000u : me); /* exact, < 2^48 */
    e = k + (ex ? (int32_t)ex - 150 : -149);
    hi = (uint32_t)(p >> 32), lo = (uint32_t)p;
    len = hi ? 32 + mt_bitlen_u32(hi) : mt_bitlen_u32(lo);
    if (len > 24) { /* the float product: p rounded to 24 significant bits (sh <= 24, so 32-bit shifts) */
        int32_t sh = len - 24;
        uint32_t q = (hi << (32 - sh)) | (lo >> sh), rem = lo & ((1u << sh) - 1u), half = 1u << (sh - 1);
        lo = q + (uint32_t)((rem > half) | ((rem == half) & q));
        e += sh;
    }
    r = mt_rint_sat_mag(lo, e);
    return mt_zero_sat_s8(neg ? -r : r, y_zero, in_range);
}

/* The common case inline: eff normal, |acc|, |bias|, |y_zero| < 2^24 and |acc + bias| <= 2^24, so the float
 * sum is the exact one; the product p = |acc + bias| * significand (< 2^48) is normalised to q * 2^-sh2 with
 * 2^23 <= q <= 2^24 (rounded to 24 bits as the float product is), then rint needs one more shift. A
 * remainder is kept left-aligned in 32 bits: "round up" is rem > 2^31 - (q & 1) (above half, or a tie to odd). */
static inline int8_t mt_requant_s8_int(int32_t acc, int32_t bias, float eff, int32_t y_zero, uint8_t *in_range) {
    const uint32_t lim = 1u << 24;
    uint32_t u = mt_bits_of_f32(eff), ex = (u >> 23) & 0xFFu, n, hi, lo, q, rem;
    int32_t s = acc + bias, sh, r, v;
    uint64_t p;
    if ((((uint32_t)acc + lim) | ((uint32_t)bias + lim) | ((uint32_t)y_zero + lim)) >= 2u * lim || ex - 1u >= 254u)
        return mt_requant_s8_general(acc, bias, eff, y_zero, in_range);
    n = s < 0 ? 0u - (uint32_t)s : (uint32_t)s;
    if (n > lim) return mt_requant_s8_general(acc, bias, eff, y_zero, in_range);
    p = (uint64_t)n * ((u & 0x7FFFFFu) | 0x800000u);
    hi = (uint32_t)(p >> 32), lo = (uint32_t)p;
    if (hi) { /* 33..48 bits: round to 24 */
        sh = 8 + mt_bitlen_u32(hi);
        q = (hi << (32 - sh)) | (lo >> sh), rem = lo << (32 - sh);
        q += (uint32_t)(rem > 0x80000000u - (q & 1u));
    } else if (lo >= lim) { /* 25..32 bits */
        sh = mt_bitlen_u32(lo) - 24;
        q = lo >> sh, rem = lo << (32 - sh);
        q += (uint32_t)(rem > 0x80000000u - (q & 1u));
    } else { /* exact in 24 bits: left-align */
        if (!lo) return mt_zero_sat_s8(0, y_zero, in_range);
        sh = mt_bitlen_u32(lo) - 24;
        q = lo << -sh;
    }
    sh = 150 - (int32_t)ex - sh; /* |t| = q * 2^-sh */
    if (sh <= 13) r = 1024;      /* q * 2^-sh >= 2^23 * 2^-13 = MT_SAT_LIMIT */
    else if (sh >= 25) r = 0;    /* <= 2^24 * 2^-25 = 1/2, which rint makes 0 too */
    else {
        r = (int32_t)(q >> sh), rem = q << (32 - sh);
        r += (int32_t)(rem > 0x80000000u - ((uint32_t)r & 1u));
    }
    v = ((s ^ (int32_t)u) < 0 ? -r : r) + y_zero; /* exact: |y_zero| < 2^24; far values saturate alike */
    if (in_range) *in_range = (uint8_t)((v >= -128) & (v <= 127));
    return mt_sat_s8(v);
}

/* The spelling the kernels call: integer where MT_INT_REQUANT, float otherwise; the same bits either way.
 * (Names, not wrapper functions: a float build compiles to the same code as before the integer spelling.) */
#if MT_INT_REQUANT
#define mt_round_sat_s8 mt_round_sat_s8_int
#define mt_requant_s8 mt_requant_s8_int
#else
#define mt_round_sat_s8 mt_round_sat_s8_f32
#define mt_requant_s8 mt_requant_s8_f32
#endif

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

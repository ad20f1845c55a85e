/* mt_i16.h: the int16 backward's gradient codes (docs/training-semantics.md, section 4b), shared by the portable
 * kernel (mt_backward_i16.c) and its Cortex-M twin (arm/mt_backward_i16_smlad.c): both compute the same codes
 * and the same exact int32 sums, so their input gradients are equal bit for bit. */
#ifndef MT_I16_H
#define MT_I16_H

#include <stdint.h>

#include "mt_arith.h"

#define MT_I16_BITS 14      /* codes within +-2^14: one bit of headroom below int16 */
#define MT_I16_EXP_MAX 126  /* e in [-126, 126]: 2^e and 2^-e are normal floats */
#define MT_I16_BAD (-127)   /* the exponent of a tensor holding inf or NaN */
#define MT_I16_OPAIRS 64    /* output-channel pairs whose paired weights the Cortex-M kernel keeps on the stack */

/* int32 accumulators kept in the float output buffer until converted (same size; may_alias: no aliasing
 * assumption between the two views of that memory) */
typedef int32_t mt_i32_alias __attribute__((may_alias));

typedef union {
    float f;
    uint32_t u;
} mt_i16_bits;

/* 2^e as a float, e in [-126, 127] */
static inline float mt_i16_pow2(int32_t e) {
    mt_i16_bits b;
    b.u = (uint32_t)(e + 127) << 23;
    return b.f;
}

/* e = clamp(14 - k, -126, 126) with max |g| = f * 2^k (frexp, f in [0.5, 1)); max 0: e = 14. The bit patterns of
 * non-negative floats order like the floats, and inf / NaN lie above every finite one: integers only. */
static inline int32_t mt_i16_exponent(const float *g, int32_t n) {
    uint32_t m = 0, m1 = 0, m2 = 0, m3 = 0, biased; /* four running maxima: no dependency chain between them */
    int32_t i, e;
    for (i = 0; i + 4 <= n; i += 4) {
        mt_i16_bits a, b, c, d;
        a.f = g[i], b.f = g[i + 1], c.f = g[i + 2], d.f = g[i + 3];
        a.u &= 0x7fffffffu, b.u &= 0x7fffffffu, c.u &= 0x7fffffffu, d.u &= 0x7fffffffu;
        m = a.u > m ? a.u : m, m1 = b.u > m1 ? b.u : m1, m2 = c.u > m2 ? c.u : m2, m3 = d.u > m3 ? d.u : m3;
    }
    for (; i < n; i++) {
        mt_i16_bits a;
        a.f = g[i];
        a.u &= 0x7fffffffu;
        if (a.u > m) m = a.u;
    }
    m = m1 > m ? m1 : m, m = m2 > m ? m2 : m, m = m3 > m ? m3 : m;
    if (m >= 0x7f800000u) return MT_I16_BAD;
    if (m == 0) return MT_I16_BITS;                /* frexp(0) = (0, 0) */
    biased = m >> 23;
    if (biased == 0) return MT_I16_EXP_MAX;        /* subnormal: k <= -126, clamped */
    e = MT_I16_BITS - ((int32_t)biased - 126);     /* k = biased - 126 */
    return e > MT_I16_EXP_MAX ? MT_I16_EXP_MAX : (e < -MT_I16_EXP_MAX ? -MT_I16_EXP_MAX : e);
}

/* The codes of the whole gradient tensor, in the scratch buffer the kernels get (mt_i16_codes_bytes): by groups
 * of 4 pixels, then output-channel pairs, then the group's 4 pixels, each a word of 2 codes (o even, o + 1): the
 * Cortex-M kernel loads the 4 pixels' code pairs of one output-channel pair consecutively. A last group's missing
 * pixels and an odd out_c's missing channel have code 0. Code = rint(g * 2^e), ties to even (|g * 2^e| <= 2^14,
 * inside mt_rint_small_f32's exact range). */
static inline int32_t mt_i16_codes_bytes(int32_t npix, int32_t out_c) {
    return (int32_t)(((npix + 3) / 4) * ((out_c + 1) / 2) * 4 * 2 * (int32_t)sizeof(int16_t));
}

static inline int32_t mt_i16_code_index(int32_t opairs, int32_t pix, int32_t o) {
    return ((((pix >> 2) * opairs + (o >> 1)) << 2) + (pix & 3)) * 2 + (o & 1);
}

static inline void mt_i16_code_tensor(const float *g, int32_t npix, int32_t out_c, float up, int16_t *codes) {
    const int32_t opairs = (out_c + 1) / 2, n = (npix + 3) / 4 * 4;
    int32_t pix, o;
    for (pix = 0; pix < n; pix++)
        for (o = 0; o < 2 * opairs; o++)
            codes[mt_i16_code_index(opairs, pix, o)] =
                pix < npix && o < out_c ? (int16_t)mt_rint_small_f32(g[pix * out_c + o] * up) : 0;
}

#endif

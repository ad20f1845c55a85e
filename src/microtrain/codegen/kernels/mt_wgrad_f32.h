/* mt_wgrad_f32.h: one step of a weight-gradient sum, g + ((float)x - (float)x_zero) * go, in float32, and of
 * an input-gradient sum, acc + g * (float)w.
 *
 * The weight-update and input-gradient kernels (mt_backward_f32.c) sum these over pixels and channels. Where float32 is gcc's software
 * floating point (no FPU: the MT_INT_WGRAD default follows MT_INT_REQUANT, mt_arith.h) the step is spelled in
 * integers, each float rounding emulated exactly (nearest, ties to even) so the sum has the same bits:
 * x - x_zero is an exact small integer a (|a| <= 255), the product |a| * significand(go) is exact in 32 bits
 * and rounded to 24, then the float addition: significands with 7 guard bits and a sticky bit, normalised and
 * rounded. Anything else (|a| > 255, go or g denormal, infinite or NaN, a result that would be denormal or
 * overflow) takes the float code. tests/int_spelling_check.c holds the two spellings together.
 */
#ifndef MT_WGRAD_F32_H
#define MT_WGRAD_F32_H

#include "mt_arith.h"

#ifndef MT_INT_WGRAD
#define MT_INT_WGRAD MT_INT_REQUANT
#endif

static inline float mt_wgrad_step_f32(float g, int32_t x, int32_t x_zero, float go) {
    return g + ((float)x - (float)x_zero) * go;
}

/* q + 1 when the left-aligned remainder rem asks for rounding up: above half, or a tie with q odd */
static inline uint32_t mt_round_up_rem(uint32_t q, uint32_t rem) { return q + (uint32_t)(rem > 0x80000000u - (q & 1u)); }

/* The float code for the cases the integer one leaves to it; out of line, so the common case keeps its
 * registers (a call to software float needs all the argument registers). */
#if defined(__GNUC__)
__attribute__((noinline, unused))
#endif
static float mt_wgrad_step_rare(float g, int32_t x, int32_t x_zero, float go) {
    return mt_wgrad_step_f32(g, x, x_zero, go);
}

/* x an int8 value (as int32) */
static inline float mt_wgrad_step_int(float g, int32_t x, int32_t x_zero, float go) {
    uint32_t ug = mt_bits_of_f32(g), up = mt_bits_of_f32(go), ep = (up >> 23) & 0xFFu, eg = (ug >> 23) & 0xFFu;
    int32_t a = (int32_t)((uint32_t)x - (uint32_t)x_zero); /* wraps only far outside |a| <= 255 */
    uint32_t m, q, bp, ax, ay, mx, my, s, sx;
    int32_t sh, d, e;
    if ((uint32_t)a + 255u > 510u || ep > 245u || eg == 0xFFu || (eg == 0u && (ug << 1)) || (ep == 0u && (up << 1)))
        return mt_wgrad_step_rare(g, x, x_zero, go); /* |a| > 255, denormal, inf, NaN, a product near overflow */
    if (a == 0 || ep == 0u) { /* the product is a zero: g, or a zero whose sign is set only if both are -0 */
        uint32_t sp = ((uint32_t)(a < 0) ^ (up >> 31)) << 31;
        return (ug << 1) ? g : mt_f32_of_bits(ug & sp);
    }
    /* the product: |a| * significand < 2^32, rounded to 24 bits: q * 2^(ep + sh - 150) */
    m = (a < 0 ? 0u - (uint32_t)a : (uint32_t)a) * ((up & 0x7FFFFFu) | 0x800000u);
    sh = mt_bitlen_u32(m) - 24;
    q = m >> sh;
    if (sh) q = mt_round_up_rem(q, m << (32 - sh));
    if (q >> 24) q >>= 1, sh++;
    bp = (((uint32_t)(a < 0) ^ (up >> 31)) << 31) | ((ep + (uint32_t)sh) << 23) | (q & 0x7FFFFFu);
    if (!(ug << 1)) return mt_f32_of_bits(bp); /* 0 + p = p */
    /* the sum of two normal floats: x the larger magnitude */
    ax = ug & 0x7FFFFFFFu, ay = bp & 0x7FFFFFFFu, sx = ug;
    if (ay > ax) ax = ay, ay = ug & 0x7FFFFFFFu, sx = bp;
    mx = ((ax & 0x7FFFFFu) | 0x800000u) << 7, my = ((ay & 0x7FFFFFu) | 0x800000u) << 7;
    d = (int32_t)(ax >> 23) - (int32_t)(ay >> 23);
    if (d > 31) my = 1u; /* only a sticky bit is left of it */
    else if (d) my = (my >> d) | (uint32_t)((my << (32 - d)) != 0u);
    s = ((ug ^ bp) >> 31) ? mx - my : mx + my; /* < 2^32; >= 0 as |x| >= |y| */
    if (!s) return 0.0f;                         /* x - x is +0 */
    sh = mt_bitlen_u32(s) - 24;                  /* 7 or 8 unless the difference cancelled */
    e = (int32_t)(ax >> 23) + sh - 7;
    if (sh > 0) {
        q = mt_round_up_rem(s >> sh, s << (32 - sh));
        if (q >> 24) q >>= 1, e++;
    } else {
        q = s << -sh; /* exact: cancellation happens only for d <= 1, and no bit was shifted out then */
    }
    if (e <= 0 || e >= 255) return mt_wgrad_step_rare(g, x, x_zero, go); /* denormal or overflowing sum */
    return mt_f32_of_bits((sx & 0x80000000u) | ((uint32_t)e << 23) | (q & 0x7FFFFFu));
}

/* The spelling the kernels call (the same bits either way). */
#if MT_INT_WGRAD
#define mt_wgrad_step mt_wgrad_step_int
#else /* the expression itself: builds with an FPU compile to the same code as before this header */
#define mt_wgrad_step(g, x, x_zero, go) ((g) + ((float)(x) - (float)(x_zero)) * (go))
#endif

/* acc + g * (float)w for an int8 w: the sums of the input-gradient kernels. The same float steps as
 * mt_wgrad_step with x = w, x_zero = 0: (float)w - 0 is (float)w, and IEEE products commute. */
#if MT_INT_WGRAD
#define mt_sum_step_s8(acc, g, w) mt_wgrad_step_int((acc), (w), 0, (g))
#else
#define mt_sum_step_s8(acc, g, w) ((acc) + (g) * (float)(w))
#endif

#endif /* MT_WGRAD_F32_H */

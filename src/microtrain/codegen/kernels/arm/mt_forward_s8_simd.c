/* mt_forward_s8_simd.c: Cortex-M (ARMv7E-M DSP extension) variants of the int8 conv kernels of
 * ../mt_forward_s8.c (pointwise, pointwise with the sparse-update weight split, depthwise, dense), with the
 * exact signatures and results of the portable ones.
 *
 * Chosen at build time: the Cortex-M build (targets/cortex_m/mt_cortex_m.mk, SIMD=1) compiles the portable
 * file with these functions renamed *_portable and links this file instead. Bit-exact by construction:
 * the accumulator is the same exact int32 sum of (x - x_zero) * w (products of int16 lanes, summed in int32;
 * |x - x_zero| <= 255 fits int16), and requantisation gives mt_requant_s8's result (store_out).
 *
 * Packing: a word of 4 int8 x0..x3 is split by SXTAB16 into int16 lanes (x0 - z, x2 - z) and, rotated by 8,
 * (x1 - z, x3 - z); weights by SXTB16 the same way, so SMLAD does two MACs per instruction.
 * - pointwise, dense with kh * kw * in_c <= MT_QUAD_MAX_K (first_conv) and split pointwise: four output
 *   pixels per pass. Their inputs (receptive fields, gathered channels; padded to a multiple of 4 with the
 *   zero point) are expanded once into a stack buffer, interleaved so one LDM brings two pixels' lanes; each
 *   weight word is then loaded and unpacked once for the four pixels (quad_mac: 28 instructions per 32
 *   MACs). The sums start from the bias (bias folding, below) and the four outputs of a channel are
 *   requantised by one asm block (QUAD_STORE: sums to and from the FPU two at a time); without a mask, the
 *   whole pointwise channel loop is one asm loop (quad_rows). Pointwise inputs wider than the buffer go through
 *   it in chunks, partial sums kept per block of output channels. A split pointwise conv whose two blocks are
 *   whole groups of 4 channels runs the frozen and the trained row of each output channel in one such loop
 *   (split_rows, with the mask too). Leftover pixels (n_pix % 4) and
 *   in_c % 4 != 0 use the per-pixel paths below.
 * - without a mask (frozen layers), weights unpacked to int16 lanes once per call into stack tables: pointwise
 *   with 16-48 input channels (pointwise_wtab: one pixel at a time, two output channels per LDM of its input
 *   lanes), 8 (pointwise_narrow: the pixel's lanes in registers) and first-conv-like dense convs (conv_wtab:
 *   receptive fields padded to a multiple of 4, a last half group of 4 inputs when not of 8, gathered eight
 *   pixels at a time, a row of inside 3x3x3 windows by pointer steps; then pointwise_wtab's loop). A channel
 *   quad's four outputs are contiguous there (and in dw_rows): stored packed (PACKED_STORE4) when every output of
 *   the call provably fits int16 before the int8 clamp (wtab_fits), byte by byte otherwise. pointwise_wtab also
 *   takes masked calls (out_c % 8 == 0, in_c 24-48: two quads per pass, their clamp bits from USUB16's GE flags
 *   one mask byte) and split convs whose index lists partition the input channels (the table built from the
 *   reassembled weight rows); dead channels whose outputs all clamp ride in the tables (table_bias);
 * - per-pixel paths: one pixel x four output channels (dot4_asm), or an int16 patch per pixel; the dense
 *   receptive field of a window inside the input is copied a kernel row (kw * in_c contiguous bytes) at a time;
 * - depthwise: 3x3, 5x5 and 7x7 windows at stride 1 (5x5 and 7x7 also at stride 2) no wider than the map go through
 *   dw_quad: four channels at a time, two taps per SMLAD, from a ring of the input rows converted once into int16
 *   pixel pairs (padding as zeros: every window whole, no border code). The other shapes (3x3 stride 2, windows
 *   wider than the map, a mask with out_c % 4 != 0): four channels in four accumulators (SMLABB/SMLATT). Pixels
 *   whose window lies inside the input run, four channels at a time, over a per-call list of (input offset,
 *   weights unpacked to int16 lanes) (dw_rows: a whole row of them in one asm loop, else dw_run; unmasked 3x3
 *   stride-1 rows of whole windows two pixels per pass, dw_pairs); border pixels over a per-pixel list of their
 *   valid taps on the raw weights (dw_border). Sums start from the bias when |bias| <= 2^24 (bias folding: the
 *   same float, see bias_foldable), and with a mask the four clamp bits of a channel block are written as one
 *   nibble.
 * Unmasked outputs of a call whose multipliers are all finite skip the NaN test and the mask update
 * (requant_finite); the result is the same. Shapes beyond the stack patch / tap list sizes call the portable
 * kernel, and so does a dilated window (dilation > 1: the 1-D models' dilated convs run the portable loops;
 * pointwise kernels have no window to dilate). The residual add has a twin too (mt_add_s8). Stack (arm-none-eabi-gcc
 * -O2 -fstack-usage, Cortex-M7, measured 2026-12-03): the deepest frames are dw_quad's 1,992 B (1,920 B of weights
 * and ring, MT_DWQ_BYTES; its chain mt_conv_depthwise_s8 + dw_quad + dwq_block + dwq_convert: 2,348 B), then
 * pointwise_wtab's 1,976 B (1,344 B of table) and conv_wtab's 1,720 B; the float backward's deepest
 * (mt_backward_f32_fast.c) is grad_input_pointwise_block's 1,936 B. A device run's measured high-water mark is
 * printed by `microtrain run`. */
#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP

#include <arm_acle.h>

#include "mt_arith.h"
#include "mt_kernels.h"

static inline uint32_t load_u32(const int8_t *p)
{
    uint32_t v;
    __builtin_memcpy(&v, p, 4); /* one LDR (unaligned word loads are allowed on ARMv7E-M); the builtin
                                   because -ffreestanding would otherwise leave a call to memcpy */
    return v;
}

/* The odd bytes (1 and 3) sign-extended into int16 lanes: SXTB16 / SXTAB16 with their ROR #8 operand.
 * ACLE has no rotated form and gcc 12 does not fold a separate rotate into it, so one instruction of asm. */
static inline uint32_t sxtb16_ror8(uint32_t v)
{
    uint32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(v));
    return r;
}

static inline uint32_t sxtab16_ror8(uint32_t add, uint32_t v)
{
    uint32_t r;
    __asm__("sxtab16 %0, %1, %2, ror #8" : "=r"(r) : "r"(add), "r"(v));
    return r;
}

/* rint(t) as an integer by VCVTR (rounding mode of FPSCR: round to nearest even after reset), saturating
 * to the int32 range for huge |t|. */
static inline int32_t rint_s32(float t)
{
    union {
        float f;
        int32_t i;
    } r;
    __asm__("vcvtr.s32.f32 %0, %1" : "=t"(r.f) : "t"(t));
    return r.i;
}

/* mt_requant_s8 (mt_arith.h), same result and clamp mask, fewer instructions: for |t| <= MT_SAT_LIMIT the
 * magic-number rounding there equals VCVTR's round-to-nearest-even, and rint(t) + zero is an exact small
 * integer either way; beyond it both saturate (QADD keeps the sum from wrapping). SSAT is the int8 clamp and
 * `v != q` means "clamped". NaN (impossible with finite scales) goes low, as there. */
static inline void store_out(int8_t *y, uint8_t *mask, int32_t i, int32_t acc, int32_t bias, float eff,
                             int32_t y_zero)
{
    float t = (float)acc + (float)bias;
    t = t * eff;
    int32_t v = __builtin_expect(t != t, 0) ? -(1 << 16) : __qadd(rint_s32(t), y_zero);
    int32_t q = __ssat(v, 8);
    y[i] = (int8_t)q;
    if (mask) {
        uint8_t bit = (uint8_t)(1u << (i & 7));
        if (q == v) mask[i >> 3] = (uint8_t)(mask[i >> 3] | bit);
        else mask[i >> 3] = (uint8_t)(mask[i >> 3] & (uint8_t)~bit);
    }
}

/* Dot products of one input pixel (n channels) with four weight rows: each input word is unpacked once
 * for all four (per 4 inputs: 1 + 2 unpack, then per row 1 load + 2 unpack + 2 SMLAD). */
static inline void dot4_s8(const int8_t *x, int32_t neg_zero, const int8_t *w, int32_t n, int32_t *acc)
{
    const int8_t *w0 = w, *w1 = w + n, *w2 = w + 2 * n, *w3 = w + 3 * n;
    int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0, i = 0;
    for (; i + 4 <= n; i += 4) {
        uint32_t xv = load_u32(x + i);
        int32_t x02 = (int32_t)__sxtab16((uint32_t)neg_zero, xv);
        int32_t x13 = (int32_t)sxtab16_ror8((uint32_t)neg_zero, xv);
        uint32_t v;
        v = load_u32(w0 + i);
        a0 = __smlad(x02, (int32_t)__sxtb16(v), a0);
        a0 = __smlad(x13, (int32_t)sxtb16_ror8(v), a0);
        v = load_u32(w1 + i);
        a1 = __smlad(x02, (int32_t)__sxtb16(v), a1);
        a1 = __smlad(x13, (int32_t)sxtb16_ror8(v), a1);
        v = load_u32(w2 + i);
        a2 = __smlad(x02, (int32_t)__sxtb16(v), a2);
        a2 = __smlad(x13, (int32_t)sxtb16_ror8(v), a2);
        v = load_u32(w3 + i);
        a3 = __smlad(x02, (int32_t)__sxtb16(v), a3);
        a3 = __smlad(x13, (int32_t)sxtb16_ror8(v), a3);
    }
    const int32_t x_zero = -(int16_t)(neg_zero & 0xFFFF);
    for (; i < n; i++) {
        int32_t xi = (int32_t)x[i] - x_zero;
        a0 += xi * (int32_t)w0[i];
        a1 += xi * (int32_t)w1[i];
        a2 += xi * (int32_t)w2[i];
        a3 += xi * (int32_t)w3[i];
    }
    acc[0] = a0;
    acc[1] = a1;
    acc[2] = a2;
    acc[3] = a3;
}

/* Two pixels x four weight rows: each unpacked weight word serves both pixels (per 4 inputs: 2 x 3 to
 * unpack x, 4 x 3 to load and unpack w, 16 SMLAD for 32 MACs). */
static inline void dot4x2_s8(const int8_t *xa, const int8_t *xb, int32_t neg_zero, const int8_t *w, int32_t n,
                             int32_t *acc)
{
    int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0, b0 = 0, b1 = 0, b2 = 0, b3 = 0, i = 0;
    for (; i + 4 <= n; i += 4) {
        uint32_t xv = load_u32(xa + i), yv = load_u32(xb + i);
        int32_t x02 = (int32_t)__sxtab16((uint32_t)neg_zero, xv);
        int32_t x13 = (int32_t)sxtab16_ror8((uint32_t)neg_zero, xv);
        int32_t y02 = (int32_t)__sxtab16((uint32_t)neg_zero, yv);
        int32_t y13 = (int32_t)sxtab16_ror8((uint32_t)neg_zero, yv);
        uint32_t v;
        int32_t lo, hi;
        v = load_u32(w + i);
        lo = (int32_t)__sxtb16(v), hi = (int32_t)sxtb16_ror8(v);
        a0 = __smlad(x13, hi, __smlad(x02, lo, a0));
        b0 = __smlad(y13, hi, __smlad(y02, lo, b0));
        v = load_u32(w + n + i);
        lo = (int32_t)__sxtb16(v), hi = (int32_t)sxtb16_ror8(v);
        a1 = __smlad(x13, hi, __smlad(x02, lo, a1));
        b1 = __smlad(y13, hi, __smlad(y02, lo, b1));
        v = load_u32(w + 2 * n + i);
        lo = (int32_t)__sxtb16(v), hi = (int32_t)sxtb16_ror8(v);
        a2 = __smlad(x13, hi, __smlad(x02, lo, a2));
        b2 = __smlad(y13, hi, __smlad(y02, lo, b2));
        v = load_u32(w + 3 * n + i);
        lo = (int32_t)__sxtb16(v), hi = (int32_t)sxtb16_ror8(v);
        a3 = __smlad(x13, hi, __smlad(x02, lo, a3));
        b3 = __smlad(y13, hi, __smlad(y02, lo, b3));
    }
    const int32_t x_zero = -(int16_t)(neg_zero & 0xFFFF);
    for (; i < n; i++) {
        int32_t xi = (int32_t)xa[i] - x_zero, yi = (int32_t)xb[i] - x_zero;
        a0 += xi * (int32_t)w[i];
        a1 += xi * (int32_t)w[n + i];
        a2 += xi * (int32_t)w[2 * n + i];
        a3 += xi * (int32_t)w[3 * n + i];
        b0 += yi * (int32_t)w[i];
        b1 += yi * (int32_t)w[n + i];
        b2 += yi * (int32_t)w[2 * n + i];
        b3 += yi * (int32_t)w[3 * n + i];
    }
    acc[0] = a0, acc[1] = a1, acc[2] = a2, acc[3] = a3;
    acc[4] = b0, acc[5] = b1, acc[6] = b2, acc[7] = b3;
}

/* Four weight rows (stride n) against one pixel, hand-scheduled: gcc's version of this loop spills, and
 * post-indexed loads fold the pointer updates (per 4 inputs: 1 + 2 unpack x, per row 1 load + 2 unpack + 2 SMLAD,
 * 2 loop = 25 instructions for 16 MACs). n4 = n rounded down to a multiple of 4 (> 0). */
static inline void dot4_asm(const int8_t *x, int32_t neg_zero, const int8_t *w, int32_t n, int32_t n4, int32_t *acc)
{
    const int8_t *xp = x, *end = x + n4, *wa = w, *wb = w + 2 * n;
    int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    uint32_t x02, x13, v, lo;
    __asm__ volatile(
        "1:\n\t"
        "ldr     %[x13], [%[xp]], #4\n\t"
        "ldr     %[v], [%[wa], %[n]]\n\t"
        "sxtab16 %[x02], %[nz], %[x13]\n\t"
        "sxtab16 %[x13], %[nz], %[x13], ror #8\n\t"
        "sxtb16  %[lo], %[v]\n\t"
        "sxtb16  %[v], %[v], ror #8\n\t"
        "smlad   %[a1], %[x02], %[lo], %[a1]\n\t"
        "smlad   %[a1], %[x13], %[v], %[a1]\n\t"
        "ldr     %[v], [%[wa]], #4\n\t"
        "sxtb16  %[lo], %[v]\n\t"
        "sxtb16  %[v], %[v], ror #8\n\t"
        "smlad   %[a0], %[x02], %[lo], %[a0]\n\t"
        "smlad   %[a0], %[x13], %[v], %[a0]\n\t"
        "ldr     %[v], [%[wb], %[n]]\n\t"
        "sxtb16  %[lo], %[v]\n\t"
        "sxtb16  %[v], %[v], ror #8\n\t"
        "smlad   %[a3], %[x02], %[lo], %[a3]\n\t"
        "smlad   %[a3], %[x13], %[v], %[a3]\n\t"
        "ldr     %[v], [%[wb]], #4\n\t"
        "sxtb16  %[lo], %[v]\n\t"
        "sxtb16  %[v], %[v], ror #8\n\t"
        "smlad   %[a2], %[x02], %[lo], %[a2]\n\t"
        "smlad   %[a2], %[x13], %[v], %[a2]\n\t"
        "cmp     %[xp], %[end]\n\t"
        "bne     1b\n\t"
        : [xp] "+r"(xp), [wa] "+r"(wa), [wb] "+r"(wb), [a0] "+r"(a0), [a1] "+r"(a1), [a2] "+r"(a2),
          [a3] "+r"(a3), [x02] "=&r"(x02), [x13] "=&r"(x13), [v] "=&r"(v), [lo] "=&r"(lo)
        : [n] "r"(n), [end] "r"(end), [nz] "r"(neg_zero)
        : "cc", "memory");
    const int32_t x_zero = -(int16_t)(neg_zero & 0xFFFF);
    for (int32_t i = n4; i < n; i++) {
        int32_t xi = (int32_t)x[i] - x_zero;
        a0 += xi * (int32_t)w[i];
        a1 += xi * (int32_t)w[n + i];
        a2 += xi * (int32_t)w[2 * n + i];
        a3 += xi * (int32_t)w[3 * n + i];
    }
    acc[0] = a0, acc[1] = a1, acc[2] = a2, acc[3] = a3;
}

/* One dot product (the channels left over after the blocks of four). */
static inline int32_t dot1_s8(const int8_t *x, int32_t neg_zero, const int8_t *w, int32_t n)
{
    int32_t a = 0, i = 0;
    for (; i + 4 <= n; i += 4) {
        uint32_t xv = load_u32(x + i), v = load_u32(w + i);
        a = __smlad((int32_t)__sxtab16((uint32_t)neg_zero, xv), (int32_t)__sxtb16(v), a);
        a = __smlad((int32_t)sxtab16_ror8((uint32_t)neg_zero, xv), (int32_t)sxtb16_ror8(v), a);
    }
    const int32_t x_zero = -(int16_t)(neg_zero & 0xFFFF);
    for (; i < n; i++) a += ((int32_t)x[i] - x_zero) * (int32_t)w[i];
    return a;
}

static inline int32_t pack_neg_zero(int32_t x_zero)
{
    /* Both int16 lanes hold -x_zero: SXTAB16 subtracts the zero point while sign-extending. */
    return (int32_t)(((uint32_t)(uint16_t)(int16_t)-x_zero) * 0x00010001u);
}

static inline const int8_t *pixel_in(const mt_conv_params *p, const int8_t *x, int32_t pix)
{
    int32_t oy = pix / p->out_w, ox = pix - oy * p->out_w;
    return x + ((oy * p->stride) * p->in_w + ox * p->stride) * p->in_c;
}

static void pointwise_pixel_pairs(const mt_conv_params *p, const int8_t *x, const int8_t *w, const int32_t *bias,
                                  const float *eff, int8_t *y, uint8_t *mask)
{
    const int32_t in_c = p->in_c, out_c = p->out_c, neg_zero = pack_neg_zero(p->x_zero);
    const int32_t n_pix = p->out_h * p->out_w;
    int32_t pix = 0;
    for (; pix + 2 <= n_pix; pix += 2) { /* pixel pairs */
        const int8_t *xa = pixel_in(p, x, pix), *xb = pixel_in(p, x, pix + 1);
        int32_t base = pix * out_c, o = 0;
        for (; o + 4 <= out_c; o += 4) {
            int32_t acc[8];
            dot4x2_s8(xa, xb, neg_zero, w + o * in_c, in_c, acc);
            for (int32_t j = 0; j < 4; j++) {
                store_out(y, mask, base + o + j, acc[j], bias[o + j], eff[o + j], p->y_zero);
                store_out(y, mask, base + out_c + o + j, acc[4 + j], bias[o + j], eff[o + j], p->y_zero);
            }
        }
        for (; o < out_c; o++) {
            store_out(y, mask, base + o, dot1_s8(xa, neg_zero, w + o * in_c, in_c), bias[o], eff[o], p->y_zero);
            store_out(y, mask, base + out_c + o, dot1_s8(xb, neg_zero, w + o * in_c, in_c), bias[o], eff[o],
                      p->y_zero);
        }
    }
    for (; pix < n_pix; pix++) { /* an odd last pixel */
        const int8_t *xa = pixel_in(p, x, pix);
        int32_t base = pix * out_c, o = 0;
        for (; o + 4 <= out_c; o += 4) {
            int32_t acc[4];
            dot4_s8(xa, neg_zero, w + o * in_c, in_c, acc);
            for (int32_t j = 0; j < 4; j++)
                store_out(y, mask, base + o + j, acc[j], bias[o + j], eff[o + j], p->y_zero);
        }
        for (; o < out_c; o++)
            store_out(y, mask, base + o, dot1_s8(xa, neg_zero, w + o * in_c, in_c), bias[o], eff[o], p->y_zero);
    }
}

/* Four pixels' inputs (n channels, n % 4 == 0) unpacked once into int16 lanes shifted by -x_zero, laid out
 * for quad_mac: per group of 4 channels c..c+3, 8 words: pixel 0 (c, c+2), (c+1, c+3), then pixels 1..3. */
static inline void expand_quad(const int8_t *x0, const int8_t *x1, const int8_t *x2, const int8_t *x3,
                               int32_t neg_zero, int32_t n, uint32_t *buf)
{
    for (int32_t i = 0; i < n; i += 4, buf += 8) {
        uint32_t v0 = load_u32(x0 + i), v1 = load_u32(x1 + i), v2 = load_u32(x2 + i), v3 = load_u32(x3 + i);
        buf[0] = __sxtab16((uint32_t)neg_zero, v0), buf[1] = sxtab16_ror8((uint32_t)neg_zero, v0);
        buf[2] = __sxtab16((uint32_t)neg_zero, v1), buf[3] = sxtab16_ror8((uint32_t)neg_zero, v1);
        buf[4] = __sxtab16((uint32_t)neg_zero, v2), buf[5] = sxtab16_ror8((uint32_t)neg_zero, v2);
        buf[6] = __sxtab16((uint32_t)neg_zero, v3), buf[7] = sxtab16_ror8((uint32_t)neg_zero, v3);
    }
}

/* Bias folding: mt_requant_s8 computes (float)acc + (float)bias. When |acc| <= 2^24 and |bias| <= 2^24 both
 * are exact floats and the float sum is the exact sum rounded once to nearest even, which is what
 * (float)(acc + bias) gives too (and acc + bias cannot overflow). The kernels then start their sums from the
 * bias and requantise (float)sum * eff. |acc| <= k * 255 * 128 (|x - x_zero| <= 255, |w| <= 128). */
#define MT_FOLD_LIMIT (1 << 24)
static inline int fold_k(int32_t k) { return k <= MT_FOLD_LIMIT / (255 * 128); }
static inline int fold_one(int32_t b) { return (b >= -MT_FOLD_LIMIT) & (b <= MT_FOLD_LIMIT); }
/* A dead channel: its bias cannot be folded but outweighs every possible sum of its k products so far that each
 * of its outputs is clamped (|t| > lim for any sum, lim = 127.5 - y_zero on the high side, 129.5 + y_zero on the
 * low one: the clamp value on the side of bias * eff, mask bit 0). Any bias and multiplier of the same signs
 * that keep every output clamped give the same outputs and bits, so the tables carry such a channel as folded:
 * table_bias, table_eff give sign(b) * 2^24 and sign(e) * 2^-12 (kmax <= 2^23: |t| between 2048 and 6144, so
 * clamped, and within int16 reach for the packed stores), a foldable channel its own, the others bias 0 (they
 * are redone apart). The test is exact in integers up to the float roundings of (|b| - kmax) * |e| (relative
 * 2^-22, against a margin of 2). */
static int table_dead(int32_t b, float e, int32_t k, int32_t y_zero)
{
    const uint32_t kmax = (uint32_t)k * (255u * 128u), mag = b < 0 ? 0u - (uint32_t)b : (uint32_t)b;
    const float a = __builtin_fabsf(e), lim = ((b < 0) != (e < 0.0f)) ? 129.5f + (float)y_zero : 127.5f - (float)y_zero;
    return !fold_one(b) && kmax <= (1u << 23) && (float)(mag - kmax) * a * 0.999f > lim + 2.0f;
}

/* inline with the foldable case first (table_dead is false there): no call for the usual channel */
static inline int32_t table_bias(int32_t b, float e, int32_t k, int32_t y_zero)
{
    if (fold_one(b)) return b;
    return table_dead(b, e, k, y_zero) ? (b < 0 ? -MT_FOLD_LIMIT : MT_FOLD_LIMIT) : 0;
}

static inline float table_eff(int32_t b, float e, int32_t k, int32_t y_zero)
{
    if (fold_one(b)) return e;
    return table_dead(b, e, k, y_zero) ? (e < 0.0f ? -1.0f / 4096.0f : 1.0f / 4096.0f) : e;
}

static inline int table_folds(int32_t b, float e, int32_t k, int32_t y_zero)
{
    return fold_one(b) || table_dead(b, e, k, y_zero);
}

static int bias_foldable(const int32_t *bias, int32_t n, int32_t k)
{
    if (!fold_k(k)) return 0;
    int ok = 1;
    for (int32_t i = 0; i < n; i++) ok &= fold_one(bias[i]);
    return ok;
}

/* The sums of one output channel at four output pixels. */
typedef struct {
    int32_t a0, a1, a2, a3;
} quad_acc;

/* One group of 4 input channels of a weight row against four expanded pixels: the weight word is loaded and
 * unpacked once for the four, the pixels come two at a time by LDM (13 instructions for 16 MACs). LDM fills
 * its registers in ascending number order, hence the four pinned registers of quad_mac. */
#define QUAD_GROUP                                                                                               \
    "ldr     %[v], [%[wp]], #4\n\t"                                                                              \
    "ldmia   %[xp]!, {%[x0], %[x1], %[x2], %[x3]}\n\t"                                                          \
    "sxtb16  %[lo], %[v]\n\t"                                                                                    \
    "sxtb16  %[v], %[v], ror #8\n\t"                                                                             \
    "smlad   %[a0], %[x0], %[lo], %[a0]\n\t"                                                                     \
    "smlad   %[a0], %[x1], %[v], %[a0]\n\t"                                                                      \
    "smlad   %[a1], %[x2], %[lo], %[a1]\n\t"                                                                     \
    "smlad   %[a1], %[x3], %[v], %[a1]\n\t"                                                                      \
    "ldmia   %[xp]!, {%[x0], %[x1], %[x2], %[x3]}\n\t"                                                          \
    "smlad   %[a2], %[x0], %[lo], %[a2]\n\t"                                                                     \
    "smlad   %[a2], %[x1], %[v], %[a2]\n\t"                                                                      \
    "smlad   %[a3], %[x2], %[lo], %[a3]\n\t"                                                                     \
    "smlad   %[a3], %[x3], %[v], %[a3]\n\t"
#define QUAD_OUTPUTS                                                                                             \
    : [xp] "+r"(xp), [wp] "+r"(wp), [a0] "+r"(s.a0), [a1] "+r"(s.a1), [a2] "+r"(s.a2), [a3] "+r"(s.a3),           \
      [x0] "=&r"(x0), [x1] "=&r"(x1), [x2] "=&r"(x2), [x3] "=&r"(x3), [v] "=&r"(v), [lo] "=&r"(lo)

/* s += one weight row w (n int8, n % 4 == 0, n > 0) against four expanded pixels buf: an odd group first,
 * then two groups per loop pass (28 instructions for 32 MACs). */
static inline __attribute__((always_inline)) quad_acc quad_mac(const uint32_t *buf, const int8_t *w, int32_t n,
                                                               quad_acc s)
{
    register uint32_t x0 __asm__("r2"), x1 __asm__("r3"), x2 __asm__("r4"), x3 __asm__("r5");
    const uint32_t *xp = buf;
    const int8_t *wp = w, *end = w + n;
    uint32_t v, lo;
    if (n & 4) __asm__ volatile(QUAD_GROUP QUAD_OUTPUTS : : "memory");
    if (n & ~7)
        __asm__ volatile("1:\n\t" QUAD_GROUP QUAD_GROUP "cmp     %[wp], %[end]\n\t"
                         "bne     1b\n\t" QUAD_OUTPUTS : [end] "r"(end) : "cc", "memory");
    return s;
}

/* requant_finite of the four sums s (plus the float bias BIAS_ADD adds, if any) stored at y[0], y[out_c],
 * y[2 * out_c], y[3 * out_c]: the same float32 steps, with the sums moved to and from the FPU two at a time. */
#define QUAD_STORE(BIAS_ADD)                                                                                     \
    "vmov    s8, s9, %[a0], %[a1]\n\t"                                                                           \
    "vmov    s10, s11, %[a2], %[a3]\n\t"                                                                         \
    "vcvt.f32.s32 s8, s8\n\t"                                                                                    \
    "vcvt.f32.s32 s9, s9\n\t"                                                                                    \
    "vcvt.f32.s32 s10, s10\n\t"                                                                                  \
    "vcvt.f32.s32 s11, s11\n\t" BIAS_ADD                                                                         \
    "vmul.f32 s8, s8, %[e]\n\t"                                                                                  \
    "vmul.f32 s9, s9, %[e]\n\t"                                                                                  \
    "vmul.f32 s10, s10, %[e]\n\t"                                                                                \
    "vmul.f32 s11, s11, %[e]\n\t"                                                                                \
    "vcvtr.s32.f32 s8, s8\n\t"                                                                                   \
    "vcvtr.s32.f32 s9, s9\n\t"                                                                                   \
    "vcvtr.s32.f32 s10, s10\n\t"                                                                                 \
    "vcvtr.s32.f32 s11, s11\n\t"                                                                                 \
    "vmov    %[a0], %[a1], s8, s9\n\t"                                                                           \
    "vmov    %[a2], %[a3], s10, s11\n\t"                                                                         \
    "qadd    %[a0], %[a0], %[z]\n\t"                                                                             \
    "qadd    %[a1], %[a1], %[z]\n\t"                                                                             \
    "qadd    %[a2], %[a2], %[z]\n\t"                                                                             \
    "qadd    %[a3], %[a3], %[z]\n\t"                                                                             \
    "ssat    %[a0], #8, %[a0]\n\t"                                                                               \
    "ssat    %[a1], #8, %[a1]\n\t"                                                                               \
    "ssat    %[a2], #8, %[a2]\n\t"                                                                               \
    "ssat    %[a3], #8, %[a3]\n\t"                                                                               \
    "strb    %[a0], [%[y]]\n\t"                                                                                  \
    "strb    %[a1], [%[y], %[oc]]\n\t"                                                                           \
    "add     %[a0], %[y], %[oc], lsl #1\n\t"                                                                     \
    "strb    %[a2], [%[a0]]\n\t"                                                                                 \
    "strb    %[a3], [%[a0], %[oc]]\n\t"
#define QUAD_BIAS_ADD                                                                                            \
    "vadd.f32 s8, s8, %[fb]\n\t"                                                                                 \
    "vadd.f32 s9, s9, %[fb]\n\t"                                                                                 \
    "vadd.f32 s10, s10, %[fb]\n\t"                                                                               \
    "vadd.f32 s11, s11, %[fb]\n\t"

/* store_out without the mask and the NaN test, for a finite eff: then t = (acc + bias) * eff is finite or
 * +-inf, never NaN, and VCVTR saturates inf exactly as store_out does. */
static inline int8_t requant_finite(int32_t acc, float bias_f, float eff, int32_t y_zero)
{
    float t = (float)acc + bias_f;
    t = t * eff;
    return (int8_t)__ssat(__qadd(rint_s32(t), y_zero), 8);
}

/* store_out of four sums of output channel o (bias b_f, multiplier e finite: no NaN, so no NaN test) at
 * y[i0], y[i0 + step], y[i0 + 2 * step], y[i0 + 3 * step], written out (gcc keeps a loop of 4 with the sums
 * spilled otherwise). mask may not be NULL. */
static inline __attribute__((always_inline)) void store4_masked(int8_t *y, uint8_t *mask, int32_t i0, int32_t step,
                                                                const int32_t *acc, float b_f, float e,
                                                                int32_t y_zero)
{
    const int32_t v0 = __qadd(rint_s32(((float)acc[0] + b_f) * e), y_zero), q0 = __ssat(v0, 8);
    const int32_t v1 = __qadd(rint_s32(((float)acc[1] + b_f) * e), y_zero), q1 = __ssat(v1, 8);
    const int32_t v2 = __qadd(rint_s32(((float)acc[2] + b_f) * e), y_zero), q2 = __ssat(v2, 8);
    const int32_t v3 = __qadd(rint_s32(((float)acc[3] + b_f) * e), y_zero), q3 = __ssat(v3, 8);
    const int32_t i1 = i0 + step, i2 = i1 + step, i3 = i2 + step;
    y[i0] = (int8_t)q0, y[i1] = (int8_t)q1, y[i2] = (int8_t)q2, y[i3] = (int8_t)q3;
    mask[i0 >> 3] = (uint8_t)((mask[i0 >> 3] & ~(1u << (i0 & 7))) | ((uint32_t)(q0 == v0) << (i0 & 7)));
    mask[i1 >> 3] = (uint8_t)((mask[i1 >> 3] & ~(1u << (i1 & 7))) | ((uint32_t)(q1 == v1) << (i1 & 7)));
    mask[i2 >> 3] = (uint8_t)((mask[i2 >> 3] & ~(1u << (i2 & 7))) | ((uint32_t)(q2 == v2) << (i2 & 7)));
    mask[i3 >> 3] = (uint8_t)((mask[i3 >> 3] & ~(1u << (i3 & 7))) | ((uint32_t)(q3 == v3) << (i3 & 7)));
}

/* The outputs of one output channel at four pixels, y[i0 + j * out_c] for j < 4, from its sums s (started
 * from the bias when fold; fold implies finite). finite: every multiplier of the call is finite. Without a
 * mask the whole requantisation is one asm block; with one, store4_masked; otherwise store_out. */
static inline __attribute__((always_inline)) void quad_finish(quad_acc s, int32_t bias, float e, int32_t y_zero,
                                                              int8_t *y, uint8_t *mask, int32_t i0, int32_t out_c,
                                                              int finite, int fold)
{
    if (finite && !mask) {
        int8_t *yo = y + i0;
        if (fold)
            __asm__ volatile(QUAD_STORE("")
                             : [a0] "+r"(s.a0), [a1] "+r"(s.a1), [a2] "+r"(s.a2), [a3] "+r"(s.a3)
                             : [e] "t"(e), [z] "r"(y_zero), [y] "r"(yo), [oc] "r"(out_c)
                             : "s8", "s9", "s10", "s11", "memory");
        else
            __asm__ volatile(QUAD_STORE(QUAD_BIAS_ADD)
                             : [a0] "+r"(s.a0), [a1] "+r"(s.a1), [a2] "+r"(s.a2), [a3] "+r"(s.a3)
                             : [e] "t"(e), [fb] "t"((float)bias), [z] "r"(y_zero), [y] "r"(yo), [oc] "r"(out_c)
                             : "s8", "s9", "s10", "s11", "memory");
        return;
    }
    const int32_t acc[4] = {s.a0, s.a1, s.a2, s.a3};
    if (finite) {
        store4_masked(y, mask, i0, out_c, acc, fold ? 0.0f : (float)bias, e, y_zero);
        return;
    }
    for (int32_t j = 0; j < 4; j++) store_out(y, mask, i0 + j * out_c, acc[j], fold ? 0 : bias, e, y_zero);
}

/* quad_rows: every output channel of four pixels in one asm loop, for the common case (multipliers finite,
 * biases folded, no mask, weight rows contiguous: row o + 1 starts where row o ends). Per output channel: its
 * bias starts the four sums, quad_mac's groups (wp walks on into the next row), then QUAD_STORE. The loop
 * needs all 14 general registers, so its state waits in memory (one LDM, one STM per channel). */
typedef struct {
    const int32_t *bias; /* advanced by one per output channel, as are eff and y */
    const float *eff;
    int8_t *y;           /* output of the current channel at the first of the four pixels */
    int32_t out_c;       /* distance between the four pixels' outputs */
    int32_t y_zero;
    const int8_t *y_end; /* y after the last channel */
    const uint32_t *buf; /* the expanded pixels (expand_quad) */
    int32_t n;           /* weight row length, n % 4 == 0, n > 0 */
    /* quad_rows_masked only: */
    int32_t o;           /* 32: channels done */
    int32_t mask_step;   /* 36: out_c / 8, bytes between the pixels' mask bytes */
    uint8_t *mask0;      /* 40: mask byte of pixel 0, channel 0 */
    uint32_t bits[4];    /* 44: the pixels' clamp bits, newest in bit 31 */
    int32_t skip;        /* 60: quad_rows_chunk only: bytes from a row's chunk end to the next row's chunk */
    const int32_t *bias_int; /* 64: quad_rows_chunk stages 3, 4: the biases, added in float */
} quad_rows_ctx;

/* quad_mac's group with fixed registers: r1 weights, r12 pixels, r2-r5 pixel lanes, r6-r7 weight lanes,
 * r8-r11 the four sums. */
#define QUAD_GROUP_FIXED                                                                                         \
    "ldr     r6, [r1], #4\n\t"                                                                                   \
    "ldmia   r12!, {r2, r3, r4, r5}\n\t"                                                                         \
    "sxtb16  r7, r6\n\t"                                                                                         \
    "sxtb16  r6, r6, ror #8\n\t"                                                                                 \
    "smlad   r8, r2, r7, r8\n\t"                                                                                 \
    "smlad   r8, r3, r6, r8\n\t"                                                                                 \
    "smlad   r9, r4, r7, r9\n\t"                                                                                 \
    "smlad   r9, r5, r6, r9\n\t"                                                                                 \
    "ldmia   r12!, {r2, r3, r4, r5}\n\t"                                                                         \
    "smlad   r10, r2, r7, r10\n\t"                                                                               \
    "smlad   r10, r3, r6, r10\n\t"                                                                               \
    "smlad   r11, r4, r7, r11\n\t"                                                                               \
    "smlad   r11, r5, r6, r11\n\t"

/* The per-channel loop: the four sums start from the channel's bias (QUAD_INIT_BIAS) or from its partial sums
 * (QUAD_INIT_SUMS: ctx->bias then points to quad_acc sums), then quad_mac's groups, four per loop pass: the
 * (n / 4) % 4 groups over whole passes are done first by entering the pass at its last ones (TBB on that count;
 * 2 instructions per channel against the loop's 2 per pass saved on every second pass of two groups). */
#define QUAD_INIT_BIAS                                                                                           \
    "ldr     r8, [r2], #4\n\t"                                                                                   \
    "mov     r9, r8\n\t"                                                                                         \
    "mov     r10, r8\n\t"                                                                                        \
    "mov     r11, r8\n\t"
#define QUAD_INIT_SUMS "ldmia   r2!, {r8, r9, r10, r11}\n\t"
#define QUAD_ROWS_MAC(INIT)                                                                                      \
    "0:\n\t"                                                                                                     \
    "ldmia   r0, {r2, r3, r4, r5, r6, r7, r12, lr}\n\t" /* bias, eff, y, out_c, y_zero, y_end, buf, n */           \
    INIT                                                                                                         \
    "vldmia  r3!, {s12}\n\t"                                                                                     \
    "stmia   r0, {r2, r3}\n\t" QUAD_GROUPS("1", "q")

/* The groups of one weight row (r1, lr bytes, lr % 16 == 4 * count, lr > 0), four per loop pass, the count
 * over whole passes first (see QUAD_ROWS_MAC). L: a local label digit, P: a label letter, unique in the asm. */
#define QUAD_GROUPS(L, P)                                                                                        \
    "ubfx    r2, lr, #2, #2\n\t"                                                                                 \
    "add     lr, r1, lr\n\t"                                                                                     \
    "tbb     [pc, r2]\n"                                                                                         \
    ".L" P "t%=:\n\t"                                                                                            \
    ".byte   (" L "f - .L" P "t%=) / 2, (.L" P "3%= - .L" P "t%=) / 2, (.L" P "2%= - .L" P "t%=) / 2, (.L" P      \
    "1%= - .L" P "t%=) / 2\n" L ":\n\t" QUAD_GROUP_FIXED                                                          \
    ".L" P "1%=:\n\t" QUAD_GROUP_FIXED                                                                           \
    ".L" P "2%=:\n\t" QUAD_GROUP_FIXED                                                                           \
    ".L" P "3%=:\n\t" QUAD_GROUP_FIXED                                                                           \
    "cmp     r1, lr\n\t"                                                                                         \
    "bne     " L "b\n\t"

/* After QUAD_ROWS_MAC: the four sums requantised up to the clamp (QUAD_STORE's steps; y_zero added). */
#define QUAD_ROWS_REQ QUAD_ROWS_REQ_BIAS("", "")
/* BIAS_LOAD, BIAS_ADD: the channel's int bias (ctx->bias_int, advanced) as float in s13, added to the sums (the
 * unfolded requantisation: sums from 0, any bias, any in_c). */
#define QUAD_BIAS_LOAD                                                                                           \
    "ldr     r2, [r0, #64]\n\t"                                                                                  \
    "ldr     r3, [r2], #4\n\t"                                                                                   \
    "str     r2, [r0, #64]\n\t"                                                                                  \
    "vmov    s13, r3\n\t"                                                                                        \
    "vcvt.f32.s32 s13, s13\n\t"
#define QUAD_BIAS_ADD_S13                                                                                        \
    "vadd.f32 s8, s8, s13\n\t"                                                                                   \
    "vadd.f32 s9, s9, s13\n\t"                                                                                   \
    "vadd.f32 s10, s10, s13\n\t"                                                                                 \
    "vadd.f32 s11, s11, s13\n\t"
#define QUAD_ROWS_REQ_BIAS(BIAS_LOAD, BIAS_ADD)                                                                  \
    BIAS_LOAD                                                                                                    \
    "add     r2, r0, #8\n\t"                                                                                     \
    "ldmia   r2, {r4, r5, r6, r7}\n\t" /* y, out_c, y_zero, y_end */                                             \
    "vmov    s8, s9, r8, r9\n\t"                                                                                 \
    "vmov    s10, s11, r10, r11\n\t"                                                                             \
    "vcvt.f32.s32 s8, s8\n\t"                                                                                    \
    "vcvt.f32.s32 s9, s9\n\t"                                                                                    \
    "vcvt.f32.s32 s10, s10\n\t"                                                                                  \
    "vcvt.f32.s32 s11, s11\n\t" BIAS_ADD                                                                         \
    "vmul.f32 s8, s8, s12\n\t"                                                                                   \
    "vmul.f32 s9, s9, s12\n\t"                                                                                   \
    "vmul.f32 s10, s10, s12\n\t"                                                                                 \
    "vmul.f32 s11, s11, s12\n\t"                                                                                 \
    "vcvtr.s32.f32 s8, s8\n\t"                                                                                   \
    "vcvtr.s32.f32 s9, s9\n\t"                                                                                   \
    "vcvtr.s32.f32 s10, s10\n\t"                                                                                 \
    "vcvtr.s32.f32 s11, s11\n\t"                                                                                 \
    "vmov    r8, r9, s8, s9\n\t"                                                                                 \
    "vmov    r10, r11, s10, s11\n\t"                                                                             \
    "qadd    r8, r8, r6\n\t"                                                                                     \
    "qadd    r9, r9, r6\n\t"                                                                                     \
    "qadd    r10, r10, r6\n\t"                                                                                   \
    "qadd    r11, r11, r6\n\t"

/* Weight rows of a chunk of in_c (pointwise_quads_chunked): on to the next row's chunk (ctx->skip bytes). */
#define QUAD_SKIP                                                                                                \
    "ldr     r2, [r0, #60]\n\t"                                                                                  \
    "add     r1, r1, r2\n\t"

/* After QUAD_ROWS_REQ, no mask: clamp, store, next channel (SKIP: QUAD_SKIP or ""). */
#define QUAD_ROWS_TAIL(SKIP)                                                                                     \
    "ssat    r8, #8, r8\n\t"                                                                                     \
    "ssat    r9, #8, r9\n\t"                                                                                     \
    "ssat    r10, #8, r10\n\t"                                                                                   \
    "ssat    r11, #8, r11\n\t"                                                                                   \
    "strb    r8, [r4]\n\t"                                                                                       \
    "strb    r9, [r4, r5]\n\t"                                                                                   \
    "add     r2, r4, r5, lsl #1\n\t"                                                                             \
    "strb    r10, [r2]\n\t"                                                                                      \
    "strb    r11, [r2, r5]\n\t" SKIP                                                                             \
    "add     r4, r4, #1\n\t"                                                                                     \
    "str     r4, [r0, #8]\n\t"                                                                                   \
    "cmp     r4, r7\n\t"                                                                                         \
    "bne     0b\n\t"

/* After QUAD_ROWS_MAC of a chunk that is not the last: the partial sums back to their quad_acc. */
#define QUAD_ROWS_TAIL_SUMS                                                                                      \
    "ldr     r2, [r0]\n\t"                                                                                       \
    "stmdb   r2, {r8, r9, r10, r11}\n\t" QUAD_SKIP                                                                \
    "ldr     r4, [r0, #8]\n\t"                                                                                   \
    "add     r4, r4, #1\n\t"                                                                                     \
    "str     r4, [r0, #8]\n\t"                                                                                   \
    "ldr     r7, [r0, #20]\n\t"                                                                                  \
    "cmp     r4, r7\n\t"                                                                                         \
    "bne     0b\n\t"

/* The clamp bit of pixel J's sum (v in RV, before SSAT) shifted into its collector RC from the top: C = v + 128
 * lies in 0..255 (RSBS: 255 - t borrows otherwise), then RRX. */
#define QUAD_CLAMP_BIT(RV, RC)                                                                                   \
    "add     r7, " RV ", #128\n\t"                                                                               \
    "rsbs    r7, r7, #255\n\t"                                                                                   \
    "rrx     " RC ", " RC "\n\t"                                                                                 \
    "ssat    " RV ", #8, " RV "\n\t"

/* After QUAD_ROWS_REQ, with a mask (out_c % 8 == 0, the run starting at a channel o % 8 == 0): the four pixels' clamp
 * bits collect in four words (ctx, from offset 44), the newest in bit 31; after every eighth channel their top
 * bytes are the pixels' mask bytes of those channels. */
#define QUAD_ROWS_TAIL_MASKED(SKIP)                                                                              \
    "add     r2, r0, #44\n\t"                                                                                    \
    "ldmia   r2, {r2, r3, r12, lr}\n\t" QUAD_CLAMP_BIT("r8", "r2") QUAD_CLAMP_BIT("r9", "r3")                      \
        QUAD_CLAMP_BIT("r10", "r12") QUAD_CLAMP_BIT("r11", "lr")                                                 \
    "strb    r8, [r4]\n\t"                                                                                       \
    "strb    r9, [r4, r5]\n\t"                                                                                   \
    "add     r6, r4, r5, lsl #1\n\t"                                                                             \
    "strb    r10, [r6]\n\t"                                                                                      \
    "strb    r11, [r6, r5]\n\t"                                                                                  \
    "add     r7, r0, #44\n\t"                                                                                    \
    "stmia   r7, {r2, r3, r12, lr}\n\t"                                                                          \
    "ldr     r7, [r0, #32]\n\t"                                                                                  \
    "add     r7, r7, #1\n\t"                                                                                     \
    "str     r7, [r0, #32]\n\t"                                                                                  \
    "tst     r7, #7\n\t"                                                                                         \
    "bne     3f\n\t"                                                                                             \
    "ldrd    r5, r6, [r0, #36]\n\t" /* out_c / 8, the mask byte of pixel 0 channel 0 */                          \
    "add     r6, r6, r7, lsr #3\n\t"                                                                             \
    "sub     r6, r6, #1\n\t"                                                                                     \
    "lsr     r2, r2, #24\n\t"                                                                                    \
    "strb    r2, [r6]\n\t"                                                                                       \
    "add     r6, r6, r5\n\t"                                                                                     \
    "lsr     r3, r3, #24\n\t"                                                                                    \
    "strb    r3, [r6]\n\t"                                                                                       \
    "add     r6, r6, r5\n\t"                                                                                     \
    "lsr     r12, r12, #24\n\t"                                                                                  \
    "strb    r12, [r6]\n\t"                                                                                      \
    "add     r6, r6, r5\n\t"                                                                                     \
    "lsr     lr, lr, #24\n\t"                                                                                    \
    "strb    lr, [r6]\n\t"                                                                                       \
    "3:\n\t" SKIP                                                                                                \
    "add     r4, r4, #1\n\t"                                                                                     \
    "str     r4, [r0, #8]\n\t"                                                                                   \
    "ldr     r7, [r0, #20]\n\t"                                                                                  \
    "cmp     r4, r7\n\t"                                                                                         \
    "bne     0b\n\t"

/* Every output channel of the four pixels whose outputs start at ctx->y (ctx->bias, eff, y are advanced). */
#define QUAD_ROWS_CALL(TEXT)                                                                                     \
    __asm__ volatile(TEXT                                                                                        \
                     : "+r"(wp)                                                                                  \
                     : "r"(c)                                                                                    \
                     : "r2", "r3", "r4", "r5", "r6", "r7", "r8", "r9", "r10", "r11", "r12", "lr", "s8", "s9", "s10", \
                       "s11", "s12", "s13", "cc", "memory")
static inline __attribute__((always_inline)) void quad_rows(quad_rows_ctx *ctx, const int8_t *w)
{
    register quad_rows_ctx *c __asm__("r0") = ctx;
    register const int8_t *wp __asm__("r1") = w;
    QUAD_ROWS_CALL(QUAD_ROWS_MAC(QUAD_INIT_BIAS) QUAD_ROWS_REQ QUAD_ROWS_TAIL(""));
}

/* quad_rows with the clamp mask (ctx->o = 0, collectors 0; every channel of the pixels, out_c % 8 == 0), every
 * bias taken as folded: the caller redoes the channels whose bias is not (quad_unfolded). Not inlined: one
 * call per four pixels. */
static __attribute__((noinline)) void quad_rows_masked(quad_rows_ctx *ctx, const int8_t *w)
{
    register quad_rows_ctx *c __asm__("r0") = ctx;
    register const int8_t *wp __asm__("r1") = w;
    QUAD_ROWS_CALL(QUAD_ROWS_MAC(QUAD_INIT_BIAS) QUAD_ROWS_REQ QUAD_ROWS_TAIL_MASKED(""));
}

/* One chunk of in_c (ctx->n channels, rows ctx->skip bytes apart beyond it) for a block of output channels whose
 * partial sums ctx->bias points to: stored back (stage 0), or requantised without (1) or with (2) a mask, the
 * biases folded into the sums, or without (3) or with (4) a mask, the biases ctx->bias_int added in float. */
static __attribute__((noinline)) void quad_rows_chunk(quad_rows_ctx *ctx, const int8_t *w, int stage)
{
    register quad_rows_ctx *c __asm__("r0") = ctx;
    register const int8_t *wp __asm__("r1") = w;
    if (stage == 0) QUAD_ROWS_CALL(QUAD_ROWS_MAC(QUAD_INIT_SUMS) QUAD_ROWS_TAIL_SUMS);
    else if (stage == 1) QUAD_ROWS_CALL(QUAD_ROWS_MAC(QUAD_INIT_SUMS) QUAD_ROWS_REQ QUAD_ROWS_TAIL(QUAD_SKIP));
    else if (stage == 2) QUAD_ROWS_CALL(QUAD_ROWS_MAC(QUAD_INIT_SUMS) QUAD_ROWS_REQ QUAD_ROWS_TAIL_MASKED(QUAD_SKIP));
    else if (stage == 3)
        QUAD_ROWS_CALL(QUAD_ROWS_MAC(QUAD_INIT_SUMS) QUAD_ROWS_REQ_BIAS(QUAD_BIAS_LOAD, QUAD_BIAS_ADD_S13)
                           QUAD_ROWS_TAIL(QUAD_SKIP));
    else
        QUAD_ROWS_CALL(QUAD_ROWS_MAC(QUAD_INIT_SUMS) QUAD_ROWS_REQ_BIAS(QUAD_BIAS_LOAD, QUAD_BIAS_ADD_S13)
                           QUAD_ROWS_TAIL_MASKED(QUAD_SKIP));
}

/* Up to this many output channels per call may have a bias too large to fold (dead channels) and still take
 * quad_rows for the others. */
#define MT_DEAD_MAX 16

/* The output channels whose bias cannot be folded (|bias| > 2^24), into dead; -1 when more than MT_DEAD_MAX. */
static int32_t unfoldable_channels(const int32_t *bias, int32_t out_c, int16_t *dead)
{
    int32_t n = 0;
    for (int32_t o = 0; o < out_c; o++) {
        if (fold_one(bias[o])) continue;
        if (n == MT_DEAD_MAX) return -1;
        dead[n++] = (int16_t)o;
    }
    return n;
}

/* One output channel of four expanded pixels (outputs y[i0 + j * out_c]), its bias added in float, multiplier
 * finite: a channel whose bias cannot be folded, apart from quad_rows (not inlined: the register pressure of
 * quad_mac where the callers keep their loop state). */
static __attribute__((noinline)) void quad_unfolded(const uint32_t *buf, const int8_t *w, int32_t n, int32_t bias,
                                                    float e, int32_t y_zero, int8_t *y, uint8_t *mask, int32_t i0,
                                                    int32_t out_c)
{
    quad_finish(quad_mac(buf, w, n, (quad_acc){0, 0, 0, 0}), bias, e, y_zero, y, mask, i0, out_c, 1, 0);
}

/* Every output channel of four expanded pixels without a mask (finite multipliers, n within the folding bound),
 * outputs from y (pixel 0, channel 0) on, weight rows n bytes apart: the runs of foldable channels by quad_rows,
 * the n_dead channels listed in dead one at a time with the bias added in float. */
static inline __attribute__((always_inline)) void quad_all_rows(const uint32_t *buf, const int8_t *w, int32_t n,
                                                                const int32_t *bias, const float *eff, int32_t out_c,
                                                                int32_t y_zero, int8_t *y, const int16_t *dead,
                                                                int32_t n_dead)
{
    quad_rows_ctx ctx = {bias, eff, y, out_c, y_zero, y + out_c, buf, n, 0, 0, NULL, {0, 0, 0, 0}, 0, NULL};
    if (n_dead == 0) {
        quad_rows(&ctx, w);
        return;
    }
    int32_t o = 0;
    for (int32_t k = 0; k <= n_dead; k++) {
        const int32_t d = k < n_dead ? dead[k] : out_c;
        if (d > o) {
            ctx.bias = bias + o, ctx.eff = eff + o, ctx.y = y + o, ctx.y_end = y + d;
            quad_rows(&ctx, w + o * n);
        }
        if (d < out_c) quad_unfolded(buf, w + d * n, n, bias[d], eff[d], y_zero, y, NULL, d, out_c);
        o = d + 1;
    }
}

static inline int is_finite(float f) { return f - f == 0.0f; }

/* All output channels of four output pixels (pix .. pix + 3) from their expanded inputs buf (n4 lanes each,
 * n4 % 4 == 0): row o of the weight starts at w + o * stride (stride <= n4). Lanes past `stride` must be
 * zero: they meet the next row's first bytes, or for the last row its padded copy last_row (NULL when
 * stride == n4), so nothing outside the weight array is read. finite: see quad_finish; fold: finite and n4
 * within the folding bound (each channel then folds its bias when |bias| <= 2^24). */
static inline __attribute__((always_inline)) void
quad_outputs(const uint32_t *buf, const int8_t *w, int32_t stride, int32_t n4, const int8_t *last_row,
             const int32_t *bias, const float *eff, int32_t out_c, int32_t y_zero, int32_t pix, int8_t *y,
             uint8_t *mask, int finite, int fold)
{
    const int8_t *wo = w;
    for (int32_t o = 0; o < out_c; o++, wo += stride) {
        const int f = fold && fold_one(bias[o]);
        const int32_t b = f ? bias[o] : 0;
        const quad_acc s = quad_mac(buf, (last_row && o == out_c - 1) ? last_row : wo, n4, (quad_acc){b, b, b, b});
        quad_finish(s, bias[o], eff[o], y_zero, y, mask, pix * out_c + o, out_c, finite, f);
    }
}

/* quad_outputs as a call of its own: inlined into conv_quads, gcc finds no registers for quad_mac (Cortex-M4). */
static __attribute__((noinline)) void quad_outputs_apart(const uint32_t *buf, const int8_t *w, int32_t stride, int32_t n4,
                                                         const int8_t *last_row, const int32_t *bias, const float *eff,
                                                         int32_t out_c, int32_t y_zero, int32_t pix, int8_t *y,
                                                         uint8_t *mask, int finite, int fold)
{
    quad_outputs(buf, w, stride, n4, last_row, bias, eff, out_c, y_zero, pix, y, mask, finite, fold);
}

static int all_finite(const float *v, int32_t n)
{
    int ok = 1;
    for (int32_t i = 0; i < n; i++) ok &= is_finite(v[i]);
    return ok;
}

/* Inputs of at most MT_QUAD_MAX_K lanes per output pixel (pointwise in_c, dense kh * kw * in_c) go four
 * pixels per pass through a stack buffer of 8 * MT_QUAD_MAX_K bytes. */
#ifndef MT_QUAD_MAX_K
#define MT_QUAD_MAX_K 96
#endif

/* Pointwise conv with in_c % 4 == 0, in_c <= MT_QUAD_MAX_K, four pixels per pass. Returns the number of
 * pixels done; the caller does the n_pix % 4 left over. */
static __attribute__((noinline)) int32_t pointwise_quads(const mt_conv_params *p, const int8_t *x, const int8_t *w,
                                                         const int32_t *bias, const float *eff, int8_t *y,
                                                         uint8_t *mask)
{
    uint32_t buf[2 * MT_QUAD_MAX_K];
    const int32_t in_c = p->in_c, neg_zero = pack_neg_zero(p->x_zero), n_pix = p->out_h * p->out_w;
    int16_t dead[MT_DEAD_MAX];
    const int finite = all_finite(eff, p->out_c), fold = finite && fold_k(in_c);
    const int32_t out_c = p->out_c, n_dead = fold ? unfoldable_channels(bias, out_c, dead) : -1;
    const int masked_rows = mask && n_dead >= 0 && (out_c & 7) == 0;
    int32_t pix = 0;
    for (; pix + 4 <= n_pix; pix += 4) {
        expand_quad(pixel_in(p, x, pix), pixel_in(p, x, pix + 1), pixel_in(p, x, pix + 2), pixel_in(p, x, pix + 3),
                    neg_zero, in_c, buf);
        if (!mask && n_dead >= 0) {
            quad_all_rows(buf, w, in_c, bias, eff, out_c, p->y_zero, y + pix * out_c, dead, n_dead);
            continue;
        }
        if (masked_rows) {
            quad_rows_ctx ctx = {bias, eff, y + pix * out_c, out_c, p->y_zero, y + (pix + 1) * out_c, buf, in_c,
                                 0, out_c >> 3, mask + ((pix * out_c) >> 3), {0, 0, 0, 0}, 0, NULL};
            quad_rows_masked(&ctx, w);
            for (int32_t k = 0; k < n_dead; k++) /* their sums were started from the unfoldable bias: again */
                quad_unfolded(buf, w + dead[k] * in_c, in_c, bias[dead[k]], eff[dead[k]], p->y_zero, y, mask,
                              pix * out_c + dead[k], out_c);
            continue;
        }
        quad_outputs_apart(buf, w, in_c, in_c, NULL, bias, eff, out_c, p->y_zero, pix, y, mask, finite, fold);
    }
    return pix;
}

/* Pointwise conv with in_c % 4 == 0 and in_c > MT_QUAD_MAX_K: four pixels per pass as pointwise_quads,
 * their inputs expanded MT_QUAD_MAX_K channels at a time, for blocks of MT_QUAD_O_BLOCK output channels
 * whose partial sums wait in a stack array. Returns the number of pixels done. */
#ifndef MT_QUAD_O_BLOCK
#define MT_QUAD_O_BLOCK 24
#endif
static __attribute__((noinline)) int32_t pointwise_quads_chunked(const mt_conv_params *p, const int8_t *x,
                                                                 const int8_t *w, const int32_t *bias,
                                                                 const float *eff, int8_t *y, uint8_t *mask)
{
    uint32_t buf[2 * MT_QUAD_MAX_K];
    quad_acc acc[MT_QUAD_O_BLOCK];
    const int32_t in_c = p->in_c, out_c = p->out_c, y_zero = p->y_zero, neg_zero = pack_neg_zero(p->x_zero);
    const int32_t n_pix = p->out_h * p->out_w;
    const int finite = all_finite(eff, out_c), fold = finite && fold_k(in_c);
    /* finite multipliers (and whole mask bytes per block): the chunks run in quad_rows_chunk, the sums from 0
     * and the biases added in float (any bias, any in_c; a few instructions per channel against its in_c MACs) */
    const int rows = finite && (!mask || (out_c & 7) == 0) && (MT_QUAD_O_BLOCK & 7) == 0;
    int32_t pix = 0;
    for (; pix + 4 <= n_pix; pix += 4) {
        const int8_t *x0 = pixel_in(p, x, pix), *x1 = pixel_in(p, x, pix + 1);
        const int8_t *x2 = pixel_in(p, x, pix + 2), *x3 = pixel_in(p, x, pix + 3);
        for (int32_t o0 = 0; o0 < out_c; o0 += MT_QUAD_O_BLOCK) {
            const int32_t on = out_c - o0 < MT_QUAD_O_BLOCK ? out_c - o0 : MT_QUAD_O_BLOCK;
            for (int32_t o = 0; o < on; o++) {
                const int32_t b = !rows && fold && fold_one(bias[o0 + o]) ? bias[o0 + o] : 0;
                acc[o] = (quad_acc){b, b, b, b};
            }
            for (int32_t k0 = 0; k0 < in_c; k0 += MT_QUAD_MAX_K) {
                const int32_t kn = in_c - k0 < MT_QUAD_MAX_K ? in_c - k0 : MT_QUAD_MAX_K;
                expand_quad(x0 + k0, x1 + k0, x2 + k0, x3 + k0, neg_zero, kn, buf);
                const int8_t *wo = w + o0 * in_c + k0;
                if (rows) {
                    int8_t *yo = y + pix * out_c + o0;
                    quad_rows_ctx ctx = {(const int32_t *)acc, eff + o0, yo, out_c, y_zero, yo + on, buf, kn, o0,
                                         out_c >> 3, mask ? mask + ((pix * out_c) >> 3) : NULL, {0, 0, 0, 0},
                                         in_c - kn, bias + o0};
                    quad_rows_chunk(&ctx, wo, k0 + kn < in_c ? 0 : mask ? 4 : 3);
                    continue;
                }
                for (int32_t o = 0; o < on; o++, wo += in_c) acc[o] = quad_mac(buf, wo, kn, acc[o]);
            }
            if (rows) continue;
            for (int32_t o = 0; o < on; o++)
                quad_finish(acc[o], bias[o0 + o], eff[o0 + o], y_zero, y, mask, pix * out_c + o0 + o, out_c, finite,
                            fold && fold_one(bias[o0 + o]));
        }
    }
    return pix;
}

/* The four sums of a channel quad in s8-s11 to rint((float)sum * eff) in place (eff in s12-s15); BIAS_ADD:
 * "" or QUAD_FB_ADD, the float biases s0-s3 added after the conversion (unfolded biases). */
#define QUAD_FB_ADD                                                                                                  \
    "vadd.f32 s8, s8, s0\n\t"                                                                                        \
    "vadd.f32 s9, s9, s1\n\t"                                                                                        \
    "vadd.f32 s10, s10, s2\n\t"                                                                                      \
    "vadd.f32 s11, s11, s3\n\t"
#define QUAD_FLOAT_STEPS_B(BIAS_ADD)                                                                                 \
    "vcvt.f32.s32 s8, s8\n\t"                                                                                        \
    "vcvt.f32.s32 s9, s9\n\t"                                                                                        \
    "vcvt.f32.s32 s10, s10\n\t"                                                                                      \
    "vcvt.f32.s32 s11, s11\n\t" BIAS_ADD                                                                             \
    "vmul.f32 s8, s8, s12\n\t"                                                                                       \
    "vmul.f32 s9, s9, s13\n\t"                                                                                       \
    "vmul.f32 s10, s10, s14\n\t"                                                                                     \
    "vmul.f32 s11, s11, s15\n\t"                                                                                     \
    "vcvtr.s32.f32 s8, s8\n\t"                                                                                       \
    "vcvtr.s32.f32 s9, s9\n\t"                                                                                       \
    "vcvtr.s32.f32 s10, s10\n\t"                                                                                     \
    "vcvtr.s32.f32 s11, s11\n\t"
#define QUAD_FLOAT_STEPS QUAD_FLOAT_STEPS_B("")
/* The quad's channels 0-3 (rint values in A-D, each within int16) stored as four contiguous int8 at DEST: two to a register (PKHBT), Z = y_zero + 128 in both lanes added by QADD16, the int8 clamp by
 * USAT16 on [0, 255] (the result of QADD and SSAT: a saturated lane stays beyond the clamp), the bytes packed,
 * their top bits flipped (u - 128 as int8 is u ^ 0x80), one STR (to DEST): 9 instructions against 12 for QADD,
 * SSAT and STRB. A and B are overwritten. */
#define PACKED_STORE4(A, B, C, D, Z, DEST) PACKED_PACK4(A, B, C, D, Z) PACKED_PUT4(A, B, DEST)
#define PACKED_PACK4(A, B, C, D, Z)                                                                                    \
    "pkhbt   " A ", " A ", " C ", lsl #16\n\t" /* channels 0 and 2 */                                                \
    "pkhbt   " B ", " B ", " D ", lsl #16\n\t" /* 1 and 3 */                                                         \
    "qadd16  " A ", " A ", " Z "\n\t"                                                                                \
    "qadd16  " B ", " B ", " Z "\n\t"
#define PACKED_PUT4(A, B, DEST)                                                                                        \
    "usat16  " A ", #8, " A "\n\t"                                                                                   \
    "usat16  " B ", #8, " B "\n\t"                                                                                   \
    "orr     " A ", " A ", " B ", lsl #8\n\t"                                                                        \
    "eor     " A ", " A ", #0x80808080\n\t"                                                                          \
    "str     " A ", " DEST "\n\t"
/* narrow_rows' stores: a byte at a time after QADD and SSAT (lr: y_zero), or packed (lr: y_zero + 128 in both
 * int16 lanes; every output within int16 reach, wtab_fits). */
#define NARROW_STORE_S8                                                                                              \
    "vmov    r6, r7, s8, s9\n\t"                                                                                     \
    "vmov    r8, r9, s10, s11\n\t"                                                                                   \
    "qadd    r6, r6, lr\n\t"                                                                                         \
    "qadd    r7, r7, lr\n\t"                                                                                         \
    "qadd    r8, r8, lr\n\t"                                                                                         \
    "qadd    r9, r9, lr\n\t"                                                                                         \
    "ssat    r6, #8, r6\n\t"                                                                                         \
    "ssat    r7, #8, r7\n\t"                                                                                         \
    "ssat    r8, #8, r8\n\t"                                                                                         \
    "ssat    r9, #8, r9\n\t"                                                                                         \
    "strb    r6, [r12], #1\n\t"                                                                                      \
    "strb    r7, [r12], #1\n\t"                                                                                      \
    "strb    r8, [r12], #1\n\t"                                                                                      \
    "strb    r9, [r12], #1\n\t"
#define NARROW_STORE_PACKED                                                                                          \
    "vmov    r6, r7, s8, s9\n\t"                                                                                     \
    "vmov    r8, r9, s10, s11\n\t" PACKED_STORE4("r6", "r7", "r8", "r9", "lr", "[r12], #4")

/* Every channel's |rint(t)| <= 32767, t = ((float)acc + (float)bias) * eff, |acc| <= k_n * 255 * 128 (the
 * margin covers the float roundings), bias the table's (table_bias; unfolded channels count only with fb, else
 * they are redone). */
static int wtab_fits(const mt_conv_params *p, int32_t k_n, const int32_t *bias, const float *eff, int fb)
{
    const float dot = (float)k_n * (255.0f * 128.0f);
    int ok = 1;
    for (int32_t ch = 0; ch < p->out_c; ch++) {
        const float b = __builtin_fabsf((float)(fb ? bias[ch] : table_bias(bias[ch], eff[ch], k_n, p->y_zero)));
        ok &= (b + dot) * __builtin_fabsf(fb ? eff[ch] : table_eff(bias[ch], eff[ch], k_n, p->y_zero)) < 32000.0f;
    }
    return ok;
}

/* Pointwise conv with in_c 8 or 16, no mask, finite multipliers: one pixel at a time, its inputs unpacked once
 * (x-stationary: channels 0-7 in four registers, 8-15 in words after the table), and the output channels four
 * at a time from a per-call table of (multipliers, folded bias, weights unpacked to int16 lanes), all in one asm
 * loop (narrow_rows). The quads' weight-stationary loop costs about 18 instructions per output at in_c 8 (its
 * per-channel state reload and requantisation over 8 MACs); here four outputs take 51 at in_c 8 (4 LDM of
 * bias + weights, 16 SMLAD, QUAD_STORE's float steps, 4 STRB with post-increment), 16 more per channel and 8
 * inputs beyond, outputs contiguous. At in_c 24 and 32 the quads do better (measured with channel pairs: 1.42
 * and 1.47 against 1.35 and 1.40 instructions per MAC; tables of few channels, the pixel unpacked again per
 * table). Channels whose bias cannot be folded (dead channels) and the out_c % 4 last ones are redone in C. At
 * in_c 8 with packed stores, a table of an even number of quads runs two per loop pass. */
/* 1,152 bytes of stack (+ 16 for the pixel's inputs 8-15): twelve quads of in_c 8, so that the 48 output channels
 * of mbv2-w0.35's in_c 8 layers take one table and one pass over the pixels (two cost about 18 instructions more
 * per pixel: 602 instead of 584 per pixel at 64x64); pointwise_narrow's frame stays well below pointwise_wtab's,
 * the pointwise chain's deepest */
#define MT_NARROW_TAB_WORDS 288
/* a channel quad's table words: four multipliers, per channel its bias and in_c / 2 lane words */
#define NARROW_QUAD_WORDS(in_c) (4 + 4 * (1 + (in_c) / 2))

typedef struct {
    const int8_t *x;          /* 0: input of the current pixel */
    const int8_t *x_end;      /* 4: input of the pixel after the run */
    int8_t *y;                /* 8: output of the current pixel, first channel of the table */
    int32_t y_step;           /* 12: out_c */
    const uint32_t *tab;      /* 16 */
    uint32_t *tab_end;        /* 20: followed by in_c / 2 - 4 words: the pixel's inputs 8 on, unpacked */
    int32_t neg_zero;         /* 24 */
    int32_t y_zero;           /* 28: or y_zero + 128 in both int16 lanes (packed stores) */
    int32_t x_step;           /* 32: bytes between the run's pixels' inputs */
} narrow_ctx;

/* The pixel's input word at byte OFF unpacked into lanes RA (bytes 0, 2) and RB (1, 3); r1 the input, r7 -x_zero. */
#define NARROW_UNPACK(RA, RB, RW) "sxtab16 " RA ", r7, " RW "\n\t" "sxtab16 " RB ", r7, " RW ", ror #8\n\t"
/* One output channel: r1 the table, r2-r5 the pixel's lanes of inputs 0-7, BR its sum (from the bias);
 * HIGH: inputs 8-15 (NARROW_HIGH, in_c 16) or "". */
#define NARROW_CHANNEL(BR, HIGH)                                                                                 \
    "ldmia   r1!, {" BR ", r8, r9, r10, r11}\n\t"                                                                \
    "smlad   " BR ", r2, r8, " BR "\n\t"                                                                         \
    "smlad   " BR ", r3, r9, " BR "\n\t"                                                                         \
    "smlad   " BR ", r4, r10, " BR "\n\t"                                                                        \
    "smlad   " BR ", r5, r11, " BR "\n\t" HIGH
/* Inputs 8 + 4j .. 11 + 4j (two lane words at r0 + 8j, after the table) against the channel's next two weight
 * lanes; NARROW_HIGH_1: inputs 8-15. */
#define NARROW_HIGH4(BR, OFF)                                                                                    \
    "ldmia   r1!, {r8, r9}\n\t"                                                                                  \
    "ldrd    r10, r11, [r0, #" OFF "]\n\t"                                                                       \
    "smlad   " BR ", r10, r8, " BR "\n\t"                                                                        \
    "smlad   " BR ", r11, r9, " BR "\n\t"
#define NARROW_HIGH_1(BR) NARROW_HIGH4(BR, "0") NARROW_HIGH4(BR, "8")
/* Per pixel: x and y kept in s4, s5 across the quad loop, then advanced by ctx's steps (ctx, on the stack,
 * reloaded once), the inputs unpacked (IN_HIGH: inputs 8-15 first,
 * into the words after the table), then the channel-pair loop. */
#define NARROW_IN8(OFF)                                                                                          \
    "ldrd    r8, r10, [r1, #" OFF "]\n\t" NARROW_UNPACK("r2", "r3", "r8") NARROW_UNPACK("r4", "r5", "r10")          \
    "stmia   r6!, {r2, r3, r4, r5}\n\t"
#define NARROW_IN_1 "ldr     r6, [r0, #20]\n\t" NARROW_IN8("8")
#define NARROW_ROWS_ASM(IN_HIGH, HIGH_A, HIGH_B, STORE, REPS)                                                              \
    "push    {r0}\n\t"                                                                                           \
    "ldr     r1, [r0]\n\t" /* x */                                                                               \
    "ldrd    r12, r3, [r0, #8]\n\t" /* y, y_step */                                                              \
    "ldr     r2, [r0, #32]\n\t"                                                                                  \
    "str     r2, [r0]\n\t" /* ctx words 0-2 now x_step, x_end, y_step: one LDM per pixel at the loop's end */   \
    "str     r3, [r0, #8]\n\t"                                                                                   \
    "0:\n\t" /* r0: ctx, r1: x, r12: y (on entry, and from the run test at the loop's end) */                  \
    "vmov    s4, s5, r1, r12\n\t" /* kept across the quad loop */                                               \
    "ldrd    r7, lr, [r0, #24]\n\t" IN_HIGH /* neg_zero, y_zero */                                              \
    "ldrd    r8, r10, [r1]\n\t" NARROW_UNPACK("r2", "r3", "r8") NARROW_UNPACK("r4", "r5", "r10")                   \
    "ldrd    r1, r0, [r0, #16]\n\t" /* the table, its end */                                                     \
    "1:\n\t"                                                                                                     \
    ".rept   " REPS "\n\t" /* channel quads per pass (2: the table's quad count even) */                         \
    "vldmia  r1!, {s12-s15}\n\t" NARROW_CHANNEL("r6", HIGH_A) NARROW_CHANNEL("r7", HIGH_B)                      \
    "vmov    s8, s9, r6, r7\n\t" NARROW_CHANNEL("r6", HIGH_A) NARROW_CHANNEL("r7", HIGH_B)                       \
    "vmov    s10, s11, r6, r7\n\t"                                                                               \
    QUAD_FLOAT_STEPS                                                                                                 \
    STORE                                                                                                            \
    ".endr\n\t"                                                                                                  \
    "cmp     r1, r0\n\t"                                                                                         \
    "bne     1b\n\t"                                                                                             \
    "ldr     r0, [sp]\n\t"                                                                                       \
    "vmov    r1, r12, s4, s5\n\t"                                                                                \
    "ldmia   r0, {r2, r3, r4}\n\t" /* x_step, x_end, y_step */                                                   \
    "add     r1, r1, r2\n\t"                                                                                     \
    "add     r12, r12, r4\n\t"                                                                                   \
    "cmp     r1, r3\n\t"                                                                                         \
    "bne     0b\n\t"                                                                                             \
    "add     sp, sp, #4\n\t"
#define NARROW_ROWS_CALL(TEXT)                                                                                   \
    __asm__ volatile(TEXT                                                                                        \
                     : "+r"(c)                                                                                   \
                     :                                                                                           \
                     : "r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8", "r9", "r10", "r11", "r12", "lr", "s4", "s5",  \
                       "s8", "s9",                                                                               \
                       "s10", "s11", "s12", "s13", "s14", "s15", "cc", "memory")

/* The run of pixels ctx describes (at least one), every channel quad of the table (at least one). The loop
 * needs r1-r12 and lr, so ctx waits on the stack (one push) and is reloaded once per pixel. */
static __attribute__((noinline)) void narrow_rows(narrow_ctx *ctx, int32_t in_c, int packed)
{
    register narrow_ctx *c __asm__("r0") = ctx;
    /* in_c 8, packed: two quads per pass when the table holds an even number (one loop test per two quads) */
    const int even = (ctx->tab_end - ctx->tab) % (2 * NARROW_QUAD_WORDS(in_c)) == 0;
    if (in_c == 16)
        NARROW_ROWS_CALL(
            NARROW_ROWS_ASM(NARROW_IN_1, NARROW_HIGH_1("r6"), NARROW_HIGH_1("r7"), NARROW_STORE_S8, "1"));
    else if (packed && even) NARROW_ROWS_CALL(NARROW_ROWS_ASM("", "", "", NARROW_STORE_PACKED, "2"));
    else if (packed) NARROW_ROWS_CALL(NARROW_ROWS_ASM("", "", "", NARROW_STORE_PACKED, "1"));
    else NARROW_ROWS_CALL(NARROW_ROWS_ASM("", "", "", NARROW_STORE_S8, "1"));
}

static inline uint32_t float_bits(float f)
{
    uint32_t u;
    __builtin_memcpy(&u, &f, 4);
    return u;
}

/* Channels o .. o + n - 1 (n % 4 == 0) of the weight (in_c 8 or 16) into narrow_rows' table: per four channels
 * their multipliers, then per channel its bias (table_bias) and in_c / 2 lane words. */
static void narrow_table(const int8_t *w, int32_t in_c, const int32_t *bias, const float *eff, int32_t y_zero,
                         int32_t o, int32_t n, uint32_t *tab)
{
    for (int32_t k = 0; k < n; k += 4) {
        for (int32_t j = 0; j < 4; j++) *tab++ = float_bits(table_eff(bias[o + k + j], eff[o + k + j], in_c, y_zero));
        for (int32_t ch = o + k; ch < o + k + 4; ch++) {
            *tab++ = (uint32_t)table_bias(bias[ch], eff[ch], in_c, y_zero);
            for (int32_t i = 0; i < in_c; i += 4) {
                const uint32_t v = load_u32(w + ch * in_c + i);
                *tab++ = __sxtb16(v), *tab++ = sxtb16_ror8(v);
            }
        }
    }
}

/* After pointwise_narrow or pointwise_wtab, redone with the bias added in float: the channels from `quads` on
 * (out_c % 4 last ones) and those whose bias was not folded. */
static void redo_unfolded(const mt_conv_params *p, const int8_t *x, const int8_t *w, const int32_t *bias,
                          const float *eff, int8_t *y, int32_t quads)
{
    const int32_t in_c = p->in_c, out_c = p->out_c, n_pix = p->out_h * p->out_w, neg_zero = pack_neg_zero(p->x_zero);
    for (int32_t ch = 0; ch < out_c; ch++) {
        if (ch < quads && table_folds(bias[ch], eff[ch], in_c, p->y_zero)) continue;
        for (int32_t pix = 0; pix < n_pix; pix++)
            y[pix * out_c + ch] = requant_finite(dot1_s8(pixel_in(p, x, pix), neg_zero, w + ch * in_c, in_c),
                                                 (float)bias[ch], eff[ch], p->y_zero);
    }
}

static __attribute__((noinline)) void pointwise_narrow(const mt_conv_params *p, const int8_t *x, const int8_t *w,
                                                       const int32_t *bias, const float *eff, int8_t *y)
{
    uint32_t tab[MT_NARROW_TAB_WORDS + 4];
    const int32_t in_c = p->in_c, out_c = p->out_c, n_pix = p->out_h * p->out_w, neg_zero = pack_neg_zero(p->x_zero);
    const int32_t quad_words = NARROW_QUAD_WORDS(in_c), block = 4 * (MT_NARROW_TAB_WORDS / quad_words);
    const int32_t quads = out_c & ~3;
    /* stride 1: all pixels are one run; otherwise one run per output row */
    const int32_t run = p->stride == 1 ? n_pix : p->out_w, x_step = p->stride * in_c;
    /* in_c 8: the packed stores when every output is within int16 reach (in_c 16 goes to pointwise_wtab then) */
    const int packed = in_c == 8 && wtab_fits(p, in_c, bias, eff, 0);
    const int32_t y_zero = packed ? (int32_t)((uint32_t)(p->y_zero + 128) * 0x00010001u) : p->y_zero;
    for (int32_t o = 0; o < quads; o += block) {
        const int32_t n = quads - o < block ? quads - o : block;
        narrow_table(w, in_c, bias, eff, p->y_zero, o, n, tab);
        for (int32_t pix = 0; pix < n_pix; pix += run) {
            const int8_t *xr = pixel_in(p, x, pix);
            narrow_ctx ctx = {xr, xr + run * x_step, y + pix * out_c + o, out_c, tab, tab + n / 4 * quad_words,
                              neg_zero, y_zero, x_step};
            narrow_rows(&ctx, in_c, packed);
        }
    }
    redo_unfolded(p, x, w, bias, eff, y, quads);
}

/* pointwise_wtab: in_c 16, 24, 32, 40 or 48 (in_c % 8 == 0) without a mask, every multiplier finite, the
 * outputs within reach of int16 (wtab_fits): the weights of a block of output channels unpacked once per call
 * into a stack table (per four channels: their multipliers, then per channel pair and group of 8 inputs the two
 * channels' lane words, the bias in front of each channel's first group), the pixel's inputs unpacked once per
 * table into a lane buffer. Per group of 8 inputs and channel pair: one LDM of the pixel's lanes, one LDM per
 * channel of its weights, 8 SMLAD (11 instructions for 16 MACs, against 13 in quad_mac). The four outputs of a
 * channel quad are contiguous: requantised as in QUAD_STORE up to VCVTR, then two to a register (PKHBT), the
 * zero point + 128 added by QADD16 and the int8 clamp done by USAT16 on [0, 255] (the same result as QADD and
 * SSAT: |rint(t)| <= 32767 fits a lane, and a saturated lane stays beyond the clamp), the four bytes packed, their
 * top bits flipped (u - 128 as int8 is u ^ 0x80) and stored by one STR: 24 instructions for four outputs
 * against 28. */
/* 1,344 B of stack (pointwise_wtab's frame: 1,976 B in all, still below dw_quad's: see the top of this file);
 * first_conv's four quads of 64 (68 with float biases) words and a chunk of eight 28-byte fields fit:
 * its fields are gathered once */
#define MT_WTAB_WORDS 336
#define MT_WTAB_MAX_IN 48

typedef struct {
    const int8_t *x;       /* 0: input of the current pixel */
    int32_t x_step;        /* 4: bytes between the run's pixels' inputs */
    int8_t *y;             /* 8: output of the current pixel, first channel of the table */
    int32_t y_step;        /* 12: out_c */
    const uint32_t *tab;   /* 16 */
    const uint32_t *tab_end; /* 20 */
    uint32_t *lanes;       /* 24: the pixel's inputs unpacked, in_c / 2 words */
    int32_t neg_zero;      /* 28 */
    const int8_t *x_end;   /* 32: input of the pixel after the run */
    uint32_t zero_128;     /* 36: y_zero + 128 in both int16 lanes */
    uint8_t *m;            /* 40: wtab_rows_masked: mask byte of the current pixel's first channel of the table */
    int32_t m_step;        /* 44: out_c / 8 */
} wtab_ctx;

/* Per group of 8 inputs: two words of input bytes (r1) unpacked into four lane words (r7: -x_zero) stored at lr. */
#define WTAB_UNPACK                                                                                              \
    "ldrd    r8, r10, [r1], #8\n\t"                                                                              \
    "sxtab16 r2, r7, r8\n\t"                                                                                     \
    "sxtab16 r3, r7, r8, ror #8\n\t"                                                                             \
    "sxtab16 r4, r7, r10\n\t"                                                                                    \
    "sxtab16 r5, r7, r10, ror #8\n\t"                                                                            \
    "stmia   lr!, {r2, r3, r4, r5}\n\t"
/* The half group of 4 inputs (when %[h]): one word unpacked into two lane words. */
#define WTAB_UNPACK_HALF                                                                                         \
    ".if     %c[h]\n\t"                                                                                           \
    "ldr     r8, [r1], #4\n\t"                                                                                   \
    "sxtab16 r2, r7, r8\n\t"                                                                                     \
    "sxtab16 r3, r7, r8, ror #8\n\t"                                                                             \
    "stmia   lr!, {r2, r3}\n\t"                                                                                  \
    ".endif\n\t"
#define WTAB_SMLAD4(BR)                                                                                          \
    "smlad   " BR ", r2, r8, " BR "\n\t"                                                                         \
    "smlad   " BR ", r3, r9, " BR "\n\t"                                                                         \
    "smlad   " BR ", r4, r10, " BR "\n\t"                                                                        \
    "smlad   " BR ", r5, r11, " BR "\n\t"
/* One channel pair into r6, r7 (started from their biases), lr at the pixel's lanes: the first group, then G - 1
 * more, the half group last; lr ends past the lanes. */
#define WTAB_PAIR_FWD                                                                                            \
    "ldmia   lr!, {r2, r3, r4, r5}\n\t"                                                                          \
    "ldmia   r1!, {r6, r8, r9, r10, r11}\n\t" WTAB_SMLAD4("r6")                                                  \
    "ldmia   r1!, {r7, r8, r9, r10, r11}\n\t" WTAB_SMLAD4("r7")                                                  \
    ".rept   %c[g] - 1\n\t"                                                                                      \
    "ldmia   lr!, {r2, r3, r4, r5}\n\t"                                                                          \
    "ldmia   r1!, {r8, r9, r10, r11}\n\t" WTAB_SMLAD4("r6")                                                      \
    "ldmia   r1!, {r8, r9, r10, r11}\n\t" WTAB_SMLAD4("r7")                                                      \
    ".endr\n\t"                                                                                                  \
    ".if     %c[h]\n\t" /* a last half group of 4 inputs (conv_wtab, k4 % 8 == 4) */                              \
    "ldmia   lr!, {r2, r3}\n\t"                                                                                  \
    "ldmia   r1!, {r8, r9}\n\t"                                                                                  \
    "smlad   r6, r2, r8, r6\n\t"                                                                                 \
    "smlad   r6, r3, r9, r6\n\t"                                                                                 \
    "ldmia   r1!, {r8, r9}\n\t"                                                                                  \
    "smlad   r7, r2, r8, r7\n\t"                                                                                 \
    "smlad   r7, r3, r9, r7\n\t"                                                                                 \
    ".endif\n\t"
/* The same backwards, lr past the lanes (LDMDB: the half group first, then the groups last to first; the table
 * holds this pair's groups in that order, wtab_table); lr ends at the lanes, so no pointer reset between the
 * quad's two pairs or quads (the exact int32 sums do not depend on the order). */
#define WTAB_PAIR_BACK                                                                                           \
    ".if     %c[h]\n\t"                                                                                           \
    "ldmdb   lr!, {r2, r3}\n\t"                                                                                  \
    "ldmia   r1!, {r6, r8, r9}\n\t"                                                                              \
    "smlad   r6, r2, r8, r6\n\t"                                                                                 \
    "smlad   r6, r3, r9, r6\n\t"                                                                                 \
    "ldmia   r1!, {r7, r8, r9}\n\t"                                                                              \
    "smlad   r7, r2, r8, r7\n\t"                                                                                 \
    "smlad   r7, r3, r9, r7\n\t"                                                                                 \
    ".else\n\t"                                                                                                  \
    "ldmdb   lr!, {r2, r3, r4, r5}\n\t"                                                                          \
    "ldmia   r1!, {r6, r8, r9, r10, r11}\n\t" WTAB_SMLAD4("r6")                                                  \
    "ldmia   r1!, {r7, r8, r9, r10, r11}\n\t" WTAB_SMLAD4("r7")                                                  \
    ".endif\n\t"                                                                                                 \
    ".rept   %c[g] - 1 + %c[h]\n\t"                                                                              \
    "ldmdb   lr!, {r2, r3, r4, r5}\n\t"                                                                          \
    "ldmia   r1!, {r8, r9, r10, r11}\n\t" WTAB_SMLAD4("r6")                                                      \
    "ldmia   r1!, {r8, r9, r10, r11}\n\t" WTAB_SMLAD4("r7")                                                      \
    ".endr\n\t"
/* The end of a wtab quad loop (table end) and of its pixel loop (ctx from the stack, the run test). */
#define WTAB_LOOP_ENDS                                                                                           \
    "cmp     r1, r0\n\t"                                                                                         \
    "bne     1b\n\t"                                                                                             \
    "ldr     r0, [sp]\n\t"                                                                                       \
    "ldr     r1, [r0]\n\t"                                                                                       \
    "ldr     r6, [r0, #32]\n\t"                                                                                  \
    "cmp     r1, r6\n\t"                                                                                         \
    "bne     0b\n\t"                                                                                             \
    "add     sp, sp, #4\n\t"
/* wtab_rows' loop ends: the pixel's x and y back from s4, s5 (kept there across the quad loop, not stored in
 * ctx), advanced by x_step and y_step (ctx words 1, 2), the run test against x_end (word 0): 8 instructions per
 * pixel against 12 with x and y advanced through ctx. */
#define WTAB_RUN_END                                                                                             \
    "cmp     r1, r0\n\t"                                                                                         \
    "bne     1b\n\t"                                                                                             \
    "ldr     r0, [sp]\n\t"                                                                                       \
    "vmov    r1, r12, s4, s5\n\t"                                                                                \
    "ldmia   r0, {r2, r3, r4}\n\t"                                                                               \
    "add     r1, r1, r3\n\t"                                                                                     \
    "add     r12, r12, r4\n\t"                                                                                   \
    "cmp     r1, r2\n\t"                                                                                         \
    "bne     0b\n\t"                                                                                             \
    "add     sp, sp, #4\n\t"
#define WTAB_ROWS_ASM(HEAD, BIAS_ADD)                                                                            \
    WTAB_ROWS_ASM_U(HEAD, BIAS_ADD, "1")
/* REPS: channel quads per pass of the quad loop (2 when the table holds an even number: one loop test per two) */
#define WTAB_ROWS_ASM_U(HEAD, BIAS_ADD, REPS)                                                                            \
    "push    {r0}\n\t"                                                                                           \
    "ldr     r2, [r0, #36]\n\t"                                                                                  \
    "vmov    s7, r2\n\t"                                                                                         \
    "ldmia   r0, {r1, r2, r3, r4}\n\t" /* x, x_step, y, y_step */                                                  \
    "ldr     r5, [r0, #32]\n\t"                                                                                  \
    "str     r5, [r0]\n\t" /* ctx words 0-2 now x_end, x_step, y_step: one LDM per pixel (WTAB_RUN_END) */      \
    "str     r4, [r0, #8]\n\t"                                                                                   \
    "mov     r12, r3\n\t"                                                                                        \
    "0:\n\t" /* r0: ctx, r1: x, r12: y (on entry, and from the run test at the loop's end) */                  \
    "vmov    s4, s5, r1, r12\n\t"                                                                                \
    "ldrd    lr, r7, [r0, #24]\n\t" /* the lanes, neg_zero */                                                    \
    ".rept   %c[g]\n\t" WTAB_UNPACK ".endr\n\t" WTAB_UNPACK_HALF /* lr past the lanes */                       \
    "ldrd    r1, r0, [r0, #16]\n\t" /* the table, its end */                                                     \
    "1:\n\t"                                                                                                     \
    ".rept   " REPS "\n\t"                                                                                         \
    HEAD WTAB_PAIR_BACK "vmov    s8, s9, r6, r7\n\t" WTAB_PAIR_FWD "vmov    s10, s11, r6, r7\n\t"                        \
    QUAD_FLOAT_STEPS_B(BIAS_ADD)                                                                                     \
    "vmov    r2, r3, s8, s9\n\t"                                                                                 \
    "vmov    r4, r5, s10, s11\n\t"                                                                               \
    "vmov    r9, s7\n\t" PACKED_STORE4("r2", "r3", "r4", "r5", "r9", "[r12], #4")                                                 \
    ".endr\n\t"                                                                                                  \
    WTAB_RUN_END
/* Quad headers: the four multipliers, or the four float biases then the multipliers. */
#define WTAB_HEAD "vldmia  r1!, {s12-s15}\n\t"
#define WTAB_HEAD_FB "vldmia  r1!, {s0-s3}\n\t" "vldmia  r1!, {s12-s15}\n\t"
#define WTAB_ROWS_CALL(G, HEAD, BIAS_ADD) WTAB_ROWS_CALL_H(G, 0, HEAD, BIAS_ADD)
#define WTAB_ROWS_CALL_H(G, H, HEAD, BIAS_ADD) WTAB_ROWS_CALL_HU(G, H, "1", HEAD, BIAS_ADD)
#define WTAB_ROWS_CALL_HU(G, H, REPS, HEAD, BIAS_ADD)                                                             \
    __asm__ volatile(WTAB_ROWS_ASM_U(HEAD, BIAS_ADD, REPS)                                                       \
                     : "+r"(c)                                                                                   \
                     : [g] "i"(G), [h] "i"(H)                                                                    \
                     : "r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8", "r9", "r10", "r11", "r12", "lr", "s0", "s1",  \
                       "s2", "s3", "s4", "s5", "s7", "s8", "s9", "s10", "s11", "s12", "s13", "s14", "s15", "cc", "memory")

/* The run of pixels ctx describes (at least one), every channel quad of the table (at least one); one asm
 * text per group count (the groups are unrolled) and header kind (fb: float biases). ctx waits on the stack as
 * in narrow_rows. */
static __attribute__((noinline)) void wtab_rows(wtab_ctx *ctx, int32_t k8, int fb)
{
    register wtab_ctx *c __asm__("r0") = ctx;
    if (fb) {
        switch (k8) {
        case 16: WTAB_ROWS_CALL(2, WTAB_HEAD_FB, QUAD_FB_ADD); break;
        case 24: WTAB_ROWS_CALL(3, WTAB_HEAD_FB, QUAD_FB_ADD); break;
        case 32: WTAB_ROWS_CALL(4, WTAB_HEAD_FB, QUAD_FB_ADD); break;
        case 40: WTAB_ROWS_CALL(5, WTAB_HEAD_FB, QUAD_FB_ADD); break;
        default: WTAB_ROWS_CALL(6, WTAB_HEAD_FB, QUAD_FB_ADD); break;
        }
        return;
    }
    /* without float biases a quad is 8 + 2 * k8 words; an even number of them: two per pass */
    if ((ctx->tab_end - ctx->tab) / (8 + 2 * k8) % 2 == 0) {
        switch (k8) {
        case 16: WTAB_ROWS_CALL_HU(2, 0, "2", WTAB_HEAD, ""); break;
        case 24: WTAB_ROWS_CALL_HU(3, 0, "2", WTAB_HEAD, ""); break;
        case 32: WTAB_ROWS_CALL_HU(4, 0, "2", WTAB_HEAD, ""); break;
        case 40: WTAB_ROWS_CALL_HU(5, 0, "2", WTAB_HEAD, ""); break;
        default: WTAB_ROWS_CALL_HU(6, 0, "2", WTAB_HEAD, ""); break;
        }
        return;
    }
    switch (k8) {
    case 16: WTAB_ROWS_CALL(2, WTAB_HEAD, ""); break;
    case 24: WTAB_ROWS_CALL(3, WTAB_HEAD, ""); break;
    case 32: WTAB_ROWS_CALL(4, WTAB_HEAD, ""); break;
    case 40: WTAB_ROWS_CALL(5, WTAB_HEAD, ""); break;
    default: WTAB_ROWS_CALL(6, WTAB_HEAD, ""); break;
    }
}

/* wtab_rows with the clamp mask: two channel quads per pass (the table's quad count even, starting at a channel
 * o % 8 == 0, out_c % 8 == 0), their eight bits one mask byte (ctx->m, advanced; the pass's first nibble waits in
 * s5, the pointer in s6). A quad's bits from its packed lanes after QADD16 (r2: channels 0, 2, r3: 1, 3, each
 * v + 128 as int16): in range (not clamped, bit 1) iff the lane is 0..255 as unsigned 16 bits, i.e. 255 - lane
 * does not borrow: USUB16's GE bits, read by MRS (APSR bits 16-19: lane 0 twice, lane 1 twice). */
#define WTAB_MASK_NIBBLE /* the quad's four bits to r10 bits 16-19 */                                              \
    "mov     r8, #0x00FF00FF\n\t"                                                                                \
    "usub16  r10, r8, r2\n\t"                                                                                    \
    "mrs     r10, apsr\n\t"                                                                                      \
    "usub16  r11, r8, r3\n\t"                                                                                    \
    "mrs     r11, apsr\n\t"                                                                                      \
    "and     r10, r10, #0x50000\n\t"                                                                             \
    "and     r11, r11, #0xA0000\n\t"                                                                             \
    "orr     r10, r10, r11\n\t"
#define WTAB_QUAD_REQ                                                                                            \
    WTAB_HEAD WTAB_PAIR_BACK "vmov    s8, s9, r6, r7\n\t" WTAB_PAIR_FWD "vmov    s10, s11, r6, r7\n\t"           \
    QUAD_FLOAT_STEPS                                                                                             \
    "vmov    r2, r3, s8, s9\n\t"                                                                                 \
    "vmov    r4, r5, s10, s11\n\t"                                                                               \
    "vmov    r9, s7\n\t" PACKED_PACK4("r2", "r3", "r4", "r5", "r9")
#define WTAB_ROWS_MASKED_ASM                                                                                     \
    "push    {r0}\n\t"                                                                                           \
    "ldr     r2, [r0, #36]\n\t"                                                                                  \
    "vmov    s7, r2\n\t"                                                                                         \
    "0:\n\t"                                                                                                     \
    "ldrd    r1, r6, [r0]\n\t" /* x, x_step */                                                                   \
    "add     r6, r1, r6\n\t"                                                                                     \
    "str     r6, [r0]\n\t"                                                                                       \
    "ldr     r7, [r0, #28]\n\t"                                                                                  \
    "ldr     lr, [r0, #24]\n\t"                                                                                  \
    ".rept   %c[g]\n\t" WTAB_UNPACK ".endr\n\t"                                                                 \
    "ldrd    r12, r6, [r0, #8]\n\t" /* y, y_step */                                                              \
    "add     r6, r12, r6\n\t"                                                                                    \
    "str     r6, [r0, #8]\n\t"                                                                                   \
    "ldrd    r2, r6, [r0, #40]\n\t" /* m, m_step */                                                              \
    "add     r6, r2, r6\n\t"                                                                                     \
    "str     r6, [r0, #40]\n\t"                                                                                  \
    "vmov    s6, r2\n\t"                                                                                         \
    "ldrd    r1, r0, [r0, #16]\n\t" /* the table, its end */                                                     \
    "1:\n\t" WTAB_QUAD_REQ WTAB_MASK_NIBBLE                                                                      \
    "vmov    s5, r10\n\t" PACKED_PUT4("r2", "r3", "[r12], #4") WTAB_QUAD_REQ WTAB_MASK_NIBBLE                     \
    "vmov    r11, s5\n\t"                                                                                        \
    "orr     r10, r11, r10, lsl #4\n\t"                                                                          \
    "lsr     r10, r10, #16\n\t"                                                                                  \
    "vmov    r11, s6\n\t"                                                                                        \
    "strb    r10, [r11], #1\n\t"                                                                                 \
    "vmov    s6, r11\n\t" PACKED_PUT4("r2", "r3", "[r12], #4")                                                   \
    WTAB_LOOP_ENDS
#define WTAB_ROWS_MASKED_CALL(G)                                                                                 \
    __asm__ volatile(WTAB_ROWS_MASKED_ASM                                                                        \
                     : "+r"(c)                                                                                   \
                     : [g] "i"(G), [h] "i"(0)                                                                    \
                     : "r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8", "r9", "r10", "r11", "r12", "lr", "s5", "s6",  \
                       "s7", "s8", "s9", "s10", "s11", "s12", "s13", "s14", "s15", "cc", "memory")
static __attribute__((noinline)) void wtab_rows_masked(wtab_ctx *ctx, int32_t k8)
{
    register wtab_ctx *c __asm__("r0") = ctx;
    switch (k8) {
    case 24: WTAB_ROWS_MASKED_CALL(3); break;
    case 32: WTAB_ROWS_MASKED_CALL(4); break;
    case 40: WTAB_ROWS_MASKED_CALL(5); break;
    default: WTAB_ROWS_MASKED_CALL(6); break;
    }
}

/* wtab_rows for conv_wtab's fields of k4 = 8 * G + 4 bytes (k4 20, 28, 36 or 44): G groups of 8 inputs and a
 * half group (first_conv: k_n 27 padded to 28, not 32: an eighth fewer MACs and unpacks). */
static __attribute__((noinline)) void wtab_rows_half(wtab_ctx *ctx, int32_t k4, int fb)
{
    register wtab_ctx *c __asm__("r0") = ctx;
    if (fb) {
        switch (k4) {
        case 20: WTAB_ROWS_CALL_H(2, 1, WTAB_HEAD_FB, QUAD_FB_ADD); break;
        case 28: WTAB_ROWS_CALL_H(3, 1, WTAB_HEAD_FB, QUAD_FB_ADD); break;
        case 36: WTAB_ROWS_CALL_H(4, 1, WTAB_HEAD_FB, QUAD_FB_ADD); break;
        default: WTAB_ROWS_CALL_H(5, 1, WTAB_HEAD_FB, QUAD_FB_ADD); break;
        }
        return;
    }
    switch (k4) {
    case 20: WTAB_ROWS_CALL_H(2, 1, WTAB_HEAD, ""); break;
    case 28: WTAB_ROWS_CALL_H(3, 1, WTAB_HEAD, ""); break;
    case 36: WTAB_ROWS_CALL_H(4, 1, WTAB_HEAD, ""); break;
    default: WTAB_ROWS_CALL_H(5, 1, WTAB_HEAD, ""); break;
    }
}

static inline int wtab_shape(const mt_conv_params *p, const int8_t *x)
{
    /* LDRD on the input: word-aligned pixels */
    /* the tables pay from about 64 pixels on (measured: 36 pixels at in_c 40 and 48 cost 1.26x and 1.08x the
     * quads, 12 pixels in runs of 3 1.4x; 64 pixels at in_c 24 0.90x) */
    const int32_t n_pix = p->out_h * p->out_w;
    return p->in_c % 8 == 0 && p->in_c >= 16 && p->in_c <= MT_WTAB_MAX_IN && p->out_c >= 4 &&
           ((uintptr_t)x & 3u) == 0 && n_pix >= 64 && (p->stride == 1 || p->out_w >= 8);
}

/* Four weights from row[i] on, those at k_n and beyond zero (a row padded to a multiple of 8). */
static inline uint32_t load_row4(const int8_t *row, int32_t i, int32_t k_n)
{
    if (i + 4 <= k_n) return load_u32(row + i);
    uint32_t v = 0;
    for (int32_t b = 0; b < 4 && i + b < k_n; b++) v |= (uint32_t)(uint8_t)row[i + b] << (8 * b);
    return v;
}

/* The weight of a split pointwise conv (mt_conv_pointwise_split_s8) whose two index lists partition the input
 * channels: row o of the whole weight has w_frozen[o][i] at channel frozen_idx[i], w_train[o][i] at train_idx[i]. */
typedef struct {
    const int8_t *w_frozen, *w_train;
    const int16_t *frozen_idx, *train_idx;
    int32_t n_frozen, n_train;
} split_weight;

/* Both rows of one index list scattered: each index loaded once for the two rows. */
static inline void scatter_pair(const int16_t *idx, const int8_t *w0, const int8_t *w1, int32_t n, int8_t *r0,
                                int8_t *r1)
{
    for (int32_t i = 0; i < n; i++) {
        const int32_t a = idx[i];
        const int8_t a0 = w0[i], a1 = w1[i];
        r0[a] = a0, r1[a] = a1;
    }
}

/* Rows ch and ch + 1 of the split weight s (k_n = in_c bytes each) assembled at rows (not inlined into
 * wtab_table: its scatter loops keep their pointers in registers there). */
static __attribute__((noinline)) void split_rows_pair(const split_weight *s, int32_t ch, int32_t k_n, int8_t *rows)
{
    const int32_t nf = s->n_frozen, nt = s->n_train;
    const int8_t *wf = s->w_frozen + ch * nf, *wt = s->w_train + ch * nt;
    scatter_pair(s->frozen_idx, wf, wf + nf, nf, rows, rows + k_n);
    scatter_pair(s->train_idx, wt, wt + nt, nt, rows, rows + k_n);
}

/* One channel pair's part of wtab_table's layout when its rows (k_n bytes each, k_n % 8 == 0) need no padding:
 * whole words loaded, no bound tests; back: the groups last first. */
static uint32_t *wtab_pair_whole(const int8_t *rows, int32_t k_n, int back, const uint32_t *b2, uint32_t *tab)
{
    for (int32_t gi = 0; gi < k_n; gi += 8) {
        const int32_t g = back ? k_n - 8 - gi : gi;
        for (int32_t j = 0; j < 2; j++) {
            if (gi == 0) *tab++ = b2[j];
            const uint32_t u = load_u32(rows + j * k_n + g), v = load_u32(rows + j * k_n + g + 4);
            tab[0] = __sxtb16(u), tab[1] = sxtb16_ror8(u), tab[2] = __sxtb16(v), tab[3] = sxtb16_ror8(v);
            tab += 4;
        }
    }
    return tab;
}

/* Channels o .. o + n - 1 (n % 4 == 0) into wtab_rows' table (layout above): weight rows of k_n bytes padded
 * with zeros to kp (a multiple of 4: groups of 8, a last half group of 4 when kp % 8 == 4); fb: the quad headers
 * carry the float biases of the unfolded channels (0.0f for the others, whose sums start from their bias), else
 * the channels carry table_bias (those it cannot fold are left to redo_unfolded). split (kp == k_n): the rows
 * assembled from a split weight a pair at a time in pair_rows (2 * k_n bytes), w unused. */
static void wtab_table(const int8_t *w, int32_t k_n, int32_t kp, const int32_t *bias, const float *eff, int32_t y_zero,
                       int32_t o, int32_t n, int fb, uint32_t *tab, const split_weight *split, int8_t *pair_rows)
{
    for (int32_t k = o; k < o + n; k += 4) {
        if (fb)
            for (int32_t j = 0; j < 4; j++) *tab++ = float_bits(fold_one(bias[k + j]) ? 0.0f : (float)bias[k + j]);
        for (int32_t j = 0; j < 4; j++)
            *tab++ = float_bits(fb ? eff[k + j] : table_eff(bias[k + j], eff[k + j], k_n, y_zero));
        for (int32_t ca = k; ca < k + 4; ca += 2) {
            const int8_t *rows = w + ca * k_n;
            if (split) {
                split_rows_pair(split, ca, k_n, pair_rows);
                rows = pair_rows;
            }
            uint32_t b2[2];
            for (int32_t j = 0; j < 2; j++)
                b2[j] = fb ? (fold_one(bias[ca + j]) ? (uint32_t)bias[ca + j] : 0u)
                           : (uint32_t)table_bias(bias[ca + j], eff[ca + j], k_n, y_zero);
            if (kp == k_n && k_n % 8 == 0) {
                tab = wtab_pair_whole(rows, k_n, ca == k, b2, tab);
                continue;
            }
            for (int32_t gi = 0; gi < kp; gi += 8) {
                /* the quad's first pair reads the lanes backwards (WTAB_PAIR_BACK): its groups last first */
                const int32_t g = ca == k ? (kp - 1) / 8 * 8 - gi : gi;
                for (int32_t ch = ca; ch < ca + 2; ch++) {
                    if (gi == 0) *tab++ = b2[ch - ca];
                    for (int32_t i = g; i < g + 8 && i < kp; i += 4) {
                        const uint32_t v = load_row4(rows + (ch - ca) * k_n, i, k_n);
                        *tab++ = __sxtb16(v), *tab++ = sxtb16_ror8(v);
                    }
                }
            }
        }
    }
}

/* pointwise_wtab's table: larger than conv_wtab's (four quads of in_c 48; its chain stays below the depthwise
 * one's, the step's stack high-water mark) */
#define MT_WTAB_PW_WORDS 424

/* pointwise_wtab with a mask (out_c % 8 == 0, in_c >= 24, whole mask bytes per pass) or a split weight: every
 * channel's bias goes into the table (table_folds), as nothing is redone there. */
static int wtab_all_fold(const mt_conv_params *p, const int32_t *bias, const float *eff)
{
    int ok = 1;
    for (int32_t ch = 0; ch < p->out_c; ch++) ok &= table_folds(bias[ch], eff[ch], p->in_c, p->y_zero);
    return ok;
}

static __attribute__((noinline)) void pointwise_wtab(const mt_conv_params *p, const int8_t *x, const int8_t *w,
                                                     const int32_t *bias, const float *eff, int8_t *y, uint8_t *mask,
                                                     const split_weight *split)
{
    /* the table and, right after the block's quads, the pixel's lanes (in_c / 2 words): one buffer, so that a
     * narrower in_c lends the lanes' unused words to the table (in_c 32: six quads, not four) */
    uint32_t tab[MT_WTAB_PW_WORDS + MT_WTAB_MAX_IN / 2];
    const int32_t in_c = p->in_c, out_c = p->out_c, n_pix = p->out_h * p->out_w;
    const int32_t quad_words = 8 + 2 * in_c, quads = out_c / 4;
    /* with a mask two quads per pass: blocks of an even number of quads */
    const int32_t max_quads = (MT_WTAB_PW_WORDS + MT_WTAB_MAX_IN / 2 - in_c / 2) / quad_words & (mask ? ~1 : ~0);
    /* blocks of equal size: as few as the table allows */
    const int32_t n_blocks = (quads + max_quads - 1) / max_quads;
    const int32_t per_block = ((quads + n_blocks - 1) / n_blocks + (mask ? 1 : 0)) & (mask ? ~1 : ~0);
    const int32_t run = p->stride == 1 ? n_pix : p->out_w, x_step = p->stride * in_c;
    const uint32_t zero_128 = (uint32_t)(p->y_zero + 128) * 0x00010001u;
    uint32_t *lanes = tab + per_block * quad_words;
    for (int32_t q = 0; q < quads; q += per_block) {
        const int32_t n = 4 * (quads - q < per_block ? quads - q : per_block);
        wtab_table(w, in_c, in_c, bias, eff, p->y_zero, 4 * q, n, 0, tab, split, (int8_t *)lanes);
        for (int32_t pix = 0; pix < n_pix; pix += run) {
            const int8_t *xr = pixel_in(p, x, pix);
            wtab_ctx ctx = {xr, x_step, y + pix * out_c + 4 * q, out_c, tab, tab + n / 4 * quad_words, lanes,
                            pack_neg_zero(p->x_zero), xr + run * x_step, zero_128,
                            mask ? mask + ((pix * out_c + 4 * q) >> 3) : NULL, out_c >> 3};
            if (mask) wtab_rows_masked(&ctx, in_c);
            else wtab_rows(&ctx, in_c, 0);
        }
    }
    if (!mask && !split) redo_unfolded(p, x, w, bias, eff, y, 4 * quads);
}

/* pointwise_wtab's conditions beyond wtab_shape; mask: see wtab_all_fold. */
static int wtab_takes(const mt_conv_params *p, const int32_t *bias, const float *eff, const uint8_t *mask, int split)
{
    if (p->out_c < 4 || !all_finite(eff, p->out_c)) return 0;
    if (mask && ((p->out_c & 7) || p->in_c < 24)) return 0;
    if ((mask || split) && !wtab_all_fold(p, bias, eff)) return 0;
    return wtab_fits(p, p->in_c, bias, eff, 0);
}

void mt_conv_pointwise_s8(const mt_conv_params *p, const int8_t *x, const int8_t *w, const int32_t *bias,
                          const float *eff, int8_t *y, uint8_t *mask)
{
    if (wtab_shape(p, x) && wtab_takes(p, bias, eff, mask, 0)) {
        pointwise_wtab(p, x, w, bias, eff, y, mask, NULL);
        return;
    }
    if (!mask && p->out_c >= 4 && all_finite(eff, p->out_c)) {
        if (p->in_c == 8 || p->in_c == 16) {
            pointwise_narrow(p, x, w, bias, eff, y);
            return;
        }
    }
    const int32_t in_c = p->in_c, out_c = p->out_c, neg_zero = pack_neg_zero(p->x_zero), n4 = in_c & ~3;
    if (n4 == 0) {
        pointwise_pixel_pairs(p, x, w, bias, eff, y, mask);
        return;
    }
    int32_t first = 0;
    if (n4 == in_c)
        first = in_c <= MT_QUAD_MAX_K ? pointwise_quads(p, x, w, bias, eff, y, mask)
                                      : pointwise_quads_chunked(p, x, w, bias, eff, y, mask);
    const int short_requant = !mask && all_finite(eff, out_c);
    for (int32_t pix = first; pix < p->out_h * p->out_w; pix++) {
        const int8_t *xa = pixel_in(p, x, pix);
        int32_t base = pix * out_c, o = 0;
        for (; o + 4 <= out_c; o += 4) {
            int32_t acc[4];
            dot4_asm(xa, neg_zero, w + o * in_c, in_c, n4, acc);
            if (short_requant) {
                for (int32_t j = 0; j < 4; j++)
                    y[base + o + j] = requant_finite(acc[j], (float)bias[o + j], eff[o + j], p->y_zero);
            } else {
                for (int32_t j = 0; j < 4; j++)
                    store_out(y, mask, base + o + j, acc[j], bias[o + j], eff[o + j], p->y_zero);
            }
        }
        for (; o < out_c; o++)
            store_out(y, mask, base + o, dot1_s8(xa, neg_zero, w + o * in_c, in_c), bias[o], eff[o], p->y_zero);
    }
}

/* Slot of element k in a patch of n int16 lanes laid out for SMLAD against SXTB16-unpacked weights: in each
 * full group of 4 the lanes are (k, k+2, k+1, k+3); the n % 4 tail stays in plain order. */
static inline int32_t patch_slot(int32_t k, int32_t k4)
{
    return (k < k4) ? (k & ~3) + ((k & 1) << 1) + ((k & 2) >> 1) : k;
}

/* sum over k of patch[k] * w[k] for a patch laid out by patch_slot. */
static inline int32_t dot_patch(const int16_t *patch, const int8_t *w, int32_t n)
{
    int32_t acc = 0, k = 0, k4 = n & ~3;
    for (; k < k4; k += 4) {
        uint32_t v = load_u32(w + k), x02, x13;
        __builtin_memcpy(&x02, patch + k, 4);
        __builtin_memcpy(&x13, patch + k + 2, 4);
        acc = __smlad((int32_t)x02, (int32_t)__sxtb16(v), acc);
        acc = __smlad((int32_t)x13, (int32_t)sxtb16_ror8(v), acc);
    }
    for (; k < n; k++) acc += (int32_t)patch[k] * (int32_t)w[k];
    return acc;
}

/* Four weight rows (stride n) against one patch: each pair of patch words is loaded once for the four. */
static inline void dot4_patch(const int16_t *patch, const int8_t *w, int32_t n, int32_t *acc)
{
    const int8_t *wa = w, *wb = w + 2 * n;
    int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0, k = 0, k4 = n & ~3;
    for (; k < k4; k += 4) {
        uint32_t x02, x13, v;
        __builtin_memcpy(&x02, patch + k, 4);
        __builtin_memcpy(&x13, patch + k + 2, 4);
        v = load_u32(wa + k);
        a0 = __smlad((int32_t)x13, (int32_t)sxtb16_ror8(v), __smlad((int32_t)x02, (int32_t)__sxtb16(v), a0));
        v = load_u32(wa + n + k);
        a1 = __smlad((int32_t)x13, (int32_t)sxtb16_ror8(v), __smlad((int32_t)x02, (int32_t)__sxtb16(v), a1));
        v = load_u32(wb + k);
        a2 = __smlad((int32_t)x13, (int32_t)sxtb16_ror8(v), __smlad((int32_t)x02, (int32_t)__sxtb16(v), a2));
        v = load_u32(wb + n + k);
        a3 = __smlad((int32_t)x13, (int32_t)sxtb16_ror8(v), __smlad((int32_t)x02, (int32_t)__sxtb16(v), a3));
    }
    for (; k < n; k++) {
        int32_t xk = patch[k];
        a0 += xk * (int32_t)wa[k];
        a1 += xk * (int32_t)wa[n + k];
        a2 += xk * (int32_t)wb[k];
        a3 += xk * (int32_t)wb[n + k];
    }
    acc[0] = a0, acc[1] = a1, acc[2] = a2, acc[3] = a3;
}

/* Dense conv (first_conv): each output pixel's receptive field is gathered once into int16 lanes, already
 * shifted by -x_zero and with padding as real zero, in the order SMLAD pairs with SXTB16-unpacked weights:
 * per group of 4 taps k..k+3 the lanes are (k, k+2, k+1, k+3); a tail of K % 4 taps follows in plain order.
 * Patches larger than MT_SIMD_PATCH_MAX int16 (stack) use the portable kernel. */
#ifndef MT_SIMD_PATCH_MAX
#define MT_SIMD_PATCH_MAX 256
#endif
void mt_conv_s8_portable(const mt_conv_params *p, const int8_t *x, const int8_t *w, const int32_t *bias,
                         const float *eff, int8_t *y, uint8_t *mask);

/* The receptive field of output pixel pix in weight order (ky, kx, ci), as int8, then up to n4 bytes:
 * padding and the tail hold x_zero, i.e. the value 0 once x_zero is subtracted. */
static void gather_field_s8(const mt_conv_params *p, const int8_t *x, int32_t pix, int32_t n4, int8_t *field)
{
    const int32_t in_c = p->in_c, oy = pix / p->out_w, ox = pix - oy * p->out_w;
    const int8_t zero = (int8_t)p->x_zero;
    int32_t k = 0;
    for (int32_t ky = 0; ky < p->kh; ky++) {
        int32_t iy = oy * p->stride - p->pad + ky;
        for (int32_t kx = 0; kx < p->kw; kx++) {
            int32_t ix = ox * p->stride - p->pad + kx;
            if (iy < 0 || iy >= p->in_h || ix < 0 || ix >= p->in_w) {
                for (int32_t ci = 0; ci < in_c; ci++) field[k++] = zero;
            } else {
                const int8_t *xp = x + (iy * p->in_w + ix) * in_c;
                for (int32_t ci = 0; ci < in_c; ci++) field[k++] = xp[ci];
            }
        }
    }
    for (; k < n4; k++) field[k] = zero;
}

/* gather_field_s8 for a window inside the input: each kernel row is kw * in_c contiguous input bytes (NHWC),
 * copied a word at a time (unaligned word accesses are allowed on ARMv7E-M). */
static void gather_field_fast(const mt_conv_params *p, const int8_t *x, int32_t pix, int32_t n4, int8_t *field)
{
    const int32_t oy = pix / p->out_w, ox = pix - oy * p->out_w;
    const int32_t iy0 = oy * p->stride - p->pad, ix0 = ox * p->stride - p->pad;
    if (iy0 < 0 || ix0 < 0 || iy0 + p->kh > p->in_h || ix0 + p->kw > p->in_w) {
        gather_field_s8(p, x, pix, n4, field);
        return;
    }
    const int32_t row = p->kw * p->in_c, row4 = row & ~3, x_row = p->in_w * p->in_c;
    const int8_t *xr = x + (iy0 * p->in_w + ix0) * p->in_c;
    int32_t k = 0;
    for (int32_t ky = 0; ky < p->kh; ky++, xr += x_row) {
        int32_t i = 0;
        for (; i < row4; i += 4, k += 4) {
            uint32_t v = load_u32(xr + i);
            __builtin_memcpy(field + k, &v, 4);
        }
        for (; i < row; i++) field[k++] = xr[i];
    }
    for (; k < n4; k++) field[k] = (int8_t)p->x_zero;
}

#ifndef MT_CONV_QUAD_MAX_K
#define MT_CONV_QUAD_MAX_K 64
#endif
#ifndef MT_CONV_ROWS_MAX
#define MT_CONV_ROWS_MAX 512 /* bytes of zero-padded weight rows (first_conv: 16 x 28) */
#endif
/* Dense conv with k_n = kh * kw * in_c <= MT_CONV_QUAD_MAX_K (first_conv: 27), four output pixels per pass: the
 * receptive fields are gathered padded to a multiple of 4 with the zero point, expanded like pointwise
 * inputs, and every weight row is read as n4 bytes (the last row from a zero-padded copy, or without a mask
 * all rows from a zero-padded copy for quad_rows). Returns the number of pixels done. */
static __attribute__((noinline)) int32_t conv_quads(const mt_conv_params *p, const int8_t *x, const int8_t *w,
                                                    const int32_t *bias, const float *eff, int8_t *y, uint8_t *mask)
{
    uint32_t buf[2 * MT_CONV_QUAD_MAX_K];
    int8_t field[MT_CONV_QUAD_MAX_K] __attribute__((aligned(4))), last_row[MT_CONV_QUAD_MAX_K] __attribute__((aligned(4)));
    int8_t rows[MT_CONV_ROWS_MAX] __attribute__((aligned(4)));
    const int32_t k_n = p->kh * p->kw * p->in_c, n4 = (k_n + 3) & ~3, n_pix = p->out_h * p->out_w;
    const int32_t neg_zero = pack_neg_zero(p->x_zero), out_c = p->out_c;
    for (int32_t k = 0; k < n4; k++) last_row[k] = k < k_n ? w[(out_c - 1) * k_n + k] : 0;
    int16_t dead[MT_DEAD_MAX];
    const int finite = all_finite(eff, out_c), fold = finite && fold_k(n4);
    /* without a mask: every row zero-padded to n4 bytes, so quad_all_rows walks them */
    const int32_t n_dead = fold && !mask && out_c * n4 <= MT_CONV_ROWS_MAX ? unfoldable_channels(bias, out_c, dead) : -1;
    if (n_dead >= 0)
        for (int32_t o = 0; o < out_c; o++)
            for (int32_t k = 0; k < n4; k++) rows[o * n4 + k] = k < k_n ? w[o * k_n + k] : 0;
    int32_t pix = 0;
    for (; pix + 4 <= n_pix; pix += 4) {
        for (int32_t j = 0; j < 4; j++) { /* pixel j into lanes 2j, 2j + 1 of each 8-word group */
            gather_field_fast(p, x, pix + j, n4, field);
            for (int32_t g = 0; g < n4; g += 4) {
                uint32_t v = load_u32(field + g);
                buf[2 * g + 2 * j] = __sxtab16((uint32_t)neg_zero, v);
                buf[2 * g + 2 * j + 1] = sxtab16_ror8((uint32_t)neg_zero, v);
            }
        }
        if (n_dead >= 0) {
            quad_all_rows(buf, rows, n4, bias, eff, out_c, p->y_zero, y + pix * out_c, dead, n_dead);
            continue;
        }
        quad_outputs_apart(buf, w, k_n, n4, n4 > k_n ? last_row : NULL, bias, eff, out_c, p->y_zero, pix, y, mask,
                           finite, fold);
    }
    return pix;
}

/* Dense conv one output pixel at a time from pixel `first` on, through an int16 patch per pixel. */
static __attribute__((noinline)) void conv_patches(const mt_conv_params *p, const int8_t *x, const int8_t *w,
                                                   const int32_t *bias, const float *eff, int8_t *y, uint8_t *mask,
                                                   int32_t first)
{
    const int32_t in_c = p->in_c, kw = p->kw, k_n = p->kh * p->kw * p->in_c, k4 = k_n & ~3;
    int16_t patch[MT_SIMD_PATCH_MAX] __attribute__((aligned(4)));
    for (int32_t oy = first / p->out_w; oy < p->out_h; oy++) {
        for (int32_t ox = (oy == first / p->out_w) ? first % p->out_w : 0; ox < p->out_w; ox++) {
            /* gather the receptive field in weight order (ky, kx, ci), padding as 0 */
            int32_t k = 0;
            for (int32_t ky = 0; ky < p->kh; ky++) {
                int32_t iy = oy * p->stride - p->pad + ky;
                for (int32_t kx = 0; kx < kw; kx++) {
                    int32_t ix = ox * p->stride - p->pad + kx;
                    if (iy < 0 || iy >= p->in_h || ix < 0 || ix >= p->in_w) {
                        for (int32_t ci = 0; ci < in_c; ci++, k++) patch[patch_slot(k, k4)] = 0;
                    } else {
                        const int8_t *xp = x + (iy * p->in_w + ix) * in_c;
                        for (int32_t ci = 0; ci < in_c; ci++, k++)
                            patch[patch_slot(k, k4)] = (int16_t)((int32_t)xp[ci] - p->x_zero);
                    }
                }
            }
            int32_t base = (oy * p->out_w + ox) * p->out_c, o = 0;
            for (; o + 4 <= p->out_c; o += 4) {
                int32_t acc[4];
                dot4_patch(patch, w + o * k_n, k_n, acc);
                for (int32_t j = 0; j < 4; j++)
                    store_out(y, mask, base + o + j, acc[j], bias[o + j], eff[o + j], p->y_zero);
            }
            for (; o < p->out_c; o++)
                store_out(y, mask, base + o, dot_patch(patch, w + o * k_n, k_n), bias[o], eff[o], p->y_zero);
        }
    }
}

/* Dense conv (first_conv: 3x3x3, k_n 27) through pointwise_wtab's loop: receptive fields padded with the zero
 * point to k4 = k_n rounded up to 4 (16 <= k4 <= 48), gathered MT_WTAB_CHUNK pixels at a time into the words of
 * the table array after the weights, then read as pointwise inputs of k4 channels (k4 % 8 == 4: wtab_rows_half,
 * a last half group; first_conv 28 lanes, not 32: 2.43 M against 2.57 M instructions on the mcunet-5fps step).
 * Unfolded biases (dead channels) ride in the quad headers (WTAB_HEAD_FB). Without a mask, out_c % 4 == 0,
 * finite multipliers and outputs within int16 reach only. Chunks of 8 pixels (first_conv's four quads of 64 or
 * 68 words and eight 28-byte fields fit the table array; 2.27 M against 2.35 M with chunks of 4). */
#define MT_WTAB_CHUNK 8
/* The receptive fields of n output pixels from pix on, k8 (here k4) bytes apart: a window inside the input a kernel row
 * (kw * in_c >= 4 contiguous bytes) at a time in word copies, the last one overlapping its predecessor (no
 * byte loop, nothing read past the row), bytes k_n..k8 untouched (set once by the caller: their weights are
 * zero); a border window as the zero point and the valid part of each valid kernel row. */
/* m receptive fields of 3x3 windows of 3 channels (first convs) inside the input, consecutive in an output row
 * (x0: the first one's top left, step bytes apart in the input, k4 in fields): nine word copies each. */
static void gather_stem_run(const int8_t *x0, int32_t x_row, int32_t step, int32_t m, int32_t k4, int8_t *f)
{
    for (; m > 0; m--, x0 += step, f += k4) {
        const int8_t *x1 = x0 + x_row, *x2 = x1 + x_row;
        const uint32_t a0 = load_u32(x0), a1 = load_u32(x0 + 4), a2 = load_u32(x0 + 5);
        const uint32_t b0 = load_u32(x1), b1 = load_u32(x1 + 4), b2 = load_u32(x1 + 5);
        const uint32_t c0 = load_u32(x2), c1 = load_u32(x2 + 4), c2 = load_u32(x2 + 5);
        __builtin_memcpy(f, &a0, 4), __builtin_memcpy(f + 4, &a1, 4);
        __builtin_memcpy(f + 5, &a2, 4), __builtin_memcpy(f + 9, &b0, 4);
        __builtin_memcpy(f + 13, &b1, 4), __builtin_memcpy(f + 14, &b2, 4);
        __builtin_memcpy(f + 18, &c0, 4), __builtin_memcpy(f + 22, &c1, 4);
        __builtin_memcpy(f + 23, &c2, 4);
    }
}

static void gather_fields(const mt_conv_params *p, const int8_t *x, int32_t pix, int32_t n, int32_t k8,
                          int8_t *fields)
{
    const int32_t row = p->kw * p->in_c, last = row - 4, x_row = p->in_w * p->in_c, kh = p->kh;
    int32_t oy = pix / p->out_w, ox = pix - oy * p->out_w;
    /* the last output column whose window ends inside the input */
    const int32_t ox_in = (p->in_w - p->kw + p->pad) / p->stride;
    for (int32_t j = 0; j < n; j++, fields += k8) {
        const int32_t iy0 = oy * p->stride - p->pad, ix0 = ox * p->stride - p->pad;
        const int inside = iy0 >= 0 && ix0 >= 0 && iy0 + kh <= p->in_h && ix0 + p->kw <= p->in_w;
        if (inside && row == 9 && kh == 3) {
            /* the run of inside windows in this output row, up to the chunk's end */
            int32_t m = ox_in - ox + 1;
            m = m < n - j ? m : n - j;
            gather_stem_run(x + (iy0 * p->in_w + ix0) * 3, x_row, p->stride * 3, m, k8, fields);
            j += m - 1, fields += (m - 1) * k8, ox += m - 1;
        } else if (!inside) {
            /* the zero point everywhere, then the valid part of each valid kernel row */
            const uint32_t zz = (uint32_t)(uint8_t)p->x_zero * 0x01010101u;
            for (int32_t k = 0; k < k8; k += 4) __builtin_memcpy(fields + k, &zz, 4);
            const int32_t ky0 = iy0 < 0 ? -iy0 : 0, ky1 = iy0 + kh > p->in_h ? p->in_h - iy0 : kh;
            const int32_t kx0 = ix0 < 0 ? -ix0 : 0, kx1 = ix0 + p->kw > p->in_w ? p->in_w - ix0 : p->kw;
            for (int32_t ky = ky0; ky < ky1; ky++) {
                const int8_t *xr = x + ((iy0 + ky) * p->in_w + ix0 + kx0) * p->in_c;
                int8_t *f = fields + (ky * p->kw + kx0) * p->in_c;
                for (int32_t i = 0; i < (kx1 - kx0) * p->in_c; i++) f[i] = xr[i];
            }
        } else {
            const int8_t *xr = x + (iy0 * p->in_w + ix0) * p->in_c;
            int8_t *f = fields;
            for (int32_t ky = 0; ky < kh; ky++, xr += x_row, f += row) {
                for (int32_t i = 0; i < last; i += 4) {
                    const uint32_t v = load_u32(xr + i);
                    __builtin_memcpy(f + i, &v, 4);
                }
                const uint32_t v = load_u32(xr + last);
                __builtin_memcpy(f + last, &v, 4);
            }
        }
        if (++ox == p->out_w) ox = 0, oy++;
    }
}

static inline int conv_wtab_shape(const mt_conv_params *p, int32_t k_n, uint8_t *mask)
{
    const int32_t k4 = (k_n + 3) & ~3;
    return !mask && k4 >= 16 && k4 <= MT_WTAB_MAX_IN && p->kw * p->in_c >= 4 && p->out_c % 4 == 0 &&
           p->out_h * p->out_w >= 64;
}

static __attribute__((noinline)) void conv_wtab(const mt_conv_params *p, const int8_t *x, const int8_t *w,
                                                const int32_t *bias, const float *eff, int8_t *y)
{
    uint32_t tab[MT_WTAB_WORDS], lanes[MT_WTAB_MAX_IN / 2];
    const int32_t k_n = p->kh * p->kw * p->in_c, k4 = (k_n + 3) & ~3, out_c = p->out_c, n_pix = p->out_h * p->out_w;
    const int fb = !bias_foldable(bias, out_c, k_n);
    const int32_t quad_words = (fb ? 12 : 8) + 2 * k4, quads = out_c / 4;
    const int32_t max_quads = (MT_WTAB_WORDS - MT_WTAB_CHUNK * k4 / 4) / quad_words;
    const int32_t n_blocks = (quads + max_quads - 1) / max_quads, per_block = (quads + n_blocks - 1) / n_blocks;
    const uint32_t zero_128 = (uint32_t)(p->y_zero + 128) * 0x00010001u;
    int8_t *fields = (int8_t *)(tab + per_block * quad_words);
    for (int32_t k = 0; k < MT_WTAB_CHUNK * k4; k++) fields[k] = (int8_t)p->x_zero;
    for (int32_t q = 0; q < quads; q += per_block) {
        const int32_t n = 4 * (quads - q < per_block ? quads - q : per_block);
        wtab_table(w, k_n, k4, bias, eff, p->y_zero, 4 * q, n, fb, tab, NULL, NULL);
        for (int32_t pix = 0; pix < n_pix; pix += MT_WTAB_CHUNK) {
            const int32_t run = n_pix - pix < MT_WTAB_CHUNK ? n_pix - pix : MT_WTAB_CHUNK;
            gather_fields(p, x, pix, run, k4, fields);
            wtab_ctx ctx = {fields, k4, y + pix * out_c + 4 * q, out_c, tab, tab + n / 4 * quad_words, lanes,
                            pack_neg_zero(p->x_zero), fields + run * k4, zero_128};
            if (k4 & 4) wtab_rows_half(&ctx, k4, fb);
            else wtab_rows(&ctx, k4, fb);
        }
    }
}

void mt_conv_s8(const mt_conv_params *p, const int8_t *x, const int8_t *w, const int32_t *bias,
                const float *eff, int8_t *y, uint8_t *mask)
{
    const int32_t k_n = p->kh * p->kw * p->in_c;
    if (k_n > MT_SIMD_PATCH_MAX || p->dilation != 1) {
        mt_conv_s8_portable(p, x, w, bias, eff, y, mask);
        return;
    }
    if (conv_wtab_shape(p, k_n, mask) && all_finite(eff, p->out_c) && wtab_fits(p, k_n, bias, eff, 1)) {
        conv_wtab(p, x, w, bias, eff, y);
        return;
    }
    const int32_t first = k_n <= MT_CONV_QUAD_MAX_K ? conv_quads(p, x, w, bias, eff, y, mask) : 0;
    if (first < p->out_h * p->out_w) conv_patches(p, x, w, bias, eff, y, mask, first);
}

static inline void gather_patch(const int8_t *xp, int32_t x_zero, const int16_t *idx, int32_t n, int16_t *patch)
{
    int32_t k4 = n & ~3;
    for (int32_t k = 0; k < n; k++) patch[patch_slot(k, k4)] = (int16_t)((int32_t)xp[idx[k]] - x_zero);
}

void mt_conv_pointwise_split_s8_portable(const mt_conv_params *p, const int8_t *x, const int8_t *w_frozen,
                                         const int16_t *frozen_idx, int32_t n_frozen, const int8_t *w_train,
                                         const int16_t *train_idx, int32_t n_train, const int32_t *bias,
                                         const float *eff, int8_t *y, uint8_t *mask);

/* Split pointwise conv (sparse update), one output pixel at a time from pixel `first` on: each pixel's frozen
 * and trained input channels are gathered once into int16 patches (shifted by -x_zero), then every output
 * channel is two SMLAD dot products. */
static __attribute__((noinline)) void split_patches(const mt_conv_params *p, const int8_t *x, const int8_t *w_frozen,
                                                    const int16_t *frozen_idx, int32_t n_frozen, const int8_t *w_train,
                                                    const int16_t *train_idx, int32_t n_train, const int32_t *bias,
                                                    const float *eff, int8_t *y, uint8_t *mask, int32_t first)
{
    int16_t patch[MT_SIMD_PATCH_MAX + 4] __attribute__((aligned(4)));
    /* the trained patch starts on a 4-lane boundary so its pairs stay word-aligned */
    const int32_t train_at = (n_frozen + 3) & ~3;
    for (int32_t pix = first; pix < p->out_h * p->out_w; pix++) {
        const int8_t *xp = pixel_in(p, x, pix);
        int32_t base = pix * p->out_c;
        gather_patch(xp, p->x_zero, frozen_idx, n_frozen, patch);
        gather_patch(xp, p->x_zero, train_idx, n_train, patch + train_at);
        int32_t o = 0;
        for (; o + 4 <= p->out_c; o += 4) {
            int32_t af[4], at[4];
            dot4_patch(patch, w_frozen + o * n_frozen, n_frozen, af);
            dot4_patch(patch + train_at, w_train + o * n_train, n_train, at);
            for (int32_t j = 0; j < 4; j++)
                store_out(y, mask, base + o + j, af[j] + at[j], bias[o + j], eff[o + j], p->y_zero);
        }
        for (; o < p->out_c; o++) {
            int32_t acc = dot_patch(patch, w_frozen + o * n_frozen, n_frozen) +
                          dot_patch(patch + train_at, w_train + o * n_train, n_train);
            store_out(y, mask, base + o, acc, bias[o], eff[o], p->y_zero);
        }
    }
}

/* Row n - 1 of a (rows, n) int8 weight copied and zero-padded to n4 bytes. */
static void padded_last_row(const int8_t *w, int32_t rows, int32_t n, int32_t n4, int8_t *out)
{
    for (int32_t k = 0; k < n4; k++) out[k] = k < n ? w[(rows - 1) * n + k] : 0;
}

/* split_rows' loop state: quad_rows_ctx (n: n_frozen, buf: the gathered pixels, frozen lanes then trained) and
 * the trained weight row of the current channel. */
typedef struct {
    quad_rows_ctx q;
    const int8_t *w_train; /* 68: advanced by one row per output channel */
    int32_t n_train;       /* 72 */
    const int8_t *w_frozen; /* 76: r1 (the frozen row) while the trained groups run */
} split_rows_ctx;
_Static_assert(sizeof(quad_rows_ctx) == 68, "split_rows_ctx offsets");

/* QUAD_ROWS_MAC over two weight rows per output channel: the frozen row (r1, rows contiguous) then the trained
 * one (ctx->w_train), both into the same four sums started from the bias; r12 walks on from the frozen lanes
 * into the trained ones. */
#define SPLIT_ROWS_MAC                                                                                           \
    "0:\n\t"                                                                                                     \
    "ldmia   r0, {r2, r3, r4, r5, r6, r7, r12, lr}\n\t" /* bias, eff, y, out_c, y_zero, y_end, buf, n_frozen */  \
    QUAD_INIT_BIAS                                                                                               \
    "vldmia  r3!, {s12}\n\t"                                                                                     \
    "stmia   r0, {r2, r3}\n\t" QUAD_GROUPS("1", "q")                                                              \
    "ldrd    r2, lr, [r0, #68]\n\t" /* w_train, n_train */                                                        \
    "str     r1, [r0, #76]\n\t"                                                                                  \
    "mov     r1, r2\n\t" QUAD_GROUPS("4", "r")                                                                    \
    "str     r1, [r0, #68]\n\t"                                                                                  \
    "ldr     r1, [r0, #76]\n\t"

/* All output channels of four gathered pixels of a split pointwise conv (both blocks whole groups of 4, no
 * padding; with a mask out_c % 8 == 0) in one asm loop, SPLIT_ROWS_MAC then quad_rows' requantisation (and clamp
 * bits); channels whose bias cannot be folded are redone apart. */
static __attribute__((noinline)) void split_rows(const uint32_t *buf, const int8_t *w_frozen, int32_t n_frozen,
                                                 const int8_t *w_train, int32_t n_train, const int32_t *bias,
                                                 const float *eff, int32_t out_c, int32_t y_zero, int32_t pix,
                                                 int8_t *y, uint8_t *mask, const int16_t *dead, int32_t n_dead)
{
    int8_t *yo = y + pix * out_c;
    split_rows_ctx ctx = {{bias, eff, yo, out_c, y_zero, yo + out_c, buf, n_frozen, 0, out_c >> 3,
                           mask ? mask + ((pix * out_c) >> 3) : NULL, {0, 0, 0, 0}, 0, NULL},
                          w_train, n_train, NULL};
    {
        register split_rows_ctx *c __asm__("r0") = &ctx;
        register const int8_t *wp __asm__("r1") = w_frozen;
        if (mask) QUAD_ROWS_CALL(SPLIT_ROWS_MAC QUAD_ROWS_REQ QUAD_ROWS_TAIL_MASKED(""));
        else QUAD_ROWS_CALL(SPLIT_ROWS_MAC QUAD_ROWS_REQ QUAD_ROWS_TAIL(""));
    }
    for (int32_t k = 0; k < n_dead; k++) {
        const int32_t d = dead[k];
        quad_acc s = quad_mac(buf, w_frozen + d * n_frozen, n_frozen, (quad_acc){0, 0, 0, 0});
        s = quad_mac(buf + 2 * n_frozen, w_train + d * n_train, n_train, s);
        quad_finish(s, bias[d], eff[d], y_zero, y, mask, pix * out_c + d, out_c, 1, 0);
    }
}

/* Channels idx[0..n) of one pixel xp (n % 4 == 0), four at a time packed into a word and expanded as expand_quad's
 * pixel: to out[0], out[1], then 8 words on. */
static inline void gather_expand(const int8_t *xp, const int16_t *idx, int32_t n, int32_t neg_zero, uint32_t *out)
{
    const uint8_t *xu = (const uint8_t *)xp;
    for (const int16_t *end = idx + n; idx != end; idx += 4, out += 8) {
        const uint32_t v = (uint32_t)xu[idx[0]] | (uint32_t)xu[idx[1]] << 8 | (uint32_t)xu[idx[2]] << 16 |
                           (uint32_t)xu[idx[3]] << 24;
        out[0] = __sxtab16((uint32_t)neg_zero, v);
        out[1] = sxtab16_ror8((uint32_t)neg_zero, v);
    }
}

/* Split pointwise conv, four pixels per pass (nf4 + nt4 <= MT_QUAD_MAX_K, the channel counts rounded up to
 * 4): each pixel's frozen then trained channels are gathered into an int8 field, each block padded to a
 * multiple of 4 with the zero point (value 0), and expanded like pointwise inputs (whole groups: gather_expand);
 * every output channel is then two quad_mac passes into the same sums. Returns the number of pixels done. */
static __attribute__((noinline)) int32_t split_quads(const mt_conv_params *p, const int8_t *x, const int8_t *w_frozen,
                                                     const int16_t *frozen_idx, int32_t n_frozen,
                                                     const int8_t *w_train, const int16_t *train_idx, int32_t n_train,
                                                     const int32_t *bias, const float *eff, int8_t *y, uint8_t *mask)
{
    uint32_t buf[2 * MT_QUAD_MAX_K];
    int8_t field[MT_QUAD_MAX_K] __attribute__((aligned(4)));
    int8_t last_f[MT_QUAD_MAX_K] __attribute__((aligned(4))), last_t[MT_QUAD_MAX_K] __attribute__((aligned(4)));
    const int32_t out_c = p->out_c, y_zero = p->y_zero, n_pix = p->out_h * p->out_w;
    const int32_t nf4 = (n_frozen + 3) & ~3, nt4 = (n_train + 3) & ~3, neg_zero = pack_neg_zero(p->x_zero);
    const int8_t zero = (int8_t)p->x_zero;
    const int finite = all_finite(eff, out_c), fold = finite && fold_k(nf4 + nt4);
    int16_t dead[MT_DEAD_MAX];
    /* both blocks whole groups of 4 channels, every bias folded or listed: the asm channel loop (split_rows) */
    const int32_t n_dead = fold && nf4 == n_frozen && nt4 == n_train && n_frozen && n_train
                               ? unfoldable_channels(bias, out_c, dead) : -1;
    const int rows = n_dead >= 0 && (!mask || (out_c & 7) == 0);
    padded_last_row(w_frozen, out_c, n_frozen, nf4, last_f);
    padded_last_row(w_train, out_c, n_train, nt4, last_t);
    const int whole = nf4 == n_frozen && nt4 == n_train;
    int32_t pix = 0;
    for (; pix + 4 <= n_pix; pix += 4) {
        for (int32_t j = 0; j < 4 && whole; j++) { /* both blocks whole groups: each word built directly */
            const int8_t *xp = pixel_in(p, x, pix + j);
            gather_expand(xp, frozen_idx, n_frozen, neg_zero, buf + 2 * j);
            gather_expand(xp, train_idx, n_train, neg_zero, buf + 2 * (nf4 + j));
        }
        for (int32_t j = 0; j < 4 && !whole; j++) { /* pixel j into lanes 2j, 2j + 1 of each 8-word group */
            const int8_t *xp = pixel_in(p, x, pix + j);
            int32_t k = 0;
            for (int32_t i = 0; i < n_frozen; i++) field[k++] = xp[frozen_idx[i]];
            while (k < nf4) field[k++] = zero;
            for (int32_t i = 0; i < n_train; i++) field[k++] = xp[train_idx[i]];
            while (k < nf4 + nt4) field[k++] = zero;
            for (int32_t g = 0; g < nf4 + nt4; g += 4) {
                uint32_t v = load_u32(field + g);
                buf[2 * g + 2 * j] = __sxtab16((uint32_t)neg_zero, v);
                buf[2 * g + 2 * j + 1] = sxtab16_ror8((uint32_t)neg_zero, v);
            }
        }
        if (rows) {
            split_rows(buf, w_frozen, n_frozen, w_train, n_train, bias, eff, out_c, y_zero, pix, y, mask, dead, n_dead);
            continue;
        }
        for (int32_t o = 0; o < out_c; o++) {
            const int last = o == out_c - 1;
            const int f = fold && fold_one(bias[o]);
            const int32_t b = f ? bias[o] : 0;
            quad_acc s = {b, b, b, b};
            if (nf4) s = quad_mac(buf, (last && nf4 > n_frozen) ? last_f : w_frozen + o * n_frozen, nf4, s);
            if (nt4) s = quad_mac(buf + 2 * nf4, (last && nt4 > n_train) ? last_t : w_train + o * n_train, nt4, s);
            quad_finish(s, bias[o], eff[o], y_zero, y, mask, pix * out_c + o, out_c, finite, f);
        }
    }
    return pix;
}

/* The two index lists of a split weight name every input channel exactly once (in_c <= MT_WTAB_MAX_IN). */
static int split_partition(const split_weight *s, int32_t in_c)
{
    if (in_c > MT_WTAB_MAX_IN || s->n_frozen + s->n_train != in_c) return 0;
    uint64_t seen = 0;
    for (int32_t i = 0; i < s->n_frozen; i++) seen |= (uint64_t)1 << (s->frozen_idx[i] & 63);
    for (int32_t i = 0; i < s->n_train; i++) seen |= (uint64_t)1 << (s->train_idx[i] & 63);
    int ok = 1;
    for (int32_t i = 0; i < s->n_frozen; i++) ok &= s->frozen_idx[i] >= 0 && s->frozen_idx[i] < in_c;
    for (int32_t i = 0; i < s->n_train; i++) ok &= s->train_idx[i] >= 0 && s->train_idx[i] < in_c;
    return ok && seen == ((uint64_t)1 << in_c) - 1;
}

/* Pointwise conv with the weight split by input channel (sparse update): whole-weight tables (pointwise_wtab)
 * when the two index lists partition the input channels, else split_quads when both gathered
 * blocks fit its buffer, then split_patches for the rest. The integer accumulator is the same exact sum as
 * the portable kernel's. */
void mt_conv_pointwise_split_s8(const mt_conv_params *p, const int8_t *x, const int8_t *w_frozen,
                                const int16_t *frozen_idx, int32_t n_frozen, const int8_t *w_train,
                                const int16_t *train_idx, int32_t n_train, const int32_t *bias,
                                const float *eff, int8_t *y, uint8_t *mask)
{
    const split_weight split = {w_frozen, w_train, frozen_idx, train_idx, n_frozen, n_train};
    if (split_partition(&split, p->in_c) && wtab_shape(p, x) && wtab_takes(p, bias, eff, mask, 1)) {
        pointwise_wtab(p, x, NULL, bias, eff, y, mask, &split);
        return;
    }
    if (((n_frozen + 3) & ~3) + n_train > MT_SIMD_PATCH_MAX) {
        mt_conv_pointwise_split_s8_portable(p, x, w_frozen, frozen_idx, n_frozen, w_train, train_idx, n_train, bias,
                                            eff, y, mask);
        return;
    }
    int32_t first = 0;
    if (((n_frozen + 3) & ~3) + ((n_train + 3) & ~3) <= MT_QUAD_MAX_K)
        first = split_quads(p, x, w_frozen, frozen_idx, n_frozen, w_train, train_idx, n_train, bias, eff, y, mask);
    if (first < p->out_h * p->out_w)
        split_patches(p, x, w_frozen, frozen_idx, n_frozen, w_train, train_idx, n_train, bias, eff, y, mask, first);
}

/* Depthwise conv, four channels at a time: their weights are unpacked once per call into int16 lanes, next to
 * each tap's input offset from the window's top-left corner; then every output pixel runs one flat loop over
 * its window's taps (border pixels: one per valid kernel row). Kernels with more than MT_DW_MAX_TAPS taps use
 * the portable kernel. */
#ifndef MT_DW_MAX_TAPS
#define MT_DW_MAX_TAPS 49
#endif
typedef struct {
    int32_t x;        /* input offset from the window's top-left corner */
    uint32_t w02, w13; /* weights of channels (c, c+2) and (c+1, c+3) as int16 lanes */
} dw_tap;

/* a[0..3] += taps [tp, end) of four channels whose inputs start at xc, hand-scheduled so the accumulators stay
 * in registers (per tap: 1 LDM of offset and weights, 1 load, 2 unpack, 4 MACs, 2 loop). LDM fills its
 * registers in ascending number order, hence the three pinned registers. */
static inline void dw_taps4_asm(const int8_t *xc, int32_t neg_zero, const dw_tap *tp, const dw_tap *end,
                                int32_t *a)
{
    register uint32_t xo __asm__("r8"), wl __asm__("r9"), wh __asm__("r10");
    int32_t a0 = a[0], a1 = a[1], a2 = a[2], a3 = a[3];
    uint32_t xv;
    __asm__ volatile(
        "1:\n\t"
        "ldmia   %[tp]!, {%[xo], %[wl], %[wh]}\n\t"
        "ldr     %[xv], [%[xc], %[xo]]\n\t"
        "sxtab16 %[xo], %[nz], %[xv]\n\t"
        "sxtab16 %[xv], %[nz], %[xv], ror #8\n\t"
        "smlabb  %[a0], %[xo], %[wl], %[a0]\n\t"
        "smlatt  %[a2], %[xo], %[wl], %[a2]\n\t"
        "smlabb  %[a1], %[xv], %[wh], %[a1]\n\t"
        "smlatt  %[a3], %[xv], %[wh], %[a3]\n\t"
        "cmp     %[tp], %[end]\n\t"
        "bne     1b\n\t"
        : [tp] "+r"(tp), [a0] "+r"(a0), [a1] "+r"(a1), [a2] "+r"(a2), [a3] "+r"(a3), [xo] "=&r"(xo),
          [wl] "=&r"(wl), [wh] "=&r"(wh), [xv] "=&r"(xv)
        : [xc] "r"(xc), [nz] "r"(neg_zero), [end] "r"(end), "m"(*(const dw_tap(*)[])tp), "m"(*(const int8_t(*)[])xc)
        : "cc"); /* the memory read is declared (no "memory" clobber), so a[] can stay in registers */
    a[0] = a0, a[1] = a1, a[2] = a2, a[3] = a3;
}

void mt_conv_depthwise_s8_portable(const mt_conv_params *p, const int8_t *x, const int8_t *w, const int32_t *bias,
                                   const float *eff, int8_t *y, uint8_t *mask);

/* Bias folding per channel: a channel whose |bias| <= 2^24 starts its sum from the bias and requantises with
 * a float bias of 0 ((float)sum + 0.0f is (float)sum); the others (dead channels: INT32_MIN and the like)
 * start from 0 and keep their bias for the requantisation. b: starting sums, rb: remaining biases. */
static inline void fold_biases(const int32_t *bias, int32_t k, int32_t *b, int32_t *rb)
{
    for (int32_t j = 0; j < 4; j++) {
        const int fold = bias_foldable(bias + j, 1, k);
        b[j] = fold ? bias[j] : 0, rb[j] = fold ? 0 : bias[j];
    }
}

/* Outputs y[i..i+3] of channels c..c+3 from their sums acc (see fold_biases) for finite multipliers (no NaN:
 * store_out's result and clamp bit, from requant_finite's steps). With a mask and i % 4 == 0 (c_n % 4 == 0)
 * the four clamp bits share one nibble of a byte: one read-modify-write. */
static inline __attribute__((always_inline)) void dw_out4(int8_t *y, uint8_t *mask, int32_t i, const int32_t *acc,
                                                          const float *fb, const float *e, int32_t y_zero)
{
    /* written out: gcc -O2 keeps loops of 4 here, with the sums and biases spilled to the stack */
    if (!mask) {
        y[i] = requant_finite(acc[0], fb[0], e[0], y_zero);
        y[i + 1] = requant_finite(acc[1], fb[1], e[1], y_zero);
        y[i + 2] = requant_finite(acc[2], fb[2], e[2], y_zero);
        y[i + 3] = requant_finite(acc[3], fb[3], e[3], y_zero);
        return;
    }
    const int32_t v0 = __qadd(rint_s32(((float)acc[0] + fb[0]) * e[0]), y_zero), q0 = __ssat(v0, 8);
    const int32_t v1 = __qadd(rint_s32(((float)acc[1] + fb[1]) * e[1]), y_zero), q1 = __ssat(v1, 8);
    const int32_t v2 = __qadd(rint_s32(((float)acc[2] + fb[2]) * e[2]), y_zero), q2 = __ssat(v2, 8);
    const int32_t v3 = __qadd(rint_s32(((float)acc[3] + fb[3]) * e[3]), y_zero), q3 = __ssat(v3, 8);
    y[i] = (int8_t)q0, y[i + 1] = (int8_t)q1, y[i + 2] = (int8_t)q2, y[i + 3] = (int8_t)q3;
    const uint32_t ok = (uint32_t)(q0 == v0) | (uint32_t)(q1 == v1) << 1 | (uint32_t)(q2 == v2) << 2 |
                        (uint32_t)(q3 == v3) << 3;
    if ((i & 3) == 0) {
        const uint32_t sh = (uint32_t)i & 7u;
        mask[i >> 3] = (uint8_t)((mask[i >> 3] & ~(0xFu << sh)) | (ok << sh));
        return;
    }
    for (int32_t j = 0; j < 4; j++) {
        const int32_t k = i + j;
        mask[k >> 3] = (uint8_t)((mask[k >> 3] & ~(1u << (k & 7))) | (((ok >> j) & 1u) << (k & 7)));
    }
}

/* Output positions o (one axis) whose window o * stride - pad .. + k - 1 lies inside 0 .. n_in - 1:
 * lo <= o < hi (lo >= hi: none). */
static void inside_range(int32_t pad, int32_t stride, int32_t k, int32_t n_in, int32_t n_out, int32_t *lo,
                         int32_t *hi)
{
    *lo = (pad + stride - 1) / stride;
    *hi = n_in - k + pad >= 0 ? (n_in - k + pad) / stride + 1 : 0;
    if (*hi > n_out) *hi = n_out;
}

/* dw_rows: a run of interior pixels for one block of four channels, all in one asm loop (multipliers finite,
 * the four biases folded, no mask): per pixel the four sums start from the biases, run over the tap list
 * (DW_TAP: 8 instructions per tap, two taps per loop pass) and are requantised like QUAD_STORE with the
 * four multipliers kept in s12-s15 for the whole run. */
typedef struct {
    int32_t b[4];                 /* 0: the sums' starting values (the folded biases) */
    const dw_tap *taps, *end;     /* 16, 20 */
    const int8_t *xc;             /* 24: the first pixel's window, channel c */
    int32_t x_step, c_n, y_zero;  /* 28, 32, 36 */
    int8_t *y_end;                /* 40: y after the run */
    int32_t neg_zero;             /* 44 */
    float e[4];                   /* 48 */
    int8_t *y;                    /* 64: the first pixel's output, channel c */
    uint8_t *mask;                /* 68: dw_rows_masked: the clamp mask of the output tensor y0 */
    const int8_t *y0;             /* 72 */
} dw_rows_ctx;

/* One tap of four channels: r1 the tap list, r3 the window, r4 -x_zero in both lanes, r9-r12 the sums. */
#define DW_TAP                                                                                                   \
    "ldmia   r1!, {r5, r6, r7}\n\t"                                                                              \
    "ldr     r8, [r3, r5]\n\t"                                                                                   \
    "sxtab16 r5, r4, r8\n\t"                                                                                     \
    "sxtab16 r8, r4, r8, ror #8\n\t"                                                                             \
    "smlabb  r9, r5, r6, r9\n\t"                                                                                 \
    "smlatt  r11, r5, r6, r11\n\t"                                                                               \
    "smlabb  r10, r8, r7, r10\n\t"                                                                               \
    "smlatt  r12, r8, r7, r12\n\t"

/* The tap loop of DW_ROWS_ASM: two taps per pass (ODD: an odd number of taps, one before the pairs), or a
 * window of 9, 25 or 49 taps written out (DW_TAPS_*: no loop test). */
#define DW_TAPS_LOOP(ODD) ODD "1:\n\t" DW_TAP DW_TAP "cmp     r1, r2\n\t" "bne     1b\n\t" "2:\n\t"
#define DW_TAPS_3 DW_TAP DW_TAP DW_TAP
#define DW_TAPS_9 DW_TAPS_3 DW_TAPS_3 DW_TAPS_3
#define DW_TAPS_5 DW_TAP DW_TAP DW_TAP DW_TAP DW_TAP
#define DW_TAPS_25 DW_TAPS_5 DW_TAPS_5 DW_TAPS_5 DW_TAPS_5 DW_TAPS_5
#define DW_TAPS_7 DW_TAP DW_TAP DW_TAP DW_TAP DW_TAP DW_TAP DW_TAP
#define DW_TAPS_49 DW_TAPS_7 DW_TAPS_7 DW_TAPS_7 DW_TAPS_7 DW_TAPS_7 DW_TAPS_7 DW_TAPS_7
/* dw_rows' stores (r9-r12 the rint values, r7 from y_zero's field, lr the pixel's output): a byte at a time after
 * QADD and SSAT (with the clamp bits MASK_BITS, MASK_STORE: DW_ROWS_MASK_* or ""), or packed (PACKED_STORE4;
 * r7: y_zero + 128 in both int16 lanes). */
#define DW_STORE_S8(MASK_BITS, MASK_STORE)                                                                       \
    "qadd    r9, r9, r7\n\t"                                                                                     \
    "qadd    r10, r10, r7\n\t"                                                                                   \
    "qadd    r11, r11, r7\n\t"                                                                                   \
    "qadd    r12, r12, r7\n\t" MASK_BITS                                                                          \
    "ssat    r9, #8, r9\n\t"                                                                                     \
    "ssat    r10, #8, r10\n\t"                                                                                   \
    "ssat    r11, #8, r11\n\t"                                                                                   \
    "ssat    r12, #8, r12\n\t"                                                                                   \
    "strb    r9, [lr]\n\t"                                                                                       \
    "strb    r10, [lr, #1]\n\t"                                                                                  \
    "strb    r11, [lr, #2]\n\t"                                                                                  \
    "strb    r12, [lr, #3]\n\t" MASK_STORE
#define DW_STORE_PACKED PACKED_STORE4("r9", "r10", "r11", "r12", "r7", "[lr]")
/* TAPS: DW_TAPS_LOOP(...) or DW_TAPS_n; STORE: DW_STORE_S8(mask bits, mask store), DW_STORE_PACKED. */
#define DW_ROWS_ASM(TAPS, STORE)                                                                                \
    "ldr     r4, [r0, #44]\n\t"                                                                                  \
    "ldr     r3, [r0, #24]\n\t"                                                                                  \
    "ldr     lr, [r0, #64]\n\t"                                                                                  \
    "add     r1, r0, #48\n\t"                                                                                    \
    "vldmia  r1, {s12-s15}\n\t"                                                                                  \
    "0:\n\t"                                                                                                     \
    "ldmia   r0, {r9, r10, r11, r12}\n\t"                                                                        \
    "ldrd    r1, r2, [r0, #16]\n\t" TAPS                                                                         \
    "add     r8, r0, #28\n\t"                                                                                    \
    "ldmia   r8, {r5, r6, r7, r8}\n\t" /* x_step, c_n, y_zero, y_end */                                          \
    "vmov    s8, s9, r9, r10\n\t"                                                                                \
    "vmov    s10, s11, r11, r12\n\t"                                                                             \
    "vcvt.f32.s32 s8, s8\n\t"                                                                                    \
    "vcvt.f32.s32 s9, s9\n\t"                                                                                    \
    "vcvt.f32.s32 s10, s10\n\t"                                                                                  \
    "vcvt.f32.s32 s11, s11\n\t"                                                                                  \
    "vmul.f32 s8, s8, s12\n\t"                                                                                   \
    "vmul.f32 s9, s9, s13\n\t"                                                                                   \
    "vmul.f32 s10, s10, s14\n\t"                                                                                 \
    "vmul.f32 s11, s11, s15\n\t"                                                                                 \
    "vcvtr.s32.f32 s8, s8\n\t"                                                                                   \
    "vcvtr.s32.f32 s9, s9\n\t"                                                                                   \
    "vcvtr.s32.f32 s10, s10\n\t"                                                                                 \
    "vcvtr.s32.f32 s11, s11\n\t"                                                                                 \
    "vmov    r9, r10, s8, s9\n\t"                                                                                \
    "vmov    r11, r12, s10, s11\n\t"                                                                             \
    STORE                                                                                                            \
    "add     lr, lr, r6\n\t"                                                                                     \
    "add     r3, r3, r5\n\t"                                                                                     \
    "cmp     lr, r8\n\t"                                                                                         \
    "bne     0b\n\t"

/* The clamp bit of a sum (RV, before SSAT) shifted into r2 from the bottom (channel 3 first: bit j = channel j),
 * then the nibble written into the mask at the pixel's output index (a multiple of 4). */
#define DW_CLAMP_BIT(RV)                                                                                         \
    "add     r7, " RV ", #128\n\t"                                                                               \
    "rsbs    r7, r7, #255\n\t"                                                                                   \
    "adc     r2, r2, r2\n\t"
#define DW_ROWS_MASK_BITS "mov     r2, #0\n\t" DW_CLAMP_BIT("r12") DW_CLAMP_BIT("r11") DW_CLAMP_BIT("r10") DW_CLAMP_BIT("r9")
#define DW_ROWS_MASK_STORE                                                                                       \
    "ldrd    r1, r7, [r0, #68]\n\t" /* mask, y0 */                                                               \
    "sub     r7, lr, r7\n\t"                                                                                     \
    "add     r1, r1, r7, lsr #3\n\t"                                                                             \
    "and     r7, r7, #7\n\t"                                                                                     \
    "ldrb    r9, [r1]\n\t"                                                                                       \
    "mov     r10, #15\n\t"                                                                                       \
    "lsl     r10, r10, r7\n\t"                                                                                   \
    "bic     r9, r9, r10\n\t"                                                                                    \
    "lsl     r2, r2, r7\n\t"                                                                                     \
    "orr     r9, r9, r2\n\t"                                                                                     \
    "strb    r9, [r1]\n\t"

#define DW_ROWS_ODD                                                                                              \
    DW_TAP "cmp     r1, r2\n\t"                                                                                  \
           "beq     2f\n\t"
#define DW_ROWS_CALL(TEXT)                                                                                       \
    __asm__ volatile(TEXT                                                                                        \
                     :                                                                                           \
                     : "r"(c)                                                                                    \
                     : "r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8", "r9", "r10", "r11", "r12", "lr", "s8", "s9",  \
                       "s10", "s11", "s12", "s13", "s14", "s15", "cc", "memory")

/* Packed stores without the QADD16 of y_zero + 128 when that is 0 (y_zero -128, the ReLU outputs): 3 instructions
 * fewer per pixel (the zero field is not loaded either). */
#define DWQ_PACKED0(A, B, C, D, DEST)                                                                            \
    "pkhbt   " A ", " A ", " C ", lsl #16\n\t" "pkhbt   " B ", " B ", " D ", lsl #16\n\t"                             \
    "usat16  " A ", #8, " A "\n\t" "usat16  " B ", #8, " B "\n\t" "orr     " A ", " A ", " B ", lsl #8\n\t"          \
    "eor     " A ", " A ", #0x80808080\n\t" "str     " A ", " DEST "\n\t"
/* The run described by ctx (at least one pixel and one tap); with ctx->mask the four clamp bits of each pixel
 * are written as a nibble (out_c % 4 == 0); packed: 1 packed stores, 2 packed stores with y_zero + 128 == 0. */
static __attribute__((noinline)) void dw_rows(const dw_rows_ctx *ctx, int packed)
{
    register const dw_rows_ctx *c __asm__("r0") = ctx;
    const int32_t n = (int32_t)(ctx->end - ctx->taps);
    if (ctx->mask) {
#define DW_MASKED DW_STORE_S8(DW_ROWS_MASK_BITS, DW_ROWS_MASK_STORE)
        if (n == 9) DW_ROWS_CALL(DW_ROWS_ASM(DW_TAPS_9, DW_MASKED));
        else if (n == 25) DW_ROWS_CALL(DW_ROWS_ASM(DW_TAPS_25, DW_MASKED));
        else if (n == 49) DW_ROWS_CALL(DW_ROWS_ASM(DW_TAPS_49, DW_MASKED));
        else if (n & 1) DW_ROWS_CALL(DW_ROWS_ASM(DW_TAPS_LOOP(DW_ROWS_ODD), DW_MASKED));
        else DW_ROWS_CALL(DW_ROWS_ASM(DW_TAPS_LOOP(""), DW_MASKED));
        return;
    }
    if (packed == 2) { /* y_zero + 128 is 0: no zero add (DWQ_PACKED0) */
#define DW_STORE_PACKED0 DWQ_PACKED0("r9", "r10", "r11", "r12", "[lr]")
        if (n == 9) DW_ROWS_CALL(DW_ROWS_ASM(DW_TAPS_9, DW_STORE_PACKED0));
        else if (n & 1) DW_ROWS_CALL(DW_ROWS_ASM(DW_TAPS_LOOP(DW_ROWS_ODD), DW_STORE_PACKED0));
        else DW_ROWS_CALL(DW_ROWS_ASM(DW_TAPS_LOOP(""), DW_STORE_PACKED0));
        return;
    }
    if (packed) {
        if (n == 9) DW_ROWS_CALL(DW_ROWS_ASM(DW_TAPS_9, DW_STORE_PACKED));
        else if (n == 25) DW_ROWS_CALL(DW_ROWS_ASM(DW_TAPS_25, DW_STORE_PACKED));
        else if (n == 49) DW_ROWS_CALL(DW_ROWS_ASM(DW_TAPS_49, DW_STORE_PACKED));
        else if (n & 1) DW_ROWS_CALL(DW_ROWS_ASM(DW_TAPS_LOOP(DW_ROWS_ODD), DW_STORE_PACKED));
        else DW_ROWS_CALL(DW_ROWS_ASM(DW_TAPS_LOOP(""), DW_STORE_PACKED));
        return;
    }
    if (n == 9) DW_ROWS_CALL(DW_ROWS_ASM(DW_TAPS_9, DW_STORE_S8("", "")));
    else if (n == 25) DW_ROWS_CALL(DW_ROWS_ASM(DW_TAPS_25, DW_STORE_S8("", "")));
    else if (n == 49) DW_ROWS_CALL(DW_ROWS_ASM(DW_TAPS_49, DW_STORE_S8("", "")));
    else if (n & 1) DW_ROWS_CALL(DW_ROWS_ASM(DW_TAPS_LOOP(DW_ROWS_ODD), DW_STORE_S8("", "")));
    else DW_ROWS_CALL(DW_ROWS_ASM(DW_TAPS_LOOP(""), DW_STORE_S8("", "")));
}

/* dw_pairs: 3x3 stride-1 windows wholly inside the input (all nine taps), no mask: two horizontally
 * adjacent output pixels per pass for one block of four channels. Pixel ox + 1's tap kx reads the input word of
 * pixel ox's tap kx + 1, so each of a kernel row's four input words is loaded and unpacked once for both pixels
 * (8 sums in r4-r11): words 1 and 2 multiply int16 lanes holding the weights of two taps of one channel (SMLAxB
 * for pixel ox, SMLAxT for pixel ox + 1). The zero point leaves the loop: the sums start from bias - x_zero *
 * (sum of the channel's nine weights), and the inputs are sign-extended by SXTB16 (same exact int32 sums). Per
 * pair 194 instructions in the loop (packed stores) against ~212 for two dw_rows pixels; blocks with unfolded
 * biases (dead channels, which dw_rows cannot take) add them after the conversion (8 more). The context is copied below sp (the weights and
 * fields addressed by sp offsets: no register left for a base). */
typedef struct {
    uint32_t w[3][12];           /* 0: per kernel row: tap 0 (w02, w13), word 1 (c t1|t0, c2, c1, c3), word 2 (same
                                    with t2|t1), tap 2 (w02, w13) */
    int32_t b[8];                /* 144: starting sums, pixel ox then ox + 1, channels c..c+3 */
    float e[4];                  /* 176 */
    const int8_t *xc;            /* 192: the pair's window, channel c */
    int8_t *y;                   /* 196: the pair's first output */
    int8_t *y_end;               /* 200: after the last pair */
    int32_t c_n;                 /* 204 */
    int32_t row_adv;             /* 208: (in_w - 1) * c_n: from a kernel row's second word to the next row */
    uint32_t zero;               /* 212: y_zero, packed stores: y_zero + 128 in both int16 lanes */
    int32_t back;                /* 216: (1 - 2 * in_w) * c_n: from the third row's second word to the next pair */
    float fb[4];                 /* 220: the biases left out of the sums (unfolded: dead channels), else 0 */
} dw_pairs_ctx;
#define DW_PAIRS_CTX_BYTES "240" /* 236 copied, sp kept 8-byte aligned */

/* kernel row R (its weights from sp + OFF): r12 the row's first word, lr c_n, r0-r3 scratch */
#define DW_PAIR_ROW(OFF0, OFF1, OFF2, OFF3, OFF4, OFF5)                                                          \
    "ldr     r0, [r12]\n\t"                                                                                      \
    "ldrd    r2, r3, [sp, #" OFF0 "]\n\t"                                                                        \
    "sxtb16  r1, r0\n\t"                                                                                         \
    "sxtb16  r0, r0, ror #8\n\t"                                                                                 \
    "smlabb  r4, r1, r2, r4\n\t"                                                                                 \
    "smlatt  r6, r1, r2, r6\n\t"                                                                                 \
    "smlabb  r5, r0, r3, r5\n\t"                                                                                 \
    "smlatt  r7, r0, r3, r7\n\t"                                                                                 \
    "ldr     r0, [r12, lr]\n\t"                                                                                  \
    DW_PAIR_MID(OFF1, OFF2)                                                                                      \
    "ldr     r0, [r12, lr, lsl #1]\n\t"                                                                          \
    DW_PAIR_MID(OFF3, OFF4)                                                                                      \
    "add     r12, r12, lr\n\t"                                                                                   \
    "ldr     r0, [r12, lr, lsl #1]\n\t"                                                                          \
    "ldrd    r2, r3, [sp, #" OFF5 "]\n\t"                                                                        \
    "sxtb16  r1, r0\n\t"                                                                                         \
    "sxtb16  r0, r0, ror #8\n\t"                                                                                 \
    "smlabb  r8, r1, r2, r8\n\t"                                                                                 \
    "smlatt  r10, r1, r2, r10\n\t"                                                                               \
    "smlabb  r9, r0, r3, r9\n\t"                                                                                 \
    "smlatt  r11, r0, r3, r11\n\t"
/* a middle word (r0): channels c, c+2 against (tap kx | tap kx-1) pairs, then c+1, c+3 */
#define DW_PAIR_MID(OFFA, OFFB)                                                                                  \
    "ldrd    r2, r3, [sp, #" OFFA "]\n\t"                                                                        \
    "sxtb16  r1, r0\n\t"                                                                                         \
    "smlabb  r4, r1, r2, r4\n\t"                                                                                 \
    "smlabt  r8, r1, r2, r8\n\t"                                                                                 \
    "smlatb  r6, r1, r3, r6\n\t"                                                                                 \
    "smlatt  r10, r1, r3, r10\n\t"                                                                               \
    "ldrd    r2, r3, [sp, #" OFFB "]\n\t"                                                                        \
    "sxtb16  r0, r0, ror #8\n\t"                                                                                 \
    "smlabb  r5, r0, r2, r5\n\t"                                                                                 \
    "smlabt  r9, r0, r2, r9\n\t"                                                                                 \
    "smlatb  r7, r0, r3, r7\n\t"                                                                                 \
    "smlatt  r11, r0, r3, r11\n\t"
#define DW_PAIR_ADV "ldr     r0, [sp, #208]\n\t" "add     r12, r12, r0\n\t"

/* dw_pairs' stores of the pair's eight rint values (r4-r11; r0 from the zero field, r1 the first output, lr c_n):
 * packed (PACKED_STORE4, zero: y_zero + 128 in both int16 lanes) or a byte at a time (zero: y_zero). */
#define DW_PAIR_STORE_PACKED                                                                                     \
    PACKED_STORE4("r4", "r5", "r6", "r7", "r0", "[r1]") PACKED_STORE4("r8", "r9", "r10", "r11", "r0", "[r1, lr]")
#define DW_PAIR_S8(RA, RB, RC, RD, DEST)                                                                         \
    "qadd    " RA ", " RA ", r0\n\t" "qadd    " RB ", " RB ", r0\n\t"                                               \
    "qadd    " RC ", " RC ", r0\n\t" "qadd    " RD ", " RD ", r0\n\t"                                               \
    "ssat    " RA ", #8, " RA "\n\t" "ssat    " RB ", #8, " RB "\n\t"                                               \
    "ssat    " RC ", #8, " RC "\n\t" "ssat    " RD ", #8, " RD "\n\t"                                               \
    "strb    " RA ", [" DEST "]\n\t" "strb    " RB ", [" DEST ", #1]\n\t"                                           \
    "strb    " RC ", [" DEST ", #2]\n\t" "strb    " RD ", [" DEST ", #3]\n\t"
#define DW_PAIR_STORE_S8 DW_PAIR_S8("r4", "r5", "r6", "r7", "r1") "add     r2, r1, lr\n\t" DW_PAIR_S8("r8", "r9", "r10", "r11", "r2")
#define DW_PAIRS_CALL(STORE, BIAS_ADD)                                                                               \
    __asm__ volatile(                                                                                                \
        "sub     sp, sp, #" DW_PAIRS_CTX_BYTES "\n\t"                                                                \
        "mov     lr, sp\n\t"                                                                                         \
        "ldmia   r0!, {r1-r12}\n\t" "stmia   lr!, {r1-r12}\n\t"                                                      \
        "ldmia   r0!, {r1-r12}\n\t" "stmia   lr!, {r1-r12}\n\t"                                                      \
        "ldmia   r0!, {r1-r12}\n\t" "stmia   lr!, {r1-r12}\n\t"                                                      \
        "ldmia   r0!, {r1-r12}\n\t" "stmia   lr!, {r1-r12}\n\t"                                                      \
        "ldmia   r0!, {r1-r11}\n\t" "stmia   lr!, {r1-r11}\n\t"                                                      \
        "add     r0, sp, #176\n\t"                                                                                   \
        "vldmia  r0, {s12-s15}\n\t"                                                                                  \
        "add     r0, sp, #220\n\t"                                                                                   \
        "vldmia  r0, {s16-s19}\n\t"                                                                                  \
        "ldr     lr, [sp, #204]\n\t"                                                                                 \
        "ldr     r12, [sp, #192]\n\t"                                                                                \
        "0:\n\t"                                                                                                     \
        "add     r0, sp, #144\n\t"                                                                                   \
        "ldmia   r0, {r4-r11}\n\t"                                                                                   \
        DW_PAIR_ROW("0", "8", "16", "24", "32", "40") DW_PAIR_ADV                                                    \
        DW_PAIR_ROW("48", "56", "64", "72", "80", "88") DW_PAIR_ADV                                                  \
        DW_PAIR_ROW("96", "104", "112", "120", "128", "136")                                                         \
        "vmov    s0, s1, r4, r5\n\t"                                                                                 \
        "vmov    s2, s3, r6, r7\n\t"                                                                                 \
        "vmov    s4, s5, r8, r9\n\t"                                                                                 \
        "vmov    s6, s7, r10, r11\n\t"                                                                               \
        "vcvt.f32.s32 s0, s0\n\t" "vcvt.f32.s32 s1, s1\n\t" "vcvt.f32.s32 s2, s2\n\t" "vcvt.f32.s32 s3, s3\n\t"      \
        "vcvt.f32.s32 s4, s4\n\t" "vcvt.f32.s32 s5, s5\n\t" "vcvt.f32.s32 s6, s6\n\t" "vcvt.f32.s32 s7, s7\n\t"      \
        BIAS_ADD                                                                                                     \
        "vmul.f32 s0, s0, s12\n\t" "vmul.f32 s1, s1, s13\n\t" "vmul.f32 s2, s2, s14\n\t" "vmul.f32 s3, s3, s15\n\t"  \
        "vmul.f32 s4, s4, s12\n\t" "vmul.f32 s5, s5, s13\n\t" "vmul.f32 s6, s6, s14\n\t" "vmul.f32 s7, s7, s15\n\t"  \
        "vcvtr.s32.f32 s0, s0\n\t" "vcvtr.s32.f32 s1, s1\n\t" "vcvtr.s32.f32 s2, s2\n\t" "vcvtr.s32.f32 s3, s3\n\t"  \
        "vcvtr.s32.f32 s4, s4\n\t" "vcvtr.s32.f32 s5, s5\n\t" "vcvtr.s32.f32 s6, s6\n\t" "vcvtr.s32.f32 s7, s7\n\t"  \
        "vmov    r4, r5, s0, s1\n\t"                                                                                 \
        "vmov    r6, r7, s2, s3\n\t"                                                                                 \
        "vmov    r8, r9, s4, s5\n\t"                                                                                 \
        "vmov    r10, r11, s6, s7\n\t"                                                                               \
        "ldr     r0, [sp, #212]\n\t"                                                                                 \
        "ldr     r1, [sp, #196]\n\t"                                                                                 \
        STORE                                                                                                        \
        "add     r1, r1, lr, lsl #1\n\t"                                                                             \
        "str     r1, [sp, #196]\n\t"                                                                                 \
        "ldr     r0, [sp, #216]\n\t"                                                                                 \
        "add     r12, r12, r0\n\t"                                                                                   \
        "ldr     r2, [sp, #200]\n\t"                                                                                 \
        "cmp     r1, r2\n\t"                                                                                         \
        "bne     0b\n\t"                                                                                             \
        "add     sp, sp, #" DW_PAIRS_CTX_BYTES "\n\t"                                                                \
        : "+r"(c)                                                                                                    \
        :                                                                                                            \
        : "r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8", "r9", "r10", "r11", "r12", "lr", "s0", "s1", "s2", "s3",   \
          "s4", "s5", "s6", "s7", "s12", "s13", "s14", "s15", "s16", "s17", "s18", "s19", "cc", "memory")

/* the unfolded biases (s16-s19) added to the converted sums */
#define DW_PAIR_BIAS_ADD                                                                                         \
    "vadd.f32 s0, s0, s16\n\t" "vadd.f32 s1, s1, s17\n\t" "vadd.f32 s2, s2, s18\n\t" "vadd.f32 s3, s3, s19\n\t" \
    "vadd.f32 s4, s4, s16\n\t" "vadd.f32 s5, s5, s17\n\t" "vadd.f32 s6, s6, s18\n\t" "vadd.f32 s7, s7, s19\n\t"

/* The pairs described by ctx (at least one); packed stores, byte stores, or byte stores with ctx->fb added. */
static __attribute__((noinline)) void dw_pairs(const dw_pairs_ctx *ctx, int packed, int unfolded)
{
    register const dw_pairs_ctx *c __asm__("r0") = ctx;
    if (unfolded) DW_PAIRS_CALL(DW_PAIR_STORE_S8, DW_PAIR_BIAS_ADD);
    else if (packed) DW_PAIRS_CALL(DW_PAIR_STORE_PACKED, "");
    else DW_PAIRS_CALL(DW_PAIR_STORE_S8, "");
}

/* dw_pairs' weights of channels c..c+3 from the block's nine unpacked taps. */
static void dw_pairs_weights(const dw_tap *taps, dw_pairs_ctx *r)
{
    for (int32_t ky = 0; ky < 3; ky++) {
        const dw_tap *t = taps + 3 * ky;
        uint32_t *o = r->w[ky];
        o[0] = t[0].w02, o[1] = t[0].w13, o[10] = t[2].w02, o[11] = t[2].w13;
        for (int32_t k = 1; k < 3; k++) { /* bottom lanes: tap k (pixel ox), top lanes: tap k-1 (pixel ox + 1) */
            uint32_t *m = o + 2 + 4 * (k - 1);
            m[0] = (t[k].w02 & 0xFFFFu) | (t[k - 1].w02 << 16), m[1] = (t[k].w02 >> 16) | (t[k - 1].w02 & 0xFFFF0000u);
            m[2] = (t[k].w13 & 0xFFFFu) | (t[k - 1].w13 << 16), m[3] = (t[k].w13 >> 16) | (t[k - 1].w13 & 0xFFFF0000u);
        }
    }
}

/* dw_pairs where it measured a gain (mcunet-5fps step, Cortex-M7): runs of at least 12 inside columns (maps of
 * 16x16 and more: 0.94-0.97x the instructions of dw_rows); on 8x8 maps (6 columns) the per-block setup outweighs
 * the 16 instructions saved per pair (1.04x). */
#ifndef MT_DW_PAIRS_MIN_RUN
#define MT_DW_PAIRS_MIN_RUN 12
#endif
static inline int dw_pairs_shape(const mt_conv_params *p, const uint8_t *mask, int32_t run)
{
    return !mask && p->kh == 3 && p->kw == 3 && p->stride == 1 && run >= MT_DW_PAIRS_MIN_RUN;
}

/* dw_pairs' context for channels c..c+3 from dw_rows' (starting sums b, multipliers e, zero: the store's zero
 * field); the pointers are set per run. */
static void dw_pairs_setup(const dw_tap *taps, const int32_t *b, const float *fb, const float *e,
                           const mt_conv_params *p, int32_t zero, dw_pairs_ctx *r)
{
    dw_pairs_weights(taps, r);
    for (int32_t j = 0; j < 4; j++) { /* the zero point's share of the sums: x_zero * (sum of the nine weights) */
        int32_t sw = 0;
        for (int32_t t = 0; t < 9; t++) {
            const uint32_t v = (j & 1) ? taps[t].w13 : taps[t].w02;
            sw += (int16_t)(j & 2 ? v >> 16 : v & 0xFFFFu);
        }
        r->b[j] = r->b[j + 4] = b[j] - p->x_zero * sw;
        r->e[j] = e[j], r->fb[j] = fb[j];
    }
    r->c_n = p->out_c, r->row_adv = (p->in_w - 1) * p->out_c, r->zero = (uint32_t)zero;
    r->back = (1 - 2 * p->in_w) * p->out_c;
}

/* n consecutive interior pixels of one output row, channels c..c+3, finite multipliers: inputs advance by
 * x_step, outputs (index i) by c_n. */
static __attribute__((noinline)) void dw_run(const int8_t *xc, int32_t x_step, int8_t *y, uint8_t *mask, int32_t i,
                                             int32_t c_n, int32_t n, const dw_tap *taps, const dw_tap *end,
                                             int32_t neg_zero, const int32_t *b, const float *fb, const float *e,
                                             int32_t y_zero)
{
    const int32_t b0 = b[0], b1 = b[1], b2 = b[2], b3 = b[3];
    const float e0 = e[0], e1 = e[1], e2 = e[2], e3 = e[3], f0 = fb[0], f1 = fb[1], f2 = fb[2], f3 = fb[3];
    if (mask) {
        for (; n > 0; n--, i += c_n, xc += x_step) {
            int32_t acc[4] = {b0, b1, b2, b3};
            dw_taps4_asm(xc, neg_zero, taps, end, acc);
            dw_out4(y, mask, i, acc, fb, e, y_zero);
        }
        return;
    }
    for (int8_t *yp = y + i, *yend = y + i + n * c_n; yp != yend; yp += c_n, xc += x_step) {
        int32_t acc[4] = {b0, b1, b2, b3};
        dw_taps4_asm(xc, neg_zero, taps, end, acc);
        yp[0] = requant_finite(acc[0], f0, e0, y_zero);
        yp[1] = requant_finite(acc[1], f1, e1, y_zero);
        yp[2] = requant_finite(acc[2], f2, e2, y_zero);
        yp[3] = requant_finite(acc[3], f3, e3, y_zero);
    }
}

/* dw_block_inside's rows of inside columns for channels c..c+3 when dw_pairs_shape holds (no mask): whole windows
 * by dw_pairs, the odd last pixel and the top and bottom rows by dw_rows (r: its context, folded biases) or, with
 * biases left unfolded (r NULL: starting sums b, float biases fb), by dw_run. ctx: dw_pairs' context, in the
 * caller's frame (its border-column buffer) to keep the stack shallow. */
static __attribute__((noinline)) void dw_pairs_rows(const mt_conv_params *p, const int8_t *x, const dw_tap *taps,
                                                    dw_rows_ctx *r, int packed, const int32_t *b, const float *fb,
                                                    const float *e, int32_t ox_lo, int32_t ox_hi, int32_t c, int8_t *y,
                                                    dw_pairs_ctx *ctx)
{
    const int32_t c_n = p->out_c, in_w = p->in_w, out_w = p->out_w, n = ox_hi - ox_lo, n2 = n & ~1;
    const int unfolded = r == NULL, neg_zero = pack_neg_zero(p->x_zero);
    dw_pairs_setup(taps, b, fb, e, p, unfolded ? p->y_zero : r->y_zero, ctx);
    for (int32_t oy = 0; oy < p->out_h; oy++) {
        const int32_t iy0 = oy - p->pad, ky0 = iy0 < 0 ? -iy0 : 0, ky1 = iy0 + 3 > p->in_h ? p->in_h - iy0 : 3;
        if (ky0 >= ky1) continue;
        const int8_t *xc = (const int8_t *)((uintptr_t)x + (uintptr_t)(intptr_t)((iy0 * in_w + ox_lo - p->pad) * c_n + c));
        int8_t *yc = y + (oy * out_w + ox_lo) * c_n + c;
        int32_t m = n; /* the pixels left for dw_rows / dw_run */
        if (ky0 == 0 && ky1 == 3) { /* whole windows: two pixels per pass */
            ctx->xc = xc, ctx->y = yc, ctx->y_end = yc + n2 * c_n;
            dw_pairs(ctx, packed, unfolded);
            if (!(n & 1)) continue;
            xc += n2 * c_n, yc += n2 * c_n, m = 1;
        }
        if (unfolded) {
            dw_run(xc, c_n, y, NULL, (int32_t)(yc - y), c_n, m, taps + ky0 * 3, taps + ky1 * 3, neg_zero, b, fb, e,
                   p->y_zero);
        } else {
            r->taps = taps + ky0 * 3, r->end = taps + ky1 * 3, r->xc = xc, r->y = yc, r->y_end = yc + m * c_n;
            dw_rows(r, packed);
        }
    }
}

/* Border columns over the inside rows run through dw_rows for windows up to 3 wide (1.04x the per-pixel paths
 * measured for 5x5 and 7x7 windows in the mcunet-5fps step: their columns stay with dw_border / dw_border_rect). */
static inline int dw_columns_inside(const mt_conv_params *p) { return p->kw <= 3; }

/* The taps of columns kx0..kx1-1 of every kernel row (a border column's window), in (ky, kx) order. */
static int32_t dw_column_taps(const dw_tap *taps, int32_t kh, int32_t kw, int32_t kx0, int32_t kx1, dw_tap *out)
{
    int32_t n = 0;
    for (int32_t ky = 0; ky < kh; ky++)
        for (int32_t kx = kx0; kx < kx1; kx++) out[n++] = taps[ky * kw + kx];
    return n;
}

/* Channels c..c+3 (finite multipliers) of the output pixels in inside columns (every row whose window reaches the
 * input) and of those in inside rows (every column likewise): runs through dw_rows, or dw_run for unfolded
 * biases. taps: the block's kh * kw unpacked taps. What is left (the corners) is dw_border's. */
static __attribute__((noinline)) void dw_block_inside(const mt_conv_params *p, const int8_t *x, const dw_tap *taps,
                                                      const int32_t *bias, const float *eff, int8_t *y,
                                                      uint8_t *mask, int32_t c)
{
    const int32_t c_n = p->out_c, kh = p->kh, kw = p->kw, in_w = p->in_w, stride = p->stride, pad = p->pad;
    const int32_t out_w = p->out_w, neg_zero = pack_neg_zero(p->x_zero);
    int32_t b[4], rb[4], ox_lo, ox_hi, oy_lo, oy_hi;
    union { /* the border columns' taps, or before them dw_pairs_rows' context (stack depth) */
        dw_tap column[MT_DW_MAX_TAPS];
        dw_pairs_ctx pairs;
    } buf;
    dw_tap *const column = buf.column;
    inside_range(pad, stride, kw, in_w, out_w, &ox_lo, &ox_hi);
    inside_range(pad, stride, kh, p->in_h, p->out_h, &oy_lo, &oy_hi);
    if (ox_lo >= ox_hi) return;
    fold_biases(bias + c, kh * kw, b, rb);
    const float e[4] = {eff[c], eff[c + 1], eff[c + 2], eff[c + 3]};
    const float fb[4] = {(float)rb[0], (float)rb[1], (float)rb[2], (float)rb[3]};
    /* runs of pixels whose windows reach the same taps: each row of inside columns (the rows of the tap list its
     * window reaches), then each border column over the inside rows (its columns of the tap list, copied) */
    const int rows = (rb[0] | rb[1] | rb[2] | rb[3]) == 0 && (!mask || (c_n & 3) == 0);
    int packed = 0;
    dw_rows_ctx r;
    if (rows) { /* the common case: one asm loop per run */
        /* without a mask, the packed stores when the four channels' outputs are within int16 reach */
        packed = !mask;
        for (int32_t j = 0; j < 4; j++)
            packed &= (__builtin_fabsf((float)b[j]) + (float)(kh * kw) * (255.0f * 128.0f)) * __builtin_fabsf(e[j]) <
                      32000.0f;
        const int32_t zero = packed ? (int32_t)((uint32_t)(p->y_zero + 128) * 0x00010001u) : p->y_zero;
        if (packed && p->y_zero == -128 && !dw_pairs_shape(p, mask, ox_hi - ox_lo)) packed = 2;
        r = (dw_rows_ctx){{b[0], b[1], b[2], b[3]}, taps, taps + kh * kw, NULL, stride * c_n, c_n, zero, NULL,
                          neg_zero, {e[0], e[1], e[2], e[3]}, NULL, mask, y};
    }
    if (dw_pairs_shape(p, mask, ox_hi - ox_lo)) /* rows, or the block has unfolded biases (r not used) */
        dw_pairs_rows(p, x, taps, rows ? &r : NULL, packed, b, fb, e, ox_lo, ox_hi, c, y, &buf.pairs);
    else for (int32_t oy = 0; oy < p->out_h; oy++) {
        const int32_t iy0 = oy * stride - pad, ky0 = iy0 < 0 ? -iy0 : 0, ky1 = iy0 + kh > p->in_h ? p->in_h - iy0 : kh;
        if (ky0 >= ky1) continue;
        const int8_t *xc = (const int8_t *)((uintptr_t)x + (uintptr_t)(intptr_t)((iy0 * in_w + ox_lo * stride - pad) * c_n + c));
        int8_t *yc = y + (oy * out_w + ox_lo) * c_n + c;
        if (rows) {
            r.taps = taps + ky0 * kw, r.end = taps + ky1 * kw, r.xc = xc, r.y = yc, r.y_end = yc + (ox_hi - ox_lo) * c_n;
            dw_rows(&r, packed);
        } else {
            dw_run(xc, stride * c_n, y, mask, (int32_t)(yc - y), c_n, ox_hi - ox_lo, taps + ky0 * kw, taps + ky1 * kw,
                   neg_zero, b, fb, e, p->y_zero);
        }
    }
    if (oy_lo >= oy_hi || !dw_columns_inside(p)) return;
    for (int32_t ox = 0; ox < out_w; ox++) {
        if (ox == ox_lo) ox = ox_hi;
        if (ox >= out_w) break;
        const int32_t ix0 = ox * stride - pad, kx0 = ix0 < 0 ? -ix0 : 0, kx1 = ix0 + kw > in_w ? in_w - ix0 : kw;
        if (kx0 >= kx1) continue;
        const int32_t n = dw_column_taps(taps, kh, kw, kx0, kx1, column);
        const int8_t *xc = (const int8_t *)((uintptr_t)x + (uintptr_t)(intptr_t)(((oy_lo * stride - pad) * in_w + ix0) * c_n + c));
        int8_t *yc = y + (oy_lo * out_w + ox) * c_n + c;
        if (rows) { /* down the column: inputs stride rows apart, outputs a row apart */
            r.taps = column, r.end = column + n, r.xc = xc, r.y = yc, r.y_end = yc + (oy_hi - oy_lo) * out_w * c_n;
            r.x_step = stride * in_w * c_n, r.c_n = out_w * c_n;
            dw_rows(&r, packed);
            r.x_step = stride * c_n, r.c_n = c_n;
        } else {
            dw_run(xc, stride * in_w * c_n, y, mask, (int32_t)(yc - y), out_w * c_n, oy_hi - oy_lo, column, column + n,
                   neg_zero, b, fb, e, p->y_zero);
        }
    }
}

/* Border pixels (and every pixel when some multiplier is not finite): per pixel its valid taps are listed
 * once as (input offset from its first valid input, weight offset) pairs, then every block of four channels
 * runs one flat loop over them on the raw weights (few pixels: unpacking weights per block would not pay). */
typedef struct {
    int32_t x, w;
} tap_offsets;

/* Four channels (one input and one weight word per tap) summed over a pixel's tap list, hand-scheduled so
 * the accumulators stay in registers (per tap: 1 LDRD of the offsets, 2 loads, 4 unpack, 4 MACs, 2 loop). */
static inline void dw_list4_asm(const int8_t *xc, const int8_t *wc, int32_t neg_zero, const tap_offsets *taps,
                                int32_t n_taps, int32_t *acc)
{
    int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    if (n_taps > 0) {
        const tap_offsets *tp = taps, *end = taps + n_taps;
        uint32_t xo, wo, xv, wv;
        __asm__ volatile(
            "1:\n\t"
            "ldrd    %[xo], %[wo], [%[tp]], #8\n\t"
            "ldr     %[xv], [%[xc], %[xo]]\n\t"
            "ldr     %[wv], [%[wc], %[wo]]\n\t"
            "sxtab16 %[xo], %[nz], %[xv]\n\t"
            "sxtab16 %[xv], %[nz], %[xv], ror #8\n\t"
            "sxtb16  %[wo], %[wv]\n\t"
            "sxtb16  %[wv], %[wv], ror #8\n\t"
            "smlabb  %[a0], %[xo], %[wo], %[a0]\n\t"
            "smlatt  %[a2], %[xo], %[wo], %[a2]\n\t"
            "smlabb  %[a1], %[xv], %[wv], %[a1]\n\t"
            "smlatt  %[a3], %[xv], %[wv], %[a3]\n\t"
            "cmp     %[tp], %[end]\n\t"
            "bne     1b\n\t"
            : [tp] "+r"(tp), [a0] "+r"(a0), [a1] "+r"(a1), [a2] "+r"(a2), [a3] "+r"(a3), [xo] "=&r"(xo),
              [wo] "=&r"(wo), [xv] "=&r"(xv), [wv] "=&r"(wv)
            : [xc] "r"(xc), [wc] "r"(wc), [nz] "r"(neg_zero), [end] "r"(end)
            : "cc", "memory");
    }
    acc[0] = a0, acc[1] = a1, acc[2] = a2, acc[3] = a3;
}

#ifndef MT_DW_MIN_INSIDE
#define MT_DW_MIN_INSIDE 8
#endif
/* skip_inside: the inside pixels are done (dw_inside). */
static __attribute__((noinline)) void dw_border(const mt_conv_params *p, const int8_t *x, const int8_t *w,
                                                const int32_t *bias, const float *eff, int8_t *y, uint8_t *mask,
                                                int skip_inside)
{
    const int finite = all_finite(eff, p->out_c);
    const int32_t c_n = p->out_c, c4 = c_n & ~3, kh = p->kh, kw = p->kw, in_h = p->in_h, in_w = p->in_w;
    const int32_t y_zero = p->y_zero, neg_zero = pack_neg_zero(p->x_zero);
    tap_offsets taps[MT_DW_MAX_TAPS];
    int32_t ox_lo, ox_hi, oy_lo, oy_hi;
    inside_range(p->pad, p->stride, kw, in_w, p->out_w, &ox_lo, &ox_hi);
    inside_range(p->pad, p->stride, kh, in_h, p->out_h, &oy_lo, &oy_hi);
    for (int32_t oy = 0; oy < p->out_h; oy++) {
        const int32_t iy0 = oy * p->stride - p->pad;
        const int32_t ky0 = iy0 < 0 ? -iy0 : 0, ky1 = iy0 + kh > in_h ? in_h - iy0 : kh;
        for (int32_t ox = 0; ox < p->out_w; ox++) {
            if (skip_inside && ky0 < ky1 && ox >= ox_lo && ox < ox_hi) {
                ox = ox_hi - 1; /* done by dw_block_inside (its rows of inside columns) */
                continue;
            }
            const int32_t ix0 = ox * p->stride - p->pad;
            const int32_t kx0 = ix0 < 0 ? -ix0 : 0, kx1 = ix0 + kw > in_w ? in_w - ix0 : kw;
            if (skip_inside && dw_columns_inside(p) && kx0 < kx1 && oy >= oy_lo && oy < oy_hi)
                continue; /* dw_block_inside's columns */
            int32_t n_taps = 0, first_in = 0;
            if (ky0 < ky1 && kx0 < kx1) {
                first_in = ((iy0 + ky0) * in_w + ix0 + kx0) * c_n;
                for (int32_t ky = ky0; ky < ky1; ky++)
                    for (int32_t kx = kx0; kx < kx1; kx++, n_taps++) {
                        taps[n_taps].x = ((ky - ky0) * in_w + kx - kx0) * c_n;
                        taps[n_taps].w = (ky * kw + kx) * c_n;
                    }
            }
            const int32_t base = (oy * p->out_w + ox) * c_n;
            for (int32_t c = 0; c < c4; c += 4) {
                int32_t acc[4];
                dw_list4_asm(x + first_in + c, w + c, neg_zero, taps, n_taps, acc);
                if (finite) {
                    const float fb[4] = {(float)bias[c], (float)bias[c + 1], (float)bias[c + 2], (float)bias[c + 3]};
                    dw_out4(y, mask, base + c, acc, fb, eff + c, y_zero);
                } else {
                    for (int32_t j = 0; j < 4; j++)
                        store_out(y, mask, base + c + j, acc[j], bias[c + j], eff[c + j], y_zero);
                }
            }
        }
    }
}

/* Border pixels of kernels at most 7 wide (dw_border_rect): the block's taps unpacked once (as for dw_rows), a
 * pixel's valid taps are a rectangle of them, rows ky0..ky1-1 x columns kx0..kx1-1, summed row by row by DW_TAP
 * (8 instructions per tap against 13 on the raw weights) with each row entered by TBB at its first valid
 * column of seven written-out taps (6 instructions per row). r0: rows in bits 0-7, taps per row n in bits 8-15,
 * bytes from a row's last valid tap to the next row's first ((kw - n) * 12) from bit 16. */
#define DW_RECT_ASM                                                                                              \
    "0:\n\t"                                                                                                     \
    "ubfx    r2, r0, #8, #8\n\t"                                                                                 \
    "tbb     [pc, r2]\n"                                                                                         \
    ".Ldt%=:\n\t"                                                                                                \
    ".byte   0, (.Ld1%= - .Ldt%=) / 2, (.Ld2%= - .Ldt%=) / 2, (.Ld3%= - .Ldt%=) / 2, (.Ld4%= - .Ldt%=) / 2\n\t"     \
    ".byte   (.Ld5%= - .Ldt%=) / 2, (.Ld6%= - .Ldt%=) / 2, (.Ld7%= - .Ldt%=) / 2\n\t"                              \
    ".p2align 1\n"                                                                                               \
    ".Ld7%=:\n\t" DW_TAP ".Ld6%=:\n\t" DW_TAP ".Ld5%=:\n\t" DW_TAP ".Ld4%=:\n\t" DW_TAP ".Ld3%=:\n\t" DW_TAP     \
    ".Ld2%=:\n\t" DW_TAP ".Ld1%=:\n\t" DW_TAP                                                                    \
    "add     r1, r1, r0, lsr #16\n\t"                                                                            \
    "sub     r0, r0, #1\n\t"                                                                                     \
    "tst     r0, #255\n\t"                                                                                       \
    "bne     0b\n\t"

/* The four sums (from 0) of channels c..c+3 over a rectangle of taps starting at `first`: xc is the window's
 * top-left corner for channel c (outside the input for a border window: only valid taps are read). */
static inline void dw_rect4(uintptr_t xc, const dw_tap *first, int32_t n, int32_t rows, int32_t kw, int32_t neg_zero,
                            int32_t *acc)
{
    register uint32_t r0 __asm__("r0") = ((uint32_t)((kw - n) * 12) << 16) | ((uint32_t)n << 8) | (uint32_t)rows;
    register const dw_tap *r1 __asm__("r1") = first;
    register uintptr_t r3 __asm__("r3") = xc;
    register int32_t r4 __asm__("r4") = neg_zero;
    register int32_t r9 __asm__("r9") = 0, r10 __asm__("r10") = 0, r11 __asm__("r11") = 0, r12 __asm__("r12") = 0;
    __asm__ volatile(DW_RECT_ASM
                     : "+r"(r0), "+r"(r1), "+r"(r9), "+r"(r10), "+r"(r11), "+r"(r12)
                     : "r"(r3), "r"(r4)
                     : "r2", "r5", "r6", "r7", "r8", "cc", "memory");
    acc[0] = r9, acc[1] = r10, acc[2] = r11, acc[3] = r12;
}

/* dw_border for kw <= 7: channel blocks outermost (their taps unpacked once), then the border pixels. */
static __attribute__((noinline)) void dw_border_rect(const mt_conv_params *p, const int8_t *x, const int8_t *w,
                                                     const int32_t *bias, const float *eff, int8_t *y, uint8_t *mask,
                                                     int skip_inside)
{
    const int finite = all_finite(eff, p->out_c);
    const int32_t c_n = p->out_c, c4 = c_n & ~3, kh = p->kh, kw = p->kw, in_h = p->in_h, in_w = p->in_w;
    const int32_t y_zero = p->y_zero, neg_zero = pack_neg_zero(p->x_zero);
    dw_tap taps[MT_DW_MAX_TAPS];
    int32_t ox_lo, ox_hi, oy_lo, oy_hi;
    inside_range(p->pad, p->stride, kw, in_w, p->out_w, &ox_lo, &ox_hi);
    inside_range(p->pad, p->stride, kh, in_h, p->out_h, &oy_lo, &oy_hi);
    for (int32_t ky = 0, t = 0; ky < kh; ky++)
        for (int32_t kx = 0; kx < kw; kx++, t++) taps[t].x = (ky * in_w + kx) * c_n;
    for (int32_t c = 0; c < c4; c += 4) {
        for (int32_t t = 0; t < kh * kw; t++) {
            const uint32_t v = load_u32(w + t * c_n + c);
            taps[t].w02 = __sxtb16(v), taps[t].w13 = sxtb16_ror8(v);
        }
        const float fb[4] = {(float)bias[c], (float)bias[c + 1], (float)bias[c + 2], (float)bias[c + 3]};
        for (int32_t oy = 0; oy < p->out_h; oy++) {
            const int32_t iy0 = oy * p->stride - p->pad;
            const int32_t ky0 = iy0 < 0 ? -iy0 : 0, ky1 = iy0 + kh > in_h ? in_h - iy0 : kh;
            for (int32_t ox = 0; ox < p->out_w; ox++) {
                if (skip_inside && ky0 < ky1 && ox >= ox_lo && ox < ox_hi) {
                    ox = ox_hi - 1; /* done by dw_block_inside (its rows of inside columns) */
                    continue;
                }
                const int32_t ix0 = ox * p->stride - p->pad;
                const int32_t kx0 = ix0 < 0 ? -ix0 : 0, kx1 = ix0 + kw > in_w ? in_w - ix0 : kw;
                if (skip_inside && dw_columns_inside(p) && kx0 < kx1 && oy >= oy_lo && oy < oy_hi)
                    continue; /* dw_block_inside's columns */
                int32_t acc[4] = {0, 0, 0, 0};
                if (ky0 < ky1 && kx0 < kx1)
                    dw_rect4((uintptr_t)x + (uintptr_t)(intptr_t)((iy0 * in_w + ix0) * c_n + c),
                             taps + ky0 * kw + kx0, kx1 - kx0, ky1 - ky0, kw, neg_zero, acc);
                const int32_t i = (oy * p->out_w + ox) * c_n + c;
                if (finite) {
                    dw_out4(y, mask, i, acc, fb, eff + c, y_zero);
                } else {
                    for (int32_t j = 0; j < 4; j++) store_out(y, mask, i + j, acc[j], bias[c + j], eff[c + j], y_zero);
                }
            }
        }
    }
}

/* Channel c (one of the c_n % 4 left over) of every output pixel, in plain C. */
static void dw_channel(const mt_conv_params *p, const int8_t *x, const int8_t *w, const int32_t *bias,
                       const float *eff, int8_t *y, uint8_t *mask, int32_t c)
{
    const int32_t c_n = p->out_c;
    for (int32_t oy = 0; oy < p->out_h; oy++)
        for (int32_t ox = 0; ox < p->out_w; ox++) {
            int32_t acc = 0;
            for (int32_t ky = 0; ky < p->kh; ky++) {
                const int32_t iy = oy * p->stride - p->pad + ky;
                if (iy < 0 || iy >= p->in_h) continue;
                for (int32_t kx = 0; kx < p->kw; kx++) {
                    const int32_t ix = ox * p->stride - p->pad + kx;
                    if (ix < 0 || ix >= p->in_w) continue;
                    acc += ((int32_t)x[(iy * p->in_w + ix) * c_n + c] - p->x_zero) * (int32_t)w[(ky * p->kw + kx) * c_n + c];
                }
            }
            store_out(y, mask, (oy * p->out_w + ox) * c_n + c, acc, bias[c], eff[c], p->y_zero);
        }
}

/* The pixels whose window lies inside the input, four channels at a time from their unpacked weights. */
static __attribute__((noinline)) void dw_inside(const mt_conv_params *p, const int8_t *x, const int8_t *w,
                                                const int32_t *bias, const float *eff, int8_t *y, uint8_t *mask)
{
    const int32_t c_n = p->out_c, n_taps = p->kh * p->kw;
    dw_tap taps[MT_DW_MAX_TAPS];
    for (int32_t ky = 0, t = 0; ky < p->kh; ky++)
        for (int32_t kx = 0; kx < p->kw; kx++, t++) taps[t].x = (ky * p->in_w + kx) * c_n;
    for (int32_t c = 0; c + 4 <= c_n; c += 4) {
        for (int32_t t = 0; t < n_taps; t++) {
            uint32_t v = load_u32(w + t * c_n + c);
            taps[t].w02 = __sxtb16(v), taps[t].w13 = sxtb16_ror8(v);
        }
        dw_block_inside(p, x, taps, bias, eff, y, mask, c);
    }
}

/* dw_quad: depthwise convs with 3x3, 5x5 or 7x7 windows at stride 1 or 2, four channels at a time, two taps per
 * SMLAD. For a block of channels c..c+3 the input rows the windows reach are converted once each into a ring of kh
 * slots on the stack (column-major: per ring column its kh slots of 16 bytes): a slot's column holds four words
 * P_j = (x[ix][c+j] - x_zero, x[ix+1][c+j] - x_zero), int16 lanes, for the pixel pair (ix, ix + 1) starting at that
 * column (zeros in the padding, which adds nothing, as the portable kernel's skipped taps); at stride 1 every
 * padded column has a ring column, at stride 2 only the even ones (a window's tap pairs start there). One LDM then
 * brings four channels' pairs of adjacent taps and four SMLAD do 8 MACs against the weight pairs (w[kx], w[kx+1]);
 * a kernel row's last tap is a bottom lane (SMLABB / SMLABT). An output pixel is one asm pass (DWQ_CALL): per
 * kernel row and tap pair 2 LDM + 4 SMLAD, for the last tap 2 LDM + 4 MACs (7x7: 24 instructions per 28 MACs
 * against 56 in dw_rows); the four sums start from the biases (folded, see bias_foldable; unfolded ones are added
 * as floats) and are requantised as in dw_rows (packed stores, byte stores, or with the clamp bits as a nibble).
 * The ring's slot of input row iy is iy mod kh; the weights are held twice over (kernel rows 0..kh-1, 0..kh-1) so
 * that the rows in slot order are consecutive from any start. Maps wider than the ring go in strips of output
 * columns. Finite multipliers; the out_c % 4 leftover channels take dw_channel. */
#ifndef MT_DWQ_BYTES
#define MT_DWQ_BYTES 1920 /* stack for the weights ((k / 2 + 1) * 2k * 16 bytes) and the ring (the rest): strips of
                             34 / 14 / 3 output columns for 3x3 / 5x5 / 7x7 windows at stride 1, 6 for 7x7 at stride 2 */
#endif
static inline int32_t dwq_weight_bytes(int32_t k) { return (k / 2 + 1) * 2 * k * 16; }

/* DWQ_CALL's context; words 0-9 are copied below sp for the loop (offsets there). */
typedef struct {
    int32_t b[4];              /* 0: starting sums */
    int8_t *y, *y_end;         /* 16, 20: the first pixel's output (channel c), after the last */
    int32_t c_n;               /* 24 */
    uint32_t zero;             /* 28: y_zero, packed stores: y_zero + 128 in both int16 lanes */
    uint8_t *mask;             /* 32 */
    const int8_t *y0;          /* 36: the output tensor (mask bit index = y - y0) */
    const uint32_t *ring, *wq; /* 40, 44: the first pixel's ring column, the weights from the window's first slot */
    float fb[4], e[4];         /* 48, 64: biases left out of the sums (0 when folded), multipliers */
} dwq_ctx;

/* One slot of a tap-pair column (r12 the ring, lr the weights, r4-r7 the sums of channels c..c+3), one of the last
 * tap's column (weight words (w_c, w_c+1), (w_c+2, w_c+3), 0, 0). */
#define DWQ_PAIR                                                                                                 \
    "ldmia   r12!, {r8, r9, r10, r11}\n\t"                                                                       \
    "ldmia   lr!, {r0, r1, r2, r3}\n\t"                                                                          \
    "smlad   r4, r8, r0, r4\n\t"                                                                                 \
    "smlad   r5, r9, r1, r5\n\t"                                                                                 \
    "smlad   r6, r10, r2, r6\n\t"                                                                                \
    "smlad   r7, r11, r3, r7\n\t"
#define DWQ_LAST                                                                                                 \
    "ldmia   r12!, {r8, r9, r10, r11}\n\t"                                                                       \
    "ldmia   lr!, {r0, r1, r2, r3}\n\t"                                                                          \
    "smlabb  r4, r8, r0, r4\n\t"                                                                                 \
    "smlabt  r5, r9, r0, r5\n\t"                                                                                 \
    "smlabb  r6, r10, r1, r6\n\t"                                                                                \
    "smlabt  r7, r11, r1, r7\n\t"
#define DWQ_3(T) T T T
#define DWQ_5(T) T T T T T
#define DWQ_7(T) T T T T T T T
/* a tap-pair column, then past the other copy of the weights (kh * 16 bytes) and at stride 1 past the ring column
 * of the odd taps (the next pair starts two columns on) */
#define DWQ_COLUMN_1(SLOTS, SKIP) SLOTS "add     r12, r12, #" SKIP "\n\t" "add     lr, lr, #" SKIP "\n\t"
#define DWQ_COLUMN_2(SLOTS, SKIP) SLOTS "add     lr, lr, #" SKIP "\n\t"
/* the window of one pixel, then back to the next pixel's first ring column and the weights' first slot */
#define DWQ_MAC_3_1 DWQ_COLUMN_1(DWQ_3(DWQ_PAIR), "48") DWQ_3(DWQ_LAST) "sub     r12, r12, #96\n\t" "sub     lr, lr, #144\n\t"
#define DWQ_MAC_5_1                                                                                              \
    DWQ_COLUMN_1(DWQ_5(DWQ_PAIR), "80") DWQ_COLUMN_1(DWQ_5(DWQ_PAIR), "80") DWQ_5(DWQ_LAST)                      \
    "sub     r12, r12, #320\n\t" "sub     lr, lr, #400\n\t"
#define DWQ_MAC_7_1                                                                                              \
    DWQ_COLUMN_1(DWQ_7(DWQ_PAIR), "112") DWQ_COLUMN_1(DWQ_7(DWQ_PAIR), "112")                                    \
    DWQ_COLUMN_1(DWQ_7(DWQ_PAIR), "112") DWQ_7(DWQ_LAST) "sub     r12, r12, #672\n\t" "sub     lr, lr, #784\n\t"
#define DWQ_MAC_3_2 DWQ_COLUMN_2(DWQ_3(DWQ_PAIR), "48") DWQ_3(DWQ_LAST) "sub     r12, r12, #48\n\t" "sub     lr, lr, #144\n\t"
#define DWQ_MAC_5_2                                                                                              \
    DWQ_COLUMN_2(DWQ_5(DWQ_PAIR), "80") DWQ_COLUMN_2(DWQ_5(DWQ_PAIR), "80") DWQ_5(DWQ_LAST)                      \
    "sub     r12, r12, #160\n\t" "sub     lr, lr, #400\n\t"
#define DWQ_MAC_7_2                                                                                              \
    DWQ_COLUMN_2(DWQ_7(DWQ_PAIR), "112") DWQ_COLUMN_2(DWQ_7(DWQ_PAIR), "112")                                    \
    DWQ_COLUMN_2(DWQ_7(DWQ_PAIR), "112") DWQ_7(DWQ_LAST) "sub     r12, r12, #336\n\t" "sub     lr, lr, #784\n\t"
#define DWQ_BIAS_ADD "vadd.f32 s0, s0, s8\n\t" "vadd.f32 s1, s1, s9\n\t" "vadd.f32 s2, s2, s10\n\t" "vadd.f32 s3, s3, s11\n\t"
/* stores of the four rint values r4-r7 at r1 (r0: the zero field): packed, bytes, bytes with the clamp nibble */
#define DWQ_STORE_PACKED PACKED_STORE4("r4", "r5", "r6", "r7", "r0", "[r1]")
#define DWQ_QADD "qadd    r4, r4, r0\n\t" "qadd    r5, r5, r0\n\t" "qadd    r6, r6, r0\n\t" "qadd    r7, r7, r0\n\t"
#define DWQ_SSAT_STRB                                                                                            \
    "ssat    r4, #8, r4\n\t" "ssat    r5, #8, r5\n\t" "ssat    r6, #8, r6\n\t" "ssat    r7, #8, r7\n\t"        \
    "strb    r4, [r1]\n\t" "strb    r5, [r1, #1]\n\t" "strb    r6, [r1, #2]\n\t" "strb    r7, [r1, #3]\n\t"
#define DWQ_STORE_S8 DWQ_QADD DWQ_SSAT_STRB
/* the clamp bit of a value (before SSAT) shifted into r2 from the bottom: channel 3 first, bit j = channel j */
#define DWQ_CLAMP_BIT(RV) "add     r3, " RV ", #128\n\t" "rsbs    r3, r3, #255\n\t" "adc     r2, r2, r2\n\t"
/* The mask byte holding output y's clamp nibble: its address in r8, its value in r10, the nibble's shift in r9
 * and 0xF << shift in r11. */
#define DWQ_NIBBLE_AT                                                                                            \
    "ldrd    r8, r9, [sp, #32]\n\t" /* mask, y0: the nibble at bit index y - y0 (a multiple of 4) */             \
    "sub     r9, r1, r9\n\t"                                                                                     \
    "add     r8, r8, r9, lsr #3\n\t"                                                                             \
    "and     r9, r9, #7\n\t"                                                                                     \
    "ldrb    r10, [r8]\n\t"                                                                                      \
    "mov     r11, #15\n\t"                                                                                       \
    "lsl     r11, r11, r9\n\t"
#define DWQ_STORE_MASKED                                                                                         \
    DWQ_QADD "mov     r2, #0\n\t" DWQ_CLAMP_BIT("r7") DWQ_CLAMP_BIT("r6") DWQ_CLAMP_BIT("r5") DWQ_CLAMP_BIT("r4")   \
    DWQ_SSAT_STRB                                                                                                \
    DWQ_NIBBLE_AT                                                                                                \
    "bic     r10, r10, r11\n\t"                                                                                  \
    "lsl     r2, r2, r9\n\t"                                                                                     \
    "orr     r10, r10, r2\n\t"                                                                                   \
    "strb    r10, [r8]\n\t"
#define DWQ_STORE_PACKED0 DWQ_PACKED0("r4", "r5", "r6", "r7", "[r1]")
/* Packed stores with the clamp nibble (every output within int16 reach, as for DWQ_STORE_PACKED): a lane u = v +
 * y_zero + 128 is clamped iff its high byte is not 0; the four high bytes gathered into r3 (byte j: channel j),
 * UADD8 of 0xFF sets GE bit j for a clamped channel, read from the APSR (bits 16-19); the nibble of the mask
 * becomes ~GE: (m | 0xF << sh) ^ GE << sh. 27 instructions against 36 (QADD, SSAT, STRB and a carry per bit);
 * ZADD: the QADD16 of the zero field (r0), or "" when it is 0. */
#define DWQ_STORE_MASKED_PACKED(ZADD)                                                                            \
    "pkhbt   r4, r4, r6, lsl #16\n\t" "pkhbt   r5, r5, r7, lsl #16\n\t" ZADD                                        \
    "and     r2, r4, #0xFF00FF00\n\t"                                                                             \
    "and     r3, r5, #0xFF00FF00\n\t"                                                                             \
    "orr     r3, r3, r2, lsr #8\n\t"                                                                              \
    "usat16  r4, #8, r4\n\t" "usat16  r5, #8, r5\n\t" "orr     r4, r4, r5, lsl #8\n\t"                            \
    "eor     r4, r4, #0x80808080\n\t" "str     r4, [r1]\n\t"                                                     \
    "mvn     r2, #0\n\t"                                                                                          \
    "uadd8   r3, r3, r2\n\t"                                                                                      \
    "mrs     r3, APSR\n\t"                                                                                        \
    "ubfx    r3, r3, #16, #4\n\t"                                                                                 \
    DWQ_NIBBLE_AT                                                                                                \
    "orr     r10, r10, r11\n\t"                                                                                   \
    "lsl     r3, r3, r9\n\t"                                                                                      \
    "eor     r10, r10, r3\n\t"                                                                                    \
    "strb    r10, [r8]\n\t"
#define DWQ_ZADD "qadd16  r4, r4, r0\n\t" "qadd16  r5, r5, r0\n\t"
#define DWQ_LOADZ "ldr     r0, [sp, #28]\n\t"
/* The pixels of the context, one pass each: MAC (DWQ_MAC_k_s), BIAS_ADD ("" or DWQ_BIAS_ADD), LOADZ (DWQ_LOADZ, or
 * "" for a STORE that does not read the zero field), STORE. */
#define DWQ_CALL(MAC, BIAS_ADD, LOADZ, STORE)                                                                    \
    __asm__ volatile("add     r1, r0, #48\n\t"                                                                   \
                     "vldmia  r1, {s8-s15}\n\t"                                                                  \
                     "ldrd    r12, lr, [r0, #40]\n\t"                                                            \
                     "ldmia   r0, {r0-r9}\n\t"                                                                   \
                     "push    {r0-r9}\n\t"                                                                       \
                     "0:\n\t"                                                                                    \
                     "ldmia   sp, {r4-r7}\n\t" MAC                                                               \
                     "vmov    s0, s1, r4, r5\n\t"                                                                \
                     "vmov    s2, s3, r6, r7\n\t"                                                                \
                     "vcvt.f32.s32 s0, s0\n\t" "vcvt.f32.s32 s1, s1\n\t" "vcvt.f32.s32 s2, s2\n\t"             \
                     "vcvt.f32.s32 s3, s3\n\t" BIAS_ADD                                                          \
                     "vmul.f32 s0, s0, s12\n\t" "vmul.f32 s1, s1, s13\n\t" "vmul.f32 s2, s2, s14\n\t"          \
                     "vmul.f32 s3, s3, s15\n\t"                                                                  \
                     "vcvtr.s32.f32 s0, s0\n\t" "vcvtr.s32.f32 s1, s1\n\t" "vcvtr.s32.f32 s2, s2\n\t"          \
                     "vcvtr.s32.f32 s3, s3\n\t"                                                                  \
                     "vmov    r4, r5, s0, s1\n\t"                                                                \
                     "vmov    r6, r7, s2, s3\n\t"                                                                \
                     LOADZ "ldr     r1, [sp, #16]\n\t" STORE                                                     \
                     "ldrd    r2, r3, [sp, #20]\n\t" /* y_end, c_n */                                            \
                     "add     r1, r1, r3\n\t"                                                                    \
                     "str     r1, [sp, #16]\n\t"                                                                 \
                     "cmp     r1, r2\n\t"                                                                        \
                     "bne     0b\n\t"                                                                            \
                     "add     sp, sp, #40\n\t"                                                                   \
                     : "+r"(c)                                                                                   \
                     :                                                                                           \
                     : "r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8", "r9", "r10", "r11", "r12", "lr", "s0", "s1",  \
                       "s2", "s3", "s8", "s9", "s10", "s11", "s12", "s13", "s14", "s15", "cc", "memory")

/* One function per window, stride and store (packed; bytes; bytes with float biases; masked; masked with float
 * biases), chosen once per channel block (dwq_kernel): the pixels described by ctx, at least one. */
typedef void (*dwq_fn)(const dwq_ctx *ctx);
#define DWQ_FN(NAME, MAC, BIAS_ADD, LOADZ, STORE)                                                                \
    static __attribute__((noinline)) void NAME(const dwq_ctx *ctx)                                               \
    {                                                                                                            \
        register const dwq_ctx *c __asm__("r0") = ctx;                                                           \
        DWQ_CALL(MAC, BIAS_ADD, LOADZ, STORE);                                                                   \
    }
#define DWQ_FNS(K, S)                                                                                            \
    DWQ_FN(dwq_##K##_##S##_packed, DWQ_MAC_##K##_##S, "", DWQ_LOADZ, DWQ_STORE_PACKED)                          \
    DWQ_FN(dwq_##K##_##S##_s8, DWQ_MAC_##K##_##S, "", DWQ_LOADZ, DWQ_STORE_S8)                                  \
    DWQ_FN(dwq_##K##_##S##_s8_fb, DWQ_MAC_##K##_##S, DWQ_BIAS_ADD, DWQ_LOADZ, DWQ_STORE_S8)                     \
    DWQ_FN(dwq_##K##_##S##_masked, DWQ_MAC_##K##_##S, "", DWQ_LOADZ, DWQ_STORE_MASKED)                          \
    DWQ_FN(dwq_##K##_##S##_masked_fb, DWQ_MAC_##K##_##S, DWQ_BIAS_ADD, DWQ_LOADZ, DWQ_STORE_MASKED)             \
    DWQ_FN(dwq_##K##_##S##_packed0, DWQ_MAC_##K##_##S, "", "", DWQ_STORE_PACKED0)                               \
    DWQ_FN(dwq_##K##_##S##_masked_packed, DWQ_MAC_##K##_##S, "", DWQ_LOADZ, DWQ_STORE_MASKED_PACKED(DWQ_ZADD))   \
    DWQ_FN(dwq_##K##_##S##_masked_packed0, DWQ_MAC_##K##_##S, "", "", DWQ_STORE_MASKED_PACKED(""))
DWQ_FNS(3, 1)
DWQ_FNS(5, 1)
DWQ_FNS(7, 1)
DWQ_FNS(3, 2)
DWQ_FNS(5, 2)
DWQ_FNS(7, 2)
#define DWQ_ROW(K, S)                                                                                            \
    {dwq_##K##_##S##_packed, dwq_##K##_##S##_s8, dwq_##K##_##S##_s8_fb, dwq_##K##_##S##_masked,                 \
     dwq_##K##_##S##_masked_fb, dwq_##K##_##S##_packed0, dwq_##K##_##S##_masked_packed,                         \
     dwq_##K##_##S##_masked_packed0}
static const dwq_fn dwq_table[2][3][8] = {{DWQ_ROW(3, 1), DWQ_ROW(5, 1), DWQ_ROW(7, 1)},
                                          {DWQ_ROW(3, 2), DWQ_ROW(5, 2), DWQ_ROW(7, 2)}};

/* The kernel of a window k, stride, store (mask, packed: every output within int16 reach and the biases folded;
 * zero0: y_zero + 128 is 0) and biases (unfolded: some added as floats). */
static inline dwq_fn dwq_kernel(int32_t k, int32_t stride, int masked, int packed, int zero0, int unfolded)
{
    const int store = masked ? (packed ? 6 + zero0 : 3 + unfolded) : packed ? (zero0 ? 5 : 0) : 1 + unfolded;
    return dwq_table[stride - 1][k / 2 - 1][store];
}

/* PKHBT / PKHTB: (lo.lo, hi.lo) and (lo.hi, hi.hi) as int16 lanes (gcc 12 does not form them from the C). */
static inline uint32_t pack_lo(uint32_t lo, uint32_t hi)
{
    uint32_t r;
    __asm__("pkhbt   %0, %1, %2, lsl #16" : "=r"(r) : "r"(lo), "r"(hi));
    return r;
}
static inline uint32_t pack_hi(uint32_t lo, uint32_t hi)
{
    uint32_t r;
    __asm__("pkhtb   %0, %1, %2, asr #16" : "=r"(r) : "r"(hi), "r"(lo));
    return r;
}

/* The four words of a ring column (or of a weight pair): channels 0-3 of the pixel pair whose unpacked lanes are
 * (a02, a13) and (b02, b13). */
static inline void dwq_pair_words(uint32_t *d, uint32_t a02, uint32_t a13, uint32_t b02, uint32_t b13)
{
    d[0] = pack_lo(a02, b02), d[1] = pack_lo(a13, b13), d[2] = pack_hi(a02, b02), d[3] = pack_hi(a13, b13);
}

/* n ring columns (n >= 1), stride 1: consecutive pixel pairs of one input row (each pixel the right one of a column
 * and the left one of the next); r1 the first column's right pixel (pixels c_n apart: r2), r3 the first column's
 * slot (columns STEP bytes apart), r6 / r7 the first left pixel's lanes, r5 -x_zero in both lanes. The loop is
 * written twice with the roles of the lane registers swapped. */
#define DWQ_COL(A02, A13, B02, B13, STEP)                                                                        \
    "ldr     r0, [r1]\n\t"                                                                                       \
    "add     r1, r1, r2\n\t"                                                                                     \
    "sxtab16 " B02 ", r5, r0\n\t"                                                                                \
    "sxtab16 " B13 ", r5, r0, ror #8\n\t"                                                                        \
    "pkhtb   r10, " B02 ", " A02 ", asr #16\n\t"                                                                 \
    "pkhtb   r11, " B13 ", " A13 ", asr #16\n\t"                                                                 \
    "strd    r10, r11, [r3, #8]\n\t"                                                                             \
    "pkhbt   r10, " A02 ", " B02 ", lsl #16\n\t"                                                                 \
    "pkhbt   r11, " A13 ", " B13 ", lsl #16\n\t"                                                                 \
    "strd    r10, r11, [r3], #" STEP "\n\t"                                                                      \
    "subs    r12, r12, #1\n\t"
/* the same at stride 2: disjoint pixel pairs (r1 the first column's left pixel, both pixels loaded per column) */
#define DWQ_COL2(STEP)                                                                                           \
    "ldr     r0, [r1]\n\t"                                                                                       \
    "ldr     r8, [r1, r2]\n\t"                                                                                   \
    "add     r1, r1, r2, lsl #1\n\t"                                                                             \
    "sxtab16 r6, r5, r0\n\t"                                                                                     \
    "sxtab16 r7, r5, r0, ror #8\n\t"                                                                             \
    "sxtab16 r9, r5, r8\n\t"                                                                                     \
    "sxtab16 r8, r5, r8, ror #8\n\t"                                                                             \
    "pkhtb   r10, r9, r6, asr #16\n\t"                                                                           \
    "pkhtb   r11, r8, r7, asr #16\n\t"                                                                           \
    "strd    r10, r11, [r3, #8]\n\t"                                                                             \
    "pkhbt   r10, r6, r9, lsl #16\n\t"                                                                           \
    "pkhbt   r11, r7, r8, lsl #16\n\t"                                                                           \
    "strd    r10, r11, [r3], #" STEP "\n\t"                                                                      \
    "subs    r12, r12, #1\n\t"
/* the column step (16 * k bytes) is the post-increment of the second STRD: one instruction fewer per column */
#define DWQ_COLUMNS_1(STEP)                                                                                      \
    __asm__ volatile("1:\n\t" DWQ_COL("r6", "r7", "r8", "r9", STEP) "beq     2f\n\t"                            \
                     DWQ_COL("r8", "r9", "r6", "r7", STEP) "bne     1b\n\t"                                      \
                     "b       3f\n\t"                                                                            \
                     "2:\n\t"                                                                                    \
                     "mov     r6, r8\n\t"                                                                        \
                     "mov     r7, r9\n\t"                                                                        \
                     "3:\n\t"                                                                                    \
                     : "+r"(r1), "+r"(r3), "+r"(r12), "+r"(r6), "+r"(r7)                                         \
                     : "r"(r2), "r"(r5)                                                                          \
                     : "r0", "r8", "r9", "r10", "r11", "cc", "memory")
#define DWQ_COLUMNS_2(STEP)                                                                                      \
    __asm__ volatile("1:\n\t" DWQ_COL2(STEP) "bne     1b\n\t"                                                   \
                     : "+r"(r1), "+r"(r3), "+r"(r12), "+r"(r6), "+r"(r7)                                         \
                     : "r"(r2), "r"(r5)                                                                          \
                     : "r0", "r8", "r9", "r10", "r11", "cc", "memory")
/* step: 16 * k bytes between ring columns (k 3, 5 or 7) */
static inline __attribute__((always_inline)) void dwq_columns(const int8_t *s, int32_t c_n, uint32_t *d, int32_t step, int32_t n,
                                                  int32_t nz, uint32_t *a02, uint32_t *a13, int32_t stride)
{
    register const int8_t *r1 __asm__("r1") = s;
    register int32_t r2 __asm__("r2") = c_n, r5 __asm__("r5") = nz, r12 __asm__("r12") = n;
    register uint32_t *r3 __asm__("r3") = d;
    register uint32_t r6 __asm__("r6") = *a02, r7 __asm__("r7") = *a13;
    if (stride == 1) {
        if (step == 48) DWQ_COLUMNS_1("48");
        else if (step == 80) DWQ_COLUMNS_1("80");
        else DWQ_COLUMNS_1("112");
    } else {
        if (step == 48) DWQ_COLUMNS_2("48");
        else if (step == 80) DWQ_COLUMNS_2("80");
        else DWQ_COLUMNS_2("112");
    }
    *a02 = r6, *a13 = r7; /* stride 1: the last right pixel's lanes */
}

/* How dwq_convert fills the live ring columns [lo, hi) of a strip's slot from an input row (the same in every
 * row): `lead` columns whose left pixel is in the padding (stride 2: at most one, its right pixel the row's first),
 * then m columns by dwq_columns starting at pixel `first` (stride 1: its left pixel, or -1 for the padding), then
 * `tail` columns (at most one) whose right pixel is past the row's end. The byte offsets in a row of channel c are
 * worked out once per strip: left (stride 1: pixel `first`, -1 in the padding), cols (dwq_columns' first pixel),
 * last (stride 2: the tail column's pixel, -1 in the padding; stride 1: -2, the lanes dwq_columns leaves). */
typedef struct {
    int32_t zeros, flags, m; /* zeros: hi - lo; flags: 1 lead, 2 tail, 4 stride 2 */
    int32_t left, cols, last;
    int32_t c_n, step; /* step: words from a ring column to the next (4 * k) */
} dwq_strip;

static void dwq_plan(const mt_conv_params *p, int32_t ix0, int32_t lo, int32_t hi, dwq_strip *st)
{
    const int32_t s = p->stride, w = p->in_w, c_n = p->in_c;
    int32_t ix = ix0 + s * lo, i = lo, lead = 0; /* column i holds the pixel pair (ix, ix + 1) */
    if (s == 2 && ix < 0 && i < hi) lead = 1, i++, ix += 2;
    int32_t m = s == 1 ? w - 1 - ix : (ix > w - 2 ? 0 : (w - 2 - ix) / 2 + 1);
    if (m > hi - i) m = hi - i;
    if (m < 0) m = 0;
    st->zeros = hi - lo, st->m = m, st->flags = lead | (hi - i - m ? 2 : 0) | (s == 2 ? 4 : 0);
    st->left = s == 1 && ix >= 0 && ix < w ? ix * c_n : -1;
    st->cols = (ix + (s == 1)) * c_n;
    st->last = s == 1 ? -2 : ix + 2 * m >= 0 && ix + 2 * m < w ? (ix + 2 * m) * c_n : -1;
    st->c_n = c_n, st->step = 4 * p->kw;
}

/* An input row of channels c..c+3 (row: its channel c; NULL: a padding row, zeros) into a ring slot (d: its column
 * lo) as planned by st; nz: -x_zero in both int16 lanes. */
static __attribute__((noinline)) void dwq_convert(const dwq_strip *st, const int8_t *row, uint32_t *d, int32_t nz)
{
    const int32_t step = st->step;
    if (!row) {
        for (int32_t i = st->zeros; i > 0; i--, d += step) d[0] = d[1] = d[2] = d[3] = 0;
        return;
    }
    uint32_t a02 = 0, a13 = 0;
    if (st->flags & 1) { /* (padding, pixel 0) */
        const uint32_t v = load_u32(row);
        dwq_pair_words(d, 0, 0, __sxtab16(nz, v), sxtab16_ror8(nz, v));
        d += step;
    }
    if (st->left >= 0) {
        const uint32_t v = load_u32(row + st->left);
        a02 = __sxtab16(nz, v), a13 = sxtab16_ror8(nz, v);
    }
    if (st->m) {
        dwq_columns(row + st->cols, st->c_n, d, step * 4, st->m, nz, &a02, &a13, st->flags & 4 ? 2 : 1);
        d += st->m * step;
    }
    if (st->flags & 2) { /* (the row's last pixel, padding) */
        if (st->last != -2) a02 = a13 = 0;
        if (st->last >= 0) {
            const uint32_t v = load_u32(row + st->last);
            a02 = __sxtab16(nz, v), a13 = sxtab16_ror8(nz, v);
        }
        d[0] = a02 & 0xFFFFu, d[1] = a13 & 0xFFFFu, d[2] = a02 >> 16, d[3] = a13 >> 16;
    }
}

/* dw_quad's shapes: square 3, 5 or 7 windows at stride 1 or 2, padding below the window, a strip of at least one
 * output column in the ring, out_c >= 4; with a mask out_c % 4 == 0 (the clamp nibbles). */
static inline int dw_quad_fits(const mt_conv_params *p, const uint8_t *mask)
{
    const int32_t k = p->kw;
    return p->kh == k && (k == 3 || k == 5 || k == 7) && (p->stride == 1 || p->stride == 2) && p->dilation == 1 &&
           p->pad < k && (p->stride == 1 ? k : k / 2 + 1) * k * 16 <= MT_DWQ_BYTES - dwq_weight_bytes(k) && p->out_c >= 4 &&
           (!mask || (p->out_c & 3) == 0);
}

/* Where dw_quad measured a gain over dw_inside / dw_border (mcunet-5fps, mbv2-w0.35, proxyless-w0.3 steps,
 * Cortex-M7): every fitting 5x5 / 7x7 layer (0.65-0.85x the instructions) and 3x3 at stride 1 (0.92-0.96x), when
 * the window is at most one wider than the map (5x5 on 4x4: 0.92x since the packed masked stores and the padding
 * columns zeroed once; 7x7 on 4x4 1.6x: the padding's MACs and the per-block ring outweigh it); not 3x3 at stride
 * 2 (1.06-1.22x: two converted ring rows per output row for 9 taps). */
static inline int dw_quad_wanted(const mt_conv_params *p, const uint8_t *mask)
{
    return dw_quad_fits(p, mask) && (p->kw >= 5 || p->stride == 1) && p->kw <= p->in_w + 1 && p->kh <= p->in_h + 1;
}

/* The weight words of channels c..c+3 (wc = w + c) for dw_quad: per tap-pair column j and the last column, kernel
 * rows 0..k-1 and again (rows k..2k-1), four words each (pairs of taps 2j, 2j + 1 per channel; the last column's
 * (w_c, w_c+1), (w_c+2, w_c+3), 0, 0). */
static __attribute__((noinline)) void dwq_weights(const int8_t *wc, int32_t k, int32_t c_n, uint32_t *wq)
{
    const int32_t np = k / 2;
    for (int32_t ky = 0; ky < k; ky++) {
        const int8_t *t = wc + ky * k * c_n;
        uint32_t *q = wq + ky * 4;
        for (int32_t j = 0; j < np; j++, t += 2 * c_n, q += 8 * k) {
            const uint32_t a = load_u32(t), b = load_u32(t + c_n);
            dwq_pair_words(q, __sxtb16(a), sxtb16_ror8(a), __sxtb16(b), sxtb16_ror8(b));
            __builtin_memcpy(q + 4 * k, q, 16);
        }
        const uint32_t a = load_u32(t), l02 = __sxtb16(a), l13 = sxtb16_ror8(a);
        q[0] = q[4 * k] = pack_lo(l02, l13), q[1] = q[4 * k + 1] = pack_hi(l02, l13);
        q[2] = q[3] = q[4 * k + 2] = q[4 * k + 3] = 0;
    }
}

/* Channels c..c+3 of every output pixel (buf: the caller's stack array, weights then ring). */
static __attribute__((noinline)) void dwq_block(const mt_conv_params *p, const int8_t *x, const int8_t *w,
                                                const int32_t *bias, const float *eff, int8_t *y, uint8_t *mask,
                                                int32_t c, uint32_t *buf)
{
    const int32_t k = p->kw, np = k / 2, c_n = p->out_c, out_w = p->out_w, pad = p->pad, s = p->stride;
    uint32_t *const wq = buf, *const ring = buf + dwq_weight_bytes(k) / 4;
    const int32_t cols = (MT_DWQ_BYTES - dwq_weight_bytes(k)) / (k * 16), nz = pack_neg_zero(p->x_zero);
    const int32_t strip = s == 1 ? cols - (k - 1) : cols - np; /* output columns per strip */
    dwq_ctx ctx;
    ctx.c_n = c_n, ctx.mask = mask, ctx.y0 = y, ctx.ring = ring;
    dwq_weights(w + c, k, c_n, wq);
    int unfolded = 0, packed = 1;
    for (int32_t j = 0; j < 4; j++) { /* bias folding as fold_biases */
        const int fold = bias_foldable(bias + c + j, 1, k * k);
        ctx.b[j] = fold ? bias[c + j] : 0, ctx.fb[j] = fold ? 0.0f : (float)bias[c + j], ctx.e[j] = eff[c + j];
        unfolded |= !fold;
        packed &= fold && (__builtin_fabsf((float)ctx.b[j]) + (float)(k * k) * (255.0f * 128.0f)) *
                                  __builtin_fabsf(eff[c + j]) < 32000.0f;
    }
    const dwq_fn kernel = dwq_kernel(k, s, mask != NULL, packed, p->y_zero == -128, unfolded);
    ctx.zero = packed ? (uint32_t)(p->y_zero + 128) * 0x00010001u : (uint32_t)p->y_zero;
    for (int32_t ox0 = 0; ox0 < out_w; ox0 += strip) {
        const int32_t n = out_w - ox0 < strip ? out_w - ox0 : strip;
        const int32_t ncols = s == 1 ? n + k - 1 : n + np;
        /* the ring columns whose pixel pair (ix, ix + 1) reaches the input: ix in [-1, in_w - 1] */
        const int32_t ix0 = s * ox0 - pad, lo = ix0 >= -1 ? 0 : (-1 - ix0 + s - 1) / s;
        int32_t hi = (p->in_w - 1 - ix0) / s + 1;
        if (hi > ncols) hi = ncols;
        /* columns wholly in the padding: 0 (never converted; with one strip they stay 0 from the first block on) */
        for (int32_t i = 0; i < ncols && (c == 0 || strip < out_w); i++)
            if (i == lo) i = hi - 1;
            else for (uint32_t *z = ring + i * 4 * k, *end = z + 4 * k; z != end; z += 4) z[0] = z[1] = z[2] = z[3] = 0;
        dwq_strip st;
        dwq_plan(p, ix0, lo, hi, &st);
        const int32_t row_bytes = p->in_w * c_n;
        int32_t next = -pad, slot = pad ? k - pad : 0; /* the next input row to convert into the ring, its slot */
        int32_t wrow = pad; /* (k - iy0 mod k) mod k: the weights' first row for the first ring slot */
        for (int32_t oy = 0; oy < p->out_h; oy++) {
            const int32_t iy0 = oy * s - pad;
            for (; next < iy0 + k; next++) {
                dwq_convert(&st, next >= 0 && next < p->in_h ? x + c + next * row_bytes : NULL,
                            ring + (slot + lo * k) * 4, nz);
                if (++slot == k) slot = 0;
            }
            ctx.wq = wq + wrow * 4; /* slot t holds kernel row (t - iy0) mod k */
            if ((wrow -= s) < 0) wrow += k;
            ctx.y = y + (oy * out_w + ox0) * c_n + c, ctx.y_end = ctx.y + n * c_n;
            kernel(&ctx);
        }
    }
}

static __attribute__((noinline)) void dw_quad(const mt_conv_params *p, const int8_t *x, const int8_t *w,
                                              const int32_t *bias, const float *eff, int8_t *y, uint8_t *mask)
{
    uint32_t buf[MT_DWQ_BYTES / 4];
    for (int32_t c = 0; c + 4 <= p->out_c; c += 4) dwq_block(p, x, w, bias, eff, y, mask, c, buf);
    for (int32_t c = p->out_c & ~3; c < p->out_c; c++) dw_channel(p, x, w, bias, eff, y, mask, c);
}

static void dw_general(const mt_conv_params *p, const int8_t *x, const int8_t *w, const int32_t *bias,
                       const float *eff, int8_t *y, uint8_t *mask);

void mt_conv_depthwise_s8(const mt_conv_params *p, const int8_t *x, const int8_t *w, const int32_t *bias,
                          const float *eff, int8_t *y, uint8_t *mask)
{
    const int32_t c_n = p->out_c, n_taps = p->kh * p->kw;
    if (n_taps > MT_DW_MAX_TAPS || p->dilation != 1) {
        mt_conv_depthwise_s8_portable(p, x, w, bias, eff, y, mask);
        return;
    }
    if (dw_quad_wanted(p, mask) && all_finite(eff, c_n)) dw_quad(p, x, w, bias, eff, y, mask);
    else dw_general(p, x, w, bias, eff, y, mask);
}

/* mt_conv_depthwise_s8 by dw_inside (and dw_pairs), dw_border / dw_border_rect and dw_channel: a call of its own, so
 * that dw_quad's stack array does not add to its frame. */
static __attribute__((noinline)) void dw_general(const mt_conv_params *p, const int8_t *x, const int8_t *w,
                                                 const int32_t *bias, const float *eff, int8_t *y, uint8_t *mask)
{
    const int32_t c_n = p->out_c, n_taps = p->kh * p->kw;
    int32_t ox_lo, ox_hi, oy_lo, oy_hi;
    inside_range(p->pad, p->stride, p->kw, p->in_w, p->out_w, &ox_lo, &ox_hi);
    inside_range(p->pad, p->stride, p->kh, p->in_h, p->out_h, &oy_lo, &oy_hi);
    /* unpacking the weights per block pays from a few inside pixels on; below, dw_border does them all */
    const int inside = all_finite(eff, c_n) && ox_lo < ox_hi && oy_lo < oy_hi &&
                       (ox_hi - ox_lo) * (oy_hi - oy_lo) >= MT_DW_MIN_INSIDE;
    if (inside) dw_inside(p, x, w, bias, eff, y, mask);
    /* the border by rectangles of unpacked taps where that paid in the mcunet-5fps step: 5- and 7-wide windows on
     * maps of 8x8 and more (7x7 on 8x8: 0.84x the raw path; 3x3 windows 1.04-1.18x, 5x5 on 4x4 1.07x, 7x7 on 2x2
     * 1.3x: per-block tap unpacking and per-pixel setup outweigh 5 instructions saved per tap) */
    const int32_t n_border = p->out_h * p->out_w - (inside ? (ox_hi - ox_lo) * (oy_hi - oy_lo) : 0);
    if (p->kw >= 5 && p->kw <= 7 && p->in_h * p->in_w >= 64 && n_border * p->kw >= 2 * n_taps)
        dw_border_rect(p, x, w, bias, eff, y, mask, inside);
    else if (n_border) dw_border(p, x, w, bias, eff, y, mask, inside);
    for (int32_t c = c_n & ~3; c < c_n; c++) dw_channel(p, x, w, bias, eff, y, mask, c);
}

/* Depthwise conv that may write over its own input (y == x allowed), as the portable kernel: channel by channel,
 * the input plane copied to `plane` before that channel's outputs are written; the same int32 sums (inside the
 * input: sum of x * w minus x_zero * sum(w), exact; border windows: their valid taps only) and store_out's
 * requantisation. Faster by its loops: a 3x3 window inside the input is unrolled with the nine weights in
 * registers (the portable kernel walks a tap array), the inside test is made per row and pixel without the
 * general border walk. */
#define MT_DWI_TAPS_MAX 49
static int32_t dw_plane_border(const mt_conv_params *p, const int8_t *plane, const int8_t *w, int32_t oy, int32_t ox)
{
    int32_t acc = 0;
    for (int32_t ky = 0; ky < p->kh; ky++) {
        const int32_t iy = oy * p->stride - p->pad + ky;
        if (iy < 0 || iy >= p->in_h) continue;
        for (int32_t kx = 0; kx < p->kw; kx++) {
            const int32_t ix = ox * p->stride - p->pad + kx;
            if (ix < 0 || ix >= p->in_w) continue;
            acc += ((int32_t)plane[iy * p->in_w + ix] - p->x_zero) * (int32_t)w[(ky * p->kw + kx) * p->out_c];
        }
    }
    return acc;
}

/* dwi_run3's per-channel values: per window row the taps 0 and 2 as int16 lanes and tap 1, -x_zero * sum(w), the
 * plane's row length, the stride, the output step, y_zero, the float bias and the (finite) multiplier. */
typedef struct {
    int32_t w[6];
    int32_t nzsum, in_w, stride, c_n, y_zero;
    float fb, e;
} dwi_run;

/* n outputs (c_n apart from y) of 3x3 windows inside an int8 channel plane, the first at r, `stride` apart: a word
 * per window row (bytes 0..3; the caller keeps the 4th inside the plane), taps 0 and 2 by one SMLAD on the SXTB16
 * lanes, tap 1 by SMLABB on the odd lanes: the exact int32 sum of x * w minus x_zero * sum(w), as the scalar loop;
 * requantised as store_out without a mask (requant_finite). */
static __attribute__((noinline)) void dwi_run3(const dwi_run *q, const int8_t *r, int8_t *y, int32_t n)
{
    const int32_t w02a = q->w[0], w1a = q->w[1], w02b = q->w[2], w1b = q->w[3], w02c = q->w[4], w1c = q->w[5];
    const int32_t nzsum = q->nzsum, in_w = q->in_w, stride = q->stride, c_n = q->c_n, y_zero = q->y_zero;
    const float fb = q->fb, e = q->e;
    for (; n > 0; n--, r += stride, y += c_n) {
        const uint32_t v0 = load_u32(r), v1 = load_u32(r + in_w), v2 = load_u32(r + 2 * in_w);
        int32_t acc = __smlad(__sxtb16(v0), w02a, nzsum);
        acc = __smlabb(sxtb16_ror8(v0), w1a, acc);
        acc = __smlad(__sxtb16(v1), w02b, acc);
        acc = __smlabb(sxtb16_ror8(v1), w1b, acc);
        acc = __smlad(__sxtb16(v2), w02c, acc);
        acc = __smlabb(sxtb16_ror8(v2), w1c, acc);
        *y = requant_finite(acc, fb, e, y_zero);
    }
}

void mt_conv_depthwise_inplace_s8_portable(const mt_conv_params *p, const int8_t *x, const int8_t *w,
                                           const int32_t *bias, const float *eff, int8_t *y, uint8_t *mask,
                                           int8_t *plane);

void mt_conv_depthwise_inplace_s8(const mt_conv_params *p, const int8_t *x, const int8_t *w, const int32_t *bias,
                                  const float *eff, int8_t *y, uint8_t *mask, int8_t *plane)
{
    if (p->dilation != 1) {
        mt_conv_depthwise_inplace_s8_portable(p, x, w, bias, eff, y, mask, plane);
        return;
    }
    const int32_t in_w = p->in_w, n_in = p->in_h * in_w, taps = p->kh * p->kw, s = p->stride, out_c = p->out_c;
    const int inside_ok = taps <= MT_DWI_TAPS_MAX, k3 = p->kh == 3 && p->kw == 3;
    int32_t wv[MT_DWI_TAPS_MAX] = {0};
    for (int32_t c = 0; c < out_c; c++) {
        const int8_t *xc = x + c;
        for (int32_t i = 0; i < n_in; i++, xc += p->in_c) plane[i] = *xc;
        int32_t zsum = 0;
        for (int32_t t = 0; t < taps && t < MT_DWI_TAPS_MAX; t++) zsum += wv[t] = w[t * out_c + c];
        zsum *= p->x_zero;
        const int32_t w0 = wv[0], w1 = wv[1], w2 = wv[2], w3 = wv[3], w4 = wv[4], w5 = wv[5], w6 = wv[6], w7 = wv[7],
                      w8 = wv[8]; /* used only when k3 */
        const int32_t b = bias[c], zy = p->y_zero;
        const float e = eff[c];
        /* 3x3 windows inside the input, no mask, finite multiplier: runs of a row by dwi_run3 */
        const int run3 = k3 && inside_ok && !mask && is_finite(e);
        const dwi_run ctx3 = {{(int32_t)(((uint32_t)w0 & 0xFFFFu) | ((uint32_t)w2 << 16)), w1,
                               (int32_t)(((uint32_t)w3 & 0xFFFFu) | ((uint32_t)w5 << 16)), w4,
                               (int32_t)(((uint32_t)w6 & 0xFFFFu) | ((uint32_t)w8 << 16)), w7},
                              -zsum, in_w, s, out_c, zy, (float)b, e};
        for (int32_t oy = 0; oy < p->out_h; oy++) {
            const int32_t iy0 = oy * s - p->pad, row_inside = inside_ok && iy0 >= 0 && iy0 + p->kh <= p->in_h;
            int32_t i = oy * p->out_w * out_c + c;
            for (int32_t ox = 0; ox < p->out_w; ox++, i += out_c) {
                const int32_t ix0 = ox * s - p->pad;
                int32_t acc;
                if (run3 && row_inside && ix0 >= 0 && ix0 + 3 <= in_w) { /* the row's inside windows whose word
                                                                                  * loads stay in the plane */
                    int32_t n = (in_w - 3 - ix0) / s + 1;
                    if (n > p->out_w - ox) n = p->out_w - ox;
                    if ((iy0 + 2) * in_w + ix0 + (n - 1) * s + 4 > n_in) n--; /* the plane's last window: bytes */
                    if (n > 0) {
                        dwi_run3(&ctx3, plane + iy0 * in_w + ix0, y + i, n);
                        ox += n - 1, i += (n - 1) * out_c;
                        continue;
                    }
                }
                if (row_inside && ix0 >= 0 && ix0 + p->kw <= in_w) {
                    const int8_t *r = plane + iy0 * in_w + ix0;
                    if (k3) {
                        const int8_t *r1 = r + in_w, *r2 = r1 + in_w;
                        acc = r[0] * w0 + r[1] * w1 + r[2] * w2 + r1[0] * w3 + r1[1] * w4 + r1[2] * w5 +
                              r2[0] * w6 + r2[1] * w7 + r2[2] * w8 - zsum;
                    } else {
                        const int32_t *wt = wv;
                        acc = -zsum;
                        for (int32_t ky = 0; ky < p->kh; ky++, r += in_w)
                            for (int32_t kx = 0; kx < p->kw; kx++) acc += (int32_t)r[kx] * *wt++;
                    }
                } else {
                    acc = dw_plane_border(p, plane, w + c, oy, ox);
                }
                store_out(y, mask, i, acc, b, e, zy);
            }
        }
    }
}

/* Residual add, mt_add_requant_s8's result and clamp bit: (float)q - (float)z is the exact small integer q - z
 * converted once, the sum divided by sy (VDIV: correctly rounded, as the C division), and the rounding and
 * clamp done as in store_out (VCVTR, QADD, SSAT: the same result as the magic-number rounding after clamping
 * t to +-MT_SAT_LIMIT, both saturating beyond it). Two elements per pass; scales that are not finite, or
 * sy == 0, go to the portable kernel. y may alias skip or main_in (each element read before written). */
void mt_add_s8_portable(const mt_add_params *p, const int8_t *skip, const int8_t *main_in, int8_t *y,
                        uint8_t *mask);
static inline int32_t add_one(int32_t q1, int32_t q2, const mt_add_params *p, float s1, float s2, float sy,
                              int32_t *v)
{
    const float a = (float)(q1 - p->z1) * s1, b = (float)(q2 - p->z2) * s2;
    *v = __qadd(rint_s32((a + b) / sy), p->zy);
    return __ssat(*v, 8);
}

void mt_add_s8(const mt_add_params *p, const int8_t *skip, const int8_t *main_in, int8_t *y, uint8_t *mask)
{
    const float s1 = p->s1, s2 = p->s2, sy = p->sy;
    if (!is_finite(s1) || !is_finite(s2) || !is_finite(sy) || sy == 0.0f) {
        mt_add_s8_portable(p, skip, main_in, y, mask);
        return;
    }
    const int32_t n = p->size;
    int32_t i = 0, v0, v1;
    if (!mask) {
        for (; i + 2 <= n; i += 2) {
            const int32_t a0 = skip[i], b0 = main_in[i], a1 = skip[i + 1], b1 = main_in[i + 1];
            y[i] = (int8_t)add_one(a0, b0, p, s1, s2, sy, &v0);
            y[i + 1] = (int8_t)add_one(a1, b1, p, s1, s2, sy, &v1);
        }
    }
    if (mask) /* a mask byte's eight clamp bits gathered in a register and stored once */
        for (; i + 8 <= n; i += 8) {
            uint32_t bits = 0;
            for (int32_t k = 0; k < 8; k++) {
                const int32_t q = add_one(skip[i + k], main_in[i + k], p, s1, s2, sy, &v0);
                y[i + k] = (int8_t)q;
                bits |= (uint32_t)(q == v0) << k;
            }
            mask[i >> 3] = (uint8_t)bits;
        }
    for (; i < n; i++) {
        const int32_t q = add_one(skip[i], main_in[i], p, s1, s2, sy, &v0);
        y[i] = (int8_t)q;
        if (mask) {
            const uint8_t bit = (uint8_t)(1u << (i & 7));
            mask[i >> 3] = q == v0 ? (uint8_t)(mask[i >> 3] | bit) : (uint8_t)(mask[i >> 3] & (uint8_t)~bit);
        }
    }
}

#endif /* __ARM_FEATURE_DSP */

/* mt_backward_f32_fast.c: Cortex-M variants of the heaviest float32 backward kernels of ../mt_backward_f32.c,
 * same signatures, bit-identical results.
 *
 * Every output element is computed by exactly the float32 operation sequence of the portable kernel (same
 * terms, same order, separate multiply and add: built with -ffp-contract=off), so nothing changes but the
 * loop structure, which cuts executed instructions, and each multiply-add is one VMLA (mla_f32: the product
 * rounded, then the sum; not fused) where gcc emits VMUL and VADD:
 * - input gradient of a pointwise conv: groups of 8 input channels in 2-pixel x 8-channel tiles (16 accumulators
 *   in s0-s15; per 4 output channels one VLDM of each pixel's 4 gradient values, per output channel one VLDM of
 *   its 8 weights and 16 VMLA: 70 instructions for 64 MACs), the int8 weights converted to float once per call,
 *   8 channels x MT_GI8_CHUNK output channels at a time, into a stack buffer reused by every pixel (a byte-indexed
 *   table of the 256 floats and one STM: 20 instructions per 8 weights); on a stride-1 map with whole chunks the
 *   pixel-pair loop runs inside the asm too. Channels left over: one group of 6 (3 or 4 pixels x 6 channels per
 *   tile, the same buffer), one of 4 (4 x 4), then one at a time. A weight split into indexed frozen and trained
 *   channels (at most MT_GI_PERM_MAX of them, stride 1) is computed in block order, each block's channels
 *   contiguous, and every row permuted once at the end. Output channels whose gradient is +0.0 at every pixel
 *   (dead ReLU channels; all of them on the first step after a zero-initialised head) are left out when that
 *   pays (live_compact: gacc compacted in place and restored bit for bit; the weight rows by a list); on a
 *   stride-1 map with contiguous weight blocks of multiples of 8 channels, the channels +0.0 at both pixels of
 *   a pixel pair instead, when the first pair says it pays (pair_compact: each pair's live values compacted in
 *   place, its channel list in the freed tail; grad_input_sparse_2x8 runs a tile over a list);
 * - input gradient of a depthwise conv (one whole weight, no channel index): with stride 1 and at most 25 taps,
 *   16 channels per pass (per tap four VLDM and 16 VMLA), else 8 (two VLDM, 8 VMLA), the tap loops of each pixel
 *   in asm; the valid taps of a pixel are a row range times a column range (the columns tabulated once per call,
 *   the weight columns of a row ordered by v mod stride so a pixel's taps are consecutive), summed in (u, v)
 *   order from 0.0f; the channels beyond the last group of 8 as before (tap list, 4 channels then 1); an indexed
 *   weight: the channel loop innermost, accumulating in place in tap order;
 * - fused weight update of a pointwise conv: 8 output x 2 input channels per pass (the 8 gradient values by
 *   one VLDM), else 4 x 2, so each (x - x_zero) and each gradient value is loaded and converted once for
 *   several products; on maps of up to MT_WU_PIXELS pixels each pair of inputs is converted once per call (two
 *   pixels per pass: 38 instructions for 32 MACs); the int8 update itself in 32-bit integers when |t| < 2^30
 *   (update_s8_fast: the same result as mt_update_s8; the uniform draw by a fixed-point VCVT, floor by VCVTM on
 *   the Cortex-M7, the clamp by SSAT);
 * - the masked gradient of a conv output: a pixel loop over channels instead of a per-element counter, one
 *   mask byte per 8 channels when c % 8 == 0, both loops in asm (27 instructions per 8 elements);
 * - fused bias update: 16 channels per pass over the positions (one VLDM, 16 VADD), then four; the int32 update
 *   as the int8 one, none for a sum of +0.0 (dead channels: the bias would not change);
 * - a residual add's input gradient (mt_add_grad_f32): eight elements per pass as the masked gradient (25);
 * - the sum of two gradients (mt_grad_sum_f32): eight elements per pass (13 instructions);
 * - a global average pool's input gradient: one row divided, the others copied by VLDM / VSTM.
 * Stack (gcc -fstack-usage, Cortex-M7 -O2): the deepest frames are grad_input_pointwise_block's 1,936 B (its
 * 1,536-byte weight buffer, below mt_conv_grad_input_pointwise_f32's 128 B), dw_grad_in_group8's 1,880 B,
 * dw_grad_in_group16's 1,872 B and live_compact's 1,680 B (its channel list); the depthwise groups and
 * live_compact / live_expand are noinline so only one of these buffers is on the stack at a time.
 * A dilated depthwise conv (dilation > 1) runs the portable kernel.
 * Chosen at build time like the SIMD kernels (targets/cortex_m/mt_cortex_m.mk renames the portable ones). */
#include <arm_acle.h>

#include "mt_arith.h"
#include "mt_kernels.h"
#include "mt_update.h"

/* acc + a * b with the product rounded to float before the add: VMLA (FPMul then FPAdd in the ARMv7-M
 * pseudocode, not fused like VFMA), the same result as `acc += a * b` under -ffp-contract=off in one
 * instruction where gcc emits VMUL and VADD. */
static inline float mla_f32(float acc, float a, float b)
{
#if defined(__ARM_FP)
    __asm__("vmla.f32 %0, %1, %2" : "+t"(acc) : "t"(a), "t"(b));
    return acc;
#else
    return acc + a * b;
#endif
}

static inline int32_t chan(const int16_t *idx, int32_t j) { return idx ? idx[j] : j; }

/* The weight row of (compacted) output channel o: rows[o] when the dead channels were dropped (live_compact). */
static inline int32_t wrow(const uint16_t *rows, int32_t o) { return rows ? rows[o] : o; }

static const float zeros8[8];
static const float zeros16[16];

/* Products of one 8-element block whose clamp bits are the byte in m: gy in s0-s7, factors in s8-s15, the results
 * (preset to +0.0) in s16-s23, each VMUL conditional on its bit (LSLS puts two bits in N and C). */
#define GACC_BLOCK                                                                                                \
    "lsls    %[t], %[m], #31\n\t"                                                                                 \
    "it      mi\n\tvmulmi.f32 s16, s0, s8\n\t"                                                                    \
    "it      cs\n\tvmulcs.f32 s17, s1, s9\n\t"                                                                    \
    "lsls    %[t], %[m], #29\n\t"                                                                                 \
    "it      mi\n\tvmulmi.f32 s18, s2, s10\n\t"                                                                   \
    "it      cs\n\tvmulcs.f32 s19, s3, s11\n\t"                                                                   \
    "lsls    %[t], %[m], #27\n\t"                                                                                 \
    "it      mi\n\tvmulmi.f32 s20, s4, s12\n\t"                                                                   \
    "it      cs\n\tvmulcs.f32 s21, s5, s13\n\t"                                                                   \
    "lsls    %[t], %[m], #25\n\t"                                                                                 \
    "it      mi\n\tvmulmi.f32 s22, s6, s14\n\t"                                                                   \
    "it      cs\n\tvmulcs.f32 s23, s7, s15\n\t"

/* g = mask ? gy * eff[channel] : 0 over `pixels` pixels of c8 * 8 channels (c % 8 == 0: every mask byte holds
 * eight channels of one pixel), both loops in asm: per 8 elements the mask byte, three VLDM (gradients, factors,
 * zeros), the conditional products and one VSTM: 27 instructions (g may alias gy: a block is loaded before it
 * is stored). */
static void grad_acc_pixels(const float *gy, const uint8_t *mask, const float *eff, int32_t c8, int32_t pixels,
                            float *g)
{
    const float *e;
    int32_t k;
    uint32_t m, t;
    __asm__ volatile("0:\n\t"
                     "mov     %[e], %[eff]\n\t"
                     "mov     %[k], %[c8]\n"
                     "1:\n\t"
                     "ldrb    %[m], [%[mask]], #1\n\t"
                     "vldmia  %[gy]!, {s0-s7}\n\t"
                     "vldmia  %[e]!, {s8-s15}\n\t"
                     "vldmia  %[z], {s16-s23}\n\t" GACC_BLOCK
                     "vstmia  %[g]!, {s16-s23}\n\t"
                     "subs    %[k], %[k], #1\n\t"
                     "bne     1b\n\t"
                     "subs    %[n], %[n], #1\n\t"
                     "bne     0b\n\t"
                     : [gy] "+r"(gy), [mask] "+r"(mask), [g] "+r"(g), [n] "+r"(pixels), [e] "=&r"(e), [k] "=&r"(k),
                       [m] "=&r"(m), [t] "=&r"(t)
                     : [eff] "r"(eff), [c8] "r"(c8), [z] "r"(zeros8)
                     : "s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9", "s10", "s11", "s12", "s13", "s14",
                       "s15", "s16", "s17", "s18", "s19", "s20", "s21", "s22", "s23", "memory", "cc");
}

/* g = mask ? gy * eff[channel] : 0, pixel by pixel (no per-element channel counter); with c % 8 == 0 every
 * mask byte holds eight channels of one pixel and is loaded once for them (grad_acc_pixels). */
void mt_conv_grad_acc_f32(const float *gy, const uint8_t *mask, const float *eff, int32_t n, int32_t c, float *g)
{
    int32_t i = 0;
    if ((c & 7) == 0 && c > 0 && n >= c) {
        const int32_t pixels = n / c;
        grad_acc_pixels(gy, mask, eff, c >> 3, pixels, g);
        i = pixels * c;
    }
    for (; i + c <= n; i += c)
        for (int32_t ch = 0; ch < c; ch++) {
            int32_t k = i + ch;
            g[k] = ((mask[k >> 3] >> (k & 7)) & 1) ? gy[k] * eff[ch] : 0.0f;
        }
    for (int32_t ch = 0; i < n; i++, ch++) /* n is a whole number of pixels; kept for safety */
        g[i] = ((mask[i >> 3] >> (i & 7)) & 1) ? gy[i] * eff[ch] : 0.0f;
}

/* g = mask ? gy * scale : 0 over n elements (a residual add's input gradient; g may alias gy): eight at a time
 * as grad_acc_pixels with one factor, the loop in asm (25 instructions per 8), the rest one by one. */
void mt_add_grad_f32(const float *gy, const uint8_t *mask, float scale, int32_t n, float *g)
{
    int32_t blocks = n >> 3, i = blocks << 3;
    if (blocks > 0) {
        const float *gp = gy;
        const uint8_t *mp = mask;
        float *out = g;
        uint32_t m, t;
        __asm__ volatile("1:\n\t"
                         "ldrb    %[m], [%[mp]], #1\n\t"
                         "vldmia  %[gp]!, {s0-s7}\n\t"
                         "vldmia  %[z], {s16-s23}\n\t"
                         "lsls    %[t], %[m], #31\n\t"
                         "it      mi\n\tvmulmi.f32 s16, s0, %[sc]\n\t"
                         "it      cs\n\tvmulcs.f32 s17, s1, %[sc]\n\t"
                         "lsls    %[t], %[m], #29\n\t"
                         "it      mi\n\tvmulmi.f32 s18, s2, %[sc]\n\t"
                         "it      cs\n\tvmulcs.f32 s19, s3, %[sc]\n\t"
                         "lsls    %[t], %[m], #27\n\t"
                         "it      mi\n\tvmulmi.f32 s20, s4, %[sc]\n\t"
                         "it      cs\n\tvmulcs.f32 s21, s5, %[sc]\n\t"
                         "lsls    %[t], %[m], #25\n\t"
                         "it      mi\n\tvmulmi.f32 s22, s6, %[sc]\n\t"
                         "it      cs\n\tvmulcs.f32 s23, s7, %[sc]\n\t"
                         "vstmia  %[out]!, {s16-s23}\n\t"
                         "subs    %[n], %[n], #1\n\t"
                         "bne     1b\n\t"
                         : [gp] "+r"(gp), [mp] "+r"(mp), [out] "+r"(out), [n] "+r"(blocks), [m] "=&r"(m), [t] "=&r"(t)
                         : [z] "r"(zeros8), [sc] "t"(scale)
                         : "s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7", "s16", "s17", "s18", "s19", "s20", "s21",
                           "s22", "s23", "memory", "cc");
    }
    for (; i < n; i++) g[i] = ((mask[i >> 3] >> (i & 7)) & 1) ? gy[i] * scale : 0.0f;
}

/* out = a + b over n elements (two gradients of one tensor; out may alias a or b: a block is loaded before it is
 * stored): 8 per loop pass by two VLDM, 8 VADD and one VSTM (13 instructions), the rest one by one. */
void mt_grad_sum_f32(const float *a, const float *b, int32_t n, float *out)
{
    int32_t blocks = n >> 3, i = blocks << 3;
    if (blocks > 0) {
        const float *pa = a, *pb = b;
        float *po = out;
        __asm__ volatile("1:\n\t"
                         "vldmia  %[pa]!, {s0-s7}\n\t"
                         "vldmia  %[pb]!, {s8-s15}\n\t"
                         "vadd.f32 s0, s0, s8\n\tvadd.f32 s1, s1, s9\n\tvadd.f32 s2, s2, s10\n\t"
                         "vadd.f32 s3, s3, s11\n\tvadd.f32 s4, s4, s12\n\tvadd.f32 s5, s5, s13\n\t"
                         "vadd.f32 s6, s6, s14\n\tvadd.f32 s7, s7, s15\n\t"
                         "vstmia  %[po]!, {s0-s7}\n\t"
                         "subs    %[n], %[n], #1\n\t"
                         "bne     1b\n\t"
                         : [pa] "+r"(pa), [pb] "+r"(pb), [po] "+r"(po), [n] "+r"(blocks)
                         :
                         : "s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9", "s10", "s11", "s12", "s13",
                           "s14", "s15", "memory", "cc");
    }
    for (; i < n; i++) out[i] = a[i] + b[i];
}

/* The input gradient of a global average pool: every position gets gy[ch] / hw. The first row computed (each
 * channel's one division, as the portable kernel), the others copied from it eight floats per VLDM / VSTM pair;
 * the portable loops when gy lies in those other rows. */
void mt_pool_grad_f32_portable(const float *gy, int32_t hw, int32_t c, float *gx);

void mt_pool_grad_f32(const float *gy, int32_t hw, int32_t c, float *gx)
{
    if (hw < 1 || c < 1 || (gy + c > gx + c && gy < gx + hw * c)) {
        mt_pool_grad_f32_portable(gy, hw, c, gx);
        return;
    }
    const float n = (float)hw;
    for (int32_t ch = 0; ch < c; ch++) gx[ch] = gy[ch] / n;
    const int32_t c8 = c & ~7;
    for (float *row = gx + c, *end = gx + hw * c; row != end; row += c) {
        const float *src = gx;
        float *dst = row;
        for (int32_t k = 0; k < c8; k += 8)
            __asm__ volatile("vldmia  %[s]!, {s0-s7}\n\t"
                             "vstmia  %[d]!, {s0-s7}\n\t"
                             : [s] "+r"(src), [d] "+r"(dst)
                             :
                             : "s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7", "memory");
        for (int32_t k = c8; k < c; k++) row[k] = gx[k];
    }
}

static inline float *grad_pixel(const mt_conv_params *p, float *gx, int32_t pix)
{
    int32_t oy = pix / p->out_w, ox = pix - oy * p->out_w;
    return gx + ((oy * p->stride) * p->in_w + ox * p->stride) * p->in_c;
}

/* Weights converted to float per pass of grad_input_pointwise_block: 6 (or 4) input channels x this many output
 * channels (a stack buffer of 24 * MT_GI_CHUNK bytes). */
#ifndef MT_GI_CHUNK
#define MT_GI_CHUNK 64
#endif
/* The same for groups of 8 input channels (the same stack buffer: 32 * MT_GI8_CHUNK bytes). */
#ifndef MT_GI8_CHUNK
#define MT_GI8_CHUNK 48
#endif

/* dst[0..3] = (float)src[0..3]; returns dst + 4. One word load, the bytes sign-extended, moved to the FPU two
 * at a time and stored by one VSTM (gcc converts byte by byte: 4 loads, 4 moves, 4 stores). The conversions
 * are exact. */
static inline float *float4_s8(const int8_t *src, float *dst)
{
    uint32_t v, a, b, c, d;
    __asm__ volatile("ldr     %[v], [%[src]]\n\t"
                     "sxtb    %[a], %[v]\n\t"
                     "sxtb    %[b], %[v], ror #8\n\t"
                     "sxtb    %[c], %[v], ror #16\n\t"
                     "sxtb    %[d], %[v], ror #24\n\t"
                     "vmov    s0, s1, %[a], %[b]\n\t"
                     "vmov    s2, s3, %[c], %[d]\n\t"
                     "vcvt.f32.s32 s0, s0\n\t"
                     "vcvt.f32.s32 s1, s1\n\t"
                     "vcvt.f32.s32 s2, s2\n\t"
                     "vcvt.f32.s32 s3, s3\n\t"
                     "vstmia  %[dst]!, {s0-s3}\n\t"
                     : [dst] "+r"(dst), [v] "=&r"(v), [a] "=&r"(a), [b] "=&r"(b), [c] "=&r"(c), [d] "=&r"(d)
                     : [src] "r"(src)
                     : "s0", "s1", "s2", "s3", "memory");
    return dst;
}

/* dst[0..5] = (float)src[0..5]; returns dst + 6: as float4_s8, the last two bytes by one halfword load (both
 * loads may be unaligned: LDR and LDRH allow it on the Cortex-M4/M7). */
static inline float *float6_s8(const int8_t *src, float *dst)
{
    uint32_t v, h, a, b, c, d;
    __asm__ volatile("ldr     %[v], [%[src]]\n\t"
                     "ldrh    %[h], [%[src], #4]\n\t"
                     "sxtb    %[a], %[v]\n\t"
                     "sxtb    %[b], %[v], ror #8\n\t"
                     "sxtb    %[c], %[v], ror #16\n\t"
                     "sxtb    %[d], %[v], ror #24\n\t"
                     "vmov    s0, s1, %[a], %[b]\n\t"
                     "vmov    s2, s3, %[c], %[d]\n\t"
                     "sxtb    %[a], %[h]\n\t"
                     "sxtb    %[b], %[h], ror #8\n\t"
                     "vmov    s4, s5, %[a], %[b]\n\t"
                     "vcvt.f32.s32 s0, s0\n\t"
                     "vcvt.f32.s32 s1, s1\n\t"
                     "vcvt.f32.s32 s2, s2\n\t"
                     "vcvt.f32.s32 s3, s3\n\t"
                     "vcvt.f32.s32 s4, s4\n\t"
                     "vcvt.f32.s32 s5, s5\n\t"
                     "vstmia  %[dst]!, {s0-s5}\n\t"
                     : [dst] "+r"(dst), [v] "=&r"(v), [h] "=&r"(h), [a] "=&r"(a), [b] "=&r"(b), [c] "=&r"(c),
                       [d] "=&r"(d)
                     : [src] "r"(src)
                     : "s0", "s1", "s2", "s3", "s4", "s5", "memory");
    return dst;
}

/* One output channel of a 4-pixel x 6-channel tile: gradient value of pixel k (post-incremented pointer gk)
 * into s30, times the six weights s24-s29, each product added to its accumulator s(6k)..s(6k+5) by VMLA: the
 * product rounded to float, then the sum rounded (FPMul then FPAdd in the ARMv7-M pseudocode; not fused like
 * VFMA), the same two operations as VMUL and VADD in one instruction. */
#define GI_MA(acc, w) "vmla.f32 " acc ", s30, " w "\n\t"
#define GI_PIXEL(g, a0, a1, a2, a3, a4, a5)                                                                       \
    "vldmia  %[" g "]!, {s30}\n\t" GI_MA(a0, "s24") GI_MA(a1, "s25") GI_MA(a2, "s26") GI_MA(a3, "s27")             \
        GI_MA(a4, "s28") GI_MA(a5, "s29")
#define GI_STEP                                                                                                   \
    "vldmia  %[wp]!, {s24-s29}\n\t" GI_PIXEL("g0", "s0", "s1", "s2", "s3", "s4", "s5")                             \
        GI_PIXEL("g1", "s6", "s7", "s8", "s9", "s10", "s11") GI_PIXEL("g2", "s12", "s13", "s14", "s15", "s16", "s17") \
            GI_PIXEL("g3", "s18", "s19", "s20", "s21", "s22", "s23")

/* The 6 sums of pixel k of a tile, s(6k)..s(6k+5), from and to the 6 floats at src[k] / dst[k] (pointer arrays). */
#define GI_LOAD(k, regs) "ldr     %[t], [%[src], #" #k "*4]\n\tvldmia  %[t], {" regs "}\n\t"
#define GI_STORE(k, regs) "ldr     %[t], [%[dst], #" #k "*4]\n\tvstmia  %[t], {" regs "}\n\t"

/* dst[k][j] (pixel k, channel j) = src[k][j] + sum over the on output channels of g[k * out_c + o] * wf[6o + j],
 * each sum in ascending o, one product added at a time (the portable order); the 24 sums stay in s0-s23 for the
 * whole chunk. Two output channels per loop pass (entering at the second when on is odd). The whole FPU
 * register file is used, hence asm. */
static void grad_input_tile_4x6(const float *g, int32_t out_c, const float *wf, int32_t on, const float *const *src,
                                float *const *dst)
{
    const float *g0 = g, *g1 = g + out_c, *g2 = g + 2 * out_c, *g3 = g + 3 * out_c, *wp = wf, *end = wf + 6 * on;
    uint32_t t;
    __asm__ volatile(GI_LOAD(0, "s0-s5") GI_LOAD(1, "s6-s11") GI_LOAD(2, "s12-s17") GI_LOAD(3, "s18-s23")
                     "tst     %[on], #1\n\t"
                     "bne     2f\n"
                     "1:\n\t" GI_STEP "2:\n\t" GI_STEP
                     "cmp     %[wp], %[end]\n\t"
                     "bne     1b\n\t"
                     GI_STORE(0, "s0-s5") GI_STORE(1, "s6-s11") GI_STORE(2, "s12-s17") GI_STORE(3, "s18-s23")
                     : [wp] "+r"(wp), [g0] "+r"(g0), [g1] "+r"(g1), [g2] "+r"(g2), [g3] "+r"(g3), [t] "=&r"(t)
                     : [src] "r"(src), [dst] "r"(dst), [end] "r"(end), [on] "r"(on)
                     : "s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9", "s10", "s11", "s12", "s13", "s14",
                       "s15", "s16", "s17", "s18", "s19", "s20", "s21", "s22", "s23", "s24", "s25", "s26", "s27",
                       "s28", "s29", "s30", "s31", "memory", "cc");
}

/* The same for a 3-pixel x 6-channel tile, two output channels per step: their twelve weights in s18-s29, each
 * pixel's two gradient values (adjacent in gacc) by one VLDM into s30-s31, each accumulator s(6k)..s(6k+5) taking
 * output channel o's product then o + 1's (ascending o, as in the portable kernel): 40 instructions for 36 MACs
 * (the 4-pixel tile: 29 for 24). An odd channel count starts with one single step. */
#define GI3_MA2(acc, j) "vmla.f32 " acc ", s30, s" #j "\n\t"
#define GI3_PIXEL2(g, a0, a1, a2, a3, a4, a5)                                                                     \
    "vldmia  %[" g "]!, {s30-s31}\n\t" GI3_MA2(a0, 18) GI3_MA2(a1, 19) GI3_MA2(a2, 20) GI3_MA2(a3, 21)          \
        GI3_MA2(a4, 22) GI3_MA2(a5, 23) "vmla.f32 " a0 ", s31, s24\n\t" "vmla.f32 " a1 ", s31, s25\n\t"         \
        "vmla.f32 " a2 ", s31, s26\n\t" "vmla.f32 " a3 ", s31, s27\n\t" "vmla.f32 " a4 ", s31, s28\n\t"        \
        "vmla.f32 " a5 ", s31, s29\n\t"
#define GI3_PIXEL1(g, a0, a1, a2, a3, a4, a5)                                                                     \
    "vldmia  %[" g "]!, {s30}\n\t" GI3_MA2(a0, 18) GI3_MA2(a1, 19) GI3_MA2(a2, 20) GI3_MA2(a3, 21)               \
        GI3_MA2(a4, 22) GI3_MA2(a5, 23)
#define GI3_STEP2                                                                                                 \
    "vldmia  %[wp]!, {s18-s29}\n\t" GI3_PIXEL2("g0", "s0", "s1", "s2", "s3", "s4", "s5")                          \
        GI3_PIXEL2("g1", "s6", "s7", "s8", "s9", "s10", "s11") GI3_PIXEL2("g2", "s12", "s13", "s14", "s15", "s16", "s17")
#define GI3_STEP1                                                                                                 \
    "vldmia  %[wp]!, {s18-s23}\n\t" GI3_PIXEL1("g0", "s0", "s1", "s2", "s3", "s4", "s5")                          \
        GI3_PIXEL1("g1", "s6", "s7", "s8", "s9", "s10", "s11") GI3_PIXEL1("g2", "s12", "s13", "s14", "s15", "s16", "s17")

static void grad_input_tile_3x6(const float *g, int32_t out_c, const float *wf, int32_t on, const float *const *src,
                                float *const *dst)
{
    const float *g0 = g, *g1 = g + out_c, *g2 = g + 2 * out_c, *wp = wf, *end = wf + 6 * on;
    uint32_t t;
    __asm__ volatile(GI_LOAD(0, "s0-s5") GI_LOAD(1, "s6-s11") GI_LOAD(2, "s12-s17")
                     "tst     %[on], #1\n\t"
                     "beq     1f\n\t" GI3_STEP1
                     "cmp     %[wp], %[end]\n\t"
                     "beq     2f\n"
                     "1:\n\t" GI3_STEP2
                     "cmp     %[wp], %[end]\n\t"
                     "bne     1b\n"
                     "2:\n\t" GI_STORE(0, "s0-s5") GI_STORE(1, "s6-s11") GI_STORE(2, "s12-s17")
                     : [wp] "+r"(wp), [g0] "+r"(g0), [g1] "+r"(g1), [g2] "+r"(g2), [t] "=&r"(t)
                     : [src] "r"(src), [dst] "r"(dst), [end] "r"(end), [on] "r"(on)
                     : "s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9", "s10", "s11", "s12", "s13", "s14",
                       "s15", "s16", "s17", "s18", "s19", "s20", "s21", "s22", "s23", "s24", "s25", "s26", "s27",
                       "s28", "s29", "s30", "s31", "memory", "cc");
}

/* 4 pixels x 4 input channels of gx for output channels o0 .. o0 + on - 1, continuing the sums already in gx
 * (or from 0.0f for the first chunk, first = 1): each element's terms are added in ascending o as in the
 * portable kernel, and a float stored and reloaded between chunks is unchanged, so the result is the same.
 * wf holds the weights as float, 4 per output channel. */
static void grad_input_tile_4x4(const float *g, int32_t out_c, const float *wf, int32_t on, int first, float *x0,
                                float *x1, float *x2, float *x3, int32_t c0, int32_t c1, int32_t c2, int32_t c3)
{
    float a00, a01, a02, a03, a10, a11, a12, a13, a20, a21, a22, a23, a30, a31, a32, a33;
    if (first) {
        a00 = a01 = a02 = a03 = a10 = a11 = a12 = a13 = 0.0f;
        a20 = a21 = a22 = a23 = a30 = a31 = a32 = a33 = 0.0f;
    } else {
        a00 = x0[c0], a01 = x0[c1], a02 = x0[c2], a03 = x0[c3];
        a10 = x1[c0], a11 = x1[c1], a12 = x1[c2], a13 = x1[c3];
        a20 = x2[c0], a21 = x2[c1], a22 = x2[c2], a23 = x2[c3];
        a30 = x3[c0], a31 = x3[c1], a32 = x3[c2], a33 = x3[c3];
    }
    const float *gp = g, *wp = wf, *end = wf + 4 * on;
    for (; wp != end; gp++) {
        /* the four weights by one VLDM (gcc loads them one by one); pinned registers for its register list */
        register float w0 __asm__("s24"), w1 __asm__("s25"), w2 __asm__("s26"), w3 __asm__("s27");
        __asm__ volatile("vldmia %[wp]!, {s24-s27}"
                         : [wp] "+r"(wp), "=t"(w0), "=t"(w1), "=t"(w2), "=t"(w3)
                         :
                         : "memory");
        float h0 = gp[0], h1 = gp[out_c], h2 = gp[2 * out_c], h3 = gp[3 * out_c];
        a00 = mla_f32(a00, h0, w0); a01 = mla_f32(a01, h0, w1); a02 = mla_f32(a02, h0, w2); a03 = mla_f32(a03, h0, w3);
        a10 = mla_f32(a10, h1, w0); a11 = mla_f32(a11, h1, w1); a12 = mla_f32(a12, h1, w2); a13 = mla_f32(a13, h1, w3);
        a20 = mla_f32(a20, h2, w0); a21 = mla_f32(a21, h2, w1); a22 = mla_f32(a22, h2, w2); a23 = mla_f32(a23, h2, w3);
        a30 = mla_f32(a30, h3, w0); a31 = mla_f32(a31, h3, w1); a32 = mla_f32(a32, h3, w2); a33 = mla_f32(a33, h3, w3);
    }
    x0[c0] = a00; x0[c1] = a01; x0[c2] = a02; x0[c3] = a03;
    x1[c0] = a10; x1[c1] = a11; x1[c2] = a12; x1[c3] = a13;
    x2[c0] = a20; x2[c1] = a21; x2[c2] = a22; x2[c3] = a23;
    x3[c0] = a30; x3[c1] = a31; x3[c2] = a32; x3[c3] = a33;
}

/* (float)(int8_t)u for every byte u: converting a weight is then one byte load and one word load (1 KB of flash) */
#define S8F1(n) ((n) < 128 ? (float)(n) : (float)((n) - 256))
#define S8F4(n) S8F1(n), S8F1((n) + 1), S8F1((n) + 2), S8F1((n) + 3)
#define S8F16(n) S8F4(n), S8F4((n) + 4), S8F4((n) + 8), S8F4((n) + 12)
#define S8F64(n) S8F16(n), S8F16((n) + 16), S8F16((n) + 32), S8F16((n) + 48)
static const float s8_float[256] = {S8F64(0), S8F64(64), S8F64(128), S8F64(192)};

/* dst[0..3] = (float)src[0..3] by table: four byte loads, four table loads, two STRD (10 instructions; float4_s8
 * takes 12). */
static inline float *float4_s8_tab(const int8_t *src, float *dst)
{
    uint32_t a, b, c, d;
    __asm__ volatile("ldrb    %[a], [%[src]]\n\t"
                     "ldrb    %[b], [%[src], #1]\n\t"
                     "ldrb    %[c], [%[src], #2]\n\t"
                     "ldrb    %[d], [%[src], #3]\n\t"
                     "ldr     %[a], [%[tab], %[a], lsl #2]\n\t"
                     "ldr     %[b], [%[tab], %[b], lsl #2]\n\t"
                     "ldr     %[c], [%[tab], %[c], lsl #2]\n\t"
                     "ldr     %[d], [%[tab], %[d], lsl #2]\n\t"
                     "strd    %[a], %[b], [%[dst]], #8\n\t"
                     "strd    %[c], %[d], [%[dst]], #8\n\t"
                     : [dst] "+r"(dst), [a] "=&r"(a), [b] "=&r"(b), [c] "=&r"(c), [d] "=&r"(d)
                     : [src] "r"(src), [tab] "r"(s8_float)
                     : "memory");
    return dst;
}

/* The table loads and the STM of one row of float_rows8 (the bytes in a0-a7). */
#define F8_TAB_STORE                                                                                              \
    "ldr     %[a0], [%[tab], %[a0], lsl #2]\n\t"                                                                  \
    "ldr     %[a1], [%[tab], %[a1], lsl #2]\n\t"                                                                  \
    "ldr     %[a2], [%[tab], %[a2], lsl #2]\n\t"                                                                  \
    "ldr     %[a3], [%[tab], %[a3], lsl #2]\n\t"                                                                  \
    "ldr     %[a4], [%[tab], %[a4], lsl #2]\n\t"                                                                  \
    "ldr     %[a5], [%[tab], %[a5], lsl #2]\n\t"                                                                  \
    "ldr     %[a6], [%[tab], %[a6], lsl #2]\n\t"                                                                  \
    "ldr     %[a7], [%[tab], %[a7], lsl #2]\n\t"                                                                  \
    "stmia   %[dst]!, {%[a0], %[a1], %[a2], %[a3], %[a4], %[a5], %[a6], %[a7]}\n\t"
#define F8_ROW                                                                                                    \
    "ldrb    %[a0], [%[src]]\n\t"                                                                                 \
    "ldrb    %[a1], [%[src], #1]\n\t"                                                                             \
    "ldrb    %[a2], [%[src], #2]\n\t"                                                                             \
    "ldrb    %[a3], [%[src], #3]\n\t"                                                                             \
    "ldrb    %[a4], [%[src], #4]\n\t"                                                                             \
    "ldrb    %[a5], [%[src], #5]\n\t"                                                                             \
    "ldrb    %[a6], [%[src], #6]\n\t"                                                                             \
    "ldrb    %[a7], [%[src], #7]\n\t" F8_TAB_STORE "add     %[src], %[src], %[nb]\n\t"
/* the same, the row address from the list: rows[k] * nb + base */
#define F8_LIST_ROW                                                                                               \
    "ldrh    %[a0], [%[rows]], #2\n\t"                                                                            \
    "mla     %[a0], %[a0], %[nb], %[base]\n\t"                                                                    \
    "ldrb    %[a1], [%[a0], #1]\n\t"                                                                              \
    "ldrb    %[a2], [%[a0], #2]\n\t"                                                                              \
    "ldrb    %[a3], [%[a0], #3]\n\t"                                                                              \
    "ldrb    %[a4], [%[a0], #4]\n\t"                                                                              \
    "ldrb    %[a5], [%[a0], #5]\n\t"                                                                              \
    "ldrb    %[a6], [%[a0], #6]\n\t"                                                                              \
    "ldrb    %[a7], [%[a0], #7]\n\t"                                                                              \
    "ldrb    %[a0], [%[a0]]\n\t" F8_TAB_STORE
/* two rows per loop pass, entering at the second for an odd count (a row is 32 bytes of dst) */
#define F8_LOOP(ROW)                                                                                              \
    "sub     %[a0], %[end], %[dst]\n\t"                                                                           \
    "tst     %[a0], #32\n\t"                                                                                      \
    "bne     2f\n"                                                                                                \
    "1:\n\t" ROW "2:\n\t" ROW                                                                                     \
    "cmp     %[dst], %[end]\n\t"                                                                                  \
    "bne     1b\n\t"

/* dst[8o + j] = (float)src[o * nb + j], j < 8, 1 <= on: the 8 weights of each output channel by 8 byte loads, 8
 * table loads and one STM (19 instructions per output channel with the loop, two per pass; two float4_s8_tab:
 * 23). STM stores its registers in ascending number, hence the pinned ones (r7 left out: a frame pointer in some
 * builds). */
static __attribute__((noinline)) void float_rows8(const int8_t *src, int32_t nb, int32_t on, float *dst)
{
    register uint32_t a0 __asm__("r3"), a1 __asm__("r4"), a2 __asm__("r5"), a3 __asm__("r6");
    register uint32_t a4 __asm__("r8"), a5 __asm__("r9"), a6 __asm__("r10"), a7 __asm__("r11");
    const float *end = dst + 8 * on;
    __asm__ volatile(F8_LOOP(F8_ROW)
                     : [src] "+r"(src), [dst] "+r"(dst), [a0] "=&r"(a0), [a1] "=&r"(a1), [a2] "=&r"(a2),
                       [a3] "=&r"(a3), [a4] "=&r"(a4), [a5] "=&r"(a5), [a6] "=&r"(a6), [a7] "=&r"(a7)
                     : [nb] "r"(nb), [end] "r"(end), [tab] "r"(s8_float)
                     : "memory", "cc");
}

/* float_rows8 over the rows rows[0..on-1] of the weight at base (row o at base + o * nb): the row address from
 * the list (LDRH, MLA) instead of the step (20 instructions per output channel). */
static __attribute__((noinline)) void float_rows8_list(const int8_t *base, int32_t nb, const uint16_t *rows,
                                                       int32_t on, float *dst)
{
    register uint32_t a0 __asm__("r3"), a1 __asm__("r4"), a2 __asm__("r5"), a3 __asm__("r6");
    register uint32_t a4 __asm__("r8"), a5 __asm__("r9"), a6 __asm__("r10"), a7 __asm__("r11");
    const float *end = dst + 8 * on;
    __asm__ volatile(F8_LOOP(F8_LIST_ROW)
                     : [rows] "+r"(rows), [dst] "+r"(dst), [a0] "=&r"(a0), [a1] "=&r"(a1), [a2] "=&r"(a2),
                       [a3] "=&r"(a3), [a4] "=&r"(a4), [a5] "=&r"(a5), [a6] "=&r"(a6), [a7] "=&r"(a7)
                     : [base] "r"(base), [nb] "r"(nb), [end] "r"(end), [tab] "r"(s8_float)
                     : "memory", "cc");
}

/* One output channel of a 2-pixel x 8-channel tile: its eight weights by one VLDM into s16-s23, then the products
 * with pixel 0's gradient value (register ga) into s0-s7 and pixel 1's (gb) into s8-s15, each by one VMLA. */
#define GI8_MA(acc, g, w) "vmla.f32 s" #acc ", s" g ", s" #w "\n\t"
#define GI8_O(ga, gb)                                                                                             \
    "vldmia  %[wp]!, {s16-s23}\n\t" GI8_MA(0, ga, 16) GI8_MA(1, ga, 17) GI8_MA(2, ga, 18) GI8_MA(3, ga, 19)      \
        GI8_MA(4, ga, 20) GI8_MA(5, ga, 21) GI8_MA(6, ga, 22) GI8_MA(7, ga, 23) GI8_MA(8, gb, 16)                 \
            GI8_MA(9, gb, 17) GI8_MA(10, gb, 18) GI8_MA(11, gb, 19) GI8_MA(12, gb, 20) GI8_MA(13, gb, 21)         \
                GI8_MA(14, gb, 22) GI8_MA(15, gb, 23)
/* four output channels: each pixel's four gradient values by one VLDM (s24-s27, s28-s31) */
#define GI8_STEP4                                                                                                 \
    "vldmia  %[g0]!, {s24-s27}\n\t"                                                                               \
    "vldmia  %[g1]!, {s28-s31}\n\t" GI8_O("24", "28") GI8_O("25", "29") GI8_O("26", "30") GI8_O("27", "31")
#define GI8_STEP1 "vldmia  %[g0]!, {s24}\n\tvldmia  %[g1]!, {s28}\n\t" GI8_O("24", "28")

/* d0[j] = s0[j] + sum over the on output channels of g0[o] * wf[8o + j] (pixel 0; d1, s1, g1: pixel 1), j < 8,
 * each sum in ascending o, one product added at a time (the portable order); the 16 sums stay in s0-s15 for the
 * whole chunk: 70 instructions per 4 output channels (64 MACs). on % 4 single channels first, then four at a
 * time, two steps per loop pass (entering at the second when on / 4 is odd). */
static __attribute__((noinline)) void grad_input_tile_2x8(const float *g0, const float *g1, const float *wf, int32_t on, const float *s0,
                                const float *s1, float *d0, float *d1)
{
    const float *wp = wf, *end = wf + 8 * on;
    uint32_t t;
    __asm__ volatile("vldmia  %[s0], {s0-s7}\n\t"
                     "vldmia  %[s1], {s8-s15}\n\t"
                     "ands    %[t], %[on], #3\n\t"
                     "beq     3f\n"
                     "4:\n\t" GI8_STEP1
                     "subs    %[t], %[t], #1\n\t"
                     "bne     4b\n"
                     "3:\n\t"
                     "cmp     %[wp], %[end]\n\t"
                     "beq     2f\n\t"
                     "tst     %[on], #4\n\t"
                     "bne     5f\n"
                     "1:\n\t" GI8_STEP4 "5:\n\t" GI8_STEP4
                     "cmp     %[wp], %[end]\n\t"
                     "bne     1b\n"
                     "2:\n\t"
                     "vstmia  %[d0], {s0-s7}\n\t"
                     "vstmia  %[d1], {s8-s15}\n\t"
                     : [wp] "+r"(wp), [g0] "+r"(g0), [g1] "+r"(g1), [t] "=&r"(t)
                     : [s0] "r"(s0), [s1] "r"(s1), [d0] "r"(d0), [d1] "r"(d1), [end] "r"(end), [on] "r"(on)
                     : "s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9", "s10", "s11", "s12", "s13", "s14",
                       "s15", "s16", "s17", "s18", "s19", "s20", "s21", "s22", "s23", "s24", "s25", "s26", "s27",
                       "s28", "s29", "s30", "s31", "memory", "cc");
}

/* grad_input_tile_2x8 over npairs pixel pairs of a stride-1 map, channels contiguous, on % 8 == 0: the pair loop
 * in the asm too (about 20 instructions per pair around the output-channel loop instead of some 50). Pair k:
 * pixels 2k, 2k + 1 of g (rows of out_c4 bytes) and of x (rows of in_c4 bytes, x at the group's first channel);
 * the sums start from src (row offset soff, advanced by sstep per pair: x itself, or a zero row for the first
 * chunk) and are stored to x. */
typedef struct {
    const float *wf, *end; /* the chunk's weights, 8 per output channel, and their end */
    int32_t out_c4, in_c4, soff, sstep;
} gi8_pairs;

static void grad_input_pairs_2x8(const gi8_pairs *a, const float *g, float *x, const float *src, int32_t npairs)
{
    const float *wp, *g0, *g1;
    uint32_t t;
    __asm__ volatile("0:\n\t"
                     "ldr     %[wp], [%[a], #0]\n\t"
                     "ldr     %[t], [%[a], #8]\n\t"
                     "mov     %[g0], %[g]\n\t"
                     "add     %[g1], %[g], %[t]\n\t"
                     "add     %[g], %[g1], %[t]\n\t"
                     "ldr     %[t], [%[a], #16]\n\t"
                     "vldmia  %[src], {s0-s7}\n\t"
                     "add     %[t], %[src], %[t]\n\t"
                     "vldmia  %[t], {s8-s15}\n\t"
                     "ldr     %[t], [%[a], #20]\n\t"
                     "add     %[src], %[src], %[t]\n\t"
                     "ldr     %[t], [%[a], #4]\n"
                     "1:\n\t" GI8_STEP4 GI8_STEP4
                     "cmp     %[wp], %[t]\n\t"
                     "bne     1b\n\t"
                     "ldr     %[t], [%[a], #12]\n\t"
                     "vstmia  %[x], {s0-s7}\n\t"
                     "add     %[x], %[x], %[t]\n\t"
                     "vstmia  %[x], {s8-s15}\n\t"
                     "add     %[x], %[x], %[t]\n\t"
                     "subs    %[n], %[n], #1\n\t"
                     "bne     0b\n\t"
                     : [g] "+r"(g), [x] "+r"(x), [src] "+r"(src), [n] "+r"(npairs), [wp] "=&r"(wp), [g0] "=&r"(g0),
                       [g1] "=&r"(g1), [t] "=&r"(t)
                     : [a] "r"(a)
                     : "s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9", "s10", "s11", "s12", "s13", "s14",
                       "s15", "s16", "s17", "s18", "s19", "s20", "s21", "s22", "s23", "s24", "s25", "s26", "s27",
                       "s28", "s29", "s30", "s31", "memory", "cc");
}

/* The 2 x 8 tiles of one group of 8 input channels c[0..7] over the pixels 0 .. pix2 - 1 (pix2 even), for output
 * channels o0 .. o0 + on - 1 (weights as float in wf, 8 per output channel): each tile's 16 sums continue from gx
 * (or start from zeros for the first chunk). Contiguous channels (no index) are read and written in place, eight
 * at a time; indexed ones go through a gathered copy. */
static void grad_input_group8(const mt_conv_params *p, const float *gacc, const float *wf, int32_t o0, int32_t on,
                              int32_t pix2, const int32_t *c, int contiguous, int go_on, float *gx)
{
    static const float zeros[8];
    float acc[16];
    const int32_t out_c = p->out_c, in_c = p->in_c, dense = p->stride == 1 && p->out_w == p->in_w;
    const int from_gx = o0 || go_on;
    const float *g = gacc + o0;
    if (dense && contiguous && on % 8 == 0 && pix2 > 0) {
        const gi8_pairs a = {wf, wf + 8 * on, 4 * out_c, 4 * in_c, from_gx ? 4 * in_c : 0, from_gx ? 8 * in_c : 0};
        grad_input_pairs_2x8(&a, g, gx + c[0], from_gx ? gx + c[0] : zeros, pix2 / 2);
        return;
    }
    for (int32_t pix = 0; pix < pix2; pix += 2, g += 2 * out_c) {
        float *x0 = dense ? gx + pix * in_c : grad_pixel(p, gx, pix);
        float *x1 = dense ? x0 + in_c : grad_pixel(p, gx, pix + 1), *d0 = acc, *d1 = acc + 8;
        if (contiguous) {
            d0 = x0 + c[0], d1 = x1 + c[0];
        } else if (from_gx) {
            for (int32_t j = 0; j < 8; j++) d0[j] = x0[c[j]], d1[j] = x1[c[j]];
        }
        grad_input_tile_2x8(g, g + out_c, wf, on, from_gx ? d0 : zeros, from_gx ? d1 : zeros, d0, d1);
        if (!contiguous)
            for (int32_t j = 0; j < 8; j++) x0[c[j]] = d0[j], x1[c[j]] = d1[j];
    }
}

/* The 4 x 6 tiles of one group of 6 input channels c[0..5] over the pixels pix4 (a multiple of 4), for output
 * channels o0 .. o0 + on - 1 (weights as float in wf, 6 per output channel): each tile's 24 sums continue from gx
 * (or start from zeros for the first chunk). Contiguous channels (no index) are read and written in place, six
 * at a time; indexed ones go through a gathered copy. */
static void grad_input_group6(const mt_conv_params *p, const float *gacc, const float *wf, int32_t o0, int32_t on,
                              int32_t pix4, const int32_t *c, int contiguous, int go_on, float *gx)
{
    static const float zeros[6];
    float acc[24];
    const int32_t out_c = p->out_c;
    /* pix4 = 3a + 4b pixels: a 3-pixel tiles (cheaper per MAC), then b = (pix4 / 4) % 3 4-pixel ones */
    const int32_t n3 = pix4 - 4 * ((pix4 / 4) % 3);
    for (int32_t pix = 0, n = 3; pix < pix4; pix += n) {
        n = pix < n3 ? 3 : 4;
        float *x[4];
        for (int32_t k = 0; k < n; k++) x[k] = grad_pixel(p, gx, pix + k);
        const float *g = gacc + pix * out_c + o0;
        float *rows[4];
        if (contiguous) {
            for (int32_t k = 0; k < n; k++) rows[k] = x[k] + c[0];
        } else {
            for (int32_t k = 0; k < n; k++) {
                const float *xk = x[k];
                float *a = rows[k] = acc + 6 * k;
                if (o0 || go_on)
                    a[0] = xk[c[0]], a[1] = xk[c[1]], a[2] = xk[c[2]], a[3] = xk[c[3]], a[4] = xk[c[4]],
                    a[5] = xk[c[5]];
            }
        }
        const float *const first[4] = {zeros, zeros, zeros, zeros};
        const float *const *src = o0 || go_on ? (const float *const *)rows : first;
        if (n == 3) grad_input_tile_3x6(g, out_c, wf, on, src, rows);
        else grad_input_tile_4x6(g, out_c, wf, on, src, rows);
        if (!contiguous)
            for (int32_t k = 0; k < n; k++) {
                float *xk = x[k];
                const float *a = acc + 6 * k;
                xk[c[0]] = a[0], xk[c[1]] = a[1], xk[c[2]] = a[2], xk[c[3]] = a[3], xk[c[4]] = a[4], xk[c[5]] = a[5];
            }
    }
}

/* One weight block (O, nb) of a pointwise conv: gx[pixel, idx[j]] = sum over o of gacc[pixel, o] * w[o, j]
 * (acc: the sums go on from gx). Groups of 8 input channels (then one of 6, one of 4) over the pixels up to a
 * multiple of 4: each group's weights converted to float once per chunk of output channels (not once per tile);
 * the channels and pixels left over one at a time. */
static void grad_input_pointwise_block(const mt_conv_params *p, const float *gacc, const int8_t *wb,
                                       const int16_t *idx, int32_t nb, int acc, const uint16_t *rows, float *gx)
{
    const int32_t out_c = p->out_c, n_pix = p->out_h * p->out_w, pix4 = n_pix & ~3;
    const int32_t nb8 = nb & ~7, nb6 = nb8 + (nb - nb8 >= 6 ? 6 : 0), nb4 = nb6 + ((nb - nb6) & 4);
    float wf[8 * MT_GI8_CHUNK > 6 * MT_GI_CHUNK ? 8 * MT_GI8_CHUNK : 6 * MT_GI_CHUNK];
    for (int32_t j = 0; j < nb8; j += 8) {
        int32_t c[8];
        for (int32_t k = 0; k < 8; k++) c[k] = chan(idx, j + k);
        for (int32_t o0 = 0; o0 < out_c; o0 += MT_GI8_CHUNK) {
            const int32_t on = out_c - o0 < MT_GI8_CHUNK ? out_c - o0 : MT_GI8_CHUNK;
            if (rows) float_rows8_list(wb + j, nb, rows + o0, on, wf);
            else float_rows8(wb + o0 * nb + j, nb, on, wf);
            grad_input_group8(p, gacc, wf, o0, on, pix4, c, !idx, acc, gx);
        }
    }
    for (int32_t j = nb8; j < nb6; j += 6) {
        const int32_t c[6] = {chan(idx, j), chan(idx, j + 1), chan(idx, j + 2), chan(idx, j + 3), chan(idx, j + 4),
                              chan(idx, j + 5)};
        for (int32_t o0 = 0; o0 < out_c; o0 += MT_GI_CHUNK) {
            const int32_t on = out_c - o0 < MT_GI_CHUNK ? out_c - o0 : MT_GI_CHUNK;
            float *wo = wf;
            for (int32_t o = o0; o < o0 + on; o++) wo = float6_s8(wb + wrow(rows, o) * nb + j, wo);
            grad_input_group6(p, gacc, wf, o0, on, pix4, c, !idx, acc, gx);
        }
    }
    for (int32_t j = nb6; j < nb4; j += 4) {
        const int32_t c0 = chan(idx, j), c1 = chan(idx, j + 1), c2 = chan(idx, j + 2), c3 = chan(idx, j + 3);
        for (int32_t o0 = 0; o0 < out_c; o0 += MT_GI_CHUNK) {
            const int32_t on = out_c - o0 < MT_GI_CHUNK ? out_c - o0 : MT_GI_CHUNK;
            float *wo = wf;
            for (int32_t o = o0; o < o0 + on; o++) wo = float4_s8(wb + wrow(rows, o) * nb + j, wo);
            for (int32_t pix = 0; pix < pix4; pix += 4)
                grad_input_tile_4x4(gacc + pix * out_c + o0, out_c, wf, on, o0 == 0 && !acc, grad_pixel(p, gx, pix),
                                    grad_pixel(p, gx, pix + 1), grad_pixel(p, gx, pix + 2),
                                    grad_pixel(p, gx, pix + 3), c0, c1, c2, c3);
        }
    }
    int32_t pix = 0;
    for (; pix + 4 <= n_pix; pix += 4) {
        const float *g = gacc + pix * out_c;
        float *x0 = grad_pixel(p, gx, pix), *x1 = grad_pixel(p, gx, pix + 1);
        float *x2 = grad_pixel(p, gx, pix + 2), *x3 = grad_pixel(p, gx, pix + 3);
        for (int32_t j = nb4; j < nb; j++) { /* the channels left over (at most 3) */
            int32_t c = chan(idx, j);
            float a0 = acc ? x0[c] : 0.0f, a1 = acc ? x1[c] : 0.0f, a2 = acc ? x2[c] : 0.0f, a3 = acc ? x3[c] : 0.0f;
            for (int32_t o = 0; o < out_c; o++) {
                float w0 = (float)wb[wrow(rows, o) * nb + j];
                a0 = mla_f32(a0, g[o], w0);
                a1 = mla_f32(a1, g[out_c + o], w0);
                a2 = mla_f32(a2, g[2 * out_c + o], w0);
                a3 = mla_f32(a3, g[3 * out_c + o], w0);
            }
            x0[c] = a0; x1[c] = a1; x2[c] = a2; x3[c] = a3;
        }
    }
    for (; pix < n_pix; pix++) {
        const float *g = gacc + pix * out_c;
        float *x0 = grad_pixel(p, gx, pix);
        for (int32_t j = 0; j < nb; j++) {
            float s = acc ? x0[chan(idx, j)] : 0.0f;
            for (int32_t o = 0; o < out_c; o++) s = mla_f32(s, g[o], (float)wb[wrow(rows, o) * nb + j]);
            x0[chan(idx, j)] = s;
        }
    }
}

/* A weight split into indexed frozen and trained channels (covering all in_c <= this many) of a stride-1 map is
 * computed in "block order" (the frozen block's channels first, then the trained ones, each contiguous in a gx
 * row, so the contiguous tiles apply) and each row permuted once at the end (and, when the sums go on from gx,
 * into block order first): moving floats changes no bits, and each sum keeps its terms and order. */
#ifndef MT_GI_PERM_MAX
#define MT_GI_PERM_MAX 64
#endif

static inline int split_in_block_order(const mt_conv_params *p, const mt_weight_s8 *w)
{
    return p->stride == 1 && p->out_h == p->in_h && p->out_w == p->in_w && (w->frozen_idx || w->train_idx) &&
           w->n_frozen + w->n_train == p->in_c && p->in_c <= MT_GI_PERM_MAX;
}

/* Every row of gx from block order to channel order (to_channels) or back; noinline: its row buffer is not on
 * the stack while the tiles run. */
static __attribute__((noinline)) void permute_rows(const mt_conv_params *p, const mt_weight_s8 *w, float *gx,
                                                   int to_channels)
{
    float tmp[MT_GI_PERM_MAX];
    uint8_t perm[MT_GI_PERM_MAX]; /* block-order position -> channel, listed once (MT_GI_PERM_MAX <= 256) */
    const int32_t in_c = p->in_c, nf = w->n_frozen, nt = w->n_train, n_pix = p->in_h * p->in_w, in4 = in_c & ~3;
    for (int32_t j = 0; j < nf; j++) perm[j] = (uint8_t)chan(w->frozen_idx, j);
    for (int32_t j = 0; j < nt; j++) perm[nf + j] = (uint8_t)chan(w->train_idx, j);
    for (float *row = gx, *end = gx + n_pix * in_c; row != end; row += in_c) {
        int32_t k = 0;
        for (; k < in4; k += 4) {
            const float a = row[k], b = row[k + 1], c = row[k + 2], d = row[k + 3];
            tmp[k] = a, tmp[k + 1] = b, tmp[k + 2] = c, tmp[k + 3] = d;
        }
        for (; k < in_c; k++) tmp[k] = row[k];
        if (to_channels) {
            for (k = 0; k < in4; k += 4) {
                row[perm[k]] = tmp[k], row[perm[k + 1]] = tmp[k + 1];
                row[perm[k + 2]] = tmp[k + 2], row[perm[k + 3]] = tmp[k + 3];
            }
            for (; k < in_c; k++) row[perm[k]] = tmp[k];
        } else {
            for (k = 0; k < in4; k += 4) {
                const float a = tmp[perm[k]], b = tmp[perm[k + 1]], c = tmp[perm[k + 2]], d = tmp[perm[k + 3]];
                row[k] = a, row[k + 1] = b, row[k + 2] = c, row[k + 3] = d;
            }
            for (; k < in_c; k++) row[k] = tmp[perm[k]];
        }
    }
}

/* Output channels whose gradient is +0.0 at every pixel ("dead": a ReLU channel clamped all over the map; every
 * channel on the first step after a zero-initialised head) add only +-0.0 terms, which leave every sum unchanged:
 * a sum starts from +0.0 and, rounding to nearest, never becomes -0.0, and s + (+-0.0) == s for any other s (a
 * quiet NaN, the only kind a sum can be, and infinities included; denormals too, flush-to-zero being off as the
 * FPSCR resets). So the input gradient is computed over the live channels only: gacc is compacted in
 * place (row q of the n_live live values at gacc + q * n_live; their weight rows listed, as uint16, in the last
 * 2 * n_live bytes of gacc's storage, which the compacted rows leave free) and restored bit for bit before the
 * kernel returns (a dead value was +0.0). Worth it when the dead channels' share of the work (n_dead * in_c MACs
 * per pixel) outweighs compacting and restoring (some 5 to 10 instructions per gacc element): n_dead * in_c >=
 * MT_GI_DEAD_FACTOR * out_c. The search stops after the first pixel when it cannot find enough candidates (a map
 * without dead channels costs one pass over one gacc row). */
#ifndef MT_GI_LIVE_MAX
#define MT_GI_LIVE_MAX 768 /* output channels searched (the channel list: 1,536 bytes of stack) */
#endif
#ifndef MT_GI_DEAD_FACTOR
#define MT_GI_DEAD_FACTOR 8
#endif

static inline uint32_t f32_bits(const float *g)
{
    uint32_t u;
    __builtin_memcpy(&u, g, sizeof u);
    return u;
}

/* The live channels of gacc (p->out_c per pixel) compacted as above; returns n_live, or -1 (gacc unchanged) when
 * compacting does not pay or does not fit. noinline: its list is not on the stack while the tiles run. */
static __attribute__((noinline)) int32_t live_compact(const mt_conv_params *p, int32_t in_c, float *gacc)
{
    uint16_t list[MT_GI_LIVE_MAX];
    const int32_t out_c = p->out_c, n_pix = p->out_h * p->out_w;
    if (out_c > MT_GI_LIVE_MAX || n_pix < 1) return -1;
    /* the fewest dead channels that pay (n_dead * in_c >= MT_GI_DEAD_FACTOR * out_c; at least one) */
    const int32_t n_min = in_c > 0 ? (MT_GI_DEAD_FACTOR * out_c + in_c - 1) / in_c : out_c + 1;
    int32_t n_cand = 0; /* candidates: +0.0 at the first pixel */
    for (int32_t o = 0; o < out_c; o++)
        if (f32_bits(gacc + o) == 0) list[n_cand++] = (uint16_t)o;
    /* the candidates +0.0 at every other pixel too, kept in order: each column read down, four pixels per test,
     * until a value is not +0.0; given up as soon as too few can be left */
    const uint32_t *const g0 = (const uint32_t *)gacc;
    const int32_t rest = n_pix - 1, rest4 = rest & ~3;
    int32_t n_dead = 0;
    for (int32_t k = 0; k < n_cand; k++) {
        if (n_dead + n_cand - k < n_min) return -1;
        const uint32_t *c = g0 + out_c + list[k];
        int32_t q = 0;
        for (; q < rest4; q += 4, c += 4 * out_c)
            if (c[0] | c[out_c] | c[2 * out_c] | c[3 * out_c]) break;
        if (q < rest4) continue;
        for (; q < rest && *c == 0; q++) c += out_c;
        if (q == rest) list[n_dead++] = list[k];
    }
    const int32_t n_live = out_c - n_dead;
    if (n_dead == 0 || n_dead < n_min || 2 * n_pix * n_dead < n_live) return -1;
    /* the live list (the complement, ascending) in place of the dead one, through a bit per channel */
    uint32_t dead[MT_GI_LIVE_MAX / 32];
    for (int32_t k = 0; k < MT_GI_LIVE_MAX / 32; k++) dead[k] = 0u;
    for (int32_t k = 0; k < n_dead; k++) dead[list[k] >> 5] |= 1u << (list[k] & 31);
    for (int32_t o = 0, i = 0; o < out_c; o++)
        if (!((dead[o >> 5] >> (o & 31)) & 1u)) list[i++] = (uint16_t)o;
    uint32_t *g = (uint32_t *)gacc;
    const int32_t n4 = n_live & ~3;
    for (int32_t q = 0; q < n_pix; q++) { /* each value moved down or kept (list[k] >= k), four loaded, then stored */
        const uint32_t *src = g + q * out_c;
        uint32_t *dst = g + q * n_live;
        int32_t k = 0;
        for (; k < n4; k += 4) {
            const uint32_t a = src[list[k]], b = src[list[k + 1]], c = src[list[k + 2]], d = src[list[k + 3]];
            dst[k] = a, dst[k + 1] = b, dst[k + 2] = c, dst[k + 3] = d;
        }
        for (; k < n_live; k++) dst[k] = src[list[k]];
    }
    uint16_t *tail = (uint16_t *)(gacc + n_pix * out_c) - n_live;
    for (int32_t k = 0; k < n_live; k++) tail[k] = list[k];
    return n_live;
}

/* dst[0..n) = 0, sixteen words per VSTM (from a zeroed register block), the rest one by one. */
static void zero_words(uint32_t *dst, int32_t n)
{
    int32_t blocks = n >> 4;
    if (blocks > 0)
        __asm__ volatile("vldmia  %[z], {s0-s15}\n"
                         "1:\n\t"
                         "vstmia  %[d]!, {s0-s15}\n\t"
                         "subs    %[n], %[n], #1\n\t"
                         "bne     1b\n\t"
                         : [d] "+r"(dst), [n] "+r"(blocks)
                         : [z] "r"(zeros16)
                         : "s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9", "s10", "s11", "s12", "s13",
                           "s14", "s15", "memory", "cc");
    for (int32_t k = 0; k < (n & 15); k++) dst[k] = 0u;
}

/* Undoes live_compact, rows from the last: a row whose place lies past its compacted values (q * n_dead >=
 * n_live) is zeroed, then its live values scattered to it; a lower row is rebuilt from its last channel down,
 * live or +0.0 (a value is moved up or stays, never over one not yet moved). */
static __attribute__((noinline)) void live_expand(const mt_conv_params *p, float *gacc, int32_t n_live)
{
    uint16_t list[MT_GI_LIVE_MAX];
    const int32_t out_c = p->out_c, n_pix = p->out_h * p->out_w, n_dead = out_c - n_live, n4 = n_live & ~3;
    const uint16_t *tail = (const uint16_t *)(gacc + n_pix * out_c) - n_live;
    for (int32_t k = 0; k < n_live; k++) list[k] = tail[k];
    uint32_t *g = (uint32_t *)gacc;
    for (int32_t q = n_pix - 1; q >= 0; q--) {
        const uint32_t *src = g + q * n_live;
        uint32_t *dst = g + q * out_c;
        if (q * n_dead >= n_live) {
            zero_words(dst, out_c);
            int32_t k = 0;
            for (; k < n4; k += 4) {
                const uint32_t a = src[k], b = src[k + 1], c = src[k + 2], d = src[k + 3];
                dst[list[k]] = a, dst[list[k + 1]] = b, dst[list[k + 2]] = c, dst[list[k + 3]] = d;
            }
            for (; k < n_live; k++) dst[list[k]] = src[k];
            continue;
        }
        for (int32_t o = out_c - 1, k = n_live - 1; o >= 0; o--) {
            if (k >= 0 && list[k] == o) dst[o] = src[k--];
            else dst[o] = 0u;
        }
    }
}

/* Sparse pixel pairs. In the expanded layers' gacc most values are +0.0 (ReLU6 clamps: 40 to 70 % of the
 * elements of mcunet-5fps's pointwise1 gradients; per pixel pair 27 to 61 % of the channels +0.0 at both
 * pixels), and a +-0.0 term leaves a sum unchanged (as for the dead channels above). On a stride-1 map whose
 * weight blocks are contiguous multiples of 8 channels, each pair of pixels (2q, 2q + 1) is compacted in place:
 * the k channels live at either pixel (value bits not 0: -0.0 counts as live) have their two values moved to
 * the start of the pair's two rows (ascending channel), and the channel list (uint16) and, for each chunk of
 * MT_GI8_CHUNK output channels, the list position where it starts are stored at the end of the second row,
 * which its k values leave free (when k <= MT_SP_FIT(out_c); a pair with more is put back and stays whole). The
 * 2 x 8 tiles of a compacted pair run over its list (grad_input_sparse_2x8: ascending channels, so every sum
 * has the same nonzero terms in the same order), the other pairs' over every channel; gacc is restored bit for
 * bit afterwards (a value not listed was +0.0 at both pixels). */
#ifndef MT_GI_SP_PAIRS
#define MT_GI_SP_PAIRS 64 /* pixel pairs at most (a bit each on the stack) */
#endif

static inline int32_t sp_chunks(int32_t out_c) { return (out_c + MT_GI8_CHUNK - 1) / MT_GI8_CHUNK; }

/* n rounded up to even: the list and the chunk starts take whole words, so they are copied a word at a time. */
static inline int32_t sp_even(int32_t n) { return (n + 1) & ~1; }

/* The chunk starts (n_chunks + 1 of them, the last = k) at the end of pair q's second row; its list before
 * (sp_list), both word-aligned. */
static inline uint16_t *sp_bounds(const float *gacc, int32_t out_c, int32_t q)
{
    return (uint16_t *)(gacc + (2 * q + 2) * out_c) - sp_even(sp_chunks(out_c) + 1);
}

static inline const uint16_t *sp_list(const uint16_t *bounds, int32_t nc) { return bounds - sp_even(bounds[nc]); }

/* The most live channels whose values (4 k bytes) and list (2 sp_even(k)) leave room for the chunk starts. */
static inline int32_t sp_fit(int32_t out_c) { return (4 * out_c - 2 * sp_even(sp_chunks(out_c) + 1) - 2) / 6; }

/* dst[0..n) = src[0..n) for word-aligned uint16 arrays, n rounded up to even (a word at a time). */
static inline void copy_u16_words(uint16_t *dst, const uint16_t *src, int32_t n)
{
    uint32_t *d = (uint32_t *)(void *)dst;
    const uint32_t *s = (const uint32_t *)(const void *)src;
    for (int32_t i = 0, nw = sp_even(n) >> 1; i < nw; i++) d[i] = s[i];
}

static inline int sparse_applicable(const mt_conv_params *p, const mt_weight_s8 *w)
{
    const int32_t n_pix = p->out_h * p->out_w;
    if (p->stride != 1 || p->out_h != p->in_h || p->out_w != p->in_w || (n_pix & 1) || n_pix < 2 ||
        n_pix > 2 * MT_GI_SP_PAIRS || p->out_c > MT_GI_LIVE_MAX || p->out_c < 8 || (w->n_frozen & 7) ||
        (w->n_train & 7))
        return 0;
    if (!w->frozen_idx && !w->train_idx && w->n_train == 0) return w->n_frozen == p->in_c;
    return split_in_block_order(p, w);
}

/* The pair at r0, r1 (rows of n words) compacted: the words live at either row moved to the rows' starts, their
 * channels listed; returns how many (list[i] >= i: each word moved down or kept, after it was read). */
static int32_t pair_squeeze(uint32_t *r0, uint32_t *r1, int32_t n, uint16_t *list)
{
    uint32_t *w0 = r0, *w1 = r1, a0, a1, b0, b1, t;
    uint16_t *l = list;
    const uint32_t *end = r0 + (n & ~1);
    uint32_t o = 0;
    if (n > 1) /* two channels per pass: one LDRD per row */
        __asm__ volatile("1:\n\t"
                         "ldrd    %[a0], %[a1], [%[r0]], #8\n\t"
                         "ldrd    %[b0], %[b1], [%[r1]], #8\n\t"
                         "orrs    %[t], %[a0], %[b0]\n\t"
                         "ittt    ne\n\t"
                         "strne   %[a0], [%[w0]], #4\n\t"
                         "strne   %[b0], [%[w1]], #4\n\t"
                         "strhne  %[o], [%[l]], #2\n\t"
                         "add     %[o], %[o], #1\n\t"
                         "orrs    %[t], %[a1], %[b1]\n\t"
                         "ittt    ne\n\t"
                         "strne   %[a1], [%[w0]], #4\n\t"
                         "strne   %[b1], [%[w1]], #4\n\t"
                         "strhne  %[o], [%[l]], #2\n\t"
                         "add     %[o], %[o], #1\n\t"
                         "cmp     %[r0], %[end]\n\t"
                         "bne     1b\n\t"
                         : [r0] "+&r"(r0), [r1] "+&r"(r1), [w0] "+&r"(w0), [w1] "+&r"(w1), [l] "+&r"(l),
                           [o] "+&r"(o), [a0] "=&r"(a0), [a1] "=&r"(a1), [b0] "=&r"(b0), [b1] "=&r"(b1),
                           [t] "=&r"(t) /* & : end may equal r1's first value */
                         : [end] "r"(end)
                         : "memory", "cc");
    if (n & 1 && (*r0 | *r1)) *w0 = *r0, *w1 = *r1, *l++ = (uint16_t)o;
    return (int32_t)(l - list);
}

/* Undoes pair_squeeze: from the last listed channel down each word moved up to its channel (over words already
 * moved or not listed), the channels between listed ones set to +0.0. */
static void pair_unsqueeze(uint32_t *r0, uint32_t *r1, int32_t n, const uint16_t *list, int32_t k)
{
    /* t: the lowest place of r0 done (r1's at t + d); s: the next value to move (from the last) */
    uint32_t *t = r0 + n, *s = r0 + k, *p, a, b, o;
    const uint16_t *l = list + k;
    const int32_t d = (int32_t)((uintptr_t)r1 - (uintptr_t)r0);
    __asm__ volatile("cmp     %[l], %[list]\n\t"
                     "beq     3f\n"
                     "1:\n\t"
                     "ldrh    %[o], [%[l], #-2]!\n\t"
                     "ldr     %[a], [%[s], #-4]!\n\t"
                     "ldr     %[b], [%[s], %[d]]\n\t"
                     "add     %[p], %[r0], %[o], lsl #2\n\t"
                     "add     %[p], %[p], #4\n\t"
                     "cmp     %[t], %[p]\n\t"
                     "beq     2f\n"
                     "4:\n\t"
                     "str     %[z], [%[t], #-4]!\n\t"
                     "str     %[z], [%[t], %[d]]\n\t"
                     "cmp     %[t], %[p]\n\t"
                     "bne     4b\n"
                     "2:\n\t"
                     "str     %[a], [%[t], #-4]!\n\t"
                     "str     %[b], [%[t], %[d]]\n\t"
                     "cmp     %[l], %[list]\n\t"
                     "bne     1b\n"
                     "3:\n\t"
                     "cmp     %[t], %[r0]\n\t"
                     "beq     5f\n"
                     "6:\n\t"
                     "str     %[z], [%[t], #-4]!\n\t"
                     "str     %[z], [%[t], %[d]]\n\t"
                     "cmp     %[t], %[r0]\n\t"
                     "bne     6b\n"
                     "5:\n\t"
                     : [t] "+&r"(t), [s] "+&r"(s), [l] "+&r"(l), [p] "=&r"(p), [a] "=&r"(a), [b] "=&r"(b),
                       [o] "=&r"(o)
                     : [r0] "r"(r0), [d] "r"(d), [list] "r"(list), [z] "r"(0u)
                     : "memory", "cc");
}

/* The first position of list[0..k) (ascending) holding a value >= v. */
static inline int32_t lower_bound_u16(const uint16_t *list, int32_t k, int32_t v)
{
    int32_t lo = 0, hi = k;
    while (lo < hi) {
        const int32_t mid = (lo + hi) >> 1;
        if (list[mid] < v) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

/* Whether compacting pays, from the first pair's k live channels: per pair and group of 8 input channels a list
 * entry costs some 23.3 instructions (its loads and the call per chunk included), a channel of a whole tile
 * 17.5, compacting and restoring some 20 per channel (measured on the Cortex-M7), so when (in_c / 8) * 23.3 k +
 * 20 out_c < (in_c / 8) * 17.5 out_c; pairs with more than sp_fit live channels stay whole: the first must not.
 * The usual path's dead channels (live_compact) are not counted: they are +0.0 in every pair, so compacting
 * drops them too. A first pair without live channels leaves it to the usual path (on a first step after a
 * zero-initialised head every channel is dead: live_compact finds it in one pass). */
static inline int sparse_pays(const mt_conv_params *p, int32_t k)
{
    return k > 0 && k <= sp_fit(p->out_c) && 93 * p->in_c * k + 640 * p->out_c < 70 * p->in_c * p->out_c;
}

/* Compacts every pair that fits (bit q of sparse set) and returns how many, when sparse_pays; else 0 with gacc
 * as it was. noinline: its list is not on the stack while the tiles run. */
static __attribute__((noinline)) int32_t pair_compact(const mt_conv_params *p, float *gacc, uint32_t *sparse)
{
    uint16_t list[MT_GI_LIVE_MAX] __attribute__((aligned(4))); /* copied a word at a time */
    const int32_t out_c = p->out_c, n_pairs = p->out_h * p->out_w / 2, nc = sp_chunks(out_c), fit = sp_fit(out_c);
    int32_t n_sparse = 0;
    for (int32_t q = 0; q < n_pairs; q++) {
        uint32_t *r0 = (uint32_t *)gacc + 2 * q * out_c, *r1 = r0 + out_c;
        const int32_t k = pair_squeeze(r0, r1, out_c, list);
        if (q == 0 && !sparse_pays(p, k)) {
            pair_unsqueeze(r0, r1, out_c, list, k);
            return 0;
        }
        if (k > fit) {
            pair_unsqueeze(r0, r1, out_c, list, k);
            continue;
        }
        uint16_t *bounds = sp_bounds(gacc, out_c, q);
        copy_u16_words(bounds - sp_even(k), list, k);
        bounds[0] = 0;
        for (int32_t c = 1, i = 0; c < nc; c++) bounds[c] = (uint16_t)(i = i + lower_bound_u16(list + i, k - i, c * MT_GI8_CHUNK));
        bounds[nc] = (uint16_t)k;
        sparse[q >> 5] |= 1u << (q & 31);
        n_sparse++;
    }
    return n_sparse;
}

/* Undoes pair_compact. */
static __attribute__((noinline)) void pair_expand(const mt_conv_params *p, float *gacc, const uint32_t *sparse)
{
    uint16_t list[MT_GI_LIVE_MAX] __attribute__((aligned(4))); /* copied a word at a time */
    const int32_t out_c = p->out_c, n_pairs = p->out_h * p->out_w / 2, nc = sp_chunks(out_c);
    for (int32_t q = 0; q < n_pairs; q++) {
        if (!((sparse[q >> 5] >> (q & 31)) & 1u)) continue;
        const uint16_t *bounds = sp_bounds(gacc, out_c, q);
        const int32_t k = bounds[nc];
        copy_u16_words(list, sp_list(bounds, nc), k); /* the list lies in the second row's tail */
        uint32_t *r0 = (uint32_t *)gacc + 2 * q * out_c;
        pair_unsqueeze(r0, r0 + out_c, out_c, list, k);
    }
}

/* One list entry of a sparse 2 x 8 tile: its output channel's 8 weights (row address wfb + 32 * o) by one VLDM
 * into s16-s23, then the products with pixel 0's value (register ga) and pixel 1's (gb) as GI8_O. */
#define GIS_O(ga, gb)                                                                                             \
    "ldrh    %[t], [%[idx]], #2\n\t"                                                                              \
    "add     %[t], %[wfb], %[t], lsl #5\n\t"                                                                      \
    "vldmia  %[t], {s16-s23}\n\t" GI8_MA(0, ga, 16) GI8_MA(1, ga, 17) GI8_MA(2, ga, 18) GI8_MA(3, ga, 19)       \
        GI8_MA(4, ga, 20) GI8_MA(5, ga, 21) GI8_MA(6, ga, 22) GI8_MA(7, ga, 23) GI8_MA(8, gb, 16)                 \
            GI8_MA(9, gb, 17) GI8_MA(10, gb, 18) GI8_MA(11, gb, 19) GI8_MA(12, gb, 20) GI8_MA(13, gb, 21)         \
                GI8_MA(14, gb, 22) GI8_MA(15, gb, 23)

/* What grad_input_sparse_2x8 needs beyond the pair: the chunk's float weights less 32 * o0 bytes (entry o's
 * row at wfb + 32 * o), the distance from a pair's first row of gacc to its second and of gx (bytes), whether
 * the sums start from zeros (the first chunk). */
typedef struct {
    uintptr_t wfb;
    int32_t grow, xrow, first;
} sp_tile;

/* grad_input_tile_2x8 over the n list entries idx[0..n) (ascending output channels) of one pair: pixel 0's
 * compacted values at g0, pixel 1's at g0 + grow bytes; its 16 sums at x (pixel 0) and x + xrow bytes, from
 * zeros or from x. n % 4 entries one at a time (23 instructions), then four per loop pass (80). */
static __attribute__((noinline)) void grad_input_sparse_2x8(const sp_tile *a, const float *g0, const uint16_t *idx,
                                                            int32_t n, float *x)
{
    const float *g1 = (const float *)((uintptr_t)g0 + (uintptr_t)a->grow), *s0 = a->first ? zeros16 : x;
    float *x1 = (float *)((uintptr_t)x + (uintptr_t)a->xrow);
    const float *s1 = a->first ? zeros16 + 8 : x1;
    const uintptr_t wfb = a->wfb;
    uint32_t t, r;
    __asm__ volatile("vldmia  %[s0], {s0-s7}\n\t"
                     "vldmia  %[s1], {s8-s15}\n\t"
                     "ands    %[r], %[n], #3\n\t"
                     "beq     3f\n"
                     "4:\n\t"
                     "vldmia  %[g0]!, {s24}\n\t"
                     "vldmia  %[g1]!, {s28}\n\t" GIS_O("24", "28")
                     "subs    %[r], %[r], #1\n\t"
                     "bne     4b\n"
                     "3:\n\t"
                     "bics    %[n], %[n], #3\n\t"
                     "beq     2f\n"
                     "1:\n\t"
                     "vldmia  %[g0]!, {s24-s27}\n\t"
                     "vldmia  %[g1]!, {s28-s31}\n\t" GIS_O("24", "28") GIS_O("25", "29") GIS_O("26", "30")
                         GIS_O("27", "31")
                     "subs    %[n], %[n], #4\n\t"
                     "bne     1b\n"
                     "2:\n\t"
                     "vstmia  %[x0], {s0-s7}\n\t"
                     "vstmia  %[x1], {s8-s15}\n\t"
                     : [g0] "+r"(g0), [g1] "+r"(g1), [idx] "+r"(idx), [n] "+r"(n), [t] "=&r"(t), [r] "=&r"(r)
                     : [wfb] "r"(wfb), [s0] "r"(s0), [s1] "r"(s1), [x0] "r"(x), [x1] "r"(x1)
                     : "s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9", "s10", "s11", "s12", "s13", "s14",
                       "s15", "s16", "s17", "s18", "s19", "s20", "s21", "s22", "s23", "s24", "s25", "s26", "s27",
                       "s28", "s29", "s30", "s31", "memory", "cc");
}

/* One contiguous weight block (O, nb), nb % 8 == 0, its channels at gx + c0 of each row: per group of 8 input
 * channels and chunk of output channels (weights converted once, as grad_input_pointwise_block), every pair's
 * tile, over its list or whole. noinline: one weight buffer on the stack at a time. */
static __attribute__((noinline)) void grad_input_sparse_block(const mt_conv_params *p, const float *gacc,
                                                              const int8_t *wb, int32_t nb, int32_t c0,
                                                              const uint32_t *sparse, float *gx)
{
    float wf[8 * MT_GI8_CHUNK];
    const int32_t out_c = p->out_c, in_c = p->in_c, n_pairs = p->out_h * p->out_w / 2, nc = sp_chunks(out_c);
    sp_tile a = {0, 4 * out_c, 4 * in_c, 0};
    for (int32_t j = 0; j < nb; j += 8)
        for (int32_t c = 0, o0 = 0; o0 < out_c; c++, o0 += MT_GI8_CHUNK) {
            const int32_t on = out_c - o0 < MT_GI8_CHUNK ? out_c - o0 : MT_GI8_CHUNK;
            float_rows8(wb + o0 * nb + j, nb, on, wf);
            a.wfb = (uintptr_t)wf - (uintptr_t)(32 * o0), a.first = o0 == 0;
            const float *r0 = gacc;
            float *x0 = gx + c0 + j;
            for (int32_t q = 0; q < n_pairs; q++, r0 += 2 * out_c, x0 += 2 * in_c) {
                if ((sparse[q >> 5] >> (q & 31)) & 1u) {
                    const uint16_t *bounds = (const uint16_t *)(r0 + 2 * out_c) - sp_even(nc + 1);
                    const int32_t lo = bounds[c];
                    grad_input_sparse_2x8(&a, r0 + lo, sp_list(bounds, nc) + lo, bounds[c + 1] - lo, x0);
                } else {
                    grad_input_tile_2x8(r0 + o0, r0 + out_c + o0, wf, on, o0 ? x0 : zeros8, o0 ? x0 + in_c : zeros8,
                                        x0, x0 + in_c);
                }
            }
        }
}

/* The input gradient through the sparse pairs when they pay: returns 0 (nothing done, gacc as it was)
 * otherwise. */
static __attribute__((noinline)) int grad_input_sparse(const mt_conv_params *p, float *gacc, const mt_weight_s8 *w,
                                                       float *gx)
{
    uint32_t sparse[MT_GI_SP_PAIRS / 32] = {0};
    if (pair_compact(p, gacc, sparse) == 0) return 0;
    grad_input_sparse_block(p, gacc, w->frozen, w->n_frozen, 0, sparse, gx);
    if (w->n_train) { /* split_in_block_order */
        grad_input_sparse_block(p, gacc, w->train, w->n_train, w->n_frozen, sparse, gx);
        permute_rows(p, w, gx, 1);
    }
    pair_expand(p, gacc, sparse);
    return 1;
}

static inline __attribute__((always_inline)) void grad_input_pointwise(const mt_conv_params *p, const float *gacc,
                                                                      const mt_weight_s8 *w, const uint16_t *rows,
                                                                      float *gx)
{
    int32_t n_in = p->in_h * p->in_w * p->in_c;
    if (split_in_block_order(p, w)) {
        grad_input_pointwise_block(p, gacc, w->frozen, NULL, w->n_frozen, 0, rows, gx);
        grad_input_pointwise_block(p, gacc, w->train, NULL, w->n_train, 0, rows, gx + w->n_frozen);
        permute_rows(p, w, gx, 1);
        return;
    }
    /* with stride 1 and the two blocks covering every channel, each element is assigned below */
    if (p->stride != 1 || p->out_h != p->in_h || p->out_w != p->in_w || w->n_frozen + w->n_train != p->in_c)
        for (int32_t i = 0; i < n_in; i++) gx[i] = 0.0f;
    grad_input_pointwise_block(p, gacc, w->frozen, w->frozen_idx, w->n_frozen, 0, rows, gx);
    grad_input_pointwise_block(p, gacc, w->train, w->train_idx, w->n_train, 0, rows, gx);
}

void mt_conv_grad_input_pointwise_f32(const mt_conv_params *p, const float *gacc, const mt_weight_s8 *w, float *gx)
{
    float *const g = (float *)gacc; /* compacted and restored in place (grad_input_sparse, live_compact) */
    if (sparse_applicable(p, w) && grad_input_sparse(p, g, w, gx)) return;
    const int32_t n_live = live_compact(p, w->n_frozen + w->n_train, g);
    if (n_live < 0) {
        grad_input_pointwise(p, gacc, w, NULL, gx);
        return;
    }
    if (n_live == 0) { /* every sum is +0.0 (gacc untouched: nothing was moved) */
        for (int32_t i = 0, n_in = p->in_h * p->in_w * p->in_c; i < n_in; i++) gx[i] = 0.0f;
        return;
    }
    mt_conv_params live = *p;
    live.out_c = n_live;
    grad_input_pointwise(&live, gacc, w, (const uint16_t *)(gacc + p->out_h * p->out_w * p->out_c) - n_live, gx);
    live_expand(p, g, n_live);
}

void mt_conv_grad_input_pointwise_acc_f32(const mt_conv_params *p, const float *gacc, const mt_weight_s8 *w,
                                          float *gx)
{
    if (split_in_block_order(p, w)) {
        permute_rows(p, w, gx, 0);
        grad_input_pointwise_block(p, gacc, w->frozen, NULL, w->n_frozen, 1, NULL, gx);
        grad_input_pointwise_block(p, gacc, w->train, NULL, w->n_train, 1, NULL, gx + w->n_frozen);
        permute_rows(p, w, gx, 1);
        return;
    }
    grad_input_pointwise_block(p, gacc, w->frozen, w->frozen_idx, w->n_frozen, 1, NULL, gx);
    grad_input_pointwise_block(p, gacc, w->train, w->train_idx, w->n_train, 1, NULL, gx);
}

/* gx[iy, ix, c] = sum over taps (u, v ascending) reaching output (oy, ox) of gacc[oy, ox, c] * w[u, v, c]. */
static void dw_block_zero(float *out, const int16_t *idx, int32_t nb)
{
    for (int32_t j = 0; j < nb; j++) out[chan(idx, j)] = 0.0f;
}

static void dw_block_tap(float *out, const float *g, const int8_t *wt, const int16_t *idx, int32_t nb)
{
    if (idx) {
        for (int32_t j = 0; j < nb; j++) {
            int32_t c = idx[j];
            out[c] = mla_f32(out[c], g[c], (float)wt[j]);
        }
    } else {
        for (int32_t j = 0; j < nb; j++) out[j] = mla_f32(out[j], g[j], (float)wt[j]);
    }
}

#ifndef MT_DWG_MAX_TAPS
#define MT_DWG_MAX_TAPS 49
#endif

/* The taps t (rows u or columns v) of a k-wide kernel with stride s reaching input index i (padding pad) of an
 * axis with out_n outputs: t0, t0 + s, ... (ascending), output index o0 for t0, then one less per step;
 * returns how many. t must satisfy t = i + pad - s * o with 0 <= o < out_n and 0 <= t < k. */
static inline int32_t tap_range(int32_t i, int32_t pad, int32_t s, int32_t k, int32_t out_n, int32_t *t0, int32_t *o0)
{
    const int32_t r = i + pad, lo = r - s * (out_n - 1) > 0 ? r - s * (out_n - 1) : 0, hi = r < k - 1 ? r : k - 1;
    *t0 = lo + (r - lo) % s;
    *o0 = (r - *t0) / s;
    return *t0 > hi ? 0 : (hi - *t0) / s + 1;
}

/* Eight channels of one input pixel: the sum over its nu x nv taps in (u, v) order from 0.0f, in s0-s7, stored to
 * out. Per tap one VLDM of the gradient row's 8 values, one of the tap's 8 weights (the next tap of the row is
 * the next 8 floats: dw_grad_in_group8's table order), 8 VMLA; along a row of taps the output column goes down
 * by one (g back by gstep bytes); then the next row of taps (g back by growstep, w on by wrowstep). */
typedef struct {
    int32_t gstep, growstep, wrowstep;
} dw_steps;


static void dw_grad_in_pixel8(const dw_steps *st, const float *gp, const float *wp, int32_t nu, int32_t nv,
                              float *out)
{
    const float *g, *w;
    int32_t k, t;
    __asm__ volatile("vldmia  %[z], {s0-s7}\n"
                     "0:\n\t"
                     "mov     %[g], %[gp]\n\t"
                     "mov     %[w], %[wp]\n\t"
                     "mov     %[k], %[nv]\n\t"
                     "ldr     %[t], [%[st], #0]\n"
                     "1:\n\t"
                     "vldmia  %[g], {s16-s23}\n\t"
                     "vldmia  %[w]!, {s24-s31}\n\t"
                     "vmla.f32 s0, s16, s24\n\tvmla.f32 s1, s17, s25\n\tvmla.f32 s2, s18, s26\n\t"
                     "vmla.f32 s3, s19, s27\n\tvmla.f32 s4, s20, s28\n\tvmla.f32 s5, s21, s29\n\t"
                     "vmla.f32 s6, s22, s30\n\tvmla.f32 s7, s23, s31\n\t"
                     "sub     %[g], %[g], %[t]\n\t"
                     "subs    %[k], %[k], #1\n\t"
                     "bne     1b\n\t"
                     "ldr     %[t], [%[st], #4]\n\t"
                     "sub     %[gp], %[gp], %[t]\n\t"
                     "ldr     %[t], [%[st], #8]\n\t"
                     "add     %[wp], %[wp], %[t]\n\t"
                     "subs    %[nu], %[nu], #1\n\t"
                     "bne     0b\n\t"
                     "vstmia  %[out], {s0-s7}\n\t"
                     : [g] "=&r"(g), [w] "=&r"(w), [k] "=&r"(k), [t] "=&r"(t), [gp] "+r"(gp), [wp] "+r"(wp),
                       [nu] "+r"(nu)
                     : [st] "r"(st), [nv] "r"(nv), [out] "r"(out), [z] "r"(zeros16)
                     : "s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7", "s16", "s17", "s18", "s19", "s20", "s21",
                       "s22", "s23", "s24", "s25", "s26", "s27", "s28", "s29", "s30", "s31", "memory", "cc");
}

#ifndef MT_DWG_MAX_W
#define MT_DWG_MAX_W 32
#endif

/* The taps of one row reaching an input pixel are v0, v0 + s, ...: in the weight table the columns of a row are
 * ordered by v mod s, then v (v -> col[v]), so those taps are consecutive. */
static void dw_columns(int32_t kw, int32_t s, uint8_t *col)
{
    int32_t k = 0;
    for (int32_t r = 0; r < s && r < kw; r++)
        for (int32_t v = r; v < kw; v += s) col[v] = (uint8_t)k++;
}

/* Whole-weight depthwise, channels c .. c + 7 over every input pixel: the group's weights are converted to float
 * once (wf, 8 per tap, the columns of each row in dw_columns order), then each pixel by dw_grad_in_pixel8, its
 * taps a row range (per row) times a column range (per column: tabulated once for maps up to MT_DWG_MAX_W
 * wide). */
static __attribute__((noinline)) void dw_grad_in_group8(const mt_conv_params *p, const float *gacc,
                                                        const int8_t *w, int32_t c, float *gx)
{
    const int32_t c_n = p->in_c, kw = p->kw, s = p->stride, tab = p->in_w <= MT_DWG_MAX_W;
    float wf[MT_DWG_MAX_TAPS * 8];
    uint8_t col[MT_DWG_MAX_TAPS], v0s[MT_DWG_MAX_W], ox0s[MT_DWG_MAX_W], nvs[MT_DWG_MAX_W];
    dw_columns(kw, s, col);
    for (int32_t u = 0; u < p->kh; u++)
        for (int32_t v = 0; v < kw; v++) {
            const int8_t *src = w + (u * kw + v) * c_n + c;
            float4_s8_tab(src + 4, float4_s8_tab(src, wf + 8 * (u * kw + col[v])));
        }
    for (int32_t ix = 0; tab && ix < p->in_w; ix++) {
        int32_t v0, ox0;
        nvs[ix] = (uint8_t)tap_range(ix, p->pad, s, kw, p->out_w, &v0, &ox0);
        v0s[ix] = nvs[ix] ? col[v0] : 0, ox0s[ix] = (uint8_t)ox0;
    }
    const dw_steps st = {4 * c_n, 4 * p->out_w * c_n, 32 * s * kw};
    float *out = gx + c;
    for (int32_t iy = 0; iy < p->in_h; iy++) {
        int32_t u0, oy0;
        const int32_t nu = tap_range(iy, p->pad, s, p->kh, p->out_h, &u0, &oy0);
        for (int32_t ix = 0; ix < p->in_w; ix++, out += c_n) {
            int32_t nv, v0, ox0;
            if (tab) nv = nvs[ix], v0 = v0s[ix], ox0 = ox0s[ix];
            else nv = tap_range(ix, p->pad, s, kw, p->out_w, &v0, &ox0), v0 = nv ? col[v0] : 0;
            if (nu == 0 || nv == 0) {
                for (int32_t j = 0; j < 8; j++) out[j] = 0.0f;
                continue;
            }
            dw_grad_in_pixel8(&st, gacc + (oy0 * p->out_w + ox0) * c_n + c, wf + 8 * (u0 * kw + v0), nu, nv, out);
        }
    }
}

/* Sixteen channels of one input pixel, stride 1: the sum over its nu x nv taps in (u, v) order from 0.0f, in
 * s0-s15, stored to out. Per tap: the gradient row's 16 values and the tap's 16 weights by four VLDM, 16 VMLA;
 * along a row of taps the output column goes down by one (g back by gstep bytes) and the weight up by one tap
 * (16 floats, the VLDM writeback); then the next row of taps (g back by growstep, w on by wrowstep). */
static void dw_grad_in_pixel16(const dw_steps *st, const float *gp, const float *wp, int32_t nu, int32_t nv,
                               float *out)
{
    const float *g, *w;
    int32_t k, t;
    __asm__ volatile("vldmia  %[z], {s0-s15}\n"
                     "0:\n\t"
                     "mov     %[g], %[gp]\n\t"
                     "mov     %[w], %[wp]\n\t"
                     "mov     %[k], %[nv]\n\t"
                     "ldr     %[t], [%[st], #0]\n"
                     "1:\n\t"
                     "vldmia  %[g]!, {s16-s23}\n\t"
                     "vldmia  %[w]!, {s24-s31}\n\t"
                     "vmla.f32 s0, s16, s24\n\tvmla.f32 s1, s17, s25\n\tvmla.f32 s2, s18, s26\n\t"
                     "vmla.f32 s3, s19, s27\n\tvmla.f32 s4, s20, s28\n\tvmla.f32 s5, s21, s29\n\t"
                     "vmla.f32 s6, s22, s30\n\tvmla.f32 s7, s23, s31\n\t"
                     "vldmia  %[g], {s16-s23}\n\t"
                     "vldmia  %[w]!, {s24-s31}\n\t"
                     "vmla.f32 s8, s16, s24\n\tvmla.f32 s9, s17, s25\n\tvmla.f32 s10, s18, s26\n\t"
                     "vmla.f32 s11, s19, s27\n\tvmla.f32 s12, s20, s28\n\tvmla.f32 s13, s21, s29\n\t"
                     "vmla.f32 s14, s22, s30\n\tvmla.f32 s15, s23, s31\n\t"
                     "sub     %[g], %[g], %[t]\n\t"
                     "subs    %[k], %[k], #1\n\t"
                     "bne     1b\n\t"
                     "ldr     %[t], [%[st], #4]\n\t"
                     "sub     %[gp], %[gp], %[t]\n\t"
                     "ldr     %[t], [%[st], #8]\n\t"
                     "add     %[wp], %[wp], %[t]\n\t"
                     "subs    %[nu], %[nu], #1\n\t"
                     "bne     0b\n\t"
                     "vstmia  %[out], {s0-s15}\n\t"
                     : [g] "=&r"(g), [w] "=&r"(w), [k] "=&r"(k), [t] "=&r"(t), [gp] "+r"(gp), [wp] "+r"(wp),
                       [nu] "+r"(nu)
                     : [st] "r"(st), [nv] "r"(nv), [out] "r"(out), [z] "r"(zeros16)
                     : "s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9", "s10", "s11", "s12", "s13", "s14",
                       "s15", "s16", "s17", "s18", "s19", "s20", "s21", "s22", "s23", "s24", "s25", "s26", "s27",
                       "s28", "s29", "s30", "s31", "memory", "cc");
}

#ifndef MT_DWG16_MAX_TAPS
#define MT_DWG16_MAX_TAPS 25
#endif
/* Whole-weight depthwise with stride 1, channels c .. c + 15 over every input pixel: the group's weights
 * converted to float once (16 per tap, a 1,600-byte stack buffer at 25 taps), then each pixel by
 * dw_grad_in_pixel16, its taps a row range (per row) times a column range (per column, tabulated once per call
 * in v0s / ox0s / nvs). noinline, like the other groups: one group's buffers on the stack at a time. */
static __attribute__((noinline)) void dw_grad_in_group16(const mt_conv_params *p, const float *gacc,
                                                         const int8_t *w, int32_t c, float *gx)
{
    const int32_t c_n = p->in_c, kw = p->kw;
    float wf[MT_DWG16_MAX_TAPS * 16];
    uint8_t v0s[MT_DWG_MAX_W], ox0s[MT_DWG_MAX_W], nvs[MT_DWG_MAX_W];
    for (int32_t ix = 0; ix < p->in_w; ix++) {
        int32_t v0, ox0;
        nvs[ix] = (uint8_t)tap_range(ix, p->pad, 1, kw, p->out_w, &v0, &ox0);
        v0s[ix] = (uint8_t)v0, ox0s[ix] = (uint8_t)ox0;
    }
    for (int32_t t = 0; t < p->kh * kw; t++) {
        float *d = wf + 16 * t;
        const int8_t *src = w + t * c_n + c;
        float4_s8_tab(src + 12, float4_s8_tab(src + 8, float4_s8_tab(src + 4, float4_s8_tab(src, d))));
    }
    const dw_steps st = {4 * c_n + 32, 4 * p->out_w * c_n, 64 * kw};
    float *out = gx + c;
    for (int32_t iy = 0; iy < p->in_h; iy++) {
        int32_t u0, oy0;
        const int32_t nu = tap_range(iy, p->pad, 1, p->kh, p->out_h, &u0, &oy0);
        for (int32_t ix = 0; ix < p->in_w; ix++, out += c_n) {
            const int32_t nv = nvs[ix];
            if (nu == 0 || nv == 0) {
                for (int32_t j = 0; j < 16; j++) out[j] = 0.0f;
                continue;
            }
            dw_grad_in_pixel16(&st, gacc + (oy0 * p->out_w + ox0s[ix]) * c_n + c, wf + 16 * (u0 * kw + v0s[ix]),
                               nu, nv, out);
        }
    }
}

/* Whole-weight depthwise (one block, no channel index: the usual case): with stride 1 and at most 25 taps
 * groups of sixteen channels by dw_grad_in_group16, then groups of eight by dw_grad_in_group8, the rest by
 * dw_grad_in_rest (each noinline: only one group's stack buffers at a time). */
static void dw_grad_in_rest(const mt_conv_params *p, const float *gacc, const int8_t *w, float *gx);

static void dw_grad_in_whole(const mt_conv_params *p, const float *gacc, const int8_t *w, float *gx)
{
    const int32_t c_n = p->in_c, c8 = c_n & ~7;
    int32_t c = 0;
    if (p->stride == 1 && p->kh * p->kw <= MT_DWG16_MAX_TAPS && p->in_w <= MT_DWG_MAX_W)
        for (; c + 16 <= c_n; c += 16) dw_grad_in_group16(p, gacc, w, c, gx);
    for (; c < c8; c += 8) dw_grad_in_group8(p, gacc, w, c, gx);
    if (c8 != c_n) dw_grad_in_rest(p, gacc, w, gx);
}

/* The channels beyond the last group of eight: per input pixel the taps reaching it are listed once, in (u, v)
 * order, as (gradient row, weight row) offsets, then four channels at a time (then one) sum them in registers
 * from 0.0f in that order (the portable kernel's sequence) and store once. */
static __attribute__((noinline)) void dw_grad_in_rest(const mt_conv_params *p, const float *gacc, const int8_t *w,
                                                      float *gx)
{
    const int32_t c_n = p->in_c, c8 = c_n & ~7, c4 = c_n & ~3;
    int32_t tg[MT_DWG_MAX_TAPS], tw[MT_DWG_MAX_TAPS];
    for (int32_t iy = 0; iy < p->in_h; iy++) {
        for (int32_t ix = 0; ix < p->in_w; ix++) {
            float *out = gx + (iy * p->in_w + ix) * c_n;
            int32_t n = 0;
            for (int32_t u = 0; u < p->kh; u++) {
                int32_t ty = iy + p->pad - u;
                if (ty < 0 || ty % p->stride) continue;
                int32_t oy = ty / p->stride;
                if (oy >= p->out_h) continue;
                for (int32_t v = 0; v < p->kw; v++) {
                    int32_t tx = ix + p->pad - v;
                    if (tx < 0 || tx % p->stride) continue;
                    int32_t ox = tx / p->stride;
                    if (ox >= p->out_w) continue;
                    tg[n] = (oy * p->out_w + ox) * c_n, tw[n] = (u * p->kw + v) * c_n, n++;
                }
            }
            int32_t c = c8;
            for (; c < c4; c += 4) {
                float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
                for (int32_t t = 0; t < n; t++) {
                    const float *g = gacc + tg[t] + c;
                    const int8_t *wt = w + tw[t] + c;
                    a0 = mla_f32(a0, g[0], (float)wt[0]);
                    a1 = mla_f32(a1, g[1], (float)wt[1]);
                    a2 = mla_f32(a2, g[2], (float)wt[2]);
                    a3 = mla_f32(a3, g[3], (float)wt[3]);
                }
                out[c] = a0, out[c + 1] = a1, out[c + 2] = a2, out[c + 3] = a3;
            }
            for (; c < c_n; c++) {
                float a = 0.0f;
                for (int32_t t = 0; t < n; t++) a = mla_f32(a, gacc[tg[t] + c], (float)w[tw[t] + c]);
                out[c] = a;
            }
        }
    }
}

void mt_conv_grad_input_depthwise_f32_portable(const mt_conv_params *p, const float *gacc, const mt_weight_s8 *w,
                                               float *gx);

void mt_conv_grad_input_depthwise_f32(const mt_conv_params *p, const float *gacc, const mt_weight_s8 *w, float *gx)
{
    if (p->dilation != 1) { /* a dilated window: the portable kernel's loops */
        mt_conv_grad_input_depthwise_f32_portable(p, gacc, w, gx);
        return;
    }
    if (p->kh * p->kw <= MT_DWG_MAX_TAPS && !w->frozen_idx && w->n_train == 0) {
        dw_grad_in_whole(p, gacc, w->frozen, gx);
        return;
    }
    if (p->kh * p->kw <= MT_DWG_MAX_TAPS && !w->train_idx && w->n_frozen == 0) {
        dw_grad_in_whole(p, gacc, w->train, gx);
        return;
    }
    for (int32_t iy = 0; iy < p->in_h; iy++) {
        for (int32_t ix = 0; ix < p->in_w; ix++) {
            float *out = gx + (iy * p->in_w + ix) * p->in_c;
            dw_block_zero(out, w->frozen_idx, w->n_frozen);
            dw_block_zero(out, w->train_idx, w->n_train);
            for (int32_t u = 0; u < p->kh; u++) {
                int32_t ty = iy + p->pad - u;
                if (ty < 0 || ty % p->stride) continue;
                int32_t oy = ty / p->stride;
                if (oy >= p->out_h) continue;
                for (int32_t v = 0; v < p->kw; v++) {
                    int32_t tx = ix + p->pad - v;
                    if (tx < 0 || tx % p->stride) continue;
                    int32_t ox = tx / p->stride;
                    if (ox >= p->out_w) continue;
                    const float *g = gacc + (oy * p->out_w + ox) * p->out_c;
                    int32_t tap = u * p->kw + v;
                    dw_block_tap(out, g, w->frozen + tap * w->n_frozen, w->frozen_idx, w->n_frozen);
                    dw_block_tap(out, g, w->train + tap * w->n_train, w->train_idx, w->n_train);
                }
            }
        }
    }
}

static inline int32_t saved_chan(const mt_weight_s8 *w, int32_t x_c, int32_t j)
{
    return x_c == w->n_train ? j : chan(w->train_idx, j);
}

/* mt_update_s8 (mt_update.h) with its usual case in 32-bit integers: for |t| < 2^30 (t the rounded value's
 * argument: delta, or delta + u when stochastic) floor(t) and rint(t) fit an int32 and so does p + them, so the
 * result is the same as through mt_floor_i64 / mt_rint_i64 and the int64 clamp; anything else (huge, infinite,
 * NaN) goes through mt_update_s8 itself. */
#define MT_UPD_FAST_LIMIT 1073741824.0f

/* floor(t) for |t| < 2^30: one VCVTM (FPv5, Cortex-M7), else the conversion toward zero, one down for a negative
 * non-integer. */
static inline int32_t floor_s32(float t)
{
#if defined(MT_FPV5)
    union {
        float f;
        int32_t i;
    } r;
    __asm__("vcvtm.s32.f32 %0, %1" : "=t"(r.f) : "t"(t));
    return r.i;
#else
    int32_t i = (int32_t)t;
    return (float)i > t ? i - 1 : i;
#endif
}

/* mt_uniform_f32 (mt_update.h): (h >> 8) * 2^-24 by one fixed-point VCVT (24 fraction bits; exact, h >> 8 < 2^24)
 * instead of a conversion and a multiply. */
static inline float uniform_fast(uint32_t key, uint32_t index)
{
#if defined(__ARM_FP)
    union {
        float f;
        uint32_t u;
    } r;
    r.u = mt_fmix32(key ^ index) >> 8;
    __asm__("vcvt.f32.u32 %0, %0, #24" : "+t"(r.f));
    return r.f;
#else
    return mt_uniform_f32(key, index);
#endif
}

static inline __attribute__((always_inline)) int8_t update_s8_fast(int8_t p, float delta, int32_t rounding, uint32_t key, uint32_t index)
{
    const int stochastic = rounding == MT_ROUND_STOCHASTIC;
    const float t = stochastic ? delta + uniform_fast(key, index) : delta;
    if (!(__builtin_fabsf(t) < MT_UPD_FAST_LIMIT)) return mt_update_s8(p, delta, rounding, key, index); /* NaN too */
    int32_t i;
    if (stochastic) {
        i = floor_s32(t);
    } else {
        i = (int32_t)t; /* toward zero */
        const float f = t - (float)i; /* rint, ties to even, as mt_rint_i64 */
        if (f > 0.5f || (f == 0.5f && (i & 1))) i += 1;
        else if (f < -0.5f || (f == -0.5f && (i & 1))) i -= 1;
    }
    return (int8_t)__ssat((int32_t)p + i, 8); /* the int8 clamp */
}

/* mt_update_s32 the same way: the rounded step as above, p + step saturated to int32 (an int32 overflow can only
 * go past the bound the step points to, which is where the int64 clamp puts it). */
static inline __attribute__((always_inline)) int32_t update_s32_fast(int32_t p, float delta, int32_t rounding,
                                                                     uint32_t key, uint32_t index)
{
    const int stochastic = rounding == MT_ROUND_STOCHASTIC;
    const float t = stochastic ? delta + uniform_fast(key, index) : delta;
    if (!(__builtin_fabsf(t) < MT_UPD_FAST_LIMIT)) return mt_update_s32(p, delta, rounding, key, index);
    int32_t i;
    if (stochastic) {
        i = floor_s32(t);
    } else {
        i = (int32_t)t;
        const float f = t - (float)i;
        if (f > 0.5f || (f == 0.5f && (i & 1))) i += 1;
        else if (f < -0.5f || (f == -0.5f && (i & 1))) i -= 1;
    }
    int32_t v;
    if (__builtin_add_overflow(p, i, &v)) v = i > 0 ? INT32_MAX : INT32_MIN;
    return v;
}

static inline void apply_update(const mt_weight_s8 *w, const mt_update_params *u, uint32_t key, float neg_lr,
                                int32_t o, int32_t j, float g)
{
    uint32_t index = (uint32_t)((o + u->row0) * u->full_in + chan(w->train_idx, j));
    float d = g / u->divisor[o];
    int8_t *wp = &w->train[o * w->n_train + j];
    *wp = update_s8_fast(*wp, neg_lr * d, u->rounding, key, index);
}

/* The updates of output channels o..o+7 x trained channels j, j + 1 from their gradients g[0..7], g[8..15]
 * (apply_update's arithmetic): the struct fields in locals, which the int8 stores cannot alias, so they are
 * not reloaded for every weight. */
static void update_8x2(const mt_weight_s8 *w, const mt_update_params *u, uint32_t key, float neg_lr, int32_t o,
                       int32_t j, const float *g)
{
    int8_t *const train = w->train;
    const float *const divisor = u->divisor;
    const int32_t n_train = w->n_train, full_in = u->full_in, rounding = u->rounding;
    const int32_t ca = chan(w->train_idx, j), cb = chan(w->train_idx, j + 1);
    uint32_t index = (uint32_t)((o + u->row0) * full_in);
    int8_t *wp = train + o * n_train + j;
    for (int32_t k = 0; k < 8; k++, index += (uint32_t)full_in, wp += n_train) {
        const float dv = divisor[o + k], da = g[k] / dv, db = g[8 + k] / dv;
        wp[0] = update_s8_fast(wp[0], neg_lr * da, rounding, key, index + (uint32_t)ca);
        wp[1] = update_s8_fast(wp[1], neg_lr * db, rounding, key, index + (uint32_t)cb);
    }
}

/* Output channels o..o+3 x trained channel j: the weight gradients, then their updates. */
static void update_1x4(const mt_conv_params *p, const int8_t *x, int32_t x_c, const float *gacc, const mt_weight_s8 *w,
                       const mt_update_params *u, uint32_t key, float neg_lr, int32_t o, int32_t j)
{
    const int32_t out_c = p->out_c, xc = saved_chan(w, x_c, j);
    const float zero = (float)p->x_zero;
    float g0 = 0.0f, g1 = 0.0f, g2 = 0.0f, g3 = 0.0f;
    for (int32_t oy = 0; oy < p->out_h; oy++) {
        const int8_t *xr = x + ((oy * p->stride) * p->in_w) * x_c + xc;
        const float *gr = gacc + (oy * p->out_w) * out_c + o;
        for (int32_t ox = 0; ox < p->out_w; ox++, xr += p->stride * x_c, gr += out_c) {
            float xv = (float)*xr - zero;
            g0 = mla_f32(g0, xv, gr[0]);
            g1 = mla_f32(g1, xv, gr[1]);
            g2 = mla_f32(g2, xv, gr[2]);
            g3 = mla_f32(g3, xv, gr[3]);
        }
    }
    apply_update(w, u, key, neg_lr, o, j, g0);
    apply_update(w, u, key, neg_lr, o + 1, j, g1);
    apply_update(w, u, key, neg_lr, o + 2, j, g2);
    apply_update(w, u, key, neg_lr, o + 3, j, g3);
}

/* Weight gradients of output channels o..o+7 x saved input channels xa, xb (g[0..7] and g[8..15]): each
 * (x - x_zero) converted once for 8 products, each row of 8 gradient values loaded by one VLDM (pinned
 * registers for its register list). Every sum runs over the pixels in order, as in the portable kernel. */
static void grad_tile_8x2(const mt_conv_params *p, const int8_t *x, int32_t x_c, const float *gacc, int32_t o,
                          int32_t xa, int32_t xb, float *g)
{
    const int32_t out_c = p->out_c;
    const float zero = (float)p->x_zero;
    float g0 = 0.0f, g1 = 0.0f, g2 = 0.0f, g3 = 0.0f, g4 = 0.0f, g5 = 0.0f, g6 = 0.0f, g7 = 0.0f;
    float h0 = 0.0f, h1 = 0.0f, h2 = 0.0f, h3 = 0.0f, h4 = 0.0f, h5 = 0.0f, h6 = 0.0f, h7 = 0.0f;
    for (int32_t oy = 0; oy < p->out_h; oy++) {
        const int8_t *xr = x + ((oy * p->stride) * p->in_w) * x_c;
        const float *gr = gacc + (oy * p->out_w) * out_c + o;
        for (int32_t ox = 0; ox < p->out_w; ox++, xr += p->stride * x_c, gr += out_c) {
            register float e0 __asm__("s24"), e1 __asm__("s25"), e2 __asm__("s26"), e3 __asm__("s27");
            register float e4 __asm__("s28"), e5 __asm__("s29"), e6 __asm__("s30"), e7 __asm__("s31");
            __asm__ volatile("vldmia %[gr], {s24-s31}"
                             : "=t"(e0), "=t"(e1), "=t"(e2), "=t"(e3), "=t"(e4), "=t"(e5), "=t"(e6), "=t"(e7)
                             : [gr] "r"(gr)
                             : "memory");
            float xv = (float)xr[xa] - zero, yv = (float)xr[xb] - zero;
            g0 = mla_f32(g0, xv, e0);
            g1 = mla_f32(g1, xv, e1);
            g2 = mla_f32(g2, xv, e2);
            g3 = mla_f32(g3, xv, e3);
            g4 = mla_f32(g4, xv, e4);
            g5 = mla_f32(g5, xv, e5);
            g6 = mla_f32(g6, xv, e6);
            g7 = mla_f32(g7, xv, e7);
            h0 = mla_f32(h0, yv, e0);
            h1 = mla_f32(h1, yv, e1);
            h2 = mla_f32(h2, yv, e2);
            h3 = mla_f32(h3, yv, e3);
            h4 = mla_f32(h4, yv, e4);
            h5 = mla_f32(h5, yv, e5);
            h6 = mla_f32(h6, yv, e6);
            h7 = mla_f32(h7, yv, e7);
        }
    }
    g[0] = g0, g[1] = g1, g[2] = g2, g[3] = g3, g[4] = g4, g[5] = g5, g[6] = g6, g[7] = g7;
    g[8] = h0, g[9] = h1, g[10] = h2, g[11] = h3, g[12] = h4, g[13] = h5, g[14] = h6, g[15] = h7;
}

/* One pixel of grad_tile_8x2_xf, its two inputs in XV, YV: the 8 gradient values at gr by one VLDM, then the 16
 * products and sums; gr on to the next pixel. */
#define GRAD_8X2_PIXEL(XV, YV)                                                                                   \
    do {                                                                                                         \
        register float e0 __asm__("s24"), e1 __asm__("s25"), e2 __asm__("s26"), e3 __asm__("s27");               \
        register float e4 __asm__("s28"), e5 __asm__("s29"), e6 __asm__("s30"), e7 __asm__("s31");               \
        __asm__ volatile("vldmia %[gr], {s24-s31}"                                                                \
                         : "=t"(e0), "=t"(e1), "=t"(e2), "=t"(e3), "=t"(e4), "=t"(e5), "=t"(e6), "=t"(e7)         \
                         : [gr] "r"(gr)                                                                          \
                         : "memory");                                                                            \
        g0 = mla_f32(g0, XV, e0);                                                                                \
        g1 = mla_f32(g1, XV, e1);                                                                                \
        g2 = mla_f32(g2, XV, e2);                                                                                \
        g3 = mla_f32(g3, XV, e3);                                                                                \
        g4 = mla_f32(g4, XV, e4);                                                                                \
        g5 = mla_f32(g5, XV, e5);                                                                                \
        g6 = mla_f32(g6, XV, e6);                                                                                \
        g7 = mla_f32(g7, XV, e7);                                                                                \
        h0 = mla_f32(h0, YV, e0);                                                                                \
        h1 = mla_f32(h1, YV, e1);                                                                                \
        h2 = mla_f32(h2, YV, e2);                                                                                \
        h3 = mla_f32(h3, YV, e3);                                                                                \
        h4 = mla_f32(h4, YV, e4);                                                                                \
        h5 = mla_f32(h5, YV, e5);                                                                                \
        h6 = mla_f32(h6, YV, e6);                                                                                \
        h7 = mla_f32(h7, YV, e7);                                                                                \
        gr += out_c;                                                                                             \
    } while (0)

/* grad_tile_8x2 with both channels' (x - x_zero) already converted, pixel by pixel in xf (2 floats per output
 * pixel, the same values grad_tile_8x2 computes): two pixels per loop pass, their 4 inputs by one VLDM, then per
 * pixel one VLDM of the 8 gradient values and the 16 products and sums in the same order (the odd last pixel
 * after). */
static void grad_tile_8x2_xf(const float *xf, int32_t n_pix, const float *gacc, int32_t out_c, int32_t o, float *g)
{
    float g0 = 0.0f, g1 = 0.0f, g2 = 0.0f, g3 = 0.0f, g4 = 0.0f, g5 = 0.0f, g6 = 0.0f, g7 = 0.0f;
    float h0 = 0.0f, h1 = 0.0f, h2 = 0.0f, h3 = 0.0f, h4 = 0.0f, h5 = 0.0f, h6 = 0.0f, h7 = 0.0f;
    const float *gr = gacc + o, *xp = xf, *pairs_end = xf + 2 * (n_pix & ~1);
    while (xp != pairs_end) {
        register float xa __asm__("s20"), ya __asm__("s21"), xb __asm__("s22"), yb __asm__("s23");
        __asm__ volatile("vldmia %[xp]!, {s20-s23}"
                         : [xp] "+r"(xp), "=t"(xa), "=t"(ya), "=t"(xb), "=t"(yb)
                         :
                         : "memory");
        GRAD_8X2_PIXEL(xa, ya);
        GRAD_8X2_PIXEL(xb, yb);
    }
    if (n_pix & 1) GRAD_8X2_PIXEL(xp[0], xp[1]);
    g[0] = g0, g[1] = g1, g[2] = g2, g[3] = g3, g[4] = g4, g[5] = g5, g[6] = g6, g[7] = g7;
    g[8] = h0, g[9] = h1, g[10] = h2, g[11] = h3, g[12] = h4, g[13] = h5, g[14] = h6, g[15] = h7;
}

/* Maps of at most this many output pixels convert each pair of trained input channels once per call (a stack
 * buffer of 8 * MT_WU_PIXELS bytes) for every block of 8 output channels, instead of once per block. */
#ifndef MT_WU_PIXELS
#define MT_WU_PIXELS 64
#endif

void mt_conv_weight_update_pointwise_f32(const mt_conv_params *p, const int8_t *x, int32_t x_c, const float *gacc,
                                         const mt_weight_s8 *w, const mt_update_params *u, const mt_train_ctx *ctx)
{
    uint32_t key = mt_hash_key(ctx->seed, ctx->step, u->param_id);
    const float neg_lr = -ctx->lr, zero = (float)p->x_zero;
    const int32_t out_c = p->out_c, n_pix = p->out_h * p->out_w;
    int32_t o = 0;
    if (n_pix <= MT_WU_PIXELS && out_c >= 8) {
        /* trained channel pairs outer, blocks of 8 output channels inner: every weight still gets exactly its
         * own sum and update (the updates are independent of one another) */
        float xf[2 * MT_WU_PIXELS];
        const int32_t o8 = out_c & ~7;
        int32_t j = 0;
        for (; j + 2 <= w->n_train; j += 2) {
            const int32_t xa = saved_chan(w, x_c, j), xb = saved_chan(w, x_c, j + 1);
            float *xo = xf;
            for (int32_t oy = 0; oy < p->out_h; oy++) {
                const int8_t *xr = x + ((oy * p->stride) * p->in_w) * x_c;
                for (int32_t ox = 0; ox < p->out_w; ox++, xr += p->stride * x_c, xo += 2)
                    xo[0] = (float)xr[xa] - zero, xo[1] = (float)xr[xb] - zero;
            }
            for (int32_t ob = 0; ob < o8; ob += 8) {
                float g[16];
                grad_tile_8x2_xf(xf, n_pix, gacc, out_c, ob, g);
                update_8x2(w, u, key, neg_lr, ob, j, g);
            }
        }
        for (; j < w->n_train; j++)
            for (int32_t ob = 0; ob < o8; ob += 8) {
                update_1x4(p, x, x_c, gacc, w, u, key, neg_lr, ob, j);
                update_1x4(p, x, x_c, gacc, w, u, key, neg_lr, ob + 4, j);
            }
        o = o8;
    }
    for (; o + 8 <= out_c; o += 8) {
        int32_t j = 0;
        for (; j + 2 <= w->n_train; j += 2) {
            float g[16];
            grad_tile_8x2(p, x, x_c, gacc, o, saved_chan(w, x_c, j), saved_chan(w, x_c, j + 1), g);
            update_8x2(w, u, key, neg_lr, o, j, g);
        }
        for (; j < w->n_train; j++) {
            update_1x4(p, x, x_c, gacc, w, u, key, neg_lr, o, j);
            update_1x4(p, x, x_c, gacc, w, u, key, neg_lr, o + 4, j);
        }
    }
    for (; o + 4 <= out_c; o += 4) {
        int32_t j = 0;
        for (; j + 2 <= w->n_train; j += 2) { /* two trained channels: each gradient value loaded once */
            const int32_t xa = saved_chan(w, x_c, j), xb = saved_chan(w, x_c, j + 1);
            float g0 = 0.0f, g1 = 0.0f, g2 = 0.0f, g3 = 0.0f, h0 = 0.0f, h1 = 0.0f, h2 = 0.0f, h3 = 0.0f;
            for (int32_t oy = 0; oy < p->out_h; oy++) {
                const int8_t *xr = x + ((oy * p->stride) * p->in_w) * x_c;
                const float *gr = gacc + (oy * p->out_w) * out_c + o;
                for (int32_t ox = 0; ox < p->out_w; ox++, xr += p->stride * x_c, gr += out_c) {
                    float xv = (float)xr[xa] - zero, yv = (float)xr[xb] - zero;
                    float e0 = gr[0], e1 = gr[1], e2 = gr[2], e3 = gr[3];
                    g0 = mla_f32(g0, xv, e0);
                    g1 = mla_f32(g1, xv, e1);
                    g2 = mla_f32(g2, xv, e2);
                    g3 = mla_f32(g3, xv, e3);
                    h0 = mla_f32(h0, yv, e0);
                    h1 = mla_f32(h1, yv, e1);
                    h2 = mla_f32(h2, yv, e2);
                    h3 = mla_f32(h3, yv, e3);
                }
            }
            apply_update(w, u, key, neg_lr, o, j, g0);
            apply_update(w, u, key, neg_lr, o + 1, j, g1);
            apply_update(w, u, key, neg_lr, o + 2, j, g2);
            apply_update(w, u, key, neg_lr, o + 3, j, g3);
            apply_update(w, u, key, neg_lr, o, j + 1, h0);
            apply_update(w, u, key, neg_lr, o + 1, j + 1, h1);
            apply_update(w, u, key, neg_lr, o + 2, j + 1, h2);
            apply_update(w, u, key, neg_lr, o + 3, j + 1, h3);
        }
        for (; j < w->n_train; j++) update_1x4(p, x, x_c, gacc, w, u, key, neg_lr, o, j);
    }
    for (; o < out_c; o++) {
        for (int32_t j = 0; j < w->n_train; j++) {
            const int32_t xc = saved_chan(w, x_c, j);
            float g = 0.0f;
            for (int32_t oy = 0; oy < p->out_h; oy++)
                for (int32_t ox = 0; ox < p->out_w; ox++)
                    g = mla_f32(g, (float)x[((oy * p->stride) * p->in_w + ox * p->stride) * x_c + xc] - zero,
                                gacc[(oy * p->out_w + ox) * out_c + o]);
            apply_update(w, u, key, neg_lr, o, j, g);
        }
    }
}

#if defined(__ARM_FP)
/* The sums over hw >= 1 positions (rows c floats apart) of 16 channels from gp on, each from +0.0f in position
 * order, into g[0..15]: sums in s0-s15, per position one VLDM of the 16 values and 16 VADD (20 instructions). */
static void bias_sums16(const float *gp, int32_t hw, int32_t c, float *g)
{
    const float *end = gp + hw * c;
    __asm__ volatile("vldmia  %[z], {s0-s7}\n\t"
                     "vldmia  %[z], {s8-s15}\n"
                     "1:\n\t"
                     "vldmia  %[gp], {s16-s31}\n\t"
                     "add     %[gp], %[gp], %[row]\n\t"
                     "vadd.f32 s0, s0, s16\n\t"
                     "vadd.f32 s1, s1, s17\n\t"
                     "vadd.f32 s2, s2, s18\n\t"
                     "vadd.f32 s3, s3, s19\n\t"
                     "vadd.f32 s4, s4, s20\n\t"
                     "vadd.f32 s5, s5, s21\n\t"
                     "vadd.f32 s6, s6, s22\n\t"
                     "vadd.f32 s7, s7, s23\n\t"
                     "vadd.f32 s8, s8, s24\n\t"
                     "vadd.f32 s9, s9, s25\n\t"
                     "vadd.f32 s10, s10, s26\n\t"
                     "vadd.f32 s11, s11, s27\n\t"
                     "vadd.f32 s12, s12, s28\n\t"
                     "vadd.f32 s13, s13, s29\n\t"
                     "vadd.f32 s14, s14, s30\n\t"
                     "vadd.f32 s15, s15, s31\n\t"
                     "cmp     %[gp], %[end]\n\t"
                     "bne     1b\n\t"
                     "vstmia  %[g], {s0-s15}"
                     : [gp] "+r"(gp)
                     : [z] "r"(zeros8), [row] "r"(c * (int32_t)sizeof(float)), [end] "r"(end), [g] "r"(g)
                     : "s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9", "s10", "s11", "s12", "s13", "s14",
                       "s15", "s16", "s17", "s18", "s19", "s20", "s21", "s22", "s23", "s24", "s25", "s26", "s27", "s28",
                       "s29", "s30", "s31", "cc", "memory");
}
#endif

/* Fused bias gradient + update, 16 channels per pass over the positions (bias_sums16), then four (each channel's
 * sum keeps its order). */
void mt_bias_update_f32(const float *gacc, int32_t hw, int32_t c, int32_t *bias, const mt_update_params *u,
                        const mt_train_ctx *ctx)
{
    const uint32_t key = mt_hash_key(ctx->seed, ctx->step, u->param_id);
    const float neg_lr = -ctx->lr, *const divisor = u->divisor; /* locals: the int32 stores may not alias them */
    const int32_t rounding = u->rounding, row0 = u->row0;
    /* a sum of exactly +0.0 (a dead channel) leaves its bias as it is when the divisor is positive and finite and
     * so is the learning rate: the step is +-0.0 (+ u < 1, floored) and rounds to 0 */
    const int finite_lr = __builtin_fabsf(neg_lr) < __builtin_inff();
    int32_t o = 0;
#if defined(__ARM_FP)
    for (; hw > 0 && o + 16 <= c; o += 16) {
        float g[16];
        bias_sums16(gacc + o, hw, c, g);
        for (int32_t j = 0; j < 16; j++) {
            const float dv = divisor[o + j];
            if (f32_bits(&g[j]) == 0 && finite_lr && dv > 0.0f && dv < __builtin_inff()) continue;
            float d = g[j] / dv;
            bias[o + j] = update_s32_fast(bias[o + j], neg_lr * d, rounding, key, (uint32_t)(o + j + row0));
        }
    }
#endif
    for (; o + 4 <= c; o += 4) {
        float g0 = 0.0f, g1 = 0.0f, g2 = 0.0f, g3 = 0.0f;
        const float *gp = gacc + o;
        for (int32_t i = 0; i < hw; i++, gp += c) {
            g0 += gp[0];
            g1 += gp[1];
            g2 += gp[2];
            g3 += gp[3];
        }
        float g[4] = {g0, g1, g2, g3};
        for (int32_t j = 0; j < 4; j++) {
            float d = g[j] / divisor[o + j];
            bias[o + j] = update_s32_fast(bias[o + j], neg_lr * d, rounding, key, (uint32_t)(o + j + row0));
        }
    }
    for (; o < c; o++) {
        float g = 0.0f, d;
        for (int32_t i = 0; i < hw; i++) g += gacc[i * c + o];
        d = g / divisor[o];
        bias[o] = update_s32_fast(bias[o], neg_lr * d, rounding, key, (uint32_t)(o + row0));
    }
}

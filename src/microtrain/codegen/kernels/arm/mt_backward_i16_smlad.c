/* mt_backward_i16_smlad.c: the Cortex-M (ARMv7E-M DSP) twin of ../mt_backward_i16.c, same signature, the same
 * codes and the same exact int32 sums, hence the same float bits (docs/training-semantics.md, section 4b).
 *
 * The sum over output channels o runs two at a time by SMLAD (two 16 x 16 products added to an int32 in one
 * instruction). The codes of the whole tensor are written once to the scratch buffer in mt_i16.h's layout (the
 * 4 pixels of a group consecutive per output-channel pair); per pair of input channels (j, j + 1) and block of
 * MT_I16_OPAIRS output-channel pairs the int8 weights are paired once into a stack word per output-channel pair
 * (bytes [W(o,j), W(o,j+1), W(o+1,j), W(o+1,j+1)]: SXTB16 gives lanes (W(o,j), W(o+1,j)), rotated (W(o,j+1),
 * W(o+1,j+1))) and reused by every group of 4 pixels: per output-channel pair one weight load, two SXTB16, four
 * code loads and eight SMLAD (16 MACs). A block's last odd input channel and the last pixels (fewer than 4) run
 * the scalar loop. */
#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP

#include <arm_acle.h>

#include "../mt_i16.h"
#include "../mt_kernels.h"

/* two int8 weights as the low halfword (LDRH: unaligned halfword loads are allowed on ARMv7E-M) */
static inline uint32_t ld16(const int8_t *p)
{
    uint16_t v;
    __builtin_memcpy(&v, p, 2);
    return v;
}

/* the odd bytes (1 and 3) sign-extended into int16 lanes: SXTB16 with its ROR #8 operand (no ACLE form) */
static inline uint32_t sxtb16_ror8(uint32_t v)
{
    uint32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(v));
    return r;
}

/* The tile: s[k][c0], s[k][c1] += sum over the n output-channel pairs of (codes of pixel k) . (paired weights),
 * for the 4 pixels k of a group (q: the group's codes from the first pair, 4 words per pair; pw: the paired
 * weights). The loop is asm (8 accumulators, 2 pointers and 3 temporaries; its end on the stack: gcc finds no
 * register for it on the M4), the first n % 4 pairs in C. */
__attribute__((noinline)) static void tile4x2(const uint32_t *pw, int32_t n, const int16_t *q, mt_i32_alias *const *s,
                                              int32_t c0, int32_t c1)
{
    mt_i32_alias *s0 = s[0], *s1 = s[1], *s2 = s[2], *s3 = s[3];
    int32_t a0 = s0[c0], a1 = s0[c1], a2 = s1[c0], a3 = s1[c1], a4 = s2[c0], a5 = s2[c1], a6 = s3[c0], a7 = s3[c1];
    const uint32_t *qw = (const uint32_t *)(const void *)q;
    for (; n & 3; n--, pw++, qw += 4) {
        const int32_t lo = (int32_t)__sxtb16(*pw), hi = (int32_t)sxtb16_ror8(*pw);
        a0 = __smlad((int32_t)qw[0], lo, a0), a1 = __smlad((int32_t)qw[0], hi, a1);
        a2 = __smlad((int32_t)qw[1], lo, a2), a3 = __smlad((int32_t)qw[1], hi, a3);
        a4 = __smlad((int32_t)qw[2], lo, a4), a5 = __smlad((int32_t)qw[2], hi, a5);
        a6 = __smlad((int32_t)qw[3], lo, a6), a7 = __smlad((int32_t)qw[3], hi, a7);
    }
    if (n) {
        const uint32_t *end = pw + n;
        uint32_t t0, t1, t2;
#define MT_I16_STEP                                                                                                 \
    "ldr %[t0], [%[w]], #4\n\t"                                                                                     \
    "sxtb16 %[t1], %[t0]\n\t"                                                                                       \
    "sxtb16 %[t0], %[t0], ror #8\n\t"                                                                               \
    "ldr %[t2], [%[q]], #4\n\t"                                                                                     \
    "smlad %[a0], %[t2], %[t1], %[a0]\n\t"                                                                          \
    "smlad %[a1], %[t2], %[t0], %[a1]\n\t"                                                                          \
    "ldr %[t2], [%[q]], #4\n\t"                                                                                     \
    "smlad %[a2], %[t2], %[t1], %[a2]\n\t"                                                                          \
    "smlad %[a3], %[t2], %[t0], %[a3]\n\t"                                                                          \
    "ldr %[t2], [%[q]], #4\n\t"                                                                                     \
    "smlad %[a4], %[t2], %[t1], %[a4]\n\t"                                                                          \
    "smlad %[a5], %[t2], %[t0], %[a5]\n\t"                                                                          \
    "ldr %[t2], [%[q]], #4\n\t"                                                                                     \
    "smlad %[a6], %[t2], %[t1], %[a6]\n\t"                                                                          \
    "smlad %[a7], %[t2], %[t0], %[a7]\n\t"
        __asm__ volatile("1:\n\t" MT_I16_STEP MT_I16_STEP MT_I16_STEP MT_I16_STEP
                         "ldr %[t2], %[end]\n\t"
                         "cmp %[w], %[t2]\n\t"
                         "bne 1b\n\t"
                         : [a0] "+r"(a0), [a1] "+r"(a1), [a2] "+r"(a2), [a3] "+r"(a3), [a4] "+r"(a4), [a5] "+r"(a5),
                           [a6] "+r"(a6), [a7] "+r"(a7), [w] "+r"(pw), [q] "+r"(qw), [t0] "=&r"(t0), [t1] "=&r"(t1),
                           [t2] "=&r"(t2)
                         : [end] "m"(end)
                         : "cc", "memory");
#undef MT_I16_STEP
    }
    s0[c0] = a0, s0[c1] = a1, s1[c0] = a2, s1[c1] = a3, s2[c0] = a4, s2[c1] = a5, s3[c0] = a6, s3[c1] = a7;
}

/* the codes of the whole tensor by VCVTR (float -> int32 in FPSCR's rounding mode, round to nearest even after
 * reset): mt_i16_code_tensor's codes and layout (|g * 2^e| <= 2^14), two codes per word store. The Cortex-M4F and
 * M7 this file is built for have the FPU (-mfloat-abi=hard). */
static inline int32_t code(float t)
{
    union {
        float f;
        int32_t i;
    } r;
    __asm__("vcvtr.s32.f32 %0, %1" : "=t"(r.f) : "t"(t));
    return r.i;
}

static void code_tensor(const float *g, int32_t npix, int32_t out_c, float up, int16_t *codes)
{
    const int32_t opairs = (out_c + 1) / 2, half = out_c / 2, n = (npix + 3) / 4 * 4;
    uint32_t *cw = (uint32_t *)(void *)codes;
    for (int32_t pix = 0; pix < n; pix++) {
        const float *gp = g + pix * out_c;
        uint32_t *c = cw + (pix >> 2) * opairs * 4 + (pix & 3), *end = c + 4 * half;
        if (pix >= npix) {
            for (int32_t op = 0; op < opairs; op++) c[4 * op] = 0;
            continue;
        }
        for (; c != end; c += 4, gp += 2)
            *c = ((uint32_t)code(gp[0] * up) & 0xffffu) | ((uint32_t)code(gp[1] * up) << 16);
        if (out_c & 1) *c = (uint32_t)code(gp[0] * up) & 0xffffu;
    }
}

/* the int32 sums of output pixel pix: its input gradient's place in gx (the same size) */
static inline mt_i32_alias *sums(const mt_conv_params *p, float *gx, int32_t pix)
{
    if (p->stride == 1) return (mt_i32_alias *)(gx + pix * p->in_c);
    const int32_t oy = pix / p->out_w, ox = pix - oy * p->out_w;
    return (mt_i32_alias *)(gx + ((oy * p->stride) * p->in_w + ox * p->stride) * p->in_c);
}

/* one weight block (frozen or trained: nb input channels idx, rows nb apart) over every pixel */
static void block(const mt_conv_params *p, const int16_t *codes, const int8_t *wb, const int16_t *idx, int32_t nb,
                  float *gx)
{
    uint32_t pw[MT_I16_OPAIRS];
    const int32_t out_c = p->out_c, opairs = (out_c + 1) / 2, npix = p->out_h * p->out_w, full = npix & ~3;
    for (int32_t op0 = 0; op0 < opairs; op0 += MT_I16_OPAIRS) {
        const int32_t n = opairs - op0 < MT_I16_OPAIRS ? opairs - op0 : MT_I16_OPAIRS;
        for (int32_t j = 0; j + 1 < nb; j += 2) {
            /* the weights of this channel pair, paired by output channel: two halfword loads per word */
            const int32_t whole = 2 * (op0 + n) <= out_c ? n : n - 1; /* an odd out_c's last pair: one row */
            const int8_t *w0 = wb + 2 * op0 * nb + j;
            for (int32_t k = 0; k < whole; k++, w0 += 2 * nb) pw[k] = ld16(w0) | (ld16(w0 + nb) << 16);
            if (whole < n) pw[whole] = ld16(w0);
            const int32_t c0 = idx ? idx[j] : j, c1 = idx ? idx[j + 1] : j + 1;
            for (int32_t g = 0; g < full; g += 4) {
                mt_i32_alias *const sg[4] = {sums(p, gx, g), sums(p, gx, g + 1), sums(p, gx, g + 2), sums(p, gx, g + 3)};
                tile4x2(pw, n, codes + ((g >> 2) * opairs + op0) * 8, sg, c0, c1);
            }
        }
    }
    /* the scalar rest: a last odd channel of every pixel, every channel of the last pixels */
    for (int32_t pix = 0; pix < npix; pix++) {
        const int32_t j0 = pix < full ? nb & ~1 : 0;
        mt_i32_alias *acc = sums(p, gx, pix);
        for (int32_t o = 0; o < out_c && j0 < nb; o++) {
            const int32_t qo = codes[mt_i16_code_index(opairs, pix, o)];
            const int8_t *wr = wb + o * nb;
            for (int32_t j = j0; j < nb; j++) acc[idx ? idx[j] : j] += qo * (int32_t)wr[j];
        }
    }
}

void mt_conv_grad_input_pointwise_i16(const mt_conv_params *p, const float *gacc, const mt_weight_s8 *w, int16_t *codes,
                                      float *gx)
{
    const int32_t n_in = p->in_h * p->in_w * p->in_c, npix = p->out_h * p->out_w, in_c = p->in_c, out_c = p->out_c;
    const int32_t e = mt_i16_exponent(gacc, npix * out_c);
    const float up = mt_i16_pow2(e == MT_I16_BAD ? 0 : e), down = mt_i16_pow2(e == MT_I16_BAD ? 0 : -e);
    if (p->stride != 1)
        for (int32_t i = 0; i < n_in; i++) gx[i] = 0.0f; /* positions no output reads */
    for (int32_t pix = 0; pix < npix; pix++) {
        mt_i32_alias *acc = sums(p, gx, pix);
        if (e == MT_I16_BAD) { /* a non-finite gradient: NaN, as the portable kernel */
            mt_i16_bits nan;
            nan.u = 0x7fc00000u;
            for (int32_t i = 0; i < in_c; i++) ((float *)(void *)acc)[i] = nan.f;
        } else {
            for (int32_t i = 0; i < in_c; i++) acc[i] = 0;
        }
    }
    if (e == MT_I16_BAD) return;
    code_tensor(gacc, npix, out_c, up, codes);
    if (w->n_frozen) block(p, codes, w->frozen, w->frozen_idx, w->n_frozen, gx);
    if (w->n_train) block(p, codes, w->train, w->train_idx, w->n_train, gx);
    for (int32_t pix = 0; pix < npix; pix++) {
        mt_i32_alias *acc = sums(p, gx, pix);
        float *x = (float *)(void *)acc;
        int32_t i = 0;
        for (; i + 4 <= in_c; i += 4) {
            const int32_t a = acc[i], b = acc[i + 1], c = acc[i + 2], d = acc[i + 3];
            x[i] = (float)a * down, x[i + 1] = (float)b * down, x[i + 2] = (float)c * down, x[i + 3] = (float)d * down;
        }
        for (; i < in_c; i++) x[i] = (float)acc[i] * down;
    }
}

#endif

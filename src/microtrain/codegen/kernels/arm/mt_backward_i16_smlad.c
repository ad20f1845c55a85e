/* mt_backward_i16_smlad.c: the Cortex-M (ARMv7E-M DSP) twin of ../mt_backward_i16.c, same signature, the same
 * codes and the same exact int32 sums, hence the same float bits (docs/training-semantics.md, section 4b).
 *
 * The sum over output channels o runs two at a time by SMLAD (two 16 x 16 products added to an int32 in one
 * instruction): the int16 codes of o and o + 1 are one word of the stack code buffer, and the int8 weights of
 * rows o and o + 1 are paired by channel with one ORR of two halfword loads then SXTB16 (bytes [w(o,j),
 * w(o,j+1), w(o+1,j), w(o+1,j+1)] -> lanes (w(o,j), w(o+1,j)) and, rotated, (w(o,j+1), w(o+1,j+1))). Tile: 4
 * pixels x 2 input channels (8 accumulators; each weight pair used for four pixels), codes of MT_I16_OCHUNK
 * output channels of the four pixels at a time (512 bytes of stack), the int32 sums kept in the float output
 * buffer between chunks. The last output channels (fewer than 8), a block's last odd input channel and the last
 * pixels (fewer than 4) run the scalar loop. */
#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP

#include <arm_acle.h>

#include "../mt_i16.h"
#include "../mt_kernels.h"

static inline uint32_t ld32(const void *p)
{
    uint32_t v;
    __builtin_memcpy(&v, p, 4); /* one LDR (unaligned word loads are allowed on ARMv7E-M) */
    return v;
}

static inline uint32_t sxtb16_ror8(uint32_t v)
{
    uint32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(v));
    return r;
}

#define PIX 4 /* pixels per tile; their codes are MT_I16_OCHUNK int16 (128 bytes) apart: the asm offsets below */
typedef char mt_i16_chunk_is_64[MT_I16_OCHUNK == 64 ? 1 : -1];

/* The tile: s[k][c0], s[k][c1] += sum over o < n of q[k][o] * (W[o, j], W[o, j + 1]) for the 4 pixels k, n a
 * positive multiple of 8, wr = &W[0, j], rows nb apart. Per two output channels: two halfword loads of the
 * weights, one ORR pairing them by channel, two SXTB16 (lanes (W[o, j], W[o+1, j]) and (W[o, j+1], W[o+1, j+1])),
 * four code-pair loads and eight SMLAD (16 MACs). The o loop is asm: its 8 accumulators, 2 pointers, the row
 * stride and 3 temporaries take 14 registers, which gcc's allocation spills otherwise (noinline: the caller's
 * values are saved around the call, not around the asm). */
__attribute__((noinline)) static void tile4x2(const int16_t *q, int32_t n, const int8_t *wr, int32_t nb,
                                              mt_i32_alias *const *s, int32_t c0, int32_t c1)
{
    mt_i32_alias *s0 = s[0], *s1 = s[1], *s2 = s[2], *s3 = s[3];
    const int16_t *end = q + n;
    {
        int32_t a0 = s0[c0], a1 = s0[c1], a2 = s1[c0], a3 = s1[c1], a4 = s2[c0], a5 = s2[c1], a6 = s3[c0],
                a7 = s3[c1];
        const int16_t *qq = q;
        uint32_t t0, t1, t2;
#define MT_I16_STEP(OFF)                                                                                            \
    "ldrh %[t0], [%[w]]\n\t"                                                                                        \
    "ldrh %[t1], [%[w], %[nb]]\n\t"                                                                                 \
    "add %[w], %[w], %[nb], lsl #1\n\t"                                                                             \
    "orr %[t0], %[t0], %[t1], lsl #16\n\t"                                                                          \
    "sxtb16 %[t1], %[t0]\n\t"                                                                                       \
    "sxtb16 %[t0], %[t0], ror #8\n\t"                                                                               \
    "ldr %[t2], [%[q], #" #OFF "]\n\t"                                                                              \
    "smlad %[a0], %[t2], %[t1], %[a0]\n\t"                                                                          \
    "smlad %[a1], %[t2], %[t0], %[a1]\n\t"                                                                          \
    "ldr %[t2], [%[q], #(128 + " #OFF ")]\n\t"                                                                      \
    "smlad %[a2], %[t2], %[t1], %[a2]\n\t"                                                                          \
    "smlad %[a3], %[t2], %[t0], %[a3]\n\t"                                                                          \
    "ldr %[t2], [%[q], #(256 + " #OFF ")]\n\t"                                                                      \
    "smlad %[a4], %[t2], %[t1], %[a4]\n\t"                                                                          \
    "smlad %[a5], %[t2], %[t0], %[a5]\n\t"                                                                          \
    "ldr %[t2], [%[q], #(384 + " #OFF ")]\n\t"                                                                      \
    "smlad %[a6], %[t2], %[t1], %[a6]\n\t"                                                                          \
    "smlad %[a7], %[t2], %[t0], %[a7]\n\t"
        __asm__ volatile("1:\n\t" MT_I16_STEP(0) MT_I16_STEP(4) MT_I16_STEP(8) MT_I16_STEP(12)
                         "adds %[q], %[q], #16\n\t"
                         "ldr %[t2], %[end]\n\t"
                         "cmp %[q], %[t2]\n\t"
                         "bne 1b\n\t"
                         : [a0] "+r"(a0), [a1] "+r"(a1), [a2] "+r"(a2), [a3] "+r"(a3), [a4] "+r"(a4), [a5] "+r"(a5),
                           [a6] "+r"(a6), [a7] "+r"(a7), [w] "+r"(wr), [q] "+r"(qq), [t0] "=&r"(t0), [t1] "=&r"(t1),
                           [t2] "=&r"(t2)
                         : [nb] "r"(nb), [end] "m"(end)
                         : "cc", "memory");
#undef MT_I16_STEP
        s0[c0] = a0, s0[c1] = a1, s1[c0] = a2, s1[c1] = a3, s2[c0] = a4, s2[c1] = a5, s3[c0] = a6, s3[c1] = a7;
    }
}

/* acc[chan(j)] += sum over o in [o0, o1) of q[o] * W[o, j] for j in [j0, j1) (the scalar loop) */
static void scalar_sums(const int16_t *q, int32_t o0, int32_t o1, const int8_t *wb, const int16_t *idx, int32_t j0,
                        int32_t j1, int32_t nb, mt_i32_alias *acc)
{
    for (int32_t o = o0; o < o1; o++) {
        const int8_t *wr = wb + o * nb;
        const int32_t qo = q[o];
        for (int32_t j = j0; j < j1; j++) acc[idx ? idx[j] : j] += qo * (int32_t)wr[j];
    }
}

/* one weight block (frozen or trained: nb input channels idx, rows nb apart) for the codes q[k] of output
 * channels [0, n) of np pixels (sums s[k]): the asm tiles where they apply, the scalar loop for the rest */
static void block(int16_t (*q)[MT_I16_OCHUNK], int32_t np, int32_t n, const int8_t *wb, const int16_t *idx,
                  int32_t nb, mt_i32_alias **s)
{
    const int32_t n8 = np == PIX ? n & ~7 : 0, pairs = n8 ? nb & ~1 : 0;
    if (nb == 0) return;
    for (int32_t j = 0; j < pairs; j += 2)
        tile4x2(q[0], n8, wb + j, nb, s, idx ? idx[j] : j, idx ? idx[j + 1] : j + 1);
    for (int32_t k = 0; k < np; k++) {
        if (pairs < nb) scalar_sums(q[k], 0, n8, wb, idx, pairs, nb, nb, s[k]);
        if (n8 < n) scalar_sums(q[k], n8, n, wb, idx, 0, nb, nb, s[k]);
    }
}

/* mt_i16_codes by VCVTR (float -> int32 in FPSCR's rounding mode, round to nearest even after reset): the same
 * codes as mt_rint_small_f32 for |g * 2^e| <= 2^14, fewer instructions */
static void codes(const float *g, int32_t n, float up, int16_t *q)
{
#if defined(__ARM_FP)
    int32_t i = 0;
    for (; i + 2 <= n; i += 2) { /* two codes per word store (q is word-aligned, i even) */
        union {
            float f;
            int32_t i;
        } r0, r1;
        __asm__("vcvtr.s32.f32 %0, %1" : "=t"(r0.f) : "t"(g[i] * up));
        __asm__("vcvtr.s32.f32 %0, %1" : "=t"(r1.f) : "t"(g[i + 1] * up));
        *(uint32_t *)(void *)(q + i) = ((uint32_t)r0.i & 0xffffu) | ((uint32_t)r1.i << 16);
    }
    if (i < n) mt_i16_codes(g + i, n - i, up, q + i);
#else
    mt_i16_codes(g, n, up, q);
#endif
}

/* gx = float(sum) * 2^-e over one pixel's n sums (four per pass) */
static void to_float(mt_i32_alias *s, float *x, int32_t n, float down)
{
    int32_t i = 0;
    for (; i + 4 <= n; i += 4) {
        const int32_t a = s[i], b = s[i + 1], c = s[i + 2], d = s[i + 3];
        x[i] = (float)a * down, x[i + 1] = (float)b * down, x[i + 2] = (float)c * down, x[i + 3] = (float)d * down;
    }
    for (; i < n; i++) x[i] = (float)s[i] * down;
}

void mt_conv_grad_input_pointwise_i16(const mt_conv_params *p, const float *gacc, const mt_weight_s8 *w, float *gx)
{
    int16_t q[PIX][MT_I16_OCHUNK] __attribute__((aligned(4)));
    const int32_t n_in = p->in_h * p->in_w * p->in_c, npix = p->out_h * p->out_w, in_c = p->in_c, out_c = p->out_c;
    const int32_t e = mt_i16_exponent(gacc, npix * out_c);
    const float up = mt_i16_pow2(e == MT_I16_BAD ? 0 : e), down = mt_i16_pow2(e == MT_I16_BAD ? 0 : -e);
    if (p->stride != 1)
        for (int32_t i = 0; i < n_in; i++) gx[i] = 0.0f; /* positions no output reads */
    for (int32_t pix = 0; pix < npix; pix += PIX) {
        const int32_t np = npix - pix < PIX ? npix - pix : PIX;
        float *xs[PIX];
        mt_i32_alias *s[PIX];
        for (int32_t k = 0; k < np; k++) {
            const int32_t oy = (pix + k) / p->out_w, ox = (pix + k) - oy * p->out_w;
            xs[k] = gx + ((oy * p->stride) * p->in_w + ox * p->stride) * in_c;
            s[k] = (mt_i32_alias *)xs[k];
        }
        if (e == MT_I16_BAD) { /* a non-finite gradient: NaN, as the portable kernel */
            mt_i16_bits nan;
            nan.u = 0x7fc00000u;
            for (int32_t k = 0; k < np; k++)
                for (int32_t i = 0; i < in_c; i++) xs[k][i] = nan.f;
            continue;
        }
        for (int32_t k = 0; k < np; k++)
            for (int32_t i = 0; i < in_c; i++) s[k][i] = 0;
        for (int32_t o0 = 0; o0 < out_c; o0 += MT_I16_OCHUNK) {
            const int32_t n = out_c - o0 < MT_I16_OCHUNK ? out_c - o0 : MT_I16_OCHUNK;
            for (int32_t k = 0; k < np; k++) codes(gacc + (pix + k) * out_c + o0, n, up, q[k]);
            block(q, np, n, w->frozen + o0 * w->n_frozen, w->frozen_idx, w->n_frozen, s);
            block(q, np, n, w->train + o0 * w->n_train, w->train_idx, w->n_train, s);
        }
        for (int32_t k = 0; k < np; k++) to_float(s[k], xs[k], in_c, down);
    }
}

#endif

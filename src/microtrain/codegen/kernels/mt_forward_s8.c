/* mt_forward_s8.c: int8 forward reference kernels (see mt_kernels.h for layouts and conventions). */
#include "mt_arith.h"
#include "mt_kernels.h"
#if defined(__AVX2__)
#include "mt_x86_avx2.h" /* host builds targeting AVX2: vector twins of inner loops below */
#endif

/* bit i of the mask := ok (0 or 1) */
static inline void mt_mask_put(uint8_t *mask, int32_t i, uint32_t ok) {
    mask[i >> 3] = (uint8_t)((mask[i >> 3] & ~(1u << (i & 7))) | (ok << (i & 7)));
}

static inline void mt_store(int8_t *y, uint8_t *mask, int32_t i, int32_t acc, int32_t bias, float eff, int32_t y_zero) {
    uint8_t ok;
    if (!mask) {
        y[i] = mt_requant_s8(acc, bias, eff, y_zero, NULL);
        return;
    }
    y[i] = mt_requant_s8(acc, bias, eff, y_zero, &ok);
    mt_mask_put(mask, i, ok);
}

#define MT_RUN_MAX 16 /* outputs requantised together: 16 keeps the callers' frames within budget.STACK_ESTIMATE */

/* mt_store for the n <= MT_RUN_MAX contiguous outputs y[base..base+n): a branch-free loop over outputs,
 * which compilers vectorise (the same float operations per element, so the same bytes); mask bits after. */
static void mt_store_run(int8_t *y, uint8_t *mask, int32_t base, const int32_t *acc, const int32_t *bias,
                         const float *eff, int32_t y_zero, int32_t n) {
    uint8_t ok[MT_RUN_MAX];
    int8_t *yo = y + base;
    int32_t o;
#if defined(__AVX2__)
    { /* 8 outputs per vector sequence (mt_x86_avx2.h), the rest scalar; mask bits a byte at a time */
        uint32_t bits = 0;
        (void)ok;
        for (o = 0; o + 8 <= n; o += 8) bits |= mt_requant8_avx2(acc + o, bias + o, eff + o, y_zero, yo + o) << o;
        for (; o < n; o++) {
            uint8_t in_range;
            yo[o] = mt_requant_s8(acc[o], bias[o], eff[o], y_zero, &in_range);
            bits |= (uint32_t)in_range << o;
        }
        if (mask) mt_mask_put_bits(mask, base, bits, n);
        return;
    }
#endif
    if (!mask) {
        for (o = 0; o < n; o++) yo[o] = mt_requant_s8(acc[o], bias[o], eff[o], y_zero, NULL);
        return;
    }
    for (o = 0; o < n; o++) yo[o] = mt_requant_s8(acc[o], bias[o], eff[o], y_zero, &ok[o]);
    for (o = 0; o < n; o++) mt_mask_put(mask, base + o, ok[o]);
}

static int32_t mt_dot_s8(const int8_t *x, int32_t x_zero, const int8_t *w, int32_t n) {
    int32_t acc = 0, i;
    for (i = 0; i < n; i++) acc += ((int32_t)x[i] - x_zero) * (int32_t)w[i];
    return acc;
}

static int32_t mt_dot_idx_s8(const int8_t *x, int32_t x_zero, const int8_t *w, const int16_t *idx, int32_t n) {
    int32_t acc = 0, i;
    for (i = 0; i < n; i++) acc += ((int32_t)x[idx[i]] - x_zero) * (int32_t)w[i];
    return acc;
}

#define MT_PW_CHUNK MT_RUN_MAX /* output channels whose weight sums live on the stack (64 bytes) */

/* sum over i of x[i] * w[i]: a plain int8 dot product, which compilers map to multiply-add SIMD */
static inline int32_t mt_dot_raw_s8(const int8_t *x, const int8_t *w, int32_t n) {
    int32_t acc = 0, i;
    for (i = 0; i < n; i++) acc += (int32_t)x[i] * (int32_t)w[i];
    return acc;
}

#if !defined(__AVX2__) /* else mt_x86_avx2.h's */
static inline void mt_dot4_raw_s8(const int8_t *x, const int8_t *w, int32_t w_stride, int32_t n, int32_t *out) {
    int32_t k;
    for (k = 0; k < 4; k++) out[k] = mt_dot_raw_s8(x, w + k * w_stride, n);
}
#endif

/* acc[o] += sum over i < n of x[i] * w[o * w_stride + i] for o < n_out (four rows at a time) */
static void mt_dots_s8(const int8_t *x, const int8_t *w, int32_t w_stride, int32_t n, int32_t n_out, int32_t *acc) {
    int32_t part[4];
    int32_t o, k;
    for (o = 0; o + 4 <= n_out; o += 4) {
        mt_dot4_raw_s8(x, w + o * w_stride, w_stride, n, part);
        for (k = 0; k < 4; k++) acc[o + k] += part[k];
    }
    for (; o < n_out; o++) acc[o] += mt_dot_raw_s8(x, w + o * w_stride, n);
}

/* x_zero * sum of each of the n weight rows (length c): the zero point's part of every output's sum */
static void mt_zero_terms(const int8_t *w, int32_t c, int32_t n, int32_t x_zero, int32_t *wsum) {
    int32_t o, i;
    for (o = 0; o < n; o++) {
        int32_t s = 0;
        for (i = 0; i < c; i++) s += w[o * c + i];
        wsum[o] = s * x_zero;
    }
}

#if defined(__AVX2__)
#define MT_PW_WIDE_MAX 1024 /* input channels whose int16 weights the host AVX2 path keeps on the stack (32 KB) */

/* mt_conv_pointwise_s8 for in_c in [8, MT_PW_WIDE_MAX] on AVX2 hosts: the chunk's weight rows widened to int16
 * once per call, eight output channels per pass over a pixel (mt_dot8_s8_w16_avx2); the same exact int32 sums */
static void mt_conv_pointwise_avx2(const mt_conv_params *p, const int8_t *x, const int8_t *w, const int32_t *bias,
                                   const float *eff, int8_t *y, uint8_t *mask) {
    int16_t wv[MT_PW_CHUNK * MT_PW_WIDE_MAX];
    int32_t wsum[MT_PW_CHUNK], acc[MT_PW_CHUNK];
    int32_t oy, ox, o, o0, c = p->in_c, c8 = p->in_c & ~7;
    for (o0 = 0; o0 < p->out_c; o0 += MT_PW_CHUNK) {
        int32_t n = p->out_c - o0 < MT_PW_CHUNK ? p->out_c - o0 : MT_PW_CHUNK;
        mt_zero_terms(w + o0 * c, c, n, p->x_zero, wsum);
        mt_widen_rows_s8(w + o0 * c, c, c8, n, wv, c8);
        for (oy = 0; oy < p->out_h; oy++) {
            for (ox = 0; ox < p->out_w; ox++) {
                const int8_t *xp = x + ((oy * p->stride) * p->in_w + ox * p->stride) * c;
                for (o = 0; o < n; o++) acc[o] = -wsum[o];
                for (o = 0; o + 8 <= n; o += 8) mt_dot8_s8_w16_avx2(xp, wv + o * c8, c8, c8, acc + o);
                for (; o < n; o++) acc[o] += mt_dot_raw_s8(xp, w + (o0 + o) * c, c8);
                if (c8 < c)
                    for (o = 0; o < n; o++) acc[o] += mt_dot_raw_s8(xp + c8, w + (o0 + o) * c + c8, c - c8);
                mt_store_run(y, mask, (oy * p->out_w + ox) * p->out_c + o0, acc, bias + o0, eff + o0, p->y_zero, n);
            }
        }
    }
}
#endif

/* acc = sum (x - x_zero) * w = sum x * w - x_zero * sum w (exact in int32) */
void mt_conv_pointwise_s8(const mt_conv_params *p, const int8_t *x, const int8_t *w, const int32_t *bias,
                          const float *eff, int8_t *y, uint8_t *mask) {
    int32_t wsum[MT_PW_CHUNK], acc[MT_PW_CHUNK];
    int32_t oy, ox, o, o0, c = p->in_c;
#if defined(__AVX2__)
    if (c >= 8 && c <= MT_PW_WIDE_MAX) {
        mt_conv_pointwise_avx2(p, x, w, bias, eff, y, mask);
        return;
    }
#endif
    for (o0 = 0; o0 < p->out_c; o0 += MT_PW_CHUNK) {
        int32_t n = p->out_c - o0 < MT_PW_CHUNK ? p->out_c - o0 : MT_PW_CHUNK;
        mt_zero_terms(w + o0 * c, c, n, p->x_zero, wsum);
        for (oy = 0; oy < p->out_h; oy++) {
            for (ox = 0; ox < p->out_w; ox++) {
                const int8_t *xp = x + ((oy * p->stride) * p->in_w + ox * p->stride) * c;
                int32_t base = (oy * p->out_w + ox) * p->out_c + o0;
                for (o = 0; o < n; o++) acc[o] = -wsum[o];
                mt_dots_s8(xp, w + o0 * c, c, c, n, acc);
                mt_store_run(y, mask, base, acc, bias + o0, eff + o0, p->y_zero, n);
            }
        }
    }
}

#define MT_GATHER_MAX 64 /* input channels of one weight block gathered contiguously (64-byte stack array) */

/* acc[o] += sum over j of x[idx[j]] * w[o * nb + j] for o < n_out: the block's input channels are
 * gathered into a contiguous row, 64 at a time, so the dot products run on contiguous memory. */
static void mt_gathered_dots(const int8_t *x, const int8_t *w, const int16_t *idx, int32_t nb, int32_t n_out,
                             int32_t *acc) {
    int8_t xg[MT_GATHER_MAX];
    int32_t j0, j;
    for (j0 = 0; j0 < nb; j0 += MT_GATHER_MAX) {
        int32_t m = nb - j0 < MT_GATHER_MAX ? nb - j0 : MT_GATHER_MAX;
        for (j = 0; j < m; j++) xg[j] = x[idx[j0 + j]];
        mt_dots_s8(xg, w + j0, nb, m, n_out, acc);
    }
}

/* acc = sum over both blocks of x * w - x_zero * (sum of both weight rows) (exact in int32) */
void mt_conv_pointwise_split_s8(const mt_conv_params *p, const int8_t *x, const int8_t *w_frozen,
                                const int16_t *frozen_idx, int32_t n_frozen, const int8_t *w_train,
                                const int16_t *train_idx, int32_t n_train, const int32_t *bias,
                                const float *eff, int8_t *y, uint8_t *mask) {
    int32_t wsum[MT_RUN_MAX], acc[MT_RUN_MAX];
    int32_t oy, ox, o, o0, i;
    for (o0 = 0; o0 < p->out_c; o0 += MT_RUN_MAX) {
        int32_t n = p->out_c - o0 < MT_RUN_MAX ? p->out_c - o0 : MT_RUN_MAX;
        for (o = 0; o < n; o++) {
            int32_t sum = 0;
            for (i = 0; i < n_frozen; i++) sum += w_frozen[(o0 + o) * n_frozen + i];
            for (i = 0; i < n_train; i++) sum += w_train[(o0 + o) * n_train + i];
            wsum[o] = sum * p->x_zero;
        }
        for (oy = 0; oy < p->out_h; oy++) {
            for (ox = 0; ox < p->out_w; ox++) {
                const int8_t *xp = x + ((oy * p->stride) * p->in_w + ox * p->stride) * p->in_c;
                for (o = 0; o < n; o++) acc[o] = -wsum[o];
                mt_gathered_dots(xp, w_frozen + o0 * n_frozen, frozen_idx, n_frozen, n, acc);
                mt_gathered_dots(xp, w_train + o0 * n_train, train_idx, n_train, n, acc);
                mt_store_run(y, mask, (oy * p->out_w + ox) * p->out_c + o0, acc, bias + o0, eff + o0, p->y_zero, n);
            }
        }
    }
}

#define MT_PATCH_MAX 80 /* window elements (kh * kw * in_c) gathered on the stack (160 bytes; frame within budget.STACK_ESTIMATE) */

#if defined(__AVX2__)
#define MT_CONV_WIDE_ROWS 64 /* output channels whose int16 weights the host AVX2 path keeps on the stack (10 KB) */
#endif

void mt_conv_s8(const mt_conv_params *p, const int8_t *x, const int8_t *w, const int32_t *bias,
                const float *eff, int8_t *y, uint8_t *mask) {
    int16_t patch[MT_PATCH_MAX];
    int32_t acc[MT_RUN_MAX];
    int32_t oy, ox, o, o0, ky, kx, i, k = p->kh * p->kw * p->in_c;
#if defined(__AVX2__)
    /* small windows on AVX2 hosts: weights widened to int16 rows padded with zeros to kp (a multiple of 16),
     * the patch padded likewise, eight output channels per pass (mt_dot8_s16_w16_avx2); same exact sums */
    int16_t wv[MT_CONV_WIDE_ROWS * MT_PATCH_MAX];
    int32_t kp = (k + 15) & ~15, wide = kp <= MT_PATCH_MAX && p->out_c <= MT_CONV_WIDE_ROWS;
    if (wide) {
        mt_widen_rows_s8(w, k, k, p->out_c, wv, kp);
        for (i = k; i < kp; i++) patch[i] = 0;
    }
#endif
    for (oy = 0; oy < p->out_h; oy++) {
        for (ox = 0; ox < p->out_w; ox++) {
            int32_t base = (oy * p->out_w + ox) * p->out_c;
            if (k <= MT_PATCH_MAX) {
                /* small windows (e.g. the RGB stem): gather x - x_zero once, real zeros in the padding,
                 * then each output channel is one contiguous dot product */
                int16_t *pp = patch;
                for (ky = 0; ky < p->kh; ky++) {
                    int32_t iy = oy * p->stride - p->pad + ky * p->dilation;
                    for (kx = 0; kx < p->kw; kx++) {
                        int32_t ix = ox * p->stride - p->pad + kx * p->dilation;
                        if (iy < 0 || iy >= p->in_h || ix < 0 || ix >= p->in_w) {
                            for (i = 0; i < p->in_c; i++) *pp++ = 0;
                        } else {
                            const int8_t *xp = x + (iy * p->in_w + ix) * p->in_c;
                            for (i = 0; i < p->in_c; i++) *pp++ = (int16_t)(xp[i] - p->x_zero);
                        }
                    }
                }
                for (o0 = 0; o0 < p->out_c; o0 += MT_RUN_MAX) {
                    int32_t n = p->out_c - o0 < MT_RUN_MAX ? p->out_c - o0 : MT_RUN_MAX;
                    o = 0;
#if defined(__AVX2__)
                    if (wide)
                        for (; o + 8 <= n; o += 8) {
                            int32_t j;
                            for (j = 0; j < 8; j++) acc[o + j] = 0;
                            mt_dot8_s16_w16_avx2(patch, wv + (o0 + o) * kp, kp, kp, acc + o);
                        }
#endif
                    for (; o < n; o++) {
                        const int8_t *wr = w + (o0 + o) * k;
                        int32_t a = 0;
                        for (i = 0; i < k; i++) a += (int32_t)patch[i] * (int32_t)wr[i];
                        acc[o] = a;
                    }
                    mt_store_run(y, mask, base + o0, acc, bias + o0, eff + o0, p->y_zero, n);
                }
                continue;
            }
            for (o = 0; o < p->out_c; o++) {
                int32_t a = 0;
                for (ky = 0; ky < p->kh; ky++) {
                    int32_t iy = oy * p->stride - p->pad + ky * p->dilation;
                    if (iy < 0 || iy >= p->in_h) continue;
                    for (kx = 0; kx < p->kw; kx++) {
                        int32_t ix = ox * p->stride - p->pad + kx * p->dilation;
                        if (ix < 0 || ix >= p->in_w) continue;
                        a += mt_dot_s8(x + (iy * p->in_w + ix) * p->in_c, p->x_zero,
                                       w + ((o * p->kh + ky) * p->kw + kx) * p->in_c, p->in_c);
                    }
                }
                mt_store(y, mask, base + o, a, bias[o], eff[o], p->y_zero);
            }
        }
    }
}

void mt_conv_split_s8(const mt_conv_params *p, const int8_t *x, const int8_t *w_frozen,
                      const int16_t *frozen_idx, int32_t n_frozen, const int8_t *w_train,
                      const int16_t *train_idx, int32_t n_train, const int32_t *bias, const float *eff,
                      int8_t *y, uint8_t *mask) {
    int32_t oy, ox, o, ky, kx;
    for (oy = 0; oy < p->out_h; oy++) {
        for (ox = 0; ox < p->out_w; ox++) {
            int32_t base = (oy * p->out_w + ox) * p->out_c;
            for (o = 0; o < p->out_c; o++) {
                int32_t acc = 0;
                for (ky = 0; ky < p->kh; ky++) {
                    int32_t iy = oy * p->stride - p->pad + ky * p->dilation;
                    if (iy < 0 || iy >= p->in_h) continue;
                    for (kx = 0; kx < p->kw; kx++) {
                        int32_t ix = ox * p->stride - p->pad + kx * p->dilation;
                        const int8_t *xp;
                        int32_t k;
                        if (ix < 0 || ix >= p->in_w) continue;
                        xp = x + (iy * p->in_w + ix) * p->in_c;
                        k = (o * p->kh + ky) * p->kw + kx;
                        acc += mt_dot_idx_s8(xp, p->x_zero, w_frozen + k * n_frozen, frozen_idx, n_frozen);
                        acc += mt_dot_idx_s8(xp, p->x_zero, w_train + k * n_train, train_idx, n_train);
                    }
                }
                mt_store(y, mask, base + o, acc, bias[o], eff[o], p->y_zero);
            }
        }
    }
}

/* One depthwise output channel `c` whose kh*kw taps are w[tap * w_stride]. */
static int32_t mt_dw_acc(const mt_conv_params *p, const int8_t *x, const int8_t *w, int32_t w_stride,
                         int32_t c, int32_t oy, int32_t ox) {
    int32_t acc = 0, ky, kx;
    for (ky = 0; ky < p->kh; ky++) {
        int32_t iy = oy * p->stride - p->pad + ky * p->dilation;
        if (iy < 0 || iy >= p->in_h) continue;
        for (kx = 0; kx < p->kw; kx++) {
            int32_t ix = ox * p->stride - p->pad + kx * p->dilation;
            if (ix < 0 || ix >= p->in_w) continue;
            acc += ((int32_t)x[(iy * p->in_w + ix) * p->in_c + c] - p->x_zero) * (int32_t)w[(ky * p->kw + kx) * w_stride];
        }
    }
    return acc;
}

#define MT_DW_TAPS_MAX 49 /* windows up to 7x7: the in-place kernel keeps a channel's taps in a local array */

/* First and one-past-last output index whose window lies inside an input of size n (pad, window span k). */
static void mt_inside_range(int32_t n, int32_t k, int32_t stride, int32_t pad, int32_t n_out, int32_t *lo, int32_t *hi) {
    int32_t last = n - k + pad; /* largest window start (+ pad) that still fits */
    *lo = (pad + stride - 1) / stride;
    *hi = last < 0 ? 0 : last / stride + 1;
    if (*hi > n_out) *hi = n_out;
    if (*lo > *hi) *lo = *hi;
}

#define MT_DW_CHUNK MT_RUN_MAX /* channels accumulated together: a 64-byte stack array, vectorisable loops */

#if defined(__AVX2__)
#define MT_DW_PAIRS_MAX 32768 /* int16 pair-interleaved depthwise weights the host AVX2 path keeps on the stack (64 KB) */
#endif

void mt_conv_depthwise_s8(const mt_conv_params *p, const int8_t *x, const int8_t *w, const int32_t *bias,
                          const float *eff, int8_t *y, uint8_t *mask) {
    int32_t acc[MT_DW_CHUNK];
    int32_t oy, ox, c0, j, ky, kx;
#if defined(__AVX2__)
    /* windows inside the input: taps two at a time on pre-interleaved int16 weights (mt_dw16_pairs_avx2) */
    int16_t wpair[MT_DW_PAIRS_MAX];
    int32_t off[MT_DW_TAPS_MAX];
    int32_t taps = p->kh * p->kw, chunks = p->out_c / MT_DW_CHUNK, y0 = 0, y1 = 0, x0 = 0, x1 = 0;
    if (taps <= MT_DW_TAPS_MAX && chunks * ((taps + 1) / 2) * 32 <= MT_DW_PAIRS_MAX) {
        mt_inside_range(p->in_h, (p->kh - 1) * p->dilation + 1, p->stride, p->pad, p->out_h, &y0, &y1);
        mt_inside_range(p->in_w, (p->kw - 1) * p->dilation + 1, p->stride, p->pad, p->out_w, &x0, &x1);
        mt_dw_pair_weights_avx2(w, taps, p->out_c, chunks, wpair);
        for (ky = 0; ky < p->kh; ky++)
            for (kx = 0; kx < p->kw; kx++) off[ky * p->kw + kx] = (ky * p->in_w + kx) * p->dilation * p->in_c;
    }
#endif
    for (oy = 0; oy < p->out_h; oy++) {
        for (ox = 0; ox < p->out_w; ox++) {
            int32_t base = (oy * p->out_w + ox) * p->out_c;
            for (c0 = 0; c0 < p->out_c; c0 += MT_DW_CHUNK) {
                int32_t n = p->out_c - c0 < MT_DW_CHUNK ? p->out_c - c0 : MT_DW_CHUNK;
#if defined(__AVX2__)
                if (n == MT_DW_CHUNK && oy >= y0 && oy < y1 && ox >= x0 && ox < x1) {
                    const int8_t *xw = x + ((oy * p->stride - p->pad) * p->in_w + ox * p->stride - p->pad) * p->in_c + c0;
                    mt_dw16_pairs_avx2(xw, off, taps, wpair + (c0 / MT_DW_CHUNK) * ((taps + 1) / 2) * 32,
                                       _mm256_set1_epi16((int16_t)p->x_zero), acc);
                    mt_store_run(y, mask, base + c0, acc, bias + c0, eff + c0, p->y_zero, n);
                    continue;
                }
                if (n == MT_DW_CHUNK) { /* 16 channels in two int32 vectors (mt_x86_avx2.h) */
                    __m256i lo = _mm256_setzero_si256(), hi = lo, xz = _mm256_set1_epi16((int16_t)p->x_zero);
                    for (ky = 0; ky < p->kh; ky++) {
                        int32_t iy = oy * p->stride - p->pad + ky * p->dilation;
                        if (iy < 0 || iy >= p->in_h) continue;
                        for (kx = 0; kx < p->kw; kx++) {
                            int32_t ix = ox * p->stride - p->pad + kx * p->dilation;
                            if (ix < 0 || ix >= p->in_w) continue;
                            mt_dw16_tap_avx2(x + (iy * p->in_w + ix) * p->in_c + c0, w + (ky * p->kw + kx) * p->out_c + c0,
                                             xz, &lo, &hi);
                        }
                    }
                    _mm256_storeu_si256((__m256i *)acc, lo);
                    _mm256_storeu_si256((__m256i *)(acc + 8), hi);
                    mt_store_run(y, mask, base + c0, acc, bias + c0, eff + c0, p->y_zero, n);
                    continue;
                }
#endif
                for (j = 0; j < n; j++) acc[j] = 0;
                for (ky = 0; ky < p->kh; ky++) {
                    int32_t iy = oy * p->stride - p->pad + ky * p->dilation;
                    if (iy < 0 || iy >= p->in_h) continue;
                    for (kx = 0; kx < p->kw; kx++) {
                        int32_t ix = ox * p->stride - p->pad + kx * p->dilation;
                        const int8_t *xp, *wp;
                        if (ix < 0 || ix >= p->in_w) continue;
                        xp = x + (iy * p->in_w + ix) * p->in_c + c0;
                        wp = w + (ky * p->kw + kx) * p->out_c + c0;
                        for (j = 0; j < n; j++) acc[j] += ((int32_t)xp[j] - p->x_zero) * (int32_t)wp[j];
                    }
                }
                mt_store_run(y, mask, base + c0, acc, bias + c0, eff + c0, p->y_zero, n);
            }
        }
    }
}


#if defined(__AVX2__)
/* 8 interior outputs (oy, ox..ox+7) of channel c of the in-place depthwise conv: the same integer sums
 * (-zsum + sum of plane * taps) 8 pixels per vector, stride 1 (contiguous bytes) or 2 (even bytes of 16),
 * requantised together and written to their channel-strided places; returns 8 */
static int32_t mt_dw_inplace_row8_avx2(const mt_conv_params *p, const int8_t *plane, const int16_t *wv, int32_t zsum,
                                       int32_t bias, float eff, int32_t c, int32_t oy, int32_t ox, int8_t *y,
                                       uint8_t *mask) {
    const __m128i even = _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, -1, -1, -1, -1, -1, -1, -1, -1);
    const int8_t *row = plane + (oy * p->stride - p->pad) * p->in_w + ox * p->stride - p->pad;
    __m256i acc = _mm256_set1_epi32(-zsum);
    int8_t q[8];
    uint32_t ok;
    int32_t ky, kx, k, d = p->dilation;
    for (ky = 0; ky < p->kh; ky++, row += p->in_w * d)
        for (kx = 0; kx < p->kw; kx++) {
            __m128i b = _mm_loadu_si128((const __m128i *)(row + kx * d));
            if (p->stride == 2) b = _mm_shuffle_epi8(b, even);
            acc = _mm256_add_epi32(acc, _mm256_mullo_epi32(_mm256_cvtepi8_epi32(b),
                                                           _mm256_set1_epi32(wv[ky * p->kw + kx])));
        }
    ok = mt_requant8v_avx2(acc, _mm256_set1_ps((float)bias), _mm256_set1_ps(eff), p->y_zero, q);
    for (k = 0; k < 8; k++) {
        int32_t i = (oy * p->out_w + ox + k) * p->out_c + c;
        y[i] = q[k];
        if (mask) mt_mask_put(mask, i, (ok >> k) & 1u);
    }
    return 8;
}
#endif

/* Depthwise conv that may write over its own input (y == x allowed): channel by channel, the input plane
 * is copied to `plane` (in_h * in_w bytes) before that channel's outputs are written. Output (pixel q,
 * channel c) lands on input (q, c) of the same channel (out_h * out_w <= in_h * in_w), already copied;
 * other channels are untouched. Same integer sums and requantisation as mt_conv_depthwise_s8: inside the
 * input a window sums x * w and subtracts x_zero * sum(w) once (exact in int32); border windows skip the
 * padding taps (mt_dw_acc). */
void mt_conv_depthwise_inplace_s8(const mt_conv_params *p, const int8_t *x, const int8_t *w, const int32_t *bias,
                                  const float *eff, int8_t *y, uint8_t *mask, int8_t *plane) {
    mt_conv_params one = *p; /* the plane as a one-channel input */
    int16_t wv[MT_DW_TAPS_MAX];
    int32_t c, i, oy, ox, ky, kx, y0, y1, x0, x1, n_in = p->in_h * p->in_w, taps = p->kh * p->kw, d = p->dilation;
    one.in_c = 1;
    mt_inside_range(p->in_h, (p->kh - 1) * d + 1, p->stride, p->pad, p->out_h, &y0, &y1);
    mt_inside_range(p->in_w, (p->kw - 1) * d + 1, p->stride, p->pad, p->out_w, &x0, &x1);
    if (taps > MT_DW_TAPS_MAX) y0 = y1 = 0; /* no local taps: every window goes through mt_dw_acc */
    for (c = 0; c < p->out_c; c++) {
        int32_t zsum = 0;
        for (i = 0; i < n_in; i++) plane[i] = x[i * p->in_c + c];
        for (i = 0; i < taps && i < MT_DW_TAPS_MAX; i++) {
            wv[i] = w[i * p->out_c + c];
            zsum += wv[i];
        }
        zsum *= p->x_zero;
        for (oy = 0; oy < p->out_h; oy++) {
            for (ox = 0; ox < p->out_w; ox++) {
                int32_t acc;
#if defined(__AVX2__)
                /* 8 interior outputs of a row at once (stride 1 or 2), while the 16-byte loads stay in the plane */
                if (oy >= y0 && oy < y1 && ox >= x0 && ox + 8 <= x1 && p->stride <= 2 &&
                    (oy * p->stride - p->pad + (p->kh - 1) * d) * p->in_w + (ox * p->stride - p->pad) +
                    (p->kw - 1) * d + 16 <= n_in) {
                    ox += mt_dw_inplace_row8_avx2(p, plane, wv, zsum, bias[c], eff[c], c, oy, ox, y, mask) - 1;
                    continue;
                }
#endif
                if (oy >= y0 && oy < y1 && ox >= x0 && ox < x1) {
                    const int8_t *row = plane + (oy * p->stride - p->pad) * p->in_w + ox * p->stride - p->pad;
                    const int16_t *wt = wv;
                    acc = -zsum;
                    for (ky = 0; ky < p->kh; ky++, row += p->in_w * d)
                        for (kx = 0; kx < p->kw; kx++) acc += (int32_t)row[kx * d] * (int32_t)*wt++;
                } else {
                    acc = mt_dw_acc(&one, plane, w + c, p->out_c, 0, oy, ox);
                }
                mt_store(y, mask, (oy * p->out_w + ox) * p->out_c + c, acc, bias[c], eff[c], p->y_zero);
            }
        }
    }
}

void mt_conv_depthwise_split_s8(const mt_conv_params *p, const int8_t *x, const int8_t *w_frozen,
                                const int16_t *frozen_idx, int32_t n_frozen, const int8_t *w_train,
                                const int16_t *train_idx, int32_t n_train, const int32_t *bias,
                                const float *eff, int8_t *y, uint8_t *mask) {
    int32_t oy, ox, j;
    for (oy = 0; oy < p->out_h; oy++) {
        for (ox = 0; ox < p->out_w; ox++) {
            int32_t base = (oy * p->out_w + ox) * p->out_c;
            for (j = 0; j < n_frozen; j++) {
                int32_t c = frozen_idx[j];
                int32_t acc = mt_dw_acc(p, x, w_frozen + j, n_frozen, c, oy, ox);
                mt_store(y, mask, base + c, acc, bias[c], eff[c], p->y_zero);
            }
            for (j = 0; j < n_train; j++) {
                int32_t c = train_idx[j];
                int32_t acc = mt_dw_acc(p, x, w_train + j, n_train, c, oy, ox);
                mt_store(y, mask, base + c, acc, bias[c], eff[c], p->y_zero);
            }
        }
    }
}

void mt_add_s8(const mt_add_params *p, const int8_t *skip, const int8_t *main_in, int8_t *y, uint8_t *mask) {
    int32_t i;
    for (i = 0; i < p->size; i++) {
        uint8_t ok;
        /* y may alias skip or main_in (in place): each element is read before it is written */
        int8_t v = mt_add_requant_s8(skip[i], p->z1, p->s1, main_in[i], p->z2, p->s2, p->sy, p->zy, &ok);
        y[i] = v;
        if (mask) mt_mask_put(mask, i, ok);
    }
}

void mt_global_avg_pool_s8(const mt_pool_params *p, const int8_t *x, int8_t *y) {
    int32_t c, i, n = p->in_h * p->in_w;
    for (c = 0; c < p->c; c++) {
        int32_t total = 0;
        for (i = 0; i < n; i++) total += x[i * p->c + c];
        y[c] = mt_sat_s8(mt_div_round_even_s32(total, n));
    }
}

void mt_copy_s8(const int8_t *src, int8_t *dst, int32_t n) {
    int32_t i;
    if (src == dst) return;
    for (i = 0; i < n; i++) dst[i] = src[i];
}

/* ---- stack scratch of each kernel (mt_kernels.h): its work arrays plus its deepest helper's -------- */
#define MT_STORE_RUN_SCRATCH ((int32_t)sizeof(uint8_t) * MT_RUN_MAX) /* mt_store_run's ok[] */
#define MT_DOTS_SCRATCH ((int32_t)sizeof(int32_t) * 4)                /* mt_dots_s8's part[] */
#define MT_MAX2(a, b) ((a) > (b) ? (a) : (b))

int32_t mt_conv_s8_scratch_bytes(const mt_conv_params *p) {
    (void)p;
    return (int32_t)(sizeof(int16_t) * MT_PATCH_MAX + sizeof(int32_t) * MT_RUN_MAX) + MT_STORE_RUN_SCRATCH;
}

int32_t mt_conv_pointwise_s8_scratch_bytes(const mt_conv_params *p) {
    (void)p;
    return (int32_t)(2 * sizeof(int32_t) * MT_PW_CHUNK) + MT_MAX2(MT_DOTS_SCRATCH, MT_STORE_RUN_SCRATCH);
}

int32_t mt_conv_pointwise_split_s8_scratch_bytes(const mt_conv_params *p) {
    (void)p;
    return (int32_t)(2 * sizeof(int32_t) * MT_RUN_MAX) +
           MT_MAX2((int32_t)sizeof(int8_t) * MT_GATHER_MAX + MT_DOTS_SCRATCH, MT_STORE_RUN_SCRATCH);
}

int32_t mt_conv_depthwise_s8_scratch_bytes(const mt_conv_params *p) {
    (void)p;
    return (int32_t)(sizeof(int32_t) * MT_DW_CHUNK) + MT_STORE_RUN_SCRATCH;
}

int32_t mt_conv_depthwise_inplace_s8_scratch_bytes(const mt_conv_params *p) {
    (void)p;
    return (int32_t)(sizeof(int16_t) * MT_DW_TAPS_MAX);
}

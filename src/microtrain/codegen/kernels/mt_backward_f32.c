/* mt_backward_f32.c: float32 backward kernels and fused SGD updates (docs/training-semantics.md).
 * Element-wise kernels are bit-identical to the NumPy runtime; sums (transposed convs, weight and
 * bias gradients) accumulate sequentially in float32, an order the specification leaves free. */
#include "mt_arith.h"
#include "mt_kernels.h"
#include "mt_update.h"
#include "mt_wgrad_f32.h"
#if defined(__AVX2__)
#include "mt_x86_avx2.h" /* host builds targeting AVX2: vector twins of inner loops below */
#endif

#define MT_BIT(mask, i) (((mask)[(i) >> 3] >> ((i) & 7)) & 1)

/* ---- exp and log without libm (only the loss needs them) ----------------------------------- */
typedef union {
    float f;
    uint32_t u;
} mt_f32_bits;

/* exp(x) for x <= 0 (the softmax argument after subtracting the max); ~1 ulp. */
static float mt_exp_nonpos_f32(float x) {
    const float ln2_hi = 0.693145751953125f, ln2_lo = 1.428606765330187e-06f;
    float n, r, p;
    int32_t k;
    mt_f32_bits b;
    if (x < -103.0f) return 0.0f;
    n = mt_rint_small_f32(x * 1.44269504088896341f); /* |x / ln2| < 150 */
    r = (x - n * ln2_hi) - n * ln2_lo;                /* |r| <= ln2 / 2 */
    p = 1.0f + r * (1.0f + r * (0.5f + r * (1.66666672e-01f + r * (4.16666679e-02f +
        r * (8.33333377e-03f + r * (1.38888892e-03f + r * 1.98412701e-04f))))));
    k = (int32_t)n;
    if (k < -126) { /* subnormal result: scale in two steps */
        b.u = (uint32_t)(k + 126 + 127) << 23;
        return p * b.f * 1.17549435e-38f;
    }
    b.u = (uint32_t)(k + 127) << 23;
    return p * b.f;
}

/* log(x) for finite x > 0 (here x = sum of exps >= 1); ~1 ulp. */
static float mt_log_f32(float x) {
    mt_f32_bits b;
    int32_t e;
    float m, s, s2, t;
    b.f = x;
    e = (int32_t)((b.u >> 23) & 0xff) - 127;
    b.u = (b.u & 0x007fffffu) | 0x3f800000u; /* mantissa in [1, 2) */
    m = b.f;
    if (m > 1.41421356f) {
        m = m * 0.5f;
        e += 1;
    }
    s = (m - 1.0f) / (m + 1.0f); /* log m = 2 atanh(s), |s| < 0.1716 */
    s2 = s * s;
    t = s2 * (0.333333333f + s2 * (0.2f + s2 * (0.142857143f + s2 * (0.111111111f + s2 * 0.0909090909f))));
    return (float)e * 0.693147182f + (2.0f * s + 2.0f * s * t);
}

void mt_loss_softmax_ce_s8(const int8_t *logits, int32_t k, int32_t zero, float scale, int32_t label,
                           float *loss, float *grad) {
    int32_t i;
    float m, sum = 0.0f;
    for (i = 0; i < k; i++) grad[i] = ((float)logits[i] - (float)zero) * scale; /* real logits */
    m = grad[0];
    for (i = 1; i < k; i++)
        if (grad[i] > m) m = grad[i];
    for (i = 0; i < k; i++) {
        float z = grad[i] - m;
        if (i == label) *loss = z;
        grad[i] = mt_exp_nonpos_f32(z);
        sum += grad[i];
    }
    *loss = -(*loss - mt_log_f32(sum));
    for (i = 0; i < k; i++) {
        float p = grad[i] / sum;
        if (i == label) p = p - 1.0f;
        grad[i] = p * scale;
    }
}

void mt_conv_grad_acc_f32(const float *gy, const uint8_t *mask, const float *eff, int32_t n, int32_t c, float *g) {
    int32_t i, ch = 0;
#if defined(__AVX2__)
    /* pixel by pixel, 8 channels per vector: the product where the bit is set, +0.0f elsewhere (an and) */
    int32_t c8 = c & ~7;
    for (i = 0; i + c <= n; i += c) {
        for (ch = 0; ch < c8; ch += 8)
            _mm256_storeu_ps(g + i + ch, _mm256_and_ps(mt_mask8_avx2(mask, i + ch),
                                                       _mm256_mul_ps(_mm256_loadu_ps(gy + i + ch), _mm256_loadu_ps(eff + ch))));
        for (; ch < c; ch++) g[i + ch] = MT_BIT(mask, i + ch) ? gy[i + ch] * eff[ch] : 0.0f;
    }
    for (ch = 0; i < n; i++, ch++) g[i] = MT_BIT(mask, i) ? gy[i] * eff[ch] : 0.0f; /* a partial last pixel */
#else
    for (i = 0; i < n; i++) {
        g[i] = MT_BIT(mask, i) ? gy[i] * eff[ch] : 0.0f;
        if (++ch == c) ch = 0;
    }
#endif
}

/* The weight of input channel j of block b (frozen or trained) as (pointer, stride, channel). */
static int32_t mt_chan(const int16_t *idx, int32_t j) { return idx ? idx[j] : j; }

#define MT_PWG_CHUNK 16 /* gathered input channels summed together (64-byte stack array) */
#define MT_PWG_WIDE 256 /* the same on AVX2 hosts (mt_x86_avx2.h; host stack, not a device budget) */

/* gx[j] = sum over o (ascending) of g[o] * W[o, j]: the o loop is outside so the j loop runs over
 * contiguous weights (the per-element summation order is unchanged). acc: go on from the sums in gxp (rows
 * given group by group: the same additions in the same order as one call with all rows). */
static void mt_pw_grad_in_block(const float *g, int32_t out_c, const int8_t *wb, const int16_t *idx, int32_t nb,
                                float *gxp, int32_t acc) {
#if defined(__AVX2__) /* the same sums, columns in vector registers (mt_x86_avx2.h) */
    float t[MT_PWG_WIDE];
    int32_t j, j0;
    if (!idx) {
        if (!acc)
            for (j = 0; j < nb; j++) gxp[j] = 0.0f;
        mt_pw_grad_in_avx2(g, out_c, wb, nb, nb, gxp);
        return;
    }
    for (j0 = 0; j0 < nb; j0 += MT_PWG_WIDE) {
        int32_t n = nb - j0 < MT_PWG_WIDE ? nb - j0 : MT_PWG_WIDE;
        for (j = 0; j < n; j++) t[j] = acc ? gxp[idx[j0 + j]] : 0.0f;
        mt_pw_grad_in_avx2(g, out_c, wb + j0, nb, n, t);
        for (j = 0; j < n; j++) gxp[idx[j0 + j]] = t[j];
    }
#else
    float t[MT_PWG_CHUNK];
    int32_t o, j, j0;
    if (!idx) {
        if (!acc)
            for (j = 0; j < nb; j++) gxp[j] = 0.0f;
        for (o = 0; o < out_c; o++) {
            const int8_t *wr = wb + o * nb;
            float go = g[o];
            for (j = 0; j < nb; j++) gxp[j] = mt_sum_step_s8(gxp[j], go, wr[j]);
        }
        return;
    }
    /* gathered channels: sum a chunk densely (vectorisable), then scatter. Each gxp element belongs to
     * one block (frozen and trained channels are disjoint), so it is the same sum in the same order. */
    for (j0 = 0; j0 < nb; j0 += MT_PWG_CHUNK) {
        int32_t n = nb - j0 < MT_PWG_CHUNK ? nb - j0 : MT_PWG_CHUNK;
        for (j = 0; j < n; j++) t[j] = acc ? gxp[idx[j0 + j]] : 0.0f;
        for (o = 0; o < out_c; o++) {
            const int8_t *wr = wb + o * nb + j0;
            float go = g[o];
            for (j = 0; j < n; j++) t[j] = mt_sum_step_s8(t[j], go, wr[j]);
        }
        for (j = 0; j < n; j++) gxp[idx[j0 + j]] = t[j];
    }
#endif
}

void mt_conv_grad_input_pointwise_f32(const mt_conv_params *p, const float *gacc, const mt_weight_s8 *w, float *gx) {
    int32_t i, oy, ox;
    int32_t n_in = p->in_h * p->in_w * p->in_c;
    if (p->stride != 1)
        for (i = 0; i < n_in; i++) gx[i] = 0.0f; /* positions no output reads */
#if defined(__AVX2__)
    if (!w->frozen_idx && w->n_train == 0) { /* whole weights: two pixels per pass over them (mt_x86_avx2.h) */
        int32_t pix, n_pix = p->out_h * p->out_w, nb = w->n_frozen;
        for (pix = 0; pix < n_pix; pix += 2) {
            float *gx0 = gx + (((pix / p->out_w) * p->stride) * p->in_w + (pix % p->out_w) * p->stride) * p->in_c, *gx1;
            for (i = 0; i < nb; i++) gx0[i] = 0.0f;
            if (pix + 1 == n_pix) { /* an odd last pixel alone */
                mt_pw_grad_in_avx2(gacc + pix * p->out_c, p->out_c, w->frozen, nb, nb, gx0);
                break;
            }
            gx1 = gx + ((((pix + 1) / p->out_w) * p->stride) * p->in_w + ((pix + 1) % p->out_w) * p->stride) * p->in_c;
            for (i = 0; i < nb; i++) gx1[i] = 0.0f;
            mt_pw_grad_in2_avx2(gacc + pix * p->out_c, gacc + (pix + 1) * p->out_c, p->out_c, w->frozen, nb, nb, gx0, gx1);
        }
        return;
    }
#endif
    for (oy = 0; oy < p->out_h; oy++) {
        for (ox = 0; ox < p->out_w; ox++) {
            const float *g = gacc + (oy * p->out_w + ox) * p->out_c;
            float *gxp = gx + ((oy * p->stride) * p->in_w + ox * p->stride) * p->in_c;
            mt_pw_grad_in_block(g, p->out_c, w->frozen, w->frozen_idx, w->n_frozen, gxp, 0);
            mt_pw_grad_in_block(g, p->out_c, w->train, w->train_idx, w->n_train, gxp, 0);
        }
    }
}

void mt_conv_grad_input_pointwise_acc_f32(const mt_conv_params *p, const float *gacc, const mt_weight_s8 *w,
                                          float *gx) {
    int32_t pix;
    for (pix = 0; pix < p->out_h * p->out_w; pix++) {
        const float *g = gacc + pix * p->out_c;
        float *gxp = gx + pix * p->in_c;
        mt_pw_grad_in_block(g, p->out_c, w->frozen, w->frozen_idx, w->n_frozen, gxp, 1);
        mt_pw_grad_in_block(g, p->out_c, w->train, w->train_idx, w->n_train, gxp, 1);
    }
}

/* Same tap order as the NumPy rule (u, v ascending), so depthwise input gradients are bit-exact. */
static float mt_dw_grad_in(const mt_conv_params *p, const float *gacc, const int8_t *wb, int32_t wstride,
                           int32_t c, int32_t iy, int32_t ix) {
    float acc = 0.0f;
    int32_t u, v;
    for (u = 0; u < p->kh; u++) {
        int32_t ty = iy + p->pad - u * p->dilation, oy;
        if (ty < 0 || ty % p->stride) continue;
        oy = ty / p->stride;
        if (oy >= p->out_h) continue;
        for (v = 0; v < p->kw; v++) {
            int32_t tx = ix + p->pad - v * p->dilation, ox;
            if (tx < 0 || tx % p->stride) continue;
            ox = tx / p->stride;
            if (ox >= p->out_w) continue;
            acc = mt_sum_step_s8(acc, gacc[(oy * p->out_w + ox) * p->out_c + c], wb[(u * p->kw + v) * wstride]);
        }
    }
    return acc;
}

#define MT_DWG_CHUNK 64 /* channels accumulated together (256-byte stack array) */

/* Whole-weight depthwise: per input pixel, taps in (u, v) order outside, channels inside (the
 * per-element summation order is the same as mt_dw_grad_in's). */
static void mt_dw_grad_in_dense(const mt_conv_params *p, const float *gacc, const int8_t *w, float *gx) {
    float acc[MT_DWG_CHUNK];
    int32_t iy, ix, c0, j, u, v;
    for (iy = 0; iy < p->in_h; iy++) {
        for (ix = 0; ix < p->in_w; ix++) {
            float *out = gx + (iy * p->in_w + ix) * p->in_c;
            for (c0 = 0; c0 < p->in_c; c0 += MT_DWG_CHUNK) {
                int32_t n = p->in_c - c0 < MT_DWG_CHUNK ? p->in_c - c0 : MT_DWG_CHUNK;
                for (j = 0; j < n; j++) acc[j] = 0.0f;
                for (u = 0; u < p->kh; u++) {
                    int32_t ty = iy + p->pad - u * p->dilation, oy;
                    if (ty < 0 || ty % p->stride) continue;
                    oy = ty / p->stride;
                    if (oy >= p->out_h) continue;
                    for (v = 0; v < p->kw; v++) {
                        int32_t tx = ix + p->pad - v * p->dilation, ox;
                        const float *g;
                        const int8_t *wt;
                        if (tx < 0 || tx % p->stride) continue;
                        ox = tx / p->stride;
                        if (ox >= p->out_w) continue;
                        g = gacc + (oy * p->out_w + ox) * p->out_c + c0;
                        wt = w + (u * p->kw + v) * p->in_c + c0;
                        for (j = 0; j < n; j++) acc[j] = mt_sum_step_s8(acc[j], g[j], wt[j]);
                    }
                }
                for (j = 0; j < n; j++) out[c0 + j] = acc[j];
            }
        }
    }
}

void mt_conv_grad_input_depthwise_f32(const mt_conv_params *p, const float *gacc, const mt_weight_s8 *w, float *gx) {
    int32_t iy, ix, j;
    if (w->n_train == 0 && !w->frozen_idx) {
        mt_dw_grad_in_dense(p, gacc, w->frozen, gx);
        return;
    }
    if (w->n_frozen == 0 && !w->train_idx) {
        mt_dw_grad_in_dense(p, gacc, w->train, gx);
        return;
    }
    for (iy = 0; iy < p->in_h; iy++) {
        for (ix = 0; ix < p->in_w; ix++) {
            float *out = gx + (iy * p->in_w + ix) * p->in_c;
            for (j = 0; j < w->n_frozen; j++) {
                int32_t c = mt_chan(w->frozen_idx, j);
                out[c] = mt_dw_grad_in(p, gacc, w->frozen + j, w->n_frozen, c, iy, ix);
            }
            for (j = 0; j < w->n_train; j++) {
                int32_t c = mt_chan(w->train_idx, j);
                out[c] = mt_dw_grad_in(p, gacc, w->train + j, w->n_train, c, iy, ix);
            }
        }
    }
}

/* In place (codegen.inplace_depthwise; gx at least as large as gacc, both NHWC with the same channels,
 * gacc at the start of gx's storage): `group` channels at a time (1..MT_DWG_GROUP), their gacc values are
 * copied into `plane` (out_h * out_w * group floats, pixel-major) with their taps as floats behind them
 * (kh * kw * group), and their gx written over the storage. Element (q, c) of gx lies on element (q, c) of
 * gacc (same channel count), so writing channel c overwrites only gacc values of channel c, already in the
 * plane: that is why a stride-2 gradient (gx four times gacc) runs in place too. Each element sums the same
 * taps in the same order as mt_dw_grad_in (u, v ascending; stride s: the taps whose output position is a
 * whole multiple of s and inside), from 0.0f. */
#define MT_DWG_GROUP 8 /* acc[] on the stack */

/* The taps u in [lo, hi] (step s) whose output position (t - u) / s is whole and inside [0, n): one range per
 * pixel instead of a test per tap; *lo > *hi when none. */
static void mt_tap_range(int32_t t, int32_t s, int32_t n, int32_t k, int32_t *lo, int32_t *hi) {
    int32_t a = t - s * (n - 1);
    if (a < 0) a = 0;
    if (t >= a) a += (t - a) % s; /* t - a a multiple of s */
    *lo = a;
    *hi = t < k - 1 ? t : k - 1;
}

static void mt_dw_grad_in_groups(const mt_conv_params *p, const int8_t *wb, int32_t nb, const int16_t *idx,
                                 float *g, float *plane, int32_t group) {
    const int32_t in_h = p->in_h, in_w = p->in_w, in_c = p->in_c, out_h = p->out_h, out_w = p->out_w;
    const int32_t out_c = p->out_c, kh = p->kh, kw = p->kw, s = p->stride, pad = p->pad, d = p->dilation;
    const int32_t n = out_h * out_w, taps = kh * kw;
    float acc[MT_DWG_GROUP];
    int32_t j0, i, t, jj, iy, ix, u, v, ng, u_lo, u_hi, v_lo, v_hi;
    for (j0 = 0; j0 < nb; j0 += group) {
        float *wf;
        ng = nb - j0 < group ? nb - j0 : group;
        wf = plane + ng * n;
        for (i = 0; i < n; i++)
            for (jj = 0; jj < ng; jj++) plane[i * ng + jj] = g[i * out_c + mt_chan(idx, j0 + jj)];
        for (t = 0; t < taps; t++)
            for (jj = 0; jj < ng; jj++) wf[t * ng + jj] = (float)wb[t * nb + j0 + jj];
        for (iy = 0; iy < in_h; iy++) {
            mt_tap_range(iy + pad, s, out_h, kh, &u_lo, &u_hi);
            for (ix = 0; ix < in_w; ix++) {
                float *out = g + (iy * in_w + ix) * in_c;
                mt_tap_range(ix + pad, s, out_w, kw, &v_lo, &v_hi);
                if (d != 1) { /* dilated taps: each one tested, in the same (u, v) order */
                    for (jj = 0; jj < ng; jj++) acc[jj] = 0.0f;
                    for (u = 0; u < kh; u++) {
                        int32_t ty = iy + pad - u * d;
                        if (ty < 0 || ty % s || ty / s >= out_h) continue;
                        for (v = 0; v < kw; v++) {
                            int32_t tx = ix + pad - v * d;
                            const float *src, *wv;
                            if (tx < 0 || tx % s || tx / s >= out_w) continue;
                            src = plane + (ty / s * out_w + tx / s) * ng;
                            wv = wf + (u * kw + v) * ng;
                            for (jj = 0; jj < ng; jj++) acc[jj] += src[jj] * wv[jj];
                        }
                    }
                    for (jj = 0; jj < ng; jj++) out[mt_chan(idx, j0 + jj)] = acc[jj];
                    continue;
                }
                if (ng == MT_DWG_GROUP && !idx) { /* eight sums in registers, stored to contiguous channels */
                    float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f, a4 = 0.0f, a5 = 0.0f, a6 = 0.0f, a7 = 0.0f;
                    for (u = u_lo; u <= u_hi; u += s) {
                        const float *src = plane + ((iy + pad - u) / s * out_w + (ix + pad - v_lo) / s) * 8;
                        const float *wv = wf + (u * kw + v_lo) * 8;
                        for (v = v_lo; v <= v_hi; v += s, src -= 8, wv += s * 8) {
                            a0 += src[0] * wv[0];
                            a1 += src[1] * wv[1];
                            a2 += src[2] * wv[2];
                            a3 += src[3] * wv[3];
                            a4 += src[4] * wv[4];
                            a5 += src[5] * wv[5];
                            a6 += src[6] * wv[6];
                            a7 += src[7] * wv[7];
                        }
                    }
                    out += j0;
                    out[0] = a0;
                    out[1] = a1;
                    out[2] = a2;
                    out[3] = a3;
                    out[4] = a4;
                    out[5] = a5;
                    out[6] = a6;
                    out[7] = a7;
                    continue;
                }
                for (jj = 0; jj < ng; jj++) acc[jj] = 0.0f;
                for (u = u_lo; u <= u_hi; u += s) {
                    const float *src = plane + ((iy + pad - u) / s * out_w + (ix + pad - v_lo) / s) * ng;
                    const float *wv = wf + (u * kw + v_lo) * ng;
                    for (v = v_lo; v <= v_hi; v += s, src -= ng, wv += s * ng)
                        for (jj = 0; jj < ng; jj++) acc[jj] += src[jj] * wv[jj];
                }
                for (jj = 0; jj < ng; jj++) out[mt_chan(idx, j0 + jj)] = acc[jj];
            }
        }
    }
}

void mt_conv_grad_input_depthwise_inplace_f32(const mt_conv_params *p, const float *gacc, const mt_weight_s8 *w,
                                              float *gx, float *plane, int32_t group) {
    (void)gacc; /* == gx: the gradient is computed over its own storage */
    if (group < 1 || group > MT_DWG_GROUP || p->stride < 1) return; /* the planner never emits these */
    mt_dw_grad_in_groups(p, w->frozen, w->n_frozen, w->frozen_idx, gx, plane, group);
    mt_dw_grad_in_groups(p, w->train, w->n_train, w->train_idx, gx, plane, group);
}

int32_t mt_conv_grad_input_depthwise_inplace_f32_scratch_bytes(const mt_conv_params *p) {
    (void)p;
    return (int32_t)(sizeof(float) * MT_DWG_GROUP); /* acc[]: one group's sums */
}

static void mt_dense_grad_in_block(const mt_conv_params *p, const float *gacc, const int8_t *wb, const int16_t *idx,
                                   int32_t nb, float *gx) {
    int32_t oy, ox, o, u, v, j;
    for (oy = 0; oy < p->out_h; oy++) {
        for (ox = 0; ox < p->out_w; ox++) {
            const float *g = gacc + (oy * p->out_w + ox) * p->out_c;
            for (u = 0; u < p->kh; u++) {
                int32_t iy = oy * p->stride - p->pad + u * p->dilation;
                if (iy < 0 || iy >= p->in_h) continue;
                for (v = 0; v < p->kw; v++) {
                    int32_t ix = ox * p->stride - p->pad + v * p->dilation;
                    float *gxp;
                    if (ix < 0 || ix >= p->in_w) continue;
                    gxp = gx + (iy * p->in_w + ix) * p->in_c;
                    for (j = 0; j < nb; j++) {
                        float acc = 0.0f;
                        for (o = 0; o < p->out_c; o++) acc = mt_sum_step_s8(acc, g[o], wb[((o * p->kh + u) * p->kw + v) * nb + j]);
                        gxp[mt_chan(idx, j)] += acc;
                    }
                }
            }
        }
    }
}

void mt_conv_grad_input_f32(const mt_conv_params *p, const float *gacc, const mt_weight_s8 *w, float *gx) {
    int32_t i, n_in = p->in_h * p->in_w * p->in_c;
    for (i = 0; i < n_in; i++) gx[i] = 0.0f;
    mt_dense_grad_in_block(p, gacc, w->frozen, w->frozen_idx, w->n_frozen, gx);
    mt_dense_grad_in_block(p, gacc, w->train, w->train_idx, w->n_train, gx);
}

/* ---- fused gradient + update ---------------------------------------------------------------- */
#define MT_WU_CHUNK 16 /* trained input channels whose gradients are summed together (64-byte stack array) */

static int32_t mt_saved_chan(const mt_weight_s8 *w, int32_t x_c, int32_t j) {
    return x_c == w->n_train ? j : mt_chan(w->train_idx, j);
}

#if defined(__AVX2__)
/* The gradients of weights (o0 + k, j0 + j), k < 8, j < 8, trained input channels contiguous in x from channel j0:
 * g[k][j] = sum over pixels (ascending) of ((float)x - (float)x_zero) * gacc[pixel, o0 + k], the portable
 * kernel's products and additions in its order, 8 x 8 sums in vector registers (mt_x86_avx2.h) */
static void mt_wu_sums8x8_avx2(const mt_conv_params *p, const int8_t *x, int32_t x_c, const float *gacc, int32_t o0,
                               int32_t j0, float g[8][8]) {
    __m256 a[8], xz = _mm256_set1_ps((float)p->x_zero);
    int32_t k, oy, ox;
    for (k = 0; k < 8; k++) a[k] = _mm256_setzero_ps();
    for (oy = 0; oy < p->out_h; oy++)
        for (ox = 0; ox < p->out_w; ox++) {
            const int8_t *xp = x + ((oy * p->stride) * p->in_w + ox * p->stride) * x_c + j0;
            const float *gp = gacc + (oy * p->out_w + ox) * p->out_c + o0;
            __m256 xv = _mm256_sub_ps(mt_s8x8_to_f32(xp), xz);
            for (k = 0; k < 8; k++) a[k] = _mm256_add_ps(a[k], _mm256_mul_ps(xv, _mm256_broadcast_ss(gp + k)));
        }
    for (k = 0; k < 8; k++) _mm256_storeu_ps(g[k], a[k]);
}
#endif

void mt_conv_weight_update_pointwise_f32(const mt_conv_params *p, const int8_t *x, int32_t x_c, const float *gacc,
                                         const mt_weight_s8 *w, const mt_update_params *u, const mt_train_ctx *ctx) {
    uint32_t key = mt_hash_key(ctx->seed, ctx->step, u->param_id);
    float neg_lr = -ctx->lr;
    float g[MT_WU_CHUNK];
    int32_t xc[MT_WU_CHUNK];
    int32_t o, j, j0, oy, ox, o_fast = 0, j_fast = 0;
#if defined(__AVX2__)
    /* trained channels contiguous in x (a sliced input, or all channels): blocks of 8 rows x 8 columns in
     * vectors; the rows and columns left over go through the portable loops below */
    if (x_c == w->n_train || !w->train_idx) {
        float gb[8][8];
        int32_t k;
        o_fast = p->out_c & ~7;
        j_fast = w->n_train & ~7;
        for (o = 0; o < o_fast; o += 8)
            for (j0 = 0; j0 < j_fast; j0 += 8) {
                mt_wu_sums8x8_avx2(p, x, x_c, gacc, o, j0, gb);
                for (k = 0; k < 8; k++)
                    for (j = 0; j < 8; j++) {
                        int8_t *wp = w->train + (o + k) * w->n_train + j0 + j;
                        uint32_t index = (uint32_t)((o + k + u->row0) * u->full_in + mt_chan(w->train_idx, j0 + j));
                        float d = gb[k][j] / u->divisor[o + k];
                        *wp = mt_update_s8(*wp, neg_lr * d, u->rounding, key, index);
                    }
            }
    }
#endif
    for (o = 0; o < p->out_c; o++) {
        for (j0 = o < o_fast ? j_fast : 0; j0 < w->n_train; j0 += MT_WU_CHUNK) { /* what the fast blocks left */
            int32_t n = w->n_train - j0 < MT_WU_CHUNK ? w->n_train - j0 : MT_WU_CHUNK;
            for (j = 0; j < n; j++) {
                xc[j] = mt_saved_chan(w, x_c, j0 + j);
                g[j] = 0.0f;
            }
            /* pixels outside, channels inside: each g[j] is still summed over pixels in ascending order */
            for (oy = 0; oy < p->out_h; oy++)
                for (ox = 0; ox < p->out_w; ox++) {
                    const int8_t *xp = x + ((oy * p->stride) * p->in_w + ox * p->stride) * x_c;
                    float go = gacc[(oy * p->out_w + ox) * p->out_c + o];
                    for (j = 0; j < n; j++) g[j] = mt_wgrad_step(g[j], xp[xc[j]], p->x_zero, go);
                }
            for (j = 0; j < n; j++) {
                int8_t *wp = w->train + o * w->n_train + j0 + j;
                uint32_t index = (uint32_t)((o + u->row0) * u->full_in + mt_chan(w->train_idx, j0 + j));
                float d = g[j] / u->divisor[o];
                *wp = mt_update_s8(*wp, neg_lr * d, u->rounding, key, index);
            }
        }
    }
}

void mt_conv_weight_update_depthwise_f32(const mt_conv_params *p, const int8_t *x, int32_t x_c, const float *gacc,
                                         const mt_weight_s8 *w, const mt_update_params *u, const mt_train_ctx *ctx) {
    uint32_t key = mt_hash_key(ctx->seed, ctx->step, u->param_id);
    float neg_lr = -ctx->lr;
    int32_t j, a, b, oy, ox;
    for (j = 0; j < w->n_train; j++) {
        int32_t c = mt_chan(w->train_idx, j), xc = mt_saved_chan(w, x_c, j);
        for (a = 0; a < p->kh; a++) {
            for (b = 0; b < p->kw; b++) {
                uint32_t index = (uint32_t)((c * p->kh + a) * p->kw + b);
                int8_t *wp = w->train + (a * p->kw + b) * w->n_train + j;
                float g = 0.0f, d;
                for (oy = 0; oy < p->out_h; oy++) {
                    int32_t iy = oy * p->stride - p->pad + a * p->dilation;
                    if (iy < 0 || iy >= p->in_h) continue;
                    for (ox = 0; ox < p->out_w; ox++) {
                        int32_t ix = ox * p->stride - p->pad + b * p->dilation;
                        if (ix < 0 || ix >= p->in_w) continue;
                        g = mt_wgrad_step(g, x[(iy * p->in_w + ix) * x_c + xc], p->x_zero,
                                          gacc[(oy * p->out_w + ox) * p->out_c + c]);
                    }
                }
                d = g / u->divisor[c];
                *wp = mt_update_s8(*wp, neg_lr * d, u->rounding, key, index);
            }
        }
    }
}

void mt_conv_weight_update_f32(const mt_conv_params *p, const int8_t *x, int32_t x_c, const float *gacc,
                               const mt_weight_s8 *w, const mt_update_params *u, const mt_train_ctx *ctx) {
    uint32_t key = mt_hash_key(ctx->seed, ctx->step, u->param_id);
    float neg_lr = -ctx->lr;
    int32_t o, j, a, b, oy, ox;
    for (o = 0; o < p->out_c; o++) {
        for (a = 0; a < p->kh; a++) {
            for (b = 0; b < p->kw; b++) {
                for (j = 0; j < w->n_train; j++) {
                    int32_t xc = mt_saved_chan(w, x_c, j);
                    int32_t flat = (o + u->row0) * u->full_in + mt_chan(w->train_idx, j);
                    uint32_t index = (uint32_t)((flat * p->kh + a) * p->kw + b);
                    int8_t *wp = w->train + ((o * p->kh + a) * p->kw + b) * w->n_train + j;
                    float g = 0.0f, d;
                    for (oy = 0; oy < p->out_h; oy++) {
                        int32_t iy = oy * p->stride - p->pad + a * p->dilation;
                        if (iy < 0 || iy >= p->in_h) continue;
                        for (ox = 0; ox < p->out_w; ox++) {
                            int32_t ix = ox * p->stride - p->pad + b * p->dilation;
                            if (ix < 0 || ix >= p->in_w) continue;
                            g = mt_wgrad_step(g, x[(iy * p->in_w + ix) * x_c + xc], p->x_zero,
                                              gacc[(oy * p->out_w + ox) * p->out_c + o]);
                        }
                    }
                    d = g / u->divisor[o];
                    *wp = mt_update_s8(*wp, neg_lr * d, u->rounding, key, index);
                }
            }
        }
    }
}

void mt_bias_update_f32(const float *gacc, int32_t hw, int32_t c, int32_t *bias, const mt_update_params *u,
                        const mt_train_ctx *ctx) {
    uint32_t key = mt_hash_key(ctx->seed, ctx->step, u->param_id);
    float neg_lr = -ctx->lr;
    int32_t o, i;
    for (o = 0; o < c; o++) {
        float g = 0.0f, d;
        for (i = 0; i < hw; i++) g += gacc[i * c + o];
        d = g / u->divisor[o];
        bias[o] = mt_update_s32(bias[o], neg_lr * d, u->rounding, key, (uint32_t)(o + u->row0));
    }
}

void mt_add_grad_f32(const float *gy, const uint8_t *mask, float scale, int32_t n, float *g) {
    int32_t i;
    for (i = 0; i < n; i++) g[i] = MT_BIT(mask, i) ? gy[i] * scale : 0.0f;
}

void mt_pool_grad_f32(const float *gy, int32_t hw, int32_t c, float *gx) {
    int32_t i, ch;
    float n = (float)hw;
    for (ch = 0; ch < c; ch++) {
        float v = gy[ch] / n;
        for (i = 0; i < hw; i++) gx[i * c + ch] = v;
    }
}

void mt_grad_sum_f32(const float *a, const float *b, int32_t n, float *out) {
    int32_t i;
    for (i = 0; i < n; i++) out[i] = a[i] + b[i];
}

void mt_slice_channels_s8(const int8_t *x, int32_t n, int32_t c, const int16_t *idx, int32_t k, int8_t *out) {
    int32_t i, j, pixels = n / c;
    for (i = 0; i < pixels; i++)
        for (j = 0; j < k; j++) out[i * k + j] = x[i * c + idx[j]];
}

/* ---- stack scratch of each kernel (mt_kernels.h): its work arrays plus its deepest helper's -------- */
int32_t mt_conv_grad_input_pointwise_f32_scratch_bytes(const mt_conv_params *p) {
    (void)p;
    return (int32_t)(sizeof(float) * MT_PWG_CHUNK); /* mt_pw_grad_in_block's t[] */
}

int32_t mt_block_grad_grouped_f32_scratch_bytes(const mt_conv_params *p) {
    (void)p; /* its deepest callee (kernels/mt_backward_grouped_f32.c): mt_dw_grad_in_dense's acc[] */
    return (int32_t)(sizeof(float) * MT_DWG_CHUNK);
}

int32_t mt_conv_grad_input_depthwise_f32_scratch_bytes(const mt_conv_params *p) {
    (void)p;
    return (int32_t)(sizeof(float) * MT_DWG_CHUNK); /* mt_dw_grad_in_dense's acc[] */
}

int32_t mt_conv_weight_update_pointwise_f32_scratch_bytes(const mt_conv_params *p) {
    (void)p;
    return (int32_t)((sizeof(float) + sizeof(int32_t)) * MT_WU_CHUNK);
}

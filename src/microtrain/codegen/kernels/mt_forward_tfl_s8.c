/* mt_forward_tfl_s8.c: int8 forward kernels in the "tflite" rounding mode (graphs imported from .tflite).
 *
 * Same exact integer accumulators as mt_forward_s8.c; requantisation by mt_arith.h's fixed-point section,
 * so the outputs equal quant/arith.py's tflite mode (and TFLite's reference kernels) bit for bit. Generic
 * loops, batch 1, NHWC, no allocation. Conv weights are (O, kh, kw, I/groups); output channel o reads the
 * input channels of its group g = o / (O/groups): dense (groups 1) and depthwise with any multiplier.
 */
#include "mt_arith.h"
#include "mt_kernels.h"

void mt_conv_tfl_s8(const mt_conv_params *p, int32_t groups, const int8_t *x, const int8_t *w,
                    const int32_t *bias, const mt_requant_tfl *rq, int8_t *y) {
    int32_t ig = p->in_c / groups, og = p->out_c / groups;
    int32_t oy, ox, o, ky, kx, i;
    for (oy = 0; oy < p->out_h; oy++) {
        for (ox = 0; ox < p->out_w; ox++) {
            for (o = 0; o < p->out_c; o++) {
                const int8_t *wo = w + o * p->kh * p->kw * ig;
                int32_t c0 = (o / og) * ig, acc = 0;
                for (ky = 0; ky < p->kh; ky++) {
                    int32_t iy = oy * p->stride - p->pad + ky;
                    if (iy < 0 || iy >= p->in_h) continue; /* padding: real 0 contributes nothing */
                    for (kx = 0; kx < p->kw; kx++) {
                        int32_t ix = ox * p->stride - p->pad + kx;
                        const int8_t *xp, *wp;
                        if (ix < 0 || ix >= p->in_w) continue;
                        xp = x + (iy * p->in_w + ix) * p->in_c + c0;
                        wp = wo + (ky * p->kw + kx) * ig;
                        for (i = 0; i < ig; i++) acc += ((int32_t)xp[i] - p->x_zero) * (int32_t)wp[i];
                    }
                }
                y[(oy * p->out_w + ox) * p->out_c + o] = mt_requant_tfl_s8(
                    acc, bias[o], rq->mult[o], rq->shift[o], rq->single, p->y_zero, rq->lo, rq->hi);
            }
        }
    }
}

void mt_add_tfl_s8(const mt_add_tfl_params *p, const int8_t *a, const int8_t *b, int8_t *y) {
    int32_t i;
    for (i = 0; i < p->size; i++) {
        /* y may alias a or b: each element is read before it is written */
        int32_t sa = mt_mbqm_s32(((int32_t)a[i] - p->z1) * (1 << MT_TFL_ADD_LEFT_SHIFT), p->m1, p->e1, 0);
        int32_t sb = mt_mbqm_s32(((int32_t)b[i] - p->z2) * (1 << MT_TFL_ADD_LEFT_SHIFT), p->m2, p->e2, 0);
        int32_t v = mt_mbqm_s32(mt_wrap_s32((int64_t)sa + sb), p->mo, p->eo, 0) + p->zy;
        v = v < p->lo ? p->lo : v;
        y[i] = (int8_t)(v > p->hi ? p->hi : v);
    }
}

/* average pool (windowed or global): the mean of the window's positions inside the input */
void mt_avg_pool_tfl_s8(const mt_avg_pool_params *p, const int8_t *x, int8_t *y) {
    int32_t oy, ox, c, ky, kx;
    for (oy = 0; oy < p->out_h; oy++) {
        for (ox = 0; ox < p->out_w; ox++) {
            for (c = 0; c < p->c; c++) {
                int32_t total = 0, count = 0, v;
                for (ky = 0; ky < p->kh; ky++) {
                    int32_t iy = oy * p->stride - p->pad_top + ky;
                    if (iy < 0 || iy >= p->in_h) continue;
                    for (kx = 0; kx < p->kw; kx++) {
                        int32_t ix = ox * p->stride - p->pad_left + kx;
                        if (ix < 0 || ix >= p->in_w) continue;
                        total += x[(iy * p->in_w + ix) * p->c + c];
                        count++;
                    }
                }
                v = mt_div_round_away_s32(total, count);
                v = v < p->lo ? p->lo : v;
                y[(oy * p->out_w + ox) * p->c + c] = (int8_t)(v > p->hi ? p->hi : v);
            }
        }
    }
}

/* spatial padding with the zero point (real 0) */
void mt_pad_s8(const mt_pad_params *p, const int8_t *x, int8_t *y) {
    int32_t out_w = p->in_w + p->left + p->right, out_h = p->in_h + p->top + p->bottom;
    int32_t oy, ox, c;
    for (oy = 0; oy < out_h; oy++) {
        for (ox = 0; ox < out_w; ox++) {
            int32_t iy = oy - p->top, ix = ox - p->left;
            int32_t inside = iy >= 0 && iy < p->in_h && ix >= 0 && ix < p->in_w;
            for (c = 0; c < p->c; c++)
                y[(oy * out_w + ox) * p->c + c] = inside ? x[(iy * p->in_w + ix) * p->c + c] : (int8_t)p->value;
        }
    }
}

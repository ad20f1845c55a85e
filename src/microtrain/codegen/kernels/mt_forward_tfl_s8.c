/* mt_forward_tfl_s8.c: int8 forward kernels in the "tflite" rounding mode (graphs imported from .tflite).
 *
 * Same exact integer accumulators as mt_forward_s8.c; requantisation by mt_arith.h's fixed-point section,
 * so the outputs equal quant/arith.py's tflite mode (and TFLite's reference kernels) bit for bit. Generic
 * loops, batch 1, NHWC, no allocation. Conv weights are read through an mt_weight_s8 view (mt_kernels.h):
 * layout MT_TFL_OHWI, where output channel o reads the input channels of its group g = o / (O/groups) (dense,
 * pointwise, and depthwise with a multiplier > 1 as groups), or MT_TFL_HWC (depthwise, multiplier 1).
 */
#include "mt_arith.h"
#include "mt_kernels.h"

/* bit i of the mask := ok */
static void mt_tfl_mask_put(uint8_t *mask, int32_t i, uint32_t ok) {
    mask[i >> 3] = (uint8_t)((mask[i >> 3] & ~(1u << (i & 7))) | (ok << (i & 7)));
}

static int32_t mt_tfl_chan(const int16_t *idx, int32_t j) { return idx ? idx[j] : j; }

/* requantise, clamp and (mask) record whether the value was inside [lo, hi] */
static void mt_tfl_store(int8_t *y, uint8_t *mask, int32_t i, int32_t acc, int32_t o, const int32_t *bias,
                         const mt_requant_tfl *rq, int32_t y_zero) {
    int32_t v = mt_requant_tfl_pre_s32(acc, bias[o], rq->mult[o], rq->shift[o], rq->single, y_zero);
    if (mask) mt_tfl_mask_put(mask, i, (uint32_t)(v >= rq->lo && v <= rq->hi));
    v = v < rq->lo ? rq->lo : v;
    y[i] = (int8_t)(v > rq->hi ? rq->hi : v);
}

/* the exact window sum of output channel o at (oy, ox) over one weight block (layout MT_TFL_OHWI) */
static int32_t mt_tfl_block_acc(const mt_conv_params *p, const int8_t *x, const int8_t *wb, const int16_t *idx,
                                int32_t nb, int32_t c0, int32_t o, int32_t oy, int32_t ox) {
    int32_t ky, kx, j, acc = 0;
    for (ky = 0; ky < p->kh; ky++) {
        int32_t iy = oy * p->stride - p->pad + ky * p->dilation;
        if (iy < 0 || iy >= p->in_h) continue; /* padding: real 0 contributes nothing */
        for (kx = 0; kx < p->kw; kx++) {
            int32_t ix = ox * p->stride - p->pad + kx * p->dilation;
            const int8_t *xp = x + (iy * p->in_w + ix) * p->in_c + c0, *wp = wb + ((o * p->kh + ky) * p->kw + kx) * nb;
            if (ix < 0 || ix >= p->in_w) continue;
            for (j = 0; j < nb; j++) acc += ((int32_t)xp[mt_tfl_chan(idx, j)] - p->x_zero) * (int32_t)wp[j];
        }
    }
    return acc;
}

/* depthwise (layout MT_TFL_HWC): every channel of one block at (oy, ox) */
static void mt_tfl_dw_block(const mt_conv_params *p, const int8_t *x, const int8_t *wb, const int16_t *idx, int32_t nb,
                            int32_t oy, int32_t ox, const int32_t *bias, const mt_requant_tfl *rq, int8_t *y,
                            uint8_t *mask) {
    int32_t ky, kx, j;
    for (j = 0; j < nb; j++) {
        int32_t c = mt_tfl_chan(idx, j), acc = 0;
        for (ky = 0; ky < p->kh; ky++) {
            int32_t iy = oy * p->stride - p->pad + ky * p->dilation;
            if (iy < 0 || iy >= p->in_h) continue;
            for (kx = 0; kx < p->kw; kx++) {
                int32_t ix = ox * p->stride - p->pad + kx * p->dilation;
                if (ix < 0 || ix >= p->in_w) continue;
                acc += ((int32_t)x[(iy * p->in_w + ix) * p->in_c + c] - p->x_zero) * (int32_t)wb[(ky * p->kw + kx) * nb + j];
            }
        }
        mt_tfl_store(y, mask, (oy * p->out_w + ox) * p->out_c + c, acc, c, bias, rq, p->y_zero);
    }
}

void mt_conv_tfl_s8(const mt_conv_params *p, int32_t groups, int32_t layout, const int8_t *x,
                    const struct mt_weight_s8_ *w, const int32_t *bias, const mt_requant_tfl *rq, int8_t *y,
                    uint8_t *mask) {
    int32_t ig = p->in_c / groups, og = p->out_c / groups;
    int32_t oy, ox, o;
    for (oy = 0; oy < p->out_h; oy++) {
        for (ox = 0; ox < p->out_w; ox++) {
            if (layout == MT_TFL_HWC) {
                mt_tfl_dw_block(p, x, w->frozen, w->frozen_idx, w->n_frozen, oy, ox, bias, rq, y, mask);
                mt_tfl_dw_block(p, x, w->train, w->train_idx, w->n_train, oy, ox, bias, rq, y, mask);
                continue;
            }
            for (o = 0; o < p->out_c; o++) {
                int32_t c0 = (o / og) * ig; /* the first input channel of o's group */
                int32_t acc = mt_tfl_block_acc(p, x, w->frozen, w->frozen_idx, w->n_frozen, c0, o, oy, ox) +
                              mt_tfl_block_acc(p, x, w->train, w->train_idx, w->n_train, c0, o, oy, ox);
                mt_tfl_store(y, mask, (oy * p->out_w + ox) * p->out_c + o, acc, o, bias, rq, p->y_zero);
            }
        }
    }
}

void mt_add_tfl_s8(const mt_add_tfl_params *p, const int8_t *a, const int8_t *b, int8_t *y, uint8_t *mask) {
    int32_t i;
    for (i = 0; i < p->size; i++) {
        /* y may alias a or b: each element is read before it is written */
        int32_t sa = mt_mbqm_s32(((int32_t)a[i] - p->z1) * (1 << MT_TFL_ADD_LEFT_SHIFT), p->m1, p->e1, 0);
        int32_t sb = mt_mbqm_s32(((int32_t)b[i] - p->z2) * (1 << MT_TFL_ADD_LEFT_SHIFT), p->m2, p->e2, 0);
        int32_t v = mt_mbqm_s32(mt_wrap_s32((int64_t)sa + sb), p->mo, p->eo, 0) + p->zy;
        if (mask) mt_tfl_mask_put(mask, i, (uint32_t)(v >= p->lo && v <= p->hi));
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

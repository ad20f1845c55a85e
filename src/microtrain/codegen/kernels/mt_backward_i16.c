/* mt_backward_i16.c: the int16 backward's pointwise input gradient (docs/training-semantics.md, section 4b):
 * the gradient tensor as int16 codes with one power-of-two scale, exact int32 sums of code x int8 weight, one
 * int32 -> float32 conversion and an exact product by 2^-e per element. Equal to ops/conv.grad_input_int16 bit
 * for bit (the sums are exact: any order gives them); the Cortex-M twin is arm/mt_backward_i16_smlad.c. */
#include "mt_i16.h"
#include "mt_kernels.h"

/* acc[chan(j)] += sum over o < n of q[o] * W[o, j] for the block's nb channels (rows nb apart, idx: their
 * input channels, or NULL for 0..nb-1) */
static void mt_i16_block(const int16_t *q, int32_t n, const int8_t *wb, const int16_t *idx, int32_t nb,
                         mt_i32_alias *acc) {
    int32_t o, j;
    for (o = 0; o < n; o++) {
        const int8_t *wr = wb + o * nb;
        int32_t qo = q[o];
        if (idx)
            for (j = 0; j < nb; j++) acc[idx[j]] += qo * (int32_t)wr[j];
        else
            for (j = 0; j < nb; j++) acc[j] += qo * (int32_t)wr[j];
    }
}

void mt_conv_grad_input_pointwise_i16(const mt_conv_params *p, const float *gacc, const mt_weight_s8 *w, float *gx) {
    int16_t q[MT_I16_OCHUNK];
    int32_t i, oy, ox, o0, e;
    float up, down;
    int32_t n_in = p->in_h * p->in_w * p->in_c;
    if (p->stride != 1)
        for (i = 0; i < n_in; i++) gx[i] = 0.0f; /* positions no output reads */
    e = mt_i16_exponent(gacc, p->out_h * p->out_w * p->out_c);
    up = mt_i16_pow2(e == MT_I16_BAD ? 0 : e);
    down = mt_i16_pow2(e == MT_I16_BAD ? 0 : -e);
    for (oy = 0; oy < p->out_h; oy++) {
        for (ox = 0; ox < p->out_w; ox++) {
            const float *g = gacc + (oy * p->out_w + ox) * p->out_c;
            float *gxp = gx + ((oy * p->stride) * p->in_w + ox * p->stride) * p->in_c;
            mt_i32_alias *acc = (mt_i32_alias *)gxp;
            if (e == MT_I16_BAD) { /* a non-finite gradient: NaN, as the NumPy rule (the guard sees it) */
                mt_i16_bits nan;
                nan.u = 0x7fc00000u;
                for (i = 0; i < p->in_c; i++) gxp[i] = nan.f;
                continue;
            }
            for (i = 0; i < p->in_c; i++) acc[i] = 0;
            for (o0 = 0; o0 < p->out_c; o0 += MT_I16_OCHUNK) {
                int32_t n = p->out_c - o0 < MT_I16_OCHUNK ? p->out_c - o0 : MT_I16_OCHUNK;
                mt_i16_codes(g + o0, n, up, q);
                if (w->n_frozen) mt_i16_block(q, n, w->frozen + o0 * w->n_frozen, w->frozen_idx, w->n_frozen, acc);
                if (w->n_train) mt_i16_block(q, n, w->train + o0 * w->n_train, w->train_idx, w->n_train, acc);
            }
            for (i = 0; i < p->in_c; i++) gxp[i] = (float)acc[i] * down;
        }
    }
}

int32_t mt_conv_grad_input_pointwise_i16_scratch_bytes(const mt_conv_params *p) {
    (void)p; /* the codes of MT_I16_OCHUNK channels of four pixels (the Cortex-M twin's; this one keeps one) */
    return (int32_t)(4 * sizeof(int16_t) * MT_I16_OCHUNK);
}

/* mt_backward_i16.c: the int16 backward's pointwise input gradient (docs/training-semantics.md, section 4b):
 * the gradient tensor as int16 codes with one power-of-two scale, exact int32 sums of code x int8 weight, one
 * int32 -> float32 conversion and an exact product by 2^-e per element. The codes of the whole tensor go to the
 * scratch buffer `codes` (mt_i16_codes_bytes; the lowering plans it in the arena). Equal to ops/conv.grad_input_int16 bit
 * for bit (the sums are exact: any order gives them); the Cortex-M twin is arm/mt_backward_i16_smlad.c. */
#include "mt_i16.h"
#include "mt_kernels.h"

/* acc[chan(j)] += sum over o of code(pix, o) * W[o, j] for the block's nb channels (rows nb apart, idx: their
 * input channels, or NULL for 0..nb-1) */
static void mt_i16_block(const int16_t *codes, int32_t pix, int32_t out_c, const int8_t *wb, const int16_t *idx,
                         int32_t nb, mt_i32_alias *acc) {
    const int32_t opairs = (out_c + 1) / 2;
    int32_t o, j;
    for (o = 0; o < out_c; o++) {
        const int8_t *wr = wb + o * nb;
        const int32_t qo = codes[mt_i16_code_index(opairs, pix, o)];
        if (idx)
            for (j = 0; j < nb; j++) acc[idx[j]] += qo * (int32_t)wr[j];
        else
            for (j = 0; j < nb; j++) acc[j] += qo * (int32_t)wr[j];
    }
}

void mt_conv_grad_input_pointwise_i16(const mt_conv_params *p, const float *gacc, const mt_weight_s8 *w, int16_t *codes,
                                      float *gx) {
    int32_t i, pix, e;
    float up, down;
    const int32_t n_in = p->in_h * p->in_w * p->in_c, npix = p->out_h * p->out_w;
    if (p->stride != 1)
        for (i = 0; i < n_in; i++) gx[i] = 0.0f; /* positions no output reads */
    e = mt_i16_exponent(gacc, npix * p->out_c);
    up = mt_i16_pow2(e == MT_I16_BAD ? 0 : e);
    down = mt_i16_pow2(e == MT_I16_BAD ? 0 : -e);
    if (e != MT_I16_BAD) mt_i16_code_tensor(gacc, npix, p->out_c, up, codes);
    for (pix = 0; pix < npix; pix++) {
        const int32_t oy = pix / p->out_w, ox = pix - oy * p->out_w;
        float *gxp = gx + ((oy * p->stride) * p->in_w + ox * p->stride) * p->in_c;
        mt_i32_alias *acc = (mt_i32_alias *)gxp;
        if (e == MT_I16_BAD) { /* a non-finite gradient: NaN, as the NumPy rule (the guard sees it) */
            mt_i16_bits nan;
            nan.u = 0x7fc00000u;
            for (i = 0; i < p->in_c; i++) gxp[i] = nan.f;
            continue;
        }
        for (i = 0; i < p->in_c; i++) acc[i] = 0;
        if (w->n_frozen) mt_i16_block(codes, pix, p->out_c, w->frozen, w->frozen_idx, w->n_frozen, acc);
        if (w->n_train) mt_i16_block(codes, pix, p->out_c, w->train, w->train_idx, w->n_train, acc);
        for (i = 0; i < p->in_c; i++) gxp[i] = (float)acc[i] * down;
    }
}

int32_t mt_conv_grad_input_pointwise_i16_scratch_bytes(const mt_conv_params *p) {
    (void)p; /* the Cortex-M twin's paired weights of MT_I16_OPAIRS output-channel pairs (this one keeps none) */
    return (int32_t)(sizeof(uint32_t) * MT_I16_OPAIRS);
}

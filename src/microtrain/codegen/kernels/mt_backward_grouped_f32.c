/* mt_block_grad_grouped_f32 (declared in mt_kernels.h; codegen/grouped_backward.py emits it): an inverted-residual
 * block's backward by groups of expanded channels, built from the ungrouped kernels, so it runs their Cortex-M
 * fast twins where those exist. */
#include "mt_kernels.h"

#define MT_BIT(mask, i) (((mask)[(i) >> 3] >> ((i) & 7)) & 1)

/* g[i, j] = mask(element i * c + c0 + j) ? g[i, j] * eff[c0 + j] : 0 for the k channels from c0 of an (n, c)
 * tensor held k wide (mt_conv_grad_acc_f32's product, in place). */
static void grad_acc_group(float *g, const uint8_t *mask, const float *eff, int32_t n, int32_t c, int32_t c0,
                           int32_t k) {
    int32_t i, j;
    for (i = 0; i < n; i++)
        for (j = 0; j < k; j++) g[i * k + j] = MT_BIT(mask, i * c + c0 + j) ? g[i * k + j] * eff[c0 + j] : 0.0f;
}

/* The bias update of channels c0 .. c0 + k - 1 from their k-wide gradient. */
static void bias_update_group(const float *g, int32_t n, int32_t k, int32_t c0, int32_t *bias,
                              const mt_update_params *u, const mt_train_ctx *ctx) {
    mt_update_params uk = *u;
    uk.divisor += c0;
    uk.row0 = c0;
    mt_bias_update_f32(g, n, k, bias + c0, &uk, ctx);
}

void mt_block_grad_grouped_f32(const mt_conv_params *pq, const float *gq, const int8_t *wq_groups,
                               const mt_conv_params *pd, const uint8_t *mask_d, const float *eff_d, int32_t *bias_d,
                               const mt_update_params *ub_d, const int8_t *wd_groups, const mt_conv_params *pp,
                               const uint8_t *mask_p, const float *eff_p, int32_t *bias_p,
                               const mt_update_params *ub_p, const int8_t *x, int32_t x_c, const mt_weight_s8 *wp,
                               const mt_update_params *uw_p, const mt_train_ctx *ctx, int32_t group, float *gd,
                               float *gp, float *gx) {
    const int32_t e = pd->in_c, nq = pq->out_h * pq->out_w, np = pp->out_h * pp->out_w;
    int32_t c0;
    for (c0 = 0; c0 < e; c0 += group) {
        const int32_t k = e - c0 < group ? e - c0 : group;
        mt_conv_params pqk = *pq, pdk = *pd, ppk = *pp;
        mt_weight_s8 wqk = {0, 0, 0, 0, 0, 0}, wdk = {0, 0, 0, 0, 0, 0}, wpk = *wp;
        pqk.in_c = k;
        pdk.in_c = pdk.out_c = k;
        ppk.out_c = k;
        wqk.frozen = wq_groups + c0 * pq->out_c;
        wqk.n_frozen = k;
        wdk.frozen = wd_groups + c0 * pd->kh * pd->kw;
        wdk.n_frozen = k;
        mt_conv_grad_input_pointwise_f32(&pqk, gq, &wqk, gd); /* q's input gradient, channels c0 .. */
        grad_acc_group(gd, mask_d, eff_d, nq, e, c0, k);
        if (bias_d) bias_update_group(gd, nq, k, c0, bias_d, ub_d, ctx);
        mt_conv_grad_input_depthwise_f32(&pdk, gd, &wdk, gp);
        grad_acc_group(gp, mask_p, eff_p, np, e, c0, k);
        if (bias_p) bias_update_group(gp, np, k, c0, bias_p, ub_p, ctx);
        /* p's rows c0 ..: their input gradient first (it reads the weights before their update) */
        wpk.frozen = wp->frozen ? wp->frozen + c0 * wp->n_frozen : 0;
        wpk.train = wp->train ? wp->train + c0 * wp->n_train : 0;
        if (gx) {
            if (c0 == 0)
                mt_conv_grad_input_pointwise_f32(&ppk, gp, &wpk, gx);
            else
                mt_conv_grad_input_pointwise_acc_f32(&ppk, gp, &wpk, gx);
        }
        if (uw_p) {
            mt_update_params u = *uw_p;
            u.divisor += c0;
            u.row0 = c0;
            mt_conv_weight_update_pointwise_f32(&ppk, x, x_c, gp, &wpk, &u, ctx);
        }
    }
}

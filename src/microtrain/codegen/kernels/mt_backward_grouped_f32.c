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

/* A conv's clamp mask on the group's gradient (grad_acc_group), then, when its bias trains, the update of the
 * group's biases from it: the divisors and hash rows from c0 (mt_update_params.row0). uk: the caller's update
 * struct, rewritten here (one struct in the frames, as before this helper). */
static void masked_bias_update(float *g, const uint8_t *mask, const float *eff, int32_t n, int32_t c, int32_t c0,
                               int32_t k, int32_t *bias, const mt_update_params *ub, mt_update_params *uk,
                               const mt_train_ctx *ctx) {
    grad_acc_group(g, mask, eff, n, c, c0, k);
    if (bias) {
        *uk = *ub;
        uk->divisor += c0, uk->row0 = c0;
        mt_bias_update_f32(g, n, k, bias + c0, uk, ctx);
    }
}

void mt_block_grad_grouped_f32(const mt_conv_params *pq, const float *gq, const int8_t *wq_groups,
                               const mt_conv_params *pd, const uint8_t *mask_d, const float *eff_d, int32_t *bias_d,
                               const mt_update_params *ub_d, const int8_t *wd_groups, const mt_conv_params *pp,
                               const uint8_t *mask_p, const float *eff_p, int32_t *bias_p,
                               const mt_update_params *ub_p, const int8_t *x, int32_t x_c, const mt_weight_s8 *wp,
                               const mt_update_params *uw_p, const mt_train_ctx *ctx, int32_t group, float *gd,
                               float *gp, float *gx) {
    const int32_t e = pd->in_c, nq = pq->out_h * pq->out_w, np = pp->out_h * pp->out_w;
    /* one params / weight view / update struct, rewritten for each call: the frame stays small (the planner's
     * stack estimate holds the entry point, this frame and the deepest callee's) */
    mt_conv_params pk;
    mt_weight_s8 wk;
    mt_update_params uk;
    int32_t c0;
    for (c0 = 0; c0 < e; c0 += group) {
        const int32_t k = e - c0 < group ? e - c0 : group;
        pk = *pq; /* q's input gradient, channels c0 .. */
        pk.in_c = k;
        wk = *wp;
        wk.frozen = wq_groups + c0 * pq->out_c, wk.frozen_idx = 0, wk.n_frozen = k;
        wk.train = 0, wk.train_idx = 0, wk.n_train = 0;
        mt_conv_grad_input_pointwise_f32(&pk, gq, &wk, gd);
        masked_bias_update(gd, mask_d, eff_d, nq, e, c0, k, bias_d, ub_d, &uk, ctx);
        pk = *pd; /* d's input gradient */
        pk.in_c = pk.out_c = k;
        wk.frozen = wd_groups + c0 * pd->kh * pd->kw;
        mt_conv_grad_input_depthwise_f32(&pk, gd, &wk, gp);
        masked_bias_update(gp, mask_p, eff_p, np, e, c0, k, bias_p, ub_p, &uk, ctx);
        /* p's rows c0 ..: their input gradient first (it reads the weights before their update) */
        pk = *pp;
        pk.out_c = k;
        wk = *wp;
        wk.frozen = wp->frozen ? wp->frozen + c0 * wp->n_frozen : 0;
        wk.train = wp->train ? wp->train + c0 * wp->n_train : 0;
        if (gx) {
            if (c0 == 0)
                mt_conv_grad_input_pointwise_f32(&pk, gp, &wk, gx);
            else
                mt_conv_grad_input_pointwise_acc_f32(&pk, gp, &wk, gx);
        }
        if (uw_p) {
            uk = *uw_p;
            uk.divisor += c0, uk.row0 = c0;
            mt_conv_weight_update_pointwise_f32(&pk, x, x_c, gp, &wk, &uk, ctx);
        }
    }
}

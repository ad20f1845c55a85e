/* mt_pad1d.c: zero padding of the time axis of a 1-D map (ops/pad1d.py). */
#include "mt_kernels.h"

void mt_pad1d_s8(const mt_pad1d_params *p, const int8_t *x, int8_t *y) {
    const int32_t c = p->c, w_out = p->left + p->in_w + p->right;
    for (int32_t r = 0; r < p->in_h; r++) {
        const int8_t *xr = x + (size_t)r * p->in_w * c;
        int8_t *yr = y + (size_t)r * w_out * c;
        for (int32_t i = 0; i < p->left * c; i++) yr[i] = (int8_t)p->zero;
        for (int32_t i = 0; i < p->in_w * c; i++) yr[p->left * c + i] = xr[i];
        for (int32_t i = (p->left + p->in_w) * c; i < w_out * c; i++) yr[i] = (int8_t)p->zero;
    }
}

void mt_pad1d_grad_f32(const mt_pad1d_params *p, const float *gy, float *gx) {
    const int32_t c = p->c, w_out = p->left + p->in_w + p->right;
    for (int32_t r = 0; r < p->in_h; r++)
        for (int32_t i = 0; i < p->in_w * c; i++)
            gx[(size_t)r * p->in_w * c + i] = gy[(size_t)r * w_out * c + p->left * c + i];
}

/* mt_1d.c: the kernels of the 1-D ops: time-axis zero padding (ops/pad1d.py), max pooling (ops/maxpool1d.py). */
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

void mt_max_pool1d_s8(const mt_max_pool1d_params *p, const int8_t *x, int8_t *y) {
    const int32_t c = p->c;
    for (int32_t r = 0; r < p->in_h; r++)
        for (int32_t o = 0; o < p->out_w; o++)
            for (int32_t ch = 0; ch < c; ch++) {
                const int8_t *xw = x + ((size_t)r * p->in_w + (size_t)o * p->stride) * c + ch;
                int8_t m = xw[0];
                for (int32_t j = 1; j < p->k; j++)
                    if (xw[(size_t)j * c] > m) m = xw[(size_t)j * c];
                y[((size_t)r * p->out_w + o) * c + ch] = m;
            }
}

void mt_max_pool1d_grad_f32(const mt_max_pool1d_params *p, const float *gy, const int8_t *x, float *gx) {
    const int32_t c = p->c;
    for (int32_t i = 0; i < p->in_h * p->in_w * c; i++) gx[i] = 0.0f;
    for (int32_t r = 0; r < p->in_h; r++)
        for (int32_t o = 0; o < p->out_w; o++)
            for (int32_t ch = 0; ch < c; ch++) {
                size_t base = ((size_t)r * p->in_w + (size_t)o * p->stride) * c + ch;
                int32_t best = 0;
                for (int32_t j = 1; j < p->k; j++)
                    if (x[base + (size_t)j * c] > x[base + (size_t)best * c]) best = j; /* the first maximum */
                gx[base + (size_t)best * c] += gy[((size_t)r * p->out_w + o) * c + ch];
            }
}

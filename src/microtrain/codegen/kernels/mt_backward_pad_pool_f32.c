/* mt_backward_pad_pool_f32.c: float32 gradients of pad and the windowed average pool (ops/pad.py,
 * ops/avgpool.py grad_input), the same operations in the same order as NumPy. Batch 1, NHWC. */
#include "mt_kernels.h"

/* the padded positions are constants: the input's gradient is gy without them */
void mt_pad_grad_f32(const float *gy, int32_t in_h, int32_t in_w, int32_t c, int32_t top, int32_t left,
                     int32_t out_w, float *gx) {
    int32_t iy, ix, ch;
    for (iy = 0; iy < in_h; iy++)
        for (ix = 0; ix < in_w; ix++)
            for (ch = 0; ch < c; ch++) gx[(iy * in_w + ix) * c + ch] = gy[((iy + top) * out_w + ix + left) * c + ch];
}

/* each output's gradient, divided by its window's count of valid positions, is added to those positions;
 * windows are visited tap by tap (ky, kx outer), as ops/avgpool.grad_input sums them */
void mt_avg_pool_grad_f32(const mt_avg_pool_params *p, const float *gy, float *gx) {
    int32_t oy, ox, c, ky, kx, n = p->in_h * p->in_w * p->c;
    for (c = 0; c < n; c++) gx[c] = 0.0f;
    for (ky = 0; ky < p->kh; ky++) {
        for (kx = 0; kx < p->kw; kx++) {
            for (oy = 0; oy < p->out_h; oy++) {
                int32_t iy = oy * p->stride - p->pad_top + ky;
                if (iy < 0 || iy >= p->in_h) continue;
                for (ox = 0; ox < p->out_w; ox++) {
                    int32_t ix = ox * p->stride - p->pad_left + kx, count;
                    int32_t y0 = oy * p->stride - p->pad_top, x0 = ox * p->stride - p->pad_left;
                    int32_t ylo = y0 < 0 ? 0 : y0, xlo = x0 < 0 ? 0 : x0;
                    int32_t yhi = y0 + p->kh > p->in_h ? p->in_h : y0 + p->kh;
                    int32_t xhi = x0 + p->kw > p->in_w ? p->in_w : x0 + p->kw;
                    if (ix < 0 || ix >= p->in_w) continue;
                    count = (yhi - ylo) * (xhi - xlo);
                    for (c = 0; c < p->c; c++)
                        gx[(iy * p->in_w + ix) * p->c + c] += gy[(oy * p->out_w + ox) * p->c + c] / (float)count;
                }
            }
        }
    }
}

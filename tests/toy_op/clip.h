/* clip.h: the toy op's kernels (tests/toy_op/clip.py). */
#ifndef MT_TOY_CLIP_H
#define MT_TOY_CLIP_H
#include <stdint.h>

/* y[i] = clamp(x[i], lo, hi); mask bit i (NHWC flat index, byte i >> 3) = lo <= x[i] <= hi, if mask. */
void mt_toy_clip_s8(const int8_t *x, int32_t n, int32_t lo, int32_t hi, int8_t *y, uint8_t *mask);
/* g[i] = mask bit i ? gy[i] : 0 */
void mt_toy_clip_grad_f32(const float *gy, const uint8_t *mask, int32_t n, float *g);
#endif

/* clip.c: the toy op's kernels (tests/toy_op/clip.py). */
#include "clip.h"

void mt_toy_clip_s8(const int8_t *x, int32_t n, int32_t lo, int32_t hi, int8_t *y, uint8_t *mask) {
    for (int32_t i = 0; i < n; i++) {
        int32_t v = x[i];
        uint32_t inside = (uint32_t)(v >= lo && v <= hi);
        y[i] = (int8_t)(v < lo ? lo : v > hi ? hi : v);
        if (mask) mask[i >> 3] = (uint8_t)((mask[i >> 3] & ~(1u << (i & 7))) | (inside << (i & 7)));
    }
}

void mt_toy_clip_grad_f32(const float *gy, const uint8_t *mask, int32_t n, float *g) {
    for (int32_t i = 0; i < n; i++) g[i] = ((mask[i >> 3] >> (i & 7)) & 1) ? gy[i] : 0.0f;
}

/* mt_tile_s8.c: window copies of patch-based execution (codegen/patch.py, patching.py).
 * A tile of the frozen prefix reads a window of each input tensor; where the window reaches past the
 * tensor's border the copy fills the zero point (real zero: the padding the whole-tensor conv adds). */
#include "mt_kernels.h"

/* Back to front, so dst may be src itself when the window only adds padding around it (every element
 * moves to a higher address or stays: codegen/patch.py lets such a copy run in place). */
void mt_window_s8(const int8_t *src, int32_t src_h, int32_t src_w, int32_t c, int32_t r0, int32_t c0,
                  int8_t *dst, int32_t dst_h, int32_t dst_w, int32_t fill) {
    int32_t i, j, k;
    for (i = dst_h - 1; i >= 0; i--) {
        int32_t r = r0 + i;
        for (j = dst_w - 1; j >= 0; j--) {
            int32_t col = c0 + j;
            int8_t *d = dst + ((size_t)i * (size_t)dst_w + (size_t)j) * (size_t)c;
            if (r < 0 || r >= src_h || col < 0 || col >= src_w) {
                for (k = c - 1; k >= 0; k--) d[k] = (int8_t)fill;
            } else {
                const int8_t *s = src + ((size_t)r * (size_t)src_w + (size_t)col) * (size_t)c;
                for (k = c - 1; k >= 0; k--) d[k] = s[k];
            }
        }
    }
}

void mt_paste_s8(const int8_t *src, int32_t h, int32_t w, int32_t c, int8_t *dst, int32_t dst_w, int32_t r0,
                 int32_t c0) {
    int32_t i, k;
    size_t row = (size_t)w * (size_t)c;
    for (i = 0; i < h; i++) {
        const int8_t *s = src + (size_t)i * row;
        int8_t *d = dst + (((size_t)(r0 + i)) * (size_t)dst_w + (size_t)c0) * (size_t)c;
        for (k = 0; k < (int32_t)row; k++) d[k] = s[k];
    }
}

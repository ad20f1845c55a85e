/* mt_tile_s8.c: window copies of patch-based execution (codegen/patch.py, patching.py).
 * A tile of the frozen prefix reads a window of each input tensor; where the window reaches past the
 * tensor's border the copy fills the zero point (real zero: the padding the whole-tensor conv adds). */
#include "mt_kernels.h"

/* Back to front, so dst may be src itself when the window only adds padding around it (every element
 * moves to a higher address or stays: codegen/patch.py lets such a copy run in place). Row by row: the
 * right padding, the run of src columns, the left padding. */
void mt_window_s8(const int8_t *src, int32_t src_h, int32_t src_w, int32_t c, int32_t r0, int32_t c0,
                  int8_t *dst, int32_t dst_h, int32_t dst_w, int32_t fill) {
    int32_t i, k;
    int32_t ja = c0 < 0 ? -c0 : 0;                         /* first dst column inside src */
    int32_t jb = src_w - c0 < dst_w ? src_w - c0 : dst_w;  /* end of the dst columns inside src */
    int32_t row = dst_w * c, lo, hi;
    int8_t f = (int8_t)fill;
    if (jb < ja) jb = ja;
    lo = ja * c;
    hi = jb * c;
    for (i = dst_h - 1; i >= 0; i--) {
        int32_t r = r0 + i;
        int8_t *d = dst + (size_t)i * (size_t)row;
        if (r < 0 || r >= src_h || hi == lo) {
            for (k = row - 1; k >= 0; k--) d[k] = f;
        } else {
            const int8_t *s = src + ((size_t)r * (size_t)src_w + (size_t)(c0 + ja)) * (size_t)c;
            for (k = row - 1; k >= hi; k--) d[k] = f;
            for (k = hi - 1; k >= lo; k--) d[k] = s[k - lo];
            for (k = lo - 1; k >= 0; k--) d[k] = f;
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

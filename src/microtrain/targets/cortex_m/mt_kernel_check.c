/* Self-check firmware: runs each SIMD kernel (codegen/kernels/arm) and its portable twin (renamed
 * *_portable by the SIMD build) on the same pseudo-random cases, compares outputs and masks byte for byte,
 * and marks each call for the instruction counter (region 1 + 2i: portable, 2 + 2i: SIMD, 0: the rest).
 * Prints one line per case; exit status = number of cases that differ. */
#include <stdint.h>
#include <string.h>

#include "mt_kernels.h"
#include "mt_semihost.h"

void mt_conv_pointwise_s8_portable(const mt_conv_params *p, const int8_t *x, const int8_t *w, const int32_t *bias,
                                   const float *eff, int8_t *y, uint8_t *mask);
void mt_conv_s8_portable(const mt_conv_params *p, const int8_t *x, const int8_t *w, const int32_t *bias,
                         const float *eff, int8_t *y, uint8_t *mask);
void mt_conv_pointwise_split_s8_portable(const mt_conv_params *p, const int8_t *x, const int8_t *w_frozen,
                                         const int16_t *frozen_idx, int32_t n_frozen, const int8_t *w_train,
                                         const int16_t *train_idx, int32_t n_train, const int32_t *bias,
                                         const float *eff, int8_t *y, uint8_t *mask);
void mt_conv_depthwise_s8_portable(const mt_conv_params *p, const int8_t *x, const int8_t *w, const int32_t *bias,
                                   const float *eff, int8_t *y, uint8_t *mask);

typedef struct {
    const char *kind; /* "pointwise", "depthwise", "conv" (dense) or "split" (pointwise, sparse-update split) */
    int32_t h, w, in_c, out_c, k, stride, pad;
} Case;

static const Case cases[] = {
    {"pointwise", 5, 5, 3, 5, 1, 1, 0},    {"pointwise", 4, 6, 17, 9, 1, 1, 0},
    {"pointwise", 7, 7, 16, 24, 1, 2, 0},  {"pointwise", 3, 3, 1, 1, 1, 1, 0},
    {"depthwise", 6, 5, 7, 7, 3, 1, 1},    {"depthwise", 9, 9, 12, 12, 5, 2, 2},
    {"depthwise", 8, 8, 20, 20, 7, 1, 3},  {"depthwise", 5, 5, 4, 4, 3, 2, 1},
    {"depthwise", 2, 2, 9, 9, 7, 1, 3},    {"conv", 16, 16, 3, 16, 3, 2, 1},
    {"conv", 7, 7, 5, 6, 3, 1, 1},         {"conv", 8, 8, 8, 5, 7, 1, 3}, /* patch 392 > 256: fallback */
    {"conv", 5, 5, 2, 3, 1, 1, 0},         {"split", 6, 6, 19, 10, 1, 1, 0},
    {"split", 5, 5, 7, 4, 1, 2, 0},        {"split", 3, 3, 300, 5, 1, 1, 0}, /* patch > 256: fallback */
    /* layer-sized cases for the instruction-count comparison */
    {"pointwise", 20, 20, 48, 48, 1, 1, 0}, {"depthwise", 20, 20, 96, 96, 5, 1, 2},
    {"conv", 48, 48, 3, 16, 3, 2, 1},
};
#define N_CASES (int)(sizeof cases / sizeof cases[0])
#define MAX_X 40000
#define MAX_W 10000
#define MAX_C 128

static int8_t x[MAX_X], w[MAX_W], y_ref[MAX_X], y_simd[MAX_X], y_nomask[MAX_X];
static uint8_t m_ref[MAX_X / 8 + 1], m_simd[MAX_X / 8 + 1];
static int32_t bias[MAX_C];
static int16_t frozen_idx[512], train_idx[512];
static float eff[MAX_C];

static uint32_t rng = 12345u;
static uint32_t next(void)
{
    rng = rng * 1664525u + 1013904223u;
    return rng >> 8;
}
static int8_t rand_s8(void) { return (int8_t)(next() & 0xFF); }

int main(void)
{
    int failures = 0;
    for (int i = 0; i < N_CASES; i++) {
        const Case *c = &cases[i];
        int depthwise = c->kind[0] == 'd', dense = c->kind[0] == 'c', split = c->kind[0] == 's';
        int32_t n_frozen = 0, n_train = 0;
        mt_conv_params p;
        p.in_h = c->h;
        p.in_w = c->w;
        p.in_c = c->in_c;
        p.kh = p.kw = c->k;
        p.stride = c->stride;
        p.pad = c->pad;
        p.out_h = (c->h + 2 * c->pad - c->k) / c->stride + 1;
        p.out_w = (c->w + 2 * c->pad - c->k) / c->stride + 1;
        p.out_c = c->out_c;
        p.x_zero = (i % 3 == 0) ? -128 : (int32_t)rand_s8();
        p.y_zero = (i % 2 == 0) ? -128 : (int32_t)rand_s8() / 4;
        int32_t n_x = p.in_h * p.in_w * p.in_c, n_y = p.out_h * p.out_w * p.out_c;
        int32_t n_w = depthwise ? c->k * c->k * c->out_c : c->k * c->k * c->in_c * c->out_c;
        int32_t fan_in = depthwise ? c->k * c->k : c->k * c->k * c->in_c;
        for (int32_t j = 0; j < n_x; j++) x[j] = rand_s8();
        for (int32_t j = 0; j < n_w; j++) w[j] = rand_s8();
        for (int32_t o = 0; o < p.out_c; o++) {
            bias[o] = (int32_t)(next() % 20001u) - 10000;
            /* spread outputs over the int8 range, with some saturating both ways */
            eff[o] = 1.0f / (float)(fan_in * 600 + (int32_t)(next() % 4000u));
        }
        if (p.out_c > 2) bias[1] = INT32_MIN; /* a dead channel: must saturate, not overflow */
        if (i == 1 || i == 5) eff[0] = __builtin_inff(); /* a degenerate multiplier: the fallback path */
        if (split) /* a pseudo-random partition of the input channels into frozen and trained */
            for (int32_t ch = 0; ch < p.in_c; ch++) {
                if (next() & 1) train_idx[n_train++] = (int16_t)ch;
                else frozen_idx[n_frozen++] = (int16_t)ch;
            }
        memset(m_ref, 0xAA, sizeof m_ref);
        memset(m_simd, 0x55, sizeof m_simd);
        mt_mark(1 + 2 * i);
        if (depthwise) mt_conv_depthwise_s8_portable(&p, x, w, bias, eff, y_ref, m_ref);
        else if (dense) mt_conv_s8_portable(&p, x, w, bias, eff, y_ref, m_ref);
        else if (split)
            mt_conv_pointwise_split_s8_portable(&p, x, w, frozen_idx, n_frozen, w + n_frozen * p.out_c, train_idx,
                                                n_train, bias, eff, y_ref, m_ref);
        else mt_conv_pointwise_s8_portable(&p, x, w, bias, eff, y_ref, m_ref);
        mt_mark(2 + 2 * i);
        if (depthwise) mt_conv_depthwise_s8(&p, x, w, bias, eff, y_simd, m_simd);
        else if (dense) mt_conv_s8(&p, x, w, bias, eff, y_simd, m_simd);
        else if (split)
            mt_conv_pointwise_split_s8(&p, x, w, frozen_idx, n_frozen, w + n_frozen * p.out_c, train_idx, n_train,
                                       bias, eff, y_simd, m_simd);
        else mt_conv_pointwise_s8(&p, x, w, bias, eff, y_simd, m_simd);
        mt_mark(0);
        int32_t diff = 0, mask_diff = 0, saturated = 0;
        for (int32_t j = 0; j < n_y; j++) {
            diff += y_ref[j] != y_simd[j];
            saturated += (y_ref[j] == 127 || y_ref[j] == -128);
            int b = 1 << (j & 7);
            mask_diff += (m_ref[j >> 3] & b) != (m_simd[j >> 3] & b);
        }
        /* without a mask (inference, frozen layers) the kernels take their fast requantisation path: the
         * outputs must not change, in the SIMD build or the portable one */
        int32_t nomask_diff = 0;
        for (int pass = 0; pass < 2; pass++) {
            memset(y_nomask, 0x33, sizeof y_nomask);
            if (depthwise) (pass ? mt_conv_depthwise_s8 : mt_conv_depthwise_s8_portable)(&p, x, w, bias, eff, y_nomask, NULL);
            else if (dense) (pass ? mt_conv_s8 : mt_conv_s8_portable)(&p, x, w, bias, eff, y_nomask, NULL);
            else if (split)
                (pass ? mt_conv_pointwise_split_s8 : mt_conv_pointwise_split_s8_portable)(
                    &p, x, w, frozen_idx, n_frozen, w + n_frozen * p.out_c, train_idx, n_train, bias, eff, y_nomask,
                    NULL);
            else (pass ? mt_conv_pointwise_s8 : mt_conv_pointwise_s8_portable)(&p, x, w, bias, eff, y_nomask, NULL);
            for (int32_t j = 0; j < n_y; j++) nomask_diff += y_ref[j] != y_nomask[j];
        }
        failures += (diff || mask_diff || nomask_diff);
        mt_printf("case %d %s in=%dx%dx%d out_c=%d k=%d s=%d outputs=%d saturated=%d differ=%d mask_differ=%d "
                  "nomask_differ=%d\n", i, c->kind, (int)c->h, (int)c->w, (int)c->in_c, (int)c->out_c, (int)c->k,
                  (int)c->stride, (int)n_y, (int)saturated, (int)diff, (int)mask_diff, (int)nomask_diff);
    }
    return failures;
}

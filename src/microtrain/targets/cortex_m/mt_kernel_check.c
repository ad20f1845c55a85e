/* Self-check firmware: runs each SIMD kernel (codegen/kernels/arm) and its portable twin (renamed
 * *_portable by the SIMD build) on the same pseudo-random cases, compares outputs and masks byte for byte,
 * and marks each call for the instruction counter (region 1 + 2i: portable, 2 + 2i: SIMD, NOMASK_REGION + 2i and
 * + 2i + 1: portable and SIMD without a mask, 0: the rest).
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
void mt_add_s8_portable(const mt_add_params *p, const int8_t *skip, const int8_t *main_in, int8_t *y,
                        uint8_t *mask);
void mt_conv_depthwise_inplace_s8_portable(const mt_conv_params *p, const int8_t *x, const int8_t *w,
                                           const int32_t *bias, const float *eff, int8_t *y, uint8_t *mask,
                                           int8_t *plane);

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
    /* from FIRST_FOLD_CASE on no dead bias: the kernels may start their sums from the bias (bias folding);
     * bias modes by (i - FIRST_FOLD_CASE) % 3: small, about +-2^24 (the float add rounds), one just over 2^24 */
    {"depthwise", 7, 6, 10, 10, 3, 1, 1},  {"depthwise", 9, 8, 8, 8, 3, 2, 1},
    {"depthwise", 6, 6, 12, 12, 5, 1, 2},  {"depthwise", 3, 3, 8, 8, 3, 1, 3}, /* windows wholly in the padding */
    {"depthwise", 8, 7, 13, 13, 3, 2, 1},  {"depthwise", 9, 9, 16, 16, 7, 1, 3},
    {"depthwise", 10, 10, 8, 8, 3, 1, 0},
    {"pointwise", 4, 4, 96, 20, 1, 1, 0},  {"pointwise", 7, 6, 72, 30, 1, 1, 0},
    /* pointwise in_c % 8 == 4 (a lone group before the pairs), in_c > 96 (chunked: a last chunk of 4 and of 8,
     * two blocks of output channels), pixel counts off the quads; split and dense quads with folded biases */
    {"pointwise", 5, 4, 20, 13, 1, 1, 0},  {"pointwise", 3, 5, 100, 9, 1, 1, 0},
    {"pointwise", 4, 4, 200, 30, 1, 1, 0}, {"split", 4, 5, 40, 12, 1, 1, 0},
    {"conv", 9, 9, 3, 16, 3, 2, 1},        {"pointwise", 4, 4, 24, 40, 1, 1, 0}, /* 20 dead channels */
    /* masked pointwise, out_c % 8 == 0, biases folded: the clamp bits collected in the asm channel loop */
    {"pointwise", 6, 6, 20, 16, 1, 1, 0},  {"pointwise", 5, 5, 32, 24, 1, 1, 0},
    /* in_c > 96 in chunks (the last of 4 channels), two blocks of output channels: masked, unfolded / folded */
    {"pointwise", 4, 4, 100, 8, 1, 1, 0},  {"pointwise", 4, 5, 196, 32, 1, 1, 0},
    /* split into whole groups of 4 channels (FIRST_GROUPED_SPLIT on): folded, and one bias too large to fold */
    {"split", 6, 6, 48, 16, 1, 1, 0},      {"split", 5, 4, 24, 24, 1, 1, 0},
    {"pointwise", 3, 4, 520, 8, 1, 1, 0}, /* in_c beyond the bias-folding bound */
    /* in_c 8 without a mask (pointwise_narrow): out_c % 4 channels redone, stride 2 and two tables of channels (48 + 20),
     * a layer-sized case (NARROW_LAYER_CASE); biases near 2^24, one too large to fold, small */
    {"pointwise", 9, 7, 8, 13, 1, 1, 0},   {"pointwise", 7, 7, 8, 70, 1, 2, 0},
    {"pointwise", 16, 16, 8, 32, 1, 1, 0}, {"pointwise", 5, 5, 8, 2, 1, 1, 0},
    /* in_c 16 the same way (tables of 28 channels): odd, stride 2 over two tables, layer-sized */
    {"pointwise", 6, 7, 16, 9, 1, 1, 0},   {"pointwise", 9, 7, 16, 41, 1, 2, 0},
    {"pointwise", 16, 16, 16, 48, 1, 1, 0},
    /* in_c 24 and 32 without a mask (the quads, not pointwise_narrow): stride 2, odd channel counts */
    {"pointwise", 7, 6, 24, 31, 1, 2, 0},  {"pointwise", 9, 9, 32, 21, 1, 1, 0},
    {"pointwise", 8, 8, 24, 120, 1, 1, 0},
    /* in_c 24-48 without a mask through pointwise_wtab: odd channel counts, stride 2 (one run per output row),
     * two tables at in_c 48 */
    {"pointwise", 8, 8, 40, 13, 1, 1, 0},  {"pointwise", 9, 8, 48, 18, 1, 1, 0},
    {"pointwise", 15, 17, 24, 12, 1, 2, 0},
    /* dense convs through conv_wtab (k_n 27 -> 28, 36 -> 36: a last half group of 4): one bias too large to fold
     * (float biases in the quad headers), all folded, biases near 2^24 */
    {"conv", 48, 48, 3, 16, 3, 2, 1},     {"conv", 19, 17, 3, 8, 3, 2, 1},
    {"conv", 12, 12, 4, 8, 3, 1, 1},
    /* conv_wtab's other half-group widths (k_n 18 -> 20, 44 -> 44): one bias too large to fold, small, near
     * 2^24; stride 2 */
    {"conv", 11, 10, 2, 12, 3, 1, 1},     {"conv", 10, 10, 11, 8, 2, 1, 0},
    {"conv", 17, 15, 2, 8, 3, 2, 1},
    /* multipliers too large for int16 outputs (WIDE_EFF_CASE on: one channel's outputs beyond int16 before the
     * clamp): the byte-at-a-time stores (quads, narrow, depthwise rows) */
    {"pointwise", 8, 8, 16, 20, 1, 1, 0},  {"pointwise", 8, 8, 8, 20, 1, 1, 0},
    {"depthwise", 9, 9, 12, 12, 3, 1, 1},
    /* split into whole groups whose counts enter split_rows' loop passes part way (frozen 28 + trained 12
     * channels; 20 + 8), channel 2 wide as above: one bias too large to fold; small biases, mixed clamp bits */
    {"split", 4, 4, 40, 24, 1, 1, 0},      {"split", 5, 4, 28, 16, 1, 1, 0},
    /* 3x3 stride 1, two pixels per pass (dw_pairs, runs of >= 12 inside columns): an odd run (a last pixel by
     * dw_rows), an even run without padding, channels 4 + 2 */
    {"depthwise", 5, 15, 13, 13, 3, 1, 1}, {"depthwise", 4, 14, 20, 20, 3, 1, 0},
    {"depthwise", 3, 16, 6, 6, 3, 1, 1},
    /* dw_quad (3x3 / 5x5 / 7x7 at stride 1, 5x5 / 7x7 at stride 2, four channels per pass from a ring of pixel
     * pairs): depthwise layers of mcunet-5fps with the channels cut to MAX_C (DWQ_LAYER_CASE on: 4x4 3x3, 8x8 5x5,
     * 8x8 -> 4x4 7x7/2, 32x32 -> 16x16 7x7/2 in three strips, 8x8 7x7 in three strips, 8x8 3x3), then 5x5/2 on an
     * odd width (a last column half in the padding), a window as wide as the map with 8 + 2 channels, 7x7/2 on odd
     * sizes, 3x3 over two strips */
    {"depthwise", 4, 4, 128, 128, 3, 1, 1}, {"depthwise", 8, 8, 128, 128, 5, 1, 2},
    {"depthwise", 8, 8, 120, 120, 7, 2, 3}, {"depthwise", 32, 32, 32, 32, 7, 2, 3},
    {"depthwise", 8, 8, 128, 128, 7, 1, 3}, {"depthwise", 8, 8, 128, 128, 3, 1, 1},
    {"depthwise", 9, 11, 12, 12, 5, 2, 2},  {"depthwise", 5, 5, 10, 10, 5, 1, 2},
    {"depthwise", 11, 9, 16, 16, 7, 2, 3},  {"depthwise", 6, 40, 8, 8, 3, 1, 1},
    /* in place without a mask, 3x3 (dwi_run3): stride 2 on an even map (mbv2-w0.35's blocks.1), stride 1 on odd */
    {"depthwise", 32, 32, 24, 24, 3, 2, 1}, {"depthwise", 15, 13, 12, 12, 3, 1, 1},
    /* pointwise_wtab with a mask (out_c % 8 == 0, in_c 24-48, >= 64 pixels) and split convs whose index lists
     * partition the input channels through it (whole-weight tables): biases near 2^24, one too large to fold
     * whose outputs all clamp (a dead channel carried in the table), mixed clamp bits; stride 2 */
    {"pointwise", 8, 8, 48, 24, 1, 1, 0},  {"split", 8, 8, 48, 16, 1, 1, 0},
    {"split", 9, 8, 32, 24, 1, 1, 0},      {"pointwise", 8, 9, 24, 16, 1, 1, 0},
    {"pointwise", 10, 8, 40, 32, 1, 1, 0}, {"pointwise", 16, 16, 32, 16, 1, 2, 0},
    /* dw_quad with a 5x5 window one wider than the map (mcunet-5fps's 4x4 blocks.11-12), y_zero -128 (even case:
     * packed stores without the zero add) and not */
    {"depthwise", 4, 4, 16, 16, 5, 1, 2}, {"depthwise", 6, 4, 12, 12, 5, 1, 2},
    /* split convs through pointwise_wtab with a pseudo-random partition (SCATTERED_WTAB_SPLIT on), as the sparse
     * update's index lists are: the weight rows scattered a byte at a time (split_rows_pair) */
    {"split", 8, 8, 32, 24, 1, 1, 0},      {"split", 8, 9, 48, 16, 1, 1, 0},
};
#define FIRST_MASKED_WTAB_CASE 80
#define DWQ_LAYER_CASE 68
#define NARROW_LAYER_CASE 43 /* and 47: in_c 16 */
#define WIDE_EFF_CASE 60
#define FIRST_GROUPED_SPLIT 38 /* and 63, 64 */
#define SCATTERED_WTAB_SPLIT 88 /* and 89 */
#define MANY_DEAD_CASE 33 /* more dead channels than the SIMD kernels list (MT_DEAD_MAX) */
#define FIRST_FOLD_CASE 19
#define NOMASK_REGION 1000
#define N_CASES (int)(sizeof cases / sizeof cases[0])
#define MAX_X 40000
#define MAX_W 10000
#define MAX_C 128

static int8_t x[MAX_X], w[MAX_W], y_ref[MAX_X], y_simd[MAX_X], y_nomask[MAX_X], plane[1024];
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

#ifdef MT_CHECK_BACKWARD
/* The Cortex-M float backward kernels (codegen/kernels/arm/mt_backward_f32_fast.c) against their portable twins
 * (built with mt_backward_f32.c, renamed *_portable): identical float bits, identical updated weights and
 * biases. Built only with -DMT_CHECK_BACKWARD (tests/test_cortexm_kernels.py). */
void mt_conv_grad_acc_f32_portable(const float *gy, const uint8_t *mask, const float *eff, int32_t n, int32_t c,
                                   float *g);
void mt_conv_grad_input_pointwise_f32_portable(const mt_conv_params *p, const float *gacc, const mt_weight_s8 *w,
                                               float *gx);
void mt_conv_grad_input_pointwise_acc_f32_portable(const mt_conv_params *p, const float *gacc,
                                                   const mt_weight_s8 *w, float *gx);
void mt_conv_grad_input_depthwise_f32_portable(const mt_conv_params *p, const float *gacc, const mt_weight_s8 *w,
                                               float *gx);
void mt_add_grad_f32_portable(const float *gy, const uint8_t *mask, float scale, int32_t n, float *g);
void mt_grad_sum_f32_portable(const float *a, const float *b, int32_t n, float *out);
void mt_pool_grad_f32_portable(const float *gy, int32_t hw, int32_t c, float *gx);
void mt_bias_update_f32_portable(const float *gacc, int32_t hw, int32_t c, int32_t *bias, const mt_update_params *u,
                                 const mt_train_ctx *ctx);
void mt_conv_weight_update_pointwise_f32_portable(const mt_conv_params *p, const int8_t *x, int32_t x_c,
                                                  const float *gacc, const mt_weight_s8 *w,
                                                  const mt_update_params *u, const mt_train_ctx *ctx);

typedef struct {
    const char *kind; /* "gacc", "gi_pw" (pointwise input gradient), "acc_pw" (the same added to gx), "gi_dw"
                       * (depthwise), "upd_pw" */
    int32_t h, w, in_c, out_c, k, stride, pad, n_train;
} BCase;

static const BCase bcases[] = {
    {"gacc", 5, 5, 16, 16, 1, 1, 0, 0},   {"gacc", 4, 3, 13, 13, 1, 1, 0, 0},
    {"gi_dw", 6, 6, 13, 13, 3, 1, 1, 0},  {"gi_dw", 9, 8, 20, 20, 5, 2, 2, 0},
    {"gi_dw", 7, 7, 8, 8, 7, 2, 3, 0},    {"gi_dw", 5, 5, 12, 12, 3, 1, 0, 0},
    {"gi_pw", 5, 4, 13, 10, 1, 1, 0, 0},  {"gi_pw", 3, 3, 24, 50, 1, 1, 0, 9},
    {"gi_pw", 6, 6, 8, 12, 1, 2, 0, 3},   {"upd_pw", 4, 4, 12, 16, 1, 1, 0, 5},
    /* 6-channel groups then a 4-group; two chunks of output channels, the last odd (entering mid-loop) */
    {"gi_pw", 4, 4, 22, 127, 1, 1, 0, 0}, {"gi_pw", 8, 4, 29, 77, 1, 2, 0, 11},
    /* depthwise: several 8-channel groups, odd sizes, stride 2 with odd input */
    {"gi_dw", 7, 6, 24, 24, 5, 1, 2, 0},  {"gi_dw", 9, 7, 16, 16, 3, 2, 1, 0},
    {"upd_pw", 5, 3, 10, 13, 1, 1, 0, 4}, {"upd_pw", 6, 6, 9, 24, 1, 2, 0, 9},
    {"upd_pw", 9, 9, 8, 16, 1, 1, 0, 4}, /* 81 pixels: beyond MT_WU_PIXELS, each tile converts its inputs */
    /* the input gradient added to gx (mt_block_grad_grouped_f32's later channel groups) */
    {"acc_pw", 5, 4, 13, 10, 1, 1, 0, 0}, {"acc_pw", 3, 3, 24, 50, 1, 1, 0, 9}, {"acc_pw", 4, 4, 22, 127, 1, 1, 0, 0},
    /* 3-pixel then 4-pixel tiles (20 pixels: 3 + 3 + 3 + 3 + 4 + 4) over a split weight, odd output channels */
    {"gi_pw", 4, 5, 18, 21, 1, 1, 0, 7},
    /* 8-channel groups (then 6, 4 and single channels left over), chunks of 48 output channels then a short one
     * (on % 4 single steps first, an odd or even number of 4-channel steps), indexed channels, an odd pixel
     * count, stride 2, added to gx */
    {"gi_pw", 4, 4, 30, 77, 1, 1, 0, 0}, {"gi_pw", 5, 5, 44, 50, 1, 1, 0, 12}, {"gi_pw", 6, 6, 16, 12, 1, 2, 0, 0},
    {"acc_pw", 4, 4, 31, 53, 1, 1, 0, 9},
    /* whole chunks of 48 output channels (the pair loop), from zeros and from gx; a split weight in block order */
    {"gi_pw", 4, 4, 16, 96, 1, 1, 0, 0}, {"acc_pw", 2, 3, 24, 48, 1, 1, 0, 0}, {"gi_pw", 4, 4, 48, 56, 1, 1, 0, 20},
    /* depthwise, stride 1: 16-channel groups (then 8, then the rest), padding 0 / 1 / 2 */
    {"gi_dw", 5, 4, 40, 40, 3, 1, 1, 0}, {"gi_dw", 4, 4, 48, 48, 5, 1, 2, 0}, {"gi_dw", 6, 5, 33, 33, 3, 1, 0, 0},
    /* 8-channel groups: a map wider than MT_DWG_MAX_W (taps found per pixel), a 4-wide kernel with stride 3 */
    {"gi_dw", 2, 36, 8, 8, 3, 2, 1, 0}, {"gi_dw", 7, 8, 8, 8, 4, 3, 1, 0},
    /* dead output channels ("gi_pd": +0.0 at every pixel in 2 of every 5, so the fast kernel drops them; decoys
     * +0.0 at all pixels but the last, or -0.0 everywhere): live counts off the 8-channel steps, a split weight
     * in block order, stride 2 with indexed channels and 6-, 4- and single-channel groups, 3-pixel tiles; every
     * channel dead ("gi_pz"). gacc must come back unchanged. */
    {"gi_pd", 4, 4, 96, 100, 1, 1, 0, 0}, {"gi_pd", 4, 4, 48, 64, 1, 1, 0, 20}, {"gi_pd", 6, 6, 30, 77, 1, 2, 0, 11},
    {"gi_pd", 5, 4, 22, 127, 1, 1, 0, 0}, {"gi_pz", 4, 4, 24, 40, 1, 1, 0, 0},
    /* 5 dead, 6 live: row 1's place starts one value before its compacted values end (rebuilt channel by channel) */
    {"gi_pd", 4, 4, 24, 11, 1, 1, 0, 0},
    /* sparse pixel pairs ("gi_ps": 17 in 20 values +0.0, so the fast kernel compacts the pairs; every fourth pair
     * nearly dense, so it is put back and stays whole; pair 1 all +0.0; -0.0 decoys): a whole weight over 48 + 48
     * + 4 output channels, a split weight in block order over 32 pairs, 3 pairs over five chunks; an odd pixel
     * count (not applicable). gacc must come back unchanged. */
    {"gi_ps", 4, 4, 24, 100, 1, 1, 0, 0}, {"gi_ps", 8, 8, 32, 60, 1, 1, 0, 16}, {"gi_ps", 2, 3, 48, 200, 1, 1, 0, 16},
    {"gi_ps", 3, 3, 16, 50, 1, 1, 0, 0},
};
#define N_BCASES (int)(sizeof bcases / sizeof bcases[0])

static float ga[4096], gb[4096], gr[4096], gf[4096], dv[MAX_C];
static int8_t wt_ref[2048], wt_fast[2048];
static int16_t fidx[64], tidx[64];

/* a float with a random 20-bit mantissa, sign and a small exponent spread: sums of products round */
static float rand_f(void) { return ((float)(int32_t)(next() & 0xFFFFF) - 524288.0f) * (1.0f / (float)(1 << (next() % 12u))); }

/* FNV-1a over the bits of n floats (gacc before and after a kernel that compacts it in place) */
static uint32_t bits_hash(const float *v, int32_t n)
{
    uint32_t h = 2166136261u, u;
    for (int32_t j = 0; j < n; j++) {
        memcpy(&u, &v[j], sizeof u);
        h = (h ^ u) * 16777619u;
    }
    return h;
}

static int backward_checks(void)
{
    int failures = 0;
    for (int i = 0; i < N_BCASES; i++) {
        const BCase *c = &bcases[i];
        mt_conv_params p;
        p.in_h = c->h, p.in_w = c->w, p.in_c = c->in_c, p.kh = p.kw = c->k, p.stride = c->stride, p.pad = c->pad;
        p.dilation = 1;
        p.out_h = (c->h + 2 * c->pad - c->k) / c->stride + 1;
        p.out_w = (c->w + 2 * c->pad - c->k) / c->stride + 1;
        p.out_c = c->out_c, p.x_zero = (int32_t)rand_s8(), p.y_zero = 0;
        const int32_t n_out = p.out_h * p.out_w * p.out_c, n_in = p.in_h * p.in_w * p.in_c;
        int32_t n_cmp = 0, diff = 0;
        for (int32_t j = 0; j < 4096; j++) ga[j] = rand_f(), gr[j] = gf[j] = 0.0f;
        for (int32_t j = 0; j < MAX_X && j < 20000; j++) x[j] = rand_s8(), w[j % MAX_W] = rand_s8();
        for (int32_t j = 0; j < MAX_C; j++) eff[j] = rand_f() * (1.0f / 65536.0f), dv[j] = 1.0f + (float)(next() % 100u);
        /* a random split of the input channels into frozen and trained (n_train of them) */
        int32_t n_frozen = 0, n_train = 0;
        for (int32_t ch = 0; ch < p.in_c; ch++) {
            if (n_train < c->n_train && (next() & 1 || p.in_c - ch <= c->n_train - n_train)) tidx[n_train++] = (int16_t)ch;
            else fidx[n_frozen++] = (int16_t)ch;
        }
        if (c->kind[0] == 'g' && c->kind[1] == 'a') { /* masked gradient, in place for the fast kernel */
            for (int32_t j = 0; j < n_out / 8 + 1; j++) m_ref[j] = (uint8_t)next();
            for (int32_t j = 0; j < n_out; j++) gf[j] = ga[j];
            mt_conv_grad_acc_f32_portable(ga, m_ref, eff, n_out, p.out_c, gr);
            mt_conv_grad_acc_f32(gf, m_ref, eff, n_out, p.out_c, gf);
            n_cmp = n_out;
        } else if (c->kind[3] == 'd') { /* depthwise: one whole (frozen) weight block */
            mt_weight_s8 wv = {w, NULL, p.in_c, NULL, NULL, 0};
            mt_conv_grad_input_depthwise_f32_portable(&p, ga, &wv, gr);
            mt_conv_grad_input_depthwise_f32(&p, ga, &wv, gf);
            n_cmp = n_in;
        } else if (c->kind[0] == 'a') { /* added to gx: both start from the same random sums */
            mt_weight_s8 wv = {w, n_train ? fidx : NULL, n_frozen, (int8_t *)w + 4096, n_train ? tidx : NULL, n_train};
            for (int32_t j = 0; j < n_in; j++) gr[j] = gf[j] = rand_f();
            mt_conv_grad_input_pointwise_acc_f32_portable(&p, ga, &wv, gr);
            mt_conv_grad_input_pointwise_acc_f32(&p, ga, &wv, gf);
            n_cmp = n_in;
        } else if (c->kind[3] == 'p') { /* pointwise input gradient, the weight split when n_train > 0 */
            mt_weight_s8 wv = {w, n_train ? fidx : NULL, n_frozen, (int8_t *)w + 4096, n_train ? tidx : NULL, n_train};
            const int32_t n_pix = p.out_h * p.out_w;
            for (int32_t o = 0; c->kind[4] != 'w' && o < p.out_c; o++) /* dead channels and decoys */
                for (int32_t q = 0; q < n_pix; q++) {
                    float *v = &ga[q * p.out_c + o];
                    if (c->kind[4] == 's') { /* sparse pairs */
                        const uint32_t r = next() % 20u;
                        if (q / 2 == 1 || (q / 2 % 4 != 3 && r < 17) || r == 0) *v = 0.0f;
                        else if (r == 19 && o % 7 == 3) *v = -0.0f;
                    } else if (c->kind[4] == 'z' || o % 5 == 0 || o % 5 == 2) *v = 0.0f;
                    else if (o % 5 == 3 && q + 1 < n_pix) *v = 0.0f;
                    else if (o % 10 == 4) *v = -0.0f;
                }
            const uint32_t before = bits_hash(ga, n_out);
            mt_conv_grad_input_pointwise_f32_portable(&p, ga, &wv, gr);
            mt_conv_grad_input_pointwise_f32(&p, ga, &wv, gf);
            diff += bits_hash(ga, n_out) != before; /* gacc restored */
            n_cmp = n_in;
        } else { /* fused weight update: saved whole input (odd cases) or the trained channels only */
            const int32_t x_c = (i & 1) ? p.in_c : n_train;
            mt_update_params u = {dv, 7u, (int32_t)(i & 1), p.in_c, (int32_t)(i % 3)}; /* row0: a group's rows */
            mt_train_ctx ctx = {0.05f, 1234u, (uint32_t)i, 0u};
            for (int32_t j = 0; j < p.out_c * n_train; j++) wt_ref[j] = wt_fast[j] = rand_s8();
            mt_weight_s8 wr = {w, fidx, n_frozen, wt_ref, tidx, n_train};
            mt_weight_s8 wf = {w, fidx, n_frozen, wt_fast, tidx, n_train};
            for (int32_t j = 0; j < n_out; j++) ga[j] *= 1.0f / 4096.0f; /* updates of a few steps, not all clamped */
            mt_conv_weight_update_pointwise_f32_portable(&p, x, x_c, ga, &wr, &u, &ctx);
            mt_conv_weight_update_pointwise_f32(&p, x, x_c, ga, &wf, &u, &ctx);
            for (int32_t j = 0; j < p.out_c * n_train; j++) diff += wt_ref[j] != wt_fast[j];
        }
        for (int32_t j = 0; j < n_cmp; j++) diff += memcmp(&gr[j], &gf[j], sizeof(float)) != 0;
        failures += diff != 0;
        mt_printf("bcase %d %s in=%dx%dx%d out_c=%d k=%d s=%d differ=%d\n", i, c->kind, (int)c->h, (int)c->w,
                  (int)c->in_c, (int)c->out_c, (int)c->k, (int)c->stride, (int)diff);
    }
    /* fused bias update: both roundings, steps of a few units, and huge ones (lr 1e9: past the fast path's 2^30
     * and saturating) on biases next to the int32 bounds */
    static int32_t b_ref[MAX_C], b_fast[MAX_C];
    for (int k = 0; k < 5; k++) { /* the last with an infinite learning rate: inf * 0 is NaN, not a skip */
        const int32_t hw = 9 + k, c = 37 + 8 * k;
        mt_update_params u = {dv, 11u, k & 1, 0, 3 * k};
        mt_train_ctx ctx = {k < 2 ? 0.05f : k < 4 ? 1e9f : __builtin_inff(), 99u, (uint32_t)k, 0u};
        for (int32_t j = 0; j < hw * c; j++) /* dead channels (sums of +0.0, skipped by the fast kernel) too */
            ga[j] = j % c % 5 == 1 ? 0.0f : rand_f() * (1.0f / 1024.0f);
        for (int32_t j = 6; j < c; j += 13) dv[j] = 0.0f; /* 0 / 0: a NaN step, not skipped */
        for (int32_t j = 0; j < c; j++) {
            const int32_t r = (int32_t)next();
            b_ref[j] = b_fast[j] = j % 3 == 0 ? INT32_MAX - (r & 7) : j % 3 == 1 ? INT32_MIN + (r & 7) : r / 256;
        }
        mt_bias_update_f32_portable(ga, hw, c, b_ref, &u, &ctx);
        mt_bias_update_f32(ga, hw, c, b_fast, &u, &ctx);
        int32_t diff = 0;
        for (int32_t j = 0; j < c; j++) diff += b_ref[j] != b_fast[j];
        failures += diff != 0;
        mt_printf("bcase %d bias in=%dx%d out_c=%d k=1 s=1 differ=%d\n", N_BCASES + k, (int)hw, (int)c, (int)c,
                  (int)diff);
    }
    /* a residual add's input gradient, in place for the fast kernel: a whole number of mask bytes and not */
    for (int k = 0; k < 2; k++) {
        const int32_t n = k ? 1000 : 1536 + 5;
        for (int32_t j = 0; j < n; j++) ga[j] = gf[j] = rand_f();
        for (int32_t j = 0; j < n / 8 + 1; j++) m_ref[j] = (uint8_t)next();
        mt_add_grad_f32_portable(ga, m_ref, 0.7f, n, gr);
        mt_add_grad_f32(gf, m_ref, 0.7f, n, gf);
        int32_t diff = 0;
        for (int32_t j = 0; j < n; j++) diff += memcmp(&gr[j], &gf[j], sizeof(float)) != 0;
        failures += diff != 0;
        mt_printf("bcase %d addg in=%d out_c=1 k=1 s=1 differ=%d\n", N_BCASES + 5 + k, (int)n, (int)diff);
    }
    /* the sum of two gradients, in place over the first and over the second: a whole number of blocks and not */
    for (int k = 0; k < 2; k++) {
        const int32_t n = k ? 1024 : 1021;
        float *const a = ga, *const b = ga + 2048;
        for (int32_t j = 0; j < n; j++) a[j] = rand_f(), b[j] = rand_f(), gf[j] = k ? b[j] : a[j];
        mt_grad_sum_f32_portable(a, b, n, gr);
        if (k) mt_grad_sum_f32(a, gf, n, gf);
        else mt_grad_sum_f32(gf, b, n, gf);
        int32_t diff = 0;
        for (int32_t j = 0; j < n; j++) diff += memcmp(&gr[j], &gf[j], sizeof(float)) != 0;
        failures += diff != 0;
        mt_printf("bcase %d gsum in=%d out_c=1 k=1 s=1 differ=%d\n", N_BCASES + 7 + k, (int)n, (int)diff);
    }
    /* a global average pool's input gradient: channels a multiple of 8 and not, and gy over gx's first row */
    for (int k = 0; k < 3; k++) {
        const int32_t hw = k ? 16 : 9, c = k == 1 ? 37 : 160, n = hw * c;
        for (int32_t j = 0; j < c; j++) ga[j] = rand_f();
        for (int32_t j = 0; j < n; j++) gr[j] = gf[j] = rand_f();
        const float *gy = ga;
        if (k == 2)
            for (int32_t j = 0; j < c; j++) gf[j] = ga[j], gy = gf;
        mt_pool_grad_f32_portable(ga, hw, c, gr);
        mt_pool_grad_f32(gy, hw, c, gf);
        int32_t diff = 0;
        for (int32_t j = 0; j < n; j++) diff += memcmp(&gr[j], &gf[j], sizeof(float)) != 0;
        failures += diff != 0;
        mt_printf("bcase %d pool in=%dx%d out_c=%d k=1 s=1 differ=%d\n", N_BCASES + 9 + k, (int)hw, (int)c, (int)c,
                  (int)diff);
    }
    return failures;
}
#endif

/* The residual add (mt_add_s8, Cortex-M twin in the SIMD build) against its portable twin: outputs and clamp
 * bits with and without a mask, in place over the skip input; scales: typical, saturating most elements, output
 * scale 0 (the fallback). Prints one "add" line per case; returns the number that differ. */
static int add_checks(void)
{
    static const float scales[][3] = {{0.02f, 0.03f, 0.04f}, {0.5f, 0.7f, 0.01f}, {0.02f, 0.03f, 0.0f}};
    int failures = 0;
    for (int k = 0; k < 3; k++) {
        mt_add_params a = {.size = 999 + k, .z1 = (int32_t)rand_s8(), .z2 = -128, .zy = (int32_t)rand_s8() / 2,
                           .s1 = scales[k][0], .s2 = scales[k][1], .sy = scales[k][2]};
        for (int32_t j = 0; j < a.size; j++) x[j] = rand_s8(), w[j] = rand_s8();
        int32_t differ = 0, mask_differ = 0;
        for (int masked = 0; masked < 2; masked++) {
            memset(m_ref, 0xAA, sizeof m_ref);
            memset(m_simd, 0x55, sizeof m_simd);
            mt_add_s8_portable(&a, x, w, y_ref, masked ? m_ref : NULL);
            mt_add_s8(&a, x, w, y_simd, masked ? m_simd : NULL);
            for (int32_t j = 0; j < a.size; j++) {
                const int b = 1 << (j & 7);
                differ += y_ref[j] != y_simd[j];
                mask_differ += masked && (m_ref[j >> 3] & b) != (m_simd[j >> 3] & b);
            }
            memcpy(y_nomask, x, (size_t)a.size); /* in place over the skip input */
            memset(m_simd, 0x33, sizeof m_simd);
            mt_add_s8(&a, y_nomask, w, y_nomask, masked ? m_simd : NULL);
            for (int32_t j = 0; j < a.size; j++) {
                const int b = 1 << (j & 7);
                differ += y_ref[j] != y_nomask[j];
                mask_differ += masked && (m_ref[j >> 3] & b) != (m_simd[j >> 3] & b);
            }
        }
        failures += differ || mask_differ;
        mt_printf("add %d n=%d differ=%d mask_differ=%d\n", k, (int)a.size, (int)differ, (int)mask_differ);
    }
    return failures;
}

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
        p.dilation = 1;
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
        const int fold_mode = i >= FIRST_FOLD_CASE ? (i - FIRST_FOLD_CASE) % 3 : -1;
        if (fold_mode < 0 && p.out_c > 2) bias[1] = INT32_MIN; /* a dead channel: must saturate, not overflow */
        if (fold_mode == 1) /* |bias| near 2^24 (up to exactly 2^24), outputs still inside the int8 range */
            for (int32_t o = 0; o < p.out_c; o++) {
                bias[o] = ((o & 1) ? -1 : 1) * ((1 << 24) - (int32_t)(next() % 3u));
                eff[o] = (float)(1000 + (int32_t)(next() % 1000u)) / (float)(1 << 28);
            }
        if (fold_mode == 2) bias[0] = (1 << 24) + 1; /* too big to fold: the unfolded path */
        if (i == MANY_DEAD_CASE)
            for (int32_t o = 1; o < p.out_c; o += 2) bias[o] = INT32_MIN;
        if (fold_mode == 0 || fold_mode == 2) /* odd channels clamp at some pixels only: mixed clamp bits */
            for (int32_t o = 1; o < p.out_c; o += 2) eff[o] *= 32.0f;
        if (i == 1 || i == 5) eff[0] = __builtin_inff(); /* a degenerate multiplier: the fallback path */
        if (i >= WIDE_EFF_CASE && i < FIRST_MASKED_WTAB_CASE) eff[2] = 4.0f; /* |rint(t)| up to about 2^20 */
        if (split) /* a pseudo-random partition of the input channels into frozen and trained */
            for (int32_t ch = 0; ch < p.in_c; ch++) {
                int trained = i >= FIRST_GROUPED_SPLIT && i < SCATTERED_WTAB_SPLIT ? (ch / 4) % 3 == 1 : (int)(next() & 1);
                if (trained) train_idx[n_train++] = (int16_t)ch;
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
            mt_mark(NOMASK_REGION + 2 * i + pass); /* portable, SIMD without a mask */
            if (depthwise) (pass ? mt_conv_depthwise_s8 : mt_conv_depthwise_s8_portable)(&p, x, w, bias, eff, y_nomask, NULL);
            else if (dense) (pass ? mt_conv_s8 : mt_conv_s8_portable)(&p, x, w, bias, eff, y_nomask, NULL);
            else if (split)
                (pass ? mt_conv_pointwise_split_s8 : mt_conv_pointwise_split_s8_portable)(
                    &p, x, w, frozen_idx, n_frozen, w + n_frozen * p.out_c, train_idx, n_train, bias, eff, y_nomask,
                    NULL);
            else (pass ? mt_conv_pointwise_s8 : mt_conv_pointwise_s8_portable)(&p, x, w, bias, eff, y_nomask, NULL);
            mt_mark(0);
            for (int32_t j = 0; j < n_y; j++) nomask_diff += y_ref[j] != y_nomask[j];
        }
        /* depthwise in place (output over a copy of the input, when it fits there), portable and SIMD: the
         * outputs and clamp bits of the depthwise kernel, counted into differ / mask_differ; then without a mask
         * (the SIMD kernel's 3x3 runs, dwi_run3), counted into nomask_differ */
        if (depthwise && p.out_h * p.out_w <= p.in_h * p.in_w && p.in_h * p.in_w <= (int32_t)sizeof plane)
            for (int pass = 0; pass < 4; pass++) {
                memcpy(y_nomask, x, (size_t)n_x);
                memset(m_simd, 0x55, sizeof m_simd);
                ((pass & 1) ? mt_conv_depthwise_inplace_s8 : mt_conv_depthwise_inplace_s8_portable)(
                    &p, y_nomask, w, bias, eff, y_nomask, pass < 2 ? m_simd : NULL, plane);
                for (int32_t j = 0; j < n_y; j++) {
                    int b = 1 << (j & 7);
                    if (pass >= 2) {
                        nomask_diff += y_ref[j] != y_nomask[j];
                        continue;
                    }
                    diff += y_ref[j] != y_nomask[j];
                    mask_diff += (m_ref[j >> 3] & b) != (m_simd[j >> 3] & b);
                }
            }
        failures += (diff || mask_diff || nomask_diff);
        mt_printf("case %d %s in=%dx%dx%d out_c=%d k=%d s=%d outputs=%d saturated=%d differ=%d mask_differ=%d "
                  "nomask_differ=%d\n", i, c->kind, (int)c->h, (int)c->w, (int)c->in_c, (int)c->out_c, (int)c->k,
                  (int)c->stride, (int)n_y, (int)saturated, (int)diff, (int)mask_diff, (int)nomask_diff);
    }
    failures += add_checks();
#ifdef MT_CHECK_BACKWARD
    failures += backward_checks();
#endif
    return failures;
}

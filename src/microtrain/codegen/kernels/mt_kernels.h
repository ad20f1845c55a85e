/* mt_kernels.h: portable C99 reference kernels of microtrain (forward int8, backward float32).
 *
 * Conventions (CMSIS-NN style: one function per op and shape family, explicit s8/s32/f32 names):
 * - activations are NHWC for one sample (batch 1), int8 with a per-tensor zero point;
 * - weight layouts are chosen by the code generator for the kernel's inner loop:
 *     mt_conv_s8            (O, kh, kw, I)   dense conv, groups = 1, any kernel/stride/padding/dilation
 *     mt_conv_pointwise_s8  (O, I)           1x1 conv, padding 0, any stride
 *     mt_conv_depthwise_s8  (kh, kw, C)      depthwise conv, groups = C = O
 * - bias is int32, eff[o] the float32 requantisation multiplier (quant/arith.conv_multipliers);
 * - `mask` (may be NULL) receives one bit per output element, bit i of the NHWC flat index i
 *   (mask[i >> 3] >> (i & 7) & 1): 1 where the output was not clamped (training needs it);
 * - no kernel allocates, fails, or calls the C library; all sizes are in the params structs.
 * Arithmetic follows mt_arith.h exactly (bit-identical to the NumPy runtime).
 */
#ifndef MT_KERNELS_H
#define MT_KERNELS_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    int32_t in_h, in_w, in_c;    /* input tensor (H, W, C) */
    int32_t out_h, out_w, out_c; /* output tensor (H, W, C) */
    int32_t kh, kw, stride, pad; /* pad = zeros (real value 0) on each side */
    int32_t x_zero, y_zero;      /* zero points of input and output */
    int32_t dilation;            /* taps of a window are `dilation` inputs apart on both axes (1: dense window) */
} mt_conv_params;

typedef struct {
    int32_t size;     /* elements (H * W * C) */
    int32_t z1, z2, zy; /* zero points: skip input, main input, output */
    float s1, s2, sy;   /* scales: skip input, main input, output */
} mt_add_params;

typedef struct {
    int32_t in_h, in_w, c;
} mt_pool_params;

/* ---- rounding mode "tflite" (mt_forward_tfl_s8.c; graphs imported from .tflite) -------------------- */
#define MT_TFL_ADD_LEFT_SHIFT 20
typedef struct {
    const int32_t *mult, *shift; /* per output channel: QuantizeMultiplier(x_scale * w_scale / y_scale) */
    int32_t single;              /* 1: single rounding (FULLY_CONNECTED), 0: double rounding */
    int32_t lo, hi;              /* fused activation clamp */
} mt_requant_tfl;

typedef struct {
    int32_t size, z1, z2, zy, m1, e1, m2, e2, mo, eo, lo, hi;
} mt_add_tfl_params;

typedef struct {
    int32_t in_h, in_w, c, out_h, out_w, kh, kw, stride, pad_top, pad_left, lo, hi;
} mt_avg_pool_params;

typedef struct {
    int32_t in_h, in_w, c, top, bottom, left, right, value;
} mt_pad_params;

struct mt_weight_s8_;
/* Convs read their weight through an mt_weight_s8 view (frozen + trained blocks, defined below) in the
 * layout `layout`: MT_TFL_OHWI (dense, pointwise, grouped: (O, kh, kw, n) per block, n = the block's
 * channels of I/groups) or MT_TFL_HWC (depthwise, multiplier 1: (kh, kw, n) per block). mask: NULL, or
 * 1 bit per output, 1 where the output was not clamped (as mt_forward_s8.c's kernels). */
#define MT_TFL_OHWI 0
#define MT_TFL_HWC 1
void mt_conv_tfl_s8(const mt_conv_params *p, int32_t groups, int32_t layout, const int8_t *x,
                    const struct mt_weight_s8_ *w, const int32_t *bias, const mt_requant_tfl *rq, int8_t *y,
                    uint8_t *mask);
void mt_add_tfl_s8(const mt_add_tfl_params *p, const int8_t *a, const int8_t *b, int8_t *y, uint8_t *mask);
void mt_avg_pool_tfl_s8(const mt_avg_pool_params *p, const int8_t *x, int8_t *y);
void mt_pad_s8(const mt_pad_params *p, const int8_t *x, int8_t *y);
/* their gradients (mt_backward_pad_pool_f32.c) */
void mt_pad_grad_f32(const float *gy, int32_t in_h, int32_t in_w, int32_t c, int32_t top, int32_t left,
                     int32_t out_w, float *gx);
void mt_avg_pool_grad_f32(const mt_avg_pool_params *p, const float *gy, float *gx);

/* ---- forward, int8 --------------------------------------------------------------------------- */
void mt_conv_s8(const mt_conv_params *p, const int8_t *x, const int8_t *w, const int32_t *bias,
                const float *eff, int8_t *y, uint8_t *mask);
void mt_conv_pointwise_s8(const mt_conv_params *p, const int8_t *x, const int8_t *w, const int32_t *bias,
                          const float *eff, int8_t *y, uint8_t *mask);
void mt_conv_depthwise_s8(const mt_conv_params *p, const int8_t *x, const int8_t *w, const int32_t *bias,
                          const float *eff, int8_t *y, uint8_t *mask);
/* Pointwise conv whose weight is split by INPUT channel: w_frozen (O, n_frozen) holds the channels
 * listed in frozen_idx, w_train (O, n_train) those in train_idx (sparse update: the trained slice
 * lives in SRAM, the rest in flash). The integer accumulator is the same as with the whole weight. */
void mt_conv_pointwise_split_s8(const mt_conv_params *p, const int8_t *x, const int8_t *w_frozen,
                                const int16_t *frozen_idx, int32_t n_frozen, const int8_t *w_train,
                                const int16_t *train_idx, int32_t n_train, const int32_t *bias,
                                const float *eff, int8_t *y, uint8_t *mask);
/* Dense conv with the same split: w_frozen (O, kh, kw, n_frozen), w_train (O, kh, kw, n_train). */
void mt_conv_split_s8(const mt_conv_params *p, const int8_t *x, const int8_t *w_frozen,
                      const int16_t *frozen_idx, int32_t n_frozen, const int8_t *w_train,
                      const int16_t *train_idx, int32_t n_train, const int32_t *bias, const float *eff,
                      int8_t *y, uint8_t *mask);
/* Depthwise conv over its own input (y == x allowed; the planner aliases them where the input dies and the
 * arena peak drops): one channel at a time through `plane` (in_h * in_w bytes of scratch). */
void mt_conv_depthwise_inplace_s8(const mt_conv_params *p, const int8_t *x, const int8_t *w, const int32_t *bias,
                                  const float *eff, int8_t *y, uint8_t *mask, int8_t *plane);
/* Depthwise conv whose channels come from two weight blocks: w_frozen (kh, kw, n_frozen) for the
 * channels in frozen_idx, w_train (kh, kw, n_train) for those in train_idx. */
void mt_conv_depthwise_split_s8(const mt_conv_params *p, const int8_t *x, const int8_t *w_frozen,
                                const int16_t *frozen_idx, int32_t n_frozen, const int8_t *w_train,
                                const int16_t *train_idx, int32_t n_train, const int32_t *bias,
                                const float *eff, int8_t *y, uint8_t *mask);
void mt_add_s8(const mt_add_params *p, const int8_t *skip, const int8_t *main_in, int8_t *y, uint8_t *mask);
void mt_global_avg_pool_s8(const mt_pool_params *p, const int8_t *x, int8_t *y);
void mt_copy_s8(const int8_t *src, int8_t *dst, int32_t n);
/* Patch-based execution (mt_tile_s8.c): dst (dst_h, dst_w, c) = the window of src (src_h, src_w, c) whose
 * top-left corner is (r0, c0) (may be negative), `fill` outside src; mt_paste_s8 writes a tile (h, w, c)
 * into a tensor of width dst_w at (r0, c0). */
void mt_window_s8(const int8_t *src, int32_t src_h, int32_t src_w, int32_t c, int32_t r0, int32_t c0,
                  int8_t *dst, int32_t dst_h, int32_t dst_w, int32_t fill);
void mt_paste_s8(const int8_t *src, int32_t h, int32_t w, int32_t c, int8_t *dst, int32_t dst_w, int32_t r0,
                 int32_t c0);

/* ---- backward (float32) and SGD update; docs/training-semantics.md ---------------------------- */
/* A conv weight as stored for training: the frozen input channels (flash) and the trained ones
 * (SRAM, updated in place), each block in the family's layout with its own channel count in the
 * last axis. frozen_idx/train_idx list the input channels of each block (NULL: 0, 1, 2, ...).
 * A frozen conv has n_train = 0; a fully trained one n_frozen = 0. */
typedef struct mt_weight_s8_ {
    const int8_t *frozen;
    const int16_t *frozen_idx;
    int32_t n_frozen;
    int8_t *train;
    const int16_t *train_idx;
    int32_t n_train;
} mt_weight_s8;

/* Per-parameter update constants: QAS divisor per output channel, the hash id, the rounding mode
 * (MT_ROUND_NEAREST | MT_ROUND_STOCHASTIC), and the input-channel count of the FULL weight tensor
 * (O, I/groups, kh, kw) so the stochastic-rounding hash sees the element's full flat index. row0: the
 * output channel the call's first row is (0, or a channel group's first channel in
 * mt_block_grad_grouped_f32; divisor then points at that channel's divisor). */
typedef struct {
    const float *divisor;
    uint32_t param_id;
    int32_t rounding;
    int32_t full_in;
    int32_t row0;
} mt_update_params;

/* Mutable training state: learning rate, rounding seed, global update counter, and the divergence
 * guard's count of skipped (non-finite loss) steps. Kernels read only lr, seed and step. */
typedef struct {
    float lr;
    uint32_t seed;
    uint32_t step;
    uint32_t guard_skips;
} mt_train_ctx;

/* loss = softmax cross-entropy of real logits (q - zero) * scale at `label`;
 * grad[k] = (p[k] - onehot[k]) * scale (d loss / d q, batch 1). grad also serves as scratch. */
void mt_loss_softmax_ce_s8(const int8_t *logits, int32_t k, int32_t zero, float scale, int32_t label,
                           float *loss, float *grad);
/* g = mask ? gy * eff[c] : 0 over an (n / c, c) tensor; g may alias gy (in place). */
void mt_conv_grad_acc_f32(const float *gy, const uint8_t *mask, const float *eff, int32_t n, int32_t c, float *g);
/* Transposed convs: gx (in_h, in_w, in_c) = d loss / d x from gacc (out_h, out_w, out_c). */
void mt_conv_grad_input_pointwise_f32(const mt_conv_params *p, const float *gacc, const mt_weight_s8 *w, float *gx);
void mt_conv_grad_input_depthwise_f32(const mt_conv_params *p, const float *gacc, const mt_weight_s8 *w, float *gx);
void mt_conv_grad_input_f32(const mt_conv_params *p, const float *gacc, const mt_weight_s8 *w, float *gx);
/* The int16 backward's pointwise input gradient (mt_backward_i16.c; docs/training-semantics.md section 4b); codes:
 * scratch of mt_i16_codes_bytes(out_h * out_w, out_c) bytes (mt_i16.h). */
void mt_conv_grad_input_pointwise_i16(const mt_conv_params *p, const float *gacc, const mt_weight_s8 *w, int16_t *codes,
                                      float *gx);
/* gx += the pointwise input gradient (stride 1): each sum goes on from gx, so calls over consecutive blocks of
 * output channels make the same additions as one call over all of them. */
void mt_conv_grad_input_pointwise_acc_f32(const mt_conv_params *p, const float *gacc, const mt_weight_s8 *w,
                                          float *gx);
/* The depthwise one in place (gx over gacc, any stride), `group` (1..8) channels at a time through `plane`:
 * group * (out_h * out_w + kh * kw) floats of scratch (the channels' gacc values and their taps). */
void mt_conv_grad_input_depthwise_inplace_f32(const mt_conv_params *p, const float *gacc, const mt_weight_s8 *w,
                                              float *gx, float *plane, int32_t group);
/* Fused weight gradient + SGD update of the trained slice w->train: each gradient element is
 * computed and applied at once, no weight-gradient tensor exists. x is the saved input with x_c
 * channels: either the trained channels only (x_c == w->n_train, channel j = trained channel j)
 * or the whole input (channel train_idx[j]). */
void mt_conv_weight_update_pointwise_f32(const mt_conv_params *p, const int8_t *x, int32_t x_c, const float *gacc,
                                         const mt_weight_s8 *w, const mt_update_params *u, const mt_train_ctx *ctx);
void mt_conv_weight_update_depthwise_f32(const mt_conv_params *p, const int8_t *x, int32_t x_c, const float *gacc,
                                         const mt_weight_s8 *w, const mt_update_params *u, const mt_train_ctx *ctx);
void mt_conv_weight_update_f32(const mt_conv_params *p, const int8_t *x, int32_t x_c, const float *gacc,
                               const mt_weight_s8 *w, const mt_update_params *u, const mt_train_ctx *ctx);
/* Fused bias gradient (sum over positions of gacc) + SGD update of an int32 bias. */
void mt_bias_update_f32(const float *gacc, int32_t hw, int32_t c, int32_t *bias, const mt_update_params *u,
                        const mt_train_ctx *ctx);
/* The backward of an inverted-residual block (pointwise q <- depthwise d <- pointwise p, read backward) by
 * groups of `group` expanded channels (kernels/mt_backward_grouped_f32.c), so the expanded gradients exist only
 * `group` channels wide (gd: d's output positions x group floats, gp: p's output positions x group): per group,
 * q's input gradient, d's clamp mask, bias update and input gradient, p's clamp mask, bias update, input
 * gradient (its sum over channels continued group after group, ascending, like one whole call) and weight
 * update (of the group's rows, after their use above). Every float is computed by the same operations in the
 * same order as by the ungrouped kernels. q's and d's frozen weights come regrouped (wq_groups: for each group
 * its (q's out_c, k) columns; wd_groups: its (kh, kw, k) taps). bias_d / bias_p / uw_p / gx may be NULL. */
void mt_block_grad_grouped_f32(const mt_conv_params *pq, const float *gq, const int8_t *wq_groups,
                               const mt_conv_params *pd, const uint8_t *mask_d, const float *eff_d, int32_t *bias_d,
                               const mt_update_params *ub_d, const int8_t *wd_groups, const mt_conv_params *pp,
                               const uint8_t *mask_p, const float *eff_p, int32_t *bias_p,
                               const mt_update_params *ub_p, const int8_t *x, int32_t x_c, const mt_weight_s8 *wp,
                               const mt_update_params *uw_p, const mt_train_ctx *ctx, int32_t group, float *gd,
                               float *gp, float *gx);
/* Residual add: g = mask ? gy * scale : 0 (one addend); g may alias gy. */
void mt_add_grad_f32(const float *gy, const uint8_t *mask, float scale, int32_t n, float *g);
/* Global average pool: gx[h, w, c] = gy[c] / (hw). */
void mt_pool_grad_f32(const float *gy, int32_t hw, int32_t c, float *gx);
/* out = a + b (elementwise, float32); out may alias a or b. */
void mt_grad_sum_f32(const float *a, const float *b, int32_t n, float *out);
/* Keep the listed channels of an int8 (n / c, c) tensor: out (n / c, k). */
void mt_slice_channels_s8(const int8_t *x, int32_t n, int32_t c, const int16_t *idx, int32_t k, int8_t *out);

/* ---- stack scratch (CMSIS-NN's *_get_buffer_size): the bytes of work arrays a kernel keeps on its stack,
 * its deepest helper's included, for these portable kernels; kernels not listed keep none. The Python
 * twin (ops/conv.py: KERNEL_SCRATCH) feeds the planner, which refuses a program whose largest scratch
 * exceeds budget.KERNEL_SCRATCH_MAX; a host test compares the two on every kernel call of the shipped
 * models. The Cortex-M SIMD variants (kernels/arm) have no query yet. */
int32_t mt_conv_s8_scratch_bytes(const mt_conv_params *p);
int32_t mt_conv_pointwise_s8_scratch_bytes(const mt_conv_params *p);
int32_t mt_block_grad_grouped_f32_scratch_bytes(const mt_conv_params *pd);
int32_t mt_conv_pointwise_split_s8_scratch_bytes(const mt_conv_params *p);
int32_t mt_conv_depthwise_s8_scratch_bytes(const mt_conv_params *p);
int32_t mt_conv_depthwise_inplace_s8_scratch_bytes(const mt_conv_params *p);
/* ---- 1-D maps (H = 1, W = time), kernels/mt_1d.c: zero padding of the time axis (ops/pad1d.py), max pool ---- */
typedef struct {
    int32_t in_h, in_w, c;    /* input (H, W, C); output (H, left + W + right, C) */
    int32_t left, right, zero; /* pad lengths; zero = the input's zero point (real 0) */
} mt_pad1d_params;
void mt_pad1d_s8(const mt_pad1d_params *p, const int8_t *x, int8_t *y);
/* gx = gy[:, left : left + W, :] */
void mt_pad1d_grad_f32(const mt_pad1d_params *p, const float *gy, float *gx);
typedef struct {
    int32_t in_h, in_w, c, k, stride, out_w; /* window k along W, no padding (ops/maxpool1d.py) */
} mt_max_pool1d_params;
void mt_max_pool1d_s8(const mt_max_pool1d_params *p, const int8_t *x, int8_t *y);
/* gx = 0, then each gy goes to the first maximum of its window in x (overlapping windows add) */
void mt_max_pool1d_grad_f32(const mt_max_pool1d_params *p, const float *gy, const int8_t *x, float *gx);

int32_t mt_conv_grad_input_pointwise_f32_scratch_bytes(const mt_conv_params *p);
int32_t mt_conv_grad_input_pointwise_i16_scratch_bytes(const mt_conv_params *p);
int32_t mt_conv_grad_input_depthwise_f32_scratch_bytes(const mt_conv_params *p);
int32_t mt_conv_grad_input_depthwise_inplace_f32_scratch_bytes(const mt_conv_params *p);
int32_t mt_conv_weight_update_pointwise_f32_scratch_bytes(const mt_conv_params *p);

#endif /* MT_KERNELS_H */

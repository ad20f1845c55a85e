/* The host simulation's depthwise backward in C, adding the same float32 numbers in the same order as the
 * NumPy code it replaces (ops/conv.py), so results stay bit-identical (ops/sim_native.py checks it at load).
 * Built with -ffp-contract=off and without -ffast-math: every product is rounded before its add, as NumPy's
 * separate multiply and add, and no sum is reordered. Loops may be nested differently from NumPy's as long as
 * each output element sees its additions in the same order. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define MT_INT_REQUANT 0 /* the float spelling of the requantisation: the one the host runtimes use */
#include "../codegen/kernels/mt_arith.h"
#include "../codegen/kernels/mt_update.h"

/* gx (n, h, w, c), zeros on entry, the input gradient with the padding p cropped:
 * gx[:, i*d + s*y - p, j*d + s*x - p, :] += g[:, y, x, :] * w[:, i, j], taps in (i, j) order, positions in the
 * padding skipped (conv.depthwise_grad_input on the padded buffer: per tap, tmp = g * w rounded, then
 * gxp += tmp; the crop keeps the same sums). p = 0: the padded buffer itself. w: (c, kh, kw). */
void mt_sim_dw_grad_input(const float *g, int n, int ho, int wo, int c, const float *w, int kh, int kw,
                          float *gx, int h, int wx, int s, int d, int p, float *wtap /* c floats of scratch */) {
    for (int i = 0; i < kh; i++) {
        for (int j = 0; j < kw; j++) {
            for (int k = 0; k < c; k++) wtap[k] = w[((size_t)k * kh + i) * kw + j];
            for (int b = 0; b < n; b++) {
                for (int y = 0; y < ho; y++) {
                    const int iy = i * d + s * y - p;
                    if (iy < 0 || iy >= h) continue;
                    const float *src = g + (((size_t)b * ho + y) * wo) * c;
                    float *dst = gx + (((size_t)b * h + iy) * wx) * c;
                    for (int x = 0; x < wo; x++) {
                        const int ix = j * d + s * x - p;
                        if (ix < 0 || ix >= wx) continue;
                        const float *sr = src + (size_t)x * c;
                        float *dr = dst + (size_t)ix * c;
                        for (int k = 0; k < c; k++) {
                            float prod = sr[k] * wtap[k];
                            dr[k] = dr[k] + prod;
                        }
                    }
                }
            }
        }
    }
}

/* The depthwise window sums of a float graph (conv.depthwise_accumulate): out[:, y, x] = xp-tap(0, 0) * w(0, 0),
 * then + xp-tap(i, j) * w(i, j) for the other taps in (i, j) order, each product rounded before its add.
 * xp: (n, hp, wp, c) padded input; wt: (kh, kw, c); out: (n, ho, wo, c). */
void mt_sim_dw_forward(const float *xp, int n, int hp, int wp, int c, const float *wt, int kh, int kw, int s, int d,
                       float *restrict out, int ho, int wo) {
    for (int b = 0; b < n; b++) {
        for (int y = 0; y < ho; y++) {
            for (int x = 0; x < wo; x++) {
                float *restrict o = out + (((size_t)b * ho + y) * wo + x) * c;
                for (int i = 0; i < kh; i++) {
                    for (int j = 0; j < kw; j++) {
                        const float *restrict xr = xp + (((size_t)b * hp + s * y + i * d) * wp + s * x + j * d) * c;
                        const float *restrict w = wt + ((size_t)i * kw + j) * c;
                        if (i == 0 && j == 0) {
                            for (int k = 0; k < c; k++) o[k] = xr[k] * w[k];
                        } else {
                            for (int k = 0; k < c; k++) {
                                float prod = xr[k] * w[k];
                                o[k] = o[k] + prod;
                            }
                        }
                    }
                }
            }
        }
    }
}

/* out (kh*kw, c): the depthwise weight gradient as NumPy's einsum("nhwc,nhwc->c") sums it per tap
 * (ops/einsum_order.py, conv.depthwise_grad_weight): per channel the (sample, y, x) positions go in pieces
 * (piece_samples[p] whole samples each); within a piece 4 lanes, each 16-position block added a quarter at a
 * time in reverse (positions 12-15, 8-11, 4-7, 0-3 of the block to lanes 0-3), the piece's lanes combined as
 * (l0 + l1) + (l2 + l3) and added to the running total. xp: (n, hp, wp, c) padded shifted input, g: (n, ho,
 * wo, c); ho * wo a multiple of 16 and wo of 4, so a quarter is 4 neighbours of one row: with stride 1 its
 * 4 x c inputs and gradients are both contiguous and one long loop feeds all four lanes.
 * lanes: scratch of kh*kw*4*c floats, laid out (tap, lane, channel). */
void mt_sim_dw_grad_weight(const float *xp, int n, int hp, int wp, const float *g, int ho, int wo, int c, int kh,
                           int kw, int s, const int *piece_samples, int n_pieces, float *restrict out,
                           float *restrict lanes) {
    const int taps = kh * kw, hw = ho * wo, c4 = 4 * c;
    for (int t = 0; t < taps * c; t++) out[t] = 0.0f;
    int s0 = 0;
    for (int pc = 0; pc < n_pieces; pc++) {
        memset(lanes, 0, sizeof(float) * (size_t)taps * c4);
        for (int b = s0; b < s0 + piece_samples[pc]; b++) {
            for (int blk = 0; blk < hw; blk += 16) {
                for (int q = 3; q >= 0; q--) {
                    const int pos = blk + 4 * q, y = pos / wo, x0 = pos % wo;
                    const float *restrict g4 = g + (((size_t)b * ho + y) * wo + x0) * c;
                    for (int i = 0; i < kh; i++) {
                        const float *xrow = xp + (((size_t)b * hp + s * y + i) * wp + s * x0) * c;
                        for (int j = 0; j < kw; j++) {
                            const float *restrict x4 = xrow + (size_t)j * c;
                            float *restrict ln = lanes + (size_t)(i * kw + j) * c4;
                            if (s == 1) {
                                for (int e = 0; e < c4; e++) {
                                    float prod = x4[e] * g4[e];
                                    ln[e] = ln[e] + prod;
                                }
                            } else {
                                for (int l = 0; l < 4; l++) {
                                    const float *restrict xl = x4 + (size_t)l * s * c;
                                    float *restrict lnl = ln + (size_t)l * c;
                                    const float *restrict gl = g4 + (size_t)l * c;
                                    for (int e = 0; e < c; e++) {
                                        float prod = xl[e] * gl[e];
                                        lnl[e] = lnl[e] + prod;
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        for (int t = 0; t < taps; t++) {
            const float *l0 = lanes + (size_t)t * c4;
            for (int e = 0; e < c; e++) {
                float piece = (l0[e] + l0[c + e]) + (l0[2 * c + e] + l0[3 * c + e]);
                out[(size_t)t * c + e] = piece + out[(size_t)t * c + e];
            }
        }
        s0 += piece_samples[pc];
    }
}

/* The int8 conv output and its clamp mask from the exact accumulator, by the C kernels' own requantisation
 * (mt_arith.h, held bit-identical to quant/arith.requantize_conv / conv_preclamp by the tests): acc (rows, c)
 * float32 or float64 holding integers within int32 (the caller checks float64's range; float32 holds exact
 * integers only below 2^24); mask may be NULL. Branch-free loops, so the compiler vectorises them. */
#define MT_SIM_REQUANT_LOOP(ACC_T, WITH_MASK)                                                                 \
    for (long long r = 0; r < rows; r++) {                                                                     \
        const ACC_T *restrict a = (const ACC_T *)acc + (size_t)r * c;                                          \
        int8_t *restrict o = out + (size_t)r * c;                                                              \
        uint8_t *restrict m = WITH_MASK ? mask + (size_t)r * c : NULL;                                          \
        for (int k = 0; k < c; k++) {                                                                          \
            uint8_t in_range; /* a local: the inlined helper's NULL test folds away, the loop vectorises */    \
            o[k] = mt_requant_s8_f32((int32_t)a[k], bias[k], eff[k], y_zero, &in_range);                       \
            if (WITH_MASK) m[k] = in_range;                                                                    \
        }                                                                                                      \
    }

void mt_sim_requant_s8(const void *acc, int acc_f64, long long rows, int c, const int32_t *restrict bias,
                       const float *restrict eff, int y_zero, int8_t *restrict out, uint8_t *restrict mask) {
    if (mask && acc_f64) {
        MT_SIM_REQUANT_LOOP(double, 1)
    } else if (mask) {
        MT_SIM_REQUANT_LOOP(float, 1)
    } else if (acc_f64) {
        MT_SIM_REQUANT_LOOP(double, 0)
    } else {
        MT_SIM_REQUANT_LOOP(float, 0)
    }
}

/* out = mask ? g * scale[k] : +0.0f (common.masked_gradient: one rounded product, then its bits ANDed with
 * all-ones or with zero, the bits of +0.0). */
void mt_sim_masked_grad(const float *restrict g, long long rows, int c, const float *restrict scale,
                        const uint8_t *restrict mask, float *restrict out) {
    for (long long r = 0; r < rows; r++) {
        const float *restrict gr = g + (size_t)r * c;
        const uint8_t *restrict mr = mask + (size_t)r * c;
        float *restrict orow = out + (size_t)r * c;
        for (int k = 0; k < c; k++) {
            float prod = gr[k] * scale[k];
            uint32_t bits;
            memcpy(&bits, &prod, 4);
            bits &= (uint32_t)0 - (uint32_t)(mr[k] != 0);
            memcpy(&orow[k], &bits, 4);
        }
    }
}

/* new = saturate(current + round(delta)) by the C kernels' update (mt_update.h, held bit-identical to
 * quant/update.apply_update by the tests): current int8 (is_s32 0) or int32 (1), n elements; index: each
 * element's flat index in the whole parameter (the stochastic rounding hash's counter). */
void mt_sim_update(const void *current, int is_s32, long long n, const float *restrict delta, int rounding,
                   uint32_t seed, uint32_t step, uint32_t param_id, const uint32_t *restrict index, void *out) {
    const uint32_t key = mt_hash_key(seed, step, param_id);
    if (is_s32) {
        const int32_t *restrict p = (const int32_t *)current;
        int32_t *restrict o = (int32_t *)out;
        for (long long i = 0; i < n; i++) o[i] = mt_update_s32(p[i], delta[i], rounding, key, index[i]);
    } else {
        const int8_t *restrict p = (const int8_t *)current;
        int8_t *restrict o = (int8_t *)out;
        for (long long i = 0; i < n; i++) o[i] = mt_update_s8(p[i], delta[i], rounding, key, index[i]);
    }
}

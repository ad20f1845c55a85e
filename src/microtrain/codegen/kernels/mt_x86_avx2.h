/* mt_x86_avx2.h: AVX2 twins of the portable kernels' inner loops, for host builds whose compiler targets AVX2
 * (-march=native on x86-64). Included by the portable kernel files only under `#if defined(__AVX2__)`; the
 * portable C beside each call stays the fallback and the reference (tests/test_host_fast_kernels.py builds
 * both and compares them byte for byte with NumPy).
 *
 * Same numbers as the portable code by construction: integer sums are exact in any order, and every float
 * operation is mt_arith.h's, lane by lane, in its order (mt_requant8_avx2 is mt_requant_s8 on 8 lanes:
 * minps/maxps with the limit as first operand are exactly the C ternaries `t > L ? L : t`, NaN included).
 */
#ifndef MT_X86_AVX2_H
#define MT_X86_AVX2_H

#include <immintrin.h>
#include <stdint.h>

#include "mt_arith.h"

/* y[k] = mt_requant_s8(acc[k], bias[k], eff[k], y_zero) for the 8 lanes k (bias given as (float)bias);
 * returns the 8 in-range bits (bit k = output k) */
static inline uint32_t mt_requant8v_avx2(__m256i acc, __m256 bias_f, __m256 eff, int32_t y_zero, int8_t *y) {
    const __m256 lim = _mm256_set1_ps(MT_SAT_LIMIT), nlim = _mm256_set1_ps(-MT_SAT_LIMIT);
    const __m256 magic = _mm256_set1_ps(MT_ROUND_MAGIC), hi = _mm256_set1_ps(127.0f), lo = _mm256_set1_ps(-128.0f);
    __m256 t = _mm256_add_ps(_mm256_cvtepi32_ps(acc), bias_f);
    __m256 r;
    __m256i q;
    __m128i q16;
    uint32_t ok;
    t = _mm256_mul_ps(t, eff);
    t = _mm256_min_ps(lim, t);  /* t > L ? L : t */
    t = _mm256_max_ps(nlim, t); /* t < -L ? -L : t */
    r = _mm256_sub_ps(_mm256_add_ps(t, magic), magic);
    r = _mm256_add_ps(r, _mm256_set1_ps((float)y_zero));
    ok = (uint32_t)_mm256_movemask_ps(_mm256_and_ps(_mm256_cmp_ps(r, lo, _CMP_GE_OQ), _mm256_cmp_ps(r, hi, _CMP_LE_OQ)));
    r = _mm256_max_ps(lo, _mm256_min_ps(hi, r));
    q = _mm256_cvttps_epi32(r); /* integral values in [-128, 127]: the C cast's result */
    q16 = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
    _mm_storel_epi64((__m128i *)y, _mm_packs_epi16(q16, q16));
    return ok;
}

/* y[0..8) = mt_requant_s8(acc[k], bias[k], eff[k], y_zero); returns the 8 in-range bits */
static inline uint32_t mt_requant8_avx2(const int32_t *acc, const int32_t *bias, const float *eff, int32_t y_zero,
                                        int8_t *y) {
    return mt_requant8v_avx2(_mm256_loadu_si256((const __m256i *)acc),
                             _mm256_cvtepi32_ps(_mm256_loadu_si256((const __m256i *)bias)), _mm256_loadu_ps(eff), y_zero, y);
}

/* bits base..base+n of the mask := the low n bits of `bits` (n <= 32), a byte at a time */
static inline void mt_mask_put_bits(uint8_t *mask, int32_t base, uint32_t bits, int32_t n) {
    while (n > 0) {
        int32_t sh = base & 7, take = 8 - sh < n ? 8 - sh : n;
        uint32_t m = ((1u << take) - 1u) << sh;
        mask[base >> 3] = (uint8_t)((mask[base >> 3] & ~m) | ((bits << sh) & m));
        bits >>= take;
        base += take;
        n -= take;
    }
}

/* out[k] = sum over i < n of x[i] * w[k * w_stride + i] for k = 0..3, the same exact int32 sums: each x block is
 * widened to int16 once for four weight rows, _mm256_madd_epi16 adds pairs of products (|x * w| <= 2^14),
 * and one horizontal-add tree reduces the four accumulators. */
static inline void mt_dot4_raw_s8(const int8_t *x, const int8_t *w, int32_t w_stride, int32_t n, int32_t *out) {
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0, s;
    __m128i r;
    int32_t i = 0, k;
    for (; i + 16 <= n; i += 16) {
        __m256i xv = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(x + i)));
#define MT_ROW16(k) _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(w + (k) * w_stride + i)))
        a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(xv, MT_ROW16(0)));
        a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(xv, MT_ROW16(1)));
        a2 = _mm256_add_epi32(a2, _mm256_madd_epi16(xv, MT_ROW16(2)));
        a3 = _mm256_add_epi32(a3, _mm256_madd_epi16(xv, MT_ROW16(3)));
#undef MT_ROW16
    }
    s = _mm256_hadd_epi32(_mm256_hadd_epi32(a0, a1), _mm256_hadd_epi32(a2, a3));
    r = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
    _mm_storeu_si128((__m128i *)out, r);
    for (; i < n; i++)
        for (k = 0; k < 4; k++) out[k] += (int32_t)x[i] * (int32_t)w[k * w_stride + i];
}

/* out[k] += the 8 lane sums of a[k], k < 8 (one add tree for eight accumulators) */
static inline void mt_reduce8_avx2(const __m256i *a, int32_t *out) {
    __m256i s0 = _mm256_hadd_epi32(_mm256_hadd_epi32(a[0], a[1]), _mm256_hadd_epi32(a[2], a[3]));
    __m256i s1 = _mm256_hadd_epi32(_mm256_hadd_epi32(a[4], a[5]), _mm256_hadd_epi32(a[6], a[7]));
    __m256i s = _mm256_add_epi32(_mm256_permute2x128_si256(s0, s1, 0x20), _mm256_permute2x128_si256(s0, s1, 0x31));
    _mm256_storeu_si256((__m256i *)out, _mm256_add_epi32(_mm256_loadu_si256((const __m256i *)out), s));
}

/* out[k] += sum over i < n8 of x[i] * w[k * w_stride + i], k < 8, n8 a multiple of 8: weights widened to
 * int16 beforehand (mt_widen_rows_s8), so each x block is widened once for eight rows */
static inline void mt_dot8_s8_w16_avx2(const int8_t *x, const int16_t *w, int32_t w_stride, int32_t n8, int32_t *out) {
    __m256i a[8];
    int32_t i, k;
    for (k = 0; k < 8; k++) a[k] = _mm256_setzero_si256();
    for (i = 0; i + 16 <= n8; i += 16) {
        __m256i xv = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(x + i)));
        for (k = 0; k < 8; k++)
            a[k] = _mm256_add_epi32(a[k], _mm256_madd_epi16(xv, _mm256_loadu_si256((const __m256i *)(w + k * w_stride + i))));
    }
    if (i < n8) { /* a last block of 8 */
        __m128i xv = _mm_cvtepi8_epi16(_mm_loadl_epi64((const __m128i *)(x + i)));
        for (k = 0; k < 8; k++)
            a[k] = _mm256_add_epi32(a[k], _mm256_inserti128_si256(_mm256_setzero_si256(),
                                    _mm_madd_epi16(xv, _mm_loadu_si128((const __m128i *)(w + k * w_stride + i))), 0));
    }
    mt_reduce8_avx2(a, out);
}

/* the same with an int16 x (the dense conv's gathered patch) */
static inline void mt_dot8_s16_w16_avx2(const int16_t *x, const int16_t *w, int32_t w_stride, int32_t n16, int32_t *out) {
    __m256i a[8];
    int32_t i, k;
    for (k = 0; k < 8; k++) a[k] = _mm256_setzero_si256();
    for (i = 0; i < n16; i += 16) {
        __m256i xv = _mm256_loadu_si256((const __m256i *)(x + i));
        for (k = 0; k < 8; k++)
            a[k] = _mm256_add_epi32(a[k], _mm256_madd_epi16(xv, _mm256_loadu_si256((const __m256i *)(w + k * w_stride + i))));
    }
    mt_reduce8_avx2(a, out);
}

/* dst[r * dst_stride + i] = src[r * src_stride + i] widened to int16 for i < n, zero for n <= i < dst_stride */
static inline void mt_widen_rows_s8(const int8_t *src, int32_t src_stride, int32_t n, int32_t rows, int16_t *dst,
                                    int32_t dst_stride) {
    int32_t r, i;
    for (r = 0; r < rows; r++)
        for (i = 0; i < dst_stride; i++) dst[r * dst_stride + i] = (int16_t)(i < n ? src[r * src_stride + i] : 0);
}

/* lo/hi (channels 0-7 / 8-15) += (x[j] - x_zero) * w[j] for 16 depthwise channels: each product is exact in
 * int16 (|x - x_zero| <= 255, |w| <= 128), the sums are int32 */
static inline void mt_dw16_tap_avx2(const int8_t *x, const int8_t *w, __m256i x_zero16, __m256i *lo, __m256i *hi) {
    __m256i xv = _mm256_sub_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)x)), x_zero16);
    __m256i pr = _mm256_mullo_epi16(xv, _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)w)));
    *lo = _mm256_add_epi32(*lo, _mm256_cvtepi16_epi32(_mm256_castsi256_si128(pr)));
    *hi = _mm256_add_epi32(*hi, _mm256_cvtepi16_epi32(_mm256_extracti128_si256(pr, 1)));
}

/* ---- float backward: the portable loops' multiplications and additions, per element in their order ---- */

/* 8 int8 weights as floats */
static inline __m256 mt_s8x8_to_f32(const int8_t *w) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)w)));
}

/* t[j] += g[o] * (float)w[o * w_stride + j] for o = 0, 1, ..., out_c - 1 in turn, j < n (mul then add, each
 * rounded: no FMA), 32 then 8 columns in registers, the last n % 8 scalar */
static inline void mt_pw_grad_in_avx2(const float *g, int32_t out_c, const int8_t *w, int32_t w_stride, int32_t n,
                                      float *t) {
    int32_t j = 0, o;
    for (; j + 32 <= n; j += 32) {
        __m256 a0 = _mm256_loadu_ps(t + j), a1 = _mm256_loadu_ps(t + j + 8), a2 = _mm256_loadu_ps(t + j + 16),
               a3 = _mm256_loadu_ps(t + j + 24);
        for (o = 0; o < out_c; o++) {
            const int8_t *wr = w + o * w_stride + j;
            __m256 go = _mm256_broadcast_ss(g + o);
            a0 = _mm256_add_ps(a0, _mm256_mul_ps(go, mt_s8x8_to_f32(wr)));
            a1 = _mm256_add_ps(a1, _mm256_mul_ps(go, mt_s8x8_to_f32(wr + 8)));
            a2 = _mm256_add_ps(a2, _mm256_mul_ps(go, mt_s8x8_to_f32(wr + 16)));
            a3 = _mm256_add_ps(a3, _mm256_mul_ps(go, mt_s8x8_to_f32(wr + 24)));
        }
        _mm256_storeu_ps(t + j, a0);
        _mm256_storeu_ps(t + j + 8, a1);
        _mm256_storeu_ps(t + j + 16, a2);
        _mm256_storeu_ps(t + j + 24, a3);
    }
    for (; j + 8 <= n; j += 8) {
        __m256 a = _mm256_loadu_ps(t + j);
        for (o = 0; o < out_c; o++)
            a = _mm256_add_ps(a, _mm256_mul_ps(_mm256_broadcast_ss(g + o), mt_s8x8_to_f32(w + o * w_stride + j)));
        _mm256_storeu_ps(t + j, a);
    }
    for (; j < n; j++)
        for (o = 0; o < out_c; o++) t[j] += g[o] * (float)w[o * w_stride + j];
}

/* lanes k < 8 all ones where bit (i + k) of the mask is set (the 8 bits i..i+7 lie inside the mask) */
static inline __m256 mt_mask8_avx2(const uint8_t *mask, int32_t i) {
    const __m256i bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    uint32_t b = mask[i >> 3] | ((i & 7) ? (uint32_t)mask[(i >> 3) + 1] << 8 : 0u);
    __m256i m = _mm256_and_si256(_mm256_set1_epi32((int32_t)(b >> (i & 7))), bit);
    return _mm256_castsi256_ps(_mm256_cmpeq_epi32(m, bit));
}

/* Depthwise taps in pairs for madd: for each 16-channel chunk and tap pair (t, t+1), the int16 weights
 * interleaved as _mm256_unpacklo/hi_epi16(w_t, w_t+1) (a lone last tap paired with zeros) */
static inline void mt_dw_pair_weights_avx2(const int8_t *w, int32_t taps, int32_t out_c, int32_t chunks, int16_t *dst) {
    int32_t ch, t;
    for (ch = 0; ch < chunks; ch++)
        for (t = 0; t < taps; t += 2) {
            __m256i a = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(w + t * out_c + ch * 16)));
            __m256i b = t + 1 < taps ? _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(w + (t + 1) * out_c + ch * 16)))
                                     : _mm256_setzero_si256();
            _mm256_storeu_si256((__m256i *)dst, _mm256_unpacklo_epi16(a, b));
            _mm256_storeu_si256((__m256i *)(dst + 16), _mm256_unpackhi_epi16(a, b));
            dst += 32;
        }
}

/* acc[0..16) = sum over taps of (x[off[t]] - x_zero) * w[t] for 16 channels of a window inside the input, two taps
 * per madd (each product exact in int16, pairs summed in int32); wp from mt_dw_pair_weights_avx2 */
static inline void mt_dw16_pairs_avx2(const int8_t *x, const int32_t *off, int32_t taps, const int16_t *wp,
                                      __m256i x_zero16, int32_t *acc) {
    __m256i a = _mm256_setzero_si256(), b = a;
    int32_t t;
    for (t = 0; t < taps; t += 2, wp += 32) {
        __m256i xa = _mm256_sub_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(x + off[t]))), x_zero16);
        __m256i xb = t + 1 < taps
                         ? _mm256_sub_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(x + off[t + 1]))), x_zero16)
                         : xa; /* its weights are zero */
        a = _mm256_add_epi32(a, _mm256_madd_epi16(_mm256_unpacklo_epi16(xa, xb), _mm256_loadu_si256((const __m256i *)wp)));
        b = _mm256_add_epi32(b, _mm256_madd_epi16(_mm256_unpackhi_epi16(xa, xb), _mm256_loadu_si256((const __m256i *)(wp + 16))));
    }
    /* a holds channels 0-3 and 8-11, b 4-7 and 12-15 (unpack works per 128-bit lane) */
    _mm256_storeu_si256((__m256i *)acc, _mm256_permute2x128_si256(a, b, 0x20));
    _mm256_storeu_si256((__m256i *)(acc + 8), _mm256_permute2x128_si256(a, b, 0x31));
}

/* mt_pw_grad_in_avx2 for two pixels at once (t0 from g0, t1 from g1): each weight block converted once for both */
static inline void mt_pw_grad_in2_avx2(const float *g0, const float *g1, int32_t out_c, const int8_t *w, int32_t w_stride,
                                       int32_t n, float *t0, float *t1) {
    int32_t j = 0, o;
    for (; j + 32 <= n; j += 32) {
        __m256 a[4], b[4];
        int32_t k;
        for (k = 0; k < 4; k++) {
            a[k] = _mm256_loadu_ps(t0 + j + 8 * k);
            b[k] = _mm256_loadu_ps(t1 + j + 8 * k);
        }
        for (o = 0; o < out_c; o++) {
            const int8_t *wr = w + o * w_stride + j;
            __m256 ga = _mm256_broadcast_ss(g0 + o), gb = _mm256_broadcast_ss(g1 + o);
            for (k = 0; k < 4; k++) {
                __m256 wv = mt_s8x8_to_f32(wr + 8 * k);
                a[k] = _mm256_add_ps(a[k], _mm256_mul_ps(ga, wv));
                b[k] = _mm256_add_ps(b[k], _mm256_mul_ps(gb, wv));
            }
        }
        for (k = 0; k < 4; k++) {
            _mm256_storeu_ps(t0 + j + 8 * k, a[k]);
            _mm256_storeu_ps(t1 + j + 8 * k, b[k]);
        }
    }
    for (; j + 8 <= n; j += 8) {
        __m256 a = _mm256_loadu_ps(t0 + j), b = _mm256_loadu_ps(t1 + j);
        for (o = 0; o < out_c; o++) {
            __m256 wv = mt_s8x8_to_f32(w + o * w_stride + j);
            a = _mm256_add_ps(a, _mm256_mul_ps(_mm256_broadcast_ss(g0 + o), wv));
            b = _mm256_add_ps(b, _mm256_mul_ps(_mm256_broadcast_ss(g1 + o), wv));
        }
        _mm256_storeu_ps(t0 + j, a);
        _mm256_storeu_ps(t1 + j, b);
    }
    mt_pw_grad_in_avx2(g0, out_c, w + j, w_stride, n - j, t0 + j); /* the last n % 8 columns */
    mt_pw_grad_in_avx2(g1, out_c, w + j, w_stride, n - j, t1 + j);
}

#endif /* MT_X86_AVX2_H */

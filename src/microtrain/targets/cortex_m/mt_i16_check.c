/* Self-check firmware of the int16 backward (docs/training-semantics.md, section 4b): the Cortex-M SMLAD kernel
 * (codegen/kernels/arm/mt_backward_i16_smlad.c) against its portable twin (mt_backward_i16.c, renamed *_portable
 * by the SIMD build) on pseudo-random cases, and a hash of its output bits that tests/test_backward_int16.py
 * recomputes with the NumPy rule from the same generator (bit-exact vs the host). The float kernel runs on the
 * layer-sized cases too, for the instruction counts (regions 1 + 3i portable int16, 2 + 3i SMLAD, 3 + 3i float).
 * Prints one "icase" line per case; exit status = number of cases whose kernels differ. */
#include <stdint.h>
#include <string.h>

#include "mt_kernels.h"
#include "mt_semihost.h"

void mt_conv_grad_input_pointwise_i16_portable(const mt_conv_params *p, const float *gacc, const mt_weight_s8 *w,
                                               int16_t *codes, float *gx);

typedef struct {
    int32_t h, w, in_c, out_c, stride, split, grad_exp, special; /* special: 0, 1 all zero, 2 one inf */
} ICase;

/* Keep in step with CASES in tests/test_backward_int16.py (the generator is mirrored there). */
static const ICase cases[] = {
    {4, 4, 16, 24, 1, 0, 0, 0},  {5, 5, 37, 150, 1, 0, -8, 0}, {6, 6, 20, 67, 2, 1, 3, 0},
    {4, 5, 9, 7, 1, 1, 0, 0},    {4, 4, 8, 16, 1, 0, 0, 1},    {3, 3, 8, 12, 1, 0, 0, 2},
    {4, 4, 10, 30, 1, 0, -140, 0},                                                     /* subnormal gradients */
    {8, 8, 24, 144, 1, 0, -20, 0}, {4, 4, 240, 40, 1, 0, -20, 0}, /* layer-sized: expand- and project-like */
};
#define N_CASES (int)(sizeof cases / sizeof cases[0])
#define FIRST_LAYER_CASE 7

#define MAX_GACC (8 * 8 * 144) /* the largest case's gradient, input gradient and weight */
#define MAX_GX (4 * 4 * 240)
#define MAX_W (240 * 40)
static float g[MAX_GACC], gp[MAX_GX], gs[MAX_GX], gflt[MAX_GX];
static int8_t wfull[MAX_W], wf[MAX_W], wt[MAX_W];
static int16_t codes[(8 * 8 / 4) * (144 / 2) * 8]; /* the largest case's codes scratch (mt_i16_codes_bytes) */
static int16_t fidx[256], tidx[256];

static uint32_t rng = 2026u;
static uint32_t next(void)
{
    rng = rng * 1664525u + 1013904223u;
    return rng >> 8;
}

/* 2^e for e in [-149, 127] by halving/doubling a float exactly */
static float pow2(int32_t e)
{
    float r = 1.0f;
    for (; e > 0; e--) r *= 2.0f;
    for (; e < 0; e++) r *= 0.5f;
    return r;
}

int main(void)
{
    int failures = 0;
    for (int i = 0; i < N_CASES; i++) {
        const ICase *c = &cases[i];
        mt_conv_params p;
        memset(&p, 0, sizeof p);
        p.in_h = c->h, p.in_w = c->w, p.in_c = c->in_c, p.kh = p.kw = 1, p.stride = c->stride, p.dilation = 1;
        p.out_h = (c->h - 1) / c->stride + 1, p.out_w = (c->w - 1) / c->stride + 1, p.out_c = c->out_c;
        const int32_t n_out = p.out_h * p.out_w * p.out_c, n_in = p.in_h * p.in_w * p.in_c;
        for (int32_t j = 0; j < c->out_c * c->in_c; j++) wfull[j] = (int8_t)(next() & 0xFF);
        for (int32_t j = 0; j < n_out; j++) {
            const int32_t m = (int32_t)(next() & 0xFFFFF) - 524288;
            g[j] = (float)m * pow2(c->grad_exp - (int32_t)(next() % 12u));
        }
        if (c->special == 1)
            for (int32_t j = 0; j < n_out; j++) g[j] = 0.0f;
        if (c->special == 2) g[n_out / 2] = pow2(127) * 2.0f; /* inf */
        /* the split: every third input channel trained (sparse update), the rest frozen */
        int32_t nf = 0, nt = 0;
        for (int32_t ch = 0; ch < c->in_c; ch++) {
            if (c->split && ch % 3 == 1) tidx[nt++] = (int16_t)ch;
            else fidx[nf++] = (int16_t)ch;
        }
        for (int32_t o = 0; o < c->out_c; o++) {
            for (int32_t j = 0; j < nf; j++) wf[o * nf + j] = wfull[o * c->in_c + fidx[j]];
            for (int32_t j = 0; j < nt; j++) wt[o * nt + j] = wfull[o * c->in_c + tidx[j]];
        }
        mt_weight_s8 wv = {wf, c->split ? fidx : NULL, nf, wt, c->split ? tidx : NULL, nt};
        for (int32_t j = 0; j < n_in; j++) gp[j] = 3.0f, gs[j] = -5.0f; /* every element must be written */
        mt_mark(1 + 3 * i);
        mt_conv_grad_input_pointwise_i16_portable(&p, g, &wv, codes, gp);
        mt_mark(2 + 3 * i);
        mt_conv_grad_input_pointwise_i16(&p, g, &wv, codes, gs);
        mt_mark(0);
        if (i >= FIRST_LAYER_CASE) { /* the float backward on the same operands: its instruction count */
            mt_mark(3 + 3 * i);
            mt_conv_grad_input_pointwise_f32(&p, g, &wv, gflt);
            mt_mark(0);
        }
        int32_t differ = 0;
        uint32_t hash = 2166136261u; /* FNV-1a over the SMLAD kernel's output bits */
        for (int32_t j = 0; j < n_in; j++) {
            uint32_t a, b;
            memcpy(&a, &gp[j], 4);
            memcpy(&b, &gs[j], 4);
            differ += a != b;
            for (int k = 0; k < 4; k++) hash = (hash ^ ((b >> (8 * k)) & 0xFFu)) * 16777619u;
        }
        failures += differ != 0;
        mt_printf("icase %d in=%dx%dx%d out_c=%d s=%d macs=%d differ=%d hash=%u\n", i, (int)c->h, (int)c->w,
                  (int)c->in_c, (int)c->out_c, (int)c->stride, (int)(n_out * c->in_c), (int)differ,
                  (unsigned)hash);
    }
    return failures;
}

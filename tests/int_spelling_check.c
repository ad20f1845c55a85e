/* int_spelling_check.c: the integer spellings of FPU-less builds against their float spelling. mt_arith.h's
 * requantisation (mt_requant_s8_int with its inline common case, and mt_requant_s8_general, each on every
 * input; mt_round_sat_s8_int) against mt_requant_s8_f32 / mt_round_sat_s8_f32, output byte and clamp bit;
 * mt_wgrad_f32.h's weight-gradient step against its float expression, the result's bits. Structured edge
 * sets (exhaustive over their product), constructed ties, cancellations, overflows and random inputs. Built and run by
 * tests/test_int_spelling.py; usage: int_spelling_check RANDOM_COUNT FLOAT_STRIDE SEED [LEVEL]; LEVEL=1 checks
 * the whole structured products (requantisation: every zero point for every (acc, bias, eff), 3.5e9 cases;
 * weight-gradient step: every g, go and x), minutes; 0 (default) every 7th bias and one zero point per case,
 * every third g and 17th x (seconds); 2 fewer still, for the broken copies.
 * Prints "checked N mismatches M" and the first mismatches; exits 1 on any mismatch. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mt_arith.h"
#include "mt_wgrad_f32.h"

static unsigned long long checked, mismatches;

static uint64_t rng_state;
static uint64_t rnd64(void) { /* splitmix64 */
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static uint32_t rnd32(void) { return (uint32_t)(rnd64() >> 32); }

static float from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static void check(int32_t acc, int32_t bias, float eff, int32_t zero) {
    uint8_t ok_f = 2, ok_i = 3;
    int8_t yf = mt_requant_s8_f32(acc, bias, eff, zero, &ok_f);
    int8_t yi = mt_requant_s8_int(acc, bias, eff, zero, &ok_i);
    int8_t yn = mt_requant_s8_int(acc, bias, eff, zero, NULL);
    uint8_t ok_g = 4;
    int8_t yg = mt_requant_s8_general(acc, bias, eff, zero, &ok_g); /* the rare-input path on every input too */
    checked++;
    if (yf != yi || ok_f != ok_i || yn != yi || yg != yi || ok_g != ok_i) {
        if (mismatches++ < 10)
            printf("requant acc=%ld bias=%ld eff=%a (0x%08lx) zero=%ld: float %d/%d integer %d/%d\n", (long)acc,
                   (long)bias, (double)eff, (unsigned long)mt_bits_of_f32(eff), (long)zero, yf, ok_f, yi, ok_i);
    }
}

static void check_round(float t, int32_t zero) {
    uint8_t ok_f = 2, ok_i = 3;
    int8_t yf = mt_round_sat_s8_f32(t, zero, &ok_f);
    int8_t yi = mt_round_sat_s8_int(t, zero, &ok_i);
    checked++;
    if (yf != yi || ok_f != ok_i) {
        if (mismatches++ < 10)
            printf("round t=%a (0x%08lx) zero=%ld: float %d/%d integer %d/%d\n", (double)t,
                   (unsigned long)mt_bits_of_f32(t), (long)zero, yf, ok_f, yi, ok_i);
    }
}

static void check_wgrad(float g, int32_t x, int32_t x_zero, float go) {
    float f = mt_wgrad_step_f32(g, x, x_zero, go), i = mt_wgrad_step_int(g, x, x_zero, go);
    uint32_t bf = mt_bits_of_f32(f), bi = mt_bits_of_f32(i);
    checked++;
    if (bf != bi && !(f != f && i != i)) { /* the same bits; NaNs count as equal (the float code makes both) */
        if (mismatches++ < 10)
            printf("wgrad g=%a x=%ld x_zero=%ld go=%a: float %a (0x%08lx) integer %a (0x%08lx)\n", (double)g, (long)x,
                   (long)x_zero, (double)go, (double)f, (unsigned long)bf, (double)i, (unsigned long)bi);
    }
}

static void check_sum(float acc, int32_t w, float g) { /* mt_sum_step_s8's integer spelling */
    float f = acc + g * (float)w, i = mt_wgrad_step_int(acc, w, 0, g);
    checked++;
    if (mt_bits_of_f32(f) != mt_bits_of_f32(i) && !(f != f && i != i)) {
        if (mismatches++ < 10)
            printf("sum acc=%a w=%ld g=%a: float %a integer %a\n", (double)acc, (long)w, (double)g, (double)f, (double)i);
    }
}

/* integers around every power of two up to 2^31 (+-0..3), both signs, and the int32 limits */
static int32_t ints[600];
static int n_ints;
static void add_int(int64_t v) {
    if (v >= INT32_MIN && v <= INT32_MAX) ints[n_ints++] = (int32_t)v;
}
static void make_ints(void) {
    int k, d;
    add_int(0);
    add_int(INT32_MIN);
    add_int(INT32_MAX);
    add_int(INT32_MIN + 1);
    add_int(12345);
    add_int(-999);
    for (k = 0; k <= 31; k++)
        for (d = -3; d <= 3; d++) {
            add_int(((int64_t)1 << k) + d);
            add_int(-((int64_t)1 << k) + d);
        }
    add_int(3 << 23), add_int((3 << 23) + 1), add_int((3 << 23) + 2), add_int((3 << 23) + 3); /* 24-bit ties */
    add_int(-(3 << 23) - 1), add_int((1 << 24) + 5), add_int((1 << 25) - 3), add_int((1 << 25) + 6);
}

/* eff: 2^e times significands 1, 1+ulp, 1.5, 1.5+-ulp, 2-ulp, random; e over the whole float range;
 * denormals, zeros, negatives, FLT_MAX, inf, NaN */
static float effs[4000];
static int n_effs;
static void make_effs(void) {
    static const uint32_t mant[] = {0, 1, 2, 0x400000, 0x3FFFFF, 0x400001, 0x7FFFFF, 0x7FFFFE, 0x2AAAAB, 0x555555};
    uint32_t ex;
    size_t j;
    for (ex = 0; ex < 255; ex++)
        for (j = 0; j < sizeof mant / sizeof mant[0]; j++) {
            if (ex >= 100 && ex <= 150) effs[n_effs++] = from_bits(ex << 23 | mant[j]); /* scales that matter */
            else if (j < 3) effs[n_effs++] = from_bits(ex << 23 | mant[j]);
        }
    for (ex = 100; ex <= 150; ex++) effs[n_effs++] = from_bits(1u << 31 | ex << 23 | 0x123457); /* negative */
    effs[n_effs++] = from_bits(0x80000000u);                                                    /* -0 */
    effs[n_effs++] = from_bits(0x7F7FFFFFu);                                                    /* FLT_MAX */
    effs[n_effs++] = from_bits(0x00000001u);                                                    /* least denormal */
    effs[n_effs++] = from_bits(0x007FFFFFu);                                                    /* largest denormal */
    effs[n_effs++] = from_bits(0x7F800000u);                                                    /* inf */
    effs[n_effs++] = from_bits(0xFF800000u);                                                    /* -inf */
    effs[n_effs++] = from_bits(0x7FC00000u);                                                    /* NaN */
}

static const int32_t zeros[] = {-128, -127, -1, 0, 1, 5, 126, 127, 2047, -2048, 2049, -2049, INT32_MAX, INT32_MIN};
#define N_ZEROS ((int)(sizeof zeros / sizeof zeros[0]))

static int level; /* 0 the suite's, 1 everything (minutes), 2 light (broken copies: seconds) */

static void structured(void) {
    int a, b, f, z, full = level == 1, step = level == 1 ? 1 : level == 2 ? 41 : 7;
    for (a = 0; a < n_ints; a++)
        for (b = a % step; b < n_ints; b += step)
            for (f = 0; f < n_effs; f++)
                for (z = 0; z < (full ? N_ZEROS : 1); z++) check(ints[a], ints[b], effs[f], zeros[(z + a + b + f) % N_ZEROS]);
}

/* acc * eff at and around every half-integer tie h + 1/2 (|h| < 1030) for eff = 2^-j and for random eff:
 * the product rounded to 24 bits can land on a tie, or just off one */
static void ties(int n_random_effs) {
    int j, h, d, i;
    for (j = 0; j <= 24; j++) {
        float eff = from_bits((uint32_t)(127 - j) << 23);
        for (h = -1030; h <= 1030; h++)
            for (d = -2; d <= 2; d++) {
                int64_t acc = ((int64_t)(2 * h + 1) << j >> 1) + d; /* (h + 1/2) * 2^j + d */
                if (acc >= INT32_MIN && acc <= INT32_MAX) {
                    check((int32_t)acc, 0, eff, 0);
                    check((int32_t)acc - 7, 7, eff, -3);
                }
            }
    }
    for (i = 0; i < n_random_effs; i++) {
        float eff = from_bits((uint32_t)(110 + rnd32() % 30) << 23 | (rnd32() & 0x7FFFFF));
        for (h = 0; h < 64; h++) {
            double target = ((int32_t)(rnd32() % 2100) - 1050) + 0.5;
            int64_t acc0 = (int64_t)(target / (double)eff);
            for (d = -2; d <= 2; d++)
                if (acc0 + d >= INT32_MIN && acc0 + d <= INT32_MAX)
                    check((int32_t)(acc0 + d), (int32_t)(rnd32() % 5) - 2, eff, (int32_t)(rnd32() % 256) - 128);
        }
    }
}

/* Double-rounding cases. (1) The float sum of acc + bias in (2^24, 2^25] (odd sums are 24-bit ties) times
 * eff = 2^-j, around every half-integer h + 1/2: a tie rounded the wrong way moves t off or onto h + 1/2.
 * (2) Products that are exact 24-bit ties P = h + 1/2 +- ulp(t)/2, P = n * eff with eff's significand
 * M / n (M odd, 25 bits): rounded to even P becomes h + 1/2 exactly, then rint rounds to even. */
static void double_rounding(void) {
    int j, d, b, sign, a;
    int64_t h;
    static const int32_t biases[] = {1 << 23, 1 << 24, -5, 0};
    for (j = 14; j <= 26; j++) {
        float eff = from_bits((uint32_t)(127 - j) << 23);
        for (h = ((int64_t)1 << 24 >> j) - 1; (h << j) <= ((int64_t)1 << 25) + 8; h++)
            for (d = -3; d <= 3; d++)
                for (b = 0; b < 4; b++) {
                    int64_t s = ((2 * h + 1) << j >> 1) + d, acc = s - biases[b];
                    if (acc >= -(1 << 24) && acc <= (1 << 24)) {
                        check((int32_t)acc, biases[b], eff, 0);
                        check((int32_t)-acc, -biases[b], eff, 0);
                    }
                }
    }
    for (h = 1; h < 1024; h++)
        for (sign = -1; sign <= 1; sign += 2) {
            int et = 0; /* 2^et <= h + 1/2 < 2^(et+1) */
            int64_t m, n;
            while ((2 * h + 1) >> (et + 1) >= 2) et++;
            m = ((2 * h + 1) << (23 - et)) + sign; /* (h + 1/2 +- ulp/2) / 2^(et - 24), odd, 25 bits */
            for (n = 3; n < 4096; n += 2)
                if (m % n == 0 && m / n < (1 << 24))
                    for (a = 0; a < 8; a++) {
                        float eff = (float)ldexp((double)(m / n), et - 24 - a); /* exact: m / n < 2^24 */
                        check((int32_t)(n << a), 0, eff, 0);
                        check((int32_t)(n << a) - 100, 100, eff, 1);
                        check((int32_t)-(n << a), 0, eff, -1);
                    }
        }
}

static int32_t random_int(void) {
    switch (rnd32() % 4) {
    case 0: return (int32_t)rnd32();                                   /* any int32 */
    case 1: return (int32_t)(rnd32() >> (rnd32() % 32)) * (rnd32() & 1 ? 1 : -1); /* log-uniform magnitude */
    case 2: return (int32_t)(rnd32() % (1u << 25)) - (1 << 24) + (int32_t)(rnd32() % 9) - 4; /* near 2^24 */
    default: return (int32_t)(rnd32() % 200001) - 100000;            /* typical accumulators */
    }
}

static float random_eff(void) {
    uint32_t u = rnd32();
    switch (rnd32() % 4) {
    case 0: return from_bits(u);                                                 /* any bits (inf, NaN too) */
    case 1: return from_bits((u & 0x807FFFFFu) | (uint32_t)(100 + rnd32() % 50) << 23); /* |eff| in [2^-27, 2^23) */
    case 2: return from_bits((u & 0x007FFFFFu) | (uint32_t)(110 + rnd32() % 20) << 23); /* realistic: 2^-17..2^2 */
    default: return from_bits(u & 0x807FFFFFu);                                  /* denormals */
    }
}

static void random_inputs(unsigned long long count) {
    unsigned long long i;
    for (i = 0; i < count; i++) {
        int32_t zero = rnd32() % 16 ? (int32_t)(rnd32() % 256) - 128 : (int32_t)rnd32();
        check(random_int(), rnd32() % 3 ? random_int() : 0, random_eff(), zero);
    }
}

/* mt_round_sat_s8 on every float bit pattern u = 0, stride, 2*stride, ... and on its neighbours */
static void all_floats(uint32_t stride) {
    uint64_t u;
    for (u = 0; u <= 0xFFFFFFFFull; u += stride) {
        int32_t zero = (int32_t)(u % 256) - 128;
        check_round(from_bits((uint32_t)u), zero);
        if (stride > 1) check_round(from_bits((uint32_t)u + 1), zero);
    }
    {   /* every float in [-1100, 1100] near an integer or a tie: the rounding region, at full density */
        int32_t h;
        for (h = -2200; h <= 2200; h++) {
            float c = (float)h * 0.5f;
            uint32_t b = mt_bits_of_f32(c);
            int d;
            for (d = -40; d <= 40; d++) check_round(from_bits(b + (uint32_t)d), h % 7);
        }
    }
}

/* Weight-gradient steps: g and go from the edge set of floats (every exponent, edge significands, zeros,
 * denormals, inf, NaN, both signs) for every int8 x at a few zero points; g = -p +- a few ulps (cancellation,
 * p the product); and random ones (random bits, and realistic magnitudes). */
static void wgrad(unsigned long long count) {
    static const int32_t x_zeros[] = {0, -128, 127, 5, -300, 200, INT32_MIN, INT32_MAX};
    int i, j, x, z, d;
    unsigned long long r;
    for (i = 0; i < n_effs; i += level == 1 ? 1 : 3)
        for (j = 0; j < n_effs; j++)
            for (x = -128; x < 128; x += level == 1 ? 1 : level == 2 ? 67 : 17) {
                float g = effs[i], go = effs[j];
                check_wgrad(g, x, x_zeros[(i + j + x + 128) % 8], go);
                check_sum(g, x, go);
                check_wgrad(-g, x, 0, go);
            }
    for (i = 0; i < n_effs; i++)
        for (x = -128; x < 128; x++)
            for (d = -3; d <= 3; d++) {
                float go = effs[i], p = ((float)x - 3.0f) * go;
                check_wgrad(mt_f32_of_bits(mt_bits_of_f32(-p) + (uint32_t)d), x, 3, go);
                check_wgrad(mt_f32_of_bits(mt_bits_of_f32(p * 0.5f) + (uint32_t)d), x, 3, -go); /* p/2 - p */
            }
    for (i = 0; i < 4000; i++) /* sums near FLT_MAX: overflow to inf, or not */
        for (x = -128; x < 128; x += 3) {
            static const uint32_t big[] = {0x7F7FFFFFu, 0x7F700000u, 0x7F400000u, 0x7F000001u, 0x7E800000u};
            float g = from_bits(big[i % 5] | (i & 8 ? 0x80000000u : 0u));
            float go = from_bits((rnd32() & 0x807FFFFFu) | (uint32_t)(238 + rnd32() % 8) << 23);
            check_wgrad(g, x, 0, go);
        }
    for (r = 0; r < count; r++) {
        float g, go;
        if (rnd32() % 2) g = from_bits(rnd32()), go = from_bits(rnd32());
        else {
            g = from_bits((rnd32() & 0x807FFFFFu) | (uint32_t)(90 + rnd32() % 40) << 23);
            go = from_bits((rnd32() & 0x807FFFFFu) | (uint32_t)(90 + rnd32() % 40) << 23);
        }
        z = rnd32() % 8 ? (int32_t)(rnd32() % 256) - 128 : (int32_t)rnd32();
        check_wgrad(g, (int32_t)(rnd32() % 256) - 128, z, go);
        check_sum(g, (int32_t)(rnd32() % 256) - 128, go);
    }
}

int main(int argc, char **argv) {
    unsigned long long count = argc > 1 ? strtoull(argv[1], NULL, 10) : 1000000ull;
    uint32_t stride = argc > 2 ? (uint32_t)strtoul(argv[2], NULL, 10) : 4099u;
    rng_state = argc > 3 ? strtoull(argv[3], NULL, 10) : 1ull;
    make_ints();
    make_effs();
    level = argc > 4 ? atoi(argv[4]) : 0;
    structured();
    ties(2000);
    double_rounding();
    random_inputs(count);
    all_floats(stride ? stride : 1u);
    wgrad(count);
    printf("checked %llu mismatches %llu\n", checked, mismatches);
    return mismatches != 0;
}

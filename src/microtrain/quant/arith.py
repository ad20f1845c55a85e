"""The one definition of the int8 arithmetic (see docs/arithmetic.md and shared notes/int8-arithmetic.md).

Every runtime follows these functions: the NumPy runtime calls them, the C kernels in
codegen/kernels/mt_arith.h implement the same float32 operation sequence, and tests hold the two
together bit for bit. Rules:
- products and sums of int8 values are exact integers (int32 range, computed exactly);
- a bias is added *in float32*, so a dead channel's INT32_MIN/INT32_MAX bias cannot overflow;
- rounding is round-half-to-even (np.rint / rintf in the default rounding mode);
- no fused multiply-add: C is compiled with -ffp-contract=off.
"""
from __future__ import annotations

import numpy as np

F32 = np.float32
INT8_MIN, INT8_MAX = -128, 127
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def conv_multipliers(x_scale: float, w_scales: np.ndarray, y_scale: float) -> np.ndarray:
    """eff[c] = float32(float64(x_scale) * float64(w_scales[c]) / float64(y_scale))."""
    w64 = np.asarray(w_scales, dtype=np.float32).astype(np.float64)
    return (np.float64(x_scale) * w64 / np.float64(y_scale)).astype(F32)


def requantize_conv(acc: np.ndarray, bias: np.ndarray, eff: np.ndarray, y_zero: int) -> np.ndarray:
    """int8 output of a conv from its exact integer accumulator (last axis = output channel).

    t = float32(acc) + float32(bias); t = t * eff; q = clamp(rint(t) + y_zero, -128, 127).
    `acc` may be int32/int64 or float64 holding exact integers: float32() rounds all the same way.
    """
    r = conv_preclamp(acc, bias, eff, y_zero)
    return np.clip(r, INT8_MIN, INT8_MAX, out=r).astype(np.int8)


ROW_TILE_MAX_C = 64  # channel_rows: fewer channels than this get their per-channel vectors tiled along a row


def channel_rows(x: np.ndarray, *per_channel):
    """(x, vectors) for an elementwise op of a C-contiguous (..., W, C) array with per-channel (C,) vectors:
    with few channels, x as (rows, W*C) and each vector tiled W times, so NumPy's inner loop runs W*C elements
    long instead of C (about twice as fast for mcunet's 16- and 32-channel maps); each element meets the same
    vector entry, so the operations and results are the same. Otherwise x and the vectors unchanged."""
    c = x.shape[-1] if x.ndim >= 2 else 0
    if not (0 < c < ROW_TILE_MAX_C and x.flags.c_contiguous and x.size
            and all(np.ndim(v) == 1 and np.shape(v)[0] == c for v in per_channel)):
        return x, per_channel
    w = x.shape[-2]
    return x.reshape(-1, w * c), tuple(np.tile(np.asarray(v), w) for v in per_channel)


def conv_preclamp(acc: np.ndarray, bias: np.ndarray, eff: np.ndarray, y_zero: int) -> np.ndarray:
    """The float32 value requantize_conv clamps (rint(t) + y_zero): the clamp gradient mask needs it."""
    # the same float32 operations in place on one fresh array (np.add casts acc to float32 first, as astype)
    acc = np.asarray(acc)
    rows, (b, e) = channel_rows(acc, np.asarray(bias).astype(F32), eff)
    t = np.add(rows, b, dtype=F32)
    t *= e
    np.rint(t, out=t)
    t += F32(y_zero)
    return t.reshape(np.broadcast_shapes(acc.shape, np.shape(bias), np.shape(eff)))


def add_requant(q1, z1, s1, q2, z2, s2, sy, zy) -> np.ndarray:
    """Residual add, all float32: r = (q1-z1)*s1 + (q2-z2)*s2; q = clamp(rint(r / sy) + zy)."""
    r = add_preclamp(q1, z1, s1, q2, z2, s2, sy, zy)
    return np.clip(r, INT8_MIN, INT8_MAX).astype(np.int8)


def add_preclamp(q1, z1, s1, q2, z2, s2, sy, zy) -> np.ndarray:
    a = (np.asarray(q1).astype(F32) - F32(z1)) * F32(s1)
    b = (np.asarray(q2).astype(F32) - F32(z2)) * F32(s2)
    r = np.rint((a + b) / F32(sy))
    r += F32(zy)
    return r


def round_half_even_div(total: np.ndarray, count: int) -> np.ndarray:
    """rint(total / count) for exact integer totals, computed exactly in integers (ties to even)."""
    total = np.asarray(total, dtype=np.int64)
    q = np.floor_divide(total, count)
    rem = total - q * count  # 0 <= rem < count
    twice = 2 * rem
    up = (twice > count) | ((twice == count) & (q % 2 == 1))
    return q + up


def avgpool_int8(x: np.ndarray) -> np.ndarray:
    """Global average pool in the input's quantisation domain: rint(mean over H, W), NHWC -> N11C."""
    n, h, w, c = x.shape
    total = x.astype(np.int64).sum(axis=(1, 2), keepdims=True)
    return np.clip(round_half_even_div(total, h * w), INT8_MIN, INT8_MAX).astype(np.int8)


def saturate_int8(x: np.ndarray) -> np.ndarray:
    return np.clip(x, INT8_MIN, INT8_MAX).astype(np.int8)


def saturate_int32(x: np.ndarray) -> np.ndarray:
    return np.clip(x, INT32_MIN, INT32_MAX).astype(np.int32)


def pixels_to_int8(pixels: np.ndarray) -> np.ndarray:
    """The fixed input mapping: an 8-bit pixel k becomes the int8 value k - 128.

    (Upstream's training code used rint(k - 127.5); a device uses k - 128, so do we. With the
    first conv's x_scale = 2/255 and x_zero = 0 this is real value (k - 128) * 2/255.)
    """
    p = np.asarray(pixels)
    if p.dtype != np.uint8:
        raise ValueError(f"pixels must be uint8, got {p.dtype}")
    return (p.astype(np.int16) - 128).astype(np.int8)


# ===== Rounding mode "tflite": TensorFlow Lite's integer requantisation ==============================
# A graph imported from a .tflite file carries attrs["requant"] == "tflite" on every node (and
# graph.meta["requant"]); its ops then requantise the same exact integer accumulators as above with
# TFLite's fixed-point multiplier and shift (the reference kernels of TFLite and TFLite Micro, default
# double rounding) instead of the float32 sequence. Everything here is exact int64 NumPy arithmetic on
# values in int32 range; C's int32 wrap-around is reproduced where TFLite's C code relies on it.
REQUANT_MODES = ("float", "tflite")


def requant_mode(node) -> str:
    """The rounding mode of a node: "float" (the default, today's arithmetic) or "tflite"."""
    return node.attrs.get("requant", "float")


def wrap_int32(x: np.ndarray) -> np.ndarray:
    """Two's-complement int32 wrap-around of int64 values (what TFLite's int32 C code computes)."""
    x = np.asarray(x, dtype=np.int64)
    return ((x + 2**31) & 0xFFFFFFFF) - 2**31


def round_half_away(x: np.ndarray) -> np.ndarray:
    """C's round(): ties away from zero (TfLiteRound)."""
    x = np.asarray(x, dtype=np.float64)
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def quantize_multiplier(real) -> tuple[np.ndarray, np.ndarray]:
    """TFLite QuantizeMultiplier: real = m * 2**(shift - 31), m int32 in [2**30, 2**31) (or 0).

    frexp(real) = q * 2**shift with q in [0.5, 1); m = round(q * 2**31) ties away from zero; m = 2**31
    becomes 2**30 with shift + 1; shift < -31 flushes to m = 0, shift = 0.
    """
    real = np.atleast_1d(np.asarray(real, dtype=np.float64))
    q, shift = np.frexp(real)
    m = round_half_away(q * float(1 << 31)).astype(np.int64)
    shift = shift.astype(np.int64)
    top = m == (1 << 31)
    m[top] //= 2
    shift[top] += 1
    tiny = (shift < -31) | (real == 0)
    m[tiny], shift[tiny] = 0, 0
    return m, shift


def saturating_rounding_doubling_high_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """gemmlowp SaturatingRoundingDoublingHighMul on int32 values: (a*b + nudge) / 2**31 truncated,
    nudge = 2**30 for a*b >= 0 else 1 - 2**30; INT32_MIN * INT32_MIN saturates to INT32_MAX."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    ab = a * b
    s = ab + np.where(ab >= 0, np.int64(1 << 30), np.int64(1 - (1 << 30)))
    high = np.where(s >= 0, s >> 31, -((-s) >> 31))  # C integer division truncates toward zero
    return np.where((a == b) & (a == INT32_MIN), np.int64(INT32_MAX), high)


def rounding_divide_by_pot(x: np.ndarray, exponent: np.ndarray) -> np.ndarray:
    """gemmlowp RoundingDivideByPOT: x / 2**exponent rounded to nearest, ties away from zero."""
    x = np.asarray(x, dtype=np.int64)
    e = np.asarray(exponent, dtype=np.int64)
    mask = (np.int64(1) << e) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> e) + (remainder > threshold)


def multiply_by_quantized_multiplier(x: np.ndarray, m: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """TFLite MultiplyByQuantizedMultiplier (double rounding): RDByPOT(SRDHM(x << left, m), right)."""
    shift = np.asarray(shift, dtype=np.int64)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    x = wrap_int32(np.asarray(x, dtype=np.int64) << left)
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(x, m), right)


def multiply_by_quantized_multiplier_single(x: np.ndarray, m: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """The single-rounding variant (TFLITE_SINGLE_ROUNDING, and what LiteRT's reference FULLY_CONNECTED
    computes): (x * m + 2**(30 - shift)) >> (31 - shift), i.e. x * real rounded once, ties upward."""
    total = 31 - np.asarray(shift, dtype=np.int64)
    return (np.asarray(x, dtype=np.int64) * np.asarray(m, dtype=np.int64) + (np.int64(1) << (total - 1))) >> total


def tflite_conv_multipliers(x_scale: float, w_scales: np.ndarray, y_scale: float):
    """Per-channel (m, shift) of a conv or FC: QuantizeMultiplier(x_scale * w_scale[c] / y_scale), all in
    double (for per-tensor FCs too: LiteRT's reference agrees with the double product where a float32 one
    would differ, tests/test_tflite.py)."""
    prod = np.float64(np.float32(x_scale)) * np.asarray(w_scales, dtype=np.float32).astype(np.float64)
    return quantize_multiplier(prod / np.float64(np.float32(y_scale)))


def requantize_conv_tflite(acc, bias, m, shift, y_zero: int, clamp=(INT8_MIN, INT8_MAX),
                           rounding: str = "double") -> np.ndarray:
    """int8 conv output in TFLite's arithmetic: acc + bias in int32 (wrapping as C does), then
    MultiplyByQuantizedMultiplier per channel (rounding "double", or "single" for FULLY_CONNECTED),
    + y_zero, clamped to the fused activation's range."""
    r = conv_preclamp_tflite(acc, bias, m, shift, y_zero, rounding)
    return np.clip(r, clamp[0], clamp[1]).astype(np.int8)


def conv_preclamp_tflite(acc, bias, m, shift, y_zero: int, rounding: str = "double") -> np.ndarray:
    """The int64 value requantize_conv_tflite clamps (the clamp gradient mask needs it)."""
    t = wrap_int32(np.asarray(acc).astype(np.int64) + np.asarray(bias, dtype=np.int64))
    mul = multiply_by_quantized_multiplier_single if rounding == "single" else multiply_by_quantized_multiplier
    return mul(t, m, shift) + np.int64(y_zero)


ADD_LEFT_SHIFT = 20  # TFLite's int8 ADD headroom


def add_params_tflite(s1: float, s2: float, sy: float) -> dict:
    """TFLite's int8 ADD parameters: both inputs rescaled to 2*max(s1, s2) with 20 bits of headroom."""
    s1, s2, sy = (np.float64(np.float32(v)) for v in (s1, s2, sy))
    twice_max = 2.0 * max(s1, s2)
    m1, e1 = quantize_multiplier(s1 / twice_max)
    m2, e2 = quantize_multiplier(s2 / twice_max)
    mo, eo = quantize_multiplier(twice_max / (float(1 << ADD_LEFT_SHIFT) * sy))
    return {"m1": m1[0], "e1": e1[0], "m2": m2[0], "e2": e2[0], "mo": mo[0], "eo": eo[0]}


def add_preclamp_tflite(q1, z1, s1, q2, z2, s2, sy, zy) -> np.ndarray:
    """TFLite reference int8 ADD before the clamp (int64 holding int32 values)."""
    p = add_params_tflite(s1, s2, sy)
    a = (np.asarray(q1, dtype=np.int64) - z1) << ADD_LEFT_SHIFT
    b = (np.asarray(q2, dtype=np.int64) - z2) << ADD_LEFT_SHIFT
    a = multiply_by_quantized_multiplier(a, p["m1"], p["e1"])
    b = multiply_by_quantized_multiplier(b, p["m2"], p["e2"])
    return multiply_by_quantized_multiplier(wrap_int32(a + b), p["mo"], p["eo"]) + np.int64(zy)


def add_requant_tflite(q1, z1, s1, q2, z2, s2, sy, zy, clamp=(INT8_MIN, INT8_MAX)) -> np.ndarray:
    r = add_preclamp_tflite(q1, z1, s1, q2, z2, s2, sy, zy)
    return np.clip(r, clamp[0], clamp[1]).astype(np.int8)


def round_half_away_div(total: np.ndarray, count) -> np.ndarray:
    """TFLite's average-pool rounding of an exact integer sum: (t +- count/2) / count, C truncation."""
    t = np.asarray(total, dtype=np.int64)
    c = np.asarray(count, dtype=np.int64)
    half = c // 2
    num = np.where(t > 0, t + half, t - half)
    q = np.abs(num) // c
    return np.where(num < 0, -q, q)


def avgpool_int8_tflite(x: np.ndarray, clamp=(INT8_MIN, INT8_MAX)) -> np.ndarray:
    """Global average pool with TFLite's rounding (ties away from zero), NHWC -> N11C."""
    n, h, w, c = x.shape
    total = x.astype(np.int64).sum(axis=(1, 2), keepdims=True)
    return np.clip(round_half_away_div(total, h * w), clamp[0], clamp[1]).astype(np.int8)


# ----- TFLite's int8 softmax (inference only: gemmlowp fixed point, reference_ops::Softmax) ----------
SOFTMAX_DIFF_BITS, SOFTMAX_ACCUM_BITS = 5, 12


def _sat_shift_left(x: np.ndarray, e: int) -> np.ndarray:
    """gemmlowp SaturatingRoundingMultiplyByPOT with a positive exponent (saturating x << e)."""
    thr = (1 << (31 - e)) - 1
    return np.where(x > thr, INT32_MAX, np.where(x < -thr, INT32_MIN, x << e))


def _fx_mul(a, b):
    return saturating_rounding_doubling_high_mul(a, b)


def _exp_on_negative_values(a: np.ndarray) -> np.ndarray:
    """gemmlowp exp_on_negative_values: Q5.26 input <= 0 -> Q0.31 result."""
    frac = 31 - SOFTMAX_DIFF_BITS
    quarter = np.int64(1 << (frac - 2))
    a_mod = wrap_int32((a & (quarter - 1)) - quarter)
    x = wrap_int32(_sat_shift_left(a_mod, SOFTMAX_DIFF_BITS) + (1 << 28))  # Rescale<0>, + 1/8
    x2 = _fx_mul(x, x)
    x3 = _fx_mul(x2, x)
    x4 = _fx_mul(x2, x2)
    x4_over_4 = rounding_divide_by_pot(x4, 2)
    poly = rounding_divide_by_pot(wrap_int32(_fx_mul(wrap_int32(x4_over_4 + x3), 715827883) + x2), 1)
    const = np.int64(1895147668)  # exp(-1/8)
    result = wrap_int32(const + _fx_mul(const, wrap_int32(x + poly)))
    remainder = wrap_int32(a_mod - a)
    for exponent, mult in ((-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308), (2, 39332535),
                           (3, 720401), (4, 242)):
        if SOFTMAX_DIFF_BITS > exponent:
            bit = np.int64(1) << (frac + exponent)
            result = np.where(remainder & bit, _fx_mul(result, mult), result)
    return np.where(a == 0, INT32_MAX, result)


def _one_over_one_plus_x(a: np.ndarray) -> np.ndarray:
    """gemmlowp one_over_one_plus_x_for_x_in_0_1 (Newton-Raphson, Q0.31 in, Q0.31 out)."""
    s = a + np.int64(INT32_MAX)
    half_den = np.where(s >= 0, (s + 1) // 2, -((-(s - 1)) // 2))  # RoundingHalfSum, C truncation
    x = wrap_int32(np.int64(1515870810) + _fx_mul(half_den, -1010580540))  # 48/17 - 32/17 * d  (Q2.29)
    one_q2 = np.int64(1 << 29)
    for _ in range(3):
        t = wrap_int32(one_q2 - _fx_mul(half_den, x))
        x = wrap_int32(x + _sat_shift_left(_fx_mul(x, t), 2))
    return _sat_shift_left(x, 1)


def softmax_params_tflite(input_scale: float, beta: float) -> tuple[int, int, int]:
    """(input_multiplier, input_left_shift, diff_min) of TFLite's reference int8 softmax."""
    real = min(float(beta) * float(np.float32(input_scale)) * float(1 << (31 - SOFTMAX_DIFF_BITS)), float((1 << 31) - 1))
    m, shift = quantize_multiplier(real)
    radius = ((1 << SOFTMAX_DIFF_BITS) - 1) * float(1 << (31 - SOFTMAX_DIFF_BITS)) / float(1 << int(shift[0]))
    return int(m[0]), int(shift[0]), -int(np.floor(radius))


def softmax_int8_tflite(q: np.ndarray, input_scale: float, beta: float = 1.0) -> np.ndarray:
    """TFLite's reference int8 softmax over the last axis; output scale 1/256, zero point -128."""
    mult, left, diff_min = softmax_params_tflite(input_scale, beta)
    q = np.asarray(q, dtype=np.int64)
    diff = q - q.max(axis=-1, keepdims=True)
    live = diff >= diff_min
    scaled = _fx_mul(wrap_int32(diff << left), mult)
    exps = np.where(live, _exp_on_negative_values(scaled), 0)
    total = wrap_int32(rounding_divide_by_pot(exps, SOFTMAX_ACCUM_BITS).sum(axis=-1, keepdims=True))
    headroom = 32 - np.frexp(total.astype(np.float64))[1].astype(np.int64)  # count of leading zeros (exact)
    bits_over_unit = SOFTMAX_ACCUM_BITS - headroom
    shifted_minus_one = wrap_int32(((total << headroom) & 0xFFFFFFFF) - (1 << 31))
    scale = _one_over_one_plus_x(shifted_minus_one)
    out = rounding_divide_by_pot(_fx_mul(scale, exps), bits_over_unit + 31 - 8) - 128
    return np.where(live, np.clip(out, INT8_MIN, INT8_MAX), INT8_MIN).astype(np.int8)

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
    t = np.asarray(acc).astype(F32) + np.asarray(bias).astype(F32)
    t *= eff
    r = np.rint(t)
    r += F32(y_zero)
    return np.clip(r, INT8_MIN, INT8_MAX).astype(np.int8)


def conv_preclamp(acc: np.ndarray, bias: np.ndarray, eff: np.ndarray, y_zero: int) -> np.ndarray:
    """The float32 value requantize_conv clamps (rint(t) + y_zero): the clamp gradient mask needs it."""
    t = np.asarray(acc).astype(F32) + np.asarray(bias).astype(F32)
    t *= eff
    r = np.rint(t)
    r += F32(y_zero)
    return r


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

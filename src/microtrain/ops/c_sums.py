"""The float32 sums of the backward pass in the generated C kernels' order (TrainingRuntime(sums="c")).

The specification leaves the order of float32 sums free (docs/training-semantics.md), and the default NumPy
runtime uses BLAS (fused multiply-adds, blocked, and an order that changes with the thread count) and np.exp.
The C kernels (codegen/kernels/mt_backward_f32.c, compiled with -ffp-contract=off) sum every gradient
sequentially in float32 and compute the softmax's exp with their own polynomial, so the two differ in the last
bits, which a stochastic-rounding threshold within a few ulps of an integer turns into a 1-LSB parameter
difference and, at batch 1, another trajectory. With these sums the NumPy runtime computes the C's floats bit
for bit (measured: mcunet-5fps, 49 KB scheme, trashnet, all 1182 steps of benchmarks/exp_device_curve.py).
Each NumPy operation below rounds once, as the C's separate multiply and add do. Slower than BLAS: a loop over
the summed axis; meant for batch-1 simulations of the device, not for the accuracy experiments.
"""
from __future__ import annotations

import numpy as np

F32 = np.float32


def sequential_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b (float32) with each element summed over k ascending, products rounded before the add
    (mt_pw_grad_in_block, mt_conv_weight_update_pointwise_f32)."""
    out = np.zeros((a.shape[0], b.shape[1]), F32)
    for k in range(a.shape[1]):
        out += a[:, k : k + 1] * b[k][None, :]
    return out


def sequential_rows(x: np.ndarray) -> np.ndarray:
    """Sum over the leading axis (rows ascending) of a 2-D float32 array (mt_bias_update_f32, the softmax sum)."""
    out = np.zeros(x.shape[1:], F32)
    for row in x:
        out += row
    return out


def depthwise_grad_weight(xs, g_acc, ch, kh, kw, s, p, d=1) -> np.ndarray:
    """(len(ch), 1, kh, kw): per channel and tap, the sum over samples and output positions in ascending order
    of xs * g_acc (mt_conv_weight_update_depthwise_f32); positions whose tap falls in the padding are skipped."""
    n, ho, wo, _ = g_acc.shape
    h, w = xs.shape[1:3]
    x, g = xs[..., ch], g_acc[..., ch]
    out = np.zeros((len(ch), 1, kh, kw), F32)
    for a in range(kh):
        for b in range(kw):
            acc = np.zeros(len(ch), F32)
            for i in range(n):
                for oy in range(ho):
                    iy = oy * s - p + a * d
                    if not 0 <= iy < h:
                        continue
                    for ox in range(wo):
                        ix = ox * s - p + b * d
                        if 0 <= ix < w:
                            acc += x[i, iy, ix] * g[i, oy, ox]
            out[:, 0, a, b] = acc
    return out


def exp_nonpos(x: np.ndarray) -> np.ndarray:
    """exp(x) for x <= 0 as the C kernels compute it (mt_exp_nonpos_f32: 2^n times a degree-7 polynomial of the
    reduced argument, float32, each operation rounded), for the softmax of the loss."""
    x = np.asarray(x, F32)
    magic = F32(12582912.0)  # 1.5 * 2^23: mt_rint_small_f32
    n = (x * F32(1.44269504088896341) + magic) - magic
    r = (x - n * F32(0.693145751953125)) - n * F32(1.428606765330187e-06)
    poly = F32(1.0) + r * (F32(1.0) + r * (F32(0.5) + r * (F32(1.66666672e-01) + r * (F32(4.16666679e-02) + r * (
        F32(8.33333377e-03) + r * (F32(1.38888892e-03) + r * F32(1.98412701e-04)))))))
    k = np.maximum(n, F32(-150)).astype(np.int32)
    normal = poly * np.ldexp(F32(1), np.maximum(k, -126)).astype(F32)
    sub = poly * np.ldexp(F32(1), np.clip(k + 126, -126, 0)).astype(F32) * F32(1.17549435e-38)
    return np.where(x < F32(-103.0), F32(0), np.where(k < -126, sub, normal)).astype(F32)

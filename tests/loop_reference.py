"""A deliberately plain implementation of shared notes/int8-arithmetic.md, for tests only.

Written from the note, not from microtrain.ops / microtrain.quant: Python loops over samples and output
positions (and groups), exact integer accumulation in int64, then the note's float32 requantisation.
It is slow and obvious on purpose; the vectorised runtime must equal it bit for bit.
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np

F32 = np.float32


def conv_acc(x_q, weight, stride, groups, x_zero):
    """The exact accumulator (N, Ho, Wo, O) int64: sum over each window of (q_x - x_zero) * W."""
    n, h, w, c = x_q.shape
    o, ig, kh, kw = weight.shape
    pad = (kh - 1) // 2
    # the shifted input (q - x_zero), zero-padded: padding is a real 0
    xs = np.zeros((n, h + 2 * pad, w + 2 * pad, c), dtype=np.int64)
    xs[:, pad : pad + h, pad : pad + w, :] = x_q.astype(np.int64) - int(x_zero)
    ho, wo = (h + 2 * pad - kh) // stride + 1, (w + 2 * pad - kw) // stride + 1
    w64 = weight.astype(np.int64).transpose(0, 2, 3, 1)  # (O, kh, kw, I/groups)
    og = o // groups
    acc = np.empty((n, ho, wo, o), dtype=np.int64)
    for b in range(n):
        for oy in range(ho):
            for ox in range(wo):
                win = xs[b, oy * stride : oy * stride + kh, ox * stride : ox * stride + kw, :]
                for gi in range(groups):
                    wg = w64[gi * og : (gi + 1) * og]
                    xg = win[:, :, gi * ig : (gi + 1) * ig]
                    acc[b, oy, ox, gi * og : (gi + 1) * og] = (wg * xg[None]).sum(axis=(1, 2, 3))
    return acc


def conv(x_q, weight, bias, w_scales, stride, groups, xq, yq):
    """x_q (N, H, W, C) int8 -> (N, Ho, Wo, O) int8. xq / yq: (scale, zero_point)."""
    acc = conv_acc(x_q, weight, stride, groups, xq[1])
    eff = (np.float64(xq[0]) * w_scales.astype(np.float32).astype(np.float64) / np.float64(yq[0])).astype(F32)
    out = np.empty(acc.shape, dtype=np.int8)
    for b in range(acc.shape[0]):
        for oy in range(acc.shape[1]):
            for ox in range(acc.shape[2]):
                t = acc[b, oy, ox].astype(F32) + bias.astype(F32)  # the bias joins in float32: no int32 overflow
                t = t * eff
                r = np.rint(t) + F32(yq[1])
                out[b, oy, ox] = np.clip(r, -128, 127).astype(np.int8)
    return out


def add(q1, q2, s1, z1, s2, z2, sy, zy):
    r = (q1.astype(F32) - F32(z1)) * F32(s1) + (q2.astype(F32) - F32(z2)) * F32(s2)
    return np.clip(np.rint(r / F32(sy)) + F32(zy), -128, 127).astype(np.int8)


def avgpool(x_q):
    n, h, w, c = x_q.shape
    out = np.empty((n, 1, 1, c), dtype=np.int8)
    for b in range(n):
        for ch in range(c):
            total = int(x_q[b, :, :, ch].astype(np.int64).sum())
            out[b, 0, 0, ch] = max(-128, min(127, round(Fraction(total, h * w))))  # round(): ties to even
    return out


def run(graph, x_q, keep=False):
    """Forward an int8 Graph with the loops above: the output (N, 1, 1, K) int8, or with keep=True the
    dict of every tensor."""
    values = {graph.input: x_q}
    quant = {k: (t.quant.scale, t.quant.zero_point) for k, t in graph.tensors.items()}
    for node in graph.nodes:
        if node.op == "conv2d":
            p = node.params
            y = conv(values[node.inputs[0]], p["weight"], p["bias"], p["w_scales"], node.attrs["stride"],
                     node.attrs.get("groups", 1), quant[node.inputs[0]], quant[node.output])
        elif node.op == "add":
            a, b = node.inputs
            y = add(values[a], values[b], *quant[a], *quant[b], *quant[node.output])
        elif node.op == "global_avg_pool":
            y = avgpool(values[node.inputs[0]])
        else:
            raise AssertionError(f"loop reference: unknown op {node.op}")
        values[node.output] = y
    return values if keep else values[graph.output]

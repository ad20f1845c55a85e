"""avg_pool2d: windowed average pooling (TFLite AVERAGE_POOL_2D whose window does not cover the map).

attrs: kernel (kh, kw), stride, pads (top, bottom, left, right), optional clamp (lo, hi) of a fused
activation. A window averages only the positions inside the input (padding is not counted, as in
TFLite). int8: stays in the input's quantisation domain; the exact integer window sum is divided by the
count of valid positions with the graph's rounding mode: ties to even ("float", as global_avg_pool) or
ties away from zero ("tflite"). A window covering the whole map is the global_avg_pool op instead.
"""
from __future__ import annotations

import numpy as np

from ..errors import GraphError
from ..quant.arith import INT8_MAX, INT8_MIN, round_half_away_div, round_half_even_div
from .conv import im2col
from .pad import pads_of

OP = "avg_pool2d"


def _geometry(attrs: dict, h, w, name: str = "?"):
    kh, kw = (int(v) for v in attrs["kernel"])
    s = int(attrs["stride"])
    t, b, l, r = pads_of(attrs, name)
    if kh < 1 or kw < 1 or s < 1:
        raise GraphError(f"avg_pool2d {name!r}: kernel and stride must be >= 1, got {attrs}")
    ho, wo = (h + t + b - kh) // s + 1, (w + l + r - kw) // s + 1
    if ho < 1 or wo < 1:
        raise GraphError(f"avg_pool2d {name!r}: input {h}x{w} is too small for window {kh}x{kw}")
    return kh, kw, s, (t, b, l, r), ho, wo


def infer_shape(node, in_shapes):
    if len(in_shapes) != 1:
        raise GraphError(f"avg_pool2d {node.name!r}: needs exactly 1 input")
    h, w, c = in_shapes[0]
    *_, ho, wo = _geometry(node.attrs, h, w, node.name)
    return (ho, wo, c)


def macs(node, in_shape, out_shape) -> int:
    return 0


def _window_sums(attrs: dict, x: np.ndarray, dtype):
    """(sums over each window's valid positions, count of valid positions per output position)."""
    n, h, w, c = x.shape
    kh, kw, s, (t, b, l, r), ho, wo = _geometry(attrs, h, w)
    xp = np.pad(x.astype(dtype), ((0, 0), (t, b), (l, r), (0, 0)))
    sums = im2col(xp, kh, kw, s, ho, wo).sum(axis=(3, 4), dtype=dtype)
    ones = np.pad(np.ones((1, h, w, 1), np.int64), ((0, 0), (t, b), (l, r), (0, 0)))
    count = im2col(ones, kh, kw, s, ho, wo).sum(axis=(3, 4))  # (1, Ho, Wo, 1)
    return sums, count


def forward_int8(node, x, qx, qy):
    total, count = _window_sums(node.attrs, x, np.int64)
    if count.min() < 1:
        raise GraphError(f"avg_pool2d {node.name!r}: a window lies entirely in the padding")
    count = np.broadcast_to(count, total.shape)
    q = round_half_away_div(total, count) if node.attrs.get("requant") == "tflite" else _div_even(total, count)
    lo, hi = node.attrs.get("clamp", (INT8_MIN, INT8_MAX))
    return np.clip(q, lo, hi).astype(np.int8)


def _div_even(total, count):
    """Ties-to-even division by a per-position count (round_half_even_div takes one scalar count)."""
    out = np.empty(total.shape, np.int64)
    for k in np.unique(count):
        where = count == k
        out[where] = round_half_even_div(total[where], int(k))
    return out


def forward_float(node, x):
    total, count = _window_sums(node.attrs, x, np.float32)
    return (total / count.astype(np.float32)).astype(np.float32)


# ----- backward (float32) -----------------------------------------------------------------------------
def grad_input(g_y: np.ndarray, attrs: dict, in_shape) -> np.ndarray:
    """Each output's gradient is spread uniformly over its window's valid input positions (rint is
    straight-through)."""
    h, w, c = in_shape
    kh, kw, s, (t, b, l, r), ho, wo = _geometry(attrs, h, w)
    _, count = _window_sums(attrs, np.zeros((1, h, w, 1), np.float32), np.float32)
    g = g_y.astype(np.float32) / count.astype(np.float32)
    gp = np.zeros((g_y.shape[0], h + t + b, w + l + r, c), np.float32)
    for i in range(kh):
        for j in range(kw):
            gp[:, i : i + s * ho : s, j : j + s * wo : s, :] += g
    return gp[:, t : t + h, l : l + w, :]

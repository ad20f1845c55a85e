"""avg_pool2d: windowed average pooling (TFLite AVERAGE_POOL_2D whose window does not cover the map).

attrs: kernel (kh, kw), stride, pads (top, bottom, left, right), optional clamp (lo, hi) of a fused
activation. A window averages only the positions inside the input (padding is not counted, as in
TFLite). int8: stays in the input's quantisation domain; the exact integer window sum is divided by the
count of valid positions with the graph's rounding mode: ties to even ("float", as global_avg_pool) or
ties away from zero ("tflite"). A window covering the whole map is the global_avg_pool op instead.
"""
from __future__ import annotations

import numpy as np

from ..errors import GraphError, UnsupportedOpError
from ..ir.program import Arg, Params, Step, buf, lit
from ..ir.training import Kind
from ..ir.training import Step as TrainStep
from ..quant.arith import INT8_MAX, INT8_MIN, requant_mode, round_half_away_div, round_half_even_div
from .conv import im2col
from .pad import pads_of

OP = "avg_pool2d"
CLAMPS_OUTPUT = False  # a mean of in-range codes stays in range (a tighter fused clamp is refused in backward)
TRAINABLE = False
INPLACE_INPUT = None
KEEPS_INPUT_QUANT = True  # int8 output scale/zero point = the input's


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
    q = round_half_away_div(total, count) if requant_mode(node) == "tflite" else _div_even(total, count)
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


def forward_train(graph, node, ins, save_mask=False):
    if graph.dtype == "int8":
        qx = graph.tensors[node.inputs[0]].quant
        return forward_int8(node, ins[0], qx, qx), None
    return forward_float(node, ins[0]), None


def backward(cx, n) -> list:
    t = n.inputs[0]
    if t not in cx.needs:
        return []
    lo, hi = n.attrs.get("clamp", (INT8_MIN, INT8_MAX))
    if cx.int8 and (lo > INT8_MIN or hi < INT8_MAX):
        raise UnsupportedOpError(f"avg_pool2d {n.name!r}: a fused activation clamp {lo, hi} has no gradient rule "
                                 f"(train only layers before it, or after it)")
    keys = ("kernel", "stride", "pads")
    return [TrainStep("avg_pool2d_grad", n.name, [f"grad:{n.output}"], [cx.grad_target(t, n)],
                      {**{k: n.attrs[k] for k in keys}, "in_shape": tuple(cx.graph.tensors[t].shape)})]


# ----- C lowering ----------------------------------------------------------------------------------------
def _geometry_fields(attrs: dict, in_shape) -> list[int]:
    h, w, c = in_shape
    kh, kw, s, (t, _, l, _), ho, wo = _geometry(attrs, h, w)
    return [h, w, c, ho, wo, kh, kw, s, t, l]


def lower(lx, node, mask) -> list[Step]:
    graph, prog = lx.graph, lx.prog
    if requant_mode(node) != "tflite":
        raise UnsupportedOpError(f"avg_pool2d {node.name!r}: the C kernel rounds as TFLite does (ties away from "
                                 f"zero); this node is in the {requant_mode(node)!r} rounding mode")
    x = node.inputs[0]
    pname = f"mt_pavg{graph.nodes.index(node)}"
    if pname not in prog.params:
        lo, hi = node.attrs.get("clamp", (INT8_MIN, INT8_MAX))
        prog.add_params(Params(pname, "mt_avg_pool_params", _geometry_fields(node.attrs, graph.tensors[x].shape)
                               + [int(lo), int(hi)]))
    return [Step("mt_avg_pool_tfl_s8", [Arg("params", pname), buf(x), buf(node.output)], [x], [node.output],
                 node.name)]


def _run_grad(rt, s, values, lr, t):
    values[s.outputs[0]] = grad_input(values[s.inputs[0]], s.attrs, s.attrs["in_shape"])


def _lower_grad(lx, s):
    pname = f"mt_pavgg{lx.graph.nodes.index(lx.graph.node(s.node))}"
    if pname not in lx.prog.params:
        lx.prog.add_params(Params(pname, "mt_avg_pool_params", _geometry_fields(s.attrs, s.attrs["in_shape"])
                                  + [INT8_MIN, INT8_MAX]))
    return [Step("mt_avg_pool_grad_f32", [Arg("params", pname), buf(s.inputs[0]), buf(s.outputs[0])],
                 [s.inputs[0]], [s.outputs[0]], s.node, "backward")]


KINDS = {"avg_pool2d_grad": Kind(_run_grad, _lower_grad, "backward")}

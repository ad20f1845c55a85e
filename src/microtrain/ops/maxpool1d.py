"""max_pool1d: windowed max over the time axis of a 1-D map, (1, L, C) -> (1, (L - k) // stride + 1, C).

int8: max of codes is the code of the max (same scale and zero point as the input). Gradient: each output's
gradient goes to the first position of its window holding the maximum (torch's choice on CPU); windows
that overlap (stride < k) add up. attrs: kernel k, stride (no padding: torch pads a max pool with -inf,
which the int8 map cannot hold).
"""
from __future__ import annotations

import numpy as np

from ..errors import GraphError
from ..ir.program import Arg, Params, Step, buf
from ..ir.training import Kind
from ..ir.training import Step as TrainStep

OP = "max_pool1d"
CLAMPS_OUTPUT = False  # a max of in-range values stays in range
TRAINABLE = False
INPLACE_INPUT = None
KEEPS_INPUT_QUANT = True


def _attrs(node) -> tuple[int, int]:
    k, s = node.attrs.get("kernel"), node.attrs.get("stride")
    if not (isinstance(k, int) and isinstance(s, int) and k >= 1 and s >= 1):
        raise GraphError(f"max_pool1d {node.name!r}: attrs kernel/stride must be integers >= 1, got {node.attrs}")
    return k, s


def infer_shape(node, in_shapes):
    if len(in_shapes) != 1:
        raise GraphError(f"max_pool1d {node.name!r}: needs exactly 1 input")
    h, w, c = in_shapes[0]
    k, s = _attrs(node)
    if w < k:
        raise GraphError(f"max_pool1d {node.name!r}: sequence of {w} is shorter than the window {k}")
    return (h, (w - k) // s + 1, c)


def macs(node, in_shape, out_shape) -> int:
    return 0


def _windows(x: np.ndarray, node) -> np.ndarray:
    """(N, H, W, C) -> (N, H, Wo, k, C) strided view of the windows."""
    k, s = _attrs(node)
    wo = (x.shape[2] - k) // s + 1
    n, h, _, c = x.shape
    sn, sh, sw, sc = x.strides
    return np.lib.stride_tricks.as_strided(x, (n, h, wo, k, c), (sn, sh, sw * s, sw, sc), writeable=False)


def forward_int8(node, x, qx, qy):
    return _windows(x, node).max(axis=3)


def forward_float(node, x):
    return _windows(x.astype(np.float32, copy=False), node).max(axis=3)


def forward_train(graph, node, ins, save_mask=False):
    if graph.dtype == "int8":
        return forward_int8(node, ins[0], None, None), None
    return forward_float(node, ins[0]), None


def grad_input(g_y: np.ndarray, x: np.ndarray, node) -> np.ndarray:
    k, s = _attrs(node)
    first = _windows(x, node).argmax(axis=3)  # (N, H, Wo, C): the first maximum of each window
    gx = np.zeros(x.shape, np.float32)
    n, h, wo, c = g_y.shape
    ni, hi, oi, ci = np.indices((n, h, wo, c), sparse=True)
    np.add.at(gx, (ni, hi, oi * s + first, ci), g_y.astype(np.float32))
    return gx


def backward(cx, n) -> list:
    t = n.inputs[0]
    if t not in cx.needs:
        return []
    return [TrainStep("max_pool1d_grad", n.name, [f"grad:{n.output}", t], [cx.grad_target(t, n)])]


# ----- C lowering ----------------------------------------------------------------------------------------
def _params(lx, node_name: str) -> str:
    node = lx.graph.node(node_name)
    h, w, c = lx.graph.tensors[node.inputs[0]].shape
    k, s = _attrs(node)
    name = f"mt_pmax{lx.graph.nodes.index(node)}"
    if name not in lx.prog.params:
        lx.prog.add_params(Params(name, "mt_max_pool1d_params", [h, w, c, k, s, (w - k) // s + 1]))
    return name


def lower(lx, node, mask) -> list[Step]:
    return [Step("mt_max_pool1d_s8", [Arg("params", _params(lx, node.name)), buf(node.inputs[0]), buf(node.output)],
                 [node.inputs[0]], [node.output], node.name)]


def _run_grad(rt, s, values, lr, t):
    values[s.outputs[0]] = grad_input(values[s.inputs[0]], values[s.inputs[1]], rt.nodes[s.node])


def _lower_grad(lx, s):
    gy, x = s.inputs
    return [Step("mt_max_pool1d_grad_f32", [Arg("params", _params(lx, s.node)), buf(gy), buf(x), buf(s.outputs[0])],
                 [gy, x], [s.outputs[0]], s.node, "backward")]


KINDS = {"max_pool1d_grad": Kind(_run_grad, _lower_grad, "backward")}

"""pad1d: zero padding of the time axis of a 1-D map, (1, L, C) -> (1, left + L + right, C).

1-D models use the (H = 1, W = L, C) layout so every 2-D conv kernel runs them unchanged (a Conv1d is a
conv2d with kernel (1, k)). The 2-D convs pad both axes equally, which would grow H = 1, so a padded Conv1d
is this op followed by an unpadded conv. int8: the pad value is the input's zero point (real 0), the
output keeps the input's quantisation; the gradient of the input is the output gradient's middle slice.
attrs: left, right (>= 0; unequal for causal padding). Works on any H (every row is padded alike).
"""
from __future__ import annotations

import numpy as np

from ..errors import GraphError
from ..ir.program import Arg, Params, Step, buf
from ..ir.training import Kind
from ..ir.training import Step as TrainStep

OP = "pad1d"
CLAMPS_OUTPUT = False  # copies values: nothing to clamp, no mask
TRAINABLE = False
INPLACE_INPUT = None
KEEPS_INPUT_QUANT = True  # int8 output scale/zero point = the input's (quant/ptq)


def _pads(node) -> tuple[int, int]:
    left, right = node.attrs.get("left"), node.attrs.get("right")
    if not (isinstance(left, int) and isinstance(right, int) and left >= 0 and right >= 0):
        raise GraphError(f"pad1d {node.name!r}: attrs left/right must be integers >= 0, got {node.attrs}")
    return left, right


def infer_shape(node, in_shapes):
    if len(in_shapes) != 1:
        raise GraphError(f"pad1d {node.name!r}: needs exactly 1 input")
    h, w, c = in_shapes[0]
    left, right = _pads(node)
    return (h, left + w + right, c)


def macs(node, in_shape, out_shape) -> int:
    return 0


def _pad(x: np.ndarray, node, value) -> np.ndarray:
    left, right = _pads(node)
    return np.pad(x, ((0, 0), (0, 0), (left, right), (0, 0)), constant_values=value)


def forward_int8(node, x, qx, qy):
    return _pad(x, node, np.int8(qx.zero_point))


def forward_float(node, x):
    return _pad(x.astype(np.float32, copy=False), node, np.float32(0))


def forward_train(graph, node, ins, save_mask=False):
    if graph.dtype == "int8":
        return forward_int8(node, ins[0], graph.tensors[node.inputs[0]].quant, None), None
    return forward_float(node, ins[0]), None


def grad_input(g_y: np.ndarray, node, in_shape) -> np.ndarray:
    left, _ = _pads(node)
    return np.ascontiguousarray(g_y[:, :, left : left + in_shape[1], :], dtype=np.float32)


def backward(cx, n) -> list:
    t = n.inputs[0]
    if t not in cx.needs:
        return []
    return [TrainStep("pad1d_grad", n.name, [f"grad:{n.output}"], [cx.grad_target(t, n)],
                      {"in_shape": tuple(cx.graph.tensors[t].shape)})]


# ----- C lowering ----------------------------------------------------------------------------------------
def _params(lx, node_name: str) -> str:
    node = lx.graph.node(node_name)
    h, w, c = lx.graph.tensors[node.inputs[0]].shape
    left, right = _pads(node)
    quant = lx.graph.tensors[node.inputs[0]].quant
    zero = int(quant.zero_point) if quant is not None else 0
    name = f"mt_ppad{lx.graph.nodes.index(node)}"
    if name not in lx.prog.params:
        lx.prog.add_params(Params(name, "mt_pad1d_params", [h, w, c, left, right, zero]))
    return name


def lower(lx, node, mask) -> list[Step]:
    return [Step("mt_pad1d_s8", [Arg("params", _params(lx, node.name)), buf(node.inputs[0]), buf(node.output)],
                 [node.inputs[0]], [node.output], node.name)]


def _run_grad(rt, s, values, lr, t):
    values[s.outputs[0]] = grad_input(values[s.inputs[0]], rt.nodes[s.node], s.attrs["in_shape"])


def _lower_grad(lx, s):
    return [Step("mt_pad1d_grad_f32", [Arg("params", _params(lx, s.node)), buf(s.inputs[0]), buf(s.outputs[0])],
                 [s.inputs[0]], [s.outputs[0]], s.node, "backward")]


KINDS = {"pad1d_grad": Kind(_run_grad, _lower_grad, "backward")}

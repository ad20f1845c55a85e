"""pad: explicit spatial zero padding (TFLite PAD, and the asymmetric 'SAME' padding of strided convs).

attrs: pads (top, bottom, left, right), each >= 0. int8: pads with the input's zero point, i.e. real 0,
so a conv after it sums exactly what a conv with built-in padding would; the output keeps the input's
scale and zero point. MACs 0; the gradient crops the padding off.
"""
from __future__ import annotations

import numpy as np

from ..errors import GraphError
from ..ir.program import Arg, Params, Step, buf, lit
from ..ir.training import Kind
from ..ir.training import Step as TrainStep

OP = "pad"
CLAMPS_OUTPUT = False  # copies codes: nothing to clamp, no mask
TRAINABLE = False
INPLACE_INPUT = None
KEEPS_INPUT_QUANT = True  # int8 output scale/zero point = the input's


def pads_of(attrs: dict, name: str = "?") -> tuple[int, int, int, int]:
    pads = tuple(int(v) for v in attrs["pads"])
    if len(pads) != 4 or min(pads) < 0:
        raise GraphError(f"node {name!r}: pads must be 4 non-negative ints (top, bottom, left, right), got {pads}")
    return pads


def infer_shape(node, in_shapes):
    if len(in_shapes) != 1:
        raise GraphError(f"pad {node.name!r}: needs exactly 1 input")
    (h, w, c), = in_shapes
    t, b, l, r = pads_of(node.attrs, node.name)
    return (h + t + b, w + l + r, c)


def macs(node, in_shape, out_shape) -> int:
    return 0


def _pad(x: np.ndarray, node, value) -> np.ndarray:
    t, b, l, r = pads_of(node.attrs, node.name)
    return np.pad(x, ((0, 0), (t, b), (l, r), (0, 0)), constant_values=value)


def forward_int8(node, x, qx, qy):
    return _pad(x, node, np.int8(qx.zero_point))


def forward_float(node, x):
    return _pad(x, node, np.float32(0))


# ----- backward (float32) -----------------------------------------------------------------------------
def grad_input(g_y: np.ndarray, attrs: dict, in_shape) -> np.ndarray:
    """The padded positions are constants: the input's gradient is g_y without them."""
    t, _, l, _ = pads_of(attrs)
    h, w, _ = in_shape
    return np.ascontiguousarray(g_y[:, t : t + h, l : l + w, :], dtype=np.float32)


def forward_train(graph, node, ins, save_mask=False):
    if graph.dtype == "int8":
        return forward_int8(node, ins[0], graph.tensors[node.inputs[0]].quant, None), None
    return forward_float(node, ins[0]), None


def backward(cx, n) -> list:
    t = n.inputs[0]
    if t not in cx.needs:
        return []
    return [TrainStep("pad_grad", n.name, [f"grad:{n.output}"], [cx.grad_target(t, n)],
                      {"pads": pads_of(n.attrs, n.name), "in_shape": tuple(cx.graph.tensors[t].shape)})]


# ----- C lowering ----------------------------------------------------------------------------------------
def lower(lx, node, mask) -> list[Step]:
    graph, prog = lx.graph, lx.prog
    x = node.inputs[0]
    h, w, c = graph.tensors[x].shape
    value = int(graph.tensors[x].quant.zero_point) if graph.dtype == "int8" else 0
    pname = f"mt_ppad{graph.nodes.index(node)}"
    if pname not in prog.params:
        prog.add_params(Params(pname, "mt_pad_params", [h, w, c, *pads_of(node.attrs, node.name), value]))
    return [Step("mt_pad_s8", [Arg("params", pname), buf(x), buf(node.output)], [x], [node.output], node.name)]


def _run_pad_grad(rt, s, values, lr, t):
    values[s.outputs[0]] = grad_input(values[s.inputs[0]], {"pads": s.attrs["pads"]}, s.attrs["in_shape"])


def _lower_pad_grad(lx, s):
    h, w, c = s.attrs["in_shape"]
    top, bottom, left, right = s.attrs["pads"]
    return [Step("mt_pad_grad_f32", [buf(s.inputs[0]), lit(h), lit(w), lit(c), lit(top), lit(left),
                                     lit(w + left + right), buf(s.outputs[0])],
                 [s.inputs[0]], [s.outputs[0]], s.node, "backward")]


KINDS = {"pad_grad": Kind(_run_pad_grad, _lower_pad_grad, "backward")}

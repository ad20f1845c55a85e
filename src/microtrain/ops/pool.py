"""global_avg_pool: mean over H and W, (H, W, C) -> (1, 1, C).

int8: stays in the input's quantisation domain (output scale/zero point = input's), rint(mean)
with ties to even, computed exactly in integers.
"""
from __future__ import annotations

import numpy as np

from ..errors import GraphError
from ..ir.program import Arg, Params, Step, buf, lit
from ..ir.training import Kind
from ..ir.training import Step as TrainStep
from ..quant.arith import avgpool_int8

OP = "global_avg_pool"
CLAMPS_OUTPUT = False  # a mean of in-range values stays in range: no clamp, no mask, no fused activation
TRAINABLE = False
INPLACE_INPUT = None
KEEPS_INPUT_QUANT = True  # int8 output scale/zero point = the input's (quant/ptq)


def infer_shape(node, in_shapes):
    if len(in_shapes) != 1:
        raise GraphError(f"global_avg_pool {node.name!r}: needs exactly 1 input")
    h, w, c = in_shapes[0]
    return (1, 1, c)


def macs(node, in_shape, out_shape) -> int:
    return 0


def forward_int8(node, x, qx, qy):
    return avgpool_int8(x)


def forward_float(node, x):
    return x.mean(axis=(1, 2), keepdims=True, dtype=np.float32)


# ----- backward (float32) -----------------------------------------------------------------------------
def grad_input(g_y: np.ndarray, in_shape) -> np.ndarray:
    """Mean over H*W: every input position receives g_y / (H*W) (rint is straight-through)."""
    h, w, c = in_shape
    g = g_y.astype(np.float32) / np.float32(h * w)
    return np.broadcast_to(g, (g_y.shape[0], h, w, c)).astype(np.float32)


def torch_forward(module, x):
    """The reference torch model's forward (reference/torch_model.py), NCHW tensors."""
    return x.mean(dim=(2, 3), keepdim=True)


def forward_train(graph, node, ins, save_mask=False):
    if graph.dtype == "int8":
        qx, qy = graph.tensors[node.inputs[0]].quant, graph.tensors[node.output].quant
        return forward_int8(node, ins[0], qx, qy), None
    return forward_float(node, ins[0]), None


def backward(cx, n) -> list:
    t = n.inputs[0]
    if t not in cx.needs:
        return []
    return [TrainStep("pool_grad", n.name, [f"grad:{n.output}"], [cx.grad_target(t, n)],
                      {"in_shape": tuple(cx.graph.tensors[t].shape)})]


# ----- C lowering ----------------------------------------------------------------------------------------
def lower(lx, node, mask) -> list[Step]:
    graph, prog = lx.graph, lx.prog
    h, w, c = graph.tensors[node.inputs[0]].shape
    pname = f"mt_ppool{graph.nodes.index(node)}"
    if pname not in prog.params:
        prog.add_params(Params(pname, "mt_pool_params", [h, w, c]))
    return [Step("mt_global_avg_pool_s8", [Arg("params", pname), buf(node.inputs[0]), buf(node.output)],
                 [node.inputs[0]], [node.output], node.name)]


def _run_pool_grad(rt, s, values, lr, t):
    values[s.outputs[0]] = grad_input(values[s.inputs[0]], s.attrs["in_shape"])


def _lower_pool_grad(lx, s):
    h, w, c = s.attrs["in_shape"]
    return [Step("mt_pool_grad_f32", [buf(s.inputs[0]), lit(h * w), lit(c), buf(s.outputs[0])],
                 [s.inputs[0]], [s.outputs[0]], s.node, "backward")]


KINDS = {"pool_grad": Kind(_run_pool_grad, _lower_pool_grad, "backward")}

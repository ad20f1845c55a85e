"""A toy op: `toy_clip` clamps int8 codes to [attrs lo, attrs hi] (the output keeps the input's quantisation;
gradients pass where the input was inside). It lives outside src/ on purpose: registering this one module
(ops.register) and its kernel (clip.c/.h beside it) is all it takes for validation, the NumPy forward,
autodiff, the passes, the NumPy training step, C lowering and the generated C project to handle it."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from microtrain.errors import GraphError
from microtrain.ir.program import Step, buf, lit
from microtrain.ir.training import Kind
from microtrain.ir.training import Step as TrainStep

OP = "toy_clip"
CLAMPS_OUTPUT = True
TRAINABLE = False
INPLACE_INPUT = None
KEEPS_INPUT_QUANT = True
C_SOURCES = (Path(__file__).with_suffix(".c"),)
C_HEADERS = (Path(__file__).with_suffix(".h"),)


def infer_shape(node, in_shapes):
    if len(in_shapes) != 1 or not -128 <= node.attrs["lo"] <= node.attrs["hi"] <= 127:
        raise GraphError(f"toy_clip {node.name!r}: one input and -128 <= lo <= hi <= 127")
    return tuple(in_shapes[0])


def macs(node, in_shape, out_shape) -> int:
    return 0


def forward_int8(node, x, qx, qy):
    return np.clip(x, node.attrs["lo"], node.attrs["hi"]).astype(np.int8)


def forward_float(node, x):
    return np.clip(x, node.attrs["lo"], node.attrs["hi"]).astype(np.float32)


def forward_train(graph, node, ins, save_mask=False):
    x = ins[0]
    y = forward_int8(node, x, None, None) if graph.dtype == "int8" else forward_float(node, x)
    inside = (x >= node.attrs["lo"]) & (x <= node.attrs["hi"])
    return y, inside if save_mask else None


def backward(cx, n):
    x = n.inputs[0]
    if x not in cx.needs:
        return []
    return [TrainStep("toy_clip_grad", n.name, [f"grad:{n.output}", f"mask:{n.name}"], [cx.grad_target(x, n)])]


def lower(lx, node, mask):
    x, y = node.inputs[0], node.output
    return [Step("mt_toy_clip_s8", [buf(x), lit(lx.graph.tensors[x].numel), lit(node.attrs["lo"]), lit(node.attrs["hi"]),
                                    buf(y), buf(mask) if mask else lit("NULL")], [x], [y] + ([mask] if mask else []),
                 node.name)]


def _run_grad(rt, s, values, lr, t):
    values[s.outputs[0]] = np.where(values[s.inputs[1]], values[s.inputs[0]], np.float32(0)).astype(np.float32)


def _lower_grad(lx, s):
    gy, mask = s.inputs
    out = s.outputs[0]
    n = int(np.prod(lx.tg.tensors[out].shape))
    return [Step("mt_toy_clip_grad_f32", [buf(gy), buf(mask), lit(n), buf(out)], [gy, mask], [out], s.node, "backward")]


KINDS = {"toy_clip_grad": Kind(_run_grad, _lower_grad, "backward", inplace=0)}

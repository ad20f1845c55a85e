"""add: residual sum of two tensors of equal shape (inputs: [skip, main]).

int8: each addend is dequantised with its own tensor's scale/zero point, the float32 sum is
requantised to the output's (quant/arith.add_requant).
"""
from __future__ import annotations

import numpy as np

from ..errors import GraphError
from ..ir.program import Arg, Params, Step, buf, c_float, lit
from ..ir.training import Kind
from ..ir.training import Step as TrainStep
from ..quant.arith import (add_params_tflite, add_preclamp, add_preclamp_tflite, add_requant, add_requant_tflite,
                           requant_mode)
from .common import clamp_float, clamp_int8, int8_clamp, masked_gradient, refuse_tiles_in_tflite_mode
from .conv import apply_activation

OP = "add"
CLAMPS_OUTPUT = True  # output clamped to its range (an activation may fuse in); training saves the mask
TRAINABLE = False
INPLACE_INPUT = 1  # the output may overwrite the main input when it dies here
KEEPS_INPUT_QUANT = False  # the output has its own calibrated scale/zero point (quant/ptq)


def infer_shape(node, in_shapes):
    if len(in_shapes) != 2:
        raise GraphError(f"add {node.name!r}: needs exactly 2 inputs, got {len(in_shapes)}")
    a, b = in_shapes
    if tuple(a) != tuple(b):
        raise GraphError(f"add {node.name!r}: input shapes differ: {tuple(a)} vs {tuple(b)}")
    return tuple(a)


def window_in(node, lo: int, hi: int, axis: int) -> list[tuple[int, int]]:
    """Patch-based execution (patching.py): both addends are read on the output's own rows (or columns)."""
    return [(lo, hi), (lo, hi)]


def macs(node, in_shape, out_shape) -> int:
    return 0


def forward_int8(node, a, b, qa, qb, qy):
    if requant_mode(node) == "tflite":
        return add_requant_tflite(a, qa.zero_point, qa.scale, b, qb.zero_point, qb.scale, qy.scale, qy.zero_point,
                                  int8_clamp(node))
    return add_requant(a, qa.zero_point, qa.scale, b, qb.zero_point, qb.scale, qy.scale, qy.zero_point)


def forward_float(node, a, b):
    y = a + b
    act = node.attrs.get("activation")
    if act is not None:
        y = apply_activation(y, act)
    return y


# ----- backward (float32; see docs/training-semantics.md) ---------------------------------------------
def grad_addend(g_y, mask, scale):
    """Gradient w.r.t. one addend: g_y * mask * scale, scale = s_addend / s_y (int8) or 1 (float).

    Each addend gets its own contribution; a tensor that also feeds other ops (the skip branch)
    sums every contribution (autodiff emits a grad_sum step): none is dropped.
    """
    return masked_gradient(g_y, scale, mask)


def torch_forward(module, a, b):
    """The reference torch model's forward (reference/torch_model.py), NCHW tensors."""
    return a + b


def forward_train(graph, node, ins, save_mask=False):
    """(y, clamp mask or None); int8 graphs follow quant/arith bit for bit."""
    if graph.dtype == "int8":
        qa, qb = (graph.tensors[t].quant for t in node.inputs)
        qy = graph.tensors[node.output].quant
        if not save_mask:
            return forward_int8(node, *ins, qa, qb, qy), None
        if requant_mode(node) == "tflite":
            return clamp_int8(add_preclamp_tflite(ins[0], qa.zero_point, qa.scale, ins[1], qb.zero_point, qb.scale,
                                                  qy.scale, qy.zero_point), *int8_clamp(node))
        return clamp_int8(add_preclamp(ins[0], qa.zero_point, qa.scale, ins[1], qb.zero_point, qb.scale,
                                       qy.scale, qy.zero_point))
    return clamp_float(graph, node, ins[0] + ins[1], save_mask)


def backward(cx, n) -> list:
    """One add_grad step per addend that needs a gradient."""
    gy, mask = f"grad:{n.output}", f"mask:{n.name}"
    ys = cx.graph.tensors[n.output].quant
    steps = []
    for idx, t in enumerate(n.inputs):
        if t not in cx.needs:
            continue
        s = np.float32(np.float64(cx.graph.tensors[t].quant.scale) / np.float64(ys.scale)) if cx.int8 else 1.0
        steps.append(TrainStep("add_grad", n.name, [gy, mask], [cx.grad_target(t, n)], {"index": idx, "scale": float(s)}))
    return steps


# ----- C lowering ----------------------------------------------------------------------------------------
def lower(lx, node, mask) -> list[Step]:
    if requant_mode(node) == "tflite":
        return _lower_tflite(lx, node, mask, f"mt_padd{lx.graph.nodes.index(node)}")
    return _add_step(lx, node, node.inputs, node.output, lx.graph.tensors[node.output].numel, mask)


def lower_tile(lx, node, ins, in_shapes, out, out_shape) -> list[Step]:
    """One tile's sum (codegen/patch.py): the same arithmetic on the tile's elements."""
    refuse_tiles_in_tflite_mode(node)
    return _add_step(lx, node, ins, out, int(np.prod(out_shape)), None)


def _add_step(lx, node, ins, out, numel, mask) -> list[Step]:
    graph, prog = lx.graph, lx.prog
    skip, main = ins
    qa, qb, qy = (graph.tensors[t].quant for t in (*node.inputs, node.output))
    pname = f"mt_padd{graph.nodes.index(graph.node(node.name))}"
    if numel != graph.tensors[node.output].numel:
        pname += f"_{numel}"
    if pname not in prog.params:  # inference and training share the struct
        prog.add_params(Params(pname, "mt_add_params", [
            numel, qa.zero_point, qb.zero_point, qy.zero_point,
            np.float32(qa.scale), np.float32(qb.scale), np.float32(qy.scale)]))
    return [Step("mt_add_s8", [Arg("params", pname), buf(skip), buf(main), buf(out),
                               buf(mask) if mask else lit("NULL")],
                 [skip, main], [out] + ([mask] if mask else []), node.name,
                 inplace=(out, main))]


def _lower_tflite(lx, node, mask, pname) -> list[Step]:
    """The "tflite" rounding mode's add (kernels/mt_forward_tfl_s8.c): TFLite's fixed-point rescaling."""
    graph, prog = lx.graph, lx.prog
    skip, main = node.inputs
    qa, qb, qy = (graph.tensors[t].quant for t in (skip, main, node.output))
    if pname not in prog.params:
        a = add_params_tflite(qa.scale, qb.scale, qy.scale)
        prog.add_params(Params(pname, "mt_add_tfl_params", [
            graph.tensors[node.output].numel, qa.zero_point, qb.zero_point, qy.zero_point,
            *(int(a[k]) for k in ("m1", "e1", "m2", "e2", "mo", "eo")), *int8_clamp(node)]))
    return [Step("mt_add_tfl_s8", [Arg("params", pname), buf(skip), buf(main), buf(node.output),
                                   buf(mask) if mask else lit("NULL")],
                 [skip, main], [node.output] + ([mask] if mask else []), node.name, inplace=(node.output, main))]


def _run_add_grad(rt, s, values, lr, t):
    values[s.outputs[0]] = grad_addend(values[s.inputs[0]], values[s.inputs[1]], s.attrs["scale"])


def _lower_add_grad(lx, s):
    gy, mask = s.inputs
    out = s.outputs[0]
    n = int(np.prod(lx.tg.tensors[out].shape))
    return [Step("mt_add_grad_f32", [buf(gy), buf(mask), lit(c_float(s.attrs["scale"])), lit(n), buf(out)],
                 [gy, mask], [out], s.node, "backward")]


KINDS = {"add_grad": Kind(_run_add_grad, _lower_add_grad, "backward", inplace=0)}

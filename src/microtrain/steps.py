"""The table of training step kinds: for each, its NumPy executor and its C lowering (ir.training.Kind).

Like torch.fx's Interpreter, running or lowering a training graph is one loop that looks each step's
kind up here (runtime.training.TrainingRuntime, codegen.lower_train). The generic kinds are below;
each op module contributes the kinds of its own backward (ops/<op>.py: KINDS), so a new op adds its
kinds without editing this file. `kinds()` lists every kind; an unknown one fails in `kind()`.

Generic kinds (ops add conv_grad_acc/_input/_weight/_bias, conv_weight_update, conv_bias_update,
add_grad, pool_grad; autodiff.py documents each kind's tensors and attrs):
    forward            run graph node `node` with the op's forward_train (and its clamp mask)
    loss_softmax_ce    softmax cross-entropy of the logits and its gradient
    grad_sum           sum of the gradient contributions at a fan-out
    sgd_update         update one parameter from its gradient (quant/update); fused by the passes
    slice_channels     copy the trained input channels of a conv's input (passes.slice_inputs)
"""
from __future__ import annotations

import numpy as np

from .errors import GraphError
from .ir.program import Const, Step, buf, c_float, const, lit
from .ir.training import Kind
from .ops import REGISTRY, op_module
from .ops.loss import grad_int8_logits, softmax_cross_entropy

FORWARD = "forward"
SGD_UPDATE = "sgd_update"  # the unfused update autodiff emits (passes.fuse_updates merges it into its gradient)


# ----- forward -------------------------------------------------------------------------------------------
def run_forward(rt, s, values, with_masks: bool = True):
    node = rt.nodes[s.node]
    save = with_masks and s.attrs.get("save_mask", False)
    y, mask = op_module(node).forward_train(rt.graph, node, [values[t] for t in node.inputs], save)
    values[s.outputs[0]] = y
    if save:
        values[s.outputs[1]] = mask


def _lower_forward(lx, s):
    node = lx.graph.node(s.node)
    return op_module(node).lower(lx, node, s.outputs[1] if len(s.outputs) > 1 else None)


def _forward_inplace(s, graph):
    return op_module(graph.node(s.node)).INPLACE_INPUT


# ----- loss ----------------------------------------------------------------------------------------------
def _run_loss(rt, s, values, lr, t):
    logits = values[s.inputs[0]]
    n = logits.shape[0]
    labels = values[s.inputs[1]]
    if rt.tg.numerics == "int8":
        loss, g = grad_int8_logits(logits.reshape(n, -1), labels, s.attrs["scale"], s.attrs["zero_point"], rt.sums)
    else:
        loss, g = softmax_cross_entropy(logits.reshape(n, -1), labels, rt.sums)
    values[s.outputs[0]] = loss
    values[s.outputs[1]] = g.reshape(logits.shape)


def _lower_loss(lx, s):
    logits, g = s.inputs[0], s.outputs[1]
    return [Step("mt_loss_softmax_ce_s8", [buf(logits), lit(lx.graph.num_classes), lit(int(s.attrs["zero_point"])),
                                           lit(c_float(s.attrs["scale"])), lit("label"), lit("loss"), buf(g)],
                 [logits], [g], "loss", "loss")]


# ----- fan-out sums, updates, saved slices ---------------------------------------------------------------
def _run_grad_sum(rt, s, values, lr, t):
    total = values[s.inputs[0]].astype(np.float32, copy=True)
    for name in s.inputs[1:]:
        total += values[name]
    values[s.outputs[0]] = total


def _lower_grad_sum(lx, s):
    out = s.outputs[0]
    n = int(np.prod(lx.tg.tensors[out].shape))
    first, second = s.inputs[0], s.inputs[1]
    calls = [Step("mt_grad_sum_f32", [buf(first), buf(second), lit(n), buf(out)], [first, second], [out],
                  s.node, "backward")]
    for name in s.inputs[2:]:
        calls.append(Step("mt_grad_sum_f32", [buf(out), buf(name), lit(n), buf(out)], [out, name], [out], s.node,
                          "backward"))
    return calls


def _run_sgd_update(rt, s, values, lr, t):
    rt.update(s.attrs, rt.nodes[s.node], values[s.inputs[0]], lr, t)


def _run_slice(rt, s, values, lr, t):
    values[s.outputs[0]] = np.ascontiguousarray(values[s.inputs[0]][..., list(s.attrs["channels"])])


def _lower_slice(lx, s):
    x, out = s.inputs[0], s.outputs[0]
    ch = s.attrs["channels"]
    idx = lx.prog.add_const(Const(f"mt_si{lx.layouts[s.node].idx}", np.array(ch, np.int16), "int16"))
    c = lx.graph.tensors[x].shape[-1]
    return [Step("mt_slice_channels_s8", [buf(x), lit(lx.graph.tensors[x].numel), lit(c), const(idx.name),
                                          lit(len(ch)), buf(out)], [x], [out], s.node, "forward")]


_HEAD = {
    FORWARD: Kind(run_forward, _lower_forward, "forward", inplace=_forward_inplace, reads_params=True),
    "loss_softmax_ce": Kind(_run_loss, _lower_loss, "loss"),
}
_TAIL = {
    "grad_sum": Kind(_run_grad_sum, _lower_grad_sum, "backward", inplace=0),
    SGD_UPDATE: Kind(_run_sgd_update, None, "update"),
    "slice_channels": Kind(_run_slice, _lower_slice, "forward"),
}


def kinds() -> dict[str, Kind]:
    """Every step kind: forward and the loss, each registered op's backward kinds, then the rest."""
    out = dict(_HEAD)
    for m in REGISTRY.values():
        out.update(m.KINDS)
    out.update(_TAIL)
    return out


def kind(name: str) -> Kind:
    table = kinds()
    try:
        return table[name]
    except KeyError:
        raise GraphError(f"unknown training step kind {name!r}; known kinds: {', '.join(table)}") from None


def is_forward(s) -> bool:
    """A step that runs a graph node (the forward pass of the training step)."""
    return s.kind == FORWARD


def is_update(s) -> bool:
    return kind(s.kind).phase == "update"


def is_sgd_update(s) -> bool:
    return s.kind == SGD_UPDATE


def inplace_input(s, graph) -> str | None:
    """The input `s` may write its output over (passes.mark_inplace), or None."""
    where = kind(s.kind).inplace
    if callable(where):
        where = where(s, graph)
    return None if where is None else s.inputs[where]


def lower(lx, s) -> list:
    k = kind(s.kind)
    if k.lower is None:
        raise GraphError(f"training step kind {s.kind!r} (node {s.node!r}) has no C lowering; run the default passes first")
    return k.lower(lx, s)


__all__ = ["FORWARD", "SGD_UPDATE", "is_sgd_update", "kinds", "kind", "is_forward", "is_update", "inplace_input", "lower", "run_forward"]

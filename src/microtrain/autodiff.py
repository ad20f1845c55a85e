"""Autodiff at compile time: forward Graph + trained parameters -> TrainingGraph.

A TrainingGraph is an explicit, ordered list of Steps over named tensors, built once, ahead of time.
Executing the steps in order performs one SGD step on a batch (runtime/training.py does it in NumPy;
the C code generator emits one kernel call per step). docs/training-semantics.md gives the numerics.

Tensor names (all per sample; every step reads and writes whole tensors, batch-major):
    <t>                  a forward tensor of the graph (int8 codes, or float32 in float numerics)
    mask:<node>          bool, the clamp mask of a node's output: pre-clamp value inside the output range
    grad:<t>             float32, d loss / d <t> (w.r.t. the int8 codes, straight-through rint)
    grad:<t>@<node>      float32, <node>'s contribution to grad:<t> when <t> fans out to several nodes
    grad_acc:<node>      float32, d loss / d the conv's accumulator (acc + bias before the multiplier)
    grad:<node>.weight   float32, d loss / d W[trained slice]   (see Step kinds below for the slice)
    grad:<node>.bias     float32 [O], d loss / d bias
    labels               int (N,) class indices;  loss: float32 scalar (batch mean)

Step kinds (`Step.kind`; `node` is the forward node a step belongs to; attrs are constants):
    forward            run graph node `node`: inputs = its inputs, outputs = [y] or [y, mask:<node>]
                       (attrs.save_mask: the mask is only produced where a backward step reads it).
    loss_softmax_ce    inputs [logits, labels] -> [loss, grad:logits]; attrs scale, zero_point
                       (real logits = (q - zero_point) * scale; float numerics: scale 1, zero 0).
    conv_grad_acc      inputs [grad:y, mask:node] -> [grad_acc:node]; g_acc = g * mask * attrs.scale[c]
                       (scale = eff = x_scale * w_scale[c] / y_scale as float32; ones in float numerics).
    conv_grad_input    inputs [grad_acc:node] -> [grad:x or grad:x@node]; transposed conv with the node's
                       CURRENT weight (the update of this node's weight comes after this step);
                       attrs in_shape (H, W, C).
    conv_grad_weight   inputs [x, grad_acc:node] -> [grad:node.weight]; correlation of (x - x_zero) with
                       g_acc over the trained input channels attrs.channels only; attrs x_zero.
                       Shape (O, k, kh, kw) = W[:, channels]; depthwise (k, 1, kh, kw) = W[channels].
    conv_grad_bias     inputs [grad_acc:node] -> [grad:node.bias]; sum over batch, H, W.
    add_grad           inputs [grad:y, mask:node] -> [grad of addend attrs.index (0 skip, 1 main)];
                       g * mask * attrs.scale (s_addend / s_y as float32; 1 in float numerics).
    pool_grad          inputs [grad:y] -> [grad:x]; g / (H*W) broadcast over attrs.in_shape.
    grad_sum           inputs [grad:t@a, grad:t@b, ...] -> [grad:t]; elementwise float32 sum in input
                       order (gradients accumulate at every fan-out, e.g. the residual skip).
    sgd_update         inputs [grad:node.<param>] -> []; updates graph node `node`'s params[attrs.param]
                       in place at attrs.channels (None: all) with the runtime learning rate:
                       delta = -lr * grad / attrs.divisor[c] (QAS divisor per output channel; ones
                       without QAS), then attrs.rounding ("nearest" | "stochastic" | "none") and
                       attrs.saturate ("int8" | "int32" | None); attrs.param_id seeds stochastic rounding;
                       attrs.momentum (0: plain SGD) keeps a float32 buffer of the slice's shape.

Order: all forward steps, the loss, then per node in reverse execution order its backward steps;
each sgd_update follows its gradient directly. This is equivalent to updating after the whole
backward because a node's parameters are read by no later step (conv_grad_input of the node
comes first). Pruning: only tensors that depend on a trained parameter get gradients, so the frozen
prefix has no backward steps and no conv_grad_input is emitted into it; weight gradients cover the
trained channels only.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import GraphError, UnsupportedOpError
from .ir.graph import Graph, Node
from .ops.conv import is_depthwise
from .quant.qas import qas_divisors
from .sparse.scheme import TrainSpec

STEP_KINDS = ("forward", "loss_softmax_ce", "conv_grad_acc", "conv_grad_input", "conv_grad_weight",
              "conv_grad_bias", "add_grad", "pool_grad", "grad_sum", "sgd_update")
ROUNDINGS = ("nearest", "stochastic", "none")


@dataclass
class Step:
    kind: str
    node: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict = field(default_factory=dict)


@dataclass
class TensorInfo:
    name: str
    shape: tuple  # per sample; () for scalars and labels
    dtype: str  # "int8" | "float32" | "bool" | "int64"
    role: str  # "activation" | "mask" | "grad" | "param_grad" | "labels" | "loss"


@dataclass
class TrainingGraph:
    """Forward + backward + update steps of one SGD step. `graph`'s node params are the trained state
    (sgd_update steps write them in place). `numerics` is "int8" (int8 forward, float32 backward) or
    "float32" (a float graph, e.g. the dequantised baseline)."""

    graph: Graph
    numerics: str
    trained: dict[str, TrainSpec]
    steps: list[Step]
    tensors: dict[str, TensorInfo]
    boundary: list[str]  # tensors entering the trained part (outputs of the frozen prefix)
    n_prefix: int  # the first n_prefix steps are forward steps of the frozen prefix
    labels: str = "labels"
    loss: str = "loss"

    @property
    def logits(self) -> str:
        return self.graph.output

    def steps_of(self, kind: str) -> list[Step]:
        return [s for s in self.steps if s.kind == kind]

    def updates(self) -> list[Step]:
        return self.steps_of("sgd_update")

    def summary(self) -> str:
        counts = {k: len(self.steps_of(k)) for k in STEP_KINDS}
        body = ", ".join(f"{k} {v}" for k, v in counts.items() if v)
        return f"TrainingGraph({self.graph.name}, {self.numerics}, {len(self.steps)} steps: {body})"


def clamp_range(graph: Graph, node: Node) -> tuple[float, float]:
    """The output range a node clamps to: int8 codes [-128, 127], or a float graph's clamp/activation."""
    if graph.dtype == "int8":
        return (-128.0, 127.0)
    if "clamp" in node.attrs:
        lo, hi = node.attrs["clamp"]
        return (float(lo), float(hi))
    act = node.attrs.get("activation")
    return {None: (-np.inf, np.inf), "relu": (0.0, np.inf), "relu6": (0.0, 6.0)}.get(act, (-np.inf, np.inf))


def build_training_graph(graph: Graph, trained: dict[str, TrainSpec], *, qas: bool = True,
                         rounding: str = "stochastic", momentum: float = 0.0) -> TrainingGraph:
    """Build the training steps of `graph` for the trained parameters `trained` (UpdateScheme.resolve)."""
    if graph.dtype not in ("int8", "float32"):
        raise GraphError(f"graph {graph.name!r}: cannot train dtype {graph.dtype!r}")
    if rounding not in ROUNDINGS:
        raise GraphError(f"rounding must be one of {ROUNDINGS}, got {rounding!r}")
    int8 = graph.dtype == "int8"
    names = {n.name for n in graph.nodes}
    for name, spec in trained.items():
        if name not in names:
            raise GraphError(f"graph {graph.name!r}: trained layer {name!r} is not a node of the graph")
        if graph.node(name).op != "conv2d":
            raise UnsupportedOpError(f"layer {name!r}: only conv2d parameters can be trained")
    for n in graph.nodes:
        if n.op not in ("conv2d", "add", "global_avg_pool"):
            raise UnsupportedOpError(f"layer {n.name!r}: op {n.op!r} has no gradient rule; freeze it")

    # which tensors depend on a trained parameter (they need gradients)
    needs = set()
    for n in graph.nodes:
        if n.name in trained or any(t in needs for t in n.inputs):
            needs.add(n.output)
    if graph.output not in needs:
        raise GraphError(f"graph {graph.name!r}: no trained parameter reaches the output")
    n_prefix = next(i for i, n in enumerate(graph.nodes) if n.output in needs)
    produced_late = {n.output for n in graph.nodes[n_prefix:]}
    boundary = []
    for n in graph.nodes[n_prefix:]:
        for t in n.inputs:
            if t not in produced_late and t not in boundary:
                boundary.append(t)

    tensors: dict[str, TensorInfo] = {}
    for name, spec in graph.tensors.items():
        tensors[name] = TensorInfo(name, tuple(spec.shape), spec.dtype, "activation")
    steps: list[Step] = []
    for i, n in enumerate(graph.nodes):
        save_mask = n.output in needs and n.op in ("conv2d", "add")
        outs = [n.output]
        if save_mask:
            outs.append(f"mask:{n.name}")
            tensors[outs[1]] = TensorInfo(outs[1], tuple(graph.tensors[n.output].shape), "bool", "mask")
        steps.append(Step("forward", n.name, list(n.inputs), outs, {"save_mask": save_mask}))

    out_q = graph.output_spec.quant
    scale, zero = (float(out_q.scale), int(out_q.zero_point)) if int8 else (1.0, 0)
    tensors["labels"] = TensorInfo("labels", (), "int64", "labels")
    tensors["loss"] = TensorInfo("loss", (), "float32", "loss")
    _grad_tensor(tensors, graph, graph.output)
    steps.append(Step("loss_softmax_ce", "", [graph.output, "labels"], ["loss", f"grad:{graph.output}"],
                      {"scale": scale, "zero_point": zero}))

    # consumers needing to send a gradient to each tensor, for fan-out accumulation
    senders: dict[str, list[str]] = {}
    for n in graph.nodes:
        for t in n.inputs:
            if t in needs:
                senders.setdefault(t, []).append(n.name)

    def grad_target(t: str, node: Node) -> str:
        name = f"grad:{t}" if len(senders[t]) == 1 else f"grad:{t}@{node.name}"
        _grad_tensor(tensors, graph, t, name)
        return name

    param_id = 0
    for n in reversed(graph.nodes):
        if n.output not in needs:
            continue
        gy = f"grad:{n.output}"
        if len(senders.get(n.output, [])) > 1:  # sum every consumer's contribution first
            parts = [f"grad:{n.output}@{c}" for c in senders[n.output]]
            _grad_tensor(tensors, graph, n.output)
            steps.append(Step("grad_sum", n.name, parts, [gy]))
        mask = f"mask:{n.name}"
        if n.op == "conv2d":
            steps.extend(_conv_backward(graph, n, trained.get(n.name), needs, tensors, grad_target, int8))
            spec = trained.get(n.name)
            if spec is not None:
                for param in ("weight", "bias"):
                    if (param == "weight" and spec.channels is None) or (param == "bias" and not spec.bias):
                        continue
                    steps.insert(_after_grad(steps, f"grad:{n.name}.{param}"),
                                 _update_step(graph, n, param, spec, qas, rounding, momentum, param_id, int8))
                    param_id += 1
        elif n.op == "add":
            ys = graph.tensors[n.output].quant
            for idx, t in enumerate(n.inputs):
                if t not in needs:
                    continue
                s = np.float32(np.float64(graph.tensors[t].quant.scale) / np.float64(ys.scale)) if int8 else 1.0
                steps.append(Step("add_grad", n.name, [gy, mask], [grad_target(t, n)],
                                  {"index": idx, "scale": float(s)}))
        elif n.op == "global_avg_pool":
            t = n.inputs[0]
            if t in needs:
                steps.append(Step("pool_grad", n.name, [gy], [grad_target(t, n)],
                                  {"in_shape": tuple(graph.tensors[t].shape)}))
    return TrainingGraph(graph, "int8" if int8 else "float32", dict(trained), steps, tensors, boundary, n_prefix)


def _grad_tensor(tensors, graph, t, name=None):
    name = name or f"grad:{t}"
    tensors[name] = TensorInfo(name, tuple(graph.tensors[t].shape), "float32", "grad")
    return name


def _after_grad(steps: list[Step], grad: str) -> int:
    for i, s in enumerate(steps):
        if grad in s.outputs:
            return i + 1
    raise AssertionError(grad)


def _conv_backward(graph, n, spec, needs, tensors, grad_target, int8):
    x = n.inputs[0]
    gy, gacc = f"grad:{n.output}", f"grad_acc:{n.name}"
    o = n.params["weight"].shape[0]
    if int8:
        from .quant.arith import conv_multipliers

        xq, yq = graph.tensors[x].quant, graph.tensors[n.output].quant
        scale = conv_multipliers(xq.scale, n.params["w_scales"], yq.scale)
        x_zero = int(xq.zero_point)
    else:
        scale, x_zero = np.ones(o, np.float32), 0
    tensors[gacc] = TensorInfo(gacc, tuple(graph.tensors[n.output].shape), "float32", "grad")
    steps = [Step("conv_grad_acc", n.name, [gy, f"mask:{n.name}"], [gacc], {"scale": scale})]
    if x in needs:
        steps.append(Step("conv_grad_input", n.name, [gacc], [grad_target(x, n)],
                          {"in_shape": tuple(graph.tensors[x].shape)}))
    if spec is not None and spec.channels is not None:
        w = n.params["weight"]
        k = len(spec.channels)
        shape = (k, 1) + w.shape[2:] if is_depthwise(n) else (w.shape[0], k) + w.shape[2:]
        name = f"grad:{n.name}.weight"
        tensors[name] = TensorInfo(name, shape, "float32", "param_grad")
        steps.append(Step("conv_grad_weight", n.name, [x, gacc], [name],
                          {"channels": tuple(spec.channels), "x_zero": x_zero}))
    if spec is not None and spec.bias:
        name = f"grad:{n.name}.bias"
        tensors[name] = TensorInfo(name, (o,), "float32", "param_grad")
        steps.append(Step("conv_grad_bias", n.name, [gacc], [name]))
    return steps


def _update_step(graph, n, param, spec, qas, rounding, momentum, param_id, int8):
    o = n.params["weight"].shape[0]
    if int8 and qas:
        divisor = qas_divisors(graph, n)[param]
    else:
        divisor = np.ones(o, np.float32)
    channels = None if param == "bias" else tuple(spec.channels)
    return Step("sgd_update", n.name, [f"grad:{n.name}.{param}"], [], {
        "param": param,
        "channels": channels,
        "depthwise": bool(is_depthwise(n)),
        "divisor": divisor,
        "rounding": rounding if int8 else "none",
        "saturate": ("int8" if param == "weight" else "int32") if int8 else None,
        "param_id": param_id,
        "momentum": float(momentum),
    })

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

Step kinds autodiff emits (`Step.kind`; `node` is the forward node a step belongs to; attrs are
constants). steps.py is the table of every kind (these, and conv_weight_update, conv_bias_update and
slice_channels which the passes introduce) with its NumPy executor and its C lowering; each op module
emits its own backward steps (ops/<op>.py: backward), autodiff only orders them:
    forward            run graph node `node`: inputs = its inputs, outputs = [y] or [y, mask:<node>]
                       (attrs.save_mask: the mask is only produced where a backward step reads it).
    loss_softmax_ce    inputs [logits, labels] -> [loss, grad:logits]; attrs scale, zero_point
                       (real logits = (q - zero_point) * scale; float numerics: scale 1, zero 0).
    conv_grad_acc      inputs [grad:y, mask:node] -> [grad_acc:node]; g_acc = g * mask * attrs.scale[c]
                       (scale = eff = x_scale * w_scale[c] / y_scale as float32; ones in float numerics).
    conv_grad_input    inputs [grad_acc:node] -> [grad:x or grad:x@node]; transposed conv with the node's
                       CURRENT weight (the update of this node's weight comes after this step);
                       attrs in_shape (H, W, C); attrs.backward "int16" (build_training_graph's
                       backward="int16", pointwise convs only): g_acc quantised to int16, exact int32 sums.
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

from .errors import GraphError, UnsupportedOpError
from .ir.graph import Graph, Node
from .ir.training import Step, TensorInfo
from .ops import op_module
from .ops.common import clamp_range  # noqa: F401  (re-exported: the clamp training forwards use)
from .sparse.scheme import TrainSpec
from .steps import SGD_UPDATE, kinds

ROUNDINGS = ("nearest", "stochastic", "none")
BACKWARDS = ("float", "int16")  # the input-gradient arithmetic (docs/training-semantics.md, section 4b)


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
        return self.steps_of(SGD_UPDATE)

    def summary(self) -> str:
        counts = {k: len(self.steps_of(k)) for k in kinds()}
        body = ", ".join(f"{k} {v}" for k, v in counts.items() if v)
        return f"TrainingGraph({self.graph.name}, {self.numerics}, {len(self.steps)} steps: {body})"


def build_training_graph(graph: Graph, trained: dict[str, TrainSpec], *, qas: bool = True,
                         rounding: str = "stochastic", momentum: float = 0.0,
                         backward: str = "float") -> TrainingGraph:
    """Build the training steps of `graph` for the trained parameters `trained` (UpdateScheme.resolve).
    backward="int16": pointwise convs' input gradients in integers (conv_grad_input attrs.backward)."""
    if graph.dtype not in ("int8", "float32"):
        raise GraphError(f"graph {graph.name!r}: cannot train dtype {graph.dtype!r}")
    if rounding not in ROUNDINGS:
        raise GraphError(f"rounding must be one of {ROUNDINGS}, got {rounding!r}")
    if backward not in BACKWARDS:
        raise GraphError(f"backward must be one of {BACKWARDS}, got {backward!r}")
    int8 = graph.dtype == "int8"
    if backward != "float" and not int8:
        raise GraphError(f"graph {graph.name!r}: the {backward} backward needs an int8 graph, got {graph.dtype}")
    names = {n.name for n in graph.nodes}
    for name, spec in trained.items():
        if name not in names:
            raise GraphError(f"graph {graph.name!r}: trained layer {name!r} is not a node of the graph")
        if not op_module(graph.node(name)).TRAINABLE:
            raise UnsupportedOpError(f"layer {name!r}: op {graph.node(name).op!r} has no trainable parameters")
    for n in graph.nodes:
        if getattr(op_module(n), "backward", None) is None:
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
        save_mask = n.output in needs and op_module(n).CLAMPS_OUTPUT
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

    cx = _Backward(graph, int8, needs, dict(trained), tensors, qas, rounding, momentum, backward)
    for n in graph.nodes:
        for t in n.inputs:
            if t in needs:
                cx.senders.setdefault(t, []).append(n.name)
    for n in reversed(graph.nodes):
        if n.output not in needs:
            continue
        if len(cx.senders.get(n.output, [])) > 1:  # sum every consumer's contribution first
            parts = [f"grad:{n.output}@{c}" for c in cx.senders[n.output]]
            _grad_tensor(tensors, graph, n.output)
            steps.append(Step("grad_sum", n.name, parts, [f"grad:{n.output}"]))
        steps.extend(op_module(n).backward(cx, n))
    return TrainingGraph(graph, "int8" if int8 else "float32", dict(trained), steps, tensors, boundary, n_prefix)


def _grad_tensor(tensors, graph, t, name=None):
    name = name or f"grad:{t}"
    tensors[name] = TensorInfo(name, tuple(graph.tensors[t].shape), "float32", "grad")
    return name


@dataclass
class _Backward:
    """What an op's backward rule (ops/<op>.py: backward(cx, node)) reads and declares."""

    graph: Graph
    int8: bool
    needs: set
    trained: dict[str, TrainSpec]
    tensors: dict[str, TensorInfo]
    qas: bool
    rounding: str
    momentum: float
    backward: str = "float"  # "int16": integer input gradients where the op has them (ops/conv.py)
    senders: dict = field(default_factory=dict)  # tensor -> the nodes sending it a gradient (fan-outs sum)
    param_id: int = 0

    def grad_target(self, t: str, node: Node) -> str:
        """The gradient tensor `node` writes for its input `t` (a partial one at a fan-out)."""
        name = f"grad:{t}" if len(self.senders[t]) == 1 else f"grad:{t}@{node.name}"
        return _grad_tensor(self.tensors, self.graph, t, name)

    def next_param_id(self) -> int:
        self.param_id += 1
        return self.param_id - 1

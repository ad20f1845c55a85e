"""NumPy executor of a TrainingGraph (autodiff.py): runs its steps in order on a batch.

The forward steps follow quant/arith exactly (int8 numerics) or the float graph (float numerics);
backward steps call the gradient rules beside each op's forward (ops/*.py, ops/loss.py); updates
follow quant/update.py. docs/training-semantics.md is the specification.
"""
from __future__ import annotations

import numpy as np

from ..autodiff import TrainingGraph, clamp_range
from ..errors import GraphError
from ..ir.graph import Graph, Node, TensorSpec
from ..ops import add as add_op
from ..ops import conv as conv_op
from ..ops import op_module
from ..ops import pool as pool_op
from ..ops.loss import grad_int8_logits, softmax_cross_entropy
from ..quant.arith import add_preclamp, conv_multipliers, conv_preclamp
from ..quant.update import apply_update


# ----- forward of one node, with the clamp mask training needs --------------------------------------
def forward_node(graph: Graph, node: Node, ins: list, save_mask: bool = False):
    """(y, mask or None) of one node; int8 graphs follow quant/arith bit for bit."""
    if graph.dtype == "int8":
        qs = [graph.tensors[t].quant for t in node.inputs]
        qy = graph.tensors[node.output].quant
        if not save_mask or node.op == "global_avg_pool":
            return op_module(node).forward_int8(node, *ins, *qs, qy), None
        if node.op == "conv2d":
            acc = conv_op.conv_accumulate(conv_op.shifted_input(ins[0], qs[0].zero_point), node.params["weight"],
                                          node.attrs)
            eff = conv_multipliers(qs[0].scale, node.params["w_scales"], qy.scale)
            r = conv_preclamp(acc, node.params["bias"], eff, qy.zero_point)
        else:
            r = add_preclamp(ins[0], qs[0].zero_point, qs[0].scale, ins[1], qs[1].zero_point, qs[1].scale,
                             qy.scale, qy.zero_point)
        mask = (r >= -128) & (r <= 127)
        return np.clip(r, -128, 127).astype(np.int8), mask
    if node.op == "global_avg_pool":
        return pool_op.forward_float(node, ins[0]), None
    if node.op == "conv2d":
        pre = conv_op.conv_accumulate(ins[0].astype(np.float32), node.params["weight"].astype(np.float32), node.attrs)
        pre = pre.astype(np.float32) + node.params["bias"].astype(np.float32)
    elif node.op == "add":
        pre = ins[0] + ins[1]
    else:
        raise GraphError(f"layer {node.name!r}: op {node.op!r} cannot run in a training graph")
    lo, hi = clamp_range(graph, node)
    y = np.clip(pre, lo, hi).astype(np.float32)
    return y, ((pre >= lo) & (pre <= hi)) if save_mask else None


def run_nodes(graph: Graph, values: dict, start: int, stop: int, keep_live_only: bool = True) -> dict:
    """Run graph nodes [start, stop) over `values` (tensor name -> batch array). With keep_live_only,
    drop tensors no node at index >= stop (nor the output) reads: the result is the live set at stop."""
    for node in graph.nodes[start:stop]:
        values[node.output], _ = forward_node(graph, node, [values[t] for t in node.inputs])
    if keep_live_only:
        live = {t for n in graph.nodes[stop:] for t in n.inputs} | {graph.output}
        values = {k: v for k, v in values.items() if k in live}
    return values


def live_tensors(graph: Graph, index: int) -> list[str]:
    """Tensors produced before node `index` and read by a node at or after it (the input counts)."""
    produced = [graph.input] + [n.output for n in graph.nodes[:index]]
    later = {t for n in graph.nodes[index:] for t in n.inputs}
    return [t for t in produced if t in later]


# ----- the float baseline: dequantised graph --------------------------------------------------------
def dequantize_graph(graph: Graph) -> Graph:
    """The float32 equivalent of an int8 graph (the fp32 training baseline).

    W = Wq * w_scales[c]; bias = bq * float32(x_scale * w_scales[c]); every conv and add output is
    clamped to the real range of its int8 tensor, [(-128 - z) s, (127 - z) s] (the ReLU6 of pointwise1/
    depthwise; wide for linear layers). Activations are not quantised. Input: real = q * x_scale
    (x_zero of the input), see dequantize_input.
    """
    if graph.dtype != "int8":
        raise GraphError(f"graph {graph.name!r} is already {graph.dtype}")
    g = graph.copy()
    for n in g.nodes:
        if n.op == "conv2d":
            sx = np.float64(graph.tensors[n.inputs[0]].quant.scale)
            sw = n.params["w_scales"].astype(np.float64)
            n.params = {
                "weight": (n.params["weight"].astype(np.float64) * sw[:, None, None, None]).astype(np.float32),
                "bias": (n.params["bias"].astype(np.float64) * (sx * sw)).astype(np.float32),
            }
        if n.op in ("conv2d", "add"):
            q = graph.tensors[n.output].quant
            n.attrs["clamp"] = ((-128 - q.zero_point) * q.scale, (127 - q.zero_point) * q.scale)
            n.attrs["activation"] = None
    g.tensors = {k: TensorSpec(v.name, v.shape, "float32", v.quant) for k, v in g.tensors.items()}
    g.dtype = "float32"
    g.meta = dict(g.meta, dequantized_from=graph.name)
    return g


def dequantize_input(graph_int8: Graph, x_q: np.ndarray) -> np.ndarray:
    q = graph_int8.input_spec.quant
    return ((x_q.astype(np.float32) - np.float32(q.zero_point)) * np.float32(q.scale)).astype(np.float32)


# ----- the executor -------------------------------------------------------------------------------------
class TrainingRuntime:
    """Executes a TrainingGraph. `seed` feeds stochastic rounding; momentum buffers live here."""

    def __init__(self, tg: TrainingGraph, seed: int = 0):
        self.tg, self.seed = tg, int(seed)
        self.graph = tg.graph
        self.momentum: dict[int, np.ndarray] = {}
        self._index_cache: dict[int, np.ndarray] = {}
        self._node = {n.name: n for n in self.graph.nodes}
        first = tg.n_prefix
        self._forward = [s for s in tg.steps if s.kind == "forward"]
        self._backward = [s for s in tg.steps if s.kind not in ("forward",)]
        self._first = first
        last_read = {}
        for i, st in enumerate(self._backward):
            for t in st.inputs:
                last_read[t] = i
        # gradients are dropped after their last reader (grad:x of the trained suffix can be large)
        self._free = [[t for t in st.inputs if t.startswith("grad") and last_read[t] == i]
                      for i, st in enumerate(self._backward)]

    # feeds: {graph.input: x} or {boundary tensor: array, ...}
    def _start(self, feeds: dict) -> int:
        if all(t in feeds for t in self.tg.boundary):
            return self._first
        if self.graph.input in feeds:
            return 0
        raise GraphError(f"feeds must hold {self.graph.input!r} or the boundary tensors {self.tg.boundary}")

    def forward(self, feeds: dict, with_masks: bool = True) -> dict:
        values = dict(feeds)
        for s in self._forward[self._start(feeds):]:
            node = self._node[s.node]
            save = with_masks and s.attrs.get("save_mask", False)
            y, mask = forward_node(self.graph, node, [values[t] for t in node.inputs], save)
            values[s.outputs[0]] = y
            if save:
                values[s.outputs[1]] = mask
        return values

    def logits(self, feeds: dict) -> np.ndarray:
        """Real-valued logits (N, K) of a forward pass."""
        out = self.forward(feeds, with_masks=False)[self.graph.output]
        out = out.reshape(out.shape[0], -1)
        if self.tg.numerics == "int8":
            q = self.graph.output_spec.quant
            return (out.astype(np.float32) - np.float32(q.zero_point)) * np.float32(q.scale)
        return out.astype(np.float32)

    def train_step(self, feeds: dict, labels: np.ndarray, lr: float, step: int) -> dict:
        """One SGD step on a batch; returns {"loss", "logits" (real, before the update)}."""
        values = self.forward(feeds)
        values[self.tg.labels] = np.asarray(labels, dtype=np.int64)
        for s, free in zip(self._backward, self._free):
            self._run(s, values, lr, step)
            for t in free:
                del values[t]
        out = values[self.graph.output]
        logits = out.reshape(out.shape[0], -1)
        if self.tg.numerics == "int8":
            q = self.graph.output_spec.quant
            logits = (logits.astype(np.float32) - np.float32(q.zero_point)) * np.float32(q.scale)
        return {"loss": values[self.tg.loss], "logits": logits}

    def gradients(self, feeds: dict, labels: np.ndarray) -> dict:
        """Forward + backward without updating: {"loss", "grad:<node>.<param>": array, ...}
        (parameter gradients of the trained slices, before QAS scaling)."""
        values = self.forward(feeds)
        values[self.tg.labels] = np.asarray(labels, dtype=np.int64)
        for s in self._backward:
            if s.kind != "sgd_update":
                self._run(s, values, 0.0, 0)
        out = {k: v for k, v in values.items() if self.tg.tensors.get(k) and self.tg.tensors[k].role == "param_grad"}
        out["loss"] = values[self.tg.loss]
        return out

    # ----- one backward/update step -----------------------------------------------------------------
    def _run(self, s, values, lr, step):
        k, a = s.kind, s.attrs
        if k == "loss_softmax_ce":
            logits = values[s.inputs[0]]
            n = logits.shape[0]
            labels = values[s.inputs[1]]
            if self.tg.numerics == "int8":
                loss, g = grad_int8_logits(logits.reshape(n, -1), labels, a["scale"], a["zero_point"])
            else:
                loss, g = softmax_cross_entropy(logits.reshape(n, -1), labels)
            values[s.outputs[0]] = loss
            values[s.outputs[1]] = g.reshape(logits.shape)
            return
        node = self._node.get(s.node)
        if k == "conv_grad_acc":
            values[s.outputs[0]] = conv_op.grad_accumulator(values[s.inputs[0]], values[s.inputs[1]], a["scale"])
        elif k == "conv_grad_input":
            values[s.outputs[0]] = conv_op.grad_input(values[s.inputs[0]], node.params["weight"], node.attrs,
                                                      a["in_shape"])
        elif k == "conv_grad_weight":
            x = values[s.inputs[0]]
            xs = x.astype(np.float32) - np.float32(a["x_zero"])
            values[s.outputs[0]] = conv_op.grad_weight(xs, values[s.inputs[1]], node.params["weight"].shape,
                                                       node.attrs, a["channels"])
        elif k == "conv_grad_bias":
            values[s.outputs[0]] = conv_op.grad_bias(values[s.inputs[0]])
        elif k == "add_grad":
            values[s.outputs[0]] = add_op.grad_addend(values[s.inputs[0]], values[s.inputs[1]], a["scale"])
        elif k == "pool_grad":
            values[s.outputs[0]] = pool_op.grad_input(values[s.inputs[0]], a["in_shape"])
        elif k == "grad_sum":
            total = values[s.inputs[0]].astype(np.float32, copy=True)
            for t in s.inputs[1:]:
                total += values[t]
            values[s.outputs[0]] = total
        elif k == "sgd_update":
            self._update(s, node, values[s.inputs[0]], lr, step)
        else:
            raise GraphError(f"unknown training step kind {k!r}")

    def _update(self, s, node, grad, lr, step):
        a = s.attrs
        param = node.params[a["param"]]
        ch = a["channels"]
        div = np.asarray(a["divisor"], dtype=np.float32)
        if a["param"] == "bias":
            sl = (slice(None),)
        elif a["depthwise"]:
            sl = (np.asarray(ch),)
            div = div[np.asarray(ch)][:, None, None, None]
        else:
            sl = (slice(None), np.asarray(ch))
            div = div[:, None, None, None]
        d = grad.astype(np.float32) / div
        if a["momentum"]:
            buf = self.momentum.get(a["param_id"])
            buf = d if buf is None else np.float32(a["momentum"]) * buf + d
            self.momentum[a["param_id"]] = buf
            d = buf
        delta = (np.float32(-lr) * d).astype(np.float32)
        current = param[sl]
        index = self._flat_index(a["param_id"], param.shape, sl) if a["rounding"] == "stochastic" else None
        param[sl] = apply_update(current, delta, a["rounding"], a["saturate"], seed=self.seed, step=step,
                                 param_id=a["param_id"], index=index)

    def _flat_index(self, pid, shape, sl):
        idx = self._index_cache.get(pid)
        if idx is None:
            idx = np.arange(int(np.prod(shape)), dtype=np.uint64).reshape(shape)[sl]
            self._index_cache[pid] = idx
        return idx

    # ----- state for checkpoints ---------------------------------------------------------------------------
    def state_arrays(self) -> dict[str, np.ndarray]:
        return {f"momentum/{k}": v for k, v in self.momentum.items()}

    def load_state_arrays(self, arrays: dict) -> None:
        self.momentum = {int(k.split("/", 1)[1]): np.asarray(v, np.float32) for k, v in arrays.items()
                         if k.startswith("momentum/")}

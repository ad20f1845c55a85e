"""NumPy executor of a TrainingGraph (autodiff.py): runs its steps in order on a batch.

The forward steps follow quant/arith exactly (int8 numerics) or the float graph (float numerics);
backward steps call the gradient rules beside each op's forward (ops/*.py, ops/loss.py); updates
follow quant/update.py. docs/training-semantics.md is the specification.
"""
from __future__ import annotations

import numpy as np

from .. import steps as step_table
from ..autodiff import TrainingGraph
from ..errors import GraphError, UnsupportedOpError
from ..ir.graph import Graph, Node
from ..ops import op_module, sim_native
from ..quant.update import apply_update


def forward_node(graph: Graph, node: Node, ins: list, save_mask: bool = False):
    """(y, mask or None) of one node (the op module's forward_train); int8 follows quant/arith bit for bit."""
    return op_module(node).forward_train(graph, node, ins, save_mask)


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


# ----- the executor -------------------------------------------------------------------------------------
class TrainingRuntime:
    """Executes a TrainingGraph. `seed` feeds stochastic rounding; momentum buffers live here.
    sums="c": the backward's float32 sums (and the loss's exp) in the generated C kernels' order
    (ops/c_sums.py): the C build's parameters bit for bit, slower; "numpy" (BLAS) for the experiments."""

    def __init__(self, tg: TrainingGraph, seed: int = 0, sums: str = "numpy"):
        if sums not in ("numpy", "c"):
            raise ValueError(f"sums must be 'numpy' or 'c', not {sums!r}")
        self.tg, self.seed, self.sums = tg, int(seed), sums
        self.graph = tg.graph
        self.momentum: dict[int, np.ndarray] = {}
        self._index_cache: dict[int, np.ndarray] = {}
        self.nodes = {n.name: n for n in self.graph.nodes}
        first = tg.n_prefix
        self._forward = [s for s in tg.steps if step_table.is_forward(s)]
        self._backward = [s for s in tg.steps if not step_table.is_forward(s)]
        self._runs = {s.kind: step_table.kind(s.kind).run for s in self._backward}  # unknown kinds fail here
        if sums == "c":  # refused before any work, not mid-backward
            for s in self._backward:
                refuse = step_table.kind(s.kind).c_sums
                reason = refuse(s, self.graph) if refuse else None
                if reason:
                    raise UnsupportedOpError(reason)
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
            step_table.run_forward(self, s, values, with_masks)
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
            self.run_step(s, values, lr, step)
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
            if not step_table.is_update(s):
                self.run_step(s, values, 0.0, 0)
        out = {k: v for k, v in values.items() if self.tg.tensors.get(k) and self.tg.tensors[k].role == "param_grad"}
        out["loss"] = values[self.tg.loss]
        return out

    def run_step(self, s, values: dict, lr: float, step: int) -> None:
        """Execute one non-forward step: its kind's executor (steps.py). Subclasses and tests hook here."""
        self._runs[s.kind](self, s, values, lr, step)

    # ----- parameter updates (the sgd_update and fused update kinds call this) ----------------------------
    def update(self, a: dict, node, grad, lr, step):
        """Apply one update (sgd_update attrs `a`) of `grad` to node's parameter slice in place."""
        param = node.params[a["param"]]
        ch = a["channels"]
        div = np.asarray(a["divisor"], dtype=np.float32)
        if a["param"] == "bias":
            sl = (slice(None),)
        elif a["depthwise"]:
            sl = (self._channels(ch, param.shape[0]),)
            div = div[np.asarray(ch)][:, None, None, None]
        else:
            sl = (slice(None), self._channels(ch, param.shape[1]))
            div = div[:, None, None, None]
        d = grad.astype(np.float32, copy=False) / div
        if a["momentum"]:
            buf = self.momentum.get(a["param_id"])
            buf = d if buf is None else np.float32(a["momentum"]) * buf + d
            self.momentum[a["param_id"]] = buf
            d = buf
        delta = (np.float32(-lr) * d).astype(np.float32, copy=False)
        current = param[sl]
        index = self._flat_index(a["param_id"], param.shape, sl) if a["rounding"] == "stochastic" else None
        hash_args = dict(seed=self.seed, step=step, param_id=a["param_id"], index=index)
        new = sim_native.apply_update(current, delta, a["rounding"], a["saturate"], **hash_args)  # the same, in C
        param[sl] = new if new is not None else apply_update(current, delta, a["rounding"], a["saturate"], **hash_args)

    @staticmethod
    def _channels(ch, n: int):
        """The trained channels as an index: a plain slice when they are all n in order (same elements, no
        gather and scatter copies)."""
        return slice(None) if tuple(ch) == tuple(range(n)) else np.asarray(ch)

    def _flat_index(self, pid, shape, sl):
        idx = self._index_cache.get(pid)
        if idx is None:
            # uint32: the rounding hash takes the index modulo 2**32 (quant/update.rounding_hash)
            idx = np.arange(int(np.prod(shape)), dtype=np.uint64).reshape(shape)[sl].astype(np.uint32)
            self._index_cache[pid] = idx
        return idx

    # ----- state for checkpoints ---------------------------------------------------------------------------
    def state_arrays(self) -> dict[str, np.ndarray]:
        return {f"momentum/{k}": v for k, v in self.momentum.items()}

    def load_state_arrays(self, arrays: dict) -> None:
        self.momentum = {int(k.split("/", 1)[1]): np.asarray(v, np.float32) for k, v in arrays.items()
                         if k.startswith("momentum/")}

"""mark_inplace: an element-wise step may write its output over an input of the same size and
dtype when no later step reads that input. The step gets attrs["inplace_of"] = that input; the
memory planner then gives both one storage block. Eligible: forward add (over its main input),
conv_grad_acc (over grad_y), add_grad (over grad_y), grad_sum (over its first input). The graph
input and the logits are never overwritten."""
from __future__ import annotations

from .common import clone_steps, last_readers, with_steps


def _candidate(s, node_op):
    if s.kind == "forward" and node_op[s.node] == "add":
        return s.inputs[1]
    if s.kind in ("conv_grad_acc", "add_grad", "grad_sum"):
        return s.inputs[0]
    return None


def mark_inplace(tg):
    steps = clone_steps(tg)
    node_op = {n.name: n.op for n in tg.graph.nodes}
    last = last_readers(steps)
    protected = {tg.graph.input, tg.graph.output}
    claimed = set()
    for i, s in enumerate(steps):
        s.attrs.pop("inplace_of", None)
        src = _candidate(s, node_op)
        if src is None or src in protected or src in claimed or last.get(src) != i:
            continue
        a, b = tg.tensors[src], tg.tensors[s.outputs[0]]
        if a.dtype != b.dtype or tuple(a.shape) != tuple(b.shape):
            continue
        s.attrs["inplace_of"] = src
        claimed.add(src)
    return with_steps(tg, steps)

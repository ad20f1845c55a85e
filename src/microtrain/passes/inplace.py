"""mark_inplace: an element-wise step may write its output over an input of the same size and
dtype when no later step reads that input. The step gets attrs["inplace_of"] = that input; the
memory planner then gives both one storage block. Which input is eligible is a fact of the step kind
(steps.py: Kind.inplace; for forward steps the op's INPLACE_INPUT): the forward add (its main input),
conv_grad_acc, add_grad and grad_sum (their first input). The graph
input and the logits are never overwritten."""
from __future__ import annotations

from ..steps import inplace_input
from .common import clone_steps, last_readers, with_steps


def mark_inplace(tg):
    steps = clone_steps(tg)
    last = last_readers(steps)
    protected = {tg.graph.input, tg.graph.output}
    claimed = set()
    for i, s in enumerate(steps):
        s.attrs.pop("inplace_of", None)
        src = inplace_input(s, tg.graph)
        if src is None or src in protected or src in claimed or last.get(src) != i:
            continue
        a, b = tg.tensors[src], tg.tensors[s.outputs[0]]
        if a.dtype != b.dtype or tuple(a.shape) != tuple(b.shape):
            continue
        s.attrs["inplace_of"] = src
        claimed.add(src)
    return with_steps(tg, steps)

"""fuse_updates: apply each parameter gradient in place as soon as it exists.

conv_grad_weight + its sgd_update become one `conv_weight_update` step, conv_grad_bias + its
sgd_update one `conv_bias_update` step: the kernel computes one gradient element and applies it at
once, so no weight-gradient tensor is ever stored (upstream's operator reordering). The fused step
is then moved to the earliest position where (a) its inputs exist and (b) every step reading the
node's current parameters (its forward, its conv_grad_input) has run, which keeps the plain-SGD
semantics of docs/training-semantics.md section 6.
"""
from __future__ import annotations

from ..errors import GraphError
from ..steps import is_sgd_update, is_update, kind
from .common import clone_steps, with_steps


def fuse_updates(tg):
    steps = clone_steps(tg)
    producer = {t: s for s in steps for t in s.outputs}
    fused_from = set()
    out = []
    unfused = [s for s in steps if is_sgd_update(s)]
    for s in unfused:
        g = producer.get(s.inputs[0])
        fused = None if g is None else kind(g.kind).fuses_to
        if fused is None:
            raise GraphError(f"{s.kind} of {s.node!r}: gradient {s.inputs[0]!r} has no gradient step to fuse with")
        fused_from.add(id(g))
        fused_from.add(id(s))
        g.attrs = dict(g.attrs, update=dict(s.attrs))
        g.kind, g.outputs = fused, []
    drop = {id(s) for s in unfused}
    out = [s for s in steps if id(s) not in drop]
    out = _move_updates_early(out, tg)
    tensors = {k: v for k, v in tg.tensors.items() if v.role != "param_grad"}
    return with_steps(tg, out, tensors)


def _move_updates_early(steps, tg):
    """Place every fused update right after the later of: its inputs' producers, and the last
    step reading its node's parameters (forward or conv_grad_input of the same node)."""
    fixed = [s for s in steps if not is_update(s)]
    updates = [s for s in steps if is_update(s)]
    for u in updates:
        after = -1
        for i, s in enumerate(fixed):
            produces = any(t in u.inputs for t in s.outputs)
            reads_param = s.node == u.node and kind(s.kind).reads_params
            if produces or reads_param:
                after = i
        fixed.insert(after + 1, u)
    return fixed

"""prune: remove every step whose outputs reach no parameter update, the loss, or the logits, and
the clamp masks no remaining backward step reads (their forward step stops producing them).

autodiff already emits only needed gradients; this pass makes that a checked property of any
TrainingGraph (hand-built or transformed) instead of an assumption."""
from __future__ import annotations

from ..steps import is_forward, is_update
from .common import clone_steps, with_steps


def prune(tg):
    steps = clone_steps(tg)
    needed = {tg.loss, tg.graph.output}
    keep = [False] * len(steps)
    for i in range(len(steps) - 1, -1, -1):
        s = steps[i]
        live = is_update(s) or any(t in needed for t in s.outputs)
        if is_forward(s):  # a forward step is needed for its main output only
            live = s.outputs[0] in needed
        if live:
            keep[i] = True
            needed.update(s.inputs)
    out = []
    for s, k in zip(steps, keep):
        if not k:
            continue
        if is_forward(s) and len(s.outputs) > 1 and s.outputs[1] not in needed:
            s.outputs = s.outputs[:1]
            s.attrs["save_mask"] = False
        out.append(s)
    used = {t for s in out for t in s.inputs + s.outputs} | {tg.labels, tg.loss}
    tensors = {k: v for k, v in tg.tensors.items() if k in used or v.role == "activation"}
    return with_steps(tg, out, tensors)

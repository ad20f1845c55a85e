"""slice_inputs: a conv whose weights are trained on k of C input channels keeps only those k
channels of its input for the backward pass.

A `slice_channels` step right after the conv's forward copies x[..., channels] into
`saved:<node>` (int8, H x W x k); the weight-gradient step reads that instead of x, so x dies at its
last forward use. Nothing is inserted when k == C (the copy would be as large as x)."""
from __future__ import annotations

from dataclasses import replace

from ..ir.training import Step, TensorInfo
from ..steps import is_forward, kind
from .common import clone_steps, with_steps


def slice_inputs(tg):
    steps = clone_steps(tg)
    tensors = dict(tg.tensors)
    inserts = {}  # forward step index -> slice step
    fwd_index = {s.node: i for i, s in enumerate(steps) if is_forward(s)}
    for s in steps:
        if not kind(s.kind).slices_input or s.attrs.get("input_sliced"):
            continue
        x = s.inputs[0]
        channels = tuple(s.attrs["channels"])
        h, w, c = tg.tensors[x].shape
        if len(channels) == c:
            continue
        saved = f"saved:{s.node}"
        tensors[saved] = TensorInfo(saved, (h, w, len(channels)), "int8", "saved")
        inserts[fwd_index[s.node]] = Step("slice_channels", s.node, [x], [saved], {"channels": channels})
        s.inputs = [saved] + s.inputs[1:]
        s.attrs = dict(s.attrs, input_sliced=True)
    out = []
    for i, s in enumerate(steps):
        out.append(s)
        if i in inserts:
            out.append(inserts[i])
    return with_steps(replace(tg), out, tensors)

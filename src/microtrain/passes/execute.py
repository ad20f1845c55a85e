"""NumPy execution of the step kinds the passes introduce, on top of runtime.training.TrainingRuntime:
conv_weight_update / conv_bias_update (gradient then the same sgd_update), slice_channels, and
weight gradients reading a sliced input. Used by the pass tests to show a transformed graph
computes exactly what the original does."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from ..ops import conv as conv_op
from ..runtime.training import TrainingRuntime


class PassRuntime(TrainingRuntime):
    def _run(self, s, values, lr, step):
        a = s.attrs
        if s.kind == "slice_channels":
            values[s.outputs[0]] = np.ascontiguousarray(values[s.inputs[0]][..., list(a["channels"])])
            return
        if s.kind == "conv_grad_weight" and a.get("input_sliced"):
            values[s.outputs[0]] = self._weight_grad(s, values)
            return
        if s.kind not in ("conv_weight_update", "conv_bias_update"):
            return super()._run(s, values, lr, step)
        node = self._node[s.node]
        if s.kind == "conv_bias_update":
            grad = conv_op.grad_bias(values[s.inputs[0]])
        else:
            grad = self._weight_grad(s, values)
        self._update(SimpleNamespace(attrs=a["update"]), node, grad, lr, step)

    def _weight_grad(self, s, values):
        a = s.attrs
        node = self._node[s.node]
        xs = values[s.inputs[0]].astype(np.float32) - np.float32(a["x_zero"])
        if a.get("input_sliced"):  # back to full width: the untrained channels are never read
            full = np.zeros(xs.shape[:-1] + (self.graph.tensors[node.inputs[0]].shape[-1],), np.float32)
            full[..., list(a["channels"])] = xs
            xs = full
        return conv_op.grad_weight(xs, values[s.inputs[1]], node.params["weight"].shape, node.attrs, a["channels"])

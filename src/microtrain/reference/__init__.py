"""Float reference models of a Graph in other frameworks (for baselines and cross-checks).

    from microtrain.reference import to_torch
    model = to_torch(graph)            # torch.nn.Module, NCHW float in, (N, classes) float logits out
    logits = model(model.input_from_int8(x_q))

torch is an optional dependency (pip install microtrain[torch]); importing this package does not
import torch until to_torch is called.
"""
from __future__ import annotations


def to_torch(graph, clamp: str = "range"):
    """See microtrain.reference.torch_model.to_torch."""
    from .torch_model import to_torch as _to_torch

    return _to_torch(graph, clamp=clamp)


__all__ = ["to_torch"]

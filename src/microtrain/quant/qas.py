"""Quantization-aware scaling (QAS, Lin et al. 2022): make an SGD step on int8 codes equal a float
SGD step on the real weights.

Real W = s_w[c] * Wq and real bias = x_scale * s_w[c] * bq, so d loss / d Wq = s_w * d loss / d W.
Float SGD W -= lr * dL/dW is, in codes, Wq -= lr * (dL/dWq) / s_w**2: the QAS divisor of a weight
gradient is s_w[c]**2 and of a bias gradient (x_scale * s_w[c])**2 (per output channel c).
"""
from __future__ import annotations

import numpy as np


def qas_divisors(graph, node) -> dict[str, np.ndarray]:
    """{"weight": float32 s_w**2, "bias": float32 (x_scale * s_w)**2}, computed in float64 then rounded."""
    sw = node.params["w_scales"].astype(np.float32).astype(np.float64)
    sx = np.float64(graph.tensors[node.inputs[0]].quant.scale)
    return {"weight": (sw * sw).astype(np.float32), "bias": ((sx * sw) ** 2).astype(np.float32)}

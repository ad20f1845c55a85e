"""The float32 equivalent of an int8 graph: the fp32 training baseline (a graph transform)."""
from __future__ import annotations

import numpy as np

from ..errors import GraphError
from ..ir.graph import Graph, TensorSpec
from ..ops import op_module


def dequantize_graph(graph: Graph) -> Graph:
    """The float32 equivalent of an int8 graph (the fp32 training baseline).

    W = Wq * w_scales[c]; bias = bq * float32(x_scale * w_scales[c]); every clamped output (conv, add)
    is clamped to the real range of its int8 tensor, [(-128 - z) s, (127 - z) s] (the ReLU6 of
    pointwise1/depthwise; wide for linear layers). Activations are not quantised. Input: real = q *
    x_scale (x_zero of the input), see dequantize_input.
    """
    if graph.dtype != "int8":
        raise GraphError(f"graph {graph.name!r} is already {graph.dtype}")
    g = graph.copy()
    for n in g.nodes:
        if "w_scales" in n.params:  # per-output-channel int8 weights and int32 biases
            sx = np.float64(graph.tensors[n.inputs[0]].quant.scale)
            sw = n.params["w_scales"].astype(np.float64)
            n.params = {
                "weight": (n.params["weight"].astype(np.float64) * sw[:, None, None, None]).astype(np.float32),
                "bias": (n.params["bias"].astype(np.float64) * (sx * sw)).astype(np.float32),
            }
        if op_module(n).CLAMPS_OUTPUT:  # the op clamps its output to the int8 range
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

"""A Graph as a torch.nn.Module: the float32 network an int8 graph stands for, or a float graph as is.

Use it for fp32 baselines (fine-tune the float equivalent with torch autograd), speed comparisons and
sanity checks of the int8 runtime. Inside torch the layout is NCHW (torch's native one); the Graph
stays NHWC.

Dequantisation of an int8 graph (per conv, per output channel c):
    W_float[c] = weight[c] * w_scales[c]          bias_float[c] = bias[c] * x_scale * w_scales[c]
so that conv(real input) = (acc + bias) * x_scale * w_scales, the real value the int8 conv rounds.
Activations: an int8 graph has none; each tensor saturates to its int8 range. `clamp` chooses the float
equivalent:
    "range" (default): clamp every conv/add output to its tensor's representable real range
                       [(-128 - z) * s, (127 - z) * s]. pointwise1/depthwise outputs (z = -128) get
                       their calibrated ReLU6 (upper bound 255 * s <= 6); this is the int8 graph
                       without rounding.
    "relu6":           the textbook float architecture: ReLU6 on outputs with z = -128, linear
                       elsewhere (what fp32 training of the same network uses).
    "none":            no activation at all (linear network; for debugging).
A float graph (dtype float32) uses its nodes' `activation` attrs and ignores `clamp`.

The module's input is the *real-valued* NCHW image; `input_from_int8(x_q)` maps the runtime's int8
NHWC batch to it ((q - z) * s, i.e. (k - 128) * 2/255 for an 8-bit pixel k). The output is the
(N, classes) float logits, comparable to runtime.forward.dequantize_logits of the int8 run.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..errors import GraphError, UnsupportedOpError
from ..ir.graph import Graph, Node
from ..ops import op_module

CLAMP_MODES = ("range", "relu6", "none")


class GraphModule(nn.Module):
    """Executes a Graph's nodes in order with torch ops. Convs are nn.Conv2d modules in `self.convs`
    (keyed by node name with '.' -> '_'), so their weights are ordinary trainable parameters."""

    def __init__(self, graph: Graph, clamp: str = "range"):
        super().__init__()
        if clamp not in CLAMP_MODES:
            raise GraphError(f"to_torch: clamp must be one of {CLAMP_MODES}, got {clamp!r}")
        self.graph_name, self.input_name, self.output_name = graph.name, graph.input, graph.output
        self.num_classes = graph.num_classes
        self.convs = nn.ModuleDict()
        self.steps: list[tuple] = []  # (op module's torch_forward, key, inputs, output)
        self.bounds: dict[str, tuple[float, float] | None] = {}  # activation per node key
        in_q = graph.input_spec.quant
        self.input_scale = float(in_q.scale) if in_q else 1.0
        self.input_zero = int(in_q.zero_point) if in_q else 0
        for node in graph.nodes:
            key = node.name.replace(".", "_")
            if not hasattr(op_module(node), "torch_forward"):
                raise UnsupportedOpError(f"to_torch: node {node.name!r}: op {node.op!r} has no torch equivalent")
            if "weight" in node.params:
                self.convs[key] = _conv_module(graph, node)
            self.bounds[key] = _activation_bounds(graph, node, clamp)
            self.steps.append((op_module(node).torch_forward, key, list(node.inputs), node.output))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: real-valued NCHW float batch -> (N, num_classes) float logits."""
        values = {self.input_name: x}
        for torch_forward, key, inputs, output in self.steps:
            y = torch_forward(self.convs[key] if key in self.convs else None, *[values[t] for t in inputs])
            b = self.bounds[key]
            values[output] = y if b is None else torch.clamp(y, b[0], b[1])
        return values[self.output_name].flatten(1)

    def input_from_int8(self, x_q: np.ndarray) -> torch.Tensor:
        """The runtime's int8 NHWC batch -> the real-valued NCHW float tensor this module takes."""
        x = (np.asarray(x_q, dtype=np.float32) - np.float32(self.input_zero)) * np.float32(self.input_scale)
        return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def to_torch(graph: Graph, clamp: str = "range") -> GraphModule:
    """Build the torch.nn.Module of `graph` (int8: dequantised float equivalent; float32: as is).

    The module is in eval mode, float32, on the CPU, with trainable conv parameters; see the module
    docstring for `clamp` and the input convention.
    """
    return GraphModule(graph, clamp).eval()


# ----- per-node helpers ----------------------------------------------------------------------------
def _conv_module(graph: Graph, node: Node) -> nn.Conv2d:
    w = node.params["weight"]
    o, ig, kh, kw = w.shape
    groups = node.attrs.get("groups", 1)
    conv = nn.Conv2d(ig * groups, o, (kh, kw), stride=node.attrs["stride"], padding=node.attrs["padding"],
                     dilation=node.attrs.get("dilation", 1), groups=groups, bias=True)
    if graph.dtype == "int8":
        ws = node.params["w_scales"].astype(np.float64)
        x_scale = float(graph.tensors[node.inputs[0]].quant.scale)
        weight = w.astype(np.float64) * ws[:, None, None, None]
        bias = node.params["bias"].astype(np.float64) * x_scale * ws
    else:
        weight, bias = w.astype(np.float64), node.params["bias"].astype(np.float64)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(weight.astype(np.float32)))
        conv.bias.copy_(torch.from_numpy(bias.astype(np.float32)))
    return conv


def _activation_bounds(graph: Graph, node: Node, clamp: str):
    """(lo, hi) to clamp the node's output to, or None (see module docstring)."""
    if graph.dtype != "int8":
        act = node.attrs.get("activation")
        if act is None:
            return None
        if act == "relu":
            return (0.0, float("inf"))
        if act == "relu6":
            return (0.0, 6.0)
        raise GraphError(f"to_torch: node {node.name!r}: unknown activation {act!r}")
    if not op_module(node).CLAMPS_OUTPUT or clamp == "none":
        return None  # a mean of in-range values stays in range
    q = graph.tensors[node.output].quant
    if clamp == "range":
        return ((-128 - q.zero_point) * q.scale, (127 - q.zero_point) * q.scale)
    return (0.0, 6.0) if q.zero_point == -128 and "weight" in node.params else None

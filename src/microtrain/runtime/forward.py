"""NumPy reference runtime: batched forward pass of an int8 or float32 graph (NHWC)."""
from __future__ import annotations

import numpy as np

from ..errors import GraphError
from ..ir.graph import Graph
from ..ops import op_module


def _check_input(graph: Graph, x: np.ndarray, dtype) -> None:
    want = tuple(graph.input_spec.shape)
    if x.ndim != 4 or tuple(x.shape[1:]) != want:
        raise GraphError(f"graph {graph.name!r}: input must have shape (N, {', '.join(map(str, want))}), got {x.shape}")
    if x.dtype != dtype:
        raise GraphError(f"graph {graph.name!r}: input must be {np.dtype(dtype).name}, got {x.dtype}")


def run_int8(graph: Graph, x_q: np.ndarray, keep: bool = False):
    """Forward an int8 graph on int8 NHWC input. Returns the int8 output (N, 1, 1, K), or with
    keep=True the dict of every tensor (training needs them)."""
    if graph.dtype != "int8":
        raise GraphError(f"graph {graph.name!r} is {graph.dtype}; run_int8 needs an int8 graph")
    _check_input(graph, x_q, np.int8)
    return run_int8_nodes(graph, {graph.input: x_q}, graph.nodes, keep)


def run_int8_nodes(graph: Graph, values: dict, nodes, keep: bool = False):
    """Forward `nodes` (a tail of graph.nodes) from the tensors in `values` (runtime/patched.py starts
    after the patched prefix)."""
    last_use = _last_use(graph) if not keep else {}
    start = len(graph.nodes) - len(nodes)
    for i, node in enumerate(nodes, start):
        mod = op_module(node)
        ins = [values[t] for t in node.inputs]
        qs = [graph.tensors[t].quant for t in node.inputs]
        values[node.output] = mod.forward_int8(node, *ins, *qs, graph.tensors[node.output].quant)
        if not keep:
            for t in node.inputs:
                if last_use.get(t) == i:
                    values.pop(t, None)  # an add may read one tensor twice (TFLite x + x)
    return values if keep else values[graph.output]


def run_float(graph: Graph, x: np.ndarray, keep: bool = False):
    """Forward a float32 graph (or an int8 graph's dequantised float equivalent) on float NHWC input."""
    _check_input(graph, x, np.float32)
    values = {graph.input: x}
    for node in graph.nodes:
        values[node.output] = op_module(node).forward_float(node, *[values[t] for t in node.inputs])
    return values if keep else values[graph.output]


def _last_use(graph: Graph) -> dict[str, int]:
    last = {}
    for i, node in enumerate(graph.nodes):
        for t in node.inputs:
            last[t] = i
    last.pop(graph.output, None)
    return last


def logits_int8(graph: Graph, x_q: np.ndarray, batch_size: int = 64, progress=None) -> np.ndarray:
    """int8 logits (N, K) for a dataset-sized input, run in batches."""
    out = []
    for start in range(0, len(x_q), batch_size):
        out.append(run_int8(graph, x_q[start : start + batch_size]).reshape(-1, graph.num_classes))
        if progress is not None:
            progress(min(start + batch_size, len(x_q)))
    return np.concatenate(out) if out else np.zeros((0, graph.num_classes), np.int8)


def dequantize_logits(graph: Graph, q: np.ndarray) -> np.ndarray:
    quant = graph.output_spec.quant
    return (q.astype(np.float32) - quant.zero_point) * np.float32(quant.scale)

"""Shape inference and validation: every error names the graph, the node and the value at fault."""
from __future__ import annotations

import numpy as np

from ..errors import GraphError
from ..ops import infer_shapes, op_module
from .graph import Graph, TensorSpec

__all__ = ["infer_shapes", "validate", "tensor_spec"]

INT8_PARAM_DTYPES = {"weight": np.int8, "bias": np.int32, "w_scales": np.float32}


def validate(graph: Graph) -> Graph:
    """Check structure, dtypes, quantisation parameters and shapes. Raises GraphError."""
    where = f"graph {graph.name!r}"
    if graph.dtype not in ("int8", "float32"):
        raise GraphError(f"{where}: dtype must be 'int8' or 'float32', got {graph.dtype!r}")
    if graph.input not in graph.tensors:
        raise GraphError(f"{where}: input tensor {graph.input!r} is not declared")
    shape = graph.tensors[graph.input].shape
    if len(shape) != 3 or min(shape) < 1:
        raise GraphError(f"{where}: input shape must be (H, W, C) with positive sizes, got {shape}")
    defined = {graph.input}
    names = set()
    for node in graph.nodes:
        at = f"{where}, node {node.name!r}"
        if node.name in names:
            raise GraphError(f"{at}: duplicate node name")
        names.add(node.name)
        op_module(node)  # raises UnsupportedOpError naming the op
        for t in node.inputs:
            if t not in graph.tensors:
                raise GraphError(f"{at}: input tensor {t!r} is not declared")
            if t not in defined:
                raise GraphError(f"{at}: input tensor {t!r} is used before it is produced")
        if node.output in defined:
            raise GraphError(f"{at}: output tensor {node.output!r} is produced twice")
        if node.output not in graph.tensors:
            raise GraphError(f"{at}: output tensor {node.output!r} is not declared")
        defined.add(node.output)
        for key, arr in node.params.items():
            if not isinstance(arr, np.ndarray):
                raise GraphError(f"{at}: parameter {key!r} is not an array")
            if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
                raise GraphError(f"{at}: parameter {key!r} holds NaN or infinity")
            if graph.dtype == "int8" and key in INT8_PARAM_DTYPES and arr.dtype != INT8_PARAM_DTYPES[key]:
                raise GraphError(
                    f"{at}: parameter {key!r} must be {np.dtype(INT8_PARAM_DTYPES[key]).name}, got {arr.dtype}"
                )
        if graph.dtype == "int8":
            if "weight" in node.params:
                if "w_scales" not in node.params:
                    raise GraphError(f"{at}: an int8 conv needs per-channel w_scales")
                ws = node.params["w_scales"]
                if np.any(~np.isfinite(ws)) or np.any(ws <= 0):
                    raise GraphError(f"{at}: w_scales must be finite and > 0")
            for t in [*node.inputs, node.output]:
                spec = graph.tensors[t]
                if spec.dtype != "int8" or spec.quant is None:
                    raise GraphError(f"{at}: tensor {t!r} must be int8 with scale and zero point")
    if graph.output not in defined:
        raise GraphError(f"{where}: output tensor {graph.output!r} is never produced")
    expected = {n.output: graph.tensors[n.output].shape for n in graph.nodes}
    infer_shapes(graph)
    for t, old in expected.items():
        if tuple(old) != tuple(graph.tensors[t].shape):
            raise GraphError(
                f"{where}: tensor {t!r} is declared {tuple(old)} but its producer gives {graph.tensors[t].shape}"
            )
    return graph


def tensor_spec(name, shape, dtype="int8", quant=None) -> TensorSpec:
    return TensorSpec(name, tuple(int(v) for v in shape), dtype, quant)

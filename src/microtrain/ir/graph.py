"""The graph IR: tensors with quantisation parameters, nodes in execution order.

Layout conventions (fixed, used by every runtime and the C code generator):
- activations are NHWC; a TensorSpec's shape is per sample: (H, W, C);
- conv weights are (O, I/groups, kh, kw) as in PyTorch and the upstream files;
- an int8 tensor carries one scale and one zero point (per tensor);
- int8 conv weights are symmetric per output channel: `w_scales[o]`, zero point 0; biases are int32
  in units of x_scale * w_scales[o].
The classifier is a 1x1 conv2d on the pooled 1x1 map (attrs role="classifier").
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from ..errors import GraphError
from ..ops import REGISTRY, infer_shapes


@dataclass(frozen=True)
class QuantParams:
    scale: float
    zero_point: int

    def __post_init__(self):
        if not (np.isfinite(self.scale) and self.scale > 0):
            raise GraphError(f"quantisation scale must be finite and > 0, got {self.scale!r}")
        if not -128 <= int(self.zero_point) <= 127:
            raise GraphError(f"int8 zero point must lie in [-128, 127], got {self.zero_point!r}")


@dataclass
class TensorSpec:
    name: str
    shape: tuple[int, int, int]  # (H, W, C) per sample
    dtype: str  # "int8" or "float32"
    quant: QuantParams | None = None

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape))

    @property
    def nbytes(self) -> int:
        return self.numel * (1 if self.dtype == "int8" else 4)


@dataclass
class Node:
    name: str
    op: str
    inputs: list[str]
    output: str
    attrs: dict = field(default_factory=dict)
    params: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class Graph:
    """A CNN as nodes in execution order over named tensors.

    `dtype` is "int8" (a quantised graph: int8 activations, int8 weights, int32 biases) or
    "float32" (the float model a frontend imports before quantisation).
    """

    name: str
    dtype: str
    input: str
    output: str
    tensors: dict[str, TensorSpec]
    nodes: list[Node]
    meta: dict = field(default_factory=dict)

    # ----- lookups -------------------------------------------------------------------------------
    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise GraphError(f"graph {self.name!r} has no node {name!r}")

    def producer(self, tensor: str) -> Node | None:
        for n in self.nodes:
            if n.output == tensor:
                return n
        return None

    def consumers(self, tensor: str) -> list[Node]:
        return [n for n in self.nodes if tensor in n.inputs]

    def convs(self) -> Iterator[Node]:
        return (n for n in self.nodes if _trainable(n))

    def indexed_convs(self) -> list[Node]:
        """Convs in execution order without the classifier: the index sparse-update schemes use."""
        return [n for n in self.nodes if _trainable(n) and n.attrs.get("role") != "classifier"]

    def classifier(self) -> Node:
        for n in self.nodes:
            if _trainable(n) and n.attrs.get("role") == "classifier":
                return n
        raise GraphError(f"graph {self.name!r} has no classifier node")

    @property
    def input_spec(self) -> TensorSpec:
        return self.tensors[self.input]

    @property
    def output_spec(self) -> TensorSpec:
        return self.tensors[self.output]

    @property
    def num_classes(self) -> int:
        return self.output_spec.shape[-1]

    @property
    def resolution(self) -> int:
        return self.input_spec.shape[0]

    # ----- copies --------------------------------------------------------------------------------
    def copy(self) -> "Graph":
        """Deep copy: parameters are copied, so training a copy never touches the original."""
        return Graph(
            name=self.name,
            dtype=self.dtype,
            input=self.input,
            output=self.output,
            tensors={k: TensorSpec(v.name, tuple(v.shape), v.dtype, v.quant) for k, v in self.tensors.items()},
            nodes=[
                Node(n.name, n.op, list(n.inputs), n.output, dict(n.attrs), {k: v.copy() for k, v in n.params.items()})
                for n in self.nodes
            ],
            meta=dict(self.meta),
        )

    def with_resolution(self, resolution: int) -> "Graph":
        """The same network at another input resolution (every op here is resolution-agnostic)."""
        h, w, c = self.input_spec.shape
        if self.meta.get("format") == "tflite" and (int(resolution), int(resolution)) != (h, w):
            # TF 'SAME' padding was resolved into pad nodes for this size: another size needs other pads
            raise GraphError(f"graph {self.name!r} comes from a .tflite file with a fixed {h}x{w} input; "
                             f"it cannot run at {resolution}x{resolution} (resize the images instead)")
        g = self.copy()
        g.tensors[g.input].shape = (int(resolution), int(resolution), c)
        infer_shapes(g)
        return g


# Attributes the IR gained after a scheme's model check (sparse/scheme.py: graph_fingerprint) was fixed, each
# with the value every older graph has. The check hashes one only when it differs from that value: graphs that
# differ in it never share a fingerprint, and older graphs keep theirs (the shipped schemes stay valid).
LATER_ATTRS = {"dilation": 1}


def later_attrs(node: Node) -> tuple:
    """(name, value) of the node's LATER_ATTRS that are not at their old value, values as plain Python."""
    return tuple((k, type(old)(node.attrs[k])) for k, old in LATER_ATTRS.items()
                 if k in node.attrs and node.attrs[k] != old)


def prefix_fingerprints(graph: Graph) -> list[str]:
    """fp[k] identifies what computes nodes[:k], chained: the graph's dtype, input name, shape and quantisation,
    then each node's name, op, wiring, every attribute (but a LATER_ATTRS one at its old value: an explicit
    dilation 1 is none), output quantisation and parameters. fp[-1] identifies
    the whole graph's numbers: the key of every cache of computed results (the trainer's frozen-prefix features,
    the contribution analysis's fine-tunes, the fleet's features)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((graph.dtype, graph.input, graph.input_spec.shape, graph.input_spec.quant)).encode())
    fps = [h.hexdigest()]
    for n in graph.nodes:
        attrs = sorted((k, v) for k, v in n.attrs.items() if not (k in LATER_ATTRS and v == LATER_ATTRS[k]))
        h.update(repr((n.name, n.op, n.inputs, n.output, attrs, graph.tensors[n.output].quant)).encode())
        for k in sorted(n.params):
            h.update(k.encode())
            h.update(np.ascontiguousarray(n.params[k]).data)
        fps.append(h.hexdigest())
    return fps


def _trainable(node) -> bool:
    """A layer whose op module has trainable weight and bias (today the convs): the layers schemes number."""
    module = REGISTRY.get(node.op)
    return module is not None and module.TRAINABLE

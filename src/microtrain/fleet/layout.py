"""What a fleet client sends: the trained slices of an update scheme, as named plain arrays.

`SliceLayout(graph, resolution)` lists, for every trained layer of `UpdateScheme.resolve(graph)`, the arrays
of one update (docs/fleet.md):

    <layer>.weight    int8   the trained slice: W[:, channels] (dense/pointwise; the classifier whole),
                             W[channels] (depthwise)                      only if the layer's weights train
    <layer>.bias      int32  (O,)                                         only if its bias trains
    <layer>.w_scales  float32 (O,)   real weight = code * w_scales[output channel]
    <layer>.x_scale   float32 (1,)   real bias = code * x_scale * w_scales[c]   (with a trained bias)
    layout_id         uint32 (1,)    CRC-32 of every array's name, dtype, shape and the trained channel
                                     indices: two ends agree on the slices without sending the indices

Nothing of the frozen model is in it. `extract` reads an update from a graph, `apply` writes one into a
graph, `check` refuses anything that is not exactly such an update (UpdateRejected names why).
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from ..errors import MicrotrainError
from ..ir.graph import Graph
from ..persist import layout_id as params_layout_id
from ..sparse.scheme import TrainSpec, is_depthwise

PARAMS = ("weight", "bias")  # the trained values; the other arrays describe them


class UpdateRejected(MicrotrainError):
    """A client's update is not an update of this layout (missing, extra or malformed arrays)."""


@dataclass(frozen=True)
class Entry:
    key: str
    node: str
    param: str  # weight | bias | w_scales | x_scale
    dtype: np.dtype
    shape: tuple[int, ...]
    index: tuple | None = None  # numpy index of a weight slice in the full tensor


class SliceLayout:
    def __init__(self, graph: Graph, resolution: dict[str, TrainSpec]):
        if graph.dtype != "int8":
            raise MicrotrainError(f"graph {graph.name!r}: a fleet exchanges int8 updates, the graph is {graph.dtype}")
        self.entries: list[Entry] = []
        chan_text = []
        for node in graph.nodes:  # graph order: every end lists the arrays the same way
            spec = resolution.get(node.name)
            if spec is None:
                continue
            w = node.params["weight"]
            o = w.shape[0]
            if spec.channels is not None:
                ch = np.asarray(spec.channels, dtype=np.intp)
                index = (ch,) if is_depthwise(node) else (slice(None), ch)
                shape = w[index].shape
                self.entries.append(Entry(f"{node.name}.weight", node.name, "weight", np.dtype(np.int8), shape, index))
                chan_text.append(f"{node.name}:{','.join(map(str, spec.channels))};")
            if spec.bias:
                self.entries.append(Entry(f"{node.name}.bias", node.name, "bias", np.dtype(np.int32), (o,)))
            self.entries.append(Entry(f"{node.name}.w_scales", node.name, "w_scales", np.dtype(np.float32), (o,)))
            if spec.bias:
                self.entries.append(Entry(f"{node.name}.x_scale", node.name, "x_scale", np.dtype(np.float32), (1,)))
        if not self.entries:
            raise MicrotrainError(f"graph {graph.name!r}: the update scheme trains nothing")
        structure = params_layout_id([(e.key, e.dtype, e.shape) for e in self.entries])
        self.layout_id = zlib.crc32("".join(chan_text).encode(), structure)
        self.by_key = {e.key: e for e in self.entries}
        self.keys = [e.key for e in self.entries] + ["layout_id"]

    # ----- sizes ---------------------------------------------------------------------------------------------
    @property
    def param_bytes(self) -> int:
        """Bytes of the trained values alone (int8 weight slices + int32 biases)."""
        return sum(int(np.prod(e.shape)) * e.dtype.itemsize for e in self.entries if e.param in PARAMS)

    @property
    def update_bytes(self) -> int:
        """Bytes of every array of one update (trained values, their scales, the layout id)."""
        return sum(int(np.prod(e.shape)) * e.dtype.itemsize for e in self.entries) + 4

    # ----- graph <-> arrays ------------------------------------------------------------------------------------
    def extract(self, graph: Graph) -> dict[str, np.ndarray]:
        out = {}
        for e in self.entries:
            node = graph.node(e.node)
            if e.param == "weight":
                a = node.params["weight"][e.index]
            elif e.param == "x_scale":
                a = np.array([graph.tensors[node.inputs[0]].quant.scale])
            else:
                a = node.params[e.param]
            out[e.key] = np.ascontiguousarray(a, dtype=e.dtype).copy()
        out["layout_id"] = np.array([self.layout_id], dtype=np.uint32)
        return out

    def apply(self, graph: Graph, arrays: dict[str, np.ndarray]) -> None:
        """Write the trained values of a checked update into `graph` (in place; scales stay the graph's)."""
        for e in self.entries:
            if e.param == "weight":
                graph.node(e.node).params["weight"][e.index] = arrays[e.key]
            elif e.param == "bias":
                graph.node(e.node).params["bias"][...] = arrays[e.key]

    def check(self, arrays: dict[str, np.ndarray], reference: dict[str, np.ndarray] | None = None) -> None:
        """Raise UpdateRejected unless `arrays` is exactly an update of this layout: every array present,
        nothing else, dtypes and shapes exact, the layout id ours, scales finite and positive, and (given a
        `reference` update, the global model's) scales equal to the reference's: scales never train, so a
        different scale means another model or calibration."""
        if not isinstance(arrays, dict):
            raise UpdateRejected(f"an update is a dict of arrays, got {type(arrays).__name__}")
        missing = [k for k in self.keys if k not in arrays]
        extra = sorted(set(arrays) - set(self.keys))
        if missing:
            raise UpdateRejected(f"missing array {missing[0]!r}" + (f" (+{len(missing) - 1} more)" if len(missing) > 1 else ""))
        if extra:
            raise UpdateRejected(f"unexpected array {extra[0]!r}")
        lid = arrays["layout_id"]
        if not isinstance(lid, np.ndarray) or lid.dtype != np.uint32 or lid.shape != (1,) or int(lid[0]) != self.layout_id:
            got = int(lid[0]) if isinstance(lid, np.ndarray) and lid.size == 1 and lid.dtype.kind in "ui" else lid
            raise UpdateRejected(f"layout id {got!r} is not this fleet's {self.layout_id:#010x} (another model or scheme)")
        for e in self.entries:
            a = arrays[e.key]
            if not isinstance(a, np.ndarray):
                raise UpdateRejected(f"{e.key}: not an array ({type(a).__name__})")
            if a.dtype != e.dtype or a.shape != e.shape:
                raise UpdateRejected(f"{e.key}: {a.dtype}{list(a.shape)}, the layout wants {e.dtype}{list(e.shape)}")
            if e.param in ("w_scales", "x_scale"):
                if not (np.all(np.isfinite(a)) and np.all(a > 0)):
                    raise UpdateRejected(f"{e.key}: scales must be finite and > 0")
                if reference is not None and not np.array_equal(a, reference[e.key]):
                    raise UpdateRejected(f"{e.key}: scales differ from the global model's")

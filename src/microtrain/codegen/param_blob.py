"""The exported parameter blob (mt_export_params, `microtrain run --params-out`) <-> graph parameters.

The blob is every trainable SRAM array's bytes in program order (native endianness): int8 weight
slices in the kernel layout of their family, int32 biases. `trainable_layout` (Program.meta, also
written to params.json beside the generated sources) says which node, parameter and channels each
array holds."""
from __future__ import annotations

import numpy as np

from ..errors import MicrotrainError
from ..ops.conv import oihw_weight


def decode_params(blob: bytes, layout: list[dict]) -> list[tuple[dict, np.ndarray]]:
    """[(layout item, array)], weights as OIHW slices W[:, channels] (depthwise W[channels])."""
    out, pos = [], 0
    for item in layout:
        dtype = np.int8 if item["param"] == "weight" else np.int32
        n = int(np.prod(item["shape"]))
        nbytes = n * np.dtype(dtype).itemsize
        if pos + nbytes > len(blob):
            raise MicrotrainError(f"parameter blob too short: {len(blob)} bytes, {item['node']} {item['param']} needs more")
        arr = np.frombuffer(blob[pos : pos + nbytes], dtype=dtype).reshape(item["shape"])
        pos += nbytes
        out.append((item, oihw_weight(arr, item["family"]) if item["param"] == "weight" else arr.copy()))
    if pos != len(blob):
        raise MicrotrainError(f"parameter blob has {len(blob)} bytes, the layout describes {pos}")
    return out


def graph_slice(graph, item: dict) -> np.ndarray:
    """The same parameter slice read from a Graph (for comparison with decode_params)."""
    p = graph.node(item["node"]).params[item["param"]]
    if item["param"] == "bias":
        return p
    ch = list(item["channels"])
    return p[ch] if item["family"] == "depthwise" else p[:, ch]


def apply_params(graph, blob: bytes, layout: list[dict]) -> None:
    """Write a device's trained parameters into a Graph in place (e.g. to evaluate them in NumPy)."""
    for item, arr in decode_params(blob, layout):
        node = graph.node(item["node"])
        if item["param"] == "bias":
            node.params["bias"] = arr.astype(np.int32)
        elif item["family"] == "depthwise":
            node.params["weight"][list(item["channels"])] = arr
        else:
            node.params["weight"][:, list(item["channels"])] = arr

"""Save and load graphs as JSON (structure) + .npz (arrays). Never pickle: np.load(allow_pickle=False).

`save_graph(g, "m.json")` writes m.json and m.npz beside it; floats round-trip exactly (repr).
"""
from __future__ import annotations

import json
import zipfile
import zlib
from pathlib import Path

import numpy as np

from ..errors import GraphError
from .graph import Graph, Node, QuantParams, TensorSpec
from .validate import validate

FORMAT = "microtrain-graph"
VERSION = 1


def _arrays_path(path: Path) -> Path:
    return path.with_suffix(".npz")


def graph_to_dict(graph: Graph) -> dict:
    return {
        "format": FORMAT,
        "version": VERSION,
        "name": graph.name,
        "dtype": graph.dtype,
        "input": graph.input,
        "output": graph.output,
        "meta": graph.meta,
        "tensors": [
            {
                "name": t.name,
                "shape": list(t.shape),
                "dtype": t.dtype,
                "quant": None if t.quant is None else {"scale": t.quant.scale, "zero_point": t.quant.zero_point},
            }
            for t in graph.tensors.values()
        ],
        "nodes": [
            {"name": n.name, "op": n.op, "inputs": n.inputs, "output": n.output, "attrs": _jsonable(n.attrs),
             "params": sorted(n.params)}
            for n in graph.nodes
        ],
    }


def _jsonable(attrs: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in attrs.items()}


def save_graph(graph: Graph, path) -> Path:
    path = Path(path)
    validate(graph)
    arrays = {f"{n.name}/{k}": v for n in graph.nodes for k, v in n.params.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(_arrays_path(path), **arrays)
    path.write_text(json.dumps(graph_to_dict(graph), indent=1))
    return path


def load_graph(path) -> Graph:
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as e:  # ValueError: bad JSON, bad UTF-8, a 5000-digit int
        raise GraphError(f"{path}: not a readable graph JSON file ({type(e).__name__}: {str(e)[:200]})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise GraphError(f"{path}: not a microtrain graph (missing format={FORMAT!r})")
    if doc.get("version") != VERSION:
        raise GraphError(f"{path}: graph format version {doc.get('version')!r} is not supported (want {VERSION})")
    npz = _arrays_path(path)
    try:
        with np.load(npz, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, NotImplementedError, RuntimeError, zlib.error) as e:
        # NotImplementedError: unknown zip compression method; RuntimeError: encrypted member
        raise GraphError(f"{npz}: cannot read the graph's arrays ({type(e).__name__}: {e})") from None
    try:
        tensors = {}
        for t in doc["tensors"]:
            q = t["quant"]
            tensors[t["name"]] = TensorSpec(
                str(t["name"]), tuple(int(v) for v in t["shape"]), str(t["dtype"]),
                None if q is None else QuantParams(float(q["scale"]), int(q["zero_point"])),
            )
        nodes = []
        for n in doc["nodes"]:
            attrs = {k: tuple(v) if isinstance(v, list) else v for k, v in n["attrs"].items()}
            params = {}
            for k in n["params"]:
                key = f"{n['name']}/{k}"
                if key not in arrays:
                    raise GraphError(f"{npz}: array {key!r} for node {n['name']!r} is missing")
                params[k] = arrays[key]
            nodes.append(Node(str(n["name"]), str(n["op"]), [str(i) for i in n["inputs"]], str(n["output"]), attrs, params))
        graph = Graph(str(doc["name"]), str(doc["dtype"]), str(doc["input"]), str(doc["output"]), tensors, nodes,
                      dict(doc.get("meta") or {}))
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as e:
        raise GraphError(f"{path}: malformed graph description ({type(e).__name__}: {e})") from None
    return validate(graph)

"""Writing a trained graph back into its .tflite file (`microtrain export TRAINED --tflite OUT.tflite`).

The exported model is the original flatbuffer with only the trained numbers changed, so its operators,
options (strides, padding, dilation factors), tensors, names, quantisation, metadata and signatures are the
original's byte for byte (a graph whose attributes differ from the source's is refused):
- a trained weight or bias of the same size is written over the original bytes (int8 weights back in
  TFLite's layout: OHWI, depthwise 1HWC, FULLY_CONNECTED [out, in]; int32 biases stay int32);
- what changes size (a new head with another class count: its weight, bias, the scale vectors, the shapes
  of the head's output, of the RESHAPE/SOFTMAX after it and of RESHAPE's target shape) is appended at the
  end of the file (aligned to 16 bytes) and the field's offset re-pointed to it. A flatbuffer offset only
  points forward, which an appended object always is; the old bytes stay, unreferenced;
- a tensor whose quantisation microtrain changed (a new head's logits: scale 1/8) gets the new scale and
  zero point; a new head's weight scales are written per tensor when they are one value and the source was
  per tensor, else per channel (quantized_dimension 0), its bias scale is input scale x weight scale.
The result is read back with microtrain's own reader and must equal the trained graph (parameters,
scales, tensor shapes and quantisation, attributes), else nothing is written.

The graph remembers its source (graph.meta["tflite_file"]: absolute path, sha256, size): a missing or
changed file is refused (frontends/tflite.py records it)."""
from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import numpy as np

from ..errors import MicrotrainError, ModelFormatError
from ..ir.graph import Graph
from .tflite import LABELS_KEY, read_tflite_bytes, tflite_to_graph
from .tflite_reader import TfliteFile

MARK = "microtrain export"  # appended to the model's description: tells a file microtrain wrote
ALIGN = 16


class ExportError(MicrotrainError):
    """A trained graph cannot be written as the .tflite file it came from."""


# ----- the source file --------------------------------------------------------------------------------
def source_file(graph: Graph, override=None) -> tuple[bytes, Path]:
    """The bytes of the .tflite file `graph` was read from (or `override`, which must be the same file),
    checked against the sha256 recorded when it was read."""
    if graph.meta.get("format") != "tflite":
        raise ExportError(f"graph {graph.name!r} was not read from a .tflite model; export --tflite writes models "
                          "that came from one")
    rec = graph.meta.get("tflite_file")
    if not isinstance(rec, dict) or not isinstance(rec.get("sha256"), str):
        raise ExportError(f"graph {graph.name!r} does not record the .tflite file it came from (saved by an older "
                          "microtrain): train it again from the .tflite file")
    path = override if override is not None else rec.get("path")
    if path is None:
        raise ExportError(f"graph {graph.name!r} was read from bytes, not a file: give --source FILE.tflite")
    path = Path(path)
    hint = "" if override is not None else " (give --source FILE.tflite if you moved it)"
    try:
        data = read_tflite_bytes(path)
    except ModelFormatError as e:
        raise ExportError(f"{e} (not graph {graph.name!r}'s source)") from None
    except FileNotFoundError:
        raise ExportError(f"{path}: the .tflite file graph {graph.name!r} was read from is missing{hint}") from None
    except OSError as e:
        raise ExportError(f"{path}: cannot read the graph's source .tflite ({e.strerror or e})") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != rec["sha256"] and override is not None:
        raise ExportError(f"{path}: not the .tflite file graph {graph.name!r} was read from (sha256 {digest[:12]}..., "
                          f"recorded {rec['sha256'][:12]}...)")
    if digest != rec["sha256"]:
        raise ExportError(f"{path}: changed since graph {graph.name!r} was read from it (sha256 {digest[:12]}..., "
                          f"recorded {rec['sha256'][:12]}...); export needs the original file{hint}")
    return data, path


def is_microtrain_tflite(path) -> bool:
    """A .tflite file microtrain exported (its description carries MARK)."""
    try:
        path = Path(path)
        m = TfliteFile(read_tflite_bytes(path), str(path))
        return MARK in m.f.string(m.model, 10, "description")
    except (OSError, MicrotrainError, struct.error, ValueError, IndexError, TypeError):
        return False


# ----- patching the flatbuffer -------------------------------------------------------------------------
class _Patch:
    """The source bytes with fields overwritten in place or re-pointed at objects appended at the end."""

    def __init__(self, m: TfliteFile):
        self.m, self.f, self.out = m, m.f, bytearray(m.f.b)

    def _ref(self, obj, slot, what) -> int:
        ref = self.f.field(obj, slot, 4, what)
        if ref == 0:
            raise ExportError(f"{self.m.source}: {what} is absent in the source model; export cannot add a field")
        return ref

    def append_vector(self, obj, slot, raw: bytes, count: int, what, terminator=b"") -> None:
        ref = self._ref(obj, slot, what)
        self.out += bytes(-(len(self.out) + 4) % ALIGN)  # the elements start 16-byte aligned
        pos = len(self.out)
        self.out += struct.pack("<I", count) + raw + terminator
        struct.pack_into("<I", self.out, ref, pos - ref)  # forward offset from the field to the vector

    def vector(self, obj, slot, arr: np.ndarray, what) -> None:
        """Point a vector field at a new vector holding arr (little-endian). Never written in place: a
        converter may let several tables share one vector (a shape, a scale list)."""
        arr = np.ascontiguousarray(arr, arr.dtype.newbyteorder("<"))
        self.append_vector(obj, slot, arr.tobytes(), arr.size, what)

    def scalar(self, obj, slot, fmt, value, default, what) -> None:
        pos = self.f.field(obj, slot, struct.calcsize(fmt), what)
        if pos == 0:
            if value != default:
                raise ExportError(f"{self.m.source}: {what} is absent in the source model (default {default}); "
                                  f"export cannot set it to {value}")
            return
        struct.pack_into("<" + fmt, self.out, pos, value)

    def buffer_data(self, info: dict, arr: np.ndarray, where) -> None:
        """The constant bytes of a tensor: over the old ones when the size is unchanged, else a new vector."""
        raw = np.ascontiguousarray(arr, arr.dtype.newbyteorder("<")).tobytes()
        span = self.m.buffer_span(info["buffer"], where)
        if span is not None and span[1] == len(raw):
            self.out[span[0] : span[0] + len(raw)] = raw
            return
        buf = self.m.buffer(info["buffer"], where)
        if self.f.field(buf, 4, 4, where) == 0:
            raise ExportError(f"{where}: tensor {info['index']}'s data lies outside the flatbuffer and changes size; "
                              "export cannot move it")
        self.append_vector(buf, 4, raw, len(raw), f"buffer {info['buffer']}.data")

    def quantization(self, idx: int, scale, zero_point, qdim: int | None, where) -> None:
        """New scale and zero-point vectors (and quantized_dimension) of tensor idx; stale min/max (float
        ranges some converters keep) are recomputed from them."""
        t = self.m.tensors[idx]
        q = self.f.child(t, 12, self.m.tfl.QuantizationParameters, f"{where}: tensor {idx}.quantization")
        if q is None:
            raise ExportError(f"{where}: tensor {idx} has no quantization in the source model")
        scale = np.asarray(scale, np.float32).reshape(-1)
        zero_point = np.asarray(zero_point, np.int64).reshape(-1)
        self.vector(q, 8, scale, f"tensor {idx}.scale")
        self.vector(q, 10, zero_point, f"tensor {idx}.zero_point")
        if qdim is not None:
            self.scalar(q, 16, "i", int(qdim), 0, f"tensor {idx}.quantized_dimension")
        for slot, code in ((4, -128), (6, 127)):
            if self.f.vector(q, slot, 4, f"tensor {idx}.min/max")[1]:
                self.vector(q, slot, ((code - zero_point) * scale.astype(np.float64)).astype(np.float32),
                            f"tensor {idx}.min/max")

    def shape(self, idx: int, shape, where) -> None:
        t = self.m.tensors[idx]
        self.vector(t, 4, np.asarray(shape, np.int32), f"tensor {idx}.shape")
        sig = self.f.array(t, 18, np.int32, f"tensor {idx}.shape_signature")
        if len(sig):  # dynamic dimensions (-1) stay dynamic, the others follow the new shape
            self.vector(t, 18, np.where(sig < 0, sig, np.asarray(shape, np.int32)) if len(sig) == len(shape)
                        else sig, f"tensor {idx}.shape_signature")

    def describe(self, text: str) -> None:
        """Append `text` to the model's description (when it has one)."""
        model = self.m.model
        if self.f.field(model, 10, 4, "description") == 0:
            return
        old = self.f.string(model, 10, "description")
        raw = (f"{old}; {text}" if old else text).encode()
        self.append_vector(model, 10, raw, len(raw), "description", terminator=b"\0")

    def result(self) -> bytes:
        return bytes(self.out + bytes(-len(self.out) % ALIGN))


def _tflite_weight(kind: str, w: np.ndarray) -> np.ndarray:
    """An IR OIHW weight in TFLite's layout."""
    if kind == "conv":
        return w.transpose(0, 2, 3, 1)  # OHWI
    if kind == "depthwise":
        return w[:, 0].transpose(1, 2, 0)[None]  # (1, kh, kw, C*M)
    return w.transpose(0, 2, 3, 1).reshape(w.shape[0], -1)  # FULLY_CONNECTED: NHWC flattening


# ----- the export ------------------------------------------------------------------------------------
def _check_structure(graph: Graph, ref: Graph, source: str) -> None:
    """The trained graph must be the source's network: same nodes, attributes and tensors; only the
    classifier's output channels (a new head) and its output's quantisation may differ."""
    names, ref_names = [n.name for n in graph.nodes], [n.name for n in ref.nodes]
    if names != ref_names:
        extra = sorted(set(names) ^ set(ref_names))[:3]
        raise ExportError(f"graph {graph.name!r} has other layers than {source} ({', '.join(extra) or 'order'}); "
                          "export writes only graphs read from that file")
    head = ref.nodes[-1].name if ref.nodes[-1].output == ref.output else None
    for n, r in zip(graph.nodes, ref.nodes):
        if (n.op, n.inputs, n.output) != (r.op, r.inputs, r.output) or n.attrs != r.attrs:
            raise ExportError(f"graph {graph.name!r}: layer {n.name} differs from {source}'s "
                              f"({n.op} {n.attrs} vs {r.op} {r.attrs})")
        for k, v in r.params.items():
            got = n.params.get(k)
            want_shape = v.shape if n.name != head else (None,) + v.shape[1:]
            if got is None or len(got.shape) != len(v.shape) or any(
                    w is not None and g != w for g, w in zip(got.shape, want_shape)):
                raise ExportError(f"graph {graph.name!r}: layer {n.name} {k} has shape "
                                  f"{None if got is None else got.shape}, the source's is {v.shape}")
            if got.dtype != v.dtype:
                raise ExportError(f"graph {graph.name!r}: layer {n.name} {k} is {got.dtype}, the source's {v.dtype} "
                                  "(export writes int8 weights and int32 biases)")
    if set(graph.tensors) != set(ref.tensors) or (graph.input, graph.output) != (ref.input, ref.output):
        raise ExportError(f"graph {graph.name!r} has other tensors than {source}")
    for name, t in graph.tensors.items():
        r = ref.tensors[name]
        same_shape = t.shape == r.shape or (name == ref.output and head and t.shape[:-1] == r.shape[:-1])
        if not same_shape:
            raise ExportError(f"graph {graph.name!r}: tensor {name} has shape {t.shape}, the source's is {r.shape}")
        if t.quant != r.quant and name != ref.output:
            raise ExportError(f"graph {graph.name!r}: tensor {name} has quantisation {t.quant}, the source's is "
                              f"{r.quant}; export changes only the classifier's output")


def graph_differences(a: Graph, b: Graph) -> list[str]:
    """What differs between two graphs' layers, parameters and tensors (empty: the same network)."""
    out = []
    if [n.name for n in a.nodes] != [n.name for n in b.nodes]:
        return ["layers differ"]
    for n, m in zip(a.nodes, b.nodes):
        if (n.op, n.inputs, n.output, n.attrs) != (m.op, m.inputs, m.output, m.attrs):
            out.append(f"{n.name}: op/attributes")
        for k in set(n.params) | set(m.params):
            x, y = n.params.get(k), m.params.get(k)
            if x is None or y is None or x.shape != y.shape or x.dtype != y.dtype or not np.array_equal(x, y):
                out.append(f"{n.name}.{k}")
    for name in set(a.tensors) | set(b.tensors):
        x, y = a.tensors.get(name), b.tensors.get(name)
        if x is None or y is None or (x.shape, x.quant) != (y.shape, y.quant):
            out.append(f"tensor {name}")
    return sorted(out)


def export_tflite(graph: Graph, data: bytes, source: str) -> bytes:
    """The .tflite bytes of `graph` (trained from the model in `data`): see the module docstring."""
    from .. import __version__

    if graph.dtype != "int8":
        raise ExportError(f"graph {graph.name!r} is {graph.dtype} (the fp32 baseline); export --tflite writes int8 "
                          "graphs trained without --fp32")
    ref = tflite_to_graph(data, source)
    _check_structure(graph, ref, source)
    m = TfliteFile(data, source)
    p = _Patch(m)
    users = {}  # buffer index -> tensors reading it: a shared buffer is never overwritten for one of them
    for idx in range(len(m.tensors)):
        users.setdefault(m.info(idx, source)["buffer"], []).append(idx)
    head = ref.nodes[-1].name if ref.nodes[-1].output == ref.output else None
    rescaled_nodes = {}  # node -> its TFLite tensors, for nodes whose quantisation was written
    for name, rec in ref.meta["tflite_params"].items():
        node, old = graph.node(name), ref.node(name)
        where = f"{source}: operator {rec['op']} ({name})"
        xq = graph.tensors[node.inputs[0]].quant
        w, b, scales = node.params["weight"], node.params["bias"], node.params["w_scales"].astype(np.float32)
        resized = w.shape[0] != old.params["weight"].shape[0]
        rescaled = resized or not np.array_equal(scales, old.params["w_scales"])
        if rescaled:
            rescaled_nodes[name] = rec
        changed = {"weight": not np.array_equal(w, old.params["weight"]) or resized,
                   "bias": not np.array_equal(b, old.params["bias"]) or resized}
        for param, idx in (("weight", rec["weight"]), ("bias", rec["bias"])):
            if not changed[param] and not rescaled:
                continue
            if idx < 0:
                if param == "bias" and not b.any():
                    continue
                raise ExportError(f"{where}: has no {param} tensor in the source, but the trained one is not zero")
            info = m.info(idx, where)
            if len(users[info["buffer"]]) > 1:
                raise ExportError(f"{where}: {param} tensor {idx} shares buffer {info['buffer']} with tensors "
                                  f"{users[info['buffer']]}; export cannot change it for one of them")
            arr = _tflite_weight(rec["kind"], w) if param == "weight" else b.astype(np.int32)
            if changed[param]:
                p.buffer_data(info, arr, where)
            if resized:
                p.shape(idx, arr.shape, where)
            if rescaled:
                per_tensor = len(info["scale"]) == 1 and np.all(scales == scales[0])
                s = scales[:1] if per_tensor else scales
                if param == "weight":
                    p.quantization(idx, s, np.zeros(len(s)), None if per_tensor else (3 if rec["kind"] == "depthwise" else 0),
                                   where)
                else:  # TFLite checks bias scale = input scale x weight scale
                    p.quantization(idx, (np.float64(np.float32(xq.scale)) * s.astype(np.float64)).astype(np.float32),
                                   np.zeros(len(s)), None if per_tensor else 0, where)
    out = graph.tensors[graph.output]
    tensors = ref.meta["tflite_tensors"]
    head_outputs = list(tensors[ref.output]) + ([ref.meta["softmax"]["output_index"]] if ref.meta.get("softmax") else [])
    n_old, n_new = ref.tensors[ref.output].shape[-1], out.shape[-1]
    if head and n_new != n_old:
        for idx in head_outputs:
            shape = list(m.info(idx, source)["shape"])
            p.shape(idx, shape[:-1] + [n_new], source)
        _reshape_targets(m, p, set(head_outputs), n_old, n_new, source)
    for name, t in graph.tensors.items():
        if t.quant != ref.tensors[name].quant:
            for idx in tensors.get(name, []):
                p.quantization(idx, [t.quant.scale], [t.quant.zero_point], None, source)
    labels = graph.meta.get("labels")  # written when the source does not already name them so
    named = (f"; {LABELS_KEY}{labels_json(labels)}"  # read back by frontends/tflite.py
             if isinstance(labels, (list, tuple)) and len(labels) == graph.num_classes
             and list(labels) != ref.meta.get("labels") else "")
    p.describe(f"{MARK} {__version__} from sha256 {hashlib.sha256(data).hexdigest()[:16]}{named}")
    result = p.result()
    _check_quantization(TfliteFile(result, f"exported {source}"), graph, rescaled_nodes)
    back = tflite_to_graph(result, f"exported {source}")
    diff = graph_differences(back, graph)
    if diff:  # never write a file that would not give the trained graph's numbers
        raise ExportError(f"the exported model would differ from graph {graph.name!r} in {', '.join(diff[:5])}")
    return result


def labels_json(labels) -> str:
    """The names as JSON without a single space (spaces inside names escaped as \\u0020), so that LABELS_KEY
    (which ends in a space) cannot occur inside it and the reader's last LABELS_KEY is the newest export's."""
    return json.dumps([str(v) for v in labels], separators=(",", ":")).replace(" ", "\\u0020")


def _check_quantization(m: TfliteFile, graph: Graph, nodes: dict) -> None:
    """The rewritten weight and bias quantisations are consistent: one scale or one per output channel,
    the same count for the bias, quantized_dimension on the output channels, zero points 0, bias scale =
    input scale x weight scale (what TFLite checks, to 1e-6)."""
    for name, rec in nodes.items():
        node = graph.node(name)
        o = node.params["weight"].shape[0]
        w = m.info(rec["weight"], name)
        ok = len(w["scale"]) in (1, o) and len(w["zero_point"]) == len(w["scale"]) and not w["zero_point"].any()
        ok = ok and (len(w["scale"]) == 1 or w["qdim"] == (3 if rec["kind"] == "depthwise" else 0))
        if rec["bias"] >= 0:
            b = m.info(rec["bias"], name)
            x = np.float64(graph.tensors[node.inputs[0]].quant.scale)
            want = x * w["scale"].astype(np.float64)
            ok = ok and len(b["scale"]) == len(w["scale"]) and len(b["zero_point"]) == len(b["scale"])
            ok = ok and not b["zero_point"].any() and b["type"] == 2 and (len(b["scale"]) == 1 or b["qdim"] == 0)
            ok = ok and bool(np.all(np.abs(b["scale"] - want) <= 1e-6 * np.minimum(b["scale"], want)))
        if not ok:
            raise ExportError(f"{m.source}: layer {name}: inconsistent weight/bias quantisation after export")


def _reshape_targets(m: TfliteFile, p: _Patch, outputs: set, n_old: int, n_new: int, source: str) -> None:
    """RESHAPE operators producing a head output: their target shape (constant input and options) ends in
    the new class count."""
    f = m.f
    for i, op in enumerate(m.operators):
        code = f.scalar(op, 4, "I", 0, f"operator {i}")
        outs = f.array(op, 8, np.int32, f"operator {i}.outputs")
        if m.opnames[code] != "RESHAPE" or not set(int(v) for v in outs) & outputs:
            continue
        where = f"{source}: operator {i} (RESHAPE)"
        ins = f.array(op, 6, np.int32, f"operator {i}.inputs")
        if len(ins) > 1 and ins[1] >= 0:
            info = m.info(int(ins[1]), where)
            target = m.data(info, where)
            if target is not None and target.size and target.reshape(-1)[-1] == n_old:
                new = target.reshape(-1).copy()
                new[-1] = n_new
                p.buffer_data(info, new.astype(np.int32), where)
        opts = f.child(op, 12, m.tfl.ReshapeOptions, where + " options")
        if opts is not None:
            shape = f.array(opts, 4, np.int32, where + " new_shape")
            if len(shape) and shape[-1] == n_old:
                p.vector(opts, 4, np.concatenate([shape[:-1], [n_new]]).astype(np.int32), where + " new_shape")


def export_to_file(graph: Graph, out, source=None) -> Path:
    """Export `graph` to `out` (see export_tflite): the source is the file the graph recorded, or `source`."""
    data, path = source_file(graph, source)
    result = export_tflite(graph, data, str(path))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(result)
    return out


__all__ = ["ExportError", "export_tflite", "export_to_file", "graph_differences", "is_microtrain_tflite",
           "source_file"]

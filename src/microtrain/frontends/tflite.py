"""Loader of fully int8 TensorFlow Lite flatbuffers (.tflite) into the IR.

The flatbuffer is read by frontends/tflite_reader.py (the `tflite` package's generated classes behind a
bounds check of every offset and length: a malformed file is a ModelFormatError, never a crash).

Mapping (NHWC throughout; the IR's per-sample shape drops the batch dimension of 1):
- CONV_2D, DEPTHWISE_CONV_2D (depth multiplier M: groups = input channels) -> conv2d with OIHW weights;
  dilation factors -> attrs "dilation" (when not 1; equal on both axes, or one axis with a 1-tap kernel);
  FULLY_CONNECTED on a (1, 1, C) map -> a 1x1 conv2d, so every conv path (training included) applies (on a
  flattened (H, W, C) map: an HxW conv);
- TF 'SAME' padding: symmetric -> the conv's own padding; asymmetric (strided convs on even sizes)
  -> a `pad` node (pads with the zero point, i.e. real 0) before a conv with padding 0;
- AVERAGE_POOL_2D -> global_avg_pool when one window covers the map, else avg_pool2d;
- ADD -> add; PAD -> pad; RESHAPE that keeps the (H, W, C) shape, or flattens a map for FULLY_CONNECTED
  layers only -> an alias (no node);
- fused RELU / RELU6 -> the int8 clamp range TFLite computes (attrs "clamp" when not the whole range);
- a trailing SOFTMAX is not a node: the graph's output is the logits, and graph.meta["softmax"] keeps
  what TFLite's int8 softmax needs (beta, output quantisation) for inference.
Every node carries attrs["requant"] = "tflite": its int8 forward uses TFLite's fixed-point rounding mode
of quant/arith.py, so microtrain computes the numbers the TFLite reference kernels compute.
"""
from __future__ import annotations

import hashlib
import math
import stat
import struct
from pathlib import Path

import numpy as np

from ..errors import GraphError, ModelFormatError, UnsupportedOpError
from ..ir.graph import Graph, Node, QuantParams, TensorSpec
from ..ir.validate import validate
from ..ops.conv import span
from .tflite_reader import FULL_INT8_HINT, INT8, MAX_DIM, TYPE_NAMES, TfliteFile

MAX_FILE_BYTES = 256 * 2**20  # a microcontroller model is far smaller; refuse before reading
MAX_ACTIVATION_ELEMS = 2**24  # per tensor and sample
SUPPORTED = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD", "AVERAGE_POOL_2D", "RESHAPE", "PAD",
             "SOFTMAX")
ACT_NONE, ACT_RELU, ACT_RELU6 = 0, 1, 3
PAD_SAME, PAD_VALID = 0, 1

# Class names of the known reference models (README of ../shared/models/tflite), by file sha256.
KNOWN_LABELS = {
    "597a384c8c2c8a1276f04702f25013b7838f2f814f1ca7c174d295b73e3d6b7b": ["non-person", "person"],
    "808cfdfc0cf3a6fa6f6fa26bfa379ea97c16d5db7334637766e39c3408502e9d": ["notperson", "person"],
    "3c002613d1b2475eb51dd78dfb85a546c8ae658dee71cf6ade43b022fe205415": [
        "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
    "aeea436800704fce17b17292e4412630ad856e9d777c044c64ef748a880bd0ae": [
        "down", "go", "left", "no", "off", "on", "right", "stop", "up", "yes", "silence", "unknown"],
}


# ----- conversion -------------------------------------------------------------------------------------
class _Converter:
    def __init__(self, m: TfliteFile, source: str):
        self.m, self.source = m, source
        self.tensors: dict[str, TensorSpec] = {}
        self.nodes: list[Node] = []
        self.ir_of: dict[int, str] = {}  # TFLite tensor index -> IR tensor name
        self.softmax_info = None
        self.param_tensors: dict[str, dict] = {}  # conv node -> its TFLite operator, kind, weight and bias tensors

    # ----- tensors
    def quant(self, info, where) -> QuantParams:
        if info["type"] != INT8:
            raise UnsupportedOpError(
                f"{where}: tensor {info['index']} ({info['name']!r}) is {TYPE_NAMES.get(info['type'], info['type'])}; "
                f"microtrain trains fully int8 models: {FULL_INT8_HINT}")
        if len(info["scale"]) != 1 or len(info["zero_point"]) != 1:
            raise ModelFormatError(f"{where}: activation tensor {info['index']} ({info['name']!r}) needs one scale and "
                                   f"one zero point, has {len(info['scale'])} and {len(info['zero_point'])}")
        try:
            return QuantParams(float(info["scale"][0]), int(info["zero_point"][0]))
        except GraphError as e:
            raise ModelFormatError(f"{where}: tensor {info['index']} ({info['name']!r}): {e}") from None

    def ir_shape(self, info, where) -> tuple[int, int, int]:
        s = info["shape"]
        if len(s) == 4 and s[0] == 1:
            shape = s[1:]
        elif len(s) == 2 and s[0] == 1:
            shape = (1, 1, s[1])
        else:
            raise ModelFormatError(f"{where}: tensor {info['index']} ({info['name']!r}) has shape {list(s)}; "
                                   "expected [1, H, W, C] or [1, C] (batch 1, NHWC)")
        if math.prod(shape) > MAX_ACTIVATION_ELEMS:
            raise ModelFormatError(f"{where}: tensor {info['index']} has {math.prod(shape)} elements per sample; "
                                   f"at most {MAX_ACTIVATION_ELEMS}")
        return tuple(int(v) for v in shape)

    def new_tensor(self, idx, where) -> str:
        info = self.m.info(idx, where)
        name = f"t{idx}"
        self.tensors[name] = TensorSpec(name, self.ir_shape(info, where), "int8", self.quant(info, where))
        self.ir_of[idx] = name
        return name

    def activation(self, idx, where) -> str:
        if idx not in self.ir_of:
            raise ModelFormatError(f"{where}: input tensor {idx} is used before any operator produces it")
        return self.ir_of[idx]

    def const(self, idx, where, dtype, what) -> tuple[np.ndarray, dict]:
        info = self.m.info(idx, where)
        arr = self.m.data(info, where)
        if arr is None:
            raise UnsupportedOpError(f"{where}: the {what} (tensor {idx}) is not a constant; microtrain needs "
                                     "constant weights and biases")
        if arr.dtype != dtype:
            raise ModelFormatError(f"{where}: the {what} (tensor {idx}) is {arr.dtype}, expected {np.dtype(dtype).name}")
        return arr, info

    # ----- helpers
    def options(self, op, cls_name, type_id, where):
        f = self.m.f
        kind = f.scalar(op, 10, "B", 0, where)
        cls = getattr(self.m.tfl, cls_name)
        opts = f.child(op, 12, cls, where + " options")
        if opts is not None and kind != type_id:
            raise ModelFormatError(f"{where}: builtin options of type {kind}, expected {cls_name}")
        return opts

    def opt(self, opts, slot, fmt, default, where):
        return default if opts is None else self.m.f.scalar(opts, slot, fmt, default, where)

    def clamp(self, act: int, yq: QuantParams, where, opname):
        """TFLite's CalculateActivationRangeQuantized: RELU [zp, 127], RELU6 [zp, zp + round(6/scale)]."""
        if act == ACT_NONE:
            return None
        if act not in (ACT_RELU, ACT_RELU6):
            names = {2: "RELU_N1_TO_1", 4: "TANH", 5: "SIGN_BIT"}
            raise UnsupportedOpError(f"{where}: fused activation {names.get(act, act)} of {opname} is not supported; "
                                     "microtrain reads NONE, RELU and RELU6")
        lo = max(-128, yq.zero_point)
        hi = 127
        if act == ACT_RELU6:
            with np.errstate(over="ignore"):
                six = float(np.float32(6.0) / np.float32(yq.scale))  # float32 division, as TFLite
            hi = 127 if six > 256 else min(127, yq.zero_point + int(np.floor(six + 0.5)))
        return None if (lo, hi) == (-128, 127) else (int(lo), int(hi))

    def dilation(self, dh, dw, kh, kw, where) -> int:
        """The conv's one dilation (attrs "dilation"): a factor along an axis where the kernel has one tap
        changes nothing (a Keras Conv1D's (1, k) kernel dilated (1, d)); the others must be equal and >= 1."""
        if dh < 1 or dw < 1:
            raise ModelFormatError(f"{where}: dilation factors {dh}x{dw} (h x w) must be >= 1")
        used = {f for f, k in ((dh, kh), (dw, kw)) if k > 1}
        if len(used) > 1:
            raise UnsupportedOpError(f"{where}: dilation {dh}x{dw} (h x w) of a {kh}x{kw} kernel; microtrain needs "
                                     "equal dilation factors on both axes: re-export the model with them equal")
        return used.pop() if used else 1

    def same_padding(self, h, w, kh, kw, s, padding, where):
        """(top, bottom, left, right) of TF 'SAME' (extra row/column at the end) or 'VALID'; kh, kw: the
        window's extent (a dilated kernel's span, as TFLite's ComputePaddingHeightWidth)."""
        if padding == PAD_VALID:
            return (0, 0, 0, 0)
        if padding != PAD_SAME:
            raise ModelFormatError(f"{where}: unknown padding {padding}")
        ho, wo = -(-h // s), -(-w // s)
        ph, pw = max((ho - 1) * s + kh - h, 0), max((wo - 1) * s + kw - w, 0)
        return (ph // 2, ph - ph // 2, pw // 2, pw - pw // 2)

    def add_node(self, name, op, inputs, out_idx, attrs, params, where) -> str:
        out = self.new_tensor(out_idx, where)
        self.nodes.append(Node(name, op, inputs, out, {**attrs, "requant": "tflite"}, params))
        return out

    def padded(self, x, pads, name):
        """x itself when `pads` is symmetric and equal in H and W (returned as the conv's padding), else a
        pad node in front: (input tensor, conv padding)."""
        t, b, l, r = pads
        if t == b == l == r:
            return x, t
        out = f"{name}.pad"
        h, w, c = self.tensors[x].shape
        self.tensors[out] = TensorSpec(out, (h + t + b, w + l + r, c), "int8", self.tensors[x].quant)
        self.nodes.append(Node(f"{name}_pad", "pad", [x], out, {"pads": pads, "requant": "tflite"}, {}))
        return out, 0

    # ----- operators
    def convert(self):
        m = self.m
        if len(m.inputs) != 1 or len(m.outputs) != 1:
            raise ModelFormatError(f"{self.source}: {len(m.inputs)} inputs and {len(m.outputs)} outputs; "
                                   "microtrain reads models with one input and one output")
        self.input = self.new_tensor(int(m.inputs[0]), f"{self.source}: model input")
        self.consumers = {}  # TFLite tensor index -> names of the operators reading it
        for i, op in enumerate(m.operators):
            code = m.f.scalar(op, 4, "I", 0, f"operator {i}")
            for t in m.f.array(op, 6, np.int32, f"operator {i}.inputs"):
                self.consumers.setdefault(int(t), []).append(m.opnames[code] if code < len(m.opnames) else "?")
        for i, op in enumerate(m.operators):
            f = m.f
            code = f.scalar(op, 4, "I", 0, f"operator {i}")
            name = m.opnames[code] if code < len(m.opnames) else None
            where = f"{self.source}: operator {i} ({name})"
            if name is None:
                raise ModelFormatError(f"{self.source}: operator {i} uses opcode index {code}, the model has {len(m.opnames)}")
            if self.softmax_info is not None:
                raise UnsupportedOpError(f"{where} follows the SOFTMAX; microtrain reads SOFTMAX only as the last operator")
            if name not in SUPPORTED:
                raise UnsupportedOpError(
                    f"{where} is not supported; microtrain reads {', '.join(SUPPORTED)}: re-export the model "
                    "without it or file an issue naming the operator")
            ins = [int(v) for v in f.array(op, 6, np.int32, f"operator {i}.inputs")]
            outs = [int(v) for v in f.array(op, 8, np.int32, f"operator {i}.outputs")]
            if len(outs) != 1:
                raise ModelFormatError(f"{where}: {len(outs)} outputs, expected 1")
            if not ins or ins[0] < 0:
                raise ModelFormatError(f"{where}: has no data input")
            getattr(self, name.lower())(op, i, ins, outs[0], where)
        out_idx = int(m.outputs[0])
        if self.softmax_info is not None and self.softmax_info["output_index"] == out_idx:
            out = self.softmax_info["logits"]
        elif out_idx in self.ir_of:
            out = self.ir_of[out_idx]
        else:
            raise ModelFormatError(f"{self.source}: the model output (tensor {out_idx}) is never produced")
        return out

    def conv_2d(self, op, i, ins, out_idx, where):
        self._conv(op, i, ins, out_idx, where, depthwise=False)

    def depthwise_conv_2d(self, op, i, ins, out_idx, where):
        self._conv(op, i, ins, out_idx, where, depthwise=True)

    def _conv(self, op, i, ins, out_idx, where, depthwise):
        if len(ins) not in (2, 3):
            raise ModelFormatError(f"{where}: {len(ins)} inputs, expected input, filter and bias")
        x = self.activation(ins[0], where)
        h, w, c = self.tensors[x].shape
        wt, winfo = self.const(ins[1], where, np.int8, "filter")
        if wt.ndim != 4:
            raise ModelFormatError(f"{where}: filter has shape {list(wt.shape)}, expected 4 dimensions")
        if depthwise:
            opts = self.options(op, "DepthwiseConv2DOptions", 2, where)
            pad, sw, sh, act = (self.opt(opts, s, "b" if s in (4, 12) else "i", 0, where) for s in (4, 6, 8, 12))
            dw, dh = self.opt(opts, 14, "i", 1, where), self.opt(opts, 16, "i", 1, where)
            _, kh, kw, o = wt.shape
            if wt.shape[0] != 1 or o % c:
                raise ModelFormatError(f"{where}: depthwise filter {list(wt.shape)} does not fit {c} input channels")
            weight = np.ascontiguousarray(wt[0].transpose(2, 0, 1)[:, None])  # (C*M, 1, kh, kw)
            groups, qdim = c, 3
        else:
            opts = self.options(op, "Conv2DOptions", 1, where)
            pad, sw, sh, act = (self.opt(opts, s, "b" if s in (4, 10) else "i", 0, where) for s in (4, 6, 8, 10))
            dw, dh = self.opt(opts, 12, "i", 1, where), self.opt(opts, 14, "i", 1, where)
            o, kh, kw, ci = wt.shape
            if ci != c:
                raise UnsupportedOpError(f"{where}: filter has {ci} input channels for a {c}-channel input "
                                         "(grouped convolution is not supported)")
            weight = np.ascontiguousarray(wt.transpose(0, 3, 1, 2))  # OHWI -> OIHW
            groups, qdim = 1, 0
        if sh != sw or sh < 1:
            raise UnsupportedOpError(f"{where}: stride {sh}x{sw}; microtrain needs equal strides >= 1")
        d = self.dilation(dh, dw, kh, kw, where)
        w_scales = self.weight_scales(winfo, o, qdim, where)
        bias = self.bias(ins, o, where)
        pads = self.same_padding(h, w, span(kh, d), span(kw, d), sh, pad, where)
        if (h + pads[0] + pads[1]) * (w + pads[2] + pads[3]) * c > MAX_ACTIVATION_ELEMS:
            raise ModelFormatError(f"{where}: 'SAME' padding of the {kh}x{kw} window dilated {d} pads the {h}x{w}x{c} "
                                   f"input beyond {MAX_ACTIVATION_ELEMS} elements")
        name = f"op{i}_{'depthwise' if depthwise else 'conv'}"
        self.param_tensors[name] = {"op": i, "kind": "depthwise" if depthwise else "conv", "weight": ins[1],
                                    "bias": ins[2] if len(ins) > 2 else -1}
        x, p = self.padded(x, pads, name)
        yq = self.quant(self.m.info(out_idx, where), where)
        attrs = {"kernel": (kh, kw), "stride": sh, "padding": p, "groups": groups}
        if d != 1:  # absent when 1, as the torch importer does: an undilated graph is unchanged
            attrs["dilation"] = d
        clamp = self.clamp(act, yq, where, "the conv")
        if clamp:
            attrs["clamp"] = clamp
        self.add_node(name, "conv2d", [x], out_idx, attrs, {"weight": weight, "bias": bias, "w_scales": w_scales}, where)

    def weight_scales(self, winfo, o, qdim, where) -> np.ndarray:
        scale, zp = winfo["scale"], winfo["zero_point"]
        if len(scale) not in (1, o) or len(zp) not in (1, len(scale)):
            raise ModelFormatError(f"{where}: filter has {len(scale)} scales and {len(zp)} zero points for {o} output "
                                   "channels")
        if np.any(zp != 0):
            raise ModelFormatError(f"{where}: filter zero points must be 0 (symmetric int8 weights)")
        if len(scale) > 1 and winfo["qdim"] != qdim:
            raise ModelFormatError(f"{where}: filter quantized_dimension {winfo['qdim']}, expected {qdim}")
        if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
            raise ModelFormatError(f"{where}: filter scales must be finite and positive")
        return np.ascontiguousarray(np.broadcast_to(scale.astype(np.float32), (o,)))

    def bias(self, ins, o, where) -> np.ndarray:
        """int32 bias of o channels (zeros when absent). Its quantized_dimension is not checked: TOCO wrote
        the depthwise filter's 3 onto 1-D biases (person_detect), and TFLite Micro ignores it too."""
        if len(ins) < 3 or ins[2] < 0:
            return np.zeros(o, np.int32)
        b, _ = self.const(ins[2], where, np.int32, "bias")
        if b.shape != (o,):
            raise ModelFormatError(f"{where}: bias has shape {list(b.shape)}, expected [{o}]")
        return np.ascontiguousarray(b)

    def fully_connected(self, op, i, ins, out_idx, where):
        if len(ins) not in (2, 3):
            raise ModelFormatError(f"{where}: {len(ins)} inputs, expected input, weights and bias")
        x = self.activation(ins[0], where)
        opts = self.options(op, "FullyConnectedOptions", 8, where)
        act = self.opt(opts, 4, "b", 0, where)
        if self.opt(opts, 6, "b", 0, where) != 0:
            raise UnsupportedOpError(f"{where}: shuffled weights format is not supported")
        wt, winfo = self.const(ins[1], where, np.int8, "weights")
        if wt.ndim != 2:
            raise ModelFormatError(f"{where}: weights have shape {list(wt.shape)}, expected [out, in]")
        o, n_in = wt.shape
        h, w, c = self.tensors[x].shape
        if h * w * c != n_in:
            raise ModelFormatError(f"{where}: weights take {n_in} inputs, the input has {h}x{w}x{c}")
        # on an (H, W, C) map (a flattened conv output) the FC is an HxW conv: TFLite flattens NHWC, so
        # weight row [o, (y*W + x)*C + c] is the conv weight [o, c, y, x]
        weight = wt.reshape(o, h, w, c).transpose(0, 3, 1, 2)
        # LiteRT's reference FULLY_CONNECTED rounds x * multiplier once (its convs round twice)
        attrs = {"kernel": (h, w), "stride": 1, "padding": 0, "groups": 1, "multiplier_rounding": "single"}
        yq = self.quant(self.m.info(out_idx, where), where)
        clamp = self.clamp(act, yq, where, "the fully connected layer")
        if clamp:
            attrs["clamp"] = clamp
        params = {"weight": np.ascontiguousarray(weight), "bias": self.bias(ins, o, where),
                  "w_scales": self.weight_scales(winfo, o, 0, where)}
        self.param_tensors[f"op{i}_fc"] = {"op": i, "kind": "fc", "weight": ins[1], "bias": ins[2] if len(ins) > 2 else -1}
        self.add_node(f"op{i}_fc", "conv2d", [x], out_idx, attrs, params, where)

    def add(self, op, i, ins, out_idx, where):
        if len(ins) != 2:
            raise ModelFormatError(f"{where}: {len(ins)} inputs, expected 2")
        a, b = self.activation(ins[0], where), self.activation(ins[1], where)
        if self.tensors[a].shape != self.tensors[b].shape:
            raise UnsupportedOpError(f"{where}: broadcasting add of {self.tensors[a].shape} and {self.tensors[b].shape} "
                                     "is not supported")
        opts = self.options(op, "AddOptions", 11, where)
        yq = self.quant(self.m.info(out_idx, where), where)
        attrs = {}
        clamp = self.clamp(self.opt(opts, 4, "b", 0, where), yq, where, "the add")
        if clamp:
            attrs["clamp"] = clamp
        self.add_node(f"op{i}_add", "add", [a, b], out_idx, attrs, {}, where)

    def average_pool_2d(self, op, i, ins, out_idx, where):
        x = self.activation(ins[0], where)
        h, w, c = self.tensors[x].shape
        opts = self.options(op, "Pool2DOptions", 5, where)
        pad, sw, sh, fw, fh, act = (self.opt(opts, s, "b" if s in (4, 14) else "i", 0, where)
                                    for s in (4, 6, 8, 10, 12, 14))
        yq = self.quant(self.m.info(out_idx, where), where)
        if yq != self.tensors[x].quant:
            raise ModelFormatError(f"{where}: output quantisation {yq} differs from the input's {self.tensors[x].quant}")
        attrs = {}
        clamp = self.clamp(act, yq, where, "the average pool")
        if clamp:
            attrs["clamp"] = clamp
        if (fh, fw) == (h, w) and (pad == PAD_VALID or (sh >= h and sw >= w)):  # one window, no padding
            self.add_node(f"op{i}_pool", "global_avg_pool", [x], out_idx, attrs, {}, where)
            return
        if sh != sw or sh < 1 or fh < 1 or fw < 1:
            raise UnsupportedOpError(f"{where}: stride {sh}x{sw}, window {fh}x{fw}; microtrain needs equal strides >= 1")
        pads = self.same_padding(h, w, fh, fw, sh, pad, where)
        attrs.update({"kernel": (fh, fw), "stride": sh, "pads": pads})
        self.add_node(f"op{i}_avgpool", "avg_pool2d", [x], out_idx, attrs, {}, where)

    def reshape(self, op, i, ins, out_idx, where):
        x = self.activation(ins[0], where)
        info = self.m.info(out_idx, where)
        shape, q = self.ir_shape(info, where), self.quant(info, where)
        flatten = shape == (1, 1, math.prod(self.tensors[x].shape)) and self.consumers.get(out_idx) and \
            all(name == "FULLY_CONNECTED" for name in self.consumers[out_idx]) and out_idx not in self.m.outputs
        if q != self.tensors[x].quant or (shape != self.tensors[x].shape and not flatten):
            raise UnsupportedOpError(f"{where}: reshape from {self.tensors[x].shape} to {shape} changes the layout; "
                                     "microtrain reads reshapes of a 1x1 map to a vector and flattens that feed "
                                     "FULLY_CONNECTED layers")
        self.ir_of[out_idx] = x  # an alias: same data (NHWC order), same quantisation

    def pad(self, op, i, ins, out_idx, where):
        if len(ins) != 2:
            raise ModelFormatError(f"{where}: {len(ins)} inputs, expected input and paddings")
        x = self.activation(ins[0], where)
        p, _ = self.const(ins[1], where, np.int32, "paddings")
        if p.shape != (4, 2) or np.any(p < 0) or np.any(p[[0, 3]] != 0) or np.any(p > MAX_DIM):
            raise UnsupportedOpError(f"{where}: paddings {p.tolist()}; microtrain pads only H and W, by 0..{MAX_DIM}")
        yq = self.quant(self.m.info(out_idx, where), where)
        if yq != self.tensors[x].quant:
            raise ModelFormatError(f"{where}: output quantisation {yq} differs from the input's {self.tensors[x].quant}")
        pads = (int(p[1, 0]), int(p[1, 1]), int(p[2, 0]), int(p[2, 1]))
        self.add_node(f"op{i}_pad", "pad", [x], out_idx, {"pads": pads}, {}, where)

    def softmax(self, op, i, ins, out_idx, where):
        x = self.activation(ins[0], where)
        opts = self.options(op, "SoftmaxOptions", 9, where)
        beta = float(self.opt(opts, 4, "f", 0.0, where))
        info = self.m.info(out_idx, where)
        yq = self.quant(info, where)
        if not np.isfinite(beta) or beta <= 0:
            raise ModelFormatError(f"{where}: softmax beta {beta} must be finite and positive")
        self.softmax_info = {"logits": x, "beta": beta, "scale": yq.scale, "zero_point": yq.zero_point,
                        "output_index": out_idx}


LABELS_KEY = "microtrain labels "  # in the description of a model `microtrain export` wrote, then a JSON list
MAX_LABEL = 256  # characters of one class name


def exported_labels(m: TfliteFile, source: str, n_classes: int) -> list[str] | None:
    """The class names `microtrain export --tflite` wrote into the model's description (the last ones, if it was
    exported more than once), or None. A description that names them wrongly is a format error, not a guess."""
    import json

    if m.f.field(m.model, 10, 4, "description") == 0:
        return None
    text = m.f.string(m.model, 10, "description")
    at = text.rfind(LABELS_KEY)
    if at < 0:
        return None
    try:
        labels, _ = json.JSONDecoder().raw_decode(text, at + len(LABELS_KEY))
    except ValueError:
        labels = None
    if (not isinstance(labels, list) or len(labels) != n_classes
            or not all(isinstance(v, str) and 0 < len(v) <= MAX_LABEL for v in labels)):
        raise ModelFormatError(f"{source}: the description's class names ({LABELS_KEY.strip()}) are not a JSON "
                               f"list of {n_classes} names of 1 to {MAX_LABEL} characters")
    return labels


def tflite_to_graph(data: bytes, source: str, name: str | None = None, path=None) -> Graph:
    """Convert a .tflite flatbuffer's bytes to an int8 Graph; errors name the file, operator and tensor.
    meta["tflite_file"] remembers the file (its absolute `path` when read from one, sha256, size): `microtrain
    export --tflite` writes trained parameters back into exactly that file's structure
    (frontends/tflite_export.py)."""
    try:
        m = TfliteFile(data, source)
        conv = _Converter(m, source)
        out = conv.convert()
    except (struct.error, ValueError, IndexError, KeyError, TypeError, OverflowError) as e:  # a missed check
        raise ModelFormatError(f"{source}: corrupt TFLite flatbuffer ({type(e).__name__}: {e})") from None
    if not conv.nodes:
        raise ModelFormatError(f"{source}: the model has no operators microtrain can run")
    last = conv.nodes[-1]
    if last.op == "conv2d" and last.output == out and conv.tensors[out].shape[:2] == (1, 1):
        last.attrs["role"] = "classifier"
    digest = hashlib.sha256(data).hexdigest()
    meta = {"source": str(source), "format": "tflite", "requant": "tflite",
            "tflite_tensors": {ir: [k for k, v in conv.ir_of.items() if v == ir] for ir in conv.tensors},
            "tflite_params": conv.param_tensors,
            "tflite_file": {"path": None if path is None else str(Path(path).resolve()), "sha256": digest,
                            "bytes": len(data)}}
    if conv.softmax_info is not None:
        meta["softmax"] = {k: v for k, v in conv.softmax_info.items() if k != "logits"}
    labels = exported_labels(m, source, conv.tensors[out].shape[-1])
    if labels is None:
        labels = KNOWN_LABELS.get(digest)
    if labels is not None and len(labels) == conv.tensors[out].shape[-1]:
        meta["labels"] = labels
    graph = Graph(name or Path(source).stem, "int8", conv.input, out, conv.tensors, conv.nodes, meta)
    try:
        validate(graph)  # also checks every declared TFLite shape against the IR's shape rules
    except GraphError as e:
        raise ModelFormatError(f"{source}: {e}") from None
    return graph


def read_tflite_bytes(path) -> bytes:
    """The bytes of a .tflite file, refused (ModelFormatError naming it) unless a regular file of at most
    MAX_FILE_BYTES: a device or a pipe has no size to check (/dev/zero never ends), and at most MAX_FILE_BYTES + 1
    bytes are read, so a file growing meanwhile is refused too. OSErrors (missing, unreadable) propagate: each
    caller says what the file was for. The one read of a .tflite file (here and frontends/tflite_export.py)."""
    path = Path(path)
    st = path.stat()
    if not stat.S_ISREG(st.st_mode):
        raise ModelFormatError(f"{path}: not a regular file; a .tflite model is read from a file")
    if st.st_size > MAX_FILE_BYTES:
        raise ModelFormatError(f"{path}: {st.st_size} bytes; a .tflite model for microtrain is at most {MAX_FILE_BYTES}")
    with open(path, "rb") as f:
        data = f.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise ModelFormatError(f"{path}: grew past {MAX_FILE_BYTES} bytes while read; a .tflite model for microtrain "
                               f"is at most {MAX_FILE_BYTES}")
    return data


def load_tflite(path, name: str | None = None) -> Graph:
    """Load an int8 .tflite file as an int8 Graph (bounds-checked: see module docstring)."""
    path = Path(path)
    try:
        data = read_tflite_bytes(path)
    except FileNotFoundError:
        raise ModelFormatError(f"{path}: file not found") from None
    except OSError as e:
        raise ModelFormatError(f"{path}: cannot read ({e})") from None
    return tflite_to_graph(data, str(path), name, path=path)

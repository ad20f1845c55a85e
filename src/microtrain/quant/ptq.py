"""Post-training quantisation: a float32 Graph + the user's calibration images -> an int8 Graph.

The result follows the IR's int8 conventions exactly (ir/graph.py, quant/arith.py):
- input: the fixed device mapping, pixel k -> int8 k - 128, scale 2/255, zero point 0 (frontends/torch_fx.py
  says how a model trained on other normalisations is folded onto it);
- conv weights: int8 symmetric per output channel in [-127, 127], w_scales[o] = max|W[o]| / 127;
  biases: int32 in units of x_scale * w_scales[o];
- activations: one scale and zero point per tensor, calibrated from the float graph run on calibration
  images ("minmax": observed range; "percentile": the p-th / (100-p)-th percentiles, which clips outliers);
  the range always contains 0, so real 0 (the conv's zero padding) is exact;
- a ReLU / ReLU6 output gets zero point -128 and range [0, max] (max <= 6 for ReLU6): the int8 clamp to
  [-128, 127] *is* the activation;
- global average pooling keeps its input's scale and zero point (the int8 op stays in that domain).
"""
from __future__ import annotations

import numpy as np

from ..errors import DatasetError, GraphError
from ..ir.graph import Graph, Node, QuantParams, TensorSpec
from ..ir.validate import validate
from ..ops import op_module
from ..runtime.forward import logits_int8, run_float

INPUT_QUANT = QuantParams(2.0 / 255.0, 0)
METHODS = ("minmax", "percentile")
MIN_SCALE = 1e-8  # a constant-zero tensor still needs a positive scale
SAMPLES_PER_BATCH = 20000  # values kept per tensor and batch for percentile calibration


def input_to_float(x_q: np.ndarray) -> np.ndarray:
    """The float graph's input for int8 device input: r = q * 2/255."""
    return x_q.astype(np.float32) * np.float32(INPUT_QUANT.scale)


def as_int8_input(images: np.ndarray) -> np.ndarray:
    """Accept NHWC uint8 pixels (mapped k -> k - 128) or NHWC int8 device input."""
    images = np.asarray(images)
    if images.ndim != 4:
        raise DatasetError(f"calibration images must be NHWC (4-D), got shape {images.shape}")
    if images.dtype == np.uint8:
        return (images.astype(np.int16) - 128).astype(np.int8)
    if images.dtype == np.int8:
        return images
    raise DatasetError(f"calibration images must be uint8 pixels or int8 device input, got {images.dtype}")


def calibrate(graph: Graph, images, *, method: str = "minmax", percentile: float = 99.99,
              batch_size: int = 64, seed: int = 0) -> dict[str, tuple[float, float]]:
    """Observed (low, high) of every tensor of the float graph over the calibration images."""
    if method not in METHODS:
        raise GraphError(f"calibration method must be one of {METHODS}, got {method!r}")
    if not 50.0 < float(percentile) <= 100.0:
        raise GraphError(f"percentile must lie in (50, 100], got {percentile!r}")
    x_q = as_int8_input(images)
    if len(x_q) == 0:
        raise DatasetError("calibration needs at least one image")
    rng = np.random.default_rng(seed)
    lo: dict[str, float] = {}
    hi: dict[str, float] = {}
    samples: dict[str, list] = {}
    for start in range(0, len(x_q), batch_size):
        values = run_float(graph, input_to_float(x_q[start : start + batch_size]), keep=True)
        for name, v in values.items():
            lo[name] = min(lo.get(name, np.inf), float(v.min()))
            hi[name] = max(hi.get(name, -np.inf), float(v.max()))
            if method == "percentile":
                flat = v.reshape(-1)
                if flat.size > SAMPLES_PER_BATCH:
                    flat = flat[rng.integers(0, flat.size, SAMPLES_PER_BATCH)]
                samples.setdefault(name, []).append(flat)
    if method == "percentile":
        for name, parts in samples.items():
            allv = np.concatenate(parts)
            lo[name], hi[name] = (float(v) for v in np.percentile(allv, [100.0 - percentile, percentile]))
    return {k: (lo[k], hi[k]) for k in lo}


def range_to_quant(low: float, high: float, activation=None) -> QuantParams:
    """Per-tensor int8 parameters for a real range (ReLU/ReLU6 outputs: zero point -128)."""
    if activation in ("relu", "relu6"):
        top = max(high, 0.0)
        if activation == "relu6":
            top = min(top, 6.0)
        return QuantParams(max(top / 255.0, MIN_SCALE), -128)
    low, high = min(low, 0.0), max(high, 0.0)
    scale = max((high - low) / 255.0, MIN_SCALE)
    zero = int(np.clip(np.rint(-128.0 - low / scale), -128, 127))
    return QuantParams(scale, zero)


def quantize_conv_params(weight: np.ndarray, bias: np.ndarray, x_scale: float) -> dict[str, np.ndarray]:
    """int8 weight (symmetric per out channel), w_scales, int32 bias in x_scale * w_scale units."""
    w = weight.astype(np.float64)
    b = bias.astype(np.float64)
    absmax = np.abs(w.reshape(len(w), -1)).max(axis=1)
    # a channel with all-zero weights still needs a scale that can represent its bias in int32
    w_scales = np.maximum(absmax / 127.0, np.abs(b) / (x_scale * 2.0**30))
    w_scales = np.maximum(w_scales, 1e-12).astype(np.float32)
    ws = w_scales.astype(np.float64)
    wq = np.clip(np.rint(w / ws[:, None, None, None]), -127, 127).astype(np.int8)
    bq = np.clip(np.rint(b / (np.float64(x_scale) * ws)), -(2**31), 2**31 - 1).astype(np.int32)
    return {"weight": wq, "bias": bq, "w_scales": w_scales}


def quantize(graph: Graph, images, *, method: str = "minmax", percentile: float = 99.99,
             batch_size: int = 64, name: str | None = None) -> Graph:
    """The int8 Graph of a float graph, activations calibrated on `images` (NHWC uint8 pixels or int8)."""
    if graph.dtype != "float32":
        raise GraphError(f"graph {graph.name!r} is already {graph.dtype}; quantize() needs a float32 graph")
    ranges = calibrate(graph, images, method=method, percentile=percentile, batch_size=batch_size)
    quant: dict[str, QuantParams] = {graph.input: INPUT_QUANT}
    nodes = []
    for node in graph.nodes:
        if op_module(node).KEEPS_INPUT_QUANT:
            quant[node.output] = quant[node.inputs[0]]
        else:
            quant[node.output] = range_to_quant(*ranges[node.output], node.attrs.get("activation"))
        attrs = {k: v for k, v in node.attrs.items() if k != "activation"}
        params = {}
        if "weight" in node.params and "bias" in node.params:  # per-output-channel weights (convs)
            params = quantize_conv_params(node.params["weight"], node.params["bias"], quant[node.inputs[0]].scale)
        elif node.params:
            raise GraphError(f"node {node.name!r} ({node.op}) has parameters PTQ does not know how to quantise")
        nodes.append(Node(node.name, node.op, list(node.inputs), node.output, attrs, params))
    tensors = {t: TensorSpec(t, tuple(s.shape), "int8", quant[t]) for t, s in graph.tensors.items()}
    meta = dict(graph.meta)
    meta.update({"ptq": {"method": method, "percentile": percentile if method == "percentile" else None,
                         "calibration_images": int(len(images))},
                 "input_mapping": "pixel k -> int8 k - 128, scale 2/255, zero point 0"})
    out = Graph(name or graph.name, "int8", graph.input, graph.output, tensors, nodes, meta)
    return validate(out)


def accuracy_float(graph: Graph, images, labels, batch_size: int = 128) -> float:
    x_q = as_int8_input(images)
    preds = [run_float(graph, input_to_float(x_q[i : i + batch_size])).reshape(-1, graph.num_classes).argmax(1)
             for i in range(0, len(x_q), batch_size)]
    return float(np.mean(np.concatenate(preds) == np.asarray(labels)))


def accuracy_int8(graph: Graph, images, labels, batch_size: int = 128) -> float:
    return float(np.mean(logits_int8(graph, as_int8_input(images), batch_size).argmax(1) == np.asarray(labels)))


def compare_accuracy(float_graph: Graph, int8_graph: Graph, images, labels) -> dict[str, float]:
    """Top-1 accuracy of the float model and its int8 graph on the same held-out images."""
    return {"float": accuracy_float(float_graph, images, labels), "int8": accuracy_int8(int8_graph, images, labels)}

"""PyTorch frontend: a torch.nn.Module -> a float32 Graph (torch.fx trace, BatchNorm folded).

Supported (anything else raises UnsupportedOpError naming the module, its type and this list):
- nn.Conv2d (dense, depthwise, grouped; odd square kernel, equal dilation d on both axes, padding d*(k-1)//2
  ('same'), zero padding),
  with an nn.BatchNorm2d right after it folded into its weight and bias;
- nn.ReLU / nn.ReLU6 / nn.Hardtanh(0, 6) and F.relu / F.relu6 / torch.relu / x.relu(), fused into the
  conv or residual add that produces their input (our int8 graphs express them as the output clamp);
- residual add (a + b, torch.add, +=) of two tensors of equal shape;
- global average pooling: nn.AdaptiveAvgPool2d(1), an nn.AvgPool2d covering the whole map,
  F.adaptive_avg_pool2d(x, 1), x.mean((2, 3));
- flatten / view / reshape of a pooled (1x1) map, nn.Dropout (dropped: export is inference), nn.Identity;
- nn.Linear on pooled features: a 1x1 conv on the 1x1 map; the last one is the classifier.

1-D models (import_torch(model, length=L, channels=C); input (N, C, L), e.g. sensor time series) use the
(H = 1, W = L, C) layout, so every 2-D kernel, pass and autodiff rule runs them unchanged:
- nn.Conv1d (dense, depthwise, pointwise; any kernel, stride, dilation, zero padding incl. 'same') is a
  conv2d with kernel (1, k) (attrs "dilation" when > 1) and no padding, preceded by a pad1d node
  (ops/pad1d.py) when it pads;
- nn.BatchNorm1d right after it is folded; nn.AdaptiveAvgPool1d(1), an nn.AvgPool1d covering the whole
  sequence, F.adaptive_avg_pool1d(x, 1), x.mean(2) / x.mean(-1) are the global average pool; a windowed
  nn.AvgPool1d(k, stride, padding) is a depthwise conv with weights 1/k (then quantised like any conv);
  an unpadded nn.MaxPool1d(k, stride) is the max_pool1d op (ops/maxpool1d.py);
- nn.Flatten / flatten / view of a (C, L) map followed by nn.Linear is a conv2d with kernel (1, L) on the
  map (torch's index c * L + l becomes weight[o, c, 0, l]); only a Linear may read a flattened map.

Input convention. The device feeds pixel k as the int8 value k - 128 with scale 2/255, so the float graph's
input is r = (k - 128) * 2/255 (about k/127.5 - 1). A model trained on x = (k/255 - mean[c]) / std[c] is
imported with input_norm=(mean, std): x = a[c] * r + b[c] is folded into the convs reading the input
(a = 1/(2 std), b = (128/255 - mean)/std). That fold is exact except at zero-padded borders, where the
original model pads with x = 0 and ours with pixel 128 (x = b[c], small when mean is near 0.5); the measured
difference is stored in graph.meta["torch_max_abs_diff"].
"""
from __future__ import annotations

import operator

import numpy as np

from ..errors import GraphError, UnsupportedOpError
from ..ir.graph import Graph, Node, TensorSpec
from ..ir.validate import validate
from ..ops import op_module

SUPPORTED = (
    "Conv2d (+ BatchNorm2d right after it), Linear (on globally pooled features), ReLU, ReLU6, Hardtanh(0, 6), "
    "residual add (+ / torch.add), AdaptiveAvgPool2d(1) / global AvgPool2d / mean over (2, 3), "
    "Flatten / view / reshape of the pooled map, Dropout (dropped), Identity; "
    "1-D: Conv1d (+ BatchNorm1d), AdaptiveAvgPool1d(1) / AvgPool1d / MaxPool1d / mean over 2, Flatten + Linear"
)
INPUT_SCALE = 2.0 / 255.0  # the fixed device input mapping: pixel k -> int8 k - 128, real (k - 128) * 2/255


def _torch():
    try:
        import torch
        import torch.fx
    except ImportError:  # pragma: no cover - exercised only without the extra
        raise UnsupportedOpError(
            "the PyTorch frontend needs torch: pip install 'microtrain[torch]'"
        ) from None
    return torch


def _np(t) -> np.ndarray:
    return t.detach().cpu().double().numpy()


class Flat:
    """A flattened 1-D map: only an nn.Linear may read it (it becomes a conv spanning the sequence)."""

    def __init__(self, tensor: str):
        self.tensor = tensor


class _Importer:
    def __init__(self, root, name: str, input_shape: tuple[int, int, int]):
        self.torch = _torch()
        self.root = root
        self.modules = dict(root.named_modules())
        self.tensors: dict[str, TensorSpec] = {}
        self.nodes: list[Node] = []
        self.env: dict = {}  # fx node -> IR tensor name (or a python value for size() results)
        self.name = name
        self.input = "input"
        self.tensors["input"] = TensorSpec("input", tuple(input_shape), "float32")
        self.linear_outputs: set[str] = set()
        self.one_d = False  # set by import_torch(length=...)

    # ----- helpers ---------------------------------------------------------------------------------
    def where(self, fx_node) -> str:
        if fx_node.op == "call_module":
            mod = self.modules[fx_node.target]
            return f"module {fx_node.target!r} ({type(mod).__name__})"
        stack = fx_node.meta.get("nn_module_stack") or {}
        inside = ""
        if stack:
            path, (_, cls) = list(stack.items())[-1]
            inside = f" inside module {path!r} ({getattr(cls, '__name__', cls)})"
        target = getattr(fx_node.target, "__name__", fx_node.target)
        return f"{fx_node.op} {target!r} (node {fx_node.name!r}){inside}"

    def unsupported(self, fx_node, why: str = "is not supported"):
        raise UnsupportedOpError(f"{self.where(fx_node)} {why}; supported: {SUPPORTED}")

    def value(self, fx_node, arg):
        if not hasattr(arg, "op"):
            self.unsupported(fx_node, f"takes a non-tensor argument {arg!r} where a tensor is expected")
        v = self.env[arg]
        if isinstance(v, Flat):
            self.unsupported(fx_node, "reads a flattened map: only an nn.Linear may follow flatten")
        if not isinstance(v, str):
            self.unsupported(fx_node, "takes a shape value where a tensor is expected")
        return v

    def shape(self, tensor: str):
        return self.tensors[tensor].shape

    def add_node(self, name: str, op: str, inputs, attrs, params) -> str:
        base, k = name.replace("/", "."), 1
        while any(n.name == name for n in self.nodes):
            k += 1
            name = f"{base}_{k}"
        out = f"{name}.out"
        node = Node(name, op, list(inputs), out, attrs, params)
        shape = op_module(node).infer_shape(node, [self.shape(t) for t in inputs])
        self.tensors[out] = TensorSpec(out, tuple(int(v) for v in shape), "float32")
        self.nodes.append(node)
        return out

    def producer(self, tensor: str):
        for n in self.nodes:
            if n.output == tensor:
                return n
        return None

    def consumed(self, tensor: str) -> bool:
        return any(tensor in n.inputs for n in self.nodes)

    def fusable(self, fx_node, fx_in, tensor: str, what: str) -> Node:
        """The IR node producing `tensor`, if `what` (BN or an activation) may be folded into it."""
        prod = self.producer(tensor)
        if prod is None or len(fx_in.users) != 1 or self.consumed(tensor) or tensor == self.input:
            self.unsupported(
                fx_node, f"must directly follow a conv{'' if what == 'BatchNorm2d' else ' or residual add'} whose "
                f"output nothing else reads ({what} is folded into its producer)")
        return prod

    # ----- ops -------------------------------------------------------------------------------------
    def conv(self, fx_node, mod, x: str) -> str:
        k = tuple(mod.kernel_size)
        if k[0] != k[1] or k[0] % 2 == 0:
            self.unsupported(fx_node, f"has kernel {k}: only odd square kernels are supported")
        dh, dw = (int(v) for v in mod.dilation)
        if dh != dw or mod.padding_mode != "zeros":
            self.unsupported(fx_node, f"has dilation {tuple(mod.dilation)} / padding_mode {mod.padding_mode!r}: "
                             "only an equal dilation on both axes with zero padding is supported")
        d = dh if k[0] > 1 else 1  # a 1x1 kernel reads one input whatever its dilation
        same = d * (k[0] - 1) // 2
        pad = mod.padding
        if pad == "same":
            pad = (same,) * 2
        if pad == "valid" or tuple(pad) != (same,) * 2:
            self.unsupported(fx_node, f"has padding {mod.padding!r}: only dilation*(k-1)//2 = {same} is supported")
        if mod.stride[0] != mod.stride[1]:
            self.unsupported(fx_node, f"has stride {mod.stride}: only equal strides are supported")
        weight = _np(mod.weight)
        bias = _np(mod.bias) if mod.bias is not None else np.zeros(weight.shape[0])
        attrs = {"kernel": k, "stride": int(mod.stride[0]), "padding": same, "groups": int(mod.groups)}
        if d != 1:
            attrs["dilation"] = d
        return self.add_node(fx_node.target, "conv2d", [x], attrs, {"weight": weight, "bias": bias})

    def batchnorm(self, fx_node, mod, fx_in, x: str) -> str:
        conv = self.fusable(fx_node, fx_in, x, "BatchNorm2d")
        if "weight" not in conv.params or conv.attrs.get("activation") or x in self.linear_outputs:
            self.unsupported(fx_node, "must directly follow a Conv2d (BatchNorm2d is folded into it)")
        if mod.running_mean is None or mod.running_var is None:
            self.unsupported(fx_node, "has no running statistics (track_running_stats=False): nothing to fold")
        gamma = _np(mod.weight) if mod.weight is not None else np.ones(mod.num_features)
        beta = _np(mod.bias) if mod.bias is not None else np.zeros(mod.num_features)
        mult = gamma / np.sqrt(_np(mod.running_var) + mod.eps)
        conv.params["weight"] = conv.params["weight"] * mult[:, None, None, None]
        conv.params["bias"] = (conv.params["bias"] - _np(mod.running_mean)) * mult + beta
        conv.attrs["bn_folded"] = fx_node.target
        return x

    def activation(self, fx_node, kind: str, fx_in) -> str:
        x = self.value(fx_node, fx_in)
        prod = self.fusable(fx_node, fx_in, x, "the activation")
        if not op_module(prod).CLAMPS_OUTPUT or prod.attrs.get("activation"):
            self.unsupported(fx_node, "must directly follow a conv or residual add without an activation")
        prod.attrs["activation"] = kind
        return x

    def add(self, fx_node, a_arg, b_arg) -> str:
        a, b = self.value(fx_node, a_arg), self.value(fx_node, b_arg)
        if self.shape(a) != self.shape(b):
            self.unsupported(fx_node, f"adds tensors of shapes {self.shape(a)} and {self.shape(b)}")
        order = {n.output: i for i, n in enumerate(self.nodes)}
        skip, main = sorted((a, b), key=lambda t: order.get(t, -1))  # the earlier tensor is the skip branch
        return self.add_node(f"{self._scope(fx_node)}add", "add", [skip, main], {}, {})

    def _scope(self, fx_node) -> str:
        stack = fx_node.meta.get("nn_module_stack") or {}
        return f"{list(stack)[-1]}." if stack else ""

    def pool(self, fx_node, x: str) -> str:
        return self.add_node(fx_node.target if fx_node.op == "call_module" else f"{self._scope(fx_node)}pool",
                             "global_avg_pool", [x], {}, {})

    def linear(self, fx_node, mod, x) -> str:
        if isinstance(x, Flat):  # Linear over a flattened 1-D map: one conv whose kernel spans the sequence
            h, w, c = self.shape(x.tensor)
            if mod.in_features != c * w:
                self.unsupported(fx_node, f"has in_features {mod.in_features} but the flattened map holds {c}x{w}")
            weight = _np(mod.weight).reshape(-1, c, 1, w)
            x, kernel = x.tensor, (1, w)
        else:
            h, w, c = self.shape(x)
            if (h, w) != (1, 1):
                self.unsupported(fx_node, f"reads a {h}x{w} map: a Linear must follow global average pooling")
            weight, kernel = _np(mod.weight)[:, :, None, None], (1, 1)
        bias = _np(mod.bias) if mod.bias is not None else np.zeros(weight.shape[0])
        attrs = {"kernel": kernel, "stride": 1, "padding": 0, "groups": 1}
        out = self.add_node(fx_node.target, "conv2d", [x], attrs, {"weight": weight, "bias": bias})
        self.linear_outputs.add(out)
        return out

    def flatten(self, fx_node, x: str):
        if self.one_d and self.shape(x)[1] != 1:
            return Flat(x)
        if self.shape(x)[:2] != (1, 1):
            self.unsupported(fx_node, f"flattens a {self.shape(x)[0]}x{self.shape(x)[1]} map: only the globally "
                             "pooled 1x1 map may be flattened")
        return x

    def conv1d(self, fx_node, mod, x: str) -> str:
        (k,), (stride,), (dilation,) = mod.kernel_size, mod.stride, mod.dilation
        if mod.padding_mode != "zeros":
            self.unsupported(fx_node, f"has padding_mode {mod.padding_mode!r}: only zero padding is supported")
        d = int(dilation) if k > 1 else 1  # a kernel of 1 reads one input whatever its dilation
        if mod.padding == "same":
            total = d * (k - 1)
            left, right = total // 2, total - total // 2  # torch's split of the total
        elif mod.padding == "valid":
            left = right = 0
        else:
            left = right = int(mod.padding[0])
        if left or right:
            x = self.add_node(f"{fx_node.target}.pad", "pad1d", [x], {"left": left, "right": right}, {})
        weight = _np(mod.weight)[:, :, None, :]  # (O, I/groups, k) -> (O, I/groups, 1, k)
        bias = _np(mod.bias) if mod.bias is not None else np.zeros(weight.shape[0])
        attrs = {"kernel": (1, k), "stride": int(stride), "padding": 0, "groups": int(mod.groups)}
        if d != 1:
            attrs["dilation"] = d
        return self.add_node(fx_node.target, "conv2d", [x], attrs, {"weight": weight, "bias": bias})

    def avgpool1d(self, fx_node, mod, x: str) -> str:
        """A windowed AvgPool1d is a depthwise conv with weights 1/k and no bias (zero padding counted, as
        torch's default count_include_pad=True). It is an ordinary conv from then on (PTQ, schemes)."""
        (k,), (stride,), (pad,) = mod.kernel_size, mod.stride, mod.padding
        if mod.ceil_mode or not mod.count_include_pad:
            self.unsupported(fx_node, "uses ceil_mode or count_include_pad=False: only the defaults are supported")
        if pad:
            x = self.add_node(f"{fx_node.target}.pad", "pad1d", [x], {"left": pad, "right": pad}, {})
        c = self.shape(x)[2]
        attrs = {"kernel": (1, k), "stride": int(stride), "padding": 0, "groups": c, "pool": "avg"}
        return self.add_node(fx_node.target, "conv2d", [x], attrs,
                             {"weight": np.full((c, 1, 1, k), 1.0 / k), "bias": np.zeros(c)})

    # ----- dispatch ----------------------------------------------------------------------------------
    def run(self, traced) -> str:
        torch = self.torch
        nn = torch.nn
        F = torch.nn.functional
        out = None
        for fn in traced.graph.nodes:
            a = fn.args
            if fn.op == "placeholder":
                if self.input in self.env.values():
                    self.unsupported(fn, "is a second model input: only one image input is supported")
                self.env[fn] = self.input
            elif fn.op == "output":
                if not hasattr(a[0], "op"):
                    self.unsupported(fn, "returns a tuple/dict: the model must return one logits tensor")
                out = self.value(fn, a[0])
            elif fn.op == "call_module":
                mod = self.modules[fn.target]
                if isinstance(mod, nn.Linear) and a and isinstance(self.env.get(a[0]), Flat):
                    self.env[fn] = self.linear(fn, mod, self.env[a[0]])
                    continue
                x = self.value(fn, a[0]) if a else None
                if isinstance(mod, nn.Conv1d) and self.one_d:
                    self.env[fn] = self.conv1d(fn, mod, x)
                elif isinstance(mod, nn.BatchNorm1d) and self.one_d:
                    self.env[fn] = self.batchnorm(fn, mod, a[0], x)
                elif isinstance(mod, nn.AdaptiveAvgPool1d) and self.one_d:
                    if mod.output_size not in (1, (1,), [1]):
                        self.unsupported(fn, f"has output_size {mod.output_size!r}: only global pooling (1) is supported")
                    self.env[fn] = self.pool(fn, x)
                elif isinstance(mod, nn.MaxPool1d) and self.one_d:
                    if mod.padding not in (0, (0,)) or mod.dilation not in (1, (1,)) or mod.ceil_mode:
                        self.unsupported(fn, "has padding, dilation or ceil_mode: only an unpadded max pool is supported")
                    k = mod.kernel_size if isinstance(mod.kernel_size, int) else mod.kernel_size[0]
                    s = mod.stride if isinstance(mod.stride, int) else mod.stride[0]
                    self.env[fn] = self.add_node(fn.target, "max_pool1d", [x], {"kernel": int(k), "stride": int(s)}, {})
                elif isinstance(mod, nn.AvgPool1d) and self.one_d:
                    if tuple(mod.kernel_size) == (self.shape(x)[1],) and tuple(mod.padding) == (0,):
                        self.env[fn] = self.pool(fn, x)
                    else:
                        self.env[fn] = self.avgpool1d(fn, mod, x)
                elif isinstance(mod, nn.Conv2d):
                    self.env[fn] = self.conv(fn, mod, x)
                elif isinstance(mod, nn.BatchNorm2d):
                    self.env[fn] = self.batchnorm(fn, mod, a[0], x)
                elif isinstance(mod, nn.ReLU6) or (isinstance(mod, nn.Hardtanh) and (mod.min_val, mod.max_val) == (0.0, 6.0)):
                    self.env[fn] = self.activation(fn, "relu6", a[0])
                elif isinstance(mod, nn.ReLU):
                    self.env[fn] = self.activation(fn, "relu", a[0])
                elif isinstance(mod, (nn.Dropout, nn.Dropout2d, nn.Identity)):
                    self.env[fn] = x
                elif isinstance(mod, nn.Flatten):
                    self.env[fn] = self.flatten(fn, x)
                elif isinstance(mod, nn.AdaptiveAvgPool2d):
                    size = mod.output_size
                    if size not in (1, (1, 1), [1, 1]):
                        self.unsupported(fn, f"has output_size {size!r}: only global pooling (1) is supported")
                    self.env[fn] = self.pool(fn, x)
                elif isinstance(mod, nn.AvgPool2d):
                    h, w, _ = self.shape(x)
                    ks = mod.kernel_size if isinstance(mod.kernel_size, tuple) else (mod.kernel_size,) * 2
                    if tuple(ks) != (h, w) or mod.padding not in (0, (0, 0)):
                        self.unsupported(fn, f"pools {ks} over a {h}x{w} map: only global pooling is supported")
                    self.env[fn] = self.pool(fn, x)
                elif isinstance(mod, nn.Linear):
                    self.env[fn] = self.linear(fn, mod, x)
                else:
                    self.unsupported(fn)
            elif fn.op == "call_function":
                t = fn.target
                if t in (operator.add, operator.iadd, torch.add):
                    if len(a) != 2 or fn.kwargs.get("alpha", 1) != 1:
                        self.unsupported(fn, "is not a plain sum of two tensors")
                    self.env[fn] = self.add(fn, a[0], a[1])
                elif t in (F.relu, torch.relu, torch.relu_):
                    self.env[fn] = self.activation(fn, "relu", a[0])
                elif t is F.relu6 or (t is F.hardtanh and tuple(a[1:3]) == (0.0, 6.0)):
                    self.env[fn] = self.activation(fn, "relu6", a[0])
                elif t in (F.dropout, F.dropout2d):
                    self.env[fn] = self.value(fn, a[0])
                elif t is torch.flatten:
                    self.env[fn] = self.flatten(fn, self.value(fn, a[0]))
                elif t is F.adaptive_avg_pool1d and self.one_d:
                    size = a[1] if len(a) > 1 else fn.kwargs.get("output_size")
                    if size not in (1, (1,), [1]):
                        self.unsupported(fn, f"has output_size {size!r}: only global pooling (1) is supported")
                    self.env[fn] = self.pool(fn, self.value(fn, a[0]))
                elif t is F.adaptive_avg_pool2d:
                    size = a[1] if len(a) > 1 else fn.kwargs.get("output_size")
                    if size not in (1, (1, 1), [1, 1]):
                        self.unsupported(fn, f"has output_size {size!r}: only global pooling (1) is supported")
                    self.env[fn] = self.pool(fn, self.value(fn, a[0]))
                elif t is torch.mean:
                    self.env[fn] = self.mean(fn, a, fn.kwargs)
                elif t is getattr and a[1] == "shape":
                    self.env[fn] = ("shape",)
                elif t is operator.getitem and not isinstance(self.env.get(a[0]), str):
                    self.env[fn] = ("shape",)
                else:
                    self.unsupported(fn)
            elif fn.op == "call_method":
                m = fn.target
                if m == "size":
                    self.env[fn] = ("shape",)
                elif m in ("view", "reshape", "flatten", "squeeze", "contiguous"):
                    x = self.value(fn, a[0])
                    self.env[fn] = x if m == "contiguous" else self.flatten(fn, x)
                elif m == "mean":
                    self.env[fn] = self.mean(fn, a, fn.kwargs)
                elif m in ("relu", "relu_"):
                    self.env[fn] = self.activation(fn, "relu", a[0])
                elif m in ("add", "add_", "__add__", "__iadd__"):
                    self.env[fn] = self.add(fn, a[0], a[1])
                else:
                    self.unsupported(fn)
            else:  # get_attr: a parameter or buffer used directly in forward
                self.unsupported(fn, "uses a parameter directly in forward()")
        return out

    def mean(self, fn, a, kwargs) -> str:
        dims = a[1] if len(a) > 1 else kwargs.get("dim")
        if isinstance(dims, int):
            dims = (dims,)
        if self.one_d and dims is not None and [int(d) % 3 for d in dims] == [2]:
            return self.pool(fn, self.value(fn, a[0]))
        if dims is None or sorted(int(d) % 4 for d in dims) != [2, 3]:
            self.unsupported(fn, f"averages over dims {dims!r}: only the spatial mean over (2, 3) is supported")
        return self.pool(fn, self.value(fn, a[0]))


def _fold_input_norm(graph: Graph, mean, std) -> None:
    """Fold x = a[c] * r + b[c] (user normalisation in terms of the device input r) into the input's convs."""
    c = graph.input_spec.shape[-1]
    mean = np.broadcast_to(np.asarray(mean, dtype=np.float64), (c,))
    std = np.broadcast_to(np.asarray(std, dtype=np.float64), (c,))
    if np.any(std <= 0):
        raise GraphError(f"input_norm std must be > 0, got {std.tolist()}")
    a = 1.0 / (2.0 * std)
    b = (128.0 / 255.0 - mean) / std
    readers = graph.consumers(graph.input)
    for node in readers:
        if "weight" not in node.params or node.attrs.get("groups", 1) != 1:
            raise UnsupportedOpError(
                f"node {node.name!r} ({node.op}) reads the model input: input_norm can only be folded into dense "
                "convs reading the input")
        w = node.params["weight"]
        node.params["bias"] = node.params["bias"] + np.einsum("oikl,i->o", w, b)
        node.params["weight"] = w * a[None, :, None, None]


def import_torch(model, resolution: int | None = None, channels: int = 3, *, length: int | None = None,
                 name: str | None = None, input_norm=None, check: bool = True) -> Graph:
    """Trace `model` with torch.fx and return the float32 Graph (NHWC, BN folded, weights float32).

    resolution/channels: the input image size (H = W = resolution). input_norm: (mean, std) per channel in
    pixel/255 units if the model was trained on normalised inputs (see the module docstring); None means
    the model already takes r = (k - 128) * 2/255. check=True runs both on random input and records the
    largest logit difference in meta["torch_max_abs_diff"].
    length: import a 1-D model (input (N, channels, length)) instead; the graph input is (1, length, channels)
    and the model takes r = q * 2/255 for the int8 device input q (runtime/timeseries.py maps signals to q).
    """
    torch = _torch()
    if (resolution is None) == (length is None):
        raise GraphError("import_torch needs exactly one of resolution (images) and length (1-D sequences)")
    if length is not None and input_norm is not None:
        raise GraphError("input_norm folds image normalisation; 1-D inputs are normalised by the dataset "
                         "(runtime/timeseries.py), so pass input_norm=None")
    shape = (1, int(length), int(channels)) if length is not None else (int(resolution),) * 2 + (int(channels),)
    was_training = model.training
    model.eval()
    try:
        try:
            traced = torch.fx.symbolic_trace(model)
        except Exception as e:  # fx raises TraceError, TypeError, ... on data-dependent control flow
            raise UnsupportedOpError(
                f"torch.fx cannot trace {type(model).__name__} ({type(e).__name__}: {e}); the model's forward must "
                f"not branch on tensor values. Supported layers: {SUPPORTED}") from None
        imp = _Importer(model, name or type(model).__name__, shape)
        imp.one_d = length is not None
        out = imp.run(traced)
        prod = imp.producer(out) if out is not None else None
        if prod is None or out not in imp.linear_outputs:
            raise UnsupportedOpError(
                f"{type(model).__name__}: the model must end with a Linear classifier on globally pooled features "
                f"(its output comes from {prod.name if prod else 'the input'!r}); supported: {SUPPORTED}")
        prod.attrs["role"] = "classifier"
        for n in imp.nodes:
            n.params = {k: v.astype(np.float32) for k, v in n.params.items()}
        graph = Graph(imp.name, "float32", imp.input, out, imp.tensors, imp.nodes,
                      {"format": "torch-fx", "input_scale": INPUT_SCALE, "input_zero": 0,
                       "input_norm": None if input_norm is None else [np.asarray(v, float).tolist() for v in input_norm],
                       "layout": "1d" if length is not None else "2d"})
        if input_norm is not None:
            _fold_input_norm(graph, *input_norm)
            for n in graph.nodes:
                n.params = {k: v.astype(np.float32) for k, v in n.params.items()}
        validate(graph)
        if check:
            graph.meta["torch_max_abs_diff"] = _compare(model, graph, input_norm)
            tol = 1e-3 * max(1.0, graph.meta["torch_logit_range"])
            if input_norm is None and graph.meta["torch_max_abs_diff"] > tol:
                raise GraphError(
                    f"{graph.name}: imported graph disagrees with the torch model by {graph.meta['torch_max_abs_diff']:.3g} "
                    f"(> {tol:.3g}); the model's forward likely does something the importer did not see")
        return graph
    finally:
        model.train(was_training)


def _compare(model, graph: Graph, input_norm) -> float:
    from ..runtime.forward import run_float

    torch = _torch()
    rng = np.random.default_rng(0)
    h, w, c = graph.input_spec.shape
    pixels = rng.integers(0, 256, size=(4, h, w, c))
    r = ((pixels - 128) * INPUT_SCALE).astype(np.float32)
    if input_norm is None:
        x_user = r
    else:
        mean, std = (np.broadcast_to(np.asarray(v, np.float64), (c,)) for v in input_norm)
        x_user = ((pixels / 255.0 - mean) / std).astype(np.float32)
    nchw = x_user.transpose(0, 3, 1, 2)
    if graph.meta.get("layout") == "1d":  # (N, C, 1, L) -> (N, C, L)
        nchw = nchw[:, :, 0, :]
    with torch.no_grad():
        ref = model(torch.from_numpy(np.ascontiguousarray(nchw))).double().numpy()
    got = run_float(graph, r).reshape(len(r), -1).astype(np.float64)
    graph.meta["torch_logit_range"] = float(np.abs(ref).max())
    return float(np.abs(ref.reshape(got.shape) - got).max())

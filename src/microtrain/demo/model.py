"""The demo's MCU-sized CNN: a small MobileNetV2-style network (depthwise/pointwise, ReLU6, residuals).

One architecture, two builders with the same layer names (the upstream naming: first_conv,
blocks.<i>.pointwise1 / depthwise / pointwise2, blocks.<i>.add, pool, classifier):
- float_graph(): a float32 Graph with He-initialised weights, trained by the project's own float runtime;
- torch_module(): the same network as a torch.nn.Module with BatchNorm, imported by frontends/torch_fx.
"""
from __future__ import annotations

import numpy as np

from ..ir.graph import Graph, Node, TensorSpec
from ..ir.validate import infer_shapes, validate

# (expand ratio, out channels, stride) per block; the first conv has STEM channels
STEM = 8
BLOCKS = ((1, 16, 2), (3, 16, 1), (3, 24, 2), (3, 24, 1))


def layer_specs(in_channels: int):
    """[(name, cin, cout, kernel, stride, groups, activation)] in execution order; 'add' rows for residuals."""
    rows = [("first_conv", in_channels, STEM, 3, 1, 1, "relu6")]
    c = STEM
    for i, (t, cout, s) in enumerate(BLOCKS):
        hidden = c * t
        if t != 1:
            rows.append((f"blocks.{i}.pointwise1", c, hidden, 1, 1, 1, "relu6"))
        rows.append((f"blocks.{i}.depthwise", hidden, hidden, 3, s, hidden, "relu6"))
        rows.append((f"blocks.{i}.pointwise2", hidden, cout, 1, 1, 1, None))
        if s == 1 and c == cout:
            rows.append((f"blocks.{i}.add",))
        c = cout
    return rows, c


def float_graph(num_classes: int, resolution: int = 16, in_channels: int = 3, seed: int = 0,
                name: str = "demo-cnn") -> Graph:
    rng = np.random.default_rng(seed)
    rows, c_last = layer_specs(in_channels)
    tensors = {"input": TensorSpec("input", (resolution, resolution, in_channels), "float32")}
    nodes, x, block_in = [], "input", {}
    for row in rows:
        name_ = row[0]
        block = name_.split(".")[1] if name_.startswith("blocks.") else None
        if block is not None and block not in block_in:
            block_in[block] = x
        if len(row) == 1:  # residual add: [skip, main]
            node = Node(name_, "add", [block_in[block], x], f"{name_}.out")
        else:
            _, cin, cout, k, s, g, act = row
            fan_in = cin // g * k * k
            w = rng.normal(0, np.sqrt(2.0 / fan_in), (cout, cin // g, k, k)).astype(np.float32)
            if act is None:  # linear bottleneck: start small so residual branches begin near identity
                w *= 0.5
            attrs = {"kernel": (k, k), "stride": s, "padding": (k - 1) // 2, "groups": g, "activation": act}
            node = Node(name_, "conv2d", [x], f"{name_}.out", attrs,
                        {"weight": w, "bias": np.zeros(cout, np.float32)})
        tensors[node.output] = TensorSpec(node.output, (0, 0, 0), "float32")
        nodes.append(node)
        x = node.output
    nodes.append(Node("pool", "global_avg_pool", [x], "pool.out"))
    tensors["pool.out"] = TensorSpec("pool.out", (0, 0, 0), "float32")
    nodes.append(head_node(num_classes, c_last, rng))
    tensors["classifier.out"] = TensorSpec("classifier.out", (0, 0, 0), "float32")
    g = Graph(name, "float32", "input", "classifier.out", tensors, nodes, {"format": "microtrain-demo"})
    return validate(infer_shapes(g))


def head_node(num_classes: int, channels: int, rng) -> Node:
    """A fresh float classifier (1x1 conv on the pooled map), initialised like torch's nn.Linear."""
    bound = 1.0 / np.sqrt(channels)
    w = rng.uniform(-bound, bound, (num_classes, channels, 1, 1)).astype(np.float32)
    return Node("classifier", "conv2d", ["pool.out"], "classifier.out",
                {"kernel": (1, 1), "stride": 1, "padding": 0, "groups": 1, "role": "classifier", "activation": None},
                {"weight": w, "bias": np.zeros(num_classes, np.float32)})


def torch_module(num_classes: int, in_channels: int = 3, seed: int = 0):
    """The same network in torch (conv + BatchNorm + ReLU6); import with frontends.torch_fx.import_torch."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    torch.manual_seed(seed)

    class Block(nn.Module):
        def __init__(self, cin, cout, t, s):
            super().__init__()
            hidden = cin * t
            self.expand = t != 1
            if self.expand:
                self.pointwise1 = nn.Conv2d(cin, hidden, 1, bias=False)
                self.pointwise1_bn = nn.BatchNorm2d(hidden)
            self.depthwise = nn.Conv2d(hidden, hidden, 3, s, 1, groups=hidden, bias=False)
            self.depthwise_bn = nn.BatchNorm2d(hidden)
            self.pointwise2 = nn.Conv2d(hidden, cout, 1, bias=False)
            self.pointwise2_bn = nn.BatchNorm2d(cout)
            self.residual = s == 1 and cin == cout

        def forward(self, x):
            y = F.relu6(self.pointwise1_bn(self.pointwise1(x))) if self.expand else x
            y = F.relu6(self.depthwise_bn(self.depthwise(y)))
            y = self.pointwise2_bn(self.pointwise2(y))
            return x + y if self.residual else y

    class DemoCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.first_conv = nn.Conv2d(in_channels, STEM, 3, 1, 1, bias=False)
            self.first_conv_bn = nn.BatchNorm2d(STEM)
            blocks, c = [], STEM
            for t, cout, s in BLOCKS:
                blocks.append(Block(c, cout, t, s))
                c = cout
            self.blocks = nn.ModuleList(blocks)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.classifier = nn.Linear(c, num_classes)

        def forward(self, x):
            x = F.relu6(self.first_conv_bn(self.first_conv(x)))
            for b in self.blocks:
                x = b(x)
            return self.classifier(torch.flatten(self.pool(x), 1))

    return DemoCNN()


def data_dependent_init(graph: Graph, x: np.ndarray, branch_std: float = 0.5) -> Graph:
    """Scale each conv (in execution order) so its pre-activation has zero mean and unit std per channel
    on the batch x (float input), the residual branches' last conv to `branch_std`: what BatchNorm would
    do at initialisation, so a BatchNorm-free network trains with plain SGD. The classifier is left as is."""
    from ..runtime.forward import run_float

    for node in graph.convs():
        if node.attrs.get("role") == "classifier":
            continue
        act = node.attrs.get("activation")
        node.attrs["activation"] = None
        pre = run_float(graph, x, keep=True)[node.output]
        node.attrs["activation"] = act
        mean = pre.mean(axis=(0, 1, 2)).astype(np.float64)
        std = pre.std(axis=(0, 1, 2)).astype(np.float64) + 1e-6
        target = 1.0 if act is not None else branch_std
        k = target / std
        node.params["weight"] = (node.params["weight"] * k[:, None, None, None]).astype(np.float32)
        node.params["bias"] = ((node.params["bias"] - mean) * k).astype(np.float32)
    return graph

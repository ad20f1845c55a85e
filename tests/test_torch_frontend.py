"""PyTorch frontend + PTQ: a MobileNetV2-style model with residuals imports, quantises, and its int8
forward agrees with an independent torch fake-quant reference written here."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import IN_CI  # noqa: E402

try:
    import torch
except ImportError:  # torch is an optional extra; under CI it must be installed (pip install -e '.[torch,test]')
    if IN_CI:
        raise
    pytest.skip("torch is not installed (pip install 'microtrain[torch]')", allow_module_level=True)
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.nn.utils.fusion import fuse_conv_bn_weights  # noqa: E402

from microtrain.errors import UnsupportedOpError  # noqa: E402
from microtrain.frontends.torch_fx import import_torch  # noqa: E402
from microtrain.quant.ptq import as_int8_input, compare_accuracy, quantize  # noqa: E402
from microtrain.runtime.forward import run_float, run_int8  # noqa: E402

RES = 16


class ConvBNReLU(nn.Sequential):
    def __init__(self, cin, cout, k=3, stride=1, groups=1):
        super().__init__(nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hidden = cin * expand
        self.use_res_connect = stride == 1 and cin == cout
        layers = [] if expand == 1 else [ConvBNReLU(cin, hidden, 1)]
        layers += [ConvBNReLU(hidden, hidden, 3, stride, groups=hidden),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


class TinyMobileNetV2(nn.Module):
    """torchvision's MobileNetV2 structure, shrunk: 3 residual adds, depthwise/pointwise, ReLU6, dropout."""

    def __init__(self, num_classes=10, in_ch=3):
        super().__init__()
        cfg = [(1, 8, 1, 1), (4, 12, 2, 2), (4, 16, 2, 2), (4, 24, 1, 1)]  # expand t, channels c, repeats n, stride s
        layers, c = [ConvBNReLU(in_ch, 8, 3, 1)], 8
        for t, cout, n, s in cfg:
            for i in range(n):
                layers.append(InvertedResidual(c, cout, s if i == 0 else 1, t))
                c = cout
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.1), nn.Linear(c, num_classes))

    def forward(self, x):
        x = self.pool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def to_torch_input(pixels: np.ndarray) -> "torch.Tensor":
    """The float input our convention defines for pixel k: (k - 128) * 2/255, as NCHW."""
    r = (pixels.astype(np.float32) - 128.0) * np.float32(2.0 / 255.0)
    return torch.from_numpy(np.ascontiguousarray(r.transpose(0, 3, 1, 2)))


@pytest.fixture(scope="module")
def digits():
    from microtrain.demo.data import load_digits_pixels

    images, labels = load_digits_pixels(RES, 3)
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(labels))
    return images[idx[:1300]], labels[idx[:1300]], images[idx[1300:]], labels[idx[1300:]]


@pytest.fixture(scope="module")
def trained(digits):
    x_train, y_train, _, _ = digits
    torch.set_num_threads(1)  # tiny tensors: a second thread only adds contention on a shared 2-core box
    torch.manual_seed(0)
    model = TinyMobileNetV2()
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    x, y = to_torch_input(x_train), torch.from_numpy(y_train)
    model.train()
    for epoch in range(4):
        perm = torch.randperm(len(y))
        for i in range(0, len(y), 64):
            b = perm[i : i + 64]
            opt.zero_grad()
            F.cross_entropy(model(x[b]), y[b]).backward()
            opt.step()
    model.eval()
    return model


def test_import_matches_torch_and_folds_bn(trained, digits):
    graph = import_torch(trained, RES, 3)
    assert graph.dtype == "float32"
    assert sum(n.op == "add" for n in graph.nodes) == 3
    assert len([n for n in graph.nodes if "bn_folded" in n.attrs]) == len(graph.indexed_convs()) == 18
    assert graph.classifier().name == "classifier.1"
    _, _, x_val, _ = digits
    with torch.no_grad():
        ref = trained(to_torch_input(x_val[:64])).numpy()
    got = run_float(graph, to_torch_input(x_val[:64]).numpy().transpose(0, 2, 3, 1).copy()).reshape(ref.shape)
    assert np.abs(got - ref).max() < 1e-4 * max(1.0, np.abs(ref).max())


def fq(t, quant):
    """torch's per-tensor fake quantisation with our tensor's int8 parameters."""
    return torch.fake_quantize_per_tensor_affine(t.float(), quant.scale, quant.zero_point, -128, 127).double()


def reference_int8_logits(model, graph, pixels):
    """Fake-quant forward of the torch model, walked over its known structure: BN folded by torch,
    weights fake-quantised per channel (symmetric, max|W|/127), biases on the int32 grid x_scale*w_scale,
    every tensor fake-quantised with the graph's calibrated scale/zero point. Returns int8 logits."""
    t = graph.tensors

    def conv_bn(conv, bn, x, x_scale, name):
        w, b = conv.weight, conv.bias if conv.bias is not None else torch.zeros(conv.out_channels)
        if bn is not None:
            w, b = fuse_conv_bn_weights(w, b, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias)
        w, b = w.detach().double(), b.detach().double()
        ws = (w.abs().amax(dim=(1, 2, 3)) / 127).float()
        wq = torch.fake_quantize_per_channel_affine(w.float(), ws, torch.zeros_like(ws, dtype=torch.int32),
                                                    0, -127, 127).double()
        bs = x_scale * ws.double()
        y = F.conv2d(x, wq, torch.round(b / bs) * bs, conv.stride, conv.padding, 1, conv.groups)
        return fq(y, t[f"{name}.out"].quant), t[f"{name}.out"].quant.scale

    q_in = t[graph.input].quant
    stem = model.features[0]
    x, x_scale = conv_bn(stem[0], stem[1], fq(to_torch_input(pixels).double(), q_in), q_in.scale, "features.0.0")
    for bi, block in enumerate(list(model.features)[1:], start=1):
        skip, mods, i = x, list(block.conv), 0
        while i < len(mods):
            if isinstance(mods[i], ConvBNReLU):  # conv + BN + ReLU6
                x, x_scale = conv_bn(mods[i][0], mods[i][1], x, x_scale, f"features.{bi}.conv.{i}.0")
                i += 1
            else:  # linear bottleneck: conv + BN
                x, x_scale = conv_bn(mods[i], mods[i + 1], x, x_scale, f"features.{bi}.conv.{i}")
                i += 2
        if block.use_res_connect:
            x = fq(skip + x, t[f"features.{bi}.add.out"].quant)
            x_scale = t[f"features.{bi}.add.out"].quant.scale
    x = fq(x.mean(dim=(2, 3), keepdim=True), t["pool.out"].quant)
    lin = model.classifier[1]
    head = nn.Conv2d(lin.in_features, lin.out_features, 1)
    head.weight.data = lin.weight.data[:, :, None, None].clone()
    head.bias.data = lin.bias.data.clone()
    y, _ = conv_bn(head, None, x, x_scale, "classifier.1")
    q = t[graph.output].quant
    return (torch.round(y / q.scale) + q.zero_point).reshape(len(pixels), -1).numpy()


def test_int8_forward_agrees_with_torch_fake_quant(trained, digits):
    x_train, _, x_val, y_val = digits
    graph = import_torch(trained, RES, 3)
    q8 = quantize(graph, x_train[:256])
    ours = run_int8(q8, as_int8_input(x_val)).reshape(len(x_val), -1).astype(np.int64)
    ref = reference_int8_logits(trained, q8, x_val).astype(np.int64)
    diff = np.abs(ours - ref)
    within1 = float(np.mean(diff <= 1))
    print(f"\nint8 logits vs torch fake-quant: {within1:.4%} within 1 LSB, {np.mean(diff == 0):.4%} equal, "
          f"max {diff.max()} LSB over {diff.size} logits")
    assert within1 >= 0.99
    assert diff.max() <= 4
    acc = compare_accuracy(graph, q8, x_val, y_val)
    print(f"held-out accuracy ({len(y_val)} digits): float {acc['float']:.4f}  int8 {acc['int8']:.4f}")
    assert acc["float"] > 0.8  # the model really learned, so the comparison below means something
    assert acc["int8"] >= acc["float"] - 0.03


def test_percentile_calibration_clips_outliers(trained, digits):
    x_train = digits[0][:128]
    graph = import_torch(trained, RES, 3)
    q_mm = quantize(graph, x_train, method="minmax")
    q_pc = quantize(graph, x_train, method="percentile", percentile=99.0)
    narrower = [t for t in q_mm.tensors if t != q_mm.input and q_pc.tensors[t].quant.scale < q_mm.tensors[t].quant.scale]
    assert len(narrower) > len(q_mm.tensors) // 2


class WithSigmoid(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.SiLU()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.act(self.stem(x)).mean((2, 3)))


def test_unsupported_module_is_named_with_its_type():
    with pytest.raises(UnsupportedOpError, match=r"module 'act' \(SiLU\).*supported: Conv2d"):
        import_torch(WithSigmoid(), 8, 3)


def test_unsupported_function_names_its_enclosing_module():
    class Sig(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 4, 3, padding=1)
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(torch.sigmoid(self.stem(x)).mean((2, 3)))

    with pytest.raises(UnsupportedOpError, match=r"sigmoid.*supported"):
        import_torch(Sig(), 8, 3)


def test_model_must_end_in_linear_and_bad_padding_is_refused():
    with pytest.raises(UnsupportedOpError, match="must end with a Linear"):
        import_torch(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1)), 8, 3)
    with pytest.raises(UnsupportedOpError, match=r"module '0' \(Conv2d\).*padding"):
        import_torch(nn.Sequential(nn.Conv2d(3, 4, 3, padding=0), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                   nn.Linear(4, 2)), 8, 3)


def test_input_norm_is_folded_into_the_first_conv():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    graph = import_torch(model, 8, 3, input_norm=(mean, std))
    # a 1x1 conv has no padding, so the fold is exact
    assert graph.meta["torch_max_abs_diff"] < 1e-5


def test_imported_model_trains_end_to_end_int8(trained, digits):
    """Import -> PTQ -> new 5-class head -> int8 QAS fine-tuning of the last six convs."""
    from microtrain.runtime.trainer import fine_tune
    from microtrain.sparse.scheme import UpdateScheme

    x_train, y_train, x_val, y_val = digits
    q8 = quantize(import_torch(trained, RES, 3), x_train[:256])
    pick = lambda x, y: (as_int8_input(x[y >= 5]), y[y >= 5] - 5)  # noqa: E731  digits 5-9 as a new task
    train, val = pick(x_train, y_train), pick(x_val, y_val)
    scheme = UpdateScheme.last_layers(q8, 6)  # the last two inverted-residual blocks, weights and biases
    out = fine_tune(q8, scheme, train, val, epochs=3, lr=0.05, seed=0, qas=True)
    first, last = out["history"][0]["train_loss"], out["history"][-1]["train_loss"]
    print(f"\nimported MobileNetV2-style model, int8 QAS on digits 5-9: train loss {first:.3f} -> {last:.3f}, "
          f"val acc {out['val_acc']:.3f}")
    assert last < first
    assert out["val_acc"] > 0.8  # chance is 0.2


def test_ptq_follows_the_ir_int8_conventions(trained, digits):
    from microtrain.ir.validate import validate

    graph = import_torch(trained, RES, 3)
    q8 = validate(quantize(graph, digits[0][:64]))
    assert q8.input_spec.quant.scale == pytest.approx(2 / 255) and q8.input_spec.quant.zero_point == 0
    for fnode, node in zip(graph.nodes, q8.nodes):
        qy = q8.tensors[node.output].quant
        if node.op == "global_avg_pool":
            assert qy == q8.tensors[node.inputs[0]].quant  # pooling stays in its input's domain
            continue
        if fnode.attrs.get("activation") in ("relu", "relu6"):
            assert qy.zero_point == -128  # the int8 clamp is the activation
            if fnode.attrs["activation"] == "relu6":
                assert qy.scale <= 6 / 255 + 1e-12
        assert "activation" not in node.attrs
        if node.op != "conv2d":
            continue
        w, ws, b = node.params["weight"], node.params["w_scales"], node.params["bias"]
        assert w.dtype == np.int8 and b.dtype == np.int32 and ws.dtype == np.float32
        assert np.abs(w.astype(int)).reshape(len(w), -1).max(axis=1).max() == 127  # symmetric, full range
        xs = q8.tensors[node.inputs[0]].quant.scale
        real_w = w.astype(np.float64) * ws.astype(np.float64)[:, None, None, None]
        np.testing.assert_allclose(real_w, fnode.params["weight"], atol=float(ws.max()) / 2 + 1e-9)
        np.testing.assert_allclose(b * xs * ws.astype(np.float64), fnode.params["bias"],
                                   atol=float((xs * ws).max()) / 2 + 1e-9)

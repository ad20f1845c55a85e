"""1-D models (sensor time series) through the pipeline: torch.fx import of Conv1d (dense, depthwise,
pointwise; stride, 'same'/explicit/even-kernel padding), BatchNorm1d, ReLU/ReLU6, global pooling, flatten +
Linear; gradients against torch autograd (float graph vs the torch module itself; int8 graph vs a
straight-through torch re-implementation written with F.conv1d); C == NumPy for inference and training."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
from microtrain.codegen.param_blob import decode_params, graph_slice

import torch
import torch.nn as nn
import torch.nn.functional as F

from microtrain.autodiff import build_training_graph
from microtrain.errors import UnsupportedOpError
from microtrain.frontends.torch_fx import import_torch
from microtrain.quant.arith import conv_multipliers
from microtrain.quant.ptq import input_to_float, quantize
from microtrain.runtime.forward import run_int8
from microtrain.runtime.training import TrainingRuntime
from microtrain.sparse.scheme import TrainSpec, UpdateScheme

L, C = 24, 6


class Tiny1d(nn.Module):
    """dense k=5 'same' + BN + ReLU, depthwise stride 2 + ReLU6, pointwise, even kernel 'same', then either
    global pooling + Linear or flatten + Linear over the whole sequence."""

    def __init__(self, flatten=False, bn=True, classes=4, maxpool=False):
        super().__init__()
        self.c0 = nn.Conv1d(C, 8, 5, padding="same" if not bn else 2, bias=not bn)
        self.bn = nn.BatchNorm1d(8) if bn else nn.Identity()
        self.dw = nn.Conv1d(8, 8, 3, stride=2, padding=1, groups=8)
        self.pw = nn.Conv1d(8, 12, 1)
        self.c4 = nn.Conv1d(12, 10, 4, padding="same")
        self.flatten = flatten
        self.mp = nn.MaxPool1d(3, stride=1) if maxpool else nn.Identity()
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.fc = nn.Linear(10 * (L // 2 - (2 if maxpool else 0)) if flatten else 10, classes)

    def forward(self, x):
        x = F.relu(self.bn(self.c0(x)))
        x = F.relu6(self.dw(x))
        x = self.mp(F.relu(self.pw(x)))
        x = F.relu(self.c4(x))
        x = torch.flatten(x, 1) if self.flatten else torch.flatten(self.pool(x), 1)
        return self.fc(x)


VARIANTS = ("pool", "flatten", "maxpool")  # global pool + Linear; flatten + Linear; max pool inside + flatten


def model(variant="pool", bn=True, seed=0):
    torch.manual_seed(seed)
    m = Tiny1d(variant != "pool", bn, maxpool=variant == "maxpool")
    if bn:
        with torch.no_grad():
            m.bn.running_mean.uniform_(-0.2, 0.2)
            m.bn.running_var.uniform_(0.5, 2.0)
            m.bn.weight.uniform_(0.5, 1.5)
    return m.eval()


def signals(n=6, seed=1):
    rng = np.random.default_rng(seed)
    return rng.integers(-128, 128, (n, 1, L, C)).astype(np.int8), rng.integers(0, 4, n)


def to_torch(x_q):
    return torch.tensor(input_to_float(x_q)[:, 0].transpose(0, 2, 1), dtype=torch.float64)


@pytest.mark.parametrize("variant", VARIANTS)
def test_import_matches_torch(variant):
    m = model(variant)
    flatten = variant != "pool"
    g = import_torch(m, length=L, channels=C)
    assert g.input_spec.shape == (1, L, C) and g.meta["layout"] == "1d"
    assert g.meta["torch_max_abs_diff"] < 1e-4
    ops = [n.op for n in g.nodes]
    assert ops.count("pad1d") == 3  # c0 (2, 2), dw (1, 1), c4 'same' with an even kernel (1, 2)
    assert g.node("c4.pad").attrs == {"left": 1, "right": 2}
    assert g.node("c0").attrs["kernel"] == (1, 5) and g.node("dw").attrs["groups"] == 8
    head = g.classifier()
    assert head.attrs["kernel"] == ((1, L // 2 - 2 * (variant == "maxpool")) if flatten else (1, 1))
    assert g.output_spec.shape == (1, 1, 4) and ops.count("max_pool1d") == (variant == "maxpool")


def test_windowed_avgpool1d_is_a_depthwise_conv():
    class Pooled(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv1d(C, 8, 3, padding=1)
            self.p = nn.AvgPool1d(4, stride=2, padding=1)
            self.fc = nn.Linear(8, 3)

        def forward(self, x):
            return self.fc(torch.flatten(F.adaptive_avg_pool1d(self.p(F.relu(self.c(x))), 1), 1))

    torch.manual_seed(0)
    g = import_torch(Pooled().eval(), length=L, channels=C)
    assert g.meta["torch_max_abs_diff"] < 1e-5  # includes the zero padding counted in the mean
    node = g.node("p")
    assert node.attrs["groups"] == 8 and node.attrs["pool"] == "avg" and g.tensors[node.output].shape == (1, 12, 8)
    with pytest.raises(UnsupportedOpError, match="ceil_mode"):
        m = Pooled()
        m.p = nn.AvgPool1d(4, ceil_mode=True)
        import_torch(m.eval(), length=L, channels=C)


def test_unsupported_1d_layers_are_named():
    m = model()
    m.c4 = nn.Conv1d(12, 10, 3, padding=2, padding_mode="circular")
    with pytest.raises(UnsupportedOpError, match=r"c4.*padding_mode 'circular'"):
        import_torch(m, length=L, channels=C)

    class FlatThenRelu(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv1d(C, 4, 3)
            self.fc = nn.Linear(4 * (L - 2), 2)

        def forward(self, x):
            return self.fc(F.relu(torch.flatten(self.c(x), 1)))

    with pytest.raises(UnsupportedOpError, match="only an nn.Linear may follow flatten"):
        import_torch(FlatThenRelu(), length=L, channels=C)


def all_trained(g, depthwise_channels=(0, 3, 5)):
    spec = {}
    for n in g.indexed_convs() + [g.classifier()]:
        w = n.params["weight"]
        chans = depthwise_channels if n.attrs.get("groups", 1) > 1 else tuple(range(w.shape[1]))
        spec[n.name] = TrainSpec(n.name, True, chans)
    return spec


@pytest.mark.parametrize("variant", VARIANTS)
def test_float_gradients_equal_torch_autograd(variant):
    """The imported float graph trained by TrainingRuntime vs autograd of the torch module itself."""
    m = model(variant, bn=False)
    g = import_torch(m, length=L, channels=C)
    m.double()
    x, labels = signals()
    trained = all_trained(g, depthwise_channels=tuple(range(8)))
    ours = TrainingRuntime(build_training_graph(g, trained)).gradients({g.input: input_to_float(x)}, labels)
    m.zero_grad()
    F.cross_entropy(m(to_torch(x)), torch.tensor(labels), reduction="mean").backward()
    mods = {"c0": m.c0, "dw": m.dw, "pw": m.pw, "c4": m.c4, "fc": m.fc}
    for name, mod in mods.items():
        ref_w = mod.weight.grad.numpy()
        got_w = ours[f"grad:{name}.weight"]
        ref_w = ref_w.reshape(got_w.shape[0], -1, got_w.shape[-1]) if name == "fc" else ref_w
        np.testing.assert_allclose(got_w.reshape(ref_w.shape[0], -1), ref_w.reshape(ref_w.shape[0], -1),
                                   rtol=2e-4, atol=1e-6 * np.abs(ref_w).max(), err_msg=name)
        np.testing.assert_allclose(ours[f"grad:{name}.bias"], mod.bias.grad.numpy(), rtol=2e-4,
                                   atol=1e-6 * np.abs(mod.bias.grad.numpy()).max(), err_msg=name)


def int8_model(variant="pool"):
    g = import_torch(model(variant), length=L, channels=C)
    calib = np.random.default_rng(5).integers(-128, 128, (32, 1, L, C)).astype(np.int8)
    return quantize(g, calib)


def torch_int8_grads(g, x, labels):
    """Straight-through int8 forward written in 1-D torch ops (F.pad with the zero point, F.conv1d)."""
    vals, params = {g.input: torch.tensor(x[:, 0].transpose(0, 2, 1), dtype=torch.float64)}, {}
    for n in g.nodes:
        xin = vals[n.inputs[0]]
        if n.op == "pad1d":
            vals[n.output] = F.pad(xin, (n.attrs["left"], n.attrs["right"]), value=float(g.tensors[n.inputs[0]].quant.zero_point))
        elif n.op == "max_pool1d":
            vals[n.output] = F.max_pool1d(xin, n.attrs["kernel"], n.attrs["stride"])
        elif n.op == "conv2d":
            w = torch.tensor(n.params["weight"][:, :, 0, :].astype(np.float64), requires_grad=True)
            b = torch.tensor(n.params["bias"].astype(np.float64), requires_grad=True)
            params[n.name] = (w, b)
            xq, yq = g.tensors[n.inputs[0]].quant, g.tensors[n.output].quant
            eff = torch.tensor(conv_multipliers(xq.scale, n.params["w_scales"], yq.scale).astype(np.float64))
            acc = F.conv1d(xin - xq.zero_point, w, None, n.attrs["stride"], 0, n.attrs.get("dilation", 1),
                           n.attrs.get("groups", 1))
            t = (acc + b[:, None]) * eff[:, None]
            vals[n.output] = torch.clamp(t + (torch.round(t) - t).detach() + yq.zero_point, -128, 127)
        else:
            assert n.op == "global_avg_pool"
            mean = xin.mean(dim=2, keepdim=True)
            vals[n.output] = mean + (torch.round(mean) - mean).detach()
    q = g.output_spec.quant
    out = (vals[g.output].reshape(len(labels), -1) - q.zero_point) * q.scale
    F.cross_entropy(out, torch.tensor(labels)).backward()
    return {k: (w.grad.numpy(), b.grad.numpy()) for k, (w, b) in params.items()}


@pytest.mark.parametrize("variant", VARIANTS)
def test_int8_gradients_equal_torch_straight_through(variant):
    g = int8_model(variant)
    x, labels = signals()
    trained = all_trained(g)
    ours = TrainingRuntime(build_training_graph(g, trained)).gradients({g.input: x}, labels)
    ref = torch_int8_grads(g, x, labels)
    assert np.abs(ref["c0"][0]).max() > 0  # the gradient crosses every pad, stride and clamp down to c0
    for name, spec in trained.items():
        gw, gb = ref[name]
        w = gw[list(spec.channels)] if g.node(name).attrs.get("groups", 1) > 1 else gw[:, list(spec.channels)]
        got = ours[f"grad:{name}.weight"][:, :, 0, :]
        np.testing.assert_allclose(got, w, rtol=1e-4, atol=1e-6 * np.abs(gw).max(), err_msg=name)
        np.testing.assert_allclose(ours[f"grad:{name}.bias"], gb, rtol=1e-4, atol=1e-6 * np.abs(gb).max(), err_msg=name)


@pytest.mark.skipif(shutil.which("gcc") is None or shutil.which("make") is None, reason="needs gcc and make")
@pytest.mark.parametrize("variant", VARIANTS)
def test_generated_c_equals_numpy(variant, tmp_path):
    """Inference logits and 5 training steps (nearest rounding: no stochastic ties) bit for bit."""
    from microtrain.codegen import compile_model
    from microtrain.codegen.lower_train import training_graph_for
    from microtrain.targets.host import HostModel, build_host

    g = int8_model(variant)
    ratios = {i: 1.0 for i in range(len(g.indexed_convs()))}
    ratios[1] = 0.5  # the depthwise conv: a split (frozen + trained channels) kernel
    scheme = UpdateScheme(len(g.indexed_convs()), ratios, name="all")
    x, labels = signals(8, seed=3)
    cm = compile_model(g.copy(), scheme, out_dir=tmp_path, lr=0.02, seed=3, rounding="nearest")
    source = (tmp_path / "mt_model.c").read_text()
    assert "mt_pad1d_s8(" in source and "mt_pad1d_grad_f32(" in source
    assert ("mt_max_pool1d_grad_f32(" in source) == (variant == "maxpool")
    host = HostModel(build_host(tmp_path, opt="-O1"))
    assert np.array_equal(host.infer(x), run_int8(g, x).reshape(len(x), -1))

    ref = g.copy()
    rt = TrainingRuntime(training_graph_for(ref, scheme, rounding="nearest"), seed=3)
    for i in range(len(x)):
        want = rt.train_step({ref.input: x[i : i + 1]}, labels[i : i + 1], 0.02, i)["loss"]
        assert host.train_step(x[i], int(labels[i])) == pytest.approx(want, rel=1e-5)
    changed = 0
    for item, arr in decode_params(host.export_params(), cm.program.meta["trainable_layout"]):
        assert np.array_equal(arr, graph_slice(ref, item)), item
        changed += not np.array_equal(arr, graph_slice(g, item))
    assert changed >= 5  # the steps moved the parameters (the comparison is not of untouched arrays)
    assert np.array_equal(host.infer(x), run_int8(ref, x).reshape(len(x), -1))

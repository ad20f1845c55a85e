"""Dilated convolution (attrs "dilation"): the gradient rules of ops/conv.py against torch autograd (dense and
depthwise, dilation 2 and 3, with stride and padding), torch.fx import of Conv1d(dilation=d) (int8 forward
within quantisation error of the fp32 model), int8 gradients against the straight-through torch model, and
the generated C equal to NumPy bit for bit (inference and training steps)."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
from test_ops_1d import C, L, signals, to_torch, torch_int8_grads

import torch
import torch.nn as nn
import torch.nn.functional as F

from microtrain.autodiff import build_training_graph
from microtrain.errors import GraphError, SchemeError, UnsupportedOpError
from microtrain.frontends.torch_fx import import_torch
from microtrain.ops import conv
from microtrain.quant.ptq import input_to_float, quantize
from microtrain.runtime.forward import run_float, run_int8
from microtrain.runtime.training import TrainingRuntime
from microtrain.sparse.scheme import TrainSpec

# (dilation, stride, padding, kernel): 1-D windows (1, k) and a square 2-D one
CASES = [(2, 1, 0, (1, 3)), (2, 2, 2, (1, 3)), (3, 1, 3, (1, 3)), (3, 2, 1, (1, 5)), (2, 2, 1, (3, 3)),
         (3, 1, 0, (3, 3))]


@pytest.mark.parametrize("depthwise", [False, True], ids=["dense", "depthwise"])
@pytest.mark.parametrize("d,s,p,k", CASES)
def test_gradient_rules_equal_torch_autograd(depthwise, d, s, p, k):
    """grad_input, grad_weight (a channel slice) and grad_bias of ops/conv.py vs torch's conv2d backward."""
    rng = np.random.default_rng(d * 100 + s * 10 + p)
    c, o = 6, (6 if depthwise else 5)
    h = 3 if k[0] == 1 else 11  # conv2d pads H too: 3 rows keep a real one under stride 2
    x = rng.standard_normal((2, h, 17, c)).astype(np.float32)
    w = rng.standard_normal((o, 1 if depthwise else c) + k).astype(np.float32)
    attrs = {"kernel": k, "stride": s, "padding": p, "groups": c if depthwise else 1, "dilation": d}
    xt = torch.tensor(x.transpose(0, 3, 1, 2), dtype=torch.float64, requires_grad=True)
    wt = torch.tensor(w, dtype=torch.float64, requires_grad=True)
    bt = torch.zeros(o, dtype=torch.float64, requires_grad=True)
    yt = F.conv2d(xt, wt, bt, s, p, d, attrs["groups"])
    g = rng.standard_normal(yt.shape)
    (yt * torch.tensor(g)).sum().backward()
    ours = conv.conv_accumulate(x, w, attrs)
    np.testing.assert_allclose(ours, yt.detach().numpy().transpose(0, 2, 3, 1), rtol=1e-4, atol=1e-4)
    g_acc = g.transpose(0, 2, 3, 1).astype(np.float32)
    gx = conv.grad_input(g_acc, w, attrs, x.shape[1:])
    np.testing.assert_allclose(gx, xt.grad.numpy().transpose(0, 2, 3, 1), rtol=1e-4, atol=1e-4)
    channels = (0, 2, 5)
    gw = conv.grad_weight(x, g_acc, w.shape, attrs, channels)
    ref = wt.grad.numpy()
    np.testing.assert_allclose(gw, ref[list(channels)] if depthwise else ref[:, list(channels)], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(conv.grad_bias(g_acc), bt.grad.numpy(), rtol=1e-4, atol=1e-4)
    assert np.abs(gx).max() > 0 and np.abs(gw).max() > 0


def test_integer_forward_equals_a_plain_loop():
    """The exact int8 accumulator of a strided, padded, dilated depthwise and dense conv vs a plain loop."""
    rng = np.random.default_rng(3)
    xs = rng.integers(-255, 256, (2, 5, 13, 4)).astype(np.float32)
    for groups, ig in ((4, 1), (1, 4)):
        w = rng.integers(-127, 128, (4, ig, 3, 3)).astype(np.int8)
        attrs = {"kernel": (3, 3), "stride": 2, "padding": 2, "groups": groups, "dilation": 2}
        got = conv.conv_accumulate(xs, w, attrs)
        xp = np.pad(xs, ((0, 0), (2, 2), (2, 2), (0, 0))).astype(np.int64)
        ho, wo = conv.out_hw(5, 13, attrs)
        want = np.zeros((2, ho, wo, 4), np.int64)
        for oy in range(ho):
            for ox in range(wo):
                for i in range(3):
                    for j in range(3):
                        tap = xp[:, oy * 2 + 2 * i, ox * 2 + 2 * j, :]
                        wij = w[:, :, i, j].astype(np.int64)
                        want[:, oy, ox] += tap * wij[:, 0] if groups == 4 else tap @ wij.T
        assert np.array_equal(got, want)


class Dilated1d(nn.Module):
    """conv k3 dilation 2 'same' + ReLU, depthwise k3 dilation 3 stride 2 + ReLU6, dense k2 dilation 2 valid,
    pointwise, global pool + Linear."""

    def __init__(self):
        super().__init__()
        self.c0 = nn.Conv1d(C, 8, 3, padding="same", dilation=2)
        self.dw = nn.Conv1d(8, 8, 3, stride=2, padding=2, dilation=3, groups=8)
        self.c2 = nn.Conv1d(8, 10, 2, dilation=2)
        self.pw = nn.Conv1d(10, 12, 1, dilation=4)  # a 1-tap kernel: the dilation changes nothing
        self.fc = nn.Linear(12, 4)

    def forward(self, x):
        x = F.relu6(self.dw(F.relu(self.c0(x))))
        x = F.relu(self.pw(F.relu(self.c2(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool1d(x, 1), 1))


def dilated_model(seed=0):
    torch.manual_seed(seed)
    return Dilated1d().eval()


def test_import_conv1d_dilation_and_int8_forward_within_quantisation_error():
    m = dilated_model()
    g = import_torch(m, length=L, channels=C)
    assert g.meta["torch_max_abs_diff"] < 1e-4
    assert g.node("c0.pad").attrs == {"left": 2, "right": 2}  # 'same': dilation * (k - 1) split evenly
    assert g.node("c0").attrs["dilation"] == 2 and g.node("dw").attrs["dilation"] == 3
    assert "dilation" not in g.node("pw").attrs
    assert g.tensors[g.node("dw").output].shape == (1, (L + 4 - 7) // 2 + 1, 8)
    assert conv.describe(g.node("dw")) == "depthwise 1x3/2 dil 3"
    rng = np.random.default_rng(7)
    calib = rng.integers(-128, 128, (64, 1, L, C)).astype(np.int8)
    q8 = quantize(g, calib)
    x = rng.integers(-128, 128, (32, 1, L, C)).astype(np.int8)
    with torch.no_grad():
        ref = m.double()(to_torch(x)).numpy()
    assert np.abs(run_float(g, input_to_float(x)).reshape(ref.shape) - ref).max() < 1e-4
    out_q = q8.output_spec.quant
    got = (run_int8(q8, x).reshape(ref.shape).astype(np.float64) - out_q.zero_point) * out_q.scale
    err = np.abs(got - ref).max()
    # within a few output quantisation steps of the fp32 model (five int8 layers, each rounding once)
    assert err <= 3 * out_q.scale, (err, out_q.scale)  # measured: 0.75 steps; the logits span ~250
    assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.9


def test_conv2d_dilation_imports_and_unequal_dilation_is_refused():
    class Net(nn.Module):
        def __init__(self, dilation=2, padding=2):
            super().__init__()
            self.c = nn.Conv2d(3, 8, 3, padding=padding, dilation=dilation)
            self.fc = nn.Linear(8, 2)

        def forward(self, x):
            return self.fc(torch.flatten(F.adaptive_avg_pool2d(F.relu(self.c(x)), 1), 1))

    torch.manual_seed(0)
    g = import_torch(Net().eval(), resolution=12)
    assert g.node("c").attrs["dilation"] == 2 and g.meta["torch_max_abs_diff"] < 1e-4
    with pytest.raises(UnsupportedOpError, match=r"'c'.*dilation \(1, 2\)"):
        import_torch(Net(dilation=(1, 2), padding=(1, 2)).eval(), resolution=12)
    with pytest.raises(UnsupportedOpError, match=r"'c'.*padding.*dilation\*\(k-1\)//2 = 2"):
        import_torch(Net(padding=1).eval(), resolution=12)


def test_bad_dilation_is_a_one_line_graph_error():
    g = import_torch(dilated_model(), length=L, channels=C)
    g.node("c2").attrs["dilation"] = 0
    with pytest.raises(GraphError, match="'c2': dilation must be an integer >= 1, got 0"):
        from microtrain.ir.validate import validate
        validate(g)
    g.node("c2").attrs["dilation"] = 40
    with pytest.raises(GraphError, match="'c2': input 1x.* too small for kernel 1x2 dilated 40"):
        validate(g)


def int8_dilated():
    g = import_torch(dilated_model(), length=L, channels=C)
    return quantize(g, np.random.default_rng(5).integers(-128, 128, (32, 1, L, C)).astype(np.int8))


def test_int8_gradients_equal_torch_straight_through():
    """Every conv trained (depthwise: a channel slice): weight and bias gradients of the int8 graph vs torch
    autograd of the straight-through model; c0's gradient crosses both dilated convs' input gradients."""
    g = int8_dilated()
    x, labels = signals()
    trained = {n.name: TrainSpec(n.name, True, (0, 3, 5) if n.attrs.get("groups", 1) > 1
                                 else tuple(range(n.params["weight"].shape[1])))
               for n in g.indexed_convs() + [g.classifier()]}
    ours = TrainingRuntime(build_training_graph(g, trained)).gradients({g.input: x}, labels)
    ref = torch_int8_grads(g, x, labels)
    assert np.abs(ref["c0"][0]).max() > 0
    for name, spec in trained.items():
        gw, gb = ref[name]
        w = gw[list(spec.channels)] if g.node(name).attrs.get("groups", 1) > 1 else gw[:, list(spec.channels)]
        np.testing.assert_allclose(ours[f"grad:{name}.weight"][:, :, 0, :], w, rtol=1e-4,
                                   atol=1e-6 * np.abs(gw).max(), err_msg=name)
        np.testing.assert_allclose(ours[f"grad:{name}.bias"], gb, rtol=1e-4, atol=1e-6 * np.abs(gb).max(),
                                   err_msg=name)


@pytest.mark.skipif(shutil.which("gcc") is None or shutil.which("make") is None, reason="needs gcc and make")
def test_generated_c_equals_numpy(tmp_path):
    """Inference logits and training steps of the dilated model (dense, split depthwise, dense k2) in C and
    NumPy, bit for bit; then the trained parameters. (The depthwise weight slice does not move in these
    steps: test_dilated_kernels_equal_numpy checks its fused update.)"""
    from microtrain.codegen.param_blob import decode_params, graph_slice

    from microtrain.codegen import compile_model
    from microtrain.codegen.lower_train import training_graph_for
    from microtrain.sparse.scheme import UpdateScheme
    from microtrain.targets.host import HostModel, build_host

    g = int8_dilated()
    n = len(g.indexed_convs())
    ratios = {i: 1.0 for i in range(n)}
    ratios[1] = 0.5  # the dilated depthwise conv: split kernels (frozen + trained channels)
    scheme = UpdateScheme(n, ratios, name="all")
    x, labels = signals(8, seed=3)
    lr = 0.2  # large enough that the dilated dense convs' weights move (a wrong tap position shows)
    cm = compile_model(g.copy(), scheme, out_dir=tmp_path, lr=lr, seed=3, rounding="nearest")
    source = (tmp_path / "mt_model.c").read_text()
    assert "mt_conv_depthwise_split_s8(" in source and "mt_conv_grad_input_depthwise_f32(" in source
    assert "mt_conv_weight_update_f32(" in source and "mt_conv_grad_input_f32(" in source
    host = HostModel(build_host(tmp_path, opt="-O1"))
    assert np.array_equal(host.infer(x), run_int8(g, x).reshape(len(x), -1))
    ref = g.copy()
    rt = TrainingRuntime(training_graph_for(ref, scheme, rounding="nearest"), seed=3)
    for i in range(len(x)):
        want = rt.train_step({ref.input: x[i : i + 1]}, labels[i : i + 1], lr, i)["loss"]
        assert host.train_step(x[i], int(labels[i])) == pytest.approx(want, rel=1e-5)
    changed = set()
    for item, arr in decode_params(host.export_params(), cm.program.meta["trainable_layout"]):
        assert np.array_equal(arr, graph_slice(ref, item)), item
        if not np.array_equal(arr, graph_slice(g, item)):
            changed.add((item["node"], item["param"]))
    # the dilated dense convs' weights and every bias moved (c0's through both dilated input gradients)
    assert {("c0", "weight"), ("c2", "weight"), ("c0", "bias"), ("dw", "bias")} <= changed
    assert np.array_equal(host.infer(x), run_int8(ref, x).reshape(len(x), -1))


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
@pytest.mark.parametrize("d,stride", [(2, 1), (3, 2)])
def test_dilated_kernels_equal_numpy(tmp_path, d, stride):
    """The portable C kernels on a 2-D dilated window (both axes), byte for byte against ops/conv.py: dense and
    depthwise forward (and the in-place depthwise, stride 1), the depthwise input gradient (whole, split and
    in place: the NumPy tap order) and the fused depthwise and dense weight updates (the kernels' pixel order)."""
    import ctypes

    from c_lib import ConvParams, WeightS8, build_shared, ptr
    from test_host_fast_kernels import TrainCtx, UpdateParams

    from microtrain.codegen.emit import KERNEL_DIR
    from microtrain.quant import arith

    lib = build_shared(tmp_path / "k.so", [KERNEL_DIR / "mt_forward_s8.c", KERNEL_DIR / "mt_backward_f32.c"])
    rng = np.random.default_rng(d * 10 + stride)
    h, w, c, k, pad, xz, yz = 9, 13, 6, 3, d, 5, -3  # padding d keeps a stride-1 output the input's size
    x = rng.integers(-128, 128, (1, h, w, c)).astype(np.int8)
    xs = x.astype(np.float32) - np.float32(xz)
    for groups in (c, 1):
        wt = rng.integers(-128, 128, (c, 1 if groups == c else c, k, k)).astype(np.int8)
        attrs = {"kernel": (k, k), "stride": stride, "padding": pad, "groups": groups, "dilation": d}
        fam = "depthwise" if groups == c else "conv"
        ho, wo = conv.out_hw(h, w, attrs)
        p = ConvParams(h, w, c, ho, wo, c, k, k, stride, pad, xz, yz, d)
        bias = rng.integers(-3000, 3000, c).astype(np.int32)
        eff = rng.uniform(1e-4, 2e-3, c).astype(np.float32) / (1 if groups == c else 4)
        want = arith.requantize_conv(conv.conv_accumulate(xs, wt, attrs), bias, eff, yz).reshape(-1)
        kw_arr = conv.kernel_weight(wt, fam)
        y = np.zeros(want.size, np.int8)
        fwd = lib.mt_conv_depthwise_s8 if groups == c else lib.mt_conv_s8
        fwd(ctypes.byref(p), ptr(x), ptr(kw_arr), ptr(bias), ptr(eff), ptr(y), None)
        np.testing.assert_array_equal(y, want, err_msg=fam)
        assert len(np.unique(want)) > 10
        if groups == c and stride == 1:
            xy, plane = x.copy().reshape(-1), np.zeros(h * w, np.int8)
            lib.mt_conv_depthwise_inplace_s8(ctypes.byref(p), ptr(xy), ptr(kw_arr), ptr(bias), ptr(eff), ptr(xy),
                                             None, ptr(plane))
            np.testing.assert_array_equal(xy[: want.size], want)
        gacc = rng.standard_normal((1, ho, wo, c)).astype(np.float32)
        if groups == c:
            gx_ref = conv.grad_input(gacc, wt, attrs, (h, w, c)).reshape(-1)
            train = np.array([1, 4], np.int16)
            frozen = np.setdiff1d(np.arange(c), train).astype(np.int16)
            views = {"whole": (kw_arr, None, c, None, None, 0),
                     "split": (np.ascontiguousarray(kw_arr[..., frozen]), frozen, len(frozen),
                               np.ascontiguousarray(kw_arr[..., train]), train, len(train))}
            for name, (wf, fi, nf, wtr, ti, nt) in views.items():
                wv = WeightS8(ptr(wf).value, None if fi is None else ptr(fi).value, nf,
                              None if wtr is None else ptr(wtr).value, None if ti is None else ptr(ti).value, nt)
                gx = np.full(h * w * c, np.nan, np.float32)
                lib.mt_conv_grad_input_depthwise_f32(ctypes.byref(p), ptr(gacc), ctypes.byref(wv), ptr(gx))
                np.testing.assert_array_equal(gx.view(np.uint32), gx_ref.view(np.uint32), err_msg=name)
                for group in (1, 3, 8):  # in place, any stride: gacc at the start of gx's storage
                    g_io = np.full(max(h * w, ho * wo) * c, np.nan, np.float32)
                    g_io[: gacc.size] = gacc.reshape(-1)
                    plane = np.full(group * (ho * wo + k * k), np.nan, np.float32)
                    lib.mt_conv_grad_input_depthwise_inplace_f32(ctypes.byref(p), ptr(g_io), ctypes.byref(wv),
                                                                 ptr(g_io), ptr(plane), group)
                    np.testing.assert_array_equal(g_io[: h * w * c].view(np.uint32), gx_ref.view(np.uint32),
                                                  err_msg=f"{name}, in place, group {group}")
        # fused weight update of the whole weight (trained), x saved whole: the kernels sum pixels in order
        g = np.zeros(wt.shape, np.float32)
        xp = np.pad(xs, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
        for oy in range(ho):
            for ox in range(wo):
                r, q, span = oy * stride, ox * stride, (k - 1) * d + 1
                win = xp[0, r : r + span : d, q : q + span : d]
                ga = gacc[0, oy, ox]
                g = g + (win.transpose(2, 0, 1)[:, None] * ga[:, None, None, None] if groups == c
                         else ga[:, None, None, None] * win.transpose(2, 0, 1)[None])
        div = rng.uniform(0.5, 2.0, c).astype(np.float32)
        lr = np.float32(0.002 if groups == c else 0.01)
        w_ref = np.clip(wt.astype(np.int32) + np.rint(-lr * (g / div[:, None, None, None])).astype(np.int32), -128, 127)
        w_tr = kw_arr.copy()
        wv = WeightS8(None, None, 0, ptr(w_tr).value, None, c)
        upd, ctx = UpdateParams(ptr(div).value, 3, 0, wt.shape[1]), TrainCtx(float(lr), 1, 2, 0)
        upd_fn = lib.mt_conv_weight_update_depthwise_f32 if groups == c else lib.mt_conv_weight_update_f32
        upd_fn(ctypes.byref(p), ptr(x), c, ptr(gacc), ctypes.byref(wv), ctypes.byref(upd), ctypes.byref(ctx))
        got = conv.oihw_weight(w_tr, fam)
        np.testing.assert_array_equal(got, w_ref, err_msg=f"{fam} update")
        assert (got != wt).mean() > 0.3, "the update moved too few weights to test anything"


def test_patched_prefix_with_a_dilated_conv_equals_the_whole_run():
    """window_in spans (k - 1) * dilation + 1 inputs: a dilated depthwise conv inside a patch-based prefix gives
    the whole run's bytes on every grid (a window one dilation short would read the zero point instead)."""
    from conftest import small_graph

    from microtrain.ir.validate import infer_shapes, validate
    from microtrain.runtime.patched import run_patched

    g = small_graph()
    g.node("dw").attrs.update(dilation=2, padding=2)
    g = validate(infer_shapes(g))
    x = np.random.default_rng(1).integers(-128, 128, (3, 8, 8, 3)).astype(np.int8)
    for grid in ((2, 2), (4, 1), (3, 4)):
        assert np.array_equal(run_patched(g, x, 5, grid), run_int8(g, x)), grid


# fingerprints of undilated models: a scheme's model check computed before dilation was hashed (main at
# 59b1deb; the shipped mcunet-5fps schemes record it), then the contribution analysis's cache key (since it
# hashes every attribute: scheme_search/contribution.py; an explicit dilation 1 keeps it, as it keeps the trainer's
# prefix-cache keys)
MCUNET_FINGERPRINTS = ("12fa85829f5b4856", "455d5ec35c76930e2edb147ae9b27b08")
RESNET8_FINGERPRINTS = ("768a2f1140590c91", "7d484514eee5205c1a90ccd796694ca6")


def test_graph_fingerprints_tell_dilations_apart_and_keep_older_ones(mcunet):
    """A scheme's model check (sparse/scheme.py) and the contribution analysis's cache key
    (scheme_search/contribution.py) differ for a graph differing only in one conv's dilation, and are
    unchanged for undilated graphs (an explicit dilation 1 included)."""
    from conftest import SHARED, require

    from microtrain.frontends.tflite import load_tflite
    from microtrain.ir.validate import validate
    from microtrain.scheme_search.contribution import graph_fingerprint as cache_key
    from microtrain.sparse.fixtures import load_fixture
    from microtrain.sparse.scheme import graph_fingerprint

    def both(g):
        return graph_fingerprint(g), cache_key(g)

    assert both(mcunet) == MCUNET_FINGERPRINTS
    assert both(load_tflite(require(SHARED / "models" / "tflite" / "ic_resnet8_cifar10_int8.tflite"))) == RESNET8_FINGERPRINTS
    node = next(n for n in mcunet.indexed_convs() if conv.kind(n) == "depthwise" and n.attrs["kernel"] == (3, 3)
                and n.attrs["stride"] == 1)
    variant = mcunet.copy()
    variant.node(node.name).attrs.update(dilation=2, padding=2)  # same shapes, same parameters
    validate(variant)
    dilated = both(variant)
    assert dilated[0] != MCUNET_FINGERPRINTS[0] and dilated[1] != MCUNET_FINGERPRINTS[1]
    variant.node(node.name).attrs["dilation"] = np.int64(3)
    assert both(variant) not in (dilated, MCUNET_FINGERPRINTS)
    variant.node(node.name).attrs.update(dilation=1, padding=1)
    assert both(variant) == MCUNET_FINGERPRINTS
    scheme = load_fixture("mcunet-5fps-49kb")
    assert scheme.fingerprint == MCUNET_FINGERPRINTS[0]
    scheme.resolve(mcunet)
    variant.node(node.name).attrs.update(dilation=2, padding=2)
    with pytest.raises(SchemeError, match="does not fit"):
        scheme.resolve(variant)

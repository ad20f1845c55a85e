"""Training a graph read from an int8 .tflite file (issue 22, part 3) in NumPy: the training forward keeps
the "tflite" rounding mode and its fused-activation clamps, gradients cross the ops TFLite graphs add (pad,
windowed average pool), and head-only, a sparse scheme and a full update train ResNet-8 on CIFAR-10 images."""
from __future__ import annotations

import numpy as np
import pytest
from test_tflite import model_inputs, tflite_path

from microtrain.autodiff import build_training_graph
from microtrain.codegen.lower_train import training_graph_for
from microtrain.frontends.tflite import load_tflite
from microtrain.ops import op_module
from microtrain.runtime.forward import run_int8
from microtrain.runtime.training import TrainingRuntime
from microtrain.sparse.scheme import UpdateScheme

RESNET8 = "ic_resnet8_cifar10_int8"
CIFAR_LABELS = np.array([3, 8, 6, 9])  # model_inputs' cat, ship, frog, truck in CIFAR-10's class order


@pytest.fixture(scope="module")
def resnet8():
    g = load_tflite(tflite_path(RESNET8))
    return g, model_inputs(RESNET8, g)


def test_training_forward_keeps_the_tflite_rounding_and_the_fused_clamp(resnet8):
    """forward_train (what training runs) equals the inference forward on every conv and add of ResNet-8,
    and its mask is False exactly where the output was clamped: at the int8 range (ResNet-8's ReLUs end
    at its zero point -128) or at a tighter fused clamp (op2_conv given a ReLU at its zero point 4)."""
    g0, x = resnet8
    g = g0.copy()
    g.node("op2_conv").attrs["clamp"] = (4, 127)
    vals = run_int8(g, x, keep=True)
    clamped = {}
    for n in g.nodes:
        m = op_module(n)
        if not m.CLAMPS_OUTPUT:
            continue
        y, mask = m.forward_train(g, n, [vals[t] for t in n.inputs], save_mask=True)
        assert np.array_equal(y, vals[n.output]), n.name
        lo, hi = n.attrs.get("clamp", (-128, 127))
        assert mask[(y > lo) & (y < hi)].all(), n.name  # strictly inside the range: never clamped
        clamped[n.name] = int((~mask).sum())
        assert (~mask <= ((y == lo) | (y == hi))).all(), n.name  # a clamped output sits at a bound
    assert clamped["op0_conv"] > 1000 and clamped["op2_conv"] > 1000, clamped
    assert vals[g.node("op2_conv").output].min() == 4


def _scheme(graph, kind):
    n = len(graph.indexed_convs())
    return {"head-only": UpdateScheme.head_only(),
            "sparse": UpdateScheme(3, {n - 2: 0.5, n - 4: 0.25}, name="sparse"),
            "full": UpdateScheme.full(graph)}[kind]


# full needs a learning rate 10^4 times smaller: ResNet-8's input scale is 1.0 (raw pixels), so op0_conv's
# weight gradients are that much larger; at 3e-6 its update already diverges
@pytest.mark.parametrize("kind,lr", [("head-only", 0.03), ("sparse", 0.01), ("full", 1e-6)])
def test_resnet8_trains_in_numpy(resnet8, kind, lr):
    """A few SGD steps on four CIFAR-10 images lower their loss; exactly the scheme's layers change (full:
    the first conv too, so the gradient crossed every pad and add)."""
    g0, x = resnet8
    g = g0.copy()
    scheme = _scheme(g, kind)
    trained = scheme.resolve(g)
    rt = TrainingRuntime(training_graph_for(g, scheme), seed=0)
    losses = [float(rt.train_step({g.input: x}, CIFAR_LABELS, lr, t)["loss"]) for t in range(6)]
    assert np.isfinite(losses).all() and losses[-1] < losses[0], losses
    changed = {n.name for n, n0 in zip(g.nodes, g0.nodes)
               if any(not np.array_equal(n.params[k], n0.params[k]) for k in n.params)}
    assert changed and changed <= set(trained), (changed, set(trained))
    if kind == "full":
        assert g.indexed_convs()[0].name in changed


def test_pad_and_windowed_pool_backward_steps_are_emitted_and_run():
    """pad and avg_pool2d between trained convs: autodiff emits pad_grad / avg_pool2d_grad, and the
    gradient reaching the first conv equals the chain of their grad_input rules."""
    from conftest import int8_conv, int8_graph

    from microtrain.ir.graph import Node
    from microtrain.ops import avgpool, pad

    rng = np.random.default_rng(4)
    pool_attrs = {"kernel": (3, 3), "stride": 2, "pads": (0, 1, 0, 1), "requant": "tflite"}
    nodes = [int8_conv(rng, "c0", "input", "a", 3, 6, 3), Node("pad", "pad", ["a"], "p", {"pads": (1, 2, 0, 1)}),
             Node("avg", "avg_pool2d", ["p"], "q", pool_attrs),
             int8_conv(rng, "c1", "q", "r", 6, 5, 1), Node("gap", "global_avg_pool", ["r"], "s"),
             int8_conv(rng, "head", "s", "logits", 5, 3, 1, role="classifier")]
    quant = {"input": (2 / 255, 0), "a": (0.05, 4), "p": (0.05, 4), "q": (0.05, 4), "r": (0.04, -3), "s": (0.04, -3),
             "logits": (0.06, 2)}
    g = int8_graph("padpool", nodes, quant)
    x = rng.integers(-128, 128, (3, 8, 8, 3)).astype(np.int8)
    tg = build_training_graph(g, UpdateScheme(2, {0: 1.0}).resolve(g))
    assert "pad_grad 1" in tg.summary() and "avg_pool2d_grad 1" in tg.summary()
    rt = TrainingRuntime(tg)
    grads = rt.forward({g.input: x})
    grads[tg.labels] = np.array([0, 1, 2])
    for s in tg.steps:
        if s.kind not in ("forward", "sgd_update"):
            rt.run_step(s, grads, 0.0, 0)
    g_q = grads["grad:q"]
    g_a = pad.grad_input(avgpool.grad_input(g_q, pool_attrs, g.tensors["p"].shape), {"pads": (1, 2, 0, 1)},
                         g.tensors["a"].shape)
    assert np.array_equal(grads["grad:a"], g_a) and np.abs(g_a).sum() > 0


def test_fp32_baseline_keeps_a_fused_activation_clamp(resnet8):
    """dequantize_graph (the fp32 baseline) clamps each output to the real range of its int8 clamp: a
    fused ReLU (op2_conv given one at its zero point) stays a ReLU, not the whole int8 range."""
    from microtrain.quant.dequantize import dequantize_graph, dequantize_input
    from microtrain.runtime.forward import run_float

    g, x = resnet8
    g = g.copy()
    g.node("op2_conv").attrs["clamp"] = (4, 127)
    f = dequantize_graph(g)
    q = g.tensors[g.node("op2_conv").output].quant
    assert f.node("op2_conv").attrs["clamp"] == (0.0, (127 - 4) * q.scale)
    q0 = g.tensors[g.node("op0_conv").output].quant  # no fused clamp beyond the int8 range
    assert f.node("op0_conv").attrs["clamp"] == ((-128 - q0.zero_point) * q0.scale, (127 - q0.zero_point) * q0.scale)
    n = f.node("op2_conv")
    vals = run_float(f, dequantize_input(g, x), keep=True)
    y, _ = op_module(n).forward_train(f, n, [vals[n.inputs[0]]])  # what fp32 training runs
    assert y.min() == 0.0 and (y == 0).mean() > 0.2


def test_grayscale_model_trains_on_the_luma_predict_sees(tmp_path):
    """person_detect (96x96x1): the training loader takes the same luma as predict (PIL "L" after the RGB
    resize/crop), and RGB data given to a grayscale model is refused in one line before any training."""
    from conftest import DATA_DIR, tiny_image_folder
    from microtrain.commands.predict import load_model_pixels
    from microtrain.errors import GraphError
    from microtrain.quant.arith import pixels_to_int8
    from microtrain.runtime.datasets import load_image_folder
    from microtrain.runtime.trainer import fine_tune

    g = load_tflite(str(tflite_path("person_detect_int8")))
    root = tiny_image_folder(DATA_DIR / "person", tmp_path / "person", 2, 1)
    gray = load_image_folder(root / "train", 96, channels=1)
    assert gray.views.shape == (4, 1, 96, 96, 1)
    want = pixels_to_int8(np.stack([load_model_pixels(p, 96, 1) for p in gray.paths]))
    np.testing.assert_array_equal(gray.views[:, 0], want)
    rgb = load_image_folder(root / "train", 96)
    luma = 0.299 * rgb.views[..., 0] + 0.587 * rgb.views[..., 1] + 0.114 * rgb.views[..., 2]
    assert np.abs(gray.views[..., 0] - luma).max() <= 1  # ITU-R 601 (integer rounding of PIL)
    with pytest.raises(GraphError, match="input has 1 channels, the training data 3"):
        fine_tune(g, UpdateScheme.head_only(), rgb, None, epochs=1, lr=0.01)
    r = fine_tune(g, UpdateScheme.head_only(), gray, None, epochs=1, lr=0.01)
    assert r["steps"] == 1

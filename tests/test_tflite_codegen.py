"""The generated C of graphs read from .tflite files (issue 22): convs, adds and pools lower to the "tflite"
rounding mode's kernels (kernels/mt_forward_tfl_s8.c), pad and the windowed pool to theirs; the host build
gives NumPy's logits, and a training step gives NumPy's loss and parameters."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
from microtrain.codegen.param_blob import decode_params, graph_slice
from test_tflite import model_inputs, tflite_path

from microtrain.codegen import compile_model
from microtrain.codegen.lower_train import training_graph_for
from microtrain.frontends.tflite import load_tflite
from microtrain.runtime.forward import run_int8
from microtrain.runtime.training import TrainingRuntime
from microtrain.sparse.scheme import UpdateScheme

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None or shutil.which("make") is None,
                                reason="needs gcc and make")
CIFAR_LABELS = np.array([3, 8, 6, 9])  # model_inputs' cat, ship, frog, truck


@pytest.mark.parametrize("name", ["ic_resnet8_cifar10_int8", "vww_96_int8"])
def test_c_logits_equal_numpy(name, tmp_path):
    from microtrain.targets.host import HostModel, build_host

    g = load_tflite(tflite_path(name))
    x = model_inputs(name, g)
    compile_model(g.copy(), UpdateScheme.head_only(), out_dir=tmp_path)
    source = (tmp_path / "mt_model.c").read_text()
    assert "mt_conv_tfl_s8(" in source and "mt_pad_s8(" in source and "mt_avg_pool_tfl_s8(" in source
    assert "mt_conv_s8(" not in source and "mt_global_avg_pool_s8(" not in source
    model = HostModel(build_host(tmp_path, opt="-O1"))
    want = run_int8(g, x).reshape(len(x), -1)
    assert np.array_equal(model.infer(x), want)
    assert len(np.unique(want.argmax(1))) > 1  # not a constant answer


@pytest.mark.parametrize("kind", ["sparse", "full"])
def test_c_training_step_equals_numpy_on_resnet8(kind, tmp_path):
    """One SGD step in C and in NumPy from the same start: the same loss and the same trained parameters
    (sparse: partly trained convs with split weights; full: every gradient crosses pads and adds)."""
    from microtrain.targets.host import HostModel, build_host

    g = load_tflite(tflite_path("ic_resnet8_cifar10_int8"))
    x = model_inputs("ic_resnet8_cifar10_int8", g)
    n = len(g.indexed_convs())
    scheme = UpdateScheme(3, {n - 2: 0.5, n - 4: 0.25}, name="sparse") if kind == "sparse" else UpdateScheme.full(g)
    lr = 0.01 if kind == "sparse" else 1e-6
    cm = compile_model(g.copy(), scheme, out_dir=tmp_path, lr=lr, seed=3)
    source = (tmp_path / "mt_model.c").read_text()
    if kind == "full":
        assert "mt_pad_grad_f32(" in source and "mt_add_grad_f32(" in source
    model = HostModel(build_host(tmp_path, opt="-O1"))
    gn = g.copy()
    rt = TrainingRuntime(training_graph_for(gn, scheme), seed=3)
    for i in range(2):
        want = rt.train_step({gn.input: x[i : i + 1]}, CIFAR_LABELS[i : i + 1], lr, i)["loss"]
        got = model.train_step(x[i], int(CIFAR_LABELS[i]))
        assert got == pytest.approx(want, rel=1e-5)
    changed = 0
    for item, arr in decode_params(model.export_params(), cm.program.meta["trainable_layout"]):
        ref = graph_slice(gn, item)
        assert np.array_equal(arr, ref), item
        changed += int((ref != graph_slice(g, item)).sum())
    assert changed > 0


def test_c_training_step_equals_numpy_on_vww_depthwise_slices(tmp_path):
    """vww: depthwise convs trained whole and on half their channels (split weight views), a pointwise one
    on a quarter of its input channels: two C steps give NumPy's losses and parameters."""
    from microtrain.targets.host import HostModel, build_host

    g = load_tflite(tflite_path("vww_96_int8"))
    x, labels = model_inputs("vww_96_int8", g), np.array([1, 1, 1, 0, 0, 0])  # 3 person, 3 no_person
    convs = g.indexed_convs()
    dw = [i for i, c in enumerate(convs) if c.params["weight"].shape[1] == 1 and c.params["weight"].shape[0] > 1]
    scheme = UpdateScheme(4, {dw[-1]: 0.5, len(convs) - 3: 0.25, dw[-2]: 1.0}, name="sparse")
    cm = compile_model(g.copy(), scheme, out_dir=tmp_path, lr=0.01, seed=3)
    model = HostModel(build_host(tmp_path, opt="-O1"))
    gn = g.copy()
    rt = TrainingRuntime(training_graph_for(gn, scheme), seed=3)
    for i in range(2):
        want = rt.train_step({gn.input: x[i : i + 1]}, labels[i : i + 1], 0.01, i)["loss"]
        assert model.train_step(x[i], int(labels[i])) == pytest.approx(want, rel=1e-5)
    layout = cm.program.meta["trainable_layout"]
    assert any(item.get("family") == "depthwise" for item in layout)
    for item, arr in decode_params(model.export_params(), layout):
        assert np.array_equal(arr, graph_slice(gn, item)), item


def test_new_head_on_a_flatten_dense_model_trains_in_numpy_and_c(tmp_path):
    """Keras Conv -> Flatten -> Dense: the classifier is a 6x6 conv over the map, so replace_head's new head
    is (N, C, 6, 6); head-only fine-tuning learns it, and the C training step gives NumPy's losses."""
    from tflite_builder import flatten_fc_model

    from microtrain.frontends.tflite import tflite_to_graph
    from microtrain.quant.head import replace_head
    from microtrain.runtime.trainer import fine_tune
    from microtrain.targets.host import HostModel, build_host

    g = tflite_to_graph(flatten_fc_model(), "flatten")
    head = replace_head(g, 3)
    assert head.classifier().params["weight"].shape == (3, 4, 6, 6) and not head.classifier().params["weight"].any()
    rng = np.random.default_rng(0)
    x, y = rng.integers(-128, 128, (24, 6, 6, 3)).astype(np.int8), np.arange(24) % 3
    r = fine_tune(g, UpdateScheme.head_only(), (x, y), (x, y), epochs=3, lr=0.05, batch_size=8)
    assert r["val_acc"] > 0.6  # 24 random images memorised by the new head (chance: 1/3)

    scheme = UpdateScheme(1, {0: 1.0})  # the head and the conv before the flatten
    compile_model(head.copy(), scheme, out_dir=tmp_path, lr=0.05, seed=1)
    model = HostModel(build_host(tmp_path, opt="-O1"))
    assert np.array_equal(model.infer(x), run_int8(head, x).reshape(len(x), -1))
    rt = TrainingRuntime(training_graph_for(head, scheme), seed=1)
    for i in range(3):
        want = rt.train_step({head.input: x[i : i + 1]}, y[i : i + 1], 0.05, i)["loss"]
        assert model.train_step(x[i], int(y[i])) == pytest.approx(want, rel=1e-5)


@pytest.mark.qemu
def test_cortex_m7_training_equals_host_build(tmp_path):
    """A tflite-mode graph (conv -> flatten -> dense, new 3-class head, the conv trained too) on Cortex-M7
    under QEMU: after the same steps the firmware's parameters, logits and losses are the host build's."""
    from cortexm_util import require_arm_tools
    from tflite_builder import flatten_fc_model

    from microtrain.frontends.tflite import tflite_to_graph
    from microtrain.quant.head import replace_head
    from microtrain.targets.cortex_m.project import emit_firmware
    from microtrain.targets.cortex_m.session import run_session
    from microtrain.targets.host import HostModel, build_host

    require_arm_tools()
    g = replace_head(tflite_to_graph(flatten_fc_model(), "flatten"), 3)
    compile_model(g, UpdateScheme(1, {0: 1.0}), out_dir=tmp_path, lr=0.05, seed=1)
    build, _ = emit_firmware(tmp_path, "cortex-m7")
    rng = np.random.default_rng(5)
    train = (rng.integers(-128, 128, (4, 6, 6, 3)).astype(np.int8), np.array([0, 1, 2, 1]))
    evaluate = (rng.integers(-128, 128, (2, 6, 6, 3)).astype(np.int8), np.array([0, 2]))
    device = run_session(build.elf, "cortex-m7", train=train, evaluate=evaluate, timeout=300)
    host = HostModel(build_host(tmp_path, opt="-O1"))
    host_losses = [host.train_step(x, int(y)) for x, y in zip(*train)]
    assert device.params == host.export_params() and len(device.params) > 0
    np.testing.assert_array_equal(device.logits, host.infer(evaluate[0]))
    np.testing.assert_allclose(device.losses, host_losses, atol=1e-6)
    assert host_losses[0] != host_losses[-1]


def test_dilated_tflite_model_in_c_equals_numpy(tmp_path):
    """Dilated CONV_2D / DEPTHWISE_CONV_2D read from a .tflite (tests/tflite_builder.py): the host build's
    logits and two SGD steps through every dilated conv equal NumPy's."""
    from tflite_builder import dilated_model

    from microtrain.frontends.tflite import tflite_to_graph
    from microtrain.targets.host import HostModel, build_host

    g = tflite_to_graph(dilated_model(), "dilated")
    x = np.random.default_rng(6).integers(-128, 128, (6, 12, 12, 4), dtype=np.int8)
    y = np.arange(6) % 3
    scheme = UpdateScheme(3, {0: 0.5, 1: 1.0, 2: 1.0}, name="dilated")
    cm = compile_model(g.copy(), scheme, out_dir=tmp_path, lr=0.05, seed=2)
    assert "mt_conv_tfl_s8(" in (tmp_path / "mt_model.c").read_text()
    model = HostModel(build_host(tmp_path, opt="-O1"))
    assert np.array_equal(model.infer(x), run_int8(g, x).reshape(len(x), -1))
    gn = g.copy()
    rt = TrainingRuntime(training_graph_for(gn, scheme), seed=2)
    for i in range(2):
        want = rt.train_step({gn.input: x[i : i + 1]}, y[i : i + 1], 0.05, i)["loss"]
        assert model.train_step(x[i], int(y[i])) == pytest.approx(want, rel=1e-5)
    changed = 0
    for item, arr in decode_params(model.export_params(), cm.program.meta["trainable_layout"]):
        assert np.array_equal(arr, graph_slice(gn, item)), item
        changed += int((graph_slice(gn, item) != graph_slice(g, item)).sum())
    assert changed > 0

"""A new op is one module plus one kernel. tests/toy_op/clip.py (+ clip.c/.h beside it), registered at run
time and named nowhere in src/, goes through validation, the NumPy forward, autodiff, the passes, NumPy
training and the generated C project: C logits equal NumPy's, the C training step gives NumPy's loss."""
from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import int8_conv, int8_graph

from microtrain.autodiff import build_training_graph
from microtrain.codegen import compile_model
from microtrain.codegen.lower_train import training_graph_for
from microtrain.ir.graph import Node
from microtrain.ops import register, unregister
from microtrain.runtime.forward import run_int8
from microtrain.runtime.training import TrainingRuntime
from microtrain.sparse.scheme import UpdateScheme
from microtrain.steps import kinds

TOY = Path(__file__).parent / "toy_op" / "clip.py"
SRC = Path(__file__).resolve().parents[1] / "src" / "microtrain"
SCHEME = UpdateScheme(2, {0: 1.0}, name="conv0-and-head")  # conv0's weights: its gradient crosses the clip


@pytest.fixture
def toy():
    spec = importlib.util.spec_from_file_location("toy_clip_op", TOY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    register(module)
    yield module
    unregister(module.OP)


def clip_graph(seed=0):
    rng = np.random.default_rng(seed)
    nodes = [int8_conv(rng, "conv0", "input", "c0", 3, 8, 3), Node("clip", "toy_clip", ["c0"], "k", {"lo": -40, "hi": 50}),
             int8_conv(rng, "pw", "k", "p", 8, 8, 1), Node("pool", "global_avg_pool", ["p"], "pooled"),
             int8_conv(rng, "head", "pooled", "logits", 8, 3, 1, role="classifier")]
    quant = {"input": (2 / 255, 0), "c0": (0.0813, 3), "k": (0.0813, 3), "p": (0.0497, -7), "pooled": (0.0497, -7),
             "logits": (0.0517, 1)}
    return int8_graph("clipped", nodes, quant)


def batch(n=4, seed=1):
    rng = np.random.default_rng(seed)
    return rng.integers(-128, 128, (n, 8, 8, 3)).astype(np.int8), rng.integers(0, 3, n)


def test_nothing_in_src_names_the_toy_op():
    assert not [p for p in SRC.rglob("*") if p.is_file() and p.suffix in (".py", ".c", ".h")
                and b"toy_clip" in p.read_bytes()]


def test_forward_and_training_in_numpy(toy):
    g = clip_graph()
    x, labels = batch()
    vals = run_int8(g, x, keep=True)
    assert np.array_equal(vals["k"], np.clip(vals["c0"], -40, 50))
    assert (vals["c0"] < -40).any() and (vals["c0"] > 50).any() and ((vals["c0"] >= -40) & (vals["c0"] <= 50)).any()

    tg = build_training_graph(g, SCHEME.resolve(g))
    assert "toy_clip_grad" in kinds() and "toy_clip_grad 1" in tg.summary()
    grads = TrainingRuntime(tg).gradients({g.input: x}, labels)
    # the gradient reaching conv0 is masked by the clip: compare with the same graph clipping nothing
    g_open = clip_graph()
    g_open.node("clip").attrs.update(lo=-128, hi=127)
    open_grads = TrainingRuntime(build_training_graph(g_open, SCHEME.resolve(g_open))).gradients({g.input: x}, labels)
    assert not np.allclose(grads["grad:conv0.bias"], open_grads["grad:conv0.bias"])

    before = g.node("conv0").params["bias"].copy()
    rt = TrainingRuntime(training_graph_for(g, SCHEME), seed=3)  # after the default passes
    rt.train_step({g.input: x}, labels, 0.05, 0)
    assert not np.array_equal(before, g.node("conv0").params["bias"])


@pytest.mark.skipif(shutil.which("gcc") is None or shutil.which("make") is None, reason="needs gcc and make")
def test_generated_c_runs_the_toy_op(toy, tmp_path):
    from microtrain.targets.host import HostModel, build_host

    g = clip_graph()
    x, labels = batch()
    cm = compile_model(g.copy(), SCHEME, out_dir=tmp_path, lr=0.05, seed=3)
    source = (tmp_path / "mt_model.c").read_text()
    assert "mt_toy_clip_s8(" in source and "mt_toy_clip_grad_f32(" in source
    model = HostModel(build_host(tmp_path, opt="-O1"))
    assert np.array_equal(model.infer(x), run_int8(g, x).reshape(len(x), -1))

    assert "toy_clip_grad 1" in cm.program.meta["training_graph"].summary()
    rt = TrainingRuntime(training_graph_for(g, SCHEME), seed=3)  # NumPy trains its own copy of the same start
    want = rt.train_step({g.input: x[:1]}, labels[:1], 0.05, 0)["loss"]
    got = model.train_step(x[0], int(labels[0]))
    assert got == pytest.approx(want, rel=1e-5)

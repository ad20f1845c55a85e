"""The generated C training step vs the NumPy TrainingRuntime (docs/training-semantics.md).

mcunet-5fps with a new 2-class head and upstream's 49 KB scheme, compiled once per module:
- 100 steps on real images (hymenoptera) at lr 1e-3: identical trained parameters and identical
  validation logits (hence predictions), except at rounding ties (below): a parameter that differs
  must differ by 1 LSB where NumPy's stochastic-rounding threshold lay within a few ulps of an integer;
  NumPy then takes C's value and the run goes on (measured: 1 such element in 100 steps);
- the documented bound where exactness is not promised: float32 sums in C and NumPy run in different
  orders (the spec leaves it free), so a stochastic-rounding threshold can fall between the two sums.
  Per step, from identical parameters (teacher forcing) at a 10x larger lr, at most 0.05 % of the
  trained elements may differ, each by at most 1 LSB (measured: 2 elements in 100 steps);
- planner figures = symbol sizes of the compiled object; export/import; ASan+UBSan training run.
"""
from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from conftest import hymenoptera, like_mcunet_49kb, model_path
from microtrain.codegen.param_blob import apply_params, decode_params, graph_slice

from microtrain.codegen import compile_model
from microtrain.codegen.lower_train import training_graph_for
from microtrain.runtime.forward import run_int8
from microtrain.runtime.training import TrainingRuntime, run_nodes
from microtrain.targets.host import HostModel, build_host, build_host_sanitized, run_harness

pytestmark = [pytest.mark.skipif(shutil.which("gcc") is None or shutil.which("make") is None,
                                 reason="needs gcc and make"),
              pytest.mark.usefixtures("one_blas_thread")]
UPSTREAM_49KB_SRAM = 237_456  # upstream engine's SRAM for the same scheme (paper-facts.md)
SEED = 7


@pytest.fixture(scope="module")
def base_graph():
    from microtrain.frontends.mcunet_pkl import load_mcunet_pkl
    from microtrain.quant.head import replace_head

    return replace_head(load_mcunet_pkl(model_path("mcunet-5fps")), 2)


@pytest.fixture(scope="module")
def scheme49():
    from microtrain.sparse.fixtures import load_fixture

    return load_fixture("mcunet-5fps-49kb")


@pytest.fixture(scope="module")
def built(base_graph, scheme49, tmp_path_factory):
    out = tmp_path_factory.mktemp("c-train-49kb")
    cm = compile_model(base_graph, scheme49, out_dir=out, lr=1e-3, seed=SEED)
    return cm, HostModel(build_host(out))  # the default flags (-O3 -march=native where supported)


@pytest.fixture(scope="module")
def images():
    from microtrain.runtime.datasets import load_image_folder

    root = hymenoptera()
    train = load_image_folder(root / "train", 128)
    val = load_image_folder(root / "val", 128, classes=train.classes)
    return train, val


def _numpy_runtime(graph, scheme, x_train):
    """TrainingRuntime on a copy of the graph + the frozen prefix's outputs for x_train, computed once."""
    g = graph.copy()
    tg = training_graph_for(g, scheme)
    prefix = run_nodes(g, {g.input: x_train}, 0, tg.n_prefix)
    return g, TrainingRuntime(tg, seed=SEED), tg, prefix


def _feeds(tg, prefix, i):
    return {t: prefix[t][i : i + 1] for t in tg.boundary}


def _param_diffs(model, layout, graph):
    diffs = []
    for item, arr in decode_params(model.export_params(), layout):
        diffs.append(np.abs(arr.astype(np.int64) - graph_slice(graph, item).astype(np.int64)))
    return np.concatenate([d.ravel() for d in diffs])


def _kernel_blob(graph, layout) -> bytes:
    """The parameter blob of a Graph's trained slices (the inverse of decode_params)."""
    out = bytearray()
    for item in layout:
        ref = graph_slice(graph, item)
        if item["param"] == "bias":
            out += ref.astype(np.int32).tobytes()
            continue
        fam = item["family"]
        arr = ref[:, :, 0, 0] if fam == "pointwise" else ref[:, 0].transpose(1, 2, 0) if fam == "depthwise" \
            else ref.transpose(0, 2, 3, 1)
        out += np.ascontiguousarray(arr, np.int8).tobytes()
    return bytes(out)


def _record_rounding_margins(rt, monkeypatch) -> dict:
    """{(node, param): |t - rint(t)| of the last update}, t = delta + u the stochastic-rounding threshold
    NumPy floored, over the updated slice (the layout item's shape)."""
    import microtrain.quant.update as upd
    from microtrain.ops import sim_native

    margins, current = {}, []
    plain_round, plain_update = upd.round_delta, rt.update

    def round_delta(delta, rounding, **kw):
        if rounding == "stochastic" and current:
            u = upd.uniform_from_hash(upd.rounding_hash(kw["seed"], kw["step"], kw["param_id"], kw["index"]))
            t = (np.asarray(delta, np.float32) + u.reshape(np.shape(delta))).astype(np.float32)
            margins[current[-1]] = (np.abs(t - np.rint(t)), np.spacing(np.abs(t)))
        return plain_round(delta, rounding, **kw)

    def update(a, node, grad, lr, step):
        current.append((node.name, a["param"]))
        try:
            return plain_update(a, node, grad, lr, step)
        finally:
            current.pop()

    monkeypatch.setattr(upd, "round_delta", round_delta)
    # the compiled update (ops/sim_native.py, the same values) would bypass round_delta: NumPy's runs here
    monkeypatch.setattr(sim_native, "apply_update", lambda *a, **k: None)
    rt.update = update
    return margins


def test_100_steps_on_real_images_match_numpy(built, base_graph, scheme49, images, monkeypatch):
    from microtrain.codegen.param_blob import apply_params

    cm, model = built
    train, val = images
    layout = cm.program.meta["trainable_layout"]
    order = np.random.default_rng(0).permutation(len(train.labels))[:100]
    x, y = train.x[order], train.labels[order]
    g, rt, tg, prefix = _numpy_runtime(base_graph, scheme49, x)
    margins = _record_rounding_margins(rt, monkeypatch)
    model.reset()
    losses, ties = [], []
    for i in range(100):
        loss_c = model.train_step(x[i], int(y[i]))
        loss_n = rt.train_step(_feeds(tg, prefix, i), y[i : i + 1], 1e-3, i)["loss"]
        losses.append((loss_c, loss_n))
        blob, n_ties = model.export_params(), len(ties)
        for item, arr in decode_params(blob, layout):
            diff = arr.astype(np.int64) - graph_slice(g, item).astype(np.int64)
            if not diff.any():
                continue
            where = np.nonzero(diff)
            margin, ulp = margins[(item["node"], item["param"])]
            assert np.abs(diff).max() == 1, f"step {i}: {item['node']}.{item['param']} differs by more than 1 LSB"
            assert (margin[where] <= 8 * ulp[where]).all(), (
                f"step {i}: {item['node']}.{item['param']} differs where NumPy's rounding was no tie: "
                f"margins {margin[where]}")
            ties.append((i, item["node"], item["param"], len(where[0])))
        if len(ties) > n_ties:
            apply_params(g, blob, layout)  # NumPy continues from C's tie-break
    assert model.step == 100
    lc, ln = np.array(losses).T
    np.testing.assert_allclose(lc, ln, rtol=1e-5, atol=1e-6)  # exp/log: ours vs NumPy's, ~1 ulp
    assert sum(t[3] for t in ties) <= 3, f"too many rounding ties: {ties}"
    assert _param_diffs(model, layout, g).max() == 0
    got = model.infer(val.x)
    want = run_int8(g, val.x).reshape(len(val.x), -1)
    np.testing.assert_array_equal(got, want)
    acc = (got.argmax(1) == val.labels).mean()
    assert acc > 0.7, f"training did not learn: validation accuracy {acc:.3f}"  # measured 0.895


def test_integer_requantisation_build_trains_bit_for_bit_alike(built, base_graph, scheme49, images, tmp_path):
    """The same project built with -DMT_INT_REQUANT=1 (the integer requantisation and weight-gradient step
    FPU-less builds use, mt_arith.h and mt_wgrad_f32.h): 20 steps give the same losses and parameters as the default (float) build, byte for byte,
    and its validation logits equal NumPy's run_int8."""
    cm, model = built
    train, val = images
    compile_model(base_graph, scheme49, out_dir=tmp_path, lr=1e-3, seed=SEED)
    integer = HostModel(build_host(tmp_path, opt="-O2 -DMT_INT_REQUANT=1"))
    model.reset()
    for i in range(20):
        assert integer.train_step(train.x[i], int(train.labels[i])) == model.train_step(train.x[i], int(train.labels[i]))
    assert integer.export_params() == model.export_params()
    g = base_graph.copy()
    apply_params(g, integer.export_params(), cm.program.meta["trainable_layout"])
    np.testing.assert_array_equal(integer.infer(val.x), run_int8(g, val.x).reshape(len(val.x), -1))
    model.reset()


def test_per_step_difference_bound(built, base_graph, scheme49, images):
    """Teacher forcing at lr 1e-2: both start every step from the same parameters."""
    cm, model = built
    train, _ = images
    layout = cm.program.meta["trainable_layout"]
    x, y = train.x[:25], train.labels[:25]
    g, rt, tg, prefix = _numpy_runtime(base_graph, scheme49, x)
    model.reset()
    model.set_lr(1e-2)
    worst = 0
    for i in range(len(x)):
        model.import_params(_kernel_blob(g, layout))
        model.set_rounding_state(SEED, i)
        model.train_step(x[i], int(y[i]))
        rt.train_step(_feeds(tg, prefix, i), y[i : i + 1], 1e-2, i)
        diff = _param_diffs(model, layout, g)
        assert diff.max() <= 1
        worst = max(worst, int((diff > 0).sum()))
    assert worst <= 0.0005 * diff.size
    model.reset()


def _object_symbols(project, cflags="-O0 -fno-pie"):
    subprocess.run(["make", "-s", "-C", str(project), "mt_model.o", "CC=gcc", f"CFLAGS={cflags}"], check=True,
                   capture_output=True)
    out = subprocess.run(["nm", "-S", str(project / "mt_model.o")], capture_output=True, text=True, check=True).stdout
    syms = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 4:
            syms[parts[3]] = (parts[2], int(parts[1], 16))
    return syms


def _check_plan_matches_object(cm, project):
    syms = _object_symbols(project)
    writable = {n: size for n, (kind, size) in syms.items() if kind in "bBdD"}
    trainable = {n: cm.program.consts[n].nbytes for n in cm.program.trainable}
    assert writable.pop("mt_arena") == cm.report.arena_bytes
    assert writable.pop("mt_ctx") == cm.report.scratch_bytes
    assert writable == trainable  # nothing else is mutable: no hidden buffers
    assert sum(trainable.values()) == cm.report.trainable_sram_bytes


def test_planner_figures_equal_the_build_49kb(built):
    cm, model = built
    _check_plan_matches_object(cm, cm.out_dir)
    assert cm.report.training_sram_bytes < UPSTREAM_49KB_SRAM


@pytest.mark.parametrize("which", ["99kb", "full"])
def test_planner_figures_equal_the_build_other_schemes(which, base_graph, tmp_path):
    from microtrain.sparse.fixtures import load_fixture
    from microtrain.sparse.scheme import UpdateScheme

    scheme = load_fixture("mcunet-5fps-99kb") if which == "99kb" else UpdateScheme.full(base_graph)
    cm = compile_model(base_graph, scheme, out_dir=tmp_path)
    _check_plan_matches_object(cm, tmp_path)
    print(f"{which}: training SRAM {cm.report.training_sram_bytes} B (arena {cm.report.arena_bytes}, "
          f"trainable {cm.report.trainable_sram_bytes})")


def test_export_import_and_reset(built, images):
    cm, model = built
    train, _ = images
    model.reset()
    init = model.export_params()
    model.set_lr(1e-2)
    model.train_step(train.x[0], int(train.labels[0]))
    trained = model.export_params()
    assert trained != init and len(trained) == cm.report.trainable_sram_bytes
    logits = model.infer(train.x[:2])
    model.reset()
    assert model.export_params() == init
    model.import_params(trained)
    np.testing.assert_array_equal(model.infer(train.x[:2]), logits)
    with pytest.raises(Exception, match="expected"):
        model.import_params(trained[:-1])
    with pytest.raises(Exception, match="label"):
        model.train_step(train.x[0], 2)
    model.reset()
    # a whole (small) dataset through the generated code: the schedule reaches the C side
    seen = []
    losses = model.fit(train.x[:4], train.labels[:4], epochs=2, lr=lambda step: seen.append(step) or 1e-3)
    assert len(losses) == 2 and seen == list(range(8)) and model.step == 8
    assert 0.0 <= model.accuracy(train.x[:4], train.labels[:4]) <= 1.0
    model.reset()


def test_training_under_sanitizers(base_graph, tmp_path):
    """ASan + UBSan harness at 48x48 (fast): train 3 steps, export, infer; equal to NumPy. The scheme
    trains every weight-update family: the dense first conv on 2 of its 3 input channels, a whole
    depthwise, a partial depthwise and partial pointwise convs, and 12 biases."""
    from microtrain.sparse.scheme import UpdateScheme

    scheme = UpdateScheme(n_bias=12, weights={0: 0.5, 1: 1.0, 39: 0.25, 40: 0.5, 41: 0.125}, name="mixed")
    g = base_graph.with_resolution(48)
    cm = compile_model(g, scheme, out_dir=tmp_path, lr=1e-3, seed=SEED)
    exe = build_host_sanitized(tmp_path)
    rng = np.random.default_rng(3)
    x = rng.integers(-128, 128, size=(3, 48, 48, 3)).astype(np.int8)
    labels = [0, 1, 1]
    out = run_harness(exe, [("t", labels[i], x[i]) for i in range(3)] + [("e",), ("i", x[0])])
    n_params = cm.report.trainable_sram_bytes
    losses = np.frombuffer(out[:12], np.float32)
    blob, logits = out[12 : 12 + n_params], np.frombuffer(out[12 + n_params :], np.int8)
    gn = g.copy()
    tg = training_graph_for(gn, scheme)
    rt = TrainingRuntime(tg, seed=SEED)
    for i in range(3):
        loss = rt.train_step({gn.input: x[i : i + 1]}, np.array([labels[i]]), 1e-3, i)["loss"]
        assert abs(loss - losses[i]) <= 1e-5 * max(1.0, abs(loss))
    for item, arr in decode_params(blob, cm.program.meta["trainable_layout"]):
        np.testing.assert_array_equal(arr, graph_slice(gn, item))
    np.testing.assert_array_equal(logits, run_int8(gn, x[:1]).reshape(-1))


def test_stack_estimate_covers_the_deepest_call(built, tmp_path):
    """gcc -fstack-usage: entry point frame + deepest kernel frame + helper frame <= the planner's estimate
    (a conservative chain: kernels call only static helpers, except mt_block_grad_grouped_f32, which calls
    kernels, also through one static helper: its frame + that helper's + its deepest callee + that one's helper)."""
    from microtrain.budget import DEFAULT_SRAM_BUDGET, STACK_ESTIMATE

    cm, _ = built
    src = cm.out_dir
    objs = ["mt_model.c", "kernels/mt_forward_s8.c", "kernels/mt_backward_f32.c", "kernels/mt_backward_grouped_f32.c"]
    frames = {}
    for f in objs:
        out = tmp_path / (f.replace("/", "_") + ".o")
        subprocess.run(["gcc", "-std=c99", "-O2", "-ffp-contract=off", "-fstack-usage", f"-I{src}", f"-I{src}/kernels",
                        "-c", str(src / f), "-o", str(out)], check=True, capture_output=True)
        for line in out.with_suffix(".su").read_text().splitlines():
            loc, size, kind = line.split("\t")
            assert kind in ("static", "dynamic,bounded"), line  # no VLA / alloca anywhere
            frames[loc.split(":")[-1]] = int(size)
    api = max(v for k, v in frames.items() if k.startswith("mt_") and k in ("mt_train_step", "mt_infer"))
    grouped = frames.pop("mt_block_grad_grouped_f32")  # the one kernel that calls kernels (grouped_backward.py)
    kernels = max(v for k, v in frames.items() if k.startswith("mt_") and k not in ("mt_train_step", "mt_infer"))
    assert api + 2 * kernels <= STACK_ESTIMATE, (api, kernels)
    # its chain: the kernels it calls (kernels/mt_backward_grouped_f32.c) and their helpers in mt_backward_f32.c
    callees = ("mt_conv_grad_input_pointwise_f32", "mt_conv_grad_input_pointwise_acc_f32", "mt_bias_update_f32",
               "mt_conv_grad_input_depthwise_f32", "mt_conv_weight_update_pointwise_f32")
    helpers = ("mt_pw_grad_in_block", "mt_dw_grad_in_dense", "mt_dw_grad_in", "mt_saved_chan")
    # masked_bias_update, its static helper, calls mt_bias_update_f32: counted when gcc does not inline it
    # (-O2 does; -Os and -O1 keep its frame)
    bridge = frames.get("masked_bias_update", 0)
    chain = grouped + bridge + max(frames.get(c, 0) for c in callees) + max(frames.get(h, 0) for h in helpers)
    assert api + chain <= STACK_ESTIMATE, (api, grouped, chain)


def _dense_graph():
    """input 10x10x4 -> dense 3x3 conv (4->6) -> dense 3x3 stride-2 conv (6->5) -> add-free pool -> 1x1
    classifier (5->3): exercises the dense transposed conv (grad_input) no upstream model needs."""
    from microtrain.ir.graph import Graph, Node, QuantParams, TensorSpec
    from microtrain.ir.validate import infer_shapes, validate

    rng = np.random.default_rng(11)

    def conv(name, x, y, o, i, k, stride, role=None):
        attrs = {"kernel": (k, k), "stride": stride, "padding": (k - 1) // 2, "groups": 1}
        if role:
            attrs["role"] = role
        params = {"weight": rng.integers(-127, 128, (o, i, k, k)).astype(np.int8),
                  "bias": rng.integers(-2000, 2000, o).astype(np.int32),
                  "w_scales": rng.uniform(0.002, 0.01, o).astype(np.float32)}
        return Node(name, "conv2d", [x], y, attrs, params)

    q = lambda s, z: QuantParams(s, z)  # noqa: E731
    tensors = {"input": TensorSpec("input", (10, 10, 4), "int8", q(0.02, 3)),
               "a": TensorSpec("a", (0, 0, 0), "int8", q(0.05, -128)),
               "b": TensorSpec("b", (0, 0, 0), "int8", q(0.08, 4)),
               "p": TensorSpec("p", (0, 0, 0), "int8", q(0.08, 4)),
               "logits": TensorSpec("logits", (0, 0, 0), "int8", q(0.125, 0))}
    nodes = [conv("conv_a", "input", "a", 6, 4, 3, 1), conv("conv_b", "a", "b", 5, 6, 3, 2),
             Node("pool", "global_avg_pool", ["b"], "p"), conv("classifier", "p", "logits", 3, 5, 1, 1, "classifier")]
    g = Graph("dense-test", "int8", "input", "logits", tensors, nodes)
    return validate(infer_shapes(g))


def test_dense_conv_backward_matches_numpy(tmp_path):
    from microtrain.sparse.scheme import UpdateScheme

    g = _dense_graph()
    scheme = UpdateScheme(n_bias=2, weights={0: 0.5, 1: 1.0}, name="dense")
    cm = compile_model(g, scheme, out_dir=tmp_path, lr=1e-2, seed=SEED)
    model = HostModel(build_host(tmp_path, opt="-O1"))
    gn = g.copy()
    rt = TrainingRuntime(training_graph_for(gn, scheme), seed=SEED)
    assert rt.tg.steps_of("conv_grad_input")  # conv_b sends a gradient back to conv_a through a dense conv
    x = np.random.default_rng(4).integers(-128, 128, size=(6, 10, 10, 4)).astype(np.int8)
    for i in range(6):
        loss_c = model.train_step(x[i], i % 3)
        loss_n = rt.train_step({gn.input: x[i : i + 1]}, np.array([i % 3]), 1e-2, i)["loss"]
        assert abs(loss_c - loss_n) <= 1e-5 * max(1.0, abs(loss_n))
    diff = _param_diffs(model, cm.program.meta["trainable_layout"], gn)
    assert diff.max() <= 1 and (diff > 0).mean() <= 0.01  # the documented bound (sum order only)
    changed = _param_diffs_from(g, gn, cm.program.meta["trainable_layout"])
    assert changed > 0  # training moved the parameters: the comparison is not vacuous


def _param_diffs_from(g0, g1, layout) -> int:
    return int(sum((graph_slice(g0, item) != graph_slice(g1, item)).sum() for item in layout))


@pytest.mark.parametrize("name", ["mbv2-w0.35", "proxyless-w0.3"])
def test_other_models_train_like_numpy(name, tmp_path):
    """The same engine on the other two upstream models (3-class head, 40x40 for speed): a scheme with
    partial pointwise weights, a whole block's weights and 15 biases; 3 steps equal NumPy."""
    from microtrain.frontends.mcunet_pkl import load_mcunet_pkl
    from microtrain.quant.head import replace_head
    from microtrain.sparse.scheme import UpdateScheme

    g = replace_head(load_mcunet_pkl(model_path(name)), 3).with_resolution(40)
    n = len(g.indexed_convs())
    scheme = UpdateScheme(n_bias=15, weights={n - 6: 1.0, n - 3: 0.5, n - 2: 0.25}, name="test")
    cm = compile_model(g, scheme, out_dir=tmp_path, lr=1e-3, seed=SEED)
    model = HostModel(build_host(tmp_path, opt="-O1"))
    gn = g.copy()
    rt = TrainingRuntime(training_graph_for(gn, scheme), seed=SEED)
    x = np.random.default_rng(5).integers(-128, 128, size=(3, 40, 40, 3)).astype(np.int8)
    for i in range(3):
        loss_c = model.train_step(x[i], i)
        loss_n = rt.train_step({gn.input: x[i : i + 1]}, np.array([i]), 1e-3, i)["loss"]
        assert abs(loss_c - loss_n) <= 1e-5 * max(1.0, abs(loss_n))
    diff = _param_diffs(model, cm.program.meta["trainable_layout"], gn)
    assert diff.max() <= 1 and (diff > 0).mean() <= 0.0005  # the documented bound; measured exact
    np.testing.assert_array_equal(model.infer(x), run_int8(gn, x).reshape(3, -1))


def test_inplace_depthwise_training_matches_numpy(images, tmp_path):
    """mbv2-w0.35 with a 49 KB-like scheme does not fit 256 KB as planned; the planner then runs its first
    stride-2 depthwise conv in place (the peak of both programs), and it fits; 30 steps agree exactly.
    A model that fits (proxyless-w0.3, same scheme shape) keeps the plain (SIMD on the device) kernels."""
    from microtrain.frontends.mcunet_pkl import load_mcunet_pkl
    from microtrain.budget import DEFAULT_SRAM_BUDGET, STACK_ESTIMATE
    from microtrain.runtime.datasets import load_image_folder
    from microtrain.quant.head import replace_head

    graph = replace_head(load_mcunet_pkl(model_path("mbv2-w0.35")), 2)
    scheme = like_mcunet_49kb(graph)
    cm = compile_model(graph, scheme, out_dir=tmp_path, lr=1e-3, seed=SEED)
    for steps in (cm.program.infer_steps, cm.program.train_steps):
        assert any(s.kernel == "mt_conv_depthwise_inplace_s8" for s in steps)
    plain = compile_model(graph, scheme, lr=1e-3, seed=SEED, sram_budget=None)
    assert not any(s.kernel == "mt_conv_depthwise_inplace_s8" for s in plain.program.train_steps)
    assert cm.report.arena_bytes < plain.report.arena_bytes
    budget = DEFAULT_SRAM_BUDGET - STACK_ESTIMATE
    assert cm.report.training_sram_bytes <= budget < plain.report.training_sram_bytes
    other = replace_head(load_mcunet_pkl(model_path("proxyless-w0.3")), 2)
    fits = compile_model(other, like_mcunet_49kb(other), lr=1e-3)
    assert fits.report.training_sram_bytes <= budget
    assert not any(s.kernel == "mt_conv_depthwise_inplace_s8" for s in fits.program.train_steps)
    _check_plan_matches_object(cm, tmp_path)

    model = HostModel(build_host(tmp_path))
    root = hymenoptera()
    res = graph.resolution
    train = load_image_folder(root / "train", res)
    val = load_image_folder(root / "val", res, classes=train.classes)
    order = np.random.default_rng(1).permutation(len(train.labels))[:30]
    x, y = train.x[order], train.labels[order]
    g, rt, tg, prefix = _numpy_runtime(graph, scheme, x)
    for i in range(len(x)):
        loss_c = model.train_step(x[i], int(y[i]))
        loss_n = rt.train_step(_feeds(tg, prefix, i), y[i : i + 1], 1e-3, i)["loss"]
        assert abs(loss_c - loss_n) <= 1e-5 * max(1.0, abs(loss_n))
    diff = _param_diffs(model, cm.program.meta["trainable_layout"], g)
    assert diff.max() == 0, f"{(diff > 0).sum()} of {diff.size} trained parameters differ"
    np.testing.assert_array_equal(model.infer(val.x[:40]), run_int8(g, val.x[:40]).reshape(40, -1))

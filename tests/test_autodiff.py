"""The whole training graph (autodiff + executor) against torch autograd, on a small network with a
strided conv, a residual whose input fans out to two readers, depthwise, pooling and a classifier;
pruning; QAS and rounding of the update."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import small_graph

from microtrain.autodiff import build_training_graph
from microtrain.ir.graph import Graph
from microtrain.quant.arith import conv_multipliers
from microtrain.quant.dequantize import dequantize_graph, dequantize_input
from microtrain.quant.update import fmix32, rounding_hash, uniform_from_hash
from microtrain.runtime.training import TrainingRuntime
from microtrain.sparse.scheme import TrainSpec

F = torch.nn.functional


TRAINED = {
    "conv0": TrainSpec("conv0", True, None),  # bias only: conv0's output fans out to pw1 and the skip
    "pw1": TrainSpec("pw1", True, (1, 4, 6)),
    "dw": TrainSpec("dw", False, (0, 3, 5, 9)),
    "pw2": TrainSpec("pw2", True, tuple(range(16))),
    "head": TrainSpec("head", True, tuple(range(8))),
}


def batch(seed=1, n=4):
    rng = np.random.default_rng(seed)
    return rng.integers(-128, 128, (n, 8, 8, 3)).astype(np.int8), rng.integers(0, 3, n)


def torch_grads(graph: Graph, x, labels, int8: bool):
    """Autograd through a torch re-implementation: int8 codes with straight-through rint (int8), or
    the dequantised float graph with clamps (float)."""
    params, vals = {}, {}
    vals[graph.input] = torch.tensor(x.transpose(0, 3, 1, 2), dtype=torch.float64)
    for n in graph.nodes:
        if n.op == "conv2d":
            w = torch.tensor(n.params["weight"].astype(np.float64), requires_grad=True)
            b = torch.tensor(n.params["bias"].astype(np.float64), requires_grad=True)
            params[n.name] = (w, b)
            xin = vals[n.inputs[0]]
            if int8:
                xq, yq = graph.tensors[n.inputs[0]].quant, graph.tensors[n.output].quant
                eff = torch.tensor(conv_multipliers(xq.scale, n.params["w_scales"], yq.scale).astype(np.float64))
                acc = F.conv2d(xin - xq.zero_point, w, None, n.attrs["stride"], n.attrs["padding"], 1, n.attrs["groups"])
                t = (acc + b[:, None, None]) * eff[:, None, None]
                vals[n.output] = torch.clamp(t + (torch.round(t) - t).detach() + yq.zero_point, -128, 127)
            else:
                lo, hi = n.attrs["clamp"]
                y = F.conv2d(xin, w, b, n.attrs["stride"], n.attrs["padding"], 1, n.attrs["groups"])
                vals[n.output] = torch.clamp(y, lo, hi)
        elif n.op == "add":
            a, c = (vals[t] for t in n.inputs)
            if int8:
                q1, q2, qy = (graph.tensors[t].quant for t in (*n.inputs, n.output))
                t = ((a - q1.zero_point) * q1.scale + (c - q2.zero_point) * q2.scale) / qy.scale
                vals[n.output] = torch.clamp(t + (torch.round(t) - t).detach() + qy.zero_point, -128, 127)
            else:
                vals[n.output] = torch.clamp(a + c, *n.attrs["clamp"])
        else:
            m = vals[n.inputs[0]].mean(dim=(2, 3), keepdim=True)
            vals[n.output] = m + (torch.round(m) - m).detach() if int8 else m
    out = vals[graph.output].reshape(len(labels), -1)
    if int8:
        q = graph.output_spec.quant
        out = (out - q.zero_point) * q.scale
    F.cross_entropy(out, torch.tensor(labels)).backward()
    return {k: (w.grad.numpy(), b.grad.numpy()) for k, (w, b) in params.items()}


def compare(ours, ref, graph):
    for name, spec in TRAINED.items():
        gw_ref, gb_ref = ref[name]
        if spec.bias:
            np.testing.assert_allclose(ours[f"grad:{name}.bias"], gb_ref, rtol=1e-4, atol=1e-6 * np.abs(gb_ref).max())
        else:
            assert f"grad:{name}.bias" not in ours
        if spec.channels is None:
            assert f"grad:{name}.weight" not in ours
            continue
        ch = list(spec.channels)
        depthwise = graph.node(name).attrs["groups"] > 1
        want = gw_ref[ch] if depthwise else gw_ref[:, ch]
        np.testing.assert_allclose(ours[f"grad:{name}.weight"], want, rtol=1e-4, atol=1e-6 * np.abs(want).max() + 1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_float_training_graph_matches_torch(seed):
    g = dequantize_graph(small_graph(seed))
    x, labels = batch(seed)
    rt = TrainingRuntime(build_training_graph(g, TRAINED))
    ours = rt.gradients({g.input: dequantize_input(g, x)}, labels)
    compare(ours, torch_grads(g, dequantize_input(g, x), labels, int8=False), g)


@pytest.mark.parametrize("seed", [0, 1])
def test_int8_training_graph_matches_torch_straight_through(seed):
    g = small_graph(seed)
    x, labels = batch(seed)
    tg = build_training_graph(g, TRAINED)
    rt = TrainingRuntime(tg)
    ours = rt.gradients({g.input: x}, labels)
    compare(ours, torch_grads(g, x, labels, int8=True), g)


def test_fanout_gradients_accumulate_and_prefix_is_pruned():
    tg = build_training_graph(small_graph(), TRAINED)
    sums = tg.steps_of("grad_sum")
    assert [s.outputs for s in sums] == [["grad:c0"]]
    assert sorted(sums[0].inputs) == ["grad:c0@pw1", "grad:c0@res"]
    kinds = {(s.kind, s.node) for s in tg.steps}
    assert ("conv_grad_input", "conv0") not in kinds  # nothing upstream of conv0 is trained
    assert ("conv_grad_weight", "conv0") not in kinds and ("conv_grad_bias", "dw") not in kinds
    # a frozen prefix: with only the head trained, nothing before it has a backward step
    head_only = build_training_graph(small_graph(), {"head": TRAINED["head"]})
    assert head_only.n_prefix == 6 and head_only.boundary == ["pooled"]
    assert {s.node for s in head_only.steps if s.kind != "forward"} <= {"", "head"}
    assert not head_only.steps_of("conv_grad_input")


def test_update_applies_qas_rounding_and_saturation():
    g = small_graph()
    x, labels = batch()
    tg = build_training_graph(g, TRAINED, qas=True, rounding="nearest")
    grads = TrainingRuntime(build_training_graph(g.copy(), TRAINED)).gradients({g.input: x}, labels)
    before = g.copy()
    lr = 0.05
    TrainingRuntime(tg).train_step({g.input: x}, labels, lr, step=0)
    pw2 = before.node("pw2")
    sw = pw2.params["w_scales"].astype(np.float64)
    delta = -lr * grads["grad:pw2.weight"] / (sw**2)[:, None, None, None].astype(np.float32)
    want = np.clip(pw2.params["weight"] + np.rint(delta), -128, 127)
    np.testing.assert_array_equal(g.node("pw2").params["weight"], want)
    sx = before.tensors["d"].quant.scale
    dbias = -lr * grads["grad:pw2.bias"] / ((sx * sw) ** 2).astype(np.float32)
    np.testing.assert_array_equal(g.node("pw2").params["bias"], pw2.params["bias"] + np.rint(dbias))
    # in real units the QAS step is the float SGD step lr * dL/dW_real = lr * grad_q / s_w
    real_step = (g.node("pw2").params["weight"].astype(np.float64) - pw2.params["weight"]) * sw[:, None, None, None]
    free = np.abs(want) < 127
    np.testing.assert_allclose(real_step[free], (-lr * grads["grad:pw2.weight"] / sw[:, None, None, None])[free],
                               atol=0.5 * sw.max() + 1e-9)
    # untrained channels of pw1 and dw's frozen weights are untouched
    untrained = [c for c in range(8) if c not in TRAINED["pw1"].channels]
    np.testing.assert_array_equal(g.node("pw1").params["weight"][:, untrained], before.node("pw1").params["weight"][:, untrained])
    np.testing.assert_array_equal(g.node("dw").params["bias"], before.node("dw").params["bias"])


def fmix32_ref(h):
    h &= 0xFFFFFFFF
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & 0xFFFFFFFF
    return h ^ (h >> 16)


def test_stochastic_rounding_hash_is_the_documented_one_and_unbiased():
    for seed, step, pid, idx in [(0, 0, 0, 0), (7, 123, 4, 99999), (2**32 - 1, 5, 1, 3)]:
        want = fmix32_ref(fmix32_ref(fmix32_ref(fmix32_ref(seed) ^ step) ^ pid) ^ idx)
        assert int(rounding_hash(seed, step, pid, np.array([idx]))[0]) == want
    assert int(fmix32(np.uint64(1))) == fmix32_ref(1)
    # E[floor(delta + u)] = delta: the mean of many elements' rounded steps approaches delta
    u = uniform_from_hash(rounding_hash(3, 0, 0, np.arange(200000)))
    assert 0 <= u.min() and u.max() < 1
    for delta in (0.3, -0.7, 2.25):
        assert np.floor(np.float32(delta) + u).mean() == pytest.approx(delta, abs=0.01)

"""reference.to_torch: the float torch module of a Graph agrees with the NumPy runtime."""
from __future__ import annotations

import numpy as np
import pytest

import torch  # a test requirement: CI installs it

from microtrain.ir.graph import Graph, Node, TensorSpec
from microtrain.reference import to_torch
from microtrain.runtime.forward import dequantize_logits, run_float, run_int8


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny convs: with 2 threads on a shared 2-core machine, OpenMP spin-waits dominate."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def dequantized_float_graph(g: Graph) -> Graph:
    """The int8 graph's float equivalent as a float32 Graph (ReLU6 where the output zero point is -128),
    built independently of to_torch so the two can be compared."""
    nodes = []
    for n in g.nodes:
        params, attrs = {}, dict(n.attrs)
        if n.op == "conv2d":
            ws = n.params["w_scales"].astype(np.float64)
            xs = g.tensors[n.inputs[0]].quant.scale
            params = {"weight": (n.params["weight"] * ws[:, None, None, None]).astype(np.float32),
                      "bias": (n.params["bias"] * xs * ws).astype(np.float32)}
            attrs["activation"] = "relu6" if g.tensors[n.output].quant.zero_point == -128 else None
        nodes.append(Node(n.name, n.op, list(n.inputs), n.output, attrs, params))
    tensors = {k: TensorSpec(k, t.shape, "float32", None) for k, t in g.tensors.items()}
    return Graph(g.name + "-float", "float32", g.input, g.output, tensors, nodes)


def real_input(g, n=2, seed=0):
    x_q = np.random.default_rng(seed).integers(-128, 128, (n, *g.input_spec.shape)).astype(np.int8)
    q = g.input_spec.quant
    return x_q, (x_q.astype(np.float32) - q.zero_point) * np.float32(q.scale)


def test_float_graph_matches_run_float(upstream_graph):
    g = upstream_graph.with_resolution(64)
    fg = dequantized_float_graph(g)
    _, x = real_input(g)
    want = run_float(fg, x).reshape(len(x), -1)
    model = to_torch(fg)
    with torch.no_grad():
        got = model(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    # the int8 graph with clamp="relu6" is the same network
    with torch.no_grad():
        got8 = to_torch(g, clamp="relu6")(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    np.testing.assert_allclose(got8, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_dequantized_module_tracks_int8_logits(upstream_graph):
    """The float equivalent differs from the int8 net only by rounding: logits correlate closely."""
    g = upstream_graph
    x_q, _ = real_input(g, n=4, seed=1)
    ref = dequantize_logits(g, run_int8(g, x_q).reshape(len(x_q), -1))
    model = to_torch(g)
    with torch.no_grad():
        got = model(model.input_from_int8(x_q)).numpy()
    assert got.shape == ref.shape == (4, 1000)
    assert np.corrcoef(got.ravel(), ref.ravel())[0, 1] > 0.98


def test_module_is_trainable():
    from conftest import model_path
    from microtrain.frontends.mcunet_pkl import load_mcunet_pkl

    model = to_torch(load_mcunet_pkl(model_path("mcunet-5fps")).with_resolution(32))
    params = list(model.parameters())
    assert len(params) == 2 * 43 and all(p.requires_grad for p in params)
    loss = model(torch.zeros(2, 3, 32, 32)).logsumexp(1).mean()
    loss.backward()
    assert model.convs["classifier"].weight.grad is not None

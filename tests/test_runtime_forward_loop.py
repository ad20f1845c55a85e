"""The vectorised int8 runtime equals a plain-loop implementation of the arithmetic note, bit for bit."""
from __future__ import annotations

import numpy as np
import pytest

import loop_reference
from microtrain.runtime.forward import run_int8

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
RES = 32  # the models are resolution-agnostic; small keeps the loops fast


def random_input(n, res, seed):
    return np.random.default_rng(seed).integers(-128, 128, (n, res, res, 3)).astype(np.int8)


def assert_all_tensors_equal(graph, fast, slow):
    for t in slow:
        assert fast[t].dtype == np.int8 and fast[t].shape == slow[t].shape, t
        diff = np.count_nonzero(fast[t] != slow[t])
        assert diff == 0, f"{graph.name}: tensor {t}: {diff} of {slow[t].size} values differ from the loop reference"


def dead_channels(graph):
    return {n.name: np.flatnonzero((n.params["bias"] == INT32_MIN) | (n.params["bias"] == INT32_MAX))
            for n in graph.convs()}


def test_every_tensor_equals_loop_reference(upstream_graph, monkeypatch):
    import microtrain.ops.conv as conv_op

    g = upstream_graph.with_resolution(RES)
    x = random_input(3, RES, seed=len(g.nodes))
    slow = loop_reference.run(g, x, keep=True)
    assert_all_tensors_equal(g, run_int8(g, x, keep=True), slow)
    monkeypatch.setattr(conv_op, "CHUNK_ELEMS", 1)  # the batch-chunked paths (one sample per chunk) too
    assert_all_tensors_equal(g, run_int8(g, x, keep=True), slow)
    assert np.unique(slow[g.output]).size > 50, "degenerate logits would make the comparison meaningless"


def test_upstream_models_do_have_dead_channels(upstream_graph):
    """The exactness test above runs through real INT32-extreme biases (mbv2-w0.35 has none)."""
    found = {k: v for k, v in dead_channels(upstream_graph).items() if len(v)}
    if upstream_graph.name == "mbv2-w0.35":
        assert not found
    else:
        assert found, f"{upstream_graph.name}: expected dead channels with INT32-extreme biases"


@pytest.mark.parametrize("layer", ["first_conv", "blocks.1.pointwise1", "blocks.1.depthwise", "blocks.2.pointwise2"])
def test_extreme_bias_saturates_without_overflow(mcunet, layer):
    """Live channels (nonzero weights, normal scales) given INT32_MAX / INT32_MIN biases: an int32
    "acc + bias" would wrap around; the arithmetic adds the bias in float32, so the output saturates."""
    g = mcunet.with_resolution(RES)
    node = g.node(layer)
    x = random_input(2, RES, seed=7)
    x_in = run_int8(g, x, keep=True)[node.inputs[0]]  # the layer's input does not depend on its bias
    acc = loop_reference.conv_acc(x_in, node.params["weight"], node.attrs["stride"], node.attrs.get("groups", 1),
                                  g.tensors[node.inputs[0]].quant.zero_point)
    # the channels where an int32 "acc + bias" would wrap most often
    up = int(np.argmax((acc > 0).sum(axis=(0, 1, 2))))
    down = int(np.argmax((acc < 0).sum(axis=(0, 1, 2))))
    assert up != down and acc[..., up].max() > 0 and acc[..., down].min() < 0
    node.params["bias"][up], node.params["bias"][down] = INT32_MAX, INT32_MIN
    fast = run_int8(g, x, keep=True)
    assert np.all(fast[node.output][..., up] == 127), "INT32_MAX bias must saturate high, not wrap"
    assert np.all(fast[node.output][..., down] == -128), "INT32_MIN bias must saturate low, not wrap"
    assert_all_tensors_equal(g, fast, loop_reference.run(g, x, keep=True))


@pytest.mark.parametrize("kernel,c,groups", [(1, 600, 1), (3, 80, 1), (3, 600, 600)])
def test_accumulator_exact_beyond_float32_range(kernel, c, groups):
    """Sums past 2**24 (wide layers of extreme, same-sign weights) must use a wider exact accumulator."""
    from microtrain.ops.conv import conv_accumulate, exact_dtype

    rng = np.random.default_rng(5)
    x_q = (127 - (rng.random((2, 5, 5, c)) < 0.3)).astype(np.int8)  # 127 or 126: shifted 255 or 254
    weight = (127 - rng.integers(0, 3, (c, c // groups, kernel, kernel))).astype(np.int8)
    attrs = {"kernel": (kernel, kernel), "stride": 1, "padding": (kernel - 1) // 2, "groups": groups}
    xs = x_q.astype(np.float32) + np.float32(128)
    want = loop_reference.conv_acc(x_q, weight, 1, groups, -128)
    assert np.array_equal(conv_accumulate(xs, weight, attrs).astype(np.int64), want)
    if groups == 1:  # the case is real: float32 could not hold these sums
        assert np.abs(want).max() > 2**24 and np.any(want.astype(np.float32).astype(np.int64) != want)
        assert exact_dtype(xs, weight.reshape(c, -1)) == np.float64

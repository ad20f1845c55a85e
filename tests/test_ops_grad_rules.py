"""Each gradient rule against torch autograd on the dequantised float equivalent (random shapes,
strides, groups, zero points). Rounding is straight-through; the clamp is the recorded mask."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from microtrain.ir.graph import Node, QuantParams
from microtrain.ops import add as add_op
from microtrain.ops import conv as conv_op
from microtrain.ops import pool as pool_op
from microtrain.ops.loss import grad_int8_logits
from microtrain.quant.arith import conv_multipliers

SETTINGS = settings(max_examples=12, deadline=None)


def close(ours, ref, tol=2e-4, floor=0.0):
    """Equal up to float32 rounding relative to the largest reference value (or `floor`)."""
    ref = np.asarray(ref, dtype=np.float64)
    scale = max(np.abs(ref).max(), 1e-12)
    np.testing.assert_allclose(np.asarray(ours, np.float64), ref, rtol=0, atol=max(tol * scale, floor))


conv_cases = st.fixed_dictionaries({
    "n": st.integers(1, 2), "hw": st.integers(3, 7), "cin": st.integers(1, 6), "cout": st.integers(1, 6),
    "kind": st.sampled_from(["dense", "depthwise", "pointwise"]), "k": st.sampled_from([1, 3, 5]),
    "stride": st.sampled_from([1, 2]), "x_zero": st.integers(-128, 127), "y_zero": st.integers(-128, 127),
    "seed": st.integers(0, 2**31 - 1),
})


def make_conv(c):
    rng = np.random.default_rng(c["seed"])
    cin, cout, k = c["cin"], c["cout"], c["k"]
    if c["kind"] == "pointwise":
        k = 1
    if c["kind"] == "depthwise":
        cin = cout = max(cin, 2)
        groups, ig = cin, 1
    else:
        groups, ig = 1, cin
    node = Node("c", "conv2d", ["x"], "y", {"kernel": (k, k), "stride": c["stride"], "padding": (k - 1) // 2,
                                           "groups": groups})
    node.params = {
        "weight": rng.integers(-127, 128, (cout, ig, k, k)).astype(np.int8),
        "bias": rng.integers(-3000, 3000, cout).astype(np.int32),
        "w_scales": rng.uniform(0.002, 0.02, cout).astype(np.float32),
    }
    xq = QuantParams(float(rng.uniform(0.01, 0.05)), c["x_zero"])
    # choose y_scale so that a good share of outputs stays inside the clamp range
    yq = QuantParams(float(rng.uniform(0.02, 0.3) * np.sqrt(ig * k * k)), c["y_zero"])
    x = rng.integers(-128, 128, (c["n"], c["hw"], c["hw"], cin)).astype(np.int8)
    return node, x, xq, yq, rng


@SETTINGS
@given(conv_cases)
def test_conv_rules_match_torch(c):
    from microtrain.ir.graph import Graph, TensorSpec
    from microtrain.runtime.training import forward_node

    node, x, xq, yq, rng = make_conv(c)
    g = Graph("t", "int8", "x", "y", {"x": TensorSpec("x", x.shape[1:], "int8", xq),
                                       "y": TensorSpec("y", (0, 0, 0), "int8", yq)}, [node])
    y, mask = forward_node(g, node, [x], save_mask=True)
    assert np.array_equal(y, conv_op.forward_int8(node, x, xq, yq))  # the masked forward is the forward
    G = rng.standard_normal(y.shape).astype(np.float32)
    W, sw = node.params["weight"], node.params["w_scales"]
    eff = conv_multipliers(xq.scale, sw, yq.scale)
    cin = x.shape[-1]
    channels = tuple(sorted(rng.choice(cin if c["kind"] == "depthwise" else W.shape[1],
                                       size=max(1, cin // 2), replace=False).tolist()))
    g_acc = conv_op.grad_accumulator(G * np.float32(yq.scale), mask, eff)
    xs = conv_op.shifted_input(x, xq.zero_point)
    gx = conv_op.grad_input(g_acc, W, node.attrs, x.shape[1:])
    gw = conv_op.grad_weight(xs, g_acc, W.shape, node.attrs, channels)
    gb = conv_op.grad_bias(g_acc)

    # torch: real values, y_real = conv(x_real, W_real) + b_real, clamp's derivative = the mask
    xr = torch.tensor((xs * np.float32(xq.scale)).transpose(0, 3, 1, 2), dtype=torch.float64, requires_grad=True)
    sw64 = sw.astype(np.float64)
    wr = torch.tensor(W.astype(np.float64) * sw64[:, None, None, None], requires_grad=True)
    br = torch.tensor(node.params["bias"].astype(np.float64) * xq.scale * sw64, requires_grad=True)
    yr = torch.nn.functional.conv2d(xr, wr, br, stride=node.attrs["stride"], padding=node.attrs["padding"],
                                    groups=node.attrs["groups"])
    m = torch.tensor(mask.transpose(0, 3, 1, 2), dtype=torch.float64)
    (yr * m * torch.tensor(G.transpose(0, 3, 1, 2), dtype=torch.float64)).sum().backward()

    close(gx, xr.grad.numpy().transpose(0, 2, 3, 1) * xq.scale)  # d/dq_x = s_x d/dx_real
    gw_ref = wr.grad.numpy() * sw64[:, None, None, None]  # d/dWq = s_w d/dW_real
    gw_ref = gw_ref[list(channels)] if c["kind"] == "depthwise" else gw_ref[:, list(channels)]
    close(gw, gw_ref)
    close(gb, br.grad.numpy() * xq.scale * sw64)

    # the mask is the float clamp's derivative except within rounding distance of the range ends
    pre = yr.detach().numpy().transpose(0, 2, 3, 1) / yq.scale + yq.zero_point
    inside = (pre >= -128) & (pre <= 127)
    far = (np.abs(pre + 128) > 0.51) & (np.abs(pre - 127) > 0.51)
    assert np.array_equal(mask[far], inside[far])


@SETTINGS
@given(st.integers(1, 3), st.integers(1, 5), st.integers(-128, 127), st.integers(-128, 127),
       st.integers(-128, 127), st.integers(0, 2**31 - 1))
def test_add_rule_matches_torch(n, c, z1, z2, zy, seed):
    rng = np.random.default_rng(seed)
    q1 = rng.integers(-128, 128, (n, 3, 3, c)).astype(np.int8)
    q2 = rng.integers(-128, 128, (n, 3, 3, c)).astype(np.int8)
    s1, s2, sy = (float(v) for v in rng.uniform(0.01, 0.1, 3))
    from microtrain.quant.arith import add_preclamp

    r = add_preclamp(q1, z1, s1, q2, z2, s2, sy, zy)
    mask = (r >= -128) & (r <= 127)
    G = rng.standard_normal(q1.shape).astype(np.float32)
    g1 = add_op.grad_addend(G * np.float32(sy), mask, np.float32(s1 / sy))
    g2 = add_op.grad_addend(G * np.float32(sy), mask, np.float32(s2 / sy))
    a = torch.tensor((q1.astype(np.float64) - z1) * s1, requires_grad=True)
    b = torch.tensor((q2.astype(np.float64) - z2) * s2, requires_grad=True)
    ((a + b) * torch.tensor(mask, dtype=torch.float64) * torch.tensor(G, dtype=torch.float64)).sum().backward()
    close(g1, a.grad.numpy() * s1)
    close(g2, b.grad.numpy() * s2)


@SETTINGS
@given(st.integers(1, 3), st.integers(1, 6), st.integers(1, 6), st.integers(0, 2**31 - 1))
def test_pool_rule_matches_torch(n, hw, c, seed):
    rng = np.random.default_rng(seed)
    x = torch.tensor(rng.standard_normal((n, hw, hw, c)), requires_grad=True)
    G = rng.standard_normal((n, 1, 1, c)).astype(np.float32)
    (x.mean(dim=(1, 2), keepdim=True) * torch.tensor(G, dtype=torch.float64)).sum().backward()
    close(pool_op.grad_input(G, (hw, hw, c)), x.grad.numpy())


@SETTINGS
@given(st.integers(1, 4), st.integers(2, 7), st.integers(-20, 20), st.integers(0, 2**31 - 1))
def test_loss_rule_matches_torch(n, k, zero, seed):
    rng = np.random.default_rng(seed)
    q = rng.integers(-128, 128, (n, k)).astype(np.int8)
    labels = rng.integers(0, k, n)
    scale = float(rng.uniform(0.02, 0.2))
    loss, g = grad_int8_logits(q, labels, scale, zero)
    z = torch.tensor((q.astype(np.float64) - zero) * scale, requires_grad=True)
    ref = torch.nn.functional.cross_entropy(z, torch.tensor(labels))
    ref.backward()
    assert loss == pytest.approx(ref.item(), rel=1e-5, abs=1e-6)  # float32 softmax: ~1e-7 absolute
    close(g, z.grad.numpy() * scale, floor=1e-6 * scale)

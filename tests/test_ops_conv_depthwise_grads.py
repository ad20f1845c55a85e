"""The depthwise gradient kernels of ops/conv.py (depthwise_grad_weight after ops/einsum_order.py, and
depthwise_grad_input on stride phases) are faster evaluations of the plain per-tap definitions below, which
the simulation used before: the results must be the same floats, bit for bit (stored accuracy results are
reused as long as the numbers do not change). Random shapes, strides, paddings, channel subsets and signed
zeros; the batch-chunked paths and einsum's 8192-position pieces too."""
from __future__ import annotations

import numpy as np
import pytest

from microtrain.ops import conv as conv_op
from microtrain.ops import einsum_order, sim_native


@pytest.fixture(autouse=True, params=["compiled", "numpy"])
def runtime(request, monkeypatch):
    """Every test twice: with the compiled kernels (ops/sim_native.py; a machine with gcc must have them) and
    with the NumPy code they replace."""
    if request.param == "numpy":
        monkeypatch.setattr(sim_native, "active", lambda: None)
    elif sim_native.lib() is None:
        import shutil
        assert shutil.which("gcc") is None, "gcc is here but the compiled depthwise backward was not built or refused"
        pytest.skip("no C compiler: only the NumPy code runs here")
    return request.param


def einsum_grad_weight(xs, g_acc, kh, kw, s, p, ch):
    """The previous definition: one np.einsum per tap over the gathered channels."""
    n, ho, wo, _ = g_acc.shape
    xp = conv_op.pad_nhwc(xs[..., ch], p)
    ga = g_acc[..., ch]
    out = np.empty((len(ch), 1, kh, kw), np.float32)
    for i in range(kh):
        for j in range(kw):
            out[:, 0, i, j] = np.einsum("nhwc,nhwc->c", xp[:, i : i + s * ho : s, j : j + s * wo : s, :], ga,
                                        dtype=np.float32)
    return out


def loop_grad_input(g_acc, wf, s, p, h, w, d=1):
    """The previous definition: per tap, add g_acc * w into the strided window of the padded gradient."""
    n, ho, wo, c = g_acc.shape
    _, kh, kw = wf.shape
    gxp = np.zeros((n, h + 2 * p, w + 2 * p, c), np.float32)
    for i in range(kh):
        for j in range(kw):
            gxp[:, i * d : i * d + s * ho : s, j * d : j * d + s * wo : s, :] += g_acc * wf[:, i, j]
    return gxp[:, p : p + h, p : p + w, :]


def same_bits(a, b):
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    assert a.shape == b.shape
    assert np.array_equal(a.view(np.uint32), b.view(np.uint32)), np.argwhere(a.view(np.uint32) != b.view(np.uint32))[:5]


def random_case(rng):
    k = int(rng.choice([1, 3, 5, 7]))
    s = int(rng.choice([1, 2]))
    p = int(rng.choice([(k - 1) // 2, 0]))
    h, w = int(rng.integers(max(1, k - 2 * p), 10)), int(rng.integers(max(1, k - 2 * p), 10))
    n, c = int(rng.integers(1, 6)), int(rng.integers(1, 41))
    attrs = {"kernel": (k, k), "stride": s, "padding": p, "groups": c}
    ho, wo = conv_op.out_hw(h, w, attrs)
    # integer-valued inputs as in int8 training (q - zero), some zeros; gradients of mixed magnitudes with
    # masked (+0) and negative-zero entries
    xs = rng.integers(-255, 256, (n, h, w, c)).astype(np.float32) * (rng.random((n, h, w, c)) > 0.2)
    g = (rng.standard_normal((n, ho, wo, c)) * np.exp(rng.uniform(-8, 4, (n, ho, wo, c)))).astype(np.float32)
    g[rng.random(g.shape) < 0.2] = 0.0
    g[rng.random(g.shape) < 0.05] = -0.0
    w8 = rng.integers(-128, 128, (c, 1, k, k)).astype(np.int8)
    return xs, g, w8, attrs, (h, w, c)


def test_depthwise_weight_gradient_is_the_einsum_bit_for_bit():
    """Any shape (most of these take the np.einsum fallback; the next test forces the reproduction)."""
    rng = np.random.default_rng(3)
    for _ in range(40):
        xs, g, w8, attrs, (h, w, c) = random_case(rng)
        k, s, p = attrs["kernel"][0], attrs["stride"], attrs["padding"]
        for ch in (tuple(range(c)), tuple(sorted(rng.choice(c, max(1, c // 2), replace=False))),
                   tuple(rng.permutation(c))):
            got = conv_op.grad_weight(xs, g, w8.shape, attrs, ch)
            same_bits(got, einsum_grad_weight(xs, g, k, k, s, p, np.asarray(ch)))


@pytest.mark.parametrize("out_hw", [(4, 4), (8, 4), (8, 8), (4, 8), (6, 8), (2, 16), (4, 32), (12, 4)])
@pytest.mark.parametrize("block", [einsum_order.BLOCK_ELEMS, 1])
def test_fast_weight_gradient_runs_and_is_the_einsum_bit_for_bit(monkeypatch, out_hw, block):
    """Output widths 4, 8 and multiples of 16 (every depthwise layer of the shipped models at 128 px) take
    the reproduction, not the fallback: strides 1 and 2, kernels 3/5/7, channel subsets and orders."""
    monkeypatch.setattr(einsum_order, "BLOCK_ELEMS", block)  # 1: one sample per buffer, lane sums carried
    rng = np.random.default_rng(sum(out_hw))
    ho, wo = out_hw
    for _ in range(6):
        k, s = int(rng.choice([3, 5, 7])), int(rng.choice([1, 2]))
        p = (k - 1) // 2
        h, w = s * (ho - 1) + k - 2 * p, s * (wo - 1) + k - 2 * p
        n, c = int(rng.integers(2, 7)), int(rng.integers(2, 50))  # (one channel: einsum coalesces, fallback)
        attrs = {"kernel": (k, k), "stride": s, "padding": p, "groups": c}
        assert conv_op.out_hw(h, w, attrs) == (ho, wo)
        xs = rng.integers(-255, 256, (n, h, w, c)).astype(np.float32)
        g = (rng.standard_normal((n, ho, wo, c)) * np.exp(rng.uniform(-8, 4, (n, ho, wo, c)))).astype(np.float32)
        g[rng.random(g.shape) < 0.2] = 0.0
        for ch in (np.arange(c), rng.permutation(c)[: max(2, c // 2)]):
            assert conv_op.depthwise_grad_weight(xs, g, ch, k, k, s, p) is not None
            same_bits(conv_op.grad_weight(xs, g, (c, 1, k, k), attrs, tuple(ch)), einsum_grad_weight(xs, g, k, k, s, p, ch))


@pytest.mark.parametrize("shape, fast", [((3, 64, 64, 4, 3, 1), True), ((10, 64, 64, 3, 3, 2), True),
                                         ((3, 96, 96, 2, 3, 1), False)])
def test_weight_gradient_matches_einsum_over_several_buffer_pieces(shape, fast):
    """More than 8192 positions per channel: einsum sums them in pieces, and so must the reproduction (a
    piece that is not whole samples, 96x96 = 9216 positions, takes the fallback)."""
    n, h, w, c, k, s = shape
    rng = np.random.default_rng(5)
    attrs = {"kernel": (k, k), "stride": s, "padding": (k - 1) // 2, "groups": c}
    ho, wo = conv_op.out_hw(h, w, attrs)
    xs = rng.integers(-255, 256, (n, h, w, c)).astype(np.float32)
    g = (rng.standard_normal((n, ho, wo, c)) * np.exp(rng.uniform(-8, 4, (n, ho, wo, c)))).astype(np.float32)
    ch = np.arange(c)
    assert len(conv_op.einsum_pieces(xs, g, ch, k, k, s, attrs["padding"])) > 1
    assert (conv_op.depthwise_grad_weight(xs, g, ch, k, k, s, attrs["padding"]) is not None) == fast
    same_bits(conv_op.grad_weight(xs, g, (c, 1, k, k), attrs, tuple(range(c))),
              einsum_grad_weight(xs, g, k, k, s, attrs["padding"], ch))


@pytest.mark.parametrize("shape", [(16, 4, 384, 5, 1), (16, 8, 160, 7, 1), (13, 8, 240, 7, 2), (16, 64, 16, 3, 1)])
def test_weight_gradient_of_mcunets_layers_at_batch_16(shape):
    """The shapes the sparse-update experiments train (batch 16, a short last batch): one buffer per tap holds
    many samples of the channel-rich small maps, a few of the large ones; still einsum's sums bit for bit."""
    n, h, c, k, s = shape
    rng = np.random.default_rng(h * c)
    p = (k - 1) // 2
    attrs = {"kernel": (k, k), "stride": s, "padding": p, "groups": c}
    ho, wo = conv_op.out_hw(h, h, attrs)
    xs = rng.integers(-255, 256, (n, h, h, c)).astype(np.float32)
    g = (rng.standard_normal((n, ho, wo, c)) * np.exp(rng.uniform(-8, 4, (n, ho, wo, c)))).astype(np.float32)
    g[rng.random(g.shape) < 0.2] = 0.0
    ch = np.arange(c)
    assert conv_op.depthwise_grad_weight(xs, g, ch, k, k, s, p) is not None
    same_bits(conv_op.grad_weight(xs, g, (c, 1, k, k), attrs, tuple(ch)), einsum_grad_weight(xs, g, k, k, s, p, ch))


@pytest.mark.parametrize("chunk", [conv_op.CHUNK_ELEMS, 1, 200])
def test_depthwise_input_gradient_is_the_tap_loop_bit_for_bit(monkeypatch, chunk):
    monkeypatch.setattr(conv_op, "CHUNK_ELEMS", chunk)
    rng = np.random.default_rng(100 + chunk)
    for _ in range(40):
        xs, g, w8, attrs, in_shape = random_case(rng)
        got = conv_op.grad_input(g, w8, attrs, in_shape)
        same_bits(got, loop_grad_input(g, w8[:, 0].astype(np.float32), attrs["stride"], attrs["padding"],
                                       *in_shape[:2]))


@pytest.mark.parametrize("chunk", [conv_op.CHUNK_ELEMS, 1])
def test_strided_dilated_input_gradient_on_phase_planes_is_the_tap_loop(monkeypatch, chunk):
    """Stride 2 and 3 (phase planes summed apart, then written back), dilation 1 and 2, odd and even sizes,
    a map narrower than the stride (an empty phase), signed zeros: the tap loop's floats bit for bit."""
    monkeypatch.setattr(conv_op, "CHUNK_ELEMS", chunk)
    rng = np.random.default_rng(31)
    for n, h, w, c, k, s, d in ((3, 9, 8, 5, 3, 2, 1), (2, 12, 11, 7, 5, 2, 2), (2, 10, 10, 4, 3, 3, 2),
                                (4, 1, 1, 3, 1, 2, 1), (16, 16, 16, 48, 7, 2, 1)):
        p = (conv_op.span(k, d) - 1) // 2
        attrs = {"kernel": (k, k), "stride": s, "padding": p, "groups": c, "dilation": d}
        ho, wo = conv_op.out_hw(h, w, attrs)
        g = (rng.standard_normal((n, ho, wo, c)) * np.exp(rng.uniform(-8, 4, (n, ho, wo, c)))).astype(np.float32)
        g[rng.random(g.shape) < 0.2] = -0.0
        w8 = rng.integers(-128, 128, (c, 1, k, k)).astype(np.int8)
        w8[0] = 0  # a channel of zero weights: -0.0 products summed from +0.0
        got = conv_op.grad_input(g, w8, attrs, (h, w, c))
        same_bits(got, loop_grad_input(g, w8[:, 0].astype(np.float32), s, p, h, w, d))


def test_a_numpy_that_sums_otherwise_keeps_np_einsum(monkeypatch):
    """The reproduction is checked against this NumPy once per process: were einsum's horizontal sum another
    (another build's SIMD), the check fails and grad_weight falls back to np.einsum, still bit for bit."""
    monkeypatch.setattr(einsum_order, "combine_lanes", lambda v: (v[0] + v[2]) + (v[1] + v[3]))
    conv_op.einsum_reproduced.cache_clear()
    try:
        assert not conv_op.einsum_reproduced()
        rng = np.random.default_rng(9)
        xs = rng.integers(-255, 256, (3, 8, 8, 6)).astype(np.float32)
        g = rng.standard_normal((3, 8, 8, 6)).astype(np.float32)
        attrs = {"kernel": (3, 3), "stride": 1, "padding": 1, "groups": 6}
        same_bits(conv_op.grad_weight(xs, g, (6, 1, 3, 3), attrs, tuple(range(6))),
                  einsum_grad_weight(xs, g, 3, 3, 1, 1, np.arange(6)))
    finally:
        conv_op.einsum_reproduced.cache_clear()

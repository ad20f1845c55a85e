"""The depthwise input-gradient kernel of ops/conv.py (depthwise_grad_input, on stride phases) is a faster
evaluation of the plain per-tap definition below, which the simulation used before: the results must be
the same floats, bit for bit (stored accuracy results are reused as long as the numbers do not change).
Random shapes, strides, paddings and signed zeros; the batch-chunked paths too."""
from __future__ import annotations

import numpy as np
import pytest

from microtrain.ops import conv as conv_op


def loop_grad_input(g_acc, wf, s, p, h, w):
    """The previous definition: per tap, add g_acc * w into the strided window of the padded gradient."""
    n, ho, wo, c = g_acc.shape
    _, kh, kw = wf.shape
    gxp = np.zeros((n, h + 2 * p, w + 2 * p, c), np.float32)
    for i in range(kh):
        for j in range(kw):
            gxp[:, i : i + s * ho : s, j : j + s * wo : s, :] += g_acc * wf[:, i, j]
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


@pytest.mark.parametrize("chunk", [conv_op.CHUNK_ELEMS, 1, 200])
def test_depthwise_input_gradient_is_the_tap_loop_bit_for_bit(monkeypatch, chunk):
    monkeypatch.setattr(conv_op, "CHUNK_ELEMS", chunk)
    rng = np.random.default_rng(100 + chunk)
    for _ in range(40):
        xs, g, w8, attrs, in_shape = random_case(rng)
        got = conv_op.grad_input(g, w8, attrs, in_shape)
        same_bits(got, loop_grad_input(g, w8[:, 0].astype(np.float32), attrs["stride"], attrs["padding"],
                                       *in_shape[:2]))

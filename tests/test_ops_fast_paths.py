"""The simulation's faster evaluations compute the same numbers as the definitions they replace, bit for bit
(stored accuracy results are reused while the numerics fingerprint stays; benchmarks/check_fine_tune_identical.py
checks whole fine-tunes): the depthwise forward's exact window sums through torch (ops/torch_sums.py), the
requantisation and clamp mask with fewer temporaries (quant/arith.py, ops/common.py), per-channel vectors tiled
along a row for few-channel maps (quant/arith.channel_rows) and the accumulator gradient and add's addend
gradients masked in place by a bit AND (ops/common.masked_gradient). Signed zeros, NaN and inf included."""
from __future__ import annotations

import warnings

import numpy as np

from microtrain.ops import add as add_op
from microtrain.ops import common, torch_sums
from microtrain.ops import conv as conv_op
from microtrain.quant import arith

F32 = np.float32


def same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape and a.dtype == b.dtype
    if a.dtype.kind == "f":
        a, b = a.view(np.uint32 if a.dtype == F32 else np.uint64), b.view(np.uint32 if b.dtype == F32 else np.uint64)
    assert np.array_equal(a, b), np.argwhere(a != b)[:5]


def test_torch_depthwise_sums_are_numpys_exact_sums():
    assert torch_sums.agrees(), "torch's depthwise conv2d is not exact here (torch is a test requirement)"
    rng = np.random.default_rng(14)
    for _ in range(30):
        k = int(rng.choice([1, 3, 5, 7]))
        s, d = int(rng.choice([1, 2])), int(rng.choice([1, 1, 2]))
        p = int(rng.choice([(k - 1) // 2, 0]))
        c, n = int(rng.integers(1, 50)), int(rng.integers(1, 5))
        h = int(rng.integers(conv_op.span(k, d), 20))
        zero = int(rng.integers(-128, 128))
        x_q = rng.integers(-128, 128, (n, h, h + 1, c)).astype(np.int8)
        w = rng.integers(-128, 128, (c, 1, k, k)).astype(np.int8)
        attrs = {"kernel": (k, k), "stride": s, "padding": p, "groups": c, "dilation": d}
        xs = conv_op.shifted_input(x_q, zero)
        ho, wo = conv_op.out_hw(h, h + 1, attrs)
        got = conv_op.conv_accumulate(xs, w, attrs)
        want = conv_op.depthwise_accumulate(xs, w[:, 0].astype(got.dtype), s, p, ho, wo, d)
        assert got.flags.c_contiguous and got.dtype == want.dtype
        assert np.array_equal(got, want)  # the same integers; a zero sum's sign may differ (-0.0 vs 0.0) ...
        bias = rng.integers(-3, 4, c).astype(np.int32)  # ... which no consumer sees: the bias (often 0) is added first
        eff = (rng.random(c) * 0.01).astype(F32)
        same_bits(arith.conv_preclamp(got, bias, eff, zero), arith.conv_preclamp(want, bias, eff, zero))
        same_bits(arith.requantize_conv(got, bias, eff, zero), arith.requantize_conv(want, bias, eff, zero))


def test_torch_sums_can_be_switched_off(monkeypatch):
    """MICROTRAIN_TORCH_SUMS=0 (or no torch): depthwise_accumulate says None and the NumPy loop runs."""
    monkeypatch.setenv("MICROTRAIN_TORCH_SUMS", "0")
    torch_sums._torch.cache_clear()
    try:
        xs = np.ones((1, 4, 4, 2), F32)
        assert torch_sums.depthwise_accumulate(xs, np.ones((2, 1, 3, 3), F32), 1, 1) is None
    finally:
        torch_sums._torch.cache_clear()


def test_float_graphs_keep_the_numpy_order(monkeypatch):
    """Float operands round, so their depthwise sums must not go through torch."""
    def boom(*a, **k):
        raise AssertionError("a float graph's depthwise sums went to torch")

    monkeypatch.setattr(torch_sums, "depthwise_accumulate", boom)
    rng = np.random.default_rng(2)
    xs = rng.standard_normal((2, 6, 6, 4)).astype(F32)
    w = rng.standard_normal((4, 1, 3, 3)).astype(F32)
    conv_op.conv_accumulate(xs, w, {"kernel": (3, 3), "stride": 1, "padding": 1, "groups": 4})


def _special(rng, shape):
    a = (rng.standard_normal(shape) * np.exp(rng.uniform(-6, 6, shape))).astype(F32)
    a[rng.random(shape) < 0.1] = -0.0
    a[rng.random(shape) < 0.05] = 0.0
    a.flat[:3] = [np.nan, np.inf, -np.inf]
    return a


def test_grad_accumulator_is_the_np_where_definition():
    rng = np.random.default_rng(3)
    for shape in ((2, 3, 4, 5), (7, 1, 1, 16), (3, 8)):
        scale = rng.random(shape[-1]).astype(F32)
        g_y = _special(rng, shape)
        for mask in (rng.random(shape) > 0.3, (rng.random(shape) > 0.3).astype(np.uint8), rng.random(shape[-1:]) > 0.5):
            for gy in (g_y, np.asfortranarray(g_y), g_y.astype(np.float64)):
                want = np.where(mask, gy.astype(F32, copy=False) * scale, F32(0)).astype(F32, copy=False)
                got = conv_op.grad_accumulator(gy, mask, scale)
                same_bits(got, want)
                assert got.flags.c_contiguous == want.flags.c_contiguous
                s1 = float(scale[0])  # add's addend gradient: a scalar scale
                want = np.where(mask, gy.astype(F32) * F32(s1), F32(0)).astype(F32, copy=False)
                same_bits(add_op.grad_addend(gy, mask, s1), want)


def test_clamp_mask_is_the_two_sided_comparison():
    rng = np.random.default_rng(4)
    r = np.rint(_special(rng, (4, 5, 6, 7)) * F32(0.01))
    r.flat[3:6] = [-0.0, -128.0, 127.0]
    for arr, lo, hi in ((r, -128, 127), (r, 0, 127), (rng.integers(-400, 400, (50,)).astype(np.int64), -128, 127)):
        with np.errstate(invalid="ignore"):
            want_y = np.clip(arr, lo, hi).astype(np.int8)
            y, mask = common.clamp_int8(arr, lo, hi)
        same_bits(y, want_y)
        assert np.array_equal(mask, (arr >= lo) & (arr <= hi))


def test_requantisation_is_the_reference_sequence():
    rng = np.random.default_rng(5)
    for dt in (np.int32, np.int64, np.float64, F32):
        acc = rng.integers(-2**26, 2**26, (3, 4, 5, 6)).astype(dt)
        bias = rng.integers(-2**20, 2**20, 6).astype(np.int32)
        eff = (rng.random(6) * 1e-4).astype(F32)
        t = np.asarray(acc).astype(F32) + bias.astype(F32)
        t *= eff
        r = np.rint(t)
        r += F32(-7)
        same_bits(arith.conv_preclamp(acc, bias, eff, -7), r)
        same_bits(arith.requantize_conv(acc, bias, eff, -7), np.clip(r, -128, 127).astype(np.int8))
        assert acc.dtype == dt  # the accumulator is not overwritten


def test_static_int8_bound_makes_the_same_exactness_decision():
    """exact_dtype with the int8 range's bound decides as the data scan does (the bound only skips the scan)."""
    rng = np.random.default_rng(6)
    for _ in range(200):
        zero = int(rng.integers(-128, 128))
        x_q = rng.integers(-128, 128, (2, 3, 3, 4)).astype(np.int8)
        if rng.random() < 0.5:
            x_q = np.clip(x_q, -20, 20).astype(np.int8)  # data well inside the range: the scan may say float32
        rows = rng.integers(-128, 128, (5, int(rng.choice([9, 64, 600, 1200])))).astype(np.int8)
        xs = conv_op.shifted_input(x_q, zero)
        bound = conv_op.int8_bound(x_q, zero)
        assert bound >= np.abs(xs).max()
        assert conv_op.exact_dtype(xs, rows, bound) == conv_op.exact_dtype(xs, rows)
    assert conv_op.int8_bound(np.zeros(3, np.int16), 0) is None


def test_pointwise_weight_gradient_of_all_channels_skips_the_gather_not_a_bit():
    rng = np.random.default_rng(7)
    for s in (1, 2):
        xs = rng.integers(-255, 256, (3, 8, 8, 24)).astype(F32)
        ho = (8 - 1) // s + 1
        g = _special(rng, (3, ho, ho, 40))
        g.flat[:3] = 1.0
        ch = np.arange(24)
        want = (g.reshape(-1, 40).T @ xs[:, ::s, ::s, :][..., ch].reshape(-1, 24)).reshape(40, 24, 1, 1)
        got = conv_op.grad_weight(xs, g, (40, 24, 1, 1), {"kernel": (1, 1), "stride": s, "padding": 0}, tuple(ch))
        same_bits(got, want.astype(F32))


def test_torch_sums_take_empty_batches_and_read_only_inputs():
    w = np.arange(-18, 18, dtype=np.int8).reshape(4, 1, 3, 3)
    attrs = {"kernel": (3, 3), "stride": 2, "padding": 1, "groups": 4}
    assert conv_op.conv_accumulate(np.zeros((0, 6, 6, 4), F32), w, attrs).shape == (0, 3, 3, 4)
    x = np.arange(2 * 6 * 6 * 4, dtype=F32).reshape(2, 6, 6, 4) - 100
    x.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch.from_numpy's read-only warning would be one
        got = conv_op.conv_accumulate(x, w, attrs)
    assert np.array_equal(got, conv_op.depthwise_accumulate(x, w[:, 0].astype(F32), 2, 1, 3, 3))


def test_channel_rows_tile_few_channels_and_compute_the_broadcast():
    """Few channels: (rows, W*C) and the vectors tiled W times (the fast layout), the same elementwise results
    as broadcasting; many channels, other layouts and scalars: unchanged."""
    rng = np.random.default_rng(8)
    for shape in ((2, 3, 4, 5), (16, 64, 64, 16), (3, 7, 1), (4, 63), (2, 2, 3, arith.ROW_TILE_MAX_C)):
        x = _special(rng, shape)
        v1, v2 = _special(rng, shape[-1:]), rng.random(shape[-1]).astype(F32)
        rows, (t1, t2) = arith.channel_rows(x, v1, v2)
        tiled = shape[-1] < arith.ROW_TILE_MAX_C
        assert (rows.ndim == 2 and rows.shape[1] == shape[-2] * shape[-1]) == tiled
        assert (t1.shape == (rows.shape[1],)) == tiled
        with np.errstate(invalid="ignore"):
            same_bits(((rows + t1) * t2).reshape(shape), (x + v1) * v2)
    x = _special(rng, (3, 4, 5, 6))
    for other in (np.asfortranarray(x), x[..., ::2]):
        rows, (v,) = arith.channel_rows(other, np.ones(other.shape[-1], F32))
        assert rows is other and v.shape == (other.shape[-1],)
    rows, (v,) = arith.channel_rows(x, F32(2))
    assert rows is x and v == 2


def test_masked_gradient_bit_and_is_np_where_on_large_maps():
    """The bit-AND path on an mcunet-sized map (tiled scale, 16 channels) and a channel-rich one (untiled)."""
    rng = np.random.default_rng(9)
    for shape in ((16, 32, 32, 16), (16, 4, 4, 576)):
        g_y, mask, scale = _special(rng, shape), rng.random(shape) > 0.4, rng.random(shape[-1]).astype(F32)
        scale[0] = -0.0
        want = np.where(mask, g_y * scale, F32(0)).astype(F32)
        same_bits(common.masked_gradient(g_y, scale, mask), want)

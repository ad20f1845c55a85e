"""The host build's fast paths against NumPy, byte for byte: the AVX2 kernels of kernels/mt_x86_avx2.h
(compiled when the host flags enable AVX2: requantisation runs, pointwise and dense dot products on
int16-widened weights, depthwise channel vectors, the float input gradient, weight gradient and gradient
through the requantisation), the gathered split-pointwise dots, the chunked gathered input gradient and
the chunked pointwise weight update.
Each kernel is built three times, with the host default flags (-O3 -march=native where supported), with
-O1 (scalar code) and with -O1 -DMT_INT_REQUANT=1 (the integer requantisation and weight-gradient step of
FPU-less builds), on shapes that leave every tail path something to do (in_c not a multiple of 16 or 8,
out_c not a multiple of 4 or 16, strides, masks, gathered channels)."""
from __future__ import annotations

import ctypes
import shutil

import numpy as np
import pytest

from c_lib import ConvParams, WeightS8, build_shared, ptr
from microtrain.codegen.emit import KERNEL_DIR
from microtrain.quant import arith
from microtrain.targets.host import native_opt

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")

PROBE = r"""
int t_has_avx2(void) {
#if defined(__AVX2__)
    return 1;
#else
    return 0;
#endif
}
"""


class UpdateParams(ctypes.Structure):
    _fields_ = [("divisor", ctypes.c_void_p), ("param_id", ctypes.c_uint32), ("rounding", ctypes.c_int32),
                ("full_in", ctypes.c_int32)]


class TrainCtx(ctypes.Structure):
    _fields_ = [("lr", ctypes.c_float), ("seed", ctypes.c_uint32), ("step", ctypes.c_uint32),
                ("guard_skips", ctypes.c_uint32)]


def _build(tmp, opt):
    out = tmp / f"k{abs(hash(opt))}.so"
    (tmp / "probe.c").write_text(PROBE)
    return build_shared(out, [KERNEL_DIR / "mt_forward_s8.c", KERNEL_DIR / "mt_backward_f32.c", tmp / "probe.c"], opt)


@pytest.fixture(scope="module")
def libs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fast")
    return {"native": _build(tmp, native_opt()), "scalar": _build(tmp, "-O1"),
            "integer": _build(tmp, "-O1 -DMT_INT_REQUANT=1")}  # FPU-less spellings (mt_arith.h, mt_wgrad_f32.h)




def test_native_build_uses_the_avx2_path_where_the_cpu_has_it(libs):
    """The comparison below is only worth something if the fast path is compiled in."""
    import platform

    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("AVX2 path is x86-64 only")
    cpu = open("/proc/cpuinfo").read() if platform.system() == "Linux" else ""
    if " avx2" not in cpu or native_opt() == "-O3":
        pytest.skip("this CPU/compiler has no AVX2 -march=native")
    assert libs["native"].t_has_avx2() == 1
    assert libs["scalar"].t_has_avx2() == 0 and libs["integer"].t_has_avx2() == 0


def _depthwise_case(rng, h, c, stride, x_zero, y_zero, k=3):
    """A k x k depthwise conv, padding k // 2, on an h x h x c input: params, x, weight (k, k, c), bias, eff."""
    o = (h + 2 * (k // 2) - k) // stride + 1
    p = ConvParams(h, h, c, o, o, c, k, k, stride, k // 2, x_zero, y_zero)
    x = rng.integers(-128, 128, (h, h, c)).astype(np.int8)
    wt = rng.integers(-128, 128, (k, k, c)).astype(np.int8)
    return p, x, wt, rng.integers(-3000, 3000, c).astype(np.int32), rng.uniform(1e-4, 3e-3, c).astype(np.float32)


def _pointwise_case(rng, in_c, out_c, stride, with_mask):
    h, w = 5, 7
    oh, ow = (h - 1) // stride + 1, (w - 1) // stride + 1
    p = ConvParams(h, w, in_c, oh, ow, out_c, 1, 1, stride, 0, int(rng.integers(-128, 128)),
                   int(rng.integers(-128, 128)))
    x = rng.integers(-128, 128, (h, w, in_c)).astype(np.int8)
    wt = rng.integers(-128, 128, (out_c, in_c)).astype(np.int8)
    bias = rng.integers(-5000, 5000, out_c).astype(np.int32)
    # multipliers spanning saturation, the useful range and near-zero outputs
    eff = (rng.choice([1e-5, 3e-4, 1e-3, 4e-3], out_c) * rng.uniform(0.5, 1.5, out_c)).astype(np.float32)
    xs = x[::stride, ::stride].astype(np.int64) - p.x_zero
    acc = (xs.reshape(-1, in_c) @ wt.T.astype(np.int64)).astype(np.int32)
    want = arith.requantize_conv(acc, bias[None], eff[None], p.y_zero).reshape(-1)
    pre = arith.conv_preclamp(acc, bias[None], eff[None], p.y_zero).reshape(-1)
    return p, x, wt, bias, eff, want, (pre >= -128) & (pre <= 127)


def _split_channels(rng, in_c, n_train):
    """The trained input channels (sorted) and the frozen rest, as the sparse-update split weights index them."""
    train_idx = np.sort(rng.choice(in_c, n_train, replace=False)).astype(np.int16)
    return train_idx, np.setdiff1d(np.arange(in_c), train_idx).astype(np.int16)


def _split_weight_and_gradient(rng, out_c, in_c, o, frozen_idx, train_idx):
    """A random int8 weight, its frozen and trained columns, and a random o x o x out_c gradient."""
    wt = rng.integers(-128, 128, (out_c, in_c)).astype(np.int8)
    wf, wtr = np.ascontiguousarray(wt[:, frozen_idx]), np.ascontiguousarray(wt[:, train_idx])
    return wt, wf, wtr, rng.standard_normal((o, o, out_c)).astype(np.float32)


@pytest.mark.parametrize("in_c", [3, 8, 16, 17, 24, 40, 100, 1030])  # 1030: beyond the int16 weight block
@pytest.mark.parametrize("out_c", [1, 5, 16, 35])
def test_pointwise_forward_equals_numpy(libs, in_c, out_c):
    rng = np.random.default_rng(in_c * 100 + out_c)
    for stride in (1, 2):
        for with_mask in (False, True):
            p, x, wt, bias, eff, want, ok = _pointwise_case(rng, in_c, out_c, stride, with_mask)
            n = want.size
            for name, lib in libs.items():
                y = np.full(n, 99, np.int8)
                mask = np.full((n + 7) // 8, 0xA5, np.uint8)  # stale bits must be overwritten
                lib.mt_conv_pointwise_s8(ctypes.byref(p), ptr(x), ptr(wt), ptr(bias), ptr(eff), ptr(y),
                                         ptr(mask) if with_mask else None)
                np.testing.assert_array_equal(y, want, err_msg=f"{name} build, stride {stride}")
                if with_mask:
                    bits = np.unpackbits(mask, bitorder="little")[:n].astype(bool)
                    np.testing.assert_array_equal(bits, ok, err_msg=f"{name} build mask, stride {stride}")


def test_split_pointwise_and_depthwise_forward_agree_across_builds(libs):
    rng = np.random.default_rng(7)
    for in_c, n_train in ((20, 3), (33, 17), (48, 16), (150, 70)):  # blocks wider than the 64-channel gather
        out_c = 37
        p, x, wt, bias, eff, want, ok = _pointwise_case(rng, in_c, out_c, 1, True)
        train_idx, frozen_idx = _split_channels(rng, in_c, n_train)
        wf, wtr = np.ascontiguousarray(wt[:, frozen_idx]), np.ascontiguousarray(wt[:, train_idx])
        for name, lib in libs.items():
            y, mask = np.zeros(want.size, np.int8), np.zeros((want.size + 7) // 8, np.uint8)
            lib.mt_conv_pointwise_split_s8(ctypes.byref(p), ptr(x), ptr(wf), ptr(frozen_idx), len(frozen_idx), ptr(wtr),
                                           ptr(train_idx), n_train, ptr(bias), ptr(eff), ptr(y), ptr(mask))
            np.testing.assert_array_equal(y, want, err_msg=f"{name} build, split {in_c}/{n_train}")
            np.testing.assert_array_equal(np.unpackbits(mask, bitorder="little")[:want.size].astype(bool), ok)
    for c, stride in ((5, 1), (16, 2), (40, 1), (70, 2)):
        p, x, wt, bias, eff = _depthwise_case(rng, 6, c, stride, 3, -4)
        o = p.out_h
        outs = {}
        for name, lib in libs.items():
            for with_mask in (False, True):
                y, mask = np.zeros(o * o * c, np.int8), np.zeros((o * o * c + 7) // 8, np.uint8)
                lib.mt_conv_depthwise_s8(ctypes.byref(p), ptr(x), ptr(wt), ptr(bias), ptr(eff), ptr(y),
                                         ptr(mask) if with_mask else None)
                outs[name, with_mask] = (y, mask)
        for with_mask in (False, True):
            np.testing.assert_array_equal(outs["native", with_mask][0], outs["scalar", with_mask][0])
            np.testing.assert_array_equal(outs["native", with_mask][1], outs["scalar", with_mask][1])
        assert len(np.unique(outs["native", False][0])) > 10  # not a constant (saturated) output


def test_depthwise_windows_and_dilation_agree_across_builds(libs):
    """5x5 and 7x7 windows, strides and dilation through the depthwise kernel: the AVX2 tap pairs inside the
    input, the per-tap vectors on the border and the scalar channels left over give the scalar build's bytes."""
    rng = np.random.default_rng(21)
    h = 13
    for k, stride, dil, c in ((5, 1, 1, 32), (7, 2, 1, 48), (3, 1, 2, 16), (5, 2, 2, 40), (3, 1, 1, 19)):
        pad = dil * (k // 2)
        o = (h + 2 * pad - dil * (k - 1) - 1) // stride + 1
        p = ConvParams(h, h, c, o, o, c, k, k, stride, pad, 7, -2, dilation=dil)
        x = rng.integers(-128, 128, (h, h, c)).astype(np.int8)
        wt = rng.integers(-128, 128, (k, k, c)).astype(np.int8)
        bias = rng.integers(-3000, 3000, c).astype(np.int32)
        eff = (rng.uniform(1e-4, 3e-3, c) / k).astype(np.float32)
        outs = {}
        for name, lib in libs.items():
            y, mask = np.zeros(o * o * c, np.int8), np.zeros((o * o * c + 7) // 8, np.uint8)
            lib.mt_conv_depthwise_s8(ctypes.byref(p), ptr(x), ptr(wt), ptr(bias), ptr(eff), ptr(y), ptr(mask))
            outs[name] = (y, mask)
        np.testing.assert_array_equal(outs["native"][0], outs["scalar"][0], err_msg=f"k {k} stride {stride} dil {dil}")
        np.testing.assert_array_equal(outs["native"][1], outs["scalar"][1])
        assert len(np.unique(outs["native"][0])) > 10


@pytest.mark.parametrize("in_c,out_c", [(3, 16), (3, 21), (8, 5), (9, 7)])  # 9: window beyond the stack patch
def test_dense_forward_equals_numpy(libs, in_c, out_c):
    rng = np.random.default_rng(in_c * 10 + out_c)
    h, stride = 9, 2
    o = (h + 2 - 3) // stride + 1
    p = ConvParams(h, h, in_c, o, o, out_c, 3, 3, stride, 1, int(rng.integers(-128, 128)), int(rng.integers(-20, 20)))
    x = rng.integers(-128, 128, (h, h, in_c)).astype(np.int8)
    wt = rng.integers(-128, 128, (out_c, 3, 3, in_c)).astype(np.int8)
    bias = rng.integers(-3000, 3000, out_c).astype(np.int32)
    eff = rng.uniform(2e-4, 2e-3, out_c).astype(np.float32)
    xpad = np.pad(x.astype(np.int64) - p.x_zero, ((1, 1), (1, 1), (0, 0)))  # padding is real zero
    cols = np.stack([xpad[ky : ky + stride * o : stride, kx : kx + stride * o : stride] for ky in range(3)
                     for kx in range(3)], axis=2).reshape(o * o, -1)
    acc = (cols @ wt.reshape(out_c, -1).T.astype(np.int64)).astype(np.int32)
    want = arith.requantize_conv(acc, bias[None], eff[None], p.y_zero).reshape(-1)
    pre = arith.conv_preclamp(acc, bias[None], eff[None], p.y_zero).reshape(-1)
    for name, lib in libs.items():
        for with_mask in (False, True):
            y, mask = np.zeros(want.size, np.int8), np.full((want.size + 7) // 8, 0x5A, np.uint8)
            lib.mt_conv_s8(ctypes.byref(p), ptr(x), ptr(wt), ptr(bias), ptr(eff), ptr(y), ptr(mask) if with_mask else None)
            np.testing.assert_array_equal(y, want, err_msg=f"{name} build")
            if with_mask:
                bits = np.unpackbits(mask, bitorder="little")[:want.size].astype(bool)
                np.testing.assert_array_equal(bits, (pre >= -128) & (pre <= 127), err_msg=f"{name} build mask")
    assert len(np.unique(want)) > 10


def test_pointwise_backward_chunks_agree_across_builds(libs):
    """Gathered input gradient (chunked sums, then scatter) and the chunked weight update: same floats,
    same int8 weights, whatever the vector width."""
    rng = np.random.default_rng(11)
    for in_c, n_train, stride in ((20, 3, 1), (40, 17, 2), (33, 33, 1)):
        out_c, h = 21, 6
        o = (h - 1) // stride + 1
        p = ConvParams(h, h, in_c, o, o, out_c, 1, 1, stride, 0, -7, 2)
        train_idx, frozen_idx = _split_channels(rng, in_c, n_train)
        wt, wf, wtr0, gacc = _split_weight_and_gradient(rng, out_c, in_c, o, frozen_idx, train_idx)
        x = rng.integers(-128, 128, (h, h, in_c)).astype(np.int8)
        div = rng.uniform(0.5, 4.0, out_c).astype(np.float32)
        results = {}
        for name, lib in libs.items():
            wtr = wtr0.copy()
            wobj = WeightS8(ptr(wf).value, ptr(frozen_idx).value, len(frozen_idx), ptr(wtr).value,
                            ptr(train_idx).value, n_train)
            gx = np.full((h, h, in_c), np.nan, np.float32)
            lib.mt_conv_grad_input_pointwise_f32(ctypes.byref(p), ptr(gacc), ctypes.byref(wobj), ptr(gx))
            upd = UpdateParams(ptr(div).value, 5, 0, in_c)
            ctx = TrainCtx(0.01, 1, 2, 0)  # moves most weights by a few steps, few saturate
            lib.mt_conv_weight_update_pointwise_f32(ctypes.byref(p), ptr(x), in_c, ptr(gacc), ctypes.byref(wobj),
                                                    ctypes.byref(upd), ctypes.byref(ctx))
            results[name] = (gx, wtr)
        gx_n, w_n = results["native"]
        gx_s, w_s = results["scalar"]
        np.testing.assert_array_equal(gx_n.view(np.uint32), gx_s.view(np.uint32))
        np.testing.assert_array_equal(w_n, w_s)
        assert (w_n != wtr0).mean() > 0.3, "the update moved too few weights to test anything"
        # against NumPy in float32 and the kernels' documented order (sums over o, then over pixels, ascending)
        gx_ref = np.zeros((h, h, in_c), np.float32)
        acc = np.zeros((o, o, in_c), np.float32)
        for k in range(out_c):
            acc = acc + gacc[:, :, k : k + 1] * wt[k].astype(np.float32)
        gx_ref[::stride, ::stride] = acc
        np.testing.assert_array_equal(gx_n.view(np.uint32), gx_ref.view(np.uint32))
        xs = x[::stride, ::stride][:, :, train_idx].astype(np.float32) - np.float32(p.x_zero)
        g = np.zeros((out_c, n_train), np.float32)
        for i in range(o):
            for j in range(o):
                g = g + xs[i, j][None, :] * gacc[i, j][:, None]
        delta = np.float32(-0.01) * (g / div[:, None])
        w_ref = np.clip(wtr0.astype(np.int32) + np.rint(delta).astype(np.int32), -128, 127)
        np.testing.assert_array_equal(w_n, w_ref)


def test_whole_weight_pointwise_input_gradient_equals_numpy(libs):
    """Whole (frozen) weights: the AVX2 build takes two pixels per pass, 32 and 8 columns in registers, the rest
    scalar, an odd last pixel alone; every float is the sum over output channels in ascending order."""
    rng = np.random.default_rng(13)
    for in_c, out_c, h, stride in ((45, 30, 5, 1), (96, 17, 4, 1), (13, 9, 7, 2)):  # 25 and 16 pixels; stride 2
        o = (h - 1) // stride + 1
        p = ConvParams(h, h, in_c, o, o, out_c, 1, 1, stride, 0, 0, 0)
        wt = rng.integers(-128, 128, (out_c, in_c)).astype(np.int8)
        gacc = rng.standard_normal((o, o, out_c)).astype(np.float32)
        want = np.zeros((h, h, in_c), np.float32)
        acc = np.zeros((o, o, in_c), np.float32)
        for k in range(out_c):
            acc = acc + gacc[:, :, k : k + 1] * wt[k].astype(np.float32)
        want[::stride, ::stride] = acc
        wobj = WeightS8(ptr(wt).value, None, in_c, None, None, 0)
        for name, lib in libs.items():
            gx = np.full((h, h, in_c), np.nan, np.float32)
            lib.mt_conv_grad_input_pointwise_f32(ctypes.byref(p), ptr(gacc), ctypes.byref(wobj), ptr(gx))
            np.testing.assert_array_equal(gx.view(np.uint32), want.view(np.uint32), err_msg=f"{name} build, in_c {in_c}")


def test_sliced_input_weight_update_and_grad_acc_agree_across_builds(libs):
    """The weight update reading a sliced input (x_c == n_train, trained channels gathered by the slice: the
    layout the planner emits, which the 8 x 8 vector blocks take) equals NumPy's sums and the scalar build;
    mt_conv_grad_acc_f32 (8 channels per vector, the rest scalar) equals where(mask, gy * eff, 0)."""
    rng = np.random.default_rng(12)
    for in_c, n_train, out_c, stride in ((48, 24, 20, 1), (48, 12, 16, 2), (30, 19, 9, 1)):
        h = 7
        o = (h - 1) // stride + 1
        p = ConvParams(h, h, in_c, o, o, out_c, 1, 1, stride, 0, 5, 0)
        train_idx, frozen_idx = _split_channels(rng, in_c, n_train)
        wt, wf, wtr0, gacc = _split_weight_and_gradient(rng, out_c, in_c, o, frozen_idx, train_idx)
        xs = np.ascontiguousarray(rng.integers(-128, 128, (h, h, n_train)).astype(np.int8))  # the sliced input
        div = rng.uniform(0.5, 4.0, out_c).astype(np.float32)
        results = {}
        for name, lib in libs.items():
            wtr = wtr0.copy()
            wobj = WeightS8(ptr(wf).value, ptr(frozen_idx).value, len(frozen_idx), ptr(wtr).value,
                            ptr(train_idx).value, n_train)
            lib.mt_conv_weight_update_pointwise_f32(ctypes.byref(p), ptr(xs), n_train, ptr(gacc), ctypes.byref(wobj),
                                                    ctypes.byref(UpdateParams(ptr(div).value, 5, 0, in_c)),
                                                    ctypes.byref(TrainCtx(0.01, 1, 2, 0)))
            results[name] = wtr
        xf = xs[::stride, ::stride].astype(np.float32) - np.float32(p.x_zero)
        g = np.zeros((out_c, n_train), np.float32)
        for i in range(o):
            for j in range(o):
                g = g + xf[i, j][None, :] * gacc[i, j][:, None]
        w_ref = np.clip(wtr0.astype(np.int32) + np.rint(np.float32(-0.01) * (g / div[:, None])).astype(np.int32),
                        -128, 127)
        np.testing.assert_array_equal(results["native"], w_ref, err_msg=f"sliced {in_c}/{n_train}")
        np.testing.assert_array_equal(results["scalar"], w_ref)
        assert (w_ref != wtr0).mean() > 0.3
    lib_fn = {name: lib.mt_conv_grad_acc_f32 for name, lib in libs.items()}
    for c, pixels in ((5, 9), (8, 4), (21, 6), (40, 3)):
        n = c * pixels
        gy = rng.standard_normal(n).astype(np.float32)
        eff = rng.uniform(1e-3, 2.0, c).astype(np.float32)
        mask = rng.integers(0, 256, (n + 7) // 8).astype(np.uint8)
        bits = np.unpackbits(mask, bitorder="little")[:n].astype(bool)
        want = np.where(bits, gy * np.tile(eff, pixels), np.float32(0))
        for name, fn in lib_fn.items():
            got = np.full(n, np.nan, np.float32)
            fn(ptr(gy), ptr(mask), ptr(eff), n, c, ptr(got))
            np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32), err_msg=f"{name} build, c {c}")


@pytest.mark.parametrize("k,stride,h", [(3, 1, 11), (3, 2, 11), (5, 1, 11), (5, 2, 11), (7, 2, 11),
                                        (9, 1, 11),  # 9x9: beyond the local taps
                                        (3, 2, 24), (7, 2, 27), (5, 1, 20)])  # rows of 8+ interior outputs (AVX2)
def test_inplace_depthwise_over_its_own_input_equals_the_plain_kernel(libs, k, stride, h):
    """mt_conv_depthwise_inplace_s8 with y == x (what the planner emits) gives mt_conv_depthwise_s8's bytes
    and mask, inside and on the border; stride 1 reads the rows above each output, so it fails unless every
    channel goes through the plane first."""
    c = 19
    p, x, wt, bias, eff = _depthwise_case(np.random.default_rng(k * 10 + stride), h, c, stride, 5, -3, k)
    eff = eff / k  # larger windows, larger sums: keep the outputs off the clamps
    n = p.out_h * p.out_w * c
    for name, lib in libs.items():
        want, want_mask = np.zeros(n, np.int8), np.zeros((n + 7) // 8, np.uint8)
        lib.mt_conv_depthwise_s8(ctypes.byref(p), ptr(x), ptr(wt), ptr(bias), ptr(eff), ptr(want), ptr(want_mask))
        xy, mask, plane = x.copy().reshape(-1), np.zeros((n + 7) // 8, np.uint8), np.zeros(h * h, np.int8)
        lib.mt_conv_depthwise_inplace_s8(ctypes.byref(p), ptr(xy), ptr(wt), ptr(bias), ptr(eff), ptr(xy), ptr(mask),
                                         ptr(plane))
        np.testing.assert_array_equal(xy[:n], want, err_msg=f"{name} build, stride {stride}")
        np.testing.assert_array_equal(mask, want_mask)
        assert len(np.unique(want)) > 10


@pytest.mark.parametrize("k,stride,h,split", [(3, 1, 9, False), (7, 1, 8, True), (3, 2, 9, False), (5, 2, 8, True),
                                              (7, 2, 8, False), (7, 2, 11, True)])
def test_inplace_depthwise_input_gradient_equals_the_plain_kernel(libs, k, stride, h, split):
    """mt_conv_grad_input_depthwise_inplace_f32 over the incoming gradient's own storage (what the planner emits:
    gacc at the start of gx's block, gx four times larger with stride 2) gives mt_conv_grad_input_depthwise_f32's
    floats bit for bit, border and interior, whole weights and frozen/trained channel blocks, any group size."""
    c = 13
    rng = np.random.default_rng(k * 100 + stride * 10 + h)
    o = (h + 2 * (k // 2) - k) // stride + 1
    p = ConvParams(h, h, c, o, o, c, k, k, stride, k // 2, 0, 0)
    gacc = rng.standard_normal((o, o, c)).astype(np.float32)
    wt = rng.integers(-128, 128, (k * k, c)).astype(np.int8)
    if split:  # channels 0, 3, 6, ... trained, the rest frozen: two blocks, each gathered by its index list
        train = np.arange(0, c, 3, dtype=np.int16)
        frozen = np.setdiff1d(np.arange(c), train).astype(np.int16)
        fw, tw = np.ascontiguousarray(wt[:, frozen]), np.ascontiguousarray(wt[:, train])
        w = WeightS8(ptr(fw).value, ptr(frozen).value, len(frozen), ptr(tw).value, ptr(train).value, len(train))
    else:
        w = WeightS8(ptr(wt).value, None, c, None, None, 0)
    for name, lib in libs.items():
        want = np.zeros(h * h * c, np.float32)
        lib.mt_conv_grad_input_depthwise_f32(ctypes.byref(p), ptr(gacc), ctypes.byref(w), ptr(want))
        for group in (1, 3, 8):  # 13 channels: 8 + a tail of 5, 3 + ... + 1, and one at a time
            block = np.full(h * h * c, np.nan, np.float32)
            block[: gacc.size] = gacc.reshape(-1)
            plane = np.full(group * (o * o + k * k), np.nan, np.float32)
            lib.mt_conv_grad_input_depthwise_inplace_f32(ctypes.byref(p), ptr(block), ctypes.byref(w), ptr(block),
                                                         ptr(plane), group)
            np.testing.assert_array_equal(block.view(np.uint32), want.view(np.uint32),
                                          err_msg=f"{name} build, k {k}, stride {stride}, group {group}")
        assert np.count_nonzero(want) > want.size // (2 * stride * stride)

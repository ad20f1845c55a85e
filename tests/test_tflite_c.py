"""The C side of the "tflite" rounding mode (codegen/kernels/mt_arith.h, mt_forward_tfl_s8.c) against
quant/arith.py: the fixed-point primitives on edge values, then whole TFLite graphs node by node (host gcc)."""
from __future__ import annotations

import ctypes
import shutil

import numpy as np
import pytest

from c_lib import ConvParams, WeightS8, build_shared, ptr
from microtrain.codegen.emit import KERNEL_DIR
from microtrain.quant import arith

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")

WRAPPER = r"""
#include "mt_arith.h"
void t_mbqm(const int32_t *x, const int32_t *m, const int32_t *s, int32_t single, int32_t n, int32_t *out) {
    int32_t i;
    for (i = 0; i < n; i++) out[i] = mt_mbqm_s32(x[i], m[i], s[i], single);
}
void t_requant(const int32_t *acc, const int32_t *bias, const int32_t *m, const int32_t *s, int32_t single,
               int32_t z, int32_t lo, int32_t hi, int32_t n, int8_t *y) {
    int32_t i;
    for (i = 0; i < n; i++) y[i] = mt_requant_tfl_s8(acc[i], bias[i], m[i], s[i], single, z, lo, hi);
}
void t_div_away(const int32_t *t, const int32_t *c, int32_t n, int32_t *q) {
    int32_t i;
    for (i = 0; i < n; i++) q[i] = mt_div_round_away_s32(t[i], c[i]);
}
"""


class Requant(ctypes.Structure):
    _fields_ = [("mult", ctypes.c_void_p), ("shift", ctypes.c_void_p), ("single", ctypes.c_int32),
                ("lo", ctypes.c_int32), ("hi", ctypes.c_int32)]


def _struct(names):
    return type("S", (ctypes.Structure,), {"_fields_": [(f, ctypes.c_int32) for f in names]})


Add = _struct(("size", "z1", "z2", "zy", "m1", "e1", "m2", "e2", "mo", "eo", "lo", "hi"))
Pool = _struct(("in_h", "in_w", "c", "out_h", "out_w", "kh", "kw", "stride", "pad_top", "pad_left", "lo", "hi"))
Pad = _struct(("in_h", "in_w", "c", "top", "bottom", "left", "right", "value"))


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    d = tmp_path_factory.mktemp("tfl")
    (d / "w.c").write_text(WRAPPER)
    return build_shared(d / "w.so", [d / "w.c", KERNEL_DIR / "mt_forward_tfl_s8.c"])


def test_fixed_point_primitives_match_numpy(lib):
    rng = np.random.default_rng(0)
    n = 40000
    x = rng.integers(-(2**31), 2**31, n, dtype=np.int64).astype(np.int32)
    x[:8] = [arith.INT32_MIN, arith.INT32_MAX, 0, 1, -1, 3, -3, 2**20]
    m, s = arith.quantize_multiplier(rng.uniform(1e-6, 0.99, n) * 2.0 ** rng.integers(-20, 3, n))
    m[:8], s[:8] = [arith.INT32_MIN, 2**30, 2**30, 2**30, 2**30, 2**30, 2**30, 2**30], [0, 0, -3, -1, -1, 0, 0, 1]
    m, s = m.astype(np.int32), s.astype(np.int32)
    for single in (0, 1):
        ok = slice(None) if not single else (s <= 0) & (m >= 0) & (np.abs(x) < 2**24)  # single rounding's domain
        xs, ms, ss = (np.ascontiguousarray(a[ok]) for a in (x, m, s))
        out = np.empty(len(xs), np.int32)
        lib.t_mbqm(ptr(xs), ptr(ms), ptr(ss), single, len(xs), ptr(out))
        ref = (arith.multiply_by_quantized_multiplier_single if single else arith.multiply_by_quantized_multiplier)(xs, ms, ss)
        np.testing.assert_array_equal(out, ref)
    acc = rng.integers(-2**22, 2**22, n).astype(np.int32)
    bias = rng.choice([0, 2**31 - 1, -(2**31), 1234], n).astype(np.int32)  # int32 wrap-around of acc + bias too
    mm, ss = arith.quantize_multiplier(rng.uniform(1e-5, 0.1, n))
    mm, ss = mm.astype(np.int32), ss.astype(np.int32)
    for single, z, lo, hi in ((0, -128, -128, 127), (1, 5, 5, 100), (0, 17, -20, -8)):
        y = np.empty(n, np.int8)
        lib.t_requant(ptr(acc), ptr(bias), ptr(mm), ptr(ss), single, z, lo, hi, n, ptr(y))
        np.testing.assert_array_equal(y, arith.requantize_conv_tflite(acc, bias, mm, ss, z, (lo, hi),
                                                                      "single" if single else "double"))
    t = rng.integers(-128 * 64, 127 * 64, n).astype(np.int32)
    c = rng.integers(1, 65, n).astype(np.int32)
    t[:6], c[:6] = [-3, -2, 3, 2, 0, -1], [2, 4, 2, 4, 3, 2]
    q = np.empty(n, np.int32)
    lib.t_div_away(ptr(t), ptr(c), n, ptr(q))
    np.testing.assert_array_equal(q, arith.round_half_away_div(t, c))


def run_c(lib, graph, x: np.ndarray) -> dict:
    """One sample through the C kernels, node by node, in the graph's order: every tensor."""
    from microtrain.quant.arith import add_params_tflite, tflite_conv_multipliers

    vals = {graph.input: np.ascontiguousarray(x)}
    for n in graph.nodes:
        xin = vals[n.inputs[0]]
        xq, yq = graph.tensors[n.inputs[0]].quant, graph.tensors[n.output].quant
        ih, iw, ic = graph.tensors[n.inputs[0]].shape
        oh, ow, oc = graph.tensors[n.output].shape
        y = np.empty((oh, ow, oc), np.int8)
        lo, hi = n.attrs.get("clamp", (-128, 127))
        if n.op == "conv2d":
            kh, kw = n.attrs["kernel"]
            w = np.ascontiguousarray(n.params["weight"].transpose(0, 2, 3, 1))  # (O, kh, kw, I/groups)
            m, s = tflite_conv_multipliers(xq.scale, n.params["w_scales"], yq.scale)
            m, s = m.astype(np.int32), s.astype(np.int32)
            p = ConvParams(ih, iw, ic, oh, ow, oc, kh, kw, n.attrs["stride"], n.attrs["padding"], xq.zero_point, yq.zero_point)
            rq = Requant(ptr(m), ptr(s), int(n.attrs.get("multiplier_rounding") == "single"), lo, hi)
            wv = WeightS8(ptr(w), None, w.shape[-1], None, None, 0)
            lib.mt_conv_tfl_s8(ctypes.byref(p), n.attrs.get("groups", 1), 0, ptr(xin), ctypes.byref(wv),
                               ptr(n.params["bias"]), ctypes.byref(rq), ptr(y), None)  # 0: MT_TFL_OHWI
        elif n.op == "add":
            bq = graph.tensors[n.inputs[1]].quant
            a = add_params_tflite(xq.scale, bq.scale, yq.scale)
            p = Add(xin.size, xq.zero_point, bq.zero_point, yq.zero_point, *(int(a[k]) for k in ("m1", "e1", "m2", "e2", "mo", "eo")), lo, hi)
            lib.mt_add_tfl_s8(ctypes.byref(p), ptr(xin), ptr(vals[n.inputs[1]]), ptr(y), None)
        elif n.op in ("global_avg_pool", "avg_pool2d"):
            kh, kw = n.attrs.get("kernel", (ih, iw))
            t, _, left, _ = n.attrs.get("pads", (0, 0, 0, 0))
            p = Pool(ih, iw, ic, oh, ow, kh, kw, n.attrs.get("stride", 1), t, left, lo, hi)
            lib.mt_avg_pool_tfl_s8(ctypes.byref(p), ptr(xin), ptr(y))
        elif n.op == "pad":
            p = Pad(ih, iw, ic, *n.attrs["pads"], xq.zero_point)
            lib.mt_pad_s8(ctypes.byref(p), ptr(xin), ptr(y))
        else:
            raise AssertionError(n.op)
        vals[n.output] = y
    return vals


@pytest.mark.parametrize("which", ["ic_resnet8_cifar10_int8", "exotic", "flatten"])
def test_c_kernels_equal_numpy_on_every_tensor_of_a_tflite_graph(lib, which):
    """ResNet-8 (convs, strided 1x1 shortcuts, asymmetric SAME pads, adds, global pool, FC head) and the
    builder's small models (windowed pool, PAD, clamps inside int8, depth multiplier 2; flatten -> dense)."""
    from microtrain.frontends.tflite import load_tflite, tflite_to_graph
    from microtrain.runtime.forward import run_int8

    if which in ("exotic", "flatten"):
        from tflite_builder import exotic_model, flatten_fc_model

        graph = tflite_to_graph({"exotic": exotic_model, "flatten": flatten_fc_model}[which](), which)
    else:
        from test_tflite import tflite_path

        graph = load_tflite(tflite_path(which))
    xs = np.random.default_rng(3).integers(-128, 128, (3, *graph.input_spec.shape), dtype=np.int8)
    ours = run_int8(graph, xs, keep=True)
    for i, x in enumerate(xs):
        c = run_c(lib, graph, x)
        for t, v in c.items():
            np.testing.assert_array_equal(v, ours[t][i], err_msg=f"{which}: tensor {t}, sample {i}")

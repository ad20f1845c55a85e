"""TrainingRuntime(sums="c") computes the C kernels' float32 gradients bit for bit (ops/c_sums.py).

The default NumPy sums (BLAS, np.exp) differ from the kernels in the last bits; at batch 1 one such difference at a
stochastic-rounding near-tie made the NumPy simulation of benchmarks/exp_device_curve.py part from the device
(trashnet, after update 114). Here: the loss gradient (the kernels' exp polynomial) and the pointwise input
gradient, against the kernels themselves; the default sums differ on the same operands (so the check can fail)."""
from __future__ import annotations

import ctypes
import shutil

import numpy as np
import pytest

from c_lib import ConvParams, WeightS8, build_shared, ptr
from microtrain.codegen.emit import KERNEL_DIR
from microtrain.ops.conv import grad_input
from microtrain.ops.loss import grad_int8_logits
from microtrain.targets.host import native_opt

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    return build_shared(tmp_path_factory.mktemp("csums") / "k.so", [KERNEL_DIR / "mt_backward_f32.c"], native_opt())


def _bits(a):
    return np.asarray(a, np.float32).view(np.uint32)


def test_loss_gradient_equals_the_kernel(lib):
    rng = np.random.default_rng(3)
    mismatches = {"numpy": 0, "c": 0}
    for k in (2, 6, 10, 37):
        for _ in range(60):
            q = rng.integers(-128, 128, (1, k)).astype(np.int8)
            label, zero, scale = int(rng.integers(k)), int(rng.integers(-20, 20)), float(rng.uniform(0.02, 0.3))
            loss, grad = ctypes.c_float(), np.zeros(k, np.float32)
            lib.mt_loss_softmax_ce_s8(ptr(q), k, zero, ctypes.c_float(scale), label, ctypes.byref(loss), ptr(grad))
            for sums in mismatches:
                _, g = grad_int8_logits(q, np.array([label]), scale, zero, sums)
                mismatches[sums] += int((_bits(g[0]) != _bits(grad)).any())
    assert mismatches["c"] == 0
    assert mismatches["numpy"] > 0  # np.exp is not the kernels' exp (measured: 187 of 240 gradients)


def test_pointwise_input_gradient_equals_the_kernel(lib):
    rng = np.random.default_rng(4)
    h, in_c, out_c = 4, 40, 96
    p = ConvParams(h, h, in_c, h, h, out_c, 1, 1, 1, 0, 0, 0)
    wt = rng.integers(-128, 128, (out_c, in_c)).astype(np.int8)
    idx = np.arange(in_c, dtype=np.int16)
    w = WeightS8(ptr(wt).value, ptr(idx).value, in_c, None, None, 0)
    gacc = rng.standard_normal((1, h, h, out_c)).astype(np.float32)
    gx = np.full((h, h, in_c), np.nan, np.float32)
    lib.mt_conv_grad_input_pointwise_f32(ctypes.byref(p), ptr(gacc), ctypes.byref(w), ptr(gx))
    attrs = {"stride": 1, "padding": 0}
    weight = wt[:, :, None, None]
    np.testing.assert_array_equal(_bits(grad_input(gacc, weight, attrs, (h, h, in_c), "c")[0]), _bits(gx))
    assert (_bits(grad_input(gacc, weight, attrs, (h, h, in_c))[0]) != _bits(gx)).any()  # BLAS: another order


def test_sums_c_refuses_a_dense_conv_gradient_at_construction():
    """ops/c_sums.py has the C order of pointwise and depthwise gradients only: a trained step that needs a dense
    k x k conv's input or weight gradient is refused naming the layer before any step runs, not mid-backward."""
    from conftest import small_graph

    from microtrain.autodiff import build_training_graph
    from microtrain.errors import UnsupportedOpError
    from microtrain.passes import run_passes
    from microtrain.runtime.training import TrainingRuntime
    from microtrain.sparse.scheme import TrainSpec

    g = small_graph()  # conv0: a dense 3x3 stride-2 conv on the input; pw1, dw, pw2, head after it
    covered = {"conv0": TrainSpec("conv0", True, None), "pw1": TrainSpec("pw1", True, (1, 4)),
               "dw": TrainSpec("dw", True, (0, 3))}
    for trained in (covered, {**covered, "conv0": TrainSpec("conv0", True, (0, 2))}):
        for tg in (build_training_graph(g, trained), run_passes(build_training_graph(g, trained))):
            if trained is covered:  # bias only on the dense conv: no dense gradient rule runs
                TrainingRuntime(tg, sums="c").train_step({g.input: np.zeros((1, 8, 8, 3), np.int8)}, [0], 0.1, 0)
                continue
            with pytest.raises(UnsupportedOpError, match=r"conv0.*3x3") as err:
                TrainingRuntime(tg, sums="c")
            assert "\n" not in str(err.value)
            TrainingRuntime(tg)  # the default sums run it
    # a dense conv between trained layers: its input gradient is needed
    g2 = small_graph()
    dense = g2.node("pw2")
    dense.attrs.update(kernel=(3, 3), padding=1)
    dense.params["weight"] = np.resize(dense.params["weight"], dense.params["weight"].shape[:2] + (3, 3))
    with pytest.raises(UnsupportedOpError, match="pw2"):
        TrainingRuntime(build_training_graph(g2, {"dw": TrainSpec("dw", True, None)}), sums="c")

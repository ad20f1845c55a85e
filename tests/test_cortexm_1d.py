"""A 1-D CNN (the vowels demo's architecture: conv k5, strided depthwise, pointwise, pad1d nodes) trains as
Cortex-M4 firmware under QEMU with parameters bit-identical to the host build's, within 64 KB of SRAM."""
from __future__ import annotations

import numpy as np
import pytest
from cortexm_util import require_arm_tools

pytestmark = pytest.mark.qemu


def test_vowels_cnn_trains_on_cortex_m4_like_the_host(tmp_path):
    require_arm_tools()
    import torch

    from microtrain.demo.vowels import LENGTH, M4_SRAM, VowelsConfig, _device, tiny_cnn
    from microtrain.frontends.torch_fx import import_torch
    from microtrain.quant.head import replace_head
    from microtrain.quant.ptq import quantize
    from microtrain.runtime.datasets import ImageData
    from microtrain.sparse.scheme import UpdateScheme

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    g = import_torch(tiny_cnn(12, 5), length=LENGTH, channels=12)
    assert [n.op for n in g.nodes].count("pad1d") == 3
    q8 = quantize(g, rng.integers(-128, 128, (32, 1, LENGTH, 12)).astype(np.int8))
    graph = replace_head(q8, 4)
    scheme = UpdateScheme(3, {2: 0.5, 3: 1.0, 4: 1.0}, name="last-3")  # split pointwise, depthwise, pointwise
    x = rng.integers(-128, 128, (6, 1, 1, LENGTH, 12)).astype(np.int8)
    data = ImageData(x, rng.integers(0, 4, 6), ["6", "7", "8", "9"])
    info = _device(graph, scheme, data, VowelsConfig(device_samples=6), tmp_path, log=lambda m: None)
    assert info["params_bit_identical_to_host"] is True and info["params_changed"]
    assert info["firmware_sram"] <= M4_SRAM and info["fits_64kb"]
    assert info["instructions_per_step"] > 0


def test_dilated_1d_cnn_trains_on_cortex_m4_like_the_host(tmp_path):
    """Dilated Conv1d layers (dense, split depthwise) on the M4: the SIMD kernels hand a dilated window to their
    portable twins (kernels/arm), so the firmware's parameters stay the host build's."""
    require_arm_tools()
    from test_ops_dilation import int8_dilated

    from microtrain.demo.vowels import VowelsConfig, _device
    from microtrain.runtime.datasets import ImageData
    from microtrain.sparse.scheme import UpdateScheme

    graph = int8_dilated()
    assert [n.attrs.get("dilation", 1) for n in graph.indexed_convs()][:3] == [2, 3, 2]
    scheme = UpdateScheme(4, {0: 1.0, 1: 0.5, 2: 1.0, 3: 1.0}, name="all")
    rng = np.random.default_rng(1)
    x = rng.integers(-128, 128, (4, 1, 1, 24, 6)).astype(np.int8)
    data = ImageData(x, rng.integers(0, 4, 4), ["a", "b", "c", "d"])
    info = _device(graph, scheme, data, VowelsConfig(device_samples=4), tmp_path, log=lambda m: None)
    assert info["params_bit_identical_to_host"] is True and info["params_changed"]
    source = (tmp_path / "c-project" / "mt_model.c").read_text()
    assert "mt_conv_depthwise_split_s8(" in source and "mt_conv_grad_input_depthwise_f32(" in source

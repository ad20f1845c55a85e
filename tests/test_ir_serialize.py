"""IR round-trip: save_graph / load_graph keeps every parameter bit-exact and every output identical;
and the fixed input mapping / no-resize rule of the image loader."""
from __future__ import annotations

import numpy as np

from microtrain.ir.serialize import load_graph, save_graph
from microtrain.runtime.forward import run_int8


def test_save_load_round_trip(upstream_graph, tmp_path):
    g = upstream_graph
    path = save_graph(g, tmp_path / f"{g.name}.json")
    h = load_graph(path)
    assert (h.name, h.dtype, h.input, h.output) == (g.name, g.dtype, g.input, g.output)
    assert [(n.name, n.op, n.inputs, n.output) for n in h.nodes] == [(n.name, n.op, n.inputs, n.output) for n in g.nodes]
    for a, b in zip(g.nodes, h.nodes):
        assert a.attrs == b.attrs, a.name
        assert sorted(a.params) == sorted(b.params), a.name
        for k in a.params:
            assert a.params[k].dtype == b.params[k].dtype and a.params[k].shape == b.params[k].shape, (a.name, k)
            assert a.params[k].tobytes() == b.params[k].tobytes(), f"{a.name}.{k} changed in the round trip"
    for t, spec in g.tensors.items():
        assert h.tensors[t].shape == spec.shape and h.tensors[t].dtype == spec.dtype
        assert h.tensors[t].quant == spec.quant, t  # scales round-trip exactly (float repr)
    x = np.random.default_rng(3).integers(-128, 128, (2, *g.input_spec.shape)).astype(np.int8)
    assert np.array_equal(run_int8(g, x), run_int8(h, x))


def test_image_at_model_resolution_is_not_resized(tmp_path):
    from PIL import Image

    from microtrain.runtime.images import load_int8, load_pixels

    pixels = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "exact.png")
    assert np.array_equal(load_pixels(tmp_path / "exact.png", 128), pixels)
    # the fixed input mapping: pixel k -> int8 k - 128
    assert np.array_equal(load_int8([tmp_path / "exact.png"], 128)[0], (pixels.astype(np.int16) - 128).astype(np.int8))

"""The fleet's update format and arithmetic without Flower: which arrays a client sends (exact bytes of the
scheme's trained slices), extraction/application round trip, rejection of malformed updates, the
aggregation against a hand computation, and reproducible IID / Dirichlet partitions."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import model_path
from microtrain.errors import MicrotrainError
from microtrain.fleet.aggregate import aggregate
from microtrain.fleet.engine import fleet_model
from microtrain.fleet.layout import SliceLayout, UpdateRejected
from microtrain.fleet.partition import parse_partition, partition
from microtrain.sparse.fixtures import load_fixture


@pytest.fixture(scope="module")
def model():
    from microtrain.frontends.mcunet_pkl import load_mcunet_pkl

    return fleet_model(load_mcunet_pkl(model_path("mcunet-5fps")), 10, 32)


@pytest.fixture(scope="module")
def layout(model):
    return SliceLayout(model, load_fixture("mcunet-5fps-49kb").resolve(model))


def test_update_is_exactly_the_trained_slices_of_the_49kb_scheme(model, layout):
    # by hand from the scheme: pointwise1 of blocks 8/9/10 train 1/4, 1/2, 1/2 of their 48 input channels;
    # the 10-class head (160 inputs) trains whole; the last 20 convs and the head train their biases
    weights = 144 * 12 + 192 * 24 + 240 * 24 + 10 * 160
    bias_channels = sum([160, 48,  # blocks.7 depthwise, pointwise2
                         144, 144, 48, 192, 192, 48, 240, 240, 96,  # blocks 8-10
                         384, 384, 96, 384, 384, 96, 576, 576, 160,  # blocks 11-13
                         10])  # the head
    assert weights == 13696 and bias_channels == 4602
    assert layout.param_bytes == weights + 4 * bias_channels == 32104
    # plus one float32 scale per output channel of each trained layer, x_scale per trained bias, layout id
    assert layout.update_bytes == 32104 + 4 * bias_channels + 4 * 21 + 4
    arrays = layout.extract(model)
    assert sum(a.nbytes for a in arrays.values()) == layout.update_bytes
    assert arrays["blocks.9.pointwise1.weight"].shape == (192, 24, 1, 1)
    assert arrays["blocks.9.pointwise1.weight"].dtype == np.int8 and arrays["classifier.bias"].dtype == np.int32
    frozen = sum(a.nbytes for n in model.nodes for a in n.params.values())
    assert layout.update_bytes < frozen / 10  # the frozen model is never in it


def test_trained_bytes_match_the_engine_memory_plan(model, layout):
    from microtrain.scheme_search.memory import planner_report

    report = planner_report(model, load_fixture("mcunet-5fps-49kb"))
    assert report.trainable_sram_bytes == layout.param_bytes  # the slices the device keeps in SRAM


def test_extract_apply_round_trip_touches_only_the_trained_slices(model, layout):
    g = model.copy()
    rng = np.random.default_rng(0)
    new = layout.extract(g)
    for k, e in layout.by_key.items():
        if e.param in ("weight", "bias"):
            new[k] = rng.integers(-100, 100, e.shape).astype(e.dtype)
    layout.apply(g, new)
    back = layout.extract(g)
    assert all(np.array_equal(back[k], new[k]) for k in new)
    pw = g.node("blocks.9.pointwise1").params["weight"]
    chans = list(layout.by_key["blocks.9.pointwise1.weight"].index[1])
    frozen = [c for c in range(48) if c not in chans]
    np.testing.assert_array_equal(pw[:, frozen], model.node("blocks.9.pointwise1").params["weight"][:, frozen])
    assert not np.array_equal(pw[:, chans], model.node("blocks.9.pointwise1").params["weight"][:, chans])
    for name in ("blocks.6.pointwise2", "blocks.11.pointwise1"):  # frozen layer; bias-only layer's weights
        np.testing.assert_array_equal(g.node(name).params["weight"], model.node(name).params["weight"])


def _malformed(arrays, layout):
    key = "blocks.9.pointwise1.weight"
    bad = {}
    bad["missing"] = {k: v for k, v in arrays.items() if k != "classifier.bias"}
    bad["extra"] = dict(arrays, secret=np.zeros(3))
    bad["dtype"] = dict(arrays, **{key: arrays[key].astype(np.int16) * 3})
    bad["shape"] = dict(arrays, **{key: arrays[key][:, :-1]})
    bad["layout"] = dict(arrays, layout_id=np.array([layout.layout_id ^ 1], np.uint32))
    bad["nan scale"] = dict(arrays, **{"classifier.w_scales": np.full(10, np.nan, np.float32)})
    bad["other scale"] = dict(arrays, **{"classifier.w_scales": arrays["classifier.w_scales"] * 2})
    bad["not array"] = dict(arrays, **{key: arrays[key].tolist()})
    return bad


def test_malformed_updates_are_rejected_with_a_reason(model, layout):
    arrays = layout.extract(model)
    layout.check(arrays, reference=arrays)  # the genuine one passes
    reasons = {}
    for name, bad in _malformed(arrays, layout).items():
        with pytest.raises(UpdateRejected) as e:
            layout.check(bad, reference=arrays)
        reasons[name] = str(e.value)
    assert "classifier.bias" in reasons["missing"] and "secret" in reasons["extra"]
    assert "int16" in reasons["dtype"] and "layout id" in reasons["layout"] and "differ" in reasons["other scale"]


def _hand_layout(model, layout):
    """Global update plus two client updates that differ from it in a few hand-set elements."""
    g = layout.extract(model)
    for k, e in layout.by_key.items():
        if e.param == "weight":
            g[k][...] = 10
    g["classifier.bias"][:3] = [2**31 - 2, -(2**31), 7]
    a, b = ({k: v.copy() for k, v in g.items()} for _ in range(2))
    w = "blocks.8.pointwise1.weight"
    a[w][0, 0, 0, 0], b[w][0, 0, 0, 0] = 13, 11  # n 1 and 3: mean 11.5, change +1.5 -> 10 + 2
    a[w][0, 1, 0, 0], b[w][0, 1, 0, 0] = 12, 10  # mean 10.5: change +0.5 rounds to even (0) -> 10
    a[w][0, 2, 0, 0], b[w][0, 2, 0, 0] = 13, 11  # see below, weights 1:1
    a[w][0, 3, 0, 0], b[w][0, 3, 0, 0] = 127, 127
    a["classifier.bias"][:3] = [2**31 - 1, -(2**31), 9]
    b["classifier.bias"][:3] = [2**31 - 1, -(2**31), 5]  # mean of 9 (n 1) and 5 (n 3) = 6
    return g, a, b, w


def test_aggregation_matches_a_hand_computation(model, layout):
    g, a, b, w = _hand_layout(model, layout)
    out = aggregate(layout, g, [(a, 1), (b, 3)])
    assert out[w][0, 0, 0, 0] == 12 and out[w][0, 1, 0, 0] == 10  # 11.5 -> +rint(1.5) = 12; 10.5 -> +rint(.5) = 10
    assert out[w][0, 2, 0, 0] == 12 and out[w][0, 3, 0, 0] == 127  # (13 + 33) / 4 = 11.5 -> 12; saturation-safe
    assert out["classifier.bias"][:3].tolist() == [2**31 - 1, -(2**31), 6]  # INT32 extremes stay exact
    assert out[w].dtype == np.int8 and out["classifier.bias"].dtype == np.int32
    np.testing.assert_array_equal(out[w][1:], g[w][1:])  # untouched elements keep the global codes
    assert out["classifier.w_scales"] is not g["classifier.w_scales"]
    np.testing.assert_array_equal(out["classifier.w_scales"], g["classifier.w_scales"])
    # the order in which replies arrive does not matter (exact integer sums)
    out2 = aggregate(layout, g, [(b, 3), (a, 1)])
    assert all(np.array_equal(out[k], out2[k]) for k in out)
    # equal weights: (13 + 11) / 2 = 12
    assert aggregate(layout, g, [(a, 5), (b, 5)])[w][0, 2, 0, 0] == 12


def test_aggregation_dequantises_with_each_updates_scale(model, layout):
    g, a, b, w = _hand_layout(model, layout)
    a = dict(a, **{"blocks.8.pointwise1.w_scales": a["blocks.8.pointwise1.w_scales"] * np.float32(2)})
    # a's code 13 at twice the scale is the real value of code 26 at the global scale: (26 + 3 * 11) / 4 = 14.75
    assert aggregate(layout, g, [(a, 1), (b, 3)])[w][0, 0, 0, 0] == 15


def test_partitions_cover_every_sample_once_and_are_reproducible():
    labels = np.repeat(np.arange(10), 50)
    for how in ("iid", "dirichlet:0.5", "dirichlet:0.05"):
        parts = partition(labels, 10, how, seed=3)
        assert sorted(np.concatenate(parts).tolist()) == list(range(500)) and all(len(p) for p in parts)
        again = partition(labels, 10, how, seed=3)
        assert all(np.array_equal(p, q) for p, q in zip(parts, again))
        other = partition(labels, 10, how, seed=4)
        assert any(not np.array_equal(p, q) for p, q in zip(parts, other))
    iid = partition(labels, 10, "iid", seed=0)
    assert {len(p) for p in iid} == {50}
    # Dirichlet 0.5: clients are dominated by a few classes; IID clients see all ten evenly
    def top_share(parts):
        return np.mean([np.bincount(labels[p], minlength=10).max() / len(p) for p in parts])
    assert top_share(partition(labels, 10, "dirichlet:0.5", seed=0)) > 0.3 > 0.2 > top_share(iid)
    assert len(partition(labels, 100, "dirichlet:0.5", seed=0)) == 100


@pytest.mark.parametrize("text", ["dirichlet", "dirichlet:0", "dirichlet:-1", "dirichlet:nan", "iid:2", "noniid"])
def test_bad_partition_is_a_one_line_error(text):
    with pytest.raises(MicrotrainError, match="--partition"):
        parse_partition(text)
    with pytest.raises(MicrotrainError, match="11 clients"):
        partition(np.zeros(10), 11)

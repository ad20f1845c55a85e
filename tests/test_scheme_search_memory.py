"""The analytic memory model reproduces upstream's published MCUNet figures; budgets parse strictly."""
from __future__ import annotations

import pytest

from microtrain.errors import BudgetError, SchemeError
from microtrain.sparse.fixtures import fixture_names, load_fixture, load_scheme
from microtrain.scheme_search.memory import KB, MemoryModel, check_budget, extra_memory_bytes, parse_budget
from microtrain.sparse.scheme import UpdateScheme

# Lin et al. 2022 / upstream tiny-training: analytic extra memory of the shipped MCUNet schemes (KB).
UPSTREAM_KB = {
    "mcunet-5fps-49kb": 49.8,
    "mcunet-5fps-74kb": 74.8,
    "mcunet-5fps-99kb": 99.8,
    "mcunet-5fps-124kb": 125.0,
    "mcunet-5fps-148kb": 148.4,
    "mcunet-5fps-last-12": 448.0,
    "mcunet-5fps-bias-only": 121.3,
}


@pytest.mark.parametrize("name", sorted(UPSTREAM_KB))
def test_fixture_reproduces_upstream_figure(mcunet, name):
    kb = extra_memory_bytes(mcunet, load_fixture(name)) / KB
    assert kb == pytest.approx(UPSTREAM_KB[name], rel=0.01)


def test_full_update_figure(mcunet):
    assert extra_memory_bytes(mcunet, UpdateScheme.full(mcunet)) / KB == pytest.approx(1400, rel=0.01)


def test_fixtures_ship_and_roundtrip(tmp_path):
    names = fixture_names()
    assert set(UPSTREAM_KB) <= set(names)
    s = load_fixture("mcunet-5fps-99kb")
    assert (s.n_bias, s.weights) == (22, {21: 1.0, 24: 1.0, 27: 1.0, 30: 1.0, 36: 0.125, 39: 0.25})
    again = load_scheme(s.save(tmp_path / "s.json"))
    assert (again.n_bias, again.weights, again.selection) == (s.n_bias, s.weights, s.selection)
    with pytest.raises(SchemeError, match="shipped"):
        load_scheme("no-such-scheme")


def test_memory_counts_the_resolved_channels(mcunet):
    """The model's channel count is the one resolve() trains (simulation and codegen share it)."""
    s = load_fixture("mcunet-5fps-124kb")
    rows = {r.name: r for r in MemoryModel(mcunet).breakdown(s)}
    for name, spec in s.resolve(mcunet).items():
        if spec.channels is not None and name in rows and rows[name].index >= 0:
            node = mcunet.node(name)
            h, w, _ = mcunet.tensors[node.inputs[0]].shape
            assert rows[name].saved_input == 8 * h * w * len(spec.channels)
    # more memory for more of anything
    m = MemoryModel(mcunet)
    assert m.bits(10, {}) < m.bits(11, {}) < m.bits(11, {40: 0.125}) < m.bits(11, {40: 0.25})


def test_head_only_minimum_and_budget_error(mcunet):
    m = MemoryModel(mcunet)
    assert m.minimum_bytes == 160  # the pooled 160-channel input the classifier saves
    assert m.scheme_bytes(UpdateScheme.head_only()) == 160
    check_budget(m, 160)
    with pytest.raises(BudgetError, match=r"160 B"):
        check_budget(m, 100)


@pytest.mark.parametrize("text,expected", [("100KB", 102400), ("49.8KB", 50995), ("1MB", 1048576),
                                           ("51200", 51200), ("300B", 300), (" 2 kib ", 2048), (4096, 4096)])
def test_parse_budget(text, expected):
    assert parse_budget(text) == expected


@pytest.mark.parametrize("bad", ["", "KB", "100 GB", "-5KB", "0", "1e3KB", "ten KB"])
def test_parse_budget_rejects(bad):
    with pytest.raises(BudgetError, match="budget"):
        parse_budget(bad)


def test_pinned_channels_survive_training_and_json(mcunet, tmp_path):
    """A pinned scheme trains the same slices on a graph whose weight norms have moved (as after
    training), so simulation and generated code agree; an unpinned 'norm' scheme would re-select."""
    import numpy as np

    s = load_fixture("mcunet-5fps-49kb")
    pinned = s.pinned(mcunet)
    assert pinned.resolve(mcunet) == s.resolve(mcunet)
    moved = mcunet.copy()
    conv = moved.indexed_convs()[24]
    w = conv.params["weight"]
    conv.params["weight"] = np.ascontiguousarray(w[:, ::-1])  # permute input channels: norms move
    name = conv.name
    assert s.resolve(moved)[name].channels != pinned.resolve(mcunet)[name].channels
    again = UpdateScheme.load(pinned.save(tmp_path / "p.json"))
    assert again.resolve(moved)[name].channels == pinned.resolve(mcunet)[name].channels
    assert MemoryModel(mcunet).scheme_bytes(again) == MemoryModel(mcunet).scheme_bytes(s)


def test_pinned_channels_are_checked(mcunet):
    with pytest.raises(SchemeError, match="must be 12 distinct"):
        UpdateScheme(20, {24: 0.25}, channels={24: (0, 1)}).resolve(mcunet)
    with pytest.raises(SchemeError, match="not trained"):
        UpdateScheme(20, {24: 0.25}, channels={27: (0,)}).validate(mcunet)

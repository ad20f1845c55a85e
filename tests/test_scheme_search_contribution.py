"""Contribution analysis: the right fine-tunes on a held-out split of the training data, cached on disk,
resumable, run on two workers; then searched through `microtrain plan`."""
from __future__ import annotations

from fractions import Fraction as F

import numpy as np
import pytest

from microtrain.errors import DatasetError
from microtrain.runtime.datasets import as_image_data
from microtrain.scheme_search.contribution import AnalysisSettings, analyze, holdout_split, plan_jobs


def fake_fine_tune(graph, scheme, train, held, *, epochs, lr, seed, batch_size):
    """A deterministic stand-in for the trainer: accuracy grows with what is trained. It checks that the
    analysis scores on a held-out split disjoint from the images it trains on."""
    assert len(train) and len(held) and not set(map(bytes, train.views)) & set(map(bytes, held.views))
    acc = 0.5 + 0.01 * scheme.n_bias + sum(0.1 * r * (1 + i / 100) for i, r in scheme.weights.items())
    return {"val_acc": acc, "val_loss": 1 - acc}


def small_data(n=20, res=16, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, size=(n, res, res, 3)).astype(np.int8)
    return as_image_data((x, np.arange(n) % 2))


def test_plan_jobs(mcunet):
    jobs, bias_ref = plan_jobs(mcunet, AnalysisSettings(n_candidates=3, ratios=("1/8", "1")))
    assert bias_ref == 3  # covers convs 39, 40, 41
    bias = sorted(s.n_bias for name, s in jobs.items() if name.startswith("bias-"))
    assert bias[0] == 0 and bias[-1] == 42 and 3 in bias
    weights = [s for name, s in jobs.items() if name.startswith("w")]
    assert len(weights) == 6 and all(s.n_bias == 3 and len(s.weights) == 1 for s in weights)
    assert {(i, F(r)) for s in weights for i, r in s.weights.items()} == {(i, F(r)) for i in (39, 40, 41)
                                                                         for r in (F(1, 8), F(1))}


def test_holdout_split_is_stratified_disjoint_and_deterministic():
    labels = np.array([0] * 10 + [1] * 20)
    tr, ho = holdout_split(labels, 0.3, seed=1)
    assert not set(tr) & set(ho) and len(tr) + len(ho) == 30
    assert (labels[ho] == 0).sum() == 3 and (labels[ho] == 1).sum() == 6
    tr2, ho2 = holdout_split(labels, 0.3, seed=1)
    assert (ho == ho2).all()
    with pytest.raises(DatasetError, match="too few"):
        holdout_split(np.array([0, 1, 1]), 0.5, seed=0)


def test_analysis_gains_cache_and_resume(mcunet, tmp_path):
    settings = AnalysisSettings(weight_convs=(40, 41), ratios=("1/4", "1"), bias_step=14)
    logs = []
    table = analyze(mcunet, data=small_data(), settings=settings, cache_dir=tmp_path, workers=2,
                    fine_tune=fake_fine_tune, log=logs.append)
    assert table.bias_ref == 2 and table.base_acc == pytest.approx(0.5)
    assert table.bias == pytest.approx({0: 0.0, 2: 0.02, 14: 0.14, 28: 0.28, 42: 0.42})
    assert table.weights[(41, F(1, 4))] == pytest.approx(0.1 * 0.25 * 1.41)
    assert table.weights[(40, F(1))] == pytest.approx(0.1 * 1.40)
    n_jobs = len(list(tmp_path.glob("*.json")))
    assert n_jobs == 9 and sum("] " in m for m in logs) == 9

    # a finished analysis is free; a partial one recomputes only what is missing
    sorted(tmp_path.glob("*.json"))[0].unlink()
    logs.clear()
    again = analyze(mcunet, data=small_data(), settings=settings, cache_dir=tmp_path, workers=2,
                    fine_tune=fake_fine_tune, log=logs.append)
    assert "(8 cached)" in logs[0] and sum("] " in m for m in logs) == 1
    assert again.to_dict()["weights"] == table.to_dict()["weights"]
    # other settings or other data are other cache entries
    logs.clear()
    analyze(mcunet, data=small_data(seed=1), settings=settings, cache_dir=tmp_path, workers=1,
            fine_tune=fake_fine_tune, log=logs.append)
    assert "(0 cached)" in logs[0]


def test_analysis_with_the_real_trainer(mcunet, tmp_path):
    """End to end on tiny images: the real fine_tune on two workers, then a search over its table."""
    from microtrain.scheme_search.memory import MemoryModel
    from microtrain.scheme_search.search import search

    g = mcunet.with_resolution(32)
    settings = AnalysisSettings(epochs=1, batch_size=8, weight_convs=(41,), ratios=("1/8",), bias_step=21)
    table = analyze(g, data=small_data(n=16, res=32), settings=settings, cache_dir=tmp_path, workers=2,
                    log=lambda s: None)
    assert set(table.bias) == {0, 1, 21, 42} and set(table.weights) == {(41, F(1, 8))}
    assert 0 <= table.base_acc <= 1 and len(table.meta["runs"]) == 5
    res = search(table, MemoryModel(g), 50 * 1024, generations=5)
    assert res.bytes <= 50 * 1024


def test_cache_key_tells_apart_every_attribute_that_changes_the_numbers():
    """Graphs differing only in a stride, padding, groups, clamp, dilation, rounding mode or a tensor's
    quantisation compute other numbers: they never share cached fine-tunes (the key is ir.graph's fingerprint)."""
    from conftest import small_graph

    from microtrain.ir.graph import QuantParams
    from microtrain.scheme_search.contribution import graph_fingerprint

    base = small_graph()

    def variant(change):
        g = base.copy()
        change(g)
        return graph_fingerprint(g)

    changes = {
        "stride": lambda g: g.node("dw").attrs.update(stride=2),
        "padding": lambda g: g.node("conv0").attrs.update(padding=0),
        "groups": lambda g: g.node("pw1").attrs.update(groups=2),
        "clamp": lambda g: g.node("pw2").attrs.update(requant="tflite", clamp=(-5, 127)),
        "dilation": lambda g: g.node("dw").attrs.update(dilation=2, padding=2),
        "quantisation": lambda g: setattr(g.tensors["d"], "quant", QuantParams(0.0611, -127)),
        "wiring": lambda g: g.node("res").inputs.reverse(),
    }
    keys = {name: variant(change) for name, change in changes.items()}
    assert len(set(keys.values())) == len(keys) and graph_fingerprint(base) not in keys.values(), keys
    assert variant(lambda g: None) == graph_fingerprint(base)  # a copy keeps its key

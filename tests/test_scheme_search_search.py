"""The evolutionary search finds the known optimum of instances solved exactly, honours the budget,
and is deterministic given its seed."""
from __future__ import annotations

import itertools
from fractions import Fraction as F

import numpy as np
import pytest

from microtrain.errors import BudgetError, SchemeError
from microtrain.scheme_search.memory import MemoryModel, check_budget
from microtrain.scheme_search.search import GainTable, _Problem, search


def brute_force(table: GainTable, model: MemoryModel, budget_bytes: int) -> tuple[float, tuple]:
    """Exhaustive optimum (small instances only; used to check the search)."""
    check_budget(model, budget_bytes)
    prob = _Problem(table, model, budget_bytes)
    best = (float("-inf"), None)
    for n_bias in prob.bias_keys:
        for genes in itertools.product(*[range(k) for k in prob.n_options]):
            if n_bias < prob.min_bias_for(genes):
                continue
            gain, bits = prob.score((n_bias, *genes))
            if bits <= prob.budget_bits and gain > best[0]:
                best = (gain, (n_bias, prob.weights_of(genes)))
    return best


RATIOS = (F(1, 8), F(1, 4), F(1, 2), F(1))


def random_table(seed, convs, bias_keys):
    """Synthetic gains shaped like the paper's findings (later convs and more channels help), plus noise
    (some negative) so the optimum is not trivially 'everything late'."""
    rng = np.random.default_rng(seed)
    bias = {k: 0.03 * np.log1p(k) + 0.002 * rng.standard_normal() for k in bias_keys}
    weights = {(i, r): 0.01 * rng.random() * float(r) ** 0.5 * (1 + i / 42) - 0.001 for i in convs for r in RATIOS}
    return GainTable("mcunet-5fps", 0.5, bias, weights, bias_ref=max(bias_keys))


def exact_knapsack(table, model, budget):
    """Optimum by dynamic programming (multiple-choice knapsack per n_bias, capacity in bytes)."""
    p = _Problem(table, model, budget)
    best = -np.inf
    for k in p.bias_keys:
        if p.bias_bits[k] > p.budget_bits:
            continue
        cap = (p.budget_bits - p.bias_bits[k]) // 8
        dp = np.zeros(cap + 1)
        for j, conv in enumerate(p.convs):
            if conv < p.n - k:
                continue
            new = dp.copy()
            for g in range(1, p.n_options[j]):
                w = p.costs[j][g] // 8
                if w <= cap:
                    new[w:] = np.maximum(new[w:], dp[: cap + 1 - w] + p.gains[j][g])
            dp = new
        best = max(best, p.bias_gain[k] + dp.max())
    return best


@pytest.mark.parametrize("seed,budget_kb", [(0, 40), (1, 60), (2, 90)])
def test_finds_brute_force_optimum(mcunet, seed, budget_kb):
    model = MemoryModel(mcunet)
    table = random_table(seed, convs=(30, 33, 36, 39), bias_keys=(0, 4, 8, 12, 16, 20))
    budget = budget_kb * 1024
    best_gain, (n_bias, weights) = brute_force(table, model, budget)
    res = search(table, model, budget, seed=seed, generations=60)
    assert res.gain == pytest.approx(best_gain, abs=1e-12)
    assert res.bytes <= budget


@pytest.mark.parametrize("budget_kb", [49, 100])
def test_matches_exact_optimum_on_full_size_instance(mcunet, budget_kb):
    model = MemoryModel(mcunet)
    table = random_table(7, convs=range(18, 42), bias_keys=range(0, 43, 2))
    res = search(table, model, budget_kb * 1024, seed=3)
    assert res.gain == pytest.approx(exact_knapsack(table, model, budget_kb * 1024), abs=1e-9)


def test_result_is_feasible_deterministic_and_scored_honestly(mcunet):
    model = MemoryModel(mcunet)
    table = random_table(5, convs=range(18, 42), bias_keys=range(0, 43, 3))
    a = search(table, model, 100 * 1024, seed=11, generations=40)
    b = search(table, model, 100 * 1024, seed=11, generations=40)
    assert (a.scheme.n_bias, a.scheme.weights, a.gain) == (b.scheme.n_bias, b.scheme.weights, b.gain)
    assert a.bytes == model.scheme_bytes(a.scheme) <= 100 * 1024
    assert a.gain == pytest.approx(table.gain(a.scheme))
    assert all(i >= model.n - a.scheme.n_bias for i in a.scheme.weights)  # weights train their bias too
    a.scheme.validate(mcunet)
    assert "expected gain" in a.summary(table)


def test_below_minimum_budget_names_the_minimum(mcunet):
    table = random_table(0, convs=(40,), bias_keys=(0, 2))
    with pytest.raises(BudgetError, match=r"needs 160 B"):
        search(table, MemoryModel(mcunet), 100)


def test_gain_table_roundtrip_and_errors(tmp_path):
    t = random_table(3, convs=(39, 41), bias_keys=(0, 6))
    t2 = GainTable.load(t.save(tmp_path / "g.json"))
    assert t2.weights == t.weights and t2.bias == t.bias and t2.bias_ref == t.bias_ref
    from microtrain.sparse.scheme import UpdateScheme

    with pytest.raises(SchemeError, match="n_bias=5"):
        t.gain(UpdateScheme(5, {}))
    with pytest.raises(SchemeError, match="conv 40"):
        t.gain(UpdateScheme(6, {40: 1.0}))
    with pytest.raises(SchemeError, match="gain table"):
        GainTable.from_dict({"format": "x"})

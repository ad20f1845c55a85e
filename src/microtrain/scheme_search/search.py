"""Evolutionary search for the scheme that maximises the total measured gain under a memory budget.

The paper's assumption: gains add up. A scheme (n_bias, {conv: ratio}) is scored
    gain = bias_gain[n_bias] + sum over its weight updates of weight_gain[(conv, ratio)]
with the gains of a GainTable (contribution.py measures them), and it is feasible when its analytic
extra memory (memory.MemoryModel) is within the budget. As upstream, a weight-trained conv also trains
its bias: the weight convs lie within the last n_bias convs.

A genome is (n_bias, one option per candidate conv: 0 = frozen, j = the j-th measured ratio). Evolution:
elitism, tournament selection, uniform crossover, per-gene mutation, and a repair step that makes every
child feasible (drop the weight update with the lowest gain per bit until it fits). The population is
seeded with head-only and a greedy solution, so the result is never worse than greedy. Deterministic
given the seed.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..errors import BudgetError, SchemeError
from .memory import MemoryModel, check_budget, format_bytes
from ..sparse.scheme import UpdateScheme


def _frac(r) -> Fraction:
    return Fraction(r).limit_denominator(64)


@dataclass
class GainTable:
    """Measured accuracy gains (fractions of 1, e.g. 0.031 = +3.1 points).

    bias[k]: gain of training the last k biases (and the head) over training the head only; bias[0] = 0.
    weights[(conv, ratio)]: extra gain of also training conv's weights at ratio, measured on top of the
    last `bias_ref` biases.
    """

    model: str
    base_acc: float
    bias: dict[int, float]
    weights: dict[tuple[int, Fraction], float]
    bias_ref: int = 0
    meta: dict = field(default_factory=dict)
    metric: str = "acc"  # "acc": gains are accuracy (fraction); "loss": decrease of held-out loss (nats)

    def __post_init__(self):
        self.bias = {int(k): float(v) for k, v in self.bias.items()}
        self.bias.setdefault(0, 0.0)
        self.weights = {(int(i), _frac(r)): float(v) for (i, r), v in self.weights.items()}

    def to_dict(self) -> dict:
        by_conv: dict[str, dict[str, float]] = {}
        for (i, r), v in sorted(self.weights.items()):
            by_conv.setdefault(str(i), {})[str(r)] = v
        return {
            "format": "microtrain-gains",
            "model": self.model,
            "base_acc": self.base_acc,
            "bias_ref": self.bias_ref,
            "metric": self.metric,
            "bias": {str(k): v for k, v in sorted(self.bias.items())},
            "weights": by_conv,
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, d: dict, source: str = "gains") -> "GainTable":
        if not isinstance(d, dict) or d.get("format") != "microtrain-gains":
            raise SchemeError(f"{source}: not a microtrain gain table (missing format='microtrain-gains')")
        try:
            weights = {(int(i), Fraction(r)): float(v) for i, rs in d["weights"].items() for r, v in rs.items()}
            return cls(str(d["model"]), float(d["base_acc"]), dict(d["bias"]), weights,
                       int(d.get("bias_ref", 0)), dict(d.get("meta", {})), str(d.get("metric", "acc")))
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as e:
            raise SchemeError(f"{source}: malformed gain table ({e!r})") from None

    def save(self, path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        return path

    @classmethod
    def load(cls, path) -> "GainTable":
        path = Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text()), str(path))
        except (OSError, json.JSONDecodeError) as e:
            raise SchemeError(f"{path}: cannot read gain table ({e})") from None

    def gain(self, scheme: UpdateScheme) -> float:
        """Predicted gain of a scheme; SchemeError if it uses an unmeasured n_bias or (conv, ratio)."""
        if scheme.n_bias not in self.bias:
            raise SchemeError(f"gain table has no measurement for n_bias={scheme.n_bias} (has {sorted(self.bias)})")
        total = self.bias[scheme.n_bias]
        for i, r in scheme.weights.items():
            key = (int(i), _frac(r))
            if key not in self.weights:
                raise SchemeError(f"gain table has no measurement for conv {i} at ratio {key[1]}")
            total += self.weights[key]
        return total


@dataclass
class SearchResult:
    scheme: UpdateScheme
    bytes: float
    gain: float
    budget_bytes: int
    evaluated: int

    def summary(self, table: GainTable | None = None) -> str:
        s = self.scheme
        w = ", ".join(f"{i} x {_frac(r)}" for i, r in sorted(s.weights.items())) or "none"
        lines = [
            f"scheme {s.name}: biases of the last {s.n_bias} convs; weights: {w}; selection {s.selection}",
            f"extra memory {format_bytes(self.bytes)} ({self.bytes:.0f} B) of a {format_bytes(self.budget_bytes)} budget",
            self.describe_gain(table),
        ]
        return "\n".join(lines)


    def describe_gain(self, table: GainTable | None) -> str:
        if self.gain <= 0 and self.scheme.n_bias == 0 and not self.scheme.weights:
            return ("expected gain 0: no measured update beat training the head only, so the head only it is "
                    "(try --metric loss, more data, or more analysis epochs for a finer signal)")
        if table is not None and table.metric == "loss":
            return f"expected gain: held-out loss lower by {self.gain:.4f} nats than when training the head only"
        text = f"expected gain {100 * self.gain:+.2f} accuracy points over training the head only"
        if table is not None:
            # gains are assumed additive (the paper's model); their sum can overshoot, so cap at 100 %
            expected = min(1.0, table.base_acc + self.gain)
            text += (f" (head only {100 * table.base_acc:.1f} % -> about {100 * expected:.1f} % on the held-out"
                     f" split, assuming gains add up)")
        return text


class _Problem:
    """The search space over a gain table and a memory model.

    Because weight convs lie within the bias range, memory is additive: bits = bias_bits[n_bias] (head +
    mask and bias of the last n_bias convs) + the weight cost of each gene; so is the predicted gain."""

    def __init__(self, table: GainTable, model: MemoryModel, budget_bytes: int):
        self.n = model.n
        self.model = model
        self.budget_bits = int(budget_bytes) * 8
        self.bias_keys = sorted(k for k in table.bias if 0 <= k <= self.n)
        self.bias_gain = table.bias
        self.bias_bits = {k: model.bits(k, {}) for k in self.bias_keys}
        by_conv: dict[int, list[tuple[Fraction, float]]] = {}
        for (i, r), g in sorted(table.weights.items()):
            if 0 <= i < self.n:
                by_conv.setdefault(i, []).append((r, g))
        self.convs = sorted(by_conv)
        self.ratios = [[None] + [r for r, _ in by_conv[i]] for i in self.convs]  # option 0 = frozen
        self.gains = [[0.0] + [g for _, g in by_conv[i]] for i in self.convs]
        self.costs = [[0] + [model.convs[i].weight_bits(r) for r, _ in by_conv[i]] for i in self.convs]
        self.n_options = [len(r) for r in self.ratios]

    def weights_of(self, genes) -> dict[int, float]:
        return {c: float(self.ratios[j][g]) for j, (c, g) in enumerate(zip(self.convs, genes)) if g}

    def score(self, ind: tuple) -> tuple[float, int]:
        """(gain, bits) of an individual (n_bias, genes...)."""
        genes = ind[1:]
        gain = self.bias_gain[ind[0]] + sum(self.gains[j][g] for j, g in enumerate(genes) if g)
        bits = self.bias_bits[ind[0]] + sum(self.costs[j][g] for j, g in enumerate(genes) if g)
        return gain, bits

    def min_bias_for(self, genes) -> int:
        active = [c for c, g in zip(self.convs, genes) if g]
        return self.n - min(active) if active else 0

    def repair(self, n_bias: int, genes) -> tuple:
        """Feasible individual close to (n_bias, genes): weights within the bias range, memory within
        budget. Steps down the weight option with the lowest gain per bit, then shrinks n_bias."""
        genes = list(genes)
        while True:
            need = self.min_bias_for(genes)
            if n_bias < need:  # raise n_bias to the smallest measured k covering the weight convs
                cover = [k for k in self.bias_keys if k >= need]
                if not cover:  # no measured k covers them: drop the earliest weight conv
                    genes[next(j for j, g in enumerate(genes) if g)] = 0
                    continue
                n_bias = cover[0]
            gain, bits = self.score((n_bias, *genes))
            if bits <= self.budget_bits:
                return (n_bias, *genes)
            active = [j for j, g in enumerate(genes) if g]
            if active:
                def value(j):
                    g = genes[j]
                    return (self.gains[j][g] - self.gains[j][g - 1]) / max(self.costs[j][g] - self.costs[j][g - 1], 1)

                genes[min(active, key=value)] -= 1  # the next smaller ratio (or frozen)
            else:
                lower = [k for k in self.bias_keys if k < n_bias]
                n_bias = lower[-1] if lower else 0

    def greedy(self) -> tuple:
        """Hill climb from head-only: take the feasible move with the best gain per extra bit."""
        ind = (0, *[0] * len(self.convs))
        while True:
            gain, bits = self.score(ind)
            moves = [(k, *ind[1:]) for k in self.bias_keys if k > ind[0]]
            for j in range(len(self.convs)):
                for g in range(ind[1 + j] + 1, self.n_options[j]):
                    moves.append((ind[0], *ind[1:1 + j], g, *ind[2 + j:]))
            best, best_value = None, 0.0
            for m in moves:
                m = self.repair(m[0], m[1:])
                g2, b2 = self.score(m)
                if g2 > gain:
                    value = (g2 - gain) / max(b2 - bits, 1)
                    if best is None or value > best_value:
                        best, best_value = m, value
            if best is None:
                return ind
            ind = best


def search(
    table: GainTable,
    model: MemoryModel,
    budget_bytes: int,
    *,
    seed: int = 0,
    population: int = 64,
    generations: int = 200,
    mutation: float | None = None,
    selection: str = "norm",
    name: str | None = None,
) -> SearchResult:
    """The scheme with the largest predicted gain whose extra memory fits `budget_bytes`."""
    check_budget(model, budget_bytes)
    if not table.bias and not table.weights:
        raise BudgetError("gain table is empty: run the contribution analysis first")
    prob = _Problem(table, model, budget_bytes)
    rng = np.random.default_rng(seed)
    n_genes = len(prob.convs)
    p_mut = mutation if mutation is not None else 1.0 / max(n_genes + 1, 2)

    scores: dict[tuple, tuple[float, int]] = {}

    def score(ind):
        hit = scores.get(ind)
        if hit is None:
            hit = scores[ind] = prob.score(ind)
        return hit

    def fitness(ind):
        return score(ind)[0]

    def random_ind():
        genes = [int(rng.integers(0, k)) if rng.random() < 0.3 else 0 for k in prob.n_options]
        return prob.repair(int(rng.choice(prob.bias_keys)), genes)

    pop = [prob.repair(0, [0] * n_genes), prob.greedy()]
    pop += [random_ind() for _ in range(population - len(pop))]
    elite = max(2, population // 8)
    for _ in range(generations):
        pop = sorted(set(pop), key=lambda ind: (-fitness(ind), score(ind)[1], ind))
        nxt = pop[:elite]
        while len(nxt) < population:
            # tournaments of 3: pop is sorted best first, so the smallest index wins
            a, b = (int(rng.choice(len(pop), size=3).min()) for _ in range(2))
            pa, pb = pop[a], pop[b]
            child = [pa[i] if rng.random() < 0.5 else pb[i] for i in range(n_genes + 1)]
            if rng.random() < p_mut * 2:
                pos = prob.bias_keys.index(child[0]) + int(rng.choice([-1, 1]))
                child[0] = prob.bias_keys[min(max(pos, 0), len(prob.bias_keys) - 1)]
            for j in range(n_genes):
                if rng.random() < p_mut:
                    child[1 + j] = int(rng.integers(0, prob.n_options[j]))
            nxt.append(prob.repair(child[0], child[1:]))
        pop = nxt
    best = max(pop, key=lambda ind: (fitness(ind), -score(ind)[1]))
    gain, bits = score(best)
    weights = prob.weights_of(best[1:])
    assert bits == model.bits(best[0], weights), "additive memory disagrees with the memory model"
    scheme = UpdateScheme(
        best[0], weights, selection,
        name or f"{table.model}-searched-{budget_bytes / 1024:g}kb",
    )
    return SearchResult(scheme, bits / 8, gain, int(budget_bytes), len(scores))

"""benchmarks/qas_paired.py: paired differences, t interval and the exact sign-flip test on known tables."""
from __future__ import annotations

import json
import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))


def table(a_accs, b_accs):
    """Two models, settings 'x' and 'y', with the given per-seed accuracies split across the models."""
    half = len(a_accs) // 2
    return {"models": {"m1": {"x": {"val_acc": a_accs[:half]}, "y": {"val_acc": b_accs[:half]}},
                       "m2": {"x": {"val_acc": a_accs[half:]}, "y": {"val_acc": b_accs[half:]}}}}


def test_constant_advantage_is_significant_and_exact():
    from qas_paired import paired

    r = paired(table([0.91, 0.92, 0.93, 0.94], [0.90, 0.91, 0.92, 0.93]), "x", "y")
    assert r["diffs"] == [1.0, 1.0, 1.0, 1.0]
    assert r["mean"] == pytest.approx(1.0) and r["se"] == pytest.approx(0.0, abs=1e-9)
    assert r["p_sign_flip"] == pytest.approx(2 / 16)  # all + or all -: 2 of the 16 sign patterns


def test_symmetric_differences_are_not_significant():
    from qas_paired import paired

    r = paired(table([0.92, 0.90, 0.93, 0.89], [0.90, 0.92, 0.91, 0.91]), "x", "y")
    assert r["mean"] == pytest.approx(0.0, abs=1e-9)
    assert r["p_sign_flip"] == pytest.approx(1.0)
    lo, hi = r["ci95"]
    assert lo < 0 < hi
    # t interval: mean ± t(0.975, 3) * sd / sqrt(4), sd of [2, -2, 2, -2] = 2.309
    assert hi == pytest.approx(3.182446 * 2.309401 / 2, rel=1e-4)


def test_pairs_follow_model_and_seed_and_refuse_too_few():
    from qas_paired import paired

    r = paired(table([0.5, 0.6, 0.7, 0.8], [0.5, 0.5, 0.5, 0.5]), "x", "y")
    assert r["diffs"] == pytest.approx([0.0, 10.0, 20.0, 30.0])
    with pytest.raises(ValueError, match="at least 2"):
        paired({"models": {"m": {"x": {"val_acc": [0.9]}, "y": {"val_acc": [0.8]}}}}, "x", "y")
    with pytest.raises(ValueError):  # seeds that do not pair up are an error, not a silent truncation
        paired({"models": {"m": {"x": {"val_acc": [0.9, 0.8]}, "y": {"val_acc": [0.8]}}}}, "x", "y")


def test_results_of_the_experiment_are_read():
    """The committed result files pair up (3 models x 3 seeds), as the README's headline states."""
    from qas_paired import RESULTS, paired

    for stem in ("qas", "qas_digits"):
        t = json.loads((RESULTS / f"{stem}.json").read_text())
        r = paired(t, "int8+QAS", "int8")
        assert len(r["diffs"]) == 9 and r["ci95"][0] < r["mean"] < r["ci95"][1]
        # equal seeds per model: the mean paired difference is the difference of the table's averages
        assert r["mean"] == pytest.approx(100 * (t["average"]["int8+QAS"] - t["average"]["int8"]), abs=1e-6)

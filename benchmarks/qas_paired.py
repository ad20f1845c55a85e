"""How sure are the QAS experiment's average differences? A paired reading of its final runs.

exp_qas.py reports means over 3 models x 3 seeds. This script pairs the settings' final runs by
(model, seed) (the same seed gives the same batch order and views, and the validation set is shared), and
for each comparison prints the mean paired difference, its standard error, a 95 % t interval and the exact
two-sided sign-flip permutation p-value over the 9 pairs. It reads only the result files
(results/qas.json, results/qas_digits.json; nothing is retrained) and writes results/qas_paired.{json,md}.
Run: python benchmarks/qas_paired.py
"""
from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
from scipy import stats

RESULTS = Path(__file__).resolve().parent / "results"
COMPARISONS = [("int8+QAS", "fp32"), ("int8+QAS", "int8"), ("int8", "head-only")]
TITLES = {"qas": "ants vs bees (hymenoptera_data)", "qas_digits": "handwritten digits (scikit-learn)"}


def paired(table: dict, a: str, b: str) -> dict:
    """Differences a - b (accuracy points) of runs with the same model and seed."""
    diffs = []
    for model, settings in table["models"].items():
        for acc_a, acc_b in zip(settings[a]["val_acc"], settings[b]["val_acc"], strict=True):
            diffs.append(100 * (acc_a - acc_b))
    if len(diffs) < 2:
        raise ValueError(f"{a} - {b}: {len(diffs)} paired run(s), at least 2 needed")
    d = np.array(diffs)
    n, mean = len(d), float(d.mean())
    se = float(d.std(ddof=1) / math.sqrt(n))
    half = float(stats.t.ppf(0.975, n - 1) * se)
    # exact sign-flip test: under "no difference" each pair's sign is a coin toss
    flips = np.array(list(itertools.product((1, -1), repeat=n)))
    p = float(np.mean(np.abs(flips @ d) >= abs(d.sum()) - 1e-9))
    return {"a": a, "b": b, "diffs": [round(x, 3) for x in diffs], "mean": mean, "se": se,
            "ci95": [mean - half, mean + half], "p_sign_flip": p}


def main() -> None:
    doc, lines = {}, ["# QAS experiment: paired differences of the final runs", "",
                      "Pairs: same model and seed (3 models x 3 seeds). Points of validation accuracy; 95 % t interval; "
                      "p: exact two-sided sign-flip permutation test. Produced by `benchmarks/qas_paired.py` from "
                      "the exp_qas.py result files (nothing retrained).", ""]
    for stem in ("qas", "qas_digits"):
        path = RESULTS / f"{stem}.json"
        if not path.exists():
            continue
        table = json.loads(path.read_text())
        one_image = 100 / table["n_val"]
        rows = [paired(table, a, b) for a, b in COMPARISONS]
        doc[stem] = {"n_val": table["n_val"], "one_image_points": one_image, "comparisons": rows}
        lines += [f"## {TITLES.get(stem, stem)}: {table['n_val']} validation images (one image = {one_image:.2f} points)",
                  "", "| difference | mean | s.e. | 95 % interval | p | per pair |", "|---|---|---|---|---|---|"]
        for r in rows:
            lines.append(f"| {r['a']} - {r['b']} | {r['mean']:+.2f} | {r['se']:.2f} | "
                         f"[{r['ci95'][0]:+.2f}, {r['ci95'][1]:+.2f}] | {r['p_sign_flip']:.3f} | "
                         + " ".join(f"{x:+.1f}" for x in r["diffs"]) + " |")
        lines.append("")
    (RESULTS / "qas_paired.json").write_text(json.dumps(doc, indent=1) + "\n")
    text = "\n".join(lines)
    (RESULTS / "qas_paired.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()

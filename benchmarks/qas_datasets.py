"""The QAS table across the real datasets, and the acceptance question: averaged over the datasets, is int8 + QAS
within 1 point of fp32, and ahead of int8 without QAS with a paired 95 % interval that excludes 0?

Reads the per-dataset tables exp_qas.py --dataset writes (results/qas/<dataset>.json; nothing is retrained) and
writes results/qas/summary.{json,md}: one row per dataset (mcunet-5fps, mean ± std over seeds, top-1 and
balanced accuracy) beside the paper's figures where the paper has the dataset; per dataset the paired
differences (same seed = same batch order and views, one validation set) with a 95 % t interval; and across
datasets the mean of the per-dataset mean differences with a t interval over datasets (the dataset is the
unit: "averaged over the datasets") and the exact sign-flip p over datasets. The momentum variant
(results/qas/<dataset>_momentum0.9.json) is set beside the plain one where both exist, and the other two
models where they ran. Datasets whose table is missing are listed as missing: a partial summary says so.

    python benchmarks/qas_datasets.py
"""
from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
from scipy import stats

RESULTS = Path(__file__).resolve().parent / "results"
DATASETS = ("cifar10", "cub50", "food101_10", "gtsrb", "flowers12", "trashnet", "clothing10", "sign_digits")
SETTINGS = ("fp32", "int8", "int8+QAS", "head-only")
COMPARISONS = (("int8+QAS", "fp32"), ("int8+QAS", "int8"), ("int8+QAS", "head-only"))
# the paper's MCUNet-5fps rows (../shared/notes/paper-facts.md; SGD-M; full datasets, not our subsets)
PAPER = {"cifar10": ("CIFAR10", 86.0, 75.4, 86.9), "cub50": ("CUB", 56.2, 55.1, 57.8),
         "flowers12": ("Flowers", 88.8, 84.5, 89.1), "food101_10": ("Food", 67.1, 52.5, 64.4),
         "person": ("VWW", 88.7, 85.4, 89.3)}
MODEL = "mcunet-5fps"


def t_interval(d) -> dict:
    d = np.asarray(d, np.float64)
    if not len(d):
        return {"n": 0, "mean": None, "se": None, "ci95": None, "p_sign_flip": None}
    n, mean = len(d), float(d.mean())
    if n < 2:
        return {"n": n, "mean": mean, "se": None, "ci95": None, "p_sign_flip": None}
    se = float(d.std(ddof=1) / math.sqrt(n))
    half = float(stats.t.ppf(0.975, n - 1) * se)
    flips = np.array(list(itertools.product((1, -1), repeat=n)))
    p = float(np.mean(np.abs(flips @ d) >= abs(d.sum()) - 1e-9))
    return {"n": n, "mean": mean, "se": se, "ci95": [mean - half, mean + half], "p_sign_flip": p}


def diffs(row: dict, a: str, b: str) -> list[float]:
    """Per-seed differences a - b in points (paired by seed)."""
    return [100 * (x - y) for x, y in zip(row[a]["val_acc"], row[b]["val_acc"], strict=True)]


def load(tag: str = "") -> dict:
    out = {}
    for d in DATASETS + ("person",):
        p = RESULTS / "qas" / f"{d}{'_' + tag if tag else ''}.json"
        if p.exists():
            out[d] = json.loads(p.read_text())
    return out


def summarise(tables: dict, model: str = MODEL) -> dict:
    rows, per = {}, {}
    for d, t in tables.items():
        row = t["models"].get(model)
        if not row or not all(s in row for s in SETTINGS):
            continue
        rows[d] = {s: {"mean": row[s]["mean"], "std": row[s]["std"], "lr": row[s]["lr"],
                       "balanced": (float(np.mean(row[s]["balanced"])) if row[s].get("balanced")
                                    and None not in row[s]["balanced"] else None)} for s in SETTINGS}
        per[d] = {f"{a} - {b}": dict(t_interval(diffs(row, a, b)), diffs=[round(x, 3) for x in diffs(row, a, b)])
                  for a, b in COMPARISONS}
    across = {}
    for a, b in COMPARISONS:
        k = f"{a} - {b}"
        across[k] = dict(t_interval([per[d][k]["mean"] for d in per]), datasets=list(per))
    return {"model": model, "rows": rows, "paired_by_dataset": per, "across_datasets": across}


def markdown(doc: dict) -> str:
    s = doc["plain"]
    done, missing = list(s["rows"]), [d for d in DATASETS if d not in s["rows"]]
    lines = ["# QAS on the real datasets (mcunet-5fps, last two blocks + new head)", "",
             "Validation top-1 %, mean ± std over seeds [chosen lr]; SGD without momentum (the device's). "
             f"Produced by `benchmarks/qas_datasets.py` from results/qas/<dataset>.json (exp_qas.py --dataset). "
             + (f"**PARTIAL: {len(done)} of {len(DATASETS)} datasets; missing: {', '.join(missing)}.**" if missing
                else "All datasets."), "",
             "| dataset | fp32 | int8 | int8+QAS | head-only | balanced fp32 / int8 / int8+QAS | paper fp32 / int8 / int8+QAS |",
             "|---|---|---|---|---|---|---|"]
    for d, r in s["rows"].items():
        cells = [f"{100 * r[x]['mean']:.1f} ± {100 * r[x]['std']:.1f} [{r[x]['lr']:g}]" for x in SETTINGS]
        bal = " / ".join("n/a" if r[x]["balanced"] is None else f"{100 * r[x]['balanced']:.1f}"
                         for x in ("fp32", "int8", "int8+QAS"))
        paper = PAPER.get(d)
        ptxt = f"{paper[0]}: {paper[1]} / {paper[2]} / {paper[3]}" if paper else ""
        lines.append(f"| {d} | " + " | ".join(cells) + f" | {bal} | {ptxt} |")
    if s["rows"]:
        avg = {x: float(np.mean([r[x]["mean"] for r in s["rows"].values()])) for x in SETTINGS}
        lines.append("| **average** | " + " | ".join(f"**{100 * avg[x]:.1f}**" for x in SETTINGS) + " | | |")
    lines += ["", "Paired differences (points; pairs = seeds of one dataset; 95 % t interval):", "",
              "| dataset | " + " | ".join(f"{a} - {b}" for a, b in COMPARISONS) + " |", "|---" * 4 + "|"]
    for d, per in s["paired_by_dataset"].items():
        lines.append(f"| {d} | " + " | ".join(_fmt(per[f'{a} - {b}']) for a, b in COMPARISONS) + " |")
    lines.append("| **across datasets** | " + " | ".join(_fmt(s["across_datasets"][f"{a} - {b}"])
                                                       for a, b in COMPARISONS) + " |")
    lines += ["", "Across datasets: the mean of the per-dataset mean differences, a t interval over datasets "
              "(n = datasets) and the exact sign-flip p over datasets.", ""]
    acc = doc.get("acceptance")
    if acc:
        lines += [f"Acceptance ({'PARTIAL, ' if missing else ''}{len(done)} datasets): {acc}", ""]
    m = doc.get("momentum")
    if m:
        lines += ["Does momentum (0.9, the paper's SGD-M) change the picture? Same protocol with momentum:", "",
                  "| dataset | int8+QAS - fp32, no momentum | with momentum | int8+QAS - int8, no momentum | with momentum |",
                  "|---|---|---|---|---|"]
        for d, r in m.items():
            lines.append(f"| {d} | {r['plain']['int8+QAS - fp32']:+.2f} | {r['momentum']['int8+QAS - fp32']:+.2f} | "
                         f"{r['plain']['int8+QAS - int8']:+.2f} | {r['momentum']['int8+QAS - int8']:+.2f} |")
        lines.append("")
    o = doc.get("other_models")
    if o:
        lines += ["Other models (same protocol), mean over seeds, top-1 %:", "",
                  "| dataset | model | fp32 | int8 | int8+QAS | head-only |", "|---|---|---|---|---|---|"]
        for d, models in o.items():
            for model, r in models.items():
                lines.append(f"| {d} | {model} | " + " | ".join(f"{100 * r[x]['mean']:.1f}" for x in SETTINGS) + " |")
        lines.append("")
    return "\n".join(lines)


def _fmt(r: dict) -> str:
    if r["mean"] is None:
        return "n/a"
    if r["ci95"] is None:
        return f"{r['mean']:+.2f} (n={r['n']})"
    return f"{r['mean']:+.2f} [{r['ci95'][0]:+.2f}, {r['ci95'][1]:+.2f}] p={r['p_sign_flip']:.3f}"


def acceptance(s: dict) -> str | None:
    a, b = s["across_datasets"]["int8+QAS - fp32"], s["across_datasets"]["int8+QAS - int8"]
    if a["n"] < 2:
        return None
    within = abs(a["mean"]) <= 1.0
    ahead = b["ci95"] is not None and b["ci95"][0] > 0
    return (f"int8+QAS - fp32 = {a['mean']:+.2f} points ({'within' if within else 'NOT within'} 1 point); "
            f"int8+QAS - int8 = {b['mean']:+.2f}, 95 % interval over datasets [{b['ci95'][0]:+.2f}, {b['ci95'][1]:+.2f}] "
            f"({'excludes' if ahead else 'does NOT exclude'} 0).")


def main() -> None:
    plain = summarise(load())
    doc = {"plain": plain, "acceptance": acceptance(plain)}
    mom = summarise(load("momentum0.9"))
    doc["momentum"] = {d: {"plain": {k: v["mean"] for k, v in plain["paired_by_dataset"][d].items()},
                           "momentum": {k: v["mean"] for k, v in mom["paired_by_dataset"][d].items()}}
                       for d in mom["paired_by_dataset"] if d in plain["paired_by_dataset"]}
    others = {}
    for d, t in load().items():
        for model, row in t["models"].items():
            if model != MODEL and all(x in row for x in SETTINGS):
                others.setdefault(d, {})[model] = {x: {"mean": row[x]["mean"]} for x in SETTINGS}
    doc["other_models"] = others
    fps = {t.get("numerics_fingerprint") for t in list(load().values()) + list(load("momentum0.9").values())}
    # one fingerprint for every table: bench may reuse this summary while the code computes it
    doc["numerics_fingerprint"] = fps.pop() if len(fps) == 1 else None
    doc["datasets_done"] = list(plain["rows"])
    doc["partial"] = len(plain["rows"]) < len(DATASETS)
    (RESULTS / "qas").mkdir(parents=True, exist_ok=True)
    (RESULTS / "qas" / "summary.json").write_text(json.dumps(doc, indent=1) + "\n")
    text = markdown(doc)
    (RESULTS / "qas" / "summary.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()

"""CPU hours of the issue-14 sparse-update queue (exp_sparse.py --dataset cub50 / food101_10 / cifar10), from
measured per-image costs (benchmarks/profile_fine_tune.py --out SWEEP.json on cub50) and the protocol's job
counts (the contribution analysis's plan_jobs, exp_sparse's schemes, lr candidates and seeds).

    python benchmarks/estimate_sparse_hours.py SWEEP.json [SWEEP_NEW.json]

Model: a fine-tune of E epochs on n training images evaluated on m images costs
E * n * train_ms(scheme) + m * eval_ms(scheme) (both per image, batch 16, 128 px: the same on every data set,
all of which load at the model's resolution). Contribution analysis: plan_jobs' 60 runs, 3 epochs on the 70 %
split, scored on the 30 %; a bias-k run costs what the measured bias-k' with the nearest k' costs, a weight
run (the last 12 biases + one candidate conv's slice) what w30-1/8 (the deepest candidate) costs. Final: each
scheme 3 lr runs (5 epochs on the 70 % split, scored on the 30 %) + 3 seeds (5 epochs on train/, scored on
val/); the 10 searched schemes (5 budgets x 2 metrics, 32-150 KB) are unknown before the analysis and costed as
last-12 (cub50's, measured 2026-12-03: the biases of the last 8-16 convs and slices of convs 30-41, i.e. a
suffix like last-12's with fewer weights). Not counted: loading images and the frozen-prefix features
(computed once per data set and boundary, cached on disk). CPU hours; exp_datasets runs two jobs at a time
on the 2 cores, so wall hours on an otherwise idle machine are about half.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

SIZES = {"cub50": (1449, 1261), "food101_10": (2550, 850), "cifar10": (5000, 2000)}  # train/, val/ images
HOLDOUT = 0.3
ANALYSIS_EPOCHS, FINAL_EPOCHS, LRS, SEEDS, SEARCHED = 3, 5, 3, 3, 10
UPSTREAM = [f"fixture:mcunet-5fps-{kb}kb" for kb in (49, 74, 99, 124, 148)]
FINAL = ["last-1", "last-2", "last-3", "last-6", "last-12", "bias-only", "head-only", "full"] + UPSTREAM


def cost(sweep: dict, name: str) -> tuple[float, float]:
    """(train ms per image-epoch, eval ms per image) of a scheme, by the rules above."""
    s = sweep["schemes"]
    if name.startswith("bias-") and name not in s and name != "bias-only":
        k = int(name[5:])
        measured = {int(n[5:]): n for n in s if n.startswith("bias-") and n[5:].isdigit()}
        measured[42] = "bias-only"
        if k == 0:
            name = "head-only"
        else:
            name = measured[min(measured, key=lambda m: (abs(m - k), -m))]
    r = s[name]
    return r["ms_per_train_image"], r["ms_per_eval_image"]


def hours(sweep: dict) -> dict:
    from microtrain.models import load_model
    from microtrain.scheme_search.contribution import AnalysisSettings, plan_jobs

    shared = Path(os.environ.get("MICROTRAIN_SHARED", Path(__file__).resolve().parents[2] / "shared"))
    graph = load_model(shared / "models" / "mcunet-5fps.pkl")
    jobs, _ = plan_jobs(graph, AnalysisSettings())
    out = {}
    for ds, (n, m) in SIZES.items():
        n_tr, n_ho = round(n * (1 - HOLDOUT)), round(n * HOLDOUT)
        analysis = 0.0
        for job in jobs:
            tr, ev = cost(sweep, job if job.startswith("bias-") else "w30-1/8")
            analysis += ANALYSIS_EPOCHS * n_tr * tr + n_ho * ev
        final = {}
        for name in FINAL + ["searched"] * SEARCHED:
            tr, ev = cost(sweep, "last-12" if name == "searched" else name)
            ms = LRS * (FINAL_EPOCHS * n_tr * tr + n_ho * ev) + SEEDS * (FINAL_EPOCHS * n * tr + m * ev)
            final[name] = final.get(name, 0.0) + ms
        out[ds] = {"analysis_h": analysis / 3.6e6, "final_h": sum(final.values()) / 3.6e6,
                   "full_and_bias_only_h": (final["full"] + final["bias-only"]) / 3.6e6}
    out["total_h"] = sum(v["analysis_h"] + v["final_h"] for v in out.values())
    return out


def main(argv=None) -> int:
    paths = (argv if argv is not None else sys.argv[1:])
    if not paths:
        print(__doc__)
        return 2
    for p in paths:
        h = hours(json.loads(Path(p).read_text()))
        print(f"{p}: total {h['total_h']:.1f} CPU h (about {h['total_h'] / 2:.1f} h wall on 2 idle cores)")
        for ds in SIZES:
            d = h[ds]
            print(f"  {ds:11s} analysis {d['analysis_h']:5.2f} h, final {d['final_h']:5.2f} h "
                  f"(full + bias-only {d['full_and_bias_only_h']:.2f} h)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""CPU hours of the whole issue-14 set (benchmarks/exp_datasets.py's queue: the QAS tables, the sparse-update
experiment; the device curve) from measured per-image costs and the protocols' run counts.

    python benchmarks/estimate_hours.py --sparse SWEEP.json [SWEEP2.json] --qas QAS.json [QAS.json ...]
                                        [--device benchmarks/results/device_curve.json] [--out F.json]

Inputs are measured, not assumed: SWEEP.json from `profile_fine_tune.py --out` on cub50 with the sparse
schemes (batch 16), QAS.json from `profile_fine_tune.py --model M --batch 32 --schemes blocks-2,head-only`
(and `--numerics fp32 --schemes blocks-2`), one file per model and numerics. Image counts are counted in
$MICROTRAIN_SHARED/data. Model: a fine-tune of E epochs on n training images evaluated on m images costs
E * n * train_ms(scheme) + m * eval_ms(scheme) (per image: every data set loads at the model's resolution, so
the cost per image does not depend on the data set).

QAS (exp_qas.py, per data set, model and setting; batch 32; --views 4 augmented views per training image, of
which each epoch trains one, drawn at random, so an epoch is n images; the prefix features hold all 4): the decade
scan (select_epochs 5 on the 80 % split, scored on the 20 %; as many decades as the stored results of that
table hold, else their mean over the stored tables: the scan stops early), refine (3 lrs x 3 seeds x 12
epochs on the 80 %), final (3 seeds x 12 epochs on train/, scored on val/). int8 costs as int8 + QAS (the same
steps; QAS only changes the update's divisors), momentum runs as plain SGD (one buffer per trained tensor).
Sparse (exp_sparse.py): the contribution analysis's plan_jobs (3 epochs on the 70 % split, scored on the 30 %;
a bias-k run costs what the measured bias-k' with the nearest k' costs, a weight run what w30-1/8 costs) and
per final scheme 3 lr runs (5 epochs on the 70 %) + 3 seeds (5 epochs on train/, scored on val/); the 10
searched schemes (5 budgets x 2 metrics) are unknown before the analysis and costed as last-12. Device curve:
the wall seconds its JSON records (QEMU and host runs; already measured, not an estimate).
Not counted: loading images, and the frozen-prefix features (once per data set, views, numerics and
boundary, cached on disk; the measured prefix cost per image is printed). CPU hours of one process; the queue
runs two processes on the 2 cores, so wall hours on an otherwise idle machine are about half ("2-core wall").
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from exp_datasets import MOMENTUM_ON, QAS_ALL, SPARSE_ON, THREE_MODELS_ON  # noqa: E402
from exp_qas import LR_GRID  # noqa: E402
from run_store import write_report  # noqa: E402

SHARED = Path(os.environ.get("MICROTRAIN_SHARED", HERE.parents[1] / "shared"))
RESULTS = HERE / "results"

# sparse-update protocol (exp_sparse.py)
HOLDOUT = 0.3
ANALYSIS_EPOCHS, FINAL_EPOCHS, LRS, SEEDS, SEARCHED = 3, 5, 3, 3, 10
UPSTREAM = [f"fixture:mcunet-5fps-{kb}kb" for kb in (49, 74, 99, 124, 148)]
FINAL = ["last-1", "last-2", "last-3", "last-6", "last-12", "bias-only", "head-only", "full"] + UPSTREAM
# QAS protocol (exp_qas.py defaults)
QAS_VIEWS, QAS_SELECT_EPOCHS, QAS_EPOCHS, QAS_SEEDS, QAS_SPLIT = 4, 5, 12, 3, 0.8
QAS_MODELS = ("mcunet-5fps", "mbv2-w0.35", "proxyless-w0.3")
QAS_SETTINGS_COST = {  # (profile_fine_tune --numerics, scheme) -> the exp_qas settings it measures
    ("int8+QAS", "blocks-2"): ("int8", "int8+QAS"), ("fp32", "blocks-2"): ("fp32",),
    ("int8+QAS", "head-only"): ("head-only",)}


@functools.lru_cache(maxsize=None)
def sizes(dataset: str) -> tuple[int, int]:
    """(train/, val/) image counts of a data set under $MICROTRAIN_SHARED/data."""
    from microtrain.runtime.datasets import list_image_folder

    root = SHARED / "data" / dataset
    return len(list_image_folder(root / "train")[1]), len(list_image_folder(root / "val")[1])


def sparse_cost(sweep: dict, name: str) -> tuple[float, float]:
    """(train ms per image-epoch, eval ms per image) of a sparse scheme, by the rules above."""
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


def sparse_hours(sweep: dict, datasets=SPARSE_ON) -> dict:
    from microtrain.models import load_model
    from microtrain.scheme_search.contribution import AnalysisSettings, plan_jobs

    graph = load_model(SHARED / "models" / "mcunet-5fps.pkl")
    jobs, _ = plan_jobs(graph, AnalysisSettings())
    out = {}
    for ds in datasets:
        n, m = sizes(ds)
        n_tr, n_ho = round(n * (1 - HOLDOUT)), round(n * HOLDOUT)
        analysis = 0.0
        for job in jobs:
            tr, ev = sparse_cost(sweep, job if job.startswith("bias-") else "w30-1/8")
            analysis += ANALYSIS_EPOCHS * n_tr * tr + n_ho * ev
        final = {}
        for name in FINAL + ["searched"] * SEARCHED:
            tr, ev = sparse_cost(sweep, "last-12" if name == "searched" else name)
            ms = LRS * (FINAL_EPOCHS * n_tr * tr + n_ho * ev) + SEEDS * (FINAL_EPOCHS * n * tr + m * ev)
            final[name] = final.get(name, 0.0) + ms
        out[ds] = {"analysis_h": analysis / 3.6e6, "final_h": sum(final.values()) / 3.6e6,
                   "full_and_bias_only_h": (final["full"] + final["bias-only"]) / 3.6e6}
    out["total_h"] = sum(v["analysis_h"] + v["final_h"] for v in out.values())
    return out


def qas_costs(files) -> dict:
    """{(model, setting): (train ms per image-epoch, eval ms per image)} from profile_fine_tune reports
    (setting: fp32, int8, int8+QAS, head-only)."""
    out = {}
    for f in files:
        rep = json.loads(Path(f).read_text())
        num = rep.get("numerics", "int8+QAS")
        for scheme, r in rep["schemes"].items():
            cost = (r["ms_per_train_image"], r["ms_per_eval_image"])
            for setting in QAS_SETTINGS_COST.get((num, scheme), ()):
                out[(rep["model"], setting)] = cost
    return out


def stored_runs(dataset: str, model: str, setting: str, momentum: float, fingerprint: str | None) -> dict:
    """{stage: [seconds, ...]} of the runs exp_qas.py has stored for this table (with this fingerprint)."""
    folder = RESULTS / "qas" / dataset / model / setting
    out = {"select": [], "refine": [], "final": []}
    if not folder.is_dir():
        return out
    for f in folder.glob(f"*_m{momentum:g}.json"):
        stage = f.name.split("_", 1)[0]
        rec = json.loads(f.read_text())
        if stage in out and (fingerprint is None or rec.get("numerics_fingerprint") == fingerprint):
            out[stage].append(rec["result"].get("seconds") or 0.0)
    return out


def qas_jobs():
    """(dataset, model, momentum) of every QAS table exp_datasets.py queues."""
    jobs = [(d, "mcunet-5fps", 0.0) for d in QAS_ALL]
    jobs += [(d, m, 0.0) for m in QAS_MODELS[1:] for d in THREE_MODELS_ON]
    jobs += [(d, "mcunet-5fps", 0.9) for d in MOMENTUM_ON]
    return jobs


def qas_hours(costs: dict, fingerprint: str | None, forward_ms: float | None = None) -> dict:
    """Estimated CPU hours per QAS table (and of the runs not yet stored), plus the stored runs' seconds.
    forward_ms: a whole-network forward per image (the sparse sweep's bias-only evaluation), for the prefix
    features' cost (once per table and numerics, int8 and fp32: an upper bound, the prefix stops earlier)."""
    tables = {(d, m, mo): {s: stored_runs(d, m, s, mo, fingerprint) for s in ("fp32", "int8", "int8+QAS", "head-only")}
              for d, m, mo in qas_jobs()}
    scans = [len(st["select"]) for t in tables.values() for st in t.values() if st["select"]]
    mean_scan = sum(scans) / len(scans) if scans else len(LR_GRID)
    out = {}
    for (d, m, mo), table in tables.items():
        n, val = sizes(d)
        sel, held = int(QAS_SPLIT * n), n - int(QAS_SPLIT * n)  # one view per image and epoch
        est = rem = stored_s = prefix = 0.0
        for setting, st in table.items():
            tr, ev = costs[(m, setting)]
            scan = len(st["select"]) or mean_scan
            stage_ms = {"select": QAS_SELECT_EPOCHS * sel * tr + held * ev,
                        "refine": QAS_EPOCHS * sel * tr + held * ev,
                        "final": QAS_EPOCHS * n * tr + val * ev}
            planned = {"select": scan, "refine": 3 * QAS_SEEDS, "final": QAS_SEEDS}
            for stage, k in planned.items():
                est += k * stage_ms[stage]
                rem += max(0.0, k - len(st[stage])) * stage_ms[stage]
                stored_s += sum(st[stage])
        prefix = 2 * (n * QAS_VIEWS + val) * (forward_ms or 0.0)
        out[f"{d}/{m}" + (f"/momentum{mo:g}" if mo else "")] = {
            "estimate_h": est / 3.6e6, "remaining_h": rem / 3.6e6, "stored_runs_wall_h": stored_s / 3600,
            "prefix_h": prefix / 3.6e6}
    out["mean_scan_decades"] = mean_scan
    return out


def device_hours(path: Path) -> dict:
    d = json.loads(path.read_text())
    return {ds: (r.get("wall_s", 0.0) + r.get("qemu_wall_s", 0.0)) / 3600 for ds, r in d["datasets"].items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sparse", nargs="+", default=[], help="profile_fine_tune sweeps of the sparse schemes")
    ap.add_argument("--qas", nargs="*", default=[], help="profile_fine_tune reports of the QAS settings")
    ap.add_argument("--device", type=Path, default=RESULTS / "device_curve.json")
    ap.add_argument("--any-fingerprint", action="store_true", help="count stored QAS runs of any numerics")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    missing = [f for f in [*args.sparse, *args.qas] if not Path(f).is_file()]
    if missing:
        ap.error(f"no such profile_fine_tune report: {missing[0]}")
    if not args.sparse and not args.qas:
        print(__doc__)
        return 2
    report = {"command": "python " + " ".join(sys.argv)}
    total, remaining = 0.0, 0.0
    for p in args.sparse:
        h = sparse_hours(json.loads(Path(p).read_text()))
        report.setdefault("sparse", {})[p] = h
        print(f"sparse update ({p}): {h['total_h']:.1f} CPU h")
        for ds in SPARSE_ON:
            d = h[ds]
            print(f"  {ds:11s} analysis {d['analysis_h']:5.2f} h, final {d['final_h']:5.2f} h "
                  f"(full + bias-only {d['full_and_bias_only_h']:.2f} h)")
    if args.sparse:
        total += report["sparse"][args.sparse[-1]]["total_h"]  # the last sweep given: the newest code
        remaining += report["sparse"][args.sparse[-1]]["total_h"]
    if args.qas:
        fingerprint = None
        if not args.any_fingerprint:
            from numerics_fingerprint import numerics_fingerprint

            fingerprint = numerics_fingerprint()
        forward_ms = None
        if args.sparse:
            forward_ms = json.loads(Path(args.sparse[-1]).read_text())["schemes"]["bias-only"]["ms_per_eval_image"]
        q = qas_hours(qas_costs(args.qas), fingerprint, forward_ms)
        report["qas"] = q
        rows = {k: v for k, v in q.items() if isinstance(v, dict)}
        est, rem = sum(v["estimate_h"] for v in rows.values()), sum(v["remaining_h"] for v in rows.values())
        stored = sum(v["stored_runs_wall_h"] for v in rows.values())
        print(f"QAS tables: {est:.1f} CPU h for the whole protocol, {rem:.1f} CPU h for the runs not stored "
              f"(stored runs took {stored:.1f} h of wall time; scan {q['mean_scan_decades']:.1f} decades where "
              f"none is stored)")
        for k, v in rows.items():
            print(f"  {k:40s} {v['estimate_h']:5.2f} h (not stored: {v['remaining_h']:5.2f} h; stored runs' wall "
                  f"{v['stored_runs_wall_h']:5.2f} h; prefix features at most {v['prefix_h']:.2f} h, not counted)")
        total += est
        remaining += rem
    if args.device and args.device.exists():
        dev = device_hours(args.device)
        report["device_curve_h"] = dev
        print("device curve (measured wall, already run): " + ", ".join(f"{k} {v:.2f} h" for k, v in dev.items()))
        total += sum(dev.values())
    report["total_cpu_h"], report["remaining_cpu_h"] = total, remaining
    print(f"TOTAL {total:.1f} CPU h = {total / 2:.1f} h on 2 idle cores (2-core wall); not yet stored: "
          f"{remaining:.1f} CPU h = {remaining / 2:.1f} h (the sparse part counted whole). Fits 6 h: "
          f"{'yes' if total / 2 <= 6 else 'no'} for the whole set, "
          f"{'yes' if remaining / 2 <= 6 else 'no'} for what remains")
    write_report(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())

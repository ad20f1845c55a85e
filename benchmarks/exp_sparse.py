"""Sparse-update experiment: validation accuracy versus extra memory on hymenoptera with mcunet-5fps.

1. contribution analysis on a held-out split of train/ (cached, resumable, 2 workers);
2. evolutionary search at several budgets, with gains measured in held-out accuracy (the paper's metric)
   and in held-out loss (a finer signal when accuracy saturates);
3. each searched scheme, the "last k layers" baselines, bias-only, head-only and upstream's hand-made
   49 KB / 99 KB schemes get their own learning rate (the best of --lrs on the held-out split of train/,
   so that no scheme loses to a bad lr), are fine-tuned with it on all of train/ and scored on val/
   (never used before this step).
Writes benchmarks/results/sparse.json (incrementally: a rerun skips finished runs), sparse.md, sparse.png.

    nice -n 10 python benchmarks/exp_sparse.py [--epochs 5] [--budgets 32,49,75,100,150]

--dataset <folder under $MICROTRAIN_SHARED/data> (e.g. cub50): the same experiment on that set, plus
upstream's five hand-made schemes (49-148 KB) and the full update as the ceiling. Resumable across
sessions: every final fine-tune (lr candidates on the held-out split, and the seeds) is one JSON file under
results/sparse/<folder>/, keyed by scheme (name + content hash), stage, lr, seed and epochs and stamped with
the numerics fingerprint (run_store.RunDir); the contribution analysis caches its fine-tunes in --cache, and
a record that already holds the analysis of this model, these images and settings with this code is reused
as it is (a fresh checkout has no cache);
frozen-prefix features are cached on disk. Writes results/sparse/<folder>.json, .md and .png. The markdown
ends with the acceptance check: the searched scheme within 100 KB with the best held-out accuracy against
last-12 (448 KB), paired by seed, with a 95 % t interval.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from microtrain.cache import cache_root

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
SHARED = Path(os.environ.get("MICROTRAIN_SHARED", HERE.parent.parent / "shared"))


def stored_analysis(analysis: dict | None, graph, data, settings):
    """The accuracy GainTable a results record already holds, if it measured this model (graph fingerprint),
    these training images (data fingerprint) and these settings; else None. The caller checks the numerics
    fingerprint (same code, same numbers). The analysis cache lives outside the repository (a fresh checkout has
    none) while the record is committed, so a resumed run need not repeat the analysis's fine-tunes."""
    from microtrain.scheme_search.contribution import graph_fingerprint
    from microtrain.scheme_search.search import GainTable

    gains = (analysis or {}).get("gains_acc")
    meta = (gains or {}).get("meta", {})
    same = lambda a, b: json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)  # noqa: E731 (tuples = lists)
    if not (gains and meta.get("runs") and same(meta.get("settings"), settings.key())
            and meta.get("model_fingerprint") == graph_fingerprint(graph)
            and meta.get("data_fingerprint") == data.fingerprint()):
        return None
    return GainTable.from_dict(gains, "stored analysis")


def main(argv=None) -> int:
    from microtrain.commands.plan import DEFAULT_CACHE

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(SHARED / "data" / "hymenoptera_data"))
    ap.add_argument("--model", default=str(SHARED / "models" / "mcunet-5fps.pkl"))
    ap.add_argument("--budgets", default="32,49,75,100,150", help="KB, comma-separated")
    ap.add_argument("--epochs", type=int, default=5, help="epochs of the final fine-tunes")
    ap.add_argument("--lr", type=float, default=0.01, help="learning rate of the analysis fine-tunes")
    ap.add_argument("--lrs", default="0.003,0.01,0.03", help="per-scheme lr candidates (chosen on held-out)")
    ap.add_argument("--analysis-epochs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0, help="seed of the analysis, the search and the lr choice")
    ap.add_argument("--final-seeds", default="0,1,2", help="seeds of the final fine-tunes (mean and spread)")
    ap.add_argument("--cache", default=str(DEFAULT_CACHE), help="contribution-analysis cache (shared with `plan`)")
    ap.add_argument("--dataset", default=None, help="a folder under $MICROTRAIN_SHARED/data (replaces --data)")
    ap.add_argument("--out", default=str(RESULTS), help="results folder (default benchmarks/results)")
    ap.add_argument("--workers", type=int, default=1, help="processes of the contribution analysis")
    ap.add_argument("--prefix-cache", default=str(cache_root() / "exp14" / "prefix"))
    ap.add_argument("--analysis-only", action="store_true")
    ap.add_argument("--report-only", action="store_true", help="rewrite sparse.md/png from sparse.json")
    args = ap.parse_args(argv)
    out = Path(args.out)
    stem = f"sparse/{args.dataset}" if args.dataset else "sparse"
    if args.dataset:
        args.data = str(SHARED / "data" / args.dataset)
        if args.cache == str(DEFAULT_CACHE):
            args.cache = str(cache_root() / "exp14" / "contribution")
    if args.report_only:
        record = json.loads((out / f"{stem}.json").read_text())
        write_markdown(record, out / f"{stem}.md")
        plot(record, out / f"{stem}.png")
        return 0

    from microtrain.models import load_model
    from microtrain.runtime.datasets import load_image_folder
    from microtrain.scheme_search.contribution import AnalysisSettings, analyze
    from microtrain.sparse.fixtures import load_fixture
    from microtrain.scheme_search.memory import MemoryModel
    from microtrain.sparse.scheme import UpdateScheme
    from microtrain.scheme_search.search import GainTable, search

    out_json = out / f"{stem}.json"
    out_json.parent.mkdir(parents=True, exist_ok=True)
    record = json.loads(out_json.read_text()) if out_json.exists() else {}
    stored_fingerprint = record.get("numerics_fingerprint")
    graph = load_model(args.model)
    mem = MemoryModel(graph)
    data_root = Path(args.data)
    for sub in ("train", "val"):
        if not (data_root / sub).is_dir():
            from microtrain.errors import DatasetError

            raise DatasetError(f"{data_root}: no {sub}/ folder (expected an ImageFolder set with train/ and val/)")
    store = None
    if args.dataset:  # one file per run, stamped with the numerics fingerprint
        from microtrain.runtime.trainer import set_prefix_disk_cache
        from numerics_fingerprint import numerics_fingerprint
        from run_store import RunDir

        set_prefix_disk_cache(args.prefix_cache)
        record["numerics_fingerprint"] = numerics_fingerprint()
        store = RunDir(out / "sparse" / args.dataset, record["numerics_fingerprint"], 1, 16, 0.0)

    # 1. contribution analysis (timed: the acceptance asks for analysis + search < 30 min on 2 cores)
    t0 = time.monotonic()
    settings = AnalysisSettings(epochs=args.analysis_epochs, lr=args.lr, seed=args.seed)
    data = load_image_folder(data_root / "train", graph.resolution, views=settings.views, seed=settings.seed,
                             channels=graph.input_spec.shape[-1])  # as analyze() loads it
    for path, reason in data.skipped:
        print(f"skipped {path}: {reason}")
    same_code = store is not None and stored_fingerprint == record.get("numerics_fingerprint")
    table_acc = stored_analysis(record.get("analysis"), graph, data, settings) if same_code else None
    if table_acc is None:
        table_acc = analyze(graph, data=data, settings=settings, cache_dir=args.cache, workers=args.workers)
    else:
        print("contribution analysis: the one this record holds (same code, model, images and settings)")
    analysis_s = time.monotonic() - t0
    table_loss = GainTable.from_dict(dict(table_acc.to_dict(), metric="loss"))
    runs = table_acc.meta["runs"]
    base_loss, ref_loss = runs["bias-0"]["val_loss"], runs[f"bias-{table_acc.bias_ref}"]["val_loss"]
    table_loss.bias = {int(n.split("-")[1]): base_loss - r["val_loss"] for n, r in runs.items() if n.startswith("bias-")}
    table_loss.weights = {k: ref_loss - runs[_job(k)]["val_loss"] for k in table_acc.weights}
    prev = record.get("analysis", {})
    # a fully cached analysis takes seconds: keep the measured uncached time (a first run has none to keep)
    fresh = analysis_s > 60 or not prev.get("seconds")
    record["analysis"] = {"seconds": round(analysis_s, 1) if fresh else prev.get("seconds"),
                          "seconds_this_run": round(analysis_s, 1),
                          "cpu_seconds_of_fine_tunes": table_acc.meta["seconds"],
                          "gains_acc": table_acc.to_dict(), "gains_loss": table_loss.to_dict()}
    _save(out_json, record)
    print(f"analysis: {analysis_s:.0f} s wall (cached runs count 0)")
    if args.analysis_only:
        return 0

    # 2. search at each budget, both metrics
    schemes: dict[str, tuple[str, UpdateScheme]] = {}
    searches = []
    for kb in [float(b) for b in args.budgets.split(",")]:
        for metric, table in (("acc", table_acc), ("loss", table_loss)):
            t1 = time.monotonic()
            res = search(table, mem, int(kb * 1024), seed=args.seed, name=f"searched-{metric}-{kb:g}kb")
            searches.append({"budget_kb": kb, "metric": metric, "seconds": round(time.monotonic() - t1, 2),
                             "predicted_gain": res.gain, "scheme": res.scheme.to_dict()})
            schemes[res.scheme.name] = (f"searched ({metric})", res.scheme)
            print(res.summary(table))
    record["searches"] = searches
    # 3. baselines
    for k in (1, 2, 3, 6, 12):
        s = UpdateScheme.last_layers(graph, k)
        schemes[s.name] = ("last-k layers", s)
    schemes["bias-only"] = ("bias-only", UpdateScheme.bias_only(graph))
    schemes["head-only"] = ("head-only", UpdateScheme.head_only())
    upstream = ("49", "74", "99", "124", "148") if args.dataset else ("49", "99")
    for kb in upstream:
        schemes[f"mcunet-5fps-{kb}kb"] = ("upstream scheme", load_fixture(f"mcunet-5fps-{kb}kb"))
    if args.dataset:
        schemes["full"] = ("full update", UpdateScheme.full(graph))

    # 4. final fine-tunes on train/, scored on val/
    from microtrain.runtime.trainer import fine_tune

    from microtrain.scheme_search.contribution import holdout_split

    train = load_image_folder(data_root / "train", graph.resolution, seed=args.seed)
    val = load_image_folder(data_root / "val", graph.resolution, classes=train.classes)
    tr_idx, ho_idx = holdout_split(train.labels, settings.holdout, args.seed)
    split_train, split_held = train.subset(tr_idx), train.subset(ho_idx)
    lrs = [float(x) for x in args.lrs.split(",")]
    finals = record.setdefault("final", {})
    key = f"epochs={args.epochs},lrs={lrs},seed={args.seed}"
    seeds = [int(x) for x in args.final_seeds.split(",")]
    for name, (kind, scheme) in schemes.items():
        sid = json.dumps({k: v for k, v in scheme.to_dict().items() if k != "name"}, sort_keys=True)
        t1 = time.monotonic()
        if store is not None:
            finals[name] = final_runs(store, graph, mem, name, kind, scheme, sid, split_train, split_held, train, val,
                                      lrs, seeds, args)
            entry = finals[name]
            print(f"{name:28s} {entry['extra_kb']:8.1f} KB  lr {entry['lr']:<6g} val {100 * entry['val_acc']:.1f} % "
                  f"[{100 * entry['val_acc_min']:.1f}, {100 * entry['val_acc_max']:.1f}] over seeds {seeds} "
                  f"({time.monotonic() - t1:.0f} s)", flush=True)
            _save(out_json, record)
            continue
        entry = finals.get(name)
        if not (entry and entry.get("settings") == key and entry.get("scheme_id") == sid):
            held = {}
            for lr in lrs:  # the lr is chosen on the held-out split of train/, never on val/
                h = fine_tune(graph, scheme, split_train, split_held, epochs=args.epochs, lr=lr, seed=args.seed,
                              batch_size=16)
                held[str(lr)] = {"acc": h["val_acc"], "loss": h["val_loss"]}
            best_lr = max(lrs, key=lambda lr: (held[str(lr)]["acc"], -held[str(lr)]["loss"]))
            entry = finals[name] = {"kind": kind, "settings": key, "scheme_id": sid, "scheme": scheme.to_dict(),
                                    "extra_kb": mem.scheme_bytes(scheme) / 1024, "lr": best_lr,
                                    "heldout_by_lr": held, "seeds": {}}
        entry["kind"] = kind
        runs = entry.setdefault("seeds", {})
        if "val_acc" in entry and str(args.seed) not in runs and "train_acc" in entry:  # a run before seeds existed
            runs[str(args.seed)] = {"val_acc": entry["val_acc"], "val_loss": entry["val_loss"]}
        for seed in seeds:
            if str(seed) in runs:
                continue
            r = fine_tune(graph, scheme, train, val, epochs=args.epochs, lr=entry["lr"], seed=seed, batch_size=16)
            runs[str(seed)] = {"val_acc": r["val_acc"], "val_loss": r["val_loss"]}
            _save(out_json, record)
        accs = [runs[str(sd)]["val_acc"] for sd in seeds]
        entry["val_acc"] = float(sum(accs) / len(accs))
        entry["val_acc_min"], entry["val_acc_max"] = min(accs), max(accs)
        entry["val_loss"] = float(sum(runs[str(sd)]["val_loss"] for sd in seeds) / len(seeds))
        print(f"{name:28s} {entry['extra_kb']:8.1f} KB  lr {entry['lr']:<6g} val {100 * entry['val_acc']:.1f} % "
              f"[{100 * min(accs):.1f}, {100 * max(accs):.1f}] over seeds {seeds} ({time.monotonic() - t1:.0f} s)",
              flush=True)
        _save(out_json, record)
    record["meta"] = {"model": graph.name, "data": str(data_root), "n_train": len(train), "n_val": len(val),
                      "dataset": args.dataset or "hymenoptera", "classes": list(train.classes),
                      "final_settings": f"{key}, final seeds {seeds}", "command": "nice -n 10 python " + " ".join(sys.argv)}
    if args.dataset:
        record["acceptance"] = best_within_vs_last12(record)
    _save(out_json, record)
    write_markdown(record, out / f"{stem}.md")
    plot(record, out / f"{stem}.png")
    return 0


def final_runs(store, graph, mem, name, kind, scheme, sid, split_train, split_held, train, val, lrs, seeds, args):
    """The lr chosen on the held-out split of train/ (best accuracy, then loss), then the final seeds on all of
    train/ scored on val/; every fine-tune is one stored run (resumable)."""
    import hashlib

    from microtrain.runtime.trainer import fine_tune

    label = f"{name}-{hashlib.blake2b(sid.encode(), digest_size=4).hexdigest()}"  # content in the key

    def run(stage, lr, seed, tr, va):
        key = f"{graph.name}|{label}|{stage}|{lr:g}|{seed}"
        got = store.get(key, args.epochs)
        if got is None:
            r = fine_tune(graph, scheme, tr, va, epochs=args.epochs, lr=lr, seed=seed, batch_size=16)
            got = {"val_acc": r["val_acc"], "val_loss": r["val_loss"], "val_balanced_acc": r["val_balanced_acc"],
                   "train_acc": r["train_acc"], "collapse_rollbacks": r.get("collapse_rollbacks", 0),
                   "seconds": round(r["seconds"], 1)}
            store.put(key, got, args.epochs)
        return got

    held = {str(lr): run("select", lr, args.seed, split_train, split_held) for lr in lrs}
    best_lr = max(lrs, key=lambda lr: (held[str(lr)]["val_acc"], -held[str(lr)]["val_loss"]))
    runs = {str(seed): run("final", best_lr, seed, train, val) for seed in seeds}
    accs = [runs[str(sd)]["val_acc"] for sd in seeds]
    return {"kind": kind, "scheme_id": sid, "scheme": scheme.to_dict(), "extra_kb": mem.scheme_bytes(scheme) / 1024,
            "lr": best_lr, "heldout_by_lr": {k: {"acc": v["val_acc"], "loss": v["val_loss"]} for k, v in held.items()},
            "seeds": runs, "val_acc": float(sum(accs) / len(accs)), "val_acc_min": min(accs), "val_acc_max": max(accs),
            "val_acc_std": float(np.std(accs)),
            "val_balanced_acc": float(np.mean([runs[str(sd)]["val_balanced_acc"] for sd in seeds])),
            "val_loss": float(sum(runs[str(sd)]["val_loss"] for sd in seeds) / len(seeds))}


def best_within_vs_last12(record, budget_kb=100.0) -> dict | None:
    """The searched scheme within `budget_kb` with the best HELD-OUT accuracy (chosen without val/), against
    last-12: differences paired by seed (same seed = same batch order), mean, s.e., 95 % t interval."""
    from scipy import stats

    finals = record["final"]
    cands = [(n, r) for n, r in finals.items() if r["kind"].startswith("searched") and r["extra_kb"] <= budget_kb]
    ref = finals.get("last-12") or next((r for n, r in finals.items() if n.endswith("last-12")), None)
    if not cands or ref is None:
        return None
    name, best = max(cands, key=lambda nr: (nr[1]["heldout_by_lr"][str(nr[1]["lr"])]["acc"],
                                            -nr[1]["heldout_by_lr"][str(nr[1]["lr"])]["loss"]))
    seeds = sorted(set(best["seeds"]) & set(ref["seeds"]), key=int)
    d = np.array([100 * (best["seeds"][s]["val_acc"] - ref["seeds"][s]["val_acc"]) for s in seeds])
    se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")
    half = float(stats.t.ppf(0.975, len(d) - 1) * se) if len(d) > 1 else float("nan")
    return {"scheme": name, "extra_kb": best["extra_kb"], "val_acc": best["val_acc"], "last12_kb": ref["extra_kb"],
            "last12_val_acc": ref["val_acc"], "seeds": seeds, "diffs_points": d.round(3).tolist(),
            "mean_points": float(d.mean()), "se": se, "ci95": [float(d.mean()) - half, float(d.mean()) + half]}


def _job(key) -> str:
    i, r = key
    return f"w{i}-{r}"


def _save(path: Path, record: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    tmp.replace(path)


def write_markdown(record: dict, path: Path) -> None:
    rows = sorted(record["final"].items(), key=lambda kv: kv[1]["extra_kb"])
    a = record["analysis"]
    dataset = record.get("meta", {}).get("dataset", "hymenoptera")
    lines = [
        f"# Sparse update on {dataset} (mcunet-5fps, 128x128, int8 + QAS)",
        "",
        f"Final fine-tunes: {record['meta']['final_settings']}, {record['meta']['n_train']} train / "
        f"{record['meta']['n_val']} val images. Extra memory = upstream's analytic model (sparse/memory.py).",
        f"Contribution analysis: {len(a['gains_acc']['meta']['runs'])} fine-tunes on a 70/30 split of train/, "
        f"{a['seconds'] or 0:.0f} s wall on 2 cores when not cached; "
        f"fine-tunes total {a['cpu_seconds_of_fine_tunes']:.0f} s.",
        "",
        "Each scheme's lr is the best of the candidates on the held-out split of train/ (not on val/).",
        "",
        "Val accuracy is the mean over the final seeds, [min, max] beside it.",
        "",
        "| scheme | kind | extra memory (KB) | lr | val accuracy (%) | [min, max] | val loss |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows:
        lines.append(f"| {name} | {r['kind']} | {r['extra_kb']:.1f} | {r['lr']:g} | {100 * r['val_acc']:.1f} | "
                     f"[{100 * r['val_acc_min']:.1f}, {100 * r['val_acc_max']:.1f}] | {r['val_loss']:.3f} |")
    lines += ["", "Searched schemes (budget, metric -> scheme, predicted gain on the held-out split):", ""]
    for s in record.get("searches", []):
        w = ", ".join(f"{i}x{r}" for i, r in s["scheme"]["weights"].items()) or "none"
        unit = "acc points" if s["metric"] == "acc" else "nats"
        g = 100 * s["predicted_gain"] if s["metric"] == "acc" else s["predicted_gain"]
        lines.append(f"- {s['budget_kb']:g} KB, {s['metric']}: n_bias {s['scheme']['n_bias']}, weights {w}; "
                     f"predicted {g:+.3f} {unit}; search {s['seconds']:.1f} s")
    lines += ["", "Acceptance check (mean val accuracy): each searched scheme within 100 KB against the best",
              "last-k baseline that uses at least 4x its memory:", ""]
    lastk = [(n, r) for n, r in record["final"].items() if r["kind"] == "last-k layers"]
    for name, r in rows:
        if r["kind"].startswith("searched") and r["extra_kb"] <= 100:
            bigger = [(n, b) for n, b in lastk if b["extra_kb"] >= 4 * r["extra_kb"]]
            if not bigger:
                continue
            bn, b = max(bigger, key=lambda nb: nb[1]["val_acc"])
            verdict = "at least as accurate" if r["val_acc"] >= b["val_acc"] else "LESS accurate"
            lines.append(f"- {name} ({r['extra_kb']:.1f} KB, {100 * r['val_acc']:.1f} %) vs {bn} "
                         f"({b['extra_kb']:.1f} KB, {100 * b['val_acc']:.1f} %): {verdict}")
    if record.get("acceptance"):
        lines += ["", acceptance_line(record["acceptance"])]
    path.write_text("\n".join(lines) + "\n")


def acceptance_line(acc: dict) -> str:
    """best_within_vs_last12's verdict in one sentence (also the README's, benchmarks/run_all.py)."""
    lo, hi = acc["ci95"]
    return (f"Best searched scheme within 100 KB (chosen by held-out accuracy on train/, not val/): "
            f"{acc['scheme']} ({acc['extra_kb']:.1f} KB) {100 * acc['val_acc']:.1f} % vs last-12 "
            f"({acc['last12_kb']:.1f} KB) {100 * acc['last12_val_acc']:.1f} %: paired by seed {acc['seeds']}, "
            f"{acc['mean_points']:+.2f} points (s.e. {acc['se']:.2f}, 95 % interval [{lo:+.2f}, {hi:+.2f}]).")


def plot(record: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = {"searched (acc)": ("o", "C0"), "searched (loss)": ("s", "C1"), "last-k layers": ("^", "C2"),
              "bias-only": ("D", "C3"), "head-only": ("x", "k"), "upstream scheme": ("*", "C4"),
              "full update": ("P", "C5")}
    for kind, (marker, color) in styles.items():
        rows = sorted((r for r in record["final"].values() if r["kind"] == kind), key=lambda r: r["extra_kb"])
        if not rows:
            continue
        xs = [r["extra_kb"] for r in rows]
        ys = [100 * r["val_acc"] for r in rows]
        lo = [y - 100 * r.get("val_acc_min", r["val_acc"]) for y, r in zip(ys, rows)]
        hi = [100 * r.get("val_acc_max", r["val_acc"]) - y for y, r in zip(ys, rows)]
        line = "-" if len(rows) > 1 else "none"
        ax.errorbar(xs, ys, yerr=[lo, hi], marker=marker, color=color, label=kind, linestyle=line, capsize=3,
                    alpha=0.85)
        ax2.plot(xs, [r["val_loss"] for r in rows], marker=marker, color=color, label=kind, linestyle=line)
    for a in (ax, ax2):
        a.set_xscale("symlog", linthresh=1)
        a.set_xlabel("extra training memory (KB, analytic)")
        a.grid(alpha=0.3)
    ax.set_ylabel("val accuracy (%), mean and range over seeds")
    ax2.set_ylabel("val loss (mean over seeds)")
    ax.set_title(f"mcunet-5fps on {record.get('meta', {}).get('dataset', 'hymenoptera')}: accuracy")
    ax2.set_title("val loss (lower is better)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())

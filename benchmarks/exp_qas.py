"""QAS experiment on ants vs bees (hymenoptera_data): does int8 training with quantization-aware
scaling match fp32 training, and beat int8 training without it?

Settings, each on every model (mcunet-5fps, mbv2-w0.35, proxyless-w0.3), new 2-class head:
  (a) fp32     last two blocks + head, dequantised float model, float SGD
  (b) int8     last two blocks + head, int8 weights, no QAS
  (c) int8+QAS last two blocks + head, int8 weights, QAS
  (d) head     head only, int8 + QAS
Protocol (no peeking at the validation set for the learning rate):
  1. lr selection, on a fixed 80/20 split of the training folder, never on val:
     a. scan: every setting tries the SAME lr grid (decades, LR_GRID), seed 0, --select-epochs epochs;
        the decade with the lowest held-out cross-entropy wins (smoother than accuracy on few images);
     b. refine: best/3, best and 3*best, each with seeds 0, 1, 2 and the final schedule (--epochs). An lr
        at which any seed diverges is rejected. Of the others, the SMALLEST lr whose mean held-out loss is
        within one standard error of the lowest mean wins (the one-standard-error rule: among candidates
        the selection cannot tell apart, take the more stable one; the largest lr that wins on a small
        split is often at the edge of stability, where some seeds of the final runs collapse to one
        class). Same rule for every setting;
  2. final: train on the whole training folder with the chosen lr, seeds 0, 1, 2 (EPOCHS epochs),
     report validation accuracy mean and spread (population std, min, max).
Every run is appended to benchmarks/results/qas_runs.json, so an interrupted experiment resumes.
Writes benchmarks/results/qas.json and qas.md. Run: nice -n 10 python benchmarks/exp_qas.py
(options: --models, --epochs, --quick for a smoke run).

--dataset digits: the same protocol on a harder task, scikit-learn's handwritten digits (10 classes, far
from ImageNet; bundled, no network): 8x8 grey scans upsampled bilinearly to the model resolution as RGB,
a fixed stratified split of 50 train + 30 val images per digit (500 / 300, runtime/datasets.py
load_digits_split); lr selection on the 80/20 split of the 500 train images, never on val. Writes
qas_digits.json, qas_digits.md and resumes from qas_digits_runs.json; the ants-vs-bees files are untouched.

--dataset <folder>: any ImageFolder set under $MICROTRAIN_SHARED/data (cifar10, cub50, food101_10, gtsrb,
flowers12, trashnet, clothing10, sign_digits, person), same protocol. Built to be spread over sessions:
  - one small JSON file per run, results/qas/<folder>/<model>/<setting>/<stage>_lr.._s.._e.._v.._b.._m...json,
    holding the run's key and the numerics fingerprint (numerics_fingerprint.py) it was computed with; a run
    whose file exists with the current fingerprint is skipped, so a refactor that computes the same numbers
    keeps every result and a change of the numerics reruns them;
  - frozen-prefix features cached on disk (--cache, default /root/.cache/microtrain/exp14/prefix), so a
    resumed or parallel process does not recompute them;
  - --momentum M (e.g. 0.9): the paper's SGD-M variant; its runs and tables are kept apart (tag momentum<M>);
  - the decade scan stops once two decades in a row are clearly worse than the best held-out loss so far
    (diverged, or a loss above 1.05 x the best: past the minimum the loss rises, then diverges), which skips
    the diverging decades; a plateau (int8 without QAS barely moves at small lrs, the loss stays at ln C
    up to noise) never stops it;
  - the table reports top-1 and balanced accuracy (mean per-class accuracy) and keeps each final run's
    confusion matrix. Writes results/qas/<folder>[_<tag>].json and .md.
  Example: nice -n 19 python benchmarks/exp_qas.py --dataset cifar10 --models mcunet-5fps
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

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MICROTRAIN_SHARED", REPO.parent / "shared"))
DATA = Path(os.environ.get("MICROTRAIN_DATA", SHARED / "data")) / "hymenoptera_data"
MODELS = Path(os.environ.get("MICROTRAIN_MODELS", SHARED / "models"))
RESULTS = REPO / "benchmarks" / "results"

LR_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4)
SETTINGS = {  # name: (update, fp32, qas)
    "fp32": ("last-blocks:2", True, False),
    "int8": ("last-blocks:2", False, False),
    "int8+QAS": ("last-blocks:2", False, True),
    "head-only": ("head", False, True),
}
SEEDS = (0, 1, 2)
MODEL_ORDER = ("mcunet-5fps", "mbv2-w0.35", "proxyless-w0.3")
DATASETS = {  # name: (results file stem, title of the markdown table); other names: folders under data/
    "hymenoptera": ("qas", "ants vs bees (hymenoptera_data)"),
    "digits": ("qas_digits", "handwritten digits (scikit-learn, 10 classes, 500 train / 300 val)"),
}
DEFAULT_CACHE = cache_root() / "exp14" / "prefix"
SCAN_PATIENCE = 2  # decades clearly worse than the best in a row that end the lr scan (folder datasets)
SCAN_RISE = 1.05  # "clearly worse": held-out loss above 1.05 x the best so far, or diverged


def data_folder(dataset) -> Path:
    """The ImageFolder root of a --dataset name (legacy names included)."""
    if dataset == "hymenoptera":
        return DATA
    root = Path(dataset) if os.sep in str(dataset) else SHARED / "data" / dataset
    if not ((root / "train").is_dir() and (root / "val").is_dir()):
        from microtrain.errors import DatasetError

        raise DatasetError(f"--dataset {dataset}: {root} has no train/ and val/ folders "
                           f"(choose a folder under {SHARED / 'data'}, or one of {sorted(DATASETS)})")
    return root


def load_dataset(dataset, resolution, views):
    """(train, val) ImageData of the chosen task at the model resolution."""
    from microtrain.runtime.datasets import load_digits_split, load_image_folder

    if dataset == "digits":
        return load_digits_split(resolution, views=views, seed=0)
    root = data_folder(dataset)
    train = load_image_folder(root / "train", resolution, views=views, seed=0)
    return train, load_image_folder(root / "val", resolution, classes=train.classes)


from run_store import RunDir, RunFile, run_key  # noqa: E402  (benchmarks/ is this script's folder)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["mcunet-5fps", "mbv2-w0.35", "proxyless-w0.3"])
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--select-epochs", type=int, default=5)
    ap.add_argument("--views", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--dataset", default="hymenoptera",
                    help=f"{' or '.join(sorted(DATASETS))}, or a folder under $MICROTRAIN_SHARED/data (e.g. cifar10)")
    ap.add_argument("--runs", default=None, help="resume file (default results/<qas|qas_digits>_runs.json)")
    ap.add_argument("--tag", default="", help="suffix of the results files (a protocol variant), e.g. select12")
    ap.add_argument("--momentum", type=float, default=0.0, help="SGD momentum (the paper's fp32/int8 rows use 0.9)")
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    ap.add_argument("--cache", default=str(DEFAULT_CACHE), help="frozen-prefix feature cache (folder datasets)")
    ap.add_argument("--out", default=str(RESULTS), help="results folder (default benchmarks/results)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 model, 2 epochs, 2 lrs, 1 seed")
    ap.add_argument("--diagnostics", action="store_true",
                    help="also: gradient/parameter norm ratios per layer, and int8+QAS with nearest rounding")
    args = ap.parse_args(argv)

    from microtrain.errors import MicrotrainError
    from microtrain.models import load_model
    from microtrain.runtime.trainer import clear_prefix_cache, fine_tune, set_prefix_disk_cache
    from microtrain.commands.train import parse_update

    out_dir = Path(args.out)
    grid, seeds = LR_GRID, SEEDS
    if args.quick:
        args.models, args.epochs, args.select_epochs, grid, seeds = args.models[:1], 2, 1, (1e-2, 1e3), (0,)
    legacy = args.dataset in DATASETS
    if not legacy:
        data_folder(args.dataset)  # a clear error before any work
    tag = args.tag or (f"momentum{args.momentum:g}" if args.momentum else "")
    stem = (DATASETS[args.dataset][0] if legacy else f"qas/{Path(args.dataset).name}") + (f"_{tag}" if tag else "")
    out_dir.mkdir(parents=True, exist_ok=True)
    if legacy or args.runs:
        store = RunFile(Path(args.runs or out_dir / f"{stem}_runs.json"))
        fingerprint = None
    else:
        from numerics_fingerprint import numerics_fingerprint

        fingerprint = numerics_fingerprint()
        store = RunDir(out_dir / "qas" / Path(args.dataset).name, fingerprint, args.views, args.batch_size, args.momentum)
        set_prefix_disk_cache(args.cache)
        print(f"numerics fingerprint {fingerprint}; prefix cache {args.cache}", flush=True)
    t_start = time.monotonic()
    chosen = {}
    settings = [s for s in SETTINGS if s in args.settings]

    def run(graph, setting, key, train, val, lr, seed, epochs, rounding="stochastic", final=False):
        """The stored result of this run, training it first if needed."""
        got = store.get(key, epochs)
        if got is None:
            got = train_once(graph, setting, train, val, lr, seed, epochs, rounding, final)
            store.put(key, got, epochs)
        return got

    def train_once(graph, setting, train, val, lr, seed, epochs, rounding="stochastic", final=False):
        update, fp32, qas = SETTINGS[setting]
        try:
            r = fine_tune(graph, parse_update(update, graph), train, val, epochs=epochs, lr=lr, seed=seed,
                          batch_size=args.batch_size, fp32=fp32, qas=qas, rounding=rounding,
                          momentum=args.momentum)
            out = {"val_acc": r["val_acc"], "val_loss": r["val_loss"], "train_acc": r["train_acc"],
                   "val_balanced_acc": r["val_balanced_acc"],
                   "collapse_rollbacks": r.get("collapse_rollbacks", 0), "seconds": round(r["seconds"], 1)}
            if final and not legacy:  # per-class figures of the runs the tables report
                out["val_confusion"] = r["val_confusion"]
            return out
        except MicrotrainError as e:  # divergence at a too-large lr is a result, not a crash
            return {"val_acc": None, "val_loss": None, "error": str(e), "seconds": None}

    def refine(model, setting, graph, sel_train, sel_held, centre):
        """centre/3, centre, 3*centre over the selection seeds: the smallest lr within one standard error
        of the lowest mean held-out loss (a diverged seed rejects its lr)."""
        scores, errors = {}, {}
        for lr in (float(f"{centre / 3:.3g}"), centre, float(f"{centre * 3:.3g}")):
            losses = [run(graph, setting, run_key(model, setting, "refine", lr, seed), sel_train, sel_held, lr,
                          seed, args.epochs).get("val_loss") for seed in seeds]
            ok = all(v is not None and np.isfinite(v) for v in losses)
            scores[lr] = float(np.mean(losses)) if ok else float("inf")
            errors[lr] = float(np.std(losses, ddof=1) / np.sqrt(len(losses))) if ok and len(losses) > 1 else 0.0
            print(f"  {setting:10s} refine lr {lr:<8g} held-out losses {losses} -> "
                  f"{scores[lr] if ok else 'rejected (diverged)'}", flush=True)
        finite = {k: v for k, v in scores.items() if np.isfinite(v)}
        if not finite:
            return centre
        best = min(finite, key=finite.get)
        return min(k for k, v in finite.items() if v <= finite[best] + errors[best])

    train = val = None
    for model in args.models:
        graph = load_model(MODELS / f"{model}.pkl")
        t_load = time.monotonic()
        train, val = load_dataset(args.dataset, graph.resolution, args.views)
        rng = np.random.default_rng(0)
        perm = rng.permutation(len(train))
        cut = int(0.8 * len(train))
        sel_train, sel_held = train.subset(np.sort(perm[:cut])), train.subset(np.sort(perm[cut:]))
        print(f"{model} on {args.dataset}: {len(train)} train ({len(sel_train)}/{len(sel_held)} for lr selection), "
              f"{len(val)} val, {train.num_classes} classes; skipped {train.skipped + val.skipped}; loaded in "
              f"{time.monotonic() - t_load:.0f} s", flush=True)
        for setting in settings:
            best, worse = None, 0
            for lr in grid:  # the decade scan, seed 0
                key = run_key(model, setting, "select", lr, 0)
                r = run(graph, setting, key, sel_train, sel_held, lr, 0, args.select_epochs)
                acc, loss = r["val_acc"], r.get("val_loss")
                print(f"  {setting:10s} select lr {lr:<8g} held-out acc {acc} loss {loss} ({r.get('seconds')} s)",
                      flush=True)
                if loss is not None and np.isfinite(loss) and (best is None or loss < best[1]):
                    best, worse = (lr, loss), 0
                elif best is not None and (loss is None or not np.isfinite(loss) or loss > SCAN_RISE * best[1]):
                    worse += 1  # clearly past the minimum: diverged, or the loss well above the best
                    if not legacy and worse >= SCAN_PATIENCE:
                        break
                else:  # on a plateau (int8 without QAS barely moves at small lrs): keep scanning
                    worse = 0
            lr = best[0] if best else grid[0]
            if best is not None and not args.quick:  # refine around the best decade over seeds
                lr = refine(model, setting, graph, sel_train, sel_held, best[0])
            chosen[(model, setting)] = lr
            for seed in seeds:
                key = run_key(model, setting, "final", lr, seed)
                r = run(graph, setting, key, train, val, lr, seed, args.epochs, final=True)
                print(f"  {setting:10s} final lr {lr:g} seed {seed}: val acc {r['val_acc']} balanced "
                      f"{r.get('val_balanced_acc')} ({r.get('seconds')} s)", flush=True)
        if args.diagnostics and model == "mcunet-5fps":  # ablation: round-to-nearest updates lose sub-LSB steps
            lr = chosen[(model, "int8+QAS")]
            for seed in seeds:
                key = run_key(model, "int8+QAS-nearest", "final", lr, seed)
                r = run(graph, "int8+QAS", key, train, val, lr, seed, args.epochs, "nearest", final=True)
                print(f"  int8+QAS nearest rounding lr {lr:g} seed {seed}: val acc {r['val_acc']}", flush=True)
        clear_prefix_cache()
    runs = dict(store.items())
    table = summarise(runs, args.models, chosen, seeds, chance=1 / train.num_classes, settings=settings)
    if args.diagnostics:
        lr = chosen[("mcunet-5fps", "int8+QAS")]
        accs = [runs[run_key("mcunet-5fps", "int8+QAS-nearest", "final", lr, s)]["val_acc"] for s in seeds]
        table["ablation_nearest_rounding"] = {"model": "mcunet-5fps", "lr": lr, "val_acc": accs,
                                              "mean": float(np.mean(accs)), "std": float(np.std(accs))}
        table["gradient_scales"] = gradient_scales(dataset=args.dataset)
    table["protocol"] = {"lr_grid": list(grid), "select_epochs": args.select_epochs, "epochs": args.epochs,
                         "views": args.views, "batch_size": args.batch_size, "seeds": list(seeds),
                         "selection": "80/20 split of train: decade scan (seed 0, select_epochs), then best/3, "
                                      "best, best*3 with every seed and the final epochs: the smallest lr within "
                                      "one standard error of the lowest mean held-out loss; a diverged seed "
                                      "rejects its lr" + ("" if legacy else f"; the scan stops after {SCAN_PATIENCE} "
                                                          f"decades in a row with a held-out loss above {SCAN_RISE} x "
                                                          "the best so far (or diverged)"),
                         "schedule": "1 warm-up epoch, cosine; "
                                     + (f"SGD with momentum {args.momentum:g}" if args.momentum else
                                        "SGD without momentum") + "; stochastic rounding"}
    table["dataset"] = args.dataset
    table["classes"] = list(train.classes)
    table["n_val"] = len(val)
    table["stem"] = stem
    table["numerics_fingerprint"] = fingerprint
    table["collapsed_runs"] = collapsed_runs(runs, args.models, chosen, seeds, 1 / train.num_classes, settings)
    table["protocol"]["data"] = (
        f"{len(train)} train / {len(val)} val images, {train.num_classes} classes; " +
        ("digits: 50 + 30 per class, fixed stratified split (seed 0), 8x8 grey 0..16 -> 0..255, bilinear "
         "upsampling to the model resolution, RGB; train views: whole image + random 70-100 % crops, no mirroring"
         if args.dataset == "digits" else
         "train views: the evaluation crop, its mirror and random resized crops with random flips"
         + ("" if legacy else "; images smaller than the model resolution are upscaled whole (runtime/images.py)")))
    table["wall_seconds"] = round(time.monotonic() - t_start, 1)
    if len(settings) < len(SETTINGS):  # one setting of a split job (exp_datasets.py): the full run writes it
        print(f"settings {settings} done; the table is written by a run with every setting")
        return
    if not args.quick:
        path = out_dir / f"{stem}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        if not legacy:
            table = merge_models(table, path, settings)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(table, indent=1) + "\n")
        tmp.replace(path)
        (out_dir / f"{stem}.md").write_text(markdown(table))
    print(markdown(table))


def gradient_scales(model="mcunet-5fps", views=4, batch=64, dataset="hymenoptera"):
    """Why QAS: per trained tensor, |real step per unit lr| / |real parameter|.
    fp32: |dL/dW| / |W|; int8 without QAS the step is dL/dWq codes = s * dL/dWq real; with QAS
    (dL/dWq) / s^2 codes. With QAS the int8 ratios equal the fp32 ones; without it they are off by
    s_w^2 (weights) and (x_scale s_w)^2 (biases), by different factors per tensor."""
    from microtrain.autodiff import build_training_graph
    from microtrain.commands.train import parse_update
    from microtrain.models import load_model
    from microtrain.ops.conv import is_depthwise
    from microtrain.quant.head import replace_head
    from microtrain.runtime.trainer import prefix_features
    from microtrain.quant.dequantize import dequantize_graph
    from microtrain.runtime.training import TrainingRuntime

    base = load_model(MODELS / f"{model}.pkl")
    data = load_dataset(dataset, base.resolution, views)[0]
    g = replace_head(base, data.num_classes)
    rng = np.random.default_rng(0)
    idx = rng.choice(len(data), batch, replace=False)
    res = parse_update("last-blocks:2", g).resolve(g)
    rows = {}
    for mode, graph in (("fp32", dequantize_graph(g)), ("int8", g)):
        tg = build_training_graph(graph, res)
        feats = prefix_features(graph, data, tg.n_prefix, tg.numerics)
        # the new head is all zeros, so no gradient would reach the blocks: give both modes the same
        # random head instead (real N(0, 0.05) weights; quantised with the head's w_scale for int8)
        head = graph.classifier()
        w_real = np.random.default_rng(1).normal(0, 0.05, head.params["weight"].shape)
        if mode == "int8":
            head.params["weight"] = np.clip(np.rint(w_real / head.params["w_scales"][:, None, None, None]),
                                            -128, 127).astype(np.int8)
        else:
            head.params["weight"] = w_real.astype(np.float32)
        grads = TrainingRuntime(tg).gradients({t: a[idx, 0] for t, a in feats.items()}, data.labels[idx])
        for name, spec in res.items():
            q = g.node(name)  # the int8 node: scales, and which channels are dead (saturated bias)
            # dead channels (zero weights, ~4e-9 scale, saturated bias) carry no signal: left out
            alive = (np.abs(q.params["bias"].astype(np.int64)) < 2**31 - 1) & (q.params["w_scales"] > 1e-6)
            sw = q.params["w_scales"].astype(np.float64)
            sx = g.tensors[q.inputs[0]].quant.scale
            for param in ("weight", "bias"):
                gk = f"grad:{name}.{param}"
                if gk not in grads:
                    continue
                p = graph.node(name).params[param].astype(np.float64)
                if param == "weight":  # the trained slice, as the gradient
                    p = p[list(spec.channels)] if is_depthwise(q) else p[:, list(spec.channels)]
                gr = grads[gk].astype(np.float64)
                scale = sw if param == "weight" else sx * sw  # code -> real, per output channel
                if param == "weight" and is_depthwise(q):
                    scale, keep = scale[list(spec.channels)], alive[list(spec.channels)]
                else:
                    keep = alive
                scale = scale.reshape((-1,) + (1,) * (gr.ndim - 1))
                r = rows.setdefault(f"{name}.{param}", {})

                def ratio(step_real, param_real):  # real step per unit lr / real parameter
                    den = np.linalg.norm(param_real[keep])
                    return float(np.linalg.norm(step_real[keep]) / den) if den > 0 else None

                if mode == "fp32":
                    r["fp32"] = ratio(gr, p)
                else:  # an update of u codes moves the real value by scale * u
                    r["int8"] = ratio(scale * gr, scale * p)
                    r["int8+QAS"] = ratio(scale * (gr / scale**2), scale * p)
    return rows


def summarise(runs, models, chosen, seeds, chance=0.5, settings=tuple(SETTINGS)):
    out = {"models": {}, "average": {}, "average_balanced": {}}
    for model in models:
        out["models"][model] = {}
        for setting in settings:
            sel = {k.split("|")[3]: {"acc": v.get("val_acc"), "loss": v.get("val_loss")} for k, v in runs.items()
                   if k.startswith(f"{model}|{setting}|select|")}
            refine = {}
            for k, v in runs.items():
                if k.startswith(f"{model}|{setting}|refine|"):
                    refine.setdefault(k.split("|")[3], []).append(v.get("val_loss"))
            lr = chosen[(model, setting)]
            finals = [runs[run_key(model, setting, "final", lr, seed)] for seed in seeds]
            accs = [v["val_acc"] if v["val_acc"] is not None else chance for v in finals]  # diverged: chance
            out["models"][model][setting] = {
                "lr": lr, "val_acc": accs, "mean": float(np.mean(accs)), "std": float(np.std(accs)),
                "min": min(accs), "max": max(accs),
                "balanced": [v.get("val_balanced_acc") for v in finals],
                "selection": dict(sorted(sel.items(), key=lambda kv: float(kv[0]))),
                "refine_losses": dict(sorted(refine.items(), key=lambda kv: float(kv[0])))}
    return averages(out, settings)


def averages(out, settings=tuple(SETTINGS)):
    """The table's average over its models, top-1 and balanced, per setting."""
    models = list(out["models"])
    out["average"], out["average_balanced"] = {}, {}
    for setting in settings:
        out["average"][setting] = float(np.mean([out["models"][m][setting]["mean"] for m in models]))
        bal = [b for m in models for b in out["models"][m][setting].get("balanced", [None])]
        out["average_balanced"][setting] = float(np.mean(bal)) if bal and None not in bal else None
    return out


def merge_models(table, path, settings):
    """A folder dataset's table keeps the models of earlier invocations (one job per model) computed with the
    same numerics and protocol; the averages then cover every model in it."""
    if not path.exists():
        return table
    old = json.loads(path.read_text())
    if (old.get("numerics_fingerprint") != table.get("numerics_fingerprint")
            or {k: v for k, v in old.get("protocol", {}).items() if k != "data"}
            != {k: v for k, v in table["protocol"].items() if k != "data"}):
        return table
    for model, row in old.get("models", {}).items():
        if model not in table["models"] and all(s in row for s in settings):
            table["models"][model] = row
            for k, v in old.get("collapsed_runs", {}).items():
                if k.split("|")[0] == model:
                    table["collapsed_runs"].setdefault(k, v)
    table["models"] = dict(sorted(table["models"].items(), key=lambda kv: MODEL_ORDER.index(kv[0])
                                  if kv[0] in MODEL_ORDER else 99))
    return averages(table, settings)


def collapsed_runs(runs, models, chosen, seeds, chance, settings=tuple(SETTINGS)):
    """Final runs whose TRAINING accuracy ended at chance (<= 1.5 x chance: the network collapsed to one
    class), and the validation mean of the others. Defined on training accuracy, so it does not look at val."""
    out = {}
    for model in models:
        for setting in settings:
            finals = [runs[run_key(model, setting, "final", chosen[(model, setting)], s)] for s in seeds]
            bad = [s for s, v in zip(seeds, finals) if v["val_acc"] is None or v["train_acc"] <= 1.5 * chance]
            ok = [v["val_acc"] for s, v in zip(seeds, finals) if s not in bad]
            out[f"{model}|{setting}"] = {"collapsed_seeds": bad,
                                         "rolled_back_seeds": [s for s, v in zip(seeds, finals)
                                                               if v.get("collapse_rollbacks")],
                                         "mean_of_others": float(np.mean(ok)) if ok else None}
    return out


def markdown(table) -> str:
    settings = [s for s in SETTINGS if s in table["average"]]
    dataset = table.get("dataset", "hymenoptera")
    title = DATASETS[dataset][1] if dataset in DATASETS else f"{dataset} ({len(table.get('classes', []))} classes)"
    lines = [f"# QAS experiment: {title}, last two blocks + new head", "",
             "Validation top-1 % , mean ± std over seeds (chosen lr in brackets); `head-only` trains the new head only "
             "(int8 + QAS). Produced by `benchmarks/exp_qas.py`; protocol in "
             f"{table.get('stem', dataset)}.json.", "",
             "| model | " + " | ".join(settings) + " |", "|---" * (len(settings) + 1) + "|"]
    for model, row in table["models"].items():
        cells = []
        for s in settings:
            r = row[s]
            cells.append("n/a" if r["mean"] is None else f"{100 * r['mean']:.1f} ± {100 * r['std']:.1f} [{r['lr']:g}]")
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    avg = table["average"]
    lines.append("| **average** | " + " | ".join("n/a" if avg[s] is None else f"**{100 * avg[s]:.1f}**" for s in settings) + " |")
    bal = table.get("average_balanced") or {}
    if bal and all(bal.get(s) is not None for s in settings):
        lines += ["", "Balanced accuracy (mean per-class accuracy), average over models and seeds: "
                  + "; ".join(f"{s} {100 * bal[s]:.1f} %" for s in settings) + "."]
    if all(avg.get(k) is not None for k in ("fp32", "int8", "int8+QAS", "head-only")):
        lines += ["", f"Average differences: int8+QAS - fp32 = {100 * (avg['int8+QAS'] - avg['fp32']):+.2f} points; "
                  f"int8+QAS - int8 = {100 * (avg['int8+QAS'] - avg['int8']):+.2f} points; head-only - fp32 = "
                  f"{100 * (avg['head-only'] - avg['fp32']):+.2f} points. "
                  + (f"One validation image is {100 / table['n_val']:.2f} points." if table.get("n_val") else "")
                  + (" The new head alone comes within 1 point of the best setting here, so this task cannot "
                     "separate the update rules" + ("; the gradient table below shows what QAS changes."
                                                    if table.get("gradient_scales") else ".")
                     if avg["head-only"] >= max(avg.values()) - 0.01 else "")]
    if "data" in table["protocol"]:
        pr = table["protocol"]
        lines += ["", f"Protocol: lr selection on an 80/20 split of train: {len(pr['lr_grid'])} decades "
                  + ("at most " if "scan stops" in pr.get("selection", "") else "") +
                  f"({pr['select_epochs']} epochs, seed 0), then best/3, best, best*3 with seeds {pr['seeds']} and "
                  f"{pr['epochs']} epochs, the smallest lr within one standard error of the lowest mean held-out loss; final {pr['epochs']} epochs on all of train, "
                  f"seeds {pr['seeds']}, {pr['views']} train views, batch {pr['batch_size']}. Data: {pr['data']}."]
    cr = table.get("collapsed_runs")
    rolled = {k: v["rolled_back_seeds"] for k, v in (cr or {}).items() if v.get("rolled_back_seeds")}
    if rolled:
        lines += ["", "Final runs in which the trainer rolled back a collapse to chance (runtime/trainer.py "
                  "CollapseRecovery: parameters of the lowest-loss epoch restored, lr / 3; they count in the "
                  "means as they ended): " + "; ".join(f"{k.replace('|', ' ')} seeds {v}" for k, v in rolled.items())
                  + "."]
    if cr and any(v["collapsed_seeds"] for v in cr.values()):
        lines += ["", "Collapsed runs: final runs whose training accuracy ended at chance (the network predicts "
                  "one class; defined on train accuracy, not val), and the validation mean of the other seeds. "
                  "The means above include the collapsed runs.", "",
                  "| model | " + " | ".join(settings) + " |", "|---" * (len(settings) + 1) + "|"]
        for model in table["models"]:
            cells = []
            for s in settings:
                v = cr[f"{model}|{s}"]
                other = "n/a" if v["mean_of_others"] is None else f"{100 * v['mean_of_others']:.1f}"
                cells.append(f"{len(v['collapsed_seeds'])} collapsed {v['collapsed_seeds'] or ''}; others {other}")
            lines.append(f"| {model} | " + " | ".join(cells) + " |")
    ab = table.get("ablation_nearest_rounding")
    if ab:
        lines += ["", f"Ablation ({ab['model']}, int8 + QAS, lr {ab['lr']:g}): round-to-nearest updates instead of "
                  f"stochastic rounding: {100 * ab['mean']:.1f} ± {100 * ab['std']:.1f} %."]
    gs = table.get("gradient_scales")
    if gs:
        lines += ["", "Why QAS (mcunet-5fps, one batch of 64, trained layers of the last two blocks + head): "
                  "the real-valued step per unit of learning rate divided by the real parameter, |step| / |param|, per "
                  "tensor (dead channels left out). With QAS the int8 ratios match fp32's (differences: activation "
                  "quantisation); without it they are off by s_w^2 (weights) or (x_scale s_w)^2 (biases), by "
                  "factors that differ between tensors, so one learning rate cannot suit all of them: at the lr "
                  "int8 selects, biases practically do not move.", "",
                  "| tensor | fp32 | int8 | int8+QAS |", "|---|---|---|---|"]
        for name, r in gs.items():
            cells = ["n/a (parameter is 0)" if r.get(k) is None else f"{r[k]:.3g}" for k in ("fp32", "int8", "int8+QAS")]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())

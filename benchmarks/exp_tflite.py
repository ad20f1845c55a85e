"""Training int8 TensorFlow Lite models (issue 22): accuracy as shipped, after head-only training, after a
searched sparse update that fits 256 KB of training SRAM, and after a full update (NumPy simulation), with
peak SRAM, flash and Cortex-M7 instructions per training step of each scheme's firmware under QEMU.

Models and data ($MICROTRAIN_SHARED/models/tflite, $MICROTRAIN_SHARED/data):
  vww_96_int8 and person_detect_int8 on data/person (800 train / 300 val, no_person / person);
  ic_resnet8_cifar10_int8 on data/cifar10 (a stratified subset of train/, --cifar-train, and the whole val/).
The models' own heads are kept (their classes are the folders'; the mapping is checked by name and written
into the results). person_detect reads grayscale: each view is resized/cropped in RGB, then converted to
the ITU-R 601-2 luma of PIL's "L" mode (runtime/images.to_channels), then k -> k - 128, as `predict` does.

Protocol, per model and scheme (head | searched | full), int8 + QAS, stochastic rounding, SGD, batch 32:
  1. lr: a reduced grid of 3 decades (LR_GRID) on a fixed stratified 80/20 split of train/ (seed 0), seed 0,
     the final number of epochs; the lr with the lowest held-out loss wins (a diverged run is rejected). The
     validation folder is never used to choose anything.
  2. searched scheme: contribution analysis (scheme_search/contribution.py, on its own held-out split of
     train/) and the evolutionary search under the analytic extra-memory budget, first budget of BUDGETS
     whose exact engine plan fits a 256 KB SRAM / 1 MB flash part (MemoryReport.check_part), as
     `microtrain plan --budget B --ram 256K --flash 1M` checks it;
  3. final: all of the (subset of) train/ with the chosen lr, seeds SEEDS; top-1 on val/ (mean, std).
  4. firmware: `compile` for cortex-m7 with the chosen lr, link (256 KB / 1 MB; a scheme that does not fit
     is linked with a 1 MB SRAM limit to count its instructions and marked), FW_STEPS training steps on
     train/ images under QEMU with the instruction counter, and the host build (gcc) trained on the same
     samples: parameters, logits and losses must be identical.
Every run is stored under results/tflite/ (run_store.RunDir, keyed by the numerics fingerprint) and frozen-
prefix features are cached on disk (--cache), so the experiment resumes where it stopped.

    nice -n 19 python benchmarks/exp_tflite.py              # writes results/tflite_train.json and .md
    python benchmarks/exp_tflite.py --quick --out DIR       # seconds: the pipeline on a few images
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from microtrain.cache import cache_root

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MICROTRAIN_SHARED", REPO.parent / "shared"))
RESULTS = REPO / "benchmarks" / "results"
DEFAULT_CACHE = cache_root() / "exp_tflite"

MODELS = {  # name: data folder under $MICROTRAIN_SHARED/data
    "vww_96_int8": "person",
    "person_detect_int8": "person",
    "ic_resnet8_cifar10_int8": "cifar10",
}
SCHEMES = ("head", "searched", "full")
LR_GRID = (1e-3, 1e-2, 1e-1)  # head and searched
# full update: the first conv's weight gradient scales with the input scale, 1/255 or 2/255 for the person
# models but 1.0 for ResNet-8 (raw pixel codes), whose first conv diverges above ~1e-6 (tests/test_tflite_train.py)
FULL_LR_GRID = {"vww_96_int8": (1e-4, 1e-3, 1e-2), "person_detect_int8": (1e-4, 1e-3, 1e-2),
                "ic_resnet8_cifar10_int8": (1e-7, 1e-6, 1e-5)}
SEEDS = (0, 1, 2)
BUDGETS = ("128KB", "96KB", "64KB", "48KB", "32KB", "16KB", "8KB")  # analytic extra memory, largest first
RAM, FLASH = 256 * 1024, 1024 * 1024
FW_STEPS = 3
EDGE_EXTENSIONS = 2  # decades added beyond the grid while the best lr sits at its edge

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_store import RunDir, run_key  # noqa: E402


def _norm(name: str) -> str:
    s = re.sub(r"[^a-z]", "", name.lower())
    return {"nonperson": "noperson", "notperson": "noperson"}.get(s, s)


def label_mapping(graph, classes) -> dict:
    """The model's output order against the folder's class order: identity when the names agree."""
    from microtrain.labels import class_names

    names = class_names(graph)
    same = len(names) == len(classes) and all(_norm(a) == _norm(b) for a, b in zip(names, classes))
    if not same:
        raise SystemExit(f"{graph.name}: output classes {names} do not match the folders {classes}; "
                         "a mapping is needed")
    return {"model_outputs": names, "folder_classes": list(classes), "mapping": "identity (output i = folder i)"}


def stratified(labels, n: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of about n images, the same share of every class."""
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    per = max(1, n // len(classes))
    return np.sort(np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:per] for c in classes]))


def load_data(model, graph, args):
    from microtrain.runtime.datasets import load_image_folder

    root = Path(args.data_root) / MODELS[model]
    c = graph.input_spec.shape[-1]
    train = load_image_folder(root / "train", graph.resolution, views=args.views, seed=0, channels=c)
    val = load_image_folder(root / "val", graph.resolution, classes=train.classes, channels=c)
    limit = args.cifar_train if MODELS[model] == "cifar10" else args.train_limit
    if limit and limit < len(train):
        train = own_subset(train, stratified(train.labels, limit))
    if args.val_limit and args.val_limit < len(val):
        val = own_subset(val, stratified(val.labels, args.val_limit))
    return root, train, val


def own_subset(data, index):
    """A subset that is its own root: the prefix cache then computes features of these images only (a
    subset() would compute them for the whole parent folder)."""
    from microtrain.runtime.datasets import ImageData

    return ImageData(data.views[index], data.labels[index], list(data.classes),
                     [data.paths[i] for i in index] if data.paths else [], list(data.skipped))


def as_shipped(graph, val) -> dict:
    from microtrain.runtime.forward import run_int8
    from microtrain.runtime.metrics import balanced_accuracy, confusion_matrix

    logits = run_int8(graph, val.views[:, 0]).reshape(len(val), -1)
    pred = logits.argmax(1)  # ties go to the lower index, as predict's top-1
    conf = confusion_matrix(val.labels, pred, graph.num_classes)
    return {"val_acc": float(np.mean(pred == val.labels)), "val_balanced_acc": balanced_accuracy(conf),
            "correct": int(np.sum(pred == val.labels)), "n": len(val)}


def searched_scheme(model, graph, train, args, log) -> dict:
    """Contribution analysis + search; the first budget whose engine plan fits the part."""
    from microtrain.errors import BudgetError, MicrotrainError
    from microtrain.scheme_search.contribution import AnalysisSettings, analyze
    from microtrain.scheme_search.memory import MemoryModel, parse_budget, planner_report
    from microtrain.scheme_search.search import search

    n = len(graph.indexed_convs())
    settings = AnalysisSettings(epochs=args.analysis_epochs, lr=args.analysis_lr, seed=0, batch_size=16,
                                holdout=0.2, n_candidates=args.candidates, metric="loss",
                                bias_step=max(1, round(n / args.bias_points)))
    t0 = time.monotonic()
    table = analyze(graph, data=train, settings=settings, cache_dir=Path(args.cache) / "contribution",
                    workers=1, log=log)
    analysis_s = time.monotonic() - t0
    mm = MemoryModel(graph)
    tried = []
    for budget in BUDGETS:
        b = parse_budget(budget)
        if b < mm.minimum_bytes:
            continue
        result = search(table, mm, b, seed=0, name=f"{model}-searched-{budget.lower()}")
        scheme = result.scheme.pinned(graph)
        try:
            report = planner_report(graph, scheme)
            report.check_part(RAM, FLASH)
        except (BudgetError, MicrotrainError) as e:
            tried.append({"budget": budget, "fits": False, "why": str(e).splitlines()[0]})
            log(f"  {model}: search at {budget}: engine plan does not fit ({str(e).splitlines()[0]})")
            continue
        tried.append({"budget": budget, "fits": True, "training_sram": report.training_sram_bytes,
                      "total_sram": report.total_sram_bytes})
        log(f"  {model}: searched scheme at {budget}: n_bias {scheme.n_bias}, weights {scheme.weights}; engine "
            f"plan {report.total_sram_bytes:,} B SRAM")
        return {"scheme": scheme.to_dict(), "budget": budget, "extra_bytes": result.bytes,
                "predicted_gain": result.gain, "budgets_tried": tried, "analysis_seconds": round(analysis_s, 1),
                "analysis": {"settings": settings.key(), "metric": settings.metric,
                             "runs": len(table.meta.get("runs", {})), "n_train": table.meta.get("n_train"),
                             "n_heldout": table.meta.get("n_heldout")}}
    raise SystemExit(f"{model}: no searched scheme fits {RAM} B SRAM at any budget of {BUDGETS}")


def make_scheme(name, graph, searched):
    from microtrain.commands.train import parse_update
    from microtrain.sparse.scheme import UpdateScheme

    if name == "searched":
        return UpdateScheme.from_dict(searched["scheme"])
    return parse_update(name, graph)


def firmware(model, graph, scheme, lr, root, work: Path, quick: bool) -> dict:
    """compile -> link (256 KB / 1 MB) -> QEMU steps with instruction counts -> host build comparison."""
    from microtrain.codegen import compile_model
    from microtrain.errors import BudgetError
    from microtrain.targets.cortex_m.data import session_data
    from microtrain.targets.cortex_m.project import build_project, emit_firmware
    from microtrain.targets.cortex_m.session import cost_report, run_session
    from microtrain.targets.host import HostModel, build_host

    project = work / f"{model}-{scheme.name or 'scheme'}"
    compiled = compile_model(graph, scheme, out_dir=project, lr=lr, seed=1)
    rep = compiled.report
    row = {"planned_training_sram": rep.training_sram_bytes, "planned_total_sram": rep.total_sram_bytes,
           "planned_flash": rep.flash_bytes, "fits": True}
    try:
        build, regions = emit_firmware(project, "cortex-m7")
    except BudgetError as e:  # measured anyway, with a raised SRAM limit (as bench_cortexm.py does)
        row["fits"], row["link_error"] = False, str(e).splitlines()[0]
        build, regions = build_project(project, project / "build-big", "cortex-m7", ram_limit=4 * RAM)
    row.update(linked_sram=build.usage.ram, linked_flash=build.usage.flash)
    c = graph.input_spec.shape[-1]
    train, evaluate, _, _ = session_data(root, graph.resolution, graph.num_classes, steps=FW_STEPS, n_eval=2,
                                         seed=1, channels=c)
    t0 = time.monotonic()
    s = run_session(build.elf, "cortex-m7", train=train, evaluate=evaluate, count=True, timeout=3600)
    step = cost_report(s.instructions, regions, "train")
    row.update(instructions_per_step=step.per_call, by_phase=step.by_phase, qemu_seconds=round(time.monotonic() - t0, 1),
               device_losses=[float(v) for v in s.losses], steps=len(s.losses))
    host = HostModel(build_host(project, opt="-O1"))
    host_losses = [host.train_step(x, int(y)) for x, y in zip(*train)]
    row["identical_to_host"] = bool(
        s.params == host.export_params() and np.array_equal(np.asarray(s.logits), host.infer(evaluate[0]))
        and np.allclose(s.losses, host_losses, atol=1e-6, rtol=0))
    row["trainable_param_bytes"] = len(s.params)
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--views", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    ap.add_argument("--lrs", type=float, nargs="+", default=None, help="one lr grid for every scheme (default: "
                    "LR_GRID for head and searched, FULL_LR_GRID for full)")
    ap.add_argument("--cifar-train", type=int, default=1000, help="stratified subset of cifar10/train (0: all)")
    ap.add_argument("--train-limit", type=int, default=0, help="stratified subset of the other train/ folders")
    ap.add_argument("--val-limit", type=int, default=0, help="stratified subset of val/ (0: all; --quick)")
    ap.add_argument("--analysis-epochs", type=int, default=2)
    ap.add_argument("--analysis-lr", type=float, default=0.01)
    ap.add_argument("--bias-points", type=int, default=5, help="about this many last-k-biases points in the analysis")
    ap.add_argument("--candidates", type=int, default=3, help="weight updates considered for the last N convs")
    ap.add_argument("--no-firmware", action="store_true", help="skip the Cortex-M7 builds and QEMU runs")
    ap.add_argument("--data-root", default=str(SHARED / "data"))
    ap.add_argument("--cache", default=str(DEFAULT_CACHE), help="prefix features and contribution runs")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--quick", action="store_true",
                    help="pipeline check in seconds: ResNet-8, at most 30 train / 20 val images, 1 epoch, 1 seed, "
                         "1 lr, a small analysis, no firmware")
    ap.add_argument("--report", action="store_true", help="only rewrite the .md from the stored .json")
    args = ap.parse_args(argv)
    if args.report:
        doc = json.loads((Path(args.out) / "tflite_train.json").read_text())
        (Path(args.out) / "tflite_train.md").write_text(markdown(doc))
        return 0
    if args.quick:
        args.models, args.epochs, args.seeds, args.lrs = ["ic_resnet8_cifar10_int8"], 1, [0], [1e-2]
        args.cifar_train, args.val_limit, args.views, args.candidates, args.bias_points = 30, 20, 1, 1, 2
        args.analysis_epochs, args.no_firmware = 1, True

    from microtrain.errors import MicrotrainError
    from microtrain.models import load_model
    from microtrain.runtime.trainer import clear_prefix_cache, fine_tune, set_prefix_disk_cache
    from microtrain.scheme_search.contribution import holdout_split
    from numerics_fingerprint import numerics_fingerprint

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fingerprint = numerics_fingerprint()
    tag = "quick" if args.quick else "full"
    store = RunDir(out / "tflite" / tag, fingerprint, args.views, args.batch_size, 0.0)
    set_prefix_disk_cache(Path(args.cache) / "prefix")
    t_start = time.monotonic()
    log = lambda s: print(s, flush=True)  # noqa: E731
    doc = {"models": {}, "numerics_fingerprint": fingerprint}

    def run(model, scheme_name, scheme, stage, lr, seed, tr, va):
        key = run_key(model, scheme_name, stage, lr, seed)
        got = store.get(key, args.epochs)
        if got is None:
            try:
                r = fine_tune(graph, scheme, tr, va, epochs=args.epochs, lr=lr, seed=seed,
                              batch_size=args.batch_size)
                got = {"val_acc": r["val_acc"], "val_loss": r["val_loss"], "train_acc": r["train_acc"],
                       "val_balanced_acc": r["val_balanced_acc"], "collapse_rollbacks": r["collapse_rollbacks"],
                       "seconds": round(r["seconds"], 1)}
            except MicrotrainError as e:  # divergence at a too-large lr is a result
                got = {"val_acc": None, "val_loss": None, "error": str(e).splitlines()[0]}
            store.put(key, got, args.epochs)
        log(f"  {model} {scheme_name} {stage} lr {lr:g} seed {seed}: acc {got['val_acc']} loss {got['val_loss']} "
            f"({got.get('seconds')} s)")
        return got

    for model in args.models:
        t_model = time.monotonic()
        graph = load_model(str(SHARED / "models" / "tflite" / f"{model}.tflite"))
        root, train, val = load_data(model, graph, args)
        entry = {"data": MODELS[model], "n_train": len(train), "n_val": len(val),
                 "input": f"{graph.resolution}x{graph.resolution}x{graph.input_spec.shape[-1]}",
                 "labels": label_mapping(graph, train.classes), "schemes": {}}
        entry["as_shipped"] = as_shipped(graph, val)
        log(f"{model}: {len(train)} train / {len(val)} val; as shipped {100 * entry['as_shipped']['val_acc']:.2f} %")
        tr_idx, ho_idx = holdout_split(train.labels, 0.2, 0)
        sel_train, sel_held = train.subset(tr_idx), train.subset(ho_idx)
        searched = searched_scheme(model, graph, train, args, log)
        entry["searched"] = searched
        for name in SCHEMES:
            scheme = make_scheme(name, graph, searched)
            if not scheme.name:
                scheme.name = name
            grid = list(args.lrs or (FULL_LR_GRID[model] if name == "full" else LR_GRID))
            sel = {lr: run(model, name, scheme, "select", lr, 0, sel_train, sel_held) for lr in grid}
            for _ in range(EDGE_EXTENSIONS):  # the best lr at an edge of the grid: one more decade that way
                ok = {k: r["val_loss"] for k, r in sel.items() if r["val_loss"] is not None and np.isfinite(r["val_loss"])}
                best = min(ok, key=ok.get) if ok else None
                if best is None or len(grid) < 2 or best not in (min(grid), max(grid)):
                    break
                more = float(f"{best / 10 if best == min(grid) else best * 10:.3g}")
                grid.append(more)
                sel[more] = run(model, name, scheme, "select", more, 0, sel_train, sel_held)
            ok = {k: r["val_loss"] for k, r in sel.items() if r["val_loss"] is not None and np.isfinite(r["val_loss"])}
            lr = min(ok, key=ok.get) if ok else min(grid)
            finals = [run(model, name, scheme, "final", lr, s, train, val) for s in args.seeds]
            accs = [r["val_acc"] if r["val_acc"] is not None else 1 / train.num_classes for r in finals]
            row = {"lr": lr, "selection_loss": {f"{k:g}": v["val_loss"] for k, v in sorted(sel.items())},
                   "seeds": list(args.seeds), "val_acc": accs, "mean": float(np.mean(accs)),
                   "std": float(np.std(accs)), "balanced": [r.get("val_balanced_acc") for r in finals],
                   "rolled_back": [s for s, r in zip(args.seeds, finals) if r.get("collapse_rollbacks")],
                   "diverged": [s for s, r in zip(args.seeds, finals) if r["val_acc"] is None]}
            if not args.no_firmware:
                key = run_key(model, name, "firmware", lr, 1)
                fw = store.get(key, FW_STEPS)
                if fw is None:
                    try:
                        with tempfile.TemporaryDirectory(prefix="exp-tflite-") as tmp:
                            fw = firmware(model, graph, scheme, lr, root, Path(tmp), args.quick)
                        store.put(key, fw, FW_STEPS)
                    except Exception as e:  # noqa: BLE001 - reported, not stored: a rerun retries it
                        log(f"  {model} {name} firmware FAILED: {type(e).__name__}: {e}")
                        row["firmware_error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                        entry["schemes"][name] = row
                        continue
                row["firmware"] = fw
                log(f"  {model} {name} firmware: {fw['instructions_per_step'] / 1e6:.1f} M instr/step, SRAM "
                    f"{fw['linked_sram']:,} B, flash {fw['linked_flash']:,} B, fits {fw['fits']}, identical to host "
                    f"{fw['identical_to_host']}")
            entry["schemes"][name] = row
        entry["seconds"] = round(time.monotonic() - t_model, 1)
        doc["models"][model] = entry
        clear_prefix_cache()
    doc["protocol"] = {
        "epochs": args.epochs, "views": args.views, "batch_size": args.batch_size, "seeds": list(args.seeds),
        "lr_grid": list(args.lrs) if args.lrs else {"head, searched": list(LR_GRID), "full": FULL_LR_GRID},
        "cifar_train": args.cifar_train, "fw_steps": FW_STEPS,
        "selection": "fixed stratified 80/20 split of train/ (seed 0), seed 0, the final epochs; lowest held-out "
                     f"loss; while the best lr is at an edge of the grid, one more decade beyond it (at most "
                     f"{EDGE_EXTENSIONS}); diverged runs rejected; val/ never used for a choice",
        "training": "int8 + QAS, stochastic rounding, SGD without momentum, 1 warm-up epoch then cosine; the "
                    "models' own heads (classes match the folders)",
        "searched": f"contribution analysis ({args.analysis_epochs} epochs, lr {args.analysis_lr:g}, batch 16, 20 % "
                    f"held out of train/, biases of the last k convs for about {args.bias_points} values of k, the last "
                    f"{args.candidates} convs' weights at ratios 1/8..1, held-out loss as the gain), then "
                    f"the evolutionary search at the first analytic budget of {list(BUDGETS)} whose exact engine "
                    f"plan fits {RAM // 1024} KB SRAM / {FLASH // 1024 // 1024} MB flash",
        "grayscale": "person_detect: RGB decode, resize/center-crop in RGB, then PIL 'L' (ITU-R 601-2 luma "
                     "L = R*299/1000 + G*587/1000 + B*114/1000), then int8 = L - 128",
        "firmware": f"compile --target cortex-m7 with the chosen lr; {FW_STEPS} steps (batch 1) on train/ images "
                    "under QEMU with the instruction counter; the gcc host build trained on the same samples must "
                    "end with identical parameters, logits and losses"}
    doc["wall_seconds"] = round(time.monotonic() - t_start, 1)
    path = out / "tflite_train.json"
    if path.exists():  # keep the models of other invocations (one job per model) with the same numerics
        prev = json.loads(path.read_text())
        if (prev.get("numerics_fingerprint") == fingerprint
                and prev.get("protocol") == json.loads(json.dumps(doc["protocol"]))):  # tuples read back as lists
            doc["models"] = {**prev.get("models", {}), **doc["models"]}
    order = list(MODELS)
    doc["models"] = dict(sorted(doc["models"].items(), key=lambda kv: order.index(kv[0])))
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    tmp.replace(path)
    (out / "tflite_train.md").write_text(markdown(doc))
    print(markdown(doc))
    return 0


def _grid_text(grid) -> str:
    if isinstance(grid, list):
        return str(grid)
    full = "; ".join(f"{m} {list(v)}" for m, v in grid["full"].items())
    return f"{grid['head, searched']} for head and searched, for full: {full}"


def _pct(row) -> str:
    return f"{100 * row['mean']:.1f} ± {100 * row['std']:.1f}"


def markdown(doc) -> str:
    """The three training tables (one per model) with the as-shipped accuracy beside them."""
    lines = []
    for model, e in doc["models"].items():
        a = e["as_shipped"]
        lab = e.get("labels") or {}
        mapping = (f" Outputs {', '.join(lab['model_outputs'])} = class folders {', '.join(lab['folder_classes'])} "
                   f"in this order." if lab else "")
        lines += [f"**{model}** on {e['data']} ({e['n_train']} train / {e['n_val']} val images, input {e['input']}); "
                  f"as shipped: **{100 * a['val_acc']:.1f} %** ({a['correct']}/{a['n']}).{mapping}", "",
                  "| update | val top-1 % (mean ± std) | lr | peak SRAM | flash | M7 instr/step | fits 256 KB / 1 MB | QEMU = host |",
                  "|---|---|---|---|---|---|---|---|"]
        for name in SCHEMES:
            r = e["schemes"].get(name)
            if r is None:
                continue
            label = {"head": "head only", "full": "full (simulation)",
                     "searched": f"searched sparse ({e['searched']['budget']} plan budget)"}[name]
            fw = r.get("firmware")
            if fw:
                mem = f"{fw['linked_sram'] / 1024:.1f} KB | {fw['linked_flash'] / 1024:.1f} KB | " \
                      f"{fw['instructions_per_step'] / 1e6:.1f} M | {'yes' if fw['fits'] else 'no'} | " \
                      f"{'yes' if fw['identical_to_host'] else 'NO'}"
            else:
                mem = "n/a | n/a | n/a | n/a | n/a"
            lines.append(f"| {label} | {_pct(r)} | {r['lr']:g} | {mem} |")
        seeds = next(iter(e["schemes"].values()))["seeds"]
        lines += ["", f"Seeds {seeds}; per-seed accuracies and the selection losses in tflite_train.json.", ""]
    p = doc.get("protocol", {})
    if p:
        lines += [f"Protocol: {p['epochs']} epochs, {p['views']} views, batch {p['batch_size']}; {p['training']}. "
                  f"lr from {_grid_text(p['lr_grid'])} on a {p['selection']}. Searched: {p['searched']}. "
                  f"ResNet-8 trains on a stratified {p['cifar_train']}-image subset of cifar10/train. "
                  f"Grayscale: {p['grayscale']}. Firmware: {p['firmware']}; a scheme that does not fit was linked "
                  "with a raised SRAM limit to count its instructions. Produced by `benchmarks/exp_tflite.py`."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())

"""Learning on the device (issue 14, item 3): held-out accuracy of mcunet-5fps (the 49 KB sparse-update scheme,
a new head for the dataset's classes) trained on an emulated Cortex-M7, after 0, N1, N2, ... steps, with the x
axis also in estimated device minutes at 216 MHz.

    nice -n 19 python benchmarks/exp_device_curve.py [--datasets trashnet person] [--epochs 2]

Protocol, per dataset:
1. Samples: every image file of train/ and val/ -> the evaluation transform of runtime/images.py (a photo: shorter
   side resized to round(128 / 0.875) = 146 px, bilinear, centre crop 128 x 128; an image no larger than 128 px
   upscaled whole) -> uint8 RGB -> int8 by the model's input quantisation (pixel k -> k - 128). The training
   stream is the training set in a seeded order, reshuffled every epoch; the firmware reads it sample by sample
   from a host file through semihosting (targets/cortex_m/mt_device_main.c), straight into the arena.
2. lr: the firmware trains batch 1 SGD at a constant lr (no momentum, stochastic rounding, QAS). The lr is chosen
   by a small held-out check with the same generated C built for the host (bit-identical to the device): 80/20
   split of train/, --select-epochs over the 80 %, --select-orders stream orders, the lr of lowest mean held-out
   loss.
3. Device: `microtrain compile --target cortex-m7` equivalent (codegen.compile_model + emit_firmware), run under
   qemu-system-arm (mps2-an500) one segment per checkpoint interval; each segment resumes the previous one's
   parameters and update counter (resume.bin) and returns its parameters (params.bin = mt_export_params). The
   QEMU instruction counter gives the instructions of mt_train_step; device minutes = instructions / 216e6 / 60,
   an ESTIMATE (one instruction per cycle, no wait states, sample I/O not counted).
4. Host: (a) the same generated C built with gcc trains on the same stream (same order, lr and rounding seed):
   its parameters must equal the device's at every checkpoint (asserted; recorded in the JSON); (b) the NumPy
   simulation (runtime.TrainingRuntime, the accuracy tool of the other experiments, with sums="c": the C kernels'
   float32 summation order, one BLAS thread) trains on the same stream: its parameter differences from the device
   are recorded at every checkpoint. Held-out accuracy is evaluated
   on the host from the device's exported parameters (the host C build's int8 inference, bit-identical to the
   device's: checked once on QEMU at the last checkpoint).

Every stage is cached under --cache (one file per segment / lr run), so an interrupted run resumes.
Results: benchmarks/results/device_curve.json, .md, .png (merged per dataset)."""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from microtrain.cache import cache_root

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
SHARED = Path(os.environ.get("MICROTRAIN_SHARED", REPO.parent / "shared"))
CACHE = cache_root() / "device_curve"

MODEL, SCHEME, CPU = "mcunet-5fps", "mcunet-5fps-49kb", "cortex-m7"
CLOCK_HZ = 216e6  # STM32F746 (the paper's board)
LR_GRID = (0.0003, 0.001, 0.003, 0.01, 0.03)  # around the QAS table's 0.03 (batch 32); batch 1 takes 32x more steps
SEED = 0  # stream order and the compiled stochastic-rounding seed


def log(msg: str) -> None:
    print(msg, flush=True)


def digest(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else str(p).encode())
        h.update(b"\0")
    return h.hexdigest()[:12]


# ----- data -------------------------------------------------------------------------------------------------
def dataset_folder(name: str) -> Path:
    p = Path(name)
    return p if p.is_dir() else SHARED / "data" / name


def spread(files: list, n: int | None) -> list:
    """n files evenly spaced over the (class-sorted) list, so every class keeps some; None: all."""
    if n is None or n >= len(files):
        return files
    return [files[i] for i in np.linspace(0, len(files) - 1, n).astype(int)]


def load_split(folder: Path, resolution: int, cache: Path, max_train: int | None, max_val: int | None):
    """int8 train and val images + labels + class names, cached as one .npz per folder and limits."""
    from microtrain.runtime.datasets import list_image_folder
    from microtrain.targets.cortex_m.data import load_samples, split_folders

    train_dir, val_dir = split_folders(folder)
    classes, train_files = list_image_folder(train_dir)
    val_classes, val_files = list_image_folder(val_dir)
    if val_classes != classes:
        raise SystemExit(f"{folder}: train/ has classes {classes} but val/ has {val_classes}")
    train_files, val_files = spread(train_files, max_train), spread(val_files, max_val)  # limits: CI runs only
    key = digest(folder.resolve(), resolution, [str(p) for p, _ in train_files], [str(p) for p, _ in val_files])
    path = cache / f"samples-{key}.npz"
    if path.exists():
        z = np.load(path, allow_pickle=False)
        return z["x_train"], z["y_train"], z["x_val"], z["y_val"], classes
    x_tr, y_tr, skip_tr = load_samples(train_files, resolution)
    x_va, y_va, skip_va = load_samples(val_files, resolution)
    for f, why in skip_tr + skip_va:
        log(f"  skipped {f}: {why}")
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, x_train=x_tr, y_train=y_tr, x_val=x_va, y_val=y_va)
    return x_tr, y_tr, x_va, y_va, classes


def stream_order(n: int, steps: int, seed: int) -> np.ndarray:
    """Indices of `steps` training samples: the set in a seeded order, reshuffled every epoch."""
    rng = np.random.default_rng(seed)
    epochs = math.ceil(steps / n) if steps else 0
    return np.concatenate([rng.permutation(n) for _ in range(epochs)] or [np.zeros(0, int)])[:steps]


def checkpoints(total: int, epoch: int) -> list[int]:
    """0, a doubling start (10, 25, 50, 100, 200), then every 100 steps, the epoch ends and the last step."""
    pts = {0, total} | {c for c in (10, 25, 50, 100, 150) if c < total} | set(range(200, total, 100))
    pts |= {k * epoch for k in range(1, total // epoch + 1)}
    return sorted(p for p in pts if p <= total)


# ----- metrics ----------------------------------------------------------------------------------------------
def metrics(logits_q: np.ndarray, labels: np.ndarray, quant) -> dict:
    """Top-1, balanced accuracy and mean cross-entropy of int8 logits (dequantised with the output quant)."""
    z = (logits_q.astype(np.float64) - quant.zero_point) * quant.scale
    z -= z.max(1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    pred = logits_q.argmax(1)
    per_class = [float((pred[labels == c] == c).mean()) for c in np.unique(labels)]
    return {"acc": float((pred == labels).mean()), "balanced": float(np.mean(per_class)),
            "loss": float(-logp[np.arange(len(labels)), labels].mean())}


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return c - h, c + h


# ----- the compiled project -----------------------------------------------------------------------------------
def compile_project(graph, out: Path, lr: float):
    """codegen + Cortex-M7 firmware (the library calls of `microtrain compile --target cortex-m7 --lr LR`)."""
    from microtrain.codegen import compile_model
    from microtrain.sparse.fixtures import load_scheme
    from microtrain.targets.cortex_m.project import emit_firmware

    compiled = compile_model(graph, load_scheme(SCHEME), out_dir=out, lr=lr, seed=SEED)
    build, regions = emit_firmware(out, CPU)
    return compiled, build, regions


def host_model(project: Path):
    from microtrain.targets.host import HostModel, build_host

    return HostModel(build_host(project))


# ----- lr check -----------------------------------------------------------------------------------------------
def select_lr(model, data, quant, epochs: int, orders: int, grid, cache: Path) -> dict:
    """Held-out check with the host build of the generated C: 80/20 split of train, `epochs` passes over the
    80 % at each lr of the grid, `orders` stream orders; the lr of lowest mean held-out loss (diverged: inf)."""
    x, y = data
    perm = np.random.default_rng(1234).permutation(len(y))
    n_hold = max(1, len(y) // 5)
    hold, fit = perm[:n_hold], perm[n_hold:]
    runs = {}
    for lr in grid:
        for order_seed in range(orders):
            path = cache / f"lr-{lr:g}-order{order_seed}-ep{epochs}-{digest(fit.tobytes())}.json"
            if path.exists():
                r = json.loads(path.read_text())
            else:
                model.reset()
                model.set_lr(lr)
                for i in fit[stream_order(len(fit), epochs * len(fit), order_seed)]:
                    model.train_step(x[i], int(y[i]))
                r = metrics(model.infer(x[hold]), y[hold], quant)
                if not math.isfinite(r["loss"]):
                    r["loss"] = float("inf")
                path.write_text(json.dumps(r))
            runs.setdefault(f"{lr:g}", []).append(r)
        log(f"  lr {lr:g}: held-out loss {np.mean([r['loss'] for r in runs[f'{lr:g}']]):.3f}, "
            f"acc {np.mean([r['acc'] for r in runs[f'{lr:g}']]):.3f}")
    best = min(runs, key=lambda k: np.mean([r["loss"] for r in runs[k]]))
    model.reset()
    return {"lr": float(best), "runs": runs, "held_out": int(n_hold), "fit": int(len(fit)), "epochs": epochs,
            "rule": f"80/20 split of train/ (split seed 1234), batch 1 SGD over the 80 % for {epochs} epoch(s), "
                    f"{orders} stream order(s), lr grid {', '.join(f'{v:g}' for v in grid)}; lowest mean held-out "
                    "cross-entropy; run by the host build of the generated C (bit-identical to the device)"}


# ----- device segments ----------------------------------------------------------------------------------------
def device_segments(build, regions, stream, points: list[int], cache: Path, timeout: float) -> list[dict]:
    """One QEMU session per checkpoint interval, each resuming the previous one; cached per segment."""
    from microtrain.targets.cortex_m.session import run_session

    x, y = stream
    train_ids = [r.id for r in regions if r.function == "train"]
    out = []
    params = None
    for k, c in enumerate(points):
        path = cache / f"seg-{c:05d}.npz"
        if path.exists():
            z = np.load(path, allow_pickle=False)
            seg = {"step": c, "params": z["params"].tobytes(), "losses": z["losses"].tolist(),
                   "instructions": int(z["instructions"]), "wall_s": float(z["wall_s"])}
        else:
            prev = points[k - 1] if k else 0
            t0 = time.time()
            if c == 0:  # the compiled parameters, as the firmware exports them before any step
                s = run_session(build.elf, CPU, timeout=timeout, count=False)
                instructions = 0
            else:
                s = run_session(build.elf, CPU, train=(x[prev:c], y[prev:c]), resume=(params, prev),
                                count=True, timeout=timeout)
                instructions = sum(s.instructions.regions.get(i, (0, 0))[1] for i in train_ids)
                if len(s.losses) != c - prev:
                    raise RuntimeError(f"segment {prev}..{c}: the firmware trained {len(s.losses)} steps")
            seg = {"step": c, "params": s.params, "losses": s.losses, "instructions": instructions,
                   "wall_s": time.time() - t0}
            np.savez(path, params=np.frombuffer(s.params, np.uint8), losses=np.asarray(s.losses, np.float64),
                     instructions=instructions, wall_s=seg["wall_s"])
            log(f"  device: step {c}: {instructions / 1e6:,.0f} M instructions in this segment, "
                f"{seg['wall_s']:.0f} s in QEMU")
        params = seg["params"]
        out.append(seg)
    return out


def device_eval(build, params: bytes, step: int, val, cache: Path, timeout: float):
    """The device's own int8 logits of the held-out set after the last checkpoint (QEMU, cached)."""
    from microtrain.targets.cortex_m.session import run_session

    path = cache / f"device-eval-{step:05d}.npy"
    if path.exists():
        return np.load(path, allow_pickle=False)
    s = run_session(build.elf, CPU, evaluate=val, resume=(params, step), timeout=timeout, count=False)
    np.save(path, s.logits)
    return s.logits


# ----- host runs ----------------------------------------------------------------------------------------------
def host_c_run(model, stream, points) -> tuple[dict, list[float]]:
    """The host build of the same C trained on the same stream: {checkpoint: parameter blob}, losses."""
    model.reset()
    x, y = stream
    blobs, losses = {0: model.export_params()}, []
    for i in range(points[-1]):
        losses.append(model.train_step(x[i], int(y[i])))
        if i + 1 in points:
            blobs[i + 1] = model.export_params()
    return blobs, losses


def numpy_sim(graph, lr: float, x_train, order, y_train, val_x, points, layout, cache: Path):
    """The NumPy simulation (TrainingRuntime) on the same stream; frozen-prefix outputs computed once per image.
    Returns {checkpoint: (val int8 logits, trained-slices dict)}; resumable from its per-checkpoint state."""
    from microtrain.codegen.lower_train import training_graph_for
    from microtrain.codegen.param_blob import graph_slice
    from microtrain.runtime.trainer import single_threaded_blas
    from microtrain.runtime.training import TrainingRuntime, run_nodes
    from microtrain.sparse.fixtures import load_scheme

    g = graph.copy()
    tg = training_graph_for(g, load_scheme(SCHEME))
    rt = TrainingRuntime(tg, seed=SEED, sums="c")
    pre_path = cache / "numpy-prefix.npz"
    if pre_path.exists():
        z = np.load(pre_path, allow_pickle=False)
        pre_tr = {t: z["train/" + t] for t in tg.boundary}
        pre_va = {t: z["val/" + t] for t in tg.boundary}
    else:
        pre_tr = run_nodes(g, {g.input: x_train}, 0, tg.n_prefix)
        pre_va = run_nodes(g, {g.input: val_x}, 0, tg.n_prefix)
        np.savez(pre_path, **{f"train/{t}": pre_tr[t] for t in tg.boundary},
                 **{f"val/{t}": pre_va[t] for t in tg.boundary})
    trained = sorted({(item["node"], item["param"]) for item in layout})
    paths = {c: cache / f"numpy-{c:05d}.npz" for c in points}
    done = [c for c in points if paths[c].exists()]
    start = done[-1] if done else 0
    if done:  # resume: the trained slices of the last stored checkpoint (the runtime has no other state)
        z = np.load(paths[start], allow_pickle=False)
        for key in z.files:
            if key != "val_logits":
                n, p = key.split("|")
                g.node(n).params[p][...] = z[key]
    for c in points:
        if paths[c].exists():
            continue
        with single_threaded_blas():  # fine_tune's numerics: sgemm's float32 sums change with the thread count
            for i in range(start, c):
                j = order[i]
                rt.train_step({t: pre_tr[t][j : j + 1] for t in tg.boundary}, y_train[j : j + 1], lr, i)
        start = c
        out = rt.forward({t: pre_va[t] for t in tg.boundary}, with_masks=False)[g.output]
        np.savez(paths[c], val_logits=out.reshape(len(out), -1),
                 **{f"{n}|{p}": g.node(n).params[p] for n, p in trained})
        log(f"  numpy simulation: step {c}")
    results = {}
    for c in points:  # every checkpoint's val logits and trained slices (layout order)
        z = np.load(paths[c], allow_pickle=False)
        gc = graph.copy()
        for key in z.files:
            if key != "val_logits":
                n, p = key.split("|")
                gc.node(n).params[p][...] = z[key]
        results[c] = (z["val_logits"], [graph_slice(gc, item) for item in layout])
    return results


def first_numpy_difference(graph, model, lr, x_train, y_train, order, start: int, stop: int, start_blob: bytes,
                           numpy_state: Path, layout) -> dict | None:
    """Both simulations stepped one update at a time from checkpoint `start` (where they agree) to `stop`: the
    first update after which the NumPy simulation's parameters differ from the host build's (= the device's)."""
    from microtrain.codegen.lower_train import training_graph_for
    from microtrain.codegen.param_blob import decode_params, graph_slice
    from microtrain.runtime.trainer import single_threaded_blas
    from microtrain.runtime.training import TrainingRuntime, run_nodes
    from microtrain.sparse.fixtures import load_scheme

    g = graph.copy()
    tg = training_graph_for(g, load_scheme(SCHEME))
    rt = TrainingRuntime(tg, seed=SEED, sums="c")
    z = np.load(numpy_state, allow_pickle=False)
    for key in z.files:
        if key != "val_logits":
            n, p = key.split("|")
            g.node(n).params[p][...] = z[key]
    model.import_params(start_blob)
    model.set_rounding_state(SEED, start)
    idx = order[start:stop]
    pre = run_nodes(g.copy(), {g.input: x_train[idx]}, 0, tg.n_prefix)
    for k, i in enumerate(range(start, stop)):
        j = order[i]
        model.train_step(x_train[j], int(y_train[j]))
        with single_threaded_blas():
            rt.train_step({t: pre[t][k : k + 1] for t in tg.boundary}, y_train[j : j + 1], lr, i)
        diffs = []
        for item, arr in decode_params(model.export_params(), layout):
            d = np.abs(arr.astype(np.int64) - graph_slice(g, item).astype(np.int64))
            if d.any():
                diffs.append({"node": item["node"], "param": item["param"], "elements": int((d > 0).sum()),
                              "max_abs": int(d.max())})
        if diffs:
            return {"after_update": i, "differences": diffs}
    return None


def compare_params(blob: bytes, layout, numpy_slices) -> dict:
    """Elements of the trained slices where the NumPy simulation differs from the device, and by how much."""
    from microtrain.codegen.param_blob import decode_params

    n_diff, n_all, worst = 0, 0, 0
    for (item, arr), ref in zip(decode_params(blob, layout), numpy_slices):
        d = np.abs(arr.astype(np.int64) - ref.astype(np.int64))
        n_diff += int((d > 0).sum())
        n_all += d.size
        worst = max(worst, int(d.max()))
    return {"differing": n_diff, "of": n_all, "max_abs": worst}


# ----- one dataset --------------------------------------------------------------------------------------------
def run_dataset(name: str, args) -> dict:
    from microtrain.models import load_model
    from microtrain.quant.head import replace_head

    t_start = time.time()
    folder = dataset_folder(name)
    label = folder.name
    cache = Path(args.cache) / label
    cache.mkdir(parents=True, exist_ok=True)
    base = load_model(MODEL)
    x_tr, y_tr, x_va, y_va, classes = load_split(folder, base.resolution, cache, args.max_train, args.max_val)
    graph = replace_head(base, len(classes))
    quant = graph.output_spec.quant
    log(f"== {label}: {len(y_tr)} train / {len(y_va)} val, {len(classes)} classes ({', '.join(classes)})")

    # the lr: given, or the held-out check on the host build (compiled once at any lr; set_lr overrides it)
    if args.lr is not None:
        lr_doc = {"lr": args.lr, "rule": "given on the command line"}
    else:
        probe = cache / "project-lr-check"
        compile_project(graph, probe, 0.01)
        lr_doc = select_lr(host_model(probe), (x_tr, y_tr), quant, args.select_epochs, args.select_orders, args.lr_grid,
                           cache)
    lr = lr_doc["lr"]
    log(f"  lr {lr:g} ({lr_doc['rule']})")

    total = args.steps if args.steps is not None else args.epochs * len(y_tr)
    points = sorted({int(p) for p in args.checkpoints.split(",")}) if args.checkpoints else checkpoints(total, len(y_tr))
    if points[0] != 0 or points[-1] != total:
        raise SystemExit(f"--checkpoints must start at 0 and end at the last step ({total}): {points}")
    order = stream_order(len(y_tr), total, SEED)
    stream = (x_tr[order], y_tr[order])

    project = cache / f"project-lr{lr:g}"
    compiled, build, regions = compile_project(graph, project, lr)
    layout = compiled.program.meta["trainable_layout"]
    key = digest((project / "mt_model.c").read_bytes(), (project / "firmware" / "mt_device_main.c").read_bytes(),
                 order.tobytes(), lr, SEED)
    run_cache = cache / f"run-{key}"
    run_cache.mkdir(exist_ok=True)

    log(f"  device: {total} steps, checkpoints {points}")
    segs = device_segments(build, regions, stream, points, run_cache, args.timeout)
    dev_losses = [v for s in segs for v in s["losses"]]

    model = host_model(project)
    host_blobs, host_losses = host_c_run(model, stream, points)
    identical = {c: host_blobs[c] == s["params"] for c, s in zip(points, segs)}
    loss_gap = float(np.max(np.abs(np.asarray(dev_losses) - np.asarray(host_losses)))) if dev_losses else 0.0

    # held-out accuracy of the device's parameters, evaluated on the host (the host build's int8 inference),
    # and of the host simulation's own parameters (the same figures when the parameters are identical)
    evals, host_evals = [], []
    for c, s in zip(points, segs):
        model.import_params(s["params"])
        logits = model.infer(x_va)
        evals.append((logits, metrics(logits, y_va, quant)))
        if host_blobs[c] == s["params"]:  # the same bytes give the same int8 logits
            host_evals.append(evals[-1][1])
        else:
            model.import_params(host_blobs[c])
            host_evals.append(metrics(model.infer(x_va), y_va, quant))
    # once on the device itself: the last checkpoint's logits must be the host's
    dev_logits = device_eval(build, segs[-1]["params"], points[-1], (x_va, y_va), run_cache, args.timeout)
    device_eval_equal = bool(np.array_equal(dev_logits, evals[-1][0]))

    sim = None
    np_points = [c for c in points if args.numpy_steps is None or c <= args.numpy_steps]
    if not args.no_numpy:
        (run_cache / "numpy").mkdir(exist_ok=True)
        sim = numpy_sim(graph, lr, x_tr, order, y_tr, x_va, np_points, layout, run_cache / "numpy")

    first_diff = None
    if sim is not None:
        same = [c for c in np_points if compare_params(segs[points.index(c)]["params"], layout, sim[c][1])["differing"] == 0]
        later = [c for c in np_points if c not in same]
        a = max([c for c in same if later and c < later[0]], default=None)
        if a is not None:  # the update at which they part, stepped from the last agreeing checkpoint
            first_diff = first_numpy_difference(graph, model, lr, x_tr, y_tr, order, a, later[0],
                                                segs[points.index(a)]["params"],
                                                run_cache / "numpy" / f"numpy-{a:05d}.npz", layout)
    cum, rows = 0, []
    for c, s, (logits, m), hm in zip(points, segs, evals, host_evals):
        cum += s["instructions"]
        row = {"step": c, "epochs": c / len(y_tr), "instructions": cum, "device_minutes_est": cum / CLOCK_HZ / 60,
               "acc": m["acc"], "balanced_acc": m["balanced"], "loss": m["loss"],
               "host_c_params_identical": identical[c], "host_c_acc": hm["acc"]}
        if sim is not None and c in sim:
            sim_logits, sim_slices = sim[c]
            row["numpy_sim"] = {**metrics(sim_logits, y_va, quant), **compare_params(s["params"], layout, sim_slices)}
        rows.append(row)
    final = rows[-1]["acc"]
    reach = next(r for r in rows if r["acc"] >= final - 0.01)
    stay = next(r for i, r in enumerate(rows) if all(q["acc"] >= final - 0.01 for q in rows[i:]))
    trained_steps = [s for s in segs if s["step"] > 0]
    per_step = sum(s["instructions"] for s in trained_steps) / max(1, total)
    k = int(round(final * len(y_va)))
    doc = {
        "dataset": label, "folder": str(folder), "classes": classes, "n_train": int(len(y_tr)), "n_val": int(len(y_va)),
        "model": MODEL, "scheme": SCHEME, "cpu": CPU, "machine": "qemu-system-arm -M mps2-an500",
        "batch": 1, "optimizer": "SGD, constant lr, no momentum; int8 + QAS; stochastic rounding (seed 0)",
        "lr": lr, "lr_selection": lr_doc, "steps": total, "epochs": total / len(y_tr), "stream_seed": SEED,
        "checkpoints": points,
        "trainable_sram_bytes": compiled.report.trainable_sram_bytes,
        "training_sram_bytes": compiled.report.training_sram_bytes, "linked_sram_bytes": build.usage.ram,
        "linked_flash_bytes": build.usage.flash,
        "instructions_per_step": per_step, "ms_per_step_est": per_step / CLOCK_HZ * 1e3,
        "curve": rows,
        "final_acc": final, "final_acc_wilson95": wilson(k, len(y_va)),
        "within_1pt": {"first_reached": {"step": reach["step"], "device_minutes_est": reach["device_minutes_est"]},
                       "stays_from": {"step": stay["step"], "device_minutes_est": stay["device_minutes_est"]}},
        "host_c_identical_all": all(identical.values()),
        "host_c_max_loss_gap": loss_gap,
        "device_eval_matches_host": device_eval_equal,
        "device_eval_acc": float((dev_logits.argmax(1) == y_va).mean()),
        "numpy_sim_identical_all": None if sim is None else all(r["numpy_sim"]["differing"] == 0
                                                                for r in rows if "numpy_sim" in r),
        "numpy_sim_steps": None if sim is None else np_points[-1],
        "numpy_first_difference": first_diff,
        "reference": reference_accuracies(label),
        "reference_note": "benchmarks/results/qas/<dataset>.json averages (host NumPy, batch 32, 12 epochs, 4 views "
                          "per image): head-only and last two blocks + head (int8 + QAS)",
        "qemu_wall_s": sum(s["wall_s"] for s in segs),
        "wall_s": time.time() - t_start,
        "sample_transform": "image file -> RGB -> shorter side resized to round(128 / 0.875) = 146 px (bilinear) "
                            "and centre-cropped to 128 x 128 (an image no larger than 128 px: upscaled whole) -> "
                            "int8 by the model's input quantisation (pixel k -> k - 128); no augmentation",
    }
    if not doc["host_c_identical_all"]:
        bad = [c for c, ok in identical.items() if not ok]
        raise SystemExit(f"{label}: the host build's parameters differ from the device's at steps {bad}")
    if not device_eval_equal:
        raise SystemExit(f"{label}: the device's held-out logits differ from the host build's")
    return doc


# ----- outputs ------------------------------------------------------------------------------------------------
def reference_accuracies(label: str) -> dict:
    """The QAS experiment's figures on the same dataset (batch 32, 12 epochs, 4 views), when present."""
    path = RESULTS / "qas" / f"{label}.json"
    if not path.exists():
        return {}
    d = json.loads(path.read_text())["average"]
    return {k: d[k] for k in ("int8+QAS", "head-only") if k in d}


def noise_note(d: dict) -> str:
    """How much the held-out accuracy moves between the checkpoints of the run's second half (constant lr)."""
    last = [r for r in d["curve"] if r["step"] >= d["steps"] / 2]
    accs = [100 * r["acc"] for r in last]
    best = max(d["curve"], key=lambda r: r["acc"])
    text = (f"Noise: over the {len(accs)} checkpoints of the run's second half the held-out accuracy ranges "
            f"{min(accs):.1f}-{max(accs):.1f} % (mean {np.mean(accs):.1f} %): at a constant lr, batch 1, each "
            f"checkpoint is one point of a noisy trajectory, so 'final' is the last such point, not a plateau. The "
            f"highest checkpoint is {100 * best['acc']:.1f} % at step {best['step']}.")
    ref = d.get("reference") or {}
    if ref:
        text += (f" Against the QAS table (host, batch 32, 12 epochs, 4 augmented views, warm-up + cosine): the "
                 f"device's final {100 * d['final_acc']:.1f} % is at the head-only figure "
                 f"({100 * ref['head-only']:.1f} %), below last two blocks + head ({100 * ref['int8+QAS']:.1f} %); "
                 f"the device run is shorter ({d['epochs']:.3g} epochs), unaugmented and at a constant lr, and "
                 "trains the 49 KB scheme, not the last two blocks.")
    return text


def markdown(docs: dict, command: str) -> str:
    lines = ["# Learning on the device: mcunet-5fps, 49 KB scheme, Cortex-M7 under QEMU", "",
             "Produced by benchmarks/exp_device_curve.py (commands per dataset below); data in device_curve.json, "
             "plot in device_curve.png.", ""]
    for label, d in docs.items():
        ref = d.get("reference") or {}
        lo, hi = d["final_acc_wilson95"]
        w = d["within_1pt"]
        lines += [f"## {label} ({d['n_train']} train / {d['n_val']} val, {len(d['classes'])} classes)", "",
                  f"Command: `{d.get('command', command)}`", ""]
        if ref:
            lines += [f"Why this dataset: in the QAS experiment (benchmarks/results/qas/{label}.md; batch 32, 12 "
                      f"epochs, 4 views per image) a new head alone reaches {100 * ref['head-only']:.1f} % and the last "
                      f"two blocks + head {100 * ref['int8+QAS']:.1f} % (int8 + QAS): the head alone is clearly not "
                      "enough here.", ""]
        lines += [f"**Answer: the model is within 1 point of its final held-out accuracy "
                  f"({100 * d['final_acc']:.1f} %, 95 % Wilson interval {100 * lo:.1f}-{100 * hi:.1f} % over "
                  f"{d['n_val']} images) after {w['first_reached']['device_minutes_est']:.1f} estimated device "
                  f"minutes (step {w['first_reached']['step']})"
                  + ("" if w["stays_from"]["step"] == w["first_reached"]["step"] else
                     f", and stays within 1 point from {w['stays_from']['device_minutes_est']:.1f} minutes "
                     f"(step {w['stays_from']['step']}) on") + ".** One held-out image is "
                  f"{100 / d['n_val']:.2f} points, so '1 point' is within the noise of a single run (stream seed "
                  f"{d['stream_seed']}, one run).", "", noise_note(d), "",
                  f"Setup: {d['model']} with the {d['scheme']} sparse-update scheme and a new {len(d['classes'])}-class "
                  f"head, compiled for the Cortex-M7 (trained SRAM {d['trainable_sram_bytes']:,} B, training SRAM "
                  f"planned {d['training_sram_bytes']:,} B, linked {d['linked_sram_bytes']:,} B; flash "
                  f"{d['linked_flash_bytes']:,} B), trained in qemu-system-arm -M mps2-an500 at batch 1 "
                  f"(the firmware trains batch-1 SGD; lr {d['lr']:g}, {d['lr_selection']['rule']}), "
                  f"{d['steps']} steps = {d['epochs']:.1f} epochs. Samples are streamed from files: "
                  f"{d['sample_transform']}; the firmware reads one sample at a time through semihosting into the "
                  "arena's input slot.", "",
                  f"Device minutes are an ESTIMATE: instructions of mt_train_step counted by QEMU's TCG plugin / 216e6 "
                  f"per second ({d['instructions_per_step'] / 1e6:.1f} M instructions per step = "
                  f"{d['ms_per_step_est']:.0f} ms at one instruction per cycle); sample I/O and evaluation are not "
                  "counted.", "",
                  "| step | epochs | est. device min | held-out top-1 % | balanced % | loss | host C params identical |"
                  + (" NumPy sim top-1 % | NumPy params differing |" if d["curve"][0].get("numpy_sim") else ""),
                  "|---:|---:|---:|---:|---:|---:|---|" + ("---:|---:|" if d["curve"][0].get("numpy_sim") else "")]
        for r in d["curve"]:
            cells = [str(r["step"]), f"{r['epochs']:.2f}", f"{r['device_minutes_est']:.2f}", f"{100 * r['acc']:.1f}",
                     f"{100 * r['balanced_acc']:.1f}", f"{r['loss']:.3f}", "yes" if r["host_c_params_identical"] else "NO"]
            if r.get("numpy_sim"):
                s = r["numpy_sim"]
                cells += [f"{100 * s['acc']:.1f}", f"{s['differing']} of {s['of']} (max {s['max_abs']})"]
            elif d["curve"][0].get("numpy_sim"):
                cells += ["", ""]
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", f"Host simulation: the same generated C built for the host and trained on the same stream "
                  f"(same samples, order, lr and rounding seed) ends every checkpoint with exactly the device's "
                  f"parameters: {'yes, at all' if d['host_c_identical_all'] else 'NO'} {len(d['checkpoints'])} "
                  f"checkpoints (largest loss difference {d['host_c_max_loss_gap']:.1e}: the firmware prints 6 "
                  "decimals), so the device and host-simulation curves in the plot coincide. The held-out accuracy "
                  "is evaluated on the host from the device's exported parameters; at the last checkpoint the "
                  f"device's own logits (QEMU) equal the host's: {'yes' if d['device_eval_matches_host'] else 'NO'}."]
        if d.get("numpy_sim_identical_all") is not None:
            last = [r for r in d["curve"] if "numpy_sim" in r][-1]["numpy_sim"]
            lines += ["", f"NumPy simulation (runtime.TrainingRuntime, the tool of the host-side accuracy experiments, "
                      f"here with sums='c': the C kernels' float32 summation order and exp, ops/c_sums.py; "
                      f"run over the first {d['numpy_sim_steps']} steps): "
                      + ("its parameters equal the device's at every checkpoint it reached." if d["numpy_sim_identical_all"] else
                         f"its parameters drift from the device's (at the last checkpoint {last['differing']} of "
                         f"{last['of']} trained values differ, by at most {last['max_abs']} LSB)"
                         + (f"; stepped one update at a time from the last agreeing checkpoint, the first difference "
                            f"appears after update {d['numpy_first_difference']['after_update']}: "
                            + ", ".join(f"{x['node']}.{x['param']} {x['elements']} value(s) by {x['max_abs']}"
                                        for x in d["numpy_first_difference"]["differences"])
                            if d.get("numpy_first_difference") else "")
                         + ". A float32 gradient that differs in its last bits turns a stochastic-rounding decision "
                         "within a few ulps of its threshold the other way; from one different value on, batch-1 "
                         "SGD takes another trajectory (with sums='c' this should not happen: "
                         "docs/measurements.md, learning on the device). Its accuracy curve is plotted "
                         "beside the device's. The host build of the generated C holds the device's parameters "
                         "bit for bit.")]
        lines.append("")
    return "\n".join(lines)


def plot(docs: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(docs), figsize=(6.5 * len(docs), 4.6), squeeze=False)
    for ax, (label, d) in zip(axes[0], docs.items()):
        steps = np.array([r["step"] for r in d["curve"]])
        mins = np.array([r["device_minutes_est"] for r in d["curve"]])
        ax.plot(steps, [100 * r["acc"] for r in d["curve"]], "o", ms=7, mfc="none", label="device (QEMU Cortex-M7)")
        ax.plot(steps, [100 * r["host_c_acc"] for r in d["curve"]], "-", lw=1.2,
                label="host simulation (same C on the host)" + (": identical parameters, coincides"
                                                                 if d["host_c_identical_all"] else ""))
        sim = [(r["step"], 100 * r["numpy_sim"]["acc"]) for r in d["curve"] if "numpy_sim" in r]
        if sim:
            ax.plot(*zip(*sim), "x--", ms=5, lw=1, label="NumPy simulation")
        for name, v in (d.get("reference") or {}).items():
            ax.axhline(100 * v, ls=":", lw=0.8, color="gray")
            ax.annotate(f"QAS table (batch 32, 12 epochs): {name} {100 * v:.1f} %", (steps[-1] * 0.3, 100 * v),
                        fontsize=7, ha="left", va="bottom", color="gray")
        ax.set_xlabel("training steps (batch 1)")
        ax.set_ylabel("held-out top-1 (%)")
        ax.set_title(f"{label}: mcunet-5fps, {d['scheme']}, lr {d['lr']:g}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
        if mins[-1] > 0:
            k = mins[-1] / steps[-1]  # minutes per step: the step's instruction count hardly varies (see JSON)
            top = ax.secondary_xaxis("top", functions=(lambda s, k=k: s * k, lambda m, k=k: m / k))
            top.set_xlabel("estimated device minutes at 216 MHz (instructions / 216e6)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=["trashnet", "person"],
                    help="names under $MICROTRAIN_SHARED/data or folders with train/ and val/")
    ap.add_argument("--epochs", type=int, default=2, help="passes over train/ (default 2)")
    ap.add_argument("--steps", type=int, help="training steps instead of --epochs")
    ap.add_argument("--checkpoints", help="comma-separated steps (default: 0, 10, 25, 50, 100, 150, every 100, "
                                          "epoch ends, last)")
    ap.add_argument("--lr", type=float, help="skip the held-out lr check")
    ap.add_argument("--lr-grid", type=lambda v: [float(x) for x in v.split(",")], default=list(LR_GRID),
                    help="comma-separated lrs of the held-out check (default %s)" % ",".join(f"{v:g}" for v in LR_GRID))
    ap.add_argument("--select-epochs", type=int, default=1, help="passes of the lr check (default 1)")
    ap.add_argument("--select-orders", type=int, default=1, help="stream orders of the lr check (default 1)")
    ap.add_argument("--no-numpy", action="store_true", help="leave out the NumPy simulation")
    ap.add_argument("--numpy-steps", type=int, help="the NumPy simulation covers the checkpoints up to this step only")
    ap.add_argument("--max-train", type=int, help="N training files spread over the classes (CI)")
    ap.add_argument("--max-val", type=int, help="N held-out files spread over the classes (CI)")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per QEMU session")
    ap.add_argument("--cache", default=str(CACHE), help=f"intermediates (default {CACHE})")
    ap.add_argument("--out", default=str(RESULTS), help="results folder (device_curve.json/.md/.png)")
    ap.add_argument("--render", action="store_true", help="only rewrite the .md and .png from the stored JSON")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "device_curve.json"
    docs = json.loads(json_path.read_text())["datasets"] if json_path.exists() else {}
    command = "python benchmarks/exp_device_curve.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.render:
        (out / "device_curve.md").write_text(markdown(docs, command))
        plot(docs, out / "device_curve.png")
        log(f"wrote {out / 'device_curve.md'}, device_curve.png from {json_path}")
        return 0
    for name in args.datasets:
        d = run_dataset(name, args)
        d["command"] = command
        docs[d["dataset"]] = d
        json_path.write_text(json.dumps({"command": " ; ".join(dict.fromkeys(v.get("command", command)
                                                                             for v in docs.values())),
                                         "datasets": docs}, indent=1) + "\n")
        (out / "device_curve.md").write_text(markdown(docs, command))
        plot(docs, out / "device_curve.png")
        w = d["within_1pt"]["first_reached"]
        log(f"== {d['dataset']}: final held-out {100 * d['final_acc']:.1f} %; within 1 point after "
            f"{w['device_minutes_est']:.1f} estimated device minutes (step {w['step']}); host C identical at every "
            f"checkpoint: {d['host_c_identical_all']}; NumPy sim identical: {d['numpy_sim_identical_all']}")
    log(f"wrote {json_path}, device_curve.md, device_curve.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())

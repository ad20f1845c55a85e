"""Integer backward vs float backward on the real datasets (issue 16: adopt int16 as the default only if its
accuracy is within 0.5 points of the float backward on cub50, food101_10 and gtsrb).

For each dataset, the int8 + QAS runs of the QAS table (exp_qas.py --dataset D: mcunet-5fps, last two blocks +
new head, float backward) are repeated with `backward="int16"` at the same lr (the one the float setting chose
on the held-out split: a numerics ablation, nothing else changes), the same seeds (= batch order and views) and
epochs, and paired by seed. Runs are stored beside the QAS runs (results/qas/<dataset>/mcunet-5fps/
int8+QAS-int16bwd/, one file per run with the numerics fingerprint): the script resumes. Writes
results/backward.json and results/backward.md.

    nice -n 19 python benchmarks/exp_backward.py [--datasets cub50 food101_10 gtsrb]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from exp_qas import DATA, DEFAULT_CACHE, MODELS, RESULTS, SETTINGS, load_dataset  # noqa: E402
from qas_datasets import t_interval  # noqa: E402
from run_store import RunDir, run_key  # noqa: E402

MODEL, BASE, VARIANT = "mcunet-5fps", "int8+QAS", "int8+QAS-int16bwd"
TOLERANCE = 0.5  # points: the adoption rule


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=["cub50", "food101_10", "gtsrb"])
    ap.add_argument("--cache", default=str(DEFAULT_CACHE), help="frozen-prefix feature cache")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--no-device", action="store_true", help="skip the Cortex-M7 / Cortex-M3 instruction counts")
    args = ap.parse_args(argv)

    from microtrain.commands.train import parse_update
    from microtrain.models import load_model
    from microtrain.runtime.trainer import clear_prefix_cache, fine_tune, set_prefix_disk_cache
    from numerics_fingerprint import numerics_fingerprint

    out = Path(args.out)
    tables = {}
    for d in args.datasets:  # every input checked before any training
        p = out / "qas" / f"{d}.json"
        if not p.exists():
            raise SystemExit(f"{p}: no QAS table for {d}; run `python benchmarks/exp_qas.py --dataset {d}` first")
        t = json.loads(p.read_text())
        if BASE not in t["models"].get(MODEL, {}):
            raise SystemExit(f"{p}: no {MODEL} {BASE} row")
        tables[d] = t
    fingerprint = numerics_fingerprint()
    set_prefix_disk_cache(args.cache)
    update, fp32, qas = SETTINGS[BASE]
    rows = {}
    for d, t in tables.items():
        proto, base = t["protocol"], t["models"][MODEL][BASE]
        if t.get("numerics_fingerprint") != fingerprint:
            raise SystemExit(f"results/qas/{d}.json was computed with numerics {t.get('numerics_fingerprint')}, "
                             f"the code's are {fingerprint}: rerun exp_qas.py --dataset {d} first")
        store = RunDir(out / "qas" / d, fingerprint, proto["views"], proto["batch_size"], 0.0)
        graph = load_model(MODELS / f"{MODEL}.pkl")
        train, val = load_dataset(d, graph.resolution, proto["views"])
        lr, accs = base["lr"], []
        for seed in proto["seeds"]:
            key = run_key(MODEL, VARIANT, "final", lr, seed)
            r = store.get(key, proto["epochs"])
            if r is None:
                t0 = time.monotonic()
                f = fine_tune(graph, parse_update(update, graph), train, val, epochs=proto["epochs"], lr=lr,
                              seed=seed, batch_size=proto["batch_size"], fp32=fp32, qas=qas, backward="int16")
                r = {"val_acc": f["val_acc"], "val_loss": f["val_loss"], "train_acc": f["train_acc"],
                     "val_balanced_acc": f["val_balanced_acc"], "seconds": round(time.monotonic() - t0, 1)}
                store.put(key, r, proto["epochs"])
            accs.append(r["val_acc"])
            print(f"{d} seed {seed} lr {lr:g}: int16 backward {r['val_acc']:.4f}, float "
                  f"{base['val_acc'][len(accs) - 1]:.4f}", flush=True)
        clear_prefix_cache()
        diff = [100 * (a - b) for a, b in zip(accs, base["val_acc"], strict=True)]
        rows[d] = {"lr": lr, "seeds": proto["seeds"], "n_val": t["n_val"], "float": base["val_acc"],
                   "int16": accs, "diff": dict(t_interval(diff), diffs=[round(x, 3) for x in diff])}
    across = t_interval([r["diff"]["mean"] for r in rows.values()])
    accurate = all(abs(r["diff"]["mean"]) <= TOLERANCE for r in rows.values())
    device = None if args.no_device else {b: device_step(b, "cortex-m7") for b in ("float", "int16")}
    # a part without an FPU (software float): where the integer backward matters most
    fpu_less = None if args.no_device else {b: device_step(b, "cortex-m3") for b in ("float", "int16")}
    faster = device is not None and device["int16"]["train"] < device["float"]["train"]
    decision = ("int16 adopted as the default" if accurate and faster else
                "float backward stays the default: int16 is "
                + " and ".join(([] if accurate else [f"not within {TOLERANCE} points on every dataset"])
                               + ([] if faster or device is None else ["not faster on the Cortex-M7"])
                               + (["not measured on the device (--no-device)"] if device is None else [])))
    if fpu_less and not decision.startswith("int16") and fpu_less["int16"]["train"] < fpu_less["float"]["train"]:
        decision += ("; on a part without an FPU int16 is the faster choice and `microtrain compile --target "
                     "cortex-m3` says so")
    doc = {"model": MODEL, "setting": BASE, "rows": rows, "across_datasets": across, "tolerance_points": TOLERANCE,
           "within_tolerance_on_every_dataset": accurate, "cortex_m7": device, "cortex_m3": fpu_less,
           "decision": decision,
           "numerics_fingerprint": fingerprint,
           "command": "python benchmarks/exp_backward.py --datasets " + " ".join(args.datasets)}
    (out / "backward.json").write_text(json.dumps(doc, indent=1) + "\n")
    (out / "backward.md").write_text(markdown(doc))
    print(markdown(doc))
    return 0


def device_step(backward: str, cpu: str) -> dict:
    """Instructions of one mcunet-5fps 49 KB training step on the emulated `cpu` (QEMU), by phase: built and
    counted as bench_cortexm.py does (steps 2..10 on ants vs bees samples: bench_cortexm.steady_step). The
    Cortex-M3 has no FPU and no DSP extension: software float and the portable kernels."""
    from bench_cortexm import STEADY_STEPS, compile_project, steady_step
    from microtrain.sparse.fixtures import load_scheme
    from microtrain.targets.cortex_m.build import simd_for
    from microtrain.targets.cortex_m.data import session_data
    from microtrain.targets.cortex_m.project import build_project

    train, evaluate, _, _ = session_data(DATA, 128, 2, steps=STEADY_STEPS, n_eval=1, seed=0)
    with tempfile.TemporaryDirectory(prefix="mt-bwd-") as tmp:
        project = Path(tmp) / "p"
        compile_project(MODEL, lambda g: load_scheme("mcunet-5fps-49kb"), project, backward=backward)
        build, regions = build_project(project, project / "build", cpu, simd=simd_for(cpu))
        step, _, _, _ = steady_step(build.elf, cpu, regions, train, evaluate)
    return {"train": step.per_call, **{ph: step.by_phase.get(ph, 0.0) for ph in ("forward", "backward", "update")}}


def markdown(doc: dict) -> str:
    lines = ["| dataset | float backward | int16 backward | int16 - float (points, 95 % interval) | one val image |",
             "|---|---|---|---|---|"]
    for d, r in doc["rows"].items():
        ci = r["diff"]["ci95"]
        lines.append(f"| {d} | {100 * np.mean(r['float']):.1f} ± {100 * np.std(r['float']):.1f} | "
                     f"{100 * np.mean(r['int16']):.1f} ± {100 * np.std(r['int16']):.1f} | {r['diff']['mean']:+.2f}"
                     + (f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else "") + f" | {100 / r['n_val']:.2f} |")
    a = doc["across_datasets"]
    lines.append(f"| **mean over datasets** | | | {a['mean']:+.2f}"
                 + (f" [{a['ci95'][0]:+.2f}, {a['ci95'][1]:+.2f}]" if a.get("ci95") else "") + " | |")
    dev = doc.get("cortex_m7")
    if dev:
        lines += ["", "Cortex-M7 (QEMU), mcunet-5fps 49 KB step, instructions: "
                  + "; ".join(f"{b} backward {d['train'] / 1e6:.2f} M (backward {d['backward'] / 1e6:.2f} M)"
                              for b, d in dev.items()) + "."]
    m3 = doc.get("cortex_m3")
    if m3:
        f, i = m3["float"], m3["int16"]
        lines += ["", "Cortex-M3 (QEMU mps2-an385: no FPU, software float, portable kernels), the same step: "
                  + "; ".join(f"{b} backward {d['train'] / 1e6:.0f} M (backward {d['backward'] / 1e6:.0f} M)"
                              for b, d in m3.items())
                  + f": int16 makes the step {f['train'] / i['train']:.2f}x shorter there "
                  f"(backward {f['backward'] / i['backward']:.1f}x)."]
    lines += ["", f"Decision: {doc['decision']}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())

"""Where a fine-tune's time goes: one epoch of runtime/trainer.fine_tune per scheme on a real data set, timed
(CPU seconds of this process: steadier than wall time on a shared machine) and profiled with cProfile.

    nice -n 10 python benchmarks/profile_fine_tune.py [--dataset cub50] [--schemes bias-12,last-12,full,...]
                                                      [--epochs 1] [--batch 16] [--top 15] [--out F.json]

Schemes: "head-only", "bias-K" (the biases of the last K convs), "last-K" (weights and biases of the last K convs),
"bias-only" (every bias), "full", "blocks-K" (the last K blocks + head: exp_qas's update, K = 2), "wI-R" (the contribution analysis's job: the biases of the last 12 convs +
conv I's weights at ratio R, e.g. w30-1/8), "fixture:NAME" (a shipped scheme, e.g. fixture:mcunet-5fps-49kb).
The frozen-prefix features are computed first (timed apart, cached in --prefix-cache, never the
experiments' cache), then fine_tune's set-up and one evaluation are timed with a 0-epoch run and subtracted,
so the epoch time is the training loop of the exp_sparse protocol (batch 16, the
model's resolution, int8 + QAS, stochastic rounding; --numerics int8 drops QAS, fp32 trains the dequantised
model as exp_qas's fp32 setting) plus one evaluation on val/. Prints seconds per
epoch, per step and per training image, the evaluation's seconds per image, and the top functions.
"""
from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import time
from fractions import Fraction
from pathlib import Path

from microtrain.cache import cache_root

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from run_store import write_report  # noqa: E402
SHARED = Path(os.environ.get("MICROTRAIN_SHARED", REPO.parent / "shared"))


def make_scheme(name: str, graph):
    from microtrain.sparse.fixtures import load_fixture
    from microtrain.sparse.scheme import UpdateScheme

    n = len(graph.indexed_convs())
    if name == "full":
        return UpdateScheme.full(graph)
    if name == "head-only":
        return UpdateScheme.head_only()
    if name == "bias-only":
        return UpdateScheme.bias_only(graph)
    if name.startswith("fixture:"):
        return load_fixture(name.split(":", 1)[1])
    if name.startswith("blocks-"):  # the QAS experiment's update: the last K blocks + the new head
        from microtrain.commands.train import parse_update

        return parse_update(f"last-blocks:{int(name[7:])}", graph)
    if name.startswith("bias-"):
        return UpdateScheme(int(name[5:]), {}, name=name)
    if name.startswith("last-"):
        return UpdateScheme.last_layers(graph, int(name[5:]))
    if name.startswith("w"):
        i, r = name[1:].split("-", 1)
        return UpdateScheme(min(12, n), {int(i): float(Fraction(r))}, name=name)
    raise SystemExit(f"unknown scheme {name!r}")


def top_functions(prof: cProfile.Profile, top: int) -> list[dict]:
    st = pstats.Stats(prof)
    rows = []
    for (file, line, fn), (cc, nc, tt, ct, _) in st.stats.items():
        rows.append({"function": f"{Path(file).name}:{line}({fn})", "calls": nc, "tottime": tt, "cumtime": ct})
    rows.sort(key=lambda r: -r["tottime"])
    return rows[:top]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="cub50")
    ap.add_argument("--model", default="mcunet-5fps")
    ap.add_argument("--schemes", default="bias-12,last-12,full,bias-only,w30-1/8")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--numerics", default="int8+QAS", choices=["int8+QAS", "int8", "fp32"])
    ap.add_argument("--limit", type=int, default=0, help="first N training images only (0: all)")
    ap.add_argument("--val-limit", type=int, default=0, help="first N validation images only (0: all)")
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--no-profile", action="store_true", help="time only (cProfile adds overhead per call)")
    ap.add_argument("--prefix-cache", default=str(cache_root() / "h14sim" / "prefix"))
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    from microtrain.models import load_model
    from microtrain.runtime import trainer
    from microtrain.runtime.datasets import load_image_folder

    trainer.set_prefix_disk_cache(args.prefix_cache)
    graph = load_model(SHARED / "models" / f"{args.model}.pkl")
    root = SHARED / "data" / args.dataset
    t = time.monotonic()
    train = load_image_folder(root / "train", graph.resolution, seed=0)
    val = load_image_folder(root / "val", graph.resolution, classes=train.classes)
    if args.limit:
        import numpy as np

        train = train.subset(np.arange(min(args.limit, len(train))))
    if args.val_limit:
        import numpy as np

        val = val.subset(np.arange(min(args.val_limit, len(val))))
    print(f"{args.dataset}: {len(train)} train / {len(val)} val images loaded in {time.monotonic() - t:.0f} s",
          flush=True)
    report = {"dataset": args.dataset, "model": args.model, "n_train": len(train), "n_val": len(val),
              "batch": args.batch, "epochs": args.epochs, "numerics": args.numerics,
              "command": "python " + " ".join(sys.argv), "schemes": {}}
    eval_cpu = [0.0]
    val_metrics = trainer._val_metrics

    def timed_val_metrics(*a, **k):  # the evaluation on val/, timed apart from the training loop
        t0 = time.process_time()
        try:
            return val_metrics(*a, **k)
        finally:
            eval_cpu[0] += time.process_time() - t0

    trainer._val_metrics = timed_val_metrics
    numerics = {"int8+QAS": {}, "int8": {"qas": False}, "fp32": {"fp32": True}}[args.numerics]
    for name in args.schemes.split(","):
        scheme = make_scheme(name, graph)
        # 1. the prefix features (and the new head's graph): a throw-away 0-epoch fine-tune fills the cache
        c0 = time.process_time()
        trainer.fine_tune(graph, scheme, train, val, epochs=0, lr=0.01, batch_size=args.batch, **numerics)
        prefix_s = time.process_time() - c0
        # 1b. fine_tune's set-up (training graph, head, cached features) and one evaluation, apart from the
        # epochs: a real run amortises the set-up over all its epochs and images, a short profile would not
        c0 = time.process_time()
        trainer.fine_tune(graph, scheme, train, val, epochs=0, lr=0.01, batch_size=args.batch, **numerics)
        setup_s = time.process_time() - c0
        # 2. the timed epoch(s), profiled
        prof = None if args.no_profile else cProfile.Profile(time.process_time)  # CPU time: load-proof
        eval_cpu[0] = 0.0
        c0, w0 = time.process_time(), time.monotonic()
        if prof:
            prof.enable()
        r = trainer.fine_tune(graph, scheme, train, val, epochs=args.epochs, lr=0.01, seed=0, batch_size=args.batch,
                              **numerics)
        if prof:
            prof.disable()
        cpu, wall = time.process_time() - c0, time.monotonic() - w0
        rec = {"prefix_cpu_s": round(prefix_s, 2), "cpu_s": round(cpu, 2), "wall_s": round(wall, 2),
               "n_prefix": r["n_prefix"], "steps": r["steps"], "val_acc": r["val_acc"]}
        rec["eval_cpu_s"] = round(eval_cpu[0], 2)
        if prof:
            rec["top"] = top_functions(prof, args.top)
        rec["setup_cpu_s"] = round(setup_s, 2)
        train_s = max(0.0, cpu - setup_s) / args.epochs  # the training loop alone (set-up + one evaluation apart)
        rec["epoch_cpu_s"] = round(train_s, 2)
        rec["ms_per_train_image"] = round(1e3 * train_s / len(train), 3)
        rec["ms_per_eval_image"] = round(1e3 * eval_cpu[0] / len(val), 3)
        report["schemes"][name] = rec
        print(f"{name:14s} boundary node {r['n_prefix']:2d}: prefix {prefix_s:6.1f} s, epoch {train_s:6.1f} CPU s "
              f"({rec['ms_per_train_image']:.2f} ms/image), eval {rec['eval_cpu_s']:5.1f} s ({rec['ms_per_eval_image']:.2f} ms/image), "
              f"total {cpu:.1f} CPU s / {wall:.1f} wall s", flush=True)
        for row in rec.get("top", []):
            print(f"      {row['tottime']:7.2f} s tot {row['cumtime']:7.2f} s cum {row['calls']:7d}  {row['function']}")
    write_report(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())

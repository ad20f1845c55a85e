"""Federated sparse updates on real data: a simulated fleet (Flower + Ray, `microtrain.fleet`) against
centralised training with the same model, scheme, numerics, lr and total epochs (docs/fleet.md).

Each named run appends its report to benchmarks/results/fleet.json as soon as it finishes; a rerun skips the
runs already there with the same settings (resumable). Run under `nice -n 19`:

    nice -n 19 python benchmarks/exp_fleet.py                       # every run below, in order
    nice -n 19 python benchmarks/exp_fleet.py --only food-10-dir0.5  # one of them
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from microtrain.fleet.simulation import DEFAULT_CACHE, FleetSettings, run_fleet  # noqa: E402
from microtrain.models import load_model  # noqa: E402
from microtrain.runtime.datasets import load_image_folder  # noqa: E402
from microtrain.sparse.fixtures import load_fixture  # noqa: E402

SHARED = Path(os.environ.get("MICROTRAIN_SHARED", ROOT.parent / "shared"))
OUT = ROOT / "benchmarks" / "results" / "fleet.json"
MODEL, SCHEME, LR, VIEWS = "mcunet-5fps", "mcunet-5fps-49kb", 0.03, 2  # views: eval crop + mirror

# name: (dataset, settings); centralised baseline for every run (same data, scheme, epochs = rounds x local)
RUNS = {
    "food-10-dir0.5": ("food101_10", dict(clients=10, rounds=10, partition="dirichlet:0.5")),
    "food-100-dir0.5": ("food101_10", dict(clients=100, rounds=10, partition="dirichlet:0.5")),
    "food-10-dir0.5-drop0.2": ("food101_10", dict(clients=10, rounds=10, partition="dirichlet:0.5", dropout=0.2)),
    "food-10-iid": ("food101_10", dict(clients=10, rounds=10, partition="iid")),
    "cifar-10-dir0.5": ("cifar10", dict(clients=10, rounds=10, partition="dirichlet:0.5")),
    "cifar-100-dir0.5": ("cifar10", dict(clients=100, rounds=10, partition="dirichlet:0.5")),
    # does the gap close with more rounds? (its centralised baseline trains 20 epochs too)
    "food-10-dir0.5-r20": ("food101_10", dict(clients=10, rounds=20, partition="dirichlet:0.5")),
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", choices=sorted(RUNS), help="run only these")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", default=str(DEFAULT_CACHE))
    ap.add_argument("--out", default=str(OUT), help=f"results JSON (default {OUT.relative_to(ROOT)})")
    args = ap.parse_args(argv)
    out = Path(args.out)
    done = json.loads(out.read_text()) if out.exists() else {"runs": {}}
    done.setdefault("baselines", {})
    graph = load_model(MODEL)
    data_cache = {}
    for name in args.only or RUNS:
        dataset, kw = RUNS[name]
        settings = FleetSettings(lr=LR, seed=args.seed, **kw)
        key = f"{name}/seed{args.seed}"
        if key in done["runs"] and done["runs"][key]["settings"] == settings.__dict__:
            print(f"{key}: done already (fleet {100 * done['runs'][key]['fleet_val_acc']:.1f} %)")
            continue
        if dataset not in data_cache:
            root = SHARED / "data" / dataset
            train = load_image_folder(root / "train", graph.resolution, views=VIEWS, seed=0)
            val = load_image_folder(root / "val", graph.resolution, classes=train.classes)
            data_cache = {dataset: (train, val)}  # one data set in memory at a time
        train, val = data_cache[dataset]
        t0 = time.monotonic()
        print(f"{key}: {dataset}, {settings}", flush=True)
        # the centralised baseline depends on the data and the training settings, not on the fleet's shape
        bkey = f"{dataset}/epochs{settings.rounds * settings.local_epochs}/lr{LR}/batch{settings.batch_size}/seed{args.seed}"
        report = run_fleet(graph, load_fixture(SCHEME), train, val, settings, cache=Path(args.cache),
                           baseline=done["baselines"].get(bkey, True),
                           log=lambda r: print(f"  round {r['round']}: val acc {100 * r['val_acc']:.2f} % "
                                               f"(accepted {r.get('accepted', '-')}, dropped {r.get('dropped', '-')}, "
                                               f"rejected {r.get('rejected', '-')}) {r['seconds']} s", flush=True))
        report.update(dataset=dataset, lr=LR, views=VIEWS, wall_seconds=round(time.monotonic() - t0, 1),
                      command="nice -n 19 python benchmarks/exp_fleet.py" + (f" --only {name}" if args.only else "")
                      + (f" --seed {args.seed}" if args.seed else "")
                      + (f" --out {args.out}" if Path(args.out) != OUT else ""))
        c = report["centralised"]
        print(f"{key}: fleet {100 * report['fleet_val_acc']:.2f} % vs centralised {100 * c['val_acc']:.2f} % "
              f"({report['fleet_minus_centralised_points']:+.2f} points); upload {report['upload_bytes_per_client_per_round']} B"
              f" per client per round vs whole model {report['whole_model_bytes']} B", flush=True)
        done["runs"][key] = report
        done["baselines"][bkey] = report["centralised"]
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(done, indent=1) + "\n")
        tmp.replace(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

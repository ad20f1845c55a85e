"""Same numbers before and after a speed-up: small fine_tune runs of mcunet-5fps on real images (cub50, 128 px,
the exp_sparse protocol's batch 16 with a short last batch), one per scheme and numerics, hashed (val_acc,
val_loss, train_acc, the history, and every parameter of the trained graph), old code against new code.

    nice -n 10 python benchmarks/check_fine_tune_identical.py --baseline main    # A/B in one command
    nice -n 10 python benchmarks/check_fine_tune_identical.py --digest            # this tree's digests only

--baseline REF: src/ at REF (git archive) and this tree's src/ each run the same runs in a child process; the
digests must be equal (exit 1 and the differing runs named otherwise). Runs: full update, bias-only, last-12,
bias-12 + a 1/8 weight slice of conv 30 (a contribution-analysis job), bias-24, upstream's 49 KB scheme, each
int8 + QAS with stochastic rounding, plus last-2 blocks with nearest rounding, with momentum, without QAS and
in fp32. 2 epochs on 37 training images, 24 validation images.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MICROTRAIN_SHARED", REPO.parent / "shared"))
RUNS = {  # name: (scheme, fine_tune keywords)
    "full": ("full", {}),
    "bias-only": ("bias-only", {}),
    "last-12": ("last-12", {}),
    "w30-1/8": ("w30-1/8", {}),
    "bias-24": ("bias-24", {}),
    "49kb": ("fixture:mcunet-5fps-49kb", {}),
    "blocks2-nearest": ("blocks-2", {"rounding": "nearest"}),
    "blocks2-momentum": ("blocks-2", {"momentum": 0.9}),
    "blocks2-noqas": ("blocks-2", {"qas": False}),
    "blocks2-fp32": ("blocks-2", {"fp32": True}),
}


def digests(names) -> dict[str, str]:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from profile_fine_tune import make_scheme

    from microtrain.commands.train import parse_update
    from microtrain.models import load_model
    from microtrain.runtime.datasets import load_image_folder
    from microtrain.runtime.trainer import fine_tune

    graph = load_model(SHARED / "models" / "mcunet-5fps.pkl")
    root = SHARED / "data" / "cub50"
    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())[:4]
    train = load_image_folder(root / "train", graph.resolution, seed=0, classes=None)
    keep = np.flatnonzero(train.labels < 4)
    train = train.subset(keep[:37])
    val = load_image_folder(root / "val", graph.resolution, classes=train.classes)
    val = val.subset(np.flatnonzero(val.labels < 4)[:24])
    assert classes == list(train.classes[:4])
    out = {}
    for name in names:
        spec, kw = RUNS[name]
        scheme = parse_update("last-blocks:2", graph) if spec == "blocks-2" else make_scheme(spec, graph)
        lr = 50.0 if kw.get("qas") is False else (0.01 if kw.get("fp32") else 0.03)
        r = fine_tune(graph, scheme, train, val, epochs=2, lr=lr, seed=5, batch_size=16, **kw)
        h = hashlib.blake2b(digest_size=10)
        h.update(repr((r["val_acc"], r["val_loss"], r["train_acc"], r["history"])).encode())
        for node in r["graph"].nodes:
            for k in sorted(node.params):
                h.update(np.ascontiguousarray(node.params[k]).tobytes())
        out[name] = h.hexdigest()
    return out


def archive_src(ref: str, dest: Path) -> Path:
    """src/ as it is at git ref `ref`, extracted under dest: the old side of an A/B comparison."""
    subprocess.run(f"git -C {REPO} archive {ref} src | tar -x -C {dest}", shell=True, check=True)
    return Path(dest) / "src"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", default=None, help="git ref whose src/ is compared with this tree's")
    ap.add_argument("--runs", default=",".join(RUNS))
    ap.add_argument("--digest", action="store_true", help="print this tree's digests as JSON")
    args = ap.parse_args(argv)
    names = args.runs.split(",")
    if args.digest or not args.baseline:
        print("DIGESTS " + json.dumps(digests(names)))
        return 0
    results = {}
    with tempfile.TemporaryDirectory(prefix="check_identical_") as tmp:
        for side, src in (("old", archive_src(args.baseline, Path(tmp))), ("new", REPO / "src")):
            env = dict(os.environ, PYTHONPATH=str(src))
            p = subprocess.run([sys.executable, __file__, "--digest", "--runs", args.runs], env=env,
                               capture_output=True, text=True)
            if p.returncode:
                raise SystemExit(f"{side} side failed:\n{p.stderr[-3000:]}")
            line = [ln for ln in p.stdout.splitlines() if ln.startswith("DIGESTS ")][-1]
            results[side] = json.loads(line[len("DIGESTS "):])
    bad = [n for n in names if results["old"][n] != results["new"][n]]
    for n in names:
        print(f"{n:18s} old {results['old'][n]}  new {results['new'][n]}  "
              f"{'same' if n not in bad else 'DIFFERENT'}")
    if bad:
        print(f"DIFFERENT: {bad}", file=sys.stderr)
        return 1
    print(f"all {len(names)} runs identical")
    return 0


if __name__ == "__main__":
    sys.exit(main())

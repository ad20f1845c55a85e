"""The numerics fingerprint: a hash of what a tiny deterministic training run computes, so that stored accuracy
results are reused exactly as long as the code would reproduce them.

A rule "reuse while the result is newer than the code" (file times) throws results away on every refactor,
even a bit-identical one, and keeps them after a change made in a file it does not list. Instead the code
itself is asked: mcunet-5fps at 32x32 with a new 3-class head is fine-tuned for 2 epochs on 12 synthetic
images (fixed generator) in every numerics the experiments use (fp32, int8 without QAS, int8 + QAS with
stochastic and nearest rounding, int8 + QAS with momentum), and the loader's augmentation and resize rule
run on two synthetic pictures (a small one that is upscaled whole and a large one that is center-cropped).
The fingerprint hashes the trained parameters, the validation metrics and the views. Any change of the
arithmetic, autodiff, rounding, QAS, head, schedule or data transform changes it; a change that computes the
same numbers does not. Takes a few seconds.

    python benchmarks/numerics_fingerprint.py     # prints the current fingerprint
    python benchmarks/numerics_fingerprint.py --stamp results/qas.json results/sparse.json

--stamp: a result file written before fingerprints existed gets the current one only if the current code
reproduces some of its stored runs exactly (same validation loss and accuracy, bit for bit): two final runs
of mcunet-5fps (int8 + QAS and fp32, seed 0) for a QAS table, the seed-0 final run of two schemes for the
sparse table. The file then records the fingerprint and the runs that verified it; otherwise it is left alone.
"""
from __future__ import annotations

import functools
import hashlib
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MICROTRAIN_SHARED", REPO.parent / "shared"))
VERSION = 1  # bump when the probe itself changes


def _synthetic_views() -> np.ndarray:
    from PIL import Image

    from microtrain.runtime.datasets import augmented_views

    rng = np.random.default_rng(2026)
    out = []
    for size in ((24, 20), (150, 110)):
        im = Image.fromarray(rng.integers(0, 256, size[::-1] + (3,), dtype=np.uint8))
        out += augmented_views(im, 32, 4, np.random.default_rng(7))
    return np.stack(out)


@functools.lru_cache(maxsize=None)
def numerics_fingerprint(model: str = "mcunet-5fps") -> str:
    from microtrain.commands.train import parse_update
    from microtrain.models import load_model
    from microtrain.runtime.trainer import fine_tune

    h = hashlib.blake2b(digest_size=12)
    h.update(f"v{VERSION}".encode())
    views = _synthetic_views()
    h.update(views.tobytes())
    path = SHARED / "models" / f"{model}.pkl"
    h.update(hashlib.sha256(path.read_bytes()).digest())
    graph = load_model(path).with_resolution(32)
    rng = np.random.default_rng(14)
    x = rng.integers(-128, 128, (12, 2, 32, 32, 3), dtype=np.int8)
    y = np.arange(12) % 3
    for update, kw in (("last-blocks:2", {"fp32": True}), ("last-blocks:2", {"qas": False}),
                       ("last-blocks:2", {"qas": True}), ("last-blocks:2", {"qas": True, "rounding": "nearest"}),
                       ("last-blocks:2", {"qas": True, "momentum": 0.9}), ("head", {"qas": True})):
        lr = 0.05 if kw.get("qas", True) else 50.0
        r = fine_tune(graph, parse_update(update, graph), (x, y), (x[:, 0], y), epochs=2, lr=lr, seed=3,
                      batch_size=4, **kw)
        for node in r["graph"].nodes:
            for k in sorted(node.params):
                h.update(np.ascontiguousarray(node.params[k]).tobytes())
        h.update(repr((r["val_acc"], r["val_loss"], r["train_acc"])).encode())
    return h.hexdigest()


def _rerun_qas(table: dict, runs: dict) -> list[dict]:
    from exp_qas import SETTINGS, load_dataset
    from run_store import run_key

    from microtrain.commands.train import parse_update
    from microtrain.models import load_model
    from microtrain.runtime.trainer import fine_tune

    proto, model = table["protocol"], "mcunet-5fps"
    graph = load_model(SHARED / "models" / f"{model}.pkl")
    train, val = load_dataset(table.get("dataset", "hymenoptera"), graph.resolution, proto["views"])
    out = []
    for setting in ("int8+QAS", "fp32"):
        update, fp32, qas = SETTINGS[setting]
        lr = table["models"][model][setting]["lr"]
        key = run_key(model, setting, "final", lr, 0)
        r = fine_tune(graph, parse_update(update, graph), train, val, epochs=proto["epochs"], lr=lr, seed=0,
                      batch_size=proto["batch_size"], fp32=fp32, qas=qas)
        out.append({"run": key, "stored": [runs[key]["val_acc"], runs[key]["val_loss"]],
                    "now": [r["val_acc"], r["val_loss"]]})
    return out


def _rerun_sparse(record: dict) -> list[dict]:
    import re

    from microtrain.models import load_model
    from microtrain.runtime.datasets import load_image_folder
    from microtrain.runtime.trainer import fine_tune
    from microtrain.sparse.scheme import UpdateScheme

    meta = record["meta"]
    epochs = int(re.search(r"epochs=(\d+)", meta["final_settings"]).group(1))
    graph = load_model(SHARED / "models" / f"{meta['model']}.pkl")
    train = load_image_folder(Path(meta["data"]) / "train", graph.resolution, seed=0)
    val = load_image_folder(Path(meta["data"]) / "val", graph.resolution, classes=train.classes)
    out = []
    for name in sorted(record["final"])[:2]:
        e = record["final"][name]
        r = fine_tune(graph, UpdateScheme.from_dict(e["scheme"]), train, val, epochs=epochs, lr=e["lr"], seed=0,
                      batch_size=16)
        out.append({"run": f"{name} seed 0", "stored": [e["seeds"]["0"]["val_acc"], e["seeds"]["0"]["val_loss"]],
                    "now": [r["val_acc"], r["val_loss"]]})
    return out


def stamp(path: Path) -> bool:
    """Record the current fingerprint in a result file if the code reproduces its stored runs exactly."""
    import json

    doc = json.loads(path.read_text())
    if "final" in doc:
        checks = _rerun_sparse(doc)
    else:
        runs = json.loads(path.with_name(path.stem + "_runs.json").read_text())
        checks = _rerun_qas(doc, runs)
    ok = all(c["stored"] == c["now"] for c in checks)
    for c in checks:
        print(f"{path.name}: {c['run']}: stored {c['stored']}, now {c['now']} -> {'same' if c['stored'] == c['now'] else 'DIFFERENT'}")
    if ok:
        doc["numerics_fingerprint"] = numerics_fingerprint()
        doc["fingerprint_verified_by"] = [c["run"] for c in checks]
        path.write_text(json.dumps(doc, indent=1) + "\n")
    return ok


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "src"))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    if len(sys.argv) > 2 and sys.argv[1] == "--stamp":
        sys.exit(0 if all([stamp(Path(p)) for p in sys.argv[2:]]) else 1)
    print(numerics_fingerprint())

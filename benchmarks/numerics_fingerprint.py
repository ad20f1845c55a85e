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


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "src"))
    print(numerics_fingerprint())

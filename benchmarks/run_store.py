"""Where the accuracy experiments keep their runs, so that they resume: each run is looked up by its key
before it is trained, and stored as soon as it ends.

RunFile: every run of an experiment in one JSON dict (the ants-vs-bees and digits QAS files).
RunDir: one small JSON file per run, named by the run's whole key, holding the numerics fingerprint
(numerics_fingerprint.py) it was computed with; a file with another fingerprint does not count. Several
processes may share a RunDir as long as they run different keys (writes are atomic).
"""
from __future__ import annotations

import json
import os
from pathlib import Path


def write_report(path: Path | None, report: dict) -> None:
    """A benchmark's --out JSON (nothing when path is None), its folder made if needed."""
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=1) + "\n")


def run_key(model, setting, stage, lr, seed):
    return f"{model}|{setting}|{stage}|{lr:g}|{seed}"


class RunFile:
    """The legacy store: every run of an experiment in one JSON dict (hymenoptera, digits)."""

    def __init__(self, path: Path):
        self.path = path
        self.runs = json.loads(path.read_text()) if path.exists() else {}

    def get(self, key, epochs=None):
        return self.runs.get(key)

    def put(self, key, value, epochs):
        self.runs[key] = value
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.runs, indent=1) + "\n")
        tmp.replace(self.path)

    def items(self):
        return self.runs.items()


class RunDir:
    """One JSON file per run under `root`, named by the run's whole key (model, setting, stage, lr, seed,
    epochs, views, batch, momentum). A file counts only if it was computed with the current numerics
    fingerprint; otherwise the run is redone (and its file, which this experiment wrote, replaced)."""

    def __init__(self, root: Path, fingerprint: str, views: int, batch: int, momentum: float):
        self.root, self.fingerprint = root, fingerprint
        self.suffix = f"_v{views}_b{batch}_m{momentum:g}"
        self._seen: dict[str, tuple[dict, int]] = {}

    def path(self, key, epochs) -> Path:
        model, setting, stage, lr, seed = key.split("|")
        return self.root / model / setting / f"{stage}_lr{lr}_s{seed}_e{epochs}{self.suffix}.json"

    def get(self, key, epochs):
        p = self.path(key, epochs)
        try:
            doc = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        if doc.get("numerics_fingerprint") != self.fingerprint:
            return None
        self._seen[key] = (doc["result"], epochs)
        return doc["result"]

    def put(self, key, value, epochs):
        p = self.path(key, epochs)
        p.parent.mkdir(parents=True, exist_ok=True)
        model, setting, stage, lr, seed = key.split("|")
        doc = {"key": {"model": model, "setting": setting, "stage": stage, "lr": float(lr), "seed": int(seed),
                       "epochs": epochs, "run": p.stem}, "numerics_fingerprint": self.fingerprint, "result": value}
        tmp = p.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(doc, separators=(",", ":")) + "\n")
        tmp.replace(p)
        self._seen[key] = (value, epochs)

    def items(self):
        return ((k, v) for k, (v, _) in self._seen.items())

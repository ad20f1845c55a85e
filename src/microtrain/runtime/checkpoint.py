"""Training checkpoints in a safe format: a folder with

    graph.json + graph.npz    the whole trained graph (ir/serialize: JSON + npz, never pickle)
    state.json                epoch, global step, history, training arguments
    optimizer.npz             momentum buffers (empty without momentum)

Written to a temporary folder and renamed, so an interrupted save never leaves a torn checkpoint.
"""
from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np

from ..errors import MicrotrainError
from ..ir.serialize import load_graph, save_graph

FORMAT = "microtrain-checkpoint"


class CheckpointError(MicrotrainError):
    """A checkpoint folder is missing or unreadable."""


FILES = ("graph.json", "graph.npz", "state.json", "optimizer.npz")


def is_checkpoint_folder(folder) -> bool:
    """A folder holding nothing but checkpoint files (what save_checkpoint may replace as a whole)."""
    folder = Path(folder)
    return folder.is_dir() and all(p.name in FILES for p in folder.iterdir())


def save_checkpoint(folder, graph, state: dict, arrays: dict | None = None) -> Path:
    """Write a checkpoint folder. Never deletes a file it did not write: a folder that holds other files
    too (train --force) gets the four checkpoint files replaced one by one, state.json last."""
    folder = Path(folder)
    if folder.exists() and not is_checkpoint_folder(folder):
        return _save_in_place(folder, graph, state, arrays)
    tmp = folder.with_name(folder.name + ".tmp")
    old = folder.with_name(folder.name + ".old")
    for side in (tmp, old):  # leftovers of an interrupted save; anything else there is a user's
        if side.exists() and not is_checkpoint_folder(side):
            raise CheckpointError(f"{side}: exists and is not a microtrain checkpoint; remove or rename it")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    _write_files(tmp, graph, state, arrays)
    if folder.exists():
        if old.exists():
            shutil.rmtree(old)
        folder.rename(old)
    tmp.rename(folder)
    if old.exists():
        shutil.rmtree(old)
    return folder


def _write_files(folder: Path, graph, state: dict, arrays) -> None:
    save_graph(graph, folder / "graph.json")
    np.savez(folder / "optimizer.npz", **(arrays or {}))
    (folder / "state.json").write_text(json.dumps(dict(state, format=FORMAT), indent=1, default=_jsonable) + "\n")


def _save_in_place(folder: Path, graph, state: dict, arrays) -> Path:
    import os
    import tempfile

    with tempfile.TemporaryDirectory(prefix=".mt-checkpoint-", dir=folder) as tmp:
        _write_files(Path(tmp), graph, state, arrays)
        for name in FILES:  # state.json last: it never claims an epoch whose files are not written yet
            if name != "state.json":
                os.replace(Path(tmp) / name, folder / name)
        os.replace(Path(tmp) / "state.json", folder / "state.json")
    return folder


def load_checkpoint(folder):
    """(graph, state dict, optimizer arrays) of a checkpoint folder."""
    folder = Path(folder)
    state_path = folder / "state.json"
    try:
        state = json.loads(state_path.read_text())
    except (OSError, ValueError, RecursionError) as e:  # JSONDecodeError/UnicodeDecodeError are ValueErrors
        raise CheckpointError(f"{state_path}: cannot read checkpoint state ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{state_path}: not a microtrain checkpoint (format={found!r})")
    graph = load_graph(folder / "graph.json")
    try:
        with np.load(folder / "optimizer.npz", allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, NotImplementedError, RuntimeError) as e:
        raise CheckpointError(f"{folder / 'optimizer.npz'}: cannot read optimizer state ({e})") from None
    return graph, state, arrays


def _jsonable(v):
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, Path):
        return str(v)
    raise TypeError(f"not JSON serialisable: {type(v).__name__}")

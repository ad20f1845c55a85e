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


def save_checkpoint(folder, graph, state: dict, arrays: dict | None = None) -> Path:
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_graph(graph, tmp / "graph.json")
    np.savez(tmp / "optimizer.npz", **(arrays or {}))
    (tmp / "state.json").write_text(json.dumps(dict(state, format=FORMAT), indent=1, default=_jsonable) + "\n")
    old = folder.with_name(folder.name + ".old")
    if folder.exists():
        if old.exists():
            shutil.rmtree(old)
        folder.rename(old)
    tmp.rename(folder)
    if old.exists():
        shutil.rmtree(old)
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

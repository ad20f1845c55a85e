"""Samples for an on-device session: an ImageFolder (root/train/<class>, root/val/<class>, or root/<class>)
turned into int8 NHWC samples at the model's resolution (evaluation transform; pixel k -> k - 128)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import DatasetError
from ...runtime.datasets import list_image_folder
from ...runtime.images import load_int8


def split_folders(root: Path | str) -> tuple[Path, Path]:
    root = Path(root)
    if (root / "train").is_dir() and (root / "val").is_dir():
        return root / "train", root / "val"
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found (expected {root}/train/<class>, {root}/val/<class>)")
    raise DatasetError(f"{root}: expected train/ and val/ sub-folders, each with one folder per class")


def pick(files, n: int, rng: np.random.Generator, cycle: bool) -> list[tuple[Path, int]]:
    """n files in a shuffled order; with cycle, the epoch repeats (reshuffled) until n are chosen."""
    if n <= 0 or not files:
        return []
    chosen = []
    while len(chosen) < n:
        order = rng.permutation(len(files))
        chosen += [files[i] for i in order]
        if not cycle:
            break
    return chosen[:n]


def load_samples(chosen, resolution: int, channels: int = 3) -> tuple[np.ndarray, np.ndarray, list[tuple[str, str]]]:
    """int8 samples and labels of the chosen files; undecodable files are skipped and reported."""
    xs, labels, skipped = [], [], []
    for path, label in chosen:
        try:
            xs.append(load_int8([path], resolution, channels)[0])
            labels.append(label)
        except DatasetError as e:
            skipped.append((str(path), str(e)))
    x = np.stack(xs) if xs else np.zeros((0, resolution, resolution, channels), np.int8)
    return x, np.asarray(labels, np.int32), skipped


def load_training(files, steps: int, resolution: int, rng: np.random.Generator, channels: int = 3):
    """`steps` training samples, the training set reshuffled each epoch (as pick(cycle=True)). A file that
    does not decode is reported once and left out of later epochs' draws, so the run keeps its step count."""
    xs, labels, skipped, bad = [], [], [], set()
    pool = list(files)
    while len(xs) < steps:
        if not pool:
            raise DatasetError(f"no training image decodes ({len(skipped)} skipped: {skipped[0][1] if skipped else ''})")
        for i in rng.permutation(len(pool)):
            path, label = pool[i]
            if path in bad:
                continue
            try:
                xs.append(load_int8([path], resolution, channels)[0])
                labels.append(label)
            except DatasetError as e:
                bad.add(path)
                skipped.append((str(path), str(e)))
                continue
            if len(xs) == steps:
                break
        pool = [f for f in pool if f[0] not in bad]
    x = np.stack(xs) if xs else np.zeros((0, resolution, resolution, channels), np.int8)
    return x, np.asarray(labels, np.int32), skipped


def session_data(root: Path | str, resolution: int, num_classes: int, steps: int, n_eval: int, seed: int = 0,
                 channels: int = 3):
    """(train x, y), (eval x, y), classes, skipped: `steps` training samples (the training set reshuffled
    each epoch) and `n_eval` held-out samples (all of val/ when n_eval < 0); channels=1: grayscale (luma)."""
    train_dir, val_dir = split_folders(root)
    classes, train_files = list_image_folder(train_dir)
    val_classes, val_files = list_image_folder(val_dir)
    if val_classes != classes:
        raise DatasetError(f"{root}: train/ has classes {classes} but val/ has {val_classes}")
    if len(classes) != num_classes:
        raise DatasetError(f"{root}: {len(classes)} classes ({', '.join(classes)}) but the compiled model has "
                           f"{num_classes} outputs; compile it with a {len(classes)}-class head")
    rng = np.random.default_rng(seed)
    x_tr, y_tr, skip_tr = load_training(train_files, steps, resolution, rng, channels)
    eval_files = pick(val_files, len(val_files) if n_eval < 0 else n_eval, rng, cycle=False)
    x_ev, y_ev, skip_ev = load_samples(eval_files, resolution, channels)
    return (x_tr, y_tr), (x_ev, y_ev), classes, skip_tr + skip_ev

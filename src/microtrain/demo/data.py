"""The demo's data: scikit-learn's handwritten digits (1797 real 8x8 scans shipped inside the wheel, so no
network), upsampled to an MCU-camera-like image and split into a pretraining task and an unseen task."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import DatasetError

PRETRAIN_CLASSES = (0, 1, 2, 3, 4, 5)
NEW_CLASSES = (6, 7, 8, 9)


@dataclass
class Split:
    """NHWC uint8 pixels and labels 0..K-1 (indices into `classes`)."""

    images: np.ndarray
    labels: np.ndarray
    classes: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.labels)


def load_digits_pixels(resolution: int = 16, channels: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """All 1797 digits as (N, res, res, channels) uint8 pixels (bilinear upsampling) and digit labels."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DatasetError("the demo needs scikit-learn for its digits data: pip install 'microtrain[demo]'") from None
    from PIL import Image

    d = load_digits()
    small = np.clip(np.rint(d.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)  # values 0..16 -> 0..255
    big = np.stack([np.asarray(Image.fromarray(im).resize((resolution, resolution), Image.BILINEAR)) for im in small])
    return np.repeat(big[..., None], channels, axis=-1), d.target.astype(np.int64)


def split_task(images, digits, classes, val_fraction: float, seed: int) -> tuple[Split, Split]:
    """Train/validation split of the images of `classes`, stratified, deterministic for a seed."""
    rng = np.random.default_rng(seed)
    train_idx, val_idx = [], []
    for digit in classes:
        idx = rng.permutation(np.flatnonzero(digits == digit))
        n_val = int(round(len(idx) * val_fraction))
        val_idx.extend(idx[:n_val])
        train_idx.extend(idx[n_val:])
    lookup = {d: i for i, d in enumerate(classes)}

    def make(ix):
        ix = rng.permutation(np.asarray(ix))
        return Split(images[ix], np.array([lookup[d] for d in digits[ix]], np.int64), tuple(classes))

    return make(train_idx), make(val_idx)


def demo_tasks(resolution: int = 16, channels: int = 3, seed: int = 0):
    """(pretrain_train, pretrain_val, new_train, new_val): classes 0-5 to pretrain, 6-9 to adapt to."""
    images, digits = load_digits_pixels(resolution, channels)
    pre_train, pre_val = split_task(images, digits, PRETRAIN_CLASSES, 0.25, seed)
    new_train, new_val = split_task(images, digits, NEW_CLASSES, 0.5, seed + 1)
    return pre_train, pre_val, new_train, new_val

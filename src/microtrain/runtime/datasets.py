"""ImageFolder datasets (root/<class>/<image>) as int8 arrays, with precomputed augmented views.

Accepted images are JPEG and PNG (by content, not by name). Any other file, and any image that does
not decode, is reported in `skipped` with the reason and left out; it never stops loading.

Augmentation is precomputed: each image gets `views` fixed crops at the model resolution:
view 0 = the evaluation transform (runtime/images.resize_center_crop), view 1 = its mirror image,
views 2.. = random-resized crops (area 35-100 %, aspect 3/4-4/3) with a random flip, drawn from a
generator seeded by (seed, crc32 of the file's relative path): the same image always gets the same
views, whatever the folder order. A fixed set of views lets the trainer cache the frozen prefix of the
network per view (runtime/trainer.py).
"""
from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DatasetError
from ..quant.arith import pixels_to_int8
from .images import TooLargeImage, decode_errors, open_image, resize_center_crop, to_channels

FORMATS = ("JPEG", "PNG")


@dataclass
class ImageData:
    """views: int8 (N, V, H, W, 3) (pixel k -> k - 128); labels int64 (N,); skipped: [(path, reason)]."""

    views: np.ndarray
    labels: np.ndarray
    classes: list[str]
    paths: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    _fingerprint: str | None = field(default=None, repr=False)
    # a subset remembers its parent and indices: the trainer slices the parent's cached features
    _parent: "ImageData | None" = field(default=None, repr=False)
    _index: np.ndarray | None = field(default=None, repr=False)

    @property
    def x(self) -> np.ndarray:
        """The evaluation view (N, H, W, 3) int8."""
        return self.views[:, 0]

    @property
    def num_views(self) -> int:
        return self.views.shape[1]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.labels)

    def __iter__(self):  # x, labels, skipped = load_image_folder(...)
        return iter((self.x, self.labels, self.skipped))

    def fingerprint(self) -> str:
        """Content hash of the views (the key of the trainer's prefix cache)."""
        if self._fingerprint is None:
            h = hashlib.blake2b(digest_size=16)
            h.update(repr(self.views.shape).encode())
            h.update(np.ascontiguousarray(self.views).data)
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def subset(self, index) -> "ImageData":
        index = np.asarray(index)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        root, root_index = (self._parent, self._index[index]) if self._parent is not None else (self, index)
        return ImageData(self.views[index], self.labels[index], list(self.classes),
                         [self.paths[i] for i in index] if self.paths else [], list(self.skipped),
                         _parent=root, _index=root_index)


def as_image_data(data, classes=None) -> ImageData:
    """Accept an ImageData, or (x, labels) with x int8 (N, H, W, C) or (N, V, H, W, C) (C = 3 for images;
    1-D series are (N, [V,] 1, L, C), runtime/timeseries.py)."""
    if isinstance(data, ImageData):
        return data
    try:
        x, labels = data[0], data[1]
    except (TypeError, IndexError, KeyError):
        raise DatasetError("data must be an ImageData or a pair (x, labels)") from None
    x, labels = np.asarray(x), np.asarray(labels, dtype=np.int64)
    if x.dtype != np.int8 or x.ndim not in (4, 5) or x.shape[-1] < 1:
        raise DatasetError(f"images must be int8 (N, H, W, C) or (N, V, H, W, C), got {x.dtype} {x.shape}")
    if x.ndim == 4:
        x = x[:, None]
    if len(x) != len(labels):
        raise DatasetError(f"{len(x)} images but {len(labels)} labels")
    n_classes = int(labels.max()) + 1 if len(labels) else 0
    return ImageData(x, labels, list(classes) if classes else [str(i) for i in range(n_classes)])


def decode_checked(path: Path, formats=FORMATS):
    """(RGB PIL image, None) or (None, reason) for a file that is not a decodable accepted image."""
    try:
        with open_image(path) as im:
            fmt = im.format
            if fmt not in formats:
                return None, f"not a {'/'.join(formats)} image (format {fmt})"
            im.load()
            return im.convert("RGB"), None
    except TooLargeImage as e:
        return None, str(e)
    except decode_errors() as e:
        return None, f"cannot decode ({type(e).__name__}: {e})"


def augmented_views(im, resolution: int, views: int, rng: np.random.Generator) -> list[np.ndarray]:
    from PIL import Image

    base = resize_center_crop(im, resolution)
    out = [np.asarray(base, dtype=np.uint8)]
    if views > 1:
        out.append(np.ascontiguousarray(out[0][:, ::-1]))
    w, h = im.size
    for _ in range(views - 2):
        for _attempt in range(10):
            area = rng.uniform(0.35, 1.0) * w * h
            aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
            cw, ch = int(round(np.sqrt(area * aspect))), int(round(np.sqrt(area / aspect)))
            if 0 < cw <= w and 0 < ch <= h:
                break
        else:
            cw = ch = min(w, h)
        left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        crop = im.crop((left, top, left + cw, top + ch)).resize((resolution, resolution), Image.BILINEAR)
        arr = np.asarray(crop, dtype=np.uint8)
        if rng.random() < 0.5:
            arr = arr[:, ::-1]
        out.append(np.ascontiguousarray(arr))
    return out


def class_subfolders(root: Path, contents: str) -> list[str]:
    """Sorted names of root's class sub-folders; a missing root or one without sub-folders is a DatasetError
    that shows the expected layout (root/<class>/<contents>)."""
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found (expected {root}/<class>/{contents})")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DatasetError(f"{root}: no class sub-folders (expected {root}/<class>/{contents})")
    return classes


def list_image_folder(root) -> tuple[list[str], list[tuple[Path, int]]]:
    root = Path(root)
    classes = class_subfolders(root, "<images>")
    files = [(p, i) for i, c in enumerate(classes) for p in sorted((root / c).iterdir())
             if p.is_file() and not p.name.startswith(".")]
    empty = [c for i, c in enumerate(classes) if not any(ci == i for _, ci in files)]
    if empty:  # an empty folder would silently become a class no image can ever teach
        raise DatasetError(f"{root}: empty class folder{'s' if len(empty) > 1 else ''} "
                           f"{', '.join(str(root / c) for c in empty)} (remove it or add images)")
    return classes, files


def load_image_folder(root, resolution: int, views: int = 1, seed: int = 0, classes=None,
                      progress: bool = False, channels: int = 3) -> ImageData:
    """Load root/<class>/* as int8 views (N, V, res, res, channels). `classes` fixes the class order (use the
    training set's for the validation set). Undecodable and non-JPEG/PNG files go to `skipped`. channels=1
    (a grayscale model) takes the luma of each view (images.to_channels)."""
    from ..progress import Progress

    root = Path(root)
    found, files = list_image_folder(root)
    classes = list(classes) if classes else found
    index = {c: i for i, c in enumerate(classes)}
    missing = [c for c in found if c not in index]
    if missing:
        raise DatasetError(f"{root}: class folders {missing} are not among the classes {classes}")
    views = max(1, int(views))
    xs, labels, paths, skipped = [], [], [], []
    with Progress(len(files), f"loading {root.name}", enabled=None if progress else False) as bar:
        for path, ci in files:
            im, reason = decode_checked(path)
            if im is None:
                skipped.append((str(path), reason))
            else:
                rel = f"{found[ci]}/{path.name}"
                rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(rel.encode())])
                xs.append(np.stack(augmented_views(im, resolution, views, rng)))
                labels.append(index[found[ci]])
                paths.append(str(path))
            bar.update(1)
    if not xs:
        raise DatasetError(f"{root}: no readable JPEG/PNG images ({len(skipped)} files skipped)")
    unreadable = [c for c in found if index[c] not in set(labels)]
    if unreadable:
        raise DatasetError(f"{root}: no readable JPEG/PNG image in class folder{'s' if len(unreadable) > 1 else ''} "
                           f"{', '.join(str(root / c) for c in unreadable)} ({len(skipped)} files skipped)")
    return ImageData(pixels_to_int8(to_channels(np.stack(xs), channels)), np.asarray(labels, np.int64), classes,
                     paths, skipped)


# ----- an offline 10-class task: scikit-learn's handwritten digits ---------------------------------------
DIGITS_TRAIN_PER_CLASS = 50
DIGITS_VAL_PER_CLASS = 30


def load_digits_split(resolution: int, views: int = 1, seed: int = 0, train_per_class: int = DIGITS_TRAIN_PER_CLASS,
                      val_per_class: int = DIGITS_VAL_PER_CLASS) -> tuple[ImageData, ImageData]:
    """(train, val) ImageData of scikit-learn's digits (1797 8x8 scans in the wheel, no network), 10 classes.

    Images: the 8x8 grey values 0..16 scaled to 0..255, bilinearly upsampled to resolution x resolution and
    replicated to RGB. Split: fixed and stratified; per digit, a permutation drawn from seed 0 (whatever
    `seed`) gives the first `train_per_class` images to train and the next `val_per_class` to val (default
    500 / 300), disjoint. Views (train only; val has the evaluation view): view 0 = the whole image, views
    1.. = random crops (area 70-100 %, aspect 0.9-1.1) resized back, never mirrored (a mirrored digit is
    another shape); drawn per image from (seed, sklearn index). paths are "digits/<sklearn index>"."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DatasetError("the digits dataset needs scikit-learn (pip install scikit-learn)") from None
    from PIL import Image

    d = load_digits()
    target = d.target.astype(np.int64)
    counts = np.bincount(target)
    if counts.min() < train_per_class + val_per_class:
        raise DatasetError(f"digits: {train_per_class} train + {val_per_class} val per class needs "
                           f"{train_per_class + val_per_class} images of each digit, the smallest class has {counts.min()}")
    rng = np.random.default_rng(0)
    train_idx, val_idx = [], []
    for digit in range(len(counts)):
        idx = rng.permutation(np.flatnonzero(target == digit))
        train_idx.append(idx[:train_per_class])
        val_idx.append(idx[train_per_class : train_per_class + val_per_class])
    train_idx, val_idx = np.sort(np.concatenate(train_idx)), np.sort(np.concatenate(val_idx))
    grey = np.clip(np.rint(d.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)

    def build(indices, n_views):
        xs = []
        for i in indices:
            big = Image.fromarray(grey[i]).resize((resolution, resolution), Image.BILINEAR)
            out = [np.asarray(big)]
            vrng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(i)])
            for _ in range(n_views - 1):
                area = vrng.uniform(0.7, 1.0) * resolution * resolution
                aspect = vrng.uniform(0.9, 1.1)
                cw = min(resolution, max(1, int(round(np.sqrt(area * aspect)))))
                ch = min(resolution, max(1, int(round(np.sqrt(area / aspect)))))
                left = int(vrng.integers(0, resolution - cw + 1))
                top = int(vrng.integers(0, resolution - ch + 1))
                crop = big.crop((left, top, left + cw, top + ch)).resize((resolution, resolution), Image.BILINEAR)
                out.append(np.asarray(crop))
            xs.append(np.repeat(np.stack(out)[..., None], 3, axis=-1))
        classes = [str(c) for c in range(len(counts))]
        return ImageData(pixels_to_int8(np.stack(xs)), target[indices], classes, [f"digits/{i}" for i in indices])

    return build(train_idx, max(1, int(views))), build(val_idx, 1)

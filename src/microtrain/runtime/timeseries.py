"""Time-series datasets: UEA/UCR `.ts` files and a folder of per-class `.npy` / `.csv` recordings, the
per-channel normalisation that maps signals onto the int8 device input, and signal augmentations.

A case is a float32 array (length, channels); lengths may differ between cases (JapaneseVowels).

Normalisation (stated here, stored with the model as graph.meta["input_normalisation"]): per channel c,
fitted on the training cases (every time step), z = (x - mean[c]) / std[c], then the int8 device input
q = clip(rint(z * 127 / sigmas), -128, 127) (default sigmas = 4: values within 4 standard deviations keep
their resolution, larger ones saturate). The float model sees r = q * 2/255 (the device's fixed input
scale, quant/ptq.INPUT_QUANT), so the same model reads the same codes on the host and the device.
Fixed length: a longer case is cropped to its first `length` steps, a shorter one padded at the end with
z = 0 (the channel mean).

Augmented views (ImageData layout (N, V, 1, L, C), so the trainer caches them like image views): view 0
is the evaluation transform; views 1.. add, in z units and in this order, a random time shift (up to
`max_shift` steps either way, vacated steps = 0), a per-case scale in [1 - scale, 1 + scale] and Gaussian
noise of standard deviation `noise`; each case's views come from a generator seeded by (seed, case index).

Every file is untrusted: a malformed line raises DatasetError naming the file and line before anything is
returned; `.npy` files are read with allow_pickle=False.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DatasetError
from .datasets import ImageData, class_subfolders

MAX_CHANNELS = 1024
MAX_LENGTH = 1_000_000
SUFFIXES = (".npy", ".csv")


@dataclass
class Series:
    """cases: float32 (length, channels) each; labels int64 (N,); classes in label order."""

    cases: list[np.ndarray]
    labels: np.ndarray
    classes: list[str]
    source: str
    paths: list[str] = field(default_factory=list)

    @property
    def channels(self) -> int:
        return self.cases[0].shape[1]

    @property
    def lengths(self) -> np.ndarray:
        return np.array([len(c) for c in self.cases])

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index) -> "Series":
        index = np.asarray(index, dtype=np.int64)
        return Series([self.cases[i] for i in index], self.labels[index], list(self.classes), self.source,
                      [self.paths[i] for i in index] if self.paths else [])


# ----- the .ts format ----------------------------------------------------------------------------------
def _number(text: str, where: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise DatasetError(f"{where}: {text[:40]!r} is not a number") from None
    if not math.isfinite(v):
        raise DatasetError(f"{where}: value {text[:40]!r} is not finite")
    return v


def _header(key: str, value: str, where: str, head: dict) -> None:
    if key == "timestamps" and value.lower() == "true":
        raise DatasetError(f"{where}: @timeStamps true is not supported (values must be plain lists)")
    if key in ("dimensions", "serieslength"):
        try:
            n = int(value)
        except ValueError:
            raise DatasetError(f"{where}: @{key} needs an integer, got {value[:40]!r}") from None
        if not 1 <= n <= (MAX_CHANNELS if key == "dimensions" else MAX_LENGTH):
            raise DatasetError(f"{where}: @{key} {n} is out of range")
        head[key] = n
    elif key == "classlabel":
        parts = value.split()
        if not parts or parts[0].lower() != "true" or len(parts) < 3:
            raise DatasetError(f"{where}: @classLabel must be 'true' followed by at least 2 labels (regression "
                               "sets are not classification data)")
        if len(set(parts[1:])) != len(parts) - 1:
            raise DatasetError(f"{where}: @classLabel lists a label twice")
        head["classes"] = parts[1:]


def read_ts(path, classes=None) -> Series:
    """Read a `.ts` file (sktime/aeon format). `classes` fixes the label order (pass the training file's
    classes when reading its test file); default: the order of its @classLabel line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: cannot read as UTF-8 text ({type(e).__name__})") from None
    head: dict = {}
    cases, labels = [], []
    in_data = False
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        where = f"{path}:{lineno}"
        if not line or line.startswith("#"):
            continue
        if not in_data:
            if not line.startswith("@"):
                raise DatasetError(f"{where}: expected an @ header line or @data before the data")
            key, _, value = line[1:].partition(" ")
            key = key.lower()
            if key == "data":
                in_data = True
                if "classes" not in head:
                    raise DatasetError(f"{where}: @data before any @classLabel line")
            else:
                _header(key, value.strip(), where, head)
            continue
        fields = line.split(":")
        if len(fields) < 2:
            raise DatasetError(f"{where}: a case needs channel values and a class label separated by ':'")
        label = fields[-1].strip()
        if label not in head["classes"]:
            raise DatasetError(f"{where}: label {label[:40]!r} is not among @classLabel {head['classes']}")
        if "dimensions" in head and len(fields) - 1 != head["dimensions"]:
            raise DatasetError(f"{where}: {len(fields) - 1} channels, @dimensions says {head['dimensions']}")
        chans = []
        for ci, f in enumerate(fields[:-1]):
            if "?" in f:
                raise DatasetError(f"{where}: channel {ci} has missing values ('?'), which are not supported")
            values = [_number(v, f"{where} channel {ci}") for v in f.split(",")]
            chans.append(values)
        length = len(chans[0])
        if any(len(c) != length for c in chans):
            raise DatasetError(f"{where}: channels have different lengths {sorted({len(c) for c in chans})}")
        if "serieslength" in head and length != head["serieslength"]:
            raise DatasetError(f"{where}: length {length}, @seriesLength says {head['serieslength']}")
        if cases and len(chans) != cases[0].shape[1]:
            raise DatasetError(f"{where}: {len(chans)} channels, earlier cases have {cases[0].shape[1]}")
        cases.append(np.asarray(chans, dtype=np.float32).T.copy())
        labels.append(label)
    if not in_data:
        raise DatasetError(f"{path}: no @data line (not a .ts file?)")
    if not cases:
        raise DatasetError(f"{path}: @data holds no cases")
    order = list(classes) if classes is not None else list(head["classes"])
    unknown = sorted(set(labels) - set(order))
    if unknown:
        raise DatasetError(f"{path}: labels {unknown} are not among the classes {order}")
    index = {c: i for i, c in enumerate(order)}
    return Series(cases, np.array([index[lab] for lab in labels], np.int64), order, str(path))


# ----- a folder of recordings: root/<class>/<file>.npy|.csv ---------------------------------------------
def _read_csv(path: Path) -> np.ndarray:
    """Rows = time steps, columns = channels, comma separated; one non-numeric header line is allowed."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: cannot read as UTF-8 text ({type(e).__name__})") from None
    rows = []
    for lineno, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line:
            continue
        parts = line.split(",")
        if not rows and lineno == 1 and not _numeric(parts[0]):
            continue  # a header line naming the channels
        rows.append([_number(v.strip(), f"{path}:{lineno}") for v in parts])
        if len(rows[-1]) != len(rows[0]):
            raise DatasetError(f"{path}:{lineno}: {len(rows[-1])} columns, the first row has {len(rows[0])}")
    if not rows:
        raise DatasetError(f"{path}: no data rows")
    return np.asarray(rows, dtype=np.float32)


def _numeric(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _read_npy(path: Path) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise DatasetError(f"{path}: not a readable .npy array ({type(e).__name__}: {str(e)[:120]})") from None
    if arr.dtype.kind not in "biuf":
        raise DatasetError(f"{path}: dtype {arr.dtype} is not numeric")
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise DatasetError(f"{path}: shape {arr.shape}; expected (length,) or (length, channels)")
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        raise DatasetError(f"{path}: holds NaN or infinite values")
    return arr


def load_series_folder(root, classes=None) -> Series:
    """root/<class>/<recording>.npy|.csv, each (length, channels) (rows = time steps). Other files are
    refused by name (a stray file is more likely a mistake than something to skip silently)."""
    root = Path(root)
    found = class_subfolders(root, "<recordings>.npy|.csv")
    order = list(classes) if classes is not None else found
    missing = sorted(set(found) - set(order))
    if missing:
        raise DatasetError(f"{root}: class folders {missing} are not among the classes {order}")
    cases, labels, paths = [], [], []
    for ci, name in enumerate(order):
        folder = root / name
        if not folder.is_dir():
            continue
        for p in sorted(folder.iterdir()):
            if p.name.startswith("."):
                continue
            if p.suffix.lower() not in SUFFIXES or not p.is_file():
                raise DatasetError(f"{p}: not a recording (expected {' or '.join(SUFFIXES)} files)")
            arr = _read_npy(p) if p.suffix.lower() == ".npy" else _read_csv(p)
            if not 1 <= arr.shape[1] <= MAX_CHANNELS or len(arr) > MAX_LENGTH:
                raise DatasetError(f"{p}: shape {arr.shape} is out of range")
            if cases and arr.shape[1] != cases[0].shape[1]:
                raise DatasetError(f"{p}: {arr.shape[1]} channels, {paths[0]} has {cases[0].shape[1]}")
            cases.append(arr)
            labels.append(ci)
            paths.append(str(p))
    if not cases:
        raise DatasetError(f"{root}: no .npy or .csv recordings in the class folders")
    return Series(cases, np.array(labels, np.int64), order, str(root), paths)


def load_series(path, classes=None) -> Series:
    """A `.ts` file or a folder of per-class recordings."""
    path = Path(path)
    return load_series_folder(path, classes) if path.is_dir() else read_ts(path, classes)


# ----- normalisation onto the int8 device input --------------------------------------------------------
@dataclass
class Normalisation:
    """Per-channel z = (x - mean) / std, q = clip(rint(z * 127 / sigmas), -128, 127) (module docstring)."""

    mean: np.ndarray
    std: np.ndarray
    sigmas: float = 4.0

    @classmethod
    def fit(cls, series: Series, sigmas: float = 4.0) -> "Normalisation":
        allv = np.concatenate(series.cases).astype(np.float64)
        std = allv.std(axis=0)
        std = np.where(std > 1e-8 * max(1.0, float(np.abs(allv).max())), std, 1.0)  # a constant channel: mean only
        return cls(allv.mean(axis=0), std, float(sigmas))

    def z(self, case: np.ndarray) -> np.ndarray:
        if case.shape[1] != len(self.mean):
            raise DatasetError(f"a case has {case.shape[1]} channels, the normalisation {len(self.mean)}")
        return ((case.astype(np.float64) - self.mean) / self.std).astype(np.float32)

    def to_int8(self, z: np.ndarray) -> np.ndarray:
        return np.clip(np.rint(z.astype(np.float64) * (127.0 / self.sigmas)), -128, 127).astype(np.int8)

    def to_meta(self) -> dict:
        return {"mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std],
                "sigmas": self.sigmas, "rule": "q = clip(rint((x - mean[c]) / std[c] * 127 / sigmas), -128, 127); "
                "model input r = q * 2/255; shorter cases padded at the end with the mean, longer ones cropped"}

    @classmethod
    def from_meta(cls, meta: dict) -> "Normalisation":
        try:
            mean, std = np.asarray(meta["mean"], np.float64), np.asarray(meta["std"], np.float64)
            sigmas = float(meta["sigmas"])
        except (KeyError, TypeError, ValueError) as e:
            raise DatasetError(f"input_normalisation meta is malformed ({type(e).__name__}: {e})") from None
        if mean.shape != std.shape or mean.ndim != 1 or np.any(std <= 0) or not sigmas > 0:
            raise DatasetError("input_normalisation meta: mean/std must be equal-length lists, std and sigmas > 0")
        return cls(mean, std, sigmas)


def fixed_length(z: np.ndarray, length: int, shift: int = 0) -> np.ndarray:
    """z[shift : shift + length] with zeros where that window leaves the case (crop / end-pad / shift)."""
    out = np.zeros((length, z.shape[1]), np.float32)
    lo, hi = max(0, shift), min(len(z), shift + length)
    if hi > lo:
        out[lo - shift : hi - shift] = z[lo:hi]
    return out


@dataclass
class Augment:
    """Signal augmentations of views 1.. (z units): time shift, per-case scale, Gaussian noise."""

    max_shift: int = 0
    scale: float = 0.0
    noise: float = 0.0

    def __post_init__(self):
        if self.max_shift < 0 or not 0 <= self.scale < 1 or self.noise < 0:
            raise DatasetError(f"augmentation needs max_shift >= 0, 0 <= scale < 1, noise >= 0; got {self}")

    def apply(self, z: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
        shift = int(rng.integers(-self.max_shift, self.max_shift + 1)) if self.max_shift else 0
        v = fixed_length(z, length, shift)
        if self.scale:
            v = v * np.float32(rng.uniform(1 - self.scale, 1 + self.scale))
        if self.noise:
            v = v + rng.normal(0, self.noise, v.shape).astype(np.float32)
        return v


def series_views(series: Series, norm: Normalisation, length: int, views: int = 1, augment: Augment | None = None,
                 seed: int = 0) -> ImageData:
    """ImageData of int8 views (N, V, 1, length, C): view 0 the evaluation transform, views 1.. augmented."""
    if length < 1 or views < 1:
        raise DatasetError(f"length and views must be >= 1, got {length}, {views}")
    if views > 1 and augment is None:
        raise DatasetError("views > 1 needs an Augment (the extra views would repeat view 0)")
    out = np.empty((len(series), views, 1, length, len(norm.mean)), np.int8)
    for i, case in enumerate(series.cases):
        z = norm.z(case)
        out[i, 0, 0] = norm.to_int8(fixed_length(z, length))
        rng = np.random.default_rng([seed, i])
        for v in range(1, views):
            out[i, v, 0] = norm.to_int8(augment.apply(z, length, rng))
    paths = series.paths or [f"{series.source}#{i}" for i in range(len(series))]
    return ImageData(out, series.labels.copy(), list(series.classes), paths)


def is_series_model(graph) -> bool:
    """A 1-D model that carries its input normalisation (the dataset kind `microtrain train` loads)."""
    return bool(graph.meta.get("input_normalisation"))


def load_for_model(graph, train_path, val_path=None, views: int = 1, seed: int = 0):
    """(train, val or None) ImageData of a 1-D model: `.ts` files or recording folders, normalised with the
    model's stored rule, cut/padded to its input length; training views 1.. shift by up to a tenth of the
    length, scale by up to 10 % and add noise of 0.05 standard deviations."""
    norm = Normalisation.from_meta(graph.meta["input_normalisation"])
    _, length, channels = graph.input_spec.shape
    train = load_series(train_path)
    if train.channels != channels:
        raise DatasetError(f"{train_path}: {train.channels} channels, model {graph.name!r} reads {channels}")
    aug = Augment(max_shift=max(1, length // 10), scale=0.1, noise=0.05) if views > 1 else None
    val = series_views(load_series(val_path, classes=train.classes), norm, length) if val_path else None
    return series_views(train, norm, length, views, aug, seed), val

"""Classification metrics beside top-1: the confusion matrix, per-class accuracy (recall) and balanced
accuracy (the mean of the per-class accuracies over the classes present), and a plot of both.

Top-1 on an imbalanced set (clothing10 is 7:1) rewards predicting the big classes; balanced accuracy
weighs every class alike, so the trainer reports both.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DatasetError, MicrotrainError


def confusion_matrix(labels, predictions, num_classes: int) -> np.ndarray:
    """int64 (num_classes, num_classes): row = true class, column = predicted class."""
    y, p = np.asarray(labels, np.int64), np.asarray(predictions, np.int64)
    if y.shape != p.shape:
        raise DatasetError(f"{len(y)} labels but {len(p)} predictions")
    bad = [int(v) for v in np.concatenate([y, p]) if not 0 <= v < num_classes][:3]
    if bad:
        raise DatasetError(f"class index {bad[0]} outside [0, {num_classes})")
    return np.bincount(y * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_accuracy(confusion) -> np.ndarray:
    """Recall per true class; NaN for a class with no example."""
    c = np.asarray(confusion, np.float64)
    support = c.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(c) / support, np.nan)


def balanced_accuracy(confusion) -> float:
    """Mean per-class accuracy over the classes that have examples."""
    acc = per_class_accuracy(confusion)
    acc = acc[~np.isnan(acc)]
    return float(acc.mean()) if acc.size else float("nan")


def plot_confusion(confusion, classes, path, title: str = "") -> Path:
    """Confusion matrix (rows normalised to the true class) and per-class accuracy, one PNG.
    Needs matplotlib (the `plots` extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MicrotrainError("the confusion plot needs matplotlib (pip install 'microtrain[plots]')") from None
    c = np.asarray(confusion, np.float64)
    n = len(c)
    if len(classes) != n:
        raise DatasetError(f"{len(classes)} class names for a {n}x{n} confusion matrix")
    rows = c / np.maximum(c.sum(1, keepdims=True), 1)
    acc = per_class_accuracy(c)
    size = min(4 + 0.18 * n, 22)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(2 * size, size), gridspec_kw={"width_ratios": [1.4, 1]})
    im = ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    labels = classes if n <= 60 else [str(i) for i in range(n)]  # 100 names are unreadable: numbers instead
    fs = max(4, min(9, 300 // max(n, 1)))
    ax.set_xticks(range(n), labels, rotation=90, fontsize=fs)
    ax.set_yticks(range(n), labels, fontsize=fs)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of the true class")
    order = np.argsort(np.nan_to_num(acc, nan=-1))
    ax2.barh(range(n), 100 * np.nan_to_num(acc[order]), color="C0")
    ax2.set_yticks(range(n), [labels[i] for i in order], fontsize=fs)
    ax2.axvline(100 * balanced_accuracy(c), color="k", linestyle="--", linewidth=1, label="balanced accuracy")
    ax2.set_xlabel("per-class accuracy (%)")
    ax2.set_xlim(0, 100)
    ax2.legend(fontsize=8)
    top1 = np.trace(c) / max(c.sum(), 1)
    fig.suptitle(f"{title + ': ' if title else ''}top-1 {100 * top1:.1f} %, balanced {100 * balanced_accuracy(c):.1f} %")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

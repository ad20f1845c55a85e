"""Class names for model outputs.

A graph may carry its own names in graph.meta["labels"] (a list, e.g. after fine-tuning on a user's
folder); otherwise a 1000-class graph gets the ImageNet-1k names in the standard index order
(data/imagenet_classes.txt, one name per line, index = line number) and any other graph gets
"class <i>".
"""
from __future__ import annotations

from functools import lru_cache
from importlib import resources

IMAGENET_NUM_CLASSES = 1000


@lru_cache(maxsize=1)
def imagenet_classes() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names, index i = class i (e.g. 281 'tabby', 309 'bee', 310 'ant')."""
    text = resources.files("microtrain").joinpath("data/imagenet_classes.txt").read_text(encoding="utf-8")
    names = tuple(line.strip() for line in text.splitlines() if line.strip())
    if len(names) != IMAGENET_NUM_CLASSES:  # a packaging error, not a user error
        raise RuntimeError(f"data/imagenet_classes.txt holds {len(names)} names, expected {IMAGENET_NUM_CLASSES}")
    return names


def class_names(graph) -> list[str]:
    """One name per output class of `graph` (see module docstring for the rule)."""
    k = graph.num_classes
    own = graph.meta.get("labels") if isinstance(graph.meta, dict) else None
    if isinstance(own, (list, tuple)) and len(own) == k:
        return [str(v) for v in own]
    if k == IMAGENET_NUM_CLASSES:
        return list(imagenet_classes())
    return [f"class {i}" for i in range(k)]

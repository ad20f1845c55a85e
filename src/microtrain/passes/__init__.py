"""Passes over a TrainingGraph (autodiff.py): each a function TrainingGraph -> TrainingGraph that
returns a new step list (the Graph, i.e. the parameters, is shared, never copied) and states what
it removes or moves. The compiler runs DEFAULT_PASSES in this order:

    prune            drop steps whose results reach no update, loss or logits; drop unread masks
    fuse_updates     gradient + SGD update -> one step, placed as early as legal (no weight-
                     gradient tensor is ever stored)
    bit_masks        clamp masks become 1 bit per element
    slice_inputs     a weight-trained conv keeps only the trained input channels of its input
    mark_inplace     element-wise steps write over an input that dies there

runtime.training.TrainingRuntime runs every step kind (steps.py), those the passes introduce too, so
every pass has a test that the numbers (loss, logits, trained parameters) are unchanged.
"""
from __future__ import annotations

from .inplace import mark_inplace
from .masks import bit_masks
from .prune import prune
from .reorder import fuse_updates
from .slice_inputs import slice_inputs

DEFAULT_PASSES = (prune, fuse_updates, bit_masks, slice_inputs, mark_inplace)


def run_passes(tg, passes=DEFAULT_PASSES):
    for p in passes:
        tg = p(tg)
    return tg


__all__ = ["DEFAULT_PASSES", "run_passes", "prune", "fuse_updates", "bit_masks", "slice_inputs", "mark_inplace"]

"""Helpers shared by the passes: copying a TrainingGraph with a new step list."""
from __future__ import annotations

import copy
from dataclasses import replace


def with_steps(tg, steps, tensors=None):
    """A new TrainingGraph with `steps` (and `tensors`), sharing tg.graph (the parameters)."""
    return replace(tg, steps=list(steps), tensors=dict(tg.tensors if tensors is None else tensors))


def clone_steps(tg):
    """Deep copies of the steps (attrs may be edited without touching the input graph)."""
    return [copy.deepcopy(s) for s in tg.steps]


def last_readers(steps) -> dict[str, int]:
    last = {}
    for i, s in enumerate(steps):
        for t in s.inputs:
            last[t] = i
    return last

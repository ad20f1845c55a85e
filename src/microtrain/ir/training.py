"""The data of a training graph: Step (one operation over named tensors), TensorInfo, and Kind (what a
step kind means: its NumPy executor and its C lowering). autodiff builds the steps, the passes rewrite
them, steps.py is the table of kinds, runtime and codegen execute and lower them."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable


@dataclass
class Step:
    kind: str
    node: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict = field(default_factory=dict)


@dataclass
class TensorInfo:
    name: str
    shape: tuple  # per sample; () for scalars and labels
    dtype: str  # "int8" | "float32" | "bool" | "bit" | "int64"
    role: str  # "activation" | "mask" | "grad" | "param_grad" | "saved" | "labels" | "loss"


@dataclass(frozen=True)
class Kind:
    """One step kind. run(rt, step, values, lr, t) executes it in NumPy (rt: runtime.training.
    TrainingRuntime); lower(lx, step) returns its kernel calls (lx: codegen.lower_train.Lowering);
    None = no C lowering (a pass must rewrite it first). phase: forward | loss | backward | update.
    inplace: index of the input the output may overwrite (passes.mark_inplace), or a function
    (step, graph) -> that index or None. reads_params: reads its node's current parameters (an
    update of that node must come after it). fuses_to: the update kind a gradient and its sgd_update
    become (passes.fuse_updates). slices_input: reads only input channels attrs["channels"] of
    inputs[0] (passes.slice_inputs). c_sums: a function (step, graph) -> None, or the one-line reason
    TrainingRuntime(sums="c") cannot run the step (ops/c_sums.py has the C order of some operands only)."""

    run: Callable
    lower: Callable | None
    phase: str
    inplace: int | Callable | None = None
    reads_params: bool = False
    fuses_to: str | None = None
    slices_input: bool = False
    c_sums: Callable | None = None

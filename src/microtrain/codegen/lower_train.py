"""Lowering of a TrainingGraph (after the passes) to the kernel calls of mt_train_step.

Tensor names of the TrainingGraph become arena buffers: activations and saved inputs int8, clamp
masks 1 bit per element, gradients float32. Parameters: see ops/conv.declare (trained slices in
SRAM, frozen weights const). Each step is lowered by its kind (steps.py); the loss and label
are the C function's arguments.
"""
from __future__ import annotations

import numpy as np

from .. import steps as step_table
from ..autodiff import build_training_graph
from ..budget import DEFAULT_SRAM_BUDGET
from ..errors import GraphError
from ..ir.program import Buffer, Program, resolve_inplace
from ..passes import run_passes
from ..passes.masks import mask_nbytes
from .grouped_backward import fit_with_grouped_backward
from .inplace_depthwise import fit_with_inplace_depthwise
from .lower import Lowering, copy_in, declare_params, lower_inference
from .patch import DEFAULT_MAX_EXTRA_MACS, patch_program


def training_graph_for(graph, scheme, rounding: str = "stochastic", qas: bool = True, passes=None,
                       backward: str = "float"):
    """autodiff + the default passes: the TrainingGraph the C code implements."""
    tg = build_training_graph(graph, scheme.resolve(graph), qas=qas, rounding=rounding, backward=backward)
    return run_passes(tg) if passes is None else run_passes(tg, passes)


def _declare(prog: Program, tg, name: str) -> str:
    if name in prog.buffers:
        return name
    info = tg.tensors[name]
    if info.dtype == "bit":
        prog.add_buffer(Buffer(name, mask_nbytes(info), "uint8", "mask"))
    elif info.dtype == "bool":
        raise GraphError(f"mask {name!r} is a byte mask: run passes.bit_masks before lowering to C")
    else:
        numel = int(np.prod(info.shape)) if info.shape else 1
        dtype = {"int8": "int8", "float32": "float32"}.get(info.dtype)
        if dtype is None:
            raise GraphError(f"tensor {name!r}: dtype {info.dtype!r} has no C buffer type")
        kind = {"activation": "activation", "grad": "grad", "saved": "saved"}.get(info.role, info.role)
        prog.add_buffer(Buffer(name, numel, dtype, kind))
    return name


def build_training_program(graph, scheme, *, lr: float = 0.01, seed: int = 0, rounding: str = "stochastic",
                           qas: bool = True, passes=None, sram_budget: int | None = DEFAULT_SRAM_BUDGET,
                           patch=None, max_extra_macs: float = DEFAULT_MAX_EXTRA_MACS,
                           backward: str = "float") -> Program:
    """sram_budget: planned SRAM in bytes above which depthwise convs run in place (largest input first) until
    the model fits; None: never (codegen.inplace_depthwise). patch: None (whole tensors), 'auto' (the split
    and grid of smallest arena within max_extra_macs * the model's MACs), 'fit' (only above sram_budget: the
    fewest extra MACs that fit) or (split, (gh, gw)): the frozen prefix runs tile by tile (codegen.patch),
    before the in-place depthwise fit. backward: "float" or "int16" (integer pointwise input gradients)."""
    if graph.dtype != "int8":
        raise GraphError(f"graph {graph.name!r}: C training needs an int8 graph, got {graph.dtype}")
    tg = training_graph_for(graph, scheme, rounding, qas, passes, backward)
    trained = tg.trained
    prog = Program(graph.name, graph.input, graph.output, graph.input_spec.numel, graph.num_classes)
    prog.meta.update(scheme=scheme.name or "custom", lr=float(lr), seed=int(seed), rounding=rounding, qas=qas,
                     backward=backward)
    lx = Lowering(prog, graph, declare_params(prog, graph, trained), tg)
    prog.trainable = [c.name for c in prog.consts.values() if c.storage == "sram"]
    prog.meta["trainable_layout"] = _trainable_layout(prog, lx.layouts, graph)
    lower_inference(lx)  # the same (trainable) parameters, no masks

    steps = [copy_in(graph)]
    for s in tg.steps:
        for t in s.inputs + s.outputs:
            if t not in (tg.labels, tg.loss):
                _declare(prog, tg, t)
        lowered = step_table.lower(lx, s)
        src = s.attrs.get("inplace_of")  # marked by passes.mark_inplace; resolve_inplace re-checks it dies here
        lowered[0].inplace = (s.outputs[0], src) if src is not None else None
        steps.extend(lowered)
    prog.train_steps = steps
    prog.train_aliases = resolve_inplace(steps, protected={graph.input})
    patch_program(lx, patch, max_extra_macs, sram_budget)
    fit_with_inplace_depthwise(prog, {graph.input, graph.output}, sram_budget)
    if fit_with_grouped_backward(prog, sram_budget):  # the peak moved: in place where that helps now
        fit_with_inplace_depthwise(prog, {graph.input, graph.output}, sram_budget)
    prog.meta["training_graph"] = tg
    return prog


def _trainable_layout(prog, layouts, graph) -> list[dict]:
    """How the exported parameter blob maps back to graph parameters (in blob order)."""
    out = []
    for lay in layouts.values():
        node = graph.node(lay.node)
        if lay.weight_train is not None:
            out.append({"const": lay.weight_train, "node": lay.node, "param": "weight", "family": lay.family,
                        "channels": list(lay.train_channels), "shape": list(prog.consts[lay.weight_train].value.shape)})
        if prog.consts[lay.bias].storage == "sram":
            out.append({"const": lay.bias, "node": lay.node, "param": "bias", "shape": [node.params["bias"].shape[0]]})
    order = {n: i for i, n in enumerate(prog.trainable)}
    return sorted(out, key=lambda d: order[d["const"]])

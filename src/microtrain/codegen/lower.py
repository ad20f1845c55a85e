"""Lowering of an int8 Graph's forward pass to kernel calls (ir.program.Program).

Each op module lowers its own node (ops/<op>.py: lower) and, when it has parameters, declares them in
its kernel layout (ops/conv.py: declare). Inference and training (lower_train.py) share this forward
lowering and the input/output copies.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..budget import DEFAULT_SRAM_BUDGET
from ..errors import UnsupportedOpError
from ..ir.graph import Graph
from ..ir.program import Arg, Buffer, Program, Step, buf, lit, resolve_inplace
from ..ops import op_module
from .inplace_depthwise import fit_with_inplace_depthwise
from .patch import DEFAULT_MAX_EXTRA_MACS, patch_program


@dataclass
class Lowering:
    """What an op's or a step kind's lowering reads: the program being built, the graph, the parameter
    layouts of the ops that declared some, and (training only) the TrainingGraph."""

    prog: Program
    graph: Graph
    layouts: dict = field(default_factory=dict)
    tg: object = None


def declare_params(prog: Program, graph: Graph, trained: dict | None = None) -> dict:
    """Declare every parameterised node's constants in its kernel layout; {node: layout}. `trained` maps
    node names to their sparse.scheme.TrainSpec (trained slices live in SRAM, the rest in flash)."""
    layouts, count = {}, {}
    for node in graph.nodes:
        m = op_module(node)
        if hasattr(m, "declare"):
            idx = count.get(m.OP, 0)
            count[m.OP] = idx + 1
            layouts[node.name] = m.declare(prog, graph, node, idx, (trained or {}).get(node.name))
    return layouts


def copy_in(graph: Graph) -> Step:
    return Step("mt_copy_s8", [Arg("lit", "input"), buf(graph.input), lit(graph.input_spec.numel)], [], [graph.input],
                "input")


def copy_out(graph: Graph) -> Step:
    return Step("mt_copy_s8", [buf(graph.output), Arg("lit", "logits"), lit(graph.num_classes)], [graph.output], [],
                "output")


def declare_tensor(prog: Program, graph: Graph, name: str, kind: str = "activation") -> None:
    if name not in prog.buffers:
        prog.add_buffer(Buffer(name, graph.tensors[name].numel, "int8", kind))


def lower_forward(lx: Lowering, masks: set[str] = frozenset()) -> list[Step]:
    """Forward kernel calls of the whole graph, input copy first. `masks` = tensors whose 1-bit clamp mask
    is written (buffer '<tensor>.mask'). Ops that may write over an input (add) mark it as a candidate."""
    prog, graph = lx.prog, lx.graph
    steps = [copy_in(graph)]
    declare_tensor(prog, graph, graph.input, "io")
    for node in graph.nodes:
        mask = None
        if node.output in masks:
            mask = node.output + ".mask"
            if mask not in prog.buffers:
                prog.add_buffer(Buffer(mask, (graph.tensors[node.output].numel + 7) // 8, "uint8", "mask"))
        lower = getattr(op_module(node), "lower", None)
        if lower is None:
            raise UnsupportedOpError(f"node {node.name!r}: op {node.op!r} has no C kernel")
        declare_tensor(prog, graph, node.output)
        steps.extend(lower(lx, node, mask))
    return steps


def lower_inference(lx: Lowering) -> None:
    """mt_infer's kernel calls (and their in-place aliases) into lx.prog."""
    graph = lx.graph
    lx.prog.infer_steps = lower_forward(lx) + [copy_out(graph)]
    lx.prog.infer_aliases = resolve_inplace(lx.prog.infer_steps, protected={graph.input})


def build_inference_program(graph: Graph, sram_budget: int | None = DEFAULT_SRAM_BUDGET, patch=None,
                            max_extra_macs: float = DEFAULT_MAX_EXTRA_MACS) -> Program:
    """Program with only mt_infer (every parameter const); sram_budget, patch as in build_training_program."""
    prog = Program(graph.name, graph.input, graph.output, graph.input_spec.numel, graph.num_classes)
    lx = Lowering(prog, graph, declare_params(prog, graph))
    lower_inference(lx)
    patch_program(lx, patch, max_extra_macs, sram_budget)
    fit_with_inplace_depthwise(prog, {graph.input, graph.output}, sram_budget)
    prog.meta["layouts"] = lx.layouts
    return prog

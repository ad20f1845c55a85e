"""C99 code generation: graph (+ update scheme) -> Program -> memory plan -> C project.

    project = compile_model(graph, scheme=None, out_dir="build/mcunet")   # inference only
    project.report.text()                                                 # the memory plan
The generated directory builds with any C99 compiler (see codegen/emit.py); targets/host.py
builds it with gcc and drives it through ctypes.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..arena import ArenaPlan, MemoryReport, check_no_overlap, memory_report, plan_arena
from ..budget import DEFAULT_SRAM_BUDGET, STATE_BYTES
from ..ir.program import Program
from .emit import write_project
from .lower import build_inference_program
from .patch import DEFAULT_MAX_EXTRA_MACS
from .lower_train import build_training_program
from .scratch import check_scratch


@dataclass
class CompiledModel:
    program: Program
    infer_plan: ArenaPlan
    train_plan: ArenaPlan | None
    report: MemoryReport
    out_dir: Path | None = None


def plan_program(prog: Program) -> tuple[ArenaPlan, ArenaPlan | None, MemoryReport]:
    check_scratch(prog)  # kernels' stack work arrays must fit the stack estimate the report counts
    infer_plan = plan_arena(prog.infer_steps, prog.buffers, prog.infer_aliases)
    check_no_overlap(infer_plan)
    train_plan = None
    if prog.train_steps:
        train_plan = plan_arena(prog.train_steps, prog.buffers, prog.train_aliases)
        check_no_overlap(train_plan)
    return infer_plan, train_plan, memory_report(prog, infer_plan, train_plan, scratch_bytes=STATE_BYTES)


def build_program(graph, scheme=None, **options) -> Program:
    """Lower a graph (inference only when scheme is None, else with the training step)."""
    if scheme is None:
        prog = build_inference_program(graph, options.get("sram_budget", DEFAULT_SRAM_BUDGET),
                                       options.get("patch"), options.get("max_extra_macs", DEFAULT_MAX_EXTRA_MACS))
    else:
        prog = build_training_program(graph, scheme, **options)
    prog.meta["input_shape"] = tuple(graph.input_spec.shape)
    return prog


def compile_model(graph, scheme=None, out_dir=None, **options) -> CompiledModel:
    """Plan (and, with out_dir, emit) the C project of a graph. The report exists before any build."""
    prog = build_program(graph, scheme, **options)
    infer_plan, train_plan, report = plan_program(prog)
    result = CompiledModel(prog, infer_plan, train_plan, report)
    if out_dir is not None:
        result.out_dir = write_project(prog, infer_plan, train_plan, out_dir, report)
    return result

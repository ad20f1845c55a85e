"""`microtrain compile`: generate the C99 training engine of a model + update scheme.

    microtrain compile mcunet-5fps --scheme mcunet-5fps-49kb --classes 2 --target host --out build/mcunet
    microtrain compile mcunet-5fps --scheme none --target c --out build/infer      # inference only
    microtrain compile mcunet-5fps --scheme mcunet-5fps-49kb --classes 2 --target cortex-m7 --ram 128K \
        --out build/m7-128k        # planned for a 128 KB part: patched prefix where needed, linker-enforced

The memory plan is printed (and with --report-json written) BEFORE anything is built: arena peak,
trainable-parameter SRAM, scratch, stack estimate, flash, and the per-tensor timeline.
--target c writes the self-contained project (Makefile + sources) only; --target host also builds
libmt.so with gcc (warning-free under -std=c99 -Wall -Wextra -Werror) for Python's ctypes.
"""
from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path

from .. import cli_checks as ck
from ..budget import BOARDS, DEFAULT_SRAM_BUDGET
from ..errors import BudgetError, MicrotrainError, SchemeError
from ..targets.cortex_m.build import CORES, CPUS

TARGETS = ("host", "c", *CPUS)
COMPILED_GRAPH = "model.json"  # a project compiled from a .tflite model keeps the graph it was compiled from


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "compile",
        help="generate the C99 inference + training engine (memory plan, sources, host build)",
        description="Autodiff + passes + memory plan + C99 code generation for MODEL trained with --scheme. "
        "Prints the memory plan before any build.",
    )
    p.add_argument("model", help="model file or upstream model name (e.g. mcunet-5fps)")
    p.add_argument("--scheme", required=True,
                   help="update scheme: JSON file, shipped name (e.g. mcunet-5fps-49kb), 'full', 'bias-only', "
                        "'head-only', or 'none' (inference only)")
    p.add_argument("--target", choices=TARGETS, default="host",
                   help="host: also build libmt.so with gcc (default); c: sources only; cortex-m7 / cortex-m4 / cortex-m3 "
                        "(no FPU: software float, portable kernels): "
                        "also a firmware project (startup, linker script 256 KB SRAM / 1 MB flash, semihosting), "
                        "linked to check the budget; run it with `microtrain run`")
    p.add_argument("--out", required=True, help="output folder of the generated project")
    p.add_argument("--report-json", help="write the memory plan (with the per-tensor timeline) as JSON here")
    p.add_argument("--classes", type=ck.classes_count, help="replace the classifier by a new N-class head (zeros) first")
    p.add_argument("--resolution", type=ck.positive_int, help="input resolution (default: the model's)")
    p.add_argument("--lr", type=ck.positive_float, default=1e-3, help="compiled-in learning rate (mt_set_lr changes it; default 1e-3)")
    p.add_argument("--seed", type=ck.seed, default=0, help="stochastic-rounding seed (default 0)")
    p.add_argument("--rounding", choices=("stochastic", "nearest"), default="stochastic", help="update rounding")
    p.add_argument("--no-qas", action="store_true", help="train without quantization-aware scaling")
    p.add_argument("--backward", choices=("float", "int16"), default="float",
                   help="input-gradient arithmetic: float (default) or int16 (pointwise convs: int16 gradient x "
                        "int8 weight, exact int32 sums; docs/training-semantics.md)")
    p.add_argument("--timeline", type=ck.nonnegative_int, default=40, help="rows of the printed per-tensor timeline (0: none)")
    p.add_argument("--sram-budget", type=ck.sram_budget, default=DEFAULT_SRAM_BUDGET, metavar="KB",
                   help="planned SRAM (arena + trained parameters + stack) above which depthwise convs run in "
                   "place, largest first, until the model fits (default 254: a 256 KB part less the firmware's "
                   "own 2 KB; 'none': never; in-place convs are slower on the Cortex-M)")
    p.add_argument("--patch", default="fit", metavar="fit|auto|none|SPLIT:GHxGW",
                   help="run the frozen prefix's first nodes on spatial tiles (patch-based execution): 'fit' "
                   "(default) only when the plan exceeds the SRAM budget, with the fewest extra MACs that fit, "
                   "'auto' always (smallest arena), 'none', or nodes [0, SPLIT) on a GHxGW grid (e.g. 10:3x3)")
    p.add_argument("--max-extra-macs", default="10%", metavar="PCT",
                   help="cap on the MACs patching may add, in %% of the model's (default 10%%)")
    p.add_argument("--board", help="target part: " + ", ".join(f"{b} ({r // 1024}K/{f // 1024}K)" for b, (r, f) in
                                                              BOARDS.items()) + "; the linker enforces its memory")
    p.add_argument("--ram", type=ck.memory_size, help="the part's SRAM, e.g. 128K (overrides --board; default 256K)")
    p.add_argument("--flash", type=ck.memory_size, help="the part's flash, e.g. 1M (overrides --board; default 1M)")
    p.add_argument("--opt", default=None,
                   help="optimisation flags of the host build (default -O3 -march=native where supported)")
    p.add_argument("--force", action="store_true",
                   help="write into a folder that is not a microtrain project, or over generated files edited "
                        "since (other files are never deleted)")
    p.set_defaults(func=run)


def target_options(args):
    """((SRAM, flash) of the part or None, compile_model options) from --board/--ram/--flash/--patch."""
    from ..budget import part_memory, part_sram_budget
    from ..codegen.patch import parse_patch, parse_share
    from ..scheme_search.memory import parse_budget

    try:
        part = part_memory(args.board, args.ram and parse_budget(args.ram), args.flash and parse_budget(args.flash))
        patch, max_extra = parse_patch(args.patch), parse_share(args.max_extra_macs)
    except ValueError as e:
        raise BudgetError(str(e)) from None
    budget = args.sram_budget
    if part is not None and budget is not None:
        budget = min(budget, part_sram_budget(part[0]))
    return part, {"sram_budget": budget, "patch": patch, "max_extra_macs": max_extra}


def print_patching(program, report, graph) -> None:
    from ..codegen.patch import model_macs

    p = program.meta.get("patch")
    if p:
        total = model_macs(graph)
        print(f"patch-based prefix: nodes [0, {p['split']}) up to {p['output']} on {p['grid'][0]}x{p['grid'][1]} "
              f"tiles: arena {p['arena_before']:,} B -> {report.arena_bytes:,} B; extra MACs {p['extra_macs']:,} "
              f"({p['extra_macs'] / total:+.1%} of the model's {total:,})")


def resolve_scheme(arg: str, graph):
    from ..sparse.fixtures import load_scheme
    from ..sparse.scheme import UpdateScheme

    named = {"full": UpdateScheme.full, "bias-only": UpdateScheme.bias_only}
    if arg == "none":
        return None
    if arg in named:
        return named[arg](graph)
    if arg == "head-only":
        return UpdateScheme.head_only()
    try:
        return load_scheme(arg).validate(graph)
    except SchemeError as e:
        raise SchemeError(f"{e}; or use one of: full, bias-only, head-only, none") from None


def check_outputs(args) -> list[str]:
    """--out and --report-json, checked before any work: a folder that holds files no compile wrote, or
    generated files a user edited since, is refused without --force (and nothing is ever deleted)."""
    out = Path(args.out)
    ck.check_output_dir(out, "--out", force=args.force, owned=lambda p: ck.read_project_marker(p) is not None,
                        what=f"microtrain project (no {ck.MARKER})")
    edited = ck.edited_project_files(out) if out.is_dir() else []
    if edited and not args.force:
        raise ck.OutputError(f"--out {out}: generated files edited since microtrain wrote them: {', '.join(edited)}; "
                             "a compile would replace them: copy your changes elsewhere, or give --force")
    if args.report_json:
        ck.check_output_file(args.report_json, "--report-json", force=args.force, owned=is_memory_report)
    return edited


def is_memory_report(path: Path) -> bool:
    """A --report-json file of an earlier compile (the memory plan's JSON, the same as a project's memory.json)."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(doc, dict) and {"arena_bytes", "timeline", "training_sram_bytes"} <= set(doc)


def class_count(args, graph, scheme_classes) -> tuple[int | None, list[str] | None]:
    """(new head size or None to keep the graph's head, class names or None): --classes, else the classes
    the scheme was planned for (`microtrain plan --data` records them), else the graph's own head (a graph
    saved by `microtrain train --save` carries its class names)."""
    from ..labels import class_names

    if args.classes is not None:
        if scheme_classes and len(scheme_classes) != args.classes:
            print(f"note: scheme {args.scheme} was planned for {len(scheme_classes)} classes "
                  f"({', '.join(scheme_classes)}); compiling a {args.classes}-class head as --classes says",
                  file=sys.stderr)
        names = scheme_classes if scheme_classes and len(scheme_classes) == args.classes else None
        return args.classes, names
    if scheme_classes:
        print(f"classes: {len(scheme_classes)} ({', '.join(scheme_classes)}), from scheme {args.scheme}")
        return len(scheme_classes), list(scheme_classes)
    own = graph.meta.get("labels") if isinstance(graph.meta, dict) else None
    return None, (class_names(graph) if own else None)


def run(args) -> int:
    from ..codegen import compile_model
    from ..codegen.inplace_depthwise import INPLACE_KERNEL
    from ..models import load_model

    edited = check_outputs(args)
    graph = load_model(args.model)
    if args.resolution:
        graph = graph.with_resolution(args.resolution)
    raw = _raw_scheme(args.scheme)
    n_classes, names = class_count(args, graph, raw.classes if raw is not None else None)
    if n_classes is not None and n_classes != graph.num_classes:
        from ..quant.head import replace_head

        graph = replace_head(graph, n_classes)
    scheme = resolve_scheme(args.scheme, graph)
    part, options = target_options(args)
    if scheme is not None:
        options.update(lr=args.lr, seed=args.seed, rounding=args.rounding, qas=not args.no_qas, backward=args.backward)
    compiled = graph.copy()  # the parameters the firmware starts from (export rebuilds the trained graph on it)
    with _head_hint(args, graph):
        planned = compile_model(graph, scheme, **options)  # the plan, before anything is written or built
    print(planned.report.text(timeline=args.timeline > 0, max_rows=args.timeline))
    print_patching(planned.program, planned.report, graph)
    if part is not None:
        planned.report.check_part(*part)  # one line, before anything is built
    inplace = sorted({s.node for steps in (planned.program.infer_steps, planned.program.train_steps) for s in steps
                      if s.kernel == INPLACE_KERNEL})
    if inplace:
        print(f"in place to fit the SRAM budget: {', '.join(inplace)} (scalar kernel, one channel plane of scratch)")
    if args.report_json:
        ck.prepare_output_file(args.report_json).write_text(planned.report.to_json() + "\n")
        print(f"wrote {args.report_json}")
    from ..codegen.emit import write_project

    out = Path(args.out)
    before = ck.snapshot(out)
    project_facts = {"model": graph.name, "target": args.target, "num_classes": graph.num_classes,
                     "classes": names}
    write_project(planned.program, planned.infer_plan, planned.train_plan, out, planned.report)
    if scheme is not None and compiled.meta.get("format") == "tflite":
        from ..ir.serialize import save_graph

        save_graph(compiled, out / COMPILED_GRAPH)  # + .npz: `microtrain export PARAMS --project` reads it
    done = ck.write_project_marker(out, before, project_facts)  # now, so a failed build still leaves a marked project
    print(f"wrote {out}/ (mt_model.h, mt_model.c, kernels/, Makefile; build anywhere with `make CC=...`)")
    if edited:
        print(f"replaced your edits (--force): {_short(edited)}")
    if done["replaced"]:
        print(f"replaced {len(done['replaced'])} files of the earlier compile in {out}/: {_short(done['replaced'])}")
    if args.target == "host":
        from ..targets.host import build_host, native_opt

        opt = native_opt() if args.opt is None else args.opt
        lib = build_host(out, opt=opt)
        print(f"built {lib} (gcc -std=c99 -Wall -Wextra -Werror -ffp-contract=off {opt})")
    elif args.target.startswith("cortex-m"):
        from ..targets.cortex_m.project import budget_lines, emit_firmware

        with _head_hint(args, graph):  # LinkBudgetError when it does not fit
            build, _ = emit_firmware(out, args.target, ram=part and part[0], flash=part and part[1])
        print(f"built {build.elf} (arm-none-eabi-gcc, {args.target}; firmware/, Makefile.firmware, target.json)")
        for line in budget_lines(build, out):
            print(line)
        if scheme is not None and args.backward == "float" and not CORES[args.target].fpu:
            print(f"note: {args.target} has no FPU, so float arithmetic is software: --backward int16 makes "
                  "the backward several times shorter there (benchmarks/results/backward.md)")
    ck.write_project_marker(out, before, project_facts)
    return 0


def _short(files: list[str], n: int = 8) -> str:
    return ", ".join(files[:n]) + (f" and {len(files) - n} more" if len(files) > n else "")


def _raw_scheme(arg: str):
    """The scheme as written (before it is checked against the graph), for the facts it records."""
    from ..sparse.fixtures import load_scheme

    if arg in ("none", "full", "bias-only", "head-only"):
        return None
    try:
        return load_scheme(arg)
    except SchemeError as e:
        raise SchemeError(f"{e}; or use one of: full, bias-only, head-only, none") from None


@contextmanager
def _head_hint(args, graph):
    """A memory or link failure with a model's original 1000-class head is most often a missing --classes."""
    try:
        yield
    except MicrotrainError as e:
        if args.classes is not None or graph.num_classes < 100:
            raise
        raise BudgetError(f"{e}; the model still has its {graph.num_classes}-class head: give --classes N "
                          "(your dataset's class count) to compile a new N-class head") from None


__all__ = ["register", "run", "MicrotrainError"]

"""`microtrain run DIR --data FOLDER --steps N`: build a compiled project's Cortex-M firmware, run it under
qemu-system-arm (mps2-an500 for Cortex-M7, mps2-an386 for Cortex-M4, mps2-an385 for the FPU-less Cortex-M3), train N steps on real images streamed
from the host, evaluate on held-out images, and report loss, accuracy and executed instructions per step."""
from __future__ import annotations

import re
import sys
from pathlib import Path

from .. import cli_checks as ck
from ..errors import MicrotrainError
from ..targets.cortex_m.build import CPUS, simd_for


def register(subparsers) -> None:
    p = subparsers.add_parser("run", help="train and evaluate a compiled model on an emulated Cortex-M (QEMU)",
                              description=__doc__)
    p.add_argument("project", help="project directory made by `microtrain compile ... --target cortex-m7`")
    p.add_argument("--data", required=True, help="image folder with train/<class>/ and val/<class>/")
    p.add_argument("--steps", type=ck.nonnegative_int, default=10, help="training steps (batch 1), default 10")
    p.add_argument("--eval", type=ck.eval_count, default=20, dest="n_eval",
                   help="held-out images to evaluate after training (-1: all of val/), default 20")
    p.add_argument("--target", choices=CPUS,
                   help="default: the project's target.json, else cortex-m7")
    p.add_argument("--portable", action="store_true", help="portable C kernels only (no Cortex-M SIMD)")
    p.add_argument("--no-count", action="store_true", help="skip the instruction counter (faster)")
    p.add_argument("--timeout", type=ck.positive_float, default=1800, help="seconds before a hung guest is killed")
    p.add_argument("--seed", type=ck.seed, default=0, help="sample order")
    p.add_argument("--params-out", help="write the trained parameters (mt_export_params bytes) to this file; "
                   "`microtrain export FILE --project DIR --tflite OUT.tflite` makes a .tflite of a project compiled "
                   "from one")
    p.add_argument("--top", type=ck.positive_int, default=10, help="ops listed in the cost report")
    p.add_argument("--force", action="store_true", help="replace a --params-out file microtrain did not write")
    p.set_defaults(func=run)


def model_shape(project: Path) -> tuple[int, int, int]:
    """(resolution, classes, input channels) from the generated mt_model.h."""
    header = (project / "mt_model.h").read_text()
    defs = dict(re.findall(r"#define (MT_\w+) (-?\d+)", header))
    if int(defs["MT_INPUT_H"]) != int(defs["MT_INPUT_W"]):
        raise MicrotrainError(f"{project}: non-square input {defs['MT_INPUT_H']}x{defs['MT_INPUT_W']}")
    return int(defs["MT_INPUT_H"]), int(defs["MT_NUM_CLASSES"]), int(defs.get("MT_INPUT_C", 3))


def check_class_names(project: Path, classes: list[str]) -> None:
    """The dataset's classes must be the ones the project was compiled for, in the same order (recorded by
    `microtrain compile` when the scheme or the trained graph named them): else labels would be silently
    swapped."""
    expected = (ck.read_project_marker(project) or {}).get("classes")
    if expected and list(expected) != list(classes):
        raise MicrotrainError(f"{project} was compiled for the classes {', '.join(expected)}, the data has "
                              f"{', '.join(classes)}")


def run(args) -> int:
    from ..targets.cortex_m.data import session_data
    from ..targets.cortex_m.project import budget_lines, build_project, read_target
    from ..targets.cortex_m.session import cost_report, run_session

    project = Path(args.project)
    if args.params_out:
        ck.check_output_file(args.params_out, "--params-out", force=args.force, owned=lambda p: False)
    if not (project / "mt_model.c").exists():
        raise MicrotrainError(f"{project}: no mt_model.c; create the project with "
                              "`microtrain compile MODEL --scheme S --classes N --target cortex-m7 --out DIR`")
    target = read_target(project)
    cpu = args.target or target.get("target", "cortex-m7")
    simd = simd_for(cpu, not args.portable and target.get("simd", True))
    ck.check_output_dir(project / f"build-{cpu}", "project", force=True)
    resolution, num_classes, channels = model_shape(project)

    # the data first: a bad folder fails before the firmware build; undecodable training images are
    # reported now and replaced by others, so the run trains exactly --steps steps
    train, evaluate, classes, skipped = session_data(args.data, resolution, num_classes, args.steps, args.n_eval,
                                                     args.seed, channels)
    check_class_names(project, classes)
    for path, reason in skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    if skipped:
        print(f"{len(skipped)} undecodable files left out; still {args.steps} training steps", file=sys.stderr)

    build, regions = build_project(project, project / f"build-{cpu}", cpu, simd=simd,
                                   stack_size=target.get("stack_size"), ram_limit=target.get("ram"),
                                   flash_limit=target.get("flash"))
    print(f"firmware {build.elf} ({cpu}, {'SIMD' if simd else 'portable'} kernels)")
    for line in budget_lines(build, project):
        print(line)

    print(f"data: {len(train[0])} training steps, {len(evaluate[0])} held-out images, classes {', '.join(classes)}")

    s = run_session(build.elf, cpu, train=train if len(train[0]) else None,
                    evaluate=evaluate if len(evaluate[0]) else None, timeout=args.timeout,
                    count=not args.no_count, check=False)
    for i, loss in enumerate(s.losses):
        print(f"step {i + 1:4d}  loss {loss:.4f}")
    if s.losses:
        k = max(1, len(s.losses) // 4)
        first, last = sum(s.losses[:k]) / k, sum(s.losses[-k:]) / k
        print(f"mean loss: first {k} steps {first:.4f} -> last {k} steps {last:.4f}")
    if s.evaluated:
        print(f"held-out accuracy: {s.correct}/{s.evaluated} = {s.accuracy:.1%}")
    if s.stack_used is not None:
        print(f"stack high-water mark: {s.stack_used} B of {build.usage.stack} B")
    if s.instructions is not None:
        for function in ("train", "infer"):
            report = cost_report(s.instructions, regions, function)
            if report:
                print(report.text(top=args.top))
    if args.params_out and s.params:
        ck.prepare_output_file(args.params_out).write_bytes(s.params)
        print(f"trained parameters: {len(s.params)} bytes -> {args.params_out}")
    if s.status != 0:
        errors = [ln for ln in s.stdout.splitlines() if ln.startswith("error:") or "fault" in ln]
        print(f"firmware exited with status {s.status}" + (": " + "; ".join(errors) if errors else ""),
              file=sys.stderr)
    return s.status

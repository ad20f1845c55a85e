"""`microtrain demo`: the embedded default (no network, no data files): pretrain, quantise, and adapt a
small CNN on-device to unseen digits. See microtrain/demo/pipeline.py."""
from __future__ import annotations

from pathlib import Path

from .. import cli_checks as ck


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo", help="pretrain, quantise and adapt a small int8 CNN on-device to unseen digits (no network needed)",
        description="Pretrains a small MCU-sized CNN on digits 0-5 (scikit-learn's bundled digits), quantises it "
                    "to int8, searches a sparse update under a memory budget, and adapts it to digits 6-9 with "
                    "int8 QAS, compiled to C and trained through the generated C (and under QEMU when the Arm "
                    "toolchain is installed). Prints a report and saves PNG plots.")
    p.add_argument("--out", type=Path, default=Path("microtrain-demo-out"), help="output folder (default: %(default)s)")
    p.add_argument("--budget", type=ck.memory_size, default="6KB", help="extra training memory for the sparse update (default: %(default)s)")
    p.add_argument("--pretrain", choices=("auto", "numpy", "torch"), default="auto",
                   help="pretraining backend: torch when installed, else microtrain's float runtime (default: auto)")
    p.add_argument("--fast", action="store_true", help="a shorter run (fewer epochs and analysis runs)")
    p.add_argument("--seed", type=ck.seed, default=0)
    p.add_argument("--no-c", action="store_true", help="skip compiling to C and training through it")
    p.add_argument("--no-qemu", action="store_true", help="skip the Cortex-M7 run under QEMU")
    p.add_argument("--no-plots", action="store_true", help="do not write PNG plots")
    p.add_argument("--force", action="store_true",
                   help="write into a non-empty --out folder that holds other files than the demo's (they are kept)")
    p.set_defaults(func=run)


# what the demo writes into --out: a folder holding only these is an earlier demo's
OUTPUTS = {"results.json", "adapted-int8.json", "adapted-int8.npz", "contribution-cache", "c-project", "firmware",
           "loss_curve.png", "accuracy_vs_memory.png", "memory_timeline.png"}


def is_demo_folder(path: Path) -> bool:
    return all(p.name in OUTPUTS for p in path.iterdir())


def run(args) -> int:
    from ..demo.pipeline import DemoConfig, run_demo
    from ..demo.report import format_report

    ck.check_output_dir(args.out, "--out", force=args.force, owned=is_demo_folder, what="microtrain demo output")

    cfg = DemoConfig(out_dir=args.out, fast=args.fast, pretrain=args.pretrain, budget=args.budget, seed=args.seed,
                     compile_c=not args.no_c, qemu=not args.no_qemu, plots=not args.no_plots)
    result = run_demo(cfg, log=lambda msg: print(msg, flush=True))
    print()
    print(format_report(result))
    return 0

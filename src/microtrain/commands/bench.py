"""`microtrain bench`: run every benchmark against the anchors (memory, step time, Cortex-M instructions,
accuracy tables) and write benchmarks/results/bench_*.json, the plots and headline.md.

    microtrain bench [--quick] [--accuracy auto|reuse|rerun|skip]
                     [--skip memory host cortexm patching accuracy tflite] [--reuse memory host cortexm]
                     [--update-readme]

The benchmarks live in the source checkout (benchmarks/run_all.py), not in the installed package: this
verb finds them next to the package's source tree, or in $MICROTRAIN_REPO.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ..errors import MicrotrainError


def find_run_all() -> Path:
    candidates = []
    if os.environ.get("MICROTRAIN_REPO"):
        candidates.append(Path(os.environ["MICROTRAIN_REPO"]) / "benchmarks" / "run_all.py")
    candidates.append(Path(__file__).resolve().parents[3] / "benchmarks" / "run_all.py")  # src/microtrain/commands
    for c in candidates:
        if c.is_file():
            return c
    raise MicrotrainError("benchmarks/run_all.py not found (looked at " + ", ".join(map(str, candidates))
                          + "): `microtrain bench` needs the source checkout; set MICROTRAIN_REPO to it")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "bench", help="benchmarks vs PyTorch and upstream: memory, step time, Cortex-M instructions, accuracy",
        description="Run benchmarks/run_all.py: PyTorch peak training memory vs microtrain SRAM, host step time "
        "vs PyTorch, instructions per step on the emulated Cortex-M7 vs upstream and the MAC lower bound, and the "
        "accuracy tables; writes benchmarks/results/bench_*.json, *.png and headline.md (under 30 min on 2 cores).")
    p.add_argument("--quick", action="store_true", help="reduced settings (fewer steps, no firmware link), written to benchmarks/results/quick/ "
                        "(the full results and the README are left as they are)")
    p.add_argument("--accuracy", choices=("auto", "reuse", "rerun", "skip"), default="auto",
                   help="auto (default): reuse the accuracy experiments' results when newer than their code, "
                        "else run them with reduced settings; the output says which")
    p.add_argument("--skip", nargs="*", default=[],
                   choices=("memory", "host", "cortexm", "patching", "accuracy", "tflite"),
                   help="steps to leave out")
    p.add_argument("--reuse", nargs="*", default=[], choices=("memory", "host", "cortexm"),
                   help="steps whose committed benchmarks/results/bench_*.json is shown instead of measuring now "
                        "(e.g. host timings on a loaded machine); the headline names them")
    p.add_argument("--update-readme", action="store_true",
                   help="also copy the headline tables into README.md (between its bench markers)")
    p.set_defaults(func=run)


def run(args) -> int:
    script = find_run_all()
    cmd = [sys.executable, str(script), "--accuracy", args.accuracy]
    if args.quick:
        cmd.append("--quick")
    if args.skip:
        cmd += ["--skip", *args.skip]
    if args.reuse:
        cmd += ["--reuse", *args.reuse]
    if args.update_readme:
        cmd.append("--update-readme")
    return subprocess.run(cmd, cwd=script.parent.parent).returncode

"""The vowels demo's 1-D CNN on the Cortex-M4 under QEMU: instructions per training step and per inference,
portable kernels vs the Cortex-M SIMD kernels (the same generated project, side by side), and the linked
SRAM/flash. Needs the project `microtrain demo --task vowels --out D` wrote (D/c-project).

    nice -n 10 python benchmarks/bench_vowels_m4.py D [--steps 4] [--save]

--save writes benchmarks/results/vowels.json: the demo's results (D/results.json: the adaptation table, the
searched scheme, the device check) with these rows, the commands and the numerics fingerprint; `microtrain
bench` copies its tables into the README from there (it never re-runs the experiment).
"""
from __future__ import annotations

import argparse
import json
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    from microtrain.demo.vowels import LENGTH
    from microtrain.targets.cortex_m.project import build_project
    from microtrain.targets.cortex_m.session import cost_report, run_session

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("demo_out", type=Path)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--save", action="store_true", help="write benchmarks/results/vowels.json (see above)")
    args = ap.parse_args(argv)
    project = args.demo_out / "c-project"
    if args.save and not (args.demo_out / "results.json").is_file():
        ap.error(f"{args.demo_out / 'results.json'} not found: --save needs a finished `microtrain demo --task vowels`")
    rng = np.random.default_rng(0)
    x = rng.integers(-128, 128, (args.steps, 1, LENGTH, 12)).astype(np.int8)  # JapaneseVowels: 12 channels
    y = rng.integers(0, 4, args.steps)
    rows = {}
    for simd in (False, True):
        build, regions = build_project(project, args.demo_out / f"bench-m4-{'simd' if simd else 'portable'}",
                                       "cortex-m4", simd=simd)
        s = run_session(build.elf, "cortex-m4", train=(x, y), evaluate=(x[:1], y[:1]), count=True, timeout=600)
        step, infer = cost_report(s.instructions, regions, "train"), cost_report(s.instructions, regions, "infer")
        rows["cortex-m" if simd else "portable"] = dict(per_step=step.per_call, per_inference=infer.per_call,
                                                        sram=build.usage.ram, flash=build.usage.flash,
                                                        params=s.params, step_by_kernel=step.by_kernel)
    p, f = rows["portable"], rows["cortex-m"]
    print(f"{'kernels':10s} {'instr/step':>12s} {'instr/infer':>12s} {'SRAM B':>8s} {'flash B':>8s}")
    for k, r in rows.items():
        print(f"{k:10s} {r['per_step']:12,.0f} {r['per_inference']:12,.0f} {r['sram']:8,d} {r['flash']:8,d}")
    print(f"portable / Cortex-M: {p['per_step'] / f['per_step']:.2f}x per step, "
          f"{p['per_inference'] / f['per_inference']:.2f}x per inference; "
          f"trained parameters identical: {p['params'] == f['params']}")
    print("share of the SIMD build's training step by kernel:")
    for k, n in sorted(f["step_by_kernel"].items(), key=lambda kv: -kv[1]):
        print(f"  {k:40s} {n:12,.0f} {n / f['per_step']:7.2%}")
    if args.save:
        print(f"wrote {save(args.demo_out, rows, args.steps)}")
    return 0


RESULT = Path(__file__).resolve().parent / "results" / "vowels.json"


def save(demo_out: Path, rows: dict, steps: int, path: Path = RESULT) -> Path:
    """The demo's results and the M4 rows as one record, stamped like the accuracy experiments' results."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from numerics_fingerprint import numerics_fingerprint

    demo = json.loads((demo_out / "results.json").read_text())
    demo.get("pretrain", {}).pop("losses", None)  # 60 per-epoch losses: not needed for the tables
    commit = subprocess.run(["git", "-C", str(path.parent), "rev-parse", "HEAD"], capture_output=True, text=True)
    doc = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "commands": {"demo": "MICROTRAIN_SHARED=<shared> microtrain demo --task vowels --out D",
                        "m4": f"nice -n 10 python benchmarks/bench_vowels_m4.py D --steps {steps} --save"},
           "git_commit": commit.stdout.strip() or None, "numerics_fingerprint": numerics_fingerprint(),
           "demo": demo,
           "m4": {"steps": steps, "cpu": "cortex-m4 (qemu mps2-an386)",
                  "params_identical": rows["portable"]["params"] == rows["cortex-m"]["params"],
                  **{k: {f: v for f, v in r.items() if f != "params"} for k, r in rows.items()}}}
    path.write_text(json.dumps(doc, indent=1, default=str) + "\n")
    return path


if __name__ == "__main__":
    raise SystemExit(main())

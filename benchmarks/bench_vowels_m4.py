"""The vowels demo's 1-D CNN on the Cortex-M4 under QEMU: instructions per training step and per inference,
portable kernels vs the Cortex-M SIMD kernels (the same generated project, side by side), and the linked
SRAM/flash. Needs the project `microtrain demo --task vowels --out D` wrote (D/c-project).

    nice -n 10 python benchmarks/bench_vowels_m4.py D [--steps 4]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    from microtrain.demo.vowels import LENGTH
    from microtrain.targets.cortex_m.project import build_project
    from microtrain.targets.cortex_m.session import cost_report, run_session

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("demo_out", type=Path)
    ap.add_argument("--steps", type=int, default=4)
    args = ap.parse_args(argv)
    project = args.demo_out / "c-project"
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
                                                        params=s.params)
    p, f = rows["portable"], rows["cortex-m"]
    print(f"{'kernels':10s} {'instr/step':>12s} {'instr/infer':>12s} {'SRAM B':>8s} {'flash B':>8s}")
    for k, r in rows.items():
        print(f"{k:10s} {r['per_step']:12,.0f} {r['per_inference']:12,.0f} {r['sram']:8,d} {r['flash']:8,d}")
    print(f"portable / Cortex-M: {p['per_step'] / f['per_step']:.2f}x per step, "
          f"{p['per_inference'] / f['per_inference']:.2f}x per inference; "
          f"trained parameters identical: {p['params'] == f['params']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Cortex-M7 instructions of one training step per op, step 1 and step 2 apart (Cortex-M kernels), for
mcunet-5fps (49 KB scheme), mbv2-w0.35 and proxyless-w0.3 as bench_cortexm.models_table builds them.

bench_cortexm's figure is the mean of a 2-step session. Since the fast pointwise input gradient skips output
channels whose gradient is +0.0 everywhere, the steps differ: on step 1 the new 2-class head is all zero, so is
every gradient behind it, and the backward is nearly free; step 2 is the steady state. Step 1 is measured by a
1-step session, step 2 = 2 * (2-step mean) - step 1 (per op the same way). Writes
benchmarks/results/bench_cortexm_steps.json.

    nice -n 10 python benchmarks/bench_cortexm_steps.py [mcunet-5fps,mbv2-w0.35,proxyless-w0.3]
"""
from __future__ import annotations

import json
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_cortexm as bench  # noqa: E402


def step_ops(build, regions, steps: int) -> tuple[float, dict[str, float]]:
    from microtrain.targets.cortex_m.data import session_data
    from microtrain.targets.cortex_m.session import cost_report, run_session

    train, evaluate, _, _ = session_data(bench.DATA, 128, 2, steps=steps, n_eval=1, seed=0)
    s = run_session(build.elf, "cortex-m7", train=train, evaluate=evaluate, count=True, timeout=1200)
    step = cost_report(s.instructions, regions, "train")
    ops = defaultdict(float)
    for phase, node, kernel, n, _ in step.by_op:
        ops[f"{phase}|{node}|{kernel}"] += n
    return step.per_call, dict(ops)


def main() -> int:
    from microtrain.targets.cortex_m.project import build_project

    names = sys.argv[1].split(",") if len(sys.argv) > 1 else ["mcunet-5fps", "mbv2-w0.35", "proxyless-w0.3"]
    setups = {}
    for name, make in bench.model_setups(quick=False):
        setups.setdefault(name, make)  # mcunet-5fps: the 49 KB scheme (listed first)
    out = {"command": " ".join(sys.argv)}
    with tempfile.TemporaryDirectory(prefix="bench-steps-") as tmp:
        for name in names:
            project = Path(tmp) / name
            bench.compile_project(name, setups[name], project)
            build, regions = build_project(project, project / "build", "cortex-m7", simd=True)
            mean, ops2 = step_ops(build, regions, 2)
            step1, ops1 = step_ops(build, regions, 1)
            ops_step2 = {k: 2 * v - ops1.get(k, 0.0) for k, v in ops2.items()}
            out[name] = dict(mean_of_2=mean, step1=step1, step2=2 * mean - step1, ops_step1=ops1, ops_step2=ops_step2)
            print(f"{name}: 2-step mean {mean / 1e6:.3f} M, step 1 {step1 / 1e6:.3f} M, step 2 "
                  f"{(2 * mean - step1) / 1e6:.3f} M instructions", flush=True)
    path = bench.REPO / "benchmarks" / "results" / "bench_cortexm_steps.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

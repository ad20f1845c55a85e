"""Patch-based execution of the frozen prefix (codegen/patch.py): SRAM and cost, before and after, side by side.

    nice -n 19 python benchmarks/bench_patching.py [--configs mcunet-49kb ...] [--no-qemu] [--max-extra-macs 10%]

For each configuration (2-class head): the plan as compiled today ("before": no patching, the default
256 KB part) and planned for a smaller part ("after": `compile --patch fit --ram R`, i.e. the frozen prefix
on tiles and depthwise convs in place where the plan exceeds the part). Measured: planned SRAM (report
total), SRAM as linked for the Cortex-M7 (arm-none-eabi-gcc; the "after" firmware is linked with the part's
RAM, so the linker enforces it), extra MACs, and, under QEMU, the instructions of one training step (mean of
2 steps on ants/bees images; the SIMD kernels), with the ratio after/before. Results are written after each
configuration to benchmarks/results/bench_patching.json (and .md).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "bench_patching.json"
KB = 1024
# name -> (model, scheme: shipped name or "like-49kb", RAM of the part planned for "after", cap of the extra
# prefix MACs when --max-extra-macs is not given (None: 10 %). The 99 KB scheme needs 15 %: with 10 % the tiled
# prefix's peak (the whole input image + a 3x3 tile: a 92,200 B arena) stays above the 87,240 B a 160 KB part
# leaves it, with 15 % (4x4 tiles) it is 84,584 B (`--configs mcunet-99kb --max-extra-macs 10% --no-qemu`).
CONFIGS = {
    "mcunet-49kb": ("mcunet-5fps", "mcunet-5fps-49kb", 128 * KB, None),
    "mcunet-99kb": ("mcunet-5fps", "mcunet-5fps-99kb", 160 * KB, "15%"),
    "mbv2-49kb-like": ("mbv2-w0.35", "like-49kb", 160 * KB, None),
    "proxyless-49kb-like": ("proxyless-w0.3", "like-49kb", 160 * KB, None),
}


def _scheme(graph, name):
    from microtrain.sparse.fixtures import load_scheme
    from microtrain.sparse.scheme import UpdateScheme

    if name == "like-49kb":  # tests/conftest.py like_mcunet_49kb (bench_memory.py's sparse scheme)
        n = len(graph.indexed_convs())
        return UpdateScheme(20, {n - 18: 0.25, n - 15: 0.5, n - 12: 0.5}, name="like-mcunet-49kb")
    return load_scheme(name).validate(graph)


def _measure(graph, scheme, out: Path, options: dict, ram: int | None, qemu: bool, data) -> dict:
    from microtrain.budget import part_sram_budget
    from microtrain.codegen import compile_model
    from microtrain.codegen.patch import model_macs
    from microtrain.targets.cortex_m.build import LinkBudgetError
    from microtrain.targets.cortex_m.project import emit_firmware, load_regions
    from bench_cortexm import steady_step

    cm = compile_model(graph, scheme, out_dir=out, **options)
    r = cm.report
    patch = cm.program.meta.get("patch")
    row = {"arena_bytes": r.arena_bytes, "planned_sram_bytes": r.total_sram_bytes,
           "patch": None if patch is None else {k: patch[k] for k in ("split", "grid", "output", "extra_macs")},
           "extra_macs": 0 if patch is None else patch["extra_macs"], "model_macs": model_macs(graph),
           "inplace": sorted({f"{s.node} ({s.kernel})" for s in cm.program.train_steps + cm.program.infer_steps
                              if "inplace" in s.kernel}),
           "grouped_backward": [s.node for s in cm.program.train_steps if s.kernel == "mt_block_grad_grouped_f32"]}
    if ram < 4096 * KB:  # a real part: the arena it leaves beside the trained parameters, state and stack
        row["arena_limit"] = part_sram_budget(ram) - (r.total_sram_bytes - r.arena_bytes)
    row["peaks"] = peak_steps(cm)
    try:
        build, _ = emit_firmware(out, "cortex-m7", ram=ram, flash=1024 * KB)
        row["fits_part"] = True
    except LinkBudgetError as e:  # measure anyway: linked with QEMU's 4 MB (a measurement-only build)
        row["fits_part"], row["link_error"] = False, str(e)
        build, _ = emit_firmware(out, "cortex-m7", ram=4096 * KB, flash=1024 * KB)
    row["linked_sram_bytes"] = build.usage.ram
    if qemu:
        # steps 2..STEADY_STEPS (step 1 behind the zero head has an all-zero backward): bench_cortexm.steady_step
        cost, _, _, s = steady_step(build.elf, "cortex-m7", load_regions(out / "build-cortex-m7"), data, None)
        row["instructions_per_step"] = cost.per_call
        row["instructions_by_phase"] = cost.by_phase
        row["params_sha"] = __import__("hashlib").sha256(s.params).hexdigest()
    return row


def peak_steps(cm, n: int = 6) -> list[dict]:
    """The n steps (inference and training program) with the most live arena bytes, one per (node, kernel),
    with their three largest live buffers: the places a smaller arena has to change."""
    found = {}
    for program, steps, plan in (("infer", cm.program.infer_steps, cm.infer_plan),
                                 ("train", cm.program.train_steps, cm.train_plan)):
        for i, s in enumerate(steps):
            live = plan.live_at(i)
            key = (program, s.node, s.kernel)
            total = sum(live.values())
            if total > found.get(key, {}).get("live_bytes", -1):
                top = sorted(live.items(), key=lambda kv: -kv[1])[:3]
                found[key] = {"program": program, "step": i, "node": s.node, "kernel": s.kernel, "live_bytes": total,
                              "largest": [f"{b} {v}" for b, v in top]}
    return sorted(found.values(), key=lambda d: -d["live_bytes"])[:n]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", nargs="*", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--no-qemu", action="store_true", help="plan and link only (no instruction counts)")
    ap.add_argument("--max-extra-macs", default=None, help="cap of every configuration (default: its own, else 10%%)")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)

    from microtrain.budget import part_sram_budget
    from microtrain.codegen.patch import parse_share
    from microtrain.models import load_model
    from microtrain.quant.head import replace_head
    from bench_cortexm import STEADY_STEPS
    from microtrain.targets.cortex_m.data import session_data

    out_path = Path(args.out)
    doc = json.loads(out_path.read_text()) if out_path.exists() else {}
    doc.update(date=datetime.now(timezone.utc).isoformat(timespec="seconds"), max_extra_macs=args.max_extra_macs)
    doc.setdefault("configs", {})
    data_root = Path(__import__("os").environ.get("MICROTRAIN_SHARED", HERE.parent.parent / "shared")) / "data"
    for name in args.configs:
        model, scheme_name, ram, own_cap = CONFIGS[name]
        cap = args.max_extra_macs or own_cap or "10%"
        graph = replace_head(load_model(model), 2)
        scheme = _scheme(graph, scheme_name)
        data = None
        if not args.no_qemu:
            train, _, _, _ = session_data(data_root / "hymenoptera_data", graph.resolution, 2, steps=STEADY_STEPS,
                                          n_eval=0, seed=1)
            data = train
        with tempfile.TemporaryDirectory(prefix="mt-bench-patch-") as tmp:
            before = _measure(graph, scheme, Path(tmp) / "before", {}, 4096 * KB, not args.no_qemu, data)
            after = _measure(graph, scheme, Path(tmp) / "after",
                             {"patch": "fit", "max_extra_macs": parse_share(cap), "sram_budget": part_sram_budget(ram)},
                             ram, not args.no_qemu, data)
        row = {"model": model, "scheme": scheme_name, "part_ram": ram, "date": doc["date"],
               "max_extra_macs": cap, "before": before, "after": after}
        if "instructions_per_step" in before:
            row["extra_instructions_ratio"] = after["instructions_per_step"] / before["instructions_per_step"] - 1
            row["same_params"] = before["params_sha"] == after["params_sha"]
        doc["configs"][name] = row
        own = [f"{n}: {r['max_extra_macs']}" for n, r in doc["configs"].items()
               if r.get("max_extra_macs", "10%") != "10%"]
        doc["max_extra_macs"] = "10%" + (f" ({', '.join(own)})" if own else "")
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(doc, indent=1) + "\n")
        out_path.with_suffix(".md").write_text(table(doc) + "\n")
        print(table({"configs": {name: row}}).splitlines()[-1], flush=True)
    print(table(doc))
    return 0


def table(doc) -> str:
    lines = ["| config | part RAM | planned SRAM before -> after | linked SRAM before -> after | extra MACs | "
             "instructions/step before -> after | same params |",
             "|---|---|---|---|---|---|---|"]
    for name, r in doc["configs"].items():
        b, a = r["before"], r["after"]
        ins = "-"
        if "instructions_per_step" in b:
            ins = (f"{b['instructions_per_step']:,} -> {a['instructions_per_step']:,} "
                   f"({r['extra_instructions_ratio']:+.1%})")
        lines.append(
            f"| {name} | {r['part_ram'] // KB} KB | {b['planned_sram_bytes']:,} -> {a['planned_sram_bytes']:,} B | "
            f"{b['linked_sram_bytes']:,} -> {a['linked_sram_bytes']:,} B ({a['linked_sram_bytes'] / KB:.1f} KB"
            f"{'' if a.get('fits_part', True) else ', does NOT fit'}) | "
            f"{a['extra_macs']:,} ({a['extra_macs'] / a['model_macs']:+.1%}) | {ins} | {r.get('same_params', '-')} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

"""What a grouped backward of inverted-residual blocks would save: the planner's answer, before it is built.

    nice -n 19 python benchmarks/whatif_grouped_backward.py [--config mcunet-99kb] [--blocks blocks.9 blocks.10]
                                                          [--group 8] [--max-extra-macs 10% 15%]

Plans bench_patching.py's "after" build of a configuration (`compile --patch fit --ram R`, no firmware) and plans
it again with the float gradients of the named blocks' expanded tensors (the depthwise conv's input and output:
`grad[_acc]:<block>.pointwise1[.out]`, `grad[_acc]:<block>.depthwise[.out]`) only `--group` channels wide, which
is what they would be if each block's backward ran by groups of expanded channels (the pointwise2 input
gradient, the depthwise gradient and the pointwise1 updates of one group, the pointwise1 input gradient
accumulated group by group). Nothing else changes (the same steps and in-place decisions), so the figures are the
planner's arena for that memory layout, not a measured build. Prints, per MAC cap of the tiled prefix: the
arena of both programs, the arena the part leaves, and the steps with the most live bytes.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
KB = 1024


def shrink_expanded_grads(prog, blocks: list[str], group: int) -> list[str]:
    """Set the gradient buffers of each block's expanded tensors to `group` channels; returns their names."""
    tg = prog.meta["training_graph"]
    done = []
    for name, b in prog.buffers.items():
        stem = name.split(":", 1)[-1]
        if not name.startswith(("grad:", "grad_acc:")) or b.dtype != "float32":
            continue
        for block in blocks:
            if stem in (f"{block}.pointwise1.out", f"{block}.pointwise1", f"{block}.depthwise.out", f"{block}.depthwise"):
                c = tg.tensors[name].shape[-1]
                b.numel = b.numel // c * min(group, c)
                done.append(name)
    return done


def main(argv=None) -> int:
    from bench_patching import CONFIGS, _scheme, peak_steps
    from microtrain.arena import plan_arena
    from microtrain.budget import part_sram_budget
    from microtrain.codegen import CompiledModel, build_program, plan_program
    from microtrain.codegen.patch import model_macs, parse_share
    from microtrain.models import load_model
    from microtrain.quant.head import replace_head

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="mcunet-99kb", choices=list(CONFIGS))
    ap.add_argument("--blocks", nargs="*", default=["blocks.9", "blocks.10"])
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--max-extra-macs", nargs="*", default=["10%", "15%"])
    args = ap.parse_args(argv)

    model, scheme_name, ram = CONFIGS[args.config]
    graph = replace_head(load_model(model), 2)
    scheme = _scheme(graph, scheme_name)
    for cap in args.max_extra_macs:
        prog = build_program(graph, scheme, patch="fit", max_extra_macs=parse_share(cap),
                             sram_budget=part_sram_budget(ram))
        infer_plan, train_plan, report = plan_program(prog)
        limit = part_sram_budget(ram) - (report.total_sram_bytes - report.arena_bytes)
        patch = prog.meta["patch"]
        print(f"cap {cap}: tiling {patch['split']}:{patch['grid'][0]}x{patch['grid'][1]} "
              f"(+{patch['extra_macs'] / model_macs(graph):.1%} MACs); arena limit of the {ram // KB} KB part {limit:,} B")
        print(f"  as built: infer {infer_plan.size:,} B, train {train_plan.size:,} B")
        shrunk = shrink_expanded_grads(prog, args.blocks, args.group)
        infer_plan = plan_arena(prog.infer_steps, prog.buffers, prog.infer_aliases)
        train_plan = plan_arena(prog.train_steps, prog.buffers, prog.train_aliases)
        arena = max(infer_plan.size, train_plan.size)
        print(f"  {', '.join(args.blocks)} by groups of {args.group} ({len(shrunk)} buffers narrowed): "
              f"infer {infer_plan.size:,} B, train {train_plan.size:,} B -> "
              f"{'fits' if arena <= limit else f'{arena - limit:,} B over'}")
        for p in peak_steps(CompiledModel(prog, infer_plan, train_plan, report), 4):
            print(f"    {p['program']} step {p['step']} {p['node']} {p['kernel']}: {p['live_bytes']:,} B "
                  f"({'; '.join(p['largest'])})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

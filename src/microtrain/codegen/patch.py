"""Patch-based execution of the frozen prefix in C (patching.py has the geometry, runtime/patched.py the
NumPy reference).

The kernel calls of nodes [0, split) are replaced, in mt_infer and in mt_train_step alike, by one
unrolled run per tile: window copies (mt_window_s8: the halo and the zero-point padding a tile reads),
each node's own kernel on tile-sized buffers with padding 0 (the op's `lower_tile`), and the paste of the
tile into the whole split tensor (mt_paste_s8). Tile buffers are ordinary arena buffers, so the planner
sizes the prefix by the tile; the in-place depthwise pass sees tile convs like any other.

`choose_patching` tries split points and grids, keeps those whose extra MACs stay under a cap (a fraction
of the model's MACs) and picks the one with the smallest arena ('auto'), or for 'fit' the one with the fewest
extra MACs whose arena fits the part (the smallest arena when none does before the in-place depthwise fit).
"""
from __future__ import annotations

import dataclasses

from ..arena import plan_arena
from ..budget import STACK_ESTIMATE, STATE_BYTES
from ..errors import GraphError
from ..ir.program import Buffer, Step, buf, lit, resolve_inplace
from ..ops import op_module
from ..patching import PatchPlan, check_split, plan_patches, window_shape

WINDOW_KERNEL, PASTE_KERNEL = "mt_window_s8", "mt_paste_s8"
GRIDS = [(a, b) for a in range(1, 7) for b in range(1, 7) if abs(a - b) <= 1 and a * b > 1]
DEFAULT_MAX_EXTRA_MACS = 0.10  # of the whole model's MACs: see docs/architecture.md (patch-based execution)


def _declare(prog, name: str, numel: int) -> str:
    if name not in prog.buffers:
        prog.add_buffer(Buffer(name, numel, "int8", "activation"))
    return name


def lower_tiles(lx, plan: PatchPlan) -> list[Step]:
    """The kernel calls that compute the split tensor tile by tile."""
    prog, graph = lx.prog, lx.graph
    h_in, w_in = graph.input_spec.shape[:2]
    steps = []
    for tile in plan.tiles:
        k = tile.index
        have = {graph.input: (graph.input, ((0, h_in), (0, w_in)))}
        for tn in tile.nodes:
            node = tn.node
            ins, in_shapes = [], []
            for t, want in zip(node.inputs, tn.reads):
                src, win = have[t]
                c = graph.tensors[t].shape[2]
                shape = window_shape(want, c)
                if win != want:
                    name = _declare(prog, f"{t}@t{k}:{node.name}", shape[0] * shape[1] * c)
                    sh, sw, _ = window_shape(win, c)
                    r0, c0 = want[0][0] - win[0][0], want[1][0] - win[1][0]
                    zero = graph.tensors[t].quant.zero_point
                    pads_only = r0 <= 0 and c0 <= 0 and r0 + shape[0] >= sh and c0 + shape[1] >= sw
                    steps.append(Step(WINDOW_KERNEL, [buf(src), lit(sh), lit(sw), lit(c), lit(r0), lit(c0), buf(name),
                                                      lit(shape[0]), lit(shape[1]), lit(zero)],
                                      [src], [name], node.name, inplace=(name, src) if pads_only else None))
                    src = name
                ins.append(src)
                in_shapes.append(shape)
            out_shape = window_shape(tn.out, graph.tensors[node.output].shape[2])
            out = _declare(prog, f"{node.output}@t{k}", out_shape[0] * out_shape[1] * out_shape[2])
            steps.extend(op_module(node).lower_tile(lx, node, ins, in_shapes, out, out_shape))
            have[node.output] = (out, tn.out)
        src, ((r0, r1), (c0, c1)) = have[plan.output]
        h, w, c = graph.tensors[plan.output].shape
        steps.append(Step(PASTE_KERNEL, [buf(src), lit(r1 - r0), lit(c1 - c0), lit(c), buf(plan.output), lit(w),
                                         lit(r0), lit(c0)], [src], [plan.output], tile.nodes[-1].node.name))
    return steps


def _splice(steps: list[Step], plan: PatchPlan, prefix: set[str], tiles: list[Step]) -> list[Step]:
    """`steps` with the prefix's kernel calls replaced by `tiles`; GraphError if the prefix is not a
    frozen inference-only run (a mask, a later reader of one of its inner tensors)."""
    idx = [i for i, s in enumerate(steps) if s.node in prefix]
    inner = set(plan.tensors)
    outputs = inner | {plan.output}
    for i in idx:
        s = steps[i]
        if s.phase != "forward" or len(s.writes) != 1 or s.writes[0] not in outputs:
            raise GraphError(f"patch {plan.describe()}: node {s.node!r} is trained or saves a mask; "
                             "only the frozen prefix can run on tiles")
    if not idx or idx != list(range(idx[0], idx[-1] + 1)):
        raise GraphError(f"patch {plan.describe()}: the prefix's kernel calls are not contiguous")
    for i, s in enumerate(steps):
        if i not in idx and inner.intersection(s.reads + s.writes):
            raise GraphError(f"patch {plan.describe()}: step {i} ({s.kernel}, {s.node!r}) reads "
                             f"{sorted(inner.intersection(s.reads + s.writes))[0]!r} of the patched prefix")
    return steps[: idx[0]] + tiles + steps[idx[-1] + 1 :]


def apply_patching(lx, plan: PatchPlan) -> None:
    """Replace the prefix of lx.prog's mt_infer and mt_train_step by the tiled run (in place)."""
    prog, graph = lx.prog, lx.graph
    prefix = {n.name for n in graph.nodes[: plan.split]}
    old = _param_refs(prog.infer_steps + prog.train_steps)
    tiles = lower_tiles(lx, plan)
    prog.infer_steps = _splice(prog.infer_steps, plan, prefix, tiles)
    prog.infer_aliases = resolve_inplace(prog.infer_steps, protected={graph.input})
    if prog.train_steps:
        prog.train_steps = _splice(prog.train_steps, plan, prefix, [dataclasses.replace(s) for s in tiles])
        prog.train_aliases = resolve_inplace(prog.train_steps, protected={graph.input})
    for name in old - _param_refs(prog.infer_steps + prog.train_steps):  # the whole-tensor structs: unused now
        del prog.params[name]
    prog.meta["patch"] = {"split": plan.split, "grid": list(plan.grid), "output": plan.output,
                          "macs": plan.macs, "base_macs": plan.base_macs, "extra_macs": plan.extra_macs}


def _param_refs(steps) -> set[str]:
    return {a.ref for s in steps for a in s.args if a.kind == "params"}


def arena_sizes(prog) -> tuple[int, int]:
    """(arena, inference arena): the inference program is the prefix's own measure (the training step's
    backward peak may still fall when the in-place depthwise fit runs after patching)."""
    infer = plan_arena(prog.infer_steps, prog.buffers, prog.infer_aliases).size
    train = plan_arena(prog.train_steps, prog.buffers, prog.train_aliases).size if prog.train_steps else 0
    return max(infer, train), infer


def model_macs(graph) -> int:
    return sum(op_module(n).macs(n, graph.tensors[n.inputs[0]].shape, graph.tensors[n.output].shape)
               for n in graph.nodes)


def candidates(graph, max_extra: float) -> list[PatchPlan]:
    """Every (split, grid) whose prefix can run on tiles within max_extra * the model's MACs."""
    cap = max_extra * model_macs(graph)
    out = []
    for split in range(1, len(graph.nodes)):
        try:
            check_split(graph, split)
        except GraphError:
            if not hasattr(op_module(graph.nodes[split - 1]), "window_in"):
                break  # no later split can pass this node
            continue
        for grid in GRIDS:
            h, w = graph.tensors[graph.nodes[split - 1].output].shape[:2]
            if grid[0] > h or grid[1] > w:
                continue
            plan = plan_patches(graph, split, grid)
            if plan.extra_macs <= cap:
                out.append(plan)
    return out


def _trial(lx, plan: PatchPlan):
    prog = dataclasses.replace(lx.prog, buffers=dict(lx.prog.buffers), params=dict(lx.prog.params),
                               meta=dict(lx.prog.meta))
    tx = dataclasses.replace(lx, prog=prog)
    try:
        apply_patching(tx, plan)
    except GraphError:
        return None
    return arena_sizes(prog)


def choose_patching(lx, max_extra: float = DEFAULT_MAX_EXTRA_MACS, arena_limit: int | None = None) -> PatchPlan | None:
    """The (split, grid) within the MAC cap to run: with arena_limit, the one with the fewest extra MACs whose
    arena fits it (then the smaller arena); otherwise, or when none fits, the one with the smallest arena
    (then the smallest inference arena, then the fewest extra MACs). None when no patching makes the arena
    smaller."""
    trials = [(plan, sizes) for plan in candidates(lx.graph, max_extra) if (sizes := _trial(lx, plan)) is not None]
    if arena_limit is not None:
        fitting = [(plan.extra_macs, *sizes, i) for i, (plan, sizes) in enumerate(trials) if sizes[0] <= arena_limit]
        if fitting:
            return trials[min(fitting)[-1]][0]
    best, best_key = None, (*arena_sizes(lx.prog), 0)
    for plan, sizes in trials:
        if (*sizes, plan.extra_macs) < best_key:
            best, best_key = plan, (*sizes, plan.extra_macs)
    return best


def parse_patch(text: str):
    """--patch: 'fit', 'auto', 'none' or SPLIT:GHxGW (e.g. 10:3x3) -> 'fit' | 'auto' | None | (split, (gh, gw))."""
    t = text.strip().lower()
    if t in ("fit", "auto", "none"):
        return None if t == "none" else t
    try:
        split, grid = t.split(":")
        gh, gw = grid.split("x")
        return int(split), (int(gh), int(gw))
    except ValueError:
        raise ValueError(f"--patch {text!r}: 'fit', 'auto', 'none' or SPLIT:GHxGW (e.g. 10:3x3)") from None


def parse_share(text: str) -> float:
    """--max-extra-macs: '10%' or '0.1' -> 0.1."""
    t = str(text).strip()
    try:
        value = float(t[:-1]) / 100 if t.endswith("%") else float(t)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 10:
        raise ValueError(f"--max-extra-macs {text!r}: a share of the model's MACs, e.g. 10% or 0.1")
    return value


def patch_program(lx, patch, max_extra: float = DEFAULT_MAX_EXTRA_MACS, sram_budget: int | None = None):
    """Apply `patch` to lx.prog and return the PatchPlan applied (or None). patch: None (never), 'auto' (the
    smallest arena within the MAC cap), 'fit' (only when the planned SRAM exceeds sram_budget, like the in-place
    depthwise fit: the fewest extra MACs that fit, else the smallest arena) or (split, (gh, gw))."""
    if patch is None:
        return None
    before = arena_sizes(lx.prog)[0]
    limit = None
    if patch == "fit":
        fixed = sum(c.nbytes for c in lx.prog.consts.values() if c.storage == "sram") + STATE_BYTES + STACK_ESTIMATE
        if sram_budget is None or before + fixed <= sram_budget:
            return None
        limit = sram_budget - fixed  # the cheapest tiling that fits (fewest extra MACs), else the smallest arena
    plan = choose_patching(lx, max_extra, limit) if patch in ("auto", "fit") else plan_patches(lx.graph, *patch)
    if plan is not None:
        apply_patching(lx, plan)
        lx.prog.meta["patch"].update(arena_before=before, arena_after=arena_sizes(lx.prog)[0])
    return plan

"""The backward of an inverted-residual block by groups of expanded channels, where the model would not fit
otherwise.

In a trained MobileNetV2-style block (pointwise1 p -> depthwise d -> pointwise2 q) the float gradients of the
expanded tensors (d's output and p's output, 4 bytes per element) are the largest live tensors of the backward:
mcunet-5fps's 99 KB scheme peaks at blocks.10.pointwise1's input gradient with its 8x8x240 gradient (61,440 B)
beside the outgoing one. Every element of those gradients belongs to one expanded channel, and each step of the
block's backward treats channels independently except p's input gradient, a sum over them. So one kernel call
(mt_block_grad_grouped_f32) runs the chain a group of channels at a time: q's input gradient for the group's
channels, d's clamp mask, bias update and input gradient, p's clamp mask, bias update, input gradient (its sum
over channels continued group after group, ascending, exactly the additions of the whole kernel) and weight
update (of the group's rows, after their input-gradient use: the old weights). Each float is computed by the
same operations in the same order as by the ungrouped kernels (the ungrouped kernels themselves run on each
group: q's and d's frozen weights are read from flash copies regrouped by channel group), so the trained
parameters are bit-identical and the NumPy simulation is untouched; the expanded gradients exist only a group
wide.

Like the in-place depthwise fit, it is applied only while the planned SRAM exceeds the budget, the block with
the largest expanded gradient first, and kept only if it makes the training arena smaller (by groups of 48
channels unless a smaller group makes it smaller still: they cost fewer instructions). Blocks whose q or d
weights train, or whose convs are strided where the kernel does not support it (q and p stride 1), keep the
ungrouped steps.
"""
from __future__ import annotations

import numpy as np

from ..arena import plan_arena
from ..budget import STACK_ESTIMATE, STATE_BYTES
from ..ir.program import Buffer, Const, Program, Step, buf, const, lit
from ..ops.conv import GRAD_INPUT_KERNEL, WEIGHT_UPDATE_KERNEL

KERNEL = "mt_block_grad_grouped_f32"
# expanded channels per group, tried largest first (the float sums of the kernels are the same for any group
# size; multiples of 8 keep the Cortex-M fast kernels on their 6- and 8-channel paths)
GROUPS = (48, 24, 8)
PW_GRAD, DW_GRAD = GRAD_INPUT_KERNEL["pointwise"], GRAD_INPUT_KERNEL["depthwise"]
DW_GRADS = (DW_GRAD, "mt_conv_grad_input_depthwise_inplace_f32")
ACC, BIAS, PW_UPDATE = "mt_conv_grad_acc_f32", "mt_bias_update_f32", WEIGHT_UPDATE_KERNEL["pointwise"]
NULL = lit("0")


def _fields(prog: Program, arg) -> list:
    return list(prog.params[arg.ref].fields)


def _frozen_whole(prog: Program, view_arg) -> bool:
    """The weight view holds only frozen weights, without an index list (q's and d's the kernel reads)."""
    f = _fields(prog, view_arg)
    return f[1] == "NULL" and int(f[5]) == 0


def _match(prog: Program, steps: list[Step], sdin: Step) -> dict | None:
    """The steps of one block's backward around the depthwise input-gradient step sdin, or None if they do not
    have the form the grouped kernel runs."""
    writer = {w: s for s in steps for w in s.writes}
    readers: dict[str, list[Step]] = {}
    for s in steps:
        for r in s.reads:
            readers.setdefault(r, []).append(s)
    gacc_d, g_p = sdin.reads[0], sdin.writes[0]
    sdacc = writer.get(gacc_d)
    if sdacc is None or sdacc.kernel != ACC or sdacc.node != sdin.node:
        return None
    g_d, mask_d = sdacc.reads
    sq = writer.get(g_d)
    if sq is None or sq.kernel != PW_GRAD or readers.get(g_d) != [sdacc]:
        return None
    if len(readers.get(g_p, [])) != 1 or readers[g_p][0].kernel != ACC:
        return None
    spacc = readers[g_p][0]
    gacc_p, mask_p, p = spacc.writes[0], spacc.reads[1], spacc.node
    d_readers = readers.get(gacc_d, [])
    sdbias = [s for s in d_readers if s.kernel == BIAS and s.node == sdin.node]
    if len(d_readers) != 1 + len(sdbias) or sdin not in d_readers:
        return None
    p_readers = readers.get(gacc_p, [])
    by_kernel = {s.kernel: s for s in p_readers if s.node == p}
    if len(by_kernel) != len(p_readers) or not set(by_kernel) <= {PW_GRAD, BIAS, PW_UPDATE}:
        return None
    spin, spbias, spw = by_kernel.get(PW_GRAD), by_kernel.get(BIAS), by_kernel.get(PW_UPDATE)
    if spin is None and spw is None:
        return None
    pq, pd = _fields(prog, sq.args[0]), _fields(prog, sdin.args[0])
    pp = _fields(prog, (spin or spw).args[0])
    e = int(pd[2])
    if int(pq[8]) != 1 or int(pp[8]) != 1 or int(pq[2]) != e or int(pp[5]) != e:
        return None  # q and p unstrided, all three on the same expanded channels
    if not (_frozen_whole(prog, sq.args[2]) and _frozen_whole(prog, sdin.args[2])):
        return None
    removed = [s for s in (sq, sdacc, *sdbias, sdin, spacc, spin, spbias, spw) if s is not None]
    return {"sq": sq, "sdacc": sdacc, "sdbias": sdbias[0] if sdbias else None, "sdin": sdin, "spacc": spacc,
            "spin": spin, "spbias": spbias, "spw": spw, "removed": removed,
            "gone": {g_d, gacc_d, g_p, gacc_p} | set(sdin.writes[1:]), "pd": pd, "pq": pq, "pp": pp, "e": e}


def _regrouped(prog: Program, view_arg, k: int) -> str:
    """A flash copy of a frozen weight (pointwise (O, E) or depthwise (kh, kw, E)) with each group of k channels
    contiguous: for each group, its (O, k) columns or (kh, kw, k) taps. The kernels read a group's weights as
    a whole weight of k channels."""
    name = _fields(prog, view_arg)[0]
    out = f"{name}_g{k}"
    if out not in prog.consts:
        w = prog.consts[name].value
        e = w.shape[-1]
        parts = [np.ascontiguousarray(w[..., c0 : c0 + k]).reshape(-1) for c0 in range(0, e, k)]
        prog.add_const(Const(out, np.concatenate(parts).astype(np.int8), "int8", "flash",
                             f"{name} regrouped by {k} channels (codegen.grouped_backward)"))
    return out


def _grouped_step(prog: Program, m: dict, group: int) -> Step:
    """The mt_block_grad_grouped_f32 call replacing the matched steps (its scratch buffers declared)."""
    sq, sdacc, sdbias, sdin, spacc, spin, spbias, spw = (m[k] for k in ("sq", "sdacc", "sdbias", "sdin", "spacc",
                                                                          "spin", "spbias", "spw"))
    d = sdin.node
    pq, pd, pp = m["pq"], m["pd"], m["pp"]
    k = min(group, m["e"])
    names = (f"grad_group:{d}.out", f"grad_group:{spacc.node}.out")
    sizes = ((int(pq[0]) * int(pq[1]) * k, "float32"), (int(pp[3]) * int(pp[4]) * k, "float32"))
    for name, (numel, dtype) in zip(names, sizes):
        if name not in prog.buffers:
            prog.add_buffer(Buffer(name, numel, dtype, "scratch"))
    gq, mask_d, mask_p = sq.reads[0], sdacc.reads[1], spacc.reads[1]
    x = spw.reads[0] if spw else None
    gx = spin.writes[0] if spin else None
    args = [sq.args[0], buf(gq), const(_regrouped(prog, sq.args[2], k)),
            sdin.args[0], buf(mask_d), sdacc.args[2], *(sdbias.args[3:5] if sdbias else [NULL, NULL]),
            const(_regrouped(prog, sdin.args[2], k)),
            (spin or spw).args[0], buf(mask_p), spacc.args[2], *(spbias.args[3:5] if spbias else [NULL, NULL]),
            buf(x) if x else NULL, spw.args[2] if spw else lit(0), (spw.args[4] if spw else spin.args[2]),
            spw.args[5] if spw else NULL, lit("&mt_ctx"), lit(k), *(buf(n) for n in names), buf(gx) if gx else NULL]
    reads = [gq, mask_d, mask_p] + ([x] if x else [])
    return Step(KERNEL, args, reads, list(names) + ([gx] if gx else []), d, "backward")


def group_block(prog: Program, steps: list[Step], aliases: dict, sdin: Step, group: int):
    """Replace the backward steps of sdin's block by one grouped call: (new steps, new aliases), or None when
    the block has not the form, or a step between them touches what the call reads or writes."""
    m = _match(prog, steps, sdin)
    if m is None:
        return None
    idx = [steps.index(s) for s in m["removed"]]
    lo, hi = min(idx), max(idx)
    new = _grouped_step(prog, m, group)
    removed_ids = {id(s) for s in m["removed"]}
    params_of = {s.node for s in m["removed"]} - {m["sq"].node}  # d's and p's parameters change in the call
    for s in steps[lo : hi + 1]:
        if id(s) in removed_ids:
            continue
        touched = set(s.reads) | set(s.writes)
        if set(s.writes) & set(new.reads) or touched & set(new.writes) or touched & m["gone"] or s.node in params_of:
            return None
    gone = m["gone"]
    if any(v in gone and k not in gone for k, v in aliases.items()):
        return None  # a tensor that stays shares storage with one that goes
    out = steps[:lo] + [new] + [s for s in steps[lo : hi + 1] if id(s) not in removed_ids]
    out += steps[hi + 1 :]
    return out, {k: v for k, v in aliases.items() if k not in gone}


def _drop_unused_params(prog: Program) -> None:
    """Remove the weight views only the replaced steps read (the generated C would declare them unused)."""
    used = {a.ref for st in prog.train_steps + prog.infer_steps for a in st.args if a.kind == "params"}
    for name in [n for n, p in prog.params.items() if p.ctype == "mt_weight_s8" and n not in used]:
        del prog.params[name]


def _trial(prog: Program, sdin: Step, group: int) -> int | None:
    """The training arena with sdin's block grouped by `group` channels (None: it cannot be); prog unchanged."""
    buffers, consts = set(prog.buffers), set(prog.consts)
    done = group_block(prog, prog.train_steps, prog.train_aliases, sdin, group)
    size = None if done is None else plan_arena(done[0], prog.buffers, done[1]).size
    for name in set(prog.buffers) - buffers:
        del prog.buffers[name]
    for name in set(prog.consts) - consts:
        del prog.consts[name]
    return size


def fit_with_grouped_backward(prog: Program, budget: int | None) -> int:
    """While the planned SRAM (larger arena + trained parameters + state + stack estimate) exceeds `budget`,
    group the backward of the trained block with the largest expanded gradient, kept only if the training
    arena shrinks; the largest group of GROUPS whose arena is as small as the smallest group's (fewer, longer
    kernel calls: on the Cortex-M7 a 48-channel group costs 5 % more instructions than the ungrouped steps, an
    8-channel one 26 %). Returns the number of blocks grouped."""
    if budget is None or not prog.train_steps:
        return 0
    fixed = sum(c.nbytes for c in prog.consts.values() if c.storage == "sram") + STATE_BYTES + STACK_ESTIMATE
    infer = plan_arena(prog.infer_steps, prog.buffers, prog.infer_aliases).size
    size = plan_arena(prog.train_steps, prog.buffers, prog.train_aliases).size
    tried, grouped = set(), 0
    while max(infer, size) + fixed > budget:
        todo = [s for s in prog.train_steps if s.kernel in DW_GRADS and s.node not in tried]
        todo.sort(key=lambda s: -prog.buffers[s.writes[0]].nbytes)
        if not todo:
            break
        s = todo[0]
        tried.add(s.node)
        smallest = _trial(prog, s, min(GROUPS))
        if smallest is None or smallest >= size:
            continue
        group = next(g for g in sorted(GROUPS, reverse=True)
                     if g == min(GROUPS) or max(infer, _trial(prog, s, g)) <= max(infer, smallest))
        old = {b for st in prog.train_steps for b in st.reads + st.writes}
        steps, aliases = group_block(prog, prog.train_steps, prog.train_aliases, s, group)
        prog.train_steps[:], prog.train_aliases = steps, aliases
        size = plan_arena(steps, prog.buffers, aliases).size
        used = {b for st in prog.train_steps + prog.infer_steps for b in st.reads + st.writes}
        for name in old - used:
            del prog.buffers[name]
        _drop_unused_params(prog)
        grouped += 1
    return grouped

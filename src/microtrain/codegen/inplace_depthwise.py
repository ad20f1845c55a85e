"""In-place depthwise convs, where the model would not fit otherwise.

A depthwise conv whose input dies at that step can write its output over the input
(mt_conv_depthwise_inplace_s8: channel by channel through an in_h * in_w scratch plane). In the
inverted-residual blocks of MobileNetV2-style models the expanded input of a depthwise conv and its
output are the two largest live tensors of the peak (MobileNetV2-w0.35's first stride-2 block:
196,608 + 49,152 bytes), so sharing their storage is what brings such a model under 256 KB.

The in-place kernel is scalar and per channel (the Cortex-M SIMD depthwise kernels read whole pixels), so
it costs instructions: it is used only while the planned SRAM exceeds the budget, largest input first,
and a conversion is kept only if it makes its program's arena smaller.

The training step's depthwise input gradient (float32) has an in-place twin too
(mt_conv_grad_input_depthwise_inplace_f32): in a trained block its gradient and the incoming one are the
two largest live tensors of the backward peak. It runs 8 channels at a time through a float scratch of
those channels' incoming gradient and taps (1 channel when the larger scratch keeps the arena from
shrinking): on the Cortex-M7 about 5 instructions per MAC instead of 17 for one channel at a time. With
stride 2 the input gradient is four times the incoming one, which then lives at the start of its storage
(same channels, so writing a channel of gx overwrites only that channel of gacc, already in the scratch).

A conversion that does not shrink the arena (another step has the same peak) is tried again after each
one that does: the 99 KB mcunet-5fps scheme's blocks.13 gradient helps only once blocks.8's is in place.
"""
from __future__ import annotations

from ..arena import plan_arena
from ..budget import DEFAULT_SRAM_BUDGET, STACK_ESTIMATE, STATE_BYTES
from ..ir.program import Buffer, Program, Step, buf, last_use, lit
from ..ops.conv import DEPTHWISE_INPLACE_KERNEL, DEPTHWISE_KERNEL, GRAD_INPUT_KERNEL

KERNEL, INPLACE_KERNEL = DEPTHWISE_KERNEL, DEPTHWISE_INPLACE_KERNEL
GRAD_KERNEL, GRAD_INPLACE_KERNEL = GRAD_INPUT_KERNEL["depthwise"], "mt_conv_grad_input_depthwise_inplace_f32"
# kernel -> (its in-place twin, dtype of the plane scratch)
INPLACE = {KERNEL: (INPLACE_KERNEL, "int8"), GRAD_KERNEL: (GRAD_INPLACE_KERNEL, "float32")}
# channels per pass of the in-place gradient, tried in this order: 8 (MT_DWG_GROUP: the sums of 8 channels
# per tap run like the out-of-place kernel's) unless its larger plane keeps the arena from shrinking
GRAD_GROUPS = (8, 1)


# bias updates read a gradient but change only the bias: moving one before an input-gradient step that
# reads the same gradient changes no number (the update order among updates stays the same)
COMMUTING_READERS = ("mt_bias_update_f32",)


def _hoisted(steps: list[Step], i: int, x: str) -> list[Step] | None:
    """The later readers of x that may move before step i (all of them), or None if one may not."""
    later = [s for s in steps[i + 1 :] if x in s.reads or x in s.writes]
    if all(s.kernel in COMMUTING_READERS and not s.writes for s in later):
        return later
    return None


def _candidates(prog: Program, steps: list[Step], aliases: dict[str, str], protected) -> list[Step]:
    """Depthwise steps whose input dies there (or may, after hoisting its bias updates) and may take the
    output, largest input first."""
    last = last_use(steps)
    out = []
    for i, s in enumerate(steps):
        if s.kernel not in INPLACE:
            continue
        x, y = s.reads[0], s.writes[0]
        if x in protected or y in protected or y in aliases:
            continue
        if last.get(x) != i and (s.kernel != GRAD_KERNEL or _hoisted(steps, i, x) is None):
            continue
        if s.kernel != GRAD_KERNEL and prog.buffers[y].nbytes > prog.buffers[x].nbytes:
            continue  # the forward writes its output over its input (stride 1 or 2: never larger)
        out.append(s)
    return sorted(out, key=lambda s: -prog.buffers[s.reads[0]].nbytes)


def _variants(prog: Program, step: Step) -> list[tuple[str, int, list]]:
    """The in-place forms of a depthwise step: (plane name, plane elements, extra kernel arguments after the
    plane). Forward: the input plane (in_h * in_w int8). Backward: `group` channels' incoming gradient and
    taps (group * (out_h * out_w + kh * kw) floats), for each group size of GRAD_GROUPS."""
    f = [int(v) for v in prog.params[step.args[0].ref].fields]
    in_h, in_w, c, out_h, out_w, _, kh, kw = f[:8]
    if step.kernel == KERNEL:
        return [(f"{step.reads[0]}.plane", in_h * in_w, [])]
    groups = sorted({min(g, c) for g in GRAD_GROUPS}, reverse=True)
    return [(f"{step.reads[0]}.plane{g}", g * (out_h * out_w + kh * kw), [lit(g)]) for g in groups]


def _convert(prog: Program, steps: list[Step], s: Step, aliases: dict, size_before: int):
    """Try each in-place form of step s (its later bias updates hoisted before it); keep the first that makes
    the program's arena smaller and return (aliases, arena size), else restore everything and return None."""
    order = list(steps)
    for h in _hoisted(steps, steps.index(s), s.reads[0]) or []:  # empty unless a bias update reads x later
        steps.remove(h)
        steps.insert(steps.index(s), h)
    before = (s.kernel, list(s.args), list(s.writes))
    trial = {**aliases, s.writes[0]: s.reads[0]}
    for plane, numel, extra in _variants(prog, s):
        created = plane not in prog.buffers  # the inference and training programs share declarations
        if created:
            prog.add_buffer(Buffer(plane, numel, INPLACE[before[0]][1], "scratch"))
        s.kernel, s.args, s.writes = INPLACE[before[0]][0], before[1] + [buf(plane)] + extra, before[2] + [plane]
        size = plan_arena(steps, prog.buffers, trial).size  # only this program changed
        if size < size_before:
            return trial, size
        s.kernel, s.args, s.writes = before
        if created:
            del prog.buffers[plane]
    steps[:] = order
    return None


def _programs(prog: Program) -> list[tuple[list[Step], str]]:
    out = [(prog.infer_steps, "infer_aliases")]
    if prog.train_steps:
        out.append((prog.train_steps, "train_aliases"))
    return out


def fit_with_inplace_depthwise(prog: Program, protected=(), budget: int | None = DEFAULT_SRAM_BUDGET) -> int:
    """Turn depthwise steps of prog's programs into in-place ones while the planned SRAM (larger arena +
    trained parameters + state + stack estimate) exceeds `budget` bytes (None: never). Steps and aliases
    are changed in place; returns the number of steps converted."""
    if budget is None:
        return 0
    fixed = sum(c.nbytes for c in prog.consts.values() if c.storage == "sram") + STATE_BYTES + STACK_ESTIMATE
    progs, protected, tried, converted = _programs(prog), set(protected), set(), 0

    sizes = [plan_arena(steps, prog.buffers, getattr(prog, attr)).size for steps, attr in progs]
    while max(sizes) + fixed > budget:
        k = max(range(len(progs)), key=lambda j: sizes[j])  # the program that sets the arena
        steps, attr = progs[k]
        aliases = getattr(prog, attr)
        todo = [s for s in _candidates(prog, steps, aliases, protected) if (k, id(s)) not in tried]
        if not todo:
            break
        s = todo[0]
        tried.add((k, id(s)))
        done = _convert(prog, steps, s, aliases, sizes[k])
        if done is not None:
            setattr(prog, attr, done[0])
            sizes[k] = done[1]
            converted += 1
            tried = {t for t in tried if t[0] != k}  # the peak moved: a step that did not help may now
    return converted

"""In-place depthwise convs, where the model would not fit otherwise.

A depthwise conv whose input dies at that step can write its output over the input
(mt_conv_depthwise_inplace_s8: channel by channel through an in_h * in_w scratch plane). In the
inverted-residual blocks of MobileNetV2-style models the expanded input of a depthwise conv and its
output are the two largest live tensors of the peak (MobileNetV2-w0.35's first stride-2 block:
196,608 + 49,152 bytes), so sharing their storage is what brings such a model under 256 KB.

The in-place kernel is scalar and per channel (the Cortex-M SIMD depthwise kernels read whole pixels), so
it costs instructions: it is used only while the planned SRAM exceeds the budget, largest input first,
and a conversion is kept only if it makes its program's arena smaller.
"""
from __future__ import annotations

from ..arena import plan_arena
from ..budget import DEFAULT_SRAM_BUDGET, STACK_ESTIMATE, STATE_BYTES
from ..ir.program import Buffer, Program, Step, buf, last_use
from ..ops.conv import DEPTHWISE_INPLACE_KERNEL, DEPTHWISE_KERNEL

KERNEL, INPLACE_KERNEL = DEPTHWISE_KERNEL, DEPTHWISE_INPLACE_KERNEL


def _candidates(prog: Program, steps: list[Step], aliases: dict[str, str], protected) -> list[int]:
    """Depthwise steps whose input dies there and may take the output, largest input first."""
    last = last_use(steps)
    out = []
    for i, s in enumerate(steps):
        if s.kernel != KERNEL:
            continue
        x, y = s.reads[0], s.writes[0]
        if x in protected or y in protected or y in aliases or last.get(x) != i:
            continue
        if prog.buffers[y].nbytes > prog.buffers[x].nbytes:
            continue
        out.append(i)
    return sorted(out, key=lambda i: -prog.buffers[steps[i].reads[0]].nbytes)


def _plane(prog: Program, step: Step) -> tuple[str, bool]:
    """The scratch plane of a depthwise step, in_h * in_w bytes (from its mt_conv_params), and whether it
    was declared now (the inference and training programs share buffer declarations)."""
    h, w = prog.params[step.args[0].ref].fields[:2]
    name = f"{step.reads[0]}.plane"
    if name in prog.buffers:
        return name, False
    prog.add_buffer(Buffer(name, int(h) * int(w), "int8", "scratch"))
    return name, True


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
        todo = [i for i in _candidates(prog, steps, aliases, protected) if (k, i) not in tried]
        if not todo:
            break
        i = todo[0]
        tried.add((k, i))
        s = steps[i]
        plane, created = _plane(prog, s)
        before = (s.kernel, list(s.args), list(s.writes))
        s.kernel, s.args, s.writes = INPLACE_KERNEL, s.args + [buf(plane)], s.writes + [plane]
        trial = {**aliases, s.writes[0]: s.reads[0]}
        size = plan_arena(steps, prog.buffers, trial).size  # only this program changed
        if size < sizes[k]:
            setattr(prog, attr, trial)
            sizes[k] = size
            converted += 1
        else:
            s.kernel, s.args, s.writes = before
            if created:
                del prog.buffers[plane]
    return converted

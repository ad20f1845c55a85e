"""Stack scratch of a program's kernels: the Python twin of the kernels' mt_<kernel>_scratch_bytes queries
(kernels/mt_kernels.h), read from each op module's KERNEL_SCRATCH. The planner refuses a program whose
largest scratch does not fit the part of the stack estimate kept for kernel work arrays."""
from __future__ import annotations

from ..budget import KERNEL_SCRATCH_MAX
from ..errors import MicrotrainError
from ..ops import REGISTRY


def kernel_scratch() -> dict[str, int]:
    """{kernel: stack scratch bytes} of every kernel that keeps work arrays (the others keep none)."""
    out = {}
    for m in REGISTRY.values():
        out.update(getattr(m, "KERNEL_SCRATCH", {}))
    return out


def scratch_bytes(kernel: str) -> int:
    return kernel_scratch().get(kernel, 0)


def check_scratch(prog) -> int:
    """The largest kernel scratch of a program's calls; raises when it exceeds budget.KERNEL_SCRATCH_MAX."""
    table = kernel_scratch()
    calls = [s for s in prog.infer_steps + prog.train_steps if s.kernel in table]
    if not calls:
        return 0
    worst = max(calls, key=lambda s: table[s.kernel])
    if table[worst.kernel] > KERNEL_SCRATCH_MAX:
        raise MicrotrainError(f"{prog.name}: kernel {worst.kernel} (node {worst.node!r}) keeps {table[worst.kernel]} bytes "
                              f"of stack scratch, more than the {KERNEL_SCRATCH_MAX} the stack estimate allows")
    return table[worst.kernel]

"""One on-device session: stage samples as host files, run the firmware under QEMU, parse what it printed,
read the trained parameters back, and turn instruction counts into a per-step, per-phase, per-op report."""
from __future__ import annotations

import re
import struct
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...errors import MicrotrainError
from .project import Region
from .qemu import InstructionCount, run_firmware

MAGIC = b"MTDS"
RESUME_MAGIC = b"MTRS"


class FirmwareError(MicrotrainError):
    """The firmware reported an error or exited with a non-zero status."""


def write_samples(path: Path | str, x: np.ndarray, labels) -> Path:
    """int8 samples (N, H, W, C) and labels -> the file mt_device_main.c streams (header + records)."""
    x = np.ascontiguousarray(x, dtype=np.int8)
    labels = np.asarray(labels, dtype=np.int32)
    if len(x) != len(labels):
        raise ValueError(f"{len(x)} samples but {len(labels)} labels")
    size = int(np.prod(x.shape[1:])) if len(x) else 0
    with open(path, "wb") as f:
        f.write(MAGIC + struct.pack("<II", len(x), size))
        for sample, label in zip(x, labels):
            f.write(struct.pack("<i", int(label)))
            f.write(sample.tobytes())
    return Path(path)


def write_resume(path: Path | str, params: bytes, step: int) -> Path:
    """The resume.bin mt_device_main.c reads first: a previous session's parameters and update counter."""
    Path(path).write_bytes(RESUME_MAGIC + struct.pack("<II", int(step), len(params)) + bytes(params))
    return Path(path)


@dataclass
class Session:
    status: int
    losses: list[float]
    predictions: list[int]
    logits: np.ndarray | None
    correct: int | None
    evaluated: int | None
    params: bytes
    stack_used: int | None
    stdout: str
    instructions: InstructionCount | None = None

    @property
    def accuracy(self) -> float | None:
        return None if not self.evaluated else self.correct / self.evaluated


def run_session(elf: Path | str, cpu: str = "cortex-m7", *, train=None, evaluate=None, timeout: float = 600,
                count: bool = False, workdir: Path | str | None = None, check: bool = True,
                resume: tuple[bytes, int] | None = None, classes: bool = False) -> Session:
    """train / evaluate: (int8 samples NHWC, labels) or None. resume: (parameters of an earlier session, its
    update counter): training continues from there, as if the sessions were one. classes=True (with count)
    also counts instructions per timing class (qemu.run_firmware).

    check=True raises FirmwareError when the firmware fails; check=False returns the Session with its status
    (the errors it printed are in stdout)."""
    with tempfile.TemporaryDirectory(prefix="mt-session-") as tmp:
        work = Path(workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        for name, data in (("train.bin", train), ("eval.bin", evaluate)):
            target = work / name
            if data is None:
                target.unlink(missing_ok=True)
            else:
                write_samples(target, *data)
        if resume is None:
            (work / "resume.bin").unlink(missing_ok=True)
        else:
            write_resume(work / "resume.bin", *resume)
        res = run_firmware(elf, cpu, timeout=timeout, cwd=work, count=count, classes=classes)
        params_file = work / "params.bin"
        params = params_file.read_bytes() if params_file.exists() else b""
    out = res.stdout
    errors = [line for line in out.splitlines() if line.startswith("error:") or "CPU fault" in line]
    if check and (res.status != 0 or errors):
        detail = "\n".join(errors) or (out + res.stderr).strip()[-1500:]
        raise FirmwareError(f"firmware {Path(elf).name} exited with status {res.status}: {detail}")
    losses = [float(v) for v in re.findall(r"^step \d+ loss (\S+)$", out, re.M)]
    preds = re.findall(r"^pred \d+ (-?\d+)((?: -?\d+)*)$", out, re.M)
    ev = re.search(r"^eval (\d+) (\d+)$", out, re.M)
    stack = re.search(r"^stack (\d+) (\d+)$", out, re.M)
    n_params = re.search(r"^params (\d+)$", out, re.M)
    if n_params and int(n_params.group(1)) != len(params):
        raise FirmwareError(f"firmware wrote {len(params)} parameter bytes, announced {n_params.group(1)}")
    return Session(
        status=res.status, losses=losses, predictions=[int(p) for p, _ in preds],
        logits=np.array([[int(v) for v in rest.split()] for _, rest in preds], np.int8) if preds else None,
        correct=int(ev.group(1)) if ev else None, evaluated=int(ev.group(2)) if ev else None,
        params=params, stack_used=int(stack.group(1)) if stack else None, stdout=out,
        instructions=res.instructions)


@dataclass
class CostReport:
    """Instructions per call of mt_train_step (or mt_infer), split by phase and by op; a conv's forward and
    input-gradient calls also carry their MACs (instructions per MAC = instructions / MACs)."""
    function: str
    calls: int
    per_call: float
    by_phase: dict[str, float] = field(default_factory=dict)
    # (phase, node, kernel, instructions per call, MACs per call or 0)
    by_op: list[tuple[str, str, str, float, int]] = field(default_factory=list)
    by_kernel: dict[str, float] = field(default_factory=dict)
    # counted with classes=True only: executed instructions per timing class per call, overall and by phase
    classes: dict[str, float] = field(default_factory=dict)
    classes_by_phase: dict[str, dict[str, float]] = field(default_factory=dict)

    def per_mac(self, phase: str) -> float | None:
        """Instructions per MAC over the conv calls of a phase (None: no such call)."""
        n = sum(op[3] for op in self.by_op if op[0] == phase and op[4])
        macs = sum(op[4] for op in self.by_op if op[0] == phase)
        return n / macs if macs else None

    def text(self, top: int = 12) -> str:
        lines = [f"instructions per {self.function} call: {self.per_call / 1e6:,.2f} M ({self.calls} calls counted)"]
        for phase, n in sorted(self.by_phase.items(), key=lambda kv: -kv[1]):
            per_mac = self.per_mac(phase)
            lines.append(f"  {phase:<9} {n / 1e6:9.3f} M  {n / self.per_call:6.1%}"
                         + (f"  convs {per_mac:.2f} instructions/MAC" if per_mac else ""))
        lines.append(f"  top {min(top, len(self.by_op))} ops (instructions per MAC of conv forward and "
                     "input-gradient calls):")
        for phase, node, kernel, n, macs in self.by_op[:top]:
            per_mac = f"{n / macs:6.2f}/MAC" if macs else " " * 10
            lines.append(f"    {n / 1e6:8.3f} M {per_mac}  {phase:<8} {node or '-':<28} {kernel}")
        return "\n".join(lines)


def cost_report(icount: InstructionCount, regions: list[Region], function: str = "train") -> CostReport | None:
    """Per-call instruction costs of `function` ("train" or "infer") from the marker regions."""
    mine = [r for r in regions if r.function == function]
    if not mine:
        return None
    calls = max((icount.regions.get(r.id, (0, 0))[0] for r in mine), default=0)
    if calls == 0:
        return None
    by_phase, by_kernel = defaultdict(float), defaultdict(float)
    classes, classes_by_phase = defaultdict(float), defaultdict(lambda: defaultdict(float))
    by_op = []
    for r in mine:
        n = icount.regions.get(r.id, (0, 0))[1] / calls
        by_phase[r.phase] += n
        by_kernel[r.kernel] += n
        by_op.append((r.phase, r.node, r.kernel, n, r.macs))
        for name, k in icount.region_classes.get(r.id, {}).items():
            classes[name] += k / calls
            classes_by_phase[r.phase][name] += k / calls
    by_op.sort(key=lambda t: -t[3])
    return CostReport(function, calls, sum(by_phase.values()), dict(by_phase), by_op, dict(by_kernel), dict(classes),
                      {phase: dict(h) for phase, h in classes_by_phase.items()})

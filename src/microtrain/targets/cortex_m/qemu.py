"""Running firmware under qemu-system-arm with semihosting, always under a timeout, and counting executed
instructions with the mt_icount TCG plugin (built here with the host's gcc, cached by source hash)."""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ...cache import host_shared_library
from ...errors import MicrotrainError
from .build import CORES, INSTALL_HINT, ToolchainError, symbol_address

PLUGIN_DIR = Path(__file__).resolve().parent.parent / "qemu_plugin"
MACHINES = {cpu: core.machine for cpu, core in CORES.items()}
MAX_MARKS = 4096  # MT_MAX_MARKS in mt_semihost.h


class FirmwareTimeoutError(MicrotrainError):
    """The guest did not exit in time and was killed."""


@dataclass
class InstructionCount:
    total: int
    symbols: dict[str, int] = field(default_factory=dict)  # function -> self instructions
    regions: dict[int, tuple[int, int]] = field(default_factory=dict)  # marker id -> (calls, instructions)
    # run_firmware(classes=True) only: executed instructions per timing class (plugin mt_insn_class.h; "regs"
    # is the registers moved by load/store multiples, not instructions), in total and per marker region
    classes: dict[str, int] = field(default_factory=dict)
    region_classes: dict[int, dict[str, int]] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> "InstructionCount":
        count, names = cls(total=-1), []
        for line in text.splitlines():
            parts = line.split()
            if parts[:1] == ["classes"]:
                names = parts[1:]
            elif parts[:1] == ["class_total"]:
                count.classes = dict(zip(names, map(int, parts[1:]), strict=True))
            elif parts[:1] == ["class_region"]:
                count.region_classes[int(parts[1])] = dict(zip(names, map(int, parts[2:]), strict=True))
            elif parts[:1] == ["total"]:
                count.total = int(parts[1])
            elif parts[:1] == ["symbol"]:
                count.symbols[" ".join(parts[1:-1])] = int(parts[-1])
            elif parts[:1] == ["region"]:
                count.regions[int(parts[1])] = (int(parts[2]), int(parts[3]))
        if count.total < 0:
            raise ToolchainError(f"instruction-count report is malformed:\n{text[:500]}")
        return count

    def since(self, earlier: "InstructionCount") -> "InstructionCount":
        """What this run executed beyond `earlier`, a run of the same firmware that stopped sooner on the same
        inputs (e.g. steps 2..n of an n-step session, given the 1-step session): calls and instructions apart."""
        regions = {}
        for k, (calls, n) in self.regions.items():
            c0, n0 = earlier.regions.get(k, (0, 0))
            regions[k] = (calls - c0, n - n0)
        symbols = {k: n - earlier.symbols.get(k, 0) for k, n in self.symbols.items()}

        def minus(mine: dict, theirs: dict) -> dict:
            return {k: n - theirs.get(k, 0) for k, n in mine.items()}

        region_classes = {k: minus(h, earlier.region_classes.get(k, {})) for k, h in self.region_classes.items()}
        return InstructionCount(self.total - earlier.total, symbols, regions, minus(self.classes, earlier.classes),
                                region_classes)


@dataclass
class RunResult:
    status: int
    stdout: str
    stderr: str
    instructions: InstructionCount | None = None


def build_icount_plugin(cache_dir: Path | str | None = None) -> Path:
    """The instruction-count plugin as a shared library, compiled with the host gcc when its source changed."""
    lib, why = host_shared_library("libmt_icount", PLUGIN_DIR / "mt_icount.c",
                                   (PLUGIN_DIR / "mt_qemu_plugin_api.h", PLUGIN_DIR / "mt_insn_class.h"),
                                   (["-O2", "-Wall", "-fvisibility=hidden"],), Path(cache_dir) if cache_dir else None)
    if lib is None:
        raise ToolchainError(f"the instruction-count plugin is built with the host gcc: {why}")
    return lib


def run_firmware(elf: Path | str, cpu: str = "cortex-m7", *, timeout: float = 300, cwd: Path | str | None = None,
                 count: bool = False, plugin: Path | None = None, classes: bool = False) -> RunResult:
    """Run `elf` on the QEMU board for `cpu` until it exits (semihosting SYS_EXIT_EXTENDED gives its status).

    Semihosting file paths are relative to `cwd`. stdin is closed. A guest still running after `timeout`
    seconds is killed and FirmwareTimeoutError says so. count=True loads the instruction counter; classes=True
    (with count) also counts instructions per timing class (the input of cycles.estimate_cycles)."""
    if classes and not count:
        raise ValueError("classes=True counts instructions per timing class: it needs count=True")
    if cpu not in MACHINES:
        raise ToolchainError(f"unknown Cortex-M target {cpu!r}; choose one of {', '.join(MACHINES)}")
    qemu = shutil.which("qemu-system-arm")
    if qemu is None:
        raise ToolchainError(f"qemu-system-arm not found on PATH; {INSTALL_HINT}")
    elf = Path(elf).resolve()
    cmd = [qemu, "-M", MACHINES[cpu], "-display", "none", "-monitor", "none", "-serial", "null",
           "-semihosting-config", "enable=on,target=native", "-kernel", str(elf)]
    with tempfile.TemporaryDirectory(prefix="mt-icount-") as tmp:
        report = Path(tmp) / "icount.txt"
        if count:
            lib = plugin or build_icount_plugin()
            args = f"{lib},out={report}"
            marks = symbol_address(elf, "mt_marks")
            if marks is not None:
                args += f",marks={marks:#x},nmarks={MAX_MARKS}"
            if classes:
                args += ",classes=on"
            cmd[1:1] = ["-plugin", args]
        try:
            proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                  errors="replace", timeout=timeout, cwd=cwd)
        except subprocess.TimeoutExpired as e:
            tail = (e.stdout or b"")
            tail = tail.decode(errors="replace") if isinstance(tail, bytes) else tail
            raise FirmwareTimeoutError(
                f"{elf.name} did not exit within {timeout:g} s on qemu-system-arm -M {MACHINES[cpu]}: "
                f"killed (a hung or far too slow guest). Last output: {tail.strip()[-300:] or '(none)'}"
            ) from None
        icount = None
        if count:
            if not report.exists():
                raise ToolchainError(f"the instruction-count plugin wrote no report:\n{proc.stderr.strip()[-1000:]}")
            icount = InstructionCount.parse(report.read_text())
    return RunResult(proc.returncode, proc.stdout, proc.stderr, icount)

"""Building firmware: toolchain detection, `make -f mt_cortex_m.mk`, budget errors, memory figures from the ELF."""
from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from ...errors import BudgetError, MicrotrainError

FIRMWARE_DIR = Path(__file__).resolve().parent
KERNELS_DIR = FIRMWARE_DIR.parent.parent / "codegen" / "kernels"  # portable kernels; SIMD ones in arm/


@dataclass(frozen=True)
class Core:
    """A Cortex-M core microtrain builds for: the QEMU board that emulates it and what its ISA offers."""
    machine: str  # qemu-system-arm -M
    fpu: bool  # single-precision FPU: without one, float arithmetic is gcc's software floating point
    dsp: bool  # DSP extension (SMLAD, SXTB16): the SIMD kernels of codegen/kernels/arm need it and the FPU


CORES = {
    "cortex-m7": Core("mps2-an500", fpu=True, dsp=True),
    "cortex-m4": Core("mps2-an386", fpu=True, dsp=True),
    "cortex-m3": Core("mps2-an385", fpu=False, dsp=False),  # FPU-less: portable kernels, software float
}
CPUS = tuple(CORES)
RAM_BYTES = 256 * 1024
FLASH_BYTES = 1024 * 1024
RAM_ORIGIN = 0x20000000
INSTALL_HINT = ("install it with: apt-get install -y --no-install-recommends gcc-arm-none-eabi "
                "libnewlib-arm-none-eabi qemu-system-arm")


class ToolchainError(MicrotrainError):
    """The Arm toolchain, make or QEMU is missing, or a build failed for a reason other than the budget."""


class LinkBudgetError(BudgetError):
    """The firmware does not fit the MCU: the linker reported a region overflow."""


@dataclass(frozen=True)
class Toolchain:
    cc: str
    nm: str
    make: str


def find_toolchain() -> Toolchain:
    found = {name: shutil.which(name) for name in ("arm-none-eabi-gcc", "arm-none-eabi-nm", "make")}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        raise ToolchainError(f"{', '.join(missing)} not found on PATH; {INSTALL_HINT}")
    return Toolchain(found["arm-none-eabi-gcc"], found["arm-none-eabi-nm"], found["make"])


@dataclass(frozen=True)
class MemoryUsage:
    """What the linked firmware occupies. ram = stack + .data + .bss; flash = code + constants + .data image."""
    ram: int
    flash: int
    stack: int
    data: int
    bss: int

    def describe(self, ram: int = RAM_BYTES, flash: int = FLASH_BYTES) -> str:
        return (f"SRAM {self.ram} B of {ram} ({self.ram / ram:.1%}: stack {self.stack}, "
                f".data {self.data}, .bss {self.bss}); flash {self.flash} B of {flash} "
                f"({self.flash / flash:.1%})")


@dataclass(frozen=True)
class BuildResult:
    elf: Path
    map: Path
    usage: MemoryUsage
    log: str


def _check_cpu(cpu: str) -> None:
    if cpu not in CPUS:
        raise ToolchainError(f"unknown Cortex-M target {cpu!r}; choose one of {', '.join(CPUS)}")


def simd_for(cpu: str, simd: bool = True) -> bool:
    """Whether a build for `cpu` links the SIMD kernels: asked for, and the core has what they need."""
    _check_cpu(cpu)
    return bool(simd) and CORES[cpu].dsp and CORES[cpu].fpu


def build_firmware(sources: Sequence[Path | str], out: Path | str, cpu: str = "cortex-m7", *,
                   include_dirs: Iterable[Path | str] = (), defines: Iterable[str] = (),
                   stack_size: int = 8192, simd: bool = True, opt: str = "-O2",
                   ram_limit: int | None = None, flash_limit: int | None = None) -> BuildResult:
    """Compile and link `sources` with the firmware support into `out` (an ELF; the map file lands beside it).

    simd=True links codegen/kernels/arm/*.c in place of the portable pointwise/depthwise kernels (on a core
    with the DSP extension and an FPU; elsewhere the portable kernels are the only ones: simd_for).

    Raises LinkBudgetError when the program does not fit 256 KB SRAM / 1 MB flash, saying by how much.
    ram_limit / flash_limit: the part's memory (compile --ram/--flash/--board), or a raised SRAM limit for a
    measurement-only build (never for firmware meant for the MCU)."""
    simd = simd_for(cpu, simd)  # also refuses an unknown cpu
    tools = find_toolchain()
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    srcs = [str(Path(s).resolve()) for s in sources]
    for path in [str(out), *srcs]:
        if re.search(r"[\s<>|&;'\"$`()*?]", path):
            raise ToolchainError(f"{path}: make cannot build paths with spaces or shell characters; "
                                 "use a plain directory name")
    simd_srcs = [str(p) for p in sorted((KERNELS_DIR / "arm").glob("*.c"))] if simd else []
    includes = [Path(d).resolve() for d in include_dirs] + [KERNELS_DIR]
    cmd = [
        tools.make, "-s", "-f", str(FIRMWARE_DIR / "mt_cortex_m.mk"), f"FIRMWARE_DIR={FIRMWARE_DIR}/",
        f"CPU={cpu}", f"ARM_CC={tools.cc}", f"OUT={out}", f"STACK_SIZE={int(stack_size)}", f"OPT={opt}",
        f"SIMD={1 if simd else 0}", "SRCS=" + " ".join(srcs), "SIMD_SRCS=" + " ".join(simd_srcs),
        "INCLUDES=" + " ".join(f"-I{d}" for d in includes),
        "DEFINES=" + " ".join(f"-D{d}" for d in defines),
        f"RAM_LIMIT={int(ram_limit) if ram_limit else ''}", f"FLASH_LIMIT={int(flash_limit) if flash_limit else ''}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        overflow = re.findall(r"region [`'](\w+)' overflowed by (\d+) bytes", log)
        if overflow:
            raise LinkBudgetError(_budget_message(overflow, log, stack_size, ram_limit, flash_limit))
        raise ToolchainError(f"firmware build failed ({out.name}, {cpu}):\n{log.strip()[-3000:]}")
    return BuildResult(out, out.with_suffix(".map"), memory_usage(out), log)


def _budget_message(overflow, log: str, stack_size: int, ram: int | None = None, flash: int | None = None) -> str:
    limits = {"RAM": f"{(ram or RAM_BYTES) // 1024} KB SRAM", "FLASH": f"{(flash or FLASH_BYTES) // 1024} KB flash"}
    parts = [f"{limits.get(region, region)} overflowed by {int(n)} bytes" for region, n in dict(overflow).items()]
    hint = ("static data + training arena + stack "
            f"({stack_size} B) must fit; shrink the update scheme or the input resolution")
    return f"firmware does not fit the MCU: {'; '.join(parts)} ({hint})"


def _nm(elf: Path) -> list[tuple[int, int | None, str, str]]:
    """(address, size or None, type letter, name) for every symbol of the ELF."""
    out = subprocess.run([find_toolchain().nm, "-S", str(elf)], capture_output=True, text=True, check=True).stdout
    rows = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 4:
            rows.append((int(parts[0], 16), int(parts[1], 16), parts[2], parts[3]))
        elif len(parts) == 3:
            rows.append((int(parts[0], 16), None, parts[1], parts[2]))
    return rows


def symbol_sizes(elf: Path | str) -> dict[str, int]:
    """Size in bytes of every sized symbol (functions, arrays): lets a test compare a buffer with the plan."""
    return {name: size for _, size, _, name in _nm(Path(elf)) if size is not None}


def symbol_address(elf: Path | str, name: str) -> int | None:
    for addr, _, _, sym in _nm(Path(elf)):
        if sym == name:
            return addr
    return None


def memory_usage(elf: Path | str) -> MemoryUsage:
    """RAM and flash use from the linker-script symbols (exactly what the linker checked)."""
    syms = {name: addr for addr, _, _, name in _nm(Path(elf))}
    need = ("__stack_start", "__stack_end", "__data_start", "__data_end", "__bss_start", "__bss_end",
            "__ram_end_used", "__flash_end_used")
    missing = [n for n in need if n not in syms]
    if missing:
        raise ToolchainError(f"{elf}: not linked with mt_firmware.ld (missing {', '.join(missing)})")
    return MemoryUsage(
        ram=syms["__ram_end_used"] - RAM_ORIGIN,
        flash=syms["__flash_end_used"],
        stack=syms["__stack_end"] - syms["__stack_start"],
        data=syms["__data_end"] - syms["__data_start"],
        bss=syms["__bss_end"] - syms["__bss_start"],
    )

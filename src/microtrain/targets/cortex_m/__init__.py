"""Cortex-M7 / Cortex-M4F / Cortex-M3 (no FPU) target: bare-metal firmware built with arm-none-eabi-gcc against a linker script
that enforces the MCU's 256 KB SRAM / 1 MB flash, run under qemu-system-arm (mps2 boards) with semihosting
for I/O, and measured in executed instructions by a QEMU TCG plugin built on demand.

Modules: build (toolchain, make, link budget, memory figures), qemu (runner with timeout, instruction-count
plugin), project (generated C project -> instrumented firmware, plan vs link map), session (samples in,
loss/accuracy/parameters/costs out), data (ImageFolder -> int8 samples).
The C and linker files beside them are the firmware support (package data): mt_startup.c (vector table,
reset, FPU, faults, stack paint, cost-marker table), mt_semihost.{c,h}, mt_libc.c, mt_firmware.ld,
mt_cortex_m.mk (the build, also usable by hand), mt_device_main.c (the training harness) and
mt_kernel_check.c (SIMD vs portable kernel self-check)."""
from .build import (
    CPUS,
    FIRMWARE_DIR,
    BuildResult,
    LinkBudgetError,
    MemoryUsage,
    ToolchainError,
    build_firmware,
    find_toolchain,
    memory_usage,
    symbol_sizes,
)
from .qemu import (
    MACHINES,
    FirmwareTimeoutError,
    InstructionCount,
    RunResult,
    build_icount_plugin,
    run_firmware,
)

__all__ = [
    "CPUS", "FIRMWARE_DIR", "BuildResult", "LinkBudgetError", "MemoryUsage", "ToolchainError",
    "build_firmware", "find_toolchain", "memory_usage", "symbol_sizes", "MACHINES",
    "FirmwareTimeoutError", "InstructionCount", "RunResult", "build_icount_plugin", "run_firmware",
]

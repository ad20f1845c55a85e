"""From a generated C project (codegen/emit.py: mt_model.c/.h, kernels/) to Cortex-M firmware.

The project is not modified: the build directory gets mt_model_marked.c, a copy of mt_model.c with
- `mt_mark(id)` before every kernel call of mt_infer and mt_train_step, so the instruction counter charges
  each call to its op (regions.json maps id -> function, phase, node, kernel, and the MACs of a conv's forward
  or input-gradient call, read from its mt_conv_params, for instructions per MAC);
- mt_train_input_buffer(): the arena slot mt_train_step copies its input from (the harness streams each
  sample straight there);
- mt_write_params(fd): the bytes of mt_export_params written to a host file array by array (no SRAM copy);
- mt_read_params(fd): its inverse, the arrays read straight from a host file (a session resumes a previous one).
The harness mt_device_main.c, the project's kernels and the firmware support are linked against the
256 KB / 1 MB linker script: a model that does not fit fails here with LinkBudgetError."""
from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from ...errors import MicrotrainError
from ...budget import HARNESS_STACK
from .build import (CPUS, FIRMWARE_DIR, FLASH_BYTES, KERNELS_DIR, RAM_BYTES, BuildResult, build_firmware, simd_for,
                    symbol_sizes)

CALL = re.compile(r"^    (mt_\w+)\((.*)\);$")
NOTE = re.compile(r"^    /\* (\w+) (.*) \*/$")
FUNCTIONS = {"void mt_infer(": "infer", "int32_t mt_train_step(": "train"}
CONV_PARAMS = re.compile(r"^static const mt_conv_params (\w+) = \{([-\d, ]+)\};$")
EXPORT_LINE = re.compile(r"i < (\d+)u; i\+\+\) dst\[k\+\+\] = \(\(const uint8_t \*\)(\w+)\)\[i\];")
MAX_MARKS = 4096  # mt_semihost.h MT_MAX_MARKS


class ProjectError(MicrotrainError):
    """A generated project is missing a file or has a shape this target does not understand."""


@dataclass(frozen=True)
class Region:
    id: int
    function: str  # infer | train
    phase: str  # forward | loss | backward | update | input (as the generator labels its steps)
    node: str
    kernel: str
    macs: int = 0  # multiply-accumulates of a conv forward or input-gradient call (0: not such a call)


def conv_call_macs(kernel: str, args: str, conv_params: dict[str, list[int]]) -> int:
    """MACs of one image through a conv kernel call (forward, or input gradient: the same products) whose
    first argument is &<an mt_conv_params of mt_model.c>; 0 for any other call."""
    first = args.split(",", 1)[0].strip().lstrip("&")
    if not kernel.startswith("mt_conv_") or first not in conv_params or "update" in kernel or "grad_acc" in kernel:
        return 0
    in_h, in_w, in_c, out_h, out_w, out_c, kh, kw = conv_params[first][:8]
    return out_h * out_w * out_c * kh * kw * (1 if "depthwise" in kernel else in_c)


def instrument(source: str) -> tuple[str, list[Region]]:
    """mt_model.c text -> (marked text, regions). Ids start at 1 (0 is the harness)."""
    out, regions = ['#include "mt_semihost.h"'], []
    function, note, train_input = None, None, None
    conv_params = {}
    for line in source.splitlines():
        if (m := CONV_PARAMS.match(line)):
            conv_params[m.group(1)] = [int(v) for v in m.group(2).split(",")]
        if function is None:
            function = next((f for sig, f in FUNCTIONS.items() if line.startswith(sig)), None)
        elif line == "}":
            function = None
        elif (m := NOTE.match(line)):
            note = m.groups()
        elif (m := CALL.match(line)):
            kernel, args = m.groups()
            phase, node = note or ("other", "")
            note = None
            if function == "train" and train_input is None and kernel == "mt_copy_s8" and args.startswith("input,"):
                train_input = args.split(",", 1)[1].rsplit(",", 1)[0].strip()
                phase = "input"
            rid = len(regions) + 1
            if rid >= MAX_MARKS:
                raise ProjectError(f"more than {MAX_MARKS - 1} kernel calls: raise MT_MAX_MARKS")
            regions.append(Region(rid, function, phase, node, kernel, conv_call_macs(kernel, args, conv_params)))
            out.append(f"    mt_mark({rid});")
        out.append(line)
    if not any(r.function == "infer" for r in regions):
        raise ProjectError("mt_model.c has no kernel calls in mt_infer: not a microtrain-generated model")
    params = EXPORT_LINE.findall(source)
    out.append("")
    out.append("/* ---- added for the Cortex-M harness (targets/cortex_m/project.py) ---- */")
    out.append("int8_t *mt_train_input_buffer(void);")
    out.append("uint32_t mt_write_params(int fd);")
    out.append("uint32_t mt_read_params(int fd);")
    out.append(f"int8_t *mt_train_input_buffer(void) {{ return {train_input or 'mt_input_buffer()'}; }}")
    out.append("uint32_t mt_write_params(int fd) {")
    out.append("    uint32_t n = 0;")
    for size, name in params:
        out.append(f"    n += (uint32_t)mt_write(fd, {name}, {size}u);")
    out.append("    return n;")
    out.append("}")
    out.append("uint32_t mt_read_params(int fd) {")
    out.append("    uint32_t n = 0;")
    for size, name in params:
        out.append(f"    n += (uint32_t)mt_read(fd, {name}, {size}u);")
    out.append("    return n;")
    out.append("}")
    return "\n".join(out) + "\n", regions


def project_sources(project: Path) -> list[Path]:
    for name in ("mt_model.c", "mt_model.h"):
        if not (project / name).exists():
            raise ProjectError(f"{project} is not a generated project: {name} is missing "
                               "(create one with `microtrain compile`)")
    return sorted((project / "kernels").glob("*.c"))


def build_project(project: Path | str, build_dir: Path | str, cpu: str = "cortex-m7", *, simd: bool = True,
                  stack_size: int | None = None, ram_limit: int | None = None,
                  flash_limit: int | None = None) -> tuple[BuildResult, list[Region]]:
    """Instrument, compile and link a generated project into build_dir/firmware.elf (+ .map, regions.json)."""
    project, build_dir = Path(project).resolve(), Path(build_dir).resolve()
    kernels = project_sources(project)
    build_dir.mkdir(parents=True, exist_ok=True)
    marked, regions = instrument((project / "mt_model.c").read_text())
    _write_if_changed(build_dir / "mt_model_marked.c", marked)  # unchanged: make skips the big compile
    _write_if_changed(build_dir / "regions.json", json.dumps([r.__dict__ for r in regions], indent=0) + "\n")
    if stack_size is None:
        stack_size = _planned_stack(project) + HARNESS_STACK
    result = build_firmware([build_dir / "mt_model_marked.c", FIRMWARE_DIR / "mt_device_main.c", *kernels],
                            build_dir / "firmware.elf", cpu, include_dirs=[project, project / "kernels"],
                            stack_size=stack_size, simd=simd, ram_limit=ram_limit, flash_limit=flash_limit)
    return result, regions


def _write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def _planned_stack(project: Path) -> int:
    report = project / "memory.json"
    if report.exists():
        return int(json.loads(report.read_text()).get("stack_estimate_bytes", 1024))
    return 1024


def load_regions(build_dir: Path | str) -> list[Region]:
    return [Region(**r) for r in json.loads((Path(build_dir) / "regions.json").read_text())]


def param_arrays(source: str) -> list[tuple[str, int]]:
    """(symbol, bytes) of the trainable SRAM arrays, in mt_export_params order."""
    return [(name, int(size)) for size, name in EXPORT_LINE.findall(source)]


def plan_vs_link(elf: Path | str, project: Path | str) -> list[tuple[str, int, int]]:
    """(item, planned bytes, linked bytes) for the arena and the trainable arrays: memory.json vs the ELF."""
    project = Path(project)
    report = json.loads((project / "memory.json").read_text())
    sizes = symbol_sizes(elf)
    arrays = param_arrays((project / "mt_model.c").read_text())
    return [
        ("arena (mt_arena)", int(report["arena_bytes"]), sizes.get("mt_arena", 0)),
        (f"trainable arrays ({len(arrays)})", int(report["trainable_sram_bytes"]),
         sum(sizes.get(name, 0) for name, _ in arrays)),
    ]


SUPPORT_FILES = ("mt_startup.c", "mt_semihost.c", "mt_semihost.h", "mt_libc.c", "mt_firmware.ld",
                 "mt_cortex_m.mk", "mt_device_main.c")

FIRMWARE_MAKEFILE = """# Generated by microtrain: Cortex-M firmware of this project (arm-none-eabi-gcc).
#   make -f Makefile.firmware            -> build-{cpu}/firmware.elf (+ .map); a model over the part's SRAM
#                                           ({ram} B) or flash ({flash} B) fails to link ("region `RAM' overflowed")
# Run it: qemu-system-arm -M {machine} -display none -monitor none -serial null \\
#           -semihosting-config enable=on,target=native -kernel build-{cpu}/firmware.elf
# (with train.bin / eval.bin in the working directory; `microtrain run` does all of this.)
CPU ?= {cpu}
SIMD ?= {simd}
STACK_SIZE ?= {stack}
RAM_LIMIT ?= {ram}
FLASH_LIMIT ?= {flash}
firmware:
\t$(MAKE) -f firmware/mt_cortex_m.mk FIRMWARE_DIR=firmware/ CPU=$(CPU) SIMD=$(SIMD) STACK_SIZE=$(STACK_SIZE) \\
\t  RAM_LIMIT=$(RAM_LIMIT) FLASH_LIMIT=$(FLASH_LIMIT) \\
\t  OUT=build-$(CPU)/firmware.elf INCLUDES="-I. -Ikernels" \\
\t  SRCS="firmware/mt_model_marked.c firmware/mt_device_main.c $(wildcard kernels/*.c)" \\
\t  SIMD_SRCS="$(wildcard kernels/arm/*.c)"
.PHONY: firmware
"""


def emit_firmware(project: Path | str, cpu: str = "cortex-m7", *, simd: bool = True,
                  stack_size: int | None = None, ram: int | None = None,
                  flash: int | None = None) -> tuple[BuildResult, list[Region]]:
    """Make a generated project a Cortex-M firmware project and link it (the budget check). ram / flash: the
    part's memory in bytes (default 256 KB / 1 MB), which the linker script then enforces.

    Adds firmware/ (startup, vector table, linker script, semihosting, harness, the instrumented model),
    kernels/arm/ (SIMD kernels), Makefile.firmware and target.json; builds build-<cpu>/firmware.elf."""
    from .qemu import MACHINES

    if cpu not in CPUS:
        raise ProjectError(f"unknown Cortex-M target {cpu!r}; choose one of {', '.join(CPUS)}")
    simd = simd_for(cpu, simd)
    project = Path(project).resolve()
    project_sources(project)
    fw = project / "firmware"
    fw.mkdir(exist_ok=True)
    for name in SUPPORT_FILES:
        shutil.copyfile(FIRMWARE_DIR / name, fw / name)
    (project / "kernels" / "arm").mkdir(parents=True, exist_ok=True)
    for src in (KERNELS_DIR / "arm").glob("*.c"):
        shutil.copyfile(src, project / "kernels" / "arm" / src.name)
    stack = stack_size or _planned_stack(project) + HARNESS_STACK
    (project / "Makefile.firmware").write_text(
        FIRMWARE_MAKEFILE.format(cpu=cpu, machine=MACHINES[cpu], simd=int(simd), stack=stack, ram=ram or RAM_BYTES,
                                 flash=flash or FLASH_BYTES))
    (project / "target.json").write_text(json.dumps(
        {"target": cpu, "machine": MACHINES[cpu], "simd": bool(simd), "stack_size": stack, "ram": ram or RAM_BYTES,
         "flash": flash or FLASH_BYTES}, indent=1) + "\n")
    result, regions = build_project(project, project / f"build-{cpu}", cpu, simd=simd, stack_size=stack,
                                    ram_limit=ram, flash_limit=flash)
    shutil.copyfile(project / f"build-{cpu}" / "mt_model_marked.c", fw / "mt_model_marked.c")
    return result, regions


def read_target(project: Path | str) -> dict:
    """target.json of a firmware project ({} when the project was compiled for the host only)."""
    path = Path(project) / "target.json"
    return json.loads(path.read_text()) if path.exists() else {}


def budget_lines(result: BuildResult, project: Path | str) -> list[str]:
    target = read_target(project)
    ram = target.get("ram", RAM_BYTES)
    lines = [f"linked: {result.usage.describe(ram, target.get('flash', FLASH_BYTES))}"]
    if (Path(project) / "memory.json").exists():
        for item, planned, linked in plan_vs_link(result.elf, project):
            verdict = "agrees" if planned == linked else "DIFFERS"
            lines.append(f"  plan vs link map: {item}: planned {planned:,} B, linked {linked:,} B ({verdict})")
    lines.append(f"  SRAM headroom {ram - result.usage.ram:,} B of {ram:,}; map file {result.map}")
    return lines

"""An ESTIMATE of Cortex-M7 cycles from executed instructions per timing class (QEMU counts instructions
exactly but has no timing model; the instruction count stays the measured figure).

Source of the per-class figures. Arm publishes no per-instruction cycle table for the Cortex-M7 (its
Technical Reference Manual describes the dual-issue in-order pipeline only; the measured third-party table at
quinapalus.com/cm7cycles.html notes the same). The figures below are those of LLVM's Cortex-M7 scheduling
model, llvm/lib/Target/ARM/ARMScheduleM7.td: issue width 2; two ALUs with one early shifter, one DSP/SIMD
path issued from the first slot only, one MAC, two load pipes, one store pipe, one branch unit, one FPU;
LDRD/STRD, LDM/STM, divides and system instructions issue alone; integer divide stalls 7 cycles; VDIV/VSQRT
(single precision) have a latency of 16.

The estimate is a range:
- high, no pairing: every instruction takes its own cycle(s) (divide 7, VDIV/VSQRT 16 as if a dependent
  instruction waited for them, system 3, load/store multiple one register per cycle);
- low, ideal pairing: every pair the pipes allow is dual-issued, so the bound is the busiest of: issue slots
  / 2, ALU ops / 2, shifted-operand ops, DSP ops, MACs, loads / 2, stores, branches, FPU ops (VDIV/VSQRT
  pipelined, load/store multiple two registers per cycle on the 64-bit data path).
Ignored in both: data-dependency stalls (load-use, MAC and FPU result latencies), branch mispredictions
(LLVM: 4-6 cycles each; QEMU's count cannot tell a predicted branch from a mispredicted one), caches, TCM
and flash wait states, bus contention, interrupts. Real hardware may therefore run slower than `high`."""
from __future__ import annotations

from dataclasses import asdict, dataclass

TABLE = "cortex-m7 per-class issue model after LLVM ARMScheduleM7.td (estimate)"
REGS = "regs"  # the plugin's extra column: registers moved by load/store multiples (not instructions)


@dataclass(frozen=True)
class ClassCost:
    high: float          # cycles of one instruction issued alone (no pairing); multiples: per register
    slots: float         # issue slots with ideal pairing (2 = issues alone, a whole cycle); multiples: per 2 regs
    units: tuple = ()    # pipes it occupies, each with a per-cycle capacity in UNITS


UNITS = {"alu": 2, "shift": 1, "dsp": 1, "mac": 1, "load": 2, "store": 1, "branch": 1, "fpu": 1}

# keys are the class names of targets/qemu_plugin/mt_insn_class.h
COSTS = {
    "alu": ClassCost(1, 1, ("alu",)),
    "alu_shift": ClassCost(1, 1, ("alu", "shift")),
    "dsp": ClassCost(1, 1, ("alu", "dsp")),
    "mul": ClassCost(1, 1, ("mac",)),
    "div": ClassCost(7, 14),                # single issue, stalls 7 cycles
    "load": ClassCost(1, 1, ("load",)),
    "store": ClassCost(1, 1, ("store",)),
    "load_dual": ClassCost(1, 2),           # single issue
    "store_dual": ClassCost(1, 2),
    "load_multi": ClassCost(0, 0),          # from the register count: see multiples()
    "store_multi": ClassCost(0, 0),
    "branch": ClassCost(1, 1, ("branch",)),
    "vfp": ClassCost(1, 1, ("fpu",)),
    "vfp_div": ClassCost(16, 1, ("fpu",)),  # latency 16; pipelined when nothing waits for it
    "vload": ClassCost(1, 1, ("load",)),
    "vstore": ClassCost(1, 1, ("store",)),
    "system": ClassCost(3, 2),              # single issue, latency 3
    "other": ClassCost(1, 2),               # not decoded: counted as issuing alone
}


@dataclass(frozen=True)
class CycleEstimate:
    low: float    # ideal dual issue
    high: float   # no pairing
    instructions: float
    table: str = TABLE

    def as_dict(self) -> dict:
        return asdict(self)


def _check(hist: dict) -> None:
    unknown = set(hist) - set(COSTS) - {REGS}
    if unknown:
        raise ValueError(f"instruction classes {sorted(unknown)} have no entry in the Cortex-M7 cycle table "
                         f"(cycles.COSTS); known: {', '.join(COSTS)}")


def estimate_cycles(hist: dict[str, float]) -> CycleEstimate:
    """Estimated cycle range of a class histogram (InstructionCount.classes or CostReport.classes)."""
    _check(hist)
    multi = sum(hist.get(k, 0) for k in ("load_multi", "store_multi"))
    regs = hist.get(REGS, 0)
    # load/store multiples issue alone: at least one cycle each; one (high) or two (low) registers a cycle
    multi_high, multi_low = max(multi, regs), max(multi, regs / 2)
    high = sum(n * COSTS[k].high for k, n in hist.items() if k != REGS) + multi_high
    slots = sum(n * COSTS[k].slots for k, n in hist.items() if k != REGS) + 2 * multi_low
    busy = {u: 0.0 for u in UNITS}
    for k, n in hist.items():
        for u in COSTS.get(k, ClassCost(0, 0)).units:
            busy[u] += n
    low = max([slots / 2] + [n / UNITS[u] for u, n in busy.items()])
    return CycleEstimate(low, high, sum(n for k, n in hist.items() if k != REGS))


def estimate_text(est: CycleEstimate) -> str:
    return (f"{est.low / 1e6:.1f}-{est.high / 1e6:.1f} M cycles (estimate: ideal pairing - no pairing, "
            f"{est.table})")

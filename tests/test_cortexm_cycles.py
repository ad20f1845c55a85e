"""The Cortex-M7 cycle ESTIMATE: the plugin's instruction timing classes (mt_insn_class.h) on encodings made by
the Arm assembler, the class histogram -> cycle range model (cycles.py), and one firmware run whose class
counts must add up to the instruction count exactly."""
from __future__ import annotations

import ctypes
import subprocess

import pytest

from c_lib import build_shared
from cortexm_util import require_arm_tools
from microtrain.targets.cortex_m import build_firmware, run_firmware
from microtrain.targets.cortex_m.cycles import COSTS, REGS, estimate_cycles
from microtrain.targets.cortex_m.qemu import PLUGIN_DIR

# (assembly, class, registers moved); Thumb-2, as gcc emits them for -mcpu=cortex-m7 -mfpu=fpv5-sp-d16
CASES = [
    ("adds r0, r1, r2", "alu", 0), ("mov r8, r9", "alu", 0), ("movw r0, #0x1234", "alu", 0),
    ("add.w r0, r1, #0x3fc", "alu", 0), ("add.w r0, r1, r2", "alu", 0), ("sub sp, #16", "alu", 0),
    ("it eq", "alu", 0), ("nop", "alu", 0), ("cmp r0, r1", "alu", 0),
    ("add.w r0, r1, r2, lsl #2", "alu_shift", 0), ("lsl.w r0, r1, r2", "alu_shift", 0),
    ("sxtb16 r0, r1", "dsp", 0), ("sxtb16 r0, r1, ror #8", "dsp", 0), ("uxtb r0, r1", "dsp", 0),
    ("ssat r0, #8, r1", "dsp", 0), ("pkhbt r0, r1, r2, lsl #16", "dsp", 0), ("rev r0, r1", "dsp", 0),
    ("sadd16 r0, r1, r2", "dsp", 0), ("ubfx r0, r1, #3, #5", "dsp", 0), ("clz r0, r1", "dsp", 0),
    ("muls r0, r1, r0", "mul", 0), ("mla r0, r1, r2, r3", "mul", 0), ("smlad r0, r1, r2, r3", "mul", 0),
    ("smlabb r0, r1, r2, r3", "mul", 0), ("smull r0, r1, r2, r3", "mul", 0), ("smlal r0, r1, r2, r3", "mul", 0),
    ("sdiv r0, r1, r2", "div", 0), ("udiv r0, r1, r2", "div", 0),
    ("ldr r0, [r1, #4]", "load", 0), ("ldrsb.w r0, [r1, r2]", "load", 0), ("ldr.w r0, [r1], #4", "load", 0),
    ("ldrh r0, [r1, r2]", "load", 0), ("ldr r0, [sp, #8]", "load", 0), ("ldrex r0, [r1]", "load", 0),
    ("str r0, [r1, #4]", "store", 0), ("strb.w r0, [r1, #-1]!", "store", 0), ("str r0, [sp, #4]", "store", 0),
    ("ldrd r0, r1, [r2, #8]", "load_dual", 0), ("strd r0, r1, [r2], #8", "store_dual", 0),
    ("ldmia r0!, {r1, r2, r3}", "load_multi", 3), ("ldmia.w r0, {r1, r2, r4, r8}", "load_multi", 4),
    ("pop {r4, r5, pc}", "load_multi", 3), ("push {r4-r7, lr}", "store_multi", 5),
    ("stmia.w r0!, {r1, r2}", "store_multi", 2), ("vpush {s16-s19}", "store_multi", 4),
    ("vldmia r0!, {s0-s7}", "load_multi", 8),
    ("bx lr", "branch", 0), ("bne.n .", "branch", 0), ("b.w .", "branch", 0), ("bl .", "branch", 0),
    ("cbz r0, .+4", "branch", 0), ("tbb [pc, r0]", "branch", 0), ("mov pc, r0", "branch", 0),
    ("vadd.f32 s0, s1, s2", "vfp", 0), ("vfma.f32 s0, s1, s2", "vfp", 0), ("vmul.f32 s0, s1, s2", "vfp", 0),
    ("vcvt.f32.s32 s0, s0", "vfp", 0), ("vmov r0, s1", "vfp", 0), ("vmrs APSR_nzcv, fpscr", "vfp", 0),
    ("vcmp.f32 s0, #0", "vfp", 0), ("vmaxnm.f32 s0, s1, s2", "vfp", 0),
    ("vdiv.f32 s0, s1, s2", "vfp_div", 0), ("vsqrt.f32 s0, s1", "vfp_div", 0),
    ("vldr s0, [r0, #8]", "vload", 0), ("vstr s0, [r0, #-4]", "vstore", 0),
    ("dsb sy", "system", 0), ("bkpt 0xab", "system", 0), ("mrs r0, primask", "system", 0), ("svc 0", "system", 0),
]


@pytest.fixture(scope="module")
def classify(tmp_path_factory):
    require_arm_tools()
    tmp = tmp_path_factory.mktemp("insn-class")
    wrapper = tmp / "wrap.c"
    wrapper.write_text(f'#include "{PLUGIN_DIR / "mt_insn_class.h"}"\n'
                       "int mt_test_class(const uint8_t *b, int size, unsigned *regs) "
                       "{ return mt_insn_class(b, (size_t)size, regs); }\n"
                       "const char *mt_test_class_name(int c) { return mt_insn_class_names[c]; }\n"
                       "int mt_test_n_classes(void) { return MT_N_CLASSES; }\n")
    lib = build_shared(tmp / "libclass.so", [wrapper])
    lib.mt_test_class_name.restype = ctypes.c_char_p
    names = [lib.mt_test_class_name(i).decode() for i in range(lib.mt_test_n_classes())]

    def run(code: bytes) -> tuple[str, int]:
        regs = ctypes.c_uint(99)
        c = lib.mt_test_class(code, len(code), ctypes.byref(regs))
        return names[c], regs.value

    run.names = names
    return run


def assemble(tmp_path, lines: list[str]) -> list[bytes]:
    """Each line's encoding, from arm-none-eabi-as (one instruction per line, each in its own section)."""
    src = tmp_path / "t.s"
    src.write_text(".syntax unified\n.thumb\n" + "".join(f".section .t{i},\"ax\"\n{a}\n" for i, a in enumerate(lines)))
    obj = tmp_path / "t.o"
    subprocess.run(["arm-none-eabi-as", "-mcpu=cortex-m7", "-mfpu=fpv5-sp-d16", "-mthumb", "-o", str(obj),
                    str(src)], check=True, capture_output=True, text=True)
    out = []
    for i in range(len(lines)):
        raw = tmp_path / f"t{i}.bin"
        subprocess.run(["arm-none-eabi-objcopy", "-O", "binary", f"--only-section=.t{i}", str(obj), str(raw)],
                       check=True, capture_output=True)
        out.append(raw.read_bytes())
    return out


def test_class_names_match_the_cycle_table(classify):
    assert set(classify.names) == set(COSTS)


def test_thumb2_encodings_decode_to_their_timing_class(classify, tmp_path):
    codes = assemble(tmp_path, [a for a, _, _ in CASES])
    wrong = []
    for (asm, cls, regs), code in zip(CASES, codes):
        assert len(code) in (2, 4), (asm, code.hex())
        got = classify(code)
        if got != (cls, regs):
            wrong.append(f"{asm} ({code.hex()}): {got}, expected {(cls, regs)}")
    assert not wrong, "\n".join(wrong)
    # the width is read from the first halfword: before a page end QEMU appends the next halfword it peeked at
    assert classify(bytes.fromhex("0444" "4ff4")) == ("alu", 0)  # add r4, r0 + the next halfword
    smlad = codes[[a for a, _, _ in CASES].index("smlad r0, r1, r2, r3")]
    assert classify(smlad + bytes.fromhex("4ff4")) == ("mul", 0)  # smlad + the next halfword
    assert classify(bytes.fromhex("4ff4")) == ("other", 0)       # a 32-bit instruction cut short


def test_model_turns_a_histogram_into_a_cycle_range():
    # 100 ALU + 100 loads + 100 SMLAD: unpaired 300 cycles; paired, issue slots bound it: 150
    e = estimate_cycles({"alu": 100, "load": 100, "mul": 100})
    assert (e.low, e.high, e.instructions) == (150, 300, 300)
    # 100 SMLAD alone: one MAC pipe, so pairing cannot help
    e = estimate_cycles({"mul": 100})
    assert (e.low, e.high) == (100, 100)
    # divides issue alone and stall 7; a 4-register POP: 4 cycles unpaired, 2 on the 64-bit path
    e = estimate_cycles({"div": 2, "load_multi": 1, REGS: 4})
    assert (e.low, e.high, e.instructions) == (14 + 2, 14 + 4, 3)
    with pytest.raises(ValueError, match="have no entry in the Cortex-M7 cycle table"):
        estimate_cycles({"alu": 1, "neon": 3})


COUNTED = r"""
#include "mt_semihost.h"
#include <arm_acle.h>
volatile int sink;
volatile float fsink = 3.0f;
__attribute__((noinline)) int dot(const int *a, const int *b, int n) {
    int acc = 0;
    for (int i = 0; i < n; i++) acc = __smlad(a[i], b[i], acc);
    return acc;
}
__attribute__((noinline)) float fwork(int n) {
    float x = fsink;
    for (int i = 0; i < n; i++) x = x / 1.5f + 1.0f;
    return x;
}
static int a[256], b[256];
int main(void) {
    for (int i = 0; i < 256; i++) { a[i] = i * 65537; b[i] = 3 - i; }
    mt_mark(1); sink = dot(a, b, 256);
    mt_mark(2); fsink = fwork(100);
    mt_mark(0);
    return 0;
}
"""


def test_class_counts_add_up_to_the_instruction_count(tmp_path):
    require_arm_tools()
    c = tmp_path / "prog.c"
    c.write_text(COUNTED)
    elf = build_firmware([c], tmp_path / "build" / "prog.elf", "cortex-m7").elf
    plain = run_firmware(elf, timeout=30, count=True).instructions
    counted = run_firmware(elf, timeout=30, count=True, classes=True).instructions
    assert plain.classes == {} and plain.region_classes == {}
    # the class mode does not change what is counted
    assert (counted.total, counted.regions, counted.symbols) == (plain.total, plain.regions, plain.symbols)
    instructions = {k: n for k, n in counted.classes.items() if k != REGS}
    assert sum(instructions.values()) == counted.total
    for region, (_, n) in counted.regions.items():
        assert sum(v for k, v in counted.region_classes[region].items() if k != REGS) == n, region
    dot, fdiv = counted.region_classes[1], counted.region_classes[2]
    assert dot["mul"] >= 256 and dot["load"] >= 2 * 256  # one SMLAD and two loads per element
    assert fdiv["vfp_div"] == 100
    assert counted.classes["other"] == 0
    est = estimate_cycles(counted.classes)
    assert est.instructions == counted.total and 0 < est.low < est.high

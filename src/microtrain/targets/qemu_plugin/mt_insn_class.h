/* Timing class of one ARMv7-M Thumb / Thumb-2 instruction, decoded from its bytes (used by mt_icount.c in its
 * `classes=on` mode, once per instruction at translation time, never per execution).
 * The classes follow the Cortex-M7 pipes that bound its throughput (two ALUs with one early shifter, a
 * DSP/SIMD path that issues from the first slot only, one MAC, two load pipes, one store pipe, one branch
 * unit, one FPU; some instructions issue alone): targets/cortex_m/cycles.py turns their counts into an
 * estimated cycle range. Decoding follows the ARMv7-M Architecture Reference Manual (A5.2 16-bit, A5.3
 * 32-bit encodings, A6 floating point). Only the classes are decoded: no operands besides register lists. */
#ifndef MT_INSN_CLASS_H
#define MT_INSN_CLASS_H

#include <stddef.h>
#include <stdint.h>

enum mt_insn_class {
    MT_ALU,       /* data processing without a shifted operand, moves, compares, IT, NOP */
    MT_ALU_SHIFT, /* data processing with a shifted register operand, register-controlled shifts */
    MT_DSP,       /* extends (SXTB, SXTB16, UXTAB...), SIMD add/sub, saturation, REV, bit fields, CLZ, SEL */
    MT_MUL,       /* 32-bit and long multiplies and multiply-accumulates, SMLAD, SMLABB, USAD8... */
    MT_DIV,       /* SDIV, UDIV */
    MT_LOAD,      /* LDR / LDRB / LDRH / LDRSB / LDRSH (any addressing), LDREX, PLD */
    MT_STORE,     /* STR / STRB / STRH, STREX */
    MT_LOAD_DUAL, /* LDRD */
    MT_STORE_DUAL, /* STRD */
    MT_LOAD_MULTI, /* LDM, POP, VLDM, VPOP: register count in *regs */
    MT_STORE_MULTI, /* STM, PUSH, VSTM, VPUSH: register count in *regs */
    MT_BRANCH,    /* B, B<cond>, BL, BX, BLX, CBZ/CBNZ, TBB/TBH, ADD/MOV to PC */
    MT_VFP,       /* floating-point data processing (VADD, VMUL, VFMA, VCVT, VCMP...), VMOV, VMRS/VMSR */
    MT_VFP_DIV,   /* VDIV, VSQRT */
    MT_VLOAD,     /* VLDR */
    MT_VSTORE,    /* VSTR */
    MT_SYSTEM,    /* MRS, MSR, barriers, SVC, BKPT, UDF, CPS, WFI/WFE/SEV */
    MT_OTHER,     /* anything not decoded above (expected to be absent from compiled firmware) */
    MT_N_CLASSES
};

static const char *const mt_insn_class_names[MT_N_CLASSES] = {
    "alu", "alu_shift", "dsp", "mul", "div", "load", "store", "load_dual", "store_dual", "load_multi",
    "store_multi", "branch", "vfp", "vfp_div", "vload", "vstore", "system", "other"};

static unsigned mt_popcount16(unsigned v)
{
    unsigned n = 0;
    for (v &= 0xFFFF; v; v &= v - 1) n++;
    return n;
}

static int mt_class16(unsigned h, unsigned *regs)
{
    if ((h >> 14) == 0) return MT_ALU; /* shift by immediate, add, sub, mov, cmp */
    if ((h >> 10) == 0x10) return ((h >> 6) & 0xF) == 0xD ? MT_MUL : MT_ALU; /* data processing; MULS */
    if ((h >> 10) == 0x11) { /* special data processing, BX / BLX */
        if (((h >> 8) & 3) == 3) return MT_BRANCH;
        unsigned rd = ((h >> 4) & 8) | (h & 7);
        return (((h >> 8) & 3) != 1 && rd == 15) ? MT_BRANCH : MT_ALU; /* ADD / MOV to PC; CMP never writes */
    }
    if ((h >> 11) == 0x09) return MT_LOAD; /* LDR literal */
    if ((h >> 12) == 0x5) return ((h >> 9) & 7) <= 2 ? MT_STORE : MT_LOAD; /* register offset */
    if ((h >> 13) == 0x3 || (h >> 12) == 0x8 || (h >> 12) == 0x9) /* immediate offset, halfword, SP-relative */
        return (h >> 11) & 1 ? MT_LOAD : MT_STORE;
    if ((h >> 12) == 0xA) return MT_ALU; /* ADR, ADD SP + imm */
    if ((h >> 12) == 0xB) { /* miscellaneous */
        unsigned op = (h >> 5) & 0x7F;
        if ((op & 0x78) == 0x00) return MT_ALU;          /* ADD / SUB SP, imm */
        if ((h & 0x0500) == 0x0100) return MT_BRANCH;    /* CBZ / CBNZ */
        if ((op & 0x78) == 0x10) return MT_DSP;          /* SXTH, SXTB, UXTH, UXTB */
        if ((op & 0x70) == 0x20) { *regs = mt_popcount16(h & 0x1FF); return MT_STORE_MULTI; } /* PUSH */
        if ((op & 0x7F) == 0x33) return MT_SYSTEM;       /* CPS */
        if ((op & 0x78) == 0x50) return MT_DSP;          /* REV, REV16, REVSH */
        if ((op & 0x70) == 0x60) { *regs = mt_popcount16(h & 0x1FF); return MT_LOAD_MULTI; } /* POP */
        if ((op & 0x78) == 0x70) return MT_SYSTEM;       /* BKPT */
        if ((op & 0x78) == 0x78) { /* IT and hints */
            if (h & 0xF) return MT_ALU;                  /* IT */
            return ((h >> 4) & 0xF) == 0 ? MT_ALU : MT_SYSTEM; /* NOP; YIELD, WFE, WFI, SEV */
        }
        return MT_OTHER;
    }
    if ((h >> 12) == 0xC) { /* STM / LDM */
        *regs = mt_popcount16(h & 0xFF);
        return (h >> 11) & 1 ? MT_LOAD_MULTI : MT_STORE_MULTI;
    }
    if ((h >> 12) == 0xD) return ((h >> 9) & 7) == 7 ? MT_SYSTEM : MT_BRANCH; /* UDF / SVC; B<cond> */
    if ((h >> 11) == 0x1C) return MT_BRANCH; /* B */
    return MT_OTHER;
}

/* Floating-point and other coprocessor space: first halfword 111x 11xx xxxx xxxx. */
static int mt_class_coproc(unsigned h1, unsigned h2, unsigned *regs)
{
    unsigned cp = (h2 >> 8) & 0xF;
    if (cp != 10 && cp != 11) return MT_OTHER;
    if ((h1 & 0xFFE0) == 0xEC40) return MT_VFP;  /* VMOV between two core registers and FP registers */
    if ((h1 & 0xFE00) == 0xEC00) {               /* extension register load / store */
        if ((h1 & 0x0120) == 0x0100) return (h1 >> 4) & 1 ? MT_VLOAD : MT_VSTORE; /* VLDR / VSTR */
        unsigned imm8 = h2 & 0xFF;
        *regs = cp == 11 ? imm8 / 2 : imm8;     /* VLDM / VSTM / VPUSH / VPOP: count of words moved / width */
        return (h1 >> 4) & 1 ? MT_LOAD_MULTI : MT_STORE_MULTI;
    }
    if ((h1 & 0xFF00) == 0xEE00) {
        if (h2 & 0x10) return MT_VFP;           /* VMOV core <-> single, VMRS, VMSR */
        unsigned opc1 = (h1 >> 4) & 0xB, opc2 = h1 & 0xF, opc3 = (h2 >> 6) & 3;
        if (opc1 == 0x8) return MT_VFP_DIV;     /* VDIV */
        if (opc1 == 0xB && opc2 == 1 && opc3 == 3) return MT_VFP_DIV; /* VSQRT */
        return MT_VFP;
    }
    return MT_VFP; /* FPv5 unconditional space: VSEL, VMAXNM, VRINTx, VCVTx */
}

static int mt_class32(unsigned h1, unsigned h2, unsigned *regs)
{
    unsigned op1 = (h1 >> 11) & 3, op2 = (h1 >> 4) & 0x7F;
    if (op1 == 1) {
        if ((op2 & 0x64) == 0x00) { /* load / store multiple */
            *regs = mt_popcount16(h2);
            return (h1 >> 4) & 1 ? MT_LOAD_MULTI : MT_STORE_MULTI;
        }
        if ((op2 & 0x64) == 0x04) { /* load / store dual, exclusive, table branch */
            unsigned p_u = (h1 >> 7) & 3, w = (h1 >> 5) & 1, load = (h1 >> 4) & 1;
            if (p_u == 0 && !w) return load ? MT_LOAD : MT_STORE;  /* LDREX / STREX */
            if (p_u == 1 && !w) {
                if (!load) return MT_STORE;                        /* STREXB / STREXH */
                return ((h2 >> 5) & 7) == 0 ? MT_BRANCH : MT_LOAD; /* TBB / TBH; LDREXB / LDREXH */
            }
            return load ? MT_LOAD_DUAL : MT_STORE_DUAL;
        }
        if ((op2 & 0x60) == 0x20) { /* data processing, shifted register */
            if ((h1 & 0xFFF0) == 0xEAC0) return MT_DSP;            /* PKHBT / PKHTB */
            unsigned shift = ((h2 >> 10) & 0x1C) | ((h2 >> 6) & 3), type = (h2 >> 4) & 3;
            return (shift == 0 && type == 0) ? MT_ALU : MT_ALU_SHIFT;
        }
        return mt_class_coproc(h1, h2, regs);
    }
    if (op1 == 2) {
        if (h2 & 0x8000) { /* branches and miscellaneous control */
            if (h2 & 0x1000) return MT_BRANCH;                     /* B.W, BL */
            if (h2 & 0x4000) return MT_OTHER;                      /* BLX immediate: not in ARMv7-M */
            if (((h1 >> 7) & 7) != 7) return MT_BRANCH;            /* B<cond>.W */
            if ((h1 & 0xFFF0) == 0xF3A0 && (h2 & 0xFF) == 0) return MT_ALU; /* NOP.W */
            return MT_SYSTEM;                                      /* MSR, MRS, hints, barriers, UDF */
        }
        if (!(h1 & 0x0200)) return MT_ALU; /* data processing, modified immediate */
        switch ((h1 >> 4) & 0x1F) {        /* plain binary immediate */
        case 0x00: case 0x04: case 0x0A: case 0x0C: return MT_ALU; /* ADDW, MOVW, SUBW, MOVT */
        default: return MT_DSP;            /* SSAT, USAT, SSAT16, USAT16, SBFX, UBFX, BFI, BFC */
        }
    }
    /* op1 == 3 */
    if ((op2 & 0x71) == 0x00) return MT_STORE;                     /* STR / STRB / STRH, all forms */
    if ((op2 & 0x60) == 0x00) return MT_LOAD;                      /* LDR / LDRB / LDRH / LDRS*, PLD, PLI */
    if ((op2 & 0x70) == 0x20) {                                    /* data processing, register */
        if ((h1 & 0xFF80) == 0xFA00 && (h2 & 0xF0F0) == 0xF000) return MT_ALU_SHIFT; /* LSL/LSR/ASR/ROR reg */
        return MT_DSP; /* extends, parallel add/sub, QADD, REV, RBIT, SEL, CLZ */
    }
    if ((op2 & 0x78) == 0x30) return MT_MUL;                       /* MUL, MLA, SMULxy, SMLAD, USAD8... */
    if ((op2 & 0x78) == 0x38) {                                    /* long multiply, divide */
        unsigned op = (h1 >> 4) & 7;
        return (op == 1 || op == 3) ? MT_DIV : MT_MUL;
    }
    if (op2 & 0x40) return mt_class_coproc(h1, h2, regs);
    return MT_OTHER;
}

/* Class of the instruction at `bytes` (memory order, `size` bytes readable); *regs = registers moved by a
 * load/store multiple (0 for every other class). The width comes from the first halfword, not from `size`:
 * QEMU 7.2 appends to an instruction's bytes the halfword it peeks at to see whether the next instruction
 * crosses a page (4 bytes for a 16-bit, 6 for a 32-bit instruction ending 2 bytes before a page end). */
static int mt_insn_class(const uint8_t *bytes, size_t size, unsigned *regs)
{
    *regs = 0;
    if (size < 2) return MT_OTHER;
    unsigned h1 = bytes[0] | (unsigned)bytes[1] << 8;
    if ((h1 >> 11) < 0x1D) return mt_class16(h1, regs);
    if (size < 4) return MT_OTHER;
    unsigned h2 = bytes[2] | (unsigned)bytes[3] << 8;
    return mt_class32(h1, h2, regs);
}

#endif

/* Reset and fault handling for Cortex-M7/M4F/M3 under QEMU's mps2 boards (and real parts with the same core):
 * vector table, FPU enable, .data copy, .bss zeroing, stack painting; main's return value becomes QEMU's exit
 * status. Symbols come from mt_firmware.ld. */
#include <stdint.h>

#include "mt_semihost.h"

extern uint32_t __stack_start[], __stack_end[];
extern uint32_t __data_start[], __data_end[], __data_load[];
extern uint32_t __bss_start[], __bss_end[];

int main(void);
void Reset_Handler(void);
void Fault_Handler(void);
void Default_Handler(void);

#define STACK_PAINT 0xC5C5C5C5u
#define EXIT_FAULT 70 /* status of a run that ended in a CPU fault */

__attribute__((section(".vectors"), used)) static void (*const vector_table[16])(void) = {
    (void (*)(void))(uintptr_t)__stack_end, /* initial SP: top of the stack section */
    Reset_Handler,
    Default_Handler, /* NMI */
    Fault_Handler,   /* HardFault */
    Fault_Handler,   /* MemManage */
    Fault_Handler,   /* BusFault */
    Fault_Handler,   /* UsageFault */
    0, 0, 0, 0,
    Default_Handler, /* SVC */
    Default_Handler, /* DebugMon */
    0,
    Default_Handler, /* PendSV */
    Default_Handler, /* SysTick */
};

/* Plain loops: this must not be turned back into calls to memcpy/memset (not yet safe before .data). */
__attribute__((optimize("no-tree-loop-distribute-patterns"))) void Reset_Handler(void)
{
#if defined(__ARM_FP)
    /* CPACR: full access to CP10/CP11 before any floating-point instruction (a core without an FPU, built
     * with software floating point, has no CPACR to write). */
    *(volatile uint32_t *)0xE000ED88u |= 0xFu << 20;
    __asm__ volatile("dsb\n\tisb" ::: "memory");
#endif

    for (uint32_t *src = __data_load, *dst = __data_start; dst < __data_end;) *dst++ = *src++;
    for (uint32_t *p = __bss_start; p < __bss_end; p++) *p = 0;

    /* Paint the unused stack below the current frame, keeping a margin for this function. */
    uint32_t *sp;
    __asm__ volatile("mov %0, sp" : "=r"(sp));
    for (uint32_t *p = __stack_start; p < sp - 16; p++) *p = STACK_PAINT;

    mt_exit(main());
}

size_t mt_stack_used(void)
{
    const uint32_t *p = __stack_start;
    while (p < __stack_end && *p == STACK_PAINT) p++;
    return (size_t)((const char *)__stack_end - (const char *)p);
}

size_t mt_stack_size(void)
{
    return (size_t)((const char *)__stack_end - (const char *)__stack_start);
}

void Fault_Handler(void)
{
    /* A stack overflow lands here too: the stack sits at the bottom of RAM, so it faults instead of
     * overwriting data. Switch to a fresh stack top before printing. */
    __asm__ volatile("msr msp, %0" ::"r"(__stack_end));
    uint32_t cfsr = *(volatile uint32_t *)0xE000ED28u;
    uint32_t hfsr = *(volatile uint32_t *)0xE000ED2Cu;
    mt_printf("microtrain firmware: CPU fault (CFSR=0x%x HFSR=0x%x)\n", (unsigned)cfsr, (unsigned)hfsr);
    mt_exit(EXIT_FAULT);
}

void Default_Handler(void)
{
    mt_puts("microtrain firmware: unexpected interrupt\n");
    mt_exit(EXIT_FAULT + 1);
}

/* The cost-marker table: MT_MAX_MARKS consecutive `bx lr` (see mt_mark in mt_semihost.h). */
__asm__(".section .text.mt_marks,\"ax\",%progbits\n"
        ".global mt_marks\n"
        ".type mt_marks, %function\n"
        ".thumb_func\n"
        ".balign 4\n"
        "mt_marks:\n"
        ".rept 4096\n"
        "bx lr\n"
        ".endr\n"
        ".size mt_marks, . - mt_marks\n"
        ".text\n");

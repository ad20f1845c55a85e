"""Memory budget constants of the target (STM32F746-class: 256 KB SRAM). Imports nothing, so the CLI
can show its defaults without loading NumPy."""

KB = 1024
FIRMWARE_RESERVE = 2048  # SRAM the firmware links besides the plan (startup, semihosting): 1,676 B measured
HARNESS_STACK = 1536  # stack the Cortex-M harness and semihosting add on top of the model's own stack estimate
DEFAULT_SRAM_BUDGET = 256 * KB - FIRMWARE_RESERVE  # STM32F746-class RAM, for the planned total (+ stack)
STACK_ESTIMATE = 1024  # bytes: entry point + deepest kernel frame; checked by a test with -fstack-usage
KERNEL_SCRATCH_MAX = STACK_ESTIMATE // 2  # a kernel's work arrays (codegen.scratch); the rest is call frames
STATE_BYTES = 16  # mt_train_ctx (learning rate, rounding seed, update counter, guard skips): the only static scratch

# Parts `compile --board` knows: (SRAM, flash) in bytes, their real memory maps (RAM contiguous from 0x20000000)
BOARDS = {
    "stm32f746": (320 * KB, 1024 * KB),  # Cortex-M7: DTCM 64 K + SRAM1 240 K + SRAM2 16 K; 1 MB flash
    "stm32f412": (256 * KB, 1024 * KB),  # Cortex-M4: 256 KB SRAM, 1 MB flash
    "stm32f411": (128 * KB, 512 * KB),  # Cortex-M4: 128 KB SRAM, 512 KB flash
}


def part_memory(board: str | None, ram: int | None, flash: int | None) -> tuple[int, int] | None:
    """(SRAM, flash) bytes of the part `compile`/`plan` target: a named board, overridden by explicit sizes;
    None when neither is given. ValueError names an unknown board."""
    if board is None and ram is None and flash is None:
        return None
    if board is not None and board.lower() not in BOARDS:
        raise ValueError(f"unknown board {board!r}; known: {', '.join(sorted(BOARDS))} (or give --ram and --flash)")
    base = BOARDS[board.lower()] if board is not None else (256 * KB, 1024 * KB)
    return ram or base[0], flash or base[1]


def part_sram_budget(ram: int) -> int:
    """The planned SRAM (arena + trained parameters + state + stack estimate) a part of `ram` bytes holds:
    the firmware's own SRAM and the harness stack come off first."""
    return ram - FIRMWARE_RESERVE - HARNESS_STACK

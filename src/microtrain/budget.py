"""Memory budget constants of the target (STM32F746-class: 256 KB SRAM). Imports nothing, so the CLI
can show its defaults without loading NumPy."""

KB = 1024
FIRMWARE_RESERVE = 2048  # SRAM the firmware links besides the plan (startup, semihosting): 1,676 B measured
DEFAULT_SRAM_BUDGET = 256 * KB - FIRMWARE_RESERVE  # STM32F746-class RAM, for the planned total (+ stack)
STACK_ESTIMATE = 1024  # bytes: entry point + deepest kernel frame; checked by a test with -fstack-usage
KERNEL_SCRATCH_MAX = STACK_ESTIMATE // 2  # a kernel's work arrays (codegen.scratch); the rest is call frames
STATE_BYTES = 16  # mt_train_ctx (learning rate, rounding seed, update counter, guard skips): the only static scratch

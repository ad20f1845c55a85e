# Building a microtrain firmware for Cortex-M7 / Cortex-M4F / Cortex-M3 (arm-none-eabi-gcc). Usable on its own:
#   make -f mt_cortex_m.mk CPU=cortex-m7 SRCS="main.c model.c" INCLUDES="-I." OUT=build/firmware.elf \
#        SIMD=1 SIMD_SRCS=kernels/arm/mt_forward_s8_simd.c
# microtrain's Python side (targets/cortex_m) runs exactly this file, so the two cannot drift apart.
# FIRMWARE_DIR is the directory of this fragment (startup, semihosting, linker script).
FIRMWARE_DIR ?= $(dir $(lastword $(MAKEFILE_LIST)))
CPU        ?= cortex-m7
ARM_CC     ?= arm-none-eabi-gcc
OUT        ?= build/firmware.elf
STACK_SIZE ?= 8192
OPT        ?= -O2
SIMD       ?= 1
SRCS       ?=
INCLUDES   ?=
DEFINES    ?=
# Measurement-only builds may raise the SRAM limit (bytes) to count instructions of a model too big for the MCU.
RAM_LIMIT  ?=

comma := ,
ifeq ($(CPU),cortex-m7)
FPU := -mfpu=fpv5-sp-d16
# FPv5's directed-rounding conversions (VCVTM), which gcc announces by no macro of its own
FPU_DEFINES := -DMT_FPV5=1
else ifeq ($(CPU),cortex-m4)
FPU := -mfpu=fpv4-sp-d16
else ifeq ($(CPU),cortex-m3)
# no FPU: float arithmetic in software (libgcc, IEEE single precision, so the same bits as the host); no DSP
# extension, so only the portable kernels
FLOAT_ABI := soft
ifeq ($(SIMD),1)
$(error cortex-m3 has no DSP extension and no FPU: build it with SIMD=0)
endif
else
$(error CPU must be cortex-m7, cortex-m4 or cortex-m3, not '$(CPU)')
endif
FLOAT_ABI ?= hard

# -ffp-contract=off: no fused multiply-add, the int8 arithmetic is defined without it (quant/arith.py).
ARCH_FLAGS := -mcpu=$(CPU) -mthumb $(FPU) -mfloat-abi=$(FLOAT_ABI)
CFLAGS := $(ARCH_FLAGS) $(OPT) -std=c99 -ffreestanding -fno-builtin-printf -ffp-contract=off \
          -fno-math-errno -ffunction-sections -fdata-sections -Wall -Wno-unused-function -Werror=implicit-function-declaration \
          -I$(FIRMWARE_DIR) $(INCLUDES) $(DEFINES) $(FPU_DEFINES) -DMT_TARGET_CORTEX_M=1 -DMT_SIMD=$(SIMD)
LDFLAGS := $(ARCH_FLAGS) -nostartfiles -nostdlib -T$(FIRMWARE_DIR)mt_firmware.ld \
           -Wl,--defsym=__stack_size=$(STACK_SIZE) -Wl,--gc-sections -Wl,-Map=$(OUT:.elf=.map) \
           -Wl,--print-memory-usage $(if $(RAM_LIMIT),-Wl$(comma)--defsym=__ram_length=$(RAM_LIMIT)) \
           $(if $(FLASH_LIMIT),-Wl$(comma)--defsym=__flash_length=$(FLASH_LIMIT))

FIRMWARE_SRCS := $(FIRMWARE_DIR)mt_startup.c $(FIRMWARE_DIR)mt_semihost.c

# SIMD=1: link the Cortex-M kernels (SIMD_SRCS, from codegen/kernels/arm: SIMD int8 forward, register-blocked
# float backward) in place of their portable twins, which are compiled renamed *_portable (unused ones are
# then dropped by --gc-sections). The kernels to rename are the ones SIMD_SRCS define (read from the files,
# so adding a fast kernel needs no list here); the portable sources call none of each other's kernels.
SIMD_SRCS ?=
KERNEL_DEFINITION := s/^void \(mt_[a-z0-9_]*\)(.*/\1/p
ifeq ($(SIMD),1)
SIMD_KERNELS := $(if $(strip $(SIMD_SRCS)),$(sort $(filter-out %_portable,$(shell sed -n '$(KERNEL_DEFINITION)' $(SIMD_SRCS)))))
ALL_SRCS := $(SRCS) $(SIMD_SRCS)
PORTABLE_RENAMES := $(foreach k,$(SIMD_KERNELS),-D$(k)=$(k)_portable)
BACKWARD_RENAMES := $(PORTABLE_RENAMES)
else
ALL_SRCS := $(SRCS)
PORTABLE_RENAMES :=
BACKWARD_RENAMES :=
endif
BUILD_DIR := $(dir $(OUT))
OBJS := $(addprefix $(BUILD_DIR)obj/,$(notdir $(ALL_SRCS:.c=.o) $(FIRMWARE_SRCS:.c=.o))) $(BUILD_DIR)obj/mt_libc.o

# Rebuild everything when the flags change (CPU, SIMD, defines), and objects when their headers change.
FLAGS_STAMP := $(BUILD_DIR)obj/flags.txt
FLAGS_TEXT := $(CFLAGS) | $(PORTABLE_RENAMES) $(BACKWARD_RENAMES) | $(LDFLAGS)
$(shell mkdir -p $(BUILD_DIR)obj && (echo '$(FLAGS_TEXT)' | cmp -s - $(FLAGS_STAMP) || echo '$(FLAGS_TEXT)' > $(FLAGS_STAMP)))
.DEFAULT_GOAL := $(OUT)
-include $(OBJS:.o=.d)

$(OUT): $(OBJS) $(FIRMWARE_DIR)mt_firmware.ld
	$(ARM_CC) $(LDFLAGS) -o $@ $(OBJS) -lm -lgcc

vpath %.c $(sort $(dir $(ALL_SRCS) $(FIRMWARE_SRCS)))

$(BUILD_DIR)obj/mt_libc.o: $(FIRMWARE_DIR)mt_libc.c $(FLAGS_STAMP) | $(BUILD_DIR)obj
	$(ARM_CC) $(CFLAGS) -MMD -MP -fno-tree-loop-distribute-patterns -c $< -o $@

$(BUILD_DIR)obj/%.o: %.c $(FLAGS_STAMP) | $(BUILD_DIR)obj
	$(ARM_CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD_DIR)obj/mt_forward_s8.o: CFLAGS += $(PORTABLE_RENAMES)
$(BUILD_DIR)obj/mt_backward_f32.o: CFLAGS += $(BACKWARD_RENAMES)
$(BUILD_DIR)obj/mt_backward_i16.o: CFLAGS += $(BACKWARD_RENAMES)

$(BUILD_DIR)obj:
	mkdir -p $@

.PHONY: firmware
firmware: $(OUT)

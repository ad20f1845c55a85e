"""bit_masks: clamp masks are stored as 1 bit per element ("bit" dtype) instead of a bool byte.

The forward kernel packs bit i of the NHWC flat index into byte i >> 3 (kernels/mt_kernels.h); the
values (which gradients pass) are unchanged, the memory drops 8x."""
from __future__ import annotations

from dataclasses import replace

from .common import with_steps


def bit_masks(tg):
    tensors = {k: (replace(v, dtype="bit") if v.role == "mask" else v) for k, v in tg.tensors.items()}
    return with_steps(tg, tg.steps, tensors)


def mask_nbytes(info) -> int:
    n = 1
    for d in info.shape:
        n *= int(d)
    return (n + 7) // 8 if info.dtype == "bit" else n

"""Applying an SGD update to int8 weights and int32 biases: rounding and saturation.

delta = -lr * grad / divisor (float32). Rounding of the new value W + delta (W is an integer):
- "nearest":    W + rint(delta)              (half to even; sub-LSB updates are lost)
- "stochastic": W + floor(delta + u)         u in [0, 1) from a counter-based hash (below), so
                E[result] = W + delta and a C implementation reproduces it bit for bit
- "none":       float parameters (fp32 baseline): W + delta
then saturation to int8 [-128, 127] or int32 [INT32_MIN, INT32_MAX].
"""
from __future__ import annotations

import numpy as np

from .arith import INT8_MAX, INT8_MIN, INT32_MAX, INT32_MIN

M32 = np.uint64(0xFFFFFFFF)


def fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finaliser on uint64 arrays holding uint32 values (result < 2**32)."""
    h = np.asarray(h, dtype=np.uint64) & M32
    h ^= h >> np.uint64(16)
    h = (h * np.uint64(0x85EBCA6B)) & M32
    h ^= h >> np.uint64(13)
    h = (h * np.uint64(0xC2B2AE35)) & M32
    h ^= h >> np.uint64(16)
    return h


def rounding_hash(seed: int, step: int, param_id: int, index: np.ndarray) -> np.ndarray:
    """uint32 hash (a uint32 array) of (seed, step, param_id, element index), all taken modulo 2**32:
    h = fmix32(fmix32(fmix32(fmix32(seed) ^ step) ^ param_id) ^ index). `index` may be uint32 already."""
    k = fmix32(np.uint64(int(seed) & 0xFFFFFFFF))
    k = fmix32(k ^ np.uint64(int(step) & 0xFFFFFFFF))
    k = fmix32(k ^ np.uint64(int(param_id) & 0xFFFFFFFF))
    index = np.asarray(index)
    if index.dtype != np.uint32:  # the index modulo 2**32 (what & 0xFFFFFFFF keeps)
        index = (np.asarray(index, dtype=np.uint64) & M32).astype(np.uint32)
    return fmix32_u32(index ^ np.uint32(k))


def fmix32_u32(h: np.ndarray) -> np.ndarray:
    """fmix32 on a uint32 array, in uint32 arithmetic: multiplication wraps modulo 2**32, which is what
    fmix32's `& 0xFFFFFFFF` after each uint64 product keeps, so the values are the same (half the memory)."""
    h = h ^ (h >> np.uint32(16))
    h *= np.uint32(0x85EBCA6B)
    h ^= h >> np.uint32(13)
    h *= np.uint32(0xC2B2AE35)
    h ^= h >> np.uint32(16)
    return h


def uniform_from_hash(h: np.ndarray) -> np.ndarray:
    """u = float32(h >> 8) * 2**-24, exactly representable, in [0, 1)."""
    return (h >> np.uint64(8)).astype(np.float32) * np.float32(2.0**-24)


def round_delta(delta: np.ndarray, rounding: str, *, seed=0, step=0, param_id=0, index=None) -> np.ndarray:
    """Integer (float64-held) rounding of a float32 delta; `index` = flat element indices in the
    full parameter tensor (C order), needed by "stochastic"."""
    delta = np.asarray(delta, dtype=np.float32)
    if rounding == "nearest":
        return np.rint(delta).astype(np.float64)
    if rounding == "stochastic":
        u = uniform_from_hash(rounding_hash(seed, step, param_id, index)).reshape(delta.shape)
        return np.floor(delta + u).astype(np.float64)  # float32 sum, then floor
    raise ValueError(f"unknown rounding {rounding!r}")


def apply_update(current: np.ndarray, delta: np.ndarray, rounding: str, saturate, **hash_args) -> np.ndarray:
    """New parameter values from current values and a float32 delta (same shape)."""
    if rounding == "none" or saturate is None:
        return (current.astype(np.float32) + delta.astype(np.float32)).astype(current.dtype)
    step = round_delta(delta, rounding, **hash_args)
    new = current.astype(np.float64) + step  # exact: |values| < 2**53
    if saturate == "int8":
        return np.clip(new, INT8_MIN, INT8_MAX).astype(np.int8)
    if saturate == "int32":
        return np.clip(new, INT32_MIN, INT32_MAX).astype(np.int32)
    raise ValueError(f"unknown saturation {saturate!r}")

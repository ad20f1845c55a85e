"""Exact depthwise window sums through torch's conv2d, when torch is installed (the optional `torch` extra).

The int8 forward's accumulator is a sum of integer products whose every partial sum a per-layer bound keeps
below 2**24 (float32) or 2**53 (float64): each product and each sum is then an exact integer, so ANY order of
multiplications and additions, with or without FMA, gives the same number (ops/conv.py: exact_dtype). That is
what lets a faster evaluation replace NumPy's tap loop without changing a bit: torch's direct depthwise kernel
(oneDNN; no Winograd or FFT, which would not be exact) is about 10x faster than the NumPy tap loop at the
shapes of mcunet-5fps (benchmarks/profile_fine_tune.py). Only integer-valued operands may come here: float
graphs (the fp32 baseline) and every gradient keep NumPy's order, since their sums round. The one thing the
order can change is the sign of a zero sum (-0.0 or 0.0); no consumer sees it: requantisation adds the
float32 bias first (x + 0.0 and x + b are the same for both zeros), the tflite mode converts to int64.

Checked once per process against NumPy's exact loop on random operands at the bound (`agrees`); if torch is
missing or disagrees, `depthwise_accumulate` returns None and the caller runs the NumPy loop. torch runs on
one thread here, like the simulation's BLAS (runtime/trainer.single_threaded_blas): the experiments run one
process per core. MICROTRAIN_TORCH_SUMS=0 switches it off (A/B timing).
"""
from __future__ import annotations

import functools
import os

import numpy as np


@functools.lru_cache(maxsize=None)
def _torch():
    if os.environ.get("MICROTRAIN_TORCH_SUMS", "1") == "0":
        return None
    try:
        import torch
    except ImportError:
        return None
    return torch


def _conv(torch, xs: np.ndarray, wt: np.ndarray, s: int, p: int, d: int) -> np.ndarray:
    """NHWC xs (C-contiguous), wt (C, 1, kh, kw) of xs's dtype -> NHWC depthwise window sums (C-contiguous)."""
    x = torch.from_numpy(xs).permute(0, 3, 1, 2)  # NCHW view with channels-last strides: no copy
    w = torch.from_numpy(wt)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            y = torch.nn.functional.conv2d(x, w, stride=s, padding=p, dilation=d, groups=xs.shape[-1])
    finally:
        torch.set_num_threads(threads)
    return np.ascontiguousarray(y.permute(0, 2, 3, 1).numpy())


@functools.lru_cache(maxsize=None)
def agrees() -> bool:
    """Whether torch's depthwise sums equal NumPy's exact loop here, on integer operands whose window sums reach
    the float32 bound (and in float64 beyond it), strides 1 and 2, kernels 3-7, a dilation."""
    torch = _torch()
    if torch is None:
        return False
    from .conv import depthwise_accumulate, out_hw

    rng = np.random.default_rng(2026)
    for n, h, c, k, s, d, dtype in ((3, 9, 5, 3, 1, 1, np.float32), (2, 12, 7, 7, 2, 1, np.float32),
                                    (2, 10, 4, 5, 1, 2, np.float32), (2, 8, 3, 3, 2, 1, np.float64)):
        p = (k - 1) // 2
        ho, wo = out_hw(h, h, {"kernel": (k, k), "stride": s, "padding": p, "dilation": d})
        top = 255 if dtype == np.float32 else 2**20
        xs = rng.integers(-top, top + 1, (n, h, h, c)).astype(dtype)
        wt = rng.integers(-128, 128, (c, 1, k, k)).astype(dtype)
        xs[0], wt[0] = top, 127  # one sample of all-maximal products (the largest sums)
        ref = depthwise_accumulate(xs, wt[:, 0], s, p, ho, wo, d)
        got = _conv(torch, np.ascontiguousarray(xs), wt, s, p, d)
        if got.shape != ref.shape or not np.array_equal(got, ref):
            return False
    return True


def depthwise_accumulate(xs: np.ndarray, wt: np.ndarray, s: int, p: int, d: int = 1) -> np.ndarray | None:
    """Exact depthwise window sums (NHWC) of integer-valued xs and integer weights wt (C, 1, kh, kw), both in the
    dtype the bound chose (float32 or float64); None when torch is unavailable or not exact here."""
    torch = _torch()
    if torch is None or not agrees():
        return None
    xs = np.ascontiguousarray(xs)
    if not xs.flags.writeable:  # torch.from_numpy warns about read-only arrays (it never writes here)
        xs = xs.copy()
    return _conv(torch, xs, np.ascontiguousarray(wt), s, p, d)

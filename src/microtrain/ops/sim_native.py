"""The training simulation's hottest loops compiled (sim_native.c), computing exactly what the NumPy code computes,
so every stored accuracy result stays valid: the depthwise input and weight gradients and the float depthwise
forward in the NumPy code's float32 order (ops/conv.py), the clamp gradient (ops/common.masked_gradient), and
the requantisation with its clamp mask and the int8 / int32 update through the device kernels' own mt_arith.h and
mt_update.h (quant/arith.py, quant/update.py). About 2x per training epoch (docs/measurements.md).

The library is built with the host's C compiler on first use (cached by source hash under $MICROTRAIN_CACHE or
~/.cache/microtrain) and then checked once per process against the NumPy code on random operands, bit for bit
(`_matches_numpy`). Without a compiler, if the build or the check fails, or with MICROTRAIN_SIM_NATIVE=0,
`lib()` is None and the NumPy code runs: the same numbers, slower. Each wrapper returns None for operands it does
not cover, and its caller then runs NumPy.
"""
from __future__ import annotations

import ctypes
import functools
import os
import warnings
from pathlib import Path

import numpy as np

from ..cache import cache_root, host_shared_library

SOURCE = Path(__file__).with_name("sim_native.c")
KERNELS = Path(__file__).parents[1] / "codegen" / "kernels"
INCLUDED = (KERNELS / "mt_arith.h", KERNELS / "mt_update.h")  # the C kernels' requantisation and update
FLAGS = ["-O3", "-ffp-contract=off", "-fno-fast-math", "-fno-trapping-math", "-std=c99", "-Wall", "-Werror"]
_F = np.ctypeslib.ndpointer(np.float32, flags="C_CONTIGUOUS")
_I = ctypes.c_int
_I32 = np.ctypeslib.ndpointer(np.int32, flags="C_CONTIGUOUS")
_S8 = np.ctypeslib.ndpointer(np.int8, flags="C_CONTIGUOUS")
_U8 = np.ctypeslib.ndpointer(np.uint8, flags="C_CONTIGUOUS")


def _build() -> Path | None:
    lib, _ = host_shared_library("libmt_sim", SOURCE, INCLUDED, (FLAGS + ["-march=native"], FLAGS),
                                 cache_root() / "sim_native")  # native vectors where the compiler knows the host
    return lib


def _load(path: Path):
    so = ctypes.CDLL(str(path))
    so.mt_sim_dw_grad_input.argtypes = [_F, _I, _I, _I, _I, _F, _I, _I, _F, _I, _I, _I, _I, _I, _F]
    so.mt_sim_dw_grad_input.restype = None
    so.mt_sim_dw_grad_weight.argtypes = [_F, _I, _I, _I, _F, _I, _I, _I, _I, _I, _I, _I32, _I, _F, _F]
    so.mt_sim_dw_grad_weight.restype = None
    so.mt_sim_requant_s8.argtypes = [ctypes.c_void_p, _I, ctypes.c_longlong, _I, _I32, _F, _I, _S8, ctypes.c_void_p]
    so.mt_sim_requant_s8.restype = None
    so.mt_sim_masked_grad.argtypes = [_F, ctypes.c_longlong, _I, _F, _U8, _F]
    so.mt_sim_masked_grad.restype = None
    so.mt_sim_update.argtypes = [ctypes.c_void_p, _I, ctypes.c_longlong, _F, _I, ctypes.c_uint32, ctypes.c_uint32,
                                 ctypes.c_uint32, ctypes.c_void_p, ctypes.c_void_p]
    so.mt_sim_update.restype = None
    so.mt_sim_dw_forward.argtypes = [_F, _I, _I, _I, _I, _F, _I, _I, _I, _I, _F, _I, _I]
    so.mt_sim_dw_forward.restype = None
    return so


SWITCH_ON, SWITCH_OFF = ("1", "on", "yes", "true", ""), ("0", "off", "no", "false")


@functools.lru_cache(maxsize=None)
def lib():
    """The loaded library, or None (NumPy then runs: see the module docstring)."""
    switch = os.environ.get("MICROTRAIN_SIM_NATIVE", "1").strip().lower()
    if switch not in SWITCH_ON:
        if switch not in SWITCH_OFF:  # a typo must not pass for "on" or "off" silently
            warnings.warn(f"MICROTRAIN_SIM_NATIVE={switch!r} is neither 1 nor 0: running NumPy (same numbers, slower)")
        return None
    try:
        path = _build()
        so = _load(path) if path else None
    except OSError:
        so = None
    if so is None:
        return None
    _LIB[0] = so
    try:
        ok = _matches_numpy()
    finally:
        _LIB[0] = None
    if not ok:
        warnings.warn(f"{path}: the compiled simulation kernels differ from NumPy's; using NumPy (slower)")
        return None
    return so


_LIB = [None]  # the library under test while lib() checks it


def active():
    """The library ops/conv.py should call now, or None (NumPy)."""
    return _LIB[0] or lib()


def dw_grad_input(g_acc: np.ndarray, wt: np.ndarray, gx: np.ndarray, s: int, d: int, p: int = 0, so=None) -> None:
    """conv.depthwise_grad_input in C: gx float32 zeros, contiguous, (N, Hp, Wp, C) padded (p = 0) or
    (N, H, W, C) with the padding p cropped (contributions to padding positions skipped); wt (C, kh, kw)."""
    so = so or active()
    n, ho, wo, c = g_acc.shape
    _, kh, kw = wt.shape
    g = np.ascontiguousarray(g_acc, dtype=np.float32)
    w = np.ascontiguousarray(wt, dtype=np.float32)
    so.mt_sim_dw_grad_input(g, n, ho, wo, c, w, kh, kw, gx, gx.shape[1], gx.shape[2], s, d, p,
                            np.empty(c, np.float32))


def dw_forward(xp: np.ndarray, wt: np.ndarray, s: int, d: int, ho: int, wo: int, so=None) -> np.ndarray:
    """conv.depthwise_accumulate of float32 operands in C: xp (N, Hp, Wp, C) padded, wt (C, kh, kw)."""
    so = so or active()
    n, hp, wp, c = xp.shape
    _, kh, kw = wt.shape
    out = np.empty((n, ho, wo, c), np.float32)
    so.mt_sim_dw_forward(np.ascontiguousarray(xp, dtype=np.float32), n, hp, wp, c,
                         np.ascontiguousarray(wt.transpose(1, 2, 0), dtype=np.float32), kh, kw, s, d, out, ho, wo)
    return out


def dw_grad_weight(xp: np.ndarray, g_acc: np.ndarray, kh: int, kw: int, s: int, piece_samples, so=None):
    """conv.depthwise_grad_weight in C: (C, 1, kh, kw) from the padded, channel-gathered input xp and the
    gathered gradient g_acc; piece_samples: einsum's pieces in whole samples (conv.einsum_pieces)."""
    so = so or active()
    n, hp, wp, c = xp.shape
    _, ho, wo, _ = g_acc.shape
    pieces = np.asarray(piece_samples, dtype=np.int32)
    out = np.empty((kh * kw, c), np.float32)
    so.mt_sim_dw_grad_weight(np.ascontiguousarray(xp, dtype=np.float32), n, hp, wp,
                             np.ascontiguousarray(g_acc, dtype=np.float32), ho, wo, c, kh, kw, s, pieces, len(pieces),
                             out, np.empty(kh * kw * 4 * c, np.float32))
    return np.ascontiguousarray(out.reshape(kh, kw, c).transpose(2, 0, 1))[:, None]


def requant_s8(acc: np.ndarray, bias, eff, y_zero: int, want_mask: bool):
    """(int8 output, clamp mask or None) of quant/arith.requantize_conv / clamp_int8(conv_preclamp(...)) by the
    C kernels' requantisation (mt_arith.h), or None when it does not apply (the caller runs NumPy): acc must be
    a C-contiguous float32/float64 (..., C) array of integers (float32: exact, so below 2**24; float64: checked
    within int32), bias int32-representable, eff finite."""
    so = active()
    if so is None or acc.dtype not in (np.float32, np.float64) or not acc.flags.c_contiguous or acc.ndim < 1:
        return None
    c = acc.shape[-1]
    b = np.asarray(bias)
    e = np.asarray(eff)
    if (b.shape != (c,) or e.shape != (c,) or b.dtype.kind not in "iu" or e.dtype != np.float32
            or not np.isfinite(e).all() or int(b.min(initial=0)) < -2**31 or int(b.max(initial=0)) >= 2**31
            or not -2**31 <= int(y_zero) < 2**31):
        return None
    if acc.dtype == np.float64 and acc.size and not -2**31 <= acc.min() <= acc.max() < 2**31:
        return None  # (a float32 accumulator holds exact integers only below 2**24)
    out = np.empty(acc.shape, np.int8)
    mask = np.empty(acc.shape, np.uint8) if want_mask else None
    so.mt_sim_requant_s8(acc.ctypes.data, int(acc.dtype == np.float64), acc.size // max(c, 1), c,
                         np.ascontiguousarray(b, dtype=np.int32), e, int(y_zero), out,
                         None if mask is None else mask.ctypes.data)
    return out, (mask.view(np.bool_) if want_mask else None)


def masked_grad(g_y: np.ndarray, scale, mask: np.ndarray):
    """common.masked_gradient in C, or None when it does not apply: g_y float32, mask a C-contiguous bool array
    of its shape; scale per channel (C,) or one value (rounded to float32 as masked_gradient does)."""
    so = active()
    if (so is None or g_y.dtype != np.float32 or mask.dtype != np.bool_ or mask.shape != g_y.shape or g_y.ndim < 1
            or not mask.flags.c_contiguous):
        return None
    c = g_y.shape[-1]
    sc = np.asarray(scale, dtype=np.float32)  # (masked_gradient rounds the scale to float32 first too)
    if sc.shape not in ((), (c,), (1,)):
        return None
    g_y = np.ascontiguousarray(g_y)  # (a padded gradient's interior view: the same values)
    sc = np.ascontiguousarray(np.broadcast_to(sc.reshape(-1), (c,)))
    out = np.empty_like(g_y)
    so.mt_sim_masked_grad(g_y, g_y.size // max(c, 1), c, sc, mask.view(np.uint8), out)
    return out


ROUNDING = {"nearest": 0, "stochastic": 1}  # mt_update.h's MT_ROUND_*


def apply_update(current: np.ndarray, delta: np.ndarray, rounding: str, saturate, *, seed=0, step=0, param_id=0,
                 index=None):
    """quant/update.apply_update by the C kernels' update (mt_update.h), or None when it does not apply (float
    parameters, a non-finite delta, other dtypes): the caller then runs NumPy."""
    so = active()
    kind = {"int8": np.int8, "int32": np.int32}.get(saturate)
    if (so is None or rounding not in ROUNDING or kind is None or current.dtype != kind
            or delta.dtype != np.float32 or delta.shape != current.shape or not np.isfinite(delta).all()):
        return None
    if rounding == "stochastic":
        if index is None or np.shape(index) != current.shape:
            return None
        idx = np.ascontiguousarray(index, dtype=np.uint32)
    else:
        idx = np.zeros(current.shape, np.uint32)
    cur = np.ascontiguousarray(current)
    out = np.empty_like(cur)
    so.mt_sim_update(cur.ctypes.data, int(kind is np.int32), cur.size, np.ascontiguousarray(delta), ROUNDING[rounding],
                     int(seed) & 0xFFFFFFFF, int(step) & 0xFFFFFFFF, int(param_id) & 0xFFFFFFFF, idx.ctypes.data,
                     out.ctypes.data)
    return out


def _matches_numpy() -> bool:
    """The compiled kernels against the NumPy ones (ops/conv.py) on random operands, bit for bit: signed zeros,
    wide exponents, strides 1 and 2, 3x3 and 5x5, a channel subset, inputs long enough for several pieces."""
    from . import conv

    rng = np.random.default_rng(2027)
    for n, h, c, k, s, sub in ((3, 8, 6, 3, 1, False), (2, 16, 5, 5, 2, True), (3, 64, 3, 3, 1, False),
                               (4, 8, 16, 3, 2, True), (2, 4, 40, 3, 1, False)):
        p = (k - 1) // 2
        ho = (h + 2 * p - k) // s + 1
        xs = rng.integers(-255, 256, (n, h, h, c)).astype(np.float32)
        g = (rng.standard_normal((n, ho, ho, c)) * np.exp(rng.uniform(-8, 4, (n, ho, ho, c)))).astype(np.float32)
        g[rng.random(g.shape) < 0.2] = np.float32(-0.0)
        wt = rng.integers(-127, 128, (c, k, k)).astype(np.float32)
        a = np.zeros((n, h + 2 * p, h + 2 * p, c), np.float32)
        conv.depthwise_grad_input(g, wt, a, s)
        cropped = np.zeros((n, h, h, c), np.float32)
        dw_grad_input(g, wt, cropped, s, 1, p)
        if not np.array_equal(a[:, p : p + h, p : p + h].view(np.uint32), cropped.view(np.uint32)):
            return False
        ch = np.arange(c)[::2] if sub else np.arange(c)
        ref = conv.depthwise_grad_weight(xs, g, ch, k, k, s, p, native=False)
        if ref is None:
            continue
        got = conv.depthwise_grad_weight(xs, g, ch, k, k, s, p)
        if got is None or not np.array_equal(ref.view(np.uint32), got.view(np.uint32)):
            return False
    return _requant_matches(rng) and _masked_matches(rng) and _update_matches(rng) and _forward_matches(rng)


def _requant_matches(rng) -> bool:
    from ..quant.arith import conv_preclamp, requantize_conv
    from .common import clamp_int8

    for dtype, c in ((np.float32, 16), (np.float64, 70)):
        acc = rng.integers(-2**22, 2**22, (5, 7, c)).astype(dtype)
        acc[0, 0, :2] = (2**31 - 1, -2**31) if dtype == np.float64 else (2**24, -2**24)  # int32 / exact limits
        bias = rng.integers(-2**20, 2**20, c).astype(np.int32)
        bias[:2] = (-2**31, 2**31 - 1)  # a dead channel's bias
        eff = np.exp(rng.uniform(-14, -2, c)).astype(np.float32)
        zero = int(rng.integers(-128, 128))
        got = requant_s8(acc, bias, eff, zero, True)
        y, m = clamp_int8(conv_preclamp(acc, bias, eff, zero))
        if got is None or not (np.array_equal(got[0], y) and np.array_equal(got[1], m)
                               and np.array_equal(requant_s8(acc, bias, eff, zero, False)[0],
                                                  requantize_conv(acc, bias, eff, zero))):
            return False
    return True


def _masked_matches(rng) -> bool:
    from .common import masked_gradient

    g = (rng.standard_normal((3, 5, 24)) * np.exp(rng.uniform(-30, 30, (3, 5, 24)))).astype(np.float32)
    g.flat[:4] = (np.float32(-0.0), np.float32(np.nan), np.float32(np.inf), np.float32(-np.inf))
    mask = rng.random(g.shape) < 0.6
    wide = np.pad(g, ((0, 0), (1, 1), (0, 0)))[:, 1:-1]  # a padded gradient's interior: not contiguous
    for scale in (np.exp(rng.uniform(-6, 2, 24)).astype(np.float32), np.float32(0.37), 0.1234567891):
        for gv in (g, wide):
            got = masked_grad(gv, scale, mask)
            ref = masked_gradient(gv, scale, mask, native=False)
            if got is None or not np.array_equal(got.view(np.uint32), ref.view(np.uint32)):
                return False
    return True


def _update_matches(rng) -> bool:
    from ..quant import update

    for kind, sat in ((np.int8, "int8"), (np.int32, "int32")):
        info = np.iinfo(kind)
        cur = rng.integers(info.min, info.max, (7, 13), endpoint=True).astype(kind)
        cur.flat[:2] = (info.min, info.max)
        delta = (rng.standard_normal(cur.shape) * np.exp(rng.uniform(-6, 6, cur.shape))).astype(np.float32)
        delta.flat[:4] = (-3e9, 3e9, -0.5, 0.5)  # saturation both ways, ties
        index = rng.integers(0, 2**32, cur.shape, dtype=np.uint64).astype(np.uint32)
        for rounding in ROUNDING:
            args = dict(seed=int(rng.integers(2**32)), step=int(rng.integers(2**31)), param_id=7, index=index)
            got = apply_update(cur, delta, rounding, sat, **args)
            if got is None or not np.array_equal(got, update.apply_update(cur, delta, rounding, sat, **args)):
                return False
    return True


def _forward_matches(rng) -> bool:
    from . import conv

    for n, h, c, k, s, d in ((3, 9, 6, 3, 1, 1), (2, 12, 20, 5, 2, 1), (2, 10, 5, 3, 2, 2)):
        p = (d * (k - 1)) // 2
        ho = (h + 2 * p - d * (k - 1) - 1) // s + 1
        xs = (rng.standard_normal((n, h, h, c)) * np.exp(rng.uniform(-20, 20, (n, h, h, c)))).astype(np.float32)
        xs[rng.random(xs.shape) < 0.2] = np.float32(-0.0)
        wt = rng.standard_normal((c, k, k)).astype(np.float32)
        wt[0] = np.float32(-0.0)
        got = conv.depthwise_accumulate(xs, wt, s, p, ho, ho, d)
        ref = conv.depthwise_accumulate(xs, wt, s, p, ho, ho, d, native=False)
        if not np.array_equal(got.view(np.uint32), ref.view(np.uint32)):
            return False
    return True

"""What several op modules share: the output clamp of training forwards and the C update parameters."""
from __future__ import annotations

import numpy as np

from ..errors import UnsupportedOpError
from ..ir.program import Const, Params
from ..quant.arith import channel_rows
from . import sim_native

ROUNDING_C = {"nearest": "MT_ROUND_NEAREST", "stochastic": "MT_ROUND_STOCHASTIC"}


def clamp_range(graph, node) -> tuple[float, float]:
    """The output range a node clamps to: int8 codes [-128, 127], or a float graph's clamp/activation."""
    if graph.dtype == "int8":
        return (-128.0, 127.0)
    if "clamp" in node.attrs:
        lo, hi = node.attrs["clamp"]
        return (float(lo), float(hi))
    act = node.attrs.get("activation")
    return {None: (-np.inf, np.inf), "relu": (0.0, np.inf), "relu6": (0.0, 6.0)}.get(act, (-np.inf, np.inf))


def int8_clamp(node) -> tuple[int, int]:
    """The int8 range a node's output clamps to: [-128, 127], or in the "tflite" rounding mode the fused
    activation's range attrs["clamp"] (a ReLU or ReLU6 of a .tflite model)."""
    if node.attrs.get("requant") == "tflite" and "clamp" in node.attrs:
        lo, hi = node.attrs["clamp"]
        return int(lo), int(hi)
    return -128, 127


def refuse_tiles_in_tflite_mode(node) -> None:
    """Patch-based execution (codegen/patch.py) has only the float rounding mode's kernels."""
    if node.attrs.get("requant") == "tflite":
        raise UnsupportedOpError(f"node {node.name!r}: patch-based execution does not support the tflite rounding "
                                 "mode yet (compile without patches)")


def clamp_int8(r: np.ndarray, lo: int = -128, hi: int = 127):
    """(int8 output, clamp mask) of a pre-clamp integer result."""
    y = np.clip(r, lo, hi)
    return y.astype(np.int8), y == r  # in range <=> unchanged by the clip (NaN: False either way)


def masked_gradient(g_y: np.ndarray, scale, mask: np.ndarray, native: bool = True) -> np.ndarray:
    """np.where(mask, float32(g_y) * float32(scale), 0) as float32: the gradient through a clamp (conv's
    accumulator gradient, add's addend gradients). A bool mask of the product's shape zeroes the fresh product
    in place: its bits ANDed with all-ones where the mask holds and with 0 (the bits of +0.0) where not, the
    same values as np.where (signed zeros and NaN included) at about a third of np.putmask's time. native: the
    same operation compiled (ops/sim_native.py) when it applies."""
    if native:
        fast = sim_native.masked_grad(g_y, scale, mask)
        if fast is not None:
            return fast
    g_y = g_y.astype(np.float32, copy=False)
    rows, (sc,) = channel_rows(g_y, np.asarray(scale, dtype=np.float32))
    g = (rows * sc).reshape(np.broadcast_shapes(g_y.shape, np.shape(scale)))
    if mask.dtype == np.bool_ and mask.shape == g.shape and g.flags.c_contiguous and mask.flags.c_contiguous:
        keep = mask.astype(np.uint32)  # 1 or 0
        np.negative(keep, out=keep)  # 1 -> 0xFFFFFFFF, 0 -> 0
        bits = g.view(np.uint32)
        np.bitwise_and(bits, keep, out=bits)
        return g
    return np.where(mask, g, np.float32(0)).astype(np.float32, copy=False)


def clamp_float(graph, node, pre: np.ndarray, save_mask: bool):
    """(float32 output, clamp mask or None) of a float graph's pre-activation."""
    lo, hi = clamp_range(graph, node)
    y = np.clip(pre, lo, hi).astype(np.float32)
    return y, ((pre >= lo) & (pre <= hi)) if save_mask else None


def update_params(prog, name: str, divisor_name: str, divisor, attrs, full_in: int) -> str:
    """Declare the mt_update_params struct (and its divisor array) of one fused update step."""
    if attrs.get("momentum"):
        raise UnsupportedOpError("momentum is not supported by the C training step (the device runs plain SGD)")
    if attrs["rounding"] not in ROUNDING_C:
        raise UnsupportedOpError(f"rounding {attrs['rounding']!r} has no C implementation (int8 training only)")
    prog.add_const(Const(divisor_name, np.asarray(divisor, np.float32), "float32"))
    prog.add_params(Params(name, "mt_update_params", [divisor_name, int(attrs["param_id"]) & 0xFFFFFFFF,
                                                      ROUNDING_C[attrs["rounding"]], full_in, 0]))
    return name

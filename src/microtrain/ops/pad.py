"""pad: explicit spatial zero padding (TFLite PAD, and the asymmetric 'SAME' padding of strided convs).

attrs: pads (top, bottom, left, right), each >= 0. int8: pads with the input's zero point, i.e. real 0,
so a conv after it sums exactly what a conv with built-in padding would; the output keeps the input's
scale and zero point. MACs 0; the gradient crops the padding off.
"""
from __future__ import annotations

import numpy as np

from ..errors import GraphError

OP = "pad"


def pads_of(attrs: dict, name: str = "?") -> tuple[int, int, int, int]:
    pads = tuple(int(v) for v in attrs["pads"])
    if len(pads) != 4 or min(pads) < 0:
        raise GraphError(f"node {name!r}: pads must be 4 non-negative ints (top, bottom, left, right), got {pads}")
    return pads


def infer_shape(node, in_shapes):
    if len(in_shapes) != 1:
        raise GraphError(f"pad {node.name!r}: needs exactly 1 input")
    (h, w, c), = in_shapes
    t, b, l, r = pads_of(node.attrs, node.name)
    return (h + t + b, w + l + r, c)


def macs(node, in_shape, out_shape) -> int:
    return 0


def _pad(x: np.ndarray, node, value) -> np.ndarray:
    t, b, l, r = pads_of(node.attrs, node.name)
    return np.pad(x, ((0, 0), (t, b), (l, r), (0, 0)), constant_values=value)


def forward_int8(node, x, qx, qy):
    return _pad(x, node, np.int8(qx.zero_point))


def forward_float(node, x):
    return _pad(x, node, np.float32(0))


# ----- backward (float32) -----------------------------------------------------------------------------
def grad_input(g_y: np.ndarray, attrs: dict, in_shape) -> np.ndarray:
    """The padded positions are constants: the input's gradient is g_y without them."""
    t, _, l, _ = pads_of(attrs)
    h, w, _ = in_shape
    return np.ascontiguousarray(g_y[:, t : t + h, l : l + w, :], dtype=np.float32)

"""global_avg_pool: mean over H and W, (H, W, C) -> (1, 1, C).

int8: stays in the input's quantisation domain (output scale/zero point = input's), rint(mean)
with ties to even, computed exactly in integers.
"""
from __future__ import annotations

import numpy as np

from ..errors import GraphError
from ..quant.arith import avgpool_int8

OP = "global_avg_pool"


def infer_shape(node, in_shapes):
    if len(in_shapes) != 1:
        raise GraphError(f"global_avg_pool {node.name!r}: needs exactly 1 input")
    h, w, c = in_shapes[0]
    return (1, 1, c)


def macs(node, in_shape, out_shape) -> int:
    return 0


def forward_int8(node, x, qx, qy):
    if node.attrs.get("requant") == "tflite":
        from ..quant.arith import avgpool_int8_tflite

        return avgpool_int8_tflite(x, tuple(node.attrs.get("clamp", (-128, 127))))
    return avgpool_int8(x)


def forward_float(node, x):
    return x.mean(axis=(1, 2), keepdims=True, dtype=np.float32)


# ----- backward (float32) -----------------------------------------------------------------------------
def grad_input(g_y: np.ndarray, in_shape) -> np.ndarray:
    """Mean over H*W: every input position receives g_y / (H*W) (rint is straight-through)."""
    h, w, c = in_shape
    g = g_y.astype(np.float32) / np.float32(h * w)
    return np.broadcast_to(g, (g_y.shape[0], h, w, c)).astype(np.float32)

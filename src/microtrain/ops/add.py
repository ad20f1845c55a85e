"""add: residual sum of two tensors of equal shape (inputs: [skip, main]).

int8: each addend is dequantised with its own tensor's scale/zero point, the float32 sum is
requantised to the output's (quant/arith.add_requant).
"""
from __future__ import annotations

from ..errors import GraphError
from ..quant.arith import add_requant

OP = "add"


def infer_shape(node, in_shapes):
    if len(in_shapes) != 2:
        raise GraphError(f"add {node.name!r}: needs exactly 2 inputs, got {len(in_shapes)}")
    a, b = in_shapes
    if tuple(a) != tuple(b):
        raise GraphError(f"add {node.name!r}: input shapes differ: {tuple(a)} vs {tuple(b)}")
    return tuple(a)


def macs(node, in_shape, out_shape) -> int:
    return 0


def forward_int8(node, a, b, qa, qb, qy):
    if node.attrs.get("requant") == "tflite":
        from ..quant.arith import add_requant_tflite

        return add_requant_tflite(a, qa.zero_point, qa.scale, b, qb.zero_point, qb.scale, qy.scale, qy.zero_point,
                                  tuple(node.attrs.get("clamp", (-128, 127))))
    return add_requant(a, qa.zero_point, qa.scale, b, qb.zero_point, qb.scale, qy.scale, qy.zero_point)


def forward_float(node, a, b):
    y = a + b
    act = node.attrs.get("activation")
    if act is not None:
        from .conv import apply_activation

        y = apply_activation(y, act)
    return y


# ----- backward (float32; see docs/training-semantics.md) ---------------------------------------------
def grad_addend(g_y, mask, scale):
    """Gradient w.r.t. one addend: g_y * mask * scale, scale = s_addend / s_y (int8) or 1 (float).

    Each addend gets its own contribution; a tensor that also feeds other ops (the skip branch)
    sums every contribution (autodiff emits a grad_sum step): none is dropped.
    """
    import numpy as np

    g = g_y.astype(np.float32) * np.float32(scale)
    return np.where(mask, g, np.float32(0)).astype(np.float32, copy=False)

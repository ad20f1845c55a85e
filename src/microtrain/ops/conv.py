"""conv2d: dense, depthwise, pointwise and grouped convolution (NHWC activations, OIHW weights).

attrs: kernel (kh, kw), stride, padding (pad on each side, = (k-1)//2 for the upstream models),
groups, role ("classifier" or absent), activation (float graphs only: None | "relu" | "relu6";
in an int8 graph the activation is the int8 clamp of the output's quantisation range).
params (int8 graph): weight int8, bias int32, w_scales float32 [O].
params (float graph): weight float32, bias float32.
"""
from __future__ import annotations

import numpy as np

from ..errors import GraphError
from ..quant.arith import conv_multipliers, requantize_conv

OP = "conv2d"


def out_hw(h: int, w: int, attrs: dict) -> tuple[int, int]:
    kh, kw = attrs["kernel"]
    s, p = attrs["stride"], attrs["padding"]
    return (h + 2 * p - kh) // s + 1, (w + 2 * p - kw) // s + 1


def infer_shape(node, in_shapes):
    (h, w, c), = in_shapes
    weight = node.params.get("weight")
    if weight is None or weight.ndim != 4:
        raise GraphError(f"conv {node.name!r}: weight must be a 4-D array (O, I/groups, kh, kw)")
    o, ig, kh, kw = weight.shape
    g = node.attrs.get("groups", 1)
    if tuple(node.attrs.get("kernel", ())) != (kh, kw):
        raise GraphError(f"conv {node.name!r}: kernel attr {node.attrs.get('kernel')} != weight {kh}x{kw}")
    if g < 1 or c % g or o % g or ig * g != c:
        raise GraphError(
            f"conv {node.name!r}: input has {c} channels but weight {weight.shape} with groups={g} "
            f"expects {ig * g}"
        )
    if node.attrs.get("stride", 0) < 1 or node.attrs.get("padding", -1) < 0:
        raise GraphError(f"conv {node.name!r}: stride must be >= 1 and padding >= 0, got {node.attrs}")
    bias = node.params.get("bias")
    if bias is None or bias.shape != (o,):
        raise GraphError(f"conv {node.name!r}: bias must have shape ({o},), got {None if bias is None else bias.shape}")
    if "w_scales" in node.params and node.params["w_scales"].shape != (o,):
        raise GraphError(f"conv {node.name!r}: w_scales must have shape ({o},), got {node.params['w_scales'].shape}")
    ho, wo = out_hw(h, w, node.attrs)
    if ho < 1 or wo < 1:
        raise GraphError(f"conv {node.name!r}: input {h}x{w} is too small for kernel {kh}x{kw}")
    return (ho, wo, o)


def is_depthwise(node) -> bool:
    o, ig = node.params["weight"].shape[:2]
    return ig == 1 and node.attrs.get("groups", 1) == o and o > 1


def is_pointwise(node) -> bool:
    return tuple(node.attrs["kernel"]) == (1, 1) and node.attrs.get("groups", 1) == 1 and node.attrs["padding"] == 0


def kind(node) -> str:
    if node.attrs.get("role") == "classifier":
        return "classifier"
    if is_depthwise(node):
        return "depthwise"
    if is_pointwise(node):
        return "pointwise"
    return "conv"


def macs(node, in_shape, out_shape) -> int:
    o, ig, kh, kw = node.params["weight"].shape
    return int(out_shape[0] * out_shape[1] * o * ig * kh * kw)


# ----- the integer accumulator (exact) ---------------------------------------------------------------
def pad_nhwc(x: np.ndarray, p: int) -> np.ndarray:
    if p == 0:
        return x
    return np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))


def im2col(xp: np.ndarray, kh: int, kw: int, stride: int, ho: int, wo: int) -> np.ndarray:
    """(N, Hp, Wp, C) -> (N, Ho, Wo, kh, kw, C) strided view of every window."""
    n, hp, wp, c = xp.shape
    sn, sh, sw, sc = xp.strides
    return np.lib.stride_tricks.as_strided(
        xp, shape=(n, ho, wo, kh, kw, c), strides=(sn, sh * stride, sw * stride, sh, sw, sc), writeable=False
    )


def conv_accumulate(xs: np.ndarray, weight: np.ndarray, attrs: dict) -> np.ndarray:
    """Exact sum over each window of xs * W, NHWC in, NHWC out.

    xs holds integers (the zero-point-shifted input) or floats; integer results are exact because
    depthwise sums use float32 below 2**24 and every GEMM runs in float64.
    """
    o, ig, kh, kw = weight.shape
    s, p, g = attrs["stride"], attrs["padding"], attrs.get("groups", 1)
    n, h, w, c = xs.shape
    ho, wo = out_hw(h, w, attrs)
    float_graph = xs.dtype == np.float32 and weight.dtype == np.float32
    gemm_dtype = np.float32 if float_graph else np.float64
    if kh == kw == 1 and g == 1 and p == 0:
        x2 = xs[:, : s * ho : s, : s * wo : s, :].reshape(-1, c).astype(gemm_dtype, copy=False)
        return (x2 @ weight.reshape(o, c).T.astype(gemm_dtype)).reshape(n, ho, wo, o)
    xp = pad_nhwc(xs, p)
    if ig == 1 and g == c == o:
        # depthwise: |sum| <= kh*kw*256*128 < 2**24 for kernels up to 22x22, so float32 is exact
        acc_dtype = np.float32
        acc = np.zeros((n, ho, wo, o), dtype=acc_dtype)
        wt = weight[:, 0].astype(acc_dtype)
        for i in range(kh):
            for j in range(kw):
                acc += xp[:, i : i + s * ho : s, j : j + s * wo : s, :] * wt[:, i, j]
        return acc
    cols = im2col(xp, kh, kw, s, ho, wo)  # (N, Ho, Wo, kh, kw, C)
    og = o // g
    out = np.empty((n, ho, wo, o), dtype=gemm_dtype)
    for gi in range(g):
        cg = cols[..., gi * ig : (gi + 1) * ig].reshape(n * ho * wo, kh * kw * ig).astype(gemm_dtype)
        wg = weight[gi * og : (gi + 1) * og].transpose(0, 2, 3, 1).reshape(og, kh * kw * ig).astype(gemm_dtype)
        out[..., gi * og : (gi + 1) * og] = (cg @ wg.T).reshape(n, ho, wo, og)
    return out


# ----- forward ----------------------------------------------------------------------------------------
def shifted_input(x_q: np.ndarray, x_zero: int) -> np.ndarray:
    """q_x - x_zero as float32 (exact): padding then adds real zeros, as the arithmetic requires."""
    return x_q.astype(np.float32) - np.float32(x_zero)


def forward_int8(node, x_q: np.ndarray, x_quant, y_quant) -> np.ndarray:
    acc = conv_accumulate(shifted_input(x_q, x_quant.zero_point), node.params["weight"], node.attrs)
    eff = conv_multipliers(x_quant.scale, node.params["w_scales"], y_quant.scale)
    return requantize_conv(acc, node.params["bias"], eff, y_quant.zero_point)


def apply_activation(y: np.ndarray, activation) -> np.ndarray:
    if activation is None:
        return y
    if activation == "relu":
        return np.maximum(y, 0)
    if activation == "relu6":
        return np.clip(y, 0, 6)
    raise GraphError(f"unknown activation {activation!r}")


def forward_float(node, x: np.ndarray) -> np.ndarray:
    y = conv_accumulate(x.astype(np.float32), node.params["weight"].astype(np.float32), node.attrs)
    y = y.astype(np.float32) + node.params["bias"].astype(np.float32)
    return apply_activation(y, node.attrs.get("activation"))

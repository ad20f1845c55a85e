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
from ..quant.arith import conv_multipliers, requant_mode, requantize_conv

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


F32_EXACT = 2**24  # float32 holds every integer of magnitude <= 2**24 exactly
CHUNK_ELEMS = 2**18  # per-chunk output elements of the depthwise / forward loops: temporaries stay in cache


def exact_dtype(xs: np.ndarray, weight_rows: np.ndarray):
    """float32 if every partial sum of an integer window sum stays within 2**24 (then float32 is exact in
    any summation order, FMA or not), else float64 (exact below 2**53). weight_rows: (O, K) integers."""
    xmax = max(abs(float(xs.max(initial=0))), abs(float(xs.min(initial=0))))
    wsum = float(np.abs(weight_rows.astype(np.int64)).sum(axis=1).max(initial=0))
    return np.float32 if xmax * wsum <= F32_EXACT else np.float64


def conv_accumulate(xs: np.ndarray, weight: np.ndarray, attrs: dict) -> np.ndarray:
    """Exact sum over each window of xs * W, NHWC in, NHWC out.

    xs holds integers (the zero-point-shifted input, integer weights) or floats (a float graph: float32
    weights, float32 result). Integer results are exact: each sum runs in float32 when its magnitude
    bound (max |xs| * max over outputs of sum |W|) is within 2**24, else in float64.
    """
    o, ig, kh, kw = weight.shape
    s, p, g = attrs["stride"], attrs["padding"], attrs.get("groups", 1)
    n, h, w, c = xs.shape
    ho, wo = out_hw(h, w, attrs)
    float_graph = xs.dtype == np.float32 and weight.dtype == np.float32
    rows = weight.transpose(0, 2, 3, 1).reshape(o, kh * kw * ig)  # (O, K), K ordered (kh, kw, I/groups)
    if float_graph:
        dtype = np.float32
    elif weight.dtype.kind == "f":
        dtype = np.float64
    else:
        dtype = exact_dtype(xs, rows)
    if kh == kw == 1 and g == 1 and p == 0:
        x2 = xs[:, : s * ho : s, : s * wo : s, :].reshape(-1, c).astype(dtype, copy=False)
        return (x2 @ rows.T.astype(dtype)).reshape(n, ho, wo, o)
    if ig == 1 and g == c == o:
        return depthwise_accumulate(xs, weight[:, 0].astype(dtype), s, p, ho, wo)
    cols = im2col(pad_nhwc(xs, p), kh, kw, s, ho, wo)  # (N, Ho, Wo, kh, kw, C)
    og = o // g
    out = np.empty((n, ho, wo, o), dtype=dtype)
    for gi in range(g):
        cg = cols[..., gi * ig : (gi + 1) * ig].reshape(n * ho * wo, kh * kw * ig).astype(dtype)
        out[..., gi * og : (gi + 1) * og] = (cg @ rows[gi * og : (gi + 1) * og].T.astype(dtype)).reshape(n, ho, wo, og)
    return out


def depthwise_accumulate(xs: np.ndarray, wt: np.ndarray, s: int, p: int, ho: int, wo: int) -> np.ndarray:
    """Depthwise window sums, tap by tap: acc += tap * wt[:, i, j] (wt: (C, kh, kw) in the result dtype).

    Speed without changing a single sum: the batch runs in cache-sized chunks; each stride phase of the
    padded input is made contiguous, so every tap is a row-contiguous (Ho, Wo*C) view multiplied by the
    weights tiled along a row (long inner loops instead of C-length ones). Taps are added in the same
    order as a plain loop over (i, j).
    """
    n, c = xs.shape[0], xs.shape[-1]
    _, kh, kw = wt.shape
    dtype = wt.dtype
    wrow = np.tile(wt.transpose(1, 2, 0)[:, :, None, :], (1, 1, wo, 1)).reshape(kh, kw, wo * c)
    out = np.empty((n, ho, wo * c), dtype=dtype)
    per = max(1, CHUNK_ELEMS // (ho * wo * c))
    for start in range(0, n, per):
        xp = pad_nhwc(xs[start : start + per].astype(dtype, copy=False), p)
        m = xp.shape[0]
        phases = {}
        acc = out[start : start + per]
        tmp = np.empty_like(acc)
        for i in range(kh):
            for j in range(kw):
                a, b = i % s, j % s
                if (a, b) not in phases:
                    ph = np.ascontiguousarray(xp[:, a::s, b::s, :])
                    phases[(a, b)] = ph.reshape(m, ph.shape[1], ph.shape[2] * c)
                r0, c0 = i // s, (j // s) * c
                tap = phases[(a, b)][:, r0 : r0 + ho, c0 : c0 + wo * c]
                if i == j == 0:
                    np.multiply(tap, wrow[i, j], out=acc)
                else:
                    np.multiply(tap, wrow[i, j], out=tmp)
                    acc += tmp
    return out.reshape(n, ho, wo, c)


# ----- forward ----------------------------------------------------------------------------------------
def shifted_input(x_q: np.ndarray, x_zero: int) -> np.ndarray:
    """q_x - x_zero as float32 (exact): padding then adds real zeros, as the arithmetic requires."""
    return x_q.astype(np.float32) - np.float32(x_zero)


def forward_int8(node, x_q: np.ndarray, x_quant, y_quant) -> np.ndarray:
    """int8 conv: exact accumulator, then quant/arith.requantize_conv. The batch runs in chunks so the
    float temporaries of shift, accumulate and requantise stay in cache (per-sample ops: same result)."""
    if requant_mode(node) == "tflite":
        return forward_int8_tflite(node, x_q, x_quant, y_quant)
    weight, bias = node.params["weight"], node.params["bias"]
    eff = conv_multipliers(x_quant.scale, node.params["w_scales"], y_quant.scale)
    n, h, w, _ = x_q.shape
    ho, wo = out_hw(h, w, node.attrs)
    per = max(1, CHUNK_ELEMS // (ho * wo * weight.shape[0]))
    if per >= n:
        acc = conv_accumulate(shifted_input(x_q, x_quant.zero_point), weight, node.attrs)
        return requantize_conv(acc, bias, eff, y_quant.zero_point)
    out = np.empty((n, ho, wo, weight.shape[0]), dtype=np.int8)
    for start in range(0, n, per):
        acc = conv_accumulate(shifted_input(x_q[start : start + per], x_quant.zero_point), weight, node.attrs)
        out[start : start + per] = requantize_conv(acc, bias, eff, y_quant.zero_point)
    return out


def forward_int8_tflite(node, x_q: np.ndarray, x_quant, y_quant) -> np.ndarray:
    """The "tflite" rounding mode: the same exact accumulator, TFLite's fixed-point requantisation and the
    fused activation's clamp (attrs "clamp", default the int8 range); see docs/arithmetic.md."""
    from ..quant.arith import requantize_conv_tflite, tflite_conv_multipliers

    m, shift = tflite_conv_multipliers(x_quant.scale, node.params["w_scales"], y_quant.scale)
    clamp = tuple(node.attrs.get("clamp", (-128, 127)))
    n = x_q.shape[0]
    per = max(1, CHUNK_ELEMS // max(1, int(np.prod(out_hw(*x_q.shape[1:3], node.attrs))) * len(m)))
    outs = [requantize_conv_tflite(conv_accumulate(shifted_input(x_q[i : i + per], x_quant.zero_point),
                                                   node.params["weight"], node.attrs),
                                   node.params["bias"], m, shift, y_quant.zero_point, clamp,
                                   node.attrs.get("multiplier_rounding", "double"))
            for i in range(0, n, per)]
    return np.concatenate(outs) if len(outs) != 1 else outs[0]


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


# ----- backward (gradient rules; float32; see docs/training-semantics.md) -----------------------------
# Gradients are w.r.t. the int8 codes treated as reals (straight-through rint). `g_acc` is the gradient
# w.r.t. the integer accumulator: g_acc = g_y * clamp_mask * eff (per output channel).
def grad_accumulator(g_y: np.ndarray, mask: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """g_acc = g_y * mask * scale[c] (scale = eff in int8 numerics, 1 in float numerics)."""
    g = g_y.astype(np.float32) * np.asarray(scale, dtype=np.float32)
    return np.where(mask, g, np.float32(0)).astype(np.float32, copy=False)


def grad_bias(g_acc: np.ndarray) -> np.ndarray:
    """d loss / d bias[c] = sum over batch and positions of g_acc[..., c]."""
    return g_acc.sum(axis=(0, 1, 2), dtype=np.float32)


def grad_input(g_acc: np.ndarray, weight: np.ndarray, attrs: dict, in_shape) -> np.ndarray:
    """d loss / d x (the zero-point-shifted input): the transposed convolution of g_acc with W.

    in_shape = (H, W, C) of the forward input (strided convs cannot recover it from the output).
    """
    o, ig, kh, kw = weight.shape
    s, p, g = attrs["stride"], attrs["padding"], attrs.get("groups", 1)
    n, ho, wo, _ = g_acc.shape
    h, w, c = in_shape
    wf = weight.astype(np.float32)
    if kh == kw == 1 and g == 1 and p == 0:
        gx2 = (g_acc.reshape(-1, o) @ wf.reshape(o, c)).reshape(n, ho, wo, c)
        if s == 1 and (ho, wo) == (h, w):
            return gx2
        gx = np.zeros((n, h, w, c), np.float32)
        gx[:, : s * ho : s, : s * wo : s, :] = gx2
        return gx
    gxp = np.zeros((n, h + 2 * p, w + 2 * p, c), np.float32)
    depthwise = ig == 1 and g == c == o
    og = o // g
    for i in range(kh):
        for j in range(kw):
            win = gxp[:, i : i + s * ho : s, j : j + s * wo : s, :]
            if depthwise:
                win += g_acc * wf[:, 0, i, j]
            else:
                for gi in range(g):
                    wg = wf[gi * og : (gi + 1) * og, :, i, j]  # (og, ig)
                    win[..., gi * ig : (gi + 1) * ig] += g_acc[..., gi * og : (gi + 1) * og] @ wg
    return gxp[:, p : p + h, p : p + w, :]


def grad_weight(xs: np.ndarray, g_acc: np.ndarray, weight_shape, attrs: dict, channels) -> np.ndarray:
    """d loss / d W restricted to the trained input channels `channels` (tuple of indices).

    xs = q_x - x_zero as float32 (or the float input). Result shape: dense/pointwise (O, len(channels),
    kh, kw), the slice W[:, channels]; depthwise (len(channels), 1, kh, kw), the slice W[channels].
    """
    o, ig, kh, kw = weight_shape
    s, p, g = attrs["stride"], attrs["padding"], attrs.get("groups", 1)
    n, ho, wo, _ = g_acc.shape
    c = xs.shape[-1]
    ch = np.asarray(channels, dtype=np.int64)
    if ig == 1 and g == c == o:  # depthwise: channel c of the input feeds output c only
        xp = pad_nhwc(xs[..., ch], p)
        ga = g_acc[..., ch]
        out = np.empty((len(ch), 1, kh, kw), np.float32)
        for i in range(kh):
            for j in range(kw):
                out[:, 0, i, j] = np.einsum("nhwc,nhwc->c", xp[:, i : i + s * ho : s, j : j + s * wo : s, :], ga,
                                            dtype=np.float32)
        return out
    if g != 1:
        raise NotImplementedError("weight gradients of grouped (non-depthwise) convs are not supported")
    ga2 = g_acc.reshape(-1, o)
    if kh == kw == 1 and p == 0:
        x2 = xs[:, : s * ho : s, : s * wo : s, :][..., ch].reshape(-1, len(ch))
        return (ga2.T @ x2).astype(np.float32).reshape(o, len(ch), 1, 1)
    cols = im2col(pad_nhwc(np.ascontiguousarray(xs[..., ch]), p), kh, kw, s, ho, wo)
    gw = ga2.T @ cols.reshape(-1, kh * kw * len(ch))  # (O, kh*kw*k)
    return gw.reshape(o, kh, kw, len(ch)).transpose(0, 3, 1, 2).astype(np.float32)

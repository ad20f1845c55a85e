"""conv2d: dense, depthwise, pointwise and grouped convolution (NHWC activations, OIHW weights).

attrs: kernel (kh, kw), stride, padding (pad on each side, = (k-1)//2 for the upstream models),
dilation (optional, default 1: the taps of a window are `dilation` apart on both axes, so a window spans
(k - 1) * dilation + 1 inputs; a 1-D conv's kernel (1, k) is dilated along time only), groups,
role ("classifier" or absent), activation (float graphs only: None | "relu" | "relu6";
in an int8 graph the activation is the int8 clamp of the output's quantisation range).
params (int8 graph): weight int8, bias int32, w_scales float32 [O].
params (float graph): weight float32, bias float32.
"""
from __future__ import annotations

import functools

import numpy as np

from dataclasses import dataclass, replace

from ..errors import GraphError, UnsupportedOpError
from ..ir.program import Arg, Buffer, Const, Params, Step, buf, const, lit
from ..ir.training import Kind, TensorInfo
from ..ir.training import Step as TrainStep
from ..quant.arith import (conv_multipliers, conv_preclamp, conv_preclamp_tflite, requant_mode, requantize_conv,
                           tflite_conv_multipliers)
from ..quant.qas import qas_divisors
from . import c_sums, einsum_order, sim_native, torch_sums
from .common import (clamp_float, clamp_int8, int8_clamp, masked_gradient, refuse_tiles_in_tflite_mode,
                     update_params)

OP = "conv2d"
CLAMPS_OUTPUT = True  # output clamped to its range (an activation may fuse in); training saves the mask
TRAINABLE = True  # weight and bias can be trained (sparse.scheme.TrainSpec)
INPLACE_INPUT = None  # the forward never writes over its input (codegen.inplace_depthwise may, by choice)
KEEPS_INPUT_QUANT = False  # the output has its own calibrated scale/zero point (quant/ptq)


def dilation(attrs: dict) -> int:
    return int(attrs.get("dilation", 1))


def span(k: int, d: int) -> int:
    """Inputs one window covers along an axis: k taps, d apart."""
    return (k - 1) * d + 1


def out_hw(h: int, w: int, attrs: dict) -> tuple[int, int]:
    kh, kw = attrs["kernel"]
    s, p, d = attrs["stride"], attrs["padding"], dilation(attrs)
    return (h + 2 * p - span(kh, d)) // s + 1, (w + 2 * p - span(kw, d)) // s + 1


def window_in(node, lo: int, hi: int, axis: int) -> list[tuple[int, int]]:
    """Patch-based execution (patching.py): the input rows (axis 0) or columns (axis 1) [a, b) that output
    rows/columns [lo, hi) read, in the input's coordinates; outside [0, H) is the padding (real zeros)."""
    k, s, p = node.attrs["kernel"][axis], node.attrs["stride"], node.attrs["padding"]
    return [(lo * s - p, (hi - 1) * s - p + span(k, dilation(node.attrs)))]


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
    d = node.attrs.get("dilation", 1)
    if not isinstance(d, (int, np.integer)) or isinstance(d, bool) or d < 1:
        raise GraphError(f"conv {node.name!r}: dilation must be an integer >= 1, got {d!r}")
    bias = node.params.get("bias")
    if bias is None or bias.shape != (o,):
        raise GraphError(f"conv {node.name!r}: bias must have shape ({o},), got {None if bias is None else bias.shape}")
    if "w_scales" in node.params and node.params["w_scales"].shape != (o,):
        raise GraphError(f"conv {node.name!r}: w_scales must have shape ({o},), got {node.params['w_scales'].shape}")
    ho, wo = out_hw(h, w, node.attrs)
    if ho < 1 or wo < 1:
        raise GraphError(f"conv {node.name!r}: input {h}x{w} is too small for kernel {kh}x{kw}"
                         + (f" dilated {d}" if d != 1 else ""))
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


def describe(node) -> str:
    """The op column of `microtrain info`: family, kernel and stride (e.g. "depthwise 3x3/2")."""
    k, s, d = node.attrs["kernel"], node.attrs["stride"], dilation(node.attrs)
    return f"{kind(node)} {k[0]}x{k[1]}/{s}" + (f" dil {d}" if d != 1 else "")


def macs(node, in_shape, out_shape) -> int:
    o, ig, kh, kw = node.params["weight"].shape
    return int(out_shape[0] * out_shape[1] * o * ig * kh * kw)


# ----- the integer accumulator (exact) ---------------------------------------------------------------
def pad_nhwc(x: np.ndarray, p: int) -> np.ndarray:
    """Zero padding of H and W (np.pad's values and memory order, without its generic machinery)."""
    if p == 0:
        return x
    n, h, w, c = x.shape
    order = "F" if x.flags.f_contiguous and not x.flags.c_contiguous else "C"
    out = np.zeros((n, h + 2 * p, w + 2 * p, c), x.dtype, order=order)
    out[:, p : p + h, p : p + w, :] = x
    return out


def im2col(xp: np.ndarray, kh: int, kw: int, stride: int, ho: int, wo: int, d: int = 1) -> np.ndarray:
    """(N, Hp, Wp, C) -> (N, Ho, Wo, kh, kw, C) strided view of every window (taps d apart)."""
    n, hp, wp, c = xp.shape
    sn, sh, sw, sc = xp.strides
    return np.lib.stride_tricks.as_strided(
        xp, shape=(n, ho, wo, kh, kw, c), strides=(sn, sh * stride, sw * stride, sh * d, sw * d, sc), writeable=False
    )


F32_EXACT = 2**24  # float32 holds every integer of magnitude <= 2**24 exactly
CHUNK_ELEMS = 2**18  # per-chunk output elements of the depthwise / forward loops: temporaries stay in cache


def exact_dtype(xs: np.ndarray, weight_rows: np.ndarray, x_bound: float | None = None):
    """float32 if every partial sum of an integer window sum stays within 2**24 (then float32 is exact in
    any summation order, FMA or not), else float64 (exact below 2**53). weight_rows: (O, K) integers.
    x_bound: a known bound on |xs| (an int8 input's range less its zero point): when it already proves
    float32 exact, the data is not scanned (the data's own max is within it: the same decision)."""
    wsum = float(np.abs(weight_rows.astype(np.int64)).sum(axis=1).max(initial=0))
    if x_bound is not None and x_bound * wsum <= F32_EXACT:
        return np.float32
    xmax = max(abs(float(xs.max(initial=0))), abs(float(xs.min(initial=0))))
    return np.float32 if xmax * wsum <= F32_EXACT else np.float64


def int8_bound(x_q: np.ndarray, x_zero: int) -> int | None:
    """max |q - x_zero| over int8 codes q: the bound on shifted_input(x_q, x_zero) (None unless x_q is int8)."""
    return max(abs(-128 - int(x_zero)), abs(127 - int(x_zero))) if x_q.dtype == np.int8 else None


def conv_accumulate(xs: np.ndarray, weight: np.ndarray, attrs: dict, x_bound: float | None = None) -> np.ndarray:
    """Exact sum over each window of xs * W, NHWC in, NHWC out.

    xs holds integers (the zero-point-shifted input, integer weights) or floats (a float graph: float32
    weights, float32 result). Integer results are exact: each sum runs in float32 when its magnitude
    bound (max |xs| * max over outputs of sum |W|) is within 2**24, else in float64. x_bound: see exact_dtype.
    """
    o, ig, kh, kw = weight.shape
    s, p, g, d = attrs["stride"], attrs["padding"], attrs.get("groups", 1), dilation(attrs)
    n, h, w, c = xs.shape
    ho, wo = out_hw(h, w, attrs)
    float_graph = xs.dtype == np.float32 and weight.dtype == np.float32
    rows = weight.transpose(0, 2, 3, 1).reshape(o, kh * kw * ig)  # (O, K), K ordered (kh, kw, I/groups)
    if float_graph:
        dtype = np.float32
    elif weight.dtype.kind == "f":
        dtype = np.float64
    else:
        dtype = exact_dtype(xs, rows, x_bound)
    if kh == kw == 1 and g == 1 and p == 0:
        x2 = xs[:, : s * ho : s, : s * wo : s, :].reshape(-1, c).astype(dtype, copy=False)
        return (x2 @ rows.T.astype(dtype)).reshape(n, ho, wo, o)
    if ig == 1 and g == c == o:
        if weight.dtype.kind in "iu":  # integer operands: exact sums, any evaluation order (ops/torch_sums.py)
            fast = torch_sums.depthwise_accumulate(xs.astype(dtype, copy=False), weight.astype(dtype), s, p, d)
            if fast is not None:
                return fast
        return depthwise_accumulate(xs, weight[:, 0].astype(dtype), s, p, ho, wo, d)
    cols = im2col(pad_nhwc(xs, p), kh, kw, s, ho, wo, d)  # (N, Ho, Wo, kh, kw, C)
    og = o // g
    out = np.empty((n, ho, wo, o), dtype=dtype)
    for gi in range(g):
        cg = cols[..., gi * ig : (gi + 1) * ig].reshape(n * ho * wo, kh * kw * ig).astype(dtype)
        out[..., gi * og : (gi + 1) * og] = (cg @ rows[gi * og : (gi + 1) * og].T.astype(dtype)).reshape(n, ho, wo, og)
    return out


def depthwise_accumulate(xs: np.ndarray, wt: np.ndarray, s: int, p: int, ho: int, wo: int, d: int = 1,
                         native: bool = True) -> np.ndarray:
    """Depthwise window sums, tap by tap: acc += tap * wt[:, i, j] (wt: (C, kh, kw) in the result dtype;
    tap (i, j) reads input (i * d, j * d) of the window).

    Speed without changing a single sum: the batch runs in cache-sized chunks; each stride phase of the
    padded input is made contiguous, so every tap is a row-contiguous (Ho, Wo*C) view multiplied by the
    weights tiled along a row (long inner loops instead of C-length ones). Taps are added in the same
    order as a plain loop over (i, j). native: float32 operands by the same operations compiled
    (ops/sim_native.py) when the library is available.
    """
    if native and wt.dtype == np.float32 and xs.dtype == np.float32 and sim_native.active() is not None:
        return sim_native.dw_forward(pad_nhwc(xs, p), wt, s, d, ho, wo)
    n, c = xs.shape[0], xs.shape[-1]
    _, kh, kw = wt.shape
    dtype = wt.dtype
    wrow = tiled_taps(wt, wo)
    out = np.empty((n, ho, wo * c), dtype=dtype)
    per = max(1, CHUNK_ELEMS // (ho * wo * c))
    for start in range(0, n, per):
        phases = StridePhases(pad_nhwc(xs[start : start + per].astype(dtype, copy=False), p), s)
        acc = out[start : start + per]
        tmp = np.empty_like(acc)
        for i in range(kh):
            for j in range(kw):
                tap = phases.tap(i * d, j * d, ho, wo)
                if i == j == 0:
                    np.multiply(tap, wrow[i, j], out=acc)
                else:
                    np.multiply(tap, wrow[i, j], out=tmp)
                    acc += tmp
    return out.reshape(n, ho, wo, c)


def tiled_taps(wt: np.ndarray, wo: int) -> np.ndarray:
    """(C, kh, kw) depthwise weights -> (kh, kw, wo*C): each tap's weights repeated along an output row, so a
    tap multiplies a whole row-contiguous (Ho, Wo*C) plane in one long inner loop."""
    c, kh, kw = wt.shape
    return np.tile(wt.transpose(1, 2, 0)[:, :, None, :], (1, 1, wo, 1)).reshape(kh, kw, wo * c)


class StridePhases:
    """The s*s stride phases of a padded NHWC map xp, each a contiguous (N, Hph, Wph*C) array: tap (i, j) of a
    stride-s window then reads a plain row-contiguous block of phase (i % s, j % s). At stride 1 a contiguous
    map is its own phase (a view: writing a tap writes xp)."""

    def __init__(self, xp: np.ndarray | None, s: int, c: int | None = None):
        self.xp, self.s, self.c = xp, s, xp.shape[-1] if xp is not None else c
        self.planes = {}

    @classmethod
    def zeros(cls, shape, s: int) -> "StridePhases":
        """Zeroed float32 phase planes of an (N, Hp, Wp, C) map (no map behind them), to sum into; write_back
        puts them in place."""
        m, hp, wp, c = shape
        self = cls(None, s, c)
        for a in range(s):
            for b in range(s):
                self.planes[(a, b)] = np.zeros((m, len(range(a, hp, s)), len(range(b, wp, s)) * c), np.float32)
        return self

    def write_back(self, xp: np.ndarray) -> None:
        """xp[:, a::s, b::s, :] = plane (a, b), for every phase."""
        s, c = self.s, self.c
        for (a, b), ph in self.planes.items():
            xp[:, a::s, b::s, :] = ph.reshape(ph.shape[0], ph.shape[1], ph.shape[2] // c, c)

    def plane(self, a: int, b: int) -> np.ndarray:
        if (a, b) not in self.planes:
            m, c = self.xp.shape[0], self.c
            ph = self.xp[:, a :: self.s, b :: self.s, :]
            if not (self.s == 1 and ph.flags.c_contiguous):
                ph = np.ascontiguousarray(ph)
            self.planes[(a, b)] = ph.reshape(m, ph.shape[1], ph.shape[2] * c)
        return self.planes[(a, b)]

    def tap(self, i: int, j: int, ho: int, wo: int) -> np.ndarray:
        """(N, Ho, Wo*C) view: xp[:, i + s*y, j + s*x, :] for y < Ho, x < Wo."""
        s, c = self.s, self.c
        r0, c0 = i // s, (j // s) * c
        return self.plane(i % s, j % s)[:, r0 : r0 + ho, c0 : c0 + wo * c]


def depthwise_grad_input(g_acc: np.ndarray, wt: np.ndarray, gxp: np.ndarray, s: int = 1, d: int = 1) -> None:
    """Stride s, taps d apart. gxp (N, Hp, Wp, C) zeros, contiguous, the padded input gradient:
    gxp[:, i*d + s*y, j*d + s*x] += g_acc[:, y, x] * wt[:, i, j] for every tap in (i, j) order: the same float32
    operations as a plain loop over taps, on row-contiguous (Ho, Wo*C) blocks in cache-sized batch chunks.
    Stride s > 1: each padded position belongs to one stride phase (row % s, column % s), which receives the
    taps of that phase as a contiguous block, in the same (i, j) order; zeroed phase planes are summed into and
    then written back into gxp's positions (a copy: every element sees the same additions). (grad_input calls
    the compiled twin, ops/sim_native.dw_grad_input, when the library is available.)"""
    n, ho, wo, c = g_acc.shape
    _, kh, kw = wt.shape
    wrow = tiled_taps(wt, wo)
    per = max(1, CHUNK_ELEMS // (gxp.shape[1] * gxp.shape[2] * c))
    for start in range(0, n, per):
        ga = np.ascontiguousarray(g_acc[start : start + per]).reshape(-1, ho, wo * c)
        gx = gxp[start : start + per]
        plane = StridePhases(gx, s) if s == 1 else StridePhases.zeros(gx.shape, s)
        tmp = np.empty_like(ga)
        for i in range(kh):
            for j in range(kw):
                np.multiply(ga, wrow[i, j], out=tmp)
                plane.tap(i * d, j * d, ho, wo)[...] += tmp
        if s != 1:
            plane.write_back(gx)


def einsum_grad_weight(xs, g_acc, ch, kh, kw, s, p, d=1) -> np.ndarray:
    """The depthwise weight gradient's definition: per tap (taps d apart), np.einsum over the channel-gathered
    operands."""
    n, ho, wo, _ = g_acc.shape
    xp = pad_nhwc(xs[..., ch], p)
    ga = g_acc[..., ch]  # channel-major in memory, like xs[..., ch]: einsum's order depends on it
    out = np.empty((len(ch), 1, kh, kw), np.float32)
    for i in range(kh):
        for j in range(kw):
            win = xp[:, i * d : i * d + s * ho : s, j * d : j * d + s * wo : s, :]
            out[:, 0, i, j] = np.einsum("nhwc,nhwc->c", win, ga,
                                        dtype=np.float32)
    return out


@functools.lru_cache(maxsize=None)
def einsum_reproduced() -> bool:
    """Whether depthwise_grad_weight equals einsum_grad_weight bit for bit with this NumPy build (its SIMD
    width and einsum's internals are facts about the build): checked once per process on random operands,
    one of them longer than einsum's 8192-position buffer. If not, grad_weight keeps np.einsum."""
    rng = np.random.default_rng(2026)
    for n, h, c, k, s in ((3, 8, 6, 3, 1), (2, 16, 5, 5, 2), (3, 64, 3, 3, 1)):
        p = (k - 1) // 2
        ho = (h + 2 * p - k) // s + 1
        xs = rng.integers(-255, 256, (n, h, h, c)).astype(np.float32)
        g = (rng.standard_normal((n, ho, ho, c)) * np.exp(rng.uniform(-8, 4, (n, ho, ho, c)))).astype(np.float32)
        ch = np.arange(c)
        fast = depthwise_grad_weight(xs, g, ch, k, k, s, p, native=False)
        if fast is None or not np.array_equal(fast.view(np.uint32), einsum_grad_weight(xs, g, ch, k, k, s, p).view(np.uint32)):
            return False
    return True


_EINSUM_PIECES: dict = {}  # operand layout -> einsum's inner-loop pieces (einsum_order.inner_pieces) or None


def einsum_pieces(xs, g_acc, ch, kh, kw, s, p):
    """The pieces einsum's iterator cuts each channel's positions into for the per-tap einsum of grad_weight on
    these operands (pad_nhwc(xs[..., ch]), g_acc[..., ch]): their layout, hence the pieces, depends only on
    shapes and strides, so the gathered copies are made once per layout."""
    n, ho, wo, _ = g_acc.shape
    key = (xs.shape, xs.strides, g_acc.shape, g_acc.strides, len(ch), kh, kw, s, p)
    if key not in _EINSUM_PIECES:
        xp = pad_nhwc(xs[..., ch], p)
        _EINSUM_PIECES[key] = einsum_order.inner_pieces(xp[:, : s * ho : s, : s * wo : s, :], g_acc[..., ch])
    return _EINSUM_PIECES[key]


def depthwise_grad_weight(xs: np.ndarray, g_acc: np.ndarray, ch: np.ndarray, kh: int, kw: int, s: int,
                          p: int, native: bool = True) -> np.ndarray | None:
    """(len(ch), 1, kh, kw) float32: grad_weight's per-tap np.einsum("nhwc,nhwc->c", tap window of
    pad_nhwc(xs[..., ch]), g_acc[..., ch]) bit for bit (ops/einsum_order.py: same products, same order), all
    taps at once; None when einsum would iterate its operands in a way this does not reproduce (the caller
    then runs np.einsum).

    Every piece of einsum's inner loop is whole samples here. Tap by tap, a block of samples writes its products
    straight into the kernel's schedule: buffer rows (16-position block, quarter in reverse), then (lane,
    channel), row 0 carrying the tap's lane sums; np.add.reduce over the rows continues them in order. (Each
    tap's sums are independent of the others', so one buffer per tap adds the same numbers in the same order as
    one buffer for all taps, in taps times fewer, larger calls: the channel-rich 4x4 and 8x8 layers went one
    sample at a time before.)"""
    n, ho, wo, _ = g_acc.shape
    hw, taps, c = ho * wo, kh * kw, len(ch)
    split = einsum_order.block_split(ho, wo)
    pieces = einsum_pieces(xs, g_acc, ch, kh, kw, s, p) if split else None
    if pieces is None or any(pc % hw for pc in pieces):
        return None
    if not np.array_equal(ch, np.arange(xs.shape[-1])):  # (every channel in order: no gathered copies)
        xs, g_acc = xs[..., ch], g_acc[..., ch]
    xp = pad_nhwc(xs, p)
    if native and sim_native.active() is not None:  # the same sums compiled
        return sim_native.dw_grad_weight(xp, g_acc, kh, kw, s, [pc // hw for pc in pieces])
    blocks, quarters = split
    lanes_n = einsum_order.LANES
    shape = blocks + quarters + (lanes_n, c)
    gv = np.ascontiguousarray(g_acc).reshape((n,) + shape)
    rev = (slice(None),) * (1 + len(blocks)) + (slice(None, None, -1),) * len(quarters)
    per = max(1, einsum_order.BLOCK_ELEMS // (hw * c))  # samples per buffer
    total = np.zeros((taps, c), np.float32)
    s0 = 0
    for piece in pieces:
        lanes = np.zeros((taps, lanes_n, c), np.float32)
        stop = s0 + piece // hw
        for i in range(kh):
            for j in range(kw):
                lane = lanes[i * kw + j]
                for a in range(s0, stop, per):
                    b = min(stop, a + per)
                    buf = np.empty((1 + (b - a) * hw // lanes_n, lanes_n, c), np.float32)
                    buf[0] = lane
                    win = xp[a:b, i : i + s * ho : s, j : j + s * wo : s, :]
                    np.multiply(win.reshape((b - a,) + shape), gv[a:b], out=buf[1:].reshape((b - a,) + shape)[rev])
                    lane = np.add.reduce(buf, axis=0)  # row by row: out += row (a sequential loop per element)
                lanes[i * kw + j] = lane
        total = einsum_order.combine_lanes(lanes.transpose(1, 0, 2)) + total
        s0 = stop
    return np.ascontiguousarray(total.reshape(kh, kw, c).transpose(2, 0, 1))[:, None]


# ----- forward ----------------------------------------------------------------------------------------
def shifted_input(x_q: np.ndarray, x_zero: int) -> np.ndarray:
    """q_x - x_zero as float32 (exact): padding then adds real zeros, as the arithmetic requires."""
    return np.subtract(x_q, np.float32(x_zero), dtype=np.float32)  # (casts x_q to float32 first, as astype)


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
    bound = int8_bound(x_q, x_quant.zero_point)
    if per >= n:
        acc = conv_accumulate(shifted_input(x_q, x_quant.zero_point), weight, node.attrs, bound)
        return requantize(acc, bias, eff, y_quant.zero_point)
    out = np.empty((n, ho, wo, weight.shape[0]), dtype=np.int8)
    for start in range(0, n, per):
        acc = conv_accumulate(shifted_input(x_q[start : start + per], x_quant.zero_point), weight, node.attrs,
                              bound)
        out[start : start + per] = requantize(acc, bias, eff, y_quant.zero_point)
    return out


def requantize(acc: np.ndarray, bias, eff, y_zero: int) -> np.ndarray:
    """quant/arith.requantize_conv, by the C kernels' requantisation when it applies (ops/sim_native.py)."""
    fast = sim_native.requant_s8(acc, bias, eff, y_zero, want_mask=False)
    return fast[0] if fast is not None else requantize_conv(acc, bias, eff, y_zero)


def forward_int8_tflite(node, x_q: np.ndarray, x_quant, y_quant) -> np.ndarray:
    """The "tflite" rounding mode: the same exact accumulator, TFLite's fixed-point requantisation and the
    fused activation's clamp (attrs "clamp", default the int8 range); see docs/arithmetic.md."""
    lo, hi = int8_clamp(node)
    n = x_q.shape[0]
    per = max(1, CHUNK_ELEMS // max(1, int(np.prod(out_hw(*x_q.shape[1:3], node.attrs))) * node.params["bias"].size))
    outs = [np.clip(preclamp_tflite(node, x_q[i : i + per], x_quant, y_quant), lo, hi).astype(np.int8)
            for i in range(0, n, per)]
    return np.concatenate(outs) if len(outs) != 1 else outs[0]


def preclamp_tflite(node, x_q: np.ndarray, x_quant, y_quant) -> np.ndarray:
    """The int64 output before the clamp in the "tflite" rounding mode (the clamp mask needs it)."""
    m, shift = tflite_conv_multipliers(x_quant.scale, node.params["w_scales"], y_quant.scale)
    acc = conv_accumulate(shifted_input(x_q, x_quant.zero_point), node.params["weight"], node.attrs)
    return conv_preclamp_tflite(acc, node.params["bias"], m, shift, y_quant.zero_point,
                                node.attrs.get("multiplier_rounding", "double"))


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
    return masked_gradient(g_y, scale, mask)


def grad_bias(g_acc: np.ndarray, sums: str = "numpy") -> np.ndarray:
    """d loss / d bias[c] = sum over batch and positions of g_acc[..., c]. sums="c": the C kernels' order
    (ops/c_sums.py), as in grad_input and grad_weight."""
    if sums == "c":
        return c_sums.sequential_rows(g_acc.reshape(-1, g_acc.shape[-1]))
    return g_acc.sum(axis=(0, 1, 2), dtype=np.float32)


def c_sums_cover(weight_shape, attrs: dict, in_channels: int) -> bool:
    """Whether grad_input and grad_weight have a sums="c" order (ops/c_sums.py) for this conv: pointwise
    (1x1, one group, no padding) and depthwise convs, the ones the device experiments train."""
    o, ig, kh, kw = weight_shape
    g = attrs.get("groups", 1)
    return (kh == kw == 1 and g == 1 and attrs["padding"] == 0) or (ig == 1 and g == in_channels == o)


def grad_input(g_acc: np.ndarray, weight: np.ndarray, attrs: dict, in_shape, sums: str = "numpy") -> np.ndarray:
    """d loss / d x (the zero-point-shifted input): the transposed convolution of g_acc with W.

    in_shape = (H, W, C) of the forward input (strided convs cannot recover it from the output).
    """
    o, ig, kh, kw = weight.shape
    s, p, g, d = attrs["stride"], attrs["padding"], attrs.get("groups", 1), dilation(attrs)
    n, ho, wo, _ = g_acc.shape
    h, w, c = in_shape
    wf = weight.astype(np.float32)
    if kh == kw == 1 and g == 1 and p == 0:
        g2, w2 = g_acc.reshape(-1, o), wf.reshape(o, c)
        gx2 = (c_sums.sequential_matmul(g2, w2) if sums == "c" else g2 @ w2).reshape(n, ho, wo, c)
        if s == 1 and (ho, wo) == (h, w):
            return gx2
        gx = np.zeros((n, h, w, c), np.float32)
        gx[:, : s * ho : s, : s * wo : s, :] = gx2
        return gx
    depthwise = ig == 1 and g == c == o
    if sums == "c" and not c_sums_cover(weight.shape, attrs, c):  # (TrainingRuntime refuses it up front)
        raise NotImplementedError(f"sums='c' covers pointwise and depthwise convs, not a {kh}x{kw} conv of {g} groups")
    if depthwise and sim_native.active() is not None:  # compiled: straight into the cropped, contiguous gradient
        gx = np.zeros((n, h, w, c), np.float32)
        sim_native.dw_grad_input(g_acc, wf[:, 0], gx, s, d, p)
        return gx
    gxp = np.zeros((n, h + 2 * p, w + 2 * p, c), np.float32)
    if depthwise:
        depthwise_grad_input(g_acc, wf[:, 0], gxp, s, d)
        return gxp[:, p : p + h, p : p + w, :]
    og = o // g
    for i in range(kh):
        for j in range(kw):
            win = gxp[:, i * d : i * d + s * ho : s, j * d : j * d + s * wo : s, :]
            for gi in range(g):
                wg = wf[gi * og : (gi + 1) * og, :, i, j]  # (og, ig)
                win[..., gi * ig : (gi + 1) * ig] += g_acc[..., gi * og : (gi + 1) * og] @ wg
    return gxp[:, p : p + h, p : p + w, :]


# ----- the int16 backward (build_training_graph(backward="int16"); docs/training-semantics.md, section 4b) ----
INT16_GRAD_BITS = 14  # |q| <= 2**14: one bit of headroom below int16, and O * 2**14 * 128 < 2**31 for O <= 1023
INT16_EXP_MIN, INT16_EXP_MAX = -126, 126  # 2**e and 2**-e are normal float32 numbers
INT16_MAX_OUT_C = (2**31 - 1) // (2**INT16_GRAD_BITS * 128)  # 1023: more output channels could overflow int32


def int16_gradient(g_acc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(q, e): each sample's float32 gradient as int16 codes q = rint(g * 2**e) (ties to even), e the largest
    exponent with max |g| * 2**e < 2**14 (from frexp of the max), clipped to [-126, 126]; a sample whose max is
    0 gets e = 14 - 0 and all-zero codes. q: int16, g_acc's shape; e: int32 (N,). A non-finite sample gives
    e = INT16_EXP_MIN - 1 (the caller makes its gradient NaN)."""
    n = g_acc.shape[0]
    g = g_acc.reshape(n, -1).astype(np.float32, copy=False)
    m = np.abs(g).max(axis=1, initial=np.float32(0))
    bad = ~np.isfinite(m)
    _, k = np.frexp(np.where(bad, np.float32(0), m))
    e = np.clip(INT16_GRAD_BITS - k.astype(np.int32), INT16_EXP_MIN, INT16_EXP_MAX)
    up = np.ldexp(np.float32(1), e).astype(np.float32)
    q = np.rint(np.where(bad[:, None], np.float32(0), g) * up[:, None])  # one float32 product: exact, then rint
    e[bad] = INT16_EXP_MIN - 1
    return q.astype(np.int16).reshape(g_acc.shape), e


def grad_input_int16(g_acc: np.ndarray, weight: np.ndarray, attrs: dict, in_shape) -> np.ndarray:
    """The pointwise input gradient of the int16 backward: per sample, q, e = int16_gradient(g_acc), the exact
    int32 sums acc[j] = sum_o q[o] * W[o, j] (int8 codes; exact in float64 in any order), then
    gx = float32(acc) * 2**-e (the int32 -> float32 conversion rounds to nearest even, the power of two is
    exact). Strided: positions no output reads get 0, as in grad_input."""
    o, c = weight.shape[:2]
    n, ho, wo, _ = g_acc.shape
    h, w, _ = in_shape
    q, e = int16_gradient(g_acc)
    acc = q.reshape(-1, o).astype(np.float64) @ weight.reshape(o, c).astype(np.float64)
    down = np.ldexp(np.float32(1), -np.clip(e, INT16_EXP_MIN, INT16_EXP_MAX)).astype(np.float32)
    gx2 = acc.astype(np.float32).reshape(n, ho, wo, c) * down[:, None, None, None]
    gx2[e < INT16_EXP_MIN] = np.float32(np.nan)
    s = attrs["stride"]
    if s == 1 and (ho, wo) == (h, w):
        return gx2
    gx = np.zeros((n, h, w, c), np.float32)
    gx[:, : s * ho : s, : s * wo : s, :] = gx2
    return gx


def grad_weight(xs: np.ndarray, g_acc: np.ndarray, weight_shape, attrs: dict, channels, sums: str = "numpy") -> np.ndarray:
    """d loss / d W restricted to the trained input channels `channels` (tuple of indices).

    xs = q_x - x_zero as float32 (or the float input). Result shape: dense/pointwise (O, len(channels),
    kh, kw), the slice W[:, channels]; depthwise (len(channels), 1, kh, kw), the slice W[channels].
    """
    o, ig, kh, kw = weight_shape
    s, p, g, d = attrs["stride"], attrs["padding"], attrs.get("groups", 1), dilation(attrs)
    n, ho, wo, _ = g_acc.shape
    c = xs.shape[-1]
    ch = np.asarray(channels, dtype=np.int64)
    if ig == 1 and g == c == o:  # depthwise: channel c of the input feeds output c only
        if sums == "c":
            return c_sums.depthwise_grad_weight(xs, g_acc, ch, kh, kw, s, p, d)
        fast = depthwise_grad_weight(xs, g_acc, ch, kh, kw, s, p) if d == 1 and einsum_reproduced() else None
        return fast if fast is not None else einsum_grad_weight(xs, g_acc, ch, kh, kw, s, p, d)
    if g != 1:
        raise NotImplementedError("weight gradients of grouped (non-depthwise) convs are not supported")
    ga2 = g_acc.reshape(-1, o)
    if kh == kw == 1 and p == 0:
        x2 = xs[:, : s * ho : s, : s * wo : s, :]
        if np.array_equal(ch, np.arange(c)):  # every channel in order: the gather would copy x2 as it is
            x2 = np.ascontiguousarray(x2).reshape(-1, c)
        else:
            x2 = x2[..., ch].reshape(-1, len(ch))
        gw = c_sums.sequential_matmul(np.ascontiguousarray(ga2.T), x2) if sums == "c" else ga2.T @ x2
        return gw.astype(np.float32).reshape(o, len(ch), 1, 1)
    if sums == "c":  # (not c_sums_cover: TrainingRuntime refuses it up front)
        raise NotImplementedError(f"sums='c' covers pointwise and depthwise convs, not a {kh}x{kw} conv")
    cols = im2col(pad_nhwc(np.ascontiguousarray(xs[..., ch]), p), kh, kw, s, ho, wo, d)
    gw = ga2.T @ cols.reshape(-1, kh * kw * len(ch))  # (O, kh*kw*k)
    return gw.reshape(o, kh, kw, len(ch)).transpose(0, 3, 1, 2).astype(np.float32)


# ----- training forward: the output and its clamp mask -----------------------------------------------
def torch_forward(module, x):
    """The reference torch model's forward (reference/torch_model.py): `module` is the node's nn.Conv2d."""
    return module(x)


def forward_train(graph, node, ins, save_mask=False):
    """(y, clamp mask or None); int8 graphs follow quant/arith bit for bit."""
    if graph.dtype == "int8":
        qx, qy = graph.tensors[node.inputs[0]].quant, graph.tensors[node.output].quant
        if not save_mask:
            return forward_int8(node, ins[0], qx, qy), None
        if requant_mode(node) == "tflite":
            return clamp_int8(preclamp_tflite(node, ins[0], qx, qy), *int8_clamp(node))
        acc = conv_accumulate(shifted_input(ins[0], qx.zero_point), node.params["weight"], node.attrs,
                              int8_bound(ins[0], qx.zero_point))
        eff = conv_multipliers(qx.scale, node.params["w_scales"], qy.scale)
        fast = sim_native.requant_s8(acc, node.params["bias"], eff, qy.zero_point, want_mask=True)
        return fast if fast is not None else clamp_int8(conv_preclamp(acc, node.params["bias"], eff, qy.zero_point))
    pre = conv_accumulate(ins[0].astype(np.float32), node.params["weight"].astype(np.float32), node.attrs)
    pre = pre.astype(np.float32) + node.params["bias"].astype(np.float32)
    return clamp_float(graph, node, pre, save_mask)


# ----- backward step emission (autodiff.build_training_graph) -----------------------------------------
def backward(cx, n) -> list:
    """The backward steps of conv `n` (and the sgd_update of each trained parameter right after its
    gradient). cx: autodiff's context (graph, int8, needs, tensors, grad_target, trained, ...)."""
    graph, int8, spec = cx.graph, cx.int8, cx.trained.get(n.name)
    x = n.inputs[0]
    gy, gacc = f"grad:{n.output}", f"grad_acc:{n.name}"
    o = n.params["weight"].shape[0]
    if int8:
        xq, yq = graph.tensors[x].quant, graph.tensors[n.output].quant
        scale = conv_multipliers(xq.scale, n.params["w_scales"], yq.scale)
        x_zero = int(xq.zero_point)
    else:
        scale, x_zero = np.ones(o, np.float32), 0
    cx.tensors[gacc] = TensorInfo(gacc, tuple(graph.tensors[n.output].shape), "float32", "grad")
    steps = [TrainStep("conv_grad_acc", n.name, [gy, f"mask:{n.name}"], [gacc], {"scale": scale})]
    if x in cx.needs:
        attrs = {"in_shape": tuple(graph.tensors[x].shape)}
        if cx.backward == "int16" and is_pointwise(n):  # other convs keep the float rule
            if o > INT16_MAX_OUT_C:
                raise UnsupportedOpError(f"conv {n.name!r}: the int16 backward sums at most {INT16_MAX_OUT_C} "
                                         f"output channels in int32, this conv has {o}")
            attrs["backward"] = "int16"
        steps.append(TrainStep("conv_grad_input", n.name, [gacc], [cx.grad_target(x, n)], attrs))
    if spec is not None and spec.channels is not None:
        w = n.params["weight"]
        k = len(spec.channels)
        shape = (k, 1) + w.shape[2:] if is_depthwise(n) else (w.shape[0], k) + w.shape[2:]
        name = f"grad:{n.name}.weight"
        cx.tensors[name] = TensorInfo(name, shape, "float32", "param_grad")
        steps.append(TrainStep("conv_grad_weight", n.name, [x, gacc], [name],
                               {"channels": tuple(spec.channels), "x_zero": x_zero}))
        steps.append(_update_step(cx, n, "weight", spec))
    if spec is not None and spec.bias:
        name = f"grad:{n.name}.bias"
        cx.tensors[name] = TensorInfo(name, (o,), "float32", "param_grad")
        steps.append(TrainStep("conv_grad_bias", n.name, [gacc], [name]))
        steps.append(_update_step(cx, n, "bias", spec))
    return steps


def _update_step(cx, n, param, spec):
    o = n.params["weight"].shape[0]
    divisor = qas_divisors(cx.graph, n)[param] if cx.int8 and cx.qas else np.ones(o, np.float32)
    return TrainStep("sgd_update", n.name, [f"grad:{n.name}.{param}"], [], {
        "param": param,
        "channels": None if param == "bias" else tuple(spec.channels),
        "depthwise": bool(is_depthwise(n)),
        "divisor": divisor,
        "rounding": cx.rounding if cx.int8 else "none",
        "saturate": ("int8" if param == "weight" else "int32") if cx.int8 else None,
        "param_id": cx.next_param_id(),
        "momentum": float(cx.momentum),
    })


# ----- layout facts: how the kernels see a conv ------------------------------------------------------
FORWARD_KERNEL = {"pointwise": "mt_conv_pointwise", "depthwise": "mt_conv_depthwise", "conv": "mt_conv"}
# the whole-weight depthwise kernel and its in-place variant (codegen.inplace_depthwise swaps them)
DEPTHWISE_KERNEL, DEPTHWISE_INPLACE_KERNEL = "mt_conv_depthwise_s8", "mt_conv_depthwise_inplace_s8"
GRAD_INPUT_KERNEL = {"pointwise": "mt_conv_grad_input_pointwise_f32", "depthwise": "mt_conv_grad_input_depthwise_f32",
                     "conv": "mt_conv_grad_input_f32"}
GRAD_INPUT_I16_KERNEL = "mt_conv_grad_input_pointwise_i16"  # the int16 backward's (kernels/mt_backward_i16.c)
# stack scratch (bytes) of the kernels that keep work arrays: the Python twin of their
# mt_<kernel>_scratch_bytes queries (kernels/mt_kernels.h); codegen.scratch gives the planner the largest
KERNEL_SCRATCH = {
    "mt_conv_s8": 2 * 80 + 4 * 16 + 16,  # patch[80] int16, acc[16] int32, mt_store_run's ok[16]
    "mt_conv_pointwise_s8": 2 * 4 * 16 + 16,  # wsum[16], acc[16] int32, then mt_dots_s8 / mt_store_run
    "mt_conv_pointwise_split_s8": 2 * 4 * 16 + 64 + 16,  # wsum, acc, mt_gathered_dots' xg[64] + mt_dots_s8
    "mt_conv_depthwise_s8": 4 * 16 + 16,  # acc[16] int32, mt_store_run's ok[16]
    "mt_conv_depthwise_inplace_s8": 2 * 49,  # wv[49] int16: a 7x7 window's taps
    "mt_conv_grad_input_pointwise_f32": 4 * 16,  # t[16] float
    "mt_conv_grad_input_pointwise_i16": 4 * 64,  # the Cortex-M twin's paired weights of 64 output-channel pairs
    "mt_conv_grad_input_depthwise_f32": 4 * 64,  # acc[64] float
    "mt_conv_grad_input_depthwise_inplace_f32": 4 * 8,  # acc[8] float: one channel group's sums
    "mt_conv_weight_update_pointwise_f32": (4 + 4) * 16,  # g[16] float, xc[16] int32
    "mt_block_grad_grouped_f32": 4 * 64,  # its deepest helper: the depthwise input gradient's acc[64] float
}
WEIGHT_UPDATE_KERNEL = {"pointwise": "mt_conv_weight_update_pointwise_f32",
                        "depthwise": "mt_conv_weight_update_depthwise_f32", "conv": "mt_conv_weight_update_f32"}


def family(node) -> str:
    """The kernel family: pointwise (1x1, no padding, dense), depthwise, or conv (dense, any kernel)."""
    k = kind(node)
    if k in ("pointwise", "classifier"):
        return "pointwise" if is_pointwise(node) else "conv"
    if k == "depthwise":
        return "depthwise"
    if node.attrs.get("groups", 1) != 1:
        raise UnsupportedOpError(
            f"conv {node.name!r}: grouped convolution (groups={node.attrs['groups']}) has no C kernel; "
            "only dense, pointwise and depthwise convs are supported"
        )
    return "conv"


def input_channels(node, fam: str | None = None) -> int:
    """Input channels a weight slice selects from: the channels themselves for a depthwise conv."""
    w = node.params["weight"]
    return w.shape[0] if (fam or family(node)) == "depthwise" else w.shape[1]


def kernel_weight(w: np.ndarray, fam: str) -> np.ndarray:
    """OIHW int8 weight -> the kernel layout of its family: pointwise (O, I), depthwise (kh, kw, C),
    dense (O, kh, kw, I)."""
    if fam == "pointwise":
        return np.ascontiguousarray(w[:, :, 0, 0])
    if fam == "depthwise":
        return np.ascontiguousarray(w[:, 0].transpose(1, 2, 0))
    return np.ascontiguousarray(w.transpose(0, 2, 3, 1))


def oihw_weight(arr: np.ndarray, fam: str) -> np.ndarray:
    """The inverse of kernel_weight: pointwise (O, k) -> (O, k, 1, 1); dense (O, kh, kw, k) -> (O, k, kh, kw);
    depthwise (kh, kw, k) -> (k, 1, kh, kw)."""
    if fam == "pointwise":
        return arr[:, :, None, None]
    if fam == "depthwise":
        return arr.transpose(2, 0, 1)[:, None]
    return arr.transpose(0, 3, 1, 2)


@dataclass
class ConvLayout:
    """How one conv's parameters are stored and which forward kernel reads them."""

    node: str
    idx: int
    family: str  # pointwise | depthwise | conv
    kernel: str
    weight_args: list[Arg]  # the weight part of the kernel's argument list
    weight: str | None  # whole-weight const (None when split)
    weight_train: str | None  # SRAM const holding trained channels (None when frozen)
    train_channels: tuple[int, ...] | None
    bias: str
    eff: str
    params: str


def declare(prog, graph, node, idx: int, spec=None) -> ConvLayout:
    """Declare the constants of one conv (weights, bias, multipliers, params) and pick its kernel.
    `spec` is the conv's sparse.scheme.TrainSpec when it is trained (None: frozen). A conv whose
    weights are partly trained keeps the frozen input channels in flash and the trained ones in SRAM
    (split kernels); a fully trained conv has its whole weight in SRAM."""
    fam = family(node)
    w = node.params["weight"]
    xq = graph.tensors[node.inputs[0]].quant
    yq = graph.tensors[node.output].quant
    (h, wd, c), (ho, wo, o) = graph.tensors[node.inputs[0]].shape, graph.tensors[node.output].shape
    kh, kw = node.attrs["kernel"]
    p = prog.add_params(Params(f"mt_p{idx}", "mt_conv_params", [
        h, wd, c, ho, wo, o, kh, kw, node.attrs["stride"], node.attrs["padding"], xq.zero_point, yq.zero_point,
        dilation(node.attrs)]))
    eff = Const(f"mt_e{idx}", conv_multipliers(xq.scale, node.params["w_scales"], yq.scale), "float32")
    if requant_mode(node) != "tflite":  # the tflite kernel requantises with integers: only a backward reads eff
        prog.add_const(eff)
    bias_trained = spec is not None and spec.bias
    bias = prog.add_const(Const(f"mt_b{idx}", node.params["bias"].astype(np.int32), "int32",
                                "sram" if bias_trained else "flash", f"{node.name} bias"))
    kw_arr = kernel_weight(w, fam)
    channels = None if spec is None else spec.channels
    n_in = input_channels(node, fam)
    base = FORWARD_KERNEL[fam]
    if channels is None or len(channels) == n_in:
        storage = "flash" if channels is None else "sram"
        wc = prog.add_const(Const(f"mt_w{idx}", kw_arr, "int8", storage, f"{node.name} weight"))
        return ConvLayout(node.name, idx, fam, base + "_s8", [const(wc.name)], wc.name,
                          wc.name if channels is not None else None, channels, bias.name, eff.name, p.name)
    frozen = tuple(i for i in range(n_in) if i not in set(channels))
    wf = prog.add_const(Const(f"mt_w{idx}", np.ascontiguousarray(kw_arr[..., list(frozen)]), "int8", "flash",
                              f"{node.name} frozen weight"))
    wt = prog.add_const(Const(f"mt_wt{idx}", np.ascontiguousarray(kw_arr[..., list(channels)]), "int8", "sram",
                              f"{node.name} weight, trained input channels {len(channels)}/{n_in}"))
    fi = prog.add_const(Const(f"mt_fi{idx}", np.array(frozen, np.int16), "int16"))
    ti = prog.add_const(Const(f"mt_ti{idx}", np.array(channels, np.int16), "int16"))
    args = [const(wf.name), const(fi.name), lit(len(frozen)), const(wt.name), const(ti.name), lit(len(channels))]
    return ConvLayout(node.name, idx, fam, base + "_split_s8", args, None, wt.name, channels, bias.name,
                      eff.name, p.name)


def weight_view(prog, layout: ConvLayout, n_in: int) -> str:
    """The mt_weight_s8 struct the backward kernels read the (frozen + trained) weight through."""
    name = f"mt_wv{layout.idx}"
    if name in prog.params:
        return name
    if layout.weight is not None and layout.weight_train is None:  # frozen, whole
        fields = [layout.weight, "NULL", n_in, "NULL", "NULL", 0]
    elif layout.weight is not None:  # trained, whole (SRAM)
        fields = ["NULL", "NULL", 0, layout.weight, "NULL", n_in]
    else:
        nt = len(layout.train_channels)
        fields = [f"mt_w{layout.idx}", f"mt_fi{layout.idx}", n_in - nt, layout.weight_train, f"mt_ti{layout.idx}", nt]
    prog.add_params(Params(name, "mt_weight_s8", fields))
    return name


# ----- C lowering ----------------------------------------------------------------------------------------
def conv_step(layout: ConvLayout, x: str, y: str, mask: str | None) -> Step:
    args = [Arg("params", layout.params), buf(x)] + layout.weight_args + [
        const(layout.bias), const(layout.eff), buf(y), buf(mask) if mask else lit("NULL")]
    writes = [y] + ([mask] if mask else [])
    return Step(layout.kernel, args, [x], writes, layout.node)


def lower(lx, node, mask) -> list[Step]:
    """The forward kernel call (lx: codegen.lower.Lowering; mask: the mask buffer or None)."""
    if requant_mode(node) == "tflite":
        return [tflite_conv_step(lx, node, mask)]
    return [conv_step(lx.layouts[node.name], node.inputs[0], node.output, mask)]


def tflite_conv_step(lx, node, mask) -> Step:
    """The "tflite" rounding mode's conv (kernels/mt_forward_tfl_s8.c): the weight through the same
    frozen/trained view the backward kernels read, TFLite's per-channel multipliers and shifts, the
    fused activation's clamp."""
    prog, lay = lx.prog, lx.layouts[node.name]
    name = f"mt_rq{lay.idx}"
    if name not in prog.params:  # inference and training share it
        xq, yq = (lx.graph.tensors[t].quant for t in (node.inputs[0], node.output))
        m, shift = tflite_conv_multipliers(xq.scale, node.params["w_scales"], yq.scale)
        prog.add_const(Const(f"mt_qm{lay.idx}", m.astype(np.int32), "int32"))
        prog.add_const(Const(f"mt_qs{lay.idx}", shift.astype(np.int32), "int32"))
        single = int(node.attrs.get("multiplier_rounding", "double") == "single")
        prog.add_params(Params(name, "mt_requant_tfl", [f"mt_qm{lay.idx}", f"mt_qs{lay.idx}", single,
                                                        *int8_clamp(node)]))
    wv = weight_view(prog, lay, input_channels(node, lay.family))
    layout = "MT_TFL_HWC" if lay.family == "depthwise" else "MT_TFL_OHWI"
    x, y = node.inputs[0], node.output
    args = [Arg("params", lay.params), lit(node.attrs.get("groups", 1)), lit(layout), buf(x), Arg("params", wv),
            const(lay.bias), Arg("params", name), buf(y), buf(mask) if mask else lit("NULL")]
    return Step("mt_conv_tfl_s8", args, [x], [y] + ([mask] if mask else []), node.name)


def lower_tile(lx, node, ins, in_shapes, out, out_shape) -> list[Step]:
    """The forward kernel call of one tile (codegen/patch.py): `node` has padding 0 (its input window holds
    the padding); a params struct per tile shape, the node's own weights."""
    refuse_tiles_in_tflite_mode(node)
    lay = lx.layouts[node.name]
    if lay.weight is None or lay.weight_train is not None:
        raise GraphError(f"conv {node.name!r}: only a frozen conv can run on tiles")
    (h, w, c), (ho, wo, o) = in_shapes[0], out_shape
    name = f"{lay.params}_{h}x{w}"
    if name not in lx.prog.params:
        f = lx.prog.params[lay.params].fields
        lx.prog.add_params(Params(name, "mt_conv_params", [h, w, c, ho, wo, o, *f[6:9], 0, *f[10:]]))
    return [conv_step(replace(lay, params=name), ins[0], out, None)]


# ----- the step kinds of a conv's backward: NumPy executor and C lowering -----------------------------
def _run_grad_acc(rt, s, values, lr, t):
    values[s.outputs[0]] = grad_accumulator(values[s.inputs[0]], values[s.inputs[1]], s.attrs["scale"])


def _lower_grad_acc(lx, s):
    gy, mask = s.inputs
    out = s.outputs[0]
    lay = lx.layouts[s.node]
    if lay.eff not in lx.prog.consts:  # a "tflite" conv declares its float multipliers for the backward only
        node = lx.graph.node(s.node)
        xq, yq = (lx.graph.tensors[t].quant for t in (node.inputs[0], node.output))
        lx.prog.add_const(Const(lay.eff, conv_multipliers(xq.scale, node.params["w_scales"], yq.scale), "float32"))
    if not np.array_equal(np.asarray(s.attrs["scale"], np.float32), lx.prog.consts[lay.eff].value):
        raise GraphError(f"conv {s.node!r}: gradient scale differs from the forward multiplier")
    n, c = int(np.prod(lx.tg.tensors[out].shape)), lx.tg.tensors[out].shape[-1]
    return [Step("mt_conv_grad_acc_f32", [buf(gy), buf(mask), const(lay.eff), lit(n), lit(c), buf(out)],
                 [gy, mask], [out], s.node, "backward")]


def _run_grad_input(rt, s, values, lr, t):
    node = rt.nodes[s.node]
    if s.attrs.get("backward") == "int16":
        values[s.outputs[0]] = grad_input_int16(values[s.inputs[0]], node.params["weight"], node.attrs,
                                                s.attrs["in_shape"])
        return
    values[s.outputs[0]] = grad_input(values[s.inputs[0]], node.params["weight"], node.attrs, s.attrs["in_shape"],
                                      rt.sums)


def _lower_grad_input(lx, s):
    gacc, gx = s.inputs[0], s.outputs[0]
    lay = lx.layouts[s.node]
    wv = weight_view(lx.prog, lay, input_channels(lx.graph.node(s.node), lay.family))
    if s.attrs.get("backward") == "int16":
        if lay.family != "pointwise":
            raise UnsupportedOpError(f"conv {s.node!r}: the int16 backward has a pointwise kernel only")
        codes = f"i16codes:{s.node}"  # the whole tensor's codes: scratch, dead after the call
        if codes not in lx.prog.buffers:
            lx.prog.add_buffer(Buffer(codes, int16_codes_numel(lx.tg.tensors[gacc].shape), "int16", "scratch"))
        return [Step(GRAD_INPUT_I16_KERNEL, [Arg("params", lay.params), buf(gacc), Arg("params", wv), buf(codes),
                                             buf(gx)], [gacc], [gx, codes], s.node, "backward")]
    return [Step(GRAD_INPUT_KERNEL[lay.family], [Arg("params", lay.params), buf(gacc), Arg("params", wv), buf(gx)],
                 [gacc], [gx], s.node, "backward")]


def int16_codes_numel(gacc_shape) -> int:
    """int16 elements of the C kernels' codes scratch (kernels/mt_i16.h: mt_i16_codes_bytes): groups of 4 pixels x
    output-channel pairs x 4 pixels x 2 codes, for a gradient of shape (N, H, W, O) with N = 1."""
    *_, h, w, o = gacc_shape
    return (h * w + 3) // 4 * ((o + 1) // 2) * 8


def _weight_grad(rt, s, values):
    a = s.attrs
    node = rt.nodes[s.node]
    xs = shifted_input(values[s.inputs[0]], a["x_zero"])
    if a.get("input_sliced"):  # back to full width: the untrained channels are never read
        full = np.zeros(xs.shape[:-1] + (rt.graph.tensors[node.inputs[0]].shape[-1],), np.float32)
        full[..., list(a["channels"])] = xs
        xs = full
    return grad_weight(xs, values[s.inputs[1]], node.params["weight"].shape, node.attrs, a["channels"], rt.sums)


def _run_grad_weight(rt, s, values, lr, t):
    values[s.outputs[0]] = _weight_grad(rt, s, values)


def _run_grad_bias(rt, s, values, lr, t):
    values[s.outputs[0]] = grad_bias(values[s.inputs[0]], rt.sums)


def _run_weight_update(rt, s, values, lr, t):
    rt.update(s.attrs["update"], rt.nodes[s.node], _weight_grad(rt, s, values), lr, t)


def _lower_weight_update(lx, s):
    x, gacc = s.inputs
    a = s.attrs
    lay = lx.layouts[s.node]
    w = lx.graph.node(s.node).params["weight"]
    if tuple(a["channels"]) != tuple(lay.train_channels):
        raise GraphError(f"conv {s.node!r}: update channels differ from the declared trained slice")
    wv = weight_view(lx.prog, lay, input_channels(lx.graph.node(s.node), lay.family))
    up = update_params(lx.prog, f"mt_uw{lay.idx}", f"mt_dw{lay.idx}", a["update"]["divisor"], a["update"], w.shape[1])
    x_c = lx.graph.tensors[x].shape[-1] if x in lx.graph.tensors else lx.tg.tensors[x].shape[-1]
    return [Step(WEIGHT_UPDATE_KERNEL[lay.family], [Arg("params", lay.params), buf(x), lit(x_c), buf(gacc),
                                                    Arg("params", wv), Arg("params", up), lit("&mt_ctx")],
                 [x, gacc], [], s.node, "update")]


def _run_bias_update(rt, s, values, lr, t):
    rt.update(s.attrs["update"], rt.nodes[s.node], grad_bias(values[s.inputs[0]], rt.sums), lr, t)


def _lower_bias_update(lx, s):
    gacc = s.inputs[0]
    lay = lx.layouts[s.node]
    shape = lx.tg.tensors[gacc].shape
    up = update_params(lx.prog, f"mt_ub{lay.idx}", f"mt_db{lay.idx}", s.attrs["update"]["divisor"], s.attrs["update"], 1)
    return [Step("mt_bias_update_f32", [buf(gacc), lit(shape[0] * shape[1]), lit(shape[2]), const(lay.bias),
                                        Arg("params", up), lit("&mt_ctx")], [gacc], [], s.node, "update")]


def _c_sums_refusal(s, graph) -> str | None:
    """Why TrainingRuntime(sums="c") cannot run this input- or weight-gradient step (None: it can)."""
    node = graph.node(s.node)
    if c_sums_cover(node.params["weight"].shape, node.attrs, graph.tensors[node.inputs[0]].shape[-1]):
        return None
    what = "input" if s.kind == "conv_grad_input" else "weight"
    return (f"conv {node.name!r} ({describe(node)}, groups {node.attrs.get('groups', 1)}): sums='c' has the C "
            f"kernels' order of pointwise and depthwise gradients only, not this conv's {what} gradient; "
            "use sums='numpy'")


KINDS = {
    "conv_grad_acc": Kind(_run_grad_acc, _lower_grad_acc, "backward", inplace=0),
    "conv_grad_input": Kind(_run_grad_input, _lower_grad_input, "backward", reads_params=True,
                            c_sums=_c_sums_refusal),
    "conv_grad_weight": Kind(_run_grad_weight, None, "backward", fuses_to="conv_weight_update", slices_input=True,
                             c_sums=_c_sums_refusal),
    "conv_grad_bias": Kind(_run_grad_bias, None, "backward", fuses_to="conv_bias_update"),
    "conv_weight_update": Kind(_run_weight_update, _lower_weight_update, "update", slices_input=True,
                               c_sums=_c_sums_refusal),
    "conv_bias_update": Kind(_run_bias_update, _lower_bias_update, "update"),
}

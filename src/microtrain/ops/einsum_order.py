"""The depthwise weight gradient as NumPy's einsum sums it, bit for bit, in fewer passes.

The simulation's depthwise weight gradient was one `np.einsum("nhwc,nhwc->c", window, g, dtype=float32)` per
tap, on channel-gathered operands (`x[..., ch]` is channel-major in memory). Float32 sums depend on their order,
and stored accuracy results are reused only while the numbers stay the same, so a faster formula must add the
same products in the same order. For those operands NumPy's einsum runs, per channel (NumPy 2.x,
einsum.c.src / einsum_sumprod.cpp, checked against np.einsum by tests/test_ops_conv_depthwise_grads.py):

- its iterator puts the channel outermost and the (n, y, x) positions, in that order, in the inner loop,
  buffered in pieces of at most NPY_BUFSIZE = 8192 positions (`inner_pieces` asks an np.nditer built with
  einsum's flags, so nothing here guesses the piece lengths);
- each piece goes to the contiguous float32 dot kernel: 4 float32 lanes (the x86-64 SSE baseline of the
  NumPy 2.4 wheel; found by comparing np.einsum with candidate orders), products rounded then added (no FMA), blocks of 16 products added a block-quarter at a
  time in reverse (positions 12-15 first, then 8-11, 4-7, 0-3), the tail 4 at a time (zero-filled lanes), then
  the lanes summed as (l0 + l1) + (l2 + l3), and that added to the channel's running total.

ops/conv.depthwise_grad_weight reproduces exactly that for every channel and tap at once, when every piece is
whole samples of 16-position blocks: the products go straight into the kernel's schedule (buffer rows = block
quarters in reverse, then tap, lane, channel) and np.add.reduce adds the rows in order (a reduction over the
outer axis is a plain sequential loop), the lane sums carried across buffers. When the iterator would do
anything else (`inner_pieces` returns None) or this NumPy build sums differently (conv.einsum_reproduced, checked
once per process), grad_weight keeps np.einsum.
"""
from __future__ import annotations

import numpy as np

LANES, UNROLL = 4, 4  # float32 lanes of the baseline SIMD kernel, and its unrolling
BLOCK_ELEMS = 2**17  # products per buffer of samples (512 KB): it stays in a 1 MB L2 cache


def inner_pieces(window: np.ndarray, g: np.ndarray) -> tuple[int, ...] | None:
    """The lengths of einsum's inner loops over the (n, y, x) positions of one channel, in order, for
    np.einsum("nhwc,nhwc->c", window, g, dtype=float32); None unless every inner loop is one channel's
    consecutive positions read as contiguous float32 (the layout ops/conv.depthwise_grad_weight reproduces). Asks an
    np.nditer built like einsum's iterator (its flags and axes), over the first channel only."""
    return _pieces(window, g)


def _pieces(window, g):
    n, ho, wo, c = window.shape
    length = n * ho * wo
    if window.dtype != np.float32 or g.dtype != np.float32 or length == 0:
        return None
    axes = [3, 1, 0, 2]  # einsum's iterator axes: output labels (c), then the others alphabetically (h, n, w)
    it = np.nditer([window, g, None], flags=["external_loop", "buffered", "delay_bufalloc", "grow_inner",
                                             "refs_ok", "zerosize_ok", "reduce_ok"],
                   op_flags=[["readonly", "nbo", "aligned"], ["readonly", "nbo", "aligned"],
                             ["readwrite", "nbo", "aligned", "allocate"]],
                   op_axes=[axes, axes, [0, -1, -1, -1]], op_dtypes=[np.float32] * 3, order="K")
    if it.ndim < 4:  # coalesced axes: einsum may take its unbuffered shortcuts, keep np.einsum
        return None
    it.reset()
    pieces, total = [], 0
    for a, b, o in it:
        if a.strides != (4,) or b.strides != (4,) or o.strides != (0,):
            return None
        pieces.append(a.shape[0])
        total += a.shape[0]
        if total >= length:
            break
    return tuple(pieces) if total == length else None


def block_split(ho: int, wo: int):
    """How one sample's positions y*Wo + x split into the kernel's 16-position blocks: (block dims, quarter
    dims) such that (Ho, Wo) reshapes (a view) to block dims + quarter dims + (LANES,) in position order, the
    quarter dims read as one big-endian number being the quarter u (position = 16*block + 4*u + lane); None
    when Ho, Wo do not split so (the caller then keeps np.einsum)."""
    if wo % 16 == 0:
        return (ho, wo // 16), (UNROLL,)
    if wo == 8 and ho % 2 == 0:  # a block is two rows: u = 2 * (y % 2) + x // 4
        return (ho // 2,), (2, 2)
    if wo == 4 and ho % 4 == 0:  # a block is four rows: u = y % 4
        return (ho // 4,), (UNROLL,)
    return None


def combine_lanes(lanes: np.ndarray) -> np.ndarray:
    """The kernel's horizontal sum of its 4 lane sums (axis 0): (l0 + l1) + (l2 + l3)."""
    return (lanes[0] + lanes[1]) + (lanes[2] + lanes[3])

"""Federated averaging of int8 sparse updates (docs/fleet.md, "Aggregation").

For every trained array P of the layout (int8 weight slice or int32 bias), global codes G with scale s, and
the accepted client updates k with codes P_k, scales s_k and sample counts n_k (N = sum n_k):

    mean real value   m     = sum_k n_k * P_k * s_k / N       (dequantised, weighted by samples)
    change in codes   delta = float32((m - G * s) / s)        (requantised to the global scale)
                            = float32(sum_k n_k * (P_k * (s_k / s) - G) / N)   <- computed so, in float64
    new global codes  G'    = apply_update(G, delta, "nearest", int8 | int32)

i.e. the server applies the averaged change exactly as a device applies an SGD step with nearest rounding
(quant/update.py: G + rint(delta), ties to even, saturated to int8 [-128, 127] or int32 on exact
integers): one arithmetic, no second rounding rule. The weight scale of an element is w_scales[its output
channel], a bias's x_scale * w_scales[c]. Scales never train (the strategy rejects updates whose scales
differ from the global model's), so s_k / s = 1 and the sum is over exact integers: the result does not
depend on the order in which replies arrive, and a mean that is exactly half-way rounds to even.
"""
from __future__ import annotations

import numpy as np

from ..quant.update import apply_update
from .layout import SliceLayout, UpdateRejected

SATURATE = {"weight": "int8", "bias": "int32"}


def _scale(layout: SliceLayout, arrays: dict, key: str) -> np.ndarray:
    """float64 real scale of every element of the trained array `key`, broadcastable to its shape."""
    e = layout.by_key[key]
    w = arrays[f"{e.node}.w_scales"].astype(np.float64)
    if e.param == "bias":
        return w * np.float64(arrays[f"{e.node}.x_scale"][0])
    if isinstance(e.index[0], np.ndarray):  # depthwise slice W[channels]: element i belongs to output channels[i]
        w = w[e.index[0]]
    return w[:, None, None, None]


def aggregate(layout: SliceLayout, global_arrays: dict, updates: list[tuple[dict, int]]) -> dict[str, np.ndarray]:
    """The new global update from accepted, checked client updates [(arrays, n_samples)]."""
    if not updates:
        raise UpdateRejected("nothing to aggregate: no accepted update")
    counts = np.array([n for _, n in updates], dtype=np.float64)
    if not np.all(counts > 0):
        raise UpdateRejected(f"sample counts must be > 0, got {counts.tolist()}")
    out = {k: v.copy() for k, v in global_arrays.items()}
    for e in layout.entries:
        if e.param not in SATURATE:
            continue
        s_global = _scale(layout, global_arrays, e.key)
        g = global_arrays[e.key].astype(np.float64)
        total = np.zeros(g.shape)
        for (a, _), n in zip(updates, counts):
            ratio = np.divide(_scale(layout, a, e.key), s_global,
                              out=np.ones(np.shape(s_global)), where=s_global > 0)
            total += n * (a[e.key].astype(np.float64) * ratio - g)
        out[e.key] = apply_update(global_arrays[e.key], (total / counts.sum()).astype(np.float32), "nearest",
                                  SATURATE[e.param])
    return out

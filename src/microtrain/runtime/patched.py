"""NumPy reference of patch-based execution (patching.py): the frozen prefix tile by tile, then the rest
of the graph whole. Equal to runtime.forward.run_int8 bit for bit (tests/test_patching.py)."""
from __future__ import annotations

import numpy as np

from ..ops import op_module
from ..patching import PatchPlan, Window, plan_patches
from .forward import _check_input, run_int8_nodes


def cut_window(x: np.ndarray, have: Window, want: Window, fill: int) -> np.ndarray:
    """The `want` window of a tensor of which `x` (N, h, w, C) holds the `have` window; positions outside the
    tensor (the padding) are `fill` (the zero point: real zero)."""
    (hr0, hr1), (hc0, hc1) = have
    (wr0, wr1), (wc0, wc1) = want
    out = np.full((x.shape[0], wr1 - wr0, wc1 - wc0, x.shape[3]), fill, np.int8)
    r0, r1, c0, c1 = max(wr0, hr0), min(wr1, hr1), max(wc0, hc0), min(wc1, hc1)
    out[:, r0 - wr0 : r1 - wr0, c0 - wc0 : c1 - wc0] = x[:, r0 - hr0 : r1 - hr0, c0 - hc0 : c1 - hc0]
    return out


def run_prefix_patched(graph, x_q: np.ndarray, plan: PatchPlan) -> np.ndarray:
    """The split tensor (N, H, W, C), computed tile by tile."""
    n = x_q.shape[0]
    h, w, c = graph.tensors[plan.output].shape
    result = np.empty((n, h, w, c), np.int8)
    whole = ((0, graph.input_spec.shape[0]), (0, graph.input_spec.shape[1]))
    for tile in plan.tiles:
        values = {graph.input: (x_q, whole)}
        for tn in tile.nodes:
            node = tn.node
            ins, qs = [], []
            for t, want in zip(node.inputs, tn.reads):
                q = graph.tensors[t].quant
                arr, have = values[t]
                ins.append(arr if have == want else cut_window(arr, have, want, q.zero_point))
                qs.append(q)
            y = op_module(node).forward_int8(node, *ins, *qs, graph.tensors[node.output].quant)
            values[node.output] = (y, tn.out)
        (r0, r1), (c0, c1) = tile.windows[plan.output]
        result[:, r0:r1, c0:c1] = values[plan.output][0]
    return result


def run_patched(graph, x_q: np.ndarray, split: int, grid: tuple[int, int]) -> np.ndarray:
    """int8 output of the whole graph with nodes [0, split) run on a gh x gw grid of tiles."""
    _check_input(graph, x_q, np.int8)
    plan = plan_patches(graph, split, grid)
    mid = run_prefix_patched(graph, x_q, plan)
    return run_int8_nodes(graph, {plan.output: mid}, graph.nodes[split:])

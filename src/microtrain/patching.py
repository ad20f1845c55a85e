"""Patch-based execution of the frozen prefix (the idea of MCUNetV2's patch-based inference): geometry.

The first nodes [0, split) of a graph run tile by tile: the output of node split-1 (the split tensor) is
cut into a grid of spatial tiles, and for each tile every prefix tensor is computed only on the window
that tile needs (receptive-field arithmetic: each op's `window_in`), so the large early activations never
exist whole. Neighbouring tiles recompute the overlapping halo (the extra MACs). A conv whose window
reaches past the tensor's border reads the padding from the tile buffer itself (filled with the input's
zero point, i.e. real zeros, exactly what the padded whole-tensor conv adds), so every tile node runs
with padding 0 and the same kernels and arithmetic: the result is bit for bit the unpatched one.

This module only computes windows and costs; runtime/patched.py runs a plan in NumPy and
codegen/patch.py lowers it to kernel calls.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .errors import GraphError
from .ops import op_module

Span = tuple[int, int]  # half-open [lo, hi) along one axis; may reach past [0, n) into the padding
Window = tuple[Span, Span]  # (rows, cols)


@dataclass
class TileNode:
    node: object  # the graph node with padding 0 (its inputs carry their padding)
    reads: list[Window]  # the window of each input it reads
    out: Window  # the window of its output it computes (inside the tensor)


@dataclass
class Tile:
    index: int
    nodes: list[TileNode]
    windows: dict[str, Window]  # tensor -> computed window (graph input: the window cut from the image)


@dataclass
class PatchPlan:
    split: int  # nodes [0, split) run per tile
    grid: tuple[int, int]
    output: str  # the split tensor (whole; each tile writes its window)
    tensors: list[str]  # prefix tensors that never exist whole any more
    tiles: list[Tile] = field(default_factory=list)
    macs: int = 0  # MACs of the prefix run per tile
    base_macs: int = 0  # MACs of the prefix run whole

    @property
    def extra_macs(self) -> int:
        return self.macs - self.base_macs

    def describe(self) -> str:
        return f"{self.split}:{self.grid[0]}x{self.grid[1]}"


def _clip(span: Span, n: int) -> Span:
    return max(span[0], 0), min(span[1], n)


def _hull(a: Span | None, b: Span) -> Span:
    return b if a is None else (min(a[0], b[0]), max(a[1], b[1]))


def _cuts(n: int, parts: int) -> list[Span]:
    edges = [round(i * n / parts) for i in range(parts + 1)]
    return [(edges[i], edges[i + 1]) for i in range(parts)]


def unpadded(node):
    """The node as a tile runs it: padding 0 (the tile's input window holds the padding)."""
    if node.attrs.get("padding", 0) == 0:
        return node
    return dataclasses.replace(node, attrs={**node.attrs, "padding": 0})


def check_split(graph, split: int) -> None:
    """Raise GraphError unless nodes [0, split) can run per tile: spatial ops only, and no tensor of the
    prefix but the split tensor is read after it."""
    if not 1 <= split < len(graph.nodes):
        raise GraphError(f"graph {graph.name!r}: patch split {split} is outside 1..{len(graph.nodes) - 1}")
    prefix = graph.nodes[:split]
    for node in prefix:
        if not hasattr(op_module(node), "window_in"):
            raise GraphError(f"graph {graph.name!r}: node {node.name!r} ({node.op}) cannot run on tiles "
                             f"(its op has no window_in); choose a split before it")
    inner = {graph.input} | {n.output for n in prefix[:-1]}
    for node in graph.nodes[split:]:
        late = inner.intersection(node.inputs)
        if late:
            raise GraphError(f"graph {graph.name!r}: patch split {split} cuts {sorted(late)[0]!r}, which "
                             f"{node.name!r} reads after the prefix")


def plan_patches(graph, split: int, grid: tuple[int, int]) -> PatchPlan:
    """Windows of every prefix tensor for each tile of the split tensor's gh x gw grid."""
    check_split(graph, split)
    prefix = graph.nodes[:split]
    out = prefix[-1].output
    h, w = graph.tensors[out].shape[:2]
    gh, gw = grid
    if not (1 <= gh <= h and 1 <= gw <= w):
        raise GraphError(f"graph {graph.name!r}: patch grid {gh}x{gw} does not fit the split tensor "
                         f"{out!r} ({h}x{w})")
    plan = PatchPlan(split, (gh, gw), out, [n.output for n in prefix[:-1]])
    plan.base_macs = sum(_macs(graph, n, graph.tensors[n.output].shape[:2]) for n in prefix)
    for k, (rows, cols) in enumerate((r, c) for r in _cuts(h, gh) for c in _cuts(w, gw)):
        need: dict[str, list] = {out: [rows, cols]}
        reads = {}
        for node in reversed(prefix):
            shape = graph.tensors[node.output].shape
            win = tuple(_clip(s, n) for s, n in zip(need[node.output], shape[:2]))
            need[node.output] = list(win)
            per_axis = [op_module(node).window_in(node, *win[a], a) for a in (0, 1)]
            reads[node.name] = [(r, c) for r, c in zip(*per_axis)]
            for t, (r, c) in zip(node.inputs, reads[node.name]):
                cur = need.setdefault(t, [None, None])
                cur[0], cur[1] = _hull(cur[0], r), _hull(cur[1], c)
        windows = {t: tuple(_clip(s, n) for s, n in zip(v, graph.tensors[t].shape[:2])) for t, v in need.items()}
        nodes = [TileNode(unpadded(n), reads[n.name], windows[n.output]) for n in prefix]
        plan.tiles.append(Tile(k, nodes, windows))
        plan.macs += sum(_macs(graph, n, _size(windows[n.output])) for n in prefix)
    return plan


def _size(win: Window) -> tuple[int, int]:
    return win[0][1] - win[0][0], win[1][1] - win[1][0]


def _macs(graph, node, hw) -> int:
    shape = graph.tensors[node.output].shape
    ins = [graph.tensors[t].shape for t in node.inputs]
    return op_module(node).macs(node, ins[0], (hw[0], hw[1], shape[2]))


def window_shape(win: Window, channels: int) -> tuple[int, int, int]:
    h, w = _size(win)
    return h, w, channels

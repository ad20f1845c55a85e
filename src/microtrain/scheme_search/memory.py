"""Analytic extra memory of a sparse-update scheme (upstream's model), and budget parsing.

"Extra memory" is what training adds on top of int8 inference: what must survive from the forward pass
to the backward pass, plus the trainable copies of parameters. Upstream's accounting
(mit-han-lab/tiny-training, algorithm/core/utils/partial_backward.py, nelem_saved_for_backward), which this
module reproduces to the byte for every upstream MCUNet figure (49.8 / 74.8 / 99.8 / 125.0 / 148.4 KB,
last-12 448 KB, bias-only 121.3 KB, full 1400 KB; KB = 1024 bytes):

- classifier: 8 bits per element of its saved input (the pooled C-vector); its weights and bias are
  NOT counted (upstream: fc_bits = 0);
- every trained conv (bias and/or weights): 1 bit per OUTPUT element (the clamp-gradient mask; counted
  for linear pointwise2 convs too, as upstream does) + 32 bits per bias element when its bias is trained;
- a weight-trained conv, k = trained input channels (n_trained_channels: the same k resolve() uses):
  8 bits per saved INPUT element of the k channels (H_in * W_in * k) + 8 bits per trained weight
  (O * k * kh * kw; a depthwise conv: k * kh * kw);
- SGD without momentum: no optimiser state.
Shapes are the graph's own (per sample, batch 1), so the model follows graph.with_resolution().
This is an analytic figure, not the engine's: the arena planner reports the exact SRAM a compiled
scheme needs (see `planner_report`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

from ..codegen import compile_model
from ..errors import BudgetError, SchemeError
from ..ir.graph import Graph
from ..sparse.scheme import RATIOS, UpdateScheme, is_depthwise, n_trained_channels

KB = 1024
MASK_BITS, BIAS_BITS, ACT_BITS, WEIGHT_BITS = 1, 32, 8, 8


@dataclass(frozen=True)
class ConvCost:
    """Per-conv constants of the memory model (bits)."""

    index: int
    name: str
    mask_bits: int  # 1 bit per output element
    bias_bits: int  # 32 bits per bias element
    input_bits_per_channel: int  # 8 * H_in * W_in (times groups for a grouped non-depthwise conv)
    weight_bits_per_channel: int  # 8 * (O or 1) * kh * kw
    channels_at: dict  # ratio (Fraction) -> trained input channels k

    def weight_bits(self, ratio) -> int:
        k = self.channels_at[Fraction(ratio).limit_denominator(64)]
        return k * (self.input_bits_per_channel + self.weight_bits_per_channel)


@dataclass(frozen=True)
class MemoryRow:
    index: int  # -1 for the classifier
    name: str
    mask: int
    bias: int
    saved_input: int
    weights: int  # all in bits

    @property
    def bits(self) -> int:
        return self.mask + self.bias + self.saved_input + self.weights

    @property
    def bytes(self) -> float:
        return self.bits / 8


class MemoryModel:
    """Precomputed per-conv costs of one graph: evaluating a scheme is a few table look-ups (the
    evolutionary search evaluates tens of thousands)."""

    def __init__(self, graph: Graph):
        self.graph_name = graph.name
        self.convs: list[ConvCost] = []
        for i, node in enumerate(graph.indexed_convs()):
            w = node.params["weight"]
            o, i_per_group, kh, kw = w.shape
            h_in, w_in, _ = graph.tensors[node.inputs[0]].shape
            groups = int(node.attrs.get("groups", 1))
            dw = is_depthwise(node)
            per_in = ACT_BITS * h_in * w_in * (1 if dw else groups)
            per_w = WEIGHT_BITS * (kh * kw if dw else o * kh * kw)
            self.convs.append(
                ConvCost(
                    index=i,
                    name=node.name,
                    mask_bits=MASK_BITS * graph.tensors[node.output].numel,
                    bias_bits=BIAS_BITS * int(node.params["bias"].size),
                    input_bits_per_channel=per_in,
                    weight_bits_per_channel=per_w,
                    channels_at={r: n_trained_channels(node, r) for r in RATIOS},
                )
            )
        head = graph.classifier()
        self.head_name = head.name
        self.head_bits = ACT_BITS * graph.tensors[head.inputs[0]].numel
        self.n = len(self.convs)

    # ----- evaluation ---------------------------------------------------------------------------------
    def bits(self, n_bias: int, weights: dict) -> int:
        """Extra bits of (n_bias, {conv: ratio}); no validation (the search's hot path)."""
        total = self.head_bits
        first_bias = self.n - n_bias
        for c in self.convs:
            bias = c.index >= first_bias
            ratio = weights.get(c.index)
            if not bias and ratio is None:
                continue
            total += c.mask_bits + (c.bias_bits if bias else 0)
            if ratio is not None:
                total += c.weight_bits(ratio)
        return total

    def scheme_bits(self, scheme: UpdateScheme) -> int:
        if not 0 <= scheme.n_bias <= self.n or any(not 0 <= i < self.n for i in scheme.weights):
            raise SchemeError(f"scheme {scheme.name!r} does not fit {self.graph_name} ({self.n} indexed convs)")
        return self.bits(scheme.n_bias, scheme.weights)

    def scheme_bytes(self, scheme: UpdateScheme) -> float:
        return self.scheme_bits(scheme) / 8

    @property
    def minimum_bytes(self) -> float:
        """What the always-trained classifier alone needs."""
        return self.head_bits / 8

    def breakdown(self, scheme: UpdateScheme) -> list[MemoryRow]:
        """One row per trained conv (execution order), then the classifier."""
        rows = []
        first_bias = self.n - scheme.n_bias
        for c in self.convs:
            bias = c.index >= first_bias
            ratio = scheme.weights.get(c.index)
            if not bias and ratio is None:
                continue
            k = c.channels_at[Fraction(ratio).limit_denominator(64)] if ratio is not None else 0
            rows.append(
                MemoryRow(c.index, c.name, c.mask_bits, c.bias_bits if bias else 0,
                          k * c.input_bits_per_channel, k * c.weight_bits_per_channel)
            )
        rows.append(MemoryRow(-1, self.head_name, 0, 0, self.head_bits, 0))
        return rows


def extra_memory_bytes(graph: Graph, scheme: UpdateScheme) -> float:
    """Upstream's analytic extra memory of `scheme` on `graph`, in bytes (see the module docstring)."""
    scheme.validate(graph)
    return MemoryModel(graph).scheme_bytes(scheme)


def planner_report(graph: Graph, scheme: UpdateScheme, **options):
    """The engine's exact memory plan (codegen + arena planner) of training `scheme` on `graph`, or None
    when this install has no training code generator. Its SRAM figures are what the firmware links with;
    they include the activations arena, which upstream's analytic "extra memory" leaves out."""
    return compile_model(graph, scheme, **options).report


# ----- budgets ----------------------------------------------------------------------------------------
_UNITS = {"": 1, "b": 1, "kb": KB, "kib": KB, "k": KB, "mb": KB * KB, "mib": KB * KB, "m": KB * KB}
_BUDGET = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*$")


def parse_budget(text) -> int:
    """'100KB', '49.8KB', '1MB', '51200', '51200B' -> bytes (KB = 1024 B, MB = 1024 KB), rounded down."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value, unit = float(text), ""
    else:
        m = _BUDGET.match(str(text))
        if not m:
            raise BudgetError(f"budget {text!r}: expected a number with an optional unit B, KB or MB (e.g. 100KB, 49.8KB, 1MB)")
        value, unit = float(m.group(1)), m.group(2).lower()
        if unit not in _UNITS:
            raise BudgetError(f"budget {text!r}: unknown unit {m.group(2)!r} (use B, KB or MB; KB = 1024 bytes)")
    if not value > 0:
        raise BudgetError(f"budget {text!r}: must be greater than zero")
    return int(value * _UNITS[unit])


def check_budget(model: MemoryModel, budget_bytes: int) -> None:
    """BudgetError naming the minimum when even the classifier alone does not fit."""
    if budget_bytes < model.minimum_bytes:
        raise BudgetError(
            f"nothing fits in {format_bytes(budget_bytes)}: the always-trained classifier {model.head_name!r} of "
            f"{model.graph_name} alone needs {model.minimum_bytes:.0f} B; use --budget {model.minimum_bytes:.0f}B or more"
        )


def format_bytes(n: float) -> str:
    return f"{n / KB:.1f} KB" if n >= KB else f"{n:.0f} B"

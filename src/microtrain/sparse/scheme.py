"""UpdateScheme: what may learn. The classifier (head) is always trained, weights and bias.

A scheme names convs by their index in execution order without the classifier (Graph.indexed_convs()):
- n_bias: the biases of the last n indexed convs are trained;
- weights: {conv index: ratio} trains that conv's weights for a ratio (1/8, 1/4, 1/2, 1) of its INPUT
  channels (for a depthwise conv, input channel = output channel); which channels is decided by
  `selection` ("norm": largest L2 norm of the weight slice, upstream's simulation; "first": first k).
`resolve(graph)` fixes the concrete channel indices once; simulation and generated code both use
that resolution, so they always train the same slices. `pinned(graph)` stores them in the scheme
(`channels`), so a trained graph (whose norms have moved) still resolves to the same slices;
`microtrain plan --out` writes pinned schemes.

A scheme file is read strictly: unknown keys (a misspelt `nbias`) and missing ones (`n_bias`, `weights`)
are errors, never a silent head-only scheme. It may record what it was made for: `model` and
`fingerprint` (the indexed convs' names and shapes, see graph_fingerprint: a scheme of one model is
refused on another), `layers` ({index: conv name}, checked, so an index that moved is noticed; `weights`
may also be keyed by conv name) and `classes` (the dataset's class names, for the head `compile` builds).
"""
from __future__ import annotations

import difflib
import hashlib
import json
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..errors import SchemeError
from ..ir.graph import Graph, Node, later_attrs

RATIOS = (Fraction(1, 8), Fraction(1, 4), Fraction(1, 2), Fraction(1, 1))
SELECTIONS = ("norm", "first")
REQUIRED_KEYS = ("format", "n_bias", "weights")
OPTIONAL_KEYS = ("name", "selection", "channels", "model", "fingerprint", "layers", "classes", "source")


def graph_fingerprint(graph: Graph) -> str:
    """What a scheme depends on: the indexed convs' names, weight shapes (kernels), strides, groups and
    dilations (ir.graph.later_attrs: hashed only when not 1) (not the head, the resolution, the padding or
    the weight values, so a retrained or re-headed model keeps it)."""
    h = hashlib.blake2b(digest_size=8)
    for n in graph.indexed_convs():
        h.update(repr((n.name, tuple(n.params["weight"].shape), n.attrs.get("stride"), n.attrs.get("groups", 1))
                      + later_attrs(n)).encode())
    return h.hexdigest()


@dataclass(frozen=True)
class TrainSpec:
    """The trained part of one conv: its bias, and/or the weight slices of `channels` (input channels)."""

    node: str
    bias: bool
    channels: tuple[int, ...] | None  # None: weights frozen; else sorted input-channel indices trained


@dataclass
class UpdateScheme:
    n_bias: int = 0
    weights: dict[int, float] = field(default_factory=dict)
    selection: str = "norm"
    name: str = ""
    # optional pinned input channels per weight-trained conv: they override `selection`, so a scheme
    # resolved once (pinned()) trains the same slices on any later copy of the graph, e.g. a trained one
    # whose weight norms have moved
    channels: dict[int, tuple[int, ...]] = field(default_factory=dict)
    # what the scheme was made for (module docstring); empty: not recorded, not checked
    model: str = ""
    fingerprint: str = ""
    layers: dict[int, str] = field(default_factory=dict)
    classes: list[str] | None = None

    # ----- constructors ----------------------------------------------------------------------------
    @classmethod
    def head_only(cls) -> "UpdateScheme":
        return cls(0, {}, name="head-only")

    @classmethod
    def full(cls, graph: Graph) -> "UpdateScheme":
        n = len(graph.indexed_convs())
        return cls(n, {i: 1.0 for i in range(n)}, name="full")

    @classmethod
    def bias_only(cls, graph: Graph) -> "UpdateScheme":
        return cls(len(graph.indexed_convs()), {}, name="bias-only")

    @classmethod
    def last_layers(cls, graph: Graph, k: int) -> "UpdateScheme":
        """Weights and biases of the last k indexed convs."""
        n = len(graph.indexed_convs())
        k = max(0, min(int(k), n))
        return cls(k, {i: 1.0 for i in range(n - k, n)}, name=f"last-{k}")

    @classmethod
    def last_blocks(cls, graph: Graph, k: int) -> "UpdateScheme":
        """Weights and biases of every conv in the last k blocks (names 'blocks.<i>.*')."""
        convs = graph.indexed_convs()
        blocks = sorted({int(n.name.split(".")[1]) for n in convs if n.name.startswith("blocks.")})
        chosen = set(blocks[-k:]) if k > 0 else set()
        idx = [i for i, n in enumerate(convs) if n.name.startswith("blocks.") and int(n.name.split(".")[1]) in chosen]
        if not idx:
            return cls.head_only()
        return cls(len(convs) - min(idx), {i: 1.0 for i in idx}, name=f"last-{k}-blocks")

    # ----- checks and resolution --------------------------------------------------------------------
    def validate(self, graph: Graph) -> "UpdateScheme":
        self._check_model(graph)
        n = len(graph.indexed_convs())
        if not isinstance(self.n_bias, int) or not 0 <= self.n_bias <= n:
            raise SchemeError(f"scheme {self.name!r}: n_bias must be an integer in [0, {n}] for {graph.name}, got {self.n_bias!r}")
        if self.selection not in SELECTIONS:
            raise SchemeError(f"scheme {self.name!r}: selection must be one of {SELECTIONS}, got {self.selection!r}")
        for idx, ratio in self.weights.items():
            if not isinstance(idx, int) or not 0 <= idx < n:
                raise SchemeError(f"scheme {self.name!r}: conv index {idx!r} out of range [0, {n}) for {graph.name}")
            if Fraction(ratio).limit_denominator(64) not in RATIOS:
                raise SchemeError(f"scheme {self.name!r}: ratio {ratio!r} of conv {idx} must be one of 1/8, 1/4, 1/2, 1")
        convs = graph.indexed_convs()
        for idx, chans in self.channels.items():
            if idx not in self.weights:
                raise SchemeError(f"scheme {self.name!r}: channels pinned for conv {idx}, whose weights are not trained")
            node = convs[idx]
            c_in, k = selectable_channels(node), n_trained_channels(node, self.weights[idx])
            if len(set(chans)) != len(chans) or any(not 0 <= c < c_in for c in chans) or len(chans) != k:
                raise SchemeError(f"scheme {self.name!r}: pinned channels of conv {idx} ({node.name}) must be {k} "
                                  f"distinct indices in [0, {c_in}), got {list(chans)}")
        return self

    def _check_model(self, graph: Graph) -> None:
        """The model the scheme was made for, and the layer names it records, against `graph`."""
        made_for = f" (made for {self.model})" if self.model else ""
        if self.fingerprint and self.fingerprint != graph_fingerprint(graph):
            raise SchemeError(f"scheme {self.name!r}{made_for} does not fit {graph.name}: its convs differ "
                              f"(fingerprint {self.fingerprint}, {graph.name} has {graph_fingerprint(graph)})")
        if self.model and not self.fingerprint and self.model != graph.name:
            raise SchemeError(f"scheme {self.name!r} was made for {self.model}, not {graph.name}")
        convs = graph.indexed_convs()
        by_name = {c.name: i for i, c in enumerate(convs)}
        named = {k: v for k, v in self.weights.items() if isinstance(k, str)}
        for key in named:  # weights keyed by conv name: resolve to the index
            if key not in by_name:
                close = difflib.get_close_matches(key, by_name, 1)
                raise SchemeError(f"scheme {self.name!r}: no conv {key!r} in {graph.name}"
                                  + (f" (did you mean {close[0]!r}?)" if close else ""))
            self.weights[by_name[key]] = self.weights.pop(key)
        for idx, name in self.layers.items():
            if not 0 <= idx < len(convs):
                raise SchemeError(f"scheme {self.name!r}: layer index {idx} out of range [0, {len(convs)}) for {graph.name}")
            if convs[idx].name != name:
                raise SchemeError(f"scheme {self.name!r}: conv {idx} is {name!r} in the scheme but "
                                  f"{convs[idx].name!r} in {graph.name}")

    def pinned(self, graph: Graph) -> "UpdateScheme":
        """A copy whose trained channels are fixed to this graph's selection (see `channels`), recording the
        model (name, fingerprint) and the names of the trained convs."""
        specs = self.resolve(graph)
        convs = graph.indexed_convs()
        chans = {i: specs[node.name].channels for i, node in enumerate(convs) if i in self.weights}
        layers = {i: convs[i].name for i in sorted(set(self.weights) | ({len(convs) - self.n_bias} if self.n_bias else set()))}
        return UpdateScheme(self.n_bias, dict(self.weights), self.selection, self.name, chans, graph.name,
                            graph_fingerprint(graph), layers, self.classes)

    def resolve(self, graph: Graph) -> dict[str, TrainSpec]:
        """{node name: TrainSpec} of every trained conv, classifier included (always fully trained)."""
        self.validate(graph)
        convs = graph.indexed_convs()
        n = len(convs)
        out: dict[str, TrainSpec] = {}
        for i, node in enumerate(convs):
            bias = i >= n - self.n_bias
            channels = None
            if i in self.channels:
                channels = tuple(sorted(int(c) for c in self.channels[i]))
            elif i in self.weights:
                channels = select_channels(node, self.weights[i], self.selection)
            if bias or channels is not None:
                out[node.name] = TrainSpec(node.name, bias, channels)
        head = graph.classifier()
        out[head.name] = TrainSpec(head.name, True, tuple(range(head.params["weight"].shape[1])))
        return out

    # ----- (de)serialisation ---------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = {
            "format": "microtrain-scheme",
            "name": self.name,
            "n_bias": self.n_bias,
            "weights": {str(k): _ratio_str(v) for k, v in sorted(self.weights.items())},
            "selection": self.selection,
        }
        if self.channels:
            d["channels"] = {str(k): [int(c) for c in v] for k, v in sorted(self.channels.items())}
        for key in ("model", "fingerprint"):
            if getattr(self, key):
                d[key] = getattr(self, key)
        if self.layers:
            d["layers"] = {str(k): v for k, v in sorted(self.layers.items())}
        if self.classes:
            d["classes"] = list(self.classes)
        return d

    @classmethod
    def from_dict(cls, d: dict, source: str = "scheme") -> "UpdateScheme":
        if not isinstance(d, dict) or d.get("format") != "microtrain-scheme":
            raise SchemeError(f"{source}: not a microtrain scheme (missing format='microtrain-scheme')")
        known = REQUIRED_KEYS + OPTIONAL_KEYS
        for key in d:
            if key not in known:
                close = difflib.get_close_matches(str(key), known, 1)
                raise SchemeError(f"{source}: unknown key {key!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
                                  + f"; a scheme has {', '.join(REQUIRED_KEYS)} and optionally {', '.join(OPTIONAL_KEYS)}")
        missing = [k for k in REQUIRED_KEYS if k not in d]
        if missing:
            raise SchemeError(f"{source}: missing key{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
                              "(n_bias: how many of the last convs train their bias; weights: {conv: ratio}, may be {})")
        try:
            if not isinstance(d["weights"], dict):
                raise ValueError(f"weights must be an object {{conv index or name: ratio}}, got {d['weights']!r}")
            weights = {_conv_key(k): float(Fraction(str(v))) for k, v in d["weights"].items()}
            n_bias = d["n_bias"]
            if isinstance(n_bias, bool) or not isinstance(n_bias, int):
                raise ValueError(f"n_bias must be an integer, got {n_bias!r}")
            channels = {int(k): tuple(int(c) for c in v) for k, v in dict(d.get("channels") or {}).items()}
            layers = {int(k): str(v) for k, v in dict(d.get("layers") or {}).items()}
            classes = d.get("classes")
            if classes is not None and (not isinstance(classes, list) or len(classes) < 2
                                        or not all(isinstance(c, str) for c in classes)):
                raise ValueError(f"classes must be a list of at least 2 class names, got {classes!r}")
            return cls(n_bias, weights, str(d.get("selection", "norm")), str(d.get("name", "")), channels,
                       str(d.get("model", "")), str(d.get("fingerprint", "")), layers, classes)
        except (TypeError, ValueError, ZeroDivisionError, OverflowError) as e:  # Overflow: a 400-digit ratio
            raise SchemeError(f"{source}: malformed scheme ({str(e)[:200]})") from None

    def save(self, path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        return path

    @classmethod
    def load(cls, path) -> "UpdateScheme":
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except (OSError, ValueError, RecursionError) as e:  # ValueError: bad JSON, bad UTF-8, a 5000-digit int
            raise SchemeError(f"{path}: cannot read scheme JSON ({type(e).__name__}: {str(e)[:200]})") from None
        return cls.from_dict(d, str(path))


def _conv_key(k):
    """A weights key: a conv index ("24") or a conv name ("blocks.8.conv.1"), resolved by validate()."""
    k = str(k)
    return int(k) if k.lstrip("-").isdigit() else k


def _ratio_str(r: float) -> str:
    f = Fraction(r).limit_denominator(64)
    return str(f)


def is_depthwise(node: Node) -> bool:
    w = node.params["weight"]
    return w.shape[1] == 1 and node.attrs.get("groups", 1) == w.shape[0] > 1


def selectable_channels(node: Node) -> int:
    """How many input channels a ratio applies to (a depthwise conv's channels are its outputs)."""
    w = node.params["weight"]
    return int(w.shape[0] if is_depthwise(node) else w.shape[1])


def n_trained_channels(node: Node, ratio: float) -> int:
    """k = max(1, round(ratio * C_in)): the one count used by resolve(), the memory model and codegen.
    (Upstream floors; the two agree on every channel count divisible by 8, i.e. on all upstream models'
    weight-trained convs, and rounding never trains zero channels of a 3-channel first conv.)"""
    return max(1, int(round(float(ratio) * selectable_channels(node))))


def select_channels(node: Node, ratio: float, selection: str) -> tuple[int, ...]:
    """Input channels whose weight slices are trained: k = n_trained_channels(node, ratio)."""
    w = node.params["weight"]
    depthwise = is_depthwise(node)
    k = n_trained_channels(node, ratio)
    if selection == "first":
        return tuple(range(k))
    wf = w.astype(np.float64)
    if "w_scales" in node.params:  # compare real weights, not int8 codes
        wf = wf * node.params["w_scales"].astype(np.float64)[:, None, None, None]
    norms = np.sqrt((wf**2).sum(axis=(1, 2, 3))) if depthwise else np.sqrt((wf**2).sum(axis=(0, 2, 3)))
    order = np.argsort(-norms, kind="stable")[:k]
    return tuple(sorted(int(c) for c in order))

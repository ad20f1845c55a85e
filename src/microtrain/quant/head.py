"""A new classifier head for fine-tuning on other classes (a graph transform on an int8 graph)."""
from __future__ import annotations

import numpy as np

from ..errors import GraphError
from ..ir.graph import Graph, QuantParams, TensorSpec
from ..ir.validate import infer_shapes

HEAD_LOGIT_SCALE = 1 / 8  # real logits in [-16, 15.875]


# ----- the new head ---------------------------------------------------------------------------------------
def replace_head(graph: Graph, num_classes: int) -> Graph:
    """A copy of an int8 graph whose classifier is a new zero-initialised N-class int8 head
    (docs/training-semantics.md section 7)."""
    if graph.dtype != "int8":
        raise GraphError(f"graph {graph.name!r}: replace_head needs an int8 graph, got {graph.dtype}")
    if num_classes < 2:
        raise GraphError(f"a classifier needs at least 2 classes, got {num_classes}")
    g = graph.copy()
    head = g.classifier()
    w = head.params["weight"]
    # each new class row gets the precision of a typical pretrained row: the median per-row scale. A new
    # head trained on a few images learns weights several times smaller than the pretrained rows' largest,
    # so a range set by the largest weight leaves it a handful of codes (docs/training-semantics.md 7)
    old = head.params["w_scales"].astype(np.float64)
    old = old[old > 0]
    w_scale = np.float32(np.median(old)) if old.size else np.float32(1 / 127)
    head.params = {
        "weight": np.zeros((num_classes,) + w.shape[1:], np.int8),
        "bias": np.zeros(num_classes, np.int32),
        "w_scales": np.full(num_classes, w_scale, np.float32),
    }
    out = g.tensors[head.output]
    g.tensors[head.output] = TensorSpec(out.name, (1, 1, num_classes), "int8", QuantParams(HEAD_LOGIT_SCALE, 0))
    g.meta = dict(g.meta, head=f"new {num_classes}-class head (zeros, w_scale {float(w_scale):.6g})")
    infer_shapes(g)
    return g

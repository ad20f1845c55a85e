"""A fleet member's local training with the device numerics (NumPy, no Flower).

`LocalEngine` holds one int8 graph (the model with its new head), the TrainingGraph of the update scheme and
a TrainingRuntime, built once per process and shared by every client that process simulates: a round only
writes the global trained slices into it (`SliceLayout.apply`), trains, and reads the slices back. The
numerics are `fine_tune`'s: int8, QAS, stochastic rounding by default, the same learning-rate schedule
(linear warm-up, cosine), counted in each client's own epochs so that R rounds of E local epochs follow the
schedule of a centralised run of R*E epochs. Training runs on cached frozen-prefix features (the prefix never
trains, so a client computes them once; `trainer.prefix_features`).
"""
from __future__ import annotations

import contextlib
import math

import numpy as np

try:  # the fleet extra installs it (scikit-learn brings it too)
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover
    threadpool_limits = None

from ..autodiff import build_training_graph
from ..errors import MicrotrainError
from ..ir.graph import Graph
from ..quant.head import replace_head
from ..quant.update import fmix32
from ..runtime.trainer import evaluate, lr_at
from ..runtime.training import TrainingRuntime
from ..sparse.scheme import TrainSpec
from .layout import SliceLayout


def one_blas_thread():
    """The trained suffix multiplies small matrices: extra BLAS threads only spin on a busy machine
    (fine_tune trains on one BLAS thread for the same reason)."""
    return threadpool_limits(1, user_api="blas") if threadpool_limits else contextlib.nullcontext()


def client_seed(seed: int, client: int) -> int:
    """A uint32 seed per client (stochastic rounding and batch order differ between devices)."""
    return int(fmix32(np.uint64((int(seed) & 0xFFFFFFFF) ^ int(fmix32(np.uint64(client & 0xFFFFFFFF))))))


def fleet_model(graph: Graph, num_classes: int, resolution: int | None = None) -> Graph:
    """The model every fleet member starts from: `graph` at `resolution` with fine_tune's new zero head
    (docs/training-semantics.md 7), so server and clients build the same model independently."""
    g = graph.with_resolution(resolution) if resolution and resolution != graph.resolution else graph
    return replace_head(g, num_classes) if g.num_classes != num_classes else g.copy()


class LocalEngine:
    def __init__(self, graph: Graph, resolution: dict[str, TrainSpec], *, qas: bool = True,
                 rounding: str = "stochastic", batch_size: int = 32):
        self.graph = graph.copy()
        self.layout = SliceLayout(self.graph, resolution)
        self.tg = build_training_graph(self.graph, resolution, qas=qas, rounding=rounding)
        self.rt = TrainingRuntime(self.tg)
        self.graph = self.tg.graph  # the runtime updates this graph's arrays in place
        self.batch_size = int(batch_size)

    @property
    def boundary(self) -> list[str]:
        """The tensors entering the trained suffix: what `fit`/`score` take as features."""
        return list(self.tg.boundary)

    def fit(self, arrays: dict, feats: dict, labels: np.ndarray, *, epochs: int, lr: float, round_index: int,
            rounds: int, seed: int, client: int) -> tuple[dict, dict]:
        """Train from the global update `arrays` for `epochs` local epochs of round `round_index` (0-based) on
        features {boundary tensor: (n, views, ...)}; returns (the client's update, metrics)."""
        self.layout.check(arrays)  # what the server sent must be an update of our layout too
        with one_blas_thread():
            return self._fit(arrays, feats, labels, epochs=epochs, lr=lr, round_index=round_index, rounds=rounds,
                             seed=seed, client=client)

    def _fit(self, arrays, feats, labels, *, epochs, lr, round_index, rounds, seed, client):
        self.layout.apply(self.graph, arrays)
        self.rt.momentum = {}
        self.rt.seed = client_seed(seed, client)
        n = len(labels)
        if n == 0:
            raise MicrotrainError(f"client {client}: no training samples")
        views = next(iter(feats.values())).shape[1]
        per_epoch = math.ceil(n / self.batch_size)
        total_epochs = rounds * epochs
        total, warm = total_epochs * per_epoch, per_epoch * max(1, total_epochs // 10)  # fine_tune's schedule
        loss_sum, correct = 0.0, 0
        for e in range(epochs):
            epoch = round_index * epochs + e
            rng = np.random.default_rng([self.rt.seed, epoch])
            view, perm = rng.integers(views, size=n), rng.permutation(n)
            for b in range(0, n, self.batch_size):
                idx = perm[b : b + self.batch_size]
                step = epoch * per_epoch + b // self.batch_size
                out = self.rt.train_step({t: a[idx, view[idx]] for t, a in feats.items()}, labels[idx],
                                         lr_at(step, total, warm, lr), step)
                if not np.isfinite(out["loss"]):
                    raise MicrotrainError(f"client {client}: training diverged in round {round_index + 1} "
                                          f"(loss {out['loss']}); lower the lr ({lr})")
                loss_sum += float(out["loss"]) * len(idx)
                correct += int((out["logits"].argmax(1) == labels[idx]).sum())
        metrics = {"num-examples": int(n), "train-loss": loss_sum / (n * epochs), "train-acc": correct / (n * epochs)}
        return self.layout.extract(self.graph), metrics

    def score(self, arrays: dict, feats: dict, labels: np.ndarray) -> tuple[float, float]:
        """(top-1 accuracy, mean loss) of the model with update `arrays` on view 0 of the features."""
        self.layout.check(arrays)
        self.layout.apply(self.graph, arrays)
        with one_blas_thread():
            return evaluate(self.rt, feats, labels)

"""CollapseRecovery (runtime/trainer.py): a run that learned and then fell back to chance gets the
parameters of its lowest-loss epoch back (in place, momentum too); healthy runs and runs that never
learned are left alone; the number of rollbacks is bounded."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from microtrain.runtime.trainer import CollapseRecovery


def fake_runtime():
    node = SimpleNamespace(params={"weight": np.zeros((2, 3), np.int8), "bias": np.zeros(2, np.int32)})
    return SimpleNamespace(nodes={"head": node}, momentum={}), node


def epoch(i, acc, loss):
    return {"epoch": i, "train_acc": acc, "train_loss": loss}


def test_collapse_restores_the_lowest_loss_epoch_in_place():
    rt, node = fake_runtime()
    w, b = node.params["weight"], node.params["bias"]
    rec = CollapseRecovery(rt, {"head": None}, n_classes=10)
    w[:], b[:] = 1, 10
    assert not rec.after_epoch(epoch(1, 0.17, 2.27))
    w[:], b[:] = 2, 20
    assert not rec.after_epoch(epoch(2, 0.21, 2.21))   # lowest loss: the snapshot to return to
    w[:], b[:] = 3, 30
    assert not rec.after_epoch(epoch(3, 0.23, 3.05))   # best accuracy, but the loss already rose
    w[:], b[:] = 4, 40
    rt.momentum = {0: np.ones(3, np.float32)}
    assert rec.after_epoch(epoch(4, 0.10, 5.39))       # back at chance: collapse
    assert node.params["weight"] is w and (w == 2).all() and (b == 20).all()  # same arrays, epoch-2 values
    assert rec.restored_epoch == 2 and rec.rollbacks == 1 and rt.momentum == {}


def test_healthy_and_never_learning_runs_are_left_alone_and_rollbacks_are_bounded():
    rt, node = fake_runtime()
    rec = CollapseRecovery(rt, {"head": None}, n_classes=2)
    assert not any(rec.after_epoch(epoch(i, a, l)) for i, (a, l) in enumerate([(0.6, 0.7), (0.8, 0.5), (0.9, 0.3)], 1))
    rt, node = fake_runtime()
    rec = CollapseRecovery(rt, {"head": None}, n_classes=10)
    assert not any(rec.after_epoch(epoch(i, 0.1, 2.3)) for i in range(1, 5))  # never above chance: no rollback
    rt, node = fake_runtime()
    rec = CollapseRecovery(rt, {"head": None}, n_classes=10, max_rollbacks=2)
    rec.after_epoch(epoch(1, 0.5, 1.0))
    assert [rec.after_epoch(epoch(i, 0.1, 5.0)) for i in range(2, 6)] == [True, True, False, False]

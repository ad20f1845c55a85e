"""Divergence guard wired in (issue 8.2) and hostile inputs of the C API wrapper (issue 8.3).

- generated C: mt_train_step skips the update of a step whose loss is not finite (forced through the
  compile-time test hook MT_TEST_HOOKS: an int8 network's loss is always finite), returns
  MT_TRAIN_SKIPPED_NONFINITE, counts it (mt_guard_skipped) and leaves parameters and update counter untouched;
- fine_tune: a step poisoned with a NaN loss/gradient (test hook on TrainingRuntime.run_step) is undone, so the
  parameters after it equal those before it; without the guard the same run diverges;
- HostModel rejects inputs of the wrong size or dtype and out-of-range labels with clear errors.
"""
from __future__ import annotations

import ctypes
import shutil

import numpy as np
import pytest
from conftest import small_graph  # a 5-conv int8 graph with a residual

from microtrain.codegen import compile_model
from microtrain.errors import MicrotrainError
from microtrain.runtime import trainer
from microtrain.runtime.guard import GuardConfig
from microtrain.runtime.training import TrainingRuntime
from microtrain.sparse.scheme import UpdateScheme
from microtrain.targets.host import HostModel, build_host


needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None or shutil.which("make") is None,
                               reason="needs gcc and make")
SCHEME = UpdateScheme(n_bias=2, weights={3: 1.0}, name="guard-test")


def data(n=16, seed=5):
    rng = np.random.default_rng(seed)
    return rng.integers(-128, 128, (n, 8, 8, 3)).astype(np.int8), rng.integers(0, 3, n)


@pytest.fixture(scope="module")
def hooked(tmp_path_factory):
    out = compile_model(small_graph(), SCHEME, out_dir=tmp_path_factory.mktemp("guard_proj"), lr=0.05, seed=3).out_dir
    return HostModel(build_host(out, opt="-O2 -DMT_TEST_HOOKS"))


# ----- generated C ---------------------------------------------------------------------------------------
@needs_gcc
@pytest.mark.parametrize("poison", [float("nan"), float("inf"), float("-inf")])
def test_c_skips_nonfinite_loss(hooked, poison):
    m, (x, y) = hooked, data()
    offset = ctypes.c_float.in_dll(m.lib, "mt_test_loss_offset")
    m.reset()
    losses = []
    for i in range(6):
        offset.value = poison if i == 2 else 0.0
        before, step = m.export_params(), m.step
        losses.append(m.train_step(x[i], int(y[i])))
        if i == 2:  # skipped: parameters and the rounding counter untouched, counted once
            assert not np.isfinite(losses[-1])
            assert m.export_params() == before and m.step == step and m.guard_skipped == 1
    offset.value = 0.0
    skipped_run = m.export_params()
    assert m.guard_skipped == 1 and m.step == 5
    # the same stream without sample 2 gives bit-identical parameters: the skip left no trace
    m.reset()
    for i in (0, 1, 3, 4, 5):
        m.train_step(x[i], int(y[i]))
    assert m.export_params() == skipped_run and m.guard_skipped == 0
    # mt_init resets the counter
    m.reset()
    assert m.guard_skipped == 0


@needs_gcc
def test_c_guard_status_is_distinct(hooked):
    m, (x, y) = hooked, data()
    offset = ctypes.c_float.in_dll(m.lib, "mt_test_loss_offset")
    m.reset()
    loss = ctypes.c_float(0)
    ptr = np.ascontiguousarray(x[0]).ctypes.data_as(ctypes.POINTER(ctypes.c_int8))
    offset.value = float("nan")
    assert m.lib.mt_train_step(ptr, int(y[0]), ctypes.byref(loss)) == m.defines["MT_TRAIN_SKIPPED_NONFINITE"] == -2
    offset.value = 0.0
    assert m.lib.mt_train_step(ptr, 3, ctypes.byref(loss)) == m.defines["MT_TRAIN_EINVAL"] == -1  # label out of range
    assert m.lib.mt_train_step(ptr, int(y[0]), ctypes.byref(loss)) == 0
    assert m.guard_skipped == 1


# ----- fine_tune ---------------------------------------------------------------------------------------------
def poisoned_run(monkeypatch, poison_step, kind, **kw):
    """fine_tune with NaN forced into one step; returns (result, parameter snapshots at each step's loss)."""
    snapshots = {}
    original = TrainingRuntime.run_step

    def run(self, s, values, lr, step):
        if s.kind == "loss_softmax_ce":  # before any update of this step
            snapshots[step] = {n.name: {k: v.copy() for k, v in n.params.items()} for n in self.graph.nodes}
        original(self, s, values, lr, step)
        if step == poison_step and s.kind == kind:
            for t in s.outputs:
                values[t] = np.full_like(np.asarray(values[t], dtype=np.float32), np.nan)

    monkeypatch.setattr(TrainingRuntime, "run_step", run)
    trainer.clear_prefix_cache()
    result = trainer.fine_tune(small_graph(), SCHEME, data(), None, epochs=2, lr=0.05, batch_size=4, **kw)
    return result, snapshots


def same(a, b):
    return all(np.array_equal(a[n][k], b[n][k], equal_nan=True) for n in a for k in a[n])


@pytest.mark.filterwarnings("ignore:invalid value encountered in cast")  # the poisoned int8 update itself
@pytest.mark.parametrize("fp32,kind", [(False, "loss_softmax_ce"), (True, "loss_softmax_ce"), (True, "conv_grad_bias")])
def test_fine_tune_guard_undoes_poisoned_step(monkeypatch, fp32, kind):
    result, snaps = poisoned_run(monkeypatch, 3, kind, fp32=fp32)
    assert same(snaps[3], snaps[4]), "the poisoned step's update was not undone"
    assert not same(snaps[2], snaps[3]) and not same(snaps[4], snaps[5]), "the other steps must train"
    report = result["guard"]
    reason = "nonfinite_loss" if kind == "loss_softmax_ce" else "nonfinite_params"
    if reason == "nonfinite_loss":
        assert report["skipped"]["nonfinite_loss"] == 1 and report["rollbacks"] == 0
    else:  # a NaN gradient only shows in the updated parameters: immediate rollback
        assert report["rollbacks"] == 1 and report["skipped_total"] == 0
    assert report["steps"] == 8 and report["applied"] == 7
    assert [r["guard_rejected"] for r in result["history"]] == [1, 0]
    assert all(np.isfinite(r["train_loss"]) for r in result["history"])
    for node in result["graph"].nodes:
        for v in node.params.values():
            assert np.all(np.isfinite(v))


def test_fine_tune_without_guard_diverges(monkeypatch):
    """The same poison with guard=False: the run is lost (this is what the guard prevents)."""
    with pytest.raises(MicrotrainError, match="diverged"):
        poisoned_run(monkeypatch, 3, "loss_softmax_ce", fp32=True, guard=False)


def test_fine_tune_guard_config_and_clean_run_unchanged():
    trainer.clear_prefix_cache()
    kw = dict(epochs=1, lr=0.05, batch_size=4)
    plain = trainer.fine_tune(small_graph(), SCHEME, data(), None, guard=False, **kw)
    guarded = trainer.fine_tune(small_graph(), SCHEME, data(), None, guard=GuardConfig(warmup=2), **kw)
    assert plain["guard"] is None and guarded["guard"]["applied"] == 4
    assert plain["history"][0]["train_loss"] == guarded["history"][0]["train_loss"]
    for a, b in zip(plain["graph"].nodes, guarded["graph"].nodes):
        assert all(np.array_equal(a.params[k], b.params[k]) for k in a.params)
    with pytest.raises(TypeError, match="guard"):
        trainer.fine_tune(small_graph(), SCHEME, data(), None, guard="yes", **kw)


# ----- hostile inputs of the ctypes wrapper ----------------------------------------------------------------------
@needs_gcc
def test_host_model_rejects_bad_inputs(hooked):
    m, (x, y) = hooked, data()
    m.reset()
    with pytest.raises(MicrotrainError, match="192 int8 values, got 191"):
        m.infer(x[:1].reshape(1, -1)[:, :191])
    with pytest.raises(MicrotrainError, match="192 int8 values, got 193"):
        m.train_step(np.zeros(193, np.int8), 0)
    with pytest.raises(MicrotrainError, match="must be int8.*float32"):
        m.train_step(x[0].astype(np.float32), 0)
    with pytest.raises(MicrotrainError, match=r"must be int8.*uint8 with values in \[0, 200\]"):
        m.infer((x[:1].astype(np.int16) + 128).clip(0, 200).astype(np.uint8))
    with pytest.raises(MicrotrainError, match="label 3"):
        m.train_step(x[0], 3)
    with pytest.raises(MicrotrainError, match="label -1"):
        m.train_step(x[0], -1)
    before = m.export_params()
    assert m.export_params() == before and m.step == 0  # nothing above trained
    # lossless integer arrays are accepted and give the int8 result
    assert np.array_equal(m.infer(x[:2].astype(np.int64)), m.infer(x[:2]))
    with pytest.raises(MicrotrainError, match="expected 260"):
        m.import_params(before[:-1])

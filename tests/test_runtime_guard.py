"""Divergence guard: skips bad steps, rolls back to the last good parameters, saturates updates at the limits."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from microtrain.runtime.guard import APPLY, ROLLBACK, SKIP, DivergenceGuard, GuardConfig, saturating_update


# ----- a tiny softmax regression trained with the guard in the loop --------------------------------------------
def make_data(n=256, d=8, k=3, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 3, (k, d))
    y = rng.integers(0, k, n)
    return (centers[y] + rng.normal(0, 1, (n, d))).astype(np.float32), y


def loss_and_grads(params, x, y):
    logits = x @ params["w"] + params["b"]
    logits = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    loss = -np.mean(np.log(p[np.arange(len(y)), y] + 1e-12))
    g = p
    g[np.arange(len(y)), y] -= 1
    g /= len(y)
    return loss, {"w": x.T @ g, "b": g.sum(axis=0)}


def train(steps, inject=None, lr=0.1, config=None):
    x, y = make_data()
    params = {"w": np.zeros((8, 3), np.float32), "b": np.zeros(3, np.float32)}
    guard = DivergenceGuard(params, config or GuardConfig(warmup=5))
    history = []
    for t in range(steps):
        idx = np.arange(t * 16, t * 16 + 16) % len(y)
        if inject is not None:
            inject(t, params)
        loss, grads = loss_and_grads(params, x[idx], y[idx])
        if inject is not None and t == 30:
            grads["w"][0, 0] = np.nan  # an exploding backward
        before = {k: v.copy() for k, v in params.items()}
        d = guard.check(loss, grads, params_finite=all(np.isfinite(v).all() for v in params.values()))
        history.append((t, d, before))
        if d.apply:
            guard.apply_updates({k: -lr * g for k, g in grads.items()})
    full_loss, _ = loss_and_grads(params, x, y)
    return guard, params, history, full_loss


def test_recovers_from_injected_nan_without_losing_previous_parameters():
    good_before_corruption = {}

    def inject(t, params):
        if t == 60:  # a corrupted update lands in the weights
            good_before_corruption.update({k: v.copy() for k, v in params.items()})
            params["w"][2, 1] = np.nan

    clean_guard, clean_params, _, clean_loss = train(120)
    guard, params, history, loss = train(120, inject=inject)
    rep = guard.report()
    # the NaN gradient at step 30 was skipped: parameters unchanged by that step
    t30 = history[30]
    assert t30[1].action == SKIP and t30[1].reason == "nonfinite_grad"
    assert np.array_equal(history[31][2]["w"], t30[2]["w"])
    # the NaN parameters at step 60 were rolled back at once to exactly the last good ones: those that
    # produced the last accepted loss (step 59's, before its update, which was never verified)
    t60 = history[60]
    assert t60[1].action == ROLLBACK and t60[1].reason == "nonfinite_params"
    assert history[59][1].apply and not np.isnan(good_before_corruption["w"]).any()
    assert all(np.array_equal(history[61][2][k], history[59][2][k]) for k in params)
    assert not all(np.array_equal(history[61][2][k], good_before_corruption[k]) for k in params)
    assert rep["rollbacks"] == 1 and rep["skipped"]["nonfinite_grad"] == 1
    assert rep["applied"] == 118 and rep["steps"] == 120
    # and training went on to the same quality as a clean run
    assert np.isfinite(loss) and loss < 1.5 * clean_loss + 0.05
    assert clean_guard.report()["skipped_total"] == 0 and clean_guard.report()["rollbacks"] == 0


def test_nan_loss_skips_then_rolls_back_after_repeated_failures():
    params = {"w": np.arange(4, dtype=np.float32)}
    g = DivergenceGuard(params, GuardConfig(rollback_after=3, warmup=1))
    assert g.check(1.0, {"w": np.ones(4)}).action == APPLY  # snapshot = [0 1 2 3]
    g.apply_updates({"w": np.full(4, 10.0)})
    assert g.check(float("nan")).action == SKIP
    assert g.check(float("inf")).action == SKIP
    d = g.check(float("nan"))
    assert (d.action, d.reason) == (ROLLBACK, "nonfinite_loss")
    assert np.array_equal(params["w"], np.arange(4, dtype=np.float32))  # in place: the trainer's array is restored
    assert g.report()["skipped"]["nonfinite_loss"] == 3


def test_loss_spike_is_skipped_and_a_persistent_shift_rebases():
    params = {"b": np.zeros(2, np.int32)}
    g = DivergenceGuard(params, GuardConfig(warmup=10, rollback_after=2))
    rng = np.random.default_rng(0)
    for _ in range(30):
        assert g.check(1.0 + 0.1 * rng.random()).apply
    assert g.check(2.5).apply  # a hard sample: within the noise model? no: > 4x mean fails, 2.5 < 4.2 passes
    assert g.check(50.0).action == SKIP
    assert g.check(50.0).action == ROLLBACK
    # the restored parameters still give 50: the data changed, the guard accepts the new level
    d = g.check(50.0)
    assert (d.action, d.reason) == (APPLY, "ok") and g.report()["rebased"] == 1
    assert g.report()["skipped"]["spike"] == 2


def test_no_spike_detection_during_warmup_and_grad_norm_limit():
    g = DivergenceGuard({"w": np.zeros(3)}, GuardConfig(warmup=5, max_grad_norm=10.0))
    assert g.check(1.0).apply and g.check(100.0).apply  # warm-up: no statistics yet
    assert g.check(1.0, {"w": np.array([6.0, 8.0, 0.0])}).apply  # norm 10: allowed
    d = g.check(1.0, {"w": np.array([6.0, 8.1, 0.0])})
    assert (d.action, d.reason) == (SKIP, "grad_norm")


def test_bad_config_is_refused():
    with pytest.raises(ValueError):
        GuardConfig(spike_factor=0.5)
    with pytest.raises(ValueError):
        GuardConfig(rollback_after=0)
    with pytest.raises(TypeError):
        DivergenceGuard({"w": [1, 2]})


# ----- saturating updates at the limits ---------------------------------------------------------------------------
def test_int8_and_int32_updates_saturate_at_the_limits():
    w = np.array([127, -128, 0, 100, -100, 5], np.int8)
    n = saturating_update(w, np.array([1, -1, 300, 27.4, -28.6, np.nan]))
    assert w.tolist() == [127, -128, 127, 127, -128, 5] and n == 4  # 100 + 27 = 127 exactly: not clipped
    b = np.array([2**31 - 1, -(2**31), 0, 7], np.int32)
    n = saturating_update(b, np.array([1.0, -1.0, np.inf, -np.inf]))
    assert b.tolist() == [2**31 - 1, -(2**31), 2**31 - 1, -(2**31)] and n == 4
    big = np.array([0], np.int32)
    saturating_update(big, 1e300)
    assert big[0] == 2**31 - 1
    half = np.array([0, 0, 0], np.int8)
    saturating_update(half, np.array([0.5, 1.5, -0.5]))  # round half to even
    assert half.tolist() == [0, 2, 0]


def test_residual_keeps_sub_lsb_updates():
    w = np.zeros(2, np.int8)
    r = np.zeros(2)
    for _ in range(10):
        saturating_update(w, np.array([0.3, -0.26]), r)
    assert w.tolist() == [3, -3] and np.allclose(r, [0.0, 0.4])  # 10 * 0.3 = 3; 10 * -0.26 = -2.6 -> -3, +0.4
    w = np.array([127], np.int8)
    r = np.array([0.4])
    saturating_update(w, np.array([5.0]), r)
    assert w[0] == 127 and r[0] == 0.0  # no unbounded residual at the limit


def test_float_params_ignore_nonfinite_deltas():
    w = np.ones(3, np.float32)
    assert saturating_update(w, np.array([np.nan, np.inf, 0.5])) == 0
    assert w.tolist() == [1.0, 1.0, 1.5]


@given(hnp.arrays(np.int8, 16), hnp.arrays(np.float64, 16, elements=st.floats(allow_nan=True, allow_infinity=True)))
@settings(max_examples=200, derandomize=True, deadline=None)
def test_int8_update_matches_clipped_rounded_sum(w, delta):
    expect = np.clip(w.astype(np.float64) + np.rint(np.clip(np.nan_to_num(delta, nan=0.0, posinf=2**40, neginf=-2**40),
                                                             -2**40, 2**40)), -128, 127)
    got = w.copy()
    saturating_update(got, delta)
    assert got.dtype == np.int8 and np.array_equal(got, expect)

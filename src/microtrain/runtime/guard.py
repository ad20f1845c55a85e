"""Divergence guard: decide, per training step, whether an update may be applied (pure NumPy).

A device trains unattended: one NaN, one exploding gradient or one corrupt sample must not destroy the
parameters it has learned. The guard sits between backward and update:

    guard = DivergenceGuard(params)            # params: {name: array}, the LIVE trained arrays (updated in place)
    for each step:
        loss, grads = forward_backward(...)
        d = guard.check(loss, grads)           # -> Decision: "apply" | "skip" | "rollback"
        if d.apply:
            guard.apply_updates(deltas)        # saturating in-place update (or your own rule)
        # on "skip" nothing changes; on "rollback" check() has already restored the last good parameters
    guard.report()                             # counts of every event, for logs and benchmarks

Rules (GuardConfig holds the knobs):
- a non-finite loss, a non-finite gradient (or update), or a gradient norm above max_grad_norm: skip;
- a loss spike: after `warmup` accepted steps, loss > max(spike_factor * mean, mean + spike_sigmas * std) of
  the accepted losses (exponential moving statistics): skip. Rejected losses never enter the statistics, so a
  divergence cannot make itself look normal;
- `rollback_after` consecutive rejected steps: copy the last good parameters back (the parameters that last
  produced an accepted loss), and also at once when the live parameters hold NaN/inf (check(params_finite=...));
- if the first step after a rollback is again a spike, the parameters are not at fault (the data changed):
  the statistics restart (counted as `rebased`) and the step is applied, so the guard cannot lock training.
Updates saturate (`saturating_update`): int8 weights stay in [-128, 127], int32 biases in int32; optional
`residual` arrays keep the sub-LSB part of each update instead of losing it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

APPLY, SKIP, ROLLBACK = "apply", "skip", "rollback"
_LIMITS = {np.dtype(np.int8): (-128, 127), np.dtype(np.int16): (-(2**15), 2**15 - 1),
           np.dtype(np.int32): (-(2**31), 2**31 - 1)}


@dataclass
class GuardConfig:
    spike_factor: float = 4.0     # loss > spike_factor * mean of accepted losses ...
    spike_sigmas: float = 6.0     # ... and > mean + spike_sigmas * std: a spike
    ema_decay: float = 0.95       # weight of the past in the running mean / variance
    warmup: int = 20              # accepted steps before spikes are detected
    rollback_after: int = 3       # consecutive rejected steps that trigger a rollback
    max_grad_norm: float | None = None  # optional: a larger global gradient L2 norm is rejected
    snapshot_every: int = 1       # copy the good parameters every n accepted steps (copies cost time)

    def __post_init__(self):
        if not (self.spike_factor > 1 and self.spike_sigmas > 0 and 0 < self.ema_decay < 1):
            raise ValueError(f"GuardConfig: need spike_factor > 1, spike_sigmas > 0, 0 < ema_decay < 1: {self}")
        if self.warmup < 1 or self.rollback_after < 1 or self.snapshot_every < 1:
            raise ValueError(f"GuardConfig: warmup, rollback_after and snapshot_every must be >= 1: {self}")


@dataclass(frozen=True)
class Decision:
    action: str   # APPLY | SKIP | ROLLBACK
    reason: str   # "ok", "nonfinite_loss", "nonfinite_grad", "grad_norm", "spike", "nonfinite_params", "rebased"

    @property
    def apply(self) -> bool:
        return self.action == APPLY


@dataclass
class GuardStats:
    steps: int = 0
    applied: int = 0
    skipped: dict = field(default_factory=lambda: {"nonfinite_loss": 0, "nonfinite_grad": 0, "grad_norm": 0,
                                                   "spike": 0})
    rollbacks: int = 0
    rebased: int = 0
    saturated: int = 0            # parameter elements clipped by apply_updates


class DivergenceGuard:
    """Policy object: feed it each step's loss and gradients; it decides and keeps the last good snapshot."""

    def __init__(self, params: Mapping[str, np.ndarray], config: GuardConfig | None = None):
        self.config = config or GuardConfig()
        self.stats = GuardStats()
        self.track(params)
        self._mean = 0.0
        self._var = 0.0
        self._accepted = 0        # accepted steps since the statistics (re)started
        self._bad_run = 0
        self._after_rollback = False

    # ----- parameters --------------------------------------------------------------------------------
    def track(self, params: Mapping[str, np.ndarray]):
        """(Re)bind the live parameter arrays; the current values become the good snapshot."""
        for name, a in params.items():
            if not isinstance(a, np.ndarray):
                raise TypeError(f"DivergenceGuard: parameter {name!r} must be a numpy array, got {type(a).__name__}")
        self.params = dict(params)
        self.snapshot = {k: v.copy() for k, v in self.params.items()}

    def rebase(self):
        """The live parameters were replaced from outside (e.g. a collapse rollback): they become the good
        snapshot, and the loss statistics restart (the old ones describe other parameters)."""
        self._take_snapshot()
        self._mean, self._var, self._accepted, self._bad_run = 0.0, 0.0, 0, 0

    def restore(self):
        """Copy the last good parameters back into the live arrays (in place)."""
        for k, v in self.snapshot.items():
            np.copyto(self.params[k], v)

    def _take_snapshot(self):
        for k, v in self.params.items():
            np.copyto(self.snapshot[k], v)

    # ----- the decision ---------------------------------------------------------------------------------
    def check(self, loss, grads: Mapping[str, np.ndarray] | None = None, params_finite: bool | None = None) -> Decision:
        """Decide for one step. grads may hold gradients or updates (any arrays); params_finite=False (e.g.
        from a float runtime that found NaN in its weights) rolls back at once."""
        self.stats.steps += 1
        if params_finite is False:
            return self._rollback("nonfinite_params")
        reason = self._reject_reason(loss, grads)
        if reason == "spike" and self._after_rollback:
            # the restored (good) parameters spike too: the data, not the parameters, changed
            self._mean, self._var, self._accepted = 0.0, 0.0, 0
            self.stats.rebased += 1
            reason = None
        self._after_rollback = False
        if reason is not None:
            self.stats.skipped[reason] += 1
            self._bad_run += 1
            if self._bad_run >= self.config.rollback_after:
                return self._rollback(reason)
            return Decision(SKIP, reason)
        # accepted: these parameters produced a good loss, so they are the new good snapshot
        self._bad_run = 0
        if self._accepted % self.config.snapshot_every == 0:
            self._take_snapshot()
        self._update_stats(float(loss))
        self.stats.applied += 1
        return Decision(APPLY, "ok")

    def _reject_reason(self, loss, grads) -> str | None:
        loss = float(np.asarray(loss, dtype=np.float64).reshape(-1)[0]) if np.size(loss) == 1 else np.nan
        if not np.isfinite(loss):
            return "nonfinite_loss"
        if grads:
            sq = 0.0
            for g in grads.values():
                g = np.asarray(g)
                if g.dtype.kind == "f" and not np.all(np.isfinite(g)):
                    return "nonfinite_grad"
                if self.config.max_grad_norm is not None:
                    sq += float(np.sum(np.square(g, dtype=np.float64)))
            if self.config.max_grad_norm is not None and not np.sqrt(sq) <= self.config.max_grad_norm:
                return "grad_norm"
        if self._accepted >= self.config.warmup:
            std = np.sqrt(max(self._var, 0.0))
            if loss > max(self.config.spike_factor * self._mean, self._mean + self.config.spike_sigmas * std):
                return "spike"
        return None

    def _update_stats(self, loss: float):
        if self._accepted == 0:
            self._mean, self._var = loss, 0.0
        else:  # exponential moving mean and variance
            a = 1.0 - self.config.ema_decay
            d = loss - self._mean
            self._mean += a * d
            self._var = (1.0 - a) * (self._var + a * d * d)
        self._accepted += 1

    def _rollback(self, reason: str) -> Decision:
        self.restore()
        self.stats.rollbacks += 1
        self._bad_run = 0
        self._after_rollback = True
        return Decision(ROLLBACK, reason)

    # ----- updates ----------------------------------------------------------------------------------------
    def apply_updates(self, deltas: Mapping[str, np.ndarray], residuals: Mapping[str, np.ndarray] | None = None) -> int:
        """Saturating in-place update of the tracked parameters; returns (and counts) clipped elements."""
        n = 0
        for k, d in deltas.items():
            if k not in self.params:
                raise KeyError(f"DivergenceGuard.apply_updates: {k!r} is not a tracked parameter")
            n += saturating_update(self.params[k], d, None if residuals is None else residuals.get(k))
        self.stats.saturated += n
        return n

    def report(self) -> dict:
        s = self.stats
        return {"steps": s.steps, "applied": s.applied, "skipped": dict(s.skipped),
                "skipped_total": sum(s.skipped.values()), "rollbacks": s.rollbacks, "rebased": s.rebased,
                "saturated": s.saturated, "loss_mean": self._mean, "loss_std": float(np.sqrt(max(self._var, 0.0)))}


def saturating_update(param: np.ndarray, delta, residual: np.ndarray | None = None) -> int:
    """param += delta in place, saturating; returns the number of elements that hit a limit.

    Integer params: the update is rounded half to even and the result clipped to the dtype's range (int8
    weights, int32 biases), so a large step can never wrap around. With `residual` (float array, same shape)
    the rounding remainder is kept and added to the next update (sub-LSB learning is not lost); it is zeroed
    where the parameter saturated. Non-finite deltas saturate (+-inf) or are dropped (NaN). Float params:
    plain addition of the finite part.
    """
    d = np.asarray(delta, dtype=np.float64)
    if d.shape != param.shape and d.size != 1:
        raise ValueError(f"saturating_update: delta shape {d.shape} does not match parameter {param.shape}")
    d = np.broadcast_to(d, param.shape)
    if residual is not None:
        d = d + residual
    if param.dtype.kind == "f":
        np.add(param, np.nan_to_num(d, nan=0.0, posinf=0.0, neginf=0.0).astype(param.dtype), out=param)
        return 0
    lo, hi = _LIMITS.get(param.dtype, (None, None))
    if lo is None:
        raise TypeError(f"saturating_update: unsupported parameter dtype {param.dtype}")
    d = np.nan_to_num(d, nan=0.0, posinf=2.0**40, neginf=-(2.0**40))
    d = np.clip(d, -(2.0**40), 2.0**40)  # far beyond any int32 range, and exact in float64
    step = np.rint(d)
    target = param.astype(np.float64) + step
    clipped = (target < lo) | (target > hi)
    np.copyto(param, np.clip(target, lo, hi).astype(param.dtype))
    if residual is not None:
        residual[...] = np.where(clipped, 0.0, d - step)
    return int(np.count_nonzero(clipped))

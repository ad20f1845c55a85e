"""ops/sim_native.py: the simulation's compiled depthwise backward, requantisation and clamp gradient compute the
NumPy code's floats bit for bit (stored accuracy results stay valid), a library that differs is refused, and
MICROTRAIN_SIM_NATIVE=0 turns it off. (tests/test_ops_conv_depthwise_grads.py runs its cases both ways.)"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from microtrain.ops import common, sim_native
from microtrain.quant.arith import conv_preclamp, requantize_conv

REPO = Path(__file__).resolve().parents[1]
needs_lib = pytest.mark.skipif(shutil.which("gcc") is None, reason="no C compiler (CI has one)")


def same_bits(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    assert np.array_equal(a.view(np.uint8), b.view(np.uint8))


@pytest.fixture
def fresh_lib(monkeypatch, tmp_path):
    """lib() rebuilt from scratch in a private cache (and its process-wide cache restored after)."""
    monkeypatch.setenv("MICROTRAIN_CACHE", str(tmp_path / "cache"))
    sim_native.lib.cache_clear()
    yield tmp_path
    sim_native.lib.cache_clear()


@needs_lib
def test_the_library_builds_and_passes_its_check():
    assert sim_native.lib() is not None


def test_switched_off_by_the_environment(monkeypatch, fresh_lib):
    monkeypatch.setenv("MICROTRAIN_SIM_NATIVE", "0")
    assert sim_native.lib() is None
    sim_native.lib.cache_clear()
    monkeypatch.setenv("MICROTRAIN_SIM_NATIVE", "flase")  # neither on nor off: said, and the safe path
    with pytest.warns(UserWarning, match="neither 1 nor 0"):
        assert sim_native.lib() is None
    assert sim_native.requant_s8(np.zeros((2, 3), np.float32), np.zeros(3, np.int32), np.ones(3, np.float32), 0,
                                 True) is None


@needs_lib
@pytest.mark.parametrize("mutation", [("for (int q = 3; q >= 0; q--)", "for (int q = 0; q < 4; q++)"),
                                      ("bits &= (uint32_t)0 - (uint32_t)(mr[k] != 0);", "bits = mr[k] ? bits : 0x80000000u;"),
                                      ("dr[k] = dr[k] + prod;", "dr[k] = prod + dr[k] * 1.0000001f;"),
                                      ("rounding, key, index[i]);\n    }\n}", "rounding, key + 1, index[i]);\n    }\n}"),
                                      ("o[k] = o[k] + prod;", "o[k] = prod + o[k] + 0.0f;")])
def test_a_library_that_computes_otherwise_is_refused(monkeypatch, fresh_lib, mutation):
    """The load-time check can fail: a kernel summing in another order (grad weight), writing -0.0 for +0.0
    (clamp gradient), rounding once more (grad input), hashing another counter (int8 update) or turning a
    -0.0 sum into +0.0 (float depthwise forward) is refused with a warning, and NumPy runs."""
    src = sim_native.SOURCE.read_text()
    assert mutation[0] in src
    mutated = fresh_lib / "ops" / "sim_native.c"
    mutated.parent.mkdir()
    mutated.write_text(src.replace(mutation[0], mutation[1]))
    (fresh_lib / "codegen").symlink_to(sim_native.KERNELS.parent, target_is_directory=True)  # its #include
    monkeypatch.setattr(sim_native, "SOURCE", mutated)
    with pytest.warns(UserWarning, match="differ from NumPy"):
        assert sim_native.lib() is None


@needs_lib
def test_requantisation_and_mask_are_numpys():
    rng = np.random.default_rng(11)
    for dtype, shape in ((np.float32, (4, 9, 9, 16)), (np.float64, (3, 5, 5, 96)), (np.float32, (7, 1000))):
        c = shape[-1]
        acc = rng.integers(-2**23, 2**23, shape).astype(dtype)
        bias = rng.integers(-2**16, 2**16, c).astype(np.int32)
        bias[0] = -2**31  # a dead channel
        eff = np.exp(rng.uniform(-16, -4, c)).astype(np.float32)
        for zero in (-128, 0, 37):
            y, m = sim_native.requant_s8(acc, bias, eff, zero, want_mask=True)
            ry, rm = common.clamp_int8(conv_preclamp(acc, bias, eff, zero))
            same_bits(y, ry)
            same_bits(m, rm)
            assert 0 < m.mean() < 1  # both sides of the clamp are exercised
            same_bits(sim_native.requant_s8(acc, bias, eff, zero, want_mask=False)[0],
                      requantize_conv(acc, bias, eff, zero))


def test_requantisation_declines_what_it_does_not_cover():
    acc = np.zeros((2, 4), np.float64)
    b, e = np.zeros(4, np.int32), np.ones(4, np.float32)
    assert sim_native.requant_s8(np.zeros((2, 4), np.int32), b, e, 0, True) is None  # integer accumulator
    assert sim_native.requant_s8(acc[:, ::2], b[:2], e[:2], 0, True) is None  # not contiguous
    assert sim_native.requant_s8(acc, b, e.astype(np.float64), 0, True) is None  # float64 multipliers
    assert sim_native.requant_s8(acc, b, np.full(4, np.inf, np.float32), 0, True) is None
    assert sim_native.requant_s8(np.full((2, 4), 2.0**31), b, e, 0, True) is None  # beyond int32


@needs_lib
def test_clamp_gradient_is_numpys_with_signed_zeros_and_nan():
    rng = np.random.default_rng(12)
    g = (rng.standard_normal((6, 7, 7, 40)) * np.exp(rng.uniform(-40, 40, (6, 7, 7, 40)))).astype(np.float32)
    g.reshape(-1)[:5] = [-0.0, np.nan, np.inf, -np.inf, 3e-45]
    mask = rng.random(g.shape) < 0.7
    for scale in (np.exp(rng.uniform(-8, 3, 40)).astype(np.float32), np.float32(0.25), np.ones(1, np.float32)):
        got = sim_native.masked_grad(g, scale, mask)
        assert got is not None
        same_bits(got, common.masked_gradient(g, scale, mask, native=False))


@needs_lib
def test_a_training_run_is_the_same_with_and_without_the_library(monkeypatch):
    """The numerics fingerprint (a tiny fine-tune in every numerics the experiments use) with the compiled
    kernels equals the one with NumPy alone."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from numerics_fingerprint import numerics_fingerprint

    calls = []
    monkeypatch.setattr(sim_native, "active", lambda: calls.append(1) or sim_native.lib())
    compiled = numerics_fingerprint.__wrapped__()
    assert len(calls) > 100  # the compiled kernels ran
    monkeypatch.setattr(sim_native, "active", lambda: None)
    assert numerics_fingerprint.__wrapped__() == compiled


@needs_lib
def test_updates_are_numpys():
    from microtrain.quant import update

    rng = np.random.default_rng(13)
    for kind, sat in ((np.int8, "int8"), (np.int32, "int32")):
        cur = rng.integers(-100, 100, (64, 3, 3)).astype(kind)
        delta = (rng.standard_normal(cur.shape) * 40).astype(np.float32)
        index = np.arange(cur.size, dtype=np.uint32).reshape(cur.shape) + np.uint32(2**32 - 50)  # wraps
        for rounding in ("nearest", "stochastic"):
            args = dict(seed=3, step=12345, param_id=2**31 + 5, index=index)
            got = sim_native.apply_update(cur, delta, rounding, sat, **args)
            assert got is not None and got.dtype == kind
            same_bits(got, update.apply_update(cur, delta, rounding, sat, **args))
    nan = np.full(cur.shape, np.nan, np.float32)
    assert sim_native.apply_update(cur, nan, "nearest", "int32") is None  # NumPy's rules for a diverged update
    assert sim_native.apply_update(cur.astype(np.float32), delta, "none", None) is None  # fp32 parameters

"""The C arithmetic headers (kernels/mt_arith.h, mt_update.h) against quant/arith.py and
quant/update.py on edge values: requantisation incl. saturation and ties, the add, the
round-half-even integer division, and SGD rounding of int8/int32 parameters incl. huge deltas."""
from __future__ import annotations

import ctypes
import shutil

import numpy as np
import pytest

from c_lib import build_shared, ptr
from microtrain.quant import arith
from microtrain.quant.update import apply_update

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")

WRAPPER = r"""
#include "mt_arith.h"
#include "mt_update.h"
void t_requant(const int32_t *acc, const int32_t *bias, const float *eff, int32_t z, int32_t n, int8_t *y, uint8_t *ok) {
    int32_t i;
    for (i = 0; i < n; i++) y[i] = mt_requant_s8(acc[i], bias[i], eff[i], z, &ok[i]);
}
void t_add(const int8_t *a, const int8_t *b, int32_t z1, float s1, int32_t z2, float s2, float sy, int32_t zy,
           int32_t n, int8_t *y, uint8_t *ok) {
    int32_t i;
    for (i = 0; i < n; i++) y[i] = mt_add_requant_s8(a[i], z1, s1, b[i], z2, s2, sy, zy, &ok[i]);
}
void t_div(const int32_t *total, int32_t count, int32_t n, int32_t *q) {
    int32_t i;
    for (i = 0; i < n; i++) q[i] = mt_div_round_even_s32(total[i], count);
}
void t_update_s32(const int32_t *p, const float *d, int32_t rounding, uint32_t seed, uint32_t step, uint32_t pid,
                  int32_t n, int32_t *out) {
    uint32_t key = mt_hash_key(seed, step, pid);
    int32_t i;
    for (i = 0; i < n; i++) out[i] = mt_update_s32(p[i], d[i], rounding, key, (uint32_t)i);
}
void t_update_s8(const int8_t *p, const float *d, int32_t rounding, uint32_t seed, uint32_t step, uint32_t pid,
                 int32_t n, int8_t *out) {
    uint32_t key = mt_hash_key(seed, step, pid);
    int32_t i;
    for (i = 0; i < n; i++) out[i] = mt_update_s8(p[i], d[i], rounding, key, (uint32_t)i);
}
"""


@pytest.fixture(scope="module", params=["-O2", "-O2 -DMT_INT_REQUANT=1"], ids=["float", "integer"])
def lib(request, tmp_path_factory):
    """Both spellings of the requantisation: the float sequence and the integer one of FPU-less builds."""
    d = tmp_path_factory.mktemp("arith")
    (d / "w.c").write_text(WRAPPER)
    return build_shared(d / "w.so", [d / "w.c"], request.param)


def test_requantisation_matches_numpy(lib):
    rng = np.random.default_rng(0)
    n = 50000
    acc = rng.integers(-2**20, 2**20, n).astype(np.int32)
    bias = rng.choice([0, -(2**31), 2**31 - 1, 12345, -999], n).astype(np.int32)  # dead channels too
    eff = rng.choice([1e-3, 3.1e-4, 0.5, 1.0, 3.937e-9, 7.0], n).astype(np.float32)
    acc[:100] = np.arange(-50, 50) * 2 + 1  # exact .5 ties with eff 0.5
    eff[:100] = 0.5
    bias[:100] = 0
    for z in (-128, 0, 5, 127):
        y, ok = np.empty(n, np.int8), np.empty(n, np.uint8)
        lib.t_requant(ptr(acc), ptr(bias), ptr(eff), z, n, ptr(y), ptr(ok))
        np.testing.assert_array_equal(y, arith.requantize_conv(acc, bias, eff, z))
        pre = arith.conv_preclamp(acc, bias, eff, z)
        np.testing.assert_array_equal(ok.astype(bool), (pre >= -128) & (pre <= 127))


def test_add_and_rounding_division_match_numpy(lib):
    rng = np.random.default_rng(1)
    n = 20000
    a, b = (rng.integers(-128, 128, n).astype(np.int8) for _ in range(2))
    args = (3, 0.0215, -7, 0.0431, 0.05, -2)
    y, ok = np.empty(n, np.int8), np.empty(n, np.uint8)
    lib.t_add(ptr(a), ptr(b), args[0], ctypes.c_float(args[1]), args[2], ctypes.c_float(args[3]),
              ctypes.c_float(args[4]), args[5], n, ptr(y), ptr(ok))
    np.testing.assert_array_equal(y, arith.add_requant(a, args[0], args[1], b, args[2], args[3], args[4], args[5]))
    total = rng.integers(-128 * 4096, 127 * 4096, n).astype(np.int32)
    total[:6] = [-3, -2, -1, 1, 2, 3]
    q = np.empty(n, np.int32)
    lib.t_div(ptr(total), 4, n, ptr(q))
    np.testing.assert_array_equal(q, arith.round_half_even_div(total, 4))


@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
def test_sgd_rounding_matches_numpy(lib, rounding):
    rng = np.random.default_rng(2)
    n = 30000
    d = (rng.standard_normal(n) * rng.choice([0.3, 3.0, 1e3, 1e6, 1e9, 5e9], n)).astype(np.float32)
    d[:8] = [0.5, -0.5, 1.5, -2.5, 2.0**31, -(2.0**31), 3e9, -4.5e9]
    p32 = rng.choice([0, 2**31 - 1, -(2**31), 100], n).astype(np.int32)
    p8 = rng.integers(-128, 128, n).astype(np.int8)
    mode = 1 if rounding == "stochastic" else 0
    hash_args = dict(seed=5, step=9, param_id=3, index=np.arange(n, dtype=np.uint64))
    out32, out8 = np.empty(n, np.int32), np.empty(n, np.int8)
    lib.t_update_s32(ptr(p32), ptr(d), mode, 5, 9, 3, n, ptr(out32))
    lib.t_update_s8(ptr(p8), ptr(d), mode, 5, 9, 3, n, ptr(out8))
    np.testing.assert_array_equal(out32, apply_update(p32, d, rounding, "int32", **hash_args))
    np.testing.assert_array_equal(out8, apply_update(p8, d, rounding, "int8", **hash_args))

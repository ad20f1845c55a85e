"""mt_arith.h's integer requantisation (MT_INT_REQUANT, the spelling of builds without an FPU) against its
float spelling, byte for byte and clamp bit for clamp bit: tests/int_requant_check.c on structured edge sets,
constructed double-rounding ties and random inputs; and a deliberately broken copy must be caught."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from microtrain.codegen.emit import C_FLAGS, KERNEL_DIR

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")

CHECK = Path(__file__).with_name("int_requant_check.c")
# Broken copies the checker must catch: a product that is an exact 24-bit tie rounded up instead of to even
# (in the general path and in the inline common case: only constructed cases reach these), and the common
# case taking sums just beyond 2^24, where the float sum rounds (2 of the checked inputs tell).
MUTATIONS = {
    "general product tie": ("lo = q + (uint32_t)((rem > half) | ((rem == half) & q));",
                            "lo = q + (uint32_t)(rem >= half);"),
    "common product tie": ("q += (uint32_t)(rem > 0x80000000u - (q & 1u));", "q += (uint32_t)(rem >= 0x80000000u);"),
    "common sum range": ("if (n > lim) return", "if (n > 2 * lim) return"),
}


def build_check(out, include_dir):
    subprocess.run(["gcc", *C_FLAGS.split(), "-O2", f"-I{include_dir}", str(CHECK), "-o", str(out), "-lm"],
                   check=True, capture_output=True, text=True)
    return out


def run_check(exe, random_count=1_000_000, float_stride=65537, seed=1):
    r = subprocess.run([str(exe), str(random_count), str(float_stride), str(seed)], capture_output=True,
                       text=True, timeout=300)
    checked, mismatches = (int(v) for v in r.stdout.split()[-3::2])
    return r.returncode, checked, mismatches, r.stdout


def test_integer_requantisation_equals_the_float_sequence(tmp_path):
    rc, checked, mismatches, out = run_check(build_check(tmp_path / "check", KERNEL_DIR))
    assert (rc, mismatches) == (0, 0), out
    assert checked > 30_000_000


@pytest.mark.parametrize("mutation", MUTATIONS)
def test_a_broken_integer_spelling_is_caught(mutation, tmp_path):
    old, new = MUTATIONS[mutation]
    header = (KERNEL_DIR / "mt_arith.h").read_text()
    assert old in header
    (tmp_path / "mt_arith.h").write_text(header.replace(old, new, 1))
    rc, checked, mismatches, out = run_check(build_check(tmp_path / "check", tmp_path), random_count=1000)
    assert rc == 1 and mismatches > 0, out

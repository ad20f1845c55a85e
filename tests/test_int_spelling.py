"""The integer spellings of float32 steps for builds without an FPU against their float spelling, bit for bit:
mt_arith.h's requantisation (MT_INT_REQUANT: output byte and clamp bit) and mt_wgrad_f32.h's weight-gradient
step (MT_INT_WGRAD: the float's bits). tests/int_spelling_check.c runs structured edge sets, constructed
double-rounding ties, cancellations, overflows and random inputs; deliberately broken copies must be caught."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from microtrain.codegen.emit import C_FLAGS, KERNEL_DIR

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")

CHECK = Path(__file__).with_name("int_spelling_check.c")
# Broken copies the checker must catch: a product that is an exact 24-bit tie rounded up instead of to even
# (in the general path and in the inline common case of the requantisation: only constructed cases reach
# these); the common case taking sums just beyond 2^24, where the float sum rounds (2 of the checked inputs
# tell); a weight-gradient sum rounding its ties up, and losing the sticky bit of a shifted addend.
MUTATIONS = {
    "general product tie": ("mt_arith.h", "lo = q + (uint32_t)((rem > half) | ((rem == half) & q));",
                            "lo = q + (uint32_t)(rem >= half);"),
    "common product tie": ("mt_arith.h", "q += (uint32_t)(rem > 0x80000000u - (q & 1u));",
                           "q += (uint32_t)(rem >= 0x80000000u);"),
    "common sum range": ("mt_arith.h", "if (n > lim) return", "if (n > 2 * lim) return"),
    "wgrad sum tie": ("mt_wgrad_f32.h", "q = mt_round_up_rem(s >> sh, s << (32 - sh));",
                      "q = (s >> sh) + ((s << (32 - sh)) >= 0x80000000u);"),
    "wgrad sticky": ("mt_wgrad_f32.h", "my = (my >> d) | (uint32_t)((my << (32 - d)) != 0u);", "my = my >> d;"),
}


def build_check(out, *include_dirs):
    subprocess.run(["gcc", *C_FLAGS.split(), "-O2", *(f"-I{d}" for d in include_dirs), str(CHECK), "-o", str(out),
                    "-lm"], check=True, capture_output=True, text=True)
    return out


def run_check(exe, random_count=1_000_000, float_stride=65537, seed=1, level=0):
    r = subprocess.run([str(exe), str(random_count), str(float_stride), str(seed), str(level)], capture_output=True,
                       text=True, timeout=300)
    checked, mismatches = (int(v) for v in r.stdout.split()[-3::2])
    return r.returncode, checked, mismatches, r.stdout


def test_integer_spellings_equal_the_float_sequence(tmp_path):
    rc, checked, mismatches, out = run_check(build_check(tmp_path / "check", KERNEL_DIR))
    assert (rc, mismatches) == (0, 0), out
    assert checked > 50_000_000


@pytest.mark.parametrize("mutation", MUTATIONS)
def test_a_broken_integer_spelling_is_caught(mutation, tmp_path):
    header, old, new = MUTATIONS[mutation]
    text = (KERNEL_DIR / header).read_text()
    assert old in text
    (tmp_path / header).write_text(text.replace(old, new, 1))
    rc, checked, mismatches, out = run_check(build_check(tmp_path / "check", tmp_path, KERNEL_DIR),
                                             random_count=1000, level=2)
    assert rc == 1 and mismatches > 0, out

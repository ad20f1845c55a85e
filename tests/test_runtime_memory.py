"""runtime/memory.retain_freed_memory: glibc's malloc keeps the training step's temporaries (no number changes:
benchmarks/numerics_fingerprint.py runs fine_tune, which sets it)."""
from __future__ import annotations

import sys

import numpy as np
import pytest

from microtrain.runtime import memory


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_thresholds_are_set_once_and_arrays_still_work():
    assert memory.retain_freed_memory() is True
    assert memory.retain_freed_memory() is True  # idempotent
    a = np.ones((64, 1024, 64), np.float32)  # 16 MB: from the heap now, below the 32 MB mmap threshold
    assert float(a.sum(dtype=np.float64)) == a.size


def test_elsewhere_it_is_a_no_op(monkeypatch):
    monkeypatch.setattr(memory, "_done", False)
    monkeypatch.setattr(memory.sys, "platform", "darwin")
    assert memory.retain_freed_memory() is False

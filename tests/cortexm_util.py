"""Shared helpers of the tests/test_cortexm_*.py files: the Arm toolchain and QEMU must be present
(under CI a missing tool fails, elsewhere the test is skipped)."""
from __future__ import annotations

import shutil

import pytest

from conftest import IN_CI

TOOLS = ("arm-none-eabi-gcc", "arm-none-eabi-nm", "qemu-system-arm", "make", "gcc")


def require_arm_tools() -> None:
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        if IN_CI:
            pytest.fail(f"missing under CI: {', '.join(missing)}")
        pytest.skip(f"Arm toolchain / QEMU not installed ({', '.join(missing)})")

"""The device learning-curve pipeline (benchmarks/exp_device_curve.py) on a tiny folder: 4 QEMU training steps in
two resumed sessions, parameters exported at 3 checkpoints and equal to the host build's continuous run, held-out
accuracy evaluated on the host, the NumPy simulation beside it; a second run reuses every cached segment.
Checks the pipeline, not the figures."""
from __future__ import annotations

import json
import sys

import pytest

from conftest import REPO, model_path, tiny_hymenoptera
from cortexm_util import require_arm_tools

sys.path.insert(0, str(REPO / "benchmarks"))

pytestmark = pytest.mark.qemu


def test_device_curve_pipeline(tmp_path, capsys):
    require_arm_tools()
    model_path("mcunet-5fps")
    import exp_device_curve

    folder = tiny_hymenoptera(tmp_path / "tinyset", 3, 2)
    argv = ["--datasets", str(folder), "--steps", "4", "--checkpoints", "0,2,4", "--lr", "0.01",
            "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "out")]
    assert exp_device_curve.main(argv) == 0
    first = capsys.readouterr().out
    assert first.count("device: step") == 3  # one session per checkpoint

    d = json.loads((tmp_path / "out" / "device_curve.json").read_text())["datasets"]["tinyset"]
    curve = d["curve"]
    assert [r["step"] for r in curve] == [0, 2, 4] and d["classes"] == ["ants", "bees"]
    # two sessions (0..2, then resumed 2..4) end exactly where the host build's one continuous run ends
    assert d["host_c_identical_all"] and all(r["host_c_params_identical"] for r in curve)
    assert d["device_eval_matches_host"]
    assert curve[0]["instructions"] == 0 < curve[1]["instructions"] < curve[2]["instructions"]
    assert d["instructions_per_step"] > 1e6 and curve[2]["device_minutes_est"] > 0
    assert all(0 <= r["acc"] <= 1 and "numpy_sim" in r for r in curve)
    assert curve[0]["numpy_sim"]["differing"] == 0  # before any step both hold the compiled parameters
    md = (tmp_path / "out" / "device_curve.md").read_text()
    assert "estimated device minutes" in md and "| 4 |" in md
    assert (tmp_path / "out" / "device_curve.png").stat().st_size > 0

    assert exp_device_curve.main(argv) == 0  # resumed: every segment comes from the cache, no QEMU training
    assert "device: step" not in capsys.readouterr().out
    again = json.loads((tmp_path / "out" / "device_curve.json").read_text())["datasets"]["tinyset"]
    assert [r["acc"] for r in again["curve"]] == [r["acc"] for r in curve]

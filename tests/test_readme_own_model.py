"""The README's "Your own model" section, run as written: its Python block (import a PyTorch model,
quantize it, save it) and then its shell block (plan, compile for C and for the Cortex-M7, run under QEMU)."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from conftest import REPO, SHARED, hymenoptera
from cortexm_util import require_arm_tools


def section_blocks() -> dict[str, str]:
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Your own model\n", 1)[1].split("\n## ", 1)[0]
    blocks = dict(re.findall(r"```(python|sh)\n(.*?)```", section, re.S))
    assert set(blocks) == {"python", "sh"}, "the section shows one Python and one shell block"
    return blocks


def test_readme_compile_line_shows_classes_and_the_c_target():
    sh = section_blocks()["sh"]
    assert re.search(r"^microtrain compile .*--classes \d+ .*--target c ", sh, re.M)


@pytest.mark.slow
def test_readme_own_model_runs_as_written(tmp_path):
    pytest.importorskip("torch")
    hymenoptera()
    require_arm_tools()
    blocks = section_blocks()
    env = dict(os.environ, MICROTRAIN_SHARED=str(SHARED.resolve()), MICROTRAIN_CACHE=str(tmp_path / "cache"),
               PYTHONPATH=os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]))
    env.pop("MICROTRAIN_MODELS", None)
    py = subprocess.run([sys.executable, "-c", blocks["python"]], cwd=tmp_path, env=env, capture_output=True,
                        text=True, timeout=300)
    assert py.returncode == 0, py.stderr[-2000:]
    assert (tmp_path / "my-cnn.json").exists() and (tmp_path / "my-cnn.npz").exists()
    # `microtrain` as this checkout's CLI, whatever is installed
    script = f'set -euo pipefail\nmicrotrain() {{ "{sys.executable}" -m microtrain.cli "$@"; }}\n' + blocks["sh"]
    sh = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert sh.returncode == 0, (sh.stdout[-2000:], sh.stderr[-2000:])
    assert (tmp_path / "build" / "my-cnn" / "libmt.a").exists()
    assert "#define MT_NUM_CLASSES 2" in (tmp_path / "build" / "my-cnn-m7" / "mt_model.h").read_text()
    steps = re.findall(r"^step +(\d+) +loss", sh.stdout, re.M)
    assert len(steps) == 20 and "held-out accuracy" in sh.stdout

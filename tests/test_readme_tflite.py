"""The README's "Your TensorFlow Lite model" section, run as written: its shell block (info, predict, train
--save, compile for the Cortex-M7, export --tflite) and then its Python block (the exported model in LiteRT).
MICROTRAIN_SHARED points at a folder whose data/cifar10 is a small subset (3 training images per class), so
the walk-through takes seconds; the models are the shared ones."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np

from conftest import DATA_DIR, MODELS_DIR, REPO, tiny_image_folder
from cortexm_util import require_arm_tools


def section_blocks() -> dict[str, str]:
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Your TensorFlow Lite model\n", 1)[1].split("\n## ", 1)[0]
    blocks = dict(re.findall(r"```(python|sh)\n(.*?)```", section, re.S))
    assert set(blocks) == {"python", "sh"}, "the section shows one shell and one Python block"
    return blocks


def test_readme_tflite_section_runs_as_written(tmp_path):
    from microtrain.ir.serialize import load_graph
    from microtrain.quant.arith import softmax_int8_tflite
    from microtrain.runtime.forward import run_int8

    require_arm_tools()
    shared = tmp_path / "shared"
    (shared / "data").mkdir(parents=True)
    (shared / "models").symlink_to(MODELS_DIR.resolve())
    tiny_image_folder(DATA_DIR / "cifar10", shared / "data" / "cifar10", 3, 1)
    assert (shared / "data" / "cifar10" / "val" / "cat" / "test_0004.png").exists()  # the README's image
    work = tmp_path / "work"
    work.mkdir()
    env = dict(os.environ, MICROTRAIN_SHARED=str(shared), MICROTRAIN_CACHE=str(tmp_path / "cache"),
               PYTHONPATH=os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]))
    env.pop("MICROTRAIN_MODELS", None)
    blocks = section_blocks()
    script = f'set -euo pipefail\nmicrotrain() {{ "{sys.executable}" -m microtrain.cli "$@"; }}\n' + blocks["sh"]
    sh = subprocess.run(["bash", "-c", script], cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert sh.returncode == 0, (sh.stdout[-2000:], sh.stderr[-2000:])
    assert (work / "build" / "resnet8-m7" / "mt_model.h").exists() and (work / "resnet8-cifar.tflite").exists()
    assert re.search(r"wrote resnet8-cifar.tflite .* 10 classes", sh.stdout)
    py = subprocess.run([sys.executable, "-c", blocks["python"]], cwd=work, env=env, capture_output=True,
                        text=True, timeout=300)
    assert py.returncode == 0, py.stderr[-2000:]
    printed = re.fullmatch(r"class (\d+) probability ([0-9.]+)\n", py.stdout)
    assert printed, py.stdout
    # the interpreter's answer is microtrain's: the trained graph's int8 forward and TFLite's int8 softmax
    from PIL import Image

    image = np.asarray(Image.open(shared / "data" / "cifar10" / "val" / "cat" / "test_0004.png").convert("RGB"),
                       np.int16)
    graph = load_graph(work / "resnet8-cifar.json")
    logits = run_int8(graph, (image - 128).astype(np.int8)[None]).reshape(1, -1)
    probs = softmax_int8_tflite(logits, graph.output_spec.quant.scale, graph.meta["softmax"]["beta"])[0]
    assert (int(printed.group(1)), float(printed.group(2))) == (int(probs.argmax()), (int(probs.max()) + 128) / 256)

"""benchmarks/exp_tflite.py, reduced (--quick: ResNet-8 on 30 CIFAR-10 training and 20 validation images, one
epoch, one seed, one lr, no firmware): the pipeline from the .tflite file to the training table runs, with the
as-shipped accuracy, a searched scheme that fits the part, and the three updates. Checks the pipeline, not the
figures (the real run: nice -n 19 python benchmarks/exp_tflite.py)."""
from __future__ import annotations

import json
import sys

from conftest import DATA_DIR, REPO, require, tiny_image_folder

sys.path.insert(0, str(REPO / "benchmarks"))


def test_quick_run_writes_the_training_table(tmp_path):
    import exp_tflite

    require(DATA_DIR / "cifar10")
    data = tiny_image_folder(DATA_DIR / "cifar10", tmp_path / "data" / "cifar10", 3, 2)
    out = tmp_path / "out"
    assert exp_tflite.main(["--quick", "--data-root", str(tmp_path / "data"), "--out", str(out),
                            "--cache", str(tmp_path / "cache")]) == 0
    doc = json.loads((out / "tflite_train.json").read_text())
    e = doc["models"]["ic_resnet8_cifar10_int8"]
    assert (e["n_train"], e["n_val"]) == (30, 20) and data.is_dir()
    assert e["labels"]["folder_classes"][0] == "airplane" and e["labels"]["mapping"].startswith("identity")
    assert 0 <= e["as_shipped"]["correct"] <= 20
    assert set(e["schemes"]) == {"head", "searched", "full"}
    for row in e["schemes"].values():
        assert row["seeds"] == [0] and len(row["val_acc"]) == 1 and 0 <= row["mean"] <= 1
    s = e["searched"]
    assert s["budgets_tried"][-1]["fits"] and s["budgets_tried"][-1]["total_sram"] <= 256 * 1024
    assert s["scheme"]["n_bias"] >= 0 and s["analysis"]["runs"] > 2
    md = (out / "tflite_train.md").read_text()
    assert "ic_resnet8_cifar10_int8" in md and "as shipped" in md and "searched sparse" in md
    # resumable: a second run trains nothing (every run comes from the store) and gives the same table
    assert exp_tflite.main(["--quick", "--data-root", str(tmp_path / "data"), "--out", str(out),
                            "--cache", str(tmp_path / "cache")]) == 0
    again = json.loads((out / "tflite_train.json").read_text())["models"]["ic_resnet8_cifar10_int8"]
    assert again["schemes"] == e["schemes"]

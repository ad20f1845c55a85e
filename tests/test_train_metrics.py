"""Balanced accuracy beside top-1 (runtime/metrics.py, the trainer's results, `microtrain train`), the
confusion / per-class plot, the resize rule for images smaller than the model, and the trainer's on-disk
frozen-prefix cache."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import model_path, tiny_hymenoptera
from microtrain.errors import DatasetError
from microtrain.runtime.metrics import balanced_accuracy, confusion_matrix, per_class_accuracy, plot_confusion


def test_balanced_accuracy_weighs_every_class_alike():
    # 8 of class 0 all right, 2 of class 1 all wrong: top-1 80 %, balanced 50 %
    y = np.array([0] * 8 + [1] * 2)
    p = np.zeros(10, np.int64)
    c = confusion_matrix(y, p, 3)
    assert c.tolist() == [[8, 0, 0], [2, 0, 0], [0, 0, 0]]
    assert np.trace(c) / c.sum() == pytest.approx(0.8)
    assert balanced_accuracy(c) == pytest.approx(0.5)  # class 2 has no example: left out, not counted as 0
    acc = per_class_accuracy(c)
    assert acc[:2].tolist() == [1.0, 0.0] and np.isnan(acc[2])
    with pytest.raises(DatasetError, match="outside"):
        confusion_matrix([0, 3], [0, 0], 3)


def test_plot_confusion_writes_a_png_for_100_classes(tmp_path):
    pytest.importorskip("matplotlib")
    rng = np.random.default_rng(0)
    y = rng.integers(0, 100, 2000)
    p = np.where(rng.random(2000) < 0.6, y, rng.integers(0, 100, 2000))
    out = plot_confusion(confusion_matrix(y, p, 100), [f"c{i}" for i in range(100)], tmp_path / "c.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(DatasetError, match="class names"):
        plot_confusion(np.eye(3), ["a", "b"], tmp_path / "bad.png")


def test_fine_tune_reports_balanced_accuracy_and_a_100_class_head(mcunet):
    from microtrain.runtime.trainer import fine_tune
    from microtrain.sparse.scheme import UpdateScheme

    rng = np.random.default_rng(1)
    g = mcunet.with_resolution(32)
    x = rng.integers(-128, 128, (200, 1, 32, 32, 3)).astype(np.int8)
    y = np.arange(200) % 100  # 100 classes, two images each
    r = fine_tune(g, UpdateScheme.head_only(), (x, y), (x[:, 0], y), epochs=2, lr=0.05, seed=0, batch_size=50)
    assert r["graph"].num_classes == 100
    conf = np.array(r["val_confusion"])
    assert conf.shape == (100, 100) and conf.sum() == 200
    assert r["val_acc"] == pytest.approx(np.trace(conf) / 200)
    assert r["val_balanced_acc"] == pytest.approx(balanced_accuracy(conf))


def test_small_images_are_upscaled_whole_and_large_ones_center_cropped():
    from PIL import Image

    from microtrain.runtime.images import resize_center_crop

    small = np.zeros((32, 32, 3), np.uint8)
    small[:, :4] = 255  # a white left border: kept by a whole upscale, cut by a center crop
    out = np.asarray(resize_center_crop(Image.fromarray(small), 128))
    assert out.shape == (128, 128, 3) and out[:, :8].min() > 200
    big = np.zeros((160, 160, 3), np.uint8)
    big[:, :8] = 255  # 8 of 160 px: inside the 12.5 % the center crop removes
    out = np.asarray(resize_center_crop(Image.fromarray(big), 128))
    assert out.shape == (128, 128, 3) and out[:, 0].max() < 50


def test_prefix_features_are_cached_on_disk_and_reused(mcunet, tmp_path, monkeypatch):
    from microtrain.runtime import trainer
    from microtrain.runtime.datasets import ImageData

    rng = np.random.default_rng(2)
    data = ImageData(rng.integers(-128, 128, (6, 1, 32, 32, 3)).astype(np.int8), np.arange(6) % 2, ["a", "b"])
    g = mcunet.with_resolution(32)
    trainer.set_prefix_disk_cache(tmp_path)
    try:
        trainer.clear_prefix_cache()
        first = trainer.prefix_features(g, data, 30, "int8")
        files = list(tmp_path.glob("*.npz"))
        assert len(files) == 1
        trainer.clear_prefix_cache()  # a new process: memory empty, the file remains

        def no_compute(*a, **k):
            raise AssertionError("recomputed although cached on disk")

        monkeypatch.setattr(trainer, "run_nodes", no_compute)
        again = trainer.prefix_features(g, data, 30, "int8")
        assert again.keys() == first.keys() and all(np.array_equal(again[t], first[t]) for t in first)
    finally:
        trainer.set_prefix_disk_cache(None)
        trainer.clear_prefix_cache()


def test_train_cli_writes_balanced_accuracy_and_the_confusion_plot(tmp_path):
    pytest.importorskip("matplotlib")
    from microtrain.cli import main

    ds = tiny_hymenoptera(tmp_path / "ds", 4, 3)
    metrics, png = tmp_path / "m.json", tmp_path / "c.png"
    assert main(["train", str(model_path("mcunet-5fps")), "--data", str(ds), "--epochs", "1", "--views", "1",
                 "--resolution", "32", "--update", "head", "--quiet", "--metrics", str(metrics),
                 "--confusion-plot", str(png)]) == 0
    m = json.loads(metrics.read_text())
    conf = np.array(m["val_confusion"])
    assert conf.shape == (2, 2) and conf.sum() == 6
    assert m["val_balanced_acc"] == pytest.approx(balanced_accuracy(conf))
    assert png.read_bytes()[:4] == b"\x89PNG"

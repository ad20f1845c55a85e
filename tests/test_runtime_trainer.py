"""fine_tune end to end on real images (loss falls), checkpoint + resume reproduce an uninterrupted
run bit for bit, the frozen-prefix cache is reused, the new head."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import hymenoptera
from microtrain.runtime.datasets import ImageData, load_image_folder
from microtrain.quant.head import replace_head
from microtrain.runtime.trainer import _PREFIX_CACHE, fine_tune, lr_at
from microtrain.sparse.scheme import UpdateScheme


@pytest.fixture(scope="module")
def few_images():
    """12 training images per class (2 views) and 16 validation images, at 64x64 to stay fast."""
    root = hymenoptera()
    full = load_image_folder(root / "val", 64, views=2, seed=0)
    idx = np.r_[np.where(full.labels == 0)[0][:20], np.where(full.labels == 1)[0][:20]]
    return full.subset(idx[np.r_[0:12, 20:32]]), full.subset(idx[np.r_[12:20, 32:40]])


def test_loss_falls_on_real_images(mcunet, few_images):
    train, val = few_images
    g = mcunet.with_resolution(64)
    before = g.node("blocks.13.pointwise1").params["weight"].copy()
    r = fine_tune(g, UpdateScheme.last_blocks(g, 1), train, val, epochs=6, lr=0.01, seed=0, batch_size=8)
    losses = [h["train_loss"] for h in r["history"]]
    assert losses[-1] < 0.8 * losses[0], losses
    assert r["graph"].num_classes == 2 and 0 <= r["val_acc"] <= 1
    trained = r["graph"].node("blocks.13.pointwise1").params["weight"]
    assert not np.array_equal(trained, before)  # the block learned
    np.testing.assert_array_equal(g.node("blocks.13.pointwise1").params["weight"], before)  # input untouched


def test_fp32_mode_trains_the_dequantised_graph(mcunet, few_images):
    train, val = few_images
    g = mcunet.with_resolution(64)
    r = fine_tune(g, UpdateScheme.head_only(), train, val, epochs=3, lr=0.01, seed=0, fp32=True, batch_size=8)
    assert r["graph"].dtype == "float32" and r["history"][-1]["train_loss"] < r["history"][0]["train_loss"]


def test_resume_reproduces_the_uninterrupted_run(mcunet, tmp_path):
    rng = np.random.default_rng(0)
    data = ImageData(rng.integers(-128, 128, (16, 2, 64, 64, 3)).astype(np.int8), rng.integers(0, 3, 16), list("abc"))
    g = mcunet.with_resolution(64)
    scheme = UpdateScheme.last_layers(g, 2)
    kw = dict(epochs=3, lr=0.02, seed=3, batch_size=8, momentum=0.9)
    full = fine_tune(g, scheme, data, None, **kw)

    class Stop(Exception):
        pass

    def stop_after_two(rec):
        if rec["epoch"] == 2:
            raise Stop

    with pytest.raises(Stop):
        fine_tune(g, scheme, data, None, checkpoint_dir=tmp_path / "ck", log=stop_after_two, **kw)
    resumed = fine_tune(g, scheme, data, None, resume=tmp_path / "ck", **kw)
    assert [h["epoch"] for h in resumed["history"]] == [1, 2, 3]
    for a, b in zip(full["graph"].nodes, resumed["graph"].nodes):
        for k in a.params:
            np.testing.assert_array_equal(a.params[k], b.params[k], err_msg=f"{a.name}.{k}")
    assert (tmp_path / "ck" / "graph.npz").exists() and not list(tmp_path.glob("*.pkl"))


def test_prefix_cache_is_shared_across_runs_and_schemes(mcunet):
    rng = np.random.default_rng(1)
    data = ImageData(rng.integers(-128, 128, (8, 1, 64, 64, 3)).astype(np.int8), rng.integers(0, 2, 8), ["a", "b"])
    g = mcunet.with_resolution(64)
    _PREFIX_CACHE.clear()
    fine_tune(g, UpdateScheme.last_blocks(g, 2), data, None, epochs=1, lr=0.01)
    assert len(_PREFIX_CACHE) == 1
    fine_tune(g, UpdateScheme.last_blocks(g, 2), data, None, epochs=1, lr=0.05, seed=1)
    assert len(_PREFIX_CACHE) == 1  # same prefix: reused
    deeper = fine_tune(g, UpdateScheme.head_only(), data, None, epochs=1, lr=0.01)
    assert len(_PREFIX_CACHE) == 2 and deeper["boundary"] == ["pool.out"]
    fine_tune(g, UpdateScheme.head_only(), data.subset([1, 3, 5]), data.subset([0, 2]), epochs=1, lr=0.01)
    assert len(_PREFIX_CACHE) == 2  # subsets slice their parent's cached features


def test_new_head_and_schedule(mcunet):
    g = replace_head(mcunet, 5)
    head = g.classifier()
    assert head.params["weight"].shape == (5, 160, 1, 1) and not head.params["weight"].any()
    assert g.num_classes == 5 and g.output_spec.quant.scale == 1 / 8
    assert mcunet.num_classes == 1000
    lrs = [lr_at(t, 100, 10, 1.0) for t in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0) and lrs[-1] < 0.01
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))

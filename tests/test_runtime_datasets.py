"""ImageFolder loading: JPEG/PNG accepted, anything else (the dataset's GIF) and undecodable files
reported and skipped; augmented views are deterministic."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import hymenoptera
from microtrain.errors import DatasetError
from microtrain.runtime.datasets import load_image_folder


@pytest.fixture
def small_folder(tmp_path):
    root = hymenoptera()
    ants = sorted((root / "train" / "ants").glob("*.jpg"))[:2]
    bees = sorted((root / "train" / "bees").glob("*.jpg"))[:2]
    (tmp_path / "ants").mkdir()
    (tmp_path / "bees").mkdir()
    for f in ants:
        (tmp_path / "ants" / f.name).symlink_to(f)
    for f in bees:
        (tmp_path / "bees" / f.name).symlink_to(f)
    gif = root / "train" / "ants" / "imageNotFound.gif"
    (tmp_path / "ants" / gif.name).symlink_to(hymenoptera() / "train" / "ants" / "imageNotFound.gif")
    (tmp_path / "ants" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    from PIL import Image

    Image.new("RGB", (40, 30), (200, 10, 10)).save(tmp_path / "bees" / "red.png")
    return tmp_path


def test_gif_and_broken_files_are_skipped_and_reported(small_folder):
    d = load_image_folder(small_folder, 32, views=3, seed=5)
    assert len(d) == 5 and d.classes == ["ants", "bees"]
    reasons = {p.rsplit("/", 1)[-1]: r for p, r in d.skipped}
    assert set(reasons) == {"imageNotFound.gif", "broken.jpg"}
    assert "GIF" in reasons["imageNotFound.gif"] and "cannot decode" in reasons["broken.jpg"]
    assert d.views.shape == (5, 3, 32, 32, 3) and d.views.dtype == np.int8
    assert list(d.labels) == [0, 0, 1, 1, 1]
    np.testing.assert_array_equal(d.views[:, 1], d.views[:, 0, :, ::-1])  # view 1 mirrors view 0
    again = load_image_folder(small_folder, 32, views=3, seed=5)
    np.testing.assert_array_equal(d.views, again.views)
    assert d.fingerprint() == again.fingerprint()
    x, labels, skipped = d
    assert x.shape == (5, 32, 32, 3) and len(skipped) == 2


def test_the_real_dataset_gif_is_skipped():
    from microtrain.runtime.datasets import decode_checked

    im, reason = decode_checked(hymenoptera() / "train" / "ants" / "imageNotFound.gif")
    assert im is None and "GIF" in reason


def test_missing_or_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        load_image_folder(tmp_path / "nope", 32)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.txt").write_text("hello")
    with pytest.raises(DatasetError, match="no readable"):
        load_image_folder(tmp_path, 32)

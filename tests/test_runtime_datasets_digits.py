"""The offline digits task of benchmarks/exp_qas.py --dataset digits: the documented fixed split."""
import numpy as np

from microtrain.runtime.datasets import load_digits_split


def sklearn_index(data):
    return np.array([int(p.split("/")[1]) for p in data.paths])


def test_digits_split_is_stratified_disjoint_and_fixed():
    from sklearn.datasets import load_digits

    train, val = load_digits_split(16, views=3, seed=0)
    assert train.views.shape == (500, 3, 16, 16, 3) and val.views.shape == (300, 1, 16, 16, 3)
    assert train.views.dtype == np.int8 and val.views.dtype == np.int8
    assert train.classes == [str(d) for d in range(10)] == val.classes
    assert np.bincount(train.labels, minlength=10).tolist() == [50] * 10
    assert np.bincount(val.labels, minlength=10).tolist() == [30] * 10
    ti, vi = sklearn_index(train), sklearn_index(val)
    assert not set(ti) & set(vi)
    target = load_digits().target
    assert (target[ti] == train.labels).all() and (target[vi] == val.labels).all()
    # the split does not depend on the augmentation seed; view 0 does not either, views 1.. do
    train2, val2 = load_digits_split(16, views=3, seed=1)
    assert (sklearn_index(train2) == ti).all() and (sklearn_index(val2) == vi).all()
    assert np.array_equal(train2.views[:, 0], train.views[:, 0]) and np.array_equal(val2.views, val.views)
    assert not np.array_equal(train2.views[:, 1:], train.views[:, 1:])
    # grey replicated to RGB; a digit's ink is bright: pixel 255 -> int8 127, background 0 -> -128
    assert (train.views[..., 0] == train.views[..., 1]).all() and (train.views[..., 0] == train.views[..., 2]).all()
    assert train.views.min() == -128 and train.views.max() > 100


def test_digits_view0_is_the_bilinear_upsampled_scan():
    from PIL import Image
    from sklearn.datasets import load_digits

    train, _ = load_digits_split(24, views=1)
    i = int(train.paths[7].split("/")[1])
    grey = np.clip(np.rint(load_digits().images[i] * 255 / 16), 0, 255).astype(np.uint8)
    want = np.asarray(Image.fromarray(grey).resize((24, 24), Image.BILINEAR)).astype(np.int16) - 128
    assert np.array_equal(train.views[7, 0, :, :, 0], want)

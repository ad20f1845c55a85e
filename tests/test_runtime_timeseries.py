"""Time-series datasets: the four shared `.ts` sets as the README counts them, unequal lengths, the
per-class folder of .npy/.csv recordings, hostile files (errors name file and line), the normalisation
rule and its round trip through graph meta, augmentation."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import SHARED, require

from microtrain.errors import DatasetError
from microtrain.runtime.timeseries import (Augment, Normalisation, fixed_length, load_series, load_series_folder,
                                           read_ts, series_views)

TS = SHARED / "data" / "timeseries"


def ts(name, split="TRAIN"):
    return require(TS / name / f"{name}_{split}.ts")


def test_shared_sets_match_the_readme():
    bm = read_ts(ts("BasicMotions"))
    assert (len(bm), bm.channels, bm.classes) == (40, 6, ["Standing", "Running", "Walking", "Badminton"])
    assert set(bm.lengths) == {100} and np.bincount(bm.labels).tolist() == [10] * 4
    jv_train = read_ts(ts("JapaneseVowels"))
    jv_test = read_ts(ts("JapaneseVowels", "TEST"), classes=jv_train.classes)
    assert (len(jv_train), len(jv_test), jv_train.channels) == (270, 370, 12)
    assert (jv_train.lengths.min(), jv_train.lengths.max(), jv_test.lengths.max()) == (7, 26, 29)
    assert np.bincount(jv_test.labels).tolist() == [31, 35, 88, 44, 29, 24, 40, 50, 29]
    assert -2.0 < min(c.min() for c in jv_train.cases) and max(c.max() for c in jv_train.cases) < 2.3
    # the first case's first channel starts as in the file (values are channel-major on the line)
    assert jv_train.cases[0][:2, 0].tolist() == pytest.approx([1.860936, 1.891651])
    pg = read_ts(ts("PickupGestureWiimoteZ"))
    assert pg.channels == 1 and (pg.lengths.min(), pg.lengths.max()) == (29, 361)


HEADER = "#c\n@problemName X\n@timeStamps false\n@univariate false\n@dimensions 2\n@classLabel true a b\n@data\n"


@pytest.mark.parametrize("body, message", [
    ("1,2:3,4:a\n1,x:3,4:b\n", r"bad.ts:9 channel 0: 'x' is not a number"),
    ("1,2:3,4:c\n", r"bad.ts:8: label 'c' is not among"),
    ("1,2:3,4:5,6:a\n", r"bad.ts:8: 3 channels, @dimensions says 2"),
    ("1,2:3:a\n", r"bad.ts:8: channels have different lengths"),
    ("1,?:3,4:a\n", r"bad.ts:8: channel 0 has missing values"),
    ("1,nan:3,4:a\n", r"bad.ts:8 channel 0: value 'nan' is not finite"),
    ("1,2,3,4\n", r"bad.ts:8: a case needs channel values and a class label"),
    ("", r"bad.ts: @data holds no cases"),
])
def test_hostile_ts_lines_are_named(tmp_path, body, message):
    p = tmp_path / "bad.ts"
    p.write_text(HEADER + body)
    with pytest.raises(DatasetError, match=message):
        read_ts(p)


def test_hostile_ts_headers(tmp_path):
    p = tmp_path / "h.ts"
    for text, message in [("1,2:a\n", "h.ts:1: expected an @ header"), ("@data\n1:a\n", "@data before any @classLabel"),
                          ("@classLabel false\n@data\n", "@classLabel must be 'true'"),
                          ("@timeStamps true\n", "@timeStamps true is not supported"), ("# only\n", "no @data line")]:
        p.write_text(text)
        with pytest.raises(DatasetError, match=message):
            read_ts(p)
    p.write_bytes(b"\xff\xfe@data")
    with pytest.raises(DatasetError, match="cannot read as UTF-8"):
        read_ts(p)


def test_folder_of_recordings(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "walk").mkdir()
    (tmp_path / "sit").mkdir()
    np.save(tmp_path / "walk" / "r1.npy", rng.normal(size=(30, 3)).astype(np.float32))
    (tmp_path / "walk" / "r2.csv").write_text("ax,ay,az\n" + "\n".join("1,2,3" for _ in range(12)) + "\n")
    np.save(tmp_path / "sit" / "r1.npy", rng.normal(size=(25, 3)))
    s = load_series(tmp_path)
    assert s.classes == ["sit", "walk"] and s.labels.tolist() == [0, 1, 1] and s.lengths.tolist() == [25, 30, 12]
    assert s.cases[2][0].tolist() == [1, 2, 3]

    (tmp_path / "walk" / "r3.csv").write_text("1,2,3\n1,2\n")
    with pytest.raises(DatasetError, match=r"r3.csv:2: 2 columns, the first row has 3"):
        load_series_folder(tmp_path)
    (tmp_path / "walk" / "r3.csv").unlink()
    np.save(tmp_path / "walk" / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DatasetError, match=r"obj.npy: not a readable .npy array"):
        load_series_folder(tmp_path)
    (tmp_path / "walk" / "obj.npy").unlink()
    np.save(tmp_path / "walk" / "two.npy", np.zeros((10, 2)))
    with pytest.raises(DatasetError, match=r"two.npy: 2 channels, .*r1.npy has 3"):
        load_series_folder(tmp_path)
    (tmp_path / "walk" / "two.npy").unlink()
    (tmp_path / "walk" / "notes.txt").write_text("x")
    with pytest.raises(DatasetError, match=r"notes.txt: not a recording"):
        load_series_folder(tmp_path)


def test_normalisation_rule_and_meta_round_trip():
    jv = read_ts(ts("JapaneseVowels"))
    norm = Normalisation.fit(jv)
    allv = np.concatenate(jv.cases).astype(np.float64)
    assert np.allclose(norm.mean, allv.mean(0)) and np.allclose(norm.std, allv.std(0))
    z = norm.z(jv.cases[0])
    assert np.allclose(z, (jv.cases[0] - allv.mean(0)) / allv.std(0), atol=1e-5)
    q = norm.to_int8(np.array([[0.0], [1.0], [-4.0], [9.0]], np.float32))
    assert q[:, 0].tolist() == [0, 32, -127, 127]  # rint(z * 127 / 4), saturating
    back = Normalisation.from_meta(norm.to_meta())
    assert np.array_equal(back.mean, norm.mean) and np.array_equal(back.std, norm.std) and back.sigmas == 4.0
    with pytest.raises(DatasetError, match="malformed"):
        Normalisation.from_meta({"mean": [0.0]})


def test_views_fixed_length_and_augmentation():
    jv = read_ts(ts("JapaneseVowels"))
    norm = Normalisation.fit(jv)
    data = series_views(jv, norm, 20, views=3, augment=Augment(max_shift=3, scale=0.2, noise=0.1), seed=1)
    assert data.views.shape == (270, 3, 1, 20, 12) and data.views.dtype == np.int8
    short = int(np.argmin(jv.lengths))  # 7 steps: view 0 is the case, then the mean (code 0)
    assert np.array_equal(data.views[short, 0, 0, :7], norm.to_int8(norm.z(jv.cases[short])))
    assert not data.views[short, 0, 0, 7:].any()
    assert not np.array_equal(data.views[:, 1], data.views[:, 0]) and not np.array_equal(data.views[:, 1], data.views[:, 2])
    again = series_views(jv, norm, 20, views=3, augment=Augment(max_shift=3, scale=0.2, noise=0.1), seed=1)
    assert np.array_equal(again.views, data.views)
    z = np.arange(10, dtype=np.float32)[:, None]
    assert fixed_length(z, 6, 2)[:, 0].tolist() == [2, 3, 4, 5, 6, 7]
    assert fixed_length(z, 6, -2)[:, 0].tolist() == [0, 0, 0, 1, 2, 3]
    assert fixed_length(z, 12, 0)[:, 0].tolist() == list(range(10)) + [0, 0]
    with pytest.raises(DatasetError, match="augmentation needs"):
        Augment(scale=1.5)


def test_load_for_model_uses_the_stored_normalisation():
    from types import SimpleNamespace

    from microtrain.runtime.timeseries import is_series_model, load_for_model

    train = read_ts(ts("JapaneseVowels"))
    norm = Normalisation.fit(train)
    graph = SimpleNamespace(name="m", meta={"input_normalisation": norm.to_meta()},
                            input_spec=SimpleNamespace(shape=(1, 30, 12)))
    assert is_series_model(graph) and not is_series_model(SimpleNamespace(meta={}))
    tr, val = load_for_model(graph, ts("JapaneseVowels"), ts("JapaneseVowels", "TEST"), views=2, seed=0)
    assert tr.views.shape == (270, 2, 1, 30, 12) and val.views.shape == (370, 1, 1, 30, 12)
    assert np.array_equal(val.views[0, 0, 0, : len(read_ts(ts("JapaneseVowels", "TEST")).cases[0])],
                          norm.to_int8(norm.z(read_ts(ts("JapaneseVowels", "TEST")).cases[0])))
    with pytest.raises(DatasetError, match="6 channels, model 'm' reads 12"):
        load_for_model(graph, ts("BasicMotions"))

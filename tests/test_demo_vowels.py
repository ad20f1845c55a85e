"""`microtrain demo --task vowels` (demo/vowels.py): its pieces are tested in test_ops_1d.py,
test_runtime_timeseries.py and test_cortexm_1d.py; the whole run (about 2 minutes) is measured in
docs/measurements.md. Here: a missing data set fails at once, naming the file and the variable to set."""
from __future__ import annotations


def test_vowels_task_without_the_data_fails_before_any_work(tmp_path, monkeypatch, capsys):
    from microtrain.cli import main

    monkeypatch.setenv("MICROTRAIN_SHARED", str(tmp_path / "nowhere"))
    assert main(["demo", "--task", "vowels", "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "JapaneseVowels_TRAIN.ts not found" in err and "MICROTRAIN_SHARED" in err
    assert not (tmp_path / "out").exists()  # nothing written before the check

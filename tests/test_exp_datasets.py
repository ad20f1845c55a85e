"""The resumable experiment harness on the real datasets (benchmarks/exp_qas.py --dataset, run_store.py,
numerics_fingerprint.py): a reduced run of the pipeline on a tiny ImageFolder (checks the pipeline, not the
figures), resume without retraining, and the fingerprint that decides reuse."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from conftest import REPO, model_path, tiny_hymenoptera

sys.path.insert(0, str(REPO / "benchmarks"))


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return tiny_hymenoptera(tmp_path_factory.mktemp("tiny") / "tinyset", 5, 3)


def test_fingerprint_is_stable_and_moves_with_the_numerics(monkeypatch):
    model_path("mcunet-5fps")
    from numerics_fingerprint import numerics_fingerprint

    base = numerics_fingerprint.__wrapped__()
    assert base == numerics_fingerprint.__wrapped__()  # deterministic
    from microtrain.runtime import trainer

    lr_at = trainer.lr_at
    monkeypatch.setattr(trainer, "lr_at", lambda *a: 1.01 * lr_at(*a))  # a 1 % different schedule
    assert numerics_fingerprint.__wrapped__() != base


def test_run_dir_counts_only_runs_of_the_current_fingerprint(tmp_path):
    from run_store import RunDir, run_key

    key = run_key("m", "int8+QAS", "final", 0.01, 2)
    a = RunDir(tmp_path, "fp-a", views=4, batch=32, momentum=0.0)
    assert a.get(key, 12) is None
    a.put(key, {"val_acc": 0.5}, 12)
    assert a.get(key, 12) == {"val_acc": 0.5} and dict(a.items()) == {key: {"val_acc": 0.5}}
    assert a.get(key, 5) is None  # other epochs: another run
    assert RunDir(tmp_path, "fp-b", 4, 32, 0.0).get(key, 12) is None  # other numerics: redone
    assert RunDir(tmp_path, "fp-a", 4, 32, 0.9).get(key, 12) is None  # momentum is part of the key
    doc = json.loads(a.path(key, 12).read_text())
    assert doc["key"]["seed"] == 2 and doc["numerics_fingerprint"] == "fp-a"


def test_reduced_qas_run_on_a_folder_resumes_without_training(tiny_folder, tmp_path, monkeypatch, capsys):
    model_path("mcunet-5fps")
    import exp_qas

    argv = ["--quick", "--dataset", str(tiny_folder), "--out", str(tmp_path / "res"),
            "--cache", str(tmp_path / "cache"), "--views", "2"]
    exp_qas.main(argv)
    first = capsys.readouterr().out
    files = sorted((tmp_path / "res" / "qas" / "tinyset").rglob("*.json"))
    # quick: 4 settings x (2 scan lrs + 1 final), one file each
    assert len(files) == 12, [f.name for f in files]
    final = json.loads(next(f for f in files if "int8+QAS" in str(f) and f.name.startswith("final")).read_text())
    r = final["result"]
    assert 0 <= r["val_acc"] <= 1 and 0 <= r["val_balanced_acc"] <= 1
    assert np.array(r["val_confusion"]).sum() == 6
    assert list((tmp_path / "cache").glob("*.npz"))  # prefix features on disk

    from microtrain.runtime import trainer

    def no_training(*a, **k):
        raise AssertionError("a stored run was trained again")

    monkeypatch.setattr(trainer, "fine_tune", no_training)
    exp_qas.main(argv)
    again = capsys.readouterr().out
    pick = lambda text: [ln for ln in text.splitlines() if "final lr" in ln]  # noqa: E731
    assert pick(again) == pick(first) and len(pick(first)) == 4


def test_unknown_dataset_is_one_clear_error(tmp_path):
    import exp_qas
    from microtrain.errors import DatasetError

    with pytest.raises(DatasetError, match="no train/ and val/"):
        exp_qas.main(["--dataset", "no_such_set", "--out", str(tmp_path)])


def test_bench_reuses_a_result_while_its_fingerprint_matches(tmp_path, monkeypatch):
    import os

    import numerics_fingerprint
    import run_all

    monkeypatch.setattr(numerics_fingerprint, "numerics_fingerprint", lambda: "fp-now")
    code = tmp_path / "code.py"
    code.write_text("x = 1\n")
    monkeypatch.setattr(run_all, "REPO", tmp_path)
    result = tmp_path / "r.json"
    result.write_text(json.dumps({"numerics_fingerprint": "fp-now"}))
    os.utime(result, (1000, 1000))
    os.utime(code, (3000, 3000))  # code newer than the result: the time rule would call it stale
    fresh, why = run_all._freshness(result, ["code.py"])
    assert fresh and "fp-now" in why
    result.write_text(json.dumps({"numerics_fingerprint": "fp-old"}))
    os.utime(result, (5000, 5000))  # newer than the code, but other numerics
    fresh, why = run_all._freshness(result, ["code.py"])
    assert not fresh and "fp-old" in why and "fp-now" in why


def _table(fp32, int8, qas, head, model="mcunet-5fps"):
    row = {s: {"val_acc": accs, "mean": float(np.mean(accs)), "std": float(np.std(accs)), "lr": 0.01,
               "balanced": accs}
           for s, accs in (("fp32", fp32), ("int8", int8), ("int8+QAS", qas), ("head-only", head))}
    return {"models": {model: row}}


def test_summary_across_datasets_pairs_by_seed_and_says_partial(tmp_path, monkeypatch):
    import qas_datasets

    (tmp_path / "qas").mkdir()
    monkeypatch.setattr(qas_datasets, "RESULTS", tmp_path)
    gains = {"cub50": 0.05, "gtsrb": 0.06, "cifar10": 0.055}  # int8+QAS ahead of int8 by 5, 6, 5.5 points
    for d, g in gains.items():
        base = [0.60, 0.62, 0.61]
        t = _table(base, [b - g for b in base], [b - 0.002 for b in base], [b - 0.1 for b in base])
        (tmp_path / "qas" / f"{d}.json").write_text(json.dumps(t))
    qas_datasets.main()
    doc = json.loads((tmp_path / "qas" / "summary.json").read_text())
    across = doc["plain"]["across_datasets"]
    assert across["int8+QAS - int8"]["mean"] == pytest.approx(5.5 - 0.2)
    assert across["int8+QAS - int8"]["ci95"][0] > 0  # 5.3 ± t(2) * 0.5 / sqrt(3) = 5.3 ± 1.24: excludes 0
    assert across["int8+QAS - fp32"]["mean"] == pytest.approx(-0.2)
    assert doc["plain"]["paired_by_dataset"]["gtsrb"]["int8+QAS - int8"]["diffs"] == pytest.approx([5.8] * 3)
    md = (tmp_path / "qas" / "summary.md").read_text()
    assert "PARTIAL: 3 of 8" in md and "within 1 point" in md and "excludes 0" in md


def test_bench_headline_shows_the_dataset_summary_as_partial(tmp_path, monkeypatch):
    import numerics_fingerprint
    import qas_datasets
    import run_all

    (tmp_path / "qas").mkdir()
    monkeypatch.setattr(qas_datasets, "RESULTS", tmp_path)
    monkeypatch.setattr(run_all, "RESULTS", tmp_path)
    monkeypatch.setattr(numerics_fingerprint, "numerics_fingerprint", lambda: "fp-now")
    for d in ("cub50", "gtsrb"):
        t = _table([0.6, 0.62, 0.61], [0.5, 0.52, 0.5], [0.6, 0.61, 0.61], [0.4, 0.4, 0.4])
        if d == "cub50":  # another model has run on this one
            t["models"].update(_table([0.7] * 3, [0.65] * 3, [0.71] * 3, [0.6] * 3, "mbv2-w0.35")["models"])
        t["numerics_fingerprint"] = "fp-now"
        (tmp_path / "qas" / f"{d}.json").write_text(json.dumps(t))
    qas_datasets.main()
    assert run_all.main(["--skip", "memory", "host", "cortexm", "patching", "tflite", "--accuracy", "reuse"]) == 0
    head = (tmp_path / "headline.md").read_text()
    assert "QAS on the real datasets** (mcunet-5fps; PARTIAL: 2 datasets" in head
    assert "| cub50 |" in head and "| gtsrb |" in head
    assert "The other two models" in head and "| cub50 | mbv2-w0.35 | 70.0 | 65.0 | 71.0 | 60.0 |" in head


def test_queue_lock_is_exclusive_and_taken_over_from_a_dead_holder(tmp_path):
    import os

    from exp_datasets import claim

    lock = claim(tmp_path / "job.lock")
    assert lock is not None and lock.read_text() == str(os.getpid())
    assert claim(tmp_path / "job.lock") is None  # held by a live process (this one)
    lock.write_text("999999999")  # a pid that does not exist
    assert claim(tmp_path / "job.lock") is not None


def test_queue_runs_a_jobs_settings_first_then_the_job(tmp_path, monkeypatch):
    import threading
    from pathlib import Path

    import exp_datasets

    order, mutex = [], threading.Lock()

    def fake_run(cmd, log, cwd):
        setting = cmd[cmd.index("--settings") + 1] if "--settings" in cmd else None
        with mutex:
            order.append((Path(cmd[1]).name, setting))
        return 0, 0.0

    monkeypatch.setattr(exp_datasets, "queue", lambda: [("qas-x", ["exp_qas.py", "--dataset", "x"]),
                                                        ("qas-y", ["exp_qas.py", "--dataset", "y"]),
                                                        ("sparse-x", ["exp_sparse.py", "--dataset", "x"])])
    monkeypatch.setattr(exp_datasets, "run_child", fake_run)
    assert exp_datasets.main(["--workers", "1", "--log-dir", str(tmp_path), "--out", str(tmp_path)]) == 0
    settings = ["fp32", "int8", "int8+QAS", "head-only"]
    # one worker: x's four settings, x's table run at once (before y's parts), then y, then sparse
    assert order == [("exp_qas.py", s) for s in settings] + [("exp_qas.py", None)] + \
        [("exp_qas.py", s) for s in settings] + [("exp_qas.py", None), ("exp_sparse.py", None)]
    order.clear()
    assert exp_datasets.main(["--workers", "3", "--log-dir", str(tmp_path), "--out", str(tmp_path)]) == 0
    assert len(order) == 11 and order.count(("exp_qas.py", None)) == 2


def test_a_jobs_cpu_time_is_measured(tmp_path):
    """The queue logs each job's CPU seconds (child and waited-for descendants), not only its wall time."""
    import exp_datasets

    busy = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\nraise SystemExit(3)"
    with open(tmp_path / "log", "w") as log:
        rc, cpu = exp_datasets.run_child([sys.executable, "-c", busy], log, tmp_path)
    assert rc == 3 and 0.3 <= cpu < 5


def test_sparse_reuses_the_analysis_its_record_holds_only_for_the_same_model_images_and_settings(tiny_folder):
    """A fresh checkout has no analysis cache: exp_sparse takes the committed record's gain table instead of
    re-running the analysis's fine-tunes, but only when the model, the training images and the settings match."""
    import exp_sparse
    from microtrain.models import load_model
    from microtrain.runtime.datasets import load_image_folder
    from microtrain.scheme_search.contribution import AnalysisSettings, graph_fingerprint
    from microtrain.scheme_search.search import GainTable

    graph = load_model(model_path("mcunet-5fps"))
    settings = AnalysisSettings(epochs=3, lr=0.01, seed=0)
    data = load_image_folder(tiny_folder / "train", 32, views=settings.views, seed=settings.seed, channels=3)
    meta = {"runs": {"bias-0": {"val_acc": 0.5, "val_loss": 0.7}}, "settings": json.loads(json.dumps(settings.key())),
            "model_fingerprint": graph_fingerprint(graph), "data_fingerprint": data.fingerprint()}
    table = GainTable(graph.name, 0.5, {0: 0.0, 4: 0.1}, {}, 4, meta)
    record = {"gains_acc": json.loads(json.dumps(table.to_dict()))}  # as stored: through JSON
    got = exp_sparse.stored_analysis(record, graph, data, settings)
    assert got is not None and got.bias == {0: 0.0, 4: 0.1} and got.bias_ref == 4
    assert exp_sparse.stored_analysis(record, graph, data, AnalysisSettings(epochs=2, lr=0.01, seed=0)) is None
    other = data.subset(np.arange(1, len(data.labels)))  # one image fewer
    assert other.fingerprint() != data.fingerprint()
    assert exp_sparse.stored_analysis(record, graph, other, settings) is None
    other_model = load_model(model_path("mcunet-5fps"))
    other_model.nodes[-1].params["bias"] = other_model.nodes[-1].params["bias"] + 1  # another model
    assert exp_sparse.stored_analysis(record, other_model, data, settings) is None
    assert exp_sparse.stored_analysis({}, graph, data, settings) is None


def test_partial_sparse_table_shows_the_acceptance_line_once_its_schemes_have_run():
    """The searched schemes and last-12 decide the acceptance comparison; the other baselines cannot change it,
    so a partial run shows it as soon as those have finished, and not before."""
    import run_all

    def final(kind, kb, accs, held):
        return {"kind": kind, "extra_kb": kb, "lr": 0.01, "val_acc": float(np.mean(accs)), "val_acc_min": min(accs),
                "val_acc_max": max(accs), "heldout_by_lr": {"0.01": {"acc": held, "loss": 1.0}},
                "seeds": {str(i): {"val_acc": a} for i, a in enumerate(accs)}}

    searches = [{"budget_kb": kb, "metric": m} for kb in (32, 100) for m in ("acc", "loss")]
    rec = {"searches": searches, "final": {
        "searched-acc-32kb": final("searched (acc)", 31, [0.70, 0.71, 0.72], 0.5),
        "searched-loss-32kb": final("searched (loss)", 31, [0.71, 0.72, 0.73], 0.6),
        "searched-acc-100kb": final("searched (acc)", 98, [0.74, 0.75, 0.76], 0.7),
        "last-12": final("last-k layers", 448, [0.72, 0.73, 0.74], 0.6)}}
    text = "\n".join(run_all._sparse_dataset_section("x", {"record": rec, "source": "s"}))
    assert "PARTIAL: 4 schemes" in text and "Best searched" not in text  # searched-loss-100kb has not run
    rec["final"]["searched-loss-100kb"] = final("searched (loss)", 99, [0.76, 0.77, 0.78], 0.65)
    text = "\n".join(run_all._sparse_dataset_section("x", {"record": rec, "source": "s"}))
    assert "PARTIAL: 5 schemes" in text
    assert "searched-acc-100kb (98.0 KB) 75.0 % vs last-12 (448.0 KB) 73.0 %" in text and "+2.00 points" in text

"""`microtrain train`: a tiny ImageFolder with the dataset's GIF, metrics JSON, checkpoint, resume,
--scheme files and clear errors."""
from __future__ import annotations

import json

import pytest

from conftest import hymenoptera, model_path, tiny_hymenoptera
from microtrain.cli import main


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    root = hymenoptera()
    out = tiny_hymenoptera(tmp_path_factory.mktemp("ds"), 6, 3)
    (out / "train" / "ants" / "imageNotFound.gif").symlink_to(root / "train" / "ants" / "imageNotFound.gif")
    return out


def test_train_writes_metrics_checkpoint_and_resumes(tiny_dataset, tmp_path, capsys):
    model = str(model_path("mcunet-5fps"))
    common = [model, "--data", str(tiny_dataset), "--epochs", "2", "--views", "2", "--resolution", "64",
              "--batch-size", "4", "--update", "last-layers:2", "--quiet"]
    metrics = tmp_path / "m.json"
    assert main(["train", *common, "--metrics", str(metrics), "--checkpoint", str(tmp_path / "ck"),
                 "--save", str(tmp_path / "trained.json")]) == 0
    m = json.loads(metrics.read_text())
    assert m["n_train"] == 12 and m["n_val"] == 6 and m["mode"] == "qas"
    assert [s["file"].rsplit("/", 1)[-1] for s in m["skipped"]] == ["imageNotFound.gif"]
    assert len(m["history"]) == 2 and 0 <= m["val_acc"] <= 1
    assert "skipped" in capsys.readouterr().err
    assert (tmp_path / "ck" / "state.json").exists() and (tmp_path / "trained.npz").exists()
    from microtrain.models import load_model

    assert load_model(str(tmp_path / "trained.json")).num_classes == 2
    # resuming a finished run evaluates the saved weights again: the same accuracy
    assert main(["train", *common, "--metrics", str(tmp_path / "m2.json"), "--resume", str(tmp_path / "ck")]) == 0
    assert json.loads((tmp_path / "m2.json").read_text())["val_acc"] == m["val_acc"]


def test_train_accepts_scheme_files_and_reports_bad_arguments(tiny_dataset, tmp_path, capsys):
    from microtrain.sparse.scheme import UpdateScheme

    model = str(model_path("mcunet-5fps"))
    scheme = UpdateScheme(n_bias=3, weights={41: 0.5}, name="mine").save(tmp_path / "s.json")
    args = [model, "--data", str(tiny_dataset), "--epochs", "1", "--views", "1", "--resolution", "64", "--quiet",
            "--metrics", str(tmp_path / "m.json")]
    assert main(["train", *args, "--scheme", str(scheme)]) == 0
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["scheme"]["name"] == "mine" and "blocks.13.pointwise2" in m["trained_layers"]
    assert main(["train", *args, "--update", "last-blocks:two"]) == 1
    assert "last-blocks:K" in capsys.readouterr().err
    assert main(["train", *args, "--fp32", "--no-qas"]) == 1
    assert main(["train", *args, "--fp32", "--backward", "int16"]) == 1  # the integer backward is int8 training's
    assert "--backward int16" in capsys.readouterr().err
    assert main(["train", *args, "--scheme", str(scheme), "--backward", "int16"]) == 0
    assert json.loads((tmp_path / "m.json").read_text())["backward"] == "int16"
    assert main(["train", model, "--data", str(tmp_path / "missing"), "--quiet"]) == 1
    assert "not found" in capsys.readouterr().err


def test_a_run_that_collapses_to_chance_is_flagged():
    """History of a real collapse (mcunet-5fps, fp32, digits, lr 0.03, seed 0: the logits saturated and
    training stopped moving at chance) gets a warning naming the lr; healthy or never-learning runs do not."""
    from microtrain.commands.train import collapse_warning

    collapsed = [{"train_acc": a} for a in (0.168, 0.206, 0.234, 0.1, 0.1, 0.1)]
    msg = collapse_warning(collapsed, 10, 0.03)
    assert msg and "23.4 %" in msg and "10.0 %" in msg and "0.03" in msg and "0.01" in msg
    assert collapse_warning([{"train_acc": a} for a in (0.3, 0.6, 0.85)], 10, 0.03) is None
    assert collapse_warning([{"train_acc": a} for a in (0.1, 0.11, 0.1)], 10, 1e-5) is None  # never learned
    assert collapse_warning([{"train_acc": a} for a in (0.9, 0.65)], 2, 0.1) is None  # 2 classes: above 1.2 x chance
    assert collapse_warning([{"train_acc": a} for a in (0.9, 0.5)], 2, 0.1)

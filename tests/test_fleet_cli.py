"""`microtrain fleet`: strict one-line errors before any work, a tiny fleet end to end through the CLI,
and core microtrain never importing Flower."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import model_path, tiny_hymenoptera
from microtrain.cli import main


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    return tiny_hymenoptera(tmp_path_factory.mktemp("fleet-ds"), 6, 4)


@pytest.mark.parametrize("extra, message", [
    (["--partition", "dirichlet:0"], "--partition 'dirichlet:0'"),
    (["--partition", "shards"], "expected iid | dirichlet:A"),
    (["--clients", "13"], "--clients 13"),
    (["--scheme", "no-such-scheme"], "no shipped scheme 'no-such-scheme'"),
    (["--data", "/nonexistent/folder"], "/nonexistent/folder/train: missing"),
])
def test_bad_arguments_fail_before_any_work(tiny_dataset, capsys, extra, message):
    args = ["fleet", str(model_path("mcunet-5fps")), "--data", str(tiny_dataset), "--clients", "2", "--rounds", "1",
            "--scheme", "mcunet-5fps-49kb"]
    for i in range(0, len(extra), 2):
        if extra[i] in args:
            args[args.index(extra[i]) + 1] = extra[i + 1]
        else:
            args += extra[i : i + 2]
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


@pytest.mark.parametrize("flag, value", [("--dropout", "1"), ("--dropout", "-0.1"), ("--lr", "0"), ("--rounds", "0")])
def test_bad_numbers_are_usage_errors(tiny_dataset, flag, value, capsys):
    args = ["fleet", "mcunet-5fps", "--data", str(tiny_dataset), "--clients", "2", "--rounds", "1",
            "--scheme", "mcunet-5fps-49kb", flag, value]
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 2 and flag in capsys.readouterr().err


def test_core_microtrain_does_not_import_flower():
    code = ("import sys, microtrain.cli, microtrain.runtime.trainer, microtrain.codegen; "
            "microtrain.cli.build_parser(); print('flwr' in sys.modules or 'ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_fleet_command_end_to_end(tiny_dataset, tmp_path, capsys):
    metrics = tmp_path / "fleet.json"
    assert main(["fleet", str(model_path("mcunet-5fps")), "--data", str(tiny_dataset), "--clients", "2",
                 "--rounds", "2", "--scheme", "mcunet-5fps-49kb", "--partition", "dirichlet:0.5", "--dropout", "0.3",
                 "--resolution", "32", "--views", "2", "--batch-size", "4", "--seed", "1", "--quiet",
                 "--metrics", str(metrics), "--cache", str(tmp_path / "cache")]) == 0
    out = capsys.readouterr().out
    m = json.loads(metrics.read_text())
    assert [r["round"] for r in m["rounds"]] == [0, 1, 2] and sorted(m["shard_sizes"]) != [] and sum(m["shard_sizes"]) == 12
    assert all(r["accepted"] + r["dropped"] == 2 and r["rejected"] == 0 for r in m["rounds"][1:])
    assert m["upload_bytes_per_client_per_round"] < m["whole_model_bytes"] / 10
    assert 0 <= m["centralised"]["val_acc"] <= 1 and m["centralised"]["epochs"] == 2
    assert "upload per client per round" in out and "centralised (2 epochs" in out

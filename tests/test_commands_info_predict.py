"""`microtrain info` and `microtrain predict` on the upstream models."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from conftest import MODEL_NAMES, hymenoptera, model_path
from microtrain.cli import main


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_info_mcunet_total_macs_is_22_6_m(capsys):
    code, out, _ = run_cli(capsys, "info", model_path("mcunet-5fps"))
    assert code == 0
    m = re.search(r"total MACs:\s+([\d.]+) M \(([\d,]+)\)", out)
    assert m, out[-500:]
    assert m.group(1) == "22.6"
    assert abs(int(m.group(2).replace(",", "")) / 1e6 - 22.6) < 0.05
    assert "blocks.13.pointwise2" in out and "classifier" in out


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_info_json_totals_add_up(capsys, name):
    code, out, _ = run_cli(capsys, "info", model_path(name), "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["totals"]["macs"] == sum(r["macs"] for r in doc["layers"]) > 10e6
    assert doc["totals"]["params"] == sum(r["params"] for r in doc["layers"]) > 100_000
    assert doc["layers"][0]["in"] == [[128, 128, 3]] and doc["layers"][-1]["out"] == [1, 1, 1000]
    assert all(r["act_bytes"] == int(np.prod(r["out"])) for r in doc["layers"])  # int8: one byte each


def test_info_resolution_scales_macs(capsys):
    _, out, _ = run_cli(capsys, "info", model_path("mcunet-5fps"), "--json", "--resolution", 64)
    assert json.loads(out)["totals"]["macs"] < 22.6e6 / 3


def test_predict_json_fields_and_exact_logits(capsys, tmp_path):
    from microtrain.frontends.mcunet_pkl import load_mcunet_pkl
    from microtrain.runtime.forward import run_int8
    from microtrain.runtime.images import load_int8

    ants = sorted((hymenoptera() / "val" / "ants").glob("*.jpg"))[:2]
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    code, out, err = run_cli(capsys, "predict", model_path("mcunet-5fps"), *ants, bad, "--top", 3, "--json")
    assert code == 1 and "broken.jpg" in err  # reported, not fatal
    doc = json.loads(out)
    assert doc["classes"] == 1000 and doc["resolution"] == 128
    assert [r["file"] for r in doc["images"]] == [str(p) for p in [*ants, bad]]
    assert "error" in doc["images"][2]
    expected = run_int8(load_mcunet_pkl(model_path("mcunet-5fps")), load_int8(ants, 128)).reshape(2, -1)
    for r, q in zip(doc["images"], expected):
        assert len(r["logits"]) == 1000 and r["logits"] == q.tolist()
        assert len(r["top"]) == 3 and len(r["labels"]) == 3
        assert [r["logits"][i] for i in r["top"]] == sorted(r["logits"], reverse=True)[:3]


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_predict_table(capsys, name):
    bee = sorted((hymenoptera() / "val" / "bees").glob("*.jpg"))[0]
    code, out, _ = run_cli(capsys, "predict", "--top", 2, model_path(name), bee)
    assert code == 0
    ranks = re.findall(r"^\s+(\d)\.\s+(\d+)\s+\S", out, re.M)
    assert [r[0] for r in ranks] == ["1", "2"] and all(0 <= int(r[1]) < 1000 for r in ranks)


def test_help_text(capsys):
    for verb in ("info", "predict"):
        with pytest.raises(SystemExit) as e:
            main([verb, "--help"])
        assert e.value.code == 0
        assert "usage: microtrain " + verb in capsys.readouterr().out


def test_unknown_model_is_a_clean_error(capsys, tmp_path):
    code, _, err = run_cli(capsys, "info", tmp_path / "nope.pkl")
    assert code == 1 and "nope.pkl" in err and "Traceback" not in err

"""A short, seeded fuzz run of every user-file loader (the 10-minute run: benchmarks/fuzz_loaders.py), plus
regression inputs for the crashes the fuzzer found."""
from __future__ import annotations

import importlib.util
import zlib

import numpy as np
import pytest

from conftest import REPO, model_path
from microtrain.errors import GraphError, ModelFormatError

spec = importlib.util.spec_from_file_location("fuzz_loaders", REPO / "benchmarks" / "fuzz_loaders.py")
fuzz = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fuzz)


def test_short_fuzz_run_finds_only_clear_errors(tmp_path):
    model_path("mcunet-5fps")  # the real-archive target needs it (fails under CI when missing)
    res = fuzz.run_fuzz(seconds=20, seed=12345, timeout=5.0, out_dir=tmp_path, models_dir=model_path("mcunet-5fps").parent,
                        log=lambda *a: None)
    failures = {t: r["failures"] for t, r in res["targets"].items() if r["failures"]}
    assert not failures, failures
    for t, r in res["targets"].items():
        assert r["inputs"] >= 20, (t, r["inputs"])  # every target really ran
        assert r["harness_errors"] == 0
        assert r["hangs"] == 0
        assert r["ok"] + sum(r["errors"].values()) == r["inputs"]
        if t != "dataset-image":  # decode_checked reports a reason instead of raising
            assert sum(r["errors"].values()) > 0, t


def test_mutators_are_deterministic_and_change_the_input():
    data = bytes(range(256)) * 4
    a = fuzz.mutate_bytes(data, np.random.default_rng(7))
    assert a == fuzz.mutate_bytes(data, np.random.default_rng(7)) and a != data
    tree = {"a": [1, 2, {"b": np.arange(3)}], "c": "x"}
    m = fuzz.mutate_tree(tree, np.random.default_rng(3), json_only=False)
    assert tree == {"a": [1, 2, {"b": tree["a"][2]["b"]}], "c": "x"}  # the original is untouched (deep copy)
    assert repr(m) != repr(tree)


# ----- regressions: inputs the fuzzer turned into bare exceptions before the fixes ------------------------------------------
def _archive(tmp_path, obj=None, pickled=None):
    path = tmp_path / "m.pkl"
    path.write_bytes(fuzz.archive_bytes(obj, pickled))
    return path


def test_huge_memo_index_is_refused_quickly(tmp_path):
    """LONG_BINPUT 2**31-ish made the C unpickler allocate and clear a multi-GB memo (a hang)."""
    from microtrain.frontends.mcunet_pkl import read_model_dict

    evil = b"\x80\x02}r\x71\x38\x62\x58" + b"." # PROTO 2, EMPTY_DICT, LONG_BINPUT 1482833777, STOP
    with pytest.raises(ModelFormatError, match="memo index"):
        read_model_dict(_archive(tmp_path, pickled=evil))


@pytest.mark.parametrize("where,key,value", [
    ("first_conv.params", "x_zero", float("nan")),       # int(nan): ValueError
    ("first_conv.params", "y_zero", float("inf")),       # int(inf): OverflowError
    ("first_conv", "kernel_size", [[3], 3]),            # int([3]): TypeError
    ("first_conv", "kernel_size", ("3", "x")),          # int('x'): ValueError
    ("blocks.0.depthwise", "out_shape", [8]),           # int([8]): TypeError
])
def test_malformed_model_fields_raise_model_format_error(tmp_path, where, key, value):
    from microtrain.frontends.mcunet_pkl import load_mcunet_pkl

    d = fuzz.synthetic_model(np.random.default_rng(0))
    load_mcunet_pkl(_archive(tmp_path, d))  # the unmodified model loads
    node = d
    for part in where.split("."):
        node = node[int(part)] if part.isdigit() else node[part]
    node[key] = value
    with pytest.raises(ModelFormatError, match=key):
        load_mcunet_pkl(_archive(tmp_path, d))


@pytest.mark.parametrize("attr,value", [("stride", "2"), ("padding", None), ("kernel", 3), ("groups", {})])
def test_malformed_graph_attributes_raise_graph_error(tmp_path, attr, value):
    import json

    from microtrain.ir.serialize import graph_to_dict, load_graph, save_graph

    g = fuzz.small_graph(np.random.default_rng(0))
    path = save_graph(g, tmp_path / "g.json")
    doc = graph_to_dict(g)
    doc["nodes"][1]["attrs"][attr] = value
    path.write_text(json.dumps(doc))
    with pytest.raises(GraphError, match=doc["nodes"][1]["name"]):
        load_graph(path)


def test_overflowing_tensor_shape_raises_graph_error(tmp_path):
    import json

    from microtrain.ir.serialize import graph_to_dict, load_graph, save_graph

    g = fuzz.small_graph(np.random.default_rng(0))
    path = save_graph(g, tmp_path / "g.json")
    doc = graph_to_dict(g)
    doc["tensors"][0]["shape"] = [16, float("inf"), 3]
    path.write_text(json.dumps(doc))
    with pytest.raises(GraphError, match="malformed"):
        load_graph(path)


def test_decompression_bomb_is_a_dataset_error(tmp_path):
    from PIL import Image

    from microtrain.errors import DatasetError
    from microtrain.runtime.images import decode_rgb

    path = tmp_path / "bomb.png"
    Image.new("L", (1, 1)).save(path)
    raw = bytearray(path.read_bytes())
    raw[16:24] = (60000).to_bytes(4, "big") * 2  # IHDR claims 60000 x 60000 pixels
    raw[29:33] = zlib.crc32(bytes(raw[12:29])).to_bytes(4, "big")  # with a valid chunk CRC
    path.write_bytes(bytes(raw))
    with pytest.raises(DatasetError, match="bomb.png"):
        decode_rgb(path)


@pytest.mark.parametrize("text", ["[" * 100000 + "]" * 100000,                      # RecursionError in json
                                  '{"format": "microtrain-scheme", "n_bias": ' + "1" * 5000 + "}",  # int digit limit
                                  '{"format": "microtrain-graph", "version": 1, "x": "\udcff"}'])
def test_hostile_json_is_a_clear_error_for_graphs_and_schemes(tmp_path, text):
    from microtrain.errors import SchemeError
    from microtrain.ir.serialize import load_graph
    from microtrain.sparse.scheme import UpdateScheme

    path = tmp_path / "x.json"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(GraphError):
        load_graph(path)
    with pytest.raises(SchemeError):
        UpdateScheme.load(path)


def test_scheme_ratio_too_large_for_a_float_is_a_scheme_error():
    from microtrain.errors import SchemeError
    from microtrain.sparse.scheme import UpdateScheme

    with pytest.raises(SchemeError, match="malformed"):
        UpdateScheme.from_dict({"format": "microtrain-scheme", "n_bias": 0, "weights": {"0": "9" * 400}})


def test_npz_with_unknown_compression_is_a_graph_error(tmp_path):
    from microtrain.ir.serialize import load_graph, save_graph

    path = save_graph(fuzz.small_graph(np.random.default_rng(0)), tmp_path / "g.json")
    raw = bytearray(path.with_suffix(".npz").read_bytes())
    local, central = raw.find(b"PK\x03\x04"), raw.find(b"PK\x01\x02")
    raw[local + 8:local + 10] = raw[central + 10:central + 12] = (99).to_bytes(2, "little")  # method 99
    path.with_suffix(".npz").write_bytes(bytes(raw))
    with pytest.raises(GraphError, match="NotImplementedError"):
        load_graph(path)

"""The fleet over Flower: the strategy rejects and counts malformed replies and never lets them change the
global model, dropped clients are counted, and a 3-client Flower simulation (Ray) runs end to end with one
client sending a malformed update: its result equals replaying the same client fits and the aggregation by
hand, outside Flower. Needs `microtrain[fleet]` (CI installs it)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Error, Message, Metadata, MetricRecord, RecordDict

from conftest import model_path
from microtrain.fleet.aggregate import aggregate
from microtrain.fleet.client import from_record, to_record
from microtrain.fleet.engine import LocalEngine, fleet_model
from microtrain.fleet.strategy import SparseInt8FedAvg
from microtrain.runtime.datasets import ImageData
from microtrain.runtime.trainer import prefix_features
from microtrain.sparse.fixtures import load_fixture

_NODE = iter(range(1000, 10**6))


@pytest.fixture(scope="module")
def base():
    from microtrain.frontends.mcunet_pkl import load_mcunet_pkl

    return load_mcunet_pkl(model_path("mcunet-5fps"))


@pytest.fixture(scope="module")
def engine(base):
    g = fleet_model(base, 3, 32)
    return LocalEngine(g, load_fixture("mcunet-5fps-49kb").resolve(g))


def reply(content=None, error=None):
    m = Metadata(run_id=1, message_id="", src_node_id=next(_NODE), dst_node_id=0, reply_to_message_id="",
                 group_id="", created_at=0.0, ttl=60.0, message_type="train")
    return Message(error=error, metadata=m) if error else Message(content, metadata=m)


def update_reply(arrays, n):
    return reply(RecordDict({"arrays": to_record(arrays), "metrics": MetricRecord({"num-examples": n})}))


def client_update(layout, g, seed):
    rng = np.random.default_rng(seed)
    a = {k: v.copy() for k, v in g.items()}
    for k, e in layout.by_key.items():
        if e.param in ("weight", "bias"):
            a[k] = np.clip(a[k].astype(np.int64) + rng.integers(-3, 4, e.shape), -128 if e.param == "weight" else -2**31,
                           127 if e.param == "weight" else 2**31 - 1).astype(e.dtype)
    return a


def _strategy(engine):
    s = SparseInt8FedAvg(engine.layout, max_examples=100)
    s.current = engine.layout.extract(engine.graph)
    return s


def test_strategy_aggregates_only_well_formed_replies(engine):
    s = _strategy(engine)
    g = s.current
    good1, good2 = client_update(engine.layout, g, 1), client_update(engine.layout, g, 2)
    key = "classifier.weight"
    bad_record = ArrayRecord({k: Array(v) for k, v in good1.items()})
    bad_record[key] = Array(dtype="int8", shape=(3, 160, 1, 1), stype="numpy.ndarray", data=b"garbage")
    malformed = [
        update_reply({k: v for k, v in good1.items() if k != key}, 10),                 # missing array
        update_reply(dict(good1, **{key: good1[key].astype(np.float32)}), 10),         # wrong dtype
        update_reply(dict(good1, layout_id=np.array([7], np.uint32)), 10),              # another layout
        update_reply(dict(good1, **{"classifier.w_scales": np.full(3, np.nan, np.float32)}), 10),  # NaN
        update_reply(good1, 10**6),                                                     # out-of-range count
        update_reply(good1, 0),
        update_reply(good1, 2.5),
        reply(RecordDict({"metrics": MetricRecord({"num-examples": 10})})),             # no arrays at all
        reply(RecordDict({"arrays": bad_record, "metrics": MetricRecord({"num-examples": 10})})),  # undecodable
    ]
    dropped = [reply(error=Error(code=0, reason="client went away"))]
    arrays, metrics = s.aggregate_train(1, [update_reply(good1, 10), *malformed, update_reply(good2, 30), *dropped])
    assert (metrics["accepted"], metrics["rejected"], metrics["dropped"]) == (2, len(malformed), 1)
    expected = aggregate(engine.layout, g, [(good1, 10), (good2, 30)])
    got = from_record(arrays)
    assert all(np.array_equal(got[k], expected[k]) for k in expected)
    assert not np.array_equal(got[key], g[key])  # the good updates did move the model
    reasons = [r["reason"] for r in s.rounds[-1]["rejections"]]
    assert any("missing array" in r for r in reasons) and any("layout id" in r for r in reasons)
    assert any("num-examples" in r for r in reasons) and any("unreadable" in r for r in reasons)


def test_a_round_of_only_malformed_or_dropped_replies_leaves_the_global_model(engine):
    s = _strategy(engine)
    g = {k: v.copy() for k, v in s.current.items()}
    bad = client_update(engine.layout, g, 3)
    bad["classifier.bias"] = bad["classifier.bias"].astype(np.int64)
    arrays, metrics = s.aggregate_train(1, [update_reply(bad, 5), reply(error=Error(code=0, reason="gone"))])
    assert arrays is None and (metrics["rejected"], metrics["dropped"], metrics["accepted"]) == (1, 1, 0)
    assert all(np.array_equal(s.current[k], g[k]) for k in g)  # Flower keeps the previous global arrays


def _synthetic(n, seed, res=32):
    """Three classes told apart by the mean of the red channel."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    x = rng.integers(-60, 60, (n, 2, res, res, 3))
    x[..., 0] += 50 * (labels[:, None, None, None] - 1)
    return ImageData(x.astype(np.int8), labels, ["a", "b", "c"])


def test_three_client_flower_simulation_with_a_malformed_client(base, tmp_path):
    from flwr.clientapp import ClientApp

    from microtrain.fleet.client import train_reply
    from microtrain.fleet.simulation import FleetSettings, _worker_state, prepare, simulate, simulated_setup

    train, val = _synthetic(24, 0), _synthetic(12, 1)
    settings = FleetSettings(clients=3, rounds=2, partition="dirichlet:1", lr=0.03, batch_size=4, seed=5)
    prep = prepare(base, load_fixture("mcunet-5fps-49kb"), train, val, settings, cache=tmp_path)
    setup = simulated_setup(str(prep.folder))
    app = ClientApp()

    @app.train()
    def train_fn(msg, context):
        out = train_reply(msg, setup(context))
        if int(context.node_config["partition-id"]) == 2:  # this device sends NaN scales
            out.content["arrays"]["classifier.w_scales"] = Array(np.full(3, np.nan, np.float32))
        return out

    result = simulate(prep, settings, client_app=app)
    rounds = result["rounds"]
    assert [r["round"] for r in rounds] == [0, 1, 2]
    assert [(r["accepted"], r["rejected"], r["dropped"]) for r in rounds[1:]] == [(2, 1, 0), (2, 1, 0)]
    assert all(r["upload_bytes_per_client"] == prep.engine.layout.update_bytes for r in rounds[1:])
    n_arrays = len(prep.engine.layout.keys)  # each array travels as an .npy with a 128-byte header
    assert all(r["upload_wire_bytes_per_client"] == prep.engine.layout.update_bytes + 128 * n_arrays
               for r in rounds[1:])
    # replay outside Flower: clients 0 and 1 fit from the global model, the server averages
    engine, feats, labels, parts = _worker_state(str(prep.folder))
    g = engine.layout.extract(prep.graph)
    for r in range(2):
        ups = []
        for c in (0, 1):
            idx = parts[f"c{c}"]
            arrays, m = engine.fit(g, {t: np.asarray(a[idx]) for t, a in feats.items()}, labels[idx], epochs=1,
                                   lr=0.03, round_index=r, rounds=2, seed=5, client=c)
            ups.append((arrays, m["num-examples"]))
        g = aggregate(engine.layout, g, ups)
    assert all(np.array_equal(result["final"][k], g[k]) for k in g)
    assert not np.array_equal(g["classifier.weight"], engine.layout.extract(prep.graph)["classifier.weight"])


def test_cached_features_and_runs_are_keyed_by_everything_that_changes_them(base, tmp_path):
    """The feature cache is keyed by the data's content and the prefix's numbers (not only the parameters: a
    tensor's quantisation changes the features), a run folder also by the labels it stores: nothing stale is
    reused."""
    from microtrain.fleet.simulation import FleetSettings, prepare
    from microtrain.ir.graph import QuantParams

    train, val = _synthetic(9, 0), _synthetic(6, 1)
    settings = FleetSettings(clients=2, rounds=1, batch_size=4, seed=5)
    scheme = load_fixture("mcunet-5fps-49kb")

    def prep(graph, train):
        p = prepare(graph, scheme, train, val, settings, cache=tmp_path)
        spec = json.loads((p.folder / "engine.json").read_text())
        return p.folder, Path(spec["features"]), p

    first = prep(base, train)
    assert prep(base, train)[:2] == first[:2]  # the same inputs reuse both
    requantised = base.copy()  # same parameters: only the first conv's output quantisation differs
    t = requantised.tensors[requantised.nodes[0].output]
    t.quant = QuantParams(t.quant.scale * 1.5, t.quant.zero_point)
    again = prep(requantised, train)
    assert again[1] != first[1] and again[0] != first[0]
    fresh = prefix_features(again[2].graph, train, again[2].engine.tg.n_prefix, "int8")
    stored = np.load(again[1] / "train_0.npy")
    assert np.array_equal(stored, fresh[again[2].engine.boundary[0]])
    relabelled = ImageData(train.views, (train.labels + 1) % 3, train.classes)  # same images, other labels
    moved = prep(base, relabelled)
    assert moved[1] == first[1] and moved[0] != first[0]  # the features are the images', the run stores labels
    assert np.array_equal(np.load(moved[0] / "labels.npy"), relabelled.labels)

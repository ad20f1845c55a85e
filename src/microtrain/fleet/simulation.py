"""A simulated fleet on one machine: Flower's simulation engine (Ray) runs N ClientApps against a ServerApp
with `SparseInt8FedAvg`, and the same data trains a centralised baseline (docs/fleet.md).

`prepare` does the expensive part once, in the driver: it loads the images, builds the fleet model (new
head), computes the frozen-prefix features of every training and validation image (trainer.prefix_features)
and writes them, the model and the pinned scheme to a cache folder as .npy / JSON (never pickle). Each Ray
worker builds its LocalEngine once and memory-maps the features, so a client's round costs only the
training of the trained suffix on its shard.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from flwr.app import ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.simulation import run_simulation

from ..cache import cache_root
from ..errors import MicrotrainError
from ..ir.graph import prefix_fingerprints
from ..ir.serialize import load_graph, save_graph
from ..runtime.datasets import ImageData
from ..runtime.trainer import prefix_features
from ..sparse.scheme import UpdateScheme
from .client import ClientSetup, from_record, make_client_app, to_record
from .engine import LocalEngine, fleet_model
from .partition import partition
from .strategy import SparseInt8FedAvg

DEFAULT_CACHE = cache_root() / "fleet"


@dataclass
class FleetSettings:
    clients: int
    rounds: int
    partition: str = "iid"
    local_epochs: int = 1
    lr: float = 0.03
    batch_size: int = 32
    dropout: float = 0.0
    seed: int = 0
    qas: bool = True
    rounding: str = "stochastic"


@dataclass
class Prepared:
    folder: Path  # the cache folder the clients read
    engine: LocalEngine  # the driver's engine: server-side evaluation
    graph: object  # the fleet model (new head), before any training
    scheme: UpdateScheme  # pinned to `graph`
    val_feats: dict
    val_labels: np.ndarray
    shard_sizes: list = field(default_factory=list)


def fleet_engine(graph, scheme: UpdateScheme, num_classes: int, resolution: int, *, qas: bool = True,
                 rounding: str = "stochastic", batch_size: int = 32) -> tuple[LocalEngine, UpdateScheme]:
    """The engine of the fleet model (new head) and the scheme pinned to it: every end builds the same."""
    g = fleet_model(graph, num_classes, resolution)
    scheme = scheme.pinned(g)
    return LocalEngine(g, scheme.resolve(g), qas=qas, rounding=rounding, batch_size=batch_size), scheme


def train_config(settings: FleetSettings) -> dict:
    """What every train message tells the clients (ConfigRecord values)."""
    return {"lr": float(settings.lr), "local-epochs": int(settings.local_epochs), "rounds": int(settings.rounds),
            "seed": int(settings.seed), "dropout": float(settings.dropout)}


# ----- driver side --------------------------------------------------------------------------------------------
def _digest(*parts) -> str:
    return hashlib.blake2b(repr(parts).encode(), digest_size=10).hexdigest()


def _labels_digest(labels: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(labels, np.int64).data, digest_size=16).hexdigest()


def _features(g, data: ImageData, stop: int, folder: Path, name: str, boundary: list[str], progress: bool) -> dict:
    """Frozen-prefix features of every view: memory-mapped from `folder` when a run wrote them, else computed
    (trainer.prefix_features) and written there as .npy."""
    files = [folder / f"{name}_{i}.npy" for i in range(len(boundary))]
    if not all(f.exists() for f in files):
        feats = prefix_features(g, data, stop, "int8", progress=progress)
        folder.mkdir(parents=True, exist_ok=True)
        for f, t in zip(files, boundary):
            np.save(f.with_suffix(".tmp.npy"), feats[t], allow_pickle=False)
            f.with_suffix(".tmp.npy").replace(f)  # complete files only
    return {t: np.load(f, mmap_mode="r", allow_pickle=False) for f, t in zip(files, boundary)}


def prepare(graph, scheme: UpdateScheme, train: ImageData, val: ImageData, settings: FleetSettings,
            cache: Path = DEFAULT_CACHE, progress: bool = False) -> Prepared:
    engine, scheme = fleet_engine(graph, scheme, max(train.num_classes, int(train.labels.max()) + 1),
                                  train.views.shape[2], qas=settings.qas, rounding=settings.rounding,
                                  batch_size=settings.batch_size)
    g = engine.graph.copy()  # before any round: the engine's own graph changes as it trains
    stop = engine.tg.n_prefix
    # features depend on the images (content hashes) and the numbers of the frozen prefix (ir.graph's
    # fingerprint: every node's attributes, quantisation and parameters), as the trainer's prefix cache; a run
    # folder also on the whole fleet model, the labels it stores and the fleet's shape
    fps = prefix_fingerprints(g)
    features = Path(cache) / "features" / _digest(train.fingerprint(), val.fingerprint(), fps[stop], engine.boundary)
    _features(g, train, stop, features, "train", engine.boundary, progress)
    val_feats = _features(g, val, stop, features, "val", engine.boundary, progress)
    parts = partition(train.labels, settings.clients, settings.partition, settings.seed)
    folder = Path(cache) / _digest(features.name, fps[-1], _labels_digest(train.labels), scheme.to_dict(),
                                   settings.partition, settings.clients, settings.seed, settings.qas,
                                   settings.rounding, settings.batch_size)
    if not (folder / "done").exists():
        folder.mkdir(parents=True, exist_ok=True)
        save_graph(g, folder / "model.json")
        scheme.save(folder / "scheme.json")
        np.save(folder / "labels.npy", train.labels, allow_pickle=False)
        np.savez(folder / "clients.npz", **{f"c{k}": p for k, p in enumerate(parts)})
        (folder / "engine.json").write_text(json.dumps({"qas": settings.qas, "rounding": settings.rounding,
                                                        "batch_size": settings.batch_size,
                                                        "boundary": engine.boundary, "features": str(features)}))
        (folder / "done").write_text("complete\n")  # written last: a half-written folder is rebuilt
    return Prepared(folder, engine, g, scheme, val_feats, val.labels, [len(p) for p in parts])


# ----- worker side (Ray actors) --------------------------------------------------------------------------------
_WORKER: dict[str, tuple] = {}


def _worker_state(folder: str):
    """(engine, features, labels, partition) of a cache folder, built once per worker process."""
    if folder not in _WORKER:
        d = Path(folder)
        spec = json.loads((d / "engine.json").read_text())
        g = load_graph(d / "model.json")
        engine = LocalEngine(g, UpdateScheme.load(d / "scheme.json").resolve(g), qas=spec["qas"],
                             rounding=spec["rounding"], batch_size=spec["batch_size"])
        feats = {t: np.load(Path(spec["features"]) / f"train_{i}.npy", mmap_mode="r", allow_pickle=False)
                 for i, t in enumerate(spec["boundary"])}
        with np.load(d / "clients.npz", allow_pickle=False) as z:
            parts = {k: z[k] for k in z.files}
        _WORKER[folder] = (engine, feats, np.load(d / "labels.npy", allow_pickle=False), parts)
    return _WORKER[folder]


def simulated_setup(folder: str):
    """ClientSetup factory of simulated client `partition-id` (node config) reading the cache folder."""
    def setup(context):
        engine, feats, labels, parts = _worker_state(folder)
        cid = int(context.node_config["partition-id"])
        idx = parts[f"c{cid}"]
        return ClientSetup(engine, {t: np.asarray(a[idx]) for t, a in feats.items()}, labels[idx], cid)

    return setup


# ----- the run ------------------------------------------------------------------------------------------------
def simulate(prep: Prepared, settings: FleetSettings, log=None, client_app=None) -> dict:
    """Run the simulated fleet; returns per-round records and the final global update."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # Ray workers inherit it: 1 BLAS thread per client
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")  # no accelerators here; silences a warning
    for name in ("flwr", "ray"):
        logging.getLogger(name).setLevel(logging.ERROR)
    layout = prep.engine.layout
    initial = layout.extract(prep.engine.graph)
    n = settings.clients
    strategy = SparseInt8FedAvg(layout, max_examples=max(prep.shard_sizes), fraction_train=1.0,
                                min_train_nodes=n, min_available_nodes=n)
    rounds, out, t0 = [], {}, time.monotonic()

    def evaluate_fn(server_round: int, arrays) -> MetricRecord:
        acc, loss = prep.engine.score(from_record(arrays), prep.val_feats, prep.val_labels)
        rec = {"round": server_round, "val_acc": acc, "val_loss": loss, "seconds": round(time.monotonic() - t0, 1)}
        if server_round and strategy.rounds:
            s = strategy.rounds[-1]
            rec.update({k: s[k] for k in ("accepted", "rejected", "dropped", "rejections", "samples",
                                          "upload_wire_bytes_per_client")})
            rec["upload_bytes_per_client"] = layout.update_bytes
            rec["upload_bytes"] = layout.update_bytes * s["accepted"]
        rounds.append(rec)
        if log:
            log(rec)
        return MetricRecord({"accuracy": acc, "loss": loss})

    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        result = strategy.start(grid, to_record(initial), num_rounds=settings.rounds,
                                train_config=ConfigRecord(train_config(settings)), evaluate_fn=evaluate_fn)
        out["final"] = from_record(result.arrays) if result.arrays is not None else initial

    app = client_app or make_client_app(simulated_setup(str(prep.folder)))
    backend = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
               "init_args": {"address": "local", "num_cpus": 2, "include_dashboard": False, "logging_level": "ERROR",
                             "log_to_driver": False}}
    run_simulation(server_app, app, num_supernodes=n, backend_config=backend)
    if "final" not in out or len(rounds) != settings.rounds + 1:
        raise MicrotrainError(f"the Flower simulation stopped after {max(len(rounds) - 1, 0)} of {settings.rounds} "
                              "rounds (see the log above)")
    return {"rounds": rounds, "final": out["final"], "seconds": time.monotonic() - t0}


def centralised(prep: Prepared, settings: FleetSettings) -> dict:
    """The baseline: the same local trainer given all the training data for rounds x local epochs (fine_tune's
    numerics and schedule), from the same start: only the federation differs."""
    t0 = time.monotonic()
    engine, feats, labels, _ = _worker_state(str(prep.folder))
    epochs = settings.rounds * settings.local_epochs
    arrays, metrics = engine.fit(engine.layout.extract(prep.graph), feats, labels, epochs=epochs, lr=settings.lr,
                                 round_index=0, rounds=1, seed=settings.seed, client=0)
    acc, loss = prep.engine.score(arrays, prep.val_feats, prep.val_labels)
    return {"val_acc": acc, "val_loss": loss, "train_loss": metrics["train-loss"], "epochs": epochs,
            "seconds": round(time.monotonic() - t0, 1)}


def model_bytes(graph) -> int:
    """Bytes of every parameter of the model (what sending the whole model would cost)."""
    return sum(int(a.nbytes) for n in graph.nodes for a in n.params.values())



def run_fleet(graph, scheme: UpdateScheme, train: ImageData, val: ImageData, settings: FleetSettings, *,
              cache: Path = DEFAULT_CACHE, baseline: bool | dict = True, log=None, progress: bool = False) -> dict:
    """Prepare, simulate and (with `baseline`) train the centralised baseline; a JSON-ready report.
    `baseline` may also be the result of an earlier `centralised` run on the same data and settings."""
    prep = prepare(graph, scheme, train, val, settings, cache=cache, progress=progress)
    layout = prep.engine.layout
    fleet = simulate(prep, settings, log=log)
    report = {
        "model": graph.name, "scheme": prep.scheme.to_dict(), "settings": asdict(settings),
        "n_train": len(train), "n_val": len(val), "classes": list(train.classes),
        "shard_sizes": prep.shard_sizes, "layout_id": f"{layout.layout_id:#010x}",
        "trained_param_bytes": layout.param_bytes, "upload_bytes_per_client_per_round": layout.update_bytes,
        "upload_wire_bytes_per_client_per_round": max(r.get("upload_wire_bytes_per_client", 0) for r in fleet["rounds"]),
        "download_bytes_per_client_per_round": layout.update_bytes, "whole_model_bytes": model_bytes(prep.graph),
        "rounds": fleet["rounds"], "fleet_val_acc": fleet["rounds"][-1]["val_acc"],
        "fleet_seconds": round(fleet["seconds"], 1),
        "rejected_total": sum(r.get("rejected", 0) for r in fleet["rounds"]),
        "dropped_total": sum(r.get("dropped", 0) for r in fleet["rounds"]),
    }
    if baseline:
        report["centralised"] = baseline if isinstance(baseline, dict) else centralised(prep, settings)
        report["fleet_minus_centralised_points"] = 100 * (report["fleet_val_acc"] - report["centralised"]["val_acc"])
    return report

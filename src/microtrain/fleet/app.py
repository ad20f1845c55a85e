"""The fleet as a Flower App for a real network: `server_app` runs under a SuperLink, `client_app` on every
SuperNode (a device, or the host that speaks for one). Both read the run config of the app's pyproject.toml
(examples/fleet-app/pyproject.toml: model, scheme, classes, rounds, lr, ...); a SuperNode's node config gives
its own image folder (`data-dir`, class sub-folders) and its number (`client`, seeds its rounding).
README "A fleet on a real network" has the command lines.

Each client computes the frozen-prefix features of its own images (trainer.prefix_features) and sends only
the trained slices; the server checks, counts and averages them exactly as in the simulation.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from flwr.app import ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp

from ..models import load_model
from ..runtime.datasets import load_image_folder
from ..runtime.trainer import prefix_features
from ..sparse.fixtures import load_scheme
from .client import ClientSetup, from_record, make_client_app, to_record
from .engine import LocalEngine
from .simulation import FleetSettings, fleet_engine, train_config
from .strategy import SparseInt8FedAvg


def _engine(cfg) -> tuple[LocalEngine, list[str]]:
    classes = [c.strip() for c in str(cfg["classes"]).split(",") if c.strip()]
    graph = load_model(str(cfg["model"]))
    res = int(cfg.get("resolution", 0)) or graph.resolution
    engine, _ = fleet_engine(graph, load_scheme(str(cfg["scheme"])), len(classes), res,
                             batch_size=int(cfg.get("batch-size", 32)))
    return engine, classes


def _device_setup(context: Context) -> ClientSetup:
    cfg, node = context.run_config, context.node_config
    engine, classes = _engine(cfg)
    data = load_image_folder(Path(str(node["data-dir"])), engine.graph.resolution, views=int(cfg.get("views", 2)),
                             seed=int(cfg.get("seed", 0)), classes=classes)
    feats = prefix_features(engine.graph, data, engine.tg.n_prefix, "int8")
    return ClientSetup(engine, {t: feats[t] for t in engine.boundary}, data.labels, int(node.get("client", 0)))


client_app = make_client_app(_device_setup)
server_app = ServerApp()


@server_app.main()
def _server(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    engine, classes = _engine(cfg)
    settings = FleetSettings(clients=int(cfg["min-clients"]), rounds=int(cfg["rounds"]),
                             local_epochs=int(cfg.get("local-epochs", 1)), lr=float(cfg.get("lr", 0.03)),
                             seed=int(cfg.get("seed", 0)))
    strategy = SparseInt8FedAvg(engine.layout, fraction_train=1.0, min_train_nodes=settings.clients,
                                min_available_nodes=settings.clients)
    val = str(cfg.get("val-dir", ""))
    evaluate_fn = None
    if val:
        data = load_image_folder(Path(val), engine.graph.resolution, classes=classes)
        feats = prefix_features(engine.graph, data, engine.tg.n_prefix, "int8")

        def evaluate_fn(server_round, arrays):
            acc, loss = engine.score(from_record(arrays), feats, data.labels)
            print(f"round {server_round}: val acc {100 * acc:.2f} %, loss {loss:.4f}", flush=True)
            return MetricRecord({"accuracy": acc, "loss": loss})

    result = strategy.start(grid, to_record(engine.layout.extract(engine.graph)), num_rounds=settings.rounds,
                            train_config=ConfigRecord(train_config(settings)), evaluate_fn=evaluate_fn)
    out = str(cfg.get("out", ""))
    if out:
        np.savez(out, **from_record(result.arrays))  # the global trained slices, allow_pickle-free .npz
    print(json.dumps({"rounds": strategy.rounds, "layout_id": engine.layout.layout_id}), flush=True)

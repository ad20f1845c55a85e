"""The fleet client: a Flower ClientApp that trains with the device numerics and sends only trained slices.

A train message carries the global update (an ArrayRecord of `SliceLayout` arrays, never the frozen model)
and a ConfigRecord (lr, local epochs, rounds, seed, dropout); the reply carries the client's update in the
same layout and a MetricRecord with `num-examples`. The client's setup (its model, scheme and frozen-prefix
features) comes from a `setup(context)` callable: `simulation.py` gives one that reads the features the
driver cached for the simulated partition (`partition-id` in the node config); `app.py` gives one for a
device on a real network, which reads its own image folder (`data-dir` in the node config).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from ..errors import MicrotrainError
from .engine import LocalEngine


class ClientDropout(MicrotrainError):
    """A simulated device went away this round (no reply; the server counts it as dropped)."""


@dataclass
class ClientSetup:
    engine: LocalEngine
    feats: dict  # {boundary tensor: (n, views, ...)} this client's frozen-prefix features
    labels: np.ndarray
    client: int  # this client's number (seeds, dropout)


def to_record(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in arrays.items()})


def from_record(record) -> dict[str, np.ndarray]:
    """Plain arrays of an ArrayRecord (Flower's Array.numpy: np.load with allow_pickle=False)."""
    if not isinstance(record, ArrayRecord):
        raise TypeError(f"expected an ArrayRecord, got {type(record).__name__}")
    return {k: v.numpy() for k, v in record.items()}


def drops_out(p: float, seed: int, round_index: int, client: int) -> bool:
    """Deterministic coin of a device that goes away this round (probability p)."""
    return bool(np.random.default_rng([int(seed) & 0xFFFFFFFF, round_index, client, 0xD209]).random() < p)


def train_reply(msg: Message, setup: ClientSetup) -> Message:
    cfg = msg.content["config"]
    round_index = int(cfg["server-round"]) - 1
    seed = int(cfg["seed"])
    if drops_out(float(cfg.get("dropout", 0.0)), seed, round_index, setup.client):
        raise ClientDropout(f"client {setup.client} dropped out of round {round_index + 1}")
    arrays, metrics = setup.engine.fit(from_record(msg.content["arrays"]), setup.feats, setup.labels,
                                       epochs=int(cfg["local-epochs"]), lr=float(cfg["lr"]),
                                       round_index=round_index, rounds=int(cfg["rounds"]), seed=seed,
                                       client=setup.client)
    return Message(RecordDict({"arrays": to_record(arrays), "metrics": MetricRecord(metrics)}), reply_to=msg)


def make_client_app(setup: Callable[[Context], ClientSetup]) -> ClientApp:
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        return train_reply(msg, setup(context))

    return app

"""The server strategy: Flower's FedAvg sampling and round loop, with aggregation of int8 sparse updates.

`SparseInt8FedAvg` keeps Flower's node sampling and message flow (FedAvg.configure_train, Strategy.start) and
replaces the aggregation: every reply is checked against the fleet's `SliceLayout` (arrays, dtypes, shapes,
layout id, scales equal to the global model's) and its sample count (a positive integer, at most
`max_examples`); a reply that fails is rejected and counted, never aggregated; a client that sent no reply
(an error reply: it dropped out or crashed) is counted as dropped. The accepted updates are averaged by
`aggregate.aggregate` (dequantised, weighted by samples, requantised with quant/update's rounding and
saturation). With no accepted update the round leaves the global model as it was.
"""
from __future__ import annotations

from collections.abc import Iterable

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from .aggregate import aggregate
from .client import from_record, to_record
from .layout import SliceLayout, UpdateRejected


class SparseInt8FedAvg(FedAvg):
    def __init__(self, layout: SliceLayout, *, max_examples: int | None = None, **fedavg):
        fedavg.setdefault("fraction_evaluate", 0.0)  # the server evaluates the global model itself
        super().__init__(**fedavg)
        self.layout = layout
        self.max_examples = max_examples
        self.current: dict | None = None  # the global update sent this round: the reference for checks
        self.rounds: list[dict] = []  # per round: accepted / rejected (with reasons) / dropped, bytes

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        self.current = from_record(arrays)
        self.layout.check(self.current)  # the server's own model must be an update of its layout
        return super().configure_train(server_round, arrays, config, grid)

    def _accept(self, msg: Message) -> tuple[dict, int, int]:
        """(arrays, samples, bytes on the wire) of a reply, or UpdateRejected saying what is wrong with it."""
        try:
            wire = sum(len(a.data) for a in msg.content["arrays"].values())  # .npy bytes, headers included
            arrays = from_record(msg.content["arrays"])
            n = msg.content["metrics"]["num-examples"]
        except (KeyError, TypeError, ValueError, EOFError) as e:  # absent records, undecodable arrays
            raise UpdateRejected(f"unreadable reply ({type(e).__name__}: {str(e)[:120]})") from None
        if isinstance(n, bool) or not isinstance(n, int) or n < 1 or (self.max_examples and n > self.max_examples):
            raise UpdateRejected(f"num-examples {n!r} is not an integer in [1, {self.max_examples or 'inf'}]")
        self.layout.check(arrays, reference=self.current)
        return arrays, n, wire

    def aggregate_train(self, server_round: int, replies: Iterable[Message]):
        accepted, rejected, dropped = [], [], 0
        for msg in replies:
            if msg.has_error():
                dropped += 1
                continue
            try:
                accepted.append(self._accept(msg))
            except UpdateRejected as e:
                rejected.append({"node": int(msg.metadata.src_node_id), "reason": str(e)})
        record = {"round": server_round, "accepted": len(accepted), "rejected": len(rejected),
                  "dropped": dropped, "rejections": rejected,
                  "upload_bytes_per_client": self.layout.update_bytes,
                  "upload_wire_bytes_per_client": max((w for *_, w in accepted), default=0),
                  "samples": sum(n for _, n, _ in accepted)}
        self.rounds.append(record)
        metrics = MetricRecord({k: record[k] for k in ("accepted", "rejected", "dropped", "samples")})
        if not accepted:
            return None, metrics  # Flower keeps the previous global arrays
        self.current = aggregate(self.layout, self.current, [(a, n) for a, n, _ in accepted])
        return to_record(self.current), metrics

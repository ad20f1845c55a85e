"""`microtrain fleet MODEL --data DIR --clients N --rounds R --scheme S --partition iid|dirichlet:A`: a simulated
fleet of devices that learn together (Flower's simulation engine on this machine; docs/fleet.md).

Each client trains the scheme's trained slices on its shard with the device numerics and sends only them;
the server averages the int8 updates. Reported: top-1 accuracy on val/ after every round, the bytes each
client sends per round against sending the whole model, rejected and dropped clients, and centralised
training on the same data with the same scheme, lr and total epochs. Needs `pip install 'microtrain[fleet]'`.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

from .. import cli_checks as ck
from ..cli_checks import positive_float, positive_int
from ..errors import DatasetError, MicrotrainError

HELP = "simulate a fleet of devices that learn together (federated sparse updates over Flower)"
DEFAULT_LR = 0.03  # microtrain train's int8 + QAS default (benchmarks/exp_qas.py)


def _probability(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not 0 <= v < 1:
        raise argparse.ArgumentTypeError(f"expected a probability in [0, 1), got {text!r}")
    return v


def register(subparsers):
    p = subparsers.add_parser(
        "fleet", help=HELP, description=HELP + ".",
        epilog="DIR holds train/<class>/* and val/<class>/*. Example: microtrain fleet mcunet-5fps --data "
               "../shared/data/food101_10 --clients 10 --rounds 10 --scheme mcunet-5fps-49kb --partition "
               "dirichlet:0.5. A real deployment runs the same client under Flower's SuperLink/SuperNode "
               "(README, 'A fleet on a real network').")
    p.add_argument("model", metavar="MODEL", help="model file or upstream model name (see `microtrain info -h`)")
    p.add_argument("--data", required=True, metavar="DIR", help="dataset folder with train/ and val/")
    p.add_argument("--clients", required=True, type=positive_int, metavar="N", help="simulated devices")
    p.add_argument("--rounds", required=True, type=positive_int, metavar="R", help="federated rounds")
    p.add_argument("--scheme", required=True, metavar="S", help="update scheme: JSON file or shipped name "
                   "(e.g. mcunet-5fps-49kb)")
    p.add_argument("--partition", default="iid", metavar="P",
                   help="how the training set is split: iid | dirichlet:A (non-IID, e.g. dirichlet:0.5)")
    p.add_argument("--dropout", type=_probability, default=0.0, metavar="P",
                   help="probability that a client drops out of a round (default 0)")
    p.add_argument("--local-epochs", type=positive_int, default=1, metavar="E", help="epochs per round (default 1)")
    p.add_argument("--lr", type=positive_float, default=DEFAULT_LR, metavar="LR",
                   help=f"peak learning rate, same schedule as `microtrain train` (default {DEFAULT_LR})")
    p.add_argument("--batch-size", type=positive_int, default=32, metavar="B", help="batch size (default 32)")
    p.add_argument("--views", type=positive_int, default=8, metavar="V", help="augmented views per image (default 8)")
    p.add_argument("--resolution", type=positive_int, default=None, metavar="R", help="input resolution")
    p.add_argument("--seed", type=ck.seed, default=0, help="seed of the partition, batch order, rounding and dropout")
    p.add_argument("--no-baseline", action="store_true", help="skip the centralised baseline")
    p.add_argument("--metrics", default="fleet-metrics.json", metavar="FILE",
                   help="where to write the report JSON (default fleet-metrics.json)")
    p.add_argument("--cache", metavar="DIR", help="frozen-prefix feature cache (default $MICROTRAIN_CACHE/fleet, else ~/.cache/microtrain/fleet)")
    p.add_argument("--quiet", action="store_true", help="no per-round lines")
    p.add_argument("--force", action="store_true", help="replace a --metrics file microtrain did not write")
    p.set_defaults(func=run)


def _check_inputs(args):
    """Every argument checked before any long work: one-line errors naming the value."""
    from ..fleet.partition import parse_partition
    from ..models import load_model
    from ..runtime.datasets import list_image_folder
    from ..sparse.fixtures import load_scheme

    if importlib.util.find_spec("flwr") is None or importlib.util.find_spec("ray") is None:
        raise MicrotrainError("microtrain fleet needs Flower's simulation engine: pip install 'microtrain[fleet]'")
    parse_partition(args.partition)
    ck.check_output_file(args.metrics, "--metrics", force=args.force)
    data = Path(args.data)
    for sub in ("train", "val"):
        if not (data / sub).is_dir():
            raise DatasetError(f"{data / sub}: missing (--data needs train/<class>/* and val/<class>/*)")
    _, files = list_image_folder(data / "train")
    if args.clients > len(files):
        raise DatasetError(f"--clients {args.clients}: {data / 'train'} has only {len(files)} files to share")
    graph = load_model(args.model)
    if args.resolution:
        graph = graph.with_resolution(args.resolution)
    scheme = load_scheme(args.scheme).validate(graph)
    return graph, scheme, data


def run(args) -> int:
    graph, scheme, data = _check_inputs(args)
    from ..fleet.simulation import DEFAULT_CACHE, FleetSettings, run_fleet
    from ..runtime.datasets import load_image_folder

    say = (lambda *a: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr))
    train = load_image_folder(data / "train", graph.resolution, views=args.views, seed=args.seed,
                              progress=not args.quiet)
    val = load_image_folder(data / "val", graph.resolution, classes=train.classes)
    for path, reason in train.skipped + val.skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    if len(train) < args.clients:
        raise DatasetError(f"--clients {args.clients}: only {len(train)} training images decode")
    settings = FleetSettings(clients=args.clients, rounds=args.rounds, partition=args.partition,
                             local_epochs=args.local_epochs, lr=args.lr, batch_size=args.batch_size,
                             dropout=args.dropout, seed=args.seed)
    say(f"{graph.name}: {len(train)} training images over {args.clients} clients ({args.partition}), "
        f"{len(val)} validation images; scheme {scheme.name or args.scheme}; {args.rounds} rounds of "
        f"{args.local_epochs} local epoch(s), lr {args.lr}")

    def log(rec):
        if rec["round"] == 0:
            say(f"round 0 (initial model): val acc {100 * rec['val_acc']:.2f} %")
            return
        say(f"round {rec['round']}/{args.rounds}: val acc {100 * rec['val_acc']:.2f} %, {rec['accepted']} updates "
            f"of {rec['upload_bytes_per_client']:,} B, {rec['dropped']} dropped, {rec['rejected']} rejected "
            f"({rec['seconds']} s)")

    report = run_fleet(graph, scheme, train, val, settings, cache=Path(args.cache) if args.cache else DEFAULT_CACHE,
                       baseline=not args.no_baseline, log=log, progress=not args.quiet)
    report = {"format": "microtrain-fleet-metrics", **report}
    report["command"] = "microtrain " + " ".join(sys.argv[1:]) if sys.argv and sys.argv[0].endswith("microtrain") else None
    ck.prepare_output_file(args.metrics).write_text(json.dumps(report, indent=1) + "\n")
    up, whole = report["upload_bytes_per_client_per_round"], report["whole_model_bytes"]
    print(f"upload per client per round: {up:,} B (trained slices {report['trained_param_bytes']:,} B + scales; "
          f"{report['upload_wire_bytes_per_client_per_round']:,} B as Flower's .npy arrays); the whole model would "
          f"be {whole:,} B ({whole / up:.1f}x more)")
    line = f"fleet ({args.clients} clients, {args.rounds} rounds): validation accuracy {100 * report['fleet_val_acc']:.2f} %"
    if "centralised" in report:
        c = report["centralised"]
        line += (f"; centralised ({c['epochs']} epochs, same scheme and lr): {100 * c['val_acc']:.2f} % "
                 f"({report['fleet_minus_centralised_points']:+.2f} points)")
    print(line + f"; metrics in {args.metrics}")
    return 0

"""`microtrain info MODEL`: a per-layer table (op, shapes, params, MACs, activation bytes) and totals."""
from __future__ import annotations

import json

from ..cli_checks import positive_int
from ..ir.graph import Graph
from ..ops import op_module

HELP = "show a model's layers: op, shapes, parameters, MACs, activation bytes, and totals"


def register(subparsers):
    p = subparsers.add_parser(
        "info", help=HELP, description=HELP + ".",
        epilog="MODEL is an upstream .pkl file, a microtrain graph .json, an int8 TensorFlow Lite .tflite file, "
               "or the name of an upstream model "
               "(mcunet-5fps, mbv2-w0.35, proxyless-w0.3) found in $MICROTRAIN_SHARED/models (or $MICROTRAIN_MODELS).",
    )
    p.add_argument("model", metavar="MODEL", help="model file or upstream model name")
    p.add_argument("--resolution", type=positive_int, default=None, metavar="R",
                   help="analyse the network at an R x R input instead of its native resolution")
    p.add_argument("--json", action="store_true", help="print the table and totals as JSON")
    p.set_defaults(func=run)


def layer_rows(graph: Graph) -> list[dict]:
    """One dict per node: name, op, in/out shapes, params, MACs, output activation bytes."""
    rows = []
    for node in graph.nodes:
        ins = [tuple(graph.tensors[t].shape) for t in node.inputs]
        out = graph.tensors[node.output]
        module = op_module(node)
        op = module.describe(node) if hasattr(module, "describe") else node.op  # ops may label themselves
        rows.append({
            "name": node.name,
            "op": op,
            "in": [list(s) for s in ins],
            "out": list(out.shape),
            "params": param_count(node),
            "param_bytes": sum(int(v.nbytes) for v in node.params.values()),
            "macs": int(op_module(node).macs(node, ins[0], out.shape)),
            "act_bytes": int(out.nbytes),
        })
    return rows


def param_count(node) -> int:
    """Trainable numbers: weights and biases (per-channel scales are metadata, not parameters)."""
    return sum(int(node.params[k].size) for k in ("weight", "bias") if k in node.params)


def peak_live_bytes(graph: Graph) -> int:
    """Largest total size of simultaneously live activations (input kept until its last use; no
    in-place reuse): a naive upper bound on the inference activation memory."""
    last = {}
    for i, node in enumerate(graph.nodes):
        for t in node.inputs:
            last[t] = i
    live = {graph.input: graph.input_spec.nbytes}
    peak = sum(live.values())
    for i, node in enumerate(graph.nodes):
        live[node.output] = graph.tensors[node.output].nbytes
        peak = max(peak, sum(live.values()))
        for t in node.inputs:
            if last.get(t) == i:
                live.pop(t, None)
    return peak


def totals(graph: Graph, rows: list[dict]) -> dict:
    return {
        "layers": len(rows),
        "convs": sum(1 for _ in graph.convs()),
        "params": sum(r["params"] for r in rows),
        "param_bytes": sum(r["param_bytes"] for r in rows),
        "macs": sum(r["macs"] for r in rows),
        "input_bytes": graph.input_spec.nbytes,
        "max_layer_act_bytes": max(r["act_bytes"] for r in rows),
        "peak_live_act_bytes": peak_live_bytes(graph),
    }


def human(n: float, unit: str = "") -> str:
    for div, suffix in ((1e9, " G"), (1e6, " M"), (1e3, " k")):
        if abs(n) >= div:
            return f"{n / div:.1f}{suffix}{unit}"
    return f"{int(n)} {unit}".rstrip()


def kib(n: int) -> str:
    return f"{n / 1024:.1f} KiB"


def format_table(graph: Graph, rows: list[dict], tot: dict) -> str:
    shape = lambda s: "x".join(map(str, s))  # noqa: E731
    header = ("#", "layer", "op", "input", "output", "params", "MACs", "act bytes")
    body = [
        (str(i), r["name"], r["op"], " + ".join(shape(s) for s in r["in"]), shape(r["out"]),
         f"{r['params']:,}", f"{r['macs']:,}", f"{r['act_bytes']:,}")
        for i, r in enumerate(rows)
    ]
    widths = [max(len(row[c]) for row in [header, *body]) for c in range(len(header))]
    right = {0, 5, 6, 7}
    fmt = lambda row: "  ".join(v.rjust(w) if c in right else v.ljust(w)  # noqa: E731
                                for c, (v, w) in enumerate(zip(row, widths))).rstrip()
    lines = [f"model {graph.name} ({graph.dtype}), input {shape(graph.input_spec.shape)} (HxWxC), "
             f"{graph.num_classes} classes", "", fmt(header), fmt(["-" * w for w in widths])]
    lines += [fmt(row) for row in body]
    lines += [
        "",
        f"total layers:     {tot['layers']} ({tot['convs']} convs)",
        f"total params:     {tot['params']:,} ({human(tot['params'])}), stored in {kib(tot['param_bytes'])} "
        f"(weights, biases, scales)",
        f"total MACs:       {human(tot['macs'])} ({tot['macs']:,})",
        f"largest activation: {kib(tot['max_layer_act_bytes'])}; peak live activations (no in-place reuse): "
        f"{kib(tot['peak_live_act_bytes'])}",
    ]
    return "\n".join(lines)


def run(args) -> int:
    from ..models import load_model

    graph = load_model(args.model)
    if args.resolution is not None:
        graph = graph.with_resolution(args.resolution)
    rows = layer_rows(graph)
    tot = totals(graph, rows)
    if args.json:
        print(json.dumps({"model": graph.name, "dtype": graph.dtype, "input": list(graph.input_spec.shape),
                          "classes": graph.num_classes, "layers": rows, "totals": tot}, indent=1))
    else:
        print(format_table(graph, rows, tot))
    return 0

"""`microtrain export TRAINED --tflite OUT.tflite`: write a model trained by microtrain back as the int8
TensorFlow Lite file it came from, with the trained weights and biases (frontends/tflite_export.py).

    microtrain export resnet8-cifar.json --tflite resnet8-cifar.tflite              # from `train --save`
    microtrain export trained.bin --project build/resnet8-m7 --tflite device.tflite  # from `run --params-out`
"""
from __future__ import annotations

from pathlib import Path

from .. import cli_checks as ck
from ..errors import MicrotrainError

HELP = "write a trained model back as an int8 .tflite (the original's ops and quantisation, trained numbers)"
MAX_PARAMS_BYTES = 64 << 20  # a device's trainable parameters fit in its SRAM


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export", help=HELP,
        description="Write a model trained by microtrain back as the int8 TensorFlow Lite file it came from, with "
                    "the trained weights and biases. Examples: microtrain export resnet8-cifar.json --tflite "
                    "resnet8-cifar.tflite; microtrain export trained.bin --project build/resnet8-m7 --tflite "
                    "device.tflite.",
        epilog="TRAINED is a graph saved by `microtrain train MODEL.tflite --save FILE.json`, or the parameter file "
               "`microtrain run --params-out` wrote (then --project names the project compiled from MODEL.tflite). "
               "The graph remembers its .tflite file by path and sha256: a moved file is given with --source, a "
               "changed one is refused. A new head (another class count) changes the head's tensors and the "
               "output shape; everything else keeps the original's layout and quantisation.")
    p.add_argument("trained", metavar="TRAINED", help="FILE.json from `train --save`, or a `run --params-out` file")
    p.add_argument("--tflite", required=True, metavar="OUT.tflite", help="the .tflite file to write")
    p.add_argument("--project", metavar="DIR",
                   help="the compiled project (from a .tflite model) whose firmware wrote the parameter file TRAINED")
    p.add_argument("--source", metavar="MODEL.tflite",
                   help="the .tflite the model was read from, if it moved since (checked by its sha256)")
    p.add_argument("--force", action="store_true", help="replace an OUT.tflite microtrain did not write")
    p.set_defaults(func=run)


def load_trained(args):
    """The trained graph: a saved graph, or a project's compiled graph with the device's parameters."""
    from ..codegen.param_blob import apply_params, read_layout
    from ..ir.serialize import load_graph
    from .compile import COMPILED_GRAPH

    trained = Path(args.trained)
    if not trained.is_file():
        raise MicrotrainError(f"{trained}: no such file")
    if trained.suffix == ".tflite":
        raise MicrotrainError(f"{trained}: a .tflite model, not a trained one; train it with `microtrain train "
                              f"{trained} --save FILE.json` and export FILE.json")
    if trained.suffix == ".json":
        if args.project:
            raise MicrotrainError(f"--project is for a parameter file from `run --params-out`; {trained} is a graph")
        return load_graph(trained)
    if not args.project:
        raise MicrotrainError(f"{trained}: not a graph (.json); a parameter file from `run --params-out` needs "
                              "--project DIR, the project compiled for that device")
    project = Path(args.project)
    if not (project / COMPILED_GRAPH).is_file():
        raise MicrotrainError(f"{project}: no {COMPILED_GRAPH}; export needs a project compiled (by this microtrain) "
                              "from a .tflite model with a training scheme")
    edited = [f for f in ck.edited_project_files(project) if Path(f).stem in ("model", "params")]
    if edited:
        raise MicrotrainError(f"{project}: {', '.join(edited)} changed since microtrain compiled the project")
    graph = load_graph(project / COMPILED_GRAPH)
    layout = read_layout(project)
    if layout.get("model") != graph.name:
        raise MicrotrainError(f"{project}: params.json describes model {layout.get('model')!r}, "
                              f"{COMPILED_GRAPH} is {graph.name!r}")
    size = trained.stat().st_size
    if size > MAX_PARAMS_BYTES:
        raise MicrotrainError(f"{trained}: {size} bytes, not the parameters of {project}")
    try:
        apply_params(graph, trained.read_bytes(), layout["arrays"])
    except MicrotrainError as e:
        raise MicrotrainError(f"{trained}: not the parameters of {project} ({e})") from None
    classes = (ck.read_project_marker(project) or {}).get("classes")  # the names the project was compiled for
    if isinstance(classes, list) and len(classes) == graph.num_classes:
        graph.meta["labels"] = [str(c) for c in classes]
    return graph


def run(args) -> int:
    from ..frontends.tflite_export import export_to_file, is_microtrain_tflite, source_file

    if not str(args.tflite).endswith(".tflite"):
        raise ck.OutputError(f"--tflite {args.tflite}: must end in .tflite")
    out = ck.check_output_file(args.tflite, "--tflite", force=args.force, owned=is_microtrain_tflite)
    graph = load_trained(args)
    _, source = source_file(graph, args.source)
    if out.exists() and out.resolve() == source.resolve():
        raise ck.OutputError(f"--tflite {out}: is the model's source .tflite; write the trained model elsewhere")
    export_to_file(graph, out, args.source)
    shape = "x".join(str(v) for v in graph.output_spec.shape)
    print(f"wrote {out} ({out.stat().st_size:,} bytes): {source.name} with the trained parameters of "
          f"{graph.name} (output {shape}, {graph.num_classes} classes"
          + (f": {', '.join(map(str, graph.meta['labels']))}" if graph.meta.get("labels") else "") + ")")
    return 0

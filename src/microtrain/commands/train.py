"""`microtrain train MODEL --data DIR ...`: fine-tune an int8 model on an ImageFolder dataset.

The classifier is replaced by a new head for the dataset's classes; the update set comes from
`--update` or `--scheme FILE.json`; int8 training uses QAS unless `--no-qas`; `--fp32` trains the
dequantised float model instead (the baseline). Metrics are written as JSON; `--checkpoint DIR`
saves a checkpoint after every epoch and `--resume DIR` continues from one.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from ..errors import DatasetError, SchemeError
from ..progress import write as progress_write
from .. import cli_checks as ck
from ..cli_checks import positive_int

HELP = "fine-tune a model on an image folder (int8 + QAS, int8 without QAS, or fp32)"
UPDATE_FORMS = "last-blocks:K | last-layers:K | head | bias-only | full"
DEFAULT_LR = {"qas": 0.03, "fp32": 0.03, "no-qas": 1000.0}  # chosen by benchmarks/exp_qas.py


def register(subparsers):
    p = subparsers.add_parser(
        "train", help=HELP, description=HELP + ".",
        epilog="DIR holds train/<class>/* and val/<class>/* (JPEG/PNG; other files are reported and skipped), "
               "or is itself the training folder (then give --val). Example: microtrain train mcunet-5fps "
               "--data ../shared/data/hymenoptera_data --update last-blocks:2 --epochs 20 --lr 0.03. "
               "The numerics are specified in docs/training-semantics.md.",
    )
    p.add_argument("model", metavar="MODEL", help="model file or upstream model name (see `microtrain info -h`)")
    p.add_argument("--data", required=True, metavar="DIR", help="dataset folder (train/ and val/ inside)")
    p.add_argument("--val", metavar="DIR", help="validation folder (default DIR/val)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--update", default="last-blocks:2", metavar="SPEC",
                   help=f"what to train besides the new head: {UPDATE_FORMS} (default last-blocks:2)")
    g.add_argument("--scheme", metavar="FILE", help="an UpdateScheme JSON file (e.g. from `microtrain plan`)")
    p.add_argument("--no-qas", action="store_true", help="int8 training without quantization-aware scaling")
    p.add_argument("--fp32", action="store_true", help="train the dequantised float32 model (baseline)")
    p.add_argument("--epochs", type=positive_int, default=20, metavar="N", help="epochs (default 20)")
    p.add_argument("--lr", type=ck.positive_float, default=None, metavar="LR",
                   help=f"peak learning rate (default {DEFAULT_LR['qas']} with QAS or fp32, "
                        f"{DEFAULT_LR['no-qas']} with --no-qas)")
    p.add_argument("--seed", type=ck.seed, default=0, help="seed of shuffling, views and stochastic rounding")
    p.add_argument("--batch-size", type=positive_int, default=32, metavar="B", help="batch size (default 32)")
    p.add_argument("--warmup-epochs", type=ck.nonnegative_float, default=None, metavar="E",
                   help="linear warm-up epochs before the cosine decay (default epochs // 10, at least 1)")
    p.add_argument("--momentum", type=ck.momentum, default=0.0, help="SGD momentum (default 0: off)")
    p.add_argument("--rounding", choices=("stochastic", "nearest"), default="stochastic",
                   help="rounding of int8/int32 updates (default stochastic)")
    p.add_argument("--backward", choices=("float", "int16"), default="float",
                   help="input-gradient arithmetic of int8 training: float (default) or int16 (pointwise convs: "
                        "int16 gradient x int8 weight, exact int32 sums; docs/training-semantics.md)")
    p.add_argument("--views", type=positive_int, default=8, metavar="V",
                   help="precomputed augmented views per training image (crop/flip; default 8)")
    p.add_argument("--resolution", type=positive_int, default=None, metavar="R", help="input resolution")
    p.add_argument("--metrics", default="train-metrics.json", metavar="FILE",
                   help="where to write the metrics JSON (default train-metrics.json)")
    p.add_argument("--confusion-plot", metavar="FILE.png",
                   help="plot the validation confusion matrix and per-class accuracy (needs matplotlib)")
    p.add_argument("--checkpoint", metavar="DIR", help="save a checkpoint folder after every epoch")
    p.add_argument("--resume", metavar="DIR", help="resume from a checkpoint folder")
    p.add_argument("--save", metavar="FILE.json", help="write the trained graph (JSON + npz; from a .tflite model, "
                   "`microtrain export FILE.json --tflite OUT.tflite` writes it back as one)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    p.add_argument("--force", action="store_true",
                   help="write into a non-empty --checkpoint folder that is not a checkpoint, and replace output "
                        "files microtrain did not write (other files are never deleted)")
    p.set_defaults(func=run)


def parse_update(spec: str, graph):
    from ..sparse.scheme import UpdateScheme

    kind, _, arg = spec.partition(":")
    try:
        if kind == "head" and not arg:
            return UpdateScheme.head_only()
        if kind == "bias-only" and not arg:
            return UpdateScheme.bias_only(graph)
        if kind == "full" and not arg:
            return UpdateScheme.full(graph)
        if kind == "last-blocks":
            return UpdateScheme.last_blocks(graph, int(arg))
        if kind == "last-layers":
            return UpdateScheme.last_layers(graph, int(arg))
    except ValueError:
        pass
    raise SchemeError(f"--update {spec!r}: expected one of {UPDATE_FORMS} (K a whole number)")


def collapse_warning(history: list[dict], num_classes: int, lr: float) -> str | None:
    """A warning when training ended at chance after it had learned (typically an lr at the edge of
    stability: activations die, the logits saturate, and no gradient flows any more). The trainer rolls
    such collapses back (CollapseRecovery) a bounded number of times; if the run still ends there, the
    user must know, rather than get a silently useless model."""
    if len(history) < 2 or num_classes < 2:
        return None
    chance = 1.0 / num_classes
    best = max(h["train_acc"] for h in history)
    last = history[-1]["train_acc"]
    if last <= 1.2 * chance and best >= 1.5 * chance:
        return (f"training collapsed: training accuracy fell from {100 * best:.1f} % to {100 * last:.1f} % "
                f"(chance {100 * chance:.1f} %); the learning rate {lr:g} is probably too high, try {lr / 3:.3g}")
    return None


def check_outputs(args) -> None:
    """Every file and folder this run writes, checked before the model is even loaded."""
    from ..runtime.checkpoint import is_checkpoint_folder

    ck.check_output_file(args.metrics, "--metrics", force=args.force)
    if args.save:
        if not str(args.save).endswith(".json"):
            raise ck.OutputError(f"--save {args.save}: must end in .json (the graph is written as FILE.json + "
                                 "FILE.npz, which `microtrain predict` and `compile` read)")
        ck.check_output_file(args.save, "--save", force=args.force, companions=(".npz",))
    if args.checkpoint:
        ck.check_output_dir(args.checkpoint, "--checkpoint", force=args.force, owned=is_checkpoint_folder,
                            what="microtrain checkpoint")
        folder = Path(args.checkpoint)
        for side in (folder.with_name(folder.name + ".tmp"), folder.with_name(folder.name + ".old")):
            if side.exists() and not is_checkpoint_folder(side):  # save_checkpoint's scratch names
                raise ck.OutputError(f"--checkpoint {folder}: {side} exists and is not a microtrain checkpoint; "
                                     "saving would need that name: remove or rename it")


def run(args) -> int:
    from ..models import load_model
    from ..runtime.datasets import load_image_folder
    from ..runtime.timeseries import is_series_model, load_for_model
    from ..runtime.trainer import fine_tune, save_trained
    from ..sparse.scheme import UpdateScheme

    t0 = time.monotonic()
    check_outputs(args)
    graph = load_model(args.model)
    if args.resolution:
        graph = graph.with_resolution(args.resolution)
    data = Path(args.data)
    train_dir = data / "train" if (data / "train").is_dir() else data
    val_dir = Path(args.val) if args.val else (data / "val" if (data / "val").is_dir() else None)
    if args.fp32 and args.no_qas:
        raise SchemeError("--fp32 and --no-qas exclude each other (QAS only concerns int8 training)")
    if args.fp32 and args.backward != "float":
        raise SchemeError(f"--fp32 and --backward {args.backward} exclude each other (the integer backward is int8 "
                          "training's)")
    scheme = UpdateScheme.load(args.scheme) if args.scheme else parse_update(args.update, graph)
    mode = "fp32" if args.fp32 else ("no-qas" if args.no_qas else "qas")
    lr = DEFAULT_LR[mode] if args.lr is None else args.lr
    if not lr > 0:
        raise SchemeError(f"--lr must be > 0, got {lr}")
    say = (lambda *a: None) if args.quiet else (lambda *a: progress_write(" ".join(map(str, a))))

    if is_series_model(graph):  # a 1-D model: .ts files or recording folders (runtime/timeseries.py)
        train, val = load_for_model(graph, train_dir, val_dir, views=args.views, seed=args.seed)
    else:
        channels = graph.input_spec.shape[-1]  # 1: a grayscale model takes the luma (runtime/images.to_channels)
        train = load_image_folder(train_dir, graph.resolution, views=args.views, seed=args.seed,
                                  progress=not args.quiet, channels=channels)
        val = load_image_folder(val_dir, graph.resolution, classes=train.classes, channels=channels) if val_dir else None
    skipped = train.skipped + (val.skipped if val else [])
    for path, reason in skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    if scheme.classes and list(scheme.classes) != list(train.classes):
        print(f"note: scheme {args.scheme} was planned for the classes {', '.join(scheme.classes)}; "
              f"this dataset has {', '.join(train.classes)}", file=sys.stderr)
    if val is None:
        say(f"no validation folder ({data}/val missing, no --val): reporting training metrics only")
    say(f"{graph.name}: {len(train)} training images, {len(val) if val else 0} validation images, "
        f"classes {train.classes}; mode {mode}, lr {lr}, scheme {scheme.name or args.scheme}")

    def log(rec):
        extra = (f", val acc {100 * rec['val_acc']:.2f} % (balanced {100 * rec['val_balanced_acc']:.2f} %)"
                 if "val_acc" in rec else "")
        say(f"epoch {rec['epoch']}/{args.epochs}: loss {rec['train_loss']:.4f}, train acc "
            f"{100 * rec['train_acc']:.2f} %{extra}")

    result = fine_tune(graph, scheme, train, val, epochs=args.epochs, lr=lr, seed=args.seed,
                       batch_size=args.batch_size, qas=not args.no_qas, fp32=args.fp32, rounding=args.rounding,
                       momentum=args.momentum, warmup_epochs=args.warmup_epochs, eval_every=1 if val else 0,
                       progress=not args.quiet, checkpoint_dir=args.checkpoint, resume=args.resume, log=log,
                       backward=args.backward)
    metrics = {
        "format": "microtrain-metrics", "model": graph.name, "data": str(data), "train_dir": str(train_dir), "val_dir": str(val_dir) if val_dir else None,
        "classes": train.classes, "n_train": len(train), "n_val": len(val) if val else 0,
        "skipped": [{"file": p, "reason": r} for p, r in skipped],
        "mode": mode, "scheme": scheme.to_dict(), "trained_layers": sorted(result["training_graph"].trained),
        "epochs": args.epochs, "lr": lr, "seed": args.seed, "batch_size": args.batch_size,
        "rounding": None if args.fp32 else args.rounding, "backward": None if args.fp32 else args.backward,
        "momentum": args.momentum, "views": args.views,
        "val_acc": result["val_acc"], "val_loss": result["val_loss"], "train_acc": result["train_acc"],
        "val_balanced_acc": result["val_balanced_acc"], "val_confusion": result["val_confusion"],
        "history": result["history"], "seconds": round(time.monotonic() - t0, 2),
        "warning": collapse_warning(result["history"], train.num_classes, lr),
        "collapse_rollbacks": result.get("collapse_rollbacks", 0),
        "command": "microtrain " + " ".join(sys.argv[1:]) if sys.argv and sys.argv[0].endswith("microtrain") else None,
    }
    ck.prepare_output_file(args.metrics).write_text(json.dumps(metrics, indent=1) + "\n")
    if args.save:  # the class names travel with the trained graph (`microtrain predict` prints them)
        result["graph"].meta = dict(result["graph"].meta, labels=list(train.classes))
        save_trained(result, args.save)
        say(f"trained graph written to {args.save}")
    if args.confusion_plot and result["val_confusion"] is not None:
        from ..runtime.metrics import plot_confusion

        plot_confusion(result["val_confusion"], train.classes, args.confusion_plot, title=f"{graph.name} ({mode})")
        say(f"confusion plot written to {args.confusion_plot}")
    acc = ("n/a" if result["val_acc"] is None else
           f"{100 * result['val_acc']:.2f} % (balanced {100 * result['val_balanced_acc']:.2f} %)")
    for rec in result["history"]:
        if "collapse_rollback" in rec:
            print(f"note: epoch {rec['epoch']} collapsed to chance; parameters of epoch {rec['collapse_rollback']} "
                  f"restored, lr now x{rec['lr_scale']:.3g} (--lr {lr:g} is probably too high)", file=sys.stderr)
    if metrics["warning"]:
        print(f"warning: {metrics['warning']}", file=sys.stderr)
    print(f"{graph.name} ({mode}): validation accuracy {acc}; metrics in {args.metrics}")
    if not train.skipped and not len(train):
        raise DatasetError(f"{train_dir}: no training images")
    return 0

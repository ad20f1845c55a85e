"""`microtrain predict MODEL IMAGE... [--top K] [--json]`: classify images with the int8 runtime.

Each image gets the evaluation transform of runtime/images.py (an image already at the model's
resolution is used as is) and the fixed input mapping pixel k -> k - 128, then the bit-exact int8
forward. Ranks are by int8 logit, ties broken by the lower class index.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from ..errors import DatasetError
from ..cli_checks import positive_int

HELP = "classify image files with a model (int8 inference), printing the top-K classes"


def register(subparsers):
    p = subparsers.add_parser(
        "predict", help=HELP, description=HELP + ".",
        epilog="IMAGE may be a file or a folder (all image files below it, sorted). Images that do not decode "
               "are reported on stderr and skipped; the exit code is then 1. With --json the output is one JSON "
               "object: model facts and, per image, the file, the top-K class indices and names, and the full "
               "int8 logit vector (real logit = (q - logit_zero_point) * logit_scale).",
    )
    p.add_argument("model", metavar="MODEL", help="model file or upstream model name (see `microtrain info -h`)")
    p.add_argument("images", metavar="IMAGE", nargs="+", help="image files or folders")
    p.add_argument("--top", type=positive_int, default=5, metavar="K", help="how many classes to show (default 5)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON instead of a table")
    p.add_argument("--batch-size", type=positive_int, default=32, metavar="B",
                   help="images per forward batch (default 32)")
    p.add_argument("--resolution", type=positive_int, default=None, metavar="R",
                   help="run at an R x R input instead of the model's native resolution")
    p.set_defaults(func=run)


def expand_images(args_images) -> list[Path]:
    """Files as given, folders expanded to their image files (recursive, sorted)."""
    from ..runtime.images import is_image_file

    files = []
    for a in args_images:
        p = Path(a)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if is_image_file(f))
            if not found:
                raise DatasetError(f"{p}: folder holds no image files")
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise DatasetError(f"{p}: no such file or folder")
    return files


def top_k(logits: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest int8 logits per row; ties go to the lower class index."""
    order = np.argsort(-logits.astype(np.int32), axis=1, kind="stable")
    return order[:, :k]


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def image_channels(graph) -> int:
    """3 (RGB) or 1 (grayscale: ITU-R 601 luma, PIL's "L"); a model whose input is no square image is refused."""
    h, w, c = graph.input_spec.shape
    if h != w or c not in (1, 3):
        raise DatasetError(f"model {graph.name}: input {h}x{w}x{c} is not a square RGB or grayscale image; "
                           "predict classifies images")
    return c


def load_model_pixels(path, res: int, channels: int) -> np.ndarray:
    from ..runtime.images import load_pixels

    return load_pixels(path, res, channels)


def classify(graph, files, batch_size=32, progress=None):
    """Yield (file, int8 logits (K,) or None, error message or None) for every file, in order."""
    from ..runtime.forward import run_int8
    from ..quant.arith import pixels_to_int8

    res = graph.resolution
    channels = image_channels(graph)
    for start in range(0, len(files), batch_size):
        chunk = files[start : start + batch_size]
        pixels, ok, errors = [], [], {}
        for f in chunk:
            try:
                pixels.append(load_model_pixels(f, res, channels))
                ok.append(f)
            except DatasetError as e:
                errors[f] = str(e)
        logits = {}
        if ok:
            q = run_int8(graph, pixels_to_int8(np.stack(pixels))).reshape(len(ok), graph.num_classes)
            logits = dict(zip(ok, q))
        for f in chunk:
            yield f, logits.get(f), errors.get(f)
        if progress is not None:
            progress.update(len(chunk))


def run(args) -> int:
    from ..labels import class_names
    from ..models import load_model
    from ..progress import Progress

    graph = load_model(args.model)
    if args.resolution is not None:
        graph = graph.with_resolution(args.resolution)
    files = expand_images(args.images)
    names = class_names(graph)
    k = min(args.top, graph.num_classes)
    out_q = graph.output_spec.quant
    results, failed = [], 0
    with Progress(len(files), desc="predict", enabled=None if len(files) > args.batch_size else False) as bar:
        for f, q, err in classify(graph, files, args.batch_size, bar):
            if err is not None:
                failed += 1
                print(f"microtrain predict: warning: {err}", file=sys.stderr)
                results.append({"file": str(f), "error": err})
                continue
            idx = top_k(q[None], k)[0]
            results.append({"file": str(f), "top": [int(i) for i in idx], "labels": [names[i] for i in idx],
                            "logits": [int(v) for v in q]})
    if args.json:
        print(json.dumps({
            "model": graph.name, "resolution": graph.resolution, "classes": graph.num_classes,
            "logit_scale": out_q.scale, "logit_zero_point": out_q.zero_point, "images": results,
        }))
    else:
        print_table(results, out_q, names)
    return 1 if failed else 0


def print_table(results, out_q, names):
    for r in results:
        print(r["file"])
        if "error" in r:
            print("   (not classified: image does not decode)")
            continue
        q = np.asarray(r["logits"], dtype=np.float64)
        prob = softmax((q - out_q.zero_point) * out_q.scale)
        width = max(len(names[i]) for i in r["top"])
        for rank, i in enumerate(r["top"], 1):
            print(f"  {rank:2d}. {i:4d}  {names[i]:<{width}}  logit {int(q[i]):4d}  p={prob[i]:.3f}")

"""Contribution analysis: short fine-tunes that measure what each part of a sparse update is worth.

Measured on a held-out split of the TRAINING folder (never the validation set), with the same seed for
every run so that differences come from the scheme, not from the data order:
- base: the head alone (classifier weights and bias);
- bias[k]: the head + the biases of the last k convs, for k on a grid; gain = score - score(base);
- weights[(i, r)]: the last `bias_ref` biases + conv i's weights at ratio r; gain = score -
  score(bias_ref), with bias_ref covering every candidate conv (a weight-trained conv also trains its bias).
The score is held-out accuracy (metric "acc", the paper's) or minus the held-out loss (metric "loss"): on a
small held-out split accuracy moves in steps of one image, which is often too coarse to rank updates.
Every run is one job whose result is a small JSON file in the cache folder, named by a hash of
(model, data, split, training settings, scheme): an interrupted analysis resumes where it stopped, and a
finished one costs nothing to re-run (clear the cache after changing the trainer itself). Jobs run on `workers` processes (default 2, both cores).
The trainer is runtime/trainer.py's fine_tune; this module only chooses what to measure.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..errors import DatasetError, SchemeError
from ..ir.graph import Graph, prefix_fingerprints
from ..runtime.datasets import load_image_folder
from ..runtime.trainer import fine_tune as default_fine_tune
from ..sparse.scheme import RATIOS, UpdateScheme
from .search import GainTable


METRICS = ("acc", "loss")


@dataclass
class AnalysisSettings:
    """What a contribution analysis measures and how (all but `metric` is part of the cache key)."""

    epochs: int = 3
    lr: float = 0.01  # 0.03+ collapses deep int8 weight updates (held-out check on hymenoptera)
    seed: int = 0
    batch_size: int = 16
    holdout: float = 0.3  # fraction of the training folder held out to score the fine-tunes
    views: int = 1  # augmented views per training image (datasets.load_image_folder)
    bias_step: int = 0  # n_bias grid step; 0 = about 10 points
    weight_convs: tuple[int, ...] | None = None  # candidate convs; None = the last `n_candidates`
    n_candidates: int = 12
    ratios: tuple[str, ...] = tuple(str(r) for r in RATIOS)
    metric: str = "acc"  # gain in held-out accuracy ("acc", the paper's) or in held-out loss decrease ("loss")
    trainer_options: dict = field(default_factory=dict)  # passed to fine_tune as keywords

    def __post_init__(self):
        if self.metric not in METRICS:
            raise SchemeError(f"metric must be one of {METRICS}, got {self.metric!r}")

    def key(self) -> dict:
        """The settings that change what a fine-tune measures (not the metric: runs record both)."""
        d = asdict(self)
        d.pop("metric")
        d["weight_convs"] = list(self.weight_convs) if self.weight_convs is not None else None
        d["ratios"] = list(self.ratios)
        return d


def bias_grid(n: int, step: int = 0) -> list[int]:
    step = step or max(1, round(n / 10))
    grid = sorted(set(range(0, n + 1, step)) | {n})
    return grid


def candidate_convs(n: int, settings: AnalysisSettings) -> list[int]:
    if settings.weight_convs is not None:
        bad = [i for i in settings.weight_convs if not 0 <= int(i) < n]
        if bad:
            raise SchemeError(f"candidate convs {bad} out of range [0, {n})")
        return sorted({int(i) for i in settings.weight_convs})
    return list(range(max(0, n - settings.n_candidates), n))


def plan_jobs(graph: Graph, settings: AnalysisSettings) -> tuple[dict[str, UpdateScheme], int]:
    """{job name: scheme} of every fine-tune the analysis needs, and bias_ref."""
    n = len(graph.indexed_convs())
    convs = candidate_convs(n, settings)
    bias_ref = n - min(convs) if convs else 0
    grid = sorted(set(bias_grid(n, settings.bias_step)) | {bias_ref})
    jobs = {f"bias-{k}": UpdateScheme(k, {}, name=f"bias-{k}") for k in grid}
    for i in convs:
        for r in settings.ratios:
            jobs[f"w{i}-{r}"] = UpdateScheme(bias_ref, {i: float(Fraction(r))}, name=f"bias-{bias_ref}+w{i}x{r}")
    return jobs, bias_ref


def holdout_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified (train index, held-out index), deterministic given the seed."""
    if not 0 < fraction < 1:
        raise DatasetError(f"holdout fraction must lie in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    train, held = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        k = max(1, int(round(fraction * len(idx))))
        if k >= len(idx):
            raise DatasetError(f"class {c} has {len(idx)} training images: too few to hold some out")
        held.extend(idx[:k])
        train.extend(idx[k:])
    return np.sort(np.asarray(train)), np.sort(np.asarray(held))


def graph_fingerprint(graph: Graph) -> str:
    """The model part of the cache key of every fine-tune: everything that changes the numbers (every node's
    op, wiring, attributes, output quantisation and parameters, the input's shape and quantisation;
    ir.graph.prefix_fingerprints). Analyses stored under the older key (name, node names, parameters and a
    dilation, not the other attributes) are not found by it: they are recomputed once."""
    return prefix_fingerprints(graph)[-1]


def job_key(context: dict, scheme: UpdateScheme) -> str:
    d = dict(context, scheme={k: v for k, v in scheme.to_dict().items() if k != "name"})
    return hashlib.blake2b(json.dumps(d, sort_keys=True).encode(), digest_size=12).hexdigest()


# ----- workers -------------------------------------------------------------------------------------
_WORKER: dict = {}


def _init_worker(graph, train, held, settings, fine_tune, threads):
    _WORKER.update(graph=graph, train=train, held=held, settings=settings, fine_tune=fine_tune)
    if threads:  # a pool worker: keep two workers' progress bars off the terminal (errors still propagate)
        import sys

        sys.stderr = open(os.devnull, "w")
    try:  # one BLAS thread per worker: the workers themselves use the cores
        from threadpoolctl import threadpool_limits

        _WORKER["limit"] = threadpool_limits(threads)
    except ImportError:
        pass


def _run_job(item):
    name, scheme_dict, path = item
    w = _WORKER
    s: AnalysisSettings = w["settings"]
    scheme = UpdateScheme.from_dict(scheme_dict)
    t0 = time.monotonic()
    out = w["fine_tune"](w["graph"], scheme, w["train"], w["held"], epochs=s.epochs, lr=s.lr, seed=s.seed,
                         batch_size=s.batch_size, **s.trainer_options)
    result = {"job": name, "scheme": scheme_dict, "val_acc": float(out["val_acc"]),
              "seconds": round(time.monotonic() - t0, 2)}
    for extra in ("val_loss", "train_acc"):
        if out.get(extra) is not None:
            result[extra] = float(out[extra])
    tmp = Path(str(path) + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    tmp.replace(path)  # atomic: a killed run never leaves a half-written result
    return name, result


def analyze(
    graph: Graph,
    train_dir=None,
    *,
    data=None,
    settings: AnalysisSettings | None = None,
    cache_dir="microtrain-cache",
    workers: int = 2,
    fine_tune=None,
    log=print,
    model_name: str | None = None,
) -> GainTable:
    """Run (or resume) the analysis and return its GainTable. `data` (an ImageData) replaces loading
    `train_dir`; `fine_tune` replaces the trainer (tests)."""
    settings = settings or AnalysisSettings()
    fine_tune = fine_tune or default_fine_tune
    if data is None:
        if train_dir is None:
            raise DatasetError("contribution analysis needs a training folder (or data=)")
        data = load_image_folder(train_dir, graph.resolution, views=settings.views, seed=settings.seed,
                                 channels=graph.input_spec.shape[-1])
        for path, reason in data.skipped:
            log(f"skipped {path}: {reason}")
    tr_idx, ho_idx = holdout_split(data.labels, settings.holdout, settings.seed)
    train, held = data.subset(tr_idx), data.subset(ho_idx)
    context = {"model": graph_fingerprint(graph), "data": data.fingerprint(), "settings": settings.key(),
               "format": 1}
    jobs, bias_ref = plan_jobs(graph, settings)
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    results, todo = {}, []
    for name, scheme in jobs.items():
        path = cache / f"{job_key(context, scheme)}.json"
        if path.exists():
            try:
                results[name] = json.loads(path.read_text())
                continue
            except (OSError, json.JSONDecodeError):
                pass  # a corrupt entry is simply recomputed
        todo.append((name, scheme.to_dict(), path))
    log(f"contribution analysis of {graph.name}: {len(jobs)} fine-tunes ({len(results)} cached), "
        f"{len(train)} train / {len(held)} held-out images, {workers} worker(s), cache {cache}")
    t0 = time.monotonic()
    args = (graph, train, held, settings, fine_tune, 1 if workers > 1 else None)
    if todo and workers > 1:
        import multiprocessing as mp

        # fork: workers inherit the graph and images without copying them through pipes
        with mp.get_context("fork").Pool(workers, _init_worker, args) as pool:
            for done, (name, res) in enumerate(pool.imap_unordered(_run_job, todo), 1):
                results[name] = res
                log(f"  [{done}/{len(todo)}] {name}: acc {100 * res['val_acc']:.1f} % ({res['seconds']:.0f} s)")
    elif todo:
        _init_worker(*args)
        try:
            for done, item in enumerate(todo, 1):
                name, res = _run_job(item)
                results[name] = res
                log(f"  [{done}/{len(todo)}] {name}: acc {100 * res['val_acc']:.1f} % ({res['seconds']:.0f} s)")
        finally:
            _WORKER.clear()
    if todo:
        log(f"analysis took {time.monotonic() - t0:.0f} s")
    return _table(graph, jobs, results, bias_ref, settings, context, len(train), len(held))


def _table(graph, jobs, results, bias_ref, settings, context, n_train, n_held) -> GainTable:
    def value(name):  # larger is better
        r = results[name]
        return r["val_acc"] if settings.metric == "acc" else -r["val_loss"]

    base = value("bias-0")
    bias = {jobs[name].n_bias: value(name) - base for name in results if name.startswith("bias-")}
    ref = value(f"bias-{bias_ref}")
    weights = {}
    for name in results:
        if name.startswith("w"):
            (i, ratio), = jobs[name].weights.items()
            weights[(i, Fraction(ratio).limit_denominator(64))] = value(name) - ref
    meta = {"metric": settings.metric, "runs": {k: {"val_acc": r["val_acc"], "val_loss": r.get("val_loss")}
                                                for k, r in sorted(results.items())},
            "settings": settings.key(), "model_fingerprint": context["model"], "data_fingerprint": context["data"],
            "n_train": n_train, "n_heldout": n_held,
            "seconds": round(sum(r.get("seconds", 0) for r in results.values()), 1)}
    return GainTable(graph.name, results["bias-0"]["val_acc"], bias, weights, bias_ref, meta, settings.metric)

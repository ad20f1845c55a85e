"""Fine-tuning: new head, frozen-prefix cache, epochs with warm-up + cosine schedule, evaluation,
checkpoints and resume. The Python API other modules call is `fine_tune`.

Speed: the frozen prefix (every forward step before the first trained layer) does not change during
training, so its output (the live tensors entering the trained suffix) is computed once per image
view and kept in a process-wide cache keyed by (numerics, data content, prefix parameters). Later
runs, with other seeds, learning rates or schemes, reuse it; a deeper boundary is computed from a
shallower cached one.
"""
from __future__ import annotations

import hashlib
import math
import os
import time
from pathlib import Path

import numpy as np

from ..autodiff import build_training_graph
from ..errors import GraphError, MicrotrainError
from ..ir.graph import Graph, prefix_fingerprints
from ..progress import Progress
from ..quant.dequantize import dequantize_graph, dequantize_input
from ..quant.head import replace_head
from ..sparse.scheme import UpdateScheme
from .datasets import ImageData, as_image_data
from .memory import retain_freed_memory
from .training import TrainingRuntime, live_tensors, run_nodes


# ----- the frozen-prefix cache ----------------------------------------------------------------------------
_PREFIX_CACHE: dict[tuple, dict[str, np.ndarray]] = {}
_PREFIX_CACHE_LIMIT = 3 * 2**30  # bytes; oldest entries are dropped beyond this
_PREFIX_DISK: dict[str, Path] = {}


def set_prefix_disk_cache(folder) -> None:
    """Also keep prefix features as .npz files in `folder` (None: memory only). Experiments spread over
    processes and sessions then compute each (data, prefix, numerics) once; put it outside the repo."""
    _PREFIX_DISK.clear()
    if folder is not None:
        _PREFIX_DISK["dir"] = Path(folder)
        Path(folder).mkdir(parents=True, exist_ok=True)


def _disk_path(key) -> Path | None:
    if "dir" not in _PREFIX_DISK:
        return None
    return _PREFIX_DISK["dir"] / (hashlib.blake2b(repr(key).encode(), digest_size=16).hexdigest() + ".npz")


def prefix_features(graph: Graph, data: ImageData, stop: int, numerics: str, batch_size: int = 64,
                    progress: bool = False) -> dict[str, np.ndarray]:
    """{tensor: (N, V, ...)} the live tensors entering node `stop`, for every view of every image."""
    if data._parent is not None:  # a subset: slice the parent's features (computed once for all subsets)
        parent = prefix_features(graph, data._parent, stop, numerics, batch_size, progress)
        return {t: a[data._index] for t, a in parent.items()}
    fps = prefix_fingerprints(graph)
    key = (numerics, data.fingerprint(), fps[stop])
    if key in _PREFIX_CACHE:
        return _PREFIX_CACHE[key]
    disk = _disk_path(key)
    if disk is not None and disk.exists():
        try:
            with np.load(disk, allow_pickle=False) as z:
                _PREFIX_CACHE[key] = {t: z[t] for t in z.files}
            _trim_cache()
            return _PREFIX_CACHE[key]
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache file is recomputed and rewritten
    # resume from the deepest cached boundary of the same prefix, else from the input
    start, feats = 0, None
    for (num, dfp, fp), value in _PREFIX_CACHE.items():
        if num == numerics and dfp == data.fingerprint() and fp in fps[: stop + 1]:
            k = fps.index(fp)
            if k > start or feats is None:
                start, feats = k, value
    n, v = data.views.shape[:2]
    flat = n * v
    if feats is None:
        x = data.views.reshape((flat,) + data.views.shape[2:])
        feats_flat = {graph.input: x}
    else:
        feats_flat = {t: a.reshape((flat,) + a.shape[2:]) for t, a in feats.items()}
    out = {t: [] for t in live_tensors(graph, stop)}
    with Progress(flat, "prefix cache", enabled=None if progress else False) as bar:
        for b in range(0, flat, batch_size):
            vals = {t: a[b : b + batch_size] for t, a in feats_flat.items()}
            if graph.input in vals and numerics == "float32":
                vals[graph.input] = dequantize_input(graph, vals[graph.input])  # the spec keeps the int8 quant
            vals = run_nodes(graph, vals, start, stop)
            for t in out:
                out[t].append(vals[t])
            bar.update(min(batch_size, flat - b))
    result = {t: np.concatenate(a).reshape((n, v) + a[0].shape[1:]) for t, a in out.items()}
    _PREFIX_CACHE[key] = result
    _trim_cache()
    if disk is not None:  # atomic: a killed process never leaves half a file under the final name
        tmp = disk.with_name(f"{disk.stem}.tmp{os.getpid()}.npz")
        np.savez(tmp, **result)
        tmp.replace(disk)
    return result


def _trim_cache():
    total = sum(a.nbytes for v in _PREFIX_CACHE.values() for a in v.values())
    while total > _PREFIX_CACHE_LIMIT and len(_PREFIX_CACHE) > 1:
        k = next(iter(_PREFIX_CACHE))
        total -= sum(a.nbytes for a in _PREFIX_CACHE.pop(k).values())


def clear_prefix_cache():
    _PREFIX_CACHE.clear()


# ----- schedule and evaluation -----------------------------------------------------------------------------
def lr_at(step: int, total: int, warmup: int, lr: float) -> float:
    """Linear warm-up over `warmup` steps, then cosine decay to 0 at `total`."""
    if step < warmup:
        return lr * (step + 1) / warmup
    span = max(total - warmup, 1)
    return lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / span))


def evaluate(runtime: TrainingRuntime, feats: dict[str, np.ndarray], labels: np.ndarray, batch_size: int = 256):
    """(accuracy, mean loss) on view 0 of cached boundary features."""
    preds, loss = predict_features(runtime, feats, labels, batch_size)
    return float(np.mean(preds == labels)) if len(labels) else 0.0, loss


def predict_features(runtime: TrainingRuntime, feats: dict[str, np.ndarray], labels: np.ndarray,
                     batch_size: int = 256) -> tuple[np.ndarray, float]:
    """(predicted class per image, mean loss) on view 0 of cached boundary features."""
    from ..ops.loss import softmax_cross_entropy

    preds, losses = [], []
    for b in range(0, len(labels), batch_size):
        feeds = {t: a[b : b + batch_size, 0] for t, a in feats.items()}
        logits = runtime.logits(feeds)
        y = labels[b : b + batch_size]
        preds.append(logits.argmax(1))
        losses.append(softmax_cross_entropy(logits, y)[0] * len(y))
    pred = np.concatenate(preds) if preds else np.zeros(0, np.int64)
    return pred, float(np.sum(losses) / max(len(labels), 1))


def _val_metrics(runtime, feats, labels, n_classes) -> dict:
    """val_acc, val_loss, val_balanced_acc (mean per-class accuracy) and val_confusion (rows = true class)."""
    from .metrics import balanced_accuracy, confusion_matrix

    preds, loss = predict_features(runtime, feats, labels)
    conf = confusion_matrix(labels, preds, n_classes)
    return {"val_acc": float(np.trace(conf) / max(len(labels), 1)), "val_loss": loss,
            "val_balanced_acc": balanced_accuracy(conf), "val_confusion": conf.tolist()}


# ----- fine-tuning -------------------------------------------------------------------------------------------
def fine_tune(graph: Graph, scheme, train_data, val_data, *, epochs: int, lr: float, seed: int = 0,
              batch_size: int = 32, qas: bool = True, fp32: bool = False, rounding: str = "stochastic",
              momentum: float = 0.0, warmup_epochs: float | None = None, eval_every: int = 0,
              progress: bool = False, checkpoint_dir=None, resume=None, log=None, guard=True,
              recover_collapse: bool = True, backward: str = "float") -> dict:
    """Fine-tune `graph` (an int8 Graph, e.g. the pretrained ImageNet model) on `train_data`.

    scheme: an UpdateScheme, or a resolution {node: TrainSpec} (UpdateScheme.resolve). If the graph's
    class count differs from the data's, the classifier is replaced by a new N-class head first.
    Data: ImageData (load_image_folder) or (x, labels) int8 arrays. fp32=True trains the dequantised
    float graph (baseline); qas/rounding apply to int8 training. Returns dict(val_acc, val_loss,
    val_balanced_acc, val_confusion, train_acc, history, graph, seconds, ...). `graph` is the trained graph (float32 in fp32 mode).
    guard: True (default GuardConfig), a GuardConfig, or False. The divergence guard (runtime/guard.py)
    undoes the update of a step whose loss is non-finite or spikes, or that left non-finite parameters
    (and rolls back to the last good parameters after repeated rejections); result["guard"] holds its
    counts, each history record the epoch's rejected steps. Its state is not checkpointed: a resumed
    run starts a new warm-up.
    recover_collapse: when an epoch ends with training accuracy back at chance after the run had learned
    (CollapseRecovery: the loss stays finite, so the step guard cannot see it), restore the parameters of
    the epoch with the lowest training loss and continue with the learning rate divided by 3 (at most
    3 times); the epoch's record says so (`collapse_rollback`, `lr_scale`).
    backward: "float" (default) or "int16" (pointwise input gradients in integers; int8 training only,
    docs/training-semantics.md section 4b).
    """
    retain_freed_memory()  # the step's large temporaries are reused, not faulted in again (runtime/memory.py)
    with single_threaded_blas():
        return _fine_tune(graph, scheme, train_data, val_data, epochs=epochs, lr=lr, seed=seed,
                          batch_size=batch_size, qas=qas, fp32=fp32, rounding=rounding, momentum=momentum,
                          warmup_epochs=warmup_epochs, eval_every=eval_every, progress=progress,
                          checkpoint_dir=checkpoint_dir, resume=resume, log=log, guard=guard,
                          recover_collapse=recover_collapse, backward=backward)


def single_threaded_blas():
    """The trained suffix multiplies small matrices: BLAS threads only spin (10x slower on a busy
    2-core machine), so training runs BLAS on one thread. It also fixes the float32 results: OpenBLAS's
    sgemm sums in another order with more threads (measured: most elements of a (16, 96) @ (96, 576)
    product change in the last bits), so a simulation outside fine_tune takes this too."""
    try:
        from threadpoolctl import threadpool_limits

        return threadpool_limits(1, user_api="blas")
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        import contextlib

        return contextlib.nullcontext()


def _fine_tune(graph, scheme, train_data, val_data, *, epochs, lr, seed, batch_size, qas, fp32, rounding,
               momentum, warmup_epochs, eval_every, progress, checkpoint_dir, resume, log, guard,
               recover_collapse, backward="float") -> dict:
    t0 = time.monotonic()
    train, val = as_image_data(train_data), as_image_data(val_data) if val_data is not None else None
    if graph.dtype != "int8":
        raise GraphError(f"graph {graph.name!r}: fine_tune needs an int8 graph (use fp32=True for float training)")
    n_classes = max(train.num_classes, int(train.labels.max()) + 1)
    g = replace_head(graph, n_classes) if graph.num_classes != n_classes else graph.copy()
    for name, d in (("training", train), ("validation", val)):  # else the convs silently read other channels
        if d is not None and d.views.shape[-1] != g.input_spec.shape[-1]:
            raise GraphError(f"graph {graph.name!r}: input has {g.input_spec.shape[-1]} channels, the {name} data "
                             f"{d.views.shape[-1]} (a grayscale model: load images with channels=1)")
    if g.resolution != train.views.shape[2]:
        g = g.with_resolution(train.views.shape[2])
    resolution = scheme.resolve(g) if isinstance(scheme, UpdateScheme) else dict(scheme)
    state = {"epoch": 0, "step": 0, "history": []}
    arrays = {}
    if resume is not None:
        from .checkpoint import load_checkpoint

        g_saved, state, arrays = load_checkpoint(resume)
        if g_saved.dtype != ("float32" if fp32 else "int8"):
            raise MicrotrainError(f"{resume}: checkpoint holds a {g_saved.dtype} graph, this run is "
                                  f"{'fp32' if fp32 else 'int8'}")
    gt = dequantize_graph(g) if fp32 else g
    if resume is not None:
        _load_params(gt, g_saved, resume)
    tg = build_training_graph(gt, resolution, qas=qas, rounding=rounding, momentum=momentum, backward=backward)
    rt = TrainingRuntime(tg, seed=seed)
    rt.load_state_arrays(arrays)
    numerics = tg.numerics
    step_guard = _StepGuard(rt, resolution, guard) if guard is not False else None
    # the prefix is frozen: its features are computed before any update (or come from the cache)
    feats = prefix_features(gt, train, tg.n_prefix, numerics, progress=progress)
    val_feats = prefix_features(gt, val, tg.n_prefix, numerics, progress=progress) if val else None

    n, n_views = len(train), train.num_views
    steps_per_epoch = math.ceil(n / batch_size)
    total = epochs * steps_per_epoch
    warm = steps_per_epoch * (max(1, epochs // 10) if warmup_epochs is None else warmup_epochs)
    warm = int(min(warm, total))
    history = list(state["history"])
    step = int(state["step"])
    lr_scale = float(state.get("lr_scale", 1.0))
    recovery = CollapseRecovery(rt, resolution, n_classes) if recover_collapse else None
    bar = Progress(total, f"train {graph.name}", enabled=None if progress else False)
    bar.update(step)
    for epoch in range(int(state["epoch"]), epochs):
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, epoch])
        view = rng.integers(n_views, size=n)
        perm = rng.permutation(n)
        loss_sum, correct, counted, rejected = 0.0, 0, 0, 0
        for b in range(0, n, batch_size):
            idx = perm[b : b + batch_size]
            feeds = {t: a[idx, view[idx]] for t, a in feats.items()}
            out = rt.train_step(feeds, train.labels[idx], lr_scale * lr_at(step, total, warm, lr), step)
            if step_guard is not None and not step_guard.accept(out["loss"]):
                rejected += 1  # update undone; the batch counts in neither loss nor accuracy
            else:
                loss_sum += out["loss"] * len(idx)
                correct += int((out["logits"].argmax(1) == train.labels[idx]).sum())
                counted += len(idx)
            step += 1
            bar.update(1, postfix=f"epoch {epoch + 1} loss {out['loss']:.3f}")
        rec = {"epoch": epoch + 1, "train_loss": loss_sum / counted if counted else float("nan"),
               "train_acc": correct / max(counted, 1), "lr_end": lr_scale * lr_at(step - 1, total, warm, lr)}
        if step_guard is not None:
            rec["guard_rejected"] = rejected
        if recovery is not None and recovery.after_epoch(rec):  # parameters are back at the best epoch's
            lr_scale /= 3
            rec["collapse_rollback"], rec["lr_scale"] = recovery.restored_epoch, lr_scale
            if step_guard is not None:
                step_guard.resync()
        if val_feats is not None and eval_every and ((epoch + 1) % eval_every == 0 or epoch + 1 == epochs):
            m = _val_metrics(rt, val_feats, val.labels, n_classes)
            rec.update(val_acc=m["val_acc"], val_loss=m["val_loss"], val_balanced_acc=m["val_balanced_acc"])
        if not np.isfinite(rec["train_loss"]):
            raise MicrotrainError(f"training diverged at epoch {epoch + 1} (loss {rec['train_loss']}); lower the lr ({lr})")
        history.append(rec)
        if checkpoint_dir is not None:
            from .checkpoint import save_checkpoint

            save_checkpoint(checkpoint_dir, gt, {"epoch": epoch + 1, "step": step, "history": history,
                                                 "lr_scale": lr_scale,
                                                 "args": {"epochs": epochs, "lr": lr, "seed": seed, "qas": qas,
                                                          "fp32": fp32, "rounding": rounding,
                                                          "batch_size": batch_size, "momentum": momentum,
                                                          "backward": backward}},
                            rt.state_arrays())
        if log is not None:  # after the checkpoint: a log that stops the run leaves this epoch saved
            log(rec)
    bar.close()
    result = {"history": history, "graph": gt, "training_graph": tg, "steps": step,
              "n_prefix": tg.n_prefix, "boundary": list(tg.boundary),
              "train_acc": history[-1]["train_acc"] if history else None}
    if val_feats is not None:  # val_confusion: rows = true class, columns = predicted (runtime/metrics.py)
        result.update(_val_metrics(rt, val_feats, val.labels, n_classes))
    else:
        result["val_acc"] = result["val_loss"] = result["val_balanced_acc"] = result["val_confusion"] = None
    result["guard"] = step_guard.guard.report() if step_guard is not None else None
    result["collapse_rollbacks"] = recovery.rollbacks if recovery is not None else 0
    result["seconds"] = time.monotonic() - t0
    return result


class _StepGuard:
    """DivergenceGuard around TrainingRuntime.train_step, which updates in place: the check runs after the
    update, and a rejected step restores the snapshot taken at the last accepted step (the parameters
    before this update), momentum buffers included, so a rejected step is exactly a skipped one."""

    def __init__(self, rt: TrainingRuntime, resolution, config):
        from .guard import DivergenceGuard, GuardConfig

        trained = {name: rt.nodes[name] for name in resolution if name in rt.nodes}
        self.params = {f"{name}.{k}": node.params[k] for name, node in trained.items()
                       for k in ("weight", "bias") if k in node.params}
        if config is not True and not isinstance(config, GuardConfig):
            raise TypeError(f"fine_tune: guard must be True, False or a GuardConfig, got {config!r}")
        self.rt = rt
        self.guard = DivergenceGuard(self.params, config if isinstance(config, GuardConfig) else None)
        self._momentum = dict(rt.momentum)  # buffers are replaced, never mutated: a shallow copy is a snapshot

    def resync(self) -> None:
        """The parameters were replaced from outside (a collapse rollback): take them as the last good ones."""
        self.guard.rebase()
        self._momentum = dict(self.rt.momentum)

    def accept(self, loss) -> bool:
        # a non-finite loss is its own reason; otherwise NaN/inf in float parameters (a bad gradient) rolls back
        finite = not np.all(np.isfinite(loss)) or all(np.all(np.isfinite(a)) for a in self.params.values()
                                                      if a.dtype.kind == "f")
        decision = self.guard.check(loss, None, params_finite=None if finite else False)
        if decision.apply:
            self._momentum = dict(self.rt.momentum)
            return True
        self.guard.restore()  # "skip" too: this step's update already happened in place
        self.rt.momentum = dict(self._momentum)
        return False


class CollapseRecovery:
    """Undo a collapse to chance. An lr at the edge of stability can push a run into a state it never
    leaves: activations die, the logits saturate, their clamp masks stop every gradient, and the loss
    stays finite, so the step guard sees nothing. At the end of each epoch: an epoch whose training
    accuracy is at most 1.2x chance, after an epoch that reached 1.5x chance, is a collapse; the trained
    parameters (and momentum) go back to the snapshot of the epoch with the lowest training loss and the
    caller lowers the lr. Uses training figures only (never validation data). At most `max_rollbacks`."""

    def __init__(self, rt: TrainingRuntime, resolution, n_classes: int, max_rollbacks: int = 3):
        trained = {name: rt.nodes[name] for name in resolution if name in rt.nodes}
        self.params = {f"{name}.{k}": node.params[k] for name, node in trained.items()
                       for k in ("weight", "bias") if k in node.params}
        self.rt, self.chance, self.max_rollbacks = rt, 1.0 / max(n_classes, 1), max_rollbacks
        self.best_acc, self.best_loss = 0.0, float("inf")
        self.snapshot, self.snapshot_epoch, self.restored_epoch, self.rollbacks = None, None, None, 0

    def after_epoch(self, rec: dict) -> bool:
        """True when this epoch collapsed and the parameters were restored."""
        acc, loss = rec["train_acc"], rec["train_loss"]
        collapsed = (acc <= 1.2 * self.chance and self.best_acc >= 1.5 * self.chance
                     and self.snapshot is not None and self.rollbacks < self.max_rollbacks)
        if collapsed:
            for k, a in self.snapshot["params"].items():
                self.params[k][...] = a  # in place: the runtime's nodes hold these arrays
            self.rt.momentum = dict(self.snapshot["momentum"])
            self.rollbacks += 1
            self.restored_epoch = self.snapshot_epoch
            return True
        self.best_acc = max(self.best_acc, acc)
        if np.isfinite(loss) and loss < self.best_loss:
            self.best_loss = loss
            self.snapshot = {"params": {k: a.copy() for k, a in self.params.items()},
                             "momentum": {k: v.copy() for k, v in self.rt.momentum.items()}}
            self.snapshot_epoch = rec["epoch"]
        return False


def _load_params(target: Graph, saved: Graph, source) -> None:
    """Copy the saved parameters into `target` (same structure); refuse a checkpoint of another graph."""
    names = [n.name for n in target.nodes]
    if names != [n.name for n in saved.nodes]:
        raise MicrotrainError(f"{source}: checkpoint graph has other layers than {target.name!r}")
    for a, b in zip(target.nodes, saved.nodes):
        if set(a.params) != set(b.params) or any(a.params[k].shape != b.params[k].shape for k in a.params):
            raise MicrotrainError(f"{source}: layer {a.name!r} has other parameter shapes in the checkpoint")
        a.params = {k: np.array(v, dtype=a.params[k].dtype) for k, v in b.params.items()}


def save_trained(result: dict, path) -> Path:
    from ..ir.serialize import save_graph

    return save_graph(result["graph"], Path(path))

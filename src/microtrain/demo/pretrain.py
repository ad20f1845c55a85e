"""Pretraining the demo CNN on the first task: with torch when it is installed (BatchNorm, Adam, then the
torch.fx frontend), else with the project's own float runtime (autodiff + runtime/training in float32
numerics, SGD with momentum). Both give a float32 Graph with the same layer names."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ..autodiff import build_training_graph
from ..errors import MicrotrainError
from ..ir.graph import Graph
from ..quant.ptq import as_int8_input, input_to_float
from ..runtime.training import TrainingRuntime
from ..sparse.scheme import UpdateScheme
from . import model as demo_model

BACKENDS = ("auto", "numpy", "torch")


@dataclass
class Pretrained:
    graph: Graph  # float32
    backend: str  # "torch" | "numpy"
    losses: list[float] = field(default_factory=list)  # mean training loss per epoch
    seconds: float = 0.0


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def cosine_lr(lr: float, step: int, total: int, warmup: int = 0) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    t = (step - warmup) / max(total - warmup, 1)
    return 0.5 * lr * (1.0 + np.cos(np.pi * t))


def pretrain_numpy(train, num_classes: int, *, epochs: int, lr: float = 0.02, batch_size: int = 32,
                   seed: int = 0, resolution: int = 16, log=None) -> Pretrained:
    """Full float training of demo_model.float_graph with the project's own float runtime."""
    t0 = time.perf_counter()
    graph = demo_model.float_graph(num_classes, resolution, train.images.shape[-1], seed)
    x = input_to_float(as_int8_input(train.images))
    demo_model.data_dependent_init(graph, x[:256])  # no BatchNorm here: normalise at initialisation instead
    tg = build_training_graph(graph, UpdateScheme.full(graph).resolve(graph), qas=False, rounding="none",
                              momentum=0.9)
    rt = TrainingRuntime(tg, seed)
    y = train.labels
    rng = np.random.default_rng(seed)
    per_epoch = -(-len(y) // batch_size)
    total, step, losses = epochs * per_epoch, 0, []
    for epoch in range(epochs):
        perm, epoch_loss = rng.permutation(len(y)), []
        for i in range(0, len(y), batch_size):
            b = perm[i : i + batch_size]
            out = rt.train_step({graph.input: x[b]}, y[b], cosine_lr(lr, step, total, per_epoch), step)
            epoch_loss.append(float(out["loss"]))
            step += 1
        losses.append(float(np.mean(epoch_loss)))
        if not np.isfinite(losses[-1]):
            raise MicrotrainError(f"demo pretraining diverged at epoch {epoch + 1} (lr {lr}); use a smaller --lr")
        if log:
            log(f"  pretrain epoch {epoch + 1}/{epochs}: loss {losses[-1]:.3f}")
    return Pretrained(graph, "numpy", losses, time.perf_counter() - t0)


def pretrain_torch(train, num_classes: int, *, epochs: int, lr: float = 3e-3, batch_size: int = 32,
                   seed: int = 0, resolution: int = 16, log=None) -> Pretrained:
    """Train the torch twin (BatchNorm, Adam, cosine schedule), then import it with torch.fx (BN folded)."""
    import torch
    import torch.nn.functional as F

    from ..frontends.torch_fx import import_torch

    t0 = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is several times faster than two on a busy 2-core box
    try:
        return _train_torch(torch, F, import_torch, train, num_classes, epochs, lr, batch_size, seed, resolution,
                            log, t0)
    finally:
        torch.set_num_threads(threads)


def _train_torch(torch, F, import_torch, train, num_classes, epochs, lr, batch_size, seed, resolution, log, t0):
    torch.manual_seed(seed)
    net = demo_model.torch_module(num_classes, train.images.shape[-1], seed)
    x = torch.from_numpy(np.ascontiguousarray(input_to_float(as_int8_input(train.images)).transpose(0, 3, 1, 2)))
    y = torch.from_numpy(train.labels)
    opt = torch.optim.Adam(net.parameters(), lr)
    per_epoch = -(-len(y) // batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * per_epoch)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    net.train()
    for epoch in range(epochs):
        perm, epoch_loss = torch.randperm(len(y), generator=gen), []
        for i in range(0, len(y), batch_size):
            b = perm[i : i + batch_size]
            opt.zero_grad()
            loss = F.cross_entropy(net(x[b]), y[b])
            loss.backward()
            opt.step()
            sched.step()
            epoch_loss.append(loss.item())
        losses.append(float(np.mean(epoch_loss)))
        if log:
            log(f"  pretrain epoch {epoch + 1}/{epochs}: loss {losses[-1]:.3f}")
    net.eval()
    graph = import_torch(net, resolution, train.images.shape[-1], name="demo-cnn")
    return Pretrained(graph, "torch", losses, time.perf_counter() - t0)


def pretrain(train, num_classes: int, *, backend: str = "auto", epochs: int, seed: int = 0, resolution: int = 16,
             log=None) -> Pretrained:
    if backend not in BACKENDS:
        raise MicrotrainError(f"pretraining backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "torch" and not torch_available():
        raise MicrotrainError("--pretrain torch needs torch: pip install 'microtrain[torch]' (or use --pretrain numpy)")
    use_torch = backend == "torch" or (backend == "auto" and torch_available())
    fn = pretrain_torch if use_torch else pretrain_numpy
    return fn(train, num_classes, epochs=epochs, seed=seed, resolution=resolution, log=log)

"""`microtrain demo --task vowels`: on-device adaptation of a 1-D CNN to unseen speakers (JapaneseVowels,
12 LPC channels, ../shared/data/timeseries), sized for a Cortex-M4.

Pretrain (torch, float, BatchNorm) on speakers 1-5 (their TRAIN cases), quantise (PTQ, int8), replace the
head with a 4-class one and adapt to speakers 6-9 (their TRAIN cases; evaluated on their TEST cases, a
different recording occasion): fp32 / int8 without QAS / int8 + QAS with a sparse scheme searched under a
memory budget and with a fixed scheme (all biases + the last two convs' weights), and head only, each for
several seeds. Then the int8 model with the searched scheme is compiled to C, trained on the host and as
Cortex-M4 firmware under QEMU from the same start on the same samples: the trained parameters must be
bit-identical and the firmware must fit 64 KB of SRAM.
The per-channel input normalisation (runtime/timeseries.py) is stored in the graph's meta.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DatasetError, MicrotrainError
from ..models import shared_dir
from ..quant.ptq import accuracy_int8, input_to_float, quantize
from ..runtime.timeseries import Augment, Normalisation, read_ts, series_views

LENGTH = 32  # every JapaneseVowels case (7-29 steps) fits: shorter ones are padded with the channel mean
PRETRAIN_SPEAKERS, NEW_SPEAKERS = ("1", "2", "3", "4", "5"), ("6", "7", "8", "9")
M4_SRAM = 64 * 1024


@dataclass
class VowelsConfig:
    out_dir: Path = Path("microtrain-demo-vowels")
    seeds: tuple = (0, 1, 2)
    budget: str = "6KB"
    pretrain_epochs: int = 60
    adapt_epochs: int = 20
    adapt_lr: float = 0.05
    adapt_batch: int = 8
    views: int = 4
    fast: bool = False
    compile_c: bool = True
    qemu: bool = True
    device_samples: int = 16
    seed: int = 0  # for the sparse search (demo.pipeline._sparse_search)
    analysis_epochs: int = 10  # the contribution analysis' fine-tunes (with the image demo's 3, it kept only the head)


def data_root() -> Path:
    root = shared_dir() / "data" / "timeseries"
    if not (root / "JapaneseVowels" / "JapaneseVowels_TRAIN.ts").is_file():
        raise DatasetError(f"{root}/JapaneseVowels/JapaneseVowels_TRAIN.ts not found: set MICROTRAIN_SHARED to the "
                           "folder holding data/timeseries (the shared assets)")
    return root / "JapaneseVowels"


def speakers(series, names):
    keep = [series.classes.index(n) for n in names]
    idx = np.flatnonzero(np.isin(series.labels, keep))
    sub = series.subset(idx)
    remap = {old: new for new, old in enumerate(keep)}
    sub.labels = np.array([remap[v] for v in sub.labels], np.int64)
    sub.classes = list(names)
    return sub


def tiny_cnn(channels: int, classes: int):
    """About 6 K parameters: conv k5, two depthwise-separable blocks (one strided), global pool, linear."""
    import torch.nn as nn

    def block(cin, cout, k, stride=1, groups=1):
        return [nn.Conv1d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias=False),
                nn.BatchNorm1d(cout), nn.ReLU6()]

    return nn.Sequential(*block(channels, 24, 5), *block(24, 24, 3, 2, 24), *block(24, 48, 1),
                         *block(48, 48, 3, 1, 48), *block(48, 64, 1), nn.AdaptiveAvgPool1d(1), nn.Flatten(),
                         nn.Linear(64, classes))


def pretrain_torch(data, classes: int, epochs: int, seed: int, log):
    try:
        import torch
    except ImportError:
        raise MicrotrainError("the vowels demo pretrains with torch: pip install 'microtrain[torch]'") from None
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    model = tiny_cnn(data.views.shape[-1], classes)
    # the float model reads r = q * 2/255, the device input (runtime/timeseries.py)
    x = torch.tensor(input_to_float(data.views)[:, :, 0].transpose(0, 1, 3, 2))  # (N, V, C, L)
    y = torch.tensor(data.labels)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    g = torch.Generator().manual_seed(seed)
    losses = []
    for epoch in range(epochs):
        model.train()
        view = torch.randint(0, x.shape[1], (len(y),), generator=g)
        perm = torch.randperm(len(y), generator=g)
        total = 0.0
        for i in range(0, len(y), 16):
            b = perm[i : i + 16]
            loss = torch.nn.functional.cross_entropy(model(x[b, view[b]]), y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(b)
        sched.step()
        losses.append(total / len(y))
    log(f"pretrained {epochs} epochs, final loss {losses[-1]:.3f}")
    return model.eval(), losses


def run_vowels(cfg: VowelsConfig, log=print) -> dict:
    from ..frontends.torch_fx import import_torch
    from ..quant.head import replace_head
    from ..runtime.trainer import fine_tune
    from ..sparse.scheme import UpdateScheme

    root = data_root()  # missing data fails before anything is written
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    res: dict = {"config": {k: str(v) for k, v in cfg.__dict__.items()}}
    train_all = read_ts(root / "JapaneseVowels_TRAIN.ts")
    test_all = read_ts(root / "JapaneseVowels_TEST.ts", classes=train_all.classes)
    pre_tr, pre_te = speakers(train_all, PRETRAIN_SPEAKERS), speakers(test_all, PRETRAIN_SPEAKERS)
    new_tr, new_te = speakers(train_all, NEW_SPEAKERS), speakers(test_all, NEW_SPEAKERS)
    norm = Normalisation.fit(pre_tr)  # fitted on the pretraining data only; the device keeps it fixed
    aug = Augment(max_shift=3, scale=0.2, noise=0.1)
    pre_views = series_views(pre_tr, norm, LENGTH, cfg.views, aug, seed=1)
    pre_val = series_views(pre_te, norm, LENGTH)
    new_train = series_views(new_tr, norm, LENGTH, cfg.views, aug, seed=2)
    new_val = series_views(new_te, norm, LENGTH)
    res["data"] = {"set": "JapaneseVowels", "length": LENGTH, "pretrain_speakers": list(PRETRAIN_SPEAKERS),
                   "new_speakers": list(NEW_SPEAKERS), "pretrain_train": len(pre_tr), "pretrain_test": len(pre_te),
                   "new_train": len(new_tr), "new_test": len(new_te), "normalisation": norm.to_meta(),
                   "augment": aug.__dict__, "views": cfg.views}
    log(f"data: speakers {PRETRAIN_SPEAKERS} pretrain ({len(pre_tr)} cases), unseen speakers {NEW_SPEAKERS}: "
        f"{len(new_tr)} to adapt on, {len(new_te)} to test")

    model, losses = pretrain_torch(pre_views, len(PRETRAIN_SPEAKERS), 15 if cfg.fast else cfg.pretrain_epochs, 0, log)
    fgraph = import_torch(model, length=LENGTH, channels=norm.mean.size, name="vowels-cnn")
    fgraph.meta["input_normalisation"] = norm.to_meta()
    q8 = quantize(fgraph, pre_views.views[:, 0][:128], name="vowels-cnn-int8")
    params = int(sum(n.params["weight"].size + n.params["bias"].size for n in q8.convs()))
    res["pretrain"] = {"losses": losses, "params": params,
                       "int8_test_acc_pretrain_speakers": accuracy_int8(q8, pre_val.x, pre_val.labels)}
    log(f"int8 model: {params} parameters, {res['pretrain']['int8_test_acc_pretrain_speakers']:.1%} on the pretraining "
        "speakers' test cases")

    graph = replace_head(q8, len(NEW_SPEAKERS))
    scheme, info = _search(graph, new_train, cfg, log)
    res["sparse"] = info
    epochs = 8 if cfg.fast else cfg.adapt_epochs
    common = dict(epochs=epochs, lr=cfg.adapt_lr, batch_size=cfg.adapt_batch)
    n = len(graph.indexed_convs())
    last_two = UpdateScheme(n, {n - 2: 1.0, n - 1: 1.0}, name="last-two")  # a fixed, larger update to compare
    setups = {}
    for label, sch in (("searched", scheme), ("all biases + last 2 convs' weights", last_two)):
        for numerics, opts in (("fp32", dict(fp32=True)), ("int8", dict(qas=False)), ("int8+QAS", dict(qas=True))):
            setups[f"{numerics}, {label}"] = (sch, opts)
    setups["head only (int8+QAS)"] = (UpdateScheme.head_only(), dict(qas=True))
    table = {}
    adapted = None
    for name, (sch, opts) in setups.items():
        accs = []
        for seed in cfg.seeds:
            r = fine_tune(graph, sch, new_train, (new_val.x, new_val.labels), seed=seed, **common, **opts)
            accs.append(float(r["val_acc"]))
            if name == "int8+QAS, searched" and adapted is None:
                adapted = r["graph"]
        table[name] = accs
        log(f"{name:45s} " + " ".join(f"{a:.1%}" for a in accs))
    res["adapt"] = {"epochs": epochs, "lr": cfg.adapt_lr, "batch": cfg.adapt_batch, "seeds": list(cfg.seeds),
                    "test_acc": table, "before": accuracy_int8(graph, new_val.x, new_val.labels)}
    from ..ir.serialize import save_graph

    save_graph(adapted, out / "adapted-int8.json")
    if cfg.compile_c:
        res["device"] = _device(graph, scheme, new_train, cfg, out, log)
    res["seconds"] = round(time.perf_counter() - t0, 1)
    (out / "results.json").write_text(json.dumps(res, indent=1, default=str) + "\n")
    return res


def _search(graph, data, cfg, log):
    from types import SimpleNamespace

    from .pipeline import _sparse_search

    ns = SimpleNamespace(fast=cfg.fast, adapt_lr=cfg.adapt_lr, seed=cfg.seed, out_dir=Path(cfg.out_dir), budget=cfg.budget,
                         analysis_epochs=4 if cfg.fast else cfg.analysis_epochs)
    scheme, info = _sparse_search(graph, data.x, data.labels, ns, log)
    log(f"searched scheme under {cfg.budget}: {info['scheme_text']} ({info['extra_bytes']:.0f} B)")
    return scheme, {k: v for k, v in info.items() if k != "analysis_points"}


def _device(graph, scheme, data, cfg, out: Path, log) -> dict:
    """C on the host and Cortex-M4 firmware under QEMU: same start, same samples, same parameters?"""
    import shutil

    from ..codegen import compile_model
    from ..targets.host import HostModel, build_host

    if shutil.which("gcc") is None:
        return {"skipped": "gcc not found"}
    n = min(cfg.device_samples, len(data))
    x, y = data.x[:n], data.labels[:n]
    compiled = compile_model(graph, scheme, out / "c-project", lr=0.02, seed=0)
    host = HostModel(build_host(out / "c-project"))
    initial = host.export_params()
    for i in range(n):
        host.train_step(x[i], int(y[i]))
    rep = compiled.report
    info = {"planned_sram": rep.total_sram_bytes, "planned_flash": rep.flash_bytes, "samples": n,
            "params_changed": host.export_params() != initial}
    if not cfg.qemu or shutil.which("qemu-system-arm") is None:
        info["qemu"] = "skipped (disabled or qemu-system-arm missing)"
        return info
    from ..targets.cortex_m import ToolchainError, find_toolchain
    from ..targets.cortex_m.project import build_project
    from ..targets.cortex_m.session import cost_report, run_session

    try:
        find_toolchain()
    except ToolchainError as e:
        info["qemu"] = f"skipped ({e})"
        return info
    build, regions = build_project(out / "c-project", out / "firmware-m4", "cortex-m4")
    sess = run_session(build.elf, "cortex-m4", train=(x, y), count=True, timeout=600)
    step = cost_report(sess.instructions, regions, "train")
    info.update(cpu="cortex-m4 (qemu mps2-an386)", firmware_sram=build.usage.ram, firmware_flash=build.usage.flash,
                stack_used=sess.stack_used, fits_64kb=build.usage.ram <= M4_SRAM,
                instructions_per_step=step.per_call if step else None,
                params_bit_identical_to_host=host.export_params() == sess.params)
    log(f"Cortex-M4 under QEMU: {n} steps, parameters {'bit-identical to' if info['params_bit_identical_to_host'] else 'DIFFER from'} "
        f"the host build's; firmware SRAM {build.usage.ram} B (64 KB: {info['fits_64kb']}), flash {build.usage.flash} B, "
        f"{(step.per_call if step else 0) / 1e6:.2f} M instructions per step")
    return info


def format_table(res: dict) -> str:
    a = res["adapt"]
    lines = ["| variant | " + " | ".join(f"seed {s}" for s in a["seeds"]) + " | mean ± s.d. |",
             "|---|" + "---|" * (len(a["seeds"]) + 1)]
    for name, accs in a["test_acc"].items():
        lines.append(f"| {name} | " + " | ".join(f"{v:.1%}" for v in accs) +
                     f" | {np.mean(accs):.1%} ± {np.std(accs, ddof=1) if len(accs) > 1 else 0:.1%} |")
    return "\n".join(lines)

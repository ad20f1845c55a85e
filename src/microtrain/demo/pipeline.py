"""`microtrain demo`: pretrain -> quantise -> search a sparse update under a budget -> adapt on-device
to unseen classes (int8 QAS), compiled to C and trained through the generated C on the host (and under
QEMU on a Cortex-M7 when the Arm toolchain is present). Needs no network and no ../shared.

Each stage whose dependency is genuinely missing (torch, gcc, the Arm toolchain) is skipped and the
report says so; nothing is skipped silently.
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..quant.ptq import accuracy_int8, as_int8_input, compare_accuracy, quantize
from . import data as demo_data
from .pretrain import pretrain


@dataclass
class DemoConfig:
    out_dir: Path = Path("microtrain-demo-out")
    fast: bool = False  # a smaller run for tests: fewer epochs, smaller analysis, fewer C/QEMU samples
    pretrain: str = "auto"  # auto | numpy | torch
    budget: str = "6KB"  # extra training memory for the sparse search (the demo CNN is tiny)
    seed: int = 0
    resolution: int = 16
    compile_c: bool = True
    qemu: bool = True
    plots: bool = True
    # training settings (None: chosen by `fast`)
    pretrain_epochs: int | None = None
    adapt_epochs: int | None = None
    adapt_lr: float = 0.1
    adapt_batch: int = 8
    c_epochs: int | None = None
    c_lr: float = 0.04  # batch 1 on the device
    qemu_samples: int | None = None

    def resolved(self) -> "DemoConfig":
        fast = self.fast
        pick = lambda v, normal, quick: v if v is not None else (quick if fast else normal)  # noqa: E731
        return DemoConfig(**{**asdict(self),
                             "out_dir": Path(self.out_dir),
                             "pretrain_epochs": pick(self.pretrain_epochs, 4, 3),
                             "adapt_epochs": pick(self.adapt_epochs, 12, 6),
                             "c_epochs": pick(self.c_epochs, 3, 1),
                             "qemu_samples": pick(self.qemu_samples, 16, 4)})


@dataclass
class DemoResult:
    config: dict
    stages: dict = field(default_factory=dict)  # stage -> its figures, or {"skipped": reason}
    seconds: dict = field(default_factory=dict)
    files: list = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps({"config": self.config, "stages": self.stages, "seconds": self.seconds,
                           "files": self.files}, indent=1, default=_jsonable)


def _jsonable(v):
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if isinstance(v, Path):
        return str(v)
    return str(v)


class _Clock:
    def __init__(self, result: DemoResult):
        self.result, self.t0 = result, time.perf_counter()

    def stage(self, name: str):
        clock = self

        class _S:
            def __enter__(self):
                self.t = time.perf_counter()

            def __exit__(self, *exc):
                clock.result.seconds[name] = round(time.perf_counter() - self.t, 2)

        return _S()

    @property
    def total(self) -> float:
        return time.perf_counter() - self.t0


def run_demo(config: DemoConfig | None = None, log=print) -> DemoResult:
    cfg = (config or DemoConfig()).resolved()
    from ..scheme_search.memory import parse_budget

    parse_budget(cfg.budget)  # a malformed budget fails now, not after pretraining
    out = cfg.out_dir
    out.mkdir(parents=True, exist_ok=True)
    result = DemoResult({k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()})
    clock = _Clock(result)
    st = result.stages

    # 1. data -------------------------------------------------------------------------------------------
    with clock.stage("data"):
        pre_train, pre_val, new_train, new_val = demo_data.demo_tasks(cfg.resolution, 3, cfg.seed)
    st["data"] = {"source": "scikit-learn digits (bundled, no network)", "resolution": cfg.resolution,
                  "pretrain_classes": list(pre_train.classes), "new_classes": list(new_train.classes),
                  "pretrain_train": len(pre_train), "pretrain_val": len(pre_val),
                  "new_train": len(new_train), "new_val": len(new_val)}
    log(f"data: digits {list(pre_train.classes)} to pretrain ({len(pre_train)} train / {len(pre_val)} val), "
        f"unseen digits {list(new_train.classes)} to adapt to ({len(new_train)} train / {len(new_val)} val)")

    # 2. pretraining (float) ------------------------------------------------------------------------------
    with clock.stage("pretrain"):
        pre = pretrain(pre_train, len(pre_train.classes), backend=cfg.pretrain, epochs=cfg.pretrain_epochs,
                       seed=cfg.seed, resolution=cfg.resolution, log=log)
    backend_desc = {"torch": "torch (BatchNorm + Adam, imported with the torch.fx frontend, BN folded)",
                    "numpy": "microtrain's own float runtime (autodiff + NumPy, SGD with momentum)"}[pre.backend]
    st["pretrain"] = {"backend": pre.backend, "description": backend_desc, "epochs": cfg.pretrain_epochs,
                      "losses": pre.losses}

    # 3. post-training quantisation --------------------------------------------------------------------------
    with clock.stage("quantize"):
        q8 = quantize(pre.graph, pre_train.images[:256], name="demo-cnn-int8")
        acc = compare_accuracy(pre.graph, q8, pre_val.images, pre_val.labels)
    st["quantize"] = {"method": "minmax", "calibration_images": 256, "float_val_acc": acc["float"],
                      "int8_val_acc": acc["int8"], "params": _param_count(q8), "macs": _macs(q8)}
    log(f"pretrained with {pre.backend}: float {acc['float']:.1%}, int8 {acc['int8']:.1%} on held-out digits "
        f"{list(pre_val.classes)}")

    # 4. the new task: a new head, accuracy before adaptation ------------------------------------------------
    from ..quant.head import replace_head
    from ..runtime.trainer import fine_tune

    graph = replace_head(q8, len(new_train.classes))
    x_new, y_new = as_int8_input(new_train.images), new_train.labels
    x_val, y_val = as_int8_input(new_val.images), new_val.labels
    before = accuracy_int8(graph, x_val, y_val)
    st["before"] = {"val_acc": before, "head": graph.meta.get("head", "new head")}
    log(f"new classes, before adaptation (fresh head): {before:.1%}")

    # 5. sparse update: contribution analysis + evolutionary search under the budget ---------------------------
    with clock.stage("sparse_search"):
        scheme, search_info = _sparse_search(graph, x_new, y_new, cfg, log)
    st["sparse"] = search_info
    log(f"sparse scheme under {cfg.budget}: {search_info['scheme_text']} "
        f"({search_info['extra_bytes']:.0f} B of {search_info['budget_bytes']} B)")

    # 6. on-device adaptation, simulated (int8 QAS, NumPy) + head-only baseline -------------------------------
    with clock.stage("adapt"):
        common = dict(epochs=cfg.adapt_epochs, lr=cfg.adapt_lr, seed=cfg.seed, batch_size=cfg.adapt_batch, qas=True)
        adapted = fine_tune(graph, scheme, (x_new, y_new), (x_val, y_val), eval_every=1, **common)
        head_only = fine_tune(graph, _head_only(), (x_new, y_new), (x_val, y_val), **common)
    st["adapt"] = {"trainer": "runtime.trainer.fine_tune (int8 forward, QAS, stochastic rounding)",
                   "epochs": cfg.adapt_epochs, "lr": cfg.adapt_lr, "batch_size": cfg.adapt_batch,
                   "val_acc": adapted["val_acc"],
                   "head_only_val_acc": head_only["val_acc"],
                   "history": [{k: v for k, v in h.items()} for h in adapted["history"]]}
    from ..ir.serialize import save_graph

    result.files.append(str(save_graph(adapted["graph"], out / "adapted-int8.json")))  # + .npz: the trained model
    log(f"adapted (int8 QAS, searched scheme): {before:.1%} -> {adapted['val_acc']:.1%} "
        f"(head only: {head_only['val_acc']:.1%})")

    # 7. compiled to C, trained through the generated C on the host (batch 1, as on the device) -------------
    compiled = None
    if cfg.compile_c:
        with clock.stage("c_host"):
            compiled, st["c_host"] = _c_host_stage(graph, scheme, x_new, y_new, x_val, y_val, cfg, log)
    else:
        st["c_host"] = {"skipped": "disabled (--no-c)"}

    # 8. Cortex-M7 under QEMU --------------------------------------------------------------------------------
    if cfg.qemu and compiled is not None:
        with clock.stage("qemu"):
            st["qemu"] = _qemu_stage(compiled, graph, scheme, x_new, y_new, x_val, y_val, cfg, log)
    else:
        st["qemu"] = {"skipped": "disabled (--no-qemu)" if not cfg.qemu else "needs the C stage"}

    # 9. plots and report ------------------------------------------------------------------------------------
    result.seconds["total"] = round(clock.total, 2)
    if cfg.plots:
        from .plots import save_plots

        result.files += save_plots(result, compiled, out)
    (out / "results.json").write_text(result.to_json() + "\n")
    result.files.append(str(out / "results.json"))
    return result


def _head_only():
    from ..sparse.scheme import UpdateScheme

    return UpdateScheme.head_only()


def _param_count(graph) -> int:
    return int(sum(n.params["weight"].size + n.params["bias"].size for n in graph.convs()))


def _macs(graph) -> int:
    from ..ops import op_module

    return int(sum(op_module(n).macs(n, graph.tensors[n.inputs[0]].shape, graph.tensors[n.output].shape)
                   for n in graph.nodes))


def _sparse_search(graph, x, y, cfg: DemoConfig, log):
    """Measure what each part of an update is worth (short fine-tunes on a held-out part of the new task's
    training images), then search the best scheme whose analytic extra memory fits the budget."""
    from ..runtime.datasets import as_image_data
    from ..scheme_search.contribution import AnalysisSettings, analyze
    from ..scheme_search.memory import MemoryModel, parse_budget
    from ..scheme_search.search import search

    n = len(graph.indexed_convs())
    settings = AnalysisSettings(epochs=2 if cfg.fast else 3, lr=cfg.adapt_lr, seed=cfg.seed, batch_size=16,
                                holdout=0.3, bias_step=3 if cfg.fast else 2,
                                n_candidates=4 if cfg.fast else 6,
                                ratios=("1/4", "1") if cfg.fast else ("1/4", "1/2", "1"))
    messages = []
    table = analyze(graph, data=as_image_data((x, y)), settings=settings, cache_dir=cfg.out_dir / "contribution-cache",
                    workers=2, log=messages.append, model_name="demo-cnn")
    cached = re.search(r"\((\d+) cached\)", messages[0]) if messages else None
    memory = MemoryModel(graph)
    budget = parse_budget(cfg.budget)
    found = search(table, memory, budget, seed=cfg.seed, population=32, generations=60, name="demo-searched")
    scheme = found.scheme
    # every analysed scheme: (extra memory, held-out accuracy) for the accuracy-versus-memory plot
    from fractions import Fraction

    from ..scheme_search.contribution import plan_jobs
    from ..sparse.scheme import UpdateScheme

    jobs, bias_ref = plan_jobs(graph, settings)
    points = []
    for name, sch in jobs.items():
        k = (sch.n_bias,) if not sch.weights else next(iter(sch.weights.items()))
        acc = table.base_acc + (table.bias.get(sch.n_bias, 0.0) if not sch.weights else
                                table.bias.get(bias_ref, 0.0) + table.weights[(k[0], Fraction(k[1]).limit_denominator(64))])
        points.append({"scheme": name, "extra_bytes": memory.scheme_bytes(sch), "heldout_acc": acc})
    convs = graph.indexed_convs()
    text = f"biases of the last {scheme.n_bias} convs" + "".join(
        f", {convs[i].name} weights x{Fraction(r).limit_denominator(64)}" for i, r in sorted(scheme.weights.items()))
    info = {"budget": cfg.budget, "budget_bytes": budget, "extra_bytes": memory.scheme_bytes(scheme),
            "scheme": scheme.to_dict(), "scheme_text": text,
            "analysis_runs": len(jobs), "analysis_cached": int(cached.group(1)) if cached else 0,
            "analysis_points": points,
            "full_update_bytes": memory.scheme_bytes(UpdateScheme.full(graph)),
            "head_only_bytes": memory.minimum_bytes, "n_convs": n}
    return scheme, info


def _c_host_stage(graph, scheme, x, y, x_val, y_val, cfg: DemoConfig, log):
    """Compile graph + scheme to a C project, build it with gcc, train it sample by sample through ctypes."""
    import shutil

    if shutil.which("gcc") is None or shutil.which("make") is None:
        return None, {"skipped": "gcc/make not found on PATH"}
    from ..codegen import compile_model
    from ..targets.host import HostModel, build_host

    project = cfg.out_dir / "c-project"
    compiled = compile_model(graph, scheme, project, lr=cfg.c_lr, seed=cfg.seed)
    model = HostModel(build_host(project))
    before = float(np.mean(model.infer(x_val).argmax(1) == y_val))
    rng = np.random.default_rng(cfg.seed)
    losses, total = [], cfg.c_epochs * len(y)
    step = 0
    t0 = time.perf_counter()
    for epoch in range(cfg.c_epochs):
        for i in rng.permutation(len(y)):
            model.set_lr(cfg.c_lr * 0.5 * (1 + np.cos(np.pi * step / total)))  # cosine schedule
            losses.append(model.train_step(x[i], int(y[i])))
            step += 1
    train_s = time.perf_counter() - t0
    after = float(np.mean(model.infer(x_val).argmax(1) == y_val))
    rep = compiled.report
    info = {"project": str(project), "val_acc_before": before, "val_acc": after, "epochs": cfg.c_epochs,
            "lr": cfg.c_lr, "steps": step, "train_seconds": round(train_s, 2),
            "ms_per_step": round(1000 * train_s / max(step, 1), 3),
            "losses": [float(np.mean(losses[i : i + len(y)])) for i in range(0, len(losses), len(y))],
            "sram_training_bytes": rep.training_sram_bytes, "sram_total_bytes": rep.total_sram_bytes,
            "arena_bytes": rep.arena_bytes, "trainable_bytes": rep.trainable_sram_bytes,
            "flash_bytes": rep.flash_bytes}
    log(f"generated C trained on the host (batch 1, {step} steps): {before:.1%} -> {after:.1%}")
    compiled.host_model = model
    return compiled, info


def _qemu_stage(compiled, graph, scheme, x, y, x_val, y_val, cfg: DemoConfig, log):
    """Build the same project as Cortex-M7 firmware, train a few samples under QEMU, and check the trained
    parameters are bit-identical to the host build's after the same samples."""
    try:
        from ..targets.cortex_m import ToolchainError, find_toolchain
        from ..targets.cortex_m.project import build_project
        from ..targets.cortex_m.session import run_session
    except ImportError as e:
        return {"skipped": f"the Cortex-M target is not available ({e})"}
    import shutil

    try:
        find_toolchain()
    except ToolchainError as e:
        return {"skipped": f"Arm toolchain not found ({e})"}
    if shutil.which("qemu-system-arm") is None:
        return {"skipped": "qemu-system-arm not found on PATH"}
    n = min(cfg.qemu_samples, len(y))
    build, _ = build_project(compiled.out_dir, cfg.out_dir / "firmware", "cortex-m7")
    t0 = time.perf_counter()
    sess = run_session(build.elf, "cortex-m7", train=(x[:n], y[:n]), evaluate=(x_val[:64], y_val[:64]), timeout=300)
    qemu_s = time.perf_counter() - t0
    host = compiled.host_model  # the same samples from the same initial state (mt_init) and compiled-in lr
    host.reset()
    for i in range(n):
        host.train_step(x[i], int(y[i]))
    same = host.export_params() == sess.params
    info = {"cpu": "cortex-m7 (qemu mps2-an500)", "train_samples": n, "losses": sess.losses,
            "params_bit_identical_to_host": bool(same), "eval_acc_64": sess.accuracy,
            "stack_used": sess.stack_used, "seconds": round(qemu_s, 2)}
    info["firmware_ram"], info["firmware_flash"] = build.usage.ram, build.usage.flash
    log(f"Cortex-M7 under QEMU: {n} training steps, parameters {'bit-identical to' if same else 'DIFFER from'} "
        f"the host build's")
    return info

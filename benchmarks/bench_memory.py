"""Peak training memory at batch 1: PyTorch CPU fp32 measured on this host vs microtrain's planned and
linked SRAM, for full update and for a sparse scheme, side by side with the ratios.

    nice -n 10 python benchmarks/bench_memory.py [--models mcunet-5fps ...] [--no-link] [--out F]

PyTorch side (each configuration in a FRESH subprocess, 1 thread, 2-class head, one 128x128 image):
  reference.to_torch(graph), the trained tensors chosen exactly as benchmarks/bench_host_step.py does
  (full: every parameter; sparse: biases of the scheme's convs + weight of weight-trained convs, the
  gradient masked to the trained input channels), cross-entropy, backward, SGD step. Measured:
  - step_peak_increase: peak RSS (VmHWM, reset through /proc/self/clear_refs) minus RSS just before a
    warm training step. glibc is told to mmap every block >= 64 KB (MALLOC_MMAP_THRESHOLD_), so freed
    tensors go back to the OS and RSS follows the live tensors instead of the allocator's cache (the
    kernel counts RSS in pages with per-CPU batching: differences under ~0.5 MB are noise);
  - first_step_peak_increase: the same for the very first step (one-time allocations included);
  - saved_for_backward: bytes of the non-parameter tensors autograd keeps for backward (a torch-side
    accounting, allocator independent: the activation memory of training);
  - process_peak_rss: the whole process (python + torch + model + step), what a framework really costs.
microtrain side: compile_model(graph, scheme).report (training SRAM = arena + trainable slices + state)
and, unless --no-link, the SRAM of the Cortex-M7 firmware as linked by arm-none-eabi-gcc (the 256 KB
limit is raised so that a full update links and can be measured; "fits" says whether it fits 256 KB).
Writes benchmarks/results/bench_memory.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "bench_memory.json"
MODELS = ("mcunet-5fps", "mbv2-w0.35", "proxyless-w0.3")
CONFIGS = ("full", "sparse")
CLASSES = 2
SRAM_LIMIT = 256 * 1024
MMAP_THRESHOLD = 65536  # bytes: glibc mmaps blocks >= this, so frees return memory to the OS


# ----- schemes -------------------------------------------------------------------------------------------
def sparse_scheme(model: str, graph):
    """The sparse scheme every benchmark uses for `model`: upstream's 49 KB scheme for mcunet-5fps, one of the
    same shape for the other two (bench_cortexm's like-mcunet-49kb; defined here too if that file changes)."""
    from microtrain.sparse.fixtures import load_scheme
    from microtrain.sparse.scheme import UpdateScheme

    if graph.name.startswith("mcunet-5fps") or model.startswith("mcunet-5fps"):
        return load_scheme("mcunet-5fps-49kb")
    n = len(graph.indexed_convs())
    return UpdateScheme(20, {n - 18: 0.25, n - 15: 0.5, n - 12: 0.5}, name="like-mcunet-49kb")


def bench_scheme(model: str, graph, config: str):
    from microtrain.sparse.scheme import UpdateScheme

    if config == "full":
        return UpdateScheme.full(graph)
    if config == "sparse":
        return sparse_scheme(model, graph)
    raise ValueError(f"unknown configuration {config!r}; use one of {CONFIGS}")


def bench_graph(model: str, classes: int = CLASSES, resolution: int | None = None):
    from microtrain.models import load_model
    from microtrain.quant.head import replace_head

    graph = load_model(model)
    if resolution:
        graph = graph.with_resolution(resolution)
    return replace_head(graph, classes)


# ----- PyTorch side: runs inside a fresh child process ----------------------------------------------------
def _status() -> dict:
    text = Path("/proc/self/status").read_text()
    return {k: int(re.search(rf"{k}:\s+(\d+) kB", text).group(1)) * 1024 for k in ("VmRSS", "VmHWM")}


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # Linux: VmHWM := VmRSS


def _settle() -> None:
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def _peak_increase(fn) -> int:
    _settle()
    before = _status()["VmRSS"]
    _reset_peak()
    fn()
    return _status()["VmHWM"] - before


def measure_torch(model: str, config: str, classes: int = CLASSES, resolution: int | None = None,
                  warmup: int = 2) -> dict:
    """Measure one configuration in THIS process (call it in a fresh one: see run_isolated)."""
    import numpy as np
    import torch

    sys.path.insert(0, str(HERE))
    from bench_host_step import torch_step_fn  # the same trained tensors as the step-time benchmark

    torch.set_num_threads(1)
    graph = bench_graph(model, classes, resolution)
    scheme = bench_scheme(model, graph, config)
    x_q = np.random.default_rng(0).integers(-128, 128, graph.input_spec.shape).astype(np.int8)
    step = torch_step_fn(graph, scheme.resolve(graph), x_q, 1, 1e-3, torch)
    setup_peak = _status()["VmHWM"]
    first = _peak_increase(step)
    for _ in range(warmup):
        step()
    steady = _peak_increase(step)
    steady_rss = _status()["VmRSS"]

    # what autograd saves for backward, parameters (which exist anyway) excluded
    model_params = {p.data_ptr() for p in _find_module(step).parameters()} if _find_module(step) else set()
    saved: dict[int, int] = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in model_params:
            saved[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    process_peak = max(setup_peak, _status()["VmHWM"])
    trained = sum(p.numel() for p in _find_module(step).parameters() if p.requires_grad)
    params = sum(p.numel() for p in _find_module(step).parameters())
    return {"model": graph.name, "config": config, "scheme": scheme.name, "classes": classes,
            "resolution": graph.resolution, "step_peak_increase": steady, "first_step_peak_increase": first,
            "saved_for_backward": int(sum(saved.values())), "rss_after_step": steady_rss,
            "process_peak_rss": process_peak, "parameters": params, "trainable_parameters_requires_grad": trained,
            "torch": torch.__version__, "threads": 1}


def _find_module(step):
    """The torch module a step closure trains (bench_host_step.torch_step_fn closes over `model`)."""
    import torch

    for cell in step.__closure__ or ():
        if isinstance(cell.cell_contents, torch.nn.Module):
            return cell.cell_contents
    return None


def run_isolated(model: str, config: str, classes: int = CLASSES, resolution: int | None = None,
                 timeout: float = 600) -> dict:
    """measure_torch in a fresh Python process (nothing earlier inflates or pre-allocates its memory)."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(MMAP_THRESHOLD), OMP_NUM_THREADS="1",
               OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", model, config, "--classes", str(classes)]
    if resolution:
        cmd += ["--resolution", str(resolution)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"memory measurement of {model} / {config} failed (exit {proc.returncode}):\n"
                           f"{proc.stderr[-2000:]}")
    return json.loads(lines[-1])


# ----- microtrain side ------------------------------------------------------------------------------------
def microtrain_memory(model: str, config: str, classes: int = CLASSES, link: bool = True,
                      resolution: int | None = None) -> dict:
    """Planned SRAM (memory planner) and, with link, the linked SRAM of the Cortex-M7 firmware."""
    from microtrain.codegen import compile_model

    graph = bench_graph(model, classes, resolution)
    scheme = bench_scheme(model, graph, config)
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        compiled = compile_model(graph, scheme, out_dir=Path(tmp) / "project" if link else None)
        r = compiled.report
        row = {"model": graph.name, "config": config, "scheme": scheme.name,
               "planned_training_sram": r.training_sram_bytes, "planned_total_sram": r.total_sram_bytes,
               "arena": r.arena_bytes, "trainable_sram": r.trainable_sram_bytes, "planned_flash": r.flash_bytes,
               "analytic_extra": _analytic_extra(graph, scheme)}
        if link:
            from microtrain.targets.cortex_m.project import build_project

            build, _ = build_project(Path(tmp) / "project", Path(tmp) / "build", "cortex-m7",
                                     ram_limit=64 * 1024 * 1024)
            row.update(linked_sram=build.usage.ram, linked_flash=build.usage.flash,
                       fits_256kb=build.usage.ram <= SRAM_LIMIT)
    return row


def _analytic_extra(graph, scheme) -> float:
    from microtrain.scheme_search.memory import MemoryModel

    return MemoryModel(graph).scheme_bytes(scheme)


# ----- report ---------------------------------------------------------------------------------------------
def mb(n) -> str:
    return f"{n / 2**20:8.2f} MB"


def kb(n) -> str:
    return f"{n / 1024:8.1f} KB"


def print_table(rows: list[dict]) -> None:
    print(f"{'model':<15}{'config':<8}{'torch step':>12}{'torch saved':>13}{'torch proc':>12}"
          f"{'mt planned':>12}{'mt linked':>12}{'step/planned':>13}{'proc/planned':>13}")
    for r in rows:
        t, m = r["torch"], r["microtrain"]
        linked = kb(m["linked_sram"]) if "linked_sram" in m else "      n/a"
        print(f"{r['model']:<15}{r['config']:<8}{mb(t['step_peak_increase']):>12}{mb(t['saved_for_backward']):>13}"
              f"{mb(t['process_peak_rss']):>12}{kb(m['planned_training_sram']):>12}{linked:>12}"
              f"{r['ratio_step_over_planned']:>12.1f}x{r['ratio_process_over_planned']:>12.0f}x")


def measure_all(models=MODELS, configs=CONFIGS, link: bool = True, classes: int = CLASSES,
                resolution: int | None = None, log=print) -> list[dict]:
    rows = []
    for model in models:
        for config in configs:
            t = run_isolated(model, config, classes, resolution)
            m = microtrain_memory(model, config, classes, link, resolution)
            rows.append({"model": t["model"], "config": config, "scheme": m["scheme"], "torch": t, "microtrain": m,
                         "ratio_step_over_planned": t["step_peak_increase"] / m["planned_training_sram"],
                         "ratio_process_over_planned": t["process_peak_rss"] / m["planned_training_sram"],
                         "ratio_step_over_linked": (t["step_peak_increase"] / m["linked_sram"]
                                                    if "linked_sram" in m else None)})
            log(f"  {t['model']} {config}: torch step +{t['step_peak_increase'] / 2**20:.1f} MB "
                f"(process {t['process_peak_rss'] / 2**20:.0f} MB), microtrain planned "
                f"{m['planned_training_sram'] / 1024:.1f} KB" +
                (f", linked {m['linked_sram'] / 1024:.1f} KB" if "linked_sram" in m else ""))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=CONFIGS)
    ap.add_argument("--classes", type=int, default=CLASSES)
    ap.add_argument("--resolution", type=int, default=None)
    ap.add_argument("--no-link", action="store_true", help="planned SRAM only (skip the arm-none-eabi-gcc link)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--child", nargs=2, metavar=("MODEL", "CONFIG"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(measure_torch(*args.child, classes=args.classes, resolution=args.resolution)))
        return 0
    rows = measure_all(args.models, args.configs, not args.no_link, args.classes, args.resolution)
    print_table(rows)
    doc = {"benchmark": "memory", "command": " ".join([Path(sys.executable).name, *sys.argv]),
           "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
           "method": __doc__.split("\n\n", 2)[2].strip(), "results": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

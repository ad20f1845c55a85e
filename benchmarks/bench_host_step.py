"""One training step at batch 1: the generated C engine (host build, ctypes) vs PyTorch CPU fp32
running the same update scheme on the dequantised network, in one run.

    nice -n 10 python benchmarks/bench_host_step.py [--scheme mcunet-5fps-49kb] [--steps 20] [--threads 1]

PyTorch side: reference.to_torch(graph) with requires_grad only on the trained tensors (biases of
the scheme's convs, whole weights of weight-trained convs whose gradient is then masked to the
trained input channels, as sparse-update simulations do), cross-entropy, backward, SGD step.
C side: mt_train_step (forward int8 + backward float32 + in-place int8 update), same image.
Prints ms per step of both and the ratio, and writes benchmarks/results/host_step.json. Each figure
is the median of --steps timed steps after 3 warm-up steps; CPU time of this process is shown too
(steadier on a shared machine).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "host_step.json"


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="mcunet-5fps")
    p.add_argument("--scheme", default="mcunet-5fps-49kb", help="shipped scheme name, JSON file, or 'full'")
    p.add_argument("--classes", type=int, default=2, help="new head with N classes (default 2)")
    p.add_argument("--steps", type=int, default=20, help="timed steps per engine (default 20)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the C step is single-threaded)")
    p.add_argument("--opt", default=None, help="C optimisation flags (default: the host build's, "
                   "-O3 -march=native where the compiler supports it)")
    p.add_argument("--out", type=Path, default=RESULTS)
    return p.parse_args()


def timed(fn, steps):
    for _ in range(3):
        fn()
    wall, cpu = [], []
    for _ in range(steps):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return statistics.median(wall), statistics.median(cpu)


def torch_step_fn(graph, trained, x_q, label, lr, torch):
    from microtrain.reference import to_torch

    model = to_torch(graph).train()
    params, masks = [], {}
    for p in model.parameters():
        p.requires_grad_(False)
    for name, spec in trained.items():
        conv = model.convs[name.replace(".", "_")]
        if spec.bias:
            conv.bias.requires_grad_(True)
            params.append(conv.bias)
        if spec.channels is not None:
            conv.weight.requires_grad_(True)
            params.append(conv.weight)
            mask = torch.zeros_like(conv.weight)
            ch = list(spec.channels)
            if conv.groups > 1:
                mask[ch] = 1
            else:
                mask[:, ch] = 1
            masks[conv.weight] = mask
    opt = torch.optim.SGD(params, lr=lr)
    x = model.input_from_int8(x_q[None])
    y = torch.tensor([label])

    def step():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        for w, m in masks.items():
            w.grad.mul_(m)
        opt.step()

    return step


def main():
    args = parse_args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    import numpy as np
    import torch

    from microtrain.codegen import compile_model
    from microtrain.commands.compile import resolve_scheme
    from microtrain.models import load_model
    from microtrain.quant.head import replace_head
    from microtrain.targets.host import HostModel, build_host

    torch.set_num_threads(args.threads)
    graph = replace_head(load_model(args.model), args.classes)
    scheme = resolve_scheme(args.scheme, graph)
    x_q = np.random.default_rng(0).integers(-128, 128, graph.input_spec.shape).astype(np.int8)
    with tempfile.TemporaryDirectory() as tmp:
        cm = compile_model(graph, scheme, out_dir=tmp, lr=1e-3)
        from microtrain.targets.host import native_opt

        args.opt = native_opt() if args.opt is None else args.opt
        c_model = HostModel(build_host(tmp, opt=args.opt))
        c_wall, c_cpu = timed(lambda: c_model.train_step(x_q, 1), args.steps)
        report = cm.report
    t_wall, t_cpu = timed(torch_step_fn(graph, scheme.resolve(graph), x_q, 1, 1e-3, torch), args.steps)
    print(f"{graph.name}, scheme {scheme.name}, {args.classes}-class head, batch 1, 1 image {graph.resolution}x"
          f"{graph.resolution}; torch {torch.__version__} with {args.threads} thread(s); gcc {args.opt}")
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; median of {args.steps} steps")
    print(f"{'engine':34s} {'ms/step (wall)':>15s} {'ms/step (cpu)':>14s}")
    print(f"{'microtrain C (int8 fwd, fp32 bwd)':34s} {c_wall * 1e3:15.1f} {c_cpu * 1e3:14.1f}")
    print(f"{'PyTorch CPU fp32, same scheme':34s} {t_wall * 1e3:15.1f} {t_cpu * 1e3:14.1f}")
    print(f"ratio C / PyTorch: {c_wall / t_wall:.2f}x wall, {c_cpu / t_cpu:.2f}x cpu "
          f"(< 1 means the C step is faster); C training SRAM {report.training_sram_bytes:,} B")
    row = {"model": graph.name, "scheme": scheme.name, "classes": args.classes, "resolution": graph.resolution,
           "c_ms_wall": c_wall * 1e3, "c_ms_cpu": c_cpu * 1e3, "torch_ms_wall": t_wall * 1e3,
           "torch_ms_cpu": t_cpu * 1e3, "ratio_wall": c_wall / t_wall, "ratio_cpu": c_cpu / t_cpu,
           "c_training_sram_bytes": report.training_sram_bytes, "threads": args.threads, "opt": args.opt,
           "torch": torch.__version__, "python": sys.version.split()[0], "machine": platform.machine(),
           "load_average": os.getloadavg()[0], "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(row, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

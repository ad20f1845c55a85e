"""Forward-pass speed: our batched bit-exact int8 NumPy runtime vs PyTorch fp32 running the same
architecture (reference.to_torch, the dequantised float equivalent) on the same batch, in one run.

    nice -n 10 python benchmarks/bench_forward.py [--batch 64] [--resolution 128] [--threads 1] [--repeats 3]

Prints images/s of both and the ratio per upstream model, and writes benchmarks/results/forward_speed.json.
Both sides get the same thread count (BLAS/OpenMP threads are fixed before numpy and torch load);
each figure is the best of --repeats timed runs after one warm-up run.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "forward_speed.json"
MODELS = ("mcunet-5fps", "mbv2-w0.35", "proxyless-w0.3")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=64, help="images per forward call (default 64)")
    p.add_argument("--resolution", type=int, default=None, help="input resolution (default: the model's, 128)")
    p.add_argument("--threads", type=int, default=1, help="threads for NumPy's BLAS and torch (default 1)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per figure; the best is kept (default 3)")
    p.add_argument("--models", nargs="+", default=list(MODELS), help="model names or files")
    p.add_argument("--out", type=Path, default=RESULTS, help=f"JSON result file (default {RESULTS})")
    return p.parse_args()


def best_time(fn, repeats):
    """(best wall seconds, best CPU seconds of this process) over `repeats` runs after a warm-up.
    On a shared machine the CPU time is the steadier figure (it leaves out time spent descheduled)."""
    fn()  # warm-up: first-call allocations, oneDNN kernel selection
    wall, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return min(wall), min(cpu)


def main():
    args = parse_args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)  # must precede the numpy / torch imports
    import numpy as np
    import torch

    from microtrain.models import load_model
    from microtrain.reference import to_torch
    from microtrain.runtime.forward import run_int8

    torch.set_num_threads(args.threads)
    rows = []
    print(f"batch {args.batch}, {args.threads} thread(s), best of {args.repeats}; "
          f"numpy {np.__version__}, torch {torch.__version__}")
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; images/s by wall clock "
          f"(and by this process's CPU time)")
    print(f"{'model':16s} {'res':>4s} {'int8 numpy img/s':>22s} {'torch fp32 img/s':>22s} {'int8/torch':>17s}")
    for name in args.models:
        graph = load_model(name)
        if args.resolution:
            graph = graph.with_resolution(args.resolution)
        x_q = np.random.default_rng(0).integers(-128, 128, (args.batch, *graph.input_spec.shape)).astype(np.int8)
        model = to_torch(graph)
        x_t = model.input_from_int8(x_q)

        def torch_forward():
            with torch.inference_mode():
                model(x_t)

        (w8, c8), (wt, ct) = best_time(lambda: run_int8(graph, x_q), args.repeats), best_time(torch_forward, args.repeats)
        row = {"model": graph.name, "resolution": graph.resolution, "batch": args.batch,
               "int8_numpy_img_per_s": args.batch / w8, "torch_fp32_img_per_s": args.batch / wt,
               "ratio_int8_over_torch": wt / w8,
               "cpu_time": {"int8_numpy_img_per_s": args.batch / c8, "torch_fp32_img_per_s": args.batch / ct,
                            "ratio_int8_over_torch": ct / c8}}
        rows.append(row)
        cpu = row["cpu_time"]
        print(f"{row['model']:16s} {row['resolution']:4d} "
              f"{row['int8_numpy_img_per_s']:9.1f} ({cpu['int8_numpy_img_per_s']:9.1f}) "
              f"{row['torch_fp32_img_per_s']:9.1f} ({cpu['torch_fp32_img_per_s']:9.1f}) "
              f"{row['ratio_int8_over_torch']:6.2f} ({cpu['ratio_int8_over_torch']:6.2f})")
    doc = {
        "benchmark": "forward_speed",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count(), "load_avg_1min": os.getloadavg()[0]},
        "versions": {"python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__},
        "settings": {"batch": args.batch, "threads": args.threads, "repeats": args.repeats},
        "note": "int8 = bit-exact NumPy runtime (runtime.forward.run_int8); torch = reference.to_torch fp32 "
                "module of the same graph (dequantised, NCHW), torch.inference_mode",
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

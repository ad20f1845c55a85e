"""One training step of the NumPy simulation (runtime.training.TrainingRuntime.train_step) per setting of the
issue-14 experiments, with a per-step-kind profile.

    nice -n 10 python benchmarks/bench_sim_step.py [--repeats 5] [--batch 32] [--model mcunet-5fps]
                                                   [--settings qas,fp32,last12,full,bias] [--profile]
                                                   [--baseline REF [--rounds 2]] [--retain-memory]
                                                   [--old-default-malloc] [--out results/sim_step.json]

Settings (new 10-class head, the model's own resolution, batch 32): "qas" last two blocks + head in int8 + QAS
(stochastic rounding), "noqas" the same without QAS, "fp32" the same on the dequantised float graph, "last12"
the shipped last-12 scheme (int8 + QAS), "full" every weight and bias (int8 + QAS), "bias" bias-only (int8 +
QAS). The frozen-prefix boundary tensors are random int8 (float32 in fp32) of the right shape: the step's cost
does not depend on the values. Each figure is the median of --repeats timed steps after one warm-up step,
CPU time of this process (BLAS on one thread, as fine_tune runs it; on a shared machine CPU time is far
steadier than wall time, and a single-threaded step's wall time on an idle core equals it).

--profile adds the CPU time per step kind and per forward op (manual timers around TrainingRuntime.run_step and
the forward steps), summed over the timed steps and divided by their count.

--baseline REF (a git ref, e.g. main): side-by-side A/B in one run. src/ at REF is exported with `git archive`
into a temporary folder; each setting then runs --rounds times old, new, old, new, ... (a child process each,
PYTHONPATH pointing at one tree), so both versions are timed on the same machine load. The loss, logits and
every trained parameter after the first timed step are hashed on both sides and must be equal (the run exits
1 otherwise): same inputs, same numbers.

--retain-memory: both sides run with glibc's malloc keeping freed memory (runtime/memory.py; fine_tune sets it
since this change); with --old-default-malloc the old side keeps glibc's defaults, i.e. old code as the
experiments ran it against new code as they run it now.

Results (--out): benchmarks/results/sim_step*.json; docs/measurements.md quotes them.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from run_store import write_report  # noqa: E402
SHARED = Path(os.environ.get("MICROTRAIN_SHARED", REPO.parent / "shared"))
SETTINGS = {  # name: (update spec, fp32, qas)
    "qas": ("last-blocks:2", False, True),
    "noqas": ("last-blocks:2", False, False),
    "fp32": ("last-blocks:2", True, False),
    "last12": ("fixture:mcunet-5fps-last-12", False, True),
    "full": ("full", False, True),
    "bias": ("bias-only", False, True),
}


def build(model: str, setting: str, batch: int, classes: int = 10, seed: int = 0):
    """(runtime, feeds, labels) of one setting: the training graph fine_tune would build."""
    from microtrain.autodiff import build_training_graph
    from microtrain.commands.train import parse_update
    from microtrain.models import load_model
    from microtrain.quant.dequantize import dequantize_graph
    from microtrain.quant.head import replace_head
    from microtrain.runtime.training import TrainingRuntime
    from microtrain.sparse.fixtures import load_fixture

    spec, fp32, qas = SETTINGS[setting]
    graph = replace_head(load_model(SHARED / "models" / f"{model}.pkl"), classes)
    scheme = load_fixture(spec.split(":", 1)[1]) if spec.startswith("fixture:") else parse_update(spec, graph)
    resolution = scheme.resolve(graph)
    g = dequantize_graph(graph) if fp32 else graph
    tg = build_training_graph(g, resolution, qas=qas, rounding="stochastic")
    rt = TrainingRuntime(tg, seed=seed)
    rng = np.random.default_rng(seed)
    feeds = {}
    for t in tg.boundary:
        shape = (batch,) + tuple(g.tensors[t].shape)
        q = rng.integers(-128, 128, shape, dtype=np.int8)
        feeds[t] = q.astype(np.float32) * np.float32(0.05) if fp32 else q
    labels = rng.integers(0, classes, batch)
    return rt, feeds, labels, resolution


def step_digest(rt, out, resolution) -> str:
    h = hashlib.blake2b(digest_size=8)
    h.update(np.asarray(out["loss"]).tobytes())
    h.update(np.ascontiguousarray(out["logits"]).tobytes())
    for name in sorted(resolution):
        node = rt.nodes.get(name)
        if node is not None:
            for k in sorted(node.params):
                h.update(np.ascontiguousarray(node.params[k]).tobytes())
    return h.hexdigest()


class Profiler:
    """Manual timers around each executed step, keyed by step kind (forward steps by op and conv family)."""

    def __init__(self, rt):
        from microtrain import steps as step_table
        from microtrain.ops import op_module

        self.times = defaultdict(float)
        self.enabled = False
        orig_run_step = rt.run_step
        orig_forward = step_table.run_forward

        def label(s):
            node = rt.nodes.get(s.node)
            if node is None:  # the loss
                return s.kind
            mod = op_module(node)
            fam = mod.kind(node) if hasattr(mod, "kind") and callable(getattr(mod, "kind")) else ""
            return f"{s.kind}[{fam or node.op}]"

        def run_step(s, values, lr, step):
            t = time.process_time()
            orig_run_step(s, values, lr, step)
            if self.enabled:
                self.times[label(s)] += time.process_time() - t

        def run_forward(r, s, values, with_masks=True):
            t = time.process_time()
            orig_forward(r, s, values, with_masks)
            if self.enabled and r is rt:
                self.times[label(s)] += time.process_time() - t

        rt.run_step = run_step
        step_table.run_forward = run_forward
        self._restore = lambda: setattr(step_table, "run_forward", orig_forward)

    def close(self):
        self._restore()


def time_setting(model, setting, batch, repeats, profile=False):
    """(median ms, [ms...], digest of the first timed step, profile dict ms/step)."""
    from threadpoolctl import threadpool_limits

    rt, feeds, labels, resolution = build(model, setting, batch)
    prof = Profiler(rt) if profile else None
    times, digest = [], None
    with threadpool_limits(1, user_api="blas"):
        rt.train_step(feeds, labels, 0.01, 0)  # warm-up (also checks the step runs)
        for r in range(repeats):
            if prof:
                prof.enabled = True
            t = time.process_time()
            out = rt.train_step(feeds, labels, 0.01, r + 1)
            times.append(1e3 * (time.process_time() - t))
            if prof:
                prof.enabled = False
            if digest is None:
                digest = step_digest(rt, out, resolution)
    per = {}
    if prof:
        prof.close()
        per = {k: 1e3 * v / repeats for k, v in sorted(prof.times.items(), key=lambda kv: -kv[1])}
    return statistics.median(times), times, digest, per


def retain_memory_here() -> bool:
    """What runtime/memory.retain_freed_memory does (fine_tune calls it), done here so that the baseline's
    child, whose package may lack it, runs with the same allocator settings."""
    import ctypes
    import ctypes.util

    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    return bool(libc.mallopt(-3, 32 * 2**20)) and bool(libc.mallopt(-1, 2**30))


def child(args) -> int:
    """Time the settings in this process and print one JSON line (used for both sides of --baseline)."""
    if args.retain_memory and not retain_memory_here():
        raise SystemExit("--retain-memory: glibc's mallopt refused the thresholds")
    res = {}
    for s in args.settings.split(","):
        med, times, digest, per = time_setting(args.model, s, args.batch, args.repeats, args.profile)
        res[s] = {"median_ms": med, "ms": times, "digest": digest, "profile_ms": per}
    print("RESULT " + json.dumps(res))
    return 0


def run_child(src: Path, args, settings: str, profile: bool, retain=None) -> dict:
    env = dict(os.environ, PYTHONPATH=str(src))
    cmd = [sys.executable, __file__, "--child", "--model", args.model, "--batch", str(args.batch),
           "--repeats", str(args.repeats), "--settings", settings] + (["--profile"] if profile else [])
    if args.retain_memory if retain is None else retain:
        cmd.append("--retain-memory")
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"child ({src}) failed:\n{out.stderr[-3000:]}")
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="mcunet-5fps")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--settings", default="qas,fp32,last12,full,bias")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--baseline", default=None, help="git ref to time side by side (e.g. main)")
    ap.add_argument("--rounds", type=int, default=2, help="with --baseline: old/new alternations per setting")
    ap.add_argument("--retain-memory", action="store_true",
                    help="glibc malloc keeps freed memory, as fine_tune sets it (runtime/memory.py), both sides")
    ap.add_argument("--old-default-malloc", action="store_true",
                    help="with --baseline and --retain-memory: the old side keeps glibc's defaults (what the "
                         "experiments saw before)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(args)
    new_src = REPO / "src"
    report = {"model": args.model, "batch": args.batch, "repeats": args.repeats, "rounds": args.rounds,
              "retain_memory": args.retain_memory, "old_default_malloc": args.old_default_malloc,
              "command": " ".join(sys.argv), "settings": {}}
    with tempfile.TemporaryDirectory(prefix="bench_sim_step_") as tmp:
        old_src = None
        if args.baseline:
            subprocess.run(f"git -C {REPO} archive {args.baseline} src | tar -x -C {tmp}", shell=True, check=True)
            old_src = Path(tmp) / "src"
            report["baseline"] = subprocess.run(["git", "-C", str(REPO), "rev-parse", args.baseline],
                                                capture_output=True, text=True).stdout.strip()
        report["head"] = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                                        text=True).stdout.strip()
        for s in args.settings.split(","):
            rec = {"new_ms": [], "old_ms": []}
            for r in range(args.rounds if old_src else 1):
                if old_src:
                    o = run_child(old_src, args, s, False, False if args.old_default_malloc else None)[s]
                    rec["old_ms"] += o["ms"]
                    rec["old_digest"] = o["digest"]
                n = run_child(new_src, args, s, args.profile and r == 0)[s]
                rec["new_ms"] += n["ms"]
                rec["new_digest"] = n["digest"]
                if n["profile_ms"]:
                    rec["profile_ms"] = n["profile_ms"]
            rec["new_median_ms"] = statistics.median(rec["new_ms"])
            line = f"{s:7s} new {rec['new_median_ms']:8.1f} ms/step"
            if old_src:
                rec["old_median_ms"] = statistics.median(rec["old_ms"])
                rec["speedup"] = rec["old_median_ms"] / rec["new_median_ms"]
                same = rec["old_digest"] == rec["new_digest"]
                rec["identical"] = same
                line = (f"{s:7s} old {rec['old_median_ms']:8.1f}  new {rec['new_median_ms']:8.1f} ms/step  "
                        f"x{rec['speedup']:.2f}  results {'identical' if same else 'DIFFERENT'}")
            print(line, flush=True)
            for k, v in list(rec.get("profile_ms", {}).items())[:12]:
                print(f"          {v:8.1f} ms  {k}")
            report["settings"][s] = rec
    write_report(args.out, report)
    bad = [s for s, r in report["settings"].items() if r.get("identical") is False]
    if bad:
        print(f"DIFFERENT results in {bad}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""All benchmarks against the anchors in one command: tables, JSON and plots (`microtrain bench` runs this).

    nice -n 10 python benchmarks/run_all.py [--quick] [--accuracy auto|reuse|rerun|skip] [--skip STEP ...]
                                            [--reuse memory|host|cortexm ...] [--update-readme]

Steps (each result says whether it was measured now, reused from an earlier run, or skipped):
  memory    PyTorch peak training memory at batch 1 (fresh process per configuration; bench_memory.py)
            vs microtrain's planned and linked SRAM, full update and sparse scheme, 3 models: the ratios
  host      training-step time of the host C build vs PyTorch CPU, batch 1 (bench_host_step.py per model)
  cortexm   instructions per training step on the emulated Cortex-M7 (bench_cortexm.models_table) vs the
            ~118 M cycles of upstream's engine and vs the arithmetic lower bound (MACs of the step / 2)
  patching  smaller parts (bench_patching.py): the sparse schemes compiled for a 128 KB / 160 KB part (patch-based
            frozen prefix, depthwise convs in place where needed), SRAM as linked with the part's RAM and
            instructions per step in QEMU, before and after; its result file is reused while newer than the
            code it depends on, else measured again (--quick: linked only, no QEMU)
  accuracy  the QAS table (exp_qas.py) and accuracy vs memory (exp_sparse.py): their result files are
            reused when newer than the code they depend on; otherwise a reduced run is made (marked so);
            the time-series scenario (results/vowels.json: `microtrain demo --task vowels` and
            bench_vowels_m4.py --save) is reused only, never re-run here
  tflite    the training tables of the int8 TensorFlow Lite models (exp_tflite.py, about an hour): read from
            results/tflite_train.json while its numerics fingerprint is the code's, never re-run here
Writes benchmarks/results/bench_*.json, bench_*.png and headline.md (and headline_tflite.md); --update-readme
copies headline.md into README.md between its bench markers and headline_tflite.md between its tflite markers
(tests/test_bench_orchestration.py checks that they agree). With every step but tflite skipped, only the
tflite block is written.
--reuse STEP: take that step's committed result (results/bench_*.json) instead of measuring (e.g. host timings
on a loaded machine); the headline names each reused table and the run it comes from.
--quick: fewer timed steps, no firmware link of the memory figures, mcunet-5fps only on Cortex-M; its
reduced results go to benchmarks/results/quick/ (never over the full results the README is copied from).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SRC = REPO / "src" / "microtrain"
RESULTS = HERE / "results"  # the committed full results (the README block is copied from its headline.md)
QUICK_SUBDIR = "quick"  # --quick writes its reduced figures to RESULTS/quick, never over the full ones
OUT = RESULTS  # where this run writes: set by main()
MODELS = ("mcunet-5fps", "mbv2-w0.35", "proxyless-w0.3")
STEPS = ("memory", "host", "cortexm", "patching", "accuracy", "tflite")
MAIN_STEPS = STEPS[:5]  # the steps of headline.md (the README's bench block)
STEP_RESULTS = {"memory": "bench_memory.json", "host": "bench_host_step.json", "cortexm": "bench_cortexm.json"}
UPSTREAM_49KB_SRAM = 237_456  # upstream codegen, MCUNet-5fps 49 KB scheme (../shared/notes/paper-facts.md)
UPSTREAM_CYCLES = 118e6  # upstream engine, MCUNet-5fps sparse update, STM32F746 (paper: 546 ms at 216 MHz)
MACS_PER_CYCLE = 2  # Cortex-M7 SMLAD: two 16-bit MACs per cycle
PAPER_MEMORY_KB = {  # paper, peak training memory on the device: full -> sparse -> sparse + reordering
    "mbv2-w0.35": (2939, 335, 141), "proxyless-w0.3": (2745, 326, 135), "mcunet-5fps": (3650, 560, 173)}
PAPER_STEP_MS = {"mbv2-w0.35": 373, "proxyless-w0.3": 443, "mcunet-5fps": 546}
# code each accuracy result depends on: a result file older than any of these is stale
ACCURACY_DEPS = {
    "qas": ["benchmarks/exp_qas.py", "src/microtrain/runtime", "src/microtrain/quant", "src/microtrain/autodiff.py",
            "src/microtrain/ops"],
    "sparse": ["benchmarks/exp_sparse.py", "src/microtrain/runtime", "src/microtrain/quant", "src/microtrain/sparse",
               "src/microtrain/autodiff.py", "src/microtrain/ops"],
    "vowels": ["src/microtrain/demo/vowels.py", "src/microtrain/runtime", "src/microtrain/quant", "src/microtrain/ops",
               "src/microtrain/autodiff.py", "benchmarks/bench_vowels_m4.py"],
}

sys.path.insert(0, str(HERE))
from bench_cortexm import STEADY_STEPS  # noqa: E402  (the steps the Cortex-M figures average: 2..STEADY_STEPS)


def log(msg: str = "") -> None:
    print(msg, flush=True)


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def save(name: str, doc: dict) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / name
    path.write_text(json.dumps(doc, indent=1, default=str) + "\n")
    return path


def _git(*args) -> str | None:
    try:
        proc = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


def changed_at(rel: str) -> float:
    """When `rel` (file or folder under REPO) last changed: its last commit, or the modification time of its
    uncommitted files (a fresh clone gives every file the same mtime, so commits decide there)."""
    p = REPO / rel
    if not p.exists():
        return 0.0
    committed = _git("log", "-1", "--format=%ct", "--", rel)
    dirty = _git("status", "--porcelain", "--", rel)
    if committed is None or dirty is None:  # not a git checkout: file times only
        files = [p] if p.is_file() else [f for f in p.rglob("*") if f.suffix in (".py", ".c")]
        return max((f.stat().st_mtime for f in files), default=0.0)
    times = [float(committed.strip() or 0)]
    for line in dirty.splitlines():
        f = REPO / line[3:].strip()
        if f.is_file():
            times.append(f.stat().st_mtime)
    return max(times)


def newest_change(paths) -> tuple[float, str]:
    return max(((changed_at(rel), rel) for rel in paths), default=(0.0, ""))


# ----- 1. memory ------------------------------------------------------------------------------------------
def step_memory(args) -> dict:
    import bench_memory

    log("== memory: PyTorch peak training memory (batch 1, fresh process each) vs microtrain SRAM ==")
    rows = bench_memory.measure_all(MODELS, bench_memory.CONFIGS, link=not args.quick, log=log)
    bench_memory.print_table(rows)
    doc = {"source": "measured now", "date": now(), "command": "benchmarks/bench_memory.py "
           + ("--no-link" if args.quick else ""), "method": bench_memory.__doc__.split("\n\n", 2)[2].strip(),
           "paper_device_kb": PAPER_MEMORY_KB, "results": rows}
    log(f"wrote {save('bench_memory.json', doc)}")
    return doc


# ----- 2. host step time ----------------------------------------------------------------------------------
def step_host(args) -> dict:
    import bench_memory

    log("\n== training-step time, batch 1: host C build vs PyTorch CPU (1 thread each) ==")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-host-") as tmp:
        for model in MODELS:
            graph = bench_memory.bench_graph(model)
            scheme_file = bench_memory.sparse_scheme(model, graph).save(Path(tmp) / f"{model}.json")
            out = Path(tmp) / f"{model}-step.json"
            cmd = [sys.executable, str(HERE / "bench_host_step.py"), "--model", model, "--scheme", str(scheme_file),
                   "--steps", str(5 if args.quick else 20), "--out", str(out)]
            proc = _run_limited(cmd, 600)
            if proc.returncode != 0 or not out.exists():
                log(f"  {model}: bench_host_step.py failed (exit {proc.returncode}): {proc.stderr[-800:]}")
                rows.append({"model": model, "error": proc.stderr[-2000:]})
                continue
            row = json.loads(out.read_text())
            row["scheme"] = row.get("scheme") or scheme_file.stem
            rows.append(row)
            log(f"  {model} ({row['scheme']}): C {row['c_ms_wall']:.1f} ms, PyTorch {row['torch_ms_wall']:.1f} ms "
                f"wall -> C/PyTorch {row['ratio_wall']:.2f}x wall, {row['ratio_cpu']:.2f}x CPU time")
    doc = {"source": "measured now", "date": now(), "command": "benchmarks/bench_host_step.py --model M --scheme S "
           f"--steps {5 if args.quick else 20} (per model)", "load_average": os.getloadavg()[0], "results": rows}
    log(f"wrote {save('bench_host_step.json', doc)}")
    return doc


# ----- 3. Cortex-M instructions per step and the lower bound -----------------------------------------------
def step_macs(model: str, scheme) -> dict:
    """MACs of one training step, read off the lowered program: forward convs, the backward grad-input convs
    and the weight-gradient convs of the trained slices (as many MACs as the forward on those channels)."""
    import bench_memory
    from microtrain.codegen import build_program
    from microtrain.ops import op_module

    graph = bench_memory.bench_graph(model)
    prog = build_program(graph, scheme)
    trained = scheme.resolve(graph)
    macs = {"forward": 0, "backward": 0, "update": 0}
    names, forward_nodes, by_op = {n.name for n in graph.nodes}, set(), {}
    for step in prog.train_steps:
        if step.node not in names:
            continue
        node = graph.node(step.node)
        full = int(op_module(node).macs(node, graph.tensors[node.inputs[0]].shape, graph.tensors[node.output].shape))
        n = 0
        if step.phase == "forward" and step.kernel.startswith(("mt_conv", "mt_add", "mt_global_avg_pool")):
            if node.name not in forward_nodes:  # a split conv is still one conv's MACs
                forward_nodes.add(node.name)
                n = full
        elif "grad_input" in step.kernel:
            n = full
        elif "weight_update" in step.kernel or "weight_grad" in step.kernel:
            spec = trained.get(node.name)
            groups = int(node.attrs.get("groups", 1))
            in_ch = node.params["weight"].shape[1] * groups
            k = len(spec.channels) if spec and spec.channels is not None else in_ch
            n = full * k // in_ch
        if n and step.phase in macs:
            macs[step.phase] += n
            key = f"{step.phase}|{node.name}"
            by_op[key] = by_op.get(key, 0) + n
    macs["total"] = sum(macs.values())
    macs["by_op"] = by_op  # "phase|node" -> MACs
    return macs


def _scheme_by_name(model: str, name: str):
    import bench_memory
    from microtrain.sparse.fixtures import fixture_names, load_fixture

    if name in fixture_names():
        return load_fixture(name)
    scheme = bench_memory.sparse_scheme(model, bench_memory.bench_graph(model))
    if scheme.name != name:
        raise ValueError(f"unknown scheme {name!r} of {model} in the Cortex-M results")
    return scheme


def step_cortexm(args) -> dict:
    log("\n== instructions per training step on the emulated Cortex-M (QEMU, batch 1, 2-class head) ==")
    source, command = "measured now", "bench_cortexm.models_table(quick=%s)" % args.quick
    try:
        import bench_cortexm

        with tempfile.TemporaryDirectory(prefix="bench-cortexm-") as tmp:
            rows = bench_cortexm.models_table(Path(tmp), args.quick, bench_cortexm.DATA)
    except (ImportError, AttributeError, TypeError) as e:  # their interface changed: fall back, and say so
        path = RESULTS / "cortexm.json"
        if not path.exists():
            raise
        rows = json.loads(path.read_text())["models"]
        source = f"reused {path.name} of {datetime.fromtimestamp(path.stat().st_mtime, timezone.utc):%Y-%m-%d %H:%M} UTC"
        command = f"(models_table unavailable: {e})"
    bounds = {}
    for r in rows:
        key = (r["model"], r["scheme"])
        if key not in bounds:
            bounds[key] = step_macs(r["model"], _scheme_by_name(*key))
        m = bounds[key]
        r["step_macs"] = m
        r["lower_bound_cycles"] = m["total"] / MACS_PER_CYCLE
        r["ratio_over_lower_bound"] = r["per_step"] / r["lower_bound_cycles"]
        r["ratio_over_upstream_118M"] = r["per_step"] / UPSTREAM_CYCLES
    log(f"{'model':<15}{'scheme':<19}{'cpu':<10}{'kernels':<9}{'instr/step':>12}{'MACs/step':>11}"
        f"{'bound':>9}{'/bound':>8}{'/118M':>7}  cycles M, estimate")
    for r in rows:
        log(f"{r['model']:<15}{r['scheme']:<19}{r['cpu']:<10}{r['kernels']:<9}{r['per_step'] / 1e6:>10.1f} M"
            f"{r['step_macs']['total'] / 1e6:>9.1f} M{r['lower_bound_cycles'] / 1e6:>7.1f} M"
            f"{r['ratio_over_lower_bound']:>7.2f}x{r['ratio_over_upstream_118M']:>6.2f}x  {cycles_estimate_cell(r)}")
    doc = {"source": source, "date": now(), "command": command, "upstream_cycles": UPSTREAM_CYCLES,
           "macs_per_cycle": MACS_PER_CYCLE, "note": "instructions executed (QEMU TCG plugin count), not cycles; "
           "lower bound = MACs of the step / 2 MACs per cycle (SMLAD); cycles_estimate: " + CYCLES_NOTE,
           "results": rows}
    log(f"wrote {save('bench_cortexm.json', doc)}")
    return doc


# ----- 4. smaller parts: the patched builds ------------------------------------------------------------------
PATCHING_DEPS = ["benchmarks/bench_patching.py", "src/microtrain/codegen", "src/microtrain/patching.py",
                 "src/microtrain/arena.py", "src/microtrain/budget.py", "src/microtrain/targets/cortex_m"]


def step_patching(args) -> dict:
    """The 128 KB / 160 KB builds of bench_patching.py: reused while its result is newer than the code it depends
    on, else measured again (into this run's results folder; --quick: linked only)."""
    import bench_patching

    log("\n== smaller parts: the sparse schemes on a 128 KB / 160 KB part (patch-based frozen prefix) ==")
    stored = RESULTS / "bench_patching.json"
    fresh, why = _freshness(stored, PATCHING_DEPS)
    if fresh and not args.quick:
        doc = json.loads(stored.read_text())
        source = why
    else:
        out = OUT / "bench_patching.json"
        cmd = ["--out", str(out)] + (["--no-qemu"] if args.quick else [])
        log(f"{why}: running benchmarks/bench_patching.py {' '.join(cmd)}")
        if bench_patching.main(cmd) != 0:
            raise RuntimeError("bench_patching.py failed")
        doc = json.loads(out.read_text())
        source = "measured now" + (" (--quick: linked only, no QEMU)" if args.quick else "")
    return {"source": source, "date": doc.get("date"), "command": "benchmarks/bench_patching.py",
            "max_extra_macs": doc.get("max_extra_macs"), "configs": doc["configs"]}


# ----- 5. accuracy ------------------------------------------------------------------------------------------
def _recorded_fingerprint(result: Path) -> str | None:
    try:
        return json.loads(result.read_text()).get("numerics_fingerprint")
    except (OSError, ValueError, AttributeError):
        return None


def _freshness(result: Path, deps) -> tuple[bool, str]:
    """A result that records a numerics fingerprint (numerics_fingerprint.py) is fresh while the code computes
    the same fingerprint, whatever the file times (a bit-identical refactor keeps it; a change of the numbers
    anywhere retires it). Older results fall back to "newer than the code they depend on"."""
    if not result.exists():
        return False, f"{result.name} does not exist"
    recorded = _recorded_fingerprint(result)
    if recorded:
        from numerics_fingerprint import numerics_fingerprint

        current = numerics_fingerprint()
        if recorded == current:
            return True, f"reused {result.name} (its numerics fingerprint {recorded} is the code's)"
        return False, f"{result.name} was computed with numerics {recorded}; the code now computes {current}"
    code_t, code_f = newest_change(deps)
    r_t = changed_at(str(result.relative_to(REPO))) if result.is_relative_to(REPO) else result.stat().st_mtime
    stamp = lambda t: datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")  # noqa: E731
    if r_t >= code_t:
        return True, f"reused {result.name} written {stamp(r_t)} (newer than the code it depends on, newest {code_f})"
    return False, f"{result.name} written {stamp(r_t)} is older than {code_f} ({stamp(code_t)})"


REDUCED_TIMEOUT = 480  # seconds per reduced accuracy run: keeps the whole command under 30 min


def _run_limited(cmd, timeout) -> subprocess.CompletedProcess:
    """Run cmd; a timeout becomes a failed CompletedProcess (the caller then falls back and says so)."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(cmd, -1, "", f"timed out after {timeout} s")


def _stale_qas(qas_json: Path, why: str) -> dict:
    if not qas_json.exists():
        return {"source": f"failed: {why}"}
    md = RESULTS / "qas.md"
    return {"source": f"reused although stale: {why}", "table": json.loads(qas_json.read_text()),
            "markdown": md.read_text() if md.exists() else ""}


def _merge_qas_tables(lines: list[str]) -> str:
    """One table from several one-model exp_qas tables: one header, every model row, the average recomputed
    from the rows' means."""
    header = [ln for ln in lines[:2]]
    rows = [ln for ln in lines if ln.startswith("| ") and not ln.startswith(("| model", "| **average"))]
    means = [[float(m) for m in re.findall(r"\| (-?[0-9.]+) ±", ln)] for ln in rows]
    out = header + rows
    if means and all(len(m) == len(means[0]) for m in means) and means[0]:
        avg = [sum(col) / len(col) for col in zip(*means)]
        out.append("| **average** | " + " | ".join(f"**{v:.1f}**" for v in avg) + " |")
    return "\n".join(out)


def _first_table(text: str) -> list[str]:
    """The first markdown table of text (a results file may hold several)."""
    out = []
    for ln in text.splitlines():
        if ln.startswith("|"):
            out.append(ln)
        elif out:
            break
    return out


def _table_lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.startswith("|")]


def _add_planned_sram(record: dict) -> None:
    """Each scheme of the sparse experiment also gets microtrain's planned training SRAM (computed now, by the
    memory planner, mcunet-5fps with a 2-class head): the engine's real figure beside the analytic one."""
    import bench_memory
    from microtrain.codegen import compile_model
    from microtrain.sparse.scheme import UpdateScheme

    graph = bench_memory.bench_graph(record.get("meta", {}).get("model", "mcunet-5fps"))
    for entry in record["final"].values():
        try:
            scheme = UpdateScheme.from_dict(entry["scheme"])
            entry["planned_training_sram"] = compile_model(graph, scheme).report.training_sram_bytes
        except Exception as e:  # a scheme the engine cannot compile is reported, not fatal
            entry["planned_training_sram_error"] = f"{type(e).__name__}: {e}"[:300]


def step_accuracy(args) -> dict:
    log("\n== accuracy: QAS table and sparse update accuracy vs memory ==")
    doc = {"date": now()}
    # QAS
    qas_json = RESULTS / "qas.json"
    fresh, why = _freshness(qas_json, ACCURACY_DEPS["qas"])
    if args.accuracy == "reuse" or (args.accuracy == "auto" and fresh):
        doc["qas"] = _stale_qas(qas_json, why)
        if fresh:
            doc["qas"]["source"] = why
    elif args.accuracy in ("auto", "rerun"):
        rows, failed = [], ""
        models = MODELS[:1] if args.quick else MODELS
        with tempfile.TemporaryDirectory(prefix="bench-qas-") as tmp:
            for model in models:  # --quick keeps one model per run: one run per model
                cmd = [sys.executable, str(HERE / "exp_qas.py"), "--quick", "--models", model,
                       "--runs", str(Path(tmp) / "runs.json")]
                log(f"  {why}: reduced run: exp_qas.py {' '.join(cmd[2:-2])}")
                proc = _run_limited(cmd, REDUCED_TIMEOUT // len(models))
                if proc.returncode != 0:
                    failed = proc.stderr[-300:].strip()
                    break
                rows += _table_lines(proc.stdout)
        if not failed:
            doc["qas"] = {"source": f"REDUCED run now (exp_qas.py --quick per model: 2 epochs, 2 lrs, 1 seed; "
                                    f"{len(models)} model(s)): {why}", "markdown": _merge_qas_tables(rows)}
        else:
            doc["qas"] = _stale_qas(qas_json, f"reduced run failed ({failed}); {why}")
    else:
        doc["qas"] = {"source": "skipped (--accuracy skip)"}
    log(f"  QAS: {doc['qas']['source']}")
    # the digits variant (exp_qas.py --dataset digits), when present: reused only, never re-run here
    digits = RESULTS / "qas_digits.json"
    if digits.exists() and args.accuracy != "skip":
        fresh_d, why_d = _freshness(digits, ACCURACY_DEPS["qas"])
        md = RESULTS / "qas_digits.md"
        if (fresh_d or args.accuracy == "reuse") and md.exists():
            doc["qas_digits"] = {"source": why_d if fresh_d else f"reused although stale: {why_d}",
                                 "table": json.loads(digits.read_text()), "markdown": md.read_text()}
        else:
            doc["qas_digits"] = {"source": f"not shown ({why_d}); run benchmarks/exp_qas.py --dataset digits"}
        log(f"  QAS digits: {doc['qas_digits']['source']}")
    # the real datasets (exp_qas.py --dataset, summarised by qas_datasets.py): reused only, never re-run here
    summary = RESULTS / "qas" / "summary.json"
    if summary.exists() and args.accuracy != "skip":
        fresh_s, why_s = _freshness(summary, ACCURACY_DEPS["qas"])
        md = summary.with_suffix(".md")
        if fresh_s and md.exists():
            doc["qas_datasets"] = {"source": why_s, "table": json.loads(summary.read_text()), "markdown": md.read_text()}
        else:
            doc["qas_datasets"] = {"source": f"not shown ({why_s}); run benchmarks/exp_datasets.py, then "
                                             "benchmarks/qas_datasets.py"}
        log(f"  QAS on the real datasets: {doc['qas_datasets']['source']}")
    # integer vs float backward (exp_backward.py: reruns the int8+QAS final runs with backward="int16")
    bwd = RESULTS / "backward.json"
    if bwd.exists() and args.accuracy != "skip":
        fresh_b, why_b = _freshness(bwd, ACCURACY_DEPS["qas"])
        if fresh_b and bwd.with_suffix(".md").exists():
            doc["backward"] = {"source": why_b, "record": json.loads(bwd.read_text()),
                               "markdown": bwd.with_suffix(".md").read_text()}
        else:
            doc["backward"] = {"source": f"not shown ({why_b}); run benchmarks/exp_backward.py"}
        log(f"  integer backward: {doc['backward']['source']}")
    # the time-series scenario (demo --task vowels + bench_vowels_m4.py --save): reused only, never re-run here
    vowels = RESULTS / "vowels.json"
    if vowels.exists() and args.accuracy != "skip":
        fresh_v, why_v = _freshness(vowels, ACCURACY_DEPS["vowels"])
        if fresh_v or args.accuracy == "reuse":
            doc["vowels"] = {"source": why_v if fresh_v else f"reused although stale: {why_v}",
                             "record": json.loads(vowels.read_text())}
        else:
            doc["vowels"] = {"source": f"not shown ({why_v}); run `microtrain demo --task vowels --out D`, then "
                                       "benchmarks/bench_vowels_m4.py D --save"}
        log(f"  time series (vowels): {doc['vowels']['source']}")
    # the device learning curve (exp_device_curve.py: QEMU, about an hour): read from its JSON, never re-run here
    curve = RESULTS / "device_curve.json"
    if curve.exists() and args.accuracy != "skip":
        doc["device_curve"] = {"source": f"reused {curve.name} (produced by `{json.loads(curve.read_text())['command']}`)",
                               "record": json.loads(curve.read_text())}
        log(f"  device learning curve: {doc['device_curve']['source']}")
    # sparse update
    sparse_json = RESULTS / "sparse.json"
    fresh, why = _freshness(sparse_json, ACCURACY_DEPS["sparse"])
    if args.accuracy == "reuse" or (args.accuracy == "auto" and fresh):
        if not sparse_json.exists():
            doc["sparse"] = {"source": f"missing: {why}"}
        else:
            rec = json.loads(sparse_json.read_text())
            doc["sparse"] = {"source": why if fresh else f"reused although stale: {why}", "record": rec}
    elif args.accuracy in ("auto", "rerun"):
        with tempfile.TemporaryDirectory(prefix="bench-sparse-") as tmp:
            # exp_sparse writes to its module-level RESULTS: point it at a scratch folder so that the
            # reduced run never overwrites the full experiment's files
            code = ("import sys; from pathlib import Path; sys.path.insert(0, %r); import exp_sparse; "
                    "exp_sparse.RESULTS = Path(%r); sys.exit(exp_sparse.main(sys.argv[1:]))" % (str(HERE), tmp))
            # default mode: the experiment's own epochs and lr candidates, two budgets, one seed
            argv = (["--budgets", "49,100", "--epochs", "2", "--lrs", "0.01", "--final-seeds", "0"] if args.quick
                    else ["--budgets", "49,100", "--epochs", "5", "--final-seeds", "0"])
            log(f"  {why}: reduced run: exp_sparse.py {' '.join(argv)} (results in a scratch folder)")
            proc = _run_limited([sys.executable, "-c", code, *argv], REDUCED_TIMEOUT * (1 if args.quick else 2))
            out = Path(tmp) / "sparse.json"
            rec = json.loads(out.read_text()) if out.exists() and proc.returncode == 0 else None
        if rec is not None:
            doc["sparse"] = {"source": f"REDUCED run now (exp_sparse.py {' '.join(argv)}): {why}", "record": rec}
        elif sparse_json.exists():
            doc["sparse"] = {"source": f"reused although stale (reduced run failed: {proc.stderr[-300:].strip()}); "
                                       f"{why}", "record": json.loads(sparse_json.read_text())}
        else:
            doc["sparse"] = {"source": f"failed: {proc.stderr[-300:].strip()}; {why}"}
    else:
        doc["sparse"] = {"source": "skipped (--accuracy skip)"}
    rec = doc["sparse"].get("record")
    if rec and rec.get("final"):
        _add_planned_sram(rec)
    log(f"  sparse: {doc['sparse']['source']}")
    # the real datasets (exp_sparse.py --dataset, queued by exp_datasets.py): reused only, never re-run here
    doc["sparse_datasets"] = {}
    for path in sorted((RESULTS / "sparse").glob("*.json")) if args.accuracy != "skip" else []:
        fresh_p, why_p = _freshness(path, ACCURACY_DEPS["qas"])
        doc["sparse_datasets"][path.stem] = ({"source": why_p, "record": json.loads(path.read_text())} if fresh_p
                                             else {"source": f"not shown ({why_p})"})
        log(f"  sparse on {path.stem}: {why_p}")
    log(f"wrote {save('bench_accuracy.json', doc)}")
    return doc


def _sparse_dataset_section(name: str, d: dict) -> list[str]:
    """One dataset's sparse-update table (exp_sparse.py --dataset): every scheme finished so far, its memory,
    lr and val accuracy over seeds; PARTIAL until the run has written its acceptance line. The acceptance line
    (best searched scheme within 100 KB vs last-12) shows as soon as every searched scheme and last-12 have run:
    the rest of the schemes cannot change it."""
    rec = d.get("record") or {}
    final = rec.get("final") or {}
    done = "complete" if rec.get("acceptance") else f"PARTIAL: {len(final)} schemes so far"
    lines = [f"**Sparse update on {name}** (mcunet-5fps, int8 + QAS; {done}; {d['source']}):", ""]
    if not final:
        return lines + ["No scheme finished yet.", ""]
    lines += ["| scheme | kind | extra memory (KB) | lr | val accuracy (%) | [min, max] over seeds |",
              "|---|---|---:|---:|---:|---:|"]
    for n, r in sorted(final.items(), key=lambda kv: kv[1]["extra_kb"]):
        lines.append(f"| {n} | {r['kind']} | {r['extra_kb']:.1f} | {r['lr']:g} | {100 * r['val_acc']:.1f} | "
                     f"[{100 * r['val_acc_min']:.1f}, {100 * r['val_acc_max']:.1f}] |")
    acceptance = rec.get("acceptance")
    searched = {f"searched-{x['metric']}-{x['budget_kb']:g}kb" for x in rec.get("searches", [])}
    if acceptance is None and searched and searched <= set(final) and "last-12" in final:
        # a partial run whose searched schemes and last-12 have all finished: the comparison is already final
        from exp_sparse import best_within_vs_last12

        acceptance = best_within_vs_last12(rec)
    if acceptance:
        from exp_sparse import acceptance_line

        lines += ["", acceptance_line(acceptance)]
    return lines + [""]


def step_tflite(args) -> dict:
    """The int8 TensorFlow Lite training tables: exp_tflite.py's stored result, shown only while fresh."""
    log("\n== tflite: training tables of the int8 TensorFlow Lite models (exp_tflite.py, reused only) ==")
    path = RESULTS / "tflite_train.json"
    fresh, why = _freshness(path, ["benchmarks/exp_tflite.py", "src/microtrain"])
    doc = {"date": now(), "source": why if fresh else f"not shown ({why}); run nice -n 19 python "
                                                      "benchmarks/exp_tflite.py"}
    if fresh:
        doc["record"] = json.loads(path.read_text())
    log(f"  tflite: {doc['source']}")
    return doc


def headline_tflite(entry: dict) -> str:
    import exp_tflite

    lines = ["<!-- written by benchmarks/run_all.py (`microtrain bench`) from benchmarks/results/tflite_train.json "
             "(benchmarks/exp_tflite.py); not measured by bench itself. -->", "",
             f"**Training int8 TensorFlow Lite models** (validation top-1 %, mean ± std over seeds; Cortex-M7 "
             f"firmware per update, linked and trained under QEMU). Source: {entry['source']}.", ""]
    if entry.get("record"):
        lines.append(exp_tflite.markdown(entry["record"]))
    return "\n".join(lines).rstrip("\n") + "\n"


# ----- plots and the headline table --------------------------------------------------------------------------
_PATCHED_AS = {"like-mcunet-49kb": "like-49kb"}  # bench_memory's scheme name -> bench_patching's for the same scheme


def plots(results: dict) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    mem = results.get("memory")
    if mem:
        fig, axes = plt.subplots(1, len(MODELS), figsize=(15, 4.4), sharey=True)
        for ax, model in zip(axes, MODELS):
            rows = {r["config"]: r for r in mem["results"] if r["model"].startswith(model)}
            if not rows:
                continue
            f, s = rows.get("full"), rows.get("sparse")
            bars = [("PyTorch process\n(full update)", f["torch"]["process_peak_rss"], "C3"),
                    ("PyTorch step\n(full update)", f["torch"]["step_peak_increase"], "C1"),
                    ("PyTorch step\n(sparse)", s["torch"]["step_peak_increase"], "C1"),
                    ("microtrain\nfull update", f["microtrain"].get("linked_sram", f["microtrain"]["planned_training_sram"]), "C0"),
                    ("microtrain\nsparse", s["microtrain"].get("linked_sram", s["microtrain"]["planned_training_sram"]), "C2")]
            bars += [(f"microtrain sparse\n{p['part_ram'] // 1024} KB part", p["after"]["linked_sram_bytes"], "C4")
                     for p in _patched_rows(results.get("patching"))
                     if p["model"] == model and p["scheme"] in (s.get("scheme"), _PATCHED_AS.get(s.get("scheme")))]
            kbs = [b[1] / 1024 for b in bars]
            ax.bar(range(len(bars)), kbs, color=[b[2] for b in bars])
            for i, v in enumerate(kbs):
                ax.text(i, v * 1.15, f"{v / 1024:.1f} MB" if v >= 1024 else f"{v:.0f} KB", ha="center", fontsize=7)
            ax.axhline(256, color="k", linestyle="--", linewidth=0.8)
            ax.text(-0.45, 256 * 1.1, "256 KB", ha="left", fontsize=7)
            ax.set_xticks(range(len(bars)), [b[0] for b in bars], fontsize=6.5)
            ax.set_yscale("log")
            ax.set_title(model, fontsize=9)
        axes[0].set_ylabel("peak training memory, batch 1 (KB, log)")
        fig.suptitle("Memory ladder: PyTorch CPU fp32 measured on this host vs microtrain SRAM "
                     + ("(linked, Cortex-M7)" if "linked_sram" in mem["results"][0]["microtrain"] else "(planned)"),
                     fontsize=10)
        fig.tight_layout()
        written.append(OUT / "bench_memory_ladder.png")
        fig.savefig(written[-1], dpi=120)
        plt.close(fig)
    cm = results.get("cortexm")
    if cm:
        written.append(_plot_instructions(cm, plt))
    acc = results.get("accuracy", {}).get("sparse", {}).get("record")
    if acc and acc.get("final"):
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), sharey=True)
        kinds = sorted({r["kind"] for r in acc["final"].values()})
        xs = (("extra_kb", 1, "extra training memory over inference (KB, upstream's analytic model)"),
              ("planned_training_sram", 1 / 1024, "microtrain planned training SRAM (KB, arena + trained slices)"))
        for ax, (key, scale, xlabel) in zip(axes, xs):
            for j, kind in enumerate(kinds):
                pts = sorted((r[key] * scale, 100 * r["val_acc"]) for r in acc["final"].values()
                             if r["kind"] == kind and r.get("val_acc") is not None and r.get(key) is not None)
                if pts:
                    ax.plot(*zip(*pts), marker="os^Dx*v"[j % 7], linestyle="-" if len(pts) > 1 else "none",
                            label=kind)
            ax.set_xlabel(xlabel, fontsize=8)
            ax.grid(alpha=0.3)
        axes[0].set_xscale("symlog", linthresh=1)
        axes[1].axvline(256, color="k", linestyle="--", linewidth=0.8)
        axes[0].set_ylabel("validation accuracy (%)")
        src = results["accuracy"]["sparse"]["source"]
        fig.suptitle("mcunet-5fps, ants vs bees: accuracy vs memory" + (" (REDUCED run)" if "REDUCED" in src else ""),
                     fontsize=10)
        ax = axes[0]
        ax.legend(fontsize=7)
        fig.tight_layout()
        written.append(OUT / "bench_accuracy_memory.png")
        fig.savefig(written[-1], dpi=120)
        plt.close(fig)
    return written


def _plot_instructions(cm: dict, plt) -> Path:
    """Left: instructions per step by phase for every configuration, with the MAC lower bound and upstream's
    118 M. Right: the costliest ops of mcunet-5fps's first scheme, instructions vs that op's MACs / 2."""
    rows = [r for r in cm["results"] if r["cpu"] == "cortex-m7"]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(14, 5), gridspec_kw={"width_ratios": [1.2, 1]})
    colors = {"forward": "C0", "backward": "C1", "update": "C2"}
    for i, r in enumerate(rows):
        bottom = 0.0
        for phase, color in colors.items():
            v = r["by_phase"].get(phase, 0) / 1e6
            ax.bar(i, v, bottom=bottom, color=color, label=phase if i == 0 else None)
            bottom += v
        ax.plot([i - 0.4, i + 0.4], [r["lower_bound_cycles"] / 1e6] * 2, color="k", linewidth=2,
                label="lower bound: step MACs / 2" if i == 0 else None)
        ax.text(i, bottom + 3, f"{r['per_step'] / 1e6:.0f} M", ha="center", fontsize=7)
    ax.axhline(UPSTREAM_CYCLES / 1e6, color="C3", linestyle="--", linewidth=1, label="upstream engine, ~118 M cycles")
    short = lambda r: r["scheme"].replace(r["model"] + "-", "").replace("like-mcunet-", "~")  # noqa: E731
    name = lambda r: r["model"].replace("-", "\n", 1)  # two short lines: the bars are narrow  # noqa: E731
    ax.set_xticks(range(len(rows)), [f"{name(r)}\n{short(r)}\n{r['kernels']}" for r in rows], fontsize=6.5)
    ax.set_ylabel("instructions per training step (M), Cortex-M7 in QEMU")
    ax.set_title("One training step, batch 1, by phase", fontsize=10)
    ax.legend(fontsize=7)
    best = next((r for r in rows if r["kernels"] == "cortex-m" and r.get("top_ops")), None)
    if best:
        ops = sorted(best["top_ops"], key=lambda t: -t[3])
        labels = [f"{phase}: {node} ({kernel.replace('mt_', '')})" for phase, node, kernel, _ in ops]
        instr = [t[3] / 1e6 for t in ops]
        bound = [best["step_macs"].get("by_op", {}).get(f"{phase}|{node}", 0) / MACS_PER_CYCLE / 1e6
                 for phase, node, _, _ in ops]
        y = range(len(ops))
        ax2.barh([v + 0.2 for v in y], instr, height=0.4, color=[colors.get(t[0], "C7") for t in ops],
                 label="instructions")
        ax2.barh([v - 0.2 for v in y], bound, height=0.4, color="0.5", label="op MACs / 2")
        ax2.set_yticks(list(y), labels, fontsize=7)
        ax2.invert_yaxis()
        ax2.set_xlabel("M per training step")
        ax2.set_title(f"Costliest ops: {best['model']}, {best['scheme']}, Cortex-M kernels\n"
                      f"({sum(instr) / (best['per_step'] / 1e6):.0%} of the step) vs each op's MACs / 2", fontsize=9)
        ax2.legend(fontsize=7)
    fig.tight_layout()
    path = OUT / "bench_instructions.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _paragraph(text: str, start: str) -> list[str]:
    """The line of a results markdown that starts with `start` (e.g. the averages sentence), if any."""
    return [ln for ln in text.splitlines() if ln.startswith(start)][:1]


def _gradient_summary(scales: dict) -> str:
    """One sentence from exp_qas's per-tensor |step| / |param| ratios: how far int8 with and without QAS are
    from fp32 (the mechanism QAS fixes, measured, whatever the accuracies say)."""
    qas, raw = [], []
    for r in scales.values():
        if r.get("fp32") and r.get("int8+QAS") and r.get("int8"):
            qas.append(abs(r["int8+QAS"] / r["fp32"] - 1))
            raw.append(r["int8"] / r["fp32"])
    if not qas:
        return ""
    lo, hi = min(raw), max(raw)
    return (f"Why: per trained tensor (mcunet-5fps, one batch, {len(qas)} tensors) the update/parameter ratio with "
            f"QAS is within {100 * max(qas):.1f} % of fp32's (median {100 * sorted(qas)[len(qas) // 2]:.1f} %); "
            f"without QAS it is {lo:.1e} to {hi:.1e} times fp32's, a spread no single learning rate can fix.")


def _paired_summary(table: dict) -> str | None:
    """How sure the average differences are: the final runs paired by model and seed (qas_paired.py)."""
    from qas_paired import COMPARISONS, paired

    try:
        rows = [paired(table, a, b) for a, b in COMPARISONS[:2]]
    except (KeyError, ValueError):  # a reduced or partial table: nothing to pair
        return None
    return ("Paired by model and seed (`benchmarks/qas_paired.py`): " + "; ".join(
        f"{r['a']} - {r['b']} {r['mean']:+.2f} ± {r['se']:.2f} s.e., 95 % interval [{r['ci95'][0]:+.2f}, "
        f"{r['ci95'][1]:+.2f}], sign-flip p = {r['p_sign_flip']:.3f}" for r in rows) + ".")


def _qas_section(title: str, entry: dict) -> list[str]:
    lines = [f"{title}. Source: {entry.get('source', 'n/a')}.", ""]
    md = entry.get("markdown") or ""
    if not md:
        return lines
    lines += _first_table(md) + [""]
    lines += _paragraph(md, "Average differences")
    table = entry.get("table") or {}
    collapsed = table.get("collapsed_runs") or {}
    n_bad = sum(len(v["collapsed_seeds"]) for v in collapsed.values())
    if collapsed:
        n_all = sum(len(table['models'][m][s]['val_acc']) for m in table['models'] for s in table['models'][m])
        n_rolled = sum(len(v.get("rolled_back_seeds", [])) for v in collapsed.values())
        lines.append(f"Final runs that ended collapsed to one class (training accuracy at chance): {n_bad} of "
                     f"{n_all}; runs in which the trainer rolled a collapse back (lr / 3): {n_rolled}"
                     + (" (" + ", ".join(f"{k.replace('|', ' ')} {len(v['rolled_back_seeds'])}"
                                        for k, v in collapsed.items() if v.get("rolled_back_seeds")) + ")"
                        if n_rolled else "") + ". All count in the means.")
    if table.get("models"):
        lines.append(_paired_summary(table))
    if table.get("gradient_scales"):
        lines.append(_gradient_summary(table["gradient_scales"]))
    return [ln for ln in lines if ln is not None] + [""]


def _vowels_section(entry: dict) -> list[str]:
    """The time-series scenario: adaptation accuracy per variant and seed, the Cortex-M4 figures (vowels.json)."""
    from microtrain.demo.vowels import format_table

    rec = entry.get("record")
    title = "**Time series: a 1-D CNN adapted to unseen speakers** (`microtrain demo --task vowels`)"
    if not rec:
        return [f"{title}: {entry.get('source', 'n/a')}.", ""]
    d = rec["demo"]
    data, a, sp, dev = d["data"], d["adapt"], d.get("sparse", {}), d.get("device", {})
    n_test = data["new_test"]
    lines = [f"{title}. JapaneseVowels, {data['length']} steps x 12 channels; a {d['pretrain']['params']:,}-parameter "
             f"int8 CNN pretrained on speakers {', '.join(data['pretrain_speakers'])}; a new zero head and the scheme's "
             f"slices adapted on the {data['new_train']} training cases of unseen speakers "
             f"{', '.join(data['new_speakers'])} ({a['epochs']} epochs, lr {a['lr']}, batch {a['batch']}) and tested on "
             f"their {n_test} test cases ({100 * a['before']:.1f} % before adaptation); test accuracy per seed (seeds "
             f"vary the adaptation); int8 = without QAS. Source: {entry['source']} (written {rec['date'][:10]} by "
             f"`{rec['commands']['demo']}` and `{rec['commands']['m4']}`).",
             "", format_table(d), "",
             f"These sets are small: one test case is {100 / n_test:.1f} points and a 95 % binomial interval is about "
             f"±{196 * (0.9 * 0.1 / n_test) ** 0.5:.0f} points at 90 %, so differences below that are not established."]
    if sp.get("scheme_text"):
        lines.append(f"Searched scheme (budget {d['config'].get('budget', '?')}): {sp['scheme_text']}, "
                     f"{sp['extra_bytes']:,.0f} B analytic extra memory.")
    m4 = rec.get("m4")
    if m4:
        lines += ["", f"On the device ({m4['cpu']}, searched scheme, batch 1, {m4['steps']} steps; instructions executed, "
                  "not cycles):", "",
                  "| kernels | instructions / step | / inference | firmware SRAM (B) | flash (B) |",
                  "|---|---:|---:|---:|---:|"]
        for key, name in (("portable", "portable C"), ("cortex-m", "Cortex-M SIMD")):
            r = m4[key]
            lines.append(f"| {name} | {r['per_step']:,.0f} | {r['per_inference']:,.0f} | {r['sram']:,} | {r['flash']:,} |")
        lines.append("")
        if dev.get("firmware_sram") is not None:
            lines.append(f"Device check ({dev['samples']} training samples): firmware parameters "
                         f"{'bit-identical to' if dev.get('params_bit_identical_to_host') else 'DIFFERENT from'} the "
                         f"host build's; planned SRAM {dev['planned_sram']:,} B, linked {dev['firmware_sram']:,} B "
                         f"(64 KB: {'fits' if dev.get('fits_64kb') else 'does NOT fit'}), stack used "
                         f"{dev['stack_used']:,} B; SIMD and portable builds' parameters "
                         f"{'identical' if m4.get('params_identical') else 'DIFFER'}.")
    return lines + [""]


def reused_step(name: str) -> dict:
    """A step's committed result, marked reused (never presented as measured now)."""
    path = RESULTS / STEP_RESULTS[name]
    if not path.exists():
        raise FileNotFoundError(f"--reuse {name}: {path} does not exist")
    doc = json.loads(path.read_text())
    doc["source"] = f"reused {path.name} (measured {doc.get('date', 'at an unknown date')})"
    return doc


def _reused_note(doc: dict) -> str:
    return f" **Reused, not measured in this run**: {doc['source']}." if doc["source"].startswith("reused") else ""


def _patched_rows(patching: dict | None) -> list[dict]:
    """bench_patching's configurations as rows (model, scheme, part RAM, before and after)."""
    return [{"config": name, **r} for name, r in ((patching or {}).get("configs") or {}).items()]


def _patching_section(patching: dict | None) -> list[str]:
    rows = _patched_rows(patching)
    if not rows:
        return []
    lines = ["**Smaller parts** (`microtrain compile --ram 128K` / `160K`: the frozen prefix runs on spatial tiles "
             f"within {patching.get('max_extra_macs', '10%')} extra MACs, depthwise convs in place and trained blocks' "
             "backward by channel groups where needed; "
             "before: the default 256 KB build. SRAM as linked for the Cortex-M7, the part's RAM given to the "
             f"linker; instructions of one training step in QEMU, the mean of steps 2..{STEADY_STEPS} as above; same parameters: "
             f"the two builds' trained parameters after those steps are identical). Source: {patching['source']}.", "",
             "| model | scheme | part | SRAM linked (KB) before -> after | fits the part | extra MACs | "
             "M7 instructions/step (M) before -> after | same parameters |",
             "|---|---|---:|---:|---|---:|---:|---|"]
    for r in rows:
        b, a = r["before"], r["after"]
        ins = "n/a"
        if "instructions_per_step" in b and "instructions_per_step" in a:
            ins = (f"{b['instructions_per_step'] / 1e6:.1f} -> {a['instructions_per_step'] / 1e6:.1f} "
                   f"({r['extra_instructions_ratio']:+.1%})")
        same = {True: "yes", False: "NO"}.get(r.get("same_params"), "n/a")
        lines.append(f"| {r['model']} | {r['scheme']} | {r['part_ram'] // 1024} KB | "
                     f"{b['linked_sram_bytes'] / 1024:.1f} -> {a['linked_sram_bytes'] / 1024:.1f} | "
                     f"{'yes' if a.get('fits_part', True) else 'no'} | "
                     f"{a['extra_macs'] / a['model_macs']:+.1%} | {ins} | {same} |")
    return lines + [""]


def _device_curve_section(entry: dict) -> list[str]:
    """Learning on the device (exp_device_curve.py): one row per dataset, the curve, and the minutes answer."""
    docs = entry["record"]["datasets"]
    lines = ["**Learning on the device** (mcunet-5fps, 49 KB scheme, new head, Cortex-M7 firmware trained in QEMU "
             "at batch 1 on samples streamed from files; held-out accuracy of the device's parameters; minutes are "
             f"an estimate: instructions / 216e6; {entry['source']}; plot benchmarks/results/device_curve.png, "
             "details benchmarks/results/device_curve.md):", "",
             "| dataset | classes | train / val | lr | steps (epochs) | M instructions / step | top-1 % at step 0 "
             "-> final (95 % interval) | within 1 point of final after (est. device min) | host simulation params "
             "identical | QAS table: head-only / last two blocks |",
             "|---|---:|---|---:|---|---:|---|---:|---|---|"]
    for name, d in docs.items():
        lo, hi = d["final_acc_wilson95"]
        w = d["within_1pt"]["first_reached"]
        ref = d.get("reference") or {}
        refs = (f"{100 * ref['head-only']:.1f} / {100 * ref['int8+QAS']:.1f}" if ref else "")
        lines.append(f"| {name} | {len(d['classes'])} | {d['n_train']} / {d['n_val']} | {d['lr']:g} | {d['steps']} "
                     f"({d['epochs']:.3g}) | {d['instructions_per_step'] / 1e6:.1f} | {100 * d['curve'][0]['acc']:.1f} "
                     f"-> {100 * d['final_acc']:.1f} ({100 * lo:.1f}-{100 * hi:.1f}) | {w['device_minutes_est']:.1f} "
                     f"(step {w['step']}) | {'yes, every checkpoint' if d['host_c_identical_all'] else 'NO'} | {refs} |")
    lines.append("")
    for name, d in docs.items():
        w = d["within_1pt"]
        half = [100 * r["acc"] for r in d["curve"] if r["step"] >= d["steps"] / 2]
        lines.append(f"Answer, {name}: within 1 point of its final {100 * d['final_acc']:.1f} % after "
                     f"{w['first_reached']['device_minutes_est']:.1f} estimated device minutes (step "
                     f"{w['first_reached']['step']}" + ("" if w["stays_from"]["step"] == w["first_reached"]["step"]
                                                        else f"; stays within from {w['stays_from']['device_minutes_est']:.1f} "
                                                             f"min, step {w['stays_from']['step']}")
                     + f"). The second half of the run ranges {min(half):.1f}-{max(half):.1f} % (constant lr, "
                       f"batch 1: the final figure is one noisy point). Curve (est. device minutes: top-1 %): "
                     + ", ".join(f"{r['device_minutes_est']:.1f}: {100 * r['acc']:.1f}" for r in d["curve"]) + ".")
        lines.append("")
    lines.append("")
    return lines


CYCLES_NOTE = ("M7 cycles, estimate: not measured (QEMU has no timing model) but estimated from the executed "
               "instructions per timing class with a per-class table after LLVM's Cortex-M7 scheduling model (Arm "
               "publishes no per-instruction cycle table for the M7), as a range from ideal dual issue to no pairing; "
               "dependency stalls, branch mispredictions and memory wait states are left out, so it is not comparable "
               "to upstream's 118 M cycles measured on the STM32F746 (targets/cortex_m/cycles.py, "
               "docs/measurements.md); the instructions are the measured figure.")


def cycles_estimate_cell(row: dict) -> str:
    """The Cortex-M7 cycle estimate of a bench_cortexm row as "low-high" (millions), or n/a when not counted."""
    est = row.get("cycles_estimate")
    return f"{est['low'] / 1e6:.1f}-{est['high'] / 1e6:.1f} (est.)" if est else "n/a"


def headline(results: dict, args, seconds: float, plotted=()) -> str:
    reused = [k for k, v in results.items() if isinstance(v, dict) and str(v.get("source", "")).startswith("reused ")
              and k in STEP_RESULTS]
    lines = ["<!-- written by benchmarks/run_all.py (`microtrain bench`); every figure below comes from its run "
             f"of {now()}{' with --quick' if args.quick else ''}"
             + (f", except the tables of {', '.join(reused)}, reused from the earlier runs named there" if reused else "")
             + ". -->", ""]
    mem = results.get("memory")
    if mem:
        linked = "linked_sram" in mem["results"][0]["microtrain"]
        lines += ["**Peak training memory, batch 1** (PyTorch CPU fp32 measured on the host, a fresh process per "
                  "configuration; microtrain: SRAM " + ("as linked for the Cortex-M7" if linked else "as planned")
                  + "). Paper, on-device: full / sparse / sparse + reordering." + _reused_note(mem), "",
                  "| model | update | PyTorch step peak (MB) | PyTorch process peak (MB) | microtrain SRAM (KB) | "
                  "PyTorch step / microtrain | PyTorch process / microtrain | fits 256 KB | paper (KB) |",
                  "|---|---|---:|---:|---:|---:|---:|---|---:|"]
        for r in mem["results"]:
            t, m = r["torch"], r["microtrain"]
            sram = m.get("linked_sram", m["planned_training_sram"])
            paper = PAPER_MEMORY_KB.get(next((k for k in PAPER_MEMORY_KB if r["model"].startswith(k)), ""), None)
            ptxt = "" if not paper else (f"{paper[0]}" if r["config"] == "full" else f"{paper[1]} / {paper[2]}")
            fits = m.get("fits_256kb", m["planned_total_sram"] <= 256 * 1024)
            lines.append(f"| {r['model']} | {'full' if r['config'] == 'full' else r['scheme']} | "
                         f"{t['step_peak_increase'] / 2**20:.2f} | {t['process_peak_rss'] / 2**20:.0f} | "
                         f"{sram / 1024:.1f} | {t['step_peak_increase'] / sram:.1f}x | {t['process_peak_rss'] / sram:.0f}x | "
                         f"{'yes' if fits else 'no'} | "
                         f"{ptxt} |")
        ref = next((r for r in mem["results"] if r["model"].startswith("mcunet-5fps") and r["config"] != "full"), None)
        if ref:
            planned = ref["microtrain"]["planned_training_sram"]
            lines += ["", f"Against upstream's engine (mcunet-5fps, 49 KB scheme): microtrain plans {planned:,} B of "
                      f"training SRAM (arena + trained parameters + scratch), upstream's codegen reports "
                      f"{UPSTREAM_49KB_SRAM:,} B for the same scheme: {planned / UPSTREAM_49KB_SRAM:.2f}x."]
        lines.append("")
    lines += _patching_section(results.get("patching"))
    host = results.get("host")
    cm = results.get("cortexm")
    if host or cm:
        opts = sorted({r.get("opt") for r in (host or {}).get("results", []) if r.get("opt")})
        lines += ["**One training step, batch 1** (sparse scheme as above). Host: generated C (gcc "
                  f"{' / '.join(opts) or 'n/a'}) vs PyTorch CPU fp32, 1 thread each, median step (wall clock, and this process's CPU time: steadier on a shared machine). Cortex-M7: instructions executed in QEMU "
                  f"with the Cortex-M kernels, mean of training steps 2-{STEADY_STEPS} on ants vs bees images (step 1, behind the "
                  "new zero head, has an all-zero backward and costs less: `step1` in bench_cortexm.json; the fast "
                  "input gradient skips channels whose gradient is zero everywhere, so steps differ a little), vs "
                  "upstream's ~118 M cycles and the lower bound MACs/2. " + CYCLES_NOTE
                  + "".join(_reused_note(d) for d in (host, cm) if d), "",
                  "| model | scheme | host C (ms) | PyTorch (ms) | C / PyTorch (wall) | C / PyTorch (CPU time) | "
                  "M7 instructions (M) | M7 cycles, estimate (M) | / 118 M | step MACs (M) | / lower bound |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        hrows = {r["model"]: r for r in (host or {}).get("results", []) if "error" not in r}
        crows = [r for r in (cm or {}).get("results", []) if r["cpu"] == "cortex-m7" and r["kernels"] == "cortex-m"]
        keys = [(r["model"], r["scheme"]) for r in crows] or [(m, hrows[m]["scheme"]) for m in hrows]
        for model, scheme in keys:
            h = hrows.get(model) if hrows.get(model, {}).get("scheme") in (scheme, None) or not crows else None
            c = next((r for r in crows if (r["model"], r["scheme"]) == (model, scheme)), None)
            cells = ([f"{h['c_ms_wall']:.1f}", f"{h['torch_ms_wall']:.1f}", f"{h['ratio_wall']:.2f}x",
                      f"{h['ratio_cpu']:.2f}x"] if h else [""] * 4)
            cells += ([f"{c['per_step'] / 1e6:.1f}", cycles_estimate_cell(c), f"{c['ratio_over_upstream_118M']:.2f}x",
                       f"{c['step_macs']['total'] / 1e6:.1f}", f"{c['ratio_over_lower_bound']:.2f}x"]
                      if c else [""] * 5)
            lines.append(f"| {model} | {scheme} | " + " | ".join(cells) + " |")
        lines.append("")
    acc = results.get("accuracy")
    if acc:
        lines += _qas_section("**QAS, ants vs bees** (hymenoptera_data, last two blocks + new head; validation "
                              "top-1 %, mean ± std over 3 seeds, chosen lr in brackets)", acc.get("qas", {}))
        if acc.get("qas_digits"):
            lines += _qas_section("**QAS, handwritten digits** (scikit-learn digits at the model resolution, 10 "
                                  "classes, 500 train / 300 val; same protocol)", acc["qas_digits"])
        qd = acc.get("qas_datasets")
        if qd and qd.get("markdown"):
            t = qd["table"]
            lines += [f"**QAS on the real datasets** (mcunet-5fps; "
                      f"{'PARTIAL: ' if t.get('partial') else ''}{len(t.get('datasets_done', []))} datasets; "
                      f"{qd['source']}):", ""] + _first_table(qd["markdown"]) + [""]
            if t.get("acceptance"):
                lines += [f"Acceptance: {t['acceptance']}", ""]
            others = qd["markdown"].split("Other models", 1)
            if len(others) == 2 and _first_table(others[1]):  # mbv2-w0.35 / proxyless-w0.3 where they ran
                lines += ["The other two models, same protocol (mean over seeds, top-1 %; only the data sets they "
                          "have run on so far):", ""] + _first_table(others[1]) + [""]
        bw = acc.get("backward")
        if bw and bw.get("markdown"):
            lines += [f"**Integer backward** (`--backward int16`: pointwise input gradients as int16 codes with a "
                      f"power-of-two scale, exact int32 sums, docs/training-semantics.md 4b) vs the float backward, "
                      f"mcunet-5fps int8 + QAS at the float setting's lr, paired by seed ({bw['source']}):", "",
                      bw["markdown"].strip(), ""]
        s = acc.get("sparse", {})
        lines += [f"**Sparse update, accuracy vs memory** ({s.get('source', 'n/a')}):", ""]
        rec = s.get("record") or {}
        if rec.get("final"):
            lines += ["| scheme | kind | extra memory, analytic (KB) | microtrain training SRAM (KB) | "
                      "val accuracy (%) |", "|---|---|---:|---:|---:|"]
            for name, r in sorted(rec["final"].items(), key=lambda kv: kv[1]["extra_kb"]):
                if r.get("val_acc") is not None:
                    sram = f"{r['planned_training_sram'] / 1024:.1f}" if r.get("planned_training_sram") else "n/a"
                    lines.append(f"| {name} | {r['kind']} | {r['extra_kb']:.1f} | {sram} | {100 * r['val_acc']:.1f} |")
            lines.append("")
        for name, d in (acc.get("sparse_datasets") or {}).items():
            lines += _sparse_dataset_section(name, d)
        if acc.get("vowels"):
            lines += _vowels_section(acc["vowels"])
    dc = (acc or {}).get("device_curve")
    if dc:
        lines += _device_curve_section(dc)
    names = ", ".join(f"benchmarks/results/{Path(p).name}" for p in plotted) or "none"
    lines.append(f"Plots: {names}. Whole run: {seconds / 60:.1f} min on {os.cpu_count()} cores.")
    return "\n".join(lines) + "\n"


README = REPO / "README.md"
README_BEGIN, README_END = "<!-- bench:begin -->", "<!-- bench:end -->"
TFLITE_MARKERS = ("<!-- bench:tflite:begin -->", "<!-- bench:tflite:end -->")


def readme_block(text: str, markers=(README_BEGIN, README_END)) -> str:
    """What README.md holds between a pair of bench markers (tests compare it with headline.md)."""
    begin, end = markers
    if begin not in text or end not in text:
        raise ValueError(f"{README}: bench markers {begin} ... {end} missing")
    return text.split(begin, 1)[1].split(end, 1)[0].strip("\n")


def update_readme(headline_text: str, path: Path = README, markers=(README_BEGIN, README_END)) -> Path:
    """Replace README's bench block by the headline, so every figure there comes from this run."""
    begin, end = markers
    text = path.read_text()
    readme_block(text, markers)  # markers present
    head, rest = text.split(begin, 1)
    tail = rest.split(end, 1)[1]
    path.write_text(f"{head}{begin}\n{headline_text.strip()}\n{end}{tail}")
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="reduced settings (see above)")
    ap.add_argument("--accuracy", choices=("auto", "reuse", "rerun", "skip"), default="auto",
                    help="auto: reuse the experiments' results when newer than their code, else a reduced run")
    ap.add_argument("--skip", nargs="*", default=[], choices=STEPS, help="steps to leave out")
    ap.add_argument("--reuse", nargs="*", default=[], choices=tuple(STEP_RESULTS),
                    help="steps whose committed results/bench_*.json is shown instead of measuring now")
    ap.add_argument("--update-readme", action="store_true",
                    help="also copy the headline into README.md between its bench markers")
    args = ap.parse_args(argv)
    global OUT
    OUT = RESULTS / QUICK_SUBDIR if args.quick else RESULTS
    if args.quick and args.update_readme:
        ap.error("--quick results are reduced: they are never copied into the README (drop --update-readme)")
    OUT.mkdir(parents=True, exist_ok=True)
    if not os.access(OUT, os.W_OK):
        ap.error(f"{OUT}: results folder is not writable")
    if args.quick:
        log(f"--quick: reduced results go to {OUT} (the full results in {RESULTS} are left as they are)")
    t0 = time.monotonic()
    results, status = {}, {}
    for name, fn in (("memory", step_memory), ("host", step_host), ("cortexm", step_cortexm),
                     ("patching", step_patching), ("accuracy", step_accuracy), ("tflite", step_tflite)):
        if name in args.skip:
            status[name] = "skipped"
            continue
        t1 = time.monotonic()
        try:
            if name in args.reuse:
                results[name] = reused_step(name)
                log(f"{name}: {results[name]['source']}")
            else:
                results[name] = fn(args)
            status[name] = "reused" if name in args.reuse else f"{time.monotonic() - t1:.0f} s"
        except Exception as e:  # one broken benchmark must not lose the others: report it, exit non-zero
            import traceback

            traceback.print_exc()
            status[name] = f"FAILED after {time.monotonic() - t1:.0f} s: {type(e).__name__}: {str(e)[:300]}"
            log(f"step {name} {status[name]}")
    plotted = plots(results)
    for path in plotted:
        log(f"wrote {path}")
    seconds = time.monotonic() - t0
    text = headline(results, args, seconds, plotted)
    failed = {k: v for k, v in status.items() if v.startswith("FAILED")}
    if failed:
        text += "\n" + "\n".join(f"**Step {k} {v}** (no figures from it above)." for k, v in failed.items()) + "\n"
    main_ran = any(status[k] != "skipped" for k in MAIN_STEPS)
    if main_ran:  # every main step skipped (a tflite-only run): the main headline and README block stay
        (OUT / "headline.md").write_text(text)
        if args.update_readme:
            log(f"updated {update_readme(text, README)}")
    if "tflite" in results:
        tflite_text = headline_tflite(results["tflite"])
        (OUT / "headline_tflite.md").write_text(tflite_text)
        text += "\n" + tflite_text
        if args.update_readme:
            log(f"updated the tflite block of {update_readme(tflite_text, README, TFLITE_MARKERS)}")
    if main_ran:  # a tflite-only run leaves the summary of the last full bench run in place
        save("bench_summary.json", {"date": now(), "command": " ".join([Path(sys.executable).name, *sys.argv]),
                                    "quick": args.quick, "accuracy": args.accuracy, "step_seconds": status,
                                    "total_seconds": round(seconds, 1),
                                    "sources": {k: v.get("source") or {part: v[part].get("source") for part in ("qas", "qas_digits", "sparse", "vowels", "device_curve")
                                                                       if isinstance(v.get(part), dict)}
                                                for k, v in results.items() if isinstance(v, dict)}})
    log("\n" + text)
    log(f"wrote {OUT / ('headline.md' if main_ran else 'headline_tflite.md')}; steps: {status}; "
        f"total {seconds / 60:.1f} min")
    return 1 if any(v.startswith("FAILED") for v in status.values()) else 0


if __name__ == "__main__":
    sys.exit(main())

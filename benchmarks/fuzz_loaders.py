"""Time-boxed fuzzing of every loader that reads user files: only clear errors, never a crash or a hang.

Targets (each input is written to a file and loaded the way a user would):
  pkl-real    mutated copies of a real upstream archive (byte level, pickle level, and dict level)
  pkl-small   mutated synthetic small archives (same three levels; reaches deep into the converter)
  graph       load_graph on mutated JSON + .npz pairs (document level, byte level, array level)
  scheme      UpdateScheme.load / from_dict (+ validate/resolve on a small graph) on mutated schemes
  image       runtime.images.decode_rgb on mutated PNG/JPEG/BMP/GIF files
  dataset-image  runtime.datasets.decode_checked on the same: reports a reason, never raises
  checkpoint     (optional) runtime.checkpoint.load_checkpoint on a mutated state.json
An outcome is OK (accepted), a clear error (a MicrotrainError subclass) or a FAILURE: any other exception,
or a HANG (an input running longer than --timeout s). Failing inputs are saved with their traceback.

    nice -n 10 python benchmarks/fuzz_loaders.py                 # 10 minutes, seed 0
    python benchmarks/fuzz_loaders.py --seconds 20 --seed 1      # a short run (CI)
Exit code 1 if anything failed. Results: benchmarks/results/fuzz_loaders.json.
"""
from __future__ import annotations

import argparse
import copy
import faulthandler
import io
import json
import os
import pickle
import signal
import sys
import tempfile
import time
import traceback
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np

from microtrain.errors import MicrotrainError

REPO = Path(__file__).resolve().parents[1]
# dataset-image: datasets.decode_checked must return a reason, never raise;
# checkpoint: runtime/checkpoint.load_checkpoint on a mutated state.json
TARGETS = ("pkl-real", "pkl-small", "graph", "scheme", "image", "dataset-image", "checkpoint")
OPTIONAL_TARGETS = ()


class Hang(BaseException):
    """Raised by the per-input alarm; a BaseException so loaders' `except Exception` cannot swallow it."""


# ----- mutators --------------------------------------------------------------------------------------------------
INTERESTING = [b"\x00", b"\xff", b"\x7f", b"\x80", b"\x00\x00\x00\x80", b"\xff\xff\xff\x7f", b"\xff\xff\xff\xff",
               b"\x00\x00\x00\x00", b"\x01\x00\x00\x00", b"\x00\x00\x01\x00"]


def mutate_bytes(data: bytes, rng, focus: int | None = None) -> bytes:
    """1-4 random byte-level edits; `focus` biases positions to the first `focus` bytes (headers)."""
    b = bytearray(data)
    for _ in range(int(rng.integers(1, 5))):
        if not b:
            b += bytes(rng.integers(0, 256, int(rng.integers(1, 16)), dtype=np.uint8))
            continue
        hi = len(b) if focus is None or rng.random() < 0.3 else min(len(b), focus)
        i = int(rng.integers(0, hi))
        op = int(rng.integers(0, 8))
        if op == 0:
            b[i] ^= 1 << int(rng.integers(0, 8))
        elif op == 1:
            b[i] = int(rng.integers(0, 256))
        elif op == 2:
            v = INTERESTING[int(rng.integers(0, len(INTERESTING)))]
            b[i:i + len(v)] = v
        elif op == 3:
            b[i:i] = bytes(rng.integers(0, 256, int(rng.integers(1, 32)), dtype=np.uint8))
        elif op == 4:
            del b[i:i + int(rng.integers(1, 64))]
        elif op == 5:
            n = int(rng.integers(1, 64))
            b[i:i] = b[i:i + n]
        elif op == 6:
            del b[i:]
        else:
            j = int(rng.integers(0, len(b)))
            n = int(rng.integers(1, 16))
            b[i:i + n] = b[j:j + n]
    return bytes(b)


def mutate_json_text(text: bytes, rng) -> bytes:
    """Attacks random byte edits rarely produce: deep nesting, huge numbers, NaN/Infinity, bad UTF-8."""
    op = int(rng.integers(0, 5))
    digits = [i for i in range(len(text)) if 48 <= text[i] <= 57]
    if op == 0:
        n = int(rng.choice([50, 900, 5000, 200000]))
        return b"[" * n + b"]" * n if rng.random() < 0.5 else text.replace(b": ", b": " + b"[" * n, 1) + b"]" * n
    if op == 1 and digits:
        i = digits[int(rng.integers(0, len(digits)))]
        return text[:i] + b"9" * int(rng.choice([20, 400, 5000])) + text[i:]
    if op == 2 and digits:
        i = digits[int(rng.integers(0, len(digits)))]
        return text[:i] + [b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-0"][int(rng.integers(0, 5))] + text[i + 1:]
    if op == 3:
        i = int(rng.integers(0, len(text) + 1))
        return text[:i] + [b"\xff\xfe", b"\\ud800", b"\x00", b"\\u0000"][int(rng.integers(0, 4))] + text[i:]
    return text.replace(b'"', b"", 1)


def _weird_values(json_only: bool):
    vals = [None, True, False, 0, -1, 1, 3, 2**31, -(2**63), 10**30, 0.5, -0.0, 1e308, float("nan"), float("inf"),
            "", "x", "conv2d", "input", [], [1], [0, 0], [3, 3], [-1, 2, 3], {}, {"a": 1}, [[1, 2], [3]], "1/3"]
    if not json_only:
        vals += [np.zeros(0, np.int8), np.zeros((2, 2), np.float32), np.ones(3, np.int32), np.array([np.nan], np.float32),
                 np.zeros((1, 1, 1, 1), np.int8), np.array(5, np.int64), (1,), (3, 3), (1, 2, 3), b"\x00\x01",
                 np.full(4, 1e-45, np.float32), np.array([-1.0], np.float32)]
    return vals


def _paths(obj, prefix=()):
    """Every (container path) in a nested dict/list tree."""
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out += _paths(v, prefix + (i,))
    return out


def _get(obj, path):
    for k in path:
        obj = obj[k]
    return obj


def mutate_tree(obj, rng, json_only: bool):
    """1-3 structural edits of a nested dict/list: replace, delete, duplicate, reshape/retype arrays."""
    obj = copy.deepcopy(obj)
    weird = _weird_values(json_only)
    for _ in range(int(rng.integers(1, 4))):
        paths = [p for p in _paths(obj) if p]
        if not paths:
            return obj
        path = paths[int(rng.integers(0, len(paths)))]
        parent, key = _get(obj, path[:-1]), path[-1]
        if isinstance(parent, tuple):
            continue
        value = parent[key]
        op = int(rng.integers(0, 6))
        if op == 0 and isinstance(parent, dict):
            del parent[key]
        elif op == 1 and isinstance(value, np.ndarray) and value.size and value.ndim:
            kind = int(rng.integers(0, 4))
            if kind == 0:
                parent[key] = value.reshape(-1)[: max(0, value.size - int(rng.integers(1, 3)))]
            elif kind == 1:
                parent[key] = value.astype([np.int8, np.int32, np.float32, np.float64, np.uint8][int(rng.integers(0, 5))])
            elif kind == 2:
                v = value.copy().reshape(-1)
                if v.dtype.kind in "iu":
                    info = np.iinfo(v.dtype)
                    choices = [0, 1, info.min, info.max]
                else:
                    choices = [np.nan, np.inf, 0.0, -1.0, 1e38]
                v[int(rng.integers(0, v.size))] = choices[int(rng.integers(0, len(choices)))]
                parent[key] = v.reshape(value.shape)
            else:
                parent[key] = np.concatenate([value, value], axis=0)
        elif op == 2 and isinstance(value, (int, float)) and not isinstance(value, bool):
            parent[key] = type(value)(value + int(rng.integers(-3, 4))) if isinstance(value, int) else value * float(rng.choice([0, -1, 2, 1e-30, 1e30]))
        elif op == 3 and isinstance(value, list) and value:
            i = int(rng.integers(0, len(value)))
            if rng.random() < 0.5:
                value.insert(i, copy.deepcopy(value[int(rng.integers(0, len(value)))]))
            else:
                del value[i]
        elif op == 4 and isinstance(parent, dict):
            parent[str(rng.choice(["extra", "groups", "stride", "in_channel", "role", "params", "format"]))] = weird[int(rng.integers(0, len(weird)))]
        else:
            parent[key] = copy.deepcopy(weird[int(rng.integers(0, len(weird)))])
    return obj


# ----- inputs ----------------------------------------------------------------------------------------------------------
def _conv(cin, cout, k, stride, groups, res_in, xq, yq, rng):
    res_out = (res_in + 2 * ((k - 1) // 2) - k) // stride + 1
    return {"in_channel": cin, "in_shape": res_in, "out_channel": cout, "out_shape": res_out, "kernel_size": (k, k),
            "stride": stride, "groups": groups, "depthwise": groups > 1, "act": None,
            "params": {"weight": rng.integers(-127, 128, (cout, cin // groups, k, k), dtype=np.int8),
                       "bias": rng.integers(-1000, 1000, cout, dtype=np.int32),
                       "w_scales": np.full(cout, 0.01, np.float32),
                       "x_scale": xq[0], "x_zero": xq[1], "y_scale": yq[0], "y_zero": yq[1]}}


def synthetic_model(rng) -> dict:
    """A tiny model in the upstream dict format: first conv, two inverted-residual blocks, classifier."""
    q, r = (0.02, -128), (0.03, 3)
    inp = (2 / 255, 0)
    fc = _conv(3, 8, 3, 2, 1, 16, inp, q, rng)
    b0 = {"pointwise1": None, "depthwise": _conv(8, 8, 3, 1, 8, 8, q, q, rng),
          "pointwise2": _conv(8, 8, 1, 1, 1, 8, q, r, rng),
          "residual": {"in_channel": 8, "in_shape": 8, "params": {"x_scale": q[0], "x_zero": q[1], "y_scale": 0.04, "y_zero": 1}},
          "se": None}
    s = (0.04, 1)
    b1 = {"pointwise1": _conv(8, 16, 1, 1, 1, 8, s, q, rng), "depthwise": _conv(16, 16, 3, 2, 16, 8, q, q, rng),
          "pointwise2": _conv(16, 8, 1, 1, 1, 4, q, r, rng), "residual": None, "se": None}
    cls = _conv(8, 4, 1, 1, 1, 1, r, (0.1, 0), rng)
    for key in ("in_shape", "out_shape", "depthwise", "act"):
        del cls[key]
    return {"first_conv": fc, "blocks": [b0, b1], "feature_mix": None, "classifier": cls}


def archive_bytes(obj, pickled: bytes | None = None) -> bytes:
    """A torch.save-style zip (stored) whose archive/data.pkl is a protocol-2 pickle of obj."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", pickled if pickled is not None else pickle.dumps(obj, protocol=2))
        z.writestr("archive/version", "3\n")
    return buf.getvalue()


def small_graph(rng):
    from microtrain.frontends.mcunet_pkl import model_to_graph

    return model_to_graph(synthetic_model(rng), "synthetic", "tiny")


class Cases:
    """Builds one fuzz input per call for each target, writing files into workdir."""

    def __init__(self, workdir: Path, models_dir: Path, seed: int):
        self.dir = workdir
        rng = np.random.default_rng(seed)
        self.real_path = None
        for name in ("mcunet-5fps", "mbv2-w0.35", "proxyless-w0.3"):
            if (models_dir / f"{name}.pkl").exists():
                self.real_path = models_dir / f"{name}.pkl"
                break
        if self.real_path is not None:
            from microtrain.frontends.mcunet_pkl import read_model_dict

            self.real_bytes = self.real_path.read_bytes()
            self.real_dict = read_model_dict(self.real_path)
            with zipfile.ZipFile(self.real_path) as z:
                self.real_pickle = z.read("archive/data.pkl")
        self.small_dicts = [synthetic_model(np.random.default_rng(seed + i)) for i in range(4)]
        from microtrain.ir.serialize import graph_to_dict, save_graph

        self.tiny = small_graph(rng)
        gpath = save_graph(self.tiny, self.dir / "seed_graph.json")
        self.graph_doc = graph_to_dict(self.tiny)
        self.graph_json = gpath.read_bytes()
        self.graph_npz = gpath.with_suffix(".npz").read_bytes()
        with np.load(gpath.with_suffix(".npz")) as z:
            self.graph_arrays = {k: z[k] for k in z.files}
        from microtrain.sparse.scheme import UpdateScheme

        self.schemes = [UpdateScheme.head_only().to_dict(), UpdateScheme.full(self.tiny).to_dict(),
                        UpdateScheme(2, {1: 0.5, 3: 0.25}, "first", "mixed").to_dict(),
                        UpdateScheme.last_blocks(self.tiny, 1).to_dict()]
        self.images = self._seed_images(rng)

    @staticmethod
    def _seed_images(rng):
        from PIL import Image

        out = []
        px = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
        for fmt, mode in (("PNG", "RGB"), ("JPEG", "RGB"), ("BMP", "RGB"), ("PNG", "P"), ("GIF", "P")):
            buf = io.BytesIO()
            Image.fromarray(px).convert(mode).save(buf, fmt)
            out.append((fmt.lower(), buf.getvalue()))
        return out

    # each returns (a thunk that loads the input, files written)
    def pkl_real(self, rng):
        if self.real_path is None:
            raise RuntimeError("no upstream model found: set MICROTRAIN_SHARED (or MICROTRAIN_MODELS)")
        level = rng.random()
        if level < 0.3:
            data = mutate_bytes(self.real_bytes, rng, focus=4096)
        elif level < 0.5:
            data = archive_bytes(None, mutate_bytes(self.real_pickle, rng, focus=8192))
        else:
            data = archive_bytes(mutate_tree(self.real_dict, rng, json_only=False))
        return self._pkl_thunk(data)

    def pkl_small(self, rng):
        base = self.small_dicts[int(rng.integers(0, len(self.small_dicts)))]
        level = rng.random()
        if level < 0.25:
            data = mutate_bytes(archive_bytes(base), rng)
        elif level < 0.45:
            data = archive_bytes(None, mutate_bytes(pickle.dumps(base, protocol=2), rng))
        else:
            data = archive_bytes(mutate_tree(base, rng, json_only=False))
        return self._pkl_thunk(data)

    def _pkl_thunk(self, data: bytes):
        from microtrain.frontends.mcunet_pkl import load_mcunet_pkl

        path = self.dir / "input.pkl"
        path.write_bytes(data)
        return lambda: load_mcunet_pkl(path), [path]

    def graph(self, rng):
        from microtrain.ir.serialize import load_graph

        js, npz = self.graph_json, self.graph_npz
        level = rng.random()
        if level < 0.1:
            js = mutate_json_text(js, rng)
        elif level < 0.45:
            js = json.dumps(mutate_tree(self.graph_doc, rng, json_only=True)).encode()
        elif level < 0.6:
            js = mutate_bytes(js, rng)
        elif level < 0.85:
            arrays = mutate_tree(self.graph_arrays, rng, json_only=False)
            buf = io.BytesIO()
            np.savez(buf, **{k: _as_array(v) for k, v in arrays.items()})  # non-arrays become object arrays
            npz = buf.getvalue()
        else:
            npz = mutate_bytes(npz, rng, focus=2048)
        path = self.dir / "input.json"
        path.write_bytes(js)
        path.with_suffix(".npz").write_bytes(npz)
        return lambda: load_graph(path), [path, path.with_suffix(".npz")]

    def scheme(self, rng):
        from microtrain.sparse.scheme import UpdateScheme

        graph = self.tiny
        base = self.schemes[int(rng.integers(0, len(self.schemes)))]
        path = self.dir / "input_scheme.json"
        level = rng.random()
        if level < 0.15:
            path.write_bytes(mutate_json_text(json.dumps(base).encode(), rng))
        elif level < 0.3:
            path.write_bytes(mutate_bytes(json.dumps(base).encode(), rng))
        else:
            path.write_text(json.dumps(mutate_tree(base, rng, json_only=True)))

        def run():
            s = UpdateScheme.load(path)
            s.resolve(graph)
        return run, [path]

    def image(self, rng):
        from microtrain.runtime.images import decode_rgb

        fmt, data = self.images[int(rng.integers(0, len(self.images)))]
        path = self.dir / f"input.{fmt}"
        path.write_bytes(mutate_bytes(data, rng, focus=64))
        return lambda: decode_rgb(path), [path]

    def checkpoint(self, rng):
        from microtrain.runtime.checkpoint import load_checkpoint, save_checkpoint

        folder = self.dir / "ckpt"
        if not (folder / "state.json").exists():
            save_checkpoint(folder, self.tiny, {"epoch": 1, "step": 10, "history": [{"loss": 1.0}]})
            self.ckpt_state = (folder / "state.json").read_bytes()
        state = self.ckpt_state
        level = rng.random()
        if level < 0.3:
            state = mutate_json_text(state, rng)
        elif level < 0.5:
            state = mutate_bytes(state, rng)
        else:
            state = json.dumps(mutate_tree(json.loads(state), rng, json_only=True)).encode()
        (folder / "state.json").write_bytes(state)
        return lambda: load_checkpoint(folder), [folder / "state.json"]

    def dataset_image(self, rng):
        from microtrain.runtime.datasets import decode_checked

        fmt, data = self.images[int(rng.integers(0, len(self.images)))]
        path = self.dir / f"input.{fmt}"
        path.write_bytes(mutate_bytes(data, rng, focus=64))
        return lambda: decode_checked(path), [path]


def _as_array(v):
    try:
        return np.asarray(v)
    except ValueError:  # ragged lists
        out = np.empty(1, dtype=object)
        out[0] = v
        return out


# ----- the loop ------------------------------------------------------------------------------------------------------
def _alarm(signum, frame):
    raise Hang()


def run_fuzz(seconds: float, seed: int = 0, targets=TARGETS, timeout: float = 10.0, out_dir: Path | None = None,
             models_dir: Path | None = None, log=print) -> dict:
    """Fuzz the targets round-robin for `seconds`; returns per-target counts and the failures found."""
    shared = Path(os.environ.get("MICROTRAIN_SHARED") or REPO.parent / "shared")
    models_dir = Path(models_dir or os.environ.get("MICROTRAIN_MODELS") or shared / "models")
    rng = np.random.default_rng(seed)
    results = {t: {"inputs": 0, "ok": 0, "errors": Counter(), "failures": [], "hangs": 0, "max_seconds": 0.0,
                   "harness_errors": 0} for t in targets}
    old = signal.signal(signal.SIGALRM, _alarm)
    with tempfile.TemporaryDirectory(prefix="mt_fuzz_") as tmp:
        log(f"inputs are written to {tmp} (a run killed by the watchdog leaves the hanging input there)")
        cases = Cases(Path(tmp), models_dir, seed)
        makers = {t: getattr(cases, t.replace("-", "_")) for t in targets}
        start = time.monotonic()
        i = 0
        try:
            while time.monotonic() - start < seconds:
                t = targets[i % len(targets)]
                i += 1
                r = results[t]
                try:
                    thunk, files = makers[t](rng)
                except Exception as e:  # a bug of this harness, not of a loader: count it, keep fuzzing
                    r["harness_errors"] += 1
                    log(f"[{t}] harness error while making an input: {type(e).__name__}: {e}")
                    continue
                r["inputs"] += 1
                t0 = time.monotonic()
                failure = None
                try:
                    # the alarm interrupts Python code; the watchdog ends the run if C code never returns
                    faulthandler.dump_traceback_later(3 * timeout + 10, exit=True)
                    signal.setitimer(signal.ITIMER_REAL, timeout)
                    try:
                        thunk()
                    finally:
                        signal.setitimer(signal.ITIMER_REAL, 0)
                        faulthandler.cancel_dump_traceback_later()
                    r["ok"] += 1
                except Hang:
                    failure = "HANG"
                except MicrotrainError as e:
                    r["errors"][type(e).__name__] += 1
                except (KeyboardInterrupt, SystemExit):
                    raise
                except BaseException as e:  # noqa: BLE001 - any other exception is the finding
                    failure = f"{type(e).__name__}: {str(e)[:200]}"
                    tb = traceback.format_exc()
                dt = time.monotonic() - t0
                r["max_seconds"] = max(r["max_seconds"], dt)
                if failure is None and dt > timeout:  # the alarm may fire late inside C code
                    failure = "HANG"
                if failure == "HANG":
                    r["hangs"] += 1
                    tb = f"input ran {dt:.1f} s (limit {timeout} s)"
                if failure is not None:
                    saved = _save_failure(out_dir, t, len(r["failures"]), files, tb)
                    r["failures"].append({"error": failure, "saved": saved})
                    log(f"[{t}] FAILURE {failure} (saved: {saved})")
        finally:
            signal.signal(signal.SIGALRM, old)
    elapsed = time.monotonic() - start
    for r in results.values():
        r["errors"] = dict(r["errors"])
    return {"seconds": round(elapsed, 1), "seed": seed, "timeout": timeout, "targets": results}


def _save_failure(out_dir, target, n, files, tb) -> str | None:
    if out_dir is None:
        return None
    d = Path(out_dir) / f"{target}-{n}"
    d.mkdir(parents=True, exist_ok=True)
    for f in files:
        if f.exists():
            (d / f.name).write_bytes(f.read_bytes())
    (d / "traceback.txt").write_text(tb)
    return str(d)


def print_table(res: dict):
    print(f"fuzzed {res['seconds']} s, seed {res['seed']}, per-input limit {res['timeout']} s")
    print(f"{'target':10} {'inputs':>8} {'ok':>7} {'clear errors':>13} {'failures':>9} {'hangs':>6} {'max s':>7}  error classes")
    for t, r in res["targets"].items():
        errs = sum(r["errors"].values())
        classes = ", ".join(f"{k} {v}" for k, v in sorted(r["errors"].items(), key=lambda kv: -kv[1]))
        print(f"{t:10} {r['inputs']:8d} {r['ok']:7d} {errs:13d} {len(r['failures']):9d} {r['hangs']:6d} "
              f"{r['max_seconds']:7.2f}  {classes}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=600.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=10.0, help="per-input limit; longer counts as a hang")
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "fuzz_failures"))
    ap.add_argument("--json", default=str(REPO / "benchmarks" / "results" / "fuzz_loaders.json"))
    args = ap.parse_args(argv)
    targets = tuple(t for t in args.targets.split(",") if t)
    unknown = set(targets) - set(TARGETS) - set(OPTIONAL_TARGETS)
    if unknown:
        ap.error(f"unknown targets {sorted(unknown)}; choose from {TARGETS + OPTIONAL_TARGETS}")
    res = run_fuzz(args.seconds, args.seed, targets, args.timeout, Path(args.out))
    print_table(res)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    bad = sum(len(r["failures"]) for r in res["targets"].values())
    harness = sum(r["harness_errors"] for r in res["targets"].values())
    print(f"{'FAIL' if bad else 'PASS'}: {bad} failing inputs" + (f" ({harness} harness errors)" if harness else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

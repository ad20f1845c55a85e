"""Seconds per epoch of the old and the new code side by side, under the same machine load: for each scheme,
benchmarks/profile_fine_tune.py --no-profile runs alternately with src/ at a git ref (git archive) and with this
tree's src/, --rounds times each, in child processes; the minimum CPU seconds per training image-epoch of each
side is the figure (the least disturbed run: on a shared machine the other processes only ever add time).

    nice -n 10 python benchmarks/compare_fine_tune_speed.py --baseline main --schemes bias-only,full,last-6 \\
        [--dataset cub50] [--limit 320] [--val-limit 160] [--rounds 2] [--numerics fp32] [--out F.json]

Prints one line per scheme (old ms, new ms, speed-up); --out writes them with every round's figures. The
results are only comparable within one run (the load changes); pair it with check_fine_tune_identical.py,
which says the two sides compute the same numbers.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from microtrain.cache import cache_root

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from check_fine_tune_identical import REPO, archive_src  # noqa: E402
from run_store import write_report  # noqa: E402


def one_run(src: Path, scheme: str, args, out: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(src))
    cmd = [sys.executable, str(HERE / "profile_fine_tune.py"), "--no-profile", "--dataset", args.dataset,
           "--schemes", scheme, "--limit", str(args.limit), "--val-limit", str(args.val_limit),
           "--batch", str(args.batch), "--epochs", str(args.epochs), "--prefix-cache", args.prefix_cache,
           "--numerics", args.numerics, "--out", str(out)]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if p.returncode:
        raise SystemExit(f"{scheme} with {src} failed:\n{p.stderr[-3000:]}")
    return json.loads(out.read_text())["schemes"][scheme]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", default="main")
    ap.add_argument("--schemes", default="bias-only,full,last-6")
    ap.add_argument("--dataset", default="cub50")
    ap.add_argument("--limit", type=int, default=320)
    ap.add_argument("--val-limit", type=int, default=160)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--numerics", default="int8+QAS", choices=("int8+QAS", "int8", "fp32"))
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--prefix-cache", default=str(cache_root() / "speed-ab" / "prefix"))
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.rounds < 1:
        ap.error(f"--rounds must be at least 1, got {args.rounds}")
    report = {"baseline": args.baseline, "numerics": args.numerics, "command": "python " + " ".join(sys.argv), "schemes": {}}
    with tempfile.TemporaryDirectory(prefix="speed_ab_") as tmp:
        old_src = archive_src(args.baseline, Path(tmp))
        for scheme in args.schemes.split(","):
            rows = {"old": [], "new": []}
            for _ in range(args.rounds):
                for side, src in (("old", old_src), ("new", REPO / "src")):
                    r = one_run(src, scheme, args, Path(tmp) / "run.json")
                    rows[side].append({"ms_per_train_image": r["ms_per_train_image"],
                                       "ms_per_eval_image": r["ms_per_eval_image"], "epoch_cpu_s": r["epoch_cpu_s"]})
            best = {side: min(x["ms_per_train_image"] for x in rows[side]) for side in rows}
            best_eval = {side: min(x["ms_per_eval_image"] for x in rows[side]) for side in rows}
            report["schemes"][scheme] = {"rounds": rows, "old_ms_per_train_image": best["old"],
                                         "new_ms_per_train_image": best["new"],
                                         "old_ms_per_eval_image": best_eval["old"],
                                         "new_ms_per_eval_image": best_eval["new"],
                                         "speedup": round(best["old"] / best["new"], 3)}
            print(f"{scheme:14s} train {best['old']:7.2f} -> {best['new']:7.2f} ms/image-epoch "
                  f"(x{best['old'] / best['new']:.2f}), eval {best_eval['old']:.2f} -> {best_eval['new']:.2f} "
                  f"ms/image", flush=True)
    write_report(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())

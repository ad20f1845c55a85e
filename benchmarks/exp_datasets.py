"""The issue-14 experiments on the real datasets, as one resumable queue: `python benchmarks/exp_datasets.py`.

Runs exp_qas.py and exp_sparse.py jobs in priority order on --workers processes (niced; each job a
subprocess). Every job resumes by itself (one result file per run, skipped when present with the current
numerics fingerprint; frozen-prefix features cached on disk), so this command may be stopped at any time and
started again, in this session or the next, and only the missing runs are computed. Progress goes to
--log-dir (outside the repo), one log per job. Results land under benchmarks/results/qas/ and
benchmarks/results/sparse/ and are small enough to commit.

    nohup nice -n 19 python benchmarks/exp_datasets.py --workers 2 &     # the whole set
    python benchmarks/exp_datasets.py --list                              # the queue, nothing run
"""
from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from microtrain.cache import cache_root

HERE = Path(__file__).resolve().parent
QAS_ALL = ("cub50", "gtsrb", "food101_10", "cifar10", "flowers12", "trashnet", "clothing10", "sign_digits")
THREE_MODELS_ON = ("cub50", "food101_10", "gtsrb", "cifar10")
SPARSE_ON = ("cub50", "food101_10", "cifar10")
MOMENTUM_ON = ("flowers12", "cub50")  # "does momentum change the picture?": two of the paper's datasets


QAS_SETTINGS = ("fp32", "int8", "int8+QAS", "head-only")


def queue() -> list[tuple[str, list[str]]]:
    """(name, argv) in priority order: the mcunet-5fps QAS table first (it answers the acceptance question),
    then sparse update, then the other two models, then the momentum check."""
    jobs = [(f"qas-{d}-mcunet-5fps", ["exp_qas.py", "--dataset", d, "--models", "mcunet-5fps"]) for d in QAS_ALL]
    jobs += [(f"sparse-{d}", ["exp_sparse.py", "--dataset", d]) for d in SPARSE_ON]
    jobs += [(f"qas-{d}-{m}", ["exp_qas.py", "--dataset", d, "--models", m])
             for m in ("mbv2-w0.35", "proxyless-w0.3") for d in THREE_MODELS_ON]
    jobs += [(f"qas-{d}-mcunet-5fps-momentum", ["exp_qas.py", "--dataset", d, "--models", "mcunet-5fps",
                                                "--momentum", "0.9"]) for d in MOMENTUM_ON]
    return jobs


def parts(job) -> list[tuple[str, list[str]]]:
    """A QAS job splits into one process per setting (they share nothing but the prefix cache), so the workers
    finish one dataset's table together instead of several tables at once; the job itself then runs last and
    only writes the table (every run is stored by then)."""
    name, cmd = job
    if cmd[0] != "exp_qas.py":
        return []
    return [(f"{name}-{s}", [*cmd, "--settings", s]) for s in QAS_SETTINGS]


def run_child(argv: list[str], log, cwd) -> tuple[int, float]:
    """(exit code, CPU seconds) of one job: user + system time of the child and of every descendant it waited
    for (the contribution analysis's worker processes), the figure benchmarks/estimate_hours.py predicts; wall
    time on a shared machine says more about the load than about the job."""
    p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=cwd)
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    return p.returncode, usage.ru_utime + usage.ru_stime


def claim(path: Path) -> Path | None:
    """A lock file naming this process; None if a live process holds it (a dead holder's lock is taken over).
    Lets several queue processes (e.g. one more worker started later) share the queue without running a job
    twice."""
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                os.kill(int(path.read_text().strip() or 0), 0)
                return None  # the holder is alive
            except (ValueError, ProcessLookupError, PermissionError, FileNotFoundError):
                path.unlink(missing_ok=True)  # stale: its process is gone
                continue
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        return path
    return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--log-dir", default=str(cache_root() / "exp14" / "logs"))
    ap.add_argument("--only", nargs="*", default=None, help="job names (or prefixes) to run, in this order, e.g. qas-cub50")
    ap.add_argument("--out", default=str(HERE / "results"), help="results folder passed to every job")
    ap.add_argument("--list", action="store_true")
    args = ap.parse_args(argv)
    jobs = queue()
    if args.only:  # in the order given: --only qas-trashnet qas-cub50 runs trashnet first
        names = {j[0] for j in jobs}  # an exact name selects that job only, anything else is a prefix
        jobs = [j for o in args.only for j in jobs if (j[0] == o if o in names else j[0].startswith(o))]
        jobs = [j for i, j in enumerate(jobs) if j not in jobs[:i]]
    if args.list:
        for name, cmd in jobs:
            print(f"{name:40s} python benchmarks/{' '.join(cmd)}")
        return 0
    logs = Path(args.log_dir)
    logs.mkdir(parents=True, exist_ok=True)

    def run(job):
        name, cmd = job
        lock = claim(logs / f"{name}.lock")
        if lock is None:  # another queue process runs this job now
            print(f"{name}: running elsewhere, skipped", flush=True)
            return 0
        try:
            return run_claimed(name, cmd)
        finally:
            lock.unlink(missing_ok=True)

    def run_claimed(name, cmd):
        t0 = time.monotonic()
        with open(logs / f"{name}.log", "a") as f:
            f.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())} UTC: {' '.join(cmd)}\n")
            f.flush()
            rc, cpu = run_child([sys.executable, str(HERE / cmd[0]), *cmd[1:], "--out", args.out], f, HERE)
            done = f"exit {rc} after {time.monotonic() - t0:.0f} s wall, {cpu:.0f} s CPU"
            f.write(f"=== {done}\n")
        print(f"{time.strftime('%H:%M:%S', time.gmtime())} {name}: {done}", flush=True)
        return rc

    # parts first, in queue order; a job's own (table) run goes to the FRONT of the queue when its last part
    # ends, so a finished dataset's table is written at once, not after every other part
    tasks = collections.deque()
    for job in jobs:
        subs = parts(job)
        tasks.extend((sub, job, len(subs)) for sub in subs) if subs else tasks.append((job, None, 0))
    cond, left, codes = threading.Condition(), {}, []
    busy = [0]

    def worker():
        while True:
            with cond:
                while not tasks and busy[0]:
                    cond.wait()  # a running part may still queue its job's table run
                if not tasks:
                    cond.notify_all()
                    return
                task, parent, n_parts = tasks.popleft()
                busy[0] += 1
            rc = run(task)
            with cond:
                busy[0] -= 1
                codes.append(rc)
                if parent is not None:
                    left[parent[0]] = left.get(parent[0], n_parts) - 1
                    if left[parent[0]] == 0:
                        tasks.appendleft((parent, None, 0))
                cond.notify_all()

    threads = [threading.Thread(target=worker) for _ in range(max(1, args.workers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return 1 if any(codes) else 0


if __name__ == "__main__":
    sys.exit(main())

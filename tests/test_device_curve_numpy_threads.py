"""benchmarks/exp_device_curve.py's NumPy simulation runs BLAS on one thread, as fine_tune does.

OpenBLAS's sgemm sums float32 in another order with more threads, so the simulation's gradients depended on the
machine: on trashnet (lr 0.003) it parted from the device after update 114 with the default 2 threads (a
stochastic-rounding threshold 1 ulp below 26 in NumPy, 3 ulps above in C) and after update 1027 with one
(docs/measurements.md, learning on the device). No QEMU: only the NumPy path runs, 2 steps."""
from __future__ import annotations

import sys

import numpy as np

from conftest import REPO, model_path

sys.path.insert(0, str(REPO / "benchmarks"))


def test_numpy_simulation_runs_blas_on_one_thread(tmp_path, monkeypatch):
    from threadpoolctl import threadpool_info, threadpool_limits

    import exp_device_curve
    from microtrain.codegen import compile_model
    from microtrain.models import load_model
    from microtrain.quant.head import replace_head
    from microtrain.runtime.training import TrainingRuntime
    from microtrain.sparse.fixtures import load_scheme

    model_path(exp_device_curve.MODEL)
    graph = replace_head(load_model(exp_device_curve.MODEL), 2)
    layout = compile_model(graph, load_scheme(exp_device_curve.SCHEME)).program.meta["trainable_layout"]
    x = np.random.default_rng(0).integers(-128, 128, (2, 128, 128, 3)).astype(np.int8)
    y = np.array([0, 1], np.int32)

    threads, plain = [], TrainingRuntime.train_step

    def train_step(self, *args, **kwargs):
        threads.append({i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"})
        return plain(self, *args, **kwargs)

    monkeypatch.setattr(TrainingRuntime, "train_step", train_step)
    with threadpool_limits(2, user_api="blas"):  # what a 2-core machine gives by default
        sim = exp_device_curve.numpy_sim(graph, 0.01, x, np.array([0, 1]), y, x[:1], [0, 2], layout, tmp_path)
    assert threads == [{1}, {1}]
    assert sorted(sim) == [0, 2]

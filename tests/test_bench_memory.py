"""bench_memory: the PyTorch peak-memory measurement (fresh process) and microtrain's planned SRAM on
mcunet-5fps at 64x64 (cheap), and the step MAC count behind the Cortex-M lower bound."""
from __future__ import annotations

import sys

import pytest

from conftest import REPO, model_path

sys.path.insert(0, str(REPO / "benchmarks"))


@pytest.fixture(scope="module")
def measured():
    import bench_memory

    path = str(model_path("mcunet-5fps"))
    return {c: bench_memory.run_isolated(path, c, resolution=64) for c in ("full", "sparse")}


def conv_input_bytes_fp32(graph) -> int:
    return sum(4 * graph.tensors[n.inputs[0]].numel for n in graph.nodes if n.op == "conv2d")


def test_torch_memory_is_measured_and_sane(measured):
    import bench_memory

    full, sparse = measured["full"], measured["sparse"]
    graph = bench_memory.bench_graph(str(model_path("mcunet-5fps")), resolution=64)
    # full update: every conv keeps its float input for the weight gradient
    assert full["saved_for_backward"] >= conv_input_bytes_fp32(graph)
    assert 0 < sparse["saved_for_backward"] < full["saved_for_backward"] / 2
    for r in (full, sparse):
        assert r["resolution"] == 64 and r["classes"] == 2
        # RSS really moved during the step, by a figure of the order of the saved activations
        assert r["step_peak_increase"] > 0.25 * r["saved_for_backward"]
        assert r["step_peak_increase"] < 200 * 2**20
        # the process holds python + torch + the model: far above one step's increase
        assert r["process_peak_rss"] > 50 * 2**20 > r["step_peak_increase"]
    assert full["trainable_parameters_requires_grad"] == full["parameters"]
    assert sparse["trainable_parameters_requires_grad"] < full["parameters"]


def test_microtrain_planned_memory_orders_full_above_sparse():
    import bench_memory

    path = str(model_path("mcunet-5fps"))
    full = bench_memory.microtrain_memory(path, "full", link=False)
    sparse = bench_memory.microtrain_memory(path, "sparse", link=False)
    assert sparse["scheme"] == "mcunet-5fps-49kb"
    assert sparse["planned_training_sram"] < 256 * 1024 < full["planned_training_sram"]
    assert abs(sparse["analytic_extra"] / 1024 - 49.8) < 0.1  # upstream's figure for this scheme
    assert "linked_sram" not in full


def test_step_macs_match_the_graph():
    """Full update: forward = every node's MACs; weight gradients = the conv MACs again (all channels)."""
    import bench_memory
    import run_all
    from microtrain.ops import op_module
    from microtrain.sparse.fixtures import load_fixture

    path = str(model_path("mcunet-5fps"))
    graph = bench_memory.bench_graph(path)
    macs = {n.name: op_module(n).macs(n, graph.tensors[n.inputs[0]].shape, graph.tensors[n.output].shape)
            for n in graph.nodes}
    conv_macs = sum(v for k, v in macs.items() if graph.node(k).op == "conv2d")
    full = run_all.step_macs(path, bench_memory.bench_scheme(path, graph, "full"))
    assert full["forward"] == sum(macs.values())
    assert full["update"] == conv_macs
    assert 0 < full["backward"] < conv_macs
    sparse = run_all.step_macs(path, load_fixture("mcunet-5fps-49kb"))
    assert sparse["forward"] == full["forward"]
    assert 0 < sparse["update"] < sparse["backward"] < full["backward"]

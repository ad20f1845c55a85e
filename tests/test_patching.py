"""Patch-based execution of the frozen prefix (patching.py, runtime/patched.py, codegen/patch.py): the tiled
prefix equals the whole-tensor run bit for bit, in NumPy and in the generated C (inference and training)."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from conftest import like_mcunet_49kb, model_path
from microtrain.errors import GraphError
from microtrain.patching import plan_patches
from microtrain.runtime.forward import run_int8
from microtrain.runtime.patched import run_patched

pytestmark = pytest.mark.usefixtures("one_blas_thread")


@pytest.mark.parametrize("split,grid", [(3, (4, 4)), (6, (3, 2)), (10, (2, 3))])
def test_numpy_patched_equals_whole(upstream_graph, split, grid):
    x = np.random.default_rng(split).integers(-128, 128, (2, *upstream_graph.input_spec.shape)).astype(np.int8)
    out = run_patched(upstream_graph, x, split, grid)
    assert np.array_equal(out, run_int8(upstream_graph, x))


def test_geometry_halo_costs_macs_and_a_single_tile_none(mcunet):
    one, many = plan_patches(mcunet, 6, (1, 1)), plan_patches(mcunet, 6, (3, 3))
    assert one.extra_macs == 0 and one.base_macs == many.base_macs
    assert many.extra_macs > 0  # the halo is recomputed by neighbouring tiles
    # every tile of the split tensor is computed once: the tiles cover it exactly
    h, w = mcunet.tensors[many.output].shape[:2]
    covered = np.zeros((h, w), int)
    for t in many.tiles:
        (r0, r1), (c0, c1) = t.windows[many.output]
        covered[r0:r1, c0:c1] += 1
    assert (covered == 1).all()


def test_a_cut_through_a_residual_is_refused(mcunet):
    with pytest.raises(GraphError, match="blocks.1.pointwise2.out"):
        plan_patches(mcunet, 9, (2, 2))  # blocks.2.residual reads blocks.1.pointwise2.out after the prefix
    with pytest.raises(GraphError, match="grid"):
        plan_patches(mcunet, 6, (40, 2))


needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None or shutil.which("make") is None, reason="needs gcc")


def _host_run(graph, scheme, out, patch, x, **options):
    from microtrain.codegen import compile_model
    from microtrain.targets.host import HostModel, build_host

    cm = compile_model(graph, scheme, out_dir=out, patch=patch, seed=7, lr=1e-2, **options)
    model = HostModel(build_host(out, opt="-O1"))
    before = model.infer(x)
    losses = [model.train_step(x[i], i % 2) for i in range(len(x))]
    return cm, (before, losses, model.export_params(), model.infer(x))


@needs_gcc
@pytest.mark.parametrize("name,resolution,patch,ram,scheme_name,cap", [
    ("mcunet-5fps", 128, "fit", 128, "mcunet-5fps-49kb", 0.10),
    ("mcunet-5fps", 128, "fit", 160, "mcunet-5fps-99kb", 0.10),
    ("mcunet-5fps", 128, "fit", 160, "mcunet-5fps-99kb", 0.15),
    ("mbv2-w0.35", 64, "auto", None, None, 0.10), ("proxyless-w0.3", 64, (10, (2, 2)), None, None, 0.10)])
def test_c_patched_equals_whole(name, resolution, patch, ram, scheme_name, cap, tmp_path):
    """Host C: logits, losses, trained parameters after 3 steps and logits after training are identical with
    and without patching, and patching makes the arena smaller. mcunet-5fps is planned for a 128 KB part (49 KB
    scheme) and a 160 KB one (99 KB scheme): patched, with depthwise input gradients in place
    (codegen.inplace_depthwise) composing with it, and for the 99 KB scheme the backward of blocks 9 and 10 by
    groups of expanded channels (codegen.grouped_backward; blocks.10.depthwise has stride 2); with 15 % extra
    prefix MACs allowed it fits the part."""
    from microtrain.budget import KB, part_sram_budget

    from microtrain.frontends.mcunet_pkl import load_mcunet_pkl
    from microtrain.quant.head import replace_head
    from microtrain.sparse.fixtures import load_fixture

    graph = replace_head(load_mcunet_pkl(model_path(name)).with_resolution(resolution), 2)
    scheme = load_fixture(scheme_name) if scheme_name else like_mcunet_49kb(graph)
    x = np.random.default_rng(3).integers(-128, 128, (3, resolution, resolution, 3)).astype(np.int8)
    whole, ref = _host_run(graph, scheme, tmp_path / "whole", None, x)
    budget = part_sram_budget(ram * KB) if ram else None
    tiled, got = _host_run(graph, scheme, tmp_path / "tiled", patch, x, sram_budget=budget, max_extra_macs=cap)
    assert "patch" in tiled.program.meta and tiled.report.arena_bytes < whole.report.arena_bytes
    assert any(s.kernel == "mt_window_s8" for s in tiled.program.train_steps)
    grads_inplace = [s for s in tiled.program.train_steps if s.kernel == "mt_conv_grad_input_depthwise_inplace_f32"]
    if ram == 128:
        assert tiled.report.total_sram_bytes <= budget and grads_inplace
    if ram == 160:
        grouped = [s.node for s in tiled.program.train_steps if s.kernel == "mt_block_grad_grouped_f32"]
        assert grouped == ["blocks.10.depthwise", "blocks.9.depthwise"]
        assert (tiled.report.total_sram_bytes <= budget) == (cap == 0.15)  # at 10 % the tiled prefix is the peak
    assert np.array_equal(got[0], ref[0]) and got[1] == ref[1]
    assert len(got[2]) > 0 and got[2] == ref[2] and np.array_equal(got[3], ref[3])


def test_compile_refuses_a_part_too_small_before_writing(tmp_path, capsys):
    """compile --ram: the plan (patched where needed) is checked against the part; a scheme that cannot fit is
    refused in one line saying by how much, before the project is written."""
    from microtrain.cli import main

    out = tmp_path / "proj"
    rc = main(["compile", str(model_path("mcunet-5fps")), "--scheme", "mcunet-5fps-99kb", "--classes", "2",
               "--target", "c", "--ram", "160K", "--patch", "10:3x3", "--out", str(out), "--timeline", "0"])
    captured = capsys.readouterr()
    assert rc == 1 and not out.exists()
    err = [line for line in captured.err.splitlines() if line.strip()]
    assert len(err) == 1 and "more than the part's 163,840 B" in err[0]
    assert "patch-based prefix: nodes [0, 10)" in captured.out  # patched (and in-place convs) before refusing
    assert main(["compile", "mcunet-5fps", "--scheme", "none", "--board", "nope", "--out", str(out)]) == 1
    assert "unknown board 'nope'" in capsys.readouterr().err


def test_small_graph_patched_and_a_trained_prefix_refused():
    """On a graph with a residual inside the prefix: NumPy and the C lowering agree with the whole run's
    shapes; a prefix with a trained conv (it saves a mask) cannot run on tiles."""
    from conftest import small_graph
    from microtrain.codegen.lower_train import build_training_program
    from microtrain.sparse.scheme import UpdateScheme

    g = small_graph()
    x = np.random.default_rng(1).integers(-128, 128, (3, 8, 8, 3)).astype(np.int8)
    for grid in ((2, 2), (4, 1), (3, 4)):
        assert np.array_equal(run_patched(g, x, 5, grid), run_int8(g, x))
    prog = build_training_program(g, UpdateScheme.head_only(), patch=(5, (2, 2)))  # only the head trains
    assert sum(s.kernel == "mt_paste_s8" for s in prog.train_steps) == 4
    with pytest.raises(GraphError, match="only a frozen conv"):
        build_training_program(g, UpdateScheme.full(g), patch=(5, (2, 2)))
    with pytest.raises(GraphError, match="trained or saves a mask"):  # biases train: the clamp masks are saved
        build_training_program(g, UpdateScheme.bias_only(g), patch=(5, (2, 2)))


def test_fit_takes_the_cheapest_tiling_that_fits_the_part():
    """--patch fit on a 160 KB part: the tiling with the fewest extra MACs whose arena fits (proxyless-w0.3 49 KB-like:
    a 2x2 grid), not the smallest arena --patch auto takes (more tiles, more MACs); both fit."""
    from microtrain.budget import KB, part_sram_budget
    from microtrain.codegen import compile_model
    from microtrain.frontends.mcunet_pkl import load_mcunet_pkl
    from microtrain.quant.head import replace_head

    graph = replace_head(load_mcunet_pkl(model_path("proxyless-w0.3")), 2)
    scheme, budget = like_mcunet_49kb(graph), part_sram_budget(160 * KB)
    fit = compile_model(graph, scheme, patch="fit", sram_budget=budget)
    auto = compile_model(graph, scheme, patch="auto", sram_budget=budget)
    f, a = fit.program.meta["patch"], auto.program.meta["patch"]
    assert fit.report.total_sram_bytes <= budget and auto.report.total_sram_bytes <= budget
    assert 0 < f["extra_macs"] < a["extra_macs"] and auto.report.arena_bytes < fit.report.arena_bytes

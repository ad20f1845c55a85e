"""On-device training of mcunet-5fps (2-class head, the 49 KB sparse-update scheme) under QEMU (Cortex-M7):
the firmware links inside 256 KB SRAM / 1 MB flash with the planner's figures, trains on real ants/bees
images streamed through semihosting, and ends with exactly the parameters and logits of the host build after
the same steps; the instruction counter splits the step into forward, backward and update."""
from __future__ import annotations

import re

import numpy as np
import pytest

from conftest import hymenoptera, like_mcunet_49kb, model_path
from cortexm_util import require_arm_tools

pytestmark = pytest.mark.qemu


@pytest.fixture(scope="module")
def firmware(tmp_path_factory):
    require_arm_tools()
    from microtrain.codegen import compile_model
    from microtrain.frontends.mcunet_pkl import load_mcunet_pkl
    from microtrain.quant.head import replace_head
    from microtrain.sparse.fixtures import load_scheme
    from microtrain.targets.cortex_m.project import emit_firmware

    graph = replace_head(load_mcunet_pkl(model_path("mcunet-5fps")), 2)
    out = tmp_path_factory.mktemp("mcunet-49kb-m7")
    compiled = compile_model(graph, load_scheme("mcunet-5fps-49kb"), out_dir=out)
    build, regions = emit_firmware(out, "cortex-m7")
    return out, compiled, build, regions


def test_links_within_budget_and_agrees_with_the_plan(firmware):
    from microtrain.targets.cortex_m.project import plan_vs_link

    out, compiled, build, _ = firmware
    assert build.usage.ram <= 256 * 1024 and build.usage.flash <= 1024 * 1024
    rows = plan_vs_link(build.elf, out)
    assert [planned for _, planned, _ in rows] == [compiled.report.arena_bytes, compiled.report.trainable_sram_bytes]
    for item, planned, linked in rows:
        assert planned == linked, item
    # what else lives in SRAM is the stack and a few hundred bytes of harness state
    assert 0 <= build.usage.ram - compiled.report.training_sram_bytes - build.usage.stack < 512
    assert (out / "firmware" / "mt_firmware.ld").exists() and (out / "Makefile.firmware").exists()


def test_device_training_equals_host_build(firmware):
    from microtrain.targets.cortex_m.data import session_data
    from microtrain.targets.cortex_m.session import cost_report, run_session
    from microtrain.targets.host import HostModel, build_host

    out, compiled, build, regions = firmware
    train, evaluate, classes, _ = session_data(hymenoptera(), 128, 2, steps=3, n_eval=2, seed=1)
    assert classes == ["ants", "bees"]
    device = run_session(build.elf, "cortex-m7", train=train, evaluate=evaluate, count=True, timeout=300)

    host = HostModel(build_host(out, opt="-O1"))
    host_losses = [host.train_step(x, int(y)) for x, y in zip(*train)]
    assert device.params == host.export_params() and len(device.params) == compiled.report.trainable_sram_bytes
    np.testing.assert_array_equal(device.logits, host.infer(evaluate[0]))
    np.testing.assert_allclose(device.losses, host_losses, atol=1e-6)
    assert device.stack_used < build.usage.stack

    icount = device.instructions
    assert sum(n for _, n in icount.regions.values()) == icount.total
    step = cost_report(icount, regions, "train")
    assert step.calls == 3
    assert {"forward", "backward", "update"} <= {p for p, n in step.by_phase.items() if n > 0}
    # the three phases are most of a step, and a step is hundreds of thousands of instructions at least
    assert step.by_phase["forward"] + step.by_phase["backward"] + step.by_phase["update"] > 0.95 * step.per_call
    assert step.per_call > 1e6
    # instructions per MAC of the conv calls: the cost report prints them, and the averages are plausible (the
    # backward's below 1 now and then: the MACs are the nominal ones, and the fast pointwise input gradient skips
    # output channels whose gradient is +0.0 everywhere, all of them on the first step after a zero-initialised head)
    assert "/MAC" in step.text() and 0.5 < step.per_mac("forward") < 5 and 0.3 < step.per_mac("backward") < 10


def test_cost_regions_carry_each_conv_calls_macs(firmware):
    """The MACs the cost report divides by, read from the calls' mt_conv_params, are the graph's: every conv's
    forward call and every input-gradient call (same products), nothing for other kernels."""
    from microtrain.frontends.mcunet_pkl import load_mcunet_pkl
    from microtrain.ops import conv
    from microtrain.quant.head import replace_head

    _, _, _, regions = firmware
    graph = replace_head(load_mcunet_pkl(model_path("mcunet-5fps")), 2)
    macs = {n.name: conv.macs(n, graph.tensors[n.inputs[0]].shape, graph.tensors[n.output].shape)
            for n in graph.nodes if n.op == "conv2d"}
    counted = [r for r in regions if r.macs]
    assert {r.node for r in counted if r.function == "infer"} == set(macs)
    assert any(r.phase == "backward" for r in counted)
    for r in counted:
        assert r.macs == macs[r.node], (r, macs[r.node])
        assert r.phase in ("forward", "backward") and ("grad_input" in r.kernel) == (r.phase == "backward")
    assert not any(r.macs for r in regions if not r.kernel.startswith("mt_conv_") or "update" in r.kernel)


def test_cli_run_trains_and_reports(firmware, capsys):
    from microtrain.cli import main

    out, _, _, _ = firmware
    params = out / "trained.bin"
    status = main(["run", str(out), "--data", str(hymenoptera()), "--steps", "2", "--eval", "2", "--no-count",
                   "--params-out", str(params)])
    text = capsys.readouterr().out
    assert status == 0, text
    assert "step    2  loss" in text and "held-out accuracy:" in text
    assert "(agrees)" in text and "DIFFERS" not in text
    assert params.exists() and params.stat().st_size > 0


def test_mbv2_trains_on_the_device_after_its_depthwise_conv_goes_in_place(tmp_path):
    """mbv2-w0.35 with a 49 KB-like scheme needs 269 KB as first planned; with blocks.1.depthwise in place it
    links inside 256 KB and two training steps in QEMU end with the host build's parameters and logits."""
    require_arm_tools()
    from microtrain.codegen import compile_model
    from microtrain.frontends.mcunet_pkl import load_mcunet_pkl
    from microtrain.quant.head import replace_head
    from microtrain.targets.cortex_m.data import session_data
    from microtrain.targets.cortex_m.session import run_session
    from microtrain.targets.cortex_m.project import emit_firmware
    from microtrain.targets.host import HostModel, build_host

    graph = replace_head(load_mcunet_pkl(model_path("mbv2-w0.35")), 2)
    compiled = compile_model(graph, like_mcunet_49kb(graph), out_dir=tmp_path)
    assert [s.node for s in compiled.program.train_steps if s.kernel == "mt_conv_depthwise_inplace_s8"] == \
        ["blocks.1.depthwise"]
    build, _ = emit_firmware(tmp_path, "cortex-m7")  # LinkBudgetError if it did not fit
    assert build.usage.ram <= 256 * 1024
    train, evaluate, _, _ = session_data(hymenoptera(), graph.resolution, 2, steps=2, n_eval=2, seed=3)
    device = run_session(build.elf, "cortex-m7", train=train, evaluate=evaluate, count=False, timeout=300)
    host = HostModel(build_host(tmp_path, opt="-O1"))
    for x, y in zip(*train):
        host.train_step(x, int(y))
    assert device.params == host.export_params()
    np.testing.assert_array_equal(device.logits, host.infer(evaluate[0]))
    assert device.stack_used < build.usage.stack


@pytest.mark.parametrize("scheme,ram,cap", [("mcunet-5fps-49kb", 128, 0.10), ("mcunet-5fps-99kb", 160, 0.15)])
def test_mcunet_trains_on_a_small_part_with_a_patched_prefix(scheme, ram, cap, tmp_path):
    """mcunet-5fps, 2 classes: the 49 KB scheme planned for a 128 KB part (the frozen prefix on tiles, depthwise
    input gradients in place), the 99 KB one for a 160 KB part (prefix on 4x4 tiles, blocks 9 and 10's backward
    by channel groups); the firmware links with the part's RAM (the linker enforces it) and two training steps in
    QEMU end with the host build's parameters and logits."""
    require_arm_tools()
    from microtrain.budget import KB, part_sram_budget
    from microtrain.codegen import compile_model
    from microtrain.frontends.mcunet_pkl import load_mcunet_pkl
    from microtrain.quant.head import replace_head
    from microtrain.sparse.fixtures import load_scheme
    from microtrain.targets.cortex_m.data import session_data
    from microtrain.targets.cortex_m.project import emit_firmware, read_target
    from microtrain.targets.cortex_m.session import run_session
    from microtrain.targets.host import HostModel, build_host

    graph = replace_head(load_mcunet_pkl(model_path("mcunet-5fps")), 2)
    compiled = compile_model(graph, load_scheme(scheme), out_dir=tmp_path, patch="fit", max_extra_macs=cap,
                             sram_budget=part_sram_budget(ram * KB))
    assert compiled.program.meta["patch"]["extra_macs"] > 0
    grouped = any(s.kernel == "mt_block_grad_grouped_f32" for s in compiled.program.train_steps)
    assert grouped == (ram == 160)
    build, _ = emit_firmware(tmp_path, "cortex-m7", ram=ram * KB, flash=1024 * KB)  # LinkBudgetError otherwise
    assert build.usage.ram <= ram * KB and read_target(tmp_path)["ram"] == ram * KB
    memory_map = (tmp_path / "build-cortex-m7" / "firmware.map").read_text()
    assert re.search(rf"^RAM\s+0x20000000\s+0x{ram * KB:08x}", memory_map, re.M)  # the linker's RAM region
    train, evaluate, _, _ = session_data(hymenoptera(), 128, 2, steps=2, n_eval=2, seed=5)
    device = run_session(build.elf, "cortex-m7", train=train, evaluate=evaluate, count=False, timeout=300)
    host = HostModel(build_host(tmp_path, opt="-O1"))
    for x, y in zip(*train):
        host.train_step(x, int(y))
    assert device.params == host.export_params() and len(device.params) == compiled.report.trainable_sram_bytes
    np.testing.assert_array_equal(device.logits, host.infer(evaluate[0]))


@pytest.mark.parametrize("backward", ["float", "int16"])
def test_fpu_less_cortex_m3_trains_like_the_host(backward, tmp_path):
    """A part without an FPU (Cortex-M3, QEMU mps2-an385): software floating point and the portable kernels,
    the same parameters and logits as the host build after the same steps, with either backward."""
    require_arm_tools()
    from microtrain.codegen import compile_model
    from microtrain.frontends.mcunet_pkl import load_mcunet_pkl
    from microtrain.quant.head import replace_head
    from microtrain.sparse.fixtures import load_scheme
    from microtrain.targets.cortex_m.build import symbol_sizes
    from microtrain.targets.cortex_m.data import session_data
    from microtrain.targets.cortex_m.project import emit_firmware, read_target
    from microtrain.targets.cortex_m.session import run_session
    from microtrain.targets.host import HostModel, build_host

    graph = replace_head(load_mcunet_pkl(model_path("mcunet-5fps")), 2)
    compile_model(graph, load_scheme("mcunet-5fps-49kb"), out_dir=tmp_path, backward=backward)
    build, _ = emit_firmware(tmp_path, "cortex-m3")
    assert read_target(tmp_path)["simd"] is False and read_target(tmp_path)["machine"] == "mps2-an385"
    syms = symbol_sizes(build.elf)
    assert "__aeabi_fmul" in syms or any(s.startswith("__aeabi_fmul") for s in syms)  # software float
    assert not any(s.endswith("_portable") for s in syms)  # no SIMD kernels linked beside the portable ones
    train, evaluate, _, _ = session_data(hymenoptera(), 128, 2, steps=2, n_eval=1, seed=2)
    device = run_session(build.elf, "cortex-m3", train=train, evaluate=evaluate, count=False, timeout=300)
    host = HostModel(build_host(tmp_path, opt="-O1"))
    host_losses = [host.train_step(x, int(y)) for x, y in zip(*train)]
    assert device.status == 0
    assert device.params == host.export_params()
    np.testing.assert_array_equal(device.logits, host.infer(evaluate[0]))
    np.testing.assert_allclose(device.losses, host_losses, atol=1e-6)

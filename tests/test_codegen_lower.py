"""C inference build vs the NumPy runtime: bit-exact logits on all three upstream models; planner
figures vs the symbols of the built library; warning-free C99; ASan/UBSan harness run."""
from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from conftest import MODEL_NAMES, hymenoptera

from microtrain.codegen import compile_model
from microtrain.runtime.forward import run_int8
from microtrain.runtime.images import load_int8
from microtrain.targets.host import HostModel, build_host, build_host_sanitized, run_harness

pytestmark = [pytest.mark.skipif(shutil.which("gcc") is None or shutil.which("make") is None,
                                 reason="needs gcc and make"),
              pytest.mark.usefixtures("one_blas_thread")]

_BUILT = {}


@pytest.fixture(scope="module", params=MODEL_NAMES)
def built(request, tmp_path_factory):
    """(graph, CompiledModel, HostModel) per model, generated and compiled once per session."""
    from conftest import model_path
    from microtrain.frontends.mcunet_pkl import load_mcunet_pkl

    name = request.param
    if name not in _BUILT:
        graph = load_mcunet_pkl(model_path(name))
        out = tmp_path_factory.mktemp(f"c-{name}")
        cm = compile_model(graph, out_dir=out)
        _BUILT[name] = (graph, cm, HostModel(build_host(out, opt="-O1")))
    return _BUILT[name]


def _inputs(graph, n=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, size=(n,) + tuple(graph.input_spec.shape)).astype(np.int8)
    x[0] = -128  # extremes: all-black and all-white images
    x[1] = 127
    return x


def test_c_logits_equal_numpy_exactly(built):
    graph, cm, model = built
    x = _inputs(graph)
    x = np.concatenate([x, load_int8([sorted((hymenoptera() / "val" / "bees").iterdir())[0]], graph.resolution)])
    got = model.infer(x)
    want = run_int8(graph, x).reshape(len(x), -1)
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def _symbol_sizes(lib) -> dict[str, int]:
    out = subprocess.run(["nm", "-S", "--size-sort", str(lib)], capture_output=True, text=True, check=True).stdout
    sizes = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 4:
            sizes[parts[3]] = int(parts[1], 16)
    return sizes


def test_planner_arena_is_what_the_build_allocates(built):
    graph, cm, model = built
    sizes = _symbol_sizes(model.path)
    assert sizes["mt_arena"] == cm.report.arena_bytes == model.defines["MT_ARENA_SIZE"]
    # inference only: nothing trainable, no other mutable static data but the lr scale
    assert cm.report.trainable_sram_bytes == 0


def test_arena_plan_is_sound(built):
    graph, cm, model = built
    plan = cm.infer_plan
    # the peak can be no lower than what a conv needs at once: its input and output, or, run in place
    # (mt_conv_depthwise_inplace_s8), the larger of the two plus the channel plane
    inplace = {s.node: s for s in cm.program.infer_steps if s.kernel == "mt_conv_depthwise_inplace_s8"}

    def need_of(n):
        x, y = graph.tensors[n.inputs[0]].nbytes, graph.tensors[n.output].nbytes
        if n.name in inplace:
            return max(x, y) + cm.program.buffers[inplace[n.name].writes[-1]].nbytes
        return x + y

    need = max(need_of(n) for n in graph.nodes if n.op == "conv2d")
    assert need <= plan.size <= sum(p.nbytes for p in plan.placements.values())


def test_sanitizers_and_strict_warnings(tmp_path):
    """The harness built with -fsanitize=address,undefined (and -Werror) runs clean and agrees."""
    from conftest import model_path
    from microtrain.frontends.mcunet_pkl import load_mcunet_pkl

    graph = load_mcunet_pkl(model_path("mcunet-5fps")).with_resolution(48)
    compile_model(graph, out_dir=tmp_path)
    exe = build_host_sanitized(tmp_path)
    x = _inputs(graph, n=2, seed=1)
    out = run_harness(exe, [("i", s) for s in x])
    got = np.frombuffer(out, np.int8).reshape(len(x), -1)
    np.testing.assert_array_equal(got, run_int8(graph, x).reshape(len(x), -1))


def test_compile_command_reports_before_building(tmp_path, capsys):
    import json

    from microtrain.cli import main

    out, report = tmp_path / "proj", tmp_path / "plan.json"
    rc = main(["compile", str(model_path_of("mcunet-5fps")), "--scheme", "mcunet-5fps-49kb", "--classes", "2",
               "--target", "c", "--out", str(out), "--report-json", str(report), "--timeline", "5"])
    assert rc == 0
    text = capsys.readouterr().out
    assert text.index("arena peak") < text.index("wrote " + str(out))  # the plan comes first
    d = json.loads(report.read_text())
    assert d["training_sram_bytes"] == d["arena_bytes"] + d["trainable_sram_bytes"] + d["scratch_bytes"]
    assert {r["name"] for r in d["timeline"]["training"]} >= {"input", "classifier.out", "mask:classifier"}
    assert json.loads((out / "memory.json").read_text()) == d
    header = (out / "mt_model.h").read_text()
    assert f"#define MT_ARENA_SIZE {d['arena_bytes']}" in header and "#define MT_NUM_CLASSES 2" in header
    for f in ("Makefile", "mt_model.c", "params.json", "kernels/mt_kernels.h", "kernels/mt_arith.h",
              "kernels/mt_update.h", "kernels/mt_forward_s8.c", "kernels/mt_backward_f32.c"):
        assert (out / f).is_file(), f
    core = (out / "mt_model.c").read_text() + "".join(p.read_text() for p in (out / "kernels").iterdir())
    assert "malloc" not in core and "stdio" not in core and "math.h" not in core
    # a user error is reported cleanly
    assert main(["compile", str(model_path_of("mcunet-5fps")), "--scheme", "no-such-scheme", "--out", str(out)]) == 1
    assert "no-such-scheme" in capsys.readouterr().err
    # a budget the model cannot meet: depthwise convs run in place (named), the arena shrinks
    for budget, name in (("none", "loose"), ("200", "tight")):  # mbv2-w0.35 inference: 245,760 B arena as planned
        rc = main(["compile", str(model_path_of("mbv2-w0.35")), "--scheme", "none", "--target", "c", "--out",
                   str(tmp_path / name), "--sram-budget", budget, "--timeline", "0", "--patch", "none",
                   "--report-json", str(tmp_path / f"{name}.json")])
        text = capsys.readouterr().out
        assert rc == 0 and ("in place to fit the SRAM budget: blocks.1.depthwise" in text) == (name == "tight")
    sizes = {n: json.loads((tmp_path / f"{n}.json").read_text())["arena_bytes"] for n in ("loose", "tight")}
    assert sizes["tight"] < sizes["loose"] == 245_760
    with pytest.raises(SystemExit):
        main(["compile", "mcunet-5fps", "--scheme", "full", "--out", str(out), "--sram-budget", "-3"])
    assert "--sram-budget" in capsys.readouterr().err


def model_path_of(name):
    from conftest import model_path

    return model_path(name)


def test_sources_build_freestanding_for_cortex_m(tmp_path):
    """The same generated sources cross-compile for a Cortex-M7 with -ffreestanding and -Werror, and
    need nothing from libm or libc (at most memcpy/memset, which gcc may emit)."""
    import os

    from conftest import IN_CI

    if shutil.which("arm-none-eabi-gcc") is None:
        if IN_CI:
            pytest.fail("arm-none-eabi-gcc missing under CI")
        pytest.skip("arm-none-eabi-gcc not installed")
    from microtrain.frontends.mcunet_pkl import load_mcunet_pkl
    from microtrain.quant.head import replace_head
    from microtrain.sparse.fixtures import load_fixture

    graph = replace_head(load_mcunet_pkl(model_path_of("mcunet-5fps")), 2).with_resolution(32)
    compile_model(graph, load_fixture("mcunet-5fps-49kb"), out_dir=tmp_path)
    flags = "-O2 -mcpu=cortex-m7 -mthumb -mfpu=fpv5-sp-d16 -mfloat-abi=hard -ffreestanding"
    r = subprocess.run(["make", "-s", "-C", str(tmp_path), "libmt.a", "CC=arm-none-eabi-gcc", "AR=arm-none-eabi-ar",
                        f"CFLAGS={flags}"], capture_output=True, text=True, env=dict(os.environ))
    assert r.returncode == 0, r.stderr
    nm = subprocess.run(["arm-none-eabi-nm", "-u", str(tmp_path / "libmt.a")], capture_output=True, text=True, check=True)
    undefined = {line.split()[-1] for line in nm.stdout.splitlines() if line.strip() and not line.endswith(":")}
    internal = {s for s in undefined if s.startswith("mt_")}
    assert undefined - internal <= {"memcpy", "memset"}, undefined - internal

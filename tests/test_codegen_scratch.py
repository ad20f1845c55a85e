"""Kernel stack scratch: each C query mt_<kernel>_scratch_bytes (kernels/mt_kernels.h) equals its Python
twin (ops/conv.py KERNEL_SCRATCH) on every kernel call of the shipped models, and the planner refuses a
program whose kernels would keep more work arrays on the stack than its estimate allows."""
from __future__ import annotations

import ctypes
import shutil
import subprocess

import pytest
from conftest import like_mcunet_49kb, small_graph

from microtrain.codegen import build_program, compile_model
from microtrain.codegen.emit import KERNEL_DIR
from microtrain.codegen.scratch import check_scratch, kernel_scratch
from microtrain.errors import MicrotrainError
from microtrain.ops import conv as conv_op
from microtrain.sparse.scheme import UpdateScheme


@pytest.fixture(scope="module")
def queries(tmp_path_factory):
    if shutil.which("gcc") is None:
        pytest.skip("needs gcc")
    lib = tmp_path_factory.mktemp("scratch") / "libscratch.so"
    subprocess.run(["gcc", "-std=c99", "-O1", "-shared", "-fPIC", f"-I{KERNEL_DIR}", str(KERNEL_DIR / "mt_forward_s8.c"),
                    str(KERNEL_DIR / "mt_backward_f32.c"), str(KERNEL_DIR / "mt_backward_i16.c"), "-o", str(lib)], check=True, capture_output=True)
    so = ctypes.CDLL(str(lib))

    def query(kernel):
        fn = getattr(so, f"{kernel}_scratch_bytes")
        fn.restype, fn.argtypes = ctypes.c_int32, [ctypes.c_void_p]
        return fn(None)
    return query


def test_every_query_has_its_twin(queries):
    header = (KERNEL_DIR / "mt_kernels.h").read_text()
    declared = {line.split("(")[0].split()[-1][: -len("_scratch_bytes")] for line in header.splitlines()
                if "_scratch_bytes(" in line and line.startswith("int32_t")}
    assert declared == set(kernel_scratch())
    for kernel, size in kernel_scratch().items():
        assert queries(kernel) == size, kernel


def test_c_and_python_agree_on_every_layer_of_the_shipped_models(queries, upstream_graph):
    prog = build_program(upstream_graph, like_mcunet_49kb(upstream_graph), sram_budget=None)
    table = kernel_scratch()
    calls = [s for s in prog.infer_steps + prog.train_steps if s.kernel in table]
    assert {s.kernel for s in calls} >= {"mt_conv_s8", "mt_conv_pointwise_s8", "mt_conv_depthwise_s8"}
    for s in calls:
        assert queries(s.kernel) == table[s.kernel], (s.node, s.kernel)
    assert check_scratch(prog) == max(table[s.kernel] for s in calls)


def test_planner_refuses_a_kernel_whose_scratch_does_not_fit(monkeypatch):
    scheme = UpdateScheme(2, {3: 1.0}, name="scratch")
    compile_model(small_graph(), scheme)  # fits as built
    monkeypatch.setitem(conv_op.KERNEL_SCRATCH, "mt_conv_s8", 4096)
    with pytest.raises(MicrotrainError, match="mt_conv_s8 .* 4096 bytes of stack scratch"):
        compile_model(small_graph(), scheme)

"""Lowering of an int8 Graph's forward pass to kernel calls (codegen.program.Program).

Conv weights are re-laid out for the kernels (see kernels/mt_kernels.h): pointwise (O, I),
depthwise (kh, kw, C), dense (O, kh, kw, I). A conv whose weights are partly trained keeps the
frozen input channels in flash and the trained ones in an SRAM array (split kernels); a conv fully
trained has its whole weight in SRAM; a trained bias is an SRAM int32 array. Everything else is const.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import UnsupportedOpError
from ..ir.graph import Graph, Node
from ..ops.conv import kind as conv_kind
from ..plan import DEFAULT_SRAM_BUDGET
from ..quant.arith import conv_multipliers
from .inplace_depthwise import fit_with_inplace_depthwise
from .program import Arg, Buffer, Const, Params, Program, Step, buf, const, lit, resolve_inplace


@dataclass
class ConvLayout:
    """How one conv's parameters are stored and which forward kernel reads them."""

    node: str
    idx: int
    family: str  # pointwise | depthwise | conv
    kernel: str
    weight_args: list[Arg]  # the weight part of the kernel's argument list
    weight: str | None  # whole-weight const (None when split)
    weight_train: str | None  # SRAM const holding trained channels (None when frozen)
    train_channels: tuple[int, ...] | None
    bias: str
    eff: str
    params: str


def kernel_weight(w: np.ndarray, family: str) -> np.ndarray:
    """OIHW int8 weight -> the kernel layout of its family."""
    if family == "pointwise":
        return np.ascontiguousarray(w[:, :, 0, 0])
    if family == "depthwise":
        return np.ascontiguousarray(w[:, 0].transpose(1, 2, 0))
    return np.ascontiguousarray(w.transpose(0, 2, 3, 1))


def conv_family(graph: Graph, node: Node) -> str:
    k = conv_kind(node)
    if k in ("pointwise", "classifier"):
        return "pointwise" if node.attrs["padding"] == 0 and tuple(node.attrs["kernel"]) == (1, 1) and node.attrs.get("groups", 1) == 1 else "conv"
    if k == "depthwise":
        return "depthwise"
    if node.attrs.get("groups", 1) != 1:
        raise UnsupportedOpError(
            f"conv {node.name!r}: grouped convolution (groups={node.attrs['groups']}) has no C kernel; "
            "only dense, pointwise and depthwise convs are supported"
        )
    return "conv"


def declare_conv(prog: Program, graph: Graph, node: Node, idx: int, spec=None) -> ConvLayout:
    """Declare the constants of one conv (weights, bias, multipliers, params) and pick its kernel.
    `spec` is the conv's sparse.scheme.TrainSpec when it is trained (None: frozen)."""
    family = conv_family(graph, node)
    w = node.params["weight"]
    xq = graph.tensors[node.inputs[0]].quant
    yq = graph.tensors[node.output].quant
    (h, wd, c), (ho, wo, o) = graph.tensors[node.inputs[0]].shape, graph.tensors[node.output].shape
    kh, kw = node.attrs["kernel"]
    p = prog.add_params(Params(f"mt_p{idx}", "mt_conv_params", [
        h, wd, c, ho, wo, o, kh, kw, node.attrs["stride"], node.attrs["padding"], xq.zero_point, yq.zero_point]))
    eff = prog.add_const(Const(f"mt_e{idx}", conv_multipliers(xq.scale, node.params["w_scales"], yq.scale), "float32"))
    bias_trained = spec is not None and spec.bias
    bias = prog.add_const(Const(f"mt_b{idx}", node.params["bias"].astype(np.int32), "int32",
                                "sram" if bias_trained else "flash", f"{node.name} bias"))
    kw_arr = kernel_weight(w, family)
    channels = None if spec is None else spec.channels
    n_in = w.shape[0] if family == "depthwise" else w.shape[1]
    base = {"pointwise": "mt_conv_pointwise", "depthwise": "mt_conv_depthwise", "conv": "mt_conv"}[family]
    if channels is None or len(channels) == n_in:
        storage = "flash" if channels is None else "sram"
        wc = prog.add_const(Const(f"mt_w{idx}", kw_arr, "int8", storage, f"{node.name} weight"))
        return ConvLayout(node.name, idx, family, base + "_s8", [const(wc.name)], wc.name,
                          wc.name if channels is not None else None, channels, bias.name, eff.name, p.name)
    frozen = tuple(i for i in range(n_in) if i not in set(channels))
    wf = prog.add_const(Const(f"mt_w{idx}", np.ascontiguousarray(kw_arr[..., list(frozen)]), "int8", "flash",
                              f"{node.name} frozen weight"))
    wt = prog.add_const(Const(f"mt_wt{idx}", np.ascontiguousarray(kw_arr[..., list(channels)]), "int8", "sram",
                              f"{node.name} weight, trained input channels {len(channels)}/{n_in}"))
    fi = prog.add_const(Const(f"mt_fi{idx}", np.array(frozen, np.int16), "int16"))
    ti = prog.add_const(Const(f"mt_ti{idx}", np.array(channels, np.int16), "int16"))
    args = [const(wf.name), const(fi.name), lit(len(frozen)), const(wt.name), const(ti.name), lit(len(channels))]
    return ConvLayout(node.name, idx, family, base + "_split_s8", args, None, wt.name, channels, bias.name,
                      eff.name, p.name)


def conv_step(layout: ConvLayout, x: str, y: str, mask: str | None) -> Step:
    args = [Arg("params", layout.params), buf(x)] + layout.weight_args + [
        const(layout.bias), const(layout.eff), buf(y), buf(mask) if mask else lit("NULL")]
    writes = [y] + ([mask] if mask else [])
    return Step(layout.kernel, args, [x], writes, layout.node)


def declare_tensor(prog: Program, graph: Graph, name: str, kind: str = "activation") -> None:
    if name not in prog.buffers:
        prog.add_buffer(Buffer(name, graph.tensors[name].numel, "int8", kind))


def lower_forward(prog: Program, graph: Graph, layouts: dict[str, ConvLayout], masks: set[str] = frozenset(),
                  inplace_add: bool = True) -> list[Step]:
    """Forward kernel calls of the whole graph. `masks` = tensors whose 1-bit clamp mask is written
    (buffer '<tensor>.mask'). Adds run in place over their main input when it dies there."""
    steps = [Step("mt_copy_s8", [Arg("lit", "input"), buf(graph.input), lit(graph.input_spec.numel)], [], [graph.input], "input")]
    declare_tensor(prog, graph, graph.input, "io")
    for i, node in enumerate(graph.nodes):
        mask = None
        if node.output in masks:
            mask = node.output + ".mask"
            if mask not in prog.buffers:
                prog.add_buffer(Buffer(mask, (graph.tensors[node.output].numel + 7) // 8, "uint8", "mask"))
        if node.op == "conv2d":
            declare_tensor(prog, graph, node.output)
            steps.append(conv_step(layouts[node.name], node.inputs[0], node.output, mask))
        elif node.op == "add":
            skip, main = node.inputs
            declare_tensor(prog, graph, node.output)
            qa, qb, qy = (graph.tensors[t].quant for t in (skip, main, node.output))
            pname = f"mt_padd{i}"
            prog.add_params(Params(pname, "mt_add_params", [
                graph.tensors[node.output].numel, qa.zero_point, qb.zero_point, qy.zero_point,
                np.float32(qa.scale), np.float32(qb.scale), np.float32(qy.scale)]))
            steps.append(Step("mt_add_s8", [Arg("params", pname), buf(skip), buf(main), buf(node.output),
                                            buf(mask) if mask else lit("NULL")],
                              [skip, main], [node.output] + ([mask] if mask else []), node.name,
                              inplace=(node.output, main) if inplace_add else None))
        elif node.op == "global_avg_pool":
            declare_tensor(prog, graph, node.output)
            h, w, c = graph.tensors[node.inputs[0]].shape
            pname = f"mt_ppool{i}"
            prog.add_params(Params(pname, "mt_pool_params", [h, w, c]))
            steps.append(Step("mt_global_avg_pool_s8", [Arg("params", pname), buf(node.inputs[0]), buf(node.output)],
                              [node.inputs[0]], [node.output], node.name))
        else:
            raise UnsupportedOpError(f"node {node.name!r}: op {node.op!r} has no C kernel (supported: conv2d, add, global_avg_pool)")
    return steps


def build_inference_program(graph: Graph, sram_budget: int | None = DEFAULT_SRAM_BUDGET) -> Program:
    """Program with only mt_infer (every parameter const); sram_budget as in build_training_program."""
    prog = Program(graph.name, graph.input, graph.output, graph.input_spec.numel, graph.num_classes)
    layouts = {}
    convs = [n for n in graph.nodes if n.op == "conv2d"]
    for idx, node in enumerate(convs):
        layouts[node.name] = declare_conv(prog, graph, node, idx)
    prog.infer_steps = lower_forward(prog, graph, layouts)
    prog.infer_steps.append(Step("mt_copy_s8", [buf(graph.output), Arg("lit", "logits"), lit(graph.num_classes)],
                                 [graph.output], [], "output"))
    prog.infer_aliases = resolve_inplace(prog.infer_steps, protected={graph.input})
    fit_with_inplace_depthwise(prog, {graph.input, graph.output}, sram_budget)
    prog.meta["layouts"] = layouts
    return prog

"""Lowering of a TrainingGraph (after the passes) to the kernel calls of mt_train_step.

Tensor names of the TrainingGraph become arena buffers: activations and saved inputs int8, clamp
masks 1 bit per element, gradients float32. Parameters: see lower.declare_conv (trained slices in
SRAM, frozen weights const). Each TrainingGraph step becomes one kernel call; the loss and label
are the C function's arguments.
"""
from __future__ import annotations

import numpy as np

from ..autodiff import build_training_graph
from ..errors import GraphError, UnsupportedOpError
from ..passes import run_passes
from ..passes.masks import mask_nbytes
from ..plan import DEFAULT_SRAM_BUDGET
from .lower import conv_step, declare_conv, lower_forward
from .inplace_depthwise import fit_with_inplace_depthwise
from .program import Arg, Buffer, Const, Params, Program, Step, buf, const, lit, resolve_inplace

ROUNDING_C = {"nearest": "MT_ROUND_NEAREST", "stochastic": "MT_ROUND_STOCHASTIC"}
GRAD_INPUT_KERNEL = {"pointwise": "mt_conv_grad_input_pointwise_f32", "depthwise": "mt_conv_grad_input_depthwise_f32",
                     "conv": "mt_conv_grad_input_f32"}
WEIGHT_UPDATE_KERNEL = {"pointwise": "mt_conv_weight_update_pointwise_f32",
                        "depthwise": "mt_conv_weight_update_depthwise_f32", "conv": "mt_conv_weight_update_f32"}


def training_graph_for(graph, scheme, rounding: str = "stochastic", qas: bool = True, passes=None):
    """autodiff + the default passes: the TrainingGraph the C code implements."""
    tg = build_training_graph(graph, scheme.resolve(graph), qas=qas, rounding=rounding)
    return run_passes(tg) if passes is None else run_passes(tg, passes)


def _declare(prog: Program, tg, name: str) -> str:
    if name in prog.buffers:
        return name
    info = tg.tensors[name]
    if info.dtype == "bit":
        prog.add_buffer(Buffer(name, mask_nbytes(info), "uint8", "mask"))
    elif info.dtype == "bool":
        raise GraphError(f"mask {name!r} is a byte mask: run passes.bit_masks before lowering to C")
    else:
        numel = int(np.prod(info.shape)) if info.shape else 1
        dtype = {"int8": "int8", "float32": "float32"}.get(info.dtype)
        if dtype is None:
            raise GraphError(f"tensor {name!r}: dtype {info.dtype!r} has no C buffer type")
        kind = {"activation": "activation", "grad": "grad", "saved": "saved"}.get(info.role, info.role)
        prog.add_buffer(Buffer(name, numel, dtype, kind))
    return name


def _weight_view(prog: Program, layout, n_in: int) -> str:
    name = f"mt_wv{layout.idx}"
    if name in prog.params:
        return name
    if layout.weight is not None and layout.weight_train is None:  # frozen, whole
        fields = [layout.weight, "NULL", n_in, "NULL", "NULL", 0]
    elif layout.weight is not None:  # trained, whole (SRAM)
        fields = ["NULL", "NULL", 0, layout.weight, "NULL", n_in]
    else:
        nt = len(layout.train_channels)
        fields = [f"mt_w{layout.idx}", f"mt_fi{layout.idx}", n_in - nt, layout.weight_train, f"mt_ti{layout.idx}", nt]
    prog.add_params(Params(name, "mt_weight_s8", fields))
    return name


def _update_params(prog: Program, name: str, divisor_name: str, divisor, attrs, full_in: int) -> str:
    if attrs.get("momentum"):
        raise UnsupportedOpError("momentum is not supported by the C training step (the device runs plain SGD)")
    if attrs["rounding"] not in ROUNDING_C:
        raise UnsupportedOpError(f"rounding {attrs['rounding']!r} has no C implementation (int8 training only)")
    prog.add_const(Const(divisor_name, np.asarray(divisor, np.float32), "float32"))
    prog.add_params(Params(name, "mt_update_params", [divisor_name, int(attrs["param_id"]) & 0xFFFFFFFF,
                                                      ROUNDING_C[attrs["rounding"]], full_in]))
    return name


def build_training_program(graph, scheme, *, lr: float = 0.01, seed: int = 0, rounding: str = "stochastic",
                           qas: bool = True, passes=None, sram_budget: int | None = DEFAULT_SRAM_BUDGET) -> Program:
    """sram_budget: planned SRAM in bytes above which depthwise convs run in place (largest input first) until
    the model fits; None: never (codegen.inplace_depthwise)."""
    if graph.dtype != "int8":
        raise GraphError(f"graph {graph.name!r}: C training needs an int8 graph, got {graph.dtype}")
    tg = training_graph_for(graph, scheme, rounding, qas, passes)
    trained = tg.trained
    prog = Program(graph.name, graph.input, graph.output, graph.input_spec.numel, graph.num_classes)
    prog.meta.update(scheme=scheme.name or "custom", lr=float(lr), seed=int(seed), rounding=rounding, qas=qas)
    layouts = {}
    for idx, node in enumerate(n for n in graph.nodes if n.op == "conv2d"):
        layouts[node.name] = declare_conv(prog, graph, node, idx, trained.get(node.name))
    prog.trainable = [c.name for c in prog.consts.values() if c.storage == "sram"]
    prog.meta["trainable_layout"] = _trainable_layout(prog, layouts, graph)

    # inference: the same (trainable) parameters, no masks
    prog.infer_steps = lower_forward(prog, graph, layouts)
    prog.infer_steps.append(Step("mt_copy_s8", [buf(graph.output), Arg("lit", "logits"), lit(graph.num_classes)],
                                 [graph.output], [], "output"))
    prog.infer_aliases = resolve_inplace(prog.infer_steps, protected={graph.input})

    steps = [Step("mt_copy_s8", [Arg("lit", "input"), buf(graph.input), lit(graph.input_spec.numel)], [],
                  [graph.input], "input")]
    nodes = {n.name: n for n in graph.nodes}
    for s in tg.steps:
        lowered = _lower_step(prog, tg, graph, nodes, layouts, s)
        src = s.attrs.get("inplace_of")
        if src is not None:  # marked by passes.mark_inplace; resolve_inplace re-checks it dies here
            lowered[0].inplace = (s.outputs[0], src)
        steps.extend(lowered)
    prog.train_steps = steps
    prog.train_aliases = resolve_inplace(steps, protected={graph.input})
    fit_with_inplace_depthwise(prog, {graph.input, graph.output}, sram_budget)
    prog.meta["training_graph"] = tg
    return prog


def _lower_step(prog, tg, graph, nodes, layouts, s) -> list[Step]:
    k, a = s.kind, s.attrs
    node = nodes.get(s.node)
    for t in s.inputs + s.outputs:
        if t not in (tg.labels, tg.loss):
            _declare(prog, tg, t)
    if k == "forward":
        mask = s.outputs[1] if len(s.outputs) > 1 else None
        if node.op == "conv2d":
            st = conv_step(layouts[node.name], node.inputs[0], node.output, mask)
            return [st]
        if node.op == "add":
            skip, main = node.inputs
            qa, qb, qy = (graph.tensors[t].quant for t in (skip, main, node.output))
            pname = f"mt_padd{graph.nodes.index(node)}"  # the same struct lower_forward declares
            if pname not in prog.params:
                prog.add_params(Params(pname, "mt_add_params", [
                    graph.tensors[node.output].numel, qa.zero_point, qb.zero_point, qy.zero_point,
                    np.float32(qa.scale), np.float32(qb.scale), np.float32(qy.scale)]))
            return [Step("mt_add_s8", [Arg("params", pname), buf(skip), buf(main), buf(node.output),
                                       buf(mask) if mask else lit("NULL")],
                         [skip, main], [node.output] + ([mask] if mask else []), node.name)]
        if node.op == "global_avg_pool":
            h, w, c = graph.tensors[node.inputs[0]].shape
            pname = f"mt_ppool{graph.nodes.index(node)}"
            if pname not in prog.params:
                prog.add_params(Params(pname, "mt_pool_params", [h, w, c]))
            return [Step("mt_global_avg_pool_s8", [Arg("params", pname), buf(node.inputs[0]), buf(node.output)],
                         [node.inputs[0]], [node.output], node.name)]
        raise UnsupportedOpError(f"node {node.name!r}: op {node.op!r} has no C kernel")
    lay = layouts.get(s.node)
    if k == "slice_channels":
        x, out = s.inputs[0], s.outputs[0]
        idx = prog.add_const(Const(f"mt_si{lay.idx}", np.array(a["channels"], np.int16), "int16"))
        c = graph.tensors[x].shape[-1]
        return [Step("mt_slice_channels_s8", [buf(x), lit(graph.tensors[x].numel), lit(c), const(idx.name),
                                              lit(len(a["channels"])), buf(out)], [x], [out], s.node, "forward")]
    if k == "loss_softmax_ce":
        logits, g = s.inputs[0], s.outputs[1]
        return [Step("mt_loss_softmax_ce_s8", [buf(logits), lit(graph.num_classes), lit(int(a["zero_point"])),
                                               lit(_c_float(a["scale"])), lit("label"), lit("loss"), buf(g)],
                     [logits], [g], "loss", "loss")]
    if k == "conv_grad_acc":
        gy, mask = s.inputs
        out = s.outputs[0]
        eff = prog.consts[lay.eff].value
        if not np.array_equal(np.asarray(a["scale"], np.float32), eff):
            raise GraphError(f"conv {s.node!r}: gradient scale differs from the forward multiplier")
        n, c = int(np.prod(tg.tensors[out].shape)), tg.tensors[out].shape[-1]
        return [Step("mt_conv_grad_acc_f32", [buf(gy), buf(mask), const(lay.eff), lit(n), lit(c), buf(out)],
                     [gy, mask], [out], s.node, "backward")]
    if k == "conv_grad_input":
        gacc, gx = s.inputs[0], s.outputs[0]
        n_in = node.params["weight"].shape[0] if lay.family == "depthwise" else node.params["weight"].shape[1]
        wv = _weight_view(prog, lay, n_in)
        return [Step(GRAD_INPUT_KERNEL[lay.family], [Arg("params", lay.params), buf(gacc), Arg("params", wv), buf(gx)],
                     [gacc], [gx], s.node, "backward")]
    if k == "conv_weight_update":
        x, gacc = s.inputs
        w = node.params["weight"]
        n_in = w.shape[0] if lay.family == "depthwise" else w.shape[1]
        if tuple(a["channels"]) != tuple(lay.train_channels):
            raise GraphError(f"conv {s.node!r}: update channels differ from the declared trained slice")
        wv = _weight_view(prog, lay, n_in)
        up = _update_params(prog, f"mt_uw{lay.idx}", f"mt_dw{lay.idx}", a["update"]["divisor"], a["update"], w.shape[1])
        x_c = graph.tensors[x].shape[-1] if x in graph.tensors else tg.tensors[x].shape[-1]
        return [Step(WEIGHT_UPDATE_KERNEL[lay.family], [Arg("params", lay.params), buf(x), lit(x_c), buf(gacc),
                                                        Arg("params", wv), Arg("params", up), lit("&mt_ctx")],
                     [x, gacc], [], s.node, "update")]
    if k == "conv_bias_update":
        gacc = s.inputs[0]
        shape = tg.tensors[gacc].shape
        up = _update_params(prog, f"mt_ub{lay.idx}", f"mt_db{lay.idx}", a["update"]["divisor"], a["update"], 1)
        return [Step("mt_bias_update_f32", [buf(gacc), lit(shape[0] * shape[1]), lit(shape[2]), const(lay.bias),
                                            Arg("params", up), lit("&mt_ctx")], [gacc], [], s.node, "update")]
    if k == "add_grad":
        gy, mask = s.inputs
        out = s.outputs[0]
        n = int(np.prod(tg.tensors[out].shape))
        return [Step("mt_add_grad_f32", [buf(gy), buf(mask), lit(_c_float(a["scale"])), lit(n), buf(out)],
                     [gy, mask], [out], s.node, "backward")]
    if k == "pool_grad":
        h, w, c = a["in_shape"]
        return [Step("mt_pool_grad_f32", [buf(s.inputs[0]), lit(h * w), lit(c), buf(s.outputs[0])],
                     [s.inputs[0]], [s.outputs[0]], s.node, "backward")]
    if k == "grad_sum":
        out = s.outputs[0]
        n = int(np.prod(tg.tensors[out].shape))
        first, second = s.inputs[0], s.inputs[1]
        steps = [Step("mt_grad_sum_f32", [buf(first), buf(second), lit(n), buf(out)], [first, second], [out],
                      s.node, "backward")]
        for t in s.inputs[2:]:
            steps.append(Step("mt_grad_sum_f32", [buf(out), buf(t), lit(n), buf(out)], [out, t], [out], s.node, "backward"))
        return steps
    raise GraphError(f"training step kind {k!r} (node {s.node!r}) has no C lowering; run the default passes first")


def _c_float(v) -> str:
    from .emit import c_float

    return c_float(v)


def _trainable_layout(prog, layouts, graph) -> list[dict]:
    """How the exported parameter blob maps back to graph parameters (in blob order)."""
    out = []
    for lay in layouts.values():
        node = graph.node(lay.node)
        if lay.weight_train is not None:
            out.append({"const": lay.weight_train, "node": lay.node, "param": "weight", "family": lay.family,
                        "channels": list(lay.train_channels), "shape": list(prog.consts[lay.weight_train].value.shape)})
        if prog.consts[lay.bias].storage == "sram":
            out.append({"const": lay.bias, "node": lay.node, "param": "bias", "shape": [node.params["bias"].shape[0]]})
    order = {n: i for i, n in enumerate(prog.trainable)}
    return sorted(out, key=lambda d: order[d["const"]])

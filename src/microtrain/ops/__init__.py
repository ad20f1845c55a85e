"""Op families. An op is one module here plus its C kernel; REGISTRY is the only list of ops.

Every op module defines:
    OP                     the Node.op it implements
    infer_shape, macs      shape rule and cost
    forward_int8, forward_float    inference (quant/arith bit for bit in int8)
    forward_train(graph, node, ins, save_mask) -> (y, mask or None)    the forward training runs
    CLAMPS_OUTPUT, TRAINABLE, INPLACE_INPUT, KEEPS_INPUT_QUANT             facts the compiler asks about
    backward(cx, node) -> [ir.training.Step]    its backward steps (autodiff's context cx)
    KINDS                  {step kind: ir.training.Kind} of the backward steps it emits
    lower(lx, node, mask) -> [ir.program.Step]  its forward kernel call(s)
and optionally declare(prog, graph, node, idx, spec) for ops with parameters (kernel layout)."""
from __future__ import annotations

import reprlib
from types import ModuleType

from ..errors import GraphError, UnsupportedOpError
from . import add, conv, pool

REGISTRY: dict[str, ModuleType] = {m.OP: m for m in (conv, add, pool)}


def op_module(node) -> ModuleType:
    try:
        return REGISTRY[node.op]
    except KeyError:
        raise UnsupportedOpError(
            f"node {node.name!r}: op {node.op!r} is not supported; supported ops: {sorted(REGISTRY)}"
        ) from None


def register(module: ModuleType) -> ModuleType:
    """Add an op module defined outside this package (an experiment, a test's toy op)."""
    if module.OP in REGISTRY and REGISTRY[module.OP] is not module:
        raise UnsupportedOpError(f"op {module.OP!r} is already registered by {REGISTRY[module.OP].__name__}")
    REGISTRY[module.OP] = module
    return module


def unregister(op: str) -> None:
    REGISTRY.pop(op, None)


def infer_shapes(graph):
    """Recompute every node output's shape from the input's, in place; returns the graph."""
    for node in graph.nodes:
        in_shapes = [graph.tensors[t].shape for t in node.inputs]
        op = op_module(node)
        try:
            shape = tuple(int(v) for v in op.infer_shape(node, in_shapes))
        except (TypeError, ValueError, OverflowError) as e:  # attrs of the wrong type/arity, e.g. from a file
            raise GraphError(
                f"graph {graph.name!r}, node {node.name!r}: malformed {node.op} attributes {reprlib.repr(node.attrs)} "
                f"or inputs {reprlib.repr(in_shapes)} ({type(e).__name__}: {str(e)[:200]})"
            ) from None
        graph.tensors[node.output].shape = shape
    return graph

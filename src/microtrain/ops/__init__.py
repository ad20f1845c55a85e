"""Op families. Adding an op means one module here (shape rule, arithmetic, gradient, cost) and one
C kernel; the registry below is the only other place that names it."""
from __future__ import annotations

from types import ModuleType

from ..errors import UnsupportedOpError
from . import add, avgpool, conv, pad, pool

REGISTRY: dict[str, ModuleType] = {m.OP: m for m in (conv, add, pool, pad, avgpool)}


def op_module(node) -> ModuleType:
    try:
        return REGISTRY[node.op]
    except KeyError:
        raise UnsupportedOpError(
            f"node {node.name!r}: op {node.op!r} is not supported; supported ops: {sorted(REGISTRY)}"
        ) from None

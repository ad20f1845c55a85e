"""The lowered program the C emitter prints: named buffers, constants and a list of kernel calls.

A Program is plain data between the lowering (graph or training graph -> kernel calls), the memory
planner (buffers -> arena offsets) and the emitter (-> C). Each Step names the buffers it reads and
writes, which is all the planner needs to compute lifetimes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

def c_float(v) -> str:
    """Exact C99 literal of a float32 value (hex float)."""
    f = float(np.float32(v))
    if not np.isfinite(f):
        raise ValueError(f"non-finite constant {v!r}")
    return f.hex() + "f"


CTYPES = {"int8": "int8_t", "uint8": "uint8_t", "int16": "int16_t", "int32": "int32_t", "float32": "float"}
ITEMSIZE = {"int8": 1, "uint8": 1, "int16": 2, "int32": 4, "float32": 4}


@dataclass
class Buffer:
    """A tensor that lives in the arena for part of the step (activation, mask, gradient, saved input)."""

    name: str
    numel: int
    dtype: str  # key of CTYPES
    kind: str = "activation"  # activation | mask | saved | grad | scratch | io

    @property
    def nbytes(self) -> int:
        return self.numel * ITEMSIZE[self.dtype]


@dataclass
class Const:
    """A constant array: storage "flash" (const, never changes) or "sram" (trainable, initialised
    from a flash copy by mt_init and updated in place by the training step)."""

    name: str
    value: np.ndarray
    dtype: str
    storage: str = "flash"
    note: str = ""

    @property
    def nbytes(self) -> int:
        return int(self.value.size) * ITEMSIZE[self.dtype]


@dataclass
class Arg:
    """One argument of a kernel call: a buffer, a constant, a params struct or a C literal."""

    kind: str  # buf | const | params | lit
    ref: str

    def __repr__(self):
        return f"{self.kind}:{self.ref}"


def buf(name):
    return Arg("buf", name)


def const(name):
    return Arg("const", name)


def lit(value):
    return Arg("lit", str(value))


@dataclass
class Step:
    kernel: str
    args: list[Arg]
    reads: list[str]
    writes: list[str]
    node: str = ""
    phase: str = "forward"  # forward | loss | backward | update
    inplace: tuple[str, str] | None = None  # (output, input): may share storage if input dies here


@dataclass
class Params:
    """A static const params struct (mt_conv_params etc.), fields in declaration order."""

    name: str
    ctype: str
    fields: list


@dataclass
class Program:
    name: str
    input: str  # buffer holding the int8 input image
    output: str  # buffer holding the int8 logits
    input_numel: int
    num_classes: int
    buffers: dict[str, Buffer] = field(default_factory=dict)
    consts: dict[str, Const] = field(default_factory=dict)
    params: dict[str, Params] = field(default_factory=dict)
    infer_steps: list[Step] = field(default_factory=list)
    train_steps: list[Step] = field(default_factory=list)
    infer_aliases: dict[str, str] = field(default_factory=dict)  # in-place output -> reused input
    train_aliases: dict[str, str] = field(default_factory=dict)
    trainable: list[str] = field(default_factory=list)  # sram consts exported/imported, in order
    meta: dict = field(default_factory=dict)

    def add_buffer(self, b: Buffer) -> Buffer:
        if b.name in self.buffers:
            raise ValueError(f"buffer {b.name!r} declared twice")
        self.buffers[b.name] = b
        return b

    def add_const(self, c: Const) -> Const:
        if c.name in self.consts:
            raise ValueError(f"constant {c.name!r} declared twice")
        self.consts[c.name] = c
        return c

    def add_params(self, p: Params) -> Params:
        self.params[p.name] = p
        return p


def last_use(steps: list[Step]) -> dict[str, int]:
    """{buffer: index of the last step that reads or writes it}."""
    last = {}
    for i, s in enumerate(steps):
        for t in list(s.reads) + list(s.writes):
            last[t] = i
    return last


def resolve_inplace(steps: list[Step], protected=()) -> dict[str, str]:
    """{output: input} for every step whose in-place candidate input is read by no later step."""
    last = last_use(steps)
    aliases = {}
    for i, s in enumerate(steps):
        if s.inplace is None:
            continue
        out, src = s.inplace
        if src in protected or last.get(src) != i:
            continue
        aliases[out] = src
    return aliases

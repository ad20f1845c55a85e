"""Bounds-checked reading of a TensorFlow Lite flatbuffer (.tflite) with the `tflite` package.

The package's classes are generated from TFLite's schema, but a flatbuffer reader trusts every offset it
is given: `FlatReader` checks each table, vtable, field, vector and string against the buffer before a
generated accessor touches it, so a truncated file, a bad offset or an absurd length is a
ModelFormatError naming the file and the table, never a crash or a huge allocation. `TfliteFile` gives
the one subgraph's operators and tensors (shape, type, quantisation, constant data). The conversion to
the IR is frontends/tflite.py.
"""
from __future__ import annotations

import math
import struct

import numpy as np

from ..errors import ModelFormatError, UnsupportedOpError

MAX_DIM = 2**16
INT8, INT32, FLOAT32 = 9, 2, 0  # TensorType values
TYPE_NAMES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 5: "string", 6: "bool",
              7: "int16", 9: "int8", 10: "float64"}
FULL_INT8_HINT = ("convert with full-integer quantization (TFLiteConverter with a representative dataset, "
                  "supported_ops TFLITE_BUILTINS_INT8, int8 input and output types)")


def _tflite():
    try:
        import tflite
        from tflite.utils import BUILTIN_OPCODE2NAME
    except ImportError:  # pragma: no cover - a declared dependency
        raise ModelFormatError("reading .tflite files needs the `tflite` package: pip install tflite") from None
    return tflite, BUILTIN_OPCODE2NAME


# ----- bounds-checked access to the flatbuffer -------------------------------------------------------
class FlatReader:
    """Checks every table, field, vector and string against the buffer before it is read."""

    def __init__(self, data: bytes, source: str):
        self.b, self.n, self.source = data, len(data), source

    def bad(self, what: str, detail: str) -> ModelFormatError:
        return ModelFormatError(f"{self.source}: corrupt TFLite flatbuffer: {what}: {detail} "
                                f"(file is {self.n} bytes)")

    def u32(self, pos: int, what: str) -> int:
        if not 0 <= pos <= self.n - 4:
            raise self.bad(what, f"offset {pos} outside the file")
        return struct.unpack_from("<I", self.b, pos)[0]

    def table(self, cls, pos: int, what: str):
        """A generated table object at `pos` whose vtable and inline fields lie inside the buffer."""
        if not 0 <= pos <= self.n - 4:
            raise self.bad(what, f"table offset {pos} outside the file")
        vt = pos - struct.unpack_from("<i", self.b, pos)[0]
        if not 0 <= vt <= self.n - 4:
            raise self.bad(what, f"vtable offset {vt} outside the file")
        vt_len, t_len = struct.unpack_from("<HH", self.b, vt)
        if vt_len < 4 or vt_len % 2 or vt + vt_len > self.n or t_len < 4 or pos + t_len > self.n:
            raise self.bad(what, f"vtable of {vt_len} bytes / table of {t_len} bytes does not fit")
        obj = cls()
        obj.Init(self.b, pos)
        return obj

    def field(self, obj, slot: int, size: int, what: str) -> int:
        """The field's position (0 if absent) after checking it lies inside its table."""
        o = obj._tab.Offset(slot)
        if o == 0:
            return 0
        vt = obj._tab.Pos - struct.unpack_from("<i", self.b, obj._tab.Pos)[0]
        t_len = struct.unpack_from("<H", self.b, vt + 2)[0]
        if o + size > t_len:
            raise self.bad(what, f"field at {o} + {size} bytes past its {t_len}-byte table")
        return obj._tab.Pos + o

    def vector(self, obj, slot: int, elem: int, what: str) -> tuple[int, int]:
        """(start, length) of a vector field (length 0 if absent), checked to fit in the buffer."""
        ref = self.field(obj, slot, 4, what)
        if ref == 0:
            return 0, 0
        vec = ref + self.u32(ref, what)
        length = self.u32(vec, what)
        if vec + 4 + length * elem > self.n:
            raise self.bad(what, f"vector of {length} x {elem} bytes at {vec} runs past the end")
        return vec + 4, length

    def child(self, obj, slot: int, cls, what: str):
        ref = self.field(obj, slot, 4, what)
        return None if ref == 0 else self.table(cls, ref + self.u32(ref, what), what)

    def tables(self, obj, slot: int, cls, what: str) -> list:
        start, length = self.vector(obj, slot, 4, what)
        return [self.table(cls, start + 4 * i + self.u32(start + 4 * i, what), f"{what}[{i}]") for i in range(length)]

    def array(self, obj, slot: int, dtype, what: str) -> np.ndarray:
        dt = np.dtype(dtype).newbyteorder("<")
        start, length = self.vector(obj, slot, dt.itemsize, what)
        return np.frombuffer(self.b, dt, count=length, offset=start).astype(dtype) if length else np.zeros(0, dtype)

    def scalar(self, obj, slot: int, fmt: str, default, what: str):
        pos = self.field(obj, slot, struct.calcsize(fmt), what)
        return default if pos == 0 else struct.unpack_from("<" + fmt, self.b, pos)[0]

    def string(self, obj, slot: int, what: str) -> str:
        start, length = self.vector(obj, slot, 1, what)
        return bytes(self.b[start : start + length]).decode("utf-8", "replace") if length else ""


# ----- the model's tensors ----------------------------------------------------------------------------
class TfliteFile:
    def __init__(self, data: bytes, source: str):
        tfl, names = _tflite()
        self.tfl, self.source = tfl, source
        f = self.f = FlatReader(data, source)
        if f.n < 8 or data[4:8] != b"TFL3":
            raise ModelFormatError(f"{source}: not a TensorFlow Lite flatbuffer (no 'TFL3' identifier)")
        model = f.table(tfl.Model, f.u32(0, "root"), "model")
        version = f.scalar(model, 4, "I", 0, "model.version")
        if version != 3:
            raise ModelFormatError(f"{source}: TFLite schema version {version}; microtrain reads version 3")
        self.opnames = []
        for i, oc in enumerate(f.tables(model, 6, tfl.OperatorCode, "operator_codes")):
            code = max(f.scalar(oc, 4, "b", 0, f"operator_codes[{i}]"), f.scalar(oc, 10, "i", 0, f"operator_codes[{i}]"))
            self.opnames.append("CUSTOM" if code == 32 else names.get(code, f"builtin code {code}"))
        subgraphs = f.tables(model, 8, tfl.SubGraph, "subgraphs")
        if len(subgraphs) != 1:
            raise ModelFormatError(f"{source}: {len(subgraphs)} subgraphs; microtrain reads single-subgraph models")
        self.sg = subgraphs[0]
        self.model = model
        self.buffers_at, self.n_buffers = f.vector(model, 12, 4, "buffers")
        self.tensors = f.tables(self.sg, 4, tfl.Tensor, "tensors")
        self.operators = f.tables(self.sg, 10, tfl.Operator, "operators")
        self.inputs = f.array(self.sg, 6, np.int32, "subgraph.inputs")
        self.outputs = f.array(self.sg, 8, np.int32, "subgraph.outputs")
        self._info = {}

    def info(self, idx: int, where: str) -> dict:
        """name, shape, dtype, scales, zero points, quantized_dimension and buffer of tensor `idx`."""
        if not 0 <= idx < len(self.tensors):
            raise ModelFormatError(f"{where}: tensor index {idx} out of range (model has {len(self.tensors)})")
        if idx in self._info:
            return self._info[idx]
        f, t, what = self.f, self.tensors[idx], f"tensor {idx}"
        shape = f.array(t, 4, np.int32, what + ".shape")
        if len(shape) > 4 or np.any(shape < 1) or np.any(shape > MAX_DIM):
            raise ModelFormatError(f"{where}: tensor {idx} has shape {shape.tolist()}; expected up to 4 dimensions in 1..{MAX_DIM}")
        info = {"index": idx, "shape": tuple(int(v) for v in shape), "type": f.scalar(t, 6, "b", 0, what),
                "buffer": f.scalar(t, 8, "I", 0, what), "name": f.string(t, 10, what + ".name")[:200],
                "scale": np.zeros(0, np.float32), "zero_point": np.zeros(0, np.int64), "qdim": 0}
        q = f.child(t, 12, self.tfl.QuantizationParameters, what + ".quantization")
        if q is not None:
            info["scale"] = f.array(q, 8, np.float32, what + ".scale")
            info["zero_point"] = f.array(q, 10, np.int64, what + ".zero_point")
            info["qdim"] = f.scalar(q, 16, "i", 0, what)
        self._info[idx] = info
        return info

    def buffer(self, b: int, where: str):
        """The Buffer table `b` (checked against the buffer count and the file)."""
        if not 0 <= b < self.n_buffers:
            raise ModelFormatError(f"{where}: buffer index {b} out of range (the model has {self.n_buffers})")
        what = f"buffer {b}"
        return self.f.table(self.tfl.Buffer, self.buffers_at + 4 * b + self.f.u32(self.buffers_at + 4 * b, what), what)

    def buffer_span(self, b: int, where: str) -> tuple[int, int] | None:
        """(start, length) of buffer b's bytes in the file, None for an empty buffer."""
        f, what = self.f, f"buffer {b}"
        buf = self.buffer(b, where)
        start, length = f.vector(buf, 4, 1, what + ".data")
        if length == 0:  # large models keep data outside the flatbuffer: offset/size from the file start
            off, size = f.scalar(buf, 6, "Q", 0, what), f.scalar(buf, 8, "Q", 0, what)
            if off <= 1:
                return None
            if off + size > f.n:
                raise ModelFormatError(f"{where}: {what} points at bytes {off}..{off + size}, outside the file")
            start, length = off, size
        return start, length

    def data(self, info: dict, where: str) -> np.ndarray | None:
        """The constant contents of a tensor (None for an activation), shaped and typed."""
        b = info["buffer"]
        if b == 0:
            return None
        if b >= self.n_buffers:
            raise ModelFormatError(f"{where}: tensor {info['index']} names buffer {b}, the model has {self.n_buffers}")
        span = self.buffer_span(b, where)
        if span is None:
            return None  # an empty buffer: the tensor is an activation
        start, length = span
        dtype = {INT8: np.int8, INT32: np.int32}.get(info["type"])
        if dtype is None:
            raise UnsupportedOpError(f"{where}: constant tensor {info['index']} ({info['name']!r}) is "
                                     f"{TYPE_NAMES.get(info['type'], info['type'])}; microtrain needs int8 weights and "
                                     f"int32 biases: {FULL_INT8_HINT}")
        numel = math.prod(info["shape"])
        if numel * np.dtype(dtype).itemsize != length:
            raise ModelFormatError(f"{where}: tensor {info['index']} has shape {list(info['shape'])} but its buffer holds "
                                   f"{length} bytes")
        return np.frombuffer(self.f.b, np.dtype(dtype).newbyteorder("<"), count=numel, offset=start).astype(dtype).reshape(info["shape"])

"""Host side of the power-safe parameter store (codegen/kernels/mt_persist.c; format in mt_persist.h).

Two parts:
- a reader of flash images (pure Python): `newest_slot(image, slot_size)` returns the newest valid slot of a
  flash dump, exactly as the C loader picks it, so a host tool can pull trained parameters off a device;
  `pack_params` / `unpack_params` / `layout_id` define a payload layout (named little-endian arrays, each
  4-byte aligned) that generated code and host tools can share;
- a ctypes harness (`PersistLib`) that compiles mt_persist.c with gcc (with its RAM flash simulator, which can
  cut power after N programmed or erased bytes) into a temporary shared library, for the fault-injection tests.
"""
from __future__ import annotations

import ctypes
import re
import shutil
import struct
import subprocess
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ModelFormatError

KERNELS = Path(__file__).resolve().parent / "codegen" / "kernels"
C_SOURCE = KERNELS / "mt_persist.c"

MAGIC = 0x3150544D  # "MTP1"
COMMIT = 0x4B4F544D  # "MTOK"
VERSION = 1
HEADER_SIZE = 32
_HEADER = struct.Struct("<IHHIIIIII")  # magic, version, header size, seq, layout, len, step, crc, commit

# return codes of mt_persist.h
OK, SKIPPED, EMPTY, ELAYOUT = 0, 1, 2, 3
EINVAL, ETOOBIG, EFLASH, EVERIFY, EWORN = -1, -2, -3, -4, -5


class FlashImageError(ModelFormatError):
    """A flash image holds no usable parameter slot, or a payload does not match its layout."""


# ----- reading flash images ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Slot:
    index: int
    seq: int
    layout_id: int
    step: int
    payload: bytes


def read_slot(image: bytes, index: int, slot_size: int, base: int = 0) -> tuple[Slot | None, str]:
    """(Slot, "") if slot `index` of the image is complete and intact, else (None, the reason)."""
    start = base + index * slot_size
    raw = bytes(image[start:start + slot_size])
    if len(raw) < HEADER_SIZE:
        return None, f"slot {index}: image too short ({len(raw)} bytes at offset {start})"
    magic, ver, hsize, seq, layout, length, step, crc, commit = _HEADER.unpack_from(raw)
    if magic != MAGIC or commit != COMMIT:
        return None, f"slot {index}: no committed header (magic {magic:#x}, commit {commit:#x})"
    if ver != VERSION or hsize != HEADER_SIZE:
        return None, f"slot {index}: unsupported version {ver} / header size {hsize}"
    if length > slot_size - HEADER_SIZE or HEADER_SIZE + length > len(raw):
        return None, f"slot {index}: payload length {length} does not fit the slot ({slot_size} bytes)"
    payload = raw[HEADER_SIZE:HEADER_SIZE + length]
    if zlib.crc32(payload, zlib.crc32(raw[:24])) != crc:
        return None, f"slot {index}: CRC mismatch (torn or corrupted write)"
    return Slot(index, seq, layout, step, payload), ""


def _newer(a: int, b: int) -> bool:
    """Serial-number comparison modulo 2**32, as the C code does."""
    d = (a - b) & 0xFFFFFFFF
    return d != 0 and d < 0x80000000


def newest_slot(image: bytes, slot_size: int, layout_id: int | None = None, base: int = 0, source: str = "image") -> Slot:
    """The slot the C loader would load (newest valid, optionally of `layout_id`); FlashImageError if none."""
    slots, reasons = [], []
    for i in (0, 1):
        s, why = read_slot(image, i, slot_size, base)
        if s is not None and layout_id is not None and s.layout_id != layout_id:
            s, why = None, f"slot {i}: layout id {s.layout_id:#010x}, expected {layout_id:#010x}"
        if s is not None:
            slots.append(s)
        else:
            reasons.append(why)
    if not slots:
        raise FlashImageError(f"{source}: no valid parameter slot ({'; '.join(reasons)})")
    if len(slots) == 2 and _newer(slots[1].seq, slots[0].seq):
        return slots[1]
    return slots[0]


def slot_bytes(payload: bytes, seq: int, layout_id: int = 0, step: int = 0) -> bytes:
    """One committed slot (header + payload) exactly as mt_persist_save programs it."""
    head = struct.pack("<IHHIIII", MAGIC, VERSION, HEADER_SIZE, seq & 0xFFFFFFFF, layout_id & 0xFFFFFFFF,
                       len(payload), step & 0xFFFFFFFF)
    return head + struct.pack("<II", zlib.crc32(payload, zlib.crc32(head)), COMMIT) + bytes(payload)


def build_image(payload: bytes, slot_size: int, layout_id: int = 0, step: int = 0, seq: int = 1) -> bytes:
    """A two-slot flash image (erased = 0xFF) holding `payload` in slot 0: e.g. to flash initial parameters."""
    if HEADER_SIZE + len(payload) > slot_size:
        raise FlashImageError(f"payload of {len(payload)} bytes does not fit a {slot_size}-byte slot")
    image = bytearray(b"\xff" * (2 * slot_size))
    slot = slot_bytes(payload, seq, layout_id, step)
    image[:len(slot)] = slot
    return bytes(image)


# ----- payload layout ---------------------------------------------------------------------------------------
Layout = list  # [(name, dtype str, shape tuple)]


def _entries(layout):
    off = 0
    for name, dtype, shape in layout:
        dt = np.dtype(dtype).newbyteorder("<")
        n = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
        yield name, dt, tuple(int(v) for v in shape), off, n
        off += (n + 3) // 4 * 4  # every array starts 4-byte aligned (int32 / float32 loads on the MCU)


def payload_size(layout: Layout) -> int:
    return sum((n + 3) // 4 * 4 for *_, n in _entries(layout))


def layout_id(layout: Layout) -> int:
    """CRC-32 of the canonical text 'name:dtype:d0xd1..;' of every entry: a firmware refuses foreign blobs."""
    text = "".join(f"{name}:{np.dtype(dt).str.lstrip('<>|=')}:{'x'.join(map(str, shape))};" for name, dt, shape in layout)
    return zlib.crc32(text.encode())


def pack_params(arrays: dict, layout: Layout) -> bytes:
    out = bytearray(payload_size(layout))
    for name, dt, shape, off, n in _entries(layout):
        if name not in arrays:
            raise FlashImageError(f"pack: array {name!r} of the layout is missing")
        a = np.asarray(arrays[name])
        if a.shape != shape or a.dtype.kind != dt.kind or a.dtype.itemsize != dt.itemsize:
            raise FlashImageError(f"pack: {name!r} is {a.dtype}{a.shape}, layout wants {dt}{shape}")
        out[off:off + n] = np.ascontiguousarray(a, dtype=dt).tobytes()
    return bytes(out)


def unpack_params(payload: bytes, layout: Layout, source: str = "payload") -> dict:
    if len(payload) != payload_size(layout):
        raise FlashImageError(f"{source}: payload has {len(payload)} bytes, the layout needs {payload_size(layout)}")
    return {name: np.frombuffer(payload, dt, int(np.prod(shape, dtype=np.int64)), off).reshape(shape).astype(dt.newbyteorder("="))
            for name, dt, shape, off, n in _entries(layout)}


def read_params(image: bytes, slot_size: int, layout: Layout, base: int = 0, source: str = "image") -> tuple[dict, Slot]:
    """The trained arrays of a flash dump: newest valid slot of this layout, unpacked. (arrays, slot)."""
    slot = newest_slot(image, slot_size, layout_id(layout), base, source)
    return unpack_params(slot.payload, layout, f"{source} slot {slot.index}"), slot


def c_layout(layout: Layout, prefix: str = "MT_PARAMS") -> str:
    """C #defines of a payload layout for generated code: layout id, payload size, each array's offset and size.
    Generated firmware packs its trained arrays at these offsets; unpack_params reads them back on the host."""
    def ident(name):
        return re.sub(r"[^0-9A-Za-z]+", "_", name).strip("_").upper()

    lines = ["/* payload layout of the persisted parameters (microtrain.persist.c_layout) */",
             f"#define {prefix}_LAYOUT_ID 0x{layout_id(layout):08x}u",
             f"#define {prefix}_PAYLOAD_SIZE {payload_size(layout)}u"]
    seen = {}
    for name, dt, shape, off, n in _entries(layout):
        key = f"{prefix}_{ident(name)}"
        if key in seen:
            raise FlashImageError(f"c_layout: {name!r} and {seen[key]!r} map to the same C name {key}")
        seen[key] = name
        lines.append(f"#define {key}_OFFSET {off}u /* {dt.name} {list(shape)} */")
        lines.append(f"#define {key}_BYTES {n}u")
    return "\n".join(lines) + "\n"


# ----- ctypes harness ---------------------------------------------------------------------------------------
class _Flash(ctypes.Structure):
    _fields_ = [("ctx", ctypes.c_void_p), ("page_size", ctypes.c_uint32), ("prog_unit", ctypes.c_uint32),
                ("erase_page", ctypes.c_void_p), ("program", ctypes.c_void_p), ("read", ctypes.c_void_p)]


class _Policy(ctypes.Structure):
    _fields_ = [("min_steps", ctypes.c_uint32), ("min_seconds", ctypes.c_uint32), ("max_saves", ctypes.c_uint32)]


class PersistState(ctypes.Structure):
    """Mirror of mt_persist_t (field order must match mt_persist.h)."""

    _fields_ = [("flash", ctypes.c_void_p), ("base", ctypes.c_uint32), ("slot_size", ctypes.c_uint32),
                ("layout_id", ctypes.c_uint32), ("policy", _Policy), ("newest_slot", ctypes.c_int32),
                ("seq", ctypes.c_uint32), ("newest_len", ctypes.c_uint32), ("last_step", ctypes.c_uint32),
                ("last_time_s", ctypes.c_uint32), ("saves_this_boot", ctypes.c_uint32),
                ("rejected_slots", ctypes.c_uint32), ("ready", ctypes.c_uint32)]


CFLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O2", "-fPIC", "-shared", "-DMT_PERSIST_HOST_SIM"]


def compile_library(out_dir: Path, extra_flags=()) -> Path:
    """gcc mt_persist.c (with the flash simulator) into out_dir/libmt_persist.so."""
    gcc = shutil.which("gcc")
    if gcc is None:
        raise RuntimeError("gcc is needed to build the host persistence harness")
    out = Path(out_dir) / "libmt_persist.so"
    cmd = [gcc, *CFLAGS, *extra_flags, f"-I{KERNELS}", str(C_SOURCE), "-o", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"compiling {C_SOURCE} failed:\n{' '.join(cmd)}\n{res.stderr}")
    return out


class PersistLib:
    """mt_persist.c + its simulated flash, loaded through ctypes. The simulator is one global flash per library."""

    def __init__(self, path: Path | None = None):
        if path is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="mt_persist_")
            path = compile_library(Path(self._tmp.name))
        lib = ctypes.CDLL(str(path))
        P = ctypes.POINTER(PersistState)
        u32, i32, vp = ctypes.c_uint32, ctypes.c_int, ctypes.c_void_p
        sig = {
            "mt_persist_init": (i32, [P, u32]),
            "mt_persist_load": (i32, [P, vp, u32, ctypes.POINTER(u32)]),
            "mt_persist_save": (i32, [P, vp, u32, u32, u32]),
            "mt_persist_due": (i32, [P, u32, u32]),
            "mt_persist_save_if_due": (i32, [P, vp, u32, u32, u32]),
            "mt_persist_capacity": (u32, [P]),
            "mt_crc32": (u32, [u32, ctypes.c_char_p, u32]),
            "mt_sim_flash": (vp, [u32, u32, u32]),
            "mt_sim_cut": (None, [ctypes.c_int64, ctypes.c_int64, i32]),
            "mt_sim_powered": (i32, []),
            "mt_sim_memory": (ctypes.POINTER(ctypes.c_uint8), []),
            "mt_sim_erase_count": (u32, [u32]),
        }
        for name, (res, args) in sig.items():
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = res, args
        self.lib = lib
        self.flash = None
        self.flash_size = 0

    # ----- simulated flash
    def new_flash(self, size: int, page_size: int, prog_unit: int = 1):
        self.flash = self.lib.mt_sim_flash(size, page_size, prog_unit)
        if not self.flash:
            raise ValueError(f"bad simulated flash geometry: size {size}, page {page_size}")
        self.flash_size = size
        return self.flash

    def memory(self) -> np.ndarray:
        """A writable numpy view of the simulated flash bytes."""
        ptr = self.lib.mt_sim_memory()
        return np.ctypeslib.as_array(ptr, shape=(self.flash_size,))

    def cut(self, prog_bytes: int = -1, erase_bytes: int = -1, torn: bool = False):
        self.lib.mt_sim_cut(prog_bytes, erase_bytes, int(torn))

    def power_on(self):
        self.lib.mt_sim_cut(-1, -1, 0)

    @property
    def powered(self) -> bool:
        return bool(self.lib.mt_sim_powered())

    def erase_count(self, page: int) -> int:
        return int(self.lib.mt_sim_erase_count(page))

    # ----- the store
    def store(self, slot_size: int, layout: int = 0, base: int = 0, min_steps=0, min_seconds=0, max_saves=0) -> PersistState:
        st = PersistState()
        st.flash, st.base, st.slot_size, st.layout_id = self.flash, base, slot_size, layout
        st.policy = _Policy(min_steps, min_seconds, max_saves)
        return st

    def init(self, st: PersistState, now: int = 0) -> int:
        return self.lib.mt_persist_init(ctypes.byref(st), now)

    def load(self, st: PersistState, cap: int) -> tuple[int, bytes]:
        buf = ctypes.create_string_buffer(max(cap, 1))
        n = ctypes.c_uint32(0)
        rc = self.lib.mt_persist_load(ctypes.byref(st), buf, cap, ctypes.byref(n))
        return rc, buf.raw[:n.value]

    def save(self, st: PersistState, payload: bytes, step: int = 0, now: int = 0) -> int:
        return self.lib.mt_persist_save(ctypes.byref(st), payload, len(payload), step, now)

    def save_if_due(self, st: PersistState, payload: bytes, step: int = 0, now: int = 0) -> int:
        return self.lib.mt_persist_save_if_due(ctypes.byref(st), payload, len(payload), step, now)

    def due(self, st: PersistState, step: int, now: int) -> bool:
        return bool(self.lib.mt_persist_due(ctypes.byref(st), step, now))

    def capacity(self, st: PersistState) -> int:
        return int(self.lib.mt_persist_capacity(ctypes.byref(st)))

    def crc32(self, data: bytes, crc: int = 0) -> int:
        return int(self.lib.mt_crc32(crc, data, len(data)))

"""Host target: build a generated project with gcc and drive it from Python (ctypes).

    lib = build_host(project_dir)            # -> path of libmt.so (cached by source hash)
    model = HostModel(lib)                    # ctypes wrapper: infer / train_step / export / import
Sanitizer builds (AddressSanitizer + UndefinedBehaviorSanitizer) use the stdio harness
mt_host_main.c as an executable instead: an ASan runtime cannot be loaded into Python by ctypes
without preloading it.
"""
from __future__ import annotations

import ctypes
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np

from ..errors import MicrotrainError

SANITIZE_FLAGS = "-O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all"


class HostBuildError(MicrotrainError):
    """gcc/make failed on a generated project (the message holds the compiler output)."""


def _make(project: Path, target: str, cflags: str, cc: str = "gcc", ldflags: str = "") -> None:
    if shutil.which("make") is None or shutil.which(cc) is None:
        raise HostBuildError(f"building {project} needs `make` and `{cc}` on PATH")
    cmd = ["make", "-s", "-C", str(project), target, f"CC={cc}", f"CFLAGS={cflags}", f"LDFLAGS={ldflags}"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise HostBuildError(f"{' '.join(cmd)} failed:\n{r.stdout}\n{r.stderr}")


_NATIVE: dict[str, bool] = {}


def native_opt(cc: str = "gcc") -> str:
    """The default host optimisation: -O3, plus -march=native where the compiler accepts it (the library
    is built on the machine that loads it; 1.5x faster training steps on AVX-512). Safe for the arithmetic:
    the Makefile's -ffp-contract=off forbids FMA contraction, and without -ffast-math no float sum is
    reordered, so results stay bit-identical to NumPy."""
    if cc not in _NATIVE:
        try:
            r = subprocess.run([cc, "-march=native", "-E", "-x", "c", "-"], input="", capture_output=True,
                               text=True, timeout=30)
            _NATIVE[cc] = r.returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            _NATIVE[cc] = False
    return "-O3 -march=native" if _NATIVE[cc] else "-O3"


def build_host(project, opt: str | None = None, cc: str = "gcc", flash_sim: bool = True) -> Path:
    """Build libmt.so (warning-free under -std=c99 -Wall -Wextra -Werror, the Makefile's flags).
    opt: optimisation flags (default native_opt()). flash_sim links mt_persist's RAM flash simulator
    (host only) so HostModel can save/load parameters."""
    project = Path(project)
    opt = native_opt(cc) if opt is None else opt
    _make(project, "libmt.so", opt + (" -DMT_PERSIST_HOST_SIM" if flash_sim else ""), cc)
    return project / "libmt.so"


def build_host_sanitized(project, cc: str = "gcc") -> Path:
    """Build the stdio harness with ASan + UBSan (errors abort with a non-zero exit)."""
    project = Path(project)
    _make(project, "mt_host", SANITIZE_FLAGS, cc, "-fsanitize=address,undefined")
    return project / "mt_host"


class HostModel:
    """A built libmt.so. Arrays are numpy int8 NHWC per sample; batches loop over samples."""

    def __init__(self, lib_path):
        self.path = Path(lib_path)
        self.lib = ctypes.CDLL(str(self.path.resolve()))
        L = self.lib
        i8p, u8p = ctypes.POINTER(ctypes.c_int8), ctypes.POINTER(ctypes.c_uint8)
        L.mt_init.restype = None
        L.mt_infer.argtypes = [i8p, i8p]
        L.mt_infer.restype = None
        L.mt_train_step.argtypes = [i8p, ctypes.c_int32, ctypes.POINTER(ctypes.c_float)]
        L.mt_train_step.restype = ctypes.c_int32
        L.mt_set_lr.argtypes = [ctypes.c_float]
        L.mt_set_rounding_state.argtypes = [ctypes.c_uint32, ctypes.c_uint32]
        L.mt_get_step.restype = ctypes.c_uint32
        L.mt_params_size.restype = ctypes.c_uint32
        L.mt_export_params.argtypes = [u8p]
        L.mt_import_params.argtypes = [u8p, ctypes.c_uint32]
        L.mt_import_params.restype = ctypes.c_int32
        self._bind_optional()
        header = (self.path.parent / "mt_model.h").read_text()
        self.defines = {  # integer macros; "(-2)" style negative values included
            line.split()[1]: int(line.split()[2].strip("()")) for line in header.splitlines()
            if line.startswith("#define MT_") and len(line.split()) == 3
            and line.split()[2].strip("()").lstrip("-").isdigit()
        }
        ids = [ln.split()[2] for ln in header.splitlines() if ln.startswith("#define MT_PARAMS_LAYOUT_ID ")]
        self.layout_id = int(ids[0].rstrip("uU"), 16) if ids else None
        self.input_size = self.defines["MT_INPUT_SIZE"]
        self.num_classes = self.defines["MT_NUM_CLASSES"]
        L.mt_init()

    def _bind_optional(self) -> None:
        """Guard and persistence entry points (absent from projects generated before they existed)."""
        L, vp, u32 = self.lib, ctypes.c_void_p, ctypes.c_uint32
        for name, res, args in (("mt_guard_skipped", u32, []), ("mt_save_params", ctypes.c_int32, [vp, u32]),
                                ("mt_save_params_if_due", ctypes.c_int32, [vp, u32]),
                                ("mt_load_params", ctypes.c_int32, [vp])):
            if hasattr(L, name):
                fn = getattr(L, name)
                fn.restype, fn.argtypes = res, args

    def _require(self, name: str):
        if not hasattr(self.lib, name):
            raise MicrotrainError(f"{self.path}: {name} missing (project generated by an older microtrain?)")
        return getattr(self.lib, name)

    @property
    def guard_skipped(self) -> int:
        """Training steps whose update the divergence guard skipped (non-finite loss) since mt_init."""
        return int(self._require("mt_guard_skipped")())

    # ----- persistence on the simulated flash (build_host(flash_sim=True))
    def flash(self, size: int, page_size: int, prog_unit: int = 1):
        """The library's RAM flash simulator as a persist.PersistLib (same process image: shared state)."""
        from ..persist import PersistLib

        self._require("mt_sim_flash")
        pl = PersistLib(self.path.resolve())
        pl.new_flash(size, page_size, prog_unit)
        return pl

    def store(self, pl, slot_size: int, base: int = 0, min_steps: int = 0, min_seconds: int = 0, max_saves: int = 0):
        """A configured, initialised mt_persist_t for this model's parameter layout (mt_persist_init rc checked)."""
        st = pl.store(slot_size, self.layout_id, base, min_steps, min_seconds, max_saves)
        rc = pl.init(st, 0)
        if rc != 0:
            raise MicrotrainError(f"{self.path}: mt_persist_init returned {rc} (slot size {slot_size}, base {base})")
        return st

    def save_params(self, store, now_s: int = 0, if_due: bool = False) -> int:
        """mt_save_params (or mt_save_params_if_due): the MT_PERSIST_* return code."""
        fn = self._require("mt_save_params_if_due" if if_due else "mt_save_params")
        return int(fn(ctypes.addressof(store), int(now_s) & 0xFFFFFFFF))

    def load_params(self, store) -> int:
        """mt_load_params: MT_PERSIST_OK (0) after importing the newest valid version, else the code."""
        return int(self._require("mt_load_params")(ctypes.addressof(store)))

    def reset(self) -> None:
        self.lib.mt_init()

    def _sample(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.dtype != np.int8:  # a silent cast would wrap uint8 pixels (200 -> -56) or truncate floats
            if x.dtype.kind not in "iu" or (x.size and (x.min() < -128 or x.max() > 127)):
                lo_hi = f" with values in [{x.min()}, {x.max()}]" if x.dtype.kind in "iu" and x.size else ""
                raise MicrotrainError(f"{self.path}: input must be int8 (pixel k -> k - 128), got {x.dtype}{lo_hi}")
        x = np.ascontiguousarray(x, dtype=np.int8)
        if x.size != self.input_size:
            raise MicrotrainError(f"{self.path}: input must have {self.input_size} int8 values, got {x.size}")
        return x

    def infer(self, x: np.ndarray) -> np.ndarray:
        """int8 logits (N, K) for an int8 NHWC batch (N, H, W, C)."""
        out = np.zeros((len(x), self.num_classes), np.int8)
        for i, sample in enumerate(x):
            s = self._sample(sample)
            self.lib.mt_infer(s.ctypes.data_as(ctypes.POINTER(ctypes.c_int8)),
                              out[i].ctypes.data_as(ctypes.POINTER(ctypes.c_int8)))
        return out

    def train_step(self, x: np.ndarray, label: int) -> float:
        """One step; returns the loss. A non-finite loss is returned as is: the C guard skipped the update."""
        s = self._sample(x)
        loss = ctypes.c_float(0.0)
        rc = self.lib.mt_train_step(s.ctypes.data_as(ctypes.POINTER(ctypes.c_int8)), int(label), ctypes.byref(loss))
        if rc == -2:  # MT_TRAIN_SKIPPED_NONFINITE
            return float(loss.value)
        if rc != 0:
            raise MicrotrainError(f"{self.path}: mt_train_step returned {rc} (label {label}, or no training compiled in)")
        return float(loss.value)

    def fit(self, x: np.ndarray, labels, epochs: int = 1, lr=None, seed: int = 0, progress=None) -> list[float]:
        """Train on a whole dataset through the generated code, batch 1: `epochs` passes in a seeded
        random order. `lr`: None (keep the current rate), a float, or a function step -> lr (e.g. a
        schedule over the global update counter). Returns the mean loss of each epoch."""
        labels = np.asarray(labels)
        if len(x) != len(labels):
            raise MicrotrainError(f"{len(x)} images but {len(labels)} labels")
        rng = np.random.default_rng(seed)
        means = []
        for epoch in range(int(epochs)):
            total = 0.0
            for k, i in enumerate(rng.permutation(len(x))):
                if lr is not None:
                    self.set_lr(lr(self.step) if callable(lr) else lr)
                total += self.train_step(x[i], int(labels[i]))
                if progress is not None:
                    progress(epoch * len(x) + k + 1)
            means.append(total / max(len(x), 1))
        return means

    def accuracy(self, x: np.ndarray, labels) -> float:
        """Top-1 accuracy of the generated code's int8 logits on a dataset."""
        return float(np.mean(self.infer(x).argmax(1) == np.asarray(labels))) if len(x) else float("nan")

    def set_lr(self, lr: float) -> None:
        self.lib.mt_set_lr(float(lr))

    def set_rounding_state(self, seed: int, step: int) -> None:
        self.lib.mt_set_rounding_state(int(seed) & 0xFFFFFFFF, int(step) & 0xFFFFFFFF)

    @property
    def step(self) -> int:
        return int(self.lib.mt_get_step())

    def export_params(self) -> bytes:
        n = self.lib.mt_params_size()
        buf = (ctypes.c_uint8 * max(n, 1))()
        self.lib.mt_export_params(buf)
        return bytes(buf)[:n]

    def import_params(self, blob: bytes) -> None:
        buf = (ctypes.c_uint8 * max(len(blob), 1)).from_buffer_copy(blob or b"\0")
        if self.lib.mt_import_params(buf, len(blob)) != 0:
            raise MicrotrainError(f"{self.path}: parameter blob has {len(blob)} bytes, expected {self.lib.mt_params_size()}")


def run_harness(exe, records: list[tuple]) -> bytes:
    """Drive mt_host (stdio harness): records are ('i', x) | ('t', label, x) | ('e',)."""
    payload = bytearray()
    for r in records:
        if r[0] == "i":
            payload += b"i" + np.ascontiguousarray(r[1], np.int8).tobytes()
        elif r[0] == "t":
            payload += b"t" + struct.pack("=i", int(r[1])) + np.ascontiguousarray(r[2], np.int8).tobytes()
        elif r[0] == "e":
            payload += b"e"
        else:
            raise ValueError(f"unknown harness record {r[0]!r}")
    p = subprocess.run([str(exe)], input=bytes(payload), capture_output=True,
                       env={"ASAN_OPTIONS": "detect_leaks=0:abort_on_error=0", "UBSAN_OPTIONS": "print_stacktrace=1",
                            "PATH": "/usr/bin:/bin"})
    if p.returncode != 0:
        raise HostBuildError(f"{exe} exited with {p.returncode}:\n{p.stderr.decode(errors='replace')[-4000:]}")
    return p.stdout

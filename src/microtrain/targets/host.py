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


def build_host(project, opt: str = "-O3", cc: str = "gcc") -> Path:
    """Build libmt.so (warning-free under -std=c99 -Wall -Wextra -Werror, the Makefile's flags)."""
    project = Path(project)
    _make(project, "libmt.so", opt, cc)
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
        header = (self.path.parent / "mt_model.h").read_text()
        self.defines = {
            line.split()[1]: int(line.split()[2]) for line in header.splitlines()
            if line.startswith("#define MT_") and len(line.split()) == 3 and line.split()[2].lstrip("-").isdigit()
        }
        self.input_size = self.defines["MT_INPUT_SIZE"]
        self.num_classes = self.defines["MT_NUM_CLASSES"]
        L.mt_init()

    def reset(self) -> None:
        self.lib.mt_init()

    def _sample(self, x: np.ndarray) -> np.ndarray:
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
        s = self._sample(x)
        loss = ctypes.c_float(0.0)
        rc = self.lib.mt_train_step(s.ctypes.data_as(ctypes.POINTER(ctypes.c_int8)), int(label), ctypes.byref(loss))
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

"""Building kernels into a shared library for ctypes tests, and the ctypes mirrors of the kernel structs
(codegen/kernels/mt_kernels.h): one mirror per struct, so a field change is made in one place."""
from __future__ import annotations

import ctypes
import subprocess
from pathlib import Path

from microtrain.codegen.emit import C_FLAGS, KERNEL_DIR


def build_shared(out: Path, sources, opt: str = "-O2") -> ctypes.CDLL:
    """gcc the sources (kernel files and test wrappers) with the project's C flags into `out` and load it."""
    subprocess.run(["gcc", *C_FLAGS.split(), *opt.split(), "-fPIC", "-shared", f"-I{KERNEL_DIR}",
                    *map(str, sources), "-o", str(out)], check=True, capture_output=True, text=True)
    return ctypes.CDLL(str(out))


def ptr(a) -> ctypes.c_void_p:
    """A NumPy array's data pointer for a kernel argument."""
    return a.ctypes.data_as(ctypes.c_void_p)


class ConvParams(ctypes.Structure):  # mt_conv_params
    _fields_ = [(n, ctypes.c_int32) for n in ("in_h", "in_w", "in_c", "out_h", "out_w", "out_c", "kh", "kw",
                                              "stride", "pad", "x_zero", "y_zero", "dilation")]

    def __init__(self, *fields, dilation=1, **named):
        """Positional fields in declaration order; dilation defaults to 1 (a dense window), not ctypes' 0."""
        super().__init__(*fields, **named)
        if len(fields) < 13:
            self.dilation = dilation


class WeightS8(ctypes.Structure):  # mt_weight_s8: frozen and trained input-channel blocks
    _fields_ = [("frozen", ctypes.c_void_p), ("frozen_idx", ctypes.c_void_p), ("n_frozen", ctypes.c_int32),
                ("train", ctypes.c_void_p), ("train_idx", ctypes.c_void_p), ("n_train", ctypes.c_int32)]

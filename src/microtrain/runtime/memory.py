"""Keep freed memory in the process: the simulation's training step allocates and frees the same large
temporaries (batch x map x channels float32 arrays) every step, and glibc's defaults hand each one back to
the kernel and fault it in again (zeroed pages) on the next step.

retain_freed_memory() sets glibc's malloc so that arrays up to 32 MB come from the heap (mmap threshold;
larger ones still use mmap) and freed heap memory is kept (trim threshold 1 GB): the pages are reused
instead of faulted in again. It changes no number, only where arrays live; the process keeps its peak heap
(benchmarks/bench_sim_step.py --retain-memory measures it). Linux with glibc only; elsewhere a no-op.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
MMAP_THRESHOLD = 32 * 2**20  # glibc's largest allowed value on 64-bit
TRIM_THRESHOLD = 2**30
_done = False


def retain_freed_memory() -> bool:
    """Set glibc's malloc thresholds once per process; True if they are set (False: not glibc)."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _done = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _done

"""A small progress bar on stderr (no dependency); silent when stderr is not a terminal unless forced."""
from __future__ import annotations

import os
import sys
import time


class Progress:
    def __init__(self, total: int, desc: str = "", enabled: bool | None = None, stream=None):
        self.total, self.desc, self.n = max(int(total), 0), desc, 0
        self.stream = stream or sys.stderr
        if enabled is None:
            enabled = self.stream.isatty() or bool(os.environ.get("MICROTRAIN_PROGRESS"))
        self.enabled = enabled
        self.start = self.last = time.monotonic()
        self.postfix = ""

    def update(self, n: int = 1, postfix: str | None = None):
        self.n = min(self.n + n, self.total) if self.total else self.n + n
        if postfix is not None:
            self.postfix = postfix
        now = time.monotonic()
        if self.enabled and (now - self.last > 0.1 or self.n >= self.total):
            self.last = now
            self._draw(now)

    def _draw(self, now):
        frac = self.n / self.total if self.total else 0.0
        bar = "#" * int(24 * frac)
        rate = self.n / max(now - self.start, 1e-9)
        self.stream.write(f"\r{self.desc} [{bar:<24}] {self.n}/{self.total} {rate:.1f}/s {self.postfix}\x1b[K")
        self.stream.flush()

    def close(self):
        if self.enabled:
            self._draw(time.monotonic())
            self.stream.write("\n")
            self.stream.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

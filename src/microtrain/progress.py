"""Progress on stderr: a tqdm bar on a terminal; when stderr is not a terminal (a log file, CI, a pipe),
plain lines, the first after FIRST_AFTER seconds and then every PLAIN_EVERY seconds, so a long step shows signs of life
without filling a log with carriage returns. Lines printed while a bar runs go through `write` (tqdm.write),
which keeps them off the bar. MICROTRAIN_PROGRESS=bar forces the bar, =0 silences progress."""
from __future__ import annotations

import os
import sys
import time

PLAIN_EVERY = float(os.environ.get("MICROTRAIN_PROGRESS_EVERY", 5.0))
FIRST_AFTER = min(2.0, PLAIN_EVERY)


def write(message: str, stream=None) -> None:
    """Print a line to stderr without breaking an active progress bar."""
    from tqdm import tqdm

    tqdm.write(message, file=stream or sys.stderr)


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class Progress:
    """Progress(total, desc, enabled): enabled False: silent; None: bar on a terminal, plain lines
    otherwise; True: the same as None (kept for callers that force progress on)."""

    def __init__(self, total: int, desc: str = "", enabled: bool | None = None, stream=None):
        self.total, self.desc, self.n = max(int(total), 0), desc, 0
        self.stream = stream or sys.stderr
        mode = os.environ.get("MICROTRAIN_PROGRESS", "").lower()
        self.enabled = enabled is not False and mode not in ("0", "off", "no")
        self.bar = None
        self.start = self.last = time.monotonic()
        self.lines = 0
        self.postfix = ""
        if not self.enabled:
            return
        if _isatty(self.stream) or mode == "bar":
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, desc=desc, file=self.stream, leave=True, dynamic_ncols=True)

    def update(self, n: int = 1, postfix: str | None = None):
        self.n += n
        if postfix is not None:
            self.postfix = postfix
        if self.bar is not None:
            self.bar.update(n)
            if postfix is not None:
                self.bar.set_postfix_str(postfix, refresh=False)
        elif self.enabled and time.monotonic() - self.last >= (PLAIN_EVERY if self.lines else FIRST_AFTER):
            self._line()

    def _line(self, final: bool = False):
        now = time.monotonic()
        self.last = now
        self.lines += 1
        rate = self.n / max(now - self.start, 1e-9)
        total = f"/{self.total}" if self.total else ""
        tail = f" {self.postfix}" if self.postfix else ""
        word = " done" if final else ""
        print(f"{self.desc}:{word} {self.n}{total} ({rate:.1f}/s, {now - self.start:.0f} s){tail}",
              file=self.stream, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif self.enabled and self.lines and self.n:  # a plain run that printed progress ends with a line
            self._line(final=True)
        self.enabled = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

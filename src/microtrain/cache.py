"""Where microtrain keeps what it can rebuild (compiled helper libraries, feature caches): $MICROTRAIN_CACHE, else
$XDG_CACHE_HOME/microtrain, else ~/.cache/microtrain."""
from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    base = os.environ.get("MICROTRAIN_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "microtrain")
    return Path(base)

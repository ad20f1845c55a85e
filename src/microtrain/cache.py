"""Where microtrain keeps what it can rebuild (compiled helper libraries, feature caches): $MICROTRAIN_CACHE, else
$XDG_CACHE_HOME/microtrain, else ~/.cache/microtrain; and the one rule for host-compiled helper libraries (the
QEMU instruction counter, the simulation's hot loops): built once per source text and flags, stored atomically."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path


def cache_root() -> Path:
    base = os.environ.get("MICROTRAIN_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "microtrain")
    return Path(base)


def host_shared_library(stem: str, source: Path, headers: tuple[Path, ...] = (), flag_choices=((),),
                        cache_dir: Path | None = None) -> tuple[Path | None, str]:
    """`source` compiled with the host's gcc into `<cache>/<stem>-<hash>.so`, the hash covering the source, its
    `headers` and the flags, so an edit rebuilds it and an unchanged one is reused. Each entry of `flag_choices`
    is tried in order (e.g. -march=native, then without); returns (library, "") or (None, why it failed)."""
    text = source.read_bytes() + b"".join(h.read_bytes() for h in headers)
    cache = Path(cache_dir) if cache_dir else cache_root()
    why = ""
    for flags in flag_choices:
        digest = hashlib.sha256(text + " ".join(flags).encode()).hexdigest()[:16]
        lib = cache / f"{stem}-{digest}.so"
        if lib.exists():  # a library already built needs no compiler
            return lib, ""
        cc = shutil.which("gcc") or shutil.which("cc")
        if cc is None:
            return None, "no host C compiler (gcc or cc) on PATH"
        cache.mkdir(parents=True, exist_ok=True)
        tmp = lib.with_suffix(f".{os.getpid()}.tmp")
        try:
            r = subprocess.run([cc, "-shared", "-fPIC", *flags, "-o", str(tmp), str(source)], capture_output=True,
                               text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as e:
            tmp.unlink(missing_ok=True)
            why = f"compiling {source} failed: {e}"
            continue
        if r.returncode == 0:
            os.replace(tmp, lib)  # atomic: a concurrent process sees the whole library or none
            return lib, ""
        tmp.unlink(missing_ok=True)
        why = f"compiling {source} failed:\n{r.stderr.strip()}"
    return None, why

"""Checks every command runs on its arguments BEFORE any work: argparse `type=` functions for numbers and
sizes (one rule per kind of value, the same in every command), and output-path checks (a file or folder
microtrain is about to write is checked for a writable parent, the right kind, and for files microtrain
did not write, which it never replaces without --force and never deletes).

A folder microtrain writes as a whole (a checkpoint, a compiled project) carries a marker that tells its
own files from a user's: a checkpoint's state.json (format "microtrain-checkpoint"), a project's
MARKER file (the generated files and their SHA-256, so a user's edit of one of them is noticed)."""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
from pathlib import Path

from .errors import MicrotrainError


class OutputError(MicrotrainError):
    """An output path cannot be written, or would replace files microtrain did not write."""


# ----- argparse types ------------------------------------------------------------------------------------
def _number(text: str, kind):
    try:
        v = kind(text)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if kind is float and not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return v


def positive_int(text: str) -> int:
    """An integer >= 1."""
    v = _number(text, int)
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def nonnegative_int(text: str) -> int:
    """An integer >= 0."""
    v = _number(text, int)
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {v}")
    return v


def seed(text: str) -> int:
    """A seed: an integer in [0, 2**32)."""
    v = _number(text, int)
    if not 0 <= v < 2**32:
        raise argparse.ArgumentTypeError(f"expected a seed in [0, 2**32), got {v}")
    return v


def positive_float(text: str) -> float:
    """A finite number > 0 (learning rates, timeouts)."""
    v = _number(text, float)
    if not v > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text}")
    return v


def nonnegative_float(text: str) -> float:
    """A finite number >= 0 (momentum, warm-up epochs)."""
    v = _number(text, float)
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text}")
    return v


def momentum(text: str) -> float:
    """SGD momentum: a number in [0, 1)."""
    v = _number(text, float)
    if not 0 <= v < 1:
        raise argparse.ArgumentTypeError(f"expected a momentum in [0, 1), got {text}")
    return v


def eval_count(text: str) -> int:
    """How many held-out images: an integer >= 0, or -1 for all."""
    v = _number(text, int)
    if v < -1:
        raise argparse.ArgumentTypeError(f"expected an image count >= 0 (or -1: all), got {v}")
    return v


def classes_count(text: str) -> int:
    """A class count: >= 2 (a 1-class head cannot learn anything)."""
    v = _number(text, int)
    if v < 2:
        raise argparse.ArgumentTypeError(f"expected a class count >= 2, got {v}")
    return v


def memory_size(text: str) -> str:
    """A memory budget (100KB, 49.8KB, 1MB, bytes), checked now, returned as typed (names use it)."""
    from .errors import BudgetError
    from .scheme_search.memory import parse_budget

    if text.strip().startswith("-"):
        raise argparse.ArgumentTypeError(f"a memory budget must be greater than zero, got {text}")
    try:
        parse_budget(text)
    except BudgetError as e:
        raise argparse.ArgumentTypeError(str(e).replace("budget ", "", 1)) from None
    return text


def sram_budget(text: str) -> int | None:
    """An SRAM budget in KB -> bytes; 'none' -> None (compile --sram-budget)."""
    if text.lower() == "none":
        return None
    kb = _number(text, float)
    if not kb > 0:
        raise argparse.ArgumentTypeError(f"expected a size in KB > 0 or 'none', got {text}")
    return int(kb * 1024)


# argparse reads "--budget -5KB" as an option followed by another option: join such a pair before parsing,
# so a negative value reaches the type check (and its clear message) like "--budget=-5KB" does
_NEGATIVE = re.compile(r"^-(\d|\.\d)")


def join_negative_values(argv: list[str], value_options: set[str]) -> list[str]:
    out, i = [], 0
    while i < len(argv):
        a = argv[i]
        if a in value_options and i + 1 < len(argv) and _NEGATIVE.match(argv[i + 1]):
            out.append(f"{a}={argv[i + 1]}")
            i += 2
            continue
        out.append(a)
        i += 1
    return out


# ----- output paths ---------------------------------------------------------------------------------------
def _writable_parent(path: Path, flag: str) -> None:
    """The nearest existing ancestor of path must be a writable folder (missing parents are created later)."""
    parent = path.parent
    while not parent.exists():
        if parent == parent.parent:
            break
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"{flag} {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{flag} {path}: folder {parent} is not writable")


def is_microtrain_json(path: Path) -> bool:
    """A JSON file microtrain wrote: an object whose "format" starts with "microtrain"."""
    try:
        if path.stat().st_size > 64 << 20:
            return False
        doc = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(doc, dict) and str(doc.get("format", "")).startswith("microtrain")


def check_output_file(path, flag: str, *, force: bool = False, owned=is_microtrain_json, companions=()) -> Path:
    """Check that `path` can be written as a file: not a folder, a writable (existing or creatable) parent,
    and, if it exists, a file microtrain wrote (`owned(path)`) unless force. `companions`: suffixes of
    files written next to it (a graph's .npz), checked the same way."""
    path = Path(path)
    for p in (path, *(path.with_suffix(s) for s in companions)):
        if p.is_dir():
            raise OutputError(f"{flag} {p}: is a folder, expected a file path")
        _writable_parent(p, flag)
        if p.exists():
            if not os.access(p, os.W_OK):
                raise OutputError(f"{flag} {p}: exists and is read-only")
            if not force and not (owned(p) if p == path else owned(path)):
                raise OutputError(f"{flag} {p}: exists and was not written by microtrain; "
                                  "remove it, choose another path, or give --force to replace it")
    return path


def prepare_output_file(path) -> Path:
    """Create the missing parents of an output file (after check_output_file, when the work is done)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def check_output_dir(path, flag: str, *, force: bool = False, owned=None, what: str = "microtrain output") -> Path:
    """Check that `path` can be written as a folder: not a file, writable, and either missing, empty,
    or `owned(path)` (a folder microtrain wrote) unless force. With force a foreign folder is written
    into, but its other files are kept."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{flag} {path}: is a file, expected a folder")
    if path.is_dir():
        if not os.access(path, os.W_OK | os.X_OK):
            raise OutputError(f"{flag} {path}: folder is not writable")
        if any(path.iterdir()) and not force and not (owned and owned(path)):
            raise OutputError(f"{flag} {path}: folder is not empty and is not a {what}; microtrain never "
                              "deletes files it did not write: choose an empty or new folder, or give --force "
                              "to write into it (other files are kept)")
    else:
        _writable_parent(path, flag)
    return path


# ----- compiled projects: which files microtrain generated ------------------------------------------------
MARKER = ".microtrain-project.json"
MARKER_FORMAT = "microtrain-project"
# build products are regenerated by every build (`microtrain run` too): not tracked
_BUILD_SUFFIXES = {".o", ".so", ".elf", ".map", ".bin", ".a", ".d", ".hex"}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tracked(rel: Path) -> bool:
    return not (rel.parts[0].startswith("build") or rel.suffix in _BUILD_SUFFIXES or rel.name == MARKER)


def read_project_marker(folder) -> dict | None:
    path = Path(folder) / MARKER
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(doc, dict) or doc.get("format") != MARKER_FORMAT or not isinstance(doc.get("files"), dict):
        return None
    return doc


def edited_project_files(folder) -> list[str]:
    """Generated files of a marked project that changed since microtrain wrote them (a user's edits)."""
    folder = Path(folder)
    doc = read_project_marker(folder) or {"files": {}}
    return sorted(rel for rel, digest in doc["files"].items()
                  if (folder / rel).is_file() and _digest(folder / rel) != digest)


def foreign_project_files(folder) -> list[str]:
    """Files in a folder that no compile wrote: not in the marker, not a build product."""
    folder = Path(folder)
    known = set((read_project_marker(folder) or {"files": {}})["files"])
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if p.is_file() and _tracked(p.relative_to(folder)) and str(p.relative_to(folder)) not in known)


def snapshot(folder) -> dict[str, str]:
    """{relative path: SHA-256} of the tracked files under folder (before a compile writes into it)."""
    folder = Path(folder)
    if not folder.is_dir():
        return {}
    return {str(p.relative_to(folder)): _digest(p) for p in folder.rglob("*")
            if p.is_file() and _tracked(p.relative_to(folder))}


def write_project_marker(folder, before: dict[str, str], extra: dict | None = None) -> dict[str, list[str]]:
    """Record the files this compile wrote (new or changed since `before`, plus generated files it rewrote
    unchanged); files that were there before and that no compile wrote stay foreign. Returns
    {"replaced": [...], "written": [...]} for the report."""
    folder = Path(folder)
    old = (read_project_marker(folder) or {"files": {}})["files"]
    now = snapshot(folder)
    files, replaced = {}, []
    for rel, digest in now.items():
        if rel not in before or before[rel] != digest or rel in old:
            files[rel] = digest
            if rel in before:
                replaced.append(rel)
    doc = {"format": MARKER_FORMAT, "files": dict(sorted(files.items())), **(extra or {})}
    (folder / MARKER).write_text(json.dumps(doc, indent=1) + "\n")
    return {"replaced": sorted(replaced), "written": sorted(files)}

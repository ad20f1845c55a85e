"""Schemes shipped as package data (sparse/schemes/*.json): upstream's MCUNet schemes and baselines.
`load_scheme(arg)` accepts a path or a fixture name, so `--scheme mcunet-5fps-99kb` works anywhere."""
from __future__ import annotations

from importlib import resources
from pathlib import Path

from ..errors import SchemeError
from .scheme import UpdateScheme


def _folder():
    return resources.files("microtrain.sparse").joinpath("schemes")


def fixture_names() -> list[str]:
    return sorted(p.name[: -len(".json")] for p in _folder().iterdir() if p.name.endswith(".json"))


def load_fixture(name: str) -> UpdateScheme:
    f = _folder().joinpath(f"{name}.json")
    if not f.is_file():
        raise SchemeError(f"no shipped scheme {name!r}; shipped: {', '.join(fixture_names())}")
    with resources.as_file(f) as path:
        return UpdateScheme.load(path)


def load_scheme(arg) -> UpdateScheme:
    """A scheme from a JSON file path, else from a shipped fixture name."""
    p = Path(arg)
    if p.exists() or p.suffix == ".json":
        if not p.exists():
            raise SchemeError(f"{p}: no such scheme file (shipped schemes: {', '.join(fixture_names())})")
        return UpdateScheme.load(p)
    return load_fixture(str(arg))

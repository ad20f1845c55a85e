"""Resolve a model argument to a Graph: a path (.pkl upstream file, .json microtrain graph) or the
name of an upstream model found in models_dir(): $MICROTRAIN_MODELS, else $MICROTRAIN_SHARED/models,
else ../shared/models from the cwd. One variable, MICROTRAIN_SHARED, is enough for models and data
(shared_dir() / "data"); MICROTRAIN_MODELS stays the more specific override."""
from __future__ import annotations

import os
from pathlib import Path

from .errors import ModelFormatError
from .ir.graph import Graph

UPSTREAM_MODELS = ("mcunet-5fps", "mbv2-w0.35", "proxyless-w0.3")


def shared_dir() -> Path:
    return Path(os.environ.get("MICROTRAIN_SHARED") or "../shared")


def models_dir() -> Path:
    return Path(os.environ.get("MICROTRAIN_MODELS") or shared_dir() / "models")


def resolve_model_path(arg) -> Path:
    p = Path(arg)
    if p.exists():
        return p
    for candidate in (models_dir() / f"{arg}.pkl", models_dir() / str(arg)):
        if candidate.exists():
            return candidate
    raise ModelFormatError(
        f"{arg}: no such model file, and no {arg}.pkl in {models_dir()} (set MICROTRAIN_SHARED to the folder "
        f"holding models/, or MICROTRAIN_MODELS to the folder holding the upstream models {', '.join(UPSTREAM_MODELS)})"
    )


def load_model(arg) -> Graph:
    path = resolve_model_path(arg)
    if path.suffix == ".json":
        from .ir.serialize import load_graph

        return load_graph(path)
    from .frontends.mcunet_pkl import load_mcunet_pkl

    return load_mcunet_pkl(path)

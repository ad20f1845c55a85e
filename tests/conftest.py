"""Shared fixtures. Third-party assets are read from ../shared (override: MICROTRAIN_SHARED); under CI
(CI=true) they must be present, so a missing asset fails instead of skipping."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MICROTRAIN_SHARED", REPO.parent / "shared"))
MODELS_DIR = Path(os.environ.get("MICROTRAIN_MODELS", SHARED / "models"))
DATA_DIR = Path(os.environ.get("MICROTRAIN_DATA", SHARED / "data"))
MODEL_NAMES = ("mcunet-5fps", "mbv2-w0.35", "proxyless-w0.3")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(path: Path) -> Path:
    if not path.exists():
        if IN_CI:
            pytest.fail(f"required asset {path} is missing under CI")
        pytest.skip(f"asset {path} not present (set MICROTRAIN_SHARED)")
    return path


def model_path(name: str) -> Path:
    return require(MODELS_DIR / f"{name}.pkl")


def like_mcunet_49kb(graph):
    """A scheme of the shape of upstream's mcunet-5fps 49 KB one for another model (benchmarks/bench_memory.py's
    sparse scheme for mbv2-w0.35 and proxyless-w0.3)."""
    from microtrain.sparse.scheme import UpdateScheme

    n = len(graph.indexed_convs())
    return UpdateScheme(20, {n - 18: 0.25, n - 15: 0.5, n - 12: 0.5}, name="like-mcunet-49kb")


def hymenoptera() -> Path:
    return require(DATA_DIR / "hymenoptera_data")


_GRAPHS = {}


@pytest.fixture(params=MODEL_NAMES)
def upstream_graph(request):
    """Each upstream int8 model as a Graph (loaded once per session)."""
    from microtrain.frontends.mcunet_pkl import load_mcunet_pkl

    name = request.param
    if name not in _GRAPHS:
        _GRAPHS[name] = load_mcunet_pkl(model_path(name))
    return _GRAPHS[name]


@pytest.fixture
def mcunet():
    from microtrain.frontends.mcunet_pkl import load_mcunet_pkl

    if "mcunet-5fps" not in _GRAPHS:
        _GRAPHS["mcunet-5fps"] = load_mcunet_pkl(model_path("mcunet-5fps"))
    return _GRAPHS["mcunet-5fps"]

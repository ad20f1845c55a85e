"""Shared fixtures. Third-party assets are read from ../shared (override: MICROTRAIN_SHARED); under CI
(CI=true) they must be present, so a missing asset fails instead of skipping."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
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


def tiny_hymenoptera(out: Path, n_train: int, n_val: int) -> Path:
    """out/{train,val}/{ants,bees}: the first n_train / n_val images of each class, as symlinks (no copies)."""
    return tiny_image_folder(hymenoptera(), out, n_train, n_val)


def tiny_image_folder(root: Path, out: Path, n_train: int, n_val: int) -> Path:
    """out/{train,val}/<class>: the first n_train / n_val images of each class folder of root/{train,val},
    as symlinks (no copies)."""
    for split, n in (("train", n_train), ("val", n_val)):
        for cls in sorted(c.name for c in (root / split).iterdir() if c.is_dir()):
            d = out / split / cls
            d.mkdir(parents=True)
            for f in sorted(f for f in (root / split / cls).iterdir() if f.suffix in (".jpg", ".png"))[:n]:
                (d / f.name).symlink_to(f)
    return out


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


@pytest.fixture
def one_blas_thread():
    """Single-threaded BLAS for NumPy references: threaded GEMMs thrash on a shared 2-core machine."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


# ----- small hand-built int8 graphs ------------------------------------------------------------------------
def int8_conv(rng, name, x, y, cin, cout, k, stride=1, groups=1, role=None):
    """A conv2d node with random int8 weights, int32 bias and per-channel scales."""
    from microtrain.ir.graph import Node

    attrs = {"kernel": (k, k), "stride": stride, "padding": (k - 1) // 2, "groups": groups}
    if role:
        attrs["role"] = role
    return Node(name, "conv2d", [x], y, attrs, {
        "weight": rng.integers(-127, 128, (cout, cin // groups, k, k)).astype(np.int8),
        "bias": rng.integers(-2000, 2000, cout).astype(np.int32),
        "w_scales": rng.uniform(0.003, 0.02, cout).astype(np.float32)})


def int8_graph(name, nodes, quant, input_shape=(8, 8, 3)):
    """A validated int8 Graph from nodes and {tensor: (scale, zero point)} (input "input", output "logits")."""
    from microtrain.ir.graph import Graph, QuantParams, TensorSpec
    from microtrain.ir.validate import infer_shapes, validate

    tensors = {t: TensorSpec(t, input_shape if t == "input" else (0, 0, 0), "int8", QuantParams(float(s), int(z)))
               for t, (s, z) in quant.items()}
    return validate(infer_shapes(Graph(name, "int8", "input", "logits", tensors, nodes)))


def small_graph(seed=0):
    """A 5-conv int8 graph: strided conv, a residual whose input fans out, depthwise, pooling, classifier."""
    from microtrain.ir.graph import Node

    rng = np.random.default_rng(seed)

    def conv(*args, **kw):
        return int8_conv(rng, *args, **kw)

    nodes = [
        conv("conv0", "input", "c0", 3, 8, 3, stride=2),
        conv("pw1", "c0", "p1", 8, 16, 1),
        conv("dw", "p1", "d", 16, 16, 3, groups=16),
        conv("pw2", "d", "p2", 16, 8, 1),
        Node("res", "add", ["c0", "p2"], "r"),
        Node("pool", "global_avg_pool", ["r"], "pooled"),
        conv("head", "pooled", "logits", 8, 3, 1, role="classifier"),
    ]
    # irregular scales: round ones (0.08, 0.07 / 0.1) make exact .5 ties common, where float32 and
    # float64 reference arithmetic legitimately round differently
    quant = {"input": (2 / 255, 0), "c0": (0.0813, 3), "p1": (0.0497, -128), "d": (0.0611, -128),
             "p2": (0.0733, -5), "r": (0.1029, 2), "pooled": (0.1029, 2), "logits": (0.0517, 1)}
    return int8_graph("small", nodes, quant)

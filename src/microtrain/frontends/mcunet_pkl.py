"""Safe loader of the upstream int8 MCU model files (mit-han-lab/tiny-training mcu_models/*.pkl).

The files are torch.save zip archives whose archive/data.pkl is a protocol-2 pickle of plain
containers and numpy arrays. A pickle can run code, so we unpickle with an allow-list of exactly the
numpy reconstruction globals; anything else (os.system, builtins.eval, ...) is refused before it is
called. Errors name the file and the layer.
"""
from __future__ import annotations

import codecs
import io
import pickle
import pickletools
import reprlib
import warnings
import zipfile
from pathlib import Path

import numpy as np

from ..errors import GraphError, ModelFormatError, UnsafePickleError
from ..ir.graph import Graph, Node, QuantParams, TensorSpec
from ..ir.validate import infer_shapes, validate


def _numpy_reconstruct():
    try:  # numpy >= 2 moved the module; both spellings map to the same function
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy", "dtype"): lambda: np.dtype,
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("_codecs", "encode"): lambda: codecs.encode,
}


class _AllowListUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, source: str):
        super().__init__(io.BytesIO(data))
        self.source = source

    def find_class(self, module, name):
        factory = ALLOWED_GLOBALS.get((module, name))
        if factory is None:
            raise UnsafePickleError(
                f"{self.source}: refused to load: the pickle references {module}.{name}, which is not one of "
                f"the allowed numpy reconstruction globals; the file may be malicious and nothing was executed"
            )
        return factory()

    def persistent_load(self, pid):
        raise UnsafePickleError(
            f"{self.source}: refused to load: the pickle references external storage ({pid!r}), "
            "e.g. torch tensors; only numpy arrays are allowed"
        )


def _check_memo_indices(data: bytes, path) -> None:
    """Refuse memo indices a pickle of this size cannot need: the C unpickler allocates (and clears) a memo
    table up to the largest index, so one LONG_BINPUT 2**31 in a 4 KB file would eat gigabytes (a hang)."""
    try:
        with warnings.catch_warnings():  # genops warns on bad string escapes; the loader reports those itself
            warnings.simplefilter("ignore")
            ops = list(pickletools.genops(data))
        for op, arg, _pos in ops:
            if op.name in ("PUT", "BINPUT", "LONG_BINPUT") and not 0 <= int(arg) <= len(data):
                raise ModelFormatError(f"{path}: corrupt pickle data (memo index {arg} in a {len(data)}-byte pickle)")
    except ModelFormatError:
        raise
    except Exception as e:  # genops raises ValueError and friends on garbage
        raise ModelFormatError(f"{path}: corrupt pickle data ({type(e).__name__}: {e})") from None


def read_model_dict(path) -> dict:
    """Unpickle an upstream model file safely and return its top-level dict."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as z:
            members = [m for m in z.namelist() if m.endswith("/data.pkl") or m == "data.pkl"]
            if not members:
                raise ModelFormatError(f"{path}: not an upstream model archive (no data.pkl member)")
            data = z.read(members[0])
    except FileNotFoundError:
        raise ModelFormatError(f"{path}: file not found") from None
    except (zipfile.BadZipFile, EOFError, OSError, zipfile.LargeZipFile) as e:
        raise ModelFormatError(f"{path}: truncated or corrupt archive ({e})") from None
    except Exception as e:  # zlib.error, RuntimeError (encrypted member), ...
        if isinstance(e, ModelFormatError):
            raise
        raise ModelFormatError(f"{path}: cannot read archive ({type(e).__name__}: {e})") from None
    _check_memo_indices(data, path)
    try:
        obj = _AllowListUnpickler(data, str(path)).load()
    except UnsafePickleError:
        raise
    except Exception as e:  # pickle raises a zoo of types on corrupt data
        raise ModelFormatError(f"{path}: corrupt pickle data ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict):
        raise ModelFormatError(f"{path}: top level must be a dict, got {type(obj).__name__}")
    return obj


# ----- conversion to the IR ---------------------------------------------------------------------------
def _get(d, key, where, types=None):
    if not isinstance(d, dict) or key not in d:
        raise ModelFormatError(f"{where}: missing key {key!r}")
    v = d[key]
    if types is not None and not isinstance(v, types):
        raise ModelFormatError(f"{where}: {key!r} has type {type(v).__name__}, expected {types}")
    return v


def _scalar(d, key, where, kind):
    v = _get(d, key, where)
    if isinstance(v, np.ndarray) and v.size == 1:
        v = v.item()
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise ModelFormatError(f"{where}: {key!r} must be a number, got {type(v).__name__}")
    try:  # int(nan), int(inf), float(10**400) raise bare ValueError / OverflowError
        v = kind(v)
    except (ValueError, OverflowError):
        raise ModelFormatError(f"{where}: {key!r} must be a finite number, got {v}") from None
    if kind is float and not (np.isfinite(v) and v > 0):
        raise ModelFormatError(f"{where}: {key!r} must be a finite positive scale, got {v}")
    if kind is int and not -128 <= v <= 127:
        raise ModelFormatError(f"{where}: {key!r} must be an int8 zero point, got {v}")
    return v


def _array(d, key, where, dtype, shape):
    v = _get(d, key, where)
    if not isinstance(v, np.ndarray):
        raise ModelFormatError(f"{where}: {key!r} must be a numpy array, got {type(v).__name__}")
    if v.dtype != dtype:
        raise ModelFormatError(f"{where}: {key!r} must be {np.dtype(dtype).name}, got {v.dtype}")
    if tuple(v.shape) != tuple(shape):
        raise ModelFormatError(f"{where}: {key!r} has shape {tuple(v.shape)}, expected {tuple(shape)}")
    return np.ascontiguousarray(v)


class _Builder:
    def __init__(self, source: str, resolution: int | None):
        self.source = source
        self.tensors: dict[str, TensorSpec] = {}
        self.nodes: list[Node] = []
        self.resolution = resolution

    def tensor(self, name, quant: QuantParams) -> str:
        self.tensors[name] = TensorSpec(name, (0, 0, 0), "int8", quant)
        return name

    def conv(self, layer_name: str, entry, x: str, classifier=False) -> str:
        where = f"{self.source}: layer {layer_name}"
        if not isinstance(entry, dict):
            raise ModelFormatError(f"{where}: conv entry must be a dict, got {type(entry).__name__}")
        cin = int(_get(entry, "in_channel", where, (int, np.integer)))
        cout = int(_get(entry, "out_channel", where, (int, np.integer)))
        ks = _get(entry, "kernel_size", where, (tuple, list, int))
        try:
            k = (ks, ks) if isinstance(ks, int) else tuple(int(v) for v in ks)
        except (TypeError, ValueError, OverflowError):
            raise ModelFormatError(f"{where}: kernel_size must be an int or a pair of ints, got {reprlib.repr(ks)}") from None
        if len(k) != 2 or k[0] != k[1] or k[0] < 1 or k[0] % 2 == 0:
            raise ModelFormatError(f"{where}: kernel_size must be an odd square, got {reprlib.repr(ks)}")
        stride = int(_get(entry, "stride", where, (int, np.integer)))
        groups = int(_get(entry, "groups", where, (int, np.integer)))
        if stride < 1 or groups < 1 or cin % groups or cout % groups or cin < 1 or cout < 1:
            raise ModelFormatError(f"{where}: inconsistent stride/groups/channels ({stride}, {groups}, {cin}, {cout})")
        p = _get(entry, "params", where, dict)
        weight = _array(p, "weight", where, np.int8, (cout, cin // groups, k[0], k[1]))
        bias = _array(p, "bias", where, np.int32, (cout,))
        w_scales = _array(p, "w_scales", where, np.float32, (cout,))
        if not np.all(np.isfinite(w_scales)) or np.any(w_scales <= 0):
            raise ModelFormatError(f"{where}: w_scales must be finite and positive")
        xq = QuantParams(_scalar(p, "x_scale", where, float), _scalar(p, "x_zero", where, int))
        yq = QuantParams(_scalar(p, "y_scale", where, float), _scalar(p, "y_zero", where, int))
        self._check_input_quant(x, xq, where)
        if cin != self._channels(x):
            raise ModelFormatError(f"{where}: in_channel {cin} but the previous layer gives {self._channels(x)} channels")
        out = self.tensor(f"{layer_name}.out", yq)
        attrs = {"kernel": k, "stride": stride, "padding": (k[0] - 1) // 2, "groups": groups}
        if classifier:
            attrs["role"] = "classifier"
        self.nodes.append(Node(layer_name, "conv2d", [x], out, attrs,
                               {"weight": weight, "bias": bias, "w_scales": w_scales}))
        self._channels_of[out] = cout
        for key, expect in (("in_shape", "in"), ("out_shape", "out")):
            if key in entry and entry[key] is not None:
                self.declared_hw[(layer_name, expect)] = int(_get(entry, key, where, (int, np.integer)))
        return out

    def _check_input_quant(self, x: str, xq: QuantParams, where: str):
        have = self.tensors[x].quant
        if not (np.isclose(have.scale, xq.scale, rtol=1e-6) and have.zero_point == xq.zero_point):
            raise ModelFormatError(
                f"{where}: input quantisation (scale {xq.scale}, zero {xq.zero_point}) disagrees with the "
                f"producing layer's output (scale {have.scale}, zero {have.zero_point})"
            )

    def _channels(self, x):
        return self._channels_of[x]


def model_to_graph(obj: dict, source: str, name: str | None = None) -> Graph:
    """Convert the upstream dict to an int8 Graph; errors name the file and the layer."""
    b = _Builder(source, None)
    b._channels_of = {}
    b.declared_hw = {}
    fc = _get(obj, "first_conv", source, dict)
    where = f"{source}: layer first_conv"
    fcp = _get(fc, "params", where, dict)
    res = int(_get(fc, "in_shape", where, (int, np.integer)))
    in_q = QuantParams(_scalar(fcp, "x_scale", where, float), _scalar(fcp, "x_zero", where, int))
    x = b.tensor("input", in_q)
    b._channels_of[x] = int(_get(fc, "in_channel", where, (int, np.integer)))
    x = b.conv("first_conv", fc, x)
    blocks = _get(obj, "blocks", source, list)
    for i, blk in enumerate(blocks):
        bw = f"{source}: block {i}"
        if not isinstance(blk, dict):
            raise ModelFormatError(f"{bw}: must be a dict, got {type(blk).__name__}")
        if blk.get("se") is not None:
            raise ModelFormatError(f"{bw}: squeeze-excitation is not supported")
        block_in = x
        for part in ("pointwise1", "depthwise", "pointwise2"):
            if blk.get(part) is not None:
                x = b.conv(f"blocks.{i}.{part}", blk[part], x)
        res_entry = blk.get("residual")
        if res_entry is not None:
            rw = f"{source}: layer blocks.{i}.residual"
            rp = _get(res_entry, "params", rw, dict)
            skip_q = QuantParams(_scalar(rp, "x_scale", rw, float), _scalar(rp, "x_zero", rw, int))
            b._check_input_quant(block_in, skip_q, rw)
            if b._channels(block_in) != b._channels(x):
                raise ModelFormatError(f"{rw}: skip has {b._channels(block_in)} channels, branch {b._channels(x)}")
            yq = QuantParams(_scalar(rp, "y_scale", rw, float), _scalar(rp, "y_zero", rw, int))
            out = b.tensor(f"blocks.{i}.residual.out", yq)
            b.nodes.append(Node(f"blocks.{i}.residual", "add", [block_in, x], out, {}, {}))
            b._channels_of[out] = b._channels(x)
            x = out
    if obj.get("feature_mix") is not None:
        raise ModelFormatError(f"{source}: feature_mix layers are not supported")
    pooled = b.tensor("pool.out", b.tensors[x].quant)
    b.nodes.append(Node("pool", "global_avg_pool", [x], pooled, {}, {}))
    b._channels_of[pooled] = b._channels(x)
    cls = _get(obj, "classifier", source, dict)
    out = b.conv("classifier", cls, pooled, classifier=True)
    tensors = b.tensors
    tensors["input"].shape = (res, res, b._channels_of["input"])
    graph = Graph(name or Path(source).stem, "int8", "input", out, tensors, b.nodes,
                  {"source": str(source), "format": "mcunet-pkl"})
    try:
        infer_shapes(graph)
        validate(graph)
    except GraphError as e:
        raise ModelFormatError(f"{source}: {e}") from None
    for (layer, which), hw in b.declared_hw.items():
        node = graph.node(layer)
        t = node.inputs[0] if which == "in" else node.output
        if graph.tensors[t].shape[0] != hw:
            raise ModelFormatError(
                f"{source}: layer {layer}: declared {which}_shape {hw} but the graph gives {graph.tensors[t].shape[0]}"
            )
    return graph


def load_mcunet_pkl(path, name: str | None = None) -> Graph:
    """Load an upstream int8 model file as an int8 Graph (safely: see module docstring)."""
    return model_to_graph(read_model_dict(path), str(path), name)

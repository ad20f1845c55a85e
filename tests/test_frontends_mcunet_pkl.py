"""The upstream-model loader refuses malicious pickles without running them, and names the file and
layer at fault in malformed ones."""
from __future__ import annotations

import io
import pickle
import zipfile

import numpy as np
import pytest

from conftest import model_path
from microtrain.errors import ModelFormatError, UnsafePickleError
from microtrain.frontends.mcunet_pkl import load_mcunet_pkl, read_model_dict


def write_archive(path, payload: bytes):
    """A torch.save-like zip: archive/data.pkl (+ the version member torch writes)."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", payload)
        z.writestr("archive/version", "3\n")
    return path


class Exploit:
    """Pickles to "call func(*args) on load" (the classic __reduce__ attack)."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def exploits(marker):
    import builtins
    import os
    import subprocess

    touch = f"open({str(marker)!r}, 'w').write('pwned')"
    return {
        "os.system": Exploit(os.system, f"touch {marker}"),
        "builtins.eval": Exploit(builtins.eval, touch),
        "builtins.exec": Exploit(builtins.exec, touch),
        "subprocess.call": Exploit(subprocess.call, ["touch", str(marker)]),
    }


@pytest.mark.parametrize("kind", ["os.system", "builtins.eval", "builtins.exec", "subprocess.call"])
@pytest.mark.parametrize("nested", [False, True])
def test_malicious_pickle_is_refused_without_side_effects(tmp_path, kind, nested):
    marker = tmp_path / "marker"
    evil = exploits(marker)[kind]
    # nested: the exploit hides inside an otherwise plausible model dict, after real numpy arrays
    obj = {"first_conv": {"params": {"weight": np.zeros((2, 3, 3, 3), np.int8), "x": evil}}} if nested else evil
    path = write_archive(tmp_path / "evil.pkl", pickle.dumps(obj, protocol=2))
    with pytest.raises(UnsafePickleError) as e:
        load_mcunet_pkl(path)
    assert str(path) in str(e.value)
    assert not marker.exists(), "the pickle's payload ran"


def test_external_storage_reference_is_refused(tmp_path):
    class WithPid(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", "FloatStorage", "0", "cpu", 4) if isinstance(obj, bytes) else None

    buf = io.BytesIO()
    WithPid(buf, protocol=2).dump({"first_conv": b"tensor"})
    path = write_archive(tmp_path / "tensor.pkl", buf.getvalue())
    with pytest.raises(UnsafePickleError):
        load_mcunet_pkl(path)


@pytest.fixture(scope="module")
def upstream_bytes():
    return model_path("mcunet-5fps").read_bytes()


def test_truncated_archive(tmp_path, upstream_bytes):
    path = tmp_path / "truncated.pkl"
    path.write_bytes(upstream_bytes[: len(upstream_bytes) // 2])
    with pytest.raises(ModelFormatError, match="truncated.pkl"):
        load_mcunet_pkl(path)


def test_corrupt_bytes(tmp_path, upstream_bytes):
    data = bytearray(upstream_bytes)
    mid = len(data) // 2
    data[mid : mid + 64] = bytes((b ^ 0x5A) for b in data[mid : mid + 64])
    path = tmp_path / "corrupt.pkl"
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFormatError, match="corrupt.pkl"):
        load_mcunet_pkl(path)


def test_not_an_archive(tmp_path):
    path = tmp_path / "garbage.pkl"
    path.write_bytes(b"\x00\x01 definitely not a zip" * 100)
    with pytest.raises(ModelFormatError, match="garbage.pkl"):
        load_mcunet_pkl(path)


def rewritten(tmp_path, name, edit):
    """The real model dict, edited, saved back as a torch.save-like archive."""
    obj = read_model_dict(model_path("mcunet-5fps"))
    edit(obj)
    return write_archive(tmp_path / name, pickle.dumps(obj, protocol=2))


def test_missing_key_names_file_and_layer(tmp_path):
    path = rewritten(tmp_path, "nobias.pkl", lambda o: o["blocks"][2]["depthwise"]["params"].pop("bias"))
    with pytest.raises(ModelFormatError) as e:
        load_mcunet_pkl(path)
    msg = str(e.value)
    assert "nobias.pkl" in msg and "blocks.2.depthwise" in msg and "bias" in msg


def test_inconsistent_weight_shape_names_file_and_layer(tmp_path):
    def edit(o):
        p = o["blocks"][5]["pointwise1"]["params"]
        p["weight"] = p["weight"][:, :-1]  # one input channel short

    path = rewritten(tmp_path, "badshape.pkl", edit)
    with pytest.raises(ModelFormatError) as e:
        load_mcunet_pkl(path)
    msg = str(e.value)
    assert "badshape.pkl" in msg and "blocks.5.pointwise1" in msg and "weight" in msg


def test_clean_rewrite_still_loads(tmp_path):
    """Control for the two tests above: the unedited rewrite loads and equals the original."""
    path = rewritten(tmp_path, "same.pkl", lambda o: None)
    a, b = load_mcunet_pkl(path), load_mcunet_pkl(model_path("mcunet-5fps"))
    assert [n.name for n in a.nodes] == [n.name for n in b.nodes]
    assert all(np.array_equal(n.params["weight"], m.params["weight"]) for n, m in zip(a.convs(), b.convs()))


def test_handwritten_protocol0_exploit_is_refused(tmp_path):
    marker = tmp_path / "marker"
    payload = f"cos\nsystem\n(S'touch {marker}'\ntR.".encode()
    with pytest.raises(UnsafePickleError, match="os.system"):
        load_mcunet_pkl(write_archive(tmp_path / "raw.pkl", payload))
    assert not marker.exists()

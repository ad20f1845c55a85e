"""`microtrain export TRAINED --tflite OUT.tflite` (issue 22, part 4): a graph trained from a .tflite model,
or a device's parameters, written back as the original flatbuffer with the trained numbers. The exported
file runs in LiteRT's reference interpreter (BUILTIN_REF, TFLite Micro's kernels) and gives microtrain's
int8 numbers on every tensor, bit for bit; it reads back through microtrain's reader as the trained graph."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
from test_cli_fuzz import run_cli
from test_tflite import model_inputs, reference_interpreter, tflite_path

from microtrain.codegen.lower_train import training_graph_for
from microtrain.frontends.tflite import load_tflite
from microtrain.frontends.tflite_export import ExportError, _check_quantization, export_tflite, source_file
from microtrain.ir.graph import QuantParams
from microtrain.ir.serialize import save_graph
from microtrain.quant import arith
from microtrain.quant.head import replace_head
from microtrain.runtime.forward import run_int8
from microtrain.runtime.training import TrainingRuntime
from microtrain.sparse.scheme import UpdateScheme

RESNET8, KWS = "ic_resnet8_cifar10_int8", "kws_dscnn_int8"
CIFAR_LABELS = np.array([3, 8, 6, 9])  # model_inputs' cat, ship, frog, truck


def trained(name, classes=None, steps=3, lr=0.01):
    """The model (with a new head of `classes`), a sparse scheme trained `steps` SGD steps in NumPy, inputs."""
    g = load_tflite(tflite_path(name))
    if classes:
        g = replace_head(g, classes)
    x = model_inputs(name, g)[:4]
    y = CIFAR_LABELS % g.num_classes
    n = len(g.indexed_convs())
    scheme = UpdateScheme(4, {n - 1: 1.0, n - 2: 0.5, n - 3: 0.25}, name="sparse")
    rt = TrainingRuntime(training_graph_for(g, scheme), seed=1)
    for t in range(steps):
        rt.train_step({g.input: x}, y, lr, t)
    return g, x


def assert_litert_equals_microtrain(data: bytes, graph, x) -> dict:
    """Every TFLite tensor microtrain computes, and the softmax output, equal in LiteRT (BUILTIN_REF) on each
    input; returns LiteRT's outputs."""
    it = reference_interpreter(data)
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    assert list(out["shape"]) == [1, graph.num_classes]
    outputs = []
    for xi in x:
        it.set_tensor(inp["index"], xi[None])
        it.invoke()
        ours = run_int8(graph, xi[None], keep=True)
        for ir, ks in graph.meta["tflite_tensors"].items():
            for k in ks:
                np.testing.assert_array_equal(it.get_tensor(k).reshape(-1), ours[ir].reshape(-1), err_msg=f"{ir} ({k})")
        probs = arith.softmax_int8_tflite(ours[graph.output].reshape(1, -1), graph.output_spec.quant.scale,
                                          graph.meta["softmax"]["beta"])
        np.testing.assert_array_equal(it.get_tensor(out["index"]), probs)
        outputs.append(it.get_tensor(out["index"]).copy())
    return {"softmax": np.concatenate(outputs)}


def assert_reimport_equals(data: bytes, graph):
    """The exported bytes read by microtrain's own reader: the trained graph's layers, parameters, scales
    and tensors."""
    from microtrain.frontends.tflite import tflite_to_graph

    back = tflite_to_graph(data, "exported")
    assert [(n.name, n.op, n.inputs, n.output, n.attrs) for n in back.nodes] == \
        [(n.name, n.op, n.inputs, n.output, n.attrs) for n in graph.nodes]
    for a, b in zip(back.nodes, graph.nodes):
        assert set(a.params) == set(b.params), a.name
        for k in a.params:
            assert a.params[k].dtype == b.params[k].dtype and np.array_equal(a.params[k], b.params[k]), (a.name, k)
    assert {k: (t.shape, t.quant) for k, t in back.tensors.items()} == \
        {k: (t.shape, t.quant) for k, t in graph.tensors.items()}


@pytest.mark.parametrize("name,classes", [(RESNET8, None), (RESNET8, 3), (KWS, 5)])
def test_export_round_trip_is_bit_exact(name, classes):
    """Trained in NumPy (the head and three convs, partly), exported, run in LiteRT: microtrain's numbers on
    every tensor. A new head (3 or 5 classes) changes the output shape; the trained layers differ from the
    source's (so writing the source's weights back would fail)."""
    g, x = trained(name, classes)
    data, path = source_file(g)
    out = export_tflite(g, data, str(path))
    assert out[:8] == data[:8] and len(out) >= len(data)
    assert_reimport_equals(out, g)
    got = assert_litert_equals_microtrain(out, g, x)
    source = load_tflite(path)
    changed = [n.name for n, s in zip(g.nodes, source.nodes) if n.params and
               (n.params["weight"].shape != s.params["weight"].shape or
                any(not np.array_equal(n.params[k], s.params[k]) for k in n.params))]
    assert len(changed) >= 3, changed
    if classes is None:  # same shapes: the file's size is the source's + the longer description
        assert len(out) - len(data) < 200
        assert got["softmax"].shape == (len(x), 10)


def test_new_head_keeps_per_tensor_head_quantisation_and_consistent_bias_scales():
    """ResNet-8's FULLY_CONNECTED has one weight scale: the new head's (one value for all rows) is written per
    tensor, its bias scale is input scale x weight scale, and its logits' quantisation is microtrain's."""
    from microtrain.frontends.tflite_reader import TfliteFile

    g, _ = trained(RESNET8, 4, steps=1)
    data, path = source_file(g)
    m = TfliteFile(export_tflite(g, data, str(path)), "exported")
    rec = g.meta["tflite_params"][g.classifier().name]
    w, b = m.info(rec["weight"], "w"), m.info(rec["bias"], "b")
    x = m.info(int(m.f.array(m.operators[rec["op"]], 6, np.int32, "in")[0]), "x")
    assert w["shape"] == (4, 64) and b["shape"] == (4,) and b["type"] == 2  # int32 bias stays int32
    assert len(w["scale"]) == 1 and w["scale"][0] == g.classifier().params["w_scales"][0]
    assert len(b["scale"]) == 1 and b["scale"][0] == np.float32(np.float64(x["scale"][0]) * np.float64(w["scale"][0]))
    assert list(b["zero_point"]) == [0] and list(w["zero_point"]) == [0]
    logits = m.info(int(m.f.array(m.operators[rec["op"]], 8, np.int32, "out")[0]), "y")
    assert logits["shape"] == (1, 4) and logits["scale"][0] == np.float32(g.output_spec.quant.scale)
    bad = g.copy()  # the consistency check fails when the bias scale is not input scale x weight scale
    bad.tensors[bad.classifier().inputs[0]].quant = QuantParams(2 * g.tensors[g.classifier().inputs[0]].quant.scale, -128)
    with pytest.raises(ExportError, match="inconsistent"):
        _check_quantization(m, bad, {g.classifier().name: rec})


def test_per_channel_head_is_written_per_channel():
    """person_detect's classifier is a 1x1 CONV_2D with per-channel scales: a new 3-class head keeps them per
    channel (quantized_dimension 0), RESHAPE's target shape and the SOFTMAX follow, and the file reads back
    as the trained graph (LiteRT refuses the source itself: TOCO's bias quantized_dimension, tests/test_tflite.py)."""
    from microtrain.frontends.tflite_reader import TfliteFile

    g = replace_head(load_tflite(tflite_path("person_detect_int8")), 3)
    head = g.classifier()
    head.params["weight"][:] = np.random.default_rng(0).integers(-9, 10, head.params["weight"].shape)
    head.params["bias"][:] = [5, -5, 100]
    data, path = source_file(g)
    out = export_tflite(g, data, str(path))
    assert_reimport_equals(out, g)
    m = TfliteFile(out, "exported")
    w = m.info(g.meta["tflite_params"][head.name]["weight"], "w")
    assert w["shape"] == (3, 1, 1, 256) and len(w["scale"]) == 3 and w["qdim"] == 0
    assert [m.info(i, "o")["shape"] for i in (int(m.outputs[0]),)] == [(1, 3)]


def test_export_from_device_parameters(tmp_path):
    """compile (host C) -> train steps in C -> the device's parameter blob -> `microtrain export --project`:
    LiteRT on the exported file gives the C build's logits, and microtrain's NumPy forward of the graph."""
    if shutil.which("gcc") is None or shutil.which("make") is None:
        pytest.skip("needs gcc and make")
    from microtrain.targets.host import HostModel

    path = tflite_path(RESNET8)
    proj, blob, out = tmp_path / "proj", tmp_path / "trained.bin", tmp_path / "device.tflite"
    code, err = run_cli(["compile", path, "--scheme", "head-only", "--classes", "3", "--target", "host", "--opt=-O1",
                         "--out", proj, "--lr", "0.05"])
    assert code == 0, err
    assert (proj / "model.json").exists() and (proj / "model.npz").exists()
    host = HostModel(proj / "libmt.so")
    g = load_tflite(path)
    x = model_inputs(RESNET8, g)
    for i in range(3):
        host.train_step(x[i], i % 3)
    blob.write_bytes(host.export_params())
    code, err = run_cli(["export", blob, "--project", proj, "--tflite", out])
    assert code == 0, err
    it = reference_interpreter(out.read_bytes())
    inp = it.get_input_details()[0]
    logits_index = load_tflite(out).meta["tflite_tensors"][g.output][0]
    want = host.infer(x)
    assert len(np.unique(want, axis=0)) > 1  # the zero head learned something that depends on the image
    for xi, w in zip(x, want):
        it.set_tensor(inp["index"], xi[None])
        it.invoke()
        np.testing.assert_array_equal(it.get_tensor(logits_index).reshape(-1), w)
    # the wrong project or a truncated blob is refused in one line
    blob.write_bytes(host.export_params()[:-4])
    code, err = run_cli(["export", blob, "--project", proj, "--tflite", tmp_path / "x.tflite"])
    assert code == 1 and "not the parameters of" in err and not (tmp_path / "x.tflite").exists()
    code, err = run_cli(["export", blob, "--tflite", tmp_path / "x.tflite"])
    assert code == 1 and "--project" in err


@pytest.fixture
def saved(tmp_path):
    """A graph trained from a copy of ResNet-8 in tmp_path, saved as trained.json (it records the copy)."""
    src = tmp_path / "resnet8.tflite"
    src.write_bytes(tflite_path(RESNET8).read_bytes())
    g = load_tflite(src)
    g.classifier().params["bias"] += 7  # "trained"
    save_graph(g, tmp_path / "trained.json")
    return tmp_path, src, g


def test_cli_export_writes_and_refuses_what_it_must(saved):
    tmp, src, g = saved
    out = tmp / "out.tflite"
    code, err = run_cli(["export", tmp / "trained.json", "--tflite", out])
    assert code == 0, err
    assert load_tflite(out).classifier().params["bias"].tolist() == g.classifier().params["bias"].tolist()
    assert run_cli(["export", tmp / "trained.json", "--tflite", out])[0] == 0  # its own file: replaced
    foreign = tmp / "foreign.tflite"
    foreign.write_bytes(src.read_bytes())  # a .tflite microtrain did not write
    code, err = run_cli(["export", tmp / "trained.json", "--tflite", foreign])
    assert code == 1 and "was not written by microtrain" in err and foreign.read_bytes() == src.read_bytes()
    assert run_cli(["export", tmp / "trained.json", "--tflite", foreign, "--force"])[0] == 0
    code, err = run_cli(["export", tmp / "trained.json", "--tflite", src, "--force"])
    assert code == 1 and "source" in err and len(err.strip().splitlines()) == 1
    code, err = run_cli(["export", src, "--tflite", tmp / "x.tflite"])
    assert code == 1 and "not a trained one" in err


def test_changed_or_missing_source_is_refused(saved):
    tmp, src, _ = saved
    out = tmp / "out.tflite"
    data = bytearray(src.read_bytes())
    data[-1] ^= 1
    src.write_bytes(bytes(data))
    code, err = run_cli(["export", tmp / "trained.json", "--tflite", out])
    assert code == 1 and "changed since" in err and "sha256" in err and not out.exists()
    src.unlink()
    code, err = run_cli(["export", tmp / "trained.json", "--tflite", out])
    assert code == 1 and "is missing" in err and "--source" in err and not out.exists()
    code, err = run_cli(["export", tmp / "trained.json", "--tflite", out, "--source", tflite_path(KWS)])
    assert code == 1 and "not the .tflite file" in err and not out.exists()  # another model
    code, err = run_cli(["export", tmp / "trained.json", "--tflite", out, "--source", tflite_path(RESNET8)])
    assert code == 0, err  # the original, moved: same sha256


def test_a_graph_that_is_not_the_source_network_is_refused(saved):
    from microtrain.frontends.tflite_export import export_to_file

    tmp, src, g = saved
    bad = g.copy()
    bad.node("op2_conv").attrs["stride"] = 2
    with pytest.raises(ExportError, match="op2_conv"):
        export_to_file(bad, tmp / "x.tflite")
    bad = g.copy()
    bad.node("op2_conv").params["w_scales"] = bad.node("op2_conv").params["w_scales"][:1].copy()
    with pytest.raises(ExportError, match="op2_conv"):
        export_to_file(bad, tmp / "x.tflite")
    other = g.copy()
    other.meta = {k: v for k, v in g.meta.items() if k != "tflite_file"}
    with pytest.raises(ExportError, match="train it again"):
        export_to_file(other, tmp / "x.tflite")
    other.meta = {}
    with pytest.raises(ExportError, match="not read from a .tflite"):
        export_to_file(other, tmp / "x.tflite")
    assert not (tmp / "x.tflite").exists()


def test_dilated_convs_export_round_trip(tmp_path):
    """A model with dilated CONV_2D and DEPTHWISE_CONV_2D (tests/tflite_builder.py), a new 2-class head and
    its three dilated convs trained: the exported file keeps every dilation factor (reads back as the
    trained graph, dilation attrs included), LiteRT computes microtrain's numbers on it, and a graph whose
    dilation changed is refused (export writes parameters, never operator options)."""
    from tflite_builder import dilated_model

    from microtrain.frontends.tflite_export import export_to_file
    from microtrain.frontends.tflite_reader import TfliteFile

    src = tmp_path / "dilated.tflite"
    src.write_bytes(dilated_model())
    g = replace_head(load_tflite(src), 2)
    x = np.random.default_rng(2).integers(-128, 128, (4, 12, 12, 4), dtype=np.int8)
    scheme = UpdateScheme(3, {0: 0.5, 1: 1.0, 2: 1.0}, name="dilated")
    rt = TrainingRuntime(training_graph_for(g, scheme), seed=1)
    for t in range(3):
        rt.train_step({g.input: x}, np.array([0, 1, 1, 0]), 0.05, t)
    source = load_tflite(src)
    assert all(not np.array_equal(g.node(n).params["weight"], source.node(n).params["weight"])
               for n in ("op0_conv", "op1_depthwise", "op2_conv"))
    out = export_to_file(g, tmp_path / "out.tflite").read_bytes()
    assert_reimport_equals(out, g)
    assert [g.node(n).attrs.get("dilation") for n in ("op0_conv", "op1_depthwise", "op2_conv")] == [2, 3, 2]
    m = TfliteFile(out, "exported")
    factors = [(m.f.scalar(m.f.child(m.operators[i], 12, getattr(m.tfl, cls), "o"), slot, "i", 1, "w"),
                m.f.scalar(m.f.child(m.operators[i], 12, getattr(m.tfl, cls), "o"), slot + 2, "i", 1, "h"))
               for i, cls, slot in ((0, "Conv2DOptions", 12), (1, "DepthwiseConv2DOptions", 14), (2, "Conv2DOptions", 12))]
    assert factors == [(2, 2), (3, 3), (2, 4)]  # (w, h) as written by the source, the 1-tap axis's factor too
    assert_litert_equals_microtrain(out, g, x)
    bad = g.copy()
    bad.node("op1_depthwise").attrs["dilation"] = 1
    with pytest.raises(ExportError, match="op1_depthwise"):
        export_to_file(bad, tmp_path / "bad.tflite")
    assert not (tmp_path / "bad.tflite").exists()


def test_one_bounded_read_for_the_reader_and_the_export(saved, monkeypatch, tmp_path):
    """Reading a model (frontends/tflite.py) and its export's source and target checks read a .tflite file through
    one helper: one size limit (lowered here below the file's size, it refuses the file everywhere), and only a
    regular file is read (a device's size says nothing: /dev/zero would never end)."""
    from microtrain.errors import ModelFormatError
    from microtrain.frontends import tflite
    from microtrain.frontends.tflite_export import export_to_file, is_microtrain_tflite

    tmp, src, g = saved
    out = tmp / "out.tflite"
    export_to_file(g, out)
    assert is_microtrain_tflite(out)
    monkeypatch.setattr(tflite, "MAX_FILE_BYTES", src.stat().st_size - 1)
    with pytest.raises(ModelFormatError, match="resnet8.tflite.*at most"):
        load_tflite(src)
    with pytest.raises(ExportError, match="resnet8.tflite.*at most"):
        source_file(g)
    assert not is_microtrain_tflite(out)
    monkeypatch.undo()
    for device in ("/dev/zero", tmp_path):
        with pytest.raises(ModelFormatError, match=f"{device}: not a regular file"):
            load_tflite(device)
        with pytest.raises(ExportError, match="not a regular file"):
            source_file(g, device)
        assert not is_microtrain_tflite(device)


def test_class_names_travel_with_the_exported_model(tmp_path):
    """A new head's class names are written into the model's description and read back (the last ones when
    a model is exported again); names that do not fit the head are a one-line format error."""
    from microtrain.errors import ModelFormatError
    from microtrain.frontends.tflite import tflite_to_graph

    g, _ = trained(RESNET8, 3)
    names = ["cat", "dog", 'frog "x"; microtrain labels ["a"]']
    g.meta["labels"] = names
    data, path = source_file(g)
    out = export_tflite(g, data, str(path))
    assert tflite_to_graph(out, "exported").meta["labels"] == names
    assert "labels" not in tflite_to_graph(data, "source").meta or \
        tflite_to_graph(data, "source").meta["labels"] != names
    # exported again (trained from the exported file): the newer names win
    exported = tmp_path / "once.tflite"
    exported.write_bytes(out)
    g2 = load_tflite(exported)
    assert g2.meta["labels"] == names
    g2.meta["labels"] = ["x", "y", "z"]
    out2 = export_tflite(g2, exported.read_bytes(), str(exported))
    assert tflite_to_graph(out2, "exported twice").meta["labels"] == ["x", "y", "z"]
    # a description whose names do not fit the head: refused, naming the file
    bad = out.replace(b'["cat","dog",', b'["cat",12345,')
    assert bad != out
    with pytest.raises(ModelFormatError, match="hostile.tflite.*class names"):
        tflite_to_graph(bad, "hostile.tflite")

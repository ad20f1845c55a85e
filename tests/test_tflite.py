"""int8 TensorFlow Lite models: the frontend (../shared/models/tflite) and the "tflite" rounding mode.

The reference is LiteRT's interpreter with its reference kernels (BUILTIN_REF, the kernels TFLite Micro
has; XNNPACK rounds differently), keeping every intermediate tensor, so each tensor is compared.
"""
from __future__ import annotations

import struct

import numpy as np
import pytest

from conftest import DATA_DIR, SHARED, require
from microtrain.errors import ModelFormatError, UnsupportedOpError
from microtrain.quant import arith

TFLITE_DIR = SHARED / "models" / "tflite"
MODELS = ("vww_96_int8", "ic_resnet8_cifar10_int8", "kws_dscnn_int8", "ad01_int8", "person_detect_int8")


def tflite_path(name):
    return require(TFLITE_DIR / f"{name}.tflite")


def patched_bias_quantized_dimension(data: bytes) -> bytes:
    """A copy of person_detect with the quantized_dimension of its 1-D (bias) tensors set to 0: LiteRT
    refuses the 3 TOCO wrote there (TFLite Micro ignores it). Only the reference interpreter gets it."""
    from microtrain.frontends.tflite_reader import TfliteFile

    m = TfliteFile(data, "person_detect")
    out = bytearray(data)
    patched = 0
    for idx, t in enumerate(m.tensors):
        info = m.info(idx, "patch")
        if len(info["shape"]) == 1 and info["qdim"] != 0:
            q = m.f.child(t, 12, m.tfl.QuantizationParameters, "patch")
            struct.pack_into("<i", out, m.f.field(q, 16, 4, "patch"), 0)
            patched += 1
    assert patched == 14  # the README's count
    return bytes(out)


def model_inputs(name, graph) -> np.ndarray:
    """Real images where the model sees images (int8 = pixel - 128), seeded random int8 elsewhere."""
    from microtrain.commands.predict import load_model_pixels
    from microtrain.quant.arith import pixels_to_int8

    if name == "ic_resnet8_cifar10_int8":
        files = [sorted((require(DATA_DIR / "cifar10" / "val") / c).iterdir())[0] for c in ("cat", "ship", "frog", "truck")]
    elif name in ("vww_96_int8", "person_detect_int8"):
        root = require(DATA_DIR / "person" / "val")
        files = sorted((root / "person").iterdir())[:3] + sorted((root / "no_person").iterdir())[:3]
    else:
        return np.random.default_rng(22).integers(-128, 128, (4, *graph.input_spec.shape), dtype=np.int8)
    res, channels = graph.resolution, graph.input_spec.shape[-1]
    return pixels_to_int8(np.stack([load_model_pixels(f, res, channels) for f in files]))


def reference_interpreter(data: bytes):
    litert = pytest.importorskip("ai_edge_litert.interpreter")  # the test extra installs it (CI fails, not skips)
    it = litert.Interpreter(model_content=data, experimental_op_resolver_type=litert.OpResolverType.BUILTIN_REF,
                            experimental_preserve_all_tensors=True)
    it.allocate_tensors()
    return it


@pytest.mark.parametrize("name", MODELS)
def test_int8_forward_equals_tflite_reference_on_every_tensor(name):
    from microtrain.frontends.tflite import load_tflite
    from microtrain.runtime.forward import run_int8

    path = tflite_path(name)
    graph = load_tflite(path)
    data = path.read_bytes()
    it = reference_interpreter(patched_bias_quantized_dimension(data) if name == "person_detect_int8" else data)
    inp = it.get_input_details()[0]
    activations = {inp["index"]} | {int(t) for op in it._get_ops_details() for t in op["outputs"]}
    compared = {k for ks in graph.meta["tflite_tensors"].values() for k in ks}
    softmax = graph.meta.get("softmax")
    assert compared | ({softmax["output_index"]} if softmax else set()) == activations  # every tensor is checked
    xs = model_inputs(name, graph)
    worst = {}
    for x in xs:
        it.set_tensor(inp["index"], x.reshape(inp["shape"]))
        it.invoke()
        ours = run_int8(graph, x[None], keep=True)
        for ir, ks in graph.meta["tflite_tensors"].items():
            for k in ks:
                d = np.abs(ours[ir].reshape(-1).astype(int) - it.get_tensor(k).reshape(-1).astype(int))
                worst[k] = max(worst.get(k, 0), int(d.max()))
        if softmax:
            probs = arith.softmax_int8_tflite(ours[graph.output].reshape(1, -1), graph.output_spec.quant.scale,
                                              softmax["beta"])
            d = np.abs(probs.astype(int) - it.get_tensor(softmax["output_index"]).reshape(1, -1).astype(int))
            worst[softmax["output_index"]] = max(worst.get(softmax["output_index"], 0), int(d.max()))
    assert len(worst) == len(activations)
    assert {k: v for k, v in worst.items() if v} == {}, f"{name}: max |difference| per TFLite tensor"


# ----- the rounding mode ------------------------------------------------------------------------------
def test_quantize_multiplier_and_fixed_point_primitives():
    m, s = arith.quantize_multiplier(np.array([0.5, 0.75, 1.0 - 2.0**-40, 3.0, 2.0**-40, 0.0]))
    assert m.tolist() == [2**30, 3 * 2**29, 2**30, 3 * 2**29, 0, 0]
    assert s.tolist() == [0, 0, 1, 2, 0, 0]  # 1 - 2**-40 rounds up to 2**31 -> 2**30, shift + 1
    assert arith.saturating_rounding_doubling_high_mul(arith.INT32_MIN, arith.INT32_MIN) == arith.INT32_MAX
    # 1.5 -> 2 but -1.5 -> -1: gemmlowp's nudge 1 - 2**30 for negative products, then C truncation
    assert arith.saturating_rounding_doubling_high_mul(np.array([3, -3]), 2**30).tolist() == [2, -1]
    assert arith.rounding_divide_by_pot(np.array([3, -3, 5, -5, 6, -6]), 1).tolist() == [2, -2, 3, -3, 3, -3]
    assert arith.rounding_divide_by_pot(np.array([-5, -6, -7]), 2).tolist() == [-1, -2, -2]
    # 2691 * 0.0209932..: double rounding 1807.8 -> 1808 -> 56.5 -> 57; single rounding 56 (ad01, FC 1)
    m, s = np.int64(1442659867), np.int64(-5)
    assert arith.multiply_by_quantized_multiplier(2691, m, s) == 57
    assert arith.multiply_by_quantized_multiplier_single(2691, m, s) == 56
    assert arith.round_half_away_div(np.array([5, -5, 4, -4, 7]), 2).tolist() == [3, -3, 2, -2, 4]
    assert arith.wrap_int32(np.int64(2**31)) == arith.INT32_MIN


def test_tflite_mode_is_chosen_per_node_and_float_mode_is_unchanged():
    """The same conv in both modes: the float mode is today's arithmetic, the tflite mode differs only by
    TFLite's rounding (at most 1 code here)."""
    from microtrain.frontends.tflite import load_tflite
    from microtrain.ops import conv

    g = load_tflite(tflite_path("kws_dscnn_int8"))
    node = g.nodes[2]  # first depthwise conv
    xq, yq = g.tensors[node.inputs[0]].quant, g.tensors[node.output].quant
    x = np.random.default_rng(0).integers(-128, 128, (2, *g.tensors[node.inputs[0]].shape), dtype=np.int8)
    tfl = conv.forward_int8(node, x, xq, yq)
    node.attrs.pop("requant")
    flt = conv.forward_int8(node, x, xq, yq)
    acc = conv.conv_accumulate(conv.shifted_input(x, xq.zero_point), node.params["weight"], node.attrs)
    eff = arith.conv_multipliers(xq.scale, node.params["w_scales"], yq.scale)
    assert np.array_equal(flt, arith.requantize_conv(acc, node.params["bias"], eff, yq.zero_point))
    assert np.abs(tfl.astype(int) - flt.astype(int)).max() <= 1


# ----- hostile and unsupported files ------------------------------------------------------------------
def _locate(data, fn):
    from microtrain.frontends.tflite_reader import TfliteFile

    return fn(TfliteFile(data, "x"))


def test_unsupported_operator_names_the_operator_index_and_what_to_do(tmp_path):
    from microtrain.frontends.tflite import load_tflite

    data = bytearray(tflite_path("ic_resnet8_cifar10_int8").read_bytes())

    def opcode_fields(m):  # the AVERAGE_POOL_2D opcode entry's two code fields (both stored: code 1 != default)
        oc = m.f.tables(m.model, 6, m.tfl.OperatorCode, "codes")[2]
        return m.f.field(oc, 4, 1, "c"), m.f.field(oc, 10, 4, "c")

    dep, code = _locate(bytes(data), opcode_fields)
    assert dep and code and data[dep] == 1
    data[dep] = 17  # MAX_POOL_2D
    struct.pack_into("<i", data, code, 17)
    path = tmp_path / "maxpool.tflite"
    path.write_bytes(bytes(data))
    with pytest.raises(UnsupportedOpError, match=r"operator 12 \(MAX_POOL_2D\) is not supported; .*re-export"):
        load_tflite(path)


def test_float_tensor_is_refused_with_a_one_line_error(tmp_path):
    from microtrain.frontends.tflite import load_tflite

    data = bytearray(tflite_path("kws_dscnn_int8").read_bytes())
    pos = _locate(bytes(data), lambda m: m.f.field(m.tensors[22], 6, 1, "t"))  # output of operator 0
    data[pos] = 0  # FLOAT32
    path = tmp_path / "float.tflite"
    path.write_bytes(bytes(data))
    with pytest.raises(UnsupportedOpError, match=r"operator 0 \(CONV_2D\): tensor 22 .* is float32; .*full-integer") as e:
        load_tflite(path)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("edit", ["truncate", "magic", "huge_vector", "bad_table_offset"])
def test_malformed_files_are_model_format_errors(tmp_path, edit):
    from microtrain.frontends.tflite import load_tflite

    data = bytearray(tflite_path("kws_dscnn_int8").read_bytes())
    if edit == "truncate":
        data = data[: len(data) // 2]
    elif edit == "magic":
        data[4:8] = b"XXXX"
    elif edit == "huge_vector":  # the tensors vector claims 2**31 - 1 entries
        ref = _locate(bytes(data), lambda m: m.f.field(m.sg, 4, 4, "t"))
        vec = ref + struct.unpack_from("<I", data, ref)[0]
        struct.pack_into("<I", data, vec, 2**31 - 1)
    else:  # the first operator's table offset points past the end
        ref = _locate(bytes(data), lambda m: m.f.field(m.sg, 10, 4, "t"))
        vec = ref + struct.unpack_from("<I", data, ref)[0]
        struct.pack_into("<I", data, vec + 4, 2**31)
    path = tmp_path / "bad.tflite"
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFormatError, match="bad.tflite"):
        load_tflite(path)


def test_cli_info_and_load_model_read_tflite(capsys):
    import json

    from microtrain.cli import main
    from microtrain.models import load_model

    path = tflite_path("ic_resnet8_cifar10_int8")
    assert load_model(str(path)).meta["format"] == "tflite"
    assert main(["info", str(path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["totals"]["params"] == 77_706  # the README: 77,360 weights + 346 biases
    assert doc["classes"] == 10


def test_windowed_pool_pad_clamps_and_depth_multiplier_equal_tflite_reference():
    """A small model written with the tflite builder: what the five reference models do not exercise."""
    from tflite_builder import exotic_model

    from microtrain.frontends.tflite import tflite_to_graph
    from microtrain.runtime.forward import run_int8

    data = exotic_model()
    graph = tflite_to_graph(data, "exotic")
    ops = [n.op for n in graph.nodes]
    assert ops.count("pad") == 2 and "avg_pool2d" in ops and "global_avg_pool" in ops
    assert [n.attrs.get("clamp") for n in graph.nodes if "clamp" in n.attrs] == [(-128, -8), (-20, 127), (-128, 5), (-90, 127)]
    it = reference_interpreter(data)
    xs = np.random.default_rng(5).integers(-128, 128, (12, 10, 10, 4), dtype=np.int8)
    ours = run_int8(graph, xs, keep=True)
    seen = {}
    for i, x in enumerate(xs):
        it.set_tensor(0, x[None])
        it.invoke()
        for ir, ks in graph.meta["tflite_tensors"].items():
            for k in ks:
                ref = it.get_tensor(k).reshape(ours[ir][i].shape)
                assert np.array_equal(ours[ir][i], ref), (ir, k, i)
                seen.setdefault(ir, []).append(ref)
    conv_out = np.stack(seen["t2"])
    assert conv_out.max() == -8 and (conv_out == -8).sum() >= 10  # the RELU6 clamp inside int8 is exercised
    assert np.stack(seen["t6"]).min() == -20 and len(np.unique(np.stack(seen["t16"]))) > 3


def test_saved_tflite_graph_runs_identically_and_bad_rounding_attrs_are_refused(tmp_path):
    import json

    from microtrain.errors import GraphError
    from microtrain.frontends.tflite import load_tflite
    from microtrain.ir.serialize import load_graph, save_graph
    from microtrain.runtime.forward import run_int8

    g = load_tflite(tflite_path("ic_resnet8_cifar10_int8"))
    path = save_graph(g, tmp_path / "ic.json")
    x = np.random.default_rng(1).integers(-128, 128, (3, 32, 32, 3), dtype=np.int8)
    assert np.array_equal(run_int8(load_graph(path), x), run_int8(g, x))
    doc = json.loads(path.read_text())
    for key, value in (("requant", "tflite-ish"), ("multiplier_rounding", "triple"), ("clamp", [5, -5])):
        bad = json.loads(json.dumps(doc))
        bad["nodes"][-1]["attrs"][key] = value
        path.write_text(json.dumps(bad))
        with pytest.raises(GraphError, match=key):
            load_graph(path)


def test_tflite_graph_refuses_another_resolution():
    from microtrain.errors import GraphError
    from microtrain.frontends.tflite import load_tflite

    g = load_tflite(tflite_path("vww_96_int8"))
    assert g.with_resolution(96).resolution == 96
    with pytest.raises(GraphError, match="fixed 96x96 input"):
        g.with_resolution(97)



def assert_every_tensor_equals_litert(graph, xs, it):
    """microtrain's int8 forward of xs equals the LiteRT interpreter `it` on every mapped tensor and on the
    softmax; returns microtrain's tensors."""
    from microtrain.runtime.forward import run_int8

    ours = run_int8(graph, xs, keep=True)
    probs = arith.softmax_int8_tflite(ours[graph.output].reshape(len(xs), -1), graph.output_spec.quant.scale, 1.0)
    for i, x in enumerate(xs):
        it.set_tensor(0, x[None])
        it.invoke()
        for ir, ks in graph.meta["tflite_tensors"].items():
            for k in ks:
                assert np.array_equal(ours[ir][i].reshape(-1), it.get_tensor(k).reshape(-1)), (ir, k, i)
        assert np.array_equal(probs[i], it.get_tensor(graph.meta["softmax"]["output_index"])[0])
    return ours

def test_conv_flatten_dense_pattern_equals_tflite_reference():
    """Keras Conv -> Flatten -> Dense: the RESHAPE is an alias and the FC an HxW conv over the map."""
    from tflite_builder import flatten_fc_model

    from microtrain.frontends.tflite import tflite_to_graph

    data = flatten_fc_model()
    graph = tflite_to_graph(data, "flatten")
    assert [(n.op, tuple(n.attrs["kernel"])) for n in graph.nodes] == [("conv2d", (3, 3)), ("conv2d", (6, 6))]
    it = reference_interpreter(data)
    xs = np.random.default_rng(9).integers(-128, 128, (10, 6, 6, 3), dtype=np.int8)
    assert_every_tensor_equals_litert(graph, xs, it)


@pytest.mark.parametrize("op,attrs", [
    ("pad", {"pads": (1, 2, 0, 3)}),
    ("avg_pool2d", {"kernel": (3, 3), "stride": 2, "pads": (0, 1, 0, 1)}),
    ("avg_pool2d", {"kernel": (2, 3), "stride": 1, "pads": (1, 1, 1, 1)}),
])
def test_pad_and_windowed_pool_gradients_are_the_adjoints_of_their_forward(op, attrs):
    """Both ops are linear in float: <f(x), g> == <x, grad(g)> for random x and g checks the rule exactly
    (up to float32 rounding) everywhere, including windows that overlap the padding."""
    from microtrain.ir.graph import Node
    from microtrain.ops import avgpool, pad

    mod = {"pad": pad, "avg_pool2d": avgpool}[op]
    node = Node("n", op, ["x"], "y", dict(attrs), {})
    rng = np.random.default_rng(0)
    shape = (7, 6, 3)
    x = rng.standard_normal((2, *shape)).astype(np.float32)
    y = mod.forward_float(node, x)
    assert y.shape[1:] == mod.infer_shape(node, [shape])
    g = rng.standard_normal(y.shape).astype(np.float32)
    gx = mod.grad_input(g, node.attrs, shape)
    assert gx.shape == x.shape
    np.testing.assert_allclose(float((y * g).sum()), float((x * gx).sum()), rtol=1e-5)


def test_windowed_pool_int8_modes_round_ties_differently():
    """A window mean of exactly k + 0.5: ties to even in the float mode, away from zero in the tflite mode."""
    from microtrain.ir.graph import Node, QuantParams
    from microtrain.ops import avgpool

    node = Node("n", "avg_pool2d", ["x"], "y", {"kernel": (1, 2), "stride": 2, "pads": (0, 0, 0, 0)}, {})
    x = np.array([[[[2], [3], [-2], [-3], [4], [5]]]], np.int8)  # means 2.5, -2.5, 4.5
    q = QuantParams(0.1, 0)
    assert avgpool.forward_int8(node, x, q, q).reshape(-1).tolist() == [2, -2, 4]
    node.attrs["requant"] = "tflite"
    assert avgpool.forward_int8(node, x, q, q).reshape(-1).tolist() == [3, -3, 5]


def test_float_weights_are_refused_with_what_to_do(tmp_path):
    from microtrain.frontends.tflite import load_tflite

    data = bytearray(tflite_path("kws_dscnn_int8").read_bytes())
    pos = _locate(bytes(data), lambda m: m.f.field(m.tensors[16], 6, 1, "t"))  # the FC weights (12 x 64 int8)
    data[pos] = 0  # FLOAT32: its 768-byte buffer no longer matches 768 floats, but the type is reported first
    path = tmp_path / "floatw.tflite"
    path.write_bytes(bytes(data))
    with pytest.raises(UnsupportedOpError, match=r"operator 11 \(FULLY_CONNECTED\): constant tensor 16 .* float32; .*TFLITE_BUILTINS_INT8"):
        load_tflite(path)


def test_fully_connected_multiplier_uses_the_double_product_as_litert_does():
    """Scales where float32(x_scale * w_scale) and the double product give FC multipliers that round five
    accumulators differently: LiteRT's reference agrees with the double product (docs/arithmetic.md)."""
    from tflite_builder import FC_PRODUCT_ACCS, FC_PRODUCT_SCALES, fc_product_model

    from microtrain.frontends.tflite import tflite_to_graph
    from microtrain.runtime.forward import run_int8

    data, xs = fc_product_model()
    graph = tflite_to_graph(data, "fc")
    xq, wq, yq = FC_PRODUCT_SCALES
    acc = np.array(FC_PRODUCT_ACCS, np.int64)
    m32, s32 = arith.quantize_multiplier(np.float64(np.float32(xq) * np.float32(wq)) / np.float64(np.float32(yq)))
    float32_rule = arith.multiply_by_quantized_multiplier_single(acc, m32, s32)
    ours = run_int8(graph, xs.reshape(5, 1, 1, 100)).reshape(-1)
    assert np.all(ours != float32_rule)  # the two rules really differ on these inputs
    it = reference_interpreter(data)
    for x, q in zip(xs, ours):
        it.set_tensor(it.get_input_details()[0]["index"], x[None])
        it.invoke()
        assert int(it.get_tensor(it.get_output_details()[0]["index"])[0, 0]) == int(q)


def test_per_channel_fully_connected_rounds_once_like_litert():
    from tflite_builder import per_channel_fc_model

    from microtrain.frontends.tflite import tflite_to_graph
    from microtrain.runtime.forward import run_int8

    data = per_channel_fc_model()
    graph = tflite_to_graph(data, "fc")
    xs = np.random.default_rng(4).integers(-128, 128, (300, 1, 1, 64), dtype=np.int8)
    ours = run_int8(graph, xs).reshape(300, 32)
    graph.nodes[0].attrs["multiplier_rounding"] = "double"
    assert (run_int8(graph, xs).reshape(300, 32) != ours).sum() > 0  # double rounding would differ here
    it = reference_interpreter(data)
    ref = np.empty_like(ours)
    for i, x in enumerate(xs):
        it.set_tensor(it.get_input_details()[0]["index"], x.reshape(1, 64))
        it.invoke()
        ref[i] = it.get_tensor(it.get_output_details()[0]["index"])[0]
    np.testing.assert_array_equal(ours, ref)


def test_dilated_convs_equal_tflite_reference():
    """CONV_2D and DEPTHWISE_CONV_2D with dilation factors (SAME padding from the dilated window's span,
    symmetric and asymmetric; a 1x3 kernel whose h factor differs): every tensor equals LiteRT's."""
    from tflite_builder import dilated_model

    from microtrain.frontends.tflite import tflite_to_graph

    data = dilated_model()
    graph = tflite_to_graph(data, "dilated")
    convs = [n for n in graph.nodes if n.op == "conv2d"]
    assert [n.attrs.get("dilation") for n in convs] == [2, 3, 2, None]
    assert [n.attrs["padding"] for n in convs[:2]] == [2, 0] and graph.node("op1_depthwise_pad").attrs["pads"] == (2, 3, 2, 3)
    it = reference_interpreter(data)
    xs = np.random.default_rng(11).integers(-128, 128, (8, 12, 12, 4), dtype=np.int8)
    ours = assert_every_tensor_equals_litert(graph, xs, it)
    assert len(np.unique(ours[graph.output].reshape(len(xs), -1).argmax(1))) > 1  # not a constant answer


@pytest.mark.parametrize("dil,error,match", [
    ((1, 2), UnsupportedOpError, r"operator 0 \(CONV_2D\): dilation 1x2 \(h x w\) of a 3x3 kernel; .*equal dilation "
                                 r"factors.*re-export"),
    ((0, 1), ModelFormatError, r"operator 0 \(CONV_2D\): dilation factors 0x1 \(h x w\) must be >= 1"),
    ((2**30, 2**30), ModelFormatError, r"operator 0 \(CONV_2D\): 'SAME' padding .* dilated 1073741824 pads the "
                                       r"12x12x4 input beyond"),  # refused before any allocation
])
def test_unequal_or_bad_dilation_is_refused_in_one_line(dil, error, match):
    from tflite_builder import dilated_model

    from microtrain.frontends.tflite import tflite_to_graph

    with pytest.raises(error, match=match) as e:
        tflite_to_graph(dilated_model(conv_dilation=dil), "dilated")
    assert "\n" not in str(e.value)

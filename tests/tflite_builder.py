"""Write small int8 .tflite flatbuffers with the `tflite` package's generated builder functions (tests only):
models that exercise what the five reference models do not (windowed pooling, PAD, fused-activation clamps
that cut into the int8 range, per-tensor conv weights, depth multipliers on several channels)."""
from __future__ import annotations

import importlib

import flatbuffers
import numpy as np

OPCODES = {"ADD": 0, "AVERAGE_POOL_2D": 1, "CONV_2D": 3, "DEPTHWISE_CONV_2D": 4, "FULLY_CONNECTED": 9,
           "RESHAPE": 22, "SOFTMAX": 25, "PAD": 34, "MAX_POOL_2D": 17}
OPTIONS = {"CONV_2D": ("Conv2DOptions", 1), "DEPTHWISE_CONV_2D": ("DepthwiseConv2DOptions", 2),
           "AVERAGE_POOL_2D": ("Pool2DOptions", 5), "FULLY_CONNECTED": ("FullyConnectedOptions", 8),
           "SOFTMAX": ("SoftmaxOptions", 9), "ADD": ("AddOptions", 11), "RESHAPE": ("ReshapeOptions", 17),
           "PAD": ("PadOptions", 22), "MAX_POOL_2D": ("Pool2DOptions", 5)}
TYPES = {np.dtype(np.int8): 9, np.dtype(np.int32): 2, np.dtype(np.float32): 0}


def _mod(name):
    return importlib.import_module(f"tflite.{name}")


class TinyModel:
    def __init__(self):
        self.tensors, self.ops = [], []

    def tensor(self, shape, dtype=np.int8, scale=None, zero_point=None, data=None, qdim=0) -> int:
        self.tensors.append({"shape": list(shape), "type": TYPES[np.dtype(dtype)], "data": data,
                             "scale": scale, "zp": zero_point, "qdim": qdim})
        return len(self.tensors) - 1

    def const(self, array, scale=None, zero_point=None, qdim=0) -> int:
        a = np.ascontiguousarray(array)
        return self.tensor(a.shape, a.dtype, scale, zero_point, a.tobytes(), qdim)

    def op(self, name, inputs, outputs, **options):
        self.ops.append((name, list(inputs), list(outputs), options))

    def build(self, inputs, outputs) -> bytes:
        b = flatbuffers.Builder(1024)

        def table(mod_name, **fields):
            mod = _mod(mod_name)
            mod.Start(b)
            for k, v in fields.items():
                getattr(mod, "Add" + k)(b, v)
            return mod.End(b)

        def offsets(items):
            b.StartVector(4, len(items), 4)
            for o in reversed(items):
                b.PrependUOffsetTRelative(o)
            return b.EndVector()

        buffers = [table("Buffer")]
        tensors = []
        for i, t in enumerate(self.tensors):
            buf = 0
            if t["data"] is not None:
                data = b.CreateNumpyVector(np.frombuffer(t["data"], np.uint8))
                buffers.append(table("Buffer", Data=data))
                buf = len(buffers) - 1
            q = None
            if t["scale"] is not None:
                scale = b.CreateNumpyVector(np.asarray(t["scale"], np.float32).reshape(-1))
                zp = b.CreateNumpyVector(np.asarray(t["zp"], np.int64).reshape(-1))
                q = table("QuantizationParameters", Scale=scale, ZeroPoint=zp, QuantizedDimension=t["qdim"])
            shape = b.CreateNumpyVector(np.asarray(t["shape"], np.int32))
            name = b.CreateString(f"t{i}")
            fields = {"Shape": shape, "Type": t["type"], "Buffer": buf, "Name": name}
            if q is not None:
                fields["Quantization"] = q
            tensors.append(table("Tensor", **fields))
        names = sorted({op[0] for op in self.ops})
        codes = [table("OperatorCode", DeprecatedBuiltinCode=min(OPCODES[n], 127), BuiltinCode=OPCODES[n], Version=1)
                 for n in names]
        ops = []
        for name, ins, outs, options in self.ops:
            fields = {"OpcodeIndex": names.index(name),
                      "Inputs": b.CreateNumpyVector(np.asarray(ins, np.int32)),
                      "Outputs": b.CreateNumpyVector(np.asarray(outs, np.int32))}
            if name in OPTIONS:
                opt_name, opt_type = OPTIONS[name]
                fields["BuiltinOptionsType"] = opt_type
                fields["BuiltinOptions"] = table(opt_name, **options)
            ops.append(table("Operator", **fields))
        sg = table("SubGraph", Tensors=offsets(tensors), Inputs=b.CreateNumpyVector(np.asarray(inputs, np.int32)),
                   Outputs=b.CreateNumpyVector(np.asarray(outputs, np.int32)), Operators=offsets(ops))
        model = table("Model", Version=3, OperatorCodes=offsets(codes), Subgraphs=offsets([sg]),
                      Buffers=offsets(buffers))
        b.Finish(model, file_identifier=b"TFL3")
        return bytes(b.Output())


def exotic_model(seed: int = 0) -> bytes:
    """input 10x10x4 -> CONV_2D 3x3/2 SAME (asymmetric pad, per-tensor weights, RELU6 clamp inside int8)
    -> DEPTHWISE 3x3 x2 SAME (RELU with zero point -20) -> PAD -> AVERAGE_POOL_2D 3x3/2 SAME (windowed,
    padding not counted) -> ADD (RELU6) -> AVERAGE_POOL_2D (global) -> RESHAPE -> FULLY_CONNECTED
    (per-tensor, RELU)."""
    rng = np.random.default_rng(seed)
    m = TinyModel()
    x = m.tensor([1, 10, 10, 4], scale=[0.02], zero_point=[3])
    w1 = rng.integers(-127, 128, (6, 3, 3, 4), dtype=np.int8)
    ws1 = np.float32(0.004)
    b1 = m.const(rng.integers(-2000, 2000, 6, dtype=np.int32), scale=[0.02 * ws1], zero_point=[0])
    y1 = m.tensor([1, 5, 5, 6], scale=[0.05], zero_point=[-128])  # RELU6 upper clamp -128 + 120 = -8
    m.op("CONV_2D", [x, m.const(w1, scale=[ws1], zero_point=[0]), b1], [y1], Padding=0, StrideW=2, StrideH=2,
         FusedActivationFunction=3, DilationWFactor=1, DilationHFactor=1)
    ws2 = rng.uniform(0.002, 0.02, 12).astype(np.float32)
    w2 = m.const(rng.integers(-127, 128, (1, 3, 3, 12), dtype=np.int8), scale=ws2, zero_point=np.zeros(12), qdim=3)
    b2 = m.const(rng.integers(-500, 500, 12, dtype=np.int32), scale=0.05 * ws2, zero_point=np.zeros(12))
    y2 = m.tensor([1, 5, 5, 12], scale=[0.03], zero_point=[-20])  # RELU lower clamp at -20
    m.op("DEPTHWISE_CONV_2D", [y1, w2, b2], [y2], Padding=0, StrideW=1, StrideH=1, DepthMultiplier=2,
         FusedActivationFunction=1, DilationWFactor=1, DilationHFactor=1)
    y3 = m.tensor([1, 8, 8, 12], scale=[0.03], zero_point=[-20])
    m.op("PAD", [y2, m.const(np.array([[0, 0], [1, 2], [2, 1], [0, 0]], np.int32))], [y3])
    y4 = m.tensor([1, 4, 4, 12], scale=[0.03], zero_point=[-20])
    m.op("AVERAGE_POOL_2D", [y3], [y4], Padding=0, StrideW=2, StrideH=2, FilterWidth=3, FilterHeight=3,
         FusedActivationFunction=0)
    y5 = m.tensor([1, 4, 4, 12], scale=[0.045], zero_point=[-128])  # RELU6: upper clamp at -128 + 133 -> 5
    m.op("ADD", [y4, y4], [y5], FusedActivationFunction=3)
    y6 = m.tensor([1, 1, 1, 12], scale=[0.045], zero_point=[-128])
    m.op("AVERAGE_POOL_2D", [y5], [y6], Padding=1, StrideW=4, StrideH=4, FilterWidth=4, FilterHeight=4,
         FusedActivationFunction=0)
    y7 = m.tensor([1, 12], scale=[0.045], zero_point=[-128])
    m.op("RESHAPE", [y6, m.const(np.array([1, 12], np.int32))], [y7])
    ws8 = np.float32(0.01)
    w8 = m.const(rng.integers(-127, 128, (5, 12), dtype=np.int8), scale=[ws8], zero_point=[0])
    b8 = m.const(rng.integers(-300, 300, 5, dtype=np.int32), scale=[np.float32(0.045) * ws8], zero_point=[0])
    y8 = m.tensor([1, 5], scale=[0.03], zero_point=[-90])  # RELU lower clamp at -90
    m.op("FULLY_CONNECTED", [y7, w8, b8], [y8], FusedActivationFunction=1)
    return m.build([x], [y8])


def flatten_fc_model(seed: int = 1) -> bytes:
    """input 6x6x3 -> CONV_2D 3x3 SAME (RELU) -> RESHAPE [1, 144] -> FULLY_CONNECTED 144 -> 5 -> SOFTMAX:
    the Keras Conv -> Flatten -> Dense pattern."""
    rng = np.random.default_rng(seed)
    m = TinyModel()
    x = m.tensor([1, 6, 6, 3], scale=[0.02], zero_point=[-5])
    ws = rng.uniform(0.002, 0.01, 4).astype(np.float32)
    w1 = m.const(rng.integers(-127, 128, (4, 3, 3, 3), dtype=np.int8), scale=ws, zero_point=np.zeros(4))
    b1 = m.const(rng.integers(-500, 500, 4, dtype=np.int32), scale=np.float32(0.02) * ws, zero_point=np.zeros(4))
    y1 = m.tensor([1, 6, 6, 4], scale=[0.01], zero_point=[-128])
    m.op("CONV_2D", [x, w1, b1], [y1], Padding=0, StrideW=1, StrideH=1, FusedActivationFunction=1,
         DilationWFactor=1, DilationHFactor=1)
    y2 = m.tensor([1, 144], scale=[0.01], zero_point=[-128])
    m.op("RESHAPE", [y1, m.const(np.array([1, 144], np.int32))], [y2])
    w3 = m.const(rng.integers(-127, 128, (5, 144), dtype=np.int8), scale=[0.003], zero_point=[0])
    b3 = m.const(rng.integers(-300, 300, 5, dtype=np.int32), scale=[np.float32(0.01) * np.float32(0.003)],
                 zero_point=[0])
    y3 = m.tensor([1, 5], scale=[0.05], zero_point=[3])
    m.op("FULLY_CONNECTED", [y2, w3, b3], [y3], FusedActivationFunction=0)
    y4 = m.tensor([1, 5], scale=[1 / 256], zero_point=[-128])
    m.op("SOFTMAX", [y3], [y4], Beta=1.0)
    return m.build([x], [y4])


# Scales for which a float32 x_scale * w_scale gives another FC multiplier than the double product, and
# accumulators where the two multipliers round differently (found by search; tests/test_tflite.py).
FC_PRODUCT_SCALES = (0.03929810971021652, 0.09965675324201584, 52.217628479003906)
FC_PRODUCT_ACCS = (-1580000, -940000, -300000, 340000, 980000)


def fc_product_model() -> tuple[bytes, np.ndarray]:
    """One FULLY_CONNECTED 100 -> 1 (weights 127 x 99 and 1) and inputs whose accumulators are FC_PRODUCT_ACCS."""
    xs, ws, ys = FC_PRODUCT_SCALES
    w = np.full(100, 127, np.int8)
    w[-1] = 1
    m = TinyModel()
    x = m.tensor([1, 100], scale=[xs], zero_point=[0])
    wt = m.const(w[None], scale=[ws], zero_point=[0])
    b = m.const(np.zeros(1, np.int32), scale=[np.float32(xs) * np.float32(ws)], zero_point=[0])
    y = m.tensor([1, 1], scale=[ys], zero_point=[0])
    m.op("FULLY_CONNECTED", [x, wt, b], [y], FusedActivationFunction=0)
    inputs = []
    for acc in FC_PRODUCT_ACCS:
        q, r = divmod(acc, 127)  # acc = 127 * q + r: q spread over 99 inputs, r on the last
        xin = np.zeros(100, np.int64)
        for i in range(99):
            xin[i] = max(-128, min(127, q))
            q -= xin[i]
        xin[-1] = r
        assert q == 0 and int(xin @ w.astype(np.int64)) == acc
        inputs.append(xin.astype(np.int8))
    return m.build([x], [y]), np.stack(inputs)


def per_channel_fc_model(seed: int = 0) -> bytes:
    """FULLY_CONNECTED 64 -> 32 with per-channel weight scales (newer converters write these)."""
    rng = np.random.default_rng(seed)
    m = TinyModel()
    x = m.tensor([1, 64], scale=[0.05], zero_point=[3])
    ws = rng.uniform(0.001, 0.01, 32).astype(np.float32)
    w = m.const(rng.integers(-127, 128, (32, 64), dtype=np.int8), scale=ws, zero_point=np.zeros(32), qdim=0)
    b = m.const(rng.integers(-1000, 1000, 32, dtype=np.int32), scale=np.float32(0.05) * ws, zero_point=np.zeros(32))
    y = m.tensor([1, 32], scale=[0.02], zero_point=[-7])
    m.op("FULLY_CONNECTED", [x, w, b], [y], FusedActivationFunction=0)
    return m.build([x], [y])


def dilated_model(seed: int = 3, conv_dilation=(2, 2)) -> bytes:
    """input 12x12x4 -> CONV_2D 3x3 dilated `conv_dilation` (h, w) SAME (symmetric padding 2, RELU) ->
    DEPTHWISE 3x3/2 dilated 3 SAME (asymmetric padding (2, 3): a pad node) -> CONV_2D 1x3 dilated 4x2
    VALID (the h factor of a 1-tap kernel axis changes nothing) -> AVERAGE_POOL_2D (global) -> RESHAPE ->
    FULLY_CONNECTED 6 -> 3 -> SOFTMAX."""
    rng = np.random.default_rng(seed)
    m = TinyModel()
    x = m.tensor([1, 12, 12, 4], scale=[0.02], zero_point=[-3])

    def conv_params(shape, x_scale, qdim, o):
        ws = rng.uniform(0.002, 0.01, o).astype(np.float32)
        w = m.const(rng.integers(-127, 128, shape, dtype=np.int8), scale=ws, zero_point=np.zeros(o), qdim=qdim)
        b = m.const(rng.integers(-800, 800, o, dtype=np.int32), scale=np.float32(x_scale) * ws, zero_point=np.zeros(o))
        return w, b

    dh, dw = conv_dilation
    y1 = m.tensor([1, 12, 12, 8], scale=[0.03], zero_point=[-128])
    m.op("CONV_2D", [x, *conv_params((8, 3, 3, 4), 0.02, 0, 8)], [y1], Padding=0, StrideW=1, StrideH=1,
         FusedActivationFunction=1, DilationWFactor=dw, DilationHFactor=dh)
    y2 = m.tensor([1, 6, 6, 8], scale=[0.04], zero_point=[5])
    m.op("DEPTHWISE_CONV_2D", [y1, *conv_params((1, 3, 3, 8), 0.03, 3, 8)], [y2], Padding=0, StrideW=2,
         StrideH=2, DepthMultiplier=1, FusedActivationFunction=0, DilationWFactor=3, DilationHFactor=3)
    y3 = m.tensor([1, 6, 2, 6], scale=[0.05], zero_point=[-10])
    m.op("CONV_2D", [y2, *conv_params((6, 1, 3, 8), 0.04, 0, 6)], [y3], Padding=1, StrideW=1, StrideH=1,
         FusedActivationFunction=0, DilationWFactor=2, DilationHFactor=4)
    y4 = m.tensor([1, 1, 1, 6], scale=[0.05], zero_point=[-10])
    m.op("AVERAGE_POOL_2D", [y3], [y4], Padding=1, StrideW=1, StrideH=1, FilterWidth=2, FilterHeight=6,
         FusedActivationFunction=0)
    y5 = m.tensor([1, 6], scale=[0.05], zero_point=[-10])
    m.op("RESHAPE", [y4, m.const(np.array([1, 6], np.int32))], [y5])
    w6, b6 = conv_params((3, 6), 0.05, 0, 3)
    y6 = m.tensor([1, 3], scale=[0.04], zero_point=[2])
    m.op("FULLY_CONNECTED", [y5, w6, b6], [y6], FusedActivationFunction=0)
    y7 = m.tensor([1, 3], scale=[1 / 256], zero_point=[-128])
    m.op("SOFTMAX", [y6], [y7], Beta=1.0)
    return m.build([x], [y7])

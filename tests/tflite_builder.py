"""A tiny TFLite flatbuffer writer for tests (the `tflite` package's schema builders + `flatbuffers`), and the
small quantized graphs the tflite-source tests convert: MobileNet's operators at 8x8 pixels."""

from __future__ import annotations

import numpy as np

TYPES = {np.dtype(np.float32): 0, np.dtype(np.int32): 2, np.dtype(np.uint8): 3, np.dtype(np.int64): 4,
         np.dtype(np.int8): 9}


def _vector(b, start_fn, offsets):
    start_fn(b, len(offsets))
    for off in reversed(offsets):
        b.PrependUOffsetTRelative(off)
    return b.EndVector()


def build(tensors: list[dict], ops: list[dict], inputs: list[int], outputs: list[int]) -> bytes:
    """tensors: {name, shape, dtype, data (constant or None), quant (scales, zero points, axis) or None};
    ops: {op (BuiltinOperator name), inputs, outputs, options (BuiltinOptions name), fields {name: value}}."""
    import flatbuffers
    import tflite

    b = flatbuffers.Builder(1024)
    # buffers: 0 is the empty buffer; one per constant
    buffer_offsets, tensor_buffer = [], []
    tflite.BufferStart(b)
    buffer_offsets.append(tflite.BufferEnd(b))
    for t in tensors:
        if t.get("data") is None:
            tensor_buffer.append(0)
            continue
        data = b.CreateNumpyVector(np.ascontiguousarray(t["data"]).reshape(-1).view(np.uint8))
        tflite.BufferStart(b)
        tflite.BufferAddData(b, data)
        buffer_offsets.append(tflite.BufferEnd(b))
        tensor_buffer.append(len(buffer_offsets) - 1)
    tensor_offsets = []
    for t, buf in zip(tensors, tensor_buffer):
        name = b.CreateString(t["name"])
        shape = b.CreateNumpyVector(np.asarray(t["shape"], np.int32))
        quant = None
        if t.get("quant") is not None:
            scales, zeros, axis = t["quant"]
            s = b.CreateNumpyVector(np.asarray(scales, np.float32).reshape(-1))
            z = b.CreateNumpyVector(np.asarray(zeros, np.int64).reshape(-1))
            tflite.QuantizationParametersStart(b)
            tflite.QuantizationParametersAddScale(b, s)
            tflite.QuantizationParametersAddZeroPoint(b, z)
            tflite.QuantizationParametersAddQuantizedDimension(b, axis)
            quant = tflite.QuantizationParametersEnd(b)
        tflite.TensorStart(b)
        tflite.TensorAddShape(b, shape)
        tflite.TensorAddType(b, TYPES[np.dtype(t["dtype"])])
        tflite.TensorAddBuffer(b, buf)
        tflite.TensorAddName(b, name)
        if quant is not None:
            tflite.TensorAddQuantization(b, quant)
        tensor_offsets.append(tflite.TensorEnd(b))
    kinds = sorted({op["op"] for op in ops})
    code_offsets = []
    for kind in kinds:
        code = getattr(tflite.BuiltinOperator, kind)
        tflite.OperatorCodeStart(b)
        tflite.OperatorCodeAddDeprecatedBuiltinCode(b, min(code, 127))
        tflite.OperatorCodeAddBuiltinCode(b, code)
        tflite.OperatorCodeAddVersion(b, 1)
        code_offsets.append(tflite.OperatorCodeEnd(b))
    op_offsets = []
    for op in ops:
        opts = None
        if op.get("options"):
            cls = op["options"]
            vectors = {k: b.CreateNumpyVector(np.asarray(v, np.int32)) for k, v in op.get("fields", {}).items()
                       if isinstance(v, (list, tuple))}
            getattr(tflite, f"{cls}Start")(b)
            for key, value in op.get("fields", {}).items():
                getattr(tflite, f"{cls}Add{key}")(b, vectors.get(key, value))
            opts = getattr(tflite, f"{cls}End")(b)
        ins = b.CreateNumpyVector(np.asarray(op["inputs"], np.int32))
        outs = b.CreateNumpyVector(np.asarray(op["outputs"], np.int32))
        tflite.OperatorStart(b)
        tflite.OperatorAddOpcodeIndex(b, kinds.index(op["op"]))
        tflite.OperatorAddInputs(b, ins)
        tflite.OperatorAddOutputs(b, outs)
        if opts is not None:
            tflite.OperatorAddBuiltinOptionsType(b, getattr(tflite.BuiltinOptions, op["options"]))
            tflite.OperatorAddBuiltinOptions(b, opts)
        op_offsets.append(tflite.OperatorEnd(b))
    tensors_vec = _vector(b, tflite.SubGraphStartTensorsVector, tensor_offsets)
    ops_vec = _vector(b, tflite.SubGraphStartOperatorsVector, op_offsets)
    ins = b.CreateNumpyVector(np.asarray(inputs, np.int32))
    outs = b.CreateNumpyVector(np.asarray(outputs, np.int32))
    name = b.CreateString("main")
    tflite.SubGraphStart(b)
    tflite.SubGraphAddTensors(b, tensors_vec)
    tflite.SubGraphAddOperators(b, ops_vec)
    tflite.SubGraphAddInputs(b, ins)
    tflite.SubGraphAddOutputs(b, outs)
    tflite.SubGraphAddName(b, name)
    subgraph = tflite.SubGraphEnd(b)
    subgraphs = _vector(b, tflite.ModelStartSubgraphsVector, [subgraph])
    codes = _vector(b, tflite.ModelStartOperatorCodesVector, code_offsets)
    buffers = _vector(b, tflite.ModelStartBuffersVector, buffer_offsets)
    desc = b.CreateString("authbench test graph")
    tflite.ModelStart(b)
    tflite.ModelAddVersion(b, 3)
    tflite.ModelAddOperatorCodes(b, codes)
    tflite.ModelAddSubgraphs(b, subgraphs)
    tflite.ModelAddDescription(b, desc)
    tflite.ModelAddBuffers(b, buffers)
    b.Finish(tflite.ModelEnd(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def tiny_mobilenet(kind: str = "uint8", seed: int = 0, classes: int = 5) -> bytes:
    """An 8x8x3 quantized graph with MobileNet's operators: CONV_2D (3x3, stride 2, SAME: odd padding, RELU6),
    DEPTHWISE_CONV_2D (3x3, SAME, RELU6), ADD (residual), AVERAGE_POOL_2D ('uint8') or MEAN ('int8'),
    RESHAPE, FULLY_CONNECTED, SOFTMAX. 'uint8': per-tensor uint8 weights (TF1 quantization-aware style);
    'int8': per-channel int8 conv/depthwise weights and int8 activations (post-training style)."""
    rng = np.random.default_rng(seed)
    int8 = kind == "int8"
    act_dtype = np.int8 if int8 else np.uint8
    shift = -128 if int8 else 0  # the zero point of a [0, x] range

    def act(scale, zero):
        return (np.array([scale]), np.array([zero + shift]), 0)

    tensors, ops = [], []

    def tensor(name, shape, dtype, data=None, quant=None):
        tensors.append({"name": name, "shape": shape, "dtype": dtype, "data": data, "quant": quant})
        return len(tensors) - 1

    in_scale = 1 / 128
    x = tensor("input", [1, 8, 8, 3], act_dtype, quant=(np.array([in_scale]), np.array([128 + shift]), 0))

    def weights(name, shape, channels_axis, per_channel):
        if per_channel:
            q = rng.integers(-127, 128, size=shape).astype(np.int8)
            scales = rng.uniform(0.004, 0.012, size=shape[channels_axis])
            return tensor(name, shape, np.int8, q, (scales, np.zeros_like(scales, dtype=np.int64), channels_axis)), scales
        if int8:
            q = rng.integers(-127, 128, size=shape).astype(np.int8)
            scale = np.array([0.008])
            return tensor(name, shape, np.int8, q, (scale, np.array([0]), 0)), scale
        q = rng.integers(0, 256, size=shape).astype(np.uint8)
        scale = np.array([0.008])
        return tensor(name, shape, np.uint8, q, (scale, np.array([int(rng.integers(100, 156))]), 0)), scale

    def bias(name, n, in_scale, w_scales):
        scales = in_scale * np.broadcast_to(w_scales, (n,))
        q = rng.integers(-400, 400, size=n).astype(np.int32)
        return tensor(name, [n], np.int32, q, (scales, np.zeros(n, np.int64), 0))

    relu6 = (6 / 255, 0)
    w1, s1 = weights("conv/w", [4, 3, 3, 3], 0, int8)
    b1 = bias("conv/b", 4, in_scale, s1)
    c1 = tensor("conv/out", [1, 4, 4, 4], act_dtype, quant=act(*relu6))
    ops.append({"op": "CONV_2D", "inputs": [x, w1, b1], "outputs": [c1], "options": "Conv2DOptions",
                "fields": {"Padding": 0, "StrideH": 2, "StrideW": 2, "DilationHFactor": 1, "DilationWFactor": 1,
                           "FusedActivationFunction": 3}})
    w2, s2 = weights("dw/w", [1, 3, 3, 4], 3, int8)
    b2 = bias("dw/b", 4, relu6[0], s2)
    c2 = tensor("dw/out", [1, 4, 4, 4], act_dtype, quant=act(*relu6))
    ops.append({"op": "DEPTHWISE_CONV_2D", "inputs": [c1, w2, b2], "outputs": [c2], "options": "DepthwiseConv2DOptions",
                "fields": {"Padding": 0, "StrideH": 1, "StrideW": 1, "DepthMultiplier": 1, "DilationHFactor": 1,
                           "DilationWFactor": 1, "FusedActivationFunction": 3}})
    add_q = (12 / 255, 0)
    c3 = tensor("add/out", [1, 4, 4, 4], act_dtype, quant=act(*add_q))
    ops.append({"op": "ADD", "inputs": [c1, c2], "outputs": [c3], "options": "AddOptions",
                "fields": {"FusedActivationFunction": 0}})
    if int8:
        axes = tensor("mean/axes", [2], np.int32, np.array([1, 2], np.int32))
        c4 = tensor("mean/out", [1, 1, 1, 4], act_dtype, quant=act(*add_q))
        ops.append({"op": "MEAN", "inputs": [c3, axes], "outputs": [c4], "options": "ReducerOptions",
                    "fields": {"KeepDims": True}})
    else:
        c4 = tensor("pool/out", [1, 1, 1, 4], act_dtype, quant=act(*add_q))
        ops.append({"op": "AVERAGE_POOL_2D", "inputs": [c3], "outputs": [c4], "options": "Pool2DOptions",
                    "fields": {"Padding": 1, "StrideH": 1, "StrideW": 1, "FilterHeight": 4, "FilterWidth": 4,
                               "FusedActivationFunction": 0}})
    shape = tensor("reshape/shape", [2], np.int32, np.array([1, 4], np.int32))
    c5 = tensor("reshape/out", [1, 4], act_dtype, quant=act(*add_q))
    ops.append({"op": "RESHAPE", "inputs": [c4, shape], "outputs": [c5], "options": "ReshapeOptions",
                "fields": {"NewShape": [1, 4]}})
    w3, s3 = weights("fc/w", [classes, 4], 0, False)
    b3 = bias("fc/b", classes, add_q[0], s3)
    logits_q = (16 / 255, 128)
    c6 = tensor("logits", [1, classes], act_dtype, quant=act(*logits_q))
    ops.append({"op": "FULLY_CONNECTED", "inputs": [c5, w3, b3], "outputs": [c6], "options": "FullyConnectedOptions",
                "fields": {"FusedActivationFunction": 0}})
    c7 = tensor("probs", [1, classes], act_dtype, quant=(np.array([1 / 256]), np.array([shift]), 0))
    ops.append({"op": "SOFTMAX", "inputs": [c6], "outputs": [c7], "options": "SoftmaxOptions", "fields": {"Beta": 1.0}})
    return build(tensors, ops, [x], [c7])


def float_ops_graph(seed: int = 0) -> bytes:
    """A float32 graph of the other supported operators: PAD, MAX_POOL_2D and AVERAGE_POOL_2D with odd 'SAME'
    padding, CONCATENATION on channels, MUL by a per-channel constant, LOGISTIC, MEAN without keep_dims,
    FULLY_CONNECTED, RELU. Input (1, 6, 6, 2), output (1, 3)."""
    rng = np.random.default_rng(seed)
    f32 = np.float32
    tensors = []

    def tensor(name, shape, data=None, dtype=f32):
        tensors.append({"name": name, "shape": shape, "dtype": dtype, "data": data, "quant": None})
        return len(tensors) - 1

    x = tensor("input", [1, 6, 6, 2])
    pads = tensor("pad/paddings", [4, 2], np.array([[0, 0], [1, 0], [0, 1], [0, 0]], np.int32), np.int32)
    p = tensor("pad/out", [1, 7, 7, 2])
    mx = tensor("max/out", [1, 4, 4, 2])
    av = tensor("avg/out", [1, 4, 4, 2])
    cat = tensor("cat/out", [1, 4, 4, 4])
    k = tensor("mul/k", [4], rng.uniform(-2, 2, 4).astype(f32))
    mul = tensor("mul/out", [1, 4, 4, 4])
    sig = tensor("sigmoid/out", [1, 4, 4, 4])
    axes = tensor("mean/axes", [2], np.array([1, 2], np.int32), np.int32)
    mean = tensor("mean/out", [1, 4])
    w = tensor("fc/w", [3, 4], rng.normal(0, 1, (3, 4)).astype(f32))
    b = tensor("fc/b", [3], rng.normal(0, 0.1, 3).astype(f32))
    fc = tensor("fc/out", [1, 3])
    out = tensor("relu/out", [1, 3])
    pool = {"Padding": 0, "FusedActivationFunction": 0}
    ops = [
        {"op": "PAD", "inputs": [x, pads], "outputs": [p]},
        {"op": "MAX_POOL_2D", "inputs": [p], "outputs": [mx], "options": "Pool2DOptions",
         "fields": {**pool, "StrideH": 2, "StrideW": 2, "FilterHeight": 3, "FilterWidth": 3}},
        {"op": "AVERAGE_POOL_2D", "inputs": [mx], "outputs": [av], "options": "Pool2DOptions",
         "fields": {**pool, "StrideH": 1, "StrideW": 1, "FilterHeight": 2, "FilterWidth": 2}},
        {"op": "CONCATENATION", "inputs": [mx, av], "outputs": [cat], "options": "ConcatenationOptions",
         "fields": {"Axis": 3, "FusedActivationFunction": 0}},
        {"op": "MUL", "inputs": [cat, k], "outputs": [mul], "options": "MulOptions", "fields": {"FusedActivationFunction": 0}},
        {"op": "LOGISTIC", "inputs": [mul], "outputs": [sig]},
        {"op": "MEAN", "inputs": [sig, axes], "outputs": [mean], "options": "ReducerOptions", "fields": {"KeepDims": False}},
        {"op": "FULLY_CONNECTED", "inputs": [mean, w, b], "outputs": [fc], "options": "FullyConnectedOptions",
         "fields": {"FusedActivationFunction": 0}},
        {"op": "RELU", "inputs": [fc], "outputs": [out]},
    ]
    return build(tensors, ops, [x], [out])

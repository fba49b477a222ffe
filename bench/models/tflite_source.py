"""Source "tflite": a TensorFlow Lite flatbuffer as a trainable float32 torch module.

    {source = "tflite", path = "mobilenet_v1_0.25_128_quant.tflite", drop_background = true}

The file is read with the `tflite` package (the flatbuffer schema; no TensorFlow): every operator of the main
subgraph becomes a torch module run in the file's order. Quantized weights (uint8/int8, per-tensor or
per-channel scales) and int32 biases are dequantized to float32 parameters, real = scale * (q - zero_point);
activations are computed in float32 (no re-quantization between ops: this is where the module differs from
the integer runtime, measured by tests/test_tflite_source.py against ai-edge-litert). Convolutions and pools
pad as TensorFlow's 'SAME'. Feature maps are kept NCHW (TFLite's are NHWC; reshapes, means and fully
connected layers read them in TFLite's order).

Labelled option `quantize_activations = true`: every quantized activation is rounded and clamped to its
integer grid (straight-through gradient), as the integer runtime stores it; closer to the runtime, still
float arithmetic (no fixed-point multipliers).

Output: the graph's output (trailing QUANTIZE/DEQUANTIZE are identities in float); when that is a SOFTMAX, its input (the logits), so that a loss can be trained
on it. `drop_background = true` drops class 0 (TF-slim's "background"), turning 1001 outputs into the 1000
ImageNet classes.

Preprocessing: the model takes pixels in [0, 1]; with a uint8/int8 input tensor of scale s and zero point z,
the real input is s * (255 * pixel + offset - z), i.e. mean = (z - offset) / 255, std = 1 / (255 s)
(offset 0 for uint8, -128 for int8). A float input needs `mean` and `std` in the spec. `input_size` is the
input tensor's; the geometry for other image sizes is TF-slim's eval crop (central 87.5%, bilinear) unless
the spec gives `crop_pct`, `resize` or `interpolation`.

Supported operators: CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, ADD, MUL, AVERAGE_POOL_2D, MAX_POOL_2D,
MEAN, PAD, RESHAPE, SQUEEZE, CONCATENATION, SOFTMAX, RELU, RELU6, LOGISTIC, QUANTIZE, DEQUANTIZE, with fused
NONE/RELU/RELU6/RELU_N1_TO_1 activations. Anything else is a one-line error naming the operator.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.data.base import file_digest
from bench.errors import UserError, install_hint
from bench.models.converted import PREPROCESS_KEYS, ConvertedAdapter, SameConv2d, preprocess_from_spec, same_pads
from bench.models.python_source import check_sha256

TFLITE_KEYS = {"path", "name", "drop_background", "quantize_activations", "arch", "sha256", *PREPROCESS_KEYS}
SLIM_CROP_PCT = 0.875  # TF-slim's inception/mobilenet eval preprocessing: central crop of 87.5%, bilinear
# TFLite tensor types -> numpy dtypes (schema.fbs TensorType)
NUMPY_TYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 6: np.bool_, 7: np.int16,
               9: np.int8, 10: np.float64}
NCHW_AXIS = {0: 0, 1: 2, 2: 3, 3: 1}  # NHWC axis -> NCHW axis of a 4-D feature map


def _tflite():
    try:
        import tflite
    except ImportError:
        raise UserError(f"the tflite model source needs the tflite package: {install_hint('convert')}") from None
    return tflite


def _enum_names(cls) -> dict[int, str]:
    return {v: k for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, int)}


def _activation(code: int, label: str):
    acts = {0: None, 1: nn.ReLU(), 2: nn.Hardtanh(-1.0, 1.0), 3: nn.ReLU6()}
    if code not in acts:
        raise UserError(f"tflite model {label!r}: fused activation {code} (TANH/SIGN_BIT) is not supported")
    return acts[code]


def _to_nhwc(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 1) if x.ndim == 4 else x


def _from_nhwc(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 3, 1, 2).contiguous() if x.ndim == 4 else x


class Graph:
    """The parts of a TFLite model the conversion reads: tensors (name, shape, type, quantization, data)."""

    def __init__(self, data: bytes, label: str):
        tflite = _tflite()
        self.tflite, self.label = tflite, label
        try:
            self.model = tflite.Model.GetRootAsModel(data, 0)
            if self.model.SubgraphsLength() < 1:
                raise ValueError("no subgraph")
            self.graph = self.model.Subgraphs(0)
        except Exception as e:  # noqa: BLE001 - any unreadable file is the user's to fix
            raise UserError(f"tflite model {label!r}: not a TFLite flatbuffer ({type(e).__name__}: {e})") from None
        self.op_names = _enum_names(tflite.BuiltinOperator)

    def op_name(self, op) -> str:
        code = self.model.OperatorCodes(op.OpcodeIndex())
        return self.op_names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "CUSTOM")

    def tensor(self, index: int):
        return self.graph.Tensors(int(index))

    def shape(self, index: int) -> list[int]:
        t = self.tensor(index)
        return [int(v) for v in t.ShapeAsNumpy()] if t.ShapeLength() else []

    def quantization(self, index: int) -> tuple[np.ndarray, np.ndarray, int] | None:
        q = self.tensor(index).Quantization()
        if q is None or q.ScaleLength() == 0:
            return None
        zero = q.ZeroPointAsNumpy() if q.ZeroPointLength() else np.zeros(q.ScaleLength(), np.int64)
        return q.ScaleAsNumpy().astype(np.float64), np.asarray(zero, np.int64), int(q.QuantizedDimension())

    def raw(self, index: int) -> np.ndarray | None:
        """The tensor's stored values (None for activations), with its own dtype and shape."""
        t = self.tensor(index)
        buf = self.model.Buffers(t.Buffer())
        if buf is None or buf.DataLength() == 0:
            return None
        dtype = NUMPY_TYPES.get(t.Type())
        if dtype is None:
            raise UserError(f"tflite model {self.label!r}: tensor {t.Name().decode()!r} has unsupported type {t.Type()}")
        return np.frombuffer(buf.DataAsNumpy().tobytes(), dtype=dtype).reshape(self.shape(index))

    def real(self, index: int) -> np.ndarray | None:
        """The tensor's stored values as float32 real numbers (dequantized: scale * (q - zero_point))."""
        data = self.raw(index)
        if data is None:
            return None
        quant = self.quantization(index)
        if quant is None or data.dtype.kind == "f":
            return data.astype(np.float32)
        scale, zero, axis = quant
        shape = [1] * data.ndim
        if scale.size > 1:
            shape[axis] = scale.size
        return ((data.astype(np.float64) - zero.reshape(shape)) * scale.reshape(shape)).astype(np.float32)

    def ints(self, index: int) -> list[int]:
        data = self.raw(index)
        return [] if data is None else [int(v) for v in data.reshape(-1)]

    def options(self, op, cls_name: str):
        table = op.BuiltinOptions()
        if table is None:
            return None
        opts = getattr(self.tflite, cls_name)()
        opts.Init(table.Bytes, table.Pos)
        return opts


class Op(nn.Module):
    """One TFLite operator: reads tensors `inputs` from the environment, writes `outputs`."""

    def __init__(self, kind: str, inputs: list[int], outputs: list[int]):
        super().__init__()
        self.kind, self.inputs, self.outputs = kind, list(inputs), list(outputs)

    def run(self, env: dict) -> None:
        env[self.outputs[0]] = self(*[env[i] for i in self.inputs if i >= 0])


class ConvOp(Op):
    """CONV_2D / DEPTHWISE_CONV_2D with TF padding, fused activation."""

    def __init__(self, kind, inputs, outputs, conv: nn.Conv2d, act):
        super().__init__(kind, inputs[:1], outputs)
        self.conv, self.act = conv, act

    def forward(self, x):
        y = self.conv(x)
        return self.act(y) if self.act is not None else y


class LinearOp(Op):
    def __init__(self, inputs, outputs, linear: nn.Linear, act, keep_num_dims: bool):
        super().__init__("FULLY_CONNECTED", inputs[:1], outputs)
        self.linear, self.act, self.keep = linear, act, keep_num_dims

    def forward(self, x):
        x = _to_nhwc(x)
        y = self.linear(x if self.keep else x.reshape(-1, self.linear.in_features))
        y = self.act(y) if self.act is not None else y
        return _from_nhwc(y) if self.keep else y


class BinaryOp(Op):
    """ADD / MUL of two tensors (a constant operand is a buffer in the feature map's layout)."""

    def __init__(self, kind, inputs, outputs, act, const: dict[int, torch.Tensor]):
        super().__init__(kind, inputs, outputs)
        self.act = act
        self.const_slots = sorted(const)
        for slot, value in const.items():
            self.register_buffer(f"const{slot}", value)

    def run(self, env):
        args = [getattr(self, f"const{slot}") if slot in self.const_slots else env[i]
                for slot, i in enumerate(self.inputs)]
        if args[0].ndim == 4 and args[1].ndim == 1:  # a per-channel constant against an NCHW map
            args[1] = args[1].view(1, -1, 1, 1)
        elif args[1].ndim == 4 and args[0].ndim == 1:
            args[0] = args[0].view(1, -1, 1, 1)
        y = args[0] + args[1] if self.kind == "ADD" else args[0] * args[1]
        env[self.outputs[0]] = self.act(y) if self.act is not None else y


class PoolOp(Op):
    """AVERAGE_POOL_2D (TF 'SAME' averages over the valid pixels only) / MAX_POOL_2D."""

    def __init__(self, kind, inputs, outputs, kernel, stride, same: bool, act):
        super().__init__(kind, inputs[:1], outputs)
        self.kernel, self.stride, self.same, self.act = tuple(kernel), tuple(stride), same, act

    def forward(self, x):
        h, w = x.shape[-2:]
        if self.same:
            top, bottom = same_pads(h, self.kernel[0], self.stride[0])
            left, right = same_pads(w, self.kernel[1], self.stride[1])
        else:
            top = bottom = left = right = 0
        pads = (left, right, top, bottom)
        if self.kind == "MAX_POOL_2D":
            y = F.max_pool2d(F.pad(x, pads, value=float("-inf")) if any(pads) else x, self.kernel, self.stride)
        else:
            y = F.avg_pool2d(F.pad(x, pads) if any(pads) else x, self.kernel, self.stride)
            if any(pads):
                ones = F.pad(torch.ones(1, 1, h, w, dtype=x.dtype, device=x.device), pads)
                y = y / F.avg_pool2d(ones, self.kernel, self.stride)
        return self.act(y) if self.act is not None else y


class ShapeOp(Op):
    """RESHAPE / SQUEEZE (in TFLite's NHWC order; batch taken from the input) and MEAN."""

    def __init__(self, kind, inputs, outputs, shape=None, axes=None, keep_dims=False):
        super().__init__(kind, inputs[:1], outputs)
        self.shape, self.axes, self.keep_dims = shape, axes, keep_dims

    def forward(self, x):
        if self.kind == "MEAN":
            axes = [a % x.ndim for a in self.axes]
            if x.ndim == 4 and self.keep_dims:  # stays a 4-D map: NCHW
                return x.mean(dim=[NCHW_AXIS[a] for a in axes], keepdim=True)
            return _to_nhwc(x).mean(dim=axes, keepdim=self.keep_dims)  # TFLite's order
        nhwc = _to_nhwc(x)
        if self.kind == "SQUEEZE":
            dims = [a % nhwc.ndim for a in self.axes] if self.axes else [d for d in range(1, nhwc.ndim) if nhwc.shape[d] == 1]
            y = nhwc
            for d in sorted(dims, reverse=True):
                y = y.squeeze(d)
            return _from_nhwc(y)
        shape = list(self.shape)
        if len(shape) > 1 and shape[0] in (1, -1):  # the file's batch of 1: this call's batch
            shape[0] = x.shape[0]
        return _from_nhwc(nhwc.reshape(shape))


class PadOp(Op):
    def __init__(self, inputs, outputs, pads: list[int], value: float = 0.0):
        super().__init__("PAD", inputs[:1], outputs)
        self.pads, self.value = pads, value

    def forward(self, x):
        p = [self.pads[i : i + 2] for i in range(0, len(self.pads), 2)]  # per NHWC dim: (before, after)
        if x.ndim == 4:
            if p[0] != [0, 0]:
                raise UserError("tflite PAD on the batch dimension is not supported")
            flat = (*p[2], *p[1], *p[3])  # torch: last dim first -> W, H, then C
            return F.pad(x, flat, value=self.value)
        flat = [v for pair in reversed(p) for v in pair]
        return F.pad(x, flat, value=self.value)


class ConcatOp(Op):
    def __init__(self, inputs, outputs, axis: int, act):
        super().__init__("CONCATENATION", inputs, outputs)
        self.axis, self.act = axis, act

    def run(self, env):
        xs = [env[i] for i in self.inputs]
        axis = self.axis % xs[0].ndim
        y = torch.cat(xs, dim=NCHW_AXIS[axis] if xs[0].ndim == 4 else axis)
        env[self.outputs[0]] = self.act(y) if self.act is not None else y


class UnaryOp(Op):
    FNS = {"RELU": F.relu, "RELU6": F.relu6, "LOGISTIC": torch.sigmoid, "QUANTIZE": lambda x: x,
           "DEQUANTIZE": lambda x: x, "SOFTMAX": None}

    def __init__(self, kind, inputs, outputs, beta: float = 1.0):
        super().__init__(kind, inputs[:1], outputs)
        self.beta = beta

    def forward(self, x):
        if self.kind == "SOFTMAX":
            return torch.softmax(self.beta * x, dim=1 if x.ndim == 4 else -1)
        return self.FNS[self.kind](x)


SUPPORTED = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD", "MUL", "AVERAGE_POOL_2D", "MAX_POOL_2D",
             "MEAN", "PAD", "RESHAPE", "SQUEEZE", "CONCATENATION", "SOFTMAX", "RELU", "RELU6", "LOGISTIC",
             "QUANTIZE", "DEQUANTIZE")


class FakeQuant(torch.autograd.Function):
    """Round to the tensor's integer grid and clamp to its type's range (straight-through gradient inside)."""

    @staticmethod
    def forward(ctx, x, scale, zero, qmin, qmax):
        q = torch.clamp(torch.round(x / scale) + zero, qmin, qmax)
        ctx.save_for_backward((q > qmin) & (q < qmax))
        return (q - zero) * scale

    @staticmethod
    def backward(ctx, grad):
        (inside,) = ctx.saved_tensors
        return grad * inside, None, None, None, None


class TFLiteModule(nn.Module):
    """The converted graph: float32 input (N, C, H, W) normalized as the adapter's Preprocess says.
    `activation_quant` (tensor index -> (scale, zero point, qmin, qmax)) holds the activations' quantization;
    `simulate_quantization = True` rounds and clamps every quantized activation to its grid, as the integer
    runtime stores them (labelled option `quantize_activations`; off by default: a plain float network)."""

    def __init__(self, ops: list[Op], input_index: int, output_index: int, drop_background: bool,
                 activation_quant: dict | None = None, simulate_quantization: bool = False):
        super().__init__()
        self.ops = nn.ModuleList(ops)
        self.input_index, self.output_index, self.drop_background = input_index, output_index, drop_background
        self.activation_quant = dict(activation_quant or {})
        self.simulate_quantization = simulate_quantization

    def _quant(self, env: dict, index: int) -> None:
        params = self.activation_quant.get(index)
        if params is not None:
            env[index] = FakeQuant.apply(env[index], *params)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        env = {self.input_index: x}
        if self.simulate_quantization:
            self._quant(env, self.input_index)
        for op in self.ops:
            op.run(env)
            if self.simulate_quantization:
                for index in op.outputs:
                    self._quant(env, index)
        y = env[self.output_index]
        y = y.reshape(y.shape[0], -1) if y.ndim > 2 else y
        return y[:, 1:] if self.drop_background else y


def _conv(graph: Graph, op, kind: str, label: str) -> Op:
    inputs, outputs = [int(v) for v in op.InputsAsNumpy()], [int(v) for v in op.OutputsAsNumpy()]
    weight = graph.real(inputs[1])
    if weight is None:
        raise UserError(f"tflite model {label!r}: {kind} with a non-constant filter is not supported")
    bias = graph.real(inputs[2]) if len(inputs) > 2 and inputs[2] >= 0 else None
    if kind == "CONV_2D":
        opts = graph.options(op, "Conv2DOptions")
        w = torch.from_numpy(weight).permute(0, 3, 1, 2)  # (O, KH, KW, I) -> (O, I, KH, KW)
        groups = graph.shape(inputs[0])[3] // w.shape[1]
    else:
        opts = graph.options(op, "DepthwiseConv2DOptions")
        w = torch.from_numpy(weight).permute(3, 0, 1, 2)  # (1, KH, KW, O) -> (O, 1, KH, KW)
        groups = graph.shape(inputs[0])[3]
    out_ch, _, kh, kw = w.shape
    in_ch = graph.shape(inputs[0])[3]
    stride, dilation = (opts.StrideH(), opts.StrideW()), (opts.DilationHFactor(), opts.DilationWFactor())
    same = opts.Padding() == 0
    cls = SameConv2d if same else nn.Conv2d
    conv = cls(in_ch, out_ch, (kh, kw), stride, 0, dilation, groups, bias=bias is not None)
    with torch.no_grad():
        conv.weight.copy_(w)
        if bias is not None:
            conv.bias.copy_(torch.from_numpy(bias))
    return ConvOp(kind, inputs, outputs, conv, _activation(opts.FusedActivationFunction(), label))


def _build_op(graph: Graph, op, label: str) -> Op:
    kind = graph.op_name(op)
    inputs, outputs = [int(v) for v in op.InputsAsNumpy()], [int(v) for v in op.OutputsAsNumpy()]
    if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        return _conv(graph, op, kind, label)
    if kind == "FULLY_CONNECTED":
        opts = graph.options(op, "FullyConnectedOptions")
        weight = graph.real(inputs[1])
        bias = graph.real(inputs[2]) if len(inputs) > 2 and inputs[2] >= 0 else None
        linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(weight))
            if bias is not None:
                linear.bias.copy_(torch.from_numpy(bias))
        act = _activation(opts.FusedActivationFunction() if opts else 0, label)
        return LinearOp(inputs, outputs, linear, act, bool(opts.KeepNumDims()) if opts else False)
    if kind in ("ADD", "MUL"):
        opts = graph.options(op, "AddOptions" if kind == "ADD" else "MulOptions")
        const = {}
        for slot, index in enumerate(inputs):
            value = graph.real(index)
            if value is not None:
                t = torch.from_numpy(value)
                const[slot] = t.permute(0, 3, 1, 2).contiguous() if t.ndim == 4 else t
        return BinaryOp(kind, inputs, outputs, _activation(opts.FusedActivationFunction() if opts else 0, label), const)
    if kind in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
        opts = graph.options(op, "Pool2DOptions")
        return PoolOp(kind, inputs, outputs, (opts.FilterHeight(), opts.FilterWidth()), (opts.StrideH(), opts.StrideW()),
                      opts.Padding() == 0, _activation(opts.FusedActivationFunction(), label))
    if kind == "RESHAPE":
        shape = graph.ints(inputs[1]) if len(inputs) > 1 and inputs[1] >= 0 else []
        if not shape:
            opts = graph.options(op, "ReshapeOptions")
            shape = [int(v) for v in opts.NewShapeAsNumpy()] if opts is not None and opts.NewShapeLength() else []
        return ShapeOp(kind, inputs, outputs, shape=shape or graph.shape(outputs[0]))
    if kind == "SQUEEZE":
        opts = graph.options(op, "SqueezeOptions")
        return ShapeOp(kind, inputs, outputs, axes=[int(v) for v in opts.SqueezeDimsAsNumpy()] if opts and opts.SqueezeDimsLength() else [])
    if kind == "MEAN":
        opts = graph.options(op, "ReducerOptions")
        return ShapeOp(kind, inputs, outputs, axes=graph.ints(inputs[1]), keep_dims=bool(opts.KeepDims()) if opts else False)
    if kind in ("PAD", "PADV2"):
        value = 0.0
        if kind == "PADV2" and len(inputs) > 2:
            value = float(graph.real(inputs[2]).reshape(-1)[0])
        return PadOp(inputs, outputs, graph.ints(inputs[1]), value)
    if kind == "CONCATENATION":
        opts = graph.options(op, "ConcatenationOptions")
        return ConcatOp(inputs, outputs, opts.Axis(), _activation(opts.FusedActivationFunction(), label))
    if kind == "SOFTMAX":
        opts = graph.options(op, "SoftmaxOptions")
        return UnaryOp(kind, inputs, outputs, float(opts.Beta()) if opts else 1.0)
    if kind in UnaryOp.FNS:
        return UnaryOp(kind, inputs, outputs)
    raise UserError(f"tflite model {label!r}: operator {kind} is not supported by the tflite source; "
                    f"supported: {', '.join(SUPPORTED)}")


def activation_quantization(graph: Graph) -> dict[int, tuple[float, int, int, int]]:
    """index -> (scale, zero point, qmin, qmax) of every per-tensor quantized integer activation."""
    out = {}
    for index in range(graph.graph.TensorsLength()):
        dtype = NUMPY_TYPES.get(graph.tensor(index).Type())
        quant = graph.quantization(index)
        if quant is None or dtype not in (np.uint8, np.int8, np.int16) or quant[0].size != 1:
            continue
        buf = graph.model.Buffers(graph.tensor(index).Buffer())
        if buf is not None and buf.DataLength():
            continue  # a constant
        info = np.iinfo(dtype)
        out[index] = (float(quant[0][0]), int(quant[1][0]), int(info.min), int(info.max))
    return out


def convert(data: bytes, label: str = "tflite", drop_background: bool = False,
            quantize_activations: bool = False) -> tuple[TFLiteModule, Graph]:
    """The torch module of a TFLite flatbuffer's main subgraph (see the module doc), and the parsed graph."""
    graph = Graph(data, label)
    g = graph.graph
    if g.InputsLength() != 1 or g.OutputsLength() != 1:
        raise UserError(f"tflite model {label!r}: the tflite source takes graphs of one input and one output, "
                        f"this one has {g.InputsLength()} and {g.OutputsLength()}")
    ops = [_build_op(graph, g.Operators(i), label) for i in range(g.OperatorsLength())]
    output = int(g.Outputs(0))
    tail = len(ops)
    while tail and ops[tail - 1].kind in ("QUANTIZE", "DEQUANTIZE") and ops[tail - 1].outputs[0] == output:
        output, tail = ops[tail - 1].inputs[0], tail - 1  # identities in float
    if tail and ops[tail - 1].kind == "SOFTMAX" and ops[tail - 1].outputs[0] == output:  # logits: its input
        output, tail = ops[tail - 1].inputs[0], tail - 1
    ops = ops[:tail]
    if drop_background:
        classes = int(np.prod(graph.shape(output)[1:]))
        if classes < 2:
            raise UserError(f"tflite model {label!r}: drop_background needs a class output, this one has {classes}")
    return TFLiteModule(ops, int(g.Inputs(0)), output, drop_background, activation_quantization(graph),
                        quantize_activations), graph


def input_normalization(graph: Graph) -> tuple[list[float], list[float]] | None:
    """mean/std (pixel space [0, 1]) from the input tensor's quantization; None for a float input."""
    index = int(graph.graph.Inputs(0))
    quant = graph.quantization(index)
    kind = graph.tensor(index).Type()
    if quant is None or NUMPY_TYPES.get(kind) not in (np.uint8, np.int8):
        return None
    scale, zero, _ = quant
    offset = -128 if NUMPY_TYPES[kind] is np.int8 else 0
    return [float((zero[0] - offset) / 255.0)], [float(1.0 / (255.0 * scale[0]))]


def load_tflite(spec: dict, make_preprocess) -> ConvertedAdapter:
    """The adapter for a "tflite" spec (`make_preprocess`: bench.models.sources._preprocess)."""
    if "path" not in spec:
        raise UserError(f"tflite model spec {spec!r} needs a 'path' key (the .tflite file)")
    path = Path(str(spec["path"])).expanduser()
    label = str(spec.get("name") or path.stem)
    if not path.is_file():
        raise UserError(f"tflite model {label!r}: file {str(path)!r} does not exist")
    digest = check_sha256(path, spec.get("sha256"), label)
    drop = spec.get("drop_background", False)
    if not isinstance(drop, bool):
        raise UserError(f"tflite model {label!r}: drop_background must be true or false, got {drop!r}")
    simulate = spec.get("quantize_activations", False)
    if not isinstance(simulate, bool):
        raise UserError(f"tflite model {label!r}: quantize_activations must be true or false, got {simulate!r}")
    module, graph = convert(path.read_bytes(), label, drop, simulate)
    shape = graph.shape(int(graph.graph.Inputs(0)))
    if len(shape) != 4:
        raise UserError(f"tflite model {label!r}: input shape {shape} is not an image (1, H, W, C)")
    defaults = {"input_size": [shape[3], shape[1], shape[2]], "crop_pct": SLIM_CROP_PCT, "interpolation": "bilinear"}
    norm = input_normalization(graph)
    if norm is not None:
        defaults["mean"], defaults["std"] = norm
    pre = preprocess_from_spec(label, spec, defaults, make_preprocess)
    options = [k for k, on in (("drop_background", drop), ("quantize_activations", simulate)) if on]
    arch = spec.get("arch") or f"tflite/{path.name}" + "".join(f"+{k}" for k in options)
    return ConvertedAdapter(label, module, pre, str(arch), "tflite", file_sha256=digest)

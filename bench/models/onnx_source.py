"""Source "onnx": an ONNX file converted to a trainable torch module by onnx2torch.

    {source = "onnx", path = "resnet18.onnx", mean = [0.485, 0.456, 0.406], std = [0.229, 0.224, 0.225]}

The graph takes the normalized (N, C, H, W) input; `mean` and `std` are required (an ONNX file does not
record them); `input_size` defaults to the graph input's static (C, H, W) (an int means a square RGB input),
and `crop_pct`, `resize`, `interpolation` set the geometry for images of other sizes. The output is the
graph's first output (logits). `sha256`, when given, must be the file's digest; the digest is always recorded
(`adapter.file_sha256`). onnxruntime is not needed to load; tests compare the conversion with it.
`layout = "nhwc"` is for graphs that read (N, H, W, C) (e.g. exported from Keras, like the Marabou CIFAR-10
networks): the harness's (N, C, H, W) images are permuted before the graph.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from bench.errors import UserError, install_hint
from bench.models.converted import PREPROCESS_KEYS, ConvertedAdapter, preprocess_from_spec
from bench.models.python_source import check_sha256

ONNX_KEYS = {"path", "name", "arch", "sha256", "layout", *PREPROCESS_KEYS}
LAYOUTS = ("nchw", "nhwc")  # "nhwc": the graph reads (N, H, W, C) (e.g. converted from Keras); fed by a permute


class FirstOutput(nn.Module):
    """The converted graph, returning its first output when it has several; `nhwc` graphs get the
    harness's (N, C, H, W) images permuted to (N, H, W, C)."""

    def __init__(self, graph: nn.Module, nhwc: bool = False):
        super().__init__()
        self.graph = graph
        self.nhwc = nhwc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.graph(x.permute(0, 2, 3, 1) if self.nhwc else x)
        return out[0] if isinstance(out, (tuple, list)) else out


def _static_input_size(model) -> list[int] | None:
    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise UserError(f"the onnx source takes graphs of one input, this one has {len(inputs)}")
    dims = inputs[0].type.tensor_type.shape.dim
    values = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    if len(values) != 4 or any(v is None for v in values[1:]):
        return None
    return [int(v) for v in values[1:]]


def load_onnx(spec: dict, make_preprocess) -> ConvertedAdapter:
    """The adapter for an "onnx" spec (`make_preprocess`: bench.models.sources._preprocess)."""
    if "path" not in spec:
        raise UserError(f"onnx model spec {spec!r} needs a 'path' key (the .onnx file)")
    path = Path(str(spec["path"])).expanduser()
    label = str(spec.get("name") or path.stem)
    if not path.is_file():
        raise UserError(f"onnx model {label!r}: file {str(path)!r} does not exist")
    try:
        import onnx
        from onnx2torch import convert
    except ImportError:
        raise UserError(f"the onnx model source needs onnx and onnx2torch: {install_hint('convert')}") from None
    digest = check_sha256(path, spec.get("sha256"), label)
    try:
        model = onnx.load(str(path))
    except Exception as e:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise UserError(f"onnx model {label!r}: cannot read {str(path)!r} ({type(e).__name__}: {e})") from None
    layout = str(spec.get("layout", "nchw")).lower()
    if layout not in LAYOUTS:
        raise UserError(f"onnx model {label!r}: layout {spec.get('layout')!r} is not one of {', '.join(LAYOUTS)}")
    size = _static_input_size(model)
    if size and layout == "nhwc":
        size = [size[2], size[0], size[1]]
    try:
        graph = convert(model)
    except Exception as e:  # noqa: BLE001 - onnx2torch refuses an operator: one line naming it
        text = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise UserError(f"onnx model {label!r}: onnx2torch cannot convert it ({type(e).__name__}: {text})") from None
    defaults = {"input_size": size} if size else {}
    pre = preprocess_from_spec(label, spec, defaults, make_preprocess)
    arch = spec.get("arch") or f"onnx/{path.name}"
    return ConvertedAdapter(label, FirstOutput(graph, layout == "nhwc"), pre, str(arch), "onnx", file_sha256=digest)

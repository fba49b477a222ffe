"""Pieces shared by the model sources of converted or externally packaged models (`python`, `tflite`, `onnx`).

- `SameConv2d`: a Conv2d with TensorFlow's 'SAME' padding, computed from the input size (when the total
  padding is odd, the extra row/column goes after, as TensorFlow and TFLite do).
- `ConvertedAdapter`: a ModelAdapter whose `first_linear()` also covers a first `SameConv2d`, by the
  exact symmetric equivalent FirstLinear can express: an odd SAME padding (p, p + 1) becomes a symmetric
  padding p + 1 with one leading zero tap prepended to the kernel (output size and values unchanged).
  It also carries `file_sha256`, the digest of the file the weights came from.
- `preprocess_from_spec`: the spec's mean/std/input_size (an int means a square RGB input) over a
  module's own defaults, with an optional `crop_pct` and `interpolation`.
"""

from __future__ import annotations

import math
from dataclasses import replace
from functools import cached_property

import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.core.errors import UserError
from bench.models.adapter import ModelAdapter, Preprocess
from bench.models.first_linear import FirstLinear


def same_pads(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow 'SAME' padding along one axis: (before, after), after >= before."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow's 'SAME' padding for whatever input size it gets (its own `padding` stays 0)."""

    def pads(self, h: int, w: int) -> tuple[int, int, int, int]:
        """(top, bottom, left, right) for an (h, w) input."""
        top, bottom = same_pads(h, self.kernel_size[0], self.stride[0], self.dilation[0])
        left, right = same_pads(w, self.kernel_size[1], self.stride[1], self.dilation[1])
        return top, bottom, left, right

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom, left, right = self.pads(*x.shape[-2:])
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def symmetric_equivalent(fl: FirstLinear, conv: SameConv2d) -> FirstLinear:
    """The FirstLinear of a SameConv2d at fl.input_shape as a symmetric-padding conv (see the module doc)."""
    _, h, w = fl.input_shape
    top, bottom, left, right = conv.pads(h, w)
    extra_h, extra_w = bottom - top, right - left
    if (extra_h or extra_w) and fl.dilation != (1, 1):
        raise UserError(f"first conv {fl.module_name!r}: an odd 'SAME' padding with dilation {fl.dilation} "
                        "has no symmetric equivalent for first_linear()")
    weight = F.pad(fl.weight, (extra_w, 0, extra_h, 0)) if extra_h or extra_w else fl.weight
    return replace(fl, weight=weight, padding=(bottom, right))


class ConvertedAdapter(ModelAdapter):
    """A ModelAdapter for converted/packaged models: first_linear() understands SameConv2d; `file_sha256`
    binds the model to the file its weights were read from."""

    def __init__(self, *args, file_sha256: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.file_sha256 = file_sha256

    @cached_property
    def _first_linear(self) -> FirstLinear:
        fl = ModelAdapter._first_linear.func(self)
        module = dict(self.module.named_modules()).get(fl.module_name)
        return symmetric_equivalent(fl, module) if isinstance(module, SameConv2d) else fl

    @cached_property
    def identity(self) -> dict:
        out = dict(super().identity)
        if self.file_sha256:
            out["file_sha256"] = self.file_sha256
        return out


PREPROCESS_KEYS = ("mean", "std", "input_size", "crop_pct", "interpolation", "resize")


def preprocess_from_spec(label: str, spec: dict, defaults: dict | None, make) -> Preprocess:
    """Preprocess from the spec over `defaults` (a module's own preprocessing, e.g. EfficientNetLite's);
    `make` is bench.models.sources._preprocess (validation and its one-line errors)."""
    merged = {**(defaults or {}), **{k: spec[k] for k in PREPROCESS_KEYS if k in spec}}
    missing = [k for k in ("mean", "std", "input_size") if k not in merged]
    if missing:
        raise UserError(f"model {label!r} needs {', '.join(missing)} in its spec (the model defines none)")
    size = merged["input_size"]
    if isinstance(size, int) and not isinstance(size, bool):
        size = [3, size, size]
    extra = {}
    if merged.get("crop_pct") is not None:
        pct = merged["crop_pct"]
        if not isinstance(pct, (int, float)) or isinstance(pct, bool) or not 0 < pct <= 1:
            raise UserError(f"model {label!r}: crop_pct must be a number in (0, 1], got {pct!r}")
        extra["crop_pct"] = float(pct)
    return make(label, merged["mean"], merged["std"], size, extra, merged.get("resize"), merged.get("interpolation"))

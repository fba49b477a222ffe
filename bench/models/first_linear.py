"""The first linear map of a model, expressed in the model's pixel input space.

`FirstLinear` holds W (with the preprocessing scale folded in, so that deltas in
pixel space map exactly to W's input) and the exact map between the input tensor
and W's input space: identity/flatten for a Linear, unfold/fold with the layer's
own kernel, stride, padding and dilation for a Conv2d (patch embeddings of
ViT/DeiT/Swin are Conv2d layers with stride == kernel).

It also keeps the layer's bias and the normalisation's mean (`shift`, pixel space), so that
`output(x)` is the first layer's actual output on the model's own normalised input,
L(x) = layer((x - mean) / std), and `output_deviation` is the first-layer deviation every image
protocol records: ||L(x~) - L(x)|| / ||L(x)|| per sample (bias and mean included; zero padding
stays zero in the normalised input, as the model pads it).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.errors import UserError


@dataclass
class FirstLinear:
    kind: str  # "linear" or "conv"
    weight: torch.Tensor  # linear: (m, C*H*W); conv: (c_out, c_in, kh, kw)
    input_shape: tuple[int, int, int]
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    module_name: str = ""
    bias: torch.Tensor | None = None  # the layer's bias (m,) or (c_out,); None: no bias
    shift: torch.Tensor | None = None  # the normalisation's mean per input channel (C,), pixel space; None: 0

    def to(self, dtype: torch.dtype | None = None, device: torch.device | None = None) -> "FirstLinear":
        """The same map with W in another dtype (float32 for fast bulk measurements) or on another device."""
        move = lambda t: None if t is None else t.to(dtype=dtype, device=device)  # noqa: E731
        return replace(self, weight=move(self.weight), bias=move(self.bias), shift=move(self.shift))

    @property
    def matrix(self) -> torch.Tensor:
        """W as an (m, n) matrix acting on one (unfolded) patch."""
        return self.weight.reshape(self.weight.shape[0], -1)

    @property
    def kernel_size(self) -> tuple[int, int]:
        return tuple(self.weight.shape[-2:]) if self.kind == "conv" else (1, 1)

    @property
    def non_overlapping(self) -> bool:
        """True when every input pixel falls in exactly one patch (exact nullspace per patch)."""
        if self.kind == "linear":
            return True
        kh, kw = self.kernel_size
        c, h, w = self.input_shape
        return (
            self.stride == (kh, kw)
            and self.padding == (0, 0)
            and self.dilation == (1, 1)
            and h % kh == 0
            and w % kw == 0
        )

    def unfold(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, n, L): W's input vectors, one column per patch position."""
        if self.kind == "linear":
            return x.reshape(x.shape[0], -1, 1)
        return F.unfold(x, self.kernel_size, dilation=self.dilation, padding=self.padding, stride=self.stride)

    def fold(self, cols: torch.Tensor) -> torch.Tensor:
        """(N, n, L) -> (N, C, H, W), summing where patches overlap (adjoint of unfold)."""
        c, h, w = self.input_shape
        if self.kind == "linear":
            return cols.reshape(cols.shape[0], c, h, w)
        return F.fold(cols, (h, w), self.kernel_size, dilation=self.dilation, padding=self.padding, stride=self.stride)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """The linear part W x of the first layer (no bias, no mean shift), flattened per sample."""
        if self.kind == "linear":
            return x.reshape(x.shape[0], -1) @ self.weight.T
        y = F.conv2d(x, self.weight, stride=self.stride, padding=self.padding, dilation=self.dilation)
        return y.reshape(y.shape[0], -1)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """W^T y, mapped back to the (N, C, H, W) input layout."""
        c, h, w = self.input_shape
        if self.kind == "linear":
            return (y @ self.weight).reshape(y.shape[0], c, h, w)
        out_hw = self.output_hw
        y = y.reshape(y.shape[0], self.weight.shape[0], *out_hw)
        # output_padding restores the last rows/columns the conv reads (or skips) when
        # (size + 2 * padding - span) is not a multiple of the stride; F.pad with zeros would drop them
        kh, kw = self.kernel_size
        extra = tuple(
            (n + 2 * p - d * (k - 1) - 1) % s
            for n, p, d, k, s in zip((h, w), self.padding, self.dilation, (kh, kw), self.stride)
        )
        return F.conv_transpose2d(
            y, self.weight, stride=self.stride, padding=self.padding, output_padding=extra, dilation=self.dilation
        )

    @property
    def output_hw(self) -> tuple[int, int]:
        _, h, w = self.input_shape
        kh, kw = self.kernel_size
        oh = (h + 2 * self.padding[0] - self.dilation[0] * (kh - 1) - 1) // self.stride[0] + 1
        ow = (w + 2 * self.padding[1] - self.dilation[1] * (kw - 1) - 1) // self.stride[1] + 1
        return oh, ow

    def relative_deviation(self, clean: torch.Tensor, released: torch.Tensor, clean_norm: torch.Tensor | None = None) -> torch.Tensor:
        """Per-sample ||W(x~) - W(x)|| / ||W x|| of the linear part alone (no mean, no bias: the text and VLM
        protocols' measure); pass ||W x|| to reuse it. Image protocols record `output_deviation`."""
        if clean_norm is None:
            clean_norm = self.apply(clean).norm(dim=1)
        return self.apply(released - clean).norm(dim=1) / clean_norm.clamp_min(1e-12)

    def output(self, x: torch.Tensor) -> torch.Tensor:
        """L(x): the layer's output on the normalised input (x - mean) / std (std folded into W), plus its
        bias, flattened per sample."""
        if self.shift is not None:
            x = x - self.shift.to(dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        y = self.apply(x)
        if self.bias is not None:
            b = self.bias.to(dtype=y.dtype, device=y.device)
            y = y + (b if self.kind == "linear" else b.repeat_interleave(y.shape[1] // b.numel()))
        return y

    def output_norm(self, x: torch.Tensor) -> torch.Tensor:
        """Per-sample ||L(x)||: the denominator of `output_deviation` (computed once per clean split and reused)."""
        return self.output(x).norm(dim=1)

    def output_deviation(self, clean: torch.Tensor, released: torch.Tensor,
                         clean_norm: torch.Tensor | None = None) -> torch.Tensor:
        """Per-sample ||L(x~) - L(x)|| / ||L(x)||: the relative change of the first layer's actual output
        (L(x~) - L(x) = W(x~ - x): the mean and the bias cancel in the numerator, not in the denominator).
        `clean_norm`: ||L(x)|| as `output_norm(clean)` gave it (the same bits), to skip recomputing it."""
        if clean_norm is None:
            clean_norm = self.output_norm(clean)
        return self.apply(released - clean).norm(dim=1) / clean_norm.clamp_min(1e-12)

def _pair(v) -> tuple[int, int]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def find_first_linear(
    forward, modules: nn.Module, model_input: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor | None = None
) -> FirstLinear:
    """Locate the first Linear/Conv2d run by `forward(model_input)` and check it reads the input directly.

    `scale` is the per-channel factor from pixel space to the model input (1/std); it is
    folded into W so that W acts on pixel-space deltas. `shift` is the per-channel mean
    subtracted before it (kept with the layer's bias for `FirstLinear.output`).
    """
    calls: list[tuple[str, nn.Module, torch.Tensor]] = []
    names = {m: n for n, m in modules.named_modules()}

    def hook(module, args):
        if not calls and args and isinstance(args[0], torch.Tensor):
            calls.append((names.get(module, "?"), module, args[0].detach()))

    handles = [m.register_forward_pre_hook(hook) for m in modules.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    try:
        with torch.no_grad():
            forward(model_input)
    finally:
        for h in handles:
            h.remove()
    if not calls:
        raise UserError("model has no Linear or Conv2d layer; first_linear() needs one")
    name, module, seen = calls[0]
    c, h, w = model_input.shape[1:]
    if seen.numel() != model_input.numel() or not torch.equal(seen.reshape(-1), model_input.reshape(-1)):
        raise UserError(
            f"first linear layer {name!r} does not read the model input directly; "
            "give the adapter a first_linear() override for this architecture"
        )
    weight = module.weight.detach().to(device="cpu", dtype=torch.float64)  # W lives on the CPU: fits run there
    bias = None if module.bias is None else module.bias.detach().to(device="cpu", dtype=torch.float64)
    shift = None if shift is None else shift.to(device="cpu", dtype=torch.float64).expand(c).clone()
    scale = scale.to(torch.float64)
    if isinstance(module, nn.Linear):
        shape_ok = seen.shape[-1] == module.in_features == c * h * w
    else:
        shape_ok = tuple(seen.shape) == tuple(model_input.shape)
    if not shape_ok:
        raise UserError(
            f"first linear layer {name!r} reads the input reshaped to {tuple(seen.shape)}; "
            "give the adapter a first_linear() override for this architecture"
        )
    if isinstance(module, nn.Linear):
        per_feature = scale.repeat_interleave(h * w)
        return FirstLinear("linear", weight * per_feature, (c, h, w), module_name=name, bias=bias, shift=shift)
    if module.groups != 1 or isinstance(module.padding, str) or module.padding_mode != "zeros":
        raise UserError(f"first conv {name!r} uses groups/padding mode the unfold map does not cover")
    return FirstLinear(
        "conv",
        weight * scale.view(1, -1, 1, 1),
        (c, h, w),
        stride=_pair(module.stride),
        padding=_pair(module.padding),
        dilation=_pair(module.dilation),
        module_name=name,
        bias=bias,
        shift=shift,
    )

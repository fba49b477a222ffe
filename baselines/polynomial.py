"""Polynomial surrogates of a network's nonlinear operations (ALGOSPEC's network instantiation).

`PolynomialMode` is a `TorchFunctionMode`: inside it, every ReLU, GELU, softmax (also inside
scaled-dot-product attention), LayerNorm and 2x2 max-pool the module calls is computed by
polynomials. Each call site (the n-th nonlinear call of a forward pass) has its own Chebyshev
interpolant of the exact function, of a given degree, over the input range that site saw on
probe data (`fit_surrogates`, numpy.polynomial.Chebyshev). What each site approximates:
relu(x), gelu(x); softmax: exp(x) and 1/sum; LayerNorm: 1/sqrt(var + eps); max(a, b) =
b + relu(a - b). `depth` limits how many sites (in call order) are replaced (0 = all), so the
error can be measured as it accumulates through the network.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

EXACT = {
    "relu": lambda x: np.maximum(x, 0.0),
    "gelu": lambda x: 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2))),
    "exp": np.exp,
    "inv": lambda x: 1.0 / x,
    "rsqrt": lambda x: 1.0 / np.sqrt(x),
}
POSITIVE = {"inv", "rsqrt"}  # domains that must stay above 0


class Chebyshev:
    """A Chebyshev interpolant of EXACT[kind] on [lo, hi], evaluated in torch (differentiable)."""

    def __init__(self, kind: str, lo: float, hi: float, degree: int):
        if hi - lo < 1e-6:
            lo, hi = lo - 0.5, hi + 0.5
        if kind in POSITIVE:
            lo = max(lo, 1e-6)
        self.kind, self.lo, self.hi, self.degree = kind, lo, hi, degree
        fit = np.polynomial.Chebyshev.interpolate(EXACT[kind], degree, domain=[lo, hi])
        self.coef = torch.tensor(fit.coef, dtype=torch.float64)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        t = (2 * x - (self.lo + self.hi)) / (self.hi - self.lo)
        coef = self.coef.to(x.dtype)
        prev, cur = torch.ones_like(t), t
        out = coef[0] * prev + (coef[1] * cur if len(coef) > 1 else 0)
        for c in coef[2:]:
            prev, cur = cur, 2 * t * cur - prev
            out = out + c * cur
        return out

    def max_error(self, points: int = 2001) -> float:
        """Max |surrogate - exact| on the fitted interval, relative to max |exact| there."""
        x = np.linspace(self.lo, self.hi, points)
        exact = EXACT[self.kind](x)
        return float(np.abs(self(torch.tensor(x)).numpy() - exact).max() / max(np.abs(exact).max(), 1e-12))


class _Sites:
    """Per call site: the observed input range (recording) or the fitted surrogate (evaluating)."""

    def __init__(self):
        self.ranges: list[tuple[str, float, float]] = []
        self.surrogates: list[Chebyshev] | None = None
        self.depth = 0
        self.i = 0

    def __call__(self, kind: str, x: torch.Tensor) -> torch.Tensor:
        i, self.i = self.i, self.i + 1
        if self.surrogates is None:  # recording
            lo, hi = float(x.detach().min()), float(x.detach().max())
            if i < len(self.ranges):
                _, lo0, hi0 = self.ranges[i]
                self.ranges[i] = (kind, min(lo, lo0), max(hi, hi0))
            else:
                self.ranges.append((kind, lo, hi))
            return _exact(kind, x)
        if i >= len(self.surrogates) or (self.depth and i >= self.depth):
            return _exact(kind, x)
        return self.surrogates[i](x)


def _exact(kind: str, x: torch.Tensor) -> torch.Tensor:
    return {"relu": torch.relu, "gelu": lambda t: F.gelu(t), "exp": torch.exp, "inv": torch.reciprocal,
            "rsqrt": torch.rsqrt}[kind](x)


class PolynomialMode(TorchFunctionMode):
    """Computes the nonlinear functional calls of a forward pass through `sites`."""

    def __init__(self, sites: _Sites):
        super().__init__()
        self.sites = sites

    def _softmax(self, x, dim):
        e = self.sites("exp", x - x.mean(dim, keepdim=True))  # shift-invariant; keeps exp's range small
        return e * self.sites("inv", e.sum(dim, keepdim=True))

    def _attention(self, query, key, value, embed_dim, heads, in_w, in_b, out_w, out_b):
        """nn.MultiheadAttention's computation ((L, N, E) inputs), softmax through the surrogates."""
        length, batch, _ = query.shape
        hd = embed_dim // heads
        q, k, v = F.linear(query, in_w, in_b).chunk(3, -1) if query is key is value else (
            F.linear(t, w, b) for t, w, b in zip((query, key, value), in_w.chunk(3), in_b.chunk(3)))
        q, k, v = (t.reshape(t.shape[0], batch * heads, hd).transpose(0, 1) for t in (q, k, v))
        attn = self._softmax(q @ k.transpose(-2, -1) / math.sqrt(hd), -1) @ v
        out = attn.transpose(0, 1).reshape(length, batch, embed_dim)
        return F.linear(out, out_w, out_b), None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        s = self.sites
        if func in (F.relu, torch.relu, torch.Tensor.relu):
            return s("relu", args[0])
        if func is F.gelu:
            return s("gelu", args[0])
        if func in (F.softmax, torch.softmax, torch.Tensor.softmax):
            dim = kwargs.get("dim", args[1] if len(args) > 1 else -1)
            return self._softmax(args[0], dim)
        if func is F.scaled_dot_product_attention:
            q, k, v = args[:3]
            if kwargs.get("attn_mask") is not None or kwargs.get("is_causal"):
                return func(*args, **kwargs)
            scale = kwargs.get("scale") or 1.0 / math.sqrt(q.shape[-1])
            return self._softmax(q @ k.transpose(-2, -1) * scale, -1) @ v
        if func is F.multi_head_attention_forward and _plain_self_attention(args, kwargs):
            return self._attention(*args[:7], args[11], args[12])
        if func is F.layer_norm:
            x, shape = args[0], args[1]
            weight = kwargs.get("weight", args[2] if len(args) > 2 else None)
            bias = kwargs.get("bias", args[3] if len(args) > 3 else None)
            eps = kwargs.get("eps", args[4] if len(args) > 4 else 1e-5)
            dims = tuple(range(-len(shape), 0))
            centred = x - x.mean(dims, keepdim=True)
            out = centred * s("rsqrt", (centred * centred).mean(dims, keepdim=True) + eps)
            return out * (weight if weight is not None else 1) + (bias if bias is not None else 0)
        if func in (F.max_pool2d, torch.max_pool2d) and _is_2x2(args, kwargs):
            x = args[0]
            a, b = x[..., 0::2, 0::2], x[..., 0::2, 1::2]
            c, d = x[..., 1::2, 0::2], x[..., 1::2, 1::2]
            top, bottom = b + s("relu", a - b), d + s("relu", c - d)
            return bottom + s("relu", top - bottom)
        return func(*args, **kwargs)


def _plain_self_attention(args, kwargs) -> bool:
    """No masks, no extra key/value biases, no dropout: what the zoo's attention uses."""
    return (len(args) >= 13 and args[7] is None and args[8] is None and not args[9] and not kwargs.get("training")
            and kwargs.get("key_padding_mask") is None and kwargs.get("attn_mask") is None
            and not kwargs.get("is_causal") and not kwargs.get("use_separate_proj_weight"))


def _is_2x2(args, kwargs) -> bool:
    k = kwargs.get("kernel_size", args[1] if len(args) > 1 else None)
    stride = kwargs.get("stride", args[2] if len(args) > 2 else None)
    pad = kwargs.get("padding", args[3] if len(args) > 3 else 0)
    return k in (2, (2, 2)) and stride in (None, 2, (2, 2), []) and pad in (0, (0, 0))


class PolynomialNetwork(torch.nn.Module):
    """`module` with its nonlinear calls replaced by fitted polynomial surrogates."""

    def __init__(self, module: torch.nn.Module, sites: _Sites):
        super().__init__()
        self.module, self.sites = module, sites

    def forward(self, x):
        self.sites.i = 0
        with PolynomialMode(self.sites):
            return self.module(x)

    def summary(self) -> dict:
        kinds = [sur.kind for sur in self.sites.surrogates]
        replaced = len(kinds) if not self.sites.depth else min(self.sites.depth, len(kinds))
        return {
            "sites": len(kinds),
            "sites_replaced": replaced,
            "site_kinds": {k: kinds.count(k) for k in dict.fromkeys(kinds)},
            "max_fit_error": max((sur.max_error() for sur in self.sites.surrogates[:replaced]), default=0.0),
        }


@torch.no_grad()
def fit_surrogates(module: torch.nn.Module, probe: torch.Tensor, degree: int, depth: int = 0,
                   margin: float = 0.1) -> PolynomialNetwork:
    """Record every site's input range on `probe` (model inputs), widen it by `margin`, fit each site."""
    sites = _Sites()
    module.eval()
    for i in range(0, len(probe), 128):
        sites.i = 0
        with PolynomialMode(sites):
            module(probe[i : i + 128])
    surrogates = []
    for kind, lo, hi in sites.ranges:
        pad = margin * (hi - lo)
        surrogates.append(Chebyshev(kind, lo - pad, hi + pad, degree))
    sites.surrogates, sites.depth = surrogates, depth
    return PolynomialNetwork(module, sites)

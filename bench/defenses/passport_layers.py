"""DeepIPR passport layers and the operations on them (bench.defenses.locks.Passport owns the defense): the
passport-scaled normalization, where passports sit in a network, forging passports from the released weights,
and recomputing running statistics. Torch only: both the passport lock and the forged-passport fine-tuning
attack (bench.attacks.model_attacks) use these, neither through the other."""

from __future__ import annotations

import copy

import torch
import torch.nn as nn


class PassportNorm(nn.Module):
    """A BatchNorm whose scale and bias come from the preceding convolution applied to passports."""

    def __init__(self, bn: nn.BatchNorm2d, conv: nn.Conv2d, p_gamma: torch.Tensor, p_beta: torch.Tensor):
        super().__init__()
        self.bn = nn.BatchNorm2d(bn.num_features, eps=bn.eps, momentum=bn.momentum, affine=False)
        self.bn.load_state_dict({k: v for k, v in bn.state_dict().items() if k.startswith("running") or k == "num_batches_tracked"})
        self.conv = [conv]  # shared with the network, not registered twice
        # persistent: the passports are part of the model's identity (weights digest), so the key holder's,
        # the released (zero) and a forged passport network are three models to the forward-pass cache
        self.register_buffer("p_gamma", p_gamma)
        self.register_buffer("p_beta", p_beta)

    def set_passports(self, p_gamma: torch.Tensor, p_beta: torch.Tensor) -> None:
        self.p_gamma, self.p_beta = p_gamma, p_beta

    def learn_passports(self, learn: bool = True) -> None:
        """Make the passports trainable parameters (an attacker fitting forged passports) or, with
        `learn=False`, fixed buffers again (their learned values kept)."""
        for name in ("p_gamma", "p_beta"):
            value = getattr(self, name).detach().clone()
            delattr(self, name)
            if learn:
                self.register_parameter(name, nn.Parameter(value))
            else:
                self.register_buffer(name, value)

    def forward(self, x):
        conv = self.conv[0]
        gamma = conv(self.p_gamma.to(x.dtype)).mean((0, 2, 3))
        beta = conv(self.p_beta.to(x.dtype)).mean((0, 2, 3))
        return self.bn(x) * gamma.view(1, -1, 1, 1) + beta.view(1, -1, 1, 1)


def conv_bn_pairs(module: nn.Module) -> list[tuple[str, nn.Conv2d, str, nn.BatchNorm2d]]:
    """(conv name, conv, bn name, bn) for every BatchNorm2d registered right after a Conv2d of matching width."""
    named = [(n, m) for n, m in module.named_modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]
    return [(cn, c, bn_name, bn) for (cn, c), (bn_name, bn) in zip(named, named[1:])
            if isinstance(c, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and c.out_channels == bn.num_features]


def set_submodule(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, new)


def layer_inputs(module: nn.Module, convs: list[nn.Conv2d], x: torch.Tensor) -> list[torch.Tensor]:
    """What each convolution receives when the (normalized) batch x runs through the module."""
    seen: dict[int, torch.Tensor] = {}

    def keep(i):
        def hook(module, args, output):  # returns None: the output is left as it is
            seen.setdefault(i, args[0].detach())
        return hook

    hooks = [c.register_forward_hook(keep(i)) for i, c in enumerate(convs)]
    try:
        with torch.no_grad():
            module.eval()(x)
    finally:
        for h in hooks:
            h.remove()
    return [seen[i] for i in range(len(convs))]


def recalibrate(module: nn.Module, norms: list[nn.BatchNorm2d], data, preprocess, batch: int = 64) -> None:
    """Running statistics recomputed as the exact average over `data` with the final weights. The passport
    scale moves with the convolution weights, so the moving average of training lags behind them (on the
    digits ResNet it left the evaluated network at 18% where the same weights in training mode reach 90%)."""
    momenta = [bn.momentum for bn in norms]
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average
    module.train()
    with torch.no_grad():
        for i in range(0, len(data.labels), batch):
            module(preprocess(data.images[i : i + batch]))
    for bn, momentum in zip(norms, momenta):
        bn.momentum = momentum
    module.eval()


def passport_norms(module: nn.Module) -> list[PassportNorm]:
    """The passport layers of a network, in registration order (empty for a network without them)."""
    return [m for m in module.modules() if isinstance(m, PassportNorm)]


def with_passports(released: nn.Module, passports: list[tuple[torch.Tensor, torch.Tensor]]) -> nn.Module:
    """A copy of a passport network with `passports` (one (P_gamma, P_beta) per passport layer) in place."""
    module = copy.deepcopy(released)
    for norm, (pg, pb) in zip(passport_norms(module), passports):
        norm.set_passports(pg, pb)
    return module.eval()


def forge_passports(released: nn.Module, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """DeepIPR's fake passports, made from what an attacker has: the layer-input features of two of its own
    (normalized) images `x[:2]` through the released weights, layer by layer (each layer's passports are its
    input features once the earlier layers run with the passports already forged; the later layers' zeros do
    not affect earlier inputs)."""
    norms = passport_norms(released)
    forged: list[tuple[torch.Tensor, torch.Tensor]] = []
    for i in range(len(norms)):
        module = with_passports(released, forged + [(torch.zeros_like(n.p_gamma), torch.zeros_like(n.p_beta))
                                                    for n in norms[len(forged):]])
        f = layer_inputs(module, [n.conv[0] for n in passport_norms(module)], x)[i]
        forged.append((f[:1].clone(), f[1:2].clone()))
    return forged


def rescale_passports(released: nn.Module, passports: list, gamma: float = 1.0, beta: float = 0.1) -> list:
    """Passports scaled so that the scale and bias they give have mean magnitude `gamma` and `beta` (a fresh
    BatchNorm's 1 and 0.1; the same free choice of passport norm the defense makes): raw features give scales
    in the hundreds."""
    out = []
    for norm, (pg, pb) in zip(passport_norms(released), passports):
        conv = norm.conv[0]
        with torch.no_grad():
            g, b = conv(pg).mean((0, 2, 3)).abs().mean(), conv(pb).mean((0, 2, 3)).abs().mean()
        out.append((pg * float(gamma / g.clamp_min(1e-12)), pb * float(beta / b.clamp_min(1e-12))))
    return out

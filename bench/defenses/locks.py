"""Model locks beyond CoreLocker (issue 23): a secret-key input transform, passport layers and
weight obfuscation. Each is a `ModelDefense` of the model-authorization protocol: `protect` releases
a model, the key holder runs it with the key, and the released model is scored without it (and, where
the paper defines one, with a forged key), under the same fine-tuning and pruning attacks as
CoreLocker.

- `key-transform`: MaungMaung AprilPyone and Hitoshi Kiya, "A Protection Method of Trained CNN Model
  with a Secret Key from Unauthorized Access", APSIPA Transactions on Signal and Information Processing
  10(1), e10 (2021), doi 10.1017/ATSIP.2021.9. The model is trained on images transformed block-wise with a secret key (the same
  key-seeded permutation of the M x M x C values of every block: pixel shuffling; optionally a
  negative-positive flip x -> 1 - x of the key-selected values); a user without the key feeds plain
  images, an attacker with a guessed key feeds images transformed with a wrong key. As in the paper the
  network is trained from scratch on transformed images (`init = "scratch"`, re-initialised with the
  seed); `init = "finetune"` starts from the given weights instead, which is cheaper but leaves the
  model working on plain images too (on digits the fine-tuned released model keeps ~97% on plain input).
- `passport`: Lixin Fan, Kam Woh Ng and Chee Seng Chan, "Rethinking Deep Neural Network Ownership
  Verification: Embedding Passports to Defeat Ambiguity Attacks", NeurIPS 2019 (DeepIPR). Every
  BatchNorm that follows a convolution loses its learned affine: its scale and bias become
  gamma = Avg(W * P_gamma) and beta = Avg(W * P_beta), the convolution's own kernel W applied to the
  passports P and averaged per channel. Passports are the layer-input features of two secret
  defender images; the model is fine-tuned with them for `epochs`. Without the passports an attacker
  forges some (`forge`): features of the attacker's own images through the released model
  ("other-image", the paper's fake-passport attack), or uniform noise ("random").
- `nnsplitter`: Tong Zhou, Yukui Luo, Shaolei Ren and Xiaolin Xu, "NNSplitter: An Active Defense
  Solution for DNN Model via Automated Weight Obfuscation", ICML 2023. A few weights of the
  convolutional/linear layers are perturbed to destroy accuracy while staying inside each layer's
  weight range (so the obfuscated model's weight distribution looks normal); the key holds their
  positions and original values (kept in a TEE in the paper). The paper chooses filters with an RL
  controller; here the `n_filters` filters of highest loss-gradient saliency are chosen and within them
  the `n_weights` weights of highest |gradient| (labelled departure), then the perturbation is
  optimised by signed gradient ascent on the defender's data within the range.
"""

from __future__ import annotations

import copy
import hashlib
import time
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.defenses.base import DEFENSES, Evaluation, ModelDefense, Protected
from bench.defenses.corelocker import digest_tensor, key_bytes, unlock
from bench.core.errors import UserError
from bench.attacks.model_attacks import train_module
from bench.models.adapter import weights_digest


def _adapter(model, module: nn.Module, label: str | None = None):
    return type(model)(label or model.name, module, model.preprocess, model.arch, model.source)


def _size(key: dict) -> int:
    """Bytes of the key as a safetensors file (what the key holder stores)."""
    from safetensors.torch import save

    return len(save({k: v.contiguous() for k, v in key.items()}))


def _ce(preprocess):
    """Cross-entropy of a module on pixel-space images (the model's normalization applied first)."""
    return lambda m, x, y: F.cross_entropy(m(preprocess(x)), y)


def _seed(seed: int, salt: str) -> torch.Generator:
    h = hashlib.sha256(f"{salt}|{seed}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(h[:8], "little") & ((1 << 63) - 1))


# ---------------------------------------------------------------------------------------------------------
# Secret-key block-wise transform


def block_transform(x: torch.Tensor, perm: torch.Tensor, flip: torch.Tensor, block: int) -> torch.Tensor:
    """Apply the key to pixel-space images (N, C, H, W): in every M x M block, the M*M*C values are
    permuted by `perm` and those where `flip` is set become 1 - value. H and W must be multiples of M."""
    n, c, h, w = x.shape
    blocks = x.reshape(n, c, h // block, block, w // block, block).permute(0, 2, 4, 3, 5, 1)
    flat = blocks.reshape(n, h // block, w // block, block * block * c)[..., perm]
    flat = torch.where(flip.to(flat.device), 1 - flat, flat)
    out = flat.reshape(n, h // block, w // block, block, block, c).permute(0, 5, 1, 3, 2, 4)
    return out.reshape(n, c, h, w)


class KeyedInput(nn.Module):
    """The key holder's model: normalized input -> pixel space -> key transform -> normalized -> model."""

    def __init__(self, inner: nn.Module, perm, flip, block: int, mean, std):
        super().__init__()
        self.inner, self.block = inner, block
        # persistent: the key is part of the key holder's model identity (a wrong key is another model, whose
        # forward passes must not share the cache with the right key's)
        self.register_buffer("perm", perm)
        self.register_buffer("flip", flip)
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x):
        pixels = x * self.std.to(x.dtype) + self.mean.to(x.dtype)
        keyed = block_transform(pixels, self.perm, self.flip, self.block)
        return self.inner((keyed - self.mean.to(x.dtype)) / self.std.to(x.dtype))


def reinitialize(module: nn.Module, seed: int) -> None:
    """Fresh seeded weights for every layer that can reset itself (training from scratch)."""
    torch.manual_seed(seed)
    for m in module.modules():
        if m is not module and hasattr(m, "reset_parameters"):
            m.reset_parameters()


def draw_key(channels: int, block: int, flip: bool, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    size = block * block * channels
    perm = torch.randperm(size, generator=gen)
    mask = (torch.rand(size, generator=gen) < 0.5) if flip else torch.zeros(size, dtype=torch.bool)
    return perm, mask


@DEFENSES.register
class KeyTransform(ModelDefense):
    name = "key-transform"
    paper = {"authors": "MaungMaung AprilPyone, Hitoshi Kiya",
             "title": "A Protection Method of Trained CNN Model with a Secret Key from Unauthorized Access",
             "venue": "APSIPA TSIP 10(1) e10, 2021",
             "link": "https://doi.org/10.1017/ATSIP.2021.9"}
    description = ("Key-based block-wise transform (AprilPyone & Kiya, APSIPA TSIP 2021): trained on key-shuffled "
                   "blocks; plain or wrong-key input fails")
    trains = True
    defaults = {"block": 4, "flip": False, "init": "scratch", "epochs": 20, "lr": 2e-3}
    param_schema = {"block": {"type": "integer", "minimum": 1}, "epochs": {"type": "integer", "minimum": 0},
                    "init": {"enum": ["scratch", "finetune"]},
                    "lr": {"type": "number", "exclusiveMinimum": 0}}

    def protect(self, model, train, seed: int) -> Protected:
        start, p = time.perf_counter(), self.params
        block, (c, h, w) = int(p["block"]), model.preprocess.input_size
        if h % block or w % block:
            raise UserError(f"key-transform: block {block} must divide the model's input size {h}x{w}")
        perm, flip = draw_key(c, block, bool(p["flip"]), _seed(seed, "key-transform"))
        module = copy.deepcopy(model.module)
        if p["init"] == "scratch":
            reinitialize(module, seed)
        keyed = KeyedInput(module, perm, flip, block, model.preprocess.mean, model.preprocess.std)
        train_module(keyed, _ce(model.preprocess), train, train.labels, int(p["epochs"]), float(p["lr"]), seed)
        key = {"perm": perm, "flip": flip.to(torch.uint8)}
        cost = {"key_bytes": _size(key), "protect_ms": (time.perf_counter() - start) * 1e3,
                "retraining": True, "architecture_changed": False, "block": block}
        return Protected(module.eval(), key, cost)

    def _keyed(self, protected, model, perm, flip):
        return KeyedInput(protected.released, perm, flip, int(self.params["block"]), model.preprocess.mean,
                          model.preprocess.std).eval()

    def authorized(self, protected, model):
        return _adapter(model, self._keyed(protected, model, protected.key["perm"], protected.key["flip"].bool()))

    def evaluations(self, protected, model, others):
        out = super().evaluations(protected, model, others)
        perm, flip = draw_key(model.preprocess.input_size[0], int(self.params["block"]), bool(self.params["flip"]),
                              _seed(1, "key-transform-wrong-key"))
        if torch.equal(perm, protected.key["perm"]):  # a drawn key equal to the secret would not be a wrong key
            perm = perm.roll(1)
        wrong = _adapter(model, self._keyed(protected, model, perm, flip), f"{model.name}[wrong-key]")
        return out + [Evaluation(wrong.name, wrong, "unauthorized")]


# ---------------------------------------------------------------------------------------------------------
# Passport layers (DeepIPR)


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


def _set_submodule(root: nn.Module, name: str, new: nn.Module) -> None:
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


@dataclass
class PassportProtected(Protected):
    """The released passport network plus the attacker's forged passports (not a secret: anyone with the
    released weights and some images of the task can make them)."""

    forged: list = field(default_factory=list)


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


@DEFENSES.register
class Passport(ModelDefense):
    name = "passport"
    paper = {"authors": "Lixin Fan, Kam Woh Ng, Chee Seng Chan",
             "title": "Rethinking Deep Neural Network Ownership Verification: Embedding Passports to Defeat Ambiguity "
                      "Attacks", "venue": "NeurIPS 2019", "link": "https://github.com/kamwoh/DeepIPR"}
    description = ("DeepIPR passport layers (Fan et al., NeurIPS 2019): BatchNorm scale/bias from secret passports; "
                   "forged passports fail")
    trains = True
    defaults = {"epochs": 20, "lr": 2e-3, "forge": "other-image", "init": "scratch"}
    param_schema = {"forge": {"enum": ["other-image", "random"]}, "init": {"enum": ["scratch", "finetune"]}, "epochs": {"type": "integer", "minimum": 0},
                    "lr": {"type": "number", "exclusiveMinimum": 0}}

    @staticmethod
    def _passports(pairs, feats: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Layer-input features of two images (one for the scale, one for the bias), each scaled so the
        scale and bias they give start at the magnitude of the BatchNorm's affine (mean |gamma|, mean
        |beta|; 1 and 0.1 after a fresh initialisation): raw features give scales in the hundreds, which
        amplify the gap between batch and running statistics (a free choice of passport norm)."""
        out = []
        for (_, conv, _, bn), f in zip(pairs, feats):
            pg, pb = f[:1].clone(), f[1:2].clone()
            with torch.no_grad():
                g, b = conv(pg).mean((0, 2, 3)).abs().mean(), conv(pb).mean((0, 2, 3)).abs().mean()
            want_g = bn.weight.detach().abs().mean() if bn.affine else torch.tensor(1.0)
            want_b = bn.bias.detach().abs().mean().clamp_min(0.1) if bn.affine else torch.tensor(0.1)
            out.append((pg * float(want_g / g.clamp_min(1e-12)), pb * float(want_b / b.clamp_min(1e-12))))
        return out

    def protect(self, model, train, seed: int) -> Protected:
        start, p = time.perf_counter(), self.params
        module = copy.deepcopy(model.module)
        pairs = conv_bn_pairs(module)
        if not pairs:
            raise UserError(f"passport: {model.name!r} has no convolution followed by a BatchNorm2d to carry passports")
        gen = _seed(seed, "passport")
        pick = torch.randperm(len(train.labels), generator=gen)[:2]
        features = layer_inputs(module, [c for _, c, _, _ in pairs], model.preprocess(train.images[pick]))
        if p["init"] == "scratch":  # the paper trains the passport network from scratch
            reinitialize(module, seed)
        passports = self._passports(pairs, features)
        for (_, conv, bn_name, bn), (pg, pb) in zip(pairs, passports):
            _set_submodule(module, bn_name, PassportNorm(bn, conv, pg, pb))
        train_module(module, _ce(model.preprocess), train, train.labels, int(p["epochs"]), float(p["lr"]), seed)
        recalibrate(module, [n.bn for n in self._norms(module)], train, model.preprocess)
        key = {}
        for i, (pg, pb) in enumerate(passports):
            key[f"passport{i}.gamma"], key[f"passport{i}.beta"] = pg, pb
        cost = {"key_bytes": _size(key), "protect_ms": (time.perf_counter() - start) * 1e3,
                "retraining": True, "architecture_changed": True, "passport_layers": len(pairs),
                "forge": p["forge"]}
        released = copy.deepcopy(module).eval()
        for norm in self._norms(released):  # the passports are never released: zeros in their place
            norm.set_passports(torch.zeros_like(norm.p_gamma), torch.zeros_like(norm.p_beta))
        others = torch.randperm(len(train.labels), generator=_seed(seed, "passport-forge"))
        others = others[~torch.isin(others, pick)][:2]
        return PassportProtected(released, key, cost, forged=self.forge(released, model, train.images[others], seed))

    @staticmethod
    def _norms(module: nn.Module) -> list[PassportNorm]:
        return passport_norms(module)

    def _with(self, released: nn.Module, passports: list[tuple[torch.Tensor, torch.Tensor]]) -> nn.Module:
        return with_passports(released, passports)

    def authorized(self, protected, model):
        n = len(self._norms(protected.released))
        return _adapter(model, self._with(protected.released, [(protected.key[f"passport{i}.gamma"],
                                                                 protected.key[f"passport{i}.beta"]) for i in range(n)]))

    def forge(self, released: nn.Module, model, images: torch.Tensor, seed: int) -> list:
        """The attacker's passports: layer-input features of two images of its own through the released
        weights (the paper's fake passports), or uniform noise in [-1, 1]."""
        if self.params["forge"] == "random":
            gen = _seed(seed, "passport-random")
            return [(torch.rand(n.p_gamma.shape, generator=gen) * 2 - 1, torch.rand(n.p_beta.shape, generator=gen) * 2 - 1)
                    for n in passport_norms(released)]
        return forge_passports(released, model.preprocess(images))

    def evaluations(self, protected, model, others):
        forged = _adapter(model, self._with(protected.released, protected.forged), f"{model.name}[forged-passport]")
        return super().evaluations(protected, model, others) + [Evaluation(forged.name, forged, "unauthorized")]


# ---------------------------------------------------------------------------------------------------------
# NNSplitter weight obfuscation


@DEFENSES.register
class NNSplitter(ModelDefense):
    name = "nnsplitter"
    paper = {"authors": "Tong Zhou, Yukui Luo, Shaolei Ren, Xiaolin Xu",
             "title": "NNSplitter: An Active Defense Solution for DNN Model via Automated Weight Obfuscation",
             "venue": "ICML 2023"}
    description = ("NNSplitter (Zhou et al., ICML 2023): a few in-range weight perturbations destroy accuracy; the "
                   "key restores them")
    trains = False
    defaults = {"n_filters": 4, "n_weights": 64, "steps": 50, "step_size": 0.1, "samples": 512}
    param_schema = {"n_filters": {"type": "integer", "minimum": 1}, "n_weights": {"type": "integer", "minimum": 1},
                    "steps": {"type": "integer", "minimum": 0}, "step_size": {"type": "number", "exclusiveMinimum": 0},
                    "samples": {"type": "integer", "minimum": 1}}

    def protect(self, model, train, seed: int) -> Protected:
        start, p = time.perf_counter(), self.params
        released = copy.deepcopy(model.module).eval()
        gen = _seed(seed, "nnsplitter")
        pick = torch.randperm(len(train.labels), generator=gen)[: int(p["samples"])]
        x, y = model.preprocess(train.images[pick]), train.labels[pick]
        layers = {f"{n}.weight": m for n, m in released.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
        params = dict(released.named_parameters())
        released.zero_grad()
        F.cross_entropy(released(x), y).backward()
        # filters (output units) ranked by gradient saliency sum |g * w| over all layers
        units = []
        for name in layers:
            g, w = params[name].grad, params[name].detach()
            sal = (g * w).abs().flatten(1).sum(1)
            units += [(float(s), name, i) for i, s in enumerate(sal)]
        units.sort(key=lambda t: (-t[0], t[1], t[2]))
        chosen = units[: int(p["n_filters"])]
        entries = []  # (|grad|, name, flat index) within the chosen filters
        for _, name, unit in chosen:
            g = params[name].grad[unit].flatten().abs()
            per = g.numel()
            entries += [(float(v), name, unit * per + j) for j, v in enumerate(g)]
        entries.sort(key=lambda t: (-t[0], t[1], t[2]))
        selected: dict[str, list[int]] = {}
        for _, name, idx in entries[: int(p["n_weights"])]:
            selected.setdefault(name, []).append(idx)
        original = {n: params[n].detach().clone() for n in selected}
        bounds = {n: (float(params[n].detach().min()), float(params[n].detach().max())) for n in selected}
        for _ in range(int(p["steps"])):
            released.zero_grad()
            F.cross_entropy(released(x), y).backward()
            with torch.no_grad():
                for name, idx in selected.items():
                    flat, grad = params[name].view(-1), params[name].grad.view(-1)
                    lo, hi = bounds[name]
                    span = hi - lo
                    i = torch.tensor(idx)
                    flat[i] = (flat[i] + float(p["step_size"]) * span * grad[i].sign()).clamp(lo, hi)
        released.zero_grad()
        key = {}
        for name, idx in sorted(selected.items()):
            i = torch.tensor(sorted(idx))
            key[f"{name}.values"] = original[name].flatten()[i].contiguous()
            key[f"{name}.index"] = i
        key["__model_digest__"] = digest_tensor(model.digest)
        key["__weights_digest__"] = digest_tensor(weights_digest(model.module))
        n_changed = sum(len(v) for v in selected.values())
        cost = {"key_bytes": len(key_bytes(key)), "key_values": n_changed, "protect_ms": (time.perf_counter() - start) * 1e3,
                "retraining": False, "architecture_changed": False,
                "fraction_of_params": n_changed / sum(q.numel() for q in params.values())}
        return Protected(released, key, cost)

    def authorized(self, protected, model):
        return _adapter(model, unlock(protected.released, protected.key, model.digest))

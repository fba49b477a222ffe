"""FHE baseline: CKKS encrypted inference with TenSEAL (Benaissa et al., 2021).

The key holder encrypts its (normalized) input under a CKKS context it alone holds the secret key
of; the server evaluates a polynomial copy of the model (ReLU -> x^2, fine-tuned) on the
ciphertext; the key holder decrypts the logits. Supported: a chain of Linear layers (the digits
MLP) optionally preceded by one single-channel, unpadded Conv2d (im2col packing, TenSEAL's
`conv2d_im2col`), with activations between layers. Biases of Linear layers are folded into the
matrix through a constant-1 slot that the square activation preserves.

Unauthorized = a party holding the public context (no secret key) and every ciphertext: it
(a) decrypts the encrypted logits with a secret key of its own under the same parameters and
(b) trains a nearest-class-mean classifier on ciphertext bytes of labelled images it encrypted
itself; its accuracy is the better of the two.
"""

from __future__ import annotations

import copy
import hashlib
import math
import time
from functools import cached_property

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from bench.defenses.base import DEFENSES, Evaluation, ModelDefense, Protected
from bench.errors import UserError, install_hint
from bench.models.adapter import ModelAdapter
from bench.models.zoo import Square


def _tenseal():
    try:
        import tenseal as ts
    except ImportError:
        raise UserError(f"defense 'fhe' needs TenSEAL: {install_hint('fhe')} (tenseal==0.3.18)") from None
    return ts


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score 95% interval for k successes out of n, in percent."""
    if n == 0:
        return (0.0, 100.0)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (100 * max(0.0, centre - half), 100 * min(1.0, centre + half))


def polynomial_copy(module: nn.Module) -> nn.Module:
    """A copy of `module` with every ReLU replaced by x^2."""
    out = copy.deepcopy(module)
    for parent in out.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.ReLU):
                setattr(parent, name, Square())
    return out


def compile_layers(module: nn.Module, input_size, slots: int) -> list[tuple]:
    """The module as [('conv', w, b, stride) | ('linear', w, b) | ('square',)], or a UserError."""
    layers = []
    for m in (m for m in module.modules() if not list(m.children())):
        if isinstance(m, (nn.Flatten, nn.Identity, nn.Dropout)):
            continue
        if isinstance(m, nn.Linear):
            layers.append(("linear", m.weight.detach().double(), m.bias.detach().double()))
        elif isinstance(m, Square):
            layers.append(("square",))
        elif isinstance(m, nn.Conv2d) and not layers and m.in_channels == 1 and m.padding == (0, 0) \
                and m.groups == 1 and m.dilation == (1, 1) and m.kernel_size[0] == m.kernel_size[1] \
                and m.stride[0] == m.stride[1]:
            layers.append(("conv", m.weight.detach().double(), m.bias.detach().double(), m.stride[0]))
        else:
            raise UserError(
                f"defense 'fhe' cannot evaluate layer {type(m).__name__} homomorphically; supported: an optional "
                "first single-channel unpadded Conv2d, then Linear layers with ReLU/x^2 between them"
            )
    probe = torch.rand(2, *input_size, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    if not torch.allclose(plain_forward(layers, probe), module.double()(probe), atol=1e-6):
        module.float()
        raise UserError("defense 'fhe': the model computes more than the chain of its layers (skip connections?)")
    module.float()
    widths = [probe[0].numel() + 1] + [lay[1].shape[0] + 1 for lay in layers if lay[0] == "linear"]
    if layers[0][0] == "conv":
        k, s = layers[0][1].shape[-1], layers[0][3]
        windows = ((input_size[1] - k) // s + 1) * ((input_size[2] - k) // s + 1)
        widths[0] = windows * k * k
    if max(widths) > slots:
        raise UserError(f"defense 'fhe': a layer needs {max(widths)} slots, more than the {slots} of this context; "
                        "raise poly_modulus_degree or use a smaller model")
    return layers


def plain_forward(layers: list[tuple], x: torch.Tensor) -> torch.Tensor:
    """The compiled chain in plaintext (float64), the reference for the encrypted run."""
    x = x.double()
    for lay in layers:
        if lay[0] == "conv":
            x = F.conv2d(x, lay[1], lay[2], stride=lay[3]).flatten(1)
        elif lay[0] == "linear":
            x = x.flatten(1) @ lay[1].T + lay[2]
        else:
            x = x * x
    return x


def make_context(params: dict, galois: bool = True):
    ts = _tenseal()
    ctx = ts.context(ts.SCHEME_TYPE.CKKS, params["poly_modulus_degree"], coeff_mod_bit_sizes=params["coeff_mod_bit_sizes"])
    ctx.global_scale = 2 ** params["global_scale_bits"]
    if galois:
        ctx.generate_galois_keys()
    return ctx


def _augment(w: torch.Tensor, b: torch.Tensor, keep_one: bool) -> list:
    """(in+1, out[+1]) matrix computing [W x + b, 1] from [x, 1]: the bias folded into the matmul."""
    m = torch.cat([w.T, b[None]], 0)
    if keep_one:
        one = torch.zeros(m.shape[0], 1, dtype=m.dtype)
        one[-1] = 1.0
        m = torch.cat([m, one], 1)
    return m.tolist()


def encrypt(ctx, layers: list[tuple], x: torch.Tensor):
    """Key holder: encrypt one normalized input (C, H, W) in the layout the first layer needs."""
    ts = _tenseal()
    if layers[0][0] == "conv":
        k, s = layers[0][1].shape[-1], layers[0][3]
        return ts.im2col_encoding(ctx, x[0].double().tolist(), k, k, s)
    return ts.ckks_vector(ctx, x.flatten().double().tolist() + [1.0]), None


def evaluate(enc, windows, layers: list[tuple], out_scale: float):
    """Server: the polynomial model on the ciphertext (no secret key needed)."""
    ts = _tenseal()
    linear_idx = [i for i, lay in enumerate(layers) if lay[0] == "linear"]
    constant_slot = layers[0][0] != "conv"  # the conv output carries no constant-1 slot
    for i, lay in enumerate(layers):
        last = i == linear_idx[-1]
        if lay[0] == "conv":
            chans = [enc.conv2d_im2col(k[0].tolist(), windows) + float(b) for k, b in zip(lay[1], lay[2])]
            enc = ts.CKKSVector.pack_vectors(chans)
        elif lay[0] == "square":
            enc = enc.square()
        else:
            w, b = (lay[1] / out_scale, lay[2] / out_scale) if last else (lay[1], lay[2])
            enc = enc.mm(_augment(w, b, not last)) if constant_slot else enc.mm(w.T.tolist()) + b.tolist()
    return enc


def logits_scale(layers: list[tuple], x: torch.Tensor, bound: float = 8.0) -> float:
    """Divisor that keeps decrypted logits within +-bound (CKKS precision); argmax is unchanged."""
    return max(1.0, float(plain_forward(layers, x).abs().max()) / bound)


class FHESession:
    """Encrypted runs of one protected model, shared by its authorized and unauthorized adapters."""

    def __init__(self, protected: Protected, model: ModelAdapter, params: dict, seed: int):
        self.protected, self.model, self.params, self.seed = protected, model, params, seed
        self.layers = protected.key["layers"]
        self.ctx = protected.key["context"]
        self.results: dict[str, dict] = {}  # row digest -> {"logits", "attacker"}

    def subset(self, n: int) -> list[int]:
        g = torch.Generator().manual_seed(self.seed)
        return sorted(torch.randperm(n, generator=g)[: self.params["samples"]].tolist())

    def run(self, x: torch.Tensor) -> list[dict | None]:
        """Encrypted inference on the seeded subset of rows of x; None for rows outside it."""
        rows = self.subset(len(x))
        keys = [hashlib.sha256(x[i].numpy().tobytes()).hexdigest() for i in rows]
        todo = [(i, k) for i, k in zip(rows, keys) if k not in self.results]
        if todo:
            self._run(x, todo)
        out: list[dict | None] = [None] * len(x)
        for i, k in zip(rows, keys):
            out[i] = self.results[k]
        return out

    def _run(self, x: torch.Tensor, todo: list[tuple[int, str]]) -> None:
        ts = _tenseal()
        attacker = Attacker(self.ctx, self.layers, self.protected.key["train"], self.params, self.seed)
        cost, times, ct_in, ct_out = self.protected.cost, [], [], []
        scale = float(self.protected.key["out_scale"])
        for i, key in todo:
            t0 = time.perf_counter()
            enc, windows = encrypt(self.ctx, self.layers, self.model.preprocess(x[i : i + 1])[0])
            ct_in.append(len(enc.serialize()))
            out = evaluate(enc, windows, self.layers, scale)
            blob = out.serialize()
            logits = torch.tensor(ts.ckks_vector_from(self.ctx, blob).decrypt(), dtype=torch.float32) * scale
            times.append((time.perf_counter() - t0) * 1000)
            ct_out.append(len(blob))
            self.results[key] = {"logits": logits, "attacker": attacker.guess(enc, blob)}
        cost.update({
            "fhe_samples": len(self.results),
            "time_per_sample_ms": float(np.mean(times)),
            "ciphertext_in_bytes": int(np.mean(ct_in)),
            "ciphertext_out_bytes": int(np.mean(ct_out)),
        })


class Attacker:
    """A party with the public context and the ciphertexts, without the secret key."""

    def __init__(self, ctx, layers, train: dict, params: dict, seed: int):
        ts = _tenseal()
        self.public = ts.context_from(ctx.serialize(save_secret_key=False))
        self.own = make_context(params, galois=False)  # its own secret key, same parameters
        self.layers = layers
        feats = torch.stack([self._bytes(encrypt(self.public, layers, xi)[0].serialize()) for xi in train["x"]])
        labels = train["y"]
        self.classes = sorted(set(labels.tolist()))
        self.centroids = torch.stack([feats[labels == c].mean(0) for c in self.classes])

    def _bytes(self, blob: bytes, n: int = 4096) -> torch.Tensor:
        a = np.frombuffer(blob[-n:], dtype=np.uint8).astype(np.float32)
        return torch.from_numpy(np.pad(a, (n - len(a), 0)))

    def own_decrypt(self, blob: bytes) -> list[float]:
        """Decrypt with the attacker's own secret key (same parameters, not the owner's key)."""
        return _tenseal().ckks_vector_from(self.own, blob).decrypt()

    def guess(self, enc_in, blob_out: bytes) -> dict:
        wrong = torch.tensor(self.own_decrypt(blob_out))
        d = torch.cdist(self._bytes(enc_in.serialize())[None], self.centroids)[0]
        return {"wrong_key": int(wrong.argmax()), "centroid": self.classes[int(d.argmin())]}


ATTACKS = ("wrong_key", "centroid")


class FHEAdapter(ModelAdapter):
    """Authorized (decrypted logits) or unauthorized (attacker's best guess, one-hot) on the subset; NaN elsewhere."""

    whole_split = True  # encrypts a seeded subset of the whole evaluated split: predict sees it in one call

    def __init__(self, name, module, preprocess, arch, source, session: FHESession, attack: str | None = None):
        super().__init__(name, module, preprocess, arch, source)
        self.session, self.attack = session, attack

    @cached_property
    def identity(self) -> dict:
        """The polynomial model plus what the encrypted run depends on: parameters, seed, who decrypts."""
        return {**super().identity, "fhe": self.session.params, "seed": self.session.seed, "attack": self.attack}

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        self.check_input(x)
        out = torch.full((len(x), 10), float("nan"))
        for i, r in enumerate(self.session.run(x)):
            if r is None:
                continue
            if self.attack is None:
                out[i, : len(r["logits"])] = r["logits"]
            else:
                out[i] = 0.0
                out[i, r["attacker"][self.attack]] = 1.0
        return out


@DEFENSES.register
class FHE(ModelDefense):
    name = "fhe"
    trains = True  # fine-tunes the square-activation copy; CKKS encryption draws fresh noise
    board = "baselines"  # ranked on its own board, beside NE Table 3
    description = "CKKS encrypted inference (TenSEAL) of a square-activation copy of the model; key holder decrypts"
    defaults = {
        "poly_modulus_degree": 8192,
        "coeff_mod_bit_sizes": [31, 26, 26, 26, 26, 26, 26, 31],
        "global_scale_bits": 26,
        "activation": "square",
        "samples": 30,
        "finetune_epochs": 10,
        "finetune_lr": 1e-3,
        "attacker_train": 50,
    }

    def __init__(self, **params):
        super().__init__(**params)
        if self.params["activation"] != "square":
            raise UserError(f"defense 'fhe': unknown activation {self.params['activation']!r}; valid choices: square")

    def protect(self, model: ModelAdapter, train, seed: int) -> Protected:
        t0 = time.perf_counter()
        poly = polynomial_copy(model.module)
        slots = self.params["poly_modulus_degree"] // 2
        compile_layers(poly, model.preprocess.input_size, slots)  # fail fast, before fine-tuning
        depth = len(self.params["coeff_mod_bit_sizes"]) - 2
        relus = sum(isinstance(m, nn.ReLU) for m in model.module.modules())
        if relus:  # a model with x^2 activations already (zoo fhe-*) is used as trained
            finetune(poly, model.preprocess, train, self.params["finetune_epochs"], self.params["finetune_lr"], seed)
        layers = compile_layers(poly.eval(), model.preprocess.input_size, slots)
        if len(layers) > depth:
            raise UserError(f"defense 'fhe': the model needs {len(layers)} multiplicative levels, the context has "
                            f"{depth}; add 26-bit primes to coeff_mod_bit_sizes (and raise poly_modulus_degree)")
        ctx = make_context(self.params)
        g = torch.Generator().manual_seed(seed)
        pick = torch.randperm(len(train.images), generator=g)[: self.params["attacker_train"]]
        xa = model.preprocess(train.images[pick])
        key = {"context": ctx, "layers": layers, "seed": seed, "out_scale": logits_scale(layers, model.preprocess(train.images)),
               "train": {"x": xa, "y": train.labels[pick]}}
        protect_ms = (time.perf_counter() - t0) * 1000
        public = len(ctx.serialize(save_secret_key=False, save_galois_keys=True, save_relin_keys=True))
        cost = {
            "protect_ms": protect_ms,
            "retraining": True,
            "architecture_changed": True,
            "notes": (f"{relus} ReLU replaced by x^2 and fine-tuned" if relus else "x^2 activations as trained")
            + "; inference on CKKS ciphertexts (TenSEAL)",
            "artifact_bytes": public,  # the public evaluation context the server needs
            "memory_bytes": public,
            "key_bytes": len(ctx.serialize(save_secret_key=True, save_galois_keys=False, save_relin_keys=False)),
            "levels_used": len(layers),
        }
        return Protected(poly, key, cost)

    def authorized(self, protected: Protected, model: ModelAdapter):
        return self.evaluations(protected, model, {})[1].adapter

    def evaluations(self, protected: Protected, model: ModelAdapter, others: dict) -> list[Evaluation]:
        session = protected.key.setdefault("session", FHESession(protected, model, self.params, protected.key["seed"]))
        def adapter(label, attack=None):
            return FHEAdapter(label, protected.released, model.preprocess, model.arch, model.source, session, attack)

        out = [Evaluation(model.name, model, "reference"),  # the plaintext model: Table 3's Plain cell
               Evaluation(f"{model.name}[fhe]", adapter(f"{model.name}[fhe]"), "authorized")]
        for attack in ATTACKS:
            label = f"{model.name}[fhe-no-key:{attack}]"
            out.append(Evaluation(label, adapter(label, attack), "unauthorized"))
        return out


def finetune(module: nn.Module, preprocess, train, epochs: int, lr: float, seed: int) -> None:
    """Fine-tune the polynomial copy on the defender's split (gradient clipping keeps x^2 stable)."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    x, y = preprocess(train.images), train.labels
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    module.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 64):
            idx = order[i : i + 64]
            loss = F.cross_entropy(module(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(module.parameters(), 1.0)
            opt.step()
    module.eval()


def extrapolate_fhe_cost(model_name: str, resolution: int = 224, ops_sampled: int = 4, params: dict | None = None) -> dict:
    """Encrypted time of the first conv of timm `model_name` on one image, extrapolated by FLOP ratio.

    Measured: encrypting the image (im2col, per input channel, in slot-sized chunks of windows)
    and `ops_sampled` single-channel `conv2d_im2col` products; the first layer's time is the
    measured time per product times the number of products it needs. Whole-model time = first
    layer time x (model FLOPs / first-layer FLOPs): a lower bound, since deeper layers need more
    levels (bootstrapping, which TenSEAL does not provide) and non-polynomial activations.
    """
    import timm

    ts, params = _tenseal(), {**FHE.defaults, **(params or {})}
    model = timm.create_model(model_name, pretrained=False, num_classes=10).eval()
    x = torch.rand(1, 3, resolution, resolution, generator=torch.Generator().manual_seed(0))
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    with FlopCounterMode(display=False) as total, torch.no_grad():
        model(x)
    with FlopCounterMode(display=False) as first, torch.no_grad():
        conv(x)
    k, s = conv.kernel_size[0], conv.stride[0]
    pad = F.pad(x, [conv.padding[0]] * 4)[0]
    side = (pad.shape[-1] - k) // s + 1
    pow2 = lambda n: 1 << (n - 1).bit_length()  # TenSEAL pads windows and kernels to powers of two
    per_ct = (params["poly_modulus_degree"] // 2) // pow2(k * k)  # windows per ciphertext
    tc = min(side, per_ct)
    tr = max(1, per_ct // pow2(tc))
    ctx = make_context(params)
    t0 = time.perf_counter()
    encs = []
    for c in range(pad.shape[0]):
        for r in range(0, side, tr):
            for q in range(0, side, tc):
                h, w = min(tr, side - r), min(tc, side - q)
                tile = pad[c, r * s : (r + h - 1) * s + k, q * s : (q + w - 1) * s + k]
                encs.append(ts.im2col_encoding(ctx, tile.double().tolist(), k, k, s))
    encrypt_ms = (time.perf_counter() - t0) * 1000
    kernels = conv.weight.detach().double()
    t0 = time.perf_counter()
    for j in range(ops_sampled):
        enc, windows = encs[j % len(encs)]
        enc.conv2d_im2col(kernels[j % len(kernels), 0].tolist(), windows)
    op_ms = (time.perf_counter() - t0) * 1000 / ops_sampled
    products = len(encs) * conv.out_channels
    first_ms = encrypt_ms + op_ms * products
    ratio = total.get_total_flops() / first.get_total_flops()
    return {
        "extrapolated": True,
        "model": model_name,
        "resolution": resolution,
        "method": "first conv measured on one image (encryption all, products sampled); whole model by FLOP ratio",
        "first_layer": type(conv).__name__,
        "encrypt_ms": encrypt_ms,
        "conv_product_ms": op_ms,
        "conv_products": products,
        "products_sampled": ops_sampled,
        "first_layer_ms": first_ms,
        "flops_total": int(total.get_total_flops()),
        "flops_first_layer": int(first.get_total_flops()),
        "extrapolated_ms_per_image": first_ms * ratio,
        "lower_bound": True,
        "poly_modulus_degree": params["poly_modulus_degree"],
    }

"""The embedded zoo: small models trained by the harness on digits, on first use, on the CPU.

Five architecture families (MLP, CNN, ResNet with BatchNorm, ViT with a patch
embedding, MLP-Mixer) x two seeds, plus `fhe-*` (a conv-then-MLP with x^2 activations, sized
for CKKS encrypted inference, baselines.fhe). Weights are cached as safetensors under the
cache root, keyed by a digest of the full training recipe, and reused afterwards.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save as save_bytes
from tqdm.auto import tqdm

from bench.cache import atomic_write_bytes, cache_root
from bench.data.digits import load_digits_split
from bench.errors import UserError
from bench.models.adapter import ModelAdapter, Preprocess, weights_digest

INPUT = (1, 32, 32)
CLASSES = 10


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(1024, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, CLASSES)
        )

    def forward(self, x):
        return self.net(x)


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.head = nn.Linear(32 * 4 * 4, CLASSES)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = nn.Sequential()
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.short(x))


class SmallResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.layers = nn.Sequential(BasicBlock(16, 16, 2), BasicBlock(16, 32, 2))
        self.head = nn.Linear(32, CLASSES)

    def forward(self, x):
        return self.head(self.layers(self.stem(x)).mean((2, 3)))


class TinyViT(nn.Module):
    """ViT with an 8x8 patch embedding (64 pixels -> 32 dims: a 32-dim nullspace per patch)."""

    def __init__(self, patch: int = 8, dim: int = 32, depth: int = 2, heads: int = 4):
        super().__init__()
        tokens = (INPUT[1] // patch) ** 2
        self.patch_embed = nn.Conv2d(INPUT[0], dim, patch, patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, tokens + 1, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, dim * 2, dropout=0.0, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, CLASSES)

    def forward(self, x):
        t = self.patch_embed(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls.expand(len(t), -1, -1), t], 1) + self.pos
        return self.head(self.norm(self.blocks(t))[:, 0])


class MixerBlock(nn.Module):
    def __init__(self, tokens: int, dim: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.token_mlp = nn.Sequential(nn.Linear(tokens, tokens * 2), nn.GELU(), nn.Linear(tokens * 2, tokens))
        self.channel_mlp = nn.Sequential(nn.Linear(dim, dim * 2), nn.GELU(), nn.Linear(dim * 2, dim))

    def forward(self, x):
        x = x + self.token_mlp(self.norm1(x).transpose(1, 2)).transpose(1, 2)
        return x + self.channel_mlp(self.norm2(x))


class TinyMixer(nn.Module):
    """MLP-Mixer with an 8x8 patch embedding (64 -> 32)."""

    def __init__(self, patch: int = 8, dim: int = 32, depth: int = 2):
        super().__init__()
        tokens = (INPUT[1] // patch) ** 2
        self.patch_embed = nn.Conv2d(INPUT[0], dim, patch, patch)
        self.blocks = nn.Sequential(*[MixerBlock(tokens, dim) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, CLASSES)

    def forward(self, x):
        t = self.patch_embed(x).flatten(2).transpose(1, 2)
        return self.head(self.norm(self.blocks(t)).mean(1))


class Square(nn.Module):
    """x^2: the activation CKKS evaluates exactly (one multiplication)."""

    def forward(self, x):
        return x * x


class FHENet(nn.Module):
    """FHE-sized CNN with x^2 activations: one 8x8 stride-8 single-channel conv (im2col-packable), then a
    2-layer MLP (baselines.fhe runs it encrypted)."""

    def __init__(self, channels: int = 4, hidden: int = 16):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(INPUT[0], channels, 8, 8), Square(), nn.Flatten(),
            nn.Linear(channels * (INPUT[1] // 8) ** 2, hidden), Square(), nn.Linear(hidden, CLASSES),
        )

    def forward(self, x):
        return self.net(x)


@dataclass(frozen=True)
class Recipe:
    """Everything that determines a zoo model's weights."""

    family: str
    seed: int
    epochs: int
    lr: float
    batch_size: int = 64
    weight_decay: float = 1e-4
    max_shift: int = 2

    @property
    def digest(self) -> str:
        arch = repr(FAMILIES[self.family][0]())  # a changed architecture never loads stale weights
        blob = json.dumps({"recipe": asdict(self), "arch": arch, "data": "digits/train"}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


FAMILIES: dict[str, tuple[type[nn.Module], str, int, float]] = {
    "mlp": (MLP, "MLP 1024-256-128-10 (Linear first layer, 768-dim nullspace)", 40, 2e-3),
    "cnn": (SmallCNN, "3-layer CNN, 3x3 stride-1 stem (overlapping, no per-patch nullspace)", 30, 2e-3),
    "resnet": (SmallResNet, "ResNet-6-style CNN with BatchNorm, 3x3 stride-1 stem, 2 residual blocks", 25, 2e-3),
    "vit": (TinyViT, "ViT, 8x8 patch embedding to 32 dims, 2 blocks", 80, 2e-3),
    "mixer": (TinyMixer, "MLP-Mixer, 8x8 patch embedding to 32 dims, 2 blocks", 80, 2e-3),
    "fhe": (FHENet, "FHE-sized CNN with x^2 activations: 8x8/8 conv to 4 channels, MLP 64-16-10 (for encrypted inference)", 15, 3e-3),
}
SEEDS = (0, 1)
DIGEST_KEY = "weights_sha256"  # safetensors metadata: the sha256 of the weights (bench.models.adapter.weights_digest)


def zoo_names() -> dict[str, str]:
    return {f"{fam}-s{seed}": f"{desc}, seed {seed}" for fam, (_, desc, _, _) in FAMILIES.items() for seed in SEEDS}


def recipe_for(name: str, epochs: int | None = None) -> Recipe:
    family, _, seed = name.rpartition("-s")
    if family not in FAMILIES or not seed.isdigit():
        raise UserError(f"unknown zoo model {name!r}; valid choices: {', '.join(zoo_names())}")
    _, _, default_epochs, lr = FAMILIES[family]
    return Recipe(family, int(seed), epochs or default_epochs, lr)


@lru_cache(maxsize=1)
def digits_preprocess() -> Preprocess:
    """Normalization statistics of the digits training split."""
    train = load_digits_split("train")
    return Preprocess((round(float(train.images.mean()), 6),), (round(float(train.images.std()), 6),), INPUT)


def _shift(x: torch.Tensor, gen: torch.Generator, max_shift: int) -> torch.Tensor:
    """Random translation by up to max_shift pixels, zero fill."""
    if max_shift == 0:
        return x
    dy, dx = torch.randint(-max_shift, max_shift + 1, (2,), generator=gen).tolist()
    padded = F.pad(x, (max_shift,) * 4)
    h, w = x.shape[-2:]
    return padded[..., max_shift + dy : max_shift + dy + h, max_shift + dx : max_shift + dx + w]


def train(recipe: Recipe, progress: bool = True) -> nn.Module:
    """Train one zoo model deterministically on the digits training split."""
    torch.manual_seed(recipe.seed)
    gen = torch.Generator().manual_seed(recipe.seed)
    model = FAMILIES[recipe.family][0]()
    pre = digits_preprocess()
    data = load_digits_split("train")
    x, y = data.images, data.labels
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    steps = recipe.epochs * ((len(x) + recipe.batch_size - 1) // recipe.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=steps)
    model.train()
    bar = tqdm(range(recipe.epochs), desc=f"train {recipe.family}-s{recipe.seed}", disable=not progress, leave=False)
    for _ in bar:
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), recipe.batch_size):
            idx = order[i : i + recipe.batch_size]
            xb = _shift(x[idx], gen, recipe.max_shift)
            loss = F.cross_entropy(model(pre(xb)), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


def zoo_path(name: str, recipe: Recipe, root: Path | None = None) -> Path:
    return Path(root or cache_root()) / "zoo" / f"{name}-{recipe.digest}.safetensors"


def load_zoo_model(name: str, epochs: int | None = None, progress: bool = True, root: Path | None = None) -> ModelAdapter:
    """The zoo model `name` (e.g. 'vit-s1'), trained and cached on first use under `root` (the cache root).

    The file records the sha256 of its weights (`weights_digest`); every load recomputes it, and a
    mismatch (a flipped bit, a file edited or swapped) is a one-line error, never used. A file
    written before digests were recorded gets its digest recorded on first load."""
    recipe = recipe_for(name, epochs)
    path = zoo_path(name, recipe, root)
    module = FAMILIES[recipe.family][0]()
    if path.exists():
        try:
            with safe_open(str(path), "pt") as f:
                metadata = f.metadata() or {}
            module.load_state_dict(load_file(str(path)))
        except Exception:  # an unreadable or ill-fitting file is retrained, never trusted
            path.unlink()
    if path.exists():
        expected, actual = metadata.get(DIGEST_KEY), weights_digest(module)
        if expected is None:  # written before digests: record it now
            _save(path, module, recipe)
        elif expected != actual:
            raise UserError(f"zoo weights {str(path)!r} fail their checksum (recorded {expected[:12]}..., found "
                            f"{actual[:12]}...); delete the file to retrain it, or run "
                            "`authbench cache clear --namespace zoo`")
    else:
        module = train(recipe, progress)
        _save(path, module, recipe)
    label = name if epochs is None else f"{name}@{epochs}ep"
    return ModelAdapter(label, module, digits_preprocess(), f"zoo/{recipe.family}", "zoo")


def _save(path: Path, module: nn.Module, recipe: Recipe) -> None:
    state = {k: v.contiguous() for k, v in module.state_dict().items()}
    metadata = {"recipe": json.dumps(asdict(recipe)), DIGEST_KEY: weights_digest(module)}
    atomic_write_bytes(path, save_bytes(state, metadata=metadata))


def test_accuracy(adapter: ModelAdapter) -> float:
    test = load_digits_split("test")
    return float((adapter.predict(test.images).argmax(1) == test.labels).float().mean()) * 100


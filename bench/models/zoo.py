"""The embedded zoo: small models on digits, pinned weights shipped with the package.

Five architecture families (MLP, CNN, ResNet with BatchNorm, ViT with a patch
embedding, MLP-Mixer) x two seeds, plus `fhe-*` (a conv-then-MLP with x^2 activations, sized
for CKKS encrypted inference, baselines.fhe). The default recipe of every model is pinned
(bench.models.pinned: safetensors files + a manifest of digests, recipe, seed and accuracy) and
loaded from the package, its sha256 checked on every load; only `authbench zoo retrain` trains
them again (into the cache). A recipe that is not pinned (other `epochs`) is trained on first
use and cached as safetensors under the cache root, keyed by a digest of the full recipe.
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load as load_bytes, load_file, save as save_bytes
from tqdm.auto import tqdm

from bench.core.cache import atomic_write_bytes, cache_root, mark_root
from bench.data.digits import load_digits_split
from bench.core.errors import UserError
from bench.models.adapter import ModelAdapter, Preprocess, weights_digest
from bench.zoo_catalog import FAMILY_DESCRIPTIONS, SEEDS, zoo_names
from bench.models.pinned import (REPRODUCE_TOLERANCE, PinnedEntry, pinned_entries, pinned_entry, read_pinned,
                                 sha256_bytes, write_pinned)
from bench.paths import output_folder

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


FAMILIES: dict[str, tuple[type[nn.Module], str, int, float]] = {  # descriptions: bench.zoo_catalog
    "mlp": (MLP, FAMILY_DESCRIPTIONS["mlp"], 40, 2e-3),
    "cnn": (SmallCNN, FAMILY_DESCRIPTIONS["cnn"], 30, 2e-3),
    "resnet": (SmallResNet, FAMILY_DESCRIPTIONS["resnet"], 25, 2e-3),
    "vit": (TinyViT, FAMILY_DESCRIPTIONS["vit"], 80, 2e-3),
    "mixer": (TinyMixer, FAMILY_DESCRIPTIONS["mixer"], 80, 2e-3),
    "fhe": (FHENet, FAMILY_DESCRIPTIONS["fhe"], 15, 3e-3),
}
DIGEST_KEY = "weights_sha256"  # safetensors metadata: the sha256 of the weights (bench.models.adapter.weights_digest)


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


def pinned_for(name: str, epochs: int | None = None, pinned_root: Path | None = None) -> PinnedEntry | None:
    """The pinned entry `name` loads from (its default recipe only), checked against the code's recipe."""
    if epochs is not None:
        return None
    entry = pinned_entry(name, pinned_root)
    if entry is not None and entry.recipe_digest != recipe_for(name).digest:
        raise UserError(f"pinned zoo weights for {name} were trained by recipe {entry.recipe_digest}, but the code's "
                        f"recipe is now {recipe_for(name).digest}; run `authbench zoo retrain --model {name}` then "
                        "`authbench zoo pin` to pin the new recipe's weights")
    return entry


def load_zoo_model(name: str, epochs: int | None = None, progress: bool = True, root: Path | None = None,
                   pinned_root: Path | None = None) -> ModelAdapter:
    """The zoo model `name` (e.g. 'vit-s1'): its pinned weights (package data, sha256 checked on every load)
    for the default recipe; a recipe that is not pinned (other `epochs`) is trained and cached on first use
    under `root` (the cache root).

    A cached file records the sha256 of its weights (`weights_digest`); every load recomputes it, and a
    mismatch (a flipped bit, a file edited or swapped) is a one-line error, never used. A file
    written before digests were recorded gets its digest recorded on first load."""
    recipe = recipe_for(name, epochs)
    label = name if epochs is None else f"{name}@{epochs}ep"
    entry = pinned_for(name, epochs, pinned_root)
    if entry is not None:
        module = FAMILIES[recipe.family][0]()
        module.load_state_dict(load_bytes(read_pinned(entry, pinned_root)))
        return ModelAdapter(label, module.eval(), digits_preprocess(), f"zoo/{recipe.family}", "zoo")
    return ModelAdapter(label, _cached_or_trained(name, recipe, progress, root), digits_preprocess(),
                        f"zoo/{recipe.family}", "zoo")


def _cached_or_trained(name: str, recipe: Recipe, progress: bool, root: Path | None) -> nn.Module:
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
    return module.eval()


def _file_bytes(module: nn.Module, recipe: Recipe) -> bytes:
    state = {k: v.contiguous() for k, v in module.state_dict().items()}
    metadata = {"recipe": json.dumps(asdict(recipe)), DIGEST_KEY: weights_digest(module)}
    return save_bytes(state, metadata=metadata)


def _save(path: Path, module: nn.Module, recipe: Recipe) -> None:
    mark_root(path.parent.parent)  # <cache root>/zoo/<file>: the root carries the cache's marker
    atomic_write_bytes(path, _file_bytes(module, recipe))


def test_accuracy(adapter: ModelAdapter) -> float:
    test = load_digits_split("test")
    return float((adapter.predict(test.images).argmax(1) == test.labels).float().mean()) * 100



# -- pinning: `authbench zoo list / verify / retrain / pin` ------------------------------------------

@dataclass(frozen=True, kw_only=True)
class ZooStatus:
    """One zoo model as `zoo list` / `zoo verify` see it."""

    name: str
    description: str
    pinned: bool
    file: str = ""
    bytes: int = 0
    sha256: str = ""
    pinned_accuracy: float | None = None
    accuracy: float | None = None  # measured now (verify only)
    problem: str = ""  # why verification failed ("" = ok)


@dataclass(frozen=True, kw_only=True)
class RetrainResult:
    """One model retrained by its recipe into the cache, against its pinned weights."""

    name: str
    seconds: float
    accuracy: float
    pinned_accuracy: float | None
    identical: bool  # bit-identical weights to the pinned file
    reproduces: bool | None  # accuracy within `tolerance` of the pinned weights' (None: nothing pinned)
    tolerance: float
    path: str


def _selected(models: list[str] | None) -> list[str]:
    names = list(zoo_names())
    for m in models or []:
        recipe_for(m)  # one-line error naming the valid choices
    return [n for n in names if not models or n in models]


def zoo_status(models: list[str] | None = None, *, verify: bool = False,
               pinned_root: Path | None = None) -> list[ZooStatus]:
    """Every zoo model and its pinned file; `verify` also checks each file's sha256, the recipe digest, the
    weights digest and measures the test accuracy (a problem is reported in the status, never raised)."""
    out = []
    for name in _selected(models):
        desc = zoo_names()[name]
        entry = pinned_entry(name, pinned_root)
        if entry is None:
            out.append(ZooStatus(name=name, description=desc, pinned=False,
                                 problem="not pinned (trained on first use)" if verify else ""))
            continue
        status = dict(name=name, description=desc, pinned=True, file=entry.file, bytes=entry.bytes,
                      sha256=entry.sha256, pinned_accuracy=entry.test_accuracy)
        if verify:
            try:
                model = load_zoo_model(name, progress=False, pinned_root=pinned_root)
                found = weights_digest(model.module)
                if found != entry.weights_sha256:
                    raise UserError(f"weights sha256 {found} differs from the manifest's {entry.weights_sha256}")
                status["accuracy"] = test_accuracy(model)
            except UserError as e:
                status["problem"] = str(e)
        out.append(ZooStatus(**status))
    return out


def retrain(models: list[str] | None = None, *, root: Path | None = None, progress: bool = False,
            tolerance: float = REPRODUCE_TOLERANCE, pinned_root: Path | None = None) -> list[RetrainResult]:
    """Train each model's recipe again into the cache (never the package) and compare it with the pinned
    weights: test accuracy within `tolerance` points reproduces; bit-identical weights are reported too."""
    import math


    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not math.isfinite(tolerance) \
            or tolerance < 0:
        raise UserError(f"--tolerance {tolerance!r} is not a tolerance: it must be a finite number of accuracy "
                        "points >= 0 (default 1.0)")
    output_folder(Path(root or cache_root()) / "zoo", "--cache-dir")  # before training, not after it
    results = []
    for name in _selected(models):
        recipe = recipe_for(name)
        start = time.perf_counter()
        module = train(recipe, progress)
        seconds = time.perf_counter() - start
        path = zoo_path(name, recipe, root)
        _save(path, module, recipe)
        accuracy = round(test_accuracy(ModelAdapter(name, module, digits_preprocess(), f"zoo/{recipe.family}", "zoo")), 4)
        entry = pinned_entry(name, pinned_root)
        pinned_acc = entry.test_accuracy if entry else None
        results.append(RetrainResult(
            name=name, seconds=seconds, accuracy=accuracy, pinned_accuracy=pinned_acc,
            identical=bool(entry) and weights_digest(module) == entry.weights_sha256,
            reproduces=None if entry is None else abs(accuracy - pinned_acc) <= tolerance,
            tolerance=tolerance, path=str(path)))
    return results


def pin(models: list[str] | None = None, *, root: Path | None = None, pinned_root: Path | None = None) -> Path:
    """Copy the cache's weights of each model's default recipe (as `zoo retrain` wrote them) into the package's
    pinned folder with their digests, recipe, seed and measured accuracy; returns the manifest written."""
    entries, today = {}, datetime.now(timezone.utc).strftime("%Y-%m-%d")
    for name in _selected(models):
        recipe = recipe_for(name)
        path = zoo_path(name, recipe, root)
        if not path.exists():
            raise UserError(f"no cached weights for {name} at {str(path)!r}; run `authbench zoo retrain --model "
                            f"{name}` first")
        module = _cached_or_trained(name, recipe, False, root)  # checks the cached file's digest
        adapter = ModelAdapter(name, module, digits_preprocess(), f"zoo/{recipe.family}", "zoo")
        data = _file_bytes(module, recipe)
        entries[name] = (PinnedEntry(name=name, file=f"{name}.safetensors", sha256=sha256_bytes(data),
                                     weights_sha256=weights_digest(module), recipe=asdict(recipe),
                                     recipe_digest=recipe.digest, seed=recipe.seed,
                                     test_accuracy=round(test_accuracy(adapter), 4), bytes=len(data),
                                     torch=torch.__version__, pinned_at=today), data)
    header = {"pinned_at": today, "torch": torch.__version__,
              "python": platform.python_version(), "platform": f"{sys.platform}-{platform.machine()}",
              "accuracy": "top-1 % on the digits test split (540 images), measured when pinned",
              "sha256": "of the file's bytes; weights_sha256: bench.models.adapter.weights_digest of the module"}
    return write_pinned(entries, header, pinned_root)


def pinned_identity(name: str, epochs: int | None = None) -> str | None:
    """The sha256 of the pinned file `name` loads (None when its recipe is not pinned): results bind to it."""
    entry = pinned_entries().get(name) if epochs is None else None
    return entry.sha256 if entry else None

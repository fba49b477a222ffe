"""The fully connected networks of CoreLocker's Figure 5, trained on demand (a `torch` model-source factory).

Z. Wang, Z. Ma, X. Feng, R. Sun, H. Wang, M. Xue and G. Bai, "CoreLocker: Neuron-level Usage Control",
IEEE S&P 2024, Sec. 5.1.1: 80 FCNs, 4-13 hidden layers x 1,000-8,000 neurons per layer, 784 inputs and 10
outputs, trained on MNIST with Adam (lr 0.001, batch 128) for 50 epochs, then l1-extracted at a global
ratio of 0.002%.

A suite names one network as

    {source = "torch", factory = "bench.recipes.fcn_grid:trained_fcn", name = "fcn-d4-w1000",
     kwargs = {depth = 4, width = 1000, dataset = "mnist", root = "data/", epochs = 50},
     mean = [...], std = [...], input_size = [1, 28, 28]}

`trained_fcn` trains it on the dataset's training split (seeded, deterministic on one thread) and keeps
the weights in the cache (`$AUTHBENCH_CACHE/fcn-grid/<digest>.pt`, the digest of every training setting
and of the training split's content), so a rerun loads instead of retraining. The input is normalised
with the training split's own mean and std, the values the suite's spec gives (a test checks the suites).
`fig5_label` / `parse_fig5_label` are the naming convention the Figure 5 report reads depth and width from.
"""

from __future__ import annotations

import io
import re

import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.core.cache import atomic_write_bytes, cache_root, digest
from bench.core.errors import UserError
from bench.data.base import array_digest
from bench.data import load_dataset

LABEL = re.compile(r"^fcn-d(?P<depth>\d+)-w(?P<width>\d+)$")
PAPER_DEPTHS = tuple(range(4, 14))  # hidden layers, Sec. 5.1.1
PAPER_WIDTHS = tuple(range(1000, 8001, 1000))  # neurons per hidden layer
PAPER_RATIO = 0.00002  # 0.002 %
CLASSES = 10


def fig5_label(depth: int, width: int) -> str:
    return f"fcn-d{depth}-w{width}"


def parse_fig5_label(label: str) -> tuple[int, int] | None:
    """(depth, width) of a label made by `fig5_label`, else None."""
    m = LABEL.match(str(label))
    return (int(m["depth"]), int(m["width"])) if m else None


class FCN(nn.Module):
    """`depth` hidden layers of `width` ReLU neurons between the flattened input and `classes` outputs."""

    def __init__(self, depth: int, width: int, in_features: int, classes: int = CLASSES):
        super().__init__()
        if depth < 1 or width < 1 or in_features < 1:
            raise UserError(f"FCN needs depth, width and in_features >= 1 (got {depth}, {width}, {in_features})")
        layers: list[nn.Module] = [nn.Flatten(), nn.Linear(in_features, width), nn.ReLU()]
        for _ in range(depth - 1):
            layers += [nn.Linear(width, width), nn.ReLU()]
        layers.append(nn.Linear(width, classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


def _train_split(dataset: str, root: str | None):

    options = {"root": root} if root else {}
    return load_dataset(dataset, split="train", **options)


def train_fcn(depth: int, width: int, images: torch.Tensor, labels: torch.Tensor, *, epochs: int, lr: float,
              batch_size: int, seed: int, device: str = "cpu") -> FCN:
    """Adam (lr, batch) on (N, C, H, W) images, normalised with their own mean and std, as Sec. 5.1.1 trains;
    on `device` ("auto": CUDA when there is one), returned on the CPU."""
    if epochs < 1 or batch_size < 1 or lr <= 0:
        raise UserError(f"FCN training needs epochs >= 1, batch_size >= 1 and lr > 0 (got {epochs}, {batch_size}, {lr})")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    x = images.float()
    x = ((x - x.mean()) / x.std()).to(device)
    labels = labels.to(device)
    model = FCN(depth, width, int(x[0].numel()), CLASSES).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), batch_size):
            idx = order[i:i + batch_size].to(device)
            loss = F.cross_entropy(model(x[idx]), labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.cpu().eval()


def trained_fcn(depth: int, width: int, dataset: str = "digits", root: str | None = None, epochs: int = 50,
                lr: float = 0.001, batch_size: int = 128, seed: int = 0, device: str = "auto") -> FCN:
    """The FCN of (depth, width) trained on `dataset`'s training split; from the cache when trained before."""
    split = _train_split(dataset, root)
    images = split.images
    settings = {"depth": int(depth), "width": int(width), "dataset": dataset, "content": split.content
                or array_digest(images.numpy(), split.labels.numpy()), "epochs": int(epochs),
                "lr": float(lr), "batch_size": int(batch_size), "seed": int(seed), "recipe": "fcn-grid/1"}
    path = cache_root() / "fcn-grid" / f"{digest(settings)[:32]}.pt"
    model = FCN(int(depth), int(width), int(images[0].numel()), CLASSES)
    if path.exists():
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return model.eval()
    model = train_fcn(int(depth), int(width), images, split.labels, epochs=int(epochs), lr=float(lr),
                      batch_size=int(batch_size), seed=int(seed), device=device)
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    atomic_write_bytes(path, buf.getvalue())
    return model

"""Training primitives shared by the suspect zoo and the defenders' model pools.

Every function returns a new module (inputs are never modified in place), runs on the CUDA
device the run names (--device; by default CUDA when present), and is deterministic for a given seed on one machine. Data is a
`Split` of pixel-space images in [0, 1]; `preprocess` normalizes them before the module.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from sklearn.model_selection import train_test_split

from bench.data.base import Split
from bench.errors import UserError
from bench.models.adapter import run_device
from bench.models.zoo import FAMILIES
from bench.recipes.train_classifier import build_model

BATCH = 64


def device() -> torch.device:
    """The run's device (bench.models.adapter.run_device: --device, else CUDA when available, else the CPU)."""
    return run_device()


def halves(split: Split, seed: int = 0) -> tuple[Split, Split]:
    """(source half, attacker half): a fixed stratified 50/50 split of the training data, as the
    paper's Appendix B splits CIFAR into 30k samples for the source and 30k for the attacker."""
    idx = np.arange(len(split.labels))
    a, b = train_test_split(idx, test_size=0.5, stratify=split.labels.numpy(), random_state=seed)
    a, b = np.sort(a), np.sort(b)

    def take(rows, tag):
        return Split(f"{split.name}[{tag}]", split.images[rows], split.labels[rows], split.indices[rows],
                     split.num_classes)

    return take(a, "source-half"), take(b, "attacker-half")


def build_arch(family: str, num_classes: int = 10, in_chans: int = 1) -> nn.Module:
    """A fresh network: a digits zoo family ("cnn", "mlp", ...), "timm:<name>", "torchvision:<name>"
    (3-channel inputs) or "torch:<pkg.mod:fn>" (called with num_classes and in_chans)."""
    if family in FAMILIES:
        return FAMILIES[family][0]()
    if family.startswith("torchvision:"):
        import torchvision

        name = family.partition(":")[2]
        if name not in torchvision.models.list_models():
            raise UserError(f"unknown torchvision model {name!r}; see torchvision.models.list_models()")
        return torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    if ":" in family:
        return build_model(family, num_classes, in_chans)
    raise UserError(f"unknown architecture {family!r}; valid: {', '.join(FAMILIES)}, timm:<name> or torch:<pkg.mod:fn>")


def shift(x: torch.Tensor, gen: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Random translation of the batch by up to max_shift pixels, zero fill (the zoo's augmentation)."""
    dy, dx = torch.randint(-max_shift, max_shift + 1, (2,), generator=gen).tolist()
    padded = F.pad(x, (max_shift,) * 4)
    h, w = x.shape[-2:]
    return padded[..., max_shift + dy : max_shift + dy + h, max_shift + dx : max_shift + dx + w]


def fit(module: nn.Module, loss_fn, data: Split, epochs: int, lr: float, seed: int, *, params=None,
        optimizer: str = "adamw", augment: bool = True, on_epoch=None) -> nn.Module:
    """Train `params` (default: all) of `module` over seeded mini-batches; loss_fn(module, x, y).

    `on_epoch(module, epoch)` is called at the end of every epoch (epoch = 1, 2, ...): MFUE's
    mimic models are snapshots taken there."""
    dev = device()
    module.to(dev).train()
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    params = list(params if params is not None else module.parameters())
    if optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=5e-4)
    else:
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    n = len(data.labels)
    for epoch in range(1, int(epochs) + 1):
        order = torch.randperm(n, generator=gen)
        for i in range(0, n, BATCH):
            idx = order[i : i + BATCH]
            x = shift(data.images[idx], gen) if augment else data.images[idx]
            loss = loss_fn(module, x.to(dev), data.labels[idx].to(dev))
            opt.zero_grad()
            loss.backward()
            opt.step()
        if on_epoch is not None:
            on_epoch(module, epoch)
    return module.cpu().eval()


def ce_loss(preprocess):
    def loss(m, x, y):
        return F.cross_entropy(m(_norm(preprocess, x)), y)

    return loss


def _norm(preprocess, x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(preprocess.mean, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(preprocess.std, device=x.device).view(1, -1, 1, 1)
    return (x - mean) / std


def train_fresh(family: str, data: Split, preprocess, epochs: int, lr: float, seed: int) -> nn.Module:
    """An independently trained model (a negative suspect, or a defender's reference model)."""
    torch.manual_seed(seed)
    module = build_arch(family, data.num_classes, data.images.shape[1])
    return fit(module, ce_loss(preprocess), data, epochs, lr, seed)


def last_linear(module: nn.Module) -> nn.Linear:
    """The classification head: the last nn.Linear in module order."""
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise UserError(f"{type(module).__name__} has no nn.Linear head; FTLL/RTLL/RTAL need one")
    return linears[-1]


FINETUNE_MODES = ("FTLL", "RTLL", "FTAL", "RTAL")


def finetune(module: nn.Module, preprocess, data: Split, mode: str, epochs: int, lr: float, seed: int) -> nn.Module:
    """Fine-tune Last Layer / Re-init and Train Last Layer / Fine-Tune All Layers / Re-init last
    layer and Train All Layers (the four strategies of Adi et al., used by MFUE Sec. 4.3)."""
    if mode not in FINETUNE_MODES:
        raise UserError(f"unknown fine-tuning mode {mode!r}; valid choices: {', '.join(FINETUNE_MODES)}")
    module = copy.deepcopy(module)
    head = last_linear(module)
    if mode.startswith("RT"):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            head.reset_parameters()
    params = head.parameters() if mode.endswith("LL") else module.parameters()
    return fit(module, ce_loss(preprocess), data, epochs, lr, seed, params=params)


def pgd(module: nn.Module, preprocess, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int,
        step_size: float | None = None, gen: torch.Generator | None = None) -> torch.Tensor:
    """Untargeted L-inf PGD in pixel space with a random start, clipped to [0, 1]."""
    step_size = step_size if step_size is not None else 2.5 * eps / max(steps, 1)
    noise = torch.rand(x.shape, generator=gen) if gen is not None else torch.rand(x.shape)
    adv = (x + (noise.to(x.device) * 2 - 1) * eps).clamp(0, 1)
    was_training = module.training
    module.eval()
    for _ in range(steps):
        adv.requires_grad_(True)
        loss = F.cross_entropy(module(_norm(preprocess, adv)), y)
        (grad,) = torch.autograd.grad(loss, adv)
        adv = (adv.detach() + step_size * grad.sign()).clamp(x - eps, x + eps).clamp(0, 1)
    module.train(was_training)
    return adv.detach()


def adversarial_train(module: nn.Module, preprocess, data: Split, eps: float, epochs: int, lr: float, seed: int,
                      steps: int = 5, optimizer: str = "adamw", on_epoch=None) -> nn.Module:
    """Madry-style L-inf PGD adversarial fine-tuning, each batch half clean and half adversarial
    (MFUE Appendix B: normal samples are mixed in so accuracy is kept)."""
    module = copy.deepcopy(module)
    gen = torch.Generator().manual_seed(seed + 1)

    def loss(m, x, y):
        adv = pgd(m, preprocess, x, y, eps, steps, gen=gen)
        return 0.5 * F.cross_entropy(m(_norm(preprocess, x)), y) + 0.5 * F.cross_entropy(m(_norm(preprocess, adv)), y)

    return fit(module, loss, data, epochs, lr, seed, optimizer=optimizer, on_epoch=on_epoch)


def distill(teacher: nn.Module, preprocess, data: Split, family: str, epochs: int, lr: float, seed: int,
            temperature: float = 1.0) -> nn.Module:
    """Knockoff-style extraction: a fresh `family` network trained only on the teacher's output
    probabilities for the attacker's own images (no ground-truth labels)."""
    teacher = copy.deepcopy(teacher).to(device()).eval()
    torch.manual_seed(seed)
    student = build_arch(family, data.num_classes, data.images.shape[1])

    def loss(m, x, y):
        x = _norm(preprocess, x)
        with torch.no_grad():
            soft = F.log_softmax(teacher(x) / temperature, 1)
        return F.kl_div(F.log_softmax(m(x) / temperature, 1), soft, reduction="batchmean", log_target=True)

    return fit(student, loss, data, epochs, lr, seed)


@torch.no_grad()
def accuracy(module: nn.Module, preprocess, data: Split, batch: int = 512) -> float:
    """Top-1 (%) of `module` on `data`."""
    module.eval()
    hits = 0
    for i in range(0, len(data.labels), batch):
        x = _norm(preprocess, data.images[i : i + batch])
        hits += int((module(x).argmax(1) == data.labels[i : i + batch]).sum())
    return 100.0 * hits / max(1, len(data.labels))


class Generator(nn.Module):
    """A DCGAN-style generator: z (dim `latent`) -> images in [0, 1] of `shape` (C, H, W)."""

    def __init__(self, shape: tuple, latent: int = 64, width: int = 64):
        super().__init__()
        c, h, w = shape
        self.latent, self.shape, self.h0, self.w0 = latent, shape, max(1, h // 4), max(1, w // 4)
        self.fc = nn.Linear(latent, width * self.h0 * self.w0)
        self.net = nn.Sequential(
            nn.BatchNorm2d(width), nn.ReLU(),
            nn.ConvTranspose2d(width, width, 4, 2, 1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.ConvTranspose2d(width, width // 2, 4, 2, 1), nn.BatchNorm2d(width // 2), nn.ReLU(),
            nn.Conv2d(width // 2, c, 3, padding=1), nn.Sigmoid())

    def forward(self, z):
        x = self.net(self.fc(z).view(len(z), -1, self.h0, self.w0))
        return F.interpolate(x, size=self.shape[1:], mode="bilinear", align_corners=False) \
            if tuple(x.shape[-2:]) != tuple(self.shape[1:]) else x


def hardlabel_extract(teacher: nn.Module, preprocess, shape: tuple, num_classes: int, family: str, steps: int,
                      lr: float, seed: int, batch: int = BATCH, diversity: float = 1.0) -> nn.Module:
    """Data-free, hard-label model stealing in the spirit of Sanyal, Addepalli & Babu, "Towards Data-Free
    Model Stealing in a Hard Label Setting", CVPR 2022 (MFUE's "HL" extraction): a DCGAN-style
    generator and a fresh `family` student are trained alternately; the student learns the teacher's
    top-1 labels on generated images (cross-entropy), the generator seeks images where the student
    disagrees with those labels while keeping the student's class predictions diverse (entropy of the
    batch-mean prediction). No real image is used. (The paper also trains the generator against a
    discriminator on synthetic proxy data; that term is omitted here.)"""
    dev = device()
    teacher = copy.deepcopy(teacher).to(dev).eval()
    torch.manual_seed(seed)
    student = build_arch(family, num_classes, shape[0]).to(dev).train()
    gen_net = Generator(tuple(shape)).to(dev).train()
    opt_s = torch.optim.AdamW(student.parameters(), lr=lr, weight_decay=1e-4)
    opt_g = torch.optim.Adam(gen_net.parameters(), lr=lr, betas=(0.5, 0.999))
    rng = torch.Generator().manual_seed(seed)
    for _ in range(int(steps)):
        z = torch.randn(batch, gen_net.latent, generator=rng).to(dev)
        x = gen_net(z)
        with torch.no_grad():
            labels = teacher(_norm(preprocess, x)).argmax(1)  # the API answers labels only
        logits = student(_norm(preprocess, x))
        mean_p = F.softmax(logits, 1).mean(0)
        g_loss = -F.cross_entropy(logits, labels) + diversity * (mean_p * mean_p.clamp_min(1e-8).log()).sum()
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()
        x = x.detach()
        s_loss = F.cross_entropy(student(_norm(preprocess, x)), labels)
        opt_s.zero_grad()
        s_loss.backward()
        opt_s.step()
    return student.cpu().eval()

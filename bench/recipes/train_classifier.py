"""Train an image classifier for the CoreLocker suites and write a safetensors checkpoint.

    python -m bench.recipes.train_classifier --model timm:vgg19_bn --dataset cifar10 \
        --data-dir data/ --epochs 120 --out checkpoints/vgg19_bn-cifar10.safetensors

Paper setup (Sec. 5.2.1): batch size 256, 120 epochs. The paper does not state the optimizer;
this uses the network-slimming CIFAR recipe its models come from (SGD, lr 0.1, momentum 0.9,
weight decay 1e-4, lr x0.1 at 50% and 75% of the epochs), random crop (pad 4) and, for CIFAR,
horizontal flips. Fashion-MNIST is zero-padded to 32x32 so every architecture sees 32x32.
Datasets load from `--data-dir` with download=False (torchvision layout); `--dataset digits`
uses the bundled digits for a smoke test. `--model` is `timm:<name>` or
`torch:<pkg.mod:fn>` (called with num_classes and in_chans); `resnet164` and `densenet40`
below are the paper's CIFAR architectures, which timm does not provide.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

from bench.data.digits import load_digits_split
from bench.errors import UserError
from bench.models.zoo import digits_preprocess

STATS = {  # conventional per-channel mean/std of the training splits
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), 10),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), 100),
    "fashion-mnist": ((0.2860,), (0.3530,), 10),
}


class PreActBottleneck(nn.Module):
    def __init__(self, cin: int, planes: int, stride: int):
        super().__init__()
        cout = planes * 4
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, planes, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(planes), nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn3, self.conv3 = nn.BatchNorm2d(planes), nn.Conv2d(planes, cout, 1, bias=False)
        self.short = nn.Conv2d(cin, cout, 1, stride, bias=False) if stride != 1 or cin != cout else None

    def forward(self, x):
        out = F.relu(self.bn1(x))
        skip = self.short(out) if self.short is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return self.conv3(F.relu(self.bn3(out))) + skip


def resnet164(num_classes: int = 10, in_chans: int = 3, depth: int = 164) -> nn.Module:
    """Pre-activation bottleneck ResNet for 32x32 inputs (He et al. 2016; depth = 9n + 2)."""
    n = (depth - 2) // 9
    layers, cin = [nn.Conv2d(in_chans, 16, 3, 1, 1, bias=False)], 16
    for planes, stride in ((16, 1), (32, 2), (64, 2)):
        for i in range(n):
            layers.append(PreActBottleneck(cin, planes, stride if i == 0 else 1))
            cin = planes * 4
    layers += [nn.BatchNorm2d(cin), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes)]
    return nn.Sequential(*layers)


class DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int):
        super().__init__()
        self.bn, self.conv = nn.BatchNorm2d(cin), nn.Conv2d(cin, growth, 3, 1, 1, bias=False)

    def forward(self, x):
        return torch.cat([x, self.conv(F.relu(self.bn(x)))], 1)


def densenet40(num_classes: int = 10, in_chans: int = 3, depth: int = 40, growth: int = 12) -> nn.Module:
    """DenseNet (Huang et al. 2017) for 32x32 inputs: 3 dense blocks of (depth - 4) / 3 layers, no bottleneck."""
    n, cin = (depth - 4) // 3, 2 * growth
    layers = [nn.Conv2d(in_chans, cin, 3, 1, 1, bias=False)]
    for block in range(3):
        for _ in range(n):
            layers.append(DenseLayer(cin, growth))
            cin += growth
        if block < 2:
            layers += [nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, cin, 1, bias=False), nn.AvgPool2d(2)]
    layers += [nn.BatchNorm2d(cin), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes)]
    return nn.Sequential(*layers)


class CNNLSTM(nn.Module):
    """A CNN-LSTM for 32x32 images (CoreLocker Table 6 names "CNNLSTM" without its layers; this one is the
    harness's choice): two conv-BN-ReLU-pool stages, the feature map read row by row as a sequence by a
    one-layer LSTM, its last state classified by a Linear layer."""

    def __init__(self, num_classes: int = 10, in_chans: int = 3, width: int = 32, hidden: int = 128):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, 1, 1, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU(), nn.MaxPool2d(2))
        self.lstm = nn.LSTM(2 * width * 8, hidden, batch_first=True)
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, x):
        f = self.features(x)  # (N, C, 8, 8) at 32x32
        seq = f.permute(0, 2, 1, 3).flatten(2)  # rows as time steps: (N, 8, C * 8)
        out, _ = self.lstm(seq)
        return self.fc(out[:, -1])


def cnn_lstm(num_classes: int = 10, in_chans: int = 3) -> nn.Module:
    return CNNLSTM(num_classes, in_chans)


def build_model(spec: str, num_classes: int, in_chans: int) -> nn.Module:
    source, _, name = spec.partition(":")
    if source == "timm":
        import timm

        if not timm.is_model(name):
            raise UserError(f"unknown timm model {name!r}; see timm.list_models()")
        return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans)
    if source == "torch" and ":" in name:
        module, _, fn = name.partition(":")
        try:
            factory = getattr(importlib.import_module(module), fn)
        except (ImportError, AttributeError) as e:
            raise UserError(f"cannot load factory {name!r}: {e}") from None
        return factory(num_classes=num_classes, in_chans=in_chans)
    raise UserError(f"model {spec!r} must be 'timm:<name>' or 'torch:<pkg.mod:fn>'")


def load_data(dataset: str, data_dir: str | None):
    """(train images, train labels, test images, test labels, mean, std, classes); images in [0, 1], 32x32."""
    if dataset == "digits":
        tr, te, pre = load_digits_split("train"), load_digits_split("test"), digits_preprocess()
        return tr.images, tr.labels, te.images, te.labels, pre.mean, pre.std, 10
    if dataset not in STATS:
        raise UserError(f"unknown dataset {dataset!r}; valid choices: digits, {', '.join(STATS)}")
    if not data_dir:
        raise UserError(f"dataset {dataset!r} needs --data-dir (a folder with the torchvision download)")
    from torchvision import datasets

    cls = {"cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100, "fashion-mnist": datasets.FashionMNIST}[dataset]
    try:
        train, test = cls(data_dir, train=True, download=False), cls(data_dir, train=False, download=False)
    except RuntimeError:
        raise UserError(f"{dataset} not found under {data_dir!r}; download it there with torchvision "
                        f"({cls.__name__}(root, download=True)) on a machine with internet") from None

    def tensors(ds):
        x = torch.as_tensor(ds.data).float() / 255
        x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
        return F.pad(x, (2, 2, 2, 2)) if x.shape[-1] == 28 else x, torch.as_tensor(ds.targets)

    mean, std, classes = STATS[dataset]
    return *tensors(train), *tensors(test), mean, std, classes


def augment(x: torch.Tensor, flip: bool, gen: torch.Generator) -> torch.Tensor:
    """Random crop with 4-pixel zero padding (one offset per batch) and per-sample horizontal flips."""
    dy, dx = torch.randint(0, 9, (2,), generator=gen).tolist()
    x = F.pad(x, (4, 4, 4, 4))[..., dy : dy + x.shape[-2], dx : dx + x.shape[-1]]
    if flip:
        mask = torch.rand(len(x), generator=gen) < 0.5
        x = torch.where(mask.view(-1, 1, 1, 1).to(x.device), x.flip(-1), x)
    return x


@torch.no_grad()
def accuracy(model, x, y, norm, device, batch: int = 512) -> float:
    model.eval()
    hits = sum(int((model(norm(x[i : i + batch].to(device))).argmax(1).cpu() == y[i : i + batch]).sum())
               for i in range(0, len(x), batch))
    return 100.0 * hits / len(x)


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(allow_abbrev=False, prog="python -m bench.recipes.train_classifier", description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="timm:<name> or torch:<pkg.mod:fn>")
    ap.add_argument("--dataset", required=True, choices=["digits", *STATS])
    ap.add_argument("--data-dir")
    ap.add_argument("--epochs", type=int, default=120)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--weight-decay", type=float, default=1e-4)
    ap.add_argument("--subset", type=int, default=0, help="train on the first N samples only (0 = all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    xtr, ytr, xte, yte, mean, std, classes = load_data(args.dataset, args.data_dir)
    if args.subset:
        xtr, ytr = xtr[: args.subset], ytr[: args.subset]
    m_t, s_t = torch.tensor(mean, device=device).view(1, -1, 1, 1), torch.tensor(std, device=device).view(1, -1, 1, 1)

    def norm(x):
        return (x - m_t) / s_t

    model = build_model(args.model, classes, xtr.shape[1]).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=args.weight_decay)
    milestones = [args.epochs // 2, args.epochs * 3 // 4]
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones, 0.1)
    flip = args.dataset.startswith("cifar")
    start = time.time()
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(xtr), generator=gen)
        for i in range(0, len(order), args.batch_size):
            idx = order[i : i + args.batch_size]
            x = augment(xtr[idx].to(device), flip, gen)
            loss = F.cross_entropy(model(norm(x)), ytr[idx].to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        print(f"epoch {epoch + 1}/{args.epochs} loss {loss.item():.4f} ({time.time() - start:.0f}s)", flush=True)
    top1 = accuracy(model, xte, yte, norm, device)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"model": args.model, "dataset": args.dataset, "epochs": str(args.epochs), "mean": json.dumps(mean),
            "std": json.dumps(std), "input_size": json.dumps(list(xtr.shape[1:])), "test_top1": f"{top1:.2f}"}
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(out), metadata=meta)
    print(f"test top-1 {top1:.2f}% -> {out}")
    return out


if __name__ == "__main__":
    try:
        main()
    except UserError as e:
        sys.exit(f"error: {e}")

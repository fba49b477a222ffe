"""Training-time countermeasures against unlearnable examples: what a data user does to learn from protected data
anyway (the standard attacks of the train-on-data protocol). Each is a `Countermeasure` plugin (name,
description, defaults validated like every plugin's); `train_victim` trains a fresh network on a training split
under one of them.

- `none`: standard training (the digits zoo's recipe: AdamW, random shifts of up to 2 pixels).
- `jpeg`, `bdr`, `grayscale`: Image Shortcut Squeezing, the training data preprocessed once (Zhuoran Liu,
  Zhengyu Zhao, Martha Larson, "Image Shortcut Squeezing: Countering Perturbative Availability Poisons with
  Compression", ICML 2023: JPEG quality 10, bit-depth reduction, grayscale).
- `cutout` (DeVries & Taylor 2017), `mixup` (Zhang et al., ICLR 2018): augmentation during training.
- `adv-train`: PGD adversarial training (Madry et al., ICLR 2018) of radius `eps`, `steps` steps.
"""

from __future__ import annotations

import io

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from bench.data.base import Split
from bench.core.errors import UserError
from bench.fingerprint.training import build_arch, fit, shift
from bench.core.registry import Plugin, Registry
from bench.unlearnable.methods import Norm, pgd_max, normalize


class Countermeasure(Plugin):
    plugin_type = "countermeasure"
    preprocess_only = True  # transforms the training images once, then trains normally

    def prepare(self, images: torch.Tensor, seed: int) -> torch.Tensor:
        return images

    def loss(self, model, norm: Norm, x, y, gen: torch.Generator):
        return F.cross_entropy(model(normalize(norm, x)), y)


COUNTERMEASURES: Registry[type[Countermeasure]] = Registry("countermeasure", "authbench.countermeasures",
                                                           base=Countermeasure)


@COUNTERMEASURES.register
class Standard(Countermeasure):
    name = "none"
    description = "standard training on the data as released"


@COUNTERMEASURES.register
class Jpeg(Countermeasure):
    name = "jpeg"
    description = "JPEG-compress every training image (ISS: quality 10; Liu, Zhao, Larson, ICML 2023)"
    defaults = {"quality": 10}
    param_schema = {"quality": {"type": "integer", "minimum": 1, "maximum": 100}}

    def prepare(self, images, seed):
        out = torch.empty_like(images)
        for i, img in enumerate(images):
            arr = (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            pil = Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr)
            buf = io.BytesIO()
            pil.save(buf, format="JPEG", quality=int(self.params["quality"]))
            back = np.asarray(Image.open(io.BytesIO(buf.getvalue())), dtype=np.float32) / 255
            out[i] = torch.from_numpy(back.reshape(arr.shape)).permute(2, 0, 1)
        return out


@COUNTERMEASURES.register
class BitDepth(Countermeasure):
    name = "bdr"
    description = "bit-depth reduction of every training image (ISS; Liu, Zhao, Larson, ICML 2023)"
    defaults = {"bits": 2}
    param_schema = {"bits": {"type": "integer", "minimum": 1, "maximum": 8}}

    def prepare(self, images, seed):
        levels = 2 ** int(self.params["bits"]) - 1
        return (images * levels).round() / levels


@COUNTERMEASURES.register
class Grayscale(Countermeasure):
    name = "grayscale"
    description = "grayscale training images (ISS; Liu, Zhao, Larson, ICML 2023); a no-op on 1-channel data"

    def prepare(self, images, seed):
        return images.mean(1, keepdim=True).expand_as(images).clone()


@COUNTERMEASURES.register
class Cutout(Countermeasure):
    name = "cutout"
    description = "cutout augmentation: one zeroed square of side `size` per image (DeVries & Taylor, 2017)"
    preprocess_only = False
    defaults = {"size": 8}
    param_schema = {"size": {"type": "integer", "minimum": 1}}

    def loss(self, model, norm, x, y, gen):
        n, _, h, w = x.shape
        s = int(self.params["size"])
        cy, cx = torch.randint(0, h, (n,), generator=gen), torch.randint(0, w, (n,), generator=gen)
        rows, cols = torch.arange(h).view(1, h, 1), torch.arange(w).view(1, 1, w)
        hole = ((rows - cy.view(n, 1, 1)).abs() <= s // 2) & ((cols - cx.view(n, 1, 1)).abs() <= s // 2)
        return F.cross_entropy(model(normalize(norm, x * (~hole).unsqueeze(1).to(x.device))), y)


@COUNTERMEASURES.register
class Mixup(Countermeasure):
    name = "mixup"
    description = "mixup augmentation, Beta(alpha, alpha) mixing of images and labels (Zhang et al., ICLR 2018)"
    preprocess_only = False
    defaults = {"alpha": 1.0}
    param_schema = {"alpha": {"type": "number", "exclusiveMinimum": 0}}

    def loss(self, model, norm, x, y, gen):
        a = float(self.params["alpha"])
        lam = float(torch.distributions.Beta(a, a).sample())
        perm = torch.randperm(len(y), generator=gen).to(x.device)
        out = model(normalize(norm, lam * x + (1 - lam) * x[perm]))
        return lam * F.cross_entropy(out, y) + (1 - lam) * F.cross_entropy(out, y[perm])


@COUNTERMEASURES.register
class AdversarialTraining(Countermeasure):
    name = "adv-train"
    description = "PGD adversarial training of L-inf radius eps (Madry et al., ICLR 2018)"
    preprocess_only = False
    defaults = {"eps": 4 / 255, "steps": 5}
    param_schema = {"eps": {"type": "number", "minimum": 0, "maximum": 1}, "steps": {"type": "integer", "minimum": 1}}

    def loss(self, model, norm, x, y, gen):
        eps, steps = float(self.params["eps"]), int(self.params["steps"])
        was = model.training
        model.eval()
        adv = pgd_max(model, norm, x, y, eps, steps, 2.5 * eps / steps, gen)
        model.train(was)
        return F.cross_entropy(model(normalize(norm, adv)), y)


def get_countermeasure(entry) -> Countermeasure:
    """'name' or {name = ..., params} -> the countermeasure (unknown name or parameter: a UserError)."""
    if isinstance(entry, str):
        name, params = entry, {}
    elif isinstance(entry, dict) and "name" in entry:
        name, params = entry["name"], {k: v for k, v in entry.items() if k != "name"}
    else:
        raise UserError(f"countermeasure {entry!r} must be a name or a table {{name = \"...\", <parameters>}}")
    return COUNTERMEASURES.get(str(name))(**params)


def train_victim(family: str, train: Split, norm: Norm, counter: Countermeasure, epochs: int, lr: float,
                 seed: int) -> torch.nn.Module:
    """A fresh `family` network trained on `train` under `counter` (seeded; the zoo's AdamW recipe)."""
    images = counter.prepare(train.images, seed)
    data = Split(train.name, images, train.labels, train.indices, train.num_classes)
    gen = torch.Generator().manual_seed(seed + 7)
    torch.manual_seed(seed)
    module = build_arch(family, train.num_classes, train.images.shape[1])
    return fit(module, lambda m, x, y: counter.loss(m, norm, x, y, gen), data, epochs, lr, seed)


@torch.no_grad()
def top1(module, norm: Norm, images: torch.Tensor, labels: torch.Tensor, batch: int = 512) -> float:
    module.eval()
    hits = sum(int((module(normalize(norm, images[i:i + batch])).argmax(1) == labels[i:i + batch]).sum())
               for i in range(0, len(labels), batch))
    return 100.0 * hits / max(1, len(labels))


__all__ = ["COUNTERMEASURES", "Countermeasure", "get_countermeasure", "train_victim", "top1", "shift"]

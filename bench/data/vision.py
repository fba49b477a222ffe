"""Natural-image datasets at a stored pixel resolution: ImageNet-1k and CIFAR-10 from local files or the hub.

    [data]
    dataset = "imagenet"          # root = ImageFolder dir (class subfolders, or with a val/ folder inside),
    root = "data/imagenet"        #   or hub = "ILSVRC/imagenet-1k" (the `datasets` library)
    split = "validation"
    resize = 256                  # stored resolution: shorter side 256 ...
    crop = 256                    # ... then center crop 256 x 256 (default: resize)
    subset = 512                  # seeded subset: only these images are decoded

The ImageFolder must hold all 1000 class folders (labels are their sorted order).
`dataset = "cifar10"` reads torchvision's files under `root`, an array file (`path`, .npz with
`images` (N, 32, 32, 3) or (N, 3, 32, 32) uint8 and `labels`), or `hub = "uoft-cs/cifar10"`;
it is stored at its native 32 x 32 unless `resize` is given. Each model then applies its own
resize, crop and normalization (bench.models.geometry); the stored images are what "pixel"
encode space perturbs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from bench.data.base import Split, register_dataset
from bench.errors import UserError
from bench.models.geometry import center_crop, interpolation_name

DATA_ENV = "AUTHBENCH_DATA"


def subset_positions(n_total: int, subset: int, seed: int) -> np.ndarray:
    """The positions Split.subset(subset, seed) keeps, so that loading only them gives the same Split."""
    if subset <= 0 or subset >= n_total:
        return np.arange(n_total)
    return np.sort(np.random.default_rng(seed).choice(n_total, size=subset, replace=False))


def data_path(value: str | None) -> Path | None:
    """A data path, relative ones under $AUTHBENCH_DATA when that is set."""
    if not value:
        return None
    path = Path(os.path.expandvars(str(value))).expanduser()
    if not path.is_absolute() and os.environ.get(DATA_ENV):
        path = Path(os.environ[DATA_ENV]) / path
    return path


def resize_images(x: torch.Tensor, resize, crop, resample: str = "bilinear") -> torch.Tensor:
    """(N, C, H, W) in [0, 1] -> shorter side `resize` (or [h, w]), center crop `crop` (default: resize)."""
    if resize is None:
        return x
    size = _hw(resize, "resize")
    h, w = x.shape[-2:]
    if len(size) == 1:
        s = size[0]
        size = (s, int(s * w / h)) if h <= w else (int(s * h / w), s)
    mode = interpolation_name(resample)
    kwargs = {} if mode == "nearest" else {"align_corners": False, "antialias": True}
    if tuple(size) != (h, w):
        x = F.interpolate(x, size=tuple(size), mode=mode, **kwargs).clamp(0.0, 1.0)
    crop = _hw(crop if crop is not None else resize, "crop")
    return center_crop(x, crop if len(crop) == 2 else (crop[0], crop[0]))


def _hw(value, key: str) -> tuple[int, ...]:
    if isinstance(value, int) and value > 0:
        return (value,)
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) and v > 0 for v in value):
        return tuple(value)
    raise UserError(f"[data] {key} must be a positive int or [h, w], got {value!r}")


def _pil_to_tensor(img, resize, crop, resample: str) -> torch.Tensor:
    """One PIL image -> (C, H, W) float in [0, 1] at the stored resolution (PIL resize, as deployed loaders)."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    img = img.convert("RGB")
    if resize is not None:
        size = _hw(resize, "resize")
        mode = InterpolationMode(interpolation_name(resample))
        img = TF.resize(img, list(size) if len(size) == 2 else size[0], interpolation=mode, antialias=True)
        crop_hw = _hw(crop if crop is not None else resize, "crop")
        img = TF.center_crop(img, list(crop_hw) if len(crop_hw) == 2 else [crop_hw[0]] * 2)
    return TF.pil_to_tensor(img).float() / 255.0


def _stack(decode: Callable[[int], object], positions: Sequence[int], resize, crop, resample, what: str) -> torch.Tensor:
    from tqdm.auto import tqdm

    images = [_pil_to_tensor(decode(int(i)), resize, crop, resample)
              for i in tqdm(positions, desc=f"decoding {what}", unit="img", disable=len(positions) < 64)]
    shapes = {tuple(t.shape) for t in images}
    if len(shapes) > 1:
        raise UserError(f"{what} images have different sizes {sorted(shapes)[:3]}; set [data] resize = 256 (and crop)")
    return torch.stack(images)


def _hub(name: str, split: str, what: str):
    try:
        import datasets
    except ImportError:
        raise UserError(f"{what}: hub = {name!r} needs the `datasets` library: pip install datasets "
                        "(or give root = an ImageFolder path)") from None
    try:
        return datasets.load_dataset(name, split=split)
    except Exception as e:  # network, auth (gated dataset) or a bad name: the user's to fix
        text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{what}: cannot load hub dataset {name!r} split {split!r} ({text}); "
                        "log in with `huggingface-cli login` for gated sets, or give root = a local folder") from None


def _hub_columns(ds, what: str) -> tuple[str, str]:
    cols = list(ds.column_names)
    image = next((c for c in ("image", "img") if c in cols), None)
    label = next((c for c in ("label", "labels", "fine_label") if c in cols), None)
    if image is None or label is None:
        raise UserError(f"{what}: hub dataset has columns {cols}; expected an image and a label column")
    return image, label


IMAGENET_SPLITS = {"validation": ("val", "validation"), "val": ("val", "validation"), "train": ("train",)}


@register_dataset("imagenet", "ImageNet-1k (ImageFolder root or hub name), stored at resize/crop (default 256), 1000 classes")
def imagenet(split: str = "validation", root: str | None = None, hub: str | None = None, resize=256, crop=None,
             resample: str = "bilinear", subset: int = 0, subset_seed: int = 0) -> Split:
    """ImageNet-1k from an ImageFolder (class folders in sorted-wnid order = the standard label order) or the hub."""
    if split not in IMAGENET_SPLITS:
        raise UserError(f"unknown imagenet split {split!r}; valid choices: {', '.join(IMAGENET_SPLITS)}")
    tag = f"imagenet@{_tag(resize, crop)}/{'validation' if split == 'val' else split}"
    if hub:
        ds = _hub(str(hub), "validation" if split == "val" else split, "imagenet")
        image_col, label_col = _hub_columns(ds, "imagenet")
        positions = subset_positions(len(ds), subset, subset_seed)
        picked = ds.select(positions.tolist())
        images = _stack(lambda i: picked[i][image_col], range(len(picked)), resize, crop, resample, "imagenet")
        labels = torch.tensor([int(v) for v in picked[label_col]], dtype=torch.long)
        return Split(tag, images, labels, positions, 1000)
    folder = data_path(root)
    if folder is None:
        raise UserError("dataset 'imagenet' needs root = \"<ImageFolder path>\" (or hub = \"ILSVRC/imagenet-1k\") in "
                        f"[data], or --data-root / ${DATA_ENV}")
    for sub in IMAGENET_SPLITS[split]:
        if (folder / sub).is_dir():
            folder = folder / sub
            break
    if not folder.is_dir():
        raise UserError(f"imagenet root {str(folder)!r} does not exist; set [data] root (or --data-root) to an "
                        "ImageFolder with one subfolder per class")
    from torchvision.datasets import ImageFolder

    try:
        ds = ImageFolder(str(folder))
    except (FileNotFoundError, RuntimeError) as e:
        raise UserError(f"imagenet root {str(folder)!r} is not an ImageFolder ({str(e).splitlines()[0]})") from None
    positions = subset_positions(len(ds.samples), subset, subset_seed)
    images = _stack(lambda i: ds.loader(ds.samples[i][0]), positions, resize, crop, resample, "imagenet")
    labels = torch.tensor([ds.samples[i][1] for i in positions], dtype=torch.long)
    return Split(tag, images, labels, positions, 1000)  # class folders in sorted-wnid order: the 1k label order


def _tag(resize, crop) -> str:
    if resize is None:
        return "native"
    r = "x".join(map(str, _hw(resize, "resize")))
    c = "x".join(map(str, _hw(crop, "crop"))) if crop is not None else r
    return f"{r}c{c}"


def cifar10_arrays(split: str, path: str | None, hub: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8-valued float images (N, 3, 32, 32) in [0, 1], labels) from an .npz file or the hub."""
    if hub:
        ds = _hub(str(hub), split, "cifar10")
        image_col, label_col = _hub_columns(ds, "cifar10")
        images = torch.stack([torch.as_tensor(np.asarray(img.convert("RGB"))) for img in ds[image_col]])
        return images.permute(0, 3, 1, 2).float() / 255.0, torch.tensor(ds[label_col], dtype=torch.long)
    file = data_path(path)
    if file is None or not file.is_file():
        raise UserError(f"cifar10 array file {str(file)!r} does not exist; set [data] path to an .npz with images and labels")
    with np.load(file) as arrays:
        keys = set(arrays.files)
        img_key = next((k for k in (f"{split}_images", "images", "x") if k in keys), None)
        lab_key = next((k for k in (f"{split}_labels", "labels", "y") if k in keys), None)
        if img_key is None or lab_key is None:
            raise UserError(f"{file}: needs arrays 'images' and 'labels' (or '{split}_images', '{split}_labels'), "
                            f"has {sorted(keys)}")
        images, labels = np.asarray(arrays[img_key]), np.asarray(arrays[lab_key])
    if images.ndim != 4 or 3 not in (images.shape[1], images.shape[-1]):
        raise UserError(f"{file}: images must be (N, 32, 32, 3) or (N, 3, 32, 32), got {images.shape}")
    x = torch.as_tensor(images).float()
    x = x.permute(0, 3, 1, 2) if x.shape[-1] == 3 else x
    x = x / 255.0 if images.dtype == np.uint8 or x.max() > 1.0 else x
    return x.contiguous(), torch.as_tensor(labels, dtype=torch.long)

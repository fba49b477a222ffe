"""Natural-image datasets at a stored pixel resolution: ImageNet-1k and CIFAR-10 from local files or the hub.

    [data]
    dataset = "imagenet"          # root = ImageFolder dir (class subfolders, or with a val/ folder inside),
    root = "data/imagenet"        #   or hub = "ILSVRC/imagenet-1k" (the `datasets` library)
    split = "validation"
    resize = 256                  # stored resolution: shorter side 256 ...
    crop = 256                    # ... then center crop 256 x 256 (default: resize)
    subset = 512                  # seeded subset: only these images are decoded

Labels are the class folders' sorted order, which is the 1k label order when the folder holds all
1000 class folders (fewer are accepted, e.g. for fixtures: their labels are then 0..k-1).
`dataset = "cifar10"` reads torchvision's files under `root`, an array file (`path`, .npz with
`images` (N, 32, 32, 3) or (N, 3, 32, 32) uint8 and `labels`), or `hub = "uoft-cs/cifar10"`;
it is stored at its native 32 x 32 unless `resize` is given. Each model then applies its own
resize, crop and normalization (bench.models.geometry); the stored images are what "pixel"
encode space perturbs.

All of them are lazy: a Split holds labels, indices and a small reader (an ImageFolder's file list,
a hub dataset object, a CIFAR uint8 array), and images are decoded and resized only when read.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from bench.data.base import (Split, array_digest, check_labels, check_lengths, file_digest, register_dataset,
                             stat_digest)
from bench.errors import UserError
from bench.models.geometry import center_crop, interpolation_name
from bench.data.convert import CIFAR100_FILES, CIFAR_BATCHES, cifar_batch

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


PROGRESS_MIN = 1024  # a progress bar only for reads this large (not for every batch)


DECODE_WORKERS_ENV = "AUTHBENCH_DECODE_WORKERS"


def decode_workers() -> int:
    """Threads that decode a batch of image files: $AUTHBENCH_DECODE_WORKERS, else min(8, CPU cores). PIL
    decodes and resizes outside the GIL, so threads scale; 1 decodes in the calling thread."""
    value = os.environ.get(DECODE_WORKERS_ENV)
    if value is None:
        return max(1, min(8, os.cpu_count() or 1))
    if not value.strip().isdigit() or int(value) < 1:
        raise UserError(f"{DECODE_WORKERS_ENV}={value!r} must be a whole number >= 1 (1: no decoding threads)")
    return int(value)


def _stack(decode: Callable[[int], object], positions: Sequence[int], resize, crop, resample, what: str,
           workers: int | None = None) -> torch.Tensor:
    """The images at `positions`, decoded by a pool of `workers` threads (default `decode_workers()`), in the
    order given: the same tensor as decoding them one by one."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    workers = decode_workers() if workers is None else workers
    one = lambda i: _pil_to_tensor(decode(int(i)), resize, crop, resample)  # noqa: E731
    bar = dict(desc=f"decoding {what}", unit="img", leave=False, disable=len(positions) < PROGRESS_MIN,
               total=len(positions))
    if workers > 1 and len(positions) > 1:
        with ThreadPoolExecutor(min(workers, len(positions)), thread_name_prefix="authbench-decode") as pool:
            images = list(tqdm(pool.map(one, positions), **bar))
    else:
        images = [one(i) for i in tqdm(positions, **bar)]
    _same_shapes({tuple(t.shape) for t in images}, what)
    return torch.stack(images)


def _same_shapes(shapes: set, what: str) -> None:
    if len(shapes) > 1:
        raise UserError(f"{what} images have different sizes {sorted(shapes)[:3]}; set [data] resize = 256 (and crop)")


class ImageFolderReader:
    """Decodes root/files[p] at the stored resolution when read (PIL, as deployed loaders); holds only the file list."""

    def __init__(self, root: str, files: list[str], resize, crop, resample: str, what: str = "imagenet"):
        self.root, self.files = str(root), list(files)
        self.resize, self.crop, self.resample, self.what = resize, crop, resample, what

    def path(self, position: int) -> str:
        return os.path.join(self.root, self.files[position])

    def __call__(self, positions: np.ndarray) -> torch.Tensor:
        from torchvision.datasets.folder import default_loader  # what ImageFolder.loader is

        return _stack(lambda p: default_loader(self.path(p)), positions, self.resize, self.crop, self.resample,
                      self.what)


class HubReader:
    """Decodes rows of a `datasets` dataset when read: "pil" = PIL resize/crop (ImageNet), "array" = the
    image's pixels as stored, then resize_images (CIFAR-10)."""

    def __init__(self, ds, column: str, mode: str, resize, crop, resample: str, what: str):
        self.ds = ds.select_columns([column]) if hasattr(ds, "select_columns") else ds
        self.column, self.mode, self.what = column, mode, what
        self.resize, self.crop, self.resample = resize, crop, resample

    def __call__(self, positions: np.ndarray) -> torch.Tensor:
        rows = [int(p) for p in positions]
        images = self.ds[rows][self.column]
        if self.mode == "pil":
            return _stack(lambda i: images[i], range(len(images)), self.resize, self.crop, self.resample, self.what)
        x = torch.stack([torch.from_numpy(np.array(img.convert("RGB"))) for img in images])
        x = x.permute(0, 3, 1, 2).float() / 255.0
        return resize_images(x, self.resize, self.crop, self.resample).contiguous()


class ArrayReader:
    """Rows of an image array (uint8, or floats in [0, 1]) kept in memory as stored and converted to float32
    per read: layout "nhwc" / "nchw" / "nhw", scaled by 1/255 when `scale`, zero-padded by `pad`, resized.
    `source` says how to load the array again in another process (it is not pickled):
    ("npz", path, key) or ("torchvision", class name, root, train)."""

    def __init__(self, source: tuple, layout: str, scale: bool, pad: int = 0, resize=None, crop=None,
                 resample: str = "bilinear", array: np.ndarray | None = None):
        self.source, self.layout, self.scale, self.pad = tuple(source), layout, bool(scale), int(pad)
        self.resize, self.crop, self.resample = resize, crop, resample
        self._array = array

    def array(self) -> np.ndarray:
        if self._array is None:
            self._array = _load_array(self.source)
        return self._array

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_array": None}

    def __call__(self, positions: np.ndarray) -> torch.Tensor:
        x = torch.as_tensor(self.array()[positions]).float()
        if self.layout == "nhw":
            x = x.unsqueeze(1)
        elif self.layout == "nhwc":
            x = x.permute(0, 3, 1, 2)
        if self.scale:
            x = x / 255.0
        if self.pad:
            x = F.pad(x, (self.pad,) * 4)
        return resize_images(x, self.resize, self.crop, self.resample).contiguous()


def _load_array(source: tuple) -> np.ndarray:
    kind = source[0]
    if kind == "npz":
        with np.load(source[1]) as arrays:
            return np.asarray(arrays[source[2]])
    if kind == "torchvision":
        return np.asarray(torchvision_set(*source[1:]).data)
    raise ValueError(f"unknown array source {source!r}")


CIFAR_FOLDERS = {"CIFAR10": "cifar-10-batches-py", "CIFAR100": "cifar-100-python"}


class CifarFiles:
    """torchvision's CIFAR-10 / CIFAR-100 files under `root`, read as torchvision reads them (`data` (N, 32, 32, 3)
    uint8, `targets`) but without unpickling code: each batch goes through bench.safe_pickle, which admits only
    the dicts, lists, strings and numpy arrays the format holds (torchvision's own reader runs pickle.load)."""

    def __init__(self, cls_name: str, root: str, train: bool):

        folder = Path(root) / CIFAR_FOLDERS[cls_name]
        names = (CIFAR_BATCHES if cls_name == "CIFAR10" else CIFAR100_FILES)["train" if train else "test"]
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise RuntimeError(f"Dataset not found: {str(folder / missing[0])!r} is missing")
        parts = [cifar_batch(folder / n) for n in names]
        self.data = np.concatenate([x for x, _ in parts])
        self.targets = [int(v) for _, y in parts for v in y]


def torchvision_set(cls_name: str, root: str, train: bool):
    if cls_name in CIFAR_FOLDERS:
        return CifarFiles(cls_name, root, train)
    import torchvision.datasets as tvd

    return getattr(tvd, cls_name)(root=root, train=train, download=False)


def hub_fingerprint(ds) -> str:
    """The `datasets` library's fingerprint of a loaded dataset (its content and processing), else its size."""
    return str(getattr(ds, "_fingerprint", None) or f"{getattr(ds, 'info', None)}|{len(ds)}")


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


# the image files an image folder holds (imagenet here, imagefolder and image-list in bench.data.classes)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def scan_folder(folder: Path, what: str) -> tuple[list[str], list[tuple[str, str]]]:
    """(every class folder in sorted order, [(relative file, class folder)] for the images in them); empty class
    folders are kept (their ids stay true), files outside class folders ignored."""
    classes = sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise UserError(f"{what}: {str(folder)!r} has no class folders; expected <root>/<class>/<image>")
    samples = []
    for c in classes:
        for dirpath, dirnames, filenames in os.walk(folder / c, followlinks=True):
            dirnames.sort()
            for name in sorted(filenames):
                if name.lower().endswith(IMAGE_EXTENSIONS):
                    samples.append((os.path.relpath(os.path.join(dirpath, name), folder), c))
    if not samples:
        raise UserError(f"{what}: the {len(classes)} class folders under {str(folder)!r} hold no image "
                        f"({', '.join(IMAGE_EXTENSIONS)})")
    return classes, samples


@register_dataset("imagenet", "ImageNet-1k (ImageFolder root or hub name), stored at resize/crop (default 256), 1000 classes")
def imagenet(split: str = "validation", root: str | None = None, hub: str | None = None, resize=256, crop=None,
             resample: str = "bilinear", subset: int = 0, subset_seed: int = 0) -> Split:
    """ImageNet-1k from an ImageFolder (class folders in sorted-wnid order = the standard label order) or the hub.
    Lazy: files (or hub rows) and labels are listed here; images are decoded and resized when read."""
    if split not in IMAGENET_SPLITS:
        raise UserError(f"unknown imagenet split {split!r}; valid choices: {', '.join(IMAGENET_SPLITS)}")
    tag = f"imagenet@{resolution_tag(resize, crop)}/{'validation' if split == 'val' else split}"
    if hub:
        ds = _hub(str(hub), "validation" if split == "val" else split, "imagenet")
        image_col, label_col = _hub_columns(ds, "imagenet")
        positions = subset_positions(len(ds), subset, subset_seed)
        picked = ds.select(positions.tolist()) if len(positions) < len(ds) else ds
        labels = torch.tensor([int(v) for v in picked[label_col]], dtype=torch.long)
        check_labels(labels, 1000, f"imagenet hub {hub!r} split {split!r}")
        reader = HubReader(picked, image_col, "pil", resize, crop, resample, "imagenet")
        return Split(tag, None, labels, positions, 1000, reader=reader, content=hub_fingerprint(ds))
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
    # every class folder in sorted-wnid order (the 1k label order), empty ones too: a validation subset with
    # images in 725 of the 1000 folders keeps its true class ids
    classes, samples = scan_folder(folder, f"imagenet root {str(folder)!r}")
    if len(classes) > 1000:
        raise UserError(f"imagenet root {str(folder)!r} has {len(classes)} class folders; ImageNet-1k has 1000")
    index = {c: i for i, c in enumerate(classes)}
    positions = subset_positions(len(samples), subset, subset_seed)
    base = str(folder)
    files = [samples[i][0] for i in positions]
    check_headers([os.path.join(base, f) for f in files], resize, "imagenet")
    labels = torch.tensor([index[samples[i][1]] for i in positions], dtype=torch.long)
    reader = ImageFolderReader(base, files, resize, crop, resample, "imagenet")
    every = [f for f, _ in samples]  # the folder's identity: all its files' names, sizes, mtimes
    return Split(tag, None, labels, positions, 1000, reader=reader, content=stat_digest(base, every))




def check_headers(paths: Sequence[str], resize, what: str) -> None:
    """Open each image's header (PIL reads the size, decodes no pixels), so that an unreadable file, or images of
    different native sizes without resize, fail here in one line and not in the middle of a run."""
    from PIL import Image
    from tqdm.auto import tqdm

    sizes = set()
    for path in tqdm(paths, desc=f"checking {what}", unit="img", leave=False, disable=len(paths) < 4 * PROGRESS_MIN):
        try:
            with Image.open(path) as img:
                w, h = img.size
        except (OSError, ValueError, SyntaxError) as e:
            problem = _first_line(e)
            raise UserError(f"{what}: cannot read image {str(path)!r} ({problem}); remove or replace the file") from None
        if resize is None:
            sizes.add((3, h, w))
    _same_shapes(sizes, what)


def resolution_tag(resize, crop) -> str:
    if resize is None:
        return "native"
    r = "x".join(map(str, _hw(resize, "resize")))
    c = "x".join(map(str, _hw(crop, "crop"))) if crop is not None else r
    return f"{r}c{c}"


CIFAR_SHAPES = "(N, 32, 32, 3) or (N, 3, 32, 32)"


def cifar10_reader(split: str, path: str | None, hub: str | None, resize=None, crop=None,
                   resample: str = "bilinear") -> tuple[object, torch.Tensor]:
    """(reader of all N images at the stored resolution, labels (N,)) from an .npz file or the hub; the
    arrays are checked here, the pixels converted to float only when read."""
    if hub:
        ds = _hub(str(hub), split, "cifar10")
        image_col, label_col = _hub_columns(ds, "cifar10")
        labels = torch.tensor([int(v) for v in ds[label_col]], dtype=torch.long)
        check_labels(labels, 10, f"cifar10 hub {hub!r} split {split!r}")
        reader = HubReader(ds, image_col, "array", resize, crop, resample, "cifar10")
        reader.content = hub_fingerprint(ds)
        return reader, labels
    file = data_path(path)
    if file is None or not file.is_file():
        raise UserError(f"cifar10 array file {str(file)!r} does not exist; set [data] path to an .npz with images and labels")
    images, labels, img_key, lab_key = read_npz(file, split)
    what = str(file)
    if images.ndim != 4 or 3 not in (images.shape[1], images.shape[-1]):
        raise UserError(f"{what}: images {img_key!r} must be {CIFAR_SHAPES}, got {images.shape}")
    if images.dtype.kind not in "biuf":
        raise UserError(f"{what}: images {img_key!r} have dtype {images.dtype}; store uint8 0..255 (or floats in [0, 1])")
    if labels.ndim != 1:
        raise UserError(f"{what}: labels {lab_key!r} must be a 1-D array (N,), got shape {labels.shape}")
    check_lengths(len(images), len(labels), f"{what}: {img_key!r} / {lab_key!r}")
    if labels.dtype.kind not in "iu" and not (labels.dtype.kind == "f" and np.all(np.mod(labels, 1) == 0)):
        raise UserError(f"{what}: labels {lab_key!r} must be integer class ids, got dtype {labels.dtype}")
    labels = torch.as_tensor(labels.astype(np.int64))
    try:
        check_labels(labels, 10, f"{what}: labels {lab_key!r}")
    except UserError as e:
        hint = "; for another label space use dataset = \"npz\" with num_classes = N (true class ids kept)"
        raise UserError(f"{e}{hint if int(labels.max()) >= 10 else ''}") from None
    lo, hi = (float(images.min()), float(images.max())) if images.size else (0.0, 0.0)
    if images.dtype.kind == "f" and (lo < 0.0 or hi > 1.0 or not np.isfinite([lo, hi]).all()):
        raise UserError(f"{what}: float images {img_key!r} have values in [{lo:.4g}, {hi:.4g}]; float pixels must lie "
                        "in [0, 1] (or store uint8 0..255)")
    if images.dtype.kind in "iu" and (lo < 0 or hi > 255):
        raise UserError(f"{what}: integer images {img_key!r} have values in [{lo:.0f}, {hi:.0f}]; integer pixels must "
                        "lie in 0..255")
    layout = "nhwc" if images.shape[-1] == 3 else "nchw"
    scale = images.dtype == np.uint8 or (images.dtype.kind != "f" and hi > 1.0)  # ints 0..255 (0/1 ints as they are)
    reader = ArrayReader(("npz", str(file), img_key), layout, scale, 0, resize, crop, resample, array=images)
    reader.content = file_digest(file)  # two files of the same shape never share an identity
    return reader, labels


def read_npz(file: Path, split: str) -> tuple[np.ndarray, np.ndarray, str, str]:
    import zipfile

    try:
        arrays = np.load(file)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise UserError(f"{file}: cannot read it as an .npz array file ({_first_line(e)})") from None
    if not hasattr(arrays, "files"):
        raise UserError(f"{file}: is a single array, not an .npz with images and labels (np.savez(path, images=..., "
                        "labels=...))")
    with arrays:
        keys = set(arrays.files)
        img_key = next((k for k in (f"{split}_images", "images", "x") if k in keys), None)
        lab_key = next((k for k in (f"{split}_labels", "labels", "y") if k in keys), None)
        if img_key is None or lab_key is None:
            raise UserError(f"{file}: needs arrays 'images' and 'labels' (or '{split}_images', '{split}_labels'), "
                            f"has {sorted(keys)}")
        out = []
        for key in (img_key, lab_key):
            try:
                out.append(np.asarray(arrays[key]))
            except ValueError:  # allow_pickle=False refuses an object array
                raise UserError(f"{file}: array {key!r} holds Python objects (dtype object); store images as a "
                                "uint8 array and labels as an integer array") from None
    for key, arr in zip((img_key, lab_key), out):
        if arr.dtype == object:
            raise UserError(f"{file}: array {key!r} holds Python objects (dtype object); store images as a uint8 "
                            "array and labels as an integer array")
    return out[0], out[1], img_key, lab_key


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def cifar10_arrays(split: str, path: str | None, hub: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(all images (N, 3, 32, 32) float in [0, 1], labels), eagerly: for small splits and legacy callers only."""
    reader, labels = cifar10_reader(split, path, hub)
    return reader(np.arange(len(labels))), labels

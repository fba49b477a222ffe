"""STL-10 (Adam Coates, Honglak Lee and Andrew Y. Ng, "An Analysis of Single-Layer Networks in Unsupervised
Feature Learning", AISTATS 2011; https://cs.stanford.edu/~acoates/stl10/): the labelled train (5,000) and test
(8,000) images of the binary distribution, 3 x 96 x 96, 10 classes.

    [data]                        # or, in the domain protocol: targets = ["dataset:stl10"]
    dataset = "stl10"
    root = "data/"                # the folder holding stl10_binary/ (or stl10_binary itself)
    split = "test"
    resize = 32                   # optional: stored at 32 x 32 (NTL's CIFAR-10 / STL-10 pair); default native 96

Get the files with `python -m bench.data.archives fetch stl10 --root data/` (downloads the pinned
stl10_binary.tar.gz, checks its size, sha256 and md5, unpacks the labelled splits), or `... extract stl10
ARCHIVE --root data/` for a local copy of the archive, or place an already unpacked `stl10_binary/` folder
there (train_X.bin, train_y.bin, test_X.bin, test_y.bin, class_names.txt). The run never downloads.

Format (the dataset's README, and how torchvision reads it): `*_X.bin` holds uint8 images one after another,
each 3 x 96 x 96 with the channels in order and every channel stored column-major (pixel (row r, column c) of
channel k at byte k * 9216 + c * 96 + r); `*_y.bin` one uint8 label a byte, 1..10; `class_names.txt` the ten
names, line i naming label i. The reader maps the file (numpy memmap) and transposes each image to row-major
(C, H, W) as it is read; labels become 0..9.

`check = "md5"` (default) compares each split file with torchvision's md5 of the official file
(torchvision.datasets.STL10.train_list / test_list) before the first read in a process; `check = "size"` only
checks that the image file holds 27,648 bytes per label (a subset or a fixture built by hand).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from bench.core.errors import UserError
from bench.data.base import Split, register_dataset, stat_digest
from bench.data.vision import ArrayReader, data_path, resize_images, resolution_tag, subset_positions

CLASSES = ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck")
FOLDER = "stl10_binary"
SIDE = 96
IMAGE_BYTES = 3 * SIDE * SIDE
FILES = {"train": ("train_X.bin", "train_y.bin"), "test": ("test_X.bin", "test_y.bin")}
SPLITS = tuple(FILES)
CHECKS = ("md5", "size")
# torchvision.datasets.STL10.train_list / test_list: the md5 of each file of the official archive
FILE_MD5 = {"train_X.bin": "918c2871b30a85fa023e0c44e0bee87f", "train_y.bin": "5a34089d4802c674881badbb80307741",
            "test_X.bin": "7f263ba9f9e0b06b93213547f721ac82", "test_y.bin": "36f9794fa4beb8a2c72628de14fa638e"}
WHAT = "stl10"
GET = ("`python -m bench.data.archives fetch stl10 --root DIR` (internet) or `python -m bench.data.archives "
       "extract stl10 stl10_binary.tar.gz --root DIR` (a local copy)")

_CHECKED: set = set()  # (path, size, mtime) of files whose md5 matched in this process


def find_folder(root) -> Path:
    """The folder holding the split files: `root` itself or `root/stl10_binary`."""
    folder = data_path(str(root)) if root else None
    if folder is None:
        raise UserError(f"dataset {WHAT!r} needs root = \"<folder holding {FOLDER}/>\" in [data] (or --data-root); "
                        f"get the files with {GET}")
    for cand in (folder, folder / FOLDER):
        if (cand / "train_y.bin").is_file() or (cand / "test_y.bin").is_file():
            return cand
    raise UserError(f"{WHAT}: no {FOLDER}/ with train_y.bin / test_y.bin under {str(folder)!r}; get the files with {GET}")


def _md5_ok(path: Path, expected: str) -> None:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key in _CHECKED:
        return
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    if h.hexdigest() != expected:
        raise UserError(f"{WHAT}: {str(path)!r} has md5 {h.hexdigest()}, not the official file's {expected} "
                        "(torchvision's); unpack the pinned archive again, or set check = \"size\" for a folder you built")
    _CHECKED.add(key)


def read_class_names(folder: Path) -> tuple[str, ...]:
    """The ten names of class_names.txt (line i names label i + 1), or the distribution's when the file is absent."""
    path = folder / "class_names.txt"
    if not path.is_file():
        return CLASSES
    names = tuple(line.strip() for line in path.read_text(errors="replace").strip().splitlines())
    if len(names) != len(CLASSES) or not all(names):
        raise UserError(f"{WHAT}: {str(path)!r} has {len(names)} names; STL-10's class_names.txt has one name a line "
                        f"for its {len(CLASSES)} classes")
    return names


def read_labels(path: Path) -> np.ndarray:
    """Labels 0..9 from a *_y.bin file (uint8 1..10)."""
    raw = np.fromfile(path, dtype=np.uint8)
    bad = raw[(raw < 1) | (raw > len(CLASSES))]
    if bad.size:
        raise UserError(f"{WHAT}: {str(path)!r} holds label {int(bad[0])}; STL-10 labels are bytes 1..{len(CLASSES)}")
    return raw.astype(np.int64) - 1


def image_array(path: Path, n: int) -> np.ndarray:
    """The images of a *_X.bin file as an (n, 3, 96, 96) row-major view (memory-mapped, read when indexed)."""
    size = path.stat().st_size
    if size != n * IMAGE_BYTES:
        raise UserError(f"{WHAT}: {str(path)!r} has {size} bytes; {n} labels need {n} images of {IMAGE_BYTES} bytes "
                        f"({n * IMAGE_BYTES}); the image and label files do not belong together")
    if n == 0:
        return np.zeros((0, 3, SIDE, SIDE), dtype=np.uint8)
    # stored column-major per channel: (n, 3, column, row) -> swap the last two axes to (n, 3, row, column)
    return np.memmap(path, dtype=np.uint8, mode="r", shape=(n, 3, SIDE, SIDE)).transpose(0, 1, 3, 2)


class Stl10Reader(ArrayReader):
    """Rows of a split's image file, converted to float (C, H, W) in [0, 1] per read (and resized when asked)."""

    def __init__(self, folder: Path, split: str, n: int, resize=None, crop=None, resample: str = "bilinear"):
        super().__init__(("stl10", str(folder), split), "nchw", True, 0, resize, crop, resample,
                         array=image_array(folder / FILES[split][0], n))
        self.n = int(n)

    def array(self) -> np.ndarray:
        if self._array is None:  # after unpickling in another process: map the file again
            self._array = image_array(Path(self.source[1]) / FILES[self.source[2]][0], self.n)
        return self._array

    def __call__(self, positions: np.ndarray) -> torch.Tensor:
        rows = np.ascontiguousarray(np.asarray(self.array()[np.asarray(positions)]))  # (n, 3, 96, 96) row-major
        x = torch.from_numpy(rows).float() / 255.0
        return resize_images(x, self.resize, self.crop, self.resample).contiguous()


@register_dataset("stl10", "STL-10 (Coates, Lee & Ng 2011), labelled train/test of the binary distribution under root "
                  "(stl10_binary/), 3x96x96 (resize to store smaller), 10 classes")
def stl10(split: str = "test", root: str | None = None, resize=None, crop=None, resample: str = "bilinear",
          check: str = "md5", subset: int = 0, subset_seed: int = 0) -> Split:
    if split not in SPLITS:
        raise UserError(f"unknown {WHAT} split {split!r}; valid choices: {', '.join(SPLITS)}")
    if check not in CHECKS:
        raise UserError(f"{WHAT}: check = {check!r}; valid: {', '.join(CHECKS)}")
    if resize is not None:
        resolution_tag(resize, crop)  # a bad resize / crop fails here
    folder = find_folder(root)
    x_name, y_name = FILES[split]
    for name in (x_name, y_name):
        if not (folder / name).is_file():
            raise UserError(f"{WHAT}: {str(folder / name)!r} is missing (split {split!r}); get the files with {GET}")
        if check == "md5":
            _md5_ok(folder / name, FILE_MD5[name])
    labels = read_labels(folder / y_name)
    reader = Stl10Reader(folder, split, len(labels), resize, crop, resample)
    tag = f"{WHAT}/{split}" if resize is None else f"{WHAT}@{resolution_tag(resize, crop)}/{split}"
    full = Split(tag, None, torch.as_tensor(labels), np.arange(len(labels)), len(CLASSES), reader=reader,
                 content=stat_digest(folder, [x_name, y_name]))
    full.class_names = read_class_names(folder)
    keep = subset_positions(len(full), subset, subset_seed)
    return full if len(keep) == len(full) else full.take(keep)

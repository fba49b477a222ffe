"""Image datasets of any class count whose labels keep their true class ids, whatever subset is present.

    [data]
    dataset = "image-list"        # a text file: one image a line, its path and its class id
    list = "val/dataset.txt"      #   "./data/x.JPEG, 472" | "x.JPEG 472" | tab-separated (acuity-dataset's dataset.txt)
    root = "val"                  # folder the paths are relative to (default: the list's folder)
    num_classes = 1000            # the label space: ids 0..num_classes-1, however few are present
    class_names = "names.txt"     # optional: one class name a line (line i = class i)

    dataset = "imagefolder"       # root/<class folder>/<image>; every class folder, empty ones too,
    root = "data/val"             #   takes its id from its position among all folders in sorted order,
    num_classes = 1000            #   or from class_index (a file: "<folder> <id>" a line, or JSON {folder: id})

    dataset = "npz"               # an .npz with images (N, H, W, 3) / (N, 3, H, W) and labels (N,)
    path = "val.npz"
    num_classes = 1000

`resize` / `crop` / `resample` store the images at one resolution (bench.data.vision); a subset
(`subset = N`, seeded) decodes only its images. `num_classes` is required: a 1,000-class label space is
never inferred from the 725 classes a validation subset happens to hold.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import torch

from bench.data.base import Split, check_labels, file_digest, register_dataset, stat_digest
from bench.data.vision import (IMAGE_EXTENSIONS, ArrayReader, ImageFolderReader, check_headers, data_path, read_npz,
                               resolution_tag, scan_folder, subset_positions)
from bench.errors import UserError

LIST_LINE = re.compile(r"^\s*(?P<path>.+?)\s*[,\t ]\s*(?P<label>-?\d+)\s*$")


def _num_classes(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{what}: num_classes must be a whole number >= 1 (the size of the label space, e.g. 1000 "
                        f"for ImageNet), got {value!r}")
    return int(value)


def read_class_names(path, num_classes: int, what: str) -> tuple[str, ...]:
    """One class name a line (blank lines ignored at the end); the count must be num_classes."""
    file = data_path(str(path))
    if file is None or not file.is_file():
        raise UserError(f"{what}: class_names file {str(path)!r} does not exist")
    names = tuple(line.strip() for line in file.read_text(errors="replace").rstrip("\n").splitlines())
    if len(names) != num_classes:
        raise UserError(f"{what}: class_names file {str(file)!r} has {len(names)} lines, num_classes is "
                        f"{num_classes}; give one name a line for classes 0..{num_classes - 1}")
    return names


def _finish(name: str, labels, reader, content: str, num_classes: int, class_names, subset: int, subset_seed: int,
            what: str, positions=None) -> Split:
    labels = torch.as_tensor(labels, dtype=torch.long)
    check_labels(labels, num_classes, what)
    names = read_class_names(class_names, num_classes, what) if class_names else None
    n = len(labels) if positions is None else None
    indices = np.arange(n) if positions is None else positions
    split = Split(name, None, labels, indices, num_classes, reader=reader, content=content)
    split.class_names = names
    if positions is None:
        keep = subset_positions(len(split), subset, subset_seed)
        return split if len(keep) == len(split) else split.take(keep)
    return split


@register_dataset("image-list", "images listed in a text file with their class ids (path, id a line); num_classes "
                                "declared, true ids kept")
def image_list(split: str = "test", list: str | None = None, root: str | None = None, num_classes: int | None = None,
               class_names: str | None = None, resize=None, crop=None, resample: str = "bilinear", subset: int = 0,
               subset_seed: int = 0) -> Split:
    what = "image-list"
    file = data_path(list)
    if file is None or not file.is_file():
        raise UserError(f"{what}: list file {str(list)!r} does not exist; set [data] list to a text file with one "
                        "'<image path>, <class id>' a line")
    n_classes = _num_classes(num_classes, f"{what} {str(file)!r}")
    base = data_path(root) if root else file.parent
    if not base.is_dir():
        raise UserError(f"{what}: root {str(base)!r} is not a folder")
    files, labels = [], []
    for number, line in enumerate(file.read_text(errors="replace").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = LIST_LINE.match(line)
        if m is None:
            raise UserError(f"{what}: {str(file)!r} line {number} is {line.strip()[:60]!r}; expected '<image path>, "
                            "<class id>' (comma, tab or space between)")
        path = os.path.normpath(m["path"].strip())
        if os.path.isabs(path) or path.startswith(".."):
            raise UserError(f"{what}: {str(file)!r} line {number}: path {m['path']!r} must be relative to the root")
        files.append(path)
        labels.append(int(m["label"]))
    if not files:
        raise UserError(f"{what}: {str(file)!r} lists no image")
    check_labels(labels, n_classes, f"{what} {str(file)!r}")
    positions = subset_positions(len(files), subset, subset_seed)
    picked = [files[i] for i in positions]
    missing = [p for p in picked if not (base / p).is_file()]
    if missing:
        raise UserError(f"{what}: {len(missing)} listed image(s) are not under {str(base)!r} (first: {missing[0]})")
    check_headers([str(base / p) for p in picked], resize, what)
    reader = ImageFolderReader(str(base), picked, resize, crop, resample, what)
    content = f"{file_digest(file)}|{stat_digest(base, files)}"
    tag = f"image-list@{resolution_tag(resize, crop)}/{split}"
    return _finish(tag, [labels[i] for i in positions], reader, content, n_classes, class_names, 0, 0,
                   f"{what} {str(file)!r}", positions=positions)


def _class_index(path, what: str) -> dict[str, int]:
    file = data_path(str(path))
    if file is None or not file.is_file():
        raise UserError(f"{what}: class_index file {str(path)!r} does not exist")
    text = file.read_text(errors="replace")
    if file.suffix == ".json":
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as e:
            raise UserError(f"{what}: class_index {str(file)!r} is not JSON ({e.msg}); give {{folder: id}}") from None
        if not isinstance(raw, dict) or not all(isinstance(v, int) for v in raw.values()):
            raise UserError(f"{what}: class_index {str(file)!r} must be a JSON object {{folder name: class id}}")
        return {str(k): int(v) for k, v in raw.items()}
    out = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.replace(",", " ").split()
        if len(parts) < 2 or not parts[1].lstrip("-").isdigit():
            raise UserError(f"{what}: class_index {str(file)!r} line {number} is {line.strip()[:60]!r}; expected "
                            "'<folder name> <class id>'")
        out[parts[0]] = int(parts[1])
    return out




@register_dataset("imagefolder", "root/<class folder>/<image>, empty class folders allowed; class ids from the "
                                 "sorted folders or a class_index file; num_classes declared")
def imagefolder(split: str = "test", root: str | None = None, num_classes: int | None = None,
                class_names: str | None = None, class_index: str | None = None, resize=None, crop=None,
                resample: str = "bilinear", subset: int = 0, subset_seed: int = 0) -> Split:
    what = "imagefolder"
    folder = data_path(root)
    if folder is None or not folder.is_dir():
        raise UserError(f"{what}: root {str(root)!r} is not a folder; set [data] root to <root>/<class>/<image>")
    classes, samples = scan_folder(folder, what)
    n_classes = _num_classes(num_classes if num_classes is not None else len(classes), f"{what} {str(folder)!r}")
    if class_index:
        index = _class_index(class_index, what)
        unknown_dirs = [c for c in classes if c not in index]
        if unknown_dirs:
            raise UserError(f"{what}: class folder {unknown_dirs[0]!r} is not in class_index {class_index!r} "
                            f"({len(unknown_dirs)} folders are not)")
    else:
        if len(classes) > n_classes:
            raise UserError(f"{what}: {str(folder)!r} has {len(classes)} class folders but num_classes is {n_classes}; "
                            "keep one folder per class (empty ones too) or give a class_index file")
        index = {c: i for i, c in enumerate(classes)}
    labels = [index[c] for _, c in samples]
    positions = subset_positions(len(samples), subset, subset_seed)
    picked = [samples[i][0] for i in positions]
    check_headers([str(folder / p) for p in picked], resize, what)
    reader = ImageFolderReader(str(folder), picked, resize, crop, resample, what)
    tag = f"imagefolder@{resolution_tag(resize, crop)}/{split}"
    return _finish(tag, [labels[i] for i in positions], reader, stat_digest(folder, [s for s, _ in samples]),
                   n_classes, class_names, 0, 0, f"{what} {str(folder)!r}", positions=positions)


@register_dataset("npz", "an .npz with images (N, H, W, 3) or (N, 3, H, W) and labels (N,); num_classes declared")
def npz(split: str = "test", path: str | None = None, num_classes: int | None = None, class_names: str | None = None,
        resize=None, crop=None, resample: str = "bilinear", subset: int = 0, subset_seed: int = 0) -> Split:
    file = data_path(path)
    if file is None or not file.is_file():
        raise UserError(f"npz: array file {str(path)!r} does not exist; set [data] path to an .npz with images and "
                        "labels")
    what = str(file)
    n_classes = _num_classes(num_classes, f"npz {what!r}")
    images, labels, img_key, lab_key = read_npz(file, split)
    if images.ndim != 4 or 3 not in (images.shape[1], images.shape[-1]):
        raise UserError(f"{what}: images {img_key!r} must be (N, H, W, 3) or (N, 3, H, W), got {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise UserError(f"{what}: labels {lab_key!r} must be (N,) = ({len(images)},), got {labels.shape}")
    if labels.dtype.kind not in "iu":
        raise UserError(f"{what}: labels {lab_key!r} must be integer class ids, got dtype {labels.dtype}")
    if images.dtype.kind == "f" and images.size and (images.min() < 0 or images.max() > 1):
        raise UserError(f"{what}: float images {img_key!r} must lie in [0, 1] (or store uint8 0..255)")
    layout = "nhwc" if images.shape[-1] == 3 else "nchw"
    reader = ArrayReader(("npz", str(file), img_key), layout, images.dtype.kind in "iu", 0, resize, crop, resample,
                         array=images)
    tag = f"npz@{resolution_tag(resize, crop)}/{split}"
    return _finish(tag, labels.astype(np.int64), reader, file_digest(file), n_classes, class_names, subset,
                   subset_seed, f"npz {what!r}: labels {lab_key!r}")

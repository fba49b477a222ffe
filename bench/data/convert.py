"""Convert image data in a common layout into what the harness reads: an .npz array file or an ImageFolder.

    python -m bench.data.convert SOURCE --out data/mine.npz            (or: authbench data convert ...)
    python -m bench.data.convert SOURCE --out data/mine/ --to imagefolder

SOURCE layouts (`--layout`, default: detected):
- `imagefolder`: a folder with one subfolder per class holding image files (labels: the sorted folder names);
- `cifar`: torchvision's CIFAR-10 / CIFAR-100 pickle batches (`data_batch_1..5` and `test_batch`, or `train`
  and `test`), given as the folder holding them or the folder above it (`--split test|train`);
- `csv`: a folder of images plus `--labels labels.csv` whose rows are `filename,label` (a header row is allowed;
  labels are integers, or class names numbered in sorted order);
- `npz`: an existing .npz whose arrays have other names (`--images-key`, `--labels-key`; default: the one 4-D
  array and the one 1-D integer array it holds).

The .npz written holds `images` (N, H, W, C) uint8 and `labels` (N,) int64: the keys `dataset = "cifar10"`
reads from `path = ...` (docs/own-models.md lists every dataset format). An ImageFolder is written as
`<out>/<class>/<index>.png`, readable as `dataset = "imagenet"` with `root = ...`. Images must share one size
unless `--size H W` resizes them. Bad input is one line naming what is wrong, exit status 2.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

from bench.errors import UserError
from bench.paths import output_file, output_folder, slug, under
from bench.safe_pickle import load_plain

LAYOUTS = ("auto", "imagefolder", "cifar", "csv", "npz")
TARGETS = ("npz", "imagefolder")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
CIFAR_BATCHES = {"train": ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5"],
                 "test": ["test_batch"]}
CIFAR100_FILES = {"train": ["train"], "test": ["test"]}


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _read_image(path: Path, size: tuple[int, int] | None) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            if size is not None:
                img = img.resize((size[1], size[0]), Image.BILINEAR)
            return np.asarray(img, dtype=np.uint8)
    except (OSError, UnidentifiedImageError) as e:
        raise UserError(f"{path}: cannot read it as an image ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None


def _stack(images: list[np.ndarray], paths: list[Path]) -> np.ndarray:
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        first = images[0].shape
        other = next(p for p, im in zip(paths, images) if im.shape != first)
        raise UserError(f"images differ in size ({paths[0].name} is {first[0]}x{first[1]}, {other.name} is "
                        f"{images[paths.index(other)].shape[0]}x{images[paths.index(other)].shape[1]}); "
                        "pass --size H W to resize them all")
    return np.stack(images)


def _cifar_folder(source: Path) -> Path | None:
    for folder in (source, source / "cifar-10-batches-py", source / "cifar-100-python"):
        if folder.is_dir() and any((folder / n).is_file() for n in ("data_batch_1", "test_batch", "train", "test")):
            return folder
    return None


def detect(source: Path, labels_csv: Path | None) -> str:
    """The layout of `source` (one of LAYOUTS other than auto)."""
    if source.is_file():
        if source.suffix == ".npz":
            return "npz"
        raise UserError(f"{source}: a file that is not an .npz; give a folder (ImageFolder, CIFAR batches, images + "
                        "--labels CSV) or an .npz")
    if not source.is_dir():
        raise UserError(f"{source} does not exist; give a folder or an .npz file")
    if labels_csv is not None:
        return "csv"
    if _cifar_folder(source) is not None:
        return "cifar"
    if any(p.is_dir() and _images_in(p) for p in source.iterdir()):
        return "imagefolder"
    if _images_in(source):
        raise UserError(f"{source} holds images but no class folders; pass --labels labels.csv (rows filename,label)")
    raise UserError(f"{source}: no layout found (no class subfolders with images, no CIFAR batches); valid layouts: "
                    f"{', '.join(LAYOUTS[1:])}")


def read_imagefolder(source: Path, size=None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    classes = sorted(p.name for p in source.iterdir() if p.is_dir() and _images_in(p))
    if not classes:
        raise UserError(f"{source}: no class subfolders holding images (expected <class>/<image>.png ...)")
    paths, labels = [], []
    for label, name in enumerate(classes):
        files = _images_in(source / name)
        paths += files
        labels += [label] * len(files)
    return _stack([_read_image(p, size) for p in paths], paths), np.asarray(labels, dtype=np.int64), classes


def cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 32, 32, 3) uint8, labels (N,) int64) of one CIFAR pickle batch, read without running code
    (bench.safe_pickle) and checked: a malformed batch is one line naming what is wrong."""
    batch = load_plain(path, "CIFAR pickle batch")
    if not isinstance(batch, dict):
        raise UserError(f"{path}: a CIFAR batch is a dict with 'data' and 'labels', got {type(batch).__name__}")
    key = "labels" if "labels" in batch else "fine_labels"
    if "data" not in batch or key not in batch:
        keys = sorted(map(str, batch))
        raise UserError(f"{path}: a CIFAR batch needs 'data' and 'labels' (or 'fine_labels'), has "
                        f"{', '.join(keys[:5])}{f' (+{len(keys) - 5} more)' if len(keys) > 5 else ''}")
    data, labels = batch["data"], batch[key]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        what = f"an array of dtype {data.dtype} and shape {data.shape}" if isinstance(data, np.ndarray) else \
            f"a {type(data).__name__}"
        raise UserError(f"{path}: 'data' must be a uint8 array (N, 3072), got {what}")
    if not isinstance(labels, (list, tuple, np.ndarray)) or not all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in labels):
        raise UserError(f"{path}: {key!r} must be a list of integer class ids")
    if len(labels) != len(data):
        raise UserError(f"{path}: {len(data)} images but {len(labels)} labels")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), np.asarray(labels, dtype=np.int64).reshape(-1)


def cifar_class_names(folder: Path) -> list[str]:
    """The class names of a CIFAR folder's meta file (batches.meta / meta), [] when it has none."""
    meta = next((folder / n for n in ("batches.meta", "meta") if (folder / n).is_file()), None)
    if meta is None:
        return []
    info = load_plain(meta, "CIFAR meta file")
    names = (info.get("label_names") or info.get("fine_label_names") or []) if isinstance(info, dict) else None
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise UserError(f"{meta}: a CIFAR meta file is a dict whose 'label_names' (or 'fine_label_names') is a list "
                        "of strings")
    return list(names)


def read_cifar(source: Path, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    folder = _cifar_folder(source)
    if folder is None:
        raise UserError(f"{source}: no CIFAR pickle batches (data_batch_1..5 / test_batch, or train / test)")
    names = CIFAR_BATCHES[split] if (folder / CIFAR_BATCHES[split][0]).is_file() else CIFAR100_FILES[split]
    images, labels = [], []
    for name in names:
        path = folder / name
        if not path.is_file():
            raise UserError(f"{folder}: CIFAR batch {name!r} of split {split!r} is missing")
        x, y = cifar_batch(path)
        images.append(x)
        labels.append(y)
    return np.concatenate(images), np.concatenate(labels), cifar_class_names(folder)


def read_csv_folder(source: Path, labels_csv: Path, size=None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    if not labels_csv.is_file():
        raise UserError(f"labels file {str(labels_csv)!r} does not exist; give a CSV of filename,label rows")
    with open(labels_csv, newline="") as f:
        rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    if rows and len(rows[0]) >= 2 and rows[0][0].strip().lower() in ("filename", "file", "image", "path", "name"):
        rows = rows[1:]
    bad = next((i for i, r in enumerate(rows) if len(r) < 2), None)
    if not rows or bad is not None:
        raise UserError(f"{labels_csv}: row {bad + 1 if bad is not None else 1} is not 'filename,label'")
    names, raw = [r[0].strip() for r in rows], [r[1].strip() for r in rows]
    if all(v.lstrip("-").isdigit() for v in raw):
        labels, classes = [int(v) for v in raw], []
    else:
        classes = sorted(set(raw))
        labels = [classes.index(v) for v in raw]
    paths = [source / n for n in names]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise UserError(f"{labels_csv}: {len(missing)} listed image(s) are not in {source}, e.g. {missing[0]!r}")
    return _stack([_read_image(p, size) for p in paths], paths), np.asarray(labels, dtype=np.int64), classes


def read_npz(source: Path, images_key: str | None, labels_key: str | None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    import zipfile

    try:
        arrays = np.load(source)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise UserError(f"{source}: cannot read it as an .npz ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    if not hasattr(arrays, "files"):
        raise UserError(f"{source}: a single array, not an .npz of images and labels")
    with arrays:
        try:
            found = {k: np.asarray(arrays[k]) for k in arrays.files}
        except ValueError:
            raise UserError(f"{source}: holds Python objects (dtype object); store plain arrays") from None

    def pick(key, what, test):
        if key is not None:
            if key not in found:
                raise UserError(f"{source}: no array {key!r}; it has {sorted(found)}")
            return key
        fits = [k for k, v in found.items() if test(v)]
        if len(fits) != 1:
            raise UserError(f"{source}: {'no' if not fits else 'several'} array(s) look like {what} "
                            f"({', '.join(fits) or sorted(found)}); pass --{what}-key")
        return fits[0]

    ik = pick(images_key, "images", lambda v: v.ndim in (3, 4))
    lk = pick(labels_key, "labels", lambda v: v.ndim == 1 and v.dtype.kind in "iu")
    images, labels = found[ik], found[lk]
    if images.ndim == 3:  # (N, H, W) greyscale
        images = images[..., None]
    if images.ndim != 4:
        raise UserError(f"{source}: images {ik!r} must be (N, H, W, C) or (N, C, H, W), got shape {images.shape}")
    if images.shape[-1] not in (1, 3) and images.shape[1] in (1, 3):
        images = images.transpose(0, 2, 3, 1)
    if images.dtype.kind == "f":
        if not np.isfinite(images).all():
            bad = int((~np.isfinite(images)).reshape(len(images), -1).any(1).sum())
            raise UserError(f"{source}: images {ik!r} hold NaN or infinite values ({bad} of {len(images)} images); "
                            "store finite pixels in [0, 1] or 0..255")
        lo, hi = float(images.min()), float(images.max())
        if lo < 0 or hi > 255:
            raise UserError(f"{source}: float images {ik!r} have values in [{lo:.4g}, {hi:.4g}]; expected [0, 1] or 0..255")
        images = np.round(images * 255.0 if hi <= 1.0 else images)
    elif images.dtype.kind not in "iu":
        raise UserError(f"{source}: images {ik!r} have dtype {images.dtype}; expected integers 0..255 or floats")
    if images.min() < 0 or images.max() > 255:
        raise UserError(f"{source}: images {ik!r} have values outside 0..255")
    if labels.ndim != 1 or len(labels) != len(images):
        raise UserError(f"{source}: labels {lk!r} must be (N,) = ({len(images)},), got shape {labels.shape}")
    return images.astype(np.uint8), labels.astype(np.int64), []


def convert(source: Path, out: Path, *, layout: str = "auto", to: str | None = None, labels: Path | None = None,
            split: str = "test", images_key: str | None = None, labels_key: str | None = None,
            size: tuple[int, int] | None = None) -> tuple[Path, int, int]:
    """Read `source` in `layout` and write `out` (.npz, or an ImageFolder); returns (out, images, classes)."""
    source, out = Path(source).expanduser(), Path(out).expanduser()
    if layout not in LAYOUTS:
        raise UserError(f"unknown layout {layout!r}; valid choices: {', '.join(LAYOUTS)}")
    to = to or ("npz" if out.suffix == ".npz" else "imagefolder")
    if to not in TARGETS:
        raise UserError(f"unknown output format {to!r}; valid choices: {', '.join(TARGETS)}")
    if to == "npz" and out.suffix != ".npz":
        raise UserError(f"--out {str(out)!r}: an .npz output needs a name ending in .npz")
    if split not in CIFAR_BATCHES:
        raise UserError(f"unknown split {split!r}; valid choices: {', '.join(CIFAR_BATCHES)}")
    if size is not None and (len(size) != 2 or min(size) < 1):
        raise UserError(f"--size needs two positive integers H W, got {list(size)}")
    kind = detect(source, labels) if layout == "auto" else layout
    if kind == "csv" and labels is None:
        raise UserError("layout 'csv' needs --labels labels.csv (rows filename,label)")
    if kind in ("imagefolder", "csv", "cifar") and not source.is_dir():
        raise UserError(f"layout {kind!r} reads a folder; {str(source)!r} is not one")
    if kind == "imagefolder":
        images, ys, classes = read_imagefolder(source, size)
    elif kind == "csv":
        images, ys, classes = read_csv_folder(source, Path(labels).expanduser(), size)
    elif kind == "cifar":
        images, ys, classes = read_cifar(source, split)
    else:
        images, ys, classes = read_npz(source, images_key, labels_key)
    if len(images) == 0:
        raise UserError(f"{source}: no images found")
    if ys.min() < 0:
        raise UserError(f"{source}: labels must be class ids >= 0, found {int(ys.min())}")
    n_classes = int(ys.max()) + 1
    if to == "npz":
        output_file(out, "--out")
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp.npz")
        np.savez(tmp, images=images, labels=ys)
        tmp.replace(out)
    else:
        from PIL import Image

        output_folder(out, "--out")
        if out.exists() and any(out.iterdir()):
            raise UserError(f"--out {str(out)!r} exists and is not empty; give a new folder for the ImageFolder")
        names = class_folders(classes) if len(classes) == n_classes else [f"{c:04d}" for c in range(n_classes)]
        for i, (img, y) in enumerate(zip(images, ys)):
            folder = under(out, names[int(y)], what="class folder")
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(folder / f"{i:06d}.png")
    return out, len(images), n_classes


def class_folders(classes: list[str]) -> list[str]:
    """One folder name per class name read from data (a labels CSV, CIFAR metadata): slugged to a plain name
    (bench.paths.slug), never a path; two names that slug alike are an error naming them."""
    names = [slug(c, f"class-{i:04d}") for i, c in enumerate(classes)]
    seen: dict[str, str] = {}
    for original, name in zip(classes, names):
        if name in seen and seen[name] != original:
            raise UserError(f"class names {seen[name]!r} and {original!r} both map to the folder name {name!r}; "
                            "rename one of them")
        seen[name] = original
    return names


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", type=Path, help="ImageFolder tree, CIFAR batches folder, image folder (+ --labels) or .npz")
    p.add_argument("--out", type=Path, required=True, help="output: a .npz file, or a folder for --to imagefolder")
    p.add_argument("--to", choices=TARGETS, help="output format (default: npz when --out ends in .npz, else imagefolder)")
    p.add_argument("--layout", default="auto", help=f"source layout: {', '.join(LAYOUTS)} (default: auto)")
    p.add_argument("--labels", type=Path, help="CSV of filename,label rows for a plain folder of images")
    p.add_argument("--split", default="test", help="CIFAR batches: test (default) or train")
    p.add_argument("--images-key", help="npz source: the array holding the images")
    p.add_argument("--labels-key", help="npz source: the array holding the labels")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="resize every image to H x W")


def run(args: argparse.Namespace) -> int:
    out, n, classes = convert(args.source, args.out, layout=args.layout, to=args.to, labels=args.labels,
                              split=args.split, images_key=args.images_key, labels_key=args.labels_key,
                              size=tuple(args.size) if args.size else None)
    print(f"wrote {out}: {n} images, {classes} classes")
    return 0


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message):
        raise UserError(f"{self.prog}: {message}")


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="python -m bench.data.convert", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    try:
        return run(parser.parse_args(argv))
    except UserError as exc:
        print(f"authbench: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

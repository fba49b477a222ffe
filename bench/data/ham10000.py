"""HAM10000 dermoscopic skin-lesion images (NE's healthcare experiment, Sec. 5 "NE for Skin-lesion Classification").

NE (J. Wang et al., "Catch-Only-One: Non-Transferable Examples for Model-Specific Authorization",
arXiv 2510.10982) evaluates on "HAM10000 (Nagabu, 2024) ... (HuggingFace Nagabu/HAM10000)", loaded in its public
code with `datasets.load_dataset("Nagabu/HAM10000", split=...)` (default split "test"), columns `image` and
`label`. The data itself is P. Tschandl, C. Rosendahl and H. Kittler, "The HAM10000 dataset, a large collection
of multi-source dermatoscopic images of common pigmented skin lesions", Scientific Data 5, 180161 (2018),
distributed at doi:10.7910/DVN/DBW86T (Harvard Dataverse; CC BY-NC 4.0).

Two ways in, both lazy (images are decoded and resized only when read):

    [data]
    dataset = "ham10000"
    hub = "Nagabu/HAM10000"       # as the NE paper: the `datasets` library, its own splits and labels;
    revision = "<commit>"         #   pin the hub revision (a commit of the dataset repository)
    split = "test"

    [data]
    dataset = "ham10000"
    root = "data/ham10000"        # the Dataverse / ISIC / Kaggle layout, imported from a folder:
    split = "test"                #   HAM10000_metadata.csv (or .tab) + the <image_id>.jpg files anywhere below
    sha256 = "<hex>"              #   the metadata file's sha256: a different file is an error

From a folder the labels are the seven `dx` codes in sorted order (akiec, bcc, bkl, df, mel, nv, vasc: 0..6) and
the splits ("train", "test", "all") are a fixed lesion-grouped 80/20 split (`test_fraction`, `split_seed`): every
image of one lesion falls on one side. `python -m bench.data.ham10000 DIR` prints the sha256 of the metadata file
and of any archive (HAM10000_images_part_1.zip, ...) in DIR, for [data] sha256 and docs/ne.md.
"""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path

import numpy as np
import torch

from bench.core.errors import UserError
from bench.data.base import Split, check_labels, register_dataset, stat_digest
from bench.data.vision import (IMAGE_EXTENSIONS, HubReader, ImageFolderReader, data_path, hub_fingerprint,
                               resolution_tag, subset_positions)
from bench.kits.store import sha256_of

DX = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")  # HAM10000's seven diagnoses, sorted: the folder label ids
METADATA = ("HAM10000_metadata.csv", "HAM10000_metadata.tab", "HAM10000_metadata")
SPLITS = ("train", "test", "all")
HUB = "Nagabu/HAM10000"  # the NE paper's source (its reference "Nagabu, 2024")
HUB_URL = "https://huggingface.co/datasets/Nagabu/HAM10000"
DATAVERSE = "https://doi.org/10.7910/DVN/DBW86T"
WHAT = "ham10000"


def find_metadata(folder: Path) -> Path:
    for name in METADATA:
        if (folder / name).is_file():
            return folder / name
    raise UserError(f"{WHAT}: {str(folder)!r} has no {' / '.join(METADATA[:2])}; expected the HAM10000 distribution "
                    f"({DATAVERSE}): the metadata file and the <image_id>.jpg images below it")


def read_metadata(path: Path) -> list[dict]:
    """Rows of the metadata file (comma- or tab-separated, quoted or not), each with lesion_id, image_id and dx."""
    text = path.read_text(encoding="utf-8-sig")
    dialect = "excel-tab" if text.split("\n", 1)[0].count("\t") > text.split("\n", 1)[0].count(",") else "excel"
    rows = [{k.strip().strip('"'): (v or "").strip().strip('"') for k, v in r.items() if k}
            for r in csv.DictReader(text.splitlines(), dialect=dialect)]
    missing = {"lesion_id", "image_id", "dx"} - set(rows[0] if rows else ())
    if missing:
        raise UserError(f"{WHAT}: {str(path)!r} lacks the column(s) {', '.join(sorted(missing))}; expected HAM10000's "
                        "lesion_id, image_id, dx, dx_type, age, sex, localization")
    bad = sorted({r["dx"] for r in rows} - set(DX))
    if bad:
        raise UserError(f"{WHAT}: {str(path)!r} has diagnosis {bad[0]!r}; valid dx codes: {', '.join(DX)}")
    return rows


def lesion_split(rows: list[dict], split: str, test_fraction: float, seed: int) -> list[int]:
    """Row numbers of `split`: lesions (not images) are shuffled with `seed` and the first `test_fraction` of
    them are the test side, so that no lesion is on both sides."""
    if split == "all":
        return list(range(len(rows)))
    lesions = sorted({r["lesion_id"] for r in rows})
    order = np.random.default_rng(seed).permutation(len(lesions))
    n_test = int(round(test_fraction * len(lesions)))
    test = {lesions[i] for i in order[:n_test]}
    return [i for i, r in enumerate(rows) if (r["lesion_id"] in test) == (split == "test")]


def image_files(folder: Path) -> dict[str, str]:
    """image_id -> path relative to `folder` of every image file below it."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames.sort()
        for name in sorted(filenames):
            stem, ext = os.path.splitext(name)
            if ext.lower() in IMAGE_EXTENSIONS:
                found.setdefault(stem, os.path.relpath(os.path.join(dirpath, name), folder))
    return found


@register_dataset("ham10000", "HAM10000 skin lesions (NE Sec. 5): hub Nagabu/HAM10000 as the paper, or a local "
                  "HAM10000 folder (metadata + images; 7 dx classes, lesion-grouped split)")
def ham10000(split: str = "test", root: str | None = None, hub: str | None = None, revision: str | None = None,
             sha256: str | None = None, resize=224, crop=None, resample: str = "bilinear", test_fraction: float = 0.2,
             split_seed: int = 0, subset: int = 0, subset_seed: int = 0) -> Split:
    if hub:
        return _from_hub(str(hub), split, revision, resize, crop, resample, subset, subset_seed)
    folder = data_path(root)
    if folder is None:
        raise UserError(f"dataset 'ham10000' needs root = \"<HAM10000 folder>\" or hub = \"{HUB}\" in [data] "
                        "(or --data-root)")
    if not folder.is_dir():
        raise UserError(f"{WHAT}: root {str(folder)!r} does not exist; give the folder holding HAM10000_metadata.csv "
                        "and the images")
    if split not in SPLITS:
        raise UserError(f"unknown {WHAT} split {split!r}; valid choices: {', '.join(SPLITS)}")
    if not 0 < float(test_fraction) < 1:
        raise UserError(f"{WHAT}: test_fraction must be in (0, 1), got {test_fraction!r}")
    meta = find_metadata(folder)
    if sha256:
        got = sha256_of(meta)
        if got != str(sha256).lower():
            raise UserError(f"{WHAT}: {str(meta)!r} has sha256 {got}, not the pinned {sha256}; use the pinned "
                            "metadata file or update [data] sha256")
    rows = read_metadata(meta)
    files = image_files(folder)
    missing = [r["image_id"] for r in rows if r["image_id"] not in files]
    if missing:
        raise UserError(f"{WHAT}: {len(missing)} image(s) of {meta.name} are not below {str(folder)!r} (first: "
                        f"{missing[0]}.jpg); unpack HAM10000_images_part_1.zip and _part_2.zip there")
    chosen = lesion_split(rows, split, float(test_fraction), int(split_seed))
    positions = subset_positions(len(chosen), subset, subset_seed)
    picked = [rows[chosen[int(p)]] for p in positions]
    labels = torch.tensor([DX.index(r["dx"]) for r in picked], dtype=torch.long)
    names = [files[r["image_id"]] for r in picked]
    reader = ImageFolderReader(str(folder), names, resize, crop, resample, WHAT)
    content = f"{sha256 or stat_digest(folder, [meta.name])}|{stat_digest(folder, sorted(files.values()))}"
    tag = f"{WHAT}@{resolution_tag(resize, crop)}/{split}"
    return Split(tag, None, labels, np.asarray(chosen)[positions], len(DX), reader=reader, content=content)


def _from_hub(name: str, split: str, revision, resize, crop, resample, subset: int, subset_seed: int) -> Split:
    try:
        import datasets
    except ImportError:
        raise UserError(f"{WHAT}: hub = {name!r} needs the `datasets` library: pip install datasets (or give root = "
                        "a local HAM10000 folder)") from None
    try:
        ds = datasets.load_dataset(name, split=split, revision=revision)
    except Exception as e:  # network, a bad name / split / revision: the user's to fix
        text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{WHAT}: cannot load hub dataset {name!r} split {split!r} ({text}); give root = a local "
                        "HAM10000 folder instead") from None
    cols = list(ds.column_names)
    if "image" not in cols or not ({"label", "labels"} & set(cols)):
        raise UserError(f"{WHAT}: hub dataset {name!r} has columns {cols}; expected image and label (as {HUB})")
    label_col = "label" if "label" in cols else "labels"
    feature = ds.features[label_col]
    classes = int(getattr(feature, "num_classes", 0) or 0)
    positions = subset_positions(len(ds), subset, subset_seed)
    picked = ds.select(positions.tolist()) if len(positions) < len(ds) else ds
    labels = torch.tensor([int(v) for v in picked[label_col]], dtype=torch.long)
    classes = classes or int(labels.max()) + 1
    check_labels(labels, classes, f"{WHAT} hub {name!r} split {split!r}")
    reader = HubReader(picked, "image", "pil", resize, crop, resample, WHAT)
    return Split(f"{WHAT}-hub@{resolution_tag(resize, crop)}/{split}", None, labels, positions, classes, reader=reader,
                 content=f"{revision or ''}|{hub_fingerprint(ds)}")


def main(argv: list[str] | None = None) -> int:
    """Print the sha256 and size of the metadata file and of every .zip / .tar* archive in a HAM10000 folder."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not Path(args[0]).is_dir():
        print("usage: python -m bench.data.ham10000 DIR  (a folder with HAM10000_metadata.csv and/or the archives)",
              file=sys.stderr)
        return 2
    folder = Path(args[0])
    found = [p for p in sorted(folder.iterdir()) if p.is_file() and (p.name in METADATA or p.suffix == ".zip"
                                                                      or ".tar" in p.name)]
    if not found:
        print(f"error: {str(folder)!r} holds no HAM10000 metadata file or archive", file=sys.stderr)
        return 2
    for p in found:
        print(f"{sha256_of(p)}  {p.stat().st_size:>12}  {p.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

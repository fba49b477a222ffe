"""HAM10000 loading (NE Sec. 5): a tiny fixture in the HAM10000 layout built here, and a hub stand-in; no internet."""

from __future__ import annotations

import hashlib
import tomllib

import numpy as np
import pytest
import torch
from PIL import Image

from bench.core.errors import UserError
from bench.data import load_dataset
from bench.data import ham10000 as H
from bench.suite import SUITES_DIR

ROWS = [  # lesion_id, image_id, dx: 8 lesions, 12 images, every diagnosis
    ("HAM_0000001", "ISIC_0000001", "akiec"), ("HAM_0000001", "ISIC_0000002", "akiec"),
    ("HAM_0000002", "ISIC_0000003", "bcc"), ("HAM_0000003", "ISIC_0000004", "bkl"),
    ("HAM_0000003", "ISIC_0000005", "bkl"), ("HAM_0000004", "ISIC_0000006", "df"),
    ("HAM_0000005", "ISIC_0000007", "mel"), ("HAM_0000006", "ISIC_0000008", "nv"),
    ("HAM_0000006", "ISIC_0000009", "nv"), ("HAM_0000006", "ISIC_0000010", "nv"),
    ("HAM_0000007", "ISIC_0000011", "vasc"), ("HAM_0000008", "ISIC_0000012", "nv"),
]


def _fixture(folder, sep=",", rows=ROWS):
    """The Dataverse layout: the metadata file and the JPEGs split over two part folders; image i is filled
    with grey level 10 * i so that a decoded image names its row."""
    folder.mkdir(parents=True, exist_ok=True)
    header = ["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"]
    lines = [sep.join(header)] + [sep.join([le, im, dx, "histo", "50.0", "male", "back"]) for le, im, dx in rows]
    (folder / "HAM10000_metadata.csv").write_text("\n".join(lines) + "\n")
    for i, (_, image_id, _) in enumerate(rows):
        part = folder / ("HAM10000_images_part_1" if i % 2 else "HAM10000_images_part_2")
        part.mkdir(exist_ok=True)
        Image.new("RGB", (30, 20), (10 * i, 10 * i, 10 * i)).save(part / f"{image_id}.jpg", quality=100)
    return folder


def _grey(split, i) -> int:
    return int(round(float(split.read([i]).mean()) * 255 / 10))


def test_folder_import_labels_images_and_lesion_grouped_split(tmp_path):
    root = _fixture(tmp_path / "ham")
    every = load_dataset("ham10000", "all", root=str(root), resize=16)
    assert len(every) == 12 and every.num_classes == 7 and every.read([0]).shape == (1, 3, 16, 16)
    for i in range(len(every)):  # each image decodes to its own row's pixels and carries its row's diagnosis
        row = ROWS[_grey(every, i)]
        assert H.DX[int(every.labels[i])] == row[2]
    train = load_dataset("ham10000", "train", root=str(root), resize=16)
    test = load_dataset("ham10000", "test", root=str(root), resize=16)
    assert len(train) + len(test) == 12 and len(test) > 0 and len(train) > 0
    lesions = {s: {ROWS[_grey(d, i)][0] for i in range(len(d))} for s, d in (("train", train), ("test", test))}
    assert not lesions["train"] & lesions["test"]  # no lesion on both sides
    again = load_dataset("ham10000", "test", root=str(root), resize=16)
    assert torch.equal(again.labels, test.labels)  # fixed split
    other = load_dataset("ham10000", "test", root=str(root), resize=16, split_seed=3)
    assert {ROWS[_grey(other, i)][0] for i in range(len(other))} != lesions["test"]
    assert len(load_dataset("ham10000", "all", subset=5, root=str(root), resize=16)) == 5


def test_tab_separated_metadata_and_sha256_pin(tmp_path):
    root = _fixture(tmp_path / "ham", sep="\t")
    digest = hashlib.sha256((root / "HAM10000_metadata.csv").read_bytes()).hexdigest()
    pinned = load_dataset("ham10000", "all", root=str(root), sha256=digest, resize=8)
    assert len(pinned) == 12 and digest in pinned.content
    with pytest.raises(UserError, match="not the pinned"):
        load_dataset("ham10000", "all", root=str(root), sha256="0" * 64, resize=8)


@pytest.mark.parametrize("damage, message", [
    (lambda r: (r / "HAM10000_images_part_1" / "ISIC_0000002.jpg").unlink(), "are not below"),
    (lambda r: (r / "HAM10000_metadata.csv").write_text("lesion_id,image_id\nHAM_1,ISIC_1\n"), "lacks the column"),
    (lambda r: (r / "HAM10000_metadata.csv").write_text("lesion_id,image_id,dx\nHAM_1,ISIC_0000001,cancer\n"),
     "diagnosis 'cancer'"),
    (lambda r: (r / "HAM10000_metadata.csv").unlink(), "no HAM10000_metadata.csv"),
])
def test_bad_folders_are_one_line_errors(tmp_path, damage, message):
    root = _fixture(tmp_path / "ham")
    damage(root)
    with pytest.raises(UserError, match=message):
        load_dataset("ham10000", "all", root=str(root), resize=8)


def test_bad_options(tmp_path):
    root = _fixture(tmp_path / "ham")
    with pytest.raises(UserError, match="unknown ham10000 split"):
        load_dataset("ham10000", "validation", root=str(root))
    with pytest.raises(UserError, match="needs root"):
        load_dataset("ham10000", "test")
    with pytest.raises(UserError, match="test_fraction"):
        load_dataset("ham10000", "test", root=str(root), test_fraction=1.5)


def test_hub_path_reads_the_papers_columns(monkeypatch):
    datasets = pytest.importorskip("datasets")
    images = [Image.new("RGB", (12, 12), (40 * i, 0, 0)) for i in range(5)]
    fake = datasets.Dataset.from_dict({"image": images, "label": [0, 1, 1, 0, 1]},
                                      features=datasets.Features({"image": datasets.Image(),
                                                                  "label": datasets.ClassLabel(names=["a", "b"])}))
    calls = []

    def load(name, split, revision=None):
        calls.append((name, split, revision))
        return fake

    monkeypatch.setattr(datasets, "load_dataset", load)
    split = load_dataset("ham10000", "test", hub=H.HUB, revision="abc123", resize=8)
    assert calls == [(H.HUB, "test", "abc123")] and split.num_classes == 2
    assert split.labels.tolist() == [0, 1, 1, 0, 1] and split.read([2]).shape == (1, 3, 8, 8)
    assert np.isclose(float(split.read([2])[0, 0].mean()), 80 / 255, atol=0.02) and "abc123" in split.content


def test_sha256_tool(tmp_path, capsys):
    root = _fixture(tmp_path / "ham")
    (root / "HAM10000_images_part_1.zip").write_bytes(b"not really a zip")
    assert H.main([str(root)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[-1] for line in out] == ["HAM10000_images_part_1.zip", "HAM10000_metadata.csv"]
    assert out[0].split()[0] == hashlib.sha256(b"not really a zip").hexdigest()
    assert H.main([str(tmp_path / "nowhere")]) == 2


def test_ne_ham10000_suite_names_the_papers_setting():
    suite = tomllib.loads((SUITES_DIR / "ne-ham10000.toml").read_text())
    assert suite["data"]["dataset"] == "ham10000" and suite["data"]["hub"] == H.HUB
    labels = [m["name"] for m in suite["models"]["authorized"]] + [m["name"] for m in suite["models"]["evaluated"]]
    assert "vit-b16-ham" in labels and "resnet-50-ham" in labels

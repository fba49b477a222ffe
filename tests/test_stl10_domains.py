"""STL-10 and dataset domains of the `domain` protocol (issue 23, NTL's CIFAR-10 / STL-10 pair): the STL-10 reader
(column-major pixels), the pinned archives' checks, the class map, and a tiny CIFAR-10 -> STL-10 run, all on
fixtures built here (no download, no real image)."""

from __future__ import annotations

import io
import pickle
import sys
import tarfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from bench.cli import main  # noqa: E402
from bench.core.errors import UserError  # noqa: E402
from bench.core.results import read_rows  # noqa: E402
from bench.data import archives  # noqa: E402
from bench.data.base import load_dataset  # noqa: E402
from bench.data.stl10 import CLASSES as STL_CLASSES  # noqa: E402
from bench.data.torchvision_sets import CIFAR10_CLASSES  # noqa: E402
from bench.protocols.domain import shared_classes  # noqa: E402

SIDE = 96


def stl_images(n: int, seed: int) -> np.ndarray:
    """(n, 3, 96, 96) uint8, row-major (channel, row, column)."""
    return np.random.default_rng(seed).integers(0, 256, size=(n, 3, SIDE, SIDE), dtype=np.uint8)


def write_stl(folder: Path, splits: dict) -> None:
    """An stl10_binary folder: images stored as the distribution stores them (each channel column-major), labels
    as bytes 1..10, class_names.txt."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, (images, labels) in splits.items():
        (folder / f"{split}_X.bin").write_bytes(np.ascontiguousarray(images.transpose(0, 1, 3, 2)).tobytes())
        (folder / f"{split}_y.bin").write_bytes((np.asarray(labels, dtype=np.uint8) + 1).tobytes())
    (folder / "class_names.txt").write_text("\n".join(STL_CLASSES) + "\n")


def write_cifar(root: Path, train_labels: list, test_labels: list, seed: int = 0) -> None:
    """torchvision's cifar-10-batches-py: five training batches and test_batch (dicts of 'data' (N, 3072) uint8 and
    'labels'), as bench.data.torchvision_sets reads them."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    parts = np.array_split(np.asarray(train_labels), 5)
    for i, part in enumerate(parts, 1):
        data = rng.integers(0, 256, size=(len(part), 3072), dtype=np.uint8)
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps({"data": data, "labels": [int(v) for v in part]}))
    data = rng.integers(0, 256, size=(len(test_labels), 3072), dtype=np.uint8)
    (folder / "test_batch").write_bytes(pickle.dumps({"data": data, "labels": [int(v) for v in test_labels]}))


def test_stl10_reader_puts_each_pixel_where_the_column_major_file_has_it(tmp_path):
    images = np.zeros((3, 3, SIDE, SIDE), dtype=np.uint8)
    images[1, 2, 5, 70] = 255  # image 1, channel 2 (blue), row 5, column 70
    images[2, 0, 90, 3] = 128
    write_stl(tmp_path / "stl10_binary", {"train": (images, [0, 7, 9]), "test": (images[:1], [2])})
    # the file holds the pixel at channel 2, column 70, row 5 (column-major within the channel)
    raw = np.frombuffer((tmp_path / "stl10_binary" / "train_X.bin").read_bytes(), dtype=np.uint8)
    assert raw[1 * 3 * SIDE * SIDE + 2 * SIDE * SIDE + 70 * SIDE + 5] == 255
    split = load_dataset("stl10", "train", root=str(tmp_path), check="size")
    x = split.read(np.array([2, 1]))
    assert x.shape == (2, 3, SIDE, SIDE) and x.dtype == torch.float32
    assert x[1, 2, 5, 70] == 1.0 and x[1, 2, 70, 5] == 0.0 and float(x[1].sum()) == 1.0
    assert x[0, 0, 90, 3] == pytest.approx(128 / 255) and x[0, 0, 3, 90] == 0.0
    assert split.labels.tolist() == [0, 7, 9] and split.num_classes == 10
    assert split.class_names == STL_CLASSES
    small = load_dataset("stl10", "train", root=str(tmp_path / "stl10_binary"), check="size", resize=32)
    assert small.read(np.array([0])).shape == (1, 3, 32, 32)


def test_stl10_folder_errors_are_one_line(tmp_path):
    images = stl_images(2, 0)
    write_stl(tmp_path / "stl10_binary", {"train": (images, [0, 1]), "test": (images, [0, 1])})
    with pytest.raises(UserError, match="md5 .* not the official file's") as e:  # the fixture is not the real file
        load_dataset("stl10", "test", root=str(tmp_path))
    assert "\n" not in str(e.value)
    (tmp_path / "stl10_binary" / "test_y.bin").write_bytes(bytes([1, 2, 3]))  # 3 labels, 2 images
    with pytest.raises(UserError, match="do not belong together"):
        load_dataset("stl10", "test", root=str(tmp_path), check="size")
    (tmp_path / "stl10_binary" / "test_y.bin").write_bytes(bytes([1, 11]))
    with pytest.raises(UserError, match="label 11; STL-10 labels are bytes 1..10"):
        load_dataset("stl10", "test", root=str(tmp_path), check="size")
    with pytest.raises(UserError, match="no stl10_binary/"):
        load_dataset("stl10", "test", root=str(tmp_path / "elsewhere"), check="size")


def _fake_archive(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    images = stl_images(4, 1)
    write_stl(src / "stl10_binary", {"train": (images, [0, 1, 2, 3]), "test": (images[:2], [4, 5])})
    path = tmp_path / "stl10_binary.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for p in sorted((src / "stl10_binary").iterdir()):
            tar.add(p, arcname=f"stl10_binary/{p.name}")
        extra = b"not unpacked"
        info = tarfile.TarInfo("stl10_binary/unlabeled_X.bin")
        info.size = len(extra)
        tar.addfile(info, io.BytesIO(extra))
    return path


def test_pinned_archive_checks_refuse_another_archive_in_one_line(tmp_path):
    path = _fake_archive(tmp_path)
    size = path.stat().st_size
    sha, md5 = archives.digests(path)
    checks = [(archives.STL10, "has %d bytes, the pinned stl10_binary.tar.gz has 2640397119" % size),
              (replace(archives.STL10, size=size), f"has sha256 {sha}, not the pinned"),
              (replace(archives.STL10, size=size, sha256=sha), f"has md5 {md5}, not the pinned")]
    for pin, message in checks:
        with pytest.raises(UserError) as e:
            archives.unpack(path, pin, tmp_path / "out")
        assert message in str(e.value) and "\n" not in str(e.value)
        assert not (tmp_path / "out").exists()  # refused before anything was unpacked
    # the real pins as the module states them
    assert archives.STL10.sha256 == "f31fd99273a1acb8609c8db427cebb1de3f71de77758cdc0e22956e1289b9866"
    assert archives.STL10.md5 == "91f7769df0f17e558f3565bffb0c7dfb" and archives.STL10.size == 2_640_397_119
    assert archives.CIFAR10.sha256 == "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"
    assert archives.CIFAR10.md5 == "c58f30108f718f92721af3b95e74349a" and archives.CIFAR10.size == 170_498_071
    # a matching archive unpacks only the members the loader reads, and the loader reads them
    folder = archives.unpack(path, replace(archives.STL10, size=size, sha256=sha, md5=md5), tmp_path / "out")
    assert folder == tmp_path / "out" / "stl10_binary" and not (folder / "unlabeled_X.bin").exists()
    assert load_dataset("stl10", "test", root=str(tmp_path / "out"), check="size").labels.tolist() == [4, 5]
    assert archives.main(["check", "stl10", str(path)]) == 2


def test_fetch_without_a_route_or_with_other_bytes_is_one_line_and_places_nothing(tmp_path, monkeypatch):
    import urllib.error

    import bench.kits.store as store

    def offline(url, part, size, progress=None, label=""):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(store, "download", offline)
    with pytest.raises(UserError) as e:
        archives.fetch(archives.STL10, tmp_path / "data", log=lambda *_: None)
    text = str(e.value)
    assert "\n" not in text and "cs.stanford.edu" in text and "ai.stanford.edu" in text  # both mirrors tried
    assert "python -m bench.data.archives extract stl10 ARCHIVE" in text

    fake = _fake_archive(tmp_path)

    def wrong_bytes(url, part, size, progress=None, label=""):
        part.parent.mkdir(parents=True, exist_ok=True)
        part.write_bytes(fake.read_bytes())

    monkeypatch.setattr(store, "download", wrong_bytes)
    pin = replace(archives.STL10, size=fake.stat().st_size)  # the size matches, the content does not
    with pytest.raises(UserError, match="has sha256 .* not the pinned"):
        archives.fetch(pin, tmp_path / "data", log=lambda *_: None)
    assert not list((tmp_path / "data").rglob("*.tar.gz")) and not (tmp_path / "data" / "stl10_binary").exists()
    sha, md5 = archives.digests(fake)
    folder = archives.fetch(replace(pin, sha256=sha, md5=md5), tmp_path / "data", log=lambda *_: None)
    assert (folder / "train_X.bin").is_file() and (tmp_path / "data" / "stl10_binary.tar.gz").is_file()


def test_the_class_map_keeps_the_nine_shared_classes_and_maps_automobile_to_car():
    keep = shared_classes(CIFAR10_CLASSES, {"dataset:stl10": STL_CLASSES})
    assert [CIFAR10_CLASSES[i] for i in keep] == ["airplane", "automobile", "bird", "cat", "deer", "dog", "horse",
                                                 "ship", "truck"]
    assert "frog" not in [CIFAR10_CLASSES[i] for i in keep] and len(keep) == 9
    back = shared_classes(STL_CLASSES, {"dataset:cifar10": CIFAR10_CLASSES})  # STL-10 as the suite: monkey dropped
    assert [STL_CLASSES[i] for i in back] == ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "ship", "truck"]


SUITE = """[suite]
name = "ntl-cifar-stl-tiny"
seed = 0

[data]
dataset = "cifar10"
root = "{root}"
split = "test"
train_split = "train"

[models]
authorized = [{{ source = "torch", factory = "bench.recipes.small_cifar:cnn", name = "cnn", mean = [0.5, 0.5, 0.5], std = [0.25, 0.25, 0.25], input_size = [3, 32, 32] }}]

[[defenses]]
name = "ntl"
params = {{ epochs = 1, batch = 8 }}
source = "source"
targets = ["{target}"]
archs = ["torch:bench.recipes.small_cifar:cnn"]
attacks = ["none", {{ name = "target-ft", epochs = 1, fraction = 0.5 }}]
datasets = {{ stl10 = {{ check = "size" }} }}
"""


def _fixture_root(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    # CIFAR-10 labels: 6 = frog (dropped); STL-10 labels: 7 = monkey (dropped), 2 = car (CIFAR 1, automobile)
    write_cifar(root, train_labels=[0, 1, 2, 6, 9, 1, 6, 8, 3, 4], test_labels=[1, 6, 0, 9, 6, 2])
    write_stl(root / "stl10_binary", {"train": (stl_images(8, 2), [2, 7, 0, 9, 7, 1, 5, 2]),
                                      "test": (stl_images(5, 3), [7, 2, 2, 8, 7])})
    return root


@pytest.mark.slow
def test_a_cifar10_to_stl10_run_scores_the_source_and_the_dataset_domain(tmp_path, capsys):
    root = _fixture_root(tmp_path)
    suite = tmp_path / "tiny.toml"
    suite.write_text(SUITE.format(root=root, target="dataset:stl10"))
    out = tmp_path / "run"
    code = main([str(a) for a in ["run", suite, "--threads", "1", "--no-progress", "--cache-dir", tmp_path / "cache",
                                  "--out", out, "--reports", tmp_path / "rep"]])
    _, err = capsys.readouterr()
    assert code == 0, err
    every = read_rows(out)
    rows = [r for r in every if r["protocol"] == "domain"]
    cells = {(r["attack"], r["evaluated"]): r for r in rows}
    assert set(cells) == {(a, d) for a in ("none", "target-ft(epochs=1,fraction=0.5)")
                          for d in ("source", "dataset:stl10")}
    # frog dropped from the CIFAR-10 test split (6 -> 4 images), monkey from STL-10's (5 -> 3)
    assert {d: r["n"] for (a, d), r in cells.items() if a == "none"} == {"source": 4, "dataset:stl10": 3}
    assert cells[("none", "source")]["role"] == "authorized" and cells[("none", "dataset:stl10")]["role"] == "unauthorized"
    assert all(0 <= r["metrics"]["top1"] <= 100 for r in rows)


def test_dataset_domain_sets_map_labels_and_resize(tmp_path):
    from types import SimpleNamespace

    from bench.protocols.domain import DomainProtocol

    root = _fixture_root(tmp_path)
    train = load_dataset("cifar10", "train", root=str(root))
    test = load_dataset("cifar10", "test", root=str(root))
    ctx = SimpleNamespace(train_data=train, data=test, suite=SimpleNamespace(data={"dataset": "cifar10", "root": str(root)}),
                          memo=lambda name, _m={}: _m.setdefault(name, {}))
    job = SimpleNamespace(point={"source": "source", "targets": ["dataset:stl10"], "datasets": {"stl10": {"check": "size"}}})
    sets = DomainProtocol().domain_sets(ctx, job)
    assert sets.num_classes == 9 and "frog" not in sets.classes
    x, y = sets.train.domain("dataset:stl10")
    # STL train labels [car, monkey, airplane, truck, monkey, bird, dog, car] -> shared ids (CIFAR order, frog removed)
    assert y.tolist() == [1, 0, 8, 2, 5, 1] and x.shape == (6, 3, 32, 32)
    sx, sy = sets.train.domain("source")  # CIFAR train labels without the frogs, truck 9 -> 8 and ship 8 -> 7
    assert sy.tolist() == [0, 1, 2, 8, 1, 7, 3, 4] and sx.shape == (8, 3, 32, 32)
    mixed_x, mixed_y = DomainProtocol.target_mix(sets.train, ["dataset:stl10"], len(sy))
    assert mixed_y.tolist() == [1, 0, 8, 2, 5, 1, 1, 0]  # the smaller target cycled to the source's length
    assert torch.equal(mixed_x[6], x[0])


def test_a_bad_dataset_domain_is_a_one_line_error_listing_the_datasets(tmp_path, capsys):
    root = _fixture_root(tmp_path)
    suite = tmp_path / "bad.toml"
    suite.write_text(SUITE.format(root=root, target="dataset:stl-10"))
    code = main(["run", str(suite), "--threads", "1", "--no-progress", "--cache-dir", str(tmp_path / "cache"),
                 "--out", str(tmp_path / "run")])
    _, err = capsys.readouterr()
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1, err
    assert "'dataset:stl-10'" in lines[0] and "unknown dataset 'stl-10'" in lines[0]
    assert "stl10" in lines[0] and "cifar10" in lines[0] and "digits" in lines[0]
    suite.write_text(SUITE.format(root=root, target="dataset:stl10").replace('check = "size"', 'checks = "size"'))
    code = main(["run", str(suite), "--plan", "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "has no option 'checks'" in err and "check" in err, err


def test_the_shipped_cifar10_stl10_suite_plans_on_the_fixture_and_names_the_fetch_without_data(tmp_path, capsys):
    root = _fixture_root(tmp_path)
    suite = ROOT / "suites" / "ntl-cifar10-stl10.toml"
    base = ["--threads", "1", "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "run")]
    assert main(["run", str(suite), "--plan", "--data-root", str(root), *base]) == 0
    text = capsys.readouterr().out
    jobs = [ln for ln in text.splitlines() if " domain " in ln]
    assert len(jobs) == 4 * 5 and all("targets=['dataset:stl10']" in ln for ln in jobs)
    assert {d for d in ("plain", "ntl", "cuti", "sophon") if any(f" domain {d} " in ln for ln in jobs)} == {
        "plain", "ntl", "cuti", "sophon"}
    assert main(["run", str(suite), "--data-root", str(tmp_path / "nothing"), *base]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "python -m bench.data.archives fetch cifar10" in err

"""Lazy datasets (bench.data): images are decoded by position, in batches, only when read.

Every fixture is generated here (no downloads): lazy reads are compared bit for bit with the eager
decoding the loaders did before (copied below as `eager_*`)."""

from __future__ import annotations

import hashlib
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from bench.data import DATASETS, Batch, Split, load_dataset
from bench.data import torchvision_sets, vision
from bench.data.base import array_digest, file_digest
from bench.data.vision import _pil_to_tensor, _stack, resize_images, subset_positions
from bench.core.errors import UserError

SIZES = [(48, 60), (50, 44), (64, 64), (45, 70), (33, 41)]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """val/<3 class folders>/<5 PNGs of different sizes>."""
    root = tmp_path_factory.mktemp("imagefolder")
    rng = np.random.default_rng(1)
    for c in ("n01", "n02", "n03"):
        (root / "val" / c).mkdir(parents=True)
        for i, (h, w) in enumerate(SIZES):
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / "val" / c / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    rng = np.random.default_rng(2)
    path = tmp_path_factory.mktemp("npz") / "c.npz"
    np.savez(path, train_images=rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8), train_labels=rng.integers(0, 10, 40),
             test_images=rng.integers(0, 256, (30, 32, 32, 3), dtype=np.uint8), test_labels=rng.integers(0, 10, 30))
    return path


def legacy_identity(name, indices) -> dict:
    digest = hashlib.sha256(np.ascontiguousarray(indices, dtype=np.int64).tobytes()).hexdigest()[:16]
    return {"dataset": name, "n": int(len(indices)), "indices": digest}


def legacy_positions(n_total, n, seed):
    return np.sort(np.random.default_rng(seed).choice(n_total, size=n, replace=False))


# -- the eager loaders as they were --------------------------------------------------------------


def eager_imagefolder(root, resize, crop=None, subset=0, seed=0):
    from torchvision.datasets import ImageFolder

    ds = ImageFolder(str(root / "val"))
    positions = subset_positions(len(ds.samples), subset, seed)
    images = _stack(lambda i: ds.loader(ds.samples[i][0]), positions, resize, crop, "bilinear", "imagenet")
    return images, torch.tensor([ds.samples[i][1] for i in positions]), positions


def eager_npz(path, split, resize=None, crop=None, subset=0, seed=0):
    with np.load(path) as arrays:
        images, labels = np.asarray(arrays[f"{split}_images"]), np.asarray(arrays[f"{split}_labels"])
    x = torch.as_tensor(images).float()
    x = x.permute(0, 3, 1, 2) if x.shape[-1] == 3 else x
    x = x / 255.0 if images.dtype == np.uint8 or x.max() > 1.0 else x
    keep = subset_positions(len(labels), subset, seed)
    return resize_images(x.contiguous()[keep], resize, crop, "bilinear"), torch.as_tensor(labels)[keep], keep


def assert_reads_like(split: Split, images: torch.Tensor):
    assert split.lazy and split._images is None
    assert split.shape == tuple(images.shape[1:])
    for bs in (1, 7, 256):
        assert torch.equal(torch.cat([b.images for b in split.batches(bs)]), images)
    picks = np.array([len(split) - 1, 0, 2, 2])
    assert torch.equal(split.read(picks), images[picks])
    assert torch.equal(split.images, images) and split.images.dtype == torch.float32


# -- the Split contract --------------------------------------------------------------------------


def test_in_memory_split_is_backward_compatible():
    gen = torch.Generator().manual_seed(0)
    images, labels, idx = torch.rand(20, 3, 8, 8, generator=gen), torch.arange(20) % 4, np.arange(100, 120)
    s = Split("tiny/test", images, labels, idx, 4)
    assert s.images is images and not s.lazy and len(s) == 20 and s.shape == (3, 8, 8)
    assert s.identity == legacy_identity("tiny/test", idx) and "content" not in s.identity
    part = s.subset(7, 3)
    keep = legacy_positions(20, 7, 3)
    assert np.array_equal(part.indices, idx[keep]) and torch.equal(part.images, images[keep])
    assert torch.equal(part.labels, labels[keep]) and part.identity == legacy_identity("tiny/test", idx[keep])
    assert s.subset(0, 1) is s and s.subset(20, 1) is s and s.subset(-3, 1) is s
    assert torch.equal(s.read([3, 1]), images[[3, 1]])
    again = pickle.loads(pickle.dumps(s))
    assert torch.equal(again.images, images) and again.identity == s.identity
    tagged = Split("tiny/test", images, labels, idx, 4, content="abc123")
    assert tagged.identity == {**legacy_identity("tiny/test", idx), "content": "abc123"}
    assert tagged.subset(5, 0).identity["content"] == "abc123"
    with pytest.raises(IndexError):
        s.read([20])
    with pytest.raises(ValueError):
        Split("bad", images, labels[:3], None, 4)


@pytest.mark.parametrize("n", [1, 7, 300])
def test_batches_cover_every_position_once(n):
    s = load_dataset("synthetic", "train", n=n, size=6, classes=3)
    full = s.images.clone()
    s = load_dataset("synthetic", "train", n=n, size=6, classes=3)
    for bs in (1, 7, 256):
        batches = list(s.batches(bs))
        assert all(isinstance(b, Batch) for b in batches) and all(len(b) <= bs for b in batches)
        assert np.array_equal(np.concatenate([b.positions for b in batches]), np.arange(n))
        assert np.array_equal(np.concatenate([b.indices for b in batches]), s.indices)
        assert torch.equal(torch.cat([b.labels for b in batches]), s.labels)
        assert torch.equal(torch.cat([b.images for b in batches]), full)
        assert batches[0].images.dtype == torch.float32 and batches[0].labels.dtype == torch.long
    with pytest.raises(ValueError):
        next(s.batches(0))
    with pytest.raises(Exception):
        batches[0].images = None  # frozen


@pytest.mark.parametrize("total,n,seed", [(10, 3, 0), (100, 37, 5), (1000, 999, 2), (50, 1, 7)])
def test_subset_positions_match_the_old_algorithm(total, n, seed):
    s = load_dataset("synthetic", "test", n=total, size=4)
    part = s.subset(n, seed)
    keep = legacy_positions(total, n, seed)
    assert np.array_equal(part.indices, s.indices[keep]) and torch.equal(part.labels, s.labels[keep])
    assert np.array_equal(subset_positions(total, n, seed), keep)
    assert part.lazy and part._images is None
    assert torch.equal(part.read([0, len(part) - 1]), s.read(keep[[0, -1]]))
    twice = part.subset(max(1, n // 2), seed + 1)  # a subset of a subset composes the positions
    k2 = legacy_positions(n, max(1, n // 2), seed + 1) if n > 1 else np.arange(n)
    assert np.array_equal(twice.indices, s.indices[keep[k2]])
    assert torch.equal(twice.read([0]), s.read(keep[k2[:1]]))


# -- ImageFolder ---------------------------------------------------------------------------------


def test_imagefolder_lazy_reads_equal_eager_decoding(folder):
    for resize, crop in ((40, None), ([36, 30], 28), (24, [20, 16])):
        images, labels, positions = eager_imagefolder(folder, resize, crop)
        s = load_dataset("imagenet", "validation", root=str(folder), resize=resize, crop=crop)
        assert torch.equal(s.labels, labels) and np.array_equal(s.indices, positions)
        assert_reads_like(s, images)
        part_images, _, keep = eager_imagefolder(folder, resize, crop, subset=6, seed=4)
        part = load_dataset("imagenet", "val", 6, 4, root=str(folder), resize=resize, crop=crop)
        assert np.array_equal(part.indices, keep) and part.identity == s.subset(6, 4).identity
        assert_reads_like(part, part_images)


def test_imagefolder_reads_nothing_until_asked(folder, monkeypatch):
    import torchvision.datasets.folder as tvf

    calls = []
    real = tvf.default_loader
    monkeypatch.setattr(tvf, "default_loader", lambda path: calls.append(path) or real(path))
    s = load_dataset("imagenet", "validation", root=str(folder), resize=20)
    part = s.subset(9, 0).take([4, 0, 2])
    blob = pickle.dumps(part)
    assert calls == [] and len(blob) < 4000
    x = part.read([1])
    assert len(calls) == 1 and calls[0].endswith(s.reader.files[s.subset(9, 0).indices[0]])
    assert torch.equal(x, s.read([s.subset(9, 0).indices[0]])) and len(calls) == 2
    calls.clear()
    assert [len(b) for b in part.batches(2)] == [2, 1] and len(calls) == 3
    assert torch.equal(pickle.loads(blob).images, part.images)


def test_imagefolder_native_sizes_and_bad_files_fail_at_load(folder, tmp_path):
    with pytest.raises(UserError, match="different sizes") as err:
        load_dataset("imagenet", "validation", root=str(folder), resize=None)
    assert "\n" not in str(err.value)
    bad = tmp_path / "val" / "n01"
    bad.mkdir(parents=True)
    (bad / "broken.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match="broken.png") as err:
        load_dataset("imagenet", "validation", root=str(tmp_path))
    assert "\n" not in str(err.value)


# -- hub (`datasets`) ----------------------------------------------------------------------------


def _hub_set(rng, n, sizes):
    datasets = pytest.importorskip("datasets")
    pics = [Image.fromarray(rng.integers(0, 256, (*sizes[i % len(sizes)], 3), dtype=np.uint8)) for i in range(n)]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    return datasets.Dataset.from_dict({"image": pics, "label": [int(v) for v in rng.integers(0, 10, n)]}, features=features)


def test_hub_imagenet_and_cifar_read_lazily(monkeypatch):
    rng = np.random.default_rng(3)
    inet, cifar = _hub_set(rng, 9, SIZES), _hub_set(rng, 12, [(32, 32)])
    monkeypatch.setattr(vision, "_hub", lambda name, split, what: inet if what == "imagenet" else cifar)
    picked = inet.select(subset_positions(9, 5, 1).tolist())
    eager = _stack(lambda i: picked[i]["image"], range(len(picked)), 30, None, "bilinear", "imagenet")
    s = load_dataset("imagenet", "validation", 5, 1, hub="x/imagenet", resize=30)
    assert np.array_equal(s.indices, subset_positions(9, 5, 1)) and s.labels.tolist() == list(picked["label"])
    assert_reads_like(s, eager)
    x = torch.stack([torch.from_numpy(np.array(img.convert("RGB"))) for img in cifar["image"]])
    x = x.permute(0, 3, 1, 2).float() / 255.0
    keep = subset_positions(12, 7, 2)
    c = load_dataset("cifar10", "test", 7, 2, hub="x/cifar10", resize=40)
    assert c.name == "cifar10@40/test" and np.array_equal(c.indices, keep)
    assert_reads_like(c, resize_images(x[keep], 40, None))


# -- arrays (.npz, torchvision files) ------------------------------------------------------------


@pytest.mark.parametrize("resize,subset", [(None, 0), (40, 0), (None, 9), ([36, 44], 11)])
def test_npz_lazy_reads_equal_eager_decoding(npz, resize, subset):
    images, labels, keep = eager_npz(npz, "train", resize, None, subset, 3)
    s = load_dataset("cifar10", "train", subset, 3, path=str(npz), resize=resize)
    assert torch.equal(s.labels, labels) and np.array_equal(s.indices, keep)
    assert s.identity == {**legacy_identity(s.name, keep), "content": file_digest(npz)}  # the file's bytes, too
    assert_reads_like(s, images)
    blob = pickle.dumps(s)
    assert len(blob) < 4000  # the array is not pickled: the reader loads it again from its path
    assert torch.equal(pickle.loads(blob).read(np.arange(len(s))), images)


def test_npz_channels_first_and_float(tmp_path):
    rng = np.random.default_rng(4)
    x = rng.random((6, 3, 32, 32)).astype(np.float32)
    np.savez(tmp_path / "f.npz", images=x, labels=np.arange(6))
    s = load_dataset("cifar10", "test", path=str(tmp_path / "f.npz"))
    assert torch.equal(s.images, torch.as_tensor(x)) and s.lazy


def test_torchvision_files_read_lazily(monkeypatch):
    rng = np.random.default_rng(5)

    class Fake:
        def __init__(self, data, targets):
            self.data, self.targets = data, targets

    sets = {("CIFAR10", True): Fake(rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8), list(rng.integers(0, 10, 20))),
            ("FashionMNIST", False): Fake(torch.as_tensor(rng.integers(0, 256, (15, 28, 28), dtype=np.uint8)),
                                          torch.as_tensor(rng.integers(0, 10, 15)))}
    fake = lambda cls, root, train: sets[(cls, train)]  # noqa: E731
    monkeypatch.setattr(vision, "torchvision_set", fake)
    monkeypatch.setattr(torchvision_sets, "torchvision_set", fake)
    ds = sets[("CIFAR10", True)]
    full = (torch.as_tensor(np.asarray(ds.data)).float() / 255.0).permute(0, 3, 1, 2)
    keep = subset_positions(20, 8, 0)
    s = load_dataset("cifar10", "train", 8, 0, root="anywhere", resize=36, crop=32)
    assert np.array_equal(s.indices, keep) and s.name == "cifar10@36/train"
    assert_reads_like(s, resize_images(full[keep], 36, 32))
    fm = sets[("FashionMNIST", False)]
    x = torch.nn.functional.pad((torch.as_tensor(np.asarray(fm.data)).float() / 255.0).unsqueeze(1), (2, 2, 2, 2))
    f = load_dataset("fashion-mnist", "test", root="anywhere")
    content = array_digest(np.asarray(fm.data), np.asarray(fm.targets))
    assert f.shape == (1, 32, 32) and f.identity == {**legacy_identity("fashion-mnist/test", np.arange(15)),
                                                     "content": content}
    assert_reads_like(f, x)
    assert torch.equal(pickle.loads(pickle.dumps(f)).read([3]), x[3:4])  # reloads through torchvision_set


# -- validation ----------------------------------------------------------------------------------


def _npz_error(tmp_path, match, **arrays):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(UserError, match=match) as err:
        load_dataset("cifar10", "test", path=str(tmp_path / "bad.npz"))
    assert "\n" not in str(err.value)
    return str(err.value)


def test_npz_validation_errors(tmp_path):
    img = np.zeros((4, 32, 32, 3), dtype=np.uint8)
    objects = np.empty(4, dtype=object)
    objects[:] = [[1], [2], [3], [4]]
    assert "'labels'" in _npz_error(tmp_path, "dtype object", images=img, labels=objects)
    _npz_error(tmp_path, "4 images but 3 labels", images=img, labels=np.arange(3))
    assert "-1" in _npz_error(tmp_path, r"label -1 is outside \[0, 10\)", images=img, labels=np.array([0, 1, -1, 2]))
    _npz_error(tmp_path, r"label 10 is outside \[0, 10\)", images=img, labels=np.array([0, 10, 1, 2]))
    _npz_error(tmp_path, r"float pixels must lie in \[0, 1\]", images=np.full((4, 32, 32, 3), 2.5, np.float32),
               labels=np.arange(4))
    assert "-0.5" in _npz_error(tmp_path, "values in", images=np.full((4, 3, 32, 32), -0.5), labels=np.arange(4))
    _npz_error(tmp_path, r"must be \(N, 32, 32, 3\)", images=np.zeros((4, 32, 32)), labels=np.arange(4))
    _npz_error(tmp_path, "integer class ids", images=img, labels=np.array([0.5, 1, 2, 3]))
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(UserError, match="cannot read") as err:
        load_dataset("cifar10", "test", path=str(tmp_path / "junk.npz"))
    assert "\n" not in str(err.value)


# -- synthetic -----------------------------------------------------------------------------------


def test_synthetic_is_deterministic_and_index_addressable():
    assert "synthetic" in DATASETS
    s = load_dataset("synthetic", "train", n=40, size=[12, 10], channels=2, classes=5, seed=3)
    assert s.name == "synthetic-40x2x12x10-c5-s3/train" and s.shape == (2, 12, 10) and s.num_classes == 5
    alone = s.read([5])
    again = load_dataset("synthetic", "train", n=40, size=[12, 10], channels=2, classes=5, seed=3)
    full = again.images
    assert torch.equal(alone[0], full[5]) and torch.equal(s.read([39, 5]), full[[39, 5]])
    assert full.dtype == torch.float32 and 0.0 <= float(full.min()) and float(full.max()) <= 1.0
    assert set(s.labels.tolist()) <= set(range(5)) and len(set(s.labels.tolist())) > 1
    bigger = load_dataset("synthetic", "train", n=400, size=[12, 10], channels=2, classes=5, seed=3)
    assert torch.equal(bigger.read([5]), alone) and torch.equal(bigger.labels[:40], s.labels)  # a function of (seed, i)
    test = load_dataset("synthetic", "test", n=40, size=[12, 10], channels=2, classes=5, seed=3)
    assert not set(test.indices.tolist()) & set(bigger.indices.tolist())
    assert not torch.equal(test.read([5]), alone)
    threads, reads = torch.get_num_threads(), []
    try:
        for k in (1, 2):
            torch.set_num_threads(k)
            reads.append(load_dataset("synthetic", "train", n=40, size=64).read([7]))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(reads[0], reads[1])  # the same pixels whatever the thread count
    names = {load_dataset("synthetic", "train", **o).identity["dataset"] for o in
             ({}, {"n": 10}, {"size": 32}, {"channels": 1}, {"classes": 3}, {"seed": 1})}
    assert len(names) == 6
    assert len(pickle.dumps(load_dataset("synthetic", "train", n=50_000))) < 900_000  # labels + indices only


def test_synthetic_option_errors():
    for options, match in (({"n": 0}, "n must be"), ({"size": [3]}, "size must be"), ({"classes": 0}, "classes must be"),
                           ({"channels": True}, "channels must be"), ({"seed": -1}, "seed must be")):
        with pytest.raises(UserError, match=match) as err:
            load_dataset("synthetic", "train", **options)
        assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="valid choices: train, test"):
        load_dataset("synthetic", "validation")


# -- identity covers the content (issue 14, bug 2) --------------------------------------------------


def test_two_npz_files_of_the_same_shape_never_share_an_identity(tmp_path):
    """Regression: two .npz files with the same image count shared cache entries (14.06 served for 9.375)."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 12)
    for name in ("a", "b"):
        np.savez(tmp_path / f"{name}.npz", images=rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8), labels=labels)
    a = load_dataset("cifar10", "test", path=str(tmp_path / "a.npz"))
    b = load_dataset("cifar10", "test", path=str(tmp_path / "b.npz"))
    assert a.identity != b.identity and a.identity["content"] != b.identity["content"]
    assert a.subset(5, 1).identity["content"] == a.identity["content"]  # a subset keeps the file's identity
    assert load_dataset("cifar10", "test", path=str(tmp_path / "a.npz")).identity == a.identity


def test_an_edited_imagefolder_file_changes_the_identity(folder, tmp_path):
    import shutil
    import time

    root = tmp_path / "copy"
    shutil.copytree(folder, root)
    before = load_dataset("imagenet", "validation", root=str(root), resize=24).identity
    target = sorted((root / "val").rglob("*.png"))[0]
    time.sleep(0.01)
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(target)
    assert load_dataset("imagenet", "validation", root=str(root), resize=24).identity != before

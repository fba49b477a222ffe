"""Data of any class count with true class ids (bench.data.classes): 1,000-class .npz, an ImageFolder with all
1,000 class folders of which only some hold images, an image list (acuity-dataset's dataset.txt format),
class names and class-index files."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from bench.data import load_dataset
from bench.errors import UserError


def _img(path, value=100, size=(12, 10)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path)


def test_npz_with_1000_classes_keeps_true_ids(tmp_path):
    path = tmp_path / "val.npz"
    labels = np.array([0, 999, 472, 472])
    np.savez(path, images=np.zeros((4, 8, 8, 3), np.uint8), labels=labels)
    split = load_dataset("npz", "test", path=str(path), num_classes=1000)
    assert split.num_classes == 1000 and split.labels.tolist() == labels.tolist()
    assert split.read(np.arange(2)).shape == (2, 3, 8, 8)
    with pytest.raises(UserError, match='use dataset = "npz" with num_classes'):  # cifar10 points there
        load_dataset("cifar10", "test", path=str(path))
    with pytest.raises(UserError, match=r"label 999 is outside \[0, 500\)"):
        load_dataset("npz", "test", path=str(path), num_classes=500)
    with pytest.raises(UserError, match="num_classes must be a whole number"):
        load_dataset("npz", "test", path=str(path))


def _sparse_imagenet(root, present=(3, 472, 999)):
    for c in range(1000):
        (root / f"n{c:08d}").mkdir(parents=True)
    for c in present:
        _img(root / f"n{c:08d}" / f"img_{c}.JPEG", value=c % 256)


def test_imagenet_folder_with_empty_class_folders_keeps_true_ids(tmp_path):
    _sparse_imagenet(tmp_path / "val")
    split = load_dataset("imagenet", "validation", root=str(tmp_path), resize=8)
    assert split.labels.tolist() == [3, 472, 999] and split.num_classes == 1000
    assert split.read(np.arange(3)).shape == (3, 3, 8, 8)


def test_imagefolder_empty_classes_class_index_and_names(tmp_path):
    _sparse_imagenet(tmp_path / "f")
    split = load_dataset("imagefolder", "test", root=str(tmp_path / "f"), num_classes=1000, resize=8)
    assert split.labels.tolist() == [3, 472, 999]
    index = tmp_path / "index.txt"  # folder -> id, any order
    index.write_text("".join(f"n{c:08d} {999 - c}\n" for c in range(1000)))
    names = tmp_path / "names.txt"
    names.write_text("".join(f"class {c}\n" for c in range(1000)))
    split = load_dataset("imagefolder", "test", root=str(tmp_path / "f"), num_classes=1000, class_index=str(index),
                         class_names=str(names), resize=8)
    assert split.labels.tolist() == [996, 527, 0] and split.class_names[527] == "class 527"
    assert split.take(np.array([1])).class_names is split.class_names
    names.write_text("a\nb\n")
    with pytest.raises(UserError, match="has 2 lines, num_classes is 1000"):
        load_dataset("imagefolder", "test", root=str(tmp_path / "f"), num_classes=1000, class_names=str(names))


def test_empty_folder_tree_is_one_short_line(tmp_path):
    for c in range(1000):
        (tmp_path / "val" / f"n{c:08d}").mkdir(parents=True)
    with pytest.raises(UserError) as e:
        load_dataset("imagenet", "validation", root=str(tmp_path))
    assert "hold no image" in str(e.value) and len(str(e.value)) < 300


def test_image_list_acuity_format(tmp_path):
    root = tmp_path / "ILSVRC2012_VAL_SET"
    _img(root / "data" / "a.JPEG", 10, (20, 16))
    _img(root / "data" / "b.JPEG", 20, (16, 20))
    _img(root / "data" / "c.JPEG", 30)
    lst = root / "dataset.txt"
    lst.write_text("./data/a.JPEG, 472\n./data/b.JPEG, 260\n./data/c.JPEG, 999\n")
    split = load_dataset("image-list", "val", list=str(lst), num_classes=1000, resize=8)
    assert split.labels.tolist() == [472, 260, 999] and split.num_classes == 1000
    assert split.read(np.arange(3)).shape == (3, 3, 8, 8)
    sub = load_dataset("image-list", "val", list=str(lst), num_classes=1000, resize=8, subset=2, subset_seed=1)
    full = split.subset(2, 1)
    assert sub.labels.tolist() == full.labels.tolist() and sub.indices.tolist() == full.indices.tolist()
    tabbed = tmp_path / "tab.txt"  # tab- or space-separated, root given
    tabbed.write_text("data/a.JPEG\t5\ndata/c.JPEG 6\n")
    assert load_dataset("image-list", "val", list=str(tabbed), root=str(root), num_classes=10,
                        resize=8).labels.tolist() == [5, 6]


@pytest.mark.parametrize("text, message", [
    ("./data/a.JPEG\n", "line 1 is './data/a.JPEG'; expected"),
    ("./data/zzz.JPEG, 3\n", r"1 listed image\(s\) are not under"),
    ("./data/a.JPEG, 1000\n", r"label 1000 is outside \[0, 1000\)"),
    ("../a.JPEG, 1\n", "must be relative to the root"),
])
def test_image_list_bad_input(tmp_path, text, message):
    _img(tmp_path / "data" / "a.JPEG")
    lst = tmp_path / "list.txt"
    lst.write_text(text)
    with pytest.raises(UserError, match=message):
        load_dataset("image-list", "val", list=str(lst), num_classes=1000, resize=8)

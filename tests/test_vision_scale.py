"""Vision suites at scale (CPU, offline): hf/timm adapters from tiny configs, per-model geometry,
ImageNet/CIFAR-10 loaders on generated fixtures, both encode spaces, the suites and the recipe."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from bench.cli import main as cli_main
from bench.data import load_dataset
from bench.core.errors import UserError
from bench.models.geometry import Geometry, lift
from bench.models.sources import SOURCE_KEYS, load_model
from bench.core.results import read_rows
from bench.models.sources import model_label
from bench.encode_space import encode_space
from bench.protocols import get_protocol, protocol_of
from conftest import make_engine
from bench.suite import load_suite

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

HF_VIT32 = ('{ source = "hf", model = "tiny-vit", name = "hf-vit32", '
            'config = { model_type = "vit", image_size = 32, patch_size = 8, hidden_size = 32, num_hidden_layers = 1, '
            'num_attention_heads = 2, intermediate_size = 32, num_labels = 10 } }')
TIMM_VIT40 = ('{ source = "timm", model = "vit_tiny_patch16_224", name = "timm-vit40", pretrained = false, init_seed = 0, '
              'num_classes = 10, input_size = [3, 40, 40], '
              'kwargs = { img_size = 40, patch_size = 8, embed_dim = 32, depth = 1, num_heads = 2 } }')
TINY_HF = {
    "resnet": {"model_type": "resnet", "embedding_size": 8, "hidden_sizes": [8, 16], "depths": [1, 1],
               "layer_type": "basic", "num_labels": 10},
    "vit": {"model_type": "vit", "image_size": 32, "patch_size": 8, "hidden_size": 16, "num_hidden_layers": 1,
            "num_attention_heads": 2, "intermediate_size": 32, "num_labels": 10},
    "deit": {"model_type": "deit", "image_size": 32, "patch_size": 8, "hidden_size": 16, "num_hidden_layers": 1,
             "num_attention_heads": 2, "intermediate_size": 32, "num_labels": 10},
    "swinv2": {"model_type": "swinv2", "image_size": 32, "patch_size": 4, "embed_dim": 8, "depths": [1, 1],
               "num_heads": [1, 2], "window_size": 4, "num_labels": 10},
}


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """A tiny ImageNet-style ImageFolder: val/<3 class folders>/<4 images of different sizes>."""
    root = tmp_path_factory.mktemp("imagenet")
    rng = np.random.default_rng(0)
    for c in ("n01", "n02", "n03"):
        folder = root / "val" / c
        folder.mkdir(parents=True)
        for i, (h, w) in enumerate([(48, 60), (50, 44), (64, 64), (45, 70)]):
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def cifar_npz(tmp_path_factory):
    """A CIFAR-style array file: train/test images (N, 32, 32, 3) uint8 and labels (learnable: class = bright band)."""
    rng = np.random.default_rng(0)

    def make(n):
        y = rng.integers(0, 3, n)
        x = rng.integers(0, 60, (n, 32, 32, 3)).astype(np.uint8)
        for i, c in enumerate(y):
            x[i, :, c * 10 : c * 10 + 10] += 180
        return x, y

    (xtr, ytr), (xte, yte) = make(48), make(24)
    path = tmp_path_factory.mktemp("cifar") / "cifar10.npz"
    np.savez(path, train_images=xtr, train_labels=ytr, test_images=xte, test_labels=yte)
    return path


def _spec(text: str) -> dict:
    return tomllib.loads(f"m = {text}")["m"]


def _suite(path, root, space: str, subset: int = 6, timm=TIMM_VIT40) -> str:
    path.write_text(
        f'[suite]\nname = "vision-mini"\nseed = 0\n\n'
        f'[data]\ndataset = "imagenet"\nroot = "{root}"\nsplit = "validation"\nresize = 44\nsubset = {subset}\n'
        f'encode_space = "{space}"\n\n'
        f'[models]\nauthorized = [{HF_VIT32}, {timm}]\n\n'
        '[[defenses]]\nname = "ne-patch"\npsnr = [20]\nrelease = ["float"]\n\n'
        '[[defenses]]\nname = "noise"\npsnr = [20]\nrelease = ["float"]\n'
    )
    return str(path)


# -- adapters and geometry ------------------------------------------------------------------


@pytest.mark.parametrize("family", sorted(TINY_HF))
def test_hf_tiny_configs_first_linear_and_any_input_size(family):
    adapter = load_model({"source": "hf", "model": f"tiny-{family}", "config": TINY_HF[family], "input_size": [3, 32, 32]})
    fl = adapter.first_linear()
    assert fl.kind == "conv" and fl.input_shape == (3, 32, 32)
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    # W acts on pixel-space deltas: W(x) - W(0) equals the model's own first conv on normalized input, linear part
    assert fl.apply(x).shape[0] == 2
    assert adapter.predict(torch.rand(3, 3, 45, 37)).shape == (3, 10)  # any size: resize + crop inside predict
    with pytest.raises(UserError, match="expects input"):
        adapter.predict(torch.rand(1, 1, 32, 32))


def test_hf_random_init_is_seeded_and_arch_groups_structure():
    spec = {"source": "hf", "model": "v", "config": TINY_HF["vit"]}
    a, b = load_model(spec), load_model(spec)
    c = load_model({**spec, "init_seed": 1})
    assert a.digest == b.digest and a.digest != c.digest
    assert a.arch == c.arch and a.arch.startswith("hf/vit-")
    assert load_model({**spec, "config": TINY_HF["deit"]}).arch != a.arch
    assert load_model({**spec, "arch": "vit-b16"}).arch == "vit-b16"


def test_timm_identity_unchanged_and_native_input_untouched():
    adapter = load_model({"source": "timm", "model": "resnet18.tv_in1k", "num_classes": 10})
    assert set(adapter.preprocess.to_dict()) == {"mean", "std", "input_size", "extra"}  # digests of old runs hold
    g = adapter.preprocess.geometry
    assert g == Geometry(256, (224, 224), "bilinear")  # torchvision weights: crop_pct 0.875, bilinear
    x = torch.rand(2, 3, 224, 224)
    assert g(x) is x
    pinned = load_model({"source": "timm", "model": "resnet18", "num_classes": 10, "resize": [230, 230],
                         "interpolation": "bicubic"})
    assert pinned.preprocess.to_dict()["resize"] == [230, 230] and pinned.digest != adapter.digest


def test_geometry_shorter_side_and_crop():
    g = Geometry(36, (32, 32), "bilinear")
    assert g.resized_hw(40, 80) == (36, 72)
    out = g(torch.rand(1, 3, 40, 80))
    assert out.shape == (1, 3, 32, 32)
    x = torch.arange(36 * 72, dtype=torch.float32).view(1, 1, 36, 72)
    assert torch.equal(Geometry(None, (32, 32))(x), x[..., 2:34, 20:52])


def test_lift_is_exact_where_reachable_and_reports_residual_where_not():
    down = Geometry(24, (24, 24), "bilinear")  # 40 -> 24: every direction in 24x24 is reachable
    d = torch.randn(2, 3, 24, 24, dtype=torch.float64)
    p, residual = lift(down, d, (2, 3, 40, 40), iters=60)
    assert residual.max() < 1e-3
    assert torch.allclose(down(p), d, atol=1e-3 * d.abs().max())
    up = Geometry(24, (24, 24), "bilinear")  # 8 -> 24 upsampling cannot express a random 24x24 direction
    _, residual = lift(up, d, (2, 3, 8, 8))
    assert residual.min() > 0.5


def test_mambavision_needs_cuda():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    spec = {"source": "hf", "model": "nvidia/MambaVision-T-1K", "trust_remote_code": True}
    with pytest.raises(UserError, match="needs a CUDA machine") as err:
        load_model(spec)
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="trust_remote_code"):
        load_model({"source": "hf", "model": "nvidia/MambaVision-T-1K"})


# -- datasets -------------------------------------------------------------------------------


def test_imagenet_folder_subset_decodes_only_the_subset(image_folder, monkeypatch):
    full = load_dataset("imagenet", "validation", root=str(image_folder), resize=44)
    assert full.images.shape == (12, 3, 44, 44) and full.name == "imagenet@44c44/validation"
    opened = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda *a, **k: opened.append(a[0]) or real_open(*a, **k))
    part = load_dataset("imagenet", "val", 5, 3, root=str(image_folder), resize=44)
    assert len(opened) == 5
    ref = full.subset(5, 3)
    assert part.identity == ref.identity and torch.equal(part.images, ref.images)


def test_dataset_errors_name_the_key(tmp_path):
    with pytest.raises(UserError, match="root"):
        load_dataset("imagenet", "validation")
    with pytest.raises(UserError, match="does not exist"):
        load_dataset("imagenet", "validation", root=str(tmp_path / "missing"))
    with pytest.raises(UserError, match="no option 'resise'"):
        load_dataset("imagenet", "validation", root=str(tmp_path), resise=3)
    with pytest.raises(UserError, match="path"):
        load_dataset("cifar10", "test", path=str(tmp_path / "none.npz"))


def test_cifar10_npz_native_and_resized(cifar_npz):
    test = load_dataset("cifar10", "test", path=str(cifar_npz))
    assert test.images.shape == (24, 3, 32, 32) and test.images.max() <= 1.0 and test.num_classes == 10
    part = load_dataset("cifar10", "test", 8, 1, path=str(cifar_npz), resize=40)
    assert part.images.shape == (8, 3, 40, 40) and part.name == "cifar10@40/test"
    assert np.array_equal(part.indices, test.subset(8, 1).indices)


# -- suites and the runner ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["imagenet", "cifar10"])
def test_shipped_suites_plan(name):
    import timm

    suite = load_suite(name)
    runner = make_engine(suite, "unused", progress=False)
    assert len(runner.ctx.authorized) == 4 and encode_space(suite.data) == "model"
    labels = [model_label(s) for s in suite.evaluated]
    assert labels[:4] == ["resnet-50", "vit-b16", "swinv2-t", "deit-b16"]
    arches = {model_label(s): s["arch"] for s in suite.evaluated}
    for spec in suite.evaluated:
        assert set(spec) - {"source"} <= SOURCE_KEYS[spec["source"]]
        if spec["source"] == "timm":  # real pretrained tags, each sharing an arch label with a backbone
            assert spec["model"] in timm.list_pretrained(spec["model"])
            assert spec["arch"] in {arches[a] for a in runner.ctx.authorized}
    default = [protocol_of(get_protocol("input"), d).parse_entry(suite, d) for d in suite.defenses if d.tier == "default"]
    attack_jobs = sum(len(d.attacks) * len(d.models) * len(d.psnr) * len(d.release) for d in default if d.models)
    grid = sum(len(d.psnr) * len(d.release) * len(d.attacks) for d in default if not d.models)
    assert grid == 2 * (7 * 2 + 1 * 2) + (2 if name == "imagenet" else 1)  # the sweeps, the paper-nominal points, paper-code
    assert len(runner.jobs) == 1 + len(runner.ctx.authorized) * grid + attack_jobs  # cifar10: Tables 8-9 on vit-b16
    code = [j for j in runner.jobs if j.point.get("psnr_mode") == "paper-code"]
    assert code and all(j.point["evaluation"] == "paper-code" for j in code)


@pytest.mark.parametrize("name", ["table3-cifar10", "table3-imagenet"])
def test_shipped_table3_suites_plan_the_baselines_beside_ne(name):
    """NE Table 3 at scale: DP and ALGOSPEC on ResNet-50 and ViT-B beside NE, rendered by [report] table3."""
    suite = load_suite(name)
    runner = make_engine(suite, "unused", progress=False)
    assert list(runner.ctx.authorized) == ["resnet-50", "vit-b16"]
    planned = {(j.defense, j.authorized) for j in runner.jobs}
    for defense in ("dp", "algospec", "ne-patch"):
        assert {(defense, "resnet-50"), (defense, "vit-b16")} <= planned
    assert suite.report["table3"]["ne"] == "ne-patch"


@pytest.mark.parametrize("space", ["model", "pixel"])
def test_full_grid_two_native_resolutions(tmp_path, image_folder, space):
    suite = load_suite(_suite(tmp_path / "s.toml", image_folder, space))
    summary = make_engine(suite, tmp_path / "run", progress=False, cache_dir=tmp_path / "cache").run()
    rows = read_rows(summary.results)
    assert len(rows) == 2 + 2 * 2 * 2  # clean + 2 authorized x (ne, noise) x 2 evaluated
    assert all(r["metrics"]["top1"] is not None and r["n"] == 6 for r in rows)
    ne = [r for r in rows if r["defense"] == "ne-patch"]
    own = {r["authorized"]: r for r in ne if r["role"] == "authorized"}
    others = {r["authorized"]: r for r in ne if r["role"] != "authorized"}
    for auth in ("hf-vit32", "timm-vit40"):  # non-overlapping patch embeddings: the subspace holds exactly
        assert own[auth]["metrics"]["first_layer_dev"] < 1e-3, (space, auth)
        assert others[auth]["metrics"]["first_layer_dev"] > 0.05
        assert abs(own[auth]["encoding"]["psnr_true"] - 20) < 0.1
    summaries = {r["authorized"]: r["provenance"]["defense_summary"] for r in ne}
    if space == "pixel":  # 44 -> crop 40 (timm) is exact; 44 -> 32 resize is reachable up to CG tolerance
        assert summaries["timm-vit40"]["lift_residual"] < 1e-6
        assert summaries["hf-vit32"]["lift_residual"] < 1e-2
    else:
        assert all("lift_residual" not in s for s in summaries.values())
    rerun = make_engine(suite, tmp_path / "run2", progress=False, cache_dir=tmp_path / "cache").run()
    assert rerun.forwards == 0  # every forward cached, keyed by the encode space


def test_cli_random_weights_subset_data_root(tmp_path, image_folder, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # pretrained = true below must be turned off, never fetched
    pretrained = TIMM_VIT40.replace("pretrained = false", "pretrained = true")
    suite = _suite(tmp_path / "s.toml", "nowhere", "model", subset=0, timm=pretrained)
    code = cli_main(["run", suite, "--random-weights", "--subset", "3", "--data-root", str(image_folder),
                     "--models", "timm-vit40", "--defense", "noise", "--no-progress", "--out", str(tmp_path / "o"),
                     "--reports", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c")])
    assert code == 0
    rows = read_rows(tmp_path / "o")
    assert {r["suite"] for r in rows} == {"vision-mini-random-weights"}
    assert {r["n"] for r in rows} == {3} and {r["evaluated"] for r in rows} == {"timm-vit40"}


# -- CIFAR-10 fine-tuning recipe ------------------------------------------------------------


def test_finetune_recipe_smoke(tmp_path, cifar_npz):
    from bench.recipes.finetune_cifar10 import main as finetune_main

    suite = tmp_path / "src.toml"
    suite.write_text(f'[suite]\nname = "src"\n[data]\ndataset = "imagenet"\n[models]\nauthorized = [{HF_VIT32}]\n'
                     '[[defenses]]\nname = "noise"\n')
    snippet = finetune_main(["--suite", str(suite), "--data-path", str(cifar_npz), "--epochs", "1",
                             "--batch-size", "16", "--out", str(tmp_path / "ckpt"), "--no-progress"])
    spec = tomllib.loads(snippet.read_text())["models"]["authorized"][0]
    record = json.loads((tmp_path / "ckpt" / "hf-vit32.json").read_text())
    assert (tmp_path / "ckpt" / "hf-vit32" / "config.json").is_file() and spec["source"] == "hf"
    reloaded = load_model(spec)  # local directory, pretrained weights = the fine-tuned ones
    test = load_dataset("cifar10", "test", path=str(cifar_npz))
    top1 = float((reloaded.predict(test.images).argmax(1) == test.labels).float().mean() * 100)
    assert top1 == pytest.approx(record["test_top1"])


def test_paper_backbones_build_offline_with_random_weights(monkeypatch):
    """`--random-weights` needs no hub for the suites' transformers backbones: their published architectures."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    adapter = load_model({"source": "hf", "model": "microsoft/swinv2-tiny-patch4-window8-256", "pretrained": False})
    assert adapter.preprocess.input_size == (3, 256, 256)
    assert adapter.predict(torch.rand(1, 3, 300, 280)).shape == (1, 1000)
    assert adapter.first_linear().stride == (4, 4)
    with pytest.raises(UserError, match="cannot get the config"):  # any other hub name still needs the hub
        load_model({"source": "hf", "model": "microsoft/resnet-18", "pretrained": False})

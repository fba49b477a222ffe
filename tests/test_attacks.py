"""Attacks on input authorization: preprocessing, reconstruction, projection, adaptation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from bench.attacks import get_attack
from bench.attacks.preprocessing import gaussian_blur
from bench.data.base import Split
from bench.defenses.release import psnr
from bench.core.errors import UserError
from bench.models.sources import from_module
from bench.protocols import render
from bench.core.results import read_rows
from conftest import make_engine
from bench.suite import load_suite
from conftest import write_suite


def _images(n: int, size: int = 8, seed: int = 0) -> torch.Tensor:
    """Smooth random images in [0, 1] (blurred noise), so the content is low-dimensional."""
    g = torch.Generator().manual_seed(seed)
    return gaussian_blur(torch.rand(n, 1, size, size, generator=g), 1.5).clamp(0, 1)


class SubspaceView:
    """An AttackerView over synthetic data recoded in a known subspace (orthonormal columns `basis`)."""

    def __init__(self, n=300, size=8, rank=12, scale=2.0):
        self.size, self.scale = size, scale
        q, _ = torch.linalg.qr(torch.randn(size * size, size * size, generator=torch.Generator().manual_seed(1)))
        self.basis = q[:, :rank]
        imgs = _images(n, size)
        self.split = Split("synthetic", imgs, torch.zeros(n, dtype=torch.long), np.arange(n), 2)

    def recode(self, x: torch.Tensor, seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        coeffs = torch.randn(len(x), self.basis.shape[1], generator=g) * self.scale
        return x + (coeffs @ self.basis.T).reshape(x.shape)

    def clean(self, samples):
        return self.split

    def released(self, clean, draw=0):
        return self.recode(clean.images, 10 + draw)

    def released_split(self, clean, draw=0):
        return Split("released", self.released(clean, draw), clean.labels, clean.indices, clean.num_classes)

    def whitebox_directions(self, clean):
        return self.recode(torch.zeros_like(clean.images), 99)


# -- preprocessing -----------------------------------------------------------------------------
@pytest.mark.parametrize("entry", ["jpeg", "blur", "crop", "cutout", "resize", "gauss-noise", {"name": "jpeg", "quality": 95}])
def test_preprocessing_keeps_shape_and_is_deterministic(entry):
    x = _images(6, 16)
    attack = get_attack(entry)
    out = attack(x, seed=3)
    assert out.shape == x.shape
    assert torch.equal(out, attack(x, seed=3))
    assert not torch.equal(out, x)


def test_crop_keeps_the_drawn_area_and_resizes_back():
    x = torch.zeros(50, 1, 20, 20)
    x[:, :, :, :10] = 1.0  # left half white
    out = get_attack({"name": "crop", "low": 1.0, "high": 1.0})(x, seed=0)
    assert torch.allclose(out, x, atol=1e-6)  # keeping all of the image is the identity
    out = get_attack({"name": "crop", "low": 0.6, "high": 0.9})(x, seed=0)
    assert len({round(float(o.mean()), 3) for o in out}) > 5  # each sample draws its own crop


def test_cutout_zeroes_one_square_of_the_drawn_side_and_keeps_the_rest():
    x = torch.ones(40, 3, 20, 20)
    out = get_attack({"name": "cutout", "fill": "black"})(x, seed=0)  # side 10-40% of 20 pixels, as the code's "crop"
    zeroed = (out == 0).all(1)  # (N, H, W): every channel zeroed together
    for mask in zeroed:
        rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        side = len(rows)
        assert 2 <= side <= 8 and len(cols) == side and int(mask.sum()) == side * side  # one square
        assert rows.max() - rows.min() + 1 == side
    assert torch.equal(out[~(out == 0)], x[~(out == 0)])  # nothing else changes (no resize, unlike crop)
    assert len({int(m.sum()) for m in zeroed}) > 2  # each sample draws its own side
    batched = torch.cat([get_attack({"name": "cutout", "fill": "black"})(x[i : i + 7], seed=0,
                                                                       positions=list(range(i, min(i + 7, 40))))
                         for i in range(0, 40, 7)])
    assert torch.equal(batched, out)


def test_cutout_fills_with_the_normalization_mean_by_default():
    """The public code zeroes the square on the processor-normalized tensor: in pixel space, the reading model's
    normalization mean (mid grey without one); `fill = "black"` is the earlier pixel-space zero, labelled."""
    from bench.attacks import attack_identity
    from bench.attacks.base import apply_attack

    x = torch.ones(12, 3, 20, 20)
    norm = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    out = apply_attack(get_attack("cutout"), x, 0, np.arange(12), norm)
    black = get_attack({"name": "cutout", "fill": "black"})(x, seed=0)
    hole = (black == 0).all(1)  # the same squares, drawn from the same seeds
    assert hole.any(2).any(1).all()
    for c, m in enumerate(norm[0]):
        assert torch.allclose(out[:, c][hole], torch.tensor(m))
    xn = (out - torch.tensor(norm[0]).view(1, 3, 1, 1)) / torch.tensor(norm[1]).view(1, 3, 1, 1)
    assert xn.permute(1, 0, 2, 3)[:, hole].abs().max() < 1e-6  # 0 on the normalized tensor, as the code sets it
    assert torch.allclose(get_attack("cutout")(x, seed=0)[:, 0][hole], torch.tensor(0.5))
    assert attack_identity("cutout")["version"] == 2 and "version" not in attack_identity("crop")


def _code_jpeg(xn: torch.Tensor, quality: int) -> torch.Tensor:
    """The public code's apply_jpeg_compression_to_image, written out from its text (normalized tensor in and out)."""
    import io

    from PIL import Image

    flat = xn.reshape(len(xn), -1)
    mins, maxs = flat.min(1).values.view(-1, 1, 1, 1), flat.max(1).values.view(-1, 1, 1, 1)
    scale = (maxs - mins).clamp(min=1e-6)
    normed = ((xn - mins) / scale * 255.0).clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1)
    outs = []
    for arr in normed.numpy():
        buf = io.BytesIO()
        Image.fromarray(arr, mode="RGB").save(buf, format="JPEG", quality=quality)
        outs.append(np.array(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")))
    out = torch.from_numpy(np.stack(outs)).float().permute(0, 3, 1, 2) / 255.0
    return out * scale + mins


def test_jpeg_clamps_by_default_and_rescales_per_image_as_the_code_does():
    g = torch.Generator().manual_seed(0)
    x = gaussian_blur(torch.rand(4, 3, 16, 16, generator=g), 1.0)
    x = (x - x.mean()) * 12 + 0.5  # a float release outside [0, 1]
    norm = ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    from bench.attacks.base import apply_attack

    clamp = apply_attack(get_attack({"name": "jpeg", "quality": 75}), x, 0, np.arange(4), norm)
    assert clamp.min() >= 0 and clamp.max() <= 1  # a JPEG file of the image stores [0, 255]
    code = apply_attack(get_attack({"name": "jpeg", "quality": 75, "range": "rescale"}), x, 0, np.arange(4), norm)
    expected = _code_jpeg((x - 0.5) / 0.25, 75) * 0.25 + 0.5
    assert torch.allclose(code, expected, atol=1e-5)
    assert code.min() < -0.1 and code.max() > 1.1  # the out-of-range release survives the code's rescale
    assert x.min() < -0.1 and x.max() > 1.1
    with pytest.raises(UserError, match="unknown range"):
        get_attack({"name": "jpeg", "range": "wrap"})(x, 0)


def test_noise_attack_psnr_matches_sigma():
    x = torch.full((20, 1, 32, 32), 0.5)
    out = get_attack({"name": "gauss-noise", "sigma": 0.1})(x, seed=0)
    assert psnr(x, out).mean().item() == pytest.approx(20.0, abs=0.3)


def test_bad_attack_parameters_are_one_line_errors():
    with pytest.raises(UserError, match="quality = 0 is not valid"):  # refused when built, before any image
        get_attack({"name": "jpeg", "quality": 0})
    with pytest.raises(UserError, match="no parameter 'strength'"):
        get_attack({"name": "blur", "strength": 2})
    with pytest.raises(UserError, match="unknown target"):
        get_attack({"name": "reconstruct", "target": "noise2void"}).fit(SubspaceView(), 0)
    with pytest.raises(UserError, match="unknown estimate"):
        get_attack({"name": "project", "estimate": "oracle"}).fit(SubspaceView(), 0)


# -- learned attacks on a known subspace ------------------------------------------------------
@pytest.mark.parametrize("estimate", ["pairs", "whitebox"])
def test_projection_finds_the_recoding_subspace_and_removes_it(estimate):
    view = SubspaceView(rank=12)
    attack = get_attack({"name": "project", "estimate": estimate})
    facts = attack.fit(view, seed=0)
    assert facts["rank"] == 12
    clean = _images(40, seed=5)
    released = view.recode(clean, 123)
    attacked = attack(released, seed=0)
    assert psnr(clean, attacked).mean() > psnr(clean, released).mean() + 10  # the recoding is gone


def test_projection_regression_fill_beats_the_mean_fill():
    view = SubspaceView(rank=12)
    clean = _images(40, seed=5)
    released = view.recode(clean, 123)
    gains = {}
    for fill in ("mean", "regress"):
        attack = get_attack({"name": "project", "fill": fill})
        attack.fit(view, seed=0)
        gains[fill] = psnr(clean, attack(released, seed=0)).mean().item()
    assert gains["regress"] > gains["mean"]


def _real_view(n=64):
    """An AttackerView whose 'defense' adds seeded Gaussian noise per (index, seed): records every encode call."""
    from bench.attacks.attacker import AttackerView

    imgs = _images(n, 8)
    train = Split("train", imgs, torch.zeros(n, dtype=torch.long), np.arange(n), 2)
    calls = []

    def encode(split, seed):
        calls.append(seed)
        noise = torch.stack([torch.randn(1, 8, 8, generator=torch.Generator().manual_seed(seed * 1000 + int(i)))
                             for i in split.indices])
        return split.images + 0.1 * noise

    return AttackerView(train=train, seed=3, encode=encode, to_space=lambda x: x, directions=None), calls


def test_whitebox_access_trains_on_the_attackers_own_releases():
    """NE Table 8 row 3: the attacker recodes its own images (draws x samples pairs, its own seeds)."""
    from bench.attacks.attacker import DRAW_STRIDE

    view, calls = _real_view()
    attack = get_attack({"name": "reconstruct", "access": "whitebox", "draws": 3, "target": "noise2clean",
                         "samples": 64, "epochs": 1, "width": 8, "depth": 2})
    facts = attack.fit(view, seed=0)
    assert facts["train_pairs"] == 3 * 64 and facts["samples"] == 64
    draws = {(s - 3) // DRAW_STRIDE for s in calls}
    assert draws == {8, 9, 10}  # never the defender's own releases (draws 0 and 1)
    view, calls = _real_view()
    get_attack({"name": "reconstruct", "samples": 64, "epochs": 1, "width": 8, "depth": 2}).fit(view, seed=0)
    assert {(s - 3) // DRAW_STRIDE for s in calls} == {0, 1}  # black box: the defender's two releases
    split = view.self_released_split(view.clean(64), 2)
    assert len(split) == 128 and torch.equal(split.read(np.arange(64, 70)), split.read(np.arange(64, 128))[:6])


def test_srresnet_denoiser_is_the_residual_block_net():
    from bench.attacks.reconstruction import SRResNet

    net = SRResNet(1, 16, 2)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) == 2 * 2 + 1
    assert sum(isinstance(m, nn.PReLU) for m in net.modules()) == 2 + 1
    assert net(torch.zeros(2, 1, 8, 8)).shape == (2, 1, 8, 8)
    view, _ = _real_view()
    attack = get_attack({"name": "reconstruct", "net": "srresnet", "blocks": 2, "width": 8, "target": "noise2clean",
                         "samples": 64, "epochs": 1})
    attack.fit(view, seed=0)
    assert isinstance(attack.net, SRResNet) and attack(_images(4), seed=0).shape == (4, 1, 8, 8)
    with pytest.raises(UserError, match="unknown net"):
        get_attack({"name": "reconstruct", "net": "unet"}).fit(view, 0)


def test_noise2clean_denoiser_removes_gaussian_noise():
    class NoiseView(SubspaceView):
        def released(self, clean, draw=0):
            g = torch.Generator().manual_seed(draw)
            return clean.images + 0.1 * torch.randn(clean.images.shape, generator=g)

    view = NoiseView(n=256, size=16)
    attack = get_attack({"name": "reconstruct", "target": "noise2clean", "epochs": 20, "width": 16, "depth": 3})
    facts = attack.fit(view, seed=0)
    assert facts["samples"] == 256
    clean = _images(32, 16, seed=9)
    noisy = clean + 0.1 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(4))
    assert psnr(clean, attack(noisy, 0)).mean() > psnr(clean, noisy).mean() + 1.0


def test_adaptation_returns_a_new_model_and_leaves_the_original():
    view = SubspaceView(n=64)
    view.split = Split("synthetic", view.split.images, torch.arange(64) % 2, np.arange(64), 2)
    module = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
    adapter = from_module(module, "toy", [0.5], [0.5], [1, 8, 8])
    before = adapter.digest
    adapted = get_attack({"name": "adapt", "epochs": 2}).adapt(adapter, view, seed=0)
    assert adapter.digest == before
    assert adapted.digest != before and adapted.name == "toy"


def test_adaptation_from_the_standard_initialisation_resets_the_weights():
    from bench.attacks.adaptation import standard_init

    module = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
    with torch.no_grad():
        module[1].weight.fill_(3.0)
    adapter = from_module(module, "toy", [0.5], [0.5], [1, 8, 8])
    view = SubspaceView(n=64)
    view.split = Split("synthetic", view.split.images, torch.arange(64) % 2, np.arange(64), 2)
    kept = get_attack({"name": "adapt", "epochs": 0}).adapt(adapter, view, seed=0)
    fresh = get_attack({"name": "adapt", "epochs": 0, "init": "standard"}).adapt(adapter, view, seed=0)
    assert torch.equal(kept.module[1].weight, module[1].weight)  # epochs 0: the evaluated model as it is
    assert fresh.module[1].weight.abs().max() < 1.0  # nn.Linear's own init, not the 3.0 it had
    again = standard_init(nn.Sequential(nn.Flatten(), nn.Linear(64, 2)), 0)
    assert torch.equal(fresh.module[1].weight, again[1].weight)  # seeded
    assert torch.equal(module[1].weight, torch.full_like(module[1].weight, 3.0))  # never in place
    with pytest.raises(UserError, match="unknown init"):
        get_attack({"name": "adapt", "init": "xavier"}).adapt(adapter, view, seed=0)


# -- through the runner on the digits zoo -----------------------------------------------------
ATTACKS = ('["none", "crop", {name = "reconstruct", epochs = 1, samples = 128, width = 8, depth = 2}, '
           '{name = "project", samples = 256}, {name = "adapt", samples = 128, epochs = 1}]')


@pytest.fixture(scope="module")
def attacked_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("attacks")
    extra = (f'\n[[defenses]]\nname = "ne-patch"\npsnr = [-10]\nrelease = ["float"]\nattacks = {ATTACKS}\n'
             'models = ["mlp-s0", "vit-s0"]\n')
    suite = load_suite(write_suite(tmp / "a.toml", psnr=(-10,), release=("float",), defenses=(), extra=extra))
    runner = make_engine(suite, tmp / "run", progress=False)
    summary = runner.run()
    return suite, tmp, summary, read_rows(tmp / "run")


def test_attacks_run_in_the_grid_and_record_what_they_did(attacked_run):
    _, _, summary, rows = attacked_run
    by_attack = {}
    for r in rows:
        by_attack.setdefault(r["attack"].split("(")[0], []).append(r)
    assert set(by_attack) == {"none", "crop", "reconstruct", "project", "adapt"}
    assert all(len(by_attack[a]) == 6 for a in ("crop", "reconstruct", "project", "adapt"))  # 2 authorized x 3 evaluated
    assert {r["authorized"] for r in by_attack["adapt"]} == {"mlp-s0", "vit-s0"}  # the entry's `models`
    assert all(r["attack_stats"]["psnr"] > -10.5 for r in by_attack["project"])
    assert all(0 < r["attack_stats"]["rank"] <= 1024 for r in by_attack["project"])
    released = {(r["authorized"], r["evaluated"]): r["metrics"]["top1"] for r in by_attack["none"] if r["authorized"]}
    for r in by_attack["adapt"]:  # the authorized model is never adapted: its accuracy is the released one
        if r["role"] == "authorized":
            assert r["metrics"]["top1"] == released[(r["authorized"], r["evaluated"])]


def test_a_warm_rerun_neither_adapts_nor_forwards(attacked_run):
    suite, tmp, _, rows = attacked_run
    (tmp / "run2").mkdir()
    runner = make_engine(suite, tmp / "run2", progress=False)
    summary = runner.run()
    assert summary.forwards == 0
    again = {r["cell"]: r["metrics"]["top1"] for r in read_rows(tmp / "run2")}
    assert again == {r["cell"]: r["metrics"]["top1"] for r in rows}


def test_attack_reports_are_written(attacked_run, tmp_path):
    _, _, _, rows = attacked_run
    paths = render(rows, tmp_path, {})
    text = (tmp_path / "ne_attacks.md").read_text()
    assert tmp_path / "ne_attacks.md" in paths
    for heading in ("Preprocessing robustness", "Reconstruction", "projection", "Learned adaptation", "Reported by the NE paper"):
        assert heading in text


def test_entry_models_must_be_suite_models(tmp_path):
    extra = '\n[[defenses]]\nname = "noise"\nmodels = ["mlp-s9"]\n'
    suite = load_suite(write_suite(tmp_path / "m.toml", defenses=(), extra=extra))
    with pytest.raises(UserError, match="'mlp-s9' in 'models' is not in the suite"):
        make_engine(suite, tmp_path / "run", progress=False)


def test_attack_kind_must_fit_the_protocol(tmp_path):
    extra = '\n[[defenses]]\nname = "ne-patch"\npsnr = [0]\nrelease = ["float"]\nattacks = ["prune"]\n'
    suite = load_suite(write_suite(tmp_path / "b.toml", defenses=(), extra=extra))
    with pytest.raises(UserError, match="cannot take attack 'prune'"):
        make_engine(suite, tmp_path / "run", progress=False)
    extra = '\n[[defenses]]\nname = "corelocker"\nattacks = ["adapt"]\n'
    suite = load_suite(write_suite(tmp_path / "c.toml", defenses=(), extra=extra))
    with pytest.raises(UserError, match="cannot take attack 'adapt'"):
        make_engine(suite, tmp_path / "run", progress=False)


def test_a_versioned_attack_default_supersedes_rows_written_under_the_old_one(monkeypatch, tmp_path):
    """A row written before an attack's default changed (cutout's fill: version 2) must not be reused on resume:
    the row identity carries the attack's version (the imagenet-mini board once kept black-fill cutout rows)."""
    from conftest import make_engine
    from bench.attacks.base import ATTACKS
    from bench.suite import load_suite

    runner = make_engine(load_suite("digits-quick"), str(tmp_path / "out"), progress=False)
    row = {"authorized": "cnn-s0", "evaluated": "cnn-s0", "attack": "cutout"}
    now = runner.row_identity(row)
    assert runner.row_identity({**row, "attack": "crop"}) != now  # cutout (version 2) differs from a v1 attack
    assert runner.row_identity({**row, "attack": "cutout(low=0.2,high=0.2)"}) == now  # the label's params aside
    monkeypatch.setattr(ATTACKS.get("cutout"), "version", 1)
    assert runner.row_identity(row) != now  # the same cell under the old default is another identity

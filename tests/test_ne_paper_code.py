"""psnr_mode "paper-code" and evaluation "paper-code": the public NE code's strength rule and its
authorized-model bypass for overlapping stems, checked against the formula written out here."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.defenses import get_defense
from bench.defenses.release import calibrate, calibrate_paper_code, paper_code_scale, psnr, split_psnr
from bench.core.errors import UserError
from bench.models.sources import from_module
from ne_code_pipeline import code_null_basis, code_release, principal_gap


def _adapter(module, shape, mean, std):
    torch.manual_seed(0)
    for p in module.parameters():
        nn.init.normal_(p)
    return from_module(module, "m", mean=mean, std=std, input_size=shape)


def stem_model(kernel=4, stride=4, channels=3, out=8, size=16, std=(0.5, 0.5, 0.5)):
    positions = ((size - kernel) // stride + 1) ** 2
    module = nn.Sequential(nn.Conv2d(channels, out, kernel, stride), nn.Flatten(), nn.Linear(out * positions, 10))
    return _adapter(module, (channels, size, size), (0.4,) * channels, std)


def images(n=6, shape=(3, 16, 16), seed=0):
    return torch.rand(n, *shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_scale_is_the_code_formula_on_the_noised_signal():
    g = torch.Generator().manual_seed(1)
    patches, noise = torch.randn(3, 12, 5, generator=g, dtype=torch.float64), torch.randn(3, 12, 5, generator=g, dtype=torch.float64)
    target = 255.0**2 / 10 ** (20 / 10)
    expected = torch.sqrt(target / torch.mean((patches + noise) ** 2, dim=(1, 2)))  # nes.py's noise_mse, per sample
    assert torch.allclose(paper_code_scale(patches, noise, 20.0), expected, rtol=1e-12)
    # the mean square of the noised signal, not of the perturbation alone
    assert not torch.allclose(paper_code_scale(patches, noise, 20.0), torch.sqrt(target / noise.pow(2).mean((1, 2))))


def _code_reference(xn, basis, z1, z2, kernel, stride, target_db):
    """The public code's generate_cnn_noised_images, written out from its text (tiled z, (B, k, 1))."""
    unfolded = F.unfold(xn, kernel, stride=stride)
    noise = torch.einsum("ij,bjl->bil", basis, z1)
    mse = torch.mean((unfolded + noise) ** 2, dim=(1, 2), keepdim=True)
    scale = torch.sqrt((255**2 / 10 ** (target_db / 10)) / mse)
    scaled = torch.einsum("ij,bjl->bil", basis, z2 * scale)
    return F.fold(unfolded + scaled, xn.shape[-2:], kernel, stride=stride), unfolded + scaled


@pytest.mark.parametrize("kernel,stride", [(4, 4), (4, 2)])
def test_calibrate_paper_code_matches_the_public_code(kernel, stride):
    model = stem_model(kernel, stride)
    fl = model.first_linear()
    x = images()
    mean, std = (0.4,) * 3, (0.5,) * 3
    xn = (x - 0.4) / 0.5
    n = fl.matrix.shape[1]
    g = torch.Generator().manual_seed(3)
    basis = torch.linalg.qr(torch.randn(n, 5, generator=g, dtype=torch.float64)).Q
    z1, z2 = torch.randn(len(x), 5, 1, generator=g, dtype=torch.float64), torch.randn(len(x), 5, 1, generator=g, dtype=torch.float64)
    positions = fl.unfold(x).shape[-1]
    first = torch.einsum("ij,bjl->bil", basis, z1).expand(-1, -1, positions)
    fresh = torch.einsum("ij,bjl->bil", basis, z2).expand(-1, -1, positions)
    code = calibrate_paper_code(x, first, fresh, fl.unfold, fl.fold, mean, std, 20.0, "float")
    folded_ref, noised_ref = _code_reference(xn, basis, z1, z2, kernel, stride, 20.0)
    assert torch.allclose(code.noised_patches, noised_ref, atol=1e-10)
    # the harness releases clean + folded perturbation; the code's fold also sums the image patches
    released_n = (code.calibrated.released - 0.4) / 0.5
    assert torch.allclose(released_n, xn + fl.fold(noised_ref - F.unfold(xn, kernel, stride=stride)), atol=1e-10)
    if kernel == stride:  # non-overlapping: the code's fold is the released image itself
        assert torch.allclose(released_n, folded_ref, atol=1e-10)
    else:
        assert not torch.allclose(released_n, folded_ref, atol=1e-3)
    # the scale is computed with the first draw and applied to the fresh one
    swapped = calibrate_paper_code(x, fresh, first, fl.unfold, fl.fold, mean, std, 20.0, "float")
    assert not torch.allclose(swapped.calibrated.released, code.calibrated.released)
    # every mode records the true pixel PSNR beside the nominal one
    assert torch.allclose(code.calibrated.psnr_true, psnr(x, code.calibrated.released))
    assert code.calibrated.psnr_nominal is not None and code.calibrated.unreachable == 0


def test_split_psnr_is_one_mse_over_every_sample():
    a, b = images(4), images(4, seed=2)
    per_sample = psnr(a, b)
    whole = 10 * torch.log10(1.0 / torch.mean((a - b) ** 2))
    assert abs(split_psnr(per_sample, peak=1.0) - float(whole)) < 1e-9


@pytest.mark.parametrize("std", [(0.5, 0.5, 0.5), (0.2, 0.5, 0.3)])
def test_ne_patch_noise_is_in_the_normalized_nullspace(std):
    model = stem_model(std=std)  # 48-dim patches -> 8 outputs: a 40-dim exact nullspace per patch
    defense = get_defense("ne-patch")(layout="tiled")
    defense.fit(model)
    x = images().float()
    cols = defense.patch_noise(x, list(range(len(x))), [0] * len(x), 0, model.first_linear(), std)
    fl = model.first_linear()
    per_entry = torch.tensor(std, dtype=torch.float64).repeat_interleave(fl.matrix.shape[1] // 3)
    w_raw = fl.matrix.double() * per_entry  # the conv's own weight, acting on the normalized tensor
    assert (w_raw @ cols).abs().max() < 1e-9 * cols.abs().max()
    assert torch.allclose(cols[..., :1].expand_as(cols), cols)  # tiled: one code per sample
    # the code's own subspace, in the code's order (SVD of the conv's own weight), the harness's exact nullspace too
    code = code_null_basis(model.module[0].weight, 1e-4)
    assert torch.allclose(defense.code_basis(std), code, atol=1e-10)
    assert principal_gap(code, defense._basis) < 1e-9 if len(set(std)) == 1 else defense._basis.shape == code.shape


def test_calibrate_refuses_paper_code_without_patches():
    with pytest.raises(UserError, match="calibrate_paper_code"):
        calibrate(images(), images(seed=1), 20.0, "float", "paper-code", (0.5,) * 3)


def test_bypass_feeds_the_authorized_model_the_noised_patches(tmp_path):
    """evaluation 'paper-code': the authorized logits are the model run on W (P + s N) per patch."""
    from bench.protocols.input_auth import BypassedModel

    model = stem_model(kernel=4, stride=2)
    fl = model.first_linear()
    x = images().float()
    g = torch.Generator().manual_seed(5)
    cols = fl.unfold((x.double() - 0.4) / 0.5)
    noise = 3.0 * torch.randn(cols.shape, generator=g, dtype=torch.float64)
    conv = model.module[0]
    w = conv.weight.reshape(conv.out_channels, -1).double()
    offset = torch.einsum("mn,bnl->bml", w, noise)
    bypass = BypassedModel(model)
    bypass.pending = (x, offset, None)
    got = bypass.predict(torch.zeros_like(x))
    side = (16 - 4) // 2 + 1
    features = (torch.einsum("mn,bnl->bml", w, cols + noise) + conv.bias.double().view(1, -1, 1)).view(len(x), -1, side, side)
    expected = model.module[2](model.module[1](features.float()))
    assert torch.allclose(got, expected, atol=1e-4)
    assert not torch.allclose(got, model.predict(x), atol=1e-3)  # the noise does reach it here (random W)


def _code_suite(tmp, evaluation="paper-code", mode="paper-code", defense="ne-patch"):
    from conftest import write_suite

    extra = (f'\n[[defenses]]\nname = "{defense}"\nparams = {{ layout = "tiled" }}\npsnr = [20]\npsnr_mode = "{mode}"\n'
             f'evaluation = "{evaluation}"\nrelease = ["float"]\n'
             f'\n[[defenses]]\nname = "noise"\npsnr = [20]\npsnr_mode = "{mode}"\nevaluation = "{evaluation}"\n'
             'release = ["float"]\n')
    path = write_suite(tmp / "code.toml", psnr=(20,), release=("float",), defenses=(), extra=extra)
    text = path.read_text().replace('{ source = "zoo", model = "vit-s0", epochs = 6 }',
                                    '{ source = "zoo", model = "cnn-s0", epochs = 2 }')
    path.write_text(text)
    return path


def test_paper_code_through_the_runner(tmp_path):
    """The bypass applies to the overlapping CNN stem only, is labelled on the row, and keeps the true PSNR."""
    from bench.core.results import read_rows
    from bench.suite import load_suite
    from conftest import make_engine, validate_rows

    suite = load_suite(_code_suite(tmp_path))
    make_engine(suite, tmp_path / "run", progress=False).run()
    validate_rows(read_rows(tmp_path / "run"))
    rows = [r for r in read_rows(tmp_path / "run") if r["defense"] == "ne-patch"]
    assert rows and all(r["point"]["evaluation"] == "paper-code" and r["point"]["psnr_mode"] == "paper-code" for r in rows)
    summary = {r["authorized"]: r["provenance"]["defense_summary"] for r in rows}
    assert summary["cnn-s0"]["evaluation"] == "paper-code (authorized model bypassed)"
    assert summary["mlp-s0"]["evaluation"].startswith("paper-code (non-overlapping")
    assert all(r["encoding"]["psnr_true"] is not None and r["encoding"]["psnr_nominal"] is not None for r in rows)
    assert all("psnr_nominal_split" in s for s in summary.values())
    noise = [r for r in read_rows(tmp_path / "run") if r["defense"] == "noise"]
    assert noise and all(r["encoding"]["psnr_true"] is not None for r in noise)


def test_paper_code_evaluation_needs_the_code_psnr_mode(tmp_path):
    from bench.suite import load_suite
    from conftest import make_engine

    suite = load_suite(_code_suite(tmp_path, mode="true"))
    with pytest.raises(UserError, match="evaluation 'paper-code' needs psnr_mode"):
        make_engine(suite, tmp_path / "run", progress=False).run()


def test_paper_code_release_does_not_depend_on_the_batch():
    model = stem_model(kernel=4, stride=2, std=(0.2, 0.5, 0.3))
    defense = get_defense("ne-patch")(layout="tiled")
    defense.fit(model)
    fl, std, mean = model.first_linear(), (0.2, 0.5, 0.3), (0.4,) * 3
    x = images(7)

    def released(rows):
        part = x[rows]
        first = defense.patch_noise(part, rows, [0] * len(rows), 0, fl, std)
        fresh = defense.patch_noise(part, rows, [0] * len(rows), 1, fl, std)
        return calibrate_paper_code(part, first, fresh, fl.unfold, fl.fold, mean, std, 20.0, "uint8").calibrated.released

    whole = released(list(range(7)))
    assert torch.equal(torch.cat([released([i]) for i in range(7)]), whole)
    assert torch.equal(torch.cat([released([0, 1, 2]), released([3, 4, 5, 6])]), whole)


# -- the public code's subspace rule and per-model preprocessing (issue 24) ------------------------------------


def _crafted_stem(out, kernel, stride, padding, size, raw_small, std, seed=0):
    """A conv stem whose OWN weight has the singular values `raw_small` (the rest in [0.5, 1.5])."""
    g = torch.Generator().manual_seed(seed)
    n = 3 * kernel * kernel
    u = torch.linalg.qr(torch.randn(out, out, generator=g, dtype=torch.float64)).Q
    v = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64)).Q
    r = min(out, n)
    s = 0.5 + torch.rand(r, generator=g, dtype=torch.float64)
    s[r - len(raw_small):] = torch.tensor(raw_small, dtype=torch.float64)
    w = u[:, :r] @ torch.diag(s) @ v[:, :r].T
    conv = nn.Conv2d(3, out, kernel, stride, padding, bias=False)
    with torch.no_grad():
        conv.weight.copy_(w.reshape(out, 3, kernel, kernel))
    module = nn.Sequential(conv, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(out, 10))
    return from_module(module, "stem", mean=(0.45,) * 3, std=std, input_size=(3, size, size))


@pytest.mark.parametrize("case,harness,code", [
    # ResNet-50's stem (64 x 3x7x7, stride 2): more inputs than outputs, the code ignores tau (exact 83-dim nullspace);
    # one raw singular value of 1e-5 is <= tau after the ImageNet std is folded in, so the harness counts 84
    ("resnet50", 84, 83),
    # ViT-B's patch embedding (768 x 3x16x16): square, the code counts raw singular values <= tau (5), the harness
    # those of W / 0.5 (2)
    ("vitb", 2, 5),
])
def test_paper_code_subspace_is_the_codes_rule(case, harness, code):
    if case == "resnet50":
        model = _crafted_stem(64, 7, 2, 3, 14, [1e-5], (0.229, 0.224, 0.225))
    else:
        model = _crafted_stem(768, 16, 16, 0, 16, [1e-5, 3e-5, 6e-5, 8e-5, 9e-5], (0.5, 0.5, 0.5))
    ne = get_defense("ne-patch")(layout="tiled")
    ne.fit(model)
    std = model.preprocess.std
    assert ne.summary()["subspace_dim"] == harness  # the paper's rule (default modes) is unchanged
    n = 110
    x = torch.rand(n, *model.preprocess.input_size, generator=torch.Generator().manual_seed(1))
    cols = ne.patch_noise(x, list(range(n)), [0] * n, 0, model.first_linear(), std)[:, :, 0]
    assert int(torch.linalg.matrix_rank(cols)) == code  # what psnr_mode "paper-code" perturbs in
    conv = model.module[0]
    assert principal_gap(ne.code_basis(std), code_null_basis(conv.weight, 1e-4)) < 1e-9
    assert ne.code_summary(std) == {"subspace_dim": code, "harness_subspace_dim": harness,
                                    "subspace_rule": ne.code_summary(std)["subspace_rule"]}


def _own_models():
    """An authorized stem (std 0.25, 16x16) and an unauthorized model with other preprocessing (std 0.5, 20x20)."""
    torch.manual_seed(0)
    auth = _adapter(nn.Sequential(nn.Conv2d(3, 8, 4, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10)),
                    (3, 16, 16), (0.4,) * 3, (0.25,) * 3)
    other = _adapter(nn.Sequential(nn.Conv2d(3, 6, 3, 1, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 10)),
                     (3, 20, 20), (0.5,) * 3, (0.5,) * 3)
    return auth, other


@pytest.mark.parametrize("evaluation", [False, True])
def test_code_encodes_each_model_through_its_own_preprocessing(evaluation):
    """The public code (cli.py with --cross_model_name) preprocesses the images with the unauthorized model's own
    processor, then adds the authorized layer's noise there (its kernel and stride, the scale rule on that
    tensor): the same as the reference pipeline on the model's own normalized images, not the release made in
    the authorized model's space."""
    from bench.protocols.input_auth import code_encode, same_preprocessing

    auth, other = _own_models()
    assert not same_preprocessing(auth, other) and same_preprocessing(auth, auth)
    ne = get_defense("ne-patch")(layout="tiled")
    ne.fit(auth)
    raw = images(5, (3, 24, 24)).float()
    idx, y = list(range(5)), [0] * 5
    mine = other.preprocess.geometry(raw)
    got = code_encode(ne, auth, other, mine, idx, y, 3, 20.0, "float", evaluation).released
    k = ne.code_basis(auth.preprocess.std).shape[1]
    samples = list(zip(idx, y))
    codes = (ne.draw_codes(3, samples, (k, 1)), ne.draw_codes(3 + 7_919, samples, (k, 1)))
    fl = auth.first_linear()
    ref = code_release((mine.double() - 0.5) / 0.5, code_null_basis(auth.module[0].weight, 1e-4), 20.0,
                       fl.kernel_size, fl.stride, fl.padding, codes=codes)
    expected = (ref.fed if evaluation else ref.intended) * 0.5 + 0.5
    assert got.shape == mine.shape and torch.allclose(got.double(), expected, rtol=1e-5, atol=1e-4)
    shared = code_encode(ne, auth, auth, auth.preprocess.geometry(raw), idx, y, 3, 20.0, "float", evaluation).released
    assert not torch.allclose(other.preprocess.geometry(shared), got, atol=1e-2)  # the harness's old single encoding


def test_runner_feeds_a_model_with_other_preprocessing_its_own_encoding(tmp_path):
    """Through the runner: psnr_mode "paper-code" encodes the digits once per preprocessing (the authorized model's
    space for the models that share it, the model's own for the other one), records which models read their own
    encoding, and scores that model on it (its first-layer deviation is the one of its own encoding)."""
    from bench.core.results import read_rows
    from bench.suite import load_suite
    from conftest import make_engine

    spec = ('{{ source = "torch", factory = "models_example:tiny_cnn", mean = [{m}], std = [{s}], '
            'input_size = [1, {n}, {n}], name = "{name}", init_seed = {seed} }}')
    auth = spec.format(m=0.5, s=0.25, n=32, name="auth", seed=0)
    same = spec.format(m=0.5, s=0.25, n=32, name="same", seed=1)
    other = spec.format(m=0.3, s=0.5, n=24, name="other", seed=2)
    path = tmp_path / "own.toml"
    path.write_text('[suite]\nname = "own"\ndescription = "own preprocessing"\nseed = 0\n\n'
                    '[data]\ndataset = "digits"\nsplit = "test"\nsubset = 24\n\n'
                    f'[models]\nauthorized = [{auth}]\nevaluated = [{auth}, {same}, {other}]\n\n'
                    '[[defenses]]\nname = "ne-patch"\nparams = { layout = "tiled" }\npsnr = [20]\n'
                    'psnr_mode = "paper-code"\nrelease = ["float"]\n')
    engine = make_engine(load_suite(path), tmp_path / "run", progress=False)
    engine.run()
    rows = {r["evaluated"]: r for r in read_rows(tmp_path / "run") if r["defense"] == "ne-patch"}
    assert set(rows) == {"auth", "same", "other"}
    assert rows["auth"]["provenance"]["defense_summary"]["own_preprocessing"] == ["other"]
    # "other" was scored on the code's encoding of the stored images through its own preprocessing
    from bench.protocols.classify import FirstLayerDeviation
    from bench.protocols.input_auth import code_encode

    ctx = engine.ctx
    auth_m, other_m = ctx.model("auth"), ctx.model("other")
    ne = get_defense("ne-patch")(layout="tiled")
    ne.fit(auth_m)
    data = ctx.data
    mine = other_m.preprocess.geometry(data.images.float())
    enc = code_encode(ne, auth_m, other_m, mine, data.indices, data.labels, ctx.seed(0), 20.0, "float", False).released
    top1 = float((other_m.predict(enc).argmax(1) == data.labels).float().mean() * 100)
    assert abs(rows["other"]["metrics"]["top1"] - top1) < 1e-6
    dev = float(np.nanmean(FirstLayerDeviation(other_m)(enc, mine)))
    assert abs(rows["other"]["metrics"]["first_layer_dev"] - dev) < 1e-4 * dev
    # the release made in the authorized model's space (what every model read before) gives another deviation
    shared = code_encode(ne, auth_m, auth_m, auth_m.preprocess.geometry(data.images.float()), data.indices, data.labels,
                         ctx.seed(0), 20.0, "float", False).released
    assert abs(float(np.nanmean(FirstLayerDeviation(other_m)(shared, auth_m.preprocess.geometry(data.images.float()))))
               - dev) > 1e-3 * dev

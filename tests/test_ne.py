"""NE math: nullspace property, calibration, determinism, variants, parameter checks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from bench.defenses import get_defense
from bench.defenses.release import calibrate, psnr, release
from bench.core.errors import UserError
from bench.models.sources import from_module


def _adapter(module: nn.Module, shape=(1, 16, 16), std=0.5) -> object:
    torch.manual_seed(0)
    for p in module.parameters():
        nn.init.normal_(p)
    return from_module(module, "m", mean=(0.3,), std=(std,), input_size=shape)


def mlp():
    return _adapter(nn.Sequential(nn.Flatten(), nn.Linear(256, 64), nn.ReLU(), nn.Linear(64, 10)))


def patch_embed():  # 4x4 patches (16 pixels) -> 8 dims: an 8-dim nullspace per patch
    return _adapter(nn.Sequential(nn.Conv2d(1, 8, 4, 4), nn.Flatten(), nn.Linear(8 * 16, 10)))


def overlapping_conv():
    return _adapter(nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.Flatten(), nn.Linear(16 * 256, 10)))


def images(n=12, shape=(1, 16, 16), seed=0):
    return torch.rand(n, *shape, generator=torch.Generator().manual_seed(seed))


def encode(name, model, x, seed=0, **params):
    d = get_defense(name)(**params)
    d.fit(model)
    return d, d.directions(x, list(range(len(x))), [0] * len(x), seed)


@pytest.mark.parametrize("factory", [mlp, patch_embed])
def test_ne_patch_is_in_the_nullspace(factory):
    model, x = factory(), images()
    defense, delta = encode("ne-patch", model, x)
    fl = model.first_linear()
    ratio = fl.apply(delta).norm(dim=1) / fl.apply(torch.randn_like(delta)).norm(dim=1)
    assert ratio.max() < 1e-10
    assert defense.summary()["subspace_dim"] == (256 - 64 if factory is mlp else 8)
    assert defense.summary()["fallback"] is False


def test_ne_patch_on_overlapping_conv_falls_back_and_deviates():
    model, x = overlapping_conv(), images()
    defense, delta = encode("ne-patch", model, x)
    s = defense.summary()
    assert s["fallback"] is True and s["subspace_dim"] == 1 and s["non_overlapping"] is False
    released = x + delta / delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    dev = model.first_linear().relative_deviation(x.double(), released.double())
    assert dev.min() > 1e-3  # folded patches leave the per-patch subspace: measured, not assumed


def test_cumulative_rule_is_no_larger_than_threshold():
    model = patch_embed()
    thr, _ = encode("ne-patch", model, images(), tau=1e-4, rule="threshold")
    cum, _ = encode("ne-patch", model, images(), tau=1e-4, rule="cumulative")
    assert cum.summary()["tau_dim"] <= thr.summary()["tau_dim"]


def test_tiled_layout_repeats_one_patch_code():
    model, x = patch_embed(), images(2)
    _, delta = encode("ne-patch", model, x, layout="tiled")
    cols = model.first_linear().unfold(delta)
    assert torch.allclose(cols[:, :, :1].expand_as(cols), cols)


def test_directions_are_deterministic_and_batch_independent():
    model, x = mlp(), images(8)
    _, a = encode("ne-patch", model, x, seed=3)
    _, b = encode("ne-patch", model, x, seed=3)
    _, c = encode("ne-patch", model, x, seed=4)
    assert torch.equal(a, b) and not torch.equal(a, c)
    d = get_defense("ne-patch")()
    d.fit(model)
    sub = d.directions(x[2:5], [2, 3, 4], [0, 0, 0], 3)
    assert torch.equal(sub, a[2:5])


def test_class_code_shares_z_within_a_class():
    model, x = mlp(), images(4)
    d = get_defense("ne-patch")(code="class")
    d.fit(model)
    delta = d.directions(x, [0, 1, 2, 3], [5, 5, 7, 5], 0)
    assert torch.equal(delta[0], delta[1]) and torch.equal(delta[0], delta[3]) and not torch.equal(delta[0], delta[2])


@pytest.mark.parametrize("factory", [mlp, patch_embed, overlapping_conv])
def test_ne_operator_picks_lowest_gain_directions(factory):
    model, x = factory(), images(6)
    defense, delta = encode("ne-operator", model, x, dims=8)
    fl = model.first_linear()
    gains = defense._basis.gains
    assert torch.all(gains[1:] >= gains[:-1])
    ratio = fl.apply(delta).norm(dim=1) / fl.apply(torch.randn_like(delta)).norm(dim=1)
    if factory is overlapping_conv:
        assert ratio.max() < 0.5  # low-gain, not null: overlapping stems have no exact nullspace
    else:
        assert ratio.max() < 1e-10


@pytest.mark.parametrize("target", [30.0, 20.0, 10.0])
@pytest.mark.parametrize("fmt", ["float", "clip", "uint8"])
def test_calibration_hits_target_psnr(target, fmt):
    x = images(16)
    delta = torch.randn_like(x)
    cal = calibrate(x, delta, target, fmt)
    assert cal.unreachable == 0
    assert (cal.psnr_true - target).abs().max() <= 0.1
    assert torch.equal(release(cal.released, fmt), cal.released)


def test_unreachable_targets_are_flagged_for_clipped_release():
    x = images(4)
    cal = calibrate(x, torch.randn_like(x), -20.0, "clip")
    assert cal.unreachable == 4 and cal.max_err_db > 0.1
    assert float(cal.psnr_true.min()) >= 0.0  # a clipped image cannot be further than the full range


@pytest.mark.parametrize("fmt", ["clip", "uint8"])
def test_unreachable_target_stops_where_the_psnr_stops_falling(fmt):
    """Regression (issue 16, bug 3): an unreachable target (0 dB, -10 dB with 8-bit images) raised the strength to
    1000x and released a saturated image; the search now stops at the weakest strength whose PSNR is within
    STALL_DB of the saturated release, and flags the samples."""
    from bench.defenses.release import STALL_DB

    x = torch.round(images(4) * 255) / 255  # 8-bit images, as stored
    delta = torch.randn(x.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    floor = psnr(x.double(), release(x.double() + 1e6 * delta, fmt))  # fully saturated: the lowest PSNR there is
    zero, minus_ten = calibrate(x, delta, 0.0, fmt), calibrate(x, delta, -10.0, fmt)
    assert zero.unreachable == minus_ten.unreachable == 4 and not zero.reached.any()
    assert torch.equal(zero.released, minus_ten.released)  # the same image: both stop at the floor
    assert ((zero.psnr_true - floor) >= 0).all() and (zero.psnr_true - floor).max() <= 2 * STALL_DB  # 8-bit steps
    assert float(floor.min()) > 0.0
    unit = delta / delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    lam = 10 ** (-0.0 / 20) * math.sqrt(x[0].numel())  # the float release's strength for 0 dB
    old = psnr(x.double(), release(x.double() + 1e3 * lam * unit, fmt))  # where the search used to end
    assert (zero.psnr_true > old).all()  # a weaker release than the old saturated one, at (nearly) the same PSNR
    reach = calibrate(x, delta, float(floor.max()) + 1.0, fmt)
    assert reach.unreachable == 0 and reach.reached.all()


def test_paper_nominal_psnr_correspondence():
    x, std = images(4), 0.25
    cal = calibrate(x, torch.randn_like(x), 20.0, "float", mode="paper-nominal", std=(std,))
    assert torch.allclose(cal.psnr_nominal, torch.full((4,), 20.0, dtype=torch.float64))
    expected_true = 20.0 - 20 * math.log10(255 * std)
    assert torch.allclose(cal.psnr_true, torch.full((4,), expected_true, dtype=torch.float64), atol=1e-6)


def test_psnr_of_identical_images_is_large():
    x = images(2)
    assert float(psnr(x, x).min()) > 100


def test_bad_parameters_are_user_errors():
    with pytest.raises(UserError, match="valid parameters"):
        get_defense("ne-patch")(tua=1e-4)
    with pytest.raises(UserError, match="valid choices"):
        get_defense("ne-patch")(layout="diagonal")
    with pytest.raises(UserError, match="unknown defense"):
        get_defense("nope")
    with pytest.raises(UserError, match="valid choices"):
        calibrate(images(1), torch.randn(1, 1, 16, 16), 20.0, "png")


def test_plugin_by_module_path():
    assert get_defense("bench.defenses.noise:GaussianNoise").name == "noise"

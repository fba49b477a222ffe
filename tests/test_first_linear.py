"""first_linear(): the first linear operator of timm and plain models, in pixel space (CPU, offline)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from bench.core.errors import UserError
from bench.models import from_module, load_model


@pytest.fixture(autouse=True)
def no_grad():
    with torch.no_grad():
        yield


@pytest.fixture(scope="module")
def timm_models():
    """Each timm model built once (random init, no hub), with its first_linear()."""
    torch.manual_seed(0)
    with torch.no_grad():
        adapters = {
            name: load_model(f"timm:{name}")
            for name in (
                "resnet50",
                "vit_base_patch16_224",
                "deit_base_patch16_224",
                "swinv2_tiny_window8_256",
                "vit_tiny_patch16_224",
            )
        }
        return {name: (a, a.first_linear()) for name, a in adapters.items()}


EXPECTED = {
    # name: (kernel, stride, padding, input_shape, non_overlapping)
    "resnet50": ((7, 7), (2, 2), (3, 3), (3, 224, 224), False),
    "vit_base_patch16_224": ((16, 16), (16, 16), (0, 0), (3, 224, 224), True),
    "deit_base_patch16_224": ((16, 16), (16, 16), (0, 0), (3, 224, 224), True),
    "swinv2_tiny_window8_256": ((4, 4), (4, 4), (0, 0), (3, 256, 256), True),
    "vit_tiny_patch16_224": ((16, 16), (16, 16), (0, 0), (3, 224, 224), True),
}


def _pixels(shape, seed=1, n=2):
    return torch.rand(n, *shape, generator=torch.Generator().manual_seed(seed))


def _first_layer_output(adapter, fl, x):
    """The real first layer's output minus its bias, captured by a forward hook during predict()."""
    module = dict(adapter.module.named_modules())[fl.module_name]
    seen = []
    handle = module.register_forward_hook(lambda m, args, out: seen.append(out))
    try:
        adapter.predict(x)
    finally:
        handle.remove()
    out = seen[0].to(torch.float64)
    if module.bias is not None:
        shape = (1, -1, 1, 1) if out.ndim == 4 else (1, -1)
        out = out - module.bias.to(torch.float64).view(shape)
    return out.reshape(len(x), -1)


def _close(actual, expected, rel=1e-5):
    torch.testing.assert_close(actual, expected, rtol=rel, atol=rel * float(expected.abs().max()))


@pytest.mark.parametrize("name", list(EXPECTED))
def test_geometry(timm_models, name):
    _, fl = timm_models[name]
    kernel, stride, padding, input_shape, non_overlapping = EXPECTED[name]
    assert fl.kind == "conv"
    assert (fl.kernel_size, fl.stride, fl.padding, fl.input_shape) == (kernel, stride, padding, input_shape)
    assert fl.non_overlapping is non_overlapping
    assert fl.weight.dtype == torch.float64


@pytest.mark.parametrize("name", list(EXPECTED))
def test_apply_matches_real_first_layer(timm_models, name):
    adapter, fl = timm_models[name]
    x = _pixels(fl.input_shape)
    mean = torch.tensor(adapter.preprocess.mean, dtype=torch.float64).view(1, -1, 1, 1)
    # layer(normalize(x)) - bias == W (x - mean) / std == apply(x - mean), zero padding included
    _close(fl.apply(x.double() - mean), _first_layer_output(adapter, fl, x))


@pytest.mark.parametrize("name", list(EXPECTED))
def test_fold_unfold(timm_models, name):
    _, fl = timm_models[name]
    x = _pixels(fl.input_shape).double()
    counts = fl.fold(fl.unfold(torch.ones_like(x)))
    if fl.non_overlapping:
        assert torch.equal(counts, torch.ones_like(x))
        torch.testing.assert_close(fl.fold(fl.unfold(x)), x)
    else:
        assert counts.max() > 1  # every pixel read by several 7x7 windows
        torch.testing.assert_close(fl.fold(fl.unfold(x)), x * counts)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_adjoint(timm_models, name):
    _, fl = timm_models[name]
    x = torch.randn(2, *fl.input_shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    ax = fl.apply(x)
    y = torch.randn(ax.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    aty = fl.adjoint(y)
    assert aty.shape == x.shape
    torch.testing.assert_close((ax * y).sum(), (x * aty).sum(), rtol=1e-10, atol=0.0)


def test_vit_base_patch_embedding_has_no_exact_nullspace(timm_models):
    # vit_base/deit_base embed a 3*16*16 = 768-pixel patch into 768 dims: a square, full-rank
    # matrix, so there is no exact per-patch nullspace; the nullspace test uses vit_tiny (768 -> 192).
    _, fl = timm_models["vit_base_patch16_224"]
    assert fl.matrix.shape == (768, 768)
    gram = torch.linalg.eigvalsh(fl.matrix @ fl.matrix.T)  # full rank: every eigenvalue well above 0
    assert gram.min() > 1e-8 * gram.max()


def test_patch_embedding_nullspace_is_invisible(timm_models):
    adapter, fl = timm_models["vit_tiny_patch16_224"]
    m = fl.matrix
    assert m.shape == (192, 768)
    _, s, vh = torch.linalg.svd(m, full_matrices=True)
    rank = int((s > s.max() * 1e-10).sum())
    null = vh[rank:]  # (768 - rank, 768): rows orthogonal to every row of W
    assert null.shape[0] == 768 - 192
    n_patches = fl.unfold(torch.zeros(1, *fl.input_shape, dtype=torch.float64)).shape[-1]
    coeff = torch.randn(null.shape[0], n_patches, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    delta = fl.fold((null.T @ coeff).unsqueeze(0))
    random = torch.randn_like(delta)
    random *= delta.norm() / random.norm()
    assert fl.apply(delta).norm() / fl.apply(random).norm() < 1e-10

    # the real patch embedding agrees up to float32 rounding
    x = _pixels(fl.input_shape, n=1)
    shifted = x + 0.01 * (delta / delta.abs().max()).float()
    clean, moved = _first_layer_output(adapter, fl, x), _first_layer_output(adapter, fl, shifted)
    assert (moved - clean).norm() / clean.norm() < 1e-5


MEAN, STD, SIZE = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3), (3, 8, 8)


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 16), nn.ReLU(), nn.Linear(16, 4))


def test_linear_first_layer_folds_std():
    module = _mlp()
    adapter = from_module(module, "mlp", MEAN, STD, SIZE)
    fl = adapter.first_linear()
    assert (fl.kind, fl.input_shape, fl.module_name, fl.matrix.shape) == ("linear", SIZE, "1", (16, 192))
    w = module[1].weight.to(torch.float64)
    mean = torch.tensor(MEAN, dtype=torch.float64).view(1, -1, 1, 1).expand(1, *SIZE)
    std = torch.tensor(STD, dtype=torch.float64).view(1, -1, 1, 1).expand(1, *SIZE)
    x = _pixels(SIZE).double()
    # W_pixel x == W (x - mean)/std - W (-mean/std): the linear part, std folded in
    expected = ((x - mean) / std).flatten(1) @ w.T - (-mean / std).flatten(1) @ w.T
    torch.testing.assert_close(fl.apply(x), expected)
    _close(fl.apply(x - mean), _first_layer_output(adapter, fl, x.float()))
    torch.testing.assert_close(fl.fold(fl.unfold(x)), x)
    y = torch.randn(2, 16, dtype=torch.float64)
    torch.testing.assert_close((fl.apply(x) * y).sum(), (x * fl.adjoint(y)).sum())


def test_single_std_value_applies_to_every_channel():
    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(3, 4, 2, 2), nn.Flatten(), nn.Linear(64, 2))
    fl = from_module(module, "conv", (0.5,), (0.25,), SIZE).first_linear()
    torch.testing.assert_close(fl.weight, module[0].weight.to(torch.float64) * 4)


class Doubles(nn.Module):
    """Scales the input before its conv: the conv does not read the model input."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return self.conv(2 * x).mean((2, 3))


class LastDimLinear(nn.Module):
    """A Linear over the last (width) axis: reads the input, but not as one flattened vector."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(x).flatten(1)


@pytest.mark.parametrize("module", [Doubles(), LastDimLinear()], ids=["scaled-input", "last-dim-linear"])
def test_first_layer_not_reading_input_is_refused(module):
    with pytest.raises(UserError, match="first_linear\\(\\) override") as err:
        from_module(module, "odd", MEAN, STD, SIZE).first_linear()
    assert "\n" not in str(err.value)


def test_no_linear_layer_is_refused():
    with pytest.raises(UserError, match="no Linear or Conv2d"):
        from_module(nn.Flatten(), "flat", MEAN, STD, SIZE).first_linear()


def test_first_layer_deviation_is_the_relative_change_of_the_layers_output():
    """Issue 16: the deviation is ||L(x~) - L(x)|| / ||L(x)|| of the first layer's actual output on the model's
    own normalised input (bias and mean included; zero padding in the normalised input), not ||W d|| / ||W x|| on
    raw pixels, which depends on the images' brightness."""
    from bench.protocols.classify import FirstLayerDeviation

    torch.manual_seed(0)
    conv = nn.Conv2d(3, 5, 3, stride=2, padding=1)
    nn.init.uniform_(conv.bias, 0.5, 1.5)
    module = nn.Sequential(conv, nn.ReLU(), nn.Flatten(), nn.Linear(5 * 4 * 4, 3))
    mean, std = (0.45, 0.5, 0.55), (0.2, 0.25, 0.3)
    adapter = from_module(module, "conv-bias", mean, std, SIZE)
    x = torch.rand(4, *SIZE, generator=torch.Generator().manual_seed(1))
    x_tilde = (x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(2))).clamp(0, 1)
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    layer = lambda t: conv((t - m) / s).flatten(1)  # noqa: E731 - what the model itself computes
    expected = (layer(x_tilde) - layer(x)).norm(dim=1) / layer(x).norm(dim=1)
    got = FirstLayerDeviation(adapter)(x_tilde, x)
    torch.testing.assert_close(torch.from_numpy(got).float(), expected, rtol=1e-5, atol=1e-7)
    fl = adapter.first_linear()
    torch.testing.assert_close(fl.output(x.double()).float(), layer(x), rtol=1e-5, atol=1e-5)
    old = fl.relative_deviation(x.double(), x_tilde.double()).float()  # the linear part on raw pixels
    assert not torch.allclose(old, expected, rtol=1e-2)  # a different number: the definition changed
    linear = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 6), nn.ReLU(), nn.Linear(6, 2))
    adapter = from_module(linear, "mlp-bias", mean, std, SIZE)
    ref = lambda t: linear[1](((t - m) / s).flatten(1))  # noqa: E731
    expected = (ref(x_tilde) - ref(x)).norm(dim=1) / ref(x).norm(dim=1)
    torch.testing.assert_close(torch.from_numpy(FirstLayerDeviation(adapter)(x_tilde, x)).float(), expected,
                               rtol=1e-5, atol=1e-7)

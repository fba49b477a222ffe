"""Model locks beyond CoreLocker (issue 23): key-based input transform, passport layers, NNSplitter.
Each test checks the lock's defining behaviour on a digits zoo model: the key holder keeps accuracy,
the released model (and a wrong or forged key) loses it."""

from __future__ import annotations

import pytest
import torch

from bench.data.digits import load_digits_split
from bench.defenses import get_defense
from bench.defenses.locks import block_transform, conv_bn_pairs, draw_key
from bench.core.errors import UserError
from bench.models.zoo import load_zoo_model


def accuracy(adapter, split) -> float:
    with torch.no_grad():
        return 100 * float((adapter.predict(split.images).argmax(1) == split.labels).float().mean())


@pytest.fixture(scope="module")
def data():
    return load_digits_split("train"), load_digits_split("test")


def scores(name, params, model, train, test):
    defense = get_defense(name)(**params)
    protected = defense.protect(model, train, seed=0)
    return protected, {ev.label: accuracy(ev.adapter, test) for ev in defense.evaluations(protected, model, {})}


def test_block_transform_is_a_keyed_bijection():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 8, 8, generator=gen)
    perm, flip = draw_key(3, 4, True, torch.Generator().manual_seed(1))
    y = block_transform(x, perm, flip, 4)
    assert not torch.equal(x, y)
    assert torch.allclose(torch.sort(y[0, :, :4, :4].flatten()).values,
                          torch.sort(torch.where(flip, 1 - x[0, :, :4, :4].permute(1, 2, 0).flatten()[perm],
                                                 x[0, :, :4, :4].permute(1, 2, 0).flatten()[perm])).values)
    inverse = torch.argsort(perm)
    undo = block_transform(block_transform(x, perm, torch.zeros_like(flip), 4), inverse, torch.zeros_like(flip), 4)
    assert torch.allclose(undo, x)  # a permutation, undone by its inverse


def test_key_transform_needs_the_key(data):
    train, test = data
    model = load_zoo_model("cnn-s0", progress=False)
    base = accuracy(model, test)
    # digits are 8x8 images upsampled 4x: a 4x4 block is constant, so the key shuffles 8x8 blocks
    _, acc = scores("key-transform", {"epochs": 10, "block": 8, "flip": True}, model, train, test)
    assert acc["cnn-s0"] > base - 6, acc  # the key holder keeps (nearly) the original accuracy
    assert acc["cnn-s0[released]"] < acc["cnn-s0"] - 30, acc  # plain images
    assert acc["cnn-s0[wrong-key]"] < acc["cnn-s0"] - 30, acc


def test_passport_forged_passport_collapses(data):
    train, test = data
    model = load_zoo_model("resnet-s0", progress=False)
    assert len(conv_bn_pairs(model.module)) == 7  # stem, then (conv1, conv2, projection shortcut) per block
    protected, acc = scores("passport", {"epochs": 10}, model, train, test)
    assert acc["resnet-s0"] > accuracy(model, test) - 6, acc
    assert acc["resnet-s0[forged-passport]"] < acc["resnet-s0"] - 30, acc
    assert acc["resnet-s0[released]"] < 30, acc  # no passports at all: zero scale and bias
    assert all(float(n.p_gamma.abs().sum()) == 0 for n in protected.released.modules() if hasattr(n, "p_gamma"))


def test_passport_needs_conv_bn():
    train = load_digits_split("train")
    with pytest.raises(UserError, match="no convolution followed by a BatchNorm2d"):
        get_defense("passport")(epochs=0).protect(load_zoo_model("mlp-s0", progress=False), train, seed=0)


def test_nnsplitter_obfuscates_few_weights_and_restores_exactly(data):
    train, test = data
    model = load_zoo_model("cnn-s0", progress=False)
    protected, acc = scores("nnsplitter", {}, model, train, test)
    assert acc["cnn-s0"] == accuracy(model, test)  # bit-exact restore
    assert acc["cnn-s0[released]"] < 30, acc
    assert protected.cost["key_values"] <= 64 and protected.cost["fraction_of_params"] < 0.01
    released, original = dict(protected.released.named_parameters()), dict(model.module.named_parameters())
    for name, p in original.items():  # every obfuscated weight stays inside its layer's original range
        assert float(released[name].min()) >= float(p.min()) - 1e-6 and float(released[name].max()) <= float(p.max()) + 1e-6


@pytest.mark.parametrize("name,bad", [("key-transform", {"block": 0}), ("passport", {"forge": "stolen"}),
                                      ("nnsplitter", {"n_weights": 0})])
def test_lock_parameters_are_checked(name, bad):
    with pytest.raises(UserError):
        get_defense(name)(**bad)

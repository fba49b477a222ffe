"""Model locks beyond CoreLocker (issue 23): key-based input transform, passport layers, NNSplitter.
Each test checks the lock's defining behaviour on a digits zoo model: the key holder keeps accuracy,
the released model (and a wrong or forged key) loses it."""

from __future__ import annotations

import pytest
import torch

from bench.attacks import get_attack
from bench.data.digits import load_digits_split
from bench.defenses import get_defense
from bench.defenses.locks import block_transform, conv_bn_pairs, draw_key
from bench.core.errors import UserError
from bench.models.adapter import ModelAdapter, weights_digest
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


@pytest.fixture(scope="module")
def passport(data):
    """The zoo ResNet under passports (10 epochs), its scores and the original's accuracy (one protect shared)."""
    train, test = data
    model = load_zoo_model("resnet-s0", progress=False)
    protected, acc = scores("passport", {"epochs": 10}, model, train, test)
    return model, protected, acc


def test_passport_forged_passport_collapses(data, passport):
    train, test = data
    model, protected, acc = passport
    assert len(conv_bn_pairs(model.module)) == 7  # stem, then (conv1, conv2, projection shortcut) per block
    assert acc["resnet-s0"] > accuracy(model, test) - 6, acc
    assert acc["resnet-s0[forged-passport]"] < acc["resnet-s0"] - 30, acc
    assert acc["resnet-s0[released]"] < 30, acc  # no passports at all: zero scale and bias
    assert all(float(n.p_gamma.abs().sum()) == 0 for n in protected.released.modules() if hasattr(n, "p_gamma"))


def test_every_lock_evaluation_is_its_own_model(data, passport):
    """The passports and the transform key are part of the weights digest: the key holder's, the released and
    the forged-passport (wrong-key) models are three models to the forward-pass cache, which keys outputs by
    digest (non-persistent buffers made all three one model, so a warm rerun read one's outputs for all)."""
    model, protected, _ = passport
    evaluations = get_defense("passport")(epochs=10).evaluations(protected, model, {})
    assert len({ev.adapter.digest for ev in evaluations}) == len(evaluations) == 3
    cnn = load_zoo_model("cnn-s0", progress=False)
    defense = get_defense("key-transform")(epochs=0, block=8, flip=True)
    evaluations = defense.evaluations(defense.protect(cnn, data[0], seed=0), cnn, {})
    assert len({ev.adapter.digest for ev in evaluations}) == len(evaluations) == 3


def test_forged_passport_finetuning_unlocks_what_plain_finetuning_cannot(data, passport):
    """DeepIPR's ambiguity attack as the fair fine-tuning attack on passports: zero passports leave every
    passport layer's scale and bias at zero, so plain fine-tuning gets no gradient and stays at chance; with
    passports forged from the attacker's images and fine-tuned with the weights, the same budget (10% of the
    data, 10 epochs) recovers most of the accuracy."""
    train, test = data
    model, protected, acc = passport

    def attacked(entry):
        module = get_attack(entry)(protected.released, model.preprocess, train, 0)
        return accuracy(ModelAdapter("attacked", module, model.preprocess, model.arch, model.source), test)

    plain = attacked({"name": "finetune", "fraction": 0.1})
    forged = attacked({"name": "forge-finetune", "fraction": 0.1})
    assert plain < 20, plain
    assert forged > plain + 30, (plain, forged)
    # weights frozen, only the forged passports learn: the weights carry the lock (below the key holder)
    assert attacked({"name": "forge-finetune", "fraction": 0.1, "train": "passports"}) < acc["resnet-s0"] - 30


def test_forged_finetuning_is_plain_finetuning_without_passport_layers(data):
    train, _ = data
    model = load_zoo_model("mlp-s0", progress=False)
    a = get_attack({"name": "finetune", "fraction": 0.05, "epochs": 2})(model.module, model.preprocess, train, 3)
    b = get_attack({"name": "forge-finetune", "fraction": 0.05, "epochs": 2})(model.module, model.preprocess, train, 3)
    assert weights_digest(a) == weights_digest(b) != weights_digest(model.module)
    with pytest.raises(UserError, match="train"):
        get_attack({"name": "forge-finetune", "train": "bn"})


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

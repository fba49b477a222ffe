"""Non-transferable learning (issue 23): NTL and CUTI-domain keep the source domain and destroy a target domain
that ordinary training transfers to; SOPHON keeps the target from being learned by fine-tuning; TransNTL
recovers a target an NTL model closed, where source fine-tuning with the same budget does not."""

from __future__ import annotations

import pytest
import torch

from bench.data.digits import load_digits_split
from bench.core.errors import UserError
from bench.fingerprint.training import build_arch
from bench.models.zoo import digits_preprocess
from bench.ntl.domains import DOMAINS, to_domain
from bench.ntl import attacks
from bench.ntl.methods import (_cuti_points, cuti_restyle, mmd, suppression_loss, train_cuti, train_ntl, train_sophon,
                               train_supervised)


def test_domains_are_deterministic_and_stay_in_range():
    x = torch.rand(4, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    idx = torch.arange(10, 14)
    for name in DOMAINS:
        y = to_domain(name, x, idx)
        assert y.shape == x.shape and float(y.min()) >= 0 and float(y.max()) <= 1
        assert torch.equal(y, to_domain(name, x, idx))
    assert torch.equal(to_domain("source", x), x) and not torch.equal(to_domain("contrast", x), x)
    with pytest.raises(UserError, match="unknown domain 'sepia'"):
        to_domain("sepia", x)


def test_mmd_separates_shifted_features():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(64, 8, generator=gen), torch.randn(64, 8, generator=gen)
    assert float(mmd(a, b)) < float(mmd(a, b + 3.0))


@pytest.fixture(scope="module")
def digits():
    pre = digits_preprocess()
    train, test = load_digits_split("train"), load_digits_split("test")
    return pre, train, test


def _acc(pre, m, x, y):
    with torch.no_grad():
        return 100 * float((m(pre(x)).argmax(1) == y).float().mean())


@pytest.fixture
def shifted(digits):
    """`shifted(domain)`: (target train images, target test images, fit) with the digits moved to `domain`;
    `fit(method, **kwargs)` trains a fresh seeded cnn with `method` (train_ntl, train_cuti, train_sophon) on the
    digits as the source and those target images (the source labels) for 10 epochs."""
    pre, train, test = digits

    def make(domain: str):
        target_train = to_domain(domain, train.images, train.indices)
        target_test = to_domain(domain, test.images, test.indices)

        def fit(method, **kwargs):
            torch.manual_seed(0)
            return method(build_arch("cnn"), pre, train.images, train.labels, target_train, train.labels, 10,
                          epochs=10, lr=1e-3, seed=0, **kwargs)

        return target_train, target_test, fit

    return make


def test_ntl_keeps_the_source_and_breaks_a_transferable_target(digits, shifted):
    pre, _, test = digits
    _, target_test, fit = shifted("contrast")

    def acc(m, x):
        return _acc(pre, m, x, test.labels)

    # alpha = 0: the same loop without the target term (ordinary training)
    plain, ntl = fit(train_ntl, alpha=0.0), fit(train_ntl, alpha=0.1)
    assert acc(plain, target_test) > 70  # ordinary training transfers to the contrast-halved digits
    assert acc(ntl, test.images) > acc(plain, test.images) - 8  # NTL keeps the source domain
    assert acc(ntl, target_test) < 25  # and falls to near chance on the target domain


@pytest.fixture(scope="module")
def plain_cnn(digits):
    pre, train, _ = digits
    torch.manual_seed(0)
    return train_supervised(build_arch("cnn"), pre, train.images, train.labels, epochs=10, lr=1e-3, seed=0)


def test_cuti_restyles_only_the_target_half_with_the_source_statistics():
    gen = torch.Generator().manual_seed(0)
    f = torch.rand(6, 4, 5, 5, generator=gen)
    torch.manual_seed(0)
    out = cuti_restyle(f)
    assert torch.equal(out[:3], f[:3]) and not torch.allclose(out[3:], f[3:])
    torch.manual_seed(0)  # the target half's new style is a function of the paired source image's style only
    g = f.clone()
    g[:3] = g[:3] + 0.5  # another source style
    assert not torch.allclose(cuti_restyle(g)[3:], out[3:])
    h = f.clone()
    h[:3] = h[:3].flip(-1)  # the same per-channel statistics, other content: the same restyled target
    torch.manual_seed(0)
    assert torch.allclose(cuti_restyle(h)[3:], out[3:], atol=1e-6)
    assert cuti_restyle(torch.rand(4, 8))[2:].shape == (2, 8)  # 2-D features (an MLP's hidden layer) too


def test_cuti_keeps_the_source_and_breaks_a_transferable_target(digits, shifted, plain_cnn):
    pre, _, test = digits
    _, target_test, fit = shifted("contrast")
    cuti = fit(train_cuti)
    assert all(not p._forward_hooks for p in _cuti_points(cuti))  # the generator is gone from the released model
    assert _acc(pre, plain_cnn, target_test, test.labels) > 70  # ordinary training transfers to the target
    assert _acc(pre, cuti, test.images, test.labels) > _acc(pre, plain_cnn, test.images, test.labels) - 8
    assert _acc(pre, cuti, target_test, test.labels) < 25  # near chance (10%)


def test_suppression_losses_reward_a_wrong_or_uniform_prediction():
    y = torch.tensor([0, 1])
    right, wrong, uniform = torch.tensor([[5.0, 0, 0], [0, 5.0, 0]]), torch.tensor([[0, 5.0, 0], [5.0, 0, 0]]), torch.zeros(2, 3)
    for kind in ("ice", "ice-code"):
        assert float(suppression_loss(wrong, y, kind)) < float(suppression_loss(right, y, kind))
    assert float(suppression_loss(uniform, y, "klu")) == pytest.approx(0, abs=1e-6)
    assert float(suppression_loss(right, y, "klu")) > 0.5


@pytest.mark.slow
def test_sophon_keeps_the_source_and_resists_target_finetuning(digits, shifted, plain_cnn):
    pre, train, test = digits
    target_train, target_test, fit = shifted("contrast")
    sophon = fit(train_sophon, loops=50)
    assert _acc(pre, sophon, test.images, test.labels) > _acc(pre, plain_cnn, test.images, test.labels) - 8

    def finetuned(m):
        return attacks.attack("target-ft", m, pre, source=(train.images, train.labels),
                              targets=[(target_train, train.labels)], seed=0)

    plain_ft, sophon_ft = (_acc(pre, finetuned(m), target_test, test.labels) for m in (plain_cnn, sophon))
    assert plain_ft > 80 and sophon_ft < plain_ft - 25  # fine-tuning on the target learns far less from SOPHON


@pytest.mark.slow
def test_transntl_recovers_a_target_an_ntl_model_closed(digits, shifted):
    pre, train, test = digits
    target_train, target_test, fit = shifted("heavy-noise")
    ntl = fit(train_ntl)
    closed = _acc(pre, ntl, target_test, test.labels)
    assert closed < 20  # NTL closed the target

    def attacked(entry):
        m = attacks.attack(entry, ntl, pre, source=(train.images, train.labels), targets=[(target_train, train.labels)],
                           seed=0)
        return _acc(pre, m, target_test, test.labels)

    assert _acc(pre, ntl, target_test, test.labels) == closed  # the attack adapted a copy
    trans = attacked({"name": "transntl", "epochs": 10})
    plain_ft = attacked({"name": "source-ft", "epochs": 10})  # the same source data and budget, no shifted copies
    assert trans > closed + 15 and trans > plain_ft + 15

"""Non-transferable learning (issue 23): NTL keeps the source domain and destroys a target domain that
ordinary training transfers to."""

from __future__ import annotations

import pytest
import torch

from bench.data.digits import load_digits_split
from bench.core.errors import UserError
from bench.fingerprint.training import build_arch
from bench.models.zoo import digits_preprocess
from bench.ntl.domains import DOMAINS, to_domain
from bench.ntl.methods import mmd, train_ntl


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


def test_ntl_keeps_the_source_and_breaks_a_transferable_target():
    pre = digits_preprocess()
    train, test = load_digits_split("train"), load_digits_split("test")
    target_train = to_domain("contrast", train.images, train.indices)
    target_test = to_domain("contrast", test.images, test.indices)

    def fit(alpha):
        torch.manual_seed(0)
        m = build_arch("cnn")
        return train_ntl(m, pre, train.images, train.labels, target_train, train.labels, 10, epochs=10, lr=1e-3,
                         seed=0, alpha=alpha)

    def acc(m, x):
        with torch.no_grad():
            return 100 * float((m(pre(x)).argmax(1) == test.labels).float().mean())

    plain, ntl = fit(0.0), fit(0.1)  # alpha = 0: the same loop without the target term (ordinary training)
    assert acc(plain, target_test) > 70  # ordinary training transfers to the contrast-halved digits
    assert acc(ntl, test.images) > acc(plain, test.images) - 8  # NTL keeps the source domain
    assert acc(ntl, target_test) < 25  # and falls to near chance on the target domain

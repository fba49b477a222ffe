"""Baselines of NE Table 3 (DP, FHE, ALGOSPEC) on tiny models over 8x8 digits, and the Table 3 report."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from baselines.algospec import AlgoSpec, Alternatives, ChebyshevStage
from baselines.report import REPORTED, measured, render_markdown
from bench.data.digits import load_digits_split
from bench.errors import UserError
from bench.models.adapter import ModelAdapter, Preprocess

PRE = Preprocess((0.3,), (0.3,), (1, 8, 8))


@pytest.fixture(scope="module")
def train():
    return load_digits_split("train", resolution=8)


@pytest.fixture(scope="module")
def test_split():
    return load_digits_split("test", resolution=8)


def tiny(*layers) -> ModelAdapter:
    torch.manual_seed(0)
    return ModelAdapter("tiny", nn.Sequential(*layers), PRE, "custom/tiny", "test")


def test_dp_meets_epsilon_and_replaces_batchnorm(train):
    pytest.importorskip("opacus", reason="optional extra dp not installed")
    from baselines.dp import DPSGD

    model = tiny(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(144, 10))
    defense = DPSGD(epsilon=3.0, epochs=1)
    protected = defense.protect(model, train, seed=0)
    cost = protected.cost
    assert cost["epsilon_achieved"] <= cost["epsilon_target"] + 1e-9
    assert cost["architecture_changed"] and "BatchNorm2d -> GroupNorm" in cost["notes"]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in protected.released.modules())
    other = tiny(nn.Flatten(), nn.Linear(64, 10))
    roles = [(e.label, e.role) for e in defense.evaluations(protected, model, {"other": other})]
    assert roles == [("tiny[dp-eps3]", "authorized"), ("other", "unauthorized")]


@pytest.fixture(scope="module")
def fhe_case(train):
    pytest.importorskip("tenseal", reason="optional extra fhe not installed")
    from baselines.fhe import FHE

    model = tiny(nn.Flatten(), nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 10))
    defense = FHE(samples=3, finetune_epochs=1, attacker_train=30)
    return defense, model, defense.protect(model, train, seed=0)


def test_fhe_decrypted_logits_match_plaintext(fhe_case, test_split):
    defense, model, protected = fhe_case
    x = test_split.images[:5]
    enc = defense.authorized(protected, model).predict(x)
    done = torch.isfinite(enc[:, 0])
    assert int(done.sum()) == 3  # the seeded subset, NaN elsewhere
    with torch.no_grad():
        plain = protected.released(PRE(x))
    assert torch.allclose(enc[done], plain[done], atol=0.05 * float(plain.abs().max()))
    assert protected.cost["time_per_sample_ms"] > 0 and protected.cost["ciphertext_in_bytes"] > 0


def test_fhe_attacker_without_key_is_near_chance(fhe_case, test_split):
    from baselines.fhe import Attacker, encrypt, make_context

    defense, model, protected = fhe_case
    ctx, layers = protected.key["context"], protected.key["layers"]
    attacker = Attacker(ctx, layers, protected.key["train"], defense.params, seed=0)
    x, y = PRE(test_split.images[:60]), test_split.labels[:60]
    guesses = []
    for xi in x:
        enc, _ = encrypt(ctx, layers, xi)
        wrong = torch.tensor(enc.decrypt())  # sanity: the owner decrypts correctly
        assert torch.allclose(wrong[:64].float(), xi.flatten(), atol=1e-3)
        guesses.append(attacker.guess(enc, enc.serialize()))
    acc = sum(int(g["centroid"] == int(t)) for g, t in zip(guesses, y)) / len(y)
    assert acc < 0.3  # chance is 0.1; 60 samples
    # decrypting with another secret key gives values unrelated to the plaintext
    garbage = torch.tensor(attacker.own_decrypt(encrypt(ctx, layers, x[0])[0].serialize()), dtype=torch.float64)[:64]
    assert (garbage - x[0].flatten().double()).abs().mean() > 10 * x[0].abs().mean()


def test_fhe_rejects_unsupported_architecture(train):
    pytest.importorskip("tenseal", reason="optional extra fhe not installed")
    from baselines.fhe import FHE

    model = tiny(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64, 10))
    with pytest.raises(UserError, match="cannot evaluate layer"):
        FHE().protect(model, train, seed=0)


def test_fhe_extrapolation_is_labelled():
    pytest.importorskip("tenseal", reason="optional extra fhe not installed")
    pytest.importorskip("timm")
    from baselines.fhe import extrapolate_fhe_cost

    out = extrapolate_fhe_cost("resnet18", resolution=32, ops_sampled=2)
    assert out["extrapolated"] is True and out["lower_bound"] is True
    assert out["flops_total"] > out["flops_first_layer"] > 0
    assert out["extrapolated_ms_per_image"] > out["first_layer_ms"] > 0


def test_algospec_round_trip(train, test_split):
    x = test_split.images[:20]
    release, stage = Alternatives(3, seed=1), ChebyshevStage(3)
    alt = release(x)
    assert torch.equal(alt, release(x)) and alt.min() >= 0 and alt.max() <= 1
    assert (alt - x).abs().mean() > 0.1  # the data changed ...
    assert torch.allclose(stage(alt), stage(x), atol=1e-4)  # ... but not for the polynomial
    model = tiny(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    defense = AlgoSpec(epochs=10, lr=3e-3)
    protected = defense.protect(model, train, seed=0)
    evals = defense.evaluations(protected, model, {"other": model})
    assert [e.role for e in evals] == ["authorized", "unauthorized"]
    auth = (evals[0].adapter.predict(test_split.images).argmax(1) == test_split.labels).float().mean()
    assert auth > 0.5
    with pytest.raises(UserError, match="odd"):
        AlgoSpec(order=4)


def test_table3_report_computes_protection_and_separates_reported():
    rows = [
        {"defense": "ne-patch", "params": {}, "role": "authorized", "metrics": {"top1": 97.0}, "cost": {"retraining": False}},
        {"defense": "ne-patch", "params": {}, "role": "unauthorized", "metrics": {"top1": 11.0}},
        {"defense": "dp", "params": {"epsilon": 3.0}, "role": "authorized", "metrics": {"top1": 80.0},
         "cost": {"retraining": True, "time_per_sample_ms": 0.5}},
        {"defense": "dp", "params": {"epsilon": 3.0}, "role": "unauthorized", "metrics": {"top1": 95.0}},
    ]
    table = measured(rows)
    assert table["NE"]["protection"] is True and table["DP (eps=3)"]["protection"] is False
    assert table["DP (eps=3)"]["unauthorized utility"] == 95.0
    text = render_markdown(rows)
    measured_part, reported_part = text.split("## Reported")
    assert "DP (eps=3)" in measured_part and "87.8%" not in measured_part
    assert "Meftah" in reported_part and all(r["source"] for r in REPORTED)

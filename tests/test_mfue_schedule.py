"""MFUE trigger generation: mimic snapshots one per epoch, the paper's schedule, the public code's schedule."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from bench.data.base import Split
from bench.errors import UserError
from bench.fingerprint import FINGERPRINTS as METHODS
from bench.fingerprint import mfue as MF
from bench.fingerprint import training as T
from bench.models.adapter import ModelAdapter, Preprocess
from bench.suite import load_suite

PRE = Preprocess((0.5,), (0.25,), (1, 8, 8))


def _tiny(n=40, seed=0):
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 4
    images = (labels.view(-1, 1, 1, 1) / 4 + 0.2 * torch.rand(n, 1, 8, 8, generator=gen)).clamp(0, 1)
    return Split("tiny", images, labels, torch.arange(n).numpy(), 4)


def _net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 4)).eval()


class Counting(nn.Module):
    """Records which model served each forward pass."""

    def __init__(self, inner, tag, log):
        super().__init__()
        self.inner, self.tag, self.log = inner, tag, log

    def forward(self, x):
        self.log.append(self.tag)
        return self.inner(x)


def test_mimic_snapshots_are_taken_once_per_epoch():
    data, source = _tiny(), ModelAdapter("src", _net(), PRE, "t/mlp", "test")
    snaps = MF.mimic_models(source, data, 3, 4 / 255, 2, 1e-2, seed=0)
    assert len(snaps) == 3
    for epochs in (1, 2):  # snapshot k is the model after exactly k epochs of adversarial fine-tuning
        after = T.adversarial_train(source.module, PRE, data, 4 / 255, epochs, 1e-2, 0, 2, "sgd")
        assert all(torch.equal(v, after.state_dict()[k]) for k, v in snaps[epochs - 1].state_dict().items())
    assert not torch.equal(snaps[0][1].weight, snaps[2][1].weight)
    assert not torch.equal(snaps[0][1].weight, source.module[1].weight)  # the source is never modified


def test_code_draws_one_model_per_round_never_the_last_snapshot():
    draws = MF.code_draws(10, 4000, torch.Generator().manual_seed(0))
    assert len(draws) == 4000 and set(draws) == set(range(10))  # 0 = source, 1..9 = snapshots; 10 never
    counts = torch.bincount(torch.tensor(draws))
    assert counts.min() > 300  # uniform: each of the 10 about 400 times


def test_code_schedule_rounds_run_steps_on_one_drawn_model():
    data = _tiny()
    log: list = []
    source = Counting(_net(0), 0, log)
    mimics = [Counting(_net(s), s, log) for s in (1, 2, 3)]
    x, y = data.images[:6], data.labels[:6]
    rounds, steps = 7, 3
    MF.code_triggers(source, mimics, PRE, x, y, 8 / 255, rounds, steps, 1 / 255, torch.Generator().manual_seed(1))
    assert len(log) == rounds * steps
    blocks = [log[i : i + steps] for i in range(0, len(log), steps)]
    assert all(len(set(b)) == 1 for b in blocks)  # each round: all its steps on one model
    assert len({b[0] for b in blocks}) > 1 and 3 not in {b[0] for b in blocks}  # several models; never the last


def test_code_schedule_starts_uniformly_in_the_ball_the_paper_from_the_sample():
    data, net = _tiny(), _net()
    x, y = data.images[:8].clamp(0.1, 0.9), data.labels[:8]
    eps = 8 / 255
    start = MF.code_triggers(net, [_net(1)], PRE, x, y, eps, 0, 10, 1 / 255, torch.Generator().manual_seed(0))
    delta = start - x
    assert delta.abs().max() <= eps + 1e-6 and delta.abs().mean() > eps / 4  # a random start, not x
    assert (delta > 0).any() and (delta < 0).any()
    assert torch.equal(MF.paper_triggers([net], PRE, x, y, eps, 0, 10, 1 / 255), x)  # Eq. 3: x_0 = x


def test_paper_schedule_descends_the_mean_over_all_mimics():
    data = _tiny()
    log: list = []
    mimics = [Counting(_net(s), s, log) for s in (1, 2, 3)]
    x, y = data.images[:8], data.labels[:8]
    adv = MF.paper_triggers(mimics, PRE, x, y, 8 / 255, 2, 5, 1 / 255)
    assert log == [1, 2, 3] * 10  # every step uses every mimic model
    assert (adv - x).abs().max() <= 8 / 255 + 1e-6

    @torch.no_grad()
    def mean_loss(z):
        return float(sum(nn.functional.cross_entropy(m.inner(PRE(z)), y) for m in mimics) / 3)

    assert mean_loss(adv) < mean_loss(x)  # unlearnable: the loss over F^mmc goes down


def test_trigger_budget_drives_the_optimisation():
    """More rounds lower the source loss of the triggers further (the old code ran 10 steps in all)."""
    data = _tiny()
    source = ModelAdapter("src", T.fit(_net(), T.ce_loss(PRE), data, 3, 1e-2, 0), PRE, "t/mlp", "test")
    losses = {}
    for rounds in (0, 1, 6):
        m = METHODS["mfue-w"](n_triggers=8, n_mimic=2, mimic_steps=1, trigger_rounds=rounds, trigger_steps=2,
                              trigger_step=0.5 / 255)
        fp = m.fingerprint(source, data, seed=0)
        losses[rounds] = float(fp.reference["loss"].mean())
        assert fp.summary["trigger_updates"] == rounds * 2 and fp.summary["schedule"] == "paper"
    assert losses[6] < losses[1] < losses[0]


@pytest.mark.parametrize("params,match", [({"schedule": "adam"}, "unknown schedule"),
                                          ({"trigger_rounds": -1}, "trigger_rounds must be a whole number"),
                                          ({"n_mimic": 0}, "n_mimic must be a whole number >= 1")])
def test_bad_schedule_parameters_are_user_errors(params, match):
    with pytest.raises(UserError, match=match):
        METHODS["mfue-w"](**params)


def test_digits_suite_runs_a_reduced_budget_by_default_and_the_paper_budget_in_the_full_tier():
    entries = [d for d in load_suite("fingerprint-digits").defenses if d.name.startswith("mfue")]
    full = [d for d in entries if d.tier == "full"]
    assert full and all(d.params["trigger_rounds"] == 2000 for d in full)
    assert {v for d in full for v in d.sweep.get("schedule", [])} == {"paper", "code"}
    assert all(d.params.get("trigger_rounds", 2000) < 2000 for d in entries if d.tier == "default")
    assert all(d.params.get("n_mimic", 10) == 10 and "mimic_epochs" not in d.params for d in entries)

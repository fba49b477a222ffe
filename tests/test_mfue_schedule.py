"""MFUE trigger generation: mimic snapshots one per epoch, the paper's schedule, the public code's schedule."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from bench.data.base import Split
from bench.core.errors import UserError
from bench.core.types import Cell, Provenance, Row
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


def test_digits_suites_run_a_reduced_budget_on_the_board_and_the_paper_budget_in_the_mfue_suite():
    board = [d for d in load_suite("fingerprint-digits").defenses if d.name.startswith("mfue")]
    assert board and all(d.params.get("trigger_rounds", 2000) < 2000 for d in board)
    assert {d.params.get("schedule", "paper") for d in board if d.tier == "default"} == {"paper", "code"}
    mfue = load_suite("fingerprint-digits-mfue").defenses
    budget = [d for d in mfue if d.params.get("trigger_rounds") == 2000]
    assert {(d.params.get("schedule", "paper"), d.tier) for d in budget if d.name == "mfue-w"} == {
        ("code", "default"), ("paper", "full")}  # the paper schedule's 200,000 gradients: full tier only
    assert all(d.params.get("n_mimic", 10) == 10 and "mimic_epochs" not in d.params for d in board + mfue)


def _pixel_model(target: float):
    """One pixel; class 0's logit peaks at `target`: loss descent pulls the pixel towards it."""
    class Pull(nn.Module):
        def forward(self, z):
            p = z.flatten(1)[:, :1]
            return torch.cat([-50 * (p - target) ** 2, torch.zeros_like(p)], 1)
    return Pull()


def test_code_clamping_leaves_a_pixel_pushed_past_the_image_range_stuck():
    """PGD_uf clips delta to [-eps, eps] only and feeds clip(x + delta, 0, 1): a pixel stepped past 1 gets
    no gradient through the clip and stays at 1. The former projection (clamp = "project") puts it back
    on 1, where the model's gradient sends it down again (regression: the harness only projected)."""
    x, y, model = torch.full((1, 1, 1, 1), 0.995), torch.zeros(1, dtype=torch.long), _pixel_model(0.998)
    code = MF.paper_triggers([model], lambda z: z, x, y, 8 / 255, 1, 2, 0.01)
    project = MF.paper_triggers([model], lambda z: z, x, y, 8 / 255, 1, 2, 0.01, clamp="project")
    assert float(code) == 1.0
    assert float(project) == pytest.approx(0.99)
    assert METHODS["mfue-w"]().params["clamp"] == "code"  # the paper is silent: the code's clipping is the default


def _constant(label: int):
    class Constant(nn.Module):
        def forward(self, z):
            out = 0 * z.flatten(1)[:, :4]  # answers do not depend on the input (but keep a gradient path)
            return out + nn.functional.one_hot(torch.tensor(label), 4).float()
    return ModelAdapter("const", Constant(), PRE, "t/const", "test")


@pytest.mark.parametrize("probe", ["gradient", "gaussian"])
def test_mfue_b_drops_triggers_whose_bisection_fails_by_default(probe):
    """The public code's MC_estimate skips a trigger when alpha_determine finds no alpha (the paper does not
    say); bisection_fail = "keep" is the former harness rule. A source that answers class 0 everywhere: probes
    of class-0 triggers never cross the boundary (bisection fails), those of other classes always do."""
    data = _tiny()
    triggers, y = data.images[:8], data.labels[:8]
    source = _constant(0)
    m = METHODS["mfue-b"](n_probes=8, probe=probe)
    assert m.params["bisection_fail"] == "drop"
    if probe == "gaussian":  # the code's band [0.4, 0.6] is never met by a constant model: every trigger fails
        expected = torch.zeros(8, dtype=torch.bool)
    else:
        expected = y != 0
    ref = m.reference(source, triggers, y, seed=0)
    assert torch.equal(ref["kept"], expected) and len(ref["loss"]) == len(ref["alpha"]) == int(expected.sum())
    kept = METHODS["mfue-b"](n_probes=8, probe=probe, bisection_fail="keep").reference(source, triggers, y, seed=0)
    assert bool(kept["kept"].all()) and len(kept["loss"]) == 8


def test_mfue_b_fingerprint_keeps_only_the_triggers_it_can_verify():
    data = _tiny()
    source = ModelAdapter("src", T.fit(_net(), T.ce_loss(PRE), data, 3, 1e-2, 0), PRE, "t/mlp", "test")
    m = METHODS["mfue-b"](n_triggers=8, n_mimic=1, mimic_steps=1, trigger_rounds=1, trigger_steps=1, n_probes=16,
                          probe="gaussian")
    fp = m.fingerprint(source, data, seed=0)
    n = fp.summary["triggers"]
    assert len(fp.queries) == len(fp.reference["labels"]) == len(fp.reference["alpha"]) == n
    if n:  # every kept trigger met the code's band on the source
        probes = m._probes(fp.queries, fp.reference["deltas"], fp.reference["alpha"])
        acc = m._accuracy(source, probes, fp.reference["labels"])
        assert bool(((acc >= 0.4) & (acc <= 0.6)).all())
    assert m.verify(fp, MF.SuspectOracle(source, labels_only=True)) in ((1.0,) if n else (0.0,))


def test_ablations_remove_one_component_each():
    data = _tiny()
    source = ModelAdapter("src", T.fit(_net(), T.ce_loss(PRE), data, 3, 1e-2, 0), PRE, "t/mlp", "test")
    clean = METHODS["mfue-w"](n_triggers=8, n_mimic=2, mimic_steps=1, trigger_rounds=0)
    before = len(MF._MIMICS)
    fp = clean.fingerprint(source, data, seed=3)
    x, _ = MF.select_samples(source, data, 8, 3)
    assert torch.equal(fp.queries, x) and len(MF._MIMICS) == before  # clean samples, no mimic models trained
    for match in ("log-ratio", "label"):  # the source itself scores 1 under every rule
        m = METHODS["mfue-w"](n_triggers=8, n_mimic=2, mimic_steps=1, trigger_rounds=1, trigger_steps=2, match=match)
        assert m.verify(m.fingerprint(source, data, seed=0), MF.SuspectOracle(source)) == pytest.approx(1.0)
    assert MF.log_ratio_score(torch.tensor([0.1, 0.2]), torch.tensor([0.2, 0.2])) == pytest.approx((0.5 + 1) / 2)
    with pytest.raises(UserError, match="needs schedule"):
        METHODS["mfue-w"](mimics="source", schedule="code")


def test_source_only_triggers_never_touch_a_mimic_model():
    data = _tiny()
    log: list = []
    net = T.fit(_net(), T.ce_loss(PRE), data, 2, 1e-2, 0)
    source = ModelAdapter("src", Counting(net, "src", log), PRE, "t/mlp", "test")
    m = METHODS["mfue-w"](n_triggers=6, n_mimic=2, mimic_steps=1, trigger_rounds=2, trigger_steps=1, mimics="source")
    before = len(MF._MIMICS)
    m.triggers(source, data, seed=5)
    assert len(MF._MIMICS) == before


@pytest.mark.parametrize("params,label", [
    ({"schedule": "code"}, "mfue-w [code schedule]"), ({}, "mfue-w"),
    ({"clamp": "project", "match": "log-ratio"}, "mfue-w [projected clamp; ablation: log-ratio match]")])
def test_public_code_options_carry_their_own_row_label(params, label):
    """Regression: code-schedule rows were labelled plain "mfue-w" in tables, boards and CSV."""
    from bench.reports.boards import build_boards, row_name
    from bench.reports.fingerprint import summaries
    from bench.reports.tables import results_frame
    assert row_name("mfue-w", params) == label
    assert row_name("mfue-b", {"schedule": "code", "bisection_fail": "keep"}) == (
        "mfue-b [code schedule; keeps failed bisections]")
    cell = Cell(suite="s", defense="mfue-w", params=params, point={}, release="verify", attack="none",
                authorized="src", evaluated="", trial=0)
    r = Row.build(protocol="verify", cell=cell, key="k", suite_digest="0" * 16, role="summary", arch={}, n=44,
                  provenance=Provenance(model_digest=None, authorized_digest=None, input_digest=None,
                                        defense_summary=None, versions={}, git="g", device="cpu", seed=0, wall_s=0.1,
                                        cache={}, forwards=1),
                  metrics={"auc": 0.8, "auc_ci": [0.7, 0.9], "tpr@1%fpr": 0.3, "tpr@1%fpr_ci": [0.1, 0.5],
                           "tpr@5%fpr": 0.4, "score_pos_mean": 0.2, "score_neg_mean": 0.1, "n_positive": 24,
                           "n_negative": 20}).to_json()
    (board,) = build_boards([r], {"ownership": ()})
    assert board.rows[0].name == label
    s = summaries([r])
    assert s["label"].iloc[0] == label and s["method"].iloc[0].startswith(label)
    assert results_frame([r])["label"].iloc[0] == ("" if label == "mfue-w" else label)

"""Unlearnable examples (bench.unlearnable, the train-on-data protocol): each method's defining behaviour at
small scale, the L-inf budget, determinism, parameter validation, and plan/run/resume through `authbench run`."""

from __future__ import annotations

import json

import numpy as np

import pytest
import torch

from bench.cli import main
from bench.data import load_dataset
from bench.data.base import Split
from bench.defenses import get_defense, list_defenses
from bench.core.errors import UserError
from bench.core.results import read_rows
from bench.attacks import ATTACKS
from bench.unlearnable.countermeasures import get_countermeasure, top1, train_victim
from bench.unlearnable.methods import split_norm

EPS = 32 / 255  # the digits budget of suites/unlearnable-digits.toml
SMALL = {  # reduced crafting settings (seconds on one CPU thread)
    "em": {"eps": EPS, "step_size": EPS / 5, "steps": 3, "train_steps": 10, "max_rounds": 1, "source": "fhe"},
    "rem": {"eps": EPS, "rho": EPS / 2, "step_size": EPS / 5, "steps": 2, "atk_steps": 1, "samples": 1,
            "train_steps": 4, "source": "fhe"},
    "tap": {"eps": EPS, "steps": 20, "tau": 0.1, "restarts": 1, "source": "mlp", "source_epochs": 5},
    "lsp": {"eps": EPS, "projection": "linf"},
}


def subset(split: Split, n: int) -> Split:
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(len(split.labels), generator=g)[:n].sort().values
    return Split(split.name, split.images[idx], split.labels[idx], split.indices[idx], split.num_classes)


@pytest.fixture(scope="module")
def digits():
    return subset(load_dataset("digits", "train"), 300), load_dataset("digits", "test")


def test_every_method_is_registered_with_its_citation():
    listed = list_defenses()
    for name, venue in (("em", "ICLR 2021"), ("rem", "ICLR 2022"), ("tap", "NeurIPS 2021"), ("lsp", "KDD 2022")):
        assert name in listed and venue in listed[name], (name, listed.get(name))
        assert venue in get_defense(name).__doc__
    assert "clean-data" in listed


@pytest.mark.parametrize("name", sorted(SMALL))
def test_a_method_stays_within_eps_and_is_deterministic_under_its_seed(name, digits):
    train, _ = digits
    small = subset(train, 120)
    a = get_defense(name)(**SMALL[name]).protect_data(small, 3)
    b = get_defense(name)(**SMALL[name]).protect_data(small, 3)
    moved = (a.images - small.images).abs()
    assert float(moved.max()) <= EPS + 1e-6 and a.cost["linf"] <= EPS + 1e-6
    assert float(moved.max()) > EPS / 4  # it perturbs
    assert a.images.min() >= 0 and a.images.max() <= 1
    assert torch.equal(a.images, b.images)
    c = get_defense(name)(**SMALL[name]).protect_data(small, 4)
    assert not torch.equal(a.images, c.images)  # another seed, other noise


def test_lsp_default_is_the_codes_l2_projection(digits):
    train, _ = digits
    small = subset(train, 50)
    out = get_defense("lsp")().protect_data(small, 0)  # eps 6/255, L2 radius eps * sqrt(d), before clipping
    radius = 6 / 255 * small.images[0].numel() ** 0.5
    norms = (out.images - small.images).flatten(1).norm(dim=1)
    assert float(norms.max()) <= radius + 1e-4 and float(norms.mean()) > radius / 4


def test_em_noise_minimises_the_source_models_error(digits):
    """EM's defining property: the source model's error on the protected data is far below its error on the
    clean data (the noise is what the model learned, not the digits)."""
    train, _ = digits
    out = get_defense("em")(**SMALL["em"]).protect_data(train, 0)
    assert out.cost["source_error"] + 0.2 < out.cost["source_clean_error"], out.cost


def test_tap_examples_are_targeted_adversarial_for_the_crafting_model(digits):
    train, _ = digits
    out = get_defense("tap")(**SMALL["tap"]).protect_data(train, 0)
    # the crafting model learned the digits, and the poisons push it towards y + 1 far more often than clean
    # images are mistaken at all (1 - clean accuracy bounds how often a clean image is predicted y + 1)
    assert out.cost["source_clean_acc"] > 0.8, out.cost
    assert out.cost["target_hit"] > 2 * (1 - out.cost["source_clean_acc"]), out.cost


def test_rem_noise_lowers_the_adversarially_trained_source_models_error(digits):
    train, _ = digits
    out = get_defense("rem")(**{**SMALL["rem"], "train_steps": 8}).protect_data(train, 0)
    assert out.cost["source_error"] < out.cost["source_clean_error"], out.cost


def test_a_model_trained_on_protected_digits_scores_far_below_one_trained_on_clean_digits(digits):
    train, test = digits
    norm = split_norm(train)
    none = get_countermeasure("none")

    def score(images):
        data = Split(train.name, images, train.labels, train.indices, train.num_classes)
        return top1(train_victim("fhe", data, norm, none, 8, 3e-3, 0), norm, test.images, test.labels)

    clean = score(train.images)
    protected = score(get_defense("lsp")(**SMALL["lsp"]).protect_data(train, 0).images)
    assert clean > 60 and protected < clean - 10, (clean, protected)


@pytest.mark.parametrize("params", [{"eps": 2.0}, {"mode": "pixelwise"}, {"source": "alexnet"}, {"stepz": 3}])
def test_bad_method_parameters_are_user_errors(params):
    with pytest.raises(UserError):
        get_defense("em")(**params)


def test_countermeasures_are_attacks_of_the_one_registry_and_reuse_its_preprocessing():
    described = ATTACKS.describe()
    for name in ("none", "jpeg", "bdr", "grayscale", "cutout", "mixup", "adv-train"):
        assert name in described
    assert "ICML 2023" in described["bdr"] and "ICLR 2018" in described["mixup"]  # listed with their papers
    with pytest.raises(UserError, match="unknown attack"):
        get_countermeasure("blur-the-data")
    with pytest.raises(UserError):
        get_countermeasure({"name": "jpeg", "quality": 0})
    with pytest.raises(UserError, match="train-on-data protocol trains under input attacks"):
        get_countermeasure("finetune")
    x = torch.rand(4, 1, 8, 8)
    assert set(get_countermeasure({"name": "bdr", "bits": 1}).prepare(x, 0).unique().tolist()) <= {0.0, 1.0}
    # ISS JPEG is the shared JPEG attack, applied once to the training images
    assert torch.equal(get_countermeasure({"name": "jpeg", "quality": 10}).prepare(x, 0),
                       ATTACKS.get("jpeg")(quality=10)(x, 0))
    # a random input attack is an augmentation: not applied up front, drawn anew for every batch
    cutout = get_countermeasure({"name": "cutout", "low": 0.5, "high": 0.5})
    assert torch.equal(cutout.prepare(x, 0), x)
    seen = []

    def model(t):
        seen.append(t.clone())
        return t.flatten(1)[:, :10]

    ones, y, norm, gen = torch.ones(4, 1, 8, 8), torch.zeros(4, dtype=torch.long), split_norm(train_like()), torch.Generator().manual_seed(0)
    cutout.loss(model, norm, ones, y, gen)
    cutout.loss(model, norm, ones, y, gen)
    holes = [(t != t.max()).sum((1, 2, 3)) for t in seen]
    assert all(int(h.min()) == 16 for h in holes)  # a 4x4 hole in every image
    assert not torch.equal(seen[0], seen[1])  # at other places in the next batch


def train_like():
    return Split("t", torch.rand(8, 1, 8, 8), torch.zeros(8, dtype=torch.long), np.arange(8), 10)


SUITE = """[suite]
name = "unlearnable-tiny"
seed = 0

[data]
dataset = "digits"
split = "test"
subset = 100

[models]
authorized = ["zoo:fhe-s0"]

[[defenses]]
name = "clean-data"
archs = ["fhe", "mlp"]
epochs = 1
attacks = ["none", { name = "bdr", bits = 2 }]

[[defenses]]
name = "lsp"
params = { eps = 0.125, projection = "linf" }
archs = ["fhe", "mlp"]
epochs = 1
attacks = ["none", { name = "bdr", bits = 2 }]
EXTRA
[standard_attacks]
train-on-data = [{ name = "bdr", bits = 2 }]
"""


def _run(args, capsys):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_protocol_plans_runs_resumes_and_ranks(tmp_path, capsys):
    suite = tmp_path / "u.toml"
    suite.write_text(SUITE.replace("EXTRA", ""))
    base = ["--threads", "1", "--no-progress", "--cache-dir", tmp_path / "cache"]
    out, rep = tmp_path / "run", tmp_path / "rep"
    code, text, err = _run(["run", suite, "--out", out, "--reports", rep, *base], capsys)
    assert code == 0, err
    mine = [r for r in read_rows(out) if r["protocol"] == "train-on-data"]
    assert len(mine) == 2 * 2 * 2  # (clean, lsp) x 2 countermeasures x 2 archs
    assert all(0 <= r["metrics"]["top1"] <= 100 for r in mine)
    assert {r["evaluated"] for r in mine} == {"fhe", "mlp"}
    assert "Unlearnable examples (test top-1" in text  # its board's glance in the run summary
    code, text, err = _run(["run", suite, "--out", out, "--reports", rep, *base], capsys)
    assert code == 0 and "0 run" in text, text
    boards = [b for b in json.loads((rep / "boards.json").read_text())["boards"] if b["key"]["protocol"] == "train-on-data"]
    assert len(boards) == 1 and boards[0]["headline"] == "worst_top1"
    assert (rep / "unlearnable.md").is_file()


@pytest.mark.parametrize("extra, says", [
    ('[[defenses]]\nname = "em"\narchs = ["fhe"]\npsnr = [10]\n', "psnr"),
    ('[[defenses]]\nname = "em"\narchs = ["alexnet"]\n', "archs"),
    ('[[defenses]]\nname = "em"\nattacks = ["blur-the-data"]\n', "blur-the-data"),
    ('[[defenses]]\nname = "em"\nparams = { eps = 3 }\n', "eps"),
    ('[[defenses]]\nname = "noise"\nattacks = ["bdr"]\narchs = ["fhe"]\n', "archs"),
])
def test_a_bad_entry_is_a_one_line_error(tmp_path, capsys, extra, says):
    suite = tmp_path / "u.toml"
    suite.write_text(SUITE.replace("EXTRA", extra))
    code, text, err = _run(["run", suite, "--out", tmp_path / "run", "--threads", "1", "--no-progress",
                            "--cache-dir", tmp_path / "cache"], capsys)
    assert code == 2 and says in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err


def test_the_shipped_suite_plans_every_method_and_countermeasure(tmp_path, capsys):
    code, text, err = _run(["run", "unlearnable-digits", "--plan", "--out", tmp_path / "run", "--threads", "1",
                            "--no-progress", "--cache-dir", tmp_path / "cache"], capsys)
    assert code == 0, err
    # 5 entries x 6 countermeasures x 3 families + EM at 8/255 (standard training, 3 families) + the clean baseline
    assert "cells to run: 94" in text, text
    for group in ("clean-data|0", "em|0", "rem|0", "tap|0", "lsp|0"):
        assert group in text

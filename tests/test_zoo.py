"""The embedded digits zoo and the default suite's shape."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.data.digits import load_digits_split
from bench.models.zoo import FAMILIES, load_zoo_model, test_accuracy as zoo_accuracy
from conftest import make_engine
from bench.suite import load_suite

ROOT = Path(__file__).resolve().parent.parent


def test_split_is_fixed_stratified_and_in_range():
    train, test = load_digits_split("train"), load_digits_split("test")
    assert len(train.labels) + len(test.labels) == 1797 and len(test.labels) == 540
    assert set(train.indices).isdisjoint(test.indices)
    assert tuple(test.images.shape[1:]) == (1, 32, 32)
    assert float(test.images.min()) >= 0.0 and float(test.images.max()) <= 1.0
    all_counts = train.labels.bincount() + test.labels.bincount()
    fractions = test.labels.bincount() / all_counts
    assert float((fractions - 0.3).abs().max()) < 0.01  # stratified: every class 30% in test
    assert load_digits_split("test").identity == test.identity


@pytest.mark.parametrize("family", list(FAMILIES))
def test_zoo_family_is_well_trained_and_cached(family):
    model = load_zoo_model(f"{family}-s0", progress=False)
    assert zoo_accuracy(model) >= 95.0
    again = load_zoo_model(f"{family}-s0", progress=False)  # from the cache: same weights
    assert again.digest == model.digest


def test_seeds_give_different_weights():
    a, b = load_zoo_model("mlp-s0", epochs=2, progress=False), load_zoo_model("mlp-s1", epochs=2, progress=False)
    assert a.arch == b.arch and a.digest != b.digest


def test_default_suite_plans_every_cell():
    suite = load_suite(None)
    assert suite.name == "digits"
    runner = make_engine(suite, ROOT / "runs" / "never-written", progress=False)
    models = len(suite.authorized)
    data_defenses = [d for d in suite.defenses if d.name in ("ne-patch", "ne-operator", "noise") and d.tier == "default"]
    jobs = sum(len(d.psnr) * len(d.release) * len(d.attacks) * (len(d.models) or models) for d in data_defenses)
    assert sum(len(j.cells) for j in runner.jobs if j.protocol == "input") == models + jobs * models
    model_jobs = [j for j in runner.jobs if j.protocol == "model"]
    assert {j.defense for j in model_jobs} == {"corelocker", "dp", "fhe", "algospec"}
    assert len({j.key for j in model_jobs}) == len(model_jobs)
    assert {j.authorized for j in model_jobs if j.defense == "fhe"} == {"fhe-s0"}  # an entry-only model
    assert min(min(d.psnr) for d in suite.defenses) <= -20 and max(max(d.psnr) for d in suite.defenses) >= 40
    assert {"ne-patch", "ne-operator", "noise"} <= {d.name for d in suite.defenses}


def test_checked_in_reference_leaderboard_is_a_measured_leaderboard():
    ref = json.loads((ROOT / "reports" / "leaderboards" / "digits.json").read_text())
    assert ref["kind"] == "authbench-leaderboard" and ref["provenance"]["suite"] == "digits"
    assert ref["provenance"]["git"] not in ("", "unknown")
    keys = {r["key"] for r in ref["rows"]}
    assert len(keys) == len(ref["rows"])
    data_rows = [r for r in ref["rows"] if r["release"] != "model"]
    assert len([r for r in data_rows if r["attack"] == "none"]) == 3 * 7 * 3  # 3 defenses x 7 PSNR x 3 formats
    attacked = {r["attack"].split("(")[0] for r in data_rows if r["attack"] != "none"}
    assert attacked == {"jpeg", "crop", "reconstruct", "project", "adapt"}  # NE's attacks, the projection included
    assert {r["defense"] for r in ref["rows"]} == {"ne-patch", "ne-operator", "noise", "corelocker", "dp", "fhe", "algospec"}

"""References with measured tolerances, end to end on a tiny suite: freeze (2 trials of the trained
cells), check against itself, shifted values, unlike runs refused, --allow-subset, zero cells, the
fingerprint board, JSON / JUnit / GitHub Actions outputs, and the [check] trials knob."""

from __future__ import annotations

import copy
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import pytest

from bench.attacks import ATTACKS, get_attack
from bench.cli import main
from bench.reports.entries import entry_schema
from bench.defenses import DEFENSES
from bench.core.errors import UserError
from bench.reports.check import check, load_reference
from bench.reports.fingerprint import fingerprint_board
from bench.reports.reference import STD_FACTOR, Tolerances, freeze, reference_from_rows
from bench.core.results import read_rows
from bench.suite import load_suite
from conftest import make_engine

ROOT = Path(__file__).resolve().parent.parent
RECON = '{ name = "reconstruct", target = "noise2noise", epochs = 1, width = 8, depth = 2, samples = 64 }'
TINY = f"""[suite]
name = "tiny"
description = "tiny check suite: 3 pinned zoo models, one inference-only and one trained attack"
seed = 0

[data]
dataset = "digits"
split = "test"
subset = 64

[models]
authorized = ["zoo:mlp-s0", "zoo:cnn-s0", "zoo:vit-s0"]

[[defenses]]
name = "noise"
psnr = [0]
release = ["float"]
attacks = ["none", {RECON}]

[check]
trials = 2
default_tolerance = 1.0
"""
INFERENCE_KEY = "noise|defaults|psnr=0|true|float|none"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny suite run once, and its frozen reference."""
    root = tmp_path_factory.mktemp("tiny")
    suite = root / "tiny.toml"
    suite.write_text(TINY)
    run = root / "run"
    assert main(["run", str(suite), "--out", str(run), "--reports", str(root / "reports"), "--no-progress",
                 "--threads", "1"]) == 0
    ref = root / "ref.json"
    assert main(["leaderboard", "freeze", str(run), "--out", str(ref), "--suite", str(suite)]) == 0
    return {"root": root, "suite": suite, "run": run, "ref": ref, "rows": read_rows(run)}


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def shifted(rows, *, attack_prefix: str, delta: float, evaluated: str = "mlp-s0"):
    """Copy of rows with the authorized cell of `evaluated` under the attack moved by delta (every trial)."""
    rows = copy.deepcopy(rows)
    for r in rows:
        if r["defense"] == "noise" and r["attack"].startswith(attack_prefix) and r["authorized"] == r["evaluated"] == evaluated:
            r["metrics"]["top1"] += delta
    return rows


def test_freeze_records_spread_trials_and_the_rule(tiny):
    data = json.loads(tiny["ref"].read_text())
    schema = json.loads((ROOT / "docs" / "reference.schema.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(data)
    assert data["suite"] == "tiny" and data["models"] == ["cnn-s0", "mlp-s0", "vit-s0"]
    assert data["suite_digest"] == tiny["rows"][0]["suite_digest"] and "max(3 x std" in data["rule"]
    cells = data["cells"]
    exact = [c for c in cells if not c["trained"]]
    trained = [c for c in cells if c["trained"]]
    assert {c["key"] for c in exact} == {INFERENCE_KEY} and len(exact) == 5
    assert all(c["tolerance"] == 0 and c["n_trials"] == 1 and c["std"] is None for c in exact)
    assert len(trained) == 5 and all(c["key"].startswith("noise|defaults|psnr=0|true|float|reconstruct(") for c in trained)
    for c in trained:
        assert c["n_trials"] == 2 and c["std"] is not None
        assert c["tolerance"] == pytest.approx(max(STD_FACTOR * c["std"], 1.0))
    # the per-trial boards are what the spread comes from: two trials of the reconstruction rows
    assert sorted({r["trial"] for r in tiny["rows"] if r["attack"].startswith("reconstruct")}) == [0, 1]
    assert {r["trial"] for r in tiny["rows"] if r["attack"] == "none"} == {0}


def test_freeze_writes_the_boards_and_one_entry_per_ranked_row(tiny, tmp_path):
    """The reference carries the boards `authbench rank` places new rows on, and `--entries` writes the
    RobustBench-style entry of every ranked row (docs/entry.schema.json)."""
    out, entries = tmp_path / "ref.json", tmp_path / "entries"
    assert main(["leaderboard", "freeze", str(tiny["run"]), "--out", str(out), "--suite", str(tiny["suite"]),
                 "--entries", str(entries)]) == 0
    boards = json.loads(out.read_text())["boards"]
    ranked = [r for b in boards for r in b["rows"] if r.get("rank")]
    files = sorted(entries.glob("tiny/*/*.json"))
    assert ranked and len(files) == len(ranked)
    for f in files:
        entry = json.loads(f.read_text())
        jsonschema.validate(entry, entry_schema())
        assert entry["measured"]["rank"] is not None and entry["provenance"]["models"]


def test_check_passes_against_itself_with_json_and_junit(tiny, tmp_path, capsys):
    junit = tmp_path / "check.xml"
    assert main(["check", str(tiny["run"]), "--against", str(tiny["ref"]), "--format", "json",
                 "--junit", str(junit)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is True and out["compared"] == 10 and out["regressions"] == 0
    assert {c["status"] for c in out["cells"]} == {"ok"}
    suite = ET.parse(junit).getroot()
    assert suite.tag == "testsuite" and suite.get("tests") == "10" and suite.get("failures") == "0"
    assert len(suite.findall("testcase")) == 10 and not suite.findall(".//failure")


def test_a_shifted_inference_only_value_fails_exactly(tiny, tmp_path, capsys, monkeypatch):
    fresh = write_rows(tmp_path / "fresh", shifted(tiny["rows"], attack_prefix="none", delta=-1.0))
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    junit = tmp_path / "check.xml"
    assert main(["check", str(fresh), "--against", str(tiny["ref"]), "--junit", str(junit)]) == 1
    out = capsys.readouterr().out
    assert f"REGRESSION: {INFERENCE_KEY} authorized_top1: reference" in out and "tolerance 0," in out
    assert f"::error title=authbench check::{INFERENCE_KEY} authorized_top1" in out
    failed = ET.parse(junit).getroot().findall(".//testcase[failure]")
    assert {(t.get("classname"), t.get("name")) for t in failed} == {
        (f"leaderboard.{INFERENCE_KEY}", m) for m in ("authorized_top1", "retained", "attacked_gap")}


def test_a_trained_cell_passes_within_its_measured_tolerance_and_fails_beyond(tiny, tmp_path):
    ref = load_reference(tiny["ref"])
    small = reference_from_rows(shifted(tiny["rows"], attack_prefix="reconstruct", delta=-0.5), Tolerances())
    assert check(small, ref).ok  # -0.5 / 3 models: inside every measured tolerance
    large = reference_from_rows(shifted(tiny["rows"], attack_prefix="reconstruct", delta=-60.0), Tolerances())
    result = check(large, ref)
    assert not result.ok and any("reconstruct(" in line and "attacked_gap" in line for line in result.regressions)
    assert not any(line.startswith(INFERENCE_KEY) for line in result.regressions)


def test_another_model_set_or_suite_digest_is_refused_unless_allow_subset(tiny, tmp_path, capsys):
    rows = [r for r in tiny["rows"] if "vit-s0" not in (r["authorized"], r["evaluated"])]
    fresh = write_rows(tmp_path / "two", rows)
    assert main(["check", str(fresh), "--against", str(tiny["ref"])]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model set (2 vs 3 models: lacks vit-s0)" in err[0] and "--allow-subset" in err[0]
    assert main(["check", str(fresh), "--against", str(tiny["ref"]), "--allow-subset",
                 "--default-tolerance", "100"]) == 0
    assert "not like-for-like (--allow-subset): model set" in capsys.readouterr().out
    other = copy.deepcopy(tiny["rows"])
    for r in other:
        r["suite_digest"] = "0" * 16
    assert main(["check", str(write_rows(tmp_path / "digest", other)), "--against", str(tiny["ref"])]) == 2
    assert "suite digest 000000000000 vs the reference's" in capsys.readouterr().err


def test_zero_compared_cells_fail(tiny, tmp_path, capsys):
    clean = [r for r in tiny["rows"] if r["defense"] == "none"]  # no board at all
    ref = tmp_path / "empty.json"
    freeze(clean, ref, Tolerances())
    assert json.loads(ref.read_text())["cells"] == []
    # issue 25: after the identity checks, nothing compared is a refusal of the inputs (exit 2, one line)
    assert main(["check", str(write_rows(tmp_path / "clean", clean)), "--against", str(ref), "--junit",
                 str(tmp_path / "j.xml")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nothing to compare: the reference holds no cells" in err
    # cells the fresh run does not hold, skipped under --allow-subset, leave nothing compared: refused too
    fresh = write_rows(tmp_path / "fresh-clean", clean)
    assert main(["check", str(fresh), "--against", str(tiny["ref"]), "--allow-subset"]) == 2
    assert "skipped under --allow-subset" in capsys.readouterr().err


def summary_row(method: str, trial: int, auc: float, tpr: float) -> dict:
    """A verify-protocol summary row as bench.protocols.ownership writes it (the fields the board reads)."""
    return {"protocol": "verify", "cell": f"{method}-{trial}", "suite": "fp", "suite_digest": "f" * 16,
            "defense": method, "params": {}, "point": {}, "release": "verify", "attack": "none",
            "authorized": "cnn-src", "evaluated": "", "trial": trial, "role": "summary", "arch": {},
            "metrics": {"auc": auc, "auc_ci": [auc - 0.05, auc], "tpr@1%fpr": tpr, "tpr@1%fpr_ci": [tpr - 0.1, tpr],
                        "tpr@5%fpr": tpr, "score_pos_mean": 0.9, "score_neg_mean": 0.1, "n_positive": 24,
                        "n_negative": 20},
            "cost": {"queries": 50, "labels_only": True}, "n": 44, "provenance": {"git": "abc"}}


def test_fingerprint_boards_are_gated_on_auc_and_tpr(tmp_path):
    rows = [summary_row("ipguard", 0, 0.80, 0.30), summary_row("ipguard", 1, 0.84, 0.40),
            summary_row("mfue-w", 0, 1.00, 1.00), summary_row("mfue-w", 1, 1.00, 1.00)]
    ref = reference_from_rows(rows, Tolerances())
    cells = {(c.key.split("|")[1], c.metric): c for c in ref.cells}
    assert {c.board for c in ref.cells} == {"fingerprint"} and len(cells) == 4
    ip = cells[("ipguard", "auc")]
    assert ip.trained and ip.n_trials == 2 and ip.value == pytest.approx(0.82)
    assert ip.tolerance == pytest.approx(max(3 * ip.std, 0.02)) and cells[("mfue-w", "auc")].tolerance == 0.02
    assert check(ref, ref).ok and check(ref, ref).compared == 4
    worse = [summary_row("ipguard", 0, 0.80, 0.30), summary_row("ipguard", 1, 0.84, 0.40),
             summary_row("mfue-w", 0, 0.90, 1.00), summary_row("mfue-w", 1, 0.90, 1.00)]
    result = check(reference_from_rows(worse, Tolerances()), ref)
    assert not result.ok and [line.split(":")[0] for line in result.regressions] == [
        "verify|mfue-w|attack=none|source=cnn-src auc"]
    # a fingerprint_leaderboard.json (refused by `check` before) is a reference too, on the same keys
    board = fingerprint_board(rows)
    legacy = tmp_path / "fingerprint_leaderboard.json"
    legacy.write_text(json.dumps({"kind": "authbench-fingerprint-leaderboard", "version": 1, "provenance": {},
                                  "rows": json.loads(board.to_json(orient="records"))}))
    old = load_reference(legacy)
    assert {(c.key, c.metric) for c in old.cells} == {(c.key, c.metric) for c in ref.cells}
    assert check(ref, old).ok and check(ref, old).compared == 4
    assert not check(reference_from_rows(worse, Tolerances()), old).ok


def test_trials_knob_repeats_only_the_cells_that_train(tiny):
    suite = load_suite(str(tiny["suite"]))
    jobs = [j for j in make_engine(suite, tiny["root"] / "never", progress=False).jobs if j.defense == "noise"]
    by_attack = {}
    for j in jobs:
        by_attack.setdefault(get_attack(j.attack).name, set()).add(j.trial)
    assert by_attack == {"none": {0}, "reconstruct": {0, 1}}
    bad = tiny["root"] / "bad.toml"
    bad.write_text(TINY.replace("trials = 2", "trials = 0"))
    with pytest.raises(UserError, match=r"\[check\] trials = 0 is not valid: it must be a whole number >= 1"):
        make_engine(load_suite(str(bad)), tiny["root"] / "never", progress=False)


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_attacks_that_learn_are_marked_as_training(name):
    cls = ATTACKS[name]
    if cls.kind in ("learned", "adapt") or name in ("finetune", "fine-prune", "distill"):
        assert cls.trains
    elif name in ("none", "jpeg", "crop", "prune", "project", "flip", "rotate"):
        assert not cls.trains


@pytest.mark.parametrize("name", ["dp", "algospec", "fhe", "mfue-w", "ipguard", "ne-patch", "noise", "corelocker"])
def test_defenses_that_train_are_marked(name):
    registry = dict(DEFENSES.items())  # every one is a built-in, extras or not (they import their libraries lazily)
    assert name in registry
    assert registry[name].trains == (name in ("dp", "algospec", "fhe", "mfue-w", "ipguard"))


def test_check_section_rejects_unknown_keys():
    with pytest.raises(UserError, match="unknown key"):
        Tolerances.from_check({"tolerances": {}})
    with pytest.raises(UserError, match="unknown metric"):
        Tolerances.from_check({"tolerance": {"top5": 1.0}})


def test_a_run_without_a_terminal_logs_a_header_and_a_line_a_minute_and_no_bar(tmp_path, capsys):
    suite = tmp_path / "log.toml"
    suite.write_text(TINY.replace(f', {RECON}', "").replace("subset = 64", "subset = 16"))
    assert main(["run", str(suite), "--out", str(tmp_path / "run"), "--reports", str(tmp_path / "rep"),
                 "--threads", "1"]) == 0  # progress on, but stderr is captured: not a terminal
    err = capsys.readouterr().err
    assert err.startswith("authbench: suite tiny: 4 of 4 job(s) to run")
    assert "1 torch thread(s) (--threads)" in err and "executor local" in err
    progress = [line for line in err.splitlines() if line.startswith("tiny: ")]
    assert progress and progress[-1].startswith("tiny: 4/4 jobs, ") and " elapsed" in progress[-1]
    assert len(progress) <= 2  # a line a minute (and the last), not one per job
    assert "\r" not in err and "cells/s" not in err and "it/s" not in err


def test_allow_subset_compares_a_cell_over_the_references_models_only(tiny, tmp_path, capsys):
    """Regression (digits --full against the digits reference): a --full run adds models to an entry the reference
    measured on fewer; --allow-subset pooled the fresh cell over all of them and reported regressions that were only
    the extra models. The fresh rows are restricted to the reference's models first."""
    two = [r for r in tiny["rows"] if "vit-s0" not in (r["authorized"], r["evaluated"])]
    ref = tmp_path / "two.json"
    freeze(two, ref, Tolerances())
    rows = copy.deepcopy(tiny["rows"])
    for r in rows:  # the extra model's own cells far from the others: pooled in, they move every shared cell
        if r["authorized"] == "vit-s0" and r["role"] == "authorized":
            r["metrics"]["top1"] = 0.0
    fresh = write_rows(tmp_path / "three", rows)
    assert main(["check", str(fresh), "--against", str(ref), "--allow-subset"]) == 0, capsys.readouterr().out
    captured = capsys.readouterr()
    assert "0 regression(s)" in captured.out and "compared over the reference's 2 models" in captured.err
    assert main(["check", str(fresh), "--against", str(ref)]) == 2  # without the flag: refused, as before

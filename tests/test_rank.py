"""`authbench rank` end to end: a plugin defense placed on a reference board made by a run in the test."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pandas as pd
import pytest

from bench.cli import main
from bench.reports.entries import entry_schema

MODELS = '[{ source = "zoo", model = "mlp-s0", epochs = 4 }, { source = "zoo", model = "mlp-s1", epochs = 4 }]'
STANDARD = '[{ name = "jpeg", quality = 75 }, "crop"]'


def suite(path: Path, defenses: list[str]) -> Path:
    """A tiny digits suite: two zoo models, one operating point, the two cheapest standard attacks."""
    blocks = "".join(f'\n[[defenses]]\nname = "{d}"\npsnr = [0]\nrelease = ["float"]\nattacks = ["none", {STANDARD[1:-1]}]\n'
                     for d in defenses)
    path.write_text(f'[suite]\nname = "tiny"\nseed = 0\n\n[data]\ndataset = "digits"\nsplit = "test"\n\n'
                    f'[models]\nauthorized = {MODELS}\n\n[standard_attacks]\ninput = {STANDARD}\n{blocks}')
    return path


def cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(reference run, its reports, plugin run, its suite) made once: --subset 64 on two models."""
    root = tmp_path_factory.mktemp("rank")
    ref_suite, new_suite = suite(root / "ref.toml", ["ne-patch", "noise"]), suite(root / "new.toml", ["plugin_example:MyRecoding"])
    for s, name in ((ref_suite, "ref"), (new_suite, "new")):
        assert main(["run", str(s), "--subset", "64", "--out", str(root / name), "--reports", str(root / f"{name}-rep"),
                     "--no-progress", "--threads", "1"]) == 0
    return root, ref_suite, new_suite


def test_rank_places_a_plugin_on_the_reference_board(capsys, runs):
    root, ref_suite, _ = runs
    out, submit = root / "ranked", root / "pr"
    code, stdout, err = cli(capsys, "rank", root / "new", "--against", root / "ref", "--suite", ref_suite,
                            "--out", out, "--submit", submit)
    assert code == 0, err
    assert "NEW my-recoding (plugin_example:MyRecoding): one line for `authbench list defenses`" in stdout
    new_line = next(line for line in stdout.splitlines() if "my-recoding NEW" in line)
    assert "plugin_example" not in new_line and len(new_line) <= 100  # the class's name, not its module path
    payload = json.loads((out / "boards.json").read_text())
    (board,) = payload["boards"]
    assert board["key"]["authorized"] == ["mlp-s0", "mlp-s1"] and board["key"]["n"] == [64]
    assert board["key"]["standard_attacks"] == ["jpeg(quality=75)", "crop"]
    rows = {r["defense"]: r for r in board["rows"]}
    assert set(rows) == {"ne-patch", "noise", "plugin_example:MyRecoding"}
    assert rows["plugin_example:MyRecoding"]["new"] and not rows["ne-patch"]["new"]
    assert all(r["complete"] and r["rank"] for r in rows.values())
    assert sorted(r["rank"] for r in rows.values()) == [1, 2, 3]
    headline = [r["values"]["worst_auth_gap"] for r in sorted(rows.values(), key=lambda r: r["rank"])]
    assert headline == sorted(headline, reverse=True)

    (csv,) = (out / "boards").glob("*.wide.csv")
    frame = pd.read_csv(csv)
    assert frame.shape == (3, 18)  # three rows; every column, with "new"
    assert set(frame["n"]) == {64} and set(frame["authorized"]) == {"mlp-s0,mlp-s1"}
    readable = pd.read_csv(csv.with_name(csv.name.replace(".wide.csv", ".csv")))
    assert readable.shape == (3, 11) and list(readable["new"].fillna("")).count("NEW") == 1
    assert (out / "site" / "index.html").is_file() and "NEW" in (out / "site" / "boards.html").read_text()

    entries = sorted(submit.glob("tiny/input/*.json"))
    assert len(entries) == 1  # only the new row: the file a contributor opens a PR with
    entry = json.loads(entries[0].read_text())
    jsonschema.Draft202012Validator(entry_schema()).validate(entry)
    assert entry["name"] == "my-recoding" and entry["description"] == "one line for `authbench list defenses`"
    assert entry["paper"] is None and entry["reported"] == []
    assert entry["measured"]["values"]["worst_auth_gap"] == rows["plugin_example:MyRecoding"]["values"]["worst_auth_gap"]
    assert set(entry["provenance"]["models"]) == {"mlp-s0", "mlp-s1"}


def test_rank_against_the_reference_leaderboard_json(capsys, runs):
    root, _, _ = runs
    reference = json.loads((root / "ref-rep" / "leaderboard.json").read_text())
    reference["trials"] = {"ignored": True}  # fields other tools add are read tolerantly
    (root / "ref-board.json").write_text(json.dumps(reference))
    code, stdout, err = cli(capsys, "rank", root / "new", "--against", root / "ref-board.json", "--out", root / "r2")
    assert code == 0, err
    assert "NEW" in stdout
    (board,) = json.loads((root / "r2" / "boards.json").read_text())["boards"]
    assert len(board["rows"]) == 3


def test_rank_refuses_another_model_set_in_one_line(capsys, runs):
    root, _, new_suite = runs
    assert main(["run", str(new_suite), "--subset", "64", "--model", "mlp-s0", "--out", str(root / "one"),
                 "--reports", str(root / "one-rep"), "--no-progress", "--threads", "1"]) == 0
    capsys.readouterr()
    code, _, err = cli(capsys, "rank", root / "one", "--against", root / "ref-rep" / "boards.json", "--out", root / "r3")
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "authorized differ (only in the reference: mlp-s1)" in err


def test_rank_refuses_a_reference_without_boards(capsys, runs, tmp_path):
    root, _, _ = runs
    old = json.loads((root / "ref-rep" / "leaderboard.json").read_text())
    old.pop("boards")
    (tmp_path / "old.json").write_text(json.dumps(old))
    code, _, err = cli(capsys, "rank", root / "new", "--against", tmp_path / "old.json")
    assert code == 2 and "holds no boards" in err and err.count("\n") == 1

"""Like-for-like boards: model sets never mixed, the worst-case headline, incomplete and NaN rows unranked."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pandas as pd
import pytest

from bench.core.types import Cell, Provenance, Role, Row
from bench.core.errors import UserError
from bench.defenses import DEFENSES
from bench.reports.boards import (Board, build_boards, full_params, parse_standard, place, rank_rows, write_boards)
from bench.reports.tables import sidecar_path
from bench.suite import load_suite

STD = {"input": ("jpeg(quality=75)", "crop")}
PROV = Provenance(model_digest=None, authorized_digest=None, input_digest=None, defense_summary=None, versions={},
                  git="g", device="cpu", seed=0, wall_s=0.5, cache={}, forwards=1)


def row(auth, ev, top1, *, attack="none", defense="ne-patch", protocol="input", params=None, psnr=-10.0, n=100,
        trial=0, suite="s", role=None, release="float", metrics=None, weights=None) -> dict:
    """One result row built through the one serialiser (Row), as a results file holds it."""
    point = {"psnr": psnr, "psnr_mode": "true"} if psnr is not None else {}
    cell = Cell(suite=suite, defense=defense, params=params or {}, point=point, release=release, attack=attack,
                authorized=auth, evaluated=ev, trial=trial)
    role = role or Role.of(authorized=auth, evaluated=ev, same_arch=False)
    return Row.build(protocol=protocol, cell=cell, key=f"{auth}{ev}{attack}{trial}{defense}", suite_digest="0" * 16,
                     role=role, arch={"authorized": auth, "evaluated": ev}, n=n,
                     provenance=replace(PROV, authorized_digest=weights and f"{weights}-{auth}"),
                     metrics=metrics if metrics is not None else {"top1": top1}).to_json()


def cells(defense, table: dict, **kw) -> list[dict]:
    """table: authorized -> attack -> {evaluated: top1}."""
    return [row(a, e, v, attack=attack, defense=defense, **kw)
            for a, attacks in table.items() for attack, scores in attacks.items() for e, v in scores.items()]


# authorized a and b, evaluated a, b, c; the authorized model's own cells under attack are set to 0 to show
# that auth_gap under an attack scores the authorized model on the release as delivered
HAND = {
    "a": {"none": {"a": 90, "b": 20, "c": 30}, "jpeg(quality=75)": {"a": 0, "b": 50, "c": 40},
          "crop": {"a": 0, "b": 25, "c": 70}},
    "b": {"none": {"b": 80, "a": 10, "c": 10}, "jpeg(quality=75)": {"b": 0, "a": 75, "c": 5},
          "crop": {"b": 0, "a": 30, "c": 20}},
}


def test_worst_case_headline_on_hand_made_rows():
    (board,) = build_boards(cells("ne-patch", HAND), STD)
    (r,) = board.rows
    assert r.values["auth_gap"] == pytest.approx(((90 - 30) + (80 - 10)) / 2)
    assert r.values["auth_gap[jpeg(quality=75)]"] == pytest.approx(((90 - 50) + (80 - 75)) / 2)
    assert r.values["auth_gap[crop]"] == pytest.approx(((90 - 70) + (80 - 30)) / 2)
    # a: worst is crop (20); b: worst is jpeg (5): the headline is their mean, not the worst column's mean
    assert r.values["worst_auth_gap"] == pytest.approx((20 + 5) / 2)
    assert r.per_model["a"]["worst_attack"] == "crop" and r.per_model["b"]["worst_attack"] == "jpeg(quality=75)"
    assert r.rank == 1 and r.complete and r.authorized == ("a", "b") and r.n == (100,)


def test_trials_are_averaged_per_cell_before_the_max():
    table = {"a": {"none": {"a": 90, "b": 20}, "jpeg(quality=75)": {"b": 30}, "crop": {"b": 30}}}
    rows = cells("noise", table) + [row("a", "b", 60, defense="noise", trial=1)]
    (board,) = build_boards(rows, STD)
    assert board.rows[0].values["auth_gap"] == pytest.approx(90 - (20 + 60) / 2)


def test_a_clean_gap_below_every_attack_is_the_worst_case():
    table = {"a": {"none": {"a": 50, "b": 60}, "jpeg(quality=75)": {"b": 10}, "crop": {"b": 10}}}
    (board,) = build_boards(cells("noise", table), STD)
    assert board.rows[0].values["worst_auth_gap"] == pytest.approx(-10) and board.rows[0].worst_attack == "none"


def test_boards_never_mix_model_sets_data_sizes_or_suites():
    two = cells("ne-patch", HAND)
    one = cells("noise", {"a": HAND["a"]})  # authorized a only
    small = cells("ne-operator", HAND, n=64)  # other data size
    other = cells("ne-patch", HAND, suite="t")
    boards = build_boards(two + one + small + other, STD)
    assert len(boards) == 4
    for board in boards:
        assert len(board.rows) == 1
        assert all(r.authorized == board.key.authorized and r.n == board.key.n for r in board.rows)
    assert {(b.key.suite, b.key.authorized, b.key.n) for b in boards} == {
        ("s", ("a", "b"), (100,)), ("s", ("a",), (100,)), ("s", ("a", "b"), (64,)), ("t", ("a", "b"), (100,))}


def test_incomplete_and_nan_rows_are_shown_but_not_ranked():
    partial = {k: dict(v) for k, v in HAND.items()}
    partial["b"] = {k: v for k, v in HAND["b"].items() if k != "crop"}  # crop missing for b
    nan = cells("ne-operator", HAND)
    for r in nan:
        if r["role"] == "authorized" and r["attack"] == "none":
            r["metrics"] = {"top1": None}
    board, = build_boards(cells("ne-patch", HAND) + cells("noise", partial) + nan, STD)
    by = {r.defense: r for r in board.rows}
    assert by["ne-patch"].rank == 1
    assert by["noise"].rank is None and not by["noise"].complete and by["noise"].missing == ("crop for b",)
    assert by["noise"].values["worst_auth_gap"] is None
    assert by["ne-operator"].rank is None and by["ne-operator"].values["worst_auth_gap"] is None
    assert [r.defense for r in board.rows][0] == "ne-patch"  # ranked rows first


def test_rank_rows_orders_by_headline_then_clean_gap():
    rows = build_boards(cells("ne-patch", HAND) + cells("noise", HAND, params={"code": "class"}), STD)[0].rows
    tied = rank_rows(rows, "worst_auth_gap", "auth_gap")
    assert [r.rank for r in tied] == [1, 2]  # equal headlines: both ranked, stable by entry


def test_params_show_every_parameter_defaults_included():
    text = full_params("ne-patch", {}, {"psnr": -10.0, "psnr_mode": "true"})
    assert "tau=0.0001" in text and "rule=threshold" in text and "psnr" not in text
    assert full_params("corelocker", {"ratio": 0.2}, {}) == full_params("corelocker", {"criterion": "bn-scale"}, {"ratio": 0.2})
    assert "criterion=bn-scale" in full_params("corelocker", {"ratio": 0.2}, {})


def test_baselines_and_model_defenses_rank_on_their_own_boards():
    kw = dict(protocol="model", psnr=None, release="model")

    def dp(tag, top1, eps):  # a model defense's artifacts are labelled <model>[<what>]: they count as <model>
        return [row("m", f"m[{tag}]", top1, defense="dp", params={"epsilon": eps}, role="authorized", **kw),
                row("m", "o", 30, defense="dp", params={"epsilon": eps}, **kw)]
    rows = ([row("m", "m", 95, defense="corelocker", params={"ratio": 0.2}, **kw),
             row("m", "m[released]", 10, defense="corelocker", params={"ratio": 0.2}, role="unauthorized", **kw)]
            + dp("dp-eps1", 60, 1.0) + dp("dp-eps8", 80, 8.0)
            + [row("m", "m", 99, defense="dp", params={"epsilon": 8.0}, role="reference", n=7, **kw)]
            + cells("ne-patch", HAND))
    boards = build_boards(rows, {**STD, "model": ()})
    assert {b.key.board: [r.defense for r in b.rows] for b in boards} == {
        "input": ["ne-patch"], "model": ["corelocker"], "baselines": ["dp", "dp"]}
    dp = next(b for b in boards if b.key.board == "baselines")
    assert dp.key.evaluated == ("m", "o") and dp.key.n == (100,)  # the plaintext reference's n is not the row's
    assert [r.values["worst_auth_gap"] for r in dp.rows] == [pytest.approx(50), pytest.approx(30)]


def test_ownership_ranks_by_worst_auc_then_tpr():
    def summary(defense, attack, auc, tpr):
        return row("src", "", None, attack=attack, defense=defense, protocol="verify", psnr=None, release="verify",
                   role="summary", metrics={"auc": auc, "tpr@1%fpr": tpr})
    rows = [summary("ipguard", "none", 0.9, 0.5), summary("ipguard", "flip", 0.6, 0.2),
            summary("mfue-w", "none", 0.8, 0.4), summary("mfue-w", "flip", 0.75, 0.3),
            summary("cae", "none", 0.99, 0.9)]  # cae lacks the standard attack
    (board,) = build_boards(rows, {"ownership": ("flip",)})
    assert board.key.board == "ownership" and board.headline == "worst_auc"
    assert [(r.defense, r.rank) for r in board.rows] == [("mfue-w", 1), ("ipguard", 2), ("cae", None)]
    assert board.rows[0].values["worst_auc"] == pytest.approx(0.75)
    assert board.rows[0].values["worst_tpr@1%fpr"] == pytest.approx(0.3)


def test_ownership_methods_with_other_query_counts_share_one_board():
    """Regression: a method's query rows carry its own trigger count as n (IPGuard 50, ADV-TRA 400), and the board
    key took n from them, so every fingerprint method landed on a board of its own; n is the suspects scored."""
    def cells_of(defense, queries):
        out = [row("src", f"suspect{i}", None, defense=defense, protocol="verify", psnr=None, release="verify",
                   role=role, n=queries, metrics={"score": 0.5}) for i, role in enumerate(("positive", "negative"))]
        return out + [row("src", "", None, defense=defense, protocol="verify", psnr=None, release="verify",
                          role="summary", n=44, metrics={"auc": 0.9, "tpr@1%fpr": 0.5})]
    (board,) = build_boards(cells_of("ipguard", 50) + cells_of("adv-tra", 400), {"ownership": ()})
    assert board.key.n == (44,) and {r.defense for r in board.rows} == {"ipguard", "adv-tra"}


def test_place_marks_new_rows_and_refuses_other_model_sets():
    reference = build_boards(cells("ne-patch", HAND), STD)
    merged = place(build_boards(cells("noise", HAND), STD), reference)
    (board,) = merged
    assert {(r.defense, r.new) for r in board.rows} == {("ne-patch", False), ("noise", True)}
    with pytest.raises(UserError, match=r"authorized differ \(only in the reference: b\)"):
        place(build_boards(cells("noise", {"a": HAND["a"]}), STD), reference)
    with pytest.raises(UserError, match=r"n differ \(only in the run: 64; only in the reference: 100\)"):
        place(build_boards(cells("noise", HAND, n=64), STD), reference)
    with pytest.raises(UserError, match="no input board of suite 't'"):
        place(build_boards(cells("noise", HAND, suite="t"), STD), reference)


def test_place_refuses_a_run_on_other_weights():
    reference = build_boards(cells("ne-patch", HAND, weights="pinned"), STD)
    assert reference[0].models == {"a": "pinned-a", "b": "pinned-b"}
    assert place(build_boards(cells("noise", HAND, weights="pinned"), STD), reference)
    with pytest.raises(UserError, match="model 'a' has other weights than the reference's"):
        place(build_boards(cells("noise", HAND, weights="retrained"), STD), reference)


def test_board_round_trips_and_csv_reads_with_pandas(tmp_path):
    boards = build_boards(cells("ne-patch", HAND) + cells("noise", {"a": HAND["a"]}), STD)
    assert [Board.from_json(json.loads(json.dumps(b.to_json()))) for b in boards] == boards
    paths = write_boards(boards, tmp_path, {"suite": "s", "suite_digest": "0", "git": "g", "versions": {}})
    csvs = [p for p in paths if p.suffix == ".csv"]
    wide = [p for p in csvs if p.name.endswith(".wide.csv")]
    readable = [p for p in csvs if p not in wide]
    assert len(wide) == 2 and len(readable) == 2 and len([p for p in paths if p.suffix == ".png"]) == 2
    for csv in wide:
        frame = pd.read_csv(csv)
        assert frame.shape == (1, 17)  # rank, 8 identity columns, 3 clean, 2 attacked, headline, worst attack, status
        assert {"rank", "authorized", "n", "auth_gap", "worst_auth_gap", "status"} <= set(frame.columns)
    for csv in readable:  # one row per entry, RobustBench style
        frame = pd.read_csv(csv)
        assert list(frame.columns) == ["rank", "defense", "paper", "operating point", "authorized top-1",
                                       "worst unauthorized top-1", "clean auth_gap", "worst_auth_gap", "± 95% CI",
                                       "worst attack"]
    for csv in csvs:
        side = json.loads(sidecar_path(csv).read_text())
        assert side["file"] == csv.name and side["key"]["standard_attacks"] == list(STD["input"])
        assert not csv.read_text().startswith("#")
    first = pd.read_csv(readable[0])
    assert math.isclose(first["worst_auth_gap"][0], 12.5) and first["operating point"][0] == "-10 dB float"
    assert first["paper"][0] == "Wang et al., arXiv 2510.10982" and first["worst attack"][0] in ("crop", "jpeg(quality=75)")


def test_standard_attacks_section_of_a_suite(tmp_path):
    assert parse_standard(load_suite("digits").standard_attacks)["input"][:2] == ("jpeg(quality=75)", "crop")
    bad = tmp_path / "bad.toml"
    bad.write_text('[data]\ndataset="digits"\n[models]\nauthorized=["zoo:mlp-s0"]\n[[defenses]]\nname="noise"\n'
                   '[standard_attacks]\ninputs = ["crop"]\n')
    with pytest.raises(UserError, match=r"unknown key 'inputs' in \[standard_attacks\]; valid: baselines, (calibration, )?domain, glue, input, model, ownership, train-on-data"):
        load_suite(str(bad))


def test_list_shows_an_installed_plugins_description(monkeypatch):
    class EntryPoint:
        value = "plugin_example:MyRecoding"

        def load(self):
            from plugin_example import MyRecoding
            return MyRecoding

    monkeypatch.setattr("bench.core.registry._entry_points", lambda group: {"my-recoding": EntryPoint()})
    assert DEFENSES.describe()["my-recoding"] == "one line for `authbench list defenses`"


def test_entry_files_validate_and_carry_paper_and_cited_reported_figures(tmp_path, monkeypatch):
    import jsonschema
    import plugin_example

    from bench.reports.entries import entry_schema, write_entries

    cite = {"authors": "A. Author", "title": "A Title", "venue": "arXiv 0000.00000", "table": 1, "row": "a", "column": "b"}
    monkeypatch.setattr(plugin_example.MyRecoding, "reported", [{"metric": "auth_gap", "value": 1.0, "suite": "s", "cite": cite},
                                                                {"metric": "auth_gap", "value": 2.0, "suite": "other", "cite": cite}],
                        raising=False)
    rows = cells("ne-patch", HAND) + cells("noise", HAND) + cells("plugin_example:MyRecoding", HAND)
    paths = write_entries(build_boards(rows, STD), tmp_path, only_new=False)
    assert len(paths) == 3 and all(p.parent == tmp_path / "s" / "input" for p in paths)
    validator = jsonschema.Draft202012Validator(entry_schema())
    entries = {json.loads(p.read_text())["defense"]: json.loads(p.read_text()) for p in paths}
    for entry in entries.values():
        validator.validate(entry)
    assert entries["ne-patch"]["paper"]["arxiv"] == "2510.10982" and entries["noise"]["paper"] is None
    plugin = entries["plugin_example:MyRecoding"]
    assert plugin["name"] == "my-recoding" and plugin["reported"] == [{"metric": "auth_gap", "value": 1.0, "suite": "s", "cite": cite}]
    assert plugin["measured"]["values"]["worst_auth_gap"] == pytest.approx(12.5)
    del plugin["reported"][0]["cite"]["column"]  # a reported figure without its full citation is refused
    assert not validator.is_valid(plugin)

"""`check`: fresh results against a reference leaderboard under per-metric tolerances."""

from __future__ import annotations

import copy
import json

import pytest
from test_reports import synthetic_rows, tiny_rows

from bench.errors import UserError
from bench.reports.check import check as check_refs, format_check, load_reference
from bench.reports.leaderboard import leaderboard, write_leaderboard
from bench.reports.reference import Tolerances, reference_from_rows

KEY = "ne|tau=0.0001|psnr=20|true|float|none"
ONE = Tolerances(inference=1.0)  # these synthetic cells train nothing: exact by default, 1 point here


def as_ref(source, tolerances=ONE):
    return source if not isinstance(source, list) else reference_from_rows(source, tolerances)


def check(fresh, ref, tolerances, default_tolerance=None, strict=False):
    """The check of rows (or a reference) against a reference, with per-metric tolerances replacing the
    recorded ones, as `authbench check --tolerance` does."""
    return check_refs(as_ref(fresh), as_ref(ref), override=tolerances, override_default=default_tolerance,
                      strict=strict)


def reference_json(tmp_path, rows):
    """A legacy leaderboard.json reference (tolerances from the suite: 1 point for these cells)."""
    write_leaderboard(leaderboard(rows), tmp_path, {"suite": "synthetic", "git": "abc123"})
    return load_reference(tmp_path / "leaderboard.json", ONE)


def shifted(rows, authorized, evaluated, delta):
    """Copy of rows with one NE cell's top1 moved by delta."""
    rows = copy.deepcopy(rows)
    for r in rows:
        if r["defense"] == "ne" and r["authorized"] == authorized and r["evaluated"] == evaluated:
            r["metrics"]["top1"] += delta
    return rows


def test_passes_against_itself(tmp_path):
    rows = synthetic_rows()
    ref = reference_json(tmp_path, rows)
    for fresh in (rows, ref):
        result = check(fresh, ref, {})
        assert result.ok and not result.improvements and not result.missing
        assert result.compared == len(ref.cells) == len(leaderboard(rows)) * 5
    assert check(rows, rows, {}).ok  # rows against rows
    assert "OK" in format_check(check(rows, ref, {}))


def test_authorized_drop_is_regression_naming_the_cell(tmp_path):
    ref = reference_json(tmp_path, tiny_rows())
    result = check(shifted(tiny_rows(), "mlp-a", "mlp-a", -4.0), ref, {})
    assert not result.ok
    # mlp-a 90 -> 86: authorized_top1 85 -> 83, auth_gap 60 -> 58, retained 95 -> 93.
    assert sorted(line.split(":")[0] for line in result.regressions) == [
        f"{KEY} attacked_gap", f"{KEY} authorized_top1", f"{KEY} retained"]
    line = next(x for x in result.regressions if "authorized_top1" in x)
    assert "reference 85.00 -> fresh 83.00" in line and "delta -2.00" in line and "tolerance 1" in line
    assert "REGRESSION: " + line in format_check(result) and "FAIL" in format_check(result)


def test_unauthorized_rise_is_regression(tmp_path):
    ref = reference_json(tmp_path, tiny_rows())
    result = check(shifted(tiny_rows(), "cnn-a", "mlp-a", +6.0), ref, {})
    # cnn-a -> mlp-a 30 -> 36: unauthorized_mean 25 -> 28, worst 30 -> 36, auth_gap 60 -> 57.
    names = {line.split(":")[0] for line in result.regressions}
    assert names == {f"{KEY} unauthorized_mean", f"{KEY} unauthorized_worst", f"{KEY} attacked_gap"}
    assert any("reference 30.00 -> fresh 36.00 (delta +6.00" in x for x in result.regressions)


def test_improvement_is_reported_and_fails_only_when_strict(tmp_path):
    ref = reference_json(tmp_path, tiny_rows())
    fresh = shifted(tiny_rows(), "mlp-a", "cnn-a", -10.0)  # unauthorized 20 -> 10: better
    result = check(fresh, ref, {})
    assert result.ok and not result.regressions
    assert {line.split(":")[0] for line in result.improvements} == {
        f"{KEY} unauthorized_mean", f"{KEY} attacked_gap"}
    strict = check(fresh, ref, {}, strict=True)
    assert not strict.ok and len(strict.regressions) == 2 and not strict.improvements


def test_per_metric_tolerance(tmp_path):
    ref = reference_json(tmp_path, tiny_rows())
    fresh = shifted(tiny_rows(), "mlp-a", "mlp-a", -4.0)  # authorized_top1 -2, retained -2, auth_gap -2
    loose = {"authorized_top1": 2.5, "retained": 2.5, "attacked_gap": 2.5}
    assert check(fresh, ref, loose).ok
    result = check(fresh, ref, {**loose, "attacked_gap": 1.5})
    assert [line.split(":")[0] for line in result.regressions] == [f"{KEY} attacked_gap"]
    assert check(fresh, ref, {}, default_tolerance=3.0).ok
    with pytest.raises(UserError, match="unknown metric"):
        check(fresh, ref, {"top5": 1.0})


def test_missing_rows_fail(tmp_path):
    rows = synthetic_rows()
    ref = reference_json(tmp_path, rows)
    fresh = [r for r in rows if not (r["defense"] == "noise" and r["release"] == "uint8")]
    result = check(fresh, ref, {})
    assert not result.ok and not result.regressions
    assert len(result.missing) == 3  # one per psnr
    assert all(line.startswith("noise|sigma_from=psnr|psnr=") and "|uint8|none" in line for line in result.missing)


def test_load_reference_formats_and_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_reference(tmp_path / "nope.json")
    with pytest.raises(UserError, match="does not exist"):
        load_reference(tmp_path / "nope.jsonl")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UserError, match="not readable JSON"):
        load_reference(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text('{"kind": "something-else"}')
    with pytest.raises(UserError, match="not an authbench reference"):
        load_reference(tmp_path / "other.json")
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in tiny_rows()))
    assert load_reference(tmp_path / "results.jsonl", ONE) == as_ref(tiny_rows())
    assert load_reference(tmp_path, ONE) == as_ref(tiny_rows())  # a run folder
    assert check(load_reference(tmp_path, ONE), reference_json(tmp_path, tiny_rows()), {}).ok

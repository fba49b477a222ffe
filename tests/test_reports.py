"""Reports from synthetic result rows: tables, leaderboard, figures (no model is trained)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from bench.errors import UserError
from bench.protocols import render
from bench.reports.figures import psnr_curves
from bench.reports.leaderboard import METRIC_DIRECTIONS, leaderboard, write_leaderboard
from bench.reports.tables import (BASELINE, DEV_COL, PSNR_COL, cross_model_matrix, render_tables,
                                  same_arch_matrix, separation_summary)

# Synthetic zoo, listed in the order the rows mention them (not sorted on purpose).
ARCH = {"mlp-b": "mlp", "lin-a": "linear", "cnn-a": "cnn", "mlp-a": "mlp", "cnn-b": "cnn"}
MODELS = list(ARCH)
CLEAN = {"mlp-b": 95.0, "cnn-a": 98.0, "lin-a": 92.0, "mlp-a": 96.0, "cnn-b": 97.0}
PSNRS = [20.0, 0.0, -10.0]


def make_row(defense, authorized, evaluated, top1, psnr=20.0, release="float", attack="none",
             psnr_true=None, dev=0.0, encode_ms=0.1, params=None, psnr_mode="true"):
    """One synthetic result row in the bench.results schema."""
    clean = defense == "none"
    role = ("clean" if clean else "authorized" if evaluated == authorized
            else "same-arch" if ARCH.get(evaluated) == ARCH.get(authorized) else "unauthorized")
    return {
        "cell": f"{defense}-{authorized}-{evaluated}-{psnr}-{release}-{attack}",
        "suite": "synthetic", "suite_digest": "d1g357",
        "defense": defense, "params": {} if clean else (params or {"tau": 1e-4}),
        "point": {} if clean else {"psnr": psnr, "psnr_mode": psnr_mode},
        "release": "clean" if clean else release, "attack": attack,
        "authorized": authorized, "evaluated": evaluated, "role": role,
        "arch": {"authorized": ARCH.get(authorized, ""), "evaluated": ARCH[evaluated]},
        "metrics": {"top1": top1, "first_layer_dev": dev},
        "encoding": {"psnr_true": psnr if psnr_true is None else psnr_true, "psnr_nominal": None,
                     "calib_err_db": 0.0, "unreachable": 0, "subspace_dim": None,
                     "encode_ms": encode_ms, "fit_ms": 1.0},
        "n": 100,
        "provenance": {"git": "abc123", "versions": {"authbench": "0.1.0"}, "device": "cpu", "seed": 0},
    }


def ne_top1(psnr, i, j):
    """Synthetic NE cell: the authorized model keeps its clean accuracy minus a little; the
    others drop with lower PSNR."""
    a, e = MODELS[i], MODELS[j]
    if a == e:
        return CLEAN[a] - 0.5 - i * 0.1
    return 10.0 + i + 0.1 * j + max(psnr, 0.0)


def synthetic_rows(releases=("float", "uint8")):
    """Clean baseline + NE + a Gaussian-noise control over 5 models, 3 PSNRs, 2 releases."""
    rows = [make_row("none", "", m, CLEAN[m]) for m in MODELS]
    for release in releases:
        for psnr in PSNRS:
            for i, a in enumerate(MODELS):
                for j, e in enumerate(MODELS):
                    rows.append(make_row("ne", a, e, ne_top1(psnr, i, j), psnr, release,
                                         psnr_true=psnr + 0.25, dev=0.01 * (i + 1) if a == e else 0.5))
                    rows.append(make_row("noise", a, e, CLEAN[e] * (psnr + 20) / 40, psnr, release,
                                         params={"sigma_from": "psnr"}))
    return rows


def test_cross_model_matrix_shape_order_and_cells():
    m = cross_model_matrix(synthetic_rows(), "ne", 20.0, "float")
    assert list(m.index) == [BASELINE, *MODELS]
    assert list(m.columns) == [*MODELS, PSNR_COL, DEV_COL]
    assert m.loc[BASELINE, "cnn-a"] == 98.0
    for i, a in enumerate(MODELS):
        for j, e in enumerate(MODELS):
            assert m.loc[a, e] == pytest.approx(ne_top1(20.0, i, j))
        assert m.loc[a, PSNR_COL] == pytest.approx(20.25)
        assert m.loc[a, DEV_COL] == pytest.approx(0.01 * (i + 1))
    assert m.loc[BASELINE, [PSNR_COL, DEV_COL]].isna().all()


def test_cross_model_matrix_unknown_selection_is_user_error():
    with pytest.raises(UserError, match="no result rows"):
        cross_model_matrix(synthetic_rows(), "ne", 33.0, "float")


def test_same_arch_matrix_and_summary():
    rows = synthetic_rows()
    m = same_arch_matrix(rows, "ne", 0.0, "float")
    # Per arch (in order of appearance): the first authorized model by label owns the row,
    # the other-weights variants are the columns.
    assert list(m.index) == ["mlp-a", "cnn-a", "lin-a"]  # lin has no variant: last
    assert list(m.columns) == ["mlp-b", "cnn-b"]
    i, j = MODELS.index("mlp-a"), MODELS.index("mlp-b")
    assert m.loc["mlp-a", "mlp-b"] == pytest.approx(ne_top1(0.0, i, j))
    assert m.loc["lin-a", "cnn-b"] == pytest.approx(ne_top1(0.0, MODELS.index("lin-a"), MODELS.index("cnn-b")))

    s = separation_summary(rows, "ne", 0.0, "float")
    a = MODELS.index("cnn-a")
    assert s.loc["cnn-a", "own"] == pytest.approx(CLEAN["cnn-a"] - 0.5 - a * 0.1)
    assert s.loc["cnn-a", "same-arch mean"] == pytest.approx(ne_top1(0.0, a, MODELS.index("cnn-b")))
    others = [ne_top1(0.0, a, MODELS.index(e)) for e in ("mlp-b", "lin-a", "mlp-a")]
    assert s.loc["cnn-a", "other-arch mean"] == pytest.approx(sum(others) / 3)
    assert s.loc["cnn-a", "other-arch max"] == pytest.approx(max(others))


def tiny_rows():
    """Two models, one NE point; numbers chosen to check the leaderboard by hand."""
    return [
        make_row("none", "", "mlp-a", 100.0), make_row("none", "", "cnn-a", 80.0),
        make_row("ne", "mlp-a", "mlp-a", 90.0, dev=0.02, encode_ms=0.2, psnr_true=19.0),
        make_row("ne", "mlp-a", "cnn-a", 20.0, dev=0.9, encode_ms=0.2, psnr_true=19.0),
        make_row("ne", "cnn-a", "cnn-a", 80.0, dev=0.04, encode_ms=0.4, psnr_true=21.0),
        make_row("ne", "cnn-a", "mlp-a", 30.0, dev=0.8, encode_ms=0.4, psnr_true=21.0),
    ]


def test_leaderboard_by_hand():
    board = leaderboard(tiny_rows())
    assert len(board) == 1
    row = board.iloc[0]
    assert row["rank"] == 1 and row["defense"] == "ne" and row["params"] == "tau=0.0001"
    assert row["authorized_top1"] == pytest.approx(85.0)
    assert row["retained"] == pytest.approx((90.0 / 100 + 80.0 / 80) / 2 * 100)  # 95
    assert row["unauthorized_mean"] == pytest.approx(25.0)
    assert row["unauthorized_worst"] == pytest.approx(30.0)
    assert row["attacked_gap"] == pytest.approx(((90 - 20) + (80 - 30)) / 2)  # 60
    assert row["psnr_true"] == pytest.approx(20.0)
    assert row["first_layer_dev_auth"] == pytest.approx(0.03)
    assert row["encode_ms"] == pytest.approx(0.3)
    assert row["n_models"] == 2


def test_leaderboard_groups_and_ranking():
    board = leaderboard(synthetic_rows())
    assert len(board) == 2 * 2 * len(PSNRS)  # defenses x releases x psnrs; "none" excluded
    assert set(board["defense"]) == {"ne", "noise"}
    assert list(board["rank"]) == list(range(1, len(board) + 1))
    assert board["attacked_gap"].is_monotonic_decreasing
    assert board.iloc[0]["defense"] == "ne"


def test_write_leaderboard_json(tmp_path):
    board = leaderboard(tiny_rows())
    paths = write_leaderboard(board, tmp_path, {"suite": "synthetic", "git": "abc123"})
    assert [p.name for p in paths] == ["leaderboard.md", "leaderboard.csv", "leaderboard.provenance.json",
                                       "leaderboard.json"]
    data = json.loads((tmp_path / "leaderboard.json").read_text())
    assert data["kind"] == "authbench-leaderboard" and data["version"] == 1
    assert data["metrics"] == METRIC_DIRECTIONS
    assert data["rows"][0]["key"] == "ne|tau=0.0001|psnr=20|true|float|none"
    assert data["rows"][0]["attacked_gap"] == pytest.approx(60.0)
    assert (tmp_path / "leaderboard.md").read_text().startswith("Measured by authbench")


def test_render_tables_sections_and_provenance(tmp_path):
    paths = render_tables(synthetic_rows(), tmp_path, [20.0, 0.0], ["float"])
    assert {p.name for p in paths} == {"table1_cross_model.md", "table1_cross_model.csv",
                                       "table1_cross_model.provenance.json", "table2_same_arch.md",
                                       "table2_same_arch.csv", "table2_same_arch.provenance.json"}
    t1 = (tmp_path / "table1_cross_model.md").read_text()
    assert t1.startswith("Measured by authbench (suite `synthetic`")
    assert "`abc123`" in t1.splitlines()[0]
    assert "## ne, tau=0.0001: target PSNR 20 dB (psnr_mode true), release float" in t1
    assert "## noise, sigma_from=psnr: target PSNR 0 dB (psnr_mode true), release float" in t1
    assert "uint8" not in t1 and "PSNR -10 dB" not in t1
    assert "94.5" in t1  # NE, authorized cell of mlp-b: 95.0 - 0.5, one decimal
    assert (tmp_path / "table1_cross_model.csv").read_text().startswith("defense,params,psnr,psnr_mode,release,")
    side = json.loads((tmp_path / "table1_cross_model.provenance.json").read_text())
    assert side["file"] == "table1_cross_model.csv" and side["provenance"]["git"] == "abc123"
    assert side["note"].startswith("Measured by authbench (suite `synthetic`")


def test_figures_and_render(tmp_path):
    rows = synthetic_rows()
    path = psnr_curves(rows, tmp_path, "float")
    assert path.name == "fig1_psnr_float.png" and path.stat().st_size > 10_000
    paths = render(rows, tmp_path / "all", {"psnr": [20.0], "release": ["uint8"]})
    names = {p.name for p in paths}
    assert {"table1_cross_model.md", "leaderboard.json", "fig1_psnr_uint8.png"} <= names
    assert "fig1_psnr_float.png" not in names
    defaults = render(rows, tmp_path / "defaults", {})
    assert {"fig1_psnr_float.png", "fig1_psnr_uint8.png"} <= {p.name for p in defaults}


def test_psnr_curves_without_rows_is_user_error(tmp_path):
    with pytest.raises(UserError, match="release 'clip'"):
        psnr_curves(synthetic_rows(), tmp_path, "clip")


def test_every_csv_a_report_writes_reads_back_to_its_shape(tmp_path):
    """Standard CSV: no comment line, so pandas reads every file to the frame that was written, and
    each has a `<name>.provenance.json` sidecar naming it (the old leaderboard.csv read as 9x3)."""
    rows = synthetic_rows()
    rows += [make_row("ne", "mlp-b", m, 30.0, attack="jpeg(quality=75)") for m in MODELS]
    paths = render(rows, tmp_path, {"psnr": [20.0], "release": ["float"]})
    csvs = [p for p in paths if p.suffix == ".csv"]
    assert {"leaderboard.csv", "table1_cross_model.csv", "table2_same_arch.csv", "ne_attacks.csv"} <= {p.name for p in csvs}
    board = leaderboard(rows)
    for path in csvs:
        assert not path.read_text().startswith("#"), path.name
        frame = pd.read_csv(path)
        assert frame.shape[0] > 0 and frame.shape[1] > 3, path.name
        side = json.loads(path.with_name(path.stem + ".provenance.json").read_text())
        assert side["kind"] == "authbench-provenance" and side["file"] == path.name
        assert side["provenance"]["suite"] == "synthetic"
    frame = pd.read_csv(tmp_path / "leaderboard.csv", keep_default_na=False, na_values=[""])
    assert frame.shape == board.shape and list(frame.columns) == list(board.columns)
    assert list(frame["defense"]) == list(board["defense"])
    assert frame["attacked_gap"].tolist() == pytest.approx(board["attacked_gap"].tolist(), nan_ok=True)

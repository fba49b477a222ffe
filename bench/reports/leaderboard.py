"""Leaderboard: one row per protected configuration, ranked by the authorization gap."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from bench.attacks import get_attack
from bench.core.declared import ranked
from bench.core.metrics import LEADERBOARD_METRICS
from bench.core.types import infer_protocol
from bench.defenses import get_defense
from bench.errors import UserError
from bench.results import json_view
from bench.reports.tables import clean_top1, measured_line, results_frame, to_markdown, write_csv

METRIC_DIRECTIONS = LEADERBOARD_METRICS  # bench.core.metrics
GROUP = ["defense", "params", "psnr", "psnr_mode", "release", "attack"]
COLUMNS = ["rank", *GROUP, "authorized_top1", "retained", "unauthorized_mean", "unauthorized_worst", "attacked_gap",
           "psnr_true", "first_layer_dev_auth", "encode_ms", "protect_ms", "key_kb", "n_models"]
_DECIMALS = {"rank": 0, "n_models": 0, "first_layer_dev_auth": 3, "encode_ms": 3, "protect_ms": 1, "key_kb": 1}


def _group_metrics(cells: pd.DataFrame, clean: pd.Series) -> dict:
    """Metrics of one configuration; per authorized model a, then averaged over a."""
    own = cells[cells["role"] == "authorized"].groupby("authorized")
    unauth = cells[cells["role"].isin(["same-arch", "unauthorized"])]
    auth = own["top1"].mean()
    worst = unauth.groupby("authorized")["top1"].max().reindex(auth.index)
    return {
        "authorized_top1": auth.mean(),
        "retained": (100.0 * auth / clean.reindex(auth.index)).mean(),
        "unauthorized_mean": unauth["top1"].mean(),
        "unauthorized_worst": unauth["top1"].max(),
        "attacked_gap": (auth - worst).mean(),
        "psnr_true": own["psnr_true"].mean().mean(),
        "first_layer_dev_auth": own["first_layer_dev"].mean().mean(),
        "encode_ms": own["encode_ms"].mean().mean(),
        "protect_ms": own["protect_ms"].mean().mean(),
        "key_kb": own["artifact_bytes"].mean().mean() / 1024,
        "n_models": cells["evaluated"].nunique(),
    }


def leaderboard(rows: list[dict]) -> pd.DataFrame:
    """Rank every protected (defense, params, point, release, attack) by attacked_gap, the mean over
    authorized models a of (top1 of a on its own data after the attack - max top1 of any other model on it).
    `retained` is a's top1 as a percent of its clean top1 (defense "none", same attack when measured)."""
    frame = results_frame(ranked_rows(json_view(rows)))  # the rows of the protocols that declare themselves `ranked`
    protected = frame[frame["defense"] != "none"]
    records = []
    for key, cells in protected.groupby(GROUP, sort=False, dropna=False):
        records.append({**dict(zip(GROUP, key)), **_group_metrics(cells, clean_top1(frame, key[-1]))})
    board = pd.DataFrame.from_records(records, columns=[c for c in COLUMNS if c != "rank"])
    board = board.sort_values("attacked_gap", ascending=False, na_position="last", kind="stable").reset_index(drop=True)
    board.insert(0, "rank", range(1, len(board) + 1))
    return board


def ranked_rows(rows: list) -> list:
    """The rows of the protocols that declare themselves ranked (bench.protocols.base.Protocol.ranked)."""
    return [r for r in rows if ranked(infer_protocol(r))]


def leaderboard_cells(rows: list[dict]) -> list[tuple[str, str, float, bool]]:
    """The `check` cells of the leaderboard: (row key, metric, value, trains at run time) per measured metric."""
    out = []
    ranked_part = ranked_rows(rows)
    if ranked_part:
        for rec in leaderboard_records(leaderboard(ranked_part)):
            trained = trains_at_run_time(rec["defense"], rec["attack"])
            for metric in METRIC_DIRECTIONS:
                value = rec.get(metric)
                if value is not None and not (isinstance(value, float) and math.isnan(value)):
                    out.append((rec["key"], metric, float(value), trained))
    return out


def leaderboard_summary(rows: list[dict]) -> list[str]:
    """What `authbench run` prints for ranked rows: the top of the leaderboard."""
    board = leaderboard(ranked_part) if (ranked_part := ranked_rows(rows)) else None
    return [format_leaderboard(board, top=20)] if board is not None and not board.empty else []


def trains_at_run_time(defense: str, attack: str) -> bool:
    """Whether a board row's defense or attack trains at run time (`Plugin.trains`); a plugin not installed
    here counts as training, so its cells are never held to exactness."""
    try:
        if get_defense(defense).trains:
            return True
        return bool(get_attack(attack.partition("(")[0]).trains)
    except UserError:
        return True


def row_key(row: dict) -> str:
    """Stable identity of a leaderboard row: defense|params|psnr|psnr_mode|release|attack."""
    psnr = row["psnr"]
    psnr = "" if psnr is None or (isinstance(psnr, float) and math.isnan(psnr)) else f"{float(psnr):g}"
    return "|".join([row["defense"], row["params"], f"psnr={psnr}", row["psnr_mode"], row["release"], row["attack"]])


def _plain(value):
    if hasattr(value, "item"):
        value = value.item()
    return None if isinstance(value, float) and math.isnan(value) else value


def leaderboard_records(df: pd.DataFrame) -> list[dict]:
    """The leaderboard as JSON-ready dicts, each with its `key`; NaN becomes null."""
    records = []
    for row in df.to_dict("records"):
        row = {k: _plain(v) for k, v in row.items()}
        records.append({"key": row_key(row), **row})
    return records


def format_leaderboard(df: pd.DataFrame, top: int | None = None) -> str:
    """Markdown of the leaderboard (the first `top` rows when given)."""
    shown = df.head(top) if top is not None else df
    return to_markdown(shown, _DECIMALS, index=False)


def write_leaderboard(df: pd.DataFrame, out_dir: Path, provenance: dict, boards: list[dict] | None = None) -> list[Path]:
    """Write leaderboard.md, leaderboard.csv (+ its provenance sidecar) and leaderboard.json (the format `check`
    reads; `boards`, the like-for-like boards as JSON (bench.reports.boards), ride along for `authbench rank`)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    head = measured_line(provenance)
    directions = ", ".join(f"{m} ({d} is better)" for m, d in METRIC_DIRECTIONS.items())
    md, csv, js = out_dir / "leaderboard.md", out_dir / "leaderboard.csv", out_dir / "leaderboard.json"
    md.write_text(f"{head}\n\n# Leaderboard\n\nRanked by attacked_gap (every model, the authorized one included, scored on the attacked release; the boards' auth_gap scores the authorized model on the release as delivered: boards.md). Accuracies in top-1 %; {directions}.\n\n"
                  f"{format_leaderboard(df)}\n")
    sidecar = write_csv(df, csv, provenance, head)[1]
    payload = {"kind": "authbench-leaderboard", "version": 1, "provenance": provenance,
               "metrics": METRIC_DIRECTIONS, "rows": leaderboard_records(df)}
    if boards is not None:
        payload["boards"] = boards
    js.write_text(json.dumps(payload, indent=1, sort_keys=False) + "\n")
    return [md, csv, sidecar, js]

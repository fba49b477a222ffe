"""Leaderboard entries: one JSON file per (defense, operating point) per board, with its provenance.

    <dir>/<suite>/<board>/<entry>.json    (schema: docs/entry.schema.json)

An entry names the defense (its class's `name` and `description`), the paper it comes from, the
measured figures of its board row, the figures a paper reported beside them (each with its full
citation; never typed here for a setting the paper did not measure) and the run's provenance.
A third-party defense states its paper with a class attribute `paper = {"authors": ..., "title":
..., "venue": ..., "arxiv": ..., "link": ...}` and reported figures with `reported = [{"metric":
..., "value": ..., "suite": ..., "cite": {"authors", "title", "venue", "table", "row", "column"}}]`.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.cache import atomic_write_bytes, digest
from bench.defenses import get_defense
from bench.errors import UserError
from bench.paths import slug, under
from bench.reports.boards import Board, BoardRow

ENTRY_KIND = "authbench-entry"
ENTRY_VERSION = 1
SCHEMA = Path(__file__).resolve().parent.parent.parent / "docs" / "entry.schema.json"

NE = {"authors": "Wang et al.", "title": "Catch-Only-One: Non-Transferable Examples for Model-Specific Authorization",
      "venue": "arXiv", "arxiv": "2510.10982", "link": "https://arxiv.org/abs/2510.10982"}
CORELOCKER = {"authors": "Zihan Wang, Zhongkui Ma, Xinguo Feng, Ruoxi Sun, Hu Wang, Minhui Xue, Guangdong Bai",
              "title": "CoreLocker: Neuron-level Usage Control", "venue": "IEEE S&P 2024", "arxiv": None,
              "link": "https://github.com/CoreLocker/CoreLocker"}
MFUE = {"authors": "Xu et al.", "title": "Breaking the Boundary Barrier: Robust Model Fingerprinting via Unlearnable "
        "Examples in Model-Parameter Space", "venue": "KDD '26", "arxiv": None,
        "link": "https://doi.org/10.1145/3770854.3780310"}
# The baselines are scored as the NE paper's Table 3 instantiates them (baselines/README.md).
PAPERS = {"ne-patch": NE, "ne-operator": NE, "corelocker": CORELOCKER, "mfue-w": MFUE, "mfue-b": MFUE,
          "dp": NE, "fhe": NE, "algospec": NE}
PAPER_NOTES = {"ne-operator": "a whole-operator variant of NE's construction (docs/ne.md), not the paper's own",
               "dp": "as instantiated in NE Table 3", "fhe": "as instantiated in NE Table 3",
               "algospec": "as instantiated in NE Table 3 (ALGOSPEC: Liu et al., USENIX Security 2024)",
               "noise": "the model-agnostic Gaussian-noise control at the same PSNR; no paper"}


def _cls(defense: str):
    try:
        return get_defense(defense)
    except UserError:
        return None


def paper_of(defense: str) -> dict | None:
    """The defense's paper: its class's `paper` attribute, else the built-in table, else None."""
    cls = _cls(defense)
    paper = getattr(cls, "paper", None) if cls is not None else None
    paper = paper or PAPERS.get(getattr(cls, "name", defense))
    if not paper:
        return None
    out = {k: paper.get(k) for k in ("authors", "title", "venue", "arxiv", "link")}
    note = PAPER_NOTES.get(getattr(cls, "name", defense))
    return {**out, "note": note} if note else out


def reported_of(defense: str, suite: str) -> list[dict]:
    """Figures a paper reported for this defense on this suite (the class's `reported`, filtered by suite)."""
    cls = _cls(defense)
    return [dict(r) for r in (getattr(cls, "reported", None) or []) if r.get("suite") == suite]


def entry_name(board: Board, row: BoardRow) -> str:
    """The entry's file stem: the defense's name and a digest of (board, operating point)."""
    return f"{slug(row.name, 'defense')[:80]}-{digest([board.key.slug, row.entry])[:10]}"


def build_entry(board: Board, row: BoardRow) -> dict:
    return {
        "kind": ENTRY_KIND, "version": ENTRY_VERSION,
        "name": row.name, "description": row.description, "defense": row.defense,
        "board": {**board.key.to_json(), "slug": board.key.slug, "title": board.title, "headline": board.headline},
        "operating_point": {"entry": row.entry, "params": row.params, "psnr": row.psnr, "psnr_mode": row.psnr_mode,
                            "release": row.release},
        "paper": paper_of(row.defense),
        "measured": {"values": row.values, "rank": row.rank, "complete": row.complete, "missing": list(row.missing),
                     "worst_attack": row.worst_attack, "authorized": list(row.authorized), "n": list(row.n),
                     "per_model": row.per_model},
        "reported": reported_of(row.defense, board.key.suite),
        "provenance": {**row.provenance, "models": board.models},
    }


def write_entries(boards: list[Board], folder: Path, only_new: bool = True, ranked_only: bool = False) -> list[Path]:
    """One entry file per row (the new rows when `only_new`; the ranked ones when `ranked_only`) of every board,
    under folder/<suite>/<board>/."""
    paths = []
    for board in boards:
        for row in board.rows:
            if (only_new and not row.new) or (ranked_only and row.rank is None):
                continue
            path = under(folder, board.key.suite, board.key.board, f"{entry_name(board, row)}.json",
                         what="leaderboard entry path part")
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, (json.dumps(build_entry(board, row), indent=1) + "\n").encode())
            paths.append(path)
    return paths


def entry_schema() -> dict:
    return json.loads(SCHEMA.read_text())

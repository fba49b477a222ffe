"""Result rows: one JSON line per cell, appended durably, read back tolerant of a torn last line.

A row (all keys always present):
  cell        digest of the cell's configuration (the resume key)
  suite       suite name;            suite_digest: digest of the suite file's parsed content
  defense     registry name;         params: the defense's full parameters (JSON object)
  point       the swept parameters of this cell, e.g. {"psnr": 20.0, "psnr_mode": "true"}
  release     "float" | "clip" | "uint8" | "clean" | "model" (model defenses) | "verify" (fingerprints)
  attack      attack label: registry name and its parameters ("none" when no attack)
  authorized  label of the model the data was protected for ("" for the clean baseline)
  evaluated   label of the model evaluated on the released data
  role        "clean" (no defense) | "authorized" (evaluated is the authorized model)
              | "same-arch" (same architecture, other weights) | "unauthorized" (other architecture)
  arch        {"authorized": arch or "", "evaluated": arch}
  metrics     {"top1": percent, "first_layer_dev": mean relative deviation of the evaluated
              model's first linear map on released vs clean input}
  encoding    {"psnr_true": mean achieved pixel-space PSNR (dB), "psnr_nominal": paper-nominal dB
              or null, "calib_err_db": max |achieved - target|, "unreachable": samples whose target
              could not be met, "subspace_dim": int or null, "encode_ms": ms per sample,
              "fit_ms": one-time fit (SVD) in ms}
  attack_stats  null, or what an input-side attack recorded: "psnr" (attacked vs clean, dB) and
              a learned attack's fit facts (e.g. "rank" of a projection, "train_mse" of a denoiser)
  cost        null, or a model defense's measured costs (Protected.cost)
  n           number of evaluated samples (rows whose logits are all finite; a model may score a subset)
  provenance  {"model_digest", "authorized_digest", "input_digest", "versions",
              "git", "device", "seed", "wall_s", "cache": {"hits", "misses", "corrupt"}, "forwards"}
Model-defense and fingerprint rows add "job" and "job_rows" (the job's key and how many rows
it writes, for resume); fingerprint rows (bench.verify_cells) have role "positive" | "negative" |
"summary" and add "suspect_kind", with the ROC metrics (AUC, TPR at 1% / 5% FPR, CIs) on the
summary row.
GLUE and MMBench rows (bench.text.runner, bench.vlm.runner) add "benchmark" ("glue" | "mmbench")
and "task"; their metrics.top1 is the task's primary metric x 100 (GLUE) or Overall circular
accuracy x 100 (MMBench), with every official metric / capability group beside it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from bench.errors import UserError

RESULTS_FILE = "results.jsonl"


def results_path(path: Path) -> Path:
    """Accept a run folder (existing or not) or a .jsonl results file."""
    path = Path(path)
    return path if path.suffix == ".jsonl" else path / RESULTS_FILE


def read_rows(path: Path) -> list[dict]:
    """All complete rows; a torn last line (killed mid-write) is ignored."""
    path = results_path(path)
    if not path.exists():
        raise UserError(f"results file {str(path)!r} does not exist; pass a run folder or its {RESULTS_FILE}")
    rows = []
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break
            raise UserError(f"{path}:{i + 1} is not a JSON result row; the file is damaged")
    return rows


class ResultWriter:
    """Appends rows durably; repairs a torn tail left by a crash before appending."""

    def __init__(self, path: Path):
        self.path = results_path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._repair_tail()

    def _repair_tail(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            with open(self.path, "r+b") as f:
                f.truncate(keep)

    def rows(self) -> list[dict]:
        return read_rows(self.path) if self.path.exists() else []

    def append(self, rows: list[dict]) -> None:
        if not rows:
            return
        text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)
        with open(self.path, "a") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

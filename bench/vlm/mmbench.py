"""MMBench through VLMEvalKit: its dataset, prompt building and circular scoring, with a prediction cache.

The dataset is a VLMEvalKit name (e.g. "MMBench_DEV_EN", fetched into $LMUData by VLMEvalKit) or a
local TSV path in VLMEvalKit's format ($LMUData is pointed at its folder; a name VLMEvalKit does
not know becomes its CustomMCQDataset, and circular evaluation switches on when the name contains
"mmbench" or "circular", as VLMEvalKit decides). Answers are extracted by exact matching (no judge
model) unless `judge` names one. Scores: Overall and the six capability groups (l2-category).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pandas as pd

from bench.core.cache import atomic_write_bytes, digest
from bench.core.errors import UserError
from bench.vlm.vlmeval_import import import_vlmeval

def load_mmbench(name_or_path: str):
    """A VLMEvalKit dataset object for a dataset name or a local .tsv path."""
    path, saved = Path(name_or_path), os.environ.get("LMUData")
    if path.suffix == ".tsv":
        if not path.is_file():
            raise UserError(f"MMBench file {str(path)!r} does not exist; give a VLMEvalKit TSV or a dataset name")
        os.environ["LMUData"] = str(path.resolve().parent)  # VLMEvalKit reads <LMUData>/<name>.tsv
        name = path.stem
    else:
        name = name_or_path
    build_dataset = import_vlmeval("vlmeval.dataset").build_dataset
    try:
        dataset = build_dataset(name)
    except Exception as exc:  # VLMEvalKit downloads official names: network errors land here
        raise UserError(f"VLMEvalKit could not build dataset {name!r} ({type(exc).__name__}: {exc}); without "
                        "network give [data] path = \"<LMUData>/<name>.tsv\"") from None
    finally:
        if saved is None:
            os.environ.pop("LMUData", None)
        else:
            os.environ["LMUData"] = saved
    if dataset is None:
        raise UserError(f"VLMEvalKit could not build dataset {name!r}; give a dataset name it knows or a .tsv path")
    return dataset


def file_sha(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class PredictionCache:
    """One JSON file per (model identity, image bytes, prompt), written atomically."""

    def __init__(self, root: Path):
        self.root = Path(root) / "vlm-predictions"
        self.hits = self.misses = 0

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def key(self, model_identity: dict, image_sha: str, message: list[dict]) -> str:
        text = [m["value"] for m in message if m["type"] == "text"]
        return digest({"model": model_identity, "image": image_sha, "text": text})

    def get(self, key: str) -> str | None:
        try:
            value = json.loads(self._path(key).read_text())["prediction"]
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            self.misses += 1
            return None
        self.hits += 1
        return value

    def put(self, key: str, prediction: str) -> None:
        atomic_write_bytes(self._path(key), json.dumps({"prediction": prediction}).encode())


def message_for(model, dataset, line, image_path: str) -> list[dict]:
    """The model's prompt for `line` (its own builder when it has one), with the image replaced."""
    name = dataset.dataset_name
    if hasattr(model, "set_dump_image"):  # as VLMEvalKit's inference does: custom prompts dump images through it
        model.set_dump_image(dataset.dump_image)
    if model.use_custom_prompt(name):
        message = model.build_prompt(line, dataset=name)
    else:
        message = dataset.build_prompt(line)
    return [dict(m, value=image_path) if m["type"] == "image" else m for m in message]


def evaluate(dataset, predictions: dict[int, str], work_dir: Path, judge: str = "exact_matching") -> dict:
    """VLMEvalKit's own scoring (circular for MMBench) of {index: prediction}; fractions per group."""
    work_dir.mkdir(parents=True, exist_ok=True)
    frame = dataset.data.drop(columns=[c for c in ("image",) if c in dataset.data.columns]).copy()
    frame["prediction"] = [predictions[int(i)] for i in frame["index"]]
    eval_file = work_dir / f"{dataset.dataset_name}_predictions.tsv"
    frame.to_csv(eval_file, sep="\t", index=False)
    saved = os.environ.get("PRED_FORMAT")
    os.environ["PRED_FORMAT"] = "tsv"  # VLMEvalKit's intermediate files; its xlsx default needs xlsxwriter
    try:
        acc = dataset.evaluate(str(eval_file), model=judge, nproc=1)
    finally:
        if saved is None:
            os.environ.pop("PRED_FORMAT")
        else:
            os.environ["PRED_FORMAT"] = saved
    if not isinstance(acc, pd.DataFrame) or "Overall" not in acc:
        raise UserError(f"VLMEvalKit returned no Overall accuracy for {dataset.dataset_name!r}")
    first = acc.iloc[0]
    return {k: float(first[k]) for k in acc.columns if k != "split"}

"""GLUE tasks: text columns, label counts, evaluation split and the official metrics.

Data comes from the hub dataset "nyu-mll/glue" through `datasets` (loaded lazily), or from a
local file (.tsv, .csv or .jsonl) with the hub's column names and a `label` column.
Metrics follow GLUE: Matthews correlation for CoLA, Pearson/Spearman for STS-B, accuracy and
F1 for MRPC/QQP, accuracy elsewhere. `primary` is the number Table 7 shows (x100); the paper
does not say which STS-B correlation it reports, so Pearson is primary and Spearman is kept beside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from bench.errors import UserError, install_hint

HUB_DATASET = "nyu-mll/glue"


@dataclass(frozen=True)
class GlueTask:
    name: str
    text_a: str
    text_b: str | None
    num_labels: int  # 1 = regression (STS-B)
    eval_split: str
    metrics: tuple[str, ...]
    primary: str
    hub: str = HUB_DATASET  # the hub dataset; GLUE tasks are configs of it, named as the task
    hub_config: str | None = None


TASKS = {
    t.name: t
    for t in (
        GlueTask("cola", "sentence", None, 2, "validation", ("matthews", "accuracy"), "matthews"),
        GlueTask("sst2", "sentence", None, 2, "validation", ("accuracy",), "accuracy"),
        GlueTask("mrpc", "sentence1", "sentence2", 2, "validation", ("accuracy", "f1"), "accuracy"),
        GlueTask("qqp", "question1", "question2", 2, "validation", ("accuracy", "f1"), "accuracy"),
        GlueTask("stsb", "sentence1", "sentence2", 1, "validation", ("pearson", "spearman"), "pearson"),
        GlueTask("mnli", "premise", "hypothesis", 3, "validation_matched", ("accuracy",), "accuracy"),
        GlueTask("qnli", "question", "sentence", 2, "validation", ("accuracy",), "accuracy"),
        GlueTask("rte", "sentence1", "sentence2", 2, "validation", ("accuracy",), "accuracy"),
        GlueTask("wnli", "sentence1", "sentence2", 2, "validation", ("accuracy",), "accuracy"),
        # not GLUE: AG News (4-class topic classification), CoreLocker Table 6's BERT row
        GlueTask("ag_news", "text", None, 4, "test", ("accuracy",), "accuracy", hub="fancyzhx/ag_news"),
    )
}
PAPER_TASKS = ("cola", "mnli", "qnli", "qqp", "rte", "sst2", "stsb")


def get_task(name: str) -> GlueTask:
    key = name.lower().replace("-", "").replace("_", "")
    key = {k.replace("_", ""): k for k in TASKS}.get(key, key)
    if key not in TASKS:
        raise UserError(f"unknown GLUE task {name!r}; valid choices: {', '.join(TASKS)}")
    return TASKS[key]


@dataclass
class TextSplit:
    """Sentence (pairs) and gold labels of one GLUE split, with an identity for the cache."""

    task: GlueTask
    text_a: list[str]
    text_b: list[str] | None
    labels: np.ndarray
    indices: np.ndarray
    identity: dict

    def __len__(self) -> int:
        return len(self.text_a)


def _read_local(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise UserError(f"GLUE data file {str(path)!r} does not exist; give a .tsv, .csv or .jsonl file")
    if path.suffix == ".tsv":
        return pd.read_csv(path, sep="\t", quoting=3, keep_default_na=False)
    if path.suffix == ".csv":
        return pd.read_csv(path, keep_default_na=False)
    if path.suffix == ".jsonl":
        return pd.read_json(path, lines=True)
    raise UserError(f"GLUE data file {str(path)!r}: unknown format; use .tsv, .csv or .jsonl")


def _read_hub(task: GlueTask, split: str) -> pd.DataFrame:
    try:
        import datasets
    except ImportError:
        raise UserError(f"loading GLUE by hub name needs `datasets` ({install_hint('text')}), "
                        "or give local files with files = {task = path}") from None
    try:
        config = task.name if task.hub == HUB_DATASET else task.hub_config
        return datasets.load_dataset(task.hub, config, split=split).to_pandas()
    except Exception as exc:  # network, offline mode, unknown split: one line for the user
        raise UserError(f"could not load {task.hub} {task.name!r} split {split!r} ({type(exc).__name__}: {exc}); "
                        "without hub access give local files with [data] files = {task = path}") from None


def load_glue(task_name: str, path: str | None = None, split: str | None = None, subset: int = 0,
              subset_seed: int = 0) -> TextSplit:
    """The task's evaluation split (or `split`), from the hub or a local file; `subset` > 0 keeps a
    seeded random subset of that many examples."""
    task = get_task(task_name)
    split = split or task.eval_split
    frame = _read_local(Path(path)) if path else _read_hub(task, split)
    needed = [task.text_a, *([task.text_b] if task.text_b else []), "label"]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise UserError(f"GLUE {task.name} data lacks column(s) {', '.join(missing)}; "
                        f"expected {', '.join(needed)} (the hub's column names)")
    indices = np.arange(len(frame))
    if subset and subset < len(frame):
        indices = np.sort(np.random.default_rng(subset_seed).choice(len(frame), subset, replace=False))
    frame = frame.iloc[indices]
    labels = frame["label"].to_numpy(dtype=np.float64 if task.num_labels == 1 else np.int64)
    if task.num_labels > 1 and (labels < 0).any():
        raise UserError(f"GLUE {task.name} split {split!r} has unlabeled rows (label -1, the test split); "
                        f"use {task.eval_split!r}")
    source = {"file": str(Path(path).resolve()), "bytes": Path(path).stat().st_size} if path else {"hub": task.hub}
    return TextSplit(
        task=task,
        text_a=frame[task.text_a].astype(str).tolist(),
        text_b=frame[task.text_b].astype(str).tolist() if task.text_b else None,
        labels=labels,
        indices=indices,
        identity={"glue": task.name, "split": split, **source, "subset": int(subset), "subset_seed": int(subset_seed)},
    )


def predictions(task: GlueTask, logits: np.ndarray) -> np.ndarray:
    """Class ids (argmax), or the regression score for STS-B."""
    return logits[:, 0] if task.num_labels == 1 else logits.argmax(1)


def score(task: GlueTask, logits: np.ndarray, labels: np.ndarray) -> dict:
    """Every official metric of the task (fractions) and `top1` = the primary metric x 100."""
    pred = predictions(task, logits).astype(np.float64)
    constant = np.ptp(pred) == 0  # a constant prediction has no correlation: scored 0
    out = {}
    for metric in task.metrics:
        if metric == "accuracy":
            out[metric] = float(accuracy_score(labels, pred))
        elif metric == "f1":
            out[metric] = float(f1_score(labels, pred))
        elif metric == "matthews":
            out[metric] = float(matthews_corrcoef(labels, pred))
        elif metric == "pearson":
            out[metric] = 0.0 if constant else float(pearsonr(pred, labels)[0])
        elif metric == "spearman":
            out[metric] = 0.0 if constant else float(spearmanr(pred, labels)[0])
    out["primary"] = task.primary
    out["top1"] = 100.0 * out[task.primary]
    return out

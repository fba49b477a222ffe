"""SST-2 classification heads on frozen pretrained text encoders: the recipe's library part (encode the
training rows once, fit the seeded logistic head, fold it into an nn.Linear, store and reload it by digest,
dev accuracy). The recipe in words and its command line: bench.recipes.sst2_heads; the pooled
classifier (bench.text.pooled) loads heads from here."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from bench.core.cache import cache_root as default_root
from bench.core.errors import UserError
from bench.text.glue import load_glue
from bench.text.pooling import pool

RECIPE = "sst2-heads/v1"


@dataclass(frozen=True, kw_only=True)
class HeadSpec:
    train: str  # SST-2 train .tsv (columns sentence, label)
    train_rows: int = 6000
    seed: int = 0
    pooling: str = "mean"
    max_length: int = 64
    c: float = 1.0
    batch_size: int = 64


def _file_sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def encoder_digest(folder: Path) -> str:
    """sha256 over the encoder folder's weight, config and tokenizer files (names and contents)."""
    h = hashlib.sha256()
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix in (".safetensors", ".bin", ".json", ".txt", ".onnx"):
            h.update(p.name.encode() + b"\0" + _file_sha(p).encode())
    return h.hexdigest()


@torch.no_grad()
def embed(encoder, tokenizer, sentences: list[str], pooling: str, max_length: int, batch_size: int = 64) -> np.ndarray:

    out = []
    for i in range(0, len(sentences), batch_size):
        enc = tokenizer(sentences[i:i + batch_size], padding=True, truncation=True, max_length=max_length,
                        return_tensors="pt")
        hidden = encoder(**enc).last_hidden_state
        out.append(pool(hidden, enc["attention_mask"], pooling).float().numpy())
    return np.concatenate(out) if out else np.zeros((0, encoder.config.hidden_size), np.float32)


def fit_head(x: np.ndarray, y: np.ndarray, c: float = 1.0, seed: int = 0) -> nn.Linear:
    """Standardised logistic regression folded into nn.Linear(d, 2)."""
    from sklearn.linear_model import LogisticRegression

    if len(np.unique(y)) != 2:
        raise UserError(f"the SST-2 head needs both labels in the training rows, got {sorted(set(y.tolist()))}")
    mu, sd = x.mean(0), x.std(0) + 1e-6
    clf = LogisticRegression(C=c, max_iter=2000, random_state=seed).fit((x - mu) / sd, y)
    w = clf.coef_[0] / sd  # decision z = w.x + b on raw features
    b = float(clf.intercept_[0] - (clf.coef_[0] * mu / sd).sum())
    head = nn.Linear(x.shape[1], 2)
    with torch.no_grad():
        head.weight.copy_(torch.tensor(np.stack([-w / 2, w / 2]), dtype=torch.float32))
        head.bias.copy_(torch.tensor([-b / 2, b / 2], dtype=torch.float32))
    return head


def read_rows(path: str, rows: int = 0) -> tuple[list[str], np.ndarray]:

    split = load_glue("sst2", path)
    n = len(split) if rows <= 0 else min(rows, len(split))
    return split.text_a[:n], split.labels[:n]


def head_key(folder: Path, spec: HeadSpec) -> dict:
    return {"recipe": RECIPE, "encoder": encoder_digest(folder), "train_sha256": _file_sha(Path(spec.train)),
            **{k: v for k, v in asdict(spec).items() if k not in ("train", "batch_size")}}


def save_head(path: Path, head: nn.Linear, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"weight": head.weight.detach().clone(), "bias": head.bias.detach().clone(), "record": record}, tmp)
    tmp.replace(path)


def load_head(path: Path) -> tuple[nn.Linear, dict]:
    if not path.is_file():
        raise UserError(f"head file {str(path)!r} does not exist (train it with python -m bench.recipes.sst2_heads)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    w = state["weight"]
    head = nn.Linear(w.shape[1], w.shape[0])
    with torch.no_grad():
        head.weight.copy_(w), head.bias.copy_(state["bias"])
    return head, dict(state.get("record") or {})


def train_or_load_head(encoder, tokenizer, folder: Path, spec: HeadSpec, cache_root: Path | None = None,
                       log=None) -> tuple[nn.Linear, dict]:
    """The cached head for (encoder, spec), trained now if absent."""

    if not spec.train:
        raise UserError("the sst2-heads recipe needs 'train' (the SST-2 train .tsv)")
    key = head_key(folder, spec)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    path = Path(cache_root or default_root()) / "heads" / f"{digest}.pt"
    if path.is_file():
        return load_head(path)
    torch.manual_seed(spec.seed)
    start = time.perf_counter()
    sentences, labels = read_rows(spec.train, spec.train_rows)
    x = embed(encoder, tokenizer, sentences, spec.pooling, spec.max_length, spec.batch_size)
    head = fit_head(x, labels, spec.c, spec.seed)
    train_acc = float(((x @ head.weight.detach().numpy().T + head.bias.detach().numpy()).argmax(1) == labels).mean())
    record = {**key, "digest": digest, "rows": len(labels), "train_accuracy": train_acc,
              "wall_s": time.perf_counter() - start}
    save_head(path, head, record)
    if log:
        log(f"trained head {digest} on {len(labels)} rows in {record['wall_s']:.0f} s (train accuracy {train_acc:.4f})")
    return head, record


@torch.no_grad()
def dev_accuracy(model, tokenizer, dev_path: str, max_length: int, batch_size: int = 64) -> float:
    sentences, labels = read_rows(dev_path)
    preds = []
    for i in range(0, len(sentences), batch_size):
        enc = tokenizer(sentences[i:i + batch_size], padding=True, truncation=True, max_length=max_length,
                        return_tensors="pt")
        preds.append(model(**enc).logits.argmax(1).numpy())
    return float((np.concatenate(preds) == labels).mean())

"""A pretrained text encoder with a pooled linear head, as one sequence classifier (spec source `text-pooled`).

Sentence encoders such as all-MiniLM-L6-v2 are used with mean pooling over the real tokens; a
transformers `...ForSequenceClassification` would read the [CLS] pooler instead. `PooledClassifier`
keeps the encoder (`base_model`, whose `embeddings` module is NE's text entry point) and applies
the pooling and the head itself, so every model the GLUE protocol scores - clean or on a released
embedding sequence - runs encoder + head end to end (bench.text.adapter.TextClassifier).

Spec (a kit model, `kit-file:` values already replaced by cache paths):
    {"source": "text-pooled", "encoder": "<dir, its config.json, or a BERT .onnx file>", "pooling": "mean" | "cls",
     "max_length": 64, "head": {"recipe": "sst2-heads", "train": "<train.tsv>", "train_rows": 6000, "seed": 0}}
The head comes from bench.text.heads (the recipe of bench.recipes.sst2_heads: trained once, seeded, kept in the
cache), or from a file: "head": {"path": "<head.pt>"}.
An `.onnx` encoder (a BERT exported by torch.onnx) is rebuilt as a transformers BertModel with the file's
weights (bench.text.onnx_bert; optional "num_attention_heads"); its tokenizer files lie in the same folder.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn as nn

from bench.core.errors import UserError
from bench.text.heads import HeadSpec, load_head, train_or_load_head
from bench.text.pooling import pool

POOLINGS = ("mean", "cls")


class PooledClassifier(nn.Module):
    def __init__(self, encoder: nn.Module, head: nn.Linear, pooling: str = "mean"):
        super().__init__()
        if pooling not in POOLINGS:
            raise UserError(f"pooling {pooling!r} is not one of {', '.join(POOLINGS)}")
        self.encoder = encoder
        self.head = head
        self.pooling = pooling
        self.config = encoder.config
        self.config.num_labels = head.out_features

    @property
    def base_model(self) -> nn.Module:
        return self.encoder

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, **_):
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        kwargs = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state
        return SimpleNamespace(logits=self.head(pool(hidden, attention_mask, self.pooling)))


def encoder_dir(spec: dict) -> Path:
    value = spec.get("encoder")
    if not value:
        raise UserError("a text-pooled model spec needs 'encoder' (a transformers model folder or its config.json)")
    path = Path(str(value))
    return path.parent if path.suffix in (".json", ".onnx") else path


def load_encoder(folder: Path, onnx_file: Path | None = None, num_attention_heads: int | None = None):
    """(encoder, tokenizer) from a transformers folder, or from a BERT .onnx file with the tokenizer in `folder`."""
    from transformers import AutoModel, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        if onnx_file is not None:
            from bench.text.onnx_bert import bert_from_onnx

            return bert_from_onnx(onnx_file, num_attention_heads), tokenizer
        encoder = AutoModel.from_pretrained(str(folder))
    except OSError as exc:
        raise UserError(f"cannot load the text encoder in {str(folder)!r} ({str(exc).splitlines()[0]})") from None
    return encoder.eval(), tokenizer


def load_pooled(label: str, spec: dict, cache_root: Path | None = None):
    """(PooledClassifier, tokenizer, head record) for a `text-pooled` spec."""

    folder = encoder_dir(spec)
    onnx_file = Path(str(spec["encoder"])) if str(spec["encoder"]).endswith(".onnx") else None
    heads = spec.get("num_attention_heads")
    encoder, tokenizer = load_encoder(folder, onnx_file, int(heads) if heads else None)
    pooling = str(spec.get("pooling", "mean"))
    head_spec = spec.get("head")
    if not isinstance(head_spec, dict):
        raise UserError(f"text model {label!r}: 'head' must be a table ({{recipe = 'sst2-heads', ...}} or {{path = ...}})")
    if "path" in head_spec:
        head, record = load_head(Path(head_spec["path"]))
    else:
        hs = HeadSpec(train=str(head_spec.get("train", "")), train_rows=int(head_spec.get("train_rows", 6000)),
                      seed=int(head_spec.get("seed", 0)), pooling=pooling, max_length=int(spec.get("max_length", 64)),
                      c=float(head_spec.get("c", 1.0)))
        head, record = train_or_load_head(encoder, tokenizer, folder, hs, cache_root)
    return PooledClassifier(encoder, head, pooling), tokenizer, record

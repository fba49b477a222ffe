"""A transformers sequence classifier behind one interface: tokenize, embed, classify from embeddings.

The NE entry point for text is the output of the model's embedding module (word + position
+ token-type embeddings after the embedding LayerNorm; dropout is off in eval mode): that is
the tensor the first self-attention block's query/key/value projections read. `first_linear`
stacks those projections into W (3d x d) acting on one token's d-dim embedding, expressed as a
1x1 "convolution" over a (d, L, 1) layout so that bench.defenses.ne.NEPatch (per-patch SVD,
one patch per token) applies unchanged. `logits_from_embeddings` feeds any (N, L, d) tensor in
at exactly that point (a forward hook replaces the embedding module's output), which is how
an authorized or unauthorized model consumes a released embedding sequence.
"""

from __future__ import annotations

import hashlib
import json
from functools import cached_property

import numpy as np
import torch
import torch.nn as nn

from bench.errors import UserError
from bench.kits.resolve import resolve_model
from bench.models.adapter import run_device, weights_digest
from bench.models.first_linear import FirstLinear
from bench.text.pooled import encoder_dir, load_pooled


class _Stop(Exception):
    pass


class TextClassifier:
    def __init__(self, name: str, model: nn.Module, tokenizer, source: str, max_length: int = 128,
                 label_order: list[int] | None = None):
        self.name = name
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.source = source
        self.max_length = int(max_length)
        self.label_order = list(label_order) if label_order else None
        self.arch = model.config.model_type
        n = int(model.config.num_labels)
        if self.label_order is not None and sorted(self.label_order) != list(range(n)):
            raise UserError(f"model {name!r}: label_order {self.label_order} must be a permutation of 0..{n - 1} "
                            "(output index i -> GLUE label label_order[i])")
        if not hasattr(model, "base_model") or not hasattr(model.base_model, "embeddings"):
            raise UserError(f"model {name!r} ({self.arch}) has no base_model.embeddings; "
                            "NE for text needs a BERT-style encoder")

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @cached_property
    def identity(self) -> dict:
        vocab = sorted(self.tokenizer.get_vocab().items())
        return {
            "arch": self.arch,
            "weights": weights_digest(self.model),
            "tokenizer": hashlib.sha256(json.dumps(vocab).encode()).hexdigest(),
            "max_length": self.max_length,
            "label_order": self.label_order,
        }

    @cached_property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.identity, sort_keys=True).encode()).hexdigest()

    def tokenize(self, text_a: list[str], text_b: list[str] | None) -> dict:
        args = (text_a, text_b) if text_b is not None else (text_a,)
        enc = self.tokenizer(*args, padding="max_length", truncation=True, max_length=self.max_length,
                             return_tensors="pt")
        return {k: v.to(self.device) for k, v in enc.items()}

    def _glue_order(self, logits: torch.Tensor) -> np.ndarray:
        out = logits.float().cpu().numpy()
        if self.label_order:
            mapped = np.empty_like(out)
            mapped[:, self.label_order] = out
            return mapped
        return out

    @torch.no_grad()
    def logits(self, batch: dict) -> np.ndarray:
        """Clean logits from the model's own tokenization (columns in GLUE label order)."""
        return self._glue_order(self.model(**batch).logits)

    @torch.no_grad()
    def embed(self, batch: dict) -> torch.Tensor:
        """(N, L, d) output of the embedding module: what the first attention block reads."""
        seen = {}

        def hook(module, args, output):
            seen["h"] = output
            raise _Stop

        handle = self.model.base_model.embeddings.register_forward_hook(hook)
        try:
            self.model(**batch)
        except _Stop:
            pass
        finally:
            handle.remove()
        return seen["h"].detach()

    @torch.no_grad()
    def logits_from_embeddings(self, h: torch.Tensor, attention_mask: torch.Tensor) -> np.ndarray:
        """Logits when the embedding module's output is replaced by `h` (N, L, d)."""
        if h.shape[-1] != self.hidden_size:
            raise UserError(f"model {self.name!r} reads {self.hidden_size}-dim embeddings, the released "
                            f"sequence has {h.shape[-1]}; it cannot consume this release")
        handle = self.model.base_model.embeddings.register_forward_hook(lambda m, a, o: h.to(o.device, o.dtype))
        try:
            dummy = torch.full(h.shape[:2], self._dummy_id, dtype=torch.long, device=self.device)
            return self._glue_order(self.model(input_ids=dummy, attention_mask=attention_mask.to(self.device)).logits)
        finally:
            handle.remove()

    @cached_property
    def _dummy_id(self) -> int:
        return int(self.tokenizer.unk_token_id if self.tokenizer.unk_token_id is not None else 0)

    @cached_property
    def qkv(self) -> tuple[torch.Tensor, list[str]]:
        """W = the Linear layers that read the embedding output directly (query, key, value), stacked."""
        names = {m: n for n, m in self.model.named_modules()}
        batch = self.tokenize(["probe"], None)
        h = self.embed(batch)
        found: list[nn.Linear] = []

        def pre(module, args):
            if args and isinstance(args[0], torch.Tensor) and args[0].shape == h.shape and torch.equal(args[0], h):
                found.append(module)

        handles = [m.register_forward_pre_hook(pre) for m in self.model.modules() if isinstance(m, nn.Linear)]
        try:
            with torch.no_grad():
                self.model(**batch)
        finally:
            for hd in handles:
                hd.remove()
        if not found:
            raise UserError(f"model {self.name!r}: no Linear layer reads the embedding output; cannot find W")
        w = torch.cat([m.weight.detach().cpu().to(torch.float64) for m in found])
        return w, [names[m] for m in found]

    def first_linear(self, length: int | None = None) -> FirstLinear:
        """W (3d x d) per token, as a 1x1 conv over the (d, L, 1) layout of an embedding sequence."""
        w, names = self.qkv
        d = w.shape[1]
        return FirstLinear("conv", w.view(w.shape[0], d, 1, 1), (d, length or self.max_length, 1),
                           module_name="+".join(names))


def as_image(h: torch.Tensor) -> torch.Tensor:
    """(N, L, d) -> (N, d, L, 1), the layout FirstLinear/NEPatch use for embedding sequences."""
    return h.permute(0, 2, 1).unsqueeze(-1)


def from_image(x: torch.Tensor) -> torch.Tensor:
    return x.squeeze(-1).permute(0, 2, 1)


def load_text_model(label: str, spec, task: str, progress: bool = False) -> TextClassifier:
    """spec: a hub name or local path, or {checkpoints = {task = name}, max_length, label_order = {task = [...]}}."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if isinstance(spec, str) and spec.startswith("kit:"):  # a kit model: its manifest spec, files as cache paths
        spec = resolve_model(spec).spec
    if isinstance(spec, dict) and spec.get("source") == "text-pooled":  # encoder + pooled head (bench.text.pooled)
        model, tokenizer, _ = load_pooled(label, spec)
        model.to(spec.get("device") or ("cuda" if torch.cuda.is_available() else "cpu"))
        return TextClassifier(label, model, tokenizer, str(encoder_dir(spec)), int(spec.get("max_length", 64)))
    if isinstance(spec, str):
        spec = {"checkpoints": {task: spec}}
    checkpoints = spec.get("checkpoints") or {}
    if task not in checkpoints:
        raise UserError(f"text model {label!r} has no checkpoint for GLUE task {task!r}; "
                        f"add it to checkpoints (has: {', '.join(checkpoints) or 'none'})")
    source = str(checkpoints[task])
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForSequenceClassification.from_pretrained(source)
    except OSError as exc:
        raise UserError(f"text model {label!r}: cannot load {source!r} for {task} ({exc}); give a hub name "
                        "reachable from here or a local checkpoint folder") from None
    model.to(spec.get("device") or run_device())  # the run's --device unless the spec pins one
    order = (spec.get("label_order") or {}).get(task)
    return TextClassifier(label, model, tokenizer, source, int(spec.get("max_length", 128)), order)

"""Pooling of an encoder's hidden states into one sentence vector (shared by the pooled text classifier and
the SST-2 head recipe)."""

from __future__ import annotations

import torch


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """(N, L, d) -> (N, d): mean over the real tokens, or the first token."""
    if pooling == "cls":
        return hidden[:, 0]
    mask = attention_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)

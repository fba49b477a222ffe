"""The cached forward pass, an engine service protocols call (lm-evaluation-harness's request idea).

A protocol asks for the outputs of models on inputs it names by identity (`outputs(models, identity,
compute)`); the service answers from the content-addressed cache and calls `compute` only for the
models whose outputs are missing, stores what it computed, and counts forward passes and cache hits.
Per-input answers of generative models (a VLM's answer to one prompt) go through `answer`, and an
encoding's facts through `record` / `keep_record`. The protocol never builds a cache key or touches a
counter: the engine reads `usage()` before and after a job and records the deltas in every row's
provenance.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import json

from bench.core.cache import ArrayCache, CacheStats


@dataclass(frozen=True, kw_only=True)
class Usage:
    """Counters at one moment; `minus` gives a job's deltas."""

    forwards: int = 0  # forward passes over a split (or model calls of a generative model) actually computed
    encodings: int = 0  # encodings of a split actually computed
    hits: int = 0
    misses: int = 0
    corrupt: int = 0

    def minus(self, before: "Usage") -> "Usage":
        return Usage(**{k: getattr(self, k) - getattr(before, k) for k in self.__dataclass_fields__})

    @property
    def cache(self) -> dict:
        return {"hits": self.hits, "misses": self.misses, "corrupt": self.corrupt}


class ForwardService:
    """Cached model outputs keyed by (model identity, input identity); see the module docstring."""

    def __init__(self, root: Path):
        self.cache = ArrayCache(Path(root), "forward")
        self.records = {"encoding": ArrayCache(Path(root), "encoding"), "artifact": ArrayCache(Path(root), "artifact")}
        self._answers = CacheStats()  # hits / misses of per-input answer caches (`answer`)
        self._forwards = 0
        self._encoded = 0

    def usage(self) -> Usage:
        stats, other = self.cache.stats, self._answers
        return Usage(forwards=self._forwards, encodings=self._encoded, hits=stats.hits + other.hits,
                     misses=stats.misses + other.misses, corrupt=stats.corrupt + other.corrupt)

    def outputs(self, models: dict[str, str], identity: dict, compute: Callable[[list[str]], dict],
                load: Callable[[dict], dict] | None = None) -> dict[str, dict | None]:
        """label -> outputs of each model (label -> its weights digest) on the inputs `identity` names.
        `compute(labels)` returns {label: outputs} for the labels not cached (None for a model that cannot
        read these inputs: not stored); `load` brings a cached entry to today's form."""
        keys = {label: self.cache.key(d, identity) for label, d in models.items()}
        entries = self.cache.get_many(keys.values())  # one batch: every model this request names
        out = {}
        for label, k in keys.items():
            entry = entries[k]
            out[label] = load(entry) if (load is not None and entry is not None) else entry
        todo = [label for label in models if out[label] is None]
        if todo:
            for label, value in compute(todo).items():
                if value is not None:
                    self.cache.put(keys[label], value)
                    self._forwards += 1
                out[label] = value
        return out

    def cached(self, model_digest: str, identity: dict, load: Callable[[dict], dict] | None = None) -> dict | None:
        """The cached outputs of one model on `identity`, or None (nothing computed)."""
        entry = self.cache.get(self.cache.key(model_digest, identity))
        return load(entry) if (load is not None and entry is not None) else entry

    def answer(self, store, key: str, compute: Callable[[], object]):
        """One cached answer from `store` (an object with get(key) -> value or None and put(key, value)), computed
        by `compute()` (one model call, counted as a forward pass) when missing."""
        value = store.get(key)
        if value is not None:
            self._answers.hits += 1
            return value
        self._answers.misses += 1
        value = compute()
        store.put(key, value)
        self._forwards += 1
        return value

    # -- records: an encoding's facts (PSNR, timings, summary), a job's artifact record ------------------
    def record(self, owner: str, identity: dict, *, kind: str = "encoding", name: str = "stats") -> dict | list | None:
        """The stored JSON record of kind `kind` ("encoding": an encoding's facts; "artifact": what a job
        protected and scored) that `identity` names (owner: the authorized model's digest or "")."""
        store = self.records[kind]
        entry = store.get(store.key(owner, identity))
        return None if entry is None or name not in entry else json.loads(str(entry[name]))

    def keep_record(self, owner: str, identity: dict, value, *, kind: str = "encoding", name: str = "stats") -> None:
        """Store a record; an "encoding" record counts one encoding computed."""
        store = self.records[kind]
        store.put(store.key(owner, identity), {name: np.array(json.dumps(value))})
        if kind == "encoding":
            self._encoded += 1

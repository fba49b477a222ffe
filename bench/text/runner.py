"""Run a GLUE suite: clean baselines, NE-authorized and unauthorized cells per task, one row per cell.

Cells: (task, defense, params, release, authorized, evaluated). Releases:
- "embedding": the authorized model's embedding output + delta (bench.text.ne) - what NE releases;
- "embedding-clean": the same sequence with delta = 0, a control that shows what feeding another
  model's embedding space does by itself (BERT and RoBERTa have different tokenizers and
  embedding tables, so this control is far from their clean baseline).
Every evaluated model consumes a release at its own embedding-output entry point
(TextClassifier.logits_from_embeddings). Rows follow bench.results (metrics.top1 = the task's
primary GLUE metric x 100) plus "benchmark" and "task"; logits are cached per (model, inputs).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from bench import provenance
from bench.cache import ArrayCache, cache_root, digest
from bench.errors import UserError
from bench.results import ResultWriter
from bench.runner import RunSummary, _grid, model_label
from bench.suite import Suite
from bench.text.adapter import TextClassifier, load_text_model
from bench.text.glue import PAPER_TASKS, TextSplit, load_glue, score
from bench.text.ne import TextNE, qkv_deviation

RELEASES = ("embedding", "embedding-clean")


class TextRunner:
    def __init__(self, suite: Suite, out_dir: Path, *, models: list[str] | None = None, cache_dir: Path | None = None,
                 progress: bool = True, batch_size: int = 32, loader=load_text_model):
        self.suite, self.out_dir, self.progress, self.batch_size = suite, Path(out_dir), progress, batch_size
        self.loader = loader
        root = Path(cache_dir) if cache_dir else cache_root()
        self.cache = ArrayCache(root, "forward")
        self.encoding_cache = ArrayCache(root, "encoding")
        data = dict(suite.data)
        self.tasks = [str(t).lower() for t in data.get("tasks", PAPER_TASKS)]
        self.files = data.get("files", {})
        self.specs = {model_label(s): s for s in [*suite.authorized, *suite.evaluated]}
        for m in models or []:
            if m not in self.specs:
                raise UserError(f"model {m!r} is not in suite {suite.name!r}; valid choices: {', '.join(self.specs)}")
        keep = (lambda labels: [x for x in labels if x in models]) if models else (lambda labels: labels)
        self.authorized = keep([model_label(s) for s in suite.authorized])
        self.evaluated = keep(list(dict.fromkeys(model_label(s) for s in [*suite.authorized, *suite.evaluated])))
        self.entries = []
        for entry in suite.defenses:
            if entry.name != TextNE.name:
                raise UserError(f"suite {suite.name!r}: GLUE suites take defense {TextNE.name!r}, got {entry.name!r}")
            bad = [r for r in entry.release if r not in RELEASES]
            if bad:
                raise UserError(f"defense {entry.name!r}: unknown release {bad[0]!r}; valid choices: {', '.join(RELEASES)}")
            for point in _grid(entry.sweep):
                params = TextNE(**{**entry.params, **point}).params  # validates, fills defaults
                self.entries.append((params, point, list(entry.release)))
        self.forwards = 0
        self.encodings = 0

    # -- cells ----------------------------------------------------------------------------
    def _fields(self, task, defense, params, point, release, authorized, evaluated) -> dict:
        return {"suite": self.suite.name, "benchmark": "glue", "task": task, "defense": defense, "params": params,
                "point": {"task": task, **point}, "release": release, "attack": "none", "authorized": authorized,
                "evaluated": evaluated, "trial": 0}

    def _key(self, fields: dict) -> str:
        return digest({**fields, "data": self.suite.data, "seed": self.suite.seed})[:24]

    def _cells(self, task: str) -> list[dict]:
        cells = [self._fields(task, "none", {}, {}, "clean", "", e) for e in self.evaluated]
        for params, point, releases in self.entries:
            for a in self.authorized:
                for release in releases:
                    cells += [self._fields(task, TextNE.name, params, point, release, a, e) for e in self.evaluated]
        for c in cells:
            c["cell"] = self._key(c)
        return cells

    # -- forward passes -----------------------------------------------------------------------
    def _batches(self, n: int):
        return [np.arange(i, min(i + self.batch_size, n)) for i in range(0, n, self.batch_size)]

    def _clean(self, model: TextClassifier, data: TextSplit) -> dict:
        key = self.cache.key(model.digest, {"data": data.identity})
        out = self.cache.get(key)
        if out is None:
            logits = []
            for idx in tqdm(self._batches(len(data)), desc=f"{model.name} clean", disable=not self.progress, leave=False):
                b = model.tokenize([data.text_a[i] for i in idx], [data.text_b[i] for i in idx] if data.text_b else None)
                logits.append(model.logits(b))
            out = {"logits": np.concatenate(logits), "first_layer_dev": np.zeros(len(data))}
            self.cache.put(key, out)
            self.forwards += 1
        return out

    def _released(self, auth: TextClassifier, ne: TextNE | None, data: TextSplit, models: list[TextClassifier],
                  identity: dict) -> tuple[dict, dict]:
        """Logits and QKV deviations of every model in `models` on the authorized release, and encoding stats."""
        keys = {m.name: self.cache.key(m.digest, identity) for m in models}
        outs = {m.name: self.cache.get(keys[m.name]) for m in models}
        todo = [m for m in models if outs[m.name] is None]
        stats = {"snr_db": [], "encode_ms": 0.0}
        if todo:
            parts = {m.name: {"logits": [], "first_layer_dev": []} for m in todo}
            seed = self.suite.seed
            for idx in tqdm(self._batches(len(data)), desc=f"{auth.name} release", disable=not self.progress, leave=False):
                b = auth.tokenize([data.text_a[i] for i in idx], [data.text_b[i] for i in idx] if data.text_b else None)
                start = time.perf_counter()
                h = auth.embed(b)
                released = h
                if ne is not None:
                    released, snr = ne.encode(h, b["attention_mask"], data.indices[idx], data.labels[idx], seed)
                    stats["snr_db"].append(snr.numpy())
                stats["encode_ms"] += (time.perf_counter() - start) * 1e3
                for m in todo:
                    if m.hidden_size != h.shape[-1]:
                        continue
                    parts[m.name]["logits"].append(m.logits_from_embeddings(released, b["attention_mask"]))
                    parts[m.name]["first_layer_dev"].append(qkv_deviation(m, h, released).numpy())
            for m in todo:
                if m.hidden_size != auth.hidden_size:
                    outs[m.name] = None
                    continue
                outs[m.name] = {k: np.concatenate(v) for k, v in parts[m.name].items()}
                self.cache.put(keys[m.name], outs[m.name])
                self.forwards += 1
            self.encodings += 1
        stats_key = self.encoding_cache.key(auth.digest, identity)
        if todo:
            stats["encode_ms"] /= max(len(data), 1)
            stats["snr_db"] = float(np.concatenate(stats["snr_db"]).mean()) if stats["snr_db"] else None
            self.encoding_cache.put(stats_key, {"stats": np.array(json.dumps(stats))})
        else:  # every forward pass cached: read the encoding record (its stats are null if it was lost)
            cached = self.encoding_cache.get(stats_key)
            stats = json.loads(str(cached["stats"])) if cached else {"snr_db": None, "encode_ms": None}
        return outs, stats

    # -- rows ---------------------------------------------------------------------------------
    def _row(self, cell: dict, model: TextClassifier, auth: TextClassifier | None, out: dict | None, data: TextSplit,
             extra: dict) -> dict:
        if not cell["authorized"]:
            role = "clean"
        elif cell["evaluated"] == cell["authorized"]:
            role = "authorized"
        else:
            role = "same-arch" if auth and model.arch == auth.arch else "unauthorized"
        metrics = {"top1": None, "first_layer_dev": None}
        if out is not None:
            metrics = {**score(data.task, out["logits"], data.labels),
                       "first_layer_dev": float(np.mean(out["first_layer_dev"])) if cell["authorized"] else None}
        return {
            **cell,
            "suite_digest": self.suite.digest,
            "role": role,
            "arch": {"authorized": auth.arch if auth else "", "evaluated": model.arch},
            "metrics": metrics,
            "encoding": extra.get("encoding"),
            "attack_stats": None,
            "cost": None if out is not None else {"note": f"{model.name} reads {model.hidden_size}-dim embeddings; "
                                                           f"the release has {auth.hidden_size if auth else '?'}"},
            "n": len(data) if out is not None else 0,
            "provenance": provenance.row_provenance(
                model.digest, auth.digest if auth else None, extra["input_digest"], extra.get("defense_summary"),
                self.suite.seed, extra["wall_s"], dict(self.cache.stats.as_dict()), self.forwards),
        }

    def _run_task(self, task: str, pending: list[dict]) -> list[dict]:
        root = self.suite.data.get("root")  # --data-root: <root>/<task>.tsv unless [data] files names the task
        path = self.files.get(task) or (str(Path(root) / f"{task}.tsv") if root else None)
        data = load_glue(task, path, self.suite.data.get("split"), int(self.suite.data.get("subset", 0)),
                         int(self.suite.data.get("subset_seed", self.suite.seed)))
        models: dict[str, TextClassifier] = {}

        def model(label: str) -> TextClassifier:
            if label not in models:
                models[label] = self.loader(label, self.specs[label], task, self.progress)
            return models[label]

        rows = []
        for cell in [c for c in pending if c["defense"] == "none"]:
            start = time.perf_counter()
            out = self._clean(model(cell["evaluated"]), data)
            rows.append(self._row(cell, model(cell["evaluated"]), None, out, data,
                                  {"input_digest": digest({"data": data.identity}), "wall_s": time.perf_counter() - start}))
        groups: dict[str, list[dict]] = {}
        for cell in [c for c in pending if c["defense"] != "none"]:
            groups.setdefault(digest([cell["params"], cell["release"], cell["authorized"]]), []).append(cell)
        for cells in groups.values():
            start = time.perf_counter()
            first = cells[0]
            auth = model(first["authorized"])
            ne = None
            if first["release"] == "embedding":
                ne = TextNE(**first["params"])
                ne.fit(auth)
            transform = {"defense": TextNE.name, "params": first["params"], "authorized": auth.digest,
                         "release": first["release"], "seed": self.suite.seed}
            identity = {"data": data.identity, "transforms": [transform]}
            outs, stats = self._released(auth, ne, data, [model(c["evaluated"]) for c in cells], identity)
            summary = ne.summary() if ne else {}
            extra = {
                "encoding": {"snr_db": stats["snr_db"], "subspace_dim": summary.get("subspace_dim"),
                             "encode_ms": stats["encode_ms"], "fit_ms": summary.pop("fit_ms", 0.0),
                             "psnr_true": None, "psnr_nominal": None},
                "defense_summary": summary,
                "input_digest": digest(identity),
                "wall_s": time.perf_counter() - start,
            }
            rows += [self._row(c, model(c["evaluated"]), auth, outs[c["evaluated"]], data, extra) for c in cells]
        return rows

    def run(self) -> RunSummary:
        start = time.perf_counter()
        writer = ResultWriter(self.out_dir)
        before = writer.rows()
        done = {r["cell"] for r in before}
        plan = {task: self._cells(task) for task in self.tasks}
        run = 0
        for task in tqdm(self.tasks, desc=f"{self.suite.name} tasks", disable=not self.progress):
            pending = [c for c in plan[task] if c["cell"] not in done]
            if pending:
                rows = self._run_task(task, pending)
                writer.append(rows)
                run += len(rows)
        return RunSummary(cells_total=len(before) + run, cells_done_before=len(before), cells_run=run,
                          forwards=self.forwards, encodings=self.encodings, cache=self.cache.stats.as_dict(),
                          wall_s=time.perf_counter() - start, results=writer.path)


"""NE on text classifiers, GLUE (BERT, RoBERTa): the `glue` protocol (NE Table 7); CoreLocker on
text classifiers (CoreLocker Table 6, BERT on AG News) through the same data and models.

Jobs: per task, one clean job (every evaluated model on the task's split) and one job per
(NE point, release, authorized model). Releases:
- "embedding": the authorized model's embedding output + delta (bench.text.ne) - what NE releases;
- "embedding-clean": the same sequence with delta = 0, a control that shows what feeding another
  model's embedding space does by itself (BERT and RoBERTa have different tokenizers and
  embedding tables, so this control is far from their clean baseline).
A `corelocker` entry locks each authorized text classifier (bench.defenses.corelocker, probed
through the text adapter's tokens) and scores the key holder's unlocked model ("authorized") and
the released model ("unauthorized", label `<model>[released]`) on the task's split, per trial.
Every evaluated model consumes a release at its own embedding-output entry point
(TextClassifier.logits_from_embeddings). Rows follow bench.core.types.Row (metrics.top1 = the
task's primary GLUE metric x 100) plus "benchmark" and "task"; logits are cached per (model, inputs),
and the split is tokenised, encoded and scored batch by batch.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from bench.core.cache import digest
from bench.core.entry import Entry, as_list, key, list_of, one_or_list, string, table, trials_key
from bench.core.types import Encoding, Job, Measurement, Role
from bench.defenses import get_defense
from bench.core.errors import UserError
from bench.kits.resolve import resolve_dataset
from bench.protocols.base import PROTOCOLS, Protocol, grid, with_cells
from bench.core.metrics import GLUE_METRICS
from bench.reports.boards import gap_board
from bench.reports.corelocker import render_corelocker
from bench.reports.ne_tasks import render_glue_tables, task_summary
from bench.text.adapter import TextClassifier, load_text_model
from bench.text.glue import PAPER_TASKS, TextSplit, load_glue, score
from bench.text.ne import TextNE, qkv_deviation

RELEASES = ("embedding", "embedding-clean")
LOCK = "corelocker"  # the model-authorization defense this protocol also runs on text classifiers
DEFAULT_TEXT_BATCH = 32


@dataclass(frozen=True, kw_only=True)
class GlueEntry(Entry):
    """A text-NE [[defenses]] entry of a GLUE suite: its release formats (every authorized model, every task)."""

    release: list = key(one_or_list(string(), "release format names"), factory=lambda: ["embedding"],
                        parse=lambda v: [str(r) for r in as_list(v)])


@dataclass(frozen=True, kw_only=True)
class GlueLockEntry(Entry):
    """A CoreLocker [[defenses]] entry of a GLUE suite: its trials (each locks with another seed)."""

    trials: int = trials_key()


@PROTOCOLS.register
class Glue(Protocol):
    name = "glue"
    description = "NE on GLUE text classifiers: embedding-space release for one model, every model scored (Table 7)"
    owns_dataset = "glue"
    data_keys = {"tasks": list_of(string(), "GLUE task names", min_items=1), "root": string(),
                 "files": table(string(), "a table task = \"file.tsv\"")}
    entry = GlueEntry
    entries = {LOCK: GlueLockEntry}
    own_defenses = (TextNE.name,)  # run by this protocol itself, not through the defense registry (rank reads this)
    boards = {"glue": gap_board("glue")}  # the gap board its NE-text rows rank on (named as the protocol)
    check_board = "glue"
    # a cell's primary GLUE metric (x 100): higher is better for the clean and authorized models, lower for a
    # model reading another's release (one it reads better is a regression of the defense)
    check_metrics = GLUE_METRICS

    @classmethod
    def check_cells(cls, rows):
        """Every measured NE-text cell: (task|defense|params|point|release|authorized|evaluated, metric, value,
        False). They train nothing at run time (a recipe head is trained once, deterministically, and cached),
        so the suite's inference_tolerance applies."""
        metric = {Role.CLEAN.value: "glue_clean", Role.AUTHORIZED.value: "glue_authorized"}
        return [("|".join([str(r.get("task")), r["defense"], str(sorted(r["params"].items())),
                           str(sorted(r["point"].items())), r["release"], r["authorized"], r["evaluated"]]),
                 metric.get(r["role"], "glue_unauthorized"), float(r["metrics"]["top1"]), False)
                for r in rows if r.get("protocol") == cls.name and r.get("defense") != LOCK
                and (r.get("metrics") or {}).get("top1") is not None]

    def summary(self, rows, reports):
        return task_summary(reports)

    # -- planning ------------------------------------------------------------------------------
    @staticmethod
    def tasks(ctx) -> list[str]:
        return [str(t).lower() for t in ctx.suite.data.get("tasks", PAPER_TASKS)]

    @staticmethod
    def models(ctx) -> list[str]:
        return list(dict.fromkeys([*ctx.authorized, *ctx.evaluated]))

    def job(self, ctx, task: str, evaluated: tuple[str, ...] | None = None, **fields) -> Job:
        job = Job(protocol=self.name, attack="none", evaluated=evaluated or tuple(self.models(ctx)), group=task,
                  extra={"task": task, "cell_fields": {"benchmark": "glue", "task": task}}, **fields)
        return with_cells(ctx, job)

    def baseline(self, ctx):
        return [self.job(ctx, t, defense="none", params={}, point={"task": t}, release="clean", authorized="")
                for t in self.tasks(ctx)]

    def plan(self, ctx, entry):
        if entry.name == LOCK:
            cls = get_defense(LOCK)
            return [self.job(ctx, t, evaluated=(a, f"{a}[released]"), defense=LOCK, params=cls(**{**entry.params, **p}).params,
                             point={"task": t, **p}, release="model", authorized=a, trial=trial)
                    for t in self.tasks(ctx) for p in grid(entry.sweep) for a in ctx.authorized
                    for trial in range(entry.trials)]
        if entry.name != TextNE.name:
            raise UserError(f"suite {ctx.suite.name!r}: GLUE suites take defense {TextNE.name!r} or {LOCK!r}, "
                            f"got {entry.name!r}")
        bad = [r for r in entry.release if r not in RELEASES]
        if bad:
            raise UserError(f"defense {entry.name!r}: unknown release {bad[0]!r}; valid choices: {', '.join(RELEASES)}")
        jobs = []
        for t in self.tasks(ctx):
            for point in grid(entry.sweep):
                params = TextNE(**{**entry.params, **point}).params  # validates, fills defaults
                jobs += [self.job(ctx, t, defense=TextNE.name, params=params, point={"task": t, **point}, release=r,
                                  authorized=a) for a in ctx.authorized for r in entry.release]
        return jobs

    # -- data and models -----------------------------------------------------------------------
    def data(self, ctx, task: str) -> TextSplit:
        memo = ctx.memo("glue.data")
        if task not in memo:
            data = ctx.suite.data
            root = data.get("root")  # --data-root: <root>/<task>.tsv unless [data] files names the task
            path = data.get("files", {}).get(task) or (str(Path(root) / f"{task}.tsv") if root else None)
            if path and str(path).startswith("kit:"):  # a kit dataset (e.g. kit:sst2-real/dev): its file in the cache
                path = resolve_dataset(str(path), ctx.cache_root).options["path"]
            memo[task] = load_glue(task, path, data.get("split"), int(data.get("subset", 0)),
                                   int(data.get("subset_seed", ctx.suite.seed)))
        return memo[task]

    def model(self, ctx, label: str, task: str) -> TextClassifier:
        memo = ctx.memo("glue.models")
        if (label, task) not in memo:
            loader = ctx.options.loader or load_text_model
            memo[(label, task)] = loader(label, ctx.specs[label], task, ctx.progress)
        return memo[(label, task)]

    def batches(self, ctx, n: int):
        size = ctx.options.batch_size or ctx.suite.run.get("batch_size") or DEFAULT_TEXT_BATCH
        return [np.arange(i, min(i + size, n)) for i in range(0, n, size)]

    def tokenize(self, model: TextClassifier, data: TextSplit, idx):
        return model.tokenize([data.text_a[i] for i in idx], [data.text_b[i] for i in idx] if data.text_b else None)

    # -- forward passes --------------------------------------------------------------------------
    def clean(self, ctx, model: TextClassifier, data: TextSplit) -> dict:
        def compute(todo):
            logits = [model.logits(self.tokenize(model, data, idx))
                      for idx in tqdm(self.batches(ctx, len(data)), desc=f"{model.name} clean",
                                      disable=not ctx.progress, leave=False)]
            return {model.name: {"logits": np.concatenate(logits), "first_layer_dev": np.zeros(len(data))}}

        return ctx.forwards.outputs({model.name: model.digest}, {"data": data.identity}, compute)[model.name]

    def released(self, ctx, auth: TextClassifier, ne: TextNE | None, data: TextSplit, models: list[TextClassifier],
                 identity: dict) -> tuple[dict, dict]:
        """Logits and QKV deviations of every model in `models` on the authorized release, and encoding stats."""
        stats = {"snr_db": [], "encode_ms": 0.0}
        by_name = {m.name: m for m in models}

        def compute(names: list[str]) -> dict:
            todo = [by_name[n] for n in names]
            stats["computed"] = True
            parts = {m.name: {"logits": [], "first_layer_dev": []} for m in todo}
            for idx in tqdm(self.batches(ctx, len(data)), desc=f"{auth.name} release", disable=not ctx.progress,
                            leave=False):
                b = self.tokenize(auth, data, idx)
                start = time.perf_counter()
                h = auth.embed(b)
                released = h
                if ne is not None:
                    released, snr = ne.encode(h, b["attention_mask"], data.indices[idx], data.labels[idx], ctx.suite.seed)
                    stats["snr_db"].append(snr.numpy())
                stats["encode_ms"] += (time.perf_counter() - start) * 1e3
                for m in todo:
                    if m.hidden_size != h.shape[-1]:
                        continue
                    parts[m.name]["logits"].append(m.logits_from_embeddings(released, b["attention_mask"]))
                    parts[m.name]["first_layer_dev"].append(qkv_deviation(m, h, released).numpy())
            return {m.name: None if m.hidden_size != auth.hidden_size else
                    {k: np.concatenate(v) for k, v in parts[m.name].items()} for m in todo}

        outs = ctx.forwards.outputs({m.name: m.digest for m in models}, identity, compute)
        if stats.pop("computed", False):
            stats["encode_ms"] /= max(len(data), 1)
            stats["snr_db"] = float(np.concatenate(stats["snr_db"]).mean()) if stats["snr_db"] else None
            ctx.forwards.keep_record(auth.digest, identity, stats)
        else:  # every forward pass cached: read the encoding record (its stats are null if it was lost)
            stats = ctx.forwards.record(auth.digest, identity) or {"snr_db": None, "encode_ms": None}
        return outs, stats

    # -- one job -----------------------------------------------------------------------------------
    def measurement(self, job: Job, evaluated: str, model: TextClassifier, auth: TextClassifier | None,
                    out: dict | None, data: TextSplit, extra: dict) -> Measurement:
        role = extra.get("role") or Role.of(authorized=job.authorized, evaluated=evaluated,
                                            same_arch=bool(auth) and model.arch == auth.arch)
        metrics = {"top1": None, "first_layer_dev": None}
        if out is not None:
            metrics = {**score(data.task, out["logits"], data.labels),
                       "first_layer_dev": float(np.mean(out["first_layer_dev"])) if job.authorized else None}
        cost = extra["cost"] if "cost" in extra else None if out is not None else {
            "note": f"{model.name} reads {model.hidden_size}-dim embeddings; the release has "
                    f"{auth.hidden_size if auth else '?'}"}
        return Measurement(
            evaluated=evaluated, role=role, arch={"authorized": auth.arch if auth else "", "evaluated": model.arch},
            metrics=metrics, encoding=extra.get("encoding"), cost=cost, n=len(data) if out is not None else 0,
            model_digest=model.digest, authorized_digest=auth.digest if auth else None,
            input_digest=extra["input_digest"], defense_summary=extra.get("defense_summary"))

    def run(self, ctx, job):
        task = job.extra["task"]
        data = self.data(ctx, task)
        pending = [e for e, c in zip(job.evaluated, job.cells) if c not in ctx.done]
        if job.defense == "none":
            out = []
            for e in pending:
                model = self.model(ctx, e, task)
                out.append(self.measurement(job, e, model, None, self.clean(ctx, model, data), data,
                                            {"input_digest": digest({"data": data.identity})}))
            return out
        auth = self.model(ctx, job.authorized, task)
        if job.defense == LOCK:
            return self.run_lock(ctx, job, auth, data, pending)
        ne = None
        if job.release == "embedding":
            ne = TextNE(**job.params)
            ne.fit(auth)
        transform = {"defense": TextNE.name, "params": job.params, "authorized": auth.digest, "release": job.release,
                     "seed": ctx.suite.seed}
        identity = {"data": data.identity, "transforms": [transform]}
        models = {e: self.model(ctx, e, task) for e in pending}
        outs, stats = self.released(ctx, auth, ne, data, list(models.values()), identity)
        summary = ne.summary() if ne else {}
        extra = {
            "encoding": Encoding(snr_db=stats["snr_db"], subspace_dim=summary.get("subspace_dim"),
                                 encode_ms=stats["encode_ms"], fit_ms=summary.pop("fit_ms", 0.0)),
            "defense_summary": summary, "input_digest": digest(identity)}
        return [self.measurement(job, e, models[e], auth, outs[e], data, extra) for e in pending]

    def run_lock(self, ctx, job: Job, auth: TextClassifier, data: TextSplit, pending) -> list[Measurement]:
        """CoreLocker on a text classifier: protect it, score the unlocked and the released model."""
        defense = get_defense(LOCK)(**job.params)
        protected = defense.protect(auth, None, ctx.seed(job.trial))
        unlocked = defense.authorized(protected, auth)
        released = TextClassifier(f"{auth.name}[released]", protected.released, auth.tokenizer, auth.source,
                                  auth.max_length, auth.label_order)
        cost = json.loads(json.dumps(protected.cost, default=str))
        out = []
        for e in pending:
            model, role = (unlocked, Role.AUTHORIZED) if e == auth.name else (released, Role.UNAUTHORIZED)
            out.append(self.measurement(job, e, model, auth, self.clean(ctx, model, data), data, {
                "role": role, "cost": cost, "input_digest": digest({"data": data.identity})}))
        return out

    def reports(self, rows, out, cfg):
        locked = [r for r in rows if r.get("defense") == LOCK]
        paths = render_glue_tables([r for r in rows if r.get("defense") != LOCK], out, cfg)
        if locked:
            paths += render_corelocker([r for r in rows if r.get("defense") in (LOCK, "none")], out, None, cfg=cfg)
        return paths

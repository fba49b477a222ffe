"""Model authorization (CoreLocker, DP, FHE, ALGOSPEC): the `model` protocol.

One job = (defense, parameter point, trial, attack, authorized model). The defense protects the
authorized model on the defender's training split (`ModelDefense.protect`), then lists the models
to score with their roles (`evaluations`): the key holder's model ("authorized") and what a party
without the key has ("unauthorized"). A model attack (fine-tuning, pruning, distillation) is
applied to the released artifact with the attacker's data; an input attack to the test inputs,
batch by batch. Forward passes are cached by each scored model's own weights, so an unlock that
restores the weights bit for bit reuses the clean pass; and the job's evaluations (labels, roles,
digests, cost) are cached as an artifact record, so a warm rerun into a new folder neither
protects nor attacks again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from bench.attacks import attack_label, get_attack
from bench.attacks.base import apply_attack, attack_identity
from bench.core.cache import digest
from bench.core.entry import Entry, attacks_key, models_key, trials_key
from bench.core.types import Job, Measurement
from bench.defenses import get_defense
from bench.core.errors import UserError
from bench.models.adapter import ModelAdapter
from bench.protocols import classify
from bench.protocols.base import PROTOCOLS, Protocol, entry_jobs
from bench.reports.boards import gap_board
from bench.reports.corelocker import render_corelocker
from bench.reports.leaderboard import METRIC_DIRECTIONS, leaderboard_cells
from baselines.report import BASELINES, render_markdown

ATTACK_KINDS = ("model", "input")


@dataclass(frozen=True, kw_only=True)
class ModelEntry(Entry):
    """A [[defenses]] entry of model authorization: its attacks, trials and the models it protects."""

    attacks: list = attacks_key()
    trials: int = trials_key()
    models: list = models_key()


@PROTOCOLS.register
class ModelAuthorization(Protocol):
    name = "model"
    description = "model authorization: a protected model scored with and without its key, plus its cost"
    entry = ModelEntry
    uses_clean_rows = True  # the image suite's clean baseline rows reach its reports (the "Original" columns)
    image_models = True
    legacy_release = "model"
    ranked = True
    boards = {"model": gap_board("Model authorization", order=1),
              "baselines": gap_board("NE Table 3 baselines (DP, FHE, ALGOSPEC)", order=2)}
    check_board = "leaderboard"
    check_metrics = METRIC_DIRECTIONS

    @classmethod
    def check_cells(cls, rows):
        return leaderboard_cells(rows)

    def plan(self, ctx, entry):
        cls = get_defense(entry.name)
        for attack in entry.attacks:
            kind = get_attack(attack).kind
            if kind not in ATTACK_KINDS:
                raise UserError(f"defense {entry.name!r} ({self.name} protocol) cannot take attack {attack_label(attack)!r} "
                                f"of kind {kind!r}; valid kinds here: {', '.join(ATTACK_KINDS)}")
        return entry_jobs(ctx, self.name, entry, cls, release="model")

    def protect(self, ctx, job: Job, defense, model: ModelAdapter):
        """Protect once per (defense, params, model, trial) on the defender's training split; jobs that
        differ only in the attack reuse it."""
        last = ctx.memo("model.protected")
        key = digest([job.defense, job.params, model.digest, job.trial])
        if last.get("key") != key:
            last.update(key=key, protected=defense.protect(model, ctx.train_data, ctx.seed(job.trial)))
        return last["protected"]

    def run(self, ctx, job):
        seed = ctx.seed(job.trial)
        model = ctx.model(job.authorized)
        attack = get_attack(job.attack)
        identity = {"data": ctx.data.identity, "transforms": []}
        if attack.kind == "input" and attack_label(job.attack) != "none":
            identity["transforms"].append({**attack_identity(job.attack), "seed": seed})
        others = [label for label in ctx.evaluated if label != job.authorized]
        record = {"job": job.key, "identity": identity, "others": [ctx.model(o).digest for o in others]}
        scored = ctx.forwards.record(model.digest, record, kind="artifact", name="evaluations")
        outputs = {}
        if scored is not None:
            for ev in scored:
                outputs[ev["label"]] = ctx.forwards.cached(ev["digest"], classify.outputs_identity(ctx, identity),
                                                           classify.from_cache)
        if scored is None or any(o is None for o in outputs.values()):
            scored, outputs = self.measure(ctx, job, model, attack, identity, {o: ctx.model(o) for o in others}, seed)
            ctx.forwards.keep_record(model.digest, record, scored, kind="artifact", name="evaluations")
        cost = scored[0]["cost"] if scored else None
        out = []
        for ev in scored:  # every evaluation, also those already written (the engine keeps the saved ones)
            metrics, n = classify.score(outputs[ev["label"]], ctx.data.labels)
            out.append(Measurement(evaluated=ev["label"], role=ev["role"], arch={"authorized": model.arch,
                                   "evaluated": ev["arch"]}, metrics=metrics, cost=cost, n=n, model_digest=ev["digest"],
                                   authorized_digest=model.digest, input_digest=digest(identity)))
        return out

    def measure(self, ctx, job, model, attack, identity, others, seed) -> tuple[list[dict], dict]:
        defense = get_defense(job.defense)(**job.params)
        protected = self.protect(ctx, job, defense, model)
        adapters = {}
        evaluations = []
        for ev in defense.evaluations(protected, model, others):
            adapter = ev.adapter
            if attack.kind == "model" and adapter.module is protected.released:
                attacked = attack(protected.released, model.preprocess, ctx.train_data, seed)
                adapter = ModelAdapter(ev.label, attacked, model.preprocess, model.arch, model.source).to(ctx.device)
            adapters[ev.label] = adapter
            evaluations.append({"label": ev.label, "role": ev.role, "digest": adapter.digest, "arch": adapter.arch})
        attacks_inputs = attack.kind == "input" and attack.name != "none"
        norm = (model.preprocess.mean, model.preprocess.std)  # the locked model's (cutout's mean fill, jpeg's rescale)

        def inputs(batch):
            x = ctx.to_device(batch.images)
            return (apply_attack(attack, x, seed, batch.positions, norm) if attacks_inputs else x), x

        clean = {"data": ctx.data.identity, "geometry": None}  # the images themselves (as input_auth's clean jobs)

        def compute(todo: list[str]) -> dict:
            chosen = {label: adapters[label] for label in todo}
            deviations = {label: classify.FirstLayerDeviation(a, classify.clean_norms(ctx, a, clean))
                          for label, a in chosen.items()}
            return classify.stream(ctx, chosen, deviations, inputs, f"{job.defense} {job.authorized}")

        outputs = ctx.forwards.outputs({label: a.digest for label, a in adapters.items()},
                                       classify.outputs_identity(ctx, identity), compute, classify.from_cache)
        cost = json.loads(json.dumps(protected.cost, default=str))  # the cost as measured, after every evaluation
        for ev in evaluations:
            ev["cost"] = cost
        return evaluations, outputs

    def reports(self, rows, out, cfg):
        paths = []
        if any(r["defense"] == "corelocker" for r in rows):
            paths += render_corelocker(rows, out, cfg.get("classes"), cfg=cfg)
        return paths


def render_baselines(rows: list[dict], out, cfg: dict) -> list:
    """NE Table 3's layout over input- and model-authorization rows (baselines.report)."""
    if not any(r["defense"] in BASELINES for r in rows):
        return []
    path = out / "table3_baselines.md"
    path.write_text(render_markdown(rows, **cfg.get("table3", {})))  # [report] table3 = {ne, psnr, release}
    return [path]

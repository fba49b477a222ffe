"""Model-authorization cells: protect a model once, then score every model its defense names.

One job = (defense, parameter point, trial, attack, authorized model). The defense protects the
authorized model on the defender's training split (`ModelDefense.protect`), then lists the models
to score with their roles (`evaluations`): the key holder's model ("authorized") and what a party
without the key has ("unauthorized"). A model attack (fine-tuning, pruning, distillation) is
applied to the released artifact with the attacker's data; an input attack to the test inputs.
Forward passes go through the runner's content-addressed cache, keyed by each scored model's
own weights, so an unlock that restores the weights bit for bit reuses the clean pass.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bench.attacks import attack_label, get_attack
from bench.cache import digest
from bench.defenses import get_defense
from bench.models.adapter import ModelAdapter

if TYPE_CHECKING:
    from bench.runner import Job, Runner


def run_model_job(runner: "Runner", job: "Job") -> list[dict]:
    snapshot = runner.snapshot()
    model = runner.model(job.authorized)
    defense = get_defense(job.defense)(**job.params)
    protected = runner.protect(job, defense, model)
    others = {label: runner.model(label) for label in runner.evaluated if label != job.authorized}
    attack = get_attack(job.attack)
    seed = runner.suite.seed + job.trial
    identity = {"data": runner.data.identity, "transforms": []}
    if attack.kind == "input" and attack_label(job.attack) != "none":
        identity["transforms"].append({"attack": attack_label(job.attack), "seed": seed})
    memo: dict = {}

    def inputs():
        if "x" not in memo:
            memo["x"] = attack(runner.data.images, seed) if attack.kind == "input" else runner.data.images
        return memo["x"]

    scored = []
    for ev in defense.evaluations(protected, model, others):
        adapter = ev.adapter
        if attack.kind == "model" and adapter.module is protected.released:
            attacked = attack(protected.released, model.preprocess, runner.train_data, seed)
            adapter = ModelAdapter(ev.label, attacked, model.preprocess, model.arch, model.source)
        scored.append((ev, adapter, runner.forward(adapter, identity, inputs)))
    extra = {"cost": protected.cost, "input_digest": digest(identity), **runner.since(snapshot)}
    rows = []
    for ev, adapter, out in scored:
        cell = f"{job.key}:{ev.label}"
        if cell in runner.done:  # a job cut off mid-write: keep the rows already saved
            continue
        row = runner.row(job, cell, ev.label, ev.role, adapter, out, extra)
        rows.append({**row, "job": job.key, "job_rows": len(scored)})
    return rows

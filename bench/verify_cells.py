"""Ownership-verification cells: fingerprint a source once, score every suspect of the zoo.

One job = (method, parameter point, trial, verification attack, source model). The suite's
[suspects] section names the suspect zoo (bench.fingerprint.suspects), built once per source
from the attacker's half of the training split and cached. The method fingerprints the source
on the defender's half (`FingerprintMethod.fingerprint`), then queries every suspect through a
`SuspectOracle` carrying the attack: an input attack processes the queries, an output attack
(dp-logits) perturbs the answers. Rows: one per suspect (role "positive" / "negative", metric
`score`, the suspect's clean `top1` and `kind`), then one "summary" row (AUC, TPR@1%/5%FPR with
bootstrap CIs, the source's self-score and a max-softmax query detector's detection rate).
The summary row's cell is the job key, so a job counts as done once its summary is written.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from bench import provenance
from bench.attacks import attack_label, get_attack
from bench.cache import digest
from bench.defenses import get_defense
from bench.errors import UserError
from bench.fingerprint.metrics import summarize
from bench.fingerprint.suspects import ZooConfig, build_zoo
from bench.fingerprint.training import halves

if TYPE_CHECKING:
    from bench.runner import Job, Runner

DETECTOR_FPR = 0.10  # MFUE Sec. 4.6: threshold at the bottom 10% quantile of normal samples


def plan_verify(runner: "Runner", entry, params: dict, sweep_point: dict) -> list["Job"]:
    from bench.runner import Job, _cell_key

    jobs = [Job(entry.name, params, dict(sweep_point), "verify", attack, auth, [], trial, "verify")
            for auth in runner._authorized_for(entry)
            for trial in range(entry.trials) for attack in entry.attacks]
    for job in jobs:
        kind = get_attack(job.attack).kind
        if kind not in ("input", "output"):
            raise UserError(f"defense {entry.name!r} (verify protocol) takes query attacks (input) or output attacks "
                            f"(dp-logits), not {attack_label(job.attack)!r} of kind {kind!r}; model modifications "
                            "belong in the [suspects] section")
        job.key = _cell_key(runner.suite, job, "")
        job.cells = [job.key]
    zoo_config(runner)  # validates [suspects] at plan time
    return jobs


def zoo_config(runner: "Runner") -> ZooConfig:
    section = runner.suite.raw.get("suspects")
    if not section:
        raise UserError(f"suite {runner.suite.name!r} has verify-protocol defenses but no [suspects] section; "
                        "add one with positives = [chains...] and negatives = [families...]")
    return ZooConfig.from_section(section, runner.suite.seed)


def _memo(runner: "Runner", name: str) -> dict:
    return runner.__dict__.setdefault(name, {})


def suspects_of(runner: "Runner", source):
    zoos = _memo(runner, "_suspect_zoos")
    if source.digest not in zoos:
        _, attacker = halves(runner.train_data)
        dataset = str(runner.suite.data.get("dataset"))
        zoos[source.digest] = build_zoo(source, zoo_config(runner), attacker, runner.data, dataset, runner.progress)
    return zoos[source.digest]


def fingerprint_of(runner: "Runner", method, job: "Job", source, seed: int):
    prints = _memo(runner, "_fingerprints")
    key = digest([job.defense, job.params, source.digest, seed])
    if key not in prints:
        defender, _ = halves(runner.train_data)
        prints[key] = method.fingerprint(source, defender, seed)
    return prints[key]


@torch.no_grad()
def detection_rate(source, queries: torch.Tensor, clean: torch.Tensor) -> float:
    """Share of `queries` a max-softmax OOD detector on the deployed model flags, its threshold set
    so that DETECTOR_FPR of clean test inputs are flagged (balanced accuracy = (rate + 0.9) / 2)."""
    msp = F.softmax(source.predict(clean), 1).amax(1)
    threshold = torch.quantile(msp, DETECTOR_FPR)
    return float((F.softmax(source.predict(queries), 1).amax(1) < threshold).float().mean())


def run_verify_job(runner: "Runner", job: "Job") -> list[dict]:
    from bench.fingerprint.base import SuspectOracle
    from bench.runner import _cell_fields

    snapshot = runner.snapshot()
    seed = runner.suite.seed + job.trial
    source = runner.model(job.authorized)
    method = get_defense(job.defense)(**job.params)
    suspects = suspects_of(runner, source)
    fp = fingerprint_of(runner, method, job, source, seed)
    attack = get_attack(job.attack)
    hooks = {"input_attack": attack if attack.kind == "input" and attack_label(job.attack) != "none" else None,
             "output_attack": attack if attack.kind == "output" else None}

    def oracle(adapter):
        return SuspectOracle(adapter, method.labels_only, seed=seed, **hooks)

    base = {"suite_digest": runner.suite.digest, "encoding": None, "job": job.key, "job_rows": len(suspects) + 1}

    def prov(adapter, wall_s):
        return provenance.row_provenance(adapter.digest, source.digest, None, fp.summary, seed, wall_s, {}, 0)

    rows, scores = [], {"positive": [], "negative": []}
    for s in suspects:
        start, o = time.perf_counter(), oracle(s.adapter)
        score = float(method.verify(fp, o))
        scores[s.role].append(score)
        rows.append({**base, "cell": f"{job.key}:{s.name}", **_cell_fields(runner.suite, job, s.name),
                     "role": s.role, "suspect_kind": s.kind,
                     "arch": {"authorized": source.arch, "evaluated": s.adapter.arch},
                     "metrics": {"score": score, "top1": s.top1},
                     "cost": {"verify_ms": (time.perf_counter() - start) * 1e3, "queries": o.queries},
                     "n": o.queries, "provenance": prov(s.adapter, time.perf_counter() - start)})
    self_oracle = oracle(source)
    self_score = float(method.verify(fp, self_oracle))
    queries = torch.cat(self_oracle.log)
    source_top1 = float((source.predict(runner.data.images).argmax(1) == runner.data.labels).float().mean()) * 100
    summary = {**summarize(scores["positive"], scores["negative"], seed=seed), "self_score": self_score,
               "source_top1": source_top1,
               "query_detection_rate": detection_rate(source, queries, runner.data.images),
               "score_pos_mean": float(np.mean(scores["positive"])),
               "score_neg_mean": float(np.mean(scores["negative"]))}
    spent = runner.since(snapshot)
    rows.append({**base, "cell": job.key, **_cell_fields(runner.suite, job, "(all suspects)"), "role": "summary",
                 "suspect_kind": "", "arch": {"authorized": source.arch, "evaluated": ""}, "metrics": summary,
                 "cost": {"fit_ms": fp.summary.get("fit_ms"), "queries": self_oracle.queries,
                          "labels_only": method.labels_only},
                 "n": len(suspects), "provenance": prov(source, spent["wall_s"])})
    return rows

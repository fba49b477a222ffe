"""Ownership verification (MFUE, IPGuard, CAE, MetaFinger, ADV-TRA): the `verify` protocol.

One job = (method, parameter point, trial, verification attack, source model). The suite's
[suspects] section names the suspect zoo (bench.fingerprint.suspects), built once per source
from the attacker's half of the training split and cached. The method fingerprints the source
on the defender's half (`FingerprintMethod.fingerprint`), then queries every suspect through a
`SuspectOracle` carrying the attack: an input attack processes the queries, an output attack
(dp-logits) perturbs the answers. Rows: one per suspect (role "positive" / "negative", metric
`score`, the suspect's clean `top1` and `kind`), then one "summary" row (AUC, TPR@1%/5%FPR with
bootstrap CIs, the source's self-score and, per query detector of bench.fingerprint.detectors
(MSP, SHE, DAEIT, SCADN: MFUE Table 2), the share of the method's queries it flags,
`detect_<name>`; `query_detection_rate` is the max-softmax one).
The summary row's cell is the job key, so a job counts as done once its summary is written.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from bench.attacks import attack_label, get_attack
from bench.core.cache import digest
from bench.core.entry import Entry, attacks_key, models_key, trials_key
from bench.core.types import Job, Measurement, Role
from bench.defenses import get_defense
from bench.core.errors import UserError
from bench.fingerprint.base import SuspectOracle
from bench.fingerprint.detectors import DETECTORS
from bench.fingerprint.metrics import summarize
from bench.fingerprint.suspects import ZooConfig, build_zoo
from bench.fingerprint.training import halves
from bench.protocols.base import PROTOCOLS, Protocol, entry_jobs
from bench.reports.boards import ownership_board
from bench.reports.fingerprint import FINGERPRINT_METRICS, fingerprint_cells, render_fingerprint


def zoo_config(suite) -> ZooConfig:
    section = suite.raw.get("suspects")
    if not section:
        raise UserError(f"suite {suite.name!r} has verify-protocol defenses but no [suspects] section; "
                        "add one with positives = [chains...] and negatives = [families...]")
    return ZooConfig.from_section(section, suite.seed)


@dataclass(frozen=True, kw_only=True)
class VerifyEntry(Entry):
    """A [[defenses]] entry of ownership verification: its query / output attacks, trials and source models."""

    attacks: list = attacks_key()
    trials: int = trials_key()
    models: list = models_key()


@PROTOCOLS.register
class OwnershipVerification(Protocol):
    name = "verify"
    description = "ownership verification: fingerprint a source, score positive and negative suspects by ROC/AUC"
    entry = VerifyEntry
    image_models = True
    legacy_release = "verify"
    board = "ownership"
    boards = {"ownership": ownership_board("Ownership verification", order=3)}
    check_board = "fingerprint"
    check_metrics = FINGERPRINT_METRICS

    @classmethod
    def check_cells(cls, rows):
        return fingerprint_cells(rows, cls.name)

    def plan(self, ctx, entry):
        cls = get_defense(entry.name)
        zoo_config(ctx.suite)  # validates [suspects] at plan time
        for attack in entry.attacks:
            kind = get_attack(attack).kind
            if kind not in ("input", "output"):
                raise UserError(f"defense {entry.name!r} (verify protocol) takes query attacks (input) or output "
                                f"attacks (dp-logits), not {attack_label(attack)!r} of kind {kind!r}; model "
                                "modifications belong in the [suspects] section")
        return entry_jobs(ctx, self.name, entry, cls, release="verify", summary_cell=True)

    def suspects(self, ctx, source):
        zoos = ctx.memo("verify.zoos")
        if source.digest not in zoos:
            _, attacker = halves(ctx.train_data)
            dataset = str(ctx.suite.data.get("dataset"))
            zoos[source.digest] = build_zoo(source, zoo_config(ctx.suite), attacker, ctx.data, dataset, ctx.progress)
        return zoos[source.digest]

    def detectors(self, ctx, source, seed: int) -> dict:
        """Every registered query detector, fitted once per source on the deployer's (attacker's) clean half."""
        fitted = ctx.memo("verify.detectors")
        key = digest([source.digest, seed])
        if key not in fitted:
            _, attacker = halves(ctx.train_data)
            fitted[key] = {name: cls().fit(source, attacker, seed) for name, cls in DETECTORS.items()}
        return fitted[key]

    def fingerprint(self, ctx, method, job: Job, source, seed: int):
        prints = ctx.memo("verify.fingerprints")
        key = digest([job.defense, job.params, source.digest, seed])
        if key not in prints:
            defender, _ = halves(ctx.train_data)
            prints[key] = method.fingerprint(source, defender, seed)
        return prints[key]

    def run(self, ctx, job):
        seed = ctx.seed(job.trial)
        source = ctx.model(job.authorized)
        method = get_defense(job.defense)(**job.params)
        suspects = self.suspects(ctx, source)
        fp = self.fingerprint(ctx, method, job, source, seed)
        attack = get_attack(job.attack)
        hooks = {"input_attack": attack if attack.kind == "input" and attack_label(job.attack) != "none" else None,
                 "output_attack": attack if attack.kind == "output" else None}

        def oracle(adapter):
            return SuspectOracle(adapter, method.labels_only, seed=seed, **hooks)

        out, scores = [], {"positive": [], "negative": []}
        for s in suspects:
            start, o = time.perf_counter(), oracle(s.adapter)
            score = float(method.verify(fp, o))
            scores[s.role].append(score)
            out.append(Measurement(
                evaluated=s.name, role=s.role, arch={"authorized": source.arch, "evaluated": s.adapter.arch},
                metrics={"score": score, "top1": s.top1},
                cost={"verify_ms": (time.perf_counter() - start) * 1e3, "queries": o.queries}, n=o.queries,
                model_digest=s.adapter.digest, authorized_digest=source.digest, defense_summary=fp.summary,
                columns={"suspect_kind": s.kind}))
        self_oracle = oracle(source)
        self_score = float(method.verify(fp, self_oracle))
        queries = torch.cat(self_oracle.log)
        clean = ctx.data.images  # the fingerprint test split is small: held for the detector and the source's top-1
        source_top1 = float((source.predict(clean).argmax(1) == ctx.data.labels).float().mean()) * 100
        detected = {f"detect_{name}": d.detection_rate(queries, clean)
                    for name, d in self.detectors(ctx, source, seed).items()}
        summary = {**summarize(scores["positive"], scores["negative"], seed=seed), "self_score": self_score,
                   "source_top1": source_top1, "query_detection_rate": detected["detect_msp"], **detected,
                   "score_pos_mean": float(np.mean(scores["positive"])),
                   "score_neg_mean": float(np.mean(scores["negative"]))}
        out.append(Measurement(
            evaluated="(all suspects)", role=Role.SUMMARY, arch={"authorized": source.arch, "evaluated": ""},
            metrics=summary, cost={"fit_ms": fp.summary.get("fit_ms"), "queries": self_oracle.queries,
                                   "labels_only": method.labels_only},
            n=len(suspects), model_digest=source.digest, authorized_digest=source.digest,
            defense_summary=fp.summary, columns={"suspect_kind": ""}))
        return out

    def reports(self, rows, out, cfg):
        return render_fingerprint(rows, out)

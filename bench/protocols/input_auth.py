"""Input authorization on images (NE, the Gaussian-noise control): the `input` protocol.

A job is (defense, parameter point, release format, attack, trial, authorized model): the evaluated
split is encoded once for the authorized model and every evaluated model reads it. The data moves
in batches from the dataset reader through encoding (directions, PSNR calibration, release format),
the attack, every evaluated model's forward pass and its first-layer deviation, so memory does not
grow with the split. Outputs are cached by (model identity, input identity); the encoding's stats
by the input identity, so a warm rerun neither encodes nor forwards.

The attacker of a learned or adaptation attack sees its own seeded sample of the training split,
released the same way (bench.attacks.attacker.AttackerView).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from bench import provenance
from bench.attacks import DATA_KINDS, attack_label, get_attack
from bench.attacks.attacker import AttackerView
from bench.attacks.base import apply_attack
from bench.cache import digest
from bench.core.context import EvalContext
from bench.core.types import Encoding, Job, Role, Row
from bench.data.base import Split
from bench.defenses import get_defense
from bench.defenses.base import InputDefense
from bench.defenses.release import PSNR_MODES, RELEASES, calibrate, psnr
from bench.encode_space import encode_space, space_input, space_transform, to_pixels
from bench.errors import UserError
from bench.protocols import classify
from bench.protocols.base import PROTOCOLS, Protocol, grid, with_cells
from bench.reports.figures import render_figures
from bench.reports.ne_attacks import render_attacks
from bench.reports.ne_reported import render_comparison
from bench.reports.tables import render_tables


@dataclass
class EncodingStats:
    """Per-sample encoding facts, gathered batch by batch (scalars per sample only)."""

    psnr_true: list = field(default_factory=list)
    psnr_nominal: list = field(default_factory=list)
    residual: list = field(default_factory=list)
    attack_psnr: list = field(default_factory=list)
    err: float = 0.0
    unreachable: int = 0
    seconds: float = 0.0
    samples: int = 0


def _mean(parts: list) -> float | None:
    return float(torch.cat(parts).mean()) if parts else None


@PROTOCOLS.register
class InputAuthorization(Protocol):
    name = "input"
    description = "image input authorization: data recoded for one model, every model scored on the release"
    filters = ("psnr", "release")

    # -- planning ------------------------------------------------------------------------------
    def job(self, ctx: EvalContext, **fields) -> Job:
        job = Job(protocol=self.name, evaluated=tuple(ctx.evaluated), group=fields.get("authorized", ""), **fields)
        return with_cells(ctx, job)

    def baseline(self, ctx):
        return [self.job(ctx, defense="none", params={}, point={}, release="clean", attack="none", authorized="")]

    def plan(self, ctx, entry):
        cls = get_defense(entry.name)
        for attack in entry.attacks:
            kind = get_attack(attack).kind  # validates
            if kind not in DATA_KINDS:
                raise UserError(f"defense {entry.name!r} ({self.name} protocol) cannot take attack {attack_label(attack)!r} "
                                f"of kind {kind!r}; valid kinds here: {', '.join(DATA_KINDS)}")
        if entry.psnr_mode not in PSNR_MODES:
            raise UserError(f"defense {entry.name!r}: unknown psnr_mode {entry.psnr_mode!r}; valid: {', '.join(PSNR_MODES)}")
        for rel in entry.release:
            if rel not in RELEASES:
                raise UserError(f"defense {entry.name!r}: unknown release {rel!r}; valid choices: {', '.join(RELEASES)}")
        for r in ctx.options.releases:
            if r not in RELEASES:
                raise UserError(f"unknown release format {r!r}; valid choices: {', '.join(RELEASES)}")
        points = [p for p in entry.psnr if not ctx.options.psnr or p in ctx.options.psnr]
        releases = [r for r in entry.release if not ctx.options.releases or r in ctx.options.releases]
        jobs = []
        for sweep_point in grid(entry.sweep):
            params = cls(**{**entry.params, **sweep_point}).params  # validates, fills defaults
            jobs += [self.job(ctx, defense=entry.name, params=params,
                              point={"psnr": p, "psnr_mode": entry.psnr_mode, **sweep_point}, release=rel,
                              attack=attack, authorized=auth, trial=trial)
                     for auth in ctx.authorized_for(entry) for p in points for rel in releases
                     for trial in range(entry.trials) for attack in entry.attacks]
        return jobs

    # -- the defense and its release -----------------------------------------------------------
    def defense(self, ctx: EvalContext, job: Job) -> InputDefense:
        """The job's defense, fitted once per (defense, params, authorized model) for this context."""
        cls = get_defense(job.defense)
        auth = ctx.model(job.authorized) if job.authorized and cls.model_specific else None
        fitted = ctx.memo("input.fitted")
        key = digest([job.defense, job.params, auth.digest if auth else None])
        if key not in fitted:
            defense = cls(**job.params)
            if auth is not None:
                defense.fit(auth, None)
            fitted[key] = defense
        return fitted[key]

    def identity(self, ctx: EvalContext, job: Job) -> dict:
        """What the evaluated inputs are: the data, and every transform with its parameters and seed."""
        transforms = []
        if job.defense != "none":
            model_specific = get_defense(job.defense).model_specific
            auth = ctx.model(job.authorized) if job.authorized else None
            transforms.append({"defense": job.defense, "params": job.params,
                               "authorized": auth.digest if model_specific and auth else None,
                               "point": job.point, "release": job.release, "seed": ctx.seed(job.trial)})
            if auth is not None and not model_specific:  # the calibration reads the authorized normalisation
                transforms[-1]["std"] = list(auth.preprocess.std)
            shape = (1, *ctx.data.shape)
            space = space_transform(torch.empty(shape), auth, encode_space(ctx.suite.data))
            if space is not None:  # only where it changes the encoding: older identities stay valid
                transforms[-1]["space"] = space
        if attack_label(job.attack) != "none":
            transforms.append({"attack": attack_label(job.attack), "seed": ctx.seed(job.trial)})
        return {"data": ctx.data.identity, "transforms": transforms}

    def release(self, ctx: EvalContext, job: Job, images: torch.Tensor, indices, labels, seed: int,
                stats: EncodingStats | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """`images` as the job's defense releases them (directions, PSNR calibration, release format) on
        the compute device, and their clean counterpart in the encode space; per-sample facts go to `stats`."""
        images = images.to(ctx.device)
        if job.defense == "none":
            return images, images
        auth = ctx.model(job.authorized) if job.authorized else None
        x = space_input(images, auth, encode_space(ctx.suite.data))
        dirs, residual = to_pixels(self.defense(ctx, job).directions(x, indices, labels, seed), x, auth)
        std = auth.preprocess.std if auth else None
        if std is not None and len(std) == 1:
            std = std * x.shape[1]
        cal = calibrate(x, dirs.to(x.device), job.point["psnr"], job.release, job.point["psnr_mode"], std)
        if stats is not None:
            stats.psnr_true.append(cal.psnr_true.cpu())
            if cal.psnr_nominal is not None:
                stats.psnr_nominal.append(cal.psnr_nominal.cpu())
            if residual is not None:
                stats.residual.append(residual.cpu())
            stats.err = max(stats.err, cal.max_err_db)
            stats.unreachable += cal.unreachable
        return cal.released, x

    def attacker(self, ctx: EvalContext, job: Job, seed: int) -> AttackerView:
        auth = ctx.model(job.authorized) if job.authorized else None
        space = encode_space(ctx.suite.data)

        def encode(split: Split, s: int) -> torch.Tensor:
            return self.release(ctx, job, split.images, split.indices, split.labels, s)[0].cpu()

        def directions(split: Split, s: int) -> torch.Tensor:
            dirs = self.defense(ctx, job).directions(split.images, split.indices, split.labels, s)
            return to_pixels(dirs.cpu(), split.images, auth)[0]

        return AttackerView(train=ctx.train_data, seed=seed, encode=encode,
                            to_space=lambda images: space_input(images.to(ctx.device), auth, space).cpu(),
                            directions=None if job.defense == "none" else directions)

    # -- one job -------------------------------------------------------------------------------
    def run(self, ctx, job):
        snapshot = ctx.snapshot()
        seed = ctx.seed(job.trial)
        pending = [(e, c) for e, c in zip(job.evaluated, job.cells) if c not in ctx.done]
        models = {e: ctx.model(e) for e, _ in pending}
        identity = self.identity(ctx, job)
        enc_key = ctx.encoding_cache.key("", identity)
        record = ctx.encoding_cache.get(enc_key)
        stats = None if record is None else json.loads(str(record["stats"]))
        keys = {e: ctx.forward_cache.key(m.digest, identity) for e, m in models.items()}
        outputs = {e: classify.from_cache(ctx.forward_cache.get(keys[e])) for e in models}
        todo = [e for e in models if outputs[e] is None]
        if todo or stats is None:  # a lost encoding record is re-made without a forward pass
            computed, stats = self.measure(ctx, job, {e: models[e] for e in todo}, seed)
            for e, out in computed.items():
                ctx.forward_cache.put(keys[e], out)
                ctx.counters.forwards += 1
                outputs[e] = out
            ctx.encoding_cache.put(enc_key, {"stats": np.array(json.dumps(stats))})
            ctx.counters.encodings += 1
        spent = ctx.since(snapshot)
        auth = ctx.model(job.authorized) if job.authorized else None
        encoding = None if job.defense == "none" else Encoding(**{k: stats[k] for k in (
            "psnr_true", "psnr_nominal", "calib_err_db", "unreachable", "subspace_dim", "encode_ms", "fit_ms")})
        rows = []
        for e, cell in pending:
            model = models[e]
            metrics, n = classify.score(outputs[e], ctx.data.labels)
            role = Role.of(authorized=job.authorized, evaluated=e, same_arch=bool(auth) and model.arch == auth.arch)
            rows.append(Row.build(
                protocol=self.name, cell=job.cell(e, suite=ctx.suite.name, attack_label=attack_label(job.attack)),
                key=cell, suite_digest=ctx.suite.digest, role=role,
                arch={"authorized": auth.arch if auth else "", "evaluated": model.arch}, metrics=metrics,
                encoding=encoding, attack_stats=stats.get("attack_stats") or None, n=n,
                provenance=provenance.build(
                    model_digest=model.digest, authorized_digest=auth.digest if auth else None,
                    input_digest=digest(identity), defense_summary=stats["defense_summary"], seed=seed,
                    where=ctx.device, **spent)))
        return rows

    def measure(self, ctx: EvalContext, job: Job, models: dict, seed: int) -> tuple[dict, dict]:
        """Encode the split batch by batch, attack it and run `models` on it; their outputs and the stats."""
        attack = get_attack(job.attack)
        attack_stats: dict = {}
        predictors = dict(models)
        if attack.kind in ("learned", "adapt"):
            view = self.attacker(ctx, job, seed)
            if attack.kind == "learned":
                attack_stats.update(attack.fit(view, seed))
            else:  # the attacker adapts unauthorized models only
                predictors = {e: m if e == job.authorized else attack.adapt(m, view, seed).to(ctx.device)
                              for e, m in models.items()}
        attacks_inputs = attack.kind in ("input", "learned") and attack.name != "none"
        enc = EncodingStats()

        def inputs(batch):
            start = time.perf_counter()
            x, clean = self.release(ctx, job, batch.images, batch.indices, batch.labels, seed, enc)
            enc.seconds += time.perf_counter() - start
            enc.samples += len(x)
            if attacks_inputs:
                x = apply_attack(attack, x, seed, batch.positions)
                enc.attack_psnr.append(psnr(clean.cpu(), x.cpu()))
            return x, clean

        deviations = {e: classify.FirstLayerDeviation(m) for e, m in models.items()}
        outputs = classify.stream(ctx, predictors, deviations, inputs, f"{job.defense} {job.authorized or 'clean'}")
        if attacks_inputs:
            attack_stats["psnr"] = _mean(enc.attack_psnr)
        summary = self.defense(ctx, job).summary() if job.defense != "none" else {}
        if enc.residual:
            summary["lift_residual"] = _mean(enc.residual)
        stats = {"psnr_true": _mean(enc.psnr_true), "psnr_nominal": _mean(enc.psnr_nominal),
                 "calib_err_db": enc.err, "unreachable": enc.unreachable,
                 "encode_ms": enc.seconds * 1e3 / max(enc.samples, 1), "fit_ms": summary.pop("fit_ms", 0.0),
                 "subspace_dim": summary.get("subspace_dim"), "defense_summary": summary,
                 "attack_stats": attack_stats}
        return outputs, stats

    def data_identity(self, ctx):
        """The [data] section and the split's own identity (its indices and content digest)."""
        return {"suite_data": ctx.suite.data, "split": ctx.data.identity}

    def reports(self, rows, out, cfg):
        protected = [r for r in rows if r["defense"] != "none"]
        if not protected:
            return []
        present = sorted({float(r["point"]["psnr"]) for r in protected if (r.get("point") or {}).get("psnr") is not None},
                         reverse=True)
        psnrs = [float(p) for p in cfg.get("psnr", present)]
        releases = list(cfg.get("release", dict.fromkeys(r["release"] for r in protected)))
        return (render_tables(rows, out, psnrs, releases)
                + render_figures(rows, out, releases, cfg.get("classes"))
                + render_attacks(rows, out) + render_comparison(rows, out, cfg))

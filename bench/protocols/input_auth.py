"""Input authorization on images (NE, the Gaussian-noise control): the `input` protocol.

A job is (defense, parameter point, release format, attack, trial, authorized model): the evaluated
split is encoded once for the authorized model and every evaluated model reads it. The data moves
in batches from the dataset reader through encoding (directions, PSNR calibration, release format),
the attack, every evaluated model's forward pass and its first-layer deviation, so memory does not
grow with the split. Outputs are cached by (model identity, input identity); the encoding's stats
by the input identity, so a warm rerun neither encodes nor forwards.

The attacker of a learned or adaptation attack sees its own seeded sample of the training split,
released the same way (bench.attacks.attacker.AttackerView).

`evaluation = "paper-code"` (with psnr_mode "paper-code") reproduces how the public NE code scores
an overlapping stem (stride < kernel: ResNet-50, MambaVision): the authorized model is fed the noised
unfolded patches P + s N directly (its first layer reads W (P + s N), here a forward hook adding
W s N to its output on the clean image), while every other model gets fold(P + s N), which sums the
overlapping *image* patches too. No released image gives the authorized model those patches, so the
option is labelled and not deployable; for a non-overlapping stem it equals the real release.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from bench.attacks import DATA_KINDS, attack_label, get_attack
from bench.attacks.attacker import AttackerView
from bench.attacks.base import apply_attack, attack_identity
from bench.core.cache import digest
from bench.core.entry import Entry, as_list, attacks_key, key, models_key, number, one_or_list, string, trials_key
from bench.core.types import Encoding, Job, Measurement, Role
from bench.data.base import Split
from bench.defenses import get_defense
from bench.defenses.base import InputDefense
from bench.defenses.batched import one_thread
from bench.defenses.release import (CALIBRATION_VERSION, PSNR_MODES, RELEASES, calibrate, calibrate_paper_code, psnr,
                                    split_psnr)
from bench.encode_space import encode_space, space_input, space_transform, to_pixels
from bench.core.errors import UserError
from bench.protocols import classify
from bench.protocols.base import PROTOCOLS, Protocol, grid, trials_for, with_cells
from bench.reports.boards import gap_board
from bench.reports.figures import render_figures
from bench.reports.leaderboard import METRIC_DIRECTIONS, leaderboard_cells
from bench.reports.ne_attacks import render_attacks
from bench.reports.ne_reported import render_comparison
from bench.reports.tables import render_tables

if TYPE_CHECKING:  # the engine sits above the protocols: its context type is named here only
    from bench.engine.context import EvalContext


@dataclass
class EncodingStats:
    """Per-sample encoding facts, gathered batch by batch (scalars per sample only)."""

    psnr_true: list = field(default_factory=list)
    psnr_nominal: list = field(default_factory=list)
    residual: list = field(default_factory=list)
    attack_psnr: list = field(default_factory=list)
    err: float = 0.0
    unreachable: int = 0
    bypass_dev: list = field(default_factory=list)
    seconds: float = 0.0
    samples: int = 0


def _mean(parts: list) -> float | None:
    return float(torch.cat(parts).mean()) if parts else None


EVALUATIONS = ("release", "paper-code")
CODE_FRESH_DRAW = 7_919  # seed offset of the public code's second draw of z (after its scale)
# what psnr_mode "paper-code" releases, in input identities: 2 = the code's subspace (tau on the layer's own
# weight) and each unauthorized model's own preprocessing (1, unversioned: the harness's subspace, one encoding)
PAPER_CODE_VERSION = 2


class BypassedModel:
    """The authorized model as the public NE code evaluates an overlapping stem: whatever image it is
    handed, it reads the clean image with `offset` (W s N per patch position, the first layer's
    response to the code's unfolded noise) added to its first layer's output. `pending` is set per
    batch by the release step; its per-sample relative first-layer deviation goes to `deviation`."""

    whole_split = False

    def __init__(self, adapter):
        self.adapter, self.preprocess = adapter, adapter.preprocess
        self.module = dict(adapter.module.named_modules())[adapter.first_linear().module_name]
        self.pending: tuple[torch.Tensor, torch.Tensor, np.ndarray] | None = None

    def predict(self, x, batch_size=256):
        clean, offset, _ = self.pending
        hook = self.module.register_forward_hook(lambda mod, inp, out: out + offset.to(out).view(out.shape))
        try:
            return self.adapter.predict(clean.to(x.device), batch_size=max(len(clean), 1))
        finally:
            hook.remove()

    def deviation(self, x, clean, positions=None):
        return self.pending[2]


class OwnPreprocessingModel:
    """psnr_mode "paper-code": an unauthorized model as the public NE code evaluates it (cli.py with
    --cross_model_name: the cross model's own processor), reading the code's encoding of the stored images
    through its OWN preprocessing (geometry, mean, std) instead of the release made in the authorized model's
    space; `pending` = (its release, its clean input) is set per batch by the release step."""

    whole_split = False

    def __init__(self, adapter, deviation):
        self.adapter, self.preprocess, self._deviation = adapter, adapter.preprocess, deviation
        self.pending: tuple[torch.Tensor, torch.Tensor] | None = None

    def predict(self, x, batch_size=256):
        return self.adapter.predict(self.pending[0].to(device=x.device), batch_size=batch_size)

    def deviation(self, x, clean, positions=None):
        return self._deviation(*self.pending, positions)


def same_preprocessing(a, b) -> bool:
    """Whether two models read the stored images identically (geometry, mean, std per channel)."""
    pa, pb = a.preprocess, b.preprocess
    c = pa.input_size[0]

    def per_channel(v):
        return tuple(float(t) for t in v) * (c if len(v) == 1 else 1)

    return (pa.geometry.to_dict() == pb.geometry.to_dict() and tuple(pa.input_size) == tuple(pb.input_size)
            and per_channel(pa.mean) == per_channel(pb.mean) and per_channel(pa.std) == per_channel(pb.std))


@dataclass(frozen=True, kw_only=True)
class CodeEncoded:
    """The public NE code's encoding of one batch for one model (`code_encode`)."""

    released: torch.Tensor  # what the model is fed, pixel space in its own geometry
    calibrated: object  # bench.defenses.release.Calibrated of the real release (clean + folded perturbation)
    bypass: tuple | None  # (first-layer offset, per-sample deviation) of the bypassed authorized model, or None


def code_encode(defense, auth, model, x: torch.Tensor, indices, labels, seed: int, target_db: float, fmt: str,
                evaluation: bool) -> CodeEncoded:
    """The public code's encoding (`nes.py` generate_cnn_noised_images) of `x`, images already through `model`'s
    geometry: normalized by `model`'s mean and std, unfolded with the authorized first layer's kernel, stride
    and padding, perturbed in the code's subspace of the authorized layer, scaled by the code's rule.
    With `evaluation` ("paper-code"), a model other than the authorized one is fed fold(P + s N) (the fold sums
    overlapping image patches too) and an overlapping authorized stem is bypassed."""
    fl_auth = auth.first_linear()
    c = x.shape[1]
    if model is auth:
        fl = fl_auth
    elif fl_auth.kind == "conv":
        fl = replace(fl_auth, input_shape=(c, *x.shape[-2:]))
    elif tuple(x.shape[1:]) == tuple(fl_auth.input_shape):
        fl = fl_auth
    else:
        raise UserError(f"psnr_mode 'paper-code': model {model.name!r} reads {tuple(x.shape[1:])} but the authorized "
                        f"model's first layer is a Linear over {tuple(fl_auth.input_shape)}; pick models of one input size")

    def per_channel(v):
        return tuple(float(t) for t in v) * (c if len(v) == 1 else 1)

    mean, std, std_auth = per_channel(model.preprocess.mean), per_channel(model.preprocess.std), per_channel(auth.preprocess.std)
    first = defense.patch_noise(x, indices, labels, seed, fl, std_auth)
    fresh = defense.patch_noise(x, indices, labels, seed + CODE_FRESH_DRAW, fl, std_auth) if defense.paper_code_fresh else first
    code = calibrate_paper_code(x, first, fresh, fl.unfold, fl.fold, mean, std, target_db, fmt)
    released, bypass = code.calibrated.released, None
    if evaluation and (model is not auth or not fl.non_overlapping):
        s = torch.tensor(std, dtype=torch.float64, device=x.device).view(1, -1, 1, 1)
        m = torch.tensor(mean, dtype=torch.float64, device=x.device).view(1, -1, 1, 1)
        released = (m + s * fl.fold(code.noised_patches)).to(x.dtype)  # the code's fold for everyone else
    if evaluation and model is auth and not fl.non_overlapping:
        n = fl.matrix.shape[1]
        per_entry = torch.tensor(std, dtype=torch.float64, device=x.device).repeat_interleave(n // c)
        w_raw = fl.matrix.to(device=x.device, dtype=torch.float64) * per_entry  # W on the normalized tensor
        offset = torch.einsum("mn,bnl->bml", w_raw, code.noise)
        signal = torch.einsum("mn,bnl->bml", w_raw, code.noised_patches - code.noise)
        dev = (offset.flatten(1).norm(dim=1) / signal.flatten(1).norm(dim=1).clamp_min(1e-30)).cpu().numpy()
        bypass = (offset, dev)
    return CodeEncoded(released=released, calibrated=code.calibrated, bypass=bypass)


def target_metrics(job: Job, encoding: Encoding) -> dict:
    """The PSNR the release achieved, on the target's own scale (true or paper-nominal, mean over samples),
    and whether every sample met the target within TOLERANCE_DB (a clipped or 8-bit release cannot go
    below its saturated image's PSNR: see bench.defenses.release)."""
    nominal = job.point.get("psnr_mode") == "paper-nominal"
    achieved = encoding.psnr_nominal if nominal else encoding.psnr_true
    return {"psnr_achieved": achieved, "target_reached": not encoding.unreachable}


@dataclass(frozen=True, kw_only=True)
class ImageEntry(Entry):
    """A [[defenses]] entry of image input authorization: its operating points, release formats and attacks."""

    psnr: list = key(one_or_list(number(), "numbers (dB)"), factory=lambda: [20.0],
                     parse=lambda v: [float(p) for p in as_list(v)])
    psnr_mode: str = key(string(*PSNR_MODES), "true")
    evaluation: str = key(string(*EVALUATIONS), "release")
    release: list = key(one_or_list(string(), "release format names"), factory=lambda: ["float"],
                        parse=lambda v: [str(r) for r in as_list(v)])
    attacks: list = attacks_key()
    trials: int = trials_key()
    models: list = models_key()


@PROTOCOLS.register
class InputAuthorization(Protocol):
    name = "input"
    description = "image input authorization: data recoded for one model, every model scored on the release"
    entry = ImageEntry
    filters = {"psnr": "psnr", "releases": "release"}
    primary = True  # a suite no protocol owns is an image suite
    image_models = True
    ranked = True
    boards = {"input": gap_board("Input authorization", order=0, records_evaluated=True)}
    check_board = "leaderboard"
    check_metrics = METRIC_DIRECTIONS

    @classmethod
    def check_cells(cls, rows):
        return leaderboard_cells(rows)

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
        if entry.evaluation not in EVALUATIONS:
            raise UserError(f"defense {entry.name!r}: unknown evaluation {entry.evaluation!r}; valid: {', '.join(EVALUATIONS)}")
        if entry.evaluation == "paper-code" and entry.psnr_mode != "paper-code":
            raise UserError(f"defense {entry.name!r}: evaluation 'paper-code' needs psnr_mode = \"paper-code\" "
                            f"(got {entry.psnr_mode!r})")
        if entry.psnr_mode == "paper-code" and encode_space(ctx.suite.data) != "model":
            raise UserError(f"defense {entry.name!r}: psnr_mode 'paper-code' encodes in the model's input space; "
                            "set [data] encode_space = \"model\"")
        for rel in entry.release:
            if rel not in RELEASES:
                raise UserError(f"defense {entry.name!r}: unknown release {rel!r}; valid choices: {', '.join(RELEASES)}")
        for r in ctx.options.releases:
            if r not in RELEASES:
                raise UserError(f"unknown release format {r!r}; valid choices: {', '.join(RELEASES)}")
        points = [p for p in entry.psnr if not ctx.options.psnr or p in ctx.options.psnr]
        evaluation = {"evaluation": entry.evaluation} if entry.evaluation != "release" else {}  # old identities stay
        releases = [r for r in entry.release if not ctx.options.releases or r in ctx.options.releases]
        jobs = []
        for sweep_point in grid(entry.sweep):
            params = cls(**{**entry.params, **sweep_point}).params  # validates, fills defaults
            jobs += [self.job(ctx, defense=entry.name, params=params,
                              point={"psnr": p, "psnr_mode": entry.psnr_mode, **evaluation, **sweep_point}, release=rel,
                              attack=attack, authorized=auth, trial=trial)
                     for auth in ctx.authorized_for(entry) for p in points for rel in releases
                     for trial in range(max((trials_for(ctx, entry, cls, a) for a in entry.attacks), default=0))
                     for attack in entry.attacks if trial < trials_for(ctx, entry, cls, attack)]
        return jobs

    def merge_key(self, ctx, job):
        """Jobs whose parameters resolve to the same ones for the authorized model (e.g. ne-operator's default
        dims = 1/12 and dims = 256 of a 3 x 32 x 32 input) measure the same cells."""
        if job.defense == "none" or not job.authorized:
            return super().merge_key(ctx, job)
        spec = ctx.specs.get(job.authorized)

        def input_size():  # from the spec when it says, else from the loaded model
            given = spec.get("input_size") if isinstance(spec, dict) else None
            return tuple(given) if given else ctx.model(job.authorized).preprocess.input_size

        canonical = getattr(get_defense(job.defense), "canonical_params", None)
        params = canonical(job.params, input_size) if canonical is not None else job.params
        return digest([self.name, job.defense, params, job.point, job.release, attack_label(job.attack), job.authorized,
                       job.trial, list(job.evaluated), job.extra.get("cell_fields", {})])

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
                with one_thread():  # the fitted directions must not depend on the machine's thread count
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
            if job.release != "float":  # unreachable targets stop where the PSNR stops falling (version 2)
                transforms[-1]["calibration"] = CALIBRATION_VERSION
            if job.point.get("psnr_mode") == "paper-code":  # version 2: the code's subspace, own preprocessing
                transforms[-1]["paper_code"] = PAPER_CODE_VERSION
        if attack_label(job.attack) != "none":
            transforms.append({**attack_identity(job.attack), "seed": ctx.seed(job.trial)})
        return {"data": ctx.data.identity, "transforms": transforms}

    def clean_identity(self, ctx: EvalContext, job: Job) -> dict:
        """What the clean counterpart `release` returns is: the data, through the authorized model's geometry
        when the defense encodes in the model's input space (else the images themselves)."""
        auth = ctx.model(job.authorized) if job.defense != "none" and job.authorized else None
        space = encode_space(ctx.suite.data)
        g = None if auth is None or space == "pixel" else auth.preprocess.geometry
        geometry = None if g is None or tuple(ctx.data.shape[-2:]) == tuple(g.crop) else g.to_dict()  # identity there
        return {"data": ctx.data.identity, "geometry": geometry}

    def release(self, ctx: EvalContext, job: Job, images: torch.Tensor, indices, labels, seed: int,
                stats: EncodingStats | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """`images` as the job's defense releases them (directions, PSNR calibration, release format) on
        the compute device, and their clean counterpart in the encode space; per-sample facts go to `stats`."""
        images = ctx.to_device(images)
        if job.defense == "none":
            return images, images
        auth = ctx.model(job.authorized) if job.authorized else None
        x = space_input(images, auth, encode_space(ctx.suite.data))
        if job.point["psnr_mode"] == "paper-code":
            return self.release_paper_code(ctx, job, x, indices, labels, seed, stats, images)
        defense = self.defense(ctx, job)
        std = auth.preprocess.std if auth else None
        if std is not None and len(std) == 1:
            std = std * x.shape[1]
        with one_thread():  # released bytes independent of the thread count (on a GPU this changes nothing)
            dirs, residual = to_pixels(defense.directions(x, indices, labels, seed), x, auth)
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

    def release_paper_code(self, ctx: EvalContext, job: Job, x: torch.Tensor, indices, labels, seed: int,
                           stats: EncodingStats | None, images: torch.Tensor | None = None
                           ) -> tuple[torch.Tensor, torch.Tensor]:
        """psnr_mode "paper-code": the public NE code's scale rule on the authorized first layer's unfolded
        patches (bench.defenses.release.calibrate_paper_code), in the code's subspace (`code_basis`: tau on
        the layer's own weight); with evaluation "paper-code" on an overlapping stem, the image everyone else
        gets is the code's fold(P + s N) and the authorized model is bypassed (`BypassedModel.pending`).
        An unauthorized model whose preprocessing differs from the authorized one's gets the code's encoding
        of `images` (the stored batch) through its OWN preprocessing (`OwnPreprocessingModel.pending`)."""
        if not job.authorized:
            raise UserError(f"defense {job.defense!r}: psnr_mode 'paper-code' needs an authorized model")
        auth = ctx.model(job.authorized)
        fl = auth.first_linear()
        if tuple(x.shape[1:]) != tuple(fl.input_shape):
            raise UserError(f"psnr_mode 'paper-code': images {tuple(x.shape[1:])} are not the authorized model's "
                            f"input {tuple(fl.input_shape)}")
        defense = self.defense(ctx, job)
        evaluation = job.point.get("evaluation") == "paper-code"
        code = code_encode(defense, auth, auth, x, indices, labels, seed, job.point["psnr"], job.release, evaluation)
        holder = ctx.memo("input.bypass").get(job.authorized)
        if holder is not None and code.bypass is not None:
            holder.pending = (x, *code.bypass)
        for own in ctx.memo("input.own").values():  # each model that reads its own preprocessing of the batch
            if images is None:
                raise UserError("psnr_mode 'paper-code': a model with its own preprocessing needs the stored images")
            mine = own.adapter.preprocess.geometry(images)
            other = code_encode(defense, auth, own.adapter, mine, indices, labels, seed, job.point["psnr"], job.release,
                                evaluation)
            own.pending = (other.released, mine)
        if stats is not None:
            stats.psnr_true.append(code.calibrated.psnr_true.cpu())
            stats.psnr_nominal.append(code.calibrated.psnr_nominal.cpu())
            if code.bypass is not None:
                stats.bypass_dev.append(torch.from_numpy(code.bypass[1]))
        return code.released, x

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
        seed = ctx.seed(job.trial)
        pending = [e for e, c in zip(job.evaluated, job.cells) if c not in ctx.done]
        models = {e: ctx.model(e) for e in pending}
        identity = self.identity(ctx, job)
        stats = ctx.forwards.record("", identity)
        fresh: dict = {}

        def compute(todo: list[str]) -> dict:
            fresh["outputs"], fresh["stats"] = self.measure(ctx, job, {e: models[e] for e in todo}, seed)
            return fresh["outputs"]

        outputs = ctx.forwards.outputs({e: m.digest for e, m in models.items()}, classify.outputs_identity(ctx, identity),
                                       compute, classify.from_cache)
        if fresh or stats is None:  # a lost encoding record is re-made without a forward pass
            stats = fresh["stats"] if fresh else self.measure(ctx, job, {}, seed)[1]
            ctx.forwards.keep_record("", identity, stats)
        auth = ctx.model(job.authorized) if job.authorized else None
        encoding = None if job.defense == "none" else Encoding(**{k: stats[k] for k in (
            "psnr_true", "psnr_nominal", "calib_err_db", "unreachable", "subspace_dim", "encode_ms", "fit_ms")})
        out = []
        for e in pending:
            model = models[e]
            metrics, n = classify.score(outputs[e], ctx.data.labels)
            if encoding is not None:
                metrics.update(target_metrics(job, encoding))
            out.append(Measurement(
                evaluated=e, role=Role.of(authorized=job.authorized, evaluated=e,
                                          same_arch=bool(auth) and model.arch == auth.arch),
                arch={"authorized": auth.arch if auth else "", "evaluated": model.arch}, metrics=metrics,
                encoding=encoding, attack_stats=stats.get("attack_stats") or None, n=n, model_digest=model.digest,
                authorized_digest=auth.digest if auth else None, input_digest=digest(identity),
                defense_summary=stats["defense_summary"]))
        return out

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
        # the normalization of the model the shared release is made for (cutout's mean fill, jpeg's rescale)
        reader = ctx.model(job.authorized) if job.authorized else next(iter(models.values()), None)
        norm = None if reader is None else (reader.preprocess.mean, reader.preprocess.std)

        def inputs(batch):
            start = time.perf_counter()
            x, clean = self.release(ctx, job, batch.images, batch.indices, batch.labels, seed, enc)
            enc.seconds += time.perf_counter() - start
            enc.samples += len(x)
            if attacks_inputs:
                x = apply_attack(attack, x, seed, batch.positions, norm)
                enc.attack_psnr.append(psnr(clean.cpu(), x.cpu()))
                for holder in own.values():  # the code transforms each model's own encoding
                    pre = holder.adapter.preprocess
                    holder.pending = (apply_attack(attack, holder.pending[0], seed, batch.positions, (pre.mean, pre.std)),
                                      holder.pending[1])
            return x, clean

        clean = self.clean_identity(ctx, job)
        deviations = {e: classify.FirstLayerDeviation(m, classify.clean_norms(ctx, m, clean)) for e, m in models.items()}
        bypass = ctx.memo("input.bypass")
        bypass.clear()
        if job.point.get("evaluation") == "paper-code" and job.authorized in predictors:
            auth = predictors[job.authorized]
            if not auth.first_linear().non_overlapping:
                bypass[job.authorized] = predictors[job.authorized] = BypassedModel(auth)
                deviations[job.authorized] = bypass[job.authorized].deviation
        own = ctx.memo("input.own")
        own.clear()
        if job.point.get("psnr_mode") == "paper-code" and job.authorized:
            auth = ctx.model(job.authorized)
            for e, m in models.items():  # the code preprocesses each unauthorized model's images its own way
                if e != job.authorized and not same_preprocessing(m, auth):
                    norms = classify.clean_norms(ctx, m, {"data": ctx.data.identity, "geometry": None})
                    own[e] = predictors[e] = OwnPreprocessingModel(predictors[e], classify.FirstLayerDeviation(m, norms))
                    deviations[e] = own[e].deviation
        outputs = classify.stream(ctx, predictors, deviations, inputs, f"{job.defense} {job.authorized or 'clean'}")
        if attacks_inputs:
            attack_stats["psnr"] = _mean(enc.attack_psnr)
        summary = self.defense(ctx, job).summary() if job.defense != "none" else {}
        if enc.residual:
            summary["lift_residual"] = _mean(enc.residual)
        if enc.psnr_nominal:  # the public code's calculate_psnr: one MSE over every sample (of the split)
            summary["psnr_nominal_split"] = split_psnr(torch.cat(enc.psnr_nominal))
        if job.point.get("evaluation") == "paper-code":
            summary["evaluation"] = "paper-code (authorized model bypassed)" if enc.bypass_dev else "paper-code (non-overlapping stem: the release)"
        if job.point.get("psnr_mode") == "paper-code" and job.defense != "none":
            code_summary = getattr(self.defense(ctx, job), "code_summary", None)
            if code_summary is not None:
                summary.update(code_summary(ctx.model(job.authorized).preprocess.std))
            if own:
                summary["own_preprocessing"] = sorted(own)
        bypass.clear()
        own.clear()
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

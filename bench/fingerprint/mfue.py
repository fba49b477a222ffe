"""MFUE: model fingerprinting via unlearnable examples.

Xu et al., "Breaking the Boundary Barrier: Robust Model Fingerprinting via Unlearnable Examples
in Model-Parameter Space", KDD '26, doi 10.1145/3770854.3780310, Sections 3.1-3.2, Appendix B.

Mimic models (Sec. 3.1): "we snapshot the source model at each epoch during adversarial
training": `n_mimic` epochs of PGD adversarial fine-tuning of the source on the defender's data
(SGD, lr `mimic_lr`, radius `mimic_eps`), one snapshot at the end of each epoch (F^mmc).
Triggers (Eq. 3-4): x_UF = x + delta, ||delta||_inf <= trigger_eps, minimising the cross-entropy
of the true label with signed gradient steps of size `trigger_step`. Two schedules:
  schedule = "paper" (default): Eq. 3 from the clean sample (x_0 = x); every step descends the
      expectation of Eq. 4, the mean loss over all of F^mmc; trigger_rounds x trigger_steps steps.
      The paper gives no step count: the budget is a parameter (default: the code's 2,000 x 10).
  schedule = "code" (github.com/SPHelixLab/MFUE, utils/generate.py): delta drawn uniformly in
      [-eps, eps]; trigger_rounds rounds, each drawing ONE model uniformly at random and taking
      trigger_steps signed steps on it; the draw is over {snapshots 1..n-1, source} (the code
      draws an index in 1..n and loads the source for n, so the last snapshot is never used); the
      step size is multiplied by 0.9 once, after round 100.
Verification (Sec. 3.2): a trigger matches when the suspect's loss lies in
((1 - tau) L_src, (1 + tau) L_src) (Eq. 5); the score is the matching rate (Eq. 6).
MFUE-w reads the suspect's probabilities. MFUE-b (labels only) estimates them by Monte Carlo
(Eq. 7-9): probes x' = alpha x_UF + (1 - alpha) delta_pb, alpha found per trigger by bisection
on the source, p_hat(y) = share of probes labelled y, loss = -log p_hat(y) (floored at 1/(2M)).

Paper vs public code (defaults follow the paper; the code's values are parameters; the full
table is in docs/fingerprints.md):
  schedule       "paper" (above)                     | "code" (above)
  mimic_eps      4/255 (paper, App. B)               | 16/255 with 20 PGD steps (code: mimic_steps = 20)
  mimic snapshots one per epoch, n_mimic = 10 epochs (paper and code agree)
  tau            0.5 (paper, App. B)                 | 0.2 (code)
  probe          "gradient": delta_pb by gradient ascent on the source, bisection until more than half
                 the probes cross the boundary (paper) | "gaussian": Gaussian delta_pb, bisection until
                 the source's accuracy on the probes is in [0.4, 0.6] (code)
Where the paper is silent the code's behaviour is the default, the harness's former one an option:
  bisection_fail "drop": a trigger whose bisection never meets its criterion in `bisection_steps`
                 midpoints is left out of the fingerprint (code: alpha_determine returns None and
                 MC_estimate skips it; the paper does not say what happens) | "keep": kept at alpha = lo
  clamp          "code": the perturbation delta is clipped to [-eps, eps] only and every model sees
                 clip(x + delta, 0, 1) (PGD_uf; a pixel pushed past the image range gets no gradient
                 through the clip and stays there); the trigger is clip(x + delta, 0, 1) |
                 "project": each step projects x + delta on the eps ball and on [0, 1]
Ablations (not in paper or code; each removes one component, docs/fingerprints.md):
  mimics         "snapshots" (Eq. 4, default) | "source": Eq. 3 on the source alone, no mimic models
  match          "interval" (Eq. 5, default) | "log-ratio": score = mean over triggers of
                 exp(-|log L_spc - log L_src|), the same loss comparison without the interval cut |
                 "label": the share of triggers the suspect labels y (the baselines' label matching)
  trigger_rounds = 0: the clean samples as triggers (no trigger optimisation)
"""

from __future__ import annotations

import copy
import time

import torch
import torch.nn.functional as F

from bench.core.cache import digest
from bench.data.base import Split
from bench.defenses.base import sample_generator
from bench.core.errors import UserError
from bench.fingerprint import training as T
from bench.fingerprint.base import Fingerprint, FingerprintMethod, SuspectOracle, register_fingerprint, select_samples
from bench.models.adapter import ModelAdapter

PROBES = ("gradient", "gaussian")
SCHEDULES = ("paper", "code")
CLAMPS = ("code", "project")
MIMICS = ("snapshots", "source")
MATCHES = ("interval", "log-ratio", "label")
BISECTION_FAILS = ("drop", "keep")
CODE_BAND = (0.4, 0.6)  # utils/verification.py alpha_determine: source accuracy on the probes in [0.4, 0.6]
CODE_DECAY_ROUND, CODE_DECAY = 100, 0.9  # utils/generate.py: step_size *= 0.9 after round 100
TRIGGER_PARAMS = ("n_triggers", "n_mimic", "mimic_eps", "mimic_steps", "mimic_lr", "trigger_eps", "trigger_rounds",
                  "trigger_steps", "trigger_step", "schedule", "clamp", "mimics")
MIMIC_PARAMS = ("n_mimic", "mimic_eps", "mimic_steps", "mimic_lr")
_TRIGGERS: dict = {}  # digest of (source, data, seed, TRIGGER_PARAMS) -> (triggers, labels)
_MIMICS: dict = {}  # digest of (source, data, seed, MIMIC_PARAMS) -> F^mmc, shared by every trigger budget


def mimic_models(source: ModelAdapter, data: Split, n: int, eps: float, steps: int, lr: float,
                 seed: int) -> list[torch.nn.Module]:
    """F^mmc: n epochs of PGD adversarial fine-tuning of the source, one snapshot at the end of each."""
    snaps: list[torch.nn.Module] = []

    def on_epoch(module, epoch):
        snaps.append(copy.deepcopy(module).cpu().eval())

    T.adversarial_train(source.module, source.preprocess, data, eps, n, lr, seed, steps, "sgd", on_epoch)
    return snaps


def _signed_steps(loss_of, delta: torch.Tensor, x: torch.Tensor, eps: float, steps: int, step_size: float,
                  clamp: str = "code") -> torch.Tensor:
    """`steps` signed descent steps of loss_of(trigger) on the perturbation delta; returns delta.
    clamp = "code": delta clipped to [-eps, eps], the model sees clip(x + delta, 0, 1) (PGD_uf);
    clamp = "project": x + delta projected on the eps ball around x and on [0, 1] after each step."""
    for _ in range(steps):
        delta.requires_grad_(True)
        adv = (x + delta).clamp(0, 1) if clamp == "code" else x + delta
        (grad,) = torch.autograd.grad(loss_of(adv), delta)
        delta = (delta.detach() - step_size * grad.sign()).clamp(-eps, eps)
        if clamp != "code":
            delta = (x + delta).clamp(0, 1) - x
    return delta.detach()


def paper_triggers(mimics: list, preprocess, x: torch.Tensor, y: torch.Tensor, eps: float, rounds: int, steps: int,
                   step_size: float, clamp: str = "code") -> torch.Tensor:
    """Eq. 3-4: from x_0 = x, rounds * steps signed steps on the mean cross-entropy over F^mmc."""
    def loss(adv):
        return sum(F.cross_entropy(m(preprocess(adv)), y) for m in mimics) / len(mimics)

    return (x + _signed_steps(loss, torch.zeros_like(x), x, eps, rounds * steps, step_size, clamp)).clamp(0, 1)


def code_draws(n_mimic: int, rounds: int, gen: torch.Generator) -> list[int]:
    """The model of each round in the code's schedule: an index i uniform in 1..n_mimic; i = n_mimic
    is the source (returned as 0), any other i is snapshot i (so snapshot n_mimic is never drawn)."""
    draws = torch.randint(1, n_mimic + 1, (rounds,), generator=gen).tolist()
    return [0 if i == n_mimic else i for i in draws]


def code_triggers(source: torch.nn.Module, mimics: list, preprocess, x: torch.Tensor, y: torch.Tensor, eps: float,
                  rounds: int, steps: int, step_size: float, gen: torch.Generator, clamp: str = "code") -> torch.Tensor:
    """The public code's schedule: a uniform random start in the eps ball, then `rounds` rounds of
    `steps` signed steps, each round on one drawn model (source or a snapshot, `code_draws`)."""
    pool = [source, *mimics]
    delta = ((torch.rand(x.shape, generator=gen) * 2 - 1) * eps).to(x.device)
    if clamp != "code":
        delta = (x + delta).clamp(0, 1) - x
    for r, i in enumerate(code_draws(len(mimics), rounds, gen)):
        model = pool[i]
        delta = _signed_steps(lambda a: F.cross_entropy(model(preprocess(a)), y), delta, x, eps, steps, step_size, clamp)
        if r == CODE_DECAY_ROUND:
            step_size *= CODE_DECAY
    return (x + delta).clamp(0, 1)


def matching_rate(l_src: torch.Tensor, l_spc: torch.Tensor, tau: float) -> float:
    """Eq. 5-6: share of triggers whose suspect loss is within a factor (1 +- tau) of the source loss."""
    if len(l_src) == 0:  # every trigger dropped (MFUE-b, bisection_fail = "drop"): nothing matches
        return 0.0
    return float(((l_spc > (1 - tau) * l_src) & (l_spc < (1 + tau) * l_src)).float().mean())


def log_ratio_score(l_src: torch.Tensor, l_spc: torch.Tensor) -> float:
    """Ablation of Eq. 5's cut: mean over triggers of exp(-|log L_spc - log L_src|), in (0, 1]."""
    if len(l_src) == 0:
        return 0.0
    tiny = torch.finfo(torch.float64).tiny
    ratio = l_spc.double().clamp_min(tiny).log() - l_src.double().clamp_min(tiny).log()
    return float(torch.exp(-ratio.abs()).mean())


@register_fingerprint
class MFUE(FingerprintMethod):
    name = "mfue-w"
    description = "MFUE-w: unlearnable-example fingerprints, loss interval match on the suspect's probabilities"
    labels_only = False
    defaults = {"n_triggers": 100, "n_mimic": 10, "mimic_eps": 4 / 255, "mimic_steps": 10, "mimic_lr": 1e-3,
                "trigger_eps": 8 / 255, "schedule": "paper", "trigger_rounds": 2000, "trigger_steps": 10,
                "trigger_step": 1.6 / 255, "tau": 0.5, "clamp": "code", "mimics": "snapshots",
                "match": "interval"}

    def __init__(self, **params):
        super().__init__(**params)
        p = self.params
        if not 0 < float(p["tau"]) < 1:
            raise UserError(f"{self.name}: tau must be in (0, 1), got {p['tau']!r}")
        for k, valid in (("schedule", SCHEDULES), ("clamp", CLAMPS), ("mimics", MIMICS), ("match", MATCHES)):
            if p[k] not in valid:
                raise UserError(f"{self.name}: unknown {k} {p[k]!r}; valid choices: {', '.join(valid)}")
        if p["mimics"] == "source" and p["schedule"] != "paper":
            raise UserError(f"{self.name}: mimics = \"source\" (Eq. 3 alone) needs schedule = \"paper\"")
        for k in ("n_mimic", "trigger_rounds", "trigger_steps"):
            if not isinstance(p[k], int) or isinstance(p[k], bool) or p[k] < (1 if k == "n_mimic" else 0):
                raise UserError(f"{self.name}: {k} must be a whole number >= {1 if k == 'n_mimic' else 0}, "
                                f"got {p[k]!r}")

    @classmethod
    def row_label(cls, params: dict) -> str:
        """The name a row carries in tables, boards and CSV: the method, with the options that are not the
        paper's (the public code's schedule, clamping or bisection rule; an ablation) in brackets."""
        p = {**cls.defaults, **params}
        tags = []
        if p.get("schedule") == "code":
            tags.append("code schedule")
        if p.get("clamp") == "project":
            tags.append("projected clamp")
        if p.get("bisection_fail") == "keep":
            tags.append("keeps failed bisections")
        if p.get("mimics") == "source":
            tags.append("ablation: no mimic models")
        if p.get("match") != "interval":
            tags.append(f"ablation: {p.get('match')} match")
        if int(p.get("trigger_rounds", 1)) == 0:
            tags.append("ablation: clean samples")
        return f"{cls.name} [{'; '.join(tags)}]" if tags else cls.name

    def fingerprint(self, source: ModelAdapter, data: Split, seed: int) -> Fingerprint:
        start = time.perf_counter()
        triggers, y = self.triggers(source, data, seed)
        ref = self.reference(source, triggers, y, seed)
        kept = ref.pop("kept", None)  # MFUE-b: the triggers whose bisection succeeded (bisection_fail = "drop")
        if kept is not None:
            triggers, y = triggers[kept], y[kept]
        reference = {"labels": y, **ref}
        p = self.params
        summary = {"fit_ms": (time.perf_counter() - start) * 1e3, "mimic_models": int(p["n_mimic"]),
                   "schedule": p["schedule"], "trigger_updates": int(p["trigger_rounds"]) * int(p["trigger_steps"]),
                   "triggers": len(triggers)}
        return Fingerprint(triggers, reference, summary)

    def triggers(self, source: ModelAdapter, data: Split, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(unlearnable triggers, labels), memoized per process: MFUE-w, MFUE-b and every tau share them
        (and every trigger budget shares the mimic models)."""
        p = self.params
        key = digest([source.digest, data.identity, seed, {k: p[k] for k in TRIGGER_PARAMS}])
        if key not in _TRIGGERS:
            x, y = select_samples(source, data, int(p["n_triggers"]), seed)
            rounds = int(p["trigger_rounds"])
            mimics = []
            if p["mimics"] == "snapshots" and rounds > 0:  # no optimisation, no use for the mimic models
                mkey = digest([source.digest, data.identity, seed, {k: p[k] for k in MIMIC_PARAMS}])
                if mkey not in _MIMICS:
                    _MIMICS[mkey] = mimic_models(source, data, int(p["n_mimic"]), float(p["mimic_eps"]),
                                                 int(p["mimic_steps"]), float(p["mimic_lr"]), seed)
                mimics = _MIMICS[mkey]
            budget = (float(p["trigger_eps"]), rounds, int(p["trigger_steps"]), float(p["trigger_step"]))
            dev = T.device()  # the trigger budget runs on the run's device (--device)
            on_dev = [copy.deepcopy(m).to(dev).eval() for m in (source.module, *mimics)]
            xd, yd = x.to(dev), y.to(dev)
            if rounds == 0 and p["schedule"] == "paper":
                adv = xd
            elif p["schedule"] == "paper":  # Eq. 4 over F^mmc; mimics = "source": Eq. 3 on the source alone
                adv = paper_triggers(on_dev[1:] or on_dev[:1], source.preprocess, xd, yd, *budget, clamp=p["clamp"])
            else:
                gen = sample_generator(seed, 0, "mfue-code-schedule")
                adv = code_triggers(on_dev[0], on_dev[1:], source.preprocess, xd, yd, *budget, gen, clamp=p["clamp"])
            _TRIGGERS[key] = (adv.cpu(), y)
        return _TRIGGERS[key]

    def reference(self, source: ModelAdapter, triggers: torch.Tensor, y: torch.Tensor, seed: int) -> dict:
        oracle = SuspectOracle(source)
        return {"loss": self.losses(triggers, y, oracle)}

    def losses(self, triggers: torch.Tensor, y: torch.Tensor, oracle: SuspectOracle, reference: dict | None = None):
        return -oracle.log_probs(triggers).gather(1, y[:, None])[:, 0]

    def verify(self, fingerprint: Fingerprint, suspect: SuspectOracle) -> float:
        ref = fingerprint.reference
        if len(fingerprint.queries) == 0:
            return 0.0
        if self.params["match"] == "label":
            return float((suspect.labels(fingerprint.queries) == ref["labels"]).float().mean())
        l_spc = self.losses(fingerprint.queries, ref["labels"], suspect, ref)
        if self.params["match"] == "log-ratio":
            return log_ratio_score(ref["loss"], l_spc)
        return matching_rate(ref["loss"], l_spc, float(self.params["tau"]))


@register_fingerprint
class MFUEBlack(MFUE):
    name = "mfue-b"
    description = "MFUE-b: unlearnable-example fingerprints, labels only, Monte Carlo loss estimate (Eq. 7-9)"
    labels_only = True
    defaults = {**MFUE.defaults, "n_probes": 100, "probe": "gradient", "bisection_steps": 8, "bisection_fail": "drop"}

    def __init__(self, **params):
        super().__init__(**params)
        if self.params["probe"] not in PROBES:
            raise UserError(f"{self.name}: unknown probe {self.params['probe']!r}; valid choices: {', '.join(PROBES)}")
        if self.params["bisection_fail"] not in BISECTION_FAILS:
            raise UserError(f"{self.name}: unknown bisection_fail {self.params['bisection_fail']!r}; valid choices: "
                            f"{', '.join(BISECTION_FAILS)}")

    def _deltas(self, source: ModelAdapter, triggers: torch.Tensor, y: torch.Tensor, seed: int) -> torch.Tensor:
        """delta_pb per trigger and probe (N, M, C, H, W), seeded per trigger."""
        m = int(self.params["n_probes"])
        noise = torch.stack([torch.randn((m, *triggers.shape[1:]), generator=sample_generator(seed, i, "mfue-probe"))
                             for i in range(len(triggers))])
        if self.params["probe"] == "gaussian":
            return noise
        # gradient ascent on the source's loss from noisy copies of the trigger: one signed step of size 1
        start = (triggers[:, None] + 0.1 * noise).clamp(0, 1).flatten(0, 1).requires_grad_(True)
        loss = F.cross_entropy(source.module(source.preprocess(start)), y.repeat_interleave(m))
        (grad,) = torch.autograd.grad(loss, start)
        return (triggers[:, None] + grad.sign().view_as(noise)).clamp(0, 1)

    def _probes(self, triggers, deltas, alpha):
        return (alpha.view(-1, 1, 1, 1, 1) * triggers[:, None] + (1 - alpha.view(-1, 1, 1, 1, 1)) * deltas).clamp(0, 1)

    def bisect(self, source: ModelAdapter, triggers: torch.Tensor, y: torch.Tensor, deltas: torch.Tensor):
        """(alpha, found) per trigger, by bisection on the source over `bisection_steps` midpoints.
        probe = "gradient" (paper): the largest alpha (closest to the trigger) at which more than half the
        probes cross the boundary (source accuracy < 0.5); found when some midpoint met it.
        probe = "gaussian" (code, alpha_determine): stop at the first midpoint whose source accuracy is
        in [0.4, 0.6] (below 0.4: alpha up; above 0.6: alpha down); found when one did."""
        n = len(triggers)
        lo, hi = torch.zeros(n), torch.ones(n)  # alpha = lo: far; alpha = hi: the trigger
        found, alpha = torch.zeros(n, dtype=torch.bool), torch.zeros(n)
        low, high = CODE_BAND
        for _ in range(int(self.params["bisection_steps"])):
            mid = (lo + hi) / 2
            acc = self._accuracy(source, self._probes(triggers, deltas, mid), y)
            if self.params["probe"] == "gradient":
                crossed = acc < 0.5
                found |= crossed
                lo, hi = torch.where(crossed, mid, lo), torch.where(crossed, hi, mid)
                alpha = lo
            else:
                band = ~found & (acc >= low) & (acc <= high)
                alpha = torch.where(band, mid, alpha)
                found |= band
                lo = torch.where(~found & (acc < low), mid, lo)
                hi = torch.where(~found & (acc > high), mid, hi)
        if self.params["probe"] == "gaussian":
            alpha = torch.where(found, alpha, lo)  # bisection_fail = "keep": the last lower end, as before
        return alpha, found

    def reference(self, source: ModelAdapter, triggers: torch.Tensor, y: torch.Tensor, seed: int) -> dict:
        """alpha per trigger (`bisect`); bisection_fail = "drop" leaves out the triggers it failed on."""
        deltas = self._deltas(source, triggers, y, seed)
        alpha, found = self.bisect(source, triggers, y, deltas)
        kept = found if self.params["bisection_fail"] == "drop" else torch.ones_like(found)
        ref = {"alpha": alpha[kept], "deltas": deltas[kept], "kept": kept}
        ref["loss"] = self.losses(triggers[kept], y[kept], SuspectOracle(source, labels_only=True), ref)
        return ref

    @staticmethod
    def _accuracy(source: ModelAdapter, probes: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        n, m = probes.shape[:2]
        pred = source.predict(probes.flatten(0, 1)).argmax(1).view(n, m)
        return (pred == y[:, None]).float().mean(1)

    def losses(self, triggers, y, oracle, reference=None):
        if len(triggers) == 0:
            return torch.zeros(0, dtype=torch.float64)
        probes = self._probes(triggers, reference["deltas"], reference["alpha"])
        n, m = probes.shape[:2]
        hits = (oracle.labels(probes.flatten(0, 1)).view(n, m) == y[:, None]).double().mean(1)
        return -torch.log(hits.clamp_min(1 / (2 * m)))

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
  probe          "gradient": delta_pb by gradient ascent on the source, bisection until at least half
                 the probes cross the boundary (paper) | "gaussian": Gaussian delta_pb, bisection until
                 the source's accuracy on the probes is in [0.4, 0.6] (code)
"""

from __future__ import annotations

import copy
import time

import torch
import torch.nn.functional as F

from bench.cache import digest
from bench.data.base import Split
from bench.defenses.base import sample_generator
from bench.errors import UserError
from bench.fingerprint import training as T
from bench.fingerprint.base import Fingerprint, FingerprintMethod, SuspectOracle, register_fingerprint, select_samples
from bench.models.adapter import ModelAdapter

PROBES = ("gradient", "gaussian")
SCHEDULES = ("paper", "code")
CODE_DECAY_ROUND, CODE_DECAY = 100, 0.9  # utils/generate.py: step_size *= 0.9 after round 100
TRIGGER_PARAMS = ("n_triggers", "n_mimic", "mimic_eps", "mimic_steps", "mimic_lr", "trigger_eps", "trigger_rounds",
                  "trigger_steps", "trigger_step", "schedule")
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


def _signed_steps(loss_of, adv: torch.Tensor, x: torch.Tensor, eps: float, steps: int, step_size: float):
    """`steps` signed descent steps of loss_of(adv), projected on the eps ball around x and on [0, 1]."""
    for _ in range(steps):
        adv.requires_grad_(True)
        (grad,) = torch.autograd.grad(loss_of(adv), adv)
        adv = (adv.detach() - step_size * grad.sign()).clamp(x - eps, x + eps).clamp(0, 1)
    return adv.detach()


def paper_triggers(mimics: list, preprocess, x: torch.Tensor, y: torch.Tensor, eps: float, rounds: int, steps: int,
                   step_size: float) -> torch.Tensor:
    """Eq. 3-4: from x_0 = x, rounds * steps signed steps on the mean cross-entropy over F^mmc."""
    def loss(adv):
        return sum(F.cross_entropy(m(preprocess(adv)), y) for m in mimics) / len(mimics)

    return _signed_steps(loss, x.clone(), x, eps, rounds * steps, step_size)


def code_draws(n_mimic: int, rounds: int, gen: torch.Generator) -> list[int]:
    """The model of each round in the code's schedule: an index i uniform in 1..n_mimic; i = n_mimic
    is the source (returned as 0), any other i is snapshot i (so snapshot n_mimic is never drawn)."""
    draws = torch.randint(1, n_mimic + 1, (rounds,), generator=gen).tolist()
    return [0 if i == n_mimic else i for i in draws]


def code_triggers(source: torch.nn.Module, mimics: list, preprocess, x: torch.Tensor, y: torch.Tensor, eps: float,
                  rounds: int, steps: int, step_size: float, gen: torch.Generator) -> torch.Tensor:
    """The public code's schedule: a uniform random start in the eps ball, then `rounds` rounds of
    `steps` signed steps, each round on one drawn model (source or a snapshot, `code_draws`)."""
    pool = [source, *mimics]
    adv = (x + (torch.rand(x.shape, generator=gen) * 2 - 1).to(x.device) * eps).clamp(0, 1)
    for r, i in enumerate(code_draws(len(mimics), rounds, gen)):
        model = pool[i]
        adv = _signed_steps(lambda a: F.cross_entropy(model(preprocess(a)), y), adv, x, eps, steps, step_size)
        if r == CODE_DECAY_ROUND:
            step_size *= CODE_DECAY
    return adv


def matching_rate(l_src: torch.Tensor, l_spc: torch.Tensor, tau: float) -> float:
    """Eq. 5-6: share of triggers whose suspect loss is within a factor (1 +- tau) of the source loss."""
    return float(((l_spc > (1 - tau) * l_src) & (l_spc < (1 + tau) * l_src)).float().mean())


@register_fingerprint
class MFUE(FingerprintMethod):
    name = "mfue-w"
    description = "MFUE-w: unlearnable-example fingerprints, loss interval match on the suspect's probabilities"
    labels_only = False
    defaults = {"n_triggers": 100, "n_mimic": 10, "mimic_eps": 4 / 255, "mimic_steps": 10, "mimic_lr": 1e-3,
                "trigger_eps": 8 / 255, "schedule": "paper", "trigger_rounds": 2000, "trigger_steps": 10,
                "trigger_step": 1.6 / 255, "tau": 0.5}

    def __init__(self, **params):
        super().__init__(**params)
        p = self.params
        if not 0 < float(p["tau"]) < 1:
            raise UserError(f"{self.name}: tau must be in (0, 1), got {p['tau']!r}")
        if p["schedule"] not in SCHEDULES:
            raise UserError(f"{self.name}: unknown schedule {p['schedule']!r}; valid choices: {', '.join(SCHEDULES)}")
        for k in ("n_mimic", "trigger_rounds", "trigger_steps"):
            if not isinstance(p[k], int) or isinstance(p[k], bool) or p[k] < (1 if k == "n_mimic" else 0):
                raise UserError(f"{self.name}: {k} must be a whole number >= {1 if k == 'n_mimic' else 0}, "
                                f"got {p[k]!r}")

    def fingerprint(self, source: ModelAdapter, data: Split, seed: int) -> Fingerprint:
        start = time.perf_counter()
        triggers, y = self.triggers(source, data, seed)
        reference = {"labels": y, **self.reference(source, triggers, y, seed)}
        p = self.params
        summary = {"fit_ms": (time.perf_counter() - start) * 1e3, "mimic_models": int(p["n_mimic"]),
                   "schedule": p["schedule"], "trigger_updates": int(p["trigger_rounds"]) * int(p["trigger_steps"])}
        return Fingerprint(triggers, reference, summary)

    def triggers(self, source: ModelAdapter, data: Split, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(unlearnable triggers, labels), memoized per process: MFUE-w, MFUE-b and every tau share them
        (and every trigger budget shares the mimic models)."""
        p = self.params
        key = digest([source.digest, data.identity, seed, {k: p[k] for k in TRIGGER_PARAMS}])
        if key not in _TRIGGERS:
            x, y = select_samples(source, data, int(p["n_triggers"]), seed)
            mkey = digest([source.digest, data.identity, seed, {k: p[k] for k in MIMIC_PARAMS}])
            if mkey not in _MIMICS:
                _MIMICS[mkey] = mimic_models(source, data, int(p["n_mimic"]), float(p["mimic_eps"]),
                                             int(p["mimic_steps"]), float(p["mimic_lr"]), seed)
            mimics = _MIMICS[mkey]
            budget = (float(p["trigger_eps"]), int(p["trigger_rounds"]), int(p["trigger_steps"]), float(p["trigger_step"]))
            dev = T.device()  # the trigger budget runs on the run's device (--device)
            on_dev = [copy.deepcopy(m).to(dev).eval() for m in (source.module, *mimics)]
            xd, yd = x.to(dev), y.to(dev)
            if p["schedule"] == "paper":
                adv = paper_triggers(on_dev[1:], source.preprocess, xd, yd, *budget)
            else:
                gen = sample_generator(seed, 0, "mfue-code-schedule")
                adv = code_triggers(on_dev[0], on_dev[1:], source.preprocess, xd, yd, *budget, gen)
            _TRIGGERS[key] = (adv.cpu(), y)
        return _TRIGGERS[key]

    def reference(self, source: ModelAdapter, triggers: torch.Tensor, y: torch.Tensor, seed: int) -> dict:
        oracle = SuspectOracle(source)
        return {"loss": self.losses(triggers, y, oracle)}

    def losses(self, triggers: torch.Tensor, y: torch.Tensor, oracle: SuspectOracle, reference: dict | None = None):
        return -oracle.log_probs(triggers).gather(1, y[:, None])[:, 0]

    def verify(self, fingerprint: Fingerprint, suspect: SuspectOracle) -> float:
        ref = fingerprint.reference
        l_spc = self.losses(fingerprint.queries, ref["labels"], suspect, ref)
        return matching_rate(ref["loss"], l_spc, float(self.params["tau"]))


@register_fingerprint
class MFUEBlack(MFUE):
    name = "mfue-b"
    description = "MFUE-b: unlearnable-example fingerprints, labels only, Monte Carlo loss estimate (Eq. 7-9)"
    labels_only = True
    defaults = {**MFUE.defaults, "n_probes": 100, "probe": "gradient", "bisection_steps": 8}

    def __init__(self, **params):
        super().__init__(**params)
        if self.params["probe"] not in PROBES:
            raise UserError(f"{self.name}: unknown probe {self.params['probe']!r}; valid choices: {', '.join(PROBES)}")

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

    def reference(self, source: ModelAdapter, triggers: torch.Tensor, y: torch.Tensor, seed: int) -> dict:
        """Bisection on alpha per trigger, on the source: the largest alpha (closest to the trigger)
        at which the source's accuracy on the probes falls to the target band."""
        deltas = self._deltas(source, triggers, y, seed)
        lo, hi = torch.zeros(len(triggers)), torch.ones(len(triggers))  # alpha = lo: far; alpha = hi: the trigger
        top = 0.5 if self.params["probe"] == "gradient" else 0.6  # paper: >= half cross; code: acc in [0.4, 0.6]
        for _ in range(int(self.params["bisection_steps"])):
            mid = (lo + hi) / 2
            crossed = self._accuracy(source, self._probes(triggers, deltas, mid), y) <= top
            lo, hi = torch.where(crossed, mid, lo), torch.where(crossed, hi, mid)
        alpha = lo
        ref = {"alpha": alpha, "deltas": deltas}
        ref["loss"] = self.losses(triggers, y, SuspectOracle(source, labels_only=True), ref)
        return ref

    @staticmethod
    def _accuracy(source: ModelAdapter, probes: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        n, m = probes.shape[:2]
        pred = source.predict(probes.flatten(0, 1)).argmax(1).view(n, m)
        return (pred == y[:, None]).float().mean(1)

    def losses(self, triggers, y, oracle, reference=None):
        probes = self._probes(triggers, reference["deltas"], reference["alpha"])
        n, m = probes.shape[:2]
        hits = (oracle.labels(probes.flatten(0, 1)).view(n, m) == y[:, None]).double().mean(1)
        return -torch.log(hits.clamp_min(1 / (2 * m)))

"""Non-transferable learning: the `domain` protocol (issue 23, family 1).

One job = (defense, parameter point, architecture, attack). The defense (bench.ntl.defenses.DomainDefense)
trains a fresh network of the architecture on the suite's training split in the entry's `source` domain,
seeing the `targets` domains' training images as its method requires (bench.ntl.domains: fixed transforms
of the same images); the trained model is kept for the jobs that differ only in the attack. The attack
(bench.ntl.attacks: target-domain fine-tuning, source-domain fine-tuning, SHOT-IM) adapts a copy with the
attacker's data (the same training split). Each cell is one domain: the attacked model's top-1 on the
evaluated split in that domain (role "authorized" for the source, "unauthorized" for each target).

Board "domain": the gap board (bench.reports.boards), architectures in the place of authorized models and
domains in the place of evaluated ones: per architecture, auth_gap[A] = the released model's source top-1
minus the best target top-1 after attack A; headline worst_auth_gap = the mean over architectures of the
minimum over A in {none} + the standard attacks (higher is better: the owner keeps the source while no
attack reads a target).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch

from bench.attacks import attack_label
from bench.core.entry import Entry, attacks_key, key, list_of, string, trials_key
from bench.core.metrics import DOMAIN_METRICS
from bench.core.types import Job, Measurement, Role
from bench.defenses import get_defense
from bench.core.errors import UserError
from bench.fingerprint.training import build_arch
from bench.models.sources import model_label
from bench.models.zoo import FAMILIES, digits_preprocess
from bench.ntl import attacks as domain_attacks
from bench.ntl.defenses import DomainData, DomainDefense
from bench.ntl.domains import DOMAINS, to_domain
from bench.protocols.base import PROTOCOLS, Protocol, grid, with_cells
from bench.reports.boards import gap_board

NAME = "domain"
DOMAIN = string(*DOMAINS)


BOARD = replace(gap_board("Non-transferable learning (authorized vs unauthorized domains)", order=5),
               definition="Non-transferable learning: the gap board's columns with architectures as the authorized "
                          "models and domains as the evaluated ones: authorized_top1 = top-1 (%) of the released model "
                          "on the authorized (source) domain; unauthorized_worst[A] = the highest top-1 on an "
                          "unauthorized (target) domain after attack A; auth_gap[A] = their difference; worst_auth_gap = "
                          "mean over the architectures of min over A in {none} + the standard attacks (higher is better).")


def _domains(value) -> list:
    return [str(v) for v in (value if isinstance(value, list) else [value])]


@dataclass(frozen=True, kw_only=True)
class DomainEntry(Entry):
    """A [[defenses]] entry of the domain protocol: its domains, architectures and attacks."""

    source: str = key(DOMAIN, "source")
    targets: list = key(list_of(DOMAIN, "domain names", min_items=1), factory=lambda: ["contrast"], parse=_domains)
    archs: list = key(list_of(string(), "architectures (digits zoo families, timm:<name>, torch:<pkg.mod:fn>)",
                              min_items=1), factory=list, parse=lambda v: [str(a) for a in v])
    attacks: list = attacks_key()
    trials: int = trials_key()


def suite_archs(ctx) -> list[str]:
    """The zoo families of the suite's authorized models ('zoo:cnn-s0' -> 'cnn'), in order."""
    out = []
    for spec in ctx.suite.authorized:
        family = model_label(spec).rpartition("-s")[0] if isinstance(spec, str) and spec.startswith("zoo:") else ""
        if family in FAMILIES and family not in out:
            out.append(family)
    return out


@PROTOCOLS.register
class DomainProtocol(Protocol):
    name = NAME
    description = ("non-transferable learning: top-1 on the authorized (source) and unauthorized (target) domains of a "
                   "model trained by the defense, worst case over target/source fine-tuning and source-free adaptation")
    entry = DomainEntry
    boards = {NAME: BOARD}
    check_board = NAME
    # a cell's top-1 is compared as source_top1 on the source (higher is better) and as target_top1 on a target
    # (lower is better: a target the model reads better is a regression of the defense)
    check_metrics = DOMAIN_METRICS

    def plan(self, ctx, entry):
        cls = get_defense(entry.name)
        if not issubclass(cls, DomainDefense):
            raise UserError(f"defense {entry.name!r} is not a domain defense (bench.ntl.defenses.DomainDefense); it "
                            f"cannot run in the {NAME} protocol")
        if entry.source in entry.targets:
            raise UserError(f"defense {entry.name!r}: source domain {entry.source!r} is also in targets; the targets must "
                            "be other domains")
        archs = entry.archs or suite_archs(ctx)
        if not archs:
            raise UserError(f"defense {entry.name!r}: no architecture; set archs = [\"cnn\", ...] (valid: "
                            f"{', '.join(FAMILIES)}) or list zoo models in [models] authorized")
        for a in archs:
            if ":" not in a and a not in FAMILIES:
                raise UserError(f"defense {entry.name!r}: unknown architecture {a!r}; valid: {', '.join(FAMILIES)}, "
                                "timm:<name> or torch:<pkg.mod:fn>")
        for attack in entry.attacks:
            domain_attacks.parse(attack)  # validates
        domains = (entry.source, *entry.targets)
        # every domain defense trains at run time: the entry's trials are raised to the suite's [check] trials (the
        # reference records the spread over trials, bench.reports.reference); --trials N caps them
        trials = max(entry.trials, int(ctx.suite.check.get("trials", 1)))
        cap = getattr(ctx.options, "trials", None)
        trials = min(trials, int(cap)) if cap is not None else trials
        return [with_cells(ctx, Job(protocol=self.name, defense=entry.name, params=cls(**{**entry.params, **p}).params,
                                    point={"source": entry.source, "targets": list(entry.targets), **p},
                                    release="model", attack=attack, authorized=arch, evaluated=domains, trial=trial,
                                    group=f"{entry.name}|{arch}"))
                for p in grid(entry.sweep) for arch in archs for trial in range(trials) for attack in entry.attacks]

    def trained(self, ctx, job: Job, train, pre):
        """The defense's model of (defense, params, domains, architecture, trial): trained once per run."""
        memo = ctx.memo("domain.trained")
        k = repr((job.defense, sorted(job.params.items()), sorted(job.point.items()), job.authorized, job.trial))
        if k not in memo:
            defense = get_defense(job.defense)(**job.params)
            seed = ctx.seed(job.trial)
            targets = job.point["targets"]
            idx = torch.as_tensor(train.indices)
            mixed = torch.cat([to_domain(targets[i % len(targets)], train.images[i : i + 1], idx[i : i + 1])
                               for i in range(len(idx))])  # each image's target copy: the targets in turn
            torch.manual_seed(seed)
            module = build_arch(job.authorized, num_classes=train.num_classes, in_chans=train.images.shape[1])
            labels = ctx.to_device(train.labels)  # trained on the run's device (--device, [run] device)
            module = defense.train(module.to(ctx.device), pre,
                                   DomainData(images=ctx.to_device(to_domain(job.point["source"], train.images, idx)),
                                              labels=labels),
                                   DomainData(images=ctx.to_device(mixed), labels=labels), train.num_classes, seed)
            memo.clear()  # one trained model at a time (jobs of one group run in turn)
            memo[k] = module
        return memo[k]

    def run(self, ctx, job):
        train, test = ctx.train_data, ctx.data
        pre = digits_preprocess() if ctx.suite.data.get("dataset") == "digits" else None
        if pre is None:
            raise UserError(f"the {NAME} protocol runs on the digits dataset (its domains are digits transforms); "
                            f"got [data] dataset = {ctx.suite.data.get('dataset')!r}")
        module = self.trained(ctx, job, train, pre)
        seed = ctx.seed(job.trial)
        tidx = torch.as_tensor(train.indices)
        labels = ctx.to_device(train.labels)
        src = (ctx.to_device(to_domain(job.point["source"], train.images, tidx)), labels)
        tgts = [(ctx.to_device(to_domain(t, train.images, tidx)), labels) for t in job.point["targets"]]
        attacked = domain_attacks.attack(job.attack, module, pre, source=src, targets=tgts, seed=seed)
        eidx = torch.as_tensor(test.indices)
        out = []
        for domain, cell in zip(job.evaluated, job.cells):
            with torch.no_grad():
                logits = attacked(pre(ctx.to_device(to_domain(domain, test.images, eidx)))).cpu()
            top1 = 100 * float((logits.argmax(1) == test.labels).float().mean())
            role = Role.AUTHORIZED if domain == job.point["source"] else Role.UNAUTHORIZED
            out.append(Measurement(evaluated=domain, role=role, arch={"authorized": job.authorized,
                                                                      "evaluated": job.authorized},
                                   metrics={"top1": top1}, n=len(test.labels),
                                   defense_summary={"attack": attack_label(job.attack)}))
        return out

    @classmethod
    def check_cells(cls, rows):
        """One cell per (defense, point, architecture, attack, domain): its top-1, averaged over the trials."""
        cells: dict[tuple, list[float]] = {}
        for r in rows:
            if r.get("protocol") == NAME:
                k = (f"{r['defense']}|{sorted(r['point'].items())}|{r['authorized']}|{r['attack']}|{r['evaluated']}",
                     "source_top1" if r["role"] == Role.AUTHORIZED.value else "target_top1")
                cells.setdefault(k, []).append(float(r["metrics"]["top1"]))
        return [(k, metric, sum(v) / len(v), True) for (k, metric), v in cells.items()]

    def reports(self, rows, out, cfg):
        mine = [r for r in rows if r.get("protocol") == NAME]
        if not mine:
            return []
        seen: dict[tuple, list[float]] = {}  # (defense, arch, attack, domain, is source) -> top-1 per trial
        for r in mine:
            seen.setdefault((r["defense"], r["authorized"], r["attack"], r["evaluated"],
                             r["role"] == Role.AUTHORIZED.value), []).append(float(r["metrics"]["top1"]))
        groups: dict[tuple, dict] = {}
        for (defense, arch, attack, domain, is_source), values in seen.items():
            g = groups.setdefault((defense, arch, attack), {"source": None, "targets": {}})
            mean = sum(values) / len(values)  # the trials' mean
            if is_source:
                g["source"] = mean
            else:
                g["targets"][domain] = mean
        targets = list(dict.fromkeys(t for g in groups.values() for t in g["targets"]))
        lines = ["# Non-transferable learning (measured by authbench)", "",
                 "Top-1 (%) on the evaluated split in each domain, after each attack (mean over trials); gap = source - "
                 "best target.", "",
                 "| defense | arch | attack | source | " + " | ".join(targets) + " | gap |",
                 "|---|---|---|---|" + "---|" * len(targets) + "---|"]
        for (defense, arch, attack), g in groups.items():
            t = [g["targets"].get(x) for x in targets]
            measured = [v for v in t if v is not None]
            gap = g["source"] - max(measured) if g["source"] is not None and measured else None
            fmt = lambda v: "" if v is None else f"{v:.1f}"
            lines.append(f"| {defense} | {arch} | {attack} | {fmt(g['source'])} | " + " | ".join(map(fmt, t))
                         + f" | {fmt(gap)} |")
        path = Path(out) / "domain.md"
        path.write_text("\n".join(lines) + "\n")
        return [path]

    def summary(self, rows, reports):
        mine = [r for r in rows if r.get("protocol") == NAME]
        out = []
        for defense in dict.fromkeys(r["defense"] for r in mine):
            cells = [r for r in mine if r["defense"] == defense]
            values, _, worst, missing = BOARD.score(cells, tuple(dict.fromkeys(r["attack"] for r in cells if r["attack"] != "none")))
            if values.get("worst_auth_gap") is not None:
                out.append(f"domain: {defense}: source {values['authorized_top1']:.1f}%, best target "
                           f"{values['unauthorized_worst']:.1f}% unattacked, worst gap {values['worst_auth_gap']:.1f} "
                           f"points (attack {worst})")
        return out

"""Non-transferable learning: the `domain` protocol (issue 23, family 1).

One job = (defense, parameter point, architecture, attack). The defense (bench.ntl.defenses.DomainDefense)
trains a fresh network of the architecture on the suite's training split in the entry's `source` domain,
seeing the `targets` domains' training images as its method requires; the trained model is kept for the jobs
that differ only in the attack. The attack (bench.ntl.attacks: target-domain fine-tuning, source-domain
fine-tuning, SHOT-IM, TransNTL) adapts a copy with the attacker's data (the training splits). Each cell is one
domain: the attacked model's top-1 on the evaluated split in that domain (role "authorized" for the source,
"unauthorized" for each target).

A domain is either a fixed transform of the suite's own images (bench.ntl.domains: "source", "contrast", ...)
or another dataset, "dataset:<name>" (e.g. "dataset:stl10" beside a CIFAR-10 suite): that dataset's train
split is its training data (the defense's target data and the attacks'), its test split is scored, its images
are resized to the suite's resolution, and its classes are mapped by name onto the suite's (DOMAIN_ALIASES:
CIFAR-10's 'automobile' is STL-10's 'car'); a class that is not in every domain of the entry is dropped from
all of them (CIFAR-10 / STL-10: frog and monkey), and the labels are renumbered in the suite's class order.

Board "domain": the gap board (bench.reports.boards), architectures in the place of authorized models and
domains in the place of evaluated ones: per architecture, auth_gap[A] = the released model's source top-1
minus the best target top-1 after attack A; headline worst_auth_gap = the mean over architectures of the
minimum over A in {none} + the standard attacks (higher is better: the owner keeps the source while no
attack reads a target).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

import numpy as np
import torch

from bench.attacks import attack_label
from bench.core.entry import Entry, Key, attacks_key, key, list_of, string, table, trials_key
from bench.core.metrics import DOMAIN_METRICS
from bench.core.types import Job, Measurement, Role
from bench.defenses import get_defense
from bench.core.errors import UserError
from bench.fingerprint.training import build_arch
from bench.models.sources import model_label
from bench.models.adapter import Preprocess
from bench.models.zoo import FAMILIES, digits_preprocess
from bench.ntl import attacks as domain_attacks
from bench.ntl.defenses import DomainData, DomainDefense
from bench.ntl.domains import DOMAINS, to_domain
from bench.protocols.base import PROTOCOLS, Protocol, grid, with_cells
from bench.reports.boards import gap_board

NAME = "domain"
DATASET = "dataset:"  # a domain naming another registered dataset: "dataset:stl10"
DOMAIN = Key({"anyOf": [string(*DOMAINS).schema, {"type": "string", "pattern": "^dataset:.+"}]},
             string(*DOMAINS).meaning + " or 'dataset:<name>' (another dataset)")
# class names that differ between datasets for one class: name -> the name it is matched as
DOMAIN_ALIASES = {"automobile": "car"}
EVAL_BATCH = 2048  # test images scored per forward pass
# conventional per-channel mean / std of a training split (bench.recipes.train_classifier.STATS), the inputs'
# normalisation of a non-digits suite; any other dataset: the statistics of the suite's training images
DEFAULT_STATS = {"cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
                 "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))}


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
    datasets: dict = key(table(table(what="a table"), "a table of dataset name -> its [data] options"), factory=dict,
                         parse=lambda v: {str(k): dict(o) for k, o in v.items()})


def dataset_name(domain: str) -> str | None:
    """'stl10' for the domain 'dataset:stl10'; None for a transform domain."""
    return domain[len(DATASET):] if domain.startswith(DATASET) else None


def _canonical(name: str) -> str:
    n = str(name).strip().lower()
    return DOMAIN_ALIASES.get(n, n)


def shared_classes(base: tuple, others: Mapping) -> list[int]:
    """The suite's class ids (in its order) whose name every other dataset has (DOMAIN_ALIASES applied)."""
    names = [{_canonical(n) for n in other} for other in others.values()]
    return [i for i, n in enumerate(base) if all(_canonical(n) in s for s in names)]


@dataclass(frozen=True, kw_only=True)
class DomainSplit:
    """One split (train or test) of an entry's domains: the suite's images the transform domains act on (with
    their dataset indices) and each dataset domain's own (images, labels), all in one label space."""

    images: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor
    datasets: Mapping = field(default_factory=lambda: MappingProxyType({}))

    def domain(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(images, labels) of this split in domain `name`."""
        if name in self.datasets:
            return self.datasets[name]
        return to_domain(name, self.images, self.indices), self.labels


@dataclass(frozen=True, kw_only=True)
class DomainSets:
    train: DomainSplit
    test: DomainSplit
    num_classes: int
    classes: tuple | None  # the kept class names (dataset domains), else None


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
        self.check_datasets(entry, domains)
        # every domain defense trains at run time: the entry's trials are raised to the suite's [check] trials (the
        # reference records the spread over trials, bench.reports.reference); --trials N caps them
        trials = max(entry.trials, int(ctx.suite.check.get("trials", 1)))
        cap = getattr(ctx.options, "trials", None)
        trials = min(trials, int(cap)) if cap is not None else trials
        return [with_cells(ctx, Job(protocol=self.name, defense=entry.name, params=cls(**{**entry.params, **p}).params,
                                    point={"source": entry.source, "targets": list(entry.targets),
                                           **({"datasets": entry.datasets} if entry.datasets else {}), **p},
                                    release="model", attack=attack, authorized=arch, evaluated=domains, trial=trial,
                                    group=f"{entry.name}|{arch}"))
                for p in grid(entry.sweep) for arch in archs for trial in range(trials) for attack in entry.attacks]

    @staticmethod
    def check_datasets(entry, domains) -> None:
        """A dataset domain names a registered dataset; `datasets` options only for the entry's dataset domains."""
        from bench.data.base import DATASETS

        named = [dataset_name(d) for d in domains if dataset_name(d) is not None]
        for name in named:
            try:
                DATASETS.get(name).check_options(entry.datasets.get(name, {}))
            except UserError as e:
                raise UserError(f"defense {entry.name!r}: domain 'dataset:{name}': {e}") from None
        extra = sorted(set(entry.datasets) - set(named))
        if extra:
            raise UserError(f"defense {entry.name!r}: datasets has options for {extra[0]!r}, which is no domain of the "
                            f"entry; its dataset domains: {', '.join(named) or '(none)'}")

    def domain_sets(self, ctx, job: Job) -> DomainSets:
        """The entry's domains' train and test data (memoised per run): the suite's splits as they are when every
        domain is a transform; with dataset domains, every side restricted to the shared classes."""
        train, test = ctx.train_data, ctx.data
        datasets = job.point.get("datasets") or {}
        domains = (job.point["source"], *job.point["targets"])
        named = [d for d in domains if dataset_name(d) is not None]
        base = lambda split: DomainSplit(images=split.images, labels=split.labels,  # noqa: E731
                                         indices=torch.as_tensor(split.indices))
        if not named:
            return DomainSets(train=base(train), test=base(test), num_classes=train.num_classes, classes=None)
        memo = ctx.memo("domain.sets")
        k = repr((tuple(named), sorted((n, sorted(o.items())) for n, o in datasets.items())))
        if k not in memo:
            memo[k] = self._load_sets(ctx, train, test, named, datasets)
        return memo[k]

    def _load_sets(self, ctx, train, test, named, options) -> DomainSets:
        from bench.data.base import DATASETS, load_dataset
        from bench.data.vision import resize_images

        suite_name = ctx.suite.data.get("dataset")
        if not train.class_names:
            raise UserError(f"the {NAME} protocol maps a dataset domain's classes by name, and the suite's dataset "
                            f"{suite_name!r} declares no class names (cifar10, stl10 and image-list with class_names "
                            "do)")
        shape = tuple(train.images.shape[1:])
        loaded: dict = {}
        for domain in named:
            name = dataset_name(domain)
            opts = dict(options.get(name, {}))
            if "root" in DATASETS.get(name).options and "root" not in opts and ctx.suite.data.get("root"):
                opts["root"] = ctx.suite.data["root"]  # --data-root reaches the dataset domains too
            splits = [load_dataset(name, s, **opts) for s in ("train", "test")]
            if not splits[0].class_names:
                raise UserError(f"dataset domain {domain!r}: dataset {name!r} declares no class names; a dataset domain "
                                "maps its classes onto the suite's by name")
            loaded[domain] = splits
        keep = shared_classes(tuple(train.class_names), {d: s[0].class_names for d, s in loaded.items()})
        if not keep:
            raise UserError(f"dataset domains {', '.join(named)} share no class name with the suite's dataset "
                            f"{suite_name!r} ({', '.join(train.class_names)})")
        kept_names = tuple(train.class_names[i] for i in keep)
        index = {_canonical(train.class_names[i]): j for j, i in enumerate(keep)}

        def suite_split(split):
            old_to_new = torch.full((split.num_classes,), -1, dtype=torch.long)
            old_to_new[torch.as_tensor(keep)] = torch.arange(len(keep))
            new = old_to_new[split.labels]
            rows = torch.nonzero(new >= 0).flatten()
            return DomainSplit(images=split.images[rows], labels=new[rows],
                               indices=torch.as_tensor(split.indices)[rows])

        def dataset_split(split, what):
            ids = torch.tensor([index.get(_canonical(n), -1) for n in split.class_names], dtype=torch.long)
            new = ids[split.labels]
            rows = np.flatnonzero((new >= 0).numpy())
            part = split.take(rows)
            images = []
            for batch in part.batches(256):
                x = batch.images
                if x.shape[1] != shape[0]:
                    raise UserError(f"dataset domain {what!r} has {x.shape[1]}-channel images, the suite's dataset "
                                    f"{shape[0]}-channel ones; a domain pair needs one channel count")
                images.append(resize_images(x, list(shape[1:]), None) if tuple(x.shape[2:]) != shape[1:] else x)
            x = torch.cat(images) if images else torch.zeros((0, *shape))
            return x, new[torch.as_tensor(rows, dtype=torch.long)]

        tr, te = suite_split(train), suite_split(test)
        tr_sets = {d: dataset_split(s[0], d) for d, s in loaded.items()}
        te_sets = {d: dataset_split(s[1], d) for d, s in loaded.items()}
        return DomainSets(train=replace(tr, datasets=MappingProxyType(tr_sets)),
                          test=replace(te, datasets=MappingProxyType(te_sets)), num_classes=len(keep),
                          classes=kept_names)

    def preprocess(self, ctx, sets: DomainSets) -> Preprocess:
        """The inputs' normalisation: the digits zoo's for digits, the conventional CIFAR statistics for CIFAR
        (DEFAULT_STATS), else the per-channel mean / std of the suite's training images in the entry's classes."""
        dataset = ctx.suite.data.get("dataset")
        if dataset == "digits":
            return digits_preprocess()
        x = sets.train.images
        if dataset in DEFAULT_STATS and x.shape[1] == 3:
            mean, std = DEFAULT_STATS[dataset]
        else:
            flat = x.transpose(0, 1).flatten(1)
            mean = tuple(round(float(v), 6) for v in flat.mean(1))
            std = tuple(round(float(v), 6) for v in flat.std(1).clamp_min(1e-6))
        return Preprocess(tuple(mean), tuple(std), tuple(x.shape[1:]))

    def trained(self, ctx, job: Job, sets: DomainSets, pre):
        """The defense's model of (defense, params, domains, architecture, trial): trained once per run."""
        memo = ctx.memo("domain.trained")
        k = repr((job.defense, sorted(job.params.items()), sorted(job.point.items()), job.authorized, job.trial))
        if k not in memo:
            defense = get_defense(job.defense)(**job.params)
            seed = ctx.seed(job.trial)
            train = sets.train
            source_x, source_y = train.domain(job.point["source"])
            mixed_x, mixed_y = self.target_mix(train, job.point["targets"], len(source_y))
            torch.manual_seed(seed)
            module = build_arch(job.authorized, num_classes=sets.num_classes, in_chans=train.images.shape[1])
            # trained on the run's device (--device, [run] device)
            module = defense.train(module.to(ctx.device), pre,
                                   DomainData(images=ctx.to_device(source_x), labels=ctx.to_device(source_y)),
                                   DomainData(images=ctx.to_device(mixed_x), labels=ctx.to_device(mixed_y)),
                                   sets.num_classes, seed)
            memo.clear()  # one trained model at a time (jobs of one group run in turn)
            memo[k] = module
        return memo[k]

    @staticmethod
    def target_mix(train: DomainSplit, targets: list, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The defense's target data, one row per source row i: from target targets[i mod k]; a transform domain
        gives source image i's copy (the pairs by index the NTL codes train on), a dataset domain its image
        i mod (its size) (the smaller dataset cycled to the source's length)."""
        if not any(dataset_name(t) for t in targets):  # transform domains only: each image's copy, as before
            idx = train.indices
            mixed = torch.cat([to_domain(targets[i % len(targets)], train.images[i : i + 1], idx[i : i + 1])
                               for i in range(n)])
            return mixed, train.labels
        whole = {t: train.domain(t) for t in targets}
        for t, (_, y) in whole.items():
            if len(y) == 0:
                raise UserError(f"domain {t!r} has no training image in the shared classes")
        rows = [(targets[i % len(targets)], i % len(whole[targets[i % len(targets)]][1])) for i in range(n)]
        x = torch.stack([whole[t][0][j] for t, j in rows]) if rows else train.images[:0]
        y = torch.stack([whole[t][1][j] for t, j in rows]) if rows else train.labels[:0]
        return x, y

    def run(self, ctx, job):
        sets = self.domain_sets(ctx, job)
        pre = self.preprocess(ctx, sets)
        module = self.trained(ctx, job, sets, pre)
        seed = ctx.seed(job.trial)
        dev = lambda xy: (ctx.to_device(xy[0]), ctx.to_device(xy[1]))  # noqa: E731
        src = dev(sets.train.domain(job.point["source"]))
        tgts = [dev(sets.train.domain(t)) for t in job.point["targets"]]
        attacked = domain_attacks.attack(job.attack, module, pre, source=src, targets=tgts, seed=seed)
        out = []
        for domain, cell in zip(job.evaluated, job.cells):
            x, y = sets.test.domain(domain)
            if not len(y):
                raise UserError(f"domain {domain!r} has no test image in the entry's classes; nothing to score")
            with torch.no_grad():
                logits = torch.cat([attacked(pre(ctx.to_device(x[i : i + EVAL_BATCH]))).cpu()
                                    for i in range(0, len(y), EVAL_BATCH)])
            top1 = 100 * float((logits.argmax(1) == y).float().mean())
            role = Role.AUTHORIZED if domain == job.point["source"] else Role.UNAUTHORIZED
            out.append(Measurement(evaluated=domain, role=role, arch={"authorized": job.authorized,
                                                                      "evaluated": job.authorized},
                                   metrics={"top1": top1}, n=len(y),
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

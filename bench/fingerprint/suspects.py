"""The suspect zoo: positives derived from the source model, negatives trained independently.

A positive is named by its provenance chain, e.g. `source(cnn,digits)->prune(0.3)->finetune(FTAL,0.5)`:
each step is applied, with the attacker's data (disjoint from the source's training data), to
the result of the previous one. Steps:

    finetune(MODE[,fraction[,epochs]])  MODE in FTLL | RTLL | FTAL | RTAL, on `fraction` of the attacker
                               data, for `epochs` (default: the section's finetune_epochs)
    prune(rate)                global magnitude pruning of Conv2d/Linear weights
    advtrain(eps[,epochs])     PGD adversarial fine-tuning, eps like 2/255 (epochs: default advtrain_epochs)
    distill(family)            Knockoff-style extraction into a fresh `family` network (soft labels only)
    hardlabel(family)          data-free, hard-label extraction (MFUE's "HL", Sanyal et al., CVPR 2022):
                               a generator and a fresh `family` student, the teacher's top-1 labels only

A negative is `independent(family,sSEED,<data>)`: a fresh network trained on the attacker's data,
or a loaded model spec (`negative_models`, e.g. timm pretrained networks for the GPU suites).
Every trained module is cached as safetensors under <cache>/suspects/, keyed by a digest of its
recipe (parent, step, data identity, seed, training settings), so a rerun trains nothing.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import asdict, dataclass, fields
from fractions import Fraction
from typing import Callable

import torch
import torch.nn as nn
from safetensors.torch import load_file, save as save_bytes
from tqdm.auto import tqdm

from bench.attacks.model_attacks import magnitude_prune
from bench.cache import atomic_write_bytes, cache_root, digest
from bench.data import load_dataset
from bench.data.base import Split
from bench.data.digits import load_digits_split
from bench.errors import UserError
from bench.fingerprint import training as T
from bench.models.adapter import ModelAdapter, Preprocess
from bench.models.sources import load_model
from bench.models.zoo import FAMILIES, digits_preprocess

STEP = re.compile(r"^\s*(finetune|prune|advtrain|distill|hardlabel)\(([^()]*)\)\s*$")
STEPS = ("finetune(MODE[,fraction[,epochs]]) | prune(rate) | advtrain(eps[,epochs]) | distill(family) | "
         "hardlabel(family)")


@dataclass(frozen=True)
class ZooConfig:
    """The [suspects] section of a fingerprint suite (training settings are part of every recipe digest)."""

    positives: tuple = ()
    negatives: tuple = ()  # architecture families trained on the attacker's data
    negative_seeds: tuple = (0, 1, 2, 3)
    negative_models: tuple = ()  # model specs loaded as negatives (pretrained networks)
    negative_epochs: int = 30
    negative_lr: float = 2e-3
    finetune_epochs: int = 10
    finetune_lr: float = 1e-3
    advtrain_epochs: int = 5
    advtrain_steps: int = 5
    advtrain_lr: float = 1e-3
    distill_epochs: int = 30
    distill_lr: float = 2e-3
    hardlabel_steps: int = 1500  # generator / student alternations (batches of 64 generated images)
    hardlabel_lr: float = 2e-3
    seed: int = 0

    @classmethod
    def from_section(cls, section: dict, seed: int) -> "ZooConfig":
        names = {f.name for f in fields(cls)}
        bad = sorted(set(section) - names)
        if bad:
            raise UserError(f"[suspects] has no key {bad[0]!r}; valid keys: {', '.join(sorted(names - {'seed'}))}")
        if not section.get("positives") or not (section.get("negatives") or section.get("negative_models")):
            raise UserError("[suspects] needs positives = [chains...] and negatives = [families...] "
                            "(or negative_models = [specs...])")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in section.items()}
        config = cls(**{**values, "seed": seed})
        for chain in config.positives:
            parse_chain(chain)
        return config

    def settings(self, op: str) -> dict:
        return {k: v for k, v in asdict(self).items() if k.startswith(op)}


@dataclass
class Suspect:
    name: str
    kind: str  # finetune | prune | advtrain | distill | hardlabel | chain kinds joined by '+' | independent | pretrained
    role: str  # "positive" | "negative"
    adapter: ModelAdapter
    top1: float | None = None


def parse_number(text: str) -> float:
    try:
        return float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError):
        raise UserError(f"expected a number like 0.3 or 2/255 in a suspect step, got {text!r}") from None


def parse_chain(chain: str) -> list[tuple[str, list[str]]]:
    """'prune(0.3)->finetune(FTAL,0.5)' -> [('prune', ['0.3']), ('finetune', ['FTAL', '0.5'])]."""
    steps = []
    for part in chain.split("->"):
        m = STEP.match(part)
        if not m:
            raise UserError(f"bad suspect step {part.strip()!r} in {chain!r}; valid steps: {STEPS}")
        op, args = m.group(1), [a.strip() for a in m.group(2).split(",") if a.strip()]
        if op == "finetune" and (not args or args[0] not in T.FINETUNE_MODES or len(args) > 3):
            raise UserError(f"finetune needs a mode in {', '.join(T.FINETUNE_MODES)}, an optional fraction and "
                            f"optional epochs, got {part!r}")
        if op == "prune" and len(args) != 1:
            raise UserError(f"{op} takes one number, got {part.strip()!r}")
        if op == "advtrain" and len(args) not in (1, 2):
            raise UserError(f"advtrain takes eps and optional epochs, got {part.strip()!r}")
        epochs = args[2] if op == "finetune" and len(args) == 3 else args[1] if op == "advtrain" and len(args) == 2 \
            else None
        if epochs is not None and not (epochs.isdigit() and int(epochs) >= 1):
            raise UserError(f"{op} epochs must be a whole number >= 1, got {epochs!r} in {part.strip()!r}")
        if op in ("distill", "hardlabel") and len(args) != 1:
            raise UserError(f"{op} takes one architecture family, got {part.strip()!r}")
        if op == "finetune" and len(args) == 2 and not 0 < parse_number(args[1]) <= 1:
            raise UserError(f"finetune fraction must be in (0, 1], got {args[1]!r}")
        steps.append((op, args))
    return steps


def cached_module(recipe: dict, template: Callable[[], nn.Module], build: Callable[[], nn.Module]) -> nn.Module:
    """The module `recipe` describes: loaded from the cache, else built, saved and returned."""
    key = digest(recipe)[:24]
    path = cache_root() / "suspects" / f"{key}.safetensors"
    if path.exists():
        module = template()
        try:
            module.load_state_dict(load_file(str(path)))
            return module.eval()
        except Exception:  # a damaged file is rebuilt, never trusted
            path.unlink()
    module = build()
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    atomic_write_bytes(path, save_bytes(state, metadata={"recipe": json.dumps(recipe, sort_keys=True, default=str)}))
    return module.eval()


def apply_step(parent: nn.Module, parent_key: str, op: str, args: list[str], preprocess, data: Split,
               config: ZooConfig, seed: int) -> tuple[nn.Module, str]:
    """One provenance step (cached); returns (module, recipe key of the result)."""
    recipe = {"parent": parent_key, "op": op, "args": args, "data": data.identity, "seed": seed,
              "settings": config.settings(op)}
    key = digest(recipe)[:24]
    if op == "prune":
        return magnitude_prune(parent, parse_number(args[0])), key
    if op == "distill":
        return cached_module(recipe, lambda: T.build_arch(args[0], data.num_classes, data.images.shape[1]),
                             lambda: T.distill(parent, preprocess, data, args[0], config.distill_epochs,
                                               config.distill_lr, seed)), key
    if op == "hardlabel":
        return cached_module(recipe, lambda: T.build_arch(args[0], data.num_classes, data.images.shape[1]),
                             lambda: T.hardlabel_extract(parent, preprocess, tuple(data.images.shape[1:]),
                                                         data.num_classes, args[0], config.hardlabel_steps,
                                                         config.hardlabel_lr, seed)), key

    def template():
        return copy.deepcopy(parent)

    if op == "finetune":
        fraction = parse_number(args[1]) if len(args) > 1 else 1.0
        subset = data.subset(round(fraction * len(data.labels)), seed)
        epochs = int(args[2]) if len(args) > 2 else config.finetune_epochs
        build = lambda: T.finetune(parent, preprocess, subset, args[0], epochs,  # noqa: E731
                                   config.finetune_lr, seed)
    else:  # advtrain
        epochs = int(args[1]) if len(args) > 1 else config.advtrain_epochs
        build = lambda: T.adversarial_train(parent, preprocess, data, parse_number(args[0]),  # noqa: E731
                                            epochs, config.advtrain_lr, seed, config.advtrain_steps)
    return cached_module(recipe, template, build), key


def source_label(source: ModelAdapter, dataset: str) -> str:
    return f"source({source.name},{dataset})"


def derive(source: ModelAdapter, chain: str, data: Split, config: ZooConfig, seed: int) -> tuple[nn.Module, list[str]]:
    """The module at the end of `chain` (a positive suspect or a defender's pool model) and its step kinds."""
    module, key, kinds = source.module, source.digest, []
    for op, args in parse_chain(chain):
        module, key = apply_step(module, key, op, args, source.preprocess, data, config, seed)
        kinds.append(op)
    return module, kinds


def independent(family: str, seed: int, data: Split, preprocess, config: ZooConfig) -> nn.Module:
    recipe = {"op": "independent", "family": family, "seed": seed, "data": data.identity,
              "epochs": config.negative_epochs, "lr": config.negative_lr, "preprocess": preprocess.to_dict()}
    return cached_module(recipe, lambda: T.build_arch(family, data.num_classes, data.images.shape[1]),
                         lambda: T.train_fresh(family, data, preprocess, config.negative_epochs, config.negative_lr,
                                               seed))


def build_zoo(source: ModelAdapter, config: ZooConfig, attacker: Split, test: Split, dataset: str,
              progress: bool = True) -> list[Suspect]:
    """Every suspect of the suite, positives first, each with its clean top-1 on `test`."""
    head = source_label(source, dataset)
    plan = [("positive", chain) for chain in config.positives]
    plan += [("negative", (fam, s)) for fam in config.negatives for s in config.negative_seeds]
    plan += [("negative", spec) for spec in config.negative_models]
    out = []
    for role, item in tqdm(plan, desc="suspect zoo", disable=not progress, leave=False):
        if role == "positive":
            module, kinds = derive(source, item, attacker, config, config.seed)
            name, kind, arch = f"{head}->{item.replace(' ', '')}", "+".join(dict.fromkeys(kinds)), source.arch
            if kinds[-1] in ("distill", "hardlabel"):
                arch = f"fingerprint/{parse_chain(item)[-1][1][0]}"
        elif isinstance(item, tuple):
            fam, s = item
            module = independent(fam, int(s), attacker, source.preprocess, config)
            name, kind, arch = f"independent({fam},s{s},{attacker.name})", "independent", f"fingerprint/{fam}"
        else:
            adapter = load_model(item, progress=progress)
            out.append(Suspect(f"pretrained({adapter.name})", "pretrained", role, adapter, T.accuracy(
                adapter.module, adapter.preprocess, test)))
            continue
        adapter = ModelAdapter(name, module, source.preprocess, arch, "suspect-zoo")
        out.append(Suspect(name, kind, role, adapter, T.accuracy(module, source.preprocess, test)))
    return out



def half_trained(family: str, dataset: str, seed: int = 0, epochs: int = 150, lr: float = 0.1,
                 optimizer: str = "sgd", **data_options) -> nn.Module:
    """A source model trained from scratch on the source half of `dataset`'s training split
    (MFUE Appendix B: 150 epochs, SGD lr 0.1, momentum 0.9, weight decay 5e-4), cached.
    Suite spec: {source = "torch", factory = "bench.fingerprint.suspects:half_trained",
    kwargs = {family = "timm:resnet18", dataset = "cifar10", root = "data/"}, mean, std, input_size}."""
    train = load_dataset(dataset, "train", **data_options)
    source_half, _ = T.halves(train)
    stats = train.images.mean((0, 2, 3)), train.images.std((0, 2, 3))
    pre = Preprocess(tuple(stats[0].tolist()), tuple(stats[1].tolist()), tuple(train.images.shape[1:]))
    recipe = {"op": "source", "family": family, "seed": seed, "epochs": epochs, "lr": lr, "optimizer": optimizer,
              "data": source_half.identity}

    def build():
        torch.manual_seed(seed)
        module = T.build_arch(family, train.num_classes, train.images.shape[1])
        return T.fit(module, T.ce_loss(pre), source_half, epochs, lr, seed, optimizer=optimizer)

    return cached_module(recipe, lambda: T.build_arch(family, train.num_classes, train.images.shape[1]), build)


def digits_source(family: str = "cnn", seed: int = 0, epochs: int | None = None) -> nn.Module:
    """A digits source model for the fingerprint suite: a zoo architecture trained like the zoo
    (AdamW at the family's rate, constant schedule) on the source half of the digits training split
    only, so the attacker half is disjoint from its training data (cached).
    Suite spec: {source = "torch", factory = "bench.fingerprint.suspects:digits_source",
    kwargs = {family = "cnn", seed = 0}, mean = [0.305555], std = [0.323724], input_size = [1, 32, 32]}."""
    if family not in FAMILIES:
        raise UserError(f"unknown digits source family {family!r}; valid choices: {', '.join(FAMILIES)}")
    _, _, default_epochs, lr = FAMILIES[family]
    epochs = int(epochs or default_epochs)
    source_half, _ = T.halves(load_digits_split("train"))
    pre = digits_preprocess()
    recipe = {"op": "source", "family": family, "seed": seed, "epochs": epochs, "lr": lr, "data": source_half.identity,
              "preprocess": pre.to_dict()}
    return cached_module(recipe, lambda: T.build_arch(family),
                         lambda: T.train_fresh(family, source_half, pre, epochs, lr, seed))

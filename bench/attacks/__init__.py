"""Attacks: what an adversary does before or instead of inference (DESIGN.md "Attack").

By what they touch (bench.attacks.base): input attacks transform the released data
(preprocessing: jpeg, blur, crop, cutout, resize, gauss-noise); learned attacks first learn from the
attacker's own released data (reconstruct: a Noise2Noise / Noise2Clean denoiser; project: the
method-aware subspace projection); the adaptation attack fine-tunes unauthorized models on
released data (adapt); model attacks transform a released model (finetune, forge-finetune, prune, fine-prune,
distill); training attacks change how a data user trains on protected data (mixup, adv-train:
bench.unlearnable.countermeasures).
One registry, `ATTACKS` (bench.attacks.base): each built-in registers itself where it is defined.
Third-party attacks plug in via the `authbench.attacks` entry point or 'module:Class'.
An attack entry in a suite is a name or an inline table {name = "...", <params>}.
"""

from __future__ import annotations

from bench.attacks.base import ATTACKS, BASES, AdaptationAttack, Attack, LearnedAttack, NoAttack, TrainingAttack
from bench.core.errors import UserError

DATA_KINDS = ("input", "learned", "adapt")  # attacks an input-authorization job can run


def parse_attack(entry) -> tuple[str, dict]:
    """'name' or {name = ..., **params} -> (name, params)."""
    if isinstance(entry, str):
        return entry, {}
    if isinstance(entry, dict) and "name" in entry:
        return entry["name"], {k: v for k, v in entry.items() if k != "name"}
    raise UserError(f"attack entry {entry!r} must be a name or a table with a 'name' key")


def get_attack(entry) -> Attack:
    name, params = parse_attack(entry)
    return ATTACKS.get(name)(**params)


def attack_label(entry) -> str:
    name, params = parse_attack(entry)
    return name + ("(" + ",".join(f"{k}={v}" for k, v in sorted(params.items())) + ")" if params else "")


def list_attacks() -> dict[str, str]:
    return ATTACKS.describe()


__all__ = ["ATTACKS", "Attack", "LearnedAttack", "AdaptationAttack", "NoAttack", "TrainingAttack", "get_attack", "parse_attack",
           "attack_label", "list_attacks", "BASES", "DATA_KINDS"]

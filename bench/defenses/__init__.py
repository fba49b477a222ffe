"""Defenses: built-ins, plus third-party classes via the `authbench.defenses` entry point or 'module:Class'."""

from bench.defenses.base import Defense, InputDefense
from bench.defenses.ne import NEOperator, NEPatch
from bench.defenses.noise import Clean, GaussianNoise
from bench.registry import describe, resolve

GROUP = "authbench.defenses"
BUILTIN = {cls.name: cls for cls in (NEPatch, NEOperator, GaussianNoise, Clean)}


def get_defense(name: str) -> type[Defense]:
    return resolve("defense", GROUP, BUILTIN, name)


def list_defenses() -> dict[str, str]:
    return describe(GROUP, BUILTIN)


__all__ = ["Defense", "InputDefense", "get_defense", "list_defenses", "BUILTIN"]

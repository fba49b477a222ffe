"""Defenses: built-ins (NE, noise control, CoreLocker, the DP/FHE/ALGOSPEC baselines of the top-level
`baselines` package, and the fingerprinting methods of bench.fingerprint), plus third-party classes via the
`authbench.defenses` entry point or 'module:Class'. One registry, `DEFENSES` (bench.defenses.base): each
built-in registers itself where it is defined, and the registry imports those modules on first lookup."""

from bench.defenses.base import DEFENSES, Defense, InputDefense, ModelDefense


def get_defense(name: str) -> type[Defense]:
    return DEFENSES.get(name)


def list_defenses() -> dict[str, str]:
    return DEFENSES.describe()


__all__ = ["DEFENSES", "Defense", "InputDefense", "ModelDefense", "get_defense", "list_defenses"]

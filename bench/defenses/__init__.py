"""Defenses: built-ins (NE, noise control, CoreLocker, and the DP/FHE/ALGOSPEC baselines), plus third-party classes via the `authbench.defenses` entry point or 'module:Class'."""

from bench.defenses.base import Defense, InputDefense, ModelDefense
from bench.defenses.corelocker import CoreLocker
from bench.defenses.locks import KeyTransform, NNSplitter, Passport
from bench.defenses.ne import NEOperator, NEPatch
from bench.defenses.noise import Clean, GaussianNoise
from bench.registry import describe, resolve

GROUP = "authbench.defenses"
BUILTIN = {cls.name: cls for cls in (NEPatch, NEOperator, GaussianNoise, Clean, CoreLocker, KeyTransform, Passport,
                                      NNSplitter)}


def builtins() -> dict[str, type[Defense]]:
    """Built-ins plus the NE paper's Table 3 baselines (DP, FHE, ALGOSPEC) from the top-level
    `baselines` package, imported on first use (they import this package's base classes)."""
    from baselines import BUILTIN as BASELINES
    from bench.fingerprint import METHODS as FINGERPRINTS  # ownership verification (protocol "verify")

    return {**BUILTIN, **BASELINES, **FINGERPRINTS}


def get_defense(name: str) -> type[Defense]:
    return resolve("defense", GROUP, builtins(), name, base=Defense)


def list_defenses() -> dict[str, str]:
    return describe(GROUP, builtins())


__all__ = ["Defense", "InputDefense", "ModelDefense", "get_defense", "list_defenses", "builtins", "BUILTIN"]

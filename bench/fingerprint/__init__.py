"""Ownership verification (model fingerprinting): methods, suspect zoo, metrics, verification attacks.

`FINGERPRINTS` (bench.fingerprint.base) is the registry of fingerprinting methods (entry point
`authbench.fingerprints`); each method is also a defense of protocol "verify" (bench.defenses.DEFENSES)."""

from bench.fingerprint import advtra, cae, ipguard, metafinger, mfue  # noqa: F401  (register the methods)
from bench.fingerprint.base import FINGERPRINTS, Fingerprint, FingerprintMethod, SuspectOracle

__all__ = ["FINGERPRINTS", "Fingerprint", "FingerprintMethod", "SuspectOracle"]

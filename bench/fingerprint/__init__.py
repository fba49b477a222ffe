"""Ownership verification (model fingerprinting): methods, suspect zoo, metrics, verification attacks."""

from bench.fingerprint.advtra import ADVTRA
from bench.fingerprint.base import Fingerprint, FingerprintMethod, SuspectOracle
from bench.fingerprint.cae import CAE
from bench.fingerprint.deepjudge import DeepJudge
from bench.fingerprint.ipguard import IPGuard
from bench.fingerprint.metafinger import MetaFinger
from bench.fingerprint.mfue import MFUE, MFUEBlack
from bench.fingerprint.modeldiff import ModelDiff
from bench.fingerprint.sac import SAC
from bench.fingerprint.zest import Zest

METHODS = {cls.name: cls for cls in (MFUE, MFUEBlack, IPGuard, CAE, MetaFinger, ADVTRA,
                                        ModelDiff, SAC, DeepJudge, Zest)}

__all__ = ["Fingerprint", "FingerprintMethod", "SuspectOracle", "METHODS"]

"""Where a number came from: package versions, git revision, device."""

from __future__ import annotations

import platform
import subprocess
import sys
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

from bench.core.types import Provenance

PACKAGES = ("authbench", "torch", "numpy", "scikit-learn", "timm", "transformers")


@lru_cache(maxsize=1)
def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


@lru_cache(maxsize=1)
def git_revision() -> str:
    """HEAD of the checkout holding this package, '+dirty' when it has local changes."""
    root = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def device(where: torch.device | None = None) -> str:
    """The compute device in words: the GPU's name, or the CPU's architecture and thread count."""
    where = where if where is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if where.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(where)}"
    return f"cpu:{platform.machine()}:{torch.get_num_threads()}threads"


def build(*, model_digest: str | None, authorized_digest: str | None, input_digest: str | None, defense_summary,
          seed: int, wall_s: float, cache: dict, forwards: int, where: torch.device | None = None) -> Provenance:
    """A result row's provenance: the models' digests, the input's, versions, git, device and run counters."""
    return Provenance(model_digest=model_digest, authorized_digest=authorized_digest, input_digest=input_digest,
                      defense_summary=defense_summary, versions=versions(), git=git_revision(), device=device(where),
                      seed=seed, wall_s=wall_s, cache=cache, forwards=forwards)


def command_line() -> str:
    return " ".join(sys.argv)

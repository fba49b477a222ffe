"""Pinned zoo weights: the digits zoo's safetensors files shipped with the package, with a manifest.

`bench/models/zoo_weights/manifest.json` records, per model, the file, the sha256 of its bytes,
the sha256 of its weights (`bench.models.adapter.weights_digest`), the recipe that trained it and
that recipe's digest, the training seed, the test accuracy measured when it was pinned, the torch
version and date; at the top, the torch version, Python, platform and date of the latest pin. Every read of a pinned file
recomputes the sha256 of its bytes; a mismatch is a one-line error naming the file and both
digests (exit 2). Pinning (`authbench zoo pin`) copies weights that `authbench zoo retrain` wrote
to the cache; nothing here trains.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

from bench.core.cache import atomic_write_bytes
from bench.core.errors import UserError

PINNED_DIR = Path(__file__).resolve().parent / "zoo_weights"
MANIFEST = "manifest.json"
KIND = "authbench-zoo-manifest"
# `zoo retrain` calls a recipe reproduced when its test accuracy is within this many points of the
# pinned weights' (540 test images: 1 point is ~5 images); bit-identical weights are reported too.
REPRODUCE_TOLERANCE = 1.0


@dataclass(frozen=True, kw_only=True)
class PinnedEntry:
    """One pinned model of the manifest."""

    name: str
    file: str
    sha256: str  # of the file's bytes
    weights_sha256: str  # weights_digest of the loaded module
    recipe: dict
    recipe_digest: str
    seed: int
    test_accuracy: float  # top-1 % on the digits test split, measured when pinned
    bytes: int
    torch: str  # the torch version that trained it
    pinned_at: str  # date (UTC) it was pinned

    def to_json(self) -> dict:
        out = asdict(self)
        out.pop("name")
        return out

    @classmethod
    def from_json(cls, name: str, data: dict) -> "PinnedEntry":
        return cls(name=name, **{k: data[k] for k in ("file", "sha256", "weights_sha256", "recipe", "recipe_digest",
                                                      "seed", "test_accuracy", "bytes", "torch", "pinned_at")})


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _manifest_path(root: Path | None) -> Path:
    return Path(root or PINNED_DIR) / MANIFEST


def read_manifest(root: Path | None = None) -> dict:
    """The manifest (an empty one when no weights are pinned)."""
    path = _manifest_path(root)
    if not path.exists():
        return {"kind": KIND, "version": 1, "models": {}}
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"zoo manifest {str(path)!r} is not readable JSON ({e}); reinstall authbench") from None
    if not isinstance(data, dict) or data.get("kind") != KIND or not isinstance(data.get("models"), dict):
        raise UserError(f"zoo manifest {str(path)!r} is not an authbench zoo manifest (expected \"kind\": \"{KIND}\")")
    return data


@lru_cache(maxsize=4)
def _entries(root: str) -> dict[str, PinnedEntry]:
    models = read_manifest(Path(root))["models"]
    try:
        return {name: PinnedEntry.from_json(name, e) for name, e in models.items()}
    except (KeyError, TypeError) as e:
        raise UserError(f"zoo manifest {str(_manifest_path(Path(root)))!r} has a malformed entry ({e}); "
                        "reinstall authbench") from None


def pinned_entries(root: Path | None = None) -> dict[str, PinnedEntry]:
    """name -> PinnedEntry of every pinned model."""
    return _entries(str(Path(root or PINNED_DIR)))


def pinned_entry(name: str, root: Path | None = None) -> PinnedEntry | None:
    return pinned_entries(root).get(name)


def read_pinned(entry: PinnedEntry, root: Path | None = None) -> bytes:
    """The bytes of a pinned file, after checking their sha256 against the manifest (one-line error if not)."""
    path = Path(root or PINNED_DIR) / entry.file
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UserError(f"pinned zoo weights {str(path)!r} are missing or unreadable ({e.strerror}); "
                        "reinstall authbench") from None
    actual = sha256_bytes(data)
    if actual != entry.sha256:
        raise UserError(f"pinned zoo weights {str(path)!r} fail their checksum: manifest sha256 {entry.sha256}, "
                        f"file sha256 {actual}; reinstall authbench (or `authbench zoo pin` after a retrain)")
    return data


def write_pinned(entries: dict[str, tuple[PinnedEntry, bytes]], header: dict, root: Path | None = None) -> Path:
    """Write the files of `entries` (name -> (entry, file bytes)) and merge them into the manifest; returns it."""
    root = Path(root or PINNED_DIR)
    manifest = read_manifest(root)
    for name, (entry, data) in sorted(entries.items()):
        if sha256_bytes(data) != entry.sha256:
            raise UserError(f"refusing to pin {name}: its bytes do not match the entry's sha256")
        atomic_write_bytes(root / entry.file, data)
        os.chmod(root / entry.file, 0o644)  # package data: readable by whoever installs it
        manifest["models"][name] = entry.to_json()
    manifest = {"kind": KIND, "version": 1, **{k: v for k, v in manifest.items() if k not in ("kind", "version", "models")},
                **header, "models": dict(sorted(manifest["models"].items()))}
    path = _manifest_path(root)
    atomic_write_bytes(path, (json.dumps(manifest, indent=1) + "\n").encode())
    os.chmod(path, 0o644)
    _entries.cache_clear()
    return path

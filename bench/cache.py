"""Content-addressed, corruption-checked store for forward passes and encodings.

An entry is keyed by the sha256 of (namespace, model identity, input identity) and
stored as MAGIC | sha256(payload) | payload, written to a temporary file and
renamed into place, so a reader never sees a partial entry; a truncated or
altered entry fails its checksum and is deleted and recomputed, never read.
The payload holds its own key (`KEY_FIELD`), checked on read: an entry moved or
copied over another key's file is never served for that key. Each entry is one
file, so a cache on shared storage is safe for several workers at once: two that
compute the same entry both rename a complete file into place, and either wins.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.errors import UserError

MAGIC = b"ABC1"
KEY_FIELD = "__key__"
NAMESPACE_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-_")


def cache_root() -> Path:
    """$AUTHBENCH_CACHE, or ~/.cache/authbench."""
    return Path(os.environ.get("AUTHBENCH_CACHE") or Path.home() / ".cache" / "authbench")


UMASK = os.umask(0o022)
os.umask(UMASK)  # read once (os.umask can only be read by setting it)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that `path` is either absent, old, or complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~UMASK)  # mkstemp makes it 0600; a written file reads like any other
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def digest(obj) -> str:
    """Stable sha256 of a JSON-serialisable object."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    corrupt: int = 0  # failed their checksum, or hold another key (misplaced), or no key (written before keys)

    def as_dict(self) -> dict:
        return {"hits": self.hits, "misses": self.misses, "corrupt": self.corrupt}


@dataclass
class ArrayCache:
    """Dict-of-arrays entries in one namespace of the cache root."""

    root: Path
    namespace: str
    stats: CacheStats = field(default_factory=CacheStats)

    @property
    def folder(self) -> Path:
        return self.root / self.namespace

    def key(self, model: str, inputs: dict) -> str:
        return digest({"namespace": self.namespace, "model": model, "inputs": inputs})

    def path_of(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.bin"

    def get(self, key: str) -> dict[str, np.ndarray] | None:
        path = self.path_of(key)
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            self.stats.misses += 1
            return None
        payload = blob[len(MAGIC) + 32 :]
        entry = None
        if blob[: len(MAGIC)] == MAGIC and hashlib.sha256(payload).digest() == blob[len(MAGIC) : len(MAGIC) + 32]:
            with np.load(io.BytesIO(payload), allow_pickle=False) as npz:
                entry = {k: npz[k] for k in npz.files}
        if entry is None or str(entry.pop(KEY_FIELD, "")) != key:
            self.stats.corrupt += 1
            self.stats.misses += 1
            path.unlink(missing_ok=True)
            return None
        self.stats.hits += 1
        return entry

    def put(self, key: str, arrays: dict[str, np.ndarray]) -> None:
        buf = io.BytesIO()
        np.savez(buf, **arrays, **{KEY_FIELD: np.array(key)})
        payload = buf.getvalue()
        atomic_write_bytes(self.path_of(key), MAGIC + hashlib.sha256(payload).digest() + payload)


def cache_info(root: Path | None = None) -> dict:
    """Entries and bytes per namespace."""
    root = root or cache_root()
    info = {}
    if root.exists():
        for ns in sorted(p for p in root.iterdir() if p.is_dir()):
            files = [f for f in ns.rglob("*") if f.is_file()]
            info[ns.name] = {"entries": len(files), "bytes": sum(f.stat().st_size for f in files)}
    return info


def cache_clear(root: Path | None = None, namespace: str | None = None) -> None:
    """Delete one namespace of the cache root (a plain name such as forward), or the whole root."""
    root = Path(root or cache_root())
    if namespace is not None and (not namespace or set(namespace) - NAMESPACE_CHARS):
        raise UserError(f"cache namespace {namespace!r} is not a plain name; valid: lower-case letters, digits, '-' "
                        f"and '_' (e.g. forward, encoding, artifact, zoo)")
    target = root / namespace if namespace else root
    if target.resolve().parent != root.resolve() and target != root:
        raise UserError(f"cache namespace {namespace!r} resolves outside the cache root {str(root)!r}")
    if target.exists():
        shutil.rmtree(target)

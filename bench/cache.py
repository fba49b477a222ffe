"""Content-addressed, corruption-checked store for forward passes and encodings.

An entry is keyed by the sha256 of (namespace, model identity, input identity) and
stored as MAGIC | sha256(payload) | binding | payload, written to a temporary file
and renamed into place, so a reader never sees a partial entry; a truncated or
altered entry fails its checksum and is deleted and recomputed, never read.
The payload (an .npz read with allow_pickle=False) holds its own key (`KEY_FIELD`),
checked on read, and `binding` is the sha256 of the key and of every array's name,
dtype, shape and bytes: an entry moved or copied over another key's file, or one
whose arrays were swapped for another entry's (its payload checksum recomputed), is
never served. Any entry that fails to parse as the expected arrays is corrupt:
deleted and recomputed. An entry of an older format (MAGIC_V1) is recomputed too.
What this does not defend against: a writer who can write the cache and recompute
both checksums (the format is public; there is no secret), so a cache is trusted
like the code that reads it (docs/cache.md). Each entry is one
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

MAGIC = b"ABC2"
MAGIC_V1 = b"ABC1"  # payload checksum only, no binding: recomputed when met
KEY_FIELD = "__key__"
MARKER = "CACHEDIR.TAG"  # https://bford.info/cachedir/: backup tools skip it; `cache clear` deletes only a marked folder
MARKER_TEXT = ("Signature: 8a477f597d28d172789f06886806bc55\n"
               "# This folder is an authbench cache (forward passes, encodings, zoo weights); it can be deleted.\n")
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


def is_marked(root: Path) -> bool:
    """Whether `root` carries the cache's own marker file."""
    try:
        return "authbench cache" in (Path(root) / MARKER).read_text(errors="replace")
    except OSError:
        return False


def mark_root(root: Path) -> None:
    """Write the marker into a cache root (creating the root); a root that has one keeps it."""
    root = Path(root)
    if not (root / MARKER).exists():
        atomic_write_bytes(root / MARKER, MARKER_TEXT.encode())


def binding(key: str, arrays: dict) -> bytes:
    """sha256 over the key and every array's name, dtype, shape and bytes (sorted by name)."""
    h = hashlib.sha256(MAGIC + key.encode())
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(json.dumps([name, a.dtype.str, list(a.shape)]).encode())
        h.update(hashlib.sha256(a.tobytes()).digest())
    return h.digest()


def _parse(blob: bytes, key: str) -> dict[str, np.ndarray] | None:
    """The arrays of an entry's bytes, or None when they are not a valid entry for `key`."""
    head = len(MAGIC) + 64
    if len(blob) < head or blob[: len(MAGIC)] != MAGIC:
        return None
    payload = blob[head:]
    if hashlib.sha256(payload).digest() != blob[len(MAGIC) : len(MAGIC) + 32]:
        return None
    try:
        with np.load(io.BytesIO(payload), allow_pickle=False) as npz:
            entry = {k: np.asarray(npz[k]) for k in npz.files}
    except Exception:  # noqa: BLE001 - whatever the bytes are, an entry that does not parse is corrupt
        return None
    if any(a.dtype.hasobject for a in entry.values()):
        return None
    if binding(key, entry) != blob[len(MAGIC) + 32 : head]:
        return None
    if str(entry.pop(KEY_FIELD, "")) != key:
        return None
    return entry


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
    _marked: bool = field(default=False, repr=False)

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
        except OSError:  # a folder in its place, unreadable: never served
            blob = b""
        entry = _parse(blob, key)
        if entry is None:
            self.stats.corrupt += 1
            self.stats.misses += 1
            try:
                path.unlink(missing_ok=True)
            except OSError:
                pass
            return None
        self.stats.hits += 1
        return entry

    def put(self, key: str, arrays: dict[str, np.ndarray]) -> None:
        if not self._marked:
            mark_root(self.root)
            self._marked = True
        full = {**arrays, KEY_FIELD: np.array(key)}
        buf = io.BytesIO()
        np.savez(buf, **full)
        payload = buf.getvalue()
        atomic_write_bytes(self.path_of(key), MAGIC + hashlib.sha256(payload).digest() + binding(key, full) + payload)


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
    """Delete one namespace of the cache root (a plain name such as forward), or the whole root; only a root
    that carries the cache's marker file (MARKER, written when the cache is created)."""
    root = Path(root or cache_root())
    if namespace is not None and (not namespace or set(namespace) - NAMESPACE_CHARS):
        raise UserError(f"cache namespace {namespace!r} is not a plain name; valid: lower-case letters, digits, '-' "
                        f"and '_' (e.g. forward, encoding, artifact, zoo)")
    target = root / namespace if namespace else root
    if target.resolve().parent != root.resolve() and target != root:
        raise UserError(f"cache namespace {namespace!r} resolves outside the cache root {str(root)!r}")
    if not target.exists() and not target.is_symlink():
        return
    if root.is_symlink() or not root.is_dir():
        raise UserError(f"--cache-dir {str(root)!r} is not a folder; nothing deleted")
    if not is_marked(root):
        raise UserError(f"{str(root)!r} carries no authbench cache marker ({MARKER}), so it is not deleted: it may "
                        f"not be a cache. If it is one (written before markers), delete it by hand (rm -r "
                        f"{str(target)!r}), or mark it as one: echo '# authbench cache' > {str(root / MARKER)!r}")
    if target.is_symlink() or not target.is_dir():
        target.unlink()
    elif namespace:
        shutil.rmtree(target)
    else:  # the root's content, the marker last, so an interrupted clear leaves a marked cache
        for child in sorted(root.iterdir(), key=lambda p: p.name == MARKER):
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
        root.rmdir()

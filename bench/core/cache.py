"""Content-addressed, corruption-checked store for forward passes and encodings.

An entry is keyed by the sha256 of (namespace, model identity, input identity), one file per entry,
written to a temporary file and renamed into place, so a reader never sees a partial entry.

Format 3 (MAGIC, written today): MAGIC | digest (32 bytes) | header length (4 bytes, little-endian) |
header | raw array bytes. The header is JSON: the entry's key and, per array, its name, dtype, shape and
offset (each array starts on a 64-byte boundary). `digest` is the sha256 of MAGIC, the key, and every
byte after the digest, so one pass over the bytes catches a truncated or altered entry, one moved or
copied over another key's file, and one whose arrays were swapped for another entry's; a reader maps the
arrays straight out of the bytes (no zip archive, no per-array header parsing: see
benchmarks/bench_cache.py). Format 2 entries (MAGIC_V2: payload checksum, key binding and an .npz
payload) are still served, after the same checks as before, and rewritten in format 3 on the first read.
An entry of format 1 (MAGIC_V1), or any entry that fails a check, is corrupt: deleted and recomputed,
never read. No format ever unpickles: object dtypes are refused.
What this does not defend against: a writer who can write the cache and recompute the digest (the format
is public; there is no secret), so a cache is trusted like the code that reads it (docs/security.md). Each
entry is one file, so a cache on shared storage is safe for several workers at once: two that compute
the same entry both rename a complete file into place, and either wins. `get_many` reads the entries of
one request (every model a job scores on one input set) in one call.
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

from bench.core.errors import UserError

MAGIC = b"ABC3"
MAGIC_V2 = b"ABC2"  # payload checksum, key binding, .npz payload: served after its checks, rewritten as MAGIC
MAGIC_V1 = b"ABC1"  # payload checksum only, no binding: recomputed when met
ALIGN = 64  # every array of a format-3 entry starts on a multiple of this many bytes
MAX_HEADER = 1 << 20
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
    """Format 2's key binding: sha256 over the key and every array's name, dtype, shape and bytes (sorted by name)."""
    h = hashlib.sha256(MAGIC_V2 + key.encode())
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(json.dumps([name, a.dtype.str, list(a.shape)]).encode())
        h.update(hashlib.sha256(a.tobytes()).digest())
    return h.digest()


def encode_entry_v2(key: str, arrays: dict) -> bytes:
    """The bytes format 2 wrote (an .npz payload, its sha256, the key binding). Nothing writes it any more: the
    migration tests and benchmarks/bench_cache.py build old entries with it."""
    full = {**arrays, KEY_FIELD: np.array(key)}
    buf = io.BytesIO()
    np.savez(buf, **full)
    payload = buf.getvalue()
    return MAGIC_V2 + hashlib.sha256(payload).digest() + binding(key, full) + payload


def _digest_v3(key: str, body) -> bytes:
    """A format-3 entry's digest: sha256 of MAGIC, the key and `body` (the bytes after the digest), hashed in
    place (no copy of the body)."""
    h = hashlib.sha256(MAGIC + key.encode())
    h.update(body)
    return h.digest()


def encode_entry(key: str, arrays: dict) -> bytes:
    """The bytes of a format-3 entry holding `arrays` under `key`."""
    parts, specs, offset = [], [], 0
    for name in sorted(arrays):
        a = np.asarray(arrays[name])  # not ascontiguousarray: it makes a 0-d array 1-d; tobytes is C order anyway
        if a.dtype.hasobject:
            raise TypeError(f"cache entry array {name!r} has an object dtype; only plain arrays are stored")
        pad = -offset % ALIGN
        parts.append(b"\0" * pad)
        offset += pad
        specs.append({"name": name, "dtype": a.dtype.str, "shape": list(a.shape), "offset": offset})
        data = a.tobytes()
        parts.append(data)
        offset += len(data)
    header = json.dumps({"key": key, "arrays": specs}, separators=(",", ":")).encode()
    head_len = len(MAGIC) + 32 + 4 + len(header)
    lead = -head_len % ALIGN  # the arrays' offsets count from an aligned start
    body = len(header).to_bytes(4, "little") + header + b" " * lead + b"".join(parts)
    return MAGIC + _digest_v3(key, body) + body


def _parse_v3(blob, key: str) -> dict[str, np.ndarray] | None:
    """The arrays of a format-3 entry's bytes (a bytearray: the arrays are writable views of it), or None
    when they are not a valid entry for `key`."""
    start = len(MAGIC) + 32
    view = memoryview(blob)
    if len(blob) < start + 4 or _digest_v3(key, view[start:]) != bytes(view[len(MAGIC):start]):
        return None
    size = int.from_bytes(view[start:start + 4], "little")
    if size > MAX_HEADER or start + 4 + size > len(blob):
        return None
    try:
        header = json.loads(bytes(view[start + 4:start + 4 + size]))
        if header["key"] != key:
            return None
        base = start + 4 + size
        base += -base % ALIGN
        entry = {}
        for spec in header["arrays"]:
            dtype = np.dtype(spec["dtype"])
            shape = tuple(int(n) for n in spec["shape"])
            offset = base + int(spec["offset"])
            count = int(np.prod(shape, dtype=np.int64))
            if dtype.hasobject or offset < base or offset + count * dtype.itemsize > len(blob):
                return None
            entry[str(spec["name"])] = np.frombuffer(blob, dtype=dtype, count=count, offset=offset).reshape(shape)
    except Exception:  # noqa: BLE001 - a header that does not describe arrays in these bytes is corrupt
        return None
    return entry


def _parse_v2(blob: bytes, key: str) -> dict[str, np.ndarray] | None:
    """The arrays of a format-2 entry's bytes, or None when they are not a valid entry for `key`."""
    head = len(MAGIC_V2) + 64
    payload = blob[head:]
    if hashlib.sha256(payload).digest() != blob[len(MAGIC_V2) : len(MAGIC_V2) + 32]:
        return None
    try:
        with np.load(io.BytesIO(payload), allow_pickle=False) as npz:
            entry = {k: np.asarray(npz[k]) for k in npz.files}
    except Exception:  # noqa: BLE001 - whatever the bytes are, an entry that does not parse is corrupt
        return None
    if any(a.dtype.hasobject for a in entry.values()):
        return None
    if binding(key, entry) != blob[len(MAGIC_V2) + 32 : head]:
        return None
    if str(entry.pop(KEY_FIELD, "")) != key:
        return None
    return entry


def _parse(blob, key: str) -> tuple[dict[str, np.ndarray] | None, bool]:
    """(arrays, whether the entry is of format 2) of an entry's bytes; arrays None when not a valid entry."""
    if len(blob) < len(MAGIC) + 36:
        return None, False
    magic = bytes(blob[: len(MAGIC)])
    if magic == MAGIC:
        return _parse_v3(blob, key), False
    if magic == MAGIC_V2:
        return _parse_v2(bytes(blob), key), True
    return None, False


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

    def _read(self, key: str) -> bytearray | None:
        path = self.path_of(key)
        try:
            with open(path, "rb") as f:
                blob = bytearray(os.fstat(f.fileno()).st_size)
                n = f.readinto(blob)
            return blob if n == len(blob) else bytearray()
        except FileNotFoundError:
            return None
        except OSError:  # a folder in its place, unreadable: never served
            return bytearray()

    def get(self, key: str) -> dict[str, np.ndarray] | None:
        """The arrays stored under `key`, or None (missing, or corrupt: then deleted)."""
        blob = self._read(key)
        if blob is None:
            self.stats.misses += 1
            return None
        entry, old = _parse(blob, key)
        if entry is None:
            self.stats.corrupt += 1
            self.stats.misses += 1
            try:
                self.path_of(key).unlink(missing_ok=True)
            except OSError:
                pass
            return None
        self.stats.hits += 1
        if old:  # a format-2 entry: rewritten once in today's format, so later reads take the fast path
            try:
                self.put(key, entry)
            except OSError:
                pass
        return entry

    def get_many(self, keys) -> dict[str, dict[str, np.ndarray] | None]:
        """key -> arrays (or None) for every key of one request, counted like `get`."""
        return {key: self.get(key) for key in dict.fromkeys(keys)}

    def put(self, key: str, arrays: dict[str, np.ndarray]) -> None:
        if not self._marked:
            mark_root(self.root)
            self._marked = True
        atomic_write_bytes(self.path_of(key), encode_entry(key, arrays))


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

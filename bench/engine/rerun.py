"""A fully-done rerun without torch: the run's done stamp (issue 26).

After a run of the command line in which every planned job is done, `authbench run` writes
`<out>/.authbench-done.json`: a key over everything the plan and the rows' identities are made from,
as cheap facts (the suite file's bytes, the command line's options and overrides, the folders, the
harness's files and the installed distributions by name and time, the files the data and the models
name by size and time), the results file's size, time and inode, and what the run printed. The next
`authbench run` with the same key and the same results file is a no-op, decided here without
importing torch, numpy or a plugin: it prints the same boards and a counts line with nothing run.

Whatever differs (an edited suite, another flag, a touched checkpoint or data file, an upgraded
package, rows appended, a report deleted, `--render`, `--plan`) takes the full path: plan, resume,
run what is missing, render what changed, and write the stamp again. The stamp is a shortcut for
the full path's own answer, never a second source of results: it holds no number that is not in
the results file, and a missing or unreadable stamp costs only the full path's time.

This module imports nothing heavy (standard library and bench.core.errors only).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DONE_STAMP = ".authbench-done.json"
RENDER_STAMP = ".authbench-rendered.json"  # in a reports folder: what its reports were rendered from (bench.api)
FORMAT = 1
HARNESS = Path(__file__).resolve().parents[1]  # the bench package: its files' sizes and times
BASELINES = HARNESS.parent / "baselines"  # the DP / FHE / ALGOSPEC baselines' package beside it
MAX_WATCHED = 200_000  # files under a data folder; more than that: no stamp (the walk would not be cheap)
CACHE_COUNTERS = ("hits", "misses", "corrupt")


def counts_line(*, cells_total: int, cells_done_before: int, cells_run: int, forwards: int, encodings: int,
                cache: dict, wall_s: float, executor: str = "local", superseded: int = 0, merged: int = 0,
                jobs_failed: int = 0) -> str:
    """The counts line `authbench run` prints after the boards (bench.api.Results.summary_text)."""
    return (f"cells: {cells_total} total, {cells_done_before} already done, {cells_run} run | "
            f"forward passes: {forwards} | encodings: {encodings} | "
            f"cache hits {cache['hits']}, misses {cache['misses']}, corrupt {cache['corrupt']} | {wall_s:.1f}s"
            + (f" | executor {executor}" if executor != "local" else "")
            + (f" | {superseded} superseded" if superseded else "")
            + (f" | {merged} duplicate job(s) merged (identical parameters run once)" if merged else "")
            + (f"\nFAILED: {jobs_failed} job(s) did not finish (one line each above); `authbench run` again "
               "retries only them" if jobs_failed else ""))


def _stat(path: Path) -> list | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def tree_signature(root: Path, limit: int = MAX_WATCHED) -> str | None:
    """sha256 over the relative names, sizes and times of the files under `root` (a file: itself); None when
    there are more than `limit` of them."""
    root = Path(root)
    if not root.is_dir():
        return json.dumps(_stat(root))
    h, count = hashlib.sha256(), 0
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            count += 1
            if count > limit:
                return None
            path = Path(folder) / name
            h.update(f"{path.relative_to(root)}|{_stat(path)}\n".encode())
    return h.hexdigest()


def installed() -> str:
    """The distributions on sys.path by name (their versions are in the names) and time: an installed,
    upgraded or removed package or plugin changes it."""
    h = hashlib.sha256()
    for entry in sys.path:
        try:
            with os.scandir(entry or ".") as it:
                names = sorted(e.name for e in it if e.name.endswith((".dist-info", ".egg-info", ".egg-link", ".pth")))
        except OSError:
            continue
        h.update(f"{entry}\n".encode())
        for name in names:
            h.update(f"{name}|{_stat(Path(entry or '.') / name)}\n".encode())
    return h.hexdigest()


def _paths_in(value, found: list[str]) -> None:
    """Every string in a TOML value that names an existing file or folder (data roots, checkpoints, ...)."""
    if isinstance(value, dict):
        for v in value.values():
            _paths_in(v, found)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _paths_in(v, found)
    elif isinstance(value, str) and value and ("/" in value or os.sep in value or "." in value):
        path = Path(value).expanduser()
        try:
            if path.exists():
                found.append(str(path.resolve()))
        except (OSError, ValueError):
            pass


def watched(raw: dict, extra_paths: list, cache: Path) -> dict | None:
    """Size-and-time signatures of the files a suite's rows may depend on beyond its text: whatever its [data]
    and [models] sections and the [[defenses]] entries name on disk, the command line's folders, the suite's
    import folders (`factory` modules), and the kits' files in the cache; None when one is too large to walk."""
    found: list[str] = []
    for section in (raw.get("data"), raw.get("models"), raw.get("defenses")):
        _paths_in(section, found)
    _paths_in([str(p) for p in extra_paths if p is not None], found)
    if "kit:" in json.dumps(raw, default=str):
        found.append(str(Path(cache) / "kits"))
    out = {}
    for path in sorted(set(found)):
        signature = tree_signature(Path(path))
        if signature is None:
            return None
        out[path] = signature
    return out


def rerun_key(*, suite_path: Path, command: dict, cache: Path) -> str | None:
    """The digest of everything a fully-done run's plan and rows' identities come from, from cheap facts;
    None when it cannot be known cheaply (the run then takes the full path and writes no stamp)."""
    try:
        text = Path(suite_path).read_bytes()
        raw = tomllib.loads(text.decode())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    suite_dir = Path(suite_path).resolve().parent
    python_path = [suite_dir / p for p in ((raw.get("models") or {}).get("python_path") or [])]
    files = watched(raw, [*python_path, command.get("data_root")], cache)
    if files is None:
        return None
    local_py = {str(p): _stat(p) for p in sorted(suite_dir.glob("*.py"))}  # the suite's own `factory` modules
    env = {k: v for k, v in os.environ.items() if k.startswith(("AUTHBENCH_", "HF_", "TORCH_", "XDG_CACHE"))}
    env.pop("AUTHBENCH_BENCH_REPORT", None)  # the warm-rerun benchmark's own variable
    facts = {"format": FORMAT, "suite": [str(Path(suite_path).resolve()), hashlib.sha256(text).hexdigest()],
             "command": command, "cache": str(Path(cache).resolve()), "cwd": os.getcwd(), "env": env,
             "files": files, "suite_py": local_py, "harness": [tree_signature(HARNESS), tree_signature(BASELINES)],
             "installed": installed(),
             "python": sys.version}
    return hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()


def results_signature(path: Path) -> list | None:
    try:
        st = Path(path).stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def write_stamp(out: Path, *, key: str, results: Path, reports: Path | None, render_inputs: str | None,
                header: str, head: str, tail: str, cells: int, jobs: int, superseded: int, merged: int,
                executor: str) -> None:
    """Record a fully-done run (every planned job done, nothing failed) for the next rerun."""
    stamp = {"format": FORMAT, "key": key, "results": str(Path(results).resolve()),
             "results_signature": results_signature(results),
             "reports": str(Path(reports).resolve()) if reports is not None else None, "render_inputs": render_inputs,
             "header": header, "head": head, "tail": tail, "cells": cells, "jobs": jobs, "superseded": superseded,
             "merged": merged, "executor": executor}
    path = Path(out) / DONE_STAMP
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(stamp, indent=1))
        os.replace(tmp, path)
    except OSError:  # a stamp is a shortcut: a folder that cannot take it costs the full path next time
        tmp.unlink(missing_ok=True)


def clear_stamp(out: Path) -> None:
    """Remove the stamp before a run that may change the folder (a crash then leaves none behind)."""
    try:
        (Path(out) / DONE_STAMP).unlink()
    except OSError:
        pass


def done_rerun(out: Path, key: str | None) -> dict | None:
    """The stamp of `out` when it says that this run has nothing to do: same key, the results file as the stamp
    saw it, and the reports rendered from it still all there; else None (the full path decides)."""
    if key is None:
        return None
    try:
        stamp = json.loads((Path(out) / DONE_STAMP).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(stamp, dict) or stamp.get("format") != FORMAT or stamp.get("key") != key:
        return None
    sig = results_signature(Path(stamp.get("results") or ""))
    if sig is None or sig != stamp.get("results_signature"):
        return None
    if stamp.get("reports"):
        try:
            rendered = json.loads((Path(stamp["reports"]) / RENDER_STAMP).read_text())
        except (OSError, ValueError):
            return None
        paths = rendered.get("paths", []) if isinstance(rendered, dict) else []
        if rendered.get("inputs") != stamp.get("render_inputs") or not all(Path(p).exists() for p in paths):
            return None
    return stamp


def print_done(stamp: dict, *, progress: bool, started: float) -> None:
    """What a no-op rerun prints: the stamp's header on stderr (with --progress), then the boards, the counts
    line with nothing run and where the results and reports are, as the full path prints them."""
    if progress:
        print(f"{stamp['header']} (checked without planning: nothing changed since the run that finished it)",
              file=sys.stderr)
    line = counts_line(cells_total=stamp["cells"], cells_done_before=stamp["cells"], cells_run=0, forwards=0,
                       encodings=0, cache={k: 0 for k in CACHE_COUNTERS}, wall_s=time.perf_counter() - started,
                       executor=stamp.get("executor", "local"), superseded=stamp.get("superseded", 0),
                       merged=stamp.get("merged", 0))
    print((stamp["head"] + "\n\n" if stamp["head"] else "") + line + "\n" + stamp["tail"])


def default_out(suite_path: Path, random_weights: bool = False) -> Path:
    """runs/<suite name>, the results folder `authbench run` uses without --out (bench.api.engine_for), from
    the file's [suite] name (as bench.suite.load_suite and bench.suite_overrides name it)."""
    try:
        name = (tomllib.loads(Path(suite_path).read_text()).get("suite") or {}).get("name") or Path(suite_path).stem
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, AttributeError):
        name = Path(suite_path).stem
    return Path("runs") / (f"{name}-random-weights" if random_weights else str(name))

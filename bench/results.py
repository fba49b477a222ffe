"""Result rows on disk: one JSON line per cell, appended durably, read back tolerant of a torn last line.

A row is written by `bench.core.types.Row.to_json` only; its schema is docs/results.schema.json
(validated in the tests against rows of every protocol). A results folder is written by one run at a
time (an advisory lock); a cell written twice (a rerun superseding a row, a duplicate) is read as its
last row.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from bench.core.types import Row
from bench.errors import UserError, article

RESULTS_FILE = "results.jsonl"
ROW_KEYS = ("defense", "authorized", "evaluated", "metrics")  # what every reader of a row needs
LOCK_FILE = ".lock"


def results_path(path: Path) -> Path:
    """Accept a run folder (existing or not) or a .jsonl results file."""
    path = Path(path)
    return path if path.suffix == ".jsonl" else path / RESULTS_FILE


def latest(rows: list[dict]) -> tuple[list[dict], int]:
    """One row per cell, the last written (a row superseded by a rerun, or a duplicate left by a crash or an
    old concurrent run, is dropped), and how many rows were dropped."""
    last = {r.get("cell"): i for i, r in enumerate(rows)}
    keep = [r for i, r in enumerate(rows) if r.get("cell") is None or last[r["cell"]] == i]
    return keep, len(rows) - len(keep)


def read_rows(path: Path, all_rows: bool = False, require: tuple[str, ...] = ROW_KEYS, *, typed: bool = False) -> list:
    """The complete rows, one per cell (the last written: see `latest`); `all_rows` keeps every line.
    A torn last line (killed mid-write) is ignored; a line that is not a result row (not a JSON object,
    or without one of the `require` keys, its metrics not a table, or not a `Row`: `Row.from_json`) is a
    one-line error. With `typed`, the rows as `bench.core.types.Row`s; else their JSON (as written)."""
    path = results_path(path)
    if not path.exists():
        raise UserError(f"results file {str(path)!r} does not exist; pass a run folder or its {RESULTS_FILE}")
    rows = []
    try:
        lines = path.read_text().splitlines()
    except UnicodeDecodeError:
        raise UserError(f"{path} is not a text file of JSON result rows") from None
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break
            raise UserError(f"{path}:{i + 1} is not a JSON result row; the file is damaged")
        if not isinstance(row, dict):
            raise UserError(f"{path}:{i + 1} is not a result row (a JSON object, got {article(type(row).__name__)}); "
                            "is this an authbench results.jsonl?")
        missing = [k for k in require if k not in row]
        if missing:
            raise UserError(f"{path}:{i + 1} is not a result row: it has no {missing[0]!r} key (a row has "
                            f"{', '.join(ROW_KEYS)}, ...); is this an authbench results.jsonl?")
        if "metrics" in require and not isinstance(row["metrics"], dict):
            raise UserError(f"{path}:{i + 1} is not a result row: its 'metrics' is {article(type(row['metrics']).__name__)}, "
                            "not a table of metric = value")
        try:
            parsed = Row.from_json(row)  # every read goes through the one (de)serialiser
        except (TypeError, ValueError, AttributeError) as exc:
            raise UserError(f"{path}:{i + 1} is not a result row ({type(exc).__name__}: {exc})") from None
        rows.append(parsed if typed else row)
    if all_rows:
        return rows
    return _latest_typed(rows) if typed else latest(rows)[0]


def _latest_typed(rows: list) -> list:
    """`latest` for typed rows: one per cell, the last written."""
    last = {r.cell: i for i, r in enumerate(rows)}
    return [r for i, r in enumerate(rows) if not r.cell or last[r.cell] == i]


def json_view(rows: list) -> list[dict]:
    """The JSON view of result rows (typed `Row`s, or rows already as JSON): what the pandas-heavy report code
    reads, built in this one place."""
    return [r.to_json() if hasattr(r, "to_json") else r for r in rows]


class ResultWriter:
    """Appends rows durably; repairs a torn tail left by a crash before appending. Holds an advisory lock
    on the folder (`<folder>/.lock`, released on close, exit or crash): a second run on the same folder
    is refused with one line naming the running one, instead of duplicating every row."""

    def __init__(self, path: Path):
        self.path = results_path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise UserError(f"results folder {str(self.path.parent)!r} cannot be made: a file is in the way") from None
        self._lock = self._acquire()
        self._repair_tail()

    def _acquire(self):
        where = self.path.parent / LOCK_FILE
        while True:
            lock = open(where, "a+")
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                lock.seek(0)
                holder = lock.read().strip() or "another process"
                lock.close()
                raise UserError(f"results folder {str(self.path.parent)!r} is in use by a running authbench ({holder}); "
                                "wait for it to finish, or pass another --out") from None
            try:  # the holder before us removed the file as we opened it: lock the file now at `where`
                same = os.path.samestat(os.fstat(lock.fileno()), os.stat(where))
            except FileNotFoundError:
                same = False
            if same:
                break
            lock.close()
        lock.seek(0)
        lock.truncate()
        lock.write(f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}")
        lock.flush()
        return lock

    def close(self) -> None:
        """Release the lock and remove the lock file (on every exit path: __exit__, __del__)."""
        if getattr(self, "_lock", None) is not None:
            try:  # removed while still held, so no other run can hold the file being removed
                (self.path.parent / LOCK_FILE).unlink()
            except FileNotFoundError:
                pass
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    def __enter__(self) -> "ResultWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        self.close()

    def _repair_tail(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            with open(self.path, "r+b") as f:
                f.truncate(keep)

    def rows(self) -> list[dict]:
        """Every row line as written (duplicates and superseded rows included)."""
        return read_rows(self.path, all_rows=True, require=("cell",)) if self.path.exists() else []

    def append(self, rows: list[dict]) -> None:
        if not rows:
            return
        text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)
        with open(self.path, "a") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

"""Every checked-in report and reference is fresh: measured from a committed tree at the current results
version (issue 24, item 5).

A report names the git revision its rows were measured on (the `Measured by authbench (... git `REV`)`
line of every page, the `"git"` field of every provenance sidecar, board and reference). This test reads
every such revision under `reports/` and `bench/leaderboards/` and fails when one

- names a dirty tree (`<sha>+dirty`): its numbers came from code that was never committed, so nobody can
  rebuild them; or
- names a commit at which `RESULTS_VERSION` (bench/core/types.py) differs from today's: its rows were
  measured with a results format or semantics the harness has since changed.

The fix is to regenerate the report with the command docs/regenerating.md gives, from a committed tree.
A report folder whose regeneration is under way may be listed in KNOWN_STALE, and only with a `STALE.md` in
it that says so to its readers; the test then checks that it really is stale (a fresh folder must leave the
list) and exempts only that folder.
The version check needs the repository's history; in a shallow or exported tree that lacks a named commit
it is skipped with the reason (the dirty check needs nothing and always runs).
"""
from __future__ import annotations

import functools
import re
import subprocess
from pathlib import Path

import pytest

from bench.core.types import RESULTS_VERSION

ROOT = Path(__file__).resolve().parents[1]
SCANNED = [ROOT / "reports", ROOT / "bench" / "leaderboards"]
SUFFIXES = {".json", ".md", ".csv", ".jsonl", ".html", ".txt"}
# `git `REV`` in a measured line; `"git": "REV"` in JSON (REV may list several revisions, comma-separated)
GIT_FIELDS = [re.compile(r"git `([^`]*)`"), re.compile(r'"git"\s*:\s*"([^"]*)"')]
SHA = re.compile(r"^[0-9a-f]{7,40}$")
VERSION_LINE = re.compile(r"^RESULTS_VERSION\s*=\s*(\d+)", re.M)
# where RESULTS_VERSION has lived; before it existed rows had no version (0)
VERSION_FILES = ["bench/core/types.py", "bench/types.py"]
# report folders known to be stale, each with a STALE.md telling its readers so and how it is being regenerated
KNOWN_STALE: dict[str, str] = {}


def named_revisions(text: str) -> list[str]:
    """Every git revision a report's text names (a field may list several, comma-separated)."""
    revs = []
    for pattern in GIT_FIELDS:
        for match in pattern.finditer(text):
            revs += [r.strip() for r in match.group(1).split(",") if r.strip()]
    return revs


def report_files() -> list[Path]:
    return sorted(p for base in SCANNED if base.exists() for p in base.rglob("*")
                  if p.is_file() and p.suffix in SUFFIXES)


def _git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)


@functools.lru_cache(maxsize=None)
def version_at(sha: str) -> int | None:
    """RESULTS_VERSION at commit `sha` (0 before it existed); None when the commit is not in this clone."""
    if _git("cat-file", "-e", f"{sha}^{{commit}}").returncode != 0:
        return None
    for path in VERSION_FILES:
        shown = _git("show", f"{sha}:{path}")
        if shown.returncode == 0:
            found = VERSION_LINE.search(shown.stdout)
            if found:
                return int(found.group(1))
    return 0


def _exempt(rel: str) -> bool:
    return any(rel == folder or rel.startswith(folder + "/") for folder in KNOWN_STALE)


def _revisions(exempt: bool = True) -> dict[str, list[str]]:
    by_rev: dict[str, list[str]] = {}
    for path in report_files():
        if exempt and _exempt(str(path.relative_to(ROOT))):
            continue
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        for rev in named_revisions(text):
            by_rev.setdefault(rev, []).append(str(path.relative_to(ROOT)))
    return by_rev


def _summary(by_rev: dict[str, list[str]]) -> str:
    return "; ".join(f"{rev} in {len(files)} file(s), e.g. {files[0]}" for rev, files in sorted(by_rev.items()))


def test_named_revisions_reads_both_forms():
    text = ('Measured by authbench (suite `x`, suite digest `d`, git `abc1234+dirty`); ...\n'
            '{"git": "0123456789abcdef0123456789abcdef01234567, fedcba9"}')
    assert named_revisions(text) == ["abc1234+dirty", "0123456789abcdef0123456789abcdef01234567", "fedcba9"]


def test_reports_scan_finds_revisions():
    """The scan is not vacuous: the checked-in reports name revisions."""
    assert len(_revisions()) >= 1


def test_no_report_names_a_dirty_tree():
    dirty = {rev: files for rev, files in _revisions().items() if rev.endswith("+dirty")}
    assert not dirty, ("reports measured on an uncommitted tree (regenerate them from a committed tree with "
                       "the commands of docs/regenerating.md): " + _summary(dirty))


def test_every_report_is_at_the_current_results_version():
    if _git("rev-parse", "--git-dir").returncode != 0:
        pytest.skip("not a git checkout: the results version of a named commit cannot be read")
    revs = {rev: files for rev, files in _revisions().items() if SHA.match(rev)}
    missing = [rev for rev in revs if version_at(rev) is None]
    if missing and len(missing) == len(revs):
        pytest.skip(f"none of the {len(revs)} named commits is in this clone (shallow?)")
    old = {rev: files for rev, files in revs.items()
           if version_at(rev) is not None and version_at(rev) != RESULTS_VERSION}
    assert not old, (f"reports measured at another RESULTS_VERSION than today's {RESULTS_VERSION} (regenerate "
                     "them with docs/regenerating.md): "
                     + "; ".join(f"{rev} (version {version_at(rev)}) in {len(files)} file(s), e.g. {files[0]}"
                                 for rev, files in sorted(old.items())))
    assert not missing, ("reports name commits that are not in this repository's history: "
                         + _summary({rev: revs[rev] for rev in missing}))


def test_stale_notices_and_the_exemption_list_agree():
    """An exemption is not a hiding place: a folder is exempt only while it tells its readers it is stale
    (STALE.md) and really is (a folder regenerated since must leave KNOWN_STALE and drop its notice); a notice
    left behind after a regeneration, or added without listing the folder, fails too."""
    notices = sorted(str(p.parent.relative_to(ROOT)) for p in (ROOT / "reports").rglob("STALE.md"))
    assert notices == sorted(KNOWN_STALE), f"STALE.md notices {notices} vs KNOWN_STALE {sorted(KNOWN_STALE)}"
    if KNOWN_STALE:
        revs = {rev for rev, files in _revisions(exempt=False).items() if any(_exempt(f) for f in files)}
        stale = {rev for rev in revs if rev.endswith("+dirty")
                 or (SHA.match(rev) and version_at(rev) not in (None, RESULTS_VERSION))}
        assert stale, f"{sorted(KNOWN_STALE)} fresh now: remove them from KNOWN_STALE"

"""User-facing errors: one line, no traceback, exit code 2."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Iterable


class UserError(Exception):
    """A mistake in the user's input (unknown key, bad file, bad shape)."""


class BadKeyword(UserError, ValueError):
    """A Python API keyword with a value it does not take (`keyword`: its name; `valid`: what it takes)."""

    def __init__(self, message: str, *, keyword: str, valid: str):
        super().__init__(message)
        self.keyword, self.valid = keyword, valid


class UnknownKeyword(BadKeyword, TypeError):
    """A keyword the Python API does not have."""


MAX_MESSAGE = 1200  # characters of one error line; longer ones keep their start and say how much is cut


def bounded(text: str, limit: int = MAX_MESSAGE) -> str:
    """One error line of at most `limit` characters (whitespace runs folded, the rest counted, not printed)."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else f"{text[:limit - 40]} ... (+{len(text) - limit + 40} characters)"


def script_main(work: Callable[[], Iterable], prefix: str = "error") -> int:
    """The exit code of a `python -m bench....` script whose `work()` returns the lines to print (e.g. the files it
    wrote): 0 after printing them, or 2 after printing a UserError as one line `<prefix>: <message>` on stderr
    (no traceback; nothing printed on stdout)."""
    try:
        lines = list(work())
    except UserError as exc:
        print(f"{prefix}: {bounded(str(exc))}", file=sys.stderr)
        return 2
    for line in lines:
        print(line)
    return 0


def show(value) -> str:
    """A value as an error message quotes it (repr, shortened)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def article(word: str) -> str:
    """'a defense', 'an attack'."""
    return f"{'an' if word[:1].lower() in 'aeiou' else 'a'} {word}"


def unknown(kind: str, value: str, choices: Iterable[str]) -> UserError:
    """Error for an unknown registry key, naming the valid choices."""
    listed = ", ".join(sorted(choices)) or "(none registered)"
    return UserError(f"unknown {kind} {value!r}; valid choices: {listed}")


def check_folder(path, what: str) -> None:
    """A folder the run will write (`what`: "--out", "--reports", "--cache-dir"): it, and every parent that
    exists, must be a folder; a regular file in the way is a one-line error before anything runs."""
    path = Path(path)
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                where = "is a file" if p == path else f"is under {str(p)!r}, which is a file"
                raise UserError(f"{what} {str(path)!r} {where}, not a folder; pass a folder path")
            return


def install_hint(extra: str) -> str:
    """The pip command that installs the optional extra `extra` and works wherever authbench came from (a
    checkout, an editable or a wheel install): its packages by name, as pyproject.toml's extra lists them
    (`pip install 'authbench[dp]'` would ask the package index for a package of that name instead)."""
    packages: list[str] = []
    try:
        from importlib.metadata import PackageNotFoundError, requires

        for req in requires("authbench") or []:
            spec, _, marker = req.partition(";")
            if f'extra == "{extra}"' in marker.replace("'", '"'):
                packages.append(spec.strip().replace(" ", ""))
    except PackageNotFoundError:
        pass
    if not packages:  # metadata not installed (running from a bare checkout): the extra from the checkout
        return f"pip install -e '.[{extra}]' (in the authbench checkout)"
    return "pip install " + " ".join(f"'{p}'" for p in packages) + f" (the '{extra}' extra)"

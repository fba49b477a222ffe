"""User-facing errors: one line, no traceback, exit code 2."""

from __future__ import annotations

from typing import Iterable


class UserError(Exception):
    """A mistake in the user's input (unknown key, bad file, bad shape)."""


def unknown(kind: str, value: str, choices: Iterable[str]) -> UserError:
    """Error for an unknown registry key, naming the valid choices."""
    listed = ", ".join(sorted(choices)) or "(none registered)"
    return UserError(f"unknown {kind} {value!r}; valid choices: {listed}")

"""One path-safety rule for every file the harness writes.

Names that come from data (a suite name in result rows or a reference, model and defense labels,
class names read from a labels CSV or CIFAR metadata, entry names) become path parts only through
`safe_part` (refuses anything that is not one plain file name) or `slug` (maps any name onto one);
`under(root, *parts)` joins them and checks that the resolved result still lies under `root`, the
folder the user gave, so no name and no symbolic link inside it carries a write elsewhere.
`output_file` and `output_folder` check, before any work, that a path the user gave can be written:
no regular file in the way of a folder, no folder where a file goes.
"""

from __future__ import annotations

import re
from pathlib import Path

from bench.errors import UserError, show

PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=@,:-]*")  # ":": a plugin's module:Class names boards
MAX_PART = 200  # bytes of one name; file systems allow 255


def safe_part(name, what: str = "name") -> str:
    """`name` when it is one plain path part (letters, digits and . _ + = @ , : -, not starting with a dot or a
    dash, at most MAX_PART characters); else a one-line UserError naming `what` and the value."""
    if not isinstance(name, str) or not PLAIN.fullmatch(name) or len(name.encode()) > MAX_PART:
        raise UserError(f"{what} {show(name)} cannot name a file or folder; valid: letters, digits and . _ + = @ , : - "
                        f"(not starting with '.' or '-', at most {MAX_PART} characters), no '/' or '..'")
    return name


def slug(name, fallback: str = "item") -> str:
    """A plain path part made from any name: runs of other characters become '-' (the result passes safe_part)."""
    text = re.sub(r"[^A-Za-z0-9._+=@,-]+", "-", str(name)).lstrip(".-")[:MAX_PART].rstrip(".-")
    return text or fallback


def under(root, *parts: str, what: str = "name") -> Path:
    """root / parts, each part a safe_part, resolved and checked to lie under the resolved root."""
    root = Path(root)
    path = root.joinpath(*(safe_part(p, what) for p in parts))
    base, target = root.resolve(), path.resolve()
    if target != base and base not in target.parents:
        raise UserError(f"{str(path)!r} resolves to {str(target)!r}, outside {str(root)!r} (a symbolic link?); "
                        f"write only under the folder given")
    return path


def inside(root, path) -> Path:
    """`path` (already built under `root`), checked to resolve under `root`."""
    base, target = Path(root).resolve(), Path(path).resolve()
    if target != base and base not in target.parents:
        raise UserError(f"{str(path)!r} resolves to {str(target)!r}, outside {str(root)!r}; write only under the "
                        "folder given")
    return Path(path)


def output_folder(path, what: str) -> Path:
    """A folder the command will write into: it, and every parent that exists, must be a folder."""
    path = Path(path)
    for p in (path, *path.parents):
        if p.exists() or p.is_symlink():
            if not p.is_dir():
                where = "is a file" if p == path else f"is under {str(p)!r}, which is a file"
                raise UserError(f"{what} {str(path)!r} {where}, not a folder; pass a folder path")
            break
    return path


def output_file(path, what: str) -> Path:
    """A file the command will write: not an existing folder, and its parents folders (not files)."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{what} {str(path)!r} is a folder; pass a file path, e.g. {str(path / 'out.json')!r}")
    for p in path.parents:
        if p.exists() or p.is_symlink():
            if not p.is_dir():
                raise UserError(f"{what} {str(path)!r} is under {str(p)!r}, which is a file, not a folder; "
                                "pass a path in a folder")
            break
    return path

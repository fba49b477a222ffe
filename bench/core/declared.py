"""What each protocol declared, readable from every layer (reports, check, rank, the suite schema).

A protocol class states on itself what is protocol-specific (bench.protocols.base.Protocol: its entry
dataclass, run filters, boards and ranking, `check` cells, summary, owned `[data]` keys, whether it
reads clean rows). Defining the class records it here (`declare`), so the layers below the protocols
ask "which protocols are ranked?" or "what are the check metrics?" without naming one protocol and
without importing the protocols package. A row's protocol named as 'module:Class' (a third-party
protocol) is imported on first use.
"""

from __future__ import annotations

from bench.core.entry import declare_board, declare_data, declare_legacy
from bench.errors import UserError
from bench.registry import Registry

GROUP = "authbench.protocols"  # the entry-point group third-party protocols register under
# the protocol registry: built-ins register themselves (bench.protocols.*: @PROTOCOLS.register), third-party ones are
# `authbench.protocols` entry points or 'package.module:Class' paths (bench.registry.Registry)
# (the built-in modules are imported on the first lookup: `modules`)
PROTOCOLS: Registry = Registry("protocol", GROUP, modules=("bench.protocols",))

DECLARED: dict[str, type] = {}  # protocol name -> its class, in definition order


def declare(cls: type) -> None:
    """Record a protocol class's declarations (called when the class is defined)."""
    DECLARED[cls.name] = cls
    for board in cls.boards:
        declare_board(board)
    if cls.owns_dataset:
        declare_data(cls.owns_dataset, cls.data_keys)
    declare_legacy(cls.claims_legacy_row, default=cls.name if cls.primary else None)


def declared(name: str) -> type | None:
    """The protocol class called `name`: one defined so far, else an installed `authbench.protocols` entry point or
    a 'module:Class' path, loaded now; None when none is found (a row of a protocol not installed here)."""
    if name in DECLARED:
        return DECLARED[name]
    if not name:
        return None
    PROTOCOLS.names()  # the built-ins, defined (and so declared) on first use
    try:
        found = PROTOCOLS.get(str(name))
    except UserError:
        return None
    if isinstance(found, type) and hasattr(found, "check_metrics"):
        DECLARED.setdefault(name, found)
        return found
    return None


def protocols(load: bool = True) -> list[type]:
    """Every protocol declared: the built-ins (imported now unless `load` is False) and the ones defined so far."""
    if load:
        PROTOCOLS.names()
    return list(DECLARED.values())


def ranked(name: str) -> bool:
    """Whether rows of protocol `name` are on the leaderboard (leaderboard.json, `check`'s "leaderboard" board)."""
    cls = declared(name)
    return bool(cls is not None and cls.ranked)


def check_boards(load: bool = True) -> dict[str, dict[str, str]]:
    """check board -> metric -> direction, over every protocol declared (`protocols(load)`)."""
    out: dict[str, dict[str, str]] = {}
    for cls in protocols(load):
        if cls.check_board:
            out.setdefault(cls.check_board, {}).update(cls.check_metrics)
    return out


def check_metrics(load: bool = True) -> dict[str, str]:
    """Every metric `check` compares (its tolerance keys): metric -> direction."""
    out: dict[str, str] = {}
    for metrics in check_boards(load).values():
        out.update(metrics)
    return out


def require(name: str) -> type:
    cls = declared(name)
    if cls is None:
        raise UserError(f"unknown protocol {name!r}; valid: {', '.join(DECLARED)} or 'package.module:Class'")
    return cls

"""glibc malloc thresholds for long numeric runs, set once per process at start-up.

glibc's default mmap threshold is dynamic: every freed mmapped block raises it, and large batch
buffers then move between mmap and the heap; with the default trim threshold the heap top is given
back and faulted in again batch after batch. On this project's runs that shows as 15-35% system
time and about ten times the minor page faults of fixed thresholds. `tune()` fixes them:

- M_MMAP_THRESHOLD 32 MiB (glibc's maximum on 64-bit; a fixed value also turns the dynamic rule off),
- M_TRIM_THRESHOLD 1 GiB (freed memory at the heap top is kept for the next batch),
- M_TOP_PAD 64 MiB (the heap grows in large steps).

The cost is resident memory kept after a peak (tens of MB in the benchmarks), not a higher peak.
Elsewhere than glibc (macOS, musl, Windows) it does nothing. The switch: `AUTHBENCH_MALLOC=default`
in the environment (or `authbench --malloc default ...`) leaves glibc's defaults; it is read when
`tune()` first runs and passes to remote workers with the other AUTHBENCH_* settings.
Measured in benchmarks/bench_allocator.py.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from dataclasses import dataclass
from bench.errors import UserError
from bench.errors import UserError

from bench.errors import UserError  # light: the bench package loads its API on first use

ENV = "AUTHBENCH_MALLOC"
MODES = ("tuned", "default")
# mallopt parameters (glibc malloc.h)
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
SETTINGS = ((M_MMAP_THRESHOLD, 32 << 20), (M_TRIM_THRESHOLD, 1 << 30), (M_TOP_PAD, 64 << 20))


@dataclass(frozen=True, kw_only=True)
class AllocatorState:
    mode: str  # "tuned" or "default" (what was asked)
    applied: bool  # whether mallopt accepted every setting (False: default mode, or not glibc)
    reason: str = ""


_STATE: list[AllocatorState] = []


def mode_from_env() -> str:
    value = (os.environ.get(ENV) or "tuned").strip().lower()
    if value not in MODES:
        raise UserError(f"{ENV}={value!r} is not a malloc mode; valid choices: {', '.join(MODES)}")
    return value


def _glibc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 - raises AttributeError on musl
        return libc
    except (OSError, AttributeError):
        return None


def tune() -> AllocatorState:
    """Set the thresholds once per process (unless AUTHBENCH_MALLOC=default); later calls return the state."""
    if _STATE:
        return _STATE[0]
    mode = mode_from_env()
    if mode == "default":
        state = AllocatorState(mode=mode, applied=False, reason=f"{ENV}=default")
    else:
        libc = _glibc()
        if libc is None:
            state = AllocatorState(mode=mode, applied=False, reason="not glibc")
        else:
            libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
            ok = all(libc.mallopt(param, value) == 1 for param, value in SETTINGS)
            state = AllocatorState(mode=mode, applied=ok, reason="" if ok else "mallopt refused a setting")
    _STATE.append(state)
    return state

"""bench.allocator: glibc malloc thresholds at start-up, and the switch that leaves glibc's defaults."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.errors import UserError

ROOT = Path(__file__).resolve().parent.parent

# In a fresh process: set up as an entry point does, then malloc 4 MiB and report whether glibc served it
# with mmap (mallinfo2's hblks counts mmapped blocks): above the default 128 KiB threshold it does, below
# the tuned 32 MiB it does not.
PROBE = r"""
import ctypes, importlib.util, sys
entry = sys.argv[1]
if entry == "cli":
    from bench import allocator
    from bench.cli import main
    main(sys.argv[2:])  # a command that does nothing heavy
else:  # the module alone (importing the bench package, torch included, takes long on a loaded machine)
    spec = importlib.util.spec_from_file_location("allocator", sys.argv[2])
    allocator = sys.modules["allocator"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(allocator)
    allocator.tune()
state = allocator.tune()
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                               "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
before = libc.mallinfo2().hblks
p = libc.malloc(4 << 20)
mmapped = libc.mallinfo2().hblks - before
libc.free(p)
print(state.mode, state.applied, mmapped)
"""


def _glibc_with_mallinfo2() -> bool:
    try:
        return hasattr(ctypes.CDLL("libc.so.6"), "mallinfo2")
    except OSError:
        return False


needs_glibc = pytest.mark.skipif(not _glibc_with_mallinfo2(), reason="glibc >= 2.33 (mallinfo2) only")


def _probe(*args, env_value: str | None = None) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "AUTHBENCH_MALLOC"}
    env["PYTHONPATH"] = str(ROOT)
    if env_value is not None:
        env["AUTHBENCH_MALLOC"] = env_value
    out = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, env=env, cwd=ROOT,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1].split()


@needs_glibc
def test_tuned_thresholds_keep_a_4_mib_block_off_mmap():
    assert _probe("api", str(ROOT / "bench" / "allocator.py")) == ["tuned", "True", "0"]


@needs_glibc
def test_the_switch_leaves_glibc_defaults():
    assert _probe("api", str(ROOT / "bench" / "allocator.py"), env_value="default") == ["default", "False", "1"]


@needs_glibc
def test_the_cli_flag_turns_it_off():
    assert _probe("cli", "--malloc", "default", "list", "datasets") == ["default", "False", "1"]


def test_a_bad_mode_is_a_one_line_user_error(monkeypatch):
    from bench import allocator

    monkeypatch.setenv("AUTHBENCH_MALLOC", "fast")
    with pytest.raises(UserError, match="valid choices: tuned, default"):
        allocator.mode_from_env()

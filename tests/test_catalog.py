"""`authbench list defenses|attacks|models` read the plugins' metadata from the source (bench.core.catalog),
without importing torch, and say exactly what the imported registries say."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.core import catalog

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("kind", ["defenses", "attacks", "models"])
def test_read_from_the_source_as_the_registry_describes_them(kind):
    from bench.attacks import ATTACKS
    from bench.defenses import DEFENSES
    from bench.models.sources import list_models

    imported = {"defenses": DEFENSES.describe, "attacks": ATTACKS.describe, "models": list_models}[kind]()
    static = catalog.static_describe(kind)
    assert static is not None, f"{kind}: the static reading gave up"
    assert list(static.items()) == list(imported.items())  # the same lines, in the same order


@pytest.mark.parametrize("kind", ["defenses", "attacks", "models"])
def test_list_imports_no_torch(kind):
    code = ("import sys\nfrom bench.cli import main\nassert main(['list', %r]) == 0\n"
            "assert 'torch' not in sys.modules, 'torch imported'\nprint('ok')" % kind)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-1000:]
    assert len(proc.stdout.strip().splitlines()) > 5


FAKE = '''
from bench.fake_base import Base, REG


class Mid(Base):
    description = "from the middle " "class"


@REG.register
class A(Mid):
    name = "a"


def register_both(cls):
    REG.register(cls)
    return cls


@register_both
class B(Base):
    name = "b"
    description = """two
       lines"""


class C(Base):
    name = "c"


REG.register(C)
'''


def _fake(tmp_path, monkeypatch, extra: str = "") -> None:
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "__init__.py").write_text("")
    (tmp_path / "bench" / "fake_base.py").write_text('REG = Registry("fake", "authbench.fake-test-group", '
                                                      'modules=("bench.fake",))\n\nclass Base:\n'
                                                      '    description = "base"\n')
    (tmp_path / "bench" / "fake.py").write_text(FAKE + extra)
    monkeypatch.setattr(catalog, "ROOT", tmp_path)
    monkeypatch.setitem(catalog.KINDS, "fake", ("bench.fake_base", "REG"))


def test_what_the_source_reading_follows(tmp_path, monkeypatch):
    _fake(tmp_path, monkeypatch)
    assert catalog.static_describe("fake") == {"a": "from the middle class", "b": "two lines", "c": "base"}


@pytest.mark.parametrize("extra", [
    '\n@REG.register\nclass D(Base):\n    name = "d"\n    description = "x" + "y"\n',  # not a literal
    '\nfor cls in (A, B):\n    REG.register(cls)\n',  # a registration the reading cannot follow
    '\n@REG.register\nclass E(Unknown):\n    name = "e"\n',  # a base it cannot find
])
def test_what_it_cannot_read_falls_back_to_importing(tmp_path, monkeypatch, extra):
    _fake(tmp_path, monkeypatch, extra)
    assert catalog.static_describe("fake") is None

"""The worked examples of docs/adding-an-attack.md and docs/adding-an-executor.md, run as written: the
Python module and the TOML of each page are taken from the page itself, so the docs cannot drift."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from bench.cli import main
from bench.results import read_rows
from conftest import write_suite

DOCS = Path(__file__).resolve().parent.parent / "docs"


def blocks(page: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", (DOCS / page).read_text(), re.S)


def one_line_error(capsys, argv) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.fixture
def importable(tmp_path, monkeypatch):
    """A folder on sys.path (and PYTHONPATH, for worker processes) where a page's module is written."""
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}:{Path(__file__).resolve().parent.parent}")
    yield tmp_path
    for name in ("my_attacks", "my_executors"):
        sys.modules.pop(name, None)


def test_adding_an_attack_runs_as_written(importable, capsys):
    (module,) = blocks("adding-an-attack.md", "python")
    suite_text = blocks("adding-an-attack.md", "toml")[0]
    (importable / "my_attacks.py").write_text(module)
    suite = importable / "posterize-demo.toml"
    suite.write_text(suite_text)
    out = importable / "runs"
    assert main(["run", str(suite), "--out", str(out), "--reports", str(importable / "reports"), "--no-progress",
                 "--threads", "1"]) == 0
    rows = read_rows(out)
    attacked = [r for r in rows if r["attack"] == "my_attacks:Posterize(bits=2)"]
    plain = [r for r in rows if r["attack"] == "none" and r["defense"] == "noise"]
    assert attacked and len(attacked) == len(plain)
    assert any(a["metrics"]["top1"] != p["metrics"]["top1"] for a, p in zip(
        sorted(attacked, key=lambda r: (r["authorized"], r["evaluated"])),
        sorted(plain, key=lambda r: (r["authorized"], r["evaluated"]))))  # the attack changes what models see
    # the page's table of errors, each one line and exit 2, before anything runs
    for given, expected in [('bitz = 2', "attack 'posterize' has no parameter 'bitz'; valid parameters: bits"),
                            ('bits = 9', "attack 'posterize' parameter bits = 9 is not valid: it must be a whole "
                                         "number in [1, 8] (default 4)")]:
        suite.write_text(suite_text.replace("bits = 2", given))
        assert expected in one_line_error(capsys, ["run", str(suite), "--out", str(importable / "o"), "--plan"])
    suite.write_text(suite_text.replace("Posterize", "Posterise"))
    err = one_line_error(capsys, ["run", str(suite), "--out", str(importable / "o"), "--plan"])
    assert "cannot load attack 'my_attacks:Posterise': module 'my_attacks' has no 'Posterise'" in err


def test_adding_an_executor_runs_as_written(importable, capsys):
    (module,) = blocks("adding-an-executor.md", "python")
    section = next(b for b in blocks("adding-an-executor.md", "toml") if "[executor]" in b)
    (importable / "my_executors.py").write_text(module)
    suite = write_suite(importable / "s.toml", psnr=(20,), release=("float",), defenses=("noise",))
    local, pool = importable / "local", importable / "pool"
    assert main(["run", str(suite), "--out", str(local), "--reports", str(importable / "r1"), "--no-progress",
                 "--threads", "1"]) == 0
    # the page's command line: the executor by module:Class, its option as a generated flag
    argv = ["run", str(suite), "--out", str(pool), "--reports", str(importable / "r2"), "--no-progress", "--threads", "1",
            "--executor", "my_executors:PoolExecutor", "--max-workers", "2"]
    assert main(argv) == 0

    def cells(path):
        return sorted((r["defense"], r["authorized"], r["evaluated"], r["role"], r["metrics"]["top1"], r["n"])
                      for r in read_rows(path))

    assert cells(pool) == cells(local) and len(cells(local)) > 2
    # the page's [executor] section: the schema takes the declared key, the plan names the executor
    with_section = write_suite(importable / "t.toml", psnr=(20,), release=("float",), defenses=("noise",),
                               extra="\n" + section)
    assert main(["run", str(with_section), "--out", str(importable / "t"), "--plan"]) == 0
    assert "executor pool --max-workers 2 --start-method spawn" in capsys.readouterr().out
    # the page's table of errors
    assert "--max-workers must be a whole number >= 1, got 0" in one_line_error(
        capsys, [*argv[:-1], "0", "--plan"])
    with_section.write_text(with_section.read_text().replace("max_workers = 2", 'max_workers = "two"'))
    assert "[executor] max_workers = 'two' is not valid: it must be a whole number >= 1" in one_line_error(
        capsys, ["run", str(with_section), "--plan"])
    with_section.write_text(with_section.read_text().replace('max_workers = "two"', "max_worker = 2"))
    assert "unknown key 'max_worker' in [executor]; valid: address," in one_line_error(
        capsys, ["run", str(with_section), "--plan"])

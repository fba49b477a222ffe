"""The command line: listing, user errors (one line, exit 2, no traceback), check, cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.cli import main
from conftest import write_suite

ROOT = Path(__file__).resolve().parent.parent


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("what, expected", [
    ("defenses", ["ne-patch", "ne-operator", "noise"]),
    ("models", ["zoo:mlp-s0", "zoo:vit-s1", "timm:<name>"]),
    ("suites", ["digits"]),
    ("attacks", ["none", "jpeg"]),
    ("datasets", ["digits"]),
])
def test_list(capsys, what, expected):
    code, out, _ = run_cli(capsys, "list", what)
    assert code == 0
    names = [line.split()[0] for line in out.splitlines()]
    assert all(e in names for e in expected)
    assert all(len(line.split(maxsplit=1)) == 2 for line in out.splitlines())  # every entry has a description


def _bad_suite(tmp_path, body: str) -> str:
    path = tmp_path / "bad.toml"
    path.write_text(body)
    return str(path)


@pytest.mark.parametrize("argv, needle", [
    (["run", "no-such-suite"], "unknown suite 'no-such-suite'; valid choices: cifar10, "),
    (["run", "missing.toml"], "does not exist"),
    (["list", "widgets"], "invalid choice"),
    (["report", "nowhere/results.jsonl"], "does not exist"),
    (["check", "nowhere", "--against", "nothing.json"], "does not exist"),
])
def test_user_errors_are_one_line(capsys, argv, needle):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    assert needle in err
    assert err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("body, needle", [
    ("[suite\nname=1", "malformed TOML"),
    ('[data]\ndataset="digits"\n[models]\nauthorized=["zoo:mlp-s0"]\n[[defenses]]\nname="nee"\n', "unknown defense 'nee'; valid choices:"),
    ('[data]\ndataset="digits"\n[models]\nauthorized=["zoo:nope-s0"]\n[[defenses]]\nname="noise"\n', "unknown zoo model 'nope-s0'"),
    ('[data]\ndataset="digits"\n[models]\nauthorized=["zoo:mlp-s0"]\n[[defenses]]\nname="noise"\nrelease=["png"]\n', "unknown release 'png'"),
    ('[data]\ndataset="svhn"\n[models]\nauthorized=["zoo:mlp-s0"]\n[[defenses]]\nname="noise"\n', "unknown dataset 'svhn'"),
    ('[data]\ndataset="digits"\n[models]\nauthorized=["timm:resnet18"]\n[[defenses]]\nname="noise"\n', "expects inputs of shape (3, 224, 224)"),
    ('[data]\ndataset="digits"\n[modles]\n', "unknown section 'modles'"),
    ('[data]\ndataset="digits"\n[models]\nauthorized=["zoo:mlp-s0"]\n[[defenses]]\nname="ne-patch"\nparams={tua=1}\n', "has no parameter 'tua'"),
])
def test_bad_suites_are_user_errors(capsys, tmp_path, body, needle):
    code, _, err = run_cli(capsys, "run", _bad_suite(tmp_path, body), "--out", str(tmp_path / "o"), "--no-progress")
    assert code == 2, err
    assert needle in err and err.count("\n") == 1


def test_restriction_to_unknown_model_names_choices(capsys, tmp_path):
    code, _, err = run_cli(capsys, "run", str(write_suite(tmp_path / "s.toml")), "--model", "resnet", "--no-progress")
    assert code == 2 and "valid choices: mlp-s0, mlp-s1, vit-s0" in err


def test_no_traceback_from_the_console_entry(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "bench", "run", "no-such-suite"], env=env, capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.startswith("authbench: error: unknown suite") and "Traceback" not in proc.stderr


def test_run_report_check_cycle(capsys, tmp_path):
    suite = write_suite(tmp_path / "s.toml", psnr=(20,), release=("float",))
    out, rep = tmp_path / "run", tmp_path / "rep"
    code, stdout, _ = run_cli(capsys, "run", str(suite), "--out", str(out), "--reports", str(rep), "--no-progress")
    assert code == 0 and "auth_gap" in stdout and "forward passes:" in stdout
    for name in ("leaderboard.md", "leaderboard.json", "table1_cross_model.md", "table2_same_arch.md", "fig1_psnr_float.png",
                 "site/index.html", "site/boards.html"):
        assert (rep / name).stat().st_size > 0  # every run writes the static site too
    assert f"site: {rep / 'site' / 'index.html'}" in stdout

    code, stdout, _ = run_cli(capsys, "run", str(suite), "--out", str(out), "--reports", str(rep), "--no-progress")
    assert code == 0 and "forward passes: 0" in stdout and "0 run" in stdout

    (rep / "leaderboard.md").unlink()
    code, stdout, _ = run_cli(capsys, "report", str(out), "--out", str(rep))
    assert code == 0 and (rep / "leaderboard.md").exists()

    code, stdout, _ = run_cli(capsys, "check", str(out), "--against", str(rep / "leaderboard.json"))
    assert code == 0, stdout

    reference = json.loads((rep / "leaderboard.json").read_text())
    planted = next(r for r in reference["rows"] if r["defense"] == "ne-patch")
    planted["authorized_top1"] += 5.0  # the reference was better: fresh results now regress
    (tmp_path / "ref.json").write_text(json.dumps(reference))
    code, stdout, _ = run_cli(capsys, "check", str(out), "--against", str(tmp_path / "ref.json"))
    assert code == 1
    assert planted["key"] in stdout and "authorized_top1" in stdout

    code, stdout, _ = run_cli(capsys, "check", str(out), "--against", str(tmp_path / "ref.json"), "--tolerance", "authorized_top1=6")
    assert code == 0, stdout

    code, _, err = run_cli(capsys, "check", str(out), "--against", str(tmp_path / "ref.json"), "--tolerance", "top1")
    assert code == 2 and "METRIC=POINTS" in err


def test_cache_info_and_clear(capsys, tmp_path):
    from bench.core.cache import ArrayCache

    c = ArrayCache(tmp_path, "forward")
    c.put(c.key("m", {}), {"x": [1.0]})
    code, out, _ = run_cli(capsys, "cache", "info", "--cache-dir", str(tmp_path))
    assert code == 0 and "forward" in out and "1 entries" in out
    code, out, _ = run_cli(capsys, "cache", "clear", "--cache-dir", str(tmp_path), "--namespace", "forward")
    assert code == 0 and not (tmp_path / "forward").exists()


def test_third_party_defense_by_module_path_is_ranked(capsys, tmp_path):
    suite = write_suite(tmp_path / "s.toml", psnr=(0,), release=("float",), defenses=("plugin_example:MyRecoding", "noise"))
    code, stdout, err = run_cli(capsys, "run", str(suite), "--out", str(tmp_path / "o"), "--reports", str(tmp_path / "r"), "--no-progress")
    assert code == 0, err
    board = json.loads((tmp_path / "r" / "leaderboard.json").read_text())
    assert {r["defense"] for r in board["rows"]} == {"plugin_example:MyRecoding", "noise"}
    assert all(r["authorized_top1"] is not None for r in board["rows"])

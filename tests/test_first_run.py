"""The first run a newcomer makes (issue 21): the quick default suite, threads, what a run prints, where it
writes, the lock, and the command line's hygiene (--version, usage, one error prefix, no abbreviations, no
torch import for --help / list suites, offline by default, install hints)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.cli import main, needs_hub
from bench.core.context import EvalContext, RunOptions, default_threads
from bench.errors import UserError, install_hint
from bench.results import LOCK_FILE, ResultWriter
from bench.suite import DEFAULT_SUITE, find_suite, load_suite
from tests.conftest import write_suite

ROOT = Path(__file__).resolve().parent.parent


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# -- the default suite ----------------------------------------------------------------------------

def test_the_default_suite_is_the_quick_one_and_the_reference_grid_keeps_its_name():
    assert DEFAULT_SUITE == "digits-quick" and find_suite(None).name == "digits-quick.toml"
    quick, full = load_suite(None), load_suite("digits")
    assert quick.name == "digits-quick" and full.name == "digits"  # full grid: its reference's cell keys unchanged
    assert set(quick.standard_attacks) == {"input", "model", "baselines"}
    assert (ROOT / "reports" / "leaderboards" / "digits-quick.json").is_file()  # `check` gates the default too


# -- threads --------------------------------------------------------------------------------------

def test_one_thread_per_process_on_cpu_by_default():
    assert default_threads(None, None, "cpu") == (1, default_threads(None, None, "cpu")[1])
    assert default_threads(3, 2, "cpu")[0] == 3 and default_threads(None, 2, "cpu")[0] == 2
    with pytest.raises(UserError, match="threads must be >= 1"):
        default_threads(0, None, "cpu")
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        ctx = EvalContext(load_suite(None), RunOptions(device="cpu"))
        assert torch.get_num_threads() == 1 and ctx.threads == 1 and "default" in ctx.threads_source
        ctx.restore_threads()
        assert torch.get_num_threads() == 2
        ctx = EvalContext(load_suite(None), RunOptions(device="cpu", threads=2))
        assert torch.get_num_threads() == 2 and ctx.threads_source == "--threads"
        ctx.restore_threads()
    finally:
        torch.set_num_threads(before)


# -- the lock -------------------------------------------------------------------------------------

def test_the_lock_file_goes_on_every_exit_path(tmp_path):
    with ResultWriter(tmp_path / "a"):
        assert (tmp_path / "a" / LOCK_FILE).exists()
        with pytest.raises(UserError, match="in use by a running authbench"):
            ResultWriter(tmp_path / "a")
    assert not (tmp_path / "a" / LOCK_FILE).exists()  # normal exit
    with pytest.raises(RuntimeError):
        with ResultWriter(tmp_path / "b"):
            raise RuntimeError("a job crashed")
    assert not (tmp_path / "b" / LOCK_FILE).exists()  # an exception
    writer = ResultWriter(tmp_path / "c")
    del writer  # dropped without close (interpreter exit path)
    assert not (tmp_path / "c" / LOCK_FILE).exists()
    with ResultWriter(tmp_path / "a"):  # and the folder can be locked again
        pass


# -- a run: header, the boards' top rows, where reports go ------------------------------------------

def test_a_run_prints_its_header_and_the_boards_and_writes_beside_its_results(capsys, tmp_path, monkeypatch):
    suite = write_suite(tmp_path / "s.toml", psnr=(-10,), release=("float",), extra="""
[standard_attacks]
input = ["cutout"]

[[defenses]]
name = "noise"
psnr = [-10]
release = ["float"]
attacks = ["cutout"]
""")
    monkeypatch.chdir(tmp_path)  # reports must not land in ./reports
    code, out, err = run_cli(capsys, "run", str(suite), "--out", "r")
    assert code == 0, err
    assert "authbench: suite mini:" in err and "1 torch thread(s) (one per process on CPU by default" in err
    lines = out.splitlines()
    head = next(i for i, l in enumerate(lines) if l.startswith("Input authorization"))
    assert lines[head + 1].split()[:4] == ["rank", "defense", "operating", "point"]
    assert "worst_auth_gap" in lines[head + 1] and "-10 dB float" in lines[head + 2]
    assert all(len(l) <= 100 for l in lines[head:head + 4])
    assert (tmp_path / "r" / "reports" / "boards.md").is_file() and not (tmp_path / "reports").exists()
    assert f"site: {Path('r') / 'reports' / 'site' / 'index.html'}" in out
    assert not (tmp_path / "r" / LOCK_FILE).exists()


# -- the command line -----------------------------------------------------------------------------

def test_version_usage_and_one_error_prefix(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.startswith("authbench 0.")
    code, _, err = run_cli(capsys)
    assert code == 2 and err.startswith("usage: authbench") and "run" in err
    code, _, err = run_cli(capsys, "run", "--thread", "1")  # no abbreviations: --thread is not --threads
    assert code == 2 and "--thread" in err and err.count("authbench: error:") == 1
    assert "error: authbench" not in err and err.count("\n") == 1
    code, _, err = run_cli(capsys, "list", "widgets")
    assert code == 2 and err.startswith("authbench: error: list: ") and "error: authbench" not in err


@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"], ["list", "suites"], ["--version"]])
def test_help_and_list_suites_import_no_torch(argv):
    code = ("import sys\nfrom bench.cli import main\ntry:\n    main(%r)\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'torch imported'\nprint('ok')" % (argv,))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-500:]


def test_offline_unless_a_model_needs_the_hub():
    assert not needs_hub(load_suite(None)) and not needs_hub(load_suite("digits"))
    assert needs_hub(load_suite("imagenet"))


def test_missing_extra_hint_names_installable_packages():
    hint = install_hint("dp")
    assert "authbench[" not in hint and ("opacus" in hint or "-e '.[dp]'" in hint)


def test_the_leaderboard_gap_has_its_own_name_and_old_references_still_read():
    from bench.reports.leaderboard import METRIC_DIRECTIONS
    from bench.reports.reference import RefCell, Tolerances

    assert "attacked_gap" in METRIC_DIRECTIONS and "auth_gap" not in METRIC_DIRECTIONS  # the boards' auth_gap only
    old = RefCell.from_json({"board": "leaderboard", "key": "k", "metric": "auth_gap", "direction": "higher",
                             "value": 1.0, "std": None, "n_trials": 1, "trained": False, "tolerance": 0.0})
    assert old.metric == "attacked_gap"
    assert Tolerances.from_check({"tolerance": {"auth_gap": 1.5}}).per_metric == {"attacked_gap": 1.5}


def test_the_shipped_boards_are_the_references_boards():
    import json

    for shipped in (ROOT / "bench" / "leaderboards").glob("*.json"):
        reference = json.loads((ROOT / "reports" / "leaderboards" / shipped.name).read_text())
        assert json.loads(shipped.read_text())["boards"] == reference["boards"], shipped.name


def test_trials_one_is_the_cheap_ranking_mode(tmp_path):
    from bench.api import engine_for

    suite = load_suite("digits")
    full, cheap = (engine_for(suite, out=tmp_path / n, trials=t, device="cpu") for n, t in (("a", None), ("b", 1)))
    keys = {j.key or j.cells for j in cheap.jobs}
    assert len(cheap.jobs) < len(full.jobs) and keys <= {j.key or j.cells for j in full.jobs}  # trial 0: same cells
    assert {j.trial for j in cheap.jobs} == {0} and max(j.trial for j in full.jobs) >= 2
    with pytest.raises(UserError, match="--trials must be >= 1"):
        engine_for(suite, out=tmp_path / "c", trials=0, device="cpu")


def test_rank_refuses_a_defense_it_cannot_import(tmp_path):
    import json

    from bench.reports.rank import rank_command
    from tests.test_boards import row

    rows = [row("a", e, 50.0, defense="nopkg.nomodule:Recoding", suite="digits-quick") for e in ("a", "b")]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(UserError, match=r"defense 'nopkg.nomodule:Recoding' of the results cannot be imported here"):
        rank_command(tmp_path)

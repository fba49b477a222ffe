"""The `domain` protocol (non-transferable learning, issue 23): plans, runs and resumes a tiny suite through
`authbench run`, rows round-trip, bad entries are one-line errors, the board's worst case is the attack that
helps the attacker most."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from bench.cli import main  # noqa: E402
from bench.core.types import Row  # noqa: E402
from bench.core.errors import UserError  # noqa: E402
from bench.ntl import attacks  # noqa: E402
from bench.protocols.domain import BOARD  # noqa: E402
from bench.core.results import read_rows  # noqa: E402
from conftest import validate_rows  # noqa: E402

TINY = """[suite]
name = "ntl-tiny"
seed = 0

[data]
dataset = "digits"
split = "test"
subset = 60

[models]
authorized = ["zoo:mlp-s0"]

[standard_attacks]
domain = [{{ name = "target-ft", epochs = 1 }}, {{ name = "shot", epochs = 1 }}]

[[defenses]]
name = "ntl"
params = {{ epochs = 1, batch = 128 }}
targets = ["contrast", "invert"]
archs = ["mlp"]
attacks = ["none", {{ name = "target-ft", epochs = 1 }}, {{ name = "shot", epochs = 1 }}]
{extra}"""


def _run(args, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_domain_protocol_plans_runs_resumes_and_reports(tmp_path, capsys):
    suite = tmp_path / "tiny.toml"
    suite.write_text(TINY.format(extra=""))
    out, rep = tmp_path / "run", tmp_path / "rep"
    base = ["--threads", "1", "--no-progress", "--cache-dir", tmp_path / "cache", "--out", out, "--reports", rep]
    code, text, err = _run(["run", suite, *base], capsys)
    assert code == 0, err
    rows = read_rows(out)
    mine = [r for r in rows if r["protocol"] == "domain"]
    assert len(mine) == 3 * 3  # attacks x domains (source + 2 targets)
    assert {(r["evaluated"], r["role"]) for r in mine} == {("source", "authorized"), ("contrast", "unauthorized"),
                                                            ("invert", "unauthorized")}
    assert {r["attack"] for r in mine} == {"none", "target-ft(epochs=1)", "shot(epochs=1)"}
    assert all(0 <= r["metrics"]["top1"] <= 100 and r["n"] == 60 and r["authorized"] == "mlp" for r in mine)
    validate_rows(rows)
    assert all(Row.from_json(r).to_json() == r for r in mine)
    assert "Non-transferable learning (authorized vs unauthorized domains) [ntl-tiny]" in text and "worst_auth_gap" in text

    boards = [b for b in json.loads((rep / "boards.json").read_text())["boards"] if b["key"]["protocol"] == "domain"]
    assert len(boards) == 1 and boards[0]["headline"] == "worst_auth_gap"
    values = boards[0]["rows"][0]["values"]  # one architecture: the headline is the smallest gap over the attacks
    assert values["worst_auth_gap"] == pytest.approx(min(
        values["auth_gap"], values["auth_gap[target-ft(epochs=1)]"], values["auth_gap[shot(epochs=1)]"]))
    assert values["auth_gap"] == pytest.approx(values["authorized_top1"] - values["unauthorized_worst"])
    assert "worst_auth_gap = mean over the architectures" in (rep / "boards.md").read_text()
    table = (rep / "domain.md").read_text()
    assert "| ntl | mlp | none |" in table and "contrast | invert" in table

    code, text, err = _run(["run", suite, *base], capsys)  # resumes: nothing trained or measured again
    assert code == 0 and "10 already done, 0 run" in text, text + err

    # `check` compares every domain cell's top-1 (a target read better is a regression): the run against itself
    # passes, a moved cell is named
    code, text, err = _run(["check", out, "--against", out / "results.jsonl"], capsys)
    assert code == 0 and "compared 9 cells: 0 regression(s)" in text, text + err
    moved = tmp_path / "moved.jsonl"
    moved.write_text("".join(json.dumps({**r, "metrics": {"top1": r["metrics"]["top1"] + 30}} if r["protocol"] == "domain"
                                        and r["evaluated"] == "invert" and r["attack"] == "none" else r) + "\n"
                             for r in rows))
    code, text, err = _run(["check", moved, "--against", out / "results.jsonl"], capsys)
    assert code == 1 and "REGRESSION" in text and "invert" in text, text + err

    # freeze and check in a fresh interpreter, where nothing imported the domain protocol before the suite (with its
    # [standard_attacks] domain) is parsed
    import os
    import subprocess
    ref = tmp_path / "ref.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    for argv in (["leaderboard", "freeze", str(out), "--out", str(ref)], ["check", str(out), "--against", str(ref)]):
        done = subprocess.run([sys.executable, "-m", "bench", *argv], capture_output=True, text=True, env=env, cwd=tmp_path,
                              timeout=300)
        assert done.returncode == 0, done.stderr
    assert "0 regression(s)" in done.stdout


def test_an_unread_entry_key_and_a_bad_attack_are_one_line_errors(tmp_path, capsys):
    suite = tmp_path / "bad.toml"
    suite.write_text(TINY.format(extra="psnr = [20]\n"))
    code, _, err = _run(["run", suite, "--out", tmp_path / "o", "--reports", tmp_path / "r"], capsys)
    assert code == 2 and "unknown key 'psnr'" in err and "targets" in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1
    suite.write_text(TINY.format(extra="").replace('attacks = ["none",', 'attacks = ["none", "jpeg",'))
    code, _, err = _run(["run", suite, "--out", tmp_path / "o", "--reports", tmp_path / "r"], capsys)
    assert code == 2 and "unknown attack 'jpeg' for the domain protocol" in err and "Traceback" not in err, err
    suite.write_text(TINY.format(extra="").replace('targets = ["contrast", "invert"]', 'targets = ["source"]'))
    code, _, err = _run(["run", suite, "--out", tmp_path / "o", "--reports", tmp_path / "r"], capsys)
    assert code == 2 and "also in targets" in err, err


def test_listed_and_attack_parameters_checked(capsys):
    code, text, _ = _run(["list", "protocols"], capsys)
    assert code == 0 and "domain" in text and "non-transferable learning" in text
    code, text, _ = _run(["list", "defenses"], capsys)
    assert code == 0 and "ntl" in text and "plain" in text and "ICLR 2022" in text
    with pytest.raises(UserError, match="unknown parameter 'ratio'"):
        attacks.parse({"name": "target-ft", "ratio": 0.1})
    with pytest.raises(UserError, match="fraction = 2"):
        attacks.parse({"name": "source-ft", "fraction": 2})


def _cell(attack, arch, domain, top1):
    return {"attack": attack, "authorized": arch, "evaluated": domain, "metrics": {"top1": top1},
            "role": "authorized" if domain == "source" else "unauthorized"}


def test_the_board_worst_case_is_the_attack_that_helps_the_attacker_most():
    cells = [_cell("none", "cnn", "source", 95), _cell("none", "cnn", "contrast", 10), _cell("none", "cnn", "invert", 12),
             _cell("ft", "cnn", "source", 90), _cell("ft", "cnn", "contrast", 60), _cell("ft", "cnn", "invert", 40),
             _cell("shot", "cnn", "source", 80), _cell("shot", "cnn", "contrast", 30), _cell("shot", "cnn", "invert", 20),
             _cell("none", "mlp", "source", 85), _cell("none", "mlp", "contrast", 15), _cell("none", "mlp", "invert", 5),
             _cell("ft", "mlp", "source", 80), _cell("ft", "mlp", "contrast", 25), _cell("ft", "mlp", "invert", 20),
             _cell("shot", "mlp", "source", 70), _cell("shot", "mlp", "contrast", 45), _cell("shot", "mlp", "invert", 5)]
    values, per_model, worst, missing = BOARD.score(cells, ("ft", "shot"))
    assert missing == () and values["authorized_top1"] == 90  # the released model's source top-1, mean over archs
    assert per_model["cnn"]["unauthorized_worst"] == {"none": 12, "ft": 60, "shot": 30}  # best target per attack
    assert per_model["cnn"]["worst_attack"] == "ft" and per_model["mlp"]["worst_attack"] == "shot"
    assert values["auth_gap"] == ((95 - 12) + (85 - 15)) / 2
    assert values["worst_auth_gap"] == ((95 - 60) + (85 - 45)) / 2  # each architecture's worst attack
    values, _, _, missing = BOARD.score([c for c in cells if c["attack"] != "shot"], ("ft", "shot"))
    assert missing and values["worst_auth_gap"] is None  # an unmeasured standard attack: no headline


def _one_attack(tmp_path, check: str = "") -> Path:
    suite = tmp_path / "tiny.toml"
    text = TINY.format(extra="").replace('attacks = ["none", {{ name = "target-ft", epochs = 1 }}, {{ name = "shot", epochs = 1 }}]'
                                         .replace("{{", "{").replace("}}", "}"), 'attacks = ["none"]')
    text = text.replace('domain = [{ name = "target-ft", epochs = 1 }, { name = "shot", epochs = 1 }]', "domain = []")
    suite.write_text(text.replace("[standard_attacks]", check + "[standard_attacks]"))
    return suite


def test_the_suites_check_trials_train_one_model_per_trial_and_trials_caps_them(tmp_path, capsys):
    suite = _one_attack(tmp_path, "[check]\ntrials = 2\n\n")
    base = ["--threads", "1", "--no-progress", "--cache-dir", tmp_path / "cache", "--reports", tmp_path / "rep"]
    code, _, err = _run(["run", suite, *base, "--out", tmp_path / "two"], capsys)
    assert code == 0, err
    rows = [r for r in read_rows(tmp_path / "two") if r["protocol"] == "domain"]
    assert sorted({r["trial"] for r in rows}) == [0, 1] and len(rows) == 2 * 3
    by_trial = {t: {r["evaluated"]: r["metrics"]["top1"] for r in rows if r["trial"] == t} for t in (0, 1)}
    assert by_trial[0] != by_trial[1]  # two models, trained with two seeds
    code, _, err = _run(["run", suite, *base, "--out", tmp_path / "one", "--trials", "1"], capsys)
    assert code == 0, err
    assert {r["trial"] for r in read_rows(tmp_path / "one") if r["protocol"] == "domain"} == {0}
    # check compares each cell's mean over the trials
    from bench.protocols.domain import DomainProtocol
    cells = {k: v for k, _, v, _ in DomainProtocol.check_cells(rows)}
    source = next(v for k, v in cells.items() if k.endswith("|source"))
    assert len(cells) == 3 and source == pytest.approx((by_trial[0]["source"] + by_trial[1]["source"]) / 2)


def test_training_and_attacks_run_on_the_runs_device(tmp_path, capsys, monkeypatch):
    from bench.engine.context import EvalContext
    moved = []
    original = EvalContext.to_device

    def spy(self, x):
        moved.append(tuple(x.shape))
        return original(self, x)

    monkeypatch.setattr(EvalContext, "to_device", spy)
    suite = _one_attack(tmp_path)
    code, _, err = _run(["run", suite, "--threads", "1", "--no-progress", "--device", "cpu", "--cache-dir",
                         tmp_path / "cache", "--out", tmp_path / "o", "--reports", tmp_path / "r"], capsys)
    assert code == 0, err
    # the training images of the source and the targets, and each domain's evaluated images, went through the
    # run's device placement
    assert any(len(s) == 4 for s in moved) and len(moved) >= 2 + 3

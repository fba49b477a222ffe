"""One owner per protocol (issue 22): a protocol declares everything protocol-specific, the engine owns every row.

- A third-party protocol (tests/calibration_protocol.py: a new scoring family, calibration of released
  probabilities) installed as an entry point plans, runs, resumes, renders a board, is ranked by `authbench rank`,
  compared by `authbench check` and listed by `authbench list protocols`, with no edit to bench/.
- For every built-in protocol, a [[defenses]] key it does not read is a one-line error (exit 2).
- Rows of every protocol are built by the engine, round-trip through Row.from_json and validate against the
  results schema, whose fields are the dataclasses' fields.
- `--device` reaches the rows' provenance and every training step (a fake device string; a CUDA run where there is one).
"""

from __future__ import annotations

import json
import sys
from dataclasses import MISSING, fields
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from bench.cli import main  # noqa: E402
from bench.core.types import Encoding, Provenance, Row  # noqa: E402
from bench.core.results import read_rows  # noqa: E402
from conftest import validate_rows  # noqa: E402

CALIBRATION = """[suite]
name = "calibration-digits"
seed = 0

[data]
dataset = "digits"
split = "test"
subset = 60

[models]
authorized = ["zoo:mlp-s0", "zoo:cnn-s0"]

[[defenses]]
name = "calibration_protocol:Softmax"
bins = 5
attacks = ["none", "blur"]

[[defenses]]
name = "calibration_protocol:Temperature"
bins = 5
attacks = ["none", "blur"]

[standard_attacks]
calibration = ["blur"]
"""


@pytest.fixture
def calibration_installed(monkeypatch):
    """The third-party protocol installed as its package would be: an `authbench.protocols` entry point."""
    import bench.core.registry as registry

    real = registry.entry_points
    point = EntryPoint(name="calibration", value="calibration_protocol:Calibration", group="authbench.protocols")
    monkeypatch.setattr(registry, "entry_points",
                        lambda group=None: [point] if group == "authbench.protocols" else real(group=group))


def _run(args, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_third_party_protocol_plans_runs_resumes_ranks_checks_and_is_listed(tmp_path, capsys, calibration_installed):
    suite = tmp_path / "calibration.toml"
    suite.write_text(CALIBRATION)
    out, rep, cache = tmp_path / "run", tmp_path / "rep", tmp_path / "cache"
    base = ["--threads", "1", "--no-progress", "--cache-dir", cache]
    code, text, err = _run(["run", suite, "--out", out, "--reports", rep, *base], capsys)
    assert code == 0, err
    rows = read_rows(out)
    mine = [r for r in rows if r["protocol"] == "calibration"]
    assert len(mine) == 2 * 2 * 2  # calibrators x attacks x models
    assert {r["role"] for r in mine} == {"scored"} and all(0 <= r["metrics"]["ece"] <= 1 for r in mine)
    validate_rows(rows)
    assert "calibration: 8 cells; worst ECE" in text  # its own summary line

    # resumes: a second run computes nothing
    code, text, err = _run(["run", suite, "--out", out, "--reports", rep, *base], capsys)
    assert code == 0 and "10 already done, 0 run" in text and "forward passes: 0" in text, text

    # renders its board, ranked by its own headline (lower worst-case ECE is better)
    boards = [b for b in json.loads((rep / "boards.json").read_text())["boards"] if b["key"]["protocol"] == "calibration"]
    assert len(boards) == 1 and boards[0]["headline"] == "worst_ece" and boards[0]["title"].startswith("Calibration")
    ranked = sorted(boards[0]["rows"], key=lambda r: r["rank"])
    assert [r["rank"] for r in ranked] == [1, 2]
    assert ranked[0]["values"]["worst_ece"] <= ranked[1]["values"]["worst_ece"]
    assert (rep / "calibration.md").is_file()
    assert "worst_ece = max over A in {none}" in (rep / "boards.md").read_text()  # its board says what it ranks by

    # `check`: the run against itself passes on its declared metric; a moved cell fails and is named
    code, text, err = _run(["check", out, "--against", out / "results.jsonl"], capsys)
    assert code == 0 and "compared 4 cells: 0 regression(s)" in text and "-> OK" in text, text + err
    moved = tmp_path / "moved.jsonl"
    lines = []
    for r in rows:
        if r["protocol"] == "calibration" and r["defense"].endswith("Temperature"):
            r = {**r, "metrics": {**r["metrics"], "ece": r["metrics"]["ece"] + 0.5}}
        lines.append(json.dumps(r))
    moved.write_text("\n".join(lines) + "\n")
    code, text, err = _run(["check", moved, "--against", out / "results.jsonl"], capsys)
    assert code == 1 and "REGRESSION" in text and "temperature" in text.lower() and " ece:" in text, text + err

    # `rank`: a new run of one calibrator placed on the reference board, marked NEW
    new = tmp_path / "new"
    code, text, err = _run(["run", suite, "--out", new, "--reports", tmp_path / "rep2", "--defense",
                            "calibration_protocol:Temperature", *base], capsys)
    assert code == 0, err
    code, text, err = _run(["rank", new, "--against", out / "results.jsonl", "--out", tmp_path / "ranked"], capsys)
    assert code == 0, err
    assert "Calibration of released probabilities" in text and "NEW" in text, text

    # listed
    code, text, err = _run(["list", "protocols"], capsys)
    assert code == 0 and "calibration" in text and "calibration of released probabilities" in text


BAD_KEYS = [
    # (suite, entry, extra key line, the protocol that does not read it)
    ("digits", 'name = "corelocker"', 'psnr = [20]', "model"),
    ("digits", 'name = "corelocker"', 'release = ["float"]', "model"),
    ("digits", 'name = "ipguard"', 'psnr_mode = "true"', "verify"),
    ("glue", 'name = "ne-text"\nrelease = ["embedding"]', 'attacks = ["crop"]', "glue"),
    ("glue", 'name = "ne-text"\nrelease = ["embedding"]', "trials = 3", "glue"),
    ("glue", 'name = "ne-text"\nrelease = ["embedding"]', 'models = ["bert"]', "glue"),
    ("glue", 'name = "corelocker"', 'release = ["embedding"]', "glue"),
    ("mmbench", 'name = "ne-vlm"', "psnr = [20]", "mmbench"),
    ("mmbench", 'name = "ne-vlm"', "trials = 2", "mmbench"),
]

SUITES = {
    "digits": '[data]\ndataset = "digits"\nsplit = "test"\nsubset = 24\n\n[models]\nauthorized = ["zoo:mlp-s0"]\n\n'
              '[suspects]\npositives = ["prune(0.3)"]\nnegatives = ["mlp"]\n',
    "glue": '[data]\ndataset = "glue"\ntasks = ["sst2"]\n\n[models]\nauthorized = [{ name = "bert", checkpoints = '
            '{ sst2 = "nowhere" } }]\n',
    "mmbench": '[data]\ndataset = "mmbench"\n\n[models]\nauthorized = [{ name = "vlm" }]\n',
}


@pytest.mark.parametrize("suite, entry, extra, protocol", BAD_KEYS, ids=[f"{p}-{x.split()[0]}" for *_, x, p in BAD_KEYS])
def test_an_entry_key_the_protocol_does_not_read_is_a_one_line_error(tmp_path, capsys, suite, entry, extra, protocol):
    path = tmp_path / "s.toml"
    path.write_text(f'[suite]\nname = "bad-key"\n\n{SUITES[suite]}\n[[defenses]]\n{entry}\n{extra}\n')
    code, out, err = _run(["run", path, "--plan", "--out", tmp_path / "out", "--no-progress"], capsys)
    key = extra.split()[0]
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert f"unknown key {key!r} in [[defenses]] #1; valid: " in err and f"(the keys the {protocol} protocol reads" in err, err
    assert not (tmp_path / "out" / "results.jsonl").exists()


def test_an_input_entry_key_no_protocol_declares_is_a_one_line_error(tmp_path, capsys):
    path = tmp_path / "s.toml"
    path.write_text(f'[suite]\nname = "bad-key"\n\n{SUITES["digits"]}\n[[defenses]]\nname = "noise"\nfrobnicate = 1\n')
    code, out, err = _run(["run", path, "--plan", "--out", tmp_path / "out"], capsys)
    assert code == 2 and err.count("\n") == 1 and "unknown key 'frobnicate' in [[defenses]] #1; valid: attacks" in err


def test_every_protocol_declares_its_entry_boards_check_and_data_keys():
    from bench.core.declared import check_boards
    from bench.core.entry import OWNED_DATA_KEYS
    from bench.protocols import PROTOCOLS

    classes = [PROTOCOLS.get(n) for n in ("input", "model", "verify", "glue", "mmbench", "train-on-data", "domain")]
    for cls in classes:
        assert "name" in cls.entry.keys() and cls.description, cls.name
    assert all(c.boards for c in classes if c.check_board)  # the checked protocols rank on boards they declare
    assert {"leaderboard", "fingerprint"} <= set(check_boards())
    assert set(OWNED_DATA_KEYS) >= {"glue", "mmbench"}
    from bench.core.metrics import BOARDS, CHECK_METRICS

    assert set(BOARDS) == {b for c in classes for b in c.boards}  # the static list the suite schema reads agrees
    assert CHECK_METRICS == {m: d for c in classes for m, d in c.check_metrics.items()}
    assert [c.name for c in classes if c.primary] == ["input"]


def test_nothing_outside_the_protocols_names_a_protocol():
    """No module outside bench/protocols/ names a built-in protocol: no "verify" / "glue" / "mmbench" literal, and
    no line that compares a protocol with "input" or "model". Exceptions, each not a protocol name or a defense
    naming its own protocol (its one declaration): listed."""
    import re

    allowed = {
        "bench/cli.py": "the zoo's `verify` action", "bench/kits/cli.py": "the kit command's `verify` action",
        "bench/text/glue.py": "a data identity key",
        "bench/vlm/mmbench.py": "VLMEvalKit's circular mode", "bench/defenses/__init__.py": "a comment",
        "bench/fingerprint/__init__.py": "a docstring",
        "bench/fingerprint/base.py": "FingerprintMethod.protocol, the defense naming its protocol",
        "bench/defenses/base.py": "InputDefense / ModelDefense.protocol, the defenses naming theirs",
        "bench/core/metrics.py": "BOARDS, the static board list: the GLUE protocol's board is named as it",
    }
    distinct = re.compile(r"[\"'](verify|glue|mmbench)[\"']")
    compared = re.compile(r"protocol.*[\"'](input|model)[\"']|[\"'](input|model)[\"'].*protocol")
    found = []
    for path in sorted((ROOT / "bench").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith("bench/protocols/") or rel in allowed:
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if distinct.search(line) or compared.search(line):
                found.append(f"{rel}:{i}: {line.strip()}")
    assert not found, "protocol names outside bench/protocols/:\n" + "\n".join(found)


def test_the_protocol_is_not_inferred_from_the_release_in_types():
    text = (ROOT / "bench" / "core" / "types.py").read_text()
    assert '"release"' not in text and "PROTOCOL_OF_RELEASE" not in text


def test_the_results_schema_is_the_dataclasses_fields():
    schema = json.loads((ROOT / "docs" / "results.schema.json").read_text())
    row_fields = {f.name for f in fields(Row)} - {"extra"}
    assert set(schema["required"]) == row_fields - {"extra"}
    assert row_fields <= set(schema["properties"])
    prov = schema["properties"]["provenance"]
    assert set(prov["properties"]) == {f.name for f in fields(Provenance)}
    assert set(prov["required"]) == {f.name for f in fields(Provenance) if f.default is MISSING}
    assert set(schema["properties"]["encoding"]["properties"]) == {f.name for f in fields(Encoding)}
    from bench.core.types import ROW_EXTRA_KEYS, Role

    assert set(ROW_EXTRA_KEYS) <= set(schema["properties"])  # every extra column the engine or a protocol writes
    assert [r.value for r in Role] == schema["properties"]["role"]["anyOf"][0]["enum"]


def test_device_reaches_provenance_and_every_training_step(tmp_path, monkeypatch):
    """A fake device string in provenance (the device the run used), and training steps on the run's device even
    where the old defaults would have picked CUDA."""
    import bench.core.provenance as provenance
    from bench.fingerprint import training
    from bench.models.adapter import on_device, run_device

    seen = []
    monkeypatch.setattr(provenance, "device", lambda where=None: seen.append(where) or f"fake-device:{where}")
    from conftest import make_engine, write_suite
    from bench.suite import load_suite

    suite = load_suite(str(write_suite(tmp_path / "s.toml")))
    summary = make_engine(suite, tmp_path / "out", device="cpu", psnr=[20.0], progress=False, threads=1).run()
    rows = read_rows(summary.results)
    assert rows and {r["provenance"]["device"] for r in rows} == {"fake-device:cpu"}

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the old defaults would now pick CUDA
    with on_device(torch.device("cpu")):
        assert run_device() == torch.device("cpu") and training.device() == torch.device("cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_cuda_run_records_the_gpu_and_trains_there(tmp_path):
    from conftest import make_engine, write_suite
    from bench.suite import load_suite

    suite = load_suite(str(write_suite(tmp_path / "s.toml")))
    summary = make_engine(suite, tmp_path / "out", device="cuda", psnr=[20.0], progress=False).run()
    rows = read_rows(summary.results)
    assert rows and all(r["provenance"]["device"].startswith("cuda:") for r in rows)
    cpu = make_engine(suite, tmp_path / "cpu", device="cpu", psnr=[20.0], progress=False).run()
    assert {r["cell"] for r in read_rows(cpu.results)} == {r["cell"] for r in rows}


def test_every_protocols_rows_round_trip_through_row_from_json(tmp_path):
    """Rows as the engine writes them, for each built-in protocol's row shape (input, model, verify here; GLUE and
    MMBench rows are validated in test_text.py / test_vlm.py): Row.from_json(row).to_json() == row."""
    from conftest import make_engine, write_suite
    from bench.suite import load_suite

    suite = load_suite(str(write_suite(tmp_path / "s.toml")))
    rows = read_rows(make_engine(suite, tmp_path / "out", psnr=[20.0], progress=False, threads=1).run().results)
    validate_rows(rows)
    assert {Row.from_json(r).protocol for r in rows} >= {"input"}


def test_the_adding_a_protocol_guide_quotes_the_example_the_tests_run():
    """docs/adding-a-protocol.md's Python blocks are verbatim excerpts of tests/calibration_protocol.py (which the
    third-party test above runs end to end), so the guide cannot drift from working code."""
    import re

    doc = (ROOT / "docs" / "adding-a-protocol.md").read_text()
    source = (ROOT / "tests" / "calibration_protocol.py").read_text()
    blocks = re.findall(r"```python\n(.*?)```", doc, re.S)
    assert len(blocks) >= 8
    for block in blocks:
        assert block in source, f"not in tests/calibration_protocol.py:\n{block}"
    suite_block = re.findall(r"```toml\n(.*?)```", doc, re.S)[-1]
    assert suite_block.split("[standard_attacks]")[0].strip().splitlines()[1] in CALIBRATION

"""The embedded digits zoo and the default suite's shape."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from bench.attacks import get_attack
from bench.data.digits import load_digits_split
from bench.reports.entries import entry_schema
from bench.models.zoo import FAMILIES, load_zoo_model, test_accuracy as zoo_accuracy
from conftest import make_engine
from bench.protocols import get_protocol, protocol_of
from bench.suite import load_suite

ROOT = Path(__file__).resolve().parent.parent


def test_split_is_fixed_stratified_and_in_range():
    train, test = load_digits_split("train"), load_digits_split("test")
    assert len(train.labels) + len(test.labels) == 1797 and len(test.labels) == 540
    assert set(train.indices).isdisjoint(test.indices)
    assert tuple(test.images.shape[1:]) == (1, 32, 32)
    assert float(test.images.min()) >= 0.0 and float(test.images.max()) <= 1.0
    all_counts = train.labels.bincount() + test.labels.bincount()
    fractions = test.labels.bincount() / all_counts
    assert float((fractions - 0.3).abs().max()) < 0.01  # stratified: every class 30% in test
    assert load_digits_split("test").identity == test.identity


@pytest.mark.parametrize("family", list(FAMILIES))
def test_zoo_family_is_well_trained_and_cached(family):
    model = load_zoo_model(f"{family}-s0", progress=False)
    assert zoo_accuracy(model) >= 95.0
    again = load_zoo_model(f"{family}-s0", progress=False)  # from the cache: same weights
    assert again.digest == model.digest


def test_seeds_give_different_weights():
    a, b = load_zoo_model("mlp-s0", epochs=2, progress=False), load_zoo_model("mlp-s1", epochs=2, progress=False)
    assert a.arch == b.arch and a.digest != b.digest


def test_default_suite_plans_every_cell():
    assert load_suite(None).name == "digits-quick"  # `authbench run` with no argument: the quick default
    suite = load_suite("digits")  # the reference grid this test counts
    runner = make_engine(suite, ROOT / "runs" / "never-written", progress=False)
    models = len(suite.authorized)
    parsed = [protocol_of(get_protocol("input"), d).parse_entry(suite, d) for d in suite.defenses]  # typed entries
    data_defenses = [d for d in parsed if d.name in ("ne-patch", "ne-operator", "noise") and d.tier == "default"]
    repeats = suite.check.get("trials", 1)  # [check] trials repeat the attacks that train at run time

    def trials(d, attack):
        return max(d.trials, repeats) if get_attack(attack).trains else d.trials

    jobs = sum(len(d.psnr) * len(d.release) * sum(trials(d, a) for a in d.attacks) * (len(d.models) or models)
               for d in data_defenses)
    assert sum(len(j.cells) for j in runner.jobs if j.protocol == "input") == models + jobs * models
    model_jobs = [j for j in runner.jobs if j.protocol == "model"]
    assert {j.defense for j in model_jobs} == {"corelocker", "dp", "fhe", "algospec"}
    assert len({j.key for j in model_jobs}) == len(model_jobs)
    assert {j.authorized for j in model_jobs if j.defense == "fhe"} == {"fhe-s0"}  # an entry-only model
    swept = [d for d in parsed if hasattr(d, "psnr")]
    assert min(min(d.psnr) for d in swept) <= -20 and max(max(d.psnr) for d in swept) >= 40
    assert {"ne-patch", "ne-operator", "noise"} <= {d.name for d in suite.defenses}


def test_checked_in_reference_is_a_frozen_measured_reference():
    """reports/leaderboards/digits.json is `authbench leaderboard freeze` of a full default run: schema-valid, every
    inference-only cell exact, every cell that trains at run time with its spread over [check] trials, and the
    like-for-like boards `authbench rank` places new rows on."""
    ref = json.loads((ROOT / "reports" / "leaderboards" / "digits.json").read_text())
    jsonschema.validate(ref, json.loads((ROOT / "docs" / "reference.schema.json").read_text()))
    assert ref["kind"] == "authbench-reference" and ref["suite"] == "digits"
    assert ref["provenance"]["git"] not in ("", "unknown")
    trials = tomllib.loads((ROOT / "suites" / "digits.toml").read_text())["check"]["trials"]
    trained = [c for c in ref["cells"] if c["trained"]]
    exact = [c for c in ref["cells"] if not c["trained"]]
    assert trained and all(c["n_trials"] == trials and c["std"] is not None for c in trained)
    assert exact and all(c["tolerance"] == 0 for c in exact)
    assert len({(c["board"], c["key"], c["metric"]) for c in ref["cells"]}) == len(ref["cells"])
    boards = {b["key"]["board"]: b for b in ref["boards"] if len(b["key"]["authorized"]) == 10}
    ranked = {r["defense"] for b in boards.values() for r in b["rows"] if r.get("rank")}
    assert {"ne-patch", "ne-operator", "noise", "corelocker"} <= ranked  # every shipped defense, all 10 authorized
    assert {r["defense"] for b in ref["boards"] if b["key"]["board"] == "baselines" for r in b["rows"]} == \
        {"dp", "fhe", "algospec"}
    entries = sorted((ROOT / "reports" / "leaderboards" / "entries" / "digits").glob("*/*.json"))  # one per ranked row
    assert len(entries) == sum(1 for b in ref["boards"] for r in b["rows"] if r.get("rank"))
    for path in entries:
        jsonschema.validate(json.loads(path.read_text()), entry_schema())


# -- pinned weights (bench.models.pinned) -------------------------------------------------------------

import shutil  # noqa: E402
try:
    import tomllib  # noqa: E402
except ImportError:  # Python 3.10
    import tomli as tomllib  # noqa: E402
from fnmatch import fnmatch  # noqa: E402

from bench.cli import main  # noqa: E402
from bench.core.errors import UserError  # noqa: E402
from bench.models import pinned, zoo  # noqa: E402
from bench.models.adapter import weights_digest  # noqa: E402
from bench.models.sources import spec_identity  # noqa: E402

SUITES_WITH_ZOO = ("digits", "digits-paper", "fingerprint-digits")


def _zoo_models_of(suite) -> set[str]:
    names = set()
    for spec in suite.authorized:
        if isinstance(spec, str) and spec.startswith("zoo:"):
            names.add(spec[4:])
        elif isinstance(spec, dict) and spec.get("source") == "zoo" and "epochs" not in spec:
            names.add(spec["model"])
    for d in suite.defenses:
        names |= {m[4:] for m in d.models if isinstance(m, str) and m.startswith("zoo:")}
    return names


def test_every_zoo_model_is_pinned_with_the_codes_recipe():
    entries = pinned.pinned_entries()
    assert set(entries) == set(zoo.zoo_names())
    used = set().union(*(_zoo_models_of(load_suite(s)) for s in SUITES_WITH_ZOO))
    assert {"mlp-s0", "vit-s1", "fhe-s0"} <= used <= set(entries)
    manifest = pinned.read_manifest()
    assert manifest["torch"] and manifest["pinned_at"]
    for name, e in entries.items():
        assert e.recipe_digest == zoo.recipe_for(name).digest and e.seed == zoo.recipe_for(name).seed
        assert e.recipe == zoo.asdict(zoo.recipe_for(name)) and 90.0 <= e.test_accuracy <= 100.0
        assert (pinned.PINNED_DIR / e.file).stat().st_size == e.bytes


def test_pinned_weights_load_without_training_and_match_the_manifest(tmp_path):
    for name, e in pinned.pinned_entries().items():
        model = load_zoo_model(name, progress=False, root=tmp_path)
        assert weights_digest(model.module) == e.weights_sha256 and model.name == name
    assert not (tmp_path / "zoo").exists()  # nothing trained, nothing cached
    assert spec_identity("zoo:mlp-s0")["pinned"] == pinned.pinned_entry("mlp-s0").sha256  # results bind to it
    assert spec_identity({"source": "zoo", "model": "mlp-s0", "epochs": 2})["pinned"] is None


def _copy_pinned(tmp_path) -> Path:
    dest = tmp_path / "pinned"
    shutil.copytree(pinned.PINNED_DIR, dest)
    return dest


def test_a_tampered_pinned_file_is_a_one_line_error_naming_both_digests(tmp_path, monkeypatch, capsys):
    root = _copy_pinned(tmp_path)
    path = root / "cnn-s0.safetensors"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01  # one flipped bit in the weights
    path.write_bytes(bytes(data))
    expected, actual = pinned.pinned_entry("cnn-s0").sha256, pinned.sha256_bytes(bytes(data))
    with pytest.raises(UserError) as err:
        load_zoo_model("cnn-s0", progress=False, root=tmp_path, pinned_root=root)
    message = str(err.value)
    assert "\n" not in message and str(path) in message and expected in message and actual in message
    monkeypatch.setattr(pinned, "PINNED_DIR", root)
    assert main(["zoo", "verify", "--model", "cnn-s0", "--model", "mlp-s0"]) == 1
    out = capsys.readouterr().out
    assert "cnn-s0" in out and "FAIL" in out and "mlp-s0" in out and "verified 1 of 2" in out
    suite = tmp_path / "one.toml"
    suite.write_text('[suite]\nname = "one"\n[data]\ndataset = "digits"\nsubset = 8\n'
                     '[models]\nauthorized = ["zoo:cnn-s0"]\n[[defenses]]\nname = "noise"\npsnr = [20]\n')
    assert main(["run", str(suite), "--out", str(tmp_path / "run"), "--no-progress", "--threads", "1"]) == 2
    err_lines = capsys.readouterr().err.strip().splitlines()
    assert len(err_lines) == 1 and "fail their checksum" in err_lines[0] and expected in err_lines[0]


def test_a_changed_recipe_refuses_the_stale_pinned_weights(tmp_path):
    root = _copy_pinned(tmp_path)
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["models"]["vit-s0"]["recipe_digest"] = "0" * 16
    (root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="zoo retrain --model vit-s0"):
        load_zoo_model("vit-s0", progress=False, root=tmp_path, pinned_root=root)


def test_retrain_writes_the_cache_reports_reproduction_and_pin_copies_it(tmp_path, capsys):
    manifest_before = (pinned.PINNED_DIR / "manifest.json").read_bytes()
    assert main(["zoo", "retrain", "--model", "fhe-s1", "--cache-dir", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "fhe-s1: retrained in" in out and "reproduces (tolerance 1 points)" in out and "1 reproduce" in out
    assert (pinned.PINNED_DIR / "manifest.json").read_bytes() == manifest_before  # the package is untouched
    cached = zoo.zoo_path("fhe-s1", zoo.recipe_for("fhe-s1"), tmp_path)
    assert cached.exists()
    [result] = zoo.retrain(["fhe-s1"], root=tmp_path)
    assert result.reproduces and abs(result.accuracy - result.pinned_accuracy) <= pinned.REPRODUCE_TOLERANCE
    # pin into a scratch copy of the package folder: the retrained weights become the pinned ones
    root = _copy_pinned(tmp_path)
    zoo.pin(["fhe-s1"], root=tmp_path, pinned_root=root)
    entry = pinned.pinned_entry("fhe-s1", root)
    model = load_zoo_model("fhe-s1", progress=False, root=tmp_path / "empty", pinned_root=root)
    assert weights_digest(model.module) == entry.weights_sha256 == weights_digest(
        zoo.load_zoo_model("fhe-s1", progress=False, root=tmp_path, pinned_root=tmp_path / "no-pins").module)
    assert pinned.pinned_entry("fhe-s0", root) == pinned.pinned_entry("fhe-s0")  # the others are kept
    with pytest.raises(UserError, match="zoo retrain --model mlp-s1"):
        zoo.pin(["mlp-s1"], root=tmp_path / "empty", pinned_root=root)


def test_zoo_list_and_unknown_model(capsys):
    assert main(["zoo", "list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == len(zoo.zoo_names()) and all("sha256" in line and "pinned acc" in line for line in out)
    assert main(["zoo", "verify", "--model", "nope-s0"]) == 2
    assert "unknown zoo model 'nope-s0'" in capsys.readouterr().err


def test_pyproject_ships_the_pinned_weights_as_package_data():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = config["tool"]["setuptools"]["package-data"]["bench.models"]
    package = ROOT / "bench" / "models"
    files = [p.relative_to(package).as_posix() for p in pinned.PINNED_DIR.iterdir()]
    assert "zoo_weights/manifest.json" in files
    assert all(any(fnmatch(f, g) for g in globs) for f in files)  # every pinned file is in the wheel

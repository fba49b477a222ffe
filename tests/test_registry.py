"""Contract tests over every registry (timm's tests/test_models.py style): every defense, attack, protocol,
executor, model source, dataset, fingerprint method and detector is listed by `authbench list`, described
in one line, validates its parameters and rejects an unknown one (UserError in Python, one line and exit 2
through the CLI)."""

from __future__ import annotations

import re

import pytest

from bench.attacks import ATTACKS
from bench.cli import REGISTRIES, main
from bench.data import DATASETS, load_dataset
from bench.defenses import DEFENSES
from bench.core.errors import UserError
from bench.executors import EXECUTORS, executor_options, make_executor
from bench.fingerprint import FINGERPRINTS
from bench.fingerprint.detectors import DETECTORS
from bench.models.sources import SOURCES, load_model
from bench.protocols import PROTOCOLS
from bench.core.registry import Registry
from conftest import write_suite

KINDS = {"defenses": DEFENSES, "attacks": ATTACKS, "protocols": PROTOCOLS, "executors": EXECUTORS,
         "sources": SOURCES, "datasets": DATASETS, "fingerprints": FINGERPRINTS, "detectors": DETECTORS}
EVERY = [(kind, name) for kind, registry in KINDS.items() for name in registry.names()]


def _one_line_error(capsys, argv) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_every_kind_has_one_registry_and_a_list_command():
    assert set(REGISTRIES) == set(KINDS)
    assert all(isinstance(registry, Registry) for registry in KINDS.values())
    assert {"ne-patch", "corelocker", "dp", "fhe", "algospec", "mfue-w"} <= set(DEFENSES.names())
    assert {"local", "ray", "submitit"} <= set(EXECUTORS.names())
    assert {"zoo", "timm", "hf", "torch", "python", "tflite", "onnx"} <= set(SOURCES)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_list_lists_every_plugin_of_a_kind_with_its_description(kind, capsys):
    assert main(["list", kind]) == 0
    lines = capsys.readouterr().out.splitlines()
    described = KINDS[kind].describe()
    assert len(lines) == len(described) == len(KINDS[kind].names())
    assert list(described) == sorted(described)  # listed by name (no plugin of these kinds is installed here)
    for line, (name, text) in zip(lines, described.items()):
        assert line.split()[0] == name and line.rstrip().endswith(text)


@pytest.mark.parametrize("kind, name", EVERY)
def test_every_plugin_is_described_in_one_line(kind, name):
    plugin = KINDS[kind].get(name)
    text = plugin.description
    assert isinstance(text, str) and text.strip() and "\n" not in text and len(text) < 240, (kind, name)
    assert plugin.name == name


@pytest.mark.parametrize("name", DEFENSES.names() + ATTACKS.names())
def test_defenses_and_attacks_reject_an_unknown_parameter_and_a_mistyped_one(name):
    cls = DEFENSES.get(name) if name in DEFENSES else ATTACKS.get(name)
    with pytest.raises(UserError, match=rf"^{cls.plugin_type} {name!r} has no parameter 'no_such_param'; valid"):
        cls(no_such_param=1)
    typed = [k for k, v in cls.defaults.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if typed:  # a number given as a string is a one-line error naming the parameter
        with pytest.raises(UserError, match=rf"parameter {typed[0]} = 'many' is not valid: it must be"):
            cls(**{typed[0]: "many"})


@pytest.mark.parametrize("name", EXECUTORS.names())
def test_executors_reject_an_unknown_option_and_validate_theirs(name):
    cls = EXECUTORS.get(name)
    with pytest.raises(UserError, match=rf"^the {name} executor has no option 'no_such_option'"):
        cls(no_such_option=1)
    for option in cls.options:
        bad = "many" if option.type in ("number", "integer") or option.choices else None
        if bad is not None:
            with pytest.raises(UserError, match=f"^{re.escape(f'{option.flag} must be {option.meaning}')}, got 'many'$"):
                cls(**{option.name: bad})


def test_each_executor_option_is_declared_once_and_reaches_the_cli_and_the_schema(capsys):
    from bench.suite_schema import SECTIONS

    options = executor_options()
    assert set(SECTIONS["executor"]) == {"name", *options}
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = capsys.readouterr().out
    for name, decls in options.items():
        flag = decls[0][1].flag
        assert all(o.flag == flag for _, o in decls)
        assert (flag in text) == decls[0][1].cli, flag


@pytest.mark.parametrize("name", SOURCES.names())
def test_model_sources_reject_an_unknown_key(name):
    source = SOURCES.get(name)
    assert source.keys, name  # each source declares the keys it reads
    with pytest.raises(UserError, match=rf"has key\(s\) no_such_key not used by source {name!r}; valid keys: "):
        load_model({"source": name, "no_such_key": 1})


@pytest.mark.parametrize("name", DATASETS.names())
def test_datasets_reject_an_unknown_option(name):
    with pytest.raises(UserError, match=rf"^dataset {name!r} has no option 'no_such_option'; valid \[data\] options"):
        load_dataset(name, "test", no_such_option=1)


@pytest.mark.parametrize("name", DATASETS.names())
def test_datasets_reject_an_unknown_data_key_through_the_cli(name, tmp_path, capsys):
    path = write_suite(tmp_path / "s.toml")
    path.write_text(path.read_text().replace('dataset = "digits"', f'dataset = "{name}"\nno_such_option = 1'))
    assert "unknown key 'no_such_option' in [data]" in _one_line_error(capsys, ["run", str(path), "--plan"])


@pytest.mark.parametrize("name", ["ne-patch", "noise", "corelocker", "dp"])
def test_a_defense_parameter_it_does_not_declare_is_exit_2_through_the_cli(name, tmp_path, capsys):
    path = write_suite(tmp_path / "s.toml", defenses=())
    path.write_text(path.read_text() + f'\n[[defenses]]\nname = "{name}"\nparams = {{ no_such_param = 1 }}\n')
    err = _one_line_error(capsys, ["run", str(path), "--plan", "--out", str(tmp_path / "o")])
    assert f"defense {name!r} has no parameter 'no_such_param'" in err


@pytest.mark.parametrize("name", ["jpeg", "crop", "finetune"])
def test_an_attack_parameter_it_does_not_declare_is_exit_2_through_the_cli(name, tmp_path, capsys):
    extra = f'attacks = [{{ name = "{name}", no_such_param = 1 }}]\n'
    defense = "corelocker" if name == "finetune" else "noise"
    path = write_suite(tmp_path / "s.toml", defenses=())
    path.write_text(path.read_text() + f'\n[[defenses]]\nname = "{defense}"\n{extra}')
    err = _one_line_error(capsys, ["run", str(path), "--plan", "--out", str(tmp_path / "o")])
    assert f"attack {name!r} has no parameter 'no_such_param'" in err


@pytest.mark.parametrize("argv, needle", [
    (["--executor", "ray", "--no-such-option", "1"], "unrecognized arguments: --no-such-option"),
    (["--executor", "submitit", "--time-limit", "0"], "--time-limit must be a whole number >= 1, got 0"),
])
def test_executor_flags_are_validated_through_the_cli(argv, needle, tmp_path, capsys):
    path = write_suite(tmp_path / "s.toml")
    assert needle in _one_line_error(capsys, ["run", str(path), "--plan", *argv])


def test_an_unknown_model_source_and_plugin_name_are_one_line_errors(tmp_path, capsys):
    with pytest.raises(UserError, match=f"unknown model source 'nope'; valid choices: {', '.join(sorted(SOURCES.names()))}$"):
        load_model("nope:x")
    for registry in KINDS.values():
        with pytest.raises(UserError, match=rf"^unknown {registry.kind} 'no-such-plugin'; valid choices: "):
            registry.get("no-such-plugin")
    path = write_suite(tmp_path / "s.toml")
    path.write_text(path.read_text().replace('model = "mlp-s0"', 'model = "mlp-s0", no_such_key = 1', 1))
    assert "no_such_key" in _one_line_error(capsys, ["run", str(path), "--out", str(tmp_path / "o"), "--no-progress"])


def test_a_plugin_registered_twice_under_one_name_is_refused():
    registry = Registry("widget", "authbench.widgets")

    class A:
        name = "a"
        description = "first"

    class B:
        name = "a"
        description = "second"

    registry.register(A)
    registry.register(A)  # the same object again (a module imported twice) is harmless
    with pytest.raises(ValueError, match="registered twice"):
        registry.register(B)
    assert registry.names() == ["a"] and registry.describe() == {"a": "first"}


def test_builtins_load_on_first_lookup_and_entry_points_only_when_asked(monkeypatch):
    loaded = []

    class EntryPoint:
        value = "pkg.mod:Thing"

        def load(self):
            loaded.append(1)
            return type("Thing", (), {"name": "thing", "description": "a plugin"})

    registry = Registry("widget", "authbench.widgets", modules=("bench.no_such_module_for_this_test",))
    monkeypatch.setattr("bench.core.registry._entry_points", lambda group: {"thing": EntryPoint()})
    with pytest.raises(ModuleNotFoundError):  # a broken built-in module is a bug, not a user error
        registry.names()
    registry = Registry("widget", "authbench.widgets")
    assert registry.names() == ["thing"] and "thing" in registry and not loaded
    assert registry.get("thing").description == "a plugin" and loaded == [1]


def _domain_attack_names():
    from bench.ntl.attacks import ATTACKS as DOMAIN_ATTACKS
    return list(DOMAIN_ATTACKS)


@pytest.mark.parametrize("name", _domain_attack_names())
def test_every_domain_attack_checks_its_parameters_and_adapts_a_copy(name):
    """The domain protocol's attacks (bench.ntl.attacks): described, an unknown parameter is a one-line error, each
    returns an adapted copy and leaves the released model as it was."""
    import torch

    from bench.ntl.attacks import ATTACKS as DOMAIN_ATTACKS, attack, parse

    spec = DOMAIN_ATTACKS[name]
    assert spec.name == name and spec.description.strip() and "\n" not in spec.description
    with pytest.raises(UserError, match=rf"attack {name!r}: unknown parameter 'no_such_param'"):
        parse({"name": name, "no_such_param": 1})
    gen = torch.Generator().manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = torch.rand(12, 1, 4, 4, generator=gen), torch.randint(0, 3, (12,), generator=gen)
    small = {k: 1 for k in ("epochs",) if k in spec.defaults}
    out = attack({"name": name, **small}, model, lambda v: v, source=(x, y), targets=[(1 - x, y)], seed=0)
    assert out is not model and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    changed = any(not torch.equal(before[k], v) for k, v in out.state_dict().items())
    assert changed == (name != "none")

"""The engine's contracts: one import graph without cycles, protocols and executors from one
registry, results independent of the batch size, device flags, and the Python API."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

import bench
from bench.cli import main
from bench.core.types import Cell, Encoding, Job, Provenance, Role, Row
from bench.errors import UserError
from bench.executors import EXECUTORS
from bench.models.adapter import resolve_device
from bench.protocols import PROTOCOLS, get_protocol
from bench.protocols.base import Protocol
from bench.results import read_rows
from bench.suite import load_suite
from conftest import make_engine, validate_rows, write_suite

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bench", "baselines")


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for f in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(f.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = f
    return out


def _imports(name: str, path: Path, modules: dict) -> list[tuple[str, list[str]]]:
    """(imported project module, names taken from it) for every import in the file, function-level ones too."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([node.module] if node.module else []))
            for a in node.names:
                target = f"{base}.{a.name}"
                found.append((target, []) if target in modules else (base, [a.name]))
    return [(t, names) for t, names in found if t.split(".")[0] in PACKAGES]


def _resolve(target: str, modules: dict) -> str | None:
    parts = target.split(".")
    while parts and ".".join(parts) not in modules:
        parts.pop()
    return ".".join(parts) or None


def test_no_import_cycle_among_project_modules():
    modules = _modules()
    graph = {m: {_resolve(t, modules) for t, _ in _imports(m, p, modules)} - {None, m} for m, p in modules.items()}
    index, low, stack, on, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v), on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_no_module_imports_another_modules_underscore_names():
    modules = _modules()
    bad = [(m, t, n) for m, p in modules.items() for t, names in _imports(m, p, modules) for n in names
           if n.startswith("_") and _resolve(t, modules) != m]
    assert not bad, f"private names imported across modules: {bad}"


# Function-level imports allowed by name: optional extras (imported where they are used, so the harness runs
# without them) and heavy libraries only one code path needs. A project module imported inside a function is
# a hidden cycle (or a layer leak) and is never allowed, except by the command line's dispatcher, which loads
# each command's layer when that command runs so that `authbench --help` and `authbench list` stay fast.
LAZY_DEPENDENCIES = {
    "timm", "torchvision", "transformers", "datasets", "scipy", "accelerate", "einops", "vlmeval",  # extras
    "tenseal", "opacus", "ray", "submitit",  # extras: fhe, dp, dist
    "tflite", "onnx", "onnx2torch", "onnxruntime", "ai_edge_litert",  # extra: convert
    "sklearn", "PIL", "tqdm", "safetensors", "torch", "matplotlib", "jsonschema",  # heavy, or needed by one path only
}
LAZY_PROJECT_IMPORTS = {"bench.cli", "bench.kits.cli", "bench.suite"}  # command dispatchers; `list suites` and --help without numpy


def _function_level_imports():
    import sys

    for name, path in _modules().items():
        tree = ast.parse(path.read_text())
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.Import):
                    targets = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom):
                    targets = ["." if node.level else node.module or ""]
                else:
                    continue
                for target in targets:
                    top = target.split(".")[0]
                    project = top in PACKAGES or target == "."
                    if project and name in LAZY_PROJECT_IMPORTS:
                        continue
                    if not project and (top in LAZY_DEPENDENCIES or top in sys.stdlib_module_names):
                        continue
                    yield f"{path.relative_to(ROOT)}:{node.lineno} {ast.unparse(node)}"


def test_no_function_level_import_dodges_a_cycle():
    bad = sorted(set(_function_level_imports()))
    assert not bad, ("imports inside functions (move them to the top of the module; where that makes a cycle, "
                     f"fix the layering): {bad}")


def test_the_check_sees_a_function_level_project_import(tmp_path, monkeypatch):
    sneaky = tmp_path / "bench" / "sneaky.py"
    sneaky.parent.mkdir()
    sneaky.write_text("def f():\n    from bench.defenses import get_defense\n    import tenseal\n    return get_defense\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    assert [line.split(" ", 1)[1] for line in _function_level_imports()] == ["from bench.defenses import get_defense"]


IMPORT_ALONE = """
import importlib, json, sys
failed = {}
for name in sys.argv[1:]:
    for loaded in [m for m in sys.modules if m.split(".")[0] in ("bench", "baselines")]:
        del sys.modules[loaded]  # each module starts from no project module loaded, as in a fresh interpreter
    try:
        importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001 - reported per module
        failed[name] = f"{type(exc).__name__}: {exc}"
print(json.dumps(failed))
"""


def test_every_module_imports_alone_in_a_fresh_interpreter():
    """A module that imports only after another one was imported first (a cycle hidden by import order,
    e.g. `import baselines` alone) fails here; third-party libraries stay loaded between modules, project
    modules are unloaded before each."""
    import json
    import os
    import subprocess
    import sys

    names = [m for m in _modules() if m != "bench.__main__"]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([sys.executable, "-c", IMPORT_ALONE, *names], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {}


def test_loading_a_suite_imports_neither_the_reports_nor_the_engine():
    import subprocess
    import sys

    code = ("import sys, bench.suite; bench.suite.load_suite('digits'); "
            "print(sorted(m for m in sys.modules if m.startswith(('bench.reports', 'bench.protocols', 'bench.api', "
            "'bench.core.engine'))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


def test_the_old_runner_modules_are_gone():
    for old in ("runner", "model_cells", "verify_cells", "task_suites", "text/runner", "vlm/runner"):
        assert not (ROOT / "bench" / f"{old}.py").exists()


@pytest.mark.parametrize("name", PROTOCOLS.names())
def test_every_registered_protocol_has_the_plugin_contract(name):
    protocol = get_protocol(name)
    assert isinstance(protocol, Protocol) and protocol.name == name and protocol.description
    for method in ("plan", "run", "reports", "baseline"):
        assert callable(getattr(protocol, method))
    assert type(protocol).run is not Protocol.run and type(protocol).plan is not Protocol.plan


def test_every_defense_names_a_registered_protocol():
    from bench.defenses import DEFENSES

    for name, cls in DEFENSES.items():
        assert cls.protocol in PROTOCOLS.names(), name


def test_executor_registry_and_unknown_names():
    assert "local" in EXECUTORS.names()
    with pytest.raises(UserError, match="unknown executor 'nope'"):
        EXECUTORS.get("nope")
    with pytest.raises(UserError, match="unknown protocol 'nope'"):
        PROTOCOLS.get("nope")


def test_row_round_trip_and_role_rule():
    cell = Cell(suite="s", defense="ne-patch", params={"tau": 1e-4}, point={"psnr": 20.0}, release="float",
                attack="none", authorized="a", evaluated="b")
    assert cell.key(data={"dataset": "digits"}, seed=0) != cell.key(data={"dataset": "digits"}, seed=1)
    prov = Provenance(model_digest="m", authorized_digest="a", input_digest="i", defense_summary={}, versions={},
                      git="g", device="cpu", seed=0, wall_s=0.1, cache={}, forwards=1)
    row = Row.build(protocol="input", cell=cell, key="k", suite_digest="0" * 16, role=Role.UNAUTHORIZED,
                    arch={"authorized": "x", "evaluated": "y"}, metrics={"top1": 10.0}, n=3,
                    encoding=Encoding(psnr_true=20.0, psnr_nominal=None, calib_err_db=0.0), provenance=prov)
    data = row.to_json()
    assert data["encoding"] == {"psnr_true": 20.0, "psnr_nominal": None, "calib_err_db": 0.0}
    assert Row.from_json(data) == row
    assert Role.of(authorized="", evaluated="b", same_arch=False) is Role.CLEAN
    assert Role.of(authorized="b", evaluated="b", same_arch=True) is Role.AUTHORIZED
    assert Role.of(authorized="a", evaluated="b", same_arch=True) is Role.SAME_ARCH
    with pytest.raises(TypeError):
        Job("input", "none", {}, {}, "clean", "none", "")  # keyword-only


def _measured(rows):
    """Accuracies, n, PSNRs and attack facts exactly; the float32 first-layer deviation to 1e-6 (a
    float32 matmul sums in an order that depends on the batch's size)."""
    return {r["cell"]: (r["metrics"]["top1"], r["n"], {k: v for k, v in (r["encoding"] or {}).items()
                                                        if k not in ("encode_ms", "fit_ms")}, r["attack_stats"],
                        r["metrics"]["first_layer_dev"]) for r in rows}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        a[k][:-1] == b[k][:-1] and (a[k][-1] == b[k][-1] or abs(a[k][-1] - b[k][-1]) <= 1e-6) for k in a)


def test_results_do_not_depend_on_the_batch_size(tmp_path):
    """Encoding, release formats, a per-sample random attack (crop) and the forward pass streamed in batches of
    1, 7 and 256 give the same rows; a whole-split pass (batch 256 > the 40 samples) is the reference."""
    extra = '\n[[defenses]]\nname = "ne-operator"\npsnr = [10]\nrelease = ["uint8"]\nattacks = ["crop", "gauss-noise"]\n'
    path = write_suite(tmp_path / "b.toml", psnr=(10,), release=("float", "uint8"), extra=extra)
    path.write_text(path.read_text().replace("subset = 120", "subset = 40"))
    suite = load_suite(str(path))
    results = {}
    for size in (256, 7, 1):
        summary = make_engine(suite, tmp_path / f"b{size}", cache_dir=tmp_path / f"c{size}", batch_size=size,
                              threads=1, progress=False).run()
        rows = read_rows(summary.results)
        validate_rows(rows)
        results[size] = _measured(rows)
    assert len(results[256]) == 3 + 2 * 2 * 3 * 3 + 2 * 3 * 3
    assert _same(results[7], results[256]) and _same(results[1], results[256])


def test_device_flags_are_validated():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(UserError, match="not a torch device"):
        resolve_device("gpu0")
    with pytest.raises(UserError, match="not supported"):
        resolve_device("meta")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA device here; use --device cpu"):
            resolve_device("cuda:0")


@pytest.mark.parametrize("flags, message", [
    (["--device", "cuda:7"] if not torch.cuda.is_available() else ["--device", "gpu"], "device"),
    (["--batch-size", "0"], "batch size must be >= 1"),
    (["--threads", "0"], "threads must be >= 1"),
])
def test_bad_run_flags_are_one_line_errors(tmp_path, capsys, flags, message):
    suite = write_suite(tmp_path / "s.toml")
    assert main(["run", str(suite), "--out", str(tmp_path / "run"), "--reports", str(tmp_path / "rep"), "--no-progress",
                 *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "Traceback" not in err[0]


def test_suite_run_section_is_validated(tmp_path):
    path = write_suite(tmp_path / "s.toml", extra='\n[run]\nbatch_size = 16\ndevice = "cpu"\n')
    assert load_suite(str(path)).run == {"batch_size": 16, "device": "cpu"}
    path.write_text(path.read_text().replace("batch_size = 16", "batch = 16"))
    with pytest.raises(UserError, match=r"unknown key 'batch' in \[run\]; valid: batch_size, channels_last, device, precision, threads"):
        load_suite(str(path))
    path.write_text(path.read_text().replace("batch = 16", 'batch_size = "16"'))
    with pytest.raises(UserError, match=r"\[run\] batch_size = '16' is not valid: it must be a whole number >= 1"):
        load_suite(str(path))


def test_python_api_runs_and_resumes_a_suite(tmp_path):
    suite = write_suite(tmp_path / "api.toml", psnr=(20,), release=("float",), defenses=("noise",))
    res = bench.evaluate(suite, out=tmp_path / "run", reports=tmp_path / "rep", threads=1)
    assert res.summary.cells_run == len(res.rows) == 3 + 3 * 3
    assert {"metrics.top1", "role", "protocol"} <= set(res.rows.columns)
    assert res.leaderboard is not None and "cells: 12 total" in res.summary_text()
    again = bench.evaluate(suite, out=tmp_path / "run", write_reports=False)
    assert again.summary.cells_run == 0 and again.summary.forwards == 0 and again.reports == []


def test_a_third_party_protocol_plugs_in_by_module_path(tmp_path):
    """A defense names its protocol once; the engine plans and runs it like a built-in (here via 'module:Class';
    an installed package would use the `authbench.protocols` entry point)."""
    # its entry holds only the keys the protocol reads (psnr / release would be one-line errors: issue 22)
    path = write_suite(tmp_path / "p.toml", defenses=(), extra='\n[[defenses]]\nname = "protocol_example:Identity"\n')
    res = bench.evaluate(path, out=tmp_path / "run", reports=tmp_path / "rep", threads=1)
    mine = [r for r in res.records if r["defense"] == "protocol_example:Identity"]
    clean = {r["evaluated"]: r for r in res.records if r["defense"] == "none"}
    assert len(mine) == 3 and all(r["metrics"]["top1"] == clean[r["evaluated"]]["metrics"]["top1"] for r in mine)
    assert all(r["metrics"]["correct"] == round(r["metrics"]["top1"] * r["n"] / 100) for r in mine)
    assert {r["protocol"] for r in mine} == {"protocol_example:CountCorrect"}
    validate_rows(res.records)
    assert bench.evaluate(path, out=tmp_path / "run", write_reports=False).summary.cells_run == 0

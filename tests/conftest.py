"""Shared fixtures: an isolated cache for the whole session and a reduced digits suite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

FAST_MODELS = [
    '{ source = "zoo", model = "mlp-s0", epochs = 4 }',
    '{ source = "zoo", model = "mlp-s1", epochs = 4 }',
    '{ source = "zoo", model = "vit-s0", epochs = 6 }',
]


@pytest.fixture(scope="session", autouse=True)
def session_cache(tmp_path_factory) -> Path:
    """Every test writes to one temporary cache root, never the user's."""
    root = tmp_path_factory.mktemp("authbench-cache")
    old = os.environ.get("AUTHBENCH_CACHE")
    os.environ["AUTHBENCH_CACHE"] = str(root)
    yield root
    if old is None:
        os.environ.pop("AUTHBENCH_CACHE", None)
    else:
        os.environ["AUTHBENCH_CACHE"] = old


def write_suite(path: Path, psnr=(20, -10), release=("float", "uint8"), defenses=("ne-patch", "noise"), extra="") -> Path:
    """A reduced digits suite on three quickly trained zoo models."""
    blocks = "".join(
        f'\n[[defenses]]\nname = "{d}"\npsnr = {list(psnr)}\nrelease = {list(release)}\n' for d in defenses
    )
    path.write_text(
        f'[suite]\nname = "mini"\ndescription = "reduced digits suite for tests"\nseed = 0\n\n'
        f'[data]\ndataset = "digits"\nsplit = "test"\nsubset = 120\n\n'
        f'[models]\nauthorized = [{", ".join(FAST_MODELS)}]\n{blocks}{extra}'
    )
    return path


@pytest.fixture
def mini_suite(tmp_path) -> Path:
    return write_suite(tmp_path / "mini.toml")


def make_engine(suite, out, **options):
    """The engine for `suite` writing to `out`, with RunOptions given as keywords (lists allowed)."""
    from bench.engine.context import RunOptions
    from bench.engine.engine import Engine

    return Engine(suite, out, RunOptions(**{k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}))


def validate_rows(rows: list[dict]) -> None:
    """Every row against the published schema (docs/results.schema.json) and the one serialiser."""
    import json

    import jsonschema

    from bench.core.types import Row

    schema = json.loads((Path(__file__).resolve().parent.parent / "docs" / "results.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    for row in rows:
        errors = sorted(validator.iter_errors(row), key=str)
        assert not errors, f"row {row.get('cell')} ({row.get('protocol')}): {errors[0].message}"
        assert Row.from_json(row).to_json() == row  # one serialiser, lossless

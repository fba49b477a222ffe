"""The clean side of the first-layer deviation is computed once per model and split, then reused."""

from __future__ import annotations

import json

from conftest import make_engine, write_suite

from bench.models.first_linear import FirstLinear
from bench.protocols import classify
from bench.core.results import read_rows
from bench.suite import load_suite


def _count_outputs(monkeypatch) -> list:
    calls = []
    original = FirstLinear.output

    def counted(self, x):
        calls.append(len(x))
        return original(self, x)

    monkeypatch.setattr(FirstLinear, "output", counted)
    return calls


def _devs(rows) -> dict:
    return {r["cell"]: json.dumps(r["metrics"].get("first_layer_dev")) for r in rows}


def test_clean_first_layer_output_is_computed_once_and_gives_identical_deviations(tmp_path, monkeypatch):
    path = write_suite(tmp_path / "s.toml", psnr=(20, -10), release=("float",), defenses=("ne-patch", "noise"))
    path.write_text(path.read_text().replace("subset = 120", "subset = 48"))
    suite = load_suite(str(path))
    calls = _count_outputs(monkeypatch)
    # the old behaviour, for reference: no store, so every job recomputes L(clean) for every model
    monkeypatch.setattr(classify, "clean_norms", lambda ctx, model, clean: None)
    old = make_engine(suite, tmp_path / "old", cache_dir=tmp_path / "c-old", batch_size=16, threads=1,
                      progress=False).run()
    old_calls = len(calls)
    monkeypatch.undo()
    calls = _count_outputs(monkeypatch)
    new = make_engine(suite, tmp_path / "new", cache_dir=tmp_path / "c-new", batch_size=16, threads=1,
                      progress=False).run()
    assert old.cells_run == new.cells_run == 3 + 2 * 3 * 3 + 2 * 3 * 3  # clean; noise and ne-patch per authorized model
    old_rows, new_rows = read_rows(old.results), read_rows(new.results)
    assert _devs(old_rows) == _devs(new_rows)  # the same bits (as JSON text)
    assert any(r["metrics"]["first_layer_dev"] for r in new_rows)
    # once per evaluated model and batch (3 models x 3 batches), where the old path did it in every job
    assert len(calls) == 3 * 3
    assert old.encodings == 9 and old_calls == old.encodings * 3 * 3  # every job that streamed the split
    # a new context (another process) reads the norms from the cache: no clean output computed at all
    calls.clear()
    again = make_engine(suite, tmp_path / "again", cache_dir=tmp_path / "c-new", batch_size=16, threads=1,
                        progress=False)
    again.ctx.forwards.cache.root = tmp_path / "c-empty"  # force the model outputs to be recomputed
    summary = again.run()
    assert summary.forwards > 0 and calls == []
    assert _devs(read_rows(summary.results)) == _devs(new_rows)


def test_clean_norms_key_binds_batch_size(tmp_path):
    """A store is per (model, clean inputs, batch size, device): another batch size is another entry."""
    path = write_suite(tmp_path / "s.toml", psnr=(20,), release=("float",), defenses=("noise",))
    suite = load_suite(str(path))
    a = make_engine(suite, tmp_path / "a", cache_dir=tmp_path / "c", batch_size=16, threads=1, progress=False).ctx
    b = make_engine(suite, tmp_path / "b", cache_dir=tmp_path / "c", batch_size=32, threads=1, progress=False).ctx
    model = a.model("mlp-s0")
    clean = {"data": a.data.identity, "geometry": None}
    assert classify.clean_norms(a, model, clean).key != classify.clean_norms(b, b.model("mlp-s0"), clean).key
    assert classify.clean_norms(a, model, clean) is classify.clean_norms(a, model, clean)

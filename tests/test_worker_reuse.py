"""Executors that pay off: a worker keeps its context across runs of one suite, tasks batch one group's jobs."""

from __future__ import annotations

from conftest import write_suite

from bench.core import engine as engine_module
from bench.core.context import RunOptions
from bench.core.engine import Engine, run_specs, worker_context
from bench.executors import make_executor
from bench.suite import load_suite


def test_a_worker_keeps_its_context_across_runs_of_one_suite(tmp_path, monkeypatch):
    suite = load_suite(str(write_suite(tmp_path / "s.toml", psnr=(20,), release=("float",), defenses=("noise",))))
    opts = RunOptions(threads=1, cache_dir=tmp_path / "cache", progress=False)
    monkeypatch.setattr(engine_module, "_CONTEXTS", type(engine_module._CONTEXTS)())
    first, second = Engine(suite, tmp_path / "run-a", opts), Engine(suite, tmp_path / "run-b", opts)
    spec_a, spec_b = first.spec(first.jobs[0]), second.spec(second.jobs[0])
    assert spec_a.out_dir != spec_b.out_dir and spec_a.context_key == spec_b.context_key
    ctx_a, _ = worker_context(spec_a)
    model = ctx_a.model("mlp-s0")
    ctx_b, _ = worker_context(spec_b)
    assert ctx_b is ctx_a and ctx_b.model("mlp-s0") is model  # nothing rebuilt, no model loaded again
    assert ctx_b.out_dir == tmp_path / "run-b"  # pointed at the second run's folder
    (result,) = run_specs((spec_b,))
    assert result.error is None and len(result.rows) == 3
    other = Engine(suite, tmp_path / "run-c", RunOptions(threads=1, cache_dir=tmp_path / "cache", progress=False,
                                                         batch_size=7))
    assert other.spec(other.jobs[0]).context_key != spec_a.context_key  # other options: another context


def test_ray_tasks_carry_a_batch_of_one_authorized_models_jobs(tmp_path):
    suite = load_suite(str(write_suite(tmp_path / "s.toml", psnr=(20, 10, 0), release=("float", "uint8"),
                                       defenses=("ne-patch",))))
    engine = Engine(suite, tmp_path / "run", executor=make_executor("ray"))
    tasks = engine.executor.tasks(engine.jobs)
    assert all(len({j.group for j in t}) == 1 for t in tasks)
    assert [len(t) for t in tasks] == [1] + [4, 2] * 3  # clean; 6 jobs per authorized model in batches of <= 4

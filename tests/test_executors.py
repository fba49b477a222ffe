"""Executors beyond this process: Ray (a local Ray with 2 CPUs) and submitit (its local executor: real
subprocesses) give exactly the local executor's rows; a warm rerun through either does no forward pass;
a worker killed mid-job leaves a run that completes on retry (Ray) or on rerun (submitit) with identical
rows and no duplicate; two executors over one cache folder at once leave no corrupted entry.

Also: job specs are small and self-checking, placement groups jobs by authorized model, `--plan`, the
[executor] section and the executor flags, and two processes writing one cache entry at once."""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import re
import signal
import threading
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import psutil
import pytest

import bench
from bench.cache import ArrayCache
from bench.cli import main
from bench.core.engine import Engine, run_specs
from bench.core.spec import JobSpec, job_id
from bench.errors import UserError
from bench.executors import EXECUTORS, Executor, make_executor
from bench.results import read_rows
from bench.suite import load_suite
from conftest import write_suite

TIMING = ("encode_ms", "fit_ms")
ray = pytest.importorskip("ray", reason="the executor tests need Ray and submitit, the 'dist' extra: pip install -e '.[dist]'")
submitit = pytest.importorskip("submitit", reason="the executor tests need submitit, the 'dist' extra: pip install -e '.[dist]'")


# -- fixtures -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def suite_path(tmp_path_factory) -> Path:
    """One release, one PSNR point, NE and the noise control, two authorized models, 40 samples: 5 jobs, 3 groups."""
    path = write_suite(tmp_path_factory.mktemp("exec") / "mini.toml", psnr=(20,), release=("float",))
    text = path.read_text().replace("subset = 120", "subset = 40")
    path.write_text(re.sub(r'\s*\{ source = "zoo", model = "vit-s0", epochs = 6 \},?', "", text))
    return path


@pytest.fixture(scope="module")
def reference(suite_path, tmp_path_factory) -> Path:
    """The local executor's run (one thread): what every other executor must reproduce."""
    out = tmp_path_factory.mktemp("local")
    res = bench.evaluate(suite_path, out=out / "run", write_reports=False, threads=1, cache_dir=out / "cache")
    assert res.summary.cells_run == 2 + 4 * 2 and res.summary.forwards > 0
    return out / "run"


@pytest.fixture(scope="module")
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def measured(run: Path) -> dict:
    """Every row's measurements by cell: metrics, n, role and encoding (timings aside)."""
    rows = read_rows(run)
    cells = Counter(r["cell"] for r in rows)
    assert max(cells.values()) == 1, f"duplicate rows: {[c for c, n in cells.items() if n > 1]}"
    return {r["cell"]: (r["metrics"], r["n"], r["role"], r["evaluated"], r["authorized"],
                        {k: v for k, v in (r["encoding"] or {}).items() if k not in TIMING}) for r in rows}


def same_as_reference(run: Path, reference: Path, capsys) -> None:
    assert measured(run) == measured(reference)
    capsys.readouterr()
    code = main(["check", str(run), "--against", str(reference / "results.jsonl"), "--default-tolerance", "0", "--strict"])
    out = capsys.readouterr().out
    assert code == 0 and "0 regression(s), 0 missing row(s), 0 improvement(s) -> OK" in out, out


def run_api(suite_path, out: Path, cache: Path, executor: str, **options):
    return bench.evaluate(suite_path, out=out, cache_dir=cache, write_reports=False, threads=1, executor=executor,
                          **options)


class InProcessRemote(Executor):
    """A remote executor whose 'worker' is this process: specs and run_specs, no cluster (fast, deterministic)."""

    name = "in-process-remote"
    description = "test double"
    remote = True

    def __init__(self, twice: bool = False):
        self.twice = twice

    def map(self, fn, items):
        for item in items:
            pickled = pickle.loads(pickle.dumps(item))  # what crosses to a worker
            result = fn(pickled)
            yield result
            if self.twice:  # a result delivered twice (a retried task whose first attempt also returned)
                yield result


# -- specs, placement, plan, options (no cluster) -----------------------------------------------
def test_job_specs_are_small_and_rebuild_the_suite(suite_path, tmp_path):
    suite = load_suite(str(suite_path))
    engine = Engine(suite, tmp_path / "run", executor=make_executor("ray"))
    specs = [engine.spec(j) for j in engine.jobs]
    assert len({s.job for s in specs}) == len(engine.jobs) == 5
    for spec in specs:
        blob = pickle.dumps(spec)
        assert len(blob) < 8192 and b"torch" not in blob and b"numpy" not in blob  # nothing large, no tensor
        assert spec.suite().digest == suite.digest == spec.suite_digest
        assert spec.options["threads"] == 1 and spec.options["cache_dir"]
    bad = replace(specs[0], suite_toml=specs[0].suite_toml.replace("subset\" = 40", "subset\" = 41"))
    with pytest.raises(UserError, match="the worker rebuilt digest .* the driver sent"):
        bad.suite()
    (result,) = run_specs((replace(specs[0], job="0" * 16),))
    assert result.user_error and "is not in suite 'mini' as planned on the worker" in result.error


def test_in_process_remote_path_matches_local_and_never_duplicates(suite_path, reference, tmp_path, capsys):
    """The whole spec -> worker -> rows path, in this process: identical rows; a result delivered twice
    is written once; counters are summed from the workers' results."""
    suite = load_suite(str(suite_path))
    from bench.core.context import RunOptions

    opts = RunOptions(threads=1, cache_dir=tmp_path / "cache", progress=False)
    summary = Engine(suite, tmp_path / "run", opts, InProcessRemote(twice=True)).run()
    assert summary.cells_run == 10 and summary.jobs_run == 5 and summary.forwards > 0 and summary.jobs_failed == 0
    same_as_reference(tmp_path / "run", reference, capsys)
    again = Engine(suite, tmp_path / "run2", opts, InProcessRemote()).run()
    assert again.forwards == 0 and again.encodings == 0 and again.cache["hits"] > 0 and again.cells_run == 10


def test_placement_groups_jobs_by_authorized_model(suite_path, tmp_path):
    suite = load_suite(str(suite_path))
    engine = Engine(suite, tmp_path / "run", executor=make_executor("submitit", max_in_flight=2, cluster="local"))
    tasks = engine.executor.tasks(engine.jobs)
    assert all(len({j.group for j in t}) == 1 for t in tasks)  # a task never mixes authorized models
    assert [t[0].group for t in tasks] == ["", "mlp-s0", "mlp-s1"] and sum(map(len, tasks)) == 5
    assert [j.group for t in make_executor("ray").tasks(engine.jobs) for j in t] == ["", "mlp-s0", "mlp-s0", "mlp-s1", "mlp-s1"]


def test_plan_prints_jobs_groups_and_forward_passes_without_running(suite_path, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", str(suite_path), "--out", str(out), "--plan", "--executor", "submitit", "--max-in-flight", "2"]) == 0
    text = capsys.readouterr().out
    assert "5 to run in 3 task(s); cells to run: 10" in text and "estimated forward passes: 10" in text
    assert re.search(r"mlp-s0\s+2\s+4\s+4\s+1", text) and "task 2: group mlp-s0, 2 job(s)" in text
    assert not out.exists()  # nothing ran, nothing written


@pytest.mark.parametrize("body, argv, needle", [
    ('[executor]\nname = "ray"\nmax_retry = 2\n', [], "unknown key 'max_retry' in [executor]; valid: address,"),
    ('[executor]\ngpus_per_job = "one"\n', [], "[executor] gpus_per_job = 'one' is not valid: it must be a number >= 0"),
    ("", ["--executor", "ray", "--partition", "gpu"], "--partition does not apply to the ray executor; it is an option of submitit"),
    ("", ["--executor", "nope"], "unknown executor 'nope'; valid choices:"),
    ("", ["--executor", "ray", "--max-retries", "-1"], "--max-retries must be a whole number >= 0, got -1"),
    ("", ["--executor", "submitit", "--gpus-per-job", "0.5"], "--gpus-per-job must be a whole number >= 0, got 0.5"),
])
def test_executor_options_are_validated(tmp_path, capsys, body, argv, needle):
    path = write_suite(tmp_path / "s.toml", extra="\n" + body)
    code = main(["run", str(path), "--out", str(tmp_path / "o"), "--no-progress", "--plan", *argv])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and err.count("\n") == 1 and "Traceback" not in err


def test_the_suite_section_picks_the_executor_and_its_settings(tmp_path):
    path = write_suite(tmp_path / "s.toml", extra='\n[executor]\nname = "ray"\naddress = "auto"\ncpus_per_job = 2\n'
                                                  'partition = "gpu"\narray_parallelism = 8\n')
    suite = load_suite(str(path))
    chosen = Engine(suite, tmp_path / "o").executor
    assert chosen.name == "ray" and chosen.address == "auto" and chosen.cpus_per_job == 2  # Slurm keys skipped
    slurm = make_executor("submitit", suite.raw["executor"], time_limit=30)
    assert (slurm.partition, slurm.array_parallelism, slurm.time_limit, slurm.cpus_per_job) == ("gpu", 8, 30, 2)
    assert {"local", "ray", "submitit"} <= set(EXECUTORS.names())


def _hammer(root: str, key: str, n: int, start, queue) -> None:
    import numpy as np

    cache = ArrayCache(Path(root), "forward")
    value = {"top1": np.arange(5000) % 7, "finite": np.ones(5000, dtype=bool)}
    start.wait()
    bad = 0
    for _ in range(n):
        cache.put(key, value)  # both processes compute (and write) the same entry at once
        got = cache.get(key)
        bad += got is None or not (got["top1"] == value["top1"]).all()
    queue.put((bad, cache.stats.corrupt))


def test_two_processes_writing_one_entry_at_once_both_end_with_a_valid_entry(tmp_path):
    ctx = mp.get_context("fork")
    start, queue = ctx.Barrier(2), ctx.Queue()
    key = ArrayCache(tmp_path, "forward").key("model", {"data": "x"})
    procs = [ctx.Process(target=_hammer, args=(str(tmp_path), key, 150, start, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert results == [(0, 0), (0, 0)]  # every read of either process found a complete, valid entry
    assert ArrayCache(tmp_path, "forward").get(key) is not None
    assert not list(tmp_path.rglob("*.tmp"))  # no temporary file left behind


# -- Ray ----------------------------------------------------------------------------------------
def test_ray_gives_the_local_results_and_a_warm_rerun_does_no_forward_pass(ray_cluster, suite_path, reference,
                                                                           tmp_path, capsys):
    cold = run_api(suite_path, tmp_path / "a", tmp_path / "cache", "ray")
    assert cold.summary.cells_run == 10 and cold.summary.forwards > 0 and cold.summary.executor == "ray"
    same_as_reference(tmp_path / "a", reference, capsys)
    code = main(["run", str(suite_path), "--out", str(tmp_path / "b"), "--cache-dir", str(tmp_path / "cache"),
                 "--threads", "1", "--no-progress", "--executor", "ray", "--reports", str(tmp_path / "rep")])
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("cells:"))
    assert code == 0 and "10 run | forward passes: 0 | encodings: 0 |" in line and "executor ray" in line, line
    same_as_reference(tmp_path / "b", reference, capsys)
    assert run_api(suite_path, tmp_path / "b", tmp_path / "cache", "ray").summary.cells_run == 0  # resume: nothing left


def _kill_first(pattern, found: list, stop: threading.Event) -> None:
    """SIGKILL the first process whose command line matches `pattern` (a worker running a job)."""
    while not stop.is_set() and not found:
        for proc in psutil.process_iter(["pid", "cmdline"]):
            cmd = " ".join(proc.info["cmdline"] or [])
            if re.match(pattern, cmd):
                os.kill(proc.info["pid"], signal.SIGKILL)
                found.append((proc.info["pid"], cmd))
                return
        time.sleep(0.01)


def test_a_ray_worker_killed_mid_job_is_retried_and_the_run_completes(ray_cluster, suite_path, reference, tmp_path,
                                                                      capsys):
    found, stop = [], threading.Event()
    killer = threading.Thread(target=_kill_first, args=(r"ray::run_specs", found, stop))
    killer.start()
    try:
        res = run_api(suite_path, tmp_path / "run", tmp_path / "cache", "ray", max_retries=2)
    finally:
        stop.set()
        killer.join()
    assert found, "no Ray worker was seen running a job"
    assert res.summary.jobs_failed == 0 and res.summary.cells_run == 10
    same_as_reference(tmp_path / "run", reference, capsys)


# -- submitit (its local executor: subprocesses) --------------------------------------------------
def test_submitit_gives_the_local_results_and_a_warm_rerun_does_no_forward_pass(suite_path, reference, tmp_path, capsys):
    cold = run_api(suite_path, tmp_path / "a", tmp_path / "cache", "submitit", max_in_flight=3)
    assert cold.summary.cells_run == 10 and cold.summary.forwards > 0 and cold.summary.jobs_failed == 0
    assert len(list((tmp_path / "a" / "submitit").glob("*_submitted.pkl"))) == 3  # one array task per group
    same_as_reference(tmp_path / "a", reference, capsys)
    warm = run_api(suite_path, tmp_path / "b", tmp_path / "cache", "submitit", max_in_flight=3)
    assert warm.summary.forwards == 0 and warm.summary.encodings == 0 and warm.summary.cells_run == 10
    same_as_reference(tmp_path / "b", reference, capsys)


def _kill_submitit_worker(folder: Path, found: list, stop: threading.Event) -> None:
    """SIGKILL the subprocess of the first array task that has started a job (its log names its pid)."""
    while not stop.is_set() and not found:
        for log in folder.glob("*_log.err") if folder.exists() else []:
            hit = re.search(r"authbench worker [^:]+:(\d+): job 1/", log.read_text(errors="replace"))
            if hit:
                os.kill(int(hit.group(1)), signal.SIGKILL)
                found.append(log.name)
                return
        time.sleep(0.01)


def test_a_killed_submitit_task_fails_in_one_line_and_a_rerun_completes(suite_path, reference, tmp_path, capsys):
    found, stop = [], threading.Event()
    killer = threading.Thread(target=_kill_submitit_worker, args=(tmp_path / "run" / "submitit", found, stop))
    killer.start()
    try:
        first = run_api(suite_path, tmp_path / "run", tmp_path / "cache", "submitit", max_in_flight=3, max_retries=0)
    finally:
        stop.set()
        killer.join()
    assert found and first.summary.jobs_failed >= 1 and len(first.summary.failures) == 1
    assert "failed: UncompletedJobError" in first.summary.failures[0] and "\n" not in first.summary.failures[0]
    assert "FAILED: " in first.summary_text()
    partial = measured(tmp_path / "run")
    assert partial.items() <= measured(reference).items() and len(partial) < 10  # what was written is right
    capsys.readouterr()
    code = main(["run", str(suite_path), "--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache"),
                 "--threads", "1", "--no-progress", "--executor", "submitit", "--max-in-flight", "3",
                 "--reports", str(tmp_path / "rep")])
    assert code == 0
    same_as_reference(tmp_path / "run", reference, capsys)


# -- one shared cache, two executors at once ------------------------------------------------------
def test_ray_and_submitit_over_one_cache_at_once(ray_cluster, suite_path, reference, tmp_path, capsys):
    cache, results = tmp_path / "shared-cache", {}

    def go(name, **options):
        results[name] = run_api(suite_path, tmp_path / name, cache, name, **options).summary

    threads = [threading.Thread(target=go, args=("ray",)),
               threading.Thread(target=go, args=("submitit",), kwargs={"max_in_flight": 2})]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {n: (s.cells_run, s.jobs_failed) for n, s in results.items()} == {"ray": (10, 0), "submitit": (10, 0)}
    for name in ("ray", "submitit"):
        same_as_reference(tmp_path / name, reference, capsys)
    checked = 0
    for namespace in ("forward", "encoding"):
        reader = ArrayCache(cache, namespace)
        for entry in (cache / namespace).rglob("*.bin"):
            assert reader.get(entry.stem) is not None, f"{namespace} entry {entry.name} is not valid"
            checked += 1
        assert reader.stats.corrupt == 0
    assert checked >= 8 and not list(cache.rglob("*.tmp"))


def test_a_bad_input_on_a_worker_is_one_line_exit_2(ray_cluster, tmp_path, capsys):
    body = '[data]\ndataset="digits"\nsubset=8\n[models]\nauthorized=["timm:resnet18"]\n[[defenses]]\nname="noise"\n'
    (tmp_path / "bad.toml").write_text(body)
    code = main(["run", str(tmp_path / "bad.toml"), "--out", str(tmp_path / "o"), "--no-progress", "--executor", "ray",
                 "--cache-dir", str(tmp_path / "cache")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "expects inputs of shape (3, 224, 224)" in err[-1] and "Traceback" not in "".join(err)


def test_job_ids_are_stable_across_processes(suite_path, tmp_path):
    suite = load_suite(str(suite_path))
    ids = [job_id(j) for j in Engine(suite, tmp_path / "x").jobs]
    spec: JobSpec = Engine(suite, tmp_path / "x", executor=make_executor("ray")).spec(Engine(suite, tmp_path / "x").jobs[0])
    assert spec.job == ids[0] and len(set(ids)) == len(ids)


def test_slurm_submission_carries_the_slurm_parameters(suite_path, tmp_path, monkeypatch):
    """Without a Slurm cluster: fake `srun` / `sbatch` on the PATH, submit one job array, read its sbatch script."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "sbatch").write_text("#!/bin/sh\necho \"Submitted batch job 4242\"\n")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    from bench.executors.submitit import SpecTask

    executor = make_executor("submitit", partition="gpu", gpus_per_job=1, cpus_per_job=4, mem_gb=32, time_limit=90,
                             array_parallelism=2, job_folder=str(tmp_path / "jobs"))
    assert executor.which() == "slurm"
    engine = Engine(load_suite(str(suite_path)), tmp_path / "run", executor=executor)
    tasks = executor.tasks(engine.jobs)
    assert [len(t) for t in tasks] == [1, 2, 2]  # ceil(5 jobs / 2 slots) = 3 per chunk, never across groups
    jobs = executor.executor().map_array(SpecTask(run_specs), [tuple(engine.spec(j) for j in t) for t in tasks])
    assert [j.job_id for j in jobs] == ["4242_0", "4242_1", "4242_2"]
    script = (tmp_path / "jobs" / "4242_submission.sh").read_text()
    for line in ("--array=0-2%2", "--partition=gpu", "--gpus-per-node=1", "--cpus-per-task=4", "--mem=32GB",
                 "--time=90", "--ntasks-per-node=1"):
        assert f"#SBATCH {line}\n" in script, line
    assert engine.spec(engine.jobs[0]).options["threads"] == 4  # the worker's torch threads follow --cpus-per-job

"""The `authbench` command line (also `python -m bench`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.errors import UserError

LISTABLE = ("defenses", "models", "suites", "attacks", "datasets")


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, as for every user error
        raise UserError(f"{self.prog}: {message}")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="authbench", description="Benchmark harness for model-specific authorization.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="run a suite (default: the embedded digits suite)")
    run.add_argument("suite", nargs="?", help="suite name in suites/ or a path to a .toml file")
    run.add_argument("--defense", action="append", help="only this defense (repeatable)")
    run.add_argument("--model", "--models", action="append", help="only this model label (repeatable)")
    run.add_argument("--psnr", action="append", type=float, help="only this PSNR point in dB (repeatable)")
    run.add_argument("--release", action="append", help="only this release format (repeatable)")
    run.add_argument("--out", type=Path, help="results folder (default: runs/<suite>)")
    run.add_argument("--reports", type=Path, help="reports folder (default: reports/<suite>)")
    run.add_argument("--cache-dir", type=Path, help="cache root (default: $AUTHBENCH_CACHE or ~/.cache/authbench)")
    run.add_argument("--full", action="store_true", help="also run the suite's tier = \"full\" entries (heavier attacks)")
    run.add_argument("--subset", type=int, help="evaluate a seeded subset of N test samples (overrides [data] subset)")
    run.add_argument("--data-root", type=Path, help="dataset folder (overrides [data] root)")
    run.add_argument("--random-weights", action="store_true",
                     help="timm/hf models with seeded random weights, no checkpoints (smoke runs; suite renamed *-random-weights)")
    run.add_argument("--batch-size", type=int, help="images per batch through encoding and every model (default: "
                     "suite [run] batch_size, else 256); results do not depend on it")
    run.add_argument("--device", help="compute device: cpu, cuda, cuda:N or auto (default: suite [run] device, else auto)")
    run.add_argument("--threads", type=int, help="torch CPU threads (on a shared machine 1 is often fastest)")
    run.add_argument("--no-progress", action="store_true", help="hide progress bars")
    run.add_argument("--plan", action="store_true",
                     help="print the jobs, their groups and tasks and the estimated forward passes; run nothing")
    ex = run.add_argument_group("executor (or the suite's [executor] section; see docs/executors.md)")
    ex.add_argument("--executor", help="where jobs run: local (default), ray, submitit, or an installed plugin")
    ex.add_argument("--address", help="ray: the cluster to join (auto, host:port, ray://host:10001; default: a local Ray)")
    ex.add_argument("--gpus-per-job", type=float, help="ray: num_gpus per task (fractions allowed); submitit: GPUs per array task")
    ex.add_argument("--cpus-per-job", type=float, help="CPUs per job (ray num_cpus, submitit cpus_per_task; default 1); "
                    "also the worker's torch threads unless --threads says")
    ex.add_argument("--max-in-flight", type=int, help="tasks submitted at once (ray default: twice what the cluster fits)")
    ex.add_argument("--max-retries", type=int, help="retries of a task whose worker died (ray default 3, submitit 1)")
    ex.add_argument("--partition", help="submitit: Slurm partition")
    ex.add_argument("--array-parallelism", type=int, help="submitit: array tasks running at once (Slurm %%N; local: "
                    "subprocesses at once, default CPUs / --cpus-per-job)")
    ex.add_argument("--time-limit", type=int, help="submitit: minutes per array task (default 240)")
    ex.add_argument("--mem-gb", type=float, help="submitit: memory per array task in GB")
    ex.add_argument("--job-folder", type=Path, help="submitit: pickled specs, logs, results, on shared storage "
                    "(default: <out>/submitit)")

    ls = sub.add_parser("list", help="what is registered")
    ls.add_argument("what", choices=LISTABLE)

    rep = sub.add_parser("report", help="render tables and figures from a results file without recomputing")
    rep.add_argument("results", type=Path, help="run folder or results.jsonl")
    rep.add_argument("--out", type=Path, help="reports folder (default: reports/<suite>)")
    rep.add_argument("--suite", help="suite whose [report] section picks the points (default: the results' suite)")
    rep.add_argument("--html", action="store_true", help="also write the static HTML site (<out>/site/index.html; "
                     "self-contained, opens from disk)")

    chk = sub.add_parser("check", help="compare results with a reference; exit 1 on a regression")
    chk.add_argument("results", type=Path, help="run folder, results.jsonl or leaderboard.json")
    chk.add_argument("--against", type=Path, required=True, help="reference leaderboard.json or results.jsonl")
    chk.add_argument("--tolerance", action="append", default=[], metavar="METRIC=POINTS", help="per-metric tolerance")
    chk.add_argument("--default-tolerance", type=float, help="tolerance for metrics not named (points)")
    chk.add_argument("--suite", help="suite whose [check] section gives tolerances (default: the reference's suite)")
    chk.add_argument("--strict", action="store_true", help="fail on improvements beyond tolerance too")

    cache = sub.add_parser("cache", help="inspect or clear the forward-pass cache")
    cache.add_argument("action", choices=("info", "clear"))
    cache.add_argument("--namespace", help="only this namespace (forward, encoding, zoo)")
    cache.add_argument("--cache-dir", type=Path)
    return p


EXECUTOR_FLAGS = ("address", "gpus_per_job", "cpus_per_job", "max_in_flight", "max_retries", "partition",
                  "array_parallelism", "time_limit", "mem_gb", "job_folder")


def _whole(value):
    """A count given as a float flag (--gpus-per-job 1) stays an int, so submitit takes it."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _cmd_run(args) -> int:
    from bench.api import engine_for, run_suite
    from bench.suite import load_suite
    from bench.suite_overrides import apply_overrides

    suite = apply_overrides(load_suite(args.suite), args.subset, args.data_root, args.random_weights)
    executor = {k: _whole(getattr(args, k)) for k in EXECUTOR_FLAGS}
    if executor["job_folder"] is not None:
        executor["job_folder"] = str(executor["job_folder"])
    options = dict(defenses=args.defense, models=args.model, psnr=args.psnr, releases=args.release, full=args.full,
                   batch_size=args.batch_size, device=args.device, threads=args.threads, cache_dir=args.cache_dir,
                   progress=not args.no_progress, executor=args.executor, **executor)
    if args.plan:
        print(engine_for(suite, out=args.out, **options).describe())
        return 0
    results = run_suite(suite, out=args.out, reports=args.reports, **options)
    print(results.summary_text())
    return 1 if results.summary.jobs_failed else 0


def _cmd_list(args) -> int:
    if args.what == "defenses":
        from bench.defenses import list_defenses as fn
    elif args.what == "attacks":
        from bench.attacks import list_attacks as fn
    elif args.what == "models":
        from bench.models.sources import list_models as fn
    elif args.what == "datasets":
        from bench.data import DATASETS

        def fn():
            return {k: v[0] for k, v in DATASETS.items()}
    else:
        from bench.suite import available_suites, load_suite

        def fn():
            return {name: load_suite(str(path)).description for name, path in available_suites().items()}

    entries = fn()
    width = max(map(len, entries), default=0)
    for name, desc in entries.items():
        print(f"{name:<{width}}  {desc}")
    return 0


def _cmd_report(args) -> int:
    from bench.api import dataset_classes
    from bench.protocols import render
    from bench.results import read_rows
    from bench.suite import load_suite

    rows = read_rows(args.results)
    if not rows:
        raise UserError(f"{args.results} holds no result rows; run a suite first")
    name = args.suite or rows[0]["suite"]
    try:
        suite = load_suite(name)
    except UserError:
        suite = None
    report, classes = (suite.report, dataset_classes(suite)) if suite is not None else ({}, None)
    for path in render(rows, args.out or Path("reports") / rows[0]["suite"], report, site=args.html, classes=classes):
        print(path)
    return 0


def _parse_tolerances(items: list[str]) -> dict[str, float]:
    out = {}
    for item in items:
        metric, sep, value = item.partition("=")
        try:
            out[metric] = float(value)
        except ValueError:
            sep = ""
        if not sep or not metric:
            raise UserError(f"bad --tolerance {item!r}; expected METRIC=POINTS, e.g. auth_gap=2.0")
    return out


def _suite_of(reference) -> str | None:
    """The shipped suite a reference came from, when it is one (its [check] gives the tolerances)."""
    from bench.suite import available_suites

    name = reference.get("provenance", {}).get("suite") if isinstance(reference, dict) else (reference or [{}])[0].get("suite")
    return name if name in available_suites() else None


def _cmd_check(args) -> int:
    from bench.reports.check import check, format_check, load_reference
    from bench.suite import load_suite

    fresh, reference = load_reference(args.results), load_reference(args.against)
    tolerances, default = {}, 1.0
    suite_name = args.suite or _suite_of(reference)
    if suite_name:
        cfg = load_suite(suite_name).check
        tolerances.update(cfg.get("tolerance", {}))
        default = float(cfg.get("default_tolerance", default))
    tolerances.update(_parse_tolerances(args.tolerance))
    if args.default_tolerance is not None:
        default = args.default_tolerance
    result = check(fresh, reference, tolerances, default_tolerance=default, strict=args.strict)
    print(format_check(result))
    return 0 if result.ok else 1


def _cmd_cache(args) -> int:
    from bench.cache import cache_clear, cache_info, cache_root

    root = args.cache_dir or cache_root()
    if args.action == "clear":
        cache_clear(root, args.namespace)
        print(f"cleared {root / args.namespace if args.namespace else root}")
        return 0
    info = cache_info(root)
    print(f"cache root: {root}")
    for ns, entry in info.items():
        if not args.namespace or ns == args.namespace:
            print(f"{ns:<10} {entry['entries']:>7} entries {entry['bytes'] / 2**20:>9.1f} MiB")
    return 0


COMMANDS = {"run": _cmd_run, "list": _cmd_list, "report": _cmd_report, "check": _cmd_check, "cache": _cmd_cache}


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except UserError as exc:
        print(f"authbench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("authbench: interrupted; finished cells are saved and the next run resumes", file=sys.stderr)
        return 130

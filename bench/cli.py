"""The `authbench` command line (also `python -m bench`)."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path

from bench import allocator
from bench.core.errors import UserError, bounded, check_folder
from bench.executors import executor_options
from bench.paths import output_file, output_folder, safe_part

LISTABLE = ("defenses", "attacks", "protocols", "executors", "sources", "datasets", "fingerprints", "detectors",
            "models", "suites")
TABLES = ("ne-spectra", "ne-layers")
DEFAULT_ARCHES = {"ne-spectra": ["resnet-50", "vit-b16", "swinv2-t", "deit-b16"], "ne-layers": ["resnet-50", "vit-b16"]}


class _Parser(argparse.ArgumentParser):
    """No abbreviated flags (`--thread` is an error, not `--threads`); errors as one line, exit 2, naming
    the command's help."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message):  # one line, exit 2, as for every user error (main adds the one prefix)
        command = self.prog.partition(" ")[2]
        raise UserError(f"{command + ': ' if command else ''}{message}; see `{self.prog} --help`")


def add_executor_flags(group, executor: str | None = None) -> None:
    """One flag per executor option, generated from the executors' declarations (bench.executors.Option):
    the built-ins', installed plugins' and, with `executor`, that (path-named) executor's."""
    types = {"number": float, "integer": int, "string": str, "path": Path}
    for name, decls in executor_options(executor).items():
        flagged = [(ex, o) for ex, o in decls if o.cli]
        if not flagged:
            continue
        kinds = {o.type for _, o in flagged}
        kind = "number" if "number" in kinds else kinds.pop()  # an int flag where every executor counts
        texts = {o.help for _, o in flagged}
        text = "; ".join(f"{ex}: {o.help}" for ex, o in flagged) if len(texts) > 1 or len(decls) == 1 else texts.pop()
        group.add_argument(flagged[0][1].flag, dest=name, type=types[kind], help=text.replace("%", "%%"))


def _executor_named(argv: list[str]) -> str | None:
    """The value of --executor in a command line (its options' flags are generated before parsing)."""
    for i, arg in enumerate(argv):
        if arg == "--executor" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--executor="):
            return arg.partition("=")[2]
    return None


def _version() -> str:
    import bench

    return f"authbench {bench.__version__}"


def _parser(argv: list[str] | None = None, executor: str | None = None) -> argparse.ArgumentParser:
    """The command line; `argv` decides whether `data convert`'s own options are loaded (that module's package
    imports torch, which `--help`, `list suites` and `--version` never need); `executor` adds a path-named
    executor's own flags."""
    p = _Parser(prog="authbench", description="Benchmark harness for model-specific authorization. "
                "Start with `authbench run` (a quick digits suite, a few minutes on a CPU).")
    p.add_argument("--version", action="version", version=_version())
    p.add_argument("--malloc", choices=("tuned", "default"), help="glibc malloc thresholds: tuned (the default: "
                   "fewer page faults) or glibc's default (same as AUTHBENCH_MALLOC=default; bench.allocator)")
    sub = p.add_subparsers(dest="command", parser_class=_Parser)

    run = sub.add_parser("run", help="run a suite (default: digits-quick, a few minutes on a CPU)")
    run.add_argument("suite", nargs="?", help="suite name in suites/ or a path to a .toml file (default: digits-quick; "
                     "the reference grid: digits)")
    run.add_argument("--defense", action="append", help="only this defense entry, by name or label (repeatable)")
    run.add_argument("--model", "--models", action="append",
                     help="only this model label, as authorized and as evaluated model (repeatable)")
    run.add_argument("--authorized", action="append", help="only this authorized model (repeatable); every "
                     "evaluated model still scores its data")
    run.add_argument("--evaluated", action="append", help="only this evaluated model (repeatable)")
    run.add_argument("--psnr", action="append", type=float, help="only this PSNR point in dB (repeatable)")
    run.add_argument("--release", action="append", help="only this release format (repeatable)")
    run.add_argument("--out", type=Path, help="results folder (default: runs/<suite>)")
    run.add_argument("--reports", type=Path, help="reports folder (default: <out>/reports, beside the results)")
    run.add_argument("--cache-dir", type=Path, help="cache root (default: $AUTHBENCH_CACHE or ~/.cache/authbench)")
    run.add_argument("--full", action="store_true", help="also run the suite's tier = \"full\" entries (heavier attacks)")
    run.add_argument("--subset", type=int, help="evaluate a seeded subset of N test samples (overrides [data] subset)")
    run.add_argument("--data-root", type=Path, help="dataset folder (overrides [data] root)")
    run.add_argument("--random-weights", action="store_true",
                     help="timm/hf models with seeded random weights, no checkpoints (smoke runs; suite renamed *-random-weights)")
    run.add_argument("--batch-size", type=int, help="images per batch through encoding and every model (default: "
                     "suite [run] batch_size, else 256); results do not depend on it")
    run.add_argument("--device", help="compute device: cpu, cuda, cuda:N or auto (default: suite [run] device, else auto)")
    run.add_argument("--threads", type=int, help="torch intra-op threads of this process (default on CPU: 1, which "
                     "was 3-5x faster than torch's one per core here; on CUDA: torch's default)")
    run.add_argument("--trials", type=int, help="at most N trials of each cell that trains at run time (default: the "
                     "suite's [check] trials); --trials 1 is the cheap ranking mode: trial 0's cells are the reference's")
    run.add_argument("--no-progress", action="store_true", help="hide progress bars")
    run.add_argument("--allow-mixed", action="store_true",
                     help="add this suite's rows to an --out folder that holds another suite's rows (refused otherwise)")
    run.add_argument("--render", action="store_true", help="render the reports even when no row changed since "
                     "they were last rendered (by default they are rendered again only then)")
    run.add_argument("--plan", action="store_true",
                     help="print the jobs, their groups and tasks and the estimated forward passes; run nothing")
    ex = run.add_argument_group("executor (or the suite's [executor] section; see docs/executors.md)")
    ex.add_argument("--executor", help="where jobs run: local (default), ray, submitit, or an installed plugin")
    add_executor_flags(ex, executor)

    ls = sub.add_parser("list", help="what is registered")
    ls.add_argument("what", choices=LISTABLE)

    rep = sub.add_parser("report", help="render tables and figures from a results file without recomputing")
    rep.add_argument("results", type=Path, help="run folder or results.jsonl")
    rep.add_argument("--out", type=Path, help="reports folder (default: <run folder>/reports; the shipped reports: "
                     "--out reports/<suite>)")
    rep.add_argument("--suite", help="suite whose [report] section picks the points (default: the suite file the "
                     "results recorded; a name outside suites/ resolves by that recorded path)")
    rep.add_argument("--html", action="store_true", help="also write the static HTML site (<out>/site/index.html; "
                     "self-contained, opens from disk)")

    chk = sub.add_parser("check", help="compare results with a reference; exit 1 on a regression or nothing compared")
    chk.add_argument("results", type=Path, help="run folder, results.jsonl or a reference .json")
    chk.add_argument("--against", type=Path, required=True,
                     help="reference .json (authbench leaderboard freeze), a leaderboard.json or results.jsonl")
    chk.add_argument("--tolerance", action="append", default=[], metavar="METRIC=POINTS",
                     help="per-metric tolerance, replacing the reference's recorded one")
    chk.add_argument("--default-tolerance", type=float, help="tolerance for metrics not named, replacing the recorded ones")
    chk.add_argument("--suite", help="suite whose [check] section gives tolerances where the reference records none "
                     "(default: the suite file the reference recorded, else the fresh results')")
    chk.add_argument("--strict", action="store_true", help="fail on improvements beyond tolerance too")
    chk.add_argument("--allow-subset", action="store_true",
                     help="compare a run of another suite digest or model set on the cells both hold")
    chk.add_argument("--format", choices=("text", "json"), default="text", help="output format (default text)")
    chk.add_argument("--junit", type=Path, metavar="FILE", help="also write JUnit XML, one testcase per cell")

    lb = sub.add_parser("leaderboard", help="freeze a run's boards into a reference `check` compares with")
    lb.add_argument("action", choices=("freeze",))
    lb.add_argument("results", type=Path, help="run folder or results.jsonl (trained cells: several trials)")
    lb.add_argument("--out", type=Path, required=True, help="reference .json to write, e.g. reports/leaderboards/digits.json")
    lb.add_argument("--suite", help="suite whose [check] section gives the tolerance floors (default: the results' suite)")
    lb.add_argument("--boards", type=Path, metavar="FILE", help="also write the boards alone (kind authbench-boards), "
                    "the file the package ships for `authbench rank`: bench/leaderboards/<suite>.json")
    lb.add_argument("--entries", type=Path, metavar="DIR", help="also write one leaderboard entry JSON per ranked row "
                    "(docs/entry.schema.json) under DIR/<suite>/<board>/, e.g. reports/leaderboards/entries")

    zoo = sub.add_parser("zoo", help="the pinned digits zoo: list, verify, retrain (into the cache), pin")
    zoo.add_argument("action", choices=("list", "verify", "retrain", "pin"))
    zoo.add_argument("--model", "--models", action="append", help="only this zoo model, e.g. vit-s0 (repeatable)")
    zoo.add_argument("--cache-dir", type=Path, help="cache root retrain writes to and pin reads from "
                     "(default: $AUTHBENCH_CACHE or ~/.cache/authbench)")
    zoo.add_argument("--tolerance", type=float, help="retrain: accuracy points within which a recipe reproduces "
                     "the pinned weights (default 1.0)")
    zoo.add_argument("--threads", type=int, help="torch CPU threads")
    zoo.add_argument("--no-progress", action="store_true", help="hide training progress bars")

    tab = sub.add_parser("tables", help="regenerate a paper table that needs only the architectures (offline)")
    tab.add_argument("table", choices=TABLES, help="ne-spectra: NE Table 5 + Figure 3; ne-layers: NE Table 6")
    tab.add_argument("--arch", action="append", help="backbone (resnet-50, vit-b16, swinv2-t, deit-b16, mambavision-t) "
                     "or zoo:<name> (repeatable; ne-layers: the first is authorized, the rest unauthorized)")
    tab.add_argument("--pretrained", action="store_true", help="the published weights (needs the hub or its cache); "
                     "default: seeded random weights from the published configuration, labelled so")
    tab.add_argument("--seed", type=int, default=0, help="random-weights seed (the next models take seed+1, ...)")
    tab.add_argument("--samples", type=int, default=8, help="ne-layers: images encoded")
    tab.add_argument("--psnr", action="append", type=float, help="ne-layers: PSNR points (default: the paper's 40 .. 0 dB)")
    tab.add_argument("--psnr-mode", default="true", choices=("true", "paper-nominal"), help="ne-layers: PSNR scale")
    tab.add_argument("--every", type=int, default=40, help="ne-layers: checkpoint every N forward operations (paper: 40)")
    tab.add_argument("--out", type=Path, default=Path("reports") / "ne-tables", help="output folder")

    rnk = sub.add_parser("rank", help="place a run's rows on the matching reference board and write the merged boards")
    rnk.add_argument("results", type=Path, help="run folder or results.jsonl of the new defense")
    rnk.add_argument("--against", type=Path, help="reference: a leaderboard/boards .json or a results.jsonl "
                     "(default: reports/leaderboards/<suite>.json)")
    rnk.add_argument("--out", type=Path, help="where the merged boards and their HTML page go (default: <run folder>/ranked)")
    rnk.add_argument("--suite", help="suite whose [standard_attacks] scores a results.jsonl reference (default: its own)")
    rnk.add_argument("--submit", type=Path, metavar="DIR", help="also write the new rows' leaderboard entries "
                     "(DIR/<suite>/<board>/<entry>.json, the files of a pull request)")

    data = sub.add_parser("data", help="dataset tools")
    data_sub = data.add_subparsers(dest="data_command", required=True, parser_class=_Parser)
    convert = data_sub.add_parser("convert", help="write an .npz or ImageFolder from an ImageFolder tree, "
                                  "CIFAR pickle batches, images + labels CSV or another .npz")
    if argv is None or "data" in argv:
        from bench.data.convert import add_arguments as add_convert_arguments

        add_convert_arguments(convert)

    from bench.kits.cli import add_arguments as add_kit_arguments

    add_kit_arguments(sub)

    cache = sub.add_parser("cache", help="inspect or clear the forward-pass cache")
    cache.add_argument("action", choices=("info", "clear"))
    cache.add_argument("--namespace", help="only this namespace (forward, encoding, zoo)")
    cache.add_argument("--cache-dir", type=Path)
    return p


def _whole(value):
    """A count given as a float flag (--gpus-per-job 1) stays an int, so submitit takes it."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


LOCAL_DATASETS = ("digits", "synthetic")  # built in or generated: nothing to download


def needs_hub(suite) -> bool:
    """Whether a suite's models or data may come from a model hub: any model that is not a zoo model, a
    local checkpoint, a factory or seeded random weights, or data other than a built-in or local dataset."""
    specs = [*suite.authorized, *suite.evaluated, *(m for d in suite.defenses for m in d.models if ":" in str(m))]
    for spec in specs:
        if isinstance(spec, str):
            source, _, _ = spec.partition(":")
            spec = {"source": source}
        source = spec.get("source")
        if source in ("zoo", "torch", "python", "tflite", "onnx") or spec.get("checkpoint") or spec.get("pretrained") is False:
            continue  # built in, local files or code, or seeded random weights
        return True
    data = suite.data or {}
    return str(data.get("dataset")) not in LOCAL_DATASETS and not data.get("root")


def offline_by_default(needed: bool) -> None:
    """No model hub call where nothing needs downloading (the hub libraries otherwise retry for minutes
    without a network); a user's own HF_HUB_OFFLINE / HF_DATASETS_OFFLINE always wins."""
    if not needed:
        for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
            os.environ.setdefault(name, "1")


RUN_OUTPUT_ONLY = ("command", "suite", "no_progress", "render", "plan", "malloc")  # flags that change no cell


def _rerun_key(args, suite_path: Path) -> tuple[str | None, Path]:
    """The done stamp's key of this command line (bench.engine.rerun) and its results folder, without torch."""
    from bench.engine.rerun import default_out, rerun_key

    command = {k: (str(v.expanduser().resolve()) if isinstance(v, Path) else v) for k, v in sorted(vars(args).items())
               if k not in RUN_OUTPUT_ONLY}
    out = args.out if args.out is not None else default_out(suite_path, args.random_weights)
    command["out"] = str(Path(out).expanduser().resolve())
    cache = args.cache_dir or Path(os.environ.get("AUTHBENCH_CACHE") or Path.home() / ".cache" / "authbench")
    return rerun_key(suite_path=suite_path, command=command, cache=cache), Path(out)


def _cmd_run(args) -> int:
    import time

    from bench.engine.rerun import done_rerun, print_done
    from bench.suite import find_suite

    started = time.perf_counter()
    key, out = (None, None) if args.plan else _rerun_key(args, find_suite(args.suite))
    stamp = done_rerun(out, key) if key and not args.render else None
    if stamp is not None:  # every job done and nothing changed since: no plan, no torch (issue 26)
        print_done(stamp, progress=not args.no_progress, started=started)
        return 0

    from bench.api import engine_for, run_suite
    from bench.engine.rerun import RENDER_STAMP, clear_stamp, write_stamp
    from bench.suite import load_suite
    from bench.suite_overrides import apply_overrides

    suite = apply_overrides(load_suite(args.suite), args.subset, args.data_root, args.random_weights)
    offline_by_default(needs_hub(suite))
    executor = {k: _whole(getattr(args, k)) for k in executor_options(args.executor)
                if getattr(args, k, None) is not None}
    executor = {k: str(v) if isinstance(v, Path) else v for k, v in executor.items()}
    options = dict(defenses=args.defense, models=args.model, authorized=args.authorized, evaluated=args.evaluated,
                   psnr=args.psnr, releases=args.release, full=args.full, trials=args.trials,
                   batch_size=args.batch_size, device=args.device, threads=args.threads, cache_dir=args.cache_dir,
                   progress=not args.no_progress, executor=args.executor, allow_mixed=args.allow_mixed, **executor)
    if args.plan:
        print(engine_for(suite, out=args.out, **options).describe())
        return 0
    if out is not None:
        clear_stamp(out)
    results = run_suite(suite, out=args.out, reports=args.reports, rerender=args.render, check=False, **options)
    print(results.summary_text())
    s = results.summary
    if key is not None and s.complete and results.records:  # the next rerun can tell it has nothing to do
        reports = args.reports or Path(s.results).parent / "reports"
        try:
            rendered = json.loads((reports / RENDER_STAMP).read_text()).get("inputs")
        except (OSError, ValueError, AttributeError):
            rendered = None
        if rendered is not None:
            write_stamp(Path(s.results).parent, key=key, results=s.results, reports=reports, render_inputs=rendered,
                        header=f"authbench: suite {suite.name}: all {s.jobs_total} job(s) done: nothing to run",
                        head=results.summary_head(), tail=results.summary_tail(), cells=s.cells_total,
                        jobs=s.jobs_total, superseded=s.superseded, merged=s.merged, executor=s.executor)
    return 1 if results.summary.jobs_failed else 0


# `authbench list <what>`: each kind's registry (module, attribute), imported when listed
REGISTRIES = {
    "defenses": ("bench.defenses", "DEFENSES"), "attacks": ("bench.attacks", "ATTACKS"),
    "protocols": ("bench.protocols", "PROTOCOLS"), "executors": ("bench.executors", "EXECUTORS"),
    "sources": ("bench.models.sources", "SOURCES"), "datasets": ("bench.data", "DATASETS"),
    "fingerprints": ("bench.fingerprint", "FINGERPRINTS"), "detectors": ("bench.fingerprint.detectors", "DETECTORS"),
}


def _cmd_list(args) -> int:
    from bench.core.catalog import KINDS, static_describe

    static = static_describe(args.what) if args.what in KINDS else None  # from the source: no torch
    if static is not None:
        fn = lambda: static  # noqa: E731
    elif args.what in REGISTRIES:
        module, attr = REGISTRIES[args.what]
        fn = getattr(importlib.import_module(module), attr).describe
    elif args.what == "models":
        from bench.models.sources import list_models as fn
    else:
        from bench.suite import available_suites, suite_description

        def fn():  # the files' descriptions, without validating them (that imports every plugin: torch)
            return {name: suite_description(path) for name, path in available_suites().items()}

    entries = fn()
    width = max(map(len, entries), default=0)
    for name, desc in entries.items():
        print(f"{name:<{width}}  {desc}")
    return 0


def _cmd_report(args) -> int:
    from bench.api import dataset_classes
    from bench.protocols import render
    from bench.core.results import read_rows
    from bench.suite import recorded_suite

    rows = read_rows(args.results)
    if not rows:
        raise UserError(f"{args.results} holds no result rows; run a suite first")
    if args.out is not None:
        check_folder(args.out, "--out")
    folder = args.results if args.results.is_dir() else args.results.parent
    suite, note = recorded_suite(rows, args.suite)  # the suite the rows recorded (path and digest), or --suite
    if note:
        print(f"authbench: {note}", file=sys.stderr)
    report, classes = (suite.report, dataset_classes(suite)) if suite is not None else ({}, None)
    standard = suite.standard_attacks if suite is not None else {}
    with foreign_rows(args.results):
        paths = render(rows, args.out or folder / "reports", report, standard, site=args.html, classes=classes)
    for path in paths:
        print(path)
    return 0


@contextmanager
def foreign_rows(path):
    """Rows that pass as result rows but lack a field a report or a check needs: one line, not a traceback."""
    try:
        yield
    except KeyError as exc:
        raise UserError(f"{path}: a row has no {exc} field, which the reports need; is this an authbench "
                        "results.jsonl?") from None


def _parse_tolerances(items: list[str]) -> dict[str, float]:
    out = {}
    for item in items:
        metric, sep, value = item.partition("=")
        try:
            out[metric] = float(value)
        except ValueError:
            sep = ""
        if not sep or not metric:
            raise UserError(f"bad --tolerance {item!r}; expected METRIC=POINTS, e.g. attacked_gap=2.0")
    return out


def _cmd_check(args) -> int:
    import bench.protocols  # noqa: F401  (the built-in protocols declare their boards before the suite is parsed)
    from bench.reports.check import check, format_check, github_annotations, to_text_json, write_junit
    from bench.core.results import json_view
    from bench.reports.reference import Tolerances, from_source, read_source, restrict_to_models
    from bench.suite import recorded_suite

    if args.junit:
        output_file(args.junit, "--junit")  # before any work: a path that cannot be written is one line
    fresh_source, reference_source = read_source(args.results), read_source(args.against)  # each file read once
    suite, note = recorded_suite(reference_source, args.suite)  # the reference's recorded suite,
    if suite is None and args.suite is None:                      # else the fresh results'
        suite, note = recorded_suite(fresh_source)
    if note:
        print(f"authbench: {note}", file=sys.stderr)
    tolerances = Tolerances.from_check(suite.check if suite is not None else {})
    with foreign_rows(f"{args.results} or {args.against}"):
        reference = from_source(reference_source, str(args.against), tolerances)
        if args.allow_subset and isinstance(fresh_source, list) and reference.models:
            # a cell pools its rows over the models that hold it: compare it over the reference's models only (a
            # --full run adds models to an entry the reference measured on fewer)
            kept = restrict_to_models(json_view(fresh_source), reference.models)
            if kept and len(kept) < len(fresh_source):
                print(f"authbench: --allow-subset: compared over the reference's {len(reference.models)} models; "
                      f"{len(fresh_source) - len(kept)} fresh row(s) of other models left out", file=sys.stderr)
                fresh_source = kept
        fresh = from_source(fresh_source, str(args.results), tolerances)
        result = check(fresh, reference, strict=args.strict, allow_subset=args.allow_subset,
                       override=_parse_tolerances(args.tolerance), override_default=args.default_tolerance)
    print(to_text_json(result) if args.format == "json" else format_check(result))
    if args.junit:
        write_junit(result, args.junit)
    if os.environ.get("GITHUB_ACTIONS") == "true":
        print(github_annotations(result))
    return 0 if result.ok else 1


def _cmd_leaderboard(args) -> int:
    import bench.protocols  # noqa: F401  (the built-in protocols declare their boards before the suite is parsed)
    from bench.reports.boards import build_boards, parse_standard
    from bench.reports.entries import write_entries
    from bench.reports.reference import Tolerances, freeze
    from bench.core.results import read_rows
    from bench.suite import recorded_suite

    output_file(args.out, "--out")
    if args.entries is not None:
        output_folder(args.entries, "--entries")
    rows = read_rows(args.results)
    if not rows:
        raise UserError(f"{args.results} holds no result rows; run a suite first")
    suite, note = recorded_suite(rows, args.suite)  # the suite the rows recorded, or --suite
    if note:
        print(f"authbench: {note}", file=sys.stderr)
    boards = build_boards(rows, parse_standard(suite.standard_attacks if suite else {}))
    if args.entries is not None:  # entries go under DIR/<suite>/<board>/: names from the rows, checked first
        for b in boards:
            safe_part(b.key.suite, f"the suite of the rows in {args.results}")
            safe_part(b.key.board, "board")
    ref = freeze(rows, args.out, Tolerances.from_check(suite.check if suite else {}), boards=[b.to_json() for b in boards])
    if args.boards is not None:
        from bench.reports.boards import boards_payload
        from bench.reports.tables import provenance_of

        args.boards.parent.mkdir(parents=True, exist_ok=True)
        args.boards.write_text(json.dumps(boards_payload(boards, provenance_of(rows)), indent=1) + "\n")
        print(f"wrote the boards alone to {args.boards}")
    if args.entries is not None:
        written = write_entries(boards, args.entries, only_new=False, ranked_only=True)
        print(f"wrote {len(written)} leaderboard entr{'y' if len(written) == 1 else 'ies'} under {args.entries}")
    trained = [c for c in ref.cells if c.trained]
    spread = [c for c in trained if c.n_trials >= 2]
    print(f"froze {len(ref.cells)} cells of suite {ref.suite!r} ({len(ref.models or ())} models) to {args.out}: "
          f"{len(ref.cells) - len(trained)} exact (inference only), {len(trained)} trained at run time "
          f"({len(spread)} with a measured spread over trials)")
    return 0


def _cmd_zoo(args) -> int:
    from bench.models import zoo

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.action in ("list", "verify"):
        statuses = zoo.zoo_status(args.model, verify=args.action == "verify")
        width = max(len(s.name) for s in statuses)
        for s in statuses:
            if not s.pinned:
                print(f"{s.name:<{width}}  not pinned{'  FAIL: ' + s.problem if args.action == 'verify' else ''}")
                continue
            acc = f"pinned acc {s.pinned_accuracy:.2f}%"
            if args.action == "verify":
                state = f"FAIL: {s.problem}" if s.problem else f"ok (sha256 verified, acc now {s.accuracy:.2f}%)"
                print(f"{s.name:<{width}}  {s.sha256[:12]}  {acc}  {state}")
            else:
                print(f"{s.name:<{width}}  {s.file}  {s.bytes / 1024:7.1f} KiB  sha256 {s.sha256[:12]}  {acc}  "
                      f"{s.description}")
        failed = [s for s in statuses if s.problem]
        if args.action == "verify":
            print(f"verified {len(statuses) - len(failed)} of {len(statuses)} zoo model(s)"
                  + (f"; {len(failed)} FAILED" if failed else ""))
        return 1 if failed else 0
    if args.action == "pin":
        print(zoo.pin(args.model, root=args.cache_dir))
        return 0
    tolerance = zoo.REPRODUCE_TOLERANCE if args.tolerance is None else args.tolerance
    if args.cache_dir is not None:
        check_folder(args.cache_dir, "--cache-dir")
    results = zoo.retrain(args.model, root=args.cache_dir, progress=not args.no_progress, tolerance=tolerance)
    for r in results:
        pinned = "no pinned weights" if r.pinned_accuracy is None else (
            f"pinned {r.pinned_accuracy:.2f}%, delta {r.accuracy - r.pinned_accuracy:+.2f} -> "
            f"{'reproduces' if r.reproduces else 'DOES NOT reproduce'} (tolerance {r.tolerance:g} points)"
            f"{', bit-identical weights' if r.identical else ', weights differ'}")
        print(f"{r.name}: retrained in {r.seconds:.1f}s, test acc {r.accuracy:.2f}%; {pinned}; wrote {r.path}")
    bad = [r for r in results if r.reproduces is False]
    total = sum(r.seconds for r in results)
    print(f"retrained {len(results)} model(s) in {total:.1f}s: {len(results) - len(bad)} reproduce"
          + (f", {len(bad)} do not ({', '.join(r.name for r in bad)})" if bad else ""))
    return 1 if bad else 0


def _cmd_tables(args) -> int:
    offline_by_default(args.pretrained)  # seeded random weights from their configs: no hub (set before importing it)
    from bench.reports.ne_spectra import TABLE6_PSNR, render_layers, render_spectra

    arches = args.arch or DEFAULT_ARCHES[args.table]
    if args.samples < 1 or args.every < 1:
        raise UserError("--samples and --every must be >= 1")
    if args.table == "ne-spectra":
        paths = render_spectra(arches, args.out, args.pretrained, args.seed)
    else:
        paths = render_layers(arches[0], arches[1:], args.out, args.pretrained, args.seed, args.samples,
                              tuple(args.psnr or TABLE6_PSNR), args.every, args.psnr_mode)
    for path in paths:
        print(path)
    return 0


def _cmd_cache(args) -> int:
    from bench.core.cache import cache_clear, cache_info, cache_root

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


def _cmd_data(args) -> int:
    from bench.data.convert import run as run_convert

    return run_convert(args)


COMMANDS = {"run": _cmd_run, "list": _cmd_list, "report": _cmd_report, "check": _cmd_check,
            "leaderboard": _cmd_leaderboard, "zoo": _cmd_zoo, "tables": _cmd_tables,
            "data": _cmd_data,
            "cache": _cmd_cache}


def _cmd_rank(args) -> int:
    from bench.reports.rank import rank_command

    for line in rank_command(args.results, against=args.against, out=args.out, submit=args.submit,
                             suite=args.suite):
        print(line)
    return 0


COMMANDS["rank"] = _cmd_rank


def _cmd_kit(args) -> int:
    from bench.kits.cli import run

    return run(args)


COMMANDS["kit"] = _cmd_kit


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        argv = sys.argv[1:] if argv is None else list(argv)
        parser = _parser(argv, _executor_named(argv))
        args = parser.parse_args(argv)
        if args.command is None:  # bare `authbench`: the usage and the commands, exit 2 as for a missing argument
            parser.print_help(sys.stderr)
            return 2
        if args.malloc:
            os.environ["AUTHBENCH_MALLOC"] = args.malloc  # workers inherit it with the other AUTHBENCH_* settings
        allocator.tune()
        return COMMANDS[args.command](args)
    except UserError as exc:
        print(f"authbench: error: {bounded(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("authbench: interrupted; finished cells are saved and the next run resumes", file=sys.stderr)
        return 130

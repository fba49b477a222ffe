"""Harness overhead: a cold `bench.evaluate` run against a bare torch loop doing the same work.

Setup (small, so repeats fit): --n `synthetic` 3 x S x S images (default 256 at 64 x 64), timm
resnet18 and vit_tiny_patch16_224 at S x S (seeded random weights, 10 classes), both authorized
and both evaluated; ne-patch, ne-operator and noise at one PSNR, releases float and uint8; batch
--batch-size; one thread (torch.set_num_threads(1)). `--data digits`: the digits test split (subset
--n, 0 = all 540) and the pinned zoo models --zoo (default cnn-s0, vit-s0): the digits reduced suite.

harness: `bench.evaluate(suite)` with a fresh cache dir and results dir per repeat (cold: every
         forward pass and encoding is computed), reports off; its provenance lru caches (git
         revision, package versions) are cleared first, as in a fresh `authbench run`.
bare:    the same work by hand, per job the harness ran (clean baseline; each defense x authorized
         model x release): load the models (`load_model`, the same seeded timm build), `fit` each
         model-specific defense once per authorized model, then for every batch of the split:
         `defense.directions` + `bench.defenses.release.calibrate`, each evaluated model's forward
         pass (module(normalize(x)), torch.no_grad), top-1/top-5 and the first-layer deviation the
         harness records (`FirstLinear.output_deviation`, the clean norms once per model and batch).
         No cache, no results file, no hashing.
         Its per-cell top-1 is checked against the harness's rows (same work, same numbers).

Repeats are interleaved in one process (harness/bare order alternating), after one warm-up pair on
--batch-size images; printed, for wall time and for this process's CPU time (one thread: robust to
other load on a shared machine): medians, the median of the per-repeat ratios harness/bare (target
<= 1.10), and the bookkeeping per cell, (harness - bare) / cells, in ms; and the harness-only steps
(planning, cache reads/writes, result writes, provenance, input checks, weight digests) timed in place
by wrapping them in this process (BOOKKEEPING), per cell. Printed, never asserted.
Run: PYTHONPATH=. python benchmarks/bench_overhead.py [--repeats 3] [--n 128] [--size 64]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import bench  # noqa: E402
from bench.core import provenance  # noqa: E402
from bench.data import load_dataset  # noqa: E402
from bench.defenses import get_defense  # noqa: E402
from bench.defenses.release import calibrate  # noqa: E402
from bench.models.sources import load_model  # noqa: E402


def model_specs(size: int, data: str = "synthetic", zoo=("cnn-s0", "vit-s0")) -> dict[str, dict]:
    if data == "digits":  # the pinned digits zoo (the digits reduced suite)
        return {name: {"source": "zoo", "model": name, "name": name} for name in zoo}
    common = {"source": "timm", "pretrained": False, "init_seed": 0, "num_classes": 10, "input_size": [3, size, size]}
    return {"resnet18": {**common, "model": "resnet18", "name": "resnet18"},
            "vit-tiny": {**common, "model": "vit_tiny_patch16_224", "name": "vit-tiny", "kwargs": {"img_size": size}}}


def toml_value(v) -> str:
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + " }"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, bool):
        return "true" if v else "false"
    return f'"{v}"' if isinstance(v, str) else str(v)


def load_split(args, n: int):
    if args.data == "digits":
        return load_dataset("digits", "test", n, 0)
    return load_dataset("synthetic", "test", n=n, size=args.size, channels=3, classes=10, seed=0)


def suite_toml(args) -> str:
    data = (['dataset = "digits"', 'split = "test"', f"subset = {args.n}", "subset_seed = 0"] if args.data == "digits"
            else ['dataset = "synthetic"', f"n = {args.n}", f"size = {args.size}", "channels = 3", "classes = 10",
                  "seed = 0", 'split = "test"'])
    lines = ["[suite]", 'name = "overhead"', "seed = 0", "", "[data]", *data, "", "[models]",
             "authorized = [", *[f"  {toml_value(s)}," for s in model_specs(args.size, args.data, args.zoo).values()],
             "]", ""]
    for name in args.defenses:
        lines += ["[[defenses]]", f'name = "{name}"', f"psnr = [{args.psnr}]", f"release = {toml_value(args.releases)}", ""]
    return "\n".join(lines)


# harness-only steps, timed in place by wrapping them in this process (the engine's code is not changed):
# (module, attribute path). A name the engine no longer has is skipped.
BOOKKEEPING = [
    ("bench.engine.engine", "plan"), ("bench.core.cache", "ArrayCache.get"), ("bench.core.cache", "ArrayCache.put"),
    ("bench.core.results", "ResultWriter.__init__"), ("bench.core.results", "ResultWriter.rows"),
    ("bench.core.results", "ResultWriter.append"), ("bench.core.results", "read_rows"), ("bench.core.provenance", "build"),
    ("bench.models.adapter", "ModelAdapter.check_input"), ("bench.models.adapter", "weights_digest"),
]


@contextlib.contextmanager
def timed_bookkeeping(totals: dict[str, float]):
    """Wrap the BOOKKEEPING callables so that their (outermost) call time adds up in `totals`."""
    undo, depth = [], [0]
    for mod_name, path in BOOKKEEPING:
        owner = importlib.import_module(mod_name)
        *parents, name = path.split(".")
        for part in parents:
            owner = getattr(owner, part, None)
        fn = getattr(owner, name, None) if owner is not None else None
        if not callable(fn):
            continue

        def wrap(fn=fn, key=path):
            @functools.wraps(fn)
            def timed(*a, **k):
                depth[0] += 1
                t = time.perf_counter()
                try:
                    return fn(*a, **k)
                finally:
                    depth[0] -= 1
                    if depth[0] == 0:  # nested bookkeeping calls count once
                        totals[key] = totals.get(key, 0.0) + time.perf_counter() - t
            return timed

        setattr(owner, name, wrap())
        undo.append((owner, name, fn))
    try:
        yield totals
    finally:
        for owner, name, fn in reversed(undo):
            setattr(owner, name, fn)


def harness(suite: Path, work: Path, args) -> tuple[tuple[float, float], dict, dict]:
    """(wall, CPU) seconds of one cold bench.evaluate, its summary, and top-1 per cell."""
    provenance.git_revision.cache_clear()
    provenance.versions.cache_clear()
    books: dict[str, float] = {}
    start, cpu = time.perf_counter(), time.process_time()
    with timed_bookkeeping(books):
        res = bench.evaluate(str(suite), out=work / "out", cache_dir=work / "cache", write_reports=False,
                             batch_size=args.batch_size, threads=1, progress=False)
    wall = (time.perf_counter() - start, time.process_time() - cpu)
    top1 = {(r["defense"], r["release"], r.get("authorized") or "", r["evaluated"]): r["metrics"]["top1"]
            for r in res.records}
    s = res.summary
    return wall, {"cells": s.cells_run, "jobs": s.jobs_run, "forwards": s.forwards, "encodings": s.encodings,
                  "books": books}, top1


def bare(args, n: int) -> tuple[tuple[float, float], dict, dict]:
    """(wall, CPU) seconds of the same work by hand, the wall time per stage, and top-1 per cell."""
    stages: dict[str, float] = defaultdict(float)
    start, cpu = time.perf_counter(), time.process_time()
    with torch.no_grad():
        t = time.perf_counter()
        split = load_split(args, n)
        models = {label: load_model(spec, progress=False)
                  for label, spec in model_specs(args.size, args.data, args.zoo).items()}
        fls = {label: m.first_linear().to(torch.float32) for label, m in models.items()}  # located once per model
        stages["load"] += time.perf_counter() - t
        jobs = [("none", "", "clean", None)]
        for name in args.defenses:
            for auth, adapter in models.items():
                t = time.perf_counter()
                defense = get_defense(name)()
                if defense.model_specific:
                    defense.fit(adapter)
                stages["fit"] += time.perf_counter() - t
                jobs += [(name, auth, rel, defense) for rel in args.releases]
        top1, norms = {}, {}  # the clean first-layer norms: once per model and batch, as the harness keeps them
        for name, auth, rel, defense in jobs:
            correct = dict.fromkeys(models, 0)
            std = models[auth].preprocess.std if auth else None
            batches = split.batches(args.batch_size)  # the split read in each job, as the harness streams it
            while True:
                t = time.perf_counter()
                batch = next(batches, None)
                stages["read"] += time.perf_counter() - t
                if batch is None:
                    break
                x = clean = batch.images
                if defense is not None:
                    t = time.perf_counter()
                    dirs = defense.directions(x, batch.indices, batch.labels, 0)
                    x = calibrate(x, dirs, args.psnr, rel, "true", std).released
                    stages["encode"] += time.perf_counter() - t
                for label, m in models.items():
                    t = time.perf_counter()
                    logits = m.module(m.preprocess(m.preprocess.geometry(x))).float()
                    pred, _top5 = logits.argmax(1), logits.topk(5, 1).indices
                    correct[label] += int((pred == torch.as_tensor(batch.labels)).sum())
                    stages["forward"] += time.perf_counter() - t
                    t = time.perf_counter()
                    geometry = m.preprocess.geometry
                    key = (label, int(batch.indices[0]))
                    if key not in norms:
                        norms[key] = fls[label].output_norm(geometry(clean.float()))
                    fls[label].output_deviation(geometry(clean.float()), geometry(x.float()), clean_norm=norms[key])
                    stages["deviation"] += time.perf_counter() - t
            for label in models:
                top1[(name, rel, auth, label)] = correct[label] * 100 / len(split)
    return (time.perf_counter() - start, time.process_time() - cpu), dict(stages), top1


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="timed harness/bare pairs (median reported)")
    ap.add_argument("--data", choices=("synthetic", "digits"), default="synthetic",
                    help="synthetic: timm resnet18 + vit-tiny at S x S; digits: the digits test split (subset --n, "
                         "0 = all 540) and the pinned zoo models --zoo, as the digits reduced suite")
    ap.add_argument("--zoo", nargs="+", default=["cnn-s0", "vit-s0"], help="digits: the zoo models")
    ap.add_argument("--n", type=int, default=128, help="images (synthetic; digits: subset, 0 = all)")
    ap.add_argument("--size", type=int, default=64, help="image side S (3 x S x S)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--psnr", type=float, default=20.0, help="the one PSNR point (dB)")
    ap.add_argument("--defenses", nargs="+", default=["ne-patch", "ne-operator", "noise"])
    ap.add_argument("--releases", nargs="+", default=["float", "uint8"])
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    tmp = Path(tempfile.mkdtemp(prefix="authbench-overhead-"))
    try:
        what = (f"digits test split (subset {args.n or 'all'}); zoo {' + '.join(args.zoo)}" if args.data == "digits"
                else f"{args.n} synthetic 3x{args.size}x{args.size} images; resnet18 + vit-tiny")
        print(f"torch {torch.__version__}, 1 thread, CPU; {what}, batch {args.batch_size}; {', '.join(args.defenses)} at {args.psnr:g} dB, "
              f"{' + '.join(args.releases)}; warm-up pair on {args.batch_size} images, then {args.repeats} interleaved pairs\n")
        warm = argparse.Namespace(**{**vars(args), "n": args.batch_size})
        (tmp / "warm.toml").write_text(suite_toml(warm))
        harness(tmp / "warm.toml", tmp / "warm", warm)
        bare(warm, warm.n)
        suite = tmp / "suite.toml"
        suite.write_text(suite_toml(args))
        h_times, b_times, stage_runs, book_runs = [], [], [], []
        counts, mismatches = None, set()
        for r in range(args.repeats):
            order = ("harness", "bare") if r % 2 == 0 else ("bare", "harness")
            for which in order:
                if which == "harness":
                    wall, counts, h_top1 = harness(suite, tmp / f"run{r}", args)
                    h_times.append(wall)
                    book_runs.append(counts["books"])
                    shutil.rmtree(tmp / f"run{r}", ignore_errors=True)
                else:
                    wall, stages, b_top1 = bare(args, args.n)
                    b_times.append(wall)
                    stage_runs.append(stages)
            # the same count of correct images (the two compute the percentage in another order: 1e-14 apart)
            mismatches |= {k for k in h_top1 if b_top1.get(k) is None or abs(b_top1[k] - h_top1[k]) > 1e-9}
            (hw, hc), (bw, bc) = h_times[-1], b_times[-1]
            print(f"  pair {r + 1}: wall harness {hw:6.1f} s, bare {bw:6.1f} s, ratio {hw / bw:.3f}   |   "
                  f"CPU harness {hc:6.1f} s, bare {bc:6.1f} s, ratio {hc / bc:.3f}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    cells = counts["cells"]
    print(f"\nharness: {cells} cells, {counts['jobs']} jobs, {counts['forwards']} forward passes, "
          f"{counts['encodings']} encodings (cold)")
    for i, what in enumerate(("wall", "CPU")):
        h, b = statistics.median(t[i] for t in h_times), statistics.median(t[i] for t in b_times)
        ratio = statistics.median(ht[i] / bt[i] for ht, bt in zip(h_times, b_times))
        print(f"{what:4s}: median harness {h:.2f} s, bare {b:.2f} s; ratio harness / bare (median of per-pair ratios) "
              f"{ratio:.3f} (ratio of medians {h / b:.3f}; target <= 1.10: {'met' if ratio <= 1.10 else 'NOT met'}); "
              f"bookkeeping per cell (harness - bare) / cells = {(h - b) / cells * 1e3:.1f} ms "
              f"(per job {(h - b) / counts['jobs'] * 1e3:.1f} ms)")
    print("  CPU: this process's CPU time (time.process_time; one thread), robust to other load on a shared machine;"
          "\n  wall also holds waits (the harness fsyncs each cache entry and result line)")
    books = {k: statistics.median(b.get(k, 0.0) for b in book_runs) for k in book_runs[0]}
    total = sum(books.values())
    print(f"bookkeeping timed in place (harness-only steps, median): {total:.3f} s = {total / cells * 1e3:.1f} ms per cell "
          f"= {total / statistics.median(t[0] for t in h_times) * 100:.1f}% of the harness wall; "
          + ", ".join(f"{k} {v * 1e3:.0f} ms" for k, v in sorted(books.items(), key=lambda kv: -kv[1])))
    print("bare loop, median seconds per stage: " + ", ".join(
        f"{k} {statistics.median(s[k] for s in stage_runs):.2f}" for k in stage_runs[0]))
    same = "yes" if not mismatches else f"NO ({len(mismatches)} cells differ: " + "; ".join(
        f"{k}: harness {h_top1[k]}, bare {b_top1.get(k)}" for k in sorted(mismatches)) + ")"
    print(f"bare loop reproduces the harness's top-1 in every cell: {same}")


if __name__ == "__main__":
    main()

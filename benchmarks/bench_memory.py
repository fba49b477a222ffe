"""Peak RSS of a cold suite run against the number of images: streaming keeps it flat.

Each measurement is one cold run (fresh cache and results folders) of a generated suite on N
`synthetic` 3 x 224 x 224 images, in its OWN subprocess, so peaks never mix (the scaling runs with a
fixed glibc mmap threshold, so that their peaks are reproducible to ~0.1 MiB: see MMAP_THRESHOLD;
the spec run with the default allocator, as a user runs it): the child reports its
VmHWM (/proc/self/status) and getrusage(RUSAGE_SELF).ru_maxrss, and the parent reads the child's
ru_maxrss again from os.wait4 (per child, unlike RUSAGE_CHILDREN, which is the maximum over all
children). Models: timm resnet18 and vit_tiny_patch16_224, seeded random weights, 10 classes,
evaluated by both. Grids (the same grid at every N, so the ratio compares like with like):

  spec   both models authorized; ne-patch, ne-operator and noise at --psnr; releases float, uint8
         (the run whose batch peak is the headline figure; run once, at --spec-n images)
  wide   spec without ne-operator (its 224 x 224 encode is slow here)      [--full scaling grid]
  lite   resnet18 authorized, ne-patch at --psnr, release float, both models evaluated: the
         streaming path (read, encode, two forward passes, scores) at the least cost  [--quick scaling grid]

--quick (the default): sizes 64 128 384 on the lite grid + the spec grid at 64 images: about
4 minutes on a shared 2-core CPU at load ~2 (the spec grid costs ~3.4 s per image here, the lite one
~0.4 s; slower when other work shares the cores).
--full: sizes 1024 4096 16384 on the wide grid + the spec grid at 1024 images: hours on 2 cores
(a bigger machine). --sizes overrides the sizes of either.

The per-image slope of the scaling grid (least squares over N, with its standard error) tests whether
the peak grows with N; the 50,000-image ImageNet statement is the batch peak plus the per-sample state
the engine keeps (arithmetic below), with the slope's 2-SE bound as the measurement's resolution. What the same run needed before streaming (float64 whole-split encoding) is printed
as arithmetic, labelled as an estimate: nothing of the old design is run.

Run: PYTHONPATH=. python benchmarks/bench_memory.py [--quick | --full] [--sizes 64 256 1024] [--jobs 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

QUICK = {"sizes": [64, 128, 384], "grid": "lite"}
FULL = {"sizes": [1024, 4096, 16384], "grid": "wide"}
# rough seconds per image on this shared 2-core machine, two runs at once, one thread each (measured 2025-06;
# for scheduling and the printed estimate only)
COST = {"spec": 3.4, "wide": 2.2, "lite": 0.4}

MODELS = {
    "resnet18": '{ source = "timm", model = "resnet18", pretrained = false, init_seed = 0, num_classes = 10, name = "resnet18" }',
    "vit-tiny": '{ source = "timm", model = "vit_tiny_patch16_224", pretrained = false, init_seed = 0, num_classes = 10, '
                'name = "vit-tiny" }',
}

# the measurement of the old design (float64 whole-split encoding), ne-patch on a ResNet-type stem
OLD_MB_PER_IMAGE = 30.0
IMAGENET_VAL = 50_000
# glibc raises its mmap threshold as large blocks are freed, so later large buffers come from a heap that keeps
# fragments resident: peaks then vary by +-40 MiB between identical runs. A fixed threshold returns every large
# buffer to the OS when freed: the peak tracks live memory (two identical runs agree to ~0.1 MiB).
MMAP_THRESHOLD = 128 * 1024
REPRO_MIB = {"fixed": 0.1, "default": 40.0}  # spread of the peak between identical runs, measured here
# what streaming keeps per sample for a run (bench.protocols.classify, input_auth): labels + dataset indices
# (int64 each) for the run, and for the job in flight, per evaluated model (two here) pred int64, top-5 int32 x 5,
# finite bool, first-layer deviation float64, plus the encoding's true and nominal PSNR (float64 each)
STATE_BYTES_PER_IMAGE = 16 + 2 * (8 + 20 + 1 + 8) + 16


def suite_toml(n: int, grid: str, psnr: float) -> str:
    defenses = {"spec": ["ne-patch", "ne-operator", "noise"], "wide": ["ne-patch", "noise"], "lite": ["ne-patch"]}[grid]
    releases = '["float"]' if grid == "lite" else '["float", "uint8"]'
    only = '\nmodels = ["resnet18"]' if grid == "lite" else ""
    lines = [
        "[suite]", f'name = "memory-{grid}-{n}"', "seed = 0", "",
        "[data]", 'dataset = "synthetic"', f"n = {n}", "size = 224", "channels = 3", "classes = 10", "seed = 0",
        'split = "test"', "",
        "[models]", "authorized = [", *[f"  {spec}," for spec in MODELS.values()], "]", "",
    ]
    for name in defenses:
        lines += ["[[defenses]]", f'name = "{name}"', f"psnr = [{psnr}]", f"release = {releases}{only}", ""]
    return "\n".join(lines)


def proc_status(key: str) -> float:
    """A /proc/self/status field in MiB (VmRSS, VmHWM); NaN where /proc is absent."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def child(args) -> None:
    """One cold run in this process; prints one RESULT line of JSON."""
    work = Path(args.work)
    import torch  # noqa: F401  (imports first: the baseline RSS below is the interpreter + libraries)

    import bench

    base = proc_status("VmRSS")
    (work / "suite.toml").write_text(suite_toml(args.n, args.grid, args.psnr))
    start = time.perf_counter()
    res = bench.evaluate(str(work / "suite.toml"), out=work / "out", cache_dir=work / "cache", write_reports=False,
                         batch_size=args.batch_size, threads=args.threads, progress=False)
    s = res.summary
    out = {"n": args.n, "grid": args.grid, "base_mib": base, "hwm_mib": proc_status("VmHWM"),
           "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "wall_s": time.perf_counter() - start,
           "cells": s.cells_run, "jobs": s.jobs_run, "forwards": s.forwards, "encodings": s.encodings}
    print("RESULT " + json.dumps(out), flush=True)


def measure(task: tuple[int, str], args, tmp: Path) -> dict:
    n, grid = task
    fixed = args.malloc == "fixed" and grid != "spec"
    work = tmp / f"{grid}-{n}"
    work.mkdir(parents=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--work", str(work), "--n", str(n),
           "--grid", grid, "--batch-size", str(args.batch_size), "--threads", str(args.threads), "--psnr", str(args.psnr)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": str(args.threads)}
    env.pop("MALLOC_MMAP_THRESHOLD_", None)
    if fixed:
        env["MALLOC_MMAP_THRESHOLD_"] = str(MMAP_THRESHOLD)
    log = work / "child.log"
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage
        proc.returncode = os.waitstatus_to_exitcode(status)
    text = log.read_text()
    lines = [ln for ln in text.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"measurement {grid} n={n} failed (exit {proc.returncode}):\n{text[-4000:]}")
    out = json.loads(lines[-1][len("RESULT "):])
    out["wait4_mib"] = usage.ru_maxrss / 1024
    out["malloc"] = "fixed" if fixed else "default"
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    print(f"  done: {grid:5s} n={n:6d}  peak {out['hwm_mib']:8.1f} MiB  ({out['wall_s']:.0f} s, {out['cells']} cells)",
          flush=True)
    return out


def fit_line(xs: list[float], ys: list[float]) -> tuple[float, float, float]:
    """Least-squares intercept and slope of ys against xs, and the slope's standard error (NaN below 3 points)."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0
    icpt = my - slope * mx
    resid = sum((y - icpt - slope * x) ** 2 for x, y in zip(xs, ys))
    se = (resid / (len(xs) - 2) / sxx) ** 0.5 if len(xs) > 2 and sxx else float("nan")
    return icpt, slope, se


def old_design_bytes_per_image() -> tuple[float, str]:
    """Arithmetic cross-check of the issue's ~30 MB: the float64 arrays the old whole-split ne-patch encode held
    per 224 x 224 image on resnet18's stem (7x7, stride 2, pad 3, 3 -> 64)."""
    c, hw, kernel, stride, pad, c_out = 3, 224, 7, 2, 3, 64
    positions = ((hw + 2 * pad - kernel) // stride + 1) ** 2  # 112 x 112 patches
    patch = c * kernel * kernel  # 147 inputs per patch
    k = patch - c_out  # the null space of a rank-64 map on 147 inputs: the tau = 1e-4 subspace of a generic stem
    image = c * hw * hw * 8
    parts = {"per-patch columns": positions * patch * 8, "codes z": positions * k * 8,
             "image, direction, release": 3 * image}
    text = ", ".join(f"{name} {b / 1e6:.1f} MB" for name, b in parts.items())
    return sum(parts.values()) / 1e6, text


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help=f"sizes {QUICK['sizes']} on the lite grid (default)")
    mode.add_argument("--full", action="store_true", help=f"sizes {FULL['sizes']} on the wide grid (hours on 2 cores)")
    ap.add_argument("--sizes", type=int, nargs="+", help="numbers of images of the scaling runs (overrides the mode's)")
    ap.add_argument("--grid", choices=("lite", "wide", "spec"), help="grid of the scaling runs (default: the mode's)")
    ap.add_argument("--spec-n", type=int, help="images of the one spec-grid run (default: the smallest size; 0: skip)")
    ap.add_argument("--batch-size", type=int, default=64, help="images per batch (default 64)")
    ap.add_argument("--psnr", type=float, default=20.0, help="the one PSNR point (dB)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    ap.add_argument("--jobs", type=int, default=2, help="runs at once (each its own process; peaks are per process)")
    ap.add_argument("--malloc", choices=("fixed", "default"), default="fixed",
                    help="allocator of the scaling runs: fixed = MALLOC_MMAP_THRESHOLD_=128 KiB (peaks reproducible to "
                         "~0.1 MiB; default), default = glibc's dynamic threshold (+-40 MiB noise); the spec run always "
                         "uses the default")
    ap.add_argument("--keep", action="store_true", help="keep the runs' folders (printed) instead of deleting them")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(args)

    preset = FULL if args.full else QUICK
    sizes = sorted(set(args.sizes or preset["sizes"]))
    grid = args.grid or preset["grid"]
    spec_n = sizes[0] if args.spec_n is None else args.spec_n
    tasks = [(n, grid) for n in sizes] + ([(spec_n, "spec")] if spec_n and not (grid == "spec" and spec_n in sizes) else [])
    tasks.sort(key=lambda t: -t[0] * COST[t[1]])  # longest first
    est = sum(n * COST[g] for n, g in tasks) / max(1, min(args.jobs, len(tasks)))
    print(f"cold runs, one subprocess each, {args.jobs} at a time, {args.threads} thread(s) each, batch {args.batch_size}, "
          f"{args.psnr:g} dB; scaling grid '{grid}' at N = {sizes}" + (f", spec grid at N = {spec_n}" if spec_n else "")
          + f"; rough estimate {est / 60:.0f} min here")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    tmp = Path(tempfile.mkdtemp(prefix="authbench-memory-"))
    try:
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            results = list(pool.map(lambda t: measure(t, args, tmp), tasks))
    finally:
        if args.keep:
            print(f"runs kept under {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")

    scaling = sorted((r for r in results if r["grid"] == grid and r["n"] in sizes), key=lambda r: r["n"])
    spec = next((r for r in results if r["grid"] == "spec" and r["n"] == spec_n), None)
    print(f"\nload average {load:.1f} before, {load_after:.1f} after (2 cores)")
    head = (f"{'grid':5s} {'malloc':7s} {'N':>6s} {'cells':>6s} {'fwd':>4s} {'enc':>4s} {'wall s':>7s} {'base MiB':>9s} "
            f"{'peak MiB':>9s} {'ru_maxrss':>10s} {'wait4':>8s} {'peak/smallest':>14s}")
    print(head)
    print("-" * len(head))
    for r in scaling + ([spec] if spec and spec not in scaling else []):
        ref = scaling[0]["hwm_mib"] if r["grid"] == grid else r["hwm_mib"]
        print(f"{r['grid']:5s} {r['malloc']:7s} {r['n']:6d} {r['cells']:6d} {r['forwards']:4d} {r['encodings']:4d} {r['wall_s']:7.0f} "
              f"{r['base_mib']:9.1f} {r['hwm_mib']:9.1f} {r['maxrss_mib']:10.1f} {r['wait4_mib']:8.1f} "
              f"{r['hwm_mib'] / ref:14.3f}")
    print("  base: RSS after importing torch, timm and bench; peak: VmHWM of the child (its ru_maxrss, and wait4's, which"
          "\n  also counts the git subprocesses provenance runs); malloc fixed: MALLOC_MMAP_THRESHOLD_=128 KiB")

    step = 0.0
    if len(scaling) >= 2:
        lo, hi = scaling[0], scaling[-1]
        ratio = hi["hwm_mib"] / lo["hwm_mib"]
        print(f"\npeak ratio N={hi['n']} / N={lo['n']} ({grid} grid): {ratio:.3f}  (target <= 1.2: "
              f"{'met' if ratio <= 1.2 else 'NOT met'})")
        # one batch vs several: while batch k+1 is read, batch k's tensors are still referenced (a one-off step)
        multi = [r for r in scaling if r["n"] >= 2 * args.batch_size]
        single = [r for r in scaling if r["n"] <= args.batch_size]
        if single and multi:
            step = multi[0]["hwm_mib"] - single[-1]["hwm_mib"]
            print(f"one batch (N={single[-1]['n']}) -> two or more (N={multi[0]['n']}): {step:+.1f} MiB, once "
                  f"(a batch of float32 3x224x224 images is {args.batch_size * 3 * 224 * 224 * 4 / 2**20:.1f} MiB)")
        pts = multi if len(multi) >= 2 else scaling
        icpt, slope, se = fit_line([r["n"] for r in pts], [r["hwm_mib"] for r in pts])
        repro = REPRO_MIB[args.malloc]
        span = pts[-1]["n"] - pts[0]["n"]
        resolution = se if se == se else 2 ** 0.5 * repro / span  # two points: their reproducibility over the span
        print(f"per-image slope over N = {[r['n'] for r in pts]}: {slope * 1024:+.2f} KiB per image "
              f"(+- {resolution * 1024:.2f} KiB: {'standard error' if se == se else f'peaks reproducible to ~{repro} MiB'})"
              f" = {slope * 1000:+.1f} MiB per 1000 images")
        grows = slope > 2 * resolution
        print("  " + ("the peak GROWS with N" if grows else "consistent with no growth with N"))
        top = spec["hwm_mib"] if spec else hi["hwm_mib"]
        at = spec["n"] if spec else hi["n"]
        extra = step if (spec and spec["n"] <= args.batch_size and step > 0) else 0.0
        state = STATE_BYTES_PER_IMAGE * IMAGENET_VAL / 2**20
        total = top + extra + state + (max(slope, 0.0) * (IMAGENET_VAL - at) if grows else 0.0)
        bound = max(slope + 2 * resolution, 0.0) * (IMAGENET_VAL - at)
        print(f"50,000-image ImageNet run (224 x 224, batch {args.batch_size}; an estimate from the measurements, not run):"
              f"\n  the batch peak of the {'spec' if spec else grid} grid ({top:.0f} MiB at N={at})"
              + (f" + the one-off step to several batches ({extra:.0f} MiB)" if extra else "")
              + f" + the per-sample state the engine keeps ({STATE_BYTES_PER_IMAGE} B per image: {state:.0f} MiB)"
              + (f" + the measured slope x {IMAGENET_VAL - at} images" if grows else "")
              + f"\n  = {total:.0f} MiB ({total / 1024:.2f} GiB) with these models; the measurement's resolution: the slope"
              f" at +2 sigma would add {bound:.0f} MiB over 50,000 images")
    if spec:
        several = spec["hwm_mib"] + (step if spec["n"] <= args.batch_size and step > 0 else 0.0)
        print(f"\npeak at batch {args.batch_size}, spec grid (resnet18 + vit-tiny; ne-patch, ne-operator, noise; "
              f"float + uint8), N={spec['n']}: {spec['hwm_mib']:.0f} MiB = {spec['hwm_mib'] / 1024:.2f} GiB"
              + (f"; with the one-off step to several batches {several:.0f} MiB = {several / 1024:.2f} GiB"
                 if several != spec["hwm_mib"] else "")
              + f" (target < 3 GB: {'met' if several * 2**20 < 3e9 else 'NOT met'})")

    mb, parts = old_design_bytes_per_image()
    print(f"\nESTIMATE, NOT MEASURED -- before streaming (float64 whole-split encoding), from the old design's arithmetic:"
          f"\n  ~{OLD_MB_PER_IMAGE:.0f} MB per 224 x 224 image (the issue's measurement, ne-patch on a ResNet-type stem;"
          f"\n  cross-check for resnet18's stem: {parts} = {mb:.1f} MB)")
    for n in sorted(set(sizes + [IMAGENET_VAL])):
        print(f"  N = {n:6d}: ~{OLD_MB_PER_IMAGE * n / 1e3:,.1f} GB on top of the fixed cost")


if __name__ == "__main__":
    main()

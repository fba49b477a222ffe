#!/usr/bin/env bash
# GPU check of the engine: one prepared script for a machine with a CUDA GPU (about 8 minutes on one H200).
#
#   bash benchmarks/gpu_check.sh [--install] [--venv DIR] [--n 2048] [--batch-size 128] [--device cuda]
#                                [--models "resnet-50 vit-b16 swinv2-t deit-b16"] [--psnr 20|all]
#                                [--cli-timeout 270] [--work DIR] [--keep] [--dry-run]
#
# 1. Python: the current `python` (or a venv: --venv DIR, made with --system-site-packages so an installed
#    torch is reused); --install runs `pip install -e ".[vision,text]"` (off by default: PyPI may be
#    unreachable there; the script then only checks that bench, torch, timm, transformers and PIL import).
# 2. Data: --n (2,048) 224 x 224 JPEGs as an ImageFolder (8 class folders) from the `synthetic` generator
#    (bench.data.synthetic.images_of: deterministic, no network).
# 3. Throughput, per backbone (Python, in this process): the same model (suite imagenet, --random-weights)
#    on the device, the same batch size, torch.no_grad, synchronised timing:
#      bare     module(normalize(resize/crop(x))) over the split decoded once and held on the host (H2D copy
#               included), images/second;
#      harness  a cold Engine run (fresh cache) of that one model: the clean baseline job and the ne-patch
#               20 dB float job, images/second from each job's own wall time (the model is loaded, warmed and
#               its first layer located before, as in a run's later jobs);
#      decode   one read of the split from the ImageFolder (the CPU work the harness repeats per job), with the
#               decoding thread pool (bench.data.vision.decode_workers) and with one thread;
#      NE encode the ne-patch job's own encode time per image (its row's encode_ms) over one forward per image
#               of the bare loop: the NE encode share (target <= 5% on a GPU);
#      peak GPU memory (torch.cuda.max_memory_allocated) of the bare loop and of the harness run.
# 4. The CLI: HF_HUB_OFFLINE=1 authbench run imagenet --random-weights --subset N --data-root <folder>
#    --device cuda --batch-size 128 --no-progress --models <each backbone> --psnr 20 (--psnr all: every
#    point; about 4x longer), under `timeout --cli-timeout` seconds (a timed-out run is resumable), with
#    nvidia-smi sampled for the peak memory used; cells, wall time, and whether every row scored N images.
#    The suite's [data] subset (512) is overridden by --subset; a folder with fewer images than --subset
#    silently gives fewer (bench.data.vision.subset_positions), so the check counts them.
# 5. A Markdown table to stdout and to $OUT/gpu_check.md when $OUT is set, else benchmarks/gpu_check.md
#    (a --dry-run writes it in the work folder only).
#
# The suite's backbones are resnet-50, vit-b16, swinv2-t and deit-b16 (suites/imagenet.toml); the fifth,
# mambavision-t, is commented out there (it needs mamba-ssm): uncomment it and add it to --models.
# --dry-run: the same steps on the CPU at a tiny size (n 32, batch 8, CLI on resnet-50 only), to check the
# script where there is no GPU.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

N=2048
BATCH=128
DEVICE=cuda
MODELS="resnet-50 vit-b16 swinv2-t deit-b16"
CLI_MODELS=""
PSNR=20
INSTALL=0
VENV=""
WORK=""
KEEP=0
DRY=0
CLI_TIMEOUT=270
THREADS=""

usage() { sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
  case "$1" in
    --install) INSTALL=1 ;;
    --venv) VENV="$2"; shift ;;
    --n) N="$2"; shift ;;
    --batch-size) BATCH="$2"; shift ;;
    --device) DEVICE="$2"; shift ;;
    --models) MODELS="$2"; shift ;;
    --cli-models) CLI_MODELS="$2"; shift ;;
    --psnr) PSNR="$2"; shift ;;
    --cli-timeout) CLI_TIMEOUT="$2"; shift ;;
    --threads) THREADS="$2"; shift ;;
    --work) WORK="$2"; shift ;;
    --keep) KEEP=1 ;;
    --dry-run) DRY=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "gpu_check.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

if [ "$DRY" = 1 ]; then
  N=32; BATCH=8; DEVICE=cpu; CLI_MODELS="${CLI_MODELS:-resnet-50}"; THREADS="${THREADS:-1}"
fi
CLI_MODELS="${CLI_MODELS:-$MODELS}"

if [ -z "$WORK" ]; then WORK="$(mktemp -d "${TMPDIR:-/tmp}/authbench-gpu-check.XXXXXX")"; fi
if [ -n "${OUT:-}" ]; then MD="$OUT/gpu_check.md"
elif [ "$DRY" = 1 ]; then MD="$WORK/gpu_check.md"  # a dry run leaves no table in the tree
else MD="$ROOT/benchmarks/gpu_check.md"; fi
mkdir -p "$WORK"
cleanup() { if [ "$KEEP" = 0 ]; then rm -rf "$WORK"; else echo "work folder kept: $WORK"; fi; }
trap cleanup EXIT

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
START=$(date +%s)
say() { echo "[gpu_check $(( $(date +%s) - START ))s] $*"; }

# -- 1. python ---------------------------------------------------------------------------------------
if [ -n "$VENV" ]; then
  [ -x "$VENV/bin/python" ] || python3 -m venv --system-site-packages "$VENV"
  # shellcheck disable=SC1091
  . "$VENV/bin/activate"
fi
if [ "$INSTALL" = 1 ]; then
  say "pip install -e .[vision,text]"
  python -m pip install -q -e ".[vision,text]" || say "pip install failed (no PyPI?); continuing with what is installed"
fi
python - <<'PY'
import importlib.util
import sys

missing = [m for m in ("bench", "torch", "timm", "transformers", "PIL") if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"gpu_check.sh: missing modules {missing}: rerun with --install (needs PyPI) or install them")
PY
if [ "${DEVICE%%:*}" = cuda ]; then
  python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu_check.sh: torch sees no CUDA device (use --dry-run on a CPU machine)')"
fi
say "python $(python -c 'import sys; print(sys.version.split()[0])'), device $DEVICE, n $N, batch $BATCH, work $WORK"

# -- 2. data -----------------------------------------------------------------------------------------
DATA="$WORK/imagenet"
say "writing $N synthetic 224x224 JPEGs to $DATA/val"
N="$N" DATA="$DATA" python - <<'PY'
import os
from pathlib import Path

import numpy as np
from PIL import Image

from bench.data.synthetic import images_of

n, root, classes = int(os.environ["N"]), Path(os.environ["DATA"]) / "val", 8
for c in range(classes):
    (root / f"n{c:08d}").mkdir(parents=True, exist_ok=True)
for start in range(0, n, 256):
    idx = np.arange(start, min(n, start + 256))
    x = images_of(0, idx, classes, (3, 224, 224))
    arr = (x.clamp(0, 1) * 255).round().to(dtype=__import__("torch").uint8).permute(0, 2, 3, 1).numpy()
    for i, a in zip(idx.tolist(), arr):
        Image.fromarray(a).save(root / f"n{i % classes:08d}" / f"img_{i:06d}.JPEG", quality=95)
print(f"{n} images in {classes} class folders")
PY

# -- 3. throughput per backbone: harness vs bare ------------------------------------------------------
say "throughput per backbone: $MODELS"
N="$N" BATCH="$BATCH" DEVICE="$DEVICE" MODELS="$MODELS" DATA="$DATA" WORK="$WORK" THREADS="$THREADS" python - <<'PY'
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from bench.core.context import RunOptions
from bench.core.engine import Engine
from bench.suite import load_suite
from bench.suite_overrides import apply_overrides

n, batch, device = int(os.environ["N"]), int(os.environ["BATCH"]), torch.device(os.environ["DEVICE"])
work = Path(os.environ["WORK"])
if os.environ.get("THREADS"):
    torch.set_num_threads(int(os.environ["THREADS"]))
cuda = device.type == "cuda"


def sync():
    if cuda:
        torch.cuda.synchronize(device)


def peak_reset():
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_mib():
    return torch.cuda.max_memory_allocated(device) / 2**20 if cuda else float("nan")


suite = apply_overrides(load_suite("imagenet"), subset=n, data_root=Path(os.environ["DATA"]), random_weights=True)
rows = []
for label in os.environ["MODELS"].split():
    opts = RunOptions(models=(label,), defenses=("ne-patch",), psnr=(20.0,), releases=("float",), batch_size=batch,
                      device=str(device), progress=False, cache_dir=work / f"cache-{label}")
    engine = Engine(suite, work / f"run-{label}", opts)
    ctx = engine.ctx
    t = time.perf_counter()
    model = ctx.model(label)  # loaded once, on the device
    load_s = time.perf_counter() - t
    model.first_linear()  # located once (the harness does it in its first job)
    pre, module = model.preprocess, model.module

    t = time.perf_counter()
    images = ctx.data.read(np.arange(len(ctx.data)))  # one decode (not Split.images: that would cache it for the run)
    decode_s = time.perf_counter() - t
    os.environ["AUTHBENCH_DECODE_WORKERS"] = "1"  # the same read with one decoding thread (the pool's gain)
    t = time.perf_counter()
    ctx.data.read(np.arange(min(len(ctx.data), 4 * batch)))
    decode1_ips = min(len(ctx.data), 4 * batch) / (time.perf_counter() - t)
    del os.environ["AUTHBENCH_DECODE_WORKERS"]
    if len(images) != n:
        print(f"warning: {label}: the split has {len(images)} images, not {n}")
    if cuda:
        images = images.pin_memory()

    def bare_pass():
        with torch.no_grad():
            for i in range(0, len(images), batch):
                xb = images[i : i + batch].to(device, non_blocking=True)
                module(pre(pre.geometry(xb)))

    with torch.no_grad():  # warm-up: kernels, cuDNN autotuning, allocator
        module(pre(pre.geometry(images[:batch].to(device))))
    sync()
    peak_reset()
    t = time.perf_counter()
    bare_pass()
    sync()
    bare_s = time.perf_counter() - t
    bare_peak = peak_mib()
    del images

    peak_reset()
    summary = engine.run()  # cold: fresh cache; clean baseline + the ne-patch jobs at 20 dB float
    sync()
    harness_peak = peak_mib()
    records = [json.loads(line) for line in Path(summary.results).read_text().splitlines() if line.strip()]
    clean = next(r for r in records if r["defense"] == "none")
    encoded = next(r for r in records if r["defense"] == "ne-patch" and r["point"].get("psnr_mode") == "true")
    rows.append({"model": label, "n": clean["n"], "load_s": load_s, "decode_ips": len(ctx.data) / decode_s,
                 "bare_ips": len(ctx.data) / bare_s, "harness_ips": len(ctx.data) / clean["provenance"]["wall_s"],
                 "ne_ips": len(ctx.data) / encoded["provenance"]["wall_s"], "bare_peak": bare_peak,
                 "harness_peak": harness_peak, "cells": summary.cells_run, "wall_s": summary.wall_s,
                 "device": clean["provenance"]["device"], "decode1_ips": decode1_ips,
                 # NE encode share: the harness's own encode time per image over one forward per image (bare)
                 "encode_ms": encoded["encoding"]["encode_ms"],
                 "encode_share": encoded["encoding"]["encode_ms"] / (1e3 / (len(ctx.data) / bare_s))})
    r = rows[-1]
    print(f"{label}: bare {r['bare_ips']:.0f} img/s, harness clean {r['harness_ips']:.0f} img/s, ne-patch job "
          f"{r['ne_ips']:.0f} img/s, NE encode {r['encode_ms']:.2f} ms/img = {r['encode_share']:.3f} of a forward, "
          f"decode {r['decode_ips']:.0f} img/s ({r['decode1_ips']:.0f} with 1 thread), peak GPU {r['bare_peak']:.0f} / "
          f"{r['harness_peak']:.0f} MiB", flush=True)
    del engine, ctx, model, module
    if cuda:
        torch.cuda.empty_cache()
(work / "throughput.json").write_text(json.dumps(rows, indent=1))
PY

# -- 4. the CLI run ------------------------------------------------------------------------------------
CLI_ARGS=(run imagenet --random-weights --subset "$N" --data-root "$DATA" --device "$DEVICE" --batch-size "$BATCH"
          --no-progress --out "$WORK/cli-run" --reports "$WORK/cli-reports" --cache-dir "$WORK/cli-cache")
for m in $CLI_MODELS; do CLI_ARGS+=(--models "$m"); done
if [ "$PSNR" != all ]; then CLI_ARGS+=(--psnr "$PSNR"); fi
if [ -n "$THREADS" ]; then CLI_ARGS+=(--threads "$THREADS"); fi
say "authbench ${CLI_ARGS[*]} (timeout ${CLI_TIMEOUT}s)"
SMI_PID=""
if command -v nvidia-smi >/dev/null 2>&1 && [ "${DEVICE%%:*}" = cuda ]; then
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 500 > "$WORK/smi.log" 2>/dev/null &
  SMI_PID=$!
fi
CLI_START=$(date +%s.%N)
set +e
timeout "$CLI_TIMEOUT" python -m bench "${CLI_ARGS[@]}" > "$WORK/cli.log" 2>&1
CLI_RC=$?
set -e
CLI_WALL=$(python -c "import time; print(f'{time.time() - $CLI_START:.1f}')")
if [ -n "$SMI_PID" ]; then kill "$SMI_PID" 2>/dev/null || true; wait "$SMI_PID" 2>/dev/null || true; fi
tail -n 3 "$WORK/cli.log"
say "CLI exit $CLI_RC after ${CLI_WALL}s"

# -- 5. the table ---------------------------------------------------------------------------------------
mkdir -p "$(dirname "$MD")"
N="$N" BATCH="$BATCH" DEVICE="$DEVICE" WORK="$WORK" CLI_RC="$CLI_RC" CLI_WALL="$CLI_WALL" PSNR="$PSNR" \
CLI_MODELS="$CLI_MODELS" CLI_TIMEOUT="$CLI_TIMEOUT" DRY="$DRY" MD="$MD" python - <<'PY'
import datetime
import json
import os
from pathlib import Path

import torch

env, work = os.environ, Path(os.environ["WORK"])
rows = json.loads((work / "throughput.json").read_text())
device = rows[0]["device"] if rows else env["DEVICE"]
lines = [f"# GPU check ({datetime.date.today().isoformat()}{', DRY RUN on the CPU' if env['DRY'] == '1' else ''})", "",
         f"device `{device}`, torch {torch.__version__}, {env['N']} synthetic 224x224 JPEGs (ImageFolder, 8 classes), "
         f"batch {env['BATCH']}, suite imagenet --random-weights.", "",
         "| backbone | bare img/s | harness clean img/s | harness / bare | harness ne-patch 20 dB float img/s | "
         "NE encode ms/img | NE encode / forward (target <= 0.05) | decode img/s (CPU, thread pool) | "
         "decode img/s (1 thread) | peak GPU MiB bare | peak GPU MiB harness | n scored |",
         "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
for r in rows:
    lines.append(f"| {r['model']} | {r['bare_ips']:.0f} | {r['harness_ips']:.0f} | {r['harness_ips'] / r['bare_ips']:.2f} | "
                 f"{r['ne_ips']:.0f} | {r['encode_ms']:.3f} | {r['encode_share']:.3f} | {r['decode_ips']:.0f} | "
                 f"{r['decode1_ips']:.0f} | {r['bare_peak']:.0f} | {r['harness_peak']:.0f} | {r['n']} |")
lines += ["", "bare: the model's module on pre-decoded images (host to device copy included), torch.no_grad, "
          "synchronised; harness: a cold Engine run, img/s from each job's own wall time (the harness decodes the "
          "split again in every job: compare the decode column)."]

results = work / "cli-run" / "results.jsonl"
recs = [json.loads(x) for x in results.read_text().splitlines() if x.strip()] if results.exists() else []
ns = sorted({r.get("n") for r in recs})
smi = work / "smi.log"
used = [int(x) for x in smi.read_text().split() if x.strip().isdigit()] if smi.exists() else []
rc = int(env["CLI_RC"])
status = "ok" if rc == 0 else (f"timed out after {env['CLI_TIMEOUT']} s (resumable)" if rc == 124 else f"exit {rc}")
lines += ["", f"CLI: `authbench run imagenet --random-weights --subset {env['N']} --device {env['DEVICE']} --batch-size "
          f"{env['BATCH']} --no-progress` --models {' '.join(env['CLI_MODELS'].split())}"
          + ("" if env["PSNR"] == "all" else f" --psnr {env['PSNR']}") + ":",
          f"{status}; wall {env['CLI_WALL']} s; {len(recs)} cells written; images scored per cell {ns} "
          f"({'all ' + env['N'] if ns == [int(env['N'])] else 'NOT all ' + env['N']}); peak GPU memory used "
          f"(nvidia-smi, whole device) {max(used) if used else 'n/a'} MiB."]
cli_log = work / "cli.log"
if rc != 0 and cli_log.exists():
    lines += ["", "```", *cli_log.read_text().splitlines()[-8:], "```"]
text = "\n".join(lines) + "\n"
print(text)
Path(env["MD"]).write_text(text)
print(f"written: {env['MD']}")
PY
say "done"

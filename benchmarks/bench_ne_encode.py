"""NE encode cost per sample, as a ratio to one forward pass of the authorized model.

For `ne-patch` (the paper's per-patch SVD) and `ne-operator` (whole-operator low-gain basis,
Fourier backend at 224) on timm resnet50 and vit_base_patch16_224 at 224 x 224 (random init,
pretrained=False): the one-time fit (SVD / basis build), and per-sample encode =
`defense.directions(x, indices, labels, seed)` + `release.calibrate(x, dirs, 20 dB, "float")`
on a batch of --batch random images, divided by the batch size. The forward pass is one
224 x 224 image through the whole model (adapter.predict), same process, same threads.

Timings are medians over --repeats runs after one warm-up; printed, never asserted.
Run: PYTHONPATH=. python benchmarks/bench_ne_encode.py [--repeats 5] [--batch 8]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from timing import timed  # noqa: E402

from bench.defenses import get_defense  # noqa: E402
from bench.defenses.release import calibrate  # noqa: E402

PAPER = "reported by the NE paper (Sec. 5, runtime): 0.47 ms SVD once, 0.11 ms per 224x224 image, ResNet-50, GPU"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per measurement (median reported)")
    ap.add_argument("--batch", type=int, default=8, help="images per encode call")
    ap.add_argument("--psnr", type=float, default=20.0, help="target PSNR (dB) of the calibration")
    ap.add_argument("--models", nargs="*", default=["resnet50", "vit_base_patch16_224"], help="timm models at 224")
    ap.add_argument("--defenses", nargs="*", default=["ne-patch", "ne-operator"])
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: stable on a shared machine; 0: torch default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    from bench.models.sources import load_model

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU; batch {args.batch}; medians of {args.repeats} runs\n")
    rows = []
    for name in args.models:
        adapter = load_model(f"timm:{name}")
        c, h, w = adapter.preprocess.input_size
        one = torch.rand(1, c, h, w, generator=torch.Generator().manual_seed(0))
        t_fwd = timed(lambda: adapter.predict(one), args.repeats)
        x = torch.rand(args.batch, c, h, w, generator=torch.Generator().manual_seed(1))
        indices, labels = list(range(args.batch)), [0] * args.batch
        adapter.first_linear()  # located once and cached by the adapter; not part of either fit
        for dname in args.defenses:
            defense = get_defense(dname)()
            t_fit = timed(lambda: defense.fit(adapter), args.repeats)

            def encode():
                dirs = defense.directions(x, indices, labels, seed=0)
                return calibrate(x, dirs, args.psnr, "float")

            t_enc = timed(encode, args.repeats) / args.batch
            out = encode()
            s = defense.summary()
            rows.append((name, dname, s.get("subspace_dim"), t_fwd, t_fit, t_enc, float(out.psnr_true.mean())))

    head = f"{'model':22s} {'defense':12s} {'dims':>7s} {'forward ms':>11s} {'fit ms':>9s} {'fit/fwd':>8s} {'encode ms/img':>14s} {'encode/fwd':>11s} {'PSNR dB':>8s}"
    print(head)
    print("-" * len(head))
    for name, dname, dims, t_fwd, t_fit, t_enc, db in rows:
        print(
            f"{name:22s} {dname:12s} {dims!s:>7s} {t_fwd * 1e3:11.1f} {t_fit * 1e3:9.2f} {t_fit / t_fwd:8.3f} "
            f"{t_enc * 1e3:14.2f} {t_enc / t_fwd:11.3f} {db:8.2f}"
        )
    print("\nours: CPU measurements above (fit = one-time SVD / basis build; encode = directions + calibrate, per image)")
    print(f"context, not our measurement -- {PAPER}")


if __name__ == "__main__":
    main()

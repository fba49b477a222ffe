"""Cost of building the whole-operator low-gain basis (ne-operator's fit) and of drawing from it.

(i)  digits-size 3x3 conv (the zoo SmallCNN stem, 1 -> 16, pad 1, random init) at 1 x S x S:
     DenseBasis vs FourierBasis build time and their ratio;
(ii) timm resnet50 stem and vit_base_patch16_224 patch embedding at 224 x 224 (random init,
     pretrained=False; timings do not depend on the weight values): FourierBasis build time and
     per-sample sample() time, in seconds and as a ratio to one forward pass of the whole model
     on one 224 x 224 image (same process, same threads).

Timings are medians over --repeats runs after one warm-up; they are printed, never asserted.
Run: PYTHONPATH=. python benchmarks/bench_operator_basis.py [--repeats 5] [--digits-size 32]
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from timing import timed  # noqa: E402

from bench.defenses.operator_basis import DenseBasis  # noqa: E402
from bench.defenses.operator_fourier import FourierBasis  # noqa: E402
from bench.models.first_linear import FirstLinear  # noqa: E402



def digits_conv(size: int, c_out: int) -> FirstLinear:
    from bench.models.zoo import SmallCNN

    torch.manual_seed(0)
    conv = SmallCNN().features[0]
    weight = conv.weight.detach().to(torch.float64)[:c_out]
    return FirstLinear("conv", weight, (1, size, size), (1, 1), (1, 1), module_name="features.0")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per measurement (median reported)")
    ap.add_argument("--dense-repeats", type=int, default=3, help="timed runs of the (slow) dense build")
    ap.add_argument("--digits-size", type=int, default=32, help="side S of the 1 x S x S digits input")
    ap.add_argument("--digits-cout", type=int, default=16, help="output channels of the digits 3x3 conv")
    ap.add_argument("--dims", type=float, default=1 / 12, help="fraction of input dims kept (ne-operator default 1/12)")
    ap.add_argument("--models", nargs="*", default=["resnet50", "vit_base_patch16_224"], help="timm models at 224")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: stable on a shared machine; 0: torch default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU; medians of {args.repeats} runs\n")

    # (i) digits conv: dense vs fourier
    fl = digits_conv(args.digits_size, args.digits_cout)
    n = math.prod(fl.input_shape)
    k = max(1, math.ceil(args.dims * n))
    t_dense = timed(lambda: DenseBasis(fl, k), args.dense_repeats)
    t_fourier = timed(lambda: FourierBasis(fl, k), args.repeats)
    print(f"(i) digits 3x3 conv 1->{fl.weight.shape[0]}, pad 1, input 1x{args.digits_size}x{args.digits_size} (n={n}, k={k})")
    print(f"    DenseBasis   build {t_dense * 1e3:10.2f} ms")
    print(f"    FourierBasis build {t_fourier * 1e3:10.2f} ms")
    print(f"    dense / fourier = {t_dense / t_fourier:.1f}x\n")

    # (ii) timm stems at 224
    from bench.models.sources import load_model

    print("(ii) timm models at 224x224 (random init), FourierBasis, ratios to one forward pass of one image")
    header = f"    {'model':24s} {'layer':14s} {'eigh blocks':>13s} {'forward ms':>11s} {'build ms':>10s} {'build/fwd':>10s} {'sample ms':>10s} {'sample/fwd':>11s}"
    print(header)
    for name in args.models:
        adapter = load_model(f"timm:{name}")
        fl = adapter.first_linear()
        c, h, w = fl.input_shape
        x = torch.rand(1, c, h, w, generator=torch.Generator().manual_seed(0))
        t_fwd = timed(lambda: adapter.predict(x), args.repeats)
        k = max(1, math.ceil(args.dims * c * h * w))
        t_build = timed(lambda: FourierBasis(fl, k), args.repeats)
        basis = FourierBasis(fl, k)
        gens = iter(range(10**6))
        t_sample = timed(lambda: basis.sample(torch.Generator().manual_seed(next(gens))), args.repeats)
        blocks = f"{basis.eigh_blocks}x{basis.n_in}x{basis.n_in}"
        print(
            f"    {name:24s} {fl.module_name:14s} {blocks:>13s} {t_fwd * 1e3:11.1f} {t_build * 1e3:10.1f} "
            f"{t_build / t_fwd:10.2f} {t_sample * 1e3:10.2f} {t_sample / t_fwd:11.3f}"
        )
    print(
        "\n    eigh blocks: Hermitian (c_in*s*s)^2 matrices diagonalised, one per conjugate pair of the (H/s, W/s)"
        "\n    frequencies; a patch embedding (stride == kernel, pad 0) has one Gram matrix shared by all frequencies"
    )


if __name__ == "__main__":
    main()

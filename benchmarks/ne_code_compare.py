"""Not a timing: the harness's NE releases against the public NE code's pipeline (the independent
re-implementation in tests/ne_code_pipeline.py) on one real cifar10-real model and a spread of kit images.

For each release it prints one JSON line: true pixel PSNR (peak 1), the code's PSNR measure (peak 255 on the
model's normalized tensor), the authorized first-layer change ||L(x~) - L(x)|| / ||L(x)||, the share of the
unfolded perturbation's energy inside the code's tau-subspace (normalized domain), and every listed
model's top-1 on those images. Releases: clean; harness ne-patch (independent and tiled codes), ne-operator
and the Gaussian control at a true PSNR; harness psnr_mode "paper-code"; the code re-implementation
(clean + fold(noise), and fold(P + noise), what the code feeds a model) at the code's nominal dB.
The first line holds the provenance (git commit, kit identity, images) and the two bases' comparison.

    AUTHBENCH_CACHE=... PYTHONPATH=. python benchmarks/ne_code_compare.py --authorized marabou-large [--n 100] [--db 20]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from ne_code_pipeline import code_null_basis, code_release, principal_gap, subspace_energy  # noqa: E402

from bench.data.base import load_dataset  # noqa: E402
from bench.defenses import get_defense  # noqa: E402
from bench.defenses.release import calibrate, calibrate_paper_code, psnr  # noqa: E402
from bench.kits.resolve import resolve_dataset  # noqa: E402
from bench.models.sources import load_model  # noqa: E402

FRESH = 7_919  # bench.protocols.input_auth.CODE_FRESH_DRAW
EVALUATED = ["marabou-large", "resnet-4b", "oval-base-kw", "marabou-medium", "mlperf-resnet8", "mlperf-resnet-large"]


def git_commit() -> str:
    root = Path(__file__).resolve().parents[1]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True).stdout
    return head + ("+dirty" if dirty.strip() else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--authorized", default="marabou-large")
    ap.add_argument("--n", type=int, default=100, help="images, evenly spaced over the kit's 1,000")
    ap.add_argument("--db", type=float, default=20.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    ds = resolve_dataset("kit:cifar10-real/test")
    split = load_dataset("imagefolder", "test", root=ds.options["root"], num_classes=10)
    pos = np.arange(0, len(split), max(1, len(split) // args.n))[: args.n]
    x, y, idx = split.read(pos).to(torch.float64), split.labels[pos], split.indices[pos]
    models = {m: load_model("kit:cifar10-real/" + m) for m in dict.fromkeys([args.authorized, *EVALUATED])}
    auth = models[args.authorized]
    fl = auth.first_linear()
    pre = auth.preprocess
    mean, std = (torch.tensor(v, dtype=torch.float64).view(1, -1, 1, 1) for v in (pre.mean, pre.std))
    geo = dict(kernel=fl.kernel_size, stride=fl.stride, padding=fl.padding)
    conv = next(m for m in auth.module.modules() if isinstance(m, torch.nn.Conv2d))
    code_basis = code_null_basis(conv.weight, 1e-4)
    ne = {lay: get_defense("ne-patch")(tau=1e-4, rule="threshold", layout=lay) for lay in ("independent", "tiled")}
    for d in ne.values():
        d.fit(auth)
    op = get_defense("ne-operator")(dims=0.0833)
    op.fit(auth)
    noise = get_defense("noise")()
    noise.fit(auth)
    print(json.dumps({
        "provenance": {"git": git_commit(), "kit_dataset": ds.identity, "images": len(x), "positions": "every %d-th" % (len(split) // args.n),
                       "seed": args.seed, "authorized": args.authorized, "model_digests": {m: a.digest for m, a in models.items()}},
        "first_layer": {"weight": list(fl.weight.shape), "stride": list(fl.stride), "padding": list(fl.padding), "std": list(pre.std)},
        "code_subspace_dim": code_basis.shape[1], "harness_subspace_dim": ne["tiled"].summary()["subspace_dim"],
        # the harness's pixel-space basis, mapped to the normalized domain the code works in
        "subspace_gap": principal_gap(code_basis, ne["tiled"]._normalized_basis(pre.std).on(torch.device("cpu"))["basis"]),
    }))

    def report(label: str, released: torch.Tensor) -> None:
        d = released - x
        top1 = {m: round(float((a.predict(released.to(torch.float32)).argmax(1).cpu() == y).double().mean() * 100), 1)
                for m, a in models.items()}
        print(json.dumps({"release": label, "psnr_true": round(float(psnr(x, released).mean()), 2),
                          "psnr_code_measure": round(float(psnr(x, released, std.flatten(), 255.0).mean()), 2),
                          "auth_first_layer_dev": round(float(fl.output_deviation(x, released).mean()), 4),
                          "energy_in_code_subspace": round(float(subspace_energy(d / std, code_basis, **geo).mean()), 4),
                          "top1": top1}))

    report("clean", x)
    for label, defense in [("ne-patch independent", ne["independent"]), ("ne-patch tiled", ne["tiled"]),
                           ("ne-operator", op), ("noise (Gaussian control)", noise)]:
        report(f"harness {label}, true {args.db:g} dB", calibrate(x, defense.directions(x, idx, y, args.seed), args.db, "float").released)
    first, fresh = (ne["tiled"].patch_noise(x, idx, y, s, fl, pre.std) for s in (args.seed, args.seed + FRESH))
    pc = calibrate_paper_code(x, first, fresh, fl.unfold, fl.fold, pre.mean, pre.std, args.db, "float")
    report(f"harness psnr_mode paper-code, nominal {args.db:g} dB", pc.calibrated.released)
    out = code_release((x - mean) / std, code_basis, args.db, geo["kernel"], geo["stride"], geo["padding"],
                       torch.Generator().manual_seed(42))
    report(f"code re-impl, nominal {args.db:g} dB: clean + fold(noise)", out.intended * std + mean)
    report(f"code re-impl, nominal {args.db:g} dB: fold(P + noise) (what the code feeds)", out.fed * std + mean)


if __name__ == "__main__":
    main()

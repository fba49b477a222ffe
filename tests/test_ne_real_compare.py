"""The harness's ne-patch against an independent re-implementation of the public NE code's pipeline
(tests/ne_code_pipeline.py): same subspace, same release under the code's strength rule with aligned
draws, same structure (energy inside the subspace, authorized first-layer change) at the same true PSNR.

CI runs these on small random-weight conv stems; the last test repeats the comparison on a real kit
model (cifar10-real, marabou-large: a 4x4 stride-2 first conv) when the kit files are present
(docs/reproduction.md gives the measured numbers and what they mean)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from bench.defenses import get_defense
from bench.defenses.release import calibrate, calibrate_paper_code, psnr
from bench.models.sources import from_module
from ne_code_pipeline import code_null_basis, code_release, overlap_count, principal_gap, subspace_energy

FRESH = 7_919  # bench.protocols.input_auth.CODE_FRESH_DRAW: the seed offset of the code's second draw


def stem(out=32, kernel=4, stride=2, size=16, seed=0, std=(1.0, 1.0, 1.0), mean=(0.0, 0.0, 0.0)):
    torch.manual_seed(seed)
    positions = ((size - kernel) // stride + 1) ** 2
    module = nn.Sequential(nn.Conv2d(3, out, kernel, stride), nn.ReLU(), nn.Flatten(), nn.Linear(out * positions, 10))
    return module, from_module(module, "stem", mean=mean, std=std, input_size=(3, size, size))


def images(n=24, size=16, seed=1):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def fitted(adapter, layout="independent"):
    ne = get_defense("ne-patch")(tau=1e-4, rule="threshold", layout=layout)
    ne.fit(adapter)
    return ne


@pytest.mark.parametrize("out,kernel,stride", [(32, 4, 2), (32, 4, 4), (64, 4, 2), (8, 3, 1)])
def test_harness_subspace_is_the_codes(out, kernel, stride):
    """More inputs than outputs (48 > 32, 27 > 8): the code ignores tau, the basis is the exact nullspace;
    more outputs than inputs (64 > 48): no singular value is <= tau, both fall back to the last direction."""
    module, adapter = stem(out, kernel, stride)
    code = code_null_basis(module[0].weight, 1e-4)
    ne = fitted(adapter)
    assert ne.summary()["subspace_dim"] == code.shape[1] == max(3 * kernel * kernel - out, 1)
    assert principal_gap(code, ne._basis) < 1e-9


@pytest.mark.parametrize("stride", [2, 4])
def test_paper_code_mode_is_the_code_pipeline_end_to_end(stride):
    """With the harness's own tiled draws fed to the re-implementation, psnr_mode "paper-code" releases the
    code's image (clean + fold(noise)) to rounding: scale, fresh draw and fold agree."""
    module, adapter = stem(stride=stride, mean=(0.4, 0.5, 0.45), std=(0.25, 0.25, 0.25))
    fl, x = adapter.first_linear(), images()
    idx, y = np.arange(len(x)), torch.zeros(len(x), dtype=torch.long)
    ne = fitted(adapter, "tiled")
    mean, std = adapter.preprocess.mean, adapter.preprocess.std
    first, fresh = (ne.patch_noise(x, idx, y, s, fl, std) for s in (0, FRESH))
    harness = calibrate_paper_code(x, first, fresh, fl.unfold, fl.fold, mean, std, 20.0, "float").calibrated.released
    samples, k = list(zip(idx.tolist(), y.tolist())), ne._basis.shape[1]
    codes = (ne.draw_codes(0, samples, (k, 1)), ne.draw_codes(FRESH, samples, (k, 1)))
    m, s = (torch.tensor(v, dtype=torch.float64).view(1, -1, 1, 1) for v in (mean, std))
    basis = code_null_basis(module[0].weight, 1e-4)  # the code's own basis, computed independently
    ref = code_release((x - m) / s, basis, 20.0, fl.kernel_size, fl.stride, fl.padding, codes=codes)
    assert torch.allclose(harness, ref.intended * s + m, atol=1e-9)
    # the code's "20 dB" is its own measure (peak 255 on the normalized tensor): far below 20 dB true PSNR
    assert float(psnr(x, harness).mean()) < 0.0


def test_code_fold_also_sums_the_image_where_patches_overlap():
    """What the code feeds a model is fold(P + noise) = count * xn + fold(noise); the harness releases
    xn + fold(noise) (the same thing only for a non-overlapping stem)."""
    for stride in (2, 4):
        module, adapter = stem(stride=stride)
        fl, x = adapter.first_linear(), images(4)
        basis = code_null_basis(module[0].weight, 1e-4)
        out = code_release(x, basis, 20.0, fl.kernel_size, fl.stride, fl.padding, torch.Generator().manual_seed(0))
        count = overlap_count(x.shape[1:], fl.kernel_size, fl.stride, fl.padding)
        assert torch.allclose(out.fed - out.intended, (count - 1) * x, atol=1e-8)
        assert (stride == 4) == bool((count == 1).all())


def _code_at_true_psnr(x, basis, fl, db, seed):
    """The code's perturbation direction (tiled, folded), rescaled to a true pixel PSNR (std 1, mean 0)."""
    out = code_release(x, basis, 20.0, fl.kernel_size, fl.stride, fl.padding, torch.Generator().manual_seed(seed))
    return calibrate(x, out.intended - x, db, "float").released


@pytest.mark.parametrize("stride", [2, 4])
def test_same_structure_at_the_same_true_psnr(stride):
    """At one true PSNR the harness's releases (both layouts) and the code's have the same share of the
    perturbation inside the tau-subspace and the same authorized first-layer change (statistically):
    all of it and ~0 for a non-overlapping stem, the fold's leak for an overlapping one."""
    module, adapter = stem(stride=stride)
    fl, x = adapter.first_linear(), images(48)
    idx, y = np.arange(len(x)), torch.zeros(len(x), dtype=torch.long)
    basis = code_null_basis(module[0].weight, 1e-4)
    geo = dict(kernel=fl.kernel_size, stride=fl.stride, padding=fl.padding)
    code = _code_at_true_psnr(x, basis, fl, 20.0, 0)
    e_code, dev_code = subspace_energy(code - x, basis, **geo).mean(), fl.output_deviation(x, code).mean()
    for layout in ("tiled", "independent"):
        ne = fitted(adapter, layout)
        rel = calibrate(x, ne.directions(x, idx, y, 0), 20.0, "float").released
        e, dev = subspace_energy(rel - x, basis, **geo).mean(), fl.output_deviation(x, rel).mean()
        if stride == 4:
            assert e > 1 - 1e-9 and e_code > 1 - 1e-9 and dev < 1e-9 and dev_code < 1e-9
        else:
            assert e < 0.9 and abs(e - e_code) < 0.1, (layout, float(e), float(e_code))
            assert 0.7 < float(dev / dev_code) < 1.4, (layout, float(dev), float(dev_code))


# read at import, before the suite's fixtures point AUTHBENCH_CACHE at a temporary folder
CACHE = Path(os.environ.get("AUTHBENCH_CACHE", Path.home() / ".cache" / "authbench"))
KIT = CACHE / "kits" / "cifar10-real"


@pytest.mark.skipif(not (KIT / "vnncomp2021").is_dir() or not (KIT / "test").is_dir(),
                    reason=f"opt-in: needs the cifar10-real kit files under {KIT} "
                           "(authbench kit fetch/import cifar10-real; set AUTHBENCH_CACHE)")
def test_real_marabou_large_harness_matches_code():
    """On the real marabou-large (4x4 stride-2 first conv, no normalization) and 16 kit images: the same
    16-dim subspace, the same leak of the fold, the same first-layer change at 20 dB true PSNR, and
    psnr_mode "paper-code" = the code's release with aligned draws."""
    from bench.data.base import load_dataset
    from bench.kits.resolve import resolve_dataset
    from bench.models.sources import load_model

    auth = load_model("kit:cifar10-real/marabou-large", cache_dir=CACHE)
    fl = auth.first_linear()
    split = load_dataset("imagefolder", "test", root=resolve_dataset("kit:cifar10-real/test", CACHE).options["root"], num_classes=10)
    pos = np.arange(0, len(split), len(split) // 16)[:16]
    x, y, idx = split.read(pos).to(torch.float64), split.labels[pos], split.indices[pos]
    conv = next(m for m in auth.module.modules() if isinstance(m, nn.Conv2d))
    basis = code_null_basis(conv.weight, 1e-4)
    ne = fitted(auth, "tiled")
    assert basis.shape[1] == ne.summary()["subspace_dim"] == 16 and principal_gap(basis, ne._basis) < 1e-9
    geo = dict(kernel=fl.kernel_size, stride=fl.stride, padding=fl.padding)
    rel = calibrate(x, ne.directions(x, idx, y, 0), 20.0, "float").released
    code = _code_at_true_psnr(x, basis, fl, 20.0, 0)
    e, e_code = subspace_energy(rel - x, basis, **geo).mean(), subspace_energy(code - x, basis, **geo).mean()
    assert e < 0.8 and abs(e - e_code) < 0.1
    assert 0.7 < float(fl.output_deviation(x, rel).mean() / fl.output_deviation(x, code).mean()) < 1.4
    std, mean = auth.preprocess.std, auth.preprocess.mean
    first, fresh = (ne.patch_noise(x, idx, y, s, fl, std) for s in (0, FRESH))
    pc = calibrate_paper_code(x, first, fresh, fl.unfold, fl.fold, mean, std, 20.0, "float").calibrated.released
    samples = list(zip(np.asarray(idx).tolist(), y.tolist()))
    codes = tuple(ne.draw_codes(s, samples, (16, 1)) for s in (0, FRESH))
    ref = code_release(x, basis, 20.0, fl.kernel_size, fl.stride, fl.padding, codes=codes)
    assert torch.allclose(pc, ref.intended, atol=1e-8)

"""Release formats and PSNR calibration of a perturbation direction.

PSNR is always *measured* on the released image in pixel space (peak 1.0). The
strength lambda is solved per sample so that the released image meets the target:

- psnr_mode "true": target MSE = 10^(-dB/10) in pixel space;
- psnr_mode "paper-nominal": the PSNR *measure* of the NE authors' public code (its
  `calculate_psnr`: peak 255, MSE of the difference on the processor-normalized tensor
  (x - mean) / std), met per sample on the released image; the requested dB is nominal and the
  achieved true pixel-space PSNR is recorded beside it. It is not how that code *scales* its
  perturbation (that is "paper-code"), and the paper's text defines PSNR only by citing Hore &
  Ziou (2010), the standard pixel PSNR, which is "true".
- psnr_mode "paper-code": the public code's scale rule (`calibrate_paper_code`): per sample,
  scale = sqrt(target / mean((P + N1)^2)) with target = 255^2 / 10^(dB/10), P the unfolded
  patches of the processor-normalized image and N1 a first draw of the perturbation in that
  unfolded-patch domain (the mean square of the *noised signal*, not of the perturbation), then
  a fresh draw N2 scaled by it. No target is enforced on the result: calib_err_db and
  unreachable are 0 and the achieved PSNRs (true and nominal) are what it gives.
Given the authorized model's std, the nominal PSNR is recorded in every mode, so reports can
show both scales.

An unreachable target (a clipped or 8-bit release saturates: no strength brings its PSNR down to the
target, e.g. 0 dB) is not chased: the search stops at the strength where the achieved PSNR stops
falling (within STALL_DB of the fully saturated release, the lowest PSNR the format allows), and
the sample is counted in `unreachable`; reports show the achieved PSNR beside the target.

`calibrate` runs on the batch's device in float64, vectorised over the batch (closed form for
"float", a batched bisection for "clip" and "uint8"); every per-sample reduction is taken in a
fixed order, so a sample's result does not depend on the other samples in its batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.core.errors import UserError

RELEASES = {
    "float": "unclipped float image (what the math assumes)",
    "clip": "clipped to the valid pixel range [0, 1]",
    "uint8": "clipped and rounded to 8 bits, as a PNG would store it",
}
PSNR_MODES = ("true", "paper-nominal", "paper-code")
CODE_PEAK = 255.0  # the public NE code's peak, on the processor-normalized tensor
TOLERANCE_DB = 0.1
# an unreachable target stops at the weakest strength within this many dB of the saturated release's PSNR
STALL_DB = 0.01
# part of the input identity of clipped / 8-bit releases: bump when the calibration changes what they release
CALIBRATION_VERSION = 2


def release(x: torch.Tensor, fmt: str) -> torch.Tensor:
    if fmt == "float":
        return x
    if fmt == "clip":
        return x.clamp(0.0, 1.0)
    if fmt == "uint8":
        return torch.round(x.clamp(0.0, 1.0) * 255.0) / 255.0
    raise UserError(f"unknown release format {fmt!r}; valid choices: {', '.join(RELEASES)}")


def _row_sum(t: torch.Tensor) -> torch.Tensor:
    """Per-sample sum of an (N, ...) tensor: over the last axis first, then over the rest.

    One long reduction per sample may be split across threads when the batch is smaller than
    the thread count, which changes its last bits; these two short ones are not."""
    if t.dim() > 2:
        t = t.sum(-1)
    return t.reshape(len(t), -1).sum(1)


def _sum_sq(t: torch.Tensor) -> torch.Tensor:
    return _row_sum(t.pow(2))


def psnr(clean: torch.Tensor, released: torch.Tensor, std: torch.Tensor | None = None, peak: float = 1.0) -> torch.Tensor:
    """Per-sample PSNR in dB; with `std`, MSE is taken on the normalized tensor (paper-nominal)."""
    diff = released - clean
    if std is not None:
        diff = diff / std.to(diff.device).view(1, -1, 1, 1)
    mse = _sum_sq(diff) / diff[0].numel() if len(diff) else diff.new_zeros(0)
    return 10 * torch.log10(peak**2 / mse.clamp_min(1e-30))


@dataclass
class Calibrated:
    released: torch.Tensor
    psnr_true: torch.Tensor
    psnr_nominal: torch.Tensor | None
    unreachable: int
    max_err_db: float
    reached: torch.Tensor | None = None  # per sample: |achieved - target| <= TOLERANCE_DB


def calibrate(
    clean: torch.Tensor,
    delta: torch.Tensor,
    target_db: float,
    fmt: str,
    mode: str = "true",
    std: tuple[float, ...] | None = None,
    iters: int = 40,
) -> Calibrated:
    """Scale each sample's delta so PSNR(release(clean + lam * delta), clean) hits target_db."""
    if mode not in PSNR_MODES:
        raise UserError(f"unknown psnr_mode {mode!r}; valid choices: {', '.join(PSNR_MODES)}")
    if mode == "paper-code":
        raise UserError("psnr_mode 'paper-code' scales patch-domain noise: use calibrate_paper_code")
    x = clean.to(torch.float64)
    d = delta.to(device=x.device, dtype=torch.float64)
    if mode == "paper-nominal" and std is None:
        raise UserError("psnr_mode 'paper-nominal' needs the authorized model's normalization std")
    std_all = None if std is None else torch.tensor(std, dtype=torch.float64, device=x.device).expand(x.shape[1])
    std_t = std_all if mode == "paper-nominal" else None
    peak = 255.0 if mode == "paper-nominal" else 1.0
    measure = lambda r: psnr(x, r, std_t, peak)  # noqa: E731

    per_sample = x[0].numel() if len(x) else 1
    unit = d / _sum_sq(d).sqrt().clamp_min(1e-30).view(-1, 1, 1, 1)
    norm_mse = _sum_sq(unit if std_t is None else unit / std_t.view(1, -1, 1, 1)) / per_sample
    target_mse = peak**2 * 10 ** (-target_db / 10)
    lam = (target_mse / norm_mse).sqrt()  # exact for the float release
    if fmt != "float":
        if fmt not in RELEASES:
            release(x[:0], fmt)  # the one-line error
        buf = torch.empty_like(x)

        def measure_at(scale: torch.Tensor) -> torch.Tensor:
            """measure(release(x + scale * unit, fmt)), computed in place in one buffer (same values)."""
            torch.mul(unit, scale.view(-1, 1, 1, 1), out=buf)
            buf.add_(x).clamp_(0.0, 1.0)
            if fmt == "uint8":
                buf.mul_(255.0).round_().div_(255.0)
            buf.sub_(x)
            if std_t is not None:
                buf.div_(std_t.view(1, -1, 1, 1))
            mse = _row_sum(buf.mul_(buf)) / per_sample
            return 10 * torch.log10(peak**2 / mse.clamp_min(1e-30))

        # the strength past which every pixel the direction moves is saturated (at 0 or 1): the release, and
        # its PSNR, no longer change; a target below that floor (plus STALL_DB) is searched for the floor instead
        xc = x.clamp(0.0, 1.0)
        room = torch.where(unit > 0, (1.0 - xc) / unit.clamp_min(1e-300),
                           torch.where(unit < 0, xc / (-unit).clamp_min(1e-300), torch.zeros_like(x)))
        saturated = 2.0 * room.reshape(len(x), -1).amax(1) if len(x) else lam
        stall = measure_at(saturated) + STALL_DB
        short = torch.as_tensor(target_db, dtype=torch.float64, device=x.device) < stall
        goal = torch.where(short, stall, torch.full_like(stall, float(target_db)))
        lo, hi = torch.zeros_like(lam), torch.where(short, saturated, lam * 1e3)  # reachable: the search as before
        for _ in range(iters):
            mid = (lo + hi) / 2
            too_strong = measure_at(mid) < goal
            hi = torch.where(too_strong, mid, hi)
            lo = torch.where(too_strong, lo, mid)
        lam = (lo + hi) / 2
    out = release(x + lam.view(-1, 1, 1, 1) * unit, fmt)
    achieved = measure(out)  # the PSNR of the mode, recorded as it (the other one computed)
    err = (achieved - target_db).abs()
    nominal = achieved if mode == "paper-nominal" else None if std_all is None else psnr(x, out, std_all, 255.0)
    return Calibrated(
        released=out.to(clean.dtype),
        psnr_true=achieved if mode == "true" else psnr(x, out),
        psnr_nominal=nominal,  # recorded in either mode when the std is known
        unreachable=int((err > TOLERANCE_DB).sum()),
        max_err_db=float(err.max()) if len(err) else 0.0,
        reached=err <= TOLERANCE_DB,
    )


def code_target_mse(target_db: float) -> float:
    """The public NE code's target: 255^2 / 10^(dB/10)."""
    return CODE_PEAK**2 / 10 ** (target_db / 10)


def paper_code_scale(patches: torch.Tensor, noise: torch.Tensor, target_db: float) -> torch.Tensor:
    """Per-sample scale of the public NE code: sqrt(target / mean((patches + noise)^2)) over each
    sample's unfolded (n, L) entries (the mean square of the noised signal); 1 where that is 0."""
    noised = patches + noise
    ms = _row_sum(noised.pow(2)) / noised[0].numel() if len(noised) else noised.new_zeros(0)
    scale = (code_target_mse(target_db) / ms.clamp_min(1e-300)).sqrt()
    return torch.where(ms > 0, scale, torch.ones_like(scale))


@dataclass
class CodeRelease:
    """What `calibrate_paper_code` gives: the released image (clean + folded perturbation), its
    calibration facts, and the noised unfolded patches P + scale * N2 (normalized domain) the code's
    authorized model reads for an overlapping stem (evaluation "paper-code")."""

    calibrated: Calibrated
    noised_patches: torch.Tensor
    noise: torch.Tensor
    scale: torch.Tensor


def calibrate_paper_code(clean: torch.Tensor, first: torch.Tensor, fresh: torch.Tensor, unfold, fold,
                         mean: tuple[float, ...], std: tuple[float, ...], target_db: float, fmt: str) -> CodeRelease:
    """The public NE code's strength rule on pixel images `clean` (N, C, H, W).

    `first` and `fresh` (N, n, L) are two independent draws of the perturbation in the unfolded-patch
    domain of the processor-normalized tensor; `unfold` / `fold` map (N, C, H, W) <-> (N, n, L) (the
    authorized model's first layer). The scale is computed with `first` and applied to `fresh`; the
    released image is clean + std * fold(scale * fresh) in pixel space, then the release format."""
    if fmt not in RELEASES:
        release(clean[:0], fmt)  # the one-line error
    x = clean.to(torch.float64)
    c = x.shape[1]
    m = torch.tensor(mean, dtype=torch.float64, device=x.device).expand(c).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float64, device=x.device).expand(c).view(1, -1, 1, 1)
    patches = unfold((x - m) / s)
    first = first.to(device=x.device, dtype=torch.float64)
    fresh = fresh.to(device=x.device, dtype=torch.float64)
    scale = paper_code_scale(patches, first, target_db)
    noise = scale.view(-1, 1, 1) * fresh
    out = release(x + s * fold(noise), fmt)
    std_all = tuple(float(v) for v in s.flatten())
    cal = Calibrated(released=out.to(clean.dtype), psnr_true=psnr(x, out),
                     psnr_nominal=psnr(x, out, torch.tensor(std_all, dtype=torch.float64), CODE_PEAK),
                     unreachable=0, max_err_db=0.0)
    return CodeRelease(calibrated=cal, noised_patches=patches + noise, noise=noise, scale=scale)


def split_psnr(per_sample_db: torch.Tensor, peak: float = CODE_PEAK) -> float:
    """One PSNR over a whole split from per-sample PSNRs of equal-size samples (the code's
    `calculate_psnr`: one MSE over every entry), independent of how the split was batched."""
    mse = (peak**2 * 10 ** (-per_sample_db.to(torch.float64) / 10)).mean()
    return float(10 * torch.log10(peak**2 / mse.clamp_min(1e-300)))

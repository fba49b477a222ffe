"""Batched, device-aware encoding: the same numbers as the per-sample code it replaced, independent
of batch size, following the batch's device.

The `_old_*` functions are verbatim copies of the per-sample implementations at the commit that
introduced batching (`git show HEAD:bench/defenses/{base,ne,noise,release,operator_basis,
operator_fourier}.py`); the new ones must agree with them to ~1e-12 relative on the CPU.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn as nn

from bench.defenses import get_defense
from bench.defenses.base import InputDefense
from bench.defenses.operator_basis import DenseBasis, PerDevice, rows_matmul
from bench.defenses.operator_fourier import FourierBasis
from bench.defenses.release import calibrate
from bench.core.errors import UserError
from bench.models.sources import from_module

REL = 1e-12


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with torch.no_grad():
        yield
    torch.set_num_threads(before)


# --- verbatim per-sample reference (HEAD before batching) -----------------------------------


def _old_sample_generator(seed: int, index: int, stream: str = "") -> torch.Generator:
    """A generator for one sample, independent of batching and order."""
    h = hashlib.sha256(f"{seed}|{stream}|{index}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(h[:8], "little") & ((1 << 63) - 1))


def _old_code_generator(self, seed: int, index: int, label: int) -> torch.Generator:
    """Per instance (default), per class, or one fixed code per client, as the paper allows."""
    code = self.params.get("code", "instance")
    key = {"instance": index, "class": -1 - label, "client": -(10**9)}[code]
    return _old_sample_generator(seed, key, self.name)


def _old_ne_patch_directions(self, x, indices, labels, seed):
    k = self._basis.shape[1]
    cols = []
    for i, y in zip(indices, labels):
        gen = self.code_generator(seed, int(i), int(y))
        if self.params["layout"] == "tiled":
            z = torch.randn(k, 1, generator=gen, dtype=torch.float64).expand(k, self._positions)
        else:
            z = torch.randn(k, self._positions, generator=gen, dtype=torch.float64)
        cols.append(self._basis @ z)
    return self._fl.fold(torch.stack(cols))


def _old_ne_operator_directions(self, x, indices, labels, seed):
    return torch.stack([self._basis.sample(self.code_generator(seed, int(i), int(y))) for i, y in zip(indices, labels)])


def _old_noise_directions(self, x, indices, labels, seed):
    return torch.stack(
        [
            torch.randn(x.shape[1:], generator=self.code_generator(seed, int(i), int(y)), dtype=torch.float64)
            for i, y in zip(indices, labels)
        ]
    )


def _old_dense_sample(self, gen: torch.Generator) -> torch.Tensor:
    z = torch.randn(self.dim, generator=gen, dtype=torch.float64)
    return (self.vectors @ z).reshape(self.shape)


class _OldFourier:
    """A fitted FourierBasis with its per-sample `sample`/`combine`/`_synthesize` of before."""

    def __init__(self, basis: FourierBasis):
        self._b = basis

    def __getattr__(self, name):
        return getattr(self._b, name)

    def sample(self, gen: torch.Generator) -> torch.Tensor:
        """One standard Gaussian draw in the chosen k-dim real subspace, (C, H, W) float64."""
        return self.combine(torch.randn(self.dim, generator=gen, dtype=torch.float64))

    def combine(self, z: torch.Tensor) -> torch.Tensor:
        """The direction sum_i z_i u_i for the orthonormal real basis u_1..u_k (gains ascending)."""
        n_comp = len(self._comp_freq)
        coef = torch.zeros(n_comp, 2, dtype=torch.float64)
        coef[self._slot_comp, self._slot_part] = z
        coef = torch.view_as_complex(coef) * self._comp_scale  # (n_comp,)
        n_freq = len(self._flat)
        if self.constant:
            cmat = torch.zeros(n_freq, self.n_in, dtype=torch.complex128)
            cmat[self._comp_freq, self._comp_vec] = coef
            half = cmat @ self._vecs.T  # (F, n_in)
        else:
            half = torch.zeros(n_freq, self.n_in, dtype=torch.complex128)
            half.index_add_(0, self._comp_freq, coef.unsqueeze(1) * self._vecs)
        return self._synthesize(half)

    def _synthesize(self, half: torch.Tensor) -> torch.Tensor:
        """Half spectrum (F, n_in) -> real part of the unitary inverse FFT, in (C, H, W) layout."""
        m_, n_ = self.grid
        spec = torch.zeros(self.n_in, m_ * n_, dtype=torch.complex128)
        spec[:, self._flat] = half.T
        phases = torch.fft.ifft2(spec.reshape(self.n_in, m_, n_), norm="ortho").real
        return self._from_polyphase(phases.unsqueeze(0))[0]


class _OldDense:
    def __init__(self, basis: DenseBasis):
        self._b = basis

    def __getattr__(self, name):
        return getattr(self._b, name)

    sample = _old_dense_sample


def _old_release(x: torch.Tensor, fmt: str) -> torch.Tensor:
    if fmt == "float":
        return x
    if fmt == "clip":
        return x.clamp(0.0, 1.0)
    if fmt == "uint8":
        return torch.round(x.clamp(0.0, 1.0) * 255.0) / 255.0
    raise UserError(f"unknown release format {fmt!r}")


def _old_psnr(clean, released, std=None, peak: float = 1.0):
    """Per-sample PSNR in dB; with `std`, MSE is taken on the normalized tensor (paper-nominal)."""
    diff = released - clean
    if std is not None:
        diff = diff / std.view(1, -1, 1, 1)
    mse = diff.pow(2).flatten(1).mean(1)
    return 10 * torch.log10(peak**2 / mse.clamp_min(1e-30))


def _old_calibrate(clean, delta, target_db, fmt, mode="true", std=None, iters=40):
    """Scale each sample's delta so PSNR(release(clean + lam * delta), clean) hits target_db."""
    release, psnr = _old_release, _old_psnr
    x = clean.to(torch.float64)
    d = delta.to(torch.float64)
    std_all = None if std is None else torch.tensor(std, dtype=torch.float64).expand(x.shape[1])
    std_t = std_all if mode == "paper-nominal" else None
    peak = 255.0 if mode == "paper-nominal" else 1.0
    measure = lambda r: psnr(x, r, std_t, peak)  # noqa: E731

    unit = d / d.flatten(1).norm(dim=1).clamp_min(1e-30).view(-1, 1, 1, 1)
    norm_mse = (unit if std_t is None else unit / std_t.view(1, -1, 1, 1)).pow(2).flatten(1).mean(1)
    target_mse = peak**2 * 10 ** (-target_db / 10)
    lam = (target_mse / norm_mse).sqrt()  # exact for the float release
    if fmt != "float":
        lo, hi = torch.zeros_like(lam), lam * 1e3
        for _ in range(iters):
            mid = (lo + hi) / 2
            too_strong = measure(release(x + mid.view(-1, 1, 1, 1) * unit, fmt)) < target_db
            hi = torch.where(too_strong, mid, hi)
            lo = torch.where(too_strong, lo, mid)
        lam = (lo + hi) / 2
    out = release(x + lam.view(-1, 1, 1, 1) * unit, fmt)
    achieved = measure(out)
    err = (achieved - target_db).abs()
    return SimpleNamespace(
        released=out.to(clean.dtype),
        psnr_true=psnr(x, out),
        psnr_nominal=None if std_all is None else psnr(x, out, std_all, 255.0),
        unreachable=int((err > 0.1).sum()),
        max_err_db=float(err.max()),
    )


def _old_directions(defense, x, indices, labels, seed):
    """The per-sample code of before, run on the fitted state of `defense`."""
    ref = SimpleNamespace(**vars(defense))
    ref.name = defense.name
    ref.code_generator = lambda s, i, y: _old_code_generator(ref, s, i, y)
    if defense.name == "ne-patch":
        return _old_ne_patch_directions(ref, x, indices, labels, seed)
    if defense.name == "ne-operator":
        b = defense._basis
        ref._basis = _OldFourier(b) if isinstance(b, FourierBasis) else _OldDense(b)
        return _old_ne_operator_directions(ref, x, indices, labels, seed)
    return _old_noise_directions(ref, x, indices, labels, seed)


# --- fixtures -------------------------------------------------------------------------------


def _adapter(module: nn.Module, shape, std=0.5):
    torch.manual_seed(0)
    for p in module.parameters():
        nn.init.normal_(p)
    return from_module(module, "m", mean=(0.3,) * shape[0], std=(std,) * shape[0], input_size=shape)


def linear():  # Linear first layer: 256 inputs -> 64
    return _adapter(nn.Sequential(nn.Flatten(), nn.Linear(256, 64), nn.ReLU(), nn.Linear(64, 10)), (1, 16, 16))


def conv3x3():  # 3x3 stride 1 pad 1 (overlapping, digits-zoo-like stem)
    return _adapter(nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.Flatten(), nn.Linear(8 * 256, 10)), (1, 16, 16))


def patch8():  # 8x8 stride 8 patch embedding: 192 -> 48 per patch, 4 patches
    return _adapter(nn.Sequential(nn.Conv2d(3, 48, 8, 8), nn.Flatten(), nn.Linear(48 * 4, 10)), (3, 16, 16))


MODELS = {"linear": linear, "conv3x3": conv3x3, "patch8": patch8}
_cache: dict = {}


def model(name):
    if name not in _cache:
        _cache[name] = MODELS[name]()
    return _cache[name]


def batch(name, n, seed=0):
    shape = model(name).preprocess.input_size
    x = torch.rand(n, *shape, generator=torch.Generator().manual_seed(seed))
    indices = np.arange(n) * 7 + 100  # dataset indices, not positions
    labels = np.arange(n) % 3
    return x, indices, labels


def fitted(defense, name, **params):
    d = get_defense(defense)(**params)
    d.fit(model(name))
    return d


# (defense, params, model) covering every direction path: ne-patch layouts on Linear / overlapping /
# patch-embedding layers, ne-operator dense and fourier (non-constant and constant Gram), noise
CONFIGS = [
    ("ne-patch", {"layout": "independent"}, "linear"),
    ("ne-patch", {"layout": "independent"}, "conv3x3"),
    ("ne-patch", {"layout": "independent"}, "patch8"),
    ("ne-patch", {"layout": "tiled"}, "conv3x3"),
    ("ne-patch", {"layout": "tiled"}, "patch8"),
    ("ne-operator", {"backend": "dense"}, "linear"),
    ("ne-operator", {"backend": "dense"}, "conv3x3"),
    ("ne-operator", {"backend": "fourier"}, "conv3x3"),
    ("ne-operator", {"backend": "fourier"}, "patch8"),
    ("ne-operator", {"backend": "auto"}, "patch8"),
    ("noise", {}, "patch8"),
]
IDS = [f"{d}-{'-'.join(map(str, p.values()))}-{m}" for d, p, m in CONFIGS]


def _rel(new: torch.Tensor, old: torch.Tensor) -> float:
    return float((new - old).abs().max() / old.abs().max().clamp_min(1e-300))


# --- agreement with the per-sample code -----------------------------------------------------


@pytest.mark.parametrize("code", ["instance", "class", "client"])
@pytest.mark.parametrize("defense,params,name", CONFIGS, ids=IDS)
def test_batched_directions_match_the_per_sample_code(defense, params, name, code):
    d = fitted(defense, name, code=code, **params)
    x, indices, labels = batch(name, 9)
    new = d.directions(x, indices, labels, 5)
    old = _old_directions(d, x, indices, labels, 5)
    assert new.dtype == torch.float64 and new.shape == x.shape and new.device == x.device
    assert _rel(new, old) <= REL
    if defense == "noise":  # pure draws: the very same values
        assert torch.equal(new, old)
    if code == "client":
        assert torch.equal(new, new[:1].expand_as(new))
    if code == "class":
        assert torch.equal(new[0], new[3]) and not torch.equal(new[0], new[1])


def test_ne_operator_fourier_backend_is_exercised_in_both_modes():
    assert not fitted("ne-operator", "conv3x3", backend="fourier")._basis.constant
    assert fitted("ne-operator", "patch8", backend="fourier")._basis.constant
    assert isinstance(fitted("ne-operator", "patch8")._basis, DenseBasis)  # auto: 768 dims is dense


@pytest.mark.parametrize("fmt", ["float", "clip", "uint8"])
@pytest.mark.parametrize("mode", ["true", "paper-nominal"])
def test_calibrate_matches_the_per_sample_code(fmt, mode):
    x, _, _ = batch("patch8", 12)
    delta = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    delta[3] *= 1e-3  # scale must not matter
    std = (0.2, 0.25, 0.3)
    for target in (30.0, 20.0, -5.0):
        new = calibrate(x.double(), delta, target, fmt, mode, std)
        old = _old_calibrate(x.double(), delta, target, fmt, mode, std)
        ok = new.reached  # reachable targets: the very release of the per-sample code
        if ok.any():
            assert _rel(new.released[ok], old.released[ok]) <= REL
            assert _rel(new.psnr_true[ok], old.psnr_true[ok]) <= REL
            assert _rel(new.psnr_nominal[ok], old.psnr_nominal[ok]) <= REL
        assert new.unreachable == old.unreachable
        if ok.all():
            assert new.max_err_db == pytest.approx(old.max_err_db, rel=1e-9, abs=1e-12)
        else:  # unreachable ones stop where the PSNR stops falling (issue 16): no stronger than the old 1000x
            assert (new.psnr_true[~ok] >= old.psnr_true[~ok] - 1e-9).all()
        f32 = calibrate(x, delta, target, fmt, mode, std)  # float32 images come back float32
        assert f32.released.dtype == torch.float32


# --- independence of the batch --------------------------------------------------------------


def _encode_in_pieces(d, x, indices, labels, piece, fmt):
    released, psnrs, dirs = [], [], []
    for s in range(0, len(x), piece):
        sl = slice(s, s + piece)
        dd = d.directions(x[sl], indices[sl], labels[sl], 11)
        cal = calibrate(x[sl], dd, 25.0, fmt)
        dirs.append(dd)
        released.append(cal.released)
        psnrs.append(cal.psnr_true)
    return torch.cat(dirs), torch.cat(released), torch.cat(psnrs)


# every path on one thread; one config per path on two (a sample alone in its batch must not have
# its reductions split across threads)
TWO_THREADS = {0, 1, 3, 6, 7, 8, 10}
PIECES = [(*c, 1) for c in CONFIGS] + [(*c, 2) for i, c in enumerate(CONFIGS) if i in TWO_THREADS]


@pytest.mark.parametrize("defense,params,name,threads", PIECES,
                         ids=[f"{i}-t{t}" for i, t in zip(IDS + [IDS[i] for i in sorted(TWO_THREADS)], [p[3] for p in PIECES])])
def test_pieces_of_1_7_and_256_give_identical_releases(defense, params, name, threads):
    torch.set_num_threads(threads)
    n = 20 if threads == 2 else 40
    x, indices, labels = batch(name, n, seed=2)
    d = fitted(defense, name, **params)
    fmt = "uint8" if defense == "ne-patch" else "float"
    whole = _encode_in_pieces(d, x, indices, labels, 256, fmt)
    for piece in (1, 7):
        parts = _encode_in_pieces(d, x, indices, labels, piece, fmt)
        for a, b in zip(whole, parts):
            assert torch.equal(a, b), f"piece {piece}: max diff {float((a.double() - b.double()).abs().max())}"


def test_calibrate_of_a_sample_ignores_its_batch_at_224():
    # one 224x224 row is long enough that a single reduction could be split across threads
    torch.set_num_threads(2)
    g = torch.Generator().manual_seed(3)
    x, delta = torch.rand(3, 3, 224, 224, generator=g), torch.randn(3, 3, 224, 224, generator=g, dtype=torch.float64)
    whole = calibrate(x, delta, 20.0, "clip")
    one = [calibrate(x[i : i + 1], delta[i : i + 1], 20.0, "clip") for i in range(3)]
    assert torch.equal(whole.released, torch.cat([c.released for c in one]))
    assert torch.equal(whole.psnr_true, torch.cat([c.psnr_true for c in one]))


def test_dataset_indices_and_labels_may_be_lists_arrays_or_tensors():
    d = fitted("ne-patch", "conv3x3", code="class")
    x, indices, labels = batch("conv3x3", 6)
    a = d.directions(x, indices, labels, 0)
    assert torch.equal(a, d.directions(x, list(indices), list(labels), 0))
    assert torch.equal(a, d.directions(x, torch.as_tensor(indices), torch.as_tensor(labels), 0))
    assert torch.equal(a, d.directions(x.double(), indices, labels, 0))  # input dtype does not matter
    assert torch.equal(a, d.directions(None, indices, labels, 0))  # callers without pixels (text, VLM)
    with pytest.raises(ValueError, match="labels"):
        d.directions(x, indices, labels[:3], 0)


def test_shared_codes_are_drawn_once_with_the_same_values():
    d = fitted("ne-patch", "linear", code="class")
    samples, which = d.distinct_codes([4, 5, 6, 7], [1, 2, 1, 1])
    assert samples == [(4, 1), (5, 2)] and which.tolist() == [0, 1, 0, 0]
    assert d.distinct_codes([4, 5], [2, 0]) == ([(4, 2), (5, 0)], None)  # all distinct: no gather
    inst = fitted("ne-patch", "linear")
    assert inst.distinct_codes([4, 5, 4], [0, 0, 0])[1].tolist() == [0, 1, 0]  # a repeated index: one draw
    z = d.draw_codes(3, samples, (5, 2))
    for row, (i, y) in zip(z, samples):
        assert torch.equal(row, torch.randn(5, 2, generator=d.code_generator(3, i, y), dtype=torch.float64))


def test_overriding_code_generator_alone_keeps_one_draw_per_sample():
    class Custom(InputDefense):
        name, description, defaults = "custom", "test", {"code": "client"}

        def code_generator(self, seed, index, label):
            return torch.Generator().manual_seed(index)

    samples, which = Custom().distinct_codes([1, 2], [0, 0])
    assert samples == [(1, 0), (2, 0)] and which is None


def test_empty_batch():
    d = fitted("ne-operator", "conv3x3", backend="fourier")
    out = d.directions(torch.zeros(0, 1, 16, 16), [], [], 0)
    assert out.shape == (0, 1, 16, 16)


# --- devices --------------------------------------------------------------------------------


def test_rows_matmul_is_row_independent():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(150, 86, generator=g, dtype=torch.float64), torch.randn(86, 300, generator=g, dtype=torch.float64)
    full = rows_matmul(a, b)
    torch.testing.assert_close(full, a @ b, rtol=1e-13, atol=1e-12)
    for piece in (1, 3, 64, 100):
        assert torch.equal(torch.cat([rows_matmul(a[i : i + piece], b) for i in range(0, 150, piece)]), full)
    assert rows_matmul(a[:0], b).shape == (0, 300)


def test_per_device_state_stays_on_the_cpu_with_a_copy_per_device():
    t = torch.arange(4.0)
    state = PerDevice(v=t)
    assert state.on("cpu")["v"] is t and state.on(torch.device("cpu"))["v"] is t
    meta = state.on("meta")["v"]
    assert meta.device.type == "meta" and state.on("meta")["v"] is meta  # cached
    assert state.on("cpu")["v"].device.type == "cpu"


@pytest.mark.parametrize("defense,params,name", CONFIGS, ids=IDS)
def test_directions_follow_the_batch_device(defense, params, name):
    """The meta device stands in for a GPU: any CPU tensor mixed into the device computation raises,
    and the result must come back on the batch's device with x's shape, in float64."""
    d = fitted(defense, name, code="class", **params)
    x, indices, labels = batch(name, 5)
    out = d.directions(x.to("meta"), indices, labels, 0)
    assert out.device.type == "meta" and out.shape == x.shape and out.dtype == torch.float64
    assert d.directions(x, indices, labels, 0).device.type == "cpu"  # the CPU state is left as it was


def test_calibrate_runs_on_the_batch_device():
    """On meta (standing in for a GPU) calibrate computes on the batch's device up to the final
    count, which needs values: a CPU tensor mixed in would fail earlier, with a device error."""
    x = torch.rand(2, 3, 8, 8).to("meta")
    d = torch.randn(2, 3, 8, 8).to("meta")
    for fmt in ("float", "uint8"):
        with pytest.raises(RuntimeError, match=r"item\(\) cannot be called on meta"):
            calibrate(x, d, 20.0, fmt, "paper-nominal", (0.2, 0.2, 0.2))
    with pytest.raises(RuntimeError, match="device"):  # the check above does tell device errors apart
        torch.rand(2).to("meta") + torch.rand(2)


def test_no_unconditional_cuda_calls():
    root = Path(__file__).resolve().parents[1] / "bench" / "defenses"
    for f in ("base.py", "ne.py", "noise.py", "release.py", "operator_basis.py", "operator_fourier.py"):
        assert not re.search(r"\.cuda\(|device=\"cuda|\"cuda:", (root / f).read_text()), f


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("defense,params,name", CONFIGS, ids=IDS)
def test_cuda_matches_cpu(defense, params, name):
    d = fitted(defense, name, code="instance", **params)
    x, indices, labels = batch(name, 9)
    cpu = d.directions(x, indices, labels, 0)
    gpu = d.directions(x.cuda(), indices, labels, 0)
    assert gpu.device.type == "cuda" and _rel(gpu.cpu(), cpu) <= REL
    for fmt in ("float", "uint8"):
        a, b = calibrate(x, cpu, 20.0, fmt), calibrate(x.cuda(), gpu, 20.0, fmt)
        assert _rel(b.psnr_true.cpu(), a.psnr_true) <= 1e-9
    part = d.directions(x.cuda()[:4], indices[:4], labels[:4], 0)  # batch-independent within 1e-12 on a GPU
    assert _rel(part.cpu(), gpu[:4].cpu()) <= REL


def test_the_dense_operator_basis_does_not_depend_on_the_thread_count():
    """Found while checking that results do not move: on a Linear first layer (a 768-dim exact nullspace)
    the dense backend's eigenvectors, and with them every ne-operator release, changed with torch's thread
    count (1 vs 2 threads gave directions 2.3 apart). The fit runs on one thread."""
    import torch.nn as nn

    from bench.defenses.operator_basis import DenseBasis
    from bench.models.first_linear import FirstLinear

    w = nn.Linear(1024, 256).weight.detach().double()
    fl = FirstLinear("linear", w, (1, 32, 32))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = DenseBasis(fl, 86).vectors
        torch.set_num_threads(2)
        two = DenseBasis(fl, 86).vectors
        assert torch.get_num_threads() == 2  # restored
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, two)

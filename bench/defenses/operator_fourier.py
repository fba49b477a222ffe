"""Low-gain directions of a strided Conv2d first layer, by block-diagonalisation in the Fourier domain.

Under a circular boundary, a Conv2d with stride s = (sh, sw) on an (H, W) input whose sides are
multiples of the stride is shift-invariant on the (M, N) = (H/sh, W/sw) output grid once the
input is split into its sh*sw polyphase components x_r[c, a, b] = x[c, sh*a + r1, sw*b + r2].
Kernel tap u reads phase r = (u - pad) mod s at grid offset a = floor((u - pad) / s), so

    y[o, i, j] = sum_{a} H_a[o, (c, r)] x_r[c, i + a1, j + a2]          (indices mod M, N)

and with the unitary 2D DFT of every phase, Y(k) = B(k) X(k) where

    B(k) = sum_a H_a exp(+2 pi i (k1 a1 / M + k2 a2 / N))

is a c_out x (c_in*sh*sw) complex matrix (the FFT of the taps placed at their negative grid
offsets). The circular operator is therefore unitarily equivalent to the block diagonal of
the B(k); its singular values are the square roots of the eigenvalues of
G(k) = B(k)^H B(k) = sum_d P_d exp(+2 pi i k.d / (M, N)), P_d = sum_{b - a = d} H_a^T H_b,
which is what is built (never an n x n matrix, never B for every frequency).

Real directions: the kernel is real, so B(-k) = conj(B(k)) and G(-k) = conj(G(k)). Only one
frequency of each conjugate pair {k, -k} is diagonalised; an eigenpair (lam, v) there stands
for two orthogonal real directions Re(v e_k) and Im(v e_k), both with gain sqrt(lam), and an
eigenpair at a self-conjugate frequency (k = -k: zero or Nyquist) for one (v taken real). The
k smallest gains are picked over these real directions; `sample()` draws complex Gaussian
coefficients for the chosen components, builds the half spectrum, inverse-FFTs, takes the real
part and undoes the polyphase layout (`combine_batch` does so for a batch of codes at once, on
the codes' device; the fitted state stays on the CPU, with a copy per device). The sample is an
isotropic standard Gaussian in the chosen k-dimensional real subspace, the same law as
DenseBasis.sample.

The circular operator equals the true (zero-padded) one except for outputs whose receptive
field crosses the border (none at all for non-overlapping patch embeddings with pad 0), so the
directions are slightly leaky there; `top_gain` is the circular operator's largest singular
value.
"""

from __future__ import annotations

import math

import torch

from bench.defenses.batched import PerDevice, rows_matmul
from bench.core.errors import UserError
from bench.models.first_linear import FirstLinear

# keep every eigenvector of the non-constant case in memory up to this many bytes; above it,
# eigenvalues are computed first and only the frequencies actually picked are diagonalised again
_KEEP_VECTORS_BYTES = 512 * 2**20
_CHUNK_BYTES = 256 * 2**20


def _check(fl: FirstLinear) -> None:
    where = f" ({fl.module_name})" if fl.module_name else ""
    if fl.kind != "conv":
        raise UserError(f"fourier operator backend needs a Conv2d first layer{where}, got kind {fl.kind!r}; use backend 'dense'")
    if tuple(fl.dilation) != (1, 1):
        raise UserError(f"fourier operator backend needs dilation 1{where}, got {tuple(fl.dilation)}; use backend 'dense'")
    _, h, w = fl.input_shape
    sh, sw = fl.stride
    if h % sh or w % sw:
        raise UserError(
            f"fourier operator backend needs input sides divisible by the stride{where}: "
            f"input {h}x{w}, stride {sh}x{sw}; use backend 'dense'"
        )


class FourierBasis:
    """The k smallest-gain real input directions of the circular version of a strided Conv2d."""

    def __init__(self, fl: FirstLinear, k: int):
        _check(fl)
        c_in, h, w = fl.input_shape
        n = c_in * h * w
        if not 1 <= k <= n:
            raise UserError(f"fourier operator basis: k={k} must be in [1, {n}]")
        self.shape = (c_in, h, w)
        self.stride = tuple(fl.stride)
        sh, sw = self.stride
        self.grid = (h // sh, w // sw)
        m_, n_ = self.grid
        self.n_in = c_in * sh * sw

        # H_a: (c_out, c_in*sh*sw) per grid offset a, columns ordered (c, r1, r2)
        self._offsets, self._taps = self._polyphase_taps(fl.weight.to(torch.float64), fl.padding)

        # one frequency of each conjugate pair (flat index <= partner's), self-conjugate flagged
        k1 = torch.arange(m_).repeat_interleave(n_)
        k2 = torch.arange(n_).repeat(m_)
        flat = k1 * n_ + k2
        partner = ((-k1) % m_) * n_ + (-k2) % n_
        keep = flat <= partner
        self._freq = torch.stack([k1[keep], k2[keep]], 1)  # (F, 2)
        self._flat = flat[keep]
        self._selfconj = (flat == partner)[keep]
        n_freq = len(self._flat)

        diffs, grams = self._gram_terms()
        self.constant = len(diffs) == 1  # only d = 0: G(k) is the same matrix at every frequency
        if self.constant:
            evals, vecs = torch.linalg.eigh(grams[0])  # real symmetric: real eigenvectors
            lam = evals.clamp_min(0).expand(n_freq, -1)
        else:
            lam, vecs = self._eigh(diffs, grams, torch.arange(n_freq), vectors=True)
        self.top_gain = float(lam.max().sqrt())

        # pick the k smallest real directions: each (frequency, eigenvalue) entry counts twice
        # (Re and Im) except at self-conjugate frequencies
        mult = torch.where(self._selfconj, 1, 2).unsqueeze(1).expand(-1, self.n_in).reshape(-1)
        order = torch.sort(lam.reshape(-1), stable=True).indices
        take = int(torch.searchsorted(torch.cumsum(mult[order], 0), torch.tensor(k)).item()) + 1
        chosen = order[:take]
        reps = mult[chosen].clone()
        reps[-1] -= int(reps.sum()) - k  # the last pair may contribute only its real part
        comp_freq, comp_vec = chosen // self.n_in, chosen % self.n_in
        self.gains = lam.reshape(-1)[chosen].sqrt().repeat_interleave(reps)

        # coefficient slots for the k real draws: (component, real/imag part)
        comp = torch.arange(take).repeat_interleave(reps)
        part = torch.ones(k, dtype=torch.long)
        part[torch.cat([torch.tensor([True]), comp[1:] != comp[:-1]])] = 0
        self._slot_comp, self._slot_part = comp, part
        # unitary ifft2 of coefficient c at a single frequency has norm |c|; the real part keeps
        # 1/2 of |c|^2 unless the frequency is self-conjugate (v real, e_k real)
        self._comp_scale = torch.full((take,), math.sqrt(2.0), dtype=torch.float64)
        self._comp_scale[self._selfconj[comp_freq]] = 1.0
        self._comp_freq = comp_freq
        if self.constant:
            self._vecs = vecs.to(torch.complex128)  # (n_in, n_in), columns indexed by comp_vec
            self._comp_vec = comp_vec
        else:
            if vecs is None:  # too large to have kept: diagonalise the picked frequencies again
                needed, inverse = torch.unique(comp_freq, return_inverse=True)
                _, sub = self._eigh(diffs, grams, needed, vectors=True, force=True)
                self._vecs = sub[inverse, :, comp_vec]
            else:
                self._vecs = vecs[comp_freq, :, comp_vec]  # (n_comp, n_in)
            self._comp_vec = None
        self._passes = 0
        self._state = PerDevice(**self._use_state())

    @property
    def dim(self) -> int:
        return int(self.gains.numel())

    @property
    def eigh_blocks(self) -> int:
        """How many (n_in x n_in) Hermitian matrices were diagonalised (1 when G is constant)."""
        return 1 if self.constant else len(self._flat)

    # --- construction ------------------------------------------------------------------

    def _polyphase_taps(self, weight: torch.Tensor, padding) -> tuple[list[tuple[int, int]], torch.Tensor]:
        c_out, c_in, kh, kw = weight.shape
        sh, sw = self.stride
        ph, pw = padding
        rows = [((u - ph) % sh, (u - ph) // sh) for u in range(kh)]  # (phase, grid offset)
        cols = [((v - pw) % sw, (v - pw) // sw) for v in range(kw)]
        offsets = sorted({(a1, a2) for _, a1 in rows for _, a2 in cols})
        index = {a: i for i, a in enumerate(offsets)}
        taps = torch.zeros(len(offsets), c_out, c_in, sh, sw, dtype=torch.float64)
        for u, (r1, a1) in enumerate(rows):
            for v, (r2, a2) in enumerate(cols):
                taps[index[(a1, a2)], :, :, r1, r2] += weight[:, :, u, v]
        return offsets, taps.reshape(len(offsets), c_out, self.n_in)

    def _gram_terms(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Difference offsets d (reduced mod the grid) and P_d = sum_{b - a = d} H_a^T H_b."""
        m_, n_ = self.grid
        terms: dict[tuple[int, int], torch.Tensor] = {}
        for i, (a1, a2) in enumerate(self._offsets):
            for j, (b1, b2) in enumerate(self._offsets):
                d = ((b1 - a1) % m_, (b2 - a2) % n_)
                prod = self._taps[i].T @ self._taps[j]
                terms[d] = terms[d] + prod if d in terms else prod
        diffs = torch.tensor(list(terms), dtype=torch.float64)
        return diffs, torch.stack(list(terms.values()))

    def _phases(self, freq: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """exp(+2 pi i (k1 a1 / M + k2 a2 / N)) for every (frequency, offset): (F, D)."""
        m_, n_ = self.grid
        theta = 2 * math.pi * (freq[:, :1].double() * offsets[:, 0] / m_ + freq[:, 1:].double() * offsets[:, 1] / n_)
        return torch.polar(torch.ones_like(theta), theta)

    def _eigh(self, diffs, grams, freq_ids, vectors: bool, force: bool = False):
        """Ascending eigenvalues (and eigenvectors) of G(k) for the given kept frequencies, in chunks."""
        n_in = self.n_in
        total = len(freq_ids)
        keep_vecs = vectors and (force or total * n_in * n_in * 16 <= _KEEP_VECTORS_BYTES)
        chunk = max(1, _CHUNK_BYTES // (n_in * n_in * 16))
        grams_c = grams.to(torch.complex128).reshape(len(grams), -1)
        lams, vecs = [], []
        for start in range(0, total, chunk):
            ids = freq_ids[start : start + chunk]
            g = (self._phases(self._freq[ids], diffs) @ grams_c).reshape(-1, n_in, n_in)
            real = self._selfconj[ids]
            lam = torch.empty(len(ids), n_in, dtype=torch.float64)
            v = torch.empty(len(ids), n_in, n_in, dtype=torch.complex128) if keep_vecs else None
            # G is real symmetric at self-conjugate frequencies: a real eigh there gives the real
            # eigenvectors the real-part synthesis needs (a complex eigh may return e^{i phi} v)
            for mask, mat in ((real, g[real].real), (~real, g[~real])):
                if not mask.any():
                    continue
                if keep_vecs:
                    lam[mask], vm = torch.linalg.eigh(mat)
                    v[mask] = vm.to(torch.complex128)
                else:
                    lam[mask] = torch.linalg.eigvalsh(mat)
            if keep_vecs:
                vecs.append(v)
            lams.append(lam.clamp_min(0))
        lam = torch.cat(lams)
        return lam, (torch.cat(vecs) if vecs else None)

    def _use_state(self) -> dict[str, torch.Tensor]:
        """What combine_batch reads, as CPU tensors (copied once to each device it runs on)."""
        state = {"slot_comp": self._slot_comp, "slot_part": self._slot_part, "comp_scale": self._comp_scale,
                 "flat": self._flat}
        if self.constant:
            state.update(comp_freq=self._comp_freq, comp_vec=self._comp_vec, vecs_t=self._vecs.T.contiguous())
            return state
        # the components sharing a frequency are added in passes, pass r taking the r-th component
        # of every frequency: no frequency repeats within a pass (a plain indexed add, deterministic
        # on every device), and each frequency sums its components in their order, as the
        # sequential index_add_ of the per-sample code did
        seen: dict[int, int] = {}
        rank = []
        for f in self._comp_freq.tolist():
            rank.append(seen.get(f, 0))
            seen[f] = rank[-1] + 1
        rank = torch.tensor(rank, dtype=torch.long)
        self._passes = int(rank.max()) + 1 if len(rank) else 0
        for r in range(self._passes):
            comps = torch.nonzero(rank == r).reshape(-1)
            state.update({f"pass{r}_comp": comps, f"pass{r}_freq": self._comp_freq[comps], f"pass{r}_vecs": self._vecs[comps]})
        return state

    # --- use ---------------------------------------------------------------------------

    def sample(self, gen: torch.Generator) -> torch.Tensor:
        """One standard Gaussian draw in the chosen k-dim real subspace, (C, H, W) float64."""
        return self.combine(torch.randn(self.dim, generator=gen, dtype=torch.float64))

    def combine(self, z: torch.Tensor) -> torch.Tensor:
        """The direction sum_i z_i u_i for the orthonormal real basis u_1..u_k (gains ascending)."""
        return self.combine_batch(z.unsqueeze(0))[0]

    def combine_batch(self, z: torch.Tensor) -> torch.Tensor:
        """combine() for each row of the codes z (B, k), batched on z's device: (B, C, H, W) float64."""
        st = self._state.on(z.device)
        b, n_comp, n_freq = len(z), len(self._comp_freq), len(self._flat)
        coef = torch.zeros(b, n_comp, 2, dtype=torch.float64, device=z.device)
        coef[:, st["slot_comp"], st["slot_part"]] = z.to(torch.float64)
        coef = torch.view_as_complex(coef) * st["comp_scale"]  # (B, n_comp)
        if self.constant:
            cmat = torch.zeros(b, n_freq, self.n_in, dtype=torch.complex128, device=z.device)
            cmat[:, st["comp_freq"], st["comp_vec"]] = coef
            half = rows_matmul(cmat.view(b * n_freq, self.n_in), st["vecs_t"]).view(b, n_freq, self.n_in)
        else:
            half = torch.zeros(b, n_freq, self.n_in, dtype=torch.complex128, device=z.device)
            for r in range(self._passes):
                f = st[f"pass{r}_freq"]
                half[:, f] = half[:, f] + coef[:, st[f"pass{r}_comp"], None] * st[f"pass{r}_vecs"]
        return self._synthesize(half, st["flat"])

    def _synthesize(self, half: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
        """Half spectra (B, F, n_in) -> real part of the unitary inverse FFT, in (B, C, H, W) layout."""
        m_, n_ = self.grid
        spec = torch.zeros(len(half), self.n_in, m_ * n_, dtype=torch.complex128, device=half.device)
        spec[:, :, flat] = half.transpose(1, 2)
        phases = torch.fft.ifft2(spec.view(len(half), self.n_in, m_, n_), norm="ortho").real
        return self._from_polyphase(phases)

    def _to_polyphase(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C*sh*sw, M, N) with channel order (c, r1, r2)."""
        b, c, _, _ = x.shape
        sh, sw = self.stride
        m_, n_ = self.grid
        return x.reshape(b, c, m_, sh, n_, sw).permute(0, 1, 3, 5, 2, 4).reshape(b, self.n_in, m_, n_)

    def _from_polyphase(self, p: torch.Tensor) -> torch.Tensor:
        b = p.shape[0]
        c, h, w = self.shape
        sh, sw = self.stride
        m_, n_ = self.grid
        return p.reshape(b, c, sh, sw, m_, n_).permute(0, 1, 4, 2, 5, 3).reshape(b, c, h, w)

    def transfer(self) -> torch.Tensor:
        """B(k) for every frequency of the (M, N) grid: (M, N, c_out, n_in). Small inputs only."""
        m_, n_ = self.grid
        freq = torch.stack(torch.meshgrid(torch.arange(m_), torch.arange(n_), indexing="ij"), -1).reshape(-1, 2)
        ph = self._phases(freq, torch.tensor(self._offsets, dtype=torch.float64))  # (MN, A)
        b = torch.einsum("fa,aoi->foi", ph, self._taps.to(torch.complex128))
        return b.reshape(m_, n_, *b.shape[1:])

    def apply_circular(self, x: torch.Tensor) -> torch.Tensor:
        """The circular operator through its Fourier blocks: (B, C, H, W) -> (B, c_out, M, N).

        Equals F.conv2d(F.pad(x, padding, mode="circular"), weight, stride) at output (i, j)
        taken mod (M, N). Small inputs only (builds B(k) for every frequency)."""
        xf = torch.fft.fft2(self._to_polyphase(x.to(torch.float64)).to(torch.complex128), norm="ortho")
        yf = torch.einsum("mnoi,bimn->bomn", self.transfer(), xf)
        return torch.fft.ifft2(yf, norm="ortho").real

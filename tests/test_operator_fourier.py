"""FourierBasis: the Fourier block-diagonalisation of a strided Conv2d first layer (small sizes, CPU)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import bench.defenses.operator_fourier as operator_fourier
from bench.defenses.operator_basis import DenseBasis, low_gain_basis
from bench.defenses.operator_fourier import FourierBasis
from bench.core.errors import UserError
from bench.models.first_linear import FirstLinear


@pytest.fixture(autouse=True)
def one_thread():
    """Small eigh/SVD calls are much slower with oversubscribed threads on a shared 2-core box."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with torch.no_grad():
        yield
    torch.set_num_threads(before)


def conv(c_out, c_in, k, stride, pad, hw, seed=0, weight=None) -> FirstLinear:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(c_out, c_in, k, k, generator=g, dtype=torch.float64) if weight is None else weight
    return FirstLinear("conv", w, (c_in, hw, hw), (stride, stride), (pad, pad))


def circular_reference(fl: FirstLinear, x: torch.Tensor) -> torch.Tensor:
    """The circular operator, independently of the module: F.conv2d on a circularly padded input."""
    ph, pw = fl.padding
    return F.conv2d(F.pad(x, (pw, pw, ph, ph), mode="circular"), fl.weight, stride=fl.stride)


def circular_matrix(fl: FirstLinear) -> torch.Tensor:
    """Dense circular operator on the (H/s, W/s) output grid, (m, n)."""
    c, h, w = fl.input_shape
    n = c * h * w
    y = circular_reference(fl, torch.eye(n, dtype=torch.float64).reshape(n, c, h, w))
    m_, n_ = h // fl.stride[0], w // fl.stride[1]
    assert y.shape[-2:] == (m_, n_), "pick a padding whose output grid is (H/s, W/s)"
    return y.reshape(n, -1).T


def basis_matrix(basis: FourierBasis) -> torch.Tensor:
    """The k real basis vectors as columns, (n, k)."""
    eye = torch.eye(basis.dim, dtype=torch.float64)
    return torch.stack([basis.combine(eye[i]).reshape(-1) for i in range(basis.dim)], 1)


# (c_out, c_in, kernel, stride, padding, size): odd/even kernels, stride 1/2, several paddings
CASES = [
    (3, 2, 3, 1, 1, 8),
    (3, 2, 3, 1, 0, 6),
    (3, 2, 3, 1, 2, 6),
    (4, 1, 5, 1, 2, 7),
    (3, 2, 4, 2, 1, 8),
    (4, 1, 5, 2, 2, 10),
    (2, 3, 2, 2, 0, 8),
    (3, 2, 3, 2, 3, 8),
    (5, 2, 4, 1, 1, 6),
]


@pytest.mark.parametrize("c_out,c_in,k,s,p,hw", CASES)
def test_fourier_blocks_reproduce_circular_conv(c_out, c_in, k, s, p, hw):
    fl = conv(c_out, c_in, k, s, p, hw)
    basis = FourierBasis(fl, 1)
    x = torch.randn(2, c_in, hw, hw, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ref = circular_reference(fl, x)
    got = basis.apply_circular(x)
    assert got.shape[-2:] == basis.grid
    # the padded conv's output (i, j) is the circular operator's (i mod M, j mod N)
    rows = torch.arange(ref.shape[-2]) % basis.grid[0]
    cols = torch.arange(ref.shape[-1]) % basis.grid[1]
    torch.testing.assert_close(got[:, :, rows][:, :, :, cols], ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "c_out,c_in,k,s,p,hw",
    [(3, 2, 3, 1, 1, 6), (3, 2, 4, 2, 1, 8), (4, 1, 5, 2, 2, 8), (5, 3, 2, 2, 0, 6), (8, 1, 3, 1, 1, 7)],
)
def test_gains_match_dense_circular_singular_values(c_out, c_in, k, s, p, hw):
    fl = conv(c_out, c_in, k, s, p, hw)
    a = circular_matrix(fl)
    n = a.shape[1]
    sv = torch.zeros(n, dtype=torch.float64)
    svals = torch.linalg.svdvals(a)
    sv[: svals.numel()] = svals
    sv = sv.sort().values
    for kk in (1, 7, n // 3, n):  # odd counts cut a conjugate pair in two
        basis = FourierBasis(fl, kk)
        assert basis.dim == kk
        # compared as eigenvalues: the null ones are ~1e-15 rounding noise, 1e-7 after the sqrt
        torch.testing.assert_close(basis.gains**2, sv[:kk] ** 2, rtol=0, atol=1e-12 * float(sv[-1]) ** 2)
        assert basis.top_gain == pytest.approx(float(sv[-1]), rel=1e-10)
    # the basis is orthonormal and each vector has exactly its stated gain under the circular operator
    basis = FourierBasis(fl, n // 3)
    v = basis_matrix(basis)
    torch.testing.assert_close(v.T @ v, torch.eye(basis.dim, dtype=torch.float64), rtol=0, atol=1e-10)
    torch.testing.assert_close((a @ v).norm(dim=0) ** 2, basis.gains**2, rtol=0, atol=1e-12 * basis.top_gain**2)


def test_recomputing_picked_frequencies_gives_the_same_basis(monkeypatch):
    fl = conv(12, 2, 4, 2, 1, 8)  # c_out > c_in*s*s: no tied null eigenvalues at the cut
    full = FourierBasis(fl, 128).gains
    k = next(i for i in range(20, 128) if full[i] - full[i - 1] > 1e-3)  # a cut between distinct gains
    kept = FourierBasis(fl, k)
    monkeypatch.setattr(operator_fourier, "_KEEP_VECTORS_BYTES", 0)
    monkeypatch.setattr(operator_fourier, "_CHUNK_BYTES", 1)  # one frequency per chunk
    again = FourierBasis(fl, k)
    torch.testing.assert_close(again.gains, kept.gains)
    # same subspace (eigenvector phases may differ): projectors agree
    p1, p2 = basis_matrix(kept), basis_matrix(again)
    torch.testing.assert_close(p1 @ p1.T, p2 @ p2.T, rtol=0, atol=1e-10)


def test_patch_embedding_nullspace_is_exact_under_the_true_operator():
    # stride == kernel, pad 0: circular and true operators coincide; 48 inputs -> 8 outputs per patch
    fl = conv(8, 3, 4, 4, 0, 16)
    assert fl.non_overlapping
    basis = FourierBasis(fl, 300)  # 16 patches x 40 null directions = 640 available
    assert basis.constant  # one Gram matrix for every frequency
    assert float(basis.gains.max()) < 1e-6 * basis.top_gain
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    delta = basis.sample(torch.Generator().manual_seed(3))
    ratio = fl.apply(delta[None]).norm() / fl.apply(x).norm()
    assert ratio < 1e-10 * delta.norm() / x.norm()
    assert delta.norm() > 1.0  # a real draw, not a zero vector


def test_zero_padded_conv_close_to_dense_basis():
    # a digits-like 3x3 stem: 4 smooth filters (2x2 box times random 2x2, so low gain at high
    # frequency as in trained first layers) plus a little noise; 1x32x32, true zero padding
    g = torch.Generator().manual_seed(0)
    r = torch.randn(4, 1, 2, 2, generator=g, dtype=torch.float64)
    w = F.conv2d(F.pad(r, (1, 1, 1, 1)), torch.ones(1, 1, 2, 2, dtype=torch.float64))
    w = w + 0.1 * torch.randn(4, 1, 3, 3, generator=g, dtype=torch.float64)
    fl = conv(4, 1, 3, 1, 1, 32, weight=w)
    k = 64
    dense, fourier = DenseBasis(fl, k), low_gain_basis(fl, k, "fourier")
    assert isinstance(fourier, FourierBasis) and fourier.dim == dense.dim == k

    def gain(samples):
        s = torch.stack(samples)
        return float((fl.apply(s).norm(dim=1) / s.flatten(1).norm(dim=1)).mean())

    draws = range(16)
    g_fourier = gain([fourier.sample(torch.Generator().manual_seed(i)) for i in draws])
    g_dense = gain([dense.sample(torch.Generator().manual_seed(i)) for i in draws])
    g_random = gain([torch.randn(1, 32, 32, generator=torch.Generator().manual_seed(i), dtype=torch.float64) for i in draws])
    # The circular directions leak only where the zero padding differs from the wrap-around:
    # the outer ring of pixels (4*32 of 1024). Measured over 4 kernel seeds of this family:
    # fourier/dense = 1.3-2.1 (pure smooth kernels without noise: 2.3-3.8), random/fourier = 6-9.
    # Bounds: 3x of the exact dense optimum, and at least 4x below a random direction.
    assert g_dense <= g_fourier < 3.0 * g_dense
    assert g_random > 4.0 * g_fourier


def test_same_seed_same_sample():
    basis = FourierBasis(conv(6, 3, 7, 2, 3, 16), 40)
    a = basis.sample(torch.Generator().manual_seed(7))
    b = basis.sample(torch.Generator().manual_seed(7))
    c = basis.sample(torch.Generator().manual_seed(8))
    assert a.shape == (3, 16, 16) and a.dtype == torch.float64
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_unsupported_layers_raise_user_error():
    with pytest.raises(UserError, match="dilation"):
        FourierBasis(FirstLinear("conv", torch.randn(4, 1, 3, 3), (1, 8, 8), dilation=(2, 2), padding=(2, 2)), 4)
    with pytest.raises(UserError, match="Conv2d"):
        FourierBasis(FirstLinear("linear", torch.randn(4, 64), (1, 8, 8)), 4)
    with pytest.raises(UserError, match="divisible by the stride"):
        FourierBasis(conv(4, 1, 3, 2, 1, 7), 4)
    with pytest.raises(UserError, match="dilation"):
        low_gain_basis(FirstLinear("conv", torch.randn(4, 3, 3, 3), (3, 64, 64), dilation=(2, 2)), 4, "fourier")

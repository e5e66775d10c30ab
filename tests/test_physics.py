"""The forward model: FFT conventions, SENSE adjointness, agreement with sigpy, CG."""
import numpy as np
import pytest
import sigpy as sp
import sigpy.mri as mr
import torch

from mrirecon.physics import SenseOp, channels_to_complex, complex_to_channels, conjugate_gradient, fftc, ifftc, rss
from tests.conftest import crandn

T = torch.from_numpy


def rel(a, b):
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(np.asarray(b)))


@pytest.mark.parametrize("shape,ndim", [((3, 16, 12), 2), ((2, 7, 9), 2), ((6, 5, 8), 3), ((4, 11), 1)])
def test_fft_matches_sigpy_centered_ortho(rng, shape, ndim):
    x = crandn(rng, *shape)
    axes = tuple(range(-ndim, 0))
    assert rel(fftc(T(x), ndim).numpy(), sp.fft(x, axes=axes, center=True, norm="ortho")) < 1e-5
    assert rel(ifftc(T(x), ndim).numpy(), sp.ifft(x, axes=axes, center=True, norm="ortho")) < 1e-5


def test_ifft_inverts_fft(rng):
    x = T(crandn(rng, 2, 9, 10))
    assert torch.allclose(ifftc(fftc(x)), x, atol=1e-5)


def _op(rng, b, m, c, spatial, fft_ndim, mask_shape):
    maps = T(crandn(rng, b, m, c, *spatial))
    mask = T((rng.random(mask_shape) > 0.5).astype(np.float32))
    return SenseOp(maps, mask, fft_ndim)


@pytest.mark.parametrize(
    "spatial,fft_ndim,mask_shape,maps_spatial",
    [
        ((12, 10), 2, (2, 1, 1, 10), None),            # 2D slice, 1D mask
        ((8, 6), 2, (2, 1, 8, 6), None),               # ky-kz slice, 2D mask
        ((4, 6, 5), 3, (2, 1, 1, 6, 5), None),         # 3D volume
        ((3, 8, 6), 2, (2, 1, 3, 1, 6), (1, 8, 6)),    # cine: ky-t mask, maps shared over time
    ],
)
@pytest.mark.parametrize("num_maps", [1, 2])
def test_sense_adjointness(rng, spatial, fft_ndim, mask_shape, maps_spatial, num_maps):
    b, c = 2, 4
    maps = T(crandn(rng, b, num_maps, c, *(maps_spatial or spatial)))
    mask = T((rng.random(mask_shape) > 0.5).astype(np.float32))
    A = SenseOp(maps, mask, fft_ndim)
    x = T(crandn(rng, b, num_maps, *spatial))
    y = T(crandn(rng, b, c, *spatial))
    lhs = torch.vdot(A(x).flatten(), y.flatten())
    rhs = torch.vdot(x.flatten(), A.H(y).flatten())
    assert abs(lhs - rhs) / abs(lhs) < 1e-5
    assert torch.allclose(A.N(x), A.H(A(x)))


@pytest.mark.parametrize("spatial", [(16, 12), (6, 8, 10)])
def test_sense_matches_sigpy(rng, spatial):
    c = 4
    maps = crandn(rng, c, *spatial)
    x = crandn(rng, *spatial)
    y = crandn(rng, c, *spatial)
    ref = mr.linop.Sense(maps)  # sigpy: mask-free A = F S, centered ortho FFT over all spatial dims
    A = SenseOp(T(maps)[None, None], torch.ones(1), len(spatial))
    assert rel(A(T(x)[None, None])[0].numpy(), ref * x) < 1e-5
    assert rel(A.H(T(y)[None])[0, 0].numpy(), ref.H * y) < 1e-5


def test_sense_with_mask_matches_sigpy(rng):
    c, h, w = 3, 10, 8
    maps, x = crandn(rng, c, h, w), crandn(rng, h, w)
    mask = (rng.random((1, w)) > 0.5).astype(np.float32)
    ref = sp.linop.Multiply((c, h, w), mask) * mr.linop.Sense(maps)
    A = SenseOp(T(maps)[None, None], T(mask)[None, None], 2)
    assert rel(A(T(x)[None, None])[0].numpy(), ref * x) < 1e-5


def test_soft_sense_sums_over_maps(rng):
    maps = T(crandn(rng, 1, 2, 3, 6, 6))
    x = T(crandn(rng, 1, 2, 6, 6))
    A = SenseOp(maps, torch.ones(1), 2)
    each = sum(SenseOp(maps[:, m : m + 1], torch.ones(1), 2)(x[:, m : m + 1]) for m in range(2))
    assert torch.allclose(A(x), each, atol=1e-5)


def test_cg_matches_direct_solve(rng):
    b, c, n = 2, 3, 6
    maps = T(crandn(rng, b, 1, c, n, n))
    mask = T((rng.random((b, 1, 1, n)) > 0.4).astype(np.float32))
    A = SenseOp(maps, mask, 2)
    rhs = T(crandn(rng, b, 1, n, n))
    lam = 0.5
    x = conjugate_gradient(A.N, rhs, lam, max_iter=200, tol=1e-7)
    for i in range(b):  # dense matrix of the normal operator for sample i, column by column
        eye = torch.eye(n * n, dtype=torch.complex64).reshape(n * n, 1, n, n)
        Ai = SenseOp(maps[i : i + 1].expand(n * n, -1, -1, -1, -1), mask[i : i + 1], 2)
        N = Ai.N(eye).reshape(n * n, n * n).T
        direct = torch.linalg.solve(N + lam * torch.eye(n * n), rhs[i].reshape(-1))
        assert rel(x[i].reshape(-1).numpy(), direct.numpy()) < 1e-4


def test_cg_per_sample_lambda_and_gradients(rng):
    maps = T(crandn(rng, 2, 1, 2, 5, 5))
    A = SenseOp(maps, torch.ones(1), 2)
    rhs = T(crandn(rng, 2, 1, 5, 5)).requires_grad_()
    lam = torch.tensor([0.3, 2.0], requires_grad=True)
    x = conjugate_gradient(A.N, rhs, lam, max_iter=30)
    res = A.N(x) + lam.view(-1, 1, 1, 1) * x - rhs
    assert res.abs().max() < 1e-4
    x.abs().sum().backward()
    assert rhs.grad is not None and lam.grad is not None and torch.isfinite(lam.grad).all()


def test_rss_and_channel_roundtrip(rng):
    x = T(crandn(rng, 2, 3, 4, 5))
    assert torch.allclose(rss(x, 1), torch.sqrt((x.abs() ** 2).sum(1)))
    ch = complex_to_channels(x)
    assert ch.shape == (2, 6, 4, 5) and not ch.is_complex()
    assert torch.equal(channels_to_complex(ch), x)
    with pytest.raises(ValueError, match="even number"):
        channels_to_complex(torch.zeros(1, 3, 2, 2))


def test_flush_denormals_zeroes_subnormal_products_on_this_cpu():
    import torch

    from mrirecon.numerics import flush_denormals

    tiny = torch.tensor([1e-30], dtype=torch.float32)
    try:
        if not flush_denormals():
            pytest.skip("this CPU cannot flush subnormals")
        assert (tiny * 1e-10).item() == 0.0  # 1e-40 is subnormal in float32
    finally:
        torch.set_flush_denormal(False)
    assert (tiny * 1e-10).item() != 0.0

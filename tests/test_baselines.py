"""Classical baselines: the sigpy SENSE model is ours, CG-SENSE solves its normal equations, CS is sigpy's."""
import numpy as np
import pytest
import sigpy as sp
import sigpy.mri as mr
import torch

from mrirecon.evaluation.baselines import METHODS, reconstruct
from mrirecon.physics import SenseOp
from tests.conftest import crandn


def nmse(x, ref):
    return float(np.linalg.norm(x - ref) ** 2 / np.linalg.norm(ref) ** 2)


def unit_maps(coils, *shape):
    """Birdcage coils normalised so sum_c |S_c|^2 = 1 (as ESPIRiT maps): then ||A||^2 <= 1."""
    maps = mr.birdcage_maps((coils, *shape)).astype(np.complex64)
    return maps / np.sqrt((np.abs(maps) ** 2).sum(0, keepdims=True))


def random_lines(rng, width, center=4, accel=4):
    """1D random phase-encode mask (last axis), `center` fully sampled lines, width / accel lines in all."""
    mask = np.zeros(width, np.float32)
    c = width // 2
    mask[c - center // 2 : c + center // 2] = 1
    outer = np.setdiff1d(np.arange(width), np.arange(c - center // 2, c + center // 2))
    mask[rng.choice(outer, width // accel - center, replace=False)] = 1
    return mask


def simulate(image, maps, mask):
    """Noiseless masked multi-coil k-space of `image` (*S), FFT over the last two axes."""
    return sp.fft(maps * image, axes=(-2, -1), center=True) * mask


@pytest.fixture
def slice2d(rng):
    image = sp.shepp_logan((24, 24)).astype(np.complex64)
    maps = unit_maps(4, 24, 24)
    mask = random_lines(rng, 24)
    return image, maps[None], mask, simulate(image, maps, mask)


@pytest.fixture
def kykz(rng):
    image = sp.shepp_logan((20, 16)).astype(np.complex64)
    maps = unit_maps(4, 20, 16)
    mask = mr.poisson((20, 16), accel=4, calib=(4, 4), seed=0).real.astype(np.float32)
    return image, maps[None], mask, simulate(image, maps, mask)


@pytest.fixture
def cine(rng):
    frames = 4
    base = sp.shepp_logan((16, 16))
    image = np.stack([np.roll(base, t, axis=0) * (1 + 0.1 * t) for t in range(frames)]).astype(np.complex64)
    maps = unit_maps(4, 16, 16)[:, None]  # (C, 1, H, W): shared over time
    mask = np.stack([random_lines(rng, 16, center=2) for _ in range(frames)])[None, :, None, :]  # ky-t
    return image, maps[None], mask, simulate(image, maps, mask)


def _torch(x):
    return torch.from_numpy(np.ascontiguousarray(x))[None]


@pytest.mark.parametrize("case", ["slice2d", "kykz", "cine"])
def test_zero_filled_is_the_sense_adjoint_of_physics(case, request):
    image, maps, mask, kspace = request.getfixturevalue(case)
    zero_filled = reconstruct("zero_filled", kspace, maps, mask, fft_ndim=2)
    expected = SenseOp(_torch(maps), _torch(mask), fft_ndim=2).adjoint(_torch(kspace))[0].numpy()
    assert zero_filled.shape == (1, *image.shape) and zero_filled.dtype == np.complex64
    np.testing.assert_allclose(zero_filled, expected, atol=1e-6)


def test_zero_filled_with_two_maps_and_random_data_matches_physics(rng):
    maps, kspace = crandn(rng, 2, 3, 6, 8), crandn(rng, 3, 6, 8)
    mask = (rng.random((1, 1, 8)) > 0.5).astype(np.float32)
    zero_filled = reconstruct("zero_filled", kspace, maps, mask, fft_ndim=2)
    expected = SenseOp(_torch(maps), _torch(mask), fft_ndim=2).adjoint(_torch(kspace))[0].numpy()
    np.testing.assert_allclose(zero_filled, expected, atol=1e-5)


@pytest.mark.parametrize("case", ["slice2d", "kykz", "cine"])
@pytest.mark.parametrize("method", ["sense", "cs"])
def test_sense_and_cs_beat_zero_filled_on_a_noiseless_phantom(case, method, request):
    image, maps, mask, kspace = request.getfixturevalue(case)
    zero_filled = reconstruct("zero_filled", kspace, maps, mask, fft_ndim=2)[0]
    recon = reconstruct(method, kspace, maps, mask, fft_ndim=2)[0]
    assert nmse(recon, image) < 0.8 * nmse(zero_filled, image)


def test_sense_solution_satisfies_the_damped_normal_equations(slice2d):
    # maps have sum_c |S_c|^2 = 1 and the mask is binary, so the relative lam is the absolute one.
    _, maps, mask, kspace = slice2d
    lam = 1e-3
    x = reconstruct("sense", kspace, maps, mask, fft_ndim=2, lam=lam, max_iter=100)
    A = SenseOp(_torch(maps).to(torch.complex128), _torch(mask).double(), fft_ndim=2)
    xt, y = _torch(x).to(torch.complex128), _torch(kspace).to(torch.complex128)
    residual = A.N(xt) + lam * xt - A.H(y)
    assert float(residual.norm() / A.H(y).norm()) < 1e-5


def test_cs_equals_sigpy_l1_wavelet_recon(slice2d):
    _, maps, mask, kspace = slice2d
    lam, iters = 1e-3, 30
    ours = reconstruct("cs", kspace, maps, mask, fft_ndim=2, lam=lam, max_iter=iters)[0]
    zero_filled = reconstruct("zero_filled", kspace, maps, mask, fft_ndim=2)
    theirs = mr.app.L1WaveletRecon(
        kspace.astype(np.complex128), maps[0].astype(np.complex128), lam * np.abs(zero_filled).max(),
        weights=np.broadcast_to(mask, kspace.shape).astype(np.float64), alpha=1.0, max_iter=iters, show_pbar=False,
    ).run()
    assert np.linalg.norm(ours - theirs) / np.linalg.norm(theirs) < 1e-6


def test_cs_spatio_temporal_wavelet_runs_on_cine(cine):
    image, maps, mask, kspace = cine
    zero_filled = reconstruct("zero_filled", kspace, maps, mask, fft_ndim=2)[0]
    recon = reconstruct("cs", kspace, maps, mask, fft_ndim=2, wavelet_axes=(-3, -2, -1), max_iter=50)[0]
    assert nmse(recon, image) < 0.8 * nmse(zero_filled, image)


def test_unknown_method_lists_the_valid_ones(slice2d):
    _, maps, mask, kspace = slice2d
    with pytest.raises(ValueError, match="'admm'.*zero_filled, sense, cs, sense_per_frame, cs_temporal"):
        reconstruct("admm", kspace, maps, mask, fft_ndim=2)
    assert METHODS == ("zero_filled", "sense", "cs", "sense_per_frame", "cs_temporal")


def test_cine_methods_are_refused_for_other_data_kinds():
    from mrirecon.evaluation.baselines import check_method

    assert check_method("cs_temporal", "cine").kinds == ("cine",)
    with pytest.raises(ValueError, match="method 'cs_temporal' is for data kind\\(s\\) cine, not 'knee2d'"):
        check_method("cs_temporal", "knee2d")
    assert check_method("cs", "knee2d").kinds is None


def test_unknown_parameter_names_the_method_and_its_parameters(slice2d):
    _, maps, mask, kspace = slice2d
    with pytest.raises(ValueError, match=r"method 'sense': unknown option\(s\) \['lamda'\]; "
                                         r"allowed: \['lam', 'max_iter', 'tol'\]"):
        reconstruct("sense", kspace, maps, mask, fft_ndim=2, lamda=0.1)


def test_mismatched_shapes_are_rejected(slice2d):
    _, maps, mask, kspace = slice2d
    with pytest.raises(ValueError, match="maps must be"):
        reconstruct("zero_filled", kspace, maps[:, :3], mask, fft_ndim=2)
    with pytest.raises(ValueError, match="must broadcast to kspace"):
        reconstruct("zero_filled", kspace, maps, mask[:20], fft_ndim=2)
    with pytest.raises(ValueError, match="fft_ndim=3"):
        reconstruct("zero_filled", kspace, maps, mask, fft_ndim=3)

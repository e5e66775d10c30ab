"""ESPIRiT maps (mrirecon.physics.espirit) against sigpy's EspiritCalib and a per-pixel eigen-decomposition.

Tolerances (also in results/coil_maps/NOTES.md): with `coarse_grid=0` (every pixel exact) the maps equal
sigpy's (and the complex128 reference's) within 2e-4 per entry where the eigenvalue is > 0.96 (away from the
crop threshold, where sigpy's power-iteration eigenvalue decides the support); for cine, where a weak coil 0
amplifies float32 phase noise through the coil-0 phase reference, within 1e-5 of 1 - |<ours, sigpy>|. With a coarse grid the maps
are compared up to a phase per pixel: 1 - |<ours, reference>| <= 2e-3 inside both supports on these small
images with a 24-point grid (measured about 1e-4 at fastMRI size with the default 48), and the supports agree
on >= 98% of the pixels.
"""
import json

import h5py
import numpy as np
import pytest
import torch

from mrirecon.physics.espirit import espirit, espirit_maps, time_average
from mrirecon.synthetic.generator import make_volume


def sigpy_maps(kspace: np.ndarray, calib: int, kernel: int) -> np.ndarray:
    import sigpy.mri as mr

    return mr.app.EspiritCalib(kspace, calib_width=calib, kernel_width=kernel, max_iter=200, show_pbar=False).run()


def reference_maps(kspace: np.ndarray, calib, kernel, num_maps: int = 1, thresh: float = 0.02):
    """The paper's steps written plainly (numpy, complex128): SVD of the calibration matrix, zero-pad and inverse
    FFT every signal kernel, per-pixel Gram of the kernel images, its leading eigenvectors (phase of coil 0 real)."""
    C, H, W = kspace.shape
    (ch, cw), (kh, kw) = calib, kernel
    region = kspace[:, H // 2 - ch // 2: H // 2 - ch // 2 + ch, W // 2 - cw // 2: W // 2 - cw // 2 + cw]
    patches = np.lib.stride_tricks.sliding_window_view(region.astype(np.complex128), (kh, kw), axis=(1, 2))
    rows = patches.transpose(1, 2, 0, 3, 4).reshape(-1, C * kh * kw)
    _, s, vh = np.linalg.svd(rows, full_matrices=False)
    kernels = vh[s > thresh * s.max()].reshape(-1, C, kh, kw)
    padded = np.zeros((len(kernels), C, H, W), np.complex128)
    padded[..., H // 2 - kh // 2: H // 2 - kh // 2 + kh, W // 2 - kw // 2: W // 2 - kw // 2 + kw] = kernels
    img = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(padded, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))
    gram = np.einsum("kcxy,kdxy->xycd", img, img.conj()) * H * W / (kh * kw)
    w, u = np.linalg.eigh(gram)
    vecs = np.moveaxis(u[..., ::-1][..., :num_maps], (-1, -2), (0, 1))  # (M, C, H, W)
    vecs = vecs * np.exp(-1j * np.angle(vecs[:, :1]))
    return vecs, np.moveaxis(w[..., ::-1], -1, 0)  # maps (M, C, H, W), all eigenvalues (C, H, W) descending


def phase_free_gap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """1 - |<a, b>| over coils per pixel: 0 when the unit vectors agree up to a phase."""
    return 1 - np.abs((np.conj(a) * b).sum(0))


@pytest.fixture(scope="module")
def kspace():
    data, _ = make_volume("brain2d", 0, seed=0, coils=4, slices=1, size=(24, 24))
    return data["kspace"][0]  # (4, 48, 24)


@pytest.fixture(scope="module")
def larger():
    data, _ = make_volume("knee2d", 0, seed=1, coils=6, slices=1, size=(48, 64))
    return data["kspace"][0]  # (6, 96, 64)


def test_exact_maps_equal_sigpys_espiritcalib(kspace):
    ref = sigpy_maps(kspace, 12, 5)
    ours = espirit(torch.from_numpy(kspace), 12, 5, coarse_grid=0)
    maps, eig = ours.maps[0].numpy(), ours.eig[0].numpy()
    inside = eig > 0.96
    assert inside.sum() > 100
    np.testing.assert_allclose(maps[:, inside], ref[:, inside], rtol=0, atol=2e-4)
    assert ((np.abs(ref).sum(0) > 0) == (eig > 0.95)).mean() > 0.99


def test_coarse_grid_maps_agree_with_sigpy_up_to_a_phase_per_pixel(larger):
    ref = sigpy_maps(larger, 16, 6)
    ours = espirit(torch.from_numpy(larger), 16, 6, coarse_grid=24)
    maps = ours.maps[0].numpy()
    ref_support, support = np.abs(ref).sum(0) > 0, ours.eig[0].numpy() > 0.95
    both = ref_support & support
    assert both.sum() > 1000
    assert phase_free_gap(maps, ref)[both].max() <= 2e-3
    assert (ref_support == support).mean() >= 0.98
    np.testing.assert_allclose((np.abs(maps) ** 2).sum(0)[support], 1.0, atol=1e-5)


def test_rectangular_calibration_equals_the_eigen_decomposition_reference(larger):
    """fastMRI brain style: a few centre columns by a long stretch of readout, a rectangular kernel."""
    ref, ref_eig = reference_maps(larger, (40, 7), (6, 3))
    ours = espirit(torch.from_numpy(larger), (40, 7), (6, 3), coarse_grid=0)
    inside = ref_eig[0] > 0.96
    assert inside.sum() > 1000
    np.testing.assert_allclose(ours.eig[0].numpy(), ref_eig[0], atol=2e-4)
    np.testing.assert_allclose(ours.maps[0].numpy()[:, inside], ref[0][:, inside], atol=2e-4)
    coarse = espirit(torch.from_numpy(larger), (40, 7), (6, 3), coarse_grid=24).maps[0].numpy()
    assert phase_free_gap(coarse, ref[0])[inside].max() <= 2e-3


def test_two_map_sets_are_the_two_leading_eigenvectors(larger):
    ref, ref_eig = reference_maps(larger, (16, 16), (6, 6), num_maps=2)
    ours = espirit(torch.from_numpy(larger), 16, 6, num_maps=2, crop=0.0, coarse_grid=0)
    maps, eig = ours.maps.numpy(), ours.eig.numpy()
    assert maps.shape == (2, 6, 96, 64) and (eig[0] >= eig[1]).all()
    np.testing.assert_allclose(eig, ref_eig[:2], atol=2e-4)
    separated = (ref_eig[0] - ref_eig[1] > 0.05) & (ref_eig[1] - ref_eig[2] > 0.05)  # eigenvectors well defined
    assert separated.sum() > 500
    for m in range(2):
        assert phase_free_gap(maps[m], ref[m])[separated].max() < 1e-4
    assert np.abs((maps[0].conj() * maps[1]).sum(0)).max() < 1e-5  # orthogonal at every pixel
    np.testing.assert_allclose((np.abs(maps) ** 2).sum(1), 1.0, atol=1e-5)


def test_a_batch_of_slices_equals_the_slices_one_by_one(larger):
    batch = np.stack([larger, larger[::-1].copy(), 2 * larger])  # (3, C, H, W): three different calibrations
    together = espirit(torch.from_numpy(batch), 16, 6, num_maps=2)
    assert together.maps.shape == (3, 2, 6, 96, 64) and together.maps.dtype == torch.complex64
    for b in range(3):
        alone = espirit(torch.from_numpy(batch[b]), 16, 6, num_maps=2)
        torch.testing.assert_close(together.maps[b], alone.maps, rtol=0, atol=2e-5)


def test_ky_kz_slices_of_a_3d_volume_equal_sigpy():
    data, _ = make_volume("knee3d", 0, seed=0, coils=4, size=(4, 32, 24))
    hybrid = data["kspace"]  # (X, C, Ky, Kz)
    ours = espirit(torch.from_numpy(hybrid), 12, 5, coarse_grid=0)
    assert ours.maps.shape == (4, 1, 4, 32, 24)
    for x in (0, 2):
        ref = sigpy_maps(hybrid[x], 12, 5)
        inside = ours.eig[x, 0].numpy() > 0.96
        assert inside.sum() > 50
        np.testing.assert_allclose(ours.maps[x, 0].numpy()[:, inside], ref[:, inside], atol=2e-4)


def test_whole_3d_volumes_equal_sigpy():
    """Online maps of knee3d volumes (fft_ndim 3): a cubic calibration region and kernel."""
    from mrirecon.physics import fftc

    data, _ = make_volume("knee3d", 0, seed=0, coils=4, size=(12, 16, 16))
    volume = fftc(torch.from_numpy(data["kspace"]).movedim(0, 1), ndim=[-3])  # (C, X, Ky, Kz)
    ours = espirit(volume, 8, 4, coarse_grid=0, ndim=3)
    ref = sigpy_maps(volume.numpy(), 8, 4)
    inside = ours.eig[0].numpy() > 0.96
    assert ours.maps.shape == (1, 4, 12, 16, 16) and inside.sum() > 500
    np.testing.assert_allclose(ours.maps[0].numpy()[:, inside], ref[:, inside], atol=2e-4)


def test_cine_maps_come_from_the_frame_average_of_the_acquired_samples():
    data, _ = make_volume("cine", 0, seed=0, coils=4, slices=1, frames=6, size=(32, 32))
    full = torch.from_numpy(data["kspace"][0])  # (T, C, H, W)
    lines = torch.zeros(6, 1, 1, 32)
    lines[..., 8:24] = 1                       # a fully sampled centre band ...
    for t in range(6):
        lines[t, ..., t % 3::3] = 1            # ... and different outer lines in every frame
    avg = time_average(full * lines, dim=0)
    torch.testing.assert_close(avg[..., 8:24], full.mean(0)[..., 8:24])  # the centre: every frame's mean
    ours = espirit(avg, 16, 5, coarse_grid=0, num_maps=2)
    ref = sigpy_maps(full.mean(0).numpy(), 16, 5)  # sigpy on the fully sampled frame average
    eig = ours.eig.numpy()
    # Moving anatomy averaged over frames leaves pixels with two near-equal eigenvalues, where the leading
    # eigenvector is ill-defined (and sigpy's power iteration does not converge): compare where it is defined.
    inside = (eig[0] > 0.96) & (eig[0] - eig[1] > 0.1)
    assert inside.sum() > 500
    assert phase_free_gap(ours.maps[0].numpy(), ref)[inside].max() < 1e-5  # up to a phase per pixel


def test_espirit_maps_takes_numpy_and_returns_numpy(kspace):
    maps = espirit_maps(kspace, calib_width=12, kernel_width=5, num_maps=2)
    assert isinstance(maps, np.ndarray) and maps.shape == (2, 4, 48, 24) and maps.dtype == np.complex64
    np.testing.assert_array_equal(maps, espirit(torch.from_numpy(kspace), 12, 5, num_maps=2).maps.numpy())


@pytest.mark.parametrize("kwargs, message", [
    (dict(calib=(12, 12), kernel=(13, 5)), "kernel .* larger than the calibration region"),
    (dict(calib=(50, 12), kernel=5), "calibration region .* larger than the k-space matrix"),
    (dict(calib=12, kernel=5, num_maps=5), r"num_maps must be in \[1, 4\]"),
    (dict(calib=12, kernel=5, coarse_grid=2), "coarse_grid must be 0"),
])
def test_bad_settings_are_named(kspace, kwargs, message):
    with pytest.raises(ValueError, match=message):
        espirit(torch.from_numpy(kspace), **kwargs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
def test_gpu_maps_equal_cpu_maps(larger):
    cpu = espirit(torch.from_numpy(larger), 16, 6, num_maps=2)
    gpu = espirit(torch.from_numpy(larger).cuda(), 16, 6, num_maps=2)
    assert gpu.maps.is_cuda
    support = (cpu.eig[0] > 0.96) & (gpu.eig[0].cpu() > 0.96)
    gap = 1 - (cpu.maps[0].conj() * gpu.maps[0].cpu()).sum(0).abs()
    assert gap[support].max() < 1e-4


def test_five_calibration_lines_give_the_maps_of_a_square_region(kspace):
    """fastMRI brain's 4% centre (5 lines) by 32 readout points, a 5x3 kernel: nearly the same support and
    the same maps (up to a phase per pixel) as a 12x12 square region. The supports' edges differ by about a
    pixel (5 lines resolve the coils' fall-off less sharply): 86-92% overlap on these 24x24 images."""
    square = espirit(torch.from_numpy(kspace), 12, 5, coarse_grid=0)
    lines = espirit(torch.from_numpy(kspace), (32, 5), (5, 3), coarse_grid=0)
    a, b = square.eig[0].numpy() > 0.95, lines.eig[0].numpy() > 0.95
    assert (a & b).sum() / (a | b).sum() > 0.8
    assert np.abs((square.maps[0].numpy().conj() * lines.maps[0].numpy()).sum(0))[a & b].min() > 0.98


def test_num_maps_2_trains_and_evaluates_from_cached_maps(synthetic, tmp_path):
    import evaluate as evaluate_cli
    from mrirecon.config import load_config
    from mrirecon.data.maps_entry import read_entry
    from mrirecon.training.run import train

    root = synthetic("knee2d")
    cache = tmp_path / "cache"
    cfg = load_config("configs/knee2d.yaml", [
        f"data.root={root}", f"output_dir={tmp_path / 'runs'}", f"data.maps_cache={cache}",
        "data.espirit={calib_width: 12, crop: 0.8}", "data.mask={name: random, center_fractions: [0.125], "
        "accelerations: [4]}", "model.num_maps=2", "model.num_unrolls=2", "model.prox.channels=8",
        "data.batch_size=2", "train.max_epochs=1"])
    result = train(cfg, enable_progress_bar=False)
    for p in cache.glob("*.h5"):
        assert read_entry(p, slice(None)).shape[1] == 2  # two map sets, built because the files hold one
    out = tmp_path / "eval"
    assert evaluate_cli.main(["--checkpoint", result.last_checkpoint, "--data", str(root / "test"), "--out",
                              str(out), "--no-progress"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert np.isfinite(m["psnr"]["mean"]) and m["target"] == "rss"
    with h5py.File(next(out.glob("*.h5"))) as f:
        assert "num_maps: 2" in f.attrs["config"]


def test_coarse_maps_hold_the_eigenvectors_on_the_grid_and_expand_to_the_maps(larger):
    from mrirecon.physics.espirit import central_region, espirit_coarse, expand_maps

    kspace = torch.from_numpy(larger)
    coarse = espirit_coarse(central_region(kspace, (16, 16)), (96, 64), 6, num_maps=2)
    assert coarse.vectors.shape == (2, 6, 48, 48) and coarse.eig.shape == (2, 48, 48)  # 8 x kernel points per dim
    full = espirit(kspace, 16, 6, num_maps=2)
    expanded = expand_maps(coarse)
    torch.testing.assert_close(expanded.maps, full.maps, rtol=0, atol=0)
    exact = espirit(kspace, 16, 6, num_maps=2, coarse_grid=0)
    support = (exact.eig[0] > 0.96) & (full.eig[0] > 0.96)
    gap = 1 - (exact.maps[0].conj() * full.maps[0]).sum(0).abs()
    assert gap[support].max() < 2e-3


def _interpolate_then_normalise(coarse, crop=0.95):
    """expand_maps by its definition: torch's bicubic (2D) / trilinear (3D) interpolation of the eigenvector
    field and the eigenvalues, then per pixel unit norm over coils, coil 0's phase removed, zero at eig <= crop."""
    import torch.nn.functional as F

    v, w, spatial = coarse.vectors, coarse.eig, coarse.image_shape
    mode = "bicubic" if len(spatial) == 2 else "trilinear"
    up = lambda x: F.interpolate(x, size=spatial, mode=mode, align_corners=True)  # noqa: E731
    v = torch.complex(up(v.real), up(v.imag))
    w = up(w[:, None])[:, 0]
    ref = v[:, :1]
    phase = torch.where(ref.abs() > 0, ref.conj() / ref.abs(), torch.ones_like(ref))
    maps = v * phase / torch.linalg.vector_norm(v, dim=1, keepdim=True) * (w > crop)[:, None]
    return maps, w


@pytest.mark.parametrize("spatial", [(40, 24), (12, 10, 9)], ids=["2d bicubic", "3d trilinear"])
def test_expand_maps_is_interpolation_then_per_pixel_normalisation(spatial):
    """The separable matrix-product expansion equals torch's interpolate followed by the normalisation; with
    `rows` it returns exactly those rows of dim -2."""
    from mrirecon.physics.espirit import CoarseMaps, expand_maps

    g = torch.Generator().manual_seed(0)
    grid = tuple(max(4, n // 3) for n in spatial)
    v = torch.randn(2, 4, *grid, dtype=torch.complex64, generator=g)  # (M, C, *grid)
    w = 0.9 + 0.2 * torch.rand(2, *grid, generator=g)
    coarse = CoarseMaps(v, w, spatial)
    maps, eig = _interpolate_then_normalise(coarse)
    got = expand_maps(coarse)
    assert 0 < (eig > 0.95).float().mean() < 1  # both sides of the crop are exercised
    torch.testing.assert_close(got.eig, eig, rtol=0, atol=1e-6)
    torch.testing.assert_close(got.maps, maps, rtol=0, atol=2e-6)
    rows = slice(spatial[-2] // 4, spatial[-2] // 4 + spatial[-2] // 2)
    part = expand_maps(coarse, rows=rows)
    torch.testing.assert_close(part.maps, got.maps[..., rows, :], rtol=0, atol=1e-6)
    torch.testing.assert_close(part.eig, got.eig[..., rows, :], rtol=0, atol=1e-6)

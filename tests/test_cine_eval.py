"""Cine evaluation (mrirecon/evaluation/cine.py): metrics per frame, per volume and in the CMRxRecon
convention (cross-checked against skimage), x-t profiles, the GIF, the classical cine baselines, and the
evaluation runner on a folder in the CMRxRecon layout."""
import json

import numpy as np
import pytest
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from mrirecon.evaluation import cine
from mrirecon.evaluation.metrics import evaluate_volume


@pytest.fixture
def movie(rng):
    """(slices 2, frames 5, 24, 20): a static background with a 'heart' band in rows 10..13 that beats."""
    x = np.full((2, 5, 24, 20), 0.2) + 0.05 * rng.random((2, 5, 24, 20))
    for t in range(5):
        x[:, t, 10:14, 5:15] += 0.8 * (1 + np.sin(2 * np.pi * t / 5))
    return x


def test_challenge_metrics_are_skimage_on_max_normalised_images(movie, rng):
    pred = movie + 0.05 * rng.standard_normal(movie.shape)
    got = cine.challenge_metrics(movie, pred)
    psnrs, ssims, nmses = [], [], []
    for t, p in zip(movie.reshape(-1, 24, 20), pred.reshape(-1, 24, 20)):
        t, p = t / t.max(), p / p.max()
        psnrs.append(peak_signal_noise_ratio(t, p, data_range=1.0))
        ssims.append(structural_similarity(t, p, data_range=1.0))
        nmses.append(np.linalg.norm(t - p) ** 2 / np.linalg.norm(t) ** 2)
    assert got["challenge_psnr"] == pytest.approx(np.mean(psnrs), rel=1e-9)
    assert got["challenge_ssim"] == pytest.approx(np.mean(ssims), rel=1e-6)
    assert got["challenge_nmse"] == pytest.approx(np.mean(nmses), rel=1e-9)


def test_challenge_convention_forgives_a_global_scale_that_fastmri_does_not(movie, rng):
    pred = movie + 0.02 * rng.standard_normal(movie.shape)
    assert cine.challenge_metrics(movie, 3 * pred)["challenge_psnr"] == pytest.approx(
        cine.challenge_metrics(movie, pred)["challenge_psnr"], rel=1e-9)
    assert cine.volume_metrics(movie, 3 * pred)["psnr"] < cine.volume_metrics(movie, pred)["psnr"] - 10


def test_per_frame_metrics_single_out_the_corrupted_frame(movie, rng):
    pred = movie.copy()
    pred[1, 3] += 0.3 * rng.standard_normal((24, 20))
    per = cine.per_frame_metrics(movie, pred)
    assert per["psnr"].shape == (2, 5)
    assert np.isinf(np.delete(per["psnr"].ravel(), 1 * 5 + 3)).all() and np.isfinite(per["psnr"][1, 3])
    assert per["nmse"][1, 3] > 0 and per["ssim"][1, 3] < 1


def test_volume_metrics_are_fastmri_metrics_of_the_frames_as_slices(movie, rng):
    pred = movie + 0.05 * rng.standard_normal(movie.shape)
    assert cine.volume_metrics(movie, pred) == evaluate_volume(movie.reshape(-1, 24, 20), pred.reshape(-1, 24, 20),
                                                               crop=False)


def test_xt_profile_goes_through_the_beating_heart(movie):
    row = cine.heart_row(movie[0])
    assert 10 <= row < 14
    np.testing.assert_array_equal(cine.xt_profile(movie[0], row), movie[0, :, row, :])


def test_gif_has_every_frame_side_by_side(movie, tmp_path):
    t, z, r = movie[0], 0.5 * movie[0], movie[0] ** 2
    path = cine.save_cine_gif(tmp_path / "a.gif", t, z, r, scale=1)
    frames = cine.movie_frames(t, z, r)
    with Image.open(path) as gif:
        assert gif.n_frames == 5 and gif.size == (3 * 20 + 4, 24)
        gif.seek(2)
        np.testing.assert_array_equal(np.asarray(gif.convert("L")), frames[2])
    assert [p.name for p in tmp_path.iterdir()] == ["a.gif"]  # no temporary file left


def test_cine_outputs_are_a_png_and_a_gif_of_the_middle_slice(movie, tmp_path):
    paths = cine.save_cine_outputs(tmp_path, "P001", movie, 0.5 * movie, movie)
    assert [p.name for p in paths] == ["P001_xt.png", "P001.gif"]
    with Image.open(paths[0]) as png:
        assert png.size == (1000, 600)


def _cine_problem(rng, static: bool):
    """A cine (1, T, H, W), unit-sum-of-squares maps, a kyt-like mask with different lines per frame."""
    C, T, H, W = 4, 8, 16, 16
    img = np.ones((1, T, H, W), np.complex64) * (rng.random((1, 1, H, W)) + 0.5)
    if not static:
        img[:, :, 6:10, 6:10] *= (1 + 0.5 * np.sin(2 * np.pi * np.arange(T) / T))[None, :, None, None]
    maps = rng.standard_normal((1, C, 1, H, W)) + 1j * rng.standard_normal((1, C, 1, H, W))
    maps = (maps / np.sqrt((np.abs(maps) ** 2).sum(1, keepdims=True))).astype(np.complex64)
    mask = np.zeros((1, T, 1, W), np.float32)
    mask[..., W // 2 - 1:W // 2 + 1] = 1
    for t in range(T):
        mask[0, t, 0, rng.choice(W, 3, replace=False)] = 1
    from mrirecon.evaluation.baselines import sense_linop

    A = sense_linop(maps.astype(np.complex128), np.ones_like(mask, dtype=np.float64), (T, H, W), 2)
    kspace = (A(img.astype(np.complex128)) * mask).astype(np.complex64)
    return img, maps, mask, kspace


def test_sense_per_frame_is_the_frame_by_frame_cg_sense(rng):
    from mrirecon.evaluation.baselines import reconstruct

    img, maps, mask, kspace = _cine_problem(rng, static=False)
    x = reconstruct("sense_per_frame", kspace, maps, mask, 2, max_iter=5)
    for t in (0, 5):
        np.testing.assert_allclose(x[:, t], reconstruct("sense", kspace[:, t], maps[:, :, 0], mask[:, t], 2,
                                                        max_iter=5), rtol=1e-5, atol=1e-6)


def test_temporal_sparsity_recovers_a_static_cine_that_each_frame_alone_cannot(rng):
    from mrirecon.evaluation.baselines import reconstruct

    img, maps, mask, kspace = _cine_problem(rng, static=True)

    def err(x):
        return float(np.linalg.norm(np.abs(x) - np.abs(img)) / np.linalg.norm(img))

    cs = reconstruct("cs_temporal", kspace, maps, mask, 2, lam=1e-3, max_iter=200)
    per_frame = reconstruct("sense_per_frame", kspace, maps, mask, 2)
    assert err(cs) < 0.1 * err(per_frame)  # measured: 0.0014 vs 0.071 (zero-filled 0.67)


def test_evaluate_scores_a_cmrxrecon_folder_with_both_conventions_and_writes_the_movie(tmp_path):
    from mrirecon.config import load_config
    from mrirecon.synthetic.cmrxrecon import generate_cmrxrecon
    from mrirecon.evaluation.runner import evaluate

    generate_cmrxrecon(tmp_path / "data", volumes=3, seed=0, coils=4, slices=1, frames=4, size=(24, 32))
    cfg = load_config("configs/cine_cmrxrecon.yaml", [f"data.root={tmp_path / 'data'}"])
    report = evaluate(cfg, tmp_path / "data", tmp_path / "out", method="zero_filled", progress=False)
    rows = (tmp_path / "out" / "per_volume.csv").read_text().splitlines()
    assert rows[0].split(",")[-3:] == ["challenge_psnr", "challenge_ssim", "challenge_nmse"]
    assert rows[1].startswith("P003_cine_sax_acc08.h5,")
    header, values = rows[0].split(","), rows[1].split(",")
    assert float(values[header.index("acceleration")]) == 8.0  # the AccFactor08 folder's, not the effective one
    assert float(values[header.index("effective_acceleration")]) < 8.0
    assert (tmp_path / "out" / "figures" / "P003_cine_sax_acc08.gif").is_file()
    assert (tmp_path / "out" / "figures" / "P003_cine_sax_acc08_xt.png").is_file()
    assert report["num_volumes"] == 1 and json.loads((tmp_path / "out" / "metrics.json").read_text())
    frames = (tmp_path / "out" / "per_frame.csv").read_text().splitlines()
    assert frames[0] == "fname,slice,frame,psnr,ssim,nmse"
    assert [line.split(",")[:3] for line in frames[1:]] == [["P003_cine_sax_acc08.h5", "0", str(f)] for f in range(4)]

"""Metrics are fastMRI's (evaluate.py, skimage SSIM) exactly; prediction files and reports score the same."""
import argparse
import csv
import json

import h5py
import numpy as np
import pytest
import torch
from fastmri import evaluate as fastmri_eval
from fastmri.data import transforms as fastmri_transforms
from skimage.metrics import structural_similarity

from mrirecon.data.errors import DataError
from mrirecon.evaluation.metrics import SSIMLoss, center_crop, evaluate_volume, nmse, psnr, ssim, summarize
from mrirecon.evaluation.predictions import read_reconstruction, write_metrics, write_reconstruction


def volume(rng, shape):
    """A smooth blob per slice plus texture: structured enough that SSIM is far from 0 and 1."""
    s, h, w = shape
    yy, xx = np.mgrid[:h, :w]
    blobs = [np.exp(-((yy - h / 2) ** 2 + (xx - w / 2.5) ** 2) / (2 * (h / 4 + i) ** 2)) for i in range(s)]
    return np.stack(blobs) + 0.2 * rng.random(shape)


def noisy(rng, target, sigma=0.05):
    return np.abs(target + sigma * rng.standard_normal(target.shape))


SHAPES = [(3, 40, 36), (2, 17, 23), (1, 7, 7), (4, 9, 30)]


@pytest.mark.parametrize("shape", SHAPES)
def test_psnr_ssim_nmse_equal_fastmri_float64(rng, shape):
    t = volume(rng, shape)
    p = noisy(rng, t)
    assert float(psnr(t, p)) == pytest.approx(fastmri_eval.psnr(t, p), abs=1e-9)
    assert float(nmse(t, p)) == pytest.approx(float(fastmri_eval.nmse(t, p)), abs=1e-12)
    assert float(ssim(t, p, t.max())) == pytest.approx(float(fastmri_eval.ssim(t, p)[0]), abs=1e-9)


def test_float32_volumes_agree_with_fastmri_to_1e6(rng):
    # fastMRI (skimage) computes in float32 for float32 files; we evaluate in float64.
    t = volume(rng, (3, 36, 36)).astype(np.float32)  # square: the evaluation crop is a no-op
    p = noisy(rng, t).astype(np.float32)
    ours = evaluate_volume(t, p)
    assert ours["psnr"] == pytest.approx(fastmri_eval.psnr(t, p), abs=1e-6)
    assert ours["ssim"] == pytest.approx(float(fastmri_eval.ssim(t, p)[0]), abs=1e-6)
    assert ours["nmse"] == pytest.approx(float(fastmri_eval.nmse(t, p)), abs=1e-6)


def test_ssim_per_slice_equals_skimage(rng):
    t = volume(rng, (3, 20, 18))
    p = noisy(rng, t)
    per_slice = ssim(t, p, t.max(), reduction="none")
    expected = [structural_similarity(t[i], p[i], data_range=t.max()) for i in range(3)]
    np.testing.assert_allclose(per_slice.numpy(), expected, atol=1e-10)
    assert float(ssim(t, p, t.max(), reduction="sum")) == pytest.approx(sum(expected), abs=1e-9)


def test_ssim_accepts_channel_dim_and_per_slice_data_range(rng):
    t = torch.from_numpy(volume(rng, (2, 12, 12)))
    p = torch.from_numpy(noisy(rng, t.numpy()))
    ranges = torch.tensor([1.5, 3.0], dtype=torch.float64)
    batched = ssim(t.unsqueeze(1), p.unsqueeze(1), ranges, reduction="none")
    one_by_one = torch.stack([ssim(t[i : i + 1], p[i : i + 1], float(ranges[i])) for i in range(2)])
    torch.testing.assert_close(batched, one_by_one, rtol=0, atol=1e-12)


def test_identical_images_score_ssim_one_nmse_zero_psnr_inf(rng):
    t = volume(rng, (2, 16, 16))
    assert float(ssim(t, t, t.max())) == pytest.approx(1.0, abs=1e-12)
    assert float(nmse(t, t)) == 0.0
    assert float(psnr(t, t)) == float("inf")


def test_ssim_rejects_images_smaller_than_window_and_complex_input():
    with pytest.raises(ValueError, match="smaller than the 7x7"):
        ssim(np.ones((1, 6, 9)), np.ones((1, 6, 9)), 1.0)
    with pytest.raises(ValueError, match="magnitude"):
        psnr(np.ones((1, 8, 8), np.complex64), np.ones((1, 8, 8)))


def test_center_crop_takes_fastmri_offsets_and_only_shrinks():
    x = np.arange(5 * 8).reshape(5, 8)
    np.testing.assert_array_equal(center_crop(x, (4, 4)), x[0:4, 2:6])
    np.testing.assert_array_equal(center_crop(x, (4, 4)), fastmri_transforms.center_crop(x, (4, 4)))
    assert center_crop(x, (6, 6)).shape == (5, 6)  # height 5 < 6 is kept


def test_evaluate_volume_matches_fastmri_crop_and_volume_data_range(rng):
    # target taller than wide (readout oversampling), prediction larger still; a bright band outside
    # the (W, W) crop must not enter the data range.
    t = volume(rng, (3, 44, 36))
    t[:, :2] = 50.0
    p = noisy(rng, volume(rng, (3, 50, 40)))
    ct = fastmri_transforms.center_crop(t, (36, 36))
    cp = fastmri_transforms.center_crop(p, (36, 36))
    ours = evaluate_volume(t, p)
    assert ours["psnr"] == pytest.approx(fastmri_eval.psnr(ct, cp), abs=1e-9)
    assert ours["ssim"] == pytest.approx(float(fastmri_eval.ssim(ct, cp)[0]), abs=1e-9)
    assert ours["nmse"] == pytest.approx(float(fastmri_eval.nmse(ct, cp)), abs=1e-12)


def test_evaluate_volume_rejects_prediction_smaller_than_crop(rng):
    with pytest.raises(ValueError, match="field of view"):
        evaluate_volume(volume(rng, (2, 20, 16)), volume(rng, (2, 20, 12)))


def test_evaluate_volume_scores_cine_frames_as_slices(rng):
    t = volume(rng, (6, 16, 16))
    p = noisy(rng, t)
    assert evaluate_volume(t.reshape(2, 3, 16, 16), p.reshape(2, 3, 16, 16)) == evaluate_volume(t, p)


def test_summarize_mean_and_sample_std_over_volumes():
    rows = [{"psnr": 30.0, "ssim": 0.8, "nmse": 0.01}, {"psnr": 34.0, "ssim": 0.9, "nmse": 0.03}]
    out = summarize(rows)
    assert out["psnr"] == {"mean": 32.0, "std": pytest.approx(np.sqrt(8.0))}
    assert out["ssim"]["mean"] == pytest.approx(0.85)
    assert out["nmse"]["std"] == pytest.approx(np.std([0.01, 0.03], ddof=1))
    assert summarize(rows[:1])["psnr"] == {"mean": 30.0, "std": 0.0}


def test_ssim_loss_is_one_minus_ssim_with_per_sample_range_and_has_gradients(rng):
    t = torch.from_numpy(volume(rng, (2, 10, 10))).unsqueeze(1)
    t[1] *= 4.0  # different per-sample maxima
    p = torch.from_numpy(noisy(rng, t.numpy())).requires_grad_()
    loss = SSIMLoss()(p, t)
    expected = np.mean([structural_similarity(t[i, 0].numpy(), p[i, 0].detach().numpy(),
                                              data_range=float(t[i].max())) for i in range(2)])
    assert float(loss.detach()) == pytest.approx(1 - expected, abs=1e-10)
    loss.backward()
    assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_ssim_gradient_is_exact(rng):
    t = torch.from_numpy(volume(rng, (1, 8, 9)))
    p = torch.from_numpy(noisy(rng, t.numpy())).requires_grad_()
    assert torch.autograd.gradcheck(lambda q: ssim(t, q, 1.0), (p,))


# ---- prediction files and reports -------------------------------------------------------------------


def test_prediction_file_round_trip_is_float32_with_attrs_and_no_temp_files(tmp_path, rng):
    recon = volume(rng, (2, 12, 10))
    path = write_reconstruction(tmp_path, "/some/input/dir/file1000.h5", recon, extra_attrs={"acceleration": 4})
    assert path == tmp_path / "file1000.h5"
    with h5py.File(path, "r") as f:
        assert list(f.keys()) == ["reconstruction"]
        assert f["reconstruction"].dtype == np.float32
        assert f.attrs["acceleration"] == 4
    np.testing.assert_array_equal(read_reconstruction(path), recon.astype(np.float32))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file1000.h5"]


def test_read_reconstruction_names_file_and_missing_key(tmp_path):
    path = tmp_path / "x.h5"
    with h5py.File(path, "w") as f:
        f["kspace"] = np.zeros(3)
    with pytest.raises(DataError, match=r"x\.h5 \[reconstruction\]"):
        read_reconstruction(path)
    with pytest.raises(DataError, match="missing.h5"):
        read_reconstruction(tmp_path / "missing.h5")


def test_fastmri_evaluate_scores_our_prediction_files_as_our_metrics(tmp_path, rng):
    targets, preds = tmp_path / "targets", tmp_path / "preds"
    targets.mkdir()
    rows = []
    for i, shape in enumerate([(3, 40, 36), (2, 44, 36), (4, 36, 36)]):
        t = volume(rng, shape).astype(np.float32)
        p = noisy(rng, volume(rng, (shape[0], 48, 40)), sigma=0.03 * (i + 1)).astype(np.float32)
        with h5py.File(targets / f"file{i}.h5", "w") as f:
            f["reconstruction_rss"] = t
        write_reconstruction(preds, f"file{i}.h5", p)
        rows.append(evaluate_volume(t, read_reconstruction(preds / f"file{i}.h5")))
    args = argparse.Namespace(target_path=targets, predictions_path=preds, acquisition=None, acceleration=None)
    theirs = fastmri_eval.evaluate(args, "reconstruction_rss")
    ours = summarize(rows)
    for name in ("psnr", "ssim", "nmse"):
        assert ours[name]["mean"] == pytest.approx(float(theirs.means()[name.upper()]), abs=1e-6)
        assert ours[name]["std"] == pytest.approx(float(theirs.stddevs()[name.upper()]), abs=1e-6)


def test_write_metrics_json_and_csv(tmp_path):
    rows = [
        {"fname": "a.h5", "psnr": 30.0, "ssim": 0.8, "nmse": 0.02, "acceleration": 4, "num_slices": 2,
         "seconds_per_slice": 0.5},
        {"fname": "b.h5", "psnr": 34.0, "ssim": 0.9, "nmse": 0.01, "acceleration": 8, "num_slices": 3,
         "seconds_per_slice": 0.25, "note": "x"},
        {"fname": "c.h5", "psnr": 32.0, "ssim": 0.7, "nmse": 0.03, "acceleration": 4, "num_slices": 1,
         "seconds_per_slice": 0.5},
    ]
    json_path, csv_path = write_metrics(tmp_path, rows, summarize(rows), extra={"seconds_per_slice": np.float32(0.4)})
    report = json.loads(json_path.read_text())
    assert list(report) == ["psnr", "ssim", "nmse", "by_acceleration", "seconds_per_slice"]
    assert report["psnr"]["mean"] == pytest.approx(32.0)
    assert report["by_acceleration"]["4"]["psnr"] == {"mean": 31.0, "std": pytest.approx(np.sqrt(2.0))}
    assert report["by_acceleration"]["8"]["ssim"] == {"mean": 0.9, "std": 0.0}
    assert report["seconds_per_slice"] == pytest.approx(0.4)  # numpy scalars are written as numbers
    with open(csv_path, newline="") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == ["fname", "psnr", "ssim", "nmse", "acceleration", "num_slices", "seconds_per_slice", "note"]
    assert [r["fname"] for r in table] == ["a.h5", "b.h5", "c.h5"]
    assert table[1]["note"] == "x" and table[0]["note"] == ""
    assert float(table[2]["nmse"]) == 0.03
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "per_volume.csv"]


def test_write_metrics_rejects_extra_overwriting_a_metric(tmp_path):
    rows = [{"fname": "a.h5", "psnr": 30.0, "ssim": 0.8, "nmse": 0.02}]
    with pytest.raises(ValueError, match="'psnr'"):
        write_metrics(tmp_path, rows, extra={"psnr": 1.0})
    assert not list(tmp_path.iterdir())

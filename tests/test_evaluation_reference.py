"""Evaluation against fastMRI's reference: our metrics.json equals fastMRI's evaluator on our prediction
files; undersampled test files (fastMRI test/challenge layout) are reconstructed with their own mask."""
import argparse
import json

import h5py
import numpy as np
import pytest
import torch

from mrirecon.config import load_config
from mrirecon.evaluation.runner import evaluate

fastmri_eval = pytest.importorskip("fastmri.evaluate")


def _cfg(root, *overrides):
    return load_config(None, [f"data.root={root}", "data.kind=knee2d", "data.espirit={calib_width: 12}",
                              "data.mask={name: random, center_fractions: [0.125], accelerations: [4]}", *overrides])


def _fastmri_scores(data_dir, pred_dir):
    args = argparse.Namespace(target_path=data_dir, predictions_path=pred_dir, acquisition=None, acceleration=None)
    theirs = fastmri_eval.evaluate(args, "reconstruction_rss")
    return {k.lower(): float(v) for k, v in theirs.means().items()}


@pytest.mark.parametrize("method", ["zero_filled", "sense"])
def test_metrics_json_equals_fastmris_evaluator_on_our_prediction_files(synthetic, tmp_path, method):
    root = synthetic("knee2d")
    out = tmp_path / method
    evaluate(_cfg(root), root / "test", out, method=method, num_figures=0, progress=False,
             baseline_params={"max_iter": 5} if method == "sense" else None)
    report = json.loads((out / "metrics.json").read_text())
    assert report["target"] == "rss" and report["reference"].startswith("reconstruction_rss")
    theirs = _fastmri_scores(root / "test", out)
    for name in ("psnr", "ssim", "nmse"):
        assert report[name]["mean"] == pytest.approx(theirs[name], abs=1e-6, rel=1e-6)


def test_zero_filled_prediction_is_fastmris_zero_filled_rss(synthetic, tmp_path):
    """Under the rss reference the zero-filled prediction is the RSS of the zero-filled coil images."""
    from fastmri import ifft2c, rss_complex
    from mrirecon.data.masks import build_mask_func, seed_from_name
    from mrirecon.data.transforms import crop_readout

    root = synthetic("knee2d")
    evaluate(_cfg(root), root / "test", tmp_path / "zf", method="zero_filled", num_figures=0, progress=False)
    path = sorted((root / "test").glob("*.h5"))[0]
    with h5py.File(path) as f:
        k = f["kspace"][()]
    with h5py.File(tmp_path / "zf" / path.name) as f:
        pred = f["reconstruction"][()]
    mask = build_mask_func({"name": "random", "center_fractions": [0.125], "accelerations": [4]})(
        (4, 32, 32), seed=seed_from_name(path.name)).mask
    for s in range(k.shape[0]):
        full, _ = crop_readout(k[s], 32)
        under = torch.from_numpy(full) * mask + 0.0
        want = rss_complex(ifft2c(torch.view_as_real(under)), dim=0).numpy()
        np.testing.assert_allclose(pred[s], want, rtol=0, atol=1e-5 * want.max())


def test_sense_reference_is_named_and_differs_from_rss(synthetic, tmp_path):
    root = synthetic("knee2d")
    rss = evaluate(_cfg(root), root / "test", tmp_path / "a", method="zero_filled", num_figures=0, progress=False)
    sense = evaluate(_cfg(root, "data.target=sense"), root / "test", tmp_path / "b", method="zero_filled",
                     num_figures=0, progress=False)
    report = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert report["target"] == "sense" and report["reference"].startswith("sense")
    assert sense["ssim"]["mean"] != pytest.approx(rss["ssim"]["mean"], abs=1e-3)
    with h5py.File(next((tmp_path / "b").glob("*.h5"))) as f:
        assert f.attrs["reference"] == "sense"


def test_undersampled_test_files_are_fastmri_test_layout_and_reconstructed_with_their_mask(tmp_path):
    from fastmri.data.mri_data import SliceDataset

    from mrirecon.data.coil_maps import MapCache, EspiritSettings
    from mrirecon.data.datasets import ReconDataset
    from mrirecon.synthetic.generator import generate
    from mrirecon.data.transforms import ReconTransform
    from mrirecon.data.masks import build_mask_func

    root = tmp_path / "data"
    generate("knee2d", root, volumes=3, seed=0, coils=4, slices=2, size=(32, 32), undersampled_test=4)
    test_file = next((root / "test").glob("*.h5"))
    with h5py.File(test_file) as f:
        assert "reconstruction_rss" not in f and f["mask"].shape == (32,)
        assert f.attrs["acceleration"] == 4 and f.attrs["num_low_frequency"] == round(0.08 * 32)
        file_mask = f["mask"][()].astype(np.float32)
        assert (f["kspace"][()][..., file_mask == 0] == 0).all()
    kspace, mask, target, attrs, fname, _ = SliceDataset(root / "test", challenge="multicoil")[0]
    assert target is None and np.array_equal(np.asarray(mask, np.float32), file_mask)
    # A configured 8x mask is ignored: the file's own acquired mask is used.
    eight = build_mask_func({"name": "random", "center_fractions": [0.04], "accelerations": [8]})
    ds = ReconDataset(root / "test", "knee2d", ReconTransform(eight, deterministic=True), require_maps=True,
                      maps_cache=MapCache(tmp_path / "cache", EspiritSettings(calib_width=12)), progress=False)
    sample = ds[0]
    assert np.array_equal(sample.mask.flatten().numpy(), file_mask) and sample.target.numel() == 0
    out = tmp_path / "out"
    result = evaluate(_cfg(root, f"data.maps_cache={tmp_path / 'cache'}", "data.mask.accelerations=[8]",
                           "data.mask.center_fractions=[0.04]"), root / "test", out, method="sense",
                      num_figures=0, progress=False, baseline_params={"max_iter": 5})
    assert result["reference"] is None and result["reconstructed_only"] == [test_file.name]
    with h5py.File(out / test_file.name) as f:
        assert f["reconstruction"].shape == (2, 32, 32) and f["reconstruction"].dtype == np.float32
        assert np.isfinite(f["reconstruction"][()]).all() and f["reconstruction"][()].max() > 0
    assert json.loads((out / "reconstructions.json").read_text())["num_volumes"] == 1
    assert not (out / "metrics.json").exists()


def test_baseline_settings_are_chosen_on_the_validation_split_and_recorded(synthetic, tmp_path, monkeypatch):
    import mrirecon.evaluation.tuning as tuning

    root = synthetic("knee2d")
    monkeypatch.setitem(tuning.GRIDS, "sense", {"lam": [1e-3, 10.0], "max_iter": [1, 8]})
    result = evaluate(_cfg(root), root, tmp_path / "out", method="sense", num_figures=0, progress=False)
    report = json.loads((tmp_path / "out" / "metrics.json").read_text())
    t = report["tuning"]
    assert t["split"] == str(root / "val") and len(t["scores"]) == 4
    best = max(t["scores"], key=lambda r: (r["ssim"], r["psnr"]))
    assert report["baseline_params"] == best["params"] == result["baseline_params"]
    assert best["params"] != {"lam": 10.0, "max_iter": 1}  # heavy damping after one step is never best
    fixed = evaluate(_cfg(root), root, tmp_path / "fixed", method="sense", num_figures=0, progress=False,
                     tune=False)
    assert fixed["baseline_params"] == {} and fixed["tuning"].startswith("not tuned")

"""ESPIRiT maps: our eigen-decomposition against sigpy, several map sets, and soft SENSE end to end."""
import json

import h5py
import numpy as np
import pytest

from mrirecon.synthetic.generator import make_volume
from mrirecon.physics.espirit import espirit_eigen, espirit_maps


@pytest.fixture(scope="module")
def kspace():
    data, _ = make_volume("brain2d", 0, seed=0, coils=4, slices=1, size=(24, 24))
    return data["kspace"][0]  # (4, 48, 24)


def test_one_map_equals_sigpys_espiritcalib(kspace):
    sigpy_maps = espirit_maps(kspace, calib_width=12, kernel_width=5, max_iter=200)[0]  # sigpy's power iteration
    ours, eig = espirit_eigen(kspace, (12, 12), (5, 5))
    inside = eig[0] > 0.96  # away from the crop threshold (0.95), where sigpy's iteration decides the support
    assert inside.sum() > 100
    np.testing.assert_allclose(ours[0][:, inside], sigpy_maps[:, inside], rtol=0, atol=1e-4)
    assert ((np.abs(sigpy_maps).sum(0) > 0) == (eig[0] > 0.95)).mean() > 0.99


def test_two_maps_are_orthonormal_eigenvectors_in_decreasing_order(kspace):
    maps, eig = espirit_eigen(kspace, (12, 12), (5, 5), crop=0.0, num_maps=2)
    assert maps.shape == (2, 4, 48, 24) and (eig[0] >= eig[1]).all()
    np.testing.assert_allclose((np.abs(maps) ** 2).sum(1), 1.0, atol=1e-5)
    inner = (maps[0].conj() * maps[1]).sum(0)
    assert np.abs(inner).max() < 1e-5
    assert np.allclose(espirit_maps(kspace, calib_width=12, kernel_width=5, crop=0.0, num_maps=2), maps)


def test_five_calibration_lines_give_the_maps_of_a_square_region(kspace):
    """fastMRI brain's 4% centre (5 lines) by 32 readout points, a 5x3 kernel: nearly the same support and
    the same maps (up to a phase per pixel) as a 12x12 square region. The supports' edges differ by about a
    pixel (5 lines resolve the coils' fall-off less sharply): 86-92% overlap on these 24x24 images."""
    square, eig_sq = espirit_eigen(kspace, (12, 12), (5, 5))
    lines, eig_ln = espirit_eigen(kspace, (32, 5), (5, 3))
    a, b = eig_sq[0] > 0.95, eig_ln[0] > 0.95
    assert (a & b).sum() / (a | b).sum() > 0.8
    assert np.abs((square[0].conj() * lines[0]).sum(0))[a & b].min() > 0.98


def test_num_maps_2_trains_and_evaluates_from_cached_maps(synthetic, tmp_path):
    import evaluate as evaluate_cli
    from mrirecon.config import load_config
    from mrirecon.training.run import train

    root = synthetic("knee2d")
    cache = tmp_path / "cache"
    cfg = load_config("configs/knee2d.yaml", [
        f"data.root={root}", f"output_dir={tmp_path / 'runs'}", f"data.maps_cache={cache}",
        "data.espirit={calib_width: 12, crop: 0.8}", "data.mask={type: random, center_fractions: [0.125], "
        "accelerations: [4]}", "model.num_maps=2", "model.num_unrolls=2", "model.prox.channels=8",
        "data.batch_size=2", "train.max_epochs=1"])
    result = train(cfg, enable_progress_bar=False)
    for p in cache.glob("*.h5"):
        with h5py.File(p) as f:
            assert f["espirit_maps"].shape[1] == 2  # two map sets, built because the files hold one
    out = tmp_path / "eval"
    assert evaluate_cli.main(["--checkpoint", result.last_checkpoint, "--data", str(root / "test"), "--out",
                              str(out), "--no-progress"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert np.isfinite(m["psnr"]["mean"]) and m["target"] == "rss"
    with h5py.File(next(out.glob("*.h5"))) as f:
        assert "num_maps: 2" in f.attrs["config"]

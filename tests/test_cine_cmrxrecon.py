"""The CMRxRecon cine layout (mrirecon/data/cmrxrecon.py): files written in the challenge's format by the
synthetic generator, read back exactly, acquired masks used, bad files named with their key."""
import os

import h5py
import numpy as np
import pytest
import scipy.io
import torch

from mrirecon.data.readers import cmrxrecon as cx
from mrirecon.synthetic.cmrxrecon import generate_cmrxrecon
from mrirecon.data.datasets import ReconDataset
from mrirecon.data.errors import DataError
from mrirecon.data.masks import build_mask_func
from mrirecon.synthetic.generator import make_volume
from mrirecon.data.transforms import ReconTransform

TINY = dict(coils=4, slices=2, frames=5, size=(24, 32))  # H = readout 24, W = ky 32
TRAINING = ("MultiCoil", "Cine", "TrainingSet")


@pytest.fixture(scope="module")
def cmx(tmp_path_factory):
    """3 synthetic patients (train P001, val P002, test P003) in the challenge layout."""
    root = tmp_path_factory.mktemp("cmrxrecon")
    generate_cmrxrecon(root, volumes=3, seed=0, **TINY)
    return root


def _base(cmx, split="train"):
    return cmx.joinpath(split, *TRAINING)


def _dataset(root, mask=None, maps="online"):
    mask = mask or {"name": "cmrxrecon", "accelerations": [8]}
    return ReconDataset(root, "cine", transform=ReconTransform(build_mask_func(mask), True, maps=maps))


def test_generator_writes_the_challenge_folders_keys_and_dims(cmx):
    base = _base(cmx)
    assert sorted(p.name for p in base.iterdir()) == ["AccFactor04", "AccFactor08", "AccFactor10", "FullSample"]
    assert sorted(os.listdir(base / "AccFactor08" / "P001")) == ["cine_sax.mat", "cine_sax_mask.mat"]
    full = base / "FullSample" / "P001" / "cine_sax.mat"
    with pytest.raises(NotImplementedError, match="v7.3"):  # scipy recognises MATLAB v7.3 by its header
        scipy.io.loadmat(full)
    with h5py.File(full, "r") as f:
        d = f["kspace_full"]
        assert d.shape == (5, 2, 4, 32, 24)  # (frames, slices, coils, ky, kx)
        assert d.dtype.names == ("real", "imag")
    with h5py.File(base / "AccFactor08" / "P001" / "cine_sax.mat", "r") as f:
        assert list(f.keys()) == ["kspace_sub08"]
    with h5py.File(base / "AccFactor08" / "P001" / "cine_sax_mask.mat", "r") as f:
        assert list(f.keys()) == ["mask08"] and f["mask08"].shape == (32, 24)  # (ky, kx)


def test_reader_returns_the_synthetic_kspace_of_each_slice_exactly(cmx):
    ds = _dataset(cmx / "train")
    assert type(ds.reader).__name__ == "CmrxReconReader"  # the cine kind's reader chose the CMRxRecon layout
    assert [(ds.files[i].fname, s) for i, s in ds.items] == [("P001_cine_sax_acc08.h5", 0),
                                                             ("P001_cine_sax_acc08.h5", 1)]
    data, _ = make_volume("cine", 0, 0, **TINY)  # patient P001 is volume 0
    for s in range(2):
        raw = ds.read(s)
        np.testing.assert_array_equal(raw.kspace, data["kspace"][s].transpose(1, 0, 2, 3))  # (C, T, H, W)


def test_acquired_mask_is_used_and_the_target_is_fully_sampled(cmx, tmp_path):
    # A mask file with lines no simulation would draw: the sample must carry exactly these.
    base = tmp_path.joinpath(*TRAINING)
    data, _ = make_volume("cine", 0, 0, **TINY)
    cx.write_patient(base, "P001", data["kspace"], accelerations=[8])
    lines = np.zeros(32, bool)
    lines[[1, 5, 14, 15, 16, 17, 18, 30]] = True
    cx.write_mat73(base / "AccFactor08" / "P001" / "cine_sax_mask.mat", {"mask08": np.repeat(lines[:, None], 24, 1)})
    sample = _dataset(tmp_path)[0]
    assert torch.equal(sample.mask.flatten(), torch.from_numpy(lines.astype(np.float32)))
    assert torch.equal(sample.kspace.abs().amax(dim=(0, 1, 2)) > 0, torch.from_numpy(lines))
    # The reference is the fully sampled image: its magnitude is the RSS of the full k-space's coil images
    # (the transform's default "rss" target), not anything the 8 acquired lines could give.
    from mrirecon.physics import ifftc

    coil_images = ifftc(torch.from_numpy(data["kspace"][0].transpose(1, 0, 2, 3)), ndim=2)
    rss = (coil_images.abs() ** 2).sum(0).sqrt()
    magnitude = (sample.target.abs() ** 2).sum(0).sqrt() * sample.scale
    torch.testing.assert_close(magnitude, rss, rtol=1e-4, atol=1e-6 * float(rss.max()))


def test_undersampled_only_folder_reads_the_acquired_kspace_without_reference(cmx, tmp_path):
    base = tmp_path.joinpath("MultiCoil", "Cine", "ValidationSet")
    (base / "AccFactor04").mkdir(parents=True)
    os.symlink(_base(cmx) / "AccFactor04" / "P001", base / "AccFactor04" / "P001")
    ds = _dataset(tmp_path, {"name": "cmrxrecon", "accelerations": [4]})
    raw = ds.read(0)
    with h5py.File(base / "AccFactor04" / "P001" / "cine_sax.mat", "r") as f:
        sub = f["kspace_sub04"][:, 0]
    np.testing.assert_array_equal(raw.kspace, (sub["real"] + 1j * sub["imag"]).transpose(1, 0, 3, 2))
    assert ds[0].target.numel() == 0


def test_cmrxrecon_mask_is_equispaced_with_a_central_band_in_every_frame():
    func = build_mask_func({"name": "cmrxrecon", "accelerations": [4], "center_lines": 6})
    m = func((3, 7, 16, 32), seed=0)
    assert m.mask.shape == (1, 1, 1, 32)
    expected = [k for k in range(32) if (k - 16) % 4 == 0 or 13 <= k < 19]
    assert torch.nonzero(m.mask.flatten()).flatten().tolist() == expected
    assert m.acceleration == 32 / len(expected) and m.nominal == 4.0 and m.calib_size == (6,)


def test_cmrxrecon_mask_default_band_is_the_challenge_24_lines():
    m = build_mask_func({"name": "cmrxrecon", "accelerations": [10]})((2, 4, 8, 246), seed=0)
    lines = m.mask.flatten().bool()
    assert bool(lines[123 - 12:123 + 12].all()) and m.calib_size == (24,)


def test_old_matlab_file_is_named_with_how_to_convert(cmx, tmp_path):
    path = tmp_path / "cine_sax.mat"
    scipy.io.savemat(path, {"kspace_full": np.zeros((2, 2))})  # MATLAB 5.0 format
    with pytest.raises(DataError, match=r"cine_sax.mat.*before v7.3.*save\('cine_sax.mat', '-struct', 's', '-v7.3'\)"):
        cx.open_mat(path)


def _full_sample(root, arrays: dict) -> None:
    """A CMRxRecon training folder whose one patient's FullSample/cine_sax.mat holds `arrays`."""
    base = root.joinpath(*TRAINING, "FullSample", "P001")
    base.mkdir(parents=True)
    cx.write_mat73(base / "cine_sax.mat", arrays)


def test_missing_key_is_named(tmp_path):
    _full_sample(tmp_path, {"kspace": np.zeros((2, 1, 2, 8, 8), np.complex64)})
    with pytest.raises(DataError, match=r"P001/cine_sax.mat \[kspace_full\]: missing key \(file has \['kspace'\]\)"):
        _dataset(tmp_path)


def test_mask_of_the_wrong_shape_is_named(cmx, tmp_path):
    base = tmp_path.joinpath(*TRAINING)
    data, _ = make_volume("cine", 0, 0, **TINY)
    cx.write_patient(base, "P001", data["kspace"], accelerations=[8])
    path = base / "AccFactor08" / "P001" / "cine_sax_mask.mat"
    cx.write_mat73(path, {"mask08": np.ones((24, 32))})  # (kx, ky): transposed
    with pytest.raises(DataError, match=r"cine_sax_mask.mat \[mask08\]: mask shape \(24, 32\) does not match.*"
                                        r"\(32, 24\).*transposed"):
        _dataset(tmp_path)


def test_single_frame_is_refused(tmp_path):
    _full_sample(tmp_path, {"kspace_full": np.ones((1, 1, 2, 8, 8), np.complex64)})
    with pytest.raises(DataError, match=r"\[kspace_full\]: 1 frame .*at least 2 frames"):
        _dataset(tmp_path)


def test_cached_maps_are_refused_with_the_setting_to_use(cmx):
    with pytest.raises(DataError, match="carry no coil maps: set data.maps: online"):
        ReconDataset(cmx / "train", "cine", require_maps=True)


def test_split_links_patients_into_train_val_test(cmx, tmp_path):
    base = tmp_path / "all"
    for split, patient in (("train", "P001"), ("val", "P002"), ("test", "P003")):
        for folder in _base(cmx, split).iterdir():
            (base / folder.name).mkdir(parents=True, exist_ok=True)
            os.symlink(folder / patient, base / folder.name / patient)
    splits = cx.split_training_set(base, tmp_path / "out", (0.34, 0.34))
    assert splits == {"train": ["P001"], "val": ["P002"], "test": ["P003"]}
    assert (tmp_path / "out" / "val" / "AccFactor10" / "P002" / "cine_sax_mask.mat").is_file()
    assert [cf.fname for cf in _dataset(tmp_path / "out" / "test").files] == ["P003_cine_sax_acc08.h5"]


def test_cmrxrecon_config_runs_a_gleam_epoch_to_a_finite_val_psnr(cmx, tmp_path):
    from mrirecon.config import load_config
    from mrirecon.training.run import train

    cfg = load_config("configs/cine_cmrxrecon.yaml", [f"data.root={cmx}", f"output_dir={tmp_path}",
                                                      "model.num_unrolls=2", "model.prox.channels=4",
                                                      "train.max_epochs=1", "train.strategy=gleam",
                                                      "train.num_modules=2", "train.log_every_n_steps=1"])
    result = train(cfg, enable_progress_bar=False)
    assert result.best_score is not None and np.isfinite(result.best_score)


def test_command_lines_write_the_layout_and_split_it(tmp_path):
    from mrirecon.cli import main

    assert main(["synth", "--kind", "cine", "--layout", "cmrxrecon", "--out", str(tmp_path / "gen"), "--volumes", "3",
                 "--coils", "2", "--slices", "1", "--frames", "2", "--size", "16", "16", "--no-progress"]) == 0
    assert (tmp_path / "gen" / "val" / "MultiCoil" / "Cine" / "TrainingSet" / "AccFactor10" / "P002" /
            "cine_sax_mask.mat").is_file()
    base = _base(tmp_path / "gen", "train")
    assert main(["cmrxrecon", "split", "--training-set", str(base), "--out", str(tmp_path / "split"),
                 "--val", "0", "--test", "0"]) == 0
    assert (tmp_path / "split" / "train" / "FullSample" / "P001").resolve() == (base / "FullSample" / "P001").resolve()

"""Datasets, transforms and cached coil maps on synthetic files in the real layouts."""
import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from mrirecon.data.coil_maps import EspiritSettings, MapCache, cache_maps
from mrirecon.data.datasets import ReconDataset
from mrirecon.data.errors import DataError
from mrirecon.data.maps_entry import read_entry
from mrirecon.data.masks import acs_width, build_mask_func
from mrirecon.data.transforms import ReconTransform
from mrirecon.physics import SenseOp

MASKS = {
    "knee2d": {"name": "random", "center_fractions": [0.125], "accelerations": [4]},
    "brain2d": {"name": "equispaced", "center_fractions": [0.25], "accelerations": [4]},
    "knee3d": {"name": "poisson", "accelerations": [4], "calib_size": [12, 12]},
    "cine": {"name": "kyt", "center_fractions": [0.125], "accelerations": [4]},
}


def dataset(root, kind, split="train", deterministic=True, **kw):
    mask = build_mask_func(kw.pop("mask", MASKS[kind]))
    t = ReconTransform(mask, deterministic=deterministic, seed=0, maps=kw.pop("maps", "file"),
                       target=kw.pop("target", "rss"))
    return ReconDataset(root / split, kind, transform=t, **kw)


@pytest.mark.parametrize(
    "kind,kspace_shape,maps_shape",
    [
        ("knee2d", (4, 32, 32), (1, 4, 32, 32)),       # readout oversampling (64) cropped to recon size 32
        ("brain2d", (4, 32, 32), (1, 4, 32, 32)),
        ("knee3d", (4, 32, 24), (1, 4, 32, 24)),       # one ky-kz slice per readout position
        ("cine", (4, 6, 32, 32), (1, 4, 1, 32, 32)),   # all frames of a slice, maps shared over time
    ],
)
def test_sample_shapes(synthetic, kind, kspace_shape, maps_shape):
    ds = dataset(synthetic(kind), kind)
    s = ds[0]
    assert s.kspace.shape == kspace_shape and s.kspace.dtype == torch.complex64
    assert s.maps.shape == maps_shape
    assert s.target.shape == (1, *kspace_shape[1:])
    assert s.acceleration > 1.5
    # masked entries are exactly +0.0: the sign of unsampled data does not leak
    zero = (s.mask.expand_as(s.kspace) == 0)
    assert not torch.signbit(s.kspace.real[zero]).any() and (s.kspace[zero] == 0).all()


def test_lengths_and_volume_grouping(synthetic):
    ds = dataset(synthetic("knee3d"), "knee3d")
    n_files = len(ds.files)
    assert len(ds) == 4 * n_files
    assert all(len(v) == 4 for v in ds.volumes().values())
    vol = dataset(synthetic("knee3d"), "knee3d", volume=True)
    assert len(vol) == n_files
    s = vol[0]
    assert s.kspace.shape == (4, 4, 32, 24) and s.maps.shape == (1, 4, 4, 32, 24) and s.slice_num == -1
    assert vol.geometry.fft_ndim == 3 and vol.geometry.conv_dims == 3


def test_volume_mode_equals_stacked_slices(synthetic):
    """The 3D k-space of a volume is the readout FFT of the hybrid slices: same target image."""
    sl = dataset(synthetic("knee3d"), "knee3d")
    vol = dataset(synthetic("knee3d"), "knee3d", volume=True)[0]
    stacked = torch.stack([sl[i].target[0] * sl[i].scale for i in range(4)])
    assert torch.allclose(vol.target[0] * vol.scale, stacked, atol=1e-4 * stacked.abs().max())


def test_target_is_sense_image_of_full_kspace(synthetic):
    ds = ReconDataset(synthetic("knee2d") / "train", "knee2d")
    raw = ds.read(0)
    s = dataset(synthetic("knee2d"), "knee2d")[0]
    maps = s.maps[None]
    # zero-filled image of the sample is A^H y with its own mask, normalised to peak 1
    zf = SenseOp(maps, s.mask[None], 2).H(s.kspace[None])
    assert abs(float(zf.abs().max()) - 1.0) < 1e-5
    assert raw.kspace.shape[-2] == 64 and raw.readout_crop == 32


def test_target_magnitude_matches_file_rss(synthetic):
    """With normalised synthetic coil maps, |SENSE target| ~ the file's reconstruction_rss inside the object."""
    ds = dataset(synthetic("knee2d"), "knee2d")
    s = ds[0]
    with h5py.File(ds.files[0].path) as f:
        rss = f["reconstruction_rss"][0]
    mag = (s.target[0].abs() * s.scale).numpy()
    inside = rss > 0.2 * rss.max()
    assert np.median(np.abs(mag[inside] - rss[inside]) / rss[inside]) < 0.05


def test_validation_masks_fixed_per_file_and_training_masks_vary(synthetic):
    root = synthetic("knee2d")
    a, b = dataset(root, "knee2d", "val"), dataset(root, "knee2d", "val")
    assert torch.equal(a[0].mask, b[0].mask) and torch.equal(a[0].mask, a[1].mask)  # per file, every slice
    tr = dataset(root, "knee2d", deterministic=False)
    raw = tr.read(0)
    m0, m0_again, m1 = tr.transform(raw, epoch=0).mask, tr.transform(raw, epoch=0).mask, tr.transform(raw, epoch=1).mask
    assert torch.equal(m0, m0_again) and not torch.equal(m0, m1)


def test_cine_masks_differ_across_frames(synthetic):
    s = dataset(synthetic("cine"), "cine")[0]
    assert s.mask.shape[1] == 6 and not torch.equal(s.mask[:, 0], s.mask[:, 1])


def test_online_maps_close_to_cached(synthetic):
    root = synthetic("knee2d")
    cached = dataset(root, "knee2d", target="sense")[0]
    wide_acs = {"name": "random", "center_fractions": [0.5], "accelerations": [2]}  # 16 calibration lines
    online = dataset(root, "knee2d", maps="online", mask=wide_acs, target="sense")[0]
    # maps are defined up to a global phase per pixel; compare the SENSE images' magnitudes
    a, b = cached.target.abs() * cached.scale, online.target.abs() * online.scale
    assert float((a - b).norm() / a.norm()) < 0.1


def test_acs_width():
    m = torch.zeros(1, 1, 20)
    m[..., 8:13] = 1
    m[..., 2] = 1
    assert acs_width(m) == 5
    m2 = torch.zeros(1, 10, 10)
    m2[:, 3:7, 3:7] = 1
    assert acs_width(m2) == 4


# ------------------------------------------------------------------ bad input
def _copy_split(synthetic, kind, tmp_path):
    dst = tmp_path / "split"
    shutil.copytree(synthetic(kind) / "train", dst)
    return dst


def test_empty_folder(tmp_path):
    with pytest.raises(DataError, match="no .h5 files"):
        ReconDataset(tmp_path, "knee2d")
    with pytest.raises(DataError, match="does not exist"):
        ReconDataset(tmp_path / "missing", "knee2d")


def test_missing_key_names_file_and_key(synthetic, tmp_path):
    d = _copy_split(synthetic, "knee2d", tmp_path)
    bad = sorted(d.glob("*.h5"))[0]
    with h5py.File(bad, "r+") as f:
        del f["kspace"]
    with pytest.raises(DataError, match=rf"{bad.name}.*\[kspace\].*missing key"):
        ReconDataset(d, "knee2d")


def test_wrong_dtype_and_shape(synthetic, tmp_path):
    d = _copy_split(synthetic, "knee2d", tmp_path)
    bad = sorted(d.glob("*.h5"))[0]
    with h5py.File(bad, "r+") as f:
        k = f["kspace"][()]
        del f["kspace"]
        f["kspace"] = np.abs(k)
    with pytest.raises(DataError, match=r"\[kspace\].*complex"):
        ReconDataset(d, "knee2d")
    with h5py.File(bad, "r+") as f:
        del f["kspace"]
        f["kspace"] = k[0]
    with pytest.raises(DataError, match=r"\[kspace\].*4-d"):
        ReconDataset(d, "knee2d")


def test_truncated_file(synthetic, tmp_path):
    d = _copy_split(synthetic, "knee2d", tmp_path)
    bad = sorted(d.glob("*.h5"))[0]
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 3])
    with pytest.raises(DataError, match=rf"{bad.name}.*truncated or corrupt"):
        ReconDataset(d, "knee2d")


def test_nan_kspace_is_reported(synthetic, tmp_path):
    d = _copy_split(synthetic, "knee2d", tmp_path)
    bad = sorted(d.glob("*.h5"))[0]
    with h5py.File(bad, "r+") as f:
        k = f["kspace"][()]
        k[0, 0, 3, 3] = np.nan
        f["kspace"][...] = k
    with pytest.raises(DataError, match=rf"{bad.name} \[kspace\]: slice 0: 1 NaN/Inf"):
        dataset(d.parent, "knee2d", split="split")  # found when the dataset is built, before any work
    ds = dataset(d.parent, "knee2d", split="split", scan_values=False)  # the value scan skipped: found on read
    with pytest.raises(DataError, match=rf"{bad.name}.*NaN or Inf"):
        ds[0]


def test_missing_maps_explains_how_to_compute(synthetic, tmp_path):
    d = _copy_split(synthetic, "knee2d", tmp_path)
    for p in d.glob("*.h5"):
        with h5py.File(p, "r+") as f:
            del f["espirit_maps"]
    with pytest.raises(DataError, match="run `mrirecon maps --data DIR`"):
        ReconDataset(d, "knee2d", require_maps=True)


def test_cache_maps_writes_only_the_cache_atomically_and_skips_done_files(synthetic, tmp_path, monkeypatch):
    d = _copy_split(synthetic, "knee2d", tmp_path)
    files = sorted(d.glob("*.h5"))
    before = {p.name: p.read_bytes() for p in files}
    cache = tmp_path / "cache"
    import mrirecon.data.coil_maps as cm

    def boom(*a, **k):
        raise RuntimeError("interrupted")

    monkeypatch.setattr(cm, "compute_file_maps", boom)
    with pytest.raises(RuntimeError):
        cache_maps(d, kind="knee2d", calib_width=12, cache=cache, verbose=False)
    assert not cache.exists() or not any(cache.iterdir())  # nothing half-written
    monkeypatch.undo()
    status = cache_maps(d, kind="knee2d", calib_width=12, cache=cache, verbose=False)
    assert all("cached in" in line for line in status) and len(list(cache.glob("*.h5"))) == len(files)
    assert all("skipped" in line for line in cache_maps(d, kind="knee2d", calib_width=12, cache=cache,
                                                        verbose=False))
    assert {p.name: p.read_bytes() for p in files} == before  # the data files were only read
    mc = MapCache(cache, EspiritSettings(calib_width=12))
    entry = mc.lookup(files[0], "knee2d")
    assert read_entry(entry, slice(None)).shape == (2, 1, 4, 64, 32)
    with h5py.File(entry) as f:  # the default form: ESPIRiT's coarse grid, its settings recorded
        assert f["coarse_vectors"].attrs["calib_width"] == 12 and "espirit_maps" not in f


def test_cache_key_follows_file_content_and_espirit_settings(synthetic, tmp_path):
    d = _copy_split(synthetic, "knee2d", tmp_path)
    path = sorted(d.glob("*.h5"))[0]
    a = MapCache(tmp_path, EspiritSettings(calib_width=12))
    key = a.key(path, "knee2d")
    assert MapCache(tmp_path, EspiritSettings(calib_width=12)).key(path, "knee2d") == key
    assert MapCache(tmp_path, EspiritSettings(calib_width=16)).key(path, "knee2d") != key
    assert MapCache(tmp_path, EspiritSettings(calib_width=12, num_maps=2)).key(path, "knee2d") != key
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # touched, same content: same maps
    assert a.key(path, "knee2d") == key  # a replaced file's content: tests/test_coil_maps.py


def test_missing_maps_are_built_in_the_cache_and_equal_embedded_maps(synthetic, tmp_path):
    d = _copy_split(synthetic, "knee2d", tmp_path)
    embedded = ReconDataset(d, "knee2d", require_maps=True).read(1).maps
    for p in d.glob("*.h5"):
        with h5py.File(p, "r+") as f:
            del f["espirit_maps"]
    ds = ReconDataset(d, "knee2d", require_maps=True, progress=False,
                      maps_cache=MapCache(tmp_path / "cache", EspiritSettings(calib_width=12)))
    assert all(fi.maps_path.parent == tmp_path / "cache" for fi in ds.files)
    np.testing.assert_array_equal(ds.read(1).maps, embedded)


def test_concurrent_builders_of_the_same_maps_leave_one_complete_file(synthetic, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    path = sorted((synthetic("knee2d") / "train").glob("*.h5"))[0]
    mc = MapCache(tmp_path, EspiritSettings(calib_width=12))
    with ThreadPoolExecutor(2) as ex:
        out = list(ex.map(lambda _: mc.build(path, "knee2d"), range(2)))
    assert out[0] == out[1] and sorted(p.name for p in tmp_path.iterdir()) == [out[0].name]
    assert read_entry(out[0], slice(None)).shape[:2] == (2, 1)


def _no_writes_under(folder, monkeypatch):
    """Fail on any h5py open of a file under `folder` in a mode other than read."""
    real = h5py.File

    def guarded(name, mode="r", *a, **k):
        if isinstance(name, (str, os.PathLike)) and str(Path(name).resolve()).startswith(str(folder.resolve())):
            assert mode == "r", f"{name} opened with mode {mode!r}"
        return real(name, mode, *a, **k)

    monkeypatch.setattr(h5py, "File", guarded)


def test_read_only_data_folder_trains_and_evaluates_and_stays_byte_identical(synthetic, tmp_path, monkeypatch):
    from mrirecon.config import load_config
    from mrirecon.evaluation.runner import evaluate
    from mrirecon.training.run import train

    root = tmp_path / "data"
    for split in ("train", "val", "test"):
        shutil.copytree(synthetic("knee2d") / split, root / split)
    for p in root.rglob("*.h5"):
        with h5py.File(p, "r+") as f:
            del f["espirit_maps"]  # raw files, as acquired
    before = {p: p.read_bytes() for p in root.rglob("*.h5")}
    for p in [*root.rglob("*.h5"), *root.rglob("*")][::-1]:
        p.chmod(0o555 if p.is_dir() else 0o444)
    root.chmod(0o555)
    _no_writes_under(root, monkeypatch)
    try:
        cfg = load_config("configs/knee2d.yaml", [
            f"data.root={root}", f"data.maps_cache={tmp_path / 'cache'}", "data.espirit={calib_width: 12}",
            f"output_dir={tmp_path / 'runs'}", "train.max_epochs=1", "model.num_unrolls=2", "model.prox.channels=8",
            "data.mask={name: random, center_fractions: [0.125], accelerations: [4]}"])
        run = train(cfg, enable_progress_bar=False)
        assert run.last_checkpoint and np.isfinite(run.best_score)
        result = evaluate(cfg, root / "test", tmp_path / "out", method="zero_filled", num_figures=0, progress=False)
        assert result["num_volumes"] == len(list((root / "test").glob("*.h5")))
    finally:
        for p in [root, *root.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)
    assert {p: p.read_bytes() for p in root.rglob("*.h5")} == before


def test_online_maps_adapt_to_fastmri_brain_4_percent_calibration(tmp_path):
    """4% of 128 columns = 5 calibration lines: the kernel shrinks to fit, maps agree with full-data maps."""
    from mrirecon.synthetic.generator import generate

    generate("brain2d", tmp_path, volumes=1, seed=1, coils=4, slices=1, size=(24, 128))
    brain4 = {"name": "random", "center_fractions": [0.04], "accelerations": [4]}
    full = dataset(tmp_path, "brain2d", mask=brain4, target="sense", require_maps=True,
                   maps_cache=MapCache(tmp_path / "cache"))[0]
    online = dataset(tmp_path, "brain2d", maps="online", mask=brain4, target="sense")[0]
    assert acs_width(online.mask) == 5
    a, b = full.target.abs() * full.scale, online.target.abs() * online.scale
    inside = a > 0.2 * a.max()
    assert float((a - b)[inside].norm() / a[inside].norm()) < 0.1


def test_online_maps_refuse_a_two_line_calibration_region_naming_the_file(synthetic, tmp_path):
    d = _copy_split(synthetic, "knee2d", tmp_path)
    with h5py.File(sorted(d.glob("*.h5"))[0], "r+") as f:
        mask = np.zeros(32, np.float32)
        mask[15:17] = 1
        mask[::3] = 1
        f["mask"] = mask
    ds = dataset(d.parent, "knee2d", split="split", maps="online")
    with pytest.raises(DataError, match=r"calibration region is 2 line\(s\) wide"):
        ds[0]


def test_rss_target_is_the_files_reconstruction_rss(synthetic):
    """data.target=rss: the target's RSS over maps is fastMRI's reconstruction_rss (noise floor included)."""
    ds = dataset(synthetic("knee2d"), "knee2d", target="rss")
    s = ds[1]
    with h5py.File(ds.files[0].path) as f:
        rss = f["reconstruction_rss"][1]
    mag = (torch.sqrt((s.target.abs() ** 2).sum(0)) * s.scale).numpy()
    np.testing.assert_allclose(mag, rss, rtol=0, atol=2e-6 * rss.max())
    outside = s.maps.abs().sum((0, 1)) == 0
    assert outside.any() and (mag[outside.numpy()] > 0).all()  # the background is RSS noise, not zero


def test_sense_target_is_the_sense_image_of_the_full_kspace(synthetic):
    ds = dataset(synthetic("knee2d"), "knee2d", target="sense")
    s = ds[0]
    raw = ds.read(0)
    from mrirecon.data.transforms import crop_readout

    full, maps = crop_readout(raw.kspace, raw.readout_crop, raw.maps)
    want = SenseOp(torch.from_numpy(maps)[None], torch.ones(1), 2).H(torch.from_numpy(full)[None])[0]
    torch.testing.assert_close(s.target * s.scale, want, rtol=0, atol=1e-6 * float(want.abs().max()))


def test_acquisition_filter(synthetic):
    root = synthetic("brain2d") / "train"
    ds = ReconDataset(root, "brain2d")
    acq = ds.files[0].acquisition
    kept = ReconDataset(root, "brain2d", acquisitions=[acq])
    assert kept.files and all(fi.acquisition == acq for fi in kept.files)
    with pytest.raises(DataError, match="no files with acquisition"):
        ReconDataset(root, "brain2d", acquisitions=["NOPE"])


def test_stored_mask_without_center_lines_is_reported(synthetic, tmp_path):
    d = _copy_split(synthetic, "knee2d", tmp_path)
    bad = sorted(d.glob("*.h5"))[0]
    with h5py.File(bad, "r+") as f:
        mask = np.zeros(32, np.float32)
        mask[::4] = 1  # equispaced lines but no centre line (index W // 2 = 16)
        mask[16] = 0
        f["mask"] = mask
    with pytest.raises(DataError, match=rf"{bad.name} \[mask\]: mask does not sample the k-space centre \(column 16"):
        dataset(d.parent, "knee2d", split="split")  # when the dataset is built, before any item is read

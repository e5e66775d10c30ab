"""The coil-map cache (mrirecon.data.coil_maps): keyed by the file's calibration data, damaged entries rebuilt,
unwritable folders named, parallel and batched builds equal to one plain build."""
import os
import re

import h5py
import numpy as np
import pytest
import torch

from mrirecon.data import coil_maps as cm
from mrirecon.data.coil_maps import EspiritSettings, MapCache, cache_maps
from mrirecon.data.errors import DataError
from mrirecon.data.maps_entry import read_entry
from mrirecon.physics.espirit import espirit, time_average
from mrirecon.synthetic.generator import generate

SETTINGS = EspiritSettings(calib_width=12)


@pytest.fixture
def files(tmp_path):
    """Three tiny knee2d files without maps (4 coils, 2 slices, k-space 64 x 32)."""
    written = generate("knee2d", tmp_path / "data", volumes=3, seed=0, coils=4, slices=2, size=(32, 32))
    return sorted(p for split in written.values() for p in split)


def read_maps(entry):
    return read_entry(entry, slice(None))  # the maps, whichever form the entry holds


def test_a_file_replaced_with_the_same_path_size_and_mtime_gets_new_maps(files, tmp_path):
    """`cp -p`, `rsync -a` and `tar x` keep path, size and modification time: only the content tells."""
    path, other = files[0], files[1]
    mc = MapCache(tmp_path / "cache", SETTINGS)
    old_entry = mc.build(path, "knee2d")
    before = path.stat()
    with h5py.File(other) as f:
        replacement = f["kspace"][()]
    with h5py.File(path, "r+") as f:
        f["kspace"][...] = replacement
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert mc.lookup(path, "knee2d") is None  # the old maps are not this content's
    new_entry = mc.ensure([path], "knee2d", progress=False)[path]
    assert new_entry != old_entry
    expected = espirit(torch.from_numpy(replacement), 12, 6).maps.numpy()
    np.testing.assert_allclose(read_maps(new_entry), expected, atol=1e-6)


def test_the_key_is_the_calibration_data_not_the_path(files, tmp_path):
    path = files[0]
    mc = MapCache(tmp_path / "cache", SETTINGS)
    key = mc.key(path, "knee2d")
    copy = tmp_path / "elsewhere" / "renamed.h5"
    copy.parent.mkdir()
    copy.write_bytes(path.read_bytes())
    assert mc.key(copy, "knee2d") == key  # a moved or copied file reuses its maps
    with h5py.File(copy, "r+") as f:
        f["kspace"][0, 0, 0, 0] += 1.0  # a corner sample: outside the 12 x 12 calibration region
    assert mc.key(copy, "knee2d") == key
    with h5py.File(copy, "r+") as f:
        f["kspace"][1, 2, 32, 16] += 1e-3  # the k-space centre of slice 1, coil 2
    assert mc.key(copy, "knee2d") != key
    assert MapCache(tmp_path / "cache", EspiritSettings(calib_width=12, coarse_grid=0)).key(path, "knee2d") != key


def test_a_truncated_cache_entry_is_rebuilt_with_a_warning_naming_it(files, tmp_path):
    mc = MapCache(tmp_path / "cache", SETTINGS)
    entry = mc.build(files[0], "knee2d")
    good = read_maps(entry)
    data = entry.read_bytes()
    entry.write_bytes(data[: len(data) // 3])
    with pytest.warns(UserWarning, match=re.escape(str(entry)) + ": damaged coil-map cache entry"):
        rebuilt = mc.ensure([files[0]], "knee2d", progress=False)[files[0]]
    assert rebuilt == entry
    np.testing.assert_array_equal(read_maps(entry), good)


def test_an_entry_holding_other_maps_is_rebuilt_with_a_warning(files, tmp_path):
    mc = MapCache(tmp_path / "cache", SETTINGS)
    entry = mc.build(files[0], "knee2d")
    good = read_maps(entry)
    with h5py.File(entry, "w") as f:  # a complete HDF5 file, but one map set of 16 x 16: not these maps
        f.create_dataset("espirit_maps", data=np.ones((2, 1, 4, 16, 16), np.complex64))
    with pytest.warns(UserWarning, match=re.escape(str(entry)) + r": damaged .*\(2, 1, 4, 64, 32\)"):
        assert mc.lookup(files[0], "knee2d") is None
    with pytest.warns(UserWarning):
        mc.ensure([files[0]], "knee2d", progress=False)
    np.testing.assert_array_equal(read_maps(entry), good)


def test_a_cache_folder_that_cannot_be_created_is_a_data_error_naming_it(files, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    folder = blocker / "maps"  # below a regular file: no one can create it, root included
    with pytest.raises(DataError, match=re.escape(str(folder)) + ": cannot write the coil-map cache"):
        MapCache(folder, SETTINGS).build(files[0], "knee2d")
    with pytest.raises(DataError, match=re.escape(str(folder)) + ": cannot write the coil-map cache"):
        cache_maps(files[0].parent.parent, "knee2d", calib_width=12, workers=2, cache=folder, verbose=False,
                   device="cpu")  # raised in a worker process, named the same in this one


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_cache_folder_is_a_data_error_naming_it(files, tmp_path):
    folder = tmp_path / "cache"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(DataError, match=re.escape(str(folder)) + ": cannot write the coil-map cache"):
            MapCache(folder, SETTINGS).build(files[0], "knee2d")
    finally:
        folder.chmod(0o755)


def test_parallel_workers_build_the_maps_a_single_process_builds(files, tmp_path):
    one = cache_maps(files[0].parent.parent, "knee2d", calib_width=12, workers=1, cache=tmp_path / "one",
                     verbose=False, device="cpu")
    two = cache_maps(files[0].parent.parent, "knee2d", calib_width=12, workers=2, cache=tmp_path / "two",
                     verbose=False, device="cpu")
    assert len(one) == len(two) == 3 and all("cached in" in line for line in one + two)
    for p in files:
        a = read_maps(MapCache(tmp_path / "one", SETTINGS).lookup(p, "knee2d"))
        b = read_maps(MapCache(tmp_path / "two", SETTINGS).lookup(p, "knee2d"))
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_maps_written_a_slice_at_a_time_equal_one_batch(files, tmp_path, monkeypatch):
    whole = read_maps(MapCache(tmp_path / "whole", SETTINGS, "cpu").build(files[0], "knee2d"))
    monkeypatch.setattr(cm, "BATCH_BYTES", {"cpu": 1, "cuda": 1})  # one slice per batch
    sliced = read_maps(MapCache(tmp_path / "sliced", SETTINGS, "cpu").build(files[0], "knee2d"))
    assert whole.shape == (2, 1, 4, 64, 32)
    np.testing.assert_allclose(sliced, whole, atol=1e-6)


def test_cine_maps_are_shared_by_the_frames_and_come_from_their_average(tmp_path):
    path = generate("cine", tmp_path, volumes=1, seed=0, coils=4, slices=2, frames=6, size=(32, 32))["train"][0]
    entry = MapCache(tmp_path / "cache", SETTINGS, "cpu").build(path, "cine")
    with h5py.File(path) as f:
        kspace = torch.from_numpy(f["kspace"][()])  # (S, T, C, H, W)
    expected = espirit(time_average(kspace, dim=1), 12, 6).maps.numpy()
    assert expected.shape == (2, 1, 4, 32, 32)
    np.testing.assert_allclose(read_maps(entry), expected, atol=1e-6)


def test_knee3d_maps_are_one_set_per_ky_kz_slice(tmp_path):
    path = generate("knee3d", tmp_path, volumes=1, seed=0, coils=4, size=(4, 32, 24))["train"][0]
    entry = MapCache(tmp_path / "cache", SETTINGS, "cpu").build(path, "knee3d")
    with h5py.File(path) as f:
        hybrid = torch.from_numpy(f["kspace"][()])  # (X, C, Ky, Kz)
    np.testing.assert_allclose(read_maps(entry), espirit(hybrid, 12, 6).maps.numpy(), atol=1e-6)


def test_a_pre_undersampled_file_uses_its_centre_lines_by_the_full_readout(tmp_path):
    written = generate("knee2d", tmp_path, volumes=3, seed=0, coils=4, slices=1, size=(32, 32), undersampled_test=4)
    path = written["test"][0]
    with h5py.File(path) as f:
        kspace, mask = f["kspace"][()], f["mask"][()].astype(bool)
    (rows, width), kernel = cm.calibration_region(mask[None], kspace.shape[-2:], 12, 6)
    assert rows == 64 and width >= 3 and kernel == (6, min(6, width - 2))
    entry = MapCache(tmp_path / "cache", SETTINGS, "cpu").build(path, "knee2d")
    np.testing.assert_allclose(read_maps(entry), espirit(torch.from_numpy(kspace), (64, width), kernel).maps.numpy(),
                               atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
def test_gpu_builds_the_maps_the_cpu_builds(files, tmp_path):
    cpu = read_maps(MapCache(tmp_path / "cpu", SETTINGS, "cpu").build(files[0], "knee2d"))
    gpu = read_maps(MapCache(tmp_path / "gpu", SETTINGS, "cuda").build(files[0], "knee2d"))
    support = (np.abs(cpu).sum(2) > 0) & (np.abs(gpu).sum(2) > 0)
    gap = 1 - np.abs((cpu.conj() * gpu).sum(2))
    assert support.mean() > 0.3 and gap[support].max() < 1e-4


def test_online_maps_of_a_batch_come_from_the_lines_every_sample_acquired():
    from mrirecon.data.coil_maps import batch_maps

    kspace = torch.stack([torch.from_numpy(make_kspace(seed)) for seed in (0, 1)])  # (2, 4, 64, 32)
    mask = torch.zeros(2, 1, 1, 32)
    mask[..., 12:20] = 1          # 8 centre lines in both samples ...
    mask[0, ..., 20] = 1          # ... and a 9th in one only: not part of the common calibration region
    mask[..., 3::7] = 1           # outer lines, none next to the centre block
    maps = batch_maps(kspace * mask, mask, {"kernel_width": 5})
    assert maps.shape == (2, 1, 4, 64, 32)
    for b in range(2):
        alone = espirit(kspace[b], (64, 8), (5, 5)).maps  # the full readout by the 8 common lines
        torch.testing.assert_close(maps[b], alone, rtol=0, atol=1e-6)


def test_online_cine_maps_are_shared_by_the_frames():
    from mrirecon.data.coil_maps import batch_maps

    data = generate_cine_kspace()  # (T, C, H, W)
    kspace = data.movedim(0, 1)[None]  # (1, C, T, H, W)
    mask = torch.zeros(1, 1, 6, 1, 32)
    mask[..., 12:20] = 1
    maps = batch_maps(kspace * mask, mask, {"kernel_width": 5})
    assert maps.shape == (1, 1, 4, 1, 32, 32)
    expected = espirit(data.mean(0), (32, 8), (5, 5)).maps
    torch.testing.assert_close(maps[0, :, :, 0], expected, rtol=0, atol=1e-5)


def make_kspace(seed: int) -> np.ndarray:
    from mrirecon.synthetic.generator import make_volume

    return make_volume("knee2d", 0, seed=seed, coils=4, slices=1, size=(32, 32))[0]["kspace"][0]


def generate_cine_kspace() -> torch.Tensor:
    from mrirecon.synthetic.generator import make_volume

    return torch.from_numpy(make_volume("cine", 0, seed=0, coils=4, slices=1, frames=6, size=(32, 32))[0]["kspace"][0])


def test_known_maps_stored_for_a_file_are_found_and_not_rebuilt(files, tmp_path, monkeypatch):
    mc = MapCache(tmp_path / "cache", SETTINGS, "cpu")
    known = np.full((2, 1, 4, 64, 32), 0.5, np.complex64)  # e.g. the generator's own coil sensitivities
    entry = mc.store(files[0], "knee2d", known)

    def no_espirit(*a, **k):
        raise AssertionError("maps recomputed")

    monkeypatch.setattr(cm, "compute_file_maps", no_espirit)
    assert mc.ensure([files[0]], "knee2d", progress=False)[files[0]] == entry
    np.testing.assert_array_equal(read_maps(entry), known)
    with pytest.raises(ValueError, match=r"maps of shape \(2, 1, 4, 64, 16\), expected \(2, 1, 4, 64, 32\)"):
        mc.store(files[0], "knee2d", known[..., :16])


@pytest.fixture
def big_file(tmp_path):
    """One brain2d slice whose k-space (160 x 80) is larger than ESPIRiT's coarse grid (48 x 48 points)."""
    written = generate("brain2d", tmp_path / "big", volumes=1, seed=3, coils=4, slices=1, size=(80, 80))
    return next(p for split in written.values() for p in split)


def test_coarse_and_full_entries_hold_the_same_maps_and_either_is_read_whatever_the_setting(big_file, tmp_path):
    """The default entry keeps ESPIRiT's coarse grid (far smaller on disk) and reads back the maps a full entry
    stores; both forms share one key, so an entry of either form is used, not rebuilt, by a cache set to write
    the other."""
    kind = "brain2d"
    full = MapCache(tmp_path / "full", SETTINGS, store="full").build(big_file, kind)
    coarse = MapCache(tmp_path / "coarse", SETTINGS).build(big_file, kind)
    with h5py.File(full) as f, h5py.File(coarse) as g:
        assert "espirit_maps" in f and "coarse_vectors" in g and "espirit_maps" not in g
        assert f["espirit_maps"].shape[-2:] == (160, 80) and g["coarse_vectors"].shape[-2:] == (48, 48)
    assert coarse.stat().st_size < full.stat().st_size / 4  # 160 x 80 pixels vs 48 x 48 points: 5.6x less data
    np.testing.assert_allclose(read_maps(coarse), read_maps(full), rtol=0, atol=1e-6)
    assert coarse.name == full.name  # one key
    assert MapCache(tmp_path / "full", SETTINGS).lookup(big_file, kind) == full
    assert MapCache(tmp_path / "coarse", SETTINGS, store="full").lookup(big_file, kind) == coarse


def test_maps_at_every_pixel_are_stored_full_and_a_bad_store_is_refused(big_file, tmp_path):
    every_pixel = EspiritSettings(calib_width=12, coarse_grid=0)
    entry = MapCache(tmp_path, every_pixel).build(big_file, "brain2d")  # no coarse grid to keep
    with h5py.File(entry) as f:
        assert "espirit_maps" in f
    with pytest.raises(ValueError, match="maps store 'tiny': one of \\['coarse', 'full'\\]"):
        MapCache(tmp_path, SETTINGS, store="tiny")


@pytest.mark.parametrize("store,dataset", [("coarse", "coarse_vectors"), ("full", "espirit_maps")])
def test_the_maps_command_writes_the_entry_form_asked_for_and_a_brain2d_run_finds_it(big_file, tmp_path, store,
                                                                                     dataset):
    """`mrirecon maps` detects the layout (a brain file reads as fastMRI's, like a knee file); the key is the
    layout's, so the run that names data.kind=brain2d uses the entry instead of building its own."""
    from mrirecon.cli import maps as maps_cli

    cache = tmp_path / f"cache-{store}"
    args = ["--data", str(big_file.parent), "--cache", str(cache), "--calib-width", "12", "--workers", "1"]
    assert maps_cli.main([*args, *(["--store", store] if store == "full" else [])]) == 0  # coarse: the default
    (entry,) = cache.glob("*.h5")
    with h5py.File(entry) as f:
        assert dataset in f and len(f) == (2 if store == "coarse" else 1)
    assert entry == MapCache(cache, SETTINGS).lookup(big_file, "brain2d")

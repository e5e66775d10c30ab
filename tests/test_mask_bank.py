"""Poisson-disc mask banks: training masks from B precomputed masks, stored once in a cache folder."""
import multiprocessing

import numpy as np
import pytest
import sigpy.mri
import torch

from mrirecon.config import ConfigError, load_config
from mrirecon.data import masks
from mrirecon.data.errors import DataError
from mrirecon.data.masks import poisson as mask_bank
from mrirecon.data.masks.poisson import BankSettings, PoissonMask2D, _poisson_mask, bank_path, load_bank
from mrirecon.data.readers.base import RawSlice
from mrirecon.data.transforms import ReconTransform

SHAPE = (2, 16, 12)  # (C, Ky, Kz)


@pytest.fixture(autouse=True)
def fresh_memory():
    """Every test starts without banks in this process's memory (they would hide the cache folder)."""
    mask_bank._LOADED.clear()
    yield
    mask_bank._LOADED.clear()


def poisson(tmp_path, bank=8, **kw):
    return PoissonMask2D([4], (4, 4), bank=bank, bank_cache=str(tmp_path / "masks"), **kw)


def exact(mf, seed, shape=SHAPE):
    """The mask `_poisson_mask` computes for `seed` with `mf`'s settings (no bank)."""
    grid, _ = _poisson_mask(shape[-2], shape[-1], 4.0, mf.calib_size, seed, mf.crop_corner, mf.max_attempts, mf.tol,
                            mf.max_rel_error, mf.max_reseeds)
    return torch.from_numpy(grid.astype(np.float32))[None]


def entry_of(seed, bank, accelerations=1):
    rs = np.random.RandomState(seed)
    rs.randint(accelerations)  # the acceleration is drawn first
    return rs.randint(bank)


def test_bank_entry_j_is_the_poisson_mask_of_seed_j_and_sigpys(tmp_path):
    shape, calib = (32, 32), (8, 8)  # sigpy.mri.poisson returns for seeds 0..3 here (test_subsample)
    mf = PoissonMask2D([4], calib, bank=4, bank_cache=str(tmp_path))
    bank = load_bank(mf.bank_settings(shape, 4.0), mf.bank_cache, progress=False)
    assert bank.masks.shape == (4, *shape) and bank.masks.dtype == bool
    for j in range(4):
        np.testing.assert_array_equal(bank.masks[j], exact(mf, j, shape)[0].numpy() > 0)
        np.testing.assert_array_equal(bank.masks[j], sigpy.mri.poisson(shape, 4, calib=calib, seed=j) != 0)
        assert bank.accelerations[j] == shape[0] * shape[1] / bank.masks[j].sum()


def test_training_draw_is_the_bank_entry_its_seed_picks(tmp_path):
    mf = poisson(tmp_path)
    for seed in (0, 7, 123456789):
        m = mf(SHAPE, seed=seed, training=True)
        assert torch.equal(m.mask, exact(mf, entry_of(seed, 8)))
        assert m.mask.shape == (1, 16, 12) and m.nominal == 4.0 and m.calib_size == (4, 4)
        assert m.acceleration == 16 * 12 / m.mask.sum().item()
        assert torch.equal(mf(SHAPE, seed=seed, training=True).mask, m.mask)  # same seed, same mask


def test_training_draws_with_two_accelerations_use_one_bank_each(tmp_path):
    mf = PoissonMask2D([4, 6], (4, 4), bank=4, bank_cache=str(tmp_path))
    nominal = {mf(SHAPE, seed=s, training=True).nominal for s in range(16)}
    assert nominal == {4.0, 6.0}
    assert [len(list(tmp_path.glob(f"poisson-16x12-R{r}-*.npz"))) for r in (4, 6)] == [1, 1]


def test_different_seeds_cover_the_bank(tmp_path):
    mf = poisson(tmp_path)
    masks = {mf(SHAPE, seed=s, training=True).mask.numpy().tobytes() for s in range(64)}
    assert {entry_of(s, 8) for s in range(64)} == set(range(8))
    assert len(masks) == len({exact(mf, j).numpy().tobytes() for j in range(8)}) >= 7  # distinct entries


def test_bank_file_is_reused_without_recomputing(tmp_path, monkeypatch):
    mf = poisson(tmp_path)
    first = mf(SHAPE, seed=3, training=True).mask
    assert len(list((tmp_path / "masks").glob("*.npz"))) == 1
    mask_bank._LOADED.clear()  # a new process: only the file remains

    def no_kernel(*args):
        raise AssertionError("the bank was computed again")

    monkeypatch.setattr(mask_bank, "_poisson_mask", no_kernel)
    assert torch.equal(mf(SHAPE, seed=3, training=True).mask, first)


def test_a_process_reads_its_bank_file_once(tmp_path):
    mf = poisson(tmp_path)
    first = mf(SHAPE, seed=3, training=True).mask
    for f in (tmp_path / "masks").glob("*.npz"):
        f.unlink()
    assert torch.equal(mf(SHAPE, seed=3, training=True).mask, first)


def test_damaged_bank_file_is_rebuilt_with_a_warning_naming_it(tmp_path):
    mf = poisson(tmp_path)
    first = mf(SHAPE, seed=3, training=True).mask
    (path,) = (tmp_path / "masks").glob("*.npz")
    path.write_bytes(path.read_bytes()[:100])  # truncated
    mask_bank._LOADED.clear()
    with pytest.warns(UserWarning, match=f"{path.name}: damaged mask bank"):
        assert torch.equal(mf(SHAPE, seed=3, training=True).mask, first)
    mask_bank._LOADED.clear()
    assert torch.equal(mf(SHAPE, seed=3, training=True).mask, first)  # the rebuilt file is whole


def test_bank_file_of_other_settings_is_not_used(tmp_path):
    """A file holding another bank under this bank's name (renamed, hash collision) is rebuilt."""
    a, b = poisson(tmp_path, bank=4), poisson(tmp_path, bank=8)
    a(SHAPE, seed=0, training=True)
    b(SHAPE, seed=0, training=True)
    path_a = bank_path(a.bank_settings(SHAPE, 4.0), a.bank_cache)
    path_b = bank_path(b.bank_settings(SHAPE, 4.0), b.bank_cache)
    path_a.write_bytes(path_b.read_bytes())
    mask_bank._LOADED.clear()
    with pytest.warns(UserWarning, match="not those of this bank"):
        assert load_bank(a.bank_settings(SHAPE, 4.0), a.bank_cache, progress=False).masks.shape[0] == 4


def test_unwritable_cache_folder_raises_data_error_naming_it(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    mf = PoissonMask2D([4], (4, 4), bank=4, bank_cache=str(tmp_path / "file" / "masks"))
    with pytest.raises(DataError, match=r"file/masks.*cannot write the mask bank cache.*data\.mask\.bank_cache"):
        mf(SHAPE, seed=0, training=True)


def test_read_only_cache_folder_holding_the_bank_is_read(tmp_path, monkeypatch):
    mf = poisson(tmp_path)
    first = mf(SHAPE, seed=5, training=True).mask
    mask_bank._LOADED.clear()

    def read_only(path):
        raise PermissionError(f"read-only: {path}")

    monkeypatch.setattr(mask_bank, "build_lock", read_only)  # any write would fail
    assert torch.equal(mf(SHAPE, seed=5, training=True).mask, first)


def _load_in_process(folder):
    mf = PoissonMask2D([4], (4, 4), bank=8, bank_cache=folder)
    return mf(SHAPE, seed=9, training=True).mask.numpy()


def test_two_processes_building_one_bank_at_once_get_the_same_whole_file(tmp_path):
    with multiprocessing.get_context("fork").Pool(2) as pool:
        a, b = pool.map(_load_in_process, [str(tmp_path)] * 2)
    np.testing.assert_array_equal(a, b)
    (path,) = tmp_path.glob("*.npz")  # one file, no temporary files left
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == [path.name]
    stored = load_bank(BankSettings(16, 12, 4.0, (4, 4), True, 30, 0.1, 0.1, 8, 8), tmp_path, progress=False)
    np.testing.assert_array_equal(stored.masks[entry_of(9, 8)], a[0] > 0)


def test_bank_zero_draws_every_training_mask_afresh(tmp_path):
    mf = poisson(tmp_path, bank=0)
    for seed in (0, 1000, 123456789):
        assert torch.equal(mf(SHAPE, seed=seed, training=True).mask, exact(mf, seed))
    assert not (tmp_path / "masks").exists()


def test_validation_draws_never_use_the_bank(tmp_path):
    mf = poisson(tmp_path)
    assert torch.equal(mf(SHAPE, seed=1000).mask, exact(mf, 1000))
    assert not (tmp_path / "masks").exists()


def test_recon_transform_draws_training_masks_from_the_bank_only_when_training(tmp_path):
    mf = poisson(tmp_path)
    raw = RawSlice(np.ones(SHAPE, np.complex64), np.ones((1, *SHAPE), np.complex64), None, "f.h5", 2, None, 2)
    train = ReconTransform(mf, deterministic=False, seed=0)(raw, epoch=1)
    seed = masks.seed_from_name("f.h5", 2, 1, 0)
    assert torch.equal(train.mask, exact(mf, entry_of(seed, 8)))
    val = ReconTransform(mf, deterministic=True)(raw)
    assert torch.equal(val.mask, exact(mf, masks.seed_from_name("f.h5")))


def test_bank_file_name_depends_on_every_mask_setting(tmp_path):
    base = BankSettings(16, 12, 4.0, (4, 4), True, 30, 0.1, 0.1, 8, 8)
    changed = [base._replace(**{k: v}) for k, v in [("ny", 18), ("nx", 14), ("acceleration", 5.0), ("calib", (4, 6)),
                                                     ("crop_corner", False), ("max_attempts", 20), ("tol", 0.2),
                                                     ("max_rel_error", 0.2), ("max_reseeds", 2), ("size", 16)]]
    names = {bank_path(s, tmp_path).name for s in [base, *changed]}
    assert len(names) == 1 + len(changed)
    assert bank_path(base, tmp_path).parent == tmp_path


def test_cache_folder_defaults_to_the_environment_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("MRIRECON_MASK_CACHE", str(tmp_path / "env"))
    settings = BankSettings(16, 12, 4.0, (4, 4), True, 30, 0.1, 0.1, 8, 8)
    assert bank_path(settings).parent == tmp_path / "env"
    monkeypatch.delenv("MRIRECON_MASK_CACHE")
    assert bank_path(settings).parent.parts[-3:] == (".cache", "mrirecon", "masks")


@pytest.mark.parametrize("bank", [-1, 2.5, True, "many"])
def test_bad_bank_size_is_refused_by_the_mask_function(bank):
    with pytest.raises(ValueError, match="bank must be an int >= 0"):
        PoissonMask2D([4], (4, 4), bank=bank)


POISSON = "data.mask={name: poisson, accelerations: [4], calib_size: [4, 4]}"


@pytest.mark.parametrize("override,key", [
    ("data.mask.bank=-1", "data.mask.bank"),
    ("data.mask.bank=2.5", "data.mask.bank"),
    ("data.mask.bank=true", "data.mask.bank"),
    ("data.mask.bank_cache=3", "data.mask.bank_cache"),
])
def test_config_refuses_bad_bank_settings_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=rf"^{key.replace('.', '[.]')}: must be"):
        load_config(None, ["data.kind=knee3d", POISSON, override])


@pytest.mark.parametrize("key,value", [("bank", "16"), ("bank_cache", "/tmp/x")])
def test_config_refuses_a_bank_for_other_mask_types(key, value):
    with pytest.raises(ConfigError, match=rf"^data[.]mask[.]{key}: only poisson masks have a mask bank"):
        load_config(None, [f"data.mask.{key}={value}"])  # the default mask type is random


def test_config_passes_bank_settings_to_the_mask_function(tmp_path):
    cfg = load_config(None, ["data.kind=knee3d", POISSON, "data.mask.bank=16", f"data.mask.bank_cache={tmp_path}"])
    mf = masks.build_mask_func(cfg.data.mask)
    assert (mf.bank, mf.bank_cache) == (16, str(tmp_path))
    assert PoissonMask2D([4]).bank == 256  # the default

"""Sampling masks: fastMRI parity for 1D masks, sigpy parity for Poisson-disc, seeds, settings."""
import hashlib

import numpy as np
import pytest
import sigpy.mri
import torch
from fastmri.data import subsample as fastmri_subsample

from mrirecon.data.errors import DataError
from mrirecon.data.masks import (
    EquispacedFractionMask1D, EquispacedMask1D, KytMask, PoissonMask2D, RandomMask1D, apply_mask,
    build_mask_func, check_mask, seed_from_name,
)

PAIRS = [([0.08], [4]), ([0.04], [8]), ([0.08, 0.04], [4, 8]), ([0.1, 0.05, 0.02], [3, 6, 12])]
WIDTHS = [31, 32, 33, 100, 367, 368]
SEEDS = [0, 1, 7, 12345, 2**32 - 1]


# --- fastMRI parity: same seed, same columns ------------------------------------------------------

@pytest.mark.parametrize("ours, theirs", [
    (RandomMask1D, fastmri_subsample.RandomMaskFunc),
    (EquispacedMask1D, fastmri_subsample.EquiSpacedMaskFunc),
    (EquispacedFractionMask1D, fastmri_subsample.EquispacedMaskFractionFunc),
])
@pytest.mark.parametrize("center_fractions, accelerations", PAIRS)
def test_1d_mask_equals_fastmri_for_same_seed(ours, theirs, center_fractions, accelerations):
    for width in WIDTHS:
        for seed in SEEDS:
            m = ours(center_fractions, accelerations)((4, 6, width), seed=seed)
            # fastMRI: shape (..., H, W, 2) with a trailing complex dim, mask shape (1, 1, W, 1)
            ref, num_low = theirs(center_fractions, accelerations)((4, 6, width, 2), seed=seed)
            assert m.mask.shape == (1, 1, width)
            np.testing.assert_array_equal(m.mask.flatten().numpy(), ref.flatten().numpy())
            assert m.num_low_frequencies == num_low


@pytest.mark.parametrize("cls", [RandomMask1D, EquispacedMask1D, EquispacedFractionMask1D])
def test_1d_reported_acceleration_is_counted(cls):
    for seed in range(10):
        m = cls([0.08], [4])((2, 8, 50), seed=seed)
        assert m.acceleration == 50 / m.mask.sum().item()


def test_random_mask_samples_w_over_r_lines_on_average():
    width, accel = 128, 4
    counts = [RandomMask1D([0.08], [accel])((1, 1, width), seed=s).mask.sum().item() for s in range(400)]
    # per mask: 10 centre lines + Binomial(118, 22/118), std ~4.2; the mean of 400 has std ~0.2
    assert abs(np.mean(counts) - width / accel) < 1.0
    assert np.std(counts) > 1.0  # really random per seed


def test_equispaced_undershoots_nominal_acceleration():
    m = EquispacedMask1D([0.08], [4])((1, 1, 128), seed=0)
    assert m.acceleration < 4


def test_1d_mask_broadcasts_over_any_leading_dims():
    assert RandomMask1D([0.08], [4])((3, 5, 7, 64), seed=0).mask.shape == (1, 1, 1, 64)
    assert RandomMask1D([0.08], [4])((3, 64), seed=0).mask.dtype == torch.float32


# --- seeds ----------------------------------------------------------------------------------------

def test_seed_from_name_is_pinned_sha256_of_base_name():
    expected = int.from_bytes(hashlib.sha256(b"file1000001.h5").digest()[:4], "little")
    assert expected == 294144050
    assert seed_from_name("file1000001.h5") == 294144050


def test_seed_from_name_uses_base_name_only():
    assert seed_from_name("/data/knee/val/file1000001.h5") == seed_from_name("file1000001.h5")
    assert seed_from_name("C:\\data\\file1000001.h5") == seed_from_name("file1000001.h5")


def test_seed_from_name_tells_anagrams_apart():
    assert seed_from_name("abc.h5") != seed_from_name("cba.h5")


def test_seed_from_name_mixes_extra_values():
    base = seed_from_name("a.h5")
    assert len({base, seed_from_name("a.h5", 0), seed_from_name("a.h5", 1), seed_from_name("a.h5", 1, 2),
                seed_from_name("a.h5", 12)}) == 5
    assert seed_from_name("a.h5", 3, "epoch") == seed_from_name("/x/a.h5", 3, "epoch")
    assert 0 <= seed_from_name("a.h5", 2**40) < 2**32
    with pytest.raises(TypeError):
        seed_from_name("a.h5", 1.5)


def test_same_seed_same_mask_and_rng_draws_the_seed():
    mf = RandomMask1D([0.08], [4])
    a = mf((1, 1, 64), seed=3).mask
    assert torch.equal(a, mf((1, 1, 64), seed=3).mask)
    assert not torch.equal(a, mf((1, 1, 64), seed=4).mask)
    x = mf((1, 1, 64), rng=np.random.default_rng(5)).mask
    assert torch.equal(x, mf((1, 1, 64), rng=np.random.default_rng(5)).mask)
    with pytest.raises(ValueError, match="seed"):
        mf((1, 1, 64), seed=1, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="seed"):
        mf((1, 1, 64), seed=-1)


# --- Poisson-disc ky-kz ---------------------------------------------------------------------------

@pytest.mark.parametrize("shape, accel, calib", [((32, 32), 4, (8, 8)), ((33, 31), 6, (6, 6))])
def test_poisson_equals_sigpy_for_same_seed(shape, accel, calib):
    for seed in range(3):
        m = PoissonMask2D([accel], calib)((2, *shape), seed=seed)
        ref = sigpy.mri.poisson(shape, accel, calib=calib, seed=seed, dtype=np.float32)
        np.testing.assert_array_equal(m.mask[0].numpy(), ref)


def test_poisson_calibration_box_sampled_and_acceleration_near_target():
    ky, kz, accel, calib = 48, 40, 6, (10, 8)
    for seed in range(3):
        m = PoissonMask2D([accel], calib)((3, ky, kz), seed=seed)
        assert m.mask.shape == (1, ky, kz) and m.calib_size == calib
        rows = slice(ky // 2 - calib[0] // 2, ky // 2 + calib[0] // 2)
        cols = slice(kz // 2 - calib[1] // 2, kz // 2 + calib[1] // 2)
        box = m.mask[0, rows, cols]
        assert box.shape == calib and bool((box == 1).all())
        assert abs(m.acceleration - accel) < 0.1 * accel
        assert m.acceleration == ky * kz / m.mask.sum().item()


def test_poisson_returns_where_sigpy_would_loop_forever():
    # sigpy.mri.poisson((24, 20), 8, calib=(4, 4), seed=1) never returns: its bisection stalls
    m = PoissonMask2D([8], (4, 4))((2, 24, 20), seed=1)
    assert abs(m.acceleration - 8) < 0.8


def test_poisson_seed_whose_start_lies_in_the_calibration_box_is_redrawn_deterministically():
    """sigpy's kernel, started inside the calibration box (never marking its start point), rejects every
    candidate and returns the box alone at every slope; found by a knee3d training run (64x48, 8x, 12x12)."""
    from sigpy.mri.samp import _poisson

    seed, ny, nx, calib = 689178310, 64, 48, (12, 12)
    ones = np.ones((ny, nx))
    assert _poisson(nx, ny, 30, ones, ones, calib, seed).sum() == calib[0] * calib[1]  # the degenerate seed
    m = PoissonMask2D([8], calib)((2, ny, nx), seed=seed)
    assert abs(m.acceleration - 8) < 0.8 and m.acceleration == ny * nx / m.mask.sum().item()
    assert torch.equal(PoissonMask2D([8], calib)((2, ny, nx), seed=seed).mask, m.mask)  # still fixed per seed
    with pytest.raises(ValueError, match="seed 689178310 and 0 seeds derived"):
        PoissonMask2D([8], calib, max_reseeds=0)((2, ny, nx), seed=seed)


def test_poisson_same_ky_kz_mask_for_every_readout_position_of_a_volume():
    m = PoissonMask2D([4], (4, 4))((2, 5, 24, 20), seed=0)
    assert m.mask.shape == (1, 1, 24, 20)
    assert torch.equal(m.mask[0], PoissonMask2D([4], (4, 4))((2, 24, 20), seed=0).mask)


def test_poisson_rejects_calibration_larger_than_the_acceleration_allows():
    with pytest.raises(ValueError, match="calib_size"):
        PoissonMask2D([8], (20, 20))((2, 64, 48), seed=0)  # 400 > 64 * 48 / 8 = 384 locations
    with pytest.raises(ValueError, match="calib_size"):
        PoissonMask2D([4], (20, 20))((2, 16, 64), seed=0)


# --- cine ky-t ------------------------------------------------------------------------------------

def test_kyt_mask_differs_per_frame_and_keeps_centre_lines():
    frames, width = 6, 64
    m = KytMask([0.08], [8])((4, frames, 16, width), seed=0)
    assert m.mask.shape == (1, frames, 1, width)
    lines = m.mask[0, :, 0]
    assert len({tuple(row.tolist()) for row in lines}) == frames
    centre = slice((width - 5 + 1) // 2, (width - 5 + 1) // 2 + 5)  # round(64 * 0.08) = 5 lines
    assert bool((lines[:, centre] == 1).all()) and m.calib_size == (5,)
    check_mask(m.mask)


def test_kyt_mask_has_exact_lines_per_frame():
    m = KytMask([0.08, 0.04], [4, 10])((2, 5, 8, 50), seed=11)
    per_frame = m.mask[0, :, 0].sum(-1)
    assert len(set(per_frame.tolist())) == 1
    assert per_frame[0].item() in (round(50 / 4), round(50 / 10))
    assert m.acceleration == 50 / per_frame[0].item()


def test_kyt_outer_lines_favour_low_frequencies():
    width = 64
    masks = torch.cat([KytMask([0.04], [4])((1, 8, 4, width), seed=s).mask[0, :, 0] for s in range(20)])
    dist = (torch.arange(width) - width // 2).abs()
    near, far = masks[:, (dist > 2) & (dist <= 12)].mean(), masks[:, dist > 20].mean()
    assert near > 2 * far


# --- apply_mask and check_mask -----------------------------------------------------------------------

def test_apply_mask_leaves_no_negative_zero():
    kspace = torch.complex(-torch.ones(2, 4, 8), -torch.ones(2, 4, 8))
    mask = RandomMask1D([0.25], [4])((2, 4, 8), seed=0).mask
    assert bool(torch.signbit(torch.view_as_real(kspace * mask)).any())  # the bare product leaks the sign
    out = apply_mask(kspace, mask)
    assert not bool(torch.signbit(torch.view_as_real(out[..., mask[0, 0] == 0])).any())
    assert torch.equal(out[..., mask[0, 0] == 1], kspace[..., mask[0, 0] == 1])


def test_check_mask_rejects_empty_and_centreless_masks():
    with pytest.raises(DataError, match="all zeros"):
        check_mask(torch.zeros(1, 1, 16), path="file1.h5")
    off_centre = torch.zeros(1, 1, 16)
    off_centre[..., :4] = 1
    with pytest.raises(DataError, match="file2.h5.*centre"):
        check_mask(off_centre, path="file2.h5")
    one_frame_without = torch.zeros(1, 3, 1, 16)
    one_frame_without[:, :2, :, 8] = 1
    with pytest.raises(DataError, match="centre"):
        check_mask(one_frame_without)
    check_mask(RandomMask1D([0.08], [4])((1, 1, 32), seed=0).mask)
    check_mask(np.ones(16, dtype=np.float32))


# --- settings -------------------------------------------------------------------------------------

@pytest.mark.parametrize("cfg, cls", [
    ({"name": "random", "center_fractions": [0.08], "accelerations": [4]}, RandomMask1D),
    ({"name": "equispaced", "center_fractions": [0.08], "accelerations": [4]}, EquispacedMask1D),
    ({"name": "equispaced_fraction", "center_fractions": [0.08], "accelerations": [4]}, EquispacedFractionMask1D),
    ({"name": "poisson", "accelerations": [8], "calib_size": [20, 20]}, PoissonMask2D),
    ({"name": "kyt", "center_fractions": [0.08], "accelerations": [8]}, KytMask),
])
def test_build_mask_func_builds_each_type(cfg, cls):
    mf = build_mask_func(cfg)
    assert type(mf) is cls and mf.kind == cfg["name"]


@pytest.mark.parametrize("cfg, setting", [
    ({"name": "radial", "accelerations": [4]}, "name"),
    ({"center_fractions": [0.08], "accelerations": [4]}, "name"),
    ({"name": "random", "center_fractions": [0.08, 0.04], "accelerations": [4]}, "center_fractions and accelerations"),
    ({"name": "random", "center_fractions": [0.08], "accelerations": [0.5]}, "accelerations"),
    ({"name": "kyt", "center_fractions": [0.0], "accelerations": [4]}, "center_fractions"),
    ({"name": "equispaced", "center_fractions": [1.5], "accelerations": [4]}, "center_fractions"),
    ({"name": "equispaced", "center_fractions": [0.08], "accelerations": [2.5]}, "accelerations"),
    ({"name": "equispaced_fraction", "center_fractions": [0.3], "accelerations": [4]}, "center_fractions"),
    ({"name": "poisson", "accelerations": [1]}, "accelerations"),
    ({"name": "poisson", "accelerations": [8], "calib_size": [20]}, "calib_size"),
    ({"name": "random", "center_fractions": [0.08], "accelerations": [4], "calib_size": 4}, "calib_size"),
    ({"name": "random", "center_fractions": [0.08]}, "accelerations"),
])
def test_bad_settings_raise_value_error_naming_the_setting(cfg, setting):
    with pytest.raises(ValueError, match=setting):
        build_mask_func(cfg)


def test_incompatible_shapes_raise_value_error():
    with pytest.raises(ValueError, match=r"\(C, T, H, W\)"):
        KytMask([0.08], [8])((4, 16, 32), seed=0)
    with pytest.raises(ValueError, match=r"\(C, Ky, Kz\)"):
        PoissonMask2D([4], (4, 4))((4, 32), seed=0)
    with pytest.raises(ValueError, match="phase encode"):
        RandomMask1D([0.08], [4])((32,), seed=0)
    with pytest.raises(ValueError, match="center_fractions"):
        RandomMask1D([0.01], [4])((1, 1, 32), seed=0)  # round(0.32) = 0 centre lines


def test_poisson_masks_are_cached_per_seed_and_shape_and_identical_to_uncached():
    from mrirecon.data.masks.poisson import _poisson_disc, _poisson_mask

    mf = PoissonMask2D([4], calib_size=(8, 8))
    _poisson_mask.cache_clear()
    for seed in (3, 11):
        uncached, accel = _poisson_disc(40, 32, 4.0, (8, 8), seed, True, mf.max_attempts, mf.tol)
        first = mf((4, 40, 32), seed=seed)
        hits = _poisson_mask.cache_info().hits
        again = mf((4, 40, 32), seed=seed)  # every ky-kz slice of a validation file: same seed, same shape
        assert _poisson_mask.cache_info().hits == hits + 1  # served from the cache, not drawn again
        assert torch.equal(first.mask[0], torch.from_numpy(uncached.astype(np.float32)))
        assert torch.equal(first.mask, again.mask) and first.acceleration == again.acceleration == accel
    assert _poisson_mask.cache_info().hits == 2 and _poisson_mask.cache_info().misses == 2
    again.mask.zero_()  # a caller editing its mask does not edit the cache
    assert mf((4, 40, 32), seed=11).mask.sum() > 0

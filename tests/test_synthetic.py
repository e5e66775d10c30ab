"""The synthetic data generator: exact on-disk layouts, fastMRI semantics, determinism, CLI behaviour, motion."""
import h5py
import numpy as np
import pytest
import torch

from mrirecon.synthetic import phantoms
from mrirecon.data.ismrmrd import parse_header
from mrirecon.data.kinds import get_kind
from mrirecon.data.layouts import CINE, FASTMRI, HEADER, KNEE3D, KSPACE, SPLITS, TARGET
from mrirecon.cli.synth import main
from mrirecon.synthetic.generator import (DEFAULTS, KNEE_ACQUISITIONS, _coil_maps, _write_h5, centered_fft2, generate, make_volume,
                                     split_counts)
from mrirecon.physics import fftc, ifftc
from tests.conftest import crandn

TINY = {
    "knee2d": dict(coils=4, slices=2, size=(32, 32)),
    "brain2d": dict(coils=4, slices=2, size=(32, 32)),
    "knee3d": dict(coils=4, size=(6, 32, 24)),
    "cine": dict(coils=4, slices=1, frames=8, size=(32, 32)),
}


def shapes(kind):
    c = TINY[kind]
    if kind in ("knee2d", "brain2d"):
        (rH, rW), S = c["size"], c["slices"]
        return (S, c["coils"], 2 * rH, rW), (S, rH, rW)
    if kind == "knee3d":
        X, Ky, Kz = c["size"]
        return (X, c["coils"], Ky, Kz), (X, Ky, Kz)
    (H, W), S, F = c["size"], c["slices"], c["frames"]
    return (S, F, c["coils"], H, W), (S, F, H, W)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """One tiny 3-volume set per kind, written once for the whole module."""
    root = tmp_path_factory.mktemp("synthetic")
    return {kind: (root / kind, generate(kind, root / kind, volumes=3, seed=1, **TINY[kind])) for kind in TINY}


def read(path):
    with h5py.File(path, "r") as hf:
        return {k: hf[k][()] for k in hf}, dict(hf.attrs)


def rss_of_kspace(kind, kspace, target_hw):
    coil_axis = get_kind(kind).layout.coil_axis
    img = ifftc(torch.from_numpy(kspace), 2).numpy()
    rss = np.sqrt((np.abs(img) ** 2).sum(coil_axis))
    H, W = rss.shape[-2:]
    h, w = target_hw
    return rss[..., (H - h) // 2:(H - h) // 2 + h, (W - w) // 2:(W - w) // 2 + w]


@pytest.mark.parametrize("kind", list(TINY))
def test_files_have_the_layout_of_their_kind(written, kind):
    out, files = written[kind]
    assert {s: len(files[s]) for s in SPLITS} == {"train": 1, "val": 1, "test": 1}
    assert [p.name for s in SPLITS for p in files[s]] == [f"{kind}_000.h5", f"{kind}_001.h5", f"{kind}_002.h5"]
    # nothing else: no temp files left behind by the atomic writes
    assert sorted(p.name for p in out.rglob("*")) == sorted([*SPLITS, *(p.name for s in SPLITS for p in files[s])])
    layout = get_kind(kind).layout
    kshape, tshape = shapes(kind)
    data, attrs = read(files["train"][0])
    assert set(data) == ({KSPACE, TARGET, HEADER} if layout.needs_header else {KSPACE, TARGET})
    assert data[KSPACE].dtype == np.complex64 and data[KSPACE].shape == kshape
    assert data[KSPACE].ndim == layout.kspace_ndim
    assert data[TARGET].dtype == np.float32 and data[TARGET].shape == tshape
    assert attrs["acquisition"] in layout.acquisitions
    assert isinstance(attrs["patient_id"], str) and attrs["patient_id"]
    assert {"max", "norm"} <= set(attrs)
    if kind == "cine":
        assert attrs["acquisition"] == "CINE" and 500 / 8 < attrs["frame_period_ms"] < 1200 / 8


@pytest.mark.parametrize("kind", ["knee2d", "brain2d"])
def test_fastmri_header_describes_the_oversampled_kspace(written, kind):
    data, _ = read(written[kind][1]["val"][0])
    info = parse_header(data[HEADER])
    S, C, H, W = data[KSPACE].shape
    assert info.encoded_size == (H, W, 1) and info.recon_size == (H // 2, W, 1)
    assert (info.padding_left, info.padding_right) == (0, W)


@pytest.mark.parametrize("kind", list(TINY))
def test_target_is_rss_of_the_fully_sampled_coil_images_cropped(written, kind):
    data, attrs = read(written[kind][1]["test"][0])
    target = data[TARGET]
    rss = rss_of_kspace(kind, data[KSPACE], target.shape[-2:])
    np.testing.assert_allclose(rss, target, rtol=1e-4, atol=1e-5 * target.max())
    assert attrs["max"] == pytest.approx(float(target.max()), rel=1e-6)
    assert attrs["norm"] == pytest.approx(float(np.linalg.norm(target)), rel=1e-5)


@pytest.mark.parametrize("kind", ["knee2d", "knee3d", "cine"])
def test_noise_has_the_sigma_recorded_in_the_attrs(kind):
    noisy, attrs = make_volume(kind, 0, seed=5, **TINY[kind], noise=0.02)
    clean, clean_attrs = make_volume(kind, 0, seed=5, **TINY[kind], noise=0.0)
    n = noisy[KSPACE] - clean[KSPACE]
    assert clean_attrs["noise_sigma"] == 0.0 and noisy[TARGET].shape == clean[TARGET].shape
    # the level is drawn per volume log-uniformly in [noise / 2, 2 noise]; sigma = level * max|image|
    assert 0.01 <= attrs["noise_level"] <= 0.04
    assert np.sqrt(np.mean(np.abs(n) ** 2)) == pytest.approx(attrs["noise_sigma"], rel=0.05)
    assert np.mean(n.real ** 2) == pytest.approx(np.mean(n.imag ** 2), rel=0.1)


def test_noise_sigma_matches_the_kspace_corners():
    """Far from the k-space centre the signal is small: at a high noise level the corners measure the floor."""
    data, attrs = make_volume("brain2d", 1, seed=4, coils=4, slices=2, size=(32, 32), noise=0.1)
    k = data[KSPACE]
    corners = np.concatenate([k[..., :8, :6], k[..., :8, -6:], k[..., -8:, :6], k[..., -8:, -6:]], axis=-1)
    assert np.sqrt(np.mean(np.abs(corners) ** 2)) == pytest.approx(attrs["noise_sigma"], rel=0.1)


def test_noise_level_is_drawn_per_volume_around_the_nominal_level():
    levels = [make_volume("cine", i, seed=0, coils=2, slices=1, frames=2, size=(16, 16), noise=0.01)[1]["noise_level"]
              for i in range(12)]
    assert all(0.005 <= lv <= 0.02 for lv in levels)
    assert max(levels) / min(levels) > 1.5  # the volumes of one set differ in SNR
    assert min(levels) < 0.01 < max(levels)  # the nominal level is the median of the draw


def test_coil_noise_differs_between_coils_and_correlates():
    """k-space noise is mixed across coils: unequal per-coil levels, non-zero correlations."""
    noisy, _ = make_volume("knee3d", 0, seed=2, coils=4, size=(12, 32, 24), noise=0.05)
    clean, _ = make_volume("knee3d", 0, seed=2, coils=4, size=(12, 32, 24), noise=0.0)
    n = np.moveaxis(noisy[KSPACE] - clean[KSPACE], 1, 0).reshape(4, -1)
    cov = n @ n.conj().T / n.shape[1]
    std = np.sqrt(np.diag(cov).real)
    corr = np.abs(cov) / np.outer(std, std)
    assert std.max() / std.min() > 1.05
    assert corr[~np.eye(4, dtype=bool)].max() > 0.05


def test_noise_free_image_sits_in_the_middle_half_of_the_readout_fov():
    data, _ = make_volume("knee2d", 0, seed=2, **TINY["knee2d"], noise=0.0)
    img = ifftc(torch.from_numpy(data[KSPACE]), 2).numpy()
    rss = np.sqrt((np.abs(img) ** 2).sum(1))
    H = rss.shape[1]
    outside = np.concatenate([rss[:, : H // 4], rss[:, 3 * H // 4:]], axis=1)
    assert outside.max() < 1e-4 * rss.max()
    np.testing.assert_allclose(rss[:, H // 4: 3 * H // 4], data[TARGET], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", [(2, 3, 10, 8), (5, 7, 9)])
def test_generator_fft_is_the_physics_fft(rng, shape):
    x = crandn(rng, *shape)
    np.testing.assert_allclose(centered_fft2(x), fftc(torch.from_numpy(x), 2).numpy(), atol=1e-5)
    np.testing.assert_allclose(centered_fft2(x, inverse=True), ifftc(torch.from_numpy(x), 2).numpy(), atol=1e-5)
    assert centered_fft2(x).dtype == np.complex64


@pytest.mark.parametrize("shape", [(4, 24, 16), (8, 6, 12, 10)])
def test_coil_maps_are_not_normalised_and_leave_a_smooth_bias_field(shape):
    maps = _coil_maps(np.random.default_rng(0), shape)
    assert maps.dtype == np.complex64 and maps.shape == shape
    bias = np.sqrt((np.abs(maps) ** 2).sum(0))
    assert 0.2 < bias.min() and bias.max() < 4.0  # O(1)
    assert bias.max() / bias.min() > 1.3  # not sum |S|^2 = 1: brighter near the coils
    assert np.abs(maps).std(0).mean() > 0.05  # the coils see different parts of the FOV
    # smooth: neighbouring pixels differ by a few percent
    assert np.abs(np.diff(bias, axis=-1)).max() < 0.25 * bias.mean()


def test_coil_arrays_differ_between_volumes_but_not_between_runs():
    a = _coil_maps(np.random.default_rng(1), (8, 32, 32))
    again = _coil_maps(np.random.default_rng(1), (8, 32, 32))
    b = _coil_maps(np.random.default_rng(2), (8, 32, 32))
    assert a.tobytes() == again.tobytes()
    bias_a, bias_b = np.sqrt((np.abs(a) ** 2).sum(0)), np.sqrt((np.abs(b) ** 2).sum(0))
    assert np.abs(bias_a - bias_b).mean() > 0.05 * bias_a.mean()


def test_rss_target_carries_the_coil_bias_field():
    """With noise 0, the RSS target is |image| x sqrt(sum_c |S_c|^2), not |image|: a smooth non-uniformity."""
    data, _ = make_volume("knee2d", 0, seed=3, coils=8, slices=1, size=(32, 32), noise=0.0)
    rng = np.random.default_rng([3, 0, 0])  # volume 0 of knee2d, seed 3: the phantom is its first draw
    image = np.abs(phantoms.knee2d(rng, 1, (32, 32), str(rng.choice(KNEE_ACQUISITIONS))))[0]
    obj = image > 0.3 * image.max()
    bias = data[TARGET][0][obj] / image[obj]
    assert 0.3 < bias.min() and bias.max() < 3.0
    assert bias.max() / bias.min() > 1.3


def test_same_seed_gives_byte_identical_arrays_and_other_seeds_differ(written, tmp_path):
    again = generate("knee2d", tmp_path / "again", volumes=3, seed=1, **TINY["knee2d"])
    other = generate("knee2d", tmp_path / "other", volumes=3, seed=2, **TINY["knee2d"])
    first = written["knee2d"][1]
    for split in SPLITS:
        a, b, c = read(first[split][0])[0], read(again[split][0])[0], read(other[split][0])[0]
        for key in (KSPACE, TARGET, HEADER):
            assert a[key].tobytes() == b[key].tobytes()
        assert not np.allclose(a[TARGET], c[TARGET], atol=0.05 * a[TARGET].max())


def test_volumes_of_one_set_differ(written):
    files = written["brain2d"][1]
    t0, t1 = read(files["train"][0])[0][TARGET], read(files["val"][0])[0][TARGET]
    assert np.abs(t0 - t1).mean() > 0.05 * t0.max()


def test_fastmri_slicedataset_reads_a_generated_split(written):
    from fastmri.data.mri_data import SliceDataset

    out, files = written["knee2d"]
    ds = SliceDataset(root=out / "train", challenge="multicoil", transform=None)
    assert len(ds) == TINY["knee2d"]["slices"] * len(files["train"])
    data, attrs = read(files["train"][0])
    for i in range(len(ds)):
        kspace, mask, target, meta, fname, dataslice = ds[i]
        assert fname == files["train"][0].name and mask is None
        np.testing.assert_array_equal(kspace, data[KSPACE][dataslice])
        np.testing.assert_array_equal(target, data[TARGET][dataslice])
        assert (meta["padding_left"], meta["padding_right"]) == (0, 32)
        assert tuple(meta["recon_size"]) == (32, 32, 1) and meta["max"] == attrs["max"]
        assert meta["acquisition"] in FASTMRI.acquisitions


def test_split_counts():
    assert split_counts(10) == (7, 2, 1)
    assert split_counts(20) == (14, 3, 3)
    assert split_counts(100) == (70, 15, 15)
    assert split_counts(3) == (1, 1, 1)
    assert split_counts(2) == (1, 1, 0)
    assert split_counts(1) == (1, 0, 0)


def test_cli_writes_summary_and_refuses_a_non_empty_folder(tmp_path, capsys):
    args = ["--kind", "knee2d", "--out", str(tmp_path), "--volumes", "3", "--coils", "2", "--slices", "1",
            "--size", "16", "16", "--noise", "0.01"]
    assert main(args) == 0
    files = {s: sorted((tmp_path / s).glob("*.h5")) for s in SPLITS}
    assert [len(files[s]) for s in SPLITS] == [1, 1, 1]
    out = capsys.readouterr().out
    assert "train:   1 files" in out and "(1, 2, 32, 16)" in out and "MiB" in out
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2
    assert f"{tmp_path / 'train'} is not empty" in capsys.readouterr().err
    before = read(files["train"][0])[0][KSPACE]
    main(args + ["--overwrite", "--seed", "9"])
    assert not np.array_equal(read(files["train"][0])[0][KSPACE], before)
    assert sorted(p.name for p in (tmp_path / "train").iterdir()) == ["knee2d_000.h5"]


def test_cli_help_documents_every_option(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for option in ("--kind", "--out", "--volumes", "--seed", "--coils", "--slices", "--frames", "--size", "--noise",
                   "--overwrite", "knee3d", "cine", "reconstruction_rss"):
        assert option in text


@pytest.mark.parametrize("kwargs,match", [
    (dict(kind="knee2d", size=(32, 32, 8)), "--size"),
    (dict(kind="knee3d", slices=4), "--slices does not apply to kind knee3d"),
    (dict(kind="knee2d", frames=4), "--frames"),
    (dict(kind="cine", coils=0), "--coils"),
    (dict(kind="brain2d", noise=-1.0), "--noise"),
    (dict(kind="spine", ), "unknown kind"),
    (dict(kind="knee2d", anatomy="mni152"), "--anatomy mni152 .* brain2d only, not knee2d"),
    (dict(kind="brain2d", anatomy="atlas"), "--anatomy must be one of model, mni152"),
])
def test_bad_settings_are_named(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        generate(out=tmp_path, volumes=1, **kwargs)


def test_failed_write_leaves_no_file(tmp_path):
    with pytest.raises(TypeError):
        _write_h5(tmp_path / "bad.h5", {"kspace": np.array([object()])}, {})
    assert list(tmp_path.iterdir()) == []


def test_cine_motion_is_periodic_and_confined_to_the_heart():
    period = 8
    img = np.abs(phantoms.cine(np.random.default_rng(0), 1, 2 * period, (48, 48), cycles=2.0))[0]
    np.testing.assert_allclose(img[:period], img[period:], atol=1e-5)  # one heartbeat later: the same image
    corr = lambda a, b: np.corrcoef(a.ravel(), b.ravel())[0, 1]  # noqa: E731
    # end-diastole (frame 0) resembles the last frame of the beat more than mid-cycle (systole)
    assert corr(img[0], img[period - 1]) > corr(img[0], img[period // 2]) + 1e-3
    changes = np.abs(img[:period] - img[0]).max(0) > 0.02
    assert 0.005 < changes.mean() < 0.2  # something moves, and only a small part of the field of view


def test_cine_file_frames_cover_one_heartbeat(written):
    target = read(written["cine"][1]["train"][0])[0][TARGET][0]
    F = target.shape[0]
    corr = lambda a, b: np.corrcoef(a.ravel(), b.ravel())[0, 1]  # noqa: E731
    assert corr(target[0], target[F - 1]) > corr(target[0], target[F // 2])


def test_phantoms_are_complex_with_smooth_phase_and_smooth_across_slices():
    img = phantoms.knee2d(np.random.default_rng(3), 6, (48, 48))
    mag, phase = np.abs(img), np.angle(img)
    assert img.dtype == np.complex64 and 0.5 < mag.max() < 1.5
    obj = mag[:, 1:, :] > 0.2 * mag.max()
    dphi = np.angle(np.exp(1j * (phase[:, 1:, :] - phase[:, :-1, :])))[obj]
    assert np.median(np.abs(dphi)) < 0.15 and np.ptp(phase[mag > 0.2 * mag.max()]) > 0.5
    corr = lambda a, b: np.corrcoef(a.ravel(), b.ravel())[0, 1]  # noqa: E731
    assert corr(mag[2], mag[3]) > 0.8 and corr(mag[2], mag[3]) > corr(mag[0], mag[5])


@pytest.mark.parametrize("fn,args", [(phantoms.knee2d, (2, (16, 16))), (phantoms.brain2d, (2, (16, 16))),
                                      (phantoms.knee3d, ((4, 16, 12),)), (phantoms.cine, (1, 3, (16, 16)))])
def test_phantoms_are_deterministic_for_a_generator_state(fn, args):
    a = fn(np.random.default_rng(7), *args)
    b = fn(np.random.default_rng(7), *args)
    assert a.tobytes() == b.tobytes()


def test_unknown_acquisition_is_rejected():
    with pytest.raises(ValueError, match="AXT9"):
        phantoms.brain2d(np.random.default_rng(0), 1, (16, 16), "AXT9")


def test_defaults_match_the_documented_demo_sizes():
    assert DEFAULTS["knee2d"]["size"] == (64, 64) and DEFAULTS["knee2d"]["slices"] == 8
    assert DEFAULTS["knee3d"]["size"] == (32, 64, 48)
    assert (DEFAULTS["cine"]["slices"], DEFAULTS["cine"]["frames"], DEFAULTS["cine"]["size"]) == (2, 12, (64, 64))
    assert all(d["coils"] == 8 and d["volumes"] == 10 for d in DEFAULTS.values())
    assert KNEE3D.acquisitions == ("3D-FSE",) and CINE.acquisitions == ("CINE",)


def test_undersampled_test_split_is_only_for_fastmri_layouts_and_fastmris_accelerations(tmp_path):
    with pytest.raises(ValueError, match="knee2d and brain2d"):
        generate("knee3d", tmp_path / "a", volumes=3, undersampled_test=4)
    with pytest.raises(ValueError, match="acceleration 6"):
        generate("knee2d", tmp_path / "b", volumes=3, coils=2, slices=1, size=(16, 16), undersampled_test=6)
    assert not (tmp_path / "b").exists()  # refused before any folder or file is written

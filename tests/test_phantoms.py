"""Phantoms: per-volume variation of contrast, and brains drawn from the MNI152 template (nilearn's copy)."""
import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from mrirecon.synthetic import phantoms
from mrirecon.data.layouts import TARGET
from mrirecon.cli.synth import main
from mrirecon.synthetic.generator import make_volume


def test_tissue_intensities_are_jittered_per_volume_within_the_documented_range():
    table = phantoms.BRAIN_TISSUES["T2"]
    a = phantoms.jitter_tissues(np.random.default_rng(0), table)
    b = phantoms.jitter_tissues(np.random.default_rng(1), table)
    assert set(a) == set(table)
    ratios = np.array([a[k] / table[k] for k in table])
    assert (np.abs(ratios - 1) <= phantoms.TISSUE_JITTER).all() and ratios.std() > 0.02
    assert any(abs(a[k] - b[k]) > 0.01 * table[k] for k in table)
    assert a == phantoms.jitter_tissues(np.random.default_rng(0), table)


def template_fractions(affine, shape):
    """GM and WM probabilities of the template, read here with nibabel, at the pixel centres of a stack."""
    folder = phantoms.mni152_folder()
    s, r, c = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    mm = affine @ np.stack([s.ravel(), r.ravel(), c.ravel(), np.ones(s.size)])
    out = []
    for name in ("gm", "wm"):
        img = nib.load(folder / phantoms.MNI152_FILES[name])
        vox = np.linalg.inv(img.affine) @ mm
        out.append(ndimage.map_coordinates(np.asarray(img.dataobj, np.float32) / 255, vox[:3], order=1).reshape(shape))
    return out


def r_squared(image, gm, wm):
    """Fraction of the image's variance inside the brain explained by a x GM + b x WM + c."""
    inside = gm + wm > 0.5
    X = np.stack([gm[inside], wm[inside], np.ones(inside.sum())], 1)
    y = image[inside]
    resid = y - X @ np.linalg.lstsq(X, y, rcond=None)[0]
    return 1 - resid.var() / y.var()


@pytest.mark.parametrize("acquisition", ["AXT1", "AXT2"])
def test_mni152_brain_is_the_template_slab_it_records(acquisition):
    img, affine = phantoms.brain2d_mni152(np.random.default_rng(3), 3, (48, 48), acquisition)
    assert img.dtype == np.complex64 and img.shape == (3, 48, 48) and 0.5 < np.abs(img).max() < 1.5
    gm, wm = template_fractions(affine, img.shape)
    assert 0.8 < np.abs(np.linalg.det(affine[:3, :3])) / (220 / 48) ** 2 / 7.5 < 1.4  # voxel volume, +-10% scale
    assert r_squared(np.abs(img), gm, wm) > 0.6
    moved = affine.copy()
    moved[:3, 3] += (0, 0, 25)  # the template 25 mm higher explains the image far worse
    assert r_squared(np.abs(img), *template_fractions(moved, img.shape)) < 0.3


def test_mni152_slabs_have_brain_like_tissue_fractions():
    _, affine = phantoms.brain2d_mni152(np.random.default_rng(5), 4, (32, 32), "AXFLAIR")
    gm, wm = template_fractions(affine, (4, 32, 32))
    brain = (gm + wm).sum()
    assert 0.3 < gm.sum() / brain < 0.7  # grey and white matter in adult proportions
    assert 0.1 < (gm + wm > 0.5).mean() < 0.7  # the brain fills a good part of the 220 mm field of view


def test_mni152_contrast_follows_the_protocol():
    """T1: white matter brighter than grey; T2: the reverse (a 2-tissue check on the template's pure voxels)."""
    means = {}
    for acq in ("AXT1", "AXT2"):
        img, affine = phantoms.brain2d_mni152(np.random.default_rng(8), 2, (48, 48), acq)
        gm, wm = template_fractions(affine, img.shape)
        means[acq] = np.abs(img)[wm > 0.9].mean() / np.abs(img)[gm > 0.7].mean()
    assert means["AXT1"] > 1.2 and means["AXT2"] < 0.85


def test_mni152_volumes_are_deterministic_and_written_with_their_provenance():
    settings = dict(coils=4, slices=2, size=(32, 32), anatomy="mni152")
    a, attrs = make_volume("brain2d", 0, seed=1, **settings)
    b, _ = make_volume("brain2d", 0, seed=1, **settings)
    c, _ = make_volume("brain2d", 1, seed=1, **settings)
    assert a[TARGET].tobytes() == b[TARGET].tobytes() and not np.allclose(a[TARGET], c[TARGET])
    assert attrs["anatomy"] == "mni152" and attrs["mni152_affine"].shape == (4, 4)
    assert attrs["patient_id"] == "synthetic-brain2d-mni152-seed1-000"
    model, model_attrs = make_volume("brain2d", 0, seed=1, coils=4, slices=2, size=(32, 32))
    assert model_attrs["anatomy"] == "model" and "mni152_affine" not in model_attrs


def test_cli_refuses_mni152_for_knee_naming_the_option(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--kind", "knee2d", "--anatomy", "mni152", "--out", str(tmp_path), "--volumes", "1"])
    assert exit_.value.code == 2
    assert "--anatomy mni152" in capsys.readouterr().err and not any(tmp_path.iterdir())


def _dark_runs(values: np.ndarray, x: np.ndarray, below: float) -> list[tuple[float, float]]:
    """(start, end) in mm of each run of consecutive samples below `below`."""
    dark = np.concatenate([[False], values < below, [False]]).astype(int)
    edges = np.flatnonzero(np.diff(dark))
    return [(float(x[a]), float(x[b - 1])) for a, b in zip(edges[::2], edges[1::2])]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_model_skull_has_an_outer_and_an_inner_table_around_the_diploe(seed):
    """A radial profile through the model head (T2: bright CSF and scalp, mid diploe, dark bone) at 0.1 mm:
    from the brain outwards, CSF, the inner table, the diploe, the outer table, the scalp: two dark bands
    of about the 1.6 mm table thickness, with diploe between them (the inner table was missing once)."""
    pix = 0.1
    x = np.arange(40.0, 95.0, pix, dtype=np.float32)
    P = np.stack([x, np.full_like(x, -5.0), np.full_like(x, 10.0)], -1)
    t = phantoms.BRAIN_TISSUES["T2"]
    profile = phantoms._brain(P, np.random.default_rng(seed), t, pix)
    inside_head = x < x[np.flatnonzero(profile > 0.02)[-1]]
    # bone 0.04 (x 1 +- 0.12), diploe 0.45, scalp 0.70, CSF 1.0: below 0.2 is bone, or air outside the head
    runs = _dark_runs(np.where(inside_head, profile, 1.0), x, below=0.2)
    assert len(runs) == 2, runs
    (inner_start, inner_end), (outer_start, outer_end) = runs
    assert 0.8 < inner_end - inner_start < 2.2 and 0.8 < outer_end - outer_start < 2.2
    diploe = profile[(x > inner_end + 0.5) & (x < outer_start - 0.5)]
    assert diploe.size and np.median(diploe) > 0.7 * t["diploe"]


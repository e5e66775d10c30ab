"""Brains synthesised from the MNI152 template (random diffeomorphism, contrast, bias, blur) and the
real-scan test set: the deformation never folds and inverts, draws stay in their stated ranges, a seed
gives the same volume, files read in fastMRI's SliceDataset."""
import json

import h5py
import numpy as np
import pytest

from mrirecon.data.layouts import KSPACE, SPLITS, TARGET
from mrirecon.synthetic import deformation, phantoms, real_scans
from mrirecon.synthetic.generator import generate, make_volume

TINY = dict(coils=4, slices=2, size=(32, 32))


def _largest_velocity(seed: int) -> np.ndarray:
    """The synth mode's velocity field at the top of every range: the hardest case for folding."""
    rng = np.random.default_rng(seed)
    shape, step, origin = phantoms._SVF_SHAPE, phantoms._SVF_STEP, phantoms._SVF_ORIGIN
    v = (phantoms.SYNTH_COARSE_MAX[1] * deformation.random_field(rng, shape, step, phantoms.SYNTH_COARSE_MM)
         + phantoms.SYNTH_FINE_MAX[1] * deformation.random_field(rng, shape, step, phantoms.SYNTH_FINE_MM)
         + deformation.local_scaling(shape, origin, step, phantoms._VENTRICLE_CENTRE, phantoms._VENTRICLE_RADII,
                                     -np.log(phantoms.SYNTH_VENTRICLES[1])))
    return v * deformation.taper(shape, 3)


@pytest.mark.parametrize("seed", [0, 1])
def test_deformation_at_its_largest_never_folds(seed):
    phi = deformation.exponentiate(_largest_velocity(seed), phantoms._SVF_ORIGIN, phantoms._SVF_STEP, squarings=5)
    det = phi.jacobian_determinant()
    assert det.min() > 0.1 and det.max() < 10
    moved = np.sqrt((phi.displacement ** 2).sum(0))
    assert moved.max() > 8.0  # a real change of shape (mm), not a rigid jitter


def test_deformation_is_inverted_by_the_negative_field():
    v = _largest_velocity(2)
    origin, step = phantoms._SVF_ORIGIN, phantoms._SVF_STEP
    phi, psi = deformation.exponentiate(v, origin, step, 5), deformation.exponentiate(-v, origin, step, 5)
    x = np.random.default_rng(0).uniform(-60, 60, (2000, 3)).astype(np.float32) + np.float32([0, -18, 20])
    moved = np.linalg.norm(phi(x) - x, axis=-1)
    back = np.linalg.norm(psi(phi(x)) - x, axis=-1)
    assert moved.mean() > 2.0 and back.max() < 0.05 * moved.max() + 0.3


def test_deformation_is_the_identity_outside_its_grid_and_smooth_inside():
    phi = deformation.exponentiate(_largest_velocity(3), phantoms._SVF_ORIGIN, phantoms._SVF_STEP, 5)
    far = np.float32([[300.0, 0, 0], [0, -300.0, 0], [0, 0, 400.0]])
    np.testing.assert_array_equal(phi(far), far)
    u = phi.displacement
    # neighbouring nodes (5 mm apart) move by at most a few mm relative to each other: no tearing
    assert max(np.abs(np.diff(u, axis=a)).max() for a in (1, 2, 3)) < 5.0


@pytest.mark.parametrize("scale", [0.7, 1.6])
def test_ventricle_scaling_scales_volume_at_their_centre(scale):
    shape, step, origin = phantoms._SVF_SHAPE, phantoms._SVF_STEP, phantoms._SVF_ORIGIN
    v = deformation.local_scaling(shape, origin, step, phantoms._VENTRICLE_CENTRE, phantoms._VENTRICLE_RADII,
                                  -np.log(scale))
    phi = deformation.exponentiate(v, origin, step, 5)
    centre = np.asarray(phantoms._VENTRICLE_CENTRE, np.float32)
    node = tuple(np.round((centre - origin) / step).astype(int))
    # phi pulls the template: it shrinks the neighbourhood by 1/scale, so the ventricles appear `scale` larger
    assert phi.jacobian_determinant()[node] == pytest.approx(scale ** -3, rel=0.1)  # central differences, 5 mm


def test_random_contrasts_stay_in_range_and_cover_t1_and_t2_orderings():
    draws = [phantoms.synth_intensities(np.random.default_rng(i)) for i in range(300)]
    for t in draws:
        assert all(phantoms.SYNTH_INTENSITY[0] <= t[k] <= phantoms.SYNTH_INTENSITY[1] for k in phantoms.SYNTH_TISSUES)
        assert phantoms.SYNTH_BONE[0] <= t["skull"] <= phantoms.SYNTH_BONE[1]
    t1_like = sum(t["wm"] > t["gm"] > t["csf"] for t in draws)
    t2_like = sum(t["csf"] > t["gm"] > t["wm"] for t in draws)
    pd_like = sum(t["gm"] > t["wm"] and t["gm"] > t["csf"] for t in draws)
    assert min(t1_like, t2_like, pd_like) >= 20  # each ordering ~1/6 of the draws or more


def test_sequence_signals_follow_the_signal_equations():
    t1, t2, pd = 900.0, 80.0, 0.7
    # spin echo: full recovery and no decay is the proton density; TR = T1 ln 2 recovers half
    assert phantoms.sequence_signal(dict(tr=1e9, te=0.0), t1, t2, pd) == pytest.approx(pd, rel=1e-12)
    assert phantoms.sequence_signal(dict(tr=t1 * np.log(2), te=t2), t1, t2, pd) == pytest.approx(pd / 2 / np.e)
    # inversion recovery at TI = T1 ln(2 / (1 + exp(-TR/T1))) nulls that tissue
    tr = 9000.0
    ti = t1 * np.log(2 / (1 + np.exp(-tr / t1)))
    assert phantoms.sequence_signal(dict(tr=tr, te=100.0, ti=ti), t1, t2, pd) < 1e-12
    assert phantoms.sequence_signal(dict(tr=tr, te=100.0, ti=ti), 2 * t1, t2, pd) > 0.05
    # spoiled gradient echo: the Ernst angle acos(exp(-TR/T1)) gives the most signal
    ernst = np.rad2deg(np.arccos(np.exp(-20.0 / t1)))
    gre = [phantoms.sequence_signal(dict(tr=20.0, te=5.0, flip_deg=a, t2star=0.6), t1, t2, pd)
           for a in (ernst - 3, ernst, ernst + 3)]
    assert gre[1] > max(gre[0], gre[2])


def test_physical_contrasts_are_their_recorded_draw_and_order_tissues_as_their_sequence():
    orders = {"t1w_gre": [], "flair": [], "t2w_se": [], "epi": []}
    seen = set()
    for i in range(600):
        draw = {}
        t = phantoms.physics_intensities(np.random.default_rng([7, i]), draw)
        seq, relax = draw["sequence"], draw["relaxation"]
        seen.add(seq["sequence"])
        for name, ((lo1, hi1), (lo2, hi2), (lo3, hi3)) in phantoms.SYNTH_RELAXATION.items():
            r1, r2, r3 = relax[name]
            assert lo1 <= r1 <= hi1 and lo2 <= r2 <= hi2 and lo3 <= r3 <= hi3
        # the intensities are the recorded sequence on the recorded tissues, fat suppressed, brightest = 1
        signal = {name: phantoms.sequence_signal(seq, *relax[name]) for name in phantoms.SYNTH_TISSUES}
        lo, hi = phantoms.SYNTH_FAT_SAT
        assert (lo <= seq["fat_factor"] <= hi) if seq["fat_sat"] else seq["fat_factor"] == 1.0
        for name in ("scalp", "diploe"):
            signal[name] *= seq["fat_factor"]
        top = max(signal.values())
        for name in phantoms.SYNTH_TISSUES:
            assert t[name] == pytest.approx(signal[name] / top, rel=1e-6)
        assert max(t[name] for name in phantoms.SYNTH_TISSUES) == 1.0
        assert phantoms.SYNTH_BONE[0] <= t["skull"] <= phantoms.SYNTH_BONE[1]
        name = seq["sequence"]
        if name == "spoiled_gre" and seq["flip_deg"] >= 25:
            orders["t1w_gre"].append(t["wm"] > t["gm"] > t["csf"])
        elif name == "flair":
            orders["flair"].append(t["csf"] < min(t["wm"], t["gm"]))
        elif name == "spin_echo" and seq["tr"] >= 2500 and seq["te"] >= 70:
            orders["t2w_se"].append(t["csf"] > t["gm"] > t["wm"])
        elif name == "epi":
            orders["epi"].append(t["csf"] > max(t["wm"], t["gm"]))
    assert seen == set(phantoms.SYNTH_SEQUENCES)
    assert all(len(v) >= 10 for v in orders.values()), {k: len(v) for k, v in orders.items()}
    assert np.mean(orders["t1w_gre"]) > 0.85 and np.mean(orders["flair"]) == 1.0  # T1-weighted; CSF nulled
    assert np.mean(orders["t2w_se"]) == 1.0 and np.mean(orders["epi"]) > 0.7      # T2- and T2*-weighted


def test_synth_contrast_mixes_physical_and_uniform_draws_and_records_which():
    kinds = []
    for i in range(400):
        draw = {}
        phantoms.synth_contrast(np.random.default_rng([11, i]), draw)
        kinds.append(draw["contrast"])
        assert ("sequence" in draw) == (draw["contrast"] == "physics")
    share = kinds.count("physics") / len(kinds)
    assert set(kinds) == {"physics", "random"}
    assert abs(share - phantoms.SYNTH_PHYSICS) < 4 * np.sqrt(0.25 / len(kinds))  # binomial, 4 sigma


def test_bias_field_stays_within_its_drawn_bound():
    P = phantoms._stack_grid(2, (32, 32), 220.0, 7.5, "axial")
    for seed in range(20):
        draw = {}
        field = phantoms.bias_field(np.random.default_rng(seed), P, 220.0 / 32, draw)
        b = draw["bias_max"]
        assert 1.0 <= b <= phantoms.SYNTH_BIAS_MAX
        assert field.min() >= 1 / b - 1e-5 and field.max() <= b + 1e-5
        assert max(field.max(), 1 / field.min()) == pytest.approx(b, rel=1e-4)  # the bound is reached


def test_a_seed_reproduces_a_synth_volume_exactly_and_records_what_was_drawn():
    a, attrs_a = make_volume("brain2d", 2, seed=5, anatomy="synth", **TINY)
    b, attrs_b = make_volume("brain2d", 2, seed=5, anatomy="synth", **TINY)
    c, _ = make_volume("brain2d", 3, seed=5, anatomy="synth", **TINY)
    for key in (KSPACE, TARGET):
        assert a[key].tobytes() == b[key].tobytes()
    assert not np.allclose(a[TARGET], c[TARGET])
    draw = json.loads(attrs_a["synth_draw"])
    assert draw == json.loads(attrs_b["synth_draw"])
    assert draw["deformed"] and draw["contrast"] in ("physics", "random")
    assert ("sequence" in draw) == (draw["contrast"] == "physics")
    assert set(draw["intensities"]) == {*phantoms.SYNTH_TISSUES, "skull"}
    assert phantoms.SYNTH_VENTRICLES[0] <= draw["ventricle_scale"] <= phantoms.SYNTH_VENTRICLES[1]
    assert all(0 <= b <= phantoms.SYNTH_BLUR_PX for b in draw["blur_px"])
    assert attrs_a["anatomy"] == "synth" and attrs_a["patient_id"] == "synthetic-brain2d-synth-seed5-002"


def test_the_deformation_moves_tissue_boundaries_by_millimetres():
    """The same slab, contrast and textures, with and without the largest deformation: the grey/white/CSF
    pattern changes (the anatomy moves), while two identical draws agree exactly."""
    phi = deformation.exponentiate(_largest_velocity(4), phantoms._SVF_ORIGIN, phantoms._SVF_STEP, 5)
    t = phantoms.BRAIN_TISSUES["T2"]
    slab = phantoms._mni_slab(np.random.default_rng(1), 3, (48, 48), 220.0)

    def head(displacement):
        tex = phantoms._subject_texture(np.random.default_rng(2))
        return phantoms._template_head(np.random.default_rng(3), slab, t, tex, displacement)

    rigid, warped = head(None), head(phi.displacement_at(slab.A))
    np.testing.assert_array_equal(rigid, head(np.zeros_like(slab.A)))
    changed = np.abs(warped - rigid) > 0.1 * rigid.max()
    assert changed.mean() > 0.15


def test_ablations_switch_off_their_part_and_are_recorded():
    _, no_deform = make_volume("brain2d", 0, seed=1, anatomy="synth", synth_off=("deformation",), **TINY)
    _, no_contrast = make_volume("brain2d", 0, seed=1, anatomy="synth", synth_off=("contrast",), **TINY)
    d1, d2 = json.loads(no_deform["synth_draw"]), json.loads(no_contrast["synth_draw"])
    assert not d1["deformed"] and "coarse_mm" not in d1 and no_deform["synth_off"] == "deformation"
    assert d2["deformed"] and d2["contrast"] == "protocol" and no_contrast["synth_off"] == "contrast"
    assert no_contrast["patient_id"] == "synthetic-brain2d-synth-nocontrast-seed1-000"


@pytest.mark.parametrize("kwargs, match", [
    (dict(kind="brain2d", anatomy="mni152", synth_off=("contrast",)), "--synth-off .* not of --anatomy mni152"),
    (dict(kind="brain2d", anatomy="synth", synth_off=("noise",)), "--synth-off: unknown part.* noise"),
    (dict(kind="knee2d", anatomy="real"), "--anatomy real draws real brain scans: .* brain2d only, not knee2d"),
])
def test_bad_anatomy_settings_are_named(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        generate(out=tmp_path, volumes=1, **kwargs)


def test_synth_and_real_files_pass_fastmris_slicedataset(tmp_path):
    from fastmri.data.mri_data import SliceDataset

    generate("brain2d", tmp_path / "synth", volumes=3, seed=1, anatomy="synth", **TINY)
    real = generate("brain2d", tmp_path / "real", volumes=2, seed=1, anatomy="real", **TINY)
    assert [len(real[s]) for s in SPLITS] == [0, 0, 2]  # a held-out test set only
    for folder in (tmp_path / "synth" / "train", tmp_path / "real" / "test"):
        ds = SliceDataset(root=folder, challenge="multicoil", transform=None)
        files = sorted(folder.glob("*.h5"))
        assert len(ds) == TINY["slices"] * len(files)
        kspace, mask, target, meta, fname, dataslice = ds[0]
        with h5py.File(folder / fname, "r") as hf:
            np.testing.assert_array_equal(kspace, hf[KSPACE][dataslice])
            np.testing.assert_array_equal(target, hf[TARGET][dataslice])
            assert meta["max"] == hf.attrs["max"]


def test_real_volumes_alternate_between_the_shipped_scans_with_their_provenance():
    names = list(real_scans.REAL_SCANS)
    for index in range(2):
        _, attrs = make_volume("brain2d", index, seed=0, anatomy="real", **TINY)
        scan = real_scans.REAL_SCANS[names[index]]
        assert attrs["real_scan"] == names[index] and attrs["acquisition"] == scan.acquisition
        assert attrs["real_scan_source"] == f"{scan.package}/{scan.path}"
        assert attrs["patient_id"] == f"synthetic-brain2d-real-{names[index]}-seed0-{index:03d}"


@pytest.mark.parametrize("name", list(real_scans.REAL_SCANS))
def test_real_stack_is_the_run_of_native_slices_it_records(name):
    """The per-slice signal of the stack follows the scan's own slices from the recorded first one on."""
    data, zoom = real_scans.load_scan(name)
    img, draw = real_scans.brain2d_real(np.random.default_rng(7), name, 4, (48, 48))
    profile = img.sum((1, 2))
    native = data.sum((0, 1))
    scores = [np.corrcoef(profile, native[s:s + 4])[0, 1] for s in range(data.shape[2] - 3)]
    assert int(np.argmax(scores)) == draw["first_slice"] and max(scores) > 0.95
    assert img.dtype == np.float32 and img.min() >= 0


def test_a_missing_scan_package_is_named(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "dipy" else real(name, *a))
    with pytest.raises(ModuleNotFoundError, match="'dipy-b0' ships inside the dipy package"):
        real_scans.scan_file("dipy-b0")

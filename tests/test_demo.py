"""The demo's configuration: GLEAM by default for every kind, the user's overrides win."""
from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import pytest

from mrirecon.config import ConfigError
from mrirecon.demo import demo_config


@pytest.mark.parametrize("kind", ["knee2d", "brain2d", "knee3d", "cine"])
def test_demo_trains_with_gleam_by_default(kind, tmp_path):
    cfg = demo_config(kind, tmp_path, [])
    assert cfg.train.strategy == "gleam" and cfg.train.num_modules == 2
    assert cfg.model.num_unrolls % cfg.train.num_modules == 0
    assert str(cfg.output_dir) == str(tmp_path / "runs")


def test_demo_overrides_come_after_the_defaults(tmp_path):
    cfg = demo_config("knee2d", tmp_path, ["train.strategy=e2e", "train.num_modules=1", "train.max_epochs=3"])
    assert (cfg.train.strategy, cfg.train.num_modules, cfg.train.max_epochs) == ("e2e", 1, 3)
    with pytest.raises(ConfigError, match="num_modules"):
        demo_config("knee2d", tmp_path, ["model.num_unrolls=5"])  # 2 modules do not divide 5 unrolls


@pytest.mark.parametrize("kind", ["knee2d", "brain2d"])
def test_2d_demos_train_with_the_demo_schedule(kind, tmp_path):
    cfg = demo_config(kind, tmp_path, [])
    assert (cfg.data.batch_size, cfg.train.lr, cfg.train.scheduler) == (1, 3e-3, {"name": "cosine"})
    assert cfg.train.max_epochs == 24
    assert demo_config(kind, tmp_path, ["train.max_epochs=2"]).train.max_epochs == 2  # the user's value wins


def _copy_with_attrs(src: Path, dst: Path, **attrs) -> None:
    shutil.copytree(src, dst)
    for path in dst.glob("*/*.h5"):
        with h5py.File(path, "r+") as f:
            for key, value in attrs.items():
                if value is None:
                    del f.attrs[key]
                else:
                    f.attrs[key] = value


def test_demo_rewrites_only_synthetic_data_of_an_older_generator(synthetic, tmp_path):
    from mrirecon.demo import _outdated_synthetic

    root = synthetic("knee2d")
    assert not _outdated_synthetic(root)  # written by this generator
    _copy_with_attrs(root, tmp_path / "v1", generator_version=None)  # version 1 files carry no version
    assert _outdated_synthetic(tmp_path / "v1")
    _copy_with_attrs(root, tmp_path / "user", generator_version=None, patient_id="scanner-0042")
    assert not _outdated_synthetic(tmp_path / "user")  # not ours: never rewritten


def test_brain_demo_trains_on_synthesised_brains_and_each_ablation_has_its_own_data(tmp_path):
    from mrirecon.demo import DEMO_ANATOMY, data_root

    assert DEMO_ANATOMY == {"brain2d": "synth"}
    assert demo_config("brain2d", tmp_path, [], "synth").data.root == "data/synthetic/brain2d_synth"
    no_deform = demo_config("brain2d", tmp_path, [], "synth", ("deformation",))
    assert no_deform.data.root == "data/synthetic/brain2d_synth_nodeformation"
    assert demo_config("knee2d", tmp_path, []).data.root == data_root("knee2d", None) == "data/synthetic/knee2d"
    assert demo_config("brain2d", tmp_path, ["data.root=/elsewhere"], "synth").data.root == "/elsewhere"


def test_demo_rewrites_synthetic_data_of_another_anatomy_or_ablation(synthetic, tmp_path):
    from mrirecon.demo import _outdated_synthetic

    root = synthetic("brain2d")  # the built-in model phantoms
    assert not _outdated_synthetic(root, "model") and _outdated_synthetic(root, "synth")
    _copy_with_attrs(root, tmp_path / "nocontrast", anatomy="synth", synth_off="contrast")
    assert not _outdated_synthetic(tmp_path / "nocontrast", "synth", ("contrast",))
    assert _outdated_synthetic(tmp_path / "nocontrast", "synth")

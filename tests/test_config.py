"""Configs: defaults <- YAML <- overrides; bad keys, types and values fail early, naming the key."""
from pathlib import Path

import pytest

from mrirecon.config import ConfigError, load_config, save_config

CONFIGS = sorted(Path(__file__).resolve().parent.parent.glob("configs/*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_shipped_configs_load(path):
    cfg = load_config(path)
    assert cfg.data.kind in path.stem or cfg.data.kind in ("knee2d", "knee3d", "brain2d", "cine")


def test_overrides_merge_into_named_dicts():
    cfg = load_config(None, ["model.prox.channels=12", "train.max_epochs=3", "data.mask.accelerations=[8]"])
    assert cfg.model.prox == {"name": "resnet", "channels": 12, "num_blocks": 2}
    assert cfg.train.max_epochs == 3 and cfg.data.mask["accelerations"] == [8]


def test_changing_prox_kind_drops_old_settings():
    cfg = load_config(None, ["model.prox={name: unet, base_channels: 8}"])
    assert cfg.model.prox == {"name": "unet", "base_channels": 8}


@pytest.mark.parametrize(
    "override,key",
    [
        ("model.num_unroll=4", "model.num_unroll"),
        ("model.num_unrolls=0", "model.num_unrolls"),
        ("model.num_unrolls=2.5", "model.num_unrolls"),
        ("model.prox.name=nope", "model.prox.name"),
        ("train.strategy=magic", "train.strategy"),
        ("train.lr=fast", "train.lr"),
        ("data.mask.accelerations=[0.5]", "data.mask"),
        ("data.kind=ct", "data.kind"),
        ("data.volume=true", "data.volume"),
    ],
)
def test_bad_values_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, [override])


def test_gleam_modules_must_divide_unrolls():
    with pytest.raises(ConfigError, match="train.num_modules"):
        load_config(None, ["train.strategy=gleam", "model.num_unrolls=8", "train.num_modules=3"])
    assert load_config(None, ["train.strategy=gleam", "model.num_unrolls=8", "train.num_modules=4"])


def test_saved_config_reloads_identically(tmp_path):
    cfg = load_config(CONFIGS[0], ["train.seed=7"])
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nothere.yaml"):
        load_config(tmp_path / "nothere.yaml")
